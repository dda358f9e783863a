/* openai_parse.h — a completion request's body (openai_parse.c). */
#ifndef TC_DAEMON_OPENAI_PARSE_H
#define TC_DAEMON_OPENAI_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/engine.h"

struct cJSON;

/* choices a completion request may ask for (n) */
#define TC_OAI_MAX_N 16

typedef struct {
    tc_job_spec sp; /* prompt, sampling, stops, session: for tc_engine_prepare (request_id, sink, user unset) */
    int stream, include_usage;
    int seed_given; /* else sp.sp.seed is 0: the caller draws one */
    int n;          /* choices, 1..TC_OAI_MAX_N: choice i samples with seed + i */
    /* what sp points into */
    int32_t *ids;
    const char **stop;
    int32_t *stop_ids;
    char session_id[TC_ID_MAX];
    char *text;
    struct cJSON *json;
} tc_oai_request;

/* body[0..n) into *rq (always tc_oai_request_free it): 0, or the HTTP
 * status of the refusal (400; 404 for a model this server does not serve)
 * with err and *param (the field, or NULL for the body as a whole).
 * model_id: the served name; has_tokenizer 0: text prompts refused. */
int tc_oai_parse(tc_oai_request *rq, const char *body, size_t n, const char *model_id, int has_tokenizer,
                 const char **param, char *err, size_t errlen);
void tc_oai_request_free(tc_oai_request *rq);

#endif
