package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	tjs "github.com/tandemrt/tandem/go/tandem/jetstream"
)

// BenchmarkJetStream is messages per second from a JetStream stream to a no-op handler and
// back to an acknowledgement, from a server embedded in this process on loopback:
//   - tandem: workers tandem runtimes, each a jetstream.Source on one durable consumer,
//     feeding the Rust demo.noop (each message decoded from CloudEvents' binary mode,
//     encoded into a request slot, crossed to Rust and back, acknowledged);
//   - bare: workers nats.go pull loops on the same kind of consumer, acknowledging each
//     message after a no-op in Go.
//
// The timer covers the consumption of b.N messages published beforehand; ns/op is the
// cost per message, and tandem's overhead is its ns/op over bare's in the same run.
func BenchmarkJetStream(b *testing.B) {
	for _, workers := range []int{1, 3} {
		b.Run(fmt.Sprintf("tandem/workers=%d", workers), func(b *testing.B) { benchJetStream(b, workers, true) })
		b.Run(fmt.Sprintf("bare/workers=%d", workers), func(b *testing.B) { benchJetStream(b, workers, false) })
	}
}

func benchJetStream(b *testing.B, workers int, viaTandem bool) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server did not start")
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, "BENCH", jetstream.ConsumerConfig{Durable: "workers",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096, AckWait: time.Minute}); err != nil {
		b.Fatal(err)
	}
	h, body, err := cloudevents.EncodeMessage(&tandem.Event{ID: "1", Source: "/bench", Type: noopInlineType, Data: make([]byte, 64)}, cloudevents.Binary)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: "bench.in", Header: nats.Header(h), Data: body}); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var acked atomic.Int64
	var wg sync.WaitGroup
	var runtimes []*tandem.Runtime
	var sources []*tjs.Source
	if viaTandem {
		for range workers {
			rt, err := tandem.New(benchConfig(b))
			if err != nil {
				b.Fatal(err)
			}
			if err := rt.Start(); err != nil {
				b.Fatal(err)
			}
			runtimes = append(runtimes, rt)
			// The Source's defaults: 512 messages in flight, and up to 256 more streamed
			// ahead into its buffer (the bare loop fetches 256 at a time).
			src, err := tjs.NewSource(ctx, rt, js, tjs.SourceConfig{Stream: "BENCH", Consumer: "workers"})
			if err != nil {
				b.Fatal(err)
			}
			sources = append(sources, src)
		}
	}
	b.ResetTimer()
	start := time.Now()
	for i := range workers {
		wg.Go(func() {
			if viaTandem {
				_ = sources[i].Run(runCtx)
				return
			}
			cons, err := js.Consumer(ctx, "BENCH", "workers")
			if err != nil {
				b.Error(err)
				return
			}
			for runCtx.Err() == nil {
				batch, err := cons.Fetch(256, jetstream.FetchMaxWait(50*time.Millisecond))
				if err != nil {
					continue
				}
				for msg := range batch.Messages() {
					if msg.Ack() == nil {
						acked.Add(1)
					}
				}
			}
		})
	}
	done := func() int64 {
		if !viaTandem {
			return acked.Load()
		}
		var n int64
		for _, s := range sources {
			n += int64(s.Stats().Acked)
		}
		return n
	}
	for done() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	stop()
	wg.Wait()
	for _, rt := range runtimes {
		_ = rt.Shutdown(context.Background())
	}
}
