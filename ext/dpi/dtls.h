/* dtls.h: DTLS 1.0/1.2 (RFC 6347) over UDP: a 13-byte record header (content type 22 = handshake, version
 * 0xfeff / 0xfefd, epoch, 48-bit sequence, length) and a 12-byte handshake header (type, length, message
 * sequence, fragment offset and length). ClientHello fields as for TLS (tls.h), with the cookie.
 */
#ifndef FT_DPI_DTLS_H
#define FT_DPI_DTLS_H
#include "dpi_types.h"
#include "tls.h"

/* A capture that starts inside a DTLS session: records (change cipher spec 20, alert 21, application data
 * 23) with version 1.0/1.2, an epoch above 0 (protected records) and lengths that tile the datagram. */
static inline int ft_dtls_midstream(const uint8_t *p, uint32_t len, int dir)
{
    uint32_t o = 0;
    for (int k = 0; k < 8 && o < len; k++) {
        if (o + 13 > len)
            return k == 0 ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
        const uint8_t *r = p + o;
        if (r[0] < 20 || r[0] > 23 || !((r[1] == 0xfe && (r[2] == 0xff || r[2] == 0xfd)) || (r[1] == 1 && r[2] == 0)))
            return FT_DPI_EXCLUDED;
        if (r[0] == 23 && ft_rd16(r + 3) == 0)
            return FT_DPI_EXCLUDED; /* application data is always protected: epoch >= 1 */
        uint32_t l = ft_rd16(r + 11);
        if (l == 0 || l > 16384 + 2048)
            return FT_DPI_EXCLUDED;
        o += 13 + l;
    }
    return o == len ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

static inline int ft_dpi_dtls(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    if (p[0] >= 20 && p[0] <= 23 && p[0] != 22)
        return ft_dtls_midstream(p, len, dir);
    int bad_ver = len >= 3 && p[1] == 0x01 && p[2] == 0x00; /* pre-RFC DTLS 1.0 (0x0100, AnyConnect) */
    if (p[0] != 22 || (len >= 2 && p[1] != 0xfe && !bad_ver) ||
        (len >= 3 && p[2] != 0xff && p[2] != 0xfd && p[2] != 0xfc && !bad_ver))
        return FT_DPI_EXCLUDED;
    if (len < 13 + 12)
        return ft_dpi_more(dir);
    uint32_t rlen = ft_rd16(p + 11);
    if (rlen < 12)
        return FT_DPI_EXCLUDED;
    if (13 + rlen > len)
        return ft_dpi_more(dir);
    uint8_t hs = p[13];
    uint32_t hlen = ft_rd24(p + 14), foff = ft_rd24(p + 19), flen = ft_rd24(p + 22);
    if (hs < 1 || hs > 24 || foff + flen > hlen || flen + 12 > rlen)
        return FT_DPI_EXCLUDED;
    if ((hs == 1 || hs == 2) && foff == 0)
        ft_tls_hello(p + 25, flen, hs == 2, 1, out);
    else
        ft_tls_version(out, ft_rd16(p + 1), 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_DTLS_H */
