/* ft_reader.c: classic pcap and pcapng records -> struct ft_pkt (see ft_reader.h for the contract).
 *
 * Formats: classic pcap as described in draft-ietf-opsawg-pcap, pcapng as in draft-ietf-opsawg-pcapng.
 * Every length read from the file is checked against the bytes present before anything is read through
 * it, and against a fixed limit before the reader asks for more bytes, so a corrupt length can neither
 * make the reader read outside the buffer nor make the caller buffer more than FT_MAX_BLOCK bytes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ft_reader.h"
#include "ft_parse.h"
#include "ft_parse_fast.h"

#define PCAP_MAGIC_US 0xa1b2c3d4u
#define PCAP_MAGIC_NS 0xa1b23c4du
#define PCAP_MAGIC_MODIFIED 0xa1b2cd34u /* Kuznetzov's patched libpcap: 24-byte records */
#define PCAP_FILE_HDR 24u
#define PCAP_REC_HDR 16u

#define PCAPNG_SHB 0x0a0d0d0au /* a palindrome: reads the same in both byte orders */
#define PCAPNG_BOM 0x1a2b3c4du
#define PCAPNG_IDB 1u
#define PCAPNG_PB 2u /* obsolete packet block */
#define PCAPNG_SPB 3u
#define PCAPNG_EPB 6u

#define SHB_MIN 28u /* type, length, BOM, version, section length, trailing length */
#define IDB_MIN 20u
#define EPB_MIN 32u /* EPB and obsolete PB share the layout of their fixed part */
#define SPB_MIN 16u
#define EPB_DATA 28u /* offset of the packet data in an EPB / PB */

#define OPT_ENDOFOPT 0
#define OPT_EPB_FLAGS 2 /* also pack_flags of the obsolete PB */
#define OPT_IF_TSRESOL 9
#define OPT_IF_TSOFFSET 14

/* Step results besides the public statuses: progress made, with or without a record written. */
#define STEP_PKT 0x100
#define STEP_NOPKT 0x101

#define NS_PER_S 1000000000ull

/* Host-order values read from unaligned bytes; `swap` selects the other byte order. */
static inline ft_u16 rd16(const ft_u8 *p, int swap)
{
    ft_u16 v;
    memcpy(&v, p, 2);
    return swap ? __builtin_bswap16(v) : v;
}

static inline ft_u32 rd32(const ft_u8 *p, int swap)
{
    ft_u32 v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

static inline ft_u64 rd64(const ft_u8 *p, int swap)
{
    ft_u64 v;
    memcpy(&v, p, 8);
    return swap ? __builtin_bswap64(v) : v;
}

/* The first four bytes as a big-endian number, so that error messages show them in file order. */
static ft_u32 rd32be(const ft_u8 *p, size_t avail)
{
    ft_u32 v = 0;
    for (size_t i = 0; i < 4 && i < avail; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Records the error (absolute offset and message) and makes the reader fail from now on.
 * Returns FT_RD_ERROR so that callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(struct ft_reader *r, ft_u64 off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_msg, sizeof r->err_msg, fmt, ap);
    va_end(ap);
    r->err_off = off;
    r->failed = 1;
    return FT_RD_ERROR;
}

void ft_reader_init(struct ft_reader *r)
{
    memset(r, 0, sizeof *r);
}

/* pcapng if_tsresol: bit 7 clear -> units of 10^-v s, set -> units of 2^-(v & 0x7f) s. Chooses the exact
 * integer operation that turns a count of such units into ns. */
static void iface_set_tsresol(struct ft_iface *f, ft_u8 v)
{
    static const ft_u64 pow10[20] = {
        1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
        1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
        100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
        1000000000000000000ull, 10000000000000000000ull,
    };
    if (v & 0x80) {
        f->ts_mode = FT_TS_SHIFT;
        f->ts_shift = v & 0x7f;
    } else if (v <= 9) {
        f->ts_mode = FT_TS_MUL;
        f->ts_factor = pow10[9 - v];
    } else if (v - 9 <= 19) {
        f->ts_mode = FT_TS_DIV;
        f->ts_factor = pow10[v - 9];
    } else {
        /* 10^(v-9) > 2^64 > any count: every timestamp is below 1 ns */
        f->ts_mode = FT_TS_ZERO;
    }
}

/* Count of the interface's timestamp units -> ns since the epoch, exactly (truncating below 1 ns), with
 * if_tsoffset applied. The 128-bit intermediate holds ts * 10^9 for any 64-bit ts (< 2^94). */
static inline ft_u64 iface_ts_ns(struct ft_reader *r, const struct ft_iface *f, ft_u64 ts)
{
    unsigned __int128 v;
    switch (f->ts_mode) {
    case FT_TS_MUL:
        v = (unsigned __int128)ts * f->ts_factor;
        break;
    case FT_TS_DIV:
        v = ts / f->ts_factor;
        break;
    case FT_TS_SHIFT:
        v = ((unsigned __int128)ts * NS_PER_S) >> f->ts_shift;
        break;
    default:
        v = 0;
        break;
    }
    if (f->ts_offset_s != 0) {
        __int128 s = (__int128)v + (__int128)f->ts_offset_s * (__int128)NS_PER_S;
        if (s < 0) {
            r->c.ts_clamped++;
            return 0;
        }
        v = (unsigned __int128)s;
    }
    if (v > (unsigned __int128)UINT64_MAX) {
        r->c.ts_clamped++;
        return UINT64_MAX;
    }
    return (ft_u64)v;
}

/* Fills the framing fields of *p, counts the packet and parses the frame buf[off .. off+cap).
 * The caller has checked that the frame lies inside the buffer and that cap <= FT_MAX_FRAME. */
static inline void emit(struct ft_reader *r, struct ft_pkt *p, const ft_u8 *buf, size_t off, ft_u32 cap,
                        ft_u32 wire, ft_u64 ts_ns, ft_u32 iface, ft_u8 dir, ft_u32 linktype, ft_u32 snaplen)
{
    memset(p, 0, sizeof *p);
    if (snaplen != 0 && cap > snaplen)
        r->c.over_snaplen++;
    if (cap > wire) {
        /* a writer that swapped or zeroed the lengths: the wire carried at least what was captured */
        r->c.caplen_over_wire++;
        wire = cap;
    }
    p->ts_ns = ts_ns;
    p->frame_off = off;
    p->wire_len = wire;
    p->cap_len = cap;
    p->iface = (ft_u16)iface;
    p->direction = dir;
    p->linktype = (ft_u16)linktype;
    if (cap < wire) {
        p->flags = FT_F_TRUNC;
        r->c.truncated++;
    }
    r->c.packets++;
    r->c.bytes += wire;
    r->c.cap_bytes += cap;
    r->last_ts_ns = ts_ns;
    /* the common Ethernet frames in straight-line code (the live probe's fast path); the rest, and any
     * frame it declines, through the general parser: the same record either way (tests/test_parser.py) */
    if (linktype == FT_LINKTYPE_ETHERNET && ft_parse_fast_ether(buf + off, buf + off + cap, p) != FT_FAST_DECLINED)
        return;
    ft_parse(buf + off, buf + off + cap, linktype, p);
}

/* The first bytes of the stream: classic pcap file header (consumed) or the start of a pcapng SHB (left
 * for the block parser). Returns STEP_NOPKT, FT_RD_MORE or FT_RD_ERROR. */
static int file_start(struct ft_reader *r, const ft_u8 *buf, size_t len, size_t *pos, int eof)
{
    size_t avail = len - *pos;
    const ft_u8 *p = buf + *pos;
    ft_u64 abs = r->buf_abs + *pos;

    if (avail < 4) {
        if (!eof)
            return FT_RD_MORE;
        if (r->buf_abs + len == 0)
            return fail(r, abs, "empty file");
        return fail(r, abs, "file too short for a capture header (%zu bytes)", avail);
    }
    ft_u32 magic = rd32(p, 0);
    if (magic == PCAPNG_SHB) {
        r->format = FT_FMT_PCAPNG;
        return STEP_NOPKT;
    }
    int swap;
    if (magic == PCAP_MAGIC_US || magic == PCAP_MAGIC_NS)
        swap = 0;
    else if (__builtin_bswap32(magic) == PCAP_MAGIC_US || __builtin_bswap32(magic) == PCAP_MAGIC_NS)
        swap = 1;
    else if (magic == PCAP_MAGIC_MODIFIED || __builtin_bswap32(magic) == PCAP_MAGIC_MODIFIED)
        return fail(r, abs, "unsupported pcap variant (modified pcap, magic 0x%08x)", rd32be(p, avail));
    else
        return fail(r, abs, "not a pcap or pcapng file (magic 0x%08x)", rd32be(p, avail));

    if (avail < PCAP_FILE_HDR) {
        if (!eof)
            return FT_RD_MORE;
        return fail(r, abs, "truncated pcap file header (%zu of %u bytes)", avail, PCAP_FILE_HDR);
    }
    ft_u32 lt = rd32(p + 20, swap);
    r->format = FT_FMT_PCAP;
    r->swap = (ft_u8)swap;
    r->pcap_ns = rd32(p, swap) == PCAP_MAGIC_NS;
    r->pcap_snaplen = rd32(p + 16, swap);
    /* upper bits of the link type field: FCS length (16-bit words) when bit 26 is set; libpcap's
     * LT_LINKTYPE() mask keeps the low 26 bits */
    r->pcap_fcs_len = (lt & 0x04000000u) ? (ft_u8)(((lt >> 28) & 0xf) * 2) : 0;
    r->pcap_linktype = lt & 0x03ffffffu;
    *pos += PCAP_FILE_HDR;
    return STEP_NOPKT;
}

/* One classic pcap record. Returns STEP_PKT (record written to *out), FT_RD_MORE, FT_RD_END or
 * FT_RD_ERROR. */
static inline int pcap_record(struct ft_reader *r, const ft_u8 *buf, size_t len, size_t *pos, int eof,
                              struct ft_pkt *out)
{
    size_t avail = len - *pos;
    const ft_u8 *p = buf + *pos;

    if (avail < PCAP_REC_HDR) {
        if (!eof)
            return FT_RD_MORE;
        if (avail == 0)
            return FT_RD_END;
        return fail(r, r->buf_abs + *pos, "pcap record at offset %llu: file ends inside the record header "
                    "(%zu of %u bytes)", (unsigned long long)(r->buf_abs + *pos), avail, PCAP_REC_HDR);
    }
    int swap = r->swap;
    ft_u32 sec = rd32(p, swap);
    ft_u32 frac = rd32(p + 4, swap);
    ft_u32 cap = rd32(p + 8, swap);
    ft_u32 wire = rd32(p + 12, swap);
    if (cap > FT_MAX_FRAME)
        return fail(r, r->buf_abs + *pos, "pcap record at offset %llu: captured length %u exceeds %u",
                    (unsigned long long)(r->buf_abs + *pos), cap, FT_MAX_FRAME);
    if (avail - PCAP_REC_HDR < cap) {
        if (!eof)
            return FT_RD_MORE;
        return fail(r, r->buf_abs + *pos, "pcap record at offset %llu: file ends inside the packet data "
                    "(%zu of %u captured bytes)", (unsigned long long)(r->buf_abs + *pos),
                    avail - PCAP_REC_HDR, cap);
    }
    /* at most (2^32-1) * 10^9 + (2^32-1) * 1000 < 2^64: no overflow */
    ft_u64 ts = (ft_u64)sec * NS_PER_S + (r->pcap_ns ? (ft_u64)frac : (ft_u64)frac * 1000u);
    emit(r, out, buf, *pos + PCAP_REC_HDR, cap, wire, ts, 0, FT_DIR_UNKNOWN, r->pcap_linktype,
         r->pcap_snaplen);
    *pos += PCAP_REC_HDR + cap;
    return STEP_PKT;
}

/* Option list iterator over blk[off .. end), in the section's byte order. */
struct opt_it {
    const ft_u8 *blk;
    size_t off, end;
    int swap;
};

/* Returns 1 with the next option (code, length, value pointer), 0 at opt_endofopt or when fewer than 4
 * bytes remain, -1 when the option's value runs past the end of the list. */
static inline int opt_next(struct opt_it *it, ft_u16 *code, ft_u16 *olen, const ft_u8 **val)
{
    if (it->off >= it->end || it->end - it->off < 4)
        return 0;
    *code = rd16(it->blk + it->off, it->swap);
    *olen = rd16(it->blk + it->off + 2, it->swap);
    if (*code == OPT_ENDOFOPT)
        return 0;
    size_t padded = ((size_t)*olen + 3u) & ~(size_t)3u;
    if (padded > it->end - it->off - 4)
        return -1;
    *val = it->blk + it->off + 4;
    it->off += 4 + padded;
    return 1;
}

/* Direction bits (0-1) of epb_flags / pack_flags in the options blk[off .. end), or FT_DIR_UNKNOWN. */
static int packet_direction(struct ft_reader *r, const ft_u8 *blk, size_t off, size_t end)
{
    struct opt_it it = {blk, off, end, r->swap};
    ft_u16 code, olen;
    const ft_u8 *val;
    int dir = FT_DIR_UNKNOWN;
    for (int i = 0; i < FT_MAX_OPTIONS; i++) {
        int rc = opt_next(&it, &code, &olen, &val);
        if (rc < 0)
            r->c.bad_options++;
        if (rc <= 0)
            break;
        if (code == OPT_EPB_FLAGS && olen == 4) {
            ft_u32 flags = rd32(val, r->swap);
            if ((flags & 3u) == 1u)
                dir = FT_DIR_INGRESS;
            else if ((flags & 3u) == 2u)
                dir = FT_DIR_EGRESS;
        }
    }
    return dir;
}

/* Interface description block blk[0 .. tl) (complete, trailer checked). Returns STEP_NOPKT or
 * FT_RD_ERROR. */
static int pcapng_idb(struct ft_reader *r, const ft_u8 *blk, ft_u32 tl, ft_u64 abs)
{
    if (r->n_ifaces >= FT_MAX_IFACES)
        return fail(r, abs, "pcapng block at offset %llu: more than %u interfaces in one section",
                    (unsigned long long)abs, FT_MAX_IFACES);
    struct ft_iface *f = &r->ifaces[r->n_ifaces];
    memset(f, 0, sizeof *f);
    f->linktype = rd16(blk + 8, r->swap);
    f->snaplen = rd32(blk + 12, r->swap);
    iface_set_tsresol(f, 6); /* the default: microseconds */

    struct opt_it it = {blk, 16, tl - 4u, r->swap};
    ft_u16 code, olen;
    const ft_u8 *val;
    for (int i = 0; i < FT_MAX_OPTIONS; i++) {
        int rc = opt_next(&it, &code, &olen, &val);
        if (rc < 0)
            r->c.bad_options++;
        if (rc <= 0)
            break;
        if (code == OPT_IF_TSRESOL && olen == 1)
            iface_set_tsresol(f, val[0]);
        else if (code == OPT_IF_TSOFFSET && olen == 8)
            f->ts_offset_s = (long long)rd64(val, r->swap);
    }
    r->n_ifaces++;
    r->c.interfaces++;
    return STEP_NOPKT;
}

/* Enhanced (type 6) or obsolete (type 2) packet block blk[0 .. tl), complete and trailer checked; blk is
 * buf + boff. Returns STEP_PKT or FT_RD_ERROR. */
static int pcapng_epb(struct ft_reader *r, const ft_u8 *buf, size_t boff, ft_u32 type, ft_u32 tl,
                      ft_u64 abs, struct ft_pkt *out)
{
    const ft_u8 *blk = buf + boff;
    int swap = r->swap;
    ft_u32 ifid = type == PCAPNG_EPB ? rd32(blk + 8, swap) : rd16(blk + 8, swap);
    ft_u64 ts = ((ft_u64)rd32(blk + 12, swap) << 32) | rd32(blk + 16, swap);
    ft_u32 cap = rd32(blk + 20, swap);
    ft_u32 wire = rd32(blk + 24, swap);

    if (ifid >= r->n_ifaces)
        return fail(r, abs, "pcapng block at offset %llu: interface id %u out of range (%u interfaces "
                    "in this section)", (unsigned long long)abs, ifid, r->n_ifaces);
    if (cap > tl - EPB_MIN)
        return fail(r, abs, "pcapng block at offset %llu: captured length %u does not fit in block "
                    "total length %u", (unsigned long long)abs, cap, tl);
    const struct ft_iface *f = &r->ifaces[ifid];
    size_t opt_off = EPB_DATA + (((size_t)cap + 3u) & ~(size_t)3u);
    int dir = FT_DIR_UNKNOWN;
    if (opt_off < (size_t)tl - 4u)
        dir = packet_direction(r, blk, opt_off, (size_t)tl - 4u);
    if (type == PCAPNG_PB)
        r->c.obsolete_packets++;
    emit(r, out, buf, boff + EPB_DATA, cap, wire, iface_ts_ns(r, f, ts), ifid, (ft_u8)dir, f->linktype,
         f->snaplen);
    return STEP_PKT;
}

/* Simple packet block blk[0 .. tl): interface 0, no timestamp (the previous packet's is used), captured
 * length = min(original length, snaplen, room in the block). Returns STEP_PKT or FT_RD_ERROR. */
static int pcapng_spb(struct ft_reader *r, const ft_u8 *buf, size_t boff, ft_u32 tl, ft_u64 abs,
                      struct ft_pkt *out)
{
    if (r->n_ifaces == 0)
        return fail(r, abs, "pcapng block at offset %llu: simple packet block before any interface "
                    "description block", (unsigned long long)abs);
    const struct ft_iface *f = &r->ifaces[0];
    ft_u32 wire = rd32(buf + boff + 8, r->swap);
    ft_u32 cap = tl - SPB_MIN;
    if (wire < cap)
        cap = wire;
    if (f->snaplen != 0 && f->snaplen < cap)
        cap = f->snaplen;
    if (cap > FT_MAX_FRAME)
        return fail(r, abs, "pcapng block at offset %llu: captured length %u exceeds %u",
                    (unsigned long long)abs, cap, FT_MAX_FRAME);
    r->c.simple_packets++;
    emit(r, out, buf, boff + 12, cap, wire, r->last_ts_ns, 0, FT_DIR_UNKNOWN, f->linktype, f->snaplen);
    return STEP_PKT;
}

/* Continues skipping a block too large to hold (r->skip_total_len != 0). Returns STEP_NOPKT when the
 * block is done, FT_RD_MORE or FT_RD_ERROR. */
static int pcapng_skip_more(struct ft_reader *r, size_t len, size_t *pos, int eof, const ft_u8 *buf)
{
    ft_u64 babs = r->skip_block_abs;
    size_t avail = len - *pos;
    size_t take = avail < r->skip_left ? avail : (size_t)r->skip_left;
    *pos += take;
    r->skip_left -= take;
    avail -= take;
    if (r->skip_left != 0 || avail < 4) {
        if (!eof)
            return FT_RD_MORE;
        return fail(r, babs, "pcapng block at offset %llu: file ends inside the block (%llu of %u bytes)",
                    (unsigned long long)babs, (unsigned long long)(r->buf_abs + len - babs),
                    r->skip_total_len);
    }
    ft_u32 trail = rd32(buf + *pos, r->swap);
    if (trail != r->skip_total_len)
        return fail(r, babs, "pcapng block at offset %llu: block total length %u disagrees with the "
                    "trailing copy %u", (unsigned long long)babs, r->skip_total_len, trail);
    *pos += 4;
    r->skip_total_len = 0;
    r->c.skipped_blocks++;
    return STEP_NOPKT;
}

static const char *block_name(ft_u32 type)
{
    switch (type) {
    case PCAPNG_SHB: return "section header";
    case PCAPNG_IDB: return "interface description";
    case PCAPNG_EPB: return "enhanced packet";
    case PCAPNG_SPB: return "simple packet";
    case PCAPNG_PB: return "packet";
    default: return "unknown";
    }
}

/* One pcapng block. Returns STEP_PKT (record written to *out), STEP_NOPKT, FT_RD_MORE, FT_RD_END or
 * FT_RD_ERROR. The checks happen in the same order whatever the buffering, so a stream fed in pieces
 * fails exactly where the mapped file fails. */
static int pcapng_block(struct ft_reader *r, const ft_u8 *buf, size_t len, size_t *pos, int eof,
                        struct ft_pkt *out)
{
    if (r->skip_total_len != 0)
        return pcapng_skip_more(r, len, pos, eof, buf);

    size_t avail = len - *pos;
    const ft_u8 *blk = buf + *pos;
    ft_u64 abs = r->buf_abs + *pos;
    unsigned long long uabs = (unsigned long long)abs;

    if (avail < 12) {
        if (!eof)
            return FT_RD_MORE;
        if (avail == 0)
            return FT_RD_END;
        return fail(r, abs, "pcapng block at offset %llu: file ends inside the block header (%zu of 12 "
                    "bytes)", uabs, avail);
    }
    ft_u32 type = rd32(blk, r->swap);
    int swap = r->swap;
    if (type == PCAPNG_SHB) {
        ft_u32 bom = rd32(blk + 8, 0);
        if (bom == PCAPNG_BOM)
            swap = 0;
        else if (__builtin_bswap32(bom) == PCAPNG_BOM)
            swap = 1;
        else
            return fail(r, abs, "pcapng block at offset %llu: section header with bad byte-order magic "
                        "0x%08x", uabs, rd32be(blk + 8, 4));
    }
    ft_u32 tl = rd32(blk + 4, swap);
    ft_u32 min;
    int parsed = 1;
    switch (type) {
    case PCAPNG_SHB: min = SHB_MIN; break;
    case PCAPNG_IDB: min = IDB_MIN; break;
    case PCAPNG_EPB: case PCAPNG_PB: min = EPB_MIN; break;
    case PCAPNG_SPB: min = SPB_MIN; break;
    default: min = 12; parsed = 0; break;
    }
    if (tl < min)
        return fail(r, abs, "pcapng block at offset %llu: block total length %u is less than %u (%s "
                    "block, type 0x%x)", uabs, tl, min, block_name(type), type);
    if (tl % 4 != 0)
        return fail(r, abs, "pcapng block at offset %llu: block total length %u is not a multiple of 4",
                    uabs, tl);
    if (type == PCAPNG_EPB || type == PCAPNG_PB) {
        if (avail < EPB_DATA) {
            if (!eof)
                return FT_RD_MORE;
            return fail(r, abs, "pcapng block at offset %llu: file ends inside the block (%zu of %u bytes)",
                        uabs, avail, tl);
        }
        ft_u32 cap = rd32(blk + 20, swap);
        if (cap > FT_MAX_FRAME)
            return fail(r, abs, "pcapng block at offset %llu: captured length %u exceeds %u", uabs, cap,
                        FT_MAX_FRAME);
    }
    if (parsed && tl > FT_MAX_BLOCK)
        return fail(r, abs, "pcapng block at offset %llu: block total length %u exceeds %u (%s block)",
                    uabs, tl, FT_MAX_BLOCK, block_name(type));
    if (avail < tl) {
        if (eof)
            return fail(r, abs, "pcapng block at offset %llu: file ends inside the block (%zu of %u bytes)",
                        uabs, avail, tl);
        if (parsed || tl <= FT_MAX_BLOCK)
            return FT_RD_MORE;
        /* a skipped block larger than the caller's buffer: consume it piece by piece */
        r->skip_total_len = tl;
        r->skip_block_abs = abs;
        r->skip_left = tl - 4u;
        return pcapng_skip_more(r, len, pos, eof, buf);
    }
    ft_u32 trail = rd32(blk + tl - 4, swap);
    if (trail != tl)
        return fail(r, abs, "pcapng block at offset %llu: block total length %u disagrees with the "
                    "trailing copy %u", uabs, tl, trail);

    int rc;
    switch (type) {
    case PCAPNG_SHB: {
        ft_u16 major = rd16(blk + 12, swap), minor = rd16(blk + 14, swap);
        if (major != 1)
            return fail(r, abs, "pcapng block at offset %llu: unsupported pcapng version %u.%u", uabs,
                        major, minor);
        /* a new section: its own byte order, its interfaces numbered from 0 again */
        r->swap = (ft_u8)swap;
        r->pcapng_major = major;
        r->pcapng_minor = minor;
        r->n_ifaces = 0;
        r->c.sections++;
        rc = STEP_NOPKT;
        break;
    }
    case PCAPNG_IDB:
        rc = pcapng_idb(r, blk, tl, abs);
        break;
    case PCAPNG_EPB:
    case PCAPNG_PB:
        rc = pcapng_epb(r, buf, *pos, type, tl, abs, out);
        break;
    case PCAPNG_SPB:
        rc = pcapng_spb(r, buf, *pos, tl, abs, out);
        break;
    default:
        r->c.skipped_blocks++;
        rc = STEP_NOPKT;
        break;
    }
    if (rc != FT_RD_ERROR)
        *pos += tl;
    return rc;
}

int ft_reader_run(struct ft_reader *r, const ft_u8 *buf, size_t len, size_t *pos, int eof,
                  struct ft_pkt *out, ft_u32 max, ft_u32 *n_out)
{
    size_t p = *pos;
    ft_u32 n = 0;
    int st = FT_RD_YIELD;

    *n_out = 0;
    if (r->failed)
        return FT_RD_ERROR;
    if (p > len)
        return fail(r, r->buf_abs + len, "reader position %zu beyond the buffer end %zu", p, len);
    if (max > FT_RD_MAX_BATCH)
        max = FT_RD_MAX_BATCH;

    for (ft_u32 step = 0; step < FT_RD_MAX_STEPS; step++) {
        if (n >= max) {
            st = FT_RD_YIELD;
            break;
        }
        int rc;
        if (r->format == FT_FMT_PCAP)
            rc = pcap_record(r, buf, len, &p, eof, &out[n]);
        else if (r->format == FT_FMT_PCAPNG)
            rc = pcapng_block(r, buf, len, &p, eof, &out[n]);
        else
            rc = file_start(r, buf, len, &p, eof);
        if (rc == STEP_PKT) {
            n++;
            continue;
        }
        if (rc == STEP_NOPKT)
            continue;
        st = rc;
        break;
    }
    *pos = p;
    *n_out = n;
    return st;
}
