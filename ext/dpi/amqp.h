/* amqp.h: AMQP (0-9-1 and 1.0): the client's protocol header "AMQP" followed by 4 bytes: 0 0 9 1 for 0-9-1,
 * protocol id 0/2/3 and version 1 0 0 for 1.0 (OASIS AMQP 1.0 section 2.2). app_version "0-9-1" or "1.0".
 */
#ifndef FT_DPI_AMQP_H
#define FT_DPI_AMQP_H
#include "dpi_types.h"

static inline int ft_dpi_amqp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    uint32_t n = len < 4 ? len : 4;
    if (memcmp(p, "AMQP", n) != 0)
        return FT_DPI_EXCLUDED;
    if (len < 8)
        return ft_dpi_more(dir);
    if (p[4] == 0 && p[5] == 0 && p[6] == 9 && p[7] == 1) {
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"0-9-1", 5, 0);
        return FT_DPI_DETECTED;
    }
    if (p[4] <= 3 && p[5] == 1 && p[6] == 0 && p[7] == 0) {
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"1.0", 3, 0);
        return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_AMQP_H */
