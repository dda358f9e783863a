/* config.c — config.json parsing (cJSON), validation and presets. */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/json_util.h"

const char *tc_arch_name(tc_arch a) {
    switch (a) {
    case TC_ARCH_TCONST: return "tconstformer";
    case TC_ARCH_TLIN: return "tlinformer";
    case TC_ARCH_TRANSFORMER: return "transformer";
    }
    return "?";
}

tc_status tc_arch_parse(const char *s, tc_arch *out) {
    for (int a = 0; a <= TC_ARCH_TRANSFORMER; a++)
        if (strcmp(s, tc_arch_name((tc_arch)a)) == 0) { *out = (tc_arch)a; return TC_OK; }
    return TC_FAIL(TC_ERR_INVALID, "unknown architecture '%s' (expected tconstformer, tlinformer or transformer)", s);
}

int tc_config_n_layers(const tc_model_config *c) { return c->n_block * c->inner_depth; }

int64_t tc_config_n_params(const tc_model_config *c) {
    int64_t d = c->n_embd, F = c->ffn_hidden;
    int64_t layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + 3 * F * d;
    int64_t p = (int64_t)tc_config_n_layers(c) * layer + 2 * d + (int64_t)c->vocab_size * d;
    if (!c->tie_word_embeddings) p += (int64_t)c->vocab_size * d;
    return p;
}

#define LIMIT_DIM (1 << 20)

tc_status tc_config_validate(const tc_model_config *c) {
    if (c->vocab_size < 2 || c->vocab_size > (1 << 24)) return TC_FAIL(TC_ERR_INVALID, "config: vocab_size %d out of range [2, 16777216]", c->vocab_size);
    if (c->n_embd < 2 || c->n_embd > 65536) return TC_FAIL(TC_ERR_INVALID, "config: n_embd %d out of range [2, 65536]", c->n_embd);
    if (c->n_head < 1 || c->n_embd % c->n_head != 0)
        return TC_FAIL(TC_ERR_INVALID, "config: n_head %d must be >= 1 and divide n_embd %d", c->n_head, c->n_embd);
    if ((c->n_embd / c->n_head) % 2 != 0)
        return TC_FAIL(TC_ERR_INVALID, "config: head dim n_embd/n_head = %d must be even for interleaved RoPE", c->n_embd / c->n_head);
    if (c->n_block < 1 || c->n_block > 1024) return TC_FAIL(TC_ERR_INVALID, "config: n_block %d out of range [1, 1024]", c->n_block);
    if (c->ffn_hidden < 1 || c->ffn_hidden > LIMIT_DIM) return TC_FAIL(TC_ERR_INVALID, "config: ffn_hidden %d out of range", c->ffn_hidden);
    if (c->arch != TC_ARCH_TRANSFORMER) {
        if (c->inner_depth < 2 || c->inner_depth > 1024)
            return TC_FAIL(TC_ERR_INVALID, "config: block_inner_depth %d must be >= 2 (compress + hidden... + restore)", c->inner_depth);
        if (c->history_window < 1 || c->history_window > LIMIT_DIM)
            return TC_FAIL(TC_ERR_INVALID, "config: history_window %d out of range [1, %d]", c->history_window, LIMIT_DIM);
        if (c->generate_window < 1 || c->generate_window > LIMIT_DIM)
            return TC_FAIL(TC_ERR_INVALID, "config: generate_window %d out of range [1, %d]", c->generate_window, LIMIT_DIM);
    } else if (c->inner_depth != 1) {
        return TC_FAIL(TC_ERR_INVALID, "config: internal: transformer inner depth must be 1");
    }
    if (!(c->rope_base > 1.0f) || !isfinite(c->rope_base)) return TC_FAIL(TC_ERR_INVALID, "config: rope_base %g must be > 1", c->rope_base);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps)) return TC_FAIL(TC_ERR_INVALID, "config: norm_eps %g must be > 0", c->norm_eps);
    if (!c->tie_word_embeddings) return TC_FAIL(TC_ERR_UNSUPPORTED, "config: tie_word_embeddings=false is not supported (lm_head is tied to embedding)");
    if (c->bos_token_id < -1 || c->bos_token_id >= c->vocab_size)
        return TC_FAIL(TC_ERR_INVALID, "config: bos_token_id %d outside vocab_size %d", c->bos_token_id, c->vocab_size);
    if (c->eos_token_id < -1 || c->eos_token_id >= c->vocab_size)
        return TC_FAIL(TC_ERR_INVALID, "config: eos_token_id %d outside vocab_size %d", c->eos_token_id, c->vocab_size);
    return TC_OK;
}

static tc_status get_int(const cJSON *root, const char *key, int *out, int required, int def, const char *label) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j) {
        if (required) return TC_FAIL(TC_ERR_INVALID, "%s: missing key '%s'", label, key);
        *out = def;
        return TC_OK;
    }
    if (cJSON_IsNull(j) && !required) { *out = def; return TC_OK; }
    if (!cJSON_IsNumber(j) || floor(j->valuedouble) != j->valuedouble || fabs(j->valuedouble) > 2147483647.0)
        return TC_FAIL(TC_ERR_INVALID, "%s: key '%s' must be an integer", label, key);
    *out = (int)j->valuedouble;
    return TC_OK;
}

static tc_status get_float(const cJSON *root, const char *key, float *out, float def, const char *label) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) { *out = def; return TC_OK; } /* null: unset, as get_int */
    if (!cJSON_IsNumber(j)) return TC_FAIL(TC_ERR_INVALID, "%s: key '%s' must be a number", label, key);
    *out = (float)j->valuedouble;
    return TC_OK;
}

tc_status tc_config_from_json(tc_model_config *c, const char *text, const char *label) {
    memset(c, 0, sizeof *c);
    /* 1: nothing but whitespace may follow the object (a concatenated or
     * damaged file is not read as its first half) */
    cJSON *root = cJSON_ParseWithOpts(text, NULL, 1);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return TC_FAIL(TC_ERR_INVALID, "%s: not a valid JSON object (or text follows it)", label);
    }
    tc_status st = TC_OK;
    const char *dup = tc_json_dup_key(root);
    if (dup) { st = TC_FAIL(TC_ERR_INVALID, "%s: key '%.64s' appears twice", label, dup); goto fail; }
    if (tc_json_has_nul_escape(text, strlen(text))) {
        st = TC_FAIL(TC_ERR_INVALID, "%s: holds a \\u0000 escape (a key or value cut short)", label);
        goto fail;
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "architecture");
    if (!a) { st = TC_FAIL(TC_ERR_INVALID, "%s: missing key 'architecture'", label); goto fail; }
    if (!cJSON_IsString(a)) { st = TC_FAIL(TC_ERR_INVALID, "%s: key 'architecture' must be a string", label); goto fail; }
    if (tc_arch_parse(a->valuestring, &c->arch) != TC_OK) {
        st = TC_FAIL(TC_ERR_INVALID, "%s: key 'architecture': unknown architecture '%.64s' (expected tconstformer, tlinformer or transformer)", label, a->valuestring);
        goto fail;
    }
    int is_tr = c->arch == TC_ARCH_TRANSFORMER;
    TC_CHECK_GOTO(get_int(root, "vocab_size", &c->vocab_size, 1, 0, label));
    TC_CHECK_GOTO(get_int(root, "n_embd", &c->n_embd, 1, 0, label));
    TC_CHECK_GOTO(get_int(root, "n_head", &c->n_head, 1, 0, label));
    TC_CHECK_GOTO(get_int(root, "n_block", &c->n_block, 1, 0, label));
    TC_CHECK_GOTO(get_int(root, "ffn_hidden", &c->ffn_hidden, 1, 0, label));
    if (is_tr) {
        c->inner_depth = 1;
        TC_CHECK_GOTO(get_int(root, "history_window", &c->history_window, 0, 0, label));
        TC_CHECK_GOTO(get_int(root, "generate_window", &c->generate_window, 0, 0, label));
    } else {
        TC_CHECK_GOTO(get_int(root, "block_inner_depth", &c->inner_depth, 1, 0, label));
        TC_CHECK_GOTO(get_int(root, "history_window", &c->history_window, 1, 0, label));
        TC_CHECK_GOTO(get_int(root, "generate_window", &c->generate_window, 1, 0, label));
    }
    TC_CHECK_GOTO(get_float(root, "rope_base", &c->rope_base, 10000.0f, label));
    TC_CHECK_GOTO(get_float(root, "norm_eps", &c->norm_eps, 1e-5f, label));
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tie && !cJSON_IsBool(tie)) { st = TC_FAIL(TC_ERR_INVALID, "%s: key 'tie_word_embeddings' must be true or false", label); goto fail; }
    c->tie_word_embeddings = tie ? cJSON_IsTrue(tie) : 1;
    /* DESIGN §3 gives these no default: a config without them would run
     * generations that never stop at EOS. -1 or null: the model has none */
    static const char *const special[2] = {"bos_token_id", "eos_token_id"};
    for (int k = 0; k < 2; k++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, special[k]);
        if (!j) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: missing key '%s' (-1 or null: the model has none)", label, special[k]);
            goto fail;
        }
        TC_CHECK_GOTO(get_int(root, special[k], k ? &c->eos_token_id : &c->bos_token_id, 0, -1, label));
    }
    c->head_dim = c->n_head > 0 ? c->n_embd / c->n_head : 0;
    st = tc_config_validate(c);
    if (st != TC_OK) {
        char msg[900];
        snprintf(msg, sizeof msg, "%s", tc_error_get() ? tc_error_get() : "invalid");
        tc_error_set("%s: %s", label, msg);
    }
fail:
    cJSON_Delete(root);
    return st;
}

tc_status tc_config_load(tc_model_config *c, const char *path) {
    /* non-blocking open, then a regular file only: a FIFO or a directory
     * in its place is an error, not a hang or "not JSON" */
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return TC_FAIL(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return TC_FAIL(TC_ERR_INVALID, "%s: not a regular file", path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return TC_FAIL(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) { free(buf); fclose(f); return TC_FAIL(TC_ERR_INVALID, "%s: larger than 16 MB", path); }
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return TC_FAIL(TC_ERR_NOMEM, "out of memory"); }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096) break;
    }
    if (ferror(f)) {
        const int e = errno;
        free(buf);
        fclose(f);
        return TC_FAIL(TC_ERR_IO, "%s: read error: %s", path, strerror(e));
    }
    fclose(f);
    buf[n] = 0;
    if (strlen(buf) != n) { free(buf); return TC_FAIL(TC_ERR_INVALID, "%s: contains a NUL byte", path); }
    tc_status st = tc_config_from_json(c, buf, path);
    free(buf);
    return st;
}

tc_status tc_config_save(const tc_model_config *c, const char *path) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "architecture", tc_arch_name(c->arch));
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(r, "n_embd", c->n_embd);
    cJSON_AddNumberToObject(r, "n_head", c->n_head);
    cJSON_AddNumberToObject(r, "n_block", c->n_block);
    if (c->arch != TC_ARCH_TRANSFORMER) cJSON_AddNumberToObject(r, "block_inner_depth", c->inner_depth);
    cJSON_AddNumberToObject(r, "ffn_hidden", c->ffn_hidden);
    if (c->arch != TC_ARCH_TRANSFORMER) {
        cJSON_AddNumberToObject(r, "history_window", c->history_window);
        cJSON_AddNumberToObject(r, "generate_window", c->generate_window);
    }
    cJSON_AddNumberToObject(r, "rope_base", c->rope_base);
    cJSON_AddNumberToObject(r, "norm_eps", c->norm_eps);
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddNumberToObject(r, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(r, "eos_token_id", c->eos_token_id);
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "wb");
    if (!f) { free(s); return TC_FAIL(TC_ERR_IO, "%s: cannot create: %s", path, strerror(errno)); }
    int ok = fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    free(s);
    if (fclose(f) != 0 || !ok) return TC_FAIL(TC_ERR_IO, "%s: write failed", path);
    return TC_OK;
}

tc_status tc_config_preset(tc_model_config *c, const char *preset, tc_arch arch) {
    memset(c, 0, sizeof *c);
    c->arch = arch;
    c->rope_base = 10000.0f;
    c->norm_eps = 1e-5f;
    c->tie_word_embeddings = 1;
    if (strcmp(preset, "tiny") == 0) {
        /* the built-in model: fast enough for every test and a 1M-token sync */
        c->vocab_size = 512; c->n_embd = 64; c->n_head = 4; c->ffn_hidden = 192;
        c->n_block = 2; c->inner_depth = 4; c->history_window = 32; c->generate_window = 32;
    } else if (strcmp(preset, "small") == 0) {
        c->vocab_size = 8192; c->n_embd = 256; c->n_head = 8; c->ffn_hidden = 768;
        c->n_block = 2; c->inner_depth = 4; c->history_window = 128; c->generate_window = 128;
    } else if (strcmp(preset, "paper-41m") == 0) {
        /* TConstFormer paper: 40,982,544 parameters with the tied head */
        c->vocab_size = 50257; c->n_embd = 432; c->n_head = 12; c->ffn_hidden = 1280;
        c->n_block = 2; c->inner_depth = 4; c->history_window = 256; c->generate_window = 256;
    } else {
        return TC_FAIL(TC_ERR_INVALID, "unknown preset '%s' (expected tiny, small or paper-41m)", preset);
    }
    c->bos_token_id = c->vocab_size == 50257 ? 50256 : 0;
    c->eos_token_id = c->vocab_size == 50257 ? 50256 : 1;
    if (arch == TC_ARCH_TRANSFORMER) {
        /* equal size: as many layers as blocks x inner depth */
        c->n_block = c->n_block * c->inner_depth;
        c->inner_depth = 1;
    }
    c->head_dim = c->n_embd / c->n_head;
    return tc_config_validate(c);
}
