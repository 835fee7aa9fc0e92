/* ft_reader.h: classic pcap and pcapng reader over an in-memory buffer, producing struct ft_pkt records.
 *
 * The reader never does I/O and never allocates: the caller owns the byte buffer (an mmap of the whole file,
 * or a window of a decompressed stream) and the output array. The state struct carries everything that must
 * survive between calls (format, byte order, the interfaces of the current pcapng section, counters), so a
 * stream can be fed in arbitrary pieces: a record that crosses the end of the buffer is left for the next
 * call (status FT_RD_MORE), and the caller keeps the bytes from *pos on and appends more after them.
 *
 * Frame bytes are never copied: a record's frame_off is the offset of its frame in the buffer of the call
 * that produced it. The caller may move the unconsumed tail between calls (the records already returned
 * then refer to the old buffer), and must then add the number of bytes it dropped to r->buf_abs, the
 * absolute stream offset of buf[0], so that error offsets stay absolute.
 *
 * Results are identical whatever the buffer pieces are: every limit (FT_MAX_FRAME, FT_MAX_BLOCK) applies
 * the same way to an mmap of the whole file and to a stream read in small chunks.
 *
 * pcap: record.iface is 0 (the file's one implicit interface; the caller knows the file index).
 * pcapng: record.iface is the interface id within the current section (ids restart at 0 with each SHB).
 * Timestamps are exact ns since the epoch: no floating point. Classic pcap's thiszone field is ignored, as
 * libpcap and Wireshark do; its seconds are unsigned, as draft-ietf-opsawg-pcap says (Wireshark reads them
 * signed: the two differ from 2^31 s, 2038-01-19, on; today only in corrupt files). pcapng's if_tsoffset
 * (seconds) is applied. Results that do not fit in [0, 2^64-1] ns saturate and are counted (ts_clamped).
 */
#ifndef FT_READER_H
#define FT_READER_H
#include <stddef.h>
#include "ft_record.h"

/* Largest captured frame accepted (bytes). Larger values are treated as corruption, like libpcap's 256 KiB
 * maximum snapshot length (MAXIMUM_SNAPLEN); a frame up to this size beyond the file's snaplen is accepted
 * and counted. */
#define FT_MAX_FRAME 262144u
/* Largest pcapng block the reader holds in memory: a frame plus 64 KiB of block header and options. Blocks
 * the reader skips (NRB, ISB, DSB, custom, unknown) may be larger: they are skipped piece by piece. */
#define FT_MAX_BLOCK (FT_MAX_FRAME + 65536u)
/* Interfaces per pcapng section; an IDB beyond this is an error (real captures have a handful). */
#define FT_MAX_IFACES 1024
/* Options walked in one block (bound of the option loop; 64 KiB of options hold at most 16384). */
#define FT_MAX_OPTIONS 16384
/* Records the reader may be asked for per call, and steps (records or skipped blocks) per call: the bounds
 * of the main loop. Hitting the step bound returns FT_RD_YIELD with fewer records: call again. */
#define FT_RD_MAX_BATCH (1u << 20)
#define FT_RD_MAX_STEPS (1u << 22)
#define FT_RD_MSG_LEN 200

/* Return values of ft_reader_run. */
enum ft_rd_status {
    FT_RD_ERROR = -1, /* r->err_off / r->err_msg say where and why; nothing after it is delivered */
    FT_RD_YIELD = 1,  /* `max` records written (or the step bound was hit): consume them, call again */
    FT_RD_MORE = 2,   /* the next record crosses the end of the buffer: keep buf[*pos..len), add bytes */
    FT_RD_END = 3,    /* eof was set and the stream ended exactly after a complete record */
};

enum ft_rd_format { FT_FMT_NONE = 0, FT_FMT_PCAP = 1, FT_FMT_PCAPNG = 2 };

/* How an interface's timestamp units become ns: ns = ts * factor, ts / factor, (ts * 10^9) >> shift, or 0
 * (resolutions finer than 10^-28 s: every 64-bit count is below 1 ns). */
enum ft_ts_mode { FT_TS_MUL = 0, FT_TS_DIV = 1, FT_TS_SHIFT = 2, FT_TS_ZERO = 3 };

struct ft_iface {
    ft_u32 linktype;      /* LINKTYPE_* */
    ft_u32 snaplen;       /* 0 = no limit */
    ft_u64 ts_factor;     /* FT_TS_MUL / FT_TS_DIV */
    long long ts_offset_s; /* if_tsoffset: seconds added to every timestamp */
    ft_u8 ts_mode;        /* enum ft_ts_mode */
    ft_u8 ts_shift;       /* FT_TS_SHIFT: k of 2^-k */
    ft_u8 _pad[6];
};

struct ft_reader_counters {
    ft_u64 packets;          /* records delivered */
    ft_u64 bytes;            /* sum of original (wire) lengths */
    ft_u64 cap_bytes;        /* sum of captured lengths */
    ft_u64 truncated;        /* frames cut by the snap length (cap_len < wire_len) */
    ft_u64 over_snaplen;     /* captured length above the file's / interface's snaplen (accepted) */
    ft_u64 caplen_over_wire; /* captured length above the original length (wire taken as captured) */
    ft_u64 skipped_blocks;   /* pcapng blocks not carrying packets or interfaces (NRB, ISB, DSB, custom...) */
    ft_u64 sections;         /* pcapng section header blocks */
    ft_u64 interfaces;       /* pcapng interface description blocks, all sections */
    ft_u64 simple_packets;   /* of `packets`: from pcapng simple packet blocks (timestamp of the previous) */
    ft_u64 obsolete_packets; /* of `packets`: from pcapng obsolete packet blocks (type 2) */
    ft_u64 bad_options;      /* blocks whose option list ran past the block (options after it ignored) */
    ft_u64 ts_clamped;       /* timestamps outside [0, 2^64) ns after if_tsoffset, saturated */
};

struct ft_reader {
    /* set by the caller before each call when it moved the buffer; see above */
    ft_u64 buf_abs;
    /* format state */
    ft_u8 format;         /* enum ft_rd_format */
    ft_u8 swap;           /* the file (pcap) / section (pcapng) is in the other byte order */
    ft_u8 pcap_ns;        /* classic pcap: fractions are ns (magic a1b23c4d), else us */
    ft_u8 pcap_fcs_len;   /* classic pcap: FCS length in bytes announced in the link type field, or 0 */
    ft_u8 failed;         /* an error was reported: every later call reports it again */
    ft_u8 _pad0[3];
    ft_u32 pcap_linktype; /* classic pcap, FCS bits masked off */
    ft_u32 pcap_snaplen;
    ft_u32 n_ifaces;      /* interfaces in the current pcapng section */
    ft_u16 pcapng_major, pcapng_minor;
    ft_u64 last_ts_ns;    /* timestamp of the previous packet, for simple packet blocks */
    /* a skipped block too large to hold: bytes of it still to skip (before its trailing length) */
    ft_u64 skip_left;
    ft_u64 skip_block_abs;
    ft_u32 skip_total_len;
    ft_u32 _pad;
    /* error */
    ft_u64 err_off;
    char err_msg[FT_RD_MSG_LEN];
    struct ft_reader_counters c;
    struct ft_iface ifaces[FT_MAX_IFACES];
};

/* Reset *r to the start of a stream. */
void ft_reader_init(struct ft_reader *r);

/* Parse records from buf[*pos .. len) into out[0 .. max), calling ft_parse() on every frame.
 * `eof` says that no bytes follow buf[len - 1]: a record that crosses the end is then an error, not
 * FT_RD_MORE. On return *pos is the offset of the first unconsumed byte (the start of an incomplete record
 * for FT_RD_MORE) and *n_out the number of records written, which is meaningful for every status (records
 * before an error are complete and valid). Returns an enum ft_rd_status. */
int ft_reader_run(struct ft_reader *r, const ft_u8 *buf, size_t len, size_t *pos, int eof,
                  struct ft_pkt *out, ft_u32 max, ft_u32 *n_out);

#endif /* FT_READER_H */
