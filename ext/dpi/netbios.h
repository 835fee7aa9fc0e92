/* netbios.h: NetBIOS over TCP/IP (RFC 1001/1002): the name service (UDP 137, DNS-like header with
 * first-level encoded names of 32 characters 'A'..'P'), the datagram service (UDP 138) and the session
 * service's session request and responses (TCP 139; the SMB that follows is in smb.h).
 */
#ifndef FT_DPI_NETBIOS_H
#define FT_DPI_NETBIOS_H
#include "dpi_types.h"

/* 1 when p[0..34) is a first-level encoded NetBIOS name: length 32, 32 characters 'A'..'P', then either the
 * root label (0) or a scope label. */
static inline int ft_nb_name(const uint8_t *p, uint32_t len)
{
    if (len < 34 || p[0] != 32)
        return 0;
    for (int i = 1; i <= 32; i++)
        if (p[i] < 'A' || p[i] > 'P')
            return 0;
    return 1;
}

static inline int ft_dpi_netbios(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                 struct ft_dpi_out *out)
{
    (void)out;
    if (st->l4 == 6) {
        if (len < 4)
            return ft_dpi_more(dir);
        uint8_t t = p[0];
        uint32_t l = ft_rd24(p + 1);
        if (t == 0x81) /* session request: called and calling names */
            return len < 4 + 34 ? ft_dpi_more(dir) : (l >= 68 && ft_nb_name(p + 4, len - 4)) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
        if ((t == 0x82 || t == 0x85) && l == 0 && len == 4)
            return FT_DPI_DETECTED; /* positive response, keep-alive */
        if (t == 0x83 && l == 1 && len == 5 && p[4] >= 0x80 && p[4] <= 0x8f)
            return FT_DPI_DETECTED; /* negative response with its error code */
        return FT_DPI_EXCLUDED;
    }
    if (ft_dpi_port(st, 137)) {
        if (len < 12 + 34 + 4)
            return ft_dpi_more(dir);
        uint16_t flags = ft_rd16(p + 2);
        uint16_t qd = ft_rd16(p + 4), an = ft_rd16(p + 6);
        int op = (flags >> 11) & 0xf;
        if ((op != 0 && op != 5 && op != 6 && op != 7 && op != 8) || qd + an == 0 || qd > 1 || an > 1)
            return FT_DPI_EXCLUDED;
        if (!ft_nb_name(p + 12, len - 12))
            return FT_DPI_EXCLUDED;
        return FT_DPI_DETECTED;
    }
    /* datagram service: type 0x10-0x16, flags, id, source IP, source port, then length and offset */
    if (p[0] < 0x10 || p[0] > 0x16)
        return FT_DPI_EXCLUDED;
    if (len < 14 || (p[0] <= 0x12 && len < 14 + 34))
        return ft_dpi_more(dir);
    if (p[0] <= 0x12 && !ft_nb_name(p + 14, len - 14))
        return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_NETBIOS_H */
