package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/vishvananda/netlink"
)

// RouterASN is the router's AS number in the lab; LB nodes peer with it
// from LBASN.
const (
	RouterASN = 65000
	LBASN     = 65001
)

// BIRDOptions configure the router's BGP daemon.
type BIRDOptions struct {
	Dir string // where the configuration and control socket go (required)
	// BFD turns on BFD for every session (100 ms x 3).
	BFD bool
	// HoldTime is the BGP hold time in seconds; default 9 (keepalive 3).
	HoldTime int
}

// BIRD is a BIRD 2 daemon running in the router namespace: one eBGP
// session per LB node, importing the VIP routes they announce and
// installing them in the kernel as ECMP routes (merge paths).
type BIRD struct {
	Proc   *Process
	Socket string
	Conf   string
	router *Node
}

var birdConf = template.Must(template.New("bird").Parse(`# Sluice lab router: eBGP with every LB node, ECMP into the kernel.
router id {{.RouterID}};
log stderr all;
protocol device { scan time 10; }
protocol kernel k4 { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }
protocol kernel k6 { ipv6 { import none; export where source = RTS_BGP; }; merge paths on; }
{{- if .BFD}}
protocol bfd {
	interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };
	# Static sessions outlive BGP resets, so their discriminators stay the
	# same: GoBGP's BFD stays bound to the first one it learnt.
	{{- range .Peers}}
	neighbor {{.Addr}};
	{{- end}}
}
{{- end}}
template bgp lbs {
	local {{.RouterID}} as {{.RouterASN}};
	hold time {{.Hold}};
	keepalive time {{.Keepalive}};
	connect retry time 1;
	error wait time 1, 5;
	{{- if .BFD}}
	bfd on;
	{{- end}}
	ipv4 { import all; export none; };
	ipv6 { import all; export none; };
}
{{- range .Peers}}
protocol bgp {{.Name}} from lbs { neighbor {{.Addr}} as {{$.LBASN}}; }
{{- end}}
`))

// StartBIRD writes the router's BIRD configuration, with one session per LB
// node, and starts BIRD in the router namespace. Stop it with Stop (Down
// stops it too).
func (l *Lab) StartBIRD(ctx context.Context, o BIRDOptions) (*BIRD, error) {
	if o.HoldTime == 0 {
		o.HoldTime = 9
	}
	type peer struct {
		Name string
		Addr netip.Addr
	}
	data := struct {
		RouterID         netip.Addr
		RouterASN, LBASN int
		Hold, Keepalive  int
		BFD              bool
		Peers            []peer
	}{
		RouterID: l.Router.Iface(routerSvcIf).Addrs[0].Addr(), RouterASN: RouterASN, LBASN: LBASN,
		Hold: o.HoldTime, Keepalive: max(1, o.HoldTime/3), BFD: o.BFD,
	}
	for _, lb := range l.LBs {
		data.Peers = append(data.Peers, peer{strings.TrimPrefix(lb.Name, l.Cfg.Prefix), lb.Addr4})
	}
	var b strings.Builder
	if err := birdConf.Execute(&b, data); err != nil {
		return nil, err
	}
	bd := &BIRD{Conf: filepath.Join(o.Dir, "bird.conf"), Socket: filepath.Join(o.Dir, "bird.ctl"), router: l.Router}
	if err := os.WriteFile(bd.Conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p, err := l.Router.Start(ctx, "bird", "-f", "-c", bd.Conf, "-s", bd.Socket)
	if err != nil {
		return nil, fmt.Errorf("lab: bird: %w (is bird2 installed? make deps)", err)
	}
	bd.Proc = p
	// Wait for the control socket.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := bd.Command(ctx, "show", "status"); err == nil {
			return bd, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("lab: bird exited: %v\n%s", p.Wait(), p.Output())
		default:
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("lab: bird did not answer on %s\n%s", bd.Socket, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command runs a birdc command and returns its output.
func (b *BIRD) Command(ctx context.Context, args ...string) (string, error) {
	return b.router.Run(ctx, "birdc", append([]string{"-s", b.Socket}, args...)...)
}

// Stop stops BIRD.
func (b *BIRD) Stop() error { return b.Proc.Stop() }

// VIPNextHops returns the next hops of the router's kernel route to vip
// (none when there is no route): the LB nodes ECMP spreads it over. It
// reads the route over netlink, cheap enough to poll.
func (l *Lab) VIPNextHops(_ context.Context, vip netip.Addr) ([]netip.Addr, error) {
	var h *netlink.Handle
	err := l.Router.Do(func() error {
		var err error
		h, err = netlink.NewHandle()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s: netlink: %w", l.Router.Name, err)
	}
	defer h.Close()
	fam := netlink.FAMILY_V4
	if vip.Is6() {
		fam = netlink.FAMILY_V6
	}
	dst := &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}
	routes, err := h.RouteListFiltered(fam, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		return nil, fmt.Errorf("lab: route to %v: %w", vip, err)
	}
	var hops []netip.Addr
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			hops = append(hops, a.Unmap())
		}
	}
	for _, r := range routes {
		if r.Gw != nil {
			add(r.Gw)
		}
		for _, nh := range r.MultiPath {
			add(nh.Gw)
		}
	}
	return hops, nil
}
