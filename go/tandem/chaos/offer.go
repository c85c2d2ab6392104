package chaos

// The open loop: events offered at their due times, and their answers counted.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/policy"
)

// offer runs the open loop: each event is submitted at its due time, on its own goroutine,
// whatever became of the ones before it.
func (r *runner) offer(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.o.Seed, 1))
	next := r.o.Profile.arrivals(rng)
	start := r.started
	for seq := uint64(0); len(r.weights) > 0; seq++ {
		off := next()
		if off >= r.o.Duration {
			return
		}
		due := start.Add(off)
		// Sleeping for less than a timer's resolution costs more than it saves: such an
		// event goes now, and its latency still counts from its due time.
		if d := time.Until(due); d > 500*time.Microsecond {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		kind := r.pick(rng)
		tr := &r.o.Scenario.Traffic[kind]
		ev := tr.Event(rng)
		ev.ID = strconv.FormatUint(seq, 10)
		if ev.Source == "" {
			ev.Source = "/chaos"
		}
		if ev.SpecVersion == "" {
			ev.SpecVersion = "1.0"
		}
		if tr.ReplyIsData {
			ev.Data = []byte(ev.ID)
		}
		if tr.Fault != FaultNone {
			ev.Extensions = maps.Clone(ev.Extensions)
			if ev.Extensions == nil {
				ev.Extensions = map[string]string{}
			}
			ev.Extensions[FaultExtension] = string(tr.Fault)
		}
		cancelAfter := time.Duration(-1)
		if tr.Cancel > 0 && rng.Float64() < tr.Cancel {
			cancelAfter = time.Duration(rng.Int64N(int64(max(tr.CancelWithin, 1))))
		}
		r.pending.Add(1)
		r.waiting.Add(1)
		go r.fire(ev, kind, due, cancelAfter)
	}
}

func (r *runner) pick(rng *rand.Rand) int {
	x := rng.Float64() * r.total
	for i, w := range r.weights {
		if x < w {
			return i
		}
	}
	return len(r.weights) - 1
}

// fire offers one event and counts its answer.
func (r *runner) fire(ev tandem.Event, kind int, due time.Time, cancelAfter time.Duration) {
	defer r.pending.Done()
	tr, k := &r.o.Scenario.Traffic[kind], &r.kinds[kind]
	k.offered.Add(1)
	defer r.waiting.Add(-1)
	rt := r.cur.Load()
	ctx := context.Background()
	if cancelAfter >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cancelAfter)
		defer cancel()
	}
	r.offered.Add(1)
	r.secOffered.Add(1)
	if tr.Call {
		reply, err := rt.Call(ctx, &ev)
		if err == nil {
			if tr.ReplyIsData && !bytes.Equal(reply.Data(), ev.Data) {
				r.misdelivered.Add(1)
			}
			reply.Release()
		}
		// ErrAbandoned: accepted, and the caller stopped waiting; the context's error
		// alone: refused while waiting for room.
		r.answer(ev.ID, kind, err, errors.Is(err, tandem.ErrAbandoned), due)
		return
	}
	receipt, err := rt.Submit(ctx, &ev)
	if err != nil {
		r.refused(ev.ID, k, err, due)
		return
	}
	select {
	case <-receipt.Done():
	case <-r.giveUp:
		r.unsettled.Add(1)
		return
	}
	err = receipt.Wait(context.Background())
	if again := receipt.Wait(context.Background()); again != err {
		r.twice.Add(1)
	}
	r.answer(ev.ID, kind, err, false, due)
}

// refused counts a Submit's refusal: a dead letter when shed, else rejected at submit.
func (r *runner) refused(id string, k *kindCounts, err error, due time.Time) {
	if errors.Is(err, tandem.ErrShed) {
		r.dead.Add(1)
		k.dead.Add(1)
		r.noteDead(id)
		r.completed(k, due)
		return
	}
	r.rejected.Add(1)
	k.rejected.Add(1)
	r.secRejected.Add(1)
	r.observe(k, due)
	if !isRefusal(err) {
		r.noteUnclear(err)
	}
}

// answer counts a final answer (a Receipt's, or a Call's: which may also be a refusal).
// abandoned says a Call's context ended after its event was accepted.
func (r *runner) answer(id string, kind int, err error, abandoned bool, due time.Time) {
	k := &r.kinds[kind]
	var he *tandem.HandlerError
	switch {
	case err == nil:
		r.acked.Add(1)
		k.acked.Add(1)
		r.completed(k, due)
	case abandoned:
		r.abandoned.Add(1)
		k.abandoned.Add(1)
		r.mu.Lock()
		r.left = append(r.left, leftCall{id, kind})
		r.mu.Unlock()
		r.observe(k, due)
	case errors.As(err, &he):
		switch {
		case he.DeadLetter != "":
			r.dead.Add(1)
			k.dead.Add(1)
			r.noteDead(id)
		case he.Code() == envelope.CodeCancelled || he.Code() == envelope.CodeAbandoned:
			r.cancelled.Add(1)
			k.cancelled.Add(1)
		default:
			r.noteUnclear(err)
			return
		}
		r.completed(k, due)
	default:
		r.refused(id, k, err, due)
	}
}

func (r *runner) noteDead(id string) {
	r.mu.Lock()
	r.deadIDs = append(r.deadIDs, id)
	r.mu.Unlock()
}

func (r *runner) noteUnclear(err error) {
	r.unclear.Add(1)
	r.mu.Lock()
	if r.example == "" {
		r.example = fmt.Sprintf("%T: %v", err, err)
	}
	r.mu.Unlock()
}

// isRefusal says err is one of the documented reasons Submit or Call refuse an event.
func isRefusal(err error) bool {
	var tooLarge *tandem.EventTooLargeError
	return errors.Is(err, tandem.ErrClosed) || errors.Is(err, tandem.ErrOverloaded) ||
		errors.Is(err, tandem.ErrNoRoute) || errors.As(err, &tooLarge) || errors.Is(err, envelope.ErrInvalidEvent) ||
		errors.Is(err, policy.ErrCircuitOpen) || errors.Is(err, policy.ErrRateLimited) || isContextErr(err)
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (r *runner) completed(k *kindCounts, due time.Time) {
	r.secCompleted.Add(1)
	r.observe(k, due)
}

// observe records an answer's latency from its due time.
func (r *runner) observe(k *kindCounts, due time.Time) {
	v := int64(time.Since(due))
	r.histMu.Lock()
	_ = r.hist.RecordValue(v)
	_ = r.all.RecordValue(v)
	_ = k.hist.RecordValue(v)
	r.histMu.Unlock()
}

// kindCounts are the outcomes of one Traffic kind's events.
type kindCounts struct {
	offered, acked, dead, rejected, cancelled, abandoned atomic.Uint64
	hist                                                 *hdrhistogram.Histogram // guarded by runner.histMu
}

// leftCall is a Call abandoned by its caller: its event's ID and Traffic kind.
type leftCall struct {
	id   string
	kind int
}
