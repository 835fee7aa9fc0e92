/* rfb.h: the Remote Framebuffer protocol of VNC (RFC 6143 section 7.1.1): both sides start with the
 * 12-byte ProtocolVersion "RFB xxx.yyy\n". app_version is "xxx.yyy".
 */
#ifndef FT_DPI_RFB_H
#define FT_DPI_RFB_H
#include "dpi_types.h"

static inline int ft_dpi_rfb(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    uint32_t n = len < 4 ? len : 4;
    if (memcmp(p, "RFB ", n) != 0)
        return FT_DPI_EXCLUDED;
    if (len < 12)
        return ft_dpi_more(dir);
    for (int i = 4; i < 11; i++)
        if (i == 7 ? p[i] != '.' : (p[i] < '0' || p[i] > '9'))
            return FT_DPI_EXCLUDED;
    if (p[11] != '\n')
        return FT_DPI_EXCLUDED;
    FT_DPI_SET(out, FT_O_VERSION, version, p + 4, 7, 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_RFB_H */
