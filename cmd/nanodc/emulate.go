package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"time"

	"github.com/pbnjay/memory"
	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/emulator"
	"github.com/nanodc/nanodc/emulator/vodload"
)

func newEmulateCmd() *cobra.Command {
	var (
		scenarioPath, out string
		seed              int64
		asJSON, quiet     bool
		cpuProfile        string
		memProfile        string
		goroutineProfile  string
		tracePath         string
		traceAfter        time.Duration
		traceOver         time.Duration
		only              []string
		repeat            int
	)
	cmd := &cobra.Command{
		Use:   "emulate --scenario FILE",
		Short: "Run a fleet of emulated gateways behind shaped links and report what it measured",
		Long: `Run a scenario (emulator/scenarios/*.yaml): a fleet of real nanodc nodes, each behind an
emulated access link (rate, queue, delay, jitter, loss) on an in-memory network, with the
scenario's workloads and faults. Writes DIR/summary.json, DIR/timeseries.csv and a
self-contained DIR/report.html, and prints the summary. A run whose timing error exceeded the
scenario's threshold is marked INVALID (exit status 3).

With --repeat N the scenario runs N times on the same seed (DIR/run-1 … DIR/run-N, each as
one run writes it) and DIR/repeat.json holds every figure's median, range and per-run values;
the table printed is the headline figures and the workloads' own. The exit status is 3 if any
run was INVALID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := emulator.LoadScenario(scenarioPath)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join("runs", time.Now().Format("20060102-150405")+"-"+sc.Name)
			}
			if len(only) > 0 {
				if err := sc.KeepVariants(only); err != nil {
					return err
				}
			}
			if repeat < 1 {
				return fmt.Errorf("--repeat %d: want at least 1 run", repeat)
			}
			if repeat > 1 && (memProfile != "" || goroutineProfile != "" || tracePath != "") {
				return errors.New("--memprofile, --goroutineprofile and --trace take one run's state: use them without --repeat")
			}
			opts := emulator.Options{OutDir: out, ScenarioPath: scenarioPath, Workloads: workloads()}
			tuneGC(&opts)
			if cmd.Flags().Changed("seed") {
				opts.Seed = &seed
			}
			if !quiet {
				opts.Progress = cmd.ErrOrStderr()
				opts.ProgressLines = os.Getenv("CI") != "" || !isTerminal(os.Stderr)
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			opts.SettledProfiles = map[string]io.Writer{}
			for name, path := range map[string]string{"heap": memProfile, "goroutine": goroutineProfile} {
				if path == "" {
					continue
				}
				f, err := os.Create(path)
				if err != nil {
					return err
				}
				defer f.Close()
				opts.SettledProfiles[name] = f
			}
			if tracePath != "" {
				stop, err := traceFirstLateSecond(tracePath, traceAfter, traceOver, &opts)
				if err != nil {
					return err
				}
				defer stop()
			}
			// One run or several: what to print as JSON, the table otherwise, and why the exit
			// status is 3 (nil when every run was valid).
			var (
				result  any
				table   func(io.Writer)
				invalid error
			)
			if repeat > 1 {
				rs, err := emulator.Repeat(cmd.Context(), sc, opts, repeat)
				if err != nil {
					return err
				}
				result = rs
				table = func(w io.Writer) {
					emulator.PrintRepeat(w, rs)
					fmt.Fprintf(w, "\noutputs: %s/repeat.json, %s/run-{1..%d}/\n", out, out, repeat)
				}
				if rs.ValidRuns < rs.Runs {
					invalid = fmt.Errorf("%d of %d runs INVALID", rs.Runs-rs.ValidRuns, rs.Runs)
				}
			} else {
				sum, err := emulator.Run(cmd.Context(), sc, opts)
				if err != nil {
					return err
				}
				result = sum
				table = func(w io.Writer) {
					emulator.PrintSummary(w, sum)
					fmt.Fprintf(w, "\noutputs: %s/{summary.json,timeseries.csv,report.html}\n", out)
				}
				if !sum.Valid {
					invalid = fmt.Errorf("run INVALID: %v", sum.InvalidReasons)
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(result); err != nil {
					return err
				}
			} else {
				table(w)
			}
			if invalid != nil {
				return exitError{code: 3, err: invalid}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&scenarioPath, "scenario", "", "scenario YAML file (required)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (default: runs/<timestamp>-<scenario>)")
	cmd.Flags().Int64Var(&seed, "seed", 0, "override the scenario's seed")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print summary.json instead of the table")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress output")
	cmd.Flags().IntVar(&repeat, "repeat", 1, "run the scenario this many times on the same seed and report each figure's median and range (DIR/repeat.json)")
	cmd.Flags().StringSliceVar(&only, "variant", nil, "run only these of the scenario's variants (repeatable)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to this file")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "write a Go heap profile, taken once the fleet has settled, to this file")
	cmd.Flags().StringVar(&goroutineProfile, "goroutineprofile", "", "write a Go goroutine profile, taken once the fleet has settled, to this file")
	cmd.Flags().StringVar(&tracePath, "trace", "", "keep a Go execution trace of the last seconds in memory and write it to this file at the first measured second that runs late (go tool trace FILE)")
	cmd.Flags().DurationVar(&traceAfter, "trace-after", 0, "with --trace: ignore late seconds earlier than this into the measured phase")
	cmd.Flags().DurationVar(&traceOver, "trace-over", 0, "with --trace: ignore late seconds whose lateness p99 is below this (to catch the worst spikes)")
	_ = cmd.MarkFlagRequired("scenario")
	return cmd
}

// traceFirstLateSecond runs the execution tracer as a flight recorder and writes its window
// (the last ~5 s) to path the first time a measured second runs late, ignoring the first
// `after` of the measured phase: what kept the packet scheduler from running is then in the
// file, without tracing a whole run.
func traceFirstLateSecond(path string, after, over time.Duration, opts *emulator.Options) (stop func(), err error) {
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 5 * time.Second})
	if err := fr.Start(); err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	var once sync.Once
	opts.OnLateSecond = func(elapsed, p99 time.Duration) {
		if elapsed < after || p99 < over {
			return
		}
		once.Do(func() {
			f, err := os.Create(path)
			if err == nil {
				_, err = fr.WriteTo(f)
				err = errors.Join(err, f.Close())
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "trace: %v\n", err)
				return
			}
			fmt.Fprintf(os.Stderr, "trace: a second ran late (p99 %s); the last seconds are in %s\n", p99, path)
		})
	}
	return fr.Stop, nil
}

// exitError carries a specific exit status to main.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// workloads are every workload a scenario may name: the emulator's own and the apps'.
func workloads() map[string]emulator.WorkloadFactory {
	w := emulator.BuiltinWorkloads()
	w["vod"] = vodload.New
	return w
}

// tuneGC paces the collector per phase. While the workloads run, every GC cycle of a fleet's
// gigabyte-sized heap takes a processor from the packet scheduler and its allocations pay
// mark assists, which shows as timer lateness and can invalidate a run (every burst of
// lateness in a 100-gateway flash crowd was a GC cycle, 0.5-0.9 s of marking each): there
// GOGC is 1000 (5 cycles in 5.5 minutes at GOGC 400, 2 at 1000). Start-up and settling keep
// Go's default 100: nothing is measured then, and a heap allowed to grow tenfold while
// thousands of handshakes come and go leaves their survivors scattered over spans the GC can
// never give back. 1000 gateways at the end, per gateway: 7.37 MB RSS with 1000 throughout,
// 3.92 MB with 100 during start-up, 3.71 MB with 50; peak 11.1, 5.1 and 4.4 GB; start-up 919,
// 963 and 1214 s (docs/BENCHMARKS.md, session 17).
// A soft limit at half the machine's memory bounds the heap. GOGC or GOMEMLIMIT in the
// environment win (GOGC for every phase).
func tuneGC(opts *emulator.Options) {
	if os.Getenv("GOGC") == "" {
		opts.MeasuredGCPercent = 1000
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if total := memory.TotalMemory(); total > 0 {
			debug.SetMemoryLimit(int64(total / 2))
		}
	}
}
