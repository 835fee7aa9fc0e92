/* ft_roce.h: RoCEv2 per-queue-pair loss, congestion and latency meter, on packet time (user space).
 *
 * Every definition is written out for users in docs/roce.md; the comments here say how the code gets there.
 * A RoCE flow is the traffic addressed to one QP (before pairing) or to both QPs of a connection (after
 * pairing, ext/ft_roce_pair.h and the flow table). Direction index d: 0 = packets sent by the flow's src
 * (the requester, the initiator), 1 = sent by dst. struct ft_roce_dir d holds what side d SENDS (its request
 * stream, its responses, its CNPs) and the latencies of ITS requests (the peer's answers end them).
 *
 * IBTA rules the meter follows (IBA 1.4 vol 1 ch. 9, RoCEv2 annex A17):
 * - PSNs are 24 bits; comparisons are serial (ft_psn_diff), so a connection that wraps 2^24 is metered like
 *   any other.
 * - A request packet (SEND, RDMA WRITE, ATOMIC) takes one PSN; an RDMA READ request takes as many PSNs as its
 *   response has packets: ceil(RETH DMA length / path MTU), at least one (9.4.3). Its response packets
 *   carry those PSNs. ACKs carry the PSN of the last request they acknowledge (coalesced: one ACK covers every
 *   earlier PSN, 9.7.5.1.1); a NAK carries the PSN it names.
 * - The path MTU is observed: the payload of every FIRST or MIDDLE packet of a multi-packet message is
 *   exactly the path MTU (9.7.4.1.3.1).
 *
 * Contract: ft_roce_update() is called once per metered packet with FT_F_ROCE set, in capture order, with
 * the packet's direction in the flow. It keeps no pointer beyond the call, allocates nothing, and every loop
 * has a constant bound (FT_ROCE_ACK_RING, FT_ROCE_READ_RING, the 3-chunk bitmap fill, FT_HIST_BUCKETS).
 * Fields of struct ft_pkt are in host order (ft_record.h).
 *
 * State size: sizeof(struct ft_roce_meter) == FT_ROCE_METER_BYTES (static assertion below; docs/roce.md).
 */
#ifndef FT_ROCE_H
#define FT_ROCE_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ft_record.h"
#include "ft_hist.h"

#define FT_ROCE_ACK_RING 8    /* AckReq'd requests timed at once per direction (more in flight: not timed) */
#define FT_ROCE_READ_RING 8   /* READ requests waiting for their response, per direction; with more in
                                 flight the oldest is dropped and its responses are checked for continuity
                                 only, as for a READ whose request was not captured */
#define FT_ROCE_WIN 128       /* request PSNs remembered behind the expected one: tells a retransmission of a
                                 PSN seen before from the first copy of a PSN that was missing */
#define FT_ROCE_PSN_MASK 0x00FFFFFFu
#define FT_ROCE_PAIR_WINDOW 65536 /* an ACK pairs two directions only if it names one of the requester's
                                     last 65536 PSNs (256 MiB at a 4 KiB MTU) */

/* struct ft_key.qpn of a RoCE flow: the addressed QP, tagged so that it never equals the 0 of other flows,
 * with the key endpoint that hosts it (the key's endpoints are sorted by address, not by role). */
#define FT_ROCE_KEY_TAG 0x02000000u
#define FT_ROCE_KEY_AT_B 0x01000000u

/* BTH opcode >> 5 */
#define FT_ROCE_TR_RC 0
#define FT_ROCE_TR_UC 1
#define FT_ROCE_TR_RD 2
#define FT_ROCE_TR_UD 3
#define FT_ROCE_TR_CNP 4
#define FT_ROCE_TR_XRC 5
#define FT_ROCE_TR_NONE 0xFF

/* ft_roce_meter.pairing */
#define FT_ROCE_PAIR_NONE 0 /* one direction: the packets addressed to one QP */
#define FT_ROCE_PAIR_PSN 1  /* inferred: an ACK/READ response matched the outstanding request PSNs */
#define FT_ROCE_PAIR_CM 2   /* proven: RDMA CM REQ and REP named both QPs */

/* ft_roce_meter.role: what the first non-CNP packet said about the QP the key names */
#define FT_ROCE_ROLE_NONE 0      /* only CNPs so far */
#define FT_ROCE_ROLE_RESPONDER 1 /* requests were addressed to it */
#define FT_ROCE_ROLE_REQUESTER 2 /* responses were addressed to it */

#define FT_ROCE_OPCODE_CNP_ 0x81

/* Latency kinds, index of ft_roce_dir.lat / .h */
#define FT_ROCE_LAT_ACK 0      /* AckReq'd SEND/WRITE request -> first ACK or NAK covering its PSN */
#define FT_ROCE_LAT_READ 1     /* READ request -> first response packet of that READ */
#define FT_ROCE_LAT_RECOVERY 2 /* NAK (PSN sequence error or RNR) -> retransmission of the PSN it names */
#define FT_ROCE_NLAT 3

/* Operation table for RC (and UC, which uses its SEND/WRITE rows), indexed by opcode & 0x1f.
 * bits 0-2: class; FIRST: the packet starts a message; LAST: it ends one (ONLY = FIRST | LAST);
 * REQ: takes a request PSN; RESP: answers requests. */
#define FT_OPC_NONE 0
#define FT_OPC_SEND 1
#define FT_OPC_WRITE 2
#define FT_OPC_READ 3
#define FT_OPC_ATOMIC 4
#define FT_OPC_READ_RESP 5
#define FT_OPC_ACK 6
#define FT_OPC_ATOMIC_ACK 7
#define FT_OPC_CLASS 0x07
#define FT_OPC_FIRST 0x08
#define FT_OPC_LAST 0x10
#define FT_OPC_REQ 0x20
#define FT_OPC_RESP 0x40
#define FT_OPC_ONLY (FT_OPC_FIRST | FT_OPC_LAST)

static const uint8_t FT_ROCE_OPINFO[32] = {
    /* 0x00 SEND First .. 0x05 SEND Only with Immediate */
    FT_OPC_REQ | FT_OPC_SEND | FT_OPC_FIRST, FT_OPC_REQ | FT_OPC_SEND, FT_OPC_REQ | FT_OPC_SEND | FT_OPC_LAST,
    FT_OPC_REQ | FT_OPC_SEND | FT_OPC_LAST, FT_OPC_REQ | FT_OPC_SEND | FT_OPC_ONLY,
    FT_OPC_REQ | FT_OPC_SEND | FT_OPC_ONLY,
    /* 0x06 RDMA WRITE First .. 0x0B WRITE Only with Immediate */
    FT_OPC_REQ | FT_OPC_WRITE | FT_OPC_FIRST, FT_OPC_REQ | FT_OPC_WRITE, FT_OPC_REQ | FT_OPC_WRITE | FT_OPC_LAST,
    FT_OPC_REQ | FT_OPC_WRITE | FT_OPC_LAST, FT_OPC_REQ | FT_OPC_WRITE | FT_OPC_ONLY,
    FT_OPC_REQ | FT_OPC_WRITE | FT_OPC_ONLY,
    /* 0x0C RDMA READ Request */
    FT_OPC_REQ | FT_OPC_READ | FT_OPC_ONLY,
    /* 0x0D READ Response First, Middle, Last, Only */
    FT_OPC_RESP | FT_OPC_READ_RESP | FT_OPC_FIRST, FT_OPC_RESP | FT_OPC_READ_RESP,
    FT_OPC_RESP | FT_OPC_READ_RESP | FT_OPC_LAST, FT_OPC_RESP | FT_OPC_READ_RESP | FT_OPC_ONLY,
    /* 0x11 Acknowledge, 0x12 ATOMIC Acknowledge */
    FT_OPC_RESP | FT_OPC_ACK | FT_OPC_ONLY, FT_OPC_RESP | FT_OPC_ATOMIC_ACK | FT_OPC_ONLY,
    /* 0x13 CmpSwap, 0x14 FetchAdd */
    FT_OPC_REQ | FT_OPC_ATOMIC | FT_OPC_ONLY, FT_OPC_REQ | FT_OPC_ATOMIC | FT_OPC_ONLY,
    /* 0x15 reserved (RESYNC is RD only) */
    0,
    /* 0x16 SEND Last with Invalidate, 0x17 SEND Only with Invalidate */
    FT_OPC_REQ | FT_OPC_SEND | FT_OPC_LAST, FT_OPC_REQ | FT_OPC_SEND | FT_OPC_ONLY,
    /* 0x18 .. 0x1F: reserved, FLUSH (0x1C) and ATOMIC WRITE (0x1D) of IBA 1.5 take one request PSN each */
    0, 0, 0, 0, FT_OPC_REQ | FT_OPC_ONLY, FT_OPC_REQ | FT_OPC_ONLY, 0, 0,
};

/* struct ft_roce_dir.st bits */
#define FT_RD_REQ 0x01    /* a request of this side was seen: req_next/req_first/seen valid */
#define FT_RD_NAK 0x02    /* the peer NAKed nak_psn (sequence error or RNR) at nak_ts; not yet resent */
#define FT_RD_CURSOR 0x04 /* rd_cursor valid: inside the response of one of this side's READs */
#define FT_RD_PEND 0x08   /* a READ of this side was sent before the path MTU was known (pend_psn/len) */
#define FT_RD_SPORT 0x10  /* sport valid */
#define FT_RD_REWIND 0x20 /* this side is resending (go-back-N) and has not caught up with req_next yet */

/* Counters of one direction for the current record period (names as in the Arrow columns). */
struct ft_roce_ctr {
    uint64_t payload_bytes;        /* RDMA payload of every packet sent (after headers, pad and ICRC) */
    uint64_t message_bytes;        /* size of the messages started: RETH length (WRITE, READ), SEND payload,
                                      8 per ATOMIC; retransmissions not counted */
    uint32_t psn_gaps;             /* PSN jumps forward: requests, or READ response packets, the probe missed */
    uint32_t psn_missing;          /* PSNs those jumps skipped */
    uint32_t psn_duplicates;       /* retransmissions: a PSN behind the expected one, seen before or asked
                                      for again by the peer (NAK) or part of a go-back-N resend */
    uint32_t psn_out_of_order;     /* a PSN behind the expected one, never seen, not asked for: reordering */
    uint32_t acks;                 /* Acknowledge packets with an ACK syndrome */
    uint32_t nak_psn_seq;          /* NAK PSN sequence error (AETH syndrome 011 00000) */
    uint32_t nak_rnr;              /* RNR NAK (syndrome 001 ttttt) */
    uint32_t nak_invalid_request;  /* NAK invalid request (011 00001) or invalid RD request (011 00100) */
    uint32_t nak_remote_access;    /* NAK remote access error (011 00010) */
    uint32_t nak_remote_operational; /* NAK remote operational error (011 00011) */
    uint32_t cnp_packets;          /* CNPs (BTH opcode 0x81) sent */
    uint32_t ecn_ect_packets;      /* packets sent with ECT(0) or ECT(1) */
    uint32_t ecn_ce_packets;       /* packets sent with CE */
    uint32_t fecn_packets;         /* packets with the BTH FECN bit */
    uint32_t becn_packets;         /* packets with the BTH BECN bit (CNPs set it) */
    uint32_t send_messages;        /* SEND messages started (FIRST or ONLY; every UD SEND) */
    uint32_t write_messages;       /* RDMA WRITE messages started */
    uint32_t read_messages;        /* RDMA READ requests */
    uint32_t atomic_messages;      /* CmpSwap / FetchAdd requests */
    uint32_t _pad;
};

/* One READ request waiting for its response. */
struct ft_roce_read {
    uint32_t psn;   /* first PSN */
    uint32_t npkts; /* PSNs it takes = response packets */
    uint64_t ts;    /* when it was seen; 0 once a response came or when it is a retransmission (not timed) */
};

/* One direction: what side d sends, and the timing of its requests. */
struct ft_roce_dir {
    uint32_t req_next;    /* PSN the next new request of this side should carry */
    uint32_t req_first;   /* first request PSN seen */
    uint64_t seen[2];     /* bit (psn % 128): request PSN psn in [req_next - 128, req_next) was seen */
    uint32_t nak_psn;     /* PSN the peer's pending NAK names */
    uint32_t rd_cursor;   /* next READ response PSN expected from the peer */
    uint64_t nak_ts;
    uint32_t pend_psn;    /* READ sent before the path MTU was known: first PSN and DMA length */
    uint32_t pend_len;
    uint32_t ack_psn[FT_ROCE_ACK_RING]; /* AckReq'd requests waiting for an ACK, oldest at ack_head */
    uint64_t ack_ts[FT_ROCE_ACK_RING];
    struct ft_roce_read rd[FT_ROCE_READ_RING]; /* READs waiting for their response, oldest at rd_head */
    uint16_t sport;       /* UDP source port of the first packet this side sent */
    uint8_t st;           /* FT_RD_* */
    uint8_t ack_head, ack_n, rd_head, rd_n, _pad;
    struct ft_roce_ctr c;
    struct ft_stat lat[FT_ROCE_NLAT];
    struct ft_hist h[FT_ROCE_NLAT];
    uint32_t _pad2;
};

/* Per-flow RoCE state, embedded in struct ft_flow. Stream state persists across active-timeout periods;
 * counters, summaries and sketches restart (ft_roce_period_reset). */
struct ft_roce_meter {
    struct ft_roce_dir dir[2];
    uint32_t partner_qpn; /* once paired: the other QP, tagged like ft_key.qpn */
    uint16_t pmtu;        /* path MTU observed (bytes); 0 = not yet known */
    uint16_t pair_tries;  /* response packets that looked for a partner (PSN pairing) */
    uint8_t transport;    /* FT_ROCE_TR_* of the first non-CNP packet; FT_ROCE_TR_NONE before */
    uint8_t pairing;      /* FT_ROCE_PAIR_* */
    uint8_t role;         /* FT_ROCE_ROLE_* of the QP the flow key names */
    uint8_t cm_transport; /* transport the CM REQ announced (0 RC, 1 UC, 2 RD), when pairing == CM */
    uint16_t partner_vlan; /* once paired: the VLAN of the partner's directional key */
    uint16_t _pad;
};

#define FT_ROCE_METER_BYTES 1952
_Static_assert(sizeof(struct ft_roce_meter) == FT_ROCE_METER_BYTES,
               "update FT_ROCE_METER_BYTES and docs/roce.md");

/* One latency of an exported record: the exact summary, two percentiles and the raw sketch (the batch
 * builder turns it into the histogram column: counts << halvings, zero buckets at both ends trimmed). */
struct ft_roce_lat_out {
    struct ft_stat s;
    uint64_t p50_ns;
    uint64_t p99_ns;
    struct ft_hist h;
    uint8_t _pad[4];
};

struct ft_roce_dir_out {
    struct ft_roce_ctr c;
    struct ft_roce_lat_out lat[FT_ROCE_NLAT];
};

/* What a RoCE flow leaves in its record (struct ft_flowrec.roce); all zero for other flows. */
struct ft_roce_out {
    struct ft_roce_dir_out d[2];  /* 0 = src, 1 = dst */
    uint32_t src_qpn;             /* src's QP (valid when qpn_valid & 1) */
    uint32_t dst_qpn;             /* dst's QP (valid when qpn_valid & 2) */
    uint16_t pmtu;
    uint8_t is_roce;
    uint8_t transport;            /* FT_ROCE_TR_*, FT_ROCE_TR_NONE when only CNPs were seen */
    uint8_t pairing;
    uint8_t qpn_valid;
    uint8_t _pad[6];
};

/* ---- PSN arithmetic (24-bit serial numbers) ---- */

/* Returns a - b as a signed distance in [-2^23, 2^23). */
static inline int32_t ft_psn_diff(uint32_t a, uint32_t b)
{
    return (int32_t)((a - b) << 8) >> 8;
}

/* Returns the PSNs an RDMA READ of `len` bytes takes at path MTU `pmtu` (a power of two): ceil(len/pmtu),
 * at least 1. */
static inline uint32_t ft_roce_read_pkts(uint32_t len, uint32_t pmtu)
{
    uint64_t n;
    if (len == 0 || pmtu == 0)
        return 1;
    n = ((uint64_t)len + pmtu - 1) / pmtu;
    return n > FT_ROCE_PSN_MASK ? FT_ROCE_PSN_MASK : (uint32_t)n;
}

/* Sets (val 1) or clears (0) the bits of PSNs [start, start + len) in a 128-bit ring indexed by psn % 128;
 * only the last 128 PSNs of the range matter, so longer ranges are clipped. At most 3 word operations. */
static inline void ft_roce_bits(uint64_t w[2], uint32_t start, uint32_t len, int val)
{
    int it;
    if (len > FT_ROCE_WIN) {
        start += len - FT_ROCE_WIN;
        len = FT_ROCE_WIN;
    }
    for (it = 0; it < 3 && len > 0; it++) {
        uint32_t pos = start & (FT_ROCE_WIN - 1), word = pos >> 6, off = pos & 63, n = 64 - off;
        uint64_t mask;
        if (n > len)
            n = len;
        mask = n == 64 ? ~0ULL : (((1ULL << n) - 1) << off);
        if (val)
            w[word] |= mask;
        else
            w[word] &= ~mask;
        start += n;
        len -= n;
    }
}

/* Returns the bit of psn in the 128-bit ring (meaningful only for the last 128 PSNs). */
static inline int ft_roce_bit(const uint64_t w[2], uint32_t psn)
{
    uint32_t pos = psn & (FT_ROCE_WIN - 1);
    return (int)((w[pos >> 6] >> (pos & 63)) & 1);
}

/* ---- init, reset ---- */

/* Zeroes m; every field's zero is its "nothing seen" state except the transport. */
static inline void ft_roce_init(struct ft_roce_meter *m)
{
    memset(m, 0, sizeof(*m));
    m->transport = FT_ROCE_TR_NONE;
}

/* Restarts counters, summaries and sketches for a new record period (active timeout). PSN, ring, NAK and
 * pairing state persist, so the next period goes on without false gaps. */
static inline void ft_roce_period_reset(struct ft_roce_meter *m)
{
    int d;
    for (d = 0; d < 2; d++) {
        memset(&m->dir[d].c, 0, sizeof(m->dir[d].c));
        memset(m->dir[d].lat, 0, sizeof(m->dir[d].lat));
    }
}

/* Exchanges the two directions (the flow's src turned out to be the other endpoint). */
static inline void ft_roce_swap_dirs(struct ft_roce_meter *m)
{
    struct ft_roce_dir t = m->dir[0];
    m->dir[0] = m->dir[1];
    m->dir[1] = t;
}

/* ---- timed requests ---- */

/* Starts timing an AckReq'd request of side s (PSN psn, seen at ts), unless FT_ROCE_ACK_RING are timed. */
static inline void ft_roce_ack_push(struct ft_roce_dir *s, uint32_t psn, uint64_t ts)
{
    int i;
    if (s->ack_n >= FT_ROCE_ACK_RING)
        return; /* more AckReq'd requests in flight than the ring holds: this one is not timed */
    i = (s->ack_head + s->ack_n) % FT_ROCE_ACK_RING;
    s->ack_psn[i] = psn;
    s->ack_ts[i] = ts;
    s->ack_n++;
}

/* Forgets timed requests at or after psn (they are being resent: their ACK would time the resend). */
static inline void ft_roce_ack_drop_from(struct ft_roce_dir *s, uint32_t psn)
{
    int k;
    for (k = 0; k < FT_ROCE_ACK_RING && s->ack_n > 0; k++) {
        int last = (s->ack_head + s->ack_n - 1) % FT_ROCE_ACK_RING;
        if (ft_psn_diff(s->ack_psn[last], psn) < 0)
            break;
        s->ack_n--;
    }
}

/* The peer acknowledged (or NAKed) every PSN up to psn: ends the timing of the requests it covers. */
static inline void ft_roce_ack_cover(struct ft_roce_dir *s, uint32_t psn, uint64_t now)
{
    int k;
    for (k = 0; k < FT_ROCE_ACK_RING && s->ack_n > 0; k++) {
        int i = s->ack_head;
        if (ft_psn_diff(s->ack_psn[i], psn) > 0)
            break;
        if (now >= s->ack_ts[i])
            ft_lat_add(&s->h[FT_ROCE_LAT_ACK], &s->lat[FT_ROCE_LAT_ACK], now - s->ack_ts[i]);
        s->ack_head = (uint8_t)((s->ack_head + 1) % FT_ROCE_ACK_RING);
        s->ack_n--;
    }
}

/* Records a READ request of side s: psn, PSNs it takes, time (0: not timed). A resent READ (retrans) first
 * cuts the waiting READs back to psn: the responder answers the resent one instead. */
static inline void ft_roce_read_push(struct ft_roce_dir *s, uint32_t psn, uint32_t npkts, uint64_t ts,
                                     int retrans)
{
    int k, i;
    if (retrans) {
        for (k = 0; k < FT_ROCE_READ_RING && s->rd_n > 0; k++) {
            struct ft_roce_read *e = &s->rd[(s->rd_head + s->rd_n - 1) % FT_ROCE_READ_RING];
            int32_t off = ft_psn_diff(psn, e->psn);
            if (off <= 0) {
                s->rd_n--;
                continue;
            }
            if ((uint32_t)off < e->npkts)
                e->npkts = (uint32_t)off;
            break;
        }
        if (s->rd_n == 0)
            s->st &= (uint8_t)~FT_RD_CURSOR;
    }
    if (s->rd_n >= FT_ROCE_READ_RING) { /* oldest dropped: its responses are then checked as unseen */
        s->rd_head = (uint8_t)((s->rd_head + 1) % FT_ROCE_READ_RING);
        s->rd_n--;
        s->st &= (uint8_t)~FT_RD_CURSOR;
    }
    i = (s->rd_head + s->rd_n) % FT_ROCE_READ_RING;
    s->rd[i].psn = psn;
    s->rd[i].npkts = npkts;
    s->rd[i].ts = ts;
    s->rd_n++;
}

/* ---- path MTU ---- */

/* Returns 1 for the five RoCE path MTUs. */
static inline int ft_roce_valid_pmtu(uint32_t x)
{
    return x == 256 || x == 512 || x == 1024 || x == 2048 || x == 4096;
}

/* A READ of side s went out before the path MTU was known and was booked at 4096 bytes a packet. Now that
 * the MTU is `pmtu`, rebook it, if no request followed it yet (else the next request already settled it). */
static inline void ft_roce_pend_rebook(struct ft_roce_dir *s, uint32_t pmtu)
{
    uint32_t was = ft_roce_read_pkts(s->pend_len, 4096), now = ft_roce_read_pkts(s->pend_len, pmtu);
    int k;
    s->st &= (uint8_t)~FT_RD_PEND;
    if (((s->pend_psn + was) & FT_ROCE_PSN_MASK) != s->req_next)
        return;
    s->req_next = (s->pend_psn + now) & FT_ROCE_PSN_MASK;
    ft_roce_bits(s->seen, s->pend_psn, now, 1);
    for (k = 0; k < s->rd_n && k < FT_ROCE_READ_RING; k++) {
        struct ft_roce_read *e = &s->rd[(s->rd_head + k) % FT_ROCE_READ_RING];
        if (e->psn == s->pend_psn)
            e->npkts = now;
    }
}

/* The next request of side s carries psn while a READ waits for the MTU: the distance between the two
 * PSNs says how many PSNs the READ took, so it names the MTU when exactly one of 256..4096 fits. Returns
 * the MTU learned, or 0. Then the READ is rebooked as above (or left at 4096 when nothing fits). */
static inline uint32_t ft_roce_pend_settle(struct ft_roce_dir *s, uint32_t psn)
{
    uint32_t m, found = 0, fits = 0, took = (psn - s->pend_psn) & FT_ROCE_PSN_MASK;
    for (m = 256; m <= 4096; m <<= 1) {
        if (ft_roce_read_pkts(s->pend_len, m) == took) {
            found = found ? found : m;
            fits++;
        }
    }
    if (found) {
        ft_roce_pend_rebook(s, found);
        return fits == 1 ? found : 0;
    }
    s->st &= (uint8_t)~FT_RD_PEND;
    return 0;
}

/* Records the path MTU shown by a FIRST/MIDDLE payload and rebooks READs that waited for it. */
static inline void ft_roce_learn_pmtu(struct ft_roce_meter *m, uint32_t pmtu)
{
    int d;
    if (m->pmtu == pmtu)
        return;
    m->pmtu = (uint16_t)pmtu;
    for (d = 0; d < 2; d++)
        if (m->dir[d].st & FT_RD_PEND)
            ft_roce_pend_rebook(&m->dir[d], pmtu);
}

/* ---- packets ---- */

/* A request (SEND, WRITE, READ, ATOMIC) sent by side me. */
static inline void ft_roce_request(struct ft_roce_meter *m, struct ft_roce_dir *me, const struct ft_pkt *p,
                                   uint8_t info)
{
    uint32_t psn = p->roce_psn & FT_ROCE_PSN_MASK, consumed = 1, cls = info & FT_OPC_CLASS;
    uint64_t now = p->ts_ns;
    int32_t dist;
    int retrans = 0;

    if (cls == FT_OPC_READ) {
        consumed = ft_roce_read_pkts(p->roce_reth_len, m->pmtu ? m->pmtu : 4096);
    }
    if (me->st & FT_RD_PEND) {
        uint32_t learned = ft_roce_pend_settle(me, psn);
        if (learned) {
            m->pmtu = (uint16_t)learned;
            if (cls == FT_OPC_READ)
                consumed = ft_roce_read_pkts(p->roce_reth_len, learned);
        }
    }
    if (!(me->st & FT_RD_REQ)) {
        me->st |= FT_RD_REQ;
        me->req_first = psn;
        me->req_next = psn;
        me->seen[0] = me->seen[1] = 0;
    }
    dist = ft_psn_diff(psn, me->req_next);
    if (dist >= 0) {
        if (dist > 0) { /* the probe never saw PSNs req_next .. psn - 1 */
            me->c.psn_gaps++;
            me->c.psn_missing += (uint32_t)dist;
            ft_roce_bits(me->seen, me->req_next, (uint32_t)dist, 0);
        }
        ft_roce_bits(me->seen, psn, consumed, 1);
        me->req_next = (psn + consumed) & FT_ROCE_PSN_MASK;
        me->st &= (uint8_t)~FT_RD_REWIND;
        if (cls == FT_OPC_READ && m->pmtu == 0 && ft_roce_read_pkts(p->roce_reth_len, 256) > 1) {
            /* booked at 4096 bytes a packet until the MTU shows (the next request, or a FIRST/MIDDLE) */
            me->st |= FT_RD_PEND;
            me->pend_psn = psn;
            me->pend_len = p->roce_reth_len;
        }
    } else {
        uint32_t back = (uint32_t)(-dist);
        int seen = back > FT_ROCE_WIN || ft_roce_bit(me->seen, psn);
        if (seen || (me->st & FT_RD_REWIND) || ((me->st & FT_RD_NAK) && psn == me->nak_psn)) {
            me->c.psn_duplicates++;
            retrans = 1;
            me->st |= FT_RD_REWIND;
        } else {
            me->c.psn_out_of_order++;
        }
        ft_roce_bits(me->seen, psn, consumed < back ? consumed : back, 1);
        ft_roce_ack_drop_from(me, psn);
    }
    if ((me->st & FT_RD_NAK) && psn == me->nak_psn) {
        if (now >= me->nak_ts)
            ft_lat_add(&me->h[FT_ROCE_LAT_RECOVERY], &me->lat[FT_ROCE_LAT_RECOVERY], now - me->nak_ts);
        me->st &= (uint8_t)~FT_RD_NAK;
    }
    if (!retrans) {
        if (info & FT_OPC_FIRST) {
            switch (cls) {
            case FT_OPC_SEND:
                me->c.send_messages++;
                break;
            case FT_OPC_WRITE:
                me->c.write_messages++;
                me->c.message_bytes += p->roce_reth_len;
                break;
            case FT_OPC_READ:
                me->c.read_messages++;
                me->c.message_bytes += p->roce_reth_len;
                break;
            case FT_OPC_ATOMIC:
                me->c.atomic_messages++;
                me->c.message_bytes += 8;
                break;
            }
        }
        if (cls == FT_OPC_SEND)
            me->c.message_bytes += p->roce_payload_len;
        if ((p->roce_bth_flags & FT_BTH_ACKREQ) && (cls == FT_OPC_SEND || cls == FT_OPC_WRITE))
            ft_roce_ack_push(me, psn, now);
    }
    if (cls == FT_OPC_READ)
        ft_roce_read_push(me, psn, consumed, retrans ? 0 : now, retrans);
}

/* A READ response packet sent by side me, answering a READ of side rq. */
static inline void ft_roce_read_response(struct ft_roce_dir *me, struct ft_roce_dir *rq, const struct ft_pkt *p,
                                         uint8_t info)
{
    uint32_t psn = p->roce_psn & FT_ROCE_PSN_MASK, expected;
    int k, found = -1;
    int32_t dist;
    struct ft_roce_read *e;

    for (k = 0; k < FT_ROCE_READ_RING && k < rq->rd_n; k++) {
        e = &rq->rd[(rq->rd_head + k) % FT_ROCE_READ_RING];
        dist = ft_psn_diff(psn, e->psn);
        if (dist >= 0 && (uint32_t)dist < e->npkts) {
            found = k;
            break;
        }
    }
    if (found < 0) {
        /* the READ request was not seen (capture began later, or it was dropped): only the continuity of
         * the response packets can be checked */
        if ((rq->st & FT_RD_CURSOR) && !(info & FT_OPC_FIRST)) {
            dist = ft_psn_diff(psn, rq->rd_cursor);
            if (dist > 0) {
                me->c.psn_gaps++;
                me->c.psn_missing += (uint32_t)dist;
            } else if (dist < 0) {
                me->c.psn_duplicates++;
                return;
            }
        }
        if (info & FT_OPC_LAST) {
            rq->st &= (uint8_t)~FT_RD_CURSOR;
        } else {
            rq->rd_cursor = (psn + 1) & FT_ROCE_PSN_MASK;
            rq->st |= FT_RD_CURSOR;
        }
        return;
    }
    /* READs answered in order: older ones still waiting lost the rest of their response */
    for (k = 0; k < found; k++) {
        uint32_t from;
        int32_t rest;
        e = &rq->rd[rq->rd_head];
        from = (k == 0 && (rq->st & FT_RD_CURSOR)) ? rq->rd_cursor : e->psn;
        rest = ft_psn_diff((e->psn + e->npkts) & FT_ROCE_PSN_MASK, from);
        if (rest > 0) {
            me->c.psn_gaps++;
            me->c.psn_missing += (uint32_t)rest;
        }
        rq->rd_head = (uint8_t)((rq->rd_head + 1) % FT_ROCE_READ_RING);
        rq->rd_n--;
        rq->st &= (uint8_t)~FT_RD_CURSOR;
    }
    e = &rq->rd[rq->rd_head];
    expected = (rq->st & FT_RD_CURSOR) ? rq->rd_cursor : e->psn;
    dist = ft_psn_diff(psn, expected);
    if (dist < 0) {
        me->c.psn_duplicates++;
        return;
    }
    if (dist > 0) {
        me->c.psn_gaps++;
        me->c.psn_missing += (uint32_t)dist;
    }
    if (e->ts) {
        if (p->ts_ns >= e->ts)
            ft_lat_add(&rq->h[FT_ROCE_LAT_READ], &rq->lat[FT_ROCE_LAT_READ], p->ts_ns - e->ts);
        e->ts = 0;
    }
    if (((psn + 1) & FT_ROCE_PSN_MASK) == ((e->psn + e->npkts) & FT_ROCE_PSN_MASK) || (info & FT_OPC_LAST)) {
        rq->rd_head = (uint8_t)((rq->rd_head + 1) % FT_ROCE_READ_RING);
        rq->rd_n--;
        rq->st &= (uint8_t)~FT_RD_CURSOR;
    } else {
        rq->rd_cursor = (psn + 1) & FT_ROCE_PSN_MASK;
        rq->st |= FT_RD_CURSOR;
    }
}

/* A response (ACK/NAK, ATOMIC ACK, READ response) sent by side me about the requests of side rq. */
static inline void ft_roce_response(struct ft_roce_dir *me, struct ft_roce_dir *rq, const struct ft_pkt *p,
                                    uint8_t info)
{
    uint32_t psn = p->roce_psn & FT_ROCE_PSN_MASK, cls = info & FT_OPC_CLASS;
    uint8_t syn = p->roce_aeth_syndrome, kind = syn >> 5, code = syn & 0x1F;

    if (p->roce_ext & FT_ROCE_AETH) {
        if (cls == FT_OPC_ACK) {
            if (kind == 0)
                me->c.acks++;
            else if (kind == 1)
                me->c.nak_rnr++;
            else if (kind == 3) {
                if (code == 0)
                    me->c.nak_psn_seq++;
                else if (code == 1 || code == 4)
                    me->c.nak_invalid_request++;
                else if (code == 2)
                    me->c.nak_remote_access++;
                else if (code == 3)
                    me->c.nak_remote_operational++;
            }
        }
        if (kind == 0 || kind == 1 || kind == 3)
            ft_roce_ack_cover(rq, psn, p->ts_ns);
        if (kind == 1 || (kind == 3 && code == 0)) {
            /* the requester will resend psn: time it (the first NAK naming a PSN starts the clock) */
            if (!((rq->st & FT_RD_NAK) && rq->nak_psn == psn)) {
                rq->nak_psn = psn;
                rq->nak_ts = p->ts_ns;
                rq->st |= FT_RD_NAK;
            }
        }
    }
    if (cls == FT_OPC_READ_RESP)
        ft_roce_read_response(me, rq, p, info);
}

/* Returns the FT_ROCE_ROLE_* a packet gives the QP it addresses: requests make it a responder, responses a
 * requester, CNPs and unknown operations say nothing. */
static inline uint8_t ft_roce_pkt_role(const struct ft_pkt *p)
{
    uint8_t op = p->roce_opcode, tr = op >> 5, info;
    if (op == FT_ROCE_OPCODE_CNP_ || (tr != FT_ROCE_TR_RC && tr != FT_ROCE_TR_UC && tr != FT_ROCE_TR_UD &&
                                      tr != FT_ROCE_TR_XRC))
        return FT_ROCE_ROLE_NONE;
    if (tr == FT_ROCE_TR_UD)
        return FT_ROCE_ROLE_RESPONDER;
    info = FT_ROCE_OPINFO[op & 0x1F];
    if (info & FT_OPC_RESP)
        return FT_ROCE_ROLE_REQUESTER;
    return (info & FT_OPC_REQ) ? FT_ROCE_ROLE_RESPONDER : FT_ROCE_ROLE_NONE;
}

/* Meters one RoCE packet (FT_F_ROCE set) sent by side d (0 = src) of the flow. */
static inline void ft_roce_update(struct ft_roce_meter *m, int d, const struct ft_pkt *p)
{
    struct ft_roce_dir *me = &m->dir[d & 1], *pe = &m->dir[(d & 1) ^ 1];
    uint8_t op = p->roce_opcode, ecn = p->tos & 3, tr, info, cls;

    if (!(me->st & FT_RD_SPORT)) {
        me->sport = p->sport;
        me->st |= FT_RD_SPORT;
    }
    if (ecn == 1 || ecn == 2)
        me->c.ecn_ect_packets++;
    else if (ecn == 3)
        me->c.ecn_ce_packets++;
    if (p->roce_bth_flags & FT_BTH_FECN)
        me->c.fecn_packets++;
    if (p->roce_bth_flags & FT_BTH_BECN)
        me->c.becn_packets++;
    me->c.payload_bytes += p->roce_payload_len;
    if (op == FT_ROCE_OPCODE_CNP_) {
        me->c.cnp_packets++;
        return;
    }
    tr = op >> 5;
    if (m->transport == FT_ROCE_TR_NONE)
        m->transport = tr;
    if (m->role == FT_ROCE_ROLE_NONE)
        m->role = ft_roce_pkt_role(p);
    if (tr == FT_ROCE_TR_UD) {
        /* one QP hears many: PSNs of different senders interleave, so only messages are counted */
        me->c.send_messages++;
        me->c.message_bytes += p->roce_payload_len;
        return;
    }
    if (tr != FT_ROCE_TR_RC && tr != FT_ROCE_TR_UC)
        return; /* RD, XRC, vendor opcodes: volume and congestion only (docs/roce.md) */
    info = FT_ROCE_OPINFO[op & 0x1F];
    if (tr == FT_ROCE_TR_UC && (op & 0x1F) > 0x0B)
        return; /* UC has SEND and RDMA WRITE only */
    cls = info & FT_OPC_CLASS;
    if (!(info & FT_OPC_LAST) && (cls == FT_OPC_SEND || cls == FT_OPC_WRITE || cls == FT_OPC_READ_RESP) &&
        ft_roce_valid_pmtu(p->roce_payload_len))
        ft_roce_learn_pmtu(m, p->roce_payload_len);
    if (info & FT_OPC_REQ)
        ft_roce_request(m, me, p, info);
    else if (info & FT_OPC_RESP)
        ft_roce_response(me, pe, p, info);
}

/* Pairing: the flow v (the other direction of the connection) is merged into s. Its direction dv becomes
 * s's direction map[dv] (-1: v never sent in dv). A directional flow holds the packets of one sender only,
 * so the direction taken over is empty in s; s keeps its own pairing fields, and learns v's path MTU and
 * transport when it had none. */
static inline void ft_roce_merge(struct ft_roce_meter *s, const struct ft_roce_meter *v, const int map[2])
{
    int dv;
    for (dv = 0; dv < 2; dv++)
        if (map[dv] >= 0)
            s->dir[map[dv] & 1] = v->dir[dv];
    if (s->pmtu == 0)
        s->pmtu = v->pmtu;
    if (s->transport == FT_ROCE_TR_NONE)
        s->transport = v->transport;
    if (s->role == FT_ROCE_ROLE_NONE)
        s->role = v->role;
}

/* Returns 1 when response packet p (addressed to the requester, which is side dreq of candidate flow m)
 * names a PSN side dreq has used recently: a READ response inside one of its waiting READs, or an ACK/NAK
 * among its last FT_ROCE_PAIR_WINDOW request PSNs. */
static inline int ft_roce_psn_matches(const struct ft_roce_meter *m, int dreq, const struct ft_pkt *p)
{
    const struct ft_roce_dir *s = &m->dir[dreq & 1];
    uint32_t psn = p->roce_psn & FT_ROCE_PSN_MASK, info;
    int32_t back, k;
    if (!(s->st & FT_RD_REQ))
        return 0;
    info = FT_ROCE_OPINFO[p->roce_opcode & 0x1F];
    if ((info & FT_OPC_CLASS) == FT_OPC_READ_RESP) {
        for (k = 0; k < FT_ROCE_READ_RING && k < s->rd_n; k++) {
            const struct ft_roce_read *e = &s->rd[(s->rd_head + k) % FT_ROCE_READ_RING];
            int32_t off = ft_psn_diff(psn, e->psn);
            if (off >= 0 && (uint32_t)off < e->npkts)
                return 1;
        }
        return 0;
    }
    back = ft_psn_diff(s->req_next, psn);
    return back >= 0 && back <= FT_ROCE_PAIR_WINDOW && ft_psn_diff(psn, s->req_first) >= 0;
}

/* Export: fills the RoCE part of a record. key_qpn is the flow key's tagged QPN, qp_at_src says whether
 * that QP belongs to the flow's src. */
static inline void ft_roce_export(const struct ft_roce_meter *m, struct ft_roce_out *o, uint32_t key_qpn,
                                  int qp_at_src)
{
    int d, l;
    uint32_t q = key_qpn & FT_ROCE_PSN_MASK, partner = m->partner_qpn & FT_ROCE_PSN_MASK;
    o->is_roce = 1;
    o->transport = m->transport;
    o->pairing = m->pairing;
    o->pmtu = m->pmtu;
    if (qp_at_src) {
        o->src_qpn = q;
        o->qpn_valid = 1;
        if (m->pairing != FT_ROCE_PAIR_NONE) {
            o->dst_qpn = partner;
            o->qpn_valid |= 2;
        }
    } else {
        o->dst_qpn = q;
        o->qpn_valid = 2;
        if (m->pairing != FT_ROCE_PAIR_NONE) {
            o->src_qpn = partner;
            o->qpn_valid |= 1;
        }
    }
    for (d = 0; d < 2; d++) {
        const struct ft_roce_dir *s = &m->dir[d];
        o->d[d].c = s->c;
        for (l = 0; l < FT_ROCE_NLAT; l++) {
            struct ft_roce_lat_out *lo = &o->d[d].lat[l];
            lo->s = s->lat[l];
            if (s->lat[l].n) {
                lo->h = s->h[l];
                static const uint8_t pct[2] = {50, 99};
                uint64_t q[2];
                ft_hist_quantiles(&s->h[l], &s->lat[l], pct, 2, q);
                lo->p50_ns = q[0];
                lo->p99_ns = q[1];
            }
        }
    }
}

/* ---- RDMA CM (IBA 1.4 vol 1 ch. 12) over RoCEv2: MADs carried by UD SEND Only packets to QP1 ---- */

#define FT_ROCE_CM_REQ 1
#define FT_ROCE_CM_REP 2

struct ft_roce_cm {
    uint32_t local_comm_id;
    uint32_t remote_comm_id; /* REP only */
    uint32_t local_qpn;
    uint32_t start_psn;
    uint8_t transport;       /* REQ only: Transport Service Type, 0 RC, 1 UC, 2 RD */
    uint8_t pmtu_code;       /* REQ only: Path Packet Payload MTU, 1 = 256 .. 5 = 4096 */
};

/* Big-endian 24- and 32-bit loads; the caller has checked the bytes are there. Return host order. */
static inline uint32_t ft_roce_be24(const uint8_t *q) { return ((uint32_t)q[0] << 16) | ((uint32_t)q[1] << 8) | q[2]; }
static inline uint32_t ft_roce_be32(const uint8_t *q)
{
    return ((uint32_t)q[0] << 24) | ((uint32_t)q[1] << 16) | ((uint32_t)q[2] << 8) | q[3];
}

/* Parses the MAD at mad[0..len) (the payload after BTH and DETH of a UD packet to QP1). Returns
 * FT_ROCE_CM_REQ or FT_ROCE_CM_REP with *out filled (host order), or 0 when it is neither or too short.
 * MAD common header (24 bytes): base version 1, management class 0x07 (communication management), class
 * version 2, method, status, class specific, transaction id, attribute id at 16 (REQ 0x0010, REP 0x0013).
 * CM REQ data (offsets from the MAD start): local communication id 24, local QPN 56 (3 bytes), byte 67 =
 * remote CM response timeout(5) | transport service type(2) | end-to-end flow control(1), starting PSN 68,
 * byte 74 = path MTU(4) | RDC exists(1) | RNR retry count(3). CM REP: local communication id 24, remote
 * communication id 28, local QPN 36, starting PSN 44. (Checked against tshark's CM dissector.) */
static inline int ft_roce_cm_parse(const uint8_t *mad, uint32_t len, struct ft_roce_cm *out)
{
    uint16_t attr;
    if (len < 24 || mad[0] != 1 || mad[1] != 0x07)
        return 0;
    attr = (uint16_t)((mad[16] << 8) | mad[17]);
    memset(out, 0, sizeof(*out));
    if (attr == 0x0010) {
        if (len < 75)
            return 0;
        out->local_comm_id = ft_roce_be32(mad + 24);
        out->local_qpn = ft_roce_be24(mad + 56);
        out->transport = (mad[67] >> 1) & 0x03;
        out->start_psn = ft_roce_be24(mad + 68);
        out->pmtu_code = mad[74] >> 4;
        return FT_ROCE_CM_REQ;
    }
    if (attr == 0x0013) {
        if (len < 47)
            return 0;
        out->local_comm_id = ft_roce_be32(mad + 24);
        out->remote_comm_id = ft_roce_be32(mad + 28);
        out->local_qpn = ft_roce_be24(mad + 36);
        out->start_psn = ft_roce_be24(mad + 44);
        return FT_ROCE_CM_REP;
    }
    return 0;
}

/* ---- record field table (the numpy mirror of struct ft_roce_out, names as the Arrow columns use) ---- */

struct ft_roce_field { const char *name; size_t offset; const char *fmt; };
#define FT_ROF(n, m, f) { n, offsetof(struct ft_roce_out, m), f }
#define FT_ROF_DIR(D, S) \
    FT_ROF("roce_" S "_payload_bytes", d[D].c.payload_bytes, "<u8"), \
    FT_ROF("roce_" S "_message_bytes", d[D].c.message_bytes, "<u8"), \
    FT_ROF("roce_" S "_psn_gaps", d[D].c.psn_gaps, "<u4"), \
    FT_ROF("roce_" S "_psn_missing", d[D].c.psn_missing, "<u4"), \
    FT_ROF("roce_" S "_psn_duplicates", d[D].c.psn_duplicates, "<u4"), \
    FT_ROF("roce_" S "_psn_out_of_order", d[D].c.psn_out_of_order, "<u4"), \
    FT_ROF("roce_" S "_acks", d[D].c.acks, "<u4"), \
    FT_ROF("roce_" S "_nak_psn_seq_err", d[D].c.nak_psn_seq, "<u4"), \
    FT_ROF("roce_" S "_nak_rnr", d[D].c.nak_rnr, "<u4"), \
    FT_ROF("roce_" S "_nak_invalid_request", d[D].c.nak_invalid_request, "<u4"), \
    FT_ROF("roce_" S "_nak_remote_access", d[D].c.nak_remote_access, "<u4"), \
    FT_ROF("roce_" S "_nak_remote_operational", d[D].c.nak_remote_operational, "<u4"), \
    FT_ROF("roce_" S "_cnp_packets", d[D].c.cnp_packets, "<u4"), \
    FT_ROF("roce_" S "_ecn_ect_packets", d[D].c.ecn_ect_packets, "<u4"), \
    FT_ROF("roce_" S "_ecn_ce_packets", d[D].c.ecn_ce_packets, "<u4"), \
    FT_ROF("roce_" S "_fecn_packets", d[D].c.fecn_packets, "<u4"), \
    FT_ROF("roce_" S "_becn_packets", d[D].c.becn_packets, "<u4"), \
    FT_ROF("roce_" S "_send_messages", d[D].c.send_messages, "<u4"), \
    FT_ROF("roce_" S "_write_messages", d[D].c.write_messages, "<u4"), \
    FT_ROF("roce_" S "_read_messages", d[D].c.read_messages, "<u4"), \
    FT_ROF("roce_" S "_atomic_messages", d[D].c.atomic_messages, "<u4"), \
    FT_ROF_LAT(D, S, 0, "ack_latency"), FT_ROF_LAT(D, S, 1, "read_latency"), \
    FT_ROF_LAT(D, S, 2, "nak_recovery")
#define FT_ROF_LAT(D, S, L, N) \
    FT_ROF("roce_" S "_" N "_samples", d[D].lat[L].s.n, "<u4"), \
    FT_ROF("roce_" S "_" N "_sum_ns", d[D].lat[L].s.sum_ns, "<u8"), \
    FT_ROF("roce_" S "_" N "_min_ns", d[D].lat[L].s.min_ns, "<u8"), \
    FT_ROF("roce_" S "_" N "_max_ns", d[D].lat[L].s.max_ns, "<u8"), \
    FT_ROF("roce_" S "_" N "_p50_ns", d[D].lat[L].p50_ns, "<u8"), \
    FT_ROF("roce_" S "_" N "_p99_ns", d[D].lat[L].p99_ns, "<u8"), \
    FT_ROF("roce_" S "_" N "_hist_counts", d[D].lat[L].h.count, "(80,)<u2"), \
    FT_ROF("roce_" S "_" N "_hist_base", d[D].lat[L].h.base, "<i2"), \
    FT_ROF("roce_" S "_" N "_hist_halvings", d[D].lat[L].h.halvings, "u1"), \
    FT_ROF("roce_" S "_" N "_hist_collapsed", d[D].lat[L].h.collapsed, "u1")

static const struct ft_roce_field FT_ROCE_OUT_FIELDS[] = {
    FT_ROF("roce_is_roce", is_roce, "u1"), FT_ROF("roce_transport_code", transport, "u1"),
    FT_ROF("roce_pairing_code", pairing, "u1"), FT_ROF("roce_qpn_valid", qpn_valid, "u1"),
    FT_ROF("roce_src_qpn", src_qpn, "<u4"), FT_ROF("roce_dst_qpn", dst_qpn, "<u4"),
    FT_ROF("roce_path_mtu", pmtu, "<u2"),
    FT_ROF_DIR(0, "src"), FT_ROF_DIR(1, "dst"),
};
static const int FT_ROCE_OUT_NFIELDS = sizeof(FT_ROCE_OUT_FIELDS) / sizeof(FT_ROCE_OUT_FIELDS[0]);

#endif /* FT_ROCE_H */
