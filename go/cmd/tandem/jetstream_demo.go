package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tandemrt/tandem/go/internal/natsembed"
	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	tjs "github.com/tandemrt/tandem/go/tandem/jetstream"
)

// runJetStream is `tandem run -jetstream`: an embedded nats-server with JetStream, a stream
// of work items (one in a thousand failing for good), and three workers sharing one durable
// consumer, as three processes would (docs/scale-out.md). One worker stops mid-flight with
// no grace, its events cancelled and its messages nakked to the others, and starts again.
// The report checks that every item's result is stored exactly once and that the
// dead-letter stream holds exactly the terminal failures.
func runJetStream(ctx context.Context, events int, out io.Writer) error {
	dir, err := os.MkdirTemp("", "tandem-jetstream-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(dir)
	if err != nil {
		return err
	}
	defer srv.Close()
	url, js := srv.URL(), srv.JS
	if err := createStreams(ctx, js, "WORK", "workers", "tandem.dlq.work", "results.work", 2*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(out, "jetstream  embedded nats-server %s at %s\n", srv.Version(), url)

	start := time.Now()
	terminal := 0
	for i := range events {
		ev := &tandem.Event{ID: fmt.Sprint("item-", i), Source: "/demo", Type: typeWorkItem, Data: fmt.Appendf(nil, "item %d", i)}
		if i%1000 == 999 {
			ev.Type, ev.Data = "demo.fail", []byte("term")
			terminal++
		}
		h, body, err := cloudevents.EncodeMessage(ev, cloudevents.Binary)
		if err != nil {
			return err
		}
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: "work.in", Header: nats.Header(h), Data: body}); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return errors.New("publishing the work items did not complete")
	}
	fmt.Fprintf(out, "published  %d work items to stream WORK in %v (%d of them demo.fail, terminal)\n", events, time.Since(start).Round(time.Millisecond), terminal)

	type running struct {
		stop context.CancelFunc
		done chan error
	}
	var mu sync.Mutex
	startWorker := func(grace string) running {
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- worker(wctx, []string{"-nats", url, "-stream", "WORK", "-consumer", "workers",
				"-results-subject", "results.work", "-max-inflight", "256", "-grace", grace}, io.Discard, io.Discard)
		}()
		return running{stop, done}
	}
	results, err := js.Stream(ctx, "WORK_RESULTS")
	if err != nil {
		return err
	}
	stored := func() uint64 {
		info, err := results.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	want := uint64(events - terminal)
	waitFor := func(what string, cond func() bool) error {
		deadline := time.Now().Add(time.Duration(events/200+60) * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				return fmt.Errorf("timed out waiting for %s (%d of %d results stored)", what, stored(), want)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
		return nil
	}

	work := time.Now()
	workers := []running{startWorker("10s"), startWorker("0s"), startWorker("10s")}
	if err := waitFor("a third of the results", func() bool { return stored() >= want/3 }); err != nil {
		return err
	}
	at := stored()
	mu.Lock()
	workers[1].stop() // no grace: its events are cancelled and their messages nakked
	err = <-workers[1].done
	workers[1] = startWorker("10s")
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("the stopped worker: %w", err)
	}
	fmt.Fprintf(out, "workers    3 sharing consumer workers; worker 2 stopped with no grace at %d of %d results, then started again\n", at, want)

	cons, err := js.Consumer(ctx, "WORK", "workers")
	if err != nil {
		return err
	}
	if err := waitFor("every message settled", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && stored() >= want
	}); err != nil {
		return err
	}
	took := time.Since(work)
	for _, w := range workers {
		w.stop()
		if err := <-w.done; err != nil {
			return fmt.Errorf("a worker: %w", err)
		}
	}
	letters, err := tjs.ReadDeadLetters(ctx, js, "WORK_DLQ")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "results    %d stored in %v (%.0f items/s): each item's upper-cased payload, once\n",
		stored(), took.Round(time.Millisecond), float64(events)/took.Seconds())
	fmt.Fprintf(out, "dlq        %d dead letters in stream WORK_DLQ (tandem dlq list -nats URL -stream WORK_DLQ)\n", len(letters))
	fmt.Fprintln(out, "checks")
	ok := stored() == want && len(letters) == terminal
	fmt.Fprintf(out, "  %s every item's result stored exactly once (%d = %d items - %d terminal)\n", mark(stored() == want), stored(), events, terminal)
	fmt.Fprintf(out, "  %s the dead-letter stream holds exactly the terminal failures (%d)\n", mark(len(letters) == terminal), terminal)
	if !ok {
		return errors.New("a check failed")
	}
	return nil
}

func mark(ok bool) string {
	if ok {
		return "ok  "
	}
	return "FAIL"
}
