package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod/catalog"
)

func newFleetCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "fleet", Short: "Operate on many gateways at once over the overlay (operator)"}
	cmd.AddCommand(newFleetDeployCmd())
	return cmd
}

// joinOverlay joins the overlay as a DHT client with key, through bootstrap (multiaddrs
// ending in /p2p/<id>), and waits until it can route. Serve runs until ctx ends; the caller
// closes the overlay.
func joinOverlay(ctx context.Context, key crypto.PrivKey, listen string, bootstrap []string) (*overlay.Overlay, error) {
	var boot []peer.AddrInfo
	for _, b := range bootstrap {
		ai, err := peer.AddrInfoFromString(b)
		if err != nil {
			return nil, fmt.Errorf("--bootstrap %q: want a multiaddr ending in /p2p/<peer ID>: %w", b, err)
		}
		boot = append(boot, *ai)
	}
	if len(boot) == 0 {
		return nil, fmt.Errorf("--bootstrap: at least one gateway or bootstrap address is needed to join the overlay")
	}
	la, err := ma.NewMultiaddr(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen: %w", err)
	}
	ov, err := overlay.New(overlay.Config{PrivKey: key, ListenAddrs: []ma.Multiaddr{la}, Bootstrap: boot,
		DHTMode: overlay.DHTClient, Version: version})
	if err != nil {
		return nil, err
	}
	go ov.Serve(ctx)
	if err := ov.WaitRoutable(ctx); err != nil {
		ov.Close()
		return nil, fmt.Errorf("joining the overlay through %v: %w", bootstrap, err)
	}
	return ov, nil
}

// parseSelector reads label=value pairs (isp, access_node or an extra label).
func parseSelector(in []string) (map[string]string, error) {
	sel := map[string]string{}
	for _, s := range in {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--selector %q: want label=value (isp, access_node or an extra label)", s)
		}
		sel[k] = v
	}
	return sel, nil
}

func newFleetDeployCmd() *cobra.Command {
	var (
		keyPath, listen, sliceID, provider, unitFile string
		bootstrap, selector                          []string
		start, asJSON                                bool
		timeout                                      time.Duration
		q                                            quotaFlags
	)
	cmd := &cobra.Command{
		Use:   "deploy --key OPERATOR_KEY --bootstrap ADDR --slice SLICE [--provider PEER_ID] [--unit FILE]",
		Short: "Create a slice and/or install an app on every gateway matching --selector",
		Long: `Finds the fleet's gateways in the DHT, keeps those whose labels match every --selector,
and on each one creates the slice (with --provider; an existing slice counts as done) and/or
installs the unit (--unit; updated in place when already installed). Prints one line per gateway:
ok, failed (with the gateway's reason) or unreachable. Exits 1 unless every gateway is ok.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if provider == "" && unitFile == "" {
				return fmt.Errorf("nothing to deploy: give --provider (create the slice) and/or --unit (install an app)")
			}
			var reqs []slice.Request
			if provider != "" {
				quotas, err := q.quotas()
				if err != nil {
					return err
				}
				reqs = append(reqs, slice.Request{Op: slice.OpSliceCreate, Slice: sliceID, Provider: provider, Quotas: quotas, Services: q.services})
			}
			if unitFile != "" {
				b, err := os.ReadFile(unitFile)
				if err != nil {
					return err
				}
				if _, err := slice.DecodeUnit(b); err != nil {
					return fmt.Errorf("%s: %w", unitFile, err)
				}
				reqs = append(reqs, slice.Request{Op: slice.OpAppInstall, Slice: sliceID, Unit: b, Start: start})
			}
			sel, err := parseSelector(selector)
			if err != nil {
				return err
			}
			key, err := catalog.LoadKey(keyPath)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ov, err := joinOverlay(ctx, key, listen, bootstrap)
			if err != nil {
				return err
			}
			defer ov.Close()
			targets, err := slice.FindTargets(ctx, ov, sel)
			if err != nil {
				return err
			}
			results := slice.Deploy(ctx, ov, targets, reqs, 16)
			w := cmd.OutOrStdout()
			if asJSON {
				if err := writeJSONOut(w, results); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GATEWAY\tISP\tACCESS NODE\tSTATUS\tERROR")
				for _, r := range results {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Peer, orDash(r.Labels.ISP), orDash(r.Labels.AccessNode), r.Status, r.Error)
				}
				tw.Flush()
			}
			bad := 0
			for _, r := range results {
				if r.Status != "ok" {
					bad++
				}
			}
			if len(results) == 0 {
				return fmt.Errorf("no gateway matches %v", selector)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d gateways not ok", bad, len(results))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&keyPath, "key", "", "the operator's key file (required)")
	fl.StringSliceVar(&bootstrap, "bootstrap", nil, "multiaddr of a gateway or bootstrap node, ending in /p2p/<id> (repeatable)")
	fl.StringSliceVar(&selector, "selector", nil, "only gateways with this label, label=value (repeatable)")
	fl.StringVar(&listen, "listen", "/ip4/0.0.0.0/udp/0/quic-v1", "where this client listens")
	fl.StringVar(&sliceID, "slice", "", "the slice (required)")
	fl.StringVar(&provider, "provider", "", "create the slice for this provider peer ID")
	fl.StringVar(&unitFile, "unit", "", "install this deployment unit in the slice")
	fl.BoolVar(&start, "start", false, "start the app once installed")
	fl.BoolVar(&asJSON, "json", false, "print machine-readable JSON")
	fl.DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	q.register(cmd)
	for _, n := range []string{"key", "slice", "bootstrap"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}
