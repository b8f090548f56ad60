package vodload

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nanodc/nanodc/emulator"
	"github.com/nanodc/nanodc/vod"
)

// session is one viewer: a player in a home reading the gateway's /vod/ stream.
type session struct {
	title   int
	gw      *emulator.Gateway
	arrival time.Duration
	flash   bool

	mu        sync.Mutex
	active    bool // between request and end of reading
	receiving bool // still fetching (not all bytes received)
	started   bool
	startup   time.Duration
	stalls    int
	stall     time.Duration
	watched   time.Duration
	received  int64
	// checked are the received bytes hashed against the torrent's piece hashes (whole pieces
	// and the piece in progress), corrupt the pieces among them that did not match.
	checked  int64
	corrupt  int
	failed   string
	stallsAt []float64 // seconds into the measured phase, the first maxStallTimes
}

// maxStallTimes bounds the stall times a session keeps.
const maxStallTimes = 32

// play runs the player model: it requests the title, starts after StartupBuffer of video,
// plays at the bitrate, stalls when its buffer runs dry and resumes after Rebuffer, reads
// ahead at most MaxBuffer, and gives up after Abandon without progress.
func (w *workload) play(ctx context.Context, s *session) {
	app := w.app(s.gw.Node())
	if app == nil {
		s.fail("gateway down")
		return
	}
	client := w.clientFor(app)
	e := w.entries[s.title]
	rate := float64(e.BitrateBps) / 8
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, "http://gateway/vod/"+e.CID, nil)
	t0 := time.Now()
	s.mu.Lock()
	s.active, s.receiving = true, true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active, s.receiving = false, false
		s.mu.Unlock()
	}()
	abandoned := false
	watchdog := time.AfterFunc(w.p.Abandon, func() { abandoned = true; cancel() })
	defer watchdog.Stop()
	check, err := newPieceCheck(e)
	if err != nil {
		s.fail(err.Error())
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		s.failOrEnd(ctx, abandoned, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.fail("status " + resp.Status)
		return
	}
	var (
		playing    bool
		playhead   float64
		last       = t0
		stallStart time.Time
		buf        = make([]byte, 32<<10)
	)
	advance := func(now time.Time) {
		if playing {
			dt := now.Sub(last)
			can := dt.Seconds() * rate
			avail := float64(s.received) - playhead
			if can <= avail {
				playhead += can
				s.watched += dt
			} else {
				empty := time.Duration(avail / rate * float64(time.Second))
				playhead = float64(s.received)
				s.watched += empty
				playing = false
				stallStart = last.Add(empty)
				s.stalls++
				if len(s.stallsAt) < maxStallTimes {
					s.stallsAt = append(s.stallsAt, (s.arrival + stallStart.Sub(t0)).Seconds())
				}
			}
		}
		last = now
	}
	for {
		nr, err := resp.Body.Read(buf)
		now := time.Now()
		check.write(buf[:nr])
		s.mu.Lock()
		advance(now)
		s.received += int64(nr)
		s.checked, s.corrupt = check.off, check.bad
		if check.bad > 0 {
			// A player shows what it gets: the session is lost, and the run says why.
			s.failed = "corrupt data reached the player"
			s.mu.Unlock()
			return
		}
		if !playing {
			need := w.p.Rebuffer
			if !s.started {
				need = w.p.StartupBuffer
			}
			if float64(s.received)-playhead >= need.Seconds()*rate || s.received == e.Size {
				playing = true
				if !s.started {
					s.started, s.startup = true, now.Sub(t0)
				} else {
					s.stall += now.Sub(stallStart)
				}
			}
		}
		ahead := (float64(s.received) - playhead) / rate // seconds of video buffered
		s.mu.Unlock()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			s.mu.Lock()
			if !playing && s.started {
				s.stall += now.Sub(stallStart)
			}
			s.mu.Unlock()
			if ctx.Err() == nil && w.appGone(s.gw, app) {
				// The viewer's own gateway was killed or restarted under the stream (a fault):
				// said so, not as the transport's error.
				s.fail("gateway went down mid-stream")
				return
			}
			s.failOrEnd(ctx, abandoned, err)
			return
		}
		// The watchdog fires if no progress comes before the buffer is gone plus Abandon.
		watchdog.Reset(time.Duration(ahead*float64(time.Second)) + w.p.Abandon)
		if over := ahead - w.p.MaxBuffer.Seconds(); playing && over > 0 {
			if !sleepCtx(ctx, time.Duration(over*float64(time.Second))) {
				s.mu.Lock()
				advance(time.Now())
				s.mu.Unlock()
				return
			}
		}
	}
	// Everything received: the rest plays out from the buffer, without stalls; count it up to
	// the end of the measured phase.
	s.mu.Lock()
	s.receiving = false
	left := time.Duration((float64(s.received) - playhead) / rate * float64(time.Second))
	s.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		left = min(left, time.Until(dl))
	}
	s.mu.Lock()
	s.watched += max(left, 0)
	s.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (s *session) fail(reason string) {
	s.mu.Lock()
	s.failed = reason
	s.mu.Unlock()
}

// failOrEnd tells a failure from the end of the measured phase (a session cut short by the
// end of the run is not a failure).
func (s *session) failOrEnd(ctx context.Context, abandoned bool, err error) {
	switch {
	case abandoned:
		s.fail("abandoned: no progress for the abandon time")
	case ctx.Err() != nil:
	default:
		s.fail(err.Error())
	}
}

// clientFor returns an HTTP client that reaches app's handler over in-memory connections:
// the player is in the home, on the LAN side of the gateway, not behind its access link.
func (w *workload) clientFor(app *vod.App) *http.Client {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.players == nil {
		w.players = map[*vod.App]*pipeServer{}
	}
	ps := w.players[app]
	if ps == nil {
		ps = newPipeServer(app.Handler())
		w.players[app] = ps
	}
	return ps.client
}

// pipeServer is an http.Server on in-memory connections.
type pipeServer struct {
	srv    *http.Server
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	client *http.Client
}

func newPipeServer(h http.Handler) *pipeServer {
	ps := &pipeServer{srv: &http.Server{Handler: h}, conns: make(chan net.Conn), done: make(chan struct{})}
	ps.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, s := net.Pipe()
			select {
			case ps.conns <- s:
				return c, nil
			case <-ps.done:
				return nil, net.ErrClosed
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		MaxIdleConnsPerHost: 4,
	}}
	go func() { _ = ps.srv.Serve(ps) }()
	return ps
}

func (ps *pipeServer) Accept() (net.Conn, error) {
	select {
	case c := <-ps.conns:
		return c, nil
	case <-ps.done:
		return nil, net.ErrClosed
	}
}

func (ps *pipeServer) Close() error {
	ps.once.Do(func() { close(ps.done) })
	return nil
}

func (ps *pipeServer) Addr() net.Addr { return pipeAddr{} }

func (ps *pipeServer) shutdown() {
	ps.client.CloseIdleConnections()
	_ = ps.srv.Close()
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "home-lan" }

// appGone tells whether gateway g no longer runs app, waiting up to a second for a kill in
// progress to show (the stream may end before the fleet marks the gateway down).
func (w *workload) appGone(g *emulator.Gateway, app *vod.App) bool {
	for range 10 {
		if w.app(g.Node()) != app {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
