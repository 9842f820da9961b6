package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/quiclb"
)

// newCtlQUICCmd is `sluice ctl quic`: QUIC-LB connection IDs, decoded
// offline from the parameters given, or by a node with a VIP's.
func newCtlQUICCmd(client func() (*api.Client, error), emit func(io.Writer, any, func(*tabwriter.Writer)) error) *cobra.Command {
	cmd := &cobra.Command{Use: "quic", Short: "QUIC-LB connection IDs (QUIC VIPs route by them)"}
	var (
		vip                string
		sidLen, nonceLen   int
		key                string
		lenEncoded         bool
		rotation           int
		offlineFlagsNeeded = []string{"sid-len", "nonce-len"}
	)
	decode := &cobra.Command{
		Use:   "decode {--vip NAME | --sid-len N --nonce-len M [--key HEX32] [--len-encoded] [--rotation C]} CIDHEX",
		Short: "Decode a connection ID: config rotation, server ID, nonce (and, with --vip, the backend)",
		Long: `decode reads a QUIC-LB connection ID (hex, colons allowed) and prints
  config_rotation=C server_id=HEX nonce=HEX
Offline it needs the QUIC-LB parameters the servers use (--sid-len, --nonce-len, and --key
for encrypted IDs); --rotation, when given, must match the ID's codepoint. With --vip the
node decodes it with that VIP's configuration and adds backend=ADDR (none: no backend has
the server ID, and the datapath routes the packets by a fallback). A connection ID that does
not decode (unroutable codepoint 0b111, another config rotation, wrong length) is an error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cid, err := control.ParseCID(args[0])
			if err != nil {
				return fmt.Errorf("quic decode: %w", err)
			}
			f := cmd.Flags()
			offline := false
			for _, name := range []string{"sid-len", "nonce-len", "key", "len-encoded", "rotation"} {
				offline = offline || f.Changed(name)
			}
			var d control.CIDDecode
			switch {
			case vip != "" && offline:
				return errors.New("quic decode: --vip takes the configuration from the node; --sid-len, --nonce-len, --key, --len-encoded and --rotation are for an offline decode")
			case vip != "":
				c, err := client()
				if err != nil {
					return err
				}
				if d, err = c.DecodeQUICCID(cmd.Context(), vip, args[0]); err != nil {
					return fmt.Errorf("quic decode: %w", err)
				}
			default:
				for _, name := range offlineFlagsNeeded {
					if !f.Changed(name) {
						return fmt.Errorf("quic decode: --%s is required (or --vip NAME to ask the node)", name)
					}
				}
				cfg := quiclb.Config{ServerIDLen: sidLen, NonceLen: nonceLen, LenSelfEncoded: lenEncoded}
				if key != "" {
					if cfg.Key, err = hex.DecodeString(key); err != nil || len(cfg.Key) != quiclb.KeyLen {
						return fmt.Errorf("quic decode: --key is not %d hex digits", 2*quiclb.KeyLen)
					}
				}
				// Without --rotation the CID's own codepoint is the
				// configuration's (the unroutable one, 7, fails below).
				r := int(quiclb.Rotation(cid))
				if f.Changed("rotation") {
					r = rotation
				} else if r > quiclb.MaxRotation {
					r = 0
				}
				if r < 0 || r > quiclb.MaxRotation {
					return fmt.Errorf("quic decode: --rotation %d is not between 0 and %d", r, quiclb.MaxRotation)
				}
				cfg.Rotation = uint8(r)
				codec, err := quiclb.New(cfg)
				if err != nil {
					return fmt.Errorf("quic decode: %w", err)
				}
				if d, err = control.DecodeCID(codec, cid); err != nil {
					return fmt.Errorf("quic decode: %w", err)
				}
			}
			return emit(cmd.OutOrStdout(), d, func(tw *tabwriter.Writer) { fmt.Fprintln(tw, d.String()) })
		},
	}
	f := decode.Flags()
	f.StringVar(&vip, "vip", "", "ask the node: decode with this VIP's QUIC-LB configuration and name the backend")
	f.IntVar(&sidLen, "sid-len", 0, "server ID length in octets (offline)")
	f.IntVar(&nonceLen, "nonce-len", 0, "nonce length in octets (offline)")
	f.StringVar(&key, "key", "", "AES-128 key, 32 hex digits (offline; none: plaintext)")
	f.BoolVar(&lenEncoded, "len-encoded", false, "the first octet encodes the length (offline)")
	f.IntVar(&rotation, "rotation", 0, "config rotation codepoint 0..6 (offline; default the CID's)")
	cmd.AddCommand(decode)
	return cmd
}
