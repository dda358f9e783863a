/* sampler.h — token sampling from logits: greedy, temperature, top-k,
 * top-p, with a seeded, serializable RNG (xoshiro256**, seeded by
 * splitmix64), so a journaled session resumes with the same draws.
 *
 * The draw's arithmetic is kernels/sample_math.h's: a deterministic exp
 * and integer masses, so a backend's sample op (backend.h; the GPU's
 * kernel) draws, from the logits where they are, exactly the token this
 * file draws on the host. Orders: greedy, top-k and top-p walk the
 * candidates in topk order (tc_topk_key descending, the lower id on
 * ties); plain temperature (no top-k, top_p 1) walks the vocabulary in id
 * order. A row without a finite weight (NaN / +inf max) gives the first
 * candidate. Every non-greedy draw takes one RNG output. */
#ifndef TC_MODEL_SAMPLER_H
#define TC_MODEL_SAMPLER_H

#include <stdint.h>

#include "../common/status.h"
#include "../kernels/sample_math.h"

typedef struct {
    float temperature; /* 0: greedy */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off; (0, 1] */
    uint64_t seed;
} tc_sampling_params;

/* the most likely tokens a logprobs request may ask for at each step
 * (vLLM's default --max-logprobs) */
#define TC_LOGPROBS_MAX 20

/* One sampled token's log-probability under the model's distribution --
 * the raw logits' log-softmax, before temperature, top-k and top-p (as
 * vLLM reports by default) -- and the n_top most likely tokens' (most
 * likely first, the lower id on ties). */
typedef struct {
    float logprob;
    int n_top;
    int32_t top_id[TC_LOGPROBS_MAX];
    float top_logprob[TC_LOGPROBS_MAX];
} tc_logprob;

typedef struct {
    tc_sampling_params p;
    uint64_t rng[4];
    void *scratch; /* tc_sample_scratch_bytes(V): weights, candidate lists */
    int vocab;
    /* logprobs (not part of the draw; tc_sampler_init leaves them off):
     * with lp_on, each tc_sampler_sample stores the token's tc_logprob,
     * with lp_top most likely, at lp[lp_n++] while lp_n < lp_cap. The
     * caller owns lp and zeroes lp_n. Needs the full row: a step for such
     * a sampler takes the dense path (no top-k candidates, no backend
     * draw). */
    int lp_on, lp_top, lp_n, lp_cap;
    tc_logprob *lp;
} tc_sampler;

tc_status tc_sampling_validate(const tc_sampling_params *p);
tc_status tc_sampler_init(tc_sampler *s, const tc_sampling_params *p, int vocab);
void tc_sampler_free(tc_sampler *s);
int32_t tc_sampler_sample(tc_sampler *s, const float *logits);
/* How many of a row's largest logits (tc_topk_rows's order) the sampler
 * needs to draw exactly what tc_sampler_sample draws from the full row:
 * 1 for greedy, top_k when 0 < top_k < min(vocab, TC_TOPK_MAX + 1), else 0
 * (the full logits are needed: top_p alone or plain temperature). */
int tc_sampler_topk_need(const tc_sampling_params *p, int vocab);
/* tc_sampler_sample from only the candidates ids/vals [k] (k >= the need
 * above): the same token and the same RNG advance, bit for bit. */
int32_t tc_sampler_sample_topk(tc_sampler *s, const int32_t *ids, const float *vals, int k);
/* The sample op's draw for this sampler's next token (backend.h): its
 * parameters and the random bits, advancing the RNG exactly as
 * tc_sampler_sample would (by one output; greedy: not at all). */
void tc_sampler_draw_params(tc_sampler *s, tc_draw *d);
/* The log-probability of token tok in the row's log-softmax, and the
 * n_top (<= TC_LOGPROBS_MAX) most likely tokens' (NaN logits count as
 * -inf; a row without a finite logit gives -inf everywhere). */
void tc_logprob_of(const float *logits, int vocab, int32_t tok, int n_top, tc_logprob *out);
/* Index of the largest logit, the first on ties. */
int32_t tc_argmax(const float *x, int n);
double tc_rng_uniform(uint64_t st[4]);
/* the top 53 bits of the next output (what a draw takes) */
uint64_t tc_rng_bits53(uint64_t st[4]);

#endif
