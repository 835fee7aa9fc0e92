/* openvpn.h: OpenVPN: the first packet of a session is a hard reset (opcode 7, client v2; 8, server v2; 10,
 * client v3) in the top 5 bits of the first byte, followed by the 8-byte session id. Over TCP a 2-byte
 * packet length comes first. On port 1194 the opcode decides; elsewhere the client's reset must have its
 * exact shape (see below).
 */
#ifndef FT_DPI_OPENVPN_H
#define FT_DPI_OPENVPN_H
#include "dpi_types.h"

static inline int ft_dpi_openvpn(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                 struct ft_dpi_out *out)
{
    (void)out;
    const uint8_t *m = p;
    uint32_t n = len;
    if (st->l4 == 6) {
        if (len < 2)
            return ft_dpi_more(dir);
        if (ft_rd16(p) < 14 || ft_rd16(p) > 2048)
            return FT_DPI_EXCLUDED;
        m += 2;
        n -= 2;
    }
    if (n < 14)
        return ft_dpi_more(dir);
    uint8_t op = m[0] >> 3;
    if (op != 7 && op != 8 && op != 10)
        return FT_DPI_EXCLUDED;
    if (ft_dpi_port(st, 1194))
        return FT_DPI_DETECTED;
    /* elsewhere (OpenVPN on 443 is common) the client's first packet must have the exact shape of
     * P_CONTROL_HARD_RESET_CLIENT_V2 with key id 0 (either direction: the capture may have missed it and
     * taken the server for the initiator): opcode, session id (8), then
     *   - no tls-auth: an empty ACK array (0) and message packet id 0 (14 bytes);
     *   - tls-auth, HMAC-SHA1/256/512 (20/32/64) + replay packet id + time, then the same 5 bytes;
     *   - tls-crypt: replay packet id 1 and a time in clear, a 32-byte tag, 5 encrypted bytes (54).
     * The server's P_CONTROL_HARD_RESET_SERVER_V2 (opcode 8) acknowledges packet 0 of the client's session:
     * an ACK array of one (1, packet id 0, the client's session id) and message packet id 0, after the same
     * optional tls-auth part: 26 bytes plain, 54/66/98 with HMAC-SHA1/256/512. */
    if (m[0] == (8 << 3)) {
        if ((n == 26 || n == 54 || n == 66 || n == 98) && m[n - 17] == 1 && ft_rd32(m + n - 16) == 0 &&
            ft_rd32(m + n - 4) == 0)
            return FT_DPI_DETECTED;
        return FT_DPI_EXCLUDED;
    }
    if (m[0] != (7 << 3))
        return FT_DPI_EXCLUDED;
    if ((n == 14 || n == 42 || n == 54 || n == 86) && m[n - 5] == 0 && ft_rd32(m + n - 4) == 0)
        return FT_DPI_DETECTED;
    if (n == 54) { /* tls-crypt: replay packet id 1, then a time in 2012..2038 */
        uint32_t t = ft_rd32(m + 13);
        if (ft_rd32(m + 9) == 1 && t >= 0x50000000u && t < 0x80000000u)
            return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_OPENVPN_H */
