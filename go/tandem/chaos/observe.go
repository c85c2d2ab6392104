package chaos

// What a run saw: one sample per second, the tally at the end, and the leak check.

import (
	"fmt"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap/zapcore"
)

// sample takes one Second per second until stop.
func (r *runner) sample(rep *Report, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastRetried, lastDead uint64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s := r.cur.Load().Stats()
		r.mu.Lock()
		retried := r.finished.Retried + s.Retried
		r.mu.Unlock()
		dead := r.sink.Counts().Writes
		r.histMu.Lock()
		p99 := time.Duration(r.hist.ValueAtQuantile(99))
		r.hist.Reset()
		r.histMu.Unlock()
		sec := Second{
			At:          time.Since(r.started).Round(time.Second),
			Offered:     r.secOffered.Swap(0),
			Completed:   r.secCompleted.Swap(0),
			Rejected:    r.secRejected.Swap(0),
			InFlight:    max(s.InFlight, 0),
			Retries:     retried - min(lastRetried, retried),
			DeadLetters: dead - lastDead,
			P99:         p99,
		}
		lastRetried, lastDead = retried, dead
		r.mu.Lock()
		rep.Seconds = append(rep.Seconds, sec)
		r.mu.Unlock()
		r.logf("%4ds offered %5d/s completed %5d/s rejected %5d/s in flight %4d retries %4d dead letters %4d p99 %v",
			int(sec.At/time.Second), sec.Offered, sec.Completed, sec.Rejected, sec.InFlight, sec.Retries, sec.DeadLetters, sec.P99)
	}
}

func (r *runner) logf(format string, a ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, format+"\n", a...)
	}
}

// tally resolves the abandoned Calls against the sink and gathers the counts.
func (r *runner) tally() Tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := Tally{
		Offered: r.offered.Load(), Acked: r.acked.Load(), DeadLettered: r.dead.Load(),
		Rejected: r.rejected.Load(), Cancelled: r.cancelled.Load(), Abandoned: r.abandoned.Load(),
		Unsettled: r.unsettled.Load(), SettledTwice: r.twice.Load(), Misdelivered: r.misdelivered.Load(),
		Unclear: r.unclear.Load(), UnclearExample: r.example,
		Runtime: r.finished, Sink: r.sink.Counts(), SinkFailuresLogged: r.logged.Load(),
		FollowUps: r.o.Scenario.FollowUps,
	}
	kinds := make([]KindTally, len(r.kinds))
	for i := range r.kinds {
		k := &r.kinds[i]
		kinds[i] = KindTally{Name: r.o.Scenario.Traffic[i].Name, Offered: k.offered.Load(), Acked: k.acked.Load(),
			DeadLettered: k.dead.Load(), Rejected: k.rejected.Load(), Cancelled: k.cancelled.Load(), Abandoned: k.abandoned.Load(),
			P99: time.Duration(k.hist.ValueAtQuantile(99))}
	}
	for _, c := range r.left {
		if r.sink.Records(c.id) > 0 {
			t.Abandoned--
			t.DeadLettered++
			kinds[c.kind].Abandoned--
			kinds[c.kind].DeadLettered++
		}
	}
	t.Kinds = kinds
	for _, id := range r.deadIDs {
		if r.sink.Records(id) == 0 {
			t.MissingDeadLetters++
		}
	}
	return t
}

// settleGoroutines waits up to grace for the goroutine count to come back to before, and
// returns the count, with a dump of every goroutine when it did not.
func settleGoroutines(before int, grace time.Duration) (int, string) {
	deadline := time.Now().Add(grace)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return n, ""
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			return n, b.String()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sinkFailureCounter is a zap core that counts the runtime's log lines saying a dead letter
// could not be written to the sink (each carries the record, so nothing is lost silently).
type sinkFailureCounter struct{ n *atomic.Uint64 }

func (c *sinkFailureCounter) Enabled(l zapcore.Level) bool      { return l >= zapcore.ErrorLevel }
func (c *sinkFailureCounter) With([]zapcore.Field) zapcore.Core { return c }
func (c *sinkFailureCounter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && strings.Contains(e.Message, "dead-letter sink failed") {
		return ce.AddCore(e, c)
	}
	return ce
}
func (c *sinkFailureCounter) Write(zapcore.Entry, []zapcore.Field) error {
	c.n.Add(1)
	return nil
}
func (c *sinkFailureCounter) Sync() error { return nil }

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute), 3)
}
