package engine

import (
	"sync"
	"sync/atomic"
)

// Counting costs an atomic read-modify-write, some 5 ns on a small VM: a dozen of them per
// event is a tenth of a round trip. Two counters bumped at the same moment share one word
// here, so one atomic add bumps both: the word's high half counts up to foldAt and is then
// folded into a 64-bit total; its low half is a gauge (tally) or a second counter (pair).
//
// A fold moves foldAt from the word to the total under mu, and readers read both under mu,
// so a reading is exact at every instant. Adds never take mu: between the add that carries
// a half past foldAt and its fold, the half still has foldAt increments of room.

// foldAt is where a half of a word is folded into its total.
const foldAt = 1 << 31

// tally counts events in and out: pending (the low half: accepted and not yet final) and
// completed (the high half, plus what was folded out). Submitted is their sum, so intake and
// settlement cost one atomic add each. Safe for concurrent use.
type tally struct {
	word atomic.Uint64
	mu   sync.Mutex
	done uint64 // completions folded out of word; under mu
}

// in counts an event in: pending. It returns how many were counted in so far (those still
// pending and those completed), less a multiple of foldAt.
func (t *tally) in() uint64 {
	w := t.word.Add(1)
	return w>>32 + uint64(uint32(w))
}

// undo takes back an in for an event refused after all (it was never submitted).
func (t *tally) undo() { t.word.Add(^uint64(0)) }

// out counts an event out: no longer pending, completed. It returns what is still pending.
func (t *tally) out() uint32 {
	w := t.word.Add(1<<32 - 1)
	if w>>32 >= foldAt {
		t.fold()
	}
	return uint32(w)
}

// settledAtOnce counts an event that was completed at its intake (never pending).
func (t *tally) settledAtOnce() {
	if t.word.Add(1<<32)>>32 >= foldAt {
		t.fold()
	}
}

func (t *tally) fold() {
	t.mu.Lock()
	if t.word.Load()>>32 >= foldAt {
		t.word.Add(^(uint64(foldAt)<<32 - 1)) // minus foldAt in the high half
		t.done += foldAt
	}
	t.mu.Unlock()
}

// pending is the events accepted and not yet final.
func (t *tally) pending() int64 { return int64(uint32(t.word.Load())) }

// read returns the events submitted and completed so far, and those pending.
func (t *tally) read() (submitted, completed uint64, pending int64) {
	t.mu.Lock()
	w, done := t.word.Load(), t.done
	t.mu.Unlock()
	completed = done + w>>32
	pending = int64(uint32(w))
	return completed + uint64(pending), completed, pending
}

// pair is two counters bumped together: one atomic add for both. Safe for concurrent use.
type pair struct {
	word   atomic.Uint64
	mu     sync.Mutex
	hi, lo uint64 // folded out of word; under mu
}

// add adds a to the first counter and b to the second; each at most foldAt.
func (p *pair) add(a, b uint32) {
	w := p.word.Add(uint64(a)<<32 | uint64(b))
	if w>>32 >= foldAt || uint32(w) >= foldAt {
		p.fold()
	}
}

func (p *pair) fold() {
	p.mu.Lock()
	w := p.word.Load()
	var take uint64
	if w>>32 >= foldAt {
		take |= uint64(foldAt) << 32
		p.hi += foldAt
	}
	if uint32(w) >= foldAt {
		take |= foldAt
		p.lo += foldAt
	}
	p.word.Add(^take + 1) // minus take
	p.mu.Unlock()
}

// read returns both counters.
func (p *pair) read() (a, b uint64) {
	p.mu.Lock()
	w := p.word.Load()
	a, b = p.hi+w>>32, p.lo+uint64(uint32(w))
	p.mu.Unlock()
	return a, b
}
