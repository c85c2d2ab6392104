package deadletter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/internal/cborx"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// sampleLetters returns dead letters covering every field, with and without an error
// envelope, retry policy and envelope bytes.
func sampleLetters(t testing.TB) []Record {
	t.Helper()
	env := func(id, typ string, data []byte) []byte {
		b, err := envelope.MarshalEvent(&envelope.Event{ID: id, Source: "/orders", Type: typ, Data: data, Attempt: 2,
			Extensions: map[string]string{"tenant": "a"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	at := time.Unix(1_700_000_000, 123_456_789).UTC()
	return []Record{
		{
			Reason:   ReasonTerm,
			Error:    &envelope.ErrorEnvelope{Code: "handler", Message: "bad order", Runtime: "rust", Handler: "demo.fail"},
			Attempts: 1, EventID: "e1", EventType: "demo.fail", Source: "/orders", Route: "demo.fail",
			Time: at, Envelope: env("e1", "demo.fail", []byte("term")),
		},
		{
			Reason: ReasonMaxAttempts,
			Error: &envelope.ErrorEnvelope{Code: "timeout", Message: "too slow", Runtime: "go", Handler: "h",
				Retry: &envelope.RetryPolicy{Attempts: 3, Backoff: 250 * time.Millisecond, NotBefore: at.Add(time.Second)}},
			Attempts: 5, EventID: "e2", EventType: "demo.echo", Source: "/orders", Route: "demo.*",
			Time: at.Add(time.Nanosecond), Envelope: env("e2", "demo.echo", bytes.Repeat([]byte{0, 1, 2, 0xff}, 300)),
		},
		{
			// An envelope that did not decode: nothing is known but the bytes.
			Reason: ReasonDecode, Error: &envelope.ErrorEnvelope{Code: "decode", Message: "truncated"},
			Time: at.Add(-time.Hour), Envelope: []byte{0xa3, 0x00, 0x01, 0x01},
		},
		{Reason: ReasonShed, EventID: "e4", EventType: "demo.noop", Source: "/s", Time: at, Envelope: env("e4", "demo.noop", nil)},
		{Reason: "custom_reason", Time: time.Unix(0, -5).UTC()},
	}
}

func writeLetters(t *testing.T, path string, letters []Record) {
	t.Helper()
	s, err := OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	for i := range letters {
		if err := s.Write(context.Background(), &letters[i]); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// recordEnds returns the offset just past each record of letters, as FileSink lays them out.
func recordEnds(t *testing.T, letters []Record) []int64 {
	t.Helper()
	var ends []int64
	var off int64
	for i := range letters {
		rec, err := marshalRecord(&letters[i], time.Now())
		if err != nil {
			t.Fatal(err)
		}
		off += int64(len(rec))
		ends = append(ends, off)
	}
	return ends
}

func readLetters(t *testing.T, path string) *File {
	t.Helper()
	f, err := ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	return f
}

func TestFileSinkRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	want := sampleLetters(t)
	writeLetters(t, path, want)
	got := readLetters(t, path)
	if got.TornBytes != 0 {
		t.Errorf("TornBytes = %d, want 0", got.TornBytes)
	}
	if !reflect.DeepEqual(got.Records, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got.Records, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if end := recordEnds(t, want)[len(want)-1]; fi.Size() != end {
		t.Errorf("file size %d, want the records' %d", fi.Size(), end)
	}
	// The envelope bytes are the event exactly as submitted.
	ev, err := envelope.DecodeEvent(got.Records[1].Envelope)
	if err != nil || ev.ID != "e2" || len(ev.Data) != 1200 {
		t.Fatalf("envelope.DecodeEvent(envelope) = %+v, %v", ev, err)
	}
}

func TestFileSinkAppendsAcrossOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	all := sampleLetters(t)
	writeLetters(t, path, all[:2])
	writeLetters(t, path, all[2:])
	if got := readLetters(t, path); !reflect.DeepEqual(got.Records, all) {
		t.Fatalf("after two opens read %d letters, want %d equal ones", len(got.Records), len(all))
	}
}

func TestFileSinkStampsZeroTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	before := time.Now()
	writeLetters(t, path, []Record{{Reason: ReasonNoRoute, EventType: "nobody.home"}})
	after := time.Now()
	got := readLetters(t, path).Records
	if len(got) != 1 || got[0].Time.Before(before.Truncate(0)) || got[0].Time.After(after) {
		t.Fatalf("stamped time %v, want within [%v, %v]", got[0].Time, before, after)
	}
}

func TestFileSinkMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dlq.cbor")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("created with mode %04o, want 0600", fi.Mode().Perm())
	}

	// An existing file others can read is refused, untouched.
	open := filepath.Join(dir, "readable.cbor")
	if err := os.WriteFile(open, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		if err := os.Chmod(open, mode); err != nil {
			t.Fatal(err)
		}
		if s, err := OpenFile(open); !errors.Is(err, ErrUnsafeFileMode) {
			if s != nil {
				s.Close()
			}
			t.Errorf("OpenFile on mode %04o: err = %v, want ErrUnsafeFileMode", mode, err)
		}
	}
	if err := os.Chmod(open, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenFile(open)
	if err != nil {
		t.Fatalf("OpenFile on mode 0600: %v", err)
	}
	s2.Close()

	if _, err := OpenFile(dir); err == nil {
		t.Error("OpenFile on a directory succeeded")
	}
}

func TestFileSinkExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := OpenFile(path); !errors.Is(err, ErrSinkInUse) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second OpenFile: err = %v, want ErrSinkInUse", err)
	}
	s.Close()
	s3, err := OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile after Close: %v", err)
	}
	s3.Close()
}

func TestReadFileTornTail(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full.cbor")
	letters := sampleLetters(t)[:3]
	writeLetters(t, full, letters)
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	ends := recordEnds(t, letters)
	lastStart := ends[len(ends)-2]
	torn := filepath.Join(dir, "torn.cbor")
	for cut := lastStart; cut < int64(len(data)); cut++ {
		if err := os.WriteFile(torn, data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(torn)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if !reflect.DeepEqual(got.Records, letters[:2]) || got.TornBytes != cut-lastStart {
			t.Fatalf("cut at %d: %d letters, %d torn bytes; want 2 and %d", cut, len(got.Records), got.TornBytes, cut-lastStart)
		}
	}
}

func TestReadFileZeroTail(t *testing.T) {
	// A crashed append can leave zeros instead of a prefix on some file systems.
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	letters := sampleLetters(t)[:2]
	writeLetters(t, path, letters)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096+7))
	f.Close()
	got := readLetters(t, path)
	if len(got.Records) != 2 || got.TornBytes != 4096+7 {
		t.Fatalf("%d letters, %d torn bytes; want 2 and %d", len(got.Records), got.TornBytes, 4096+7)
	}
}

func TestReadFileCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full.cbor")
	letters := sampleLetters(t)[:3]
	writeLetters(t, full, letters)
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	ends := recordEnds(t, letters)
	second := ends[0]
	// The offset of the second record's envelope length (a two-byte head: key 9, 0x59).
	rec, _ := marshalRecord(&letters[1], time.Now())
	n := len(letters[1].Envelope)
	i := bytes.Index(rec, []byte{keyEnvelope, 0x59, byte(n >> 8), byte(n)})
	if i < 0 {
		t.Fatal("no two-byte envelope length in the second record")
	}
	envLen := second + int64(i) + 2
	for _, tc := range []struct {
		name string
		at   int64 // offset of the byte to replace
		b    byte
		kind envelope.DecodeErrorKind
	}{
		{"malformed head", second, 0xff, envelope.KindMalformed},
		{"not a map", second, 0x01, envelope.KindNotMap},
		{"record version 2", second + 2, 0x02, envelope.KindUnsupportedVersion},
		{"reason is not text", second + 4, 0x44, envelope.KindWrongType},
		// A head claiming a huge byte string runs past the end of the file: it must not
		// pass for a torn tail (and get truncated with the good record after it).
		{"huge length", second, 0x5b, ""},
		// A map head claiming more pairs swallows the third record.
		{"more pairs", second, 0xb7, ""},
		// So does an envelope length that runs past the end of the file: the record looks
		// torn, but the third record is whole inside what would be its envelope.
		{"envelope length", envLen, 0xff, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(data)
			bad[tc.at] = tc.b
			path := filepath.Join(dir, "bad.cbor")
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadFile(path)
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("ReadFile = %+v, %v; want a *FileError", got, err)
			}
			if fe.Offset != second || fe.Path != path {
				t.Errorf("error at offset %d of %s, want %d of %s: %v", fe.Offset, fe.Path, second, path, err)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			var de *envelope.DecodeError
			if tc.kind != "" && (!errors.As(err, &de) || de.Kind != tc.kind) {
				t.Errorf("err = %v, want kind %s", err, tc.kind)
			}
			// OpenFile refuses it rather than append where no reader can reach.
			if s, err := OpenFile(path); !errors.As(err, &fe) {
				if s != nil {
					s.Close()
				}
				t.Errorf("OpenFile on a corrupt file: %v, want a *FileError", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, bad) {
				t.Error("OpenFile changed a corrupt file")
			}
		})
	}
}

func TestReadFileSkipsUnknownKeys(t *testing.T) {
	// A later minor version may add keys; this reader skips them.
	rec, err := cborx.Enc.Marshal(map[uint64]any{
		keyV: 1, keyReason: "term", keyTime: int64(42), keyEventID: "x", 10: "new", 23: []any{1, 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	if err := os.WriteFile(path, rec, 0o600); err != nil {
		t.Fatal(err)
	}
	got := readLetters(t, path)
	want := []Record{{Reason: ReasonTerm, Time: time.Unix(0, 42).UTC(), EventID: "x"}}
	if !reflect.DeepEqual(got.Records, want) {
		t.Fatalf("got %+v, want %+v", got.Records, want)
	}
}

func TestReadFileKeepsRecordsWithUnknownKeysAtTheInt64Limit(t *testing.T) {
	// Keys either side of math.MaxInt64, and keys one float64 cannot tell apart, are distinct
	// keys (as Rust's decoder holds): such a record is read, and so is the rest of the file,
	// its error envelope's retry map included.
	letters := sampleLetters(t)
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	writeLetters(t, path, letters[:1])
	errEnv, err := cborx.Enc.Marshal(map[uint64]any{0: 1, 1: "handler", 3: map[uint64]any{0: 2, 1<<63 - 1: 0, 1 << 63: 0}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := cborx.Enc.Marshal(map[uint64]any{
		keyV: 1, keyReason: "term", keyTime: int64(42), keyEventID: "x", keyError: errEnv,
		1<<63 - 1: "a", 1 << 63: "b", 1<<64 - 1: "c", 1<<64 - 2: "d",
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeLetters(t, path, letters[1:2])
	got := readLetters(t, path)
	want := []Record{letters[0], {Reason: ReasonTerm, Time: time.Unix(0, 42).UTC(), EventID: "x",
		Error: &envelope.ErrorEnvelope{Code: "handler", Retry: &envelope.RetryPolicy{Attempts: 2}}}, letters[1]}
	if got.TornBytes != 0 || !reflect.DeepEqual(got.Records, want) {
		t.Fatalf("got %+v (torn %d), want %+v", got.Records, got.TornBytes, want)
	}
}

func TestRecordTextThatIsNotUTF8IsWrittenReadable(t *testing.T) {
	// A Go handler's error message may hold any bytes; the letter is kept and the file stays
	// readable, the bad bytes shown as U+FFFD.
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	letters := sampleLetters(t)
	bad := Record{Reason: ReasonTerm, EventID: "e\xff", Route: "r\xc0", Time: time.Unix(0, 1).UTC(),
		Error: &envelope.ErrorEnvelope{Code: "handler", Message: "boom \xff", Runtime: "go", Handler: "h\xed\xa0\x80"}}
	writeLetters(t, path, []Record{letters[0], bad, letters[1]})
	got := readLetters(t, path)
	fixed := bad
	fixed.EventID, fixed.Route = "e\uFFFD", "r\uFFFD"
	fixed.Error = &envelope.ErrorEnvelope{Code: "handler", Message: "boom \uFFFD", Runtime: "go", Handler: "h\uFFFD"}
	if want := []Record{letters[0], fixed, letters[1]}; len(got.Records) != 3 || !reflect.DeepEqual(got.Records, want) {
		t.Fatalf("got %+v, want the second to be %+v with error %+v", got.Records, fixed, fixed.Error)
	}
}

func TestOpenFileTruncatesTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	letters := sampleLetters(t)
	writeLetters(t, path, letters[:3])
	ends := recordEnds(t, letters[:3])
	cut := ends[1] + (ends[2]-ends[1])/2
	if err := os.Truncate(path, cut); err != nil {
		t.Fatal(err)
	}
	s, err := OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile on a torn file: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != ends[1] {
		t.Errorf("after open the file is %d bytes, want the torn record cut to %d", fi.Size(), ends[1])
	}
	if err := s.Write(context.Background(), &letters[3]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got := readLetters(t, path)
	want := []Record{letters[0], letters[1], letters[3]}
	if got.TornBytes != 0 || !reflect.DeepEqual(got.Records, want) {
		t.Fatalf("read %d letters, %d torn bytes; want letters 0, 1, 3 and none torn", len(got.Records), got.TornBytes)
	}
}

func TestFileSinkConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				dl := &Record{Reason: ReasonTerm, EventID: id, Envelope: bytes.Repeat([]byte(id), 50)}
				if err := s.Write(context.Background(), dl); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s.Close()
	got := readLetters(t, path)
	if len(got.Records) != writers*each || got.TornBytes != 0 {
		t.Fatalf("read %d letters, %d torn bytes; want %d and 0", len(got.Records), got.TornBytes, writers*each)
	}
	seen := map[string]bool{}
	for _, dl := range got.Records {
		if seen[dl.EventID] || !bytes.Equal(dl.Envelope, bytes.Repeat([]byte(dl.EventID), 50)) {
			t.Fatalf("letter %q duplicated or its envelope mixed with another's", dl.EventID)
		}
		seen[dl.EventID] = true
	}
}

func TestFileSinkClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Write(context.Background(), &Record{Reason: ReasonTerm}); !errors.Is(err, ErrSinkClosed) {
		t.Errorf("Write after Close: %v, want ErrSinkClosed", err)
	}
}

func TestFileSinkRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, dl := range []*Record{
		nil,
		{EventID: "no reason"},
		{Reason: ReasonTerm, Error: &envelope.ErrorEnvelope{Message: "no code"}},
		{Reason: ReasonTerm, Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if err := s.Write(context.Background(), dl); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("Write(%+v) = %v, want ErrInvalidRecord", dl, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Write(ctx, &Record{Reason: ReasonTerm}); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a cancelled context = %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Errorf("rejected letters left %d bytes", fi.Size())
	}
}

func TestFileSinkWriteAfterFailedWrite(t *testing.T) {
	// A failed write may leave part of a record; the next write must land right after the
	// last good record, not after the garbage.
	path := filepath.Join(t.TempDir(), "dlq.cbor")
	letters := sampleLetters(t)
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(context.Background(), &letters[0]); err != nil {
		t.Fatal(err)
	}
	// Swap in a read-only handle: the write fails, and so does the truncate after it.
	rw := s.f
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.f = ro
	if err := s.Write(context.Background(), &letters[1]); err == nil {
		t.Fatal("write through a read-only handle succeeded")
	}
	s.f = rw
	ro.Close()
	if !s.dirty {
		t.Fatal("sink not marked dirty after a failed write whose truncate failed")
	}
	// What a short write leaves: the start of a record.
	rec, _ := marshalRecord(&letters[1], time.Now())
	if _, err := rw.WriteAt(rec[:len(rec)/2], s.end); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), &letters[2]); err != nil {
		t.Fatal(err)
	}
	got := readLetters(t, path)
	if got.TornBytes != 0 || !reflect.DeepEqual(got.Records, []Record{letters[0], letters[2]}) {
		t.Fatalf("read %d letters, %d torn bytes; want letters 0 and 2, none torn", len(got.Records), got.TornBytes)
	}
}

func TestMemorySink(t *testing.T) {
	s := NewMemorySink()
	letters := sampleLetters(t)
	for i := range letters {
		if err := s.Write(context.Background(), &letters[i]); err != nil {
			t.Fatal(err)
		}
	}
	want := sampleLetters(t)
	// The sink keeps copies: changing what was written, or what Letters returned, changes nothing.
	letters[0].Envelope[0] ^= 0xff
	letters[1].Error.Retry.Attempts = 99
	got := s.Records()
	got[0].Envelope[1] ^= 0xff
	got[0].Error.Code = "changed"
	if again := s.Records(); !reflect.DeepEqual(again, want) {
		t.Fatalf("Letters() = %+v, want %+v", again, want)
	}
	if err := s.Write(context.Background(), &Record{}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("empty reason: %v, want ErrInvalidRecord", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Write(context.Background(), &letters[0]); !errors.Is(err, ErrSinkClosed) {
		t.Errorf("Write after Close: %v, want ErrSinkClosed", err)
	}
	if n := len(s.Records()); n != len(want) {
		t.Errorf("after Close %d letters, want %d", n, len(want))
	}
}
