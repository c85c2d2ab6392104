package engine

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem/deadletter"
)

// deadLetterQueue bounds the dead letters waiting for the sink; a full queue holds up the
// settling goroutine until the sink catches up (backpressure, never a drop).
const deadLetterQueue = 1024

// sinkTimeout bounds one write to the sink.
const sinkTimeout = 10 * time.Second

// deadJob is a dead letter on its way to the sink, with the waiter to settle after it is
// written: the submitter's acknowledgement fires once the dead letter is recorded.
type deadJob struct {
	rec *deadletter.Record
	w   Waiter
	err error
	f   *Failure
}

// deadLetters is the one writer of dead letters to the configured sink.
type deadLetters struct {
	e    *Engine
	jobs chan deadJob
	// writes is the parent of every write's context: cancelled when Shutdown's context
	// ends, so that a stalled sink cannot hold Shutdown past its deadline. The letters still
	// queued then fail at once and are written to the log in full.
	writes context.Context
	abort  context.CancelFunc
}

func (q *deadLetters) init(e *Engine) {
	q.e = e
	q.jobs = make(chan deadJob, deadLetterQueue)
	q.writes, q.abort = context.WithCancel(context.Background())
}

func (q *deadLetters) queue(j deadJob) { q.jobs <- j }

// close ends the writer once every producer is gone.
func (q *deadLetters) close() { close(q.jobs) }

// run hands queued dead letters to the sink, then settles their events.
func (q *deadLetters) run() {
	e := q.e
	defer e.background.Done()
	for job := range q.jobs {
		rec := job.rec
		fields := []zap.Field{zap.String("reason", string(rec.Reason)), zap.String("event_type", rec.EventType),
			zap.String("event_id", rec.EventID), zap.Uint32("attempt", rec.Attempts)}
		if rec.Error != nil {
			fields = append(fields, zap.String("code", rec.Error.Code), zap.String("message", rec.Error.Message))
		}
		if sink := e.cfg.DeadLetters; sink == nil {
			e.log.Error("tandem: dead letter (no sink configured)", fields...)
		} else {
			ctx, cancel := context.WithTimeout(q.writes, sinkTimeout)
			if err := sink.Write(ctx, rec); err != nil {
				e.log.Error("tandem: dead-letter sink failed; the dead letter is only in this log line",
					append(fields, zap.Error(err), zap.Binary("envelope", rec.Envelope))...)
			} else {
				e.log.Warn("tandem: dead-lettered", fields...)
			}
			cancel()
		}
		e.settled()
		if job.w != nil {
			settleWaiter(job.w, job.f, job.err, Reply{})
		}
	}
}
