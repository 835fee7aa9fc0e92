/* iscsi.h: iSCSI (RFC 7143). Every PDU starts with a 48-byte Basic Header Segment. A session starts with a
 * Login Request (opcode 0x03, immediate bit 0x40) whose data segment holds text keys ("InitiatorName=");
 * the target answers with a Login Response (0x23). Elsewhere (capture started mid-session) a BHS with a
 * known opcode is accepted on port 3260.
 */
#ifndef FT_DPI_ISCSI_H
#define FT_DPI_ISCSI_H
#include "dpi_types.h"

static inline int ft_dpi_iscsi(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                               struct ft_dpi_out *out)
{
    (void)out;
    if (len < 1)
        return ft_dpi_more(dir);
    uint8_t op = p[0] & 0x3f;
    int login = op == 0x03 || op == 0x23;
    if (!login && !ft_dpi_port(st, 3260))
        return FT_DPI_EXCLUDED;
    if (len < 48)
        return ft_dpi_more(dir);
    uint32_t ahs = p[4], dlen = ft_rd24(p + 5);
    if (ahs > 64 || dlen > (1u << 24))
        return FT_DPI_EXCLUDED;
    if (login) {
        /* versions max/min are 0 (request) or version-max/active 0 (response); the text data segment
         * starts with a key such as InitiatorName= / TargetPortalGroupTag= */
        if (p[2] != 0 || p[3] != 0 || dlen == 0)
            return FT_DPI_EXCLUDED;
        uint32_t d = 48 + ahs * 4;
        if (len < d + 1)
            return ft_dpi_more(dir);
        uint32_t n = len - d < dlen ? len - d : dlen;
        for (uint32_t i = 0; i < n && i < 64; i++) {
            if (p[d + i] == '=')
                return i > 0 ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
            if (p[d + i] < 0x21 || p[d + i] > 0x7e)
                return FT_DPI_EXCLUDED;
        }
        return n < dlen ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    }
    /* initiator opcodes 0x00-0x06, 0x10; target 0x20-0x26, 0x31, 0x32, 0x3f (RFC 7143 11.2.1.2) */
    if (op <= 0x06 || op == 0x10 || (op >= 0x20 && op <= 0x26) || op == 0x31 || op == 0x32 || op == 0x3f)
        return FT_DPI_DETECTED;
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_ISCSI_H */
