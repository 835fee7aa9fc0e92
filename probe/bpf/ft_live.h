/* ft_live.h: the kernel/user boundary of live capture, beyond struct ft_pkt (ext/ft_record.h): map layouts,
 * counter indices and the defaults of the -D flags. Included by probe/bpf/flowtap.bpf.c (BCC, __bpf__ defined)
 * and by ext/_ring.pyx (the ring drain). probe/live.py mirrors the counter names once, and
 * tests/test_live_layout.py fails when the mirror and this enum disagree.
 *
 * Byte order: as in ft_record.h, every multi-byte field is host order except addresses (network order).
 */
#ifndef FT_LIVE_H
#define FT_LIVE_H
#include "ft_record.h"

/* ---- -D flags: probe/live.py BpfConfig sets every one of them; these defaults only serve a bare compile ---- */
#ifndef FT_SNAP_LEN
#define FT_SNAP_LEN 128            /* payload bytes sent with a record of a not-yet-classified flow (0: none) */
#endif
#ifndef FT_FLOW_MAP_ENTRIES
#define FT_FLOW_MAP_ENTRIES 262144 /* flow_stats capacity; a new flow beyond it counts FT_LC_FLOW_MAP_FULL */
#endif
#ifndef FT_CLASSIFIED_ENTRIES
#define FT_CLASSIFIED_ENTRIES 65536 /* flows user space marked classified (no snippet any more) */
#endif
#ifndef FT_RING_BYTES
#define FT_RING_BYTES (16 << 20)   /* BPF ring buffer size: a power of two, a multiple of the page size */
#endif
#ifndef FT_SNIPPET_BUDGET
#define FT_SNIPPET_BUDGET 16       /* payload packets per flow that may carry a snippet: the engine's DPI budget
                                      (it reads no more); RoCEv2 (UDP 4791) is exempt: the RoCE meter reads CM */
#endif
#ifndef FT_RING_WAKE_EVERY
#define FT_RING_WAKE_EVERY 512     /* records per CPU between two wake-ups of the ring's reader (a power of two) */
#endif
#ifndef FT_WANT_RECORDS
#define FT_WANT_RECORDS 1          /* 0: count in the maps only, send no per-packet record (benchmark baseline) */
#endif

/* Per-CPU counters, map probe_counters. Indices below FT_R__COUNT count packets by parse exit reason (the
 * ft_reason enum, so user space reads them with the replay parser's names). The rest: */
enum ft_live_counter {
    FT_LC_PACKETS = FT_R__COUNT,  /* wire packets: one per run, gso_segs for a GSO super-packet (tc egress) */
    FT_LC_WIRE_BYTES,             /* their wire length (skb->len / XDP buffer length), L2 header included;
                                     a GSO packet's headers counted once per segment */
    FT_LC_NOT_METERED,            /* no flow key (not IP, ports unknown): counted by reason only */
    FT_LC_FLOW_PACKETS,           /* packets added to flow_stats */
    FT_LC_FLOW_MAP_FULL,          /* packets of a new flow that flow_stats had no room for */
    FT_LC_RING_RECORDS,           /* records written to the ring buffer */
    FT_LC_RING_FULL,              /* records lost because the ring buffer was full (user space behind) */
    FT_LC_RING_FULL_PACKETS,      /* the wire packets those records stood for */
    FT_LC_GSO_PACKETS,            /* runs on a GSO super-packet (each record then stands for gso_segs) */
    FT_LC_SNIPPETS,               /* records that carried a payload snippet */
    FT_LC_TAIL_CALL_FAILED,       /* packets whose next stage could not be entered (loader bug: slot empty) */
    FT_LC_FAST_PARSED,            /* packets the entry program parsed itself (ext/ft_parse_fast.h): no tail call */
    FT_LC__END
};

/* The value of probe_counters' single per-CPU slot, indexed by ft_reason and ft_live_counter. */
struct ft_live_counters {
    ft_u64 n[FT_LC__END];
};

/* Bidirectional flow key of flow_stats and classified: the engine's key (ext/ft_flow.h struct ft_key) without
 * the RoCE QP slot. Endpoint a is the lower (address, port) pair in memcmp order, as in the engine, so both
 * directions meet and a user-space lookup can build the key from a flow record. 48 bytes, padding zeroed. */
struct ft_live_key {
    ft_u8 addr_a[16];
    ft_u8 addr_b[16];
    ft_u16 port_a;      /* 0 for protocols without ports and for non-first fragments */
    ft_u16 port_b;
    ft_u8 ip_version;
    ft_u8 proto;
    ft_u16 vlan_id;
    ft_u32 tunnel_id;
    ft_u32 _pad;
};

/* flow_stats value: exact counters. Index 0: a -> b, 1: b -> a. Bytes are IP octets (l3_len), as the engine's
 * src_bytes/dst_bytes. Times are kernel monotonic ns (bpf_ktime_get_ns). A flow's total is packets + own_packets
 * (bytes + own_bytes): the CPU that created the entry (owner_cpu; the one RSS or the sending socket keeps most
 * of a flow's packets on) adds with plain adds to the own_ counters, which no other CPU writes, and every other
 * CPU adds atomically to packets/bytes. A program runs to its end on its CPU without another run of the same
 * hook on that CPU in between (XDP and tc ingress in softirq, tc egress with softirqs off), so the plain adds
 * are exact, as the per-CPU probe_counters and the scratch slot rely on too (a PREEMPT_RT kernel, where
 * softirqs are preemptible threads, would break all three). Measured: 10-15 ns a packet less than atomic
 * adds on every CPU (docs/live.md, Benchmark). */
struct ft_live_flow {
    ft_u64 packets[2];     /* atomic adds, CPUs other than owner_cpu */
    ft_u64 bytes[2];
    ft_u64 first_ns;
    ft_u64 last_ns;
    ft_u32 payload_pkts;   /* packets with L4 payload, both directions, counted up to FT_SNIPPET_BUDGET only,
                              and set to it once the flow is found in `classified`; plain (not atomic) stores:
                              it gates snippets, it is not a reported counter */
    ft_u32 owner_cpu;      /* bpf_get_smp_processor_id() of the packet that created the entry */
    ft_u64 own_packets[2]; /* plain adds, owner_cpu only */
    ft_u64 own_bytes[2];
};

/* The parser's position between two stages (tail calls) of flowtap.bpf.c: what ft_parse() keeps in local
 * variables across the iterations of its decapsulation loop. */
struct ft_parse_state {
    ft_u32 l4_len;   /* L4 header + payload bytes according to the IP header */
    ft_u16 off;      /* frame offset of what the next stage decodes (<= FT_BPF_MAX_HDR_OFF) */
    ft_u16 etype;    /* ethertype for FT_NX_ETYPE */
    ft_u8 nx;        /* enum ft_next: what starts at off (L3 stage) */
    ft_u8 level;     /* decapsulation level: 0 = outer packet */
    ft_u8 _pad[2];
};

/* One ring-buffer sample: a 16-byte header, then the first rec_len bytes of the record (struct ft_pkt), then
 * snippet_len (<= FT_SNAP_LEN) payload bytes starting at the record's payload_off in the frame. The sample is
 * FT_LIVE_SAMPLE_HDR + rec_len + snippet_len bytes long.
 *
 * Compact records. The program zeroes the whole record before parsing, and struct ft_pkt groups its fields by
 * layer, so most records end in zeros: a TCP/UDP/ICMP packet outside a tunnel uses only the first 128 bytes
 * (FT_LIVE_REC_BASE: up to the TCP SACK blocks). rec_len is the shortest prefix that holds every section the
 * parse may have written (ft_live_rec_len in flowtap.bpf.c); the drain (ext/ft_ring.h) copies it and zeroes
 * the rest, so user space sees the full 256-byte record. tests/test_live_layout.py checks the section offsets
 * against PKT_DTYPE, tests/test_live_parity.py the expanded records against the replay parser's.
 *
 * GSO: TCP always builds GSO super-packets, and tc egress runs before they are cut into wire segments
 * (validate_xmit_skb comes after the qdisc), so one record may stand for gso_segs segments of gso_size
 * payload bytes each (the last one shorter). The drain (ext/ft_ring.h) cuts the record into those segments
 * as the kernel's tcp/udp GSO will, so the meters see the packets that go on the wire, as tcpdump does. */
struct ft_live_sample_hdr {
    ft_u32 gso_segs;      /* 1 for an ordinary packet */
    ft_u16 gso_size;      /* payload bytes per segment; 0 for an ordinary packet */
    ft_u16 snippet_len;
    ft_u16 rec_len;       /* bytes of struct ft_pkt in the sample: FT_LIVE_REC_* */
    ft_u16 _pad[3];
};
#define FT_LIVE_REC_BASE 128   /* offsetof(struct ft_pkt, tcp_sack): no SACK blocks, no tunnel, not RoCE */
#define FT_LIVE_REC_SACK 160   /* offsetof(struct ft_pkt, tunnel_type): SACK blocks present */
#define FT_LIVE_REC_TUNNEL 200 /* offsetof(struct ft_pkt, roce_opcode): a tunnel was entered */
#define FT_LIVE_REC_FULL 240   /* offsetof(struct ft_pkt, _reserved): RoCE (UDP 4791); _reserved is never sent */

/* The sample as the program builds it: the snippet goes right after the rec_len bytes sent, inside rec or
 * snippet (rec_len + FT_SNAP_LEN <= sizeof rec + FT_SNAP_LEN). */
struct ft_live_sample {
    struct ft_live_sample_hdr h;
    struct ft_pkt rec;
    ft_u8 snippet[FT_SNAP_LEN > 0 ? FT_SNAP_LEN : 1];
};
#define FT_LIVE_SAMPLE_HDR 16

/* The per-CPU scratch slot: the sample being built and the parser's state between stages. */
struct ft_live_scratch {
    struct ft_live_sample smp;
    struct ft_parse_state st;
};

#endif /* FT_LIVE_H */
