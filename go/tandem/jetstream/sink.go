package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	"github.com/tandemrt/tandem/go/tandem/deadletter"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Subject names the subject an event is published to (default: its type); it must be
	// one a stream captures, or the publish fails (retryably: a stream may be added).
	Subject func(ev *tandem.Event) string
	// Mode is the CloudEvents content mode of the messages (default binary: attributes in
	// ce- headers, trace context and correlation among them).
	Mode cloudevents.Mode
	// RetryAfter is the delay a failed publish asks for (default 1s).
	RetryAfter time.Duration
}

// Publisher returns a Go handler that publishes each event routed to it to JetStream and
// acknowledges it once the stream has stored it: route emitted event types to it
// (rt.Handle("order.>", "to-jetstream", jetstream.Publisher(js, cfg))). Nats-Msg-Id is
// the event's idempotency key, or its ID, so that the stream's duplicate window drops an
// event published again (a retry after a lost acknowledgement). An event that does not
// convert to CloudEvents is Term'd (dead-lettered); a publish that fails is a Retry with
// code "publish_failed". Safe for concurrent use.
func Publisher(js jetstream.JetStream, cfg PublisherConfig) tandem.Handler {
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	return tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		h, body, err := cloudevents.EncodeMessage(ev, cfg.Mode)
		if err != nil {
			return tandem.Term(tandem.Errorf(envelope.CodeInvalid, "%v", err))
		}
		subject := ev.Type
		if cfg.Subject != nil {
			subject = cfg.Subject(ev)
		}
		msg := &nats.Msg{Subject: subject, Header: nats.Header(h), Data: body}
		id := ev.IdempotencyKey
		if id == "" {
			id = ev.ID
		}
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
			return tandem.Retry(cfg.RetryAfter, tandem.Errorf("publish_failed", "publish to %q: %v", subject, err))
		}
		return tandem.Ack()
	})
}

// Headers of a dead letter's message, beside Nats-Msg-Id.
const (
	HeaderReason    = "Tandem-Reason"
	HeaderCode      = "Tandem-Error-Code"
	HeaderEventID   = "Tandem-Event-Id"
	HeaderEventType = "Tandem-Event-Type"
	HeaderAttempts  = "Tandem-Attempts"
)

// DeadLetterSink stores each dead letter as one message on Subject, which a stream must
// capture: the record in the dead-letter file format (deadletter.MarshalRecord) as the
// body, the reason, error code, event ID and type and attempts in headers (for filters and
// dashboards). Nats-Msg-Id is the event's source, ID and reason, so a record written
// twice (a Write retried after a lost acknowledgement, or written again by another
// process after the first died before terminating the message) is stored once within the
// stream's duplicate window. `tandem dlq -nats
// URL -stream S` lists, shows and replays them. Safe for concurrent use.
type DeadLetterSink struct {
	JS      jetstream.JetStream
	Subject string
}

// Write publishes r and returns once the stream stored it. Errors: the record's
// (deadletter.ErrInvalidRecord), or the publish's.
func (s *DeadLetterSink) Write(ctx context.Context, r *deadletter.Record) error {
	if s.Subject == "" {
		return errors.New("tandem: jetstream: DeadLetterSink has no Subject")
	}
	body, err := deadletter.MarshalRecord(r)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(s.Subject)
	msg.Data = body
	msg.Header.Set(HeaderReason, string(r.Reason))
	if r.Error != nil {
		msg.Header.Set(HeaderCode, r.Error.Code)
	}
	msg.Header.Set(HeaderEventID, r.EventID)
	msg.Header.Set(HeaderEventType, r.EventType)
	msg.Header.Set(HeaderAttempts, strconv.FormatUint(uint64(r.Attempts), 10))
	id := r.Source + "\x00" + r.EventID + "\x00" + string(r.Reason)
	if _, err := s.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("tandem: jetstream: dead letter to %q: %w", s.Subject, err)
	}
	return nil
}

// ReadDeadLetters reads every dead letter stored in stream, oldest first, with an ordered
// consumer that leaves no state on the server. Errors: the stream's, or a record that
// does not decode (naming its sequence).
func ReadDeadLetters(ctx context.Context, js jetstream.JetStream, stream string) ([]deadletter.Record, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("tandem: jetstream: stream %q: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	var out []deadletter.Record
	for uint64(len(out)) < info.State.Msgs {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return out, fmt.Errorf("tandem: jetstream: reading %q: %w", stream, err)
		}
		rec, err := deadletter.UnmarshalRecord(msg.Data())
		if err != nil {
			meta, _ := msg.Metadata()
			seq := uint64(0)
			if meta != nil {
				seq = meta.Sequence.Stream
			}
			return out, fmt.Errorf("tandem: jetstream: %q sequence %d: %w", stream, seq, err)
		}
		out = append(out, *rec)
		if meta, err := msg.Metadata(); err == nil && meta.NumPending == 0 {
			break
		}
	}
	return out, nil
}
