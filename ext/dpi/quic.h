/* quic.h: QUIC (RFC 9000, 9001; v2 RFC 9369; IETF drafts 27-34; Google QUIC Q0xx/T0xx; Facebook mvfst).
 * Detects the long header of a client Initial (or a server's Version Negotiation / Initial / Handshake) and
 * names the version. For versions whose Initial keys are derivable from the packet alone (v1, v2, drafts
 * 22-34, mvfst, Google Q050/T050/T051), it removes header protection, decrypts the payload, reassembles the
 * CRYPTO frames (which may arrive out of order, and span two Initial datagrams for a large, post-quantum
 * ClientHello: the dissector then asks the registry to gather the next datagram) and reads the TLS
 * ClientHello: SNI, ALPN, offered versions. Google QUIC before Q050 carries its own handshake (CHLO): only
 * the version is reported.
 */
#ifndef FT_DPI_QUIC_H
#define FT_DPI_QUIC_H
#include "dpi_types.h"
#include "tls.h"
#include "quic_crypto.h"

#define FT_QUIC_CRYPTO_MAX 4096   /* CRYPTO stream bytes kept: a ClientHello is below 2 kB today */

/* Reads a QUIC variable-length integer (RFC 9000 16). Returns 0, or -1 when truncated. */
static inline int ft_quic_varint(const uint8_t *p, uint32_t len, uint32_t *o, uint64_t *v)
{
    if (*o >= len)
        return -1;
    uint32_t n = 1u << (p[*o] >> 6);
    if (*o + n > len)
        return -1;
    uint64_t x = p[*o] & 0x3f;
    for (uint32_t i = 1; i < n; i++)
        x = (x << 8) | p[*o + i];
    *o += n;
    *v = x;
    return 0;
}

/* Initial salt and label prefix of a version; NULL when the keys are not derivable by this code. */
static inline const uint8_t *ft_quic_salt(uint32_t v, int *v2)
{
    static const uint8_t s_v1[20] = {0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
                                     0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a};
    static const uint8_t s_v2[20] = {0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93,
                                     0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9};
    static const uint8_t s_d29[20] = {0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97,
                                      0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0, 0x43, 0x90, 0xa8, 0x99};
    static const uint8_t s_d23[20] = {0xc3, 0xee, 0xf7, 0x12, 0xc7, 0x2e, 0xbb, 0x5a, 0x11, 0xa7,
                                      0xd2, 0x43, 0x2b, 0xb4, 0x63, 0x65, 0xbe, 0xf9, 0xf5, 0x02};
    static const uint8_t s_q50[20] = {0x50, 0x45, 0x74, 0xef, 0xd0, 0x66, 0xfe, 0x2f, 0x9d, 0x94,
                                      0x5c, 0xfc, 0xdb, 0xd3, 0xa7, 0xf0, 0xd3, 0xb5, 0x6b, 0x45};
    static const uint8_t s_t50[20] = {0x7f, 0xf5, 0x79, 0xe5, 0xac, 0xd0, 0x72, 0x91, 0x55, 0x80,
                                      0x30, 0x4c, 0x43, 0xa2, 0x36, 0x7c, 0x60, 0x48, 0x83, 0x10};
    static const uint8_t s_t51[20] = {0x7a, 0x4e, 0xde, 0xf4, 0xe7, 0xcc, 0xee, 0x5f, 0xa4, 0x50,
                                      0x6c, 0x19, 0x12, 0x4f, 0xc8, 0xcc, 0xda, 0x6e, 0x03, 0x3d};
    static const uint8_t s_d22[20] = {0x7f, 0xbc, 0xdb, 0x0e, 0x7c, 0x66, 0xbb, 0xe9, 0x19, 0x3a,
                                      0x96, 0xcd, 0x21, 0x51, 0x9e, 0xbd, 0x7a, 0x02, 0x64, 0x4a};
    *v2 = 0;
    if (v == 0x00000001 || v == 0xff000021 || v == 0xff000022)
        return s_v1;
    if (v == 0x51303530) /* Q050 */
        return s_q50;
    if (v == 0x54303530) /* T050 */
        return s_t50;
    if (v == 0x54303531) /* T051 */
        return s_t51;
    if (v == 0xff000016 || v == 0xfaceb001) /* draft-22, mvfst's first version */
        return s_d22;
    if (v == 0x6b3343cf) {
        *v2 = 1;
        return s_v2;
    }
    if (v >= 0xff00001d && v <= 0xff000020)
        return s_d29;
    if ((v >= 0xff000017 && v <= 0xff00001c) || v == 0xfaceb002 || v == 0xfaceb00e)
        return s_d23;
    return 0;
}

/* Writes a version's name: "v1", "v2", "draft-29", "Q046", "mvfst", or the hex value. Returns 1 when the
 * version is one we know QUIC to use (a long header with another version is not taken as QUIC). */
static inline int ft_quic_version_name(uint32_t v, struct ft_dpi_out *out)
{
    char s[16];
    int known = 1;
    if (v == 1)
        memcpy(s, "v1", 3);
    else if (v == 0x6b3343cf)
        memcpy(s, "v2", 3);
    else if ((v >> 8) == 0xff0000) {
        memcpy(s, "draft-", 6);
        s[6] = (char)('0' + (v & 0xff) / 10);
        s[7] = (char)('0' + (v & 0xff) % 10);
        s[8] = 0;
        known = (v & 0xff) >= 11 && (v & 0xff) <= 34;
    } else if ((v >> 24) == 'Q' || (v >> 24) == 'T') { /* Google: Q043, Q046, Q050, T051 ... */
        s[0] = (char)(v >> 24);
        s[1] = (char)(v >> 16);
        s[2] = (char)(v >> 8);
        s[3] = (char)v;
        s[4] = 0;
        known = s[1] == '0' && s[2] >= '0' && s[2] <= '9' && s[3] >= '0' && s[3] <= '9';
    } else if ((v & 0xfffffff0) == 0xfaceb000) {
        memcpy(s, "mvfst", 6);
    } else if ((v & 0x0f0f0f0f) == 0x0a0a0a0a) {
        memcpy(s, "grease", 7); /* RFC 9000 15: reserved versions that force version negotiation */
    } else {
        known = 0;
        s[0] = 0;
    }
    if (known)
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)s, (uint32_t)strlen(s), 0);
    return known;
}

/* Google QUIC's client hello (CHLO, QUIC crypto handshake): "CHLO", a little-endian tag count, 2 bytes of
 * padding, then (tag, little-endian end offset) pairs and the values. SNI and UAID (the user agent) are
 * taken. The message is looked for in the first 400 bytes of p (it follows the public header and, inside
 * a STREAM or CRYPTO frame, a few bytes whose layout changed between versions). Returns 1 when found. */
static inline int ft_gquic_chlo(const uint8_t *p, uint32_t len, struct ft_dpi_out *out)
{
    uint32_t lim = len < 400 ? len : 400, o = 0;
    int found = 0;
    for (; o + 8 <= lim; o++)
        if (p[o] == 'C' && p[o + 1] == 'H' && p[o + 2] == 'L' && p[o + 3] == 'O') {
            found = 1;
            break;
        }
    if (!found)
        return 0;
    uint32_t n = p[o + 4] | ((uint32_t)p[o + 5] << 8);
    uint32_t tags = o + 8, vals = tags + 8 * n;
    if (n == 0 || n > 64 || vals > len)
        return 0;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *t = p + tags + 8 * i;
        uint32_t end = ft_rd32le(t + 4);
        if (end < prev || end > len - vals) /* vals <= len; vals + end could wrap */
            break; /* the rest of the values is in another packet */
        if (memcmp(t, "SNI\0", 4) == 0 && end > prev)
            FT_DPI_SET(out, FT_O_SERVER_NAME, server_name, p + vals + prev, end - prev, 1);
        else if (memcmp(t, "UAID", 4) == 0 && end > prev)
            FT_DPI_SET(out, FT_O_UA, user_agent, p + vals + prev, end - prev, 0);
        prev = end;
    }
    return 1;
}

/* Decrypts the Initial packet at p[0..len) (long header already checked, version v) and copies its CRYPTO
 * frames into crypto[]/have[] at their stream offsets (*frames counts them). Returns the bytes the packet
 * occupies (so that coalesced packets can be walked), or 0 when it cannot be read. */
static inline uint32_t ft_quic_initial(const uint8_t *p, uint32_t len, uint32_t v, uint8_t *crypto, uint8_t *have,
                                       int *frames, struct ft_dpi_out *chlo_out)
{
    int v2;
    const uint8_t *salt = ft_quic_salt(v, &v2);
    uint32_t o = 5;
    if (len < 7 || !salt)
        return 0;
    uint32_t dcil = p[o++];
    if (dcil > 20 || o + dcil >= len)
        return 0;
    const uint8_t *dcid = p + o;
    o += dcil;
    uint32_t scil = p[o++];
    if (scil > 20 || o + scil > len)
        return 0;
    o += scil;
    uint64_t tl, plen;
    if (ft_quic_varint(p, len, &o, &tl) < 0 || tl > len || o + tl > len)
        return 0;
    o += (uint32_t)tl;
    if (ft_quic_varint(p, len, &o, &plen) < 0 || plen < 20 || o + plen > len)
        return 0;
    uint32_t pn_off = o, end = o + (uint32_t)plen;
    if (pn_off + 4 + 16 > len)
        return 0;

    uint8_t secret[32], csecret[32], key[16], iv[12], hp[16], mask[16];
    struct ft_hmac h;
    ft_hmac_sha256(salt, 20, dcid, dcil, secret); /* HKDF-Extract(salt, DCID) */
    ft_hkdf_expand_label(secret, "client in", csecret, 32);
    ft_hmac_init(&h, csecret, 32);
    ft_hkdf_expand_label_h(&h, v2 ? "quicv2 key" : "quic key", key, 16);
    ft_hkdf_expand_label_h(&h, v2 ? "quicv2 iv" : "quic iv", iv, 12);
    ft_hkdf_expand_label_h(&h, v2 ? "quicv2 hp" : "quic hp", hp, 16);
    struct ft_aes128 aes;
    ft_aes128_setkey(&aes, hp);
    ft_aes128_encrypt(&aes, p + pn_off + 4, mask); /* sample: 16 bytes, 4 after the packet number start */
    uint8_t first = (uint8_t)(p[0] ^ (mask[0] & 0x0f));
    uint32_t pnl = (first & 3) + 1;
    uint64_t pn = 0;
    for (uint32_t i = 0; i < pnl; i++)
        pn = (pn << 8) | (uint8_t)(p[pn_off + i] ^ mask[1 + i]);
    for (int i = 0; i < 8; i++)
        iv[11 - i] ^= (uint8_t)(pn >> (8 * i));
    uint32_t ct = pn_off + pnl, n = end - ct;
    if (n <= 16)
        return 0;
    n -= 16; /* the AEAD tag */
    uint8_t plain[1500];
    if (n > sizeof(plain))
        n = sizeof(plain);
    ft_aes128_setkey(&aes, key);
    ft_aes128_gcm_ctr(&aes, iv, p + ct, plain, n);
    if (v == 0x51303530) { /* Q050 carries Google's CHLO, not TLS, in its encrypted Initial */
        if (ft_gquic_chlo(plain, n, chlo_out))
            (*frames)++;
        return end;
    }

    /* frames: PADDING 0x00, PING 0x01, ACK 0x02/0x03, CRYPTO 0x06; anything else ends the walk. Chrome
     * scatters CRYPTO frames between runs of PADDING and PING ("chaos protection"): a run counts as one
     * step of the bounded walk (the run itself is bounded by the packet). */
    uint32_t q = 0;
    for (int k = 0; k < 256 && q < n; k++) {
        uint8_t t = plain[q];
        if (t == 0x00 || t == 0x01) {
            while (q < n && (plain[q] == 0x00 || plain[q] == 0x01))
                q++;
            continue;
        }
        if (t == 0x06 || (t == 0x08 && (v >> 24) == 'T')) { /* Google's T05x number CRYPTO 0x08 */
            uint64_t off, cl;
            q++;
            if (ft_quic_varint(plain, n, &q, &off) < 0 || ft_quic_varint(plain, n, &q, &cl) < 0 || q + cl > n)
                return 0;
            for (uint64_t i = 0; i < cl && off + i < FT_QUIC_CRYPTO_MAX; i++) {
                crypto[off + i] = plain[q + i];
                have[off + i] = 1;
            }
            q += (uint32_t)cl;
            (*frames)++;
            continue;
        }
        if (t == 0x02 || t == 0x03) { /* ACK: largest, delay, range count, first range, ranges (, ECN) */
            uint64_t x, cnt;
            q++;
            if (ft_quic_varint(plain, n, &q, &x) < 0 || ft_quic_varint(plain, n, &q, &x) < 0 ||
                ft_quic_varint(plain, n, &q, &cnt) < 0 || ft_quic_varint(plain, n, &q, &x) < 0 || cnt > 64)
                return 0;
            for (uint64_t i = 0; i < 2 * cnt + (t == 0x03 ? 3 : 0); i++)
                if (ft_quic_varint(plain, n, &q, &x) < 0)
                    return 0;
            continue;
        }
        break;
    }
    return end;
}

/* Reads the client's Initial packets in p[0..len): one datagram, or several gathered by the registry
 * (coalesced packets are walked by their Length; zero bytes between packets are padding outside any
 * packet) and fills SNI / ALPN from the ClientHello in their CRYPTO frames. Returns 1 when the ClientHello
 * is complete or unreadable (nothing more to wait for), 0 when its CRYPTO bytes are still incomplete. */
static inline int ft_quic_client_hello(const uint8_t *p, uint32_t len, uint32_t v, struct ft_dpi_out *out)
{
    uint8_t crypto[FT_QUIC_CRYPTO_MAX], have[FT_QUIC_CRYPTO_MAX];
    memset(have, 0, sizeof(have));
    uint32_t o = 0;
    int any = 0, frames = 0, v2 = v == 0x6b3343cf;
    for (int k = 0; k < 8 && o + 7 <= len; k++) {
        while (o < len && p[o] == 0)
            o++;
        if (o + 7 > len || !(p[o] & 0x80) || ft_rd32(p + o + 1) != v)
            break;
        int t = (p[o] >> 4) & 3;
        if (v2 ? t != 1 : t != 0) { /* 0-RTT or Handshake coalesced after: skip by its length */
            uint32_t q = o + 5;
            uint64_t l;
            if (q >= len || p[q] > 20)
                break;
            q += 1 + p[q];
            if (q >= len || p[q] > 20)
                break;
            q += 1 + p[q];
            if (ft_quic_varint(p, len, &q, &l) < 0 || q + l > len)
                break;
            o = q + (uint32_t)l;
            continue;
        }
        uint32_t used = ft_quic_initial(p + o, len - o, v, crypto, have, &frames, out);
        if (!used)
            break;
        any = 1;
        o += used;
    }
    if (!any || !frames || v == 0x51303530)
        return 1; /* not readable, no CRYPTO frame (an ACK-only Initial), or Q050's CHLO (read whole) */
    /* the ClientHello: handshake type 1, 3-byte length, body from offset 4 of the CRYPTO stream */
    uint32_t contig = 0;
    while (contig < FT_QUIC_CRYPTO_MAX && have[contig])
        contig++;
    if (contig < 4)
        return 0;
    if (crypto[0] != 1)
        return 1;
    uint32_t hlen = ft_rd24(crypto + 1);
    uint32_t n = contig - 4 < hlen ? contig - 4 : hlen;
    ft_tls_hello(crypto + 4, n, 0, 0, out);
    ft_quic_version_name(v, out); /* the QUIC version names the flow better than the TLS one ("TLSv1.3") */
    return contig >= 4 + hlen || 4 + hlen > FT_QUIC_CRYPTO_MAX;
}

static inline int ft_dpi_quic(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    int extra = (st->flags & FT_DPI_S_EXTRA) != 0;
    if (extra) {
        /* gathering the client's Initials for a ClientHello that spans them; the server's packets and
         * anything that is not the same long header are ignored */
        if (ft_dpi_dir(dir) + 1 != st->scratch[0] || len < 7 || !(p[0] & 0x80))
            return FT_DPI_DETECTED;
        uint32_t v = ft_rd32(p + 1);
        if (ft_quic_client_hello(p, len, v, out) || ft_dpi_final(dir))
            st->flags &= (uint8_t)~(FT_DPI_S_EXTRA | FT_DPI_S_GATHER);
        return FT_DPI_DETECTED;
    }
    if (len < 7)
        return ft_dpi_more(dir);
    if (!(p[0] & 0x80)) {
        /* Google QUIC public header before Q046: flags (version bit 0x01, 8-byte connection id 0x08) */
        if ((p[0] & 0x09) == 0x09 && len >= 13 && ft_dpi_dir(dir) == 0 && (p[9] == 'Q' || p[9] == 'T')) {
            uint32_t v = ft_rd32(p + 9);
            if (ft_quic_version_name(v, out)) {
                ft_gquic_chlo(p, len, out); /* in clear before Q050 */
                return FT_DPI_DETECTED;
            }
        }
        return FT_DPI_EXCLUDED;
    }
    uint32_t v = ft_rd32(p + 1);
    if (v == 0) { /* Version Negotiation (server): lists the versions it supports */
        if (len < 7 + 4 || p[5] > 20)
            return FT_DPI_EXCLUDED;
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"negotiation", 11, 0);
        return FT_DPI_DETECTED;
    }
    if (!ft_quic_version_name(v, out))
        return FT_DPI_EXCLUDED;
    int google = (v >> 24) == 'Q' || (v >> 24) == 'T';
    if (!google && p[5] > 20) /* Q046 packs both connection id lengths into that byte */
        return FT_DPI_EXCLUDED;
    if (google && v < 0x51303530 && (v >> 24) == 'Q') { /* Q046: IETF-like header, CHLO still in clear */
        if (ft_dpi_dir(dir) == 0)
            ft_gquic_chlo(p, len, out);
        return FT_DPI_DETECTED;
    }
    int type = (p[0] >> 4) & 3;
    int initial = v == 0x6b3343cf ? type == 1 : type == 0;
    int dummy;
    if (ft_dpi_dir(dir) != 0 || !initial || !ft_quic_salt(v, &dummy) || !(p[0] & 0x40))
        return FT_DPI_DETECTED; /* the version says QUIC; the name is only in a client Initial we can read */
    if (!ft_quic_client_hello(p, len, v, out) && !ft_dpi_final(dir)) {
        /* the ClientHello continues in the next Initial: QUIC it is; gather the datagrams for the name */
        st->scratch[0] = (uint8_t)(ft_dpi_dir(dir) + 1);
        st->flags |= FT_DPI_S_EXTRA | FT_DPI_S_GATHER;
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_QUIC_H */
