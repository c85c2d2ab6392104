//go:build !cgo || tandem_purego

package bench

import "github.com/tandemrt/tandem/go/tandem"

// callbackRuntime stands in for the callback contender where it cannot exist: it needs cgo
// (a C → Go callback), so in the purego mode and without cgo its sub-benchmarks are skipped.
type callbackRuntime struct{}

func newCallbackRuntime(tandem.Config) (*callbackRuntime, error) { return nil, errNoCallback }

func (*callbackRuntime) call(_, _ []byte) ([]byte, error) { return nil, errNoCallback }

func (*callbackRuntime) counts() callbackCounts { return callbackCounts{} }

func (*callbackRuntime) close() error { return nil }
