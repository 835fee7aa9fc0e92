/* fluentd.h: Fluentd Forward protocol v1 (github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1),
 * spoken by Fluentd and Fluent Bit on port 24224: MessagePack arrays [tag, time, record(, option)] (Message
 * mode), [tag, [[time, record], ...](, option)] (Forward), [tag, packed entries as bin/str(, option)]
 * (PackedForward, CompressedPackedForward), and the secure-forward handshake ["HELO", {...}] /
 * ["PING", ...] / ["PONG", ...].
 */
#ifndef FT_DPI_FLUENTD_H
#define FT_DPI_FLUENTD_H
#include "dpi_types.h"

static inline int ft_dpi_fluentd(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                 struct ft_dpi_out *out)
{
    (void)out;
    if (len < 1)
        return ft_dpi_more(dir);
    uint32_t o;
    if (p[0] >= 0x92 && p[0] <= 0x96) /* fixarray of 2 to 6 */
        o = 1;
    else if (p[0] == 0xdc && len >= 3 && ft_rd16(p + 1) >= 2 && ft_rd16(p + 1) <= 6)
        o = 3;
    else
        return FT_DPI_EXCLUDED;
    if (o >= len)
        return ft_dpi_more(dir);
    /* first element: the tag (or HELO/PING/PONG), a string */
    uint32_t tl;
    if (p[o] >= 0xa1 && p[o] <= 0xbf) {
        tl = p[o] & 0x1f;
        o += 1;
    } else if (p[o] == 0xd9 && o + 1 < len) {
        tl = p[o + 1];
        o += 2;
    } else {
        return FT_DPI_EXCLUDED;
    }
    if (tl == 0 || tl > 255)
        return FT_DPI_EXCLUDED;
    if (o + tl + 1 > len)
        return ft_dpi_more(dir);
    for (uint32_t i = 0; i < tl; i++) {
        uint8_t c = p[o + i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-' || c == '/' || c == ':' || c == '*'))
            return FT_DPI_EXCLUDED;
    }
    int handshake = tl == 4 && (memcmp(p + o, "HELO", 4) == 0 || memcmp(p + o, "PING", 4) == 0 ||
                                memcmp(p + o, "PONG", 4) == 0);
    o += tl;
    uint8_t t = p[o];
    if (handshake)
        return (t >= 0x80 && t <= 0x8f) || t == 0xde || (t >= 0xa0 && t <= 0xbf) || t == 0xc2 || t == 0xc3 ||
               t == 0xd9 ? FT_DPI_DETECTED : FT_DPI_EXCLUDED;
    /* second element: time (uint32, uint64, EventTime ext8 type 0), entries (array), or packed entries */
    int time = t == 0xce || t == 0xcf || (t == 0xd7 && o + 1 < len && p[o + 1] == 0) || t <= 0x7f;
    int entries = (t >= 0x90 && t <= 0x9f) || t == 0xdc || t == 0xdd;
    int packed = t == 0xc4 || t == 0xc5 || t == 0xc6 || t == 0xd9 || t == 0xda || t == 0xdb;
    if (!time && !entries && !packed)
        return FT_DPI_EXCLUDED;
    if (time && !ft_dpi_port(st, 24224) && t <= 0x7f)
        return FT_DPI_EXCLUDED; /* a small integer after a string is too common elsewhere */
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_FLUENTD_H */
