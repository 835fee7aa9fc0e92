/* redis.h: Redis serialization protocol RESP2/RESP3 (redis.io/docs/reference/protocol-spec). A client sends
 * commands as arrays of bulk strings ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"); the first bulk string is the command
 * name, letters only. Inline commands ("PING\r\n") and a server speaking first are recognised on the Redis
 * ports (6379, 26379 sentinel) only: they are too short to be a signature.
 */
#ifndef FT_DPI_REDIS_H
#define FT_DPI_REDIS_H
#include "dpi_types.h"

/* Parses a RESP decimal line at p[*o] up to CRLF; returns 0 and its value, -1 when cut, -2 when bad. */
static inline int ft_resp_num(const uint8_t *p, uint32_t len, uint32_t *o, uint32_t *v)
{
    uint32_t x = 0, i = *o;
    for (int k = 0; k < 8; k++, i++) {
        if (i >= len)
            return -1;
        if (p[i] == '\r') {
            if (i == *o)
                return -2;
            if (i + 1 >= len)
                return -1;
            if (p[i + 1] != '\n')
                return -2;
            *o = i + 2;
            *v = x;
            return 0;
        }
        if (p[i] < '0' || p[i] > '9')
            return -2;
        x = x * 10 + (p[i] - '0');
    }
    return -2;
}

static inline int ft_dpi_redis(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                               struct ft_dpi_out *out)
{
    (void)out;
    int port = ft_dpi_port(st, 6379) || ft_dpi_port(st, 26379);
    if (len < 1)
        return ft_dpi_more(dir);
    if (p[0] == '*') {
        uint32_t o = 1, n, m;
        int r = ft_resp_num(p, len, &o, &n);
        if (r == -1)
            return ft_dpi_more(dir);
        if (r < 0 || n == 0 || n > 4096)
            return FT_DPI_EXCLUDED;
        if (o >= len)
            return ft_dpi_more(dir);
        if (p[o] != '$')
            return FT_DPI_EXCLUDED;
        o++;
        r = ft_resp_num(p, len, &o, &m);
        if (r == -1)
            return ft_dpi_more(dir);
        if (r < 0 || m == 0 || m > 32)
            return FT_DPI_EXCLUDED;
        if (o + m + 2 > len)
            return ft_dpi_more(dir);
        for (uint32_t i = 0; i < m; i++) {
            uint8_t c = p[o + i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '.'))
                return FT_DPI_EXCLUDED;
        }
        if (p[o + m] != '\r' || p[o + m + 1] != '\n')
            return FT_DPI_EXCLUDED;
        return FT_DPI_DETECTED;
    }
    if (!port)
        return FT_DPI_EXCLUDED;
    /* on the Redis port: server replies (+OK, -ERR, :n, $n) or an inline command line */
    int32_t e = ft_dpi_crlf(p, len < 512 ? len : 512, 0);
    if (e < 0)
        return (len >= 512 || !ft_dpi_printable(p, p[len - 1] == '\r' ? len - 1 : len)) ? FT_DPI_EXCLUDED
                                                                                       : ft_dpi_more(dir);
    if (e < 1 || !ft_dpi_printable(p, (uint32_t)e))
        return FT_DPI_EXCLUDED;
    if (p[0] == '+' || p[0] == '-' || p[0] == ':' || p[0] == '$' || p[0] == '%' || p[0] == '_')
        return FT_DPI_DETECTED;
    for (int32_t i = 0; i < e && p[i] != ' '; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')))
            return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_REDIS_H */
