package engine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/internal/perp"
)

func TestGateClosedRefusesAndCountsNothing(t *testing.T) {
	var g gate
	g.init(newLedger())
	if !g.enter() {
		t.Fatal("an open gate refused a submitter")
	}
	g.leave()
	g.close()
	if g.enter() {
		t.Fatal("a closed gate let a submitter in")
	}
	in, out := perp.Balance(g.counts,
		func(c *ledger) *perp.Count { return &c.gateIn }, func(c *ledger) *perp.Count { return &c.gateOut })
	if in != 1 || out != 1 {
		t.Fatalf("counted %d in and %d out after one submitter and a refusal: a refused submitter must count nothing", in, out)
	}
}

func TestGateCloseWaitsForTheSubmitterInside(t *testing.T) {
	var g gate
	g.init(newLedger())
	if !g.enter() {
		t.Fatal("an open gate refused a submitter")
	}
	closed := make(chan struct{})
	go func() {
		g.close()
		close(closed)
	}()
	// close sets the door first: no one new gets in while it waits.
	for !g.closed.Load() {
		time.Sleep(time.Millisecond)
	}
	if g.enter() {
		t.Fatal("a submitter got in while close waited")
	}
	select {
	case <-closed:
		t.Fatal("close returned with a submitter inside")
	case <-time.After(20 * time.Millisecond):
	}
	g.leave()
	<-closed
}

// Submitters on every P enter and leave while the gate closes: once close returns, none
// is inside and none gets in (the race detector checks the hand-off of inside's writes).
func TestGateCloseRacesSubmitters(t *testing.T) {
	for range 20 {
		var g gate
		g.init(newLedger())
		var inside atomic.Int64
		var afterClose atomic.Bool
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if !g.enter() {
						continue
					}
					if afterClose.Load() {
						t.Error("a submitter got in after close returned")
					}
					inside.Add(1)
					inside.Add(-1)
					g.leave()
				}
			}()
		}
		time.Sleep(time.Millisecond)
		g.close()
		afterClose.Store(true)
		if n := inside.Load(); n != 0 {
			t.Fatalf("%d submitters inside after close returned", n)
		}
		close(stop)
		wg.Wait()
	}
}
