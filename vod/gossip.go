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

type haveMessage struct {
	CID string `json:"cid"`
}

// decodeHave parses a gossip message from an untrusted peer.
func decodeHave(b []byte) (cid.Cid, error) {
	if len(b) > maxHaveMessage {
		return cid.Undef, fmt.Errorf("have message: %d bytes, at most %d", len(b), maxHaveMessage)
	}
	var m haveMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return cid.Undef, fmt.Errorf("have message: %w", err)
	}
	c, err := cid.Decode(m.CID)
	if err != nil {
		return cid.Undef, fmt.Errorf("have message: cid: %w", err)
	}
	if c.Prefix().Codec != cid.Raw {
		return cid.Undef, errors.New("have message: cid: not a raw-codec title CID")
	}
	return c, nil
}

// holders remembers the gateways that recently said they hold a title.
type holders struct {
	mu sync.Mutex
	m  map[string][]holder // by CID string
}

type holder struct {
	id peer.ID
	at time.Time
}

func (h *holders) add(c string, id peer.ID, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string][]holder{}
	}
	list := slices.DeleteFunc(h.m[c], func(x holder) bool { return x.id == id || now.Sub(x.at) > holderTTL })
	list = append(list, holder{id, now})
	if len(list) > holdersPerCID {
		list = list[len(list)-holdersPerCID:]
	}
	h.m[c] = list
}

func (h *holders) of(c string, now time.Time) []peer.ID {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []peer.ID
	for _, x := range h.m[c] {
		if now.Sub(x.at) <= holderTTL {
			out = append(out, x.id)
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
		c, err := decodeHave(msg.Data)
		if err != nil {
			a.log.Debug("vod: gossip", "from", from, "err", err)
			continue
		}
		if _, known := a.lookup(c.String()); known {
			a.holders.add(c.String(), from, time.Now())
		}
	}
}

// announceHave tells the fleet this gateway now holds (part of) a title.
func (a *App) announceHave(c cid.Cid) {
	if a.topic == nil {
		return
	}
	b, _ := json.Marshal(haveMessage{CID: c.String()})
	ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
	defer cancel()
	if err := a.topic.Publish(ctx, b); err != nil && a.ctx.Err() == nil {
		a.log.Debug("vod: gossip publish", "err", err)
	}
}

// gossipHolders are the recent holders of a title as overlay peers (RTT and labels where the
// overlay knows them).
func (a *App) gossipHolders(c cid.Cid) []overlay.PeerInfo {
	var out []overlay.PeerInfo
	for _, id := range a.holders.of(c.String(), time.Now()) {
		out = append(out, a.ov.PeerInfo(id))
	}
	return out
}
