// Package catalog is the video provider's signed catalog for peer-assisted video on demand.
//
// Each title is an [Entry]: the file's content ID (a CIDv1, raw codec, sha2-256 of the whole
// file), the v1 infohash and the bencoded .torrent itself (single file, no trackers, the origin
// URL as its only BEP 19 webseed), playback facts (MIME type, bitrate, duration) and the
// provider's Ed25519 signature. Gateways receive entries from disk or from the network, so
// [Decode] treats its input as hostile: size limit, exact field names, every field validated,
// the embedded torrent checked against the entry, and the signature verified.
//
// # What the signature covers
//
// The signature is an Ed25519 signature by the key behind the provider peer ID over this byte
// string (see signingBytes):
//
//	"nanodc/vod/catalog/entry/v1\n"
//	then, for each field in this order:
//	  version cid infohash name size mime bitrate_bps duration_s piece_length origin torrent
//	  provider published
//	the field's JSON name, a 0x00 byte, the value's length as an 8-byte big-endian integer, and
//	the value: integers as 8-byte big-endian two's complement, duration_s as its IEEE 754
//	binary64 bits (big-endian), strings as their UTF-8 bytes, torrent as its raw bytes, and
//	published as 8-byte big-endian Unix seconds followed by 4-byte big-endian nanoseconds
//	(so the instant is signed, not its textual time zone).
//
// Every field except signature is covered; the length prefixes make the encoding unambiguous.
//
// The signature binds the CID to the torrent's piece hashes, but the CID itself can only be
// checked against the file's bytes, which an entry does not carry.
//
// A [Store] keeps a catalog directory: DIR/<cid>.json per title plus DIR/<name>.torrent, the
// standard torrent file any BitTorrent client opens. [Publish] turns a video file into a signed
// entry; [LoadKey] and [CreateKey] handle the provider's key file.
package catalog
