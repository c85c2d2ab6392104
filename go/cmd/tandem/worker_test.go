package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tandemrt/tandem/go/internal/natsembed"
	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
)

// syncBuffer is a bytes.Buffer a goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A worker consumes a stream with the bundled handlers: each work item's result is stored
// once (a duplicate item is one result), the terminal failures (a Term and a message that
// is not an event) are exactly the dead-letter stream, which `tandem dlq -nats` lists; a
// cancelled context (SIGTERM) drains it with nothing left unacknowledged.
func TestWorkerConsumesAStreamAndDrains(t *testing.T) {
	srv, err := natsembed.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	js := srv.JS
	ctx := context.Background()
	if err := createStreams(ctx, js, "WORK", "workers", "tandem.dlq.work", "results.work", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	pub := func(ev *tandem.Event) {
		h, body, err := cloudevents.EncodeMessage(ev, cloudevents.Structured)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "work.in", Header: nats.Header(h), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	const items = 300
	for i := range items {
		pub(&tandem.Event{ID: fmt.Sprint("item-", i), Source: "/test", Type: typeWorkItem, Data: []byte(fmt.Sprint("item ", i))})
	}
	pub(&tandem.Event{ID: "item-7", Source: "/test", Type: typeWorkItem, Data: []byte("item 7")}) // a duplicate
	pub(&tandem.Event{ID: "bad", Source: "/test", Type: "demo.fail", Data: []byte("term")})
	if _, err := js.Publish(ctx, "work.in", []byte("not an event")); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- worker(runCtx, []string{"-nats", srv.URL(), "-stream", "WORK", "-consumer", "workers",
			"-results-subject", "results.work", "-max-inflight", "64"}, &out, &errOut)
	}()
	cons, err := js.Consumer(ctx, "WORK", "workers")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ci, err := cons.Info(ctx)
		if err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Consumer >= items+3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not finish the stream: %+v, %v\n%s%s", ci, err, out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("worker: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "tandem worker: drained: ") {
		t.Fatalf("no drain summary in %q", out.String())
	}
	results, err := js.Stream(ctx, "WORK_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != items {
		t.Fatalf("%d results, want %d: one per item, the duplicate dropped", info.State.Msgs, items)
	}
	first, err := results.GetMsg(ctx, 1)
	if err != nil || !strings.HasPrefix(string(first.Data), "ITEM ") {
		t.Fatalf("the first result %q, %v: want the item upper-cased by the Rust handler", first.Data, err)
	}

	var list, listErr bytes.Buffer
	if code := dlqMain([]string{"list", "-nats", srv.URL(), "-stream", "WORK_DLQ"}, &list, &listErr); code != 0 {
		t.Fatalf("dlq list: %d %s", code, listErr.String())
	}
	if !strings.Contains(list.String(), "2 dead letters") || !strings.Contains(list.String(), "term") || !strings.Contains(list.String(), "decode") {
		t.Fatalf("dlq list:\n%s", list.String())
	}
	if code := dlqMain([]string{"list", "-nats", srv.URL()}, &list, &listErr); code != 2 {
		t.Fatalf("-nats without -stream: exit %d, want 2", code)
	}
}

// A worker's command line is checked before anything connects.
func TestWorkerUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-stream", "S"}, {"-stream", "S", "-consumer", "C", "-max-inflight", "0"}, {"-stream", "S", "-consumer", "C", "extra"}} {
		var out, errOut bytes.Buffer
		if code := workerMain(args, &out, &errOut); code != 2 {
			t.Errorf("worker %q: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}

// `tandem run -jetstream` runs work items through an embedded nats-server and three
// workers, one stopped mid-flight, and its checks hold.
func TestRunJetStream(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-jetstream", "-events", "3000", "-http", ""}, &out); err != nil {
		t.Fatalf("run -jetstream: %v\n%s", err, out.String())
	}
	for _, want := range []string{"every item's result stored exactly once (2997 = 3000 items - 3 terminal)", "exactly the terminal failures (3)"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the report lacks %q:\n%s", want, out.String())
		}
	}
}
