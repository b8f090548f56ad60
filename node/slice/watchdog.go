package slice

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// WatchdogConfig sets the coercive measures: when the gateway passes a threshold, the slice
// consuming most of that resource has its apps stopped, and the operator (core events) and
// that provider (its slice events) are told.
type WatchdogConfig struct {
	Interval time.Duration `yaml:"interval"` // how often it looks (default 5 s)
	// MemoryBytes is the gateway's resident memory past which the top memory consumer is
	// stopped (0: off).
	MemoryBytes int64 `yaml:"memory_bytes"`
	// CPUPercent is the gateway's CPU use over one interval (100 = one core) past which the top
	// CPU consumer is stopped (0: off).
	CPUPercent float64 `yaml:"cpu_percent"`
	// Policy: "stop-top-consumer" (default) or "log-only" (events, no stop).
	Policy string `yaml:"policy"`
}

// Watchdog policies.
const (
	PolicyStopTop = "stop-top-consumer"
	PolicyLogOnly = "log-only"
)

// Validate names the first bad field.
func (c WatchdogConfig) Validate() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("watchdog.interval: must not be negative")
	case c.MemoryBytes < 0 || c.CPUPercent < 0:
		return fmt.Errorf("watchdog: thresholds must not be negative")
	case c.Policy != "" && c.Policy != PolicyStopTop && c.Policy != PolicyLogOnly:
		return fmt.Errorf("watchdog.policy: %q is neither %s nor %s", c.Policy, PolicyStopTop, PolicyLogOnly)
	}
	return nil
}

// gatewaySample is what the watchdog measures of the whole gateway.
type gatewaySample struct {
	rssBytes   int64
	cpuSeconds float64 // process user+system time
}

// sampleGateway reads this process's RSS and CPU time (Linux /proc; zeros elsewhere). The
// gateway is one process, so the process is the gateway.
func sampleGateway() gatewaySample {
	var s gatewaySample
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			s.rssBytes = pages * int64(os.Getpagesize())
		}
	}
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command name (which may hold spaces) start after the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b)[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				s.cpuSeconds = (ut + st) / 100 // USER_HZ is 100 on Linux
			}
		}
	}
	return s
}

// RunWatchdog enforces storage quotas (files written through WASI are only seen by a rescan)
// and the gateway thresholds until ctx ends. sample is nil in production (this process is
// measured); tests pass their own.
func (m *Manager) RunWatchdog(ctx context.Context, cfg WatchdogConfig, sample func() (rssBytes int64, cpuSeconds float64)) {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Policy == "" {
		cfg.Policy = PolicyStopTop
	}
	if sample == nil {
		sample = func() (int64, float64) { s := sampleGateway(); return s.rssBytes, s.cpuSeconds }
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	_, lastCPU := sample()
	lastSlice := map[string]float64{}
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m.enforceStorage(ctx)
		if cfg.MemoryBytes == 0 && cfg.CPUPercent == 0 {
			// No thresholds: nothing to sample (hundreds of emulated nodes share one process).
			continue
		}
		now := time.Now()
		rss, cpu := sample()
		cpuPct := (cpu - lastCPU) / now.Sub(last).Seconds() * 100
		lastCPU, last = cpu, now

		usages := m.usages()
		sliceCPU := map[string]float64{}
		for _, u := range usages {
			sliceCPU[u.Slice] = u.CPUSeconds - lastSlice[u.Slice]
			lastSlice[u.Slice] = u.CPUSeconds
		}
		if cfg.MemoryBytes > 0 && rss > cfg.MemoryBytes {
			top, amount := "", int64(0)
			for _, u := range usages {
				if u.MemoryBytes > amount {
					top, amount = u.Slice, u.MemoryBytes
				}
			}
			m.coerce(ctx, cfg.Policy, top, "memory",
				fmt.Sprintf("gateway memory %d MiB over the %d MiB threshold; slice %q holds %d KiB, the most", rss>>20, cfg.MemoryBytes>>20, top, amount>>10))
		}
		if cfg.CPUPercent > 0 && cpuPct > cfg.CPUPercent {
			top, amount := "", 0.0
			for id, c := range sliceCPU {
				if c > amount {
					top, amount = id, c
				}
			}
			m.coerce(ctx, cfg.Policy, top, "cpu",
				fmt.Sprintf("gateway CPU %.0f%% over the %.0f%% threshold; slice %q used %.2f s of the last %s, the most", cpuPct, cfg.CPUPercent, top, amount, cfg.Interval))
		}
	}
}

// enforceStorage rescans every slice's directory and stops the apps of a slice over its
// storage quota.
func (m *Manager) enforceStorage(ctx context.Context) {
	m.mu.Lock()
	type check struct {
		id    string
		st    *storage
		quota int64
	}
	var checks []check
	for _, s := range m.st.Slices {
		if ls := m.live[s.ID]; ls != nil {
			checks = append(checks, check{s.ID, ls.storage, s.Quotas.withDefaults().StorageBytes})
		}
	}
	m.mu.Unlock()
	for _, c := range checks {
		used, _ := c.st.rescan()
		if used > c.quota {
			m.coerce(ctx, PolicyStopTop, c.id, "storage", fmt.Sprintf("slice %q stores %d bytes, over its %d-byte quota", c.id, used, c.quota))
		}
	}
}

// coerce stops every running app of slice id (unless the policy only logs) and tells the
// operator and the provider why.
func (m *Manager) coerce(ctx context.Context, policy, id, resource, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.st.find(id)
	if s == nil {
		m.event(Event{Kind: "watchdog", Msg: why + " (no slice to stop)", Attrs: map[string]string{"resource": resource}}, false)
		return
	}
	var stopped []string
	if policy == PolicyStopTop {
		for _, a := range s.Apps {
			if ls := m.live[id]; ls != nil && ls.apps[a.Name] != nil {
				_ = m.stopLocked(ctx, s, a, StateIdle)
				a.Fault, a.FaultReason = FaultFailureWhileActive, "stopped by the watchdog: "+why
				stopped = append(stopped, a.Name)
			}
		}
		_ = m.persistLocked()
	}
	msg := why
	if len(stopped) > 0 {
		msg += "; stopped " + strings.Join(stopped, ", ")
	} else if !m.dueWarning(id+"/"+resource, time.Minute) {
		return // nothing stopped and already said: do not flood the streams every interval
	}
	m.event(Event{Kind: "watchdog", Slice: id, Msg: msg, Attrs: map[string]string{"resource": resource, "policy": policy}}, true)
}

// dueWarning reports whether a warning under key was last given more than every ago (and
// records it). Callers hold m.mu.
func (m *Manager) dueWarning(key string, every time.Duration) bool {
	if m.warned == nil {
		m.warned = map[string]time.Time{}
	}
	if t, ok := m.warned[key]; ok && time.Since(t) < every {
		return false
	}
	m.warned[key] = time.Now()
	return true
}
