package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

func newLabDemoCmd() *cobra.Command {
	o := scenario.Options{}
	var requests int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Bring up the lab, send HTTP requests to the VIP through Sluice, show where they went, tear down",
		Long: `demo builds the lab (a client, a router running BIRD, or FRR with --router frr, three
LB nodes and three backend hosts in network namespaces), runs sluice agent and an HTTP server
on every backend and sluice lb on every LB node, which announce the VIPs to the router over
BGP (BFD on); the router spreads the VIPs' traffic over the LB nodes by ECMP. It sends
--requests HTTP requests from the client to the VIP with curl (IPv4 and IPv6, a new
connection each), prints the share each backend served and the LB's counters,
how the packets spread over the LB nodes, and removes everything, also on failure or
Ctrl-C. Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			o.Binary = bin
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(out, "starting the lab (%d LB node(s), %d backends, io %s)...\n", o.LBs, o.Backends, o.IO)
			s, err := scenario.Start(ctx, o)
			if err != nil {
				return err
			}
			defer func() {
				s.Stop()
				fmt.Fprintln(out, "lab removed")
			}()
			s.Lab.WritePlan(out)
			if err := s.WaitReady(ctx, 20*time.Second); err != nil {
				return err
			}
			if o.BGP {
				all := make([]int, len(s.LBs))
				for i := range all {
					all[i] = i
				}
				for _, vip := range s.VIPs() {
					if _, err := s.WaitNextHops(ctx, vip, 20*time.Second, all...); err != nil {
						return err
					}
				}
				proto, _ := s.RouterSessions(ctx)
				fmt.Fprintf(out, "\n%s on the router, one eBGP session per LB node:\n%s", strings.ToUpper(o.Router), proto)
				for _, vip := range s.VIPs() {
					r, _ := s.Lab.Router.Run(ctx, "ip", "route", "show", "exact", netip.PrefixFrom(vip, vip.BitLen()).String())
					if vip.Is6() {
						r, _ = s.Lab.Router.Run(ctx, "ip", "-6", "route", "show", "exact", netip.PrefixFrom(vip, vip.BitLen()).String())
					}
					fmt.Fprintf(out, "\nrouter's kernel route to %s (ECMP by L4 hash):\n%s", vip, r)
				}
			}
			for _, vip := range s.VIPs() {
				start := time.Now()
				names, err := s.Curl(ctx, vip, requests)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "\n%d HTTP requests to %s in %v, each a new connection:\n", requests, vip, time.Since(start).Round(time.Millisecond))
				printShares(cmd, names)
			}
			fmt.Fprintln(out, "\npackets each LB node received (ECMP spread):")
			var rx []uint64
			var total uint64
			for _, n := range s.Lab.LBs {
				j, err := n.Run(ctx, bin, "ctl", "stats", "-o", "json")
				var st control.Stats
				if err == nil {
					err = json.Unmarshal([]byte(j), &st)
				}
				if err != nil {
					return fmt.Errorf("%s: stats: %v", n.Name, err)
				}
				rx = append(rx, st.RxPackets)
				total += st.RxPackets
			}
			for i, n := range rx {
				fmt.Fprintf(out, "  lb%d %6d  %5.1f%%\n", i+1, n, 100*float64(n)/float64(max(total, 1)))
			}
			fmt.Fprintln(out, "\nLB counters:")
			for i, o := range s.StopLBs() {
				fmt.Fprintf(out, "--- lb%d\n%s", i+1, o)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Prefix, "prefix", lab.DefaultPrefix, "namespace name prefix")
	f.IntVar(&o.LBs, "lbs", 3, "LB nodes")
	f.BoolVar(&o.BGP, "bgp", true, "LB nodes announce the VIPs over BGP to the router (else: static ECMP routes)")
	f.StringVar(&o.Router, "router", "bird", "the router's BGP daemon: bird (BIRD 2) or frr (FRR: zebra, bfdd, bgpd)")
	f.BoolVar(&o.BFD, "bfd", true, "BFD on the BGP sessions")
	f.IntVar(&o.Backends, "backends", 3, "backend hosts")
	f.StringVar(&o.IO, "io", "auto", "LB packet I/O: afxdp, afpacket or auto")
	f.IntVar(&requests, "requests", 300, "HTTP requests per VIP")
	return cmd
}

func printShares(cmd *cobra.Command, names []string) {
	count := map[string]int{}
	for _, n := range names {
		count[n]++
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(cmd.OutOrStdout(), "  %-4s %4d  %5.1f%%\n", k, count[k], 100*float64(count[k])/float64(len(names)))
	}
}
