//go:build race

package tandem

// raceDetector: the race detector slows Go several times over, which changes how often the
// pollers park; tests that count paths loosen their bounds under it.
const raceDetector = true
