package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/vod/catalog"
	"github.com/nanodc/nanodc/vod/origin"
)

func newVodCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vod",
		Short: "Peer-assisted video on demand: provider key, signed catalog, origin server",
		Long: `Tools of the video provider: make a provider key, publish video files into a signed
catalog (one entry and one .torrent per title, the origin as the torrent's webseed), run the
origin server that serves the files, and list the catalog.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newVodKeygenCmd(), newVodPublishCmd(), newVodOriginCmd(), newVodCatalogCmd(), newVodPushCmd(), newVodAddCmd())
	return cmd
}

func newVodKeygenCmd() *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create a provider key (Ed25519) and print its peer ID",
		Long: `Create a provider key: a libp2p-marshalled Ed25519 private key, the same format as a
node's identity.key. An existing file is never overwritten. The printed peer ID is what gateways
list in vod.providers to accept this provider's titles.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			priv, err := catalog.CreateKey(out)
			if err != nil {
				return err
			}
			id, err := peer.IDFromPrivateKey(priv)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSONOut(w, map[string]string{"peer_id": id.String(), "key": out})
			}
			fmt.Fprintf(w, "provider peer ID %s\nkey written to %s\n", id, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "key file to create (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print machine-readable JSON")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// titleJSON is what publish and catalog print per title with --json.
type titleJSON struct {
	Name        string    `json:"name"`
	CID         string    `json:"cid"`
	InfoHash    string    `json:"infohash"`
	Size        int64     `json:"size"`
	MIME        string    `json:"mime"`
	BitrateBps  int64     `json:"bitrate_bps"`
	DurationS   float64   `json:"duration_s"`
	PieceLength int64     `json:"piece_length"`
	Pieces      int64     `json:"pieces"`
	Origin      string    `json:"origin"`
	Provider    string    `json:"provider"`
	Published   time.Time `json:"published"`
	Entry       string    `json:"entry"`   // path of the signed entry
	Torrent     string    `json:"torrent"` // path of the .torrent file
}

func toTitleJSON(st *catalog.Store, e *catalog.Entry) titleJSON {
	return titleJSON{
		Name: e.Name, CID: e.CID, InfoHash: e.InfoHash, Size: e.Size, MIME: e.MIME,
		BitrateBps: e.BitrateBps, DurationS: e.DurationS, PieceLength: e.PieceLength,
		Pieces: e.NumPieces(), Origin: e.Origin, Provider: e.Provider, Published: e.Published,
		Entry: st.EntryPath(e), Torrent: st.TorrentPath(e),
	}
}

type publishFlags struct {
	key, origin, catalogDir string
	bitrate, duration, mime string
	pieceLength             string
	asJSON, noProgress      bool
}

func newVodPublishCmd() *cobra.Command {
	var f publishFlags
	cmd := &cobra.Command{
		Use:   "publish FILE... --key KEY --origin URL --catalog DIR",
		Short: "Hash video files and add signed entries and .torrent files to a catalog",
		Long: `Publish video files: hash each once (its CID and the torrent's piece hashes), build a
single-file torrent whose only source is the origin (BEP 19 webseed, no trackers), sign the
entry with the provider key and write DIR/<cid>.json and DIR/<name>.torrent.

The origin URL of a file is --origin plus "/" and the file name, unless --origin already ends
with the file name. Copy the files to the origin's directory yourself.

Bitrate, duration and MIME type come from ffprobe when it is installed and from the file
extension otherwise; without ffprobe --bitrate is required. The flags apply to every FILE.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runPublish(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.key, "key", "", "provider key file (see vod keygen) (required)")
	fl.StringVar(&f.origin, "origin", "", "origin base URL, e.g. http://cdn.example:8080/videos (required)")
	fl.StringVar(&f.catalogDir, "catalog", "", "catalog directory, created if missing (required)")
	fl.StringVar(&f.bitrate, "bitrate", "", "average bitrate in bits/s: 1500000, 1500k, 1.5M")
	fl.StringVar(&f.duration, "duration", "", "play time: 2m, 1h30m5s or seconds")
	fl.StringVar(&f.mime, "mime", "", "media type, e.g. video/mp4 (default: from ffprobe or the extension)")
	fl.StringVar(&f.pieceLength, "piece-length", "", "torrent piece length, a power of two: 256KiB, 1MiB (default: about one second of video)")
	fl.BoolVar(&f.asJSON, "json", false, "print machine-readable JSON")
	fl.BoolVar(&f.noProgress, "no-progress", false, "do not show hashing progress")
	for _, n := range []string{"key", "origin", "catalog"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func runPublish(cmd *cobra.Command, f publishFlags, files []string) error {
	opts := catalog.PublishOptions{OriginBase: f.origin, MIME: f.mime}
	var err error
	if f.bitrate != "" {
		if opts.BitrateBps, err = parseBitrate(f.bitrate); err != nil {
			return fmt.Errorf("--bitrate: %w", err)
		}
	}
	if f.duration != "" {
		if opts.Duration, err = parseDuration(f.duration); err != nil {
			return fmt.Errorf("--duration: %w", err)
		}
	}
	if f.pieceLength != "" {
		if opts.PieceLength, err = parseSize(f.pieceLength); err != nil {
			return fmt.Errorf("--piece-length: %w", err)
		}
	}
	if _, err := catalog.OriginURL(f.origin, "x"); err != nil {
		return fmt.Errorf("--origin: %w", err)
	}
	if opts.Key, err = catalog.LoadKey(f.key); err != nil {
		return err
	}
	if err := os.MkdirAll(f.catalogDir, 0o755); err != nil {
		return fmt.Errorf("catalog directory: %w", err)
	}
	st, err := catalog.OpenStore(f.catalogDir)
	if err != nil {
		return err
	}
	stderr := cmd.ErrOrStderr()
	showProgress := !f.noProgress && !f.asJSON && stderrIsTerminal(stderr)
	var titles []titleJSON
	for _, file := range files {
		o := opts
		if showProgress {
			o.Progress = progressLine(stderr, file)
		}
		e, err := catalog.Publish(cmd.Context(), file, o)
		if showProgress {
			fmt.Fprintln(stderr)
		}
		if err != nil {
			return err
		}
		if err := st.Put(e); err != nil {
			return fmt.Errorf("publish %s: %w", file, err)
		}
		titles = append(titles, toTitleJSON(st, e))
	}
	w := cmd.OutOrStdout()
	if f.asJSON {
		return writeJSONOut(w, titles)
	}
	printTitles(w, titles, true)
	return nil
}

func stderrIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && os.Getenv("CI") == "" && isTerminal(f)
}

// progressLine redraws one status line on a terminal, at most ten times a second.
func progressLine(w io.Writer, file string) func(done, total int64) {
	var last time.Time
	return func(done, total int64) {
		if done != total && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		fmt.Fprintf(w, "\rhashing %s %5.1f%% (%s of %s)", file, pct, humanBytes(done), humanBytes(total))
	}
}

func printTitles(w io.Writer, titles []titleJSON, withTorrent bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "NAME\tSIZE\tPIECES\tBITRATE\tDURATION\tCID\tINFOHASH"
	if withTorrent {
		head += "\tTORRENT"
	} else {
		head += "\tORIGIN"
	}
	fmt.Fprintln(tw, head)
	for _, t := range titles {
		last := t.Origin
		if withTorrent {
			last = t.Torrent
		}
		fmt.Fprintf(tw, "%s\t%s\t%d × %s\t%s\t%s\t%s\t%s\t%s\n", t.Name, humanBytes(t.Size), t.Pieces,
			humanBytes(t.PieceLength), humanBitrate(t.BitrateBps),
			(time.Duration(t.DurationS * float64(time.Second))).Round(time.Second), t.CID, t.InfoHash, last)
	}
	tw.Flush()
}

func newVodOriginCmd() *cobra.Command {
	var dir, listen, logLevel string
	cmd := &cobra.Command{
		Use:   "origin --dir DIR [--listen ADDR]",
		Short: "Serve video files over HTTP as the provider's origin (the torrents' webseed)",
		Long: `Serve the regular files directly in DIR over HTTP/1.1 with Range support, as the origin
and BEP 19 webseed of the catalog's titles. Also serves GET /api/v1/stats (bytes and requests
per client IP) and /metrics. Runs until SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %q: want debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			s, err := origin.New(origin.Options{Dir: dir, Logger: log})
			if err != nil {
				return err
			}
			defer s.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			return s.Serve(cmd.Context(), ln)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the files to serve (required)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "TCP address to listen on (port 0: any free port; the log says which)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug (one line per request), info, warn or error")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func newVodCatalogCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "catalog --catalog DIR",
		Short: "List the titles of a catalog (every entry verified)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := catalog.OpenStore(dir)
			if err != nil {
				return err
			}
			entries, err := st.List()
			if err != nil {
				return err
			}
			titles := make([]titleJSON, 0, len(entries))
			for _, e := range entries {
				titles = append(titles, toTitleJSON(st, e))
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSONOut(w, titles)
			}
			if len(titles) == 0 {
				fmt.Fprintf(w, "catalog %s is empty\n", dir)
				return nil
			}
			printTitles(w, titles, false)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "catalog", "", "catalog directory (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print machine-readable JSON")
	_ = cmd.MarkFlagRequired("catalog")
	return cmd
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseBitrate reads bits per second: a number with an optional decimal k, M or G suffix and an
// optional "bps" or "b/s" ("1.5M", "1500k", "1500000", "2Mbps").
func parseBitrate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	for _, suf := range []string{"bps", "b/s"} {
		t = strings.TrimSuffix(t, suf)
	}
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult, t = 1e3, t[:n-1]
		case 'M':
			mult, t = 1e6, t[:n-1]
		case 'G':
			mult, t = 1e9, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || v*mult > 1e15 {
		return 0, fmt.Errorf("%q: want a positive bitrate such as 1500000, 1500k or 1.5M", s)
	}
	return int64(math.Round(v * mult)), nil
}

// parseDuration accepts Go durations ("2m", "1h30m") and plain seconds ("120", "90.5").
func parseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 && v < 1e9 {
		return time.Duration(v * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("%q: want a positive duration such as 2m, 1h30m5s or 125.5", s)
}

// parseSize reads a byte count with an optional binary suffix: 262144, 256KiB, 256K, 1MiB, 1M.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf  string
		mult int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"k", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSuffix(t, u.suf), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a size such as 262144, 256KiB or 1MiB", s)
	}
	return v * mult, nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanBitrate(bps int64) string {
	switch {
	case bps >= 1e6:
		return strconv.FormatFloat(float64(bps)/1e6, 'f', -1, 64) + " Mb/s"
	case bps >= 1e3:
		return strconv.FormatFloat(float64(bps)/1e3, 'f', -1, 64) + " kb/s"
	}
	return strconv.FormatInt(bps, 10) + " b/s"
}
