package emulator

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// timerFloorWindow is how long the floor is measured, once per Run.
const timerFloorWindow = 3 * time.Second

// floorNote is said after an invalid verdict: how much of the budget the machine itself takes.
func floorNote(f *LatenessFigures) string {
	if f == nil {
		return ""
	}
	return fmt.Sprintf(" (this machine's own timer floor: p99 %.2f ms with one processor busy)", f.P99)
}

// machineFloor measures how late this machine wakes a sleeping goroutine when nothing of the
// emulator runs yet but one processor is busy: a goroutine sleeps 1 ms at a time while
// another computes in 30 ms bursts (the shape of a hash or a burst of handshakes). It is the
// part of the validity budget the emulator cannot win back: expected at ~0.1 ms at p99 on
// bare metal, it is 2.4 ms of the 5 ms threshold on the Firecracker VM of docs/BENCHMARKS.md
// session 11 (an idle virtual CPU takes milliseconds to wake). Reported next to the run's
// own lateness, it tells a researcher whether an invalid run is the fleet's doing or the
// machine's.
func machineFloor(d time.Duration) LatenessFigures {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	c := startTimerCanary()
	time.Sleep(d)
	f := c.finish()
	close(stop)
	wg.Wait()
	if f == nil {
		return LatenessFigures{}
	}
	return *f
}

// timerCanary is a goroutine of its own sleeping 1 ms at a time and recording how late it
// wakes: the floor's probe before the fleet starts, and kept running beside the fleet
// through the measured phase, with no packet to move. When the packet
// scheduler is late and the canary is too, the machine (or the Go runtime's timers) woke
// everything late; when only the scheduler is, the emulator's own work held it up.
type timerCanary struct {
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	mu       sync.Mutex
	all      []time.Duration
	interval []time.Duration
}

func startTimerCanary() *timerCanary {
	c := &timerCanary{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTimer(time.Hour)
		for {
			start := time.Now()
			t.Reset(time.Millisecond)
			select {
			case <-c.stop:
				t.Stop()
				return
			case <-t.C:
			}
			late := max(0, time.Since(start)-time.Millisecond)
			c.mu.Lock()
			c.all = append(c.all, late)
			c.interval = append(c.interval, late)
			c.mu.Unlock()
		}
	}()
	return c
}

// take is the p99 and the largest lateness since the previous call, in ms (0 without
// samples). The largest matters as much: the canary sleeps through a stall of the whole
// process in one sample, where every packet due during it is late.
func (c *timerCanary) take() (p99, largest float64) {
	c.mu.Lock()
	lates := c.interval
	c.interval = nil
	c.mu.Unlock()
	if len(lates) == 0 {
		return 0, 0
	}
	f := lateFigures(lates)
	return f.P99, f.Max
}

// finish stops the canary and sums up its whole run; later calls only wait for it to stop.
func (c *timerCanary) finish() *LatenessFigures {
	c.stopOnce.Do(func() { close(c.stop) })
	<-c.done
	if len(c.all) == 0 {
		return nil
	}
	f := lateFigures(c.all)
	return &f
}

// lateFigures sorts lates and gives their figures in ms.
func lateFigures(lates []time.Duration) LatenessFigures {
	slices.Sort(lates)
	at := func(q float64) float64 { return ms(lates[int(q*float64(len(lates)-1))]) }
	return LatenessFigures{Count: uint64(len(lates)), P50: at(0.5), P99: at(0.99), Max: ms(lates[len(lates)-1])}
}

// damonRoot is where Linux's DAMON (Data Access MONitor) lists its monitoring threads.
const damonRoot = "/sys/kernel/mm/damon/admin/kdamonds"

// memoryMonitors describes the kernel's DAMON threads that are running on this machine, one
// line each; none when DAMON is absent or off. A kdamond monitoring physical memory samples
// page access bits by walking the reverse mappings of the pages it samples, so its scans grow
// with the emulator's resident memory: on the VM of docs/BENCHMARKS.md (session 19) it held a
// processor for 8-32 ms every 500 ms beside a 320-gateway fleet (perf), and with its
// `pageout` scheme it also reclaims cold pages that then fault back in. Both show up as the
// packet scheduler's lateness, so a researcher is told.
func memoryMonitors(root string) []string {
	dirs, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	read := func(parts ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{root}, parts...)...))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	var out []string
	for _, d := range dirs {
		if !d.IsDir() || read(d.Name(), "state") != "on" {
			continue
		}
		desc := "kdamond " + d.Name()
		ctx := filepath.Join(d.Name(), "contexts", "0")
		if ops := read(ctx, "operations"); ops != "" {
			desc += " (" + ops
			if us, err := strconv.Atoi(read(ctx, "monitoring_attrs", "intervals", "sample_us")); err == nil {
				desc += fmt.Sprintf(", sampling every %s", time.Duration(us)*time.Microsecond)
			}
			var actions []string
			if schemes, err := os.ReadDir(filepath.Join(root, ctx, "schemes")); err == nil {
				for _, s := range schemes {
					if !s.IsDir() {
						continue
					}
					if a := read(ctx, "schemes", s.Name(), "action"); a != "" {
						actions = append(actions, a)
					}
				}
			}
			if len(actions) > 0 {
				desc += ", schemes: " + strings.Join(actions, ", ")
			}
			desc += ")"
		}
		out = append(out, desc)
	}
	return out
}

// memoryMonitorNote is said after an invalid verdict when a kdamond runs.
func memoryMonitorNote(monitors []string) string {
	if len(monitors) == 0 {
		return ""
	}
	return fmt.Sprintf("; the kernel's memory monitor runs (%s), whose scans hold a processor for milliseconds at a time", strings.Join(monitors, "; "))
}
