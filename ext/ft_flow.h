/* ft_flow.h: flow-table state and the exported flow record (user space only).
 *
 * struct ft_flow is the per-flow state the table keeps (bytes per flow: FT_FLOW_BYTES, measured by
 * tests/test_flowtable.py and quoted in docs/architecture.md). struct ft_flowrec is what a flow leaves behind
 * when it is exported (idle/active timeout, end of flow, eviction, end of input); the Arrow batch builder
 * turns arrays of it into record batches. Logic lives in _flowtable.pyx.
 */
#ifndef FT_FLOW_H
#define FT_FLOW_H
#include <stddef.h>
#include <stdint.h>
#include "ft_record.h"
/* ---- RoCE meter (issue 4) ---- */
#include "ft_roce.h"
/* ---- end RoCE meter ---- */
#include "ft_tcp.h"   /* TCP meter (issue 3) */
#include "dpi/dpi_types.h" /* DPI (issue 5): struct ft_dpi_state, struct ft_dpi_out */

/* Bidirectional flow key: endpoint A is the lower (address, port) pair, so both directions of a conversation
 * produce the same key. 48 bytes, compared with memcmp: all padding is explicit and zeroed. */
struct ft_key {
    uint8_t addr_a[16];
    uint8_t addr_b[16];
    uint16_t port_a;
    uint16_t port_b;
    uint8_t ip_version;
    uint8_t proto;
    uint16_t vlan_id;
    uint32_t tunnel_id;   /* VXLAN VNI / GRE key / ERSPAN session: the same inner 5-tuple in two overlays
                             is two flows */
    uint32_t qpn;         /* RoCE: destination QP for unpaired directions (the RoCE meter defines pairing);
                             0 for everything else */
};

/* IPFIX flowEndReason (RFC 5102, IANA registry) */
#define FT_END_IDLE 1
#define FT_END_ACTIVE 2
#define FT_END_EOF 3       /* end of flow detected: TCP FIN both ways or RST */
#define FT_END_FORCED 4    /* forced end: the input ended (replay) or the capture stopped */
#define FT_END_RESOURCES 5 /* lack of resources: evicted from a full table */

/* ft_flow.lru_seg: a flow enters on probation and is promoted to established at its first packet that is
 * not its first and, for TCP, carries neither SYN nor RST (the handshake's third packet, or any later one) */
#define FT_SEG_PROBATION 0
#define FT_SEG_ESTABLISHED 1

/* ft_flow.tcp_state bits */
#define FT_TCPS_SYN 0x01      /* initiator's SYN seen */
#define FT_TCPS_SYNACK 0x02   /* responder's SYN/ACK seen */
#define FT_TCPS_FIN_SRC 0x04
#define FT_TCPS_FIN_DST 0x08
#define FT_TCPS_RST 0x10

/* Per-flow state. Direction index 0 = src -> dst (src is the initiator), 1 = dst -> src. */
struct ft_flow {
    struct ft_key key;          /* 48 */
    uint64_t flow_id;           /* sequential in creation order: deterministic for a given input */
    uint64_t first_ns;          /* first packet of the flow */
    uint64_t last_ns;           /* last packet of the flow */
    uint64_t rec_first_ns;      /* first packet of the current record (active-timeout period) */
    uint64_t rec_last_ns;
    uint64_t touch_ns;          /* table time (the largest packet time seen so far, never the packet's own,
                                   which can go back in merged captures) of the flow's last move to the tail
                                   of its recency list: both lists stay ordered by it, so idle expiry can
                                   merge their heads; moves happen at most once per touch_step_ns */
    uint64_t pkts[2];           /* current record period, per direction */
    uint64_t bytes[2];          /* IP octets, current record period */
    uint32_t trunc_pkts;        /* packets of this period cut by the snap length */
    uint32_t frag_pkts;         /* packets of this period that were IP fragments */
    uint32_t hash;              /* full hash of key */
    int32_t hnext;              /* next flow index in the hash chain, -1 ends */
    int32_t lru_prev, lru_next; /* doubly-linked recency list of segment lru_seg, -1 ends */
    uint32_t rec_seq;           /* records already exported for this flow (active timeouts) */
    uint32_t tcp_isn;           /* initiator's SYN sequence number (port-reuse detection) */
    uint16_t tcp_flags[2];      /* OR of TCP flags per direction, current period */
    uint8_t src_is_a;           /* 1 when the initiator is key endpoint A */
    uint8_t tcp_state;          /* FT_TCPS_* */
    uint8_t tos;                /* TOS/traffic class of the first packet from src */
    uint8_t tunnel_type;        /* enum ft_tunnel of the first packet */
    uint8_t icmp_type;          /* first ICMP type/code from src */
    uint8_t icmp_code;
    uint8_t has_icmp;
    uint8_t lru_seg;            /* FT_SEG_*: which recency list holds the flow (eviction policy:
                                   _flowtable.pyx evict_victim); taken from padding, the size is unchanged */
    uint8_t _pad[2];
    uint16_t outer_vlan_id;
    uint16_t iface;             /* interface (pcapng) of the first packet */
    /* ---- RoCE meter (issue 4): only RoCE flows (key.qpn != 0) have one, from a pool of stable chunks;
     * embedded in every flow, its 1952 bytes made a mixed replay 1.5x slower and doubled its memory ---- */
    struct ft_roce_meter *roce;
    /* ---- TCP meter (issue 3): only TCP flows have one, from a pool like the RoCE meters'; embedded in every
     * flow, its 1192 bytes scattered each TCP packet's state over five cache lines and cost 37 % of replay
     * throughput (docs/tcp.md, Cost) ---- */
    struct ft_tcp_meter *tcp;
    /* ---- DPI (issue 5) ---- */
    struct ft_dpi_state dpi;    /* 40 bytes: candidates, budget, verdict (ext/dpi/dpi_types.h) */
};

/* One exported flow record, oriented: src = initiator. Arrays of these are turned into Arrow columns. */
struct ft_flowrec {
    uint64_t flow_id;
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t src_packets;
    uint64_t dst_packets;
    uint64_t src_bytes;
    uint64_t dst_bytes;
    uint8_t src_addr[16];
    uint8_t dst_addr[16];
    uint32_t rec_seq;
    uint32_t tunnel_id;
    uint32_t truncated_packets;
    uint32_t fragment_packets;
    uint16_t src_port;
    uint16_t dst_port;
    uint16_t vlan_id;
    uint16_t outer_vlan_id;
    uint16_t src_tcp_flags;
    uint16_t dst_tcp_flags;
    uint16_t iface;
    uint8_t ip_version;
    uint8_t proto;
    uint8_t end_reason;
    uint8_t tos;
    uint8_t tunnel_type;
    uint8_t icmp_type;
    uint8_t icmp_code;
    uint8_t has_icmp;
    uint8_t _pad[4];
    /* ---- RoCE meter (issue 4): row of this record's struct ft_roce_out in the batch's side array of RoCE
     * parts, -1 for other flows (a 1512-byte part in every record cost more than the records) ---- */
    int32_t roce_row;
    /* ---- TCP meter (issue 3): row of this record's struct ft_tcp_out in the batch's side array of TCP
     * parts, -1 for other flows (its 560 bytes in every record were most of the record) ---- */
    int32_t tcp_row;
    /* ---- DPI (issue 5): row of this record's struct ft_dpi_out (448 bytes: label ids, confidence, server
     * name, ALPN, ...) in the batch's side array of DPI parts, -1 when DPI is off. Kept out of the record
     * so that the columns every run builds read 160-byte records, not 608-byte ones ---- */
    int32_t dpi_row;
    uint8_t _pad2[4];
};

struct ft_rec_field { const char *name; size_t offset; const char *fmt; };
#define FT_RFIELD(n, f) { #n, offsetof(struct ft_flowrec, n), f }
static const struct ft_rec_field FT_FLOWREC_FIELDS[] = {
    FT_RFIELD(flow_id, "<u8"), FT_RFIELD(start_ns, "<u8"), FT_RFIELD(end_ns, "<u8"),
    FT_RFIELD(src_packets, "<u8"), FT_RFIELD(dst_packets, "<u8"),
    FT_RFIELD(src_bytes, "<u8"), FT_RFIELD(dst_bytes, "<u8"),
    FT_RFIELD(src_addr, "V16"), FT_RFIELD(dst_addr, "V16"),
    FT_RFIELD(rec_seq, "<u4"), FT_RFIELD(tunnel_id, "<u4"),
    FT_RFIELD(truncated_packets, "<u4"), FT_RFIELD(fragment_packets, "<u4"),
    FT_RFIELD(src_port, "<u2"), FT_RFIELD(dst_port, "<u2"),
    FT_RFIELD(vlan_id, "<u2"), FT_RFIELD(outer_vlan_id, "<u2"),
    FT_RFIELD(src_tcp_flags, "<u2"), FT_RFIELD(dst_tcp_flags, "<u2"), FT_RFIELD(iface, "<u2"),
    FT_RFIELD(ip_version, "u1"), FT_RFIELD(proto, "u1"), FT_RFIELD(end_reason, "u1"), FT_RFIELD(tos, "u1"),
    FT_RFIELD(tunnel_type, "u1"), FT_RFIELD(icmp_type, "u1"), FT_RFIELD(icmp_code, "u1"),
    FT_RFIELD(has_icmp, "u1"), FT_RFIELD(roce_row, "<i4"), FT_RFIELD(tcp_row, "<i4"), FT_RFIELD(dpi_row, "<i4"),
};
static const int FT_FLOWREC_NFIELDS = sizeof(FT_FLOWREC_FIELDS) / sizeof(FT_FLOWREC_FIELDS[0]);

/* ---- DPI (issue 5): the side records (struct ft_dpi_out), names prefixed dpi_ ---- */
#define FT_DFIELD(n, f) { "dpi_" #n, offsetof(struct ft_dpi_out, n), f }
static const struct ft_rec_field FT_DPI_OUT_FIELDS[] = {
    FT_DFIELD(server_name, "S128"), FT_DFIELD(alpn, "S32"), FT_DFIELD(version, "S48"),
    FT_DFIELD(http_method, "S16"), FT_DFIELD(http_path, "S112"), FT_DFIELD(user_agent, "S112"),
    FT_DFIELD(set, "<u2"), FT_DFIELD(truncated, "<u2"), FT_DFIELD(app, "<u2"), FT_DFIELD(base, "<u2"),
    FT_DFIELD(rule, "<u2"), FT_DFIELD(dns_qtype, "<u2"), FT_DFIELD(dns_rcode, "u1"), FT_DFIELD(conf, "u1"),
    FT_DFIELD(inspected, "u1"),
};
#undef FT_DFIELD
static const int FT_DPI_OUT_NFIELDS = sizeof(FT_DPI_OUT_FIELDS) / sizeof(FT_DPI_OUT_FIELDS[0]);

#endif /* FT_FLOW_H */
