package conform_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/conform"
)

func TestMain(m *testing.M) {
	// The purego mode loads the cdylib ./build.sh builds; the cgo mode ignores this.
	if os.Getenv("TANDEM_LIB") == "" {
		if p, err := filepath.Abs("../../../target/release/libtandem_native.so"); err == nil {
			os.Setenv("TANDEM_LIB", p)
		}
	}
	goleak.VerifyTestMain(m)
}

const header = `{"format": "tandem.conformance", "version": 1}` + "\n"

func parse(t *testing.T, text string) (*conform.Vectors, error) {
	t.Helper()
	return conform.Parse("cases.jsonl", strings.NewReader(text))
}

func TestParseReadsEveryFormOfBytes(t *testing.T) {
	v, err := parse(t, "# a comment\n\n"+header+
		`{"case": "text", "event": {"type": "t", "data": "héllo", "attempt": 2, "extensions": {"k": "v"}}, "expect": {"outcome": "ack", "reply": "x"}}`+"\n"+
		`  # an indented comment`+"\n"+
		`{"case": "hex", "event": {"data": {"hex": "ff00"}}, "expect": {"outcome": "ack", "reply": {"base64": "/wA="}}}`+"\n"+
		`{"case": "repeat", "event": {"data": {"text": "ab", "repeat": 3}}, "expect": {"outcome": "retry", "code": "unavailable"}}`+"\n"+
		`{"case": "no reply checked", "event": {}, "expect": {"outcome": "term"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Cases) != 4 {
		t.Fatalf("%d cases, want 4", len(v.Cases))
	}
	c := v.Cases[0]
	if c.Line != 4 || c.Event.ID != "text" || c.Event.Source != "/conformance" || c.Event.Type != "t" ||
		string(c.Event.Data) != "héllo" || c.Event.Attempt != 2 || c.Event.Extensions["k"] != "v" ||
		c.Expect.Outcome != tandem.OutcomeAck || string(c.Expect.Reply) != "x" {
		t.Errorf("case 1 = %+v", c)
	}
	if c := v.Cases[1]; c.Line != 6 || string(c.Event.Data) != "\xff\x00" || string(c.Expect.Reply) != "\xff\x00" {
		t.Errorf("case 2 = %+v", c)
	}
	if c := v.Cases[2]; string(c.Event.Data) != "ababab" || c.Expect.Outcome != tandem.OutcomeRetry || c.Expect.Code != "unavailable" {
		t.Errorf("case 3 = %+v", c)
	}
	if c := v.Cases[3]; c.Expect.Outcome != tandem.OutcomeTerm || c.Expect.Reply != nil || c.Expect.Code != "" || c.Event.Data != nil {
		t.Errorf("case 4 = %+v", c)
	}
}

// badFiles is the table of bad vector files both readers must refuse alike (the Rust
// reader's test reads it too): each fails with a *FileError naming the file, the line and
// (when the line names one) the case, and the kind of defect; nothing of the file is run.
var badFiles = filepath.Join("..", "..", "..", "ffi", "testdata", "conformance", "bad_files.json")

func TestParseRefusesBadFilesNamingTheLineAndCase(t *testing.T) {
	raw, err := os.ReadFile(badFiles)
	if err != nil {
		t.Fatal(err)
	}
	var table struct {
		Files []struct {
			Name, Text, Error, Case string
			Line                    int
		}
	}
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]error{"version": conform.ErrVersion, "malformed": conform.ErrMalformed, "unknown_outcome": conform.ErrUnknownOutcome}
	// Text that is not UTF-8 cannot be written in the JSON table.
	table.Files = append(table.Files, struct {
		Name, Text, Error, Case string
		Line                    int
	}{Name: "not utf-8", Text: header + "{\"case\": \"\xff\"}\n", Error: "malformed", Line: 2})
	for _, c := range table.Files {
		t.Run(c.Name, func(t *testing.T) {
			kind := kinds[c.Error]
			if kind == nil {
				t.Fatalf("unknown error kind %q in the table", c.Error)
			}
			_, err := parse(t, c.Text)
			var fe *conform.FileError
			if !errors.Is(err, kind) || !errors.As(err, &fe) {
				t.Fatalf("Parse = %v, want a *FileError matching %v", err, kind)
			}
			if fe.File != "cases.jsonl" || fe.Line != c.Line || fe.Case != c.Case {
				t.Errorf("error at %s:%d case %q, want line %d case %q", fe.File, fe.Line, fe.Case, c.Line, c.Case)
			}
			if !strings.HasPrefix(err.Error(), "cases.jsonl:") {
				t.Errorf("error %q does not start with the file", err)
			}
		})
	}
}

func TestRoutePatternsMatchAsTheRouterDoes(t *testing.T) {
	rt := running(t, func(rt *tandem.Runtime) error { return rt.HandleRust("text.>", "demo.upper") })
	v, err := parse(t, header+
		`{"case": "one segment", "event": {"type": "text.a", "data": "a"}, "expect": {"outcome": "ack", "reply": "A"}}`+"\n"+
		`{"case": "two segments", "event": {"type": "text.a.b", "data": "b"}, "expect": {"outcome": "ack", "reply": "B"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := conform.Check(t.Context(), rt, "text.>", v); err != nil || !rep.OK() {
		t.Fatalf("Check = %v\n%v", err, rep)
	}
	for _, route := range []string{"text.*", "other.>", "text"} {
		if _, err := conform.Check(t.Context(), rt, route, v); !errors.Is(err, conform.ErrOtherType) {
			t.Errorf("Check on %q = %v, want ErrOtherType", route, err)
		}
	}
}

func TestLoadNamesAMissingFile(t *testing.T) {
	_, err := conform.Load("no/such/file.jsonl")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "no/such/file.jsonl") {
		t.Fatalf("Load = %v", err)
	}
}

func running(t *testing.T, routes func(rt *tandem.Runtime) error) *tandem.Runtime {
	t.Helper()
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Shutdown(context.Background()) })
	if routes != nil {
		if err := routes(rt); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	return rt
}

// A retry is judged on its one delivery: never redelivered (demo.flaky would then succeed)
// nor dead-lettered; the attempt a case gives is the one the handler sees.
func TestCheckJudgesOneDeliveryOfRustHandlers(t *testing.T) {
	rt := running(t, nil)
	flaky, err := parse(t, header+
		`{"case": "first delivery", "event": {}, "expect": {"outcome": "retry", "code": "unavailable"}}`+"\n"+
		`{"case": "third delivery", "event": {"attempt": 3}, "expect": {"outcome": "ack", "reply": "3"}}`+"\n"+
		`{"case": "asked to succeed at once", "event": {"extensions": {"succeed_at": "1"}}, "expect": {"outcome": "ack", "reply": "1"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := conform.Check(t.Context(), rt, "demo.flaky", flaky)
	if err != nil || !rep.OK() {
		t.Fatalf("Check = %v\n%v", err, rep)
	}
	fail, err := parse(t, header+
		`{"case": "term", "event": {"data": "term"}, "expect": {"outcome": "term", "code": "invalid"}}`+"\n"+
		`{"case": "retry", "event": {"data": "retry"}, "expect": {"outcome": "retry", "code": "unavailable"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	rep, err = conform.Check(t.Context(), rt, "demo.fail", fail)
	if err != nil || !rep.OK() {
		t.Fatalf("Check = %v\n%v", err, rep)
	}
	panics, err := parse(t, header+`{"case": "panic", "event": {"type": "demo.panic", "data": "panic"}, "expect": {"outcome": "term", "code": "panic"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	rep, err = conform.Check(t.Context(), rt, "demo.panic", panics)
	if err != nil || !rep.OK() {
		t.Fatalf("Check = %v\n%v", err, rep)
	}
	if s := rt.Stats(); s.Retried != 0 || s.DeadLettered != 0 {
		t.Errorf("a conformance run retried %d and dead-lettered %d events", s.Retried, s.DeadLettered)
	}
}

// A mismatch is reported case by case, with what differs, and the report says which
// cases failed; the run goes on past it.
func TestCheckReportsEachMismatch(t *testing.T) {
	rt := running(t, func(rt *tandem.Runtime) error {
		return rt.Handle("shout", "shout", tandem.HandlerFunc(func(_ context.Context, ev *tandem.Event) tandem.Result {
			if string(ev.Data) == "fail" {
				return tandem.Term(tandem.Errorf("refused", "no"))
			}
			return tandem.AckReply(append([]byte("!"), ev.Data...))
		}))
	})
	v, err := parse(t, header+
		`{"case": "passes", "event": {"data": "a"}, "expect": {"outcome": "ack", "reply": "!a"}}`+"\n"+
		`{"case": "wrong reply", "event": {"data": "b"}, "expect": {"outcome": "ack", "reply": "b"}}`+"\n"+
		`{"case": "wrong outcome", "event": {"data": "fail"}, "expect": {"outcome": "ack"}}`+"\n"+
		`{"case": "wrong code", "event": {"data": "fail"}, "expect": {"outcome": "term", "code": "invalid"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := conform.Check(t.Context(), rt, "shout", v)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Results) != 4 || len(rep.Failures()) != 3 {
		t.Fatalf("report:\n%v", rep)
	}
	out := rep.String()
	for _, want := range []string{
		"cases.jsonl on route shout: 4 cases, 1 passed, 3 failed",
		`cases.jsonl:3: case "wrong reply"`,
		`reply: got  "!b" (2 bytes)`,
		`want "b" (1 bytes)`,
		"first difference at byte 0: got 21 62, want 62",
		`cases.jsonl:4: case "wrong outcome"`,
		"outcome: got term, want ack (refused: no)",
		`code: got "refused", want "invalid"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
}

// A run that cannot judge the handler stops with an error naming the file, line and case.
func TestCheckStopsOnARouteItCannotRun(t *testing.T) {
	rt := running(t, nil)
	v, err := parse(t, header+`{"case": "a", "event": {}, "expect": {"outcome": "ack"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conform.Check(t.Context(), rt, "no.such.route", v)
	var fe *conform.FileError
	if !errors.Is(err, tandem.ErrNoRoute) || !errors.As(err, &fe) || fe.Line != 2 || fe.Case != "a" ||
		!strings.Contains(err.Error(), `"no.such.route"`) {
		t.Fatalf("Check on an unknown route = %v", err)
	}
	_, err = conform.Check(t.Context(), rt, "demo.*", v)
	if !errors.Is(err, conform.ErrNoType) || !errors.As(err, &fe) || fe.Case != "a" {
		t.Fatalf("Check on a pattern, a case without a type = %v", err)
	}
	typed, err := parse(t, header+`{"case": "typed", "event": {"type": "demo.noop"}, "expect": {"outcome": "ack"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	_, err = conform.Check(t.Context(), rt, "demo.echo", typed)
	if !errors.Is(err, conform.ErrOtherType) || !errors.As(err, &fe) || fe.Case != "typed" || fe.Line != 2 {
		t.Fatalf("Check of a case whose type the route does not match = %v", err)
	}
	if rep, err := conform.Check(t.Context(), rt, "demo.noop", typed); err != nil || !rep.OK() {
		t.Fatalf("Check of a case of the route's own type = %v\n%v", err, rep)
	}
	// An event a Rust route refuses is that case's failure, and the run goes on.
	big, err := parse(t, header+`{"case": "too large", "event": {"data": {"text": "a", "repeat": 70000}}, "expect": {"outcome": "ack"}}`+"\n"+
		`{"case": "fine", "event": {}, "expect": {"outcome": "ack"}}`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := conform.Check(t.Context(), rt, "demo.echo", big)
	if err != nil || len(rep.Failures()) != 1 || !errors.Is(rep.Failures()[0].Err, tandem.ErrEventTooLarge) {
		t.Fatalf("Check = %v\n%v", err, rep)
	}
	if d := rep.Failures()[0].Diff(big.File); !strings.Contains(d, `cases.jsonl:2: case "too large": no outcome: `) {
		t.Errorf("Diff = %q", d)
	}
	// A runtime that is not running cannot judge anything.
	_ = rt.Shutdown(context.Background())
	if _, err := conform.Check(t.Context(), rt, "demo.echo", v); !errors.Is(err, tandem.ErrClosed) {
		t.Fatalf("Check after Shutdown = %v", err)
	}
}
