package main

// tandem worker: run the bundled handlers against a JetStream stream, as one of N processes
// sharing a durable consumer (docs/scale-out.md).
//
//	tandem worker -nats URL -stream S -consumer C [-create] [-ack-wait D] [-dlq-subject SUBJ]
//	              [-results-subject SUBJ] [-max-inflight N] [-http ADDR] [-grace D]

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tandemrt/tandem/go/tandem"
	tjs "github.com/tandemrt/tandem/go/tandem/jetstream"
)

// The worker's own event types: a work item is upper-cased by the Rust demo.upper handler,
// and its result published, once, to -results-subject.
const (
	typeWorkItem = "work.item"
	typeWorkDone = "work.done"
)

const workerUsage = `usage: tandem worker -nats URL -stream S -consumer C [-create] [-ack-wait D] [-dlq-subject SUBJ]
                     [-results-subject SUBJ] [-max-inflight N] [-http ADDR] [-grace D]`

func workerMain(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := worker(ctx, args, stdout, stderr)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "tandem worker:", err)
		fmt.Fprintln(stderr, workerUsage)
		return 2
	default:
		fmt.Fprintln(stderr, "tandem worker:", err)
		return 1
	}
}

// worker runs until ctx ends, then drains: it stops fetching, lets every event in flight
// reach its outcome (or, past -grace, settles it as cancelled, which naks it), and
// returns once every message it took is acknowledged, nakked or terminated.
func worker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats", nats.DefaultURL, "the NATS server")
	streamName := fs.String("stream", "", "the stream of events")
	consumerName := fs.String("consumer", "", "the durable pull consumer the workers share")
	create := fs.Bool("create", false, "create the stream (subjects S.>, lower case), the consumer and the dead-letter stream if missing")
	dlqSubject := fs.String("dlq-subject", "", "where dead letters go (default tandem.dlq.S, lower case); a stream must capture it (-create makes S_DLQ)")
	resultsSubject := fs.String("results-subject", "", "publish each work.item's result here, once (Nats-Msg-Id); empty: no work.item route")
	maxInFlight := fs.Int("max-inflight", 512, "messages fetched and not yet settled")
	httpAddr := fs.String("http", "", "serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9090)")
	grace := fs.Duration("grace", 10*time.Second, "how long a drain waits for events in flight before cancelling them")
	ackWait := fs.Duration("ack-wait", 30*time.Second, "with -create: the consumer's AckWait, after which a message a dead worker held is delivered again")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error()}
	}
	switch {
	case fs.NArg() != 0:
		return usagef("unexpected arguments %q", fs.Args())
	case *streamName == "" || *consumerName == "":
		return usagef("-stream and -consumer are required")
	case *maxInFlight <= 0:
		return usagef("-max-inflight must be positive")
	}
	if *dlqSubject == "" {
		*dlqSubject = "tandem.dlq." + strings.ToLower(*streamName)
	}

	nc, err := nats.Connect(*url, nats.Name("tandem worker"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if *create {
		if err := createStreams(ctx, js, *streamName, *consumerName, *dlqSubject, *resultsSubject, *ackWait); err != nil {
			return err
		}
	}

	obs, err := newObservability(false, "")
	if err != nil {
		return err
	}
	defer obs.close()
	sink := &tjs.DeadLetterSink{JS: js, Subject: *dlqSubject}
	// The runtime's and the source's log lines go where the command's errors go.
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(stderr), zap.InfoLevel))
	defer log.Sync()
	rt, err := tandem.New(tandem.Config{DeadLetters: sink, MeterProvider: obs.meters, Logger: log, MaxInFlight: *maxInFlight})
	if err != nil {
		return err
	}
	if *resultsSubject != "" {
		if err := routeWork(rt, js, *resultsSubject); err != nil {
			return err
		}
	}
	if err := rt.Start(); err != nil {
		return err
	}
	obs.serve(rt, *httpAddr, stderr)

	src, err := tjs.NewSource(ctx, rt, js, tjs.SourceConfig{Stream: *streamName, Consumer: *consumerName,
		MaxInFlight: *maxInFlight, DeadLetters: sink, Logger: log})
	if err != nil {
		_ = rt.Shutdown(context.Background())
		return err
	}
	fmt.Fprintf(stdout, "tandem worker: consuming %s/%s from %s; dead letters to %s\n", *streamName, *consumerName, *url, *dlqSubject)

	// Run returns when ctx ends (SIGTERM) once every message it took is settled; the grace
	// bounds that wait: past it, Shutdown cancels what still runs, and those messages are
	// nakked for another worker.
	runErr := make(chan error, 1)
	go func() { runErr <- src.Run(ctx) }()
	var runErrValue error
	select {
	case runErrValue = <-runErr:
	case <-ctx.Done():
		select {
		case runErrValue = <-runErr:
		case <-time.After(*grace):
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	shutErr := rt.Shutdown(shutdown)
	if runErrValue == nil {
		runErrValue = <-runErr
	}
	st := src.Stats()
	fmt.Fprintf(stdout, "tandem worker: drained: %d fetched, %d acked, %d nakked with delay (retries), %d nakked, %d terminated (%d not events), %d in progress notices, %d acknowledgement errors\n",
		st.Fetched, st.Acked, st.NakedWithDelay, st.Naked, st.Terminated, st.Undecodable, st.InProgress, st.AckErrors)
	if runErrValue != nil && !errors.Is(runErrValue, context.Canceled) {
		return runErrValue
	}
	if shutErr != nil && !errors.Is(shutErr, context.DeadlineExceeded) {
		return shutErr
	}
	return nil
}

// routeWork routes work.item to a Go handler that calls the Rust demo.upper and then calls
// work.done with the result, which a Publisher stores once on subject (Nats-Msg-Id: the
// item's ID). A Call, not an Emit: the item is acknowledged only once its result is in the
// stream, so a worker killed in between leaves the item to be delivered again (and the
// duplicate window drops the second result), where an emitted follow-up would die with
// the process after the item's ack.
func routeWork(rt *tandem.Runtime, js jetstream.JetStream, subject string) error {
	if err := rt.Handle(typeWorkItem, "work", tandem.HandlerFunc(func(ctx context.Context, ev *tandem.Event) tandem.Result {
		reply, err := tandem.Call(ctx, &tandem.Event{ID: ev.ID + ".upper", Source: "/worker", Type: "demo.upper", Data: ev.Data})
		if err != nil {
			return tandem.Retry(0, err)
		}
		done := &tandem.Event{ID: ev.ID + ".done", Source: "/worker", Type: typeWorkDone,
			IdempotencyKey: ev.ID, Data: append([]byte(nil), reply.Data()...)}
		reply.Release()
		stored, err := tandem.Call(ctx, done)
		if err != nil {
			return tandem.Retry(0, err)
		}
		stored.Release()
		return tandem.Ack()
	})); err != nil {
		return err
	}
	return rt.Handle(typeWorkDone, "results", tjs.Publisher(js, tjs.PublisherConfig{
		Subject: func(*tandem.Event) string { return subject }}))
}

// createStreams makes the stream of events, its consumer, and the streams of dead letters
// and results, where missing.
func createStreams(ctx context.Context, js jetstream.JetStream, stream, consumer, dlqSubject, resultsSubject string, ackWait time.Duration) error {
	streams := []jetstream.StreamConfig{
		{Name: stream, Subjects: []string{strings.ToLower(stream) + ".>"}},
		{Name: stream + "_DLQ", Subjects: []string{dlqSubject}, Duplicates: 2 * time.Minute},
	}
	if resultsSubject != "" {
		streams = append(streams, jetstream.StreamConfig{Name: stream + "_RESULTS", Subjects: []string{resultsSubject}, Duplicates: 10 * time.Minute})
	}
	for _, cfg := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	_, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: consumer,
		AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 5, AckWait: ackWait, MaxAckPending: 4096})
	if err != nil {
		return fmt.Errorf("consumer %s: %w", consumer, err)
	}
	return nil
}
