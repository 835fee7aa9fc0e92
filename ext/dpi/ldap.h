/* ldap.h: LDAPv3 (RFC 4511) over TCP and CLDAP over UDP 389: an LDAPMessage is a BER SEQUENCE holding the
 * messageID INTEGER and a protocolOp with an APPLICATION tag (bind 0x60/0x61, unbind 0x42, search
 * 0x63/0x64/0x65/0x73, modify 0x66/0x67, add 0x68/0x69, del 0x4a/0x6b, modDN 0x6c/0x6d, compare 0x6e/0x6f,
 * abandon 0x50, extended 0x77/0x78, intermediate 0x79).
 */
#ifndef FT_DPI_LDAP_H
#define FT_DPI_LDAP_H
#include "dpi_types.h"

static inline int ft_ldap_op(uint8_t t)
{
    return (t >= 0x60 && t <= 0x6f && t != 0x62) || t == 0x42 || t == 0x4a || t == 0x50 || t == 0x73 ||
           t == 0x77 || t == 0x78 || t == 0x79;
}

static inline int ft_dpi_ldap(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    uint32_t o = 1, l;
    if (len < 1)
        return ft_dpi_more(dir);
    if (p[0] != 0x30)
        return FT_DPI_EXCLUDED;
    int r = ft_ber_len(p, len, &o, &l);
    if (r == -1)
        return ft_dpi_more(dir);
    if (r < 0 || l < 5 || l > (1u << 24))
        return FT_DPI_EXCLUDED;
    if (o + 2 > len)
        return ft_dpi_more(dir);
    if (p[o] != 0x02 || p[o + 1] < 1 || p[o + 1] > 4) /* messageID INTEGER of 1..4 bytes */
        return FT_DPI_EXCLUDED;
    o += 2 + p[o + 1];
    if (o >= len)
        return ft_dpi_more(dir);
    return ft_ldap_op(p[o]) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_LDAP_H */
