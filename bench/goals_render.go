package bench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Markdown is the report's "## Goals" section: the goal table, one row per target, then the
// raw figures with their medians and spreads.
func (g Goals) Markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("## Goals\n\n")
	w("The targets of tandem's crossing, measured in %d interleaved round(s): every round runs every\n", len(g.Rounds))
	w("measurement for every contender, in the reverse order of the round before. A ratio is tandem's\n")
	w("(`rings`) figure over the contender's in the same round; the table gives its median over the\n")
	w("rounds with the min–max spread, and a target is *met* when the median satisfies the bound.\n")
	w("A target whose contender could not run in this build is *not measured*, never met.\n")
	w("Spin window: %s. Load average (1 min): %s.\n\n", g.Spin, g.loadSummary())
	if g.Quick {
		w("**Quick run**: one round of tiny measurements, which checks the program; its figures are not\n")
		w("the goals' verdict.\n\n")
	}
	w("| goal | target | bound | measured (median, min–max) | verdict | rounds | load avg before / during |\n")
	w("|---:|---|---:|---:|---|---:|---:|\n")
	before, during := g.loadMedians()
	for _, t := range g.Targets {
		verdict := t.Status.String()
		measured := "—"
		if t.Status != NotMeasured {
			measured = fmt.Sprintf("%s (%s)", formatGoalValue(t.Value.Median, t.Unit), t.spreadString())
			if t.Status == Met {
				verdict = "**met**"
			}
		}
		what := t.What
		if t.Reason != "" {
			what += " (" + t.Reason + ")"
		}
		w("| %d | %s: %s | %s | %s | %s | %d | %.2f / %.2f |\n", t.Goal, t.ID, mdEscape(what), t.BoundString(),
			measured, verdict, len(t.Value.Rounds), before, during)
	}
	w("\n%s\n\n", g.verdictSummary())
	if len(g.Skipped) > 0 {
		w("Skipped contenders: ")
		var s []string
		for _, name := range slices.Sorted(maps.Keys(g.Skipped)) {
			s = append(s, fmt.Sprintf("%s (%s)", name, mdEscape(g.Skipped[name])))
		}
		w("%s.\n\n", strings.Join(s, "; "))
	}
	w("### Goal figures\n\n")
	w("Every figure behind the table, median over the rounds (min–max). Latencies are per op;\n")
	w("`open@X` is the open loop at X (a share of rings' saturation in the same round, or an\n")
	w("absolute rate per second), each op timed from its intended start.\n\n")
	w("| figure | unit | median | min | max |\n|---|---|---:|---:|---:|\n")
	for _, f := range g.Figures {
		w("| %s | %s | %s | %s | %s |\n", f.Name, f.Unit, formatFigure(f.Value.Median, f.Unit),
			formatFigure(f.Value.Min, f.Unit), formatFigure(f.Value.Max, f.Unit))
	}
	w("\n| round | order | load avg before | load avg after | took |\n|---:|---|---|---|---:|\n")
	for _, r := range g.Rounds {
		w("| %d | %s | %s | %s | %v |\n", r.Index, strings.Join(r.Order, " "), formatLoad(r.LoadBefore),
			formatLoad(r.LoadAfter), r.Elapsed.Round(100*time.Millisecond))
	}
	w("\n")
	return b.String()
}

// Table is the goal table as plain text, for a terminal.
func (g Goals) Table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "goal\ttarget\tbound\tmedian\tmin–max\tverdict\n")
	for _, t := range g.Targets {
		med, spread := "—", "—"
		if t.Status != NotMeasured {
			med = formatGoalValue(t.Value.Median, t.Unit)
			spread = t.spreadString()
		}
		verdict := t.Status.String()
		if t.Status == NotMeasured {
			verdict += ": " + t.Reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.Goal, t.ID, t.BoundString(), med, spread, verdict)
	}
	tw.Flush()
	fmt.Fprintln(&b, g.verdictSummary())
	before, during := g.loadMedians()
	fmt.Fprintf(&b, "%d round(s); load average (1 min) before %.2f, during %.2f (medians)\n", len(g.Rounds), before, during)
	return b.String()
}

// verdictSummary counts the verdicts and names the targets not met: for a ratio, where the
// contender still wins.
func (g Goals) verdictSummary() string {
	var met, notMeasured int
	var lost []string
	for _, t := range g.Targets {
		switch t.Status {
		case Met:
			met++
		case NotMet:
			lost = append(lost, t.ID)
		default:
			notMeasured++
		}
	}
	s := fmt.Sprintf("Met %d of %d targets, %d not measured.", met, len(g.Targets), notMeasured)
	if len(lost) > 0 {
		s += " Not met: " + strings.Join(lost, ", ") + "."
	}
	return s
}

// spreadString is the min–max of a target's values, the unit left to the median beside it.
func (t GoalTarget) spreadString() string { return spreadString(t.Value) }

// spreadString is the min–max of s, without a unit.
func spreadString(s Spread) string {
	return strconv.FormatFloat(s.Min, 'f', goalDigits(s.Min), 64) + "–" +
		strconv.FormatFloat(s.Max, 'f', goalDigits(s.Max), 64)
}

// WriteBenchFormat writes every round's figures and target values as Go benchmark lines,
// one line per figure and round ("BenchmarkGoal/idle-inline/rings 1 8123 p50-ns 20101
// p99-ns"), and one per target and round ("BenchmarkGoal/ratio/serial-p50 1 1.21 x"), so
// that benchstat compares two runs of the goals.
func (g Goals) WriteBenchFormat(out io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "goos: %s\ngoarch: %s\npkg: github.com/tandemrt/tandem/bench\n", runtime.GOOS, runtime.GOARCH)
	for i := range g.Rounds {
		var names []string
		units := map[string][]string{}
		for _, f := range g.Figures {
			if i >= len(f.Value.Rounds) {
				continue
			}
			if _, ok := units[f.Name]; !ok {
				names = append(names, f.Name)
			}
			units[f.Name] = append(units[f.Name], fmt.Sprintf("%s %s", benchValue(f.Value.Rounds[i]), f.Unit))
		}
		for _, name := range names {
			fmt.Fprintf(&b, "BenchmarkGoal/%s 1 %s\n", name, strings.Join(units[name], " "))
		}
		for _, t := range g.Targets {
			if i < len(t.Value.Rounds) {
				fmt.Fprintf(&b, "BenchmarkGoal/ratio/%s 1 %s %s\n", t.ID, benchValue(t.Value.Rounds[i]), benchUnit(t.Unit))
			}
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// benchValue prints a value as go test would: whole numbers from 1000 up, four significant
// digits below.
func benchValue(v float64) string {
	if (v == math.Trunc(v) || math.Abs(v) >= 1000) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// benchUnit is a target's unit as one benchmark-format token.
func benchUnit(unit string) string {
	switch unit {
	case "×":
		return "x"
	case "% of a core":
		return "cpu-pct"
	}
	return strings.ReplaceAll(unit, " ", "-")
}

// formatFigure prints a raw figure in its unit: latencies as durations, rates compactly.
func formatFigure(v float64, unit string) string {
	switch {
	case strings.HasSuffix(unit, "-ns"):
		return time.Duration(v).Round(roundFor(time.Duration(v))).String()
	case strings.HasSuffix(unit, "ops/s") || unit == "events/s":
		return FormatRate(v) + "/s"
	}
	return strings.TrimSuffix(fmt.Sprintf("%.3f", v), ".000")
}

// roundFor keeps three significant digits of a duration.
func roundFor(d time.Duration) time.Duration {
	switch {
	case d >= 100*time.Millisecond:
		return time.Millisecond
	case d >= 10*time.Millisecond:
		return 100 * time.Microsecond
	case d >= time.Millisecond:
		return 10 * time.Microsecond
	case d >= 100*time.Microsecond:
		return time.Microsecond
	case d >= 10*time.Microsecond:
		return 100 * time.Nanosecond
	case d >= time.Microsecond:
		return 10 * time.Nanosecond
	}
	return time.Nanosecond
}

func formatLoad(l [3]float64) string { return fmt.Sprintf("%.2f %.2f %.2f", l[0], l[1], l[2]) }

// loadMedians are the medians over the rounds of the 1-minute load average before each
// round and right after it.
func (g Goals) loadMedians() (before, during float64) {
	var bs, ds []float64
	for _, r := range g.Rounds {
		bs, ds = append(bs, r.LoadBefore[0]), append(ds, r.LoadAfter[0])
	}
	return newSpread(bs).Median, newSpread(ds).Median
}

func (g Goals) loadSummary() string {
	var bs, ds []float64
	for _, r := range g.Rounds {
		bs, ds = append(bs, r.LoadBefore[0]), append(ds, r.LoadAfter[0])
	}
	b, d := newSpread(bs), newSpread(ds)
	return fmt.Sprintf("before the rounds %.2f (%.2f–%.2f), right after them %.2f (%.2f–%.2f)", b.Median, b.Min, b.Max, d.Median, d.Min, d.Max)
}

// mdEscape keeps a text from breaking a markdown table row.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
