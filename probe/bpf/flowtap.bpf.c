/* flowtap.bpf.c: the live probe, compiled by BCC. Entry programs:
 *   ft_tc_ingress, ft_tc_egress  TC clsact (cls_bpf direct-action), hosts: both directions of local traffic;
 *   ft_xdp                       XDP ingress, mirror ports (SPAN/ERSPAN);
 *   ft_xdp_pass                  bare `return XDP_PASS`, the benchmark's baseline.
 * Every packet is parsed with the functions of ext/ft_parse.h, the parser replay uses, into struct ft_pkt
 * (ext/ft_record.h); then counted by exit reason (probe_counters), added to its flow's exact counters
 * (flow_stats), and sent to user space as one ring-buffer sample (pkt_events: a compact record, see ft_live.h),
 * with a payload snippet while DPI may still need it (flow not in `classified`, within FT_SNIPPET_BUDGET).
 * Layouts and counter indices: ft_live.h. Settings: -D flags from probe/live.py BpfConfig (`flowtap
 * dump-bpf` prints the exact source and flags).
 *
 * Why stages. ft_parse() inlined into one program is at the edge of the verifier's 1M-instruction budget
 * (measured on 6.18 with plain clang -O2 -target bpf: 911k instructions processed, 42k states; with -mcpu=v3,
 * or as BCC compiles it, or with anything after it in the same program, it fails). Its loops multiply:
 * VLAN tags x MPLS labels x IPv6 extension headers x TCP options x tunnel levels. So this file runs the same
 * parse functions (ft_parse_link, ft_parse_l2_tags, ft_parse_ipv4/6, ft_parse_tcp/udp/icmp/roce/gre/vxlan,
 * ft_enter_tunnel) in the same order as ft_parse()'s loop, but split at two points into tail-called programs,
 * each verified from a clean state, so their costs add instead of multiplying:
 *   entry (L2 + IP of the outer packet) -> l4 stage (TCP/UDP/ICMP/RoCE, or a tunnel header)
 *        -> [tunnel: l3 stage (L2 + IP of the inner packet) -> l4 stage, at most FT_PARSE_MAX_TUNNEL times]
 *        -> account (counters, flow_stats, snippet, ring buffer): inlined at the end of the l4 stage, so a
 *           packet the fast path (below) declines takes one tail call; its own program only after a parse
 *           that ended earlier.
 * The state ft_parse() keeps in locals between its steps lives in the per-CPU scratch slot (a tail call stays
 * on its CPU).
 *
 * Fast path. Before the stages, the entry program tries ft_parse_fast_ether() (ext/ft_parse_fast.h): a
 * straight-line parse of the common frames (Ethernet with at most one VLAN tag; IPv4 without options and not
 * a fragment, or IPv6 straight to TCP/UDP; TCP without options or with NOP,NOP,TS; UDP, RoCEv2 included). It
 * fills the same record and the entry program does the accounting itself, with no tail call; any other
 * frame it declines without writing, and the stages parse it as before (FT_LC_FAST_PARSED counts the fast
 * ones). tests/test_live_parity.py runs every frame of the nDPI captures through this program
 * (BPF_PROG_TEST_RUN) and through the replay parser and requires identical records.
 *
 * The TC programs return TC_ACT_UNSPEC, which makes cls_bpf go on to the next filter: flowtap observes and
 * never decides the fate of a packet, so the programs of others (CNIs) on the same hook still run after it.
 * XDP programs return XDP_PASS. ft_parse.h subtracts packet pointers, which needs CAP_PERFMON or
 * CAP_SYS_ADMIN in the loader. BCC parses with the host's target, so the loader defines __bpf__ itself.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "ft_parse.h"
#include "ft_parse_fast.h"
#include "ft_live.h"

BPF_RINGBUF_OUTPUT(pkt_events, FT_RING_BYTES / 4096);
BPF_TABLE("hash", struct ft_live_key, struct ft_live_flow, flow_stats, FT_FLOW_MAP_ENTRIES);
/* LRU: user space marks flows as DPI finishes them; when full, the oldest mark goes (that flow sends
 * snippets again until marked again) rather than new marks being refused. */
BPF_TABLE("lru_hash", struct ft_live_key, ft_u64, classified, FT_CLASSIFIED_ENTRIES);
/* One per-CPU slot of FT_LC__END counters: one lookup per packet, then plain indexed adds. */
BPF_PERCPU_ARRAY(probe_counters, struct ft_live_counters, 1);
BPF_PERCPU_ARRAY(scratch, struct ft_live_scratch, 1);

/* Tail-call slots, one array per program type (a program array serves one type); the loader fills them. */
#define FT_SLOT_L3 0
#define FT_SLOT_L4 1
#define FT_SLOT_ACCOUNT 2
BPF_PROG_ARRAY(tc_next, 3);
BPF_PROG_ARRAY(xdp_next, 3);

/* Adds v to per-CPU counter idx (an ft_reason or ft_live_counter); outside the hot path (failed tail call). */
static __always_inline void ft_count(ft_u32 idx, ft_u64 v)
{
    ft_u32 zero = 0;
    struct ft_live_counters *c = probe_counters.lookup(&zero);

    if (c && idx < FT_LC__END)
        c->n[idx] += v; /* per-CPU slot, and a program does not migrate mid-run: no atomic needed */
}

/* Fills the bidirectional key of the record as the engine's make_key does (ext/_flowtable.pyx): returns 0
 * when the packet has no flow (no L3, or TCP/UDP without ports and not a fragment), 1 when endpoint a is the
 * packet's source, 2 when it is its destination. Addresses compare in memcmp order: big-endian 64-bit halves. */
static __always_inline int ft_live_key_of(const struct ft_pkt *p, struct ft_live_key *k)
{
    ft_u64 s_hi, s_lo, d_hi, d_lo;
    ft_u16 sport = 0, dport = 0;
    int has_ports, src_first;

    if (!(p->flags & FT_F_L3))
        return 0;
    has_ports = (p->flags & FT_F_L4) && (p->proto == 6 || p->proto == 17);
    if ((p->proto == 6 || p->proto == 17) && !has_ports && !(p->flags & FT_F_FRAG))
        return 0;
    if (has_ports) {
        sport = p->sport;
        dport = p->dport;
    }
    s_hi = ft_load_be64(p->src_addr);
    s_lo = ft_load_be64(p->src_addr + 8);
    d_hi = ft_load_be64(p->dst_addr);
    d_lo = ft_load_be64(p->dst_addr + 8);
    if (s_hi != d_hi)
        src_first = s_hi < d_hi;
    else if (s_lo != d_lo)
        src_first = s_lo < d_lo;
    else
        src_first = sport <= dport;

    k->ip_version = p->ip_version;
    k->proto = p->proto;
    k->vlan_id = p->vlan_id;
    k->tunnel_id = p->tunnel_id;
    k->_pad = 0;
    if (src_first) {
        __builtin_memcpy(k->addr_a, p->src_addr, 16);
        __builtin_memcpy(k->addr_b, p->dst_addr, 16);
        k->port_a = sport;
        k->port_b = dport;
        return 1;
    }
    __builtin_memcpy(k->addr_a, p->dst_addr, 16);
    __builtin_memcpy(k->addr_b, p->src_addr, 16);
    k->port_a = dport;
    k->port_b = sport;
    return 2;
}

/* Adds the packet to its flow's exact counters, creating the entry when there is room; a full map counts
 * FT_LC_FLOW_MAP_FULL and the packet stays counted in probe_counters only. Returns how many payload packets
 * the flow had before this one (capped at FT_SNIPPET_BUDGET; 0 without an entry), and in *fp the flow's
 * entry when it existed before this packet (else NULL). */
static __always_inline ft_u32 ft_flow_update(const struct ft_live_key *k, int a_is_src, const struct ft_pkt *p,
                                             ft_u64 segs, ft_u64 l3_bytes, ft_u64 *c, struct ft_live_flow **fp)
{
    struct ft_live_flow *f = flow_stats.lookup((struct ft_live_key *)k);
    ft_u32 cpu = bpf_get_smp_processor_id();
    int d = a_is_src ? 0 : 1;
    ft_u32 has_payload = (p->flags & FT_F_L4) && p->payload_len > 0, seen;

    if (!f) {
        struct ft_live_flow init = {};
        int err;

        init.first_ns = p->ts_ns;
        init.last_ns = p->ts_ns;
        init.owner_cpu = cpu;
        init.own_packets[d] = segs; /* the new entry holds this packet already: no second lookup */
        init.own_bytes[d] = l3_bytes;
        init.payload_pkts = has_payload;
        err = flow_stats.insert((struct ft_live_key *)k, &init);
        if (err == 0) {
            c[FT_LC_FLOW_PACKETS] += segs;
            return 0;
        }
        if (err != -17) { /* -E2BIG: map full; -EEXIST: another CPU created it meanwhile (add below) */
            c[FT_LC_FLOW_MAP_FULL] += 1;
            return 0;
        }
        f = flow_stats.lookup((struct ft_live_key *)k);
        if (!f)
            return 0;
    }
    *fp = f;
    if (f->owner_cpu == cpu) { /* only this CPU writes these (ft_live.h): plain adds stay exact */
        f->own_packets[d] += segs;
        f->own_bytes[d] += l3_bytes;
    } else {
        __sync_fetch_and_add(&f->packets[d], segs);
        __sync_fetch_and_add(&f->bytes[d], l3_bytes);
    }
    f->last_ns = p->ts_ns; /* racy between CPUs by a few ns at most; informational */
    c[FT_LC_FLOW_PACKETS] += segs;
    if (p->proto == FT_IPPROTO_TCP && (p->tcp_flags & 0x12) == 0x02) {
        /* a SYN without ACK opens a new connection on this 4-tuple: DPI starts over (the engine starts a new
         * flow), so the snippet budget restarts and an earlier connection's mark goes */
        f->payload_pkts = 0;
        classified.delete((struct ft_live_key *)k);
    }
    seen = f->payload_pkts;
    if (has_payload && seen < FT_SNIPPET_BUDGET)
        f->payload_pkts = seen + 1;
    return seen;
}

/* Returns the payload snippet length to send for this record: min(FT_SNAP_LEN, payload bytes in the frame)
 * while DPI may still read it, else 0. `seen` (the flow's earlier payload packets) beyond the DPI budget ends
 * snippets without a map lookup, so a long flow pays for `classified` only in its first packets; RoCEv2 is
 * exempt (RDMA CM messages may come at any time and are never marked). A flow found marked gets its count
 * set to the budget in its entry f (when it has one), so its later packets skip the `classified` lookup too
 * (a plain store: a lost race costs one more lookup); a SYN resets it with the mark (ft_flow_update). */
static __always_inline ft_u32 ft_snippet_len(const struct ft_pkt *p, const struct ft_live_key *k, ft_u32 seen,
                                             struct ft_live_flow *f)
{
    ft_u32 avail;

    if (FT_SNAP_LEN == 0 || !(p->flags & FT_F_L4) || p->payload_len == 0)
        return 0;
    if (p->payload_off >= p->wire_len)
        return 0;
    if (seen >= FT_SNIPPET_BUDGET && !(p->proto == FT_IPPROTO_UDP && p->dport == FT_UDP_PORT_ROCEV2))
        return 0;
    if (classified.lookup((struct ft_live_key *)k)) {
        if (f)
            f->payload_pkts = FT_SNIPPET_BUDGET;
        return 0;
    }
    avail = p->wire_len - p->payload_off;
    if (avail > p->payload_len)
        avail = p->payload_len;
    return avail > FT_SNAP_LEN ? FT_SNAP_LEN : avail;
}

/* Returns data + off when off is a header offset the verifier can track (see ft_cursor_forget), else NULL. */
static __always_inline const ft_u8 *ft_at(const ft_u8 *data, ft_u32 off)
{
    asm volatile("" : "+r"(off));
    if (off > FT_BPF_MAX_HDR_OFF)
        return 0;
    return data + off;
}

/* Starts the record of one packet in this CPU's scratch slot and returns the slot, or NULL. data..data_end is
 * the linear part of a frame of wire_len bytes. FT_F_TRUNC stays clear: no snap length cuts what the kernel
 * sees; a header beyond the linear part of a non-linear skb ends the parse with a truncated_* reason. */
static __always_inline struct ft_live_scratch *ft_begin(const ft_u8 *data, const ft_u8 *data_end,
                                                       ft_u32 wire_len, ft_u32 ifindex, ft_u8 direction,
                                                       ft_u32 gso_segs, ft_u32 gso_size)
{
    struct ft_live_scratch *s;
    ft_u32 zero = 0;

    s = scratch.lookup(&zero);
    if (!s)
        return 0;
    __builtin_memset(&s->smp.rec, 0, sizeof(s->smp.rec));
    s->smp.rec.ts_ns = bpf_ktime_get_ns(); /* monotonic; user space adds the wall-clock offset, once */
    s->smp.rec.wire_len = wire_len;
    s->smp.rec.cap_len = (ft_u32)(data_end - data);
    s->smp.rec.iface = (ft_u16)ifindex;
    s->smp.rec.direction = direction;
    s->smp.rec.linktype = FT_LINKTYPE_ETHERNET;
    s->smp.h.gso_segs = gso_segs > 1 ? gso_segs : 1;
    s->smp.h.gso_size = gso_segs > 1 ? (ft_u16)gso_size : 0;
    s->smp.h.snippet_len = 0;
    s->st.off = 0;
    s->st.nx = FT_NX_ETHER; /* what ft_parse_link() answers for Ethernet */
    s->st.etype = 0;
    s->st.level = 0;
    s->st.l4_len = 0;
    return s;
}

/* L3 stage, one decapsulation level: the body of ft_parse()'s loop up to the L4 dispatch. Returns FT_OK
 * with s->st.off on the L4 header and s->st.l4_len set (the caller enters the L4 stage), or the exit reason
 * (stored in the record; the caller enters the account stage). */
static __always_inline int ft_stage_l3(struct ft_live_scratch *s, const ft_u8 *data, const ft_u8 *data_end)
{
    struct ft_pkt *p = &s->smp.rec;
    const ft_u8 *pos = ft_at(data, s->st.off);
    ft_u32 l4_len = 0;
    ft_u16 etype = s->st.etype;
    int r;

    if (!pos) {
        r = FT_R_TRUNC_L2;
        goto out;
    }
    r = ft_parse_to_l4(data, data_end, s->st.nx, etype, &pos, p, &l4_len);
    if (r != FT_OK)
        goto out;
    s->st.off = (ft_u16)(pos - data);
    s->st.l4_len = l4_len;
    return FT_OK;
out:
    p->reason = (ft_u8)r;
    return r;
}

/* L4 stage: the L4 dispatch of ft_parse()'s loop. Returns 1 when a tunnel was entered (s->st holds the inner
 * frame's position: the caller enters the L3 stage again), 0 when the record is complete (reason stored). */
static __always_inline int ft_stage_l4(struct ft_live_scratch *s, const ft_u8 *data, const ft_u8 *data_end)
{
    struct ft_pkt *p = &s->smp.rec;
    const ft_u8 *pos = ft_at(data, s->st.off);
    ft_u32 l4_len = s->st.l4_len, tun_id = 0;
    ft_u16 etype = 0;
    ft_u8 tun_type = FT_TUN_NONE;
    int nx = FT_NX_NONE, r = FT_OK;

    if (!pos) {
        r = FT_R_TRUNC_L4;
        goto out;
    }
    switch (p->proto) {
    case FT_IPPROTO_TCP:
        r = ft_parse_tcp(pos, data, data_end, l4_len, p);
        goto out;
    case FT_IPPROTO_UDP:
        r = ft_parse_udp(pos, data, data_end, l4_len, p);
        if (r != FT_OK)
            goto out;
        if (p->dport == FT_UDP_PORT_ROCEV2) {
            r = ft_parse_roce(pos + 8, data_end, p->payload_len, p);
            goto out;
        }
        if (p->dport != FT_UDP_PORT_VXLAN)
            goto out;
        pos += 8;
        r = ft_parse_vxlan(&pos, data_end, &tun_id);
        if (r != FT_OK)
            goto out;
        tun_type = FT_TUN_VXLAN;
        nx = FT_NX_ETHER;
        break;
    case FT_IPPROTO_ICMP:
    case FT_IPPROTO_ICMPV6:
        r = ft_parse_icmp(pos, data, data_end, l4_len, p);
        goto out;
    case FT_IPPROTO_GRE:
        r = ft_parse_gre(&pos, data_end, &nx, &etype, &tun_type, &tun_id);
        if (r != FT_OK || nx == FT_NX_NONE)
            goto out;
        break;
    default: /* ESP, SCTP, OSPF, ...: metered on addresses and protocol */
        goto out;
    }
    if (s->st.level >= FT_PARSE_MAX_TUNNEL) { /* one more would exceed the bound: meter the packet we have */
        r = FT_R_TUNNEL_DEPTH;
        goto out;
    }
    ft_enter_tunnel(p, tun_type, tun_id, nx == FT_NX_ETHER);
    s->st.level++;
    s->st.off = (ft_u16)(pos - data);
    s->st.nx = (ft_u8)nx;
    s->st.etype = etype;
    return 1;
out:
    p->reason = (ft_u8)r;
    return 0;
}

/* Returns how many leading bytes of the record hold what the parse may have written (FT_LIVE_REC_*, see
 * ft_live.h): the rest of the record is still the zeros ft_begin() wrote. Sections by what fills them: RoCE
 * fields (ft_parse_roce, also on a truncated BTH) only behind UDP port 4791, tunnel fields only through
 * ft_enter_tunnel (tunnel_depth > 0), SACK blocks only with tcp_sack_count > 0. */
static __always_inline ft_u32 ft_live_rec_len(const struct ft_pkt *p)
{
    if (p->proto == FT_IPPROTO_UDP && p->dport == FT_UDP_PORT_ROCEV2)
        return FT_LIVE_REC_FULL;
    if (p->tunnel_depth || p->tunnel_type)
        return FT_LIVE_REC_TUNNEL;
    if (p->tcp_sack_count)
        return FT_LIVE_REC_SACK;
    return FT_LIVE_REC_BASE;
}

/* Account stage: counters, flow_stats, snippet and ring-buffer record for the record in scratch slot s. Run in
 * the entry program after the fast parse (the common path: no tail call), at the end of the L4 stage (one
 * tail call), and as its own program after an entry or L3 stage that ended the parse. is_xdp is a
 * compile-time constant after inlining, so each program keeps only its own helper calls; fast (also a
 * constant) says the entry program parsed the frame itself. */
static __always_inline void ft_account(void *ctx, struct ft_live_scratch *s, int is_xdp, int fast)
{
    struct ft_live_key key;
    ft_u64 snip = 0, segs, hdrs, l3_bytes, wire_bytes, rec_len, wake;
    ft_u32 zero = 0, reason;
    struct ft_live_counters *cs;
    ft_u64 *c;
    int side;

    cs = probe_counters.lookup(&zero);
    if (!cs)
        return;
    c = cs->n;
    reason = s->smp.rec.reason;
    /* A GSO super-packet stands for segs wire packets, each with its own copy of the headers: the counters
     * say what went on the wire, as the records will once the drain has cut them (ext/ft_ring.h). */
    segs = s->smp.h.gso_segs;
    l3_bytes = s->smp.rec.l3_len;
    wire_bytes = s->smp.rec.wire_len;
    /* Cut only what the drain can cut as the kernel will: TCP or UDP with a payload that fills segs - 1
     * segments of gso_size and part of one more. Anything else counts as the one packet it is here. */
    if (segs > 1 && (s->smp.rec.flags & FT_F_L4) && (s->smp.rec.proto == 6 || s->smp.rec.proto == 17) &&
        s->smp.h.gso_size > 0 && s->smp.rec.payload_len < s->smp.rec.l3_len &&
        s->smp.rec.payload_len < s->smp.rec.wire_len &&
        s->smp.rec.payload_len > (segs - 1) * s->smp.h.gso_size && s->smp.rec.payload_len <= segs * s->smp.h.gso_size) {
        hdrs = s->smp.rec.l3_len - s->smp.rec.payload_len;
        l3_bytes = segs * hdrs + s->smp.rec.payload_len;
        wire_bytes = segs * (s->smp.rec.wire_len - s->smp.rec.payload_len) + s->smp.rec.payload_len;
        c[FT_LC_GSO_PACKETS] += 1;
    } else {
        segs = 1;
        s->smp.h.gso_segs = 1;
        s->smp.h.gso_size = 0;
    }
    /* per-CPU slot, and a program does not migrate mid-run: no atomics */
    c[reason < FT_R__COUNT ? reason : FT_R__COUNT - 1] += segs;
    c[FT_LC_PACKETS] += segs;
    c[FT_LC_WIRE_BYTES] += wire_bytes;
    if (fast)
        c[FT_LC_FAST_PARSED] += segs;

    __builtin_memset(&key, 0, sizeof(key));
    side = ft_live_key_of(&s->smp.rec, &key);
    if (side) {
        struct ft_live_flow *f = 0;
        ft_u32 seen = ft_flow_update(&key, side == 1, &s->smp.rec, segs, l3_bytes, c, &f);

        snip = ft_snippet_len(&s->smp.rec, &key, seen, f);
    } else {
        c[FT_LC_NOT_METERED] += segs;
    }
    if (!FT_WANT_RECORDS)
        return;

    rec_len = ft_live_rec_len(&s->smp.rec);
    asm volatile("" : "+r"(rec_len));
    if (rec_len > FT_LIVE_REC_FULL) /* never; tells the verifier the bound of the snippet's offset */
        rec_len = FT_LIVE_REC_FULL;
#if FT_SNAP_LEN > 0
    /* Two separate checks, each behind a compiler barrier: clang otherwise fuses them into one unsigned
     * (snip - 1) <= FT_SNAP_LEN - 1 test on a copy of the register, and the verifier then sees no bound on
     * the register passed as the helper's length. */
    asm volatile("" : "+r"(snip));
    if (snip > FT_SNAP_LEN)
        snip = 0;
    asm volatile("" : "+r"(snip));
    if (snip != 0) {
        ft_u8 *dst = (ft_u8 *)&s->smp.rec + rec_len; /* right after the bytes sent (ft_live.h) */
        long err;

        if (is_xdp)
            err = bpf_xdp_load_bytes(ctx, s->smp.rec.payload_off, dst, snip);
        else
            err = bpf_skb_load_bytes(ctx, s->smp.rec.payload_off, dst, snip);
        if (err)
            snip = 0;
    }
#else
    (void)ctx;
    (void)is_xdp;
#endif
    s->smp.h.snippet_len = (ft_u16)snip;
    s->smp.h.rec_len = (ft_u16)rec_len;
    /* Wake the reader at every FT_RING_WAKE_EVERY-th record of this CPU only: a wake-up per record (the
     * default when the reader has caught up) costs the producer an irq_work and the reader a context switch
     * per packet, which capped live rates at a few tens of thousands of packets per second here. The reader
     * also polls with a short timeout (probe/live.py POLL_S), which picks up the records in between. (BCC 0.26
     * has no bpf_ringbuf_query, which would allow waking on the bytes waiting instead.) */
    wake = (c[FT_LC_RING_RECORDS] & (FT_RING_WAKE_EVERY - 1)) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    if (pkt_events.ringbuf_output(&s->smp, FT_LIVE_SAMPLE_HDR + rec_len + snip, wake) == 0) {
        c[FT_LC_RING_RECORDS] += 1;
        if (snip)
            c[FT_LC_SNIPPETS] += 1;
    } else {
        c[FT_LC_RING_FULL] += 1;
        c[FT_LC_RING_FULL_PACKETS] += segs;
    }
}

/* Tail calls return only when they fail (empty slot): count it, the packet is otherwise invisible. BCC
 * rewrites map calls only outside macros, hence one function per program type. */
static __always_inline void ft_tc_next(struct __sk_buff *skb, int slot)
{
    tc_next.call(skb, slot);
    ft_count(FT_LC_TAIL_CALL_FAILED, 1);
}

static __always_inline void ft_xdp_next(struct xdp_md *ctx, int slot)
{
    xdp_next.call(ctx, slot);
    ft_count(FT_LC_TAIL_CALL_FAILED, 1);
}

#define FT_SKB_DATA(skb) ((const ft_u8 *)(long)(skb)->data)
#define FT_SKB_END(skb) ((const ft_u8 *)(long)(skb)->data_end)
#define FT_XDP_DATA(x) ((const ft_u8 *)(long)(x)->data)
#define FT_XDP_END(x) ((const ft_u8 *)(long)(x)->data_end)

/* Entry, TC: the outer packet's L3 stage, then the L4 or account stage. */
static __always_inline int ft_tc_entry(struct __sk_buff *skb, ft_u8 direction)
{
    struct ft_live_scratch *s = ft_begin(FT_SKB_DATA(skb), FT_SKB_END(skb), skb->len, skb->ifindex, direction,
                                         skb->gso_segs, skb->gso_size);

    if (!s)
        return TC_ACT_UNSPEC;
    if (ft_parse_fast_ether(FT_SKB_DATA(skb), FT_SKB_END(skb), &s->smp.rec) != FT_FAST_DECLINED) {
        ft_account(skb, s, 0, 1); /* the common frames: parsed here, no tail call */
        return TC_ACT_UNSPEC;
    }
    if (ft_stage_l3(s, FT_SKB_DATA(skb), FT_SKB_END(skb)) == FT_OK)
        ft_tc_next(skb, FT_SLOT_L4);
    else
        ft_tc_next(skb, FT_SLOT_ACCOUNT);
    return TC_ACT_UNSPEC;
}

int ft_tc_ingress(struct __sk_buff *skb)
{
    return ft_tc_entry(skb, FT_DIR_INGRESS);
}

int ft_tc_egress(struct __sk_buff *skb)
{
    return ft_tc_entry(skb, FT_DIR_EGRESS);
}

int ft_tc_l3(struct __sk_buff *skb)
{
    ft_u32 zero = 0;
    struct ft_live_scratch *s = scratch.lookup(&zero);

    if (!s)
        return TC_ACT_UNSPEC;
    if (ft_stage_l3(s, FT_SKB_DATA(skb), FT_SKB_END(skb)) == FT_OK)
        ft_tc_next(skb, FT_SLOT_L4);
    else
        ft_tc_next(skb, FT_SLOT_ACCOUNT);
    return TC_ACT_UNSPEC;
}

int ft_tc_l4(struct __sk_buff *skb)
{
    ft_u32 zero = 0;
    struct ft_live_scratch *s = scratch.lookup(&zero);

    if (!s)
        return TC_ACT_UNSPEC;
    if (ft_stage_l4(s, FT_SKB_DATA(skb), FT_SKB_END(skb)))
        ft_tc_next(skb, FT_SLOT_L3);
    else
        ft_account(skb, s, 0, 0);
    return TC_ACT_UNSPEC;
}

int ft_tc_account(struct __sk_buff *skb)
{
    ft_u32 zero = 0;
    struct ft_live_scratch *s = scratch.lookup(&zero);

    if (s)
        ft_account(skb, s, 0, 0);
    return TC_ACT_UNSPEC;
}

int ft_xdp(struct xdp_md *ctx)
{
    /* bpf_xdp_get_buff_len counts multi-buffer (jumbo) fragments too: the wire length, not just the head */
    struct ft_live_scratch *s = ft_begin(FT_XDP_DATA(ctx), FT_XDP_END(ctx), (ft_u32)bpf_xdp_get_buff_len(ctx),
                                         ctx->ingress_ifindex, FT_DIR_INGRESS, 1, 0);

    if (!s)
        return XDP_PASS;
    if (ft_parse_fast_ether(FT_XDP_DATA(ctx), FT_XDP_END(ctx), &s->smp.rec) != FT_FAST_DECLINED) {
        ft_account(ctx, s, 1, 1); /* the common frames: parsed here, no tail call */
        return XDP_PASS;
    }
    if (ft_stage_l3(s, FT_XDP_DATA(ctx), FT_XDP_END(ctx)) == FT_OK)
        ft_xdp_next(ctx, FT_SLOT_L4);
    else
        ft_xdp_next(ctx, FT_SLOT_ACCOUNT);
    return XDP_PASS;
}

int ft_xdp_l3(struct xdp_md *ctx)
{
    ft_u32 zero = 0;
    struct ft_live_scratch *s = scratch.lookup(&zero);

    if (!s)
        return XDP_PASS;
    if (ft_stage_l3(s, FT_XDP_DATA(ctx), FT_XDP_END(ctx)) == FT_OK)
        ft_xdp_next(ctx, FT_SLOT_L4);
    else
        ft_xdp_next(ctx, FT_SLOT_ACCOUNT);
    return XDP_PASS;
}

int ft_xdp_l4(struct xdp_md *ctx)
{
    ft_u32 zero = 0;
    struct ft_live_scratch *s = scratch.lookup(&zero);

    if (!s)
        return XDP_PASS;
    if (ft_stage_l4(s, FT_XDP_DATA(ctx), FT_XDP_END(ctx)))
        ft_xdp_next(ctx, FT_SLOT_L3);
    else
        ft_account(ctx, s, 1, 0);
    return XDP_PASS;
}

int ft_xdp_account(struct xdp_md *ctx)
{
    ft_u32 zero = 0;
    struct ft_live_scratch *s = scratch.lookup(&zero);

    if (s)
        ft_account(ctx, s, 1, 0);
    return XDP_PASS;
}

int ft_xdp_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
