/* ft_hist.h: the one latency sketch of the meters (TCP RTT and response time in ft_tcp.h, RoCE latencies in
 * ft_roce.h), so that every histogram column of the flow record has one layout and one formula (the field
 * metadata, dpi/schema.py HIST_LAYOUT, states it once).
 *
 * Bucket layout (the contract the Arrow field metadata repeats): global bucket k = 0..511 holds durations x
 * (ns) with 2^(k/8) <= x < 2^((k+1)/8); x <= 1 goes to bucket 0. Eight geometric buckets per octave, so the
 * representative value of a bucket (ft_hist_bucket_value) is within (2^(1/8)-1)/(2^(1/8)+1) = 4.33 % of any
 * sample in it: every percentile read from the sketch has at most 4.33 % relative error (when it is not
 * clamped to the exact min/max, which only makes it closer).
 *
 * Per-flow cost: a sketch keeps a window of FT_HIST_BUCKETS = 80 consecutive buckets (10 octaves: a 1024x
 * range, e.g. 10 us .. 10 ms) as 16-bit counts: sizeof(struct ft_hist) = 164 bytes, plus 32 bytes of exact
 * summary (struct ft_stat). The window starts centred on the first sample and slides up when a larger sample
 * needs room, down when a smaller one does and the top buckets are empty; only samples that cannot fit in
 * any 1024x window with the others are folded into the lowest bucket, and `collapsed` is set then
 * (percentiles at or above max/1024 keep their bound, lower ones read high).
 * A count that would pass 65535 halves every count first (`halvings` counts it; export scales back).
 *
 * Exported as it is (struct ft_hist in the side records of ft_tcp_out and ft_roce_out); the batch builder
 * (dpi/hist_columns.py) makes the Arrow column struct<first_bucket int16, counts list<uint32>,
 * collapsed bool> from it: counts << halvings, zero buckets at both ends left out. All loops are bounded by
 * FT_HIST_BUCKETS, FT_HIST_SUB or FT_HIST_MAXQ; nothing allocates.
 */
#ifndef FT_HIST_H
#define FT_HIST_H
#include <stdint.h>
#include <string.h>

#define FT_HIST_BUCKETS 80 /* window kept per sketch: 10 octaves of 8 buckets */
#define FT_HIST_SUB 8      /* buckets per octave */
#define FT_HIST_GLOBAL 512 /* global buckets: 64 octaves of 8 cover every uint64_t */

struct ft_hist {
    uint16_t count[FT_HIST_BUCKETS];
    int16_t base;      /* global index of count[0] */
    uint8_t halvings;  /* times every count was halved */
    uint8_t collapsed; /* samples below the window were folded into count[0] */
};

/* Exact summary of the samples fed to a sketch. */
struct ft_stat {
    uint64_t sum_ns;
    uint64_t min_ns;
    uint64_t max_ns;
    uint32_t n;
    uint32_t _pad;
};

_Static_assert(sizeof(struct ft_hist) == 164, "struct ft_hist is 164 bytes (docs/roce.md)");
_Static_assert(sizeof(struct ft_stat) == 32, "struct ft_stat is 32 bytes (docs/roce.md)");

/* 2^31 * 2^(k/8) for k = 1..7, rounded up: the sub-bucket edges of a mantissa normalised to [2^31, 2^32)
 * (tests/test_roce_meter.py recomputes them with exact decimal arithmetic). */
static const uint32_t FT_HIST_SUB_EDGE[FT_HIST_SUB - 1] = {
    2341847524u, 2553802834u, 2784941738u, 3037000500u, 3311872530u, 3611622603u, 3938502376u,
};

/* Returns the global bucket index (0..511) of x ns: 8 * floor(log2 x) + the sub-bucket of the mantissa. */
static inline int ft_hist_bucket(uint64_t x)
{
    int e, sub = 0, k;
    uint32_t m;
    if (x <= 1)
        return 0;
    e = 63 - __builtin_clzll(x);
    m = (uint32_t)((x << (63 - e)) >> 32);
    for (k = 0; k < FT_HIST_SUB - 1; k++)
        sub += m >= FT_HIST_SUB_EDGE[k];
    return e * FT_HIST_SUB + sub;
}

/* Returns the value (ns) that represents global bucket k: 2 * lo * g / (1 + g) with lo = 2^(k/8) and
 * g = 2^(1/8), the point whose relative distance to both bucket edges is the same 4.33 %. */
static inline double ft_hist_bucket_value(int k)
{
    /* 2^(j/8) * 2 * 2^(1/8) / (1 + 2^(1/8)), j = 0..7 */
    static const double r[FT_HIST_SUB] = {
        1.0432946175, 1.1377208478, 1.2406933822, 1.3529857271,
        1.4754413976, 1.6089802532, 1.7546054078, 1.9134107650,
    };
    int e = k / FT_HIST_SUB, i;
    double p = 1.0;
    for (i = 0; i < 64 && i < e; i++) /* 2^e without libm */
        p *= 2.0;
    return p * r[k % FT_HIST_SUB];
}

/* Adds x (ns) to the exact summary: count, sum, min, max. */
static inline void ft_stat_add(struct ft_stat *s, uint64_t x)
{
    if (s->n == 0 || x < s->min_ns)
        s->min_ns = x;
    if (x > s->max_ns)
        s->max_ns = x;
    s->sum_ns += x;
    s->n++;
}

/* Adds sample x (ns) to h; st is the summary of the samples added before this one (st->n == 0 starts the
 * sketch afresh, so a sketch needs no initialisation beyond what its summary says). */
static inline void ft_hist_add(struct ft_hist *h, const struct ft_stat *st, uint64_t x)
{
    int k = ft_hist_bucket(x), i, shift;
    if (st->n == 0) {
        memset(h->count, 0, sizeof(h->count));
        h->base = (int16_t)(k - FT_HIST_BUCKETS / 2 < 0 ? 0 : k - FT_HIST_BUCKETS / 2);
        h->halvings = 0;
        h->collapsed = 0;
    }
    if (k >= h->base + FT_HIST_BUCKETS) {
        /* slide up by `shift`: bucket i takes bucket i + shift, the shift + 1 lowest fold into bucket 0 */
        uint32_t folded = 0;
        shift = k - (h->base + FT_HIST_BUCKETS - 1);
        for (i = 0; i < FT_HIST_BUCKETS; i++) {
            if (i <= shift)
                folded += h->count[i];
            h->count[i] = (uint16_t)((i > 0 && i + shift < FT_HIST_BUCKETS) ? h->count[i + shift] : 0);
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
        for (i = 0; i < FT_HIST_BUCKETS; i++)
            if (h->count[i])
                top = i;
        room = FT_HIST_BUCKETS - 1 - top;
        shift = need < room ? need : room;
        if (h->base - shift < 0)
            shift = h->base;
        if (shift > 0) {
            for (i = FT_HIST_BUCKETS - 1; i >= 0; i--)
                h->count[i] = (uint16_t)(i >= shift ? h->count[i - shift] : 0);
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
        for (j = 0; j < FT_HIST_BUCKETS; j++)
            h->count[j] = (uint16_t)((h->count[j] + 1) >> 1);
        h->halvings++;
    }
    h->count[i]++;
}

/* Adds x to both the summary and the sketch. */
static inline void ft_lat_add(struct ft_hist *h, struct ft_stat *st, uint64_t x)
{
    ft_hist_add(h, st, x);
    ft_stat_add(st, x);
}

#define FT_HIST_MAXQ 4 /* quantiles one ft_hist_quantiles call returns at most */

/* Fills out[j] (j < nq <= FT_HIST_MAXQ, pct[] ascending, 1..100) with the estimate of the nearest-rank
 * quantile pct[j] / 100: the representative value of the bucket that holds the sample of rank
 * ceil(pct[j] * total / 100), clamped to [min, max]. One pass over the window for all of them (it runs once
 * per exported record). Leaves out[] untouched when the sketch is empty (st->n == 0). */
static inline void ft_hist_quantiles(const struct ft_hist *h, const struct ft_stat *st, const uint8_t *pct,
                                     int nq, uint64_t *out)
{
    uint64_t total = 0, cum = 0, rank[FT_HIST_MAXQ];
    int i, j = 0;
    double v;
    if (st->n == 0)
        return;
    if (nq > FT_HIST_MAXQ)
        nq = FT_HIST_MAXQ;
    for (i = 0; i < FT_HIST_BUCKETS; i++)
        total += h->count[i];
    for (i = 0; i < nq; i++) {
        rank[i] = (total * pct[i] + 99) / 100;
        if (rank[i] == 0)
            rank[i] = 1;
        out[i] = st->max_ns;   /* what a rank past the counts (cannot happen) would read */
    }
    for (i = 0; i < FT_HIST_BUCKETS && j < nq; i++) {
        cum += h->count[i];
        while (j < nq && cum >= rank[j]) {
            v = ft_hist_bucket_value(h->base + i);
            out[j] = v <= (double)st->min_ns ? st->min_ns
                   : v >= (double)st->max_ns ? st->max_ns : (uint64_t)(v + 0.5);
            j++;
        }
    }
}

#endif /* FT_HIST_H */
