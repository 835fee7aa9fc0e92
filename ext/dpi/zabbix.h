/* zabbix.h: Zabbix agent/server protocol (zabbix.com/documentation/current/en/manual/appendix/protocols/
 * header_datalen): "ZBXD", a flags byte (0x01 plain, 0x02 compressed, 0x04 large packet; bit 0 always set),
 * then little-endian data and reserved lengths.
 */
#ifndef FT_DPI_ZABBIX_H
#define FT_DPI_ZABBIX_H
#include "dpi_types.h"

static inline int ft_dpi_zabbix(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    uint32_t n = len < 4 ? len : 4;
    if (memcmp(p, "ZBXD", n) != 0)
        return FT_DPI_EXCLUDED;
    if (len < 5)
        return ft_dpi_more(dir);
    return ((p[4] & 1) && p[4] <= 0x07) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_ZABBIX_H */
