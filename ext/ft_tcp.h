/* ft_tcp.h: TCP loss and latency meter, per flow and per direction, on packet time (user space).
 *
 * Every definition below is written out for users in docs/tcp.md (with how it differs from Wireshark's
 * tcp.analysis.*); the comments here say how the code gets there. Direction index d: 0 = segments sent by
 * src (the initiator), 1 = sent by dst. "Side d" is d's sequence space and the peer's view of it.
 *
 * Contract: ft_tcp_update() is called once per metered TCP packet whose TCP header was parsed (FT_F_L4),
 * in capture order. It holds no pointer beyond the call, allocates nothing, and every loop has a constant
 * bound (FT_TCP_HOLES, FT_TCP_RING, and ft_hist.h's FT_HIST_BUCKETS). All sequence arithmetic is modulo 2^32 (RFC 1982 serial
 * comparison through ft_seq_lt & co.), so a flow that wraps the sequence space is metered like any other.
 * Fields of struct ft_pkt are in host order (ft_record.h).
 *
 * State size: sizeof(struct ft_tcp_meter) is FT_TCP_METER_BYTES, checked by a static assertion and quoted
 * in docs/tcp.md and docs/architecture.md.
 */
#ifndef FT_TCP_H
#define FT_TCP_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ft_record.h"
#include "ft_hist.h"   /* the latency sketch shared with the RoCE meter */

#define FT_TCP_HOLES 3   /* sequence holes tracked per direction (a hole needs a loss or a reordering; three
                            at once in one window is rare, and a fourth is counted as opened but not tracked) */
#define FT_TCP_RING 4    /* data segments timed at once per direction for data-to-ACK RTT: up to 4 samples
                            per round trip, whatever the window */
#define FT_TCP_OOO_DEFAULT_NS 3000000ULL /* reordering window without a handshake RTT (Wireshark's 3 ms) */
#define FT_TCP_FAR (1u << 30) /* sequence distance beyond which "before the first byte seen" is forgotten:
                                 no window reaches back 1 GiB (RFC 7323 caps it at 2^30) */

#define FT_TH_FIN 0x01
#define FT_TH_SYN 0x02
#define FT_TH_RST 0x04
#define FT_TH_ACK 0x10

/* struct ft_tcp_side.st bits */
#define FT_TS_SEQ 0x0001      /* nxt/low valid: a segment of this side was seen */
#define FT_TS_UNA 0x0002      /* una valid: the peer acknowledged this side's data */
#define FT_TS_ACKED 0x0004    /* last_ack/win valid: this side sent a segment with ACK */
#define FT_TS_SYN 0x0008      /* this side's SYN (or SYN/ACK) seen: isn valid */
#define FT_TS_WSOPT 0x0010    /* ... and it carried the window-scale option (wscale valid) */
#define FT_TS_LOW 0x0020      /* low still means "first byte seen" (cleared once nxt runs FT_TCP_FAR ahead) */
#define FT_TS_ZWIN 0x0040     /* this side's last advertised window was zero */
#define FT_TS_RECOV 0x0080    /* fast recovery: the peer sent 3 duplicate ACKs, not yet acked up to recover */
#define FT_TS_TSV 0x0100      /* a TSval of this side is waiting for its echo */
#define FT_TS_WINSCALE 0x0200 /* window scaling of this side's windows is known (win_shift valid) */
#define FT_TS_ZWP 0x0400      /* a zero-window probe carrying the byte at nxt is outstanding */
#define FT_TS_WINSYN 0x0800   /* this side's last window came on a SYN: not scaled */

/* struct ft_tcp_meter.hs bits */
#define FT_TH_S_SYN 0x01      /* a SYN without ACK was seen (syn_ts valid) */
#define FT_TH_S_SYNACK 0x02   /* a SYN/ACK was seen after it (synack_ts valid) */
#define FT_TH_S_EST 0x04      /* established: a segment with ACK, without SYN and RST, was seen */
#define FT_TH_S_TOTAL 0x08    /* handshake RTT measured */
#define FT_TH_S_SERVER 0x10   /* server-side half measured */
#define FT_TH_S_CLIENT 0x20   /* client-side half measured */
#define FT_TH_S_ARTREQ 0x40   /* a request (src payload) waits for its response */

/* Counters of one direction for the current record period (names as in the Arrow columns). */
struct ft_tcp_ctr {
    uint64_t retrans_bytes;        /* payload bytes of retrans_packets */
    uint32_t retrans_packets;      /* segments re-sending sequence space already seen (incl. SYN, FIN) */
    uint32_t fast_retrans_packets; /* ... sent in fast recovery (after 3 duplicate ACKs) */
    uint32_t timeout_retrans_packets;  /* ... neither fast nor spurious: driven by a timer */
    uint32_t spurious_retrans_packets; /* ... whose every byte was already acknowledged */
    uint32_t syn_retrans_packets;  /* SYN (src) or SYN/ACK (dst) sent again (also in retrans_packets) */
    uint32_t out_of_order_packets; /* fill a hole within the reordering window of its opening */
    uint32_t upstream_retrans_packets; /* fill a hole later: lost before the probe and sent again */
    uint32_t seq_gaps;             /* holes opened: a segment began beyond the highest sequence seen */
    uint32_t seq_gaps_unfilled;    /* holes closed by an ACK, or still open at the end: never captured */
    uint32_t dup_acks;             /* duplicate ACKs sent (RFC 5681 definition) */
    uint32_t sack_blocks;          /* SACK blocks sent */
    uint32_t zero_window_events;   /* advertised window went to zero */
    uint32_t zero_window_probes;   /* 1-byte segments at the edge while the peer's window was zero */
    uint32_t window_full_packets;  /* data segments reaching the right edge of the peer's window */
    uint32_t rst_handshake;        /* RST sent before the connection was established */
    uint32_t rst_established;      /* RST sent after */
    uint32_t keepalive_packets;    /* keep-alives (0 or 1 byte at the edge minus one): not retransmissions */
};

/* The sequence state of one side that nearly every segment reads or writes, for its own side and for the
 * peer's (an ACK moves the peer's una): both sides share the meter's first cache line. 24 bytes. */
struct ft_tcp_hot {
    uint32_t nxt;        /* highest sequence number sent + length (+1 for SYN, FIN): the edge */
    uint32_t low;        /* first sequence number seen (mid-stream start): space below was never seen */
    uint32_t una;        /* highest cumulative ACK from the peer for this side's data */
    uint32_t last_ack;   /* ack field of this side's last segment with ACK */
    uint16_t st;         /* FT_TS_* */
    uint16_t win_raw;    /* raw window field of this side's last segment (duplicate-ACK test); the window
                            in bytes is ft_tcp_win() */
    uint8_t win_shift;   /* shift applied to this side's windows (0 unless both SYNs had the option) */
    uint8_t nholes;      /* holes tracked in the side's cold part */
    uint8_t ring_n;      /* timed segments in the side's timing line, oldest first */
    uint8_t dupacks;     /* consecutive duplicate ACKs this side sent for last_ack (saturates at 255) */
};

/* One side's data-to-ACK and timestamp timers: the second (side 0) or third (side 1) cache line, touched by
 * this side's new data and by the ACKs that answer it. 64 bytes. */
struct ft_tcp_timing {
    uint32_t ring_end[FT_TCP_RING];  /* end of each timed segment */
    uint64_t ring_ts[FT_TCP_RING];   /* when it was sent */
    uint64_t tsv_ts;     /* when tsv_val was first seen */
    uint32_t tsv_val;    /* TSval being timed */
    uint32_t tsv_end;    /* end of the segment that carried it */
};

/* The rest of one side: read on handshakes, holes, retransmissions and RTT samples, written by counters. */
struct ft_tcp_side {
    uint32_t isn;        /* SYN's sequence number */
    uint32_t recover;    /* nxt when fast recovery began (NewReno's "recover") */
    uint8_t wscale;      /* shift announced in this side's SYN */
    uint8_t _pad[7];
    uint32_t hole_lo[FT_TCP_HOLES], hole_hi[FT_TCP_HOLES];
    uint64_t hole_ts[FT_TCP_HOLES];  /* when the hole opened */
    struct ft_tcp_ctr c;
    struct ft_stat rtt;        /* data-to-ACK RTT samples on this side's data */
    struct ft_stat ts_rtt;     /* TSval -> TSecr samples on this side's TSvals */
    struct ft_hist rtt_h;      /* the sketch of rtt (ext/ft_hist.h) */
};

/* Per-flow TCP state, from the flow table's pool (only TCP flows have one; the flow holds a pointer).
 * Sequence state persists across active-timeout periods; counters, summaries and sketches restart
 * (ft_tcp_period_reset). Laid out by how often a segment touches a field: line 0 holds what every segment
 * reads for both sides, lines 1 and 2 the timers of side 0 and side 1, the rest (counters, holes, sketches)
 * is written only on events. Embedded in every flow, its scattered hot fields cost three to five cache
 * misses per TCP packet (docs/tcp.md, Cost). */
struct ft_tcp_meter {
    /* line 0 */
    struct ft_tcp_hot h[2];
    uint64_t req_ts;       /* last new src payload since dst last sent payload */
    uint8_t hs;            /* FT_TH_S_* */
    uint8_t hs_out;        /* FT_TH_S_TOTAL/SERVER/CLIENT measured in the current period */
    uint8_t _pad[6];
    /* lines 1, 2 */
    struct ft_tcp_timing t[2];
    /* cold */
    struct ft_tcp_side s[2];
    uint64_t syn_ts;       /* most recent SYN without ACK */
    uint64_t synack_ts;    /* first SYN/ACK after it */
    uint64_t synack_last;  /* most recent SYN/ACK */
    uint64_t hs_total_ns, hs_server_ns, hs_client_ns;
    struct ft_stat art;
    struct ft_hist art_h;
} __attribute__((aligned(64)));

#define FT_TCP_METER_BYTES 1216
_Static_assert(sizeof(struct ft_tcp_meter) == FT_TCP_METER_BYTES,
               "update FT_TCP_METER_BYTES, docs/tcp.md and docs/architecture.md");
_Static_assert(offsetof(struct ft_tcp_meter, t) == 64 && sizeof(struct ft_tcp_timing) == 64,
               "line 0 is the two sides' hot state, lines 1 and 2 their timers");

/* One direction of an exported record. A null measurement (no sample) has *_samples == 0; the batch
 * builder turns those into nulls. rtt_h is the raw sketch (ext/ft_hist.h), valid when rtt_samples > 0. */
struct ft_tcp_dir_out {
    struct ft_tcp_ctr c;
    uint64_t rtt_min_ns, rtt_mean_ns, rtt_max_ns, rtt_p50_ns, rtt_p90_ns, rtt_p99_ns;
    uint64_t ts_rtt_min_ns, ts_rtt_mean_ns, ts_rtt_max_ns;
    uint32_t rtt_samples;
    uint32_t ts_rtt_samples;
    struct ft_hist rtt_h;
    uint8_t _pad[4];
};

/* What a TCP flow leaves in its record: a row of the batch's side array of TCP parts (struct
 * ft_flowrec.tcp_row names it); other flows have none. */
struct ft_tcp_out {
    struct ft_tcp_dir_out d[2];
    uint64_t hs_total_ns, hs_server_ns, hs_client_ns;
    uint64_t art_min_ns, art_mean_ns, art_max_ns, art_p50_ns, art_p99_ns;
    uint32_t art_samples;
    uint8_t hs_valid;      /* FT_TH_S_TOTAL/SERVER/CLIENT: which handshake values this record carries */
    uint8_t _pad[3];
    struct ft_hist art_h;  /* valid when art_samples > 0 */
    uint8_t _pad2[4];
};

/* ---- serial arithmetic (RFC 1982 on 32 bits) ---- */
static inline int32_t ft_seq_diff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline int ft_seq_lt(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) < 0; }
static inline int ft_seq_le(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) <= 0; }
static inline int ft_seq_gt(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) > 0; }
static inline int ft_seq_ge(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) >= 0; }

/* Returns the window side h last advertised, in bytes when its scale is known (FT_TS_WINSCALE; never
 * scaled on a SYN segment, RFC 7323 2.2), else the raw field. */
static inline uint32_t ft_tcp_win(const struct ft_tcp_hot *h)
{
    return (h->st & FT_TS_WINSYN) ? h->win_raw : ((uint32_t)h->win_raw << h->win_shift);
}

/* ---- meter ---- */

/* Initialises m (memory from the pool: a fresh chunk or a released meter). Zeroes only what is read
 * before it is written: the hot line, counters, sample summaries, handshake values and the response-time
 * summary (zero is their "nothing seen" state). Everything else is guarded by a bit or a count that starts
 * at zero: ISN and window scale by FT_TS_SYN/FT_TS_WSOPT, the recovery point by FT_TS_RECOV, holes by
 * nholes, timers by ring_n and FT_TS_TSV, SYN times by the hs bits, and each sketch restarts when its
 * summary is empty (ft_hist_add). 408 of the 1216 bytes, and none of the sketch lines that a flow without
 * samples never touches. */
static inline void ft_tcp_init(struct ft_tcp_meter *m)
{
    int d;
    memset(m, 0, offsetof(struct ft_tcp_meter, t));   /* line 0 */
    for (d = 0; d < 2; d++) {
        memset(&m->s[d].c, 0, sizeof(m->s[d].c));
        memset(&m->s[d].rtt, 0, sizeof(m->s[d].rtt));
        memset(&m->s[d].ts_rtt, 0, sizeof(m->s[d].ts_rtt));
    }
    m->hs_total_ns = 0;
    m->hs_server_ns = 0;
    m->hs_client_ns = 0;
    memset(&m->art, 0, sizeof(m->art));
}

/* Restarts counters, sample summaries and sketches for a new record period (active timeout). Sequence,
 * window, hole and timing state persist, so the next period goes on without false retransmissions. A sketch
 * restarts by itself when its summary says it is empty (ft_hist_add). */
static inline void ft_tcp_period_reset(struct ft_tcp_meter *m)
{
    int d;
    for (d = 0; d < 2; d++) {
        memset(&m->s[d].c, 0, sizeof(m->s[d].c));
        memset(&m->s[d].rtt, 0, sizeof(m->s[d].rtt));
        memset(&m->s[d].ts_rtt, 0, sizeof(m->s[d].ts_rtt));
    }
    memset(&m->art, 0, sizeof(m->art));
    m->hs_out = 0;
}

/* Drops timed segments of a side (hot state h, timers t) covering at most `ack` and returns the RTT sample
 * (ns) when one ended exactly at `ack` (Wireshark's ack_rtt matches the same way), else 0 with *ok = 0. */
static inline uint64_t ft_tcp_ring_ack(struct ft_tcp_hot *h, struct ft_tcp_timing *t, uint32_t ack,
                                       uint64_t now, int *ok)
{
    int i, drop = 0;
    uint64_t sample = 0;
    *ok = 0;
    for (i = 0; i < FT_TCP_RING; i++) {
        if (i >= h->ring_n || ft_seq_gt(t->ring_end[i], ack))
            break;
        if (t->ring_end[i] == ack && now >= t->ring_ts[i]) {
            sample = now - t->ring_ts[i];
            *ok = 1;
        }
        drop++;
    }
    if (drop) {
        for (i = 0; i < FT_TCP_RING; i++) {
            if (i + drop < h->ring_n) {
                t->ring_end[i] = t->ring_end[i + drop];
                t->ring_ts[i] = t->ring_ts[i + drop];
            }
        }
        h->ring_n = (uint8_t)(h->ring_n - drop);
    }
    return sample;
}

/* Processes the ACK field (and TSecr) of segment p about the data of side pd of m (the peer of its sender):
 * acknowledged edge, holes the ACK passes, end of fast recovery, RTT samples (data-to-ACK, timestamps). The
 * cold part of the side is read only when it has holes, is in recovery or yields a sample. */
static inline void ft_tcp_on_ack(struct ft_tcp_meter *m, int pd, const struct ft_pkt *p, uint64_t now)
{
    struct ft_tcp_hot *pe = &m->h[pd];
    struct ft_tcp_timing *pt = &m->t[pd];
    struct ft_tcp_side *pc = &m->s[pd];
    uint32_t ack = p->tcp_ack;
    int i, ok;
    uint64_t sample;

    if (!(pe->st & FT_TS_UNA) || ft_seq_gt(ack, pe->una)) {
        pe->una = ack;
        pe->st |= FT_TS_UNA;
    }
    /* holes the peer's data no longer needs: the receiver has the bytes, the probe never saw them */
    for (i = FT_TCP_HOLES - 1; i >= 0; i--) {
        if (i < pe->nholes && ft_seq_le(pc->hole_hi[i], ack)) {
            pc->c.seq_gaps_unfilled++;
            pe->nholes--;
            pc->hole_lo[i] = pc->hole_lo[pe->nholes];
            pc->hole_hi[i] = pc->hole_hi[pe->nholes];
            pc->hole_ts[i] = pc->hole_ts[pe->nholes];
        } else if (i < pe->nholes && ft_seq_gt(ack, pc->hole_lo[i])) {
            pc->hole_lo[i] = ack;
        }
    }
    if ((pe->st & FT_TS_ZWP) && (pe->st & FT_TS_SEQ) && ack == pe->nxt + 1)
        pe->nxt = ack;   /* the receiver took the probe's byte */
    pe->st &= (uint16_t)~FT_TS_ZWP;
    if ((pe->st & FT_TS_RECOV) && ft_seq_ge(ack, pc->recover))
        pe->st &= (uint16_t)~FT_TS_RECOV;

    if (pe->ring_n) {
        sample = ft_tcp_ring_ack(pe, pt, ack, now, &ok);
        if (ok)
            ft_lat_add(&pc->rtt_h, &pc->rtt, sample);
    }

    /* TSecr echoing the TSval being timed, on a segment that acknowledges the timed segment */
    if ((pe->st & FT_TS_TSV) && (p->tcp_opt_present & FT_TCPOPT_TS)) {
        if (p->tcp_tsecr == pt->tsv_val && ft_seq_ge(ack, pt->tsv_end)) {
            if (now >= pt->tsv_ts)
                ft_stat_add(&pc->ts_rtt, now - pt->tsv_ts);
            pe->st &= (uint16_t)~FT_TS_TSV;
        } else if (ft_seq_gt(p->tcp_tsecr, pt->tsv_val)) {
            pe->st &= (uint16_t)~FT_TS_TSV;   /* echo moved past it (that segment was lost or not echoed) */
        }
    }
}

/* Records a hole [lo, hi) in a side's sequence space (hot state h, cold part s), opened at time now. */
static inline void ft_tcp_hole_open(struct ft_tcp_hot *h, struct ft_tcp_side *s, uint32_t lo, uint32_t hi,
                                    uint64_t now)
{
    s->c.seq_gaps++;
    if ((h->st & FT_TS_UNA) && ft_seq_le(hi, h->una)) {
        s->c.seq_gaps_unfilled++;   /* already acknowledged: the receiver had it, the probe did not */
        return;
    }
    if (h->nholes < FT_TCP_HOLES) {
        s->hole_lo[h->nholes] = lo;
        s->hole_hi[h->nholes] = hi;
        s->hole_ts[h->nholes] = now;
        h->nholes++;
    }
}

/* Classifies the part [lo, hi) of a segment lying below the edge: returns the index of the hole that holds
 * it entirely (a first transmission seen late), or -1 when it re-sends seen space (a retransmission).
 * Removes what it fills from the holes either way. */
static inline int ft_tcp_fill(struct ft_tcp_hot *h, struct ft_tcp_side *s, uint32_t lo, uint32_t hi,
                              uint64_t *opened)
{
    int i, inside = -1;
    for (i = 0; i < FT_TCP_HOLES; i++) {
        if (i < h->nholes && ft_seq_le(s->hole_lo[i], lo) && ft_seq_le(hi, s->hole_hi[i])) {
            inside = i;
            *opened = s->hole_ts[i];
        }
    }
    for (i = FT_TCP_HOLES - 1; i >= 0; i--) {
        uint32_t hlo, hhi;
        if (i >= h->nholes)
            continue;
        hlo = s->hole_lo[i];
        hhi = s->hole_hi[i];
        if (ft_seq_le(hhi, lo) || ft_seq_le(hi, hlo))
            continue;                                   /* no overlap */
        if (ft_seq_le(lo, hlo) && ft_seq_ge(hi, hhi)) { /* filled whole */
            h->nholes--;
            s->hole_lo[i] = s->hole_lo[h->nholes];
            s->hole_hi[i] = s->hole_hi[h->nholes];
            s->hole_ts[i] = s->hole_ts[h->nholes];
        } else if (ft_seq_le(lo, hlo)) {                /* front filled */
            s->hole_lo[i] = hi;
        } else if (ft_seq_ge(hi, hhi)) {                /* back filled */
            s->hole_hi[i] = lo;
        } else {                                        /* middle filled: split when there is room */
            s->hole_hi[i] = lo;
            if (h->nholes < FT_TCP_HOLES) {
                s->hole_lo[h->nholes] = hi;
                s->hole_hi[h->nholes] = hhi;
                s->hole_ts[h->nholes] = s->hole_ts[i];
                h->nholes++;
            }
        }
    }
    return inside;
}

/* Meters one TCP segment p sent by side dir (0 = src, the initiator; 1 = dst) at its packet time.
 * Requires p->flags & FT_F_L4 and p->proto == 6. me/pe: hot state of the sender and of its peer (line 0),
 * mt: the sender's timers, mc/pc: the cold parts. */
static inline void ft_tcp_update(struct ft_tcp_meter *m, const struct ft_pkt *p, int dir)
{
    const int d = dir & 1;
    struct ft_tcp_hot *me = &m->h[d];
    struct ft_tcp_hot *pe = &m->h[d ^ 1];
    struct ft_tcp_timing *mt = &m->t[d];
    struct ft_tcp_side *mc = &m->s[d];
    struct ft_tcp_side *pc = &m->s[d ^ 1];
    const uint64_t now = p->ts_ns;
    const uint16_t fl = p->tcp_flags;
    const uint32_t seq = p->tcp_seq;
    const uint32_t len = p->payload_len;
    const int syn = (fl & FT_TH_SYN) != 0, fin = (fl & FT_TH_FIN) != 0, rst = (fl & FT_TH_RST) != 0;
    const int ackf = (fl & FT_TH_ACK) != 0;
    const uint32_t span = len + (uint32_t)syn + (uint32_t)fin;   /* sequence space the segment occupies */
    const uint32_t end = seq + span;
    int newdata = 0;     /* carries sequence space beyond the edge */

    /* ---- handshake and phase ---- */
    if (rst) {
        if (m->hs & FT_TH_S_EST)
            mc->c.rst_established++;
        else
            mc->c.rst_handshake++;
    }
    if (syn && !ackf) {
        m->syn_ts = now;
        m->hs |= FT_TH_S_SYN;
    } else if (syn && ackf) {
        m->synack_last = now;
        if ((m->hs & FT_TH_S_SYN) && !(m->hs & FT_TH_S_SYNACK)) {
            m->synack_ts = now;
            m->hs |= FT_TH_S_SYNACK;
            if (now >= m->syn_ts && !(m->hs & FT_TH_S_SERVER)) {
                m->hs_server_ns = now - m->syn_ts;
                m->hs |= FT_TH_S_SERVER;
                m->hs_out |= FT_TH_S_SERVER;
            }
        }
    } else if (ackf) {
        /* handshake RTT (Wireshark's tcp.analysis.initial_rtt): from the most recent SYN to the segment
         * that answers the other side's last handshake segment: the client's ACK of the SYN/ACK (any
         * client ACK but a RST when the SYN/ACK was not captured), or, when the server sent no SYN/ACK,
         * its ACK of the SYN (a refusal). A server RST after its own SYN/ACK answers nothing in time.
         * tshark 4.0 agrees on each of these cases. The hs bits are tested first, so that an established
         * connection does not read the cold handshake fields at every ACK. */
        if ((m->hs & (FT_TH_S_SYN | FT_TH_S_TOTAL)) == FT_TH_S_SYN) {
            int answers = d == 0 ? ((pe->st & FT_TS_SYN) ? ft_seq_gt(p->tcp_ack, pc->isn) : !rst)
                                 : !(me->st & FT_TS_SYN) && (pe->st & FT_TS_SYN) &&
                                   ft_seq_gt(p->tcp_ack, pc->isn);
            if (answers && now >= m->syn_ts) {
                m->hs_total_ns = now - m->syn_ts;
                m->hs |= FT_TH_S_TOTAL;
                m->hs_out |= FT_TH_S_TOTAL;
            }
        }
        if (d == 0 && !rst && (m->hs & (FT_TH_S_SYNACK | FT_TH_S_CLIENT)) == FT_TH_S_SYNACK &&
            (pe->st & FT_TS_SYN) && ft_seq_gt(p->tcp_ack, pc->isn) && now >= m->synack_last) {
            m->hs_client_ns = now - m->synack_last;
            m->hs |= FT_TH_S_CLIENT;
            m->hs_out |= FT_TH_S_CLIENT;
        }
        if (!rst)
            m->hs |= FT_TH_S_EST;
    }

    /* ---- window scaling (RFC 7323 2.2: in effect only when both SYNs carry the option) ---- */
    if (syn) {
        me->st |= FT_TS_SYN;
        mc->isn = seq;
        if (p->tcp_opt_present & FT_TCPOPT_WSCALE) {
            me->st |= FT_TS_WSOPT;
            mc->wscale = p->tcp_wscale > 14 ? 14 : p->tcp_wscale;
        }
        if (!(p->tcp_opt_present & FT_TCPOPT_WSCALE)) {
            /* no option on this SYN: scaling is off both ways */
            me->win_shift = 0;
            pe->win_shift = 0;
            me->st |= FT_TS_WINSCALE;
            pe->st |= FT_TS_WINSCALE;
        } else if (pe->st & FT_TS_SYN) {
            if (pe->st & FT_TS_WSOPT) {
                me->win_shift = mc->wscale;
                pe->win_shift = pc->wscale;
            }
            me->st |= FT_TS_WINSCALE;
            pe->st |= FT_TS_WINSCALE;
        }
    }

    /* ---- this side's data ---- */
    if (!syn && !fin && !rst && len <= 1 && (me->st & FT_TS_SEQ) && seq == me->nxt - 1) {
        /* one byte (or none) just below the edge, on purpose: a keep-alive (Linux also probes a zero window
         * this way) */
        if (pe->st & FT_TS_ZWIN)
            mc->c.zero_window_probes++;
        else
            mc->c.keepalive_packets++;
    } else if (span > 0 && !rst) {
        if (!(me->st & FT_TS_SEQ)) {
            /* first segment of this side: a mid-stream start sets the edge, nothing before it was seen */
            me->st |= FT_TS_SEQ | FT_TS_LOW;
            me->low = seq;
            me->nxt = end;
            newdata = 1;
        } else if (len == 1 && !syn && !fin && seq == me->nxt && (pe->st & FT_TS_ZWIN)) {
            /* a probe with the next byte does not move the edge: the byte is sent again when the window
             * opens, unless the peer takes it (ft_tcp_on_ack) */
            mc->c.zero_window_probes++;
            me->st |= FT_TS_ZWP;
        } else if (ft_seq_ge(seq, me->nxt)) {
            if (seq != me->nxt)
                ft_tcp_hole_open(me, mc, me->nxt, seq, now);
            me->nxt = end;
            newdata = 1;
        } else {
            /* starts below the edge */
            uint32_t top = ft_seq_lt(end, me->nxt) ? end : me->nxt;
            uint64_t opened = 0;
            int hole;
            if ((me->st & FT_TS_LOW) && ft_seq_le(top, me->low)) {
                me->low = seq;           /* older than anything seen: not a retransmission we can tell */
                hole = -2;
            } else {
                hole = ft_tcp_fill(me, mc, seq, top, &opened);
                if ((me->st & FT_TS_LOW) && ft_seq_lt(seq, me->low))
                    me->low = seq;
            }
            if (hole == -1) {
                mc->c.retrans_packets++;
                mc->c.retrans_bytes += len;
                if (syn)
                    mc->c.syn_retrans_packets++;
                if ((me->st & FT_TS_UNA) && ft_seq_le(end, me->una))
                    mc->c.spurious_retrans_packets++;
                else if (me->st & FT_TS_RECOV)
                    mc->c.fast_retrans_packets++;
                else
                    mc->c.timeout_retrans_packets++;
            } else if (hole >= 0) {
                uint64_t window = (m->hs & FT_TH_S_TOTAL) && m->hs_total_ns ? m->hs_total_ns
                                                                             : FT_TCP_OOO_DEFAULT_NS;
                if (now >= opened && now - opened < window)
                    mc->c.out_of_order_packets++;
                else
                    mc->c.upstream_retrans_packets++;
            }
            /* Karn: an ACK after a retransmission or a late fill may answer either copy */
            me->ring_n = 0;
            if (ft_seq_gt(end, me->nxt)) {
                me->nxt = end;
            }
        }
        if ((me->st & FT_TS_LOW) && (uint32_t)(me->nxt - me->low) > FT_TCP_FAR)
            me->st &= (uint16_t)~FT_TS_LOW;
    }

    if (newdata) {
        if (len > 0 && !syn && me->ring_n < FT_TCP_RING) {
            mt->ring_end[me->ring_n] = end;
            mt->ring_ts[me->ring_n] = now;
            me->ring_n++;
        }
        if ((p->tcp_opt_present & FT_TCPOPT_TS) && !(me->st & FT_TS_TSV)) {
            mt->tsv_val = p->tcp_tsval;
            mt->tsv_end = end;
            mt->tsv_ts = now;
            me->st |= FT_TS_TSV;
        }
        if (len > 0) {
            /* application response time: src payload is a request, dst payload its response */
            if (d == 0) {
                m->req_ts = now;
                m->hs |= FT_TH_S_ARTREQ;
            } else if (m->hs & FT_TH_S_ARTREQ) {
                if (now >= m->req_ts)
                    ft_lat_add(&m->art_h, &m->art, now - m->req_ts);
                m->hs &= (uint8_t)~FT_TH_S_ARTREQ;
            }
        }
        /* window full: the segment reaches the right edge the peer advertised (scale known) */
        if (len > 0 && !syn && !fin && (pe->st & FT_TS_ACKED) && (pe->st & FT_TS_WINSCALE) &&
            ft_seq_ge(end, pe->last_ack + ft_tcp_win(pe)))
            mc->c.window_full_packets++;
    }

    /* ---- what this side says about the peer's data ---- */
    if (ackf) {
        /* RFC 5681 duplicate ACK: no data, no SYN/FIN, same ACK and window as before, and the peer has data
         * outstanding */
        if (len == 0 && !syn && !fin && !rst && (me->st & FT_TS_ACKED) && p->tcp_ack == me->last_ack &&
            p->tcp_win == me->win_raw && p->tcp_win != 0 && (pe->st & FT_TS_SEQ) &&
            ft_seq_gt(pe->nxt, p->tcp_ack)) {
            mc->c.dup_acks++;
            if (me->dupacks < 255)
                me->dupacks++;
            if (me->dupacks == 3 && !(pe->st & FT_TS_RECOV)) {
                pe->st |= FT_TS_RECOV;
                pc->recover = pe->nxt;
            }
        } else if (!(me->st & FT_TS_ACKED) || p->tcp_ack != me->last_ack) {
            me->dupacks = 0;
        }
        if (!rst)
            ft_tcp_on_ack(m, d ^ 1, p, now);
        me->last_ack = p->tcp_ack;
        me->st |= FT_TS_ACKED;
    }
    if (p->tcp_opt_present & FT_TCPOPT_SACK)
        mc->c.sack_blocks += p->tcp_sack_count;

    /* advertised window (never scaled on SYN segments: FT_TS_WINSYN, ft_tcp_win) */
    if (!rst) {
        me->win_raw = p->tcp_win;
        if (syn)
            me->st |= FT_TS_WINSYN;
        else
            me->st &= (uint16_t)~FT_TS_WINSYN;
        if (p->tcp_win == 0 && !syn && !fin) {
            if (!(me->st & FT_TS_ZWIN))
                mc->c.zero_window_events++;
            me->st |= FT_TS_ZWIN;
        } else if (p->tcp_win != 0) {
            me->st &= (uint16_t)~FT_TS_ZWIN;
        }
    }
}

/* Fills o (every byte of it: the side array is not zeroed) with the current period of m. final = 1 when
 * the flow ends with this record: holes still open then count as never filled. */
static inline void ft_tcp_export(const struct ft_tcp_meter *m, struct ft_tcp_out *o, int final)
{
    static const uint8_t q3[3] = {50, 90, 99}, q2[2] = {50, 99};
    uint64_t q[3];
    int d;
    memset(o, 0, offsetof(struct ft_tcp_out, art_h));
    for (d = 0; d < 2; d++) {
        const struct ft_tcp_side *s = &m->s[d];
        struct ft_tcp_dir_out *r = &o->d[d];
        r->c = s->c;
        if (final)
            r->c.seq_gaps_unfilled += m->h[d].nholes;
        r->rtt_samples = s->rtt.n;
        if (s->rtt.n) {
            r->rtt_min_ns = s->rtt.min_ns;
            r->rtt_max_ns = s->rtt.max_ns;
            r->rtt_mean_ns = s->rtt.sum_ns / s->rtt.n;
            ft_hist_quantiles(&s->rtt_h, &s->rtt, q3, 3, q);
            r->rtt_p50_ns = q[0];
            r->rtt_p90_ns = q[1];
            r->rtt_p99_ns = q[2];
            r->rtt_h = s->rtt_h;
        }
        r->ts_rtt_samples = s->ts_rtt.n;
        if (s->ts_rtt.n) {
            r->ts_rtt_min_ns = s->ts_rtt.min_ns;
            r->ts_rtt_max_ns = s->ts_rtt.max_ns;
            r->ts_rtt_mean_ns = s->ts_rtt.sum_ns / s->ts_rtt.n;
        }
    }
    o->hs_valid = m->hs_out;
    o->hs_total_ns = m->hs_total_ns;
    o->hs_server_ns = m->hs_server_ns;
    o->hs_client_ns = m->hs_client_ns;
    o->art_samples = m->art.n;
    if (m->art.n) {
        o->art_min_ns = m->art.min_ns;
        o->art_max_ns = m->art.max_ns;
        o->art_mean_ns = m->art.sum_ns / m->art.n;
        ft_hist_quantiles(&m->art_h, &m->art, q2, 2, q);
        o->art_p50_ns = q[0];
        o->art_p99_ns = q[1];
        o->art_h = m->art_h;
    }
}

/* Field table of struct ft_tcp_out for the numpy mirror (the flow table's TCP_OUT_DTYPE; the batch builder
 * adds the tcp_ prefix of the record's other names). */
struct ft_tcp_field { const char *name; size_t offset; const char *fmt; };
#define FT_TCPF(name, member, fmt) { name, offsetof(struct ft_tcp_out, member), fmt }
#define FT_TCPF_DIR(i, pfx)                                                                                 \
    FT_TCPF(pfx "retrans_bytes", d[i].c.retrans_bytes, "<u8"),                                             \
    FT_TCPF(pfx "retrans_packets", d[i].c.retrans_packets, "<u4"),                                         \
    FT_TCPF(pfx "fast_retrans_packets", d[i].c.fast_retrans_packets, "<u4"),                               \
    FT_TCPF(pfx "timeout_retrans_packets", d[i].c.timeout_retrans_packets, "<u4"),                         \
    FT_TCPF(pfx "spurious_retrans_packets", d[i].c.spurious_retrans_packets, "<u4"),                       \
    FT_TCPF(pfx "syn_retrans_packets", d[i].c.syn_retrans_packets, "<u4"),                                 \
    FT_TCPF(pfx "out_of_order_packets", d[i].c.out_of_order_packets, "<u4"),                               \
    FT_TCPF(pfx "upstream_retrans_packets", d[i].c.upstream_retrans_packets, "<u4"),                       \
    FT_TCPF(pfx "seq_gaps", d[i].c.seq_gaps, "<u4"),                                                       \
    FT_TCPF(pfx "seq_gaps_unfilled", d[i].c.seq_gaps_unfilled, "<u4"),                                     \
    FT_TCPF(pfx "dup_acks", d[i].c.dup_acks, "<u4"),                                                       \
    FT_TCPF(pfx "sack_blocks", d[i].c.sack_blocks, "<u4"),                                                 \
    FT_TCPF(pfx "zero_window_events", d[i].c.zero_window_events, "<u4"),                                   \
    FT_TCPF(pfx "zero_window_probes", d[i].c.zero_window_probes, "<u4"),                                   \
    FT_TCPF(pfx "window_full_packets", d[i].c.window_full_packets, "<u4"),                                 \
    FT_TCPF(pfx "rst_handshake", d[i].c.rst_handshake, "<u4"),                                             \
    FT_TCPF(pfx "rst_established", d[i].c.rst_established, "<u4"),                                         \
    FT_TCPF(pfx "keepalive_packets", d[i].c.keepalive_packets, "<u4"),                                     \
    FT_TCPF(pfx "rtt_samples", d[i].rtt_samples, "<u4"),                                                   \
    FT_TCPF(pfx "rtt_min_ns", d[i].rtt_min_ns, "<u8"),                                                     \
    FT_TCPF(pfx "rtt_mean_ns", d[i].rtt_mean_ns, "<u8"),                                                   \
    FT_TCPF(pfx "rtt_max_ns", d[i].rtt_max_ns, "<u8"),                                                     \
    FT_TCPF(pfx "rtt_p50_ns", d[i].rtt_p50_ns, "<u8"),                                                     \
    FT_TCPF(pfx "rtt_p90_ns", d[i].rtt_p90_ns, "<u8"),                                                     \
    FT_TCPF(pfx "rtt_p99_ns", d[i].rtt_p99_ns, "<u8"),                                                     \
    FT_TCPF(pfx "rtt_hist_counts", d[i].rtt_h.count, "(80,)<u2"),                                         \
    FT_TCPF(pfx "rtt_hist_base", d[i].rtt_h.base, "<i2"),                                                  \
    FT_TCPF(pfx "rtt_hist_halvings", d[i].rtt_h.halvings, "u1"),                                           \
    FT_TCPF(pfx "rtt_hist_collapsed", d[i].rtt_h.collapsed, "u1"),                                         \
    FT_TCPF(pfx "ts_rtt_samples", d[i].ts_rtt_samples, "<u4"),                                             \
    FT_TCPF(pfx "ts_rtt_min_ns", d[i].ts_rtt_min_ns, "<u8"),                                               \
    FT_TCPF(pfx "ts_rtt_mean_ns", d[i].ts_rtt_mean_ns, "<u8"),                                             \
    FT_TCPF(pfx "ts_rtt_max_ns", d[i].ts_rtt_max_ns, "<u8")

static const struct ft_tcp_field FT_TCPOUT_FIELDS[] = {
    FT_TCPF_DIR(0, "src_"),
    FT_TCPF_DIR(1, "dst_"),
    FT_TCPF("hs_total_ns", hs_total_ns, "<u8"),
    FT_TCPF("hs_server_ns", hs_server_ns, "<u8"),
    FT_TCPF("hs_client_ns", hs_client_ns, "<u8"),
    FT_TCPF("hs_valid", hs_valid, "u1"),
    FT_TCPF("art_samples", art_samples, "<u4"),
    FT_TCPF("art_min_ns", art_min_ns, "<u8"),
    FT_TCPF("art_mean_ns", art_mean_ns, "<u8"),
    FT_TCPF("art_max_ns", art_max_ns, "<u8"),
    FT_TCPF("art_p50_ns", art_p50_ns, "<u8"),
    FT_TCPF("art_p99_ns", art_p99_ns, "<u8"),
    FT_TCPF("art_hist_counts", art_h.count, "(80,)<u2"),
    FT_TCPF("art_hist_base", art_h.base, "<i2"),
    FT_TCPF("art_hist_halvings", art_h.halvings, "u1"),
    FT_TCPF("art_hist_collapsed", art_h.collapsed, "u1"),
};
static const int FT_TCPOUT_NFIELDS = sizeof(FT_TCPOUT_FIELDS) / sizeof(FT_TCPOUT_FIELDS[0]);

#endif /* FT_TCP_H */
