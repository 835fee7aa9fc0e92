/* kerberos.h: Kerberos V5 (RFC 4120) on port 88 (and kpasswd 464), port-gated. Messages are ASN.1 DER with
 * an APPLICATION tag: AS-REQ 10 (0x6a), AS-REP 11, TGS-REQ 12, TGS-REP 13, AP-REQ 14, AP-REP 15, KRB-ERROR
 * 30 (0x7e), then a SEQUENCE. Over TCP a 4-byte length comes first (RFC 4120 7.2.2). kpasswd (RFC 3244)
 * has its own 6-byte header (length, version 1 or 0xff80).
 */
#ifndef FT_DPI_KERBEROS_H
#define FT_DPI_KERBEROS_H
#include "dpi_types.h"

static inline int ft_dpi_kerberos(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                  struct ft_dpi_out *out)
{
    (void)out;
    const uint8_t *m = p;
    uint32_t n = len;
    if (st->l4 == 6) {
        if (len < 4)
            return ft_dpi_more(dir);
        uint32_t l = ft_rd32(p);
        if (l < 16 || l > (1u << 20))
            return FT_DPI_EXCLUDED;
        m += 4;
        n -= 4;
    }
    if (ft_dpi_port(st, 464) && n >= 6 && (ft_rd16(m + 2) == 1 || ft_rd16(m + 2) == 0xff80) &&
        ft_rd16(m) == n)
        return FT_DPI_DETECTED;
    if (n < 1)
        return ft_dpi_more(dir);
    uint8_t t = m[0];
    if (!((t >= 0x6a && t <= 0x6f) || t == 0x7e))
        return FT_DPI_EXCLUDED;
    uint32_t o = 1, l;
    int r = ft_ber_len(m, n, &o, &l);
    if (r == -1 || o >= n)
        return ft_dpi_more(dir);
    if (r < 0 || m[o] != 0x30)
        return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_KERBEROS_H */
