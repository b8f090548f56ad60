// Package vod is the video provider's app on a gateway: peer-assisted video on demand.
//
// Titles are torrents (anacrolix/torrent) whose peer-wire connections run over libp2p streams
// between gateways; peers come from the overlay (DHT provider records on the title's CID,
// nearest first) rather than from trackers, PEX or the BitTorrent DHT. A deadline scheduler
// watches every stream a home player reads from /vod/{title}: a piece whose playback deadline
// is near and that the connected peers will not deliver in time is fetched from the provider's
// origin by HTTP range request and hash-checked like any other piece, so the origin fills gaps
// instead of acting as a second swarm. A byte-quota cache keeps what was watched (recency and
// popularity decide what goes) and the titles the provider pushed (pinned).
//
// Three strategies exist so the emulator can compare them on the same workload: nanodc
// (locality, deadlines, push), bittorrent (plain anacrolix: random peers, the origin as an
// ordinary webseed, no deadlines) and cdn-only (every byte from the origin).
package vod
