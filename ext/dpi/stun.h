/* stun.h: STUN (RFC 8489, RFC 5389) and TURN over UDP and TCP: message type with the two top bits 0, a
 * length that is a multiple of 4 (20-byte header), the magic cookie 0x2112A442. Classic STUN (RFC 3489, no
 * cookie) when the attributes tile the message exactly, or on port 3478. Over TCP with or without the
 * RFC 4571 2-byte length framing.
 * WebRTC and VPN clients run DTLS on the same 5-tuple after the STUN exchange: when a DTLS record follows
 * within the budget the flow is labelled dtls (the STUN was only its connectivity check).
 */
#ifndef FT_DPI_STUN_H
#define FT_DPI_STUN_H
#include "dpi_types.h"

/* 1 when the attributes p[20..len) of a classic STUN message (type, length, value) tile it exactly.
 * Attribute types are not checked: vendors (Zoom) use their own. */
static inline int ft_stun_classic_attrs(const uint8_t *p, uint32_t len)
{
    uint32_t o = 20;
    for (int k = 0; k < 32 && o < len; k++) {
        if (o + 4 > len)
            return 0;
        o += 4 + ft_rd16(p + o + 2);
    }
    return o == len;
}

/* One STUN message at p (a whole datagram, or the start of a TCP stream). */
static inline int ft_stun_msg(const uint8_t *p, uint32_t len, int dir, const struct ft_dpi_state *st)
{
    if (p[0] & 0xc0)
        return FT_DPI_EXCLUDED;
    if (len < 20)
        return ft_dpi_more(dir);
    uint32_t l = ft_rd16(p + 2);
    int tcp = st->l4 == 6;
    if ((l & 3) || (!tcp && l + 20 < len) || l > 8192)
        return FT_DPI_EXCLUDED;
    int cookie = ft_rd32(p + 4) == 0x2112A442;
    if (tcp && !cookie)
        return FT_DPI_EXCLUDED; /* over TCP only the RFC 5389 form, with the cookie */
    if (l + 20 > len)
        return ft_dpi_more(dir);
    if (cookie)
        return FT_DPI_DETECTED;
    uint16_t t = ft_rd16(p);
    int classic = t == 0x0001 || t == 0x0101 || t == 0x0111 || t == 0x0002 || t == 0x0102 || t == 0x0112;
    if (classic && (ft_dpi_port(st, 3478) || (l > 0 && ft_stun_classic_attrs(p, len))))
        return FT_DPI_DETECTED;
    return FT_DPI_EXCLUDED;
}

static inline int ft_dpi_stun(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    /* over TCP, RFC 4571 framing (a 2-byte length before each message) is common too */
    if (st->l4 == 6 && len >= 2 && ft_rd16(p) >= 20 && (len < 10 || ft_rd32(p + 6) == 0x2112A442)) {
        if (len < 10)
            return ft_dpi_more(dir);
        return ft_stun_msg(p + 2, len - 2, dir, st);
    }
    if (st->flags & FT_DPI_S_EXTRA) { /* after STUN: a DTLS record (type 20..23, version 1.0/1.2) makes it dtls */
        if (len >= 13 && p[0] >= 20 && p[0] <= 23 && p[1] == 0xfe && (p[2] == 0xff || p[2] == 0xfd)) {
            st->app = FT_APP_DTLS;
            st->flags &= (uint8_t)~FT_DPI_S_EXTRA;
        }
        return FT_DPI_DETECTED;
    }
    int rv = ft_stun_msg(p, len, dir, st);
    if (rv == FT_DPI_DETECTED && st->l4 == 17)
        st->flags |= FT_DPI_S_EXTRA;
    return rv;
}

#endif /* FT_DPI_STUN_H */
