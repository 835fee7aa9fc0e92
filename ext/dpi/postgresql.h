/* postgresql.h: PostgreSQL frontend/backend protocol 3 (PostgreSQL docs, "Message Formats"). The client
 * opens with a StartupMessage (length, version 3.0 = 196608, then NUL-terminated "user" ... parameters) or
 * an SSLRequest / GSSENCRequest / CancelRequest (fixed lengths and codes). A capture that starts later is
 * recognised on port 5432 from a simple Query message ('Q', length, SQL text).
 */
#ifndef FT_DPI_POSTGRESQL_H
#define FT_DPI_POSTGRESQL_H
#include "dpi_types.h"

static inline int ft_dpi_postgresql(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                    struct ft_dpi_out *out)
{
    if (len < 8) {
        if (len >= 1 && p[0] == 0)
            return ft_dpi_more(dir);
        if (!(len >= 1 && p[0] == 'Q' && ft_dpi_port(st, 5432)))
            return FT_DPI_EXCLUDED;
        return ft_dpi_more(dir);
    }
    uint32_t l = ft_rd32(p), code = ft_rd32(p + 4);
    if (l == 8 && len == 8 && (code == 80877103 || code == 80877104)) /* SSLRequest, GSSENCRequest */
        return FT_DPI_DETECTED;
    if (l == 16 && len == 16 && code == 80877102) /* CancelRequest */
        return FT_DPI_DETECTED;
    if ((code == 196608 || code == 196610) && l > 8 && l < 10000) { /* StartupMessage, protocol 3.0 / 3.2 */
        if (len < l && !ft_dpi_final(dir))
            return FT_DPI_NEED_MORE;
        uint32_t n = len < l ? len : l;
        /* parameters: name\0value\0 pairs; the first is normally "user" ("database\0" needs 17 bytes:
         * shorter, its first 4 bytes pass the printable test anyway) */
        if (n >= 13 && memcmp(p + 8, "user", 5) != 0 && (n < 17 || memcmp(p + 8, "database", 9) != 0) &&
            !ft_dpi_printable(p + 8, 4))
            return FT_DPI_EXCLUDED;
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)(code == 196608 ? "3.0" : "3.2"), 3, 0);
        return FT_DPI_DETECTED;
    }
    if (p[0] == 'Q' && ft_dpi_port(st, 5432)) {
        uint32_t ql = ft_rd32(p + 1);
        uint32_t n = len - 5 < 16 ? len - 5 : 16;
        if (n == len - 5 && ql + 1 == len && n > 0)
            n--; /* the terminating NUL of the query string */
        if (ql >= 6 && ql < (1u << 24) && n > 0 && ft_dpi_printable(p + 5, n))
            return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_POSTGRESQL_H */
