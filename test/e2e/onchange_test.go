package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/sluicelb/sluice/internal/scenario"
)

// onChangeDrain is stream4's drain period in TestE2EOnChange: how long the
// backend change stays in flight before the control plane completes it.
const onChangeDrain = 8 * time.Second

// stream4Entries returns the stream4 entries of each of the LB nodes lbs
// and their sum.
func stream4Entries(t *testing.T, s *scenario.Scenario, lbs ...int) (per []int, sum int, err error) {
	t.Helper()
	sts, err := clusterStatuses(t.Context(), s, lbs...)
	for _, st := range sts {
		per = append(per, st.ByVIP["stream4"])
		sum += st.ByVIP["stream4"]
	}
	return per, sum, err
}

// backendStates returns LB node i's backend states of the VIP name, by
// address.
func backendStates(t *testing.T, s *scenario.Scenario, i int, name string) map[string]string {
	t.Helper()
	st := map[string]string{}
	for _, b := range vipStatus(t, s, i, name).Backends {
		st[b.Address] = b.State
	}
	return st
}

// Three LB nodes in a cluster, stream4 with affinity on-change (the
// default) and no second chance: in steady state the cluster holds no
// stream4 entry. Two backends join in state filling (about 40 % of the
// Maglev slots change owner) while lb1 is SIGKILLed: the change starts, so
// the survivors publish the entries of the flows in the slots that change
// owner and the new flows in them, and a mid-flow packet in such a slot
// without a local entry asks its chain. lb1 dies before it can publish
// anything: its flows in those slots reach the survivors with no entry
// anywhere in the cluster, and must still keep their backends. After
// stream4's drain period the control plane makes the backends active on
// each node on its own: the change completes and the survivors drop
// stream4's chain entries. No connection breaks.
//
// The control run is TestE2EOwnerChainsControlNoCluster: the same change
// and kill without the cluster break connections.
func TestE2EOnChange(t *testing.T) {
	s := bgpLab(t, scenario.Options{Backends: 5, StreamStates: []string{"", "", "", "absent", "absent"},
		AgentMetrics: true, Cluster: true, DrainPeriod: onChangeDrain})
	_, d := waitCluster(t, s, 20*time.Second, 3, 0, 1, 2)
	t.Logf("cluster of 3 formed and ready after %v", d.Round(time.Millisecond))
	ctx := t.Context()
	vip := s.Opts.VIP4
	st := openStreams(t, s, failoverConns, 15*time.Second)

	// Steady state: no change in flight, so nothing is published.
	time.Sleep(time.Second)
	steadyMax := 0
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		per, sum, err := stream4Entries(t, s, 0, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		if sum > steadyMax {
			steadyMax = sum
			t.Logf("steady state: stream4 entries per node %v", per)
		}
	}
	phase(t, st, "steady state", 0)
	logClusterCounters(t, s, "steady state", 0, 1, 2)
	if steadyMax != 0 {
		t.Errorf("steady state: the cluster holds up to %d stream4 entries, want 0 (affinity on-change publishes only during a change)", steadyMax)
	}
	before := vipFingerprint(t, s, 1, "stream4")

	// At once: lb1 killed, be4 and be5 filling on the others.
	s.Opts.StreamStates = []string{"", "", "", "filling", "filling"}
	changed := time.Now()
	if err := s.Signal(0, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if err := s.ReloadLB(i, s.ConfigFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	took, err := s.WaitNextHops(ctx, vip, 5*time.Second, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		for vipFingerprint(t, s, i, "stream4") == before {
			if time.Since(changed) > 5*time.Second {
				t.Fatalf("lb%d: stream4 table unchanged 5s after the reload (filling refused? %v)", i+1, backendStates(t, s, i, "stream4"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fillingAddrs := []string{s.Lab.Backends[3].Addr4.String(), s.Lab.Backends[4].Addr4.String()}
	for _, i := range []int{1, 2} {
		states := backendStates(t, s, i, "stream4")
		for _, a := range fillingAddrs {
			if states[a] != "filling" {
				t.Fatalf("lb%d: stream4 backend %s is %q after the reload, want filling: %v", i+1, a, states[a], states)
			}
		}
	}
	t.Logf("change started: lb1 killed, be4 and be5 filling on lb2 and lb3 (route converged in %v)", took.Round(time.Millisecond))

	// Watch the survivors until the change has completed on both and
	// their stream4 entries are gone.
	var (
		maxSeen                     int
		maxPer                      []int
		appeared, lastSeen, gone    time.Duration
		completed                   [2]time.Duration
		inFlightLogged, statusError bool
	)
	deadline := changed.Add(onChangeDrain + 10*time.Second)
	for {
		now := time.Since(changed)
		per, sum, err := stream4Entries(t, s, 1, 2)
		if err != nil {
			if !statusError {
				t.Logf("%v: cluster status: %v", now.Round(time.Millisecond), err)
			}
			statusError = true
		} else {
			if sum > 0 {
				if appeared == 0 {
					appeared = now
					t.Logf("%v after the change started: stream4 entries %v", now.Round(time.Millisecond), per)
				}
				lastSeen = now
			}
			if sum > maxSeen {
				maxSeen, maxPer = sum, per
			}
		}
		done := true
		for k, i := range []int{1, 2} {
			if completed[k] == 0 {
				states := backendStates(t, s, i, "stream4")
				if states[fillingAddrs[0]] == "active" && states[fillingAddrs[1]] == "active" {
					completed[k] = time.Since(changed)
					t.Logf("lb%d: be4 and be5 active %v after the change started (entries then %v)", i+1, completed[k].Round(time.Millisecond), per)
				}
			}
			done = done && completed[k] != 0
		}
		if !inFlightLogged && (done || now > 3*time.Second) {
			inFlightLogged = true
			phase(t, st, "change in flight", took)
			logClusterCounters(t, s, "change in flight", 1, 2)
		}
		if done && err == nil && sum == 0 {
			gone = time.Since(changed) // the change completed on both first
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("stream4 entries on lb2+lb3: first seen %v after the change started, at most %d %v, last seen %v; change completed on lb2/lb3 at %v/%v; entries gone at %v",
		appeared.Round(time.Millisecond), maxSeen, maxPer, lastSeen.Round(time.Millisecond),
		completed[0].Round(time.Millisecond), completed[1].Round(time.Millisecond), gone.Round(time.Millisecond))
	broken, _ := phase(t, st, "change completed", took)
	logClusterCounters(t, s, "change completed", 1, 2)

	// A stream that lost its packets without a reset breaks only at its
	// 15 s answer timeout: count those that answered nothing for a second.
	snap := st.Snapshot()
	time.Sleep(time.Second)
	stalled := 0
	for i, r := range st.Snapshot() {
		if r.Err == nil && r.Sent == snap[i].Sent {
			stalled++
		}
	}
	per := map[string]int{}
	n := 0
	for i, r := range st.Stop() {
		if r.Err == nil {
			continue
		}
		per[r.Backend]++
		if n++; n <= 5 {
			t.Logf("stream %d on %s broke: %v", i, r.Backend, r.Err)
		}
	}
	delivered, perBE := agentCounter(t, s, "delivered")
	t.Logf("%d broken (per backend %v), %d stalled; agents delivered %d packets (per backend %v)", broken, per, stalled, delivered, perBE)

	if completed[0] == 0 || completed[1] == 0 {
		t.Errorf("the change did not complete: be4 and be5 still filling %v after it started (drain period %v; completed at %v)",
			time.Since(changed).Round(time.Millisecond), onChangeDrain, completed)
	}
	if broken != 0 || stalled != 0 {
		t.Errorf("%d of %d connections broke (per backend %v), %d stalled", broken, failoverConns, per, stalled)
	}
	if appeared == 0 || appeared > 5*time.Second {
		t.Errorf("entries appeared: stream4 entries on the survivors first seen %v after the change started (0: never), want within 5s",
			appeared.Round(time.Millisecond))
	}
	if gone == 0 {
		_, sum, err := stream4Entries(t, s, 1, 2)
		t.Errorf("entries gone: the survivors still hold %d stream4 entries %v after the change started (%v), want 0 once it completed",
			sum, time.Since(changed).Round(time.Millisecond), err)
	}
	t.Logf("summary: steady %d entries; change: max %d entries, first %v, completed %v/%v, gone %v; broken %d stalled %d",
		steadyMax, maxSeen, appeared.Round(time.Millisecond), completed[0].Round(time.Millisecond), completed[1].Round(time.Millisecond), gone.Round(time.Millisecond), broken, stalled)
}
