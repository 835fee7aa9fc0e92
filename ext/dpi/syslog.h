/* syslog.h: syslog (RFC 5424 and the BSD format of RFC 3164) over UDP 514 and TCP 514/601/6514 (port-gated;
 * TCP may use octet counting, RFC 6587): "<PRI>" with PRI 0..191, then printable text.
 */
#ifndef FT_DPI_SYSLOG_H
#define FT_DPI_SYSLOG_H
#include "dpi_types.h"

static inline int ft_dpi_syslog(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                struct ft_dpi_out *out)
{
    (void)out;
    uint32_t o = 0;
    if (st->l4 == 6) { /* octet counting: "<len> <PRI>..." */
        while (o < len && o < 8 && p[o] >= '0' && p[o] <= '9')
            o++;
        if (o > 0) {
            if (o >= len)
                return ft_dpi_more(dir);
            if (p[o] != ' ')
                return FT_DPI_EXCLUDED;
            o++;
        }
    }
    if (o >= len)
        return ft_dpi_more(dir);
    if (p[o] != '<')
        return FT_DPI_EXCLUDED;
    uint32_t pri = 0, i = o + 1;
    for (; i < len && i < o + 5 && p[i] >= '0' && p[i] <= '9'; i++)
        pri = pri * 10 + (p[i] - '0');
    if (i >= len)
        return ft_dpi_more(dir);
    if (i == o + 1 || p[i] != '>' || pri > 191)
        return FT_DPI_EXCLUDED;
    uint32_t n = len - i - 1 < 16 ? len - i - 1 : 16;
    if (n == 0)
        return ft_dpi_more(dir);
    return ft_dpi_printable(p + i + 1, n) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_SYSLOG_H */
