/* weights.h — a model loaded onto a backend: config + weights (fp32, or
 * the backend's 16-bit weight format for the matrices).
 *
 * Layers are numbered flat: layer (b, l) of a block is index
 * b * inner_depth + l, with l = 0 the compress layer, 1..H the hidden
 * layers and H+1 the restore layer (the transformer: one layer per block).
 * ffn.w1 and ffn.w3 are stored stacked as one [2F, d] matrix so the
 * SwiGLU input is one GEMM. */
#ifndef TC_MODEL_WEIGHTS_H
#define TC_MODEL_WEIGHTS_H

#include "../kernels/backend.h"
#include "config.h"

/* Matrices are in the backend's weight format (be->wtype: fp32, or 16-bit
 * on a GPU when asked), hence void *; vectors are fp32. */
typedef struct {
    float *norm1_w, *norm1_b; // [d]
    void *qkv_w;              // [3d, d]
    float *qkv_b;             // [3d]
    void *out_w;              // [d, d]
    float *out_b;             // [d]
    float *norm2_w, *norm2_b; // [d]
    void *w13;                // [2F, d]  (w1 rows then w3 rows)
    void *w2;                 // [d, F]
} tc_layer_weights;

typedef struct tc_model {
    tc_model_config cfg;
    tc_backend *be;
    char dtype_name[16];    /* dtype of the file on disk */
    void *embedding;        // [V, d], be->wtype
    float *normf_w, *normf_b; // [d]
    tc_layer_weights *layers; // [n_block * inner_depth]
    void *blob;             /* one backend allocation holding everything */
    size_t blob_bytes;
    int64_t n_params;
    /* a fingerprint of model.safetensors (its size, its first 64 KiB --
     * the header -- and 64 blocks of 4 KiB spread over the rest, FNV-1a):
     * the coordinator checks that every worker, and every restart of one,
     * serves the same weights */
    uint64_t weights_digest;
    struct tc_workspace *ws; /* [TC_WS_THREADS] scratch (model/forward.c) */
} tc_model;

/* Loads DIR/config.json and DIR/model.safetensors onto `be`. Every tensor
 * is checked for presence, shape and dtype before use; errors name the
 * file and tensor. */
tc_status tc_model_load(tc_model **out, const char *dir, tc_backend *be);
void tc_model_free(tc_model *m);

/* Tensor name of parameter `p` (e.g. "qkv_proj.weight") of flat layer li. */
void tc_layer_tensor_name(const tc_model_config *c, int li, const char *p, char *buf, size_t n);

/* Writes a seeded random-init model directory (config.json +
 * model.safetensors). Deterministic across machines: integer PRNG, exact
 * float scaling. */
tc_status tc_model_init_random(const tc_model_config *c, uint64_t seed, const char *dtype, const char *dir);

/* The built-in tiny model's directory, created on first use. */
tc_status tc_model_builtin_dir(char *dir, size_t n);

#endif
