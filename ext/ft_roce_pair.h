/* ft_roce_pair.h: the side tables that pair the two directions of a RoCE connection (user space).
 *
 * A RoCE packet names only the QP it is addressed to, so the flow table keys it on (addresses, that QP):
 * a "directional key". Once the two QPs of a connection are known to belong together, the packets
 * addressed to one of them (the alias) are metered in the flow of the other (the canonical key):
 *
 * - struct ft_roce_alias_tab: directional key -> canonical key's QPN. Open addressing over
 *   FT_ROCE_ALIAS_SLOTS slots, at most FT_ROCE_ALIAS_PROBE probes per lookup or insert; an insert that finds
 *   no room within the bound fails and the caller counts it (the two directions then stay two flows).
 * - struct ft_roce_cand_tab: flows waiting for a partner, findable from the two addresses (a response
 *   names the requester's QP, not the responder's). Entries carry the flow id, so a stale entry (flow
 *   gone, slot reused) is recognised and dropped instead of being removed eagerly.
 * - struct ft_roce_cmreq_tab: RDMA CM REQs waiting for their REP (FT_ROCE_CMREQ_SLOTS, oldest overwritten
 *   and counted).
 *
 * Memory, allocated once per flow table: 4096 * 64 + 4096 * 16 + 256 * 56 bytes = 334 KiB. Every loop is
 * bounded by a probe limit or a table size; nothing allocates after creation.
 */
#ifndef FT_ROCE_PAIR_H
#define FT_ROCE_PAIR_H
#include <stdint.h>
#include <string.h>
#include "ft_flow.h"
#include "ft_util.h"

#define FT_ROCE_ALIAS_SLOTS 4096
#define FT_ROCE_ALIAS_PROBE 16
#define FT_ROCE_CAND_SLOTS 4096
#define FT_ROCE_CAND_PROBE 64
#define FT_ROCE_CMREQ_SLOTS 256

/* ft_roce_alias.flags */
#define FT_RA_CM 0x01       /* proven by RDMA CM (else inferred from PSNs) */
#define FT_RA_ACTIVE_A 0x02 /* CM: the REQ sender (active side, the record's src) is key endpoint A */
#define FT_RA_FLIP 0x04     /* both QPs on one address: packets of this key come from the other endpoint
                               than the canonical key's packets, which the addresses cannot say */

struct ft_roce_alias {
    struct ft_key key;    /* directional key */
    uint32_t canon_qpn;   /* ft_key.qpn and .vlan_id of the flow its packets go to (its own for the */
    uint16_t canon_vlan;  /*   canonical entry; the VLAN differs when the directions are tagged differently) */
    uint8_t used;         /* 0 empty, 1 used, 2 deleted (probes go on past it) */
    uint8_t flags;        /* FT_RA_* */
    uint32_t partner_qpn; /* the other QP of the pair, tagged */
    uint16_t partner_vlan;
    uint8_t cm_transport; /* CM REQ transport service type */
    uint8_t _pad;
};

_Static_assert(sizeof(struct ft_roce_alias) == 64, "one cache line per alias entry");

struct ft_roce_alias_tab {
    struct ft_roce_alias slot[FT_ROCE_ALIAS_SLOTS];
    uint32_t live;        /* used entries: lookups are skipped while 0 */
};

/* Returns the slot holding key (hash h = ft_hash_words(key)), or -1. */
static inline int ft_roce_alias_find(const struct ft_roce_alias_tab *t, const struct ft_key *key, uint32_t h)
{
    int k;
    for (k = 0; k < FT_ROCE_ALIAS_PROBE; k++) {
        const struct ft_roce_alias *a = &t->slot[(h + k) & (FT_ROCE_ALIAS_SLOTS - 1)];
        if (a->used == 0)
            return -1;
        if (a->used == 1 && memcmp(&a->key, key, sizeof(*key)) == 0)
            return (int)((h + k) & (FT_ROCE_ALIAS_SLOTS - 1));
    }
    return -1;
}

/* Inserts or overwrites key's entry. Returns its slot, or -1 when the probe bound found no room. */
static inline int ft_roce_alias_put(struct ft_roce_alias_tab *t, const struct ft_key *key, uint32_t h,
                                    uint32_t canon_qpn, uint16_t canon_vlan, uint32_t partner_qpn,
                                    uint16_t partner_vlan, uint8_t flags, uint8_t cm_transport)
{
    int k, s = ft_roce_alias_find(t, key, h);
    struct ft_roce_alias *a;
    if (s < 0) {
        for (k = 0; k < FT_ROCE_ALIAS_PROBE; k++) {
            int i = (int)((h + k) & (FT_ROCE_ALIAS_SLOTS - 1));
            if (t->slot[i].used != 1) {
                s = i;
                break;
            }
        }
        if (s < 0)
            return -1;
        t->live++;
    }
    a = &t->slot[s];
    a->key = *key;
    a->canon_qpn = canon_qpn;
    a->canon_vlan = canon_vlan;
    a->partner_qpn = partner_qpn;
    a->partner_vlan = partner_vlan;
    a->used = 1;
    a->flags = flags;
    a->cm_transport = cm_transport;
    return s;
}

/* Deletes key's entry if present. Returns 1 when one was deleted. */
static inline int ft_roce_alias_del(struct ft_roce_alias_tab *t, const struct ft_key *key, uint32_t h)
{
    int s = ft_roce_alias_find(t, key, h);
    if (s < 0)
        return 0;
    t->slot[s].used = 2;
    t->live--;
    return 1;
}

/* ---- flows waiting for a partner ---- */

/* What finds a waiting flow: the requester's and the responder's addresses, and the rest of the key that
 * both directions share. Not the VLAN: at a mirror port one direction may arrive tagged and the other not
 * (or with another tag); a flow on the same VLAN is still preferred (ft_roce_cand_find). */
struct ft_roce_pairkey {
    uint8_t requester[16];
    uint8_t responder[16];
    uint32_t tunnel_id;
    uint8_t ip_version;
    uint8_t _pad[3];
};

struct ft_roce_cand {
    uint64_t flow_id;  /* 0: empty */
    uint32_t h;        /* ft_hash_words of the flow's ft_roce_pairkey */
    int32_t idx;       /* flow slot */
};

struct ft_roce_cand_tab {
    struct ft_roce_cand slot[FT_ROCE_CAND_SLOTS];
};

/* Returns the hash that files a waiting flow: requester and responder addresses (network order), tunnel
 * and IP version of key. */
static inline uint32_t ft_roce_pairkey_hash(const uint8_t *requester, const uint8_t *responder,
                                            const struct ft_key *key)
{
    struct ft_roce_pairkey pk;
    memset(&pk, 0, sizeof(pk));
    memcpy(pk.requester, requester, 16);
    memcpy(pk.responder, responder, 16);
    pk.tunnel_id = key->tunnel_id;
    pk.ip_version = key->ip_version;
    return ft_hash_words(&pk, sizeof(pk));
}

/* Returns 1 when entry c still names a live, unpaired flow (its slot was not freed or reused). */
static inline int ft_roce_cand_live(const struct ft_roce_cand *c, const struct ft_flow *flows, int32_t nslots)
{
    return c->flow_id != 0 && c->idx >= 0 && c->idx < nslots && flows[c->idx].flow_id == c->flow_id &&
           flows[c->idx].roce != NULL && flows[c->idx].roce->pairing == FT_ROCE_PAIR_NONE;
}

/* Adds flow idx (flow_id) as waiting under hash h, reusing empty and stale slots. Returns 0, or -1 when the
 * probe bound found no room (the caller counts it). */
static inline int ft_roce_cand_put(struct ft_roce_cand_tab *t, const struct ft_flow *flows, int32_t nslots,
                                   uint32_t h, int32_t idx, uint64_t flow_id)
{
    int k;
    for (k = 0; k < FT_ROCE_CAND_PROBE; k++) {
        struct ft_roce_cand *c = &t->slot[(h + k) & (FT_ROCE_CAND_SLOTS - 1)];
        if (!ft_roce_cand_live(c, flows, nslots) || c->flow_id == flow_id) {
            c->flow_id = flow_id;
            c->h = h;
            c->idx = idx;
            return 0;
        }
    }
    return -1;
}

/* Looks for the requester-direction flow that response packet p (in the flow with key `key`, p's source is
 * key endpoint A when a_is_src) answers: a waiting flow on the same addresses and tunnel, keyed on a QP of
 * p's sender to which requests were addressed, whose requests used the PSN p names (ft_roce_psn_matches).
 * Flows on p's VLAN come first; flows on another VLAN count only when none on p's fits. Returns the slot of
 * the one flow that fits, -1 when none, -2 when several do (no pairing then: the next response tries
 * again). */
static inline int32_t ft_roce_cand_find(const struct ft_roce_cand_tab *t, const struct ft_flow *flows,
                                        int32_t nslots, const struct ft_key *key, int a_is_src,
                                        const struct ft_pkt *p)
{
    int k, same_addr = memcmp(key->addr_a, key->addr_b, 16) == 0, requester_is_a;
    int32_t found = -1, found_other = -1;
    int other_many = 0;
    uint32_t h = ft_roce_pairkey_hash(p->dst_addr, p->src_addr, key);
    requester_is_a = same_addr ? 1 : !a_is_src;
    for (k = 0; k < FT_ROCE_CAND_PROBE; k++) {
        const struct ft_roce_cand *c = &t->slot[(h + k) & (FT_ROCE_CAND_SLOTS - 1)];
        const struct ft_flow *f;
        int dreq;
        if (c->flow_id == 0)
            break;
        if (c->h != h || !ft_roce_cand_live(c, flows, nslots))
            continue;
        f = &flows[c->idx];
        if (memcmp(f->key.addr_a, key->addr_a, 16) != 0 || memcmp(f->key.addr_b, key->addr_b, 16) != 0 ||
            f->key.ip_version != key->ip_version || f->key.tunnel_id != key->tunnel_id ||
            (f->key.qpn == key->qpn && f->key.vlan_id == key->vlan_id) ||
            f->roce == NULL || f->roce->role != FT_ROCE_ROLE_RESPONDER)
            continue;
        /* its QP must live on p's sender (the responder) */
        if (!same_addr && ((f->key.qpn & FT_ROCE_KEY_AT_B) != 0) == (a_is_src != 0))
            continue;
        dreq = (requester_is_a == (f->src_is_a != 0)) ? 0 : 1;
        if (!ft_roce_psn_matches(f->roce, dreq, p))
            continue;
        if (f->key.vlan_id != key->vlan_id) {
            other_many |= found_other >= 0;
            found_other = c->idx;
            continue;
        }
        if (found >= 0)
            return -2;
        found = c->idx;
    }
    if (found >= 0)
        return found;
    return other_many ? -2 : found_other;
}

/* ---- RDMA CM REQs waiting for their REP ---- */

struct ft_roce_cmreq {
    uint8_t active[16];   /* REQ sender's address */
    uint8_t passive[16];  /* REQ receiver's address */
    uint32_t comm_id;     /* REQ local communication id */
    uint32_t qpn;         /* REQ local QPN (the active side's QP) */
    uint32_t tunnel_id;
    uint16_t vlan_id;     /* of the REQ: the VLAN of the active side's packets */
    uint8_t ip_version;
    uint8_t used;
    uint8_t transport;
    uint8_t _pad[7];
};

struct ft_roce_cmreq_tab {
    struct ft_roce_cmreq slot[FT_ROCE_CMREQ_SLOTS];
    uint32_t next;        /* ring position of the next insert */
};

/* Stores a REQ, overwriting the oldest slot. Returns 1 when an unanswered REQ was overwritten. */
static inline int ft_roce_cmreq_put(struct ft_roce_cmreq_tab *t, const uint8_t *active, const uint8_t *passive,
                                    const struct ft_key *key, uint32_t comm_id, uint32_t qpn, uint8_t transport)
{
    struct ft_roce_cmreq *r = &t->slot[t->next % FT_ROCE_CMREQ_SLOTS];
    int lost = r->used;
    t->next = (t->next + 1) % FT_ROCE_CMREQ_SLOTS;
    memset(r, 0, sizeof(*r));
    memcpy(r->active, active, 16);
    memcpy(r->passive, passive, 16);
    r->comm_id = comm_id;
    r->qpn = qpn;
    r->tunnel_id = key->tunnel_id;
    r->vlan_id = key->vlan_id;
    r->ip_version = key->ip_version;
    r->transport = transport;
    r->used = 1;
    return lost;
}

/* Finds and consumes the REQ a REP answers: REP sent by `passive` to `active` naming comm_id as the remote
 * communication id, same tunnel (the VLAN may differ, as for PSN pairing). Returns the slot (its fields stay
 * readable until the next put), or -1. */
static inline int ft_roce_cmreq_take(struct ft_roce_cmreq_tab *t, const uint8_t *rep_src, const uint8_t *rep_dst,
                                     const struct ft_key *key, uint32_t comm_id)
{
    int i;
    for (i = 0; i < FT_ROCE_CMREQ_SLOTS; i++) {
        struct ft_roce_cmreq *r = &t->slot[i];
        if (r->used && r->comm_id == comm_id && r->ip_version == key->ip_version &&
            r->tunnel_id == key->tunnel_id &&
            memcmp(r->active, rep_dst, 16) == 0 && memcmp(r->passive, rep_src, 16) == 0) {
            r->used = 0;
            return i;
        }
    }
    return -1;
}

#endif /* FT_ROCE_PAIR_H */
