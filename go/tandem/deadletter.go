package tandem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// This file is the dead-letter sink (docs/deadletters.md): the DeadLetter value, the
// DeadLetterSink interface, the default FileSink (an fsync'd, append-only CBOR sequence,
// RFC 8742) with its reader, and MemorySink.

// DeadLetterReason says why an event was dead-lettered. The constants below are the ones
// tandem writes; a sink stores any non-empty reason, so others may add their own.
type DeadLetterReason string

// The reasons tandem dead-letters an event for.
const (
	// ReasonTerm: a handler returned Term.
	ReasonTerm DeadLetterReason = "term"
	// ReasonMaxAttempts: retries exhausted.
	ReasonMaxAttempts DeadLetterReason = "max_attempts"
	// ReasonDecode: the envelope could not be decoded.
	ReasonDecode DeadLetterReason = "decode"
	// ReasonNoRoute: no handler is routed for the event's type.
	ReasonNoRoute DeadLetterReason = "no_route"
	// ReasonShed: dropped by a Shed overload policy.
	ReasonShed DeadLetterReason = "shed"
	// ReasonCancelled: cancelled at shutdown with a policy that dead-letters.
	ReasonCancelled DeadLetterReason = "cancelled"
)

// DeadLetter is one dead-lettered event: why, the error envelope, how many attempts were
// made, what is known of the event, and its original envelope bytes. It is a plain value;
// sinks neither retain nor modify one they are given.
type DeadLetter struct {
	// Reason is required.
	Reason DeadLetterReason
	// Error is the error envelope of the last failure; it may be nil.
	Error *ErrorEnvelope
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

// DeadLetterSink receives dead letters. Implementations must be safe for concurrent use;
// WriteDeadLetter must not retain dl or dl.Envelope after it returns, and must return an
// error (never drop the letter silently) when it cannot store it. After Close,
// WriteDeadLetter fails with ErrSinkClosed; Close is idempotent.
type DeadLetterSink interface {
	WriteDeadLetter(ctx context.Context, dl *DeadLetter) error
	Close() error
}

var (
	// ErrSinkClosed: WriteDeadLetter after Close.
	ErrSinkClosed = errors.New("tandem: dead-letter sink is closed")
	// ErrInvalidDeadLetter (wrapped, naming the field): the reason is empty, the error
	// envelope cannot be encoded, or the time is out of range.
	ErrInvalidDeadLetter = errors.New("tandem: invalid dead letter")
	// ErrUnsafeFileMode: OpenFileSink refuses an existing dead-letter file that its group
	// or others may access; dead letters carry event payloads. chmod 600 it.
	ErrUnsafeFileMode = errors.New("tandem: dead-letter file is accessible to group or others")
	// ErrSinkInUse: another FileSink, in this process or another, holds the file.
	ErrSinkInUse = errors.New("tandem: dead-letter file is in use by another sink")
)

// DeadLetterFileError is a dead-letter file that cannot be read past a point: a record
// that is malformed or invalid, or bytes at the end that are not a record cut short.
// Offset is where the bad record starts.
type DeadLetterFileError struct {
	Path   string
	Offset int64
	Err    error
}

func (e *DeadLetterFileError) Error() string {
	return fmt.Sprintf("tandem: dead-letter file %s: bad record at offset %d: %v", e.Path, e.Offset, e.Err)
}

// Unwrap returns the underlying error (often a *DecodeError).
func (e *DeadLetterFileError) Unwrap() error { return e.Err }

// ---------------------------------------------------------------------------
// The record: a definite-length map with unsigned keys, version 1.

// recordVersion is the major version every record carries under key 0.
const recordVersion = 1

const (
	dlKeyV = iota
	dlKeyReason
	dlKeyError
	dlKeyAttempts
	dlKeyEventID
	dlKeyEventType
	dlKeySource
	dlKeyRoute
	dlKeyTime
	dlKeyEnvelope
)

// The error envelope is embedded as a byte string holding its own canonical encoding, so
// the record decodes with the envelope's strict shape pass and DecodeErrorEnvelope reads
// the error exactly as it reads one off the completion ring.
var recordShapes = [...]fieldShape{
	dlKeyV: shapeUint, dlKeyReason: shapeText, dlKeyError: shapeBytes,
	dlKeyAttempts: shapeUint, dlKeyEventID: shapeText, dlKeyEventType: shapeText,
	dlKeySource: shapeText, dlKeyRoute: shapeText, dlKeyTime: shapeInt, dlKeyEnvelope: shapeBytes,
}

// wireDeadLetter is the record as fxamacker/cbor sees it.
type wireDeadLetter struct {
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

// marshalDeadLetter encodes dl as one canonical record, stamping a zero Time with now.
func marshalDeadLetter(dl *DeadLetter, now time.Time) ([]byte, error) {
	if dl == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalidDeadLetter)
	}
	if dl.Reason == "" {
		return nil, fmt.Errorf("%w: Reason is empty", ErrInvalidDeadLetter)
	}
	t := dl.Time
	if t.IsZero() {
		t = now
	}
	if !validTime(t) {
		return nil, fmt.Errorf("%w: Time %v is outside int64 Unix nanoseconds", ErrInvalidDeadLetter, t)
	}
	w := wireDeadLetter{
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
		b, err := AppendErrorEnvelope(nil, dl.Error)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDeadLetter, err)
		}
		w.Error = b
	}
	return encMode.Marshal(&w)
}

// decodeDeadLetter decodes one complete record. Like the envelope decoders it skips
// unknown unsigned keys and rejects another version, and reports a *DecodeError.
func decodeDeadLetter(b []byte) (*DeadLetter, error) {
	var w wireDeadLetter
	present, err := decodeInto(b, recordShapes[:], &w)
	if err != nil {
		return nil, err
	}
	switch {
	case w.Reason == "":
		return nil, decodeErr(KindMissingField, "reason (key %d)", dlKeyReason)
	case present&(1<<dlKeyTime) == 0:
		return nil, decodeErr(KindMissingField, "time (key %d)", dlKeyTime)
	}
	dl := &DeadLetter{
		Reason:    DeadLetterReason(w.Reason),
		Attempts:  w.Attempts,
		EventID:   w.EventID,
		EventType: w.EventType,
		Source:    w.Source,
		Route:     w.Route,
		Time:      time.Unix(0, w.Time).UTC(),
	}
	if len(w.Envelope) != 0 {
		dl.Envelope = w.Envelope
	}
	if present&(1<<dlKeyError) != 0 {
		e, err := DecodeErrorEnvelope(w.Error)
		if err != nil {
			return nil, fmt.Errorf("error envelope (key %d): %w", dlKeyError, err)
		}
		dl.Error = e
	}
	return dl, nil
}

// cloneDeadLetter returns a deep copy, so a sink keeps nothing of the caller's.
func cloneDeadLetter(dl *DeadLetter) DeadLetter {
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

// DeadLetterFile is what ReadDeadLetters found: every complete record in file order, and
// how many bytes at the end were a record cut short by a crash (skipped).
type DeadLetterFile struct {
	Letters   []DeadLetter
	TornBytes int64
}

// ReadDeadLetters reads every complete record of a file written by FileSink. A torn last
// record (a crash mid-write) is skipped and counted in TornBytes, not an error; a bad
// record anywhere else is a *DeadLetterFileError naming its offset. It takes no lock, so
// it may run while a sink appends (a record being written reads as torn). Times are in UTC.
func ReadDeadLetters(path string) (*DeadLetterFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := &DeadLetterFile{}
	_, torn, err := scanDeadLetters(f, path, func(dl *DeadLetter) { out.Letters = append(out.Letters, *dl) })
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

// scanDeadLetters decodes the records of r one after another, calling fn with each. It
// returns the offset just past the last complete record and the length of a torn tail
// after it. Whatever else stops it is an error: a read error, or a *DeadLetterFileError.
func scanDeadLetters(r io.Reader, path string, fn func(*DeadLetter)) (good, torn int64, err error) {
	rr := &readErrRecorder{r: r}
	dec := decMode.NewDecoder(rr)
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
				return off, 0, &DeadLetterFileError{Path: path, Offset: off, Err: err}
			}
			return off, int64(len(tail)), nil
		case err != nil:
			return off, 0, &DeadLetterFileError{Path: path, Offset: off, Err: classify(err)}
		}
		dl, derr := decodeDeadLetter(raw)
		if derr != nil {
			// Some file systems can leave a crashed append as zeros rather than a prefix.
			if n, ok := zeroTail(raw, dec, rr); ok {
				return off, n, nil
			}
			return off, 0, &DeadLetterFileError{Path: path, Offset: off, Err: derr}
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
// OpenFileSink would truncate) good records.
func checkTornTail(tail []byte) error {
	switch {
	case len(tail) == 0:
		return nil
	case tail[0]&0xe0 != majorMap || tail[0]&0x1f > 27,
		len(tail) > 1 && tail[1] != dlKeyV,
		len(tail) > 2 && tail[2] != recordVersion:
		return errors.New("incomplete item that does not start like a record")
	}
	for i := 1; i+3 <= len(tail); i++ {
		if tail[i]&0xe0 != majorMap || tail[i+1] != dlKeyV || tail[i+2] != recordVersion {
			continue
		}
		var raw cbor.RawMessage
		if _, err := decMode.UnmarshalFirst(tail[i:], &raw); err != nil {
			continue
		}
		if _, err := decodeDeadLetter(raw); err == nil {
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
// dead letter, written with one write and fsync'd before WriteDeadLetter returns. It is
// safe for concurrent use; writers are serialized, each paying one fsync.
//
// The file is created with mode 0600 (whatever the umask); an existing file that group or
// others may access is refused with ErrUnsafeFileMode. The sink holds an exclusive flock
// on the file until Close, so a second sink on the same file, in this process or another,
// fails with ErrSinkInUse; readers (ReadDeadLetters) take no lock.
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

// OpenFileSink opens the dead-letter file at path for appending, creating it (mode 0600)
// if it does not exist. It reads the file once: a torn last record, left by a crash in the
// middle of a write, is truncated away (and the truncation fsync'd) so new records follow
// the last complete one. A bad record elsewhere fails with a *DeadLetterFileError: a reader
// could not get past it, so appending after it would store letters nobody can read.
func OpenFileSink(path string) (*FileSink, error) {
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
	end, torn, err := scanDeadLetters(f, path, nil)
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

// Path returns the file's path, as given to OpenFileSink.
func (s *FileSink) Path() string { return s.path }

// WriteDeadLetter appends dl as one record and fsyncs the file. When it returns nil the
// record is durable; when it returns an error the file holds no part of it (a failed or
// short write is truncated away), so the caller may retry. ctx is checked before the write
// only: a write and its fsync are not interrupted. A zero dl.Time is stamped with the
// current time. Errors: ErrSinkClosed, ErrInvalidDeadLetter (wrapped), ctx's error, or the
// file system's.
func (s *FileSink) WriteDeadLetter(ctx context.Context, dl *DeadLetter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rec, err := marshalDeadLetter(dl, time.Now())
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
// Calling it again returns nil.
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

// MemorySink keeps dead letters in memory, for tests and small tools. It validates a dead
// letter as FileSink does and keeps a deep copy. Safe for concurrent use.
type MemorySink struct {
	mu      sync.Mutex
	letters []DeadLetter
	closed  bool
}

// NewMemorySink returns an empty MemorySink.
func NewMemorySink() *MemorySink { return &MemorySink{} }

// WriteDeadLetter stores a copy of dl, stamping a zero Time with the current time. Errors:
// ErrSinkClosed, ErrInvalidDeadLetter (wrapped) or ctx's error.
func (s *MemorySink) WriteDeadLetter(ctx context.Context, dl *DeadLetter) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	if _, err := marshalDeadLetter(dl, now); err != nil {
		return err
	}
	c := cloneDeadLetter(dl)
	if c.Time.IsZero() {
		c.Time = now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrSinkClosed
	}
	s.letters = append(s.letters, c)
	return nil
}

// Letters returns a deep copy of the dead letters written so far, in order.
func (s *MemorySink) Letters() []DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeadLetter, len(s.letters))
	for i := range s.letters {
		out[i] = cloneDeadLetter(&s.letters[i])
	}
	return out
}

// Close makes later writes fail with ErrSinkClosed; the letters stay readable. Calling it
// again returns nil.
func (s *MemorySink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var (
	_ DeadLetterSink = (*FileSink)(nil)
	_ DeadLetterSink = (*MemorySink)(nil)
)
