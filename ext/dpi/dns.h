/* dns.h: DNS (RFC 1035) over UDP and TCP (2-byte length prefix, RFC 7766), and the same wire format on the
 * multicast-name ports: mDNS (5353, RFC 6762) and LLMNR (5355, RFC 4795). Query name, type, and the response
 * code from the response with the query's id (extra phase).
 */
#ifndef FT_DPI_DNS_H
#define FT_DPI_DNS_H
#include "dpi_types.h"

/* Reads a domain name at p[*o] of a message m[0..len) (p == m): labels, and compression pointers to earlier
 * offsets (at most 16 hops). Writes the dotted name, lower-cased, into dst (cap bytes, NUL-terminated;
 * dst may be NULL) and advances *o past the name as it appears in place. Returns the name's text length,
 * -1 when truncated, -2 when malformed. strict: only hostname characters allowed. */
static inline int ft_dns_name(const uint8_t *m, uint32_t len, uint32_t *o, char *dst, uint32_t cap, int strict)
{
    uint32_t pos = *o, end_in_place = 0, total = 0;
    int jumped = 0;
    for (int k = 0; k < 128; k++) {
        if (pos >= len)
            return -1;
        uint8_t l = m[pos];
        if (l == 0) {
            if (!jumped)
                end_in_place = pos + 1;
            *o = end_in_place;
            if (dst)
                dst[total < cap ? total : cap - 1] = 0;
            return (int)total;
        }
        if ((l & 0xc0) == 0xc0) {
            if (pos + 1 >= len)
                return -1;
            uint32_t target = ((uint32_t)(l & 0x3f) << 8) | m[pos + 1];
            if (!jumped)
                end_in_place = pos + 2;
            if (target >= pos || jumped >= 16)
                return -2; /* pointers go backwards only: no loops */
            jumped++;
            pos = target;
            continue;
        }
        if (l > 63)
            return -2;
        if (pos + 1 + l > len)
            return -1;
        for (uint32_t i = 0; i < l; i++) {
            uint8_t c = m[pos + 1 + i];
            if (strict && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                            c == '-' || c == '_'))
                return -2;
            if (c >= 'A' && c <= 'Z')
                c = (uint8_t)(c + 32);
            if (total && i == 0) {
                if (dst && total + 1 < cap)
                    dst[total] = '.';
                total++;
            }
            if (dst && total + 1 < cap)
                dst[total] = (char)(c < 0x20 || c > 0x7e ? '?' : c);
            total++;
        }
        if (total > 255)
            return -2;
        pos += 1 + l;
    }
    return -2;
}

/* Checks a DNS message m[0..len) (len may be cut); fills the fields when it looks like DNS. Returns
 * FT_DPI_DETECTED, FT_DPI_EXCLUDED, or FT_DPI_NEED_MORE when the question is cut. wellknown: the flow uses
 * a DNS port (otherwise the message must be a plain query with a hostname). */
static inline int ft_dns_msg(const uint8_t *m, uint32_t len, int wellknown, int mdns, struct ft_dpi_out *out,
                             uint16_t *txid, int *is_response)
{
    if (len < 12)
        return FT_DPI_NEED_MORE;
    uint16_t flags = ft_rd16(m + 2);
    uint16_t qd = ft_rd16(m + 4), an = ft_rd16(m + 6), ns = ft_rd16(m + 8), ar = ft_rd16(m + 10);
    int qr = (flags >> 15) & 1;
    int opcode = (flags >> 11) & 0xf;
    if (opcode != 0 && opcode != 2 && opcode != 4 && opcode != 5)
        return FT_DPI_EXCLUDED;
    if ((flags & 0x0040) && !mdns) /* Z bit */
        return FT_DPI_EXCLUDED;
    if (qd > 16 || an > 256 || ns > 256 || ar > 256)
        return FT_DPI_EXCLUDED;
    if (!wellknown && (qr || qd != 1 || an || ns || ar > 1 || opcode))
        return FT_DPI_EXCLUDED;
    if (!qr && opcode == 0 && (ns > 0 || (an > 0 && !mdns)))
        return FT_DPI_EXCLUDED;
    *txid = ft_rd16(m);
    *is_response = qr;
    char name[FT_DPI_NAME_LEN];
    uint32_t o = 12;
    if (qd == 0) {
        /* mDNS announcements carry answers only; a response without a question is otherwise odd */
        if (!mdns || !qr || an == 0)
            return FT_DPI_EXCLUDED;
    }
    int n = ft_dns_name(m, len, &o, name, sizeof(name), !wellknown);
    if (n == -1)
        return FT_DPI_NEED_MORE;
    if (n < 0)
        return FT_DPI_EXCLUDED;
    if (o + 4 > len)
        return FT_DPI_NEED_MORE;
    uint16_t qtype = ft_rd16(m + o), qclass = ft_rd16(m + o + 2) & 0x7fff;
    if (qclass != 1 && qclass != 3 && qclass != 4 && qclass != 254 && qclass != 255)
        return FT_DPI_EXCLUDED;
    if (qtype == 0 || (!wellknown && qtype > 255 && qtype != 28 && qtype != 65 && qtype != 64))
        return FT_DPI_EXCLUDED;
    if (n > 0) {
        uint32_t k = (uint32_t)n < sizeof(name) - 1 ? (uint32_t)n : (uint32_t)sizeof(name) - 1;
        FT_DPI_SET(out, FT_O_SERVER_NAME, server_name, (const uint8_t *)name, k, 1);
        if ((uint32_t)n > k)
            out->truncated |= FT_O_SERVER_NAME;
    }
    if (qd) {
        out->dns_qtype = qtype;
        out->set |= FT_O_DNS_QTYPE;
    }
    if (qr) {
        out->dns_rcode = (uint8_t)(flags & 0xf);
        out->set |= FT_O_DNS_RCODE;
    }
    return FT_DPI_DETECTED;
}

static inline int ft_dpi_dns(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    if (ft_dpi_port(st, 137) || ft_dpi_port(st, 138))
        return FT_DPI_EXCLUDED; /* NetBIOS name/datagram service: DNS-like, but netbios.h's */
    int mdns = ft_dpi_port(st, 5353), llmnr = ft_dpi_port(st, 5355);
    int wellknown = ft_dpi_port(st, 53) || mdns || llmnr || ft_dpi_port(st, 853) || ft_dpi_port(st, 5300);
    const uint8_t *m = p;
    uint32_t mlen = len;
    if (st->l4 == 6) {
        if (len < 2)
            return ft_dpi_more(dir);
        uint32_t l = ft_rd16(p);
        if (l < 12)
            return FT_DPI_EXCLUDED;
        m = p + 2;
        mlen = len - 2 < l ? len - 2 : l;
    }
    uint16_t txid;
    int resp;
    int extra = (st->flags & FT_DPI_S_EXTRA) != 0;
    if (extra) {
        /* waiting for the response to the query: take its code, nothing else */
        struct ft_dpi_out tmp;
        memset(&tmp, 0, sizeof(tmp));
        int rv = ft_dns_msg(m, mlen, 1, mdns, &tmp, &txid, &resp);
        if (rv == FT_DPI_NEED_MORE && !ft_dpi_final(dir))
            return FT_DPI_NEED_MORE;
        if (rv == FT_DPI_DETECTED && resp && txid == ft_rd16(st->scratch)) {
            out->dns_rcode = tmp.dns_rcode;
            out->set |= FT_O_DNS_RCODE;
            st->flags &= (uint8_t)~FT_DPI_S_EXTRA;
        }
        return FT_DPI_DETECTED;
    }
    int rv = ft_dns_msg(m, mlen, wellknown, mdns, out, &txid, &resp);
    if (rv == FT_DPI_NEED_MORE)
        return ft_dpi_more(dir);
    if (rv != FT_DPI_DETECTED)
        return rv;
    st->app = mdns ? FT_APP_MDNS : llmnr ? FT_APP_LLMNR : FT_APP_DNS;
    if (!resp && !mdns) {
        st->scratch[0] = (uint8_t)(txid >> 8);
        st->scratch[1] = (uint8_t)txid;
        st->flags |= FT_DPI_S_EXTRA; /* the response's code */
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_DNS_H */
