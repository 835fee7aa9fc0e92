/* ft_record.h: the per-packet record, the one contract between the packet sources (the replay reader in
 * ext/, the BPF programs in probe/bpf/) and the flow engine.
 *
 * Included by the Cython extension (user space, x86_64/aarch64, little-endian LP64) and by the BPF programs
 * compiled by BCC (clang -target bpf, also little-endian LP64 in practice). The layout is therefore spelled
 * out with explicit padding, every field naturally aligned, and no bitfields: both compilers produce the same
 * bytes, and tests/test_record_layout.py checks the numpy mirror against offsetof() from this header.
 *
 * Byte order: every multi-byte field is in HOST order; the parser converts from network order once.
 * Addresses are the exception: src_addr/dst_addr keep network order (they are byte strings). IPv4 addresses
 * occupy the first 4 bytes, the other 12 are zero; ip_version says which it is.
 *
 * Add fields only at the end (before the reserved tail) and bump FT_RECORD_VERSION.
 */
#ifndef FT_RECORD_H
#define FT_RECORD_H

#ifdef __bpf__
#include <linux/types.h>
typedef __u8 ft_u8;
typedef __u16 ft_u16;
typedef __u32 ft_u32;
typedef __u64 ft_u64;
#else
#include <stdint.h>
typedef uint8_t ft_u8;
typedef uint16_t ft_u16;
typedef uint32_t ft_u32;
typedef uint64_t ft_u64;
#endif

#define FT_RECORD_VERSION 1

/* Bounds of the parser. Each is a loop bound the BPF verifier can see, and each has an exit reason. */
#define FT_MAX_VLAN 4        /* stacked 802.1Q / 802.1ad tags (QinQ is 2; 4 leaves room for odd fabrics) */
#define FT_MAX_MPLS 8        /* MPLS label stack entries before bottom-of-stack */
#define FT_MAX_IPV6_EXT 8    /* IPv6 extension headers walked (RFC 8200 recommends at most one of each) */
#define FT_MAX_TUNNEL 2      /* encapsulations unwrapped (ERSPAN-in-GRE counts once; VXLAN in GRE twice) */
#define FT_MAX_SACK 4        /* SACK blocks kept (a 40-byte option space holds at most 4) */

/* Parse-exit reasons. FT_OK means the parser reached what it looks for (L4 header, or L3 for protocols it
 * does not parse further). Every other value names where and why it stopped. Keep FT_REASON_NAMES in sync:
 * the names reach the Arrow metadata and the CLI summary. */
enum ft_reason {
    FT_OK = 0,
    FT_R_TRUNC_L2,         /* frame shorter than its link-layer header */
    FT_R_LINKTYPE,         /* link type the parser does not handle */
    FT_R_NOT_IP,           /* ethertype / protocol family is not IPv4 or IPv6 (ARP, LLDP, ...) */
    FT_R_VLAN_DEPTH,       /* more than FT_MAX_VLAN tags */
    FT_R_MPLS_DEPTH,       /* more than FT_MAX_MPLS labels */
    FT_R_MPLS_PAYLOAD,     /* bottom-of-stack payload neither IPv4 nor IPv6 (pseudowire, ...) */
    FT_R_TRUNC_L3,         /* captured bytes end inside the IP header */
    FT_R_BAD_IP_VERSION,   /* version nibble disagrees with the ethertype */
    FT_R_BAD_IHL,          /* IPv4 IHL < 5 */
    FT_R_BAD_IP_LEN,       /* IPv4 total length < IHL*4 (and not 0, which TSO captures produce) */
    FT_R_IPV6_EXT_DEPTH,   /* more than FT_MAX_IPV6_EXT extension headers */
    FT_R_TRUNC_IPV6_EXT,   /* captured bytes end inside an IPv6 extension header */
    FT_R_FRAGMENT,         /* non-first IP fragment: no L4 header; metered on addresses and protocol only */
    FT_R_TRUNC_L4,         /* captured bytes end inside the TCP/UDP/ICMP header: ports unknown, not metered */
    FT_R_BAD_TCP_DOFF,     /* TCP data offset < 5 or beyond the IP payload */
    FT_R_BAD_UDP_LEN,      /* UDP length < 8 (metered, payload length taken from IP) */
    FT_R_TUNNEL_DEPTH,     /* more than FT_MAX_TUNNEL encapsulations */
    FT_R_TRUNC_TUNNEL,     /* captured bytes end inside a GRE/ERSPAN/VXLAN header */
    FT_R_BAD_TUNNEL,       /* unsupported GRE version or flags, ERSPAN version, VXLAN flags */
    FT_R_TRUNC_ROCE,       /* UDP 4791 payload shorter than BTH or its extension headers (metered as UDP) */
    FT_R_BAD_TCP_OPT,      /* a TCP option of length < 2 or running past the header: options parsed up to it,
                              the segment metered (FT_F_TCP_OPT_BAD) */
    FT_R_BAD_IP_OPT,       /* an IPv4 option of length < 2 or running past the header (RFC 791): the packet
                              metered (FT_F_IP_OPT_BAD); named when TCP, UDP or ICMP ends the parse, else
                              the flag alone says it */
    FT_R__COUNT
};

#ifndef __bpf__
static const char *const FT_REASON_NAMES[FT_R__COUNT] = {
    "ok", "truncated_l2", "unsupported_linktype", "not_ip", "vlan_too_deep", "mpls_too_deep",
    "mpls_unknown_payload", "truncated_l3", "bad_ip_version", "bad_ipv4_ihl", "bad_ip_length",
    "ipv6_ext_too_deep", "truncated_ipv6_ext", "ip_fragment", "truncated_l4", "bad_tcp_data_offset",
    "bad_udp_length", "tunnel_too_deep", "truncated_tunnel", "unsupported_tunnel", "truncated_roce",
    "bad_tcp_options", "bad_ipv4_options",
};
#endif

/* ft_pkt.flags */
#define FT_F_L3 0x0001          /* addresses, ip_version, proto valid */
#define FT_F_L4 0x0002          /* ports (or ICMP type/code) valid */
#define FT_F_FRAG 0x0004        /* IP fragment (first or not) */
#define FT_F_FRAG_FIRST 0x0008  /* first fragment (offset 0, more fragments set) */
#define FT_F_TRUNC 0x0010       /* cap_len < wire_len: the snap length cut this frame */
#define FT_F_ROCE 0x0020        /* RoCEv2 BTH parsed (roce_* valid) */
#define FT_F_TCP_OPT_BAD 0x0040 /* TCP options malformed; options parsed up to the bad one */
#define FT_F_IP_OPT 0x0080      /* IPv4 options present */
#define FT_F_IPV4_DF 0x0100     /* IPv4 don't fragment */
#define FT_F_IP_OPT_BAD 0x0200  /* an IPv4 header of the frame (outer or inner) has malformed options */

/* ft_pkt.tcp_opt_present */
#define FT_TCPOPT_MSS 0x01
#define FT_TCPOPT_WSCALE 0x02
#define FT_TCPOPT_SACK_PERM 0x04
#define FT_TCPOPT_SACK 0x08
#define FT_TCPOPT_TS 0x10

/* ft_pkt.tunnel_type: the outermost encapsulation that was removed */
enum ft_tunnel {
    FT_TUN_NONE = 0,
    FT_TUN_GRE = 1,      /* GRE carrying IPv4/IPv6 */
    FT_TUN_GRE_TEB = 2,  /* GRE transparent Ethernet bridging (0x6558) */
    FT_TUN_ERSPAN2 = 3,  /* ERSPAN type II (GRE 0x88BE) */
    FT_TUN_ERSPAN3 = 4,  /* ERSPAN type III (GRE 0x22EB) */
    FT_TUN_VXLAN = 5,    /* VXLAN, UDP 4789 */
    FT_TUN__COUNT
};

#ifndef __bpf__
static const char *const FT_TUNNEL_NAMES[FT_TUN__COUNT] = {
    "", "gre", "gre_teb", "erspan2", "erspan3", "vxlan",
};
#endif

/* ft_pkt.roce_bth_flags */
#define FT_BTH_SE 0x01     /* solicited event */
#define FT_BTH_MIG 0x02    /* migration request */
#define FT_BTH_ACKREQ 0x04 /* acknowledge request */
#define FT_BTH_FECN 0x08   /* forward ECN (reserved bits of the BTH dest-QP word, RoCEv2 annex A17) */
#define FT_BTH_BECN 0x10   /* backward ECN */

/* ft_pkt.roce_ext: which extension headers followed the BTH */
#define FT_ROCE_RETH 0x01
#define FT_ROCE_AETH 0x02
#define FT_ROCE_IMMDT 0x04
#define FT_ROCE_ATOMICETH 0x08
#define FT_ROCE_ATOMICACKETH 0x10
#define FT_ROCE_IETH 0x20
#define FT_ROCE_DETH 0x40

/* Link types (LINKTYPE_* from tcpdump.org), the values the reader passes to the parser. */
#define FT_LINKTYPE_NULL 0
#define FT_LINKTYPE_ETHERNET 1
#define FT_LINKTYPE_RAW 101
#define FT_LINKTYPE_LOOP 108
#define FT_LINKTYPE_LINUX_SLL 113
#define FT_LINKTYPE_IPV4 228
#define FT_LINKTYPE_IPV6 229
#define FT_LINKTYPE_LINUX_SLL2 276

/* ft_pkt.direction */
#define FT_DIR_UNKNOWN 0
#define FT_DIR_INGRESS 1
#define FT_DIR_EGRESS 2

struct ft_pkt {
    /* --- source and framing (filled by the reader or the BPF program) --- 24 bytes */
    ft_u64 ts_ns;          /* packet time, ns since the Unix epoch (UTC) */
    ft_u64 frame_off;      /* offset of the frame's first byte in the batch's data buffer (payload access) */
    ft_u32 wire_len;       /* original frame length on the wire */
    ft_u32 cap_len;        /* bytes captured */

    /* --- parse outcome --- 8 bytes */
    ft_u16 flags;          /* FT_F_* */
    ft_u8 reason;          /* enum ft_reason */
    ft_u8 direction;       /* FT_DIR_* (tc ingress/egress, SLL packet type, pcapng epb_flags) */
    ft_u16 iface;          /* pcapng interface id / file index / ifindex, as the source defines */
    ft_u16 linktype;       /* LINKTYPE_* of the frame */

    /* --- L2 --- 8 bytes */
    ft_u16 vlan_id;        /* innermost VLAN id (0 = untagged) */
    ft_u16 outer_vlan_id;  /* outermost VLAN id when stacked (802.1ad S-tag), else 0 */
    ft_u8 vlan_depth;
    ft_u8 mpls_depth;
    ft_u16 ethertype;      /* of the (inner) frame's network layer */

    /* --- L3 (inner packet when tunnelled) --- 44 bytes */
    ft_u8 src_addr[16];    /* network order; IPv4 in the first 4 bytes */
    ft_u8 dst_addr[16];
    ft_u32 l3_len;         /* IP octets as IPFIX octetDeltaCount: IPv4 total length, IPv6 payload length + 40;
                              from the frame length when the header says 0 (TSO/jumbogram) */
    ft_u8 ip_version;      /* 4 or 6, 0 when FT_F_L3 is clear */
    ft_u8 proto;           /* IPv4 protocol / IPv6 last next-header (upper-layer protocol) */
    ft_u8 tos;             /* IPv4 TOS / IPv6 traffic class: DSCP << 2 | ECN */
    ft_u8 ttl;             /* IPv4 TTL / IPv6 hop limit */
    ft_u16 frag_off;       /* IPv4/IPv6 fragment offset in 8-byte units */
    ft_u16 l4_off;         /* offset of the L4 header in the frame */

    /* --- L4 --- 16 bytes */
    ft_u16 sport;          /* TCP/UDP source port; ICMP: type */
    ft_u16 dport;          /* TCP/UDP destination port; ICMP: code */
    ft_u16 payload_off;    /* offset of the L4 payload in the frame (may be >= cap_len when cut) */
    ft_u16 payload_cap;    /* payload bytes present in the capture */
    ft_u32 payload_len;    /* L4 payload length according to the headers */
    ft_u16 icmp_id;        /* ICMP/ICMPv6 echo identifier */
    ft_u8 icmp_type;
    ft_u8 icmp_code;

    /* --- TCP --- 60 bytes */
    ft_u32 tcp_seq;
    ft_u32 tcp_ack;
    ft_u16 tcp_flags;      /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 AE 0x100 */
    ft_u16 tcp_win;        /* raw window field (scale it with the handshake's wscale) */
    ft_u16 tcp_mss;
    ft_u8 tcp_wscale;
    ft_u8 tcp_opt_present; /* FT_TCPOPT_* */
    ft_u32 tcp_tsval;
    ft_u32 tcp_tsecr;
    ft_u8 tcp_sack_count;  /* SACK blocks in the option (may exceed FT_MAX_SACK kept below) */
    ft_u8 tcp_doff;        /* header length in bytes */
    ft_u16 _pad_tcp;
    ft_u32 tcp_sack[FT_MAX_SACK * 2]; /* left, right edge pairs */

    /* --- tunnel (outer packet) --- 40 bytes */
    ft_u8 tunnel_type;     /* enum ft_tunnel: outermost encapsulation removed */
    ft_u8 tunnel_depth;
    ft_u8 outer_ip_version;
    ft_u8 _pad_tun;
    ft_u32 tunnel_id;      /* VXLAN VNI, ERSPAN session id, GRE key (0 when absent) */
    ft_u8 outer_src_addr[16];
    ft_u8 outer_dst_addr[16];

    /* --- RoCEv2 (UDP 4791) --- 40 bytes */
    ft_u8 roce_opcode;     /* BTH opcode; 0x81 = CNP */
    ft_u8 roce_bth_flags;  /* FT_BTH_* */
    ft_u8 roce_pad;        /* BTH pad count */
    ft_u8 roce_tver;       /* BTH transport header version */
    ft_u16 roce_pkey;
    ft_u8 roce_ext;        /* FT_ROCE_* extension headers present */
    ft_u8 roce_aeth_syndrome;
    ft_u32 roce_dqpn;      /* 24-bit destination QP */
    ft_u32 roce_psn;       /* 24-bit packet sequence number */
    ft_u32 roce_aeth_msn;  /* 24-bit message sequence number */
    ft_u32 roce_reth_rkey;
    ft_u32 roce_reth_len;  /* RETH DMA length */
    ft_u32 roce_payload_len; /* RDMA payload after BTH, extensions, pad and ICRC */
    ft_u64 roce_reth_va;

    /* --- reserved for the next fields, keeps the size stable --- */
    ft_u8 _reserved[16];
};
/* sizeof(struct ft_pkt) == 256: checked by a static assertion in user space and by the layout test. */

#ifndef __bpf__
_Static_assert(sizeof(struct ft_pkt) == 256, "struct ft_pkt must stay 256 bytes");
#endif

#endif /* FT_RECORD_H */
