package slice

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestPrivateServiceRegistry: an app's offered services are reachable by the other apps of
// its slice and by nobody else; they come and go with the app; a name is held by one app at
// a time; an app calling its own service is refused rather than deadlocked.
func TestPrivateServiceRegistry(t *testing.T) {
	counter, relay := counterModule(t), watModule(t, "relay")
	m, err := New(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mux := http.NewServeMux()
	mux.Handle("/slices/{slice}/apps/{app}/", m.AppHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	op := Principal{Role: RoleOperator}
	keys := map[string]crypto.PrivKey{}
	owner := map[string]Principal{}
	for _, sid := range []string{"a", "b"} {
		keys[sid] = newKey(t)
		id, _ := peer.IDFromPrivateKey(keys[sid])
		owner[sid] = Principal{Role: RoleProvider, Peer: id}
		mustDo(t, m, op, Request{Op: OpSliceCreate, Slice: sid, Provider: id.String(), Services: []string{ServiceStorage}})
	}
	install := func(sid string, man Manifest, module []byte) error {
		u, err := Pack(keys[sid], man, module)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := u.Encode()
		_, err = m.Do(context.Background(), owner[sid], Request{Op: OpAppInstall, Slice: sid, Unit: raw, Start: true})
		return err
	}
	counterApp := Manifest{Name: "counter", Kind: KindWASM, Requires: []string{ServiceStorage}, Provides: []string{"count"}, MemoryBytes: 64 << 10}
	relayApp := Manifest{Name: "relay", Kind: KindWASM, MemoryBytes: 64 << 10}
	for _, step := range []struct {
		sid string
		man Manifest
		mod []byte
	}{{"a", counterApp, counter}, {"a", relayApp, relay}, {"b", relayApp, relay}} {
		if err := install(step.sid, step.man, step.mod); err != nil {
			t.Fatalf("install %s in %s: %v", step.man.Name, step.sid, err)
		}
	}
	get := func(sid string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/slices/" + sid + "/apps/relay/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	expect := func(sid string, status int, body string) {
		t.Helper()
		if st, b := get(sid); st != status || !strings.Contains(b, body) {
			t.Fatalf("relay in slice %s: %d %s; want %d with %s", sid, st, b, status, body)
		}
	}
	expect("a", 200, `{"count":1}`)
	expect("a", 200, `{"count":2}`)
	// Slice b's relay does not see slice a's "count".
	expect("b", 404, "no service count")

	// b offers its own "count", with its own storage.
	if err := install("b", counterApp, counter); err != nil {
		t.Fatal(err)
	}
	expect("b", 200, `{"count":1}`)
	expect("a", 200, `{"count":3}`)

	// The registry is in the slice's probe, for its provider.
	res := mustDo(t, m, owner["a"], Request{Op: OpProbeSlice, Slice: "a"})
	raw, _ := json.Marshal(res)
	var view SliceView
	_ = json.Unmarshal(raw, &view)
	if view.Registry["count"] != "counter" || len(view.Registry) != 1 {
		t.Fatalf("slice a's registry: %v", view.Registry)
	}

	// One app holds a name at a time: a second "count" in a is refused at start.
	dup := counterApp
	dup.Name = "counter2"
	if err := install("a", dup, counter); err == nil || !strings.Contains(err.Error(), `already offered in the slice by app "counter"`) {
		t.Fatalf("second provider of count in slice a: %v", err)
	}
	// Core service names are not the slice's to offer.
	bad := counterApp
	bad.Name, bad.Provides = "impostor", []string{ServiceLogger}
	if err := install("a", bad, counter); err == nil || !strings.Contains(err.Error(), "name of a core service") {
		t.Fatalf("app offering a core service name: %v", err)
	}

	// Stopping the offering app withdraws the service at once.
	mustDo(t, m, owner["a"], Request{Op: OpAppStop, Slice: "a", App: "counter"})
	expect("a", 404, "no service count")
	// counter2 can have the name now.
	mustDo(t, m, owner["a"], Request{Op: OpAppStart, Slice: "a", App: "counter2"})
	expect("a", 200, `{"count":1}`) // counter2 keeps its own keys

	// An app calling the service it offers itself is refused (502 from relay), not deadlocked.
	self := relayApp
	self.Name, self.Provides = "selfish", []string{"loop"}
	if err := install("b", self, relay); err != nil {
		t.Fatal(err)
	}
	h := &sliceHost{m: m, ls: m.live["b"], slice: "b", app: "selfish"}
	if _, _, err := h.CallService(context.Background(), "loop", "/", nil); err == nil || !strings.Contains(err.Error(), "calling app itself") {
		t.Fatalf("self call: %v", err)
	}
}
