// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// sluice_offload: the XDP program of an interface whose established flows are
// forwarded in the kernel (node.offload: auto). It is the offloaded half of
// the worker's flow cache; the decisions stay in Go.
//
//   not for a VIP                        -> XDP_PASS (the kernel: ARP, BGP, ssh)
//   VIP, entry of the current generation -> outer headers from the backend's
//                                           template, lengths, checksums -> XDP_TX
//   VIP, anything else                   -> the AF_XDP socket of the RX queue
//                                           (counted by reason)
//
// "Anything else": no entry, an entry of another generation, TCP SYN/FIN/RST,
// fragments, IPv4 options, IPv6 extension headers, ICMP (errors included),
// VLAN-tagged frames, packets too big once encapsulated, inner UDP without a
// checksum when the outer one must be computed, no headroom.
//
// The layouts below are the one definition of the maps: bpf2go generates the
// Go types from this file's BTF (offloadFlowKey, offloadFlowValue, ...).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_REALS 4096 /* backend IDs 0..MAX_REALS-1 can be offloaded */
#define MAX_VIPS 65536
#define HDR_MAX 72 /* Ethernet + 802.1Q + IPv6 + UDP + GUE = 70 */
#define MAX_SNAT 4 /* SNAT address indexes 0..MAX_SNAT-1 can be offloaded */

/* The flow key: flow.Key of the default tenant, with the ports in host order
 * and IPv4 addresses IPv4-mapped (::ffff:a.b.c.d). 40 bytes. */
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 tenant; /* always 0: tagged and VXLAN frames are not offloaded */
	__u8 pad[2];
};

/* An offloaded flow: its backend in generation gen, and what the template
 * needs per flow (derived from the flow hash by the worker: encap.SrcPort,
 * encap.FlowLabel). 24 bytes. */
struct flow_value {
	__u32 gen;
	__u32 real;  /* pipeline.Real.ID */
	__u32 label; /* IPv6 outer flow label */
	__u16 sport; /* GUE outer UDP source port; full-NAT: the SNAT port */
	__u8 kind;   /* KIND_ENCAP or KIND_NAT */
	__u8 nat_addr; /* full-NAT: the SNAT address's index */
	__u64 seen; /* bpf_ktime_get_coarse_ns of a recent packet, at most 1 s old */
};

#define KIND_ENCAP 0
#define KIND_NAT 1

#define TMPL_VALID 1
#define TMPL_V6 2   /* outer IPv6 */
#define TMPL_GUE 4  /* GUE (else IPIP / IP6IP6) */
#define TMPL_CSUM 8 /* compute the outer UDP checksum */

/* The current generation and the half of the template map it uses. */
struct gen {
	__u32 id;
	__u32 half; /* 0 or 1 */
};

/* A backend's outer headers (encap.Template's image without hop list), index
 * half * MAX_REALS + real ID: the next generation's templates are written in
 * the half the current one does not use, before the generation moves. 88
 * bytes. */
struct tmpl {
	__u8 hdr[HDR_MAX];
	__u8 len;    /* header length, Ethernet to GUE */
	__u8 l2_len; /* 14, or 18 with an 802.1Q tag */
	__u8 flags;  /* TMPL_* */
	__u8 pad;
	__u32 ip_sum;  /* IPv4 outer: sum of the constant header words */
	__u32 udp_sum; /* GUE: sum of the constant pseudo-header and UDP/GUE words */
	__u32 mtu;     /* largest outer IP packet; 0: no limit */
};

/* A full-NAT backend's rewrite for one SNAT address (encap.NATTemplate), index
 * (half * MAX_REALS + real ID) * MAX_SNAT + SNAT address index. 56 bytes. */
struct nat_tmpl {
	__u8 l2[20];   /* Ethernet (+802.1Q) header with the packet's EtherType */
	__u8 addr[32]; /* new source (SNAT) then destination (backend): 4+4 or 16+16 */
	__u16 dport;   /* the backend's port, host order */
	__u8 l2_len;   /* 14 or 18 */
	__u8 flags;    /* TMPL_VALID, TMPL_V6 */
};

struct real_ctr {
	__u64 packets;
	__u64 bytes;
};

/* Counters by what happened to a VIP packet. */
enum ctr {
	CTR_TX = 0,          /* forwarded by this program */
	CTR_NO_ENTRY,        /* no offloaded entry */
	CTR_STALE,           /* entry of another generation */
	CTR_TCP_FLAGS,       /* SYN, FIN or RST */
	CTR_FRAGMENT,        /* IPv4 fragment */
	CTR_IP_OPTIONS,      /* IPv4 header with options */
	CTR_PROTO,           /* not TCP/UDP: ICMP, IPv6 extension headers */
	CTR_VLAN,            /* 802.1Q / 802.1ad tagged */
	CTR_TOO_BIG,         /* exceeds the MTU once encapsulated */
	CTR_NO_TEMPLATE,     /* backend without template */
	CTR_NO_CSUM,         /* inner UDP checksum 0, outer checksum needed */
	CTR_HEADROOM,        /* bpf_xdp_adjust_head failed */
	CTR_MALFORMED,       /* truncated, or lengths that disagree */
	CTR_NAT_TX,          /* of CTR_TX, the full-NAT rewrites */
	CTR_NUM,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 1); /* set to the interface's RX queues at load */
	__type(key, __u32);
	__type(value, __u32);
} sluice_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} sluice_vip4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u8[16]);
	__type(value, __u8);
} sluice_vip6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 16); /* set from the configuration at load */
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} sluice_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen);
} sluice_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_REALS);
	__type(key, __u32);
	__type(value, struct tmpl);
} sluice_tmpl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_REALS * MAX_SNAT);
	__type(key, __u32);
	__type(value, struct nat_tmpl);
} sluice_nat_tmpl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CTR_NUM);
	__type(key, __u32);
	__type(value, __u64);
} sluice_ctr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct real_ctr);
} sluice_real_ctr SEC(".maps");

/* The action when the RX queue has no socket: XDP_PASS, or XDP_DROP in tests
 * that need to tell a VIP from the rest. */
volatile const __u32 fallback = XDP_PASS;

/* Unused, but they make bpf2go emit the Go types. */
struct flow_key unused_flow_key __attribute__((unused));
struct flow_value unused_flow_value __attribute__((unused));
struct tmpl unused_tmpl __attribute__((unused));
struct real_ctr unused_real_ctr __attribute__((unused));
struct nat_tmpl unused_nat_tmpl __attribute__((unused));
enum ctr unused_ctr __attribute__((unused));

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&sluice_ctr, &c);
	if (v)
		*v += 1;
}

static __always_inline int to_user(struct xdp_md *ctx, __u32 reason)
{
	count(reason);
	return bpf_redirect_map(&sluice_xsks, ctx->rx_queue_index, fallback);
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
#define TCP_SYN 0x02
#define TCP_RST 0x04

/* write_hdr copies the template's n header bytes to data (n one of the
 * shapes encap.Compile builds). */
#define COPY_CASE(N)                                                           \
	case N:                                                                \
		if (data + N > end)                                            \
			return -1;                                             \
		__builtin_memcpy(data, t->hdr, N);                             \
		return 0;

static __always_inline int write_hdr(void *data, void *end, const struct tmpl *t)
{
	switch (t->len) {
		COPY_CASE(34) /* IPIP, IPv4 */
		COPY_CASE(38) /* IPIP, IPv4, 802.1Q */
		COPY_CASE(46) /* GUE, IPv4 */
		COPY_CASE(50) /* GUE, IPv4, 802.1Q */
		COPY_CASE(54) /* IP6IP6 */
		COPY_CASE(58) /* IP6IP6, 802.1Q */
		COPY_CASE(66) /* GUE, IPv6 */
		COPY_CASE(70) /* GUE, IPv6, 802.1Q */
	}
	return -1;
}

/* fill writes the per-packet fields of the outer headers that start at data
 * with the outer IP header at ipo (14 or 18), as encap.Template.Encap does.
 * total is the outer IP length (IPv4 total length; IPv6 payload + 40). */
static __always_inline int fill(void *data, void *end, const int ipo, const struct tmpl *t,
				const struct flow_value *v, __u32 total, __u32 tos, __u32 proto,
				__u64 inner_sum)
{
	__u8 *ip = data + ipo;
	__u32 iplen;
	if (t->flags & TMPL_V6) {
		iplen = 40;
		if ((void *)(ip + 40) > end)
			return -1;
		*(__u32 *)ip = bpf_htonl(6u << 28 | tos << 20 | (v->label & 0xfffff));
		*(__u16 *)(ip + 4) = bpf_htons(total - 40);
		if (!(t->flags & TMPL_GUE)) {
			ip[6] = proto;
			return 0;
		}
	} else {
		iplen = 20;
		if ((void *)(ip + 20) > end)
			return -1;
		__u64 s = t->ip_sum + tos + total;
		ip[1] = tos;
		*(__u16 *)(ip + 2) = bpf_htons(total);
		if (!(t->flags & TMPL_GUE)) {
			ip[9] = proto;
			s += proto;
		}
		*(__u16 *)(ip + 10) = bpf_htons(~fold(s) & 0xffff);
		if (!(t->flags & TMPL_GUE))
			return 0;
	}
	__u8 *udp = ip + iplen;
	if ((void *)(udp + 12) > end)
		return -1;
	__u32 ulen = total - iplen;
	*(__u16 *)udp = bpf_htons(v->sport);
	*(__u16 *)(udp + 4) = bpf_htons(ulen);
	udp[9] = proto; /* GUE Proto/ctype */
	if (t->flags & TMPL_CSUM) {
		__u64 s = (__u64)t->udp_sum + 2 * ulen + v->sport + proto + inner_sum;
		__u32 c = ~fold(s) & 0xffff;
		if (c == 0)
			c = 0xffff;
		*(__u16 *)(udp + 6) = bpf_htons(c);
	}
	return 0;
}

/* csum_words adds the n big-endian 16-bit words at p (n constant). */
#define CSUM_WORDS(sum, p, n)                                                  \
	_Pragma("unroll") for (int _i = 0; _i < (n); _i++) (sum) += be16((p) + 2 * _i)

/* nat_forward rewrites a full-NAT flow's packet as encap.NATTemplate.Forward
 * does: source SNAT:sport, destination the backend, checksums updated
 * incrementally, the template's Ethernet header; then XDP_TX. l3 and l4 are
 * in bounds (the IP header, and 20 bytes of TCP or 8 of UDP). */
static __always_inline int nat_forward(struct xdp_md *ctx, struct flow_value *v, __u32 half,
				       __u8 *l3, __u8 *l4, __u32 inner_len, int v6, __u32 l4proto,
				       void *end)
{
	if (v->nat_addr >= MAX_SNAT || v->real >= MAX_REALS)
		return to_user(ctx, CTR_NO_TEMPLATE);
	__u32 ti = ((half & 1) * MAX_REALS + v->real) * MAX_SNAT + v->nat_addr;
	struct nat_tmpl *t = bpf_map_lookup_elem(&sluice_nat_tmpl, &ti);
	if (!t || !(t->flags & TMPL_VALID) || !!(t->flags & TMPL_V6) != !!v6 ||
	    (t->l2_len != 14 && t->l2_len != 18))
		return to_user(ctx, CTR_NO_TEMPLATE);
	__u32 csoff = l4proto == IPPROTO_TCP ? 16 : 6;
	__u32 oldc = be16(l4 + csoff);
	__u64 old = 0, new = 0; /* sums of the words that change, old complemented */
	if (v6) {
		CSUM_WORDS(old, l3 + 8, 16);
		CSUM_WORDS(new, t->addr, 16);
		__builtin_memcpy(l3 + 8, t->addr, 32);
	} else {
		CSUM_WORDS(old, l3 + 12, 4);
		CSUM_WORDS(new, t->addr, 4);
		__u32 hc = be16(l3 + 10);
		__u64 s = (0xffff - hc) + (4 * 0xffff - old) + new;
		*(__u16 *)(l3 + 10) = bpf_htons(~fold(s) & 0xffff);
		__builtin_memcpy(l3 + 12, t->addr, 8);
	}
	__u32 oldp = be16(l4) + be16(l4 + 2);
	*(__u16 *)l4 = bpf_htons(v->sport);
	*(__u16 *)(l4 + 2) = bpf_htons(t->dport);
	if (l4proto == IPPROTO_TCP || oldc != 0) {
		__u32 nwords = v6 ? 16 : 4;
		__u64 s = (0xffff - oldc) + (nwords * 0xffff - old) + new + (2 * 0xffff - oldp) +
			  v->sport + t->dport;
		__u32 c = ~fold(s) & 0xffff;
		if (c == 0 && l4proto == IPPROTO_UDP)
			c = 0xffff;
		*(__u16 *)(l4 + csoff) = bpf_htons(c);
	}
	long trail = (long)(end - (void *)(l3 + inner_len));
	if (trail > 0 && bpf_xdp_adjust_tail(ctx, (int)-trail))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, ETH_HLEN - (int)t->l2_len))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (t->l2_len == 18) {
		if (data + 18 > end)
			return XDP_ABORTED;
		__builtin_memcpy(data, t->l2, 18);
	} else {
		if (data + 14 > end)
			return XDP_ABORTED;
		__builtin_memcpy(data, t->l2, 14);
	}
	count(CTR_TX);
	count(CTR_NAT_TX);
	__u32 real = v->real;
	struct real_ctr *rc = bpf_map_lookup_elem(&sluice_real_ctr, &real);
	if (rc) {
		rc->packets++;
		rc->bytes += (__u64)(end - data);
	}
	return XDP_TX;
}

SEC("xdp")
int sluice_offload(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct flow_key key = {};
	__u8 *l3 = data + ETH_HLEN;
	if ((void *)l3 > end)
		return XDP_PASS;
	__u16 et = *(__u16 *)(data + 12);

	if (et == bpf_htons(ETH_P_8021Q) || et == bpf_htons(ETH_P_8021AD)) {
		/* Tagged (a tenant's VLAN, perhaps): the worker classifies it. */
		__u8 *ip = data + 18;
		if ((void *)ip > end)
			return XDP_PASS;
		et = *(__u16 *)(data + 16);
		if (et == bpf_htons(ETH_P_IP)) {
			if ((void *)(ip + 20) > end)
				return XDP_PASS;
			if (!bpf_map_lookup_elem(&sluice_vip4, ip + 16))
				return XDP_PASS;
		} else if (et == bpf_htons(ETH_P_IPV6)) {
			if ((void *)(ip + 40) > end)
				return XDP_PASS;
			if (!bpf_map_lookup_elem(&sluice_vip6, ip + 24))
				return XDP_PASS;
		} else {
			return XDP_PASS;
		}
		return to_user(ctx, CTR_VLAN);
	}

	__u32 inner_len, hlen, l4len, tos, proto, l4proto;
	__u64 pseudo; /* inner pseudo-header sum, without the length */
	__u64 hsum = 0; /* inner IP header sum */
	if (et == bpf_htons(ETH_P_IP)) {
		if ((void *)(l3 + 20) > end)
			return XDP_PASS;
		if (!bpf_map_lookup_elem(&sluice_vip4, l3 + 16))
			return XDP_PASS;
		if ((l3[0] >> 4) != 4)
			return to_user(ctx, CTR_MALFORMED);
		if ((l3[0] & 0x0f) != 5)
			return to_user(ctx, CTR_IP_OPTIONS);
		if (be16(l3 + 6) & 0x3fff)
			return to_user(ctx, CTR_FRAGMENT);
		l4proto = l3[9];
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return to_user(ctx, CTR_PROTO);
		inner_len = be16(l3 + 2);
		hlen = 20;
		tos = l3[1];
		proto = 4; /* IPPROTO_IPIP */
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
			return XDP_PASS;
		if (!bpf_map_lookup_elem(&sluice_vip6, l3 + 24))
			return XDP_PASS;
		if ((l3[0] >> 4) != 6)
			return to_user(ctx, CTR_MALFORMED);
		l4proto = l3[6];
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return to_user(ctx, CTR_PROTO);
		inner_len = 40 + be16(l3 + 4);
		hlen = 40;
		tos = (l3[0] << 4 | l3[1] >> 4) & 0xff;
		proto = 41; /* IPPROTO_IPV6 */
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
		return XDP_PASS;
	}

	/* From here on the packet is a VIP's: what is not forwarded here goes
	 * to the socket. */
	if ((void *)(l3 + inner_len) > end || inner_len < hlen + 8)
		return to_user(ctx, CTR_MALFORMED);
	l4len = inner_len - hlen;
	__u8 *l4 = l3 + hlen;
	__u32 l4csum;
	/* What the worker's parser refuses (packet.BadTCPOffset, BadUDPLength)
	 * goes to it, to be dropped and counted there. */
	if (l4proto == IPPROTO_TCP) {
		if ((void *)(l4 + 20) > end || l4len < 20)
			return to_user(ctx, CTR_MALFORMED);
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20 || doff > l4len)
			return to_user(ctx, CTR_MALFORMED);
		if (l4[13] & (TCP_SYN | TCP_FIN | TCP_RST))
			return to_user(ctx, CTR_TCP_FLAGS);
		l4csum = be16(l4 + 16);
	} else {
		if ((void *)(l4 + 8) > end)
			return to_user(ctx, CTR_MALFORMED);
		__u32 ul = be16(l4 + 4);
		if (ul < 8 || ul > l4len)
			return to_user(ctx, CTR_MALFORMED);
		l4csum = be16(l4 + 6);
	}
	key.sport = be16(l4);
	key.dport = be16(l4 + 2);
	key.proto = l4proto;

	struct flow_value *v = bpf_map_lookup_elem(&sluice_flows, &key);
	if (!v)
		return to_user(ctx, CTR_NO_ENTRY);
	__u32 zero = 0;
	struct gen *gen = bpf_map_lookup_elem(&sluice_gen, &zero);
	if (!gen || v->gen != gen->id)
		return to_user(ctx, CTR_STALE);
	if (v->kind == KIND_NAT) {
		__u64 now = bpf_ktime_get_coarse_ns();
		if (now - v->seen > 1000000000ull)
			v->seen = now;
		return nat_forward(ctx, v, gen->half, l3, l4, inner_len, hlen == 40, l4proto, end);
	}
	__u32 real = v->real;
	if (real >= MAX_REALS)
		return to_user(ctx, CTR_NO_TEMPLATE);
	__u32 ti = (gen->half & 1) * MAX_REALS + real;
	struct tmpl *t = bpf_map_lookup_elem(&sluice_tmpl, &ti);
	if (!t || !(t->flags & TMPL_VALID) || (t->l2_len != 14 && t->l2_len != 18) || t->l2_len > t->len)
		return to_user(ctx, CTR_NO_TEMPLATE);
	__u32 total = inner_len + t->len - t->l2_len;
	if (t->mtu && total > t->mtu)
		return to_user(ctx, CTR_TOO_BIG);

	/* The outer UDP checksum covers the inner packet. The inner packet's
	 * own checksum makes the sum of its transport segment the complement
	 * of its pseudo-header's sum, so the whole sum costs the inner IP
	 * header only (a segment with a wrong checksum gets a wrong outer one,
	 * and the backend drops what was corrupt anyway). */
	__u64 inner_sum = 0;
	if (t->flags & TMPL_CSUM) {
		if (l4proto == IPPROTO_UDP && l4csum == 0)
			return to_user(ctx, CTR_NO_CSUM);
		inner_sum = hsum + (0xffff - fold(pseudo + l4len));
	}

	/* Trailing bytes after the inner packet (Ethernet padding) go. */
	long trail = (long)(end - (void *)(l3 + inner_len));
	if (trail > 0 && bpf_xdp_adjust_tail(ctx, (int)-trail))
		return to_user(ctx, CTR_MALFORMED);
	if (bpf_xdp_adjust_head(ctx, ETH_HLEN - (int)t->len))
		return to_user(ctx, CTR_HEADROOM);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* From here on a failure cannot give the packet back as it came. */
	if (write_hdr(data, end, t))
		return XDP_ABORTED;
	int err;
	if (t->l2_len == 18)
		err = fill(data, end, 18, t, v, total, tos, proto, inner_sum);
	else
		err = fill(data, end, 14, t, v, total, tos, proto, inner_sum);
	if (err)
		return XDP_ABORTED;

	__u64 now = bpf_ktime_get_coarse_ns();
	if (now - v->seen > 1000000000ull)
		v->seen = now;
	count(CTR_TX);
	struct real_ctr *rc = bpf_map_lookup_elem(&sluice_real_ctr, &real);
	if (rc) {
		rc->packets++;
		rc->bytes += (__u64)(end - data);
	}
	return XDP_TX;
}

char __license[] SEC("license") = "Dual MIT/GPL";
