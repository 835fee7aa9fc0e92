/* tds.h: Tabular Data Stream, Microsoft SQL Server's protocol (MS-TDS 2.2.3): an 8-byte packet header (type,
 * status, big-endian length framing the packet, SPID, packet id, window 0). A session starts with PRELOGIN
 * (type 0x12) whose option tokens (token, offset, length) end with 0xff; other packet types are accepted on
 * port 1433 only.
 */
#ifndef FT_DPI_TDS_H
#define FT_DPI_TDS_H
#include "dpi_types.h"

static inline int ft_dpi_tds(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    if (len < 8)
        return (len >= 1 && p[0] == 0x12) ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    uint8_t type = p[0], status = p[1];
    uint32_t l = ft_rd16(p + 2);
    if (l < 8 || status > 0x1f || p[7] != 0)
        return FT_DPI_EXCLUDED;
    if (type == 0x12) {
        if (len < l)
            return ft_dpi_more(dir);
        /* option tokens: 5 bytes each, offsets inside the packet body, terminated by 0xff */
        for (uint32_t o = 8, k = 0; k < 16 && o < l; k++, o += 5) {
            if (p[o] == 0xff)
                return k > 0 ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
            if (o + 5 > l || p[o] > 0x08 || 8u + ft_rd16(p + o + 1) + ft_rd16(p + o + 3) > l)
                return FT_DPI_EXCLUDED;
        }
        return FT_DPI_EXCLUDED;
    }
    if (!ft_dpi_port(st, 1433))
        return FT_DPI_EXCLUDED;
    /* SQL batch 1, RPC 3, tabular result 4, attention 6, bulk load 7, federated auth 8, TM 14, LOGIN7 16,
     * SSPI 17 */
    if (type == 1 || type == 3 || type == 4 || type == 6 || type == 7 || type == 8 || type == 14 ||
        type == 16 || type == 17)
        return FT_DPI_DETECTED;
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_TDS_H */
