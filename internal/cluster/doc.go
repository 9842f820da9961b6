// Package cluster is the LB tier as one cluster: flow state shared along
// deterministic owner chains, replicated by chain replication, over the
// cluster's own authenticated UDP protocol.
//
// # Shards and chains
//
// A flow key hashes (flow.Key.Hash with the cluster seed, salted) into one of
// S shards (ShardOf; default 4096). Each shard maps, by rendezvous (highest
// random weight) hashing over the live members, to a chain of R members
// (Config.Replicas, default 2): head first, tail last. NewChains is a pure
// function of (seed, S, R, member set), so every node computes the same
// chains from the same membership; when a member leaves, only the shards
// whose chain held it change, and their survivors keep their order.
//
// # Chain replication
//
// An entry is flow key -> Value{Service, Backend, Expire}. Backend and
// Service are opaque 32- and 16-bit numbers that the node server must make
// identical on every node for the same backend and service (its stable IDs,
// or seeded hashes of address and port); Expire is Unix seconds. Writes go to
// the head and down the chain; the tail answers (committed) and
// acknowledges to the head, which retransmits what is not acknowledged.
// Reads go to the tail. A query names the flow and the asker's proposed
// backend: the tail answers its entry, or starts an insert of the proposal at
// the head and answers once committed. Every member stores insert-if-absent,
// so the first insert at the head wins and every asker learns the same
// backend; a later insert only extends the expiry. When the tail does not
// answer (failed, not detected yet) or is not ready, the asker walks up the
// chain: any synced member holding the entry may answer it.
//
// # Membership, failure and repair
//
// Membership is an interface: Gossip (hashicorp/memberlist, tuned for
// sub-second detection, encrypted with a key derived from the cluster key,
// graceful Leave when Run ends) or MemMembership for tests and clustersim.
// On every view change a node recomputes the chains. For each shard whose
// chain it joined, it drops what it held of the shard and pulls the shard
// from the surviving members of the chain it joined (most upstream first),
// at most Config.SyncWindow requests in flight and Config.SyncRate entries
// per second; until the shard is synced the node answers "retry" as its head
// or tail (sync before serving). Stats counts sync progress.
//
// # Wire protocol
//
// See wire.go: a 24-byte header (version, count, boot ID, sequence, time),
// fixed-size messages (query, answer, insert, ack, delete, sync request,
// sync entry, sync done), and a 16-byte truncated HMAC-SHA256 with a key
// derived from the cluster key (Keys) and bound to the seed, shard count and
// replicas, so nodes configured differently cannot talk (they would compute
// different chains). Replay protection per sender: a 64-
// datagram sequence window per boot ID, send times within 10 s of the
// receiver's clock, and a new boot ID only with a later time. Datagrams from
// addresses outside the current view are dropped.
//
// # Ownership and lifetimes
//
// A Node is one goroutine (Run) owning its table, chains, timers and codec;
// nothing is shared with the packet path. Other goroutines Submit requests
// through a bounded queue (never blocking: a full queue returns false) and
// receive answers on their own bounded channel (a full channel drops the
// answer and counts it); Stats and Ready are atomics; Inspect runs a function
// on the node goroutine for the control plane. The Table is fixed-capacity
// (48-byte entries, 60 bytes per entry at capacity). When Run returns, the
// caller closes the Transport.
//
// # In the LB node
//
// The node server (internal/lbnode) owns a Started member when the node
// config has a cluster section: it starts it with the node, stops it (a
// graceful leave) when the node is drained or shuts down, and reports it
// (MemberStatus) to the control plane. VIPs with affinity always publish
// their new flows: the datapath may not import this package
// (TestDatapathImportsNoControlPlane), so each worker pushes the
// datapath's own record onto a bounded queue (pipeline.PublishQueue) and
// the node server submits it here as OpPublish. Queries from the workers
// (hold a flow's packets while the tail answers) are not wired yet.
package cluster
