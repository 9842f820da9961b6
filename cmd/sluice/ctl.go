package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
)

// newCtlCmd is `sluice ctl`: the client of an LB node's admin API.
func newCtlCmd() *cobra.Command {
	var addr, token, output string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Inspect and change a running LB node through its admin API",
		Long: `ctl talks to the admin API of a running LB node (HTTP/JSON, loopback by default).
The address is taken from --addr or the SLUICE_ADDR environment variable (default
127.0.0.1:6090, a node's default node.admin_addr), the token from --token or SLUICE_TOKEN.`,
	}
	cmd.PersistentFlags().StringVar(&addr, "addr", "", "admin API address, host:port (default $SLUICE_ADDR, else "+config.DefaultAdminAddr+")")
	cmd.PersistentFlags().StringVar(&token, "token", "", "bearer token (default $SLUICE_TOKEN)")
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 30*time.Second, "give up on a node that does not answer within this time")
	client := func() (*api.Client, error) {
		if output != "table" && output != "json" {
			return nil, fmt.Errorf("-o %q: not table or json", output)
		}
		if token == "" {
			token = os.Getenv("SLUICE_TOKEN")
		}
		from := "--addr"
		if addr == "" {
			addr, from = os.Getenv("SLUICE_ADDR"), "SLUICE_ADDR"
		}
		if addr == "" {
			addr, from = config.DefaultAdminAddr, "the default (neither --addr nor SLUICE_ADDR is set)"
		}
		return &api.Client{
			Base: "http://" + addr, Token: token, HTTP: &http.Client{Timeout: timeout},
			Hint: fmt.Sprintf("%s came from %s. Is sluice lb running with that admin address (node.admin_addr, or lb --admin-addr)? "+
				"Point sluice ctl at another with --addr HOST:PORT or SLUICE_ADDR=HOST:PORT.", addr, from),
		}, nil
	}
	emit := func(w io.Writer, v any, table func(*tabwriter.Writer)) error {
		if output == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}

	vip := &cobra.Command{Use: "vip", Short: "VIPs and their backends"}
	vip.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the VIPs with their backends, next hops and counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			vips, err := c.VIPs(cmd.Context())
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), vips, func(tw *tabwriter.Writer) { vipTable(tw, vips) })
		},
	})

	// applied reports an edit's apply.
	applied := func(cmd *cobra.Command, res control.ApplyResult, err error) error {
		if err != nil {
			return err
		}
		return emit(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "applied\tgeneration %d\t%s\n", res.Generation, res.Time.Format(time.RFC3339))
		})
	}

	var nv config.VIP
	var nvBackends []string
	vipAdd := &cobra.Command{
		Use:   "add NAME --address IP --protocol tcp|udp [--port N] --backend IP[=WEIGHT]...",
		Short: "Add a VIP with its backends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			v := nv
			v.Name = args[0]
			for _, b := range nvBackends {
				addr, w, hasW := strings.Cut(b, "=")
				be := config.Backend{Address: addr}
				if hasW {
					n, err := strconv.Atoi(w)
					if err != nil {
						return fmt.Errorf("--backend %q: weight %q is not a number", b, w)
					}
					be.Weight = &n
				}
				v.Backends = append(v.Backends, be)
			}
			res, err := c.AddVIP(cmd.Context(), v)
			return applied(cmd, res, err)
		},
	}
	vipAdd.Flags().StringVar(&nv.Address, "address", "", "VIP address")
	vipAdd.Flags().StringVar(&nv.Protocol, "protocol", "tcp", "tcp or udp")
	vipAdd.Flags().IntVar(&nv.Port, "port", 0, "port (0 with --port-end 0: every port)")
	vipAdd.Flags().IntVar(&nv.PortEnd, "port-end", 0, "end of a port range")
	vipAdd.Flags().StringVar(&nv.Forwarding, "forwarding", "", "gue (default), ipip or nat (full-NAT: needs node.snat)")
	vipAdd.Flags().StringVar(&nv.Encap, "encap", "", "the old name of --forwarding: gue or ipip")
	vipAdd.Flags().Uint32Var(&nv.MaglevSize, "maglev-size", 0, "Maglev table size (a prime; 0: default)")
	vipAdd.Flags().StringVar(&nv.Bypass, "bypass", "", "off (default) or single-backend: announce the VIP with its backend as BGP next hop while it has one (needs node.bgp)")
	vipAdd.Flags().StringArrayVar(&nvBackends, "backend", nil, "backend IP[=WEIGHT] (repeatable; weight default 1)")
	vip.AddCommand(vipAdd, &cobra.Command{
		Use:   "del NAME",
		Short: "Remove a VIP",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.RemoveVIP(cmd.Context(), args[0])
			return applied(cmd, res, err)
		},
	})

	backend := &cobra.Command{Use: "backend", Short: "Add, remove, drain and weigh the backends of a VIP"}
	var addWeight int
	beAdd := &cobra.Command{
		Use:   "add VIP IP [--weight N]",
		Short: "Add a backend to a VIP",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.AddBackend(cmd.Context(), args[0], args[1], addWeight)
			return applied(cmd, res, err)
		},
	}
	beAdd.Flags().IntVar(&addWeight, "weight", 1, "weight (0: added drained)")
	backend.AddCommand(beAdd, &cobra.Command{
		Use:   "del VIP IP",
		Short: "Remove a backend from a VIP (its flows move; drain it first to let them finish)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.RemoveBackend(cmd.Context(), args[0], args[1])
			return applied(cmd, res, err)
		},
	}, &cobra.Command{
		Use:   "drain VIP IP",
		Short: "Drain a backend (state draining): it keeps its flows and receives no new ones",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.SetState(cmd.Context(), args[0], args[1], config.StateDraining)
			return applied(cmd, res, err)
		},
	}, &cobra.Command{
		Use:   "undrain VIP IP",
		Short: "Return a drained backend to service (state active, its configured weight)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.SetState(cmd.Context(), args[0], args[1], config.StateActive)
			return applied(cmd, res, err)
		},
	}, &cobra.Command{
		Use:   "weight VIP IP WEIGHT",
		Short: "Set the weight of a backend (0 drains it)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			w, err := strconv.Atoi(args[2])
			if err != nil {
				return fmt.Errorf("weight %q is not a number", args[2])
			}
			res, err := c.SetWeight(cmd.Context(), args[0], args[1], w)
			return applied(cmd, res, err)
		},
	})

	nodeCmd := &cobra.Command{Use: "node", Short: "The node's service state: drain, announcements, routing peers"}
	nodeVerb := func(use, short string, do func(*cobra.Command, *api.Client) (control.NodeStatus, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				c, err := client()
				if err != nil {
					return err
				}
				st, err := do(cmd, c)
				if err != nil {
					return err
				}
				return emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) { nodeTable(tw, st) })
			},
		}
	}
	nodeCmd.AddCommand(
		nodeVerb("status", "Show whether the node is drained, what it announces and its peers",
			func(cmd *cobra.Command, c *api.Client) (control.NodeStatus, error) { return c.Node(cmd.Context()) }),
		nodeVerb("drain", "Withdraw every VIP announcement; keep forwarding what still arrives",
			func(cmd *cobra.Command, c *api.Client) (control.NodeStatus, error) {
				return c.DrainNode(cmd.Context(), true)
			}),
		nodeVerb("undrain", "Announce the VIPs again",
			func(cmd *cobra.Command, c *api.Client) (control.NodeStatus, error) {
				return c.DrainNode(cmd.Context(), false)
			}),
	)

	flowCmd := &cobra.Command{Use: "flow", Short: "The flows of the datapath"}
	var lkVIP, lkSrc string
	var lkSport, lkDport uint16
	var lkSYN bool
	var lkPayload string
	lookup := &cobra.Command{
		Use:   "lookup --vip NAME --src IP --sport N [--dport N] [--syn] [--payload HEX]",
		Short: "Say where the next packet of a flow goes, and why (the datapath's own decision)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			if lkVIP == "" || lkSrc == "" {
				return errors.New("flow lookup: --vip and --src are required")
			}
			src, err := netip.ParseAddr(lkSrc)
			if err != nil {
				return fmt.Errorf("--src %q: not an IP address", lkSrc)
			}
			fq := control.FlowQuery{VIP: lkVIP, Src: netip.AddrPortFrom(src, lkSport), DstPort: lkDport, SYN: lkSYN}
			if lkPayload != "" {
				if fq.Payload, err = control.ParseCID(lkPayload); err != nil {
					return fmt.Errorf("--payload: %w", err)
				}
			}
			l, err := c.LookupFlow(cmd.Context(), fq)
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), l, func(tw *tabwriter.Writer) { flowTable(tw, l) })
		},
	}
	lookup.Flags().StringVar(&lkVIP, "vip", "", "VIP name")
	lookup.Flags().StringVar(&lkSrc, "src", "", "client address")
	lookup.Flags().Uint16Var(&lkSport, "sport", 0, "client port")
	lookup.Flags().Uint16Var(&lkDport, "dport", 0, "destination port (default: the VIP's port)")
	lookup.Flags().BoolVar(&lkSYN, "syn", false, "a TCP SYN (default: a packet in the middle of the flow)")
	lookup.Flags().StringVar(&lkPayload, "payload", "", "the start of the UDP payload in hex (for a QUIC VIP: the QUIC header whose connection ID routes it)")
	flowCmd.AddCommand(lookup)
	var trTenant, trFlags string
	trace := &cobra.Command{
		Use:   "trace [--tenant T] [--flags syn|ack|fin|rst] tcp|udp SRC_IP:PORT DST_IP:PORT",
		Short: "Run a hypothetical packet through the live stages and show each stage's input and decision",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			tq := control.TraceQuery{Tenant: trTenant, Proto: args[0], TCPFlags: trFlags}
			for i, ap := range []*netip.AddrPort{&tq.Src, &tq.Dst} {
				if *ap, err = netip.ParseAddrPort(args[1+i]); err != nil {
					return fmt.Errorf("%q: not IP:port ([IPv6]:port)", args[1+i])
				}
			}
			tr, err := c.TraceFlow(cmd.Context(), tq)
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), tr, func(tw *tabwriter.Writer) { traceTable(tw, tr) })
		},
	}
	trace.Flags().StringVar(&trTenant, "tenant", "", "the tenant the packet arrives from (default: the default tenant)")
	trace.Flags().StringVar(&trFlags, "flags", "", "TCP flags of the packet: syn (default), ack, fin or rst")
	flowCmd.AddCommand(trace)

	stats := &cobra.Command{
		Use:   "stats",
		Short: "Show the node's counters, drops by reason and the last apply",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			st, err := c.Stats(cmd.Context())
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) { statsTable(tw, st) })
		},
	}

	var file string
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Apply a configuration; a document that does not validate changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			if file == "" {
				return errors.New("apply: -f FILE is required (- for standard input)")
			}
			var doc []byte
			if file == "-" {
				doc, err = io.ReadAll(cmd.InOrStdin())
			} else {
				doc, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			res, err := c.Apply(cmd.Context(), doc)
			var ae *api.Error
			if errors.As(err, &ae) && len(ae.Problems) > 0 {
				if output == "json" {
					emit(cmd.OutOrStdout(), ae.ErrorBody, nil)
				} else {
					tw := tabwriter.NewWriter(cmd.ErrOrStderr(), 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "PATH\tVALUE\tREASON")
					for _, p := range ae.Problems {
						v := "-"
						if p.Value != nil {
							v = fmt.Sprint(p.Value)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Path, v, p.Reason)
					}
					tw.Flush()
				}
				return fmt.Errorf("%s: configuration rejected (%d problems); the running one is unchanged", file, len(ae.Problems))
			}
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), res, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "applied\tgeneration %d\t%s\n", res.Generation, res.Time.Format(time.RFC3339))
			})
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "YAML configuration file (- for standard input)")

	cfg := &cobra.Command{Use: "config", Short: "The running configuration"}
	cfg.AddCommand(&cobra.Command{
		Use:   "get",
		Short: "Print the running configuration (YAML, defaults filled in, secrets shown as " + config.Redacted + ": apply keeps the running ones)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			b, err := c.Config(cmd.Context())
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	})

	cmd.AddCommand(vip, backend, nodeCmd, flowCmd, stats, apply, cfg, newCtlQUICCmd(client, emit), newCtlClusterCmd(client, emit), newCtlCaptureCmd(client), newCtlL2Cmd(client, emit), newCtlFastpathCmd(client, emit))
	return cmd
}

func nodeTable(tw *tabwriter.Writer, st control.NodeStatus) {
	state := "in service"
	if st.Draining {
		state = "drained"
	}
	fmt.Fprintf(tw, "node\t%s\n", state)
	var anns []string
	for _, p := range st.Announced {
		if nh, ok := st.NextHops[p]; ok {
			p += " (next hop " + nh + ": bypass)"
		}
		anns = append(anns, p)
	}
	ann := strings.Join(anns, " ")
	if ann == "" {
		ann = "-"
	}
	fmt.Fprintf(tw, "announced\t%s\n", ann)
	if len(st.Peers) == 0 {
		return
	}
	fmt.Fprintln(tw, "\nPEER\tASN\tSTATE\tUPTIME\tRESETS\tADVERTISED\tBFD")
	for _, p := range st.Peers {
		bfd := "off"
		if p.BFD {
			bfd = p.BFDState
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", p.Address, p.ASN, p.State,
			time.Duration(p.Uptime*float64(time.Second)).Round(time.Second).String(), p.Resets, p.Advertised, bfd)
	}
}

func vipTable(tw *tabwriter.Writer, vips []control.VIPStatus) {
	fmt.Fprintln(tw, "VIP\tADDRESS\tPROTO\tPORTS\tTABLE\tBACKEND\tWEIGHT\tSTATE\tPACKETS\tBYTES")
	for _, v := range vips {
		fp := v.Fingerprint
		if fp == "" {
			fp = "-"
		}
		ports := "all"
		switch {
		case v.Port == 0 && v.PortEnd == 0:
		case v.PortEnd == v.Port:
			ports = fmt.Sprint(v.Port)
		default:
			ports = fmt.Sprintf("%d-%d", v.Port, v.PortEnd)
		}
		if len(v.Backends) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t-\t-\t-\t%d\t%d\n", v.Name, v.Address, v.Protocol, ports, fp, v.Packets, v.Bytes)
		}
		for _, b := range v.Backends {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\n",
				v.Name, v.Address, v.Protocol, ports, fp, b.Address, b.Weight, b.State, b.Packets, b.Bytes)
		}
	}
	firewallTable(tw, vips)
	bypassTable(tw, vips)
}

// bypassTable lists the VIP addresses with bypass single-backend: whether
// routers reach them through the LB nodes or straight at their backend.
func bypassTable(tw *tabwriter.Writer, vips []control.VIPStatus) {
	header := false
	seen := map[string]bool{}
	for _, v := range vips {
		b := v.Bypass
		if b == nil || seen[v.Address] {
			continue
		}
		seen[v.Address] = true
		if !header {
			fmt.Fprintln(tw, "\nBYPASS ADDRESS\tSTATE\tNEXT HOP\tSINCE\tENTERED\tLEFT\tWHY")
			header = true
		}
		nh := b.NextHop
		if nh == "" {
			nh = "LB nodes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", v.Address, b.State, nh, b.Since.Format(time.RFC3339), b.Entered, b.Left, b.Reason)
	}
}

// firewallTable lists the VIPs' firewall rules, in order, with their hits.
func firewallTable(tw *tabwriter.Writer, vips []control.VIPStatus) {
	header := false
	for _, v := range vips {
		f := v.Firewall
		if f == nil {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "\nFIREWALL VIP\tRULE\tACTION\tMATCH\tFLOWS")
			header = true
		}
		for _, r := range f.Rules {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", v.Name, r.Rule, r.Action, r.Match, r.Hits)
		}
		fmt.Fprintf(tw, "%s\tdefault\t%s\tany\t%d\n", v.Name, f.Default, f.DefaultHits)
	}
}

func traceTable(tw *tabwriter.Writer, tr control.FlowTrace) {
	flags := ""
	if tr.TCPFlags != "" {
		flags = " [" + tr.TCPFlags + "]"
	}
	if tr.Tenant != "" {
		flags += " in tenant " + tr.Tenant
	}
	fmt.Fprintf(tw, "packet\t%s %s -> %s%s (datapath generation %d)\n", tr.Protocol, tr.Src, tr.Dst, flags, tr.DatapathGeneration)
	for _, e := range tr.Entries {
		fmt.Fprintf(tw, "flow entry\tworker %d: %s, %s, generation %d, idle %dms\n", e.Worker, e.Backend, e.State, e.Generation, e.AgeMillis)
	}
	if tr.ShortCut {
		fmt.Fprintln(tw, "short cut\tyes: a current entry stands in for classify, firewall and balance")
	}
	fmt.Fprintln(tw, "\nSTAGE\tINPUT\tDECISION\tREASON")
	for _, s := range tr.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Stage, s.Input, s.Decision, s.Reason)
	}
	out := tr.Verdict
	switch {
	case tr.Reason != "":
		out += " (" + tr.Reason + ")"
	case tr.Backend != "":
		out += " to " + tr.Backend
		if tr.Secondary != "" {
			out += ", hop list [" + tr.Backend + ", " + tr.Secondary + "]"
		}
	}
	if tr.VIP != "" {
		out += ", vip " + tr.VIP
	}
	fmt.Fprintf(tw, "\nresult\t%s\n", out)
}

func flowTable(tw *tabwriter.Writer, l control.FlowLookup) {
	none := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintf(tw, "flow\t%s %s -> %s (vip %s)\n", l.Protocol, l.Src, l.Dst, l.VIP)
	if l.Secondary != "" {
		fmt.Fprintf(tw, "next packet\t%s, hop list [%s, %s]\t(%s)\n", none(l.Backend), l.Backend, l.Secondary, l.Reason)
	} else {
		fmt.Fprintf(tw, "next packet\t%s\t(%s)\n", none(l.Backend), l.Reason)
	}
	fmt.Fprintf(tw, "why\t%s\n", l.Detail)
	fmt.Fprintf(tw, "maglev slot\t%d\towner %s, previous %s\n", l.Slot, none(l.MaglevOwner), none(l.MaglevPrevious))
	fmt.Fprintf(tw, "hash\t%#016x\tdatapath generation %d\n", l.Hash, l.DatapathGeneration)
	if !l.FlowTables {
		fmt.Fprintln(tw, "flow entries\tnot available")
		return
	}
	if len(l.Entries) == 0 {
		fmt.Fprintln(tw, "flow entries\tnone")
		return
	}
	fmt.Fprintln(tw, "\nWORKER\tBACKEND\tSTATE\tAGE\tGENERATION\tNOTE")
	for _, e := range l.Entries {
		note := ""
		if !e.InService {
			note = "backend left the service"
		}
		if e.Expired {
			note = strings.TrimPrefix(note+"; expired", "; ")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%d\t%s\n", e.Worker, none(e.Backend), e.State,
			time.Duration(e.AgeMillis)*time.Millisecond, e.Generation, none(note))
	}
}

// offloadLine summarises the XDP offload's counters.
func offloadLine(o control.OffloadStats) string {
	if !o.Enabled {
		return "off"
	}
	return fmt.Sprintf("%d forwarded in the kernel, %d installed, %d deleted, %d ring full, %d errors",
		o.Forwarded, o.Installed, o.Deleted, o.RingFull, o.Errors)
}

func statsTable(tw *tabwriter.Writer, st control.Stats) {
	last := "none since start"
	if !st.LastApply.Time.IsZero() {
		last = "ok"
		if !st.LastApply.OK {
			last = "failed: " + st.LastApply.Error
		}
		last = st.LastApply.Time.Format(time.RFC3339) + " " + last
	}
	for _, r := range []struct {
		k string
		v any
	}{
		{"config generation", st.ConfigGeneration},
		{"datapath generation", st.DatapathGeneration},
		{"last apply", last},
		{"rx packets", st.RxPackets}, {"rx bytes", st.RxBytes},
		{"tx packets", st.TxPackets}, {"tx bytes", st.TxBytes}, {"tx errors", st.TxErrors},
		{"passed", st.Passed},
		{"flow hits", st.FlowHits}, {"flow misses", st.FlowMisses}, {"flows reaped", st.Reaped},
		{"icmp too big sent", st.TooBigAnswered},
		{"kernel tx", st.Spilled}, {"kernel tx errors", st.SpillErrors},
		{"fragments followed", st.Fragments.Followed}, {"fragments held", st.Fragments.Held},
		{"fragments released", st.Fragments.Released},
		{"fragments to owner", st.Fragments.ToOwner}, {"fragment decisions", st.Fragments.Decisions},
		{"fragment relay in", fmt.Sprintf("%d fragments, %d decisions, %d rejected",
			st.Fragments.RelayFragments, st.Fragments.RelayDecisions, st.Fragments.RelayRejected)},
		{"nat translated", st.NAT.Translated}, {"nat replies", st.NAT.Replies},
		{"nat icmp to client", st.NAT.ICMPToClient}, {"nat icmp to backend", st.NAT.ICMPToBackend},
		{"nat ports in use", fmt.Sprintf("%d of %d", st.NAT.PortsInUse, st.NAT.PortsCapacity)},
		{"nat ports exhausted", st.NAT.Exhausted},
		{"offload", offloadLine(st.Offload)},
	} {
		fmt.Fprintf(tw, "%s\t%v\n", r.k, r.v)
	}
	if st.Offload.Enabled {
		fmt.Fprintln(tw, "\nOFFLOAD PASSED TO WORKERS\tPACKETS")
		for _, k := range sortedKeys(st.Offload.Passed) {
			fmt.Fprintf(tw, "%s\t%d\n", k, st.Offload.Passed[k])
		}
	}
	fmt.Fprintln(tw, "\nDROP REASON\tPACKETS")
	for _, k := range sortedKeys(st.Drops) {
		fmt.Fprintf(tw, "%s\t%d\n", k, st.Drops[k])
	}
	for _, k := range sortedKeys(st.ParseDrops) {
		if st.ParseDrops[k] > 0 {
			fmt.Fprintf(tw, "parse/%s\t%d\n", k, st.ParseDrops[k])
		}
	}
	if len(st.FirewallRuleHits) > 0 {
		fmt.Fprintln(tw, "\nFIREWALL VIP\tRULE\tFLOWS")
		vips := make([]string, 0, len(st.FirewallRuleHits))
		for v := range st.FirewallRuleHits {
			vips = append(vips, v)
		}
		slices.Sort(vips)
		for _, v := range vips {
			for _, r := range sortedKeys(st.FirewallRuleHits[v]) {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", v, r, st.FirewallRuleHits[v][r])
			}
		}
	}
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
