package main

import (
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/lab"
	"github.com/sluicelb/sluice/internal/quiclb"
)

// newLabQUICServeCmd is `sluice lab quic-serve`: the QUIC echo server a
// lab backend runs, issuing QUIC-LB connection IDs with its server ID.
func newLabQUICServeCmd() *cobra.Command {
	var (
		name, sid, key       string
		listen               []string
		sidLen, nonceLen     int
		rotation             int
		lenEncoded, noQUICLB bool
	)
	cmd := &cobra.Command{
		Use:    "quic-serve --sid HEX [--sid-len N --nonce-len M --key HEX32 --rotation C --len-encoded]",
		Short:  "Echo QUIC stream lines with --name, issuing QUIC-LB connection IDs (a lab backend's server)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := lab.QUICServer{Addrs: listen, Name: name}
			if !noQUICLB {
				if sid == "" {
					return fmt.Errorf("--sid is required (or --no-quic-lb)")
				}
				cfg := quiclb.Config{Rotation: uint8(rotation), ServerIDLen: sidLen, NonceLen: nonceLen, LenSelfEncoded: lenEncoded}
				if rotation < 0 || rotation > quiclb.MaxRotation {
					return fmt.Errorf("--rotation %d is not between 0 and %d", rotation, quiclb.MaxRotation)
				}
				if key != "" {
					k, err := hex.DecodeString(key)
					if err != nil {
						return fmt.Errorf("--key: %w", err)
					}
					cfg.Key = k
				}
				codec, err := quiclb.New(cfg)
				if err != nil {
					return err
				}
				if s.ServerID, err = quiclb.ParseServerID(sid); err != nil {
					return fmt.Errorf("--sid %q: %w", sid, err)
				}
				s.Codec = codec
			}
			ctx, stop := labSignalContext(cmd)
			defer stop()
			return lab.ServeQUIC(ctx, s)
		},
	}
	labServeFlags(cmd, &name, &listen, "198.18.0.10:4433")
	f := cmd.Flags()
	f.StringVar(&sid, "sid", "", "server ID in hex (the backend's server_id)")
	f.IntVar(&sidLen, "sid-len", config.DefaultQUICServerIDLen, "server ID length in octets")
	f.IntVar(&nonceLen, "nonce-len", config.DefaultQUICNonceLen, "nonce length in octets")
	f.StringVar(&key, "key", "", "AES-128 key, 32 hex digits (none: plaintext server IDs)")
	f.IntVar(&rotation, "rotation", 0, "config rotation codepoint 0..6")
	f.BoolVar(&lenEncoded, "len-encoded", false, "encode the length in the first octet")
	f.BoolVar(&noQUICLB, "no-quic-lb", false, "issue quic-go's random connection IDs instead (not routable by the load balancer)")
	return cmd
}
