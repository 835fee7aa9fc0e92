/* asan_replay.c: the fuzz cases under AddressSanitizer and UBSan without atheris (tests/test_fuzz_regressions.py
 * builds it with the system compiler and runs every case through it). The Python test turns a case into
 * the exact inputs of its layer; this program copies each into a heap block of exactly its size, so that a
 * read one byte past it aborts the run.
 *
 *   asan_replay parser LINKTYPE FRAME_FILE
 *   asan_replay reader CAPTURE_FILE               whole buffer, eof set
 *   asan_replay dpi tcp|udp NAME VIEWS_FILE       views: records of arg (1 byte), length (4 bytes, LE), bytes
 *
 * Prints "ok" and what it saw; exits 0. A sanitizer report exits non-zero.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft_reader.h"
#include "ft_parse.h"
#include "ft_dpi.h"

/* Reads a whole file into a heap block of exactly its size (1 byte for an empty file; *n is then 0). */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        exit(2);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
    if (!b || (sz > 0 && fread(b, 1, (size_t)sz, f) != (size_t)sz))
        exit(2);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static int replay_parser(unsigned linktype, const char *path)
{
    size_t n;
    uint8_t *b = slurp(path, &n);
    struct ft_pkt p;
    memset(&p, 0, sizeof(p));
    p.cap_len = p.wire_len = (ft_u32)n;
    ft_parse(b, b + n, linktype, &p);
    printf("ok reason %u payload_off %u payload_cap %u\n", p.reason, p.payload_off, p.payload_cap);
    free(b);
    return 0;
}

static int replay_reader(const char *path)
{
    size_t n, pos = 0;
    uint8_t *b = slurp(path, &n);
    struct ft_reader *r = calloc(1, sizeof(*r));
    struct ft_pkt *out = calloc(64, sizeof(*out));
    ft_u32 got = 0;
    unsigned long long recs = 0;
    int st = FT_RD_YIELD;
    ft_reader_init(r);
    for (int calls = 0; calls < 1000000 && st == FT_RD_YIELD; calls++) {
        st = ft_reader_run(r, b, n, &pos, 1, out, 64, &got);
        recs += got;
    }
    printf("ok records %llu status %d\n", recs, st);
    free(out);
    free(r);
    free(b);
    return 0;
}

static int replay_dpi(const char *proto, const char *name, const char *path)
{
    size_t n, off = 0;
    uint8_t *b = slurp(path, &n);
    uint8_t l4 = strcmp(proto, "tcp") == 0 ? 6 : 17;
    int nt, i;
    const struct ft_dissector *t = ft_dpi_table(l4, &nt);
    for (i = 0; i < nt && strcmp(t[i].name, name) != 0; i++)
        ;
    if (i == nt)
        return 2;
    struct ft_dpi_state st;
    struct ft_dpi_out o;
    ft_dpi_flow_init(&st, l4, 40000, t[i].gated ? t[i].ports[0] : 40000);
    memset(&o, 0, sizeof(o));
    printf("ok answers");
    for (int k = 0; k < 1024 && off + 5 <= n; k++) {
        int arg = b[off];
        uint32_t len = (uint32_t)b[off + 1] | (uint32_t)b[off + 2] << 8 | (uint32_t)b[off + 3] << 16 |
                       (uint32_t)b[off + 4] << 24;
        off += 5;
        if (len > n - off)
            return 2;
        uint8_t *v = malloc(len ? len : 1);
        memcpy(v, b + off, len);
        off += len;
        int rv = len ? t[i].fn(v, len, arg, &st, &o) : -1;
        free(v);
        if (rv < 0)
            continue;
        printf(" %d", rv);
        if (rv == FT_DPI_DETECTED && !st.detector)
            st.detector = (uint8_t)(i + 1);
        if (rv == FT_DPI_EXCLUDED || (st.detector && !(st.flags & FT_DPI_S_EXTRA)))
            break;
    }
    printf("\n");
    free(b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "parser") == 0)
        return replay_parser((unsigned)atoi(argv[2]), argv[3]);
    if (argc == 3 && strcmp(argv[1], "reader") == 0)
        return replay_reader(argv[2]);
    if (argc == 5 && strcmp(argv[1], "dpi") == 0)
        return replay_dpi(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: asan_replay parser LINKTYPE FILE | reader FILE | dpi tcp|udp NAME FILE\n");
    return 2;
}
