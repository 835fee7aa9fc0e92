/* mqtt.h: MQTT 3.1, 3.1.1 and 5.0 (OASIS). The client opens with CONNECT: fixed header 0x10, remaining
 * length (1-4 byte varint), protocol name "MQTT" (levels 4, 5) or "MQIsdp" (level 3), level, flags with
 * the reserved bit 0. app_version: "3.1", "3.1.1" or "5.0". Other packets only on ports 1883/8883.
 */
#ifndef FT_DPI_MQTT_H
#define FT_DPI_MQTT_H
#include "dpi_types.h"

static inline int ft_dpi_mqtt(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                              struct ft_dpi_out *out)
{
    if (len < 1)
        return ft_dpi_more(dir);
    if (p[0] == 0xc0 || p[0] == 0xd0) { /* PINGREQ, then PINGRESP: a session seen after its CONNECT */
        int d = ft_dpi_dir(dir);
        if (len < 2)
            return ft_dpi_more(dir);
        if (p[1] != 0 || len != 2 || p[0] != (d == 0 ? 0xc0 : 0xd0))
            return FT_DPI_EXCLUDED;
        return d == 1 && st->dir_pkts[0] ? FT_DPI_DETECTED : ft_dpi_more(dir);
    }
    if (p[0] != 0x10) {
        /* CONNACK from the server, or anything else mid-session, on the MQTT port only */
        if (!ft_dpi_port(st, 1883))
            return FT_DPI_EXCLUDED;
        if (len >= 4 && p[0] == 0x20 && (p[1] == 2 || p[1] == 3 || (p[1] >= 3 && p[1] < 128)) && p[2] <= 1)
            return FT_DPI_DETECTED;
        return FT_DPI_EXCLUDED;
    }
    uint32_t o = 1, rl = 0;
    for (int k = 0; k < 4; k++) {
        if (o >= len)
            return ft_dpi_more(dir);
        uint8_t b = p[o++];
        rl |= (uint32_t)(b & 0x7f) << (7 * k);
        if (!(b & 0x80))
            break;
        if (k == 3)
            return FT_DPI_EXCLUDED;
    }
    if (rl < 10)
        return FT_DPI_EXCLUDED;
    if (len < o + 8)
        return ft_dpi_more(dir);
    const char *ver = 0;
    uint32_t f;
    if (memcmp(p + o, "\x00\x04MQTT", 6) == 0) {
        uint8_t lvl = p[o + 6];
        if (lvl != 4 && lvl != 5)
            return FT_DPI_EXCLUDED;
        ver = lvl == 4 ? "3.1.1" : "5.0";
        f = p[o + 7];
    } else if (len >= o + 10 && memcmp(p + o, "\x00\x06MQIsdp", 8) == 0) {
        if (p[o + 8] != 3)
            return FT_DPI_EXCLUDED;
        ver = "3.1";
        f = p[o + 9];
    } else {
        return len < o + 10 && p[o] == 0 ? ft_dpi_more(dir) : FT_DPI_EXCLUDED;
    }
    if (f & 1) /* reserved connect flag */
        return FT_DPI_EXCLUDED;
    FT_DPI_SET(out, FT_O_VERSION, version, (const uint8_t *)ver, (uint32_t)strlen(ver), 0);
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_MQTT_H */
