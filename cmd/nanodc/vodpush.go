package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/vod"
	"github.com/nanodc/nanodc/vod/catalog"
)

func newVodPushCmd() *cobra.Command {
	var (
		catalogDir, keyPath string
		sliceID             string
		bootstrap, selector []string
		listen              string
		replicas            int
		prefix, timeout     time.Duration
		asJSON              bool
	)
	cmd := &cobra.Command{
		Use:   "push TITLE... --replicas N [--prefix DURATION] --catalog DIR --key PROVIDER_KEY --bootstrap ADDR...",
		Short: "Pre-place titles on N gateways each, spread across access nodes, ahead of demand",
		Long: `Join the overlay as the provider (its key is the identity gateways check), find the
gateways running the VoD app through the DHT, choose N of them spread across access nodes
(and ISPs) among those matching --selector, and push the title to them: each fills it
completely (from peers where they have it, else from the origin) and pins it. With several
titles, all are pushed at once, each to gateways that hold none of the others while enough
match: a home's uplink seeds about one stream, so titles that share a gateway share it.

With --prefix, every other matching gateway then gets the title's first DURATION of
playback (whole pieces), from its nearest replicas and the nearest gateways whose prefix
is already in place: a viewer there starts from the
gateway's own disk, and its gateway has the prefix's seconds to find peers for the rest
(prefix caching, for a premiere expected to draw a crowd). A gateway keeps a prefix through
cache eviction. --replicas 0 with --prefix places prefixes only (from whichever gateways
hold the title).

Prints one line per title and gateway: ok, failed (with the gateway's reason) or
unreachable. TITLE is a CID, an infohash or a name from the catalog. Exit status 1 when any
push did not succeed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if replicas < 0 || (replicas == 0 && prefix <= 0) {
				return errors.New("--replicas: must be at least 1 (or 0 with --prefix)")
			}
			if prefix < 0 {
				return fmt.Errorf("--prefix: %v is negative", prefix)
			}
			sel, err := parseSelector(selector)
			if err != nil {
				return err
			}
			store, err := catalog.OpenStore(catalogDir)
			if err != nil {
				return err
			}
			key, err := catalog.LoadKey(keyPath)
			if err != nil {
				return err
			}
			id, _ := peer.IDFromPrivateKey(key)
			var entries []*catalog.Entry
			seen := map[string]bool{}
			for _, ref := range args {
				entry, err := store.Get(ref)
				if err != nil {
					return err
				}
				if id.String() != entry.Provider {
					return fmt.Errorf("--key is provider %s but %q was published by %s: gateways only accept a provider's own titles", id, entry.Name, entry.Provider)
				}
				if seen[entry.CID] {
					return fmt.Errorf("%q is named twice", entry.Name)
				}
				seen[entry.CID] = true
				entries = append(entries, entry)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ov, err := joinOverlay(ctx, key, listen, bootstrap)
			if err != nil {
				return err
			}
			defer ov.Close()
			plan := vod.PushPlan{Namespace: sliceID, Replicas: replicas, Prefix: prefix, Selector: sel}
			reps, err := vod.PushFleet(ctx, ov, entries, plan)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(reps); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TITLE\tGATEWAY\tISP\tACCESS NODE\tPLACED\tSTATUS\tBYTES\tFROM ORIGIN\tSECONDS\tERROR")
				for _, r := range reps {
					placed := "title"
					if r.PrefixBytes > 0 {
						placed = fmt.Sprintf("prefix %d B", r.PrefixBytes)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%.1f\t%s\n", r.Title, r.Peer, orDash(r.Labels.ISP), orDash(r.Labels.AccessNode), placed, r.Status, r.Bytes, r.OriginBytes, r.Seconds, r.Error)
				}
				tw.Flush()
			}
			failed, whole := 0, 0
			for _, r := range reps {
				if r.Status != "ok" {
					failed++
				} else if r.PrefixBytes == 0 {
					whole++
				}
			}
			if failed > 0 || whole < replicas*len(entries) {
				return fmt.Errorf("%d of %d pushes succeeded; %d whole copies placed (%d wanted)", len(reps)-failed, len(reps), whole, replicas*len(entries))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&catalogDir, "catalog", "", "catalog directory written by `vod publish`")
	fl.StringVar(&keyPath, "key", "", "the provider key that published the title")
	fl.StringSliceVar(&bootstrap, "bootstrap", nil, "multiaddr of a gateway or bootstrap node, ending in /p2p/<id> (repeatable)")
	fl.StringVar(&sliceID, "slice", "", "push to the VoD apps of this provider slice (default: the gateways' own VoD app)")
	fl.StringSliceVar(&selector, "selector", nil, "only gateways with this label, label=value (repeatable)")
	fl.IntVar(&replicas, "replicas", 3, "how many gateways get each title")
	fl.DurationVar(&prefix, "prefix", 0, "also place this much of each title's start (playback time) on every other matching gateway")
	fl.StringVar(&listen, "listen", "/ip4/0.0.0.0/udp/0/quic-v1", "where the provider's temporary node listens")
	fl.DurationVar(&timeout, "timeout", 20*time.Minute, "give up after this long")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("catalog")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func newVodAddCmd() *cobra.Command {
	var cf clientFlags
	var catalogDir, dataDir, sliceID, appName string
	cmd := &cobra.Command{
		Use:   "add TITLE... --catalog DIR --data NODE_DATA [--slice SLICE]",
		Short: "Add titles of a catalog to a running gateway, so that its home players can stream them",
		Long: `Send signed catalog entries to a running gateway's management API. The gateway checks
each signature (and that the provider is one it trusts, vod.providers) before accepting it;
the title is then streamable at /vod/{title} and fetched on first play. TITLE is a CID, an
infohash or a name. With --slice, the titles go to the VoD app of that provider's slice
(streamable at /slices/SLICE/apps/APP/vod/{title}); it accepts only its provider's titles.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := catalog.OpenStore(catalogDir)
			if err != nil {
				return err
			}
			c, err := cf.client(cmd)
			if err != nil {
				return err
			}
			path := "/api/v1/vod/titles"
			if sliceID != "" {
				if err := slice.ValidID("slice", sliceID); err != nil {
					return err
				}
				if err := slice.ValidID("app", appName); err != nil {
					return err
				}
				path = "/slices/" + sliceID + "/apps/" + appName + path
			}
			for _, ref := range args {
				e, err := store.Get(ref)
				if err != nil {
					return err
				}
				raw, err := e.Encode()
				if err != nil {
					return err
				}
				var out map[string]string
				if err := c.do("POST", path, json.RawMessage(raw), &out); err != nil {
					return fmt.Errorf("adding %q: %w", e.Name, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added %s (%s)\n", out["name"], out["cid"])
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&catalogDir, "catalog", "", "catalog directory written by `vod publish`")
	cmd.Flags().StringVar(&dataDir, "data", "", "the running node's data directory")
	cmd.Flags().StringVar(&sliceID, "slice", "", "add to the VoD app of this provider slice (default: the gateway's own VoD app)")
	cmd.Flags().StringVar(&appName, "app", "vod", "the VoD app's name in the slice (with --slice)")
	_ = cmd.MarkFlagRequired("catalog")
	return cmd
}
