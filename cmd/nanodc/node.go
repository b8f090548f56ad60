package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nanodc/nanodc/node"
)

func defaultDataDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ".nanodc"
	}
	return filepath.Join(home, ".nanodc")
}

// nodeFlags are the daemon's flags; each set one overrides the config file.
type nodeFlags struct {
	dataDir, configPath    string
	listen, bootstrap      []string
	apiListen, isp, access string
	noMDNS                 bool
	logLevel, logFormat    string
}

func newNodeCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run the gateway daemon, or query a running one",
		Long: `Run the gateway daemon: it joins the overlay, keeps its identity in the data directory and
serves the local management API. Sub-commands query a running daemon through that API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runNode(cmd, f) },
	}
	fl := cmd.Flags()
	cmd.PersistentFlags().StringVar(&f.dataDir, "data", defaultDataDir(), "data directory (identity, API token)")
	fl.StringVar(&f.configPath, "config", "", "YAML config file (default: config.yaml in the data directory, if present)")
	fl.StringSliceVar(&f.listen, "listen", nil, "listen multiaddrs (repeatable)")
	fl.StringSliceVar(&f.bootstrap, "bootstrap", nil, "bootstrap peer multiaddrs ending in /p2p/<id> (repeatable)")
	fl.StringVar(&f.apiListen, "api-listen", "", `management API address on loopback, or "off"`)
	fl.StringVar(&f.isp, "isp", "", "ISP label of this gateway")
	fl.StringVar(&f.access, "access-node", "", "access node (DSLAM/POP) label of this gateway")
	fl.BoolVar(&f.noMDNS, "no-mdns", false, "do not discover peers on the LAN with mDNS")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json")
	cmd.AddCommand(newNodeQueryCmds()...)
	return cmd
}

func runNode(cmd *cobra.Command, f nodeFlags) error {
	path := f.configPath
	if path == "" {
		if p := filepath.Join(f.dataDir, node.ConfigFile); fileExists(p) {
			path = p
		}
	}
	cfg, err := node.LoadConfig(path)
	if err != nil {
		return err
	}
	fl := cmd.Flags()
	if fl.Changed("listen") {
		cfg.Listen = f.listen
	}
	if fl.Changed("bootstrap") {
		cfg.Bootstrap = f.bootstrap
	}
	if fl.Changed("api-listen") {
		cfg.API.Listen = f.apiListen
	}
	if fl.Changed("isp") {
		cfg.Labels.ISP = f.isp
	}
	if fl.Changed("access-node") {
		cfg.Labels.AccessNode = f.access
	}
	if f.noMDNS {
		cfg.MDNS = false
	}
	if fl.Changed("log-level") {
		cfg.Log.Level = f.logLevel
	}
	if fl.Changed("log-format") {
		cfg.Log.Format = f.logFormat
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config (after flags): %w", err)
	}
	n, err := node.New(node.Options{
		Config:         cfg,
		DataDir:        f.dataDir,
		Version:        version,
		Logger:         newLogger(cfg.Log),
		ProcessMetrics: true,
	})
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Serve(cmd.Context())
}

func newLogger(c node.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.Level))) // validated
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}
