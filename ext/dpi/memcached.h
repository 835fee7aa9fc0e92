/* memcached.h: memcached (github.com/memcached/memcached/blob/master/doc/protocol.txt): text commands and
 * replies, the binary protocol (magic 0x80 request / 0x81 response, 24-byte header), and over UDP the
 * 8-byte frame header (request id, sequence, count, reserved 0) before the text. Port-gated (11211) by the
 * registry: short text lines are no signature elsewhere.
 */
#ifndef FT_DPI_MEMCACHED_H
#define FT_DPI_MEMCACHED_H
#include "dpi_types.h"

static inline int ft_dpi_memcached(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                   struct ft_dpi_out *out)
{
    (void)out;
    if (st->l4 == 17) {
        if (len < 8)
            return ft_dpi_more(dir);
        if (ft_rd16(p + 6) != 0 || ft_rd16(p + 4) == 0 || ft_rd16(p + 2) >= ft_rd16(p + 4))
            return FT_DPI_EXCLUDED;
        p += 8;
        len -= 8;
    }
    if (len < 1)
        return ft_dpi_more(dir);
    if (p[0] == 0x80 || p[0] == 0x81) {
        if (len < 24)
            return ft_dpi_more(dir);
        uint32_t keylen = ft_rd16(p + 2), extlen = p[4], body = ft_rd32(p + 8);
        if (p[5] != 0 || keylen + extlen > body || body > (1u << 20))
            return FT_DPI_EXCLUDED;
        return FT_DPI_DETECTED;
    }
    static const char *const cmd[] = {
        "get ", "gets ", "gat ", "gats ", "set ", "add ", "replace ", "append ", "prepend ", "cas ",
        "delete ", "incr ", "decr ", "touch ", "stats", "version", "flush_all", "verbosity ", "quit",
        "mg ", "ms ", "md ", "ma ", "mn", "VALUE ", "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED",
        "TOUCHED", "END\r\n", "STAT ", "VERSION ", "ERROR", "CLIENT_ERROR ", "SERVER_ERROR ", "OK\r\n",
        "HD", "VA ", "EN\r\n",
    };
    for (uint32_t i = 0; i < sizeof(cmd) / sizeof(cmd[0]); i++) {
        uint32_t n = (uint32_t)strlen(cmd[i]);
        if (len >= n ? memcmp(p, cmd[i], n) == 0 : memcmp(p, cmd[i], len) == 0) {
            if (len < n)
                return ft_dpi_more(dir);
            int verdict;
            return ft_dpi_first_line(p, len, dir, &verdict) < 0 ? verdict : FT_DPI_DETECTED;
        }
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_MEMCACHED_H */
