package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/node/slice"
)

// Local tokens. The api-token file is the gateway's local root and acts as the operator (who
// can read the data directory owns the box); home-token is the household's administrator;
// further tokens, for a role and (providers) a peer ID, are minted by the operator and kept
// hashed in tokens.json.
const (
	HomeTokenFile = "home-token"
	TokensFile    = "tokens.json"
)

type tokenEntry struct {
	SHA256  string     `json:"sha256"`
	Role    slice.Role `json:"role"`
	Peer    peer.ID    `json:"peer,omitempty"`
	Created time.Time  `json:"created"`
}

// tokenStore resolves bearer tokens to principals.
type tokenStore struct {
	path  string
	root  string // the api-token (operator)
	home  string // the home-token (home admin)
	mu    sync.Mutex
	extra []tokenEntry
}

func loadTokens(dataDir string) (*tokenStore, error) {
	ts := &tokenStore{path: filepath.Join(dataDir, TokensFile)}
	var err error
	if ts.root, err = LoadOrCreateToken(filepath.Join(dataDir, TokenFile)); err != nil {
		return nil, err
	}
	if ts.home, err = LoadOrCreateToken(filepath.Join(dataDir, HomeTokenFile)); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(ts.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, &ts.extra); err != nil {
			return nil, fmt.Errorf("%s: %w", ts.path, err)
		}
	}
	return ts, nil
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// principal is who tok stands for (ok false: nobody).
func (ts *tokenStore) principal(tok string) (slice.Principal, bool) {
	switch {
	case tokenEqual(tok, ts.root):
		return slice.Principal{Role: slice.RoleOperator}, true
	case tokenEqual(tok, ts.home):
		return slice.Principal{Role: slice.RoleHomeAdmin}, true
	}
	h := hashToken(tok)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, e := range ts.extra {
		if tokenEqual(h, e.SHA256) {
			return slice.Principal{Role: e.Role, Peer: e.Peer}, true
		}
	}
	return slice.Principal{}, false
}

// mint creates a token for role (and peer, for a provider) and returns it once.
func (ts *tokenStore) mint(role slice.Role, p string) (string, error) {
	e := tokenEntry{Role: role, Created: time.Now().UTC()}
	switch role {
	case slice.RoleProvider:
		id, err := peer.Decode(p)
		if err != nil {
			return "", fmt.Errorf("%w: a provider token needs the provider's peer ID: %v", slice.ErrBadRequest, err)
		}
		e.Peer = id
	case slice.RoleHomeAdmin:
	default:
		return "", fmt.Errorf("%w: tokens are minted for provider or home-admin, not %q", slice.ErrBadRequest, role)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	e.SHA256 = hashToken(tok)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	next := append(ts.extra, e)
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(ts.path, data, 0o600); err != nil {
		return "", err
	}
	ts.extra = next
	return tok, nil
}

type principalKey struct{}

func principalFrom(ctx context.Context) slice.Principal {
	p, _ := ctx.Value(principalKey{}).(slice.Principal)
	return p
}

// handleMgmt is POST /api/v1/mgmt: one slice.Request, answered with a slice.Response; the
// same operations and the same checks as the overlay protocol.
func (n *Node) handleMgmt(w http.ResponseWriter, r *http.Request) {
	req, err := slice.DecodeRequest(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, slice.Response{Status: http.StatusBadRequest, Error: err.Error()})
		return
	}
	p := principalFrom(r.Context())
	if req.Op == slice.OpTokenCreate {
		resp := n.mintToken(p, req)
		writeJSON(w, resp.Status, resp)
		return
	}
	if req.EveryMs > 0 {
		n.watchMgmt(w, r, p, req)
		return
	}
	resp := n.slices.Respond(r.Context(), p, req)
	writeJSON(w, resp.Status, resp)
}

// watchMgmt streams a watch's answers as NDJSON, one slice.Response per line, each flushed,
// until the client disconnects or the watch ends.
func (n *Node) watchMgmt(w http.ResponseWriter, r *http.Request, p slice.Principal, req slice.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	every := time.Duration(req.EveryMs) * time.Millisecond
	err := n.slices.Watch(r.Context(), p, req, func(resp slice.Response) error {
		_ = rc.SetWriteDeadline(time.Now().Add(every + 10*time.Second))
		if err := enc.Encode(resp); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		n.log.Debug("management watch ended", "op", req.Op, "err", err)
	}
}

// mintToken is token.create: checked by the same matrix, served here because the tokens
// belong to the node's local API.
func (n *Node) mintToken(p slice.Principal, req slice.Request) slice.Response {
	if err := n.slices.Authorize(p, req.Op, ""); err != nil {
		return slice.Response{Status: slice.StatusOf(err), Error: err.Error()}
	}
	tok, err := n.tokens.mint(req.Role, req.Peer)
	if err != nil {
		return slice.Response{Status: slice.StatusOf(err), Error: err.Error()}
	}
	b, _ := json.Marshal(map[string]string{"token": tok, "role": string(req.Role), "peer": req.Peer})
	return slice.Response{Status: http.StatusOK, Result: b}
}

// handleSliceMetrics is GET /api/v1/slices/{slice}/metrics: Prometheus text of one slice,
// for the provider's scraper (or the operator's).
func (n *Node) handleSliceMetrics(w http.ResponseWriter, r *http.Request) {
	res, err := n.slices.Do(r.Context(), principalFrom(r.Context()), slice.Request{Op: slice.OpMetricsSlice, Slice: r.PathValue("slice")})
	if err != nil {
		writeError(w, slice.StatusOf(err), err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(res.(string)))
}

// coreOnly admits the operator and the home admin to the gateway-wide endpoints.
func coreOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch principalFrom(r.Context()).Role {
		case slice.RoleOperator, slice.RoleHomeAdmin:
			next.ServeHTTP(w, r)
		default:
			writeError(w, http.StatusForbidden, "this endpoint is for the operator and the home admin; providers use /api/v1/mgmt")
		}
	})
}

func bearer(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(tok), ok
}
