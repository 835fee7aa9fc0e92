/* sip.h: SIP (RFC 3261) and RTSP (RFC 2326, RFC 7826): text protocols with an HTTP-like start line whose
 * version token names them: "METHOD uri SIP/2.0" / "SIP/2.0 200 OK", "METHOD uri RTSP/1.0" /
 * "RTSP/1.0 200 OK". Labels sip or rtsp; for RTSP the host of an rtsp:// URI becomes server_name.
 */
#ifndef FT_DPI_SIP_H
#define FT_DPI_SIP_H
#include "dpi_types.h"

static inline int ft_dpi_sip(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    uint32_t lim = len < 1024 ? len : 1024;
    if (len >= 8 && (memcmp(p, "SIP/2.0 ", 8) == 0 || memcmp(p, "RTSP/1.0", 8) == 0 || memcmp(p, "RTSP/2.0", 8) == 0)) {
        if (len < 12)
            return ft_dpi_more(dir);
        if (p[8] != ' ' && p[0] == 'R')
            return FT_DPI_EXCLUDED;
        uint32_t c = p[0] == 'S' ? 8 : 9;
        if (c + 3 > len || p[c] < '1' || p[c] > '6' || p[c + 1] < '0' || p[c + 1] > '9' || p[c + 2] < '0' ||
            p[c + 2] > '9')
            return FT_DPI_EXCLUDED;
        st->app = p[0] == 'S' ? FT_APP_SIP : FT_APP_RTSP;
        return FT_DPI_DETECTED;
    }
    /* request: METHOD (upper case, '_' allowed as in GET_PARAMETER) SP uri SP version CRLF */
    uint32_t i = 0;
    while (i < lim && i < 20 && ((p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_'))
        i++;
    if (i == lim)
        return ft_dpi_more(dir);
    if (i < 3 || p[i] != ' ')
        return FT_DPI_EXCLUDED;
    int32_t e = ft_dpi_crlf(p, lim, i);
    if (e < 0)
        return (len >= 1024 || !ft_dpi_printable(p, lim - (p[lim - 1] == '\r'))) ? FT_DPI_EXCLUDED : ft_dpi_more(dir);
    uint32_t end = (uint32_t)e;
    if (end < i + 10 || !ft_dpi_printable(p, end))
        return FT_DPI_EXCLUDED;
    const uint8_t *v = p + end - 8;
    if (memcmp(v, " SIP/2.0", 8) == 0) {
        st->app = FT_APP_SIP;
        return FT_DPI_DETECTED;
    }
    if (memcmp(v, "RTSP/1.0", 8) == 0 || memcmp(v, "RTSP/2.0", 8) == 0) {
        st->app = FT_APP_RTSP;
        uint32_t u = i + 1;
        if (u + 7 < end && ft_dpi_ieq(p + u, "rtsp://", 7)) {
            uint32_t h = u + 7, he = h;
            while (he < end && p[he] != '/' && p[he] != ':' && p[he] != ' ')
                he++;
            if (he > h)
                FT_DPI_SET(out, FT_O_SERVER_NAME, server_name, p + h, he - h, 1);
        }
        return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_SIP_H */
