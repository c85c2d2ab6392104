//go:build !cgo || tandem_purego

package bench

import (
	"time"

	"github.com/tandemrt/tandem/go/tandem"
)

// nativeRuntime stands in for the direct and callback contenders and the wake probe where
// they cannot exist: they call bench-only exports of the library through cgo (and callback
// needs a C → Go callback), so in the purego mode and without cgo they are skipped.
type nativeRuntime struct{}

func newNativeRuntime(tandem.Config) (*nativeRuntime, error) { return nil, errNeedsCgo }

func (*nativeRuntime) invoke(_, _ []byte) ([]byte, error) { return nil, errNeedsCgo }

func (*nativeRuntime) spawnCall(_, _ []byte) ([]byte, error) { return nil, errNeedsCgo }

func (*nativeRuntime) wakeProbe(int, time.Duration) ([]time.Duration, error) {
	return nil, errNeedsCgo
}

func (*nativeRuntime) counts() nativeCounts { return nativeCounts{} }

func (*nativeRuntime) close() error { return nil }
