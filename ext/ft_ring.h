/* ft_ring.h: user-space consumer of the live probe's BPF ring buffer (map pkt_events, probe/bpf/flowtap.bpf.c).
 * Reads samples (struct ft_live_sample: a struct ft_pkt, then 0..FT_SNAP_LEN payload bytes) straight out of
 * the mmap'ed ring into an array of struct ft_pkt, with no per-packet call into Python and no per-sample
 * callback (BCC's per-event Python callback tops out far below the 1 Mpps target).
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
};

/* Drains at most max samples into out[0..*n_out). Snippets go to data[*data_used..data_cap); a sample whose
 * snippet does not fit ends the batch unread. For each record: ts_ns += ts_offset_ns (kernel monotonic ->
 * wall clock, the one place it happens), payload_cap = snippet bytes in data (0 without one), snippet_len[i]
 * the same, and frame_off = (snippet's offset in data) - payload_off modulo 2^64, so that
 * data[frame_off + payload_off ...] is the snippet as for replay batches (frame_off 0 without a snippet).
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
        uint64_t step, snip;

        if (len & FT_RINGBUF_BUSY_BIT) /* reserved, not yet committed: later samples must wait for it */
            break;
        len &= ~(FT_RINGBUF_BUSY_BIT | FT_RINGBUF_DISCARD_BIT);
        step = ((uint64_t)len + FT_RINGBUF_HDR_SZ + 7) & ~(uint64_t)7;
        if (__atomic_load_n((const volatile uint32_t *)hdr, __ATOMIC_RELAXED) & FT_RINGBUF_DISCARD_BIT) {
            r->discarded++;
        } else if (len < sizeof(struct ft_pkt)) {
            r->malformed++;
        } else {
            struct ft_pkt *p = &out[n];

            snip = len - sizeof(struct ft_pkt);
            if (used + snip > data_cap) /* keep it for the next batch */
                break;
            memcpy(p, hdr + FT_RINGBUF_HDR_SZ, sizeof(struct ft_pkt));
            p->ts_ns = (uint64_t)((int64_t)p->ts_ns + ts_offset_ns);
            if (snip) {
                memcpy(data + used, hdr + FT_RINGBUF_HDR_SZ + sizeof(struct ft_pkt), snip);
                p->frame_off = used - p->payload_off;
                used += snip;
                r->snippet_bytes += snip;
            } else {
                p->frame_off = 0;
            }
            p->payload_cap = (uint16_t)snip;
            snippet_len[n] = (uint16_t)snip;
            n++;
            r->samples++;
        }
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
