/* onc_rpc.h: ONC RPC (RFC 5531) over UDP and TCP (4-byte record mark, RFC 5531 section 11), and the
 * programs it carries: NFS (100003) with its side protocols mount (100005), NLM (100021), NSM status
 * (100024) and NFS ACL (100227), all labelled nfs; the portmapper/rpcbind (100000) labelled portmap; any
 * other program onc-rpc. A reply alone (call not seen) is recognised on the NFS and rpcbind ports only.
 */
#ifndef FT_DPI_ONC_RPC_H
#define FT_DPI_ONC_RPC_H
#include "dpi_types.h"

/* 1 when an RPC auth flavor is defined: AUTH_NONE 0, AUTH_SYS 1, AUTH_SHORT 2, AUTH_DH 3, RPCSEC_GSS 6,
 * AUTH_TLS 7. */
static inline int ft_rpc_flavor(uint32_t f) { return f <= 3 || f == 6 || f == 7; }

static inline uint16_t ft_rpc_label(uint32_t prog)
{
    switch (prog) {
    case 100003: case 100005: case 100021: case 100024: case 100227:
        return FT_APP_NFS;
    case 100000:
        return FT_APP_PORTMAP;
    default:
        return FT_APP_ONC_RPC;
    }
}

static inline int ft_dpi_onc_rpc(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                                 struct ft_dpi_out *out)
{
    (void)out;
    const uint8_t *m = p;
    uint32_t n = len;
    if (st->l4 == 6) {
        if (len < 4)
            return ft_dpi_more(dir);
        uint32_t mark = ft_rd32(p) & 0x7fffffff;
        if (mark < 24 || mark > (1u << 24))
            return FT_DPI_EXCLUDED;
        m = p + 4;
        n = len - 4;
    }
    if (n < 8)
        return ft_dpi_more(dir);
    uint32_t type = ft_rd32(m + 4);
    if (type == 0) { /* CALL: rpcvers, prog, vers, proc, cred, verf */
        if (n < 32)
            return ft_dpi_more(dir);
        if (ft_rd32(m + 8) != 2)
            return FT_DPI_EXCLUDED;
        uint32_t prog = ft_rd32(m + 12), vers = ft_rd32(m + 16), proc = ft_rd32(m + 20);
        uint32_t cf = ft_rd32(m + 24), cl = ft_rd32(m + 28);
        if (!ft_rpc_flavor(cf) || cl > 400 || (cl & 3) || vers > 64 || proc > 1024 || prog == 0)
            return FT_DPI_EXCLUDED;
        uint32_t v = 32 + cl;
        if (n < v + 8)
            return ft_dpi_more(dir);
        uint32_t vf = ft_rd32(m + v), vl = ft_rd32(m + v + 4);
        if (!ft_rpc_flavor(vf) || vl > 400 || (vl & 3))
            return FT_DPI_EXCLUDED;
        st->app = ft_rpc_label(prog);
        return FT_DPI_DETECTED;
    }
    if (type == 1) { /* REPLY without the call: accepted (0) or denied (1) */
        int nfs = ft_dpi_port(st, 2049), pm = ft_dpi_port(st, 111);
        if (!nfs && !pm && !ft_dpi_port(st, 20048))
            return FT_DPI_EXCLUDED;
        if (n < 12)
            return ft_dpi_more(dir);
        uint32_t rs = ft_rd32(m + 8);
        if (rs > 1)
            return FT_DPI_EXCLUDED;
        if (rs == 0) {
            if (n < 24)
                return ft_dpi_more(dir);
            uint32_t vf = ft_rd32(m + 12), vl = ft_rd32(m + 16);
            if (!ft_rpc_flavor(vf) || vl > 400 || (vl & 3))
                return FT_DPI_EXCLUDED;
            if (n < 24 + vl)
                return ft_dpi_more(dir);
            if (ft_rd32(m + 20 + vl) > 5) /* accept_stat */
                return FT_DPI_EXCLUDED;
        }
        st->app = pm ? FT_APP_PORTMAP : FT_APP_NFS;
        return FT_DPI_DETECTED;
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_ONC_RPC_H */
