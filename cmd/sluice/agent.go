package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/agent"
	agentmetrics "github.com/sluicelb/sluice/internal/agent/metrics"
	"github.com/sluicelb/sluice/internal/fastpath"
)

func newAgentCmd() *cobra.Command {
	var (
		listen, tun, level string
		vips               []string
		batch              int
		acceptLocal        bool
		udpPolicy          string
		hopPrefixes        []string
		lbPrefixes         []string
		acceptAnySource    bool
		hopPort            uint16
		flowTable          int
		flowIdle           time.Duration
		metricsAddr        string
		metricsToken       string
		fpIface, fpKeyFile string
		fpBackends         []string
		fpClients          []string
		fpIdle             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: decapsulate GUE on backends, fastpath on client hosts",
		Long: `agent runs on each backend. It receives the GUE packets the Sluice LB nodes send
(UDP, --listen), validates them and writes the inner IP packet to a TUN device
(--tun); the kernel delivers it to the local socket on the VIP and the reply goes
from the VIP straight to the client (direct server return). Only inner packets
addressed to a --vip are delivered; everything else is dropped and counted.

Trust: GUE and VIP probes are accepted only from --lb-prefix (the LB nodes'
addresses), and packets that another agent forwarded (second chance) only
from --hop-prefix (the backends' network); anything else is dropped before it
is parsed and counted as rejected_source. At least one --lb-prefix is
required; --accept-any-source turns the check off, for labs only.

Fastpath has two roles. On a backend, --fastpath-client-prefix lists the client
hosts that encapsulate their flows to it themselves: GUE data packets as an LB
node sends them are also accepted from those sources (VIP probes, fastpath
messages and forwarded packets are not). On a client host, --fastpath IFACE
attaches the egress program to the uplink IFACE: an LB node sends the agent a
redirect for an established flow of this host, and the host then sends that
flow's packets straight to the backend. Redirects and cancels are taken only
from --lb-prefix, must carry the key of --fastpath-key-file (shared with the LB
nodes), must name a client address of this host, and may only point into
--fastpath-backend-prefix; anything else is refused and counted. A client host
needs no --vip (it then creates no TUN device); a host may be both. If the
agent stops, every flow goes through the LB nodes again.

At start it creates the TUN device, turns reverse-path filtering off for it
(net.ipv4.conf.all.rp_filter too, after raising the other interfaces' own
values so they filter as before), and adds each VIP to lo. At exit it undoes
all of it.

Needs CAP_NET_ADMIN (no root otherwise) and read/write access to /dev/net/tun.
Counters are logged on SIGUSR1 and at exit (SIGINT, SIGTERM).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
			c := agent.Config{TUN: tun, Batch: batch, AcceptLocal: acceptLocal, Logger: log,
				UDPPolicy: agent.UDPPolicy(udpPolicy), HopPort: hopPort, FlowTable: flowTable, FlowIdle: flowIdle,
				AcceptAnySource: acceptAnySource}
			var err error
			if c.HopPrefixes, err = parsePrefixes("--hop-prefix", hopPrefixes); err != nil {
				return err
			}
			if c.LBPrefixes, err = parsePrefixes("--lb-prefix", lbPrefixes); err != nil {
				return err
			}
			if c.FastpathClients, err = parsePrefixes("--fastpath-client-prefix", fpClients); err != nil {
				return err
			}
			if c.Fastpath, err = fastpathFlags(cmd, fpIface, fpKeyFile, fpBackends, fpIdle); err != nil {
				return err
			}
			if c.Fastpath != nil && acceptAnySource {
				return errors.New("--fastpath cannot be combined with --accept-any-source: redirects are taken only from --lb-prefix")
			}
			switch {
			case acceptAnySource && len(lbPrefixes) > 0:
				return errors.New("--accept-any-source cannot be combined with --lb-prefix")
			case !acceptAnySource && len(lbPrefixes) == 0:
				return errors.New("--lb-prefix: at least one is required: the LB nodes' source addresses, " +
					"the only senders of GUE and VIP probes the agent accepts (--accept-any-source accepts anyone, for labs only)")
			}
			if c.Listen, err = parseListen(listen); err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			for _, v := range vips {
				a, err := netip.ParseAddr(v)
				if err != nil {
					return fmt.Errorf("--vip: %w", err)
				}
				c.VIPs = append(c.VIPs, a)
			}
			if len(c.VIPs) == 0 && c.Fastpath == nil {
				return fmt.Errorf("--vip: at least one VIP is required (unless --fastpath: a client host only)")
			}
			if metricsToken == "" {
				metricsToken = os.Getenv("SLUICE_METRICS_TOKEN")
			}
			return runAgent(cmd.Context(), c, log, metricsAddr, metricsToken)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", agent.DefaultListen.String(),
		"UDP address for GUE (0.0.0.0 or [::]: one dual-stack socket); a bare :PORT listens on all addresses")
	f.StringVar(&tun, "tun", agent.DefaultTUN, "name of the TUN device to create")
	f.StringArrayVar(&vips, "vip", nil, "virtual IP served by this backend, added to lo (repeatable)")
	f.IntVar(&batch, "batch", agent.DefaultBatch, "datagrams read per recvmmsg call")
	f.BoolVar(&acceptLocal, "accept-local", false, "accept inner packets whose source is an address of this host")
	f.StringVar(&udpPolicy, "udp-policy", string(agent.UDPLocal), "UDP packets with a hop list: local (always deliver) or second-chance (deliver if a connected socket has the 4-tuple, else forward)")
	f.StringArrayVar(&lbPrefixes, "lb-prefix", nil, "accept GUE and VIP probes only from sources in this prefix (repeatable; at least one, unless --accept-any-source): the LB nodes' addresses")
	f.StringArrayVar(&hopPrefixes, "hop-prefix", nil, "the backends' network (repeatable): accept packets forwarded by other agents (second chance) only from sources in it, and forward only to hops in it (default: accept none, forward anywhere)")
	f.BoolVar(&acceptAnySource, "accept-any-source", false, "accept GUE and VIP probes from any source (labs only: anyone who reaches the port can inject packets); not with --lb-prefix")
	f.Uint16Var(&hopPort, "hop-port", 0, "GUE port of the other backends' agents (0: this agent's port)")
	f.IntVar(&flowTable, "flow-table", agent.DefaultFlowTable, "connections the agent remembers delivering (second chance)")
	f.DurationVar(&flowIdle, "flow-idle", agent.DefaultFlowIdle, "how long an idle remembered connection is kept")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (/metrics; e.g. 127.0.0.1:6091; a token is required unless it is loopback); empty: off")
	f.StringVar(&metricsToken, "metrics-token", "", "bearer token every /metrics request must carry (default $SLUICE_METRICS_TOKEN; not the LB admin token: a scraper holding it could reconfigure a node)")
	f.StringArrayVar(&fpClients, "fastpath-client-prefix", nil, "backend role: also accept GUE data packets (not probes, not forwarded packets) from the fastpath client hosts in this prefix (repeatable)")
	f.StringVar(&fpIface, "fastpath", "", "client role: attach the fastpath egress program to this uplink interface and take redirects from the LB nodes (needs --fastpath-key-file, --fastpath-backend-prefix, --lb-prefix)")
	f.StringVar(&fpKeyFile, "fastpath-key-file", "", "file holding the fastpath key shared with the LB nodes (at least 16 bytes, whitespace trimmed; must not be accessible by others)")
	f.StringArrayVar(&fpBackends, "fastpath-backend-prefix", nil, "the backends' network: a redirect may only point inside it (repeatable; at least one with --fastpath)")
	f.DurationVar(&fpIdle, "fastpath-idle", agent.DefaultFastpathIdle, "a redirected flow that sent nothing this long goes through the LB nodes again")
	f.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// fastpathFlags builds the client role's config from the --fastpath flags
// (nil without --fastpath; the other flags then are an error).
func fastpathFlags(cmd *cobra.Command, iface, keyFile string, backends []string, idle time.Duration) (*agent.FastpathConfig, error) {
	if iface == "" {
		for _, name := range []string{"fastpath-key-file", "fastpath-backend-prefix", "fastpath-idle"} {
			if cmd.Flags().Changed(name) {
				return nil, fmt.Errorf("--%s needs --fastpath", name)
			}
		}
		return nil, nil
	}
	if keyFile == "" {
		return nil, errors.New("--fastpath-key-file is required with --fastpath: the key shared with the LB nodes")
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--fastpath-key-file: %w", err)
	}
	if len(backends) == 0 {
		return nil, errors.New("--fastpath-backend-prefix: at least one is required with --fastpath: the only addresses a redirect may point to")
	}
	c := &agent.FastpathConfig{Interface: iface, Key: key, Idle: idle}
	if c.BackendPrefixes, err = parsePrefixes("--fastpath-backend-prefix", backends); err != nil {
		return nil, err
	}
	return c, nil
}

// readKeyFile reads a shared key from path, whitespace trimmed. It refuses
// a file that group or others may access, and a key shorter than
// fastpath.MinKeyLen.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%s: mode %04o: a key file must not be accessible by group or others (chmod 600)", path, m)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, err
	}
	key := bytes.TrimSpace(b)
	if len(key) < fastpath.MinKeyLen {
		return nil, fmt.Errorf("%s: the key has %d bytes, at least %d are required", path, len(key), fastpath.MinKeyLen)
	}
	return key, nil
}

// parseListen accepts ADDR:PORT, [ADDR6]:PORT and :PORT (all addresses).
func parseListen(s string) (netip.AddrPort, error) {
	if p, ok := strings.CutPrefix(s, ":"); ok {
		s = "0.0.0.0:" + p
	}
	return netip.ParseAddrPort(s)
}

// parsePrefixes parses the values of a repeatable prefix flag.
func parsePrefixes(flag string, vals []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s %s: host bits set (did you mean %s?)", flag, v, p.Masked())
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func runAgent(ctx context.Context, c agent.Config, log *slog.Logger, metricsAddr, metricsToken string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	a, err := agent.New(c)
	if err != nil {
		return err
	}
	if metricsAddr != "" {
		srv, err := agentmetrics.Serve(metricsAddr, metricsToken, a.Counters, a)
		if err != nil {
			a.Close()
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer srv.Close()
		log.Info("metrics listening", "addr", srv.Addr, "token", metricsToken != "")
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var runErr error
loop:
	for {
		select {
		case <-usr1:
			logCounters(log, "counters", a.Counters())
		case runErr = <-done:
			break loop
		}
	}
	closeErr := a.Close()
	logCounters(log, "final counters", a.Counters())
	if runErr != nil {
		return runErr
	}
	return closeErr
}

// logCounters logs the totals and every nonzero counter.
func logCounters(log *slog.Logger, msg string, c agent.Counters) {
	attrs := []any{slog.Uint64("dropped", c.Dropped())}
	c.Each(func(name string, v uint64) {
		if v != 0 || !strings.HasPrefix(name, "drop_") {
			attrs = append(attrs, slog.Uint64(name, v))
		}
	})
	c.Probes.Each(func(name string, v uint64) {
		if v != 0 {
			attrs = append(attrs, slog.Uint64(name, v))
		}
	})
	c.Fastpath.Each(func(name string, v uint64) {
		if v != 0 {
			attrs = append(attrs, slog.Uint64(name, v))
		}
	})
	if c.Fastpath.Flows != 0 {
		attrs = append(attrs, slog.Uint64("fastpath_flows", c.Fastpath.Flows))
	}
	log.Info(msg, attrs...)
}
