/* socks.h: SOCKS 4/4a (client request: version 4, command 1/2, port, address, user id NUL-terminated) and
 * SOCKS 5 (RFC 1928: version 5, number of methods, the methods). On the SOCKS ports the client's first
 * message decides; elsewhere the server's answer must follow (SOCKS 5: version 5 and a method; SOCKS 4: a
 * null byte and a result code 90..93): a dissector still a candidate when the answer comes saw a valid
 * request, so the pair is checked without remembering anything.
 */
#ifndef FT_DPI_SOCKS_H
#define FT_DPI_SOCKS_H
#include "dpi_types.h"

static inline int ft_dpi_socks(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    int port = ft_dpi_port(st, 1080) || ft_dpi_port(st, 1081) || ft_dpi_port(st, 9050) || ft_dpi_port(st, 9150);
    if (ft_dpi_dir(dir) == 1) { /* the answer to a request this dissector accepted */
        if (st->dir_pkts[0] == 0 || len != (p[0] == 5 ? 2u : 8u))
            return FT_DPI_EXCLUDED;
        if (p[0] == 5 && (p[1] <= 3 || (p[1] >= 0x80 && p[1] <= 0xfe) || p[1] == 0xff))
            return FT_DPI_DETECTED;
        if (p[0] == 0 && p[1] >= 90 && p[1] <= 93)
            return FT_DPI_DETECTED;
        return FT_DPI_EXCLUDED;
    }
    if (len < 2)
        return ft_dpi_more(dir);
    int ok = 0;
    if (p[0] == 5)
        ok = p[1] >= 1 && p[1] <= 16 && len == 2u + p[1];
    else if (p[0] == 4)
        ok = (p[1] == 1 || p[1] == 2) && len >= 9 && p[len - 1] == 0;
    if (!ok)
        return FT_DPI_EXCLUDED;
    return port ? FT_DPI_DETECTED : ft_dpi_more(dir);
}

#endif /* FT_DPI_SOCKS_H */
