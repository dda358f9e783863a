/* bpe_encode.c — text -> ids: pre-tokenize (pretok.c), then merge each word
 * with a rank priority queue, through a bounded word cache.
 *
 * The merge order is gpt-3-encoder's bpe() exactly: repeatedly take the
 * lowest rank among adjacent pairs; among pairs sharing that rank (possible
 * only through its "a,b" key aliasing, see bpe_load.c) take the last in the
 * word; merge every non-overlapping occurrence of that pair left to right
 * in one pass; pairs formed by the pass wait for the next round. With a
 * binary heap keyed (rank, position) over a linked list of symbols that is
 * O(n log n) per word instead of the reference's O(n^2) per round.
 * Not the loader (bpe_load.c) or the decoder (bpe_decode.c). */
#include "bpe_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t rank, left, right, lsym, rsym, result;
} qent;

typedef struct {
    int32_t *sym, *prev, *next; // [cap] symbol ids and links; sym -1: merged away
    size_t cap;
    qent *heap, *batch;
    size_t heap_n, heap_cap, batch_cap;
} scratch;

typedef struct {
    tc_bpe *bpe;
    int32_t *ids;
    size_t n, cap;
    scratch sc;
} enc_ctx;

static int qless(const qent *a, const qent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static tc_status heap_push(scratch *sc, qent e) {
    if (sc->heap_n == sc->heap_cap) {
        size_t nc = sc->heap_cap ? 2 * sc->heap_cap : 64;
        qent *nh = realloc(sc->heap, nc * sizeof *nh);
        if (!nh) return TC_FAIL(TC_ERR_NOMEM, "tokenizer: out of memory");
        sc->heap = nh;
        sc->heap_cap = nc;
    }
    size_t i = sc->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!qless(&e, &sc->heap[p])) break;
        sc->heap[i] = sc->heap[p];
        i = p;
    }
    sc->heap[i] = e;
    return TC_OK;
}

static qent heap_pop(scratch *sc) {
    qent top = sc->heap[0], last = sc->heap[--sc->heap_n];
    size_t i = 0, n = sc->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && qless(&sc->heap[c + 1], &sc->heap[c])) c++;
        if (!qless(&sc->heap[c], &last)) break;
        sc->heap[i] = sc->heap[c];
        i = c;
    }
    if (n > 0) sc->heap[i] = last;
    return top;
}

static tc_status push_pair(const tc_bpe *bpe, scratch *sc, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return TC_OK;
    const tc_bpe_pair *p = tc_bpe_pair_find(bpe, sc->sym[l], sc->sym[r]);
    if (!p) return TC_OK;
    return heap_push(sc, (qent){p->rank, l, r, sc->sym[l], sc->sym[r], p->result});
}

static int still_there(const scratch *sc, const qent *e) {
    return sc->sym[e->left] == e->lsym && sc->next[e->left] == e->right && sc->sym[e->right] == e->rsym;
}

static tc_status scratch_reserve(scratch *sc, size_t n) {
    if (n <= sc->cap) return TC_OK;
    size_t nc = sc->cap ? sc->cap : 64;
    while (nc < n) nc *= 2;
    int32_t *s = realloc(sc->sym, nc * sizeof *s);
    if (s) sc->sym = s;
    int32_t *p = realloc(sc->prev, nc * sizeof *p);
    if (p) sc->prev = p;
    int32_t *x = realloc(sc->next, nc * sizeof *x);
    if (x) sc->next = x;
    qent *b = realloc(sc->batch, nc * sizeof *b);
    if (b) sc->batch = b;
    if (!s || !p || !x || !b) return TC_FAIL(TC_ERR_NOMEM, "tokenizer: out of memory");
    sc->cap = sc->batch_cap = nc;
    return TC_OK;
}

static void scratch_free(scratch *sc) {
    free(sc->sym);
    free(sc->prev);
    free(sc->next);
    free(sc->heap);
    free(sc->batch);
}

static tc_status out_reserve(enc_ctx *c, size_t more) {
    if (c->n + more <= c->cap) return TC_OK;
    size_t nc = c->cap ? c->cap : 256;
    while (nc < c->n + more) nc *= 2;
    int32_t *ni = realloc(c->ids, nc * sizeof *ni);
    if (!ni) return TC_FAIL(TC_ERR_NOMEM, "tokenizer: out of memory");
    c->ids = ni;
    c->cap = nc;
    return TC_OK;
}

/* Merges one word (n >= 2 bytes) and appends its ids to c. */
static tc_status bpe_word(enc_ctx *c, const uint8_t *w, size_t n) {
    const tc_bpe *bpe = c->bpe;
    scratch *sc = &c->sc;
    if (n > (size_t)INT32_MAX - 1) /* symbol positions are int32 */
        return TC_FAIL(TC_ERR_INVALID, "tokenize: a word of %zu bytes without a break (at most %d)", n, INT32_MAX - 1);
    TC_CHECK(scratch_reserve(sc, n));
    for (size_t i = 0; i < n; i++) {
        sc->sym[i] = bpe->byte_id[w[i]];
        sc->prev[i] = (int32_t)i - 1;
        sc->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    sc->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) TC_CHECK(push_pair(bpe, sc, (int32_t)i, (int32_t)i + 1));

    while (sc->heap_n > 0) {
        qent e = heap_pop(sc);
        if (!still_there(sc, &e)) continue;
        /* all live occurrences of the lowest rank, in word order */
        size_t nb = 0;
        sc->batch[nb++] = e;
        while (sc->heap_n > 0 && sc->heap[0].rank == e.rank) {
            qent f = heap_pop(sc);
            if (still_there(sc, &f)) sc->batch[nb++] = f;
        }
        int32_t cl = sc->batch[nb - 1].lsym, cr = sc->batch[nb - 1].rsym;
        for (size_t k = 0; k < nb; k++) {
            qent *b = &sc->batch[k];
            if (b->lsym != cl || b->rsym != cr) {
                TC_CHECK(heap_push(sc, *b)); /* an aliased pair: a later round */
                continue;
            }
            if (!still_there(sc, b)) continue; /* overlapped by the previous merge */
            int32_t l = b->left, r = b->right;
            sc->sym[l] = b->result;
            sc->next[l] = sc->next[r];
            if (sc->next[r] >= 0) sc->prev[sc->next[r]] = l;
            sc->sym[r] = -1;
            TC_CHECK(push_pair(bpe, sc, sc->prev[l], l));
            TC_CHECK(push_pair(bpe, sc, l, sc->next[l]));
        }
    }
    TC_CHECK(out_reserve(c, n));
    for (int32_t i = 0; i >= 0; i = sc->next[i]) c->ids[c->n++] = sc->sym[i];
    return TC_OK;
}

static tc_status encode_word(void *ctx, const uint8_t *w, size_t n) {
    enc_ctx *c = ctx;
    tc_bpe *bpe = c->bpe;
    if (n == 1) {
        TC_CHECK(out_reserve(c, 1));
        c->ids[c->n++] = bpe->byte_id[w[0]];
        return TC_OK;
    }
    tc_bpe_cache_slot *slot = NULL;
    uint64_t h = 0;
    if (n <= TC_BPE_CACHE_WORD) {
        h = tc_bpe_hash(bpe->hash_seed, w, n);
        slot = &bpe->cache[h & (TC_BPE_CACHE_SLOTS - 1)];
        /* a busy cache is skipped, never waited for */
        if (pthread_mutex_trylock(&bpe->cache_mu) == 0) {
            int hit = slot->hash == h && slot->len == n && memcmp(slot->word, w, n) == 0;
            if (hit && out_reserve(c, slot->n_ids) == TC_OK) {
                memcpy(c->ids + c->n, slot->ids, slot->n_ids * sizeof *c->ids);
                c->n += slot->n_ids;
            } else {
                hit = 0;
            }
            pthread_mutex_unlock(&bpe->cache_mu);
            if (hit) return TC_OK;
        }
    }
    size_t start = c->n;
    TC_CHECK(bpe_word(c, w, n));
    if (slot && c->n - start <= TC_BPE_CACHE_IDS && pthread_mutex_trylock(&bpe->cache_mu) == 0) {
        slot->hash = h;
        slot->len = (uint8_t)n;
        slot->n_ids = (uint8_t)(c->n - start);
        memcpy(slot->word, w, n);
        memcpy(slot->ids, c->ids + start, (c->n - start) * sizeof *c->ids);
        pthread_mutex_unlock(&bpe->cache_mu);
    }
    return TC_OK;
}

tc_status tc_bpe_encode(tc_bpe *bpe, const char *text, size_t len, int32_t **ids, size_t *n) {
    enc_ctx c = {.bpe = bpe};
    *ids = NULL;
    *n = 0;
    tc_status st = out_reserve(&c, len / 3 + 16);
    if (st == TC_OK) st = tc_pretok_run(bpe->pretok, (const uint8_t *)text, len, encode_word, &c);
    scratch_free(&c.sc);
    if (st != TC_OK) {
        free(c.ids);
        return st;
    }
    *ids = c.ids;
    *n = c.n;
    return TC_OK;
}
