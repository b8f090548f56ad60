package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/vod/catalog"
)

// mgmtFlags choose where a management request goes: the local node's API (token from its
// data directory), or a gateway over the overlay (--remote), authenticated by --key.
type mgmtFlags struct {
	dataDir, api, tokenFile string
	remote, key             string
	json                    bool
	timeout                 time.Duration
}

func (f *mgmtFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data", defaultDataDir(), "the local node's data directory (API address and token)")
	fl.StringVar(&f.api, "api", "", "management API address (default: read from the data directory)")
	fl.StringVar(&f.tokenFile, "token-file", "", "API token file (default: api-token in the data directory)")
	fl.StringVar(&f.remote, "remote", "", "manage a gateway over the overlay: its multiaddr ending in /p2p/<id>")
	fl.StringVar(&f.key, "key", "", "with --remote: the operator's or provider's key file (see `nanodc vod keygen`)")
	fl.BoolVar(&f.json, "json", false, "print machine-readable JSON")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "give up after this long")
}

// call sends one request and returns the result bytes (an error for any status but 200).
func (f *mgmtFlags) call(ctx context.Context, req slice.Request) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.remote != "" {
		return f.callRemote(ctx, req)
	}
	addr, tok, err := localAPI(f.dataDir, f.api, f.tokenFile)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/api/v1/mgmt", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+tok)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	var r slice.Response
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d: %s", req.Op, resp.StatusCode, bytes.TrimSpace(data))
	}
	if r.Status != http.StatusOK {
		return r.Result, fmt.Errorf("%s: %s (%d)", req.Op, r.Error, r.Status)
	}
	return r.Result, nil
}

// watch sends a watch request and hands each answer to fn until ctx ends or fn fails.
func (f *mgmtFlags) watch(ctx context.Context, req slice.Request, fn func(slice.Response) error) error {
	if f.remote != "" {
		ai, h, err := f.dialRemote(ctx)
		if err != nil {
			return err
		}
		defer h.Close()
		return slice.Watch(ctx, h, ai.ID, req, fn)
	}
	addr, tok, err := localAPI(f.dataDir, f.api, f.tokenFile)
	if err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/api/v1/mgmt", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var r slice.Response
		if err := dec.Decode(&r); err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("%s: HTTP %d: %w", req.Op, resp.StatusCode, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
}

// dialRemote connects a client host with --key to --remote.
func (f *mgmtFlags) dialRemote(ctx context.Context) (*peer.AddrInfo, host.Host, error) {
	if f.key == "" {
		return nil, nil, fmt.Errorf("--remote needs --key: the operator's or provider's key proves who is asking")
	}
	ai, err := peer.AddrInfoFromString(f.remote)
	if err != nil {
		return nil, nil, fmt.Errorf("--remote %q: %w", f.remote, err)
	}
	h, err := clientHost(f.key)
	if err != nil {
		return nil, nil, err
	}
	if err := h.Connect(ctx, *ai); err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("connecting to %s: %w", f.remote, err)
	}
	return ai, h, nil
}

func (f *mgmtFlags) callRemote(ctx context.Context, req slice.Request) (json.RawMessage, error) {
	ai, h, err := f.dialRemote(ctx)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	r, err := slice.Call(ctx, h, ai.ID, req)
	if err != nil {
		return r.Result, fmt.Errorf("%s: %w", req.Op, err)
	}
	return r.Result, nil
}

// clientHost is a bare libp2p host with the caller's key: enough to open management streams.
func clientHost(keyPath string) (host.Host, error) {
	key, err := catalog.LoadKey(keyPath)
	if err != nil {
		return nil, err
	}
	return libp2p.New(libp2p.Identity(key), libp2p.NoListenAddrs, libp2p.DisableRelay())
}

// mgmtCmd builds a sub-command that sends one request built from its args and prints the
// result with table (or as JSON).
func mgmtCmd(use, short string, args cobra.PositionalArgs, build func([]string) (slice.Request, error),
	table func(io.Writer, json.RawMessage) error, extra func(*cobra.Command)) *cobra.Command {
	return mgmtCmdCalling(use, short, args, func(_ context.Context, _ caller, a []string) (slice.Request, error) { return build(a) }, table, extra)
}

// caller sends one management request to the gateway the command's flags name.
type caller func(context.Context, slice.Request) (json.RawMessage, error)

// mgmtCmdCalling is mgmtCmd for commands that must ask the gateway something first.
func mgmtCmdCalling(use, short string, args cobra.PositionalArgs, build func(context.Context, caller, []string) (slice.Request, error),
	table func(io.Writer, json.RawMessage) error, extra func(*cobra.Command)) *cobra.Command {
	var f mgmtFlags
	cmd := &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := build(cmd.Context(), f.call, args)
			if err != nil {
				return err
			}
			res, err := f.call(cmd.Context(), req)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json || table == nil {
				if len(res) == 0 {
					res = json.RawMessage(`{"ok":true}`)
				}
				var v any
				if err := json.Unmarshal(res, &v); err != nil {
					return err
				}
				return writeJSONOut(out, v)
			}
			return table(out, res)
		},
	}
	f.register(cmd)
	if extra != nil {
		extra(cmd)
	}
	return cmd
}

// quotaFlags are the slice quota flags of create and set.
type quotaFlags struct {
	memory, storage       string
	cpu                   int64
	upload, download      string
	maxApps, streams      int
	services              []string
	servicesSet, quotaSet func() bool
	changed               func(flag string) bool
}

func (q *quotaFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&q.memory, "memory", "", "memory quota for the slice's apps, e.g. 32MiB")
	fl.StringVar(&q.storage, "storage", "", "storage quota, e.g. 1GiB")
	fl.Int64Var(&q.cpu, "cpu", 0, "CPU share in thousandths of a core (250 = a quarter core)")
	fl.StringVar(&q.upload, "upload", "", "upload bandwidth share in bits/s, e.g. 2M")
	fl.StringVar(&q.download, "download", "", "download bandwidth share in bits/s, e.g. 10M")
	fl.IntVar(&q.maxApps, "max-apps", 0, "most apps the slice may install")
	fl.IntVar(&q.streams, "streams", 0, "most overlay streams open at once in the slice's namespace")
	fl.StringSliceVar(&q.services, "services", nil, "shared services granted: "+strings.Join(slice.CoreServices, ","))
	q.servicesSet = func() bool { return fl.Changed("services") }
	q.changed = fl.Changed
	q.quotaSet = func() bool {
		for _, n := range []string{"memory", "storage", "cpu", "upload", "download", "max-apps", "streams"} {
			if fl.Changed(n) {
				return true
			}
		}
		return false
	}
}

func (q *quotaFlags) quotas() (*slice.Quotas, error) { return q.quotasOver(slice.Quotas{}) }

// quotasOver is base with the quota flags that were given applied.
func (q *quotaFlags) quotasOver(base slice.Quotas) (*slice.Quotas, error) {
	out := &base
	if q.changed("cpu") {
		out.CPUMillis = q.cpu
	}
	if q.changed("max-apps") {
		out.MaxApps = q.maxApps
	}
	if q.changed("streams") {
		out.Streams = q.streams
	}
	for _, x := range []struct {
		name, s string
		dst     *int64
		bits    bool
	}{{"memory", q.memory, &out.MemoryBytes, false}, {"storage", q.storage, &out.StorageBytes, false},
		{"upload", q.upload, &out.UploadBps, true}, {"download", q.download, &out.DownloadBps, true}} {
		if !q.changed(x.name) {
			continue
		}
		var v uint64
		var err error
		if x.bits {
			var f float64
			f, _, err = humanize.ParseSI(strings.TrimSuffix(x.s, "bps"))
			v = uint64(f)
		} else {
			v, err = humanize.ParseBytes(x.s)
		}
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", x.name, x.s, err)
		}
		*x.dst = int64(v)
	}
	return out, nil
}

func newSliceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "slice", Short: "Create and manage providers' slices on a gateway"}
	var provider string
	var cq, sq quotaFlags
	create := mgmtCmd("create SLICE --provider PEER_ID", "Create a slice for a provider (operator)", cobra.ExactArgs(1),
		func(args []string) (slice.Request, error) {
			q, err := cq.quotas()
			return slice.Request{Op: slice.OpSliceCreate, Slice: args[0], Provider: provider, Quotas: q, Services: cq.services}, err
		}, printSlice, func(c *cobra.Command) {
			c.Flags().StringVar(&provider, "provider", "", "the provider's peer ID (required)")
			_ = c.MarkFlagRequired("provider")
			cq.register(c)
		})
	set := mgmtCmdCalling("set SLICE", "Change a slice's quotas or granted services, at run time (operator)", cobra.ExactArgs(1),
		func(ctx context.Context, call caller, args []string) (slice.Request, error) {
			req := slice.Request{Op: slice.OpSliceSet, Slice: args[0]}
			if sq.quotaSet() {
				// slice.set replaces the quotas: start from the slice's current ones, so that
				// the flags given change those quotas and no others.
				raw, err := call(ctx, slice.Request{Op: slice.OpSliceGet, Slice: args[0]})
				if err != nil {
					return req, err
				}
				var cur slice.SliceView
				if err := json.Unmarshal(raw, &cur); err != nil {
					return req, fmt.Errorf("slice %s: %w", args[0], err)
				}
				q, err := sq.quotasOver(cur.Quotas)
				if err != nil {
					return req, err
				}
				req.Quotas = q
			}
			if sq.servicesSet() {
				req.Services = append([]string{}, sq.services...)
			}
			return req, nil
		}, printSlice, sq.register)
	cmd.AddCommand(create, set,
		mgmtCmd("list", "List slices (a provider sees its own)", cobra.NoArgs,
			func([]string) (slice.Request, error) { return slice.Request{Op: slice.OpSliceList}, nil }, printSlices, nil),
		mgmtCmd("get SLICE", "Show one slice: quotas, services, usage, apps", cobra.ExactArgs(1),
			func(a []string) (slice.Request, error) { return slice.Request{Op: slice.OpSliceGet, Slice: a[0]}, nil }, printSlice, nil),
		mgmtCmd("remove SLICE", "Remove a slice with its apps and storage (operator)", cobra.ExactArgs(1),
			func(a []string) (slice.Request, error) {
				return slice.Request{Op: slice.OpSliceRemove, Slice: a[0]}, nil
			}, printOK, nil),
		newEventsCmd(),
		newProbeCmd(),
	)
	return cmd
}

func newProbeCmd() *cobra.Command {
	var f mgmtFlags
	var every time.Duration
	cmd := &cobra.Command{
		Use: "probe [SLICE]", Short: "Probe the gateway (no SLICE) or one slice; with --every, keep receiving it",
		Long: `Probe the gateway or one slice. With --every, the gateway sends the probe at that period
on one stream until interrupted (a watch, one JSON line per answer): far cheaper for the
gateway than polling.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := slice.Request{Op: slice.OpProbeCore}
			if len(args) == 1 {
				req = slice.Request{Op: slice.OpProbeSlice, Slice: args[0]}
			}
			out := cmd.OutOrStdout()
			if every == 0 {
				res, err := f.call(cmd.Context(), req)
				if err != nil {
					return err
				}
				var v any
				if err := json.Unmarshal(res, &v); err != nil {
					return err
				}
				return writeJSONOut(out, v)
			}
			req.EveryMs = every.Milliseconds()
			enc := json.NewEncoder(out)
			return f.watch(cmd.Context(), req, func(r slice.Response) error {
				if r.Status != http.StatusOK {
					return fmt.Errorf("%s: %s (%d)", req.Op, r.Error, r.Status)
				}
				return enc.Encode(r.Result)
			})
		},
	}
	f.register(cmd)
	cmd.Flags().DurationVar(&every, "every", 0, "watch: receive the probe at this period (at least 250ms) until interrupted")
	return cmd
}

func newEventsCmd() *cobra.Command {
	var f mgmtFlags
	var follow bool
	cmd := &cobra.Command{
		Use: "events [SLICE]", Short: "Print the gateway's (no SLICE) or a slice's event stream", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := slice.Request{Op: slice.OpEventsCore}
			if len(args) == 1 {
				req = slice.Request{Op: slice.OpEventsSlice, Slice: args[0]}
			}
			out := cmd.OutOrStdout()
			for {
				res, err := f.call(cmd.Context(), req)
				if err != nil {
					return err
				}
				var evs []slice.Event
				if err := json.Unmarshal(res, &evs); err != nil {
					return err
				}
				for _, e := range evs {
					if f.json {
						_ = json.NewEncoder(out).Encode(e)
					} else {
						fmt.Fprintf(out, "%s  %-16s %-10s %-10s %s\n", e.Time.Format(time.RFC3339), e.Kind, orDash(e.Slice), orDash(e.App), e.Msg)
					}
					req.Since = e.Seq
				}
				if !follow {
					return nil
				}
				req.WaitMs = 30_000
			}
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	return cmd
}

func newAppCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Package, install and run apps in a slice"}
	var start bool
	unitReq := func(op slice.Op) func([]string) (slice.Request, error) {
		return func(a []string) (slice.Request, error) {
			b, err := os.ReadFile(a[1])
			if err != nil {
				return slice.Request{}, err
			}
			return slice.Request{Op: op, Slice: a[0], Unit: b, Start: start}, nil
		}
	}
	appReq := func(op slice.Op) func([]string) (slice.Request, error) {
		return func(a []string) (slice.Request, error) { return slice.Request{Op: op, Slice: a[0], App: a[1]}, nil }
	}
	cmd.AddCommand(newAppPackCmd(),
		mgmtCmd("install SLICE UNIT_FILE", "Install a signed deployment unit", cobra.ExactArgs(2), unitReq(slice.OpAppInstall), printApp,
			func(c *cobra.Command) { c.Flags().BoolVar(&start, "start", false, "start the app once installed") }),
		mgmtCmd("update SLICE UNIT_FILE", "Replace an app by a newer unit, hot (rolled back if it fails to start)", cobra.ExactArgs(2), unitReq(slice.OpAppUpdate), printApp, nil),
		mgmtCmd("start SLICE APP", "Start an installed app", cobra.ExactArgs(2), appReq(slice.OpAppStart), printApp, nil),
		mgmtCmd("stop SLICE APP", "Stop a running app", cobra.ExactArgs(2), appReq(slice.OpAppStop), printApp, nil),
		mgmtCmd("uninstall SLICE APP", "Stop and remove an app and its storage", cobra.ExactArgs(2), appReq(slice.OpAppUninstall), printOK, nil),
		mgmtCmd("list SLICE", "List a slice's apps with their TR-181 states", cobra.ExactArgs(1),
			func(a []string) (slice.Request, error) { return slice.Request{Op: slice.OpAppList, Slice: a[0]}, nil }, printApps, nil),
	)
	return cmd
}

func newAppPackCmd() *cobra.Command {
	var keyPath, out, module string
	var m slice.Manifest
	var config string
	cmd := &cobra.Command{
		Use:   "pack --key KEY --name NAME --module FILE.wasm --out UNIT_FILE",
		Short: "Build and sign a deployment unit (provider)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := catalog.LoadKey(keyPath)
			if err != nil {
				return err
			}
			var mod []byte
			if module != "" {
				if mod, err = os.ReadFile(module); err != nil {
					return err
				}
			}
			if config != "" {
				m.Config = json.RawMessage(config)
				if !json.Valid(m.Config) {
					return fmt.Errorf("--config is not JSON")
				}
			}
			u, err := slice.Pack(key, m, mod)
			if err != nil {
				return err
			}
			b, err := u.Encode()
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			return writeJSONOut(cmd.OutOrStdout(), map[string]any{"unit": u.CID().String(), "file": out, "manifest": u.Manifest})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&keyPath, "key", "", "the provider's key file (required)")
	fl.StringVar(&out, "out", "", "unit file to write (required)")
	fl.StringVar(&module, "module", "", "the WebAssembly module (kind wasm)")
	fl.StringVar(&m.Name, "name", "", "the app's name in the slice (required)")
	fl.StringVar(&m.Version, "version", "", "version shown in probes")
	fl.StringVar(&m.Kind, "kind", slice.KindWASM, "app kind: wasm or a built-in kind")
	fl.StringSliceVar(&m.Requires, "requires", nil, "shared services the app needs")
	fl.StringSliceVar(&m.Topics, "topics", nil, "slice topics the app subscribes to")
	fl.StringSliceVar(&m.Provides, "provides", nil, "services the app offers to the other apps of its slice")
	fl.Int64Var(&m.MemoryBytes, "memory", 0, "memory cap in bytes (default: up to 16 MiB of the slice's quota)")
	fl.StringVar(&config, "config", "", "JSON configuration for a built-in kind")
	for _, n := range []string{"key", "out", "name"} {
		_ = cmd.MarkFlagRequired(n)
	}
	return cmd
}

func printOK(w io.Writer, _ json.RawMessage) error {
	fmt.Fprintln(w, "ok")
	return nil
}

func printSlice(w io.Writer, raw json.RawMessage) error {
	var v slice.SliceView
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "slice\t%s\n", v.ID)
	fmt.Fprintf(tw, "provider\t%s\n", v.Provider)
	fmt.Fprintf(tw, "services\t%s\n", orDash(strings.Join(v.Services, ",")))
	fmt.Fprintf(tw, "memory\t%s of %s\n", humanize.IBytes(uint64(v.Usage.MemoryBytes)), humanize.IBytes(uint64(v.Quotas.MemoryBytes)))
	fmt.Fprintf(tw, "storage\t%s of %s\n", humanize.IBytes(uint64(v.Usage.StorageBytes)), humanize.IBytes(uint64(v.Quotas.StorageBytes)))
	fmt.Fprintf(tw, "cpu\t%.3f s used, share %d/1000 core\n", v.Usage.CPUSeconds, v.Quotas.CPUMillis)
	fmt.Fprintf(tw, "apps\t%d (max %d)\n", len(v.Apps), v.Quotas.MaxApps)
	tw.Flush()
	if len(v.Apps) > 0 {
		b, _ := json.Marshal(v.Apps)
		return printApps(w, b)
	}
	return nil
}

func printSlices(w io.Writer, raw json.RawMessage) error {
	var vs []slice.SliceView
	if err := json.Unmarshal(raw, &vs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLICE\tPROVIDER\tAPPS\tMEMORY\tSTORAGE\tSERVICES")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s/%s\t%s/%s\t%s\n", v.ID, v.Provider, len(v.Apps),
			humanize.IBytes(uint64(v.Usage.MemoryBytes)), humanize.IBytes(uint64(v.Quotas.MemoryBytes)),
			humanize.IBytes(uint64(v.Usage.StorageBytes)), humanize.IBytes(uint64(v.Quotas.StorageBytes)), orDash(strings.Join(v.Services, ",")))
	}
	tw.Flush()
	if len(vs) == 0 {
		fmt.Fprintln(w, "(none)")
	}
	return nil
}

func printApp(w io.Writer, raw json.RawMessage) error {
	return printApps(w, json.RawMessage("["+string(raw)+"]"))
}

func printApps(w io.Writer, raw json.RawMessage) error {
	var as []slice.AppRecord
	if err := json.Unmarshal(raw, &as); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tVERSION\tKIND\tSTATUS\tREQUESTED\tFAULT\tMEMORY\tCPU\tUNIT")
	for _, a := range as {
		fault := a.Fault
		if a.FaultReason != "" {
			fault += ": " + a.FaultReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3fs\t%s\n", a.Name, orDash(a.Version), a.Kind, a.Status, a.Requested, fault,
			humanize.IBytes(uint64(a.MemoryBytes)), a.CPUSeconds, a.Unit)
	}
	return tw.Flush()
}
