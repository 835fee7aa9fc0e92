/* mongodb.h: MongoDB wire protocol (mongodb.com/docs/manual/reference/mongodb-wire-protocol): a 16-byte
 * little-endian header: messageLength, requestID, responseTo, opCode (OP_MSG 2013, OP_QUERY 2004,
 * OP_COMPRESSED 2012, OP_REPLY 1, legacy 2001-2007). A client's first message has responseTo 0.
 */
#ifndef FT_DPI_MONGODB_H
#define FT_DPI_MONGODB_H
#include "dpi_types.h"

static inline int ft_dpi_mongodb(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                 struct ft_dpi_out *out)
{
    (void)st;
    (void)out;
    if (len < 16)
        return ft_dpi_more(dir);
    uint32_t ml = ft_rd32le(p), op = ft_rd32le(p + 12);
    if (ml < 16 || ml > 48000000u)
        return FT_DPI_EXCLUDED;
    if (!(op == 1 || (op >= 2001 && op <= 2007 && op != 2003) || op == 2012 || op == 2013))
        return FT_DPI_EXCLUDED;
    uint32_t resp_to = ft_rd32le(p + 8);
    if (op == 1) { /* OP_REPLY: from the server, to a request id, flags below 16 */
        if (ft_dpi_dir(dir) != 1 || resp_to == 0 || len < 20 || ft_rd32le(p + 16) > 15)
            return FT_DPI_EXCLUDED;
    } else if (resp_to != 0 && resp_to != 0xffffffffu) {
        return FT_DPI_EXCLUDED;
    }
    if (len > ml)
        return FT_DPI_EXCLUDED; /* one message first: more bytes than it frames is something else */
    if (op == 2013 && len >= 21 && ml >= 21) { /* OP_MSG: flagBits, then section kind 0 or 1 */
        if (p[20] > 2)
            return FT_DPI_EXCLUDED;
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_MONGODB_H */
