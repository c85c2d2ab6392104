// Command report measures the goals of tandem's crossing in interleaved rounds (bench.RunGoals,
// the report's first section and its goal table), runs the latency-under-load sweep and
// resource measurements against every contender, folds in `go test -bench` output files, and
// writes REPORT.md with an SVG chart of p99 latency against offered load, and goals.txt with
// the goals' rounds as benchmark lines for benchstat.
//
//	go run ./report -out results -bench-file results/cgo.txt -bench-file results/purego.txt
//	go run ./report -quick -out /tmp/report   # one tiny round of everything: checks the program
//
// Every figure in the report comes from this one run (and the bench files given), so the
// ratios hold on a noisy machine even where the absolute numbers move.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandemrt/tandem/bench"
	"github.com/tandemrt/tandem/go/tandem"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	out := flag.String("out", "results", "directory for REPORT.md and latency.svg")
	step := flag.Duration("step", time.Second, "how long each offered rate runs")
	suiteStart := flag.Int64("suite-start", 0, "Unix time the whole ./build.sh bench started, to report its wall time")
	quick := flag.Bool("quick", false, "short steps and small resource runs, to check the program")
	loadBefore := flag.String("load-before", "", "the load average when ./build.sh bench started (else read now, after the suites)")
	goals := flag.Bool("goals", true, "measure the crossing's latency goals in interleaved rounds first (-quick: one tiny round)")
	goalsRounds := flag.Int("goals-rounds", 0, "the goals' rounds; 0: 5, or 1 with -quick (benchstat wants 6 or more per file for a confidence interval)")
	goalsBench := flag.String("goals-bench", "goals.txt", "where in -out to write the goals' rounds as Go benchmark lines, for benchstat (empty: nowhere)")
	onlyGoals := flag.Bool("only-goals", false, "measure the goals and print their table, nothing else (no REPORT.md)")
	var benchFiles listFlag
	flag.Var(&benchFiles, "bench-file", "go test -bench output to include (repeatable)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("report: ")

	started := time.Now()
	r := &report{machine: describeMachine(), longRSS: os.Getenv("TANDEM_BENCH_LONG") == "1"}
	if *loadBefore != "" {
		r.machine.loadBefore = *loadBefore // read before the suites, which load the machine themselves
	}

	cfg := bench.OpenLoopConfig{Step: *step, Logf: log.Printf}
	idle, idleBurst, idleSettle := time.Second, 300*time.Millisecond, time.Second
	threadEvents, rssEvents, rssEvery := 10000, 200_000, 20_000
	if r.longRSS {
		rssEvents, rssEvery = 10_000_000, 1_000_000
	}
	if *quick {
		cfg.Step, cfg.Burst = 100*time.Millisecond, 100*time.Millisecond
		idle, idleBurst, idleSettle, threadEvents, rssEvents, rssEvery = 200*time.Millisecond, 50*time.Millisecond, 0, 1000, 20_000, 5_000
	}

	var err error
	if *goals {
		log.Printf("goals: every contender in every round, the order reversed each round")
		g, err := bench.RunGoals(context.Background(), bench.GoalsConfig{Rounds: *goalsRounds, Quick: *quick, Logf: log.Printf})
		if err != nil {
			log.Fatalf("goals: %v", err)
		}
		r.goals = &g
		if *onlyGoals {
			if *goalsBench != "" {
				if err := os.MkdirAll(*out, 0o755); err != nil {
					log.Fatal(err)
				}
				f, err := os.Create(filepath.Join(*out, *goalsBench))
				if err != nil {
					log.Fatal(err)
				}
				if err := g.WriteBenchFormat(f); err != nil {
					log.Fatal(err)
				}
				if err := f.Close(); err != nil {
					log.Fatal(err)
				}
			}
			fmt.Print(g.Table())
			return
		}
	}
	log.Printf("open loop: %d contenders, %v per rate", len(bench.LoadContenders), cfg.Step)
	r.sweeps, err = bench.RunOpenLoopAll(context.Background(), bench.LoadContenders, cfg)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range r.sweeps {
		if s.Contender == bench.LoadTandem {
			var rates []float64
			for _, run := range s.Runs {
				rates = append(rates, run.Offered)
			}
			r.floor = bench.GeneratorFloor(rates, cfg.Step, s.Workers)
		}
	}
	for _, name := range sortedNames() {
		res, err := bench.MeasureIdleCPU(name, bench.LoadContenders[name], 64, idleBurst, idleSettle, idle)
		if err != nil {
			r.idleSkipped = append(r.idleSkipped, name+": "+err.Error())
			continue
		}
		log.Printf("idle CPU %-10s %.2f%% of a core", name, 100*res.Cores())
		r.idle = append(r.idle, res)
	}
	for _, m := range []func(int, int, time.Duration) (bench.ThreadsResult, error){bench.MeasureThreadsAsync, bench.MeasureThreadsDirect} {
		res, err := m(threadEvents, 1, 30*time.Second)
		if errors.Is(err, bench.ErrUnavailable) {
			log.Printf("threads: %v", err) // the direct burst needs cgo
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		if _, err := bench.ReapThreads(res.Baseline); err != nil {
			log.Fatal(err)
		}
		log.Printf("threads %s: peak %d (baseline %d), %d events in %v", res.Mode, res.Peak, res.Baseline, res.Completed, res.Wall)
		r.threads = append(r.threads, res)
	}
	r.rss, err = bench.MeasureRSS(rssEvents, rssEvery, 64)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("RSS over %d events: first %d, last %d, max %d bytes", rssEvents, r.rss.First(), r.rss.Last(), r.rss.Max())
	for _, f := range benchFiles {
		bf, err := readBenchFile(f)
		if err != nil {
			log.Fatal(err)
		}
		r.benchFiles = append(r.benchFiles, bf)
	}
	r.elapsed = time.Since(started)
	if *suiteStart > 0 {
		r.suiteWall = time.Since(time.Unix(*suiteStart, 0))
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*out, "latency.svg"), []byte(latencySVG(r.sweeps)), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*out, "REPORT.md"), []byte(r.markdown()), 0o644); err != nil {
		log.Fatal(err)
	}
	if r.goals != nil && *goalsBench != "" {
		f, err := os.Create(filepath.Join(*out, *goalsBench))
		if err != nil {
			log.Fatal(err)
		}
		if err := r.goals.WriteBenchFormat(f); err != nil {
			log.Fatal(err)
		}
		if err := f.Close(); err != nil {
			log.Fatal(err)
		}
	}
	if r.goals != nil {
		fmt.Print(r.goals.Table())
	}
	fmt.Print(r.ratios())
	log.Printf("wrote %s and %s in %v", filepath.Join(*out, "REPORT.md"), filepath.Join(*out, "latency.svg"), r.elapsed.Round(time.Second))
}

func sortedNames() []string {
	var names []string
	for n := range bench.LoadContenders {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// machine is what the report says about where it ran.
type machine struct {
	cpu, kernel, goVersion, rustc, linkMode, loadBefore string
	cores                                               int
	memGiB                                              float64
}

func describeMachine() machine {
	m := machine{cores: runtime.NumCPU(), goVersion: runtime.Version(), linkMode: tandem.LinkMode()}
	m.cpu = procField("/proc/cpuinfo", "model name", ":")
	if kb, err := strconv.ParseFloat(strings.Fields(procField("/proc/meminfo", "MemTotal", ":") + " 0")[0], 64); err == nil {
		m.memGiB = kb / (1 << 20)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.loadBefore = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	m.rustc = "unknown"
	if b, err := exec.Command("rustc", "--version").Output(); err == nil {
		m.rustc = strings.TrimSpace(string(b))
	}
	return m
}

// procField is the value of the first line of path that starts with key, after sep.
func procField(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), key) {
			if _, v, ok := strings.Cut(sc.Text(), sep); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown"
}

// benchFile is one `go test -bench` output: its benchmarks' metrics by unit.
type benchFile struct {
	name  string
	lines []benchLine
}

type benchLine struct {
	name    string
	metrics map[string]float64
}

func readBenchFile(path string) (benchFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return benchFile{}, err
	}
	defer f.Close()
	bf := benchFile{name: filepath.Base(path)}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(fields[1]); err != nil {
			continue
		}
		l := benchLine{name: trimProcs(strings.TrimPrefix(fields[0], "Benchmark")), metrics: map[string]float64{}}
		for i := 2; i+1 < len(fields); i += 2 {
			if v, err := strconv.ParseFloat(fields[i], 64); err == nil {
				l.metrics[fields[i+1]] = v
			}
		}
		bf.lines = append(bf.lines, l)
	}
	return bf, sc.Err()
}

// trimProcs drops the -GOMAXPROCS suffix go test appends to a benchmark's name.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}
