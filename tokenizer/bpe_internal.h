/* bpe_internal.h — the tc_bpe layout shared by bpe_load.c, bpe_encode.c and
 * bpe_decode.c. Not a public header. */
#ifndef TC_TOKENIZER_BPE_INTERNAL_H
#define TC_TOKENIZER_BPE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "tokenizer/bpe.h"
#include "tokenizer/pretok.h"

/* Word cache: direct-mapped, fixed size, so memory is bounded
 * (TC_BPE_CACHE_SLOTS * sizeof(tc_bpe_cache_slot), about 3.3 MiB). Words
 * longer than TC_BPE_CACHE_WORD bytes or of more than TC_BPE_CACHE_IDS
 * tokens are not cached. */
#define TC_BPE_CACHE_SLOTS 32768
#define TC_BPE_CACHE_WORD 24
#define TC_BPE_CACHE_IDS 16

typedef struct {
    uint64_t hash; /* 0: empty */
    uint8_t len, n_ids;
    uint8_t word[TC_BPE_CACHE_WORD];
    int32_t ids[TC_BPE_CACHE_IDS];
} tc_bpe_cache_slot;

typedef struct {
    uint64_t key;   /* (uint64)left << 32 | right; UINT64_MAX: empty */
    int32_t rank;   /* line of the merge, 0-based: lower merges first */
    int32_t result; /* id of left+right */
} tc_bpe_pair;

struct tc_bpe {
    int32_t n_vocab;
    uint32_t *tok_off; /* [n_vocab] where each token starts in tok_bytes */
    uint32_t *tok_len; /* [n_vocab] */
    uint8_t *tok_bytes;
    size_t max_tok_len;
    int32_t *tok_index; /* open addressing bytes -> id, -1 empty */
    uint32_t tok_index_mask;
    int32_t byte_id[256]; /* id of each single-byte token */

    uint64_t hash_seed; /* per load, random: a crafted vocabulary or merges file cannot aim its tokens or pairs at one bucket */

    tc_bpe_pair *pairs;
    uint32_t pairs_mask;
    int32_t n_merges;

    tc_pretok *pretok;

    pthread_mutex_t cache_mu;
    tc_bpe_cache_slot *cache;
};

uint64_t tc_bpe_hash(uint64_t seed, const uint8_t *s, size_t n);
int32_t tc_bpe_lookup(const tc_bpe *bpe, const uint8_t *s, size_t n);

/* MurmurHash3's 64-bit finaliser: a bijection whose every output bit
 * depends on every input bit. */
static inline uint64_t tc_bpe_fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

/* First slot of pair key (a << 32 | b), seeded like the token index: a
 * merges file cannot pick ids whose pairs share a slot. */
static inline uint32_t tc_bpe_pair_slot(const tc_bpe *bpe, uint64_t key) {
    return (uint32_t)tc_bpe_fmix64(key ^ bpe->hash_seed) & bpe->pairs_mask;
}

static inline const tc_bpe_pair *tc_bpe_pair_find(const tc_bpe *bpe, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = tc_bpe_pair_slot(bpe, key);; i = (i + 1) & bpe->pairs_mask) {
        const tc_bpe_pair *p = &bpe->pairs[i];
        if (p->key == key) return p;
        if (p->key == UINT64_MAX) return NULL;
    }
}

#endif
