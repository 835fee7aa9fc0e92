/* ntp.h: NTP (RFC 5905) on UDP 123 (port-gated): 48-byte header, optionally followed by extension fields and
 * a MAC (key id + digest); version 1..4 and mode 1..5 in the first byte; control (mode 6, RFC 9327) and
 * private (mode 7) messages are shorter. app_version "NTPv<n>".
 */
#ifndef FT_DPI_NTP_H
#define FT_DPI_NTP_H
#include "dpi_types.h"

static inline int ft_dpi_ntp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    uint8_t vn = (p[0] >> 3) & 7, mode = p[0] & 7;
    if (vn < 1 || vn > 4 || mode == 0)
        return FT_DPI_EXCLUDED;
    if (mode <= 5) {
        if (len < 48)
            return ft_dpi_more(dir);
        if ((len - 48) % 4 != 0)
            return FT_DPI_EXCLUDED;
        /* stratum 0..16; precision a small negative power of two (0 from minimal SNTP clients) */
        if (p[1] > 16 || (p[3] != 0 && p[3] < 0xe0))
            return FT_DPI_EXCLUDED;
    } else if (mode == 6) { /* control (RFC 9327): 12-byte header, data count, padding and MAC after */
        if (len < 12)
            return ft_dpi_more(dir);
        uint32_t count = ft_rd16(p + 10);
        if ((p[1] & 0x1f) == 0 || (p[1] & 0x1f) > 31 || 12 + count > len || len - 12 - count > 100)
            return FT_DPI_EXCLUDED;
    } else { /* private (mode 7, ntpd): implementation 0, 2 or 3, request code below 64 */
        if (len < 8)
            return ft_dpi_more(dir);
        if ((p[2] != 0 && p[2] != 2 && p[2] != 3) || p[3] >= 64)
            return FT_DPI_EXCLUDED;
    }
    char v[6] = {'N', 'T', 'P', 'v', (char)('0' + vn), 0};
    FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)v, 5, 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_NTP_H */
