package overlay

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

func TestInfoRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	want := Labels{ISP: "isp-a", AccessNode: "dslam-3", Extra: map[string]string{"region": "lyon"}}
	if err := encodeInfo(&buf, "1.2.3", want); err != nil {
		t.Fatal(err)
	}
	v, got, err := decodeInfo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if v != "1.2.3" || got.ISP != want.ISP || got.AccessNode != want.AccessNode || got.Extra["region"] != "lyon" {
		t.Fatalf("got %q %+v, want 1.2.3 %+v", v, got, want)
	}
}

// TestDecodedLabelsShared: peers with the same labels share one copy of them (a node keeps
// the labels of every peer it met for an hour); different labels stay apart.
func TestDecodedLabelsShared(t *testing.T) {
	decode := func(l Labels) Labels {
		t.Helper()
		var buf bytes.Buffer
		if err := encodeInfo(&buf, "1.2.3", l); err != nil {
			t.Fatal(err)
		}
		_, got, err := decodeInfo(&buf)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	lyon := Labels{ISP: "isp-a", AccessNode: "dslam-3", Extra: map[string]string{"region": "lyon", "profile": "vdsl2"}}
	a, b := decode(lyon), decode(lyon)
	c := decode(Labels{ISP: "isp-a", AccessNode: "dslam-3", Extra: map[string]string{"region": "nice", "profile": "vdsl2"}})
	if reflect.ValueOf(a.Extra).UnsafePointer() != reflect.ValueOf(b.Extra).UnsafePointer() {
		t.Error("two peers with equal labels got two Extra maps")
	}
	if unsafe.StringData(a.ISP) != unsafe.StringData(b.ISP) || unsafe.StringData(a.AccessNode) != unsafe.StringData(b.AccessNode) {
		t.Error("two peers with equal labels got two copies of their ISP or access node")
	}
	if c.Extra["region"] != "nice" || a.Extra["region"] != "lyon" || len(a.Extra) != 2 {
		t.Errorf("labels mixed up: %v and %v", a.Extra, c.Extra)
	}
}

func TestDecodeInfoRejects(t *testing.T) {
	frame := func(body string) []byte {
		var b bytes.Buffer
		b.WriteByte(byte(len(body)))
		b.WriteString(body)
		return b.Bytes()
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "reading length"},
		{"huge length", []byte{0xff, 0xff, 0x03}, "exceeds limit"},
		{"short body", []byte{10, '{'}, "reading body"},
		{"not json", frame("hello"), "decoding body"},
		{"wrong version", frame(`{"v":2}`), "unsupported version 2"},
		{"long label", frame(`{"v":1,"isp":"` + strings.Repeat("a", 70) + `"}`), "isp: longer than"},
		{"bad utf8", frame("{\"v\":1,\"access_node\":\"\xff\"}"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeInfo(bytes.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				if tc.name == "bad utf8" && err == nil {
					// encoding/json replaces invalid UTF-8 with U+FFFD; that is acceptable.
					return
				}
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCloserOrdersByRTTThenLocality(t *testing.T) {
	a := PeerInfo{ID: "a", RTT: 30e6, Locality: 2}
	b := PeerInfo{ID: "b", RTT: 10e6, Locality: 2}
	c := PeerInfo{ID: "c", Locality: 0} // never measured, same access node
	d := PeerInfo{ID: "d", Locality: 2}
	for _, tc := range []struct {
		x, y PeerInfo
		want int
	}{
		{a, b, 1}, {b, a, -1}, {b, c, -1}, {c, b, 1}, {c, d, -1}, {d, c, 1}, {d, d, 0},
	} {
		if got := Closer(tc.x, tc.y); got != tc.want {
			t.Errorf("Closer(%s, %s) = %d, want %d", tc.x.ID, tc.y.ID, got, tc.want)
		}
	}
}

// FuzzDecodeInfo feeds untrusted peer bytes to the info decoder: it must never panic, and
// whatever it accepts must satisfy the label limits and survive a round trip.
func FuzzDecodeInfo(f *testing.F) {
	var ok bytes.Buffer
	_ = encodeInfo(&ok, "v1", Labels{ISP: "a", AccessNode: "b", Extra: map[string]string{"k": "v"}})
	f.Add(ok.Bytes())
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte("\x09{\"v\":1}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, l, err := decodeInfo(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("accepted invalid labels: %v", err)
		}
		var buf bytes.Buffer
		if err := encodeInfo(&buf, v, l); err != nil {
			t.Fatalf("cannot re-encode accepted info: %v", err)
		}
		if _, _, err := decodeInfo(&buf); err != nil {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
