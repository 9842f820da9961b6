// Package datapath runs the workers: one per link (queue), run to completion,
// batch in, batch out. A worker owns its flow table and its counters; the
// only thing it shares is the current pipeline.Generation, which the control
// side replaces atomically with Datapath.Apply and which the worker reads once
// per batch. Counters are plain integers written by the worker alone and read
// through Snapshot, which the worker answers between batches, so the packet
// path takes no locks and executes no atomic read-modify-write.
//
// This package and everything it imports stay free of control-plane code
// (configuration files, HTTP, BGP): see the import test.
package datapath
