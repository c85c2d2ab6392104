//go:build !(linux && amd64) || race

package perp

import "sync/atomic"

// Add adds d to the count atomically: without x86's store order, or under the race
// detector, which cannot see that the cell's P is pinned.
func (c *Count) Add(d int64) { atomic.AddInt64(&c.n, d) }

// Fence is nothing: every Add is sequentially consistent already.
func Fence() {}

// LightFence is nothing (see Fence).
func LightFence() {}
