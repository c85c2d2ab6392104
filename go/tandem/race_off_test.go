//go:build !race

package tandem

// raceDetector: see race_on_test.go.
const raceDetector = false
