package slice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestWatchOverOverlay: a provider watching its slice's probe gets an answer now and then one
// per period on one stream; watching another provider's slice is refused at once; removing
// the slice ends the watch with a refusal; the gateway's timer goes when the last watcher does.
func TestWatchOverOverlay(t *testing.T) {
	gw := startGateway(t, t.TempDir(), "")
	op := Principal{Role: RoleOperator}
	keyA, keyB := newKey(t), newKey(t)
	idA, _ := peer.IDFromPrivateKey(keyA)
	idB, _ := peer.IDFromPrivateKey(keyB)
	mustDo(t, gw.m, op, Request{Op: OpSliceCreate, Slice: "a", Provider: idA.String()})
	mustDo(t, gw.m, op, Request{Op: OpSliceCreate, Slice: "b", Provider: idB.String()})
	a := newClient(t, gw, keyA)

	// Four answers at 250 ms: the first at once, then one per period.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []time.Time
	start := time.Now()
	errStop := errors.New("enough")
	err := Watch(ctx, a.h, a.gw, Request{Op: OpProbeSlice, Slice: "a", EveryMs: 250}, func(r Response) error {
		var v SliceView
		if r.Status != http.StatusOK || json.Unmarshal(r.Result, &v) != nil || v.ID != "a" {
			t.Fatalf("watch answer: %+v", r)
		}
		got = append(got, time.Now())
		if len(got) == 4 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("watch ended with %v after %d answers", err, len(got))
	}
	// Lower bound only: three periods cannot pass faster than 750 ms.
	if d := got[3].Sub(start); d < 700*time.Millisecond {
		t.Fatalf("4 answers at a 250 ms period came in %v", d)
	}

	// B's slice: refused with the first answer, and the watch ends.
	var answers []Response
	err = Watch(ctx, a.h, a.gw, Request{Op: OpProbeSlice, Slice: "b", EveryMs: 250}, func(r Response) error {
		answers = append(answers, r)
		return nil
	})
	if err != nil || len(answers) != 1 || answers[0].Status != http.StatusForbidden {
		t.Fatalf("watching another provider's slice: err %v, answers %+v", err, answers)
	}

	// Removing the slice ends a running watch with a refusal.
	answers = nil
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, a.h, a.gw, Request{Op: OpProbeSlice, Slice: "a", EveryMs: 250}, func(r Response) error {
			answers = append(answers, r)
			return nil
		})
	}()
	time.Sleep(600 * time.Millisecond)
	mustDo(t, gw.m, op, Request{Op: OpSliceRemove, Slice: "a"})
	select {
	case err := <-done:
		// A provider is told 403 for a slice that is not (or no longer) its own: whether a
		// slice exists is not for providers to learn.
		if last := answers[len(answers)-1]; err != nil || len(answers) < 2 || last.Status != http.StatusForbidden {
			t.Fatalf("watch of a removed slice: err %v, %d answers, last %+v", err, len(answers), answers[len(answers)-1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch of a removed slice did not end")
	}
	// No watcher left: no timer left.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		gw.m.watches.mu.Lock()
		n := len(gw.m.watches.groups)
		gw.m.watches.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d watch timers still run with no watcher", n)
		}
	}
}

func TestWatchRequestValidation(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{"op":"app.install","slice":"a","every_ms":1000}`, "cannot be watched"},
		{`{"op":"probe.core","every_ms":10}`, "every_ms must be in"},
		{`{"op":"probe.core","every_ms":7200000}`, "every_ms must be in"},
	} {
		if _, err := DecodeRequest(strings.NewReader(c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.body, err, c.want)
		}
	}
	if _, err := DecodeRequest(strings.NewReader(`{"op":"probe.core","every_ms":1000}`)); err != nil {
		t.Errorf("a valid watch: %v", err)
	}
}
