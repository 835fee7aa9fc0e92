/* dpi_fuzz.c: the DPI registry and every dissector under AddressSanitizer and UBSan (tests/test_dpi_fuzz.py
 * builds and runs it). Two sources of input:
 *   random   payloads of random length, first bytes taken from the signatures so that dissectors go past
 *            their first test, random ports and directions, some marked cut by the snap length;
 *   corpus   real first payloads (a file of records: l4, sport, dport, length, bytes, little-endian),
 *            replayed as flows, then truncated and bit-flipped so that their length fields lie.
 * Any read outside a payload aborts the run. Usage: dpi_fuzz random ITERATIONS SEED | corpus FILE ROUNDS SEED
 */
#include <stdio.h>
#include <stdlib.h>
#include "ft_dpi.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t xr(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const uint16_t PORTS[] = {53, 80, 443, 4791, 2049, 111, 123, 161, 514, 1194, 1883, 11211, 3478, 5353,
                                 137, 88, 389, 445, 3306, 5432, 6379, 9092, 24224, 8125, 179, 4420, 3260, 500,
                                 4500, 1812, 67, 546, 3389, 1080, 51820, 1433, 27017, 5060, 554, 21, 25, 110, 40000};
static const uint8_t FIRSTS[] = {0x16, 0x17, 0x14, 'G', 'P', 'S', 'H', 0x00, 0x80, 0x30, 0xc3, 0x38, 0x05, 0x10,
                                 0xff, '<', '*', 0x92, 0x12, 'R', 0x03, 'A', 'c', 'Z', 0x01, 0x04, 0x6a, 0x40};

/* One packet into the flow, from an exact-size heap copy (ASan sees a read one past the end). */
static void packet(struct ft_dpi_ctx *c, struct ft_dpi_state *st, const struct ft_dpi_flowinfo *fi,
                   const uint8_t *src, uint32_t len, int dir, uint32_t *seq)
{
    uint8_t *p = malloc(len);
    memcpy(p, src, len);
    ft_dpi_packet(c, st, fi, p, len, (int)(xr() % 8 == 0), dir, seq[dir]);
    seq[dir] += len;
    free(p);
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    int corpus = strcmp(argv[1], "corpus") == 0;
    long n = atol(argv[corpus ? 3 : 2]);
    rng ^= (uint64_t)atol(argv[corpus ? 4 : 3]) * 0x9E3779B97F4A7C15ull;
    struct ft_dpi_ctx *c = ft_dpi_ctx_new(16, 1 << 16, 256);
    uint8_t a[16] = {10, 0, 0, 1}, b[16] = {10, 0, 0, 2};
    struct ft_dpi_flowinfo fi = {4, a, b, 1};
    struct ft_dpi_out out;
    long flows = 0;
    if (!corpus) {
        uint8_t *buf = malloc(1500);
        for (long it = 0; it < n; it++, flows++) {
            struct ft_dpi_state st;
            ft_dpi_flow_init(&st, (xr() & 1) ? 6 : 17, PORTS[xr() % (sizeof(PORTS) / 2)],
                             PORTS[xr() % (sizeof(PORTS) / 2)]);
            uint32_t seq[2] = {1000, 9000};
            int npk = 1 + (int)(xr() % 6);
            for (int k = 0; k < npk && !(st.flags & FT_DPI_S_DONE); k++) {
                uint32_t len = (xr() % 3 == 0) ? (uint32_t)(xr() % 48) + 1 : (uint32_t)(xr() % 1500) + 1;
                for (uint32_t i = 0; i < len; i++)
                    buf[i] = (uint8_t)xr();
                buf[0] = FIRSTS[xr() % sizeof(FIRSTS)];
                if (len > 1 && (xr() & 1))
                    buf[1] = (uint8_t)(xr() % 4);
                packet(c, &st, &fi, buf, len, (int)(xr() & 1), seq);
            }
            ft_dpi_export(c, &st, &fi, &out);
            ft_dpi_flow_free(c, &st);
        }
        free(buf);
    } else {
        FILE *f = fopen(argv[2], "rb");
        if (!f)
            return 2;
        static struct { uint8_t l4; uint16_t sp, dp, len; uint8_t *p; } s[100000];
        int ns = 0;
        uint8_t h[7];
        while (ns < 100000 && fread(h, 1, 7, f) == 7) {
            s[ns].l4 = h[0];
            s[ns].sp = (uint16_t)(h[1] | (h[2] << 8));
            s[ns].dp = (uint16_t)(h[3] | (h[4] << 8));
            s[ns].len = (uint16_t)(h[5] | (h[6] << 8));
            s[ns].p = malloc(s[ns].len ? s[ns].len : 1);
            if (fread(s[ns].p, 1, s[ns].len, f) != s[ns].len)
                break;
            ns++;
        }
        fclose(f);
        uint8_t *buf = malloc(65536);
        for (long r = 0; r < n; r++) {
            for (int i = 0; i < ns; i++, flows++) {
                struct ft_dpi_state st;
                ft_dpi_flow_init(&st, s[i].l4, s[i].sp, s[i].dp);
                uint32_t seq[2] = {1000, 9000};
                for (int k = 0; k < 4 && !(st.flags & FT_DPI_S_DONE); k++) {
                    int j = (i + k * (int)(xr() % 3)) % ns;
                    uint32_t len = s[j].len;
                    if (!len)
                        continue;
                    if (r > 0 && (xr() & 1))
                        len = (uint32_t)(xr() % len) + 1; /* truncated */
                    memcpy(buf, s[j].p, len);
                    for (int q = 0; r > 0 && q < (int)(xr() % 8); q++)
                        buf[xr() % len] ^= (uint8_t)(1u << (xr() % 8)); /* lengths that lie */
                    packet(c, &st, &fi, buf, len, (int)(xr() & 1), seq);
                }
                ft_dpi_export(c, &st, &fi, &out);
                ft_dpi_flow_free(c, &st);
            }
        }
        free(buf);
        for (int i = 0; i < ns; i++)
            free(s[i].p);
    }
    printf("ok %ld flows\n", flows);
    ft_dpi_ctx_free(c);
    return 0;
}
