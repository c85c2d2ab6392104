package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// submitBatch bounds the messages a submitter hands to the runtime in one batch, so the
// first of them does not wait long for the batch's crossing into Rust.
const submitBatch = 32

// SourceConfig configures a Source.
type SourceConfig struct {
	// Stream and Consumer name an existing stream and durable pull consumer.
	Stream, Consumer string
	// MaxInFlight bounds the messages taken and not yet settled (default 512). The server
	// streams up to half as many again ahead of them into the source's buffer, which the
	// source tops up as it takes, so it never waits on a pull's round trip; at Run's end
	// the buffer is given back (Nak).
	MaxInFlight int
	// FetchWait is how long one pull request waits for messages before the source asks
	// again (default and least 1s). Run notices its context's end at once.
	FetchWait time.Duration
	// Submitters is how many goroutines decode and submit the messages taken (default 1).
	// Each hands what has arrived to the runtime as one batch, and one submitter makes the
	// largest batches: raise it when decoding, or Rust handlers registered inline (which
	// run on the submitter's thread), need more than a core per source. With more than one,
	// messages may reach their handlers in any order.
	Submitters int
	// DeadLetters receives the messages that are not events (they cannot reach a route);
	// each is then terminated. Give it the runtime's sink (nil: they are logged and
	// terminated).
	DeadLetters deadletter.Sink
	// OverloadDelay is how long a message refused by a full route (Reject or Shed policy)
	// or with no route waits before JetStream delivers it again (default 1s).
	OverloadDelay time.Duration
	// Logger logs what the Source cannot hand to the runtime (default: none).
	Logger *zap.Logger
}

// SourceStats are a Source's counters.
type SourceStats struct {
	// Fetched counts messages received (taken, or given back from the buffer at the end);
	// the others count what became of them.
	Fetched, Acked, Naked, NakedWithDelay, Terminated, InProgress uint64
	// Undecodable counts messages that were not events (terminated, dead-lettered).
	Undecodable uint64
	// AckErrors counts acknowledgements the server did not take (the message is then
	// redelivered after its AckWait).
	AckErrors uint64
	// InFlight is the number of messages taken and not yet settled.
	InFlight int64
}

// Source feeds a runtime from a JetStream durable pull consumer. Create it with NewSource
// and call Run once. Its methods are safe for concurrent use.
type Source struct {
	rt       *tandem.Runtime
	consumer jetstream.Consumer
	cfg      SourceConfig
	last     uint32        // the consumer's MaxDeliver (0: unbounded)
	ackWait  time.Duration // the consumer's AckWait
	room     chan struct{} // one token per message that may be in flight
	log      *zap.Logger

	mu      sync.Mutex
	running map[*message]time.Time // in flight: when InProgress was last sent

	fetched, acked, naked, nakedDelay, termed, inProgress, undecodable, ackErrors atomic.Uint64
	inFlight                                                                      atomic.Int64
	closed                                                                        atomic.Bool // the runtime refused a submit as closed
}

// NewSource looks up cfg's consumer on js and returns a Source for rt. Errors: the
// consumer's lookup, or a config naming no stream or consumer.
func NewSource(ctx context.Context, rt *tandem.Runtime, js jetstream.JetStream, cfg SourceConfig) (*Source, error) {
	if cfg.Stream == "" || cfg.Consumer == "" {
		return nil, errors.New("tandem: jetstream: SourceConfig needs a Stream and a Consumer")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 512
	}
	cfg.FetchWait = max(cfg.FetchWait, time.Second) // the server's least pull expiry
	if cfg.Submitters <= 0 {
		cfg.Submitters = 1
	}
	if cfg.OverloadDelay <= 0 {
		cfg.OverloadDelay = time.Second
	}
	cons, err := js.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if err != nil {
		return nil, fmt.Errorf("tandem: jetstream: consumer %q of stream %q: %w", cfg.Consumer, cfg.Stream, err)
	}
	info := cons.CachedInfo()
	s := &Source{rt: rt, consumer: cons, cfg: cfg, room: make(chan struct{}, cfg.MaxInFlight),
		running: map[*message]time.Time{}, ackWait: info.Config.AckWait, log: cfg.Logger}
	if info.Config.MaxDeliver > 0 {
		s.last = uint32(info.Config.MaxDeliver)
	}
	if s.ackWait <= 0 {
		s.ackWait = 30 * time.Second // the server's default
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	for range cfg.MaxInFlight {
		s.room <- struct{}{}
	}
	return s, nil
}

// Run pulls and submits messages until ctx ends, then stops pulling, gives back what it
// did not take (Nak), and returns once every message it took is settled (acknowledged,
// nakked or terminated): its events' outcomes, or the runtime's Shutdown, settle them. It
// returns ctx's error, tandem.ErrClosed when the runtime stopped first, or a pull error.
func (s *Source) Run(ctx context.Context) error {
	stop := make(chan struct{})
	var ticking sync.WaitGroup
	ticking.Go(func() { s.keepAlive(stop) })
	// Submitters decode and submit what the pull loop takes. The channel never blocks the
	// loop: it holds as many messages as there is room for.
	taken := make(chan jetstream.Msg, s.cfg.MaxInFlight)
	var submitting sync.WaitGroup
	for range s.cfg.Submitters {
		submitting.Go(func() {
			// One Event takes each message in turn: the runtime keeps none it is given.
			ev := &envelope.Event{}
			for msg := range taken {
				// The message and those that arrived with it go in one batch: one crossing
				// into Rust for all of them, where each would otherwise make its own.
				s.rt.Batch(func(b *tandem.Batch) {
					s.submit(ctx, b, ev, msg)
					for range submitBatch - 1 {
						select {
						case msg, ok := <-taken:
							if !ok {
								return
							}
							s.submit(ctx, b, ev, msg)
						default:
							return
						}
					}
				})
			}
		})
	}
	// The server streams into the iterator's buffer, asking again for half of it once half
	// is taken, so a source never waits on a fetch's round trip; with one fetch at a time
	// it did, a round trip per batch, as long as a hundred handlers' runs.
	iter, err := s.consumer.Messages(jetstream.PullMaxMessages(max(1, s.cfg.MaxInFlight/2)),
		jetstream.PullExpiry(s.cfg.FetchWait))
	defer func() {
		if iter != nil {
			s.nakBuffered(iter)
		}
		close(taken)
		submitting.Wait()
		s.drain()
		close(stop)
		ticking.Wait()
	}()
	if err != nil {
		return fmt.Errorf("tandem: jetstream: pull: %w", err)
	}
	for {
		// Room first: at most MaxInFlight messages are taken and not settled.
		select {
		case <-s.room:
		case <-ctx.Done():
			return ctx.Err()
		}
		if s.closed.Load() {
			s.giveRoom(1)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return tandem.ErrClosed
		}
		msg, err := iter.Next(jetstream.NextContext(ctx))
		if err != nil {
			s.giveRoom(1)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				s.log.Warn("tandem: jetstream: no heartbeat from the server; pulling again", zap.Error(err))
				continue
			}
			return fmt.Errorf("tandem: jetstream: pull: %w", err)
		}
		s.fetched.Add(1)
		taken <- msg
	}
}

// nakBuffered stops the pull and gives back what the server sent and the source did not
// take: a Nak each, so another process takes them at once rather than after AckWait.
func (s *Source) nakBuffered(iter jetstream.MessagesContext) {
	iter.Drain()
	for {
		msg, err := iter.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			return // drained (ErrMsgIteratorClosed), or nothing more within a second
		}
		s.fetched.Add(1)
		if msg.Nak() == nil {
			s.naked.Add(1)
		} else {
			s.ackErrors.Add(1)
		}
	}
}

func (s *Source) giveRoom(n int) {
	for range n {
		s.room <- struct{}{}
	}
}

// drain waits until every message taken is settled.
func (s *Source) drain() {
	for range s.cfg.MaxInFlight {
		<-s.room
	}
	s.giveRoom(s.cfg.MaxInFlight)
}

// keepAlive tells the server that events still running are in progress, at each half of
// the AckWait, so a slow handler does not see its message redelivered under it.
func (s *Source) keepAlive(stop <-chan struct{}) {
	t := time.NewTicker(s.ackWait / 4)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for m, last := range s.running {
				if now.Sub(last) >= s.ackWait/2 {
					s.running[m] = now
					if m.msg.InProgress() == nil {
						s.inProgress.Add(1)
					}
				}
			}
			s.mu.Unlock()
		}
	}
}

// submit hands one message to the runtime, or settles it at once when it cannot go.
func (s *Source) submit(ctx context.Context, b *tandem.Batch, ev *envelope.Event, msg jetstream.Msg) {
	m := &message{s: s, msg: msg}
	s.inFlight.Add(1)
	s.mu.Lock()
	s.running[m] = time.Now()
	s.mu.Unlock()

	if err := cloudevents.DecodeMessageInto(ev, msg.Headers(), msg.Data()); err != nil {
		s.undecodable.Add(1)
		s.deadLetter(ctx, msg, err)
		m.finish(func() error { return msg.TermWithReason("not an event: " + err.Error()) }, &s.termed)
		return
	}
	if meta, err := msg.Metadata(); err == nil {
		ev.Attempt = uint32(min(meta.NumDelivered, 1<<32-1))
	}
	if err := b.SubmitFrom(ctx, ev, m); err != nil {
		var tooLarge *tandem.EventTooLargeError
		switch {
		case errors.Is(err, tandem.ErrShed):
			// Dead-lettered by the runtime already.
			m.finish(func() error { return msg.TermWithReason(string(deadletter.ReasonShed)) }, &s.termed)
		case errors.Is(err, tandem.ErrOverloaded), errors.Is(err, tandem.ErrNoRoute):
			s.log.Warn("tandem: jetstream: event refused; delivered again later", zap.String("event_id", ev.ID), zap.Error(err))
			m.finish(func() error { return msg.NakWithDelay(s.cfg.OverloadDelay) }, &s.nakedDelay)
		case errors.As(err, &tooLarge), errors.Is(err, envelope.ErrInvalidEvent):
			s.undecodable.Add(1)
			s.deadLetter(ctx, msg, err)
			m.finish(func() error { return msg.TermWithReason(err.Error()) }, &s.termed)
		case errors.Is(err, tandem.ErrClosed):
			// The runtime stopped under a running Source: it stops pulling, and the
			// message waits a little, for another process or a later run.
			s.closed.Store(true)
			m.finish(func() error { return msg.NakWithDelay(s.cfg.OverloadDelay) }, &s.nakedDelay)
		default: // ctx ended while the route was full: another process takes it
			m.finish(msg.Nak, &s.naked)
		}
	}
}

// deadLetter records a message that cannot become an event.
func (s *Source) deadLetter(ctx context.Context, msg jetstream.Msg, cause error) {
	rec := &deadletter.Record{
		Reason:   deadletter.ReasonDecode,
		Error:    &envelope.ErrorEnvelope{Code: envelope.CodeDecode, Message: cause.Error(), Runtime: "go", Handler: "jetstream:" + s.cfg.Consumer},
		EventID:  msg.Headers().Get("Nats-Msg-Id"),
		Source:   "nats:" + msg.Subject(),
		Route:    "jetstream:" + s.cfg.Consumer,
		Envelope: msg.Data(),
	}
	if meta, err := msg.Metadata(); err == nil {
		rec.Attempts = uint32(min(meta.NumDelivered, 1<<32-1))
	}
	if s.cfg.DeadLetters == nil {
		s.log.Error("tandem: jetstream: a message is not an event; terminated", zap.String("subject", msg.Subject()), zap.Error(cause))
		return
	}
	if err := s.cfg.DeadLetters.Write(ctx, rec); err != nil {
		s.log.Error("tandem: jetstream: a message is not an event, and its dead letter was not written; terminated",
			zap.String("subject", msg.Subject()), zap.NamedError("cause", cause), zap.Error(err), zap.Binary("body", msg.Data()))
	}
}

// Stats returns a snapshot of the counters.
func (s *Source) Stats() SourceStats {
	return SourceStats{
		Fetched: s.fetched.Load(), Acked: s.acked.Load(), Naked: s.naked.Load(), NakedWithDelay: s.nakedDelay.Load(),
		Terminated: s.termed.Load(), InProgress: s.inProgress.Load(), Undecodable: s.undecodable.Load(),
		AckErrors: s.ackErrors.Load(), InFlight: s.inFlight.Load(),
	}
}

// message is one message taken, on its way through the runtime: the Redelivery the
// runtime settles.
type message struct {
	s    *Source
	msg  jetstream.Msg
	done atomic.Bool
}

// Settled maps a final outcome to the acknowledgement.
func (m *message) Settled(err error) {
	var he *tandem.HandlerError
	switch {
	case err == nil:
		m.finish(m.msg.Ack, &m.s.acked)
	case errors.As(err, &he) && he.DeadLetter != "":
		m.finish(func() error { return m.msg.TermWithReason(string(he.DeadLetter)) }, &m.s.termed)
	default:
		m.finish(m.msg.Nak, &m.s.naked)
	}
}

// Redeliver hands the retry to JetStream.
func (m *message) Redeliver(after time.Duration, _ error) {
	m.finish(func() error { return m.msg.NakWithDelay(after) }, &m.s.nakedDelay)
}

// LastAttempt is the consumer's MaxDeliver.
func (m *message) LastAttempt() uint32 { return m.s.last }

// finish acknowledges the message once, counts it, and gives its room back.
func (m *message) finish(ack func() error, counter *atomic.Uint64) {
	if !m.done.CompareAndSwap(false, true) {
		return
	}
	s := m.s
	s.mu.Lock()
	delete(s.running, m)
	s.mu.Unlock()
	if err := ack(); err != nil {
		s.ackErrors.Add(1)
		s.log.Warn("tandem: jetstream: acknowledgement failed; the server redelivers after AckWait", zap.Error(err))
	} else {
		counter.Add(1)
	}
	s.inFlight.Add(-1)
	s.room <- struct{}{}
}
