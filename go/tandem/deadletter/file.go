package deadletter

import (
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

	"github.com/tandemrt/tandem/go/internal/cborx"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The file FileSink writes: reading it back (ReadFile) and appending to it (FileSink).

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
