package lbnode

import (
	"context"

	"github.com/sluicelb/sluice/internal/datapath"
)

// Fastpath returns the redirector's counters and at most max of the
// redirects it holds (0: all; negative: none, the counters only); ok is
// false without node.fastpath.
func (n *Node) Fastpath(ctx context.Context, max int) (datapath.FastpathCounters, []datapath.FastpathRedirect, bool) {
	r := n.dp.Redirector()
	if r == nil {
		return datapath.FastpathCounters{}, nil, false
	}
	var rs []datapath.FastpathRedirect
	if max >= 0 {
		rs = r.List(ctx, max)
	}
	return r.Counters(), rs, true
}
