package catalog

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/multiformats/go-multihash"
)

// PublishOptions tell Publish what it cannot find out from the file itself.
type PublishOptions struct {
	// Key is the provider's Ed25519 key; it signs the entry. Required.
	Key crypto.PrivKey
	// OriginBase is where the origin serves the file. See OriginURL for the rule. Required.
	OriginBase string
	// PieceLength of the torrent; 0 chooses one from the bitrate (see ChoosePieceLength).
	PieceLength int64
	// BitrateBps, Duration and MIME override what ffprobe or the file extension say. Missing
	// bitrate and duration are probed with ffprobe when it is on PATH; either one gives the
	// other with the file size; with neither known Publish fails asking for a bitrate.
	BitrateBps int64
	Duration   time.Duration
	MIME       string
	// Progress, if set, is called as hashing advances, with bytes hashed and the file size.
	Progress func(done, total int64)
	// Now stamps the entry's published time; time.Now if nil.
	Now func() time.Time
}

// Piece length bounds Publish chooses within: short pieces let playback start after little
// data and let a viewer fetch the next piece from a peer quickly; very short pieces bloat the
// torrent and the per-piece bookkeeping.
const (
	minChosenPiece     = 32 << 10
	maxChosenPiece     = 4 << 20
	defaultPieceLength = 256 << 10
)

// ChoosePieceLength returns the power of two nearest (in ratio) to one second of video at
// bitrateBps, clamped to [32 KiB, 4 MiB]; 256 KiB when the bitrate is unknown (≤ 0).
func ChoosePieceLength(bitrateBps int64) int64 {
	if bitrateBps <= 0 {
		return defaultPieceLength
	}
	exp := math.Round(math.Log2(float64(bitrateBps) / 8))
	n := int64(1) << int(max(0, min(exp, 62)))
	return min(max(n, minChosenPiece), maxChosenPiece)
}

// MIMEByExtension returns the media type of a video file name from its extension, or "" when
// the extension is not one this package knows. The common video containers come from a fixed
// table so the answer does not depend on the machine's /etc/mime.types.
func MIMEByExtension(name string) string {
	ext := strings.ToLower(filepath.Ext(name))
	switch ext {
	case ".mp4", ".m4v":
		return "video/mp4"
	case ".webm":
		return "video/webm"
	case ".mkv":
		return "video/x-matroska"
	case ".ts", ".m2ts":
		return "video/mp2t"
	case ".mov":
		return "video/quicktime"
	case ".ogv":
		return "video/ogg"
	case "":
		return ""
	}
	return mime.TypeByExtension(ext)
}

// OriginURL returns the URL of file name at an origin. If base's path already ends in name
// (unescaped), base is the file's URL as it is; otherwise name, path-escaped, is appended as a
// new path segment ("http://o/videos" and "http://o/videos/" both give "http://o/videos/<name>").
// base must be an absolute http(s) URL without query or fragment.
func OriginURL(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("origin base URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("origin base URL %q: want an absolute http or https URL", base)
	}
	if u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(base, "?#") {
		return "", fmt.Errorf("origin base URL %q: no query or fragment allowed", base)
	}
	if path.Base(u.Path) == name && !strings.HasSuffix(u.Path, "/") {
		return base, nil
	}
	return strings.TrimSuffix(base, "/") + "/" + url.PathEscape(name), nil
}

// Publish hashes the video file at path once (sha2-256 for the CID and the v1 piece hashes in
// the same pass), builds a single-file v1 torrent whose only source is the origin webseed
// (BEP 19 url-list, no trackers) and returns the signed entry. It does not store the entry.
func Publish(ctx context.Context, filePath string, opts PublishOptions) (*Entry, error) {
	if opts.Key == nil {
		return nil, errors.New("publish: no provider key")
	}
	name := filepath.Base(filePath)
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("publish %s: file name: %w", filePath, err)
	}
	origin, err := OriginURL(opts.OriginBase, name)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", filePath, err)
	}
	f, err := os.Open(filePath)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if !before.Mode().IsRegular() {
		return nil, fmt.Errorf("publish %s: not a regular file", filePath)
	}
	size := before.Size()
	if size == 0 {
		return nil, fmt.Errorf("publish %s: empty file", filePath)
	}

	mimeType := opts.MIME
	if mimeType == "" {
		if mimeType = MIMEByExtension(name); mimeType == "" {
			return nil, fmt.Errorf("publish %s: cannot tell the MIME type from the extension; pass --mime", filePath)
		}
	}
	bitrate, duration := opts.BitrateBps, opts.Duration
	if bitrate < 0 || duration < 0 {
		return nil, fmt.Errorf("publish %s: negative bitrate or duration", filePath)
	}
	var p probed
	var perr error
	if bitrate == 0 || duration == 0 {
		p, perr = probe(ctx, filePath)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if perr == nil && bitrate == 0 {
			bitrate = p.bitrate
		}
		if perr == nil && duration == 0 {
			duration = p.duration
		}
	}
	if bitrate == 0 && duration > 0 {
		bitrate = int64(math.Round(float64(size) * 8 / duration.Seconds()))
	}
	if bitrate <= 0 {
		switch {
		case errors.Is(perr, exec.ErrNotFound):
			return nil, fmt.Errorf("publish %s: bitrate unknown and ffprobe is not installed to find it; pass --bitrate (or --duration)", filePath)
		case perr != nil:
			return nil, fmt.Errorf("publish %s: bitrate unknown (%v); pass --bitrate (or --duration)", filePath, perr)
		default:
			return nil, fmt.Errorf("publish %s: ffprobe reports no bitrate or duration; pass --bitrate (or --duration)", filePath)
		}
	}
	durationS := duration.Seconds()
	if duration == 0 {
		durationS = float64(size) * 8 / float64(bitrate)
	}
	pieceLength := opts.PieceLength
	if pieceLength == 0 {
		pieceLength = ChoosePieceLength(bitrate)
	}
	if err := validatePieceLength(pieceLength); err != nil {
		return nil, fmt.Errorf("publish %s: piece length %w", filePath, err)
	}

	sum, pieces, err := hashFile(ctx, f, size, pieceLength, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", filePath, err)
	}
	after, err := os.Stat(filePath)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if after.Size() != size || !after.ModTime().Equal(before.ModTime()) {
		return nil, fmt.Errorf("publish %s: the file changed while it was being hashed", filePath)
	}
	mh, err := multihash.Encode(sum, multihash.SHA2_256)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", filePath, err)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	published := now().UTC().Truncate(time.Second)

	infoBytes, err := bencode.Marshal(metainfo.Info{
		Name:        name,
		Length:      size,
		PieceLength: pieceLength,
		Pieces:      pieces,
	})
	if err != nil {
		return nil, fmt.Errorf("publish %s: encoding info: %w", filePath, err)
	}
	mi := metainfo.MetaInfo{
		InfoBytes:    infoBytes,
		CreationDate: published.Unix(),
		CreatedBy:    "nanodc",
		UrlList:      metainfo.UrlList{origin},
	}
	torrent, err := bencode.Marshal(mi)
	if err != nil {
		return nil, fmt.Errorf("publish %s: encoding torrent: %w", filePath, err)
	}
	e := &Entry{
		Version:     Version,
		CID:         cid.NewCidV1(cid.Raw, mh).String(),
		InfoHash:    mi.HashInfoBytes().HexString(),
		Name:        name,
		Size:        size,
		MIME:        mimeType,
		BitrateBps:  bitrate,
		DurationS:   durationS,
		PieceLength: pieceLength,
		Origin:      origin,
		Torrent:     torrent,
		Published:   published,
	}
	if err := e.Sign(opts.Key); err != nil {
		return nil, fmt.Errorf("publish %s: %w", filePath, err)
	}
	return e, nil
}

// hashFile reads r once, returning the sha2-256 of everything and the concatenated SHA-1 of each
// piece (BitTorrent v1 piece hashes).
func hashFile(ctx context.Context, r io.Reader, size, pieceLength int64, progress func(done, total int64)) ([]byte, []byte, error) {
	whole := sha256.New()
	buf := make([]byte, pieceLength)
	pieces := make([]byte, 0, (size+pieceLength-1)/pieceLength*sha1.Size)
	var done int64
	if progress != nil {
		progress(0, size)
	}
	for done < size {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		n, err := io.ReadFull(r, buf[:min(pieceLength, size-done)])
		if err != nil {
			return nil, nil, fmt.Errorf("reading at offset %d (did the file shrink?): %w", done, err)
		}
		whole.Write(buf[:n])
		h := sha1.Sum(buf[:n])
		pieces = append(pieces, h[:]...)
		done += int64(n)
		if progress != nil {
			progress(done, size)
		}
	}
	// A file that grew while being hashed would publish a torrent of the wrong length.
	if n, _ := r.Read(buf[:1]); n > 0 {
		return nil, nil, errors.New("the file grew while it was being hashed")
	}
	return whole.Sum(nil), pieces, nil
}

type probed struct {
	bitrate  int64
	duration time.Duration
}

// probe asks ffprobe for the container's bitrate and duration.
func probe(ctx context.Context, filePath string) (probed, error) {
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		return probed{}, fmt.Errorf("ffprobe: %w", err)
	}
	abs, err := filepath.Abs(filePath)
	if err != nil {
		return probed{}, err
	}
	// "file:" keeps ffprobe from reading a name as an option or another protocol ("a:b.mp4").
	cmd := exec.CommandContext(ctx, bin, "-v", "error", "-print_format", "json", "-show_format", "file:"+abs)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return probed{}, fmt.Errorf("ffprobe %s: %s", filePath, strings.TrimSpace(string(ee.Stderr)))
		}
		return probed{}, fmt.Errorf("ffprobe %s: %w", filePath, err)
	}
	return parseFFprobe(out)
}

// parseFFprobe reads `ffprobe -print_format json -show_format` output. ffprobe prints numbers as
// strings and omits what it does not know.
func parseFFprobe(out []byte) (probed, error) {
	var doc struct {
		Format struct {
			BitRate  string `json:"bit_rate"`
			Duration string `json:"duration"`
		} `json:"format"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return probed{}, fmt.Errorf("ffprobe output: %w", err)
	}
	var p probed
	if s := doc.Format.BitRate; s != "" && s != "N/A" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return probed{}, fmt.Errorf("ffprobe output: bit_rate %q", s)
		}
		p.bitrate = v
	}
	if s := doc.Format.Duration; s != "" && s != "N/A" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 || math.IsInf(v, 0) || v > float64(math.MaxInt64/int64(time.Second)) {
			return probed{}, fmt.Errorf("ffprobe output: duration %q", s)
		}
		p.duration = time.Duration(v * float64(time.Second))
	}
	return p, nil
}
