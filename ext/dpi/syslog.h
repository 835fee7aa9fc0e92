/* syslog.h: syslog (RFC 5424 and the BSD format of RFC 3164) over UDP and TCP (TCP may use octet counting,
 * RFC 6587): "<PRI>" with PRI 0..191, then printable text on the syslog ports (514, 601, 6514), and a whole
 * RFC 5424 or RFC 3164 header elsewhere (collectors listen on all sorts of ports).
 */
#ifndef FT_DPI_SYSLOG_H
#define FT_DPI_SYSLOG_H
#include "dpi_types.h"

static inline int ft_digits(const uint8_t *p, int n)
{
    for (int i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

/* 1 when p (n bytes after "<PRI>") starts with a syslog header: RFC 5424 "1 YYYY-MM-DDThh:mm:ss" or
 * "1 - ", or an RFC 3164 timestamp "Mmm dd hh:mm:ss" (day space-padded). */
static inline int ft_syslog_header(const uint8_t *p, uint32_t n)
{
    if (n >= 4 && p[0] == '1' && p[1] == ' ' && p[2] == '-' && p[3] == ' ')
        return 1;
    if (n >= 21 && p[0] == '1' && p[1] == ' ' && ft_digits(p + 2, 4) && p[6] == '-' && ft_digits(p + 7, 2) &&
        p[9] == '-' && ft_digits(p + 10, 2) && p[12] == 'T' && ft_digits(p + 13, 2) && p[15] == ':')
        return 1;
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (n < 15 || p[3] != ' ' || p[9] != ':' || p[12] != ':' || p[6] != ' ')
        return 0;
    int m = 0;
    for (int i = 0; i < 12 && !m; i++)
        m = memcmp(p, months + 3 * i, 3) == 0;
    return m && (p[4] == ' ' || ft_digits(p + 4, 1)) && ft_digits(p + 5, 1) && ft_digits(p + 7, 2) &&
           ft_digits(p + 10, 2) && ft_digits(p + 13, 2);
}

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
    if (!ft_dpi_printable(p + i + 1, n))
        return FT_DPI_EXCLUDED;
    if (ft_dpi_port(st, 514) || ft_dpi_port(st, 601) || ft_dpi_port(st, 6514))
        return FT_DPI_DETECTED;
    /* elsewhere a whole header must follow the priority */
    uint32_t rest = len - i - 1;
    if (rest < 21 && !ft_dpi_final(dir) && !ft_syslog_header(p + i + 1, rest))
        return FT_DPI_NEED_MORE;
    return ft_syslog_header(p + i + 1, rest) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_SYSLOG_H */
