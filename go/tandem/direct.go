package tandem

import (
	"errors"
	"fmt"

	"github.com/tandemrt/tandem/go/internal/abi"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// CallDirect runs ev's Rust handler on the calling goroutine's OS thread through one FFI call
// that blocks on tokio until the handler finishes: no rings, no pollers. The reply (or nothing)
// is appended to dst[:0] and returned. A failed handler returns a *HandlerError.
//
// This is the classic way to call async Rust from Go, kept as a comparison point for the
// rings and for tiny synchronous handlers: every call holds an OS thread for the handler's
// whole run, so it does not scale to handlers that wait. Safe for concurrent use.
func (r *Runtime) CallDirect(ev *Event, dst []byte) ([]byte, error) {
	r.active.Add(1)
	defer r.active.Add(-1)
	if State(r.state.Load()) != Running {
		return nil, ErrClosed
	}
	if rt := r.router.match(ev.Type); rt == nil || !rt.isRust() || !rt.exact() {
		return nil, fmt.Errorf("%w: %q (CallDirect reaches Rust handlers by their own type)", ErrNoRoute, ev.Type)
	}
	buf := directBufs.get(envelope.EncodedEventSize(ev))
	defer directBufs.put(buf)
	env, err := envelope.AppendEvent((*buf)[:0], ev)
	if err != nil {
		return nil, err
	}
	*buf = env
	dst = dst[:cap(dst)]
	if len(dst) < r.cfg.MaxReplySize {
		dst = make([]byte, r.cfg.MaxReplySize)
	}
	n, outcome, err := abi.Invoke(r.h, env, dst)
	if errors.Is(err, abi.ErrTooSmall) {
		dst = make([]byte, n)
		n, outcome, err = abi.Invoke(r.h, env, dst)
	}
	if err != nil {
		return nil, fmt.Errorf("tandem: direct call: %w", err)
	}
	switch outcome {
	case abi.OutcomeAck:
		return dst[:n], nil
	case abi.OutcomeRetry, abi.OutcomeTerm:
		he := &HandlerError{Outcome: OutcomeTerm, EventType: ev.Type}
		if outcome == abi.OutcomeRetry {
			he.Outcome = OutcomeRetry
		}
		if e, derr := envelope.DecodeErrorEnvelope(dst[:n]); derr == nil {
			he.Envelope = *e
		} else {
			he.Envelope = ErrorEnvelope{Code: envelope.CodeDecode, Message: derr.Error(), Runtime: "rust"}
		}
		return nil, he
	}
	return nil, fmt.Errorf("tandem: direct call: unknown outcome %d", outcome)
}

// FFICalls returns how many calls into the Rust library this process has made: a handful
// per runtime over the rings, one per event with CallDirect.
func FFICalls() uint64 { return abi.Calls() }

// LinkMode says how this binary reaches the Rust library: "cgo" (linked in, the default) or
// "purego" (CGO_ENABLED=0 or -tags tandem_purego: dlopen of libtandem_native.so).
func LinkMode() string { return abi.Mode }
