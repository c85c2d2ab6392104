package chaos

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// SinkFaults makes a FaultySink fail or stall. The zero value passes every write through.
// A plain value.
type SinkFaults struct {
	// FailRate is the share (0..1) of writes that fail with ErrSinkFault without reaching
	// the wrapped sink.
	FailRate float64
	// SlowRate is the share (0..1) of writes delayed by Delay first (or until their context
	// ends).
	SlowRate float64
	Delay    time.Duration
}

// ErrSinkFault is the error a FaultySink's injected failure returns.
var ErrSinkFault = errors.New("chaos: injected dead-letter sink failure")

// FaultySink wraps a deadletter.Sink, failing and delaying writes as its SinkFaults say and
// counting what it was given: every record the runtime wrote, whether it was stored or
// failed, and by event ID. Safe for concurrent use, as a Sink must be.
type FaultySink struct {
	next   deadletter.Sink
	faults SinkFaults

	writes, stored, failed atomic.Uint64

	mu        sync.Mutex
	rng       *rand.Rand
	byID      map[string]int
	cancelled uint64 // records with reason "cancelled"
}

// NewFaultySink wraps next (nil: a deadletter.MemorySink) with faults f, its random choices
// drawn from seed.
func NewFaultySink(next deadletter.Sink, f SinkFaults, seed uint64) *FaultySink {
	if next == nil {
		next = deadletter.NewMemorySink()
	}
	return &FaultySink{next: next, faults: f, rng: rand.New(rand.NewPCG(seed, 0x51_4b)), byID: make(map[string]int)}
}

// Write counts r, then fails, delays or passes it to the wrapped sink.
func (s *FaultySink) Write(ctx context.Context, r *deadletter.Record) error {
	s.writes.Add(1)
	s.mu.Lock()
	s.byID[r.EventID]++
	if r.Reason == deadletter.ReasonCancelled {
		s.cancelled++
	}
	fail := s.rng.Float64() < s.faults.FailRate
	slow := s.rng.Float64() < s.faults.SlowRate
	s.mu.Unlock()
	if slow && s.faults.Delay > 0 {
		t := time.NewTimer(s.faults.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if fail {
		s.failed.Add(1)
		return ErrSinkFault
	}
	if err := s.next.Write(ctx, r); err != nil {
		s.failed.Add(1)
		return err
	}
	s.stored.Add(1)
	return nil
}

// SinkCounts is what a FaultySink was given: Writes records, of which Stored reached the
// wrapped sink and Failed did not; Cancelled of them had the reason "cancelled".
type SinkCounts struct {
	Writes, Stored, Failed, Cancelled uint64
}

// Counts returns the counts so far.
func (s *FaultySink) Counts() SinkCounts {
	s.mu.Lock()
	c := s.cancelled
	s.mu.Unlock()
	return SinkCounts{Writes: s.writes.Load(), Stored: s.stored.Load(), Failed: s.failed.Load(), Cancelled: c}
}

// Records returns how many records of the event with this ID the sink was given.
func (s *FaultySink) Records(eventID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[eventID]
}
