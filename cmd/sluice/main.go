// Command sluice is the single Sluice binary: the load balancer node, the
// backend agent, the admin client and the tools around them. This file and
// its siblings only wire subcommands to the internal packages.
package main

import (
	"fmt"
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
