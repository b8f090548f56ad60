package vod

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"golang.org/x/time/rate"
)

// recordConn is the far end of a peer-wire connection: it keeps every byte written.
type recordConn struct {
	net.Conn // nil: only Write and Close are used
	mu       sync.Mutex
	buf      bytes.Buffer
	closed   bool
	in       bytes.Reader // what the peer sends
}

func (c *recordConn) Read(b []byte) (int, error) { return c.in.Read(b) }

func (c *recordConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.buf.Write(b)
}

func (c *recordConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *recordConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

func btHandshake(ih metainfo.Hash) []byte {
	b := append([]byte{19}, "BitTorrent protocol"...)
	b = append(b, 0, 0, 0, 0, 0, 0x10, 0, btFastBit) // extension protocol, fast extension
	b = append(b, ih[:]...)
	return append(b, bytes.Repeat([]byte{'p'}, 20)...)
}

func wireMsg(id byte, payload ...[]byte) []byte {
	body := append([]byte{id}, bytes.Join(payload, nil)...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func pieceMsg(index, begin uint32, block []byte) []byte {
	return wireMsg(btPieceMsg, binary.BigEndian.AppendUint32(nil, index), binary.BigEndian.AppendUint32(nil, begin), block)
}

// splitMessages cuts peer-wire bytes (after the handshake) into messages.
func splitMessages(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("%d stray bytes at the end", len(b))
		}
		n := 4 + int(binary.BigEndian.Uint32(b))
		if n > len(b) {
			t.Fatalf("message of %d bytes cut at %d", n, len(b))
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestUplinkQueuePassesEveryMessageIntact(t *testing.T) {
	q := newUplinkQueue(rate.NewLimiter(rate.Inf, 16<<10))
	done := make(chan struct{})
	defer close(done)
	go q.run(done)
	far := &recordConn{}
	c := q.wrap(far)
	ih := metainfo.Hash{1, 2, 3}
	block := bytes.Repeat([]byte{0xab}, 16<<10)
	msgs := [][]byte{
		wireMsg(20, []byte("d1:md11:ut_metadatai1eee")), // extended handshake
		wireMsg(5, []byte{0xff, 0x80}),                  // bitfield
		{0, 0, 0, 0},                                    // keep-alive
		pieceMsg(3, 0, block),
		wireMsg(4, binary.BigEndian.AppendUint32(nil, 9)), // have
		pieceMsg(3, 16<<10, block[:100]),
	}
	stream := append(btHandshake(ih), bytes.Join(msgs, nil)...)
	// Writes cut at awkward places: inside the handshake, a length prefix, a piece's header.
	for _, cut := range [][2]int{{0, 10}, {10, 70}, {70, 72}, {72, 120}, {120, 130}, {130, len(stream)}} {
		if n, err := c.Write(stream[cut[0]:cut[1]]); err != nil || n != cut[1]-cut[0] {
			t.Fatalf("Write(%d bytes) = %d, %v", cut[1]-cut[0], n, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(far.bytes()) < len(stream) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := far.bytes()
	if len(got) != len(stream) {
		t.Fatalf("far end got %d bytes, want %d", len(got), len(stream))
	}
	if !bytes.Equal(got[:btHandshakeLen], stream[:btHandshakeLen]) {
		t.Fatal("handshake changed on the way")
	}
	// Control messages may overtake waiting pieces; every message must arrive whole.
	want := map[string]int{}
	for _, m := range msgs {
		want[string(m)]++
	}
	for _, m := range splitMessages(t, got[btHandshakeLen:]) {
		if want[string(m)] == 0 {
			t.Fatalf("unexpected or mangled message of %d bytes (id %d)", len(m), m[min(4, len(m)-1)])
		}
		want[string(m)]--
	}
	if !c.(*queuedConn).ourFast {
		t.Error("the fast extension offered in the handshake was not seen")
	}
}

func TestUplinkQueueSendsOldestFirstAtTheCap(t *testing.T) {
	// 16 KiB blocks at 128 KiB/s with a one-block burst: 125 ms a block after the first.
	q := newUplinkQueue(rate.NewLimiter(128<<10, 16<<10))
	ih := metainfo.Hash{7}
	var mu sync.Mutex
	var order []string
	far := map[string]*orderConn{}
	conns := map[string]net.Conn{}
	for _, name := range []string{"a", "b"} {
		far[name] = &orderConn{name: name, mu: &mu, order: &order}
		conns[name] = q.wrap(far[name])
		if _, err := conns[name].Write(btHandshake(ih)); err != nil {
			t.Fatal(err)
		}
	}
	block := bytes.Repeat([]byte{1}, 16<<10)
	// Requests served in the order they were handed over, whichever connection they are on.
	want := []string{"a0", "b0", "b1", "a1", "b2", "a2"}
	for _, w := range want {
		if _, err := conns[w[:1]].Write(pieceMsg(0, uint32(w[1]-'0')<<14, block)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	defer close(done)
	start := time.Now()
	go q.run(done)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n == len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Fatalf("blocks sent in the order %v, want %v", order, want)
	}
	// Six blocks at the cap: the burst's one at once, five more at 125 ms each.
	if elapsed < 550*time.Millisecond {
		t.Errorf("six 16 KiB blocks went in %v at 128 KiB/s: the cap was not applied", elapsed)
	}
}

// orderConn logs which connection each piece block reached, and its block number.
type orderConn struct {
	recordConn
	name  string
	mu    *sync.Mutex
	order *[]string
}

func (c *orderConn) Write(b []byte) (int, error) {
	if len(b) >= btPieceHeader && b[4] == btPieceMsg {
		c.mu.Lock()
		*c.order = append(*c.order, c.name+string(rune('0'+binary.BigEndian.Uint32(b[9:13])>>14)))
		c.mu.Unlock()
	}
	return c.recordConn.Write(b)
}

func TestUplinkQueuePacesWhatItCannotRead(t *testing.T) {
	// An obfuscated handshake from an ordinary client: bytes go through in order, at the cap.
	lim := rate.NewLimiter(rate.Limit(64<<10), 16<<10)
	q := newUplinkQueue(lim)
	far := &recordConn{}
	c := q.wrap(far)
	junk := bytes.Repeat([]byte{0x42}, 48<<10)
	start := time.Now()
	if n, err := c.Write(junk); err != nil || n != len(junk) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if !bytes.Equal(far.bytes(), junk) {
		t.Fatal("bytes changed on the way")
	}
	// 48 KiB at 64 KiB/s with a 16 KiB burst: at least 0.5 s.
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Errorf("48 KiB went through in %v: the cap was not applied", el)
	}
}

func TestUplinkQueueClosedConnection(t *testing.T) {
	q := newUplinkQueue(rate.NewLimiter(1, 16<<10)) // almost no tokens: blocks stay queued
	done := make(chan struct{})
	defer close(done)
	go q.run(done)
	c := q.wrap(&recordConn{})
	if _, err := c.Write(btHandshake(metainfo.Hash{9})); err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{1}, 16<<10)
	blocked := make(chan error, 1)
	go func() {
		// Past queuedConnBytes the writer waits for the queue; closing must release it.
		for i := 0; ; i++ {
			if _, err := c.Write(pieceMsg(0, uint32(i)<<14, block)); err != nil {
				blocked <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, errQueueClosed) {
			t.Errorf("blocked Write returned %v, want errQueueClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Write blocked on a full queue did not return after Close")
	}
	if _, err := c.Write([]byte{0, 0, 0, 0}); err == nil {
		t.Error("Write after Close succeeded")
	}
	if b := q.next(); b != nil {
		t.Error("a closed connection's block was still handed out")
	}
}

func TestUplinkQueueDropsCancelledBlocks(t *testing.T) {
	q := newUplinkQueue(rate.NewLimiter(1, 16<<10)) // the first block goes, the rest wait
	done := make(chan struct{})
	defer close(done)
	go q.run(done)
	ih := metainfo.Hash{5}
	req := func(id byte, index, begin uint32) []byte {
		return wireMsg(id, binary.BigEndian.AppendUint32(nil, index), binary.BigEndian.AppendUint32(nil, begin),
			binary.BigEndian.AppendUint32(nil, 16<<10))
	}
	// The peer's side: its handshake, a have, then cancels of blocks 1 and 2 of piece 4
	// (read in two awkward parts).
	in := append(btHandshake(ih), wireMsg(4, binary.BigEndian.AppendUint32(nil, 3))...)
	in = append(in, req(btCancelMsg, 4, 1<<14)...)
	in = append(in, req(btCancelMsg, 4, 2<<14)...)
	far := &recordConn{}
	c := q.wrap(far)
	if _, err := c.Write(btHandshake(ih)); err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{3}, 16<<10)
	for i := range 4 {
		if _, err := c.Write(pieceMsg(4, uint32(i)<<14, block)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // block 0 is granted and written
	buf := make([]byte, 80)
	for _, part := range [][]byte{in[:75], in[75:]} {
		far.in.Reset(part)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
	}
	if got := q.cancelled.Load(); got != 2 {
		t.Fatalf("cancelled = %d, want 2", got)
	}
	q.mu.Lock()
	var left []uint32
	for _, b := range q.waiting {
		left = append(left, binary.BigEndian.Uint32(b.msg[9:13])>>14)
	}
	q.mu.Unlock()
	if len(left) != 1 || left[0] != 3 {
		t.Fatalf("blocks still waiting: %v, want [3]", left)
	}
	// Block 0 went out, then a reject for each cancelled block (the fast extension is on).
	msgs := splitMessages(t, far.bytes()[btHandshakeLen:])
	var rejects [][]byte
	for _, m := range msgs {
		if m[4] == btRejectMsg {
			rejects = append(rejects, m)
		}
	}
	if len(rejects) != 2 || !bytes.Equal(rejects[0], req(btRejectMsg, 4, 1<<14)) || !bytes.Equal(rejects[1], req(btRejectMsg, 4, 2<<14)) {
		t.Fatalf("rejects sent: %q", rejects)
	}
	// A cancel for a block already sent changes nothing.
	far.in.Reset(req(btCancelMsg, 4, 0))
	_, _ = c.Read(buf)
	if got := q.cancelled.Load(); got != 2 {
		t.Errorf("cancel of a sent block counted: cancelled = %d", got)
	}
	// Cancelling the last waiting block leaves nothing for the cap to send.
	far.in.Reset(req(btCancelMsg, 4, 3<<14))
	_, _ = c.Read(buf)
	if got := q.cancelled.Load(); got != 3 {
		t.Errorf("cancelled = %d after the last block's cancel, want 3", got)
	}
	if n := q.peek(); n != 0 {
		t.Errorf("the queue still offers a %d-byte block after every block was cancelled", n)
	}
}

// FuzzUplinkQueueWire feeds arbitrary bytes to both parsers: what a peer sends (untrusted)
// and what the torrent client writes. Neither may panic, lose bytes that are not piece
// blocks, or keep more of a message than a cancel needs.
func FuzzUplinkQueueWire(f *testing.F) {
	ih := metainfo.Hash{1}
	cancel := wireMsg(btCancelMsg, binary.BigEndian.AppendUint32(nil, 0), binary.BigEndian.AppendUint32(nil, 0), binary.BigEndian.AppendUint32(nil, 16<<10))
	f.Add(append(btHandshake(ih), wireMsg(4, []byte{0, 0, 0, 1})...), append(btHandshake(ih), cancel...), uint8(7))
	f.Add([]byte("\x13BitTorrent protocol"), []byte{0xff, 0xff, 0xff, 0xff, 1}, uint8(1))
	f.Add([]byte{0x42, 1, 2}, []byte{19}, uint8(3))
	f.Fuzz(func(t *testing.T, written, read []byte, cut uint8) {
		q := newUplinkQueue(rate.NewLimiter(rate.Inf, 16<<10))
		far := &recordConn{}
		c := q.wrap(far).(*queuedConn)
		written = written[:min(len(written), queuedConnBytes/2)] // nothing drains the queue here
		step := int(cut%16) + 1
		for i := 0; i < len(written); i += step {
			if _, err := c.Write(written[i:min(i+step, len(written))]); err != nil {
				t.Fatalf("Write: %v", err)
			}
		}
		// Whatever was written and not held as a piece block reached the far end.
		q.mu.Lock()
		held := 0
		for _, b := range q.waiting {
			held += len(b.msg)
		}
		q.mu.Unlock()
		if got := len(far.bytes()) + held + len(c.msg); got != len(written) {
			t.Fatalf("%d bytes written, %d accounted for", len(written), got)
		}
		for i := 0; i < len(read); i += step {
			c.readWire(read[i:min(i+step, len(read))])
			if len(c.rMsg) > btRequestLen {
				t.Fatalf("reader kept %d bytes of one message", len(c.rMsg))
			}
			if c.rLen > 0 && c.rGot > c.rLen {
				t.Fatalf("reader past the end of a message: %d of %d", c.rGot, c.rLen)
			}
		}
	})
}
