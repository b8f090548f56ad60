// Package overlay is the peer-to-peer network every nanodc gateway joins: a go-libp2p host
// (QUIC and TCP, Noise/TLS, connection and resource managers), a private Kademlia DHT under
// the /nanodc prefix, mDNS and bootstrap discovery, GossipSub for fleet events, and
// proximity — the RTT to every connected peer plus the ISP and access-node labels each peer
// reports — so that apps can ask for "the nearest peers that have X".
//
// The packet network is injectable (see PacketNetwork) so that the emulator runs this very
// code over shaped in-memory links. The package imports nothing else of nanodc.
package overlay
