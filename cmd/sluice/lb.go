package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/announce"
	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/lbnode"
	"github.com/sluicelb/sluice/internal/link"
	"github.com/sluicelb/sluice/internal/link/afpacket"
)

func newLBCmd() *cobra.Command {
	var path, level, adminAddr, adminToken string
	var check bool
	cmd := &cobra.Command{
		Use:   "lb --config FILE",
		Short: "Run an LB node: forward VIP traffic to backends, GUE-encapsulated",
		Long: `lb runs a Sluice load balancer node from a YAML configuration (see docs/config.md and
examples/lb.yaml). It captures VIP traffic on the configured interfaces (AF_XDP, or
AF_PACKET as the fallback), picks a backend by weighted Maglev, and sends the packet
GUE-encapsulated to the backend's agent. Counters per VIP, backend and drop reason are
printed on SIGUSR1 and at exit. SIGHUP re-reads the configuration and applies
it without stopping the workers; a configuration that does not validate is
rejected and the running one keeps serving.

With --check it only validates the file, as a reload would, and exits: 0 with a
one-line summary, or non-zero with every problem. It opens no interface and needs
no privileges, so it does not check what needs the node's network (the
interfaces, next hops, source addresses) or the running node (changes that
need a restart).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if check {
				r, err := lbnode.CheckFile(path)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), r)
				return nil
			}
			log, err := newLogger(level)
			if err != nil {
				return err
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			var spk *announce.Speaker
			if g := cfg.Node.BGP; g != nil {
				if spk, err = announce.New(bgpConfig(g), log); err != nil {
					return fmt.Errorf("node.bgp: %w", err)
				}
			}
			announceFn := func(p []netip.Prefix) {
				if spk == nil {
					return
				}
				if err := spk.Set(p); err != nil {
					log.Error("bgp: announcement set refused", "err", err)
				}
			}
			node, err := lbnode.New(lbnode.Options{Config: cfg, Log: log, Open: opener(cfg, log), Announce: announceFn})
			if err != nil {
				return err
			}
			if adminToken == "" {
				adminToken = os.Getenv("SLUICE_TOKEN")
			}
			if adminAddr == "" {
				adminAddr = cfg.Node.AdminAddr
			}
			ctl := control.New(withPeers{node, spk})
			srv, err := api.Listen(adminAddr, adminToken, api.Handler(ctl))
			if err != nil {
				return fmt.Errorf("admin API: %w", err)
			}
			defer srv.Close()
			log.Info("admin API listening", "addr", srv.Addr)
			go ctl.Run(cmd.Context(), log) // completes second-chance backend transitions
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			defer signal.Stop(usr1)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-usr1:
						node.Report(cmd.OutOrStdout())
					case <-hup:
						reload(ctx, ctl, path, log)
					case <-ctx.Done():
						return
					}
				}
			}()
			// Without BGP the datapath stops on the signal. With it, the
			// datapath outlives the signal: on SIGTERM the speaker withdraws
			// the routes first, and the node keeps forwarding for
			// node.bgp.shutdown_grace while the routers move the flows.
			parent := ctx
			if spk != nil {
				parent = context.Background()
			}
			dpCtx, stopDP := context.WithCancel(parent)
			defer stopDP()
			bgpErr := make(chan error, 1)
			if spk != nil {
				bgpCtx, stopBGP := context.WithCancel(context.Background())
				bgpDone := make(chan error, 1)
				go func() { bgpDone <- spk.Run(bgpCtx) }()
				go func() {
					select {
					case <-ctx.Done():
						stopBGP()
						<-bgpDone
						grace := cfg.Node.BGP.ShutdownGrace
						log.Info("bgp: routes withdrawn; forwarding until the routers moved the flows", "grace", grace)
						select {
						case <-time.After(grace):
						case <-dpCtx.Done():
						}
					case err := <-bgpDone:
						stopBGP()
						if err != nil {
							bgpErr <- fmt.Errorf("bgp: %w", err)
						}
					case <-dpCtx.Done():
						stopBGP()
						<-bgpDone
					}
					stopDP()
				}()
			}
			log.Info("forwarding", "vips", len(cfg.VIPs), "interfaces", cfg.Node.Interfaces)
			err = node.Run(dpCtx)
			stopDP()
			node.Report(cmd.OutOrStdout())
			select {
			case berr := <-bgpErr:
				return errors.Join(err, berr)
			default:
			}
			return err
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "node configuration (YAML)")
	cmd.Flags().StringVar(&level, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&adminAddr, "admin-addr", "", "admin API and /metrics address, overriding node.admin_addr (default 127.0.0.1:6090; a token is required unless it is loopback)")
	cmd.Flags().StringVar(&adminToken, "admin-token", "", "bearer token for the admin API (default $SLUICE_TOKEN)")
	cmd.Flags().BoolVar(&check, "check", false, "validate the configuration as a reload would, print a summary and exit (no interface is touched; no root needed)")
	cmd.MarkFlagRequired("config")
	return cmd
}

// bgpConfig is the speaker's configuration from node.bgp (validated).
func bgpConfig(g *config.BGP) announce.Config {
	c := announce.Config{ASN: g.ASN, RouterID: netip.MustParseAddr(g.RouterID), Communities: g.Communities}
	if g.NextHopV4 != "" {
		c.NextHop4 = netip.MustParseAddr(g.NextHopV4)
	}
	if g.NextHopV6 != "" {
		c.NextHop6 = netip.MustParseAddr(g.NextHopV6)
	}
	for _, p := range g.Peers {
		ap := announce.Peer{Address: netip.MustParseAddr(p.Address), ASN: p.ASN, Port: uint16(p.Port),
			HoldTime: p.HoldTime, KeepaliveTime: p.Keepalive, ConnectRetry: p.ConnectRetry}
		if b := p.BFD; b != nil {
			ap.BFD = &announce.BFD{MinRx: b.MinRx, MinTx: b.MinTx, Multiplier: b.Multiplier}
		}
		c.Peers = append(c.Peers, ap)
	}
	return c
}

// withPeers is the LB node as the control server sees it: with the BGP
// speaker's peers when there is one.
type withPeers struct {
	*lbnode.Node
	spk *announce.Speaker
}

func (w withPeers) Peers() []announce.PeerStatus {
	if w.spk == nil {
		return nil
	}
	return w.spk.Peers()
}

// reload re-reads the configuration file and applies it through the same
// path as the admin API (so it counts as a generation and an apply result);
// a file that does not parse or validate, or a change that needs a restart,
// is logged and changes nothing.
func reload(ctx context.Context, ctl *control.Server, path string, log *slog.Logger) {
	doc, err := os.ReadFile(path)
	if err == nil {
		_, err = ctl.PutConfig(ctx, doc)
	}
	if err != nil {
		log.Error("reload rejected; the running configuration stays", "config", path, "err", err)
		return
	}
	log.Info("reload applied", "config", path)
}

// opener opens links according to node.io: afxdp, afpacket, or auto (AF_XDP,
// falling back to AF_PACKET with the reason logged).
func opener(cfg *config.Config, log *slog.Logger) lbnode.Opener {
	return func(ifname string, queue int, vips []netip.Addr) (link.Link, string, error) {
		switch cfg.Node.IO {
		case "afxdp":
			return openXDP(ifname, queue, vips, cfg.Node.XDPMode)
		case "auto":
			l, desc, err := openXDP(ifname, queue, vips, cfg.Node.XDPMode)
			if err == nil {
				return l, desc, nil
			}
			log.Warn("AF_XDP unavailable, falling back to AF_PACKET", "interface", ifname, "reason", err)
		}
		if queue > 0 {
			return nil, "", fmt.Errorf("afpacket runs one worker per interface (node.workers is %d)", cfg.Node.Workers)
		}
		// The VIP filter is in place before the socket is bound: no other
		// frame reaches the datapath.
		l, err := afpacket.New(ifname, afpacket.Config{Filter: vips})
		if err != nil {
			return nil, "", err
		}
		return l, "afpacket", nil
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
