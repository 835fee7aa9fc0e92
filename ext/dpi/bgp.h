/* bgp.h: BGP-4 (RFC 4271 section 4.1): every message starts with a 16-byte marker of all ones, a length
 * (19..4096, 65535 with RFC 8654) and a type 1..5 (OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH).
 */
#ifndef FT_DPI_BGP_H
#define FT_DPI_BGP_H
#include "dpi_types.h"

static inline int ft_dpi_bgp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    uint32_t n = len < 16 ? len : 16;
    for (uint32_t i = 0; i < n; i++)
        if (p[i] != 0xff)
            return FT_DPI_EXCLUDED;
    if (len < 19)
        return ft_dpi_more(dir);
    uint32_t l = ft_rd16(p + 16);
    uint8_t t = p[18];
    if (l < 19 || t < 1 || t > 5)
        return FT_DPI_EXCLUDED;
    if (t == 1 && len >= 20) {
        if (p[19] != 4)
            return FT_DPI_EXCLUDED;
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"BGP-4", 5, 0);
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_BGP_H */
