// Command nanodc is the one composition root of nanodc: it turns flags and config files into
// constructor calls and runs the result. Every sub-command lives beside this file.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "nanodc:", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "nanodc",
		Short:         "Home gateways as a peer-to-peer nano data center",
		Long:          "nanodc runs home gateways as nodes of a peer-to-peer nano data center: provider slices,\npeer-assisted video on demand, and an emulator for whole fleets.",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newNodeCmd(), newEmulateCmd(), newVodCmd(), newSliceCmd(), newAppCmd(), newFleetCmd())
	return root
}
