package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nanodc/nanodc/overlay"
)

// Status is the answer of GET /api/v1/status.
type Status struct {
	PeerID           string         `json:"peer_id"`
	Addrs            []string       `json:"addrs"`
	Version          string         `json:"version"`
	UptimeSeconds    float64        `json:"uptime_s"`
	Labels           overlay.Labels `json:"labels"`
	ConnectedPeers   int            `json:"connected_peers"`
	RoutingTableSize int            `json:"routing_table_size"`
	PubSubPeers      int            `json:"pubsub_peers"`
	VOD              *VODStatus     `json:"vod,omitempty"`
}

// VODStatus is the VoD app's part of the status.
type VODStatus struct {
	Addr     string `json:"addr"` // where home players fetch /vod/{title}
	Strategy string `json:"strategy"`
	Titles   int    `json:"titles"`
}

// Peer is one entry of GET /api/v1/peers and of the providers listing.
type Peer struct {
	PeerID    string         `json:"peer_id"`
	Addrs     []string       `json:"addrs"`
	RTTMillis float64        `json:"rtt_ms"` // 0: not measured yet
	Labels    overlay.Labels `json:"labels"`
	Locality  string         `json:"locality"` // same-access-node, same-isp or remote
	Version   string         `json:"version,omitempty"`
	Connected bool           `json:"connected"`
}

// ProvideRequest is the body of POST /api/v1/dht/provide.
type ProvideRequest struct {
	CID string `json:"cid"`
}

// maxRequestBody bounds what a client may post; management requests are tiny.
const maxRequestBody = 64 << 10

func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	core := func(h http.Handler) http.Handler { return coreOnly(h) }
	mux.Handle("/api/v1/status", core(method("GET", n.handleStatus)))
	mux.Handle("/api/v1/peers", core(method("GET", n.handlePeers)))
	mux.Handle("/api/v1/dht", core(method("GET", n.handleDHT)))
	mux.Handle("/api/v1/dht/provide", core(method("POST", n.handleProvide)))
	mux.Handle("/api/v1/dht/providers/{cid}", core(method("GET", n.handleProviders)))
	mux.Handle("GET /api/v1/vod/stats", core(n.requireVOD(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, n.vod.Stats())
	})))
	mux.Handle("/api/v1/vod/titles", core(n.requireVOD(n.handleVODTitles)))
	mux.Handle("/metrics", core(method("GET", promhttp.HandlerFor(n.registry, promhttp.HandlerOpts{}).ServeHTTP)))
	// Slice management: every operation is checked by the slice manager's access matrix.
	mux.Handle("/api/v1/mgmt", method("POST", n.handleMgmt))
	mux.Handle("/api/v1/slices/{slice}/metrics", method("GET", n.handleSliceMetrics))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	outer := http.NewServeMux()
	// Apps in slices serve their own paths; they decide about their callers themselves.
	outer.Handle("/slices/{slice}/apps/{app}/", n.slices.AppHandler())
	outer.Handle("/", n.requireToken(mux))
	return outer
}

// requireToken admits only requests carrying a known bearer token and passes on who it
// stands for.
func (n *Node) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r)
		switch {
		case r.Header.Get("Authorization") == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="nanodc"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token (see the api-token file in the data directory)")
			return
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="nanodc", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid bearer token")
			return
		}
		p, ok := n.tokens.principal(tok)
		if !ok {
			n.log.Warn("management API: wrong token", "remote", r.RemoteAddr, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="nanodc", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid bearer token")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

func method(m string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == "GET" && r.Method == "HEAD") {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed, use %s", r.Method, m))
			return
		}
		h(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (n *Node) requireVOD(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.vod == nil {
			writeError(w, http.StatusNotFound, "the VoD app is not enabled on this gateway (vod.enabled)")
			return
		}
		h(w, r)
	})
}

// handleVODTitles lists the titles (GET) or adds a signed catalog entry (POST).
func (n *Node) handleVODTitles(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		n.vod.Handler().ServeHTTP(w, r)
	case http.MethodPost:
		n.vod.ServeAddTitle(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed, use GET or POST", r.Method))
	}
}

// StatusNow reports the node's current status.
func (n *Node) StatusNow() Status {
	o := n.overlay
	var vs *VODStatus
	if n.vod != nil {
		vs = &VODStatus{Addr: n.VODAddr(), Strategy: string(n.vod.Strategy()), Titles: len(n.vod.Titles())}
	}
	return Status{
		VOD:              vs,
		PeerID:           o.ID().String(),
		Addrs:            strs(o.Addrs()),
		Version:          n.opts.Version,
		UptimeSeconds:    o.Uptime().Seconds(),
		Labels:           o.Labels(),
		ConnectedPeers:   len(o.Host().Network().Peers()),
		RoutingTableSize: o.RoutingTableSize(),
		PubSubPeers:      o.PubSubPeers(),
	}
}

func (n *Node) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.StatusNow())
}

func (n *Node) handlePeers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, toPeers(n.overlay.Peers()))
}

func (n *Node) handleDHT(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.overlay.DHTState())
}

func (n *Node) handleProvide(w http.ResponseWriter, r *http.Request) {
	req, err := decodeProvideRequest(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	c, _ := cid.Decode(req.CID) // checked by the decoder
	if err := n.overlay.Provide(ctx, c); err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"cid": c.String(), "status": "provided"})
}

// decodeProvideRequest parses and checks a provide request from the API client.
func decodeProvideRequest(r io.Reader) (ProvideRequest, error) {
	var req ProvideRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return ProvideRequest{}, fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return ProvideRequest{}, errors.New("request body: trailing data after the JSON object")
	}
	if req.CID == "" {
		return ProvideRequest{}, errors.New("cid: missing")
	}
	if _, err := cid.Decode(req.CID); err != nil {
		return ProvideRequest{}, fmt.Errorf("cid: %q is not a CID: %w", req.CID, err)
	}
	return req, nil
}

func (n *Node) handleProviders(w http.ResponseWriter, r *http.Request) {
	c, err := cid.Decode(r.PathValue("cid"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("cid: %q is not a CID: %v", r.PathValue("cid"), err))
		return
	}
	limit := 20
	if s := r.URL.Query().Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q is not a number from 1 to 1000", s))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	found, err := n.overlay.FindProviders(ctx, c, limit)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, toPeers(found))
}

var localityNames = []string{"same-access-node", "same-isp", "remote"}

func toPeers(in []overlay.PeerInfo) []Peer {
	out := make([]Peer, 0, len(in))
	for _, p := range in {
		out = append(out, Peer{
			PeerID:    p.ID.String(),
			Addrs:     strs(p.Addrs),
			RTTMillis: float64(p.RTT.Microseconds()) / 1000,
			Labels:    p.Labels,
			Locality:  localityNames[p.Locality],
			Version:   p.Version,
			Connected: p.Connected,
		})
	}
	return out
}

func strs[T fmt.Stringer](in []T) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		out = append(out, v.String())
	}
	return out
}
