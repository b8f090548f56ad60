package wasm

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// memHost is an in-memory Host: what a slice would give an app, minus the slice.
type memHost struct {
	mu        sync.Mutex
	kv        map[string][]byte
	quota     int // total bytes of values allowed; 0 = no limit
	logs      []string
	metrics   map[string]float64
	published []pubMsg
}

type pubMsg struct {
	topic string
	data  []byte
}

var errQuota = errors.New("storage quota exceeded")

func newMemHost() *memHost {
	return &memHost{kv: map[string][]byte{}, metrics: map[string]float64{}}
}

func (h *memHost) Log(level slog.Level, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs = append(h.logs, level.String()+" "+msg)
}

func (h *memHost) KVGet(key string) ([]byte, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.kv[key]
	return v, ok, nil
}

func (h *memHost) KVPut(key string, val []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.quota > 0 {
		total := len(val)
		for k, v := range h.kv {
			if k != key {
				total += len(v)
			}
		}
		if total > h.quota {
			return errQuota
		}
	}
	h.kv[key] = append([]byte(nil), val...)
	return nil
}

func (h *memHost) KVDelete(key string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.kv, key)
	return nil
}

func (h *memHost) Publish(topic string, data []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.published = append(h.published, pubMsg{topic, append([]byte(nil), data...)})
	return nil
}

// CallService: the test host offers one service, "echo", answering the body it got.
func (h *memHost) CallService(_ context.Context, name, _ string, body []byte) (int, []byte, error) {
	if name != "echo" {
		return 0, nil, ErrNoService
	}
	return 200, body, nil
}

func (h *memHost) Metric(name string, delta float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.metrics[name] += delta
}

func (h *memHost) metric(name string) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.metrics[name]
}

func (h *memHost) logged(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.logs {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// needTool finds a build tool; without it the test is skipped, except in CI (CI set), where a
// missing tool means the machine was not set up and must fail loudly.
func needTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found (Debian package %s): run scripts/install-deps.sh", name, pkg)
	}
	t.Skipf("%s not found (Debian package %s); run scripts/install-deps.sh to run this test", name, pkg)
	return ""
}

// wat compiles a WAT file (relative to this package) with wat2wasm.
func wat(t testing.TB, path string) []byte {
	t.Helper()
	tool := needTool(t, "wat2wasm", "wabt")
	out := filepath.Join(t.TempDir(), filepath.Base(path)+".wasm")
	if b, err := exec.Command(tool, path, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s: %v\n%s", path, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const counterWAT = "../../../examples/wasm/counter/counter.wat"

// goGuest builds examples/wasm/hello-go for wasip1, as a reactor or as a command.
func goGuest(t testing.TB, reactor bool) []byte {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(t.TempDir(), "hello-go.wasm")
	args := []string{"build", "-o", out}
	if reactor {
		args = append(args, "-buildmode=c-shared")
	}
	cmd := exec.Command(gobin, append(args, "../../../examples/wasm/hello-go")...)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building hello-go: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	r, err := NewRuntime(context.Background(), slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Runtime.Close: %v", err)
		}
	})
	return r
}

func start(t testing.TB, r *Runtime, cfg Config) *App {
	t.Helper()
	if cfg.Host == nil {
		cfg.Host = newMemHost()
	}
	a, err := r.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
	})
	return a
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isDone(a *App) bool {
	select {
	case <-a.Done():
		return true
	default:
		return false
	}
}
