package agent

import "errors"

// This file is the adapter between the agent and the fastpath egress
// program (package internal/fastpath/egress, the tc egress eBPF program
// that encapsulates the redirected flows). Until that package is part of
// the build, attachEgressProgram refuses, and an agent with
// Config.Fastpath fails to start with its error. Its body then becomes,
// with a small type that wraps *egress.Program:
//
//	p, err := egress.Attach(egress.Options{Interface: o.Interface, Flows: o.Flows})
//	if err != nil {
//		return nil, err
//	}
//	return egressAdapter{p}, nil
//
// and egressAdapter's methods convert: put calls p.Put(egress.Flow(f),
// egress.Target(t)); delete calls p.Delete and maps "no such entry" to
// nil; walk calls p.Walk and passes egressState{s.LastUsed, s.Packets,
// s.Bytes, s.Ended}; counters turns egress.Counters into a map of name to
// value; close calls p.Close. egressTarget has egress.Target's fields in
// its order, so the conversion is a plain type conversion, and
// fastpath.Flow egress.Flow's.

// errEgressNotBuilt is attachEgressProgram's answer while the egress
// program is not part of the build.
var errEgressNotBuilt = errors.New("fastpath: egress program not built")

// attachEgressProgram attaches the fastpath egress program to o.Interface
// with a map of o.Flows flows.
func attachEgressProgram(o egressOptions) (egressProgram, error) {
	return nil, errEgressNotBuilt
}
