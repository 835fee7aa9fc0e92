/* ft_tcp.h: TCP loss and latency meter, per flow and per direction, on packet time (user space).
 *
 * Every definition below is written out for users in docs/tcp.md (with how it differs from Wireshark's
 * tcp.analysis.*); the comments here say how the code gets there. Direction index d: 0 = segments sent by
 * src (the initiator), 1 = sent by dst. "Side d" is d's sequence space and the peer's view of it.
 *
 * Contract: ft_tcp_update() is called once per metered TCP packet whose TCP header was parsed (FT_F_L4),
 * in capture order. It holds no pointer beyond the call, allocates nothing, and every loop has a constant
 * bound (FT_TCP_HOLES, FT_TCP_RING, FT_TCP_HB). All sequence arithmetic is modulo 2^32 (RFC 1982 serial
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

#define FT_TCP_HOLES 3   /* sequence holes tracked per direction (a hole needs a loss or a reordering; three
                            at once in one window is rare, and a fourth is counted as opened but not tracked) */
#define FT_TCP_RING 4    /* data segments timed at once per direction for data-to-ACK RTT: up to 4 samples
                            per round trip, whatever the window */
#define FT_TCP_HB 80     /* histogram buckets kept per sketch: 10 octaves (a 1024x range) of 8 buckets */
#define FT_TCP_HOCT 12   /* octaves a record's histogram column can span (the window covers at most 11) */
#define FT_TCP_HSUB 8    /* buckets per octave: bucket k holds [2^(k/8), 2^((k+1)/8)) ns, so the bucket's
                            representative value is within (2^(1/8)-1)/(2^(1/8)+1) = 4.33 % of any sample */
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

/* struct ft_tcp_meter.hs bits */
#define FT_TH_S_SYN 0x01      /* a SYN without ACK was seen (syn_ts valid) */
#define FT_TH_S_SYNACK 0x02   /* a SYN/ACK was seen after it (synack_ts valid) */
#define FT_TH_S_EST 0x04      /* established: a segment with ACK, without SYN and RST, was seen */
#define FT_TH_S_TOTAL 0x08    /* handshake RTT measured */
#define FT_TH_S_SERVER 0x10   /* server-side half measured */
#define FT_TH_S_CLIENT 0x20   /* client-side half measured */
#define FT_TH_S_ARTREQ 0x40   /* a request (src payload) waits for its response */

/* Log-bucketed sketch of durations (ns) with a sliding window of FT_TCP_HB buckets.
 * Global bucket k (0..511) holds x with 2^(k/8) <= x < 2^((k+1)/8) (x = 0 goes to bucket 0). The window
 * [base, base + FT_TCP_HB) starts centred on the first sample and slides up when a larger sample needs
 * room; buckets that fall off the bottom, and later samples below the window, are added to the window's
 * lowest bucket and `collapsed` is set: percentiles at or above max/1024 keep their 4.33 % bound, lower ones
 * are reported too high. A count that would pass 65535 halves every count first (halvings counts it). */
struct ft_tcp_hist {
    uint16_t count[FT_TCP_HB];
    int16_t base;
    uint8_t halvings;
    uint8_t collapsed;
};

/* Exact summary of the samples fed to a sketch. */
struct ft_tcp_stat {
    uint64_t sum_ns;
    uint64_t min_ns;
    uint64_t max_ns;
    uint32_t n;
    uint32_t _pad;
};

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

/* What one side sent and what the peer said about it. */
struct ft_tcp_side {
    uint32_t nxt;        /* highest sequence number sent + length (+1 for SYN, FIN): the edge */
    uint32_t low;        /* first sequence number seen (mid-stream start): space below was never seen */
    uint32_t una;        /* highest cumulative ACK from the peer for this side's data */
    uint32_t last_ack;   /* ack field of this side's last segment with ACK */
    uint32_t win;        /* this side's last advertised window, in bytes when FT_TS_WINSCALE, else raw */
    uint32_t isn;        /* SYN's sequence number */
    uint32_t recover;    /* nxt when fast recovery began (NewReno's "recover") */
    uint32_t tsv_val;    /* TSval being timed */
    uint32_t tsv_end;    /* end of the segment that carried it */
    uint16_t st;         /* FT_TS_* */
    uint16_t win_raw;    /* raw window field of this side's last segment (duplicate-ACK test) */
    uint16_t dupacks;    /* consecutive duplicate ACKs this side sent for last_ack */
    uint8_t wscale;      /* shift announced in this side's SYN */
    uint8_t win_shift;   /* shift applied to this side's windows (0 unless both SYNs had the option) */
    uint8_t nholes;
    uint8_t ring_n;      /* timed segments in ring_end/ring_ts, oldest first */
    uint16_t _pad;
    /* the fields above and ring_end make the 64 bytes most packets touch */
    uint32_t ring_end[FT_TCP_RING];
    uint64_t ring_ts[FT_TCP_RING];
    uint64_t tsv_ts;     /* when tsv_val was first seen */
    uint32_t hole_lo[FT_TCP_HOLES], hole_hi[FT_TCP_HOLES];
    uint64_t hole_ts[FT_TCP_HOLES];  /* when the hole opened */
    struct ft_tcp_ctr c;
    struct ft_tcp_stat rtt;        /* data-to-ACK RTT samples on this side's data */
    struct ft_tcp_stat ts_rtt;     /* TSval -> TSecr samples on this side's TSvals */
    struct ft_tcp_hist rtt_h;
};

/* Per-flow TCP state, embedded in struct ft_flow. Sequence state persists across active-timeout periods;
 * counters, summaries and sketches restart (ft_tcp_period_reset). */
struct ft_tcp_meter {
    /* read by every packet, so first: it shares a cache line with the first side's sequence state */
    uint8_t hs;            /* FT_TH_S_* */
    uint8_t hs_out;        /* FT_TH_S_TOTAL/SERVER/CLIENT measured in the current period */
    uint8_t _pad[6];
    struct ft_tcp_side s[2];
    uint64_t syn_ts;       /* most recent SYN without ACK */
    uint64_t synack_ts;    /* first SYN/ACK after it */
    uint64_t synack_last;  /* most recent SYN/ACK */
    uint64_t req_ts;       /* last new src payload since dst last sent payload */
    uint64_t hs_total_ns, hs_server_ns, hs_client_ns;
    struct ft_tcp_stat art;
    struct ft_tcp_hist art_h;
};

#define FT_TCP_METER_BYTES 1192
_Static_assert(sizeof(struct ft_tcp_meter) == FT_TCP_METER_BYTES,
               "update FT_TCP_METER_BYTES, docs/tcp.md and docs/architecture.md");

/* One direction of an exported record. A null measurement (no sample) has *_samples == 0; the batch
 * builder turns those into nulls. Histogram: hist[0..hist_len) are the counts of global buckets
 * hist_first .. hist_first + hist_len - 1 (zero buckets at both ends trimmed). */
struct ft_tcp_dir_out {
    struct ft_tcp_ctr c;
    uint64_t rtt_min_ns, rtt_mean_ns, rtt_max_ns, rtt_p50_ns, rtt_p90_ns, rtt_p99_ns;
    uint64_t ts_rtt_min_ns, ts_rtt_mean_ns, ts_rtt_max_ns;
    uint32_t rtt_samples;
    uint32_t ts_rtt_samples;
    int16_t rtt_hist_first;     /* octave of rtt_hist[0]: 2^first <= x < 2^(first+1) ns */
    uint16_t rtt_hist_len;
    uint8_t rtt_hist_collapsed;
    uint8_t _pad[3];
    uint32_t rtt_hist[FT_TCP_HOCT];
};

struct ft_tcp_out {
    struct ft_tcp_dir_out d[2];
    uint64_t hs_total_ns, hs_server_ns, hs_client_ns;
    uint64_t art_min_ns, art_mean_ns, art_max_ns, art_p50_ns, art_p99_ns;
    uint32_t art_samples;
    uint8_t hs_valid;      /* FT_TH_S_TOTAL/SERVER/CLIENT: which handshake values this record carries */
    uint8_t art_hist_collapsed;
    int16_t art_hist_first;
    uint16_t art_hist_len;
    uint16_t _pad;
    uint32_t art_hist[FT_TCP_HOCT];
};

/* ---- serial arithmetic (RFC 1982 on 32 bits) ---- */
static inline int32_t ft_seq_diff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline int ft_seq_lt(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) < 0; }
static inline int ft_seq_le(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) <= 0; }
static inline int ft_seq_gt(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) > 0; }
static inline int ft_seq_ge(uint32_t a, uint32_t b) { return ft_seq_diff(a, b) >= 0; }

/* ---- sketch ---- */

/* 2^31 * 2^(k/8) for k = 1..7, rounded up: the sub-bucket boundaries of a mantissa normalised to
 * [2^31, 2^32) (tests/test_tcp_meter.py recomputes them). */
static const uint32_t FT_TCP_SUB_EDGE[FT_TCP_HSUB - 1] = {
    2341847524u, 2553802834u, 2784941738u, 3037000500u, 3311872530u, 3611622603u, 3938502376u,
};

/* Returns the global bucket index (0..511) of x ns: 8 * floor(log2 x) + the sub-bucket of the mantissa. */
static inline int ft_tcp_bucket(uint64_t x)
{
    int e, sub = 0, k;
    uint32_t m;
    if (x <= 1)
        return 0;
    e = 63 - __builtin_clzll(x);
    m = (uint32_t)((x << (63 - e)) >> 32);
    for (k = 0; k < FT_TCP_HSUB - 1; k++)
        sub += m >= FT_TCP_SUB_EDGE[k];
    return e * FT_TCP_HSUB + sub;
}

/* Returns the value (ns) that represents global bucket k: 2 * lo * g / (1 + g) with lo = 2^(k/8) and
 * g = 2^(1/8), the point whose relative distance to both bucket edges is the same 4.33 %. */
static inline double ft_tcp_bucket_value(int k)
{
    /* 2^(j/8) * 2 * 2^(1/8) / (1 + 2^(1/8)), j = 0..7 */
    static const double r[FT_TCP_HSUB] = {
        1.0432946175, 1.1377208478, 1.2406933822, 1.3529857271,
        1.4754413976, 1.6089802532, 1.7546054078, 1.9134107650,
    };
    int e = k / FT_TCP_HSUB;
    double p = 1.0;
    int i;
    /* 2^e without libm; e <= 63, the loop is bounded by 64 */
    for (i = 0; i < 64 && i < e; i++)
        p *= 2.0;
    return p * r[k % FT_TCP_HSUB];
}

/* Adds one sample x (ns) to h; st is the summary of the samples before this one (st->n == 0: h is stale
 * from an earlier period and starts afresh). */
static inline void ft_tcp_hist_add(struct ft_tcp_hist *h, const struct ft_tcp_stat *st, uint64_t x)
{
    int k = ft_tcp_bucket(x), i, shift;
    if (st->n == 0) {
        memset(h->count, 0, sizeof(h->count));
        h->base = (int16_t)(k - FT_TCP_HB / 2 < 0 ? 0 : k - FT_TCP_HB / 2);
        h->halvings = 0;
        h->collapsed = 0;
    }
    if (k >= h->base + FT_TCP_HB) {
        /* slide up by `shift`: bucket i takes bucket i + shift, and the shift + 1 lowest fold into bucket 0 */
        uint32_t folded = 0;
        shift = k - (h->base + FT_TCP_HB - 1);
        for (i = 0; i < FT_TCP_HB; i++) {
            if (i <= shift)
                folded += h->count[i];
            h->count[i] = (i > 0 && i + shift < FT_TCP_HB) ? h->count[i + shift] : 0;
        }
        h->count[0] = (uint16_t)(folded > 65535 ? 65535 : folded);
        if (folded)
            h->collapsed = 1;
        h->base = (int16_t)(h->base + shift);
    }
    if (k < h->base) {
        /* slide down as far as the empty top buckets allow, so that only a range wider than the window
         * collapses */
        int top = -1, need = h->base - k, room;
        for (i = 0; i < FT_TCP_HB; i++)
            if (h->count[i])
                top = i;
        room = FT_TCP_HB - 1 - top;
        shift = need < room ? need : room;
        if (h->base - shift < 0)
            shift = h->base;
        if (shift > 0) {
            for (i = FT_TCP_HB - 1; i >= 0; i--)
                h->count[i] = i >= shift ? h->count[i - shift] : 0;
            h->base = (int16_t)(h->base - shift);
        }
    }
    i = k - h->base;
    if (i < 0) {
        i = 0;
        h->collapsed = 1;
    }
    if (h->count[i] == 65535) {
        int j;
        for (j = 0; j < FT_TCP_HB; j++)
            h->count[j] = (uint16_t)((h->count[j] + 1) >> 1);
        h->halvings++;
    }
    h->count[i]++;
}

static inline void ft_tcp_stat_add(struct ft_tcp_stat *s, uint64_t x)
{
    if (s->n == 0 || x < s->min_ns)
        s->min_ns = x;
    if (x > s->max_ns)
        s->max_ns = x;
    s->sum_ns += x;
    s->n++;
}

/* Fills out[j] with the estimate of the nearest-rank quantile q_j = num[j] / 100 (j < nq <= 3, num
 * ascending): the representative value of the bucket that holds the sample of rank ceil(q_j * n), clamped
 * to [min, max]. One pass over the buckets for all of them (export runs once per record). */
static inline void ft_tcp_hist_quantiles(const struct ft_tcp_hist *h, const struct ft_tcp_stat *st,
                                         const uint8_t *num, int nq, uint64_t *out)
{
    uint64_t total = 0, cum = 0, rank[3];
    int i, j = 0;
    double v;
    for (i = 0; i < FT_TCP_HB; i++)
        total += h->count[i];
    for (i = 0; i < 3; i++) {
        rank[i] = i < nq ? (total * num[i] + 99) / 100 : 0;
        if (rank[i] == 0)
            rank[i] = 1;
        if (i < nq)
            out[i] = st->max_ns;
    }
    for (i = 0; i < FT_TCP_HB && j < nq; i++) {
        cum += h->count[i];
        while (j < nq && j < 3 && cum >= rank[j]) {
            v = ft_tcp_bucket_value(h->base + i);
            out[j] = v <= (double)st->min_ns ? st->min_ns
                   : v >= (double)st->max_ns ? st->max_ns : (uint64_t)(v + 0.5);
            j++;
        }
    }
}

/* Sums h into octaves (the compact histogram column): out[i] counts the samples with
 * 2^(first+i) <= x < 2^(first+i+1) ns, counts scaled back by the halvings (saturating at 2^32-1); first is
 * the lowest octave with a sample, len the number of octaves up to the highest. The sketch's 8 buckets per
 * octave line up with octave edges, so the sums are exact. */
static inline void ft_tcp_hist_export(const struct ft_tcp_hist *h, const struct ft_tcp_stat *st, uint32_t *out,
                                      int16_t *first, uint16_t *len, uint8_t *collapsed)
{
    int i, lo = -1, hi = -1, o0, o;
    uint64_t c;
    *first = 0;
    *len = 0;
    *collapsed = 0;
    if (st->n == 0)
        return;
    for (i = 0; i < FT_TCP_HB; i++) {
        if (h->count[i]) {
            if (lo < 0)
                lo = i;
            hi = i;
        }
    }
    if (lo < 0)
        return;
    o0 = (h->base + lo) / FT_TCP_HSUB;
    for (i = 0; i < FT_TCP_HB; i++) {
        if (i < lo || i > hi || !h->count[i])
            continue;
        o = (h->base + i) / FT_TCP_HSUB - o0;
        if (o < 0 || o >= FT_TCP_HOCT)
            continue;   /* cannot happen: the window spans at most 11 octaves */
        c = (uint64_t)out[o] + ((uint64_t)h->count[i] << (h->halvings > 16 ? 16 : h->halvings));
        out[o] = c > 0xffffffffu ? 0xffffffffu : (uint32_t)c;
    }
    *first = (int16_t)o0;
    *len = (uint16_t)((h->base + hi) / FT_TCP_HSUB - o0 + 1);
    *collapsed = h->collapsed;
}

/* ---- meter ---- */

/* Initialises m, which must be zeroed memory (the flow table zeroes every new flow): every field's zero is
 * its "nothing seen" state, so there is nothing left to set; zeroing 1 KB again per flow cost measurable
 * replay time. */
static inline void ft_tcp_init(struct ft_tcp_meter *m)
{
    (void)m;
}

/* Restarts counters, sample summaries and sketches for a new record period (active timeout). Sequence,
 * window, hole and timing state persist, so the next period goes on without false retransmissions. */
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

/* Drops timed segments of side s covering at most `ack` and returns the RTT sample (ns) when one ended
 * exactly at `ack` (Wireshark's ack_rtt matches the same way), else 0 with *ok = 0. */
static inline uint64_t ft_tcp_ring_ack(struct ft_tcp_side *s, uint32_t ack, uint64_t now, int *ok)
{
    int i, drop = 0;
    uint64_t sample = 0;
    *ok = 0;
    for (i = 0; i < FT_TCP_RING; i++) {
        if (i >= s->ring_n || ft_seq_gt(s->ring_end[i], ack))
            break;
        if (s->ring_end[i] == ack && now >= s->ring_ts[i]) {
            sample = now - s->ring_ts[i];
            *ok = 1;
        }
        drop++;
    }
    if (drop) {
        for (i = 0; i < FT_TCP_RING; i++) {
            if (i + drop < s->ring_n) {
                s->ring_end[i] = s->ring_end[i + drop];
                s->ring_ts[i] = s->ring_ts[i + drop];
            }
        }
        s->ring_n = (uint8_t)(s->ring_n - drop);
    }
    return sample;
}

/* Processes the ACK field (and TSecr) of segment p about the data of side pe (the peer of its sender):
 * acknowledged edge, holes the ACK passes, end of fast recovery, RTT samples (data-to-ACK, timestamps). */
static inline void ft_tcp_on_ack(struct ft_tcp_side *pe, const struct ft_pkt *p, uint64_t now)
{
    uint32_t ack = p->tcp_ack;
    int i, ok;
    uint64_t sample;

    if (!(pe->st & FT_TS_UNA) || ft_seq_gt(ack, pe->una)) {
        pe->una = ack;
        pe->st |= FT_TS_UNA;
    }
    /* holes the peer's data no longer needs: the receiver has the bytes, the probe never saw them */
    for (i = FT_TCP_HOLES - 1; i >= 0; i--) {
        if (i < pe->nholes && ft_seq_le(pe->hole_hi[i], ack)) {
            pe->c.seq_gaps_unfilled++;
            pe->nholes--;
            pe->hole_lo[i] = pe->hole_lo[pe->nholes];
            pe->hole_hi[i] = pe->hole_hi[pe->nholes];
            pe->hole_ts[i] = pe->hole_ts[pe->nholes];
        } else if (i < pe->nholes && ft_seq_gt(ack, pe->hole_lo[i])) {
            pe->hole_lo[i] = ack;
        }
    }
    if ((pe->st & FT_TS_ZWP) && (pe->st & FT_TS_SEQ) && ack == pe->nxt + 1)
        pe->nxt = ack;   /* the receiver took the probe's byte */
    pe->st &= (uint16_t)~FT_TS_ZWP;
    if ((pe->st & FT_TS_RECOV) && ft_seq_ge(ack, pe->recover))
        pe->st &= (uint16_t)~FT_TS_RECOV;

    sample = ft_tcp_ring_ack(pe, ack, now, &ok);
    if (ok) {
        ft_tcp_hist_add(&pe->rtt_h, &pe->rtt, sample);   /* before stat_add: it reads n == 0 as "empty" */
        ft_tcp_stat_add(&pe->rtt, sample);
    }

    /* TSecr echoing the TSval being timed, on a segment that acknowledges the timed segment */
    if ((pe->st & FT_TS_TSV) && (p->tcp_opt_present & FT_TCPOPT_TS)) {
        if (p->tcp_tsecr == pe->tsv_val && ft_seq_ge(ack, pe->tsv_end)) {
            if (now >= pe->tsv_ts)
                ft_tcp_stat_add(&pe->ts_rtt, now - pe->tsv_ts);
            pe->st &= (uint16_t)~FT_TS_TSV;
        } else if (ft_seq_gt(p->tcp_tsecr, pe->tsv_val)) {
            pe->st &= (uint16_t)~FT_TS_TSV;   /* echo moved past it (that segment was lost or not echoed) */
        }
    }
}

/* Records a hole [lo, hi) in side s's sequence space, opened at time now. */
static inline void ft_tcp_hole_open(struct ft_tcp_side *s, uint32_t lo, uint32_t hi, uint64_t now)
{
    s->c.seq_gaps++;
    if ((s->st & FT_TS_UNA) && ft_seq_le(hi, s->una)) {
        s->c.seq_gaps_unfilled++;   /* already acknowledged: the receiver had it, the probe did not */
        return;
    }
    if (s->nholes < FT_TCP_HOLES) {
        s->hole_lo[s->nholes] = lo;
        s->hole_hi[s->nholes] = hi;
        s->hole_ts[s->nholes] = now;
        s->nholes++;
    }
}

/* Classifies the part [lo, hi) of a segment lying below the edge: returns the index of the hole that holds
 * it entirely (a first transmission seen late), or -1 when it re-sends seen space (a retransmission).
 * Removes what it fills from the holes either way. */
static inline int ft_tcp_fill(struct ft_tcp_side *s, uint32_t lo, uint32_t hi, uint64_t *opened)
{
    int i, inside = -1;
    for (i = 0; i < FT_TCP_HOLES; i++) {
        if (i < s->nholes && ft_seq_le(s->hole_lo[i], lo) && ft_seq_le(hi, s->hole_hi[i])) {
            inside = i;
            *opened = s->hole_ts[i];
        }
    }
    for (i = FT_TCP_HOLES - 1; i >= 0; i--) {
        uint32_t hlo, hhi;
        if (i >= s->nholes)
            continue;
        hlo = s->hole_lo[i];
        hhi = s->hole_hi[i];
        if (ft_seq_le(hhi, lo) || ft_seq_le(hi, hlo))
            continue;                                   /* no overlap */
        if (ft_seq_le(lo, hlo) && ft_seq_ge(hi, hhi)) { /* filled whole */
            s->nholes--;
            s->hole_lo[i] = s->hole_lo[s->nholes];
            s->hole_hi[i] = s->hole_hi[s->nholes];
            s->hole_ts[i] = s->hole_ts[s->nholes];
        } else if (ft_seq_le(lo, hlo)) {                /* front filled */
            s->hole_lo[i] = hi;
        } else if (ft_seq_ge(hi, hhi)) {                /* back filled */
            s->hole_hi[i] = lo;
        } else {                                        /* middle filled: split when there is room */
            s->hole_hi[i] = lo;
            if (s->nholes < FT_TCP_HOLES) {
                s->hole_lo[s->nholes] = hi;
                s->hole_hi[s->nholes] = hhi;
                s->hole_ts[s->nholes] = s->hole_ts[i];
                s->nholes++;
            }
        }
    }
    return inside;
}

/* Meters one TCP segment p sent by side dir (0 = src, the initiator; 1 = dst) at its packet time.
 * Requires p->flags & FT_F_L4 and p->proto == 6. */
static inline void ft_tcp_update(struct ft_tcp_meter *m, const struct ft_pkt *p, int dir)
{
    struct ft_tcp_side *me = &m->s[dir & 1];
    struct ft_tcp_side *pe = &m->s[(dir & 1) ^ 1];
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
            me->c.rst_established++;
        else
            me->c.rst_handshake++;
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
         * tshark 4.0 agrees on each of these cases. */
        int answers = dir == 0 ? ((pe->st & FT_TS_SYN) ? ft_seq_gt(p->tcp_ack, pe->isn) : !rst)
                               : !(me->st & FT_TS_SYN) && (pe->st & FT_TS_SYN) && ft_seq_gt(p->tcp_ack, pe->isn);
        if ((m->hs & FT_TH_S_SYN) && !(m->hs & FT_TH_S_TOTAL) && answers && now >= m->syn_ts) {
            m->hs_total_ns = now - m->syn_ts;
            m->hs |= FT_TH_S_TOTAL;
            m->hs_out |= FT_TH_S_TOTAL;
        }
        if (dir == 0 && !rst && (m->hs & FT_TH_S_SYNACK) && !(m->hs & FT_TH_S_CLIENT) &&
            (pe->st & FT_TS_SYN) && ft_seq_gt(p->tcp_ack, pe->isn) && now >= m->synack_last) {
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
        me->isn = seq;
        if (p->tcp_opt_present & FT_TCPOPT_WSCALE) {
            me->st |= FT_TS_WSOPT;
            me->wscale = p->tcp_wscale > 14 ? 14 : p->tcp_wscale;
        }
        if (!(p->tcp_opt_present & FT_TCPOPT_WSCALE)) {
            /* no option on this SYN: scaling is off both ways */
            me->win_shift = 0;
            pe->win_shift = 0;
            me->st |= FT_TS_WINSCALE;
            pe->st |= FT_TS_WINSCALE;
        } else if (pe->st & FT_TS_SYN) {
            if (pe->st & FT_TS_WSOPT) {
                me->win_shift = me->wscale;
                pe->win_shift = pe->wscale;
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
            me->c.zero_window_probes++;
        else
            me->c.keepalive_packets++;
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
            me->c.zero_window_probes++;
            me->st |= FT_TS_ZWP;
        } else if (ft_seq_ge(seq, me->nxt)) {
            if (seq != me->nxt)
                ft_tcp_hole_open(me, me->nxt, seq, now);
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
                hole = ft_tcp_fill(me, seq, top, &opened);
                if ((me->st & FT_TS_LOW) && ft_seq_lt(seq, me->low))
                    me->low = seq;
            }
            if (hole == -1) {
                me->c.retrans_packets++;
                me->c.retrans_bytes += len;
                if (syn)
                    me->c.syn_retrans_packets++;
                if ((me->st & FT_TS_UNA) && ft_seq_le(end, me->una))
                    me->c.spurious_retrans_packets++;
                else if (me->st & FT_TS_RECOV)
                    me->c.fast_retrans_packets++;
                else
                    me->c.timeout_retrans_packets++;
            } else if (hole >= 0) {
                uint64_t window = (m->hs & FT_TH_S_TOTAL) && m->hs_total_ns ? m->hs_total_ns
                                                                             : FT_TCP_OOO_DEFAULT_NS;
                if (now >= opened && now - opened < window)
                    me->c.out_of_order_packets++;
                else
                    me->c.upstream_retrans_packets++;
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
            me->ring_end[me->ring_n] = end;
            me->ring_ts[me->ring_n] = now;
            me->ring_n++;
        }
        if ((p->tcp_opt_present & FT_TCPOPT_TS) && !(me->st & FT_TS_TSV)) {
            me->tsv_val = p->tcp_tsval;
            me->tsv_end = end;
            me->tsv_ts = now;
            me->st |= FT_TS_TSV;
        }
        if (len > 0) {
            /* application response time: src payload is a request, dst payload its response */
            if (dir == 0) {
                m->req_ts = now;
                m->hs |= FT_TH_S_ARTREQ;
            } else if (m->hs & FT_TH_S_ARTREQ) {
                if (now >= m->req_ts) {
                    ft_tcp_hist_add(&m->art_h, &m->art, now - m->req_ts);
                    ft_tcp_stat_add(&m->art, now - m->req_ts);
                }
                m->hs &= (uint8_t)~FT_TH_S_ARTREQ;
            }
        }
        /* window full: the segment reaches the right edge the peer advertised (scale known) */
        if (len > 0 && !syn && !fin && (pe->st & FT_TS_ACKED) && (pe->st & FT_TS_WINSCALE) &&
            ft_seq_ge(end, pe->last_ack + pe->win))
            me->c.window_full_packets++;
    }

    /* ---- what this side says about the peer's data ---- */
    if (ackf) {
        /* RFC 5681 duplicate ACK: no data, no SYN/FIN, same ACK and window as before, and the peer has data
         * outstanding */
        if (len == 0 && !syn && !fin && !rst && (me->st & FT_TS_ACKED) && p->tcp_ack == me->last_ack &&
            p->tcp_win == me->win_raw && p->tcp_win != 0 && (pe->st & FT_TS_SEQ) &&
            ft_seq_gt(pe->nxt, p->tcp_ack)) {
            me->c.dup_acks++;
            me->dupacks++;
            if (me->dupacks == 3 && !(pe->st & FT_TS_RECOV)) {
                pe->st |= FT_TS_RECOV;
                pe->recover = pe->nxt;
            }
        } else if (!(me->st & FT_TS_ACKED) || p->tcp_ack != me->last_ack) {
            me->dupacks = 0;
        }
        if (!rst)
            ft_tcp_on_ack(pe, p, now);
        me->last_ack = p->tcp_ack;
        me->st |= FT_TS_ACKED;
    }
    if (p->tcp_opt_present & FT_TCPOPT_SACK)
        me->c.sack_blocks += p->tcp_sack_count;

    /* advertised window (never scaled on SYN segments) */
    if (!rst) {
        me->win_raw = p->tcp_win;
        me->win = syn ? p->tcp_win : ((uint32_t)p->tcp_win << me->win_shift);
        if (p->tcp_win == 0 && !syn && !fin) {
            if (!(me->st & FT_TS_ZWIN))
                me->c.zero_window_events++;
            me->st |= FT_TS_ZWIN;
        } else if (p->tcp_win != 0) {
            me->st &= (uint16_t)~FT_TS_ZWIN;
        }
    }
}

/* Fills o with the current period of m. final = 1 when the flow ends with this record: holes still open
 * then count as never filled. */
static inline void ft_tcp_export(const struct ft_tcp_meter *m, struct ft_tcp_out *o, int final)
{
    int d;
    for (d = 0; d < 2; d++) {
        const struct ft_tcp_side *s = &m->s[d];
        struct ft_tcp_dir_out *r = &o->d[d];
        r->c = s->c;
        if (final)
            r->c.seq_gaps_unfilled += s->nholes;
        r->rtt_samples = s->rtt.n;
        if (s->rtt.n) {
            r->rtt_min_ns = s->rtt.min_ns;
            r->rtt_max_ns = s->rtt.max_ns;
            r->rtt_mean_ns = s->rtt.sum_ns / s->rtt.n;
            static const uint8_t q3[3] = {50, 90, 99};
            uint64_t q[3];
            ft_tcp_hist_quantiles(&s->rtt_h, &s->rtt, q3, 3, q);
            r->rtt_p50_ns = q[0];
            r->rtt_p90_ns = q[1];
            r->rtt_p99_ns = q[2];
        }
        ft_tcp_hist_export(&s->rtt_h, &s->rtt, r->rtt_hist, &r->rtt_hist_first, &r->rtt_hist_len,
                           &r->rtt_hist_collapsed);
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
        static const uint8_t q2[2] = {50, 99};
        uint64_t q[2];
        ft_tcp_hist_quantiles(&m->art_h, &m->art, q2, 2, q);
        o->art_p50_ns = q[0];
        o->art_p99_ns = q[1];
    }
    ft_tcp_hist_export(&m->art_h, &m->art, o->art_hist, &o->art_hist_first, &o->art_hist_len,
                       &o->art_hist_collapsed);
}

/* Field table of struct ft_tcp_out for the numpy mirror (offsets relative to struct ft_tcp_out; the flow
 * table adds offsetof(struct ft_flowrec, tcp)). */
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
    FT_TCPF(pfx "rtt_hist_first", d[i].rtt_hist_first, "<i2"),                                             \
    FT_TCPF(pfx "rtt_hist_len", d[i].rtt_hist_len, "<u2"),                                                 \
    FT_TCPF(pfx "rtt_hist_collapsed", d[i].rtt_hist_collapsed, "u1"),                                      \
    FT_TCPF(pfx "rtt_hist", d[i].rtt_hist, "(12,)<u4"),                                                     \
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
    FT_TCPF("art_hist_first", art_hist_first, "<i2"),
    FT_TCPF("art_hist_len", art_hist_len, "<u2"),
    FT_TCPF("art_hist_collapsed", art_hist_collapsed, "u1"),
    FT_TCPF("art_hist", art_hist, "(12,)<u4"),
};
static const int FT_TCPOUT_NFIELDS = sizeof(FT_TCPOUT_FIELDS) / sizeof(FT_TCPOUT_FIELDS[0]);

#endif /* FT_TCP_H */
