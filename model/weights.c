/* weights.c — loading a model directory onto a backend, with validation of
 * every tensor against the config before any use. */
#include "weights.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/log.h"
#include "../common/safetensors.h"
#include "forward.h"

static const char *PARAMS[] = {"norm1.weight", "norm1.bias", "qkv_proj.weight", "qkv_proj.bias",
                               "out_proj.weight", "out_proj.bias", "norm2.weight", "norm2.bias",
                               "ffn.w1.weight", "ffn.w3.weight", "ffn.w2.weight"};
#define N_PARAMS ((int)(sizeof PARAMS / sizeof PARAMS[0]))

void tc_layer_tensor_name(const tc_model_config *c, int li, const char *p, char *buf, size_t n) {
    if (c->arch == TC_ARCH_TRANSFORMER) {
        snprintf(buf, n, "transformer.transformer_layers.%d.%s", li, p);
        return;
    }
    int b = li / c->inner_depth, l = li % c->inner_depth;
    if (l == 0) snprintf(buf, n, "transformer.transformer_layers.%d.compress_context_layer.%s", b, p);
    else if (l == c->inner_depth - 1)
        snprintf(buf, n, "transformer.transformer_layers.%d.restore_context_shape_layer.%s", b, p);
    else snprintf(buf, n, "transformer.transformer_layers.%d.hidden_layers.%d.%s", b, l - 1, p);
}

/* expected shape of parameter p: rows x cols (cols 0 = vector) */
static void param_shape(const tc_model_config *c, const char *p, int64_t *r, int64_t *k) {
    int64_t d = c->n_embd, F = c->ffn_hidden;
    *k = 0;
    if (strstr(p, "norm")) *r = d;
    else if (!strcmp(p, "qkv_proj.weight")) { *r = 3 * d; *k = d; }
    else if (!strcmp(p, "qkv_proj.bias")) *r = 3 * d;
    else if (!strcmp(p, "out_proj.weight")) { *r = d; *k = d; }
    else if (!strcmp(p, "out_proj.bias")) *r = d;
    else if (!strcmp(p, "ffn.w2.weight")) { *r = d; *k = F; }
    else { *r = F; *k = d; } /* w1, w3 */
}

static tc_status check_tensor(const tc_st_file *f, const char *path, const char *name, int64_t r, int64_t k,
                              const tc_st_tensor **out) {
    const tc_st_tensor *t = tc_st_find(f, name);
    if (!t) return TC_FAIL(TC_ERR_INVALID, "%s: missing tensor '%s'", path, name);
    if (t->dtype == TC_DT_OTHER)
        return TC_FAIL(TC_ERR_INVALID, "%s: tensor '%s' has dtype %s (expected F32, F16 or BF16)", path, name,
                       t->dtype_name);
    int ok = k ? (t->n_dims == 2 && t->shape[0] == r && t->shape[1] == k) : (t->n_dims == 1 && t->shape[0] == r);
    if (!ok) {
        char got[128] = "[";
        for (int i = 0; i < t->n_dims; i++) {
            size_t l = strlen(got);
            snprintf(got + l, sizeof got - l, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        }
        strncat(got, "]", sizeof got - strlen(got) - 1);
        if (k)
            return TC_FAIL(TC_ERR_INVALID, "%s: tensor '%s' has shape %s, expected [%lld, %lld]", path, name, got,
                           (long long)r, (long long)k);
        return TC_FAIL(TC_ERR_INVALID, "%s: tensor '%s' has shape %s, expected [%lld]", path, name, got,
                       (long long)r);
    }
    *out = t;
    return TC_OK;
}

/* tensor t (any file dtype) -> fp32 in tmp -> the backend at dst: a
 * matrix (cols > 0) in the backend's weight format, a vector as fp32. A
 * NaN or infinity is refused: it would turn every logit NaN and greedy
 * decoding into a silent stream of token 0. */
static tc_status put(tc_backend *be, void *dst, const tc_st_tensor *t, float *tmp, int64_t rows, int64_t cols,
                     const char *path) {
    tc_convert_to_f32(tmp, t->data, t->dtype, (size_t)t->n_elem);
    for (int64_t i = 0; i < t->n_elem; i++)
        if (!isfinite(tmp[i]))
            return TC_FAIL(TC_ERR_INVALID, "%s: tensor '%s' holds a non-finite value (%g) at element %lld", path,
                           t->name, tmp[i], (long long)i);
    if (cols && be->wtype != TC_WT_F32) be->upload_weight(be, dst, tmp, (size_t)rows, (size_t)cols);
    else be->upload(be, dst, tmp, (size_t)t->n_elem * 4);
    return TC_OK;
}

/* whether two tensors of equal shape hold the same values (the same bytes
 * when their dtypes agree; else compared as fp32, a chunk at a time) */
static int same_values(const tc_st_tensor *a, const tc_st_tensor *b) {
    if (a->n_elem != b->n_elem) return 0;
    if (a->dtype == b->dtype) return memcmp(a->data, b->data, a->nbytes) == 0;
    enum { CH = 4096 };
    float x[CH], y[CH];
    const size_t ea = tc_dtype_size(a->dtype), eb = tc_dtype_size(b->dtype);
    for (int64_t i = 0; i < a->n_elem; i += CH) {
        const size_t n = (size_t)(a->n_elem - i < CH ? a->n_elem - i : CH);
        tc_convert_to_f32(x, a->data + (size_t)i * ea, a->dtype, n);
        tc_convert_to_f32(y, b->data + (size_t)i * eb, b->dtype, n);
        if (memcmp(x, y, n * sizeof *x) != 0) return 0;
    }
    return 1;
}

/* A layer parameter the config does not ask for (a block, hidden layer
 * or baseline layer past its counts) means config.json describes another
 * model than the file: loading the first layers only would serve a
 * truncated model. Other names (e.g. *.rope.inv_freq) stay ignored. */
static tc_status check_no_extra_layers(const tc_st_file *f, const char *path, const tc_model_config *c) {
    static const char pre[] = "transformer.transformer_layers.";
    for (int i = 0; i < f->n_tensors; i++) {
        const char *nm = f->tensors[i].name;
        if (strncmp(nm, pre, sizeof pre - 1) != 0) continue;
        const char *q = nm + sizeof pre - 1;
        char *end;
        errno = 0;
        const unsigned long long b = strtoull(q, &end, 10);
        if (end == q || *end != '.' || errno) continue;
        const char *rest = end + 1, *param = rest;
        const char *key = c->arch == TC_ARCH_TRANSFORMER ? "n_block (layers)" : "n_block";
        unsigned long long j = 0;
        int hidden = 0;
        if (c->arch != TC_ARCH_TRANSFORMER) {
            if (!strncmp(rest, "compress_context_layer.", 23)) param = rest + 23;
            else if (!strncmp(rest, "restore_context_shape_layer.", 28)) param = rest + 28;
            else if (!strncmp(rest, "hidden_layers.", 14)) {
                const char *h = rest + 14;
                errno = 0;
                j = strtoull(h, &end, 10);
                if (end == h || *end != '.' || errno) continue;
                param = end + 1, hidden = 1;
            } else continue;
        }
        int is_param = 0;
        for (int p = 0; p < N_PARAMS; p++) is_param |= strcmp(param, PARAMS[p]) == 0;
        if (!is_param) continue;
        if (b >= (unsigned long long)c->n_block)
            return TC_FAIL(TC_ERR_INVALID, "%s: tensor '%s' is past config.json's %s = %d: the file holds a "
                           "larger model than the config describes", path, nm, key, c->n_block);
        if (hidden && j + 2 >= (unsigned long long)c->inner_depth)
            return TC_FAIL(TC_ERR_INVALID, "%s: tensor '%s' is past config.json's block_inner_depth = %d (hidden "
                           "layers 0..%d): the file holds a deeper model than the config describes", path, nm,
                           c->inner_depth, c->inner_depth - 3);
    }
    return TC_OK;
}

/* bump allocation in the blob, each tensor 256-byte aligned (vector loads) */
static void *take(char **cur, size_t bytes) {
    void *p = *cur;
    *cur += (bytes + 255) & ~(size_t)255;
    return p;
}

/* model.safetensors' fingerprint (tc_model.weights_digest): FNV-1a 64
 * over its size, its first 64 KiB and 64 blocks of 4 KiB spread evenly
 * over it -- two checkpoints of one architecture differ in all of them;
 * reading the whole file again would cost seconds for a large model */
static uint64_t file_digest(const void *map, size_t size) {
    const uint8_t *b = map;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 8; i++) h = (h ^ (uint8_t)(size >> (8 * i))) * 1099511628211ull;
    const size_t head = size < 65536 ? size : 65536;
    for (size_t i = 0; i < head; i++) h = (h ^ b[i]) * 1099511628211ull;
    if (size > 65536 + 4096)
        for (size_t k = 0; k < 64; k++) {
            const size_t at = 65536 + k * (size - 65536 - 4096) / 63;
            for (size_t i = 0; i < 4096; i++) h = (h ^ b[at + i]) * 1099511628211ull;
        }
    return h;
}

tc_status tc_model_load(tc_model **out, const char *dir, tc_backend *be) {
    tc_status st = TC_OK;
    tc_st_file f = {0};
    tc_model *m = NULL;
    float *tmp = NULL;
    char path[4096], stpath[4096], name[256];
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0) return TC_FAIL(TC_ERR_IO, "model directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return TC_FAIL(TC_ERR_INVALID, "model directory %s: not a directory", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    m = calloc(1, sizeof *m);
    if (!m) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    m->be = be;
    TC_CHECK_GOTO(tc_config_load(&m->cfg, path));
    const tc_model_config *c = &m->cfg;
    if (be->max_head_dim > 0 && c->head_dim > be->max_head_dim) {
        st = TC_FAIL(TC_ERR_UNSUPPORTED,
                     "%s: head_dim n_embd/n_head = %d/%d = %d is more than the %s backend's attention takes (%d)", path,
                     c->n_embd, c->n_head, c->head_dim, be->name ? be->name : "this", be->max_head_dim);
        goto fail;
    }
    snprintf(stpath, sizeof stpath, "%s/model.safetensors", dir);
    TC_CHECK_GOTO(tc_st_open(&f, stpath));
    m->weights_digest = file_digest(f.map, f.map_size);

    int64_t d = c->n_embd, F = c->ffn_hidden, V = c->vocab_size;
    int nl = tc_config_n_layers(c);
    const tc_st_tensor *temb, *tnw, *tnb;
    /* vocab mismatch gets its own message: the commonest conversion slip */
    temb = tc_st_find(&f, "embedding.weight");
    if (temb && temb->n_dims == 2 && temb->shape[1] == d && temb->shape[0] != V) {
        st = TC_FAIL(TC_ERR_INVALID, "%s: vocab mismatch: config.json vocab_size is %lld but embedding.weight has %lld rows",
                     stpath, (long long)V, (long long)temb->shape[0]);
        goto fail;
    }
    TC_CHECK_GOTO(check_tensor(&f, stpath, "embedding.weight", V, d, &temb));
    TC_CHECK_GOTO(check_tensor(&f, stpath, "transformer.norm.weight", d, 0, &tnw));
    TC_CHECK_GOTO(check_tensor(&f, stpath, "transformer.norm.bias", d, 0, &tnb));
    const tc_st_tensor *lh = tc_st_find(&f, "transformer.lm_head.weight");
    if (lh) {
        const tc_st_tensor *tl;
        TC_CHECK_GOTO(check_tensor(&f, stpath, "transformer.lm_head.weight", V, d, &tl));
        /* tied (config.c refuses untied): the embedding serves as the
         * head, so a different head in the file would be silently lost */
        if (!same_values(tl, temb)) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: tie_word_embeddings is true but transformer.lm_head.weight differs from "
                         "embedding.weight (untied heads are not supported)", stpath);
            goto fail;
        }
    }
    TC_CHECK_GOTO(check_no_extra_layers(&f, stpath, c));
    const tc_st_tensor **lt = calloc((size_t)nl * N_PARAMS, sizeof *lt);
    if (!lt) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory"); goto fail; }
    for (int li = 0; li < nl && st == TC_OK; li++)
        for (int p = 0; p < N_PARAMS && st == TC_OK; p++) {
            int64_t r, k;
            param_shape(c, PARAMS[p], &r, &k);
            tc_layer_tensor_name(c, li, PARAMS[p], name, sizeof name);
            st = check_tensor(&f, stpath, name, r, k, &lt[(size_t)li * N_PARAMS + p]);
        }
    if (st != TC_OK) { free(lt); goto fail; }
    snprintf(m->dtype_name, sizeof m->dtype_name, "%s", temb->dtype_name);

    /* one blob: embedding, final norm, then per layer in PARAMS order;
     * matrices in the backend's weight format */
    if (be->wtype != TC_WT_F32 && !be->upload_weight) {
        free(lt);
        st = TC_FAIL(TC_ERR_INVALID, "backend %s: 16-bit weights without upload_weight", be->name);
        goto fail;
    }
    const int wt = be->wtype;
#define MAT(n_) ((tc_wt_bytes(wt, (size_t)(n_)) + 255) & ~(size_t)255)
#define VEC(n_) (((size_t)(n_) * 4 + 255) & ~(size_t)255)
    size_t layer_bytes = 2 * VEC(d) + MAT(3 * d * d) + VEC(3 * d) + MAT(d * d) + VEC(d) + 2 * VEC(d) +
                         MAT(2 * F * d) + MAT(d * F);
    size_t total = MAT(V * d) + 2 * VEC(d) + (size_t)nl * layer_bytes;
#undef MAT
#undef VEC
    m->blob_bytes = total;
    m->blob = be->alloc(be, m->blob_bytes);
    m->layers = calloc((size_t)nl, sizeof *m->layers);
    tmp = malloc((size_t)(V * d > 3 * d * d ? V * d : 3 * d * d) * 4 + (size_t)(F * d) * 4 + 64);
    if (!m->blob || !m->layers || !tmp) { free(lt); st = TC_FAIL(TC_ERR_NOMEM, "out of memory for %zu bytes of weights", m->blob_bytes); goto fail; }
    char *cur = m->blob;
#define PUT(dst_, t_, r_, c_)                                                      \
    do {                                                                           \
        if ((st = put(be, (dst_), (t_), tmp, (r_), (c_), stpath)) != TC_OK) {      \
            free(lt);                                                              \
            goto fail;                                                             \
        }                                                                          \
    } while (0)
    const size_t w = tc_wt_bytes(wt, 1);
    m->embedding = take(&cur, V * d * w); PUT(m->embedding, temb, V, d);
    m->normf_w = take(&cur, d * 4); PUT(m->normf_w, tnw, d, 0);
    m->normf_b = take(&cur, d * 4); PUT(m->normf_b, tnb, d, 0);
    for (int li = 0; li < nl; li++) {
        const tc_st_tensor **T = &lt[(size_t)li * N_PARAMS];
        tc_layer_weights *L = &m->layers[li];
        L->norm1_w = take(&cur, d * 4); PUT(L->norm1_w, T[0], d, 0);
        L->norm1_b = take(&cur, d * 4); PUT(L->norm1_b, T[1], d, 0);
        L->qkv_w = take(&cur, 3 * d * d * w); PUT(L->qkv_w, T[2], 3 * d, d);
        L->qkv_b = take(&cur, 3 * d * 4); PUT(L->qkv_b, T[3], 3 * d, 0);
        L->out_w = take(&cur, d * d * w); PUT(L->out_w, T[4], d, d);
        L->out_b = take(&cur, d * 4); PUT(L->out_b, T[5], d, 0);
        L->norm2_w = take(&cur, d * 4); PUT(L->norm2_w, T[6], d, 0);
        L->norm2_b = take(&cur, d * 4); PUT(L->norm2_b, T[7], d, 0);
        L->w13 = take(&cur, 2 * F * d * w);
        PUT(L->w13, T[8], F, d);
        PUT((char *)L->w13 + F * d * w, T[9], F, d);
        L->w2 = take(&cur, d * F * w); PUT(L->w2, T[10], d, F);
    }
#undef PUT
    TC_ASSERT((size_t)(cur - (char *)m->blob) == total, "weights layout mismatch");
    free(lt);
    free(tmp);
    tmp = NULL;
    m->n_params = tc_config_n_params(c);
    tc_st_close(&f);
    TC_CHECK_GOTO(tc_workspace_init(m));
    TC_LOG(TC_LOG_INFO, "model", "loaded %s: %s, %lld parameters, dtype %s", dir, tc_arch_name(c->arch),
           (long long)m->n_params, m->dtype_name);
    *out = m;
    return TC_OK;
fail:
    free(tmp);
    tc_st_close(&f);
    tc_model_free(m);
    return st;
}

void tc_model_free(tc_model *m) {
    if (!m) return;
    tc_workspace_free(m);
    if (m->blob) m->be->free(m->be, m->blob);
    free(m->layers);
    free(m);
}
