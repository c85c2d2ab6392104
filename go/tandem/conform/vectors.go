package conform

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tandemrt/tandem/go/tandem"
)

// Version is the vector file format version this package reads.
const Version = 1

// Format is the value of the header line's "format" field.
const Format = "tandem.conformance"

// maxBytes bounds one bytes value after repeat: a typo in a repeat count must not take the
// machine's memory. It is the largest event a runtime accepts (Config.MaxEventSize's bound).
const maxBytes = 64 << 20

var (
	// ErrMalformed: a line of a vector file is not what the format allows: not JSON, an
	// unknown or misspelt field, a value of the wrong type, a case without a name, two
	// cases of one name. The *FileError says where.
	ErrMalformed = errors.New("conform: malformed vector file")
	// ErrVersion: the file does not start with a header line of a format and version this
	// package reads.
	ErrVersion = errors.New("conform: unsupported vector file version")
	// ErrUnknownOutcome: a case expects an outcome other than "ack", "retry" and "term".
	ErrUnknownOutcome = errors.New("conform: unknown outcome")
)

// FileError is a vector file that cannot be read: which file, which line (from 1) and which
// case (when the line named one), and why; errors.Is matches ErrMalformed, ErrVersion or
// ErrUnknownOutcome. A plain value, safe to share.
type FileError struct {
	// File is the file's name, as Load or Parse was given it.
	File string
	// Line is the line, from 1 (0: the file as a whole, empty).
	Line int
	// Case is the case the line names, if it names one.
	Case string
	// Err is the defect.
	Err error
}

// Error names the file, line and case.
func (e *FileError) Error() string {
	where := fmt.Sprintf("%s:%d", e.File, e.Line)
	if e.Case != "" {
		where += fmt.Sprintf(" (case %q)", e.Case)
	}
	return where + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *FileError) Unwrap() error { return e.Err }

// Vectors is a vector file, read: its cases in file order. Read-only once loaded, and so
// safe to share between goroutines and runs.
type Vectors struct {
	// File is the name the file was loaded under, for messages.
	File string
	// Description is the header's, if any.
	Description string
	// Cases are the file's cases, in order.
	Cases []Case
}

// Case is one conformance case: an event and the outcome its handler must give it. A plain
// value: read-only once loaded.
type Case struct {
	// Name is the case's name, unique in its file.
	Name string
	// Line is the case's line in its file, from 1.
	Line int
	// Event is the event sent. Its Type is empty when the case names none: the runner
	// then sends it under the route under test.
	Event tandem.Event
	// Expect is the outcome the handler must give.
	Expect Expect
}

// Expect is the outcome a case expects. A plain value.
type Expect struct {
	// Outcome is tandem.OutcomeAck, OutcomeRetry or OutcomeTerm.
	Outcome tandem.Outcome
	// Reply is the reply an Ack must carry; nil when the case does not check it (an empty,
	// non-nil Reply checks that the reply is empty).
	Reply []byte
	// Code is the error code a Retry or Term must carry; empty when the case does not
	// check it.
	Code string
}

// The JSON shapes of the format (docs/conformance.md). Unknown fields are errors, so a
// misspelt field fails loudly instead of checking nothing.
type (
	header struct {
		Format      string `json:"format"`
		Version     int    `json:"version"`
		Description string `json:"description"`
	}
	caseLine struct {
		Case   *string     `json:"case"`
		Event  *eventLine  `json:"event"`
		Expect *expectLine `json:"expect"`
	}
	eventLine struct {
		ID              string            `json:"id"`
		Source          string            `json:"source"`
		Type            string            `json:"type"`
		Subject         string            `json:"subject"`
		DataContentType string            `json:"datacontenttype"`
		DataSchema      string            `json:"dataschema"`
		CorrelationID   string            `json:"correlationid"`
		CausationID     string            `json:"causationid"`
		IdempotencyKey  string            `json:"idempotencykey"`
		PartitionKey    string            `json:"partitionkey"`
		Attempt         uint32            `json:"attempt"`
		Extensions      map[string]string `json:"extensions"`
		Data            *bytesValue       `json:"data"`
	}
	expectLine struct {
		Outcome *string     `json:"outcome"`
		Reply   *bytesValue `json:"reply"`
		Code    *string     `json:"code"`
	}
)

// bytesValue is a byte string as the format writes it: a JSON string (its UTF-8 text), or an
// object with exactly one of "text", "hex" and "base64", and an optional "repeat" count.
type bytesValue struct{ b []byte }

func (v *bytesValue) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		v.b = []byte(s)
		return nil
	}
	var o struct {
		Text   *string `json:"text"`
		Hex    *string `json:"hex"`
		Base64 *string `json:"base64"`
		Repeat *int    `json:"repeat"`
	}
	if err := exactFields(data, "text", "hex", "base64", "repeat"); err != nil {
		return err
	}
	if err := json.Unmarshal(data, &o); err != nil {
		return fmt.Errorf("a byte string is a JSON string or an object of text, hex or base64 (and repeat): %w", err)
	}
	n := 0
	var b []byte
	if o.Text != nil {
		n++
		b = []byte(*o.Text)
	}
	if o.Hex != nil {
		n++
		var err error
		if b, err = hex.DecodeString(*o.Hex); err != nil {
			return fmt.Errorf("hex: %w", err)
		}
	}
	if o.Base64 != nil {
		n++
		var err error
		if b, err = base64.StdEncoding.DecodeString(*o.Base64); err != nil {
			return fmt.Errorf("base64: %w", err)
		}
	}
	if n != 1 {
		return errors.New("a byte string object has exactly one of text, hex and base64")
	}
	if o.Repeat != nil {
		r := *o.Repeat
		if r < 1 || len(b)*r > maxBytes {
			return fmt.Errorf("repeat must be 1 or more and the result at most %d bytes, got %d × %d bytes", maxBytes, r, len(b))
		}
		b = bytes.Repeat(b, r)
	}
	v.b = b
	return nil
}

// Load reads the vector file at path (see Parse). Safe for concurrent use.
func Load(path string) (*Vectors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("conform: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a vector file from r; name is what errors call it. It reads the whole file
// and fails on its first bad line, with a *FileError. Safe for concurrent use.
func Parse(name string, r io.Reader) (*Vectors, error) {
	v := &Vectors{File: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 4*maxBytes) // a line holds a base64 or hex byte string up to maxBytes
	seen := map[string]int{}
	line, sawHeader := 0, false
	fail := func(c string, err error) error { return &FileError{File: name, Line: line, Case: c, Err: err} }
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if !utf8.ValidString(text) {
			return nil, fail("", fmt.Errorf("%w: the line is not UTF-8", ErrMalformed))
		}
		if !sawHeader {
			sawHeader = true
			var h header
			if err := strictDecode(text, &h, "format", "version", "description"); err != nil || h.Format != Format {
				return nil, fail("", fmt.Errorf("%w: the first line must be {\"format\": %q, \"version\": %d}", ErrVersion, Format, Version))
			}
			if h.Version != Version {
				return nil, fail("", fmt.Errorf("%w: version %d (this reader knows %d)", ErrVersion, h.Version, Version))
			}
			v.Description = h.Description
			continue
		}
		c, err := parseCase(text, line)
		if err != nil {
			return nil, fail(c.Name, err)
		}
		if first, dup := seen[c.Name]; dup {
			return nil, fail(c.Name, fmt.Errorf("%w: case %q is also on line %d", ErrMalformed, c.Name, first))
		}
		seen[c.Name] = line
		v.Cases = append(v.Cases, c)
	}
	if err := sc.Err(); err != nil {
		line++
		return nil, fail("", fmt.Errorf("%w: %w", ErrMalformed, err))
	}
	if !sawHeader {
		return nil, fail("", fmt.Errorf("%w: the file is empty: it must start with {\"format\": %q, \"version\": %d}", ErrVersion, Format, Version))
	}
	return v, nil
}

// parseCase reads one case line. The case it returns carries the case's name as soon as it
// is known, for the error.
func parseCase(text string, line int) (Case, error) {
	// The name first, spelt exactly, for the error, whatever else is wrong.
	c := Case{Line: line}
	var top map[string]json.RawMessage
	if json.Unmarshal([]byte(text), &top) == nil {
		_ = json.Unmarshal(top["case"], &c.Name)
	}
	var cl caseLine
	err := strictDecode(text, &cl, "case", "event", "expect")
	if err == nil {
		err = nestedFields(text)
	}
	switch {
	case err != nil:
		return c, fmt.Errorf("%w: %w", ErrMalformed, err)
	case cl.Case == nil || *cl.Case == "":
		return c, fmt.Errorf("%w: a case needs a name (\"case\")", ErrMalformed)
	case !utf8.ValidString(*cl.Case):
		return c, fmt.Errorf("%w: a case's name must be UTF-8", ErrMalformed)
	case cl.Event == nil:
		return c, fmt.Errorf("%w: a case needs an \"event\"", ErrMalformed)
	case cl.Expect == nil || cl.Expect.Outcome == nil:
		return c, fmt.Errorf("%w: a case needs \"expect\" with an \"outcome\"", ErrMalformed)
	}
	ev := cl.Event
	c.Event = tandem.Event{
		ID: ev.ID, Source: ev.Source, Type: ev.Type, SpecVersion: "1.0",
		Subject: ev.Subject, DataContentType: ev.DataContentType, DataSchema: ev.DataSchema,
		CorrelationID: ev.CorrelationID, CausationID: ev.CausationID,
		IdempotencyKey: ev.IdempotencyKey, PartitionKey: ev.PartitionKey,
		Attempt: ev.Attempt, Extensions: ev.Extensions,
	}
	if c.Event.ID == "" {
		c.Event.ID = c.Name
	}
	if c.Event.Source == "" {
		c.Event.Source = "/conformance"
	}
	if ev.Data != nil {
		c.Event.Data = ev.Data.b
	}
	ex := cl.Expect
	switch *ex.Outcome {
	case "ack":
		c.Expect.Outcome = tandem.OutcomeAck
		if ex.Code != nil {
			return c, fmt.Errorf("%w: an \"ack\" has no error code", ErrMalformed)
		}
		if ex.Reply != nil {
			c.Expect.Reply = ex.Reply.b
			if c.Expect.Reply == nil {
				c.Expect.Reply = []byte{}
			}
		}
	case "retry", "term":
		c.Expect.Outcome = tandem.OutcomeRetry
		if *ex.Outcome == "term" {
			c.Expect.Outcome = tandem.OutcomeTerm
		}
		if ex.Reply != nil {
			return c, fmt.Errorf("%w: a %q carries an error code, not a reply", ErrMalformed, *ex.Outcome)
		}
		if ex.Code != nil {
			c.Expect.Code = *ex.Code
		}
	default:
		return c, fmt.Errorf("%w %q: want \"ack\", \"retry\" or \"term\"", ErrUnknownOutcome, *ex.Outcome)
	}
	return c, nil
}

// strictDecode decodes one JSON object, refusing fields outside allowed and anything after
// it.
func strictDecode(text string, v any, allowed ...string) error {
	if err := exactFields([]byte(text), allowed...); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}

// eventFields are the fields of a case's event.
var eventFields = []string{"id", "source", "type", "subject", "datacontenttype", "dataschema",
	"correlationid", "causationid", "idempotencykey", "partitionkey", "attempt", "extensions", "data"}

// nestedFields checks the field names of a case's event and expect objects.
func nestedFields(text string) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &top); err != nil {
		return err
	}
	if ev, ok := top["event"]; ok {
		if err := exactFields(ev, eventFields...); err != nil {
			return fmt.Errorf("event: %w", err)
		}
	}
	if ex, ok := top["expect"]; ok {
		if err := exactFields(ex, "outcome", "reply", "code"); err != nil {
			return fmt.Errorf("expect: %w", err)
		}
	}
	return nil
}

// exactFields refuses an object field outside allowed, spelt exactly: encoding/json matches
// names without regard to case, the format does not (nor does Rust's reader), and a
// misspelt field must fail loudly rather than check nothing. A value that is not an object
// passes, for the decoder to refuse.
func exactFields(data []byte, allowed ...string) error {
	var o map[string]json.RawMessage
	if json.Unmarshal(data, &o) != nil {
		return nil
	}
	for k := range o {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("unknown field %q", k)
		}
	}
	return nil
}
