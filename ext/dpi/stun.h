/* stun.h: STUN (RFC 8489, RFC 5389) and TURN over UDP: type with the two top bits 0, length a multiple of 4
 * that frames the datagram (20-byte header), magic cookie 0x2112A442. Classic STUN (RFC 3489, no cookie)
 * on port 3478 only.
 */
#ifndef FT_DPI_STUN_H
#define FT_DPI_STUN_H
#include "dpi_types.h"

static inline int ft_dpi_stun(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    if (p[0] & 0xc0)
        return FT_DPI_EXCLUDED;
    if (len < 20)
        return ft_dpi_more(dir);
    uint32_t l = ft_rd16(p + 2);
    if ((l & 3) || l + 20 < len)
        return FT_DPI_EXCLUDED;
    if (l + 20 > len)
        return ft_dpi_more(dir);
    if (ft_rd32(p + 4) == 0x2112A442)
        return FT_DPI_DETECTED;
    uint16_t t = ft_rd16(p);
    if (ft_dpi_port(st, 3478) && (t == 0x0001 || t == 0x0101 || t == 0x0111))
        return FT_DPI_DETECTED;
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_STUN_H */
