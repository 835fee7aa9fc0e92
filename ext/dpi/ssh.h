/* ssh.h: SSH (RFC 4253 section 4.2): the identification string "SSH-protoversion-softwareversion" that
 * each side sends first. app_version is the server's software version (else the client's).
 */
#ifndef FT_DPI_SSH_H
#define FT_DPI_SSH_H
#include "dpi_types.h"

/* Parses an identification line; returns DETECTED (fields set), EXCLUDED, or NEED_MORE when cut. */
static inline int ft_ssh_banner(const uint8_t *p, uint32_t len, int server, struct ft_dpi_out *out)
{
    uint32_t n = len < 4 ? len : 4;
    if (memcmp(p, "SSH-", n) != 0)
        return FT_DPI_EXCLUDED;
    uint32_t lim = len < 255 ? len : 255; /* RFC 4253: at most 255 characters with CR LF */
    uint32_t eol = lim;
    for (uint32_t i = 0; i < lim; i++)
        if (p[i] == '\n' || p[i] == '\r') {
            eol = i;
            break;
        }
    if (!ft_dpi_printable(p, eol))
        return FT_DPI_EXCLUDED;
    if (eol == lim)
        return len >= 255 ? FT_DPI_EXCLUDED : FT_DPI_NEED_MORE;
    /* SSH-2.0-, SSH-1.99-, SSH-1.5- */
    uint32_t i = 4;
    while (i < eol && ((p[i] >= '0' && p[i] <= '9') || p[i] == '.'))
        i++;
    if (i == 4 || i >= eol || p[i] != '-' || p[4] < '1' || p[4] > '2')
        return FT_DPI_EXCLUDED;
    i++;
    FT_DPI_SET(out, FT_O_VERSION | (server ? FT_O_VERSION_SERVER : 0), version, p + i, eol - i, 0);
    return FT_DPI_DETECTED;
}

static inline int ft_dpi_ssh(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    int d = ft_dpi_dir(dir);
    if (st->flags & FT_DPI_S_EXTRA) { /* the other side's banner */
        if (d + 1 == st->scratch[0])
            return FT_DPI_DETECTED;
        int rv = ft_ssh_banner(p, len, d, out);
        if (rv == FT_DPI_NEED_MORE && !ft_dpi_final(dir))
            return FT_DPI_NEED_MORE;
        st->flags &= (uint8_t)~FT_DPI_S_EXTRA;
        return FT_DPI_DETECTED;
    }
    int rv = ft_ssh_banner(p, len, d, out);
    if (rv == FT_DPI_NEED_MORE)
        return ft_dpi_more(dir);
    if (rv == FT_DPI_DETECTED && st->dir_pkts[!d] == 0) {
        st->scratch[0] = (uint8_t)(d + 1);
        st->flags |= FT_DPI_S_EXTRA;
    }
    return rv;
}

#endif /* FT_DPI_SSH_H */
