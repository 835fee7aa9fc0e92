/* mysql.h: MySQL / MariaDB client/server protocol. The server speaks first: a packet (3-byte little-endian
 * length, sequence id 0) holding the Handshake v10: protocol version 10, the server version as a
 * NUL-terminated string (kept as app_version), connection id, ... An early error packet (0xff, sequence 0)
 * instead of the handshake ("Host is not allowed to connect") is recognised on port 3306.
 */
#ifndef FT_DPI_MYSQL_H
#define FT_DPI_MYSQL_H
#include "dpi_types.h"

static inline int ft_dpi_mysql(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                               struct ft_dpi_out *out)
{
    if (len < 5)
        return (len < 4 || p[3] == 0) ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    uint32_t l = p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
    if (p[3] != 0 || l < 3 || l > 1024)
        return FT_DPI_EXCLUDED;
    if (p[4] == 0xff && ft_dpi_port(st, 3306) && len >= 7) {
        uint16_t err = (uint16_t)(p[5] | (p[6] << 8));
        return (err >= 1000 && err < 5000) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    }
    if (p[4] != 10)
        return FT_DPI_EXCLUDED;
    /* server version: digits first, printable, NUL-terminated within the packet */
    uint32_t end = 4 + l < len ? 4 + l : len;
    uint32_t i = 5;
    if (i >= end)
        return ft_dpi_more(dir);
    if (p[i] < '0' || p[i] > '9')
        return FT_DPI_EXCLUDED;
    while (i < end && p[i] != 0) {
        if (p[i] < 0x20 || p[i] > 0x7e)
            return FT_DPI_EXCLUDED;
        i++;
    }
    if (i == end)
        return (len < 4 + l) ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    if (i - 5 < 3 || l < (i - 4) + 4 + 8 + 1) /* connection id 4, auth data 8, filler 1 */
        return FT_DPI_EXCLUDED;
    FT_DPI_SET(out, FT_O_VERSION | FT_O_VERSION_SERVER, version, p + 5, i - 5, 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_MYSQL_H */
