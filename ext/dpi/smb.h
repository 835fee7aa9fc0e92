/* smb.h: SMB over TCP (MS-SMB2 2.1, RFC 1002 session framing): a 4-byte session message header (type 0,
 * 24-bit length) followed by the protocol id: \xffSMB (SMB1), \xfeSMB (SMB2/3), \xfdSMB (SMB3 transform,
 * encrypted), \xfcSMB (SMB3 compression). app_version: "SMB1" or "SMB2/3".
 */
#ifndef FT_DPI_SMB_H
#define FT_DPI_SMB_H
#include "dpi_types.h"

static inline int ft_dpi_smb(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)st;
    if (len < 1)
        return ft_dpi_more(dir);
    if (p[0] != 0)
        return FT_DPI_EXCLUDED;
    if (len < 8)
        return ft_dpi_more(dir);
    uint32_t l = ft_rd24(p + 1);
    if (l < 4 || p[5] != 'S' || p[6] != 'M' || p[7] != 'B' || p[4] < 0xfc)
        return FT_DPI_EXCLUDED;
    if (p[4] == 0xff)
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"SMB1", 4, 0);
    else
        FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)"SMB2/3", 6, 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_SMB_H */
