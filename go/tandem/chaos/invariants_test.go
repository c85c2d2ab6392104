package chaos_test

import (
	"strings"
	"testing"

	"github.com/tandemrt/tandem/go/tandem/chaos"
)

// balanced is a tally of a run where everything adds up.
func balanced() chaos.Tally {
	return chaos.Tally{
		Offered: 100, Acked: 80, DeadLettered: 10, Rejected: 5, Cancelled: 3, Abandoned: 2,
		Runtime: chaos.RuntimeCounts{Submitted: 95, DeadLettered: 10, Cancelled: 4},
		Sink:    chaos.SinkCounts{Writes: 10, Stored: 8, Failed: 2}, SinkFailuresLogged: 2,
		GoroutinesBefore: 5, GoroutinesAfter: 5,
	}
}

func TestCheckPassesABalancedTally(t *testing.T) {
	invs := chaos.Check(balanced())
	if err := chaos.Broken(invs); err != nil {
		t.Fatalf("a balanced tally is reported broken: %v\n%s", err, chaos.Table(invs))
	}
	if len(invs) != 9 {
		t.Fatalf("%d invariants checked, want 9", len(invs))
	}
}

// Each hand-built defect breaks exactly the invariant that names it, and the error says
// which.
func TestCheckNamesTheBrokenInvariant(t *testing.T) {
	cases := []struct {
		name   string
		breaks func(*chaos.Tally)
		want   string
	}{
		{"a lost receipt", func(t *chaos.Tally) { t.Acked-- }, chaos.InvAccounted},
		{"an event the runtime never counted", func(t *chaos.Tally) { t.Runtime.Submitted-- }, chaos.InvRuntime},
		{"a receipt never settled", func(t *chaos.Tally) { t.Unsettled = 1 }, chaos.InvSettled},
		{"a receipt settled twice", func(t *chaos.Tally) { t.SettledTwice = 1 }, chaos.InvSettled},
		{"another event's reply", func(t *chaos.Tally) { t.Misdelivered = 1 }, chaos.InvSettled},
		{"an undocumented error", func(t *chaos.Tally) { t.Unclear, t.UnclearExample = 1, "*errors.errorString: boom" }, chaos.InvClear},
		{"a request slot Rust still holds", func(t *chaos.Tally) { t.Runtime.RequestsHeld = 1 }, chaos.InvBuffers},
		{"a reply slot still lent", func(t *chaos.Tally) { t.Runtime.RepliesLent = 1 }, chaos.InvBuffers},
		{"a reply Go still holds", func(t *chaos.Tally) { t.Runtime.RepliesHeld = 1 }, chaos.InvBuffers},
		{"an event still in flight", func(t *chaos.Tally) { t.Runtime.InFlight = 1 }, chaos.InvBuffers},
		{"a leaked goroutine", func(t *chaos.Tally) { t.GoroutinesAfter++ }, chaos.InvGoroutines},
		{"a Go ownership violation", func(t *chaos.Tally) { t.Runtime.Violations = 1 }, chaos.InvOwnership},
		{"a Rust ownership violation", func(t *chaos.Tally) { t.Runtime.RustViolations = 1 }, chaos.InvOwnership},
		{"a dead letter the sink never saw", func(t *chaos.Tally) { t.Sink.Writes--; t.Sink.Stored-- }, chaos.InvDeadLetters},
		{"a sink failure not logged", func(t *chaos.Tally) { t.SinkFailuresLogged-- }, chaos.InvDeadLetters},
		{"a dead letter answered but not received", func(t *chaos.Tally) { t.MissingDeadLetters = 1 }, chaos.InvDeadLetters},
		{"a cancellation the runtime missed", func(t *chaos.Tally) { t.Runtime.Cancelled = 2 }, chaos.InvCancelled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tally := balanced()
			c.breaks(&tally)
			invs := chaos.Check(tally)
			var broken []string
			for _, inv := range invs {
				if !inv.Holds {
					broken = append(broken, inv.Name)
				}
			}
			if len(broken) != 1 || broken[0] != c.want {
				t.Fatalf("broken: %q, want only %q\n%s", broken, c.want, chaos.Table(invs))
			}
			err := chaos.Broken(invs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Broken = %v, want it to name %q", err, c.want)
			}
			if !strings.Contains(chaos.Table(invs), "BROKEN  "+c.want) {
				t.Fatalf("the table does not mark %q broken:\n%s", c.want, chaos.Table(invs))
			}
		})
	}
}

// With follow-ups the runtime counts more events than the harness offered: its counts are
// lower bounds, never less.
func TestCheckFollowUpsAreLowerBounds(t *testing.T) {
	tally := balanced()
	tally.FollowUps = true
	tally.Runtime.Submitted += 7
	if err := chaos.Broken(chaos.Check(tally)); err != nil {
		t.Fatalf("follow-ups reported broken: %v", err)
	}
	tally.Runtime.Submitted = 90
	if err := chaos.Broken(chaos.Check(tally)); err == nil || !strings.Contains(err.Error(), chaos.InvRuntime) {
		t.Fatalf("fewer events than the harness offered not reported: %v", err)
	}
}
