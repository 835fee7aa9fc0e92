/* kafka.h: Apache Kafka wire protocol (kafka.apache.org/protocol). A client request: int32 size, int16
 * api_key, int16 api_version, int32 correlation_id, nullable string client_id (int16 length, -1 = null).
 * All big-endian. The size must frame the message exactly when it is complete.
 */
#ifndef FT_DPI_KAFKA_H
#define FT_DPI_KAFKA_H
#include "dpi_types.h"

#define FT_KAFKA_MAX_API_KEY 80   /* 0..74 defined by Kafka 3.9; leave room */
#define FT_KAFKA_MAX_API_VERSION 20

static inline int ft_dpi_kafka(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                               struct ft_dpi_out *out)
{
    (void)st;
    if (len < 4)
        return (len < 1 || p[0] == 0) ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    uint32_t size = ft_rd32(p);
    if (size < 10 || size > (1u << 20))
        return FT_DPI_EXCLUDED;
    if (len < 14)
        return ft_dpi_more(dir);
    uint16_t key = ft_rd16(p + 4), ver = ft_rd16(p + 6);
    int16_t cl = (int16_t)ft_rd16(p + 12);
    if (key > FT_KAFKA_MAX_API_KEY || ver > FT_KAFKA_MAX_API_VERSION || cl < -1 || cl > 255)
        return FT_DPI_EXCLUDED;
    if (cl > 0) {
        if ((uint32_t)cl + 14 > size + 4)
            return FT_DPI_EXCLUDED;
        if (len < 14u + (uint32_t)cl)
            return ft_dpi_more(dir);
        if (!ft_dpi_printable(p + 14, (uint32_t)cl))
            return FT_DPI_EXCLUDED;
    }
    if (len > size + 4)
        return FT_DPI_EXCLUDED; /* a first request is one message; more bytes than it frames is not Kafka */
    if (len < size + 4 && !ft_dpi_final(dir))
        return FT_DPI_NEED_MORE;
    (void)out;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_KAFKA_H */
