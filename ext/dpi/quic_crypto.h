/* quic_crypto.h: just enough cryptography to read a QUIC client Initial (RFC 9001 section 5): SHA-256
 * (FIPS 180-4), HMAC (RFC 2104), HKDF (RFC 5869) with TLS 1.3's HKDF-Expand-Label (RFC 8446 7.1), and the
 * AES-128 block cipher (FIPS 197) used for header protection (ECB on a 16-byte sample) and for the AEAD's
 * counter mode. The GCM tag is not checked: a wrong key yields bytes that do not parse as frames, and a
 * DPI engine has nothing to protect. Tested against the RFC 9001 appendix A vectors and hashlib.
 *
 * Tables (AES S-box and round tables) are computed on first use, in process memory, not typed in: the
 * engine is single-threaded, so a plain "ready" flag suffices.
 */
#ifndef FT_DPI_QUIC_CRYPTO_H
#define FT_DPI_QUIC_CRYPTO_H
#include <stdint.h>
#include <string.h>

/* ---- SHA-256 ---------------------------------------------------------------------------------------- */

static const uint32_t FT_SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

struct ft_sha256 {
    uint32_t h[8];
    uint64_t total;     /* bytes hashed */
    uint8_t buf[64];
    uint32_t n;         /* bytes in buf */
};

static inline uint32_t ft_ror32(uint32_t x, int r) { return (x >> r) | (x << (32 - r)); }

static inline void ft_sha256_block(uint32_t h[8], const uint8_t *b)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)b[4 * i] << 24) | ((uint32_t)b[4 * i + 1] << 16) | ((uint32_t)b[4 * i + 2] << 8) |
               b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ft_ror32(w[i - 15], 7) ^ ft_ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ft_ror32(w[i - 2], 17) ^ ft_ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = ft_ror32(e, 6) ^ ft_ror32(e, 11) ^ ft_ror32(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + FT_SHA256_K[i] + w[i];
        uint32_t S0 = ft_ror32(a, 2) ^ ft_ror32(a, 13) ^ ft_ror32(a, 22);
        uint32_t maj = (a & bb) ^ (a & c) ^ (bb & c);
        uint32_t t2 = S0 + maj;
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = bb;
        bb = a;
        a = t1 + t2;
    }
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

/* SHA-NI (x86-64 SHA extensions, chosen at run time): each sha256rnds2 does two rounds in hardware, and
 * sha256msg1/msg2 the message schedule. The state is kept as ABEF / CDGH halves, the layout the
 * instructions use. ft_sha_portable forces the C path (tests compare the two). */
static int ft_sha_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "ft_cpu.h"
#define FT_SHANI 1
static int ft_shani_state = -1;

static inline int ft_shani(void)
{
    if (ft_shani_state < 0) {
        ft_shani_state = FT_CPU_SHA() && FT_CPU_SSE41() ? 1 : 0;
    }
    return ft_shani_state && !ft_sha_portable;
}

__attribute__((target("sha,sse4.1"))) static inline void ft_sha256_block_ni(uint32_t h[8], const uint8_t *b)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* EFGH */
    __m128i s0 = _mm_alignr_epi8(t, s1, 8);                                       /* ABEF */
    s1 = _mm_blend_epi16(s1, t, 0xF0);                                            /* CDGH */
    __m128i abef = s0, cdgh = s1, w[4];
    for (int i = 0; i < 16; i++) { /* 4 rounds per step */
        if (i < 4)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16 * i)), bswap);
        __m128i m = _mm_add_epi32(w[i & 3], _mm_loadu_si128((const __m128i *)&FT_SHA256_K[4 * i]));
        s1 = _mm_sha256rnds2_epu32(s1, s0, m);
        if (i >= 3 && i < 15) { /* schedule: next words from the four before */
            __m128i x = _mm_add_epi32(w[(i + 1) & 3], _mm_alignr_epi8(w[i & 3], w[(i + 3) & 3], 4));
            w[(i + 1) & 3] = _mm_sha256msg2_epu32(x, w[i & 3]);
        }
        m = _mm_shuffle_epi32(m, 0x0E);
        s0 = _mm_sha256rnds2_epu32(s0, s1, m);
        if (i >= 1 && i < 13)
            w[(i + 3) & 3] = _mm_sha256msg1_epu32(w[(i + 3) & 3], w[i & 3]);
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
    t = _mm_shuffle_epi32(s0, 0x1B);   /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);  /* DCHG */
    s0 = _mm_blend_epi16(t, s1, 0xF0); /* DCBA */
    s1 = _mm_alignr_epi8(s1, t, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&h[0], s0);
    _mm_storeu_si128((__m128i *)&h[4], s1);
}
#endif

static inline void ft_sha256_compress(uint32_t h[8], const uint8_t *b)
{
#ifdef FT_SHANI
    if (ft_shani()) {
        ft_sha256_block_ni(h, b);
        return;
    }
#endif
    ft_sha256_block(h, b);
}

static inline void ft_sha256_init(struct ft_sha256 *s)
{
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof(H0));
    s->total = 0;
    s->n = 0;
}

static inline void ft_sha256_update(struct ft_sha256 *s, const uint8_t *p, uint32_t len)
{
    s->total += len;
    while (len) {
        uint32_t k = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->buf + s->n, p, k);
        s->n += k;
        p += k;
        len -= k;
        if (s->n == 64) {
            ft_sha256_compress(s->h, s->buf);
            s->n = 0;
        }
    }
}

static inline void ft_sha256_final(struct ft_sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80, zero = 0;
    ft_sha256_update(s, &pad, 1);
    while (s->n != 56)
        ft_sha256_update(s, &zero, 1);
    uint8_t L[8];
    for (int i = 0; i < 8; i++)
        L[i] = (uint8_t)(bits >> (56 - 8 * i));
    ft_sha256_update(s, L, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

/* HMAC-SHA256 (RFC 2104) with the key's inner and outer pad blocks hashed once: several MACs under one key
 * (HKDF-Expand-Label derives key, IV and header-protection key from the same secret) then cost two
 * compressions each instead of four. Keys of at most 64 bytes (all keys here are 20 or 32 bytes). */
struct ft_hmac { struct ft_sha256 inner, outer; };

static inline void ft_hmac_init(struct ft_hmac *h, const uint8_t *key, uint32_t klen)
{
    uint8_t k[64], pad[64];
    memset(k, 0, sizeof(k));
    memcpy(k, key, klen > 64 ? 64 : klen);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    ft_sha256_init(&h->inner);
    ft_sha256_update(&h->inner, pad, 64);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    ft_sha256_init(&h->outer);
    ft_sha256_update(&h->outer, pad, 64);
}

static inline void ft_hmac_mac(const struct ft_hmac *h, const uint8_t *msg, uint32_t mlen, uint8_t out[32])
{
    struct ft_sha256 s = h->inner;
    uint8_t inner[32];
    ft_sha256_update(&s, msg, mlen);
    ft_sha256_final(&s, inner);
    s = h->outer;
    ft_sha256_update(&s, inner, 32);
    ft_sha256_final(&s, out);
}

static inline void ft_hmac_sha256(const uint8_t *key, uint32_t klen, const uint8_t *msg, uint32_t mlen,
                                  uint8_t out[32])
{
    struct ft_hmac h;
    ft_hmac_init(&h, key, klen);
    ft_hmac_mac(&h, msg, mlen, out);
}

/* HKDF-Expand-Label(secret, label, "", length) of TLS 1.3, for length <= 32 (one HMAC block), with the
 * secret's HMAC state h prepared by ft_hmac_init. */
static inline void ft_hkdf_expand_label_h(const struct ft_hmac *h, const char *label, uint8_t *out, uint32_t length)
{
    uint8_t info[64], t[32];
    uint32_t ll = (uint32_t)strlen(label), n = 0;
    info[n++] = (uint8_t)(length >> 8);
    info[n++] = (uint8_t)length;
    info[n++] = (uint8_t)(6 + ll);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, ll);
    n += ll;
    info[n++] = 0;    /* empty context */
    info[n++] = 0x01; /* HKDF-Expand block counter T(1) */
    ft_hmac_mac(h, info, n, t);
    memcpy(out, t, length);
}

static inline void ft_hkdf_expand_label(const uint8_t secret[32], const char *label, uint8_t *out, uint32_t length)
{
    struct ft_hmac h;
    ft_hmac_init(&h, secret, 32);
    ft_hkdf_expand_label_h(&h, label, out, length);
}

/* ---- AES-128 (encryption only: QUIC's header protection and GCM's counter mode never decrypt blocks) ---- */

struct ft_aes_tables {
    int ready;
    uint8_t sbox[256];
    uint32_t te[4][256]; /* round tables: SubBytes + MixColumns of one byte, in each of 4 rotations */
};

static struct ft_aes_tables ft_aes_tab;

static inline uint8_t ft_rotl8(uint8_t x, int r) { return (uint8_t)((x << r) | (x >> (8 - r))); }
static inline uint8_t ft_xtime(uint8_t x) { return (uint8_t)((x << 1) ^ ((x & 0x80) ? 0x1b : 0)); }

/* The S-box from its definition: the multiplicative inverse in GF(2^8) followed by the affine map.
 * p walks the multiplicative group by powers of 3, q by powers of 3^-1, so q = p^-1 at each step. */
static inline void ft_aes_init(void)
{
    struct ft_aes_tables *t = &ft_aes_tab;
    uint8_t p = 1, q = 1;
    for (int i = 0; i < 255; i++) {
        p = (uint8_t)(p ^ ft_xtime(p));
        q ^= (uint8_t)(q << 1);
        q ^= (uint8_t)(q << 2);
        q ^= (uint8_t)(q << 4);
        if (q & 0x80)
            q ^= 0x09;
        uint8_t x = (uint8_t)(q ^ ft_rotl8(q, 1) ^ ft_rotl8(q, 2) ^ ft_rotl8(q, 3) ^ ft_rotl8(q, 4));
        t->sbox[p] = (uint8_t)(x ^ 0x63);
    }
    t->sbox[0] = 0x63;
    for (int x = 0; x < 256; x++) {
        uint8_t s = t->sbox[x], s2 = ft_xtime(s), s3 = (uint8_t)(s2 ^ s);
        uint32_t w = ((uint32_t)s2 << 24) | ((uint32_t)s << 16) | ((uint32_t)s << 8) | s3;
        t->te[0][x] = w;
        t->te[1][x] = ft_ror32(w, 8);
        t->te[2][x] = ft_ror32(w, 16);
        t->te[3][x] = ft_ror32(w, 24);
    }
    t->ready = 1;
}

struct ft_aes128 {
    uint32_t rk[44];       /* round keys as big-endian words (table path) */
    uint8_t rkb[176];      /* the same bytes in memory order (AES-NI path) */
};

/* AES-NI, when the CPU has it (x86-64; chosen at run time): one instruction per round instead of 16 table
 * lookups. ft_aes_portable forces the table path (tests compare the two). */
static int ft_aes_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FT_AESNI 1
static int ft_aesni_state = -1; /* -1 unknown, 0 absent, 1 present */

__attribute__((target("aes,sse2"))) static inline void ft_aesni_encrypt(const uint8_t rkb[176], const uint8_t in[16],
                                                                         uint8_t out[16])
{
    __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)in), _mm_loadu_si128((const __m128i *)rkb));
    for (int r = 1; r < 10; r++)
        x = _mm_aesenc_si128(x, _mm_loadu_si128((const __m128i *)(rkb + 16 * r)));
    x = _mm_aesenclast_si128(x, _mm_loadu_si128((const __m128i *)(rkb + 160)));
    _mm_storeu_si128((__m128i *)out, x);
}

static inline int ft_aesni(void)
{
    if (ft_aesni_state < 0) {
        ft_aesni_state = FT_CPU_AES() ? 1 : 0;
    }
    return ft_aesni_state && !ft_aes_portable;
}
#endif

static inline void ft_aes128_setkey(struct ft_aes128 *a, const uint8_t key[16])
{
    if (!ft_aes_tab.ready)
        ft_aes_init();
    const uint8_t *S = ft_aes_tab.sbox;
    static const uint8_t rcon[10] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36};
    for (int i = 0; i < 4; i++)
        a->rk[i] = ((uint32_t)key[4 * i] << 24) | ((uint32_t)key[4 * i + 1] << 16) | ((uint32_t)key[4 * i + 2] << 8) |
                   key[4 * i + 3];
    for (int i = 4; i < 44; i++) {
        uint32_t t = a->rk[i - 1];
        if (i % 4 == 0) {
            t = ((uint32_t)S[(t >> 16) & 0xff] << 24) | ((uint32_t)S[(t >> 8) & 0xff] << 16) |
                ((uint32_t)S[t & 0xff] << 8) | S[t >> 24]; /* SubWord(RotWord(t)) */
            t ^= (uint32_t)rcon[i / 4 - 1] << 24;
        }
        a->rk[i] = a->rk[i - 4] ^ t;
    }
    for (int i = 0; i < 44; i++) {
        a->rkb[4 * i] = (uint8_t)(a->rk[i] >> 24);
        a->rkb[4 * i + 1] = (uint8_t)(a->rk[i] >> 16);
        a->rkb[4 * i + 2] = (uint8_t)(a->rk[i] >> 8);
        a->rkb[4 * i + 3] = (uint8_t)a->rk[i];
    }
}

static inline void ft_aes128_encrypt(const struct ft_aes128 *a, const uint8_t in[16], uint8_t out[16])
{
#ifdef FT_AESNI
    if (ft_aesni()) {
        ft_aesni_encrypt(a->rkb, in, out);
        return;
    }
#endif
    const uint32_t *rk = a->rk;
    const uint32_t(*T)[256] = ft_aes_tab.te;
    const uint8_t *S = ft_aes_tab.sbox;
    uint32_t s[4], t[4];
    for (int i = 0; i < 4; i++)
        s[i] = (((uint32_t)in[4 * i] << 24) | ((uint32_t)in[4 * i + 1] << 16) | ((uint32_t)in[4 * i + 2] << 8) |
                in[4 * i + 3]) ^ rk[i];
    for (int r = 1; r < 10; r++) {
        for (int c = 0; c < 4; c++) /* column c takes row j from column c + j (ShiftRows) */
            t[c] = T[0][s[c] >> 24] ^ T[1][(s[(c + 1) & 3] >> 16) & 0xff] ^ T[2][(s[(c + 2) & 3] >> 8) & 0xff] ^
                   T[3][s[(c + 3) & 3] & 0xff] ^ rk[4 * r + c];
        memcpy(s, t, sizeof(s));
    }
    for (int c = 0; c < 4; c++) {
        uint32_t w = ((uint32_t)S[s[c] >> 24] << 24) | ((uint32_t)S[(s[(c + 1) & 3] >> 16) & 0xff] << 16) |
                     ((uint32_t)S[(s[(c + 2) & 3] >> 8) & 0xff] << 8) | S[s[(c + 3) & 3] & 0xff];
        w ^= rk[40 + c];
        out[4 * c] = (uint8_t)(w >> 24);
        out[4 * c + 1] = (uint8_t)(w >> 16);
        out[4 * c + 2] = (uint8_t)(w >> 8);
        out[4 * c + 3] = (uint8_t)w;
    }
}

/* AES-128-GCM decryption without tag check: GCM's counter mode starts at inc32(J0) = IV || 00000002 for a
 * 96-bit IV (NIST SP 800-38D 7.2). Decrypts n bytes of c into m. */
static inline void ft_aes128_gcm_ctr(const struct ft_aes128 *a, const uint8_t iv[12], const uint8_t *c, uint8_t *m,
                                     uint32_t n)
{
    uint8_t ctr[16], ks[16];
    memcpy(ctr, iv, 12);
    for (uint32_t blk = 0; blk * 16 < n; blk++) {
        uint32_t cnt = blk + 2;
        ctr[12] = (uint8_t)(cnt >> 24);
        ctr[13] = (uint8_t)(cnt >> 16);
        ctr[14] = (uint8_t)(cnt >> 8);
        ctr[15] = (uint8_t)cnt;
        ft_aes128_encrypt(a, ctr, ks);
        uint32_t k = n - blk * 16 < 16 ? n - blk * 16 : 16;
        for (uint32_t i = 0; i < k; i++)
            m[blk * 16 + i] = c[blk * 16 + i] ^ ks[i];
    }
}

#endif /* FT_DPI_QUIC_CRYPTO_H */
