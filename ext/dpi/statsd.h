/* statsd.h: StatsD and DogStatsD (docs.datadoghq.com/developers/dogstatsd/datagram_shell) over UDP 8125:
 * lines "name:value|type" with type c, g, ms, h, s, d and, in DogStatsD, "|@rate", "|#tag:v,...",
 * "|c:container", "|T<timestamp>" fields, events "_e{title_len,text_len}:..." and service checks "_sc|".
 * Labels dogstatsd when the line uses a DogStatsD extension, statsd otherwise.
 */
#ifndef FT_DPI_STATSD_H
#define FT_DPI_STATSD_H
#include "dpi_types.h"

static inline int ft_dpi_statsd(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                struct ft_dpi_out *out)
{
    (void)out;
    uint32_t end = len;
    for (uint32_t i = 0; i < len; i++)
        if (p[i] == '\n') {
            end = i;
            break;
        }
    if (!ft_dpi_printable(p, end))
        return FT_DPI_EXCLUDED;
    if (end < 4)
        return ft_dpi_more(dir);
    if ((end > 3 && memcmp(p, "_e{", 3) == 0) || (end > 4 && memcmp(p, "_sc|", 4) == 0)) {
        st->app = FT_APP_DOGSTATSD;
        return FT_DPI_DETECTED;
    }
    uint32_t i = 0;
    while (i < end && p[i] != ':') {
        uint8_t c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return FT_DPI_EXCLUDED;
        i++;
    }
    if (i == 0)
        return FT_DPI_EXCLUDED;
    if (i >= end) /* the line stops inside the name: a cut datagram, or not StatsD */
        return ft_dpi_more(dir);
    i++;
    uint32_t v = i;
    while (i < end && p[i] != '|')
        i++;
    if (i == v)
        return FT_DPI_EXCLUDED;
    if (i + 1 >= end)
        return ft_dpi_more(dir);
    i++;
    uint32_t t = i;
    while (i < end && p[i] != '|')
        i++;
    uint32_t tn = i - t;
    int ok = (tn == 1 && (p[t] == 'c' || p[t] == 'g' || p[t] == 'h' || p[t] == 's' || p[t] == 'd')) ||
             (tn == 2 && p[t] == 'm' && p[t + 1] == 's');
    if (!ok)
        return FT_DPI_EXCLUDED;
    int dog = 0;
    for (; i + 1 < end; i++)
        if (p[i] == '|' && (p[i + 1] == '#' || p[i + 1] == 'c' || p[i + 1] == 'T' || p[i + 1] == 'e'))
            dog = 1;
    st->app = dog ? FT_APP_DOGSTATSD : FT_APP_STATSD;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_STATSD_H */
