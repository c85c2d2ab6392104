package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// report is what the demo's report says, parsed back.
type report struct {
	submitted, rejected, acked, placed, priced, emitted  int
	retried, deadLettered, failed                        int
	outstanding, violations, lettersAdded, lettersInFile int
}

var reportLines = []struct {
	re     *regexp.Regexp
	fields func(r *report) []*int
}{
	{regexp.MustCompile(`(?m)^  events +(\d+) submitted, (\d+) rejected at submit$`),
		func(r *report) []*int { return []*int{&r.submitted, &r.rejected} }},
	{regexp.MustCompile(`(?m)^  acked +(\d+) \((\d+) orders placed, (\d+) of (\d+) follow-ups priced\)$`),
		func(r *report) []*int { return []*int{&r.acked, &r.placed, &r.priced, &r.emitted} }},
	{regexp.MustCompile(`(?m)^  retried +(\d+)$`),
		func(r *report) []*int { return []*int{&r.retried} }},
	{regexp.MustCompile(`(?m)^  dead +(\d+) dead-lettered`),
		func(r *report) []*int { return []*int{&r.deadLettered} }},
	{regexp.MustCompile(`(?m)^  failed +(\d+)$`),
		func(r *report) []*int { return []*int{&r.failed} }},
	{regexp.MustCompile(`(?m)^  buffers +(\d+) outstanding .*; violations (\d+)$`),
		func(r *report) []*int { return []*int{&r.outstanding, &r.violations} }},
	{regexp.MustCompile(`(?m)^  dlq +(\d+) letters added to .* \((\d+) in the file\): tandem dlq list -file `),
		func(r *report) []*int { return []*int{&r.lettersAdded, &r.lettersInFile} }},
}

func parseReport(t *testing.T, out string) report {
	t.Helper()
	var r report
	for _, l := range reportLines {
		m := l.re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the report has no line matching %s:\n%s", l.re, out)
		}
		for i, p := range l.fields(&r) {
			n, err := strconv.Atoi(m[i+1])
			if err != nil {
				t.Fatal(err)
			}
			*p = n
		}
	}
	return r
}

// runDemo runs `tandem run` with args and returns its report, failing on an error.
func runDemo(t *testing.T, args ...string) report {
	t.Helper()
	var out bytes.Buffer
	args = append([]string{"-http", "127.0.0.1:0"}, args...) // any free loopback port
	if err := run(args, &out); err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out.String())
	}
	t.Logf("tandem run %v:\n%s", args, out.String())
	return parseReport(t, out.String())
}

// callers is the demo's -concurrency in these tests: several, so retries of Rust events run
// concurrently with completions (under -race this once caught a slot read after its hand-off).
const callers = "8"

func TestDemoCountsEveryAcknowledgement(t *testing.T) {
	const events = 600 // six rounds of the hundred-event mix
	dlq := filepath.Join(t.TempDir(), "dlq.cbor")
	r := runDemo(t, "-events", strconv.Itoa(events), "-concurrency", callers, "-dlq", dlq)

	if r.submitted != events || r.rejected != 0 || r.failed != 0 {
		t.Errorf("submitted %d, rejected %d, failed %d; want %d, 0, 0", r.submitted, r.rejected, r.failed, events)
	}
	if r.acked+r.deadLettered != events {
		t.Errorf("acked %d + dead-lettered %d != %d events", r.acked, r.deadLettered, events)
	}
	// Per hundred events: 1 demo.fail "term", 5 payments that succeed at their second
	// delivery, 30 orders each emitting one follow-up.
	if want := events / 100; r.deadLettered != want {
		t.Errorf("dead-lettered %d, want %d (demo.fail)", r.deadLettered, want)
	}
	if want := events * 5 / 100; r.retried != want {
		t.Errorf("retried %d, want %d (one retry per payment)", r.retried, want)
	}
	if want := events * 30 / 100; r.placed != want || r.emitted != want || r.priced != want {
		t.Errorf("orders placed %d, follow-ups emitted %d, priced %d; want %d each", r.placed, r.emitted, r.priced, want)
	}
	if r.outstanding != 0 || r.violations != 0 {
		t.Errorf("%d buffers outstanding, %d violations after shutdown", r.outstanding, r.violations)
	}

	f, err := deadletter.ReadFile(dlq)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Records) != r.deadLettered || r.lettersAdded != r.deadLettered || r.lettersInFile != r.deadLettered {
		t.Fatalf("the file holds %d letters, the report says %d added (%d in the file), %d dead-lettered",
			len(f.Records), r.lettersAdded, r.lettersInFile, r.deadLettered)
	}
	for _, dl := range f.Records {
		if dl.Reason != deadletter.ReasonTerm || dl.EventType != "demo.fail" || dl.Attempts != 1 ||
			dl.Error == nil || dl.Error.Code != "invalid" {
			t.Errorf("unexpected dead letter: %+v", dl)
		}
		ev, err := envelope.DecodeEvent(dl.Envelope)
		if err != nil || ev.ID != dl.EventID || string(ev.Data) != "term" {
			t.Errorf("dead letter %s: envelope %+v, %v", dl.EventID, ev, err)
		}
	}
}

func TestDemoAppendsToTheDeadLetterFile(t *testing.T) {
	dlq := filepath.Join(t.TempDir(), "dlq.cbor")
	first := runDemo(t, "-events", "200", "-concurrency", callers, "-dlq", dlq)
	second := runDemo(t, "-events", "300", "-concurrency", callers, "-dlq", dlq)
	if first.lettersAdded != 2 || second.lettersAdded != 3 || second.lettersInFile != 5 {
		t.Errorf("letters added %d then %d, %d in the file; want 2, 3 and 5",
			first.lettersAdded, second.lettersAdded, second.lettersInFile)
	}
}

func TestDemoRefusesBadFlags(t *testing.T) {
	dlq := filepath.Join(t.TempDir(), "dlq.cbor")
	for _, args := range [][]string{
		{"-events", "0", "-dlq", dlq},
		{"-concurrency", "-1", "-dlq", dlq},
		{"-dlq", ""},
		{"-no-such-flag"},
		{"-swap", "demo.upper", "-dlq", dlq},                                     // no target
		{"-swap", "demo.upper=java:upper", "-dlq", dlq},                          // no such runtime
		{"-weights", "demo.upper=go:upper-go:x", "-dlq", dlq},                    // no weight
		{"-weights", "demo.upper=go:upper-go:0", "-dlq", dlq},                    // a total of 0
		{"-swap", "no.such.route=go:upper-go", "-dlq", dlq},                      // no such route
		{"-shadow", "demo.upper=go:no-such-handler", "-dlq", dlq},                // no such handler
		{"-weights", "demo.upper=rust:demo.upper:-1,go:upper-go:1", "-dlq", dlq}, // negative
	} {
		var out bytes.Buffer
		if err := run(args, &out); err == nil {
			t.Errorf("run %v succeeded:\n%s", args, out.String())
		}
	}
}

// The route-change flags: a shadow compares demo.upper's Go version with the Rust one (every
// copy matches), a sticky split sends demo.upper to both, a swap moves demo.echo to its second
// version; the report shows each route, and the run's counts are as without them.
func TestDemoMovesRoutes(t *testing.T) {
	var out bytes.Buffer
	dlq := filepath.Join(t.TempDir(), "dlq.cbor")
	args := []string{"-http", "", "-events", "400", "-concurrency", callers, "-dlq", dlq,
		"-shadow", "demo.upper=go:upper-go"}
	if err := run(args, &out); err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out.String())
	}
	m := regexp.MustCompile(`(?m)^    shadow +(\d+) copies: (\d+) matched, 0 mismatched, 0 dropped$`).FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("no shadow line with every copy matched:\n%s", out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("    shadow   go:upper-go: "+m[1]+" dispatched, "+m[1]+" acked")) {
		t.Errorf("the shadow handler's line does not count every copy:\n%s", out.String())
	}

	out.Reset()
	args = []string{"-http", "", "-events", "400", "-concurrency", callers, "-dlq", dlq,
		"-weights", "demo.upper=rust:demo.upper:1,go:upper-go:1,sticky", "-swap", "demo.echo=rust:demo.echo.v2"}
	if err := run(args, &out); err != nil {
		t.Fatalf("run %v: %v\n%s", args, err, out.String())
	}
	r := parseReport(t, out.String())
	if r.failed != 0 || r.acked+r.deadLettered != 400 {
		t.Errorf("acked %d, dead-lettered %d, failed %d", r.acked, r.deadLettered, r.failed)
	}
	for _, want := range []string{
		"  route      demo.upper → rust:demo.upper=1 go:upper-go=1 sticky\n",
		"  route      demo.echo → rust:demo.echo.v2=1\n",
	} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
	for _, h := range []string{"go:upper-go", "rust:demo.upper", "rust:demo.echo.v2"} {
		if !regexp.MustCompile(`(?m)^    handler  ` + regexp.QuoteMeta(h) + `: [1-9]\d* dispatched`).Match(out.Bytes()) {
			t.Errorf("%s took no event:\n%s", h, out.String())
		}
	}
}
