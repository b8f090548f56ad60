package catalog

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multibase"
	"github.com/multiformats/go-multihash"
)

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// writeRandomFile writes n random bytes to dir/name and returns the path and bytes.
func writeRandomFile(t testing.TB, dir, name string, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publishTest publishes a random file and returns the entry and the file's bytes.
func publishTest(t testing.TB, key crypto.PrivKey, name string, n int) (*Entry, []byte) {
	t.Helper()
	p, data := writeRandomFile(t, t.TempDir(), name, n)
	e, err := Publish(context.Background(), p, PublishOptions{
		Key: key, OriginBase: "http://127.0.0.1:8080/videos", BitrateBps: 1_500_000,
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, data
}

func TestPublishStoreListGet(t *testing.T) {
	key := newKey(t)
	const size = 3*256<<10 + 1234 // three full pieces and a short one
	var progress [][2]int64
	p, data := writeRandomFile(t, t.TempDir(), "big buck.mp4", size)
	e, err := Publish(context.Background(), p, PublishOptions{
		Key: key, OriginBase: "http://127.0.0.1:8080/videos/", BitrateBps: 1_500_000,
		Now:      func() time.Time { return testNow.Add(500 * time.Millisecond) },
		Progress: func(done, total int64) { progress = append(progress, [2]int64{done, total}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	pid, _ := peer.IDFromPrivateKey(key)
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"version", e.Version, 1},
		{"cid", e.CID, cid.NewCidV1(cid.Raw, mh).String()},
		{"name", e.Name, "big buck.mp4"},
		{"size", e.Size, int64(size)},
		{"mime", e.MIME, "video/mp4"},
		{"bitrate_bps", e.BitrateBps, int64(1_500_000)},
		{"duration_s", e.DurationS, float64(size) * 8 / 1_500_000},
		{"piece_length", e.PieceLength, int64(256 << 10)},
		{"origin", e.Origin, "http://127.0.0.1:8080/videos/big%20buck.mp4"},
		{"provider", e.Provider, pid.String()},
		{"published", e.Published, testNow},
		{"pieces", e.NumPieces(), int64(4)},
		{"progress end", progress[len(progress)-1], [2]int64{size, size}},
		{"progress calls", len(progress), 5},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
	if err := e.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	mi, err := e.MetaInfo()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := mi.UnmarshalInfo()
	for i := 0; i < info.NumPieces(); i++ {
		end := min((i+1)*(256<<10), size)
		if h := sha1.Sum(data[i*(256<<10) : end]); !bytes.Equal(info.Piece(i).V1Hash().Unwrap().Bytes(), h[:]) {
			t.Errorf("piece %d hash differs from the file's", i)
		}
	}
	if mi.Announce != "" || len(mi.AnnounceList) != 0 || len(mi.UrlList) != 1 || mi.UrlList[0] != e.Origin {
		t.Errorf("torrent sources: announce %q list %v url-list %v, want only the webseed", mi.Announce, mi.AnnounceList, mi.UrlList)
	}
	if e.InfoHashBytes() != mi.HashInfoBytes() || e.InfoHashBytes().HexString() != e.InfoHash {
		t.Errorf("InfoHashBytes %v, want %v", e.InfoHashBytes(), mi.HashInfoBytes())
	}
	if !e.ContentID().Equals(cid.NewCidV1(cid.Raw, mh)) {
		t.Errorf("ContentID %v", e.ContentID())
	}

	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(e); err != nil {
		t.Fatal(err)
	}
	e2, _ := publishTest(t, key, "other.webm", 40_000)
	if err := st.Put(e2); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(e); err != nil { // idempotent
		t.Fatalf("re-Put: %v", err)
	}
	list, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].CID != e.CID || list[1].CID != e2.CID {
		t.Fatalf("List = %d entries, want [%s %s]", len(list), e.Name, e2.Name)
	}
	if got, _ := list[0].Encode(); !bytes.Equal(got, mustEncode(t, e)) {
		t.Errorf("listed entry differs from the stored one")
	}
	for _, ref := range []string{e.CID, e.InfoHash, strings.ToUpper(e.InfoHash), e.Name, base58CID(t, e)} {
		got, err := st.Get(ref)
		if err != nil || got.CID != e.CID {
			t.Errorf("Get(%q) = %v, %v; want %s", ref, got, err, e.CID)
		}
	}
	tf, err := metainfo.LoadFromFile(filepath.Join(dir, "big buck.mp4.torrent"))
	if err != nil {
		t.Fatal(err)
	}
	if tf.HashInfoBytes().HexString() != e.InfoHash || st.TorrentPath(e) != filepath.Join(dir, "big buck.mp4.torrent") {
		t.Errorf(".torrent file infohash %s, want %s", tf.HashInfoBytes(), e.InfoHash)
	}
	if _, err := os.Stat(filepath.Join(dir, e.CID+".json")); err != nil {
		t.Error(err)
	}
}

// base58CID is e's CID in another multibase, which Get must accept too.
func base58CID(t *testing.T, e *Entry) string {
	t.Helper()
	s, err := e.ContentID().StringOfBase(multibase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustEncode(t testing.TB, e *Entry) []byte {
	t.Helper()
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// retorrent rebuilds e's torrent with edits applied to the info and metainfo.
func retorrent(t testing.TB, e *Entry, editInfo func(*metainfo.Info), editMI func(*metainfo.MetaInfo)) []byte {
	t.Helper()
	mi, err := e.MetaInfo()
	if err != nil {
		t.Fatal(err)
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		t.Fatal(err)
	}
	if editInfo != nil {
		editInfo(&info)
		mi.InfoBytes = bencode.MustMarshal(info)
	}
	if editMI != nil {
		editMI(mi)
	}
	return bencode.MustMarshal(mi)
}

func TestVerifyTampered(t *testing.T) {
	key := newKey(t)
	e, _ := publishTest(t, key, "movie.mp4", 100_000)
	other, _ := publishTest(t, newKey(t), "movie.mp4", 1000)
	for _, tc := range []struct {
		name   string
		tamper func(*Entry)
		want   string
	}{
		{"version", func(x *Entry) { x.Version = 2 }, "catalog entry: version: 2, want 1"},
		{"cid other content", func(x *Entry) { x.CID = other.CID }, "catalog entry: signature:"},
		{"cid garbage", func(x *Entry) { x.CID = "bafy-not-a-cid" }, "catalog entry: cid:"},
		{"cid v0", func(x *Entry) { x.CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG" }, "catalog entry: cid: want CIDv1"},
		{"infohash", func(x *Entry) { x.InfoHash = other.InfoHash }, "catalog entry: infohash:"},
		{"infohash uppercase", func(x *Entry) { x.InfoHash = strings.ToUpper(x.InfoHash) }, "catalog entry: infohash: want lowercase"},
		{"name", func(x *Entry) { x.Name = "film.mp4" }, "catalog entry: name:"},
		{"name traversal", func(x *Entry) { x.Name = "../movie.mp4" }, "catalog entry: name: contains a path separator"},
		{"name dotdot", func(x *Entry) { x.Name = ".." }, "catalog entry: name:"},
		{"size", func(x *Entry) { x.Size++ }, "catalog entry: size:"},
		{"size zero", func(x *Entry) { x.Size = 0 }, "catalog entry: size: must be > 0"},
		{"mime", func(x *Entry) { x.MIME = "video/webm" }, "catalog entry: signature:"},
		{"mime garbage", func(x *Entry) { x.MIME = "video" }, "catalog entry: mime:"},
		{"bitrate_bps", func(x *Entry) { x.BitrateBps++ }, "catalog entry: signature:"},
		{"bitrate_bps zero", func(x *Entry) { x.BitrateBps = 0 }, "catalog entry: bitrate_bps: must be > 0"},
		{"duration_s", func(x *Entry) { x.DurationS += 1 }, "catalog entry: signature:"},
		{"duration_s negative", func(x *Entry) { x.DurationS = -1 }, "catalog entry: duration_s:"},
		{"piece_length", func(x *Entry) { x.PieceLength *= 2 }, "catalog entry: piece_length:"},
		{"piece_length odd", func(x *Entry) { x.PieceLength = 100_000 }, "catalog entry: piece_length:"},
		{"origin", func(x *Entry) { x.Origin = "http://evil.example/movie.mp4" }, "catalog entry: origin:"},
		{"origin scheme", func(x *Entry) { x.Origin = "file:///etc/passwd" }, "catalog entry: origin:"},
		{"torrent url-list", func(x *Entry) {
			x.Torrent = retorrent(t, x, nil, func(mi *metainfo.MetaInfo) { mi.UrlList = append(mi.UrlList, "http://evil.example/") })
		}, "catalog entry: signature:"},
		{"torrent pieces", func(x *Entry) {
			x.Torrent = retorrent(t, x, func(i *metainfo.Info) { i.Pieces[0] ^= 1 }, nil)
		}, "catalog entry: infohash:"},
		{"torrent garbage", func(x *Entry) { x.Torrent = []byte("d4:infoi1ee") }, "catalog entry: torrent:"},
		{"torrent empty", func(x *Entry) { x.Torrent = nil }, "catalog entry: torrent: missing"},
		{"provider", func(x *Entry) { x.Provider = other.Provider }, "catalog entry: signature:"},
		{"provider garbage", func(x *Entry) { x.Provider = "12D3KooWnotapeer" }, "catalog entry: provider:"},
		{"published", func(x *Entry) { x.Published = x.Published.Add(time.Second) }, "catalog entry: signature:"},
		{"published zero", func(x *Entry) { x.Published = time.Time{} }, "catalog entry: published: missing"},
		{"signature", func(x *Entry) { x.Signature = append([]byte(nil), x.Signature...); x.Signature[3] ^= 0x40 }, "catalog entry: signature: does not verify"},
		{"signature missing", func(x *Entry) { x.Signature = nil }, "catalog entry: signature: missing"},
		{"signature of other entry", func(x *Entry) { x.Signature = other.Signature }, "catalog entry: signature:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := *e
			tc.tamper(&x)
			err := x.Verify()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The same instant in another time zone is the same signed entry.
	x := *e
	x.Published = x.Published.In(time.FixedZone("CET", 3600))
	if err := x.Verify(); err != nil {
		t.Errorf("Verify after a time zone change: %v", err)
	}
}

func TestSignRejects(t *testing.T) {
	key := newKey(t)
	e, _ := publishTest(t, key, "movie.mp4", 100_000)
	for _, tc := range []struct {
		name string
		edit func(*Entry)
		key  crypto.PrivKey
		want string
	}{
		{"torrent hashes to another infohash", func(x *Entry) {
			x.Torrent = retorrent(t, x, func(i *metainfo.Info) { i.Pieces[5] ^= 1 }, nil)
		}, key, "catalog entry: infohash: " + e.InfoHash + " does not match the torrent"},
		{"torrent of another name", func(x *Entry) {
			x.Torrent = retorrent(t, x, func(i *metainfo.Info) { i.Name = "other.mp4" }, nil)
			mi, _ := x.MetaInfo()
			x.InfoHash = mi.HashInfoBytes().HexString()
		}, key, `catalog entry: name: "movie.mp4" differs from the torrent's name "other.mp4"`},
		{"torrent without the origin", func(x *Entry) {
			x.Torrent = retorrent(t, x, nil, func(mi *metainfo.MetaInfo) { mi.UrlList = nil })
		}, key, "catalog entry: origin:"},
		{"multi-file torrent", func(x *Entry) {
			x.Torrent = retorrent(t, x, func(i *metainfo.Info) {
				i.Files = []metainfo.FileInfo{{Path: []string{"a"}, Length: i.Length}}
				i.Length = 0
			}, nil)
		}, key, "catalog entry: torrent: multi-file"},
		{"secp256k1 key", func(*Entry) {}, secpKey(t), "signing key must be Ed25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := *e
			tc.edit(&x)
			err := x.Sign(tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func secpKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestWrongKey(t *testing.T) {
	a, b := newKey(t), newKey(t)
	e, _ := publishTest(t, a, "movie.mp4", 50_000)
	// An attacker re-signs a victim's entry with their own key but keeps the victim's name.
	x := *e
	if err := x.Sign(b); err != nil {
		t.Fatal(err)
	}
	x.Provider = e.Provider
	if err := x.Verify(); err == nil || !strings.Contains(err.Error(), "catalog entry: signature: does not verify") {
		t.Fatalf("Verify = %v, want a signature error", err)
	}
}

// decodeCase edits the JSON form of a valid entry.
func jsonEdit(t *testing.T, valid []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(valid, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	e, _ := publishTest(t, newKey(t), "movie.mp4", 70_000)
	valid := mustEncode(t, e)
	got, err := Decode(valid)
	if err != nil {
		t.Fatalf("Decode(valid) = %v", err)
	}
	if !bytes.Equal(mustEncode(t, got), valid) {
		t.Errorf("decoded entry re-encodes differently")
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"too big", make([]byte, MaxEntrySize+1), "more than the"},
		{"empty", nil, "catalog entry: not JSON"},
		{"array", []byte(`[1]`), "want a JSON object"},
		{"trailing", append(append([]byte(nil), valid...), []byte(`{}`)...), "trailing data"},
		{"truncated", valid[:len(valid)/2], "not JSON"},
		{"unknown field", jsonEdit(t, valid, func(m map[string]any) { m["comment"] = "hi" }), `catalog entry: unknown field "comment"`},
		{"other case", []byte(strings.Replace(string(valid), `"cid"`, `"CID"`, 1)), `catalog entry: unknown field "CID"`},
		{"duplicate", []byte(strings.Replace(string(valid), `"version": 1,`, `"version": 1, "version": 1,`, 1)), "catalog entry: version: appears twice"},
		{"missing", jsonEdit(t, valid, func(m map[string]any) { delete(m, "mime") }), "catalog entry: mime: missing"},
		{"null", jsonEdit(t, valid, func(m map[string]any) { m["size"] = nil }), "catalog entry: size: null"},
		{"wrong type", jsonEdit(t, valid, func(m map[string]any) { m["size"] = "big" }), "catalog entry: size: want a JSON number"},
		{"fraction", jsonEdit(t, valid, func(m map[string]any) { m["bitrate_bps"] = 1.5 }), "catalog entry: bitrate_bps:"},
		{"bitrate zero", jsonEdit(t, valid, func(m map[string]any) { m["bitrate_bps"] = 0 }), "catalog entry: bitrate_bps: must be > 0"},
		{"bad base64", jsonEdit(t, valid, func(m map[string]any) { m["torrent"] = "!!" }), "catalog entry: torrent:"},
		{"bad time", jsonEdit(t, valid, func(m map[string]any) { m["published"] = "yesterday" }), "catalog entry: published:"},
		{"bad signature", jsonEdit(t, valid, func(m map[string]any) { m["signature"] = "AAAA" }), "catalog entry: signature:"},
		{"tampered name", jsonEdit(t, valid, func(m map[string]any) { m["mime"] = "video/webm" }), "catalog entry: signature: does not verify"},
		{"deep torrent", jsonEdit(t, valid, func(m map[string]any) { m["torrent"] = []byte(strings.Repeat("l", 100_000)) }), "catalog entry: torrent: not bencoded: nested deeper"},
		{"huge string torrent", jsonEdit(t, valid, func(m map[string]any) { m["torrent"] = []byte("999999999:x") }), "catalog entry: torrent: not bencoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestChoosePieceLength(t *testing.T) {
	for _, tc := range []struct {
		bitrate, want int64
	}{
		{0, 256 << 10},
		{-5, 256 << 10},
		{1_500_000, 256 << 10}, // 187.5 kB/s: 2^17.5 rounds up
		{1_000_000, 128 << 10}, // 125 kB/s
		{5_000_000, 512 << 10},
		{64_000, 32 << 10},     // clamped up
		{100_000_000, 4 << 20}, // clamped down
		{1 << 62, 4 << 20},
	} {
		if got := ChoosePieceLength(tc.bitrate); got != tc.want {
			t.Errorf("ChoosePieceLength(%d) = %d, want %d", tc.bitrate, got, tc.want)
		}
	}
}

func TestOriginURL(t *testing.T) {
	for _, tc := range []struct {
		base, name, want, err string
	}{
		{"http://o:8080", "a.mp4", "http://o:8080/a.mp4", ""},
		{"http://o:8080/", "a.mp4", "http://o:8080/a.mp4", ""},
		{"https://cdn.example/videos", "a b.mp4", "https://cdn.example/videos/a%20b.mp4", ""},
		{"https://cdn.example/videos/a.mp4", "a.mp4", "https://cdn.example/videos/a.mp4", ""},
		{"https://cdn.example/videos/a%20b.mp4", "a b.mp4", "https://cdn.example/videos/a%20b.mp4", ""},
		{"https://cdn.example/a.mp4/", "a.mp4", "https://cdn.example/a.mp4/a.mp4", ""},
		{"ftp://o/", "a.mp4", "", "want an absolute http or https URL"},
		{"/videos", "a.mp4", "", "want an absolute http or https URL"},
		{"http://o/?x=1", "a.mp4", "", "no query"},
	} {
		got, err := OriginURL(tc.base, tc.name)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("OriginURL(%q, %q) = %q, %v; want %q, %q", tc.base, tc.name, got, err, tc.want, tc.err)
		}
	}
}

func TestPublishOptions(t *testing.T) {
	key := newKey(t)
	dir := t.TempDir()
	vid, _ := writeRandomFile(t, dir, "clip.mkv", 10_000)
	odd, _ := writeRandomFile(t, dir, "clip.xyz123", 10_000)
	empty, _ := writeRandomFile(t, dir, "empty.mp4", 0)
	t.Setenv("PATH", t.TempDir()) // no ffprobe
	base := PublishOptions{Key: key, OriginBase: "http://127.0.0.1/", BitrateBps: 800_000}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		path string
		edit func(*PublishOptions)
		want string
	}{
		{"no bitrate, no ffprobe", nil, vid, func(o *PublishOptions) { o.BitrateBps = 0 }, "pass --bitrate"},
		{"unknown extension", nil, odd, nil, "pass --mime"},
		{"empty file", nil, empty, nil, "empty file"},
		{"missing file", nil, filepath.Join(dir, "nope.mp4"), nil, "no such file"},
		{"directory", nil, dir, nil, "not a regular file"},
		{"no key", nil, vid, func(o *PublishOptions) { o.Key = nil }, "no provider key"},
		{"bad origin", nil, vid, func(o *PublishOptions) { o.OriginBase = "127.0.0.1:80" }, "origin base URL"},
		{"bad piece length", nil, vid, func(o *PublishOptions) { o.PieceLength = 1000 }, "piece length 1000"},
		{"cancelled", cancelled, vid, nil, context.Canceled.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			if tc.edit != nil {
				tc.edit(&o)
			}
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			_, err := Publish(ctx, tc.path, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Publish = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	o := base
	o.MIME, o.PieceLength, o.Duration = "video/webm; codecs=vp9", 64<<10, 90*time.Second
	e, err := Publish(context.Background(), odd, o)
	if err != nil {
		t.Fatal(err)
	}
	if e.MIME != o.MIME || e.PieceLength != 64<<10 || e.DurationS != 90 || e.Origin != "http://127.0.0.1/clip.xyz123" {
		t.Errorf("entry %+v does not follow the options", e)
	}
	if e, err := Publish(context.Background(), vid, base); err != nil || e.MIME != "video/x-matroska" {
		t.Errorf("Publish .mkv = %v, %v; want video/x-matroska", e, err)
	}
	// A duration alone gives the bitrate.
	o = base
	o.BitrateBps, o.Duration = 0, 8*time.Second
	if e, err := Publish(context.Background(), vid, o); err != nil || e.BitrateBps != 10_000 || e.DurationS != 8 {
		t.Errorf("Publish with only a duration = %+v, %v; want 10000 b/s", e, err)
	}
}

// TestPublishFFprobe runs Publish with a stand-in ffprobe on PATH.
func TestPublishFFprobe(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho '{\"format\": {\"format_name\": \"mov,mp4\", \"duration\": \"12.500000\", \"bit_rate\": \"2000000\"}}'\n"
	if err := os.WriteFile(filepath.Join(bin, "ffprobe"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	p, _ := writeRandomFile(t, t.TempDir(), "probe.mp4", 20_000)
	e, err := Publish(context.Background(), p, PublishOptions{Key: newKey(t), OriginBase: "http://127.0.0.1/"})
	if err != nil {
		t.Fatal(err)
	}
	if e.BitrateBps != 2_000_000 || e.DurationS != 12.5 || e.PieceLength != 256<<10 {
		t.Errorf("bitrate %d duration %v piece %d, want 2000000, 12.5, 256 KiB from ffprobe", e.BitrateBps, e.DurationS, e.PieceLength)
	}

	for _, tc := range []struct {
		out  string
		want probed
		err  bool
	}{
		{`{"format": {"duration": "N/A"}}`, probed{}, false},
		{`{"format": {"bit_rate": "abc"}}`, probed{}, true},
		{`{"format": {"duration": "-1"}}`, probed{}, true},
		{`not json`, probed{}, true},
		{`{"format": {"bit_rate": "64000", "duration": "2"}}`, probed{64000, 2 * time.Second}, false},
	} {
		got, err := parseFFprobe([]byte(tc.out))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("parseFFprobe(%s) = %+v, %v; want %+v, error %v", tc.out, got, err, tc.want, tc.err)
		}
	}
}

func TestStoreErrors(t *testing.T) {
	key := newKey(t)
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := publishTest(t, key, "a.mp4", 30_000)
	a2, _ := publishTest(t, key, "a.mp4", 30_001)
	if err := st.Put(a); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(a2); err == nil || !strings.Contains(err.Error(), `name "a.mp4" is already published`) {
		t.Errorf("Put same name, other content = %v", err)
	}
	// Same content under a new name.
	renamed := *a
	renamed.Name = "b.mp4"
	renamed.Torrent = retorrent(t, a, func(i *metainfo.Info) { i.Name = "b.mp4" }, nil)
	mi, _ := renamed.MetaInfo()
	renamed.InfoHash = mi.HashInfoBytes().HexString()
	if err := renamed.Sign(key); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(&renamed); err == nil || !strings.Contains(err.Error(), "already published as \"a.mp4\"") {
		t.Errorf("Put same content, other name = %v", err)
	}
	bad := *a
	bad.BitrateBps = 0
	if err := st.Put(&bad); err == nil || !strings.Contains(err.Error(), "bitrate_bps") {
		t.Errorf("Put invalid = %v", err)
	}

	for _, tc := range []struct{ ref, want string }{
		{"nothing.mp4", `no title with CID, infohash or name "nothing.mp4"`},
		{"", "empty title reference"},
		{a2.CID, "no title"},
	} {
		if _, err := st.Get(tc.ref); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Get(%q) = %v, want %q", tc.ref, err, tc.want)
		}
	}
	// Two entries of one name, copied in by hand: Get by name is ambiguous, by CID fine.
	if err := os.WriteFile(filepath.Join(dir, a2.CID+".json"), mustEncode(t, a2), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get("a.mp4"); err == nil || !strings.Contains(err.Error(), `name "a.mp4" is ambiguous: 2 titles`) {
		t.Errorf("Get ambiguous = %v", err)
	}
	if got, err := st.Get(a2.CID); err != nil || got.CID != a2.CID {
		t.Errorf("Get(cid) = %v, %v", got, err)
	}
	// A misnamed file and a broken file are errors naming the file.
	misnamed := filepath.Join(dir, "wrong.json")
	if err := os.Rename(filepath.Join(dir, a2.CID+".json"), misnamed); err != nil {
		t.Fatal(err)
	}
	if _, err := st.List(); err == nil || !strings.Contains(err.Error(), misnamed) || !strings.Contains(err.Error(), "want the file named") {
		t.Errorf("List with misnamed file = %v", err)
	}
	if err := os.WriteFile(misnamed, []byte(`{"version": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.List(); err == nil || !strings.Contains(err.Error(), "catalog file "+misnamed+": catalog entry: cid: missing") {
		t.Errorf("List with broken file = %v", err)
	}
	if _, err := OpenStore(filepath.Join(dir, "missing")); err == nil {
		t.Error("OpenStore of a missing directory succeeded")
	}
	if _, err := OpenStore(misnamed); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("OpenStore of a file = %v", err)
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "provider.key")
	k, err := CreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadKey(p)
	if err != nil || !k.Equals(k2) {
		t.Fatalf("LoadKey = %v, %v; want the created key", k2, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	before, _ := os.ReadFile(p)
	if _, err := CreateKey(p); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("CreateKey over an existing file = %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("CreateKey changed an existing key file")
	}
	corrupt := filepath.Join(dir, "corrupt.key")
	_ = os.WriteFile(corrupt, []byte("garbage"), 0o600)
	secp := filepath.Join(dir, "secp.key")
	raw, _ := crypto.MarshalPrivateKey(secpKey(t))
	_ = os.WriteFile(secp, raw, 0o600)
	for _, tc := range []struct{ path, want string }{
		{corrupt, "provider key file " + corrupt + ": not a valid libp2p private key"},
		{secp, "provider key file " + secp + ": key type Secp256k1, want Ed25519"},
		{filepath.Join(dir, "none.key"), "none.key: no such file"},
	} {
		if _, err := LoadKey(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadKey(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
	var pe *os.PathError
	if _, err := LoadKey(filepath.Join(dir, "none.key")); !errors.As(err, &pe) {
		t.Errorf("LoadKey of a missing file = %v, want a *PathError", err)
	}
}
