/* http2.h: cleartext HTTP/2 (RFC 9113) and gRPC over it. Detects the client connection preface; then reads
 * the client's first HEADERS frame (HPACK, RFC 7541: static table and Huffman strings; the first header
 * block of a connection cannot refer to the dynamic table, which is still empty, except for entries it
 * adds itself, which we do not need) for :path, :authority, user-agent and content-type.
 *   grpc            content-type application/grpc*, or te: trailers with a /package.Service/Method path
 *   etcd            gRPC to an etcd service (/etcdserverpb.*, /v3electionpb.*, /v3lockpb.*)
 */
#ifndef FT_DPI_HTTP2_H
#define FT_DPI_HTTP2_H
#include "dpi_types.h"

#define FT_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define FT_H2_PREFACE_LEN 24

/* Code length in bits of each symbol of the HPACK Huffman code (RFC 7541 Appendix B), 256 = EOS. The code
 * is canonical (codes of one length are consecutive, in symbol order, and each length starts where the
 * previous one ended, shifted), so the lengths define every code. */
static const uint8_t FT_HPACK_HUFF_LEN[257] = {
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, /*   0 */
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, /*  16 */
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,         /*  32 */
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,              /*  48 */
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,                /*  64 */
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,             /*  80 */
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,                /*  96 */
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,            /* 112 */
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, /* 128 */
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, /* 144 */
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, /* 160 */
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, /* 176 */
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, /* 192 */
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, /* 208 */
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, /* 224 */
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, /* 240 */
    30,                                                             /* 256 EOS */
};

/* Canonical decoding tables: for each length L (5..30), the first code of that length, how many codes
 * have it, and where its symbols start in FT_HPACK_SORTED (symbols ordered by length, then value). */
struct ft_hpack_huff {
    int ready;
    uint32_t first[31];
    uint16_t count[31];
    uint16_t start[31];
    uint16_t sorted[257];
};

static struct ft_hpack_huff ft_hpack_tab; /* filled once, on first use (the engine is single-threaded) */

static inline void ft_hpack_init(void)
{
    struct ft_hpack_huff *t = &ft_hpack_tab;
    uint32_t code = 0;
    uint16_t pos = 0;
    for (int L = 1; L <= 30; L++) {
        t->first[L] = code;
        t->start[L] = pos;
        t->count[L] = 0;
        for (int s = 0; s < 257; s++)
            if (FT_HPACK_HUFF_LEN[s] == L) {
                t->sorted[pos++] = (uint16_t)s;
                t->count[L]++;
            }
        code = (code + t->count[L]) << 1;
    }
    t->ready = 1;
}

/* Decodes a Huffman string src[0..n) into dst (at most cap - 1 bytes, NUL-terminated). Returns the decoded
 * length, or -1 when the input is not a valid code (EOS inside, or a code longer than 30 bits). */
static inline int ft_hpack_huffman(const uint8_t *src, uint32_t n, char *dst, uint32_t cap)
{
    if (!ft_hpack_tab.ready)
        ft_hpack_init();
    const struct ft_hpack_huff *t = &ft_hpack_tab;
    uint32_t code = 0, o = 0;
    int L = 0;
    for (uint32_t i = 0; i < n * 8; i++) {
        code = (code << 1) | ((src[i >> 3] >> (7 - (i & 7))) & 1);
        L++;
        if (L > 30)
            return -1;
        if (code - t->first[L] < t->count[L]) {
            uint16_t sym = t->sorted[t->start[L] + (code - t->first[L])];
            if (sym == 256)
                return -1;
            if (o + 1 < cap)
                dst[o++] = (char)sym;
            code = 0;
            L = 0;
        }
    }
    /* what remains must be padding: fewer than 8 bits, all ones (a prefix of EOS) */
    if (L > 7 || code != (1u << L) - 1)
        return -1;
    dst[o] = 0;
    return (int)o;
}

/* Reads an HPACK integer with an n-bit prefix at p[*o] (RFC 7541 5.1). Returns 0, or -1 when truncated or
 * larger than 2^20. */
static inline int ft_hpack_int(const uint8_t *p, uint32_t len, uint32_t *o, int nbits, uint32_t *val)
{
    if (*o >= len)
        return -1;
    uint32_t max = (1u << nbits) - 1;
    uint32_t v = p[(*o)++] & max;
    if (v == max) {
        uint32_t m = 0;
        for (int k = 0; k < 4; k++) {
            if (*o >= len)
                return -1;
            uint8_t b = p[(*o)++];
            v += (uint32_t)(b & 0x7f) << m;
            m += 7;
            if (!(b & 0x80))
                break;
            if (k == 3)
                return -1;
        }
    }
    if (v > (1u << 20))
        return -1;
    *val = v;
    return 0;
}

/* Reads an HPACK string literal into dst (decoded when Huffman coded). Returns its length or -1. */
static inline int ft_hpack_str(const uint8_t *p, uint32_t len, uint32_t *o, char *dst, uint32_t cap)
{
    if (*o >= len)
        return -1;
    int huff = (p[*o] & 0x80) != 0;
    uint32_t n;
    if (ft_hpack_int(p, len, o, 7, &n) < 0 || *o + n > len)
        return -1;
    const uint8_t *s = p + *o;
    *o += n;
    if (huff)
        return ft_hpack_huffman(s, n, dst, cap);
    uint32_t k = n < cap - 1 ? n : cap - 1;
    memcpy(dst, s, k);
    dst[k] = 0;
    return (int)k;
}

/* Names of the static-table entries we look for (RFC 7541 Appendix A); others are skipped. */
static inline const char *ft_hpack_static_name(uint32_t i)
{
    switch (i) {
    case 1: return ":authority";
    case 2: case 3: return ":method";
    case 4: case 5: return ":path";
    case 31: return "content-type";
    case 58: return "user-agent";
    default: return "";
    }
}

/* Decodes one header block fragment; sets the fields it finds. Returns the FT_APP_* label it implies
 * (HTTP2, GRPC or ETCD). */
static inline uint16_t ft_h2_headers(const uint8_t *p, uint32_t len, struct ft_dpi_out *out)
{
    char name[48], val[FT_DPI_PATH_LEN + 16];
    int grpc = 0, te_trailers = 0;
    uint32_t o = 0;
    for (int k = 0; k < 48 && o < len; k++) {
        uint8_t b = p[o];
        uint32_t idx;
        name[0] = 0;
        val[0] = 0;
        if (b & 0x80) { /* indexed field: from the static table only (nothing indexed yet) */
            if (ft_hpack_int(p, len, &o, 7, &idx) < 0)
                break;
            if (idx == 4)
                FT_DPI_SET(out, FT_O_PATH, http_path, (const uint8_t *)"/", 1, 0);
            else if (idx == 2 || idx == 3)
                FT_DPI_SET(out, FT_O_METHOD, http_method, (const uint8_t *)(idx == 2 ? "GET" : "POST"),
                           idx == 2 ? 3 : 4, 0);
            continue;
        }
        if ((b & 0xe0) == 0x20) { /* dynamic table size update */
            if (ft_hpack_int(p, len, &o, 5, &idx) < 0)
                break;
            continue;
        }
        int nbits = (b & 0x40) ? 6 : 4; /* literal with incremental indexing / without or never indexed */
        if (ft_hpack_int(p, len, &o, nbits, &idx) < 0)
            break;
        if (idx == 0) {
            if (ft_hpack_str(p, len, &o, name, sizeof(name)) < 0)
                break;
        } else {
            const char *s = ft_hpack_static_name(idx);
            memcpy(name, s, strlen(s) + 1);
        }
        int vn = ft_hpack_str(p, len, &o, val, sizeof(val));
        if (vn < 0)
            break;
        if (strcmp(name, ":path") == 0) {
            uint32_t pl = (uint32_t)vn;
            for (uint32_t i = 0; i < (uint32_t)vn; i++)
                if (val[i] == '?') {
                    pl = i;
                    break;
                }
            FT_DPI_SET(out, FT_O_PATH, http_path, (const uint8_t *)val, pl, 0);
        } else if (strcmp(name, ":authority") == 0) {
            uint32_t hn = (uint32_t)vn;
            for (uint32_t i = 0; i < (uint32_t)vn && val[0] != '['; i++)
                if (val[i] == ':') {
                    hn = i;
                    break;
                }
            FT_DPI_SET(out, FT_O_SERVER_NAME, server_name, (const uint8_t *)val, hn, 1);
        } else if (strcmp(name, ":method") == 0) {
            FT_DPI_SET(out, FT_O_METHOD, http_method, (const uint8_t *)val, (uint32_t)vn, 0);
        } else if (strcmp(name, "user-agent") == 0) {
            FT_DPI_SET(out, FT_O_UA, user_agent, (const uint8_t *)val, (uint32_t)vn, 0);
        } else if (strcmp(name, "content-type") == 0) {
            grpc |= strncmp(val, "application/grpc", 16) == 0;
        } else if (strcmp(name, "te") == 0) {
            te_trailers = strcmp(val, "trailers") == 0;
        }
    }
    const char *path = (out->set & FT_O_PATH) ? out->http_path : "";
    if (strncmp(path, "/etcdserverpb.", 14) == 0 || strncmp(path, "/v3electionpb.", 14) == 0 ||
        strncmp(path, "/v3lockpb.", 10) == 0)
        return FT_APP_ETCD;
    if (grpc || (te_trailers && path[0] == '/' && strchr(path + 1, '/') && strchr(path, '.')))
        return FT_APP_GRPC;
    return FT_APP_HTTP2;
}

/* Walks HTTP/2 frames from p[o]; on the first HEADERS frame decodes its block. Returns 1 when one was
 * found (label in *app), 0 when the frames run out first. At most 16 frames. */
static inline int ft_h2_frames(const uint8_t *p, uint32_t len, uint32_t o, struct ft_dpi_out *out, uint16_t *app)
{
    for (int k = 0; k < 16 && o + 9 <= len; k++) {
        uint32_t flen = ft_rd24(p + o);
        uint8_t type = p[o + 3], flags = p[o + 4];
        uint32_t body = o + 9;
        if (type == 1) { /* HEADERS */
            uint32_t end = body + flen < len ? body + flen : len;
            uint32_t b = body;
            if (flags & 0x08) /* PADDED */
                b += 1;
            if (flags & 0x20) /* PRIORITY */
                b += 5;
            if (b > end)
                return 0;
            *app = ft_h2_headers(p + b, end - b, out);
            return 1;
        }
        if (type > 9)
            return 0; /* not a frame boundary */
        o = body + flen;
    }
    return 0;
}

static inline int ft_dpi_http2(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                               struct ft_dpi_out *out)
{
    uint16_t app;
    if (st->flags & FT_DPI_S_EXTRA) { /* after the preface: the client's first HEADERS */
        if (ft_dpi_dir(dir) != 0)
            return FT_DPI_DETECTED;
        if (ft_h2_frames(p, len, 0, out, &app)) {
            st->app = app;
            st->flags &= (uint8_t)~FT_DPI_S_EXTRA;
        }
        return FT_DPI_DETECTED;
    }
    uint32_t n = len < FT_H2_PREFACE_LEN ? len : FT_H2_PREFACE_LEN;
    if (memcmp(p, FT_H2_PREFACE, n) != 0)
        return FT_DPI_EXCLUDED;
    if (len < FT_H2_PREFACE_LEN)
        return ft_dpi_more(dir);
    st->app = FT_APP_HTTP2;
    FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"HTTP/2", 6, 0);
    if (ft_h2_frames(p, len, FT_H2_PREFACE_LEN, out, &app))
        st->app = app;
    else
        st->flags |= FT_DPI_S_EXTRA;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_HTTP2_H */
