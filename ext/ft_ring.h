/* ft_ring.h: user-space consumer of the live probe's BPF ring buffer (map pkt_events, probe/bpf/flowtap.bpf.c).
 * Reads samples (struct ft_live_sample: GSO fields, a prefix of a struct ft_pkt whose rest is zero, then
 * 0..FT_SNAP_LEN payload bytes) straight out of the mmap'ed ring into an array of full struct ft_pkt, with no
 * per-packet call into Python and no per-sample callback (BCC's per-event Python callback tops out far below
 * the 1 Mpps target).
 *
 * Ring layout (kernel/bpf/ringbuf.c, stable since 5.8): mmap offset 0 is the consumer page (consumer_pos,
 * read-write); offset PAGE is the producer page (producer_pos, read-only) followed by the data pages mapped
 * twice in a row, so a sample that wraps is contiguous in memory. Each sample starts on an 8-byte boundary
 * with an 8-byte header: u32 len (bit 31 BUSY: still being written; bit 30 DISCARD), u32 page offset.
 * Positions only grow; the data offset is pos & (size - 1).
 */
#ifndef FT_RING_H
#define FT_RING_H
#include <stdint.h>
#include <string.h>
#include "ft_record.h"

#define FT_RINGBUF_BUSY_BIT (1u << 31)
#define FT_RINGBUF_DISCARD_BIT (1u << 30)
#define FT_RINGBUF_HDR_SZ 8u

struct ft_ring {
    volatile uint64_t *consumer_pos; /* consumer page */
    const volatile uint64_t *producer_pos; /* producer page */
    const uint8_t *data;             /* data pages, mapped twice */
    uint64_t mask;                   /* data size - 1 (size is a power of two) */
    /* counters of this consumer */
    uint64_t samples;                /* samples read (records) */
    uint64_t discarded;              /* samples the producer discarded */
    uint64_t malformed;              /* samples shorter than a record: skipped (never expected) */
    uint64_t snippet_bytes;          /* payload bytes copied */
    uint64_t snippets_cut;           /* snippets shorter than their packet's payload (the snap length hit) */
    uint64_t gso_split;              /* GSO samples cut into wire segments */
    uint64_t gso_unsplit;            /* GSO samples with more segments than a batch holds: kept whole */
};

/* Mirrors struct ft_live_sample_hdr of probe/bpf/ft_live.h: what precedes the record prefix in a sample. */
struct ft_ring_sample_hdr {
    uint32_t gso_segs;
    uint16_t gso_size;
    uint16_t snippet_len;
    uint16_t rec_len;   /* bytes of struct ft_pkt that follow; the record's remaining bytes are zero */
    uint16_t _pad[3];
};

/* Writes segment i of n of the GSO record src into dst, as the kernel's tcp_gso_segment / __udp_gso_segment
 * will cut it: gso_size payload bytes each (the last gets the rest), TCP sequence numbers advanced, FIN and PSH
 * only on the last segment, CWR only on the first (RFC 3168 6.1.2), lengths recomputed per segment. The caller
 * checked (n - 1) * gso_size < payload_len <= n * gso_size, as the BPF program did before counting. */
static inline void ft_gso_segment(struct ft_pkt *dst, const struct ft_pkt *src, uint32_t i, uint32_t n,
                                  uint32_t gso_size)
{
    uint32_t seg = i + 1 < n ? gso_size : src->payload_len - (n - 1) * gso_size;
    uint32_t hdrs = src->l3_len - src->payload_len;

    *dst = *src;
    dst->payload_len = seg;
    dst->l3_len = hdrs + seg;
    dst->wire_len = src->wire_len - src->payload_len + seg;
    dst->cap_len = dst->wire_len;
    if (src->proto == 6) {
        dst->tcp_seq = src->tcp_seq + i * gso_size;
        if (i + 1 < n)
            dst->tcp_flags &= (uint16_t)~0x09; /* FIN, PSH */
        if (i > 0)
            dst->tcp_flags &= (uint16_t)~0x80; /* CWR */
    }
    if (i > 0)
        dst->payload_cap = 0; /* the snippet is the start of the payload: first segment's */
    else if (dst->payload_cap > seg)
        dst->payload_cap = (uint16_t)seg;
}

/* Drains samples into out[0..*n_out) (at most max records). Snippets go to data[*data_used..data_cap); a
 * sample whose snippet or whose GSO segments do not fit ends the batch unread. For each record: ts_ns +=
 * ts_offset_ns (kernel monotonic -> wall clock, the one place it happens), payload_cap = snippet bytes in data
 * (0 without one), snippet_len[i] the same, cap_len = payload_off + payload_cap (the frame bytes user space
 * holds end with the snippet), and frame_off = (snippet's offset in data) - payload_off modulo 2^64, so that
 * data[frame_off + payload_off ...] is the snippet as for replay batches (frame_off 0 without a snippet). A
 * GSO sample becomes gso_segs records (ft_gso_segment).
 * Returns 1 when samples were left in the ring (batch full, or a snippet did not fit), 0 when it is empty. */
static inline uint64_t ft_ring_drain(struct ft_ring *r, struct ft_pkt *out, uint32_t max, uint8_t *data,
                                     uint64_t data_cap, uint64_t *data_used, uint16_t *snippet_len,
                                     int64_t ts_offset_ns, uint32_t *n_out)
{
    uint64_t cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
    uint64_t prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
    uint32_t n = 0;
    uint64_t used = *data_used;

    while (cons < prod && n < max) {
        const uint8_t *hdr = r->data + (cons & r->mask);
        uint32_t len = __atomic_load_n((const volatile uint32_t *)hdr, __ATOMIC_ACQUIRE);
        uint64_t step;

        if (len & FT_RINGBUF_BUSY_BIT) /* reserved, not yet committed: later samples must wait for it */
            break;
        step = ((uint64_t)(len & ~(FT_RINGBUF_BUSY_BIT | FT_RINGBUF_DISCARD_BIT)) + FT_RINGBUF_HDR_SZ + 7) &
               ~(uint64_t)7;
        if (len & FT_RINGBUF_DISCARD_BIT) {
            r->discarded++;
        } else if (len < sizeof(struct ft_ring_sample_hdr)) {
            r->malformed++;
        } else {
            struct ft_ring_sample_hdr h;
            struct ft_pkt rec;
            struct ft_pkt *p = &out[n];
            uint64_t snip, segs, rlen;
            uint32_t i;

            memcpy(&h, hdr + FT_RINGBUF_HDR_SZ, sizeof(h));
            snip = h.snippet_len;
            rlen = h.rec_len;
            /* never from our program; do not read past the sample or the record */
            if (rlen > sizeof(rec) || rlen < 24 || rlen + snip > len - sizeof(h)) {
                r->malformed++;
                goto next;
            }
            /* the compact record: the prefix sent, zeros after it (ft_live.h) */
            memcpy(&rec, hdr + FT_RINGBUF_HDR_SZ + sizeof(h), rlen);
            memset((uint8_t *)&rec + rlen, 0, sizeof(rec) - rlen);
            segs = h.gso_segs > 1 && h.gso_size > 0 &&
                   rec.payload_len > (uint64_t)(h.gso_segs - 1) * h.gso_size &&
                   rec.payload_len <= (uint64_t)h.gso_segs * h.gso_size && rec.payload_len < rec.l3_len
                       ? h.gso_segs : 1;
            if (segs > max) { /* cannot ever fit: keep it whole rather than stall (counted) */
                segs = 1;
                r->gso_unsplit++;
            }
            if (used + snip > data_cap || n + segs > max) /* keep it for the next batch */
                break;
            rec.ts_ns = (uint64_t)((int64_t)rec.ts_ns + ts_offset_ns);
            if (snip) {
                memcpy(data + used, hdr + FT_RINGBUF_HDR_SZ + sizeof(h) + rlen, snip);
                rec.frame_off = used - rec.payload_off;
                used += snip;
                r->snippet_bytes += snip;
                r->snippets_cut += snip < rec.payload_len;
            } else {
                rec.frame_off = 0;
            }
            rec.payload_cap = (uint16_t)snip;
            /* The frame bytes user space holds are the snippet's: cap_len ends there, so that a reader of
             * data[frame_off .. frame_off + cap_len) (DPI, the RoCE meter's RDMA CM parse) stays inside it.
             * The kernel parsed the headers from the whole frame: wire_len and the flags say what it saw. */
            rec.cap_len = (uint32_t)rec.payload_off + (uint32_t)snip;
            if (segs == 1) {
                *p = rec;
                snippet_len[n] = (uint16_t)snip;
                n++;
            } else {
                for (i = 0; i < segs; i++) {
                    ft_gso_segment(&out[n], &rec, i, (uint32_t)segs, h.gso_size);
                    if (i > 0)
                        out[n].frame_off = 0;
                    out[n].cap_len = (uint32_t)out[n].payload_off + out[n].payload_cap;
                    snippet_len[n] = out[n].payload_cap;
                    n++;
                }
                r->gso_split++;
            }
            r->samples++;
        }
    next:
        cons += step;
        if (cons >= prod) /* re-read: the producer may have moved while we copied */
            prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
    }
    /* Publishing the position frees the space for the producer. */
    __atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
    *n_out = n;
    *data_used = used;
    return prod > cons ? 1 : 0;
}

#endif /* FT_RING_H */
