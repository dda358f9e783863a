/* fuzz_openai.c — the body of an OpenAI completion request
 * (tc_oai_parse, daemon/openai_parse.c) on arbitrary bytes: UTF-8, JSON,
 * duplicate keys, every field's type and range. A body it accepts must
 * give a job spec the engine can take: a prompt (text with a tokenizer,
 * else ids in [0, 2^31)), max_tokens >= 0, a temperature >= 0, top_p in
 * (0, 1], stop strings that are C strings, and refusals name their field
 * in the message. Both tokenizer settings, so text prompts are refused
 * once and taken once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/openai_parse.h"
#include "fuzz.h"

TC_FUZZ_QUIET_INITIALIZE()

static void check(const tc_oai_request *rq, int has_tokenizer) {
    const tc_job_spec *sp = &rq->sp;
    if (!sp->generate) abort();
    if (sp->text) {
        if (!has_tokenizer || strlen(sp->text) != sp->text_len) abort();
    } else {
        if (sp->n_tokens < 0 || (sp->n_tokens && !sp->tokens)) abort();
        for (int64_t i = 0; i < sp->n_tokens; i++)
            if (sp->tokens[i] < 0) abort();
    }
    if (!sp->max_tokens_unset && sp->max_tokens < 0) abort();
    if (!(sp->sp.temperature >= 0) || !(sp->sp.top_p > 0 && sp->sp.top_p <= 1) || sp->sp.top_k < 0) abort();
    for (int i = 0; i < sp->n_stop; i++)
        if (!sp->stop[i]) abort();
    for (int i = 0; i < sp->n_stop_ids; i++)
        if (sp->stop_ids[i] < 0) abort();
    if (sp->ephemeral == (sp->session_id != NULL)) abort();
    if (rq->include_usage && !rq->stream) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 20) return 0;
    for (int tok = 0; tok < 2; tok++) {
        tc_oai_request rq;
        const char *param = NULL;
        char err[600];
        const int rc = tc_oai_parse(&rq, (const char *)data, size, "fuzz-model", tok, &param, err, sizeof err);
        if (rc == 0) check(&rq, tok);
        else if (rc != 400 && rc != 404) abort();
        else if (param && strncmp(err, param, strlen(param)) != 0 && strcmp(param, "model") != 0) abort();
        tc_oai_request_free(&rq);
    }
    return 0;
}
