package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/vod"
)

// KindVOD is the built-in app kind that runs the peer-assisted VoD app inside a video
// provider's slice.
const KindVOD = "vod"

// vodKind runs the VoD app in a slice: its cache lives in the slice's storage and counts
// against the slice's storage quota, its upload to peers and its download from peers and the origin are paced by the
// slice's bandwidth share, its streams count in the slice's resource-manager scope, it accepts only titles signed (and pushed) by the slice's provider, and its overlay
// protocols, gossip topic and DHT record live in the slice's namespace
// (/nanodc/slice/<id>/vod/…): competing video providers on one gateway each have their own
// swarm. One VoD app per slice.
type vodKind struct {
	n       *Node
	mu      sync.Mutex
	running map[string]*vodInstance // slice → the VoD app running there
}

// vodUnitConfig is what a vod unit's manifest config may set.
type vodUnitConfig struct {
	Strategy string `json:"strategy"`
	Locality string `json:"locality"`
	MaxPeers int    `json:"max_peers"`
}

func (k *vodKind) Start(_ context.Context, env slice.AppEnv, u *slice.Unit) (slice.Instance, error) {
	var cfg vodUnitConfig
	if len(u.Manifest.Config) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(u.Manifest.Config)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("vod unit config: %w", err)
		}
	}
	strategy := vod.StrategyNanodc
	if cfg.Strategy != "" {
		var err error
		if strategy, err = vod.ParseStrategy(cfg.Strategy); err != nil {
			return nil, err
		}
	}
	locality, err := vod.ParseLocality(cfg.Locality)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if other := k.running[env.Slice]; other != nil {
		return nil, fmt.Errorf("slice %q already runs the VoD app as %q; one VoD app per slice", env.Slice, other.name)
	}
	// The cache may fill nine tenths of the slice's storage quota: the rest is for the app's
	// state files and the slice's other apps.
	vo := vod.Options{
		Overlay:    env.Overlay,
		Dir:        env.FilesDir,
		CacheBytes: max(env.Quotas.StorageBytes*9/10, 1<<20),
		Providers:  []peer.ID{env.Provider},
		Strategy:   strategy,
		Locality:   locality,
		Namespace:  env.Slice,
		MaxPeers:   cfg.MaxPeers,
		// Every byte to and from peers and the origin draws from the slice's bandwidth
		// share, and every overlay stream counts in the slice's resource-manager scope.
		UploadLimiter:   env.Upload,
		DownloadLimiter: env.Download,
		StreamScope:     env.ScopeStream,
		Logger:          env.Logger,
	}
	if k.n.opts.VODOverride != nil {
		// The emulator's origin client and fetch observer, as for the node-level app.
		k.n.opts.VODOverride(&vo)
	}
	app, err := vod.New(vo)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &vodInstance{app: app, name: env.App, cancel: cancel, done: make(chan struct{}), served: make(chan struct{}),
		prefix: "/slices/" + env.Slice + "/apps/" + env.App, release: func() {
			k.mu.Lock()
			delete(k.running, env.Slice)
			k.mu.Unlock()
		}}
	if k.running == nil {
		k.running = map[string]*vodInstance{}
	}
	k.running[env.Slice] = in
	go func() {
		defer close(in.served)
		_ = app.Serve(ctx)
	}()
	return in, nil
}

// app returns the VoD app running in slice id, or nil.
func (k *vodKind) app(id string) *vod.App {
	k.mu.Lock()
	defer k.mu.Unlock()
	if in := k.running[id]; in != nil {
		return in.app
	}
	return nil
}

type vodInstance struct {
	app     *vod.App
	name    string
	prefix  string
	cancel  context.CancelFunc
	served  chan struct{} // closed when Serve returned
	done    chan struct{} // closed when stopped
	once    sync.Once
	release func()
}

// ServeHTTP serves the app's /vod/{title}, its title and stats listings, and POST
// /api/v1/vod/titles (add a title the slice's provider signed: how a home player learns a
// title it was not pushed) under the slice's path.
func (v *vodInstance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == v.prefix+"/api/v1/vod/titles" {
		v.app.ServeAddTitle(w, r)
		return
	}
	http.StripPrefix(v.prefix, v.app.Handler()).ServeHTTP(w, r)
}

func (v *vodInstance) Stop(ctx context.Context) error {
	var err error
	v.once.Do(func() {
		v.cancel()
		select {
		case <-v.served:
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
		err = v.app.Close()
		v.release()
		close(v.done)
	})
	return err
}

func (v *vodInstance) Fault() (string, string) { return "", "" }
func (v *vodInstance) Done() <-chan struct{}   { return v.done }

// MemoryBytes is 0: Go code is not metered per slice (docs/slices.md); the app is held to
// its slice's storage and upload quotas instead.
func (v *vodInstance) MemoryBytes() int64     { return 0 }
func (v *vodInstance) CPUTime() time.Duration { return 0 }
