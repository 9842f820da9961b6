package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluicelb/sluice/internal/control"
)

// ClusterPort is the cluster protocol port of every LB node with
// Options.Cluster (membership listens on ClusterPort + 1).
const ClusterPort = 7946

// ClusterKey is the lab's cluster key.
const ClusterKey = "sluice-lab-cluster-key"

// ClusterBind returns LB node i's (from 0) cluster address: its
// service-segment address, port ClusterPort.
func (s *Scenario) ClusterBind(i int) netip.AddrPort {
	return netip.AddrPortFrom(s.Lab.LBs[i].Addr4, ClusterPort)
}

// clusterConfig writes LB node i's node.cluster section with
// Options.Cluster: it binds its service-segment address and its peers are
// the other LB nodes.
func (s *Scenario) clusterConfig(b *strings.Builder, i int) {
	if !s.Opts.Cluster {
		return
	}
	var peers []string
	for j := range s.Lab.LBs {
		if j != i {
			peers = append(peers, fmt.Sprintf("%q", s.ClusterBind(j)))
		}
	}
	fmt.Fprintf(b, "  cluster:\n    bind: %q\n    peers: [%s]\n    key: %q\n", s.ClusterBind(i), strings.Join(peers, ", "), ClusterKey)
	if p := s.Opts.ClusterProbe; p > 0 {
		fmt.Fprintf(b, "    probe_interval: %s\n", p)
	}
}

// ClusterStatus runs `sluice ctl -o json cluster status` on LB node i
// (from 0).
func (s *Scenario) ClusterStatus(ctx context.Context, i int) (control.ClusterStatus, error) {
	var st control.ClusterStatus
	out, err := s.Lab.LBs[i].Command(ctx, s.Opts.Binary, "ctl", "-o", "json", "--timeout", "2s", "cluster", "status").Output()
	if err != nil {
		return st, fmt.Errorf("lb%d: ctl cluster status: %w", i+1, err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("lb%d: ctl cluster status: %w\n%s", i+1, err, out)
	}
	return st, nil
}
