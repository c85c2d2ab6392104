package bench

import (
	"bufio"
	"context"
	"math"
	"strings"
	"testing"
)

// TestGoalsQuick runs the goals once, tiny, and checks what the report relies on: every
// latency target of the crossing is there, each with a finite value or "not measured" and a reason,
// never met without a measurement; every row renders; the benchmark-format lines parse.
// It checks the structure, not the figures, which a quick run on a shared machine cannot
// vouch for.
func TestGoalsQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen runtimes")
	}
	g, err := RunGoals(context.Background(), GoalsConfig{Quick: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Rounds) != 1 || !g.Quick {
		t.Fatalf("%d rounds (quick %v), want the one of a quick run", len(g.Rounds), g.Quick)
	}

	want := []string{"idle-inline-p50", "idle-inline-p99", "idle-task-wakes", "idle-task-p50",
		"serial-p50", "saturation", "inflight-vs-direct", "inflight-vs-callback", "idle-cpu"}
	for _, rate := range []string{"1%", "10%", "25%", "50%", "1k", "10k", "100k", "300k"} {
		want = append(want, "open@"+rate+"-p99-vs-direct", "open@"+rate+"-p99-vs-go-direct")
	}
	got := map[string]GoalTarget{}
	goals := map[int]bool{}
	for _, tg := range g.Targets {
		if _, dup := got[tg.ID]; dup {
			t.Errorf("target %s twice", tg.ID)
		}
		got[tg.ID] = tg
		goals[tg.Goal] = true
	}
	for _, id := range want {
		if _, ok := got[id]; !ok {
			t.Errorf("no target %s", id)
		}
	}
	for n := 1; n <= 5; n++ {
		if !goals[n] {
			t.Errorf("no target of goal %d", n)
		}
	}

	md := g.Markdown()
	for _, tg := range g.Targets {
		switch tg.Status {
		case NotMeasured:
			if tg.Reason == "" {
				t.Errorf("%s: not measured, with no reason", tg.ID)
			}
			if len(tg.Value.Rounds) != 0 {
				t.Errorf("%s: not measured, with values %v", tg.ID, tg.Value.Rounds)
			}
		case Met, NotMet:
			if len(tg.Value.Rounds) != len(g.Rounds) {
				t.Errorf("%s: %d values for %d rounds", tg.ID, len(tg.Value.Rounds), len(g.Rounds))
			}
			for _, v := range append(tg.Value.Rounds, tg.Value.Median, tg.Value.Min, tg.Value.Max) {
				if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
					t.Errorf("%s: value %v", tg.ID, v)
				}
			}
			met := tg.Value.Median <= tg.Bound
			if !tg.AtMost {
				met = tg.Value.Median >= tg.Bound
			}
			if met != (tg.Status == Met) {
				t.Errorf("%s: median %v against bound %s, verdict %s", tg.ID, tg.Value.Median, tg.BoundString(), tg.Status)
			}
		default:
			t.Errorf("%s: status %d", tg.ID, tg.Status)
		}
		if !strings.Contains(md, "| "+tg.ID+": ") {
			t.Errorf("the markdown has no row for %s", tg.ID)
		}
	}
	for _, f := range g.Figures {
		if math.IsNaN(f.Value.Median) || math.IsInf(f.Value.Median, 0) {
			t.Errorf("figure %s %s: %v", f.Name, f.Unit, f.Value.Median)
		}
		if !strings.Contains(md, "| "+f.Name+" | "+f.Unit+" |") {
			t.Errorf("the markdown has no row for figure %s %s", f.Name, f.Unit)
		}
	}
	if strings.Contains(md, "NaN") || strings.Contains(md, "Inf") {
		t.Errorf("the markdown shows NaN or Inf:\n%s", md)
	}

	// Without cgo the direct and callback contenders and the wake probe cannot run: their
	// targets must say so, and no other target may be missing a measurement.
	for _, tg := range g.Targets {
		if tg.Status != NotMeasured {
			continue
		}
		if len(g.Skipped) == 0 {
			t.Errorf("%s not measured, though no contender was skipped: %s", tg.ID, tg.Reason)
		}
	}

	var lines strings.Builder
	if err := g.WriteBenchFormat(&lines); err != nil {
		t.Fatal(err)
	}
	benchLines := 0
	sc := bufio.NewScanner(strings.NewReader(lines.String()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		benchLines++
		if len(f) < 4 || len(f)%2 != 0 || f[1] != "1" || !strings.HasPrefix(f[0], "BenchmarkGoal/") {
			t.Errorf("not a benchmark line: %q", sc.Text())
		}
	}
	if benchLines == 0 {
		t.Error("no benchmark lines")
	}
	t.Logf("\n%s", g.Table())
}

// A target's ratio is taken within each round and its verdict follows the median of those
// ratios; a target whose contender was skipped is not measured, whatever rings did.
func TestGoalTargetsFromRounds(t *testing.T) {
	g := &goalRun{cfg: GoalsConfig{}.withDefaults(), skipped: map[string]string{goalCallback: "needs cgo"}}
	ringsP50 := []float64{100, 300, 200}
	// Ratios 1, 1, 4 in the rounds: median 1, met; the medians' ratio, 200/100, would miss.
	directP50 := []float64{100, 300, 50}
	for i := range ringsP50 {
		g.rounds = append(g.rounds, map[figureKey]float64{})
		g.record("serial/rings", "p50-ns", ringsP50[i])
		g.record("serial/direct", "p50-ns", directP50[i])
		g.record("idle-inline/rings", "p50-ns", 2*ringsP50[i])
		g.record("idle-inline/direct", "p50-ns", []float64{150, 600, 100}[i])
		g.record("inflight/rings", "events/s", 1000)
		g.record("idle-cpu/rings", "cpu-pct", []float64{0.05, 0.2, 0.08}[i])
	}
	got := map[string]GoalTarget{}
	for _, tg := range g.targets() {
		got[tg.ID] = tg
	}
	serial := got["serial-p50"]
	if serial.Status != Met || serial.Value.Median != 1 || serial.Value.Min != 1 || serial.Value.Max != 4 {
		t.Errorf("serial-p50: %s, median %v (%v–%v), want met at 1 (1–4)", serial.Status, serial.Value.Median, serial.Value.Min, serial.Value.Max)
	}
	// The idle target holds rings' idle round trip to direct's back-to-back one; its reference
	// is direct's own idle round trip over the same: ratios 1.5, 2, 2.
	idle := got["idle-inline-p50"]
	if idle.Value.Median != 2 || idle.Reference.Median != 2 || idle.Reference.Min != 1.5 || idle.Reference.Max != 2 {
		t.Errorf("idle-inline-p50: %v, reference %v (%v–%v), want 2 and 2 (1.5–2)", idle.Value.Median,
			idle.Reference.Median, idle.Reference.Min, idle.Reference.Max)
	}
	if want := "direct's own idle p50 / its serial p50: 2.00× (1.50–2.00)"; idle.Reason != want {
		t.Errorf("idle-inline-p50 says %q, want %q", idle.Reason, want)
	}
	if s := got["serial-p50"]; len(s.Reference.Rounds) != 0 || s.Reason != "" {
		t.Errorf("serial-p50 has a reference (%v, %q): only a target over another kind of figure has", s.Reference, s.Reason)
	}
	if cpu := got["idle-cpu"]; cpu.Status != Met || cpu.Value.Median != 0.08 {
		t.Errorf("idle-cpu: %s at %v, want met at 0.08", cpu.Status, cpu.Value.Median)
	}
	if cb := got["inflight-vs-callback"]; cb.Status != NotMeasured || !strings.Contains(cb.Reason, "needs cgo") {
		t.Errorf("inflight-vs-callback: %s (%q), want not measured because callback was skipped", cb.Status, cb.Reason)
	}
	if d := got["inflight-vs-direct"]; d.Status != NotMeasured || d.Reason == "" {
		t.Errorf("inflight-vs-direct: %s (%q), want not measured with a reason", d.Status, d.Reason)
	}
}
