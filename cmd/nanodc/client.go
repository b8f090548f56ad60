package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/node"
)

// apiClient talks to a running node's management API.
type apiClient struct {
	base, token string
	http        *http.Client
}

type clientFlags struct {
	api, tokenFile string
	json           bool
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.api, "api", "", "management API address (default: read from the data directory)")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "API token file (default: api-token in the data directory)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print machine-readable JSON")
}

func (f *clientFlags) client(cmd *cobra.Command) (*apiClient, error) {
	dataDir, _ := cmd.Flags().GetString("data")
	addr, tok, err := localAPI(dataDir, f.api, f.tokenFile)
	if err != nil {
		return nil, err
	}
	return &apiClient{base: "http://" + addr, token: tok, http: &http.Client{Timeout: 90 * time.Second}}, nil
}

// localAPI finds a running node's management API and token: the flags when given, else the
// files the node writes in its data directory.
func localAPI(dataDir, addr, tokenFile string) (string, string, error) {
	if addr == "" {
		b, err := os.ReadFile(filepath.Join(dataDir, node.APIAddrFile))
		if err != nil {
			return "", "", fmt.Errorf("is the node running? reading its API address: %w", err)
		}
		addr = strings.TrimSpace(string(b))
	}
	if tokenFile == "" {
		tokenFile = filepath.Join(dataDir, node.TokenFile)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", "", fmt.Errorf("reading API token: %w", err)
	}
	return addr, strings.TrimSpace(string(tok)), nil
}

// do sends a request and decodes the JSON answer into out; API errors come back as Go errors.
func (c *apiClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s (HTTP %d)", method, path, e.Error, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return json.Unmarshal(data, out)
}

func newNodeQueryCmds() []*cobra.Command {
	return []*cobra.Command{
		queryCmd("status", "Show the running node's identity, addresses and overlay state", cobra.NoArgs,
			func(c *apiClient, _ []string) (any, error) {
				var s node.Status
				return s, c.do("GET", "/api/v1/status", nil, &s)
			}, printStatus),
		queryCmd("peers", "List connected peers nearest first, with RTT and labels", cobra.NoArgs,
			func(c *apiClient, _ []string) (any, error) {
				var ps []node.Peer
				return ps, c.do("GET", "/api/v1/peers", nil, &ps)
			}, printPeers),
		queryCmd("dht", "Show the DHT mode and routing table", cobra.NoArgs,
			func(c *apiClient, _ []string) (any, error) {
				var m map[string]any
				return m, c.do("GET", "/api/v1/dht", nil, &m)
			}, nil),
		queryCmd("provide CID", "Announce in the DHT that this node provides CID", cobra.ExactArgs(1),
			func(c *apiClient, args []string) (any, error) {
				var m map[string]any
				return m, c.do("POST", "/api/v1/dht/provide", node.ProvideRequest{CID: args[0]}, &m)
			}, nil),
		queryCmd("providers CID", "Find providers of CID, nearest first", cobra.ExactArgs(1),
			func(c *apiClient, args []string) (any, error) {
				var ps []node.Peer
				return ps, c.do("GET", "/api/v1/dht/providers/"+args[0], nil, &ps)
			}, printPeers),
	}
}

// queryCmd builds a sub-command that fetches something and prints it as a table or JSON.
func queryCmd(use, short string, args cobra.PositionalArgs, fetch func(*apiClient, []string) (any, error), table func(io.Writer, any)) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client(cmd)
			if err != nil {
				return err
			}
			v, err := fetch(c, args)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json || table == nil {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			table(out, v)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func printStatus(w io.Writer, v any) {
	s := v.(node.Status)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "peer ID\t%s\n", s.PeerID)
	fmt.Fprintf(tw, "version\t%s\n", s.Version)
	fmt.Fprintf(tw, "uptime\t%s\n", (time.Duration(s.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(tw, "labels\tisp=%s access_node=%s\n", orDash(s.Labels.ISP), orDash(s.Labels.AccessNode))
	fmt.Fprintf(tw, "peers\t%d connected, %d in DHT routing table, %d in pubsub\n", s.ConnectedPeers, s.RoutingTableSize, s.PubSubPeers)
	for i, a := range s.Addrs {
		label := ""
		if i == 0 {
			label = "addresses"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, a)
	}
	tw.Flush()
}

func printPeers(w io.Writer, v any) {
	ps := v.([]node.Peer)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tRTT\tISP\tACCESS NODE\tLOCALITY\tADDRESS")
	for _, p := range ps {
		rtt := "-"
		if p.RTTMillis > 0 {
			rtt = fmt.Sprintf("%.2f ms", p.RTTMillis)
		}
		addr := "-"
		if len(p.Addrs) > 0 {
			addr = p.Addrs[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.PeerID, rtt, orDash(p.Labels.ISP), orDash(p.Labels.AccessNode), p.Locality, addr)
	}
	tw.Flush()
	if len(ps) == 0 {
		fmt.Fprintln(w, "(none)")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
