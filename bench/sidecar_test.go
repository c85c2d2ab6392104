package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

const (
	// sidecarEchoType replies with the payload; sidecarFailType fails on demand ("term").
	sidecarEchoType = "demo.echo"
	sidecarFailType = "demo.fail"
	sidecarEchoSize = 1 << 10

	// sidecarWorkers is the sidecar's tokio workers for the handlers: tandem's default.
	sidecarWorkers = 2
)

// newSidecar starts the sidecar in its own process with a socket in dir and conns
// connections, or skips tb when the binary has not been built.
func newSidecar(tb testing.TB, dir string, conns int) *sidecar {
	tb.Helper()
	bin, err := sidecarBinary()
	if err != nil {
		tb.Skip(err)
	}
	socket, cleanup, err := sidecarSocket(dir)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := startSidecar(bin, socket, sidecarWorkers, conns)
	if err != nil {
		cleanup()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		s.Close()
		cleanup()
	})
	return s
}

func TestSidecarRoundTrip(t *testing.T) {
	s := newSidecar(t, t.TempDir(), 2)

	t.Run("echo", func(t *testing.T) {
		ev := scenarioEventOf(sidecarEchoType, sidecarEchoSize)
		outcome, reply, err := s.Call(ev)
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if outcome != 0 {
			t.Fatalf("outcome %d, want 0 (ack)", outcome)
		}
		if !bytes.Equal(reply, ev.Data) {
			t.Fatalf("reply of %d bytes differs from the %d-byte payload", len(reply), len(ev.Data))
		}
	})

	t.Run("term", func(t *testing.T) {
		ev := &tandem.Event{ID: "fail-1", Source: "/bench", Type: sidecarFailType, Data: []byte("term")}
		outcome, reply, err := s.Call(ev)
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if outcome != 2 {
			t.Fatalf("outcome %d, want 2 (term)", outcome)
		}
		env, err := envelope.DecodeErrorEnvelope(reply)
		if err != nil {
			t.Fatalf("DecodeErrorEnvelope: %v", err)
		}
		if env.Code != "invalid" || env.Runtime != "rust" || env.Handler != "fail" {
			t.Fatalf("error envelope %+v, want code invalid from rust handler fail", env)
		}
	})

	// Many callers share the connections: every answer must reach the caller that asked.
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Go(func() {
				for i := range 200 {
					data := fmt.Appendf(nil, "caller %d call %d", g, i)
					ev := &tandem.Event{ID: string(data), Source: "/bench", Type: sidecarEchoType, Data: data}
					outcome, reply, err := s.Call(ev)
					if err == nil && (outcome != 0 || !bytes.Equal(reply, data)) {
						err = fmt.Errorf("%s: outcome %d, reply %q", data, outcome, reply)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	// Close stops the process and removes the socket; a later call fails instead of hanging.
	t.Run("close", func(t *testing.T) {
		s.Close()
		if _, err := os.Stat(s.socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s after Close: %v, want it gone", s.socket, err)
		}
		if _, _, err := s.Call(newEvent()); err == nil {
			t.Error("Call after Close succeeded")
		}
	})
}

// scenarioEventOf is an event of type typ with a payload of size bytes (0, 1, 2, ... mod 256).
func scenarioEventOf(typ string, size int) *tandem.Event {
	ev := newEvent()
	ev.Type = typ
	ev.Data = make([]byte, size)
	for i := range ev.Data {
		ev.Data[i] = byte(i)
	}
	return ev
}

// BenchmarkRoundTripSidecar is BenchmarkRoundTrip's request/reply for the sidecar
// contender: the same demo handlers in a Rust process of their own, reached over a Unix
// socket with length-prefixed CBOR frames (sidecar.go). Scenarios: demo.noop with a 64 B
// payload (BenchmarkRoundTrip's event) and demo.echo with 1 KiB; for the echo, the rings
// run it too, so the ratio comes from one run. Each sub-benchmark starts a sidecar process of
// its own with GOMAXPROCS connections.
func BenchmarkRoundTripSidecar(b *testing.B) {
	dir := b.TempDir()
	conns := runtime.GOMAXPROCS(0)
	parallelism := []struct {
		name string
		n    int
	}{{"parallel", 1}, {"wide", 32}}

	for _, sc := range []struct {
		prefix string
		ev     *tandem.Event
	}{
		{"sidecar/", newEvent()},
		{"sidecar/echo-1KiB/", scenarioEventOf(sidecarEchoType, sidecarEchoSize)},
	} {
		want := 0
		if sc.ev.Type == sidecarEchoType {
			want = len(sc.ev.Data)
		}
		sidecarContender(b, sc.prefix+"serial", dir, conns, func(b *testing.B, s *sidecar) {
			rec := newRecorder()
			w := begin(b, nil)
			for range b.N {
				t0 := time.Now()
				outcome, reply, err := s.Call(sc.ev)
				if err := sidecarCheck(outcome, reply, err, want); err != nil {
					b.Fatal(err)
				}
				rec.record(time.Since(t0))
			}
			w.end(b, rec.hist, rec.err)
		})
		for _, par := range parallelism {
			sidecarContender(b, sc.prefix+par.name, dir, conns, func(b *testing.B, s *sidecar) {
				rs := newRecorders(par.n)
				w := begin(b, nil)
				b.SetParallelism(par.n)
				b.RunParallel(func(pb *testing.PB) {
					rec := rs.take()
					for pb.Next() {
						t0 := time.Now()
						outcome, reply, err := s.Call(sc.ev)
						if err := sidecarCheck(outcome, reply, err, want); err != nil {
							b.Error(err)
							return
						}
						rec.record(time.Since(t0))
					}
				})
				hist, err := rs.merged()
				w.end(b, hist, err)
			})
		}
	}

	// The rings with the same 1 KiB echo (demo.echo is registered inline).
	ev := scenarioEventOf(sidecarEchoType, sidecarEchoSize)
	ctx := context.Background()
	call := func(rt *tandem.Runtime) error {
		reply, err := rt.Call(ctx, ev)
		if err != nil {
			return err
		}
		n := len(reply.Data())
		reply.Release()
		if n != len(ev.Data) {
			return fmt.Errorf("echo of %d bytes, want %d", n, len(ev.Data))
		}
		return nil
	}
	contender(b, "rings/echo-1KiB/serial", true, func(b *testing.B, rt *tandem.Runtime) {
		rec := newRecorder()
		w := begin(b, rt)
		for range b.N {
			t0 := time.Now()
			if err := call(rt); err != nil {
				b.Fatal(err)
			}
			rec.record(time.Since(t0))
		}
		w.end(b, rec.hist, rec.err)
	})
	for _, par := range parallelism {
		contender(b, "rings/echo-1KiB/"+par.name, true, func(b *testing.B, rt *tandem.Runtime) {
			rs := newRecorders(par.n)
			w := begin(b, rt)
			b.SetParallelism(par.n)
			b.RunParallel(func(pb *testing.PB) {
				rec := rs.take()
				for pb.Next() {
					t0 := time.Now()
					if err := call(rt); err != nil {
						b.Error(err)
						return
					}
					rec.record(time.Since(t0))
				}
			})
			hist, err := rs.merged()
			w.end(b, hist, err)
		})
	}
}

// sidecarContender runs fn as sub-benchmark name against a sidecar process of its own,
// started on the sub-benchmark's first round and stopped after its last (like contender).
func sidecarContender(b *testing.B, name, dir string, conns int, fn func(b *testing.B, s *sidecar)) {
	var s *sidecar
	cleanup := func() {}
	b.Run(name, func(b *testing.B) {
		if s == nil {
			bin, err := sidecarBinary()
			if err != nil {
				b.Skip(err)
			}
			var socket string
			if socket, cleanup, err = sidecarSocket(dir); err != nil {
				b.Fatal(err)
			}
			if s, err = startSidecar(bin, socket, sidecarWorkers, conns); err != nil {
				b.Fatal(err)
			}
		}
		fn(b, s)
	})
	if s != nil {
		s.Close()
	}
	cleanup()
}

// sidecarCheck checks a Call's results: an acknowledged reply of want bytes.
func sidecarCheck(outcome uint8, reply []byte, err error, want int) error {
	switch {
	case err != nil:
		return fmt.Errorf("sidecar Call: %w", err)
	case outcome != 0:
		return fmt.Errorf("sidecar Call: outcome %d", outcome)
	case len(reply) != want:
		return fmt.Errorf("sidecar Call: reply of %d bytes, want %d", len(reply), want)
	}
	return nil
}
