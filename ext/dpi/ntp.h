/* ntp.h: NTP (RFC 5905) on UDP 123 (port-gated): 48-byte header, optionally followed by extension fields and
 * a MAC (key id + digest); version 1..4 and mode 1..5 in the first byte; control (mode 6, RFC 9327) and
 * private (mode 7) messages are shorter. app_version "NTPv<n>".
 */
#ifndef FT_DPI_NTP_H
#define FT_DPI_NTP_H
#include "dpi_types.h"

static inline int ft_dpi_ntp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)dir;
    (void)st;
    if (len < 1)
        return FT_DPI_EXCLUDED;
    uint8_t vn = (p[0] >> 3) & 7, mode = p[0] & 7;
    if (vn < 1 || vn > 4 || mode == 0)
        return FT_DPI_EXCLUDED;
    if (mode <= 5) {
        if (len < 48 || (len - 48) % 4 != 0)
            return FT_DPI_EXCLUDED;
        if (p[1] > 16) /* stratum */
            return FT_DPI_EXCLUDED;
    } else if (len < 8) {
        return FT_DPI_EXCLUDED;
    }
    char v[6] = {'N', 'T', 'P', 'v', (char)('0' + vn), 0};
    FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)v, 5, 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_NTP_H */
