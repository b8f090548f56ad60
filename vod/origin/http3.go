package origin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ServeHTTP3 serves the same handler over HTTP/3 on pc until ctx is cancelled, then shuts
// down gracefully and returns nil. It closes pc. The certificate is self-signed and made here,
// in memory: this is meant for the emulator's network, where there is no PKI (see the package
// doc).
func (s *Server) ServeHTTP3(ctx context.Context, pc net.PacketConn) error {
	cert, err := selfSignedCert()
	if err != nil {
		pc.Close()
		return fmt.Errorf("origin HTTP/3: certificate: %w", err)
	}
	srv := &http3.Server{
		Handler: s.handler,
		TLSConfig: http3.ConfigureTLSConfig(&tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS13,
		}),
		IdleTimeout: 2 * time.Minute,
		Logger:      s.log,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(pc) }()
	s.log.Info("origin serving HTTP/3", "addr", pc.LocalAddr().String(), "dir", s.dir)
	select {
	case err := <-errc:
		pc.Close()
		return fmt.Errorf("origin HTTP/3: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("origin HTTP/3: downloads still running at shutdown; closed them", "err", err)
	}
	err = <-errc
	pc.Close()
	if err != nil && !isClosed(err) {
		return fmt.Errorf("origin HTTP/3: %w", err)
	}
	s.log.Info("origin HTTP/3 stopped", "addr", pc.LocalAddr().String())
	return nil
}

// selfSignedCert makes an ECDSA P-256 certificate for the emulated origin.
func selfSignedCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "nanodc emulated origin"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour), // outlives any emulation
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// HTTP3Transport is an HTTP/3 round tripper whose QUIC connections each run on a packet conn
// from a caller's function, so that the emulator's gateways reach the origin over their own
// emulated access links. Close closes every connection and its packet conn.
//
// It is for the emulated origin only: it does not verify the server's certificate, it rewrites
// http:// URLs to https:// (a catalog entry's webseed URL works whichever way the emulator
// serves it), and it dials IP literals only (the emulator has no DNS, and nothing may resolve
// names outside it).
type HTTP3Transport struct {
	listenPacket func() (net.PacketConn, error)

	mu     sync.Mutex
	rt     *http3.Transport
	closed bool
}

// NewHTTP3Transport returns a transport that calls listenPacket for each new connection.
func NewHTTP3Transport(listenPacket func() (net.PacketConn, error)) *HTTP3Transport {
	t := &HTTP3Transport{listenPacket: listenPacket}
	t.rt = t.newRoundTripper()
	return t
}

func (t *HTTP3Transport) newRoundTripper() *http3.Transport {
	return &http3.Transport{
		TLSClientConfig: &tls.Config{
			// The emulated origin's certificate is self-signed and made at its start: there is
			// no PKI inside the emulator to verify it against. Never use this outside it.
			InsecureSkipVerify: true, //nolint:gosec // emulator only, see above
			MinVersion:         tls.VersionTLS13,
		},
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, fmt.Errorf("origin HTTP/3 client: %q: want an IP address and port", addr)
			}
			pc, err := t.listenPacket()
			if err != nil {
				return nil, fmt.Errorf("origin HTTP/3 client: packet conn: %w", err)
			}
			tr := &quic.Transport{Conn: pc}
			conn, err := tr.DialEarly(ctx, net.UDPAddrFromAddrPort(ap), tlsCfg, cfg)
			if err != nil {
				_ = tr.Close()
				_ = pc.Close()
				return nil, err
			}
			// One packet conn per QUIC connection: release both together.
			go func() {
				<-conn.Context().Done()
				_ = tr.Close()
				_ = pc.Close()
			}()
			return conn, nil
		},
	}
}

func (t *HTTP3Transport) current() (*http3.Transport, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, http3.ErrTransportClosed
	}
	return t.rt, nil
}

// RoundTrip sends req over HTTP/3.
func (t *HTTP3Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, err := t.current()
	if err != nil {
		return nil, err
	}
	if req.URL != nil && req.URL.Scheme == "http" {
		r := req.Clone(req.Context())
		r.URL.Scheme = "https"
		req = r
	}
	return rt.RoundTrip(req)
}

// CloseIdleConnections closes connections not carrying a request.
func (t *HTTP3Transport) CloseIdleConnections() {
	if rt, err := t.current(); err == nil {
		rt.CloseIdleConnections()
	}
}

// ResetConnections closes every connection, requests in flight included, and makes the next
// request dial a new one: for a connection taken for dead (an outage on the way), whose
// retransmission timer has backed off to seconds.
func (t *HTTP3Transport) ResetConnections() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	old := t.rt
	t.rt = t.newRoundTripper()
	t.mu.Unlock()
	_ = old.Close()
}

// Close closes every connection; the transport is unusable afterwards.
func (t *HTTP3Transport) Close() error {
	t.mu.Lock()
	rt := t.rt
	t.closed = true
	t.mu.Unlock()
	if err := rt.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// NewHTTP3Client returns an http.Client over an HTTP3Transport (see its caveats: emulator
// only). Close it with client.Transport.(io.Closer).Close().
func NewHTTP3Client(listenPacket func() (net.PacketConn, error)) *http.Client {
	return &http.Client{Transport: NewHTTP3Transport(listenPacket)}
}
