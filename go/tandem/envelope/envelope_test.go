package envelope

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/tandemrt/tandem/go/internal/unchecked"
)

// goldenPath is where both test suites read the shared vectors from.
var goldenPath = filepath.Join("..", "..", "..", "ffi", "testdata", "envelopes.json")

type goldenRetry struct {
	Attempts  *uint32 `json:"attempts"`
	BackoffNS *int64  `json:"backoff_ns"`
	NotBefore *int64  `json:"not_before"`
}

type goldenExpect struct {
	// Event fields.
	V               *uint64           `json:"v"`
	ID              string            `json:"id"`
	Source          string            `json:"source"`
	Type            string            `json:"type"`
	SpecVersion     string            `json:"specversion"`
	Time            *int64            `json:"time"`
	Subject         string            `json:"subject"`
	DataContentType string            `json:"datacontenttype"`
	DataSchema      string            `json:"dataschema"`
	CorrelationID   string            `json:"correlationid"`
	CausationID     string            `json:"causationid"`
	TraceParent     string            `json:"traceparent"`
	TraceState      string            `json:"tracestate"`
	Attempt         uint32            `json:"attempt"`
	Deadline        *int64            `json:"deadline"`
	IdempotencyKey  string            `json:"idempotencykey"`
	PartitionKey    string            `json:"partitionkey"`
	Extensions      map[string]string `json:"extensions"`
	DataHex         string            `json:"data_hex"`
	// Error envelope fields.
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Retry   *goldenRetry `json:"retry"`
	Runtime string       `json:"runtime"`
	Handler string       `json:"handler"`
}

type goldenVector struct {
	Name         string        `json:"name"`
	Kind         string        `json:"kind"`
	Hex          string        `json:"hex"`
	Valid        bool          `json:"valid"`
	Canonical    bool          `json:"canonical"`
	CanonicalHex string        `json:"canonical_hex"`
	Expect       *goldenExpect `json:"expect"`
	Error        string        `json:"error"`
}

func (v *goldenVector) bytes(t testing.TB) []byte {
	b, err := hex.DecodeString(v.Hex)
	if err != nil {
		t.Fatalf("%s: bad hex: %v", v.Name, err)
	}
	return b
}

// wantCanonical is what re-encoding a valid vector must produce.
func (v *goldenVector) wantCanonical(t testing.TB) []byte {
	if v.Canonical {
		return v.bytes(t)
	}
	b, err := hex.DecodeString(v.CanonicalHex)
	if err != nil || v.CanonicalHex == "" {
		t.Fatalf("%s: non-canonical vector needs canonical_hex (%v)", v.Name, err)
	}
	return b
}

func loadGolden(t testing.TB) []goldenVector {
	t.Helper()
	raw, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("reading golden vectors: %v", err)
	}
	var file struct {
		Version int            `json:"version"`
		Vectors []goldenVector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatalf("parsing golden vectors: %v", err)
	}
	if file.Version != 1 || len(file.Vectors) < 30 {
		t.Fatalf("golden file version %d with %d vectors", file.Version, len(file.Vectors))
	}
	return file.Vectors
}

func unixOrZero(p *int64) time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.Unix(0, *p).UTC()
}

func (x *goldenExpect) event(t testing.TB) *Event {
	data, err := hex.DecodeString(x.DataHex)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		data = nil
	}
	return &Event{
		ID: x.ID, Source: x.Source, Type: x.Type, SpecVersion: x.SpecVersion,
		Time: unixOrZero(x.Time), Subject: x.Subject, DataContentType: x.DataContentType,
		DataSchema: x.DataSchema, CorrelationID: x.CorrelationID, CausationID: x.CausationID,
		TraceParent: x.TraceParent, TraceState: x.TraceState, Attempt: x.Attempt,
		Deadline: unixOrZero(x.Deadline), IdempotencyKey: x.IdempotencyKey,
		PartitionKey: x.PartitionKey, Extensions: x.Extensions, Data: data,
	}
}

func (x *goldenExpect) errorEnvelope() *ErrorEnvelope {
	e := &ErrorEnvelope{Code: x.Code, Message: x.Message, Runtime: x.Runtime, Handler: x.Handler}
	if r := x.Retry; r != nil {
		e.Retry = &RetryPolicy{NotBefore: unixOrZero(r.NotBefore)}
		if r.Attempts != nil {
			e.Retry.Attempts = *r.Attempts
		}
		if r.BackoffNS != nil {
			e.Retry.Backoff = time.Duration(*r.BackoffNS)
		}
	}
	return e
}

// eventsEqual compares events field by field, times by instant.
func eventsEqual(a, b *Event) bool {
	return a.ID == b.ID && a.Source == b.Source && a.Type == b.Type && a.SpecVersion == b.SpecVersion &&
		a.Time.Equal(b.Time) && a.Subject == b.Subject && a.DataContentType == b.DataContentType &&
		a.DataSchema == b.DataSchema && a.CorrelationID == b.CorrelationID &&
		a.CausationID == b.CausationID && a.TraceParent == b.TraceParent &&
		a.TraceState == b.TraceState && a.Attempt == b.Attempt && a.Deadline.Equal(b.Deadline) &&
		a.IdempotencyKey == b.IdempotencyKey && a.PartitionKey == b.PartitionKey &&
		maps.Equal(a.Extensions, b.Extensions) && bytes.Equal(a.Data, b.Data)
}

func errorEnvelopesEqual(a, b *ErrorEnvelope) bool {
	if (a.Retry == nil) != (b.Retry == nil) {
		return false
	}
	if a.Retry != nil && (a.Retry.Attempts != b.Retry.Attempts || a.Retry.Backoff != b.Retry.Backoff ||
		!a.Retry.NotBefore.Equal(b.Retry.NotBefore)) {
		return false
	}
	return a.Code == b.Code && a.Message == b.Message && a.Runtime == b.Runtime && a.Handler == b.Handler
}

func TestGoldenEnvelopes(t *testing.T) {
	for _, v := range loadGolden(t) {
		t.Run(v.Name, func(t *testing.T) {
			in := v.bytes(t)
			switch {
			case !v.Valid:
				var err error
				if v.Kind == "event" {
					_, err = DecodeEvent(in)
				} else {
					_, err = DecodeErrorEnvelope(in)
				}
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("want DecodeError %q, got %v", v.Error, err)
				}
				if string(de.Kind) != v.Error {
					t.Fatalf("want kind %q, got %q (%v)", v.Error, de.Kind, err)
				}
			case v.Kind == "event":
				ev, err := DecodeEvent(in)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if want := v.Expect.event(t); !eventsEqual(ev, want) {
					t.Fatalf("decoded\n %+v\nwant\n %+v", ev, want)
				}
				want := v.wantCanonical(t)
				appended, err := AppendEvent(nil, ev)
				if err != nil || !bytes.Equal(appended, want) {
					t.Fatalf("AppendEvent = %x, %v; want %x", appended, err, want)
				}
				marshalled, err := MarshalEvent(ev)
				if err != nil || !bytes.Equal(marshalled, want) {
					t.Fatalf("MarshalEvent = %x, %v; want %x", marshalled, err, want)
				}
				if n := EncodedEventSize(ev); n != len(want) {
					t.Fatalf("EncodedEventSize = %d, want %d", n, len(want))
				}
			default:
				e, err := DecodeErrorEnvelope(in)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if want := v.Expect.errorEnvelope(); !errorEnvelopesEqual(e, want) {
					t.Fatalf("decoded %+v (retry %+v), want %+v", e, e.Retry, want)
				}
				want := v.wantCanonical(t)
				appended, err := AppendErrorEnvelope(nil, e)
				if err != nil || !bytes.Equal(appended, want) {
					t.Fatalf("AppendErrorEnvelope = %x, %v; want %x", appended, err, want)
				}
				marshalled, err := MarshalErrorEnvelope(e)
				if err != nil || !bytes.Equal(marshalled, want) {
					t.Fatalf("MarshalErrorEnvelope = %x, %v; want %x", marshalled, err, want)
				}
			}
		})
	}
}

func TestEventEncodeRejectsInvalid(t *testing.T) {
	valid := Event{ID: "1", Source: "s", Type: "t", Extensions: map[string]string{"k": "v"}}
	const bad = "a\xffb" // not UTF-8: the decoders of both runtimes refuse it as invalid_utf8
	for _, tc := range []struct {
		name   string
		mutate func(*Event)
		field  string // what the error must name
	}{
		{"no id", func(e *Event) { e.ID = "" }, "ID is empty"},
		{"no source", func(e *Event) { e.Source = "" }, "Source is empty"},
		{"no type", func(e *Event) { e.Type = "" }, "Type is empty"},
		{"time too late", func(e *Event) { e.Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }, "Time"},
		{"deadline too old", func(e *Event) { e.Deadline = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }, "Deadline"},
		{"id not UTF-8", func(e *Event) { e.ID = bad }, "ID"},
		{"source not UTF-8", func(e *Event) { e.Source = bad }, "Source"},
		{"type not UTF-8", func(e *Event) { e.Type = bad }, "Type"},
		{"specversion not UTF-8", func(e *Event) { e.SpecVersion = bad }, "SpecVersion"},
		{"subject not UTF-8", func(e *Event) { e.Subject = bad }, "Subject"},
		{"datacontenttype not UTF-8", func(e *Event) { e.DataContentType = bad }, "DataContentType"},
		{"dataschema not UTF-8", func(e *Event) { e.DataSchema = bad }, "DataSchema"},
		{"correlationid not UTF-8", func(e *Event) { e.CorrelationID = bad }, "CorrelationID"},
		{"causationid not UTF-8", func(e *Event) { e.CausationID = bad }, "CausationID"},
		{"traceparent not UTF-8", func(e *Event) { e.TraceParent = bad }, "TraceParent"},
		{"tracestate not UTF-8", func(e *Event) { e.TraceState = bad }, "TraceState"},
		{"idempotencykey not UTF-8", func(e *Event) { e.IdempotencyKey = bad }, "IdempotencyKey"},
		{"partitionkey not UTF-8", func(e *Event) { e.PartitionKey = bad }, "PartitionKey"},
		{"extension key not UTF-8", func(e *Event) { e.Extensions = map[string]string{"k": "v", bad: "v"} }, "Extensions key"},
		{"extension value not UTF-8", func(e *Event) { e.Extensions = map[string]string{"k": bad} }, `Extensions["k"]`},
		{"surrogate half", func(e *Event) { e.Subject = "\xed\xa0\x80" }, "Subject"},
		{"overlong encoding", func(e *Event) { e.Subject = "\xc0\xaf" }, "Subject"},
	} {
		ev := valid
		tc.mutate(&ev)
		if err := Validate(&ev); !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate = %v, want ErrInvalidEvent naming %s", tc.name, err, tc.field)
		}
		dst := []byte("keep")
		out, err := AppendEvent(dst, &ev)
		if !errors.Is(err, ErrInvalidEvent) || string(out) != "keep" {
			t.Errorf("%s: AppendEvent = %q, %v", tc.name, out, err)
		}
		if _, err := MarshalEvent(&ev); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: MarshalEvent error %v", tc.name, err)
		}
	}
	if _, err := AppendEvent(nil, nil); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("nil event: %v", err)
	}
	// Valid UTF-8 beyond ASCII passes.
	ev := valid
	ev.Subject, ev.Extensions = "événement-☃", map[string]string{"clé": "😀"}
	if err := Validate(&ev); err != nil {
		t.Errorf("valid UTF-8: %v", err)
	}
}

func TestErrorEnvelopeEncodeRejectsInvalid(t *testing.T) {
	for name, e := range map[string]*ErrorEnvelope{
		"nil":               nil,
		"no code":           {Message: "m"},
		"negative backoff":  {Code: "c", Retry: &RetryPolicy{Backoff: -1}},
		"code not UTF-8":    {Code: "c\xff"},
		"message not UTF-8": {Code: "c", Message: "boom \xff"},
		"runtime not UTF-8": {Code: "c", Runtime: "\xc0\xaf"},
		"handler not UTF-8": {Code: "c", Handler: "h\xed\xa0\x80"},
	} {
		if _, err := MarshalErrorEnvelope(e); !errors.Is(err, ErrInvalidErrorEnvelope) {
			t.Errorf("%s: MarshalErrorEnvelope error %v", name, err)
		}
		if _, err := AppendErrorEnvelope(nil, e); !errors.Is(err, ErrInvalidErrorEnvelope) {
			t.Errorf("%s: AppendErrorEnvelope error %v", name, err)
		}
	}
}

func TestEventSpecVersionDefaults(t *testing.T) {
	b, err := AppendEvent(nil, &Event{ID: "1", Source: "s", Type: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := DecodeEvent(b)
	if err != nil || ev.SpecVersion != "1.0" {
		t.Fatalf("SpecVersion %q, %v", ev.SpecVersion, err)
	}
}

const randomAlphabet = "abcXYZ-_/.é☃🦀0123456789"

func randomText(r *rand.Rand, optional bool) string {
	n := r.IntN(40)
	if !optional && n == 0 {
		n = 1
	}
	if r.IntN(20) == 0 {
		n = 24 + r.IntN(300) // lengths needing one and two bytes
	}
	runes := []rune(randomAlphabet)
	var sb strings.Builder
	for range n {
		sb.WriteRune(runes[r.IntN(len(runes))])
	}
	return sb.String()
}

func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(4) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, int64(r.Uint64())).UTC()
	default:
		return time.Unix(0, r.Int64N(1<<62)-(1<<61)).UTC()
	}
}

// randomEvent builds a valid Event with each optional field present about half the time.
func randomEvent(r *rand.Rand) *Event {
	opt := func() string {
		if r.IntN(2) == 0 {
			return ""
		}
		return randomText(r, true)
	}
	ev := &Event{
		ID: randomText(r, false), Source: randomText(r, false), Type: randomText(r, false),
		SpecVersion: opt(), Time: randomTime(r), Subject: opt(), DataContentType: opt(),
		DataSchema: opt(), CorrelationID: opt(), CausationID: opt(), TraceParent: opt(),
		TraceState: opt(), Deadline: randomTime(r), IdempotencyKey: opt(), PartitionKey: opt(),
	}
	switch r.IntN(3) {
	case 1:
		ev.Attempt = uint32(r.IntN(30))
	case 2:
		ev.Attempt = r.Uint32()
	}
	if n := r.IntN(25) - 5; n > 0 {
		ev.Extensions = make(map[string]string, n)
		for range n {
			ev.Extensions[randomText(r, true)] = randomText(r, true)
		}
	}
	if r.IntN(2) == 0 {
		ev.Data = make([]byte, r.IntN(600))
		for i := range ev.Data {
			ev.Data[i] = byte(r.Uint32())
		}
		if len(ev.Data) == 0 {
			ev.Data = nil
		}
	}
	return ev
}

// TestAppendEventMatchesMarshalEvent: the hand-written encoder and fxamacker's (MarshalEvent)
// give the same bytes, EncodedEventSize predicts them, and they round-trip.
func TestAppendEventMatchesMarshalEvent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		ev := randomEvent(r)
		appended, err := AppendEvent(nil, ev)
		if err != nil {
			t.Fatalf("case %d: AppendEvent: %v", i, err)
		}
		marshalled, err := MarshalEvent(ev)
		if err != nil {
			t.Fatalf("case %d: MarshalEvent: %v", i, err)
		}
		if !bytes.Equal(appended, marshalled) {
			t.Fatalf("case %d: AppendEvent\n %x\nMarshalEvent\n %x\nevent %+v", i, appended, marshalled, ev)
		}
		if n := EncodedEventSize(ev); n != len(appended) {
			t.Fatalf("case %d: EncodedEventSize %d, encoded %d", i, n, len(appended))
		}
		back, err := DecodeEvent(appended)
		if err != nil {
			t.Fatalf("case %d: decode: %v", i, err)
		}
		if ev.SpecVersion == "" {
			ev.SpecVersion = "1.0"
		}
		if len(ev.Extensions) == 0 {
			ev.Extensions = nil
		}
		if !eventsEqual(back, ev) {
			t.Fatalf("case %d: round trip\n %+v\nwant\n %+v", i, back, ev)
		}
	}
}

func TestAppendErrorEnvelopeMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		e := &ErrorEnvelope{Code: randomText(r, false)}
		if r.IntN(2) == 0 {
			e.Message, e.Runtime, e.Handler = randomText(r, true), randomText(r, true), randomText(r, true)
		}
		if r.IntN(2) == 0 {
			e.Retry = &RetryPolicy{NotBefore: randomTime(r)}
			if r.IntN(2) == 0 {
				e.Retry.Attempts = r.Uint32()
			}
			if r.IntN(2) == 0 {
				e.Retry.Backoff = time.Duration(r.Int64())
			}
		}
		appended, err := AppendErrorEnvelope(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		marshalled, err := MarshalErrorEnvelope(e)
		if err != nil || !bytes.Equal(appended, marshalled) {
			t.Fatalf("case %d: %x != %x (%v)", i, appended, marshalled, err)
		}
		back, err := DecodeErrorEnvelope(appended)
		if err != nil || !errorEnvelopesEqual(back, e) {
			t.Fatalf("case %d: round trip %+v, %v; want %+v", i, back, err, e)
		}
	}
}

func fullEvent(extensions int) *Event {
	ev := &Event{
		ID: "01J9Z3W8Q6T5K2M7N4P1R0S8V", Source: "/orders/api", Type: "order.created",
		Time: time.Unix(1700000000, 123456789), Subject: "order/42",
		DataContentType: "application/json", CorrelationID: "corr-7",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Attempt:     2, Deadline: time.Unix(1700000005, 0), PartitionKey: "customer-9",
		Data: bytes.Repeat([]byte("x"), 256),
	}
	if extensions > 0 {
		ev.Extensions = make(map[string]string, extensions)
		for i := range extensions {
			ev.Extensions[strings.Repeat("k", i%5+1)+string(rune('a'+i))] = "v"
		}
	}
	return ev
}

func TestAppendEventDoesNotAllocate(t *testing.T) {
	for _, n := range []int{0, 3, 16, 40} {
		ev := fullEvent(n)
		buf := make([]byte, 0, EncodedEventSize(ev))
		allocs := testing.AllocsPerRun(200, func() {
			var err error
			if buf, err = AppendEvent(buf[:0], ev); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%d extensions: AppendEvent allocates %v times per call", n, allocs)
		}
		if EncodedEventSize(ev) != len(buf) {
			t.Errorf("%d extensions: EncodedEventSize %d, encoded %d", n, EncodedEventSize(ev), len(buf))
		}
	}
}

// BenchmarkAppendEvent encodes one event into a caller's buffer, as the submit path does
// into a request slot: AppendEvent (hand-written), and fxamacker into a caller's buffer, for
// comparison. The numbers are quoted in encode.go.
func BenchmarkAppendEvent(b *testing.B) {
	for _, n := range []int{0, 4} {
		ev := fullEvent(n)
		name := map[int]string{0: "no-extensions", 4: "4-extensions"}[n]
		b.Run(name+"/AppendEvent", func(b *testing.B) {
			buf := make([]byte, 0, EncodedEventSize(ev))
			b.ReportAllocs()
			b.SetBytes(int64(cap(buf)))
			for b.Loop() {
				buf, _ = AppendEvent(buf[:0], ev)
			}
		})
		b.Run(name+"/indexed", func(b *testing.B) {
			// The engine's encoder, which also indexes the fields (unchecked.Fields).
			appendFields := unchecked.AppendEvent.(func([]byte, *Event, *unchecked.Fields) []byte)
			buf := make([]byte, 0, EncodedEventSize(ev))
			var f unchecked.Fields
			b.ReportAllocs()
			b.SetBytes(int64(cap(buf)))
			for b.Loop() {
				buf = appendFields(buf[:0], ev, &f)
			}
		})
		b.Run(name+"/fxamacker-no-pool", func(b *testing.B) {
			enc, err := cbor.CoreDetEncOptions().UserBufferEncMode()
			if err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			buf.Grow(EncodedEventSize(ev))
			b.ReportAllocs()
			b.SetBytes(int64(EncodedEventSize(ev)))
			for b.Loop() {
				buf.Reset()
				var s eventScratch
				s.fill(ev)
				if err := enc.MarshalToBuffer(&s.w, &buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidate checks an event as every submit does: one with the three fields a
// submit needs and no extensions (most events), and one with every field and four
// extensions.
func BenchmarkValidate(b *testing.B) {
	for _, c := range []struct {
		name string
		ev   *Event
	}{
		{"three-fields", &Event{ID: "bench-1", Source: "/bench", Type: "demo.noop.inline", Data: make([]byte, 64)}},
		{"full", fullEvent(4)},
	} {
		ev := c.ev
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := Validate(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshalEvent(b *testing.B) {
	ev := fullEvent(4)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = MarshalEvent(ev)
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	in, _ := AppendEvent(nil, fullEvent(4))
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		_, _ = DecodeEvent(in)
	}
}

// TestAppendEventConcurrent: encoders running at once share nothing (run it with -race).
func TestAppendEventConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			buf := make([]byte, 0, 4096)
			for i := range 300 {
				ev := randomEvent(r)
				want, err := MarshalEvent(ev)
				if err != nil {
					t.Error(err)
					return
				}
				if buf, err = AppendEvent(buf[:0], ev); err != nil || !bytes.Equal(buf, want) {
					t.Errorf("goroutine %d case %d: AppendEvent = %x, %v; want %x", g, i, buf, err, want)
					return
				}
				e := &ErrorEnvelope{Code: randomText(r, false), Retry: &RetryPolicy{NotBefore: randomTime(r)}}
				wantErr, _ := MarshalErrorEnvelope(e)
				if got, err := AppendErrorEnvelope(buf[:0], e); err != nil || !bytes.Equal(got, wantErr) {
					t.Errorf("goroutine %d case %d: AppendErrorEnvelope = %x, %v; want %x", g, i, got, err, wantErr)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// checkFields fails t unless f locates every field of ev in enc, its envelope, as Rust reads
// them (tandem_fields): the keys present, each text field's UTF-8 bytes, the data, the
// extensions map item, and the time, attempt and deadline.
func checkFields(t *testing.T, ev *Event, enc []byte, f *unchecked.Fields) {
	t.Helper()
	var items map[uint64]cbor.RawMessage
	if err := cbor.Unmarshal(enc, &items); err != nil {
		t.Fatalf("the envelope does not decode as a map: %v", err)
	}
	var want uint32
	for k := range items {
		want |= 1 << k
	}
	if f.Present != want {
		t.Fatalf("present %019b, the envelope holds keys %019b", f.Present, want)
	}
	span := func(key int) []byte {
		at := f.At[key]
		if int(at.Off)+int(at.Len) > len(enc) {
			t.Fatalf("key %d: span %+v past the envelope's %d bytes", key, at, len(enc))
		}
		return enc[at.Off : at.Off+at.Len]
	}
	for key, s := range map[int]string{
		keyID: ev.ID, keySource: ev.Source, keyType: ev.Type, keySpecVersion: specVersion(ev),
		keySubject: ev.Subject, keyDataContentType: ev.DataContentType, keyDataSchema: ev.DataSchema,
		keyCorrelationID: ev.CorrelationID, keyCausationID: ev.CausationID, keyTraceParent: ev.TraceParent,
		keyTraceState: ev.TraceState, keyIdempotencyKey: ev.IdempotencyKey, keyPartitionKey: ev.PartitionKey,
	} {
		if f.Present&(1<<key) != 0 && string(span(key)) != s {
			t.Fatalf("key %d: span holds %q, the event %q", key, span(key), s)
		}
	}
	if f.Present&(1<<keyData) != 0 && !bytes.Equal(span(keyData), ev.Data) {
		t.Fatalf("data: span holds %x, the event %x", span(keyData), ev.Data)
	}
	if f.Present&(1<<keyExtensions) != 0 && !bytes.Equal(span(keyExtensions), items[keyExtensions]) {
		t.Fatalf("extensions: span holds %x, the map item is %x", span(keyExtensions), []byte(items[keyExtensions]))
	}
	if f.Present&(1<<keyTime) != 0 && f.Time != ev.Time.UnixNano() {
		t.Fatalf("time %d, the event's %d", f.Time, ev.Time.UnixNano())
	}
	if f.Present&(1<<keyAttempt) != 0 && f.Attempt != ev.Attempt {
		t.Fatalf("attempt %d, the event's %d", f.Attempt, ev.Attempt)
	}
	if f.Present&(1<<keyDeadline) != 0 && f.Deadline != ev.Deadline.UnixNano() {
		t.Fatalf("deadline %d, the event's %d", f.Deadline, ev.Deadline.UnixNano())
	}
}

// TestAppendEventFieldsLocatesEveryField: the encoder the engine writes request slots with
// gives AppendEvent's bytes and an index of them that holds for every field, appended after
// bytes already in dst or not, whatever index the slot held before.
func TestAppendEventFieldsLocatesEveryField(t *testing.T) {
	appendFields := unchecked.AppendEvent.(func([]byte, *Event, *unchecked.Fields) []byte)
	r := rand.New(rand.NewPCG(5, 6))
	events := []*Event{fullEvent(0), fullEvent(3), {ID: "1", Source: "/s", Type: "t", Data: bytes.Repeat([]byte{7}, 70000)}}
	for range 3000 {
		events = append(events, randomEvent(r))
	}
	for i, ev := range events {
		want, err := AppendEvent(nil, ev)
		if err != nil {
			t.Fatalf("case %d: AppendEvent: %v", i, err)
		}
		prefix := bytes.Repeat([]byte{0xff}, r.IntN(3)*40)
		stale := unchecked.Fields{Present: ^uint32(0), Attempt: 9, Time: 9, Deadline: 9}
		for k := range stale.At {
			stale.At[k] = unchecked.Span{Off: 1 << 30, Len: 1 << 30}
		}
		f := stale
		got := appendFields(bytes.Clone(prefix), ev, &f)
		if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("case %d: appended\n %x\nwant %x after %d bytes", i, got, want, len(prefix))
		}
		checkFields(t, ev, want, &f)
	}
}
