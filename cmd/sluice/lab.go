package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/scenario"
)

func newLabCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build, inspect and remove the namespace lab (client, router, LB nodes, backends)",
		Long: `lab builds Sluice's test network on this machine from network namespaces and veth
pairs: a client, a router, 1..9 LB nodes and backend hosts, addressed from 198.18.0.0/15
and 2001:db8::/32 (see internal/lab/doc.go for the diagram and the address plan).
Needs root. Every namespace is named --prefix followed by client, router, lbN, beN.`,
	}
	cmd.AddCommand(newLabUpCmd(), newLabDownCmd(), newLabStatusCmd(),
		newLabServeCmd("http-serve", "Answer every HTTP request with --name (a lab backend's server)", "198.18.0.10:80", lab.ServeHTTP),
		newLabServeCmd("udp-echo", "Answer every UDP datagram with --name:payload (a lab backend's server)", "198.18.0.10:7", lab.ServeUDPEcho),
		newLabServeCmd("stream-serve", "Serve long-lived sequence-checked TCP streams (a lab backend's server for failover tests)", "198.18.0.10:9000", lab.ServeStream),
		newLabQUICServeCmd())
	return cmd
}

// labSignalContext is cancelled by SIGINT or SIGTERM.
func labSignalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

func newLabUpCmd() *cobra.Command {
	var (
		c            lab.Config
		vip4, vip6   []string
		routing      string
		wait         bool
		printDetails bool
		r            *labRunFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab (removing the leftovers of an earlier run with the same prefix first)",
		Long: `up removes whatever an earlier run with the same --prefix left behind, then builds the
lab and prints its address plan. If building fails, or SIGINT/SIGTERM arrives meanwhile,
everything built so far is removed. The lab stays after up exits (remove it with
"sluice lab down"), unless --wait is given: then up holds it until SIGINT/SIGTERM and
removes it on the way out.

With --run, up also runs Sluice in the lab as "sluice lab demo" does, prints how to
reach it (curl from the client, sluice ctl on the LB nodes, BIRD on the router) and
keeps it until SIGINT/SIGTERM or until one of its processes dies, then removes it.
Each process logs to /run/sluice-lab/PREFIX/; "sluice lab status" lists them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.run {
				lbs := c.LBs
				if !cmd.Flags().Changed("lbs") {
					lbs = 3
				}
				return labRun(cmd, scenario.Options{Prefix: c.Prefix, LBs: lbs, Backends: c.Backends,
					IO: r.io, BGP: r.bgp, BFD: r.bfd, AgentMetrics: true})
			}
			var err error
			if c.VIPs4, err = labParsePrefixes("--vip4", vip4); err != nil {
				return err
			}
			if c.VIPs6, err = labParsePrefixes("--vip6", vip6); err != nil {
				return err
			}
			if c.VIPRouting, err = lab.ParseVIPRouting(routing); err != nil {
				return fmt.Errorf("--vip-routing: %w", err)
			}
			ctx, stop := labSignalContext(cmd)
			defer stop()
			l, err := lab.Up(ctx, c)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if printDetails {
				if err := l.WritePlan(out); err != nil {
					return err
				}
			}
			if !wait {
				fmt.Fprintf(out, "lab %s is up; remove it with: sluice lab down --prefix %s\n", l.Cfg.Prefix, l.Cfg.Prefix)
				return nil
			}
			fmt.Fprintf(out, "lab %s is up; SIGINT or SIGTERM removes it\n", l.Cfg.Prefix)
			<-ctx.Done()
			return l.Down()
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Prefix, "prefix", lab.DefaultPrefix, "namespace name prefix")
	f.IntVar(&c.LBs, "lbs", 1, fmt.Sprintf("LB nodes (1..%d)", lab.MaxLBs))
	f.IntVar(&c.Backends, "backends", 3, fmt.Sprintf("backend hosts (1..%d)", lab.MaxBackends))
	f.StringSliceVar(&vip4, "vip4", []string{"198.18.0.0/24"}, "IPv4 VIP prefix the router routes to the LB tier (repeatable)")
	f.StringSliceVar(&vip6, "vip6", []string{"2001:db8::/64"}, "IPv6 VIP prefix the router routes to the LB tier (repeatable)")
	f.StringVar(&routing, "vip-routing", "ecmp", "router's VIP routes: ecmp (across all LB nodes), first-lb, none (BGP will add them), on-link (L2 mode: the LB nodes answer for the VIPs on the segment)")
	f.BoolVar(&wait, "wait", false, "hold the lab until SIGINT/SIGTERM, then remove it")
	f.BoolVar(&printDetails, "print", true, "print the address plan")
	r = addLabRunFlags(cmd)
	return cmd
}

func labParsePrefixes(flag string, ss []string) ([]netip.Prefix, error) {
	ps := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func newLabDownCmd() *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: stop what runs in its namespaces and delete them (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Remove works from the prefix alone, so a half-built lab left
			// by a crash goes too; nothing to remove is not an error.
			names, err := lab.Remove(prefix)
			scenario.RemoveState(prefix) // of up --run, if it was killed
			out := cmd.OutOrStdout()
			if len(names) == 0 && err == nil {
				fmt.Fprintf(out, "no lab with prefix %s\n", prefix)
				return nil
			}
			fmt.Fprintf(out, "removed %s\n", strings.Join(names, " "))
			return err
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", lab.DefaultPrefix, "namespace name prefix")
	return cmd
}

func newLabStatusCmd() *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the lab's processes (with up --run) and namespaces with their interfaces, addresses and routes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := labWriteProcs(cmd.OutOrStdout(), prefix); err != nil {
				return err
			}
			l, err := lab.Attach(lab.Config{Prefix: prefix})
			if errors.Is(err, lab.ErrNotFound) {
				return fmt.Errorf("no lab with prefix %s (sluice lab up)", prefix)
			}
			if err != nil {
				return err
			}
			return l.WriteStatus(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", lab.DefaultPrefix, "namespace name prefix")
	return cmd
}

// newLabServeCmd is a hidden `sluice lab` command running one of the lab
// backends' servers on --listen, answering with --name.
func newLabServeCmd(use, short, example string, serve func(ctx context.Context, addrs []string, name string) error) *cobra.Command {
	var (
		name   string
		listen []string
	)
	cmd := &cobra.Command{
		Use:    use,
		Short:  short,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := labSignalContext(cmd)
			defer stop()
			return serve(ctx, listen, name)
		},
	}
	labServeFlags(cmd, &name, &listen, example)
	return cmd
}

func labServeFlags(cmd *cobra.Command, name *string, listen *[]string, example string) {
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(name, "name", host, "name to answer with")
	f.StringArrayVar(listen, "listen", nil, "address:port to listen on, e.g. "+example+" (repeatable; need not exist yet)")
	cmd.MarkFlagRequired("listen")
}
