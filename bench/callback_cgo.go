//go:build cgo && !tandem_purego

// The callback contender: one cgo call per event that spawns the handler on tokio
// (tandem_bench_spawn_call, a bench-only export of rust/tandem-native, not in ffi/tandem.h),
// answered by a C → Go callback from the tokio worker that finished it. This is the bench
// module's only cgo file. It makes its own runtime through the C ABI, so tandem's Go package
// exposes nothing for it; the library is the one go/internal/abi links.

package bench

/*
#cgo CFLAGS: -I${SRCDIR}/../ffi
#cgo LDFLAGS: -L${SRCDIR}/../target/release -l:libtandem_native.a -lm -ldl -lpthread -lrt -lutil
#include <stdint.h>
#include <stddef.h>
#include "tandem.h"

typedef void (*tandem_bench_done)(uintptr_t user, uint32_t outcome, uint8_t *reply, size_t reply_len);
int32_t tandem_bench_spawn_call(const tandem_runtime *rt, const uint8_t *env, size_t len,
                                tandem_bench_done cb, uintptr_t user);
void tandemBenchDone(uintptr_t user, uint32_t outcome, uint8_t *reply, size_t reply_len);
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

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
	calls atomic.Uint64
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

// callbackRuntime is a Rust runtime made through the C ABI for the callback contender.
// call is safe for concurrent use; close is not.
type callbackRuntime struct {
	rt *C.tandem_runtime
}

// newCallbackRuntime creates and starts a runtime with cfg's workers and spin window. Its
// rings are minimal: no event goes through them.
func newCallbackRuntime(cfg tandem.Config) (*callbackRuntime, error) {
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
		return nil, fmt.Errorf("tandem_runtime_create: status %d: %s", st, callbackLastError())
	}
	if st := C.tandem_runtime_start(rt); st != C.TANDEM_OK {
		err := fmt.Errorf("tandem_runtime_start: status %d: %s", st, callbackLastError())
		C.tandem_runtime_free(rt)
		return nil, err
	}
	return &callbackRuntime{rt: rt}, nil
}

func callbackLastError() string {
	var buf [512]byte
	n := int(C.tandem_last_error((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf))))
	return string(buf[:min(n, len(buf))])
}

// call hands the envelope env to the runtime (one cgo call, which copies it and spawns the
// handler as a tokio task) and sleeps until the callback answers. The reply is appended to
// dst[:0]. A failed handler returns a *tandem.HandlerError.
func (c *callbackRuntime) call(env, dst []byte) ([]byte, error) {
	idx, err := takeCallbackSlot()
	if err != nil {
		return nil, err
	}
	s := &callbacks.slots[idx]
	s.reply = dst[:0]
	callbacks.calls.Add(1)
	st := C.tandem_bench_spawn_call(c.rt, (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(env))), C.size_t(len(env)),
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
		}
		return nil, he
	}
	return nil, fmt.Errorf("unknown outcome %d", outcome)
}

// counts returns the boundary crossings of every callback runtime so far.
func (c *callbackRuntime) counts() callbackCounts {
	return callbackCounts{calls: callbacks.calls.Load(), callbacks: callbacks.backs.Load()}
}

// close stops the runtime, waiting up to 10 s for handlers still running, and frees it.
// Every call must have returned.
func (c *callbackRuntime) close() error {
	if c.rt == nil {
		return nil
	}
	st := C.tandem_runtime_shutdown(c.rt, C.uint64_t(10*time.Second))
	C.tandem_runtime_free(c.rt)
	c.rt = nil
	if st != C.TANDEM_OK {
		return fmt.Errorf("tandem_runtime_shutdown: status %d", st)
	}
	return nil
}
