//go:build linux && amd64 && !race

package perp

import (
	"sync/atomic"
	"syscall"
)

// Add adds d to the count. Its cell's P is pinned (or the overflow lock held): the count
// has no other writer, so a plain load and store do, and x86 keeps the store after every
// earlier one.
func (c *Count) Add(d int64) { c.n += d }

// membarrier(2).
const (
	sysMembarrier                   = 324
	membarrierPrivateExpedited      = 1 << 3
	membarrierRegisterPrivateExpedi = 1 << 4
)

// expedited is whether Fence may use membarrier: registered once, at start.
var expedited = func() bool {
	_, _, errno := syscall.RawSyscall(sysMembarrier, membarrierRegisterPrivateExpedi, 0, 0)
	return errno == 0
}()

// Fence makes every write a P made before it visible to the caller's reads after it, and
// every read a P makes after it see the caller's writes before it: membarrier runs a full
// fence on every thread of the process. Without membarrier, LightFence fences each writer.
func Fence() {
	if expedited {
		for {
			_, _, errno := syscall.Syscall(sysMembarrier, membarrierPrivateExpedited, 0, 0)
			if errno != syscall.EINTR {
				return
			}
		}
	}
}

// LightFence orders the caller's writes before its later reads against a Fence: free
// with membarrier, a locked exchange without.
func LightFence() {
	if !expedited {
		var w atomic.Int32
		w.Store(0) // an exchange: a full fence on x86
	}
}
