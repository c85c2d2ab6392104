package main

// tandem dlq: read and replay a dead-letter file written by deadletter.FileSink
// (docs/deadletters.md).
//
//	tandem dlq list   [-file PATH | -nats URL -stream S]
//	tandem dlq show   [-file PATH | -nats URL -stream S] N
//	tandem dlq replay [-file PATH | -nats URL -stream S] [-type T] [-dry-run] [-timeout D]

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	tjs "github.com/tandemrt/tandem/go/tandem/jetstream"
)

// defaultDLQFile is the dead-letter file when neither -file nor $TANDEM_DLQ names one.
const defaultDLQFile = "tandem-dlq.cbor"

// maxShownData is how much of an event's data `dlq show` prints.
const maxShownData = 1 << 10

// usageError is a command line the dlq commands cannot run: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const dlqUsage = `usage: tandem dlq list   [-file PATH | -nats URL -stream S]
       tandem dlq show   [-file PATH | -nats URL -stream S] N
       tandem dlq replay [-file PATH | -nats URL -stream S] [-type T] [-dry-run] [-timeout D]
The file defaults to $TANDEM_DLQ, else ` + defaultDLQFile + ` in the current directory;
-nats and -stream read the JetStream stream a jetstream.DeadLetterSink writes to.`

// dlqMain runs `tandem dlq ...` and returns the exit status: 0, 1 on failure, 2 on a
// usage error. Errors go to stderr.
func dlqMain(args []string, stdout, stderr io.Writer) int {
	err := dlq(args, stdout, stderr)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "tandem dlq:", err)
		fmt.Fprintln(stderr, dlqUsage)
		return 2
	default:
		fmt.Fprintln(stderr, "tandem dlq:", err)
		return 1
	}
}

func dlq(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("missing subcommand")
	}
	switch args[0] {
	case "list":
		return dlqList(args[1:], stdout, stderr)
	case "show":
		return dlqShow(args[1:], stdout, stderr)
	case "replay":
		return dlqReplay(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, dlqUsage)
		return nil
	}
	return usagef("unknown subcommand %q", args[0])
}

// dlqFlags is a flag set with -file; parse accepts flags before and after positional
// arguments (`show 3 -file x` as well as `show -file x 3`).
type dlqFlags struct {
	*flag.FlagSet
	file, nats, stream *string
}

func newDLQFlags(name string, stderr io.Writer) dlqFlags {
	fs := flag.NewFlagSet("dlq "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("TANDEM_DLQ")
	if def == "" {
		def = defaultDLQFile
	}
	return dlqFlags{FlagSet: fs, file: fs.String("file", def, "the dead-letter file ($TANDEM_DLQ, else "+defaultDLQFile+")"),
		nats:   fs.String("nats", "", "a NATS server URL: read the dead letters of -stream instead of a file"),
		stream: fs.String("stream", "", "the JetStream stream a jetstream.DeadLetterSink writes to (with -nats)")}
}

// where names the dead letters' store in messages.
func (f dlqFlags) where() string {
	if *f.nats != "" {
		return "stream " + *f.stream
	}
	return *f.file
}

// read reads the dead letters of the file, or of the stream with -nats.
func (f dlqFlags) read() (*deadletter.File, error) {
	if (*f.nats == "") != (*f.stream == "") {
		return nil, usagef("-nats and -stream go together")
	}
	if *f.nats == "" {
		return readDLQ(*f.file)
	}
	nc, err := nats.Connect(*f.nats, nats.Name("tandem dlq"))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", *f.nats, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	records, err := tjs.ReadDeadLetters(ctx, js, *f.stream)
	if err != nil {
		return nil, err
	}
	return &deadletter.File{Records: records}, nil
}

func (f dlqFlags) parse(args []string) ([]string, error) {
	var positional []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		if f.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, f.Arg(0))
		args = f.Args()[1:]
	}
}

func readDLQ(path string) (*deadletter.File, error) {
	df, err := deadletter.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no dead-letter file %s (set -file or $TANDEM_DLQ)", path)
	}
	return df, err
}

func dlqList(args []string, out, stderr io.Writer) error {
	fs := newDLQFlags("list", stderr)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("list takes no arguments, got %q", pos)
	}
	df, err := fs.read()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\ttime\treason\ttype\tid\tattempts\terror")
	for i, dl := range df.Records {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", i, dl.Time.Format(time.RFC3339), text(string(dl.Reason)),
			text(dl.EventType), text(dl.EventID), dl.Attempts, errorSummary(dl.Error))
	}
	tw.Flush()
	fmt.Fprintf(out, "%d dead letters, %d torn bytes skipped\n", len(df.Records), df.TornBytes)
	return nil
}

func dlqShow(args []string, out, stderr io.Writer) error {
	fs := newDLQFlags("show", stderr)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("show takes one dead letter index, got %d arguments", len(pos))
	}
	i, err := strconv.Atoi(pos[0])
	if err != nil {
		return usagef("dead letter index %q is not a number", pos[0])
	}
	df, err := fs.read()
	if err != nil {
		return err
	}
	switch n := len(df.Records); {
	case n == 0:
		return fmt.Errorf("no dead letter %d: %s holds none", i, fs.where())
	case i < 0 || i >= n:
		return fmt.Errorf("no dead letter %d: %s holds %d (0 to %d)", i, fs.where(), n, n-1)
	}
	showLetter(out, i, len(df.Records), &df.Records[i])
	return nil
}

func showLetter(w io.Writer, i, n int, dl *deadletter.Record) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// Names and values reach the terminal as written here: text() is applied to every
	// string that came from the file.
	field := func(indent int, name string, value any) {
		fmt.Fprintf(tw, "%s%s\t%v\n", strings.Repeat("  ", indent), name, value)
	}
	fmt.Fprintf(tw, "dead letter %d of %d\n", i, n)
	field(1, "reason", text(string(dl.Reason)))
	field(1, "time", dl.Time.Format(time.RFC3339Nano))
	field(1, "attempts", dl.Attempts)
	field(1, "route", text(dl.Route))
	field(1, "event id", text(dl.EventID))
	field(1, "event type", text(dl.EventType))
	field(1, "source", text(dl.Source))
	if e := dl.Error; e == nil {
		field(1, "error", "-")
	} else {
		field(1, "error", text(e.Code))
		field(2, "message", text(e.Message))
		field(2, "runtime", text(e.Runtime))
		field(2, "handler", text(e.Handler))
		if r := e.Retry; r != nil {
			nb := "-"
			if !r.NotBefore.IsZero() {
				nb = r.NotBefore.Format(time.RFC3339Nano)
			}
			field(2, "retry", fmt.Sprintf("attempts %d, backoff %v, not before %s", r.Attempts, r.Backoff, nb))
		}
	}
	field(1, "envelope", fmt.Sprintf("%d bytes", len(dl.Envelope)))
	ev, err := envelope.DecodeEvent(dl.Envelope)
	if err != nil {
		field(2, "decode", text(err.Error()))
		tw.Flush()
		dumpBytes(w, "    ", dl.Envelope)
		return
	}
	for _, f := range [...]struct{ name, value string }{
		{"id", ev.ID}, {"source", ev.Source}, {"type", ev.Type}, {"specversion", ev.SpecVersion},
		{"subject", ev.Subject}, {"datacontenttype", ev.DataContentType}, {"dataschema", ev.DataSchema},
		{"correlationid", ev.CorrelationID}, {"causationid", ev.CausationID},
		{"traceparent", ev.TraceParent}, {"tracestate", ev.TraceState},
		{"idempotencykey", ev.IdempotencyKey}, {"partitionkey", ev.PartitionKey},
	} {
		if f.value != "" {
			field(2, f.name, text(f.value))
		}
	}
	if !ev.Time.IsZero() {
		field(2, "time", ev.Time.Format(time.RFC3339Nano))
	}
	if !ev.Deadline.IsZero() {
		field(2, "deadline", ev.Deadline.Format(time.RFC3339Nano))
	}
	if ev.Attempt != 0 {
		field(2, "attempt", ev.Attempt)
	}
	keys := make([]string, 0, len(ev.Extensions))
	for k := range ev.Extensions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		field(2, "ext "+text(k), text(ev.Extensions[k]))
	}
	field(2, "data", fmt.Sprintf("%d bytes", len(ev.Data)))
	tw.Flush()
	dumpBytes(w, "      ", ev.Data)
}

// dumpBytes prints b as text when it is printable UTF-8, else as a hex dump; at most
// maxShownData bytes, with a note when there are more.
func dumpBytes(w io.Writer, indent string, b []byte) {
	if len(b) == 0 {
		return
	}
	shown := b[:min(len(b), maxShownData)]
	var lines []string
	if text, ok := printablePrefix(shown); ok {
		shown = text
		lines = strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	} else {
		lines = strings.Split(strings.TrimSuffix(hex.Dump(shown), "\n"), "\n")
	}
	for _, line := range lines {
		fmt.Fprintf(w, "%s%s\n", indent, line)
	}
	if len(shown) < len(b) {
		fmt.Fprintf(w, "%s(first %d of %d bytes shown)\n", indent, len(shown), len(b))
	}
}

// printablePrefix reports whether b is printable text, allowing a UTF-8 sequence cut
// at its end (b may be a prefix of the data), and returns it without the cut sequence.
func printablePrefix(b []byte) ([]byte, bool) {
	for k := 0; k < utf8.UTFMax && !utf8.Valid(b); k++ {
		b = b[:len(b)-1]
	}
	return b, len(b) > 0 && printable(b)
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

func dlqReplay(args []string, out, stderr io.Writer) error {
	fs := newDLQFlags("replay", stderr)
	typ := fs.String("type", "", "replay only dead letters of this event type")
	dryRun := fs.Bool("dry-run", false, "list what would be replayed, start nothing")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each event's acknowledgement")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("replay takes no arguments, got %q", pos)
	}
	if *timeout <= 0 {
		return usagef("-timeout must be positive")
	}
	df, err := fs.read()
	if err != nil {
		return err
	}

	// Select, and decode up front: an envelope that does not decode cannot be replayed.
	type pick struct {
		index int
		ev    *tandem.Event
		err   error
	}
	var picks []pick
	for i := range df.Records {
		dl := &df.Records[i]
		if *typ != "" && dl.EventType != *typ {
			continue
		}
		ev, err := envelope.DecodeEvent(dl.Envelope)
		picks = append(picks, pick{index: i, ev: ev, err: err})
	}

	var rt *tandem.Runtime
	if !*dryRun && len(picks) != 0 {
		if rt, err = tandem.New(tandem.Config{}); err != nil {
			return err
		}
		if err := rt.Start(); err != nil {
			_ = rt.Shutdown(context.Background())
			return err
		}
	}
	var ok, failed, skipped int
	for _, p := range picks {
		if p.err != nil {
			skipped++
			fmt.Fprintf(out, "%d\tskipped: the envelope does not decode: %s\n", p.index, text(p.err.Error()))
			continue
		}
		if *dryRun {
			fmt.Fprintf(out, "%d\twould replay %s %s\n", p.index, text(p.ev.Type), text(p.ev.ID))
			continue
		}
		if err := replayOne(rt, p.ev, *timeout); err != nil {
			failed++
			fmt.Fprintf(out, "%d\t%s %s\tfailed: %s\n", p.index, text(p.ev.Type), text(p.ev.ID), text(err.Error()))
			continue
		}
		ok++
		fmt.Fprintf(out, "%d\t%s %s\tok\n", p.index, text(p.ev.Type), text(p.ev.ID))
	}
	if rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rt.Shutdown(ctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	if *dryRun {
		fmt.Fprintf(out, "dry run: would replay %d of %d dead letters, %d skipped\n", len(picks)-skipped, len(df.Records), skipped)
		return nil
	}
	fmt.Fprintf(out, "replayed %d of %d dead letters: %d ok, %d failed, %d skipped (%s is unchanged)\n",
		ok+failed, len(df.Records), ok, failed, skipped, fs.where())
	if failed != 0 {
		return fmt.Errorf("%d of %d replayed events failed", failed, ok+failed)
	}
	return nil
}

// replayOne submits ev and waits for its outcome.
func replayOne(rt *tandem.Runtime, ev *tandem.Event, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ack, err := rt.Submit(ctx, ev)
	if err != nil {
		return err
	}
	return ack.Wait(ctx)
}

func errorSummary(e *tandem.ErrorEnvelope) string {
	switch {
	case e == nil:
		return "-"
	case e.Message == "":
		return text(e.Code)
	}
	return text(e.Code) + ": " + text(e.Message)
}

// text returns s, a string read from a dead-letter file, as it may be printed to a
// terminal: "-" when empty; as it is when it is valid UTF-8 of printable characters
// (strconv.IsPrint: no control characters, no escape sequences, no line or format
// characters such as bidirectional overrides) that cannot be taken for a placeholder, a
// quoted string or a neighbouring column; else quoted with Go's escapes (strconv.Quote),
// which turn every such byte into visible text.
func text(s string) string {
	switch {
	case s == "":
		return "-"
	case s == "-", s[0] == '"', s[0] == ' ', s[len(s)-1] == ' ', !utf8.ValidString(s),
		strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) >= 0:
		return strconv.Quote(s)
	}
	return s
}
