package deadletter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/tandemrt/tandem/go/internal/cborx"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Reason says why an event was dead-lettered. The constants below are the ones tandem
// writes; a sink stores any non-empty reason, so others may add their own.
type Reason string

// The reasons tandem dead-letters an event for.
const (
	// ReasonTerm: a handler returned Term.
	ReasonTerm Reason = "term"
	// ReasonMaxAttempts: retries exhausted.
	ReasonMaxAttempts Reason = "max_attempts"
	// ReasonRetryBudget: the retry budget refused a retry (a failing dependency, most likely).
	ReasonRetryBudget Reason = "retry_budget"
	// ReasonDecode: the envelope could not be decoded.
	ReasonDecode Reason = "decode"
	// ReasonNoRoute: no handler is routed for the event's type.
	ReasonNoRoute Reason = "no_route"
	// ReasonShed: dropped by a Shed overload policy.
	ReasonShed Reason = "shed"
	// ReasonCancelled: cancelled at shutdown with a policy that dead-letters.
	ReasonCancelled Reason = "cancelled"
)

// Record is one dead-lettered event: why, the error envelope, how many attempts were
// made, what is known of the event, and its original envelope bytes. It is a plain value;
// sinks neither retain nor modify one they are given.
type Record struct {
	// Reason is required.
	Reason Reason
	// Error is the error envelope of the last failure; it may be nil.
	Error *envelope.ErrorEnvelope
	// Attempts is how many deliveries were made.
	Attempts uint32
	// EventID, EventType and Source are copied from the event when known (empty if it did
	// not decode).
	EventID, EventType, Source string
	// Route is the route pattern or handler name, when known.
	Route string
	// Time is when the event was dead-lettered. A sink stamps a zero Time with the time of
	// the write. Read back, it is in UTC.
	Time time.Time
	// Envelope is the original event envelope, byte for byte as submitted.
	Envelope []byte
}

// Sink receives dead letters. Implementations must be safe for concurrent use; Write must
// not retain r or r.Envelope after it returns, and must return an error (never drop the
// record silently) when it cannot store it. Closing a sink is its owner's business, not
// the runtime's: the runtime only writes. A closed sink's Write fails with ErrSinkClosed.
type Sink interface {
	Write(ctx context.Context, r *Record) error
}

var (
	// ErrSinkClosed: Write after Close.
	ErrSinkClosed = errors.New("tandem: dead-letter sink is closed")
	// ErrInvalidRecord (wrapped, naming the field): the reason is empty, the error
	// envelope cannot be encoded, or the time is out of range.
	ErrInvalidRecord = errors.New("tandem: invalid dead-letter record")
	// ErrUnsafeFileMode: OpenFile refuses an existing dead-letter file that its group
	// or others may access; dead letters carry event payloads. chmod 600 it.
	ErrUnsafeFileMode = errors.New("tandem: dead-letter file is accessible to group or others")
	// ErrSinkInUse: another FileSink, in this process or another, holds the file.
	ErrSinkInUse = errors.New("tandem: dead-letter file is in use by another sink")
)

// FileError is a dead-letter file that cannot be read past a point: a record that is
// malformed or invalid, or bytes at the end that are not a record cut short. Offset is
// where the bad record starts.
type FileError struct {
	Path   string
	Offset int64
	Err    error
}

// Error names the file, the offset and what is wrong there.
func (e *FileError) Error() string {
	return fmt.Sprintf("tandem: dead-letter file %s: bad record at offset %d: %v", e.Path, e.Offset, e.Err)
}

// Unwrap returns the underlying error (often an *envelope.DecodeError).
func (e *FileError) Unwrap() error { return e.Err }

// ---------------------------------------------------------------------------
// The record: a definite-length map with unsigned keys, version 1.

// recordVersion is the major version every record carries under key 0.
const recordVersion = 1

const (
	keyV = iota
	keyReason
	keyError
	keyAttempts
	keyEventID
	keyEventType
	keySource
	keyRoute
	keyTime
	keyEnvelope
)

// majorMap is CBOR major type 5 in an initial byte: every record starts with a map head.
const majorMap = 5 << 5

var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// The error envelope is embedded as a byte string holding its own canonical encoding, so
// envelope.DecodeErrorEnvelope reads the error exactly as it reads one off the
// completion ring. A record is checked with the envelope's rules (cborx.Decode).
var recordShapes = [...]cborx.Shape{
	keyV: cborx.Uint, keyReason: cborx.Text, keyError: cborx.Bytes,
	keyAttempts: cborx.Uint, keyEventID: cborx.Text, keyEventType: cborx.Text,
	keySource: cborx.Text, keyRoute: cborx.Text, keyTime: cborx.Int, keyEnvelope: cborx.Bytes,
}

// wireRecord is the record as fxamacker/cbor encodes it.
type wireRecord struct {
	V         uint64 `cbor:"0,keyasint"`
	Reason    string `cbor:"1,keyasint"`
	Error     []byte `cbor:"2,keyasint,omitempty"`
	Attempts  uint32 `cbor:"3,keyasint,omitempty"`
	EventID   string `cbor:"4,keyasint,omitempty"`
	EventType string `cbor:"5,keyasint,omitempty"`
	Source    string `cbor:"6,keyasint,omitempty"`
	Route     string `cbor:"7,keyasint,omitempty"`
	Time      int64  `cbor:"8,keyasint"`
	Envelope  []byte `cbor:"9,keyasint,omitempty"`
}

// marshalRecord encodes dl as one canonical record, stamping a zero Time with now.
func marshalRecord(dl *Record, now time.Time) ([]byte, error) {
	if dl == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	if dl.Reason == "" {
		return nil, fmt.Errorf("%w: Reason is empty", ErrInvalidRecord)
	}
	t := dl.Time
	if t.IsZero() {
		t = now
	}
	if t.Before(minUnixNano) || t.After(maxUnixNano) {
		return nil, fmt.Errorf("%w: Time %v is outside int64 Unix nanoseconds", ErrInvalidRecord, t)
	}
	w := wireRecord{
		V:         recordVersion,
		Reason:    string(dl.Reason),
		Attempts:  dl.Attempts,
		EventID:   dl.EventID,
		EventType: dl.EventType,
		Source:    dl.Source,
		Route:     dl.Route,
		Time:      t.UnixNano(),
		Envelope:  dl.Envelope,
	}
	if dl.Error != nil {
		b, err := envelope.MarshalErrorEnvelope(dl.Error)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
		w.Error = b
	}
	return cborx.Enc.Marshal(&w)
}

// decodeRecord decodes one complete record. Like the envelope decoders it skips unknown
// unsigned keys and rejects another version, and reports an *envelope.DecodeError.
func decodeRecord(b []byte) (*Record, error) {
	r := &Record{}
	var ns int64
	present, err := cborx.Decode(b, recordShapes[:], func(key uint64, val []byte) error {
		var dst any
		switch key {
		case keyReason:
			dst = (*string)(&r.Reason)
		case keyError:
			var raw []byte
			if err := cborx.Dec.Unmarshal(val, &raw); err != nil {
				return err
			}
			e, err := envelope.DecodeErrorEnvelope(raw)
			if err != nil {
				return fmt.Errorf("error envelope (key %d): %w", keyError, err)
			}
			r.Error = e
			return nil
		case keyAttempts:
			dst = &r.Attempts
		case keyEventID:
			dst = &r.EventID
		case keyEventType:
			dst = &r.EventType
		case keySource:
			dst = &r.Source
		case keyRoute:
			dst = &r.Route
		case keyTime:
			dst = &ns
		case keyEnvelope:
			dst = &r.Envelope
		}
		return cborx.Dec.Unmarshal(val, dst)
	})
	if err != nil {
		e := cborx.AsError(err)
		return nil, &envelope.DecodeError{Kind: envelope.DecodeErrorKind(e.Kind), Err: e.Err}
	}
	switch {
	case r.Reason == "":
		return nil, decodeErr(envelope.KindMissingField, "reason (key %d)", keyReason)
	case present&(1<<keyTime) == 0:
		return nil, decodeErr(envelope.KindMissingField, "time (key %d)", keyTime)
	}
	r.Time = time.Unix(0, ns).UTC()
	if len(r.Envelope) == 0 {
		r.Envelope = nil
	}
	return r, nil
}

func decodeErr(kind envelope.DecodeErrorKind, format string, args ...any) *envelope.DecodeError {
	return &envelope.DecodeError{Kind: kind, Err: fmt.Errorf(format, args...)}
}

// cloneRecord returns a deep copy, so a sink keeps nothing of the caller's.
func cloneRecord(dl *Record) Record {
	c := *dl
	if dl.Error != nil {
		e := *dl.Error
		if e.Retry != nil {
			r := *e.Retry
			e.Retry = &r
		}
		c.Error = &e
	}
	c.Envelope = bytes.Clone(dl.Envelope)
	return c
}

// ---------------------------------------------------------------------------
// Reading a file sink.

// File is what ReadFile found: every complete record in file order, and how many bytes
// at the end were a record cut short by a crash (skipped). It is a plain value.
type File struct {
	Records   []Record
	TornBytes int64
}

// ReadFile reads every complete record of a file written by FileSink. A torn last
// record (a crash mid-write) is skipped and counted in TornBytes, not an error; a bad
// record anywhere else is a *FileError naming its offset. It takes no lock, so it may run
// while a sink appends (a record being written reads as torn). Times are in UTC. Safe
// for concurrent use.
func ReadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := &File{}
	_, torn, err := scanRecords(f, path, func(r *Record) { out.Records = append(out.Records, *r) })
	if err != nil {
		return nil, err
	}
	out.TornBytes = torn
	return out, nil
}

// readErrRecorder remembers the reader's first error other than io.EOF, so a failing
// disk is reported as such and not as a corrupt record.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (r *readErrRecorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// scanRecords decodes the records of r one after another, calling fn with each. It
// returns the offset just past the last complete record and the length of a torn tail
// after it. Whatever else stops it is an error: a read error, or a *FileError.
func scanRecords(r io.Reader, path string, fn func(*Record)) (good, torn int64, err error) {
	rr := &readErrRecorder{r: r}
	dec := cborx.Dec.NewDecoder(rr)
	for {
		off := int64(dec.NumBytesRead())
		var raw cbor.RawMessage
		err := dec.Decode(&raw)
		if rr.err != nil {
			return off, 0, fmt.Errorf("tandem: dead-letter file %s: %w", path, rr.err)
		}
		switch {
		case err == io.EOF:
			return off, 0, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			// The last item runs past the end: everything from off is in the decoder's buffer.
			tail, _ := io.ReadAll(dec.Buffered())
			if err := checkTornTail(tail); err != nil {
				return off, 0, &FileError{Path: path, Offset: off, Err: err}
			}
			return off, int64(len(tail)), nil
		case err != nil:
			return off, 0, &FileError{Path: path, Offset: off, Err: &envelope.DecodeError{Kind: envelope.DecodeErrorKind(cborx.Kind(err)), Err: err}}
		}
		dl, derr := decodeRecord(raw)
		if derr != nil {
			// Some file systems can leave a crashed append as zeros rather than a prefix.
			if n, ok := zeroTail(raw, dec, rr); ok {
				return off, n, nil
			}
			return off, 0, &FileError{Path: path, Offset: off, Err: derr}
		}
		if fn != nil {
			fn(dl)
		}
	}
}

// checkTornTail reports whether tail, the bytes after the last complete record, can be
// what a crash in the middle of one write leaves: a proper prefix of a single record.
// Every record starts with a definite-length map head and key 0 holding 1. A tail from
// which a complete valid record can be decoded is not one record cut short but a sign
// that a length in the middle of the file is corrupt, and skipping it would hide (and
// OpenFile would truncate) good records.
func checkTornTail(tail []byte) error {
	switch {
	case len(tail) == 0:
		return nil
	case tail[0]&0xe0 != majorMap || tail[0]&0x1f > 27,
		len(tail) > 1 && tail[1] != keyV,
		len(tail) > 2 && tail[2] != recordVersion:
		return errors.New("incomplete item that does not start like a record")
	}
	for i := 1; i+3 <= len(tail); i++ {
		if tail[i]&0xe0 != majorMap || tail[i+1] != keyV || tail[i+2] != recordVersion {
			continue
		}
		var raw cbor.RawMessage
		if _, err := cborx.Dec.UnmarshalFirst(tail[i:], &raw); err != nil {
			continue
		}
		if _, err := decodeRecord(raw); err == nil {
			return fmt.Errorf("incomplete item followed by a complete record at offset +%d: a corrupt length, not a torn write", i)
		}
	}
	return nil
}

// zeroTail reports whether raw and everything after it are zero bytes, and how many.
func zeroTail(raw []byte, dec *cbor.Decoder, r io.Reader) (int64, bool) {
	if slices.ContainsFunc(raw, func(b byte) bool { return b != 0 }) {
		return 0, false
	}
	n := int64(len(raw))
	buf := make([]byte, 32<<10)
	for _, src := range []io.Reader{dec.Buffered(), r} {
		for {
			m, err := src.Read(buf)
			if slices.ContainsFunc(buf[:m], func(b byte) bool { return b != 0 }) {
				return 0, false
			}
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				return 0, false
			}
		}
	}
	return n, true
}

// ---------------------------------------------------------------------------
// FileSink.

// FileSink appends dead letters to a file as a CBOR sequence (RFC 8742), one record per
// dead letter, written with one write and fsync'd before Write returns. It is safe for
// concurrent use; writers are serialized, each paying one fsync.
//
// The file is created with mode 0600 (whatever the umask); an existing file that group or
// others may access is refused with ErrUnsafeFileMode. The sink holds an exclusive flock
// on the file until Close, so a second sink on the same file, in this process or another,
// fails with ErrSinkInUse; readers (ReadFile) take no lock.
type FileSink struct {
	path string

	mu sync.Mutex
	f  *os.File // nil after Close
	// end is the offset just past the last complete record: the next write goes there.
	end int64
	// dirty: bytes past end may be left by a failed write, and truncating them failed;
	// the next write truncates first.
	dirty bool
}

// OpenFile opens the dead-letter file at path for appending, creating it (mode 0600)
// if it does not exist. It reads the file once: a torn last record, left by a crash in the
// middle of a write, is truncated away (and the truncation fsync'd) so new records follow
// the last complete one. A bad record elsewhere fails with a *FileError: a reader could
// not get past it, so appending after it would store records nobody can read.
func OpenFile(path string) (*FileSink, error) {
	created := true
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		created = false
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*FileSink, error) {
		f.Close()
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fail(fmt.Errorf("%w: %s", ErrSinkInUse, path))
		}
		return fail(fmt.Errorf("tandem: lock dead-letter file %s: %w", path, err))
	}
	if created {
		// The umask may have taken bits from 0600; set it exactly. Then make the new
		// directory entry durable, so a record fsync'd into the file cannot vanish with it.
		if err := f.Chmod(0o600); err != nil {
			return fail(err)
		}
		if err := syncDir(filepath.Dir(path)); err != nil {
			return fail(err)
		}
		return &FileSink{path: path, f: f}, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("tandem: dead-letter file %s is not a regular file (%v)", path, fi.Mode().Type()))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fail(fmt.Errorf("%w: %s has mode %04o; chmod 600 it", ErrUnsafeFileMode, path, perm))
	}
	end, torn, err := scanRecords(f, path, nil)
	if err != nil {
		return fail(err)
	}
	if torn != 0 {
		if err := f.Truncate(end); err != nil {
			return fail(fmt.Errorf("tandem: dead-letter file %s: truncate a torn record at offset %d: %w", path, end, err))
		}
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	return &FileSink{path: path, f: f, end: end}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Path returns the file's path, as given to OpenFile. Safe for concurrent use.
func (s *FileSink) Path() string { return s.path }

// Write appends r as one record and fsyncs the file. When it returns nil the
// record is durable; when it returns an error the file holds no part of it (a failed or
// short write is truncated away), so the caller may retry. ctx is checked before the write
// only: a write and its fsync are not interrupted. A zero r.Time is stamped with the
// current time. Errors: ErrSinkClosed, ErrInvalidRecord (wrapped), ctx's error, or the
// file system's.
func (s *FileSink) Write(ctx context.Context, r *Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rec, err := marshalRecord(r, time.Now())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrSinkClosed
	}
	if s.dirty {
		if err := s.f.Truncate(s.end); err != nil {
			return fmt.Errorf("tandem: dead-letter file %s: truncate after a failed write: %w", s.path, err)
		}
		s.dirty = false
	}
	// The file is written at s.end, not with O_APPEND: after a failure the next record
	// must overwrite what the failed one left, not follow it.
	if _, err := s.f.WriteAt(rec, s.end); err != nil {
		s.rollback()
		return fmt.Errorf("tandem: dead-letter file %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		// Whether the record reached the disk is unknown; take it back so that the caller's
		// retry does not store it twice.
		s.rollback()
		return fmt.Errorf("tandem: dead-letter file %s: fsync: %w", s.path, err)
	}
	s.end += int64(len(rec))
	return nil
}

// rollback cuts the file back to the last complete record. s.mu is held.
func (s *FileSink) rollback() {
	if s.f.Truncate(s.end) != nil {
		s.dirty = true
	}
}

// Close closes the file and releases its lock. Every record written is already durable.
// Calling it again returns nil. Safe for concurrent use with Write.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// ---------------------------------------------------------------------------
// MemorySink.

// MemorySink keeps dead letters in memory, for tests and small tools. It validates a
// record as FileSink does and keeps a deep copy. Safe for concurrent use.
type MemorySink struct {
	mu      sync.Mutex
	records []Record
	closed  bool
}

// NewMemorySink returns an empty MemorySink.
func NewMemorySink() *MemorySink { return &MemorySink{} }

// Write stores a copy of r, stamping a zero Time with the current time. Errors:
// ErrSinkClosed, ErrInvalidRecord (wrapped) or ctx's error.
func (s *MemorySink) Write(ctx context.Context, r *Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	if _, err := marshalRecord(r, now); err != nil {
		return err
	}
	c := cloneRecord(r)
	if c.Time.IsZero() {
		c.Time = now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrSinkClosed
	}
	s.records = append(s.records, c)
	return nil
}

// Records returns a deep copy of the records written so far, in order.
func (s *MemorySink) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, len(s.records))
	for i := range s.records {
		out[i] = cloneRecord(&s.records[i])
	}
	return out
}

// Close makes later writes fail with ErrSinkClosed; the records stay readable. Calling
// it again returns nil.
func (s *MemorySink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var (
	_ Sink = (*FileSink)(nil)
	_ Sink = (*MemorySink)(nil)
)
