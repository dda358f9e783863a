/* test_bpe_unit.c — tc_tokenizer_unit WORKDIR: tokenizer tests that need no
 * network and no node. The U+FFFD rule and the stream against ref_utf8.c
 * (fixed cases and random bytes split at random points), pre-tokenizer
 * splits that depend on ECMAScript's \s, the merge order on a synthetic
 * vocabulary (overlapping pairs, gpt-3-encoder's "a,b" aliasing), every
 * malformed vocab/merges file with the message it must give (trailing data,
 * U+0000 in a key, the 1 GiB file limit included), directory
 * detection, decode and stream errors, the word cache under threads.
 * Files are written under WORKDIR. Prints "N passed, M failed". */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/tokenizer/ref_utf8.h"
#include "tokenizer/bpe.h"
#include "tokenizer/bpe_internal.h"
#include "tokenizer/pretok.h"

static int n_pass, n_fail;
static const char *work;

#define EXPECT(cond, ...)                                                     \
    do {                                                                      \
        if (cond) n_pass++;                                                   \
        else {                                                                \
            n_fail++;                                                         \
            fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
        }                                                                     \
    } while (0)

/* ---- UTF-8 -------------------------------------------------------------- */

static void test_utf8_cases(void) {
    static const struct { const char *in, *out; } c[] = {
        {"abc", "abc"},
        {"caf\xC3\xA9", "caf\xC3\xA9"},
        {"\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80"},
        {"\x80", "\xEF\xBF\xBD"},
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                         /* overlong: 2 */
        {"\xE0\x80\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},         /* overlong: 3 */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},         /* surrogate */
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > U+10FFFF */
        {"\xE2\x82" "A", "\xEF\xBF\xBD" "A"},                             /* one subpart */
        {"\xF0\x9F\x98", "\xEF\xBF\xBD"},                                  /* truncated at end */
        {"\xF0\x9F\x98" "\xF0\x9F\x98\x80", "\xEF\xBF\xBD\xF0\x9F\x98\x80"},
        {"\xF5\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xE1\x80\xE2\xF0\x91\x92\xF1\xBF\x41", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "A"}, /* WHATWG */
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        uint8_t out[64];
        size_t n = tc_utf8_sanitize((const uint8_t *)c[i].in, strlen(c[i].in), out);
        EXPECT(n == strlen(c[i].out) && memcmp(out, c[i].out, n) == 0, "sanitize case %zu", i);
        n = ref_utf8_sanitize((const uint8_t *)c[i].in, strlen(c[i].in), out);
        EXPECT(n == strlen(c[i].out) && memcmp(out, c[i].out, n) == 0, "reference sanitize case %zu", i);
    }
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Random bytes shaped like UTF-8 (leads, continuations, ASCII), sanitized
 * whole vs the reference, and streamed in random pieces. */
static void test_utf8_random(void) {
    static const uint8_t pool[] = {'a', ' ', 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0,
                                   0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
    int bad_whole = 0, bad_stream = 0, bad_valid = 0;
    for (int t = 0; t < 20000; t++) {
        uint8_t in[24], want[96], got[96 + 16], piece[TC_UTF8_STREAM_OUT_MAX(24)];
        size_t n = 1 + rnd() % 20;
        for (size_t i = 0; i < n; i++) in[i] = pool[rnd() % sizeof pool];
        size_t wl = ref_utf8_sanitize(in, n, want);
        size_t gl = tc_utf8_sanitize(in, n, got);
        bad_whole += gl != wl || memcmp(got, want, wl) != 0;
        tc_utf8_stream s;
        tc_utf8_stream_init(&s);
        size_t o = 0;
        for (size_t i = 0; i < n;) {
            size_t k = 1 + rnd() % 4;
            if (k > n - i) k = n - i;
            size_t pl = tc_utf8_stream_push(&s, in + i, k, piece);
            bad_valid += !ref_utf8_valid(piece, pl);
            memcpy(got + o, piece, pl);
            o += pl;
            i += k;
        }
        o += tc_utf8_stream_flush(&s, got + o);
        bad_stream += o != wl || memcmp(got, want, wl) != 0;
    }
    EXPECT(bad_whole == 0, "tc_utf8_sanitize differs from the reference on %d inputs", bad_whole);
    EXPECT(bad_stream == 0, "stream concatenation differs from the reference on %d inputs", bad_stream);
    EXPECT(bad_valid == 0, "stream emitted ill-formed UTF-8 %d times", bad_valid);
}

/* ---- pre-tokenizer ------------------------------------------------------ */

typedef struct {
    char buf[512];
    size_t n;
} split_out;

static tc_status collect(void *ctx, const uint8_t *w, size_t n) {
    split_out *o = ctx;
    if (o->n + n + 1 < sizeof o->buf) {
        memcpy(o->buf + o->n, w, n);
        o->n += n;
        o->buf[o->n++] = '|';
        o->buf[o->n] = 0;
    }
    return TC_OK;
}

static void test_pretok(void) {
    static const struct { const char *in, *out; } c[] = {
        {"Hello world", "Hello| world|"},
        {"it's I'LL we've", "it|'s| I|'|LL| we|'ve|"},
        {"a  b", "a| | b|"},
        {"a\n\nb", "a|\n|\n|b|"},
        {"x   ", "x|   |"},
        {"abc123def", "abc|123|def|"},
        {" \xC2\xB2\xC2\xBD", " \xC2\xB2\xC2\xBD|"},            /* superscript, fraction: \p{N} */
        {"\xE3\x80\x80" "a", "\xE3\x80\x80|a|"},                /* U+3000 is \s */
        {"a\xEF\xBB\xBF" "b", "a|\xEF\xBB\xBF|b|"},             /* U+FEFF is \s in JS, not in PCRE2 */
        {"a\xC2\x85" "b", "a|\xC2\x85|b|"},                     /* U+0085 is \s in PCRE2, not in JS */
        {"!\xC2\x85?", "!\xC2\x85?|"},                          /* ... so it joins punctuation */
        {"a \xE1\xA0\x8E", "a| \xE1\xA0\x8E|"},                 /* U+180E: other in JS */
        {"x\xFF y", "x|\xFF| y|"},                              /* ill-formed byte: other */
        {" \xFF!\xE2\x82", " \xFF!\xE2\x82|"},
        {"\xF0\x9F\x98\x80\xF0\x9F\x98\x80 ok", "\xF0\x9F\x98\x80\xF0\x9F\x98\x80| ok|"},
        {"e\xCC\x81t\xC3\xA9", "e|\xCC\x81|t\xC3\xA9|"},        /* combining mark is not \p{L} */
    };
    tc_pretok *p;
    EXPECT(tc_pretok_init(&p) == TC_OK, "pretok init: %s", tc_error_get());
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        split_out o = {.n = 0};
        o.buf[0] = 0;
        tc_status st = tc_pretok_run(p, (const uint8_t *)c[i].in, strlen(c[i].in), collect, &o);
        EXPECT(st == TC_OK && strcmp(o.buf, c[i].out) == 0, "split %zu: got \"%s\" want \"%s\"", i, o.buf, c[i].out);
    }
    tc_pretok_free(p);
}

/* ---- synthetic vocabulary ------------------------------------------------ */

static void byte_char(int b, char *out) { /* GPT-2 bytes_to_unicode, as UTF-8 */
    static int cp[256], init;
    if (!init) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            int pr = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
            cp[i] = pr ? i : 256 + n++;
        }
        init = 1;
    }
    int c = cp[b];
    if (c < 0x80) { out[0] = (char)c; out[1] = 0; }
    else { out[0] = (char)(0xC0 | c >> 6); out[1] = (char)(0x80 | (c & 63)); out[2] = 0; }
}

static void write_file_n(const char *dir, const char *name, const char *text, size_t n) {
    char p[1024];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) { perror(p); exit(2); }
    fwrite(text, 1, n, f);
    fclose(f);
}

static void write_file(const char *dir, const char *name, const char *text) {
    write_file_n(dir, name, text, strlen(text));
}

/* A vocab.json of the 256 byte tokens (ids 0..255), then `extra` keys
 * (JSON-escaped already) from id 256, then `tail` raw JSON. */
static char *vocab_json(const char *const *extra, int n_extra, const char *tail) {
    static char buf[1 << 16];
    size_t o = 0;
    o += (size_t)snprintf(buf + o, sizeof buf - o, "{");
    for (int b = 0; b < 256; b++) {
        char ch[4];
        byte_char(b, ch);
        if (b == '"' || b == '\\') o += (size_t)snprintf(buf + o, sizeof buf - o, "\"\\%s\": %d,", ch, b);
        else o += (size_t)snprintf(buf + o, sizeof buf - o, "\"%s\": %d,", ch, b);
    }
    for (int i = 0; i < n_extra; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "\"%s\": %d,", extra[i], 256 + i);
    o += (size_t)snprintf(buf + o, sizeof buf - o, "%s", tail);
    if (buf[o - 1] == ',') o--;
    snprintf(buf + o, sizeof buf - o, "}");
    return buf;
}

static const char *syn_tokens[] = {"aa", "aaa", "\\\",", "\\\",\\\"", ",\\\"", "Ġa", "Ġaa"};
/* merge order: '" ,' first, then the aliased key '",,"', then ', "' */
static const char syn_merges[] = "#version: 0.2\n"
                                 "a a\n"
                                 "aa a\n"
                                 "\" ,\n"
                                 "\" ,\"\n"
                                 ", \"\n"
                                 "Ġ a\n"
                                 "Ġ aa\n";

static void expect_encode(tc_bpe *bpe, const char *text, const int32_t *want, size_t nw) {
    int32_t *ids;
    size_t n;
    tc_status st = tc_bpe_encode(bpe, text, strlen(text), &ids, &n);
    int ok = st == TC_OK && n == nw && memcmp(ids, want, n * sizeof *ids) == 0;
    char got[256] = "";
    for (size_t i = 0; st == TC_OK && i < n && strlen(got) < 200; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
    EXPECT(ok, "encode \"%s\": got%s", text, got);
    if (st == TC_OK) free(ids);
}

static void test_synthetic(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/synthetic", work);
    write_file(dir, "vocab.json", vocab_json(syn_tokens, 7, ""));
    write_file(dir, "merges.txt", syn_merges);
    tc_bpe *bpe;
    tc_status st = tc_bpe_load(&bpe, dir);
    EXPECT(st == TC_OK, "load synthetic: %s", tc_error_get());
    if (st != TC_OK) return;
    EXPECT(tc_bpe_vocab_size(bpe) == 263, "vocab size %d", tc_bpe_vocab_size(bpe));
    enum { AA = 256, AAA, DQC, DQCDQ, CDQ, SP_A, SP_AA };
    /* overlapping pairs merge left to right: aaaa -> aa aa; aaaaa -> aa aaa */
    expect_encode(bpe, "aaaa", (int32_t[]){AA, AA}, 2);
    expect_encode(bpe, "aaaaa", (int32_t[]){AA, AAA}, 2);
    expect_encode(bpe, "aaa", (int32_t[]){AAA}, 1);
    expect_encode(bpe, " aa b", (int32_t[]){SP_AA, ' ', 'b'}, 3);
    expect_encode(bpe, " a", (int32_t[]){SP_A}, 1);
    /* '","': '" ,' merges first; then ('",', '"') is no merge, but its key
     * '",,"' is that of ('"', ',"'), so gpt-3-encoder merges it too */
    expect_encode(bpe, "\",\"", (int32_t[]){DQCDQ}, 1);
    expect_encode(bpe, ",\"", (int32_t[]){CDQ}, 1);
    /* lossless and decode */
    const char *t = "aa \xFF\",\"\xE2\x82";
    int32_t *ids;
    size_t n;
    if (tc_bpe_encode(bpe, t, strlen(t), &ids, &n) == TC_OK) {
        char *back;
        size_t bl;
        EXPECT(tc_bpe_decode(bpe, ids, n, &back, &bl) == TC_OK && bl == strlen(t) && memcmp(back, t, bl) == 0,
               "decode(encode(x)) == x");
        free(back);
        free(ids);
    }
    int32_t bad[] = {1, 263};
    char *out;
    size_t ol;
    st = tc_bpe_decode(bpe, bad, 2, &out, &ol);
    EXPECT(st == TC_ERR_INVALID && strstr(tc_error_get(), "token id 263 (position 1) out of range [0, 263)"),
           "decode bad id: %s", tc_error_get());
    tc_bpe_stream s;
    tc_bpe_stream_init(&s, bpe);
    char piece[64];
    size_t pl;
    st = tc_bpe_stream_push(&s, -1, piece, sizeof piece, &pl);
    EXPECT(st == TC_ERR_INVALID && strstr(tc_error_get(), "token id -1 out of range"), "stream bad id");
    st = tc_bpe_stream_push(&s, 'a', piece, 2, &pl);
    EXPECT(st == TC_ERR_INVALID && strstr(tc_error_get(), "stream buffer of 2 bytes"), "stream small buffer");
    /* a character split across tokens is held back, then completed */
    EXPECT(tc_bpe_stream_push(&s, 0xE2, piece, sizeof piece, &pl) == TC_OK && pl == 0, "hold 1/3");
    EXPECT(tc_bpe_stream_push(&s, 0x82, piece, sizeof piece, &pl) == TC_OK && pl == 0, "hold 2/3");
    EXPECT(tc_bpe_stream_push(&s, 0xAC, piece, sizeof piece, &pl) == TC_OK && pl == 3 &&
               memcmp(piece, "\xE2\x82\xAC", 3) == 0, "emit the euro sign");
    EXPECT(tc_bpe_stream_push(&s, 0xE2, piece, sizeof piece, &pl) == TC_OK && pl == 0, "hold again");
    EXPECT(tc_bpe_stream_push(&s, 'x', piece, sizeof piece, &pl) == TC_OK && pl == 4 &&
               memcmp(piece, "\xEF\xBF\xBDx", 4) == 0, "broken sequence -> U+FFFD then x");
    EXPECT(tc_bpe_stream_push(&s, 0xF0, piece, sizeof piece, &pl) == TC_OK && pl == 0, "hold at end");
    EXPECT(tc_bpe_stream_flush(&s, piece) == 3 && memcmp(piece, "\xEF\xBF\xBD", 3) == 0, "flush -> U+FFFD");
    EXPECT(tc_bpe_stream_flush(&s, piece) == 0, "flush twice -> nothing");
    tc_bpe_free(bpe);
}

/* ---- stop-string candidates ---------------------------------------------- */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t rndn(uint32_t n) { return rnd() % n; }

/* Soundness of tc_bpe_stop_candidates: on a vocabulary of random tokens
 * built from pieces that split characters (a lone lead byte, a lone
 * continuation, bytes that are never UTF-8), random generations streamed
 * the way the engine streams them (tc_bpe_stream; an id past the
 * vocabulary as U+FFFD) first hold a stop string only after a candidate;
 * and the set is not everything. */
static void test_stop_candidates(void) {
    static const char *piece[] = {"a", "b", "c", " ", "\xC3\xA9", "\xC3", "\xA9", "\xE2\x82\xAC", "\xE2", "\x82\xAC",
                                  "\x80", "\xFF", "\xEF\xBF\xBD"};
    static const char *sp[] = {"a", "b", "c", " ", "\xC3\xA9", "\xE2\x82\xAC"}; /* well-formed pieces of stops */
    enum { NP = sizeof piece / sizeof piece[0], NT = 400 };
    static char keys[NT][64], raw[NT][32];
    const char *extra[NT];
    int n_extra = 0;
    while (n_extra < NT) {
        char r[32] = "", *k = keys[n_extra];
        int parts = 2 + (int)rndn(4);
        for (int i = 0; i < parts; i++) strcat(r, piece[rndn(NP)]);
        int dup = strlen(r) == 1;
        for (int i = 0; i < n_extra && !dup; i++) dup = !strcmp(raw[i], r);
        if (dup) continue;
        k[0] = 0;
        for (const char *c = r; *c; c++) byte_char((uint8_t)*c, k + strlen(k));
        strcpy(raw[n_extra], r);
        extra[n_extra] = k;
        n_extra++;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/stopcand", work);
    write_file(dir, "vocab.json", vocab_json(extra, NT, ""));
    write_file(dir, "merges.txt", "#version: 0.2\n");
    tc_bpe *bpe;
    tc_status st = tc_bpe_load(&bpe, dir);
    EXPECT(st == TC_OK, "load the stop-candidate vocabulary: %s", tc_error_get());
    if (st != TC_OK) return;
    const int V = tc_bpe_vocab_size(bpe);
    int32_t *cand = malloc((size_t)V * sizeof *cand);
    /* refused: not UTF-8, U+FFFD inside; more than cap */
    const char *bad1[] = {"ab\xC3"}, *bad2[] = {"x\xEF\xBF\xBDy"}, *bad3[] = {"ok", ""}, *one[] = {"b"};
    EXPECT(tc_bpe_stop_candidates(bpe, bad1, 1, cand, V) == -1, "a stop that is not UTF-8: -1");
    EXPECT(tc_bpe_stop_candidates(bpe, bad2, 1, cand, V) == -1, "a stop holding U+FFFD: -1");
    EXPECT(tc_bpe_stop_candidates(bpe, bad3, 2, cand, V) == -1, "an empty stop: -1");
    EXPECT(tc_bpe_stop_candidates(bpe, one, 1, cand, 1) == -2, "more candidates than cap: -2");
    int nb = tc_bpe_stop_candidates(bpe, one, 1, cand, V);
    int has_b = 0, has_a = 0, every_b = nb > 0;
    for (int i = 0; i < nb; i++) {
        has_b |= cand[i] == 'b', has_a |= cand[i] == 'a';
        size_t L;
        const uint8_t *t = tc_bpe_token_bytes(bpe, cand[i], &L);
        every_b &= memchr(t, 'b', L) != NULL;
        if (i) every_b &= cand[i] > cand[i - 1];
    }
    EXPECT(has_b && !has_a && every_b && nb < V / 2, "stop \"b\": %d candidates, ascending, each holding a b", nb);
    int hits = 0, runs = 0;
    char piece_out[256], text[8192];
    for (int round = 0; round < 3000; round++) {
        char stops[2][32] = {"", ""};
        const char *sv[2] = {stops[0], stops[1]};
        const int ns = 1 + (int)rndn(2);
        for (int k = 0; k < ns; k++) {
            const int parts = 1 + (int)rndn(3);
            for (int i = 0; i < parts; i++) strcat(stops[k], sp[rndn(6)]);
        }
        const int n = tc_bpe_stop_candidates(bpe, sv, ns, cand, V);
        if (n < 0) { EXPECT(0, "round %d: well-formed stops refused (%d)", round, n); break; }
        tc_bpe_stream bs;
        tc_bpe_stream_init(&bs, bpe);
        size_t tl = 0;
        for (int step = 0; step < 60 && tl < sizeof text - 512; step++) {
            const int32_t id = rndn(50) == 0 ? V : (int32_t)(rndn(3) ? 256 + rndn(NT) : rndn(256));
            size_t np = 0;
            if (tc_bpe_stream_push(&bs, id, piece_out, sizeof piece_out, &np) != TC_OK) {
                np = tc_bpe_stream_flush(&bs, piece_out); /* as the engine: U+FFFD for an id past the vocabulary */
                memcpy(piece_out + np, "\xEF\xBF\xBD", 3), np += 3;
            }
            memcpy(text + tl, piece_out, np), tl += np;
            int found = 0;
            for (int k = 0; k < ns; k++) found |= memmem(text, tl, sv[k], strlen(sv[k])) != NULL;
            if (!found) continue;
            hits++;
            EXPECT(id < V && bsearch(&id, cand, (size_t)n, sizeof *cand, cmp_i32),
                   "round %d step %d: token %d completed a stop string and is no candidate", round, step, id);
            break;
        }
        runs++;
    }
    EXPECT(hits > 1000, "stop strings met in %d of %d generations", hits, runs);
    free(cand);
    tc_bpe_free(bpe);
}

/* ---- the word cache under threads -------------------------------------- */

typedef struct {
    tc_bpe *bpe;
    int bad;
} thr_arg;

static void *thr_encode(void *p) {
    thr_arg *a = p;
    static const char text[] = "aaaa aa aaa \",\" aaaaa aa a aaaa";
    int32_t *first = NULL;
    size_t nfirst = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t *ids;
        size_t n;
        if (tc_bpe_encode(a->bpe, text, sizeof text - 1, &ids, &n) != TC_OK) { a->bad++; continue; }
        if (!first) { first = ids; nfirst = n; continue; }
        a->bad += n != nfirst || memcmp(ids, first, n * sizeof *ids) != 0;
        free(ids);
    }
    free(first);
    return NULL;
}

static void test_threads(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/synthetic", work);
    tc_bpe *bpe;
    if (tc_bpe_load(&bpe, dir) != TC_OK) return;
    pthread_t t[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (thr_arg){bpe, 0};
        pthread_create(&t[i], NULL, thr_encode, &a[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        bad += a[i].bad;
    }
    EXPECT(bad == 0, "concurrent encodes disagree %d times", bad);
    tc_bpe_free(bpe);
}

/* ---- malformed files ---------------------------------------------------- */

static int case_no;

/* Writes vocab (vocab_len bytes) + merges into a fresh directory, loads it,
 * and checks the status and that the message contains every `want`
 * fragment. */
static void expect_load_error_n(const char *vocab_name, const char *vocab, size_t vocab_len, const char *merges_name,
                                const char *merges, tc_status want_st, const char *want1, const char *want2) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/bad%02d", work, case_no++);
    mkdir(dir, 0755);
    if (vocab) write_file_n(dir, vocab_name, vocab, vocab_len);
    if (merges) write_file(dir, merges_name, merges);
    tc_bpe *bpe = NULL;
    tc_error_clear();
    tc_status st = tc_bpe_load(&bpe, dir);
    const char *m = tc_error_get() ? tc_error_get() : "";
    EXPECT(st == want_st && strstr(m, want1) && (!want2 || strstr(m, want2)),
           "case %d: status %s, message \"%s\"; want %s with \"%s\"%s%s", case_no - 1, tc_status_str(st), m,
           tc_status_str(want_st), want1, want2 ? " and " : "", want2 ? want2 : "");
    tc_bpe_free(bpe);
}

static void expect_load_error(const char *vocab_name, const char *vocab, const char *merges_name, const char *merges,
                              tc_status want_st, const char *want1, const char *want2) {
    expect_load_error_n(vocab_name, vocab, vocab ? strlen(vocab) : 0, merges_name, merges, want_st, want1, want2);
}

/* A file past the size limit is refused from its size, before it is read
 * (sparse: no disk, no time); the hash tables sized from a file's counts
 * rely on the limit. */
static void test_file_limit(void) {
    char dir[1024], p[1100];
    snprintf(dir, sizeof dir, "%s/huge", work);
    write_file(dir, "merges.txt", "#version: 0.2\n");
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    FILE *f = fopen(p, "wb");
    if (!f || ftruncate(fileno(f), ((off_t)1 << 30) + 1) != 0) { perror(p); exit(2); }
    fclose(f);
    tc_bpe *bpe = NULL;
    tc_error_clear();
    tc_status st = tc_bpe_load(&bpe, dir);
    const char *m = tc_error_get() ? tc_error_get() : "";
    EXPECT(st == TC_ERR_INVALID && strstr(m, "vocab.json: 1073741825 bytes, over the 1 GiB limit"),
           "1 GiB vocab.json: status %s, message \"%s\"", tc_status_str(st), m);
    tc_bpe_free(bpe);
    unlink(p);
    /* a directory where a file should be: an error naming it, not "read error" */
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    unlink(p);
    mkdir(p, 0755);
    char v[1100];
    snprintf(v, sizeof v, "%s/syn_vocab.json", dir);
    write_file(dir, "syn_vocab.json", vocab_json(NULL, 0, ""));
    st = tc_bpe_load_files(&bpe, v, p);
    m = tc_error_get() ? tc_error_get() : "";
    EXPECT(st == TC_ERR_IO && strstr(m, "merges.txt: is a directory"), "merges.txt a directory: %s, \"%s\"",
           tc_status_str(st), m);
    tc_bpe_free(bpe);
    rmdir(p);
}

static void test_malformed(void) {
    const char *ok_merges = "#version: 0.2\na a\n";
    const char *aa[] = {"aa"};
    char v[1 << 16];
    /* vocab.json */
    expect_load_error("vocab.json", "{\"a\": 1,\n \"b\": }", "merges.txt", ok_merges, TC_ERR_INVALID,
                      "vocab.json:2:", "not valid JSON");
    expect_load_error("vocab.json", "[1, 2, 3]", "merges.txt", ok_merges, TC_ERR_INVALID, "vocab.json: top level is not a JSON object", NULL);
    expect_load_error("vocab.json", "{}", "merges.txt", ok_merges, TC_ERR_INVALID, "vocab.json: no tokens", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"zz\": \"7\","));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "vocab.json: key \"zz\": id is not a number", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"zz\": 257.5,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "key \"zz\": id 257.5 is not an integer", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"zz\": 256,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "key \"zz\": id 256 is also the id of key \"aa\"", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"zz\": 4000,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "key \"zz\": id 4000 out of range [0, 258)", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"zz\": -1,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "key \"zz\": id -1 out of range", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"aa\": 257,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "key \"aa\" appears twice", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"a b\": 257,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID,
                      "key \"a b\": character U+0020 is outside the GPT-2 byte alphabet", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"x\\u4e2d\": 257,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "character U+4E2D is outside", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"\": 257,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID, "vocab.json: empty key (id 257)", NULL);
    expect_load_error("vocab.json", "{\"a\": 0, \"b\": 1}", "merges.txt", ok_merges, TC_ERR_INVALID,
                      "vocab.json: no token for byte 0x00 (key \"\\u0100\")", NULL);
    /* only whitespace after the object (cJSON alone stops after it) */
    snprintf(v, sizeof v, "%s\n{\"zz\": 9}", vocab_json(aa, 1, ""));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID,
                      "vocab.json:2:1: data after the JSON object", NULL);
    snprintf(v, sizeof v, "%s \r\n\t\n", vocab_json(aa, 1, ""));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_OK, "", NULL);
    /* U+0000 in a key: cJSON's C string would cut the key there */
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"a\\u0000b\": 257,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID,
                      "vocab.json: key #258 \"a\\u0000b\" (id 257): character U+0000 is outside the GPT-2 byte alphabet",
                      NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"\\u0000\": 257,"));
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_ERR_INVALID,
                      "key #258 \"\\u0000\" (id 257): character U+0000 is outside", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"\\\\u0000\": 257,")); /* a backslash, then "u0000" */
    expect_load_error("vocab.json", v, "merges.txt", ok_merges, TC_OK, "", NULL);
    snprintf(v, sizeof v, "%s", vocab_json(aa, 1, "\"a_b\": 257,"));
    size_t vl = strlen(v);
    strstr(v, "a_b")[1] = 0; /* a raw NUL byte in the key */
    expect_load_error_n("vocab.json", v, vl, "merges.txt", ok_merges, TC_ERR_INVALID,
                        "key #258 \"a\\x00b\" (id 257): character U+0000 is outside", NULL);
    /* merges.txt */
    const char *vocab = vocab_json(aa, 1, "");
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\na a\na a a\n", TC_ERR_INVALID,
                      "merges.txt:3: expected two symbols separated by a space, found 3: \"a a a\"", NULL);
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\nab\n", TC_ERR_INVALID,
                      "merges.txt:2: expected two symbols", "found 1");
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\na a\n\nb b\n", TC_ERR_INVALID,
                      "merges.txt:3: empty line", NULL);
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\na a\naa xyz\n", TC_ERR_INVALID,
                      "merges.txt:3: unknown symbol \"xyz\" (not a key of the vocabulary)", NULL);
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\nb c\n", TC_ERR_INVALID,
                      "merges.txt:2: merge result of \"b\" + \"c\" is not a key of the vocabulary", NULL);
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\na a\na a\n", TC_ERR_INVALID,
                      "merges.txt:3: duplicate merge \"a a\" (first on line 2)", NULL);
    expect_load_error("vocab.json", vocab, "merges.txt", "a \xE4\xB8\xAD\n", TC_ERR_INVALID,
                      "merges.txt:1: symbol", "character U+4E2D is outside the GPT-2 byte alphabet");
    expect_load_error("vocab.json", vocab, "merges.txt", "a \xFF\n", TC_ERR_INVALID, "merges.txt:1: symbol", "ill-formed UTF-8");
    /* the other file names, and the directory itself */
    expect_load_error("encoder.json", "[]", "vocab.bpe", ok_merges, TC_ERR_INVALID, "encoder.json: top level is not", NULL);
    expect_load_error("encoder.json", vocab, "vocab.bpe", "x yq\n", TC_ERR_INVALID, "vocab.bpe:1: unknown symbol \"yq\"", NULL);
    expect_load_error("vocab.json", vocab, "merges.txt", NULL, TC_ERR_INVALID, "has vocab.json but not merges.txt", NULL);
    expect_load_error("encoder.json", NULL, "vocab.bpe", ok_merges, TC_ERR_INVALID, "has vocab.bpe but not encoder.json", NULL);
    expect_load_error("vocab.json", NULL, "merges.txt", NULL, TC_ERR_UNSUPPORTED, "no tokenizer", "token ids only");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/bad%02d", work, case_no - 1);
    EXPECT(!tc_bpe_exists(dir), "tc_bpe_exists on an empty directory");
    snprintf(dir, sizeof dir, "%s/synthetic", work);
    EXPECT(tc_bpe_exists(dir), "tc_bpe_exists on the synthetic tokenizer");
    /* CRLF line ends, extra blank lines at the end, tabs: accepted */
    expect_load_error("vocab.json", vocab, "merges.txt", "#version: 0.2\r\na\ta\r\n\n\n", TC_OK, "", NULL);
    /* deliberately unlike gpt-3-encoder's lines.slice(1, -1) (docs/tokenizer.md):
     * a first line that is no #version header and a last line without a
     * newline are merges, not dropped */
    snprintf(dir, sizeof dir, "%s/nohdr", work);
    write_file(dir, "vocab.json", vocab);
    write_file(dir, "merges.txt", "a a");
    tc_bpe *bpe = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    tc_status st = tc_bpe_load(&bpe, dir);
    if (st == TC_OK) st = tc_bpe_encode(bpe, "aa", 2, &ids, &n);
    EXPECT(st == TC_OK && n == 1 && ids[0] == 256, "merges.txt \"a a\" without header or newline: \"aa\" -> [256] (%s)",
           st == TC_OK ? "other ids" : tc_error_get());
    free(ids);
    tc_bpe_free(bpe);
}

/* Files crafted to make loading slow: merges of long comma runs (each
 * comma a split the loader aliases, gpt-3-encoder's "a,b" keys) are
 * refused naming the line; the token index's hash is seeded per load, so
 * no file can aim its tokens at one bucket (the seeds of two loads
 * differ). */
static void test_adversarial(void) {
    enum { L = 20000 };
    char *v = malloc(1 << 17), *m = malloc(3 * L + 64);
    char *base = vocab_json(NULL, 0, "");
    size_t o = strlen(base) - 1; /* without its closing brace */
    memcpy(v, base, o);
    const int lens[2] = {L, 2 * L};
    for (int t = 0; t < 2; t++) {
        v[o++] = ',', v[o++] = '"';
        memset(v + o, ',', (size_t)lens[t]);
        o += (size_t)lens[t];
        o += (size_t)sprintf(v + o, "\": %d", 256 + t);
    }
    v[o++] = '}';
    size_t mo = (size_t)sprintf(m, "#version: 0.2\n");
    memset(m + mo, ',', L), mo += L, m[mo++] = ' ';
    memset(m + mo, ',', L), mo += L, m[mo++] = '\n', m[mo] = 0;
    expect_load_error_n("vocab.json", v, o, "merges.txt", m, TC_ERR_INVALID, "merges.txt:2:", "commas");
    free(v);
    free(m);

    char dir[1024];
    snprintf(dir, sizeof dir, "%s/seeded", work);
    write_file(dir, "vocab.json", vocab_json(syn_tokens, (int)(sizeof syn_tokens / sizeof *syn_tokens), ""));
    write_file(dir, "merges.txt", syn_merges);
    tc_bpe *a = NULL, *b = NULL;
    EXPECT(tc_bpe_load(&a, dir) == TC_OK && tc_bpe_load(&b, dir) == TC_OK, "load twice: %s", tc_error_get());
    if (a && b) {
        EXPECT(a->hash_seed != b->hash_seed, "two loads hash with different seeds (%llx)", (unsigned long long)a->hash_seed);
        const int32_t want[1] = {256};
        expect_encode(a, "aa", want, 1);
        expect_encode(b, "aa", want, 1);
    }
    tc_bpe_free(a);
    tc_bpe_free(b);

    /* 2048 seven-byte strings equal in their low 42 bits: before the hash
     * ended with a full finaliser they all shared one bucket of a 4096-slot
     * index whatever the seed. Now no bucket may hold more than 16 (a
     * random spread's largest holds about 5), under either seed. */
    enum { NS = 2048, MASK = 4095 };
    static uint16_t load[MASK + 1];
    const uint64_t seeds[2] = {1, 0x5DEECE66Dull};
    for (int si = 0; si < 2; si++) {
        memset(load, 0, sizeof load);
        int worst = 0;
        for (int i = 0; i < NS; i++) {
            uint8_t w[7] = {'a', 'b', 'c', 'd', 'e', (uint8_t)(1 | (i >> 8) << 2), (uint8_t)i};
            uint32_t slot = (uint32_t)tc_bpe_hash(seeds[si], w, sizeof w) & MASK;
            if (++load[slot] > worst) worst = load[slot];
        }
        EXPECT(worst <= 16, "seed %llx: 2048 crafted 7-byte tokens, fullest bucket %d (<= 16)", (unsigned long long)seeds[si], worst);
    }
    /* The merges' pair table is seeded too: most keys move with the seed. */
    tc_bpe s1 = {.pairs_mask = MASK, .hash_seed = seeds[0]}, s2 = {.pairs_mask = MASK, .hash_seed = seeds[1]};
    int same = 0;
    for (int i = 0; i < NS; i++) {
        uint64_t key = (uint64_t)(uint32_t)(i << 4) << 32 | (uint32_t)(NS - i);
        same += tc_bpe_pair_slot(&s1, key) == tc_bpe_pair_slot(&s2, key);
    }
    EXPECT(same < NS / 64, "pair slots depend on the seed (%d of %d keys in the same slot under two seeds)", same, NS);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s WORKDIR\n", argv[0]);
        return 2;
    }
    work = argv[1];
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", work);
    if (system(cmd) != 0) return 2;
    test_utf8_cases();
    test_utf8_random();
    test_pretok();
    test_synthetic();
    test_stop_candidates();
    test_threads();
    test_malformed();
    test_file_limit();
    test_adversarial();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
