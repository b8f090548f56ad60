package catalog

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

// Version is the only entry format version this package reads and writes.
const Version = 1

// MaxEntrySize bounds an encoded entry; Decode refuses larger input before parsing it. The
// torrent dominates: 16 MiB holds the piece hashes of a 50 GiB file in 4 MiB pieces.
const MaxEntrySize = 16 << 20

// Piece length bounds accepted in an entry. 16 KiB is the BitTorrent request block size; above
// 64 MiB a single lost piece costs too much to re-fetch for streaming.
const (
	MinPieceLength = 16 << 10
	MaxPieceLength = 64 << 20
)

// maxBencodeDepth bounds nesting in an embedded torrent. A standard metainfo nests 4 deep; the
// limit keeps hostile input from exhausting the stack of the recursive bencode decoder.
const maxBencodeDepth = 32

// Entry is one title of the catalog. Its JSON form is the wire and on-disk format.
type Entry struct {
	Version     int       `json:"version"`
	CID         string    `json:"cid"`          // CIDv1, raw codec, sha2-256 of the file's bytes, canonical base32 string
	InfoHash    string    `json:"infohash"`     // v1 infohash, 40 lowercase hex digits
	Name        string    `json:"name"`         // file name, no path
	Size        int64     `json:"size"`         // bytes
	MIME        string    `json:"mime"`         // media type, e.g. video/mp4
	BitrateBps  int64     `json:"bitrate_bps"`  // average bitrate, bits per second
	DurationS   float64   `json:"duration_s"`   // play time, seconds
	PieceLength int64     `json:"piece_length"` // torrent piece length, bytes
	Origin      string    `json:"origin"`       // absolute http(s) URL of the file; the torrent's webseed
	Torrent     []byte    `json:"torrent"`      // bencoded v1 metainfo (base64 in JSON)
	Provider    string    `json:"provider"`     // peer ID of the provider's Ed25519 key
	Published   time.Time `json:"published"`    // RFC 3339
	Signature   []byte    `json:"signature"`    // Ed25519 signature, see the package doc
}

// fieldNames lists the JSON fields in signing order (signature last, not signed).
var fieldNames = [...]string{"version", "cid", "infohash", "name", "size", "mime", "bitrate_bps",
	"duration_s", "piece_length", "origin", "torrent", "provider", "published", "signature"}

// fieldErr names the field an error is about, in the form every error of this package uses.
func fieldErr(field, format string, args ...any) error {
	return fmt.Errorf("catalog entry: %s: %s", field, fmt.Sprintf(format, args...))
}

// Sign validates every field but provider and signature, then sets both from priv, which must
// be an Ed25519 key.
func (e *Entry) Sign(priv crypto.PrivKey) error {
	if priv == nil || priv.Type() != crypto.Ed25519 {
		return errors.New("catalog entry: signing key must be Ed25519")
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("catalog entry: provider: %w", err)
	}
	e.Provider = id.String()
	e.Signature = nil
	if err := e.validateContent(); err != nil {
		return err
	}
	sig, err := priv.Sign(e.signingBytes())
	if err != nil {
		return fmt.Errorf("catalog entry: signature: %w", err)
	}
	e.Signature = sig
	return nil
}

// Verify checks every field, the embedded torrent against the entry, and the signature against
// the public key embedded in the provider peer ID.
func (e *Entry) Verify() error {
	if err := e.validateContent(); err != nil {
		return err
	}
	pub, err := providerKey(e.Provider)
	if err != nil {
		return err
	}
	if len(e.Signature) == 0 {
		return fieldErr("signature", "missing")
	}
	ok, err := pub.Verify(e.signingBytes(), e.Signature)
	if err != nil || !ok {
		return fieldErr("signature", "does not verify with the provider's key")
	}
	return nil
}

func providerKey(s string) (crypto.PubKey, error) {
	if s == "" {
		return nil, fieldErr("provider", "missing")
	}
	id, err := peer.Decode(s)
	if err != nil {
		return nil, fieldErr("provider", "not a peer ID: %v", err)
	}
	if id.String() != s {
		return nil, fieldErr("provider", "not in canonical form (want %s)", id)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fieldErr("provider", "peer ID does not embed a public key: %v", err)
	}
	if pub.Type() != crypto.Ed25519 {
		return nil, fieldErr("provider", "key type %s, want Ed25519", pub.Type())
	}
	return pub, nil
}

// validateContent checks every field except the signature (and the provider only for its form),
// including the embedded torrent's agreement with the entry.
func (e *Entry) validateContent() error {
	if e.Version != Version {
		return fieldErr("version", "%d, want %d", e.Version, Version)
	}
	if _, err := parseCID(e.CID); err != nil {
		return err
	}
	if err := validateInfoHash(e.InfoHash); err != nil {
		return err
	}
	if err := ValidateName(e.Name); err != nil {
		return fieldErr("name", "%v", err)
	}
	if e.Size <= 0 {
		return fieldErr("size", "must be > 0")
	}
	if err := validateMIME(e.MIME); err != nil {
		return err
	}
	if e.BitrateBps <= 0 {
		return fieldErr("bitrate_bps", "must be > 0")
	}
	if math.IsNaN(e.DurationS) || math.IsInf(e.DurationS, 0) || e.DurationS <= 0 {
		return fieldErr("duration_s", "must be a finite number > 0")
	}
	if err := validatePieceLength(e.PieceLength); err != nil {
		return fieldErr("piece_length", "%v", err)
	}
	if err := validateOrigin(e.Origin); err != nil {
		return err
	}
	if e.Published.IsZero() {
		return fieldErr("published", "missing")
	}
	if y := e.Published.Year(); y < 1 || y > 9999 {
		return fieldErr("published", "year %d outside 1..9999", y)
	}
	if e.Provider != "" {
		if _, err := providerKey(e.Provider); err != nil {
			return err
		}
	}
	return e.checkTorrent()
}

func parseCID(s string) (cid.Cid, error) {
	if s == "" {
		return cid.Undef, fieldErr("cid", "missing")
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fieldErr("cid", "not a CID: %v", err)
	}
	if c.Version() != 1 || c.Type() != cid.Raw {
		return cid.Undef, fieldErr("cid", "want CIDv1 with the raw codec")
	}
	dm, err := multihash.Decode(c.Hash())
	if err != nil || dm.Code != multihash.SHA2_256 || dm.Length != 32 {
		return cid.Undef, fieldErr("cid", "want a sha2-256 multihash")
	}
	if c.String() != s {
		return cid.Undef, fieldErr("cid", "not in canonical form (want %s)", c)
	}
	return c, nil
}

func validateInfoHash(s string) error {
	if len(s) != 2*metainfo.HashSize {
		return fieldErr("infohash", "want %d hex digits, got %d characters", 2*metainfo.HashSize, len(s))
	}
	if _, err := hex.DecodeString(s); err != nil || strings.ToLower(s) != s {
		return fieldErr("infohash", "want lowercase hex digits")
	}
	return nil
}

// ValidateName reports whether name can be a title's file name: a single path element that is
// safe on every platform and on an origin server (no separators, no leading dot, no control
// characters, valid UTF-8, at most 255 bytes).
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a file name", name)
	case len(name) > 255:
		return errors.New("longer than 255 bytes")
	case !utf8.ValidString(name):
		return errors.New("not valid UTF-8")
	case strings.ContainsAny(name, `/\`):
		return errors.New("contains a path separator")
	case strings.HasPrefix(name, "."):
		return errors.New("starts with '.' (hidden files are not served)")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errors.New("contains a control character")
	}
	return nil
}

func validateMIME(s string) error {
	if s == "" {
		return fieldErr("mime", "missing")
	}
	if len(s) > 255 {
		return fieldErr("mime", "longer than 255 bytes")
	}
	mt, _, err := mime.ParseMediaType(s)
	if err != nil {
		return fieldErr("mime", "not a media type: %v", err)
	}
	if t, sub, ok := strings.Cut(mt, "/"); !ok || t == "" || sub == "" {
		return fieldErr("mime", "%q is not of the form type/subtype", s)
	}
	return nil
}

func validatePieceLength(n int64) error {
	if n < MinPieceLength || n > MaxPieceLength || n&(n-1) != 0 {
		return fmt.Errorf("%d: want a power of two between %d and %d", n, MinPieceLength, MaxPieceLength)
	}
	return nil
}

func validateOrigin(s string) error {
	if s == "" {
		return fieldErr("origin", "missing")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fieldErr("origin", "%v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fieldErr("origin", "%q: want an absolute http or https URL", s)
	}
	if u.Host == "" {
		return fieldErr("origin", "%q: no host", s)
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return fieldErr("origin", "%q: a fragment makes no sense in a webseed URL", s)
	}
	if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return fieldErr("origin", "%q: contains spaces or control characters", s)
	}
	return nil
}

// checkTorrent decodes the embedded torrent and checks it describes exactly this entry.
func (e *Entry) checkTorrent() error {
	mi, info, err := decodeTorrent(e.Torrent)
	if err != nil {
		return err
	}
	if got := mi.HashInfoBytes().HexString(); got != e.InfoHash {
		return fieldErr("infohash", "%s does not match the torrent's info dictionary (which hashes to %s)", e.InfoHash, got)
	}
	if info.Name != e.Name {
		return fieldErr("name", "%q differs from the torrent's name %q", e.Name, info.Name)
	}
	if info.Length != e.Size {
		return fieldErr("size", "%d differs from the torrent's length %d", e.Size, info.Length)
	}
	if info.PieceLength != e.PieceLength {
		return fieldErr("piece_length", "%d differs from the torrent's piece length %d", e.PieceLength, info.PieceLength)
	}
	if !slices.Contains(mi.UrlList, e.Origin) {
		return fieldErr("origin", "%q is not in the torrent's url-list %q", e.Origin, []string(mi.UrlList))
	}
	return nil
}

// decodeTorrent parses and checks the shape of a single-file v1 metainfo.
func decodeTorrent(b []byte) (*metainfo.MetaInfo, *metainfo.Info, error) {
	if len(b) == 0 {
		return nil, nil, fieldErr("torrent", "missing")
	}
	if err := scanBencode(b); err != nil {
		return nil, nil, fieldErr("torrent", "not bencoded: %v", err)
	}
	var mi metainfo.MetaInfo
	d := bencode.NewDecoder(bytes.NewReader(b))
	d.MaxStrLen = int64(len(b))
	if err := d.Decode(&mi); err != nil {
		return nil, nil, fieldErr("torrent", "not a metainfo: %v", err)
	}
	if len(mi.InfoBytes) == 0 {
		return nil, nil, fieldErr("torrent", "no info dictionary")
	}
	var info metainfo.Info
	d = bencode.NewDecoder(bytes.NewReader(mi.InfoBytes))
	d.MaxStrLen = int64(len(mi.InfoBytes))
	if err := d.Decode(&info); err != nil {
		return nil, nil, fieldErr("torrent", "bad info dictionary: %v", err)
	}
	switch {
	case len(info.Files) != 0:
		return nil, nil, fieldErr("torrent", "multi-file torrent, want a single file")
	case info.MetaVersion != 0 || len(info.FileTree.Dir) != 0 || info.FileTree.File.Length != 0:
		return nil, nil, fieldErr("torrent", "BitTorrent v2 metadata, want v1 only")
	case info.NameUtf8 != "" && info.NameUtf8 != info.Name:
		return nil, nil, fieldErr("torrent", "name.utf-8 %q differs from name %q", info.NameUtf8, info.Name)
	case info.PieceLength <= 0:
		return nil, nil, fieldErr("torrent", "piece length %d", info.PieceLength)
	case info.Length <= 0:
		return nil, nil, fieldErr("torrent", "length %d", info.Length)
	}
	pieces := (info.Length + info.PieceLength - 1) / info.PieceLength
	if int64(len(info.Pieces)) != pieces*metainfo.HashSize {
		return nil, nil, fieldErr("torrent", "%d bytes of piece hashes, want %d for %d pieces", len(info.Pieces), pieces*metainfo.HashSize, pieces)
	}
	return &mi, &info, nil
}

// scanBencode checks b is exactly one well-formed bencoded value with bounded nesting, without
// recursion, before the recursive anacrolix decoder sees it.
func scanBencode(b []byte) error {
	depth, i := 0, 0
	for {
		if i >= len(b) {
			return io.ErrUnexpectedEOF
		}
		switch c := b[i]; {
		case c == 'i':
			j := bytes.IndexByte(b[i+1:], 'e')
			if j < 1 {
				return fmt.Errorf("offset %d: bad integer", i)
			}
			i += j + 2
		case c >= '0' && c <= '9':
			j := bytes.IndexByte(b[i:], ':')
			if j < 1 || j > 10 {
				return fmt.Errorf("offset %d: bad string length", i)
			}
			n := 0
			for _, d := range b[i : i+j] {
				if d < '0' || d > '9' {
					return fmt.Errorf("offset %d: bad string length", i)
				}
				n = n*10 + int(d-'0')
			}
			i += j + 1
			if n > len(b)-i {
				return fmt.Errorf("offset %d: string of %d bytes runs past the end", i, n)
			}
			i += n
		case c == 'l' || c == 'd':
			if depth++; depth > maxBencodeDepth {
				return fmt.Errorf("nested deeper than %d", maxBencodeDepth)
			}
			i++
			continue // a container holds no value yet
		case c == 'e':
			if depth == 0 {
				return fmt.Errorf("offset %d: unexpected 'e'", i)
			}
			depth--
			i++
		default:
			return fmt.Errorf("offset %d: unexpected byte %q", i, c)
		}
		if depth == 0 {
			if i != len(b) {
				return fmt.Errorf("%d trailing bytes", len(b)-i)
			}
			return nil
		}
	}
}

// signingBytes is the deterministic encoding the signature covers; see the package doc.
func (e *Entry) signingBytes() []byte {
	var buf bytes.Buffer
	buf.WriteString("nanodc/vod/catalog/entry/v1\n")
	field := func(name string, v []byte) {
		buf.WriteString(name)
		buf.WriteByte(0)
		buf.Write(binary.BigEndian.AppendUint64(nil, uint64(len(v))))
		buf.Write(v)
	}
	i64 := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	field("version", i64(int64(e.Version)))
	field("cid", []byte(e.CID))
	field("infohash", []byte(e.InfoHash))
	field("name", []byte(e.Name))
	field("size", i64(e.Size))
	field("mime", []byte(e.MIME))
	field("bitrate_bps", i64(e.BitrateBps))
	field("duration_s", binary.BigEndian.AppendUint64(nil, math.Float64bits(e.DurationS)))
	field("piece_length", i64(e.PieceLength))
	field("origin", []byte(e.Origin))
	field("torrent", e.Torrent)
	field("provider", []byte(e.Provider))
	field("published", binary.BigEndian.AppendUint32(i64(e.Published.Unix()), uint32(e.Published.Nanosecond())))
	return buf.Bytes()
}

// Decode parses and fully verifies an entry from untrusted bytes: at most MaxEntrySize bytes,
// one JSON object with exactly the entry's fields (names matched exactly, each once), every
// field valid, the torrent consistent with the entry, and the signature good.
func Decode(b []byte) (*Entry, error) {
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("catalog entry: %d bytes, more than the %d-byte limit", len(b), MaxEntrySize)
	}
	raw, err := splitFields(b)
	if err != nil {
		return nil, err
	}
	var e Entry
	targets := map[string]any{
		"version": &e.Version, "cid": &e.CID, "infohash": &e.InfoHash, "name": &e.Name,
		"size": &e.Size, "mime": &e.MIME, "bitrate_bps": &e.BitrateBps, "duration_s": &e.DurationS,
		"piece_length": &e.PieceLength, "origin": &e.Origin, "torrent": &e.Torrent,
		"provider": &e.Provider, "published": &e.Published, "signature": &e.Signature,
	}
	for _, name := range fieldNames {
		v, ok := raw[name]
		if !ok {
			return nil, fieldErr(name, "missing")
		}
		if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			return nil, fieldErr(name, "null")
		}
		if err := json.Unmarshal(v, targets[name]); err != nil {
			var ute *json.UnmarshalTypeError
			if errors.As(err, &ute) {
				return nil, fieldErr(name, "want a JSON %s, got %s", jsonKind(ute.Type.Kind().String()), ute.Value)
			}
			return nil, fieldErr(name, "%v", err)
		}
	}
	if err := e.Verify(); err != nil {
		return nil, err
	}
	return &e, nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string", "slice", "struct":
		return "string"
	default:
		return "number"
	}
}

// splitFields reads one JSON object and returns its members' raw values, rejecting unknown,
// duplicate or differently-cased names (encoding/json alone would match names case-insensitively
// and keep the last duplicate, so two readers could see different entries behind one signature).
func splitFields(b []byte) (map[string]json.RawMessage, error) {
	known := make(map[string]bool, len(fieldNames))
	for _, n := range fieldNames {
		known[n] = true
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("catalog entry: not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("catalog entry: want a JSON object")
	}
	raw := make(map[string]json.RawMessage, len(fieldNames))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("catalog entry: not JSON: %w", err)
		}
		name, _ := tok.(string)
		if !known[name] {
			return nil, fmt.Errorf("catalog entry: unknown field %q", name)
		}
		if _, dup := raw[name]; dup {
			return nil, fieldErr(name, "appears twice")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fieldErr(name, "not JSON: %v", err)
		}
		raw[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("catalog entry: not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("catalog entry: trailing data after the JSON object")
	}
	return raw, nil
}

// Encode returns the entry's JSON form (indented: catalog files are read by people too).
func (e *Entry) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("catalog entry: encoding: %w", err)
	}
	return append(b, '\n'), nil
}

// MetaInfo decodes the embedded torrent.
func (e *Entry) MetaInfo() (*metainfo.MetaInfo, error) {
	mi, _, err := decodeTorrent(e.Torrent)
	return mi, err
}

// InfoHashBytes returns the infohash; the zero hash if the field is not valid hex.
func (e *Entry) InfoHashBytes() metainfo.Hash {
	var h metainfo.Hash
	if b, err := hex.DecodeString(e.InfoHash); err == nil && len(b) == len(h) {
		copy(h[:], b)
	}
	return h
}

// ContentID returns the title's CID; cid.Undef if the field is not a valid content ID.
func (e *Entry) ContentID() cid.Cid {
	c, err := parseCID(e.CID)
	if err != nil {
		return cid.Undef
	}
	return c
}

// NumPieces is the number of torrent pieces of the title.
func (e *Entry) NumPieces() int64 {
	if e.PieceLength <= 0 {
		return 0
	}
	return (e.Size + e.PieceLength - 1) / e.PieceLength
}
