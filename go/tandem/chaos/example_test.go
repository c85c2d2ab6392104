package chaos_test

import (
	"fmt"
	"strings"

	"github.com/tandemrt/tandem/go/tandem/chaos"
)

// Check over a tally that lost one receipt: the invariant it breaks is named, with its terms.
func ExampleCheck() {
	t := chaos.Tally{
		Offered: 10, Acked: 6, DeadLettered: 2, Rejected: 1, // one event unaccounted for
		Runtime:          chaos.RuntimeCounts{Submitted: 9, DeadLettered: 2},
		Sink:             chaos.SinkCounts{Writes: 2, Stored: 2},
		GoroutinesBefore: 4, GoroutinesAfter: 4,
	}
	fmt.Println(chaos.Broken(chaos.Check(t)))
	// Output:
	// invariant broken: every event accounted for: submitted 10 = acknowledged 6 + dead-lettered 2 + rejected at submit 1 + cancelled at shutdown 0 + abandoned by the caller 0 (= 9)
}

// An arrival trace: offsets from its start, as durations or seconds.
func ExampleReadTrace() {
	offsets, err := chaos.ReadTrace(strings.NewReader("# a burst of three, then a straggler\n0\n0\n0.001\n250ms\n"))
	if err != nil {
		panic(err)
	}
	fmt.Println(offsets)
	// Output:
	// [0s 0s 1ms 250ms]
}
