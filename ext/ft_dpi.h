/* ft_dpi.h: the DPI registry: dissector tables, per-flow candidate sets, the packet budget, TCP
 * reassembly of the first bytes, the pool of per-flow fields, and rule matching against compiled rule
 * tables. User space only (the flow table in ext/_flowtable.pyx calls it from its nogil loop).
 *
 * Life of a flow:
 *   ft_dpi_flow_init()   at creation: candidates = the dissectors of the flow's L4 table (port-gated ones
 *                        only when a port matches)
 *   ft_dpi_packet()      each packet with payload while not done: runs the candidates (then the payload-
 *                        pattern rules); a dissector answering DETECTED decides the payload verdict, the
 *                        others are dropped; NEED_MORE on TCP makes the registry keep the direction's bytes
 *                        in order (up to FT_DPI_REASM_BYTES) and show the dissectors the whole prefix next
 *                        time. Looking stops at the verdict (after the detector's extra phase), when every
 *                        candidate is excluded, or after `budget` payload packets.
 *   ft_dpi_finalize()    once: the rules decide the final label from the verdict, names, ALPN, addresses,
 *                        ports (see rules/README.md for the precedence)
 *   ft_dpi_export()      into a flow record (finalizes first when the flow ends before DPI is done)
 *   ft_dpi_flow_free()   when the flow leaves the table: returns its pool slots
 *
 * Every loop has a constant bound (tables, rules, patterns and buffers are bounded in size); every read of
 * payload is checked against its length by the dissector or the matcher.
 */
#ifndef FT_DPI_H
#define FT_DPI_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dpi/dpi_types.h"
#include "dpi/apps.h"
#include "dpi/tls.h"
#include "dpi/dtls.h"
#include "dpi/quic.h"
#include "dpi/http.h"
#include "dpi/http2.h"
#include "dpi/dns.h"
#include "dpi/ssh.h"
#include "dpi/roce.h"
#include "dpi/nvme_tcp.h"
#include "dpi/iscsi.h"
#include "dpi/onc_rpc.h"
#include "dpi/smb.h"
#include "dpi/netbios.h"
#include "dpi/postgresql.h"
#include "dpi/mysql.h"
#include "dpi/redis.h"
#include "dpi/kafka.h"
#include "dpi/mqtt.h"
#include "dpi/memcached.h"
#include "dpi/fluentd.h"
#include "dpi/statsd.h"
#include "dpi/bgp.h"
#include "dpi/ntp.h"
#include "dpi/dhcp.h"
#include "dpi/snmp.h"
#include "dpi/syslog.h"
#include "dpi/ldap.h"
#include "dpi/kerberos.h"
#include "dpi/stun.h"
#include "dpi/sip.h"
#include "dpi/radius.h"
#include "dpi/mail.h"
#include "dpi/ftp.h"
#include "dpi/tds.h"
#include "dpi/mongodb.h"
#include "dpi/rfb.h"
#include "dpi/rdp.h"
#include "dpi/socks.h"
#include "dpi/openvpn.h"
#include "dpi/wireguard.h"
#include "dpi/ike.h"
#include "dpi/zabbix.h"
#include "dpi/amqp.h"
#include "dpi/ceph.h"

typedef int (*ft_dpi_fn)(const uint8_t *, uint32_t, int, struct ft_dpi_state *, struct ft_dpi_out *);

/* One dissector entry of an L4 table. */
struct ft_dissector {
    const char *name;     /* module name (ext/dpi/<name>.h) */
    ft_dpi_fn fn;
    uint16_t app;         /* label when it detects (the dissector may refine it through st->app) */
    uint8_t gated;        /* 1: only a candidate when a port matches: weak signatures (text lines, one-
                             byte magic) that other traffic could imitate */
    uint16_t ports[6];    /* with gated: the flow must use one of these ports (0 ends the list) */
    uint8_t nfirst;       /* number of [lo, hi] ranges in first; 0: any first byte */
    uint8_t first[12];    /* first payload bytes the dissector can accept: a flow whose first inspected
                             byte is outside them is not shown to it (the same answer as EXCLUDED, found
                             with one table lookup instead of a call) */
};

#define FT_DPI_GATED 1
#define FT_PRINTABLE 2, {0x09, 0x0d, 0x20, 0x7e}
#define FT_ANYBYTE 0, {0}

/* Order matters: the first candidate to answer DETECTED wins, so strong signatures (TLS, HTTP) come first
 * and weaker ones after. At most 64 entries per table (the candidate set is a 64-bit mask). */
static const struct ft_dissector FT_DPI_TCP[] = {
    {"tls", ft_dpi_tls, FT_APP_TLS, 0, {0}, 1, {0x14, 0x17}},
    {"http", ft_dpi_http, FT_APP_HTTP, 0, {0}, 1, {'C', 'U'}},
    {"http2", ft_dpi_http2, FT_APP_HTTP2, 0, {0}, 1, {'P', 'P'}},
    {"ssh", ft_dpi_ssh, FT_APP_SSH, 0, {0}, 1, {'S', 'S'}},
    {"smb", ft_dpi_smb, FT_APP_SMB, 0, {0}, 1, {0x00, 0x00}},
    {"nvme_tcp", ft_dpi_nvme_tcp, FT_APP_NVME_TCP, 0, {0}, 1, {0x00, 0x09}},
    {"iscsi", ft_dpi_iscsi, FT_APP_ISCSI, 0, {0}, 1, {0x00, 0x7f}},
    {"onc_rpc", ft_dpi_onc_rpc, FT_APP_ONC_RPC, 0, {0}, 2, {0x00, 0x01, 0x80, 0x81}},
    {"postgresql", ft_dpi_postgresql, FT_APP_POSTGRESQL, 0, {0}, 2, {0x00, 0x00, 'Q', 'Q'}},
    {"mysql", ft_dpi_mysql, FT_APP_MYSQL, 0, {0}, FT_ANYBYTE},
    {"bgp", ft_dpi_bgp, FT_APP_BGP, 0, {0}, 1, {0xff, 0xff}},
    {"mqtt", ft_dpi_mqtt, FT_APP_MQTT, 0, {0}, 4, {0x10, 0x10, 0x20, 0x20, 0xc0, 0xc0, 0xd0, 0xd0}},
    {"kerberos", ft_dpi_kerberos, FT_APP_KERBEROS, FT_DPI_GATED, {88, 464}, 1, {0x00, 0x00}},
    {"ldap", ft_dpi_ldap, FT_APP_LDAP, 0, {0}, 1, {0x30, 0x30}},
    {"dns", ft_dpi_dns, FT_APP_DNS, FT_DPI_GATED, {53, 5353, 5355, 853}, FT_ANYBYTE},
    {"sip", ft_dpi_sip, FT_APP_SIP, 0, {0}, 1, {'A', 'Z'}},
    {"redis", ft_dpi_redis, FT_APP_REDIS, 0, {0}, FT_PRINTABLE},
    {"kafka", ft_dpi_kafka, FT_APP_KAFKA, 0, {0}, 1, {0x00, 0x00}},
    {"fluentd", ft_dpi_fluentd, FT_APP_FLUENTD, 0, {0}, 2, {0x92, 0x96, 0xdc, 0xdc}},
    {"tds", ft_dpi_tds, FT_APP_TDS, 0, {0}, 4, {0x01, 0x01, 0x03, 0x08, 0x0e, 0x0e, 0x10, 0x12}},
    {"mongodb", ft_dpi_mongodb, FT_APP_MONGODB, 0, {0}, FT_ANYBYTE},
    {"rfb", ft_dpi_rfb, FT_APP_VNC, 0, {0}, 1, {'R', 'R'}},
    {"rdp", ft_dpi_rdp, FT_APP_RDP, 0, {0}, 1, {0x03, 0x03}},
    {"amqp", ft_dpi_amqp, FT_APP_AMQP, 0, {0}, 1, {'A', 'A'}},
    {"ceph", ft_dpi_ceph, FT_APP_CEPH, 0, {0}, 1, {'c', 'c'}},
    {"zabbix", ft_dpi_zabbix, FT_APP_ZABBIX, 0, {0}, 1, {'Z', 'Z'}},
    {"mail", ft_dpi_mail, FT_APP_SMTP, 0, {0}, FT_PRINTABLE},
    {"ftp", ft_dpi_ftp, FT_APP_FTP, FT_DPI_GATED, {21, 2121}, FT_PRINTABLE},
    {"netbios", ft_dpi_netbios, FT_APP_NETBIOS, FT_DPI_GATED, {139}, 1, {0x81, 0x85}},
    {"memcached", ft_dpi_memcached, FT_APP_MEMCACHED, FT_DPI_GATED, {11211}, 2, {0x20, 0x7e, 0x80, 0x81}},
    {"syslog", ft_dpi_syslog, FT_APP_SYSLOG, 0, {0}, 2, {'0', '9', '<', '<'}},
    {"socks", ft_dpi_socks, FT_APP_SOCKS, 0, {0}, 1, {0x04, 0x05}},
    {"openvpn", ft_dpi_openvpn, FT_APP_OPENVPN, 0, {0}, 1, {0x00, 0x08}},
    {"stun", ft_dpi_stun, FT_APP_STUN, 0, {0}, 1, {0x00, 0x01}},
};

static const struct ft_dissector FT_DPI_UDP[] = {
    {"dns", ft_dpi_dns, FT_APP_DNS, 0, {0}, FT_ANYBYTE},
    {"quic", ft_dpi_quic, FT_APP_QUIC, 0, {0}, FT_ANYBYTE},
    {"roce", ft_dpi_roce, FT_APP_ROCEV2, FT_DPI_GATED, {4791}, FT_ANYBYTE},
    {"dtls", ft_dpi_dtls, FT_APP_DTLS, 0, {0}, 1, {20, 23}},
    {"http", ft_dpi_http, FT_APP_HTTP, 0, {0}, 1, {'C', 'U'}},
    {"sip", ft_dpi_sip, FT_APP_SIP, 0, {0}, 1, {'A', 'Z'}},
    {"stun", ft_dpi_stun, FT_APP_STUN, 0, {0}, 1, {0x00, 0x3f}},
    {"dhcp", ft_dpi_dhcp, FT_APP_DHCP, FT_DPI_GATED, {67, 68}, 1, {0x01, 0x02}},
    {"dhcpv6", ft_dpi_dhcpv6, FT_APP_DHCPV6, FT_DPI_GATED, {546, 547}, 1, {0x01, 0x24}},
    {"ntp", ft_dpi_ntp, FT_APP_NTP, FT_DPI_GATED, {123}, FT_ANYBYTE},
    {"snmp", ft_dpi_snmp, FT_APP_SNMP, FT_DPI_GATED, {161, 162, 10161, 10162}, 1, {0x30, 0x30}},
    {"kerberos", ft_dpi_kerberos, FT_APP_KERBEROS, FT_DPI_GATED, {88, 464}, 3, {0x00, 0x0f, 0x6a, 0x6f, 0x7e, 0x7e}},
    {"ldap", ft_dpi_ldap, FT_APP_LDAP, FT_DPI_GATED, {389}, 1, {0x30, 0x30}},
    {"netbios", ft_dpi_netbios, FT_APP_NETBIOS, FT_DPI_GATED, {137, 138}, FT_ANYBYTE},
    {"radius", ft_dpi_radius, FT_APP_RADIUS, FT_DPI_GATED, {1812, 1813, 1645, 1646, 3799}, 3, {1, 5, 11, 13, 40, 45}},
    {"onc_rpc", ft_dpi_onc_rpc, FT_APP_ONC_RPC, 0, {0}, FT_ANYBYTE},
    {"ike", ft_dpi_ike, FT_APP_IPSEC, FT_DPI_GATED, {500, 4500}, FT_ANYBYTE},
    {"wireguard", ft_dpi_wireguard, FT_APP_WIREGUARD, 0, {0}, 1, {0x01, 0x04}},
    {"openvpn", ft_dpi_openvpn, FT_APP_OPENVPN, 0, {0}, 2, {0x38, 0x47, 0x50, 0x57}},
    {"syslog", ft_dpi_syslog, FT_APP_SYSLOG, 0, {0}, 1, {'<', '<'}},
    {"statsd", ft_dpi_statsd, FT_APP_DOGSTATSD, FT_DPI_GATED, {8125}, FT_PRINTABLE},
    {"memcached", ft_dpi_memcached, FT_APP_MEMCACHED, FT_DPI_GATED, {11211}, FT_ANYBYTE},
    {"rdp", ft_dpi_rdp, FT_APP_RDP, FT_DPI_GATED, {3389}, 1, {0xff, 0xff}},
};

#define FT_DPI_NTCP ((int)(sizeof(FT_DPI_TCP) / sizeof(FT_DPI_TCP[0])))
#define FT_DPI_NUDP ((int)(sizeof(FT_DPI_UDP) / sizeof(FT_DPI_UDP[0])))
_Static_assert(sizeof(FT_DPI_TCP) / sizeof(FT_DPI_TCP[0]) <= 64, "at most 64 TCP dissectors");
_Static_assert(sizeof(FT_DPI_UDP) / sizeof(FT_DPI_UDP[0]) <= 64, "at most 64 UDP dissectors");
_Static_assert(FT_APP__COUNT <= 128, "rule 'detected' sets are 128-bit masks over built-in labels");

/* ---- compiled rules (built by dpi/rules.py through FlowTable.set_rules) ------------------------------ */

#define FT_RULE_PORT 0x01
#define FT_RULE_CIDR 0x02
#define FT_RULE_NAME 0x04
#define FT_RULE_ALPN 0x08
#define FT_RULE_DETECTED 0x10
#define FT_RULE_PAYLOAD 0x20

#define FT_RULE_SIDE_SERVER 0
#define FT_RULE_SIDE_EITHER 1

#define FT_PAT_MAX 64          /* bytes of one payload pattern (a Shift-And state is one 64-bit word) */
#define FT_PAT_DIR_CLIENT 0
#define FT_PAT_DIR_SERVER 1
#define FT_PAT_DIR_ANY 2

/* app_rule ids: 1..128 name the dissector that decided (ft_dpi_table_base), FT_DPI_RULE_BASE + i rule i */
#define FT_DPI_RULE_BASE 1024

struct ft_rule_port { uint16_t lo, hi; };
struct ft_rule_cidr { uint8_t ver, plen; uint8_t addr[16]; };
struct ft_rule_name {
    char text[FT_DPI_NAME_LEN];  /* lower case; '*' any run, '?' one character */
    uint8_t len;                 /* strlen(text) */
    uint8_t tail;                /* length of the literal end after the last wildcard (len: no wildcard) */
};
struct ft_rule_pat {
    uint8_t dir;           /* FT_PAT_DIR_* */
    uint8_t anywhere;      /* 0: at `offset` exactly; 1: starting anywhere in [offset, offset + within) */
    uint16_t len;          /* 1..FT_PAT_MAX */
    uint16_t offset;
    uint16_t within;
    uint8_t bytes[FT_PAT_MAX];
    uint8_t care[FT_PAT_MAX];  /* 1: compare; 0: wildcard byte (??) */
    uint64_t sa[256];      /* Shift-And: bit j of sa[c] set when pattern byte j accepts c */
};
struct ft_rule {
    int32_t rank;          /* precedence, lower wins (priority, user before shipped, specificity, order) */
    uint16_t app;          /* label id */
    uint8_t l4;            /* 0 any, else the IP protocol */
    uint8_t conf;          /* FT_CONF_* the rule's evidence gives */
    uint8_t side;          /* ports and CIDRs: FT_RULE_SIDE_* */
    uint8_t flags;         /* FT_RULE_* conditions present */
    uint16_t _pad;
    uint32_t port_i, port_n, cidr_i, cidr_n, name_i, name_n, alpn_i, alpn_n, pat_i, pat_n;
    uint64_t det[2];       /* with FT_RULE_DETECTED: verdict labels accepted (bit 0: no verdict) */
};

struct ft_rules {
    struct ft_rule *r;
    uint32_t n;
    struct ft_rule_port *ports;
    struct ft_rule_cidr *cidrs;
    struct ft_rule_name *names;   /* server_name patterns, then ALPN values (exact) */
    struct ft_rule_pat *pats;
    uint32_t *payload;            /* indices of rules with payload patterns, in rank order */
    uint32_t npayload;
    /* Port index, so that a flow is checked against the rules naming one of its ports and the rules without
     * ports, not against all of them: port_off[p] .. port_off[p + 1] index port_list, the rules (rank order)
     * whose port ranges contain p; `always` lists the rules without ports or with wide ranges. */
    uint32_t *port_off;           /* 65537 entries, or NULL when there are no rules */
    uint32_t *port_list;
    uint32_t *always;
    uint32_t nalways;
};

/* ---- pools and context -------------------------------------------------------------------------------- */

struct ft_dpi_ext {            /* fields of one flow while it lives */
    struct ft_dpi_out out;
    int32_t next_free;
};

struct ft_dpi_reasm {          /* in-order first bytes of a flow, per direction */
    uint32_t next_seq[2];
    uint16_t len[2];
    int32_t next_free;
    uint8_t buf[2][FT_DPI_REASM_BYTES];
};

struct ft_dpi_counters {
    uint64_t packets_inspected;   /* payload packets shown to dissectors */
    uint64_t flows_inspected;     /* flows with at least one inspected packet */
    uint64_t flows_detected;      /* a dissector recognised the payload */
    uint64_t flows_rule_payload;  /* a payload-pattern rule matched */
    uint64_t flows_budget_spent;  /* looking stopped at the budget without a verdict */
    uint64_t flows_all_excluded;  /* every candidate dissector excluded the flow */
    uint64_t reasm_started;       /* flows whose first bytes were reassembled */
    uint64_t reasm_gaps;          /* reassembly abandoned: a segment was missing */
    uint64_t reasm_full;          /* the reassembly buffer filled up */
    uint64_t reasm_pool_full;     /* no reassembly buffer free: the flow went on packet by packet */
    uint64_t fields_pool_full;    /* no field slot free: the flow's fields were lost (label kept) */
};

struct ft_dpi_ctx {
    uint32_t budget;              /* payload packets inspected per flow, both directions (1..255) */
    int32_t ext_cap, ext_hw, ext_free, ext_max;
    int32_t rs_cap, rs_hw, rs_free, rs_max;
    struct ft_dpi_ext *ext;
    struct ft_dpi_reasm *rs;
    struct ft_rules rules;
    struct ft_dpi_out scratch;    /* what a dissector writes before the registry knows it decided */
    struct ft_dpi_counters c;
};

/* Allocates a context (NULL when out of memory). ext_max bounds the field slots (flows with fields at
 * once), rs_max the reassembly buffers (flows being reassembled at once, 8 kB each). */
static inline struct ft_dpi_ctx *ft_dpi_ctx_new(uint32_t budget, int32_t ext_max, int32_t rs_max)
{
    struct ft_dpi_ctx *c = (struct ft_dpi_ctx *)calloc(1, sizeof(*c));
    if (!c)
        return 0;
    c->budget = budget < 1 ? 1 : budget > 255 ? 255 : budget;
    c->ext_max = ext_max;
    c->rs_max = rs_max;
    c->ext_free = -1;
    c->rs_free = -1;
    return c;
}

static inline void ft_dpi_rules_free(struct ft_rules *r)
{
    free(r->r);
    free(r->ports);
    free(r->cidrs);
    free(r->names);
    free(r->pats);
    free(r->payload);
    free(r->port_off);
    free(r->port_list);
    free(r->always);
    memset(r, 0, sizeof(*r));
}

static inline void ft_dpi_ctx_free(struct ft_dpi_ctx *c)
{
    if (!c)
        return;
    free(c->ext);
    free(c->rs);
    ft_dpi_rules_free(&c->rules);
    free(c);
}

/* A free slot index of a pool that grows by doubling up to max, or -1. */
#define FT_POOL_ALLOC(c, arr, cap, hw, fr, mx, type, out_idx)                                       \
    do {                                                                                            \
        (out_idx) = -1;                                                                             \
        if ((c)->fr >= 0) {                                                                         \
            (out_idx) = (c)->fr;                                                                    \
            (c)->fr = (c)->arr[(out_idx)].next_free;                                                \
            break;                                                                                  \
        }                                                                                           \
        if ((c)->hw == (c)->cap) {                                                                  \
            int32_t n_ = (c)->cap ? (c)->cap * 2 : 256;                                             \
            if (n_ > (c)->mx)                                                                       \
                n_ = (c)->mx;                                                                       \
            if (n_ <= (c)->cap)                                                                     \
                break;                                                                              \
            type *g_ = (type *)realloc((c)->arr, (size_t)n_ * sizeof(type));                        \
            if (!g_)                                                                                \
                break;                                                                              \
            (c)->arr = g_;                                                                          \
            (c)->cap = n_;                                                                          \
        }                                                                                           \
        (out_idx) = (c)->hw++;                                                                      \
    } while (0)

static inline int32_t ft_dpi_ext_alloc(struct ft_dpi_ctx *c)
{
    int32_t i;
    FT_POOL_ALLOC(c, ext, ext_cap, ext_hw, ext_free, ext_max, struct ft_dpi_ext, i);
    if (i >= 0)
        memset(&c->ext[i].out, 0, sizeof(struct ft_dpi_out));
    return i;
}

static inline int32_t ft_dpi_rs_alloc(struct ft_dpi_ctx *c)
{
    int32_t i;
    FT_POOL_ALLOC(c, rs, rs_cap, rs_hw, rs_free, rs_max, struct ft_dpi_reasm, i);
    if (i >= 0) {
        c->rs[i].len[0] = c->rs[i].len[1] = 0;
        c->rs[i].next_seq[0] = c->rs[i].next_seq[1] = 0;
    }
    return i;
}

static inline void ft_dpi_rs_release(struct ft_dpi_ctx *c, struct ft_dpi_state *st)
{
    if (st->reasm >= 0) {
        c->rs[st->reasm].next_free = c->rs_free;
        c->rs_free = st->reasm;
        st->reasm = -1;
    }
}

/* Returns the flow's slots to the pools (the flow leaves the table). */
static inline void ft_dpi_flow_free(struct ft_dpi_ctx *c, struct ft_dpi_state *st)
{
    ft_dpi_rs_release(c, st);
    if (st->ext >= 0) {
        c->ext[st->ext].next_free = c->ext_free;
        c->ext_free = st->ext;
        st->ext = -1;
    }
}

static inline const struct ft_dissector *ft_dpi_table(uint8_t l4, int *n)
{
    if (l4 == 6) {
        *n = FT_DPI_NTCP;
        return FT_DPI_TCP;
    }
    if (l4 == 17) {
        *n = FT_DPI_NUDP;
        return FT_DPI_UDP;
    }
    *n = 0;
    return 0;
}

/* Per table and first payload byte, the dissectors that can accept it (bit i = entry i); built once from
 * the tables' `first` ranges. */
static uint64_t ft_dpi_first_mask[2][256];
static int ft_dpi_first_ready;

static inline void ft_dpi_first_init(void)
{
    for (int t = 0; t < 2; t++) {
        const struct ft_dissector *tab = t ? FT_DPI_UDP : FT_DPI_TCP;
        int n = t ? FT_DPI_NUDP : FT_DPI_NTCP;
        for (int b = 0; b < 256; b++) {
            uint64_t m = 0;
            for (int i = 0; i < n; i++) {
                int ok = tab[i].nfirst == 0;
                for (int k = 0; k < tab[i].nfirst && k < 6; k++)
                    ok |= b >= tab[i].first[2 * k] && b <= tab[i].first[2 * k + 1];
                if (ok)
                    m |= 1ull << i;
            }
            ft_dpi_first_mask[t][b] = m;
        }
    }
    ft_dpi_first_ready = 1;
}

/* app_rule ids of dissectors: 1 + index in the TCP table, 65 + index in the UDP table. */
static inline int ft_dpi_table_base(uint8_t l4) { return l4 == 17 ? 64 : 0; }

/* Sets up the state of a new flow. cport/sport: initiator's and responder's ports. */
static inline void ft_dpi_flow_init(struct ft_dpi_state *st, uint8_t l4, uint16_t cport, uint16_t sport)
{
    int n, i, k;
    const struct ft_dissector *t = ft_dpi_table(l4, &n);
    memset(st, 0, sizeof(*st));
    st->ext = -1;
    st->reasm = -1;
    st->l4 = l4;
    st->port[0] = cport;
    st->port[1] = sport;
    for (i = 0; i < n; i++) {
        if (t[i].gated) {
            int hit = 0;
            for (k = 0; k < 6 && t[i].ports[k]; k++)
                hit |= cport == t[i].ports[k] || sport == t[i].ports[k];
            if (!hit)
                continue;
        }
        st->cand |= 1ull << i;
    }
    if (!n)
        st->flags = FT_DPI_S_DONE; /* no payload dissectors for this protocol: rules only */
}

/* Copies the fields set in src into dst. Values from the server side (the chosen ALPN, the negotiated
 * version) are not overwritten by the client's. */
static inline void ft_dpi_merge(struct ft_dpi_out *dst, const struct ft_dpi_out *src)
{
    uint16_t s = src->set;
#define FT_MERGE(bit, field)                                                    \
    if (s & (bit)) {                                                            \
        memcpy(dst->field, src->field, sizeof(dst->field));                     \
        dst->truncated = (uint16_t)((dst->truncated & ~(bit)) | (src->truncated & (bit))); \
        dst->set |= (bit);                                                      \
    }
    FT_MERGE(FT_O_SERVER_NAME, server_name)
    if ((s & FT_O_ALPN) && ((s & FT_O_ALPN_SERVER) || !(dst->set & FT_O_ALPN_SERVER))) {
        FT_MERGE(FT_O_ALPN, alpn)
        dst->set |= s & FT_O_ALPN_SERVER;
    }
    if ((s & FT_O_VERSION) && ((s & FT_O_VERSION_SERVER) || !(dst->set & FT_O_VERSION_SERVER))) {
        FT_MERGE(FT_O_VERSION, version)
        dst->set |= s & FT_O_VERSION_SERVER;
    }
    FT_MERGE(FT_O_METHOD, http_method)
    FT_MERGE(FT_O_PATH, http_path)
    FT_MERGE(FT_O_UA, user_agent)
#undef FT_MERGE
    if (s & FT_O_DNS_QTYPE) {
        dst->dns_qtype = src->dns_qtype;
        dst->set |= FT_O_DNS_QTYPE;
    }
    if (s & FT_O_DNS_RCODE) {
        dst->dns_rcode = src->dns_rcode;
        dst->set |= FT_O_DNS_RCODE;
    }
}

/* Moves what a dissector wrote into the scratch record into the flow's field slot, and clears the
 * scratch. Slots are taken on first use only, so flows that never yield a field cost nothing. */
static inline void ft_dpi_commit(struct ft_dpi_ctx *c, struct ft_dpi_state *st)
{
    if (!c->scratch.set)
        return;
    if (st->ext < 0 && !(st->flags & FT_DPI_S_NOEXT)) {
        st->ext = ft_dpi_ext_alloc(c);
        if (st->ext < 0) {
            st->flags |= FT_DPI_S_NOEXT;
            c->c.fields_pool_full++;
        }
    }
    if (st->ext >= 0)
        ft_dpi_merge(&c->ext[st->ext].out, &c->scratch);
    memset(&c->scratch, 0, sizeof(c->scratch));
}

static inline void ft_dpi_scratch_clear(struct ft_dpi_ctx *c)
{
    if (c->scratch.set)
        memset(&c->scratch, 0, sizeof(c->scratch));
}

/* ---- payload patterns ---------------------------------------------------------------------------------- */

/* 1 when pattern t matches view p[0..len) of direction dir. Fixed-offset patterns compare len bytes;
 * anywhere patterns run Shift-And over at most `within` bytes: one table lookup, shift and AND per byte,
 * so the cost is linear in the bytes scanned whatever the pattern. */
static inline int ft_pat_match(const struct ft_rule_pat *t, const uint8_t *p, uint32_t len, int dir)
{
    if (t->dir != FT_PAT_DIR_ANY && t->dir != dir)
        return 0;
    if (!t->anywhere) {
        if ((uint32_t)t->offset + t->len > len)
            return 0;
        const uint8_t *q = p + t->offset;
        for (uint32_t j = 0; j < t->len; j++)
            if (t->care[j] && q[j] != t->bytes[j])
                return 0;
        return 1;
    }
    uint32_t start = t->offset, end = (uint32_t)t->offset + t->within + t->len - 1;
    if (end > len)
        end = len;
    uint64_t state = 0, hit = 1ull << (t->len - 1);
    for (uint32_t i = start; i < end; i++) {
        state = ((state << 1) | 1) & t->sa[p[i]];
        if (state & hit)
            return 1;
    }
    return 0;
}

/* ---- rule conditions ---------------------------------------------------------------------------------- */

/* Glob match of a lower-case name against a pattern with '*' (any run, dots included) and '?' (one
 * character). Greedy with one backtrack point: at most name_len * pattern_len steps, both bounded by
 * FT_DPI_NAME_LEN. */
static inline int ft_glob(const char *pat, const char *s)
{
    const char *star = 0, *mark = 0;
    for (int steps = 0; steps < FT_DPI_NAME_LEN * FT_DPI_NAME_LEN + FT_DPI_NAME_LEN; steps++) {
        if (*s) {
            if (*pat == '?' || (*pat && *pat == *s)) {
                pat++;
                s++;
                continue;
            }
            if (*pat == '*') {
                star = pat++;
                mark = s;
                continue;
            }
            if (star) {
                pat = star + 1;
                s = ++mark;
                continue;
            }
            return 0;
        }
        while (*pat == '*')
            pat++;
        return *pat == 0;
    }
    return 0;
}

static inline int ft_cidr_hit(const struct ft_rule_cidr *c, int ver, const uint8_t *addr)
{
    if (c->ver != ver)
        return 0;
    uint32_t full = c->plen / 8, rest = c->plen % 8;
    if (memcmp(c->addr, addr, full) != 0)
        return 0;
    if (rest) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((c->addr[full] & m) != (addr[full] & m))
            return 0;
    }
    return 1;
}

/* Flow facts the rules look at. Addresses in network order (IPv4 in the first 4 bytes). */
struct ft_dpi_flowinfo {
    int ip_version;
    const uint8_t *caddr, *saddr;  /* initiator, responder */
    int initiator_known;           /* 0: a TCP flow whose handshake was not seen (capture started mid-
                                      connection): "responder" is only the flow table's guess, so rules
                                      for the server side look at both ends */
};

static inline int ft_ports_hit(const struct ft_rules *R, const struct ft_rule *r, uint16_t port)
{
    for (uint32_t k = 0; k < r->port_n; k++) {
        const struct ft_rule_port *pr = &R->ports[r->port_i + k];
        if (port >= pr->lo && port <= pr->hi)
            return 1;
    }
    return 0;
}

/* 1 when every condition of rule r other than its payload patterns holds for the flow. verdict: the
 * dissector's label (0: none); payload_seen: some payload was inspected. */
static inline int ft_rule_holds(const struct ft_rules *R, const struct ft_rule *r, const struct ft_dpi_state *st,
                                const struct ft_dpi_flowinfo *fi, const struct ft_dpi_out *o, uint16_t verdict)
{
    if (r->l4 && r->l4 != st->l4)
        return 0;
    if (r->flags & FT_RULE_DETECTED) {
        if (verdict >= 128 || !((r->det[verdict >> 6] >> (verdict & 63)) & 1))
            return 0;
    } else if (verdict && !(r->flags & (FT_RULE_CIDR | FT_RULE_NAME | FT_RULE_ALPN | FT_RULE_PAYLOAD))) {
        return 0; /* port evidence never overrides a payload verdict unless the rule names the verdict */
    }
    int either = r->side == FT_RULE_SIDE_EITHER || !fi->initiator_known;
    if (r->flags & FT_RULE_PORT) {
        int hit = ft_ports_hit(R, r, st->port[1]);
        if (!hit && either)
            hit = ft_ports_hit(R, r, st->port[0]);
        if (!hit)
            return 0;
    }
    if (r->flags & FT_RULE_CIDR) {
        int hit = 0;
        for (uint32_t k = 0; k < r->cidr_n && !hit; k++) {
            const struct ft_rule_cidr *c = &R->cidrs[r->cidr_i + k];
            hit = ft_cidr_hit(c, fi->ip_version, fi->saddr) || (either && ft_cidr_hit(c, fi->ip_version, fi->caddr));
        }
        if (!hit)
            return 0;
    }
    if (r->flags & FT_RULE_NAME) {
        if (!o || !(o->set & FT_O_SERVER_NAME))
            return 0;
        size_t n = strnlen(o->server_name, FT_DPI_NAME_LEN);
        int hit = 0;
        for (uint32_t k = 0; k < r->name_n && !hit; k++) {
            const struct ft_rule_name *pn = &R->names[r->name_i + k];
            /* the literal end of the pattern must end the name: one memcmp rejects almost every pattern
             * before the glob runs (and decides the patterns without wildcards) */
            if (pn->tail > n || memcmp(o->server_name + n - pn->tail, pn->text + pn->len - pn->tail, pn->tail) != 0)
                continue;
            if (pn->tail == pn->len)
                hit = n == pn->len;
            else
                hit = ft_glob(pn->text, o->server_name);
        }
        if (!hit)
            return 0;
    }
    if (r->flags & FT_RULE_ALPN) {
        if (!o || !(o->set & FT_O_ALPN))
            return 0;
        int hit = 0;
        for (uint32_t k = 0; k < r->alpn_n && !hit; k++)
            hit = strcmp(R->names[r->alpn_i + k].text, o->alpn) == 0;
        if (!hit)
            return 0;
    }
    return 1;
}

/* Runs the payload-pattern rules on one view; records the best-ranked match in st->prule. */
static inline void ft_dpi_payload_rules(struct ft_dpi_ctx *c, struct ft_dpi_state *st,
                                        const struct ft_dpi_flowinfo *fi, const uint8_t *p, uint32_t len,
                                        int dir)
{
    const struct ft_rules *R = &c->rules;
    const struct ft_dpi_out *o = st->ext >= 0 ? &c->ext[st->ext].out : 0;
    uint16_t verdict = st->detector ? st->app : 0;
    for (uint32_t k = 0; k < R->npayload; k++) {
        uint32_t i = R->payload[k];
        const struct ft_rule *r = &R->r[i];
        if (st->prule && R->r[st->prule - 1].rank <= r->rank)
            return; /* rank order: nothing better left */
        if (!ft_rule_holds(R, r, st, fi, o, verdict))
            continue;
        int all = 1;
        for (uint32_t j = 0; j < r->pat_n && all; j++)
            all = ft_pat_match(&R->pats[r->pat_i + j], p, len, dir);
        if (all) {
            st->prule = (uint16_t)(i + 1);
            return;
        }
    }
}

/* ---- verdict ------------------------------------------------------------------------------------------ */

/* Decides the flow's final label once: the best-ranked rule that holds (a payload-pattern rule only when
 * it matched a packet), else the dissector's verdict. Frees the reassembly buffer. */
static inline void ft_dpi_finalize(struct ft_dpi_ctx *c, struct ft_dpi_state *st, const struct ft_dpi_flowinfo *fi)
{
    if (st->flags & FT_DPI_S_FINAL)
        return;
    st->flags |= FT_DPI_S_FINAL | FT_DPI_S_DONE;
    ft_dpi_rs_release(c, st);
    const struct ft_rules *R = &c->rules;
    const struct ft_dpi_out *o = st->ext >= 0 ? &c->ext[st->ext].out : 0;
    uint16_t verdict = st->detector ? st->app : 0;
    int32_t best = st->prule ? (int32_t)st->prule - 1 : -1;
    if (R->n && R->port_off) {
        /* merge three rank-ordered lists (rules without ports, rules of each port); rank = index, so the
         * first rule that holds is the best one */
        const uint32_t *L[3] = {R->always, R->port_list + R->port_off[st->port[0]],
                                R->port_list + R->port_off[st->port[1]]};
        uint32_t N[3] = {R->nalways, R->port_off[st->port[0] + 1] - R->port_off[st->port[0]],
                         st->port[1] == st->port[0] ? 0 : R->port_off[st->port[1] + 1] - R->port_off[st->port[1]]};
        uint32_t at[3] = {0, 0, 0};
        uint32_t total = N[0] + N[1] + N[2];
        for (uint32_t step = 0; step < total; step++) {
            int k = -1;
            for (int j = 0; j < 3; j++)
                if (at[j] < N[j] && (k < 0 || L[j][at[j]] < L[k][at[k]]))
                    k = j;
            uint32_t i = L[k][at[k]++];
            if (best >= 0 && (int32_t)i >= best)
                break;
            if (ft_rule_holds(R, &R->r[i], st, fi, o, verdict)) {
                best = (int32_t)i;
                break;
            }
        }
    }
    if (best >= 0) {
        const struct ft_rule *r = &R->r[best];
        st->app = r->app;
        st->rule = (uint16_t)(FT_DPI_RULE_BASE + best);
        st->conf = r->conf;
        if (r->conf == FT_CONF_PORT && !verdict && (st->flags & FT_DPI_S_PAYLOAD))
            st->conf = FT_CONF_GUESS;
    } else if (verdict) {
        st->conf = FT_CONF_PAYLOAD; /* st->rule names the dissector since detection */
    } else {
        st->app = 0;
        st->conf = FT_CONF_NONE;
    }
}

/* ---- per packet --------------------------------------------------------------------------------------- */

/* Inspects one payload packet of a flow whose DPI is not done (the caller checks FT_DPI_S_DONE first).
 * p/len: the captured L4 payload; cut: the capture holds fewer bytes than the packet had (snap length);
 * dir: 0 from the initiator, 1 from the responder; tcp_seq: the segment's sequence number (TCP only). */
static inline void ft_dpi_packet(struct ft_dpi_ctx *c, struct ft_dpi_state *st, const struct ft_dpi_flowinfo *fi,
                                 const uint8_t *p, uint32_t len, int cut, int dir, uint32_t tcp_seq)
{
    int n;
    const struct ft_dissector *t = ft_dpi_table(st->l4, &n);
    const uint8_t *view = p;
    uint32_t vlen = len;
    struct ft_dpi_reasm *rs = st->reasm >= 0 ? &c->rs[st->reasm] : 0;
    int tcp = st->l4 == 6;
    int buffered = 0;

    if (len == 0 || !n)
        return;
    if (rs && rs->len[dir]) {
        uint32_t room = FT_DPI_REASM_BYTES - rs->len[dir];
        uint32_t skip = 0;
        if (tcp && tcp_seq != rs->next_seq[dir]) {
            uint32_t behind = rs->next_seq[dir] - tcp_seq; /* modulo 2^32 */
            if (behind < (1u << 30) && behind >= len)
                return; /* a retransmission of bytes already kept: nothing new */
            if (behind < (1u << 30)) {
                skip = behind; /* overlaps: keep the new tail */
            } else {
                c->c.reasm_gaps++;
                rs->len[dir] = 0; /* a segment is missing: go on with this packet alone */
                rs = 0;
            }
        }
        if (rs) {
            uint32_t add = len - skip;
            if (add > room) {
                add = room;
                cut = 1;
                c->c.reasm_full++;
            }
            memcpy(rs->buf[dir] + rs->len[dir], p + skip, add);
            rs->len[dir] = (uint16_t)(rs->len[dir] + add);
            rs->next_seq[dir] = tcp_seq + skip + (len - skip);
            view = rs->buf[dir];
            vlen = rs->len[dir];
            buffered = 1;
        }
    }
    if (!(st->flags & FT_DPI_S_PAYLOAD)) {
        st->flags |= FT_DPI_S_PAYLOAD;
        c->c.flows_inspected++;
    }
    st->pkts++;
    if (st->dir_pkts[dir] < 255)
        st->dir_pkts[dir]++;
    c->c.packets_inspected++;
    int last = st->pkts >= c->budget;
    /* a TCP view cut by the snap length can never grow (the next segment leaves a gap); a cut datagram is
     * just one datagram: NEED_MORE then means "show me the next one" */
    /* the view cannot grow when: TCP bytes were cut by the snap length (the next segment leaves a gap), or
     * the reassembly buffer is full; a cut datagram is just one datagram (NEED_MORE: show me the next) */
    int full = buffered && rs && rs->len[dir] >= FT_DPI_REASM_BYTES;
    int final = (cut && tcp) || full || last;
    int arg = dir | (final ? FT_DPI_FINAL : 0);
    int need = 0;
    int was_waiting = (st->flags & FT_DPI_S_NEEDED) != 0; /* a candidate waited for more after the last look */

    if (st->detector) { /* extra phase: only the detector looks, to complete its fields */
        const struct ft_dissector *d = &t[st->detector - 1];
        int rv = d->fn(view, vlen, arg, st, &c->scratch);
        ft_dpi_commit(c, st);
        need = (rv == FT_DPI_NEED_MORE || (st->flags & FT_DPI_S_GATHER)) && (st->flags & FT_DPI_S_EXTRA);
    } else {
        if (!ft_dpi_first_ready)
            ft_dpi_first_init();
        st->cand &= ft_dpi_first_mask[st->l4 == 17][view[0]];
        uint64_t m = st->cand;
        for (int k = 0; k < 64 && m; k++) {
            int i = __builtin_ctzll(m);
            m &= m - 1;
            if (i >= n)
                break;
            uint16_t before = st->app;
            int rv = t[i].fn(view, vlen, arg, st, &c->scratch);
            if (rv == FT_DPI_DETECTED) {
                st->detector = (uint8_t)(i + 1);
                if (!st->app || st->app == before)
                    st->app = t[i].app;
                st->rule = (uint16_t)(ft_dpi_table_base(st->l4) + i + 1);
                ft_dpi_commit(c, st);
                c->c.flows_detected++;
                if ((st->flags & (FT_DPI_S_EXTRA | FT_DPI_S_GATHER)) == (FT_DPI_S_EXTRA | FT_DPI_S_GATHER))
                    need = 1; /* keep gathering this direction (a QUIC ClientHello over two Initials) */
                else
                    ft_dpi_rs_release(c, st); /* what the extra phase wants starts afresh */
                break;
            }
            ft_dpi_scratch_clear(c);
            st->app = before;
            if (rv == FT_DPI_EXCLUDED || final)
                st->cand &= ~(1ull << i);
            else
                need = 1;
        }
    }
    if (c->rules.npayload && !st->prule) {
        ft_dpi_payload_rules(c, st, fi, view, vlen, dir);
        if (st->prule && !st->detector)
            c->c.flows_rule_payload++;
    }
    int detected_done = st->detector && !(st->flags & FT_DPI_S_EXTRA);
    int nothing_left = !st->detector && st->cand == 0;
    if (detected_done || nothing_left || (st->prule && !st->detector) || last) {
        if (!st->detector && !st->prule) {
            if (last && (was_waiting || need || !nothing_left))
                c->c.flows_budget_spent++;
            else if (nothing_left)
                c->c.flows_all_excluded++;
        }
        ft_dpi_finalize(c, st, fi);
        return;
    }
    st->flags = (uint8_t)((st->flags & ~FT_DPI_S_NEEDED) | (need ? FT_DPI_S_NEEDED : 0));
    /* keep this direction's bytes for the next look when a dissector is waiting for the rest */
    if (need && !buffered && (tcp || (st->flags & FT_DPI_S_GATHER))) {
        if (st->reasm < 0) {
            st->reasm = ft_dpi_rs_alloc(c);
            if (st->reasm < 0) {
                c->c.reasm_pool_full++;
                return;
            }
            c->c.reasm_started++;
        }
        rs = &c->rs[st->reasm];
        uint32_t k = len < FT_DPI_REASM_BYTES ? len : FT_DPI_REASM_BYTES;
        memcpy(rs->buf[dir], p, k);
        rs->len[dir] = (uint16_t)k;
        rs->next_seq[dir] = tcp_seq + len;
    }
}

/* Fills a flow record's DPI part: finalizes the verdict when the flow leaves before DPI is done. */
static inline void ft_dpi_export(struct ft_dpi_ctx *c, struct ft_dpi_state *st, const struct ft_dpi_flowinfo *fi,
                                 struct ft_dpi_out *rec)
{
    ft_dpi_finalize(c, st, fi);
    if (st->ext >= 0)
        memcpy(rec, &c->ext[st->ext].out, sizeof(*rec));
    else
        memset(rec, 0, sizeof(*rec));
    rec->app = st->app;
    rec->base = 0;
    if (st->detector) {
        int n;
        rec->base = ft_dpi_table(st->l4, &n)[st->detector - 1].app;
    }
    rec->rule = st->rule;
    rec->conf = st->conf;
    rec->inspected = st->pkts;
}

#endif /* FT_DPI_H */
