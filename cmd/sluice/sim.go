package main

import (
	"fmt"
	"net/netip"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/sim"
)

func newSimCmd() *cobra.Command {
	var (
		vip, clients, proto string
		backends            []string
		c                   sim.Config
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Drive synthetic client flows through the datapath in memory and report where they went",
		Long: `sim runs the real datapath (parse, flow table, Maglev, GUE encapsulation) over the
in-memory link: --flows client connections to --vip, each sending --packets packets
(TCP: SYN, ACKs, FIN), interleaved so all are open at once. It prints the packets and
flows each backend received, the datapath counters and the single-core packet rate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.VIP, err = netip.ParseAddrPort(vip); err != nil {
				return fmt.Errorf("--vip: %w", err)
			}
			if c.Clients, err = netip.ParsePrefix(clients); err != nil {
				return fmt.Errorf("--clients: %w", err)
			}
			switch proto {
			case "tcp":
				c.Proto = 6
			case "udp":
				c.Proto = 17
			default:
				return fmt.Errorf("--proto: %q is not tcp or udp", proto)
			}
			c.Backends = c.Backends[:0]
			for _, b := range backends {
				a, err := netip.ParseAddr(b)
				if err != nil {
					return fmt.Errorf("--backend: %w", err)
				}
				c.Backends = append(c.Backends, a)
			}
			res, err := sim.Run(c)
			if err != nil {
				return err
			}
			return printSim(cmd, res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&vip, "vip", "198.18.0.10:80", "virtual IP and port")
	f.StringVar(&proto, "proto", "tcp", "tcp or udp")
	f.StringSliceVar(&backends, "backend", []string{"198.18.1.11", "198.18.1.12", "198.18.1.13"}, "backend address (repeatable)")
	f.StringVar(&clients, "clients", "198.18.128.0/17", "prefix client addresses come from")
	f.IntVar(&c.Flows, "flows", 10000, "concurrent client flows")
	f.IntVar(&c.PacketsPerFlow, "packets", 10, "packets per flow")
	f.IntVar(&c.Payload, "payload", 64, "payload bytes per packet")
	f.Uint32Var(&c.M, "maglev-size", 0, "Maglev table size (prime; 0 = 65537)")
	f.Uint64Var(&c.Seed, "seed", 0, "cluster hash seed")
	cmd.AddCommand(newSimClusterCmd())
	return cmd
}

func printSim(cmd *cobra.Command, r *sim.Result) error {
	out := cmd.OutOrStdout()
	c := &r.Counters
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\tslots\tpackets\tshare\t")
	svc := r.Gen.Services[0]
	for i, real := range svc.Reals {
		if real == nil {
			continue
		}
		var pk uint64
		if int(real.ID) < len(c.Reals) {
			pk = c.Reals[real.ID].Packets
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\t\n", real.Name, svc.Table.Count(uint16(i)), pk, 100*float64(pk)/float64(max(c.TxPackets, 1)))
	}
	tw.Flush()
	fmt.Fprintf(out, "\nrx %d  tx %d  dropped %d  passed %d  flow hits %d  misses %d\n",
		c.RxPackets, c.TxPackets, c.Dropped(), c.Passed, c.FlowHits, c.FlowMisses)
	for i, n := range c.Drops {
		if n > 0 {
			fmt.Fprintf(out, "  drop %s: %d\n", pipeline.Reason(i), n)
		}
	}
	secs := r.Elapsed.Seconds()
	fmt.Fprintf(out, "maglev fingerprint %016x\n", svc.Table.Fingerprint())
	fmt.Fprintf(out, "%.0f packets/s on one core (%.0f ns/packet, generator included)\n",
		float64(c.RxPackets)/secs, 1e9*secs/float64(max(c.RxPackets, 1)))
	if c.TxPackets != c.RxPackets {
		fmt.Fprintln(os.Stderr, "warning: not every packet was forwarded")
	}
	return nil
}
