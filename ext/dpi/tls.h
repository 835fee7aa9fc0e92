/* tls.h: TLS over TCP (RFC 8446, RFC 5246): ClientHello SNI, ALPN offer and versions; the server's chosen
 * version and (TLS 1.2, where it is not encrypted) ALPN from the ServerHello.
 *
 * Also used by dtls.h and quic.h, which carry the same hello messages in other framings.
 */
#ifndef FT_DPI_TLS_H
#define FT_DPI_TLS_H
#include "dpi_types.h"

#define FT_TLS_EXT_SNI 0
#define FT_TLS_EXT_ALPN 16
#define FT_TLS_EXT_VERSIONS 43

/* GREASE values (RFC 8701) are 0x?a?a with both bytes equal. */
static inline int ft_tls_grease(uint16_t v) { return (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff); }

/* Writes the protocol version name of a TLS/DTLS wire version into out->version (bit = FT_O_VERSION, plus
 * FT_O_VERSION_SERVER when chosen by the server). Unknown values are left unset. */
static inline void ft_tls_version(struct ft_dpi_out *out, uint16_t v, int server)
{
    const char *s = 0;
    switch (v) {
    case 0x0300: s = "SSLv3"; break;
    case 0x0301: s = "TLSv1"; break;
    case 0x0302: s = "TLSv1.1"; break;
    case 0x0303: s = "TLSv1.2"; break;
    case 0x0304: s = "TLSv1.3"; break;
    case 0xfeff: s = "DTLSv1.0"; break;
    case 0xfefd: s = "DTLSv1.2"; break;
    case 0xfefc: s = "DTLSv1.3"; break;
    default:
        if ((v >> 8) == 0x7f) /* TLS 1.3 drafts */
            s = "TLSv1.3";
    }
    if (!s)
        return;
    FT_DPI_SET(out, FT_O_VERSION | (server ? FT_O_VERSION_SERVER : 0), version, (const uint8_t *)s,
               (uint32_t)strlen(s), 0);
}

/* Parses the body of a ClientHello (server = 0) or ServerHello (server = 1), the n bytes after the 4-byte
 * handshake header, which may be cut short: fields are taken from the extensions that are complete.
 * dtls = 1 skips the DTLS cookie of a ClientHello. Returns 1 when the fixed part was well formed (a hello),
 * 0 when not. Lengths are big-endian, as everywhere in TLS. */
static inline int ft_tls_hello(const uint8_t *p, uint32_t n, int server, int dtls, struct ft_dpi_out *out)
{
    uint32_t o = 34; /* version 2, random 32 */
    if (n < o + 1)
        return 0;
    uint16_t legacy = ft_rd16(p);
    if (p[0] != 3 && p[0] != 0xfe)
        return 0;
    uint32_t sid = p[o];
    if (sid > 32)
        return 0;
    o += 1 + sid;
    if (dtls && !server) {
        if (o >= n)
            return 0;
        o += 1 + p[o]; /* cookie */
    }
    if (server) {
        o += 3; /* cipher suite, compression method */
    } else {
        if (o + 2 > n)
            return 0;
        uint32_t cs = ft_rd16(p + o);
        if (cs == 0 || (cs & 1))
            return 0;
        o += 2 + cs;
        if (o >= n)
            return 0;
        o += 1 + p[o]; /* compression methods */
    }
    uint16_t best = legacy;
    if (o + 2 <= n) {
        uint32_t end = o + 2 + ft_rd16(p + o);
        if (end > n)
            end = n;
        o += 2;
        /* at most 64 extensions: a hello has about 20 */
        for (int k = 0; k < 64 && o + 4 <= end; k++) {
            uint16_t type = ft_rd16(p + o);
            uint32_t elen = ft_rd16(p + o + 2);
            const uint8_t *e = p + o + 4;
            o += 4 + elen;
            if (o > end)
                break; /* cut: this extension is incomplete */
            if (type == FT_TLS_EXT_SNI && !server && elen >= 5) {
                uint32_t l = ft_rd16(e + 3);
                if (e[2] == 0 && 5 + l <= elen && l > 0)
                    FT_DPI_SET(out, FT_O_SERVER_NAME, server_name, e + 5, l, 1);
            } else if (type == FT_TLS_EXT_ALPN && elen >= 3) {
                uint32_t l = e[2];
                if (l > 0 && 3 + l <= elen)
                    FT_DPI_SET(out, FT_O_ALPN | (server ? FT_O_ALPN_SERVER : 0), alpn, e + 3, l, 0);
            } else if (type == FT_TLS_EXT_VERSIONS) {
                if (server && elen == 2) {
                    best = ft_rd16(e);
                } else if (!server && elen >= 1) {
                    uint32_t l = e[0];
                    for (uint32_t i = 1; i + 1 < elen && i + 1 <= l; i += 2) {
                        uint16_t v = ft_rd16(e + i);
                        if (ft_tls_grease(v))
                            continue;
                        /* DTLS versions count down (0xfefc is newer than 0xfefd) */
                        if ((v >> 8) == 0xfe ? (v < best || (best >> 8) != 0xfe) : (v > best && v < 0x7f00))
                            best = v;
                    }
                }
            }
        }
    }
    ft_tls_version(out, best, server);
    return 1;
}

/* 1 when p[0..5) is a plausible TLS record header: content type 20..23, version 3.0..3.3 (TLS 1.3 sends
 * 3.3 on the wire), length 1..2^14+2048 (RFC 8446 5.2). */
static inline int ft_tls_record(const uint8_t *p)
{
    uint32_t l = ft_rd16(p + 3);
    return p[0] >= 0x14 && p[0] <= 0x17 && p[1] == 3 && p[2] <= 3 && l >= 1 && l <= 16384 + 2048;
}

/* A capture that starts inside a TLS connection: records of application data, alerts or change-cipher-
 * spec, no hello. Detected when the records tile the segment (or the last one runs past its end, as
 * large records do); the name and ALPN are unknown. */
static inline int ft_tls_midstream(const uint8_t *p, uint32_t len, int dir)
{
    uint32_t o = 0;
    int n = 0;
    for (int k = 0; k < 16 && o < len; k++) {
        if (o + 5 > len)
            return n > 0 ? FT_DPI_DETECTED : ft_dpi_more(dir);
        if (!ft_tls_record(p + o))
            return FT_DPI_EXCLUDED;
        n++;
        o += 5 + ft_rd16(p + o + 3);
    }
    return FT_DPI_DETECTED;
}

/* TLS record layer, one direction. Detects on a handshake record carrying a ClientHello (or a ServerHello:
 * the capture may start after the client's first segment); fills the fields once the hello message is
 * complete; then waits (extra phase) for the ServerHello. */
static inline int ft_dpi_tls(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                             struct ft_dpi_out *out)
{
    int extra = (st->flags & FT_DPI_S_EXTRA) != 0;
    if (extra && ft_dpi_dir(dir) + 1 == st->scratch[0])
        return FT_DPI_DETECTED; /* the client's later records: only the server's answer is awaited */
    if (len < 1)
        return ft_dpi_more(dir);
    if (!extra && p[0] >= 0x14 && p[0] <= 0x17 && p[0] != 0x16)
        return ft_tls_midstream(p, len, dir);
    if (p[0] != 0x16 || (len >= 2 && p[1] != 3) || (len >= 3 && p[2] > 4)) {
        if (extra) { /* the server answered with something else (alert): nothing more to learn */
            st->flags &= (uint8_t)~FT_DPI_S_EXTRA;
            return FT_DPI_DETECTED;
        }
        return FT_DPI_EXCLUDED;
    }
    if (len < 9)
        return extra ? FT_DPI_NEED_MORE : ft_dpi_more(dir);
    uint32_t rlen = ft_rd16(p + 3);
    uint8_t hs = p[5];
    uint32_t hlen = ft_rd24(p + 6);
    if (rlen < 4 || rlen > 16384 + 2048 || (hs != 1 && hs != 2) || hlen < 38 || hlen > (1u << 17))
        return extra ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    int server = hs == 2;
    uint32_t avail = len - 9;
    if (avail < hlen && hlen + 4 <= rlen && !ft_dpi_final(dir))
        return FT_DPI_NEED_MORE; /* the hello continues in the next segment */
    if (hlen + 4 > rlen && avail < rlen - 4 && !ft_dpi_final(dir))
        return FT_DPI_NEED_MORE; /* hello fragmented over records: take what the first record holds */
    uint32_t n = avail < hlen ? avail : hlen;
    if (hlen + 4 > rlen && n > rlen - 4)
        n = rlen - 4;
    if (!ft_tls_hello(p + 9, n, server, 0, out))
        return extra ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    if (server) {
        st->flags &= (uint8_t)~FT_DPI_S_EXTRA;
    } else {
        st->flags |= FT_DPI_S_EXTRA; /* wait for the ServerHello from the other side */
        st->scratch[0] = (uint8_t)(ft_dpi_dir(dir) + 1);
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_TLS_H */
