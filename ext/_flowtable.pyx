"""Flow table: struct ft_pkt records in, struct ft_flowrec flow records out.

The hot loop (FlowTable.add) runs without the GIL and without Python objects: a chained hash table over a
slab of struct ft_flow, two recency lists (flows on probation, established flows: idle expiry merges them,
eviction prefers probation, see evict_victim), and an output array of exported
records that Python drains in batches (FlowTable.take). Time is packet time only, so a replay is
deterministic: the same input gives the same records in the same order.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free

cdef extern from "<stdlib.h>" nogil:
    void *aligned_alloc(size_t alignment, size_t size)   # C11: TCP meter chunks on cache-line boundaries
from libc.string cimport memcpy, memcmp, memset

from ft_record cimport ft_pkt, FT_F_L3, FT_F_L4, FT_F_FRAG, FT_F_TRUNC, FT_R__COUNT, FT_REASON_NAMES
from ft_record cimport FT_F_ROCE   # RoCE meter (issue 4)

cnp.import_array()

# --- RoCE meter (issue 4): ext/ft_roce.h (meter), ext/ft_roce_pair.h (pairing side tables) -----------------
cdef extern from "ft_roce.h" nogil:
    struct ft_roce_dir:
        uint16_t sport
        uint8_t st
    struct ft_roce_meter:
        ft_roce_dir dir[2]
        uint32_t partner_qpn
        uint16_t pmtu
        uint16_t pair_tries
        uint8_t transport
        uint8_t pairing
        uint8_t role
        uint8_t cm_transport
        uint16_t partner_vlan
    struct ft_roce_out:
        pass
    struct ft_roce_field:
        const char *name
        size_t offset
        const char *fmt
    struct ft_roce_cm:
        uint32_t local_comm_id
        uint32_t remote_comm_id
        uint32_t local_qpn
        uint8_t transport
    const ft_roce_field FT_ROCE_OUT_FIELDS[]
    const int FT_ROCE_OUT_NFIELDS
    enum:
        FT_ROCE_KEY_TAG
        FT_ROCE_KEY_AT_B
        FT_ROCE_PSN_MASK
        FT_ROCE_TR_RC
        FT_ROCE_TR_NONE
        FT_ROCE_PAIR_NONE
        FT_ROCE_PAIR_PSN
        FT_ROCE_PAIR_CM
        FT_ROCE_ROLE_NONE
        FT_ROCE_ROLE_RESPONDER
        FT_ROCE_ROLE_REQUESTER
        FT_ROCE_CM_REQ
        FT_ROCE_CM_REP
        FT_RD_SPORT
        FT_ROCE_DETH
    void ft_roce_init(ft_roce_meter *m)
    void ft_roce_update(ft_roce_meter *m, int d, const ft_pkt *p)
    void ft_roce_period_reset(ft_roce_meter *m)
    void ft_roce_swap_dirs(ft_roce_meter *m)
    void ft_roce_export(const ft_roce_meter *m, ft_roce_out *o, uint32_t key_qpn, int qp_at_src)
    void ft_roce_merge(ft_roce_meter *s, const ft_roce_meter *v, const int *map)
    uint8_t ft_roce_pkt_role(const ft_pkt *p)
    int ft_roce_cm_parse(const uint8_t *mad, uint32_t len, ft_roce_cm *out)
# --- end RoCE meter -----------------------------------------------------------------------------------------
# --- TCP meter (issue 3): ext/ft_tcp.h ---------------------------------------------------------------
cdef extern from "ft_tcp.h" nogil:
    struct ft_tcp_meter:
        pass
    struct ft_tcp_out:
        pass
    struct ft_tcp_field:
        const char *name
        size_t offset
        const char *fmt
    const ft_tcp_field FT_TCPOUT_FIELDS[]
    const int FT_TCPOUT_NFIELDS
    void ft_tcp_init(ft_tcp_meter *m)
    void ft_tcp_update(ft_tcp_meter *m, const ft_pkt *p, int dir)
    void ft_tcp_export(const ft_tcp_meter *m, ft_tcp_out *o, int final)
    void ft_tcp_period_reset(ft_tcp_meter *m)
cdef extern from "ft_hist.h" nogil:   # the latency sketch of both meters
    enum:
        FT_HIST_BUCKETS
# --- end TCP meter ---------------------------------------------------------------------------------------
# ---- DPI (issue 5): registry, dissectors and rule tables (ext/ft_dpi.h) ----
cdef extern from "ft_dpi.h" nogil:
    struct ft_dpi_state:
        uint64_t cand
        int32_t ext
        int32_t reasm
        uint16_t app
        uint16_t rule
        uint8_t l4
        uint8_t detector
        uint8_t pkts
        uint8_t flags
        uint8_t conf

    struct ft_dpi_out:
        char server_name[128]
        char alpn[32]
        char version[48]
        char http_method[16]
        char http_path[112]
        char user_agent[112]
        uint16_t set
        uint16_t truncated
        uint16_t app
        uint16_t base
        uint16_t rule
        uint16_t dns_qtype
        uint8_t dns_rcode
        uint8_t conf
        uint8_t inspected

    struct ft_dpi_counters:
        uint64_t packets_inspected, flows_inspected, flows_detected, flows_rule_payload
        uint64_t flows_budget_spent, flows_all_excluded, reasm_started, reasm_gaps, reasm_full
        uint64_t reasm_pool_full, fields_pool_full

    struct ft_rule_port:
        uint16_t lo, hi
    struct ft_rule_cidr:
        uint8_t ver, plen
        uint8_t addr[16]
    struct ft_rule_name:
        char text[128]
        uint8_t len
        uint8_t tail
    struct ft_rule_pat:
        uint8_t dir, anywhere
        uint16_t len, offset, within
        uint8_t bytes[64]
        uint8_t care[64]
        uint64_t sa[256]
    struct ft_rule:
        int32_t rank
        uint16_t app
        uint8_t l4, conf, side, flags
        uint32_t port_i, port_n, cidr_i, cidr_n, name_i, name_n, alpn_i, alpn_n, pat_i, pat_n
        uint64_t det[2]
    struct ft_rules:
        ft_rule *r
        uint32_t n
        ft_rule_port *ports
        ft_rule_cidr *cidrs
        ft_rule_name *names
        ft_rule_pat *pats
        uint32_t *payload
        uint32_t npayload
        uint32_t *port_off
        uint32_t *port_list
        uint32_t *always
        uint32_t nalways

    struct ft_dpi_ctx:
        uint32_t budget
        int32_t ext_hw, rs_hw
        ft_rules rules
        ft_dpi_counters c

    struct ft_dpi_flowinfo:
        int ip_version
        const uint8_t *caddr
        const uint8_t *saddr
        int initiator_known

    struct ft_dissector:
        const char *name
        uint16_t app

    const ft_dissector FT_DPI_TCP[]
    const ft_dissector FT_DPI_UDP[]
    const int FT_DPI_NTCP
    const int FT_DPI_NUDP
    const char *FT_APP_NAMES[]
    enum:
        FT_APP__COUNT
        FT_DPI_RULE_BASE
        FT_DPI_S_DONE
        FT_DPI_S_FINAL
        FT_DPI_DETECTED
        FT_DPI_EXCLUDED
        FT_DPI_NEED_MORE
        FT_DPI_FINAL
        FT_DPI_NAME_LEN
        FT_PAT_MAX
        FT_RULE_PORT
        FT_RULE_CIDR
        FT_RULE_NAME
        FT_RULE_ALPN
        FT_RULE_DETECTED
        FT_RULE_PAYLOAD

    ft_dpi_ctx *ft_dpi_ctx_new(uint32_t budget, int32_t ext_max, int32_t rs_max)
    void ft_dpi_ctx_free(ft_dpi_ctx *c)
    void ft_dpi_rules_free(ft_rules *r)
    void ft_dpi_flow_init(ft_dpi_state *st, uint8_t l4, uint16_t cport, uint16_t sport)
    void ft_dpi_packet(ft_dpi_ctx *c, ft_dpi_state *st, const ft_dpi_flowinfo *fi, const uint8_t *p,
                       uint32_t len, int cut, int dir, uint32_t tcp_seq)
    void ft_dpi_finalize(ft_dpi_ctx *c, ft_dpi_state *st, const ft_dpi_flowinfo *fi)
    void ft_dpi_export(ft_dpi_ctx *c, ft_dpi_state *st, const ft_dpi_flowinfo *fi, ft_dpi_out *rec)
    void ft_dpi_flow_free(ft_dpi_ctx *c, ft_dpi_state *st)

    # QUIC Initial cryptography (ext/dpi/quic_crypto.h), exposed to the tests only
    struct ft_sha256:
        pass
    struct ft_aes128:
        pass
    void ft_sha256_init(ft_sha256 *s)
    void ft_sha256_update(ft_sha256 *s, const uint8_t *p, uint32_t n)
    void ft_sha256_final(ft_sha256 *s, uint8_t *out)
    void ft_hmac_sha256(const uint8_t *key, uint32_t klen, const uint8_t *msg, uint32_t mlen, uint8_t *out)
    void ft_hkdf_expand_label(const uint8_t *secret, const char *label, uint8_t *out, uint32_t length)
    void ft_aes128_setkey(ft_aes128 *a, const uint8_t *key)
    void ft_aes128_encrypt(const ft_aes128 *a, const uint8_t *inp, uint8_t *out)
    int ft_sha_portable
    int ft_aes_portable

cdef extern from "ft_flow.h" nogil:
    struct ft_key:
        uint8_t addr_a[16]
        uint8_t addr_b[16]
        uint16_t port_a
        uint16_t port_b
        uint8_t ip_version
        uint8_t proto
        uint16_t vlan_id
        uint32_t tunnel_id
        uint32_t qpn

    struct ft_flow:
        ft_key key
        uint64_t flow_id
        uint64_t first_ns
        uint64_t last_ns
        uint64_t rec_first_ns
        uint64_t rec_last_ns
        uint64_t touch_ns
        uint64_t pkts[2]
        uint64_t bytes[2]
        uint32_t trunc_pkts
        uint32_t frag_pkts
        uint32_t hash
        int32_t hnext
        int32_t lru_prev
        int32_t lru_next
        uint8_t lru_seg
        uint32_t rec_seq
        uint32_t tcp_isn
        uint16_t tcp_flags[2]
        uint8_t src_is_a
        uint8_t tcp_state
        uint8_t tos
        uint8_t tunnel_type
        uint8_t icmp_type
        uint8_t icmp_code
        uint8_t has_icmp
        uint16_t outer_vlan_id
        uint16_t iface
        ft_roce_meter *roce   # RoCE meter (issue 4): NULL for other flows
        ft_tcp_meter *tcp   # TCP meter (issue 3): NULL for other flows
        ft_dpi_state dpi            # DPI (issue 5)

    struct ft_flowrec:
        uint64_t flow_id
        uint64_t start_ns
        uint64_t end_ns
        uint64_t src_packets
        uint64_t dst_packets
        uint64_t src_bytes
        uint64_t dst_bytes
        uint8_t src_addr[16]
        uint8_t dst_addr[16]
        uint32_t rec_seq
        uint32_t tunnel_id
        uint32_t truncated_packets
        uint32_t fragment_packets
        uint16_t src_port
        uint16_t dst_port
        uint16_t vlan_id
        uint16_t outer_vlan_id
        uint16_t src_tcp_flags
        uint16_t dst_tcp_flags
        uint16_t iface
        uint8_t ip_version
        uint8_t proto
        uint8_t end_reason
        uint8_t tos
        uint8_t tunnel_type
        uint8_t icmp_type
        uint8_t icmp_code
        uint8_t has_icmp
        int32_t roce_row     # RoCE meter (issue 4): row in the side array, -1 for other flows
        int32_t tcp_row      # TCP meter (issue 3): row in the side array, -1 for other flows
        int32_t dpi_row      # DPI (issue 5): row in the side array, -1 when DPI is off

    struct ft_rec_field:
        const char *name
        size_t offset
        const char *fmt
    const ft_rec_field FT_FLOWREC_FIELDS[]
    const int FT_FLOWREC_NFIELDS
    const ft_rec_field FT_DPI_OUT_FIELDS[]
    const int FT_DPI_OUT_NFIELDS

    enum:
        FT_END_IDLE
        FT_END_ACTIVE
        FT_END_EOF
        FT_END_FORCED
        FT_END_RESOURCES
        FT_SEG_PROBATION
        FT_SEG_ESTABLISHED
        FT_TCPS_SYN
        FT_TCPS_SYNACK
        FT_TCPS_FIN_SRC
        FT_TCPS_FIN_DST
        FT_TCPS_RST

cdef extern from "ft_util.h" nogil:
    uint32_t ft_hash_words(const void *buf, size_t len)
    int ft_sha1_short(const uint8_t *msg, size_t len, uint8_t out[20])
    int ft_sha1_portable
    int ft_community_id(uint16_t seed, int ip_version, const uint8_t *saddr, const uint8_t *daddr,
                        uint8_t proto, uint16_t sport, uint16_t dport, char *out)
    int ft_addr_text(int ip_version, const uint8_t *addr, char *out)

# --- RoCE meter (issue 4): pairing side tables -----------------------------------------------------------
cdef extern from "ft_roce_pair.h" nogil:
    struct ft_roce_alias:
        uint32_t canon_qpn
        uint16_t canon_vlan
        uint32_t partner_qpn
        uint16_t partner_vlan
        uint8_t flags
        uint8_t cm_transport
    struct ft_roce_alias_tab:
        ft_roce_alias slot[1]
        uint32_t live
    struct ft_roce_cand_tab:
        pass
    struct ft_roce_cmreq:
        uint32_t qpn
        uint16_t vlan_id
        uint8_t transport
    struct ft_roce_cmreq_tab:
        ft_roce_cmreq slot[1]
    enum:
        FT_RA_CM
        FT_RA_ACTIVE_A
        FT_RA_FLIP
    int ft_roce_alias_find(const ft_roce_alias_tab *t, const ft_key *key, uint32_t h)
    int ft_roce_alias_put(ft_roce_alias_tab *t, const ft_key *key, uint32_t h, uint32_t canon_qpn,
                          uint16_t canon_vlan, uint32_t partner_qpn, uint16_t partner_vlan, uint8_t flags,
                          uint8_t cm_transport)
    int ft_roce_alias_del(ft_roce_alias_tab *t, const ft_key *key, uint32_t h)
    uint32_t ft_roce_pairkey_hash(const uint8_t *requester, const uint8_t *responder, const ft_key *key)
    int ft_roce_cand_put(ft_roce_cand_tab *t, const ft_flow *flows, int32_t nslots, uint32_t h, int32_t idx,
                         uint64_t flow_id)
    int32_t ft_roce_cand_find(const ft_roce_cand_tab *t, const ft_flow *flows, int32_t nslots,
                              const ft_key *key, int a_is_src, const ft_pkt *p)
    int ft_roce_cmreq_put(ft_roce_cmreq_tab *t, const uint8_t *active, const uint8_t *passive,
                          const ft_key *key, uint32_t comm_id, uint32_t qpn, uint8_t transport)
    int ft_roce_cmreq_take(ft_roce_cmreq_tab *t, const uint8_t *rep_src, const uint8_t *rep_dst,
                           const ft_key *key, uint32_t comm_id)

# --- end RoCE meter -----------------------------------------------------------------------------------------


def _dtype(rows, size_t itemsize, str prefix=""):
    """A numpy dtype from a C field table's (name, numpy format, offset) rows: the C struct is the contract,
    the table (ext/ft_flow.h, ft_roce.h, ft_tcp.h) names its fields."""
    return np.dtype({"names": [prefix + n.decode() for n, _f, _o in rows],
                     "formats": [f.decode() for _n, f, _o in rows],
                     "offsets": [o for _n, _f, o in rows], "itemsize": itemsize})


# the flow record, and its side records: TCP meter (issue 3; names prefixed tcp_), RoCE meter (issue 4; names
# already roce_*), DPI (issue 5; names already dpi_*)
FLOWREC_DTYPE = _dtype([(FT_FLOWREC_FIELDS[i].name, FT_FLOWREC_FIELDS[i].fmt, FT_FLOWREC_FIELDS[i].offset)
                        for i in range(FT_FLOWREC_NFIELDS)], sizeof(ft_flowrec))
TCP_OUT_DTYPE = _dtype([(FT_TCPOUT_FIELDS[i].name, FT_TCPOUT_FIELDS[i].fmt, FT_TCPOUT_FIELDS[i].offset)
                        for i in range(FT_TCPOUT_NFIELDS)], sizeof(ft_tcp_out), "tcp_")
ROCE_OUT_DTYPE = _dtype([(FT_ROCE_OUT_FIELDS[i].name, FT_ROCE_OUT_FIELDS[i].fmt, FT_ROCE_OUT_FIELDS[i].offset)
                         for i in range(FT_ROCE_OUT_NFIELDS)], sizeof(ft_roce_out))
DPI_OUT_DTYPE = _dtype([(FT_DPI_OUT_FIELDS[i].name, FT_DPI_OUT_FIELDS[i].fmt, FT_DPI_OUT_FIELDS[i].offset)
                        for i in range(FT_DPI_OUT_NFIELDS)], sizeof(ft_dpi_out))
FLOW_STATE_BYTES = sizeof(ft_flow)
ROCE_METER_BYTES = sizeof(ft_roce_meter)   # RoCE meter (issue 4): per RoCE flow, beside FLOW_STATE_BYTES
TCP_METER_BYTES = sizeof(ft_tcp_meter)   # TCP meter (issue 3): per TCP flow, beside FLOW_STATE_BYTES
cdef extern from "dpi/dpi_types.h":
    enum:
        FT_DPI_REASM_BYTES
DPI_REASM_BYTES = FT_DPI_REASM_BYTES   # issue 7: the reassembly limit per direction, for limits reporting
END_REASONS = {FT_END_IDLE: "idle timeout", FT_END_ACTIVE: "active timeout",
               FT_END_EOF: "end of flow detected", FT_END_FORCED: "forced end",
               FT_END_RESOURCES: "lack of resources"}

cdef extern from *:
    """
    #define ft_prefetch(p) __builtin_prefetch((const void *)(p))
    """
    void ft_prefetch(const void *p) noexcept nogil

cdef enum:
    ROCE_UDP_PORT = 4791   # RoCE meter (issue 4)
    PF = 8          # packets per prefetch block
    ROCE_CHUNK = 1024   # RoCE meters per pool chunk (2 MB), issue 4
    TCP_CHUNK = 1024    # TCP meters per pool chunk (1.2 MB), issue 3
    NONE = -1
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_ACK = 0x10


cdef inline bint tcp_closed(const ft_flow *f) noexcept nogil:
    return (f.tcp_state & FT_TCPS_RST) != 0 or \
        (f.tcp_state & (FT_TCPS_FIN_SRC | FT_TCPS_FIN_DST)) == (FT_TCPS_FIN_SRC | FT_TCPS_FIN_DST)


cdef inline uint8_t make_key(const ft_pkt *p, ft_key *key) noexcept nogil:
    """Fill the bidirectional key of a packet. Returns 0 when the packet is not metered, 1 when key
    endpoint A is the packet's source, 2 when it is its destination.

    A packet is metered when its addresses are known and, for TCP/UDP, its ports too (a header cut by the
    snap length leaves no flow to put it in); non-first fragments carry no ports by nature (ports 0)."""
    cdef bint has_ports
    cdef uint16_t sport, dport
    cdef int c
    if not (p.flags & FT_F_L3):
        return 0
    has_ports = (p.flags & FT_F_L4) != 0 and (p.proto == 6 or p.proto == 17)
    if (p.proto == 6 or p.proto == 17) and not has_ports and not (p.flags & FT_F_FRAG):
        return 0
    sport = p.sport if has_ports else 0
    dport = p.dport if has_ports else 0
    # RoCE meter (issue 4): a RoCEv2 packet is keyed on its addresses and the QP it addresses (tagged with
    # the key endpoint that hosts it); the UDP source port is per-sender entropy and is left out
    cdef bint roce = has_ports and (p.flags & FT_F_ROCE) != 0 and p.proto == 17 and dport == ROCE_UDP_PORT
    if roce:
        sport = 0
        dport = 0
    memset(key, 0, sizeof(ft_key))
    c = memcmp(p.src_addr, p.dst_addr, 16)
    key.ip_version = p.ip_version
    key.proto = p.proto
    key.vlan_id = p.vlan_id
    key.tunnel_id = p.tunnel_id
    if c < 0 or (c == 0 and sport <= dport):
        memcpy(key.addr_a, p.src_addr, 16)
        memcpy(key.addr_b, p.dst_addr, 16)
        key.port_a = sport
        key.port_b = dport
        if roce:
            key.qpn = (p.roce_dqpn & FT_ROCE_PSN_MASK) | FT_ROCE_KEY_TAG | FT_ROCE_KEY_AT_B
        return 1
    memcpy(key.addr_a, p.dst_addr, 16)
    memcpy(key.addr_b, p.src_addr, 16)
    key.port_a = dport
    key.port_b = sport
    if roce:
        key.qpn = (p.roce_dqpn & FT_ROCE_PSN_MASK) | FT_ROCE_KEY_TAG
    return 2


cdef class FlowTable:
    """Bounded bidirectional flow table on packet time.

    FlowTable(max_flows, idle_timeout_ns, active_timeout_ns, closed_timeout_ns, batch_rows)

    add(records, start) meters records[start:] until the output holds batch_rows flow records and returns
    the index reached; take() hands the exported records over as a numpy array of FLOWREC_DTYPE; flush()
    exports every flow still open (end of input).
    """
    cdef ft_flow *flows
    cdef int32_t *buckets
    cdef uint32_t nbuckets
    cdef uint32_t max_buckets
    cdef int32_t nslots          # slots allocated in flows (grows by doubling up to capacity)
    cdef int32_t high_water      # slots ever used
    cdef int32_t free_head
    # Two recency lists, indexed by FT_SEG_*: flows on probation (not yet promoted, see ft_flow.h) and
    # established flows. Each is ordered by touch_ns, head = least recently seen; idle expiry merges them.
    cdef int32_t seg_head[2]
    cdef int32_t seg_tail[2]
    cdef int32_t seg_count[2]
    cdef readonly int32_t probation_reserve   # a full table evicts from probation while it holds this many
    cdef readonly int32_t capacity
    cdef readonly int32_t active
    cdef readonly uint64_t idle_ns, active_ns, closed_ns
    cdef readonly uint64_t touch_step_ns
    cdef readonly uint64_t now_ns
    cdef uint64_t next_flow_id
    cdef ft_flowrec *out
    # RoCE meter (issue 4): meter pool in chunks (pointers stay valid as it grows) and side records
    cdef ft_roce_meter **roce_chunks
    cdef int32_t roce_nchunks, roce_chunk_cap, roce_chunk_used
    cdef void *roce_free
    cdef ft_roce_out *rout
    cdef int32_t rout_n
    cdef readonly object taken_roce
    # TCP meter (issue 3): the same for TCP meters: pool in chunks, free list, side records
    cdef ft_tcp_meter **tcp_chunks
    cdef int32_t tcp_nchunks, tcp_chunk_cap, tcp_chunk_used
    cdef void *tcp_free
    cdef ft_tcp_out *tout
    cdef int32_t tout_n
    cdef readonly object taken_tcp
    cdef readonly bint tcp_meter
    # DPI (issue 5): side records, one per record while DPI is on
    cdef ft_dpi_out *dout
    cdef int32_t dout_n
    cdef readonly object taken_dpi
    cdef readonly int32_t out_n
    cdef int32_t out_cap
    cdef readonly int32_t batch_rows
    # counters (reach the Arrow metadata and the CLI summary)
    cdef readonly uint64_t packets_seen, packets_metered, bytes_metered
    cdef readonly uint64_t flows_created, flows_evicted, records_exported
    cdef readonly uint64_t flows_evicted_established, flows_promoted
    cdef readonly uint64_t packets_ts_backwards, port_reuse_splits
    cdef uint64_t reasons[64]
    cdef uint64_t not_metered_reasons[64]
    cdef uint64_t end_counts[8]
    # RoCE meter (issue 4): pairing side tables (ext/ft_roce_pair.h), the batch's frame bytes (for RDMA CM
    # MADs), and counters that reach the Arrow metadata
    cdef ft_roce_alias_tab *roce_alias
    cdef ft_roce_cand_tab *roce_cand
    cdef ft_roce_cmreq_tab *roce_cmreq
    cdef const uint8_t *cur_data
    cdef size_t cur_data_len
    cdef readonly uint64_t roce_pairs_psn, roce_pairs_cm, roce_pair_ambiguous, roce_alias_full
    cdef readonly uint64_t roce_waiting_full, roce_cm_req_lost, roce_cm_rep_unmatched, roce_qpn_reuse_splits
    # ---- DPI (issue 5) ----
    cdef ft_dpi_ctx *dpi            # NULL when DPI is off (dpi_budget=0)
    cdef const uint8_t *data        # the batch's data buffer while add() runs (payload bytes), else NULL
    cdef Py_ssize_t data_len
    cdef readonly object dpi_rules  # what set_rules() installed (names, for the Python side)
    # Live capture (probe/live.py): keys of flows whose DPI is done but whose packets still carry payload,
    # so that the kernel can be told to stop sending snippets for them. NULL unless track_dpi_done() was called.
    cdef ft_key *dpi_done_keys
    cdef int32_t dpi_done_n, dpi_done_cap
    cdef readonly uint64_t dpi_done_dropped   # keys not kept because the list was full (sent again later)

    def __cinit__(self, int max_flows=1000000, uint64_t idle_timeout_ns=120_000_000_000,
                  uint64_t active_timeout_ns=1_800_000_000_000, uint64_t closed_timeout_ns=10_000_000_000,
                  int batch_rows=65536, int dpi_budget=16, int dpi_reasm_max=4096, bint tcp_meter=True):
        if max_flows < 1 or max_flows > (1 << 30):
            raise ValueError(f"max_flows must be between 1 and {1 << 30}, not {max_flows}")
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        if idle_timeout_ns == 0 or active_timeout_ns == 0:
            raise ValueError("timeouts must be positive")
        self.capacity = max_flows
        self.idle_ns = idle_timeout_ns
        self.active_ns = active_timeout_ns
        self.closed_ns = min(closed_timeout_ns, idle_timeout_ns)
        self.touch_step_ns = self.closed_ns // 64
        self.batch_rows = batch_rows
        # The bucket array starts small (fits in cache) and doubles with the number of flows, up to one
        # bucket per flow of capacity; a table sized for capacity up front made every lookup a cache miss.
        cdef uint32_t nb = 1024
        self.max_buckets = 1024
        while self.max_buckets < <uint32_t> max_flows and self.max_buckets < (1u << 30):
            self.max_buckets <<= 1
        self.nbuckets = nb
        self.buckets = <int32_t *> malloc(nb * sizeof(int32_t))
        self.nslots = min(max_flows, 4096)
        self.flows = <ft_flow *> malloc(self.nslots * sizeof(ft_flow))
        # each packet can export at most 3 records (active timeout, port reuse, eviction) beyond the idle
        # expiries, which stop at batch_rows; the margin keeps add() from ever overrunning.
        self.out_cap = batch_rows + 8
        self.out = <ft_flowrec *> malloc(self.out_cap * sizeof(ft_flowrec))
        self.rout = <ft_roce_out *> malloc(self.out_cap * sizeof(ft_roce_out))  # touched only by RoCE records
        self.taken_roce = np.empty(0, dtype=ROCE_OUT_DTYPE)
        # TCP meter (issue 3): off only to measure what it costs (bench/README.md); then TCP flows have no
        # meter state and their records no TCP part, as if they were UDP
        self.tcp_meter = tcp_meter
        self.tout = <ft_tcp_out *> malloc(self.out_cap * sizeof(ft_tcp_out))
        self.dout = <ft_dpi_out *> malloc(self.out_cap * sizeof(ft_dpi_out))   # DPI (issue 5): touched when on
        self.taken_dpi = np.empty(0, dtype=DPI_OUT_DTYPE)
        self.taken_tcp = np.empty(0, dtype=TCP_OUT_DTYPE)
        # RoCE meter (issue 4): 334 KiB of pairing tables, zeroed (calloc'd pages cost nothing until used)
        self.roce_alias = <ft_roce_alias_tab *> calloc(1, sizeof(ft_roce_alias_tab))
        self.roce_cand = <ft_roce_cand_tab *> calloc(1, sizeof(ft_roce_cand_tab))
        self.roce_cmreq = <ft_roce_cmreq_tab *> calloc(1, sizeof(ft_roce_cmreq_tab))
        if self.buckets == NULL or self.flows == NULL or self.out == NULL or self.rout == NULL or self.tout == NULL or \
                self.dout == NULL or \
                self.roce_alias == NULL or \
                self.roce_cand == NULL or self.roce_cmreq == NULL:
            raise MemoryError()
        memset(self.buckets, 0xff, nb * sizeof(int32_t))
        self.high_water = 0
        self.free_head = NONE
        self.seg_head[0] = NONE
        self.seg_head[1] = NONE
        self.seg_tail[0] = NONE
        self.seg_tail[1] = NONE
        self.seg_count[0] = 0
        self.seg_count[1] = 0
        # An eighth of the table stays open to new flows under a flood: a legitimate connection then has
        # capacity/8 new flows' time to complete its handshake before the flood pushes it out.
        self.probation_reserve = max(1, max_flows // 8)
        self.active = 0
        self.now_ns = 0
        self.next_flow_id = 1
        self.out_n = 0
        memset(self.reasons, 0, sizeof(self.reasons))
        memset(self.not_metered_reasons, 0, sizeof(self.not_metered_reasons))
        memset(self.end_counts, 0, sizeof(self.end_counts))
        # ---- DPI (issue 5) ----
        self.data = NULL
        self.data_len = 0
        self.dpi = NULL
        self.dpi_rules = None
        if dpi_budget < 0 or dpi_budget > 255:
            raise ValueError(f"dpi_budget must be between 0 (off) and 255 packets, not {dpi_budget}")
        if dpi_reasm_max < 0:
            raise ValueError("dpi_reasm_max must not be negative")
        if dpi_budget > 0:
            self.dpi = ft_dpi_ctx_new(dpi_budget, max_flows, dpi_reasm_max)
            if self.dpi == NULL:
                raise MemoryError()

    def __dealloc__(self):
        free(self.flows)
        free(self.buckets)
        free(self.out)
        free(self.rout)
        for i in range(self.roce_nchunks):
            free(self.roce_chunks[i])
        free(self.roce_chunks)
        free(self.tout)   # TCP meter (issue 3)
        free(self.dout)   # DPI (issue 5)
        for i in range(self.tcp_nchunks):
            free(self.tcp_chunks[i])
        free(self.tcp_chunks)
        free(self.roce_alias)   # RoCE meter (issue 4)
        free(self.roce_cand)
        free(self.roce_cmreq)
        ft_dpi_ctx_free(self.dpi)  # DPI (issue 5)
        free(self.dpi_done_keys)   # live capture

    # ---- recency lists --------------------------------------------------------------------------------
    cdef inline void lru_unlink(self, int32_t i) noexcept nogil:
        """Take flow i out of the recency list of its segment (f.lru_seg)."""
        cdef ft_flow *f = &self.flows[i]
        cdef int s = f.lru_seg
        if f.lru_prev != NONE:
            self.flows[f.lru_prev].lru_next = f.lru_next
        else:
            self.seg_head[s] = f.lru_next
        if f.lru_next != NONE:
            self.flows[f.lru_next].lru_prev = f.lru_prev
        else:
            self.seg_tail[s] = f.lru_prev
        f.lru_prev = NONE
        f.lru_next = NONE
        self.seg_count[s] -= 1

    cdef inline void lru_append(self, int32_t i) noexcept nogil:
        """Append flow i at the tail (most recent end) of the recency list of its segment (f.lru_seg)."""
        cdef ft_flow *f = &self.flows[i]
        cdef int s = f.lru_seg
        f.lru_prev = self.seg_tail[s]
        f.lru_next = NONE
        if self.seg_tail[s] != NONE:
            self.flows[self.seg_tail[s]].lru_next = i
        else:
            self.seg_head[s] = i
        self.seg_tail[s] = i
        self.seg_count[s] += 1

    cdef inline int32_t lru_oldest(self) noexcept nogil:
        """The least recently seen flow of the whole table (the older of the two list heads by touch_ns,
        probation on a tie), or NONE when the table is empty. Both lists are ordered by touch_ns, so taking
        heads in this order walks the flows in the order one list would hold them."""
        cdef int32_t p = self.seg_head[FT_SEG_PROBATION]
        cdef int32_t e = self.seg_head[FT_SEG_ESTABLISHED]
        if p == NONE:
            return e
        if e == NONE or self.flows[p].touch_ns <= self.flows[e].touch_ns:
            return p
        return e

    cdef inline int32_t evict_victim(self) noexcept nogil:
        """The flow a full table gives up for a new one: the least recent flow on probation while probation
        holds at least probation_reserve flows (or nothing is established), else the least recent
        established flow. One-packet flows (a SYN flood, a scan) thus replace each other and leave
        established flows alone; with too few on probation, an idle established flow goes before a busy
        one. O(1): two list heads."""
        if self.seg_count[FT_SEG_PROBATION] > 0 and (
                self.seg_count[FT_SEG_PROBATION] >= self.probation_reserve
                or self.seg_head[FT_SEG_ESTABLISHED] == NONE):
            return self.seg_head[FT_SEG_PROBATION]
        return self.seg_head[FT_SEG_ESTABLISHED]

    # ---- slots ----------------------------------------------------------------------------------------
    cdef int32_t slot_alloc(self) noexcept nogil:
        """A free slot index, or NONE when the slab cannot grow (out of memory)."""
        cdef int32_t i
        cdef int32_t n
        cdef ft_flow *grown
        if self.free_head != NONE:
            i = self.free_head
            self.free_head = self.flows[i].hnext
            return i
        if self.high_water == self.nslots:
            n = self.nslots * 2
            if n > self.capacity:
                n = self.capacity
            grown = <ft_flow *> realloc(self.flows, <size_t> n * sizeof(ft_flow))
            if grown == NULL:
                return NONE
            self.flows = grown
            self.nslots = n
        i = self.high_water
        self.high_water += 1
        return i

    cdef void remove(self, int32_t i) noexcept nogil:
        """Unlink flow i from its hash chain and the recency list and free its slot."""
        cdef ft_flow *f = &self.flows[i]
        cdef uint32_t b = f.hash & (self.nbuckets - 1)
        cdef int32_t j = self.buckets[b]
        if j == i:
            self.buckets[b] = f.hnext
        else:
            while j != NONE:
                if self.flows[j].hnext == i:
                    self.flows[j].hnext = f.hnext
                    break
                j = self.flows[j].hnext
        self.lru_unlink(i)
        if f.key.qpn != 0 and f.roce.pairing != FT_ROCE_PAIR_NONE:
            self.roce_unpair(f)   # RoCE meter (issue 4): its alias entries go with it
        if f.roce != NULL:
            self.roce_release(f.roce)
            f.roce = NULL
        if f.tcp != NULL:   # TCP meter (issue 3)
            self.tcp_release(f.tcp)
            f.tcp = NULL
        if self.dpi != NULL:  # DPI (issue 5): return the flow's field and reassembly slots
            ft_dpi_flow_free(self.dpi, &f.dpi)
        f.flow_id = 0  # marks the slot free for rehash()
        f.hnext = self.free_head
        self.free_head = i
        self.active -= 1

    cdef void rehash(self) noexcept nogil:
        """Double the bucket array (when flows outnumber buckets) and re-chain every flow. Keeps the old
        array when memory runs out: chains just get longer."""
        cdef uint32_t nb = self.nbuckets * 2
        cdef int32_t *grown = <int32_t *> realloc(self.buckets, nb * sizeof(int32_t))
        cdef int32_t i
        cdef uint32_t b
        if grown == NULL:
            return
        self.buckets = grown
        self.nbuckets = nb
        memset(self.buckets, 0xff, nb * sizeof(int32_t))
        for i in range(self.high_water):
            if self.flows[i].flow_id != 0:
                b = self.flows[i].hash & (nb - 1)
                self.flows[i].hnext = self.buckets[b]
                self.buckets[b] = i

    # ---- export ---------------------------------------------------------------------------------------
    cdef void export(self, int32_t i, uint8_t reason) noexcept nogil:
        """Append the current period of flow i to the output as a record oriented src = initiator."""
        cdef ft_flow *f = &self.flows[i]
        cdef ft_flowrec *r = &self.out[self.out_n]
        self.out_n += 1
        memset(r, 0, sizeof(ft_flowrec))
        r.flow_id = f.flow_id
        r.start_ns = f.rec_first_ns
        r.end_ns = f.rec_last_ns
        r.src_packets = f.pkts[0]
        r.dst_packets = f.pkts[1]
        r.src_bytes = f.bytes[0]
        r.dst_bytes = f.bytes[1]
        if f.src_is_a:
            memcpy(r.src_addr, f.key.addr_a, 16)
            memcpy(r.dst_addr, f.key.addr_b, 16)
            r.src_port = f.key.port_a
            r.dst_port = f.key.port_b
        else:
            memcpy(r.src_addr, f.key.addr_b, 16)
            memcpy(r.dst_addr, f.key.addr_a, 16)
            r.src_port = f.key.port_b
            r.dst_port = f.key.port_a
        r.rec_seq = f.rec_seq
        r.tunnel_id = f.key.tunnel_id
        r.truncated_packets = f.trunc_pkts
        r.fragment_packets = f.frag_pkts
        r.vlan_id = f.key.vlan_id
        r.outer_vlan_id = f.outer_vlan_id
        r.src_tcp_flags = f.tcp_flags[0]
        r.dst_tcp_flags = f.tcp_flags[1]
        r.iface = f.iface
        r.ip_version = f.key.ip_version
        r.proto = f.key.proto
        r.end_reason = reason
        r.tos = f.tos
        r.tunnel_type = f.tunnel_type
        r.icmp_type = f.icmp_type
        r.icmp_code = f.icmp_code
        r.has_icmp = f.has_icmp
        r.roce_row = -1
        if f.key.qpn != 0:
            self.roce_export(f, r)   # RoCE meter (issue 4)
        r.tcp_row = -1
        if f.tcp != NULL:   # TCP meter (issue 3); a record that is not the flow's last keeps open holes
            r.tcp_row = self.tout_n
            ft_tcp_export(f.tcp, &self.tout[self.tout_n], reason != FT_END_ACTIVE)
            self.tout_n += 1
        # ---- DPI (issue 5): the verdict and fields (finalized here when the flow ends before DPI is done)
        cdef ft_dpi_flowinfo fi
        r.dpi_row = -1
        if self.dpi != NULL:
            self.dpi_flowinfo(f, &fi)
            r.dpi_row = self.dout_n
            ft_dpi_export(self.dpi, &f.dpi, &fi, &self.dout[self.dout_n])
            self.dout_n += 1
        self.records_exported += 1
        self.end_counts[reason] += 1

    cdef inline void period_reset(self, ft_flow *f, uint64_t ts) noexcept nogil:
        f.pkts[0] = 0
        f.pkts[1] = 0
        f.bytes[0] = 0
        f.bytes[1] = 0
        f.trunc_pkts = 0
        f.frag_pkts = 0
        f.tcp_flags[0] = 0
        f.tcp_flags[1] = 0
        f.rec_first_ns = ts
        f.rec_last_ns = ts
        if f.key.qpn != 0:
            ft_roce_period_reset(f.roce)   # RoCE meter (issue 4)
        if f.tcp != NULL:
            ft_tcp_period_reset(f.tcp)   # TCP meter (issue 3)

    cdef void expire_idle(self) noexcept nogil:
        """Export flows idle for longer than their timeout, least recently seen first, until the output is
        full. The recency list is ordered by touch_ns, and last_ns - touch_ns < touch_step_ns, so a flow
        leaves at most touch_step_ns (1/64 of the shortest timeout) after its timeout, never before; with
        merged captures whose timestamps go back, it may leave later still. A closed TCP flow (shorter
        timeout) waits behind the least recently seen open flow."""
        cdef ft_flow *f
        cdef uint64_t timeout, since
        cdef int32_t i
        cdef bint closed
        while self.out_n < self.batch_rows:
            i = self.lru_oldest()
            if i == NONE:
                return
            f = &self.flows[i]
            closed = f.key.proto == 6 and tcp_closed(f)
            timeout = self.closed_ns if closed else self.idle_ns
            # idle since its last packet, in table time: a flow whose packets went back in time (merged
            # captures) counts from its last move in the recency list instead, so it cannot leave at once
            since = f.last_ns if f.last_ns > f.touch_ns else f.touch_ns
            if self.now_ns <= since or self.now_ns - since <= timeout:
                return
            self.export(i, FT_END_EOF if closed else FT_END_IDLE)
            self.remove(i)

    cdef int32_t create(self, const ft_key *key, uint32_t h, bint pkt_src_is_a, const ft_pkt *p) noexcept nogil:
        """Insert a new flow for key, on probation; when the table is full, evicts the flow evict_victim()
        names. Returns its index, or NONE when no memory could be had (the packet is then counted, not
        metered)."""
        cdef int32_t i
        cdef ft_flow *f
        cdef uint32_t b
        if self.active >= self.capacity:
            i = self.evict_victim()
            if self.flows[i].lru_seg == FT_SEG_ESTABLISHED:
                self.flows_evicted_established += 1
            self.export(i, FT_END_RESOURCES)
            self.remove(i)
            self.flows_evicted += 1
        if <uint32_t> self.active >= self.nbuckets and self.nbuckets < self.max_buckets:
            self.rehash()
        cdef ft_roce_meter *rm = NULL
        cdef ft_tcp_meter *tm = NULL
        if key.qpn != 0:   # RoCE meter (issue 4): initialised by roce_created()
            rm = self.roce_alloc()
            if rm == NULL:
                return NONE
        if key.proto == 6 and self.tcp_meter:   # TCP meter (issue 3)
            tm = self.tcp_alloc()
            if tm == NULL:
                if rm != NULL:
                    self.roce_release(rm)
                return NONE
        i = self.slot_alloc()
        if i == NONE:
            if rm != NULL:
                self.roce_release(rm)
            if tm != NULL:
                self.tcp_release(tm)
            return NONE
        f = &self.flows[i]
        memset(f, 0, sizeof(ft_flow))
        f.roce = rm
        f.tcp = tm
        memcpy(&f.key, key, sizeof(ft_key))
        f.hash = h
        b = h & (self.nbuckets - 1)
        f.hnext = self.buckets[b]
        self.buckets[b] = i
        f.lru_prev = NONE
        f.lru_next = NONE
        f.lru_seg = FT_SEG_PROBATION
        self.lru_append(i)
        self.active += 1
        f.flow_id = self.next_flow_id
        self.next_flow_id += 1
        self.flows_created += 1
        # The initiator becomes src: the sender of a SYN, the receiver of a SYN/ACK, else the first sender.
        if p.proto == 6 and (p.flags & FT_F_L4) and (p.tcp_flags & TCP_SYN) and (p.tcp_flags & TCP_ACK):
            f.src_is_a = not pkt_src_is_a
        else:
            f.src_is_a = pkt_src_is_a
        f.first_ns = p.ts_ns
        f.last_ns = p.ts_ns
        f.touch_ns = self.now_ns   # table time, not packet time: see ft_flow.h
        f.rec_first_ns = p.ts_ns
        f.rec_last_ns = p.ts_ns
        f.tunnel_type = p.tunnel_type
        f.outer_vlan_id = p.outer_vlan_id
        f.iface = p.iface
        f.tos = p.tos
        if tm != NULL:
            ft_tcp_init(tm)   # TCP meter (issue 3): zeroes what needs it, not the whole 1.2 KB
        # ---- DPI (issue 5): candidates from the L4 protocol and the (initiator, responder) ports
        if key.qpn != 0:   # RoCE keys leave the UDP ports out (issue 4): the packet's ports gate DPI
            ft_dpi_flow_init(&f.dpi, key.proto, p.sport if f.src_is_a == pkt_src_is_a else p.dport,
                             p.dport if f.src_is_a == pkt_src_is_a else p.sport)
        else:
            ft_dpi_flow_init(&f.dpi, key.proto, key.port_a if f.src_is_a else key.port_b,
                             key.port_b if f.src_is_a else key.port_a)
        if self.dpi == NULL:
            f.dpi.flags = FT_DPI_S_DONE | FT_DPI_S_FINAL
        return i

    cdef int add_c(self, const ft_pkt *pkts, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
        """Meter pkts[start:n] until the output holds batch_rows records; returns how many were metered.

        Packets go in blocks of PF: keys and hashes first, with prefetches of their hash buckets, then of
        the flow entries those buckets point to, then the metering itself. With tens of thousands of flows
        the table does not fit in cache, and this turns three dependent misses per packet into overlapped
        ones (measured: bench/README.md)."""
        cdef Py_ssize_t k = start
        cdef Py_ssize_t j, m
        cdef ft_key keys[PF]
        cdef uint32_t hs[PF]
        cdef uint8_t state[PF]   # 0 not metered, 1 key endpoint A is the packet's source, 2 it is dest
        cdef int32_t i
        while k < n:
            m = n - k
            if m > PF:
                m = PF
            for j in range(m):
                state[j] = make_key(&pkts[k + j], &keys[j])
                if state[j]:
                    hs[j] = ft_hash_words(&keys[j], sizeof(ft_key))
                    ft_prefetch(&self.buckets[hs[j] & (self.nbuckets - 1)])
            for j in range(m):
                if state[j]:
                    i = self.buckets[hs[j] & (self.nbuckets - 1)]
                    if i != NONE:
                        ft_prefetch(&self.flows[i])
                    # DPI (issue 5): the payload's first line, which the dissectors read first (a cache
                    # miss that took a quarter of the registry's time); harmless when DPI is done
                    if self.data != NULL and pkts[k + j].payload_cap and \
                            pkts[k + j].frame_off + pkts[k + j].payload_off < <uint64_t> self.data_len:
                        ft_prefetch(self.data + pkts[k + j].frame_off + pkts[k + j].payload_off)
            for j in range(m):
                if self.out_n >= self.batch_rows:
                    return <int> (k + j - start)
                self.meter(&pkts[k + j], &keys[j], hs[j], state[j])
            k += m
        return <int> (k - start)

    cdef void meter(self, const ft_pkt *p, const ft_key *key, uint32_t h, uint8_t state) noexcept nogil:
        cdef int32_t i
        cdef ft_flow *f
        cdef int d
        cdef bint a_first = state == 1
        cdef int32_t aslot = -1   # RoCE meter (issue 4): alias entry that re-keyed the packet
        cdef ft_key canon
        self.packets_seen += 1
        self.reasons[p.reason & 63] += 1
        if p.ts_ns > self.now_ns:
            self.now_ns = p.ts_ns
        elif p.ts_ns + 1000000000 < self.now_ns:
            self.packets_ts_backwards += 1
        if self.active > 0:
            self.expire_idle()
        if state == 0:
            self.not_metered_reasons[p.reason & 63] += 1
            return
        i = self.buckets[h & (self.nbuckets - 1)]
        while i != NONE:
            if self.flows[i].hash == h and memcmp(&self.flows[i].key, key, sizeof(ft_key)) == 0:
                break
            i = self.flows[i].hnext
        if i == NONE and key.qpn != 0 and self.roce_alias.live:
            # RoCE meter (issue 4): no flow under the packet's own key: it may be addressed to the alias QP
            # of a paired flow (or to a QP that RDMA CM paired before its first packet). Looked up only on a
            # miss: a key with an alias never has a flow of its own, and the canonical direction pays nothing.
            memcpy(&canon, key, sizeof(ft_key))
            h = self.roce_resolve(&canon, h, &state, &aslot)
            if aslot >= 0:
                key = &canon
                a_first = state == 1
                i = self.lookup(key, h)
        if i != NONE:
            f = &self.flows[i]
            if f.tcp != NULL:   # TCP meter (issue 3): its first line, while the flow's own fields are updated
                ft_prefetch(f.tcp)
            # A new SYN on a finished connection (or with another ISN) is a new connection reusing the
            # 4-tuple: close the old record first, as tshark starts a new TCP stream.
            if p.proto == 6 and (p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN:
                if tcp_closed(f) or ((f.tcp_state & FT_TCPS_SYN) and p.tcp_seq != f.tcp_isn
                                     and (f.pkts[0] + f.pkts[1] > 0)):
                    self.export(i, FT_END_EOF)
                    self.remove(i)
                    self.port_reuse_splits += 1
                    i = NONE
        if i == NONE:
            i = self.create(key, h, a_first, p)
            if i == NONE:
                self.not_metered_reasons[p.reason & 63] += 1
                return
            f = &self.flows[i]
            if key.qpn != 0:
                self.roce_created(f, p, a_first, aslot)   # RoCE meter (issue 4)
        else:
            if p.ts_ns >= f.rec_first_ns + self.active_ns and (f.pkts[0] + f.pkts[1]) > 0:
                # active timeout: a long flow leaves one record per period, same flow_id
                self.export(i, FT_END_ACTIVE)
                f.rec_seq += 1
                self.period_reset(f, p.ts_ns)
            if f.lru_seg == FT_SEG_PROBATION and not (
                    p.proto == 6 and (p.flags & FT_F_L4) and (p.tcp_flags & (TCP_SYN | TCP_RST))):
                # promotion (ft_flow.h): a second packet that is no SYN or RST, so a SYN flood answered by
                # SYN/ACKs or RSTs stays on probation
                self.lru_unlink(i)
                f.lru_seg = FT_SEG_ESTABLISHED
                self.lru_append(i)
                f.touch_ns = self.now_ns
                self.flows_promoted += 1
            # Move to the tail of the recency list at most once per touch_step_ns: each move costs two
            # cache misses on the neighbours, and a busy flow would pay them at every packet.
            elif self.now_ns >= f.touch_ns + self.touch_step_ns and self.seg_tail[f.lru_seg] != i:
                self.lru_unlink(i)
                self.lru_append(i)
                f.touch_ns = self.now_ns
        if key.qpn != 0:
            # RoCE meter (issue 4): orientation, waiting for a partner, pairing (may merge into another flow)
            i = self.roce_prepare(i, p, key, &a_first)
            f = &self.flows[i]
        d = 0 if (a_first == (f.src_is_a != 0)) else 1
        f.pkts[d] += 1
        f.bytes[d] += p.l3_len
        self.packets_metered += 1
        self.bytes_metered += p.l3_len
        if p.ts_ns > f.last_ns:
            f.last_ns = p.ts_ns
        if p.ts_ns > f.rec_last_ns:
            f.rec_last_ns = p.ts_ns
        if p.ts_ns < f.rec_first_ns:
            f.rec_first_ns = p.ts_ns
        if p.flags & FT_F_TRUNC:
            f.trunc_pkts += 1
        if p.flags & FT_F_FRAG:
            f.frag_pkts += 1
        if p.proto == 6 and (p.flags & FT_F_L4):
            f.tcp_flags[d] |= p.tcp_flags
            if p.tcp_flags & TCP_SYN:
                if p.tcp_flags & TCP_ACK:
                    f.tcp_state |= FT_TCPS_SYNACK
                elif d == 0:
                    f.tcp_state |= FT_TCPS_SYN
                    f.tcp_isn = p.tcp_seq
            if p.tcp_flags & TCP_FIN:
                f.tcp_state |= FT_TCPS_FIN_SRC if d == 0 else FT_TCPS_FIN_DST
            if p.tcp_flags & TCP_RST:
                f.tcp_state |= FT_TCPS_RST
            if f.tcp != NULL:
                ft_tcp_update(f.tcp, p, d)   # TCP meter (issue 3)
        elif (p.proto == 1 or p.proto == 58) and (p.flags & FT_F_L4) and not f.has_icmp and d == 0:
            f.has_icmp = 1
            f.icmp_type = p.icmp_type
            f.icmp_code = p.icmp_code
        # ---- DPI (issue 5): the first payload packets, up to the budget ----
        if not (f.dpi.flags & FT_DPI_S_DONE) and p.payload_cap > 0 and self.data != NULL:
            self.dpi_packet(f, p, d)
        # Live capture: payload that DPI will not read any more (done, here or earlier) means the kernel does
        # not know yet; note the key once per such packet (duplicates until the kernel's mark takes effect;
        # RoCE keys are left out: the RoCE meter reads RDMA CM payload, and the kernel keys them by port).
        if self.dpi_done_keys != NULL and p.payload_cap > 0 and (f.dpi.flags & FT_DPI_S_DONE) and f.key.qpn == 0:
            if self.dpi_done_n < self.dpi_done_cap:
                memcpy(&self.dpi_done_keys[self.dpi_done_n], &f.key, sizeof(ft_key))
                self.dpi_done_n += 1
            else:
                self.dpi_done_dropped += 1
        if key.qpn != 0:   # last: RDMA CM handling may end flows, this one included
            ft_roce_update(f.roce, d, p)   # RoCE meter (issue 4)
            if p.roce_dqpn == 1 and self.cur_data != NULL:
                self.roce_cm(p, key, a_first)

    # ---- RoCE meter (issue 4): pairing the two directions of a connection (docs/roce.md) ---------------
    cdef inline uint32_t roce_resolve(self, ft_key *key, uint32_t h, uint8_t *state,
                                      int32_t *aslot) noexcept nogil:
        """Re-keys a RoCE packet whose QP is the alias of a paired flow: key.qpn (and .vlan_id) become the
        canonical flow's; on one address the packet's direction flips (FT_RA_FLIP). Returns the key's hash
        (recomputed when the key changed); sets *aslot to the entry used, or leaves it when there is none."""
        cdef int s = ft_roce_alias_find(self.roce_alias, key, h)
        cdef ft_roce_alias *a
        if s < 0:
            return h
        aslot[0] = s
        a = &self.roce_alias.slot[s]
        if a.flags & FT_RA_FLIP:
            state[0] = 3 - state[0]
        if a.canon_qpn == key.qpn and a.canon_vlan == key.vlan_id:
            return h
        key.qpn = a.canon_qpn
        key.vlan_id = a.canon_vlan
        return ft_hash_words(key, sizeof(ft_key))

    cdef int32_t lookup(self, const ft_key *key, uint32_t h) noexcept nogil:
        """The slot of the flow with this key, or NONE."""
        cdef int32_t i = self.buckets[h & (self.nbuckets - 1)]
        while i != NONE:
            if self.flows[i].hash == h and memcmp(&self.flows[i].key, key, sizeof(ft_key)) == 0:
                return i
            i = self.flows[i].hnext
        return NONE

    cdef void roce_created(self, ft_flow *f, const ft_pkt *p, bint a_first, int32_t aslot) noexcept nogil:
        """A new RoCE flow: src is the requester (the sender of a request, the receiver of a response or
        CNP), or the active side of a connection RDMA CM set up."""
        cdef ft_roce_alias *a
        ft_roce_init(f.roce)
        if aslot >= 0:
            a = &self.roce_alias.slot[aslot]
            if a.flags & FT_RA_CM:
                f.src_is_a = 1 if (a.flags & FT_RA_ACTIVE_A) else 0
                f.roce.pairing = FT_ROCE_PAIR_CM
                f.roce.partner_qpn = a.partner_qpn
                f.roce.partner_vlan = a.partner_vlan
                f.roce.cm_transport = a.cm_transport
                return
        f.src_is_a = a_first if ft_roce_pkt_role(p) == FT_ROCE_ROLE_RESPONDER else not a_first

    cdef void roce_flip_src(self, ft_flow *f) noexcept nogil:
        """The flow's src turns out to be the other endpoint (it began with CNPs): swap the directions."""
        cdef uint64_t t
        cdef uint16_t t16
        f.src_is_a = not f.src_is_a
        t = f.pkts[0]
        f.pkts[0] = f.pkts[1]
        f.pkts[1] = t
        t = f.bytes[0]
        f.bytes[0] = f.bytes[1]
        f.bytes[1] = t
        t16 = f.tcp_flags[0]
        f.tcp_flags[0] = f.tcp_flags[1]
        f.tcp_flags[1] = t16
        ft_roce_swap_dirs(f.roce)

    cdef int32_t roce_prepare(self, int32_t i, const ft_pkt *p, const ft_key *key, bint *a_first) noexcept nogil:
        """Before flow i meters RoCE packet p: settle who src is on the first packet that tells, let a flow of
        requests wait for its partner, and let a response look for the flow of the requests it answers
        (PSN pairing, tried on the first 16 responses, then on the 32nd, 64th, ...). Returns the flow the
        packet belongs to (another one after a merge; *a_first is then as seen from that flow)."""
        cdef ft_flow *f = &self.flows[i]
        cdef uint8_t role
        cdef uint16_t tries
        cdef int32_t c
        cdef uint32_t h2
        cdef bint want
        if f.roce.pairing != FT_ROCE_PAIR_NONE:
            return i
        role = ft_roce_pkt_role(p)
        if role == FT_ROCE_ROLE_NONE:
            return i
        if f.roce.role == FT_ROCE_ROLE_NONE:
            want = a_first[0] if role == FT_ROCE_ROLE_RESPONDER else not a_first[0]
            if (f.src_is_a != 0) != want:
                self.roce_flip_src(f)
            if role == FT_ROCE_ROLE_RESPONDER and (p.roce_opcode >> 5) == FT_ROCE_TR_RC:
                h2 = ft_roce_pairkey_hash(p.src_addr, p.dst_addr, key)
                if ft_roce_cand_put(self.roce_cand, self.flows, self.high_water, h2, i, f.flow_id) < 0:
                    self.roce_waiting_full += 1
        if role == FT_ROCE_ROLE_REQUESTER and (p.roce_opcode >> 5) == FT_ROCE_TR_RC:
            tries = f.roce.pair_tries
            if tries < 65535:
                f.roce.pair_tries = tries + 1
            if tries < 16 or (tries & (tries - 1)) == 0:
                c = ft_roce_cand_find(self.roce_cand, self.flows, self.high_water, key, a_first[0], p)
                if c == -2:
                    self.roce_pair_ambiguous += 1
                elif c >= 0 and c != i:
                    return self.roce_merge(c, i, a_first)
        return i

    cdef int32_t roce_merge(self, int32_t c, int32_t i, bint *a_first) noexcept nogil:
        """Pairs flows c and i (the two directions of one connection): the younger is merged into the older
        and removed without a record, and its key becomes an alias of the older one's. Returns the slot of
        the flow that remains (i unchanged when the alias table has no room: counted)."""
        cdef int32_t si, vi
        cdef ft_flow *fs
        cdef ft_flow *fv
        cdef bint same_addr, sender_a
        cdef int dv
        cdef int dmap[2]
        cdef uint32_t hv
        if self.flows[c].flow_id < self.flows[i].flow_id:
            si = c
            vi = i
        else:
            si = i
            vi = c
        fs = &self.flows[si]
        fv = &self.flows[vi]
        same_addr = memcmp(fs.key.addr_a, fs.key.addr_b, 16) == 0
        hv = ft_hash_words(&fv.key, sizeof(ft_key))
        if ft_roce_alias_put(self.roce_alias, &fv.key, hv, fs.key.qpn, fs.key.vlan_id, fv.key.qpn,
                             fv.key.vlan_id, FT_RA_FLIP if same_addr else 0, 0) < 0:
            self.roce_alias_full += 1
            return i
        for dv in range(2):
            dmap[dv] = -1
            if fv.roce.dir[dv].st == 0 and fv.pkts[dv] == 0:
                continue
            # the sender of v's direction dv; on one address the alias flips it (FT_RA_FLIP)
            sender_a = ((dv == 0) == (fv.src_is_a != 0)) != same_addr
            dmap[dv] = 0 if sender_a == (fs.src_is_a != 0) else 1
            fs.pkts[dmap[dv]] += fv.pkts[dv]
            fs.bytes[dmap[dv]] += fv.bytes[dv]
        ft_roce_merge(fs.roce, fv.roce, dmap)
        fs.trunc_pkts += fv.trunc_pkts
        fs.frag_pkts += fv.frag_pkts
        if fv.first_ns < fs.first_ns:
            fs.first_ns = fv.first_ns
        if fv.rec_first_ns < fs.rec_first_ns:
            fs.rec_first_ns = fv.rec_first_ns
        if fv.last_ns > fs.last_ns:
            fs.last_ns = fv.last_ns
        if fv.rec_last_ns > fs.rec_last_ns:
            fs.rec_last_ns = fv.rec_last_ns
        fs.roce.pairing = FT_ROCE_PAIR_PSN
        fs.roce.partner_qpn = fv.key.qpn
        fs.roce.partner_vlan = fv.key.vlan_id
        self.roce_pairs_psn += 1
        self.flows_created -= 1   # the merged direction leaves no record of its own
        if vi == i and same_addr:
            a_first[0] = not a_first[0]
        self.remove(vi)
        return si

    cdef void roce_unpair(self, const ft_flow *f) noexcept nogil:
        """A paired flow leaves the table: so do its alias entries (its own, for RDMA CM, and its partner's)."""
        cdef ft_key k2
        memcpy(&k2, &f.key, sizeof(ft_key))
        ft_roce_alias_del(self.roce_alias, &k2, ft_hash_words(&k2, sizeof(ft_key)))
        k2.qpn = f.roce.partner_qpn
        k2.vlan_id = f.roce.partner_vlan
        ft_roce_alias_del(self.roce_alias, &k2, ft_hash_words(&k2, sizeof(ft_key)))

    cdef ft_roce_meter *roce_alloc(self) noexcept nogil:
        """A RoCE meter from the pool (free list, else the current chunk, else a new chunk of ROCE_CHUNK);
        NULL when memory runs out. Chunks never move, so flows keep plain pointers."""
        cdef ft_roce_meter *m
        cdef ft_roce_meter **grown
        cdef int32_t cap
        if self.roce_free != NULL:
            m = <ft_roce_meter *> self.roce_free
            self.roce_free = (<void **> m)[0]
            return m
        if self.roce_nchunks == 0 or self.roce_chunk_used == ROCE_CHUNK:
            if self.roce_nchunks == self.roce_chunk_cap:
                cap = self.roce_chunk_cap * 2 if self.roce_chunk_cap else 16
                grown = <ft_roce_meter **> realloc(self.roce_chunks, cap * sizeof(ft_roce_meter *))
                if grown == NULL:
                    return NULL
                self.roce_chunks = grown
                self.roce_chunk_cap = cap
            m = <ft_roce_meter *> malloc(ROCE_CHUNK * sizeof(ft_roce_meter))
            if m == NULL:
                return NULL
            self.roce_chunks[self.roce_nchunks] = m
            self.roce_nchunks += 1
            self.roce_chunk_used = 0
        m = &self.roce_chunks[self.roce_nchunks - 1][self.roce_chunk_used]
        self.roce_chunk_used += 1
        return m

    cdef inline void roce_release(self, ft_roce_meter *m) noexcept nogil:
        (<void **> m)[0] = self.roce_free
        self.roce_free = m

    # ---- TCP meter (issue 3): meter pool ---------------------------------------------------------------
    cdef ft_tcp_meter *tcp_alloc(self) noexcept nogil:
        """A TCP meter from the pool (free list, else the current chunk, else a new chunk of TCP_CHUNK on a
        cache-line boundary, so that each meter's first line holds both sides' hot state); NULL when memory
        runs out. Meters in use never outnumber the flows (capacity); chunks never move."""
        cdef ft_tcp_meter *m
        cdef ft_tcp_meter **grown
        cdef int32_t cap
        if self.tcp_free != NULL:
            m = <ft_tcp_meter *> self.tcp_free
            self.tcp_free = (<void **> m)[0]
            return m
        if self.tcp_nchunks == 0 or self.tcp_chunk_used == TCP_CHUNK:
            if self.tcp_nchunks == self.tcp_chunk_cap:
                cap = self.tcp_chunk_cap * 2 if self.tcp_chunk_cap else 16
                grown = <ft_tcp_meter **> realloc(self.tcp_chunks, cap * sizeof(ft_tcp_meter *))
                if grown == NULL:
                    return NULL
                self.tcp_chunks = grown
                self.tcp_chunk_cap = cap
            m = <ft_tcp_meter *> aligned_alloc(64, TCP_CHUNK * sizeof(ft_tcp_meter))
            if m == NULL:
                return NULL
            self.tcp_chunks[self.tcp_nchunks] = m
            self.tcp_nchunks += 1
            self.tcp_chunk_used = 0
        m = &self.tcp_chunks[self.tcp_nchunks - 1][self.tcp_chunk_used]
        self.tcp_chunk_used += 1
        return m

    cdef inline void tcp_release(self, ft_tcp_meter *m) noexcept nogil:
        (<void **> m)[0] = self.tcp_free
        self.tcp_free = m

    cdef void roce_export(self, const ft_flow *f, ft_flowrec *r) noexcept nogil:
        """The RoCE part of a record; the ports become the UDP ports actually used: src's source port and
        4791 (or 4791 and dst's source port when src sent nothing), so community_id names a real 5-tuple."""
        cdef bint same_addr = memcmp(f.key.addr_a, f.key.addr_b, 16) == 0
        cdef bint qp_at_b = same_addr or (f.key.qpn & FT_ROCE_KEY_AT_B) != 0
        r.roce_row = self.rout_n
        ft_roce_export(f.roce, &self.rout[self.rout_n], f.key.qpn, qp_at_b != (f.src_is_a != 0))
        self.rout_n += 1
        if f.roce.dir[0].st & FT_RD_SPORT:
            r.src_port = f.roce.dir[0].sport
            r.dst_port = ROCE_UDP_PORT
        else:
            r.src_port = ROCE_UDP_PORT
            r.dst_port = f.roce.dir[1].sport

    cdef void roce_cm(self, const ft_pkt *p, const ft_key *key, bint a_first) noexcept nogil:
        """A UD packet to QP1: RDMA CM. A REQ waits for its REP; a REP proves the pairing of the two QPs they
        name (aliases inserted before the first data packet), and ends the flows of an earlier connection
        that used the same QPs."""
        cdef size_t off, end
        cdef ft_roce_cm cm
        cdef int r, s, s1, s2
        cdef ft_key kp
        cdef ft_key ka
        cdef bint same_addr
        cdef uint8_t flags, transport
        cdef uint32_t req_qpn, hk
        cdef uint16_t req_vlan
        cdef int32_t j
        cdef int pass_
        if p.roce_opcode != 0x64 or not (p.roce_ext & FT_ROCE_DETH):
            return
        off = p.frame_off + p.payload_off + 20   # BTH 12 + DETH 8
        end = p.frame_off + p.cap_len
        if end > self.cur_data_len or off >= end:
            return
        r = ft_roce_cm_parse(self.cur_data + off, <uint32_t> (end - off), &cm)
        if r == FT_ROCE_CM_REQ:
            self.roce_cm_req_lost += ft_roce_cmreq_put(self.roce_cmreq, p.src_addr, p.dst_addr, key,
                                                       cm.local_comm_id, cm.local_qpn, cm.transport)
            return
        if r != FT_ROCE_CM_REP:
            return
        s = ft_roce_cmreq_take(self.roce_cmreq, p.src_addr, p.dst_addr, key, cm.remote_comm_id)
        if s < 0:
            self.roce_cm_rep_unmatched += 1
            return
        req_qpn = self.roce_cmreq.slot[s].qpn
        transport = self.roce_cmreq.slot[s].transport
        req_vlan = self.roce_cmreq.slot[s].vlan_id
        same_addr = memcmp(key.addr_a, key.addr_b, 16) == 0
        memcpy(&kp, key, sizeof(ft_key))
        memcpy(&ka, key, sizeof(ft_key))
        kp.vlan_id = req_vlan   # packets to the passive QP travel the way the REQ did
        # the REP's sender is the passive side; it is key endpoint A when a_first (one address: always B)
        kp.qpn = (cm.local_qpn & FT_ROCE_PSN_MASK) | FT_ROCE_KEY_TAG | \
            (FT_ROCE_KEY_AT_B if (same_addr or not a_first) else 0)
        ka.qpn = (req_qpn & FT_ROCE_PSN_MASK) | FT_ROCE_KEY_TAG | \
            (FT_ROCE_KEY_AT_B if (same_addr or a_first) else 0)
        flags = FT_RA_CM | (FT_RA_ACTIVE_A if (same_addr or not a_first) else 0)
        for pass_ in range(2):
            hk = ft_hash_words(&kp if pass_ == 0 else &ka, sizeof(ft_key))
            j = self.lookup(&kp if pass_ == 0 else &ka, hk)
            if j != NONE:   # flows of an earlier connection on the same QPNs end here
                self.export(j, FT_END_EOF)
                self.remove(j)
                self.roce_qpn_reuse_splits += 1
        s1 = ft_roce_alias_put(self.roce_alias, &kp, ft_hash_words(&kp, sizeof(ft_key)), kp.qpn, kp.vlan_id,
                               ka.qpn, ka.vlan_id, flags, transport)
        s2 = ft_roce_alias_put(self.roce_alias, &ka, ft_hash_words(&ka, sizeof(ft_key)), kp.qpn, kp.vlan_id,
                               ka.qpn, ka.vlan_id, flags | (FT_RA_FLIP if same_addr else 0), transport)
        if s1 < 0 or s2 < 0:
            ft_roce_alias_del(self.roce_alias, &kp, ft_hash_words(&kp, sizeof(ft_key)))
            ft_roce_alias_del(self.roce_alias, &ka, ft_hash_words(&ka, sizeof(ft_key)))
            self.roce_alias_full += 1
            return
        self.roce_pairs_cm += 1
    # ---- end RoCE meter ----------------------------------------------------------------------------------

    # ---- DPI (issue 5) ---------------------------------------------------------------------------------
    cdef inline void dpi_flowinfo(self, const ft_flow *f, ft_dpi_flowinfo *fi) noexcept nogil:
        fi.ip_version = f.key.ip_version
        fi.initiator_known = f.key.proto != 6 or (f.tcp_state & (FT_TCPS_SYN | FT_TCPS_SYNACK)) != 0
        if f.src_is_a:
            fi.caddr = &f.key.addr_a[0]
            fi.saddr = &f.key.addr_b[0]
        else:
            fi.caddr = &f.key.addr_b[0]
            fi.saddr = &f.key.addr_a[0]

    cdef void dpi_packet(self, ft_flow *f, const ft_pkt *p, int d) noexcept nogil:
        """Hands a packet's captured L4 payload to the DPI registry; the bytes are checked to lie inside
        the batch's data buffer first."""
        cdef ft_dpi_flowinfo fi
        cdef uint64_t off = p.frame_off + p.payload_off
        if p.payload_off >= p.cap_len or off + p.payload_cap > <uint64_t> self.data_len:
            return
        self.dpi_flowinfo(f, &fi)
        ft_dpi_packet(self.dpi, &f.dpi, &fi, self.data + off, p.payload_cap, p.payload_cap < p.payload_len,
                      d, p.tcp_seq)

    def add(self, records, Py_ssize_t start=0, data=None):
        """Meter records[start:] (a numpy array of dpi._reader.PKT_DTYPE) until the output holds batch_rows
        flow records. Returns the index of the first record not yet metered (len(records) when done).
        data: the uint8 array the records' frame_off index into (the reader's batch data); without it the
        RoCE meter cannot read RDMA CM messages and pairs QPs from PSNs only, and DPI cannot read payload
        (flows are then labelled by rules only)."""
        if records.dtype.itemsize != sizeof(ft_pkt) or not records.flags.c_contiguous:
            # numpy's concatenate and friends may return a packed copy of a structured dtype:
            # pass dtype=PKT_DTYPE to them
            raise ValueError(f"records must be a contiguous array of PKT_DTYPE ({sizeof(ft_pkt)}-byte "
                             f"items), not {records.dtype.itemsize}-byte items")
        cdef const uint8_t[::1] raw = records.view(np.uint8).reshape(-1)
        cdef Py_ssize_t n = records.shape[0]
        if n == 0 or start >= n:
            return n
        cdef const ft_pkt *pkts = <const ft_pkt *> &raw[0]
        cdef int done
        cdef const uint8_t[::1] dview   # RoCE meter (issue 4): frame bytes for RDMA CM
        self.cur_data = NULL
        self.cur_data_len = 0
        if data is not None and len(data):
            dview = data
            self.cur_data = &dview[0]
            self.cur_data_len = dview.shape[0]
        cdef const uint8_t[::1] buf
        if data is not None and self.dpi != NULL and len(data):
            buf = data
            self.data = &buf[0]
            self.data_len = buf.shape[0]
        try:
            with nogil:
                done = self.add_c(pkts, start, n)
        finally:
            self.cur_data = NULL
            self.data = NULL
            self.data_len = 0
        return start + done

    def expire(self, uint64_t now_ns):
        """Advance packet time to now_ns (never backwards) and export the flows idle by then; for live
        capture, where time passes without packets. Returns the number of records now pending."""
        if now_ns > self.now_ns:
            self.now_ns = now_ns
        with nogil:
            self.expire_idle()
        return self.out_n

    def flush(self):
        """Export every open flow (end of input), least recently seen first, as far as the output has
        room; call take() and flush() again until it returns 0. Returns the number of flows left open."""
        cdef int32_t i
        cdef ft_flow *f
        with nogil:
            while self.out_n < self.batch_rows:
                i = self.lru_oldest()
                if i == NONE:
                    break
                f = &self.flows[i]
                self.export(i, FT_END_EOF if (f.key.proto == 6 and tcp_closed(f)) else FT_END_FORCED)
                self.remove(i)
        return self.active

    @property
    def pending(self):
        return self.out_n

    def take(self):
        """Hand over the exported records (a numpy array of FLOWREC_DTYPE, owned by the caller)."""
        out = np.empty(self.out_n, dtype=FLOWREC_DTYPE)
        if self.out_n:
            memcpy(cnp.PyArray_DATA(out), self.out, self.out_n * sizeof(ft_flowrec))
        self.out_n = 0
        # RoCE meter (issue 4): the RoCE parts of these records, row i belonging to the record whose
        # roce_row is i, wait in taken_roce until the next take()
        roce = np.empty(self.rout_n, dtype=ROCE_OUT_DTYPE)
        if self.rout_n:
            memcpy(cnp.PyArray_DATA(roce), self.rout, self.rout_n * sizeof(ft_roce_out))
        self.rout_n = 0
        self.taken_roce = roce
        # TCP meter (issue 3): likewise the TCP parts (tcp_row), in taken_tcp
        tcp = np.empty(self.tout_n, dtype=TCP_OUT_DTYPE)
        if self.tout_n:
            memcpy(cnp.PyArray_DATA(tcp), self.tout, self.tout_n * sizeof(ft_tcp_out))
        self.tout_n = 0
        self.taken_tcp = tcp
        # DPI (issue 5): likewise the DPI parts (dpi_row), in taken_dpi
        dpi = np.empty(self.dout_n, dtype=DPI_OUT_DTYPE)
        if self.dout_n:
            memcpy(cnp.PyArray_DATA(dpi), self.dout, self.dout_n * sizeof(ft_dpi_out))
        self.dout_n = 0
        self.taken_dpi = dpi
        return out

    def counters(self):
        """Run counters as a dict (names are those of the Arrow metadata and the CLI summary)."""
        reasons = {}
        not_metered = {}
        for r in range(FT_R__COUNT):
            if self.reasons[r]:
                reasons[FT_REASON_NAMES[r].decode()] = self.reasons[r]
            if self.not_metered_reasons[r]:
                not_metered[FT_REASON_NAMES[r].decode()] = self.not_metered_reasons[r]
        return {
            "packets_seen": self.packets_seen,
            "packets_metered": self.packets_metered,
            "bytes_metered": self.bytes_metered,
            "packets_not_metered": self.packets_seen - self.packets_metered,
            "parse_reasons": reasons,
            "not_metered_by_reason": not_metered,
            "flows_created": self.flows_created,
            "flows_active": self.active,
            "flows_evicted": self.flows_evicted,
            "flows_evicted_established": self.flows_evicted_established,
            "flows_promoted": self.flows_promoted,
            "flows_on_probation": self.seg_count[FT_SEG_PROBATION],
            "probation_reserve": self.probation_reserve,
            "records_exported": self.records_exported,
            "records_by_end_reason": {END_REASONS[k]: self.end_counts[k] for k in END_REASONS
                                      if self.end_counts[k]},
            "packets_ts_backwards": self.packets_ts_backwards,
            "tcp_port_reuse_splits": self.port_reuse_splits,
            "max_flows": self.capacity,
            # RoCE meter (issue 4)
            "roce": {
                "pairs_inferred_from_psn": self.roce_pairs_psn,
                "pairs_proven_by_cm": self.roce_pairs_cm,
                "pairing_ambiguous": self.roce_pair_ambiguous,
                "alias_table_full": self.roce_alias_full,
                "waiting_table_full": self.roce_waiting_full,
                "cm_req_overwritten": self.roce_cm_req_lost,
                "cm_rep_without_req": self.roce_cm_rep_unmatched,
                "qpn_reuse_splits": self.roce_qpn_reuse_splits,
            },
            "dpi": self.dpi_counters(),  # DPI (issue 5)
        }

    # ---- DPI (issue 5) ---------------------------------------------------------------------------------
    def dpi_counters(self):
        """DPI run counters (an empty dict when DPI is off)."""
        if self.dpi == NULL:
            return {}
        cdef ft_dpi_counters c = self.dpi.c
        return {
            "budget_packets": self.dpi.budget,
            "packets_inspected": c.packets_inspected, "flows_inspected": c.flows_inspected,
            "flows_detected": c.flows_detected, "flows_payload_rule": c.flows_rule_payload,
            "flows_budget_spent": c.flows_budget_spent, "flows_all_excluded": c.flows_all_excluded,
            "reassembly_started": c.reasm_started, "reassembly_gaps": c.reasm_gaps,
            "reassembly_full": c.reasm_full, "reassembly_pool_full": c.reasm_pool_full,
            "fields_pool_full": c.fields_pool_full,
            "fields_slots_used": self.dpi.ext_hw, "reassembly_slots_used": self.dpi.rs_hw,
        }

    def track_dpi_done(self, int capacity):
        """Live capture: from now on, note the key of every flow whose DPI is done when one of its packets
        still carries payload (take them with take_dpi_done()); at most capacity between two takes."""
        if capacity < 1 or capacity > (1 << 20):
            raise ValueError("capacity must be in 1..2^20")
        free(self.dpi_done_keys)
        self.dpi_done_n = 0
        self.dpi_done_keys = <ft_key *> malloc(capacity * sizeof(ft_key))
        if self.dpi_done_keys == NULL:
            self.dpi_done_cap = 0
            raise MemoryError()
        self.dpi_done_cap = capacity

    def take_dpi_done(self):
        """The keys noted since the last call (bytes: 48-byte struct ft_key each, qpn 0, possibly repeated)."""
        if self.dpi_done_keys == NULL or self.dpi_done_n == 0:
            return b""
        out = (<char *> self.dpi_done_keys)[:self.dpi_done_n * sizeof(ft_key)]
        self.dpi_done_n = 0
        return out

    def set_rules(self, compiled):
        """Install compiled rules (dpi.rules.CompiledRules.tables()): replaces the previous ones. Only
        flows decided after the call see them."""
        if self.dpi == NULL:
            self.dpi_rules = compiled
            return
        install_rules(&self.dpi.rules, compiled)
        self.dpi_rules = compiled


def text_columns(recs, uint16_t seed=0):
    """src_ip, dst_ip and community_id of an array of FLOWREC_DTYPE as Arrow-ready buffers.

    Returns three tuples (offsets int32 array, data bytes) built in C, one pass, no Python object per row.
    """
    cdef const uint8_t[::1] raw = recs.view(np.uint8).reshape(-1) if len(recs) else \
        np.zeros(1, np.uint8)
    cdef Py_ssize_t n = len(recs)
    cdef Py_ssize_t i
    src_off = np.empty(n + 1, dtype=np.int32)
    dst_off = np.empty(n + 1, dtype=np.int32)
    cid_off = np.arange(0, 30 * (n + 1), 30, dtype=np.int32)
    src_data = np.empty(max(46 * n, 1), dtype=np.uint8)
    dst_data = np.empty(max(46 * n, 1), dtype=np.uint8)
    cid_data = np.empty(max(30 * n, 1), dtype=np.uint8)
    cdef int32_t[::1] so = src_off
    cdef int32_t[::1] do = dst_off
    cdef uint8_t[::1] sd = src_data
    cdef uint8_t[::1] dd = dst_data
    cdef uint8_t[::1] cd = cid_data
    cdef const ft_flowrec *r
    cdef int32_t spos = 0, dpos = 0
    cdef uint16_t sp, dp
    with nogil:
        so[0] = 0
        do[0] = 0
        for i in range(n):
            r = &(<const ft_flowrec *> &raw[0])[i]
            spos += ft_addr_text(r.ip_version, r.src_addr, <char *> &sd[spos])
            dpos += ft_addr_text(r.ip_version, r.dst_addr, <char *> &dd[dpos])
            so[i + 1] = spos
            do[i + 1] = dpos
            sp = r.src_port
            dp = r.dst_port
            if r.has_icmp:
                sp = r.icmp_type
                dp = r.icmp_code
            ft_community_id(seed, r.ip_version, r.src_addr, r.dst_addr, r.proto, sp, dp,
                            <char *> &cd[30 * i])
    return ((src_off, src_data[:spos]), (dst_off, dst_data[:dpos]), (cid_off, cid_data[:30 * n]))


cdef struct ft_host:
    uint8_t addr[16]
    uint64_t bytes
    uint8_t ip_version


cdef class HostSums:
    """Exact bytes sent + received per host (IP version and address) over flow records: the replay summary's
    top talkers. An open-addressing table of indexes into an array of hosts kept in order of first
    appearance (ties rank by it); at most cap hosts: the hosts of records beyond that are not counted
    (hosts_dropped says how many times), so memory is bounded. One C pass per batch of FLOWREC_DTYPE."""
    cdef int32_t *slots        # 1 + index into hosts; 0: empty
    cdef uint32_t nslots
    cdef ft_host *hosts
    cdef int64_t n, hcap
    cdef readonly int64_t cap
    cdef readonly uint64_t hosts_dropped

    def __cinit__(self, int64_t cap=1_000_000):
        if not 1 <= cap <= (1 << 30):
            raise ValueError(f"cap must be between 1 and {1 << 30}, not {cap}")
        self.cap = cap
        self.nslots = 1024
        self.hcap = 256
        self.slots = <int32_t *> _calloc_or_raise(self.nslots, sizeof(int32_t))
        self.hosts = <ft_host *> _calloc_or_raise(self.hcap, sizeof(ft_host))

    def __dealloc__(self):
        free(self.slots)
        free(self.hosts)

    cdef int grow(self) except -1 nogil:
        """Double the slots (load factor stays <= 1/2) and, when needed, the host array."""
        cdef uint32_t ns = self.nslots * 2, j, mask = ns - 1
        cdef int32_t *sl = <int32_t *> calloc(ns, sizeof(int32_t))
        cdef int64_t i
        if sl == NULL:
            with gil:
                raise MemoryError()
        for i in range(self.n):
            j = ft_hash_words(self.hosts[i].addr, 16) & mask
            while sl[j] != 0:
                j = (j + 1) & mask
            sl[j] = <int32_t> (i + 1)
        free(self.slots)
        self.slots = sl
        self.nslots = ns
        return 0

    cdef int put(self, int ip_version, const uint8_t *addr, uint64_t nbytes) except -1 nogil:
        cdef uint32_t mask = self.nslots - 1
        cdef uint32_t j = ft_hash_words(addr, 16) & mask
        cdef int32_t k
        cdef ft_host *h
        cdef ft_host *grown
        while True:
            k = self.slots[j]
            if k == 0:
                break
            h = &self.hosts[k - 1]
            if h.ip_version == ip_version and memcmp(h.addr, addr, 16) == 0:
                h.bytes += nbytes
                return 0
            j = (j + 1) & mask
        if self.n >= self.cap:
            self.hosts_dropped += 1
            return 0
        if self.n == self.hcap:
            grown = <ft_host *> realloc(self.hosts, 2 * self.hcap * sizeof(ft_host))
            if grown == NULL:
                with gil:
                    raise MemoryError()
            self.hosts = grown
            self.hcap *= 2
        h = &self.hosts[self.n]
        memcpy(h.addr, addr, 16)
        h.ip_version = <uint8_t> ip_version
        h.bytes = nbytes
        self.n += 1
        self.slots[j] = <int32_t> self.n
        if 2 * self.n > self.nslots:
            self.grow()
        return 0

    def add(self, recs):
        """Add the bytes (src_bytes + dst_bytes) of each record of an array of FLOWREC_DTYPE to each of its
        two hosts (a host talking to itself sent and received them: twice)."""
        if recs.dtype != FLOWREC_DTYPE:
            raise TypeError("HostSums.add wants an array of FLOWREC_DTYPE")
        cdef Py_ssize_t n = len(recs), i
        if n == 0:
            return
        recs = np.ascontiguousarray(recs)
        cdef const uint8_t[::1] raw = recs.view(np.uint8).reshape(-1)
        cdef const ft_flowrec *r
        cdef uint64_t tot
        with nogil:
            for i in range(n):
                r = &(<const ft_flowrec *> &raw[0])[i]
                tot = r.src_bytes + r.dst_bytes
                self.put(r.ip_version, r.src_addr, tot)
                self.put(r.ip_version, r.dst_addr, tot)

    def __len__(self):
        return self.n

    def top(self, int k):
        """The k largest hosts as [(bytes, host text)], largest first; ties in order of first appearance."""
        cdef int64_t i
        if self.n == 0 or k <= 0:
            return []
        sums = np.empty(self.n, np.uint64)
        cdef uint64_t[::1] sv = sums
        for i in range(self.n):
            sv[i] = self.hosts[i].bytes
        k = min(k, self.n)
        cand = np.argpartition(-sums.astype(np.float64), k - 1)[:k] if self.n > k else np.arange(self.n)
        # argpartition may cut within a run of ties: take every host equal to the k-th sum, then rank
        kth = sums[cand].min()
        cand = np.flatnonzero(sums >= kth)
        order = sorted(cand.tolist(), key=lambda j: (-int(sums[j]), j))[:k]
        cdef char buf[64]
        cdef int ln
        out = []
        for j in order:
            ln = ft_addr_text(self.hosts[j].ip_version, self.hosts[j].addr, buf)
            out.append((int(sums[j]), buf[:ln].decode()))
        return out


# ---- DPI (issue 5): labels, dissectors, rule installation, a one-flow harness for tests -----------------

def dpi_labels():
    """The built-in application labels, indexed by label id ("" for id 0: none)."""
    return [FT_APP_NAMES[i].decode() for i in range(FT_APP__COUNT)]


def dpi_dissectors():
    """The dissector tables: {"tcp": [(module, label), ...], "udp": [...]}, in the order they are tried.
    app_rule id of entry i: 1 + i (TCP), 65 + i (UDP)."""
    labels = dpi_labels()
    return {"tcp": [(FT_DPI_TCP[i].name.decode(), labels[FT_DPI_TCP[i].app]) for i in range(FT_DPI_NTCP)],
            "udp": [(FT_DPI_UDP[i].name.decode(), labels[FT_DPI_UDP[i].app]) for i in range(FT_DPI_NUDP)]}


DPI_RULE_BASE = FT_DPI_RULE_BASE


cdef void *_calloc_or_raise(size_t n, size_t size) except NULL:
    cdef void *p = calloc(n if n else 1, size)
    if p == NULL:
        raise MemoryError()
    return p


cdef int install_rules(ft_rules *R, compiled) except -1:
    """Copies compiled rules (dicts built by dpi/rules.py, sorted by rank) into C tables, replacing R's."""
    cdef list rules = list(compiled["rules"])
    cdef size_t nports = sum(len(r["ports"]) for r in rules)
    cdef size_t ncidrs = sum(len(r["cidrs"]) for r in rules)
    cdef size_t nnames = sum(len(r["names"]) + len(r["alpns"]) for r in rules)
    cdef size_t npats = sum(len(r["pats"]) for r in rules)
    cdef ft_rules T
    memset(&T, 0, sizeof(T))
    cdef size_t i, k, j, ip = 0, ic = 0, iname = 0, ipat = 0, ipay = 0
    cdef ft_rule *r
    cdef ft_rule_pat *t
    cdef bytes b
    try:
        T.r = <ft_rule *> _calloc_or_raise(len(rules), sizeof(ft_rule))
        T.ports = <ft_rule_port *> _calloc_or_raise(nports, sizeof(ft_rule_port))
        T.cidrs = <ft_rule_cidr *> _calloc_or_raise(ncidrs, sizeof(ft_rule_cidr))
        T.names = <ft_rule_name *> _calloc_or_raise(nnames, sizeof(ft_rule_name))
        T.pats = <ft_rule_pat *> _calloc_or_raise(npats, sizeof(ft_rule_pat))
        T.payload = <uint32_t *> _calloc_or_raise(len(rules), sizeof(uint32_t))
        for i, d in enumerate(rules):
            r = &T.r[i]
            r.rank = d["rank"]
            r.app = d["app"]
            r.l4 = d["l4"]
            r.conf = d["conf"]
            r.side = d["side"]
            r.flags = d["flags"]
            r.det[0] = d["det"][0]
            r.det[1] = d["det"][1]
            r.port_i, r.port_n = ip, len(d["ports"])
            for lo, hi in d["ports"]:
                T.ports[ip].lo = lo
                T.ports[ip].hi = hi
                ip += 1
            r.cidr_i, r.cidr_n = ic, len(d["cidrs"])
            for ver, plen, addr in d["cidrs"]:
                T.cidrs[ic].ver = ver
                T.cidrs[ic].plen = plen
                b = bytes(addr).ljust(16, b"\0")
                memcpy(T.cidrs[ic].addr, <const char *> b, 16)
                ic += 1
            for key, start_attr in (("names", 0), ("alpns", 1)):
                if start_attr == 0:
                    r.name_i, r.name_n = iname, len(d[key])
                else:
                    r.alpn_i, r.alpn_n = iname, len(d[key])
                for text in d[key]:
                    b = text.encode()
                    if len(b) >= FT_DPI_NAME_LEN:
                        raise ValueError(f"name pattern longer than {FT_DPI_NAME_LEN - 1} bytes: {text!r}")
                    memcpy(T.names[iname].text, <const char *> b, len(b))
                    T.names[iname].text[len(b)] = 0
                    T.names[iname].len = len(b)
                    # literal end after the last wildcard ('*' or '?'), for the quick test in C
                    T.names[iname].tail = len(b) - 1 - max(b.rfind(b"*"), b.rfind(b"?")) \
                        if (b"*" in b or b"?" in b) else len(b)
                    iname += 1
            r.pat_i, r.pat_n = ipat, len(d["pats"])
            for pd in d["pats"]:
                t = &T.pats[ipat]
                pb, care = bytes(pd["bytes"]), bytes(pd["care"])
                if not 1 <= len(pb) <= FT_PAT_MAX or len(care) != len(pb):
                    raise ValueError(f"payload pattern must be 1..{FT_PAT_MAX} bytes")
                t.dir = pd["dir"]
                t.anywhere = pd["anywhere"]
                t.len = len(pb)
                t.offset = pd["offset"]
                t.within = pd["within"]
                for j in range(<size_t> len(pb)):
                    t.bytes[j] = pb[j]
                    t.care[j] = care[j]
                    # Shift-And: bit j of sa[c] is set when pattern position j accepts byte c
                    if care[j]:
                        t.sa[pb[j]] |= (<uint64_t> 1) << j
                    else:
                        for k in range(256):
                            t.sa[k] |= (<uint64_t> 1) << j
                ipat += 1
            if r.flags & FT_RULE_PAYLOAD:
                T.payload[ipay] = i
                ipay += 1
        T.n = len(rules)
        T.npayload = ipay
        # port index (see struct ft_rules): narrow port rules by port, the others in `always`
        per_port = {}
        always = []
        for i, d in enumerate(rules):
            if d["flags"] & FT_RULE_PAYLOAD:
                continue
            width = sum(hi - lo + 1 for lo, hi in d["ports"])
            if d["ports"] and width <= 4096:
                for lo, hi in d["ports"]:
                    for port in range(lo, hi + 1):
                        per_port.setdefault(port, []).append(i)
            else:
                always.append(i)
        T.port_off = <uint32_t *> _calloc_or_raise(65537, sizeof(uint32_t))
        T.port_list = <uint32_t *> _calloc_or_raise(sum(len(v) for v in per_port.values()), sizeof(uint32_t))
        T.always = <uint32_t *> _calloc_or_raise(len(always), sizeof(uint32_t))
        k = 0
        for port in range(65536):
            T.port_off[port] = k
            for i in sorted(set(per_port.get(port, ()))):
                T.port_list[k] = i
                k += 1
        T.port_off[65536] = k
        for j, i in enumerate(always):
            T.always[j] = i
        T.nalways = len(always)
    except BaseException:
        ft_dpi_rules_free(&T)
        raise
    ft_dpi_rules_free(R)
    memcpy(R, &T, sizeof(ft_rules))
    return 0


cdef dict _out_dict(const ft_dpi_out *o):
    s = lambda bytes c: c.decode("ascii", "replace")
    d = {}
    if o.set & 0x001:
        d["server_name"] = s(o.server_name)
    if o.set & 0x002:
        d["alpn"] = s(o.alpn)
    if o.set & 0x008:
        d["version"] = s(o.version)
    if o.set & 0x010:
        d["http_method"] = s(o.http_method)
    if o.set & 0x020:
        d["http_path"] = s(o.http_path)
    if o.set & 0x040:
        d["user_agent"] = s(o.user_agent)
    if o.set & 0x080:
        d["dns_qtype"] = o.dns_qtype
    if o.set & 0x100:
        d["dns_rcode"] = o.dns_rcode
    return d


cdef class DpiFlow:
    """One flow through the real DPI registry, without a flow table: for dissector tests.

        f = DpiFlow("tcp", client_port, server_port, budget=16)
        f.packet(payload, dir=0, seq=1000)   # dir 0 initiator -> responder; seq: TCP sequence number
        f.state()     # {"done": bool, "need_more": bool, "candidates": n, "label": "tls" or None (no verdict yet)}
        f.result()    # finalizes (rules apply) and returns the record's DPI part as a dict
    """
    cdef ft_dpi_ctx *ctx
    cdef ft_dpi_state st
    cdef ft_dpi_flowinfo fi
    cdef uint8_t caddr[16]
    cdef uint8_t saddr[16]
    cdef object labels

    def __cinit__(self, proto, int cport, int sport, int budget=16, compiled_rules=None,
                  bytes client_addr=b"\x0a\0\0\x01", bytes server_addr=b"\x0a\0\0\x02"):
        cdef uint8_t l4 = {"tcp": 6, "udp": 17}.get(proto, proto) if isinstance(proto, str) else proto
        self.ctx = ft_dpi_ctx_new(budget, 1024, 64)
        if self.ctx == NULL:
            raise MemoryError()
        if compiled_rules is not None:
            install_rules(&self.ctx.rules, compiled_rules)
        ft_dpi_flow_init(&self.st, l4, cport, sport)
        memset(self.caddr, 0, 16)
        memset(self.saddr, 0, 16)
        memcpy(self.caddr, <const char *> client_addr, min(16, len(client_addr)))
        memcpy(self.saddr, <const char *> server_addr, min(16, len(server_addr)))
        self.fi.ip_version = 4 if len(client_addr) == 4 else 6
        self.fi.initiator_known = 1
        self.fi.caddr = self.caddr
        self.fi.saddr = self.saddr
        self.labels = dpi_labels()
        if compiled_rules is not None:
            self.labels = self.labels + list(compiled_rules.get("extra_labels", []))

    def __dealloc__(self):
        if self.ctx != NULL:
            ft_dpi_flow_free(self.ctx, &self.st)
            ft_dpi_ctx_free(self.ctx)

    def packet(self, const uint8_t[::1] payload, int dir=0, uint32_t seq=0, bint cut=False):
        """Feeds one packet's payload (ignored once DPI is done, as in the flow table)."""
        if self.st.flags & FT_DPI_S_DONE or payload.shape[0] == 0:
            return
        ft_dpi_packet(self.ctx, &self.st, &self.fi, &payload[0], payload.shape[0], cut, dir, seq)

    def state(self):
        label = self.labels[self.st.app] if self.st.detector and self.st.app < len(self.labels) else None
        table = dpi_dissectors()["tcp" if self.st.l4 == 6 else "udp"] if self.st.l4 in (6, 17) else []
        cands = [table[i][0] for i in range(len(table)) if (self.st.cand >> i) & 1]
        return {"done": bool(self.st.flags & FT_DPI_S_DONE), "need_more": bool(self.st.flags & 0x20),
                "candidates": cands, "label": label, "inspected": self.st.pkts}

    def result(self):
        cdef ft_dpi_out o
        ft_dpi_export(self.ctx, &self.st, &self.fi, &o)
        d = _out_dict(&o)
        d["app"] = self.labels[o.app] if o.app < len(self.labels) else o.app
        d["base"] = self.labels[o.base] if o.base else None
        d["rule_id"] = o.rule
        d["conf"] = o.conf
        d["inspected"] = o.inspected
        return d

    def counters(self):
        cdef ft_dpi_counters c = self.ctx.c
        return {"packets_inspected": c.packets_inspected, "reassembly_started": c.reasm_started,
                "reassembly_gaps": c.reasm_gaps, "flows_detected": c.flows_detected}


# ---- QUIC Initial cryptography, for tests against hashlib and the RFC vectors ---------------------------

def _crypto_sha256(const uint8_t[::1] data, bint portable=False):
    cdef ft_sha256 s
    cdef uint8_t out[32]
    ft_sha_portable = portable
    ft_sha256_init(&s)
    if data.shape[0]:
        ft_sha256_update(&s, &data[0], data.shape[0])
    ft_sha256_final(&s, out)
    ft_sha_portable = 0
    return bytes(out[:32])


def _sha1_short(const uint8_t[::1] msg, bint portable=False):
    """SHA-1 of a message of at most 55 bytes, as the Community ID computes it (ext/ft_util.h), for tests
    against hashlib: SHA-NI when the CPU has it, or the C path with portable."""
    cdef uint8_t out[20]
    cdef uint8_t empty = 0
    if msg.shape[0] > 55:
        raise ValueError("at most 55 bytes")
    ft_sha1_portable = portable
    ft_sha1_short(&msg[0] if msg.shape[0] else &empty, msg.shape[0], out)
    ft_sha1_portable = 0
    return bytes(out[:20])


def _crypto_hmac_sha256(bytes key, bytes msg):
    cdef uint8_t out[32]
    ft_hmac_sha256(key, len(key), msg, len(msg), out)
    return bytes(out[:32])


def _crypto_hkdf_expand_label(bytes secret, str label, int length):
    cdef uint8_t out[32]
    if len(secret) != 32 or not 0 < length <= 32:
        raise ValueError("32-byte secret, length 1..32")
    b = label.encode()
    ft_hkdf_expand_label(secret, b, out, length)
    return bytes(out[:length])


def _crypto_aes128(bytes key, bytes block, bint portable=False):
    cdef ft_aes128 a
    cdef uint8_t out[16]
    if len(key) != 16 or len(block) != 16:
        raise ValueError("16-byte key and block")
    ft_aes_portable = portable
    ft_aes128_setkey(&a, key)
    ft_aes128_encrypt(&a, block, out)
    ft_aes_portable = 0
    return bytes(out[:16])


# ---- DPI (issue 5): text columns of flow records, built in one pass ---------------------------------------

def dpi_text_columns(recs):
    """server_name, alpn, version, http_method, http_path, user_agent of an array of DPI_OUT_DTYPE (the DPI
    side records, FlowTable.taken_dpi), each as (int32 offsets, uint8 data, validity mask bool) ready for
    pyarrow.StringArray.from_buffers; a field is valid when its bit is set in the record's set. No Python
    object per record."""
    if recs.dtype.itemsize != sizeof(ft_dpi_out) or not recs.flags.c_contiguous:
        raise ValueError("records must be a contiguous array of DPI_OUT_DTYPE")
    cdef Py_ssize_t n = len(recs)
    cdef const uint8_t[::1] raw = recs.view(np.uint8).reshape(-1) if n else np.zeros(1, np.uint8)
    cdef size_t offs[6]
    cdef size_t widths[6]
    cdef uint16_t bits[6]
    offs[0] = <size_t> &(<ft_dpi_out *> NULL).server_name[0]; widths[0] = 128; bits[0] = 0x001
    offs[1] = <size_t> &(<ft_dpi_out *> NULL).alpn[0]; widths[1] = 32; bits[1] = 0x002
    offs[2] = <size_t> &(<ft_dpi_out *> NULL).version[0]; widths[2] = 48; bits[2] = 0x008
    offs[3] = <size_t> &(<ft_dpi_out *> NULL).http_method[0]; widths[3] = 16; bits[3] = 0x010
    offs[4] = <size_t> &(<ft_dpi_out *> NULL).http_path[0]; widths[4] = 112; bits[4] = 0x020
    offs[5] = <size_t> &(<ft_dpi_out *> NULL).user_agent[0]; widths[5] = 112; bits[5] = 0x040
    out = []
    cdef int k
    cdef Py_ssize_t i, total
    cdef size_t j
    cdef const ft_dpi_out *r
    cdef const char *s
    cdef int32_t[::1] o
    cdef uint8_t[::1] d
    cdef uint8_t[::1] v
    for k in range(6):
        offsets = np.empty(n + 1, np.int32)
        valid = np.zeros(n, np.uint8)
        o = offsets
        v = valid
        total = 0
        with nogil:
            o[0] = 0
            for i in range(n):
                r = &(<const ft_dpi_out *> &raw[0])[i]
                if r.set & bits[k]:
                    v[i] = 1
                    s = (<const char *> r) + offs[k]
                    j = 0
                    while j < widths[k] and s[j] != 0:
                        j += 1
                    total += j
                o[i + 1] = <int32_t> total
        data = np.empty(max(total, 1), np.uint8)
        d = data
        with nogil:
            for i in range(n):
                if o[i + 1] > o[i]:
                    r = &(<const ft_dpi_out *> &raw[0])[i]
                    memcpy(&d[o[i]], (<const char *> r) + offs[k], o[i + 1] - o[i])
        out.append((offsets, data[:total], valid.view(bool)))
    return out


# ---- side-array columns (TCP meter, issue 3; RoCE meter, issue 4) -------------------------------------------
def scatter_fields(sub, const int64_t[::1] rows, Py_ssize_t n, names):
    """{name: array of n values}: field `name` of sub[k] at position rows[k], zero elsewhere. sub is a
    C-contiguous structured array (TCP_OUT_DTYPE, ROCE_OUT_DTYPE) with one row per entry of rows, which
    are indices below n. One strided pass per field in C: numpy's zeros-and-fancy-assign per column cost
    more than metering the TCP packets."""
    cdef Py_ssize_t m = len(rows), k, isz, off
    cdef Py_ssize_t stride = sub.dtype.itemsize
    cdef const uint8_t[::1] raw
    cdef const uint8_t *base
    cdef uint8_t *dst
    if len(sub) != m:
        raise ValueError("sub and rows differ in length")
    if not sub.flags.c_contiguous:
        raise ValueError("sub must be C-contiguous")
    for k in range(m):
        if rows[k] < 0 or rows[k] >= n:
            raise ValueError("row index out of range")
    raw = sub.view(np.uint8).reshape(-1) if m else np.zeros(1, np.uint8)
    base = &raw[0]
    out = {}
    for name in names:
        ftype, off = sub.dtype.fields[name][:2]
        isz = ftype.itemsize
        if ftype.subdtype is not None or isz not in (1, 2, 4, 8) or off + isz > stride:
            raise ValueError(f"{name}: only scalar fields of 1, 2, 4 or 8 bytes")
        col = np.zeros(n, dtype=ftype)
        dst = <uint8_t *> cnp.PyArray_DATA(col)
        with nogil:
            if isz == 8:
                for k in range(m):
                    memcpy(dst + rows[k] * 8, base + k * stride + off, 8)
            elif isz == 4:
                for k in range(m):
                    memcpy(dst + rows[k] * 4, base + k * stride + off, 4)
            elif isz == 2:
                for k in range(m):
                    memcpy(dst + rows[k] * 2, base + k * stride + off, 2)
            else:
                for k in range(m):
                    dst[rows[k]] = base[k * stride + off]
        out[name] = col
    return out


def hist_parts(sub, str prefix, const int64_t[::1] srows):
    """The histogram column's parts from the raw sketches (ext/ft_hist.h) prefix_counts / _base / _halvings /
    _collapsed of the rows srows of sub: (first int16[m], lengths int32[m], values uint32[sum(lengths)],
    collapsed bool[m]), m = len(srows). Counts are scaled back by the halvings (saturating at 2^32-1), zero
    buckets at both ends left out; a sketch without a count has length 0."""
    cdef Py_ssize_t m = len(srows), k, i, lo, hi, pos = 0
    cdef Py_ssize_t stride = sub.dtype.itemsize
    cdef Py_ssize_t o_cnt, o_base, o_halv, o_coll
    cdef const uint8_t[::1] raw
    cdef const uint8_t *rec
    cdef const uint16_t *cnt
    cdef uint64_t v
    cdef int sh
    cdef int16_t b
    ct = sub.dtype.fields[prefix + "_counts"][0]
    if ct.subdtype is None or ct.subdtype[0] != np.dtype("<u2") or ct.subdtype[1] != (FT_HIST_BUCKETS,):
        raise ValueError(f"{prefix}_counts must be ({FT_HIST_BUCKETS},)<u2")
    if not sub.flags.c_contiguous:
        raise ValueError("sub must be C-contiguous")
    for k in range(m):
        if srows[k] < 0 or srows[k] >= len(sub):
            raise ValueError("row index out of range")
    o_cnt = sub.dtype.fields[prefix + "_counts"][1]
    o_base = sub.dtype.fields[prefix + "_base"][1]
    o_halv = sub.dtype.fields[prefix + "_halvings"][1]
    o_coll = sub.dtype.fields[prefix + "_collapsed"][1]
    first = np.zeros(m, np.int16)
    lengths = np.zeros(m, np.int32)
    collapsed = np.zeros(m, np.bool_)
    values = np.empty(max(m * FT_HIST_BUCKETS, 1), np.uint32)
    cdef int16_t[::1] fv = first
    cdef int32_t[::1] lv = lengths
    cdef uint8_t[::1] cv = collapsed.view(np.uint8)
    cdef uint32_t[::1] vv = values
    raw = sub.view(np.uint8).reshape(-1) if len(sub) else np.zeros(1, np.uint8)
    with nogil:
        for k in range(m):
            rec = &raw[0] + srows[k] * stride
            cnt = <const uint16_t *> (rec + o_cnt)
            lo = -1
            hi = -1
            for i in range(FT_HIST_BUCKETS):
                if cnt[i]:
                    if lo < 0:
                        lo = i
                    hi = i
            cv[k] = rec[o_coll] != 0
            if lo < 0:
                continue
            sh = rec[o_halv] if rec[o_halv] < 16 else 16
            memcpy(&b, rec + o_base, 2)
            fv[k] = <int16_t> (b + lo)
            lv[k] = <int32_t> (hi - lo + 1)
            for i in range(lo, hi + 1):
                v = (<uint64_t> cnt[i]) << sh
                vv[pos] = <uint32_t> (v if v < 0xFFFFFFFFu else 0xFFFFFFFFu)
                pos += 1
    return first, lengths, values[:pos], collapsed


# ---- fuzzing (issue 7): one named dissector called directly, outside the registry --------------------------

from libc.string cimport memchr

cdef extern from *:
    """
    /* Entry i of the L4 table l4 (6, 17): its answer on p[0..len) (a copy of exactly len bytes on the heap,
     * so that a read one past the end is seen by AddressSanitizer), or -1 when there is no such entry. */
    static int ft_fuzz_dissect(uint8_t l4, int i, const uint8_t *p, uint32_t len, int arg,
                               struct ft_dpi_state *st, struct ft_dpi_out *out)
    {
        int n, rv;
        const struct ft_dissector *t = ft_dpi_table(l4, &n);
        if (i < 0 || i >= n || len == 0)
            return -1;
        uint8_t *copy = (uint8_t *)malloc(len);
        if (!copy)
            return -1;
        memcpy(copy, p, len);
        rv = t[i].fn(copy, len, arg, st, out);
        free(copy);
        return rv;
    }
    /* The first port that lets a port-gated entry run (0: not gated). */
    static int ft_fuzz_gate_port(uint8_t l4, int i)
    {
        int n;
        const struct ft_dissector *t = ft_dpi_table(l4, &n);
        return i >= 0 && i < n && t[i].gated ? t[i].ports[0] : 0;
    }
    """
    int ft_fuzz_dissect(uint8_t l4, int i, const uint8_t *p, uint32_t len, int arg, ft_dpi_state *st,
                        ft_dpi_out *out) nogil
    int ft_fuzz_gate_port(uint8_t l4, int i) nogil


_dissector_index = None


def dpi_dissect(proto, str name, views, int cport=40000, int sport=-1):
    """Calls the dissector `name` of the proto ("tcp"/"udp") table directly on views [(payload, arg), ...]
    (arg: bit 0 the direction, bit 1 FT_DPI_FINAL), as the registry would: it stops at EXCLUDED, and after
    DETECTED goes on only while the dissector asks for its extra phase. sport -1: the entry's first gated
    port (40000 when not gated). Returns (answers, fields dict, names of fields left without a NUL)."""
    global _dissector_index
    cdef uint8_t l4 = {"tcp": 6, "udp": 17}[proto]
    if _dissector_index is None:
        _dissector_index = {(pr, d): k for pr, t in dpi_dissectors().items() for k, (d, _) in enumerate(t)}
    cdef int i = _dissector_index[proto, name]
    cdef ft_dpi_state st
    cdef ft_dpi_out out
    cdef const uint8_t[::1] v
    cdef int rv
    if sport < 0:
        sport = ft_fuzz_gate_port(l4, i) or 40000
    ft_dpi_flow_init(&st, l4, cport, sport)
    memset(&out, 0, sizeof(out))
    answers = []
    for payload, arg in views:
        v = payload
        if v.shape[0] == 0:
            continue
        rv = ft_fuzz_dissect(l4, i, &v[0], v.shape[0], arg, &st, &out)
        answers.append(rv)
        if rv == FT_DPI_DETECTED and not st.detector:
            st.detector = <uint8_t> (i + 1)
        if rv == FT_DPI_EXCLUDED or (st.detector and not (st.flags & 0x02)):  # 0x02: FT_DPI_S_EXTRA
            break
    unterminated = []
    if memchr(out.server_name, 0, sizeof(out.server_name)) == NULL:
        unterminated.append("server_name")
    if memchr(out.alpn, 0, sizeof(out.alpn)) == NULL:
        unterminated.append("alpn")
    if memchr(out.version, 0, sizeof(out.version)) == NULL:
        unterminated.append("version")
    if memchr(out.http_method, 0, sizeof(out.http_method)) == NULL:
        unterminated.append("http_method")
    if memchr(out.http_path, 0, sizeof(out.http_path)) == NULL:
        unterminated.append("http_path")
    if memchr(out.user_agent, 0, sizeof(out.user_agent)) == NULL:
        unterminated.append("user_agent")
    if unterminated:
        return answers, {}, unterminated  # decoding them would read past the field
    return answers, _out_dict(&out), unterminated
