package e2e

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// scLab is the second-chance lab: three LB nodes behind BIRD, four backends,
// stream4 on be1..be3 (be4 not yet in it).
func scLab(t *testing.T, secondChance bool) *scenario.Scenario {
	t.Helper()
	return bgpLab(t, scenario.Options{Backends: 4, SecondChance: secondChance,
		StreamStates: []string{"", "", "", "absent"}, AgentMetrics: true})
}

// setStates gives stream4's backends new states on every LB node at once
// (a configuration file and SIGHUP each).
func setStates(t *testing.T, s *scenario.Scenario, states ...string) {
	t.Helper()
	s.Opts.StreamStates = states
	for i := range s.LBs {
		if err := s.ReloadLB(i, s.ConfigFor(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// restartLB restarts LB node i (its flow table is lost) and waits until the
// router sends it traffic again.
func restartLB(t *testing.T, s *scenario.Scenario, i int) {
	t.Helper()
	if err := s.RestartLB(t.Context(), i, s.Opts.IO); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitNextHops(t.Context(), s.Opts.VIP4, 20*time.Second, 0, 1, 2); err != nil {
		t.Fatal(err)
	}
}

// agentCounter sums an agent counter over the backends.
func agentCounter(t *testing.T, s *scenario.Scenario, name string) (total uint64, per []uint64) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^sluice_agent_` + name + `_total (\S+)$`)
	for _, be := range s.Lab.Backends {
		out, err := be.Run(context.Background(), "curl", "-sS", "--max-time", "3", "http://"+scenario.AgentMetricsAddr+"/metrics")
		if err != nil {
			t.Fatalf("%s: metrics: %v", be.Name, err)
		}
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no %s in\n%s", be.Name, name, out)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		per = append(per, uint64(v))
		total += uint64(v)
	}
	return total, per
}

// scRun runs the backend changes of the second-chance test while 300
// streams run, and returns the connections broken to backends that stay
// (be1 leaves: its connections end with it).
func scRun(t *testing.T, s *scenario.Scenario) (brokenStaying, brokenBE1 int) {
	st := openStreams(t, s, failoverConns, 15*time.Second)
	time.Sleep(time.Second)

	// 1. Add be4 (filling) and restart lb1 at the same time.
	setStates(t, s, "", "", "", "filling")
	restartLB(t, s, 0)
	time.Sleep(3 * time.Second)
	phase(t, st, "be4 added, lb1 restarted", 0)
	// 2. be4 active.
	setStates(t, s, "", "", "", "")
	time.Sleep(2 * time.Second)
	phase(t, st, "be4 active", 0)
	// 3. Drain be1.
	setStates(t, s, "draining", "", "", "")
	time.Sleep(3 * time.Second)
	phase(t, st, "be1 draining", 0)
	// 4. Remove be1.
	setStates(t, s, "absent", "", "", "")
	time.Sleep(2 * time.Second)
	phase(t, st, "be1 removed", 0)

	for i, r := range st.Stop() {
		switch {
		case r.Err == nil:
		case r.Backend == "be1":
			brokenBE1++
		default:
			brokenStaying++
			if brokenStaying <= 5 {
				t.Logf("stream %d on %s broke: %v", i, r.Backend, r.Err)
			}
		}
	}
	return brokenStaying, brokenBE1
}

// Backends change while 300 long-lived connections run through three LB
// nodes: be4 is added while lb1 restarts, then becomes active; be1 is
// drained, then removed. The restarted node has no flow entries, so
// mid-flow packets on changed slots go to the slot's new owner with the
// hop list [owner, previous owner]; the owner's agent hands the packets of
// connections it does not have to the previous owner. No connection to a
// backend that stays breaks.
func TestE2ESecondChance(t *testing.T) {
	s := scLab(t, true)
	staying, onBE1 := scRun(t, s)
	fwd, per := agentCounter(t, s, "second_hop_forwarded")
	local, _ := agentCounter(t, s, "hoplist_local")
	t.Logf("second chance: %d connections broken to staying backends, %d on the removed be1; "+
		"%d packets forwarded to the previous owner (per backend %v), %d hop-list packets delivered locally",
		staying, onBE1, fwd, per, local)
	if staying != 0 {
		t.Errorf("%d connections to backends that stay broke", staying)
	}
	if fwd == 0 {
		t.Error("no packet took the second hop: the changes moved no connection through a node without its entry")
	}
	// The agents accepted what the LB nodes and the other agents sent
	// (--lb-prefix, --hop-prefix: the scenario's trust prefixes).
	if rejected, per := agentCounter(t, s, "drop_rejected_source"); rejected != 0 {
		t.Errorf("the agents rejected %d datagrams from their LB nodes or peers (per backend %v)", rejected, per)
	}
}

// The control run: the same changes without second chance break
// connections to backends that stay, which proves the test above can fail.
func TestE2ESecondChanceControlDisabled(t *testing.T) {
	s := scLab(t, false)
	staying, onBE1 := scRun(t, s)
	t.Logf("without second chance: %d connections broken to staying backends, %d on the removed be1", staying, onBE1)
	if staying == 0 {
		t.Fatal("no connection broke without second chance: the second-chance test could not fail")
	}
}
