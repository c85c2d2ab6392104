package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// The contenders' scenarios run the demo library's Rust handlers and, for the pure Go
// contenders, their Go twins below: the same input, the same work, the same reply.
const (
	demoEchoType  = "demo.echo"  // replies with the payload (registered inline)
	demoHashType  = "demo.hash"  // FNV-1a of the payload, folded `rounds` times (a task per event)
	demoSleepType = "demo.sleep" // awaits a `sleep_ms` timer, then acks (inline until its await)

	// hashRounds folds a 1 KiB payload's FNV-1a 20 times: about 20 µs of CPU per event on
	// the 2-vCPU VM of docs/benchmarks.md (~1 ns per byte, in Go and in Rust alike).
	hashRounds      = 20
	hashPayloadSize = 1 << 10

	// goTypePrefix names the Go routes of the go-pool contender: "bench.go.echo" is
	// demo.echo's twin.
	goTypePrefix = "bench.go."
)

// twinWork is the Go twin of a demo Rust handler: it does the same work on a decoded event
// and returns the same reply.
type twinWork func(ev *tandem.Event) []byte

// goTwins maps each demo Rust handler the contenders call to its Go twin.
var goTwins = map[string]twinWork{
	demoEchoType:  twinEcho,
	demoHashType:  twinHash,
	demoSleepType: twinSleep,
}

// twinEcho replies with the payload. DecodeEvent already copied it, as demo.echo copies
// its borrowed payload into the reply.
func twinEcho(ev *tandem.Event) []byte { return ev.Data }

// twinHash is demo.hash: the 64-bit FNV-1a of the payload, folded `rounds` times (default 1),
// as 8 big-endian bytes.
func twinHash(ev *tandem.Event) []byte {
	rounds := 1
	if r, err := strconv.ParseUint(ev.Extensions["rounds"], 10, 32); err == nil && r > 0 {
		rounds = int(r)
	}
	h := uint64(0xcbf29ce484222325)
	for range rounds {
		for _, c := range ev.Data {
			h ^= uint64(c)
			h *= 0x100000001b3
		}
	}
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), h)
}

// twinSleep is demo.sleep: it waits `sleep_ms` milliseconds (default 1), then acks.
func twinSleep(ev *tandem.Event) []byte {
	ms := uint64(1)
	if v, err := strconv.ParseUint(ev.Extensions["sleep_ms"], 10, 32); err == nil {
		ms = v
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return nil
}

// goTwinRoute is the Go route type of the Rust handler type typ, for the go-pool contender.
func goTwinRoute(typ string) string { return goTypePrefix + typ[len("demo."):] }

// twinRouteHandler is the go-pool contender's route handler: the event it is given carries
// the encoded envelope as its data (what every other contender moves across), so the
// handler decodes it, as a Rust handler's runtime does, before doing the work.
func twinRouteHandler(work twinWork) tandem.HandlerFunc {
	return func(_ context.Context, carrier *tandem.Event) tandem.Result {
		ev, err := tandem.DecodeEvent(carrier.Data)
		if err != nil {
			return tandem.Term(tandem.Errorf("decode", "%v", err))
		}
		return tandem.AckReply(work(ev))
	}
}

// contenderEvent is a contender scenario's event: type typ, a payload of size bytes
// (0, 1, 2, ... mod 256) and the given extensions.
func contenderEvent(typ string, size int, ext map[string]string) *tandem.Event {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i)
	}
	return &tandem.Event{ID: "bench-1", Source: "/bench", Type: typ, Extensions: ext, Data: data}
}

// errNoCallback is why the callback contender is skipped: it needs the cgo link mode.
var errNoCallback = errors.New("the callback contender needs cgo (built without cgo or with -tags tandem_purego)")

// callbackCounts is how often the callback contender crossed the boundary: calls from Go
// into Rust, and callbacks from Rust (a tokio worker) into Go.
type callbackCounts struct {
	calls, callbacks uint64
}

// replyLenCheck is the check a benchmark makes on every reply, in place (the rings' reply is
// only readable until it is released): its length.
func replyLenCheck(want int) func(reply []byte) error {
	return func(reply []byte) error {
		if len(reply) != want {
			return fmt.Errorf("reply of %d bytes, want %d", len(reply), want)
		}
		return nil
	}
}

// firstFailure keeps the first error any goroutine reports.
type firstFailure struct {
	mu  sync.Mutex
	err error
}

func (f *firstFailure) set(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstFailure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// osThreadCount is this process's OS thread count (Threads: in /proc/self/status).
func osThreadCount() (int, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("Threads:")); ok {
			return strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("/proc/self/status has no Threads line")
}

// threadPeak records the peak OS thread count while it runs, polling every period.
type threadPeak struct {
	stop chan struct{}
	done chan struct{}
	peak int
	err  error
}

func watchThreadPeak(period time.Duration) *threadPeak {
	s := &threadPeak{stop: make(chan struct{}), done: make(chan struct{})}
	s.peak, s.err = osThreadCount()
	go func() {
		defer close(s.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				n, err := osThreadCount()
				if err != nil {
					s.err = err
					return
				}
				s.peak = max(s.peak, n)
			}
		}
	}()
	return s
}

// finish stops the sampler and returns the peak it saw, including a last sample.
func (s *threadPeak) finish() (int, error) {
	close(s.stop)
	<-s.done
	if s.err != nil {
		return 0, s.err
	}
	n, err := osThreadCount()
	if err != nil {
		return 0, err
	}
	return max(s.peak, n), nil
}

// reapIdleThreads ends idle OS threads of the Go runtime until the process is back to about
// target threads: each round runs a goroutine that locks its thread and exits, which ends
// that thread. Go keeps an idle thread for every goroutine that was ever blocked in a cgo
// call at the same time as the others, so after the direct contender's 10,000 concurrent
// calls it holds hundreds; the benchmarks after it should not inherit them.
func reapIdleThreads(target int) (int, error) {
	n, err := osThreadCount()
	for err == nil && n > target {
		batch := min(n-target, 256)
		var wg sync.WaitGroup
		for range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			}()
		}
		wg.Wait()
		before := n
		if n, err = osThreadCount(); err == nil && n >= before {
			// A goroutine's thread exits only after its deferred calls; give it a moment.
			time.Sleep(time.Millisecond)
			if n, err = osThreadCount(); err == nil && n >= before {
				return n, nil // nothing more to reap
			}
		}
	}
	return n, err
}
