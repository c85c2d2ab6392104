package chaos

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Report is what a run saw: one Second per second, the Tally, the Invariants checked over
// it, and the latency of every answer from its due time. A plain value once Run returns.
type Report struct {
	Scenario, Profile string
	// Duration is how long events were offered; Elapsed the whole run, drain included.
	Duration, Elapsed time.Duration
	// Restarts counts mid-flight Shutdowns followed by a new runtime; RestartsAt says when
	// each began, from the run's start.
	Restarts   int
	RestartsAt []time.Duration
	Seconds    []Second
	Tally      Tally
	Invariants []Invariant
	Latency    Latency
	// Goroutines is a dump of every goroutine when some leaked (else empty).
	Goroutines string
}

// Second is one second of a run. A plain value.
type Second struct {
	// At is the end of the second, from the run's start.
	At time.Duration
	// Offered, Completed and Rejected count events due, answered with an outcome
	// (acknowledged, dead-lettered, cancelled) and refused at submit in this second.
	Offered, Completed, Rejected uint64
	// InFlight is the runtime's Stats.InFlight at the end of the second.
	InFlight int64
	// Retries and DeadLetters count redeliveries scheduled and dead letters written.
	Retries, DeadLetters uint64
	// P99 is the 99th percentile of the latency of the answers in this second.
	P99 time.Duration
}

// Latency summarises the latency of every answer, from its due time. A plain value.
type Latency struct {
	Count               int64
	P50, P99, P999, Max time.Duration
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	return Latency{Count: h.TotalCount(), P50: time.Duration(h.ValueAtQuantile(50)), P99: time.Duration(h.ValueAtQuantile(99)),
		P999: time.Duration(h.ValueAtQuantile(99.9)), Max: time.Duration(h.Max())}
}

// Err names every broken invariant, nil when all hold.
func (r *Report) Err() error { return Broken(r.Invariants) }

// Summary is the run's outcome in a few lines of text, ending with the invariant table.
func (r *Report) Summary() string {
	var b strings.Builder
	t := r.Tally
	fmt.Fprintf(&b, "chaos: scenario %s, profile %s, %v offered (%v in all), %d restarts\n",
		r.Scenario, r.Profile, r.Duration, r.Elapsed.Round(time.Millisecond), r.Restarts)
	fmt.Fprintf(&b, "  submitted            %d\n", t.Offered)
	fmt.Fprintf(&b, "  acknowledged         %d\n", t.Acked)
	fmt.Fprintf(&b, "  dead-lettered        %d\n", t.DeadLettered)
	fmt.Fprintf(&b, "  rejected at submit   %d\n", t.Rejected)
	fmt.Fprintf(&b, "  cancelled (shutdown) %d\n", t.Cancelled)
	fmt.Fprintf(&b, "  abandoned by caller  %d\n", t.Abandoned)
	fmt.Fprintf(&b, "  retries              %d\n", t.Runtime.Retried)
	fmt.Fprintf(&b, "  sink                 %d received, %d stored, %d failed\n", t.Sink.Writes, t.Sink.Stored, t.Sink.Failed)
	fmt.Fprintf(&b, "  latency from due     p50 %v  p99 %v  p99.9 %v  max %v (%d answers)\n",
		r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max, r.Latency.Count)
	b.WriteString("\nby kind                        offered    acked     dead rejected cancelled abandoned        p99\n")
	for _, k := range t.Kinds {
		fmt.Fprintf(&b, "  %-26s %9d %8d %8d %8d %9d %9d %10s\n", k.Name, k.Offered, k.Acked, k.DeadLettered, k.Rejected,
			k.Cancelled, k.Abandoned, fmtDuration(k.P99))
	}
	b.WriteString("\ninvariants:\n")
	b.WriteString(Table(r.Invariants))
	return b.String()
}

// WriteDir writes the report into dir (created if missing): timeline.svg, report.md (the
// summary, the invariant table and the per-second samples) and, when goroutines leaked,
// goroutines.txt.
func (r *Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "timeline.svg"), []byte(r.TimelineSVG()), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# tandem chaos run\n\n![timeline](timeline.svg)\n\n```\n")
	b.WriteString(r.Summary())
	b.WriteString("```\n\n## Invariants\n\n| invariant | holds | detail |\n|---|---|---|\n")
	for _, inv := range r.Invariants {
		holds := "yes"
		if !inv.Holds {
			holds = "**NO**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", inv.Name, holds, inv.Detail)
	}
	b.WriteString("\n## Per second\n\n| s | offered | completed | rejected | in flight | retries | dead letters | p99 |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Seconds {
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %d | %d | %v |\n", int(s.At/time.Second), s.Offered, s.Completed, s.Rejected,
			s.InFlight, s.Retries, s.DeadLetters, s.P99)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	if r.Goroutines != "" {
		return os.WriteFile(filepath.Join(dir, "goroutines.txt"), []byte(r.Goroutines), 0o644)
	}
	return nil
}

// series is one line of the timeline: its name, colour and value per second.
type series struct {
	name, color string
	value       func(Second) float64
}

// TimelineSVG draws the run second by second: rates (offered, completed, rejected),
// in flight, retries and dead letters on the upper panel, p99 latency on the lower one,
// with the restarts marked.
func (r *Report) TimelineSVG() string {
	const (
		width, left, right, top = 900, 70, 190, 50
		panelH, gap             = 230, 50 // the rates' panel and the latency panel
		plotW                   = width - left - right
		height                  = top + 2*panelH + gap + 50
	)
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="%d" y="18" font-size="15" font-weight="bold">tandem chaos: scenario %s, %d restarts (dashed)</text>`+"\n", left-40, esc(r.Scenario), r.Restarts)
	w(`<text x="%d" y="32" font-size="10" fill="#444">%s</text>`+"\n", left-40, esc(r.Profile))
	if len(r.Seconds) == 0 {
		w(`<text x="%d" y="%d">no data</text></svg>`+"\n", left, top+20)
		return b.String()
	}
	n := len(r.Seconds)
	px := func(i int) float64 { return left + float64(i+1)/float64(n)*plotW }

	panel := func(y0 int, title string, ss []series, format func(float64) string) {
		maxY := 1.0
		for _, s := range ss {
			for _, sec := range r.Seconds {
				maxY = math.Max(maxY, s.value(sec))
			}
		}
		maxY = niceCeil(maxY)
		py := func(v float64) float64 { return float64(y0) + panelH - v/maxY*panelH }
		w(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", left, y0, plotW, panelH)
		for k := 0; k <= 4; k++ {
			v := maxY * float64(k) / 4
			y := py(v)
			w(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, left+plotW, y)
			w(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y, format(v))
		}
		w(`<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", left, y0-6, esc(title))
		for _, at := range r.RestartsAt {
			x := left + float64(at)/float64(r.Seconds[n-1].At)*plotW
			w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#444" stroke-dasharray="4 3"/>`+"\n", x, y0, x, y0+panelH)
		}
		for i, s := range ss {
			var pts []string
			for j, sec := range r.Seconds {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(j), py(s.value(sec))))
			}
			w(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
			ly := y0 + 14 + i*20
			w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", left+plotW+12, ly, left+plotW+32, ly, s.color)
			w(`<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", left+plotW+38, ly, esc(s.name))
		}
	}
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	panel(top+10, "per second", []series{
		{"offered /s", "#1f77b4", func(s Second) float64 { return float64(s.Offered) }},
		{"completed /s", "#2ca02c", func(s Second) float64 { return float64(s.Completed) }},
		{"rejected /s", "#7f7f7f", func(s Second) float64 { return float64(s.Rejected) }},
		{"in flight", "#9467bd", func(s Second) float64 { return float64(s.InFlight) }},
		{"retries /s", "#ff7f0e", func(s Second) float64 { return float64(s.Retries) }},
		{"dead letters /s", "#d62728", func(s Second) float64 { return float64(s.DeadLetters) }},
	}, count)
	y1 := top + 10 + panelH + gap
	panel(y1, "p99 latency from the due time", []series{
		{"p99", "#d62728", func(s Second) float64 { return float64(s.P99) }},
	}, func(v float64) string { return fmtDuration(time.Duration(v)) })
	// The time axis, under the lower panel.
	step := max(1, n/10)
	for i := step - 1; i < n; i += step {
		x := px(i)
		w(`<text x="%.1f" y="%d" text-anchor="middle">%ds</text>`+"\n", x, y1+panelH+16, int(r.Seconds[i].At/time.Second))
	}
	w(`<text x="%d" y="%d" text-anchor="middle">time since the start of the run</text>`+"\n", left+plotW/2, y1+panelH+36)
	w("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
