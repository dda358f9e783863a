/* openai.h — an OpenAI-compatible HTTP API on tconstd (opt-in:
 * --openai-listen), for the clients and tools that speak it (the openai
 * SDKs, curl, LangChain, benchmark harnesses) as vLLM's and llama.cpp's
 * servers do:
 *
 *   POST /v1/completions   JSON in; JSON out, or with "stream": true
 *                          server-sent events ("data: {chunk}" ...
 *                          "data: [DONE]")
 *   GET  /v1/models        the one model this daemon serves
 *   GET  /health           200 while ready, else 503
 *
 * A completion is the gRPC Generate on the same engine (same admission,
 * limits, metrics, sampling, stop strings); docs/api.md lists the fields
 * taken, the extensions (top_k, ignore_eos, stop_token_ids, session_id)
 * and what is refused (echo, penalties: 400 naming the field). libmicrohttpd, one thread a connection: a generation blocks its
 * own thread only. A client that hangs up cancels its generation within
 * a step (its socket is polled while it waits). No TLS, no auth: bind it
 * to a private address or put a proxy in front, as for gRPC. */
#ifndef TC_DAEMON_OPENAI_H
#define TC_DAEMON_OPENAI_H

#include "common/status.h"

struct tc_engine;
struct tc_bpe;

typedef struct {
    struct tc_engine *engine;
    const char *model_id;       /* "model" in requests and /v1/models */
    int has_tokenizer;          /* 0: prompts must be token ids, and the text out is empty */
    const struct tc_bpe *bpe;   /* the tokenizer (NULL: none): logprobs' token strings */
    long long max_body_bytes;   /* a larger request body: 413 */
    int max_connections;        /* connections (threads) at once */
    int (*ready)(void *ud);     /* 1: serving (not starting or draining); NULL: always */
    void *ud;
} tc_openai_config;

typedef struct tc_openai tc_openai;

/* listen_addr as tc_http_start's. cfg is copied (model_id too). */
tc_status tc_openai_start(tc_openai **out, const char *listen_addr, const tc_openai_config *cfg);
int tc_openai_port(const tc_openai *s);
/* Stops accepting, waits for every connection's thread (their jobs must
 * be ending: call after tc_engine_quiesce, before tc_engine_stop), frees.
 * NULL is a no-op. */
void tc_openai_stop(tc_openai *s);

#endif
