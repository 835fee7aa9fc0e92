/* snmp.h: SNMP (RFC 3416/3412) on UDP 161/162 (port-gated): a BER SEQUENCE with the version INTEGER
 * (0 = v1, 1 = v2c, 3 = v3), then the community OCTET STRING and a PDU tag 0xa0..0xa8 (v1/v2c) or the v3
 * header SEQUENCE. app_version "v1", "v2c" or "v3".
 */
#ifndef FT_DPI_SNMP_H
#define FT_DPI_SNMP_H
#include "dpi_types.h"

static inline int ft_dpi_snmp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    uint32_t o = 1, l;
    if (p[0] != 0x30)
        return FT_DPI_EXCLUDED;
    if (len < 8)
        return ft_dpi_more(dir);
    int r = ft_ber_len(p, len, &o, &l);
    if (r == -2)
        return FT_DPI_EXCLUDED;
    if (r == -1 || o + 3 > len)
        return ft_dpi_more(dir);
    if (p[o] != 0x02 || p[o + 1] != 1)
        return FT_DPI_EXCLUDED;
    uint8_t v = p[o + 2];
    if (v != 0 && v != 1 && v != 3)
        return FT_DPI_EXCLUDED;
    o += 3;
    if (o >= len)
        return ft_dpi_more(dir);
    if (v == 3) {
        if (p[o] != 0x30)
            return FT_DPI_EXCLUDED;
    } else {
        uint32_t cl = 0;
        if (p[o] != 0x04)
            return FT_DPI_EXCLUDED;
        o++;
        r = ft_ber_len(p, len, &o, &cl);
        if (r == -2 || cl > 255)
            return FT_DPI_EXCLUDED;
        if (r == -1 || o + cl >= len)
            return ft_dpi_more(dir);
        o += cl;
        if (p[o] < 0xa0 || p[o] > 0xa8)
            return FT_DPI_EXCLUDED;
    }
    const char *s = v == 0 ? "v1" : v == 1 ? "v2c" : "v3";
    FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)s, (uint32_t)strlen(s), 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_SNMP_H */
