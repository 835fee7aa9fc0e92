/* ft_util.h: small pure functions for the batch builder: key hashing, SHA-1 (FIPS 180-4), base64
 * (RFC 4648), Community ID v1 (corelight/community-id-spec) and address formatting. User space only.
 * Written here rather than called through Python because they run once per flow record, and 90k records
 * through hashlib cost more than the whole flow table. */
#ifndef FT_UTIL_H
#define FT_UTIL_H
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include "ft_cpu.h"

/* 64-bit mix of a buffer whose length is a multiple of 8 (the 48-byte flow key). Returns 32 bits. */
static inline uint32_t ft_hash_words(const void *buf, size_t len)
{
    const uint8_t *b = (const uint8_t *)buf;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h ^= w;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    h ^= h >> 29;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

/* ---- SHA-1 over a short message (<= 55 bytes: one block), which is all the Community ID needs ---- */
static inline uint32_t ft_rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

/* The SHA-1 compression of one 64-byte block into h[5], in C. */
static inline void ft_sha1_block_c(uint32_t hs[5], const uint8_t block[64])
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
               (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = ft_rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = hs[0], b = hs[1], c = hs[2], d = hs[3], e = hs[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = ft_rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = ft_rol32(b, 30);
        b = a;
        a = t;
    }
    hs[0] += a; hs[1] += b; hs[2] += c; hs[3] += d; hs[4] += e;
}


/* ft_sha1_portable forces the C path (tests compare the two). */
static int ft_sha1_portable;
#if FT_X86_FEATURES
static int ft_sha1_ni_state = -1;

/* One group of four SHA-1 rounds with SHA-NI: e_cur takes the next E from the state saved by the previous
 * group (sha1nexte) and the group's message words xg, e_prev saves the state for the next group; the message
 * schedule advances meanwhile (words x1 = W[g+1], x2 = W[g+2], x3 = W[g+3] of xg = W[g], all mod 4), only
 * in the groups whose results a later group reads (g 1..16 msg1, 2..17 xor, 3..18 msg2). */
#define FT_SHA1_NI_GROUP(g, e_cur, e_prev, xg, x1, x2, x3, f)                                      \
    do {                                                                                           \
        e_cur = _mm_sha1nexte_epu32(e_cur, xg);                                                    \
        e_prev = abcd;                                                                             \
        if ((g) >= 3 && (g) <= 18)                                                                 \
            x1 = _mm_sha1msg2_epu32(x1, xg);                                                       \
        abcd = _mm_sha1rnds4_epu32(abcd, e_cur, f);                                                \
        if ((g) >= 1 && (g) <= 16)                                                                 \
            x3 = _mm_sha1msg1_epu32(x3, xg);                                                       \
        if ((g) >= 2 && (g) <= 17)                                                                 \
            x2 = _mm_xor_si128(x2, xg);                                                            \
    } while (0)

/* The SHA-1 compression of one 64-byte block into hs[5] with the SHA extensions (sha1rnds4 does four
 * rounds; the state is kept as one ABCD vector, A in the top lane, and E in the top lane of another). */
__attribute__((target("sha,sse4.1"))) static inline void ft_sha1_block_ni(uint32_t hs[5], const uint8_t *b)
{
    const __m128i rev = _mm_set_epi64x(0x0001020304050607ULL, 0x08090a0b0c0d0e0fULL); /* big-endian words */
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)hs), 0x1B);
    __m128i e0 = _mm_set_epi32((int)hs[4], 0, 0, 0), e1;
    const __m128i abcd_in = abcd, e_in = e0;
    __m128i w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 0)), rev);
    __m128i w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16)), rev);
    __m128i w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 32)), rev);
    __m128i w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 48)), rev);
    e0 = _mm_add_epi32(e0, w0); /* group 0: E is the input's e */
    e1 = abcd;
    abcd = _mm_sha1rnds4_epu32(abcd, e0, 0);
    FT_SHA1_NI_GROUP(1, e1, e0, w1, w2, w3, w0, 0);
    FT_SHA1_NI_GROUP(2, e0, e1, w2, w3, w0, w1, 0);
    FT_SHA1_NI_GROUP(3, e1, e0, w3, w0, w1, w2, 0);
    FT_SHA1_NI_GROUP(4, e0, e1, w0, w1, w2, w3, 0);
    FT_SHA1_NI_GROUP(5, e1, e0, w1, w2, w3, w0, 1);
    FT_SHA1_NI_GROUP(6, e0, e1, w2, w3, w0, w1, 1);
    FT_SHA1_NI_GROUP(7, e1, e0, w3, w0, w1, w2, 1);
    FT_SHA1_NI_GROUP(8, e0, e1, w0, w1, w2, w3, 1);
    FT_SHA1_NI_GROUP(9, e1, e0, w1, w2, w3, w0, 1);
    FT_SHA1_NI_GROUP(10, e0, e1, w2, w3, w0, w1, 2);
    FT_SHA1_NI_GROUP(11, e1, e0, w3, w0, w1, w2, 2);
    FT_SHA1_NI_GROUP(12, e0, e1, w0, w1, w2, w3, 2);
    FT_SHA1_NI_GROUP(13, e1, e0, w1, w2, w3, w0, 2);
    FT_SHA1_NI_GROUP(14, e0, e1, w2, w3, w0, w1, 2);
    FT_SHA1_NI_GROUP(15, e1, e0, w3, w0, w1, w2, 3);
    FT_SHA1_NI_GROUP(16, e0, e1, w0, w1, w2, w3, 3);
    FT_SHA1_NI_GROUP(17, e1, e0, w1, w2, w3, w0, 3);
    FT_SHA1_NI_GROUP(18, e0, e1, w2, w3, w0, w1, 3);
    FT_SHA1_NI_GROUP(19, e1, e0, w3, w0, w1, w2, 3);
    e0 = _mm_sha1nexte_epu32(e0, e_in); /* e0: the state before the last group */
    abcd = _mm_add_epi32(abcd, abcd_in);
    _mm_storeu_si128((__m128i *)hs, _mm_shuffle_epi32(abcd, 0x1B));
    hs[4] = (uint32_t)_mm_extract_epi32(e0, 3);
}

static inline int ft_sha1_ni(void)
{
    if (ft_sha1_ni_state < 0)
        ft_sha1_ni_state = FT_CPU_SHA() && FT_CPU_SSE41() ? 1 : 0;
    return ft_sha1_ni_state && !ft_sha1_portable;
}
#endif

/* Writes the 20-byte SHA-1 digest of msg[0..len) to out. len must be <= 55 (one block). Returns 0, or -1 if
 * too long. SHA-NI when the CPU has it: the Community ID of every record is one of these. */
static inline int ft_sha1_short(const uint8_t *msg, size_t len, uint8_t out[20])
{
    if (len > 55)
        return -1;
    uint8_t block[64];
    memset(block, 0, sizeof(block));
    memcpy(block, msg, len);
    block[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        block[63 - i] = (uint8_t)(bits >> (8 * i));
    uint32_t hs[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
#if FT_X86_FEATURES
    if (ft_sha1_ni())
        ft_sha1_block_ni(hs, block);
    else
#endif
        ft_sha1_block_c(hs, block);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(hs[i] >> 24);
        out[4 * i + 1] = (uint8_t)(hs[i] >> 16);
        out[4 * i + 2] = (uint8_t)(hs[i] >> 8);
        out[4 * i + 3] = (uint8_t)hs[i];
    }
    return 0;
}

/* Base64 (standard alphabet, padded) of 20 bytes: 28 characters, written to out (no terminator). */
static inline void ft_base64_20(const uint8_t in[20], char out[28])
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int o = 0;
    for (int i = 0; i < 18; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    uint32_t v = (uint32_t)in[18] << 16 | (uint32_t)in[19] << 8;
    out[o++] = tbl[(v >> 18) & 63];
    out[o++] = tbl[(v >> 12) & 63];
    out[o++] = tbl[(v >> 6) & 63];
    out[o++] = '=';
}

/* ICMP type -> its counterpart (echo request <-> reply, ...), as Zeek and the Community ID spec define it.
 * Returns -1 for types without one, which makes the flow "one way" (ports = type, code; never swapped). */
static inline int ft_icmp_counterpart(int v6, int type)
{
    if (!v6) {
        switch (type) {
        case 8: return 0;   case 0: return 8;    /* echo */
        case 13: return 14; case 14: return 13;  /* timestamp */
        case 15: return 16; case 16: return 15;  /* information */
        case 10: return 9;  case 9: return 10;   /* router solicitation / advertisement */
        case 17: return 18; case 18: return 17;  /* address mask */
        }
    } else {
        switch (type) {
        case 128: return 129; case 129: return 128; /* echo */
        case 133: return 134; case 134: return 133; /* router solicitation / advertisement */
        case 135: return 136; case 136: return 135; /* neighbor solicitation / advertisement */
        case 130: return 131; case 131: return 130; /* multicast listener query / report */
        case 144: return 145; case 145: return 144; /* home agent address discovery */
        }
    }
    return -1;
}

/* Community ID v1 of a flow seen from src to dst. For ICMP, sport/dport are the ICMP type and code.
 * Writes "1:" + 28 base64 characters = 30 bytes to out (no terminator). Returns 30. */
static inline int ft_community_id(uint16_t seed, int ip_version, const uint8_t *saddr, const uint8_t *daddr,
                                  uint8_t proto, uint16_t sport, uint16_t dport, char out[30])
{
    int alen = ip_version == 6 ? 16 : 4;
    int has_ports = proto == 6 || proto == 17 || proto == 132 || proto == 1 || proto == 58;
    int one_way = 0;
    if ((proto == 1 && ip_version == 4) || (proto == 58 && ip_version == 6)) {
        int cp = ft_icmp_counterpart(proto == 58, sport);
        if (cp >= 0) {
            dport = (uint16_t)cp;
        } else {
            one_way = 1; /* ports are (type, code) as given */
        }
    }
    int c = memcmp(saddr, daddr, alen);
    int ordered = one_way || c < 0 || (c == 0 && sport <= dport);
    const uint8_t *a1 = saddr, *a2 = daddr;
    uint16_t p1 = sport, p2 = dport;
    if (!ordered) {
        a1 = daddr; a2 = saddr;
        p1 = dport; p2 = sport;
    }
    uint8_t msg[2 + 32 + 2 + 4];
    int n = 0;
    msg[n++] = (uint8_t)(seed >> 8);
    msg[n++] = (uint8_t)seed;
    memcpy(msg + n, a1, alen); n += alen;
    memcpy(msg + n, a2, alen); n += alen;
    msg[n++] = proto;
    msg[n++] = 0;
    if (has_ports) {
        msg[n++] = (uint8_t)(p1 >> 8); msg[n++] = (uint8_t)p1;
        msg[n++] = (uint8_t)(p2 >> 8); msg[n++] = (uint8_t)p2;
    }
    uint8_t dig[20];
    ft_sha1_short(msg, (size_t)n, dig);
    out[0] = '1';
    out[1] = ':';
    ft_base64_20(dig, out + 2);
    return 30;
}

/* Decimal text of one byte; returns the number of characters written (1-3). */
static inline int ft_u8_text(uint8_t v, char *out)
{
    if (v >= 100) {
        out[0] = (char)('0' + v / 100);
        out[1] = (char)('0' + (v / 10) % 10);
        out[2] = (char)('0' + v % 10);
        return 3;
    }
    if (v >= 10) {
        out[0] = (char)('0' + v / 10);
        out[1] = (char)('0' + v % 10);
        return 2;
    }
    out[0] = (char)('0' + v);
    return 1;
}

/* Text form of an address: dotted quad written here (glibc's inet_ntop took a third of the batch
 * builder's time), IPv6 through inet_ntop (RFC 5952 compression). Returns the length written to out
 * (capacity >= 46), 0 if none. */
static inline int ft_addr_text(int ip_version, const uint8_t *addr, char *out)
{
    const char *r;
    if (ip_version == 4) {
        int n = ft_u8_text(addr[0], out);
        for (int i = 1; i < 4; i++) {
            out[n++] = '.';
            n += ft_u8_text(addr[i], out + n);
        }
        return n;
    } else if (ip_version == 6)
        r = inet_ntop(AF_INET6, addr, out, 46);
    else
        return 0;
    return r ? (int)strlen(out) : 0;
}

#endif /* FT_UTIL_H */
