package deadletter

import (
	"context"
	"sync"
	"time"
)

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
