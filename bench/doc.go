// Package bench holds tandem's benchmarks against its peers: one scenario per benchmark,
// one sub-benchmark per contender. It is its own module, so the peers it measures never
// enter tandem's go.mod. See README.md for how to run it and what each number means.
package bench
