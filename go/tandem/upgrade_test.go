//go:build !cgo || tandem_purego

package tandem

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// The purego mode upgrades the Rust library without a restart: a second runtime loads
// another library file beside the first; the first's routes move to it through Forward
// while callers keep calling; the callers move to the second; the first drains and stops.
// No call fails or is answered twice, and each runtime gives back every buffer.
func TestUpgradeTheRustLibraryWithoutARestart(t *testing.T) {
	lib := abi.LibraryPath("")
	b, err := os.ReadFile(lib)
	if err != nil {
		t.Skipf("no library to copy: %v", err)
	}
	next := filepath.Join(t.TempDir(), "libtandem_next.so")
	if err := os.WriteFile(next, b, 0o755); err != nil {
		t.Fatal(err)
	}
	old := newRuntime(t, Config{})
	upgraded := newRuntime(t, Config{Library: next})

	var current atomic.Pointer[Runtime]
	current.Store(old)
	ctx, stop := context.WithCancel(context.Background())
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				rt := current.Load()
				reply, err := rt.Call(context.Background(), event("demo.upper", "u", []byte("abc")))
				if errors.Is(err, ErrClosed) && rt != current.Load() {
					// Refused by the old runtime, draining by then: this caller had loaded
					// it before the callers moved. Nothing was accepted; call the new one.
					continue
				}
				if err != nil {
					failures.Add(1)
					t.Errorf("a call failed during the upgrade: %v", err)
					return
				}
				if !bytes.Equal(reply.Data(), []byte("ABC")) {
					t.Errorf("reply %q", reply.Data())
				}
				reply.Release()
				calls.Add(1)
			}
		})
	}
	waitFor(t, "calls on the old library", func() bool { return calls.Load() > 100 })

	// Move every Rust route of the old runtime to the upgraded one.
	must(t, old.Register("next", Forward(upgraded)))
	for _, typ := range old.RustTypes() {
		must(t, old.Swap(typ, GoTarget("next")))
	}
	before := upgraded.Stats().Submitted
	waitFor(t, "calls forwarded to the new library", func() bool { return upgraded.Stats().Submitted > before+100 })
	// The calls bound for the old library when the routes moved finish there (a caller's
	// thread runs its own event, and may be descheduled between choosing the handler and
	// running it); its handler drains to 0 in flight, and then it gets no more.
	waitFor(t, "the old library's handler to drain", func() bool {
		info, err := old.Route("demo.upper")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range info.Handlers {
			if h.Target.IsRust() && h.InFlight != 0 {
				return false
			}
		}
		return old.Stats().Rust.RequestsHeld == 0
	})
	received := old.Stats().Rust.Received
	more := upgraded.Stats().Submitted
	waitFor(t, "more calls forwarded", func() bool { return upgraded.Stats().Submitted > more+100 })
	if st := old.Stats(); st.Rust.Received != received || st.Rust.RequestsHeld != 0 {
		t.Fatalf("the old library took %d more events after its routes moved (holds %d)",
			st.Rust.Received-received, st.Rust.RequestsHeld)
	}

	// Move the callers, then drain and stop the old runtime.
	current.Store(upgraded)
	direct := upgraded.Stats().Submitted
	waitFor(t, "calls straight to the new runtime", func() bool { return upgraded.Stats().Submitted > direct+100 })
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.Shutdown(shutdown); err != nil {
		t.Fatalf("the old runtime's drain: %v", err)
	}
	if st := old.Stats(); st.Rust.RequestsHeld != 0 || st.Rust.RepliesLent != 0 || st.InFlight != 0 {
		t.Fatalf("the old runtime kept buffers: %+v", st)
	}
	stop()
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d calls failed", failures.Load())
	}
	shutdownClean(t, upgraded)
	if _, err := old.Call(context.Background(), event("demo.upper", "late", nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("a call to the stopped runtime: %v, want ErrClosed", err)
	}
}
