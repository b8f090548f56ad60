package ratelimit

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// Pacing can only be checked from below on a noisy machine: the bytes must not pass faster
// than the rate allows (plus one burst), and must all arrive intact.
func TestReaderAndWriterHoldTheRate(t *testing.T) {
	const bps, burst, size = 800_000, 4 << 10, 40 << 10 // 100 kB/s
	want := bytes.Repeat([]byte("nanodc"), size/6)
	minTime := time.Duration(float64(len(want)-burst) / (bps / 8) * float64(time.Second))

	start := time.Now()
	got, err := io.ReadAll(Reader(bytes.NewReader(want), New(bps, burst)))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reader: err %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, want))
	}
	if d := time.Since(start); d < minTime*9/10 {
		t.Errorf("reader passed %d bytes in %v; at %d bit/s it takes at least %v", len(want), d, bps, minTime)
	}

	var out bytes.Buffer
	start = time.Now()
	if n, err := Writer(&out, New(bps, burst)).Write(want); err != nil || n != len(want) || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("writer: n %d err %v", n, err)
	}
	if d := time.Since(start); d < minTime*9/10 {
		t.Errorf("writer passed %d bytes in %v; at %d bit/s it takes at least %v", len(want), d, bps, minTime)
	}
}

func TestUnlimitedAndNilPassThrough(t *testing.T) {
	r := bytes.NewReader([]byte("x"))
	if Reader(r, nil) != io.Reader(r) {
		t.Error("nil limiter should return the reader itself")
	}
	if Limit(0) != Limit(-1) || New(0, 1).Limit() != Limit(0) {
		t.Error("bps <= 0 should be unlimited")
	}
	got, _ := io.ReadAll(Reader(bytes.NewReader(make([]byte, 1<<20)), New(0, 1)))
	if len(got) != 1<<20 {
		t.Errorf("unlimited reader lost bytes: %d", len(got))
	}
}
