package wasm

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func get(t testing.TB, url string) (int, string, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func TestCounterOverHTTP(t *testing.T) {
	bin := wat(t, counterWAT)
	t.Logf("counter.wasm: %d bytes", len(bin))
	r := newRuntime(t)
	host := newMemHost()
	app := start(t, r, Config{Name: "counter", Module: bin, Host: host})
	srv := httptest.NewServer(app)
	defer srv.Close()

	for want := 1; want <= 3; want++ {
		status, ct, body := get(t, srv.URL+"/count")
		if status != 200 || ct != "application/json" {
			t.Fatalf("GET: %d %q %s", status, ct, body)
		}
		var got struct{ Count int }
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		if got.Count != want {
			t.Errorf("count = %d, want %d", got.Count, want)
		}
	}
	host.mu.Lock()
	stored := host.kv["count"]
	host.mu.Unlock()
	if len(stored) != 4 || binary.LittleEndian.Uint32(stored) != 3 {
		t.Errorf("kv count = %v, want 3 as 4 bytes little endian", stored)
	}
	if n := host.logged("counter: ready"); n != 1 {
		t.Errorf("%d ready logs, want 1", n)
	}
	if n := host.logged("counter: hit"); n != 3 {
		t.Errorf("%d hit logs, want 3", n)
	}
	if got := host.metric("requests"); got != 3 {
		t.Errorf("requests metric = %v, want 3", got)
	}
	waitFor(t, 5*time.Second, "the 500 ms timer to fire twice", func() bool { return host.metric("ticks") >= 2 })
	if app.Calls() < 6 || app.CPUTime() <= 0 {
		t.Errorf("calls %d, cpu %v", app.Calls(), app.CPUTime())
	}
	if got := app.MemoryBytes(); got != pageSize {
		t.Errorf("memory %d, want one page", got)
	}
	t.Logf("calls %d, cpu %v, memory %d bytes", app.Calls(), app.CPUTime(), app.MemoryBytes())

	// A full quota turns kv_put's refusal into the app's own 507.
	host.mu.Lock()
	host.quota = 3
	host.mu.Unlock()
	if status, _, body := get(t, srv.URL); status != http.StatusInsufficientStorage || !strings.Contains(string(body), "kv_put failed") {
		t.Errorf("over quota: %d %s", status, body)
	}
}

func TestHelloGoReactor(t *testing.T) {
	bin := goGuest(t, true)
	t.Logf("hello-go.wasm (reactor): %d bytes", len(bin))
	r := newRuntime(t)
	host := newMemHost()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "seed.txt"), []byte("put there by the slice"), 0o644); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	app := start(t, r, Config{Name: "hello-go", Module: bin, Host: host, FSDir: dir})
	t.Logf("compile + instantiate + init: %v", time.Since(begin))
	srv := httptest.NewServer(app)
	defer srv.Close()

	for want := 1; want <= 2; want++ {
		status, ct, body := get(t, srv.URL+"/greet?lang=go")
		if status != 200 || ct != "application/json" {
			t.Fatalf("GET: %d %q %s", status, ct, body)
		}
		var got struct {
			Greeting, Method, Path string
			Visits                 int
			Files                  []string
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		if got.Greeting != "hello from Go on nanodc" || got.Method != "GET" || got.Path != "/greet?lang=go" || got.Visits != want ||
			!slices.Equal(got.Files, []string{"seed.txt", "visits.txt"}) {
			t.Errorf("got %+v, want visit %d", got, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "visits.txt"))
	if err != nil || string(b) != "2\n" {
		t.Errorf("visits.txt in FSDir = %q, %v", b, err)
	}
	if got := host.metric("greetings"); got != 2 {
		t.Errorf("greetings metric = %v", got)
	}
	t.Logf("linear memory %d KiB, cpu %v over %d calls", app.MemoryBytes()>>10, app.CPUTime(), app.Calls())
}

func TestHelloGoCommand(t *testing.T) {
	bin := goGuest(t, false)
	t.Logf("hello-go.wasm (command): %d bytes", len(bin))
	r := newRuntime(t)
	host := newMemHost()
	dir := t.TempDir()
	app := start(t, r, Config{Name: "hello-cmd", Module: bin, Host: host, FSDir: dir})
	if !isDone(app) {
		t.Fatal("a command whose main returned should be done")
	}
	if code, reason := app.Fault(); code != "" {
		t.Errorf("fault %s: %s", code, reason)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || !strings.HasPrefix(string(b), "hello from a Go WASI command") {
		t.Errorf("hello.txt = %q, %v", b, err)
	}
	if host.logged("INFO hello-go: ran as a WASI command") != 1 {
		t.Errorf("stdout not logged: %q", host.logs)
	}
	rec := httptest.NewRecorder()
	app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Errorf("after exit: %d %s", rec.Code, rec.Body)
	}
}

// checkServes proves the runtime and a bystander app are unharmed.
func checkServes(t *testing.T, r *Runtime, bystander *App, counterBin []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	bystander.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 {
		t.Errorf("bystander: %d %s", rec.Code, rec.Body)
	}
	fresh := start(t, r, Config{Name: "fresh", Module: counterBin})
	rec = httptest.NewRecorder()
	fresh.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || rec.Body.String() != `{"count":1}` {
		t.Errorf("new app after the fault: %d %s", rec.Code, rec.Body)
	}
	_ = fresh.Stop(context.Background())
}

func TestContainment(t *testing.T) {
	counter := wat(t, counterWAT)
	const slack = time.Second // generous: -race and a busy 2-core machine
	cases := []struct {
		name    string
		fixture string
		cfg     Config
		check   func(t *testing.T, app *App)
	}{
		{"trap", "testdata/trap.wat", Config{}, func(t *testing.T, app *App) {
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if rec.Code != 503 || !strings.Contains(rec.Body.String(), "unreachable") {
				t.Errorf("trap answer: %d %s", rec.Code, rec.Body)
			}
			wantFault(t, app, "unreachable")
		}},
		{"infinite loop", "testdata/loop.wat", Config{CallTimeout: 100 * time.Millisecond}, func(t *testing.T, app *App) {
			begin := time.Now()
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			took := time.Since(begin)
			t.Logf("runaway call stopped after %v (timeout 100ms)", took)
			if took > 100*time.Millisecond+slack || took < 100*time.Millisecond {
				t.Errorf("runaway call took %v", took)
			}
			if rec.Code != 503 {
				t.Errorf("loop answer: %d %s", rec.Code, rec.Body)
			}
			wantFault(t, app, "ran longer than 100ms")
		}},
		{"long sleep", "testdata/sleep.wat", Config{CallTimeout: 100 * time.Millisecond}, func(t *testing.T, app *App) {
			begin := time.Now()
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			took := time.Since(begin)
			t.Logf("10 s WASI sleep ended after %v (timeout 100ms)", took)
			if took > 100*time.Millisecond+slack {
				t.Errorf("sleeping call took %v", took)
			}
			if rec.Code != 503 {
				t.Errorf("sleep answer: %d %s", rec.Code, rec.Body)
			}
			wantFault(t, app, "ran longer than 100ms")
		}},
		{"memory bomb", "testdata/membomb.wat", Config{MemoryLimitBytes: 1<<20 + 1000}, func(t *testing.T, app *App) {
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if rec.Code != 200 || rec.Body.Len() != 4 {
				t.Fatalf("bomb answer: %d %s", rec.Code, rec.Body)
			}
			if pages := binary.LittleEndian.Uint32(rec.Body.Bytes()); pages != 16 {
				t.Errorf("grew to %d pages, want the cap of 16", pages)
			}
			if got := app.MemoryBytes(); got != 1<<20 {
				t.Errorf("memory %d, want 1 MiB", got)
			}
			// A guest that traps when memory runs out faults, and only it.
			if err := app.Deliver("t", nil); !errors.Is(err, ErrFaulted) {
				t.Errorf("Deliver: %v", err)
			}
			wantFault(t, app, "unreachable")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRuntime(t)
			bystander := start(t, r, Config{Name: "bystander", Module: counter})
			cfg := c.cfg
			cfg.Name, cfg.Module = c.name, wat(t, c.fixture)
			app := start(t, r, cfg)
			c.check(t, app)
			checkServes(t, r, bystander, counter)
		})
	}
}

func wantFault(t *testing.T, app *App, reason string) {
	t.Helper()
	select {
	case <-app.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the fault")
	}
	code, got := app.Fault()
	if code != FaultWhileActive || !strings.Contains(got, reason) {
		t.Errorf("fault %q %q, want %s containing %q", code, got, FaultWhileActive, reason)
	}
	rec := httptest.NewRecorder()
	app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"error"`) {
		t.Errorf("faulted app answered %d %s", rec.Code, rec.Body)
	}
}

func TestWASITraversal(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "slice", "storage")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove("/nanodc-wasm-escape") })

	r := newRuntime(t)
	counter := wat(t, counterWAT)
	bystander := start(t, r, Config{Name: "bystander", Module: counter})
	app := start(t, r, Config{Name: "traversal", Module: wat(t, "testdata/traversal.wat"), FSDir: dir})
	rec := httptest.NewRecorder()
	app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 || rec.Body.Len() != 28 {
		t.Fatalf("answer: %d %q", rec.Code, rec.Body)
	}
	const ePerm = 63 // WASI errno
	what := []string{`create "../escape"`, `create "/nanodc-wasm-escape"`, `read "../../etc/passwd"`,
		`create through symlink to outside`, `symlink to "../../escape-dir"`, `create "ok.txt"`, `read "/etc/passwd"`}
	for i, w := range what {
		got := binary.LittleEndian.Uint32(rec.Body.Bytes()[4*i:])
		want := uint32(ePerm)
		if i == 5 {
			want = 0
		}
		if got != want {
			t.Errorf("%s: errno %d, want %d", w, got, want)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("created outside FSDir: %v", ents)
	}
	for _, p := range []string{"/nanodc-wasm-escape", filepath.Join(base, "slice", "escape"), filepath.Join(dir, "esc")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists (%v)", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ok.txt")); err != nil {
		t.Errorf("ok.txt not created inside FSDir: %v", err)
	}
	if code, _ := app.Fault(); code != "" {
		t.Errorf("refused paths should not fault the app: %s", code)
	}
	checkServes(t, r, bystander, counter)
}

func TestStartErrors(t *testing.T) {
	r := newRuntime(t)
	counter := wat(t, counterWAT)
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"garbage", Config{Module: []byte("not wasm at all")}, "bad module"},
		{"no memory", Config{Module: wat(t, "testdata/nomemory.wat")}, `missing export "memory"`},
		{"foreign import", Config{Module: wat(t, "testdata/badimport.wat")}, "env.open_socket"},
		{"wrong import type", Config{Module: wat(t, "testdata/badsig.wat")}, "nanodc.log with type (i32) -> ()"},
		{"initial memory over the cap", Config{Module: wat(t, "testdata/bigmem.wat")}, "initial memory 32 MiB (512 pages) is over the cap of 16 MiB (256 pages)"},
		{"memory limit below a page", Config{Module: counter, MemoryLimitBytes: 1000}, "below one 64 KiB page"},
		{"init trap", Config{Module: wat(t, "testdata/inittrap.wat")}, "init: init trapped: wasm error: unreachable"},
		{"command exits non-zero", Config{Module: wat(t, "testdata/exit3.wat")}, "_start exited with code 3"},
		{"missing storage", Config{Module: counter, FSDir: filepath.Join(t.TempDir(), "nope")}, "storage"},
		{"no host", Config{Module: counter, Host: nilHost()}, "no Host"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.Name = c.name
			if cfg.Host == nil && c.name != "no host" {
				cfg.Host = newMemHost()
			}
			app, err := r.Start(context.Background(), cfg)
			if err == nil {
				_ = app.Stop(context.Background())
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.name) {
				t.Errorf("error %q, want it to name the app and contain %q", err, c.want)
			}
		})
	}
	r.mu.Lock()
	if len(r.apps) != 0 {
		t.Errorf("failed starts left %d apps registered", len(r.apps))
	}
	r.mu.Unlock()
	bystander := start(t, r, Config{Name: "after", Module: counter})
	checkServes(t, r, bystander, counter)
}

func nilHost() Host { return nil }

func TestConcurrentRequests(t *testing.T) {
	r := newRuntime(t)
	app := start(t, r, Config{Name: "counter", Module: wat(t, counterWAT)})
	srv := httptest.NewServer(app)
	defer srv.Close()
	const n = 20
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts []int
	)
	for range n {
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var got struct{ Count int }
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
				t.Errorf("%d %v", resp.StatusCode, err)
				return
			}
			mu.Lock()
			counts = append(counts, got.Count)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(counts)
	// Calls are serialised, so every increment is seen exactly once.
	for i, c := range counts {
		if c != i+1 {
			t.Fatalf("counts %v, want 1..%d each once", counts, n)
		}
	}
}

func TestStopCancelsCallInFlight(t *testing.T) {
	r := newRuntime(t)
	app := start(t, r, Config{Name: "loop", Module: wat(t, "testdata/loop.wat"), CallTimeout: time.Minute})
	answered := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		answered <- rec.Code
	}()
	time.Sleep(100 * time.Millisecond)
	begin := time.Now()
	if err := app.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Stop took %v", took)
	}
	if code := <-answered; code != 503 {
		t.Errorf("request in flight got %d", code)
	}
	if code, reason := app.Fault(); code != "" {
		t.Errorf("a stop is not a fault: %s %s", code, reason)
	}
	if !isDone(app) || app.MemoryBytes() != 0 {
		t.Errorf("done %v, memory %d", isDone(app), app.MemoryBytes())
	}
	if err := app.Deliver("x", nil); !errors.Is(err, ErrStopped) {
		t.Errorf("Deliver after stop: %v", err)
	}
}

func TestDeliver(t *testing.T) {
	r := newRuntime(t)
	host := newMemHost()
	host.kv["news"] = []byte("old")
	app := start(t, r, Config{Name: "echo", Module: wat(t, "testdata/echo.wat"), Host: host})
	if err := app.Deliver("news", []byte("hello subscribers")); err != nil {
		t.Fatal(err)
	}
	host.mu.Lock()
	defer host.mu.Unlock()
	if len(host.published) != 1 || host.published[0].topic != "echoed" || string(host.published[0].data) != "hello subscribers" {
		t.Errorf("published %+v", host.published)
	}
	if _, ok := host.kv["news"]; ok {
		t.Error("kv_delete of the topic's key did not happen")
	}
	counter := start(t, r, Config{Name: "counter", Module: wat(t, counterWAT)})
	if err := counter.Deliver("news", nil); !errors.Is(err, ErrNoHandler) {
		t.Errorf("Deliver to an app without on_message: %v", err)
	}
}

func TestCompiledOnce(t *testing.T) {
	r := newRuntime(t)
	bin := wat(t, counterWAT)
	apps := make([]*App, 3)
	for i := range apps {
		apps[i] = start(t, r, Config{Name: fmt.Sprint("c", i), Module: bin})
	}
	r.mu.Lock()
	if len(r.modules) != 1 {
		t.Errorf("%d compiled modules for one binary", len(r.modules))
	}
	for _, c := range r.modules {
		if c.refs != 3 {
			t.Errorf("refs %d, want 3", c.refs)
		}
	}
	r.mu.Unlock()
	for _, a := range apps {
		_ = a.Stop(context.Background())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.idle.Len() != 1 || len(r.apps) != 0 {
		t.Errorf("idle %d, apps %d after stopping all", r.idle.Len(), len(r.apps))
	}
}

func TestSlowTimerDoesNotPileUp(t *testing.T) {
	r := newRuntime(t)
	host := newMemHost()
	before := runtime.NumGoroutine()
	app := start(t, r, Config{Name: "slow", Module: wat(t, "testdata/slowtimer.wat"), Host: host, CallTimeout: 500 * time.Millisecond})
	peak := 0
	for range 100 { // 1 s
		time.Sleep(10 * time.Millisecond)
		peak = max(peak, runtime.NumGoroutine()-before)
	}
	ticks := host.metric("ticks")
	t.Logf("%v ticks in 1 s at 50 ms each; at most %d extra goroutines", ticks, peak)
	if ticks < 5 || ticks > 20 {
		t.Errorf("%v ticks in 1 s, want about 1s / (50ms + 10ms)", ticks)
	}
	if peak > 3 {
		t.Errorf("%d extra goroutines: timer calls pile up", peak)
	}
	if code, reason := app.Fault(); code != "" {
		t.Errorf("fault %s %s", code, reason)
	}
}
