/* ftp.h: FTP control connection (RFC 959) on ports 21/2121 (port-gated): the server's "220" greeting or
 * the client's first command (USER, AUTH, FEAT, SYST, OPTS).
 */
#ifndef FT_DPI_FTP_H
#define FT_DPI_FTP_H
#include "dpi_types.h"

static inline int ft_dpi_ftp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    if (len < 4 || !ft_dpi_printable(p, 4)) /* text protocols: binary data leaves before the line scan */
        return FT_DPI_EXCLUDED;
    int verdict;
    int32_t e = ft_dpi_first_line(p, len, dir, &verdict); /* waits for the line's end while it is text */
    if (e < 0)
        return verdict;
    uint32_t n = (uint32_t)e;
    if (n < 3)
        return FT_DPI_EXCLUDED;
    if (ft_dpi_dir(dir) == 1)
        return (p[0] >= '1' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
                (n == 3 || p[3] == ' ' || p[3] == '-')) ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    static const char *const cmd[] = {"user ", "auth ", "feat", "syst", "opts ", "pass ", "quit"};
    for (uint32_t i = 0; i < sizeof(cmd) / sizeof(cmd[0]); i++) {
        uint32_t k = (uint32_t)strlen(cmd[i]);
        if (n >= k && ft_dpi_ieq(p, cmd[i], k))
            return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_FTP_H */
