/* rdp.h: RDP (MS-RDPBCGR 2.2.1.1): TPKT (RFC 1006: version 3, reserved 0, length framing the packet) with
 * an X.224 Connection Request (0xe0) or Connection Confirm (0xd0). The same framing carries ISO-TSAP on
 * port 102 (Siemens S7), which is not RDP.
 */
#ifndef FT_DPI_RDP_H
#define FT_DPI_RDP_H
#include "dpi_types.h"

static inline int ft_dpi_rdp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    if (len < 1 || p[0] != 3 || ft_dpi_port(st, 102))
        return FT_DPI_EXCLUDED;
    if (len < 7)
        return ft_dpi_more(dir);
    uint32_t l = ft_rd16(p + 2);
    if (p[1] != 0 || l < 11 || l > len + 4096)
        return FT_DPI_EXCLUDED;
    uint8_t li = p[4], code = p[5] & 0xf0;
    if (li + 5u != l || (code != 0xe0 && code != 0xd0))
        return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_RDP_H */
