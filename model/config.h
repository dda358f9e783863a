/* config.h — the model's config.json: parsing, validation, presets.
 *
 * Missing or inconsistent keys are errors naming the key; unknown keys are
 * ignored (DESIGN.md §3). Not the weights: see weights.h. */
#ifndef TC_MODEL_CONFIG_H
#define TC_MODEL_CONFIG_H

#include <stdint.h>

#include "../common/status.h"

typedef enum { TC_ARCH_TCONST = 0, TC_ARCH_TLIN = 1, TC_ARCH_TRANSFORMER = 2 } tc_arch;

typedef struct {
    tc_arch arch;
    int vocab_size;
    int n_embd;       /* d */
    int n_head;       /* nh */
    int head_dim;     /* d / nh, derived */
    int n_block;      /* blocks (layers for the transformer) */
    int inner_depth;  /* H + 2 layers per block; 1 for the transformer */
    int ffn_hidden;   /* F */
    int history_window;  /* W_oh */
    int generate_window; /* W_og */
    float rope_base;
    float norm_eps;
    int tie_word_embeddings;
    int bos_token_id;
    int eos_token_id;
} tc_model_config;

const char *tc_arch_name(tc_arch a);
tc_status tc_arch_parse(const char *s, tc_arch *out);

tc_status tc_config_validate(const tc_model_config *c);
tc_status tc_config_load(tc_model_config *c, const char *path);
tc_status tc_config_from_json(tc_model_config *c, const char *text, const char *label);
tc_status tc_config_save(const tc_model_config *c, const char *path);

/* Presets: tiny, small, paper-41m (see docs/models.md). */
tc_status tc_config_preset(tc_model_config *c, const char *preset, tc_arch arch);

/* Layers in total (n_block * inner_depth) and the parameter count. */
int tc_config_n_layers(const tc_model_config *c);
int64_t tc_config_n_params(const tc_model_config *c);

#endif
