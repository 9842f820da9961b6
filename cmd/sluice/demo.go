package main

import (
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

func newLabDemoCmd() *cobra.Command {
	o := scenario.Options{}
	var requests int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Bring up the lab, send HTTP requests to the VIP through Sluice, show where they went, tear down",
		Long: `demo builds the lab (a client, a router, LB nodes and three backend hosts in network
namespaces), runs sluice agent and an HTTP server on every backend and sluice lb on every
LB node, sends --requests HTTP requests from the client to the VIP with curl (IPv4 and
IPv6, a new connection each), prints the share each backend served and the LB's counters,
and removes everything, also on failure or Ctrl-C. Needs root.`,
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
			for _, vip := range s.VIPs() {
				start := time.Now()
				names, err := s.Curl(ctx, vip, requests)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "\n%d HTTP requests to %s in %v, each a new connection:\n", requests, vip, time.Since(start).Round(time.Millisecond))
				printShares(cmd, names)
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
	f.IntVar(&o.LBs, "lbs", 1, "LB nodes")
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
