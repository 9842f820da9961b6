package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// FRRDir is where the Debian package installs the FRR daemons.
const FRRDir = "/usr/lib/frr"

// FRROptions configure the router's FRR daemons.
type FRROptions struct {
	// Dir is where the daemons' directory (configuration, pid files, zebra
	// and vty sockets) goes (required). The daemons run as the frr user, so
	// the directories above Dir must be searchable by others (as /tmp is),
	// StartFRR makes Dir itself searchable (o+x), and the subdirectory it
	// creates belongs to frr.
	Dir string
	// BFD turns on BFD for every session (100 ms x 3).
	BFD bool
	// HoldTime is the BGP hold time in seconds; default 9 (keepalive 3).
	HoldTime int
}

// FRR is FRR (zebra, bfdd and bgpd) running in the router namespace, with
// its own configuration directory, pid files and sockets (nothing under
// /etc/frr or /var/run/frr; only FRR's compiled-in crash-log directory,
// /var/tmp/frr/<daemon>.<pid>, which a daemon removes when it exits): one
// eBGP session per LB node, installing the VIP routes they announce in the
// kernel as ECMP routes.
//
// With BFD, FRR 8.4 resets each node's first BGP session once at startup:
// bgpd registers the BFD session without local address and interface,
// re-registers it with both once BGP is up, bfdd replaces the session and
// GoBGP takes that for BFD Down. The static BFD sessions in the
// configuration, keyed as bgpd's end up, keep it to that one reset
// (docs/config.md has the measurements).
type FRR struct {
	Procs  []*Process // zebra, bfdd, bgpd
	Dir    string     // frr.conf, pid files, zserv.api, the vty sockets
	Conf   string     // the integrated configuration (frr.conf) vtysh loaded
	router *Node
}

// frrDaemons are the daemons the lab runs, in start order.
var frrDaemons = []string{"zebra", "bfdd", "bgpd"}

// frrConf is the router's configuration; docs/config.md shows it for three
// LB nodes.
var frrConf = template.Must(template.New("frr").Parse(`! Sluice lab router: eBGP with every LB node, ECMP into the kernel.
frr defaults traditional
hostname router
log stdout informational
service integrated-vtysh-config
!
{{- if .BFD}}
bfd
 profile lbs
  detect-multiplier 3
  receive-interval 100
  transmit-interval 100
 exit
 ! Static sessions with the key bgpd's sessions get once BGP is up.
{{- range .Peers}}
 peer {{.}} local-address {{$.RouterID}} interface {{$.Iface}}
  profile lbs
 exit
{{- end}}
exit
!
{{- end}}
router bgp {{.RouterASN}}
 bgp router-id {{.RouterID}}
 bgp log-neighbor-changes
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp bestpath as-path multipath-relax
 timers bgp {{.Keepalive}} {{.Hold}}
 neighbor lbs peer-group
 neighbor lbs remote-as {{.LBASN}}
 neighbor lbs timers connect 1
{{- if .BFD}}
 neighbor lbs bfd profile lbs
{{- end}}
{{- range .Peers}}
 neighbor {{.}} peer-group lbs
{{- end}}
 !
 address-family ipv4 unicast
  neighbor lbs activate
  maximum-paths 16
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor lbs activate
  maximum-paths 16
 exit-address-family
exit
!
`))

// FRRConfig returns the router's integrated FRR configuration (frr.conf)
// for the lab's LB nodes.
func (l *Lab) FRRConfig(o FRROptions) string {
	if o.HoldTime == 0 {
		o.HoldTime = 9
	}
	data := struct {
		RouterID         netip.Addr
		RouterASN, LBASN int
		Hold, Keepalive  int
		BFD              bool
		Iface            string
		Peers            []netip.Addr
	}{
		RouterID: l.Router.Iface(routerSvcIf).Addrs[0].Addr(), RouterASN: RouterASN, LBASN: LBASN, Iface: routerSvcIf,
		Hold: o.HoldTime, Keepalive: max(1, o.HoldTime/3), BFD: o.BFD,
	}
	for _, lb := range l.LBs {
		data.Peers = append(data.Peers, lb.Addr4)
	}
	var b strings.Builder
	if err := frrConf.Execute(&b, data); err != nil {
		panic(err) // the template and its data are fixed
	}
	return b.String()
}

// FRRMissing returns an error naming what is missing when the FRR daemons
// or vtysh are not installed.
func FRRMissing() error { return frrMissing(FRRDir, "/usr/bin/vtysh") }

func frrMissing(daemonDir, vtysh string) error {
	var missing []string
	for _, d := range frrDaemons {
		if _, err := os.Stat(filepath.Join(daemonDir, d)); err != nil {
			missing = append(missing, filepath.Join(daemonDir, d))
		}
	}
	if _, err := os.Stat(vtysh); err != nil {
		missing = append(missing, vtysh)
	}
	if _, err := user.Lookup("frr"); err != nil {
		missing = append(missing, "user frr")
	}
	if len(missing) > 0 {
		return fmt.Errorf("FRR is not installed (missing %s): run make deps (apt package frr)", strings.Join(missing, ", "))
	}
	return nil
}

// StartFRR writes the router's FRR configuration, with one session per LB
// node, starts zebra, bfdd and bgpd in the router namespace as the frr
// user, each with its pid file, zebra socket and vty socket in a directory
// of its own under o.Dir, and loads the configuration with vtysh. The
// daemons listen only inside the router namespace: BGP on TCP 179, bfdd on
// UDP 3784, 3785 and 4784, no TCP vty (-P 0). Stop them with Stop (Down stops them too). On
// error it stops what it started.
func (l *Lab) StartFRR(ctx context.Context, o FRROptions) (_ *FRR, err error) {
	if err := FRRMissing(); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	u, err := user.Lookup("frr")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The daemons create their sockets and pid files after they switched
	// to the frr user: it must reach the directory.
	if err := searchable(o.Dir); err != nil {
		return nil, fmt.Errorf("lab: frr: %w", err)
	}
	if st, err := os.Stat(o.Dir); err != nil {
		return nil, err
	} else if err := os.Chmod(o.Dir, st.Mode().Perm()|0o011); err != nil {
		return nil, err
	}
	dir := filepath.Join(o.Dir, "frr")
	if err := os.Mkdir(dir, 0o750); err != nil {
		return nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	f := &FRR{Dir: dir, Conf: filepath.Join(dir, "frr.conf"), router: l.Router}
	defer func() {
		if err != nil {
			f.Stop()
		}
	}()
	if err := os.WriteFile(f.Conf, []byte(l.FRRConfig(o)), 0o640); err != nil {
		return nil, err
	}
	if err := os.Chown(f.Conf, uid, gid); err != nil {
		return nil, err
	}
	// vtysh reads its own vtysh.conf from the same directory (an empty one).
	if err := os.WriteFile(filepath.Join(dir, "vtysh.conf"), nil, 0o640); err != nil {
		return nil, err
	}
	zsock := filepath.Join(dir, "zserv.api")
	for _, d := range frrDaemons {
		// Each daemon starts with an empty configuration file of its own
		// (not /etc/frr/<daemon>.conf); vtysh -b loads frr.conf below.
		empty := filepath.Join(dir, d+".conf")
		if err := os.WriteFile(empty, nil, 0o640); err != nil {
			return nil, err
		}
		os.Chown(empty, uid, gid)
		args := []string{
			"-f", empty, "-i", filepath.Join(dir, d+".pid"), "-z", zsock,
			"--vty_socket", dir, "-P", "0", "-u", "frr", "-g", "frr", "--log", "stdout",
		}
		if d == "bfdd" {
			args = append(args, "--bfdctl", filepath.Join(dir, "bfdd.sock"))
		}
		p, err := l.Router.Start(ctx, filepath.Join(FRRDir, d), args...)
		if err != nil {
			return nil, fmt.Errorf("lab: %s: %w", d, err)
		}
		f.Procs = append(f.Procs, p)
		// bfdd and bgpd connect to zebra's socket; each answers vtysh on
		// DIR/<daemon>.vty once it is up.
		if err := f.waitFile(p, filepath.Join(dir, d+".vty")); err != nil {
			return nil, err
		}
	}
	if out, err := f.vtysh(ctx, "-b"); err != nil || strings.Contains(out, "%") {
		return nil, fmt.Errorf("lab: vtysh -b (loading %s): %v\n%s", f.Conf, err, out)
	}
	return f, nil
}

// searchable checks that a user other than the owner can reach dir's
// entries: every directory above it must be searchable by others.
func searchable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the frr user cannot reach %s: %s is not searchable by others (use a directory under /tmp)", dir, p)
		}
		if p == "/" {
			return nil
		}
	}
}

// waitFile waits until path exists, failing early if p exits.
func (f *FRR) waitFile(p *Process, path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("lab: %s exited: %v\n%s", filepath.Base(p.Cmd.Args[4]), p.Wait(), p.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s did not create %s\n%s", filepath.Base(p.Cmd.Args[4]), path, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vtysh runs vtysh against the lab's daemons (their vty sockets, the
// lab's frr.conf) in the router namespace.
func (f *FRR) vtysh(ctx context.Context, args ...string) (string, error) {
	return f.router.Run(ctx, "vtysh", append([]string{"--vty_socket", f.Dir, "--config_dir", f.Dir}, args...)...)
}

// Command runs one vtysh command ("show bgp summary") and returns its
// output.
func (f *FRR) Command(ctx context.Context, args ...string) (string, error) {
	return f.vtysh(ctx, "-c", strings.Join(args, " "))
}

// Stop stops the daemons, bgpd first.
func (f *FRR) Stop() error {
	var errs []error
	for i := len(f.Procs) - 1; i >= 0; i-- {
		errs = append(errs, f.Procs[i].Stop())
	}
	return errors.Join(errs...)
}

// BGPPeer is one BGP session of the router, as FRR reports it.
type BGPPeer struct {
	State string // Established, Active, Connect, ...
	// Established and Dropped count the session's transitions into and
	// out of Established since bgpd started.
	Established, Dropped int
	PrefixesReceived     map[string]int // per address family ("ipv4Unicast")
}

// BGPPeers returns the router's BGP sessions by neighbour address (`show
// bgp summary json`, both address families).
func (f *FRR) BGPPeers(ctx context.Context) (map[netip.Addr]BGPPeer, error) {
	out, err := f.Command(ctx, "show", "bgp", "summary", "json")
	if err != nil {
		return nil, err
	}
	var sum map[string]struct {
		Peers map[string]struct {
			State                  string `json:"state"`
			ConnectionsEstablished int    `json:"connectionsEstablished"`
			ConnectionsDropped     int    `json:"connectionsDropped"`
			PfxRcd                 int    `json:"pfxRcd"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		return nil, fmt.Errorf("lab: show bgp summary json: %w\n%s", err, out)
	}
	peers := map[netip.Addr]BGPPeer{}
	for af, s := range sum {
		for a, p := range s.Peers {
			addr, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			bp, ok := peers[addr]
			if !ok {
				bp = BGPPeer{State: p.State, Established: p.ConnectionsEstablished, Dropped: p.ConnectionsDropped, PrefixesReceived: map[string]int{}}
			}
			bp.PrefixesReceived[af] = p.PfxRcd
			peers[addr] = bp
		}
	}
	return peers, nil
}
