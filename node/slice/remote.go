package slice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Protocol is remote management over the overlay. The caller is the remote peer ID the secure
// channel proved: the configured operator, or else a provider acting on its own slices.
const Protocol = "/nanodc/mgmt/1.0.0"

// Response is what a management call returns, on either transport.
type Response struct {
	Status int             `json:"status"` // HTTP semantics: 200, 400, 403, 404, 500
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// StatusOf maps an operation's error to its status.
func StatusOf(err error) int {
	var d *DeniedError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &d):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// Respond runs req for p and packs the outcome.
func (m *Manager) Respond(ctx context.Context, p Principal, req Request) Response {
	res, err := m.Do(ctx, p, req)
	resp := Response{Status: StatusOf(err)}
	if err != nil {
		resp.Error = err.Error()
	}
	if res != nil {
		b, merr := json.Marshal(res)
		if merr != nil {
			return Response{Status: http.StatusInternalServerError, Error: merr.Error()}
		}
		resp.Result = b
	}
	return resp
}

// PrincipalOf is who a remote peer is to this gateway.
func (m *Manager) PrincipalOf(id peer.ID) Principal {
	if m.opts.Operator != "" && id == m.opts.Operator {
		return Principal{Role: RoleOperator, Peer: id}
	}
	return Principal{Role: RoleProvider, Peer: id}
}

// Serve registers the overlay protocol handler; it is removed when ctx ends.
func (m *Manager) ServeOverlay(ctx context.Context, h host.Host) {
	h.SetStreamHandler(Protocol, func(s network.Stream) { m.handleStream(ctx, s) })
	context.AfterFunc(ctx, func() { h.RemoveStreamHandler(Protocol) })
}

func (m *Manager) handleStream(ctx context.Context, s network.Stream) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	req, err := DecodeRequest(s)
	var resp Response
	if err == nil && req.EveryMs > 0 {
		// A watch: answers until the caller resets the stream (a write then fails).
		_ = s.SetReadDeadline(time.Time{})
		every := time.Duration(req.EveryMs) * time.Millisecond
		enc := json.NewEncoder(s)
		_ = m.Watch(ctx, m.PrincipalOf(s.Conn().RemotePeer()), req, func(r Response) error {
			_ = s.SetWriteDeadline(time.Now().Add(every + 10*time.Second))
			return enc.Encode(r)
		})
		return
	}
	if err != nil {
		resp = Response{Status: http.StatusBadRequest, Error: err.Error()}
	} else {
		// Long polls may wait up to a minute; everything else is bounded well below.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		resp = m.Respond(cctx, m.PrincipalOf(s.Conn().RemotePeer()), req)
		cancel()
	}
	_ = s.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_ = json.NewEncoder(s).Encode(resp)
}

// maxResponseBytes bounds what a client reads back.
const maxResponseBytes = 64 << 20

// Call runs one management request on a remote gateway. The returned error is nil only for
// status 200; the Response is returned in every case where one arrived.
func Call(ctx context.Context, h host.Host, gw peer.ID, req Request) (Response, error) {
	s, err := h.NewStream(ctx, gw, Protocol)
	if err != nil {
		return Response{}, fmt.Errorf("opening management stream to %s: %w", gw, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	if _, err := s.Write(b); err != nil {
		return Response{}, fmt.Errorf("sending request to %s: %w", gw, err)
	}
	if err := s.CloseWrite(); err != nil {
		return Response{}, err
	}
	raw, err := io.ReadAll(io.LimitReader(s, maxResponseBytes))
	if err != nil {
		return Response{}, fmt.Errorf("reading response from %s: %w", gw, err)
	}
	var resp Response
	if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("response from %s: %w", gw, err)
	}
	if resp.Status != http.StatusOK {
		return resp, fmt.Errorf("%s: %d %s", gw, resp.Status, resp.Error)
	}
	return resp, nil
}

// Watch sends a watch (req.EveryMs > 0) to a remote gateway and hands each answer to fn until
// ctx ends (nil), fn returns an error (returned), the gateway ends the watch (nil, after an
// answer that was not 200) or the stream fails (returned).
func Watch(ctx context.Context, h host.Host, gw peer.ID, req Request, fn func(Response) error) error {
	if req.EveryMs <= 0 {
		return errors.New("watch: every_ms must be set")
	}
	s, err := h.NewStream(ctx, gw, Protocol)
	if err != nil {
		return fmt.Errorf("opening management stream to %s: %w", gw, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := s.Write(b); err != nil {
		return fmt.Errorf("sending request to %s: %w", gw, err)
	}
	if err := s.CloseWrite(); err != nil {
		return err
	}
	dec := json.NewDecoder(io.LimitReader(s, 1<<40))
	for {
		var resp Response
		if err := dec.Decode(&resp); err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("watching %s: %w", gw, err)
		}
		if err := fn(resp); err != nil {
			_ = s.Reset()
			return err
		}
	}
}
