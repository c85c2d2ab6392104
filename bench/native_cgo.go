//go:build cgo && !tandem_purego

// The contenders that reach the Rust handlers one call per event, past tandem's rings, and the
// probe of the idle-wake floor. They call bench-only exports of rust/tandem-native, which
// ffi/tandem.h does not declare:
//
//   - direct: tandem_bench_invoke, one cgo call per event that block_on's the handler on
//     tokio and copies its reply out; the calling OS thread is held until the handler ends.
//   - callback: tandem_bench_spawn_call, one cgo call per event that spawns the handler on
//     tokio and returns, answered by a C → Go callback from the tokio worker that finished it.
//   - the wake probe: tandem_bench_wake_probe, a tokio task answering eventfd pings.
//
// This is the bench module's only cgo file. It makes its own runtimes through the C ABI, so
// tandem's Go package exposes nothing for them; the library is the one go/internal/abi links.

package bench

/*
#cgo CFLAGS: -I${SRCDIR}/../ffi
#cgo LDFLAGS: -L${SRCDIR}/../target/release -l:libtandem_native.a -lm -ldl -lpthread -lrt -lutil
#include <stdint.h>
#include <stddef.h>
#include "tandem.h"

int32_t tandem_bench_invoke(const tandem_runtime *rt, const uint8_t *env, size_t len,
                            uint8_t *reply, size_t cap, size_t *reply_len, uint32_t *outcome_out);
typedef void (*tandem_bench_done)(uintptr_t user, uint32_t outcome, uint8_t *reply, size_t reply_len);
int32_t tandem_bench_spawn_call(const tandem_runtime *rt, const uint8_t *env, size_t len,
                                tandem_bench_done cb, uintptr_t user);
int32_t tandem_bench_wake_probe(const tandem_runtime *rt, int32_t ping_fd, int32_t pong_fd);
void tandemBenchDone(uintptr_t user, uint32_t outcome, uint8_t *reply, size_t reply_len);
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// nativeCalls counts the per-event calls into the library this file makes (tandem_bench_invoke,
// tandem_bench_spawn_call) and the wake probe's one, for the ffi-calls columns.
var nativeCalls atomic.Uint64

// callbackSlots bounds the calls in flight at once across every callback runtime: the
// 10,000-in-flight scenario needs 10,000.
const callbackSlots = 16384

// callbackSlot is where the callback leaves one call's answer for the goroutine that made it,
// which sleeps on done. The user word passed through Rust is the slot's index: no Go pointer
// crosses, and nothing is allocated per call.
type callbackSlot struct {
	done    chan struct{} // capacity 1: the callback never blocks a tokio worker
	outcome uint32
	reply   []byte // the caller's buffer; the callback appends the reply to it
}

var callbacks struct {
	once  sync.Once
	slots []callbackSlot
	mu    sync.Mutex
	free  []uint32 // a stack, so the slots in use stay few and warm
	backs atomic.Uint64
}

func initCallbackSlots() {
	callbacks.slots = make([]callbackSlot, callbackSlots)
	callbacks.free = make([]uint32, callbackSlots)
	for i := range callbacks.slots {
		callbacks.slots[i].done = make(chan struct{}, 1)
		callbacks.free[i] = uint32(callbackSlots - 1 - i)
	}
}

func takeCallbackSlot() (uint32, error) {
	callbacks.mu.Lock()
	defer callbacks.mu.Unlock()
	n := len(callbacks.free)
	if n == 0 {
		return 0, fmt.Errorf("more than %d callback calls in flight", callbackSlots)
	}
	idx := callbacks.free[n-1]
	callbacks.free = callbacks.free[:n-1]
	return idx, nil
}

func putCallbackSlot(idx uint32) {
	callbacks.mu.Lock()
	callbacks.free = append(callbacks.free, idx)
	callbacks.mu.Unlock()
}

// tandemBenchDone runs on a tokio worker thread when a spawned handler finishes. reply is
// Rust's and valid only during this call, so it is copied into the caller's buffer.
//
//export tandemBenchDone
func tandemBenchDone(user C.uintptr_t, outcome C.uint32_t, reply *C.uint8_t, n C.size_t) {
	s := &callbacks.slots[user]
	s.outcome = uint32(outcome)
	if n > 0 {
		s.reply = append(s.reply, unsafe.Slice((*byte)(unsafe.Pointer(reply)), int(n))...)
	}
	callbacks.backs.Add(1)
	s.done <- struct{}{}
}

// nativeRuntime is a Rust runtime made through the C ABI for the direct and callback
// contenders and the wake probe. invoke, spawnCall and wakeProbe are safe for concurrent use;
// close is not.
type nativeRuntime struct {
	rt *C.tandem_runtime
}

// newNativeRuntime creates and starts a runtime with cfg's workers and spin window. Its
// rings are minimal: no event goes through them.
func newNativeRuntime(cfg tandem.Config) (*nativeRuntime, error) {
	callbacks.once.Do(initCallbackSlots)
	if v := C.tandem_abi_version(); v != C.TANDEM_ABI_VERSION {
		return nil, fmt.Errorf("library ABI version %d, bench built for %d: rebuild with ./build.sh", v, C.TANDEM_ABI_VERSION)
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = 2
	}
	spin := cfg.SpinWindow
	switch {
	case spin == 0:
		spin = 50 * time.Microsecond
	case spin < 0:
		spin = 0
	}
	ccfg := C.tandem_config{
		abi_version:   C.TANDEM_ABI_VERSION,
		workers:       C.uint32_t(workers),
		sq_capacity:   8,
		cq_capacity:   4,
		req_slot_size: 4096,
		req_slots:     4,
		rep_slot_size: 4096,
		rep_slots:     4,
		spin_ns:       C.uint64_t(spin),
	}
	var rt *C.tandem_runtime
	var layout C.tandem_layout
	if st := C.tandem_runtime_create(&ccfg, &rt, &layout); st != C.TANDEM_OK {
		return nil, fmt.Errorf("tandem_runtime_create: status %d: %s", st, nativeLastError())
	}
	if st := C.tandem_runtime_start(rt); st != C.TANDEM_OK {
		err := fmt.Errorf("tandem_runtime_start: status %d: %s", st, nativeLastError())
		C.tandem_runtime_free(rt)
		return nil, err
	}
	return &nativeRuntime{rt: rt}, nil
}

func nativeLastError() string {
	var buf [512]byte
	n := int(C.tandem_last_error((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf))))
	return string(buf[:min(n, len(buf))])
}

// invokeOut holds tandem_bench_invoke's out-parameters. Their addresses go to the library,
// so they would escape to the heap on every call; a pool keeps the direct contender
// allocation-free.
type invokeOut struct {
	replyLen C.size_t
	outcome  C.uint32_t
}

var invokeOuts = sync.Pool{New: func() any { return new(invokeOut) }}

// invoke runs the handler of the envelope env on the calling goroutine's OS thread (one cgo
// call, which blocks on tokio until the handler finishes) and returns its reply in dst's
// memory, or in a new buffer when the reply does not fit cap(dst). A failed handler returns
// a *tandem.HandlerError.
func (n *nativeRuntime) invoke(env, dst []byte) ([]byte, error) {
	dst = dst[:cap(dst)]
	out := invokeOuts.Get().(*invokeOut)
	defer invokeOuts.Put(out)
	st := n.invokeInto(env, dst, out)
	if st == C.TANDEM_ERR_TOO_SMALL {
		// The reply outgrew dst; the handler runs again into a buffer of the reply's size.
		dst = make([]byte, int(out.replyLen))
		st = n.invokeInto(env, dst, out)
	}
	if st != C.TANDEM_OK {
		return nil, fmt.Errorf("tandem_bench_invoke: status %d", st)
	}
	return outcomeReply(uint32(out.outcome), dst[:out.replyLen])
}

func (n *nativeRuntime) invokeInto(env, dst []byte, out *invokeOut) C.int32_t {
	nativeCalls.Add(1)
	st := C.tandem_bench_invoke(n.rt,
		(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(env))), C.size_t(len(env)),
		(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(dst))), C.size_t(len(dst)),
		&out.replyLen, &out.outcome)
	runtime.KeepAlive(env)
	runtime.KeepAlive(dst)
	return st
}

// spawnCall hands the envelope env to the runtime (one cgo call, which copies it and spawns
// the handler as a tokio task) and sleeps until the callback answers. The reply is appended
// to dst[:0]. A failed handler returns a *tandem.HandlerError.
func (n *nativeRuntime) spawnCall(env, dst []byte) ([]byte, error) {
	idx, err := takeCallbackSlot()
	if err != nil {
		return nil, err
	}
	s := &callbacks.slots[idx]
	s.reply = dst[:0]
	nativeCalls.Add(1)
	st := C.tandem_bench_spawn_call(n.rt, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(env))), C.size_t(len(env)),
		C.tandem_bench_done(C.tandemBenchDone), C.uintptr_t(idx))
	runtime.KeepAlive(env)
	if st != C.TANDEM_OK {
		s.reply = nil
		putCallbackSlot(idx)
		return nil, fmt.Errorf("tandem_bench_spawn_call: status %d", st)
	}
	<-s.done
	reply, outcome := s.reply, s.outcome
	s.reply = nil
	putCallbackSlot(idx)
	return outcomeReply(outcome, reply)
}

// outcomeReply is a handler's answer as the contenders return it: the reply on an ack, a
// *tandem.HandlerError carrying the error envelope on a retry or a term.
func outcomeReply(outcome uint32, reply []byte) ([]byte, error) {
	switch outcome {
	case C.TANDEM_OUTCOME_ACK:
		return reply, nil
	case C.TANDEM_OUTCOME_RETRY, C.TANDEM_OUTCOME_TERM:
		he := &tandem.HandlerError{Outcome: tandem.OutcomeTerm}
		if outcome == C.TANDEM_OUTCOME_RETRY {
			he.Outcome = tandem.OutcomeRetry
		}
		if e, derr := envelope.DecodeErrorEnvelope(reply); derr == nil {
			he.Envelope = *e
		} else {
			he.Envelope = tandem.ErrorEnvelope{Code: "decode", Message: derr.Error(), Runtime: "rust"}
		}
		return nil, he
	}
	return nil, fmt.Errorf("unknown outcome %d", outcome)
}

// probeStop is a ping that stops tandem_bench_wake_probe's task: any value of 2^32 or more.
const probeStop uint64 = 1 << 32

// wakeProbe measures the floor under an idle round trip on this machine: the bare cost of
// waking a parked tokio worker through an eventfd and being woken back through Go's
// netpoller, with no ring, envelope or handler in between. Each of the rounds waits gap
// first, so both sides are parked, then times one ping and its pong. It makes one cgo call
// in all. Safe for concurrent use, though concurrent probes disturb each other's figures.
func (n *nativeRuntime) wakeProbe(rounds int, gap time.Duration) ([]time.Duration, error) {
	ping, err := newEventfd("probe-ping")
	if err != nil {
		return nil, err
	}
	defer ping.Close()
	pong, err := newEventfd("probe-pong") // non-blocking: its reads park in the netpoller
	if err != nil {
		return nil, err
	}
	defer pong.Close()
	// The fds are read through SyscallConn, not Fd, which would make them blocking.
	var st C.int32_t
	err = rawFd(ping, func(pingFd uintptr) error {
		return rawFd(pong, func(pongFd uintptr) error {
			nativeCalls.Add(1)
			st = C.tandem_bench_wake_probe(n.rt, C.int32_t(pingFd), C.int32_t(pongFd))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if st != C.TANDEM_OK {
		return nil, fmt.Errorf("tandem_bench_wake_probe: status %d", st)
	}
	var stop [8]byte
	binary.NativeEndian.PutUint64(stop[:], probeStop)
	defer ping.Write(stop[:])
	out := make([]time.Duration, 0, rounds)
	var buf [8]byte
	for range rounds {
		time.Sleep(gap)
		t0 := time.Now()
		if _, err := ping.Write(eventfdOne[:]); err != nil {
			return out, fmt.Errorf("wake probe: %w", err)
		}
		if _, err := pong.Read(buf[:]); err != nil {
			return out, fmt.Errorf("wake probe: %w", err)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// rawFd runs fn with f's descriptor, leaving f's blocking mode alone.
func rawFd(f *os.File, fn func(fd uintptr) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return err
	}
	return ferr
}

// counts returns the boundary crossings of every native runtime so far.
func (n *nativeRuntime) counts() nativeCounts {
	return nativeCounts{calls: nativeCalls.Load(), callbacks: callbacks.backs.Load()}
}

// close stops the runtime, waiting up to 10 s for handlers still running, and frees it.
// Every call must have returned.
func (n *nativeRuntime) close() error {
	if n.rt == nil {
		return nil
	}
	st := C.tandem_runtime_shutdown(n.rt, C.uint64_t(10*time.Second))
	C.tandem_runtime_free(n.rt)
	n.rt = nil
	if st != C.TANDEM_OK {
		return fmt.Errorf("tandem_runtime_shutdown: status %d", st)
	}
	return nil
}
