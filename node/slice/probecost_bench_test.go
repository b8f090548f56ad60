package slice

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/nanodc/nanodc/overlay"
)

// The gateway-side probe cost benchmark runs the gateway in a child process (this test
// binary again, running TestProbeCostGatewayHelper) so that the child's CPU time is the
// gateway's alone, without the clients' share that BenchmarkProbeOverOverlay includes.
const (
	probeCostHelperEnv  = "NANODC_PROBECOST_HELPER"     // "1": this process is the gateway
	probeCostDirEnv     = "NANODC_PROBECOST_DIR"        // the child's directory: keys in, slices
	probeCostSecondsEnv = "NANODC_PROBECOST_SECONDS"    // length of each measurement window
	probeCostProfileEnv = "NANODC_PROBECOST_CPUPROFILE" // file: the gateway writes a CPU profile of its whole run
	probeCostReady      = "PROBECOST-READY"             // the child's stdout line: READY <id> <addr>
	probeCostProviders  = 100
	probeCostKeysFile   = "keys" // one hex-encoded marshalled private key a line
	// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on Linux
	// whatever the kernel's own HZ is.
	clkTck = 100
)

// TestProbeCostGatewayHelper is the child process of BenchmarkProbePollingGatewaySide, not a
// test: it serves a gateway with one slice per provider key the parent wrote, announces its
// address on stdout and runs until its stdin closes.
func TestProbeCostGatewayHelper(t *testing.T) {
	if os.Getenv(probeCostHelperEnv) != "1" {
		t.Skip("helper process for BenchmarkProbePollingGatewaySide")
	}
	dir := os.Getenv(probeCostDirEnv)
	raw, err := os.ReadFile(filepath.Join(dir, probeCostKeysFile))
	if err != nil {
		t.Fatal(err)
	}
	var keys []crypto.PrivKey
	for line := range strings.FieldsSeq(string(raw)) {
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatal(err)
		}
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}

	// The node's default watermarks (32/96) would start trimming the 100 providers'
	// connections after the grace period; this measures steady-state probing, not that churn.
	ov, err := overlay.New(overlay.Config{PrivKey: newKey(t), ConnLow: 2 * len(keys), ConnHigh: 4 * len(keys),
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := New(ctx, Options{Dir: filepath.Join(dir, "gateway"), Overlay: ov, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.ServeOverlay(ctx, ov.Host())

	// The same slices as benchGateway, so the numbers compare with BenchmarkProbePolling.
	addCounterSlices(t, m, keys)
	var addr ma.Multiaddr
	for _, a := range ov.Host().Addrs() {
		if strings.HasPrefix(a.String(), "/ip4/127.0.0.1/udp/") {
			addr = a
		}
	}
	if addr == nil {
		t.Fatalf("no loopback QUIC address among %v", ov.Host().Addrs())
	}
	if path := os.Getenv(probeCostProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	fmt.Printf("%s %s %s\n", probeCostReady, ov.ID(), addr)
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
}

// cpuTicks is a process's user+system CPU time so far, in clock ticks (all its threads).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields are counted after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %q", pid, s)
	}
	return utime + stime, nil
}

// BenchmarkProbePollingGatewaySide: 100 providers each polling their slice's probe once a
// second over the real management protocol (loopback QUIC), as a share of one core of the
// gateway alone. The gateway runs in a child process whose CPU time is read from /proc
// around three equal windows once everything is connected and warm: one with no requests
// (the gateway's idle floor: overlay, pubsub, 100 idle apps), one with the polling, one with
// the same probes as watches (asked once, answered every second). %core-gw-probes and
// %core-gw-watches are what each costs above the floor. Each b.Loop iteration is one set of
// windows, so the default -benchtime runs it once.
func BenchmarkProbePollingGatewaySide(b *testing.B) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc to read the gateway's CPU time")
	}
	counterModule(b) // skip here, in the parent, when wat2wasm is missing
	window := 10 * time.Second
	if s := os.Getenv(probeCostSecondsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a whole number of seconds", probeCostSecondsEnv, s)
		}
		window = time.Duration(n) * time.Second
	}
	const n = probeCostProviders

	dir := b.TempDir()
	keys := make([]crypto.PrivKey, n)
	var lines strings.Builder
	for i := range keys {
		keys[i] = newKey(b)
		raw, err := crypto.MarshalPrivateKey(keys[i])
		if err != nil {
			b.Fatal(err)
		}
		lines.WriteString(hex.EncodeToString(raw) + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, probeCostKeysFile), []byte(lines.String()), 0o600); err != nil {
		b.Fatal(err)
	}

	// The child: this binary running only the helper; its log goes to a file shown on failure.
	logPath := filepath.Join(dir, "gateway.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	childLog := func() string { out, _ := os.ReadFile(logPath); return string(out) }
	cmd := exec.Command(os.Args[0], "-test.run=^TestProbeCostGatewayHelper$", "-test.v")
	cmd.Env = append(os.Environ(), probeCostHelperEnv+"=1", probeCostDirEnv+"="+dir)
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		// Closing stdin asks it to stop; kill it if it does not.
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
	})

	// Wait for its address; everything else it prints (test framework lines) is logged.
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == probeCostReady {
				ready <- f[1:]
				continue
			}
			fmt.Fprintln(logFile, sc.Text())
		}
	}()
	var gw peer.AddrInfo
	select {
	case f := <-ready:
		id, err := peer.Decode(f[0])
		if err != nil {
			b.Fatal(err)
		}
		addr, err := ma.NewMultiaddr(f[1])
		if err != nil {
			b.Fatal(err)
		}
		gw = peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}}
	case <-exited:
		b.Fatalf("gateway process exited before it was ready:\n%s", childLog())
	case <-time.After(3 * time.Minute):
		b.Fatalf("gateway process not ready after 3 minutes:\n%s", childLog())
	}
	pid := cmd.Process.Pid

	// The providers: one bare libp2p host each, dialling the gateway on loopback only.
	hosts := make([]host.Host, n)
	for i, key := range keys {
		h, err := libp2p.New(libp2p.Identity(key), libp2p.NoListenAddrs, libp2p.DisableRelay())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = h.Connect(ctx, gw)
		cancel()
		if err != nil {
			b.Fatalf("provider %d connecting: %v", i, err)
		}
		hosts[i] = h
	}
	probe := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := Call(ctx, hosts[i], gw.ID, Request{Op: OpProbeSlice, Slice: fmt.Sprintf("p%03d", i)})
		return err
	}
	// Warm up: one probe each, so first-stream costs (protocol negotiation, lazily built
	// state) fall outside the windows, then let the gateway settle.
	for i := range hosts {
		if err := probe(i); err != nil {
			b.Fatalf("warm-up probe of p%03d: %v", i, err)
		}
	}
	time.Sleep(2 * time.Second)

	// measure returns the share of one core the gateway used while run ran (run returns when
	// the window is over).
	measure := func(run func()) float64 {
		before, err := cpuTicks(pid)
		if err != nil {
			b.Fatalf("%v\n%s", err, childLog())
		}
		start := time.Now()
		run()
		after, err := cpuTicks(pid)
		if err != nil {
			b.Fatalf("%v\n%s", err, childLog())
		}
		elapsed := time.Since(start)
		return float64(after-before) / clkTck / elapsed.Seconds() * 100
	}

	var idleSum, idleAfterSum, pollSum, watchSum float64
	var watched atomic.Int64
	var rounds int
	var calls atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	for b.Loop() {
		idleSum += measure(func() { time.Sleep(window) })
		pollSum += measure(func() {
			t0 := time.Now()
			end := t0.Add(window)
			var wg sync.WaitGroup
			for i := range hosts {
				// Provider i polls at t0 + i/n s + k s: starts spread evenly over the first second.
				first := t0.Add(time.Duration(i) * time.Second / n)
				wg.Go(func() {
					for at := first; at.Before(end); at = at.Add(time.Second) {
						time.Sleep(time.Until(at))
						calls.Add(1)
						if err := probe(i); err != nil {
							errMu.Lock()
							if firstErr == nil {
								firstErr = fmt.Errorf("probe of p%03d: %w", i, err)
							}
							errMu.Unlock()
						}
					}
				})
			}
			wg.Wait()
			time.Sleep(time.Until(end)) // the window is the same length as the idle one
		})
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		// The same probes as watches: each provider asks once, the gateway answers every
		// second on that stream (one timer for all of them).
		watchSum += measure(func() {
			ctx, cancel := context.WithTimeout(context.Background(), window)
			defer cancel()
			var wg sync.WaitGroup
			for i := range hosts {
				wg.Go(func() {
					err := Watch(ctx, hosts[i], gw.ID, Request{Op: OpProbeSlice, Slice: fmt.Sprintf("p%03d", i), EveryMs: 1000},
						func(r Response) error {
							if r.Status != 200 {
								return fmt.Errorf("watch of p%03d: %d %s", i, r.Status, r.Error)
							}
							watched.Add(1)
							return nil
						})
					if err != nil {
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
					}
				})
			}
			wg.Wait()
		})
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		// The floor again, after: the lower of the two is taken, so that background work
		// of the first (settling after the warm-up) is not credited to the probes.
		idleAfterSum += measure(func() { time.Sleep(window) })
		rounds++
	}
	idleSum = min(idleSum, idleAfterSum)
	idle, poll, watch := idleSum/float64(rounds), pollSum/float64(rounds), watchSum/float64(rounds)
	b.ReportMetric(poll, "%core-gw@1Hz")
	b.ReportMetric(idle, "%core-gw-idle")
	b.ReportMetric(poll-idle, "%core-gw-probes")
	b.ReportMetric(watch-idle, "%core-gw-watches")
	b.ReportMetric(float64(watched.Load())/(window.Seconds()*float64(rounds)), "answers/s")
	b.ReportMetric(float64(calls.Load())/(window.Seconds()*float64(rounds)), "probes/s")
}
