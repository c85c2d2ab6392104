package engine

import "testing"

// A poller spins only while arrivals come closer together than its configured window, and
// then only about as long as the gap it has been seeing.
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
	// Arrivals every 200 µs, sparser than the window: no spin at all.
	for range 50 {
		now += 200 * us
		s.arrived(now)
	}
	if w := s.window(); w != 0 {
		t.Fatalf("arrivals every 200 µs: window %d ns, want 0", w)
	}
	// A long idle spell counts as a gap of at most twice the window: a few close arrivals
	// afterwards bring the spin back.
	now += 10_000_000 * us
	s.arrived(now)
	for i := range 40 {
		now += 5 * us
		s.arrived(now)
		if s.window() > 0 {
			t.Logf("spinning again after %d close arrivals", i+1)
			s.woken()
			if w := s.window(); w != 50*us {
				t.Fatalf("woken: window %d ns, want the whole %d again", w, 50*us)
			}
			return
		}
	}
	t.Fatalf("40 arrivals 5 µs apart after an idle spell, still no spin (average gap %d ns)", s.avg)
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
