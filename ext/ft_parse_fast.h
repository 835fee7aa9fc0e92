/* ft_parse_fast.h: a straight-line parse of the frames that make up nearly all traffic, for callers that pay
 * per instruction (the live probe's entry program) and could use it in replay too. Header-only, the same
 * rules as ft_parse.h (no libc, no tables, every read checked against data_end right before it).
 *
 * The common shapes it takes, everything else it declines without writing anything:
 *   Ethernet II, untagged or with exactly one VLAN tag (0x8100, 0x88A8, 0x9100);
 *   IPv4 with IHL 5, a total length >= 20, not a fragment (MF clear, offset 0); or IPv6 with a payload
 *   length > 0 whose next header is TCP or UDP (no extension header);
 *   TCP with no options (data offset 20) or exactly NOP, NOP, timestamps (data offset 32), the data offset
 *   within the IP payload; UDP with a length >= 8, not to port 4789 (VXLAN), and RoCEv2 (UDP 4791) with
 *   its BTH and extension headers through ft_parse_roce().
 * For a frame it takes, the record equals what ft_parse(data, data_end, FT_LINKTYPE_ETHERNET, p) writes into
 * the same zeroed record (tests/test_live_parity.py checks it on the nDPI captures and on scapy frames at
 * every edge above); for the others the caller runs ft_parse() (or the live probe's stages) unchanged.
 */
#ifndef FT_PARSE_FAST_H
#define FT_PARSE_FAST_H
#include "ft_parse.h"

/* ft_parse_fast_ether()'s answer for a frame it does not take: not an ft_reason (those are < FT_R__COUNT). */
#define FT_FAST_DECLINED 0xFF

/* Parses the Ethernet frame data..data_end into *p, which the caller zeroed and filled with its framing fields
 * (ts_ns, wire_len, cap_len, ...) as for ft_parse(). Returns FT_FAST_DECLINED, with *p untouched, when the
 * frame is not one of the shapes above; else the exit reason, also stored in p->reason: FT_OK, or
 * FT_R_TRUNC_ROCE from ft_parse_roce(). Fields in host order except the addresses (network order), as
 * ft_record.h says. All checks come before the first write, so a declined frame leaves no trace. */
static __always_inline int ft_parse_fast_ether(const ft_u8 *data, const ft_u8 *data_end, struct ft_pkt *p)
{
    const ft_u8 *ip, *l4;
    ft_u32 total, hlen, l4_len, doff = 0, ulen = 0;
    ft_u16 etype, vid = 0, frag = 0;
    ft_u8 tagged = 0, proto;
    int r = FT_OK;

    /* ---- checks: decline on anything the general parser would treat differently ---- */
    if (data + 14 > data_end)
        return FT_FAST_DECLINED;
    etype = ft_load_be16(data + 12);
    ip = data + 14;
    if (ft_is_vlan_tpid(etype)) {
        if (data + 18 > data_end)
            return FT_FAST_DECLINED;
        vid = ft_load_be16(data + 14) & 0x0FFF;
        etype = ft_load_be16(data + 16);
        ip = data + 18;
        tagged = 1;
    }
    if (etype == FT_ETH_P_IP) {
        if (ip + 20 > data_end || ip[0] != 0x45) /* version 4, IHL 5: no options */
            return FT_FAST_DECLINED;
        total = ft_load_be16(ip + 2);
        frag = ft_load_be16(ip + 6);
        /* total 0 (TSO) and < 20 (bad length) take the general path, as do fragments (MF or an offset) */
        if (total < 20 || (frag & 0x3FFF))
            return FT_FAST_DECLINED;
        proto = ip[9];
        hlen = 20;
    } else if (etype == FT_ETH_P_IPV6) {
        if (ip + 40 > data_end || (ip[0] >> 4) != 6)
            return FT_FAST_DECLINED;
        total = ft_load_be16(ip + 4);
        if (total == 0) /* jumbogram or GSO capture: length from the frame, general path */
            return FT_FAST_DECLINED;
        total += 40;
        proto = ip[6]; /* TCP or UDP right after the fixed header, else declined below */
        hlen = 40;
    } else {
        return FT_FAST_DECLINED; /* a second VLAN tag, MPLS, ARP, ... */
    }
    l4 = ip + hlen;
    l4_len = total - hlen; /* total >= hlen: IPv4 checked >= 20, IPv6 is payload length + 40 */
    if (proto == FT_IPPROTO_TCP) {
        if (l4 + 20 > data_end)
            return FT_FAST_DECLINED;
        doff = (ft_u32)(l4[12] >> 4) << 2;
        if (doff > l4_len)
            return FT_FAST_DECLINED;
        if (doff == 32) { /* only NOP NOP TS(10): the layout ft_parse_tcp_options() also takes at once */
            if (l4 + 32 > data_end || ft_load_be32(l4 + 20) != 0x0101080A)
                return FT_FAST_DECLINED;
        } else if (doff != 20) {
            return FT_FAST_DECLINED;
        }
    } else if (proto == FT_IPPROTO_UDP) {
        if (l4 + 8 > data_end)
            return FT_FAST_DECLINED;
        ulen = ft_load_be16(l4 + 4);
        if (ulen < 8 || ft_load_be16(l4 + 2) == FT_UDP_PORT_VXLAN)
            return FT_FAST_DECLINED;
    } else {
        return FT_FAST_DECLINED;
    }

    /* ---- writes: the fields ft_parse_l2_tags, ft_parse_ipv4/6 and ft_parse_tcp/udp set for these shapes ---- */
    p->linktype = FT_LINKTYPE_ETHERNET;
    p->ethertype = etype;
    if (tagged) {
        p->vlan_id = vid;
        p->vlan_depth = 1;
    }
    if (hlen == 20) {
        __builtin_memcpy(p->src_addr, ip + 12, 4);
        __builtin_memcpy(p->dst_addr, ip + 16, 4);
        p->ip_version = 4;
        p->tos = ip[1];
        p->ttl = ip[8];
        p->flags |= FT_F_L3 | ((frag & 0x4000) ? FT_F_IPV4_DF : 0); /* keeps the caller's FT_F_TRUNC */
    } else {
        __builtin_memcpy(p->src_addr, ip + 8, 16);
        __builtin_memcpy(p->dst_addr, ip + 24, 16);
        p->ip_version = 6;
        p->tos = (ft_u8)(ft_load_be16(ip) >> 4); /* version(4) traffic class(8) flow label(20) */
        p->ttl = ip[7];
        p->flags |= FT_F_L3;
    }
    p->proto = proto;
    p->l3_len = total;
    p->l4_off = (ft_u16)(l4 - data);
    if (proto == FT_IPPROTO_TCP) {
        p->sport = ft_load_be16(l4);
        p->dport = ft_load_be16(l4 + 2);
        p->tcp_seq = ft_load_be32(l4 + 4);
        p->tcp_ack = ft_load_be32(l4 + 8);
        p->tcp_flags = ft_load_be16(l4 + 12) & 0x01FF;
        p->tcp_win = ft_load_be16(l4 + 14);
        p->tcp_doff = (ft_u8)doff;
        if (doff == 32) {
            p->tcp_tsval = ft_load_be32(l4 + 24);
            p->tcp_tsecr = ft_load_be32(l4 + 28);
            p->tcp_opt_present = FT_TCPOPT_TS;
            l4 += 32;
        } else {
            l4 += 20;
        }
        p->payload_off = (ft_u16)(l4 - data);
        p->payload_len = l4_len - doff;
        p->payload_cap = ft_payload_cap(data_end - l4, p->payload_len);
        p->flags |= FT_F_L4;
    } else {
        p->sport = ft_load_be16(l4);
        p->dport = ft_load_be16(l4 + 2);
        p->payload_off = (ft_u16)(l4 + 8 - data);
        p->payload_len = ulen - 8;
        p->payload_cap = ft_payload_cap(data_end - (l4 + 8), p->payload_len);
        p->flags |= FT_F_L4;
        if (p->dport == FT_UDP_PORT_ROCEV2)
            r = ft_parse_roce(l4 + 8, data_end, p->payload_len, p);
    }
    p->reason = (ft_u8)r;
    return r;
}

#endif /* FT_PARSE_FAST_H */
