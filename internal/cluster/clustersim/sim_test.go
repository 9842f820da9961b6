package clustersim

import (
	"testing"
	"time"
)

// A small cluster through kills, restarts and backend changes: no flow's
// committed backend changes and no entry is lost.
func TestSimReplicated(t *testing.T) {
	r, err := Run(Config{Nodes: 8, Replicas: 3, Shards: 512, Flows: 20000, Sample: 0.25, Window: 2048,
		Schedule: "kill:1,backends,restart:1,kill:2,kill:3,backends,restart:2,kill:4,restart:3", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	if r.Changed != 0 || r.Lost != 0 || r.Fallback != 0 || r.Disagree != 0 {
		t.Fatalf("changed %d, lost %d, fallback %d, disagree %d; want 0", r.Changed, r.Lost, r.Fallback, r.Disagree)
	}
	if r.Stats.SyncEntriesIn == 0 {
		t.Fatal("restarts synced nothing")
	}
}

// The control: one copy per flow (R=1) and the same kills lose entries and
// change backends, so the test above can fail.
func TestSimUnreplicatedLoses(t *testing.T) {
	r, err := Run(Config{Nodes: 8, Replicas: 1, Shards: 512, Flows: 20000, Sample: 0.25, Window: 2048,
		Schedule: "kill:1,backends,restart:1,kill:2", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	if r.Lost == 0 || r.Changed == 0 {
		t.Fatalf("R=1 with kills: lost %d, changed %d; want both > 0", r.Lost, r.Changed)
	}
}

// The failure detector's delay: queries to a dead tail time out and walk up
// the chain, where a replica answers.
func TestSimDetectionDelay(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps through detection delays")
	}
	r, err := Run(Config{Nodes: 8, Replicas: 3, Shards: 512, Flows: 10000, Sample: 0.5, Window: 1024,
		Schedule: "kill:1,backends,kill:2", Detect: 300 * time.Millisecond, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	if r.Changed != 0 || r.Lost != 0 || r.Disagree != 0 {
		t.Fatalf("changed %d, lost %d, disagree %d", r.Changed, r.Lost, r.Disagree)
	}
}

// Nodes see membership changes at different times (up to 30 ms apart), as
// with gossip: chains disagree for a while, and still no flow changes
// backend and concurrent askers of a new flow agree.
func TestSimViewJitter(t *testing.T) {
	r, err := Run(Config{Nodes: 8, Replicas: 3, Shards: 512, Flows: 20000, Sample: 0.25, New: 0.05, Window: 2048,
		Schedule: "kill:1,restart:1,kill:2,backends,kill:3,restart:2", ViewJitter: 30 * time.Millisecond, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	if r.Changed != 0 || r.Lost != 0 || r.Disagree != 0 {
		t.Fatalf("changed %d, lost %d, disagree %d", r.Changed, r.Lost, r.Disagree)
	}
}
