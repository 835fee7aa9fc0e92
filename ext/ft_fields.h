/* ft_fields.h: name, offset and numpy format of every field of struct ft_pkt, for the numpy mirror.
 * Generated once from ft_record.h and kept by hand since; tests/test_record_layout.py fails when a field
 * of the header is missing here or the table does not cover the struct. */
#ifndef FT_FIELDS_H
#define FT_FIELDS_H
#include <stddef.h>
#include "ft_record.h"

struct ft_field_desc { const char *name; size_t offset; const char *fmt; };

#define FT_FIELD(n, f) { #n, offsetof(struct ft_pkt, n), f }
static const struct ft_field_desc FT_PKT_FIELDS[] = {
    FT_FIELD(ts_ns, "<u8"),
    FT_FIELD(frame_off, "<u8"),
    FT_FIELD(wire_len, "<u4"),
    FT_FIELD(cap_len, "<u4"),
    FT_FIELD(flags, "<u2"),
    FT_FIELD(reason, "u1"),
    FT_FIELD(direction, "u1"),
    FT_FIELD(iface, "<u2"),
    FT_FIELD(linktype, "<u2"),
    FT_FIELD(vlan_id, "<u2"),
    FT_FIELD(outer_vlan_id, "<u2"),
    FT_FIELD(vlan_depth, "u1"),
    FT_FIELD(mpls_depth, "u1"),
    FT_FIELD(ethertype, "<u2"),
    FT_FIELD(src_addr, "V16"),
    FT_FIELD(dst_addr, "V16"),
    FT_FIELD(l3_len, "<u4"),
    FT_FIELD(ip_version, "u1"),
    FT_FIELD(proto, "u1"),
    FT_FIELD(tos, "u1"),
    FT_FIELD(ttl, "u1"),
    FT_FIELD(frag_off, "<u2"),
    FT_FIELD(l4_off, "<u2"),
    FT_FIELD(sport, "<u2"),
    FT_FIELD(dport, "<u2"),
    FT_FIELD(payload_off, "<u2"),
    FT_FIELD(payload_cap, "<u2"),
    FT_FIELD(payload_len, "<u4"),
    FT_FIELD(icmp_id, "<u2"),
    FT_FIELD(icmp_type, "u1"),
    FT_FIELD(icmp_code, "u1"),
    FT_FIELD(tcp_seq, "<u4"),
    FT_FIELD(tcp_ack, "<u4"),
    FT_FIELD(tcp_flags, "<u2"),
    FT_FIELD(tcp_win, "<u2"),
    FT_FIELD(tcp_mss, "<u2"),
    FT_FIELD(tcp_wscale, "u1"),
    FT_FIELD(tcp_opt_present, "u1"),
    FT_FIELD(tcp_tsval, "<u4"),
    FT_FIELD(tcp_tsecr, "<u4"),
    FT_FIELD(tcp_sack_count, "u1"),
    FT_FIELD(tcp_doff, "u1"),
    FT_FIELD(tcp_sack, "(8,)<u4"),
    FT_FIELD(tunnel_type, "u1"),
    FT_FIELD(tunnel_depth, "u1"),
    FT_FIELD(outer_ip_version, "u1"),
    FT_FIELD(tunnel_id, "<u4"),
    FT_FIELD(outer_src_addr, "V16"),
    FT_FIELD(outer_dst_addr, "V16"),
    FT_FIELD(roce_opcode, "u1"),
    FT_FIELD(roce_bth_flags, "u1"),
    FT_FIELD(roce_pad, "u1"),
    FT_FIELD(roce_tver, "u1"),
    FT_FIELD(roce_pkey, "<u2"),
    FT_FIELD(roce_ext, "u1"),
    FT_FIELD(roce_aeth_syndrome, "u1"),
    FT_FIELD(roce_dqpn, "<u4"),
    FT_FIELD(roce_psn, "<u4"),
    FT_FIELD(roce_aeth_msn, "<u4"),
    FT_FIELD(roce_reth_rkey, "<u4"),
    FT_FIELD(roce_reth_len, "<u4"),
    FT_FIELD(roce_payload_len, "<u4"),
    FT_FIELD(roce_reth_va, "<u8"),
};
static const int FT_PKT_NFIELDS = sizeof(FT_PKT_FIELDS) / sizeof(FT_PKT_FIELDS[0]);

#endif
