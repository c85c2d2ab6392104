package conform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandemrt/tandem/go/tandem"
)

// CaseTimeout bounds the wait for one case's outcome: a handler that never answers fails
// its case, not the run.
const CaseTimeout = 10 * time.Second

var (
	// ErrNoType: the route under test is a pattern (it has a "*" or ">" segment), and a
	// case names no event type to send under it.
	ErrNoType = errors.New("conform: the route is a pattern: the case must name its event type")
	// ErrOtherType: a case names an event type the route under test does not match, so its
	// event would go to another route's handler, or none.
	ErrOtherType = errors.New("conform: the case's event type is not the route's")
)

// Got is the outcome a handler gave a case. A plain value.
type Got struct {
	// Outcome is the handler's verdict on the one delivery.
	Outcome tandem.Outcome
	// Reply is an Ack's reply (empty when there was none).
	Reply []byte
	// Code and Message are a Retry's or Term's error envelope's.
	Code, Message string
}

// Result is one case's run: what the handler gave, and how it differs from what the case
// expects. A plain value once Check returns.
type Result struct {
	// Case is the case run.
	Case Case
	// Got is the handler's outcome; zero when Err is set.
	Got Got
	// Err is why the case has no outcome: the runtime refused the event (it is too large
	// for a Rust route, say) or the wait for it ended.
	Err error
	// Mismatches says, one line each, where Got differs from the case's Expect.
	Mismatches []string
}

// Passed reports whether the handler gave what the case expects.
func (r *Result) Passed() bool { return r.Err == nil && len(r.Mismatches) == 0 }

// Diff describes a failed case, the file, line and case first, then one line per
// difference; "" when the case passed.
func (r *Result) Diff(file string) string {
	if r.Passed() {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: case %q", file, r.Case.Line, r.Case.Name)
	if r.Err != nil {
		fmt.Fprintf(&b, ": no outcome: %v", r.Err)
		return b.String()
	}
	for _, m := range r.Mismatches {
		b.WriteString("\n    ")
		b.WriteString(m)
	}
	return b.String()
}

// Report is the run of a vector file against one route. A plain value once Check returns.
type Report struct {
	// File is the vector file's name, Route the route run.
	File, Route string
	// Results are the cases' runs, in file order.
	Results []Result
}

// OK reports whether every case passed.
func (r *Report) OK() bool { return len(r.Failures()) == 0 }

// Failures are the results of the cases that did not pass.
func (r *Report) Failures() []*Result {
	var out []*Result
	for i := range r.Results {
		if !r.Results[i].Passed() {
			out = append(out, &r.Results[i])
		}
	}
	return out
}

// String is a summary line, then each failing case's Diff.
func (r *Report) String() string {
	var b strings.Builder
	failed := r.Failures()
	fmt.Fprintf(&b, "%s on route %s: %d cases, %d passed, %d failed", r.File, r.Route,
		len(r.Results), len(r.Results)-len(failed), len(failed))
	for _, f := range failed {
		b.WriteString("\n")
		b.WriteString(f.Diff(r.File))
	}
	return b.String()
}

// Check runs every case of v against route on rt, a running runtime, one case at a time, in
// file order, and reports each case's outcome. Each case's event goes to the route's handler,
// in whichever runtime, through rt.CallOnce: its first delivery's outcome is what is judged,
// never the route's retries, and nothing is dead-lettered. A case's event carries its own
// type when it names one, which route must match (a more specific route of rt for that type
// would take the event instead), else route as its type.
//
// Check returns an error, and no report, only when the run cannot judge the handler: the
// runtime routes no handler for a case's type (errors.Is(err, tandem.ErrNoRoute)), is not
// running (tandem.ErrClosed), a case names no type under a pattern route (ErrNoType) or a
// type the route does not match (ErrOtherType), or ctx ended. The error names the file, line
// and case. Check is safe for concurrent use with anything else on rt; the cases of one call
// run one by one.
func Check(ctx context.Context, rt *tandem.Runtime, route string, v *Vectors) (*Report, error) {
	rep := &Report{File: v.File, Route: route, Results: make([]Result, 0, len(v.Cases))}
	for i := range v.Cases {
		res, err := checkCase(ctx, rt, route, v.File, &v.Cases[i])
		if err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, res)
	}
	return rep, nil
}

// CheckFile loads the vector file at path and runs it with Check. Safe for concurrent use
// as Check is.
func CheckFile(ctx context.Context, rt *tandem.Runtime, route, path string) (*Report, error) {
	v, err := Load(path)
	if err != nil {
		return nil, err
	}
	return Check(ctx, rt, route, v)
}

// checkCase runs one case. Its error ends the run (see Check); a case's own failure is in
// the Result.
func checkCase(ctx context.Context, rt *tandem.Runtime, route, file string, c *Case) (Result, error) {
	ev := c.Event
	switch {
	case ev.Type == "" && isPattern(route):
		return Result{}, &FileError{File: file, Line: c.Line, Case: c.Name, Err: fmt.Errorf("%w (route %q)", ErrNoType, route)}
	case ev.Type == "":
		ev.Type = route
	case !matches(route, ev.Type):
		return Result{}, &FileError{File: file, Line: c.Line, Case: c.Name, Err: fmt.Errorf("%w: %q is not matched by route %q", ErrOtherType, ev.Type, route)}
	}
	res := Result{Case: *c}
	cctx, cancel := context.WithTimeout(ctx, CaseTimeout)
	reply, err := rt.CallOnce(cctx, &ev)
	cancel()
	var he *tandem.HandlerError
	switch {
	case err == nil:
		res.Got = Got{Outcome: tandem.OutcomeAck, Reply: reply}
	case errors.As(err, &he):
		res.Got = Got{Outcome: he.Outcome, Code: he.Envelope.Code, Message: he.Envelope.Message}
	case errors.Is(err, tandem.ErrNoRoute), errors.Is(err, tandem.ErrClosed), ctx.Err() != nil:
		return Result{}, &FileError{File: file, Line: c.Line, Case: c.Name, Err: fmt.Errorf("route %q: %w", route, err)}
	default:
		res.Err = err
		return res, nil
	}
	res.Mismatches = compare(c.Expect, res.Got)
	return res, nil
}

// compare lists where got differs from want.
func compare(want Expect, got Got) []string {
	var out []string
	if got.Outcome != want.Outcome {
		line := fmt.Sprintf("outcome: got %s, want %s", got.Outcome, want.Outcome)
		if got.Outcome != tandem.OutcomeAck {
			line += fmt.Sprintf(" (%s: %s)", got.Code, got.Message)
		}
		return append(out, line)
	}
	if want.Code != "" && got.Code != want.Code {
		out = append(out, fmt.Sprintf("code: got %q, want %q (message: %s)", got.Code, want.Code, got.Message))
	}
	if want.Reply != nil && !bytes.Equal(got.Reply, want.Reply) {
		out = append(out, "reply: got  "+show(got.Reply), "       want "+show(want.Reply))
		i := firstDifference(got.Reply, want.Reply)
		out = append(out, fmt.Sprintf("       first difference at byte %d: got %s, want %s", i, window(got.Reply, i), window(want.Reply, i)))
	}
	return out
}

// shown is how many bytes of a byte string a message quotes.
const shown = 48

// show quotes a byte string: as text when it is UTF-8, else in hex, cut after shown bytes,
// with its length.
func show(b []byte) string {
	cut := b
	if len(cut) > shown {
		cut = cut[:shown]
	}
	var s string
	if utf8.Valid(b) {
		s = fmt.Sprintf("%q", cut)
	} else {
		s = fmt.Sprintf("hex %x", cut)
	}
	if len(cut) < len(b) {
		s += "…"
	}
	return fmt.Sprintf("%s (%d bytes)", s, len(b))
}

// window is up to 8 bytes of b from i, in hex, or "the end" past it.
func window(b []byte, i int) string {
	if i >= len(b) {
		return "the end"
	}
	return fmt.Sprintf("% x", b[i:min(i+8, len(b))])
}

func firstDifference(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// matches reports whether the route pattern matches the event type, as the router's patterns
// do: "*" is one segment, a last ">" one or more.
func matches(pattern, typ string) bool {
	p, t := strings.Split(pattern, "."), strings.Split(typ, ".")
	for i, seg := range p {
		switch {
		case seg == ">" && i == len(p)-1:
			return len(t) > i
		case i >= len(t):
			return false
		case seg != "*" && seg != t[i]:
			return false
		}
	}
	return len(p) == len(t)
}

// isPattern reports whether route has a wildcard segment.
func isPattern(route string) bool {
	for seg := range strings.SplitSeq(route, ".") {
		if seg == "*" || seg == ">" {
			return true
		}
	}
	return false
}
