package engine

import (
	"sync"

	"github.com/tandemrt/tandem/go/internal/abi"
)

// Stats.FFICalls counts every call into the library the process made. A crossing, one call
// per event at idle, is counted once already, in its runtime's crossings (with the
// completions it settled, one atomic add for both), rather than a second time in a counter
// every core of the process would share: FFICalls adds the crossings of every runtime, live
// or freed, to the library's count of its other calls.
var kicks struct {
	mu      sync.Mutex
	live    map[*pair]struct{}
	retired uint64 // the crossings of freed runtimes, and crossings that failed
}

// countKicks adds a runtime's crossings to the process's calls until retireKicks.
func countKicks(p *pair) {
	kicks.mu.Lock()
	if kicks.live == nil {
		kicks.live = map[*pair]struct{}{}
	}
	kicks.live[p] = struct{}{}
	kicks.mu.Unlock()
}

// retireKicks keeps a freed runtime's crossings in the count.
func retireKicks(p *pair) {
	kicks.mu.Lock()
	if _, ok := kicks.live[p]; ok {
		delete(kicks.live, p)
		n, _ := p.read()
		kicks.retired += n
	}
	kicks.mu.Unlock()
}

// failedCrossing counts a kick or a run the library refused (the runtime was stopping):
// rare.
func failedCrossing() {
	kicks.mu.Lock()
	kicks.retired++
	kicks.mu.Unlock()
}

// ffiCalls is every call into the library so far: the library's count of the calls that are
// not kicks, after the kicks (so a reading counts at least every call made before it).
func ffiCalls() uint64 {
	kicks.mu.Lock()
	n := kicks.retired
	for p := range kicks.live {
		c, _ := p.read()
		n += c
	}
	kicks.mu.Unlock()
	return n + abi.Calls()
}
