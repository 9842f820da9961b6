// Package pipeline is the datapath's decision logic: a Generation (the
// immutable snapshot of services and backends the workers read), the Stage
// interface, and the stages themselves, ordered once in a Chain.
//
// The first packet of a flow runs every stage; each memoised stage records
// its result in the flow's entry (flow.Entry.Backend and Gen compose the
// results of classify and load balance). Later packets of the flow whose entry
// is current for the running generation skip the memoised stages and run only
// the per-packet ones (encapsulate). When the generation moves on, memoised
// results are recomputed, except the backend choice, which is connection
// state: a flow keeps its backend for as long as that backend stays in the
// service. Services routed by QUIC connection ID (Service.QUIC) keep no
// flow entries: every packet is routed from its own header (see QUIC).
//
// Lifetimes: a Generation and everything it points to is immutable once
// built and may be read by any number of workers; a Builder is used by one
// control goroutine; Packets belong to the worker that received them.
package pipeline
