/* bench_encode.c — tc_tokenizer_bench MODEL_DIR CORPUS [REPEAT]: encode
 * throughput of the C tokenizer on the parity corpus (make_corpus.py), with
 * the same records bench_js.js times in node, so run.sh can print the two
 * side by side. Reports a cold pass (empty word cache, as a fresh process)
 * and the best of REPEAT warm passes. Not a test: nothing is asserted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/bpe.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR CORPUS [REPEAT]\n", argv[0]);
        return 2;
    }
    int repeat = argc > 3 ? atoi(argv[3]) : 5;
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror(argv[2]); return 1; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) { fprintf(stderr, "read failed\n"); return 1; }
    fclose(f);

    tc_bpe *bpe;
    double t0 = now();
    if (tc_bpe_load(&bpe, argv[1]) != TC_OK) { fprintf(stderr, "%s\n", tc_error_get()); return 1; }
    double t_load = now() - t0;

    static const char *kinds[] = {"prose", "code", "unicode", "whitespace", "punct", "invalid", "sweep"};
    double kt[7] = {0};
    size_t kb[7] = {0};
    double best = 1e30, cold = 0;
    size_t bytes = 0, ids_total = 0;
    for (int r = 0; r <= repeat; r++) {
        bytes = ids_total = 0;
        double t = now();
        for (long off = 0; off + 5 <= len;) {
            unsigned rl = (unsigned)buf[off] | (unsigned)buf[off + 1] << 8 | (unsigned)buf[off + 2] << 16 |
                          (unsigned)buf[off + 3] << 24;
            int32_t *ids;
            size_t n;
            int kind = buf[off + 4] < 7 ? buf[off + 4] : 0;
            double tk = now();
            if (tc_bpe_encode(bpe, (const char *)buf + off + 5, rl, &ids, &n) != TC_OK) {
                fprintf(stderr, "%s\n", tc_error_get());
                return 1;
            }
            if (r > 0) {
                kt[kind] += now() - tk;
                kb[kind] += rl;
            }
            free(ids);
            bytes += rl;
            ids_total += n;
            off += 5 + (long)rl;
        }
        t = now() - t;
        if (r == 0) cold = t;
        else if (t < best) best = t;
    }
    printf("C    tc_bpe_encode: load %.0f ms; %zu bytes -> %zu ids; cold %.2f MB/s, warm %.2f MB/s (best of %d)\n",
           1e3 * t_load, bytes, ids_total, bytes / cold / 1e6, bytes / best / 1e6, repeat);
    printf("C    warm MB/s by kind:");
    for (int k = 0; k < 7; k++)
        if (kb[k]) printf(" %s %.1f", kinds[k], kb[k] / kt[k] / 1e6);
    printf("\n");
    tc_bpe_free(bpe);
    free(buf);
    return 0;
}
