package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// dlqFile writes a dead-letter file holding one letter per event (type, id, data) and
// returns its path.
func dlqFile(t *testing.T, events ...*tandem.Event) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := deadletter.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, ev := range events {
		b, err := envelope.MarshalEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		dl := &deadletter.Record{
			Reason:    deadletter.ReasonTerm,
			Error:     &tandem.ErrorEnvelope{Code: "invalid", Message: "asked to fail for good", Runtime: "rust", Handler: "fail"},
			Attempts:  uint32(i + 1),
			EventID:   ev.ID,
			EventType: ev.Type,
			Source:    ev.Source,
			Route:     ev.Type,
			Time:      time.Date(2026, 3, 1, 12, 0, i, 0, time.UTC),
			Envelope:  b,
		}
		if err := s.Write(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func sampleEvents() []*tandem.Event {
	return []*tandem.Event{
		{ID: "order-1", Source: "/orders", Type: "demo.echo", Data: []byte("hello dead letter"),
			Subject: "sub-1", Extensions: map[string]string{"tenant": "acme"}},
		{ID: "order-2", Source: "/orders", Type: "demo.fail", Data: []byte("term")},
		{ID: "blob-3", Source: "/blobs", Type: "demo.echo", Data: bytes.Repeat([]byte{0x00, 0xfe, 0x41}, 500)},
	}
}

// runDLQ runs `tandem dlq args...` and returns its exit status, stdout and stderr.
func runDLQ(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := dlqMain(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

func TestDLQList(t *testing.T) {
	path := dlqFile(t, sampleEvents()...)
	code, out, errOut := runDLQ("list", "-file", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantContains(t, "list", out, "order-1", "order-2", "blob-3", "demo.fail", "2026-03-01T12:00:01Z",
		"invalid: asked to fail for good", "3 dead letters, 0 torn bytes skipped")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 5 {
		t.Errorf("want a header, 3 letters and a summary, got %d lines:\n%s", len(lines), out)
	}

	// A torn last record is skipped and counted; the default file comes from $TANDEM_DLQ.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0xa9, 0x00, 0x01, 0x01})
	f.Close()
	t.Setenv("TANDEM_DLQ", path)
	code, out, errOut = runDLQ("list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantContains(t, "list of a torn file", out, "blob-3", "3 dead letters, 4 torn bytes skipped")
}

func TestDLQShow(t *testing.T) {
	path := dlqFile(t, sampleEvents()...)
	code, out, errOut := runDLQ("show", "-file", path, "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantContains(t, "show 0", out, "dead letter 0 of 3", "reason", "term", "attempts", "invalid",
		"asked to fail for good", "handler", "fail", "id", "order-1", "source", "/orders", "type", "demo.echo",
		"specversion", "1.0", "subject", "sub-1", "ext tenant", "acme", "17 bytes", "hello dead letter")

	// Binary data is a hex dump, cut at 1 KiB; flags may follow the index.
	code, out, errOut = runDLQ("show", "2", "-file", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantContains(t, "show 2", out, "blob-3", "1500 bytes", "00 fe 41 00 fe 41", "(first 1024 of 1500 bytes shown)")
	if strings.Contains(out, "00000400") {
		t.Errorf("show dumped past 1 KiB:\n%s", out)
	}
}

func TestDLQShowUndecodableEnvelope(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := deadletter.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Write(context.Background(), &deadletter.Record{
		Reason: deadletter.ReasonDecode, Error: &tandem.ErrorEnvelope{Code: "decode", Message: "truncated"},
		Envelope: []byte{0xa3, 0x00, 0x01, 0x01}})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runDLQ("show", "-file", path, "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantContains(t, "show", out, "decode", "truncated", "a3 00 01 01")

	// It cannot be replayed: skipped, not failed.
	code, out, _ = runDLQ("replay", "-dry-run", "-file", path)
	if code != 0 {
		t.Fatalf("replay -dry-run exit %d", code)
	}
	wantContains(t, "replay -dry-run", out, "0\tskipped: the envelope does not decode", "would replay 0 of 1 dead letters, 1 skipped")
}

func TestDLQErrors(t *testing.T) {
	path := dlqFile(t, sampleEvents()...)
	missing := filepath.Join(t.TempDir(), "nope.cbor")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"show", "-file", path, "3"}, 1, "no dead letter 3: " + path + " holds 3 (0 to 2)"},
		{[]string{"show", "-file", path, "-1"}, 2, "flag provided but not defined: -1"},
		{[]string{"show", "-file", path, "x"}, 2, `dead letter index "x" is not a number`},
		{[]string{"show", "-file", path}, 2, "show takes one dead letter index"},
		{[]string{"show", "-file", path, "1", "2"}, 2, "show takes one dead letter index"},
		{[]string{"list", "-file", missing}, 1, "no dead-letter file " + missing},
		{[]string{"show", "-file", missing, "0"}, 1, "no dead-letter file " + missing},
		{[]string{"replay", "-file", missing}, 1, "no dead-letter file " + missing},
		{[]string{"list", "-file", path, "extra"}, 2, "list takes no arguments"},
		{[]string{"list", "-bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"replay", "-file", path, "-timeout", "0s"}, 2, "-timeout must be positive"},
		{[]string{"frobnicate"}, 2, `unknown subcommand "frobnicate"`},
		{nil, 2, "missing subcommand"},
	} {
		code, out, errOut := runDLQ(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("dlq %q: exit %d, stderr %q; want exit %d and %q (stdout %q)", tc.args, code, errOut, tc.code, tc.msg, out)
		}
	}

	// A corrupt file names the offset.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[0] = 0xff
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runDLQ("list", "-file", path); code != 1 || !strings.Contains(errOut, "bad record at offset 0") {
		t.Errorf("list of a corrupt file: exit %d, stderr %q", code, errOut)
	}
}

func TestDLQReplayDryRun(t *testing.T) {
	path := dlqFile(t, sampleEvents()...)
	code, out, errOut := runDLQ("replay", "-dry-run", "-file", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantContains(t, "replay -dry-run", out, "0\twould replay demo.echo order-1", "1\twould replay demo.fail order-2",
		"2\twould replay demo.echo blob-3", "dry run: would replay 3 of 3 dead letters, 0 skipped")

	code, out, _ = runDLQ("replay", "-dry-run", "-type", "demo.fail", "-file", path)
	if code != 0 || strings.Contains(out, "order-1") || !strings.Contains(out, "would replay 1 of 3") {
		t.Errorf("replay -dry-run -type demo.fail: exit %d\n%s", code, out)
	}
}

// libForPurego points the purego link mode at the library ./build.sh builds; the cgo
// mode links it and ignores this.
func libForPurego(t *testing.T) {
	if os.Getenv("TANDEM_LIB") == "" {
		if p, err := filepath.Abs("../../../target/release/libtandem_native.so"); err == nil {
			t.Setenv("TANDEM_LIB", p)
		}
	}
}

func TestDLQReplay(t *testing.T) {
	libForPurego(t)
	path := dlqFile(t, sampleEvents()...)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runDLQ("replay", "-type", "demo.echo", "-file", path)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	wantContains(t, "replay", out, "0\tdemo.echo order-1\tok", "2\tdemo.echo blob-3\tok",
		"replayed 2 of 3 dead letters: 2 ok, 0 failed, 0 skipped")
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("replay changed the dead-letter file")
	}

	// An event that fails again is reported and fails the command.
	code, out, errOut = runDLQ("replay", "-type", "demo.fail", "-file", path)
	if code != 1 || !strings.Contains(errOut, "1 of 1 replayed events failed") {
		t.Fatalf("replay of a failing event: exit %d, stderr %q", code, errOut)
	}
	wantContains(t, "replay", out, "1\tdemo.fail order-2\tfailed:", "invalid", "0 ok, 1 failed")
}

// Event types, IDs, errors and data come from whoever produced the events: printed raw, an
// escape sequence would drive the operator's terminal, a CR or LF would forge lines.
func TestDLQEscapesHostileText(t *testing.T) {
	hostile := &tandem.Event{
		ID: "id\r\n1  2026-03-01T12:00:00Z  term  demo.fake  forged", Source: "/src\x00nul",
		Type: "demo.echo\x1b[2J\x1b[H", Subject: "subj\u202eevil", Data: []byte("data\x1b]0;pwned\x07"),
		Extensions: map[string]string{"key\x1b[31m": "value\u009b1m"},
	}
	b, err := envelope.MarshalEvent(hostile)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := deadletter.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range []*deadletter.Record{{
		Reason: "term\x1b[8m",
		Error: &tandem.ErrorEnvelope{Code: "invalid\x07", Message: "bad\x1b]52;c;ZXZpbA==\x07 input\nsecond line",
			Runtime: "rust\r", Handler: "h\x00"},
		EventID: hostile.ID, EventType: hostile.Type, Source: hostile.Source, Route: "route\u2028x",
		Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Envelope: b,
	}, {
		// Values that would read as something else if printed as they are.
		Reason: "-", EventID: `"quoted"`, EventType: " padded ", Time: time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC),
	}} {
		if err := s.Write(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	for _, args := range [][]string{{"list"}, {"show", "0"}, {"show", "1"}, {"replay", "-dry-run"}} {
		code, out, errOut := runDLQ(append(args, "-file", path)...)
		if code != 0 {
			t.Fatalf("dlq %q: exit %d: %s", args, code, errOut)
		}
		for _, r := range out {
			if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r < 0xa0) || r == '\u202e' || r == '\u2028' {
				t.Errorf("dlq %q printed %U:\n%s", args, r, out)
				break
			}
		}
		if testing.Verbose() {
			t.Logf("dlq %q:\n%s", args, out)
		}
		switch args[0] {
		case "list":
			wantContains(t, "list", out, `"demo.echo\x1b[2J\x1b[H"`, `"id\r\n1  2026-03-01T12:00:00Z  term  demo.fake  forged"`,
				`"term\x1b[8m"`, `"invalid\a": "bad\x1b]52;c;ZXZpbA==\a input\nsecond line"`, `"-"`, `"\"quoted\""`, `" padded "`)
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 {
				t.Errorf("want a header, 2 letters and a summary, got %d lines:\n%s", len(lines), out)
			}
		case "show":
			if args[1] == "0" {
				wantContains(t, "show 0", out, `"/src\x00nul"`, `"route\u2028x"`, `"rust\r"`, `"h\x00"`,
					`"subj\u202eevil"`, `ext "key\x1b[31m"`, `"value\u009b1m"`, "64 61 74 61 1b 5d")
			}
		case "replay":
			wantContains(t, "replay -dry-run", out, `0	would replay "demo.echo\x1b[2J\x1b[H" "id\r\n1`)
		}
	}
}
