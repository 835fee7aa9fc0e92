/* dtls.h: DTLS 1.0/1.2 (RFC 6347) over UDP: a 13-byte record header (content type 22 = handshake, version
 * 0xfeff / 0xfefd, epoch, 48-bit sequence, length) and a 12-byte handshake header (type, length, message
 * sequence, fragment offset and length). ClientHello fields as for TLS (tls.h), with the cookie.
 */
#ifndef FT_DPI_DTLS_H
#define FT_DPI_DTLS_H
#include "dpi_types.h"
#include "tls.h"

static inline int ft_dpi_dtls(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    if (p[0] != 22 || (len >= 2 && p[1] != 0xfe) || (len >= 3 && p[2] != 0xff && p[2] != 0xfd && p[2] != 0xfc))
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
