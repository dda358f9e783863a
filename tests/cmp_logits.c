/* cmp_logits.c — compares engine logits with reference logits (both raw
 * little-endian f32, rows of V). The engine file may start at row `skip`
 * of the reference (tconst logits --prompt P writes rows from P-1).
 * Passes when every row has max|d| <= tol * max(1, max|ref|) and the same
 * argmax. Usage: cmp_logits ENGINE REF V SKIP [TOL]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float *slurp(const char *p, long *n) {
    FILE *f = fopen(p, "rb");
    if (!f) { fprintf(stderr, "cmp_logits: cannot open %s\n", p); exit(2); }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *x = malloc((size_t)sz + 4);
    if (!x || fread(x, 1, (size_t)sz, f) != (size_t)sz) { fprintf(stderr, "cmp_logits: read %s failed\n", p); exit(2); }
    fclose(f);
    *n = sz / 4;
    return x;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: cmp_logits ENGINE REF V SKIP [TOL]\n"); return 2; }
    long ne, nr;
    float *e = slurp(argv[1], &ne), *r = slurp(argv[2], &nr);
    long V = atol(argv[3]), skip = atol(argv[4]);
    double tol = argc > 5 ? atof(argv[5]) : 1e-3;
    if (V <= 0 || ne % V || nr % V) { fprintf(stderr, "cmp_logits: sizes %ld, %ld not multiples of V=%ld\n", ne, nr, V); return 2; }
    long rows_e = ne / V, rows_r = nr / V;
    if (rows_e + skip != rows_r || rows_e == 0) {
        fprintf(stderr, "cmp_logits: engine has %ld rows, reference %ld, skip %ld\n", rows_e, rows_r, skip);
        free(e);
        free(r);
        return 1;
    }
    int bad = 0;
    double worst = 0;
    for (long i = 0; i < rows_e; i++) {
        const float *a = e + i * V, *b = r + (i + skip) * V;
        double mx = 0, md = 0;
        long am = 0, bm = 0;
        for (long j = 0; j < V; j++) {
            if (!isfinite(a[j])) { md = INFINITY; break; }
            if (fabs(b[j]) > mx) mx = fabs(b[j]);
            double dd = fabs((double)a[j] - b[j]);
            if (dd > md) md = dd;
            if (a[j] > a[am]) am = j;
            if (b[j] > b[bm]) bm = j;
        }
        double rel = md / (mx > 1 ? mx : 1);
        if (rel > worst) worst = rel;
        if (!(rel <= tol) || am != bm) {
            if (bad++ < 5)
                fprintf(stderr, "row %ld (token %ld): max|d| %.3e (rel %.3e), argmax engine %ld ref %ld\n", i,
                        i + skip, md, rel, am, bm);
        }
    }
    printf("cmp_logits: %ld rows, worst rel err %.3e, %d bad rows\n", rows_e, worst, bad);
    free(e);
    free(r);
    return bad ? 1 : 0;
}
