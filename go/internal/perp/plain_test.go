//go:build linux && amd64 && !race

package perp

import "testing"

// Where membarrier is refused (an old kernel, a seccomp filter), each writer fences itself,
// and no side misses the other.
func TestLightFenceWithoutMembarrier(t *testing.T) {
	if !expedited {
		t.Log("membarrier is not available here: the suite runs without it throughout")
	}
	defer func(was bool) { expedited = was }(expedited)
	expedited = false
	bothMissing(t)
}
