package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/control"
	"github.com/sluicelb/sluice/internal/scenario"
)

// steerFragments makes the router send every packet to a VIP via LB node
// whole (from 0), but the later fragments of datagrams (IPv4: a fragment
// offset; IPv6: a fragment header with an offset) via LB node later,
// instead of its ECMP routes (BIRD's, which stay in the main table): a
// prerouting filter chain marks the packets (no conntrack, so the router
// forwards fragments as they come and does not reassemble), and ip rules
// send each mark to a table with one route per VIP. It is undone when the
// test ends.
func steerFragments(t *testing.T, s *scenario.Scenario, whole, later int) {
	t.Helper()
	r := s.Lab.Router
	var undo [][]string
	t.Cleanup(func() {
		for i := len(undo) - 1; i >= 0; i-- {
			if _, err := r.Run(context.Background(), undo[i][0], undo[i][1:]...); err != nil {
				t.Errorf("router: removing the fragment steering: %v", err)
			}
		}
	})
	do := func(cmd, rev []string) {
		t.Helper()
		if _, err := r.Run(t.Context(), cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("router: fragment steering: %v", err)
		}
		undo = append(undo, rev)
	}
	const markWhole, markLater = 0x5f1, 0x5f2 // their routing tables too
	nft := "table inet fragsteer {\n  chain pre {\n    type filter hook prerouting priority mangle; policy accept;\n"
	for _, vip := range s.VIPs() {
		fam, ipf, lat := "-4", "ip", "ip frag-off & 0x1fff != 0"
		if vip.Is6() {
			fam, ipf, lat = "-6", "ip6", "frag frag-off != 0"
		}
		nft += fmt.Sprintf("    %s daddr %s %s counter meta mark set %#x accept\n", ipf, vip, lat, markLater)
		nft += fmt.Sprintf("    %s daddr %s counter meta mark set %#x\n", ipf, vip, markWhole)
		for _, st := range []struct{ mark, lb int }{{markWhole, whole}, {markLater, later}} {
			n, tab := s.Lab.LBs[st.lb], fmt.Sprint(st.mark)
			hop := n.Addr4
			if vip.Is6() {
				hop = n.Addr6
			}
			do([]string{"ip", fam, "route", "add", vip.String(), "via", hop.String(), "dev", r.Ifname, "table", tab},
				[]string{"ip", fam, "route", "del", vip.String(), "table", tab})
		}
	}
	for _, mark := range []int{markWhole, markLater} {
		for _, fam := range []string{"-4", "-6"} {
			do([]string{"ip", fam, "rule", "add", "fwmark", fmt.Sprint(mark), "table", fmt.Sprint(mark)},
				[]string{"ip", fam, "rule", "del", "fwmark", fmt.Sprint(mark), "table", fmt.Sprint(mark)})
		}
	}
	nft += "  }\n}\n"
	cmd := r.Command(t.Context(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nft)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("router: nft: %v: %s\n%s", err, out, nft)
	}
	undo = append(undo, []string{"nft", "delete", "table", "inet", "fragsteer"})
	t.Cleanup(func() {
		// Runs before the removal: what the router marked.
		out, err := r.Run(context.Background(), "nft", "list", "chain", "inet", "fragsteer", "pre")
		t.Logf("router: steering counters (%v):\n%s", err, out)
	})
}

// 8 KB UDP datagrams (6 fragments each) to both VIPs of three LB nodes
// behind the router, which sends first fragments via lb1 and later ones via
// lb2 (steerFragments). The nodes form a cluster: lb1 sends each first
// fragment's decision to the datagram's owner, lb2 hands the later
// fragments to the owner, and the owner's relay sends them to the first
// fragment's backend: every datagram is echoed.
func TestE2EFragmentsAcrossNodes(t *testing.T) { fragAcrossNodes(t, true) }

// Control run: the same without the cluster: lb2 has later fragments
// without their first fragment, holds them for it and drops them
// (fragment_timeout); no datagram is echoed.
func TestE2EFragmentsAcrossNodesControl(t *testing.T) { fragAcrossNodes(t, false) }

func fragAcrossNodes(t *testing.T, cluster bool) {
	const size = 8000
	// The lab's processes live 2 minutes from its start (start's context):
	// at most 2 x 40 x 2 x 400 ms of waiting even if every datagram is lost.
	n, tries, wait := 40, 2, 400*time.Millisecond
	if !cluster {
		// Lost datagrams cost the whole wait: fewer, shorter.
		n, tries, wait = 20, 1, 200*time.Millisecond
	}
	s := chainsLab(t, cluster)
	steerFragments(t, s, 0, 1)
	read := func() (st [3]control.Stats) {
		for i := range st {
			st[i] = lbStats(t, s, i)
		}
		return st
	}
	before := read()
	var sent int // datagrams sent, every try (exact for up to 2 tries)
	for _, vip := range s.VIPs() {
		first, total := fragRun(t, s, vip, n, size, tries, wait)
		sent += first + 2*(total-first) + tries*(n-total)
		t.Logf("%s: %d of %d datagrams of %d bytes echoed (%d at the first try)", vip, total, n, size, first)
		switch {
		case cluster && total != n:
			t.Errorf("%s: %d of %d datagrams echoed", vip, total, n)
		case cluster && first < n*9/10:
			t.Errorf("%s: only %d of %d datagrams echoed at the first try", vip, first, n)
		case !cluster && total != 0:
			t.Errorf("control: %s: %d of %d datagrams echoed with their later fragments at another node", vip, total, n)
		}
	}
	after := read()
	// Each datagram is 6 fragments: 5 later ones.
	later := uint64(5 * sent)
	// What each node got from the router and did with it, and the sums.
	var d [3]struct{ rx, dropped, toOwner, decisions, relayFrags, relayDecs uint64 }
	var toOwner, decisions, relayFrags, relayDecs uint64
	for i := range d {
		a, b := &after[i], &before[i]
		f, g := &a.Fragments, &b.Fragments
		d[i].rx = a.RxPackets - b.RxPackets
		// A later fragment without its first waits for it (held), then is
		// dropped as fragment_timeout; fragment: one the node could not hold.
		d[i].dropped = a.Drops["fragment"] + a.Drops["fragment_timeout"] - b.Drops["fragment"] - b.Drops["fragment_timeout"]
		d[i].toOwner = f.ToOwner - g.ToOwner
		d[i].decisions = f.Decisions - g.Decisions
		d[i].relayFrags = f.RelayFragments - g.RelayFragments
		d[i].relayDecs = f.RelayDecisions - g.RelayDecisions
		toOwner += d[i].toOwner
		decisions += d[i].decisions
		relayFrags += d[i].relayFrags
		relayDecs += d[i].relayDecs
		t.Logf("lb%d: rx %d; fragments followed %d held %d released %d, to owner %d, decisions %d; relay fragments %d decisions %d rejected %d; drops fragment %d fragment_timeout %d",
			i+1, d[i].rx, f.Followed-g.Followed, f.Held-g.Held, f.Released-g.Released, d[i].toOwner, d[i].decisions,
			d[i].relayFrags, d[i].relayDecs, f.RelayRejected, a.Drops["fragment"]-b.Drops["fragment"],
			a.Drops["fragment_timeout"]-b.Drops["fragment_timeout"])
		if f.RelayRejected != 0 {
			t.Errorf("lb%d: %d relay datagrams rejected", i+1, f.RelayRejected)
		}
	}
	t.Logf("%d datagrams sent (%d later fragments); in all: to owner %d, decisions %d, relay fragments %d, relay decisions %d",
		sent, later, toOwner, decisions, relayFrags, relayDecs)
	// The steering: the router sent lb1 the first fragments, lb2 the later
	// ones, lb3 none (relayed fragments come through the kernel, not rx).
	if d[0].rx < uint64(sent) || d[1].rx < later || d[2].rx != 0 {
		t.Errorf("received: lb1 %d (want at least the %d first fragments), lb2 %d (the %d later ones), lb3 %d (none)",
			d[0].rx, sent, d[1].rx, later, d[2].rx)
	}
	if !cluster {
		if d[1].dropped < later {
			t.Errorf("control: lb2 dropped %d later fragments, want at least %d", d[1].dropped, later)
		}
		return
	}
	if d[1].toOwner < later || d[1].decisions != 0 {
		t.Errorf("lb2: %d later fragments to their owner (want at least %d), %d decisions (want none: no first fragments)",
			d[1].toOwner, later, d[1].decisions)
	}
	if toOwner < later || relayFrags < later {
		t.Errorf("%d later fragments handed to their owner, %d received by relays, want at least %d", toOwner, relayFrags, later)
	}
	if want := uint64(n * len(s.VIPs())); decisions < want || relayDecs < want {
		t.Errorf("%d first-fragment decisions sent to the owner, %d received by relays, want at least %d", decisions, relayDecs, want)
	}
	if d[1].dropped > later/20 {
		t.Errorf("lb2 dropped %d of %d later fragments", d[1].dropped, later)
	}
}
