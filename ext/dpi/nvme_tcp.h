/* nvme_tcp.h: NVMe/TCP (NVM Express TCP Transport Specification 1.0, section 3.6): every PDU starts with
 * an 8-byte common header: type, flags, header length (hlen), PDU data offset, PDU length (little-endian).
 * The connection begins with ICReq (host, type 0x00, hlen = plen = 128) and ICResp (0x01). Later PDUs are
 * recognised on the NVMe/TCP ports (4420, 8009 discovery) by their fixed header lengths.
 */
#ifndef FT_DPI_NVME_TCP_H
#define FT_DPI_NVME_TCP_H
#include "dpi_types.h"

static inline int ft_dpi_nvme_tcp(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                  struct ft_dpi_out *out)
{
    (void)out;
    if (len < 8)
        return ft_dpi_more(dir);
    uint8_t type = p[0], hlen = p[2], pdo = p[3];
    uint32_t plen = ft_rd32le(p + 4);
    if ((type == 0x00 || type == 0x01) && hlen == 128 && plen == 128 && pdo == 0) {
        if (len < 10)
            return ft_dpi_more(dir);
        if (ft_rd16(p + 8) != 0) /* PFV: PDU format version 0 (the field is little-endian; 0 either way) */
            return FT_DPI_EXCLUDED;
        return FT_DPI_DETECTED;
    }
    if (!ft_dpi_port(st, 4420) && !ft_dpi_port(st, 8009))
        return FT_DPI_EXCLUDED;
    /* CapsuleCmd 72, CapsuleResp 24, H2CData 24, C2HData 24, R2T 24, TermReq 24 (RFC: fixed hlen) */
    uint8_t want = type == 0x04 ? 72 : (type >= 0x02 && type <= 0x09 && type != 0x08) ? 24 : 0;
    if (!want || hlen != want || plen < hlen || plen > (1u << 24) || (pdo && pdo < hlen))
        return FT_DPI_EXCLUDED;
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_NVME_TCP_H */
