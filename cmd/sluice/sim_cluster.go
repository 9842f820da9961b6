package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/cluster/clustersim"
)

func newSimClusterCmd() *cobra.Command {
	var (
		c       clustersim.Config
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run the LB cluster's owner chains in memory through node kills, restarts and backend changes",
		Long: `sim cluster runs the cluster code (owner chains, chain replication, sync, the
authenticated wire protocol) over an in-memory transport and membership: --nodes
nodes with chains of --replicas, --flows flows inserted once, then each event of
--schedule (kill:N, restart:N, backends) followed at once by a re-query of a
sample of flows from random nodes proposing another backend. It reports flows
whose committed backend changed mid-connection (must be 0), requests that fell
back to a local decision, entries lost, and new flows (asked by two nodes at once
with different proposals) whose askers learnt different backends; the exit
status is 1 if any flow changed, was lost or disagreed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if verbose {
				c.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
			}
			r, err := clustersim.Run(c)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), r.String())
			if r.Changed != 0 || r.Lost != 0 || r.Disagree != 0 {
				return fmt.Errorf("%d flows changed backend, %d entries lost, %d new flows disagreeing", r.Changed, r.Lost, r.Disagree)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.Nodes, "nodes", 64, "LB nodes")
	f.IntVar(&c.Replicas, "replicas", 3, "chain length R")
	f.IntVar(&c.Shards, "shards", 4096, "shards")
	f.IntVar(&c.Flows, "flows", 1_000_000, "flows")
	f.StringVar(&c.Schedule, "schedule", "", "events: kill:N, restart:N, backends, comma-separated (default: a mix of each)")
	f.Float64Var(&c.Sample, "sample", 0.1, "fraction of flows re-queried after each event")
	f.IntVar(&c.Window, "window", 4096, "requests in flight")
	f.DurationVar(&c.Detect, "detect", 0, "failure detection delay: a killed node is silent this long before the membership drops it")
	f.DurationVar(&c.ViewJitter, "view-jitter", 0, "each node sees a membership change up to this much later than the others")
	f.DurationVar(&c.SyncSettle, "settle", 0, "nodes wait this long before pulling a shard they joined, and pull it again after (0: the default 100ms; negative: off)")
	f.Float64Var(&c.New, "new", 0.01, "fraction of --flows that start during each event, each asked by two nodes at once")
	f.Uint64Var(&c.Seed, "seed", 0, "cluster hash seed")
	f.BoolVarP(&verbose, "verbose", "v", false, "print progress")
	return cmd
}
