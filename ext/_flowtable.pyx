"""Flow table: struct ft_pkt records in, struct ft_flowrec flow records out.

The hot loop (FlowTable.add) runs without the GIL and without Python objects: a chained hash table over a
slab of struct ft_flow, a recency list for idle expiry and eviction, and an output array of exported
records that Python drains in batches (FlowTable.take). Time is packet time only, so a replay is
deterministic: the same input gives the same records in the same order.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free
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
# --- end TCP meter ---------------------------------------------------------------------------------------

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
        ft_tcp_meter tcp   # TCP meter (issue 3)

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
        ft_tcp_out tcp     # TCP meter (issue 3)

    struct ft_rec_field:
        const char *name
        size_t offset
        const char *fmt
    const ft_rec_field FT_FLOWREC_FIELDS[]
    const int FT_FLOWREC_NFIELDS

    enum:
        FT_END_IDLE
        FT_END_ACTIVE
        FT_END_EOF
        FT_END_FORCED
        FT_END_RESOURCES
        FT_TCPS_SYN
        FT_TCPS_SYNACK
        FT_TCPS_FIN_SRC
        FT_TCPS_FIN_DST
        FT_TCPS_RST

cdef extern from "ft_util.h" nogil:
    uint32_t ft_hash_words(const void *buf, size_t len)
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


cdef extern from *:   # TCP meter (issue 3): where struct ft_tcp_out sits in struct ft_flowrec
    """
    #define FT_TCP_REC_OFFSET offsetof(struct ft_flowrec, tcp)
    """
    const size_t FT_TCP_REC_OFFSET


def _flowrec_dtype():
    names, formats, offsets = [], [], []
    for i in range(FT_FLOWREC_NFIELDS):
        names.append(FT_FLOWREC_FIELDS[i].name.decode())
        formats.append(FT_FLOWREC_FIELDS[i].fmt.decode())
        offsets.append(FT_FLOWREC_FIELDS[i].offset)
    # TCP meter (issue 3): the ft_tcp_out fields, offset by where it sits in the record
    for i in range(FT_TCPOUT_NFIELDS):
        names.append("tcp_" + FT_TCPOUT_FIELDS[i].name.decode())
        formats.append(FT_TCPOUT_FIELDS[i].fmt.decode())
        offsets.append(FT_TCP_REC_OFFSET + FT_TCPOUT_FIELDS[i].offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": sizeof(ft_flowrec)})


def _roce_out_dtype():
    """RoCE meter (issue 4): the side records (struct ft_roce_out, names already roce_*)."""
    names, formats, offsets = [], [], []
    for i in range(FT_ROCE_OUT_NFIELDS):
        names.append(FT_ROCE_OUT_FIELDS[i].name.decode())
        formats.append(FT_ROCE_OUT_FIELDS[i].fmt.decode())
        offsets.append(FT_ROCE_OUT_FIELDS[i].offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": sizeof(ft_roce_out)})


FLOWREC_DTYPE = _flowrec_dtype()
ROCE_OUT_DTYPE = _roce_out_dtype()
FLOW_STATE_BYTES = sizeof(ft_flow)
ROCE_METER_BYTES = sizeof(ft_roce_meter)   # RoCE meter (issue 4): per RoCE flow, beside FLOW_STATE_BYTES
TCP_METER_BYTES = sizeof(ft_tcp_meter)   # TCP meter (issue 3): part of FLOW_STATE_BYTES
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
    cdef int32_t lru_head, lru_tail   # head = least recently seen
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
    cdef readonly int32_t out_n
    cdef int32_t out_cap
    cdef readonly int32_t batch_rows
    # counters (reach the Arrow metadata and the CLI summary)
    cdef readonly uint64_t packets_seen, packets_metered, bytes_metered
    cdef readonly uint64_t flows_created, flows_evicted, records_exported
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

    def __cinit__(self, int max_flows=1000000, uint64_t idle_timeout_ns=120_000_000_000,
                  uint64_t active_timeout_ns=1_800_000_000_000, uint64_t closed_timeout_ns=10_000_000_000,
                  int batch_rows=65536):
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
        # RoCE meter (issue 4): 334 KiB of pairing tables, zeroed (calloc'd pages cost nothing until used)
        self.roce_alias = <ft_roce_alias_tab *> calloc(1, sizeof(ft_roce_alias_tab))
        self.roce_cand = <ft_roce_cand_tab *> calloc(1, sizeof(ft_roce_cand_tab))
        self.roce_cmreq = <ft_roce_cmreq_tab *> calloc(1, sizeof(ft_roce_cmreq_tab))
        if self.buckets == NULL or self.flows == NULL or self.out == NULL or self.rout == NULL or \
                self.roce_alias == NULL or \
                self.roce_cand == NULL or self.roce_cmreq == NULL:
            raise MemoryError()
        memset(self.buckets, 0xff, nb * sizeof(int32_t))
        self.high_water = 0
        self.free_head = NONE
        self.lru_head = NONE
        self.lru_tail = NONE
        self.active = 0
        self.now_ns = 0
        self.next_flow_id = 1
        self.out_n = 0
        memset(self.reasons, 0, sizeof(self.reasons))
        memset(self.not_metered_reasons, 0, sizeof(self.not_metered_reasons))
        memset(self.end_counts, 0, sizeof(self.end_counts))

    def __dealloc__(self):
        free(self.flows)
        free(self.buckets)
        free(self.out)
        free(self.rout)
        for i in range(self.roce_nchunks):
            free(self.roce_chunks[i])
        free(self.roce_chunks)
        free(self.roce_alias)   # RoCE meter (issue 4)
        free(self.roce_cand)
        free(self.roce_cmreq)

    # ---- recency list -------------------------------------------------------------------------------
    cdef inline void lru_unlink(self, int32_t i) noexcept nogil:
        cdef ft_flow *f = &self.flows[i]
        if f.lru_prev != NONE:
            self.flows[f.lru_prev].lru_next = f.lru_next
        else:
            self.lru_head = f.lru_next
        if f.lru_next != NONE:
            self.flows[f.lru_next].lru_prev = f.lru_prev
        else:
            self.lru_tail = f.lru_prev
        f.lru_prev = NONE
        f.lru_next = NONE

    cdef inline void lru_append(self, int32_t i) noexcept nogil:
        cdef ft_flow *f = &self.flows[i]
        f.lru_prev = self.lru_tail
        f.lru_next = NONE
        if self.lru_tail != NONE:
            self.flows[self.lru_tail].lru_next = i
        else:
            self.lru_head = i
        self.lru_tail = i

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
        if f.key.proto == 6:   # TCP meter (issue 3); a record that is not the flow's last keeps open holes
            ft_tcp_export(&f.tcp, &r.tcp, reason != FT_END_ACTIVE)
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
        ft_tcp_period_reset(&f.tcp)   # TCP meter (issue 3)

    cdef void expire_idle(self) noexcept nogil:
        """Export flows idle for longer than their timeout, least recently seen first, until the output is
        full. The recency list is ordered by touch_ns, and last_ns - touch_ns < touch_step_ns, so a flow
        leaves at most touch_step_ns (1/64 of the shortest timeout) after its timeout, never before; with
        merged captures whose timestamps go back, it may leave later still. A closed TCP flow (shorter
        timeout) waits behind the least recently seen open flow."""
        cdef ft_flow *f
        cdef uint64_t timeout
        cdef int32_t i
        cdef bint closed
        while self.lru_head != NONE and self.out_n < self.batch_rows:
            i = self.lru_head
            f = &self.flows[i]
            closed = f.key.proto == 6 and tcp_closed(f)
            timeout = self.closed_ns if closed else self.idle_ns
            if self.now_ns <= f.last_ns or self.now_ns - f.last_ns <= timeout:
                return
            self.export(i, FT_END_EOF if closed else FT_END_IDLE)
            self.remove(i)

    cdef int32_t create(self, const ft_key *key, uint32_t h, bint pkt_src_is_a, const ft_pkt *p) noexcept nogil:
        """Insert a new flow for key; evicts the least recently seen flow when the table is full.
        Returns its index, or NONE when no memory could be had (the packet is then counted, not metered)."""
        cdef int32_t i
        cdef ft_flow *f
        cdef uint32_t b
        if self.active >= self.capacity:
            i = self.lru_head
            self.export(i, FT_END_RESOURCES)
            self.remove(i)
            self.flows_evicted += 1
        if <uint32_t> self.active >= self.nbuckets and self.nbuckets < self.max_buckets:
            self.rehash()
        cdef ft_roce_meter *rm = NULL
        if key.qpn != 0:   # RoCE meter (issue 4): initialised by roce_created()
            rm = self.roce_alloc()
            if rm == NULL:
                return NONE
        i = self.slot_alloc()
        if i == NONE:
            if rm != NULL:
                self.roce_release(rm)
            return NONE
        f = &self.flows[i]
        memset(f, 0, sizeof(ft_flow))
        f.roce = rm
        memcpy(&f.key, key, sizeof(ft_key))
        f.hash = h
        b = h & (self.nbuckets - 1)
        f.hnext = self.buckets[b]
        self.buckets[b] = i
        f.lru_prev = NONE
        f.lru_next = NONE
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
        f.touch_ns = p.ts_ns
        f.rec_first_ns = p.ts_ns
        f.rec_last_ns = p.ts_ns
        f.tunnel_type = p.tunnel_type
        f.outer_vlan_id = p.outer_vlan_id
        f.iface = p.iface
        f.tos = p.tos
        ft_tcp_init(&f.tcp)   # TCP meter (issue 3)
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
        if self.lru_head != NONE:
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
            # Move to the tail of the recency list at most once per touch_step_ns: each move costs two
            # cache misses on the neighbours, and a busy flow would pay them at every packet.
            if p.ts_ns >= f.touch_ns + self.touch_step_ns and self.lru_tail != i:
                self.lru_unlink(i)
                self.lru_append(i)
                f.touch_ns = p.ts_ns
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
            ft_tcp_update(&f.tcp, p, d)   # TCP meter (issue 3)
        elif (p.proto == 1 or p.proto == 58) and (p.flags & FT_F_L4) and not f.has_icmp and d == 0:
            f.has_icmp = 1
            f.icmp_type = p.icmp_type
            f.icmp_code = p.icmp_code
        if key.qpn != 0:
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

    def add(self, records, Py_ssize_t start=0, data=None):
        """Meter records[start:] (a numpy array of dpi._reader.PKT_DTYPE) until the output holds batch_rows
        flow records. Returns the index of the first record not yet metered (len(records) when done).
        data: the uint8 array the records' frame_off index into (the reader's batch data); without it the
        RoCE meter cannot read RDMA CM messages and pairs QPs from PSNs only."""
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
        try:
            with nogil:
                done = self.add_c(pkts, start, n)
        finally:
            self.cur_data = NULL
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
            while self.lru_head != NONE and self.out_n < self.batch_rows:
                i = self.lru_head
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
        }


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
