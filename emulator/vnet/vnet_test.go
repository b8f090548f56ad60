package vnet

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newNet returns a network closed at the end of the test.
func newNet(t testing.TB, opts Options) *Network {
	t.Helper()
	n := New(opts)
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func addHost(t testing.TB, n *Network, ip, site string, up, down LinkConfig) *Host {
	t.Helper()
	h, err := n.AddHost(HostConfig{IP: net.ParseIP(ip), Site: site, Up: up, Down: down})
	if err != nil {
		t.Fatalf("AddHost(%s): %v", ip, err)
	}
	return h
}

func listen(t testing.TB, h *Host, port int) *Conn {
	t.Helper()
	pc, err := h.ListenUDP("udp4", &net.UDPAddr{IP: h.IP(), Port: port})
	if err != nil {
		t.Fatalf("ListenUDP: %v", err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc.(*Conn)
}

// readTimeout reads one packet or fails after d.
func readTimeout(t testing.TB, c *Conn, d time.Duration) ([]byte, net.Addr, error) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	nb, addr, err := c.ReadFrom(buf)
	return buf[:nb], addr, err
}

// waitSettled waits until every sent packet was delivered or dropped.
func waitSettled(t testing.TB, n *Network) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := n.Stats()
		if s.Sent == s.Delivered+s.Dropped.Total() {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("packets still in flight: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
	}
}

func TestDeliveryAndAddresses(t *testing.T) {
	n := newNet(t, Options{})
	a := addHost(t, n, "127.1.0.1", "x", LinkConfig{}, LinkConfig{})
	b := addHost(t, n, "127.1.0.2", "y", LinkConfig{}, LinkConfig{})
	ca, cb := listen(t, a, 0), listen(t, b, 4001)

	msg := []byte("hello")
	if nb, err := ca.WriteTo(msg, cb.LocalAddr()); err != nil || nb != len(msg) {
		t.Fatalf("WriteTo = %d, %v", nb, err)
	}
	copy(msg, "XXXXX") // the network must have copied the buffer
	got, from, err := readTimeout(t, cb, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Errorf("payload = %q, want hello", got)
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok || !ua.IP.Equal(a.IP()) || ua.Port != ca.LocalAddr().(*net.UDPAddr).Port {
		t.Errorf("from = %v, want %v", from, ca.LocalAddr())
	}
	// Reply to the address ReadFrom returned, as quic-go does.
	if _, err := cb.WriteTo([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	if got, _, err := readTimeout(t, ca, time.Second); err != nil || string(got) != "back" {
		t.Fatalf("reply = %q, %v", got, err)
	}
	// A short buffer truncates, as UDP does.
	if _, err := ca.WriteTo([]byte("truncated"), cb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = cb.SetReadDeadline(time.Now().Add(time.Second))
	small := make([]byte, 4)
	if nb, _, err := cb.ReadFrom(small); err != nil || string(small[:nb]) != "trun" {
		t.Errorf("short read = %q, %v", small[:nb], err)
	}
	s := waitSettled(t, n)
	if s.Sent != 3 || s.Delivered != 3 {
		t.Errorf("stats = %+v, want 3 sent and delivered", s)
	}
	if s.Scheduler.Count != 3 || s.Reader.Count != 3 {
		t.Errorf("lateness counts = %d, %d, want 3, 3", s.Scheduler.Count, s.Reader.Count)
	}
}

func TestListenUDP(t *testing.T) {
	n := newNet(t, Options{})
	h := addHost(t, n, "127.2.0.1", "", LinkConfig{}, LinkConfig{})

	c1 := listen(t, h, 0)
	la := c1.LocalAddr().(*net.UDPAddr)
	if la.Port < firstEphemeral || !la.IP.Equal(h.IP()) {
		t.Errorf("LocalAddr = %v, want host IP and an ephemeral port", la)
	}
	c2 := listen(t, h, 0)
	if c2.LocalAddr().(*net.UDPAddr).Port == la.Port {
		t.Error("two port-0 listens got the same port")
	}
	if _, err := h.ListenUDP("udp", &net.UDPAddr{Port: la.Port}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("duplicate port: err = %v, want EADDRINUSE", err)
	}
	if _, err := h.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.2.0.9")}); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("foreign IP: err = %v, want EADDRNOTAVAIL", err)
	}
	if _, err := h.ListenUDP("udp6", nil); err == nil {
		t.Error("udp6 listen succeeded")
	}
	// Unspecified stays unspecified in LocalAddr, like the kernel, but the
	// source address of packets is the host's.
	pc, err := h.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := pc.LocalAddr().String(); got != "0.0.0.0:7000" {
		t.Errorf("LocalAddr = %s, want 0.0.0.0:7000", got)
	}
	if _, err := pc.WriteTo([]byte("x"), c1.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, from, err := readTimeout(t, c1, time.Second); err != nil || from.String() != "127.2.0.1:7000" {
		t.Errorf("from = %v, %v, want 127.2.0.1:7000", from, err)
	}
	// Closing frees the port.
	_ = c2.Close()
	if pc, err := h.ListenUDP("udp", &net.UDPAddr{Port: c2.LocalAddr().(*net.UDPAddr).Port}); err != nil {
		t.Errorf("reuse of closed port: %v", err)
	} else {
		_ = pc.Close()
	}
	if err := pc.(*Conn).SetReadBuffer(1 << 20); err != nil {
		t.Error(err)
	}
	if err := pc.(*Conn).SetWriteBuffer(1 << 20); err != nil {
		t.Error(err)
	}
}

func TestAddHostValidation(t *testing.T) {
	n := newNet(t, Options{})
	addHost(t, n, "127.3.0.1", "", LinkConfig{}, LinkConfig{})
	tests := []struct {
		name string
		cfg  HostConfig
	}{
		{"not loopback", HostConfig{IP: net.ParseIP("10.0.0.1")}},
		{"ipv6", HostConfig{IP: net.ParseIP("::1")}},
		{"duplicate", HostConfig{IP: net.ParseIP("127.3.0.1")}},
		{"negative rate", HostConfig{IP: net.ParseIP("127.3.0.2"), Up: LinkConfig{RateBps: -1}}},
		{"loss > 1", HostConfig{IP: net.ParseIP("127.3.0.3"), Down: LinkConfig{Loss: 1.5}}},
	}
	for _, tt := range tests {
		if _, err := n.AddHost(tt.cfg); err == nil {
			t.Errorf("%s: AddHost succeeded", tt.name)
		}
	}
	if n.Host(net.ParseIP("127.3.0.1")) == nil || n.Host(net.ParseIP("127.3.0.9")) != nil {
		t.Error("Host lookup wrong")
	}
}

func TestMTU(t *testing.T) {
	n := newNet(t, Options{})
	a := addHost(t, n, "127.4.0.1", "x", LinkConfig{}, LinkConfig{})
	b := addHost(t, n, "127.4.0.2", "y", LinkConfig{}, LinkConfig{})
	ca, cb := listen(t, a, 0), listen(t, b, 0)

	if _, err := ca.WriteTo(make([]byte, DefaultMTU-HeaderBytes+1), cb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.WriteTo(make([]byte, DefaultMTU-HeaderBytes), cb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	got, _, err := readTimeout(t, cb, time.Second)
	if err != nil || len(got) != DefaultMTU-HeaderBytes {
		t.Fatalf("read %d bytes, %v; want the %d-byte packet", len(got), err, DefaultMTU-HeaderBytes)
	}
	if s := waitSettled(t, n); s.Dropped.MTU != 1 || s.Delivered != 1 {
		t.Errorf("stats = %+v, want 1 MTU drop and 1 delivery", s)
	}
}

// exchange sends one packet from a to b and reports whether it arrived.
func exchange(t *testing.T, a, b *Conn) bool {
	t.Helper()
	if _, err := a.WriteTo([]byte("ping"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_, _, err := readTimeout(t, b, 100*time.Millisecond)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	return err == nil
}

func TestOutages(t *testing.T) {
	n := newNet(t, Options{DefaultBackboneDelay: time.Millisecond})
	a1 := addHost(t, n, "127.5.0.1", "a", LinkConfig{}, LinkConfig{})
	a2 := addHost(t, n, "127.5.0.2", "a", LinkConfig{}, LinkConfig{})
	b1 := addHost(t, n, "127.5.1.1", "b", LinkConfig{}, LinkConfig{})
	ca1, ca2, cb1 := listen(t, a1, 0), listen(t, a2, 0), listen(t, b1, 0)

	steps := []struct {
		name       string
		change     func()
		a1b1, a1a2 bool // want delivery a1→b1, a1→a2
		drops      func(Drops) uint64
	}{
		{"all up", func() {}, true, true, nil},
		{"receiver down", func() { b1.SetUp(false) }, false, true, func(d Drops) uint64 { return d.Down }},
		{"receiver up", func() { b1.SetUp(true) }, true, true, nil},
		{"sender down", func() { a1.SetUp(false) }, false, false, func(d Drops) uint64 { return d.Down }},
		{"sender up", func() { a1.SetUp(true) }, true, true, nil},
		{"site a down", func() { n.SetSiteUp("a", false) }, false, true, func(d Drops) uint64 { return d.Down }},
		{"site a up", func() { n.SetSiteUp("a", true) }, true, true, nil},
		{"partition", func() {
			n.SetPartition(func(x, y string) bool { return (x == "a") != (y == "a") })
		}, false, true, func(d Drops) uint64 { return d.Partition }},
		{"healed", func() { n.SetPartition(nil) }, true, true, nil},
	}
	for _, st := range steps {
		st.change()
		before := n.Stats().Dropped
		if got := exchange(t, ca1, cb1); got != st.a1b1 {
			t.Errorf("%s: a1→b1 delivered = %v, want %v", st.name, got, st.a1b1)
		}
		if got := exchange(t, ca1, ca2); got != st.a1a2 {
			t.Errorf("%s: a1→a2 delivered = %v, want %v", st.name, got, st.a1a2)
		}
		after := n.Stats().Dropped
		if st.drops != nil && st.drops(after) == st.drops(before) {
			t.Errorf("%s: drop counter did not move: %+v", st.name, after)
		}
		if st.drops == nil && after.Total() != before.Total() {
			t.Errorf("%s: unexpected drops %+v", st.name, after)
		}
	}
}

func TestNoListener(t *testing.T) {
	n := newNet(t, Options{})
	a := addHost(t, n, "127.6.0.1", "x", LinkConfig{}, LinkConfig{})
	addHost(t, n, "127.6.0.2", "y", LinkConfig{}, LinkConfig{})
	ca := listen(t, a, 0)
	for _, to := range []string{"127.6.0.2:9", "127.6.0.3:9", "127.6.0.1:9"} {
		ua, _ := net.ResolveUDPAddr("udp", to)
		if _, err := ca.WriteTo([]byte("x"), ua); err != nil {
			t.Fatalf("WriteTo(%s): %v", to, err)
		}
	}
	if s := waitSettled(t, n); s.Dropped.NoListener != 3 {
		t.Errorf("NoListener drops = %d, want 3 (%+v)", s.Dropped.NoListener, s)
	}
	if _, err := ca.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("::1"), Port: 1}); err == nil {
		t.Error("WriteTo an IPv6 address succeeded")
	}
	if _, err := ca.WriteTo([]byte("x"), &net.TCPAddr{IP: net.ParseIP("127.6.0.2"), Port: 1}); err == nil {
		t.Error("WriteTo a TCP address succeeded")
	}
}

func TestLoopback(t *testing.T) {
	n := newNet(t, Options{})
	// Loopback skips the (very slow) access link.
	slow := LinkConfig{RateBps: 1000, Delay: time.Second}
	h := addHost(t, n, "127.7.0.1", "", slow, slow)
	c1, c2 := listen(t, h, 0), listen(t, h, 0)
	start := time.Now()
	if !exchange(t, c1, c2) {
		t.Fatal("loopback packet lost")
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("loopback took %v", d)
	}
}

func TestClosedConn(t *testing.T) {
	n := newNet(t, Options{})
	h := addHost(t, n, "127.8.0.1", "", LinkConfig{}, LinkConfig{})
	c := listen(t, h, 0)
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked ReadFrom after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock ReadFrom")
	}
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrom after Close: %v", err)
	}
	if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestDeadlines(t *testing.T) {
	n := newNet(t, Options{})
	h := addHost(t, n, "127.9.0.1", "", LinkConfig{}, LinkConfig{})
	c := listen(t, h, 0)
	buf := make([]byte, 10)

	// A deadline in the future times out with a temporary timeout error,
	// which quic-go's read loop relies on.
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(50 * time.Millisecond))
	_, _, err := c.ReadFrom(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadFrom past deadline: %v", err)
	}
	if el := time.Since(start); el < 45*time.Millisecond || el > 500*time.Millisecond {
		t.Errorf("timed out after %v, want ~50ms", el)
	}

	// Moving the deadline to the past unblocks a blocked reader.
	_ = c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(buf)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = c.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("got %v, want deadline exceeded", err)
		}
	case <-time.After(time.Second):
		t.Fatal("SetReadDeadline(now) did not unblock ReadFrom")
	}

	// Clearing it makes reads work again.
	_ = c.SetReadDeadline(time.Time{})
	if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadFrom(buf); err != nil {
		t.Errorf("ReadFrom after clearing the deadline: %v", err)
	}

	_ = c.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("WriteTo past deadline: %v", err)
	}
	_ = c.SetDeadline(time.Time{})
	if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); err != nil {
		t.Errorf("WriteTo after clearing deadline: %v", err)
	}
}

// lossRun sends count numbered packets from a to b over links with the
// given loss and returns which arrived, in arrival order.
func lossRun(t *testing.T, seed int64, count int, up, down LinkConfig) ([]uint32, Stats) {
	t.Helper()
	n := newNet(t, Options{Seed: seed})
	a := addHost(t, n, "127.10.0.1", "x", up, LinkConfig{})
	b := addHost(t, n, "127.10.0.2", "y", LinkConfig{}, down)
	ca, cb := listen(t, a, 0), listen(t, b, 0)

	var got []uint32
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			nb, _, err := cb.ReadFrom(buf)
			if err != nil {
				return
			}
			got = append(got, binary.BigEndian.Uint32(buf[:nb]))
		}
	}()
	pkt := make([]byte, 4)
	for i := range count {
		binary.BigEndian.PutUint32(pkt, uint32(i))
		if _, err := ca.WriteTo(pkt, cb.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if i%500 == 499 {
			time.Sleep(time.Millisecond) // let the reader keep up
		}
	}
	s := waitSettled(t, n)
	_ = cb.Close()
	<-done
	return got, s
}

func TestLossRate(t *testing.T) {
	const count, loss = 20000, 0.01
	for _, tt := range []struct {
		name     string
		up, down LinkConfig
	}{
		{"uplink", LinkConfig{Loss: loss}, LinkConfig{}},
		{"downlink", LinkConfig{}, LinkConfig{Loss: loss}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, s := lossRun(t, 42, count, tt.up, tt.down)
			lost := count - len(got)
			rate := float64(lost) / count
			t.Logf("lost %d of %d = %.3f%% (configured %.1f%%)", lost, count, 100*rate, 100*loss)
			if rate < 0.8*loss || rate > 1.2*loss {
				t.Errorf("loss rate %.4f, want %.4f ± 20%%", rate, loss)
			}
			if s.Dropped.Loss != uint64(lost) || s.Dropped.Total() != uint64(lost) {
				t.Errorf("drops = %+v, want %d, all loss", s.Dropped, lost)
			}
			if !slices.IsSorted(got) {
				t.Error("packets reordered without jitter")
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	lossy := LinkConfig{Loss: 0.05, Jitter: time.Millisecond, Delay: time.Millisecond}
	run := func(seed int64) []uint32 {
		got, _ := lossRun(t, seed, 3000, lossy, lossy)
		return got
	}
	a, b, c := run(7), run(7), run(8)
	if !slices.Equal(a, b) {
		t.Errorf("same seed gave different loss patterns (%d vs %d delivered)", len(a), len(b))
	}
	if slices.Equal(a, c) {
		t.Error("different seeds gave the same loss pattern")
	}
}

func TestJitterOrder(t *testing.T) {
	const count = 2000
	jittery := LinkConfig{Delay: 5 * time.Millisecond, Jitter: 4 * time.Millisecond}
	inOrder, _ := lossRun(t, 1, count, jittery, LinkConfig{})
	if len(inOrder) != count || !slices.IsSorted(inOrder) {
		t.Errorf("without Reorder: %d of %d delivered, sorted=%v", len(inOrder), count, slices.IsSorted(inOrder))
	}
	jittery.Reorder = true
	reordered, _ := lossRun(t, 1, count, jittery, LinkConfig{})
	if len(reordered) != count || slices.IsSorted(reordered) {
		t.Errorf("with Reorder: %d of %d delivered, sorted=%v", len(reordered), count, slices.IsSorted(reordered))
	}
}

func TestReadBufferBound(t *testing.T) {
	n := newNet(t, Options{ReadBufferBytes: 10000})
	a := addHost(t, n, "127.11.0.1", "x", LinkConfig{}, LinkConfig{})
	b := addHost(t, n, "127.11.0.2", "y", LinkConfig{}, LinkConfig{})
	ca, cb := listen(t, a, 0), listen(t, b, 0)
	for range 20 {
		_, _ = ca.WriteTo(make([]byte, 1000), cb.LocalAddr())
	}
	waitFor(t, func() bool { s := n.Stats(); return s.Dropped.ReadBuffer+10 >= s.Sent })
	if d := n.Stats().Dropped; d.ReadBuffer != 10 || d.Total() != 10 {
		t.Errorf("drops = %+v, want 10 ReadBuffer", d)
	}
	for range 10 {
		if _, _, err := readTimeout(t, cb, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := readTimeout(t, cb, 20*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("11th read: %v, want timeout", err)
	}
	// Packets still on the link do not count against the buffer.
	if err := b.SetLinks(LinkConfig{}, LinkConfig{Delay: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		_, _ = ca.WriteTo(make([]byte, 1000), cb.LocalAddr())
	}
	time.Sleep(50 * time.Millisecond)
	if d := n.Stats().Dropped.ReadBuffer; d != 10 {
		t.Errorf("packets in flight on the link were charged to the read buffer: %d drops", d)
	}
}

func TestLinkStats(t *testing.T) {
	n := newNet(t, Options{})
	link := LinkConfig{RateBps: 1e6, QueueBytes: 5000}
	a := addHost(t, n, "127.12.0.1", "x", link, LinkConfig{})
	b := addHost(t, n, "127.12.0.2", "y", LinkConfig{}, LinkConfig{})
	ca, cb := listen(t, a, 0), listen(t, b, 0)
	// Ten 1000+28-byte packets at once: four fit the 5000-byte queue
	// (the first starts serialising at once, so four plus part of a fifth),
	// the rest are dropped.
	for range 10 {
		_, _ = ca.WriteTo(make([]byte, 1000), cb.LocalAddr())
	}
	up := a.Stats().Up
	if up.Packets != 4 || up.Dropped != 6 || up.Bytes != 4*1028 {
		t.Errorf("uplink stats = %+v, want 4 packets of 1028 bytes, 6 dropped", up)
	}
	if up.QueueBytes < 3*1028 || up.QueueBytes > 4*1028 {
		t.Errorf("QueueBytes = %d, want about 4*1028", up.QueueBytes)
	}
	for range 4 {
		if _, _, err := readTimeout(t, cb, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s := waitSettled(t, n)
	if s.Dropped.Queue != 6 || s.Delivered != 4 {
		t.Errorf("stats = %+v, want 6 queue drops and 4 deliveries", s)
	}
	if d := b.Stats().Down; d.Packets != 4 {
		t.Errorf("downlink stats = %+v, want 4 packets", d)
	}
	// Delivery may run up to TimerSlack ahead of the link clock.
	waitFor(t, func() bool { return a.Stats().Up.QueueBytes == 0 })
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	n := New(Options{Shards: 3})
	var wg sync.WaitGroup
	for i := range 20 {
		h, err := n.AddHost(HostConfig{IP: net.IPv4(127, 13, 0, byte(i+1)), Up: LinkConfig{Delay: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := h.ListenUDP("udp", nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			buf := make([]byte, 100)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					if !errors.Is(err, net.ErrClosed) {
						t.Errorf("reader: %v", err)
					}
					return
				}
				_, _ = pc.WriteTo(buf[:1], &net.UDPAddr{IP: net.IPv4(127, 13, 0, byte((i+1)%20+1)), Port: firstEphemeral})
			}
		})
		_, _ = pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 13, 0, byte((i+1)%20+1)), Port: firstEphemeral})
	}
	time.Sleep(50 * time.Millisecond)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := n.AddHost(HostConfig{IP: net.IPv4(127, 13, 1, 1)}); !errors.Is(err, ErrNetworkClosed) {
		t.Errorf("AddHost after Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := int64(1); i <= 1000; i++ {
		h.record(i * int64(time.Microsecond))
	}
	h.record(-5) // early counts as zero
	s := h.summary()
	if s.Count != 1001 || s.Max != time.Millisecond {
		t.Errorf("count, max = %d, %v", s.Count, s.Max)
	}
	near := func(got, want time.Duration) bool { return got >= want*93/100 && got <= want*107/100 }
	if !near(s.P50, 500*time.Microsecond) || !near(s.P99, 990*time.Microsecond) {
		t.Errorf("p50, p99 = %v, %v, want ~500µs, ~990µs", s.P50, s.P99)
	}
	for v := range int64(5000) {
		if lo, b := bucketMid(bucketOf(v)), bucketOf(v); b > 0 && bucketOf(lo) != b {
			t.Fatalf("value %d: bucket %d has midpoint %d in bucket %d", v, b, lo, bucketOf(lo))
		}
	}
}
