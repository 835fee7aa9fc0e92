/* dhcp.h: DHCP (RFC 2131) on UDP 67/68: the BOOTP header (op 1/2, htype, hlen, ...) and the magic cookie
 * 99.130.83.99 at offset 236; and DHCPv6 (RFC 8415) on UDP 546/547: message type 1..13 or relay 12/13 and a
 * 3-byte transaction id followed by options. Both port-gated by the registry.
 */
#ifndef FT_DPI_DHCP_H
#define FT_DPI_DHCP_H
#include "dpi_types.h"

static inline int ft_dpi_dhcp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    if ((p[0] != 1 && p[0] != 2) || (len >= 4 && p[3] > 16))
        return FT_DPI_EXCLUDED;
    if (len < 240)
        return ft_dpi_more(dir);
    if (p[1] == 1 && p[2] != 6) /* Ethernet hardware address length */
        return FT_DPI_EXCLUDED;
    if (ft_rd32(p + 236) != 0x63825363)
        return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

static inline int ft_dpi_dhcpv6(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    if (p[0] < 1 || p[0] > 36)
        return FT_DPI_EXCLUDED;
    if (len < 4)
        return ft_dpi_more(dir);
    if (p[0] == 12 || p[0] == 13) /* relay-forw / relay-repl: hop count, link and peer addresses */
        return len >= 34 && p[1] <= 32 ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    /* options after the transaction id: code (2), length (2); the first must fit */
    if (len >= 8 && 8u + ft_rd16(p + 6) > len)
        return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_DHCP_H */
