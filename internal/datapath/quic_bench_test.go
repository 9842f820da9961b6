package datapath_test

import (
	"math/rand/v2"
	"testing"

	"github.com/sluicelb/sluice/internal/pipeline"
	"github.com/sluicelb/sluice/internal/quiclb"
)

// BenchmarkForwardQUIC: one UDP packet (64-byte payload) to a VIP with 100
// backends, through parse -> flow lookup -> (classify -> balance) -> GUE
// encapsulation -> transmit, 1024 clients in turn. The plain UDP cases are
// the baselines of the same run: "udp-flow-hit" is an established flow of
// a VIP with flow entries (classify and balance skipped), "udp-stateless" a
// VIP without (Maglev by the 4-tuple on every packet). A QUIC VIP keeps no
// flow entries, so each of its packets misses the table and runs classify
// and balance: read the DCID, decode the server ID (plaintext, AES single
// pass, or three AES passes of the four-pass network), find the backend.
// The fallbacks are the Initial (DCID hash) and an unroutable short header
// (4-tuple).
func BenchmarkForwardQUIC(b *testing.B) {
	const clients = 1024
	bes := backends4(100)
	rng := rand.New(rand.NewPCG(1, 2))
	cids := func(cfg quiclb.Config) [][]byte {
		codec := mustCodec(b, cfg)
		var ps [][]byte
		for i := range clients {
			ps = append(ps, shortHeader(cidFor(b, codec, serverID(i%len(bes)), rng)))
		}
		return ps
	}
	initials := make([][]byte, clients)
	unroutable := make([][]byte, clients)
	for i := range initials {
		dcid := []byte{0xe0 | byte(i&0x1f), byte(i), byte(i >> 8), 3, 4, 5, 6, 7}
		initials[i] = longHeader(dcid)
		unroutable[i] = shortHeader(append(dcid, 8))
	}
	plain := func(stateless bool) pipeline.Spec {
		s := service(quicVIP, bes, nil)
		s.Proto, s.Stateless = 17, stateless
		return pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{s}}
	}
	quic := func(cfg quiclb.Config) pipeline.Spec {
		return pipeline.Spec{Seed: 1, Services: []pipeline.ServiceSpec{quicService(mustCodec(b, cfg), bes)}}
	}
	plaintext := quiclb.Config{Rotation: 1, ServerIDLen: 2, NonceLen: 6}
	singlePass := quiclb.Config{Rotation: 1, ServerIDLen: 2, NonceLen: 14, Key: quicKey}
	for _, bc := range []struct {
		name     string
		spec     pipeline.Spec
		payloads [][]byte
		route    pipeline.QUICRoute
	}{
		{"udp-flow-hit", plain(false), initials, pipeline.QUICNone},
		{"udp-stateless", plain(true), initials, pipeline.QUICNone},
		{"quic-cid-plaintext", quic(plaintext), cids(plaintext), pipeline.QUICByCID},
		{"quic-cid-single-pass", quic(singlePass), cids(singlePass), pipeline.QUICByCID},
		{"quic-cid-four-pass", quic(quicCfg), cids(quicCfg), pipeline.QUICByCID},
		{"quic-initial-dcid-hash", quic(quicCfg), initials, pipeline.QUICByDCIDHash},
		{"quic-short-unroutable", quic(quicCfg), unroutable, pipeline.QUICByTuple},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := quicRig(b, 1<<16, quicSource(quicVIP, bc.payloads), bc.spec)
			run(b, w, 4*clients) // warm up: the flow entries of udp-flow-hit
			before := w.Snapshot()
			b.ReportAllocs()
			b.ResetTimer()
			run(b, w, b.N)
			b.StopTimer()
			c := w.Snapshot()
			if bc.route != pipeline.QUICNone {
				if got, all := c.QUIC[bc.route]-before.QUIC[bc.route], c.RxPackets-before.RxPackets; got != all {
					b.Fatalf("%d of %d packets routed %v", got, all, bc.route)
				}
			} else if hits := c.FlowHits - before.FlowHits; bc.spec.Services[0].Stateless != (hits == 0) {
				b.Fatalf("%d flow hits", hits)
			}
		})
	}
}
