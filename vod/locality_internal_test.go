package vod

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
)

func placed(id string, isp string, locality int, rtt time.Duration) overlay.PeerInfo {
	return overlay.PeerInfo{ID: peer.ID(id), Labels: overlay.Labels{ISP: isp}, Locality: locality, RTT: rtt}
}

func ids(ps []overlay.PeerInfo) string {
	s := ""
	for _, p := range ps {
		s += string(p.ID) + " "
	}
	return s
}

// TestPickNearestKeepsToOurISP: busy uplinks make our ISP's holders look farther by RTT than
// idle ones elsewhere; they are still picked first, other ISPs only make up for what ours
// lacks, and some come when our ISP's peers fell short.
func TestPickNearestKeepsToOurISP(t *testing.T) {
	var cands []overlay.PeerInfo
	for i := range 4 {
		cands = append(cands, placed(fmt.Sprintf("far%d", i), "isp-b", 2, time.Duration(10+i)*time.Millisecond))
	}
	for i := range 4 {
		cands = append(cands, placed(fmt.Sprintf("isp%d", i), "isp-a", 1, time.Duration(50+i)*time.Millisecond))
	}
	for i := range 2 {
		cands = append(cands, placed(fmt.Sprintf("an%d", i), "isp-a", 0, time.Duration(80+i)*time.Millisecond))
	}
	cands = append(cands, overlay.PeerInfo{ID: "unknown", RTT: 5 * time.Millisecond}, placed("self", "isp-a", 0, 0))

	got := ids(pickNearest("self", cands, 8, false))
	if want := "isp0 isp1 isp2 isp3 an0 an1 "; got != want {
		t.Errorf("6 holders in our ISP, 8 wanted: picked %q, want %q (ours only, by RTT)", got, want)
	}
	if got, want := ids(pickNearest("self", cands, 4, false)), "isp0 isp1 isp2 isp3 "; got != want {
		t.Errorf("4 wanted: picked %q, want %q", got, want)
	}
	// Our ISP's peers fell short (a stream needed the origin): half as many again from
	// elsewhere, unknown place first, since the origin is outside the ISP too.
	if got, want := ids(pickNearest("self", cands, 8, true)), "isp0 isp1 isp2 isp3 an0 an1 unknown far0 far1 far2 "; got != want {
		t.Errorf("short of peers: picked %q, want %q", got, want)
	}
	// Our ISP holds one: the others make up for it, unknown place first, then nearest.
	few := append([]overlay.PeerInfo{cands[8]}, cands[:4]...)
	few = append(few, cands[10])
	if got, want := ids(pickNearest("self", few, 8, false)), "an0 unknown far0 far1 far2 far3 "; got != want {
		t.Errorf("1 holder in our ISP: picked %q, want %q", got, want)
	}
	// The same peer from the DHT (no labels) and from gossip (labels): counted once, placed.
	dup := []overlay.PeerInfo{{ID: "isp0"}, cands[4], cands[0]}
	if got, want := ids(pickNearest("self", dup, 3, false)), "isp0 far0 "; got != want {
		t.Errorf("duplicates: picked %q, want %q", got, want)
	}
}

// TestPickByRTTIgnoresISP: LocalityRTT takes the nearest by RTT wherever they are.
func TestPickByRTTIgnoresISP(t *testing.T) {
	cands := []overlay.PeerInfo{
		placed("ours0", "isp-a", 1, 50*time.Millisecond), placed("far0", "isp-b", 2, 10*time.Millisecond),
		placed("ours1", "isp-a", 0, 40*time.Millisecond), placed("far1", "isp-b", 2, 12*time.Millisecond),
		{ID: "far0", RTT: 10 * time.Millisecond}, placed("self", "isp-a", 0, 0),
	}
	if got, want := ids(pickByRTT("self", cands, 3)), "far0 far1 ours1 "; got != want {
		t.Errorf("picked %q, want %q (nearest by RTT, each once, not self)", got, want)
	}
	if got, want := ids(pickNearest("self", cands, 3, false)), "ours1 ours0 "; got != want {
		t.Errorf("LocalityISP picked %q, want %q (our ISP holds enough)", got, want)
	}
}
