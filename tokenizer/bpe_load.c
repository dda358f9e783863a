/* bpe_load.c — reads and validates vocab.json/encoder.json and
 * merges.txt/vocab.bpe into a tc_bpe. Every malformed input is an error that
 * names the file and the key (vocab) or line (merges). Not the encoder
 * (bpe_encode.c) nor the decoder (bpe_decode.c). */
#include "bpe_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes for U+0100.. in byte order, so every token is a
 * printable string. The alphabet is U+0021..U+0143. */
static void byte_alphabet(uint32_t byte_cp[256], int16_t cp_byte[0x144]) {
    for (int i = 0; i < 0x144; i++) cp_byte[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

/* Keyed by the load's seed and ended with a full finaliser (fmix64): every
 * input bit reaches every bucket bit, so which strings share a bucket
 * depends on the seed. Without the finaliser, strings under 8 bytes that
 * agree in their low bytes landed in one bucket whatever the seed. */
uint64_t tc_bpe_hash(uint64_t seed, const uint8_t *s, size_t n) {
    uint64_t h = (0x243F6A8885A308D3ull ^ seed) ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = tc_bpe_fmix64((h ^ v) * 0xC4CEB9FE1A85EC53ull ^ seed);
    return h ? h : 1;
}

int32_t tc_bpe_lookup(const tc_bpe *bpe, const uint8_t *s, size_t n) {
    for (uint32_t i = (uint32_t)tc_bpe_hash(bpe->hash_seed, s, n) & bpe->tok_index_mask;; i = (i + 1) & bpe->tok_index_mask) {
        int32_t id = bpe->tok_index[i];
        if (id < 0) return -1;
        if (bpe->tok_len[id] == n && memcmp(bpe->tok_bytes + bpe->tok_off[id], s, n) == 0) return id;
    }
}

/* Inserts id under its bytes; returns the id already there, or -1. */
static int32_t index_insert(tc_bpe *bpe, int32_t id) {
    const uint8_t *s = bpe->tok_bytes + bpe->tok_off[id];
    size_t n = bpe->tok_len[id];
    for (uint32_t i = (uint32_t)tc_bpe_hash(bpe->hash_seed, s, n) & bpe->tok_index_mask;; i = (i + 1) & bpe->tok_index_mask) {
        int32_t o = bpe->tok_index[i];
        if (o < 0) { bpe->tok_index[i] = id; return -1; }
        if (bpe->tok_len[o] == n && memcmp(bpe->tok_bytes + bpe->tok_off[o], s, n) == 0) return o;
    }
}

/* Quotes a symbol for an error message: printable ASCII and UTF-8 as is,
 * control bytes as \xNN, cut at 48 bytes. raw: s is a JSON string literal
 * as written in the file, so its '"' and '\\' are shown as they are. */
static const char *quote_as(char *buf, size_t cap, const char *s, size_t n, int raw) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        if (i == 48) { memcpy(buf + o, "...", 3); o += 3; break; }
        uint8_t c = (uint8_t)s[i];
        if (c < 0x20 || c == 0x7F || (!raw && (c == '"' || c == '\\')))
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", c);
        else buf[o++] = (char)c;
    }
    buf[o] = 0;
    return buf;
}

static const char *quote(char *buf, size_t cap, const char *s, size_t n) { return quote_as(buf, cap, s, n, 0); }

/* Maps a symbol in the byte alphabet (UTF-8) to its raw bytes. Returns 0, or
 * the offending code point (or 0xFFFFFFFF for ill-formed UTF-8). */
static uint32_t alphabet_decode(const int16_t cp_byte[0x144], const char *s, size_t n, uint8_t *out, size_t *out_len) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len;
        const uint8_t *p = (const uint8_t *)s + i;
        if (tc_utf8_scan(p, n - i, &len) != TC_UTF8_OK) return 0xFFFFFFFFu;
        uint32_t cp = len == 1 ? p[0]
                    : len == 2 ? (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F)
                    : len == 3 ? (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F)
                               : (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
                                     (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
        if (cp >= 0x144 || cp_byte[cp] < 0) return cp ? cp : 0xFFFFFFFEu;
        out[o++] = (uint8_t)cp_byte[cp];
        i += len;
    }
    *out_len = o;
    return 0;
}

static const char *bad_char(char *buf, size_t cap, uint32_t cp) {
    if (cp == 0xFFFFFFFFu) snprintf(buf, cap, "ill-formed UTF-8");
    else if (cp == 0xFFFFFFFEu) snprintf(buf, cap, "character U+0000 is outside the GPT-2 byte alphabet");
    else snprintf(buf, cap, "character U+%04X is outside the GPT-2 byte alphabet", cp);
    return buf;
}

/* The largest tokenizer file read: far above any real one (GPT-2's are
 * 1 MB and 0.5 MB), and small enough that every count derived from a file
 * (keys, lines, commas) stays below 2^30, so the uint32 hash tables sized
 * from them cannot overflow. */
#define TC_BPE_MAX_FILE ((size_t)1 << 30)

static tc_status read_file(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return TC_FAIL(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(f);
        return TC_FAIL(TC_ERR_IO, "%s: is a directory", path);
    }
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size >= TC_BPE_MAX_FILE) {
        fclose(f);
        return TC_FAIL(TC_ERR_INVALID, "%s: %lld bytes, over the 1 GiB limit for a tokenizer file", path,
                       (long long)sb.st_size);
    }
    size_t cap = 1 << 20, n = 0;
    int too_big = 0, err = 0;
    char *b = malloc(cap + 1);
    errno = 0;
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap >= TC_BPE_MAX_FILE) { too_big = 1; break; } /* a pipe or a file still growing */
        char *nb = realloc(b, 2 * cap + 1);
        if (!nb) { free(b); b = NULL; break; }
        b = nb;
        cap *= 2;
    }
    if (ferror(f)) err = errno ? errno : EIO;
    fclose(f);
    if (!b) return TC_FAIL(TC_ERR_NOMEM, "%s: out of memory", path);
    if (err) { free(b); return TC_FAIL(TC_ERR_IO, "%s: read error: %s", path, strerror(err)); }
    if (too_big) { free(b); return TC_FAIL(TC_ERR_INVALID, "%s: over the 1 GiB limit for a tokenizer file", path); }
    b[n] = 0;
    *buf = b;
    *len = n;
    return TC_OK;
}

static void line_col(const char *text, size_t len, const char *at, int *line, int *col) {
    *line = *col = 1;
    for (const char *p = text; at && p < at && p < text + len; p++) {
        if (*p == '\n') { ++*line; *col = 1; } else ++*col;
    }
}

/* cJSON keeps a key as a C string, so a U+0000 in it (the escape \u0000,
 * or a raw NUL byte) would cut the key short unseen. Finds, in the JSON
 * text cJSON accepted, the first key of the top-level object that holds
 * one: its index among the keys (file order, which is cJSON's child order),
 * and the literal as written. -1 when there is none. */
static long find_nul_key(const char *text, size_t len, const char **lit, size_t *lit_len) {
    int depth = 0;
    long k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') depth--;
        if (c != '"') continue;
        size_t s = ++i;
        int nul = 0;
        for (; i < len && text[i] != '"'; i++) {
            if (text[i] == 0) nul = 1;
            if (text[i] == '\\' && i + 1 < len) {
                if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0) nul = 1;
                i++;
            }
        }
        size_t e = i, j = i + 1;
        while (j < len && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' || text[j] == '\r')) j++;
        if (depth != 1 || j >= len || text[j] != ':') continue; /* a value, or nested */
        if (nul) {
            *lit = text + s;
            *lit_len = e - s;
            return k;
        }
        k++;
    }
    return -1;
}

static tc_status parse_vocab(tc_bpe *bpe, const char *path, const char *text, size_t text_len,
                             const int16_t cp_byte[0x144]) {
    tc_status st = TC_OK;
    char q[256], why[96];
    const cJSON **by_id = NULL;
    const char *at = NULL; /* where parsing stopped; cJSON_GetErrorPtr is a global */
    int line, col;
    cJSON *root = cJSON_ParseWithLengthOpts(text, text_len, &at, 0);
    if (!root) {
        line_col(text, text_len, at, &line, &col);
        return TC_FAIL(TC_ERR_INVALID, "%s:%d:%d: not valid JSON", path, line, col);
    }
    /* cJSON stops after the first value; only whitespace may follow it
     * (JSON.parse in gpt-3-encoder rejects anything else too) */
    for (const char *p = at; p && p < text + text_len; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') continue;
        line_col(text, text_len, p, &line, &col);
        st = TC_FAIL(TC_ERR_INVALID, "%s:%d:%d: data after the JSON object", path, line, col);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        st = TC_FAIL(TC_ERR_INVALID, "%s: top level is not a JSON object of token -> id", path);
        goto fail;
    }
    const char *nul_lit = NULL;
    size_t nul_lit_len = 0;
    long nul_key = find_nul_key(text, text_len, &nul_lit, &nul_lit_len);
    int n = cJSON_GetArraySize(root);
    if (n <= 0) { st = TC_FAIL(TC_ERR_INVALID, "%s: no tokens", path); goto fail; }
    size_t blob = 0;
    for (const cJSON *it = root->child; it; it = it->next) blob += strlen(it->string);
    bpe->n_vocab = n;
    bpe->tok_off = malloc(sizeof *bpe->tok_off * (size_t)n);
    bpe->tok_len = calloc((size_t)n, sizeof *bpe->tok_len);
    bpe->tok_bytes = malloc(blob + 1);
    by_id = calloc((size_t)n, sizeof *by_id);
    if (!bpe->tok_off || !bpe->tok_len || !bpe->tok_bytes || !by_id) {
        st = TC_FAIL(TC_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    size_t off = 0;
    long k = 0;
    for (const cJSON *it = root->child; it; it = it->next, k++) {
        const char *key = it->string;
        size_t klen = strlen(key);
        if (!cJSON_IsNumber(it)) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: key \"%s\": id is not a number", path, quote(q, sizeof q, key, klen));
            goto fail;
        }
        double d = it->valuedouble;
        if (!isfinite(d) || d != floor(d)) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: key \"%s\": id %g is not an integer", path, quote(q, sizeof q, key, klen), d);
            goto fail;
        }
        if (d < 0 || d >= n) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: key \"%s\": id %.0f out of range [0, %d) (ids must be 0..n-1 for n tokens)",
                         path, quote(q, sizeof q, key, klen), d, n);
            goto fail;
        }
        int32_t id = (int32_t)d;
        if (by_id[id]) {
            char q2[256];
            st = TC_FAIL(TC_ERR_INVALID, "%s: key \"%s\": id %d is also the id of key \"%s\"", path,
                         quote(q, sizeof q, key, klen), id,
                         quote(q2, sizeof q2, by_id[id]->string, strlen(by_id[id]->string)));
            goto fail;
        }
        by_id[id] = it;
        if (k == nul_key) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: key #%ld \"%s\" (id %d): character U+0000 is outside the GPT-2 byte alphabet",
                         path, k + 1, quote_as(q, sizeof q, nul_lit, nul_lit_len, 1), id);
            goto fail;
        }
        if (klen == 0) { st = TC_FAIL(TC_ERR_INVALID, "%s: empty key (id %d)", path, id); goto fail; }
        size_t blen;
        uint32_t bad = alphabet_decode(cp_byte, key, klen, bpe->tok_bytes + off, &blen);
        if (bad) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: key \"%s\": %s", path, quote(q, sizeof q, key, klen),
                         bad_char(why, sizeof why, bad));
            goto fail;
        }
        bpe->tok_off[id] = (uint32_t)off;
        bpe->tok_len[id] = (uint32_t)blen;
        if (blen > bpe->max_tok_len) bpe->max_tok_len = blen;
        off += blen;
    }
    size_t cap = 1; /* n < 2^30 (read_file's limit): cap fits tok_index_mask */
    while (cap < 2 * (size_t)n) cap <<= 1;
    bpe->tok_index = malloc(sizeof *bpe->tok_index * cap);
    if (!bpe->tok_index) { st = TC_FAIL(TC_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    memset(bpe->tok_index, 0xFF, sizeof *bpe->tok_index * cap);
    bpe->tok_index_mask = (uint32_t)(cap - 1);
    for (int32_t id = 0; id < n; id++) {
        if (index_insert(bpe, id) >= 0) {
            const char *key = by_id[id]->string;
            st = TC_FAIL(TC_ERR_INVALID, "%s: key \"%s\" appears twice", path, quote(q, sizeof q, key, strlen(key)));
            goto fail;
        }
    }
    uint32_t byte_cp[256];
    int16_t unused[0x144];
    byte_alphabet(byte_cp, unused);
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        bpe->byte_id[b] = tc_bpe_lookup(bpe, &c, 1);
        if (bpe->byte_id[b] < 0) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: no token for byte 0x%02X (key \"\\u%04X\"); byte-level BPE needs all 256",
                         path, b, byte_cp[b]);
            goto fail;
        }
    }
fail:
    free(by_id);
    cJSON_Delete(root);
    return st;
}

/* Sets the rank of pair (a, b) to at least `rank`. */
static tc_status pair_raise(tc_bpe *bpe, int32_t a, int32_t b, int32_t rank, int32_t result, int *existed) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = tc_bpe_pair_slot(bpe, key);; i = (i + 1) & bpe->pairs_mask) {
        tc_bpe_pair *p = &bpe->pairs[i];
        if (p->key == key) {
            if (rank > p->rank) p->rank = rank;
            *existed = 1;
            return TC_OK;
        }
        if (p->key == UINT64_MAX) {
            *p = (tc_bpe_pair){key, rank, result};
            *existed = 0;
            return TC_OK;
        }
    }
}

/* gpt-3-encoder keys its ranks by String([a, b]) == a + "," + b, so a pair
 * (x, y) with x + "," + y equal to some merge's key gets that merge's rank
 * even when (x, y) is no merge at all (for GPT-2: 11 pairs such as ('",',
 * '"') taking the rank of ('"', ',"')), and where keys repeat the last merge
 * wins. Reproduced here: every comma of every key is tried as the split. A
 * split whose concatenation is no token is skipped (node would emit an
 * undefined id). */
static tc_status add_comma_aliases(tc_bpe *bpe, const char *path, const int32_t *ma, const int32_t *mb,
                                   const int32_t *line_of, int32_t n_merges) {
    /* each split tried hashes its key: bytes hashed, bounded so that a
     * crafted file (merges of long comma runs: commas x length per merge)
     * is refused in well under a second rather than loading for hours.
     * GPT-2's merges need ~10^5 of the 2^28 */
    uint64_t work = 0;
    const uint64_t budget = (uint64_t)1 << 28;
    uint8_t *key = malloc(2 * bpe->max_tok_len + 1);
    uint8_t *cat = malloc(2 * bpe->max_tok_len);
    if (!key || !cat) { free(key); free(cat); return TC_FAIL(TC_ERR_NOMEM, "merges: out of memory"); }
    for (int32_t r = 0; r < n_merges; r++) {
        size_t la = bpe->tok_len[ma[r]], lb = bpe->tok_len[mb[r]];
        memcpy(key, bpe->tok_bytes + bpe->tok_off[ma[r]], la);
        key[la] = ',';
        memcpy(key + la + 1, bpe->tok_bytes + bpe->tok_off[mb[r]], lb);
        size_t kl = la + 1 + lb;
        for (size_t p = 1; p + 1 < kl; p++) {
            if (key[p] != ',' || p == la) continue;
            if ((work += kl) > budget) {
                free(key);
                free(cat);
                return TC_FAIL(TC_ERR_INVALID,
                               "%s:%d: merges of tokens with this many commas (this one %zu bytes) are more than the "
                               "loader aliases (2^28 bytes looked up in all); not a GPT-2 style merges file?",
                               path, line_of[r], kl);
            }
            int32_t x = tc_bpe_lookup(bpe, key, p), y = tc_bpe_lookup(bpe, key + p + 1, kl - p - 1);
            if (x < 0 || y < 0) continue;
            memcpy(cat, key, p);
            memcpy(cat + p, key + p + 1, kl - p - 1);
            int32_t xy = tc_bpe_lookup(bpe, cat, kl - 1);
            if (xy < 0) continue;
            int existed;
            pair_raise(bpe, x, y, r, xy, &existed);
        }
    }
    free(key);
    free(cat);
    return TC_OK;
}

static tc_status parse_merges(tc_bpe *bpe, const char *path, char *text, size_t len, const int16_t cp_byte[0x144]) {
    tc_status st = TC_OK;
    char q[256], q2[256], why[96];
    size_t n_lines = 1, n_commas = 0;
    for (size_t i = 0; i < len; i++) {
        n_lines += text[i] == '\n';
        n_commas += text[i] == ',';
    }
    int32_t *ma = malloc(sizeof *ma * n_lines), *mb = malloc(sizeof *mb * n_lines);
    int32_t *line_of = malloc(sizeof *line_of * n_lines);
    uint8_t *sym = malloc(len + 1);
    size_t cap = 16; /* n_lines + n_commas <= len + 1 <= 2^30 (read_file's limit): cap fits pairs_mask */
    while (cap < 2 * (n_lines + n_commas)) cap <<= 1;
    bpe->pairs = malloc(sizeof *bpe->pairs * cap);
    if (!ma || !mb || !line_of || !sym || !bpe->pairs) { st = TC_FAIL(TC_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    memset(bpe->pairs, 0xFF, sizeof *bpe->pairs * cap);
    bpe->pairs_mask = (uint32_t)(cap - 1);

    int32_t n = 0;
    int line = 0;
    for (char *p = text, *end = text + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        line++;
        if (le > p && le[-1] == '\r') le--;
        if (line == 1 && le - p >= 8 && memcmp(p, "#version", 8) == 0) { p = next; continue; }
        if (le == p) {
            /* empty lines are allowed only at the end of the file */
            char *r = next;
            while (r < end && (*r == '\n' || *r == '\r')) r++;
            if (r == end) break;
            st = TC_FAIL(TC_ERR_INVALID, "%s:%d: empty line", path, line);
            goto fail;
        }
        char *f[3];
        size_t fl[3];
        int nf = 0;
        for (char *c = p; c < le;) {
            while (c < le && (*c == ' ' || *c == '\t')) c++;
            if (c == le) break;
            char *s = c;
            while (c < le && *c != ' ' && *c != '\t') c++;
            if (nf < 3) { f[nf] = s; fl[nf] = (size_t)(c - s); }
            nf++;
        }
        if (nf != 2) {
            st = TC_FAIL(TC_ERR_INVALID, "%s:%d: expected two symbols separated by a space, found %d: \"%s\"", path,
                         line, nf, quote(q, sizeof q, p, (size_t)(le - p)));
            goto fail;
        }
        int32_t id[2];
        for (int k = 0; k < 2; k++) {
            size_t sl;
            uint32_t bad = alphabet_decode(cp_byte, f[k], fl[k], sym, &sl);
            if (bad) {
                st = TC_FAIL(TC_ERR_INVALID, "%s:%d: symbol \"%s\": %s", path, line, quote(q, sizeof q, f[k], fl[k]),
                             bad_char(why, sizeof why, bad));
                goto fail;
            }
            id[k] = tc_bpe_lookup(bpe, sym, sl);
            if (id[k] < 0) {
                st = TC_FAIL(TC_ERR_INVALID, "%s:%d: unknown symbol \"%s\" (not a key of the vocabulary)", path, line,
                             quote(q, sizeof q, f[k], fl[k]));
                goto fail;
            }
        }
        size_t la = bpe->tok_len[id[0]], lb = bpe->tok_len[id[1]];
        memcpy(sym, bpe->tok_bytes + bpe->tok_off[id[0]], la);
        memcpy(sym + la, bpe->tok_bytes + bpe->tok_off[id[1]], lb);
        int32_t res = tc_bpe_lookup(bpe, sym, la + lb);
        if (res < 0) {
            st = TC_FAIL(TC_ERR_INVALID, "%s:%d: merge result of \"%s\" + \"%s\" is not a key of the vocabulary", path,
                         line, quote(q, sizeof q, f[0], fl[0]), quote(q2, sizeof q2, f[1], fl[1]));
            goto fail;
        }
        int existed;
        pair_raise(bpe, id[0], id[1], n, res, &existed);
        if (existed) {
            int first = 0;
            for (int32_t r = 0; r < n; r++)
                if (ma[r] == id[0] && mb[r] == id[1]) { first = line_of[r]; break; }
            st = TC_FAIL(TC_ERR_INVALID, "%s:%d: duplicate merge \"%s %s\" (first on line %d)", path, line,
                         quote(q, sizeof q, f[0], fl[0]), quote(q2, sizeof q2, f[1], fl[1]), first);
            goto fail;
        }
        ma[n] = id[0];
        mb[n] = id[1];
        line_of[n] = line;
        n++;
        p = next;
    }
    bpe->n_merges = n;
    TC_CHECK_GOTO(add_comma_aliases(bpe, path, ma, mb, line_of, n));
fail:
    free(ma);
    free(mb);
    free(line_of);
    free(sym);
    return st;
}

tc_status tc_bpe_load_files(tc_bpe **out, const char *vocab_path, const char *merges_path) {
    tc_status st = TC_OK;
    char *vtext = NULL, *mtext = NULL;
    size_t vlen, mlen;
    uint32_t byte_cp[256];
    int16_t cp_byte[0x144];
    *out = NULL;
    tc_bpe *bpe = calloc(1, sizeof *bpe);
    if (!bpe) return TC_FAIL(TC_ERR_NOMEM, "tokenizer: out of memory");
    pthread_mutex_init(&bpe->cache_mu, NULL);
    if (getrandom(&bpe->hash_seed, sizeof bpe->hash_seed, GRND_NONBLOCK) != (ssize_t)sizeof bpe->hash_seed)
        bpe->hash_seed = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)bpe; /* no entropy yet */
    byte_alphabet(byte_cp, cp_byte);
    TC_CHECK_GOTO(read_file(vocab_path, &vtext, &vlen));
    TC_CHECK_GOTO(parse_vocab(bpe, vocab_path, vtext, vlen, cp_byte));
    free(vtext);
    vtext = NULL;
    TC_CHECK_GOTO(read_file(merges_path, &mtext, &mlen));
    TC_CHECK_GOTO(parse_merges(bpe, merges_path, mtext, mlen, cp_byte));
    TC_CHECK_GOTO(tc_pretok_init(&bpe->pretok));
    bpe->cache = calloc(TC_BPE_CACHE_SLOTS, sizeof *bpe->cache);
    if (!bpe->cache) { st = TC_FAIL(TC_ERR_NOMEM, "tokenizer: out of memory"); goto fail; }
    free(mtext);
    *out = bpe;
    return TC_OK;
fail:
    free(vtext);
    free(mtext);
    tc_bpe_free(bpe);
    return st;
}

static int is_file(const char *dir, const char *name, char *path, size_t cap) {
    struct stat sb;
    snprintf(path, cap, "%s/%s", dir, name);
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int tc_bpe_exists(const char *model_dir) {
    char p[4096];
    return (is_file(model_dir, "vocab.json", p, sizeof p) && is_file(model_dir, "merges.txt", p, sizeof p)) ||
           (is_file(model_dir, "encoder.json", p, sizeof p) && is_file(model_dir, "vocab.bpe", p, sizeof p));
}

tc_status tc_bpe_load(tc_bpe **out, const char *model_dir) {
    static const char *pairs[2][2] = {{"vocab.json", "merges.txt"}, {"encoder.json", "vocab.bpe"}};
    char v[4096], m[4096];
    *out = NULL;
    for (int k = 0; k < 2; k++) {
        int hv = is_file(model_dir, pairs[k][0], v, sizeof v), hm = is_file(model_dir, pairs[k][1], m, sizeof m);
        if (hv && hm) return tc_bpe_load_files(out, v, m);
        if (hv != hm)
            return TC_FAIL(TC_ERR_INVALID, "%s: has %s but not %s; a tokenizer needs both", model_dir,
                           pairs[k][hv ? 0 : 1], pairs[k][hv ? 1 : 0]);
    }
    return TC_FAIL(TC_ERR_UNSUPPORTED, "%s: no tokenizer (vocab.json + merges.txt or encoder.json + vocab.bpe); "
                   "the model takes token ids only", model_dir);
}

void tc_bpe_free(tc_bpe *bpe) {
    if (!bpe) return;
    tc_pretok_free(bpe->pretok);
    pthread_mutex_destroy(&bpe->cache_mu);
    free(bpe->cache);
    free(bpe->tok_off);
    free(bpe->tok_len);
    free(bpe->tok_bytes);
    free(bpe->tok_index);
    free(bpe->pairs);
    free(bpe);
}

int32_t tc_bpe_vocab_size(const tc_bpe *bpe) { return bpe->n_vocab; }
size_t tc_bpe_max_token_len(const tc_bpe *bpe) { return bpe->max_tok_len; }

const uint8_t *tc_bpe_token_bytes(const tc_bpe *bpe, int32_t id, size_t *len) {
    if (id < 0 || id >= bpe->n_vocab) return NULL;
    *len = bpe->tok_len[id];
    return bpe->tok_bytes + bpe->tok_off[id];
}
