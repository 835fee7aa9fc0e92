# Cython view of ft_record.h: the per-packet record. The C header is the source of truth; this file only
# declares what Cython code reads. The numpy mirror (PKT_DTYPE in _reader.pyx) is built from offsetof()
# through ft_fields.h, so it cannot drift from the header.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "ft_record.h" nogil:
    enum:
        FT_RECORD_VERSION
        FT_MAX_VLAN
        FT_MAX_MPLS
        FT_MAX_IPV6_EXT
        FT_MAX_TUNNEL
        FT_MAX_SACK
        FT_OK
        FT_R_FRAGMENT
        FT_R_TRUNC_L4
        FT_R__COUNT
        FT_TUN__COUNT
        FT_F_L3
        FT_F_L4
        FT_F_FRAG
        FT_F_FRAG_FIRST
        FT_F_TRUNC
        FT_F_ROCE
        FT_F_TCP_OPT_BAD
        FT_TCPOPT_MSS
        FT_TCPOPT_WSCALE
        FT_TCPOPT_SACK_PERM
        FT_TCPOPT_SACK
        FT_TCPOPT_TS
        FT_BTH_ACKREQ
        FT_BTH_FECN
        FT_BTH_BECN

    const char *FT_REASON_NAMES[]
    const char *FT_TUNNEL_NAMES[]

    struct ft_pkt:
        uint64_t ts_ns
        uint64_t frame_off
        uint32_t wire_len
        uint32_t cap_len
        uint16_t flags
        uint8_t reason
        uint8_t direction
        uint16_t iface
        uint16_t linktype
        uint16_t vlan_id
        uint16_t outer_vlan_id
        uint8_t vlan_depth
        uint8_t mpls_depth
        uint16_t ethertype
        uint8_t src_addr[16]
        uint8_t dst_addr[16]
        uint32_t l3_len
        uint8_t ip_version
        uint8_t proto
        uint8_t tos
        uint8_t ttl
        uint16_t frag_off
        uint16_t l4_off
        uint16_t sport
        uint16_t dport
        uint16_t payload_off
        uint16_t payload_cap
        uint32_t payload_len
        uint16_t icmp_id
        uint8_t icmp_type
        uint8_t icmp_code
        uint32_t tcp_seq
        uint32_t tcp_ack
        uint16_t tcp_flags
        uint16_t tcp_win
        uint16_t tcp_mss
        uint8_t tcp_wscale
        uint8_t tcp_opt_present
        uint32_t tcp_tsval
        uint32_t tcp_tsecr
        uint8_t tcp_sack_count
        uint8_t tcp_doff
        uint32_t tcp_sack[8]
        uint8_t tunnel_type
        uint8_t tunnel_depth
        uint8_t outer_ip_version
        uint32_t tunnel_id
        uint8_t outer_src_addr[16]
        uint8_t outer_dst_addr[16]
        uint8_t roce_opcode
        uint8_t roce_bth_flags
        uint8_t roce_pad
        uint8_t roce_tver
        uint16_t roce_pkey
        uint8_t roce_ext
        uint8_t roce_aeth_syndrome
        uint32_t roce_dqpn
        uint32_t roce_psn
        uint32_t roce_aeth_msn
        uint32_t roce_reth_rkey
        uint32_t roce_reth_len
        uint32_t roce_payload_len
        uint64_t roce_reth_va

cdef extern from "ft_fields.h" nogil:
    struct ft_field_desc:
        const char *name
        size_t offset
        const char *fmt
    const ft_field_desc FT_PKT_FIELDS[]
    const int FT_PKT_NFIELDS
