package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/control/api"
	"github.com/sluicelb/sluice/internal/tuntap"
)

// newCtlCaptureCmd is `sluice ctl capture`.
func newCtlCaptureCmd(client func() (*api.Client, error)) *cobra.Command {
	var q control.CaptureQuery
	var out, iface string
	cmd := &cobra.Command{
		Use:   "capture [--proto P] [--host ADDR|PREFIX] [--port N] [--vip NAME] [--tenant T] [--where ingress|egress|both] [-c N] [--duration D] (-w FILE|- | --iface NAME)",
		Short: "Capture packets from inside the datapath, as received and as sent, to a pcapng file or a TAP interface",
		Long: `capture copies the packets the filter selects from the node's datapath, where the
kernel's packet taps cannot see them (AF_XDP takes them first): as received (ingress) and as
sent (egress: encapsulated, or rewritten by full-NAT), up to 2048 bytes of each frame. It
stops after -c packets or --duration, and reports how many copies the datapath dropped
because the reader was slow (never packets).

  sluice ctl capture --port 40000 -w flow.pcapng
  sluice ctl capture --vip web -c 100 -w - | tcpdump -nr -
  sluice ctl capture --vip web --iface sluice-mon0 &  tcpdump -ni sluice-mon0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (out == "") == (iface == "") {
				return fmt.Errorf("give -w FILE (- for standard output) or --iface NAME")
			}
			c, err := client()
			if err != nil {
				return err
			}
			c.HTTP.Timeout = 0 // the capture's own bounds end it
			var w io.Writer
			var done chan error
			var tapped int
			switch {
			case out == "-":
				w = cmd.OutOrStdout()
			case out != "":
				// Created at the first byte: a capture the node refuses
				// leaves an existing file as it was.
				f := &lazyFile{name: out}
				defer f.Close()
				w = f
			default:
				pr, pw := io.Pipe()
				defer pw.Close()
				w, done = pw, make(chan error, 1)
				go func() {
					n, err := tuntap.PcapToTAP(cmd.Context(), pr, iface)
					tapped = n
					pr.CloseWithError(err)
					done <- err
				}()
				fmt.Fprintf(cmd.ErrOrStderr(), "writing the capture to %s (tcpdump -ni %s)\n", iface, iface)
			}
			res, err := c.Capture(cmd.Context(), q, w)
			if done != nil {
				w.(*io.PipeWriter).Close()
				if terr := <-done; err == nil {
					err = terr
				}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d packets captured; %d copies dropped in the datapath (slow reader)\n", res.Packets, res.Dropped)
			if done != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d written to %s\n", tapped, iface)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Proto, "proto", "", "tcp, udp or icmp (default any)")
	f.StringVar(&q.Host, "host", "", "an address or prefix: the source or the destination")
	f.IntVar(&q.Port, "port", 0, "the source or the destination port")
	f.StringVar(&q.VIP, "vip", "", "a VIP's name: the packets to it")
	f.StringVar(&q.Tenant, "tenant", "", "a tenant's name: its packets only")
	f.StringVar(&q.Where, "where", "both", "ingress (as received), egress (as sent) or both")
	f.IntVarP(&q.Count, "count", "c", 1000, fmt.Sprintf("stop after this many packets (at most %d)", control.MaxCaptureCount))
	f.DurationVar(&q.Duration, "duration", 0, fmt.Sprintf("stop after this long (default 10s, at most %v)", control.MaxCaptureDuration))
	f.StringVarP(&out, "write", "w", "", "write pcapng to this file (- : standard output)")
	f.StringVar(&iface, "iface", "", "write the packets to a TAP interface of this name, created for the capture")
	return cmd
}

// lazyFile is a file created (or truncated) at the first Write.
type lazyFile struct {
	name string
	f    *os.File
}

func (l *lazyFile) Write(b []byte) (int, error) {
	if l.f == nil {
		f, err := os.Create(l.name)
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	return l.f.Write(b)
}

// Close closes the file if it was created.
func (l *lazyFile) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
