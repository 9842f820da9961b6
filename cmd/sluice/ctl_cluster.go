package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
)

// newCtlClusterCmd is `sluice ctl cluster`: the node's cluster member.
func newCtlClusterCmd(client func() (*api.Client, error), emit func(io.Writer, any, func(*tabwriter.Writer)) error) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "The LB nodes' cluster as this node sees it (node.cluster)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the members and their state, this node's shards by role, sync progress and entries per VIP",
		Long: `status shows the node's cluster member: every configured member (this node first) and any
other member of the node's view, alive or down; the chains' digest (members that compute the
same chains from the same view show the same); this node's shards by role in their chain;
sync progress (a node serves only once its shards are synced); entries held per VIP; and the
datagrams the protocol dropped. A node without node.cluster runs alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			st, err := c.Cluster(cmd.Context())
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) { clusterTable(tw, st) })
		},
	})
	return cmd
}

func clusterTable(tw *tabwriter.Writer, st control.ClusterStatus) {
	if !st.Enabled {
		fmt.Fprintln(tw, "cluster\tnone: the node runs alone (no node.cluster)")
		return
	}
	state := "ready"
	switch {
	case !st.Running:
		state = "left (the node is drained)"
	case !st.Ready:
		state = fmt.Sprintf("syncing (%d shards pending)", st.Sync.Pending)
	}
	fmt.Fprintf(tw, "cluster\t%s\n", state)
	fmt.Fprintf(tw, "self\t%s\n", st.Self)
	fmt.Fprintf(tw, "alive\t%d\n", st.Alive)
	digest := st.Digest
	if digest == "" {
		digest = "-"
	}
	fmt.Fprintf(tw, "chains\t%d shards, %d replicas, digest %s\n", st.Shards, st.Replicas, digest)
	fmt.Fprintf(tw, "shards\thead %d, middle %d, tail %d\n", st.Heads, st.Middles, st.Tails)
	fmt.Fprintf(tw, "sync\tpending %d, catch-up %d, synced %d, no source %d, entries in %d, out %d\n",
		st.Sync.Pending, st.Sync.Catchup, st.Sync.Shards, st.Sync.NoSource, st.Sync.EntriesIn, st.Sync.EntriesOut)
	fmt.Fprintf(tw, "entries\t%d of %d\n", st.Entries, st.Capacity)
	fmt.Fprintf(tw, "dropped\tauth %d, replay %d, not member %d, malformed %d\n",
		st.Drops["auth"], st.Drops["replay"], st.Drops["not_member"], st.Drops["malformed"])
	fmt.Fprintf(tw, "published\t%d new flows, %d committed, %d failed, %d rejected, %d dropped; %d refreshed\n",
		st.Publish.Submitted, st.Publish.Committed, st.Publish.Failed, st.Publish.Rejected, st.Publish.Dropped, st.Publish.Refreshed)
	a := st.Ask
	fmt.Fprintf(tw, "asked\t%d flows: %d answered (%d moved off this node's decision), local: %d timeout, %d failed, %d unknown backend; %d busy (dropped, retransmitted); %d corrected\n",
		a.Asked, a.Answered, a.Moved, a.Timeouts, a.Failed, a.Unknown, a.Busy, a.Corrected)
	fmt.Fprintf(tw, "held\t%d packets, %d released, %d dropped\n", a.Held, a.Released, a.Dropped)
	fmt.Fprintln(tw, "\nMEMBER\tSTATE\tCONFIGURED")
	for _, m := range st.Members {
		addr := m.Address
		if m.Self {
			addr += " (self)"
		}
		conf := "no"
		if m.Configured {
			conf = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", addr, m.State, conf)
	}
	if len(st.ByVIP) == 0 {
		return
	}
	fmt.Fprintln(tw, "\nVIP\tENTRIES")
	vips := make([]string, 0, len(st.ByVIP))
	for v := range st.ByVIP {
		vips = append(vips, v)
	}
	slices.Sort(vips)
	for _, v := range vips {
		fmt.Fprintf(tw, "%s\t%d\n", v, st.ByVIP[v])
	}
}
