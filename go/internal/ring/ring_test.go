package ring

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// testRing is a ring in Go memory, laid out and initialised as the Rust runtime does it
// (a 192-byte header, then 64-byte cells, cell i's seq = i), aligned to a cache line.
type testRing struct {
	Ring
	mem []uint64 // keeps the backing array alive
}

func newTestRing(t testing.TB, capacity uint32) *testRing {
	t.Helper()
	if capacity == 0 || capacity&(capacity-1) != 0 {
		t.Fatalf("capacity %d is not a power of two", capacity)
	}
	size := abi.RingHeaderSize + uintptr(capacity)*abi.DescSize
	mem := make([]uint64, (size+abi.DescSize)/8)
	base := unsafe.Pointer(unsafe.SliceData(mem))
	if pad := uintptr(base) % 64; pad != 0 {
		base = unsafe.Add(base, 64-pad)
	}
	r := &testRing{Ring: New(base, unsafe.Add(base, abi.RingHeaderSize), capacity), mem: mem}
	for i := range uint64(capacity) {
		atomic.StoreUint64(field64(r.cell(i), abi.DescSeq), i)
	}
	return r
}

func (r *testRing) push(token uint64) bool {
	return r.Push(uint32(token>>32), uint32(token), ^uint32(token), 0, token)
}

// pop takes one descriptor and checks its fields are the ones push wrote for its token.
func (r *testRing) pop(t testing.TB) (uint64, bool) {
	var d Desc
	if !r.Pop(&d) {
		return 0, false
	}
	if d.Kind != uint32(d.Token>>32) || d.Slot != uint32(d.Token) || d.Len != ^uint32(d.Token) {
		t.Errorf("torn descriptor: %+v", d)
	}
	return d.Token, true
}

func TestManyProducersOneConsumerEveryTokenOnceInProducerOrder(t *testing.T) {
	const producers, perProducer = 8, 10_000
	r := newTestRing(t, 64)
	var wg sync.WaitGroup
	for p := range uint64(producers) {
		wg.Go(func() {
			for i := range uint64(perProducer) {
				for !r.push(p<<32 | i) {
					runtime.Gosched()
				}
			}
		})
	}
	var next [producers]uint64
	for seen := 0; seen < producers*perProducer; {
		tok, ok := r.pop(t)
		if !ok {
			runtime.Gosched()
			continue
		}
		p, i := tok>>32, tok&0xffff_ffff
		if p >= producers || i != next[p] {
			t.Fatalf("token %#x: producer %d expected %d (duplicate, lost or out of order)", tok, p, next[p])
		}
		next[p]++
		seen++
	}
	wg.Wait()
	if _, ok := r.pop(t); ok || !r.Empty() || r.Len() != 0 {
		t.Fatalf("ring not empty after every token arrived: Len=%d", r.Len())
	}
}

func TestFullRingRefusesAndKeepsItsContents(t *testing.T) {
	r := newTestRing(t, 4)
	for tok := range uint64(4) {
		if !r.push(tok) {
			t.Fatalf("push %d refused with room left", tok)
		}
	}
	if r.push(99) {
		t.Fatal("a full ring accepted a push")
	}
	if r.Len() != 4 {
		t.Fatalf("Len = %d, want 4", r.Len())
	}
	if tok, _ := r.pop(t); tok != 0 {
		t.Fatalf("popped %d, want 0", tok)
	}
	if !r.push(4) {
		t.Fatal("a freed cell was not reusable")
	}
	if r.push(99) {
		t.Fatal("a full ring accepted a push after a lap")
	}
	for want := uint64(1); want <= 4; want++ {
		if tok, ok := r.pop(t); !ok || tok != want {
			t.Fatalf("popped %d, %v; want %d (an unconsumed cell was overwritten?)", tok, ok, want)
		}
	}
}

func TestLenAndEmptyAcrossManyLaps(t *testing.T) {
	const capacity = 8
	r := newTestRing(t, capacity)
	if !r.Empty() || r.Len() != 0 {
		t.Fatal("a new ring is not empty")
	}
	var in, out uint64
	for lap := range uint64(100) {
		for range lap%capacity + 1 {
			if in-out == capacity {
				if r.push(in) {
					t.Fatal("pushed into a full ring")
				}
				continue
			}
			if !r.push(in) {
				t.Fatalf("push refused at depth %d", in-out)
			}
			in++
		}
		for range lap*5%capacity + 1 {
			if tok, ok := r.pop(t); ok {
				if tok != out {
					t.Fatalf("popped %d, want %d", tok, out)
				}
				out++
			}
			if r.Len() != in-out || r.Empty() != (in == out) {
				t.Fatalf("Len=%d Empty=%v with %d queued", r.Len(), r.Empty(), in-out)
			}
		}
	}
}

// event stands in for the eventfd: a counter a parked consumer sleeps on.
type event struct {
	mu    sync.Mutex
	cond  *sync.Cond
	count uint64
}

func (e *event) signal() {
	e.mu.Lock()
	e.count++
	e.mu.Unlock()
	e.cond.Signal()
}

func TestParkedConsumerIsAlwaysWoken(t *testing.T) {
	const producers, perProducer = 4, 5_000
	r := newTestRing(t, 16)
	ev := &event{}
	ev.cond = sync.NewCond(&ev.mu)
	var signals atomic.Uint64
	var wg sync.WaitGroup
	for p := range uint64(producers) {
		wg.Go(func() {
			for i := range uint64(perProducer) {
				for !r.push(p<<32 | i) {
					runtime.Gosched()
				}
				if r.TakeWakeup() {
					signals.Add(1)
					ev.signal()
				}
				if i%32 == p { // pause now and then so the consumer finds the ring empty
					time.Sleep(10 * time.Microsecond)
				}
			}
		})
	}

	// A watchdog: a parked consumer with work in the ring and no signal pending for seconds
	// means the producer that published it did not see the parked flag — a lost wake-up.
	var asleep atomic.Bool
	stop := make(chan struct{})
	lost := make(chan uint64, 1)
	go func() {
		var since time.Time
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			ev.mu.Lock()
			stuck := asleep.Load() && ev.count == 0 && !r.Empty()
			ev.mu.Unlock()
			switch {
			case !stuck:
				since = time.Time{}
			case since.IsZero():
				since = time.Now()
			case time.Since(since) > 5*time.Second:
				lost <- r.Len()
				ev.signal() // let the consumer finish so the test reports instead of hanging
				return
			}
		}
	}()

	var next [producers]uint64
	var parks, attempts uint64
	for seen := 0; seen < producers*perProducer; {
		if tok, ok := r.pop(t); ok {
			p, i := tok>>32, tok&0xffff_ffff
			if i != next[p] {
				t.Fatalf("producer %d: got %d, want %d", p, i, next[p])
			}
			next[p]++
			seen++
			continue
		}
		attempts++
		if !r.PreparePark() {
			continue
		}
		parks++
		ev.mu.Lock()
		asleep.Store(true)
		for ev.count == 0 {
			ev.cond.Wait()
		}
		ev.count = 0
		asleep.Store(false)
		ev.mu.Unlock()
		r.Unpark()
	}
	close(stop)
	wg.Wait()
	select {
	case n := <-lost:
		t.Fatalf("lost wake-up: consumer parked for 5s with %d descriptors in the ring and no signal", n)
	default:
	}
	if parks == 0 {
		t.Fatal("the consumer never parked: the handshake was not exercised")
	}
	if s := signals.Load(); s > attempts {
		t.Fatalf("%d signals for %d park attempts: a raised flag was taken twice", s, attempts)
	}
}

func BenchmarkPushPop(b *testing.B) {
	r := newTestRing(b, 1024)
	var d Desc
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if !r.Push(1, uint32(i), 64, 0, uint64(i)) {
			b.Fatal("push refused")
		}
		if !r.Pop(&d) || d.Token != uint64(i) {
			b.Fatal("pop lost the descriptor")
		}
	}
}
