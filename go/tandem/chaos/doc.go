// Package chaos throws traffic and failures at a tandem Runtime and checks, at the end of
// every run, that nothing was lost, leaked or left unanswered: every event the harness
// offered is acknowledged, dead-lettered, refused at submit, cancelled at shutdown or
// abandoned by its caller (each term counted), every receipt settles once, no buffer is
// outstanding on either side, no goroutine outlives the runtime, no ownership violation is
// counted, and every dead letter reached the sink.
//
// A run is open-loop: a Profile says when each event is due (steady, sine, square bursts,
// steps, or a recorded arrival trace), the harness submits it then whatever happened to the
// events before it, and measures its latency from the due time, so a stall shows up as
// latency instead of hiding as a lower offered rate. A Scenario registers the routes on each
// Runtime the run starts and says what traffic goes to them; Builtin is tandem's own, with
// every fault switchable (Faults); a user points the harness at their own routes with a
// Scenario of theirs and wraps their Go handlers with Inject; any Traffic kind may have its
// caller's context end at Submit or at Call (Traffic.Cancel). The run's Options add the
// faults around any scenario: a dead-letter sink that fails or is slow (FaultySink), and
// Shutdown mid-flight followed by a new Runtime.
//
// Run returns a Report: per-second samples (offered and completed rates, in flight,
// retries, dead letters, p99 latency), the Tally of outcomes and the Invariants checked over
// it. Report.WriteDir writes the timeline as SVG and the invariant table; docs/chaos.md
// describes both. The checker is Check, over a plain Tally, so a user can test their own
// accounting with it.
//
// Run is safe to call from one goroutine at a time per process: it counts the process's
// goroutines before and after to find leaks, which a concurrent run would confuse.
package chaos
