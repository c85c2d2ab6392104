package bench

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The Go → Rust → Go chain: a Go step (chainPrepare: the payload must be lower-case ASCII
// letters), then the Rust handler demo.upper on the payload, then a second Go step
// (chainVerify: the reply must be the payload upper-cased). Every contender does this same
// composed work; what differs is how the Rust step is reached and where the Go steps run.

const (
	// chainRoute is the Go route of tandem's composition: its handler is the whole chain.
	chainRoute = "bench.chain"
	// chainPayloadSize is the chain's payload: 64 lower-case letters.
	chainPayloadSize = 64
)

// chainDefs are the chain's contenders. go-pool is not one: a Go route whose handler does the
// chain in Go alone is rings' composition without its Rust step.
//
//   - rings: tandem's composition. A Go route (rt.Handle) whose handler does the first Go
//     step, calls demo.upper with tandem.Call over the rings, does the second Go step and
//     replies with the upper-cased payload; the caller does rt.Call on that route.
//   - rings-callerruns: the same route WithCallerRuns: the Call runs the route's handler on
//     its own goroutine, no hop to a worker and back.
//   - rings-caller: the same steps on the calling goroutine around rt.Call to demo.upper, no
//     Go route: what the composition costs over calling the Rust handler directly.
//   - direct, callback, sidecar: the Go steps on the calling goroutine around that
//     contender's call to demo.upper.
//   - go-direct: all three steps in Go on the calling goroutine (demo.upper's Go twin, behind
//     the same envelope encode and decode as every other contender): the ceiling.
var chainDefs = []contenderDef{
	{"rings", startChainRings()},
	{"rings-callerruns", startChainRings(tandem.WithCallerRuns())},
	{"rings-caller", chainAround(startRings)},
	{"direct", chainAround(startDirect)},
	{"callback", chainAround(startCallback)},
	{"sidecar", chainAround(startSidecarSession)},
	{"go-direct", chainAround(startGoDirect)},
}

// chainEvent is the chain's event: type typ, a payload of chainPayloadSize lower-case letters.
func chainEvent(typ string) *tandem.Event {
	data := make([]byte, chainPayloadSize)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	return &tandem.Event{ID: "chain-1", Source: "/bench/chain", Type: typ, Data: data}
}

// chainPrepare is the chain's first Go step: it checks that the payload is lower-case ASCII
// letters, the input demo.upper is for.
func chainPrepare(in []byte) error {
	for i, c := range in {
		if c < 'a' || c > 'z' {
			return fmt.Errorf("chain: payload byte %d is %q, not a lower-case letter", i, c)
		}
	}
	return nil
}

// chainVerify is the chain's second Go step: reply must be in upper-cased, byte for byte.
func chainVerify(in, reply []byte) error {
	if len(reply) != len(in) {
		return fmt.Errorf("chain: demo.upper replied %d bytes to %d", len(reply), len(in))
	}
	for i, c := range in {
		if reply[i] != c-('a'-'A') {
			return fmt.Errorf("chain: byte %d of the reply is %q, want %q", i, reply[i], c-('a'-'A'))
		}
	}
	return nil
}

// chainUpperEvent is the event the chain hands to demo.upper: the input's payload, not copied.
func chainUpperEvent(in *tandem.Event) tandem.Event {
	return tandem.Event{ID: in.ID, Source: in.Source, Type: demoUpperType, Data: in.Data}
}

// startChainRings is tandem's composition: the chain is a Go route's handler (with opts),
// which reaches demo.upper with tandem.Call (the handler's context routes it over the rings)
// and replies with a copy of the upper-cased payload, since the Rust reply is only lent
// until Release.
func startChainRings(opts ...tandem.RouteOption) func(tandem.Config) (*session, error) {
	return func(cfg tandem.Config) (*session, error) { return startChainRoute(cfg, opts) }
}

func startChainRoute(cfg tandem.Config, opts []tandem.RouteOption) (*session, error) {
	handler := func(ctx context.Context, ev *tandem.Event) tandem.Result {
		if err := chainPrepare(ev.Data); err != nil {
			return tandem.Term(tandem.Errorf("invalid", "%v", err))
		}
		up := chainUpperEvent(ev)
		reply, err := tandem.Call(ctx, &up)
		if err != nil {
			return tandem.Term(err)
		}
		defer reply.Release()
		if err := chainVerify(ev.Data, reply.Data()); err != nil {
			return tandem.Term(tandem.Errorf("invalid", "%v", err))
		}
		return tandem.AckReply(bytes.Clone(reply.Data()))
	}
	rt, err := startedRuntime(cfg, func(rt *tandem.Runtime) error {
		return rt.Handle(chainRoute, "chain", tandem.HandlerFunc(handler), opts...)
	})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	return &session{rt: rt, newCaller: func(check func([]byte) error, _ int, _ bool) caller {
		return func(ev *tandem.Event) error {
			reply, err := rt.Call(ctx, ev)
			if err != nil {
				return err
			}
			err = check(reply.Data())
			reply.Release()
			return err
		}
	}}, nil
}

// chainAround makes a contender's session do the chain: the first Go step before its call,
// which goes to demo.upper, and the second on the reply, in place, before check.
func chainAround(start func(tandem.Config) (*session, error)) func(tandem.Config) (*session, error) {
	return func(cfg tandem.Config) (*session, error) {
		s, err := start(cfg)
		if err != nil {
			return nil, err
		}
		newInner := s.newCaller
		s.newCaller = func(check func([]byte) error, bufSize int, _ bool) caller {
			var in []byte
			call := newInner(func(reply []byte) error {
				if err := chainVerify(in, reply); err != nil {
					return err
				}
				return check(reply)
			}, bufSize, false)
			var up tandem.Event
			return func(ev *tandem.Event) error {
				if err := chainPrepare(ev.Data); err != nil {
					return err
				}
				in, up = ev.Data, chainUpperEvent(ev)
				return call(&up)
			}
		}
		return s, nil
	}
}

// startSidecarSession is the sidecar contender as a session: a process of its own with
// sidecarWorkers tokio workers and GOMAXPROCS connections, as in BenchmarkRoundTripSidecar.
// A call allocates its reply.
func startSidecarSession(tandem.Config) (*session, error) {
	sc, stop, err := startSidecarTemp(sidecarWorkers, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	return &session{stop: stop, newCaller: func(check func([]byte) error, _ int, _ bool) caller {
		return func(ev *tandem.Event) error {
			outcome, reply, err := sc.Call(ev)
			if err != nil {
				return err
			}
			if outcome != 0 {
				return fmt.Errorf("sidecar: outcome %d", outcome)
			}
			return check(reply)
		}
	}}, nil
}

// BenchmarkContendersChain is the Go → Rust → Go chain for every contender, serial and wide:
// a Go step, demo.upper on a 64 B payload, and a Go step that checks the upper-cased reply.
// ffi-calls/op counts the calls into Rust of the whole chain.
func BenchmarkContendersChain(b *testing.B) {
	cfg := roundTripConfig(b)
	ev := chainEvent(chainRoute)
	roundTrips(b, chainDefs, cfg, ev, envelope.EncodedEventSize(ev)+chainPayloadSize, replyLenCheck(chainPayloadSize))
}

// TestContendersChain checks that every chain contender does the whole chain: the caller
// gets the upper-cased payload back, and a payload the first Go step refuses fails the call.
func TestContendersChain(t *testing.T) {
	cfg := roundTripConfig(t)
	ev := chainEvent(chainRoute)
	bad := chainEvent(chainRoute)
	bad.Data[3] = 'Q'
	for _, c := range chainDefs {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.start(cfg)
			if skipUnavailable(t, err) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.close(); err != nil {
					t.Error(err)
				}
			}()
			var got []byte
			call := s.newCaller(func(reply []byte) error {
				got = append(got[:0], reply...)
				return nil
			}, 1<<10, false)
			if err := call(ev); err != nil {
				t.Fatal(err)
			}
			if want := bytes.ToUpper(ev.Data); !bytes.Equal(got, want) {
				t.Fatalf("reply %q, want %q", got, want)
			}
			if err := call(bad); err == nil {
				t.Fatalf("a payload with an upper-case letter went through the chain")
			}
		})
	}
}
