/* ft_parse.h: one frame -> struct ft_pkt. Header-only, written for both compilers that include it: the
 * Cython extension (replay, gcc/clang for the host) and the BPF programs (live capture, BCC / clang -target
 * bpf). See ft_record.h for the record.
 *
 * Rules that keep one source valid for both (and for the BPF verifier):
 *  - no libc, no recursion, no function pointers, no global tables (BCC has no .rodata): lookups are
 *    switch statements or bit masks;
 *  - every loop has a constant bound (FT_MAX_* in ft_record.h, or the 40-byte TCP option space);
 *  - every read is preceded by its own `ptr + N > data_end` check, header-cursor style: the fixed part first,
 *    then the length field it carries is validated, then the variable part is checked before it is used;
 *  - multi-byte loads are __builtin_memcpy of a constant size (one unaligned load on x86/arm64) plus a byte
 *    swap; nothing loops over bytes where one load does.
 *
 * Shape: the link layer is decoded once, then a bounded loop runs one iteration per decapsulation level
 * (outer packet, then up to FT_MAX_TUNNEL inner packets): Ethernet / VLAN / MPLS -> IPv4 / IPv6 -> L4. A
 * tunnel (GRE, ERSPAN, VXLAN) found at L4 copies the outermost addresses to the outer_* fields, clears the
 * L3/L4 part of the record and continues the loop on the inner frame. Until a tunnel header has been decoded
 * in full the record describes the outer packet (so FT_R_TRUNC_TUNNEL / FT_R_BAD_TUNNEL are metered as the
 * outer GRE or UDP packet); after it, the record describes the inner packet, and an inner packet cut short
 * reports the inner reason (truncated_l2/l3/l4) with the tunnel fields still set.
 *
 * The caller zeroes the record, so the parser only writes fields it has values for; the only clearing it
 * does is on entering a tunnel, where outer values must not leak into the inner record.
 *
 * BPF: measured with a throwaway TC classifier (clang 14 -O2 -target bpf, kernel 6.18 verifier): the whole
 * parser inlines into one function of about 1500 instructions and loads when the record lives in map or
 * ring-buffer memory. With the record on the 512-byte stack the verifier tracks its bytes, states stop
 * merging and the 1M-instruction budget runs out unless the build lowers FT_PARSE_MAX_TUNNEL to 0.
 * ft_cursor_forget() is what keeps the path count down; see there. That single-function load sits at
 * about 911k of the 1M verified instructions with plain clang and does not load under BCC or -mcpu=v3, so
 * the live probe (probe/bpf/flowtap.bpf.c) calls these same functions, in the same order, split into tail
 * called stages that are verified separately; tests/test_live_parity.py checks that both give identical
 * records for every nDPI frame.
 */
#ifndef FT_PARSE_H
#define FT_PARSE_H
#include "ft_record.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Ethertypes and IP protocols the parser dispatches on (host order). */
#define FT_ETH_P_IP 0x0800
#define FT_ETH_P_IPV6 0x86DD
#define FT_ETH_P_8021Q 0x8100
#define FT_ETH_P_8021AD 0x88A8
#define FT_ETH_P_QINQ_9100 0x9100 /* pre-802.1ad vendor S-tag, still seen on older switches */
#define FT_ETH_P_MPLS_UC 0x8847
#define FT_ETH_P_MPLS_MC 0x8848
#define FT_ETH_P_TEB 0x6558       /* transparent Ethernet bridging (GRE) */
#define FT_ETH_P_ERSPAN2 0x88BE
#define FT_ETH_P_ERSPAN3 0x22EB

#define FT_IPPROTO_HOPOPTS 0
#define FT_IPPROTO_ICMP 1
#define FT_IPPROTO_TCP 6
#define FT_IPPROTO_UDP 17
#define FT_IPPROTO_ROUTING 43
#define FT_IPPROTO_FRAGMENT 44
#define FT_IPPROTO_GRE 47
#define FT_IPPROTO_AH 51
#define FT_IPPROTO_ICMPV6 58
#define FT_IPPROTO_DSTOPTS 60
#define FT_IPPROTO_MH 135

#define FT_UDP_PORT_VXLAN 4789 /* IANA, RFC 7348 */
#define FT_UDP_PORT_ROCEV2 4791

/* Raw-IP link types that some systems use instead of 101 (OpenBSD/BSD DLT_RAW values, see pcap-linktype(7)). */
#define FT_LINKTYPE_RAW_BSD12 12
#define FT_LINKTYPE_RAW_BSD14 14

/* Encapsulations this build unwraps: FT_MAX_TUNNEL unless the includer lowers it (a BPF program short of
 * verifier budget can build with -DFT_PARSE_MAX_TUNNEL=0). Frames with more get FT_R_TUNNEL_DEPTH. */
#ifndef FT_PARSE_MAX_TUNNEL
#define FT_PARSE_MAX_TUNNEL FT_MAX_TUNNEL
#endif
#if FT_PARSE_MAX_TUNNEL > FT_MAX_TUNNEL
#error "FT_PARSE_MAX_TUNNEL above FT_MAX_TUNNEL: tunnel_depth would exceed the record's contract"
#endif

/* TCP and IPv4 option spaces are 40 bytes and each iteration consumes at least one byte: the option loop
 * bounds. */
#define FT_TCP_OPT_SPACE 40
#define FT_IP_OPT_SPACE 40

/* What the bytes at the cursor are at the start of a decapsulation level. */
enum ft_next {
    FT_NX_NONE = 0, /* nothing further to decode */
    FT_NX_ETHER,    /* an Ethernet II / 802.3 header */
    FT_NX_ETYPE,    /* the payload of a known ethertype (VLAN tag, MPLS label or IP header) */
    FT_NX_IP,       /* an IP header whose version nibble decides between IPv4 and IPv6 */
};

/* ---- loads -------------------------------------------------------------------------------------------- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ft_ntoh16(x) ((ft_u16)(x))
#define ft_ntoh32(x) ((ft_u32)(x))
#define ft_ntoh64(x) ((ft_u64)(x))
#else
#define ft_ntoh16(x) __builtin_bswap16(x)
#define ft_ntoh32(x) __builtin_bswap32(x)
#define ft_ntoh64(x) __builtin_bswap64(x)
#endif

/* Returns the big-endian (network order) 16-bit value at b in host order. Caller checked b + 2 <= end. */
static __always_inline ft_u16 ft_load_be16(const ft_u8 *b)
{
    ft_u16 v;
    __builtin_memcpy(&v, b, sizeof(v));
    return ft_ntoh16(v);
}

/* Returns the big-endian 32-bit value at b in host order. Caller checked b + 4 <= end. */
static __always_inline ft_u32 ft_load_be32(const ft_u8 *b)
{
    ft_u32 v;
    __builtin_memcpy(&v, b, sizeof(v));
    return ft_ntoh32(v);
}

/* Returns the big-endian 64-bit value at b in host order. Caller checked b + 8 <= end. */
static __always_inline ft_u64 ft_load_be64(const ft_u8 *b)
{
    ft_u64 v;
    __builtin_memcpy(&v, b, sizeof(v));
    return ft_ntoh64(v);
}

/* Returns pos unchanged in user space. In BPF it makes the verifier forget the cursor's exact offset:
 * paths that reach the same point through headers of different lengths (0-4 VLAN tags, 1-8 MPLS labels,
 * IPv4 options, each IPv6 extension header or TCP option of a loop) then look like one state and are
 * pruned; without it their product exceeds the verifier's 1M-instruction budget (measured: kernel 6.18
 * rejects the parser without it, accepts it with it). Reads stay safe because each is checked against
 * data_end right before it anyway. The verifier derives packet ranges only for offsets below 64 KiB, so in
 * BPF a header starting beyond FT_BPF_MAX_HDR_OFF of linear data returns NULL, which callers treat as "not
 * captured". (The pointer subtraction needs CAP_PERFMON or CAP_SYS_ADMIN in the loader.) */
#define FT_BPF_MAX_HDR_OFF 0x3FFF
static __always_inline const ft_u8 *ft_cursor_forget(const ft_u8 *data, const ft_u8 *pos)
{
#ifdef __bpf__
    ft_u64 off = (ft_u64)(pos - data);

    asm volatile("" : "+r"(off)); /* keep clang from folding data + (pos - data) back into pos */
    if (off > FT_BPF_MAX_HDR_OFF)
        return 0;
    return data + off;
#else
    (void)data;
    return pos;
#endif
}

/* Returns min(avail, len) clamped to the u16 payload_cap field; avail < 0 counts as 0. */
static __always_inline ft_u16 ft_payload_cap(long avail, ft_u32 len)
{
    if (avail <= 0)
        return 0;
    if ((unsigned long)avail > len)
        avail = (long)len;
    return avail > 0xFFFF ? 0xFFFF : (ft_u16)avail;
}

/* Returns the bytes from offset `off` of the frame to its end on the wire (0 when the frame is shorter):
 * the IP length to use when the header says 0 (TSO/GSO captures, jumbograms). Host order. */
static __always_inline ft_u32 ft_wire_rest(const struct ft_pkt *p, unsigned long off)
{
    return p->wire_len > off ? p->wire_len - (ft_u32)off : 0;
}

/* ---- link layer ---------------------------------------------------------------------------------------- */

/* Returns the ethertype (host order) for a BSD address family value of the null/loopback header, or 0.
 * AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD, DragonFly), 30 (macOS). */
static __always_inline ft_u16 ft_bsd_af_ethertype(ft_u32 family)
{
    switch (family) {
    case 2:
        return FT_ETH_P_IP;
    case 24:
    case 28:
    case 30:
        return FT_ETH_P_IPV6;
    default:
        return 0;
    }
}

/* Sets the record's direction from a Linux packet type (PACKET_HOST..PACKET_OUTGOING), unless the capture
 * source already knew it (tc hook, pcapng epb_flags). */
static __always_inline void ft_sll_direction(struct ft_pkt *p, ft_u32 pkttype)
{
    if (p->direction != FT_DIR_UNKNOWN)
        return;
    if (pkttype == 4) /* PACKET_OUTGOING */
        p->direction = FT_DIR_EGRESS;
    else if (pkttype <= 3) /* HOST, BROADCAST, MULTICAST, OTHERHOST */
        p->direction = FT_DIR_INGRESS;
}

/* Decodes the link-layer header of `linktype` at data. Returns FT_OK with *nx saying what follows at *pos
 * (and *etype, host order, when *nx is FT_NX_ETYPE), or FT_R_TRUNC_L2 / FT_R_NOT_IP / FT_R_LINKTYPE. */
static __always_inline int ft_parse_link(const ft_u8 *data, const ft_u8 *data_end, ft_u32 linktype,
                                         struct ft_pkt *p, const ft_u8 **pos, ft_u16 *etype, int *nx)
{
    ft_u32 family;
    ft_u16 et;

    switch (linktype) {
    case FT_LINKTYPE_ETHERNET:
        *nx = FT_NX_ETHER;
        return FT_OK;
    case FT_LINKTYPE_RAW:
    case FT_LINKTYPE_RAW_BSD12:
    case FT_LINKTYPE_RAW_BSD14:
        *nx = FT_NX_IP;
        return FT_OK;
    case FT_LINKTYPE_IPV4:
        *etype = FT_ETH_P_IP;
        *nx = FT_NX_ETYPE;
        return FT_OK;
    case FT_LINKTYPE_IPV6:
        *etype = FT_ETH_P_IPV6;
        *nx = FT_NX_ETYPE;
        return FT_OK;
    case FT_LINKTYPE_LINUX_SLL: /* packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2) */
        if (data + 16 > data_end)
            return FT_R_TRUNC_L2;
        ft_sll_direction(p, ft_load_be16(data));
        *etype = ft_load_be16(data + 14);
        *pos = data + 16;
        *nx = FT_NX_ETYPE;
        return FT_OK;
    case FT_LINKTYPE_LINUX_SLL2: /* protocol(2) rsv(2) ifindex(4) ARPHRD(2) packet type(1) addr len(1) addr(8) */
        if (data + 20 > data_end)
            return FT_R_TRUNC_L2;
        ft_sll_direction(p, data[10]);
        *etype = ft_load_be16(data);
        *pos = data + 20;
        *nx = FT_NX_ETYPE;
        return FT_OK;
    case FT_LINKTYPE_NULL: /* family in the capturing host's order, which the file does not say: try both */
    case FT_LINKTYPE_LOOP: /* OpenBSD: family in network order */
        if (data + 4 > data_end)
            return FT_R_TRUNC_L2;
        family = ft_load_be32(data);
        et = ft_bsd_af_ethertype(family);
        if (et == 0 && linktype == FT_LINKTYPE_NULL)
            et = ft_bsd_af_ethertype(__builtin_bswap32(family));
        if (et == 0)
            return FT_R_NOT_IP;
        *etype = et;
        *pos = data + 4;
        *nx = FT_NX_ETYPE;
        return FT_OK;
    default:
        return FT_R_LINKTYPE;
    }
}

/* Returns 1 when the ethertype (host order) is a VLAN tag protocol identifier. */
static __always_inline int ft_is_vlan_tpid(ft_u16 etype)
{
    return etype == FT_ETH_P_8021Q || etype == FT_ETH_P_8021AD || etype == FT_ETH_P_QINQ_9100;
}

/* Walks VLAN tags and an MPLS label stack that start at *cursor, `etype` (host order) being the ethertype
 * that precedes them. Records vlan_id / outer_vlan_id / vlan_depth / mpls_depth and the last ethertype on
 * the wire (0x8847/0x8848 for MPLS). Returns FT_OK with *ipver = 4 or 6 and *cursor on the IP header, or
 * FT_R_TRUNC_L2 / FT_R_VLAN_DEPTH / FT_R_MPLS_DEPTH / FT_R_MPLS_PAYLOAD / FT_R_TRUNC_L3 / FT_R_NOT_IP. */
static __always_inline int ft_parse_l2_tags(const ft_u8 **cursor, const ft_u8 *data_end, ft_u16 etype,
                                            struct ft_pkt *p, int *ipver)
{
    const ft_u8 *pos = *cursor;
    ft_u16 outer_vid = 0, vid = 0;
    int depth, bos = 0, nibble;

    for (depth = 0; depth < FT_MAX_VLAN; depth++) {
        if (!ft_is_vlan_tpid(etype))
            break;
        if (pos + 4 > data_end) /* TCI(2) + next ethertype(2) */
            return FT_R_TRUNC_L2;
        vid = ft_load_be16(pos) & 0x0FFF;
        if (depth == 0)
            outer_vid = vid;
        etype = ft_load_be16(pos + 2);
        pos += 4;
    }
    if (depth > 0) {
        p->vlan_id = vid;
        p->vlan_depth = (ft_u8)depth;
        if (depth >= 2)
            p->outer_vlan_id = outer_vid;
    }
    p->ethertype = etype;
    if (ft_is_vlan_tpid(etype))
        return FT_R_VLAN_DEPTH;

    if (etype == FT_ETH_P_IP) {
        *ipver = 4;
    } else if (etype == FT_ETH_P_IPV6) {
        *ipver = 6;
    } else if (etype == FT_ETH_P_MPLS_UC || etype == FT_ETH_P_MPLS_MC) {
        /* label(20) TC(3) bottom-of-stack(1) TTL(8) */
        for (depth = 0; depth < FT_MAX_MPLS; depth++) {
            if (pos + 4 > data_end)
                return FT_R_TRUNC_L2;
            bos = pos[2] & 0x01;
            pos += 4;
            if (bos)
                break;
        }
        if (!bos) {
            p->mpls_depth = FT_MAX_MPLS;
            return FT_R_MPLS_DEPTH;
        }
        p->mpls_depth = (ft_u8)(depth + 1);
        /* MPLS does not say what it carries: the first nibble is the IP version for IP payloads (RFC 4928
         * keeps Ethernet pseudowires from starting with 4 or 6 by using a control word starting with 0). */
        if (pos + 1 > data_end)
            return FT_R_TRUNC_L3;
        nibble = pos[0] >> 4;
        if (nibble == 4)
            *ipver = 4;
        else if (nibble == 6)
            *ipver = 6;
        else
            return FT_R_MPLS_PAYLOAD;
    } else {
        return FT_R_NOT_IP;
    }
    *cursor = pos;
    return FT_OK;
}

/* ---- IP ------------------------------------------------------------------------------------------------- */

/* Returns 1 when the IPv4 options in [opt, opt_end) are malformed (RFC 791: an option other than EOL (0) and
 * NOP (1) carries a length that counts its type and length bytes, so below 2 or past the header is an
 * error, as Linux's ip_options_compile() says), else 0. The caller checked opt_end <= data_end; each read is
 * re-checked for the verifier. Each turn consumes at least one byte of the 40-byte space: the loop bound. */
static __always_inline int ft_ipv4_options_bad(const ft_u8 *data, const ft_u8 *opt, const ft_u8 *opt_end,
                                               const ft_u8 *data_end)
{
    ft_u8 len;
    int i;

    for (i = 0; i < FT_IP_OPT_SPACE; i++) {
        opt = ft_cursor_forget(data, opt);
        if (!opt || opt >= opt_end || opt + 1 > data_end)
            return 0;
        if (opt[0] == 0) /* end of option list: the rest is padding */
            return 0;
        if (opt[0] == 1) {
            opt += 1;
            continue;
        }
        if (opt + 2 > opt_end || opt + 2 > data_end)
            return 1;
        len = opt[1];
        if (len < 2 || opt + len > opt_end)
            return 1;
        opt += len;
    }
    return 0;
}

/* Parses the IPv4 header at *cursor. Returns FT_OK with *cursor on the L4 header and *l4_len = bytes of L4
 * header plus payload according to the IP header (host order), or FT_R_TRUNC_L3 / FT_R_BAD_IP_VERSION /
 * FT_R_BAD_IHL / FT_R_BAD_IP_LEN / FT_R_FRAGMENT (non-first fragment: L3 fields set, no L4 header).
 * Malformed options only set FT_F_IP_OPT_BAD: the packet goes on to L4 (tshark and the conversation tables
 * keep it too), and the L4 parser that ends the frame names it (ft_l4_verdict). */
static __always_inline int ft_parse_ipv4(const ft_u8 **cursor, const ft_u8 *data, const ft_u8 *data_end,
                                         struct ft_pkt *p, ft_u32 *l4_len)
{
    const ft_u8 *ip = *cursor;
    ft_u32 hlen, total;
    ft_u16 frag, off;
    ft_u16 flags = FT_F_L3;

    if (ip + 20 > data_end)
        return FT_R_TRUNC_L3;
    if ((ip[0] >> 4) != 4)
        return FT_R_BAD_IP_VERSION;
    hlen = (ft_u32)(ip[0] & 0x0F) << 2;
    if (hlen < 20)
        return FT_R_BAD_IHL;
    if (ip + hlen > data_end)
        return FT_R_TRUNC_L3;
    total = ft_load_be16(ip + 2);
    if (total == 0) /* TSO/GSO: the NIC fills the length in later; the frame says how long it is */
        total = ft_wire_rest(p, (unsigned long)(ip - data));
    else if (total < hlen)
        return FT_R_BAD_IP_LEN;

    frag = ft_load_be16(ip + 6); /* reserved(1) DF(1) MF(1) offset(13) */
    off = frag & 0x1FFF;
    if (hlen > 20)
        flags |= FT_F_IP_OPT;
    if (frag & 0x4000)
        flags |= FT_F_IPV4_DF;
    if ((frag & 0x2000) || off)
        flags |= FT_F_FRAG;
    if ((frag & 0x2000) && !off)
        flags |= FT_F_FRAG_FIRST;

    __builtin_memcpy(p->src_addr, ip + 12, 4);
    __builtin_memcpy(p->dst_addr, ip + 16, 4);
    p->ip_version = 4;
    p->tos = ip[1];
    p->ttl = ip[8];
    p->proto = ip[9];
    p->l3_len = total;
    p->frag_off = off;
    p->flags |= flags;
    if (off)
        return FT_R_FRAGMENT;
    if (hlen > 20 && ft_ipv4_options_bad(data, ip + 20, ip + hlen, data_end))
        p->flags |= FT_F_IP_OPT_BAD;
    *l4_len = total > hlen ? total - hlen : 0;
    *cursor = ip + hlen;
    return FT_OK;
}

/* Parses the IPv6 header at *cursor and walks its extension headers (at most FT_MAX_IPV6_EXT). Returns
 * FT_OK with p->proto = the upper-layer protocol, *cursor on it and *l4_len = its bytes according to the
 * payload length (host order); or FT_R_TRUNC_L3 / FT_R_BAD_IP_VERSION / FT_R_TRUNC_IPV6_EXT /
 * FT_R_IPV6_EXT_DEPTH (FT_F_L3 clear: the protocol is unknown) / FT_R_FRAGMENT (non-first fragment). */
static __always_inline int ft_parse_ipv6(const ft_u8 **cursor, const ft_u8 *data, const ft_u8 *data_end,
                                         struct ft_pkt *p, ft_u32 *l4_len)
{
    const ft_u8 *ip = *cursor;
    const ft_u8 *pos;
    ft_u32 total, hdrs, ext_len, plen;
    ft_u16 frag;
    ft_u8 nh;
    int i;

    if (ip + 40 > data_end)
        return FT_R_TRUNC_L3;
    if ((ip[0] >> 4) != 6)
        return FT_R_BAD_IP_VERSION;
    plen = ft_load_be16(ip + 4);
    /* 0: jumbogram (RFC 2675) or a GSO capture; the frame says how long it is */
    total = plen ? plen + 40 : ft_wire_rest(p, (unsigned long)(ip - data));

    __builtin_memcpy(p->src_addr, ip + 8, 16);
    __builtin_memcpy(p->dst_addr, ip + 24, 16);
    p->ip_version = 6;
    p->tos = (ft_u8)(ft_load_be16(ip) >> 4); /* version(4) traffic class(8) flow label(20) */
    p->ttl = ip[7];
    p->l3_len = total;
    nh = ip[6];
    pos = ip + 40;

    for (i = 0; i < FT_MAX_IPV6_EXT; i++) {
        pos = ft_cursor_forget(data, pos);
        if (!pos)
            return FT_R_TRUNC_IPV6_EXT;
        switch (nh) {
        case FT_IPPROTO_HOPOPTS:
        case FT_IPPROTO_ROUTING:
        case FT_IPPROTO_DSTOPTS:
        case FT_IPPROTO_MH: /* next header(1) length in 8-byte units, not counting the first 8(1) ... */
            if (pos + 2 > data_end)
                return FT_R_TRUNC_IPV6_EXT;
            ext_len = ((ft_u32)pos[1] + 1) << 3;
            break;
        case FT_IPPROTO_AH: /* next header(1) length in 4-byte units minus 2 (RFC 4302)(1) ... */
            if (pos + 2 > data_end)
                return FT_R_TRUNC_IPV6_EXT;
            ext_len = ((ft_u32)pos[1] + 2) << 2;
            break;
        case FT_IPPROTO_FRAGMENT: /* next header(1) rsv(1) offset(13) rsv(2) M(1) id(4) */
            if (pos + 8 > data_end)
                return FT_R_TRUNC_IPV6_EXT;
            frag = ft_load_be16(pos + 2);
            p->frag_off = frag >> 3;
            if (frag & 0xFFF9) /* an atomic fragment (RFC 6946: offset 0, M clear) is a whole packet */
                p->flags |= FT_F_FRAG;
            if (frag >> 3) {
                p->proto = pos[0];
                p->flags |= FT_F_L3;
                return FT_R_FRAGMENT;
            }
            if (frag & 1)
                p->flags |= FT_F_FRAG_FIRST;
            ext_len = 8;
            break;
        default: /* upper-layer protocol, ESP (50) or no next header (59): the walk ends here */
            goto upper;
        }
        if (pos + ext_len > data_end)
            return FT_R_TRUNC_IPV6_EXT;
        nh = pos[0];
        pos += ext_len;
    }
    if (nh == FT_IPPROTO_HOPOPTS || nh == FT_IPPROTO_ROUTING || nh == FT_IPPROTO_DSTOPTS ||
        nh == FT_IPPROTO_MH || nh == FT_IPPROTO_AH || nh == FT_IPPROTO_FRAGMENT)
        return FT_R_IPV6_EXT_DEPTH;
upper:
    p->proto = nh;
    p->flags |= FT_F_L3;
    hdrs = (ft_u32)(pos - ip);
    *l4_len = total > hdrs ? total - hdrs : 0;
    *cursor = pos;
    return FT_OK;
}

/* ---- L4 ------------------------------------------------------------------------------------------------- */

/* Returns the reason a packet whose L4 header was parsed in full reports: r when it already names something,
 * else FT_R_BAD_TCP_OPT or FT_R_BAD_IP_OPT when the flags say so, else FT_OK. Every L4 parser that ends a
 * frame returns through it, so the live probe's stages and ft_parse() give the same reason. */
static __always_inline int ft_l4_verdict(const struct ft_pkt *p, int r)
{
    if (r != FT_OK)
        return r;
    if (p->flags & FT_F_TCP_OPT_BAD)
        return FT_R_BAD_TCP_OPT;
    if (p->flags & FT_F_IP_OPT_BAD)
        return FT_R_BAD_IP_OPT;
    return FT_OK;
}

/* Parses TCP options in [opt, opt_end) (opt_end <= data_end checked by the caller, each read re-checked
 * against data_end for the verifier). Fills tcp_mss / tcp_wscale / tcp_sack* / tcp_ts* and
 * tcp_opt_present; sets FT_F_TCP_OPT_BAD and stops at an option whose length is < 2 or runs past the
 * header. Values stored in host order. Returns nothing: a bad option does not change the exit reason. */
static __always_inline void ft_parse_tcp_options(const ft_u8 *data, const ft_u8 *opt, const ft_u8 *opt_end,
                                                 const ft_u8 *data_end, struct ft_pkt *p)
{
    ft_u8 kind, len, present = 0;
    ft_u32 nsack;
    int i, j;

    /* Established connections send exactly NOP NOP timestamps (the RFC 7323 appendix A layout; Linux's
     * tcp_parse_aligned_timestamp takes the same shortcut): one compare instead of three loop turns. */
    if (opt_end - opt == 12 && opt + 12 <= data_end && ft_load_be32(opt) == 0x0101080A) {
        p->tcp_tsval = ft_load_be32(opt + 4);
        p->tcp_tsecr = ft_load_be32(opt + 8);
        p->tcp_opt_present = FT_TCPOPT_TS;
        return;
    }
    for (i = 0; i < FT_TCP_OPT_SPACE; i++) {
        opt = ft_cursor_forget(data, opt);
        if (!opt || opt >= opt_end || opt + 1 > data_end)
            break;
        kind = opt[0];
        if (kind == 0) /* end of option list */
            break;
        if (kind == 1) { /* no-operation */
            opt += 1;
            continue;
        }
        if (opt + 2 > opt_end || opt + 2 > data_end) {
            p->flags |= FT_F_TCP_OPT_BAD;
            break;
        }
        len = opt[1];
        if (len < 2 || opt + len > opt_end) {
            p->flags |= FT_F_TCP_OPT_BAD;
            break;
        }
        /* Options whose length differs from the RFC's are skipped whole, as Linux does. */
        switch (kind) {
        case 2: /* MSS, RFC 9293 */
            if (len == 4 && opt + 4 <= data_end) {
                p->tcp_mss = ft_load_be16(opt + 2);
                present |= FT_TCPOPT_MSS;
            }
            break;
        case 3: /* window scale, RFC 7323 */
            if (len == 3 && opt + 3 <= data_end) {
                p->tcp_wscale = opt[2];
                present |= FT_TCPOPT_WSCALE;
            }
            break;
        case 4: /* SACK permitted, RFC 2018 */
            if (len == 2)
                present |= FT_TCPOPT_SACK_PERM;
            break;
        case 5: /* SACK blocks: left(4) right(4) each */
            if (len < 10)
                break;
            nsack = (ft_u32)(len - 2) >> 3;
            p->tcp_sack_count = (ft_u8)nsack;
            present |= FT_TCPOPT_SACK;
            for (j = 0; j < FT_MAX_SACK; j++) {
                if ((ft_u32)j >= nsack || opt + 2 + 8 * j + 8 > data_end)
                    break;
                p->tcp_sack[2 * j] = ft_load_be32(opt + 2 + 8 * j);
                p->tcp_sack[2 * j + 1] = ft_load_be32(opt + 6 + 8 * j);
            }
            break;
        case 8: /* timestamps, RFC 7323 */
            if (len == 10 && opt + 10 <= data_end) {
                p->tcp_tsval = ft_load_be32(opt + 2);
                p->tcp_tsecr = ft_load_be32(opt + 6);
                present |= FT_TCPOPT_TS;
            }
            break;
        default:
            break;
        }
        opt += len;
    }
    p->tcp_opt_present = present;
}

/* Parses the TCP header at tcp, whose segment is l4_len bytes long according to IP (host order). Returns
 * FT_OK (FT_F_L4 set), FT_R_BAD_TCP_OPT (FT_F_L4 and FT_F_TCP_OPT_BAD set: metered, options kept up to the
 * bad one), FT_R_BAD_IP_OPT (FT_F_L4 set), FT_R_TRUNC_L4 (header not captured in full) or
 * FT_R_BAD_TCP_DOFF. */
static __always_inline int ft_parse_tcp(const ft_u8 *tcp, const ft_u8 *data, const ft_u8 *data_end,
                                        ft_u32 l4_len, struct ft_pkt *p)
{
    ft_u32 doff;

    if (tcp + 20 > data_end)
        return FT_R_TRUNC_L4;
    doff = (ft_u32)(tcp[12] >> 4) << 2;
    if (doff < 20 || doff > l4_len)
        return FT_R_BAD_TCP_DOFF;
    if (tcp + doff > data_end)
        return FT_R_TRUNC_L4;

    p->sport = ft_load_be16(tcp);
    p->dport = ft_load_be16(tcp + 2);
    p->tcp_seq = ft_load_be32(tcp + 4);
    p->tcp_ack = ft_load_be32(tcp + 8);
    p->tcp_flags = ft_load_be16(tcp + 12) & 0x01FF; /* AE (ex-NS, RFC 3540/AccECN) is the 9th bit */
    p->tcp_win = ft_load_be16(tcp + 14);
    p->tcp_doff = (ft_u8)doff;
    if (doff > 20)
        ft_parse_tcp_options(data, tcp + 20, tcp + doff, data_end, p);
    p->payload_off = (ft_u16)(tcp + doff - data);
    p->payload_len = l4_len - doff;
    p->payload_cap = ft_payload_cap(data_end - (tcp + doff), p->payload_len);
    p->flags |= FT_F_L4;
    return ft_l4_verdict(p, FT_OK);
}

/* Parses the UDP header at udp (l4_len: bytes per IP, host order). Returns FT_OK (FT_F_L4 set, payload
 * from the UDP length), FT_R_BAD_UDP_LEN (length < 8: still FT_F_L4, payload from the IP length),
 * FT_R_BAD_IP_OPT (FT_F_L4 set; RoCE and VXLAN are then not decoded: metered as plain UDP) or
 * FT_R_TRUNC_L4. */
static __always_inline int ft_parse_udp(const ft_u8 *udp, const ft_u8 *data, const ft_u8 *data_end,
                                        ft_u32 l4_len, struct ft_pkt *p)
{
    ft_u32 ulen;
    int r = FT_OK;

    if (udp + 8 > data_end)
        return FT_R_TRUNC_L4;
    p->sport = ft_load_be16(udp);
    p->dport = ft_load_be16(udp + 2);
    ulen = ft_load_be16(udp + 4);
    if (ulen < 8) {
        ulen = l4_len > 8 ? l4_len : 8;
        r = FT_R_BAD_UDP_LEN;
    }
    p->payload_off = (ft_u16)(udp + 8 - data);
    p->payload_len = ulen - 8;
    p->payload_cap = ft_payload_cap(data_end - (udp + 8), p->payload_len);
    p->flags |= FT_F_L4;
    return ft_l4_verdict(p, r);
}

/* Parses an ICMP (protocol 1) or ICMPv6 (58) header: type(1) code(1) checksum(2) rest(4). Returns FT_OK
 * (FT_F_L4, sport = type, dport = code, icmp_id for echo request/reply in host order), FT_R_BAD_IP_OPT
 * (the same, IPv4 options malformed) or FT_R_TRUNC_L4. */
static __always_inline int ft_parse_icmp(const ft_u8 *icmp, const ft_u8 *data, const ft_u8 *data_end,
                                         ft_u32 l4_len, struct ft_pkt *p)
{
    ft_u8 type, code;

    if (icmp + 8 > data_end)
        return FT_R_TRUNC_L4;
    type = icmp[0];
    code = icmp[1];
    p->icmp_type = type;
    p->icmp_code = code;
    p->sport = type;
    p->dport = code;
    if (p->proto == FT_IPPROTO_ICMPV6 ? (type == 128 || type == 129) : (type == 8 || type == 0))
        p->icmp_id = ft_load_be16(icmp + 4);
    p->payload_off = (ft_u16)(icmp + 8 - data);
    p->payload_len = l4_len > 8 ? l4_len - 8 : 0;
    p->payload_cap = ft_payload_cap(data_end - (icmp + 8), p->payload_len);
    p->flags |= FT_F_L4;
    return ft_l4_verdict(p, FT_OK);
}

/* ---- RoCEv2 --------------------------------------------------------------------------------------------- */

/* Opcode sets (bit = low 5 bits of the BTH opcode, the operation) of the IBTA transport tables
 * (IBA 1.4 vol 1, 9.2 table 38), for RC; UC uses the same rows for its SEND and RDMA WRITE operations. */
#define FT_BIT(n) (1u << (n))
#define FT_ROCE_OPS_RETH (FT_BIT(0x06) | FT_BIT(0x0A) | FT_BIT(0x0B) | FT_BIT(0x0C)) /* WRITE first/only, READ req */
#define FT_ROCE_OPS_AETH (FT_BIT(0x0D) | FT_BIT(0x0F) | FT_BIT(0x10) | FT_BIT(0x11) | FT_BIT(0x12))
#define FT_ROCE_OPS_IMMDT (FT_BIT(0x03) | FT_BIT(0x05) | FT_BIT(0x09) | FT_BIT(0x0B))
#define FT_ROCE_OPS_IETH (FT_BIT(0x16) | FT_BIT(0x17))       /* SEND last/only with invalidate */
#define FT_ROCE_OPS_ATOMIC (FT_BIT(0x13) | FT_BIT(0x14))     /* compare & swap, fetch & add */
#define FT_ROCE_OPS_ATOMICACK FT_BIT(0x12)
#define FT_ROCE_OPCODE_CNP 0x81
#define FT_ROCE_BTH_LEN 12
#define FT_ROCE_ICRC_LEN 4
#define FT_ROCE_CNP_RSV_LEN 16 /* RoCEv2 annex A17: CNP carries 16 reserved bytes after the BTH */

/* Returns the FT_ROCE_* extension headers that follow the BTH for this opcode (0 for RD, reserved and
 * vendor opcodes, whose headers the parser does not decode). */
static __always_inline ft_u32 ft_roce_ext_for_opcode(ft_u8 opcode)
{
    ft_u32 transport = opcode >> 5, op = FT_BIT(opcode & 0x1F), ext = 0;

    if (transport == 3) /* UD: every packet carries a DETH; SEND only with immediate adds ImmDt */
        return FT_ROCE_DETH | ((op & FT_BIT(0x05)) ? FT_ROCE_IMMDT : 0);
    if (transport == 1) /* UC: SEND and RDMA WRITE only (operations 0x00-0x0B), same headers as RC */
        op &= FT_BIT(0x0C) - 1;
    else if (transport != 0) /* RD, CNP, vendor: not decoded */
        return 0;
    if (op & FT_ROCE_OPS_RETH)
        ext |= FT_ROCE_RETH;
    if (op & FT_ROCE_OPS_AETH)
        ext |= FT_ROCE_AETH;
    if (op & FT_ROCE_OPS_IMMDT)
        ext |= FT_ROCE_IMMDT;
    if (op & FT_ROCE_OPS_IETH)
        ext |= FT_ROCE_IETH;
    if (op & FT_ROCE_OPS_ATOMIC)
        ext |= FT_ROCE_ATOMICETH;
    if (op & FT_ROCE_OPS_ATOMICACK)
        ext |= FT_ROCE_ATOMICACKETH;
    return ext;
}

/* Parses the RoCEv2 BTH at bth and its extension headers; udp_payload = UDP length - 8 (host order).
 * Returns FT_OK (FT_F_ROCE set) or FT_R_TRUNC_ROCE when the UDP payload or the capture ends inside the BTH
 * (FT_F_ROCE clear) or inside an extension header (FT_F_ROCE set, BTH fields valid, roce_ext holds the
 * headers read in full). Fields in host order; 24-bit fields in the low bits. */
static __always_inline int ft_parse_roce(const ft_u8 *bth, const ft_u8 *data_end, ft_u32 udp_payload,
                                         struct ft_pkt *p)
{
    const ft_u8 *q = bth + FT_ROCE_BTH_LEN;
    ft_u32 ext, hdr_len, overhead;
    ft_u8 opcode, b1, b4;

    if (udp_payload < FT_ROCE_BTH_LEN || bth + FT_ROCE_BTH_LEN > data_end)
        return FT_R_TRUNC_ROCE;
    /* opcode(1) SE M pad(2) TVer(4) | P_Key(2) | FECN BECN rsv(6) | dest QP(3) | AckReq rsv(7) | PSN(3) */
    opcode = bth[0];
    b1 = bth[1];
    b4 = bth[4];
    p->roce_opcode = opcode;
    p->roce_bth_flags = (ft_u8)(((b1 & 0x80) ? FT_BTH_SE : 0) | ((b1 & 0x40) ? FT_BTH_MIG : 0) |
                                ((bth[8] & 0x80) ? FT_BTH_ACKREQ : 0) | ((b4 & 0x80) ? FT_BTH_FECN : 0) |
                                ((b4 & 0x40) ? FT_BTH_BECN : 0));
    p->roce_pad = (b1 >> 4) & 0x03;
    p->roce_tver = b1 & 0x0F;
    p->roce_pkey = ft_load_be16(bth + 2);
    p->roce_dqpn = ft_load_be32(bth + 4) & 0x00FFFFFF;
    p->roce_psn = ft_load_be32(bth + 8) & 0x00FFFFFF;
    p->flags |= FT_F_ROCE;

    if (opcode == FT_ROCE_OPCODE_CNP) {
        ext = 0;
        hdr_len = FT_ROCE_CNP_RSV_LEN;
    } else {
        ext = ft_roce_ext_for_opcode(opcode);
        hdr_len = ((ext & FT_ROCE_DETH) ? 8 : 0) + ((ext & FT_ROCE_RETH) ? 16 : 0) +
                  ((ext & FT_ROCE_ATOMICETH) ? 28 : 0) + ((ext & FT_ROCE_AETH) ? 4 : 0) +
                  ((ext & FT_ROCE_ATOMICACKETH) ? 8 : 0) + ((ext & FT_ROCE_IMMDT) ? 4 : 0) +
                  ((ext & FT_ROCE_IETH) ? 4 : 0);
    }
    /* Payload from the lengths, so a snap length that cuts the payload still meters RDMA bytes right. */
    overhead = FT_ROCE_BTH_LEN + hdr_len + p->roce_pad + FT_ROCE_ICRC_LEN;
    p->roce_payload_len = udp_payload > overhead ? udp_payload - overhead : 0;
    if (udp_payload < FT_ROCE_BTH_LEN + hdr_len)
        return FT_R_TRUNC_ROCE;

    /* Extension headers in the order of IBA 9.2: DETH, RETH, AtomicETH, AETH, AtomicAckETH, ImmDt, IETH. */
    if (ext & FT_ROCE_DETH) { /* Q_Key(4) rsv(1) source QP(3) */
        if (q + 8 > data_end)
            return FT_R_TRUNC_ROCE;
        q += 8;
        p->roce_ext |= FT_ROCE_DETH;
    }
    if (ext & FT_ROCE_RETH) { /* virtual address(8) R_Key(4) DMA length(4) */
        if (q + 16 > data_end)
            return FT_R_TRUNC_ROCE;
        p->roce_reth_va = ft_load_be64(q);
        p->roce_reth_rkey = ft_load_be32(q + 8);
        p->roce_reth_len = ft_load_be32(q + 12);
        q += 16;
        p->roce_ext |= FT_ROCE_RETH;
    }
    if (ext & FT_ROCE_ATOMICETH) { /* VA(8) R_Key(4) swap/add(8) compare(8) */
        if (q + 28 > data_end)
            return FT_R_TRUNC_ROCE;
        q += 28;
        p->roce_ext |= FT_ROCE_ATOMICETH;
    }
    if (ext & FT_ROCE_AETH) { /* syndrome(1) MSN(3) */
        if (q + 4 > data_end)
            return FT_R_TRUNC_ROCE;
        p->roce_aeth_syndrome = q[0];
        p->roce_aeth_msn = ft_load_be32(q) & 0x00FFFFFF;
        q += 4;
        p->roce_ext |= FT_ROCE_AETH;
    }
    if (ext & FT_ROCE_ATOMICACKETH) { /* original remote data(8) */
        if (q + 8 > data_end)
            return FT_R_TRUNC_ROCE;
        q += 8;
        p->roce_ext |= FT_ROCE_ATOMICACKETH;
    }
    if (ext & FT_ROCE_IMMDT) {
        if (q + 4 > data_end)
            return FT_R_TRUNC_ROCE;
        q += 4;
        p->roce_ext |= FT_ROCE_IMMDT;
    }
    if (ext & FT_ROCE_IETH) {
        if (q + 4 > data_end)
            return FT_R_TRUNC_ROCE;
        q += 4;
        p->roce_ext |= FT_ROCE_IETH;
    }
    if (opcode == FT_ROCE_OPCODE_CNP && q + FT_ROCE_CNP_RSV_LEN > data_end)
        return FT_R_TRUNC_ROCE;
    return FT_OK;
}

/* ---- tunnels -------------------------------------------------------------------------------------------- */

/* Parses a GRE header (RFC 2784 with the RFC 2890 key and sequence number) at *cursor and, for ERSPAN, the
 * ERSPAN header behind it. Returns FT_OK with *nx / *etype / *tun_type / *tun_id (host order) and *cursor
 * on the inner frame; FT_OK with *nx = FT_NX_NONE when the payload is not one the parser decodes (the packet
 * is metered as GRE); FT_R_TRUNC_TUNNEL; or FT_R_BAD_TUNNEL (GRE version != 0, routing present (RFC 1701),
 * ERSPAN type I or an ERSPAN version/frame type that does not match). */
static __always_inline int ft_parse_gre(const ft_u8 **cursor, const ft_u8 *data_end, int *nx, ft_u16 *etype,
                                        ft_u8 *tun_type, ft_u32 *tun_id)
{
    const ft_u8 *gre = *cursor;
    const ft_u8 *pos;
    ft_u8 flags;
    ft_u16 proto, w;
    ft_u32 hlen, key_off;

    if (gre + 4 > data_end) /* C R K S s recur(3) | flags(5) version(3) | protocol(2) */
        return FT_R_TRUNC_TUNNEL;
    flags = gre[0];
    if ((gre[1] & 0x07) != 0 || (flags & 0x40))
        return FT_R_BAD_TUNNEL;
    proto = ft_load_be16(gre + 2);
    key_off = (flags & 0x80) ? 8 : 4; /* checksum(2) + reserved1(2) come first when C is set */
    hlen = key_off + ((flags & 0x20) ? 4 : 0) + ((flags & 0x10) ? 4 : 0);
    if (gre + hlen > data_end)
        return FT_R_TRUNC_TUNNEL;
    pos = gre + hlen;

    switch (proto) {
    case FT_ETH_P_IP:
    case FT_ETH_P_IPV6:
    case FT_ETH_P_MPLS_UC:
    case FT_ETH_P_MPLS_MC:
        *tun_type = FT_TUN_GRE;
        *nx = FT_NX_ETYPE;
        *etype = proto;
        break;
    case FT_ETH_P_TEB:
        *tun_type = FT_TUN_GRE_TEB;
        *nx = FT_NX_ETHER;
        break;
    case FT_ETH_P_ERSPAN2:
        /* Type I has no sequence number and no ERSPAN header; type II always sets S. */
        if (!(flags & 0x10))
            return FT_R_BAD_TUNNEL;
        if (pos + 8 > data_end) /* ver(4) VLAN(12) | COS(3) En(2) T(1) session(10) | rsv(12) index(20) */
            return FT_R_TRUNC_TUNNEL;
        if ((pos[0] >> 4) != 1)
            return FT_R_BAD_TUNNEL;
        *tun_type = FT_TUN_ERSPAN2;
        *tun_id = ft_load_be16(pos + 2) & 0x03FF;
        *nx = FT_NX_ETHER;
        *cursor = pos + 8;
        return FT_OK;
    case FT_ETH_P_ERSPAN3:
        /* ver(4) VLAN(12) | COS(3) BSO(2) T(1) session(10) | timestamp(4) | SGT(2) |
         * P(1) FT(5) HW ID(6) D(1) Gra(2) O(1); O: an 8-byte platform-specific subheader follows */
        if (pos + 12 > data_end)
            return FT_R_TRUNC_TUNNEL;
        if ((pos[0] >> 4) != 2)
            return FT_R_BAD_TUNNEL;
        w = ft_load_be16(pos + 10);
        *tun_id = ft_load_be16(pos + 2) & 0x03FF;
        pos += 12;
        if (w & 0x0001) {
            if (pos + 8 > data_end)
                return FT_R_TRUNC_TUNNEL;
            pos += 8;
        }
        switch ((w >> 10) & 0x1F) {
        case 0: /* Ethernet frame */
            *nx = FT_NX_ETHER;
            break;
        case 2: /* IP packet */
            *nx = FT_NX_IP;
            break;
        default:
            return FT_R_BAD_TUNNEL;
        }
        *tun_type = FT_TUN_ERSPAN3;
        *cursor = pos;
        return FT_OK;
    default:
        *nx = FT_NX_NONE;
        return FT_OK;
    }
    if (flags & 0x20) {
        if (gre + key_off + 4 > data_end) /* implied by the hlen check; the verifier needs it spelled out */
            return FT_R_TRUNC_TUNNEL;
        *tun_id = ft_load_be32(gre + key_off);
    }
    *cursor = pos;
    return FT_OK;
}

/* Parses the 8-byte VXLAN header (RFC 7348) at *cursor: flags(1, I = 0x08) rsv(3) VNI(3) rsv(1). Returns
 * FT_OK with *vni (host order) and *cursor on the inner Ethernet header, FT_R_TRUNC_TUNNEL, or
 * FT_R_BAD_TUNNEL when the I flag is clear. */
static __always_inline int ft_parse_vxlan(const ft_u8 **cursor, const ft_u8 *data_end, ft_u32 *vni)
{
    const ft_u8 *vx = *cursor;

    if (vx + 8 > data_end)
        return FT_R_TRUNC_TUNNEL;
    if (!(vx[0] & 0x08))
        return FT_R_BAD_TUNNEL;
    *vni = ft_load_be32(vx + 4) >> 8;
    *cursor = vx + 8;
    return FT_OK;
}

/* Moves the record from the packet just parsed to the one it encapsulates: the outermost tunnel and IP
 * header are remembered, everything the inner packet will fill is cleared (the inner packet may be IPv4
 * after an IPv6 outer, or stop earlier than the outer did). VLAN/MPLS fields describe the innermost
 * Ethernet frame, so they are cleared only when an inner Ethernet header follows. FT_F_TRUNC and
 * FT_F_IP_OPT_BAD stay: they describe the frame, and an outer header's bad options are still reported. */
static __always_inline void ft_enter_tunnel(struct ft_pkt *p, ft_u8 tun_type, ft_u32 tun_id, int inner_ether)
{
    if (p->tunnel_depth == 0) {
        p->tunnel_type = tun_type;
        p->tunnel_id = tun_id;
        p->outer_ip_version = p->ip_version;
        __builtin_memcpy(p->outer_src_addr, p->src_addr, 16);
        __builtin_memcpy(p->outer_dst_addr, p->dst_addr, 16);
    }
    p->tunnel_depth++;
    p->ethertype = 0;
    p->flags &= (ft_u16)~(FT_F_L3 | FT_F_L4 | FT_F_FRAG | FT_F_FRAG_FIRST | FT_F_IP_OPT | FT_F_IPV4_DF);
    if (inner_ether) {
        p->vlan_id = 0;
        p->outer_vlan_id = 0;
        p->vlan_depth = 0;
        p->mpls_depth = 0;
    }
    __builtin_memset(p->src_addr, 0, 16);
    __builtin_memset(p->dst_addr, 0, 16);
    p->l3_len = 0;
    p->ip_version = 0;
    p->proto = 0;
    p->tos = 0;
    p->ttl = 0;
    p->frag_off = 0;
    p->l4_off = 0;
    p->sport = 0;
    p->dport = 0;
    p->payload_off = 0;
    p->payload_cap = 0;
    p->payload_len = 0;
}

/* One decapsulation level up to its L4 header: the link header nx names (FT_NX_ETHER: Ethernet; FT_NX_IP: a
 * bare IP header, its version from the first nibble; otherwise etype, read by the caller, says what follows),
 * then VLAN/MPLS tags and the IPv4/IPv6 header. Returns FT_OK with *posp on the L4 header, p->l4_off set and
 * *l4_len the L4 bytes the IP header announces; else the exit reason. ft_parse()'s loop and the live probe's
 * L3 stage (probe/bpf/flowtap.bpf.c) both call it, so the two stay one parser. */
static __always_inline int ft_parse_to_l4(const ft_u8 *data, const ft_u8 *data_end, int nx, ft_u16 etype,
                                          const ft_u8 **posp, struct ft_pkt *p, ft_u32 *l4_len)
{
    const ft_u8 *pos = *posp;
    ft_u8 nibble;
    int ipver = 0, r;

    if (nx == FT_NX_ETHER) { /* dst(6) src(6) ethertype or 802.3 length(2) */
        if (pos + 14 > data_end)
            return FT_R_TRUNC_L2;
        etype = ft_load_be16(pos + 12);
        pos += 14;
    } else if (nx == FT_NX_IP) {
        if (pos + 1 > data_end)
            return FT_R_TRUNC_L3;
        nibble = pos[0] >> 4;
        if (nibble != 4 && nibble != 6)
            return FT_R_BAD_IP_VERSION;
        etype = nibble == 4 ? FT_ETH_P_IP : FT_ETH_P_IPV6;
    }
    r = ft_parse_l2_tags(&pos, data_end, etype, p, &ipver);
    if (r != FT_OK)
        return r;
    pos = ft_cursor_forget(data, pos);
    if (!pos)
        return FT_R_TRUNC_L3;
    if (ipver == 4)
        r = ft_parse_ipv4(&pos, data, data_end, p, l4_len);
    else
        r = ft_parse_ipv6(&pos, data, data_end, p, l4_len);
    if (r != FT_OK)
        return r;
    pos = ft_cursor_forget(data, pos);
    if (!pos)
        return FT_R_TRUNC_L4;
    p->l4_off = (ft_u16)(pos - data);
    *posp = pos;
    return FT_OK;
}

/* ---- entry point ---------------------------------------------------------------------------------------- */

/* Parse the captured bytes data..data_end of one frame of link type `linktype` into *p.
 * The caller zeroes *p and sets ts_ns, frame_off, wire_len, cap_len, iface and direction (and FT_F_TRUNC)
 * beforehand. Returns the exit reason (also stored in p->reason): FT_OK or an FT_R_* value. */
static __always_inline int ft_parse(const ft_u8 *data, const ft_u8 *data_end, ft_u32 linktype,
                                    struct ft_pkt *p)
{
    const ft_u8 *pos = data;
    ft_u16 etype = 0;
    ft_u32 l4_len = 0, tun_id = 0;
    ft_u8 tun_type = FT_TUN_NONE;
    int nx = FT_NX_NONE, level, r;

    p->linktype = (ft_u16)linktype;
    r = ft_parse_link(data, data_end, linktype, p, &pos, &etype, &nx);
    if (r != FT_OK)
        goto out;

    /* One iteration per decapsulation level: the outer packet, then up to FT_PARSE_MAX_TUNNEL inner ones. */
    for (level = 0; level <= FT_PARSE_MAX_TUNNEL; level++) {
        r = ft_parse_to_l4(data, data_end, nx, etype, &pos, p, &l4_len);
        if (r != FT_OK)
            goto out;

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
            tun_id = 0;
            r = ft_parse_gre(&pos, data_end, &nx, &etype, &tun_type, &tun_id);
            if (r != FT_OK || nx == FT_NX_NONE)
                goto out;
            break;
        default: /* ESP, SCTP, OSPF, ...: metered on addresses and protocol */
            goto out;
        }

        if (level == FT_PARSE_MAX_TUNNEL) { /* one more would exceed the bound: meter the packet we have */
            r = FT_R_TUNNEL_DEPTH;
            goto out;
        }
        ft_enter_tunnel(p, tun_type, tun_id, nx == FT_NX_ETHER);
    }
out:
    p->reason = (ft_u8)r;
    return r;
}

#endif /* FT_PARSE_H */
