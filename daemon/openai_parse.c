/* openai_parse.c — the body of an OpenAI completion request (openai.h)
 * into a job spec: UTF-8, one JSON object, no key twice, no \\u0000 in a
 * string (cJSON would cut it there), then every field checked and named
 * as OpenAI names it. No HTTP and no engine here, so fuzz_openai runs it
 * alone (fuzz/). */
#include "openai_parse.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/utf8.h"

/* Where the JSON text b[0..n) holds the escape \u0000 inside a string
 * (cJSON would cut the string there), or -1. */
static long nul_escape_at(const char *b, size_t n) {
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in) {
            in = b[i] == '"';
            continue;
        }
        if (b[i] == '"') in = 0;
        else if (b[i] == '\\' && i + 1 < n) {
            if (b[i + 1] == 'u' && i + 5 < n && memcmp(b + i + 2, "0000", 4) == 0) return (long)i;
            i++; /* the escaped character */
        }
    }
    return -1;
}

/* the first key of object o given twice (JSON parsers disagree on which
 * one counts), or NULL */
static const char *dup_key(const cJSON *o) {
    for (const cJSON *a = o ? o->child : NULL; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (a->string && b->string && strcmp(a->string, b->string) == 0) return a->string;
    return NULL;
}

void tc_oai_request_free(tc_oai_request *p) {
    free(p->ids);
    free(p->stop);
    free(p->stop_ids);
    free(p->text);
    cJSON_Delete(p->json);
    memset(p, 0, sizeof *p);
}

/* a JSON integer in [lo, hi] into *out: 0, or -1 */
static int json_int(const cJSON *v, double lo, double hi, long long *out) {
    if (!cJSON_IsNumber(v)) return -1;
    const double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return -1;
    *out = (long long)d;
    return 0;
}

static int ids_of(const cJSON *a, int32_t **out, int *n, const char *what, char *err, size_t en) {
    const int k = cJSON_GetArraySize(a);
    *out = malloc(sizeof(int32_t) * (size_t)(k ? k : 1));
    if (!*out) return snprintf(err, en, "out of memory"), -1;
    int i = 0;
    for (const cJSON *v = a->child; v; v = v->next, i++) {
        long long x;
        if (json_int(v, 0, 2147483647.0, &x) != 0)
            return snprintf(err, en, "%s[%d]: not a token id (an integer in [0, 2^31))", what, i), -1;
        (*out)[i] = (int32_t)x;
    }
    *n = k;
    return 0;
}

#define BAD(field, ...) (snprintf(err, en, __VA_ARGS__), *param = (field), -1)

/* the request body into p->sp: 0, or -1 with err (and *param: the field) */
static int fields(tc_oai_request *p, const cJSON *o, const char *model_id, int has_tokenizer, const char **param,
                  char *err, size_t en) {
    tc_job_spec *sp = &p->sp;
    *param = NULL;
    if (!cJSON_IsObject(o)) return BAD(NULL, "the body must be a JSON object");
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "model")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) return BAD("model", "model: must be a string");
        if (strcmp(v->valuestring, model_id) != 0)
            return snprintf(err, en, "The model `%s` does not exist: this server serves `%s` (GET /v1/models)",
                            v->valuestring, model_id),
                   *param = "model", -2;
    }
    /* prompt: a string, token ids, or a batch of one of either */
    v = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    if (!v || cJSON_IsNull(v)) return BAD("prompt", "prompt: required (a string or an array of token ids)");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) >= 1 && (cJSON_IsString(v->child) || cJSON_IsArray(v->child))) {
        if (cJSON_GetArraySize(v) > 1)
            return BAD("prompt", "prompt: a batch of %d prompts; this server takes one prompt a request",
                       cJSON_GetArraySize(v));
        v = v->child;
    }
    int n_ids = 0;
    if (cJSON_IsString(v)) {
        if (!has_tokenizer)
            return BAD("prompt", "prompt: this model has no tokenizer; send an array of token ids");
        if (!(p->text = strdup(v->valuestring))) return BAD(NULL, "out of memory");
        sp->text = p->text;
        sp->text_len = strlen(p->text);
    } else if (cJSON_IsArray(v)) {
        if (ids_of(v, &p->ids, &n_ids, "prompt", err, en) != 0) return *param = "prompt", -1;
        sp->tokens = p->ids;
        sp->n_tokens = n_ids;
    } else return BAD("prompt", "prompt: must be a string or an array of token ids");
    /* sampling: OpenAI's defaults (temperature 1) */
    sp->sp.temperature = 1.f;
    sp->sp.top_p = 1.f;
    sp->sp.top_k = 0;
    sp->max_tokens_unset = 1;
    long long x;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "max_tokens")) && !cJSON_IsNull(v)) {
        if (json_int(v, 0, 2147483647.0, &x) != 0) return BAD("max_tokens", "max_tokens: must be an integer >= 0");
        sp->max_tokens = (int)x, sp->max_tokens_unset = 0;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "temperature")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
            return BAD("temperature", "temperature: must be a number >= 0 (0: greedy)");
        sp->sp.temperature = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "top_p")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1))
            return BAD("top_p", "top_p: must be a number in (0, 1]");
        sp->sp.top_p = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "top_k")) && !cJSON_IsNull(v)) {
        if (json_int(v, -1, 2147483647.0, &x) != 0) return BAD("top_k", "top_k: must be an integer >= -1 (-1 or 0: off)");
        sp->sp.top_k = x < 0 ? 0 : (int)x;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "seed")) && !cJSON_IsNull(v)) {
        if (json_int(v, 0, 9007199254740992.0, &x) != 0)
            return BAD("seed", "seed: must be an integer in [0, 2^53] (larger ones are not exact in JSON)");
        sp->sp.seed = (uint64_t)x;
        p->seed_given = 1;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "stop")) && !cJSON_IsNull(v)) {
        if (cJSON_IsString(v)) {
            if (!(p->stop = malloc(sizeof *p->stop))) return BAD(NULL, "out of memory");
            p->stop[0] = v->valuestring;
            sp->n_stop = 1;
        } else if (cJSON_IsArray(v)) {
            const int k = cJSON_GetArraySize(v);
            if (!(p->stop = malloc(sizeof *p->stop * (size_t)(k ? k : 1)))) return BAD(NULL, "out of memory");
            int i = 0;
            for (const cJSON *e = v->child; e; e = e->next, i++) {
                if (!cJSON_IsString(e)) return BAD("stop", "stop[%d]: must be a string", i);
                p->stop[i] = e->valuestring;
            }
            sp->n_stop = k;
        } else return BAD("stop", "stop: must be a string or an array of strings");
        sp->stop = p->stop;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "stop_token_ids")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsArray(v)) return BAD("stop_token_ids", "stop_token_ids: must be an array of token ids");
        if (ids_of(v, &p->stop_ids, &sp->n_stop_ids, "stop_token_ids", err, en) != 0) return *param = "stop_token_ids", -1;
        sp->stop_ids = p->stop_ids;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "ignore_eos")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) return BAD("ignore_eos", "ignore_eos: must be true or false");
        sp->ignore_eos = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "stream")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) return BAD("stream", "stream: must be true or false");
        p->stream = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "stream_options")) && !cJSON_IsNull(v)) {
        const cJSON *iu = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
        if (!cJSON_IsObject(v) || (iu && !cJSON_IsBool(iu) && !cJSON_IsNull(iu)))
            return BAD("stream_options", "stream_options: must be an object {\"include_usage\": bool}");
        p->include_usage = cJSON_IsTrue(iu);
        if (!p->stream) return BAD("stream_options", "stream_options: only with \"stream\": true");
    }
    /* tconst: generate within a named session (its history first) */
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "session_id")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= TC_ID_MAX)
            return BAD("session_id", "session_id: must be a string of at most %d bytes", TC_ID_MAX - 1);
        snprintf(p->session_id, sizeof p->session_id, "%s", v->valuestring);
    }
    /* what this server does not do: refused by name rather than ignored */
    p->n = 1;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "n")) && !cJSON_IsNull(v)) {
        if (json_int(v, 1, TC_OAI_MAX_N, &x) != 0)
            return BAD("n", "n: must be an integer in [1, %d] (completions of the prompt)", TC_OAI_MAX_N);
        p->n = (int)x;
        if (p->n > 1 && p->session_id[0])
            return BAD("n", "n: a completion in a session (session_id) has one choice; n %d asks for more", p->n);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "best_of")) && !cJSON_IsNull(v) &&
        !(json_int(v, 1, TC_OAI_MAX_N, &x) == 0 && x == p->n))
        return BAD("best_of", "best_of: only equal to n (%d) is supported: choices are not ranked", p->n);
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "echo")) && cJSON_IsTrue(v))
        return BAD("echo", "echo: not supported (the prompt is not sent back)");
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "logprobs")) && !cJSON_IsNull(v) && !cJSON_IsFalse(v)) {
        if (json_int(v, 0, TC_LOGPROBS_MAX, &x) != 0)
            return BAD("logprobs", "logprobs: must be an integer in [0, %d] (the most likely tokens listed at each "
                                   "step, beside the sampled one)", TC_LOGPROBS_MAX);
        sp->logprobs = 1;
        sp->top_logprobs = (int)x;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "suffix")) && !cJSON_IsNull(v) &&
        !(cJSON_IsString(v) && !v->valuestring[0]))
        return BAD("suffix", "suffix: not supported");
    static const char *const zero[] = {"presence_penalty", "frequency_penalty", "repetition_penalty"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        if ((v = cJSON_GetObjectItemCaseSensitive(o, zero[i])) && !cJSON_IsNull(v) &&
            !(cJSON_IsNumber(v) && v->valuedouble == (i == 2 ? 1.0 : 0.0)))
            return BAD(zero[i], "%s: not supported (only its neutral value %s)", zero[i], i == 2 ? "1" : "0");
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "logit_bias")) && !cJSON_IsNull(v) &&
        !(cJSON_IsObject(v) && !v->child))
        return BAD("logit_bias", "logit_bias: not supported");
    sp->generate = 1;
    sp->ephemeral = !p->session_id[0];
    sp->session_id = p->session_id[0] ? p->session_id : NULL;
    return 0;
}


int tc_oai_parse(tc_oai_request *p, const char *b, size_t n, const char *model_id, int has_tokenizer,
                 const char **param, char *err, size_t en) {
    memset(p, 0, sizeof *p);
    *param = NULL;
    const size_t bad = tc_utf8_first_invalid((const uint8_t *)b, n);
    if (bad != n) return snprintf(err, en, "the body is not valid UTF-8 (at byte %zu)", bad), 400;
    const long nul = nul_escape_at(b, n);
    if (nul >= 0) return snprintf(err, en, "a NUL character (\\u0000) in a string at byte %ld is not accepted", nul), 400;
    const char *at = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(n ? b : "", n, &at, 0);
    if (!o) return snprintf(err, en, "the body is not valid JSON (at byte %ld)", at && n ? (long)(at - b) : 0L), 400;
    p->json = o;
    for (const char *q = at; q && n && q < b + n; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
            return snprintf(err, en, "the body holds more than one JSON value (at byte %ld)", (long)(q - b)), 400;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "stream_options");
    const char *dup = cJSON_IsObject(o) ? dup_key(o) : NULL;
    if (!dup && cJSON_IsObject(so)) dup = dup_key(so);
    if (dup) return snprintf(err, en, "%s: given twice", dup), *param = dup, 400;
    const int rc = fields(p, o, model_id, has_tokenizer, param, err, en);
    return rc == 0 ? 0 : rc == -2 ? 404 : 400;
}
