/* radius.h: RADIUS (RFC 2865, 2866, 5176) on UDP 1812/1813/1645/1646/3799 (port-gated): code (1-5, 11-13,
 * 40-45), identifier, length framing the datagram (20..4096), 16-byte authenticator, then attributes
 * (type, length >= 2) that must tile the rest exactly.
 */
#ifndef FT_DPI_RADIUS_H
#define FT_DPI_RADIUS_H
#include "dpi_types.h"

static inline int ft_dpi_radius(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    uint8_t c = p[0];
    if (!((c >= 1 && c <= 5) || (c >= 11 && c <= 13) || (c >= 40 && c <= 45)))
        return FT_DPI_EXCLUDED;
    if (len < 20)
        return ft_dpi_more(dir);
    uint32_t l = ft_rd16(p + 2);
    if (l < 20 || l > 4096)
        return FT_DPI_EXCLUDED;
    if (l > len)
        return ft_dpi_more(dir);
    uint32_t o = 20;
    for (int k = 0; k < 256 && o < l; k++) {
        if (o + 2 > l || p[o + 1] < 2)
            return FT_DPI_EXCLUDED;
        o += p[o + 1];
    }
    return o == l ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_RADIUS_H */
