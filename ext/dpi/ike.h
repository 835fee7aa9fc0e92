/* ike.h: IPsec key exchange and NAT traversal on UDP 500/4500 (port-gated), labelled ipsec: the IKE header
 * (RFC 7296 3.1 / RFC 2408: initiator SPI non-zero, version 0x10 IKEv1 or 0x20 IKEv2, exchange type,
 * length framing the message); on 4500 a 4-byte zero non-ESP marker precedes IKE, a single 0xff byte is a
 * NAT keep-alive (RFC 3948), and anything else is ESP in UDP (non-zero SPI, sequence number).
 */
#ifndef FT_DPI_IKE_H
#define FT_DPI_IKE_H
#include "dpi_types.h"

static inline int ft_dpi_ike(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    st->app = FT_APP_IPSEC;
    if (ft_dpi_port(st, 4500)) {
        if (len == 1 && p[0] == 0xff)
            return FT_DPI_DETECTED;
        if (len >= 8 && ft_rd32(p) != 0)
            return len >= 16 ? FT_DPI_DETECTED : FT_DPI_EXCLUDED; /* ESP: SPI, sequence, payload */
        if (len < 4)
            return ft_dpi_more(dir);
        p += 4;
        len -= 4;
    }
    if (len < 28)
        return ft_dpi_more(dir);
    uint8_t ver = p[17], xchg = p[18];
    if ((p[0] | p[1] | p[2] | p[3] | p[4] | p[5] | p[6] | p[7]) == 0 || ft_rd32(p + 24) != len)
        return FT_DPI_EXCLUDED;
    if (ver == 0x20 && xchg >= 34 && xchg <= 43) {
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"IKEv2", 5, 0);
        return FT_DPI_DETECTED;
    }
    if (ver == 0x10 && (xchg <= 5 || (xchg >= 32 && xchg <= 33))) {
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"IKEv1", 5, 0);
        return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_IKE_H */
