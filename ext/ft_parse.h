/* ft_parse.h: one frame -> struct ft_pkt. Header-only, written for both compilers that include it: the
 * Cython extension (replay) and the BPF programs (live capture, BCC). See ft_record.h for the record.
 * (skeleton: the full parser is being written) */
#ifndef FT_PARSE_H
#define FT_PARSE_H
#include "ft_record.h"

#ifndef __bpf__
#include <string.h>
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#endif

/* Parse the captured bytes data..data_end of one frame of link type `linktype` into *p.
 * The caller zeroes *p and sets ts_ns, frame_off, wire_len, cap_len, iface and direction beforehand.
 * Returns the exit reason (also stored in p->reason): FT_OK or an FT_R_* value. */
static __always_inline int ft_parse(const ft_u8 *data, const ft_u8 *data_end, ft_u32 linktype,
                                    struct ft_pkt *p)
{
    p->linktype = (ft_u16)linktype;
    p->reason = FT_R_LINKTYPE;
    return FT_R_LINKTYPE;
}

#endif /* FT_PARSE_H */
