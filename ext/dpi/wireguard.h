/* wireguard.h: WireGuard (www.wireguard.com/protocol): a message type byte and 3 reserved zero bytes;
 * handshake initiation (1) is 148 bytes, response (2) 92, cookie reply (3) 64; transport data (4) is at
 * least 32 bytes, a multiple of 16: alone it decides on port 51820 only, elsewhere once both directions sent
 * it (a capture that starts mid-tunnel).
 */
#ifndef FT_DPI_WIREGUARD_H
#define FT_DPI_WIREGUARD_H
#include "dpi_types.h"

static inline int ft_dpi_wireguard(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                   struct ft_dpi_out *out)
{
    (void)out;
    if ((len >= 2 && p[1]) || (len >= 3 && p[2]) || (len >= 4 && p[3]) || p[0] < 1 || p[0] > 4)
        return FT_DPI_EXCLUDED;
    if (len < 32 || (p[0] == 1 && len < 148) || (p[0] == 2 && len < 92) || (p[0] == 3 && len < 64))
        return ft_dpi_more(dir);
    if ((p[0] == 1 && len == 148) || (p[0] == 2 && len == 92) || (p[0] == 3 && len == 64))
        return FT_DPI_DETECTED;
    if (p[0] == 4 && len % 16 == 0) {
        /* transport data alone is a weak signature: on the WireGuard port it decides, elsewhere only once
         * both directions sent such datagrams (still a candidate: the earlier ones were consistent) */
        if (ft_dpi_port(st, 51820) || (st->dir_pkts[0] && st->dir_pkts[1]))
            return FT_DPI_DETECTED;
        return ft_dpi_more(dir);
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_WIREGUARD_H */
