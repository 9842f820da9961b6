package main

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
)

// newCtlFastpathCmd is `sluice ctl fastpath`: the redirects the node gave
// its fastpath clients' agents (node.fastpath).
func newCtlFastpathCmd(client func() (*api.Client, error), emit func(io.Writer, any, func(*tabwriter.Writer)) error) *cobra.Command {
	var max int
	cmd := &cobra.Command{
		Use:   "fastpath",
		Short: "Show the flows this node redirected to their client hosts' agents, and the fastpath counters",
		Long: `fastpath shows the node's fastpath (node.fastpath): its counters (flows offered to client
hosts' agents, installed, refused by status, cancelled, refreshed, expired; the agents' datagrams
refused for their source, tag or time) and the redirects it holds: the flow, the backend the agent
sends it to, the agent, the redirect's state (offered: awaiting the agent's ack; installed; cancelling:
its backend drains, left or failed) and when the agent last refreshed it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			st, err := c.Fastpath(cmd.Context(), max)
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) { fastpathTable(tw, st, time.Now()) })
		},
	}
	cmd.Flags().IntVar(&max, "max", 1000, "show at most this many redirects (0: all)")
	return cmd
}

func fastpathTable(tw *tabwriter.Writer, st control.FastpathStatus, now time.Time) {
	if !st.Enabled {
		fmt.Fprintln(tw, "fastpath\toff (no node.fastpath)")
		return
	}
	k := st.Counters
	fmt.Fprintf(tw, "redirects\tactive %d  pending %d\n", k.Active, k.Pending)
	fmt.Fprintf(tw, "offered\t%d (installed %d, refused %d, unacked %d; not offered: table full %d, ring full %d)\n",
		k.Offered, k.Installed, k.Refused, k.Unacked, k.Full, k.RingFull)
	if len(st.Refused) > 0 {
		var names []string
		for s := range st.Refused {
			names = append(names, s)
		}
		sort.Strings(names)
		fmt.Fprint(tw, "refused by\t")
		for _, s := range names {
			fmt.Fprintf(tw, "%s %d  ", s, st.Refused[s])
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "cancelled\t%d (acked %d, unacked %d)\n", k.Cancelled, k.CancelAcked, k.CancelUnacked)
	fmt.Fprintf(tw, "refreshed\t%d flows, expired %d, orphans cancelled %d; declined %d\n", k.Refreshes, k.Expired, k.Orphans, k.Declined)
	fmt.Fprintf(tw, "messages\tsent %d, send errors %d; dropped: bad source %d, bad tag %d, malformed %d, stale %d\n",
		k.Sent, k.SendErrors, k.BadSource, k.BadAuth, k.Malformed, k.Stale)
	if len(st.Redirects) == 0 {
		return
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "PROTO\tCLIENT\tVIP\tBACKEND\tAGENT\tSTATE\tAGE\tREFRESHED")
	for _, r := range st.Redirects {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s ago\n", r.Proto, r.Client, r.VIP, r.Backend, r.Agent, r.State,
			now.Sub(r.Since).Round(time.Second), now.Sub(r.Seen).Round(100*time.Millisecond))
	}
}
