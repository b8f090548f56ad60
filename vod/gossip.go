package vod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
)

// HaveTopic is the fleet gossip on which gateways say which titles they started holding. It
// is fresher than the DHT (a provider record needs a lookup, and a flash crowd's first viewers
// are holders within seconds); the DHT stays the source of truth for titles seen long ago.
const HaveTopic = "/nanodc/vod/have/1"

const (
	maxHaveMessage = 256
	holdersPerCID  = 64
	holderTTL      = 30 * time.Minute
)

// haveMessage says which title a gateway holds and where the gateway is, so that a viewer
// can prefer holders in its own ISP without first connecting to them to learn their labels.
// The labels are the holder's own claim, as in the overlay's info exchange.
type haveMessage struct {
	CID        string `json:"cid"`
	ISP        string `json:"isp,omitempty"`
	AccessNode string `json:"access_node,omitempty"`
}

// decodeHave parses a gossip message from an untrusted peer.
func decodeHave(b []byte) (cid.Cid, overlay.Labels, error) {
	if len(b) > maxHaveMessage {
		return cid.Undef, overlay.Labels{}, fmt.Errorf("have message: %d bytes, at most %d", len(b), maxHaveMessage)
	}
	var m haveMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return cid.Undef, overlay.Labels{}, fmt.Errorf("have message: %w", err)
	}
	c, err := cid.Decode(m.CID)
	if err != nil {
		return cid.Undef, overlay.Labels{}, fmt.Errorf("have message: cid: %w", err)
	}
	if c.Prefix().Codec != cid.Raw {
		return cid.Undef, overlay.Labels{}, errors.New("have message: cid: not a raw-codec title CID")
	}
	l := overlay.Labels{ISP: m.ISP, AccessNode: m.AccessNode}
	if err := l.Validate(); err != nil {
		return cid.Undef, overlay.Labels{}, fmt.Errorf("have message: %w", err)
	}
	return c, l, nil
}

// holders remembers the gateways that recently said they hold a title.
type holders struct {
	mu sync.Mutex
	m  map[string][]holder // by CID string
}

type holder struct {
	id     peer.ID
	labels overlay.Labels // as the holder announced them
	at     time.Time
}

func (h *holders) add(c string, id peer.ID, labels overlay.Labels, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string][]holder{}
	}
	list := slices.DeleteFunc(h.m[c], func(x holder) bool { return x.id == id || now.Sub(x.at) > holderTTL })
	list = append(list, holder{id, labels, now})
	if len(list) > holdersPerCID {
		list = list[len(list)-holdersPerCID:]
	}
	h.m[c] = list
}

func (h *holders) of(c string, now time.Time) []holder {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []holder
	for _, x := range h.m[c] {
		if now.Sub(x.at) <= holderTTL {
			out = append(out, x)
		}
	}
	return out
}

// runGossip subscribes to HaveTopic and records holders of the titles in our catalog.
func (a *App) runGossip(topic *pubsub.Topic) {
	sub, err := topic.Subscribe()
	if err != nil {
		a.log.Warn("vod: gossip subscribe", "err", err)
		return
	}
	defer sub.Cancel()
	for {
		msg, err := sub.Next(a.ctx)
		if err != nil {
			return
		}
		from := msg.GetFrom()
		if from == a.ov.ID() {
			continue
		}
		c, labels, err := decodeHave(msg.Data)
		if err != nil {
			a.log.Debug("vod: gossip", "from", from, "err", err)
			continue
		}
		if _, known := a.lookup(c.String()); known {
			a.holders.add(c.String(), from, labels, time.Now())
		}
	}
}

// announceHave tells the fleet this gateway now holds (part of) a title.
func (a *App) announceHave(c cid.Cid) {
	if a.topic == nil {
		return
	}
	self := a.ov.Labels()
	b, _ := json.Marshal(haveMessage{CID: c.String(), ISP: self.ISP, AccessNode: self.AccessNode})
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	if err := a.topic.Publish(ctx, b); err != nil && a.ctx.Err() == nil {
		a.log.Debug("vod: gossip publish", "err", err)
	}
}

// gossipHolders are the recent holders of a title as overlay peers: RTT and labels where the
// overlay knows them, else the labels the holder announced.
func (a *App) gossipHolders(c cid.Cid) []overlay.PeerInfo {
	var out []overlay.PeerInfo
	self := a.ov.Labels()
	for _, h := range a.holders.of(c.String(), time.Now()) {
		pi := a.ov.PeerInfo(h.id)
		if pi.Labels.ISP == "" && h.labels.ISP != "" {
			pi.Labels, pi.Locality = h.labels, overlay.Locality(self, h.labels)
		}
		out = append(out, pi)
	}
	return out
}
