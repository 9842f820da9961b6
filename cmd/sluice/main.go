// Command sluice is the single Sluice binary: the load balancer node, the
// backend agent, the admin client and the tools around them. This file and
// its siblings only wire subcommands to the internal packages.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "Sluice: a distributed layer-4 load balancer",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	labCmd := newLabCmd()
	labCmd.AddCommand(newLabDemoCmd())
	root.AddCommand(newVersionCmd(), newSimCmd(), newAgentCmd(), newLBCmd(), labCmd, newCtlCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "sluice", version)
		},
	}
}

// orDefault returns a, or def when a is empty.
func orDefault(a, def string) string {
	if a != "" {
		return a
	}
	return def
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// lbHelp is the long help of `sluice lb`.
const lbHelp = `lb runs a Sluice load balancer node from a YAML configuration (see docs/config.md and
examples/lb.yaml). It captures VIP traffic on the configured interfaces (AF_XDP, or
AF_PACKET as the fallback), picks a backend by weighted Maglev, and sends the packet
GUE-encapsulated to the backend's agent. Counters per VIP, backend and drop reason are
printed on SIGUSR1 and at exit. SIGHUP re-reads the configuration and applies
it without stopping the workers; a configuration that does not validate is
rejected and the running one keeps serving.

With --check it only validates the file, as a reload would, and exits: 0 with a
one-line summary, or non-zero with every problem. It opens no interface and needs
no privileges, so it does not check what needs the node's network (the
interfaces, next hops, source addresses) or the running node (changes that
need a restart).`
