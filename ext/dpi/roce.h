/* roce.h: RoCEv2 (InfiniBand Architecture Specification vol. 1 annex A17: IB transport over UDP 4791) and
 * RDMA CM, the connection manager, whose MADs travel as UD sends to QP 1 (management class 0x07).
 * The payload starts with the 12-byte Base Transport Header.
 */
#ifndef FT_DPI_ROCE_H
#define FT_DPI_ROCE_H
#include "dpi_types.h"

/* 1 when the BTH opcode is defined: RC 0x00-0x18, UC 0x20-0x2b, RD 0x40-0x55, UD 0x64-0x65, CNP 0x81,
 * XRC 0xa0-0xb8 (IBA 9.2, table 38). */
static inline int ft_roce_opcode(uint8_t op)
{
    return op <= 0x18 || (op >= 0x20 && op <= 0x2b) || (op >= 0x40 && op <= 0x55) || op == 0x64 ||
           op == 0x65 || op == 0x81 || (op >= 0xa0 && op <= 0xb8);
}

static inline int ft_dpi_roce(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    if (len < 12)
        return ft_dpi_more(dir); /* a datagram cut by the snap length: the next one will tell */
    uint8_t op = p[0];
    if (!ft_roce_opcode(op) || (p[1] & 0x0f) != 0) /* transport header version 0 */
        return FT_DPI_EXCLUDED;
    uint32_t dqpn = ft_rd24(p + 5);
    st->app = FT_APP_ROCEV2;
    /* UD SEND Only to QP1 (the general services QP): BTH 12 + DETH 8, then the MAD common header */
    if ((op == 0x64 || op == 0x65) && dqpn == 1 && len >= 12 + 8 + 24) {
        const uint8_t *mad = p + 20;
        if (mad[0] == 1 && mad[1] == 0x07 && mad[2] == 2)
            st->app = FT_APP_RDMA_CM;
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_ROCE_H */
