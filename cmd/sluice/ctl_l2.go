package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
)

// newCtlL2Cmd is `sluice ctl l2`: the node's L2 mode (node.l2).
func newCtlL2Cmd(client func() (*api.Client, error), emit func(io.Writer, any, func(*tabwriter.Writer)) error) *cobra.Command {
	cmd := &cobra.Command{Use: "l2", Short: "L2 mode: which VIPs this node answers ARP / neighbour solicitations for (node.l2)"}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show each VIP's owner in this node's view, whether it answers for it, its takeovers and the requests it answered",
		Long: `status shows the node's L2 mode: the interface and MAC it answers with, the members in its view
and whether it sees a majority of the configured members (without one it answers for nothing);
for each VIP address in service, its owner in this node's view, whether this node answers for
it now (or waits: "settle" while the previous owner is still alive, "sync" while its cluster
member syncs), since when, and how often it took it over; then the requests seen and answered
and the announcements sent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			st, err := c.L2(cmd.Context())
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) { l2Table(tw, st) })
		},
	})
	return cmd
}

func l2Table(tw *tabwriter.Writer, st control.L2Status) {
	if !st.Enabled {
		fmt.Fprintln(tw, "l2\toff (no node.l2)")
		return
	}
	fmt.Fprintf(tw, "interface\t%s (%s)\n", st.Interface, st.MAC)
	if st.Self != "" {
		fmt.Fprintf(tw, "self\t%s\n", st.Self)
		fmt.Fprintf(tw, "configured\t%s\n", strings.Join(st.Configured, " "))
	}
	q := "no: answers for nothing"
	if st.Quorum {
		q = "yes"
	}
	fmt.Fprintf(tw, "live\t%d (%s), majority %d: %s\n", len(st.Live), strings.Join(st.Live, " "), st.Need, q)
	fmt.Fprintf(tw, "takeovers\t%d (released %d, before sync %d)\n", st.Takeovers, st.Releases, st.Unsynced)
	k := st.Counters
	fmt.Fprintf(tw, "arp\t%d requests, %d answered; %d gratuitous sent\n", k.ARPRequests, k.ARPAnswered, k.GratuitousARP)
	fmt.Fprintf(tw, "nd\t%d solicitations, %d answered; %d unsolicited advertisements sent\n", k.NSRequests, k.NSAnswered, k.UnsolicitedNA)
	fmt.Fprintf(tw, "ignored\t%d for VIPs of other owners, %d conflicting announcements; %d send errors\n", k.IgnoredNotOwner, k.Conflicts, k.SendErrors)
	fmt.Fprintln(tw, "\nVIP\tOWNER\tANSWERING\tSINCE\tTAKEOVERS")
	for _, v := range st.VIPs {
		ans := "no"
		if v.Answering {
			ans = "yes"
		} else if v.Waiting != "" {
			ans = "waiting (" + v.Waiting + ")"
		}
		since := "-"
		if !v.Since.IsZero() {
			since = v.Since.UTC().Format(time.RFC3339Nano)
		}
		owner := v.Owner
		if v.Mine {
			owner += " (this node)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", v.Address, owner, ans, since, v.Takeovers)
	}
}
