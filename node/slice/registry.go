package slice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/nanodc/nanodc/node/slice/wasm"
)

// The slice's private service registry. An app declares in its signed manifest the services
// it offers (Manifest.Provides); while it is Active they are registered in its slice's
// registry, and the slice's other apps reach them by name (wasm ABI service_call). Another
// slice's registry is a different map: names there are neither visible nor callable, so two
// competing providers may both offer "stats" without meeting. Lookups are dynamic, as in an
// OSGi service registry: a service appears when its app starts and is gone when it stops, and
// a caller sees "no such service" rather than a stale reference.

// ErrNoService is returned for a service not offered in the caller's slice right now.
var ErrNoService = wasm.ErrNoService

// maxServiceResponse bounds what a service call hands back to its caller.
const maxServiceResponse = 1 << 20

// validateProvides checks a manifest's offered service names.
func validateProvides(u *Unit) error {
	seen := map[string]bool{}
	for _, p := range u.Manifest.Provides {
		if err := ValidID("service", p); err != nil {
			return fmt.Errorf("unit %s: provides: %w", u.Manifest.Name, err)
		}
		if slices.Contains(CoreServices, p) {
			return fmt.Errorf("unit %s: provides %q, the name of a core service", u.Manifest.Name, p)
		}
		if seen[p] {
			return fmt.Errorf("unit %s: provides %q twice", u.Manifest.Name, p)
		}
		seen[p] = true
	}
	return nil
}

// registerLocked claims u's services in the slice for app, or names the app that holds one.
func (ls *liveSlice) registerLocked(app string, u *Unit) error {
	for _, p := range u.Manifest.Provides {
		if owner, ok := ls.registry[p]; ok && owner != app {
			return fmt.Errorf("service %q is already offered in the slice by app %q", p, owner)
		}
	}
	for _, p := range u.Manifest.Provides {
		ls.registry[p] = app
	}
	return nil
}

func (ls *liveSlice) unregisterLocked(app string) {
	for name, owner := range ls.registry {
		if owner == app {
			delete(ls.registry, name)
		}
	}
}

// registrySnapshotLocked is the slice's registry for its probe (service → app).
func (ls *liveSlice) registrySnapshotLocked() map[string]string {
	if len(ls.registry) == 0 {
		return nil // omitted from the probe
	}
	return maps.Clone(ls.registry)
}

// CallService sends one request to the app offering service name in the caller's slice: a
// POST of body to path, under that app's own path (/slices/<id>/apps/<app><path>), so the
// app serves the home and its slice with one handler. It waits at most until ctx ends (for a
// WASM caller: its own call's deadline). An app cannot call a service it offers itself: that
// would wait on its own call forever.
func (h *sliceHost) CallService(ctx context.Context, name, path string, body []byte) (int, []byte, error) {
	if err := ValidID("service", name); err != nil {
		return 0, nil, err
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n") {
		return 0, nil, fmt.Errorf("service %s: path %q must start with / and hold no spaces", name, path)
	}
	h.m.mu.Lock()
	owner, ok := h.ls.registry[name]
	var la *liveApp
	if ok {
		la = h.ls.apps[owner]
	}
	h.m.mu.Unlock()
	switch {
	case !ok || la == nil || la.stopping:
		return 0, nil, fmt.Errorf("%w: %s", ErrNoService, name)
	case owner == h.app:
		return 0, nil, fmt.Errorf("service %s is offered by the calling app itself", name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/slices/"+h.slice+"/apps/"+owner+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("service %s: %w", name, err)
	}
	req.Header.Set("X-Nanodc-Caller", h.app)
	rec := &recorder{header: http.Header{}}
	la.inst.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.over {
		return 0, nil, fmt.Errorf("service %s: response over %d bytes", name, maxServiceResponse)
	}
	return rec.status, rec.body.Bytes(), nil
}

// recorder is the response writer of an in-slice service call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	over   bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	if r.body.Len()+len(b) > maxServiceResponse {
		r.over = true
		return 0, errors.New("service response too large")
	}
	return r.body.Write(b)
}
