package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	tjs "github.com/tandemrt/tandem/go/tandem/jetstream"
)

// TestScaleOutSurvivesAKilledWorker is the multi-process test of docs/scale-out.md: a
// nats-server process, three `tandem worker` processes sharing one consumer, and
// $TANDEM_SCALEOUT_MESSAGES work items (one in a thousand failing for good); one worker is
// killed with SIGKILL mid-flight and started again. Every item's effect (its result,
// published with the item's ID as Nats-Msg-Id) is stored exactly once, nothing is left
// unacknowledged, and the dead-letter stream holds exactly the terminal failures.
// `./build.sh scaleout` runs it with 100,000 messages; `./build.sh test` with 10,000. It
// needs the binaries: $TANDEM_BIN and $NATS_SERVER_BIN.
func TestScaleOutSurvivesAKilledWorker(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TANDEM_SCALEOUT_MESSAGES"))
	tandemBin, natsBin := os.Getenv("TANDEM_BIN"), os.Getenv("NATS_SERVER_BIN")
	if n <= 0 || tandemBin == "" || natsBin == "" {
		t.Skip("set TANDEM_SCALEOUT_MESSAGES, TANDEM_BIN and NATS_SERVER_BIN (./build.sh scaleout)")
	}
	dir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	server := exec.Command(natsBin, "-js", "-sd", filepath.Join(dir, "js"), "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	server.Stdout, server.Stderr = os.Stderr, os.Stderr
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = server.Process.Signal(syscall.SIGTERM); _ = server.Wait() }()

	var nc *nats.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if nc, err = nats.Connect(url); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A dead worker's messages come back after AckWait: short, so the test does not wait.
	if err := createStreams(ctx, js, "WORK", "workers", "tandem.dlq.work", "results.work", 3*time.Second); err != nil {
		t.Fatal(err)
	}

	terminal := 0
	start := time.Now()
	for i := range n {
		ev := &tandem.Event{ID: fmt.Sprint("item-", i), Source: "/scaleout", Type: typeWorkItem, Data: []byte(fmt.Sprint("item ", i))}
		if i%1000 == 999 {
			ev.Type, ev.Data = "demo.fail", []byte("term")
			terminal++
		}
		h, body, err := cloudevents.EncodeMessage(ev, cloudevents.Binary)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: "work.in", Header: nats.Header(h), Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("publishing did not complete")
	}
	t.Logf("published %d messages in %v", n, time.Since(start))

	startWorker := func(i int) *exec.Cmd {
		cmd := exec.Command(tandemBin, "worker", "-nats", url, "-stream", "WORK", "-consumer", "workers",
			"-results-subject", "results.work", "-max-inflight", "256", "-grace", "20s")
		log, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d-%d.log", i, time.Now().UnixNano())))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	workers := []*exec.Cmd{startWorker(0), startWorker(1), startWorker(2)}
	results, err := js.Stream(ctx, "WORK_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	stored := func() uint64 {
		info, err := results.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	want := uint64(n - terminal)
	cons, err := js.Consumer(ctx, "WORK", "workers")
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Duration(n/100+60) * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				ci, _ := cons.Info(ctx)
				logs, _ := filepath.Glob(filepath.Join(dir, "worker-*.log"))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", filepath.Base(l), lastBytes(string(b), 3000))
				}
				t.Fatalf("timed out waiting for %s (%d of %d results stored; consumer %+v)", what, stored(), want, ci)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("a third of the results", func() bool { return stored() >= want/3 })
	if err := workers[1].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = workers[1].Wait()
	t.Logf("killed worker 1 at %d of %d results", stored(), want)
	workers[1] = startWorker(3)

	wait("every message acknowledged", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && stored() >= want
	})
	t.Logf("%d results in %v", stored(), time.Since(start))
	for i, w := range workers {
		_ = w.Process.Signal(syscall.SIGTERM)
		if err := w.Wait(); err != nil {
			t.Errorf("worker %d exited: %v", i, err)
		}
	}
	if got := stored(); got != want {
		t.Fatalf("%d results stored, want exactly %d: one per item", got, want)
	}
	letters, err := tjs.ReadDeadLetters(ctx, js, "WORK_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != terminal {
		t.Fatalf("%d dead letters, want exactly the %d terminal failures", len(letters), terminal)
	}
	for _, l := range letters {
		if l.EventType != "demo.fail" || l.Reason != "term" {
			t.Fatalf("a dead letter of %s (%s): want only the demo.fail terms", l.EventType, l.Reason)
		}
	}
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
