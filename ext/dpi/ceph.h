/* ceph.h: Ceph messenger (docs.ceph.com/en/latest/dev/msgr2): both peers open with a banner, "ceph v027"
 * (msgr v1) or "ceph v2\n" (msgr v2). app_version "msgr1" or "msgr2".
 */
#ifndef FT_DPI_CEPH_H
#define FT_DPI_CEPH_H
#include "dpi_types.h"

static inline int ft_dpi_ceph(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    uint32_t n = len < 6 ? len : 6;
    if (memcmp(p, "ceph v", n) != 0)
        return FT_DPI_EXCLUDED;
    if (len < 8)
        return ft_dpi_more(dir);
    if (memcmp(p + 6, "2\n", 2) == 0) {
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"msgr2", 5, 0);
        return FT_DPI_DETECTED;
    }
    if (len < 9)
        return ft_dpi_more(dir);
    if (memcmp(p + 6, "027", 3) == 0) {
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"msgr1", 5, 0);
        return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_CEPH_H */
