package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/lbnode"
)

func newLBCmd() *cobra.Command {
	var path, level, adminAddr, adminToken string
	var check bool
	cmd := &cobra.Command{
		Use:   "lb --config FILE",
		Short: "Run an LB node: forward VIP traffic to backends, GUE-encapsulated",
		Long:  lbHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if check {
				r, err := lbnode.CheckFile(path)
				if err == nil {
					fmt.Fprintln(cmd.OutOrStdout(), r)
				}
				return err
			}
			log, err := newLogger(level)
			if err != nil {
				return err
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			node, err := lbnode.New(lbnode.Options{Config: cfg, Log: log})
			if err != nil {
				return err
			}
			ctl := control.New(node)
			srv, err := api.Listen(orDefault(adminAddr, cfg.Node.AdminAddr), orDefault(adminToken, os.Getenv("SLUICE_TOKEN")), api.Handler(ctl))
			if err != nil {
				return fmt.Errorf("admin API: %w", err)
			}
			defer srv.Close()
			log.Info("admin API listening", "addr", srv.Addr)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go ctl.Run(ctx, log) // completes second-chance backend transitions
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGHUP)
			defer signal.Stop(sigs)
			go func() {
				for {
					select {
					case s := <-sigs:
						if s == syscall.SIGUSR1 {
							node.Report(cmd.OutOrStdout())
						} else if _, err := ctl.ApplyFile(ctx, path); err != nil {
							log.Error("reload rejected; the running configuration stays", "config", path, "err", err)
						} else {
							log.Info("reload applied", "config", path)
						}
					case <-ctx.Done():
						return
					}
				}
			}()
			err = node.Run(ctx)
			node.Report(cmd.OutOrStdout())
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

// The node captures from its datapath (sluice ctl capture).
var _ control.Capturer = (*lbnode.Node)(nil)
