package engine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGateClosedRefusesAndCountsNothing(t *testing.T) {
	var g gate
	g.init()
	in := g.enter()
	if in == nil {
		t.Fatal("an open gate refused a submitter")
	}
	g.leave(in)
	g.close()
	if g.enter() != nil {
		t.Fatal("a closed gate let a submitter in")
	}
	for i := range g.counts {
		if n := g.counts[i].n.Load(); n != 0 {
			t.Fatalf("count %d is %d after a refusal: a refused submitter must count nothing", i, n)
		}
	}
}

func TestGateCloseWaitsForTheSubmitterInside(t *testing.T) {
	var g gate
	g.init()
	in := g.enter()
	closed := make(chan struct{})
	go func() {
		g.close()
		close(closed)
	}()
	// close sets the door first: no one new gets in while it waits.
	for !g.closed.Load() {
		time.Sleep(time.Millisecond)
	}
	if g.enter() != nil {
		t.Fatal("a submitter got in while close waited")
	}
	select {
	case <-closed:
		t.Fatal("close returned with a submitter inside")
	case <-time.After(20 * time.Millisecond):
	}
	g.leave(in)
	<-closed
}

// Submitters on every P enter and leave while the gate closes: once close returns, none
// is inside and none gets in (the race detector checks the hand-off of inside's writes).
func TestGateCloseRacesSubmitters(t *testing.T) {
	for range 20 {
		var g gate
		g.init()
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
					in := g.enter()
					if in == nil {
						continue
					}
					if afterClose.Load() {
						t.Error("a submitter got in after close returned")
					}
					inside.Add(1)
					inside.Add(-1)
					g.leave(in)
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
