/* cmd_tokenize.c — `tconst tokenize` and `tconst detokenize`: text <-> GPT-2
 * token ids with the model directory's tokenizer (tokenizer/bpe.h).
 *
 *   tconst tokenize   --model DIR [--file F]   ids, space-separated, one line
 *   tconst detokenize --model DIR [--file F] [--stream]
 *
 * Input is standard input without --file. detokenize accepts ids separated
 * by spaces, newlines or commas (brackets are ignored, so a JSON array
 * works) and writes the exact bytes, so `tokenize | detokenize` gives the
 * input back, ill-formed UTF-8 included; --stream writes token by token
 * through the streaming detokenizer instead: always valid UTF-8, U+FFFD for
 * bytes that never form a character. main.c dispatches here by name; argv[0]
 * is the subcommand. Not the model-directory loader. */
#ifdef TC_HAVE_TOKENIZER

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "tokenizer/bpe.h"

int tc_cli_tokenize(int argc, char **argv);
int tc_cli_detokenize(int argc, char **argv);

typedef struct {
    const char *model, *file;
    int stream;
} tok_args;

static void tok_usage(FILE *f, const char *cmd) {
    fprintf(f,
            "usage: tconst %s --model DIR [--file F]%s\n"
            "  --model DIR  model directory with vocab.json + merges.txt or encoder.json + vocab.bpe\n"
            "  --file F     read F instead of standard input\n",
            cmd, strcmp(cmd, "detokenize") == 0 ? " [--stream]" : "");
    if (strcmp(cmd, "detokenize") == 0)
        fprintf(f, "  --stream     decode token by token as a server streams: valid UTF-8, U+FFFD for\n"
                   "               bytes that never complete a character (default: the exact bytes)\n");
}

/* 0 ok, 1 --help shown, 2 usage error */
static int tok_parse(int argc, char **argv, tok_args *a, int allow_stream) {
    const char *cmd = argv[0];
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = NULL;
        const char *eq = strchr(o, '=');
        size_t ol = eq && strncmp(o, "--", 2) == 0 ? (size_t)(eq - o) : strlen(o);
        if (eq && strncmp(o, "--", 2) == 0) v = eq + 1;
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) { tok_usage(stdout, cmd); return 1; }
        if (allow_stream && strcmp(o, "--stream") == 0) { a->stream = 1; continue; }
        const char **dst = ol == 7 && strncmp(o, "--model", 7) == 0 ? &a->model
                         : ol == 6 && strncmp(o, "--file", 6) == 0  ? &a->file : NULL;
        if (!dst) {
            fprintf(stderr, "tconst %s: unknown option '%s'\n", cmd, o);
            tok_usage(stderr, cmd);
            return 2;
        }
        if (!v) {
            if (i + 1 >= argc) { fprintf(stderr, "tconst %s: %s needs a value\n", cmd, o); return 2; }
            v = argv[++i];
        }
        if (!*v) { fprintf(stderr, "tconst %s: error: %.*s: empty value\n", cmd, (int)ol, o); return 2; }
        *dst = v;
    }
    if (!a->model) {
        fprintf(stderr, "tconst %s: --model DIR is required\n", cmd);
        tok_usage(stderr, cmd);
        return 2;
    }
    return 0;
}

static tc_status read_all(const char *path, char **buf, size_t *len) {
    FILE *f = path ? fopen(path, "rb") : stdin;
    if (!f) return TC_FAIL(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    errno = 0;
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) { free(b); b = NULL; break; }
        b = nb;
        cap *= 2;
    }
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (path) fclose(f);
    if (!b) return TC_FAIL(TC_ERR_NOMEM, "input: out of memory");
    if (err) { free(b); return TC_FAIL(TC_ERR_IO, "%s: read error: %s", path ? path : "standard input", strerror(err)); }
    *buf = b;
    *len = n;
    return TC_OK;
}

/* Standard output that fails loudly: a full disk or a broken pipe is an
 * error, never a silent exit 0 with the text cut short. */
static tc_status out_write(const void *p, size_t n) {
    if (n && fwrite(p, 1, n, stdout) != n) return TC_FAIL(TC_ERR_IO, "writing standard output: %s", strerror(errno));
    return TC_OK;
}

static tc_status out_flush(void) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) /* ferror: an earlier write failed */
        return TC_FAIL(TC_ERR_IO, "writing standard output: %s", errno ? strerror(errno) : "write error");
    return TC_OK;
}

static int tok_fail(const char *cmd, tc_status st) {
    const char *m = tc_error_get();
    fprintf(stderr, "tconst %s: error: %s\n", cmd, m ? m : tc_status_str(st));
    return 1;
}

int tc_cli_tokenize(int argc, char **argv) {
    tok_args a;
    int r = tok_parse(argc, argv, &a, 0);
    if (r) return r == 1 ? 0 : 2;
    tc_bpe *bpe = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t len, n;
    tc_status st = tc_bpe_load(&bpe, a.model);
    if (st == TC_OK) st = read_all(a.file, &text, &len);
    if (st == TC_OK) st = tc_bpe_encode(bpe, text, len, &ids, &n);
    for (size_t i = 0; st == TC_OK && i < n; i++)
        if (printf(i ? " %d" : "%d", ids[i]) < 0) st = TC_FAIL(TC_ERR_IO, "writing standard output: %s", strerror(errno));
    if (st == TC_OK) st = out_write("\n", 1);
    if (st == TC_OK) st = out_flush();
    free(ids);
    free(text);
    tc_bpe_free(bpe);
    return st == TC_OK ? 0 : tok_fail(argv[0], st);
}

/* Parses ids separated by whitespace, commas or brackets. An id is decimal
 * digits and nothing else: no sign, no NUL or other byte strtol would stop
 * at or skip. */
static tc_status parse_ids(const char *s, size_t len, int32_t **ids, size_t *n) {
    size_t cap = 256, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return TC_FAIL(TC_ERR_NOMEM, "input: out of memory");
    for (size_t i = 0; i < len;) {
        char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']') { i++; continue; }
        size_t j = i;
        while (j < len && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r' && s[j] != ',' &&
               s[j] != '[' && s[j] != ']')
            j++;
        char word[24];
        long val = -1;
        size_t d = i;
        while (d < j && s[d] >= '0' && s[d] <= '9') d++;
        if (d == j && j - i < sizeof word) {
            memcpy(word, s + i, j - i);
            word[j - i] = 0;
            char *end = NULL;
            errno = 0;
            val = strtol(word, &end, 10);
            if (errno || end != word + (j - i)) val = -1;
        }
        if (val < 0 || val > INT32_MAX) {
            char shown[32 * 4 + 1]; /* the word's first 32 bytes, control bytes as \xNN (a NUL would end it) */
            size_t o = 0;
            for (size_t b = i; b < j && b < i + 32; b++) {
                unsigned char ch = (unsigned char)s[b];
                if (ch < 0x20 || ch == 0x7F) o += (size_t)snprintf(shown + o, sizeof shown - o, "\\x%02X", ch);
                else shown[o++] = (char)ch;
            }
            shown[o] = 0;
            free(v);
            return TC_FAIL(TC_ERR_INVALID, "'%s' at byte %zu is not a token id", shown, i);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) { free(v); return TC_FAIL(TC_ERR_NOMEM, "input: out of memory"); }
            v = nv;
            cap *= 2;
        }
        v[k++] = (int32_t)val;
        i = j;
    }
    *ids = v;
    *n = k;
    return TC_OK;
}

int tc_cli_detokenize(int argc, char **argv) {
    tok_args a;
    int r = tok_parse(argc, argv, &a, 1);
    if (r) return r == 1 ? 0 : 2;
    tc_bpe *bpe = NULL;
    char *text = NULL, *out = NULL;
    int32_t *ids = NULL;
    size_t len, n, olen;
    tc_status st = tc_bpe_load(&bpe, a.model);
    if (st == TC_OK) st = read_all(a.file, &text, &len);
    if (st == TC_OK) st = parse_ids(text, len, &ids, &n);
    if (st == TC_OK && !a.stream) {
        st = tc_bpe_decode(bpe, ids, n, &out, &olen);
        if (st == TC_OK) st = out_write(out, olen);
    } else if (st == TC_OK) {
        tc_bpe_stream s;
        tc_bpe_stream_init(&s, bpe);
        size_t cap = tc_bpe_stream_max_out(bpe);
        out = malloc(cap);
        if (!out) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
        for (size_t i = 0; st == TC_OK && i < n; i++) {
            st = tc_bpe_stream_push(&s, ids[i], out, cap, &olen);
            if (st == TC_OK) st = out_write(out, olen);
            if (st == TC_OK) st = out_flush(); /* each piece as soon as it is valid text */
        }
        if (st == TC_OK) st = out_write(out, tc_bpe_stream_flush(&s, out));
    }
    if (st == TC_OK) st = out_flush();
    free(out);
    free(ids);
    free(text);
    tc_bpe_free(bpe);
    return st == TC_OK ? 0 : tok_fail(argv[0], st);
}

#endif /* TC_HAVE_TOKENIZER */
