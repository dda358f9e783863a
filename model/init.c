/* init.c — seeded random-init model directories (`tconst init-model`).
 *
 * Deterministic on every machine: each tensor draws from its own
 * splitmix64 stream seeded by (seed, FNV-1a of its name), values are
 * (24-bit integer / 2^23 - 1) * scale, exact in fp32, no libm involved.
 * Scales: linear weights U(-a, a), a = 1/sqrt(fan_in) (qkv 2x so attention
 * is far from uniform and positions matter), biases and LN shifts
 * U(-0.02, 0.02)-ish, LN gains 1 + U(-0.1, 0.1), embedding U(-2/sqrt(d), .). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/safetensors.h"
#include "weights.h"

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void fill(float *x, int64_t n, const char *name, uint64_t seed, float offset, float scale) {
    uint64_t st = seed ^ fnv1a(name);
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = (st += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        float u = (float)(int32_t)(z >> 40) / 8388608.0f - 1.0f; /* [-1, 1) */
        x[i] = offset + scale * u;
    }
}

tc_status tc_model_init_random(const tc_model_config *c, uint64_t seed, const char *dtype, const char *dir) {
    tc_dtype dt;
    if (!strcmp(dtype, "f32")) dt = TC_DT_F32;
    else if (!strcmp(dtype, "f16")) dt = TC_DT_F16;
    else if (!strcmp(dtype, "bf16")) dt = TC_DT_BF16;
    else return TC_FAIL(TC_ERR_INVALID, "--dtype '%s': expected f32, f16 or bf16", dtype);
    TC_CHECK(tc_config_validate(c));
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return TC_FAIL(TC_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    int nl = tc_config_n_layers(c);
    int64_t d = c->n_embd, F = c->ffn_hidden, V = c->vocab_size;
    static const char *P[] = {"norm1.weight", "norm1.bias", "qkv_proj.weight", "qkv_proj.bias",
                              "out_proj.weight", "out_proj.bias", "norm2.weight", "norm2.bias",
                              "ffn.w1.weight", "ffn.w3.weight", "ffn.w2.weight"};
    const int NP = 11;
    int nt = 3 + nl * NP;
    tc_st_out *ts = calloc((size_t)nt, sizeof *ts);
    char **names = calloc((size_t)nt, sizeof *names);
    float **bufs = calloc((size_t)nt, sizeof *bufs);
    tc_status st = TC_OK;
    if (!ts || !names || !bufs) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory"); goto done; }
    int k = 0;
#define ADD(nm, r, cdim, off, sc)                                                              \
    do {                                                                                       \
        names[k] = strdup(nm);                                                                 \
        int64_t ne_ = (int64_t)(r) * ((cdim) ? (cdim) : 1);                                    \
        bufs[k] = malloc((size_t)ne_ * 4);                                                     \
        if (!names[k] || !bufs[k]) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory"); goto done; } \
        fill(bufs[k], ne_, nm, seed, off, sc);                                                 \
        ts[k].name = names[k];                                                                 \
        ts[k].data = bufs[k];                                                                  \
        ts[k].n_dims = (cdim) ? 2 : 1;                                                         \
        ts[k].shape[0] = (r);                                                                  \
        ts[k].shape[1] = (cdim);                                                               \
        k++;                                                                                   \
    } while (0)
    ADD("embedding.weight", V, d, 0.f, 2.0f / sqrtf((float)d));
    char nm[256];
    for (int li = 0; li < nl; li++) {
        float a = 1.0f / sqrtf((float)d), af = 1.0f / sqrtf((float)F);
        tc_layer_tensor_name(c, li, P[0], nm, sizeof nm); ADD(nm, d, 0, 1.f, 0.1f);
        tc_layer_tensor_name(c, li, P[1], nm, sizeof nm); ADD(nm, d, 0, 0.f, 0.02f);
        tc_layer_tensor_name(c, li, P[2], nm, sizeof nm); ADD(nm, 3 * d, d, 0.f, 2.f * a);
        tc_layer_tensor_name(c, li, P[3], nm, sizeof nm); ADD(nm, 3 * d, 0, 0.f, 0.02f);
        tc_layer_tensor_name(c, li, P[4], nm, sizeof nm); ADD(nm, d, d, 0.f, a);
        tc_layer_tensor_name(c, li, P[5], nm, sizeof nm); ADD(nm, d, 0, 0.f, 0.02f);
        tc_layer_tensor_name(c, li, P[6], nm, sizeof nm); ADD(nm, d, 0, 1.f, 0.1f);
        tc_layer_tensor_name(c, li, P[7], nm, sizeof nm); ADD(nm, d, 0, 0.f, 0.02f);
        tc_layer_tensor_name(c, li, P[8], nm, sizeof nm); ADD(nm, F, d, 0.f, a);
        tc_layer_tensor_name(c, li, P[9], nm, sizeof nm); ADD(nm, F, d, 0.f, a);
        tc_layer_tensor_name(c, li, P[10], nm, sizeof nm); ADD(nm, d, F, 0.f, af);
    }
    ADD("transformer.norm.weight", d, 0, 1.f, 0.1f);
    ADD("transformer.norm.bias", d, 0, 0.f, 0.02f);
#undef ADD
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = tc_config_save(c, path)) != TC_OK) goto done;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st = tc_st_write(path, ts, k, dt);
done:
    if (names)
        for (int i = 0; i < nt; i++) { free(names[i]); free(bufs[i]); }
    free(names);
    free(bufs);
    free(ts);
    return st;
}

/* whether path is ours to trust: not a symlink, owned by this user, not
 * writable by other users (group write only for the user's own primary
 * group, as umask 002 with per-user groups makes it): a shared /tmp lets
 * any user create the name first and plant another model there */
static tc_status builtin_trusted(const char *path, int want_dir) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return TC_FAIL(TC_ERR_IO, "built-in model: %s: %s", path, strerror(errno));
    if (want_dir ? !S_ISDIR(sb.st_mode) : !S_ISREG(sb.st_mode))
        return TC_FAIL(TC_ERR_INVALID, "built-in model: %s is not a %s (remove it, or set TMPDIR)", path,
                       want_dir ? "directory" : "regular file");
    if (sb.st_uid != getuid() || (sb.st_mode & S_IWOTH) || ((sb.st_mode & S_IWGRP) && sb.st_gid != getgid()))
        return TC_FAIL(TC_ERR_INVALID, "built-in model: %s is owned by uid %u or writable by others: not trusted "
                       "(remove it, or set TMPDIR to a private directory)", path, (unsigned)sb.st_uid);
    return TC_OK;
}

static tc_status builtin_check(const char *dir) {
    char p[4200];
    TC_CHECK(builtin_trusted(dir, 1));
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    TC_CHECK(builtin_trusted(p, 0));
    snprintf(p, sizeof p, "%s/config.json", dir);
    return builtin_trusted(p, 0);
}

/* The built-in model: the tiny tconstformer preset, seed 1234, written
 * once per user under $TMPDIR (or /tmp); a concurrent writer is fine (the
 * directory is renamed into place, the loser's copy is equal). What is
 * found there is used only when builtin_trusted says this user made it. */
tc_status tc_model_builtin_dir(char *dir, size_t n) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/tconst-builtin-tiny-v1-%u", tmp && *tmp ? tmp : "/tmp", (unsigned)getuid());
    struct stat sb;
    char st[4200], tmpd[4200];
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    if (lstat(dir, &sb) == 0) {
        TC_CHECK(builtin_trusted(dir, 1));
        if (lstat(st, &sb) == 0) return builtin_check(dir);
    }
    tc_model_config c;
    snprintf(tmpd, sizeof tmpd, "%s.tmp%d", dir, (int)getpid());
    TC_CHECK(tc_config_preset(&c, "tiny", TC_ARCH_TCONST));
    TC_CHECK(tc_model_init_random(&c, 1234, "f32", tmpd));
    /* modes of our own, whatever the umask (000 would leave them writable
     * by all, and builtin_trusted would then refuse them on every run) */
    char f[4300];
    snprintf(f, sizeof f, "%s/model.safetensors", tmpd), chmod(f, 0644);
    snprintf(f, sizeof f, "%s/config.json", tmpd), chmod(f, 0644);
    chmod(tmpd, 0755);
    if (rename(tmpd, dir) != 0 && stat(st, &sb) != 0)
        return TC_FAIL(TC_ERR_IO, "cannot create the built-in model at %s: %s", dir, strerror(errno));
    if (stat(tmpd, &sb) == 0) { /* another process won the rename: remove ours */
        char p2[4300];
        snprintf(p2, sizeof p2, "%s/model.safetensors", tmpd), unlink(p2);
        snprintf(p2, sizeof p2, "%s/config.json", tmpd), unlink(p2);
        rmdir(tmpd);
    }
    /* whoever won the rename, what is there now must be ours */
    return builtin_check(dir);
}
