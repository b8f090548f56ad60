package overlay

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

// dhtBucketTag is the tag go-libp2p-kad-dht protects the peers of its two widest buckets
// with (see its dht.go).
const dhtBucketTag = "kbucket"

// boundedConnMgr is go-libp2p's connection manager, except that the DHT may not pin
// connections. kad-dht protects every peer of its two widest buckets from trimming — up to
// 40 connections held forever — to keep NATed nodes reachable. Gateways are the reachable
// infrastructure, memory on a gateway is scarce (each QUIC connection costs ~75 KB here),
// and the DHT dials routing-table peers on demand, so those peers are tagged (valued above
// untagged ones) instead of protected, and the watermarks hold. Config.KeepDHTConnections
// restores the library behaviour.
type boundedConnMgr struct {
	*connmgr.BasicConnMgr
}

// Protect turns the DHT's protection into a strong tag; other protections pass through.
func (m boundedConnMgr) Protect(id peer.ID, tag string) {
	if tag == dhtBucketTag {
		m.TagPeer(id, tag, 20)
		return
	}
	m.BasicConnMgr.Protect(id, tag)
}
