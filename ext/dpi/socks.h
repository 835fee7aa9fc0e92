/* socks.h: SOCKS 4/4a (client request: version 4, command 1/2, port, address, user id NUL-terminated) and
 * SOCKS 5 (RFC 1928: version 5, number of methods, the methods) on the SOCKS ports (port-gated).
 */
#ifndef FT_DPI_SOCKS_H
#define FT_DPI_SOCKS_H
#include "dpi_types.h"

static inline int ft_dpi_socks(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    if (ft_dpi_dir(dir) != 0 || len < 2)
        return len < 2 ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    if (p[0] == 5)
        return (p[1] >= 1 && p[1] <= 16 && len == 2u + p[1]) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    if (p[0] == 4 && (p[1] == 1 || p[1] == 2) && len >= 9 && p[len - 1] == 0)
        return FT_DPI_DETECTED;
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_SOCKS_H */
