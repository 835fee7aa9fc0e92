/* rdp.h: RDP (MS-RDPBCGR 2.2.1.1): TPKT (RFC 1006: version 3, reserved 0, length framing the packet) with
 * an X.224 Connection Request (0xe0) or Connection Confirm (0xd0). The same framing carries ISO-TSAP on
 * port 102 (Siemens S7), which is not RDP.
 */
#ifndef FT_DPI_RDP_H
#define FT_DPI_RDP_H
#include "dpi_types.h"

/* MS-RDPEUDP 2.2.2.1: the client's first datagram, RDPUDP_FEC_HEADER with snSourceAck -1, a receive
 * window, and uFlags with RDPUDP_FLAG_SYN (0x0001); on UDP 3389 (port-gated). */
static inline int ft_rdp_udp(const uint8_t *p, uint32_t len, int dir)
{
    if (len < 8)
        return ft_dpi_more(dir);
    return (ft_rd32(p) == 0xffffffffu && (ft_rd16(p + 6) & 0x0001)) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

static inline int ft_dpi_rdp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    if (st->l4 == 17)
        return ft_rdp_udp(p, len, dir);
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
