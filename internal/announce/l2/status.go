package l2

import "time"

// Status is a node's L2 state (`sluice ctl l2 status`, GET /v1/l2).
type Status struct {
	Interface string `json:"interface"`
	MAC       string `json:"mac"`
	// Self is the node's cluster address ("" without node.cluster);
	// Configured the configured members, Live those in its view.
	Self       string   `json:"self,omitempty"`
	Configured []string `json:"configured,omitempty"`
	Live       []string `json:"live"`
	// Suspected are members in the view its failure detector suspects
	// (not counted for the majority).
	Suspected []string      `json:"suspected,omitempty"`
	Need      int           `json:"need"`   // the majority of the configured members
	Quorum    bool          `json:"quorum"` // the node sees a majority: it may claim VIPs
	Synced    bool          `json:"synced"` // its cluster member has every shard of its chains synced
	VIPs      []VIPStatus   `json:"vips"`
	Takeovers uint64        `json:"takeovers"` // VIPs this node took over (started answering) since it started
	Releases  uint64        `json:"releases"`  // VIPs it stopped answering
	Unsynced  uint64        `json:"unsynced"`  // takeovers made after sync_wait without the member synced
	Counters  CounterValues `json:"counters"`
}

// VIPStatus is one VIP address's state on a node.
type VIPStatus struct {
	Address   string `json:"address"`
	Owner     string `json:"owner,omitempty"` // the owner in this node's view (a cluster address; "self" alone)
	Mine      bool   `json:"mine"`            // this node is the owner in its view
	Answering bool   `json:"answering"`       // it answers ARP / neighbour solicitations for it now
	Waiting   string `json:"waiting,omitempty"`
	// Since is when the node started answering (zero when it does not);
	// Takeovers counts its takeovers of this VIP.
	Since     time.Time `json:"since,omitzero"`
	Takeovers uint64    `json:"takeovers"`
	// Released is when the node last stopped answering for it.
	Released time.Time `json:"released,omitzero"`
}
