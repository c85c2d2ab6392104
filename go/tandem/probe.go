package tandem

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// WakeProbe measures the floor under an idle round trip on this machine: the bare cost of
// waking a parked tokio worker through an eventfd and being woken back through Go's
// netpoller, with no ring, envelope or handler in between. Each of the rounds waits gap first,
// so both sides are parked, then times one ping and its pong. It makes one FFI call in all.
// Compare its figures with an idle Call's to see what the rings add. Safe for concurrent use,
// though concurrent probes disturb each other's figures.
func (r *Runtime) WakeProbe(rounds int, gap time.Duration) ([]time.Duration, error) {
	if State(r.state.Load()) != Running {
		return nil, ErrClosed
	}
	ping, err := eventfd()
	if err != nil {
		return nil, err
	}
	defer syscall.Close(ping)
	pong, err := eventfd()
	if err != nil {
		return nil, err
	}
	pongFile := os.NewFile(uintptr(pong), "tandem-probe-pong") // owns pong; joins the netpoller
	defer pongFile.Close()
	if err := abi.WakeProbe(r.h, ping, pong); err != nil {
		return nil, fmt.Errorf("tandem: wake probe: %w", err)
	}
	var one, stop, buf [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	binary.LittleEndian.PutUint64(stop[:], abi.ProbeStop)
	defer syscall.Write(ping, stop[:])
	out := make([]time.Duration, 0, rounds)
	for range rounds {
		time.Sleep(gap)
		t0 := time.Now()
		if _, err := syscall.Write(ping, one[:]); err != nil {
			return out, fmt.Errorf("tandem: wake probe: %w", err)
		}
		if _, err := pongFile.Read(buf[:]); err != nil {
			return out, fmt.Errorf("tandem: wake probe: %w", err)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// eventfd makes a non-blocking, close-on-exec eventfd.
func eventfd() (int, error) {
	const efdCloexec, efdNonblock = 0x80000, 0x800
	fd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, efdCloexec|efdNonblock, 0)
	if errno != 0 {
		return -1, fmt.Errorf("tandem: eventfd: %w", errno)
	}
	return int(fd), nil
}
