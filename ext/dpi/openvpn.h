/* openvpn.h: OpenVPN on port 1194 (port-gated): the first packet of a session is a hard reset (opcode 7,
 * client v2; 8, server v2; 10, client v3) in the top 5 bits of the first byte, followed by the 8-byte
 * session id. Over TCP a 2-byte packet length comes first.
 */
#ifndef FT_DPI_OPENVPN_H
#define FT_DPI_OPENVPN_H
#include "dpi_types.h"

static inline int ft_dpi_openvpn(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                 struct ft_dpi_out *out)
{
    (void)out;
    const uint8_t *m = p;
    uint32_t n = len;
    if (st->l4 == 6) {
        if (len < 2)
            return ft_dpi_more(dir);
        if (ft_rd16(p) < 14 || ft_rd16(p) > 2048)
            return FT_DPI_EXCLUDED;
        m += 2;
        n -= 2;
    }
    if (n < 14)
        return ft_dpi_more(dir);
    uint8_t op = m[0] >> 3;
    return (op == 7 || op == 8 || op == 10) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_OPENVPN_H */
