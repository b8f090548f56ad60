package wasm

import (
	"context"
	"fmt"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// BenchmarkStartCounter measures instantiate-to-ready for the counter app with its module
// already compiled (the cache is warm after the first deploy): instantiate, run init, ready.
func BenchmarkStartCounter(b *testing.B) {
	r := newRuntime(b)
	bin := wat(b, counterWAT)
	host := newMemHost()
	warm, err := r.Start(context.Background(), Config{Name: "warm", Module: bin, Host: host})
	if err != nil {
		b.Fatal(err)
	}
	defer warm.Stop(context.Background()) // keeps the compiled module referenced
	var ready time.Duration
	b.ResetTimer()
	for b.Loop() {
		begin := time.Now()
		a, err := r.Start(context.Background(), Config{Name: "c", Module: bin, Host: host})
		ready += time.Since(begin)
		if err != nil {
			b.Fatal(err)
		}
		_ = a.Stop(context.Background())
	}
	b.ReportMetric(float64(ready.Microseconds())/float64(b.N), "us/ready")
}

// BenchmarkCounterHTTP measures one HTTP call into the counter app: body read, guest call with
// kv get/put, log, metric and respond, response written.
func BenchmarkCounterHTTP(b *testing.B) {
	r := newRuntime(b)
	a := start(b, r, Config{Name: "c", Module: wat(b, counterWAT)})
	var took time.Duration
	for b.Loop() {
		rec := httptest.NewRecorder()
		begin := time.Now()
		a.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		took += time.Since(begin)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(took.Nanoseconds())/1e3/float64(b.N), "us/call")
}

// BenchmarkIdleCounterMemory measures the Go heap held by an idle counter instance: growth over
// 100 started instances, divided by 100. One wasm page (64 KiB) of it is the guest's memory.
func BenchmarkIdleCounterMemory(b *testing.B) {
	r := newRuntime(b)
	bin := wat(b, counterWAT)
	warm := start(b, r, Config{Name: "warm", Module: bin})
	_ = warm
	const n = 100
	var perInstance float64
	for b.Loop() {
		var before, after runtime.MemStats
		settle()
		runtime.ReadMemStats(&before)
		apps := make([]*App, n)
		for i := range apps {
			a, err := r.Start(context.Background(), Config{Name: fmt.Sprint("idle", i), Module: bin, Host: newMemHost()})
			if err != nil {
				b.Fatal(err)
			}
			apps[i] = a
		}
		settle()
		runtime.ReadMemStats(&after)
		perInstance += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		for _, a := range apps {
			_ = a.Stop(context.Background())
		}
	}
	perInstance /= float64(b.N)
	b.ReportMetric(perInstance, "B/instance")
	b.ReportMetric(perInstance-pageSize, "host-B/instance")
}

// settle collects garbage until what the last round freed is gone: wazero sets finalizers on
// some of its objects, which take a second GC (after the finalizer ran) to free.
func settle() {
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}
