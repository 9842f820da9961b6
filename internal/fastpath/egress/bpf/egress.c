// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// sluice_egress: the tc (clsact) egress program of a client host's uplink
// for fastpath (DESIGN 3.7). A flow the LB redirected (an entry in
// sluice_egress_flows, written by the agent) is GUE-encapsulated straight to
// its backend, exactly as an LB node would have encapsulated it
// (encap.Template.Encap without hop list); every other packet is left as it
// is (TC_ACT_OK, not a byte changed).
//
//   not untagged Ethernet / IPv4 without options / IPv6 without extension
//   headers / TCP or UDP / not a fragment   -> TC_ACT_OK, untouched (parse)
//   no entry                                -> TC_ACT_OK, untouched (miss)
//   entry, but cannot be sent direct        -> TC_ACT_OK, untouched (by reason)
//   entry                                   -> encapsulated, MACs of the next
//                                              hop; TC_ACT_OK, or bpf_redirect
//                                              to another interface
//
// Everything that decides whether the packet can be sent direct (family,
// MTU, checksum, route, neighbour) is checked before the packet is changed:
// a packet that is not sent direct goes the LB way, unchanged.
//
// The layouts below are the one definition of the maps: bpf2go generates the
// Go types from this file's BTF (egressFlowKey, egressFlowValue).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

/* The flow key: the packet's source is the client, its destination the VIP.
 * Ports in host order, IPv4 addresses IPv4-mapped (::ffff:a.b.c.d) as in
 * flow.Key. 40 bytes. */
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* 4 or 6 */
	__u8 pad[2];
};

/* A redirected flow: where to send it, and what the program records. The
 * first 28 bytes are written by the agent only; the rest by the program
 * (the agent writes zero when it installs the entry). 56 bytes. */
struct flow_value {
	__u8 backend[16]; /* outer destination: 4 bytes (IPv4) or 16 (FLAG_V6) */
	__u32 label;      /* IPv6 outer flow label (20 bits) */
	__u16 port;       /* GUE destination UDP port, host order */
	__u16 sport;      /* outer UDP source port, host order */
	__u8 flags;       /* FLAG_* */
	__u8 ended;       /* a TCP FIN or RST was sent direct */
	__u8 pad[2];
	__u64 used;    /* bpf_ktime_get_coarse_ns of a recent packet, at most ~1 s old */
	__u64 packets; /* sent direct (a GSO packet counts its segments) */
	__u64 bytes;   /* sent direct: outer frames with Ethernet header (a GSO
			* packet's before segmentation) */
};

#define FLAG_V6 1   /* backend is IPv6 */
#define FLAG_CSUM 2 /* IPv4 outer: compute the UDP checksum (IPv6: always) */

/* Counters: what happened to the packets the program saw. */
enum ctr {
	CTR_DIRECT = 0,     /* encapsulated and sent direct */
	CTR_DIRECT_BYTES,   /* their bytes, outer frames */
	CTR_MISS,           /* no entry */
	CTR_ENDED,          /* of CTR_DIRECT, TCP FIN or RST */
	CTR_FAMILY,         /* backend of the other address family */
	CTR_TOO_BIG,        /* exceeds the MTU once encapsulated (not GSO) */
	CTR_NO_CSUM,        /* inner UDP checksum 0, outer checksum needed */
	CTR_GSO_CSUM,       /* GSO packet whose outer UDP checksum is needed */
	CTR_NO_ROUTE,       /* fib lookup: no route (or blackhole, prohibit...) */
	CTR_NO_NEIGH,       /* fib lookup: next hop's neighbour not resolved */
	CTR_FWD_DISABLED,   /* fib lookup: forwarding off on the interface */
	CTR_ADJUST_ERR,     /* bpf_skb_adjust_room failed */
	CTR_PARSE,          /* not untagged Ethernet/IP/TCP|UDP as above */
	CTR_NUM,
};

/* A plain hash: only the agent adds and removes flows, and it bounds their
 * number, so no entry is ever evicted behind its back (an LRU hash may evict
 * before it is full: its free slots sit in per-CPU lists). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16); /* set from Options.Flows at load */
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} sluice_egress_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CTR_NUM);
	__type(key, __u32);
	__type(value, __u64);
} sluice_egress_ctr SEC(".maps");

/* The largest outer IP packet (the uplink's MTU), set at load. */
volatile const __u32 mtu = 1500;
/* Tests without routes (BPF_PROG_TEST_RUN): no fib lookup, the Ethernet
 * header is left as it is. */
volatile const __u32 no_fib = 0;

/* Unused, but they make bpf2go emit the Go types. */
struct flow_key unused_flow_key __attribute__((unused));
struct flow_value unused_flow_value __attribute__((unused));
enum ctr unused_ctr __attribute__((unused));

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&sluice_egress_ctr, &c);
	if (v)
		*v += 1;
}

static __always_inline void count_n(__u32 c, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&sluice_egress_ctr, &c);
	if (v)
		*v += n;
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return TC_ACT_OK;
}

static __always_inline __u32 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u32)s;
}

/* be16 reads the big-endian 16-bit word at p. */
static __always_inline __u32 be16(const void *p)
{
	return bpf_ntohs(*(const __u16 *)p);
}

#define TCP_FIN 0x01
#define TCP_RST 0x04

#define GUE_LEN 4
#define UDP_LEN 8
/* Outer headers between Ethernet and the inner packet. */
#define OVERHEAD4 (20 + UDP_LEN + GUE_LEN)
#define OVERHEAD6 (40 + UDP_LEN + GUE_LEN)
/* What the parser needs in the linear part: Ethernet, IPv6, TCP flags. */
#define PARSE_LEN (ETH_HLEN + 40 + 14)

SEC("tc")
int sluice_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + PARSE_LEN > end && skb->len > (__u32)(end - data)) {
		/* Headers beyond the linear part: pull them in (it does not
		 * change the packet's bytes). */
		bpf_skb_pull_data(skb, skb->len < PARSE_LEN ? skb->len : PARSE_LEN);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	__u8 *l3 = data + ETH_HLEN;
	if ((void *)l3 > end)
		return pass(CTR_PARSE);
	if (skb->vlan_present)
		return pass(CTR_PARSE);
	__u16 et = *(__u16 *)(data + 12);

	struct flow_key key = {};
	__u32 hlen, tos, proto, l4proto, inner_len;
	__u64 pseudo;   /* inner pseudo-header sum, without the length */
	__u64 hsum = 0; /* inner IP header sum */
	if (et == bpf_htons(ETH_P_IP)) {
		if ((void *)(l3 + 20) > end)
			return pass(CTR_PARSE);
		if (l3[0] != 0x45) /* version 4, no options */
			return pass(CTR_PARSE);
		if (be16(l3 + 6) & 0x3fff) /* MF or offset */
			return pass(CTR_PARSE);
		l4proto = l3[9];
		hlen = 20;
		inner_len = be16(l3 + 2);
		tos = l3[1];
		proto = 4; /* IPPROTO_IPIP */
		key.family = 4;
		key.src[10] = 0xff;
		key.src[11] = 0xff;
		key.dst[10] = 0xff;
		key.dst[11] = 0xff;
		__builtin_memcpy(&key.src[12], l3 + 12, 4);
		__builtin_memcpy(&key.dst[12], l3 + 16, 4);
#pragma unroll
		for (int i = 0; i < 20; i += 2)
			hsum += be16(l3 + i);
		pseudo = be16(l3 + 12) + be16(l3 + 14) + be16(l3 + 16) + be16(l3 + 18) + l4proto;
	} else if (et == bpf_htons(ETH_P_IPV6)) {
		if ((void *)(l3 + 40) > end)
			return pass(CTR_PARSE);
		if ((l3[0] >> 4) != 6)
			return pass(CTR_PARSE);
		l4proto = l3[6]; /* an extension header is not TCP/UDP */
		hlen = 40;
		inner_len = 40 + be16(l3 + 4);
		tos = (l3[0] << 4 | l3[1] >> 4) & 0xff;
		proto = 41; /* IPPROTO_IPV6 */
		key.family = 6;
		__builtin_memcpy(key.src, l3 + 8, 16);
		__builtin_memcpy(key.dst, l3 + 24, 16);
		pseudo = l4proto;
#pragma unroll
		for (int i = 0; i < 40; i += 2)
			hsum += be16(l3 + i);
#pragma unroll
		for (int i = 8; i < 40; i += 2)
			pseudo += be16(l3 + i);
	} else {
		return pass(CTR_PARSE);
	}
	if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
		return pass(CTR_PARSE);

	/* The IP length must be the packet's: no trailing bytes, nothing
	 * missing (a GSO packet's is its whole length too, or 0 for IPv6
	 * jumbograms, which are not sent direct). */
	__u32 l3len = skb->len - ETH_HLEN;
	if (skb->len < ETH_HLEN || inner_len != l3len || inner_len < hlen + UDP_LEN)
		return pass(CTR_PARSE);
	__u8 *l4 = l3 + hlen;
	__u32 l4len = inner_len - hlen;
	__u32 udpcsum = 0, tcpflags = 0;
	if (l4proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > end || l4len < 20)
			return pass(CTR_PARSE);
		tcpflags = l4[13];
	} else {
		if ((void *)(l4 + 8) > end)
			return pass(CTR_PARSE);
		if (be16(l4 + 4) != l4len)
			return pass(CTR_PARSE);
		udpcsum = be16(l4 + 6);
	}
	key.sport = be16(l4);
	key.dport = be16(l4 + 2);
	key.proto = l4proto;

	struct flow_value *v = bpf_map_lookup_elem(&sluice_egress_flows, &key);
	if (!v)
		return pass(CTR_MISS);

	int v6 = key.family == 6;
	if (!!(v->flags & FLAG_V6) != v6)
		return pass(CTR_FAMILY);
	__u32 overhead = v6 ? OVERHEAD6 : OVERHEAD4;
	__u32 gso = skb->gso_size;
	if (!gso && l3len + overhead > mtu)
		return pass(CTR_TOO_BIG);
	__u32 total = l3len + overhead; /* outer IP length */
	if (total > 0xffff + (v6 ? 40 : 0))
		return pass(CTR_TOO_BIG);
	int csum = v6 || (v->flags & FLAG_CSUM);
	if (csum) {
		/* A GSO packet's segments would all carry the checksum of the
		 * whole: the kernel computes an outer UDP checksum per segment
		 * only for SKB_GSO_UDP_TUNNEL_CSUM, which adjust_room does not
		 * set. */
		if (gso)
			return pass(CTR_GSO_CSUM);
		if (l4proto == IPPROTO_UDP && udpcsum == 0)
			return pass(CTR_NO_CSUM);
	}

	/* The next hop, before anything changes: the host's output lookup
	 * (routes out of this interface, source = the client address), and
	 * the next hop's MAC from the neighbour table. The kernel refuses the
	 * lookup on an interface without forwarding (CTR_FWD_DISABLED). */
	struct bpf_fib_lookup fib = {};
	if (!no_fib) {
		fib.l4_protocol = IPPROTO_UDP;
		fib.sport = bpf_htons(v->sport);
		fib.dport = bpf_htons(v->port);
		fib.ifindex = skb->ifindex;
		if (v6) {
			fib.family = AF_INET6;
			__builtin_memcpy(fib.ipv6_src, key.src, 16);
			__builtin_memcpy(fib.ipv6_dst, v->backend, 16);
		} else {
			fib.family = AF_INET;
			fib.tos = tos;
			__builtin_memcpy(&fib.ipv4_src, &key.src[12], 4);
			__builtin_memcpy(&fib.ipv4_dst, v->backend, 4);
		}
		long r = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
		switch (r) {
		case BPF_FIB_LKUP_RET_SUCCESS:
			break;
		case BPF_FIB_LKUP_RET_NO_NEIGH:
			return pass(CTR_NO_NEIGH);
		case BPF_FIB_LKUP_RET_FWD_DISABLED:
			return pass(CTR_FWD_DISABLED);
		default:
			return pass(CTR_NO_ROUTE);
		}
	}

	/* The outer UDP checksum covers the inner packet. The inner packet's
	 * own checksum makes the sum of its transport segment the complement
	 * of its pseudo-header's sum, so the whole sum costs the inner IP
	 * header only (local checksum offload, as offload.c and Linux's
	 * lco_csum). With CHECKSUM_PARTIAL the inner checksum field holds the
	 * pseudo-header sum and the segment's sum, once the checksum is filled
	 * in, is the same complement. */
	__u64 inner_sum = 0;
	if (csum)
		inner_sum = hsum + (0xffff - fold(pseudo + l4len));

	__u64 segs = skb->gso_segs;
	if (segs == 0)
		segs = 1;
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2(GUE_LEN);
	flags |= v6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4;
	if (bpf_skb_adjust_room(skb, overhead, BPF_ADJ_ROOM_MAC, flags))
		return pass(CTR_ADJUST_ERR);

	/* From here on the packet is the outer one; the room is zeroed. */
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	__u8 *ip = data + ETH_HLEN;
	__u32 iplen = v6 ? 40 : 20;
	__u32 ulen = total - iplen;
	__u64 usum = 0; /* outer pseudo-header + UDP + GUE words but the checksum */
	if (v6) {
		if ((void *)(ip + OVERHEAD6) > end)
			return TC_ACT_SHOT; /* cannot happen: the room is linear */
		*(__u32 *)ip = bpf_htonl(6u << 28 | tos << 20 | (v->label & 0xfffff));
		*(__u16 *)(ip + 4) = bpf_htons(ulen);
		ip[6] = IPPROTO_UDP;
		ip[7] = 64;
		__builtin_memcpy(ip + 8, key.src, 16);
		__builtin_memcpy(ip + 24, v->backend, 16);
		if (csum) {
#pragma unroll
			for (int i = 8; i < 40; i += 2)
				usum += be16(ip + i);
		}
	} else {
		if ((void *)(ip + OVERHEAD4) > end)
			return TC_ACT_SHOT;
		ip[0] = 0x45;
		ip[1] = tos;
		*(__u16 *)(ip + 2) = bpf_htons(total);
		*(__u16 *)(ip + 6) = bpf_htons(0x4000); /* DF, ID 0 */
		ip[8] = 64;
		ip[9] = IPPROTO_UDP;
		__builtin_memcpy(ip + 12, &key.src[12], 4);
		__builtin_memcpy(ip + 16, v->backend, 4);
		__u64 s = 0x4500 + tos + total + 0x4000 + (64 << 8 | IPPROTO_UDP) + be16(ip + 12) +
			  be16(ip + 14) + be16(ip + 16) + be16(ip + 18);
		*(__u16 *)(ip + 10) = bpf_htons(~fold(s) & 0xffff);
		usum = be16(ip + 12) + be16(ip + 14) + be16(ip + 16) + be16(ip + 18);
	}
	__u8 *udp = ip + iplen;
	*(__u16 *)udp = bpf_htons(v->sport);
	*(__u16 *)(udp + 2) = bpf_htons(v->port);
	*(__u16 *)(udp + 4) = bpf_htons(ulen);
	udp[9] = proto; /* GUE: version 0, C 0, Hlen 0; Proto/ctype; flags 0 */
	if (csum) {
		usum += IPPROTO_UDP + 2 * ulen + v->sport + v->port + proto + inner_sum;
		__u32 c = ~fold(usum) & 0xffff;
		if (c == 0)
			c = 0xffff;
		*(__u16 *)(udp + 6) = bpf_htons(c);
	}

	__u64 bytes = skb->len;
	/* The coarse clock, and a write at most once a second: writing
	 * bpf_ktime_get_ns every packet cost ~14 ns more per packet here
	 * (BenchmarkEgress); the atomic adds cost nothing measurable. */
	__u64 now = bpf_ktime_get_coarse_ns();
	if (now - v->used > 1000000000ull)
		v->used = now;
	__sync_fetch_and_add(&v->packets, segs);
	__sync_fetch_and_add(&v->bytes, bytes);
	count_n(CTR_DIRECT, segs);
	count_n(CTR_DIRECT_BYTES, bytes);
	if (l4proto == IPPROTO_TCP && (tcpflags & (TCP_FIN | TCP_RST))) {
		if (!v->ended)
			v->ended = 1;
		count(CTR_ENDED);
	}
	if (no_fib)
		return TC_ACT_OK;
	__builtin_memcpy(data, fib.dmac, ETH_ALEN);
	__builtin_memcpy(data + ETH_ALEN, fib.smac, ETH_ALEN);
	/* BPF_FIB_LOOKUP_OUTPUT looks up routes out of skb->ifindex only (a
	 * backend routed by another interface is CTR_NO_ROUTE), so this is
	 * defensive. */
	if (fib.ifindex != skb->ifindex)
		return bpf_redirect(fib.ifindex, 0);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual MIT/GPL";
