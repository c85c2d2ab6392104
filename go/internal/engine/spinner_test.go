package engine

import "testing"

// A poller spins about twice the longest recent gap between arrivals, at most its configured
// window: short after a steady stream of close arrivals, the whole window when arrivals come
// in bursts.
func TestSpinnerFitsTheWindowToTheArrivals(t *testing.T) {
	const us = int64(1000)
	s := spinner{max: 50 * us}
	if w := s.window(); w != 50*us {
		t.Fatalf("before any arrival: window %d ns, want the configured %d", w, 50*us)
	}
	// A steady stream every 5 µs: spin twice that, not the whole window.
	now := int64(1)
	for range 50 {
		now += 5 * us
		s.arrived(now)
	}
	if w := s.window(); w != 10*us {
		t.Fatalf("arrivals every 5 µs: window %d ns, want %d", w, 10*us)
	}
	// Bursts: 8 arrivals 2 µs apart, then a 30 µs pause. The pause sets the window.
	for range 10 {
		for range 8 {
			now += 2 * us
			s.arrived(now)
		}
		now += 30 * us
		s.arrived(now)
	}
	if w := s.window(); w != 50*us {
		t.Fatalf("bursts with 30 µs pauses: window %d ns, want the whole %d", w, 50*us)
	}
	// Woken after a park: the whole window again, whatever was learnt.
	for range 100 {
		now += 1 * us
		s.arrived(now)
	}
	if w := s.window(); w >= 10*us {
		t.Fatalf("arrivals every 1 µs: window %d ns, want a short one", w)
	}
	s.woken()
	if w := s.window(); w != 50*us {
		t.Fatalf("woken: window %d ns, want the whole %d", w, 50*us)
	}
}

// A poller configured not to spin never does.
func TestSpinnerWithoutAWindowNeverSpins(t *testing.T) {
	s := spinner{max: 0}
	for now := int64(1); now < 100; now++ {
		s.arrived(now)
	}
	if w := s.window(); w != 0 {
		t.Fatalf("window %d ns with spinning off", w)
	}
}
