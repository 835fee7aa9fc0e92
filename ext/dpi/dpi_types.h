/* dpi_types.h: the DPI contract shared by the registry (ext/ft_dpi.h), every dissector (ext/dpi/<proto>.h)
 * and the flow table (ext/ft_flow.h embeds struct ft_dpi_state in struct ft_flow and struct ft_dpi_out in
 * struct ft_flowrec).
 *
 * A dissector is one static inline function per protocol with this signature:
 *
 *     int ft_dpi_<proto>(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
 *                        struct ft_dpi_out *out);
 *
 *   p, len   the payload seen so far in direction dir: one packet's L4 payload, or, after the dissector
 *            answered FT_DPI_NEED_MORE on TCP, the in-order bytes of that direction from the first inspected
 *            byte on (the registry reassembles up to FT_DPI_REASM_BYTES). Every read is bounds-checked
 *            against len by the dissector.
 *   dir      bit 0: 0 = from the flow's initiator (client), 1 = from the responder (server).
 *            FT_DPI_FINAL: this view will not grow (TCP bytes cut by the snap length, reassembly buffer
 *            full, or the last packet of the budget): answer DETECTED or EXCLUDED now, NEED_MORE counts as
 *            EXCLUDED.
 *   UDP      each datagram is a view of its own (unless the dissector sets FT_DPI_S_GATHER): NEED_MORE on a
 *            datagram too short to tell (cut by the snap length) means "show me the next datagram".
 *   st       per-flow state: ports, L4 protocol, packets seen per direction; st->app may be set on
 *            DETECTED to refine the dissector's label (the HTTP dissector says "prometheus" for a scrape);
 *            st->flags |= FT_DPI_S_EXTRA on DETECTED asks for more packets of the flow (up to the budget) to
 *            complete the fields (server's ALPN, DNS response code); the dissector clears it when done.
 *   out      fields (server name, ALPN, ...): written only when answering DETECTED, or during the extra
 *            phase; the registry merges what was set (out->set bits) into the flow's record.
 *
 * Returns FT_DPI_DETECTED (this is the protocol), FT_DPI_EXCLUDED (it cannot be: never call again for this
 * flow) or FT_DPI_NEED_MORE (consistent so far, the message is incomplete or the other side must speak).
 */
#ifndef FT_DPI_TYPES_H
#define FT_DPI_TYPES_H
#include <stdint.h>
#include <string.h>

#define FT_DPI_DETECTED 1
#define FT_DPI_EXCLUDED 0
#define FT_DPI_NEED_MORE 2

#define FT_DPI_DIR_MASK 1
#define FT_DPI_FINAL 2

/* Reassembly: in-order bytes kept per direction while a dissector needs more (a post-quantum TLS
 * ClientHello is about 1.8 kB, two segments; HTTP request headers rarely exceed 4 kB). */
#define FT_DPI_REASM_BYTES 4096

/* Field sizes of struct ft_dpi_out, including the terminating NUL. Longer values are cut (the
 * out->truncated bit of the field is set). */
#define FT_DPI_NAME_LEN 128     /* SNI, HTTP Host, DNS query name (a DNS name is at most 253 characters) */
#define FT_DPI_ALPN_LEN 32
#define FT_DPI_VERSION_LEN 48   /* "TLSv1.3", "QUICv1", SSH software banner, MySQL server version */
#define FT_DPI_METHOD_LEN 16
#define FT_DPI_PATH_LEN 112     /* HTTP path without the query; gRPC /package.Service/Method */
#define FT_DPI_UA_LEN 112

/* ft_dpi_out.set / .truncated bits */
#define FT_O_SERVER_NAME 0x001
#define FT_O_ALPN 0x002
#define FT_O_ALPN_SERVER 0x004  /* alpn is the server's choice (else the client's first offer) */
#define FT_O_VERSION 0x008
#define FT_O_METHOD 0x010
#define FT_O_PATH 0x020
#define FT_O_UA 0x040
#define FT_O_DNS_QTYPE 0x080
#define FT_O_DNS_RCODE 0x100
#define FT_O_VERSION_SERVER 0x200 /* version came from the server side (wins over the client's) */

/* Confidence of a verdict (app_confidence): what the label rests on. */
#define FT_CONF_NONE 0
#define FT_CONF_PAYLOAD 1  /* a dissector or a payload-pattern rule recognised the bytes */
#define FT_CONF_NAME 2     /* a server-name or ALPN rule */
#define FT_CONF_ADDRESS 3  /* an address (CIDR) rule */
#define FT_CONF_PORT 4     /* a port rule; no payload was seen */
#define FT_CONF_GUESS 5    /* a port rule although payload was seen that no dissector recognised */

/* What a flow record carries (last member of struct ft_flowrec). 448 bytes. The strings are NUL-terminated
 * UTF-8/ASCII as sent (names lower-cased); empty means absent. */
struct ft_dpi_out {
    char server_name[FT_DPI_NAME_LEN];
    char alpn[FT_DPI_ALPN_LEN];
    char version[FT_DPI_VERSION_LEN];
    char http_method[FT_DPI_METHOD_LEN];
    char http_path[FT_DPI_PATH_LEN];
    char user_agent[FT_DPI_UA_LEN];
    uint16_t set;          /* FT_O_* present */
    uint16_t truncated;    /* FT_O_* cut to the field size */
    uint16_t app;          /* label id: FT_APP_* for built-in labels, rule labels above FT_APP__COUNT */
    uint16_t base;         /* label of the dissector that recognised the payload (0: none) */
    uint16_t rule;         /* id of what decided (0: nothing; dissectors 1..128, rules FT_DPI_RULE_BASE +
                              index; see ft_dpi.h) */
    uint16_t dns_qtype;
    uint8_t dns_rcode;
    uint8_t conf;          /* FT_CONF_* */
    uint8_t inspected;     /* payload packets inspected (both directions, capped by the budget) */
    uint8_t _pad[1];
};

/* Per-flow DPI state (last member of struct ft_flow): 40 bytes. */
struct ft_dpi_state {
    uint64_t cand;         /* dissectors still possible: bit i = entry i of the flow's L4 table */
    int32_t ext;           /* index of the flow's fields slot in the registry's pool, -1: none */
    int32_t reasm;         /* index of the flow's reassembly buffer, -1: none */
    uint16_t app;          /* verdict label (0: none yet) */
    uint16_t rule;         /* what decided (see ft_dpi_out.rule) */
    uint16_t prule;        /* payload-pattern rule that matched + 1 (0: none) */
    uint16_t port[2];      /* [0] initiator's port, [1] responder's port */
    uint8_t l4;            /* IP protocol (6, 17, ...) */
    uint8_t detector;      /* table index + 1 of the dissector that answered DETECTED (0: none) */
    uint8_t pkts;          /* payload packets inspected, both directions */
    uint8_t dir_pkts[2];   /* payload packets inspected per direction (saturating at 255) */
    uint8_t flags;         /* FT_DPI_S_* */
    uint8_t conf;          /* FT_CONF_* */
    uint8_t scratch[5];    /* private to the detecting dissector during its extra phase */
};

/* ft_dpi_state.flags */
#define FT_DPI_S_DONE 0x01     /* stop looking at payload */
#define FT_DPI_S_EXTRA 0x02    /* detected; the detector wants more packets to complete its fields */
#define FT_DPI_S_FINAL 0x04    /* rules applied, verdict fixed */
#define FT_DPI_S_GATHER 0x08   /* UDP: concatenate this direction's datagrams on NEED_MORE (QUIC Initials) */
#define FT_DPI_S_PAYLOAD 0x10  /* some payload was inspected */
#define FT_DPI_S_NEEDED 0x20   /* a dissector answered NEED_MORE on the last inspected packet */
#define FT_DPI_S_NOEXT 0x40    /* the fields pool was full when this flow needed a slot (fields lost) */

/* ---- helpers every dissector may use ----------------------------------------------------------------- */

/* Big-endian (network order) reads; callers check bounds first. */
static inline uint16_t ft_rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t ft_rd24(const uint8_t *p) { return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2]; }
static inline uint32_t ft_rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint32_t ft_rd32le(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static inline int ft_dpi_dir(int dir) { return dir & FT_DPI_DIR_MASK; }
static inline int ft_dpi_final(int dir) { return (dir & FT_DPI_FINAL) != 0; }

/* NEED_MORE unless the view is final, in which case EXCLUDED: the answer for "consistent but incomplete". */
static inline int ft_dpi_more(int dir) { return ft_dpi_final(dir) ? FT_DPI_EXCLUDED : FT_DPI_NEED_MORE; }

/* 1 when either port of the flow is `port`. */
static inline int ft_dpi_port(const struct ft_dpi_state *st, uint16_t port)
{
    return st->port[0] == port || st->port[1] == port;
}

/* 1 when p[0..n) equals the NUL-free literal s of length n. */
static inline int ft_dpi_eq(const uint8_t *p, uint32_t len, const char *s, uint32_t n)
{
    return len >= n && memcmp(p, s, n) == 0;
}

/* 1 when the n bytes at p match s ignoring ASCII case (s lower case). */
static inline int ft_dpi_ieq(const uint8_t *p, const char *s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (c != (uint8_t)s[i])
            return 0;
    }
    return 1;
}

/* Copy up to n bytes of src into a field of size cap as a NUL-terminated string: bytes outside printable
 * ASCII become '?', lower-cased when lower is set. Sets the field's bit in out->set, and in out->truncated
 * when src did not fit. */
static inline void ft_dpi_set(struct ft_dpi_out *out, uint16_t bit, char *dst, uint32_t cap, const uint8_t *src,
                              uint32_t n, int lower)
{
    uint32_t k = n < cap - 1 ? n : cap - 1;
    for (uint32_t i = 0; i < k; i++) {
        uint8_t c = src[i];
        if (c < 0x20 || c > 0x7e)
            c = '?';
        else if (lower && c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        dst[i] = (char)c;
    }
    dst[k] = 0;
    out->set |= bit;
    if (k < n)
        out->truncated |= bit;
    else
        out->truncated &= (uint16_t)~bit;
}

#define FT_DPI_SET(out, bit, field, src, n, lower) \
    ft_dpi_set((out), (bit), (out)->field, (uint32_t)sizeof((out)->field), (src), (n), (lower))

/* 1 when every byte of p[0..n) is printable ASCII (0x20..0x7e). */
static inline int ft_dpi_printable(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return 0;
    return 1;
}

/* Index of the first "\r\n" in p[0..len) at or after `from`, or -1. Bounded by len. */
static inline int32_t ft_dpi_crlf(const uint8_t *p, uint32_t len, uint32_t from)
{
    for (uint32_t i = from; i + 1 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n')
            return (int32_t)i;
    return -1;
}

/* The first line of a text protocol's payload p[0..len), len >= 1, looked for in the first 1024 bytes:
 * returns its length without the CRLF when it is there and printable; else -1 and *verdict: ft_dpi_more()
 * while what came is text without a line end yet, FT_DPI_EXCLUDED for binary bytes or a longer line. */
static inline int32_t ft_dpi_first_line(const uint8_t *p, uint32_t len, int dir, int *verdict)
{
    int32_t e = ft_dpi_crlf(p, len < 1024 ? len : 1024, 0);
    if (e < 0) {
        *verdict = (len >= 1024 || !ft_dpi_printable(p, p[len - 1] == '\r' ? len - 1 : len)) ? FT_DPI_EXCLUDED
                                                                                            : ft_dpi_more(dir);
        return -1;
    }
    if (!ft_dpi_printable(p, (uint32_t)e)) {
        *verdict = FT_DPI_EXCLUDED;
        return -1;
    }
    return e;
}

/* Reads a BER/DER length at p[*off] (short form or long form with 1-4 bytes). Returns 0 and advances *off
 * past it, -1 when truncated, -2 when malformed (indefinite form or more than 4 length bytes). */
static inline int ft_ber_len(const uint8_t *p, uint32_t len, uint32_t *off, uint32_t *val)
{
    if (*off >= len)
        return -1;
    uint8_t b = p[(*off)++];
    if (b < 0x80) {
        *val = b;
        return 0;
    }
    uint32_t n = b & 0x7f;
    if (n == 0 || n > 4)
        return -2;
    if (*off + n > len)
        return -1;
    uint32_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v = (v << 8) | p[(*off)++];
    *val = v;
    return 0;
}

#endif /* FT_DPI_TYPES_H */
