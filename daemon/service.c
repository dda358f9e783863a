/* service.c — tconst.v1 + grpc.health.v1 + server reflection over the
 * callback server of rpc.h. Each call gets a context (ctx) shared by the
 * RPC side and, while a job runs, the engine; it is freed when both let
 * go. Unknown methods get UNIMPLEMENTED, undecodable messages
 * INVALID_ARGUMENT naming the message type. Health and reflection are in
 * service_health.c. */
#include "service.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/workq.h"
#include "../tokenizer/bpe.h"
#include "../tokenizer/utf8.h"
#include "descriptors.h"
#include "metrics.h"
#include "health.pb-c.h"
#include "reflection.pb-c.h"
#include "tconst.pb-c.h"
#include "service_int.h"


void tc_svc_ctx_unref(ctx *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        tc_call_unref(c->call);
        pthread_mutex_destroy(&c->mu);
        free(c->snap);
        free(c);
    }
}

/* pack any protobuf-c message and queue it; 0 when it could not be */
int tc_svc_send_msg(tc_call *call, const ProtobufCMessage *m) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t stackbuf[1024];
    uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!buf) return 0;
    protobuf_c_message_pack(m, buf);
    const int ok = tc_call_send(call, buf, n) == TC_OK;
    if (buf != stackbuf) free(buf);
    return ok;
}

void tc_svc_reply(tc_call *call, const ProtobufCMessage *m) {
    tc_svc_send_msg(call, m);
    tc_call_finish(call, TC_GRPC_OK, "");
}

static void session_info_pb(const tc_session_info *si, Tconst__V1__SessionInfo *o) {
    tconst__v1__session_info__init(o);
    o->session_id = (char *)si->id;
    o->length = si->length;
    o->windows = si->windows;
    o->syncs = si->syncs;
    o->state_bytes = si->state_bytes;
    o->created_unix_ms = si->created_ms;
    o->last_used_unix_ms = si->last_used_ms;
    o->busy = si->busy;
}

/* ---- engine sink (engine thread) ---- */

/* the call's status, sent by tc_svc_sk_done (first one wins) */
static void end_later(ctx *c, int code, const char *msg) {
    pthread_mutex_lock(&c->mu);
    if (!c->end_set) {
        c->end_set = 1;
        c->end_code = code;
        snprintf(c->end_msg, sizeof c->end_msg, "%s", msg ? msg : "");
    }
    pthread_mutex_unlock(&c->mu);
}

static void sk_appended(void *user, const tc_session_info *si, int64_t n) {
    ctx *c = user;
    Tconst__V1__SessionInfo pi;
    session_info_pb(si, &pi);
    if (c->kind == K_APPEND) {
        Tconst__V1__AppendResponse r = TCONST__V1__APPEND_RESPONSE__INIT;
        r.session = &pi;
        r.appended_tokens = n;
        tc_svc_send_msg(c->call, &r.base);
        end_later(c, TC_GRPC_OK, "");
    } else if (c->kind == K_OPEN) {
        tc_svc_send_msg(c->call, &pi.base);
        end_later(c, TC_GRPC_OK, "");
    } else if (c->kind == K_STREAM) {
        Tconst__V1__StreamResponse r = TCONST__V1__STREAM_RESPONSE__INIT;
        r.event_case = TCONST__V1__STREAM_RESPONSE__EVENT_APPENDED;
        r.appended = &pi;
        tc_svc_send_msg(c->call, &r.base);
    }
}

static const Tconst__V1__FinishReason FIN_PB[] = {
    TCONST__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED, TCONST__V1__FINISH_REASON__FINISH_REASON_LENGTH,
    TCONST__V1__FINISH_REASON__FINISH_REASON_EOS,         TCONST__V1__FINISH_REASON__FINISH_REASON_STOP,
    TCONST__V1__FINISH_REASON__FINISH_REASON_CANCELLED,   TCONST__V1__FINISH_REASON__FINISH_REASON_ERROR,
};

/* Text for a response: protobuf-c sends strings up to their first NUL, so
 * a generated U+0000 (GPT-2's byte-0 token) would cut the text there; it
 * goes out as U+FFFD, as other bytes that are not text do. */
static size_t text_out_len(const char *t, size_t n) {
    size_t z = 0;
    for (size_t i = 0; i < n; i++) z += t[i] == 0;
    return n + 2 * z;
}
static void text_out(char *dst, const char *t, size_t n) { /* dst: text_out_len + 1 bytes */
    for (size_t i = 0; i < n; i++) {
        if (t[i]) *dst++ = t[i];
        else *dst++ = (char)0xef, *dst++ = (char)0xbf, *dst++ = (char)0xbd;
    }
    *dst = 0;
}

static void sk_tokens(void *user, const int32_t *ids, const tc_logprob *lp, int n, const char *text, size_t tlen,
                      tc_finish fin, const tc_job_stats *st, const char *error) {
    ctx *c = user;
    /* logprobs: the messages point into the records (not copied) */
    Tconst__V1__TokenLogprob lpm_stack[16], *lpm = lpm_stack, *lpp_stack[16], **lpp = lpp_stack;
    if (lp && n > 16) {
        lpm = malloc((size_t)n * sizeof *lpm), lpp = malloc((size_t)n * sizeof *lpp);
        if (!lpm || !lpp) { /* the tokens still go out */
            TC_LOG(TC_LOG_ERROR, "rpc", "request %s: out of memory for %d logprobs: sent without", c->request_id, n);
            free(lpm), free(lpp);
            lpm = lpm_stack, lpp = lpp_stack, lp = NULL;
        }
    }
    Tconst__V1__GenerateResponse r = TCONST__V1__GENERATE_RESPONSE__INIT;
    Tconst__V1__Usage u = TCONST__V1__USAGE__INIT;
    Tconst__V1__Timings t = TCONST__V1__TIMINGS__INIT;
    char stackbuf[512];
    const size_t need = text_out_len(text, tlen);
    char *txt = need < sizeof stackbuf ? stackbuf : malloc(need + 1);
    if (!txt) {
        if (lpm != lpm_stack) free(lpm), free(lpp);
        return;
    }
    text_out(txt, text, tlen);
    r.request_id = c->request_id;
    r.n_token_ids = (size_t)n;
    r.token_ids = (int32_t *)ids;
    for (int i = 0; lp && i < n; i++) {
        tconst__v1__token_logprob__init(&lpm[i]);
        lpm[i].logprob = lp[i].logprob;
        lpm[i].n_top_token_ids = lpm[i].n_top_logprobs = (size_t)lp[i].n_top;
        lpm[i].top_token_ids = (int32_t *)lp[i].top_id;
        lpm[i].top_logprobs = (float *)lp[i].top_logprob;
        lpp[i] = &lpm[i];
    }
    if (lp) r.n_logprobs = (size_t)n, r.logprobs = lpp;
    r.text = txt;
    r.finish_reason = FIN_PB[fin];
    if (error) r.error = (char *)error;
    if (st) {
        u.prompt_tokens = st->prompt_tokens;
        u.completion_tokens = st->completion_tokens;
        u.session_tokens = st->session_tokens;
        t.queue_seconds = st->queue_s;
        t.prefill_seconds = st->prefill_s;
        t.sync_seconds = st->sync_s;
        t.time_to_first_token_seconds = st->ttft_s;
        t.total_seconds = st->total_s;
        r.seed = st->seed;
        r.usage = &u;
        r.timings = &t;
    }
    if (c->kind == K_STREAM) {
        Tconst__V1__StreamResponse sr = TCONST__V1__STREAM_RESPONSE__INIT;
        sr.event_case = TCONST__V1__STREAM_RESPONSE__EVENT_GENERATION;
        sr.generation = &r;
        tc_svc_send_msg(c->call, &sr.base);
    } else {
        tc_svc_send_msg(c->call, &r.base);
        if (fin != TC_FINISH_NONE) {
            if (fin == TC_FINISH_CANCELLED) {
                int code = error && strstr(error, "shutting down") ? TC_GRPC_UNAVAILABLE
                           : error && strstr(error, "deadline")    ? TC_GRPC_DEADLINE_EXCEEDED
                                                                   : TC_GRPC_CANCELLED;
                end_later(c, code, error ? error : "cancelled");
            } else if (fin == TC_FINISH_ERROR) /* a worker that did not come back: retry elsewhere/later */
                end_later(c, error && strstr(error, "unavailable") ? TC_GRPC_UNAVAILABLE : TC_GRPC_INTERNAL,
                          error ? error : "error");
            else end_later(c, TC_GRPC_OK, "");
        }
    }
    if (txt != stackbuf) free(txt);
    if (lpm != lpm_stack) free(lpm), free(lpp);
}

static void sk_failed(void *user, int code, const char *msg) {
    ctx *c = user;
    pthread_mutex_lock(&c->mu);
    /* In a Stream, a request that ends before it generated -- aborted
     * while queued or prefilling, or refused by a limit that will pass
     * (RESOURCE_EXHAUSTED) -- ends alone, as a generating one does: one
     * generation event (CANCELLED, or ERROR naming the limit), and the
     * stream takes the next request; its session stays. Anything else
     * (an invalid request, a drain, a worker gone) ends the stream. A
     * client gone has rpc_done set before its job is cancelled. */
    const int soft = c->kind == K_STREAM && !c->rpc_done &&
                     (code == TC_GRPC_CANCELLED || code == TC_GRPC_RESOURCE_EXHAUSTED);
    if (!soft) c->failed = 1;
    pthread_mutex_unlock(&c->mu);
    if (!soft) {
        end_later(c, code, msg);
        return;
    }
    char m[640];
    if (code == TC_GRPC_RESOURCE_EXHAUSTED) snprintf(m, sizeof m, "RESOURCE_EXHAUSTED: %s", msg ? msg : "");
    sk_tokens(c, NULL, NULL, 0, "", 0, code == TC_GRPC_CANCELLED ? TC_FINISH_CANCELLED : TC_FINISH_ERROR, NULL,
              code == TC_GRPC_CANCELLED ? (msg ? msg : "cancelled") : m);
}

/* A client that sends without reading must not grow the server's send
 * queue without bound (a reflection request or a Stream append each
 * queue a reply): the next receive is posted while fewer than
 * TC_RECV_AHEAD replies wait, else when on_sent sees the queue drained
 * to half of that. Generations have their own bound (--stream-queue). */
#define TC_RECV_AHEAD 32
void tc_svc_recv_or_defer(ctx *c) {
    pthread_mutex_lock(&c->mu);
    const int go = tc_call_pending(c->call) < TC_RECV_AHEAD;
    c->recv_deferred = !go;
    pthread_mutex_unlock(&c->mu);
    if (go) tc_call_recv_next(c->call);
}

void tc_svc_sk_done(void *user) {
    ctx *c = user;
    pthread_mutex_lock(&c->mu);
    c->job_id = 0;
    int next = c->kind == K_STREAM && !c->failed && !c->rpc_done;
    int fin = next && c->half_closed;
    int end = c->end_set;
    pthread_mutex_unlock(&c->mu);
    if (end) tc_call_finish(c->call, c->end_code, c->end_msg);
    else if (fin) tc_call_finish(c->call, TC_GRPC_OK, "");
    else if (next) tc_svc_recv_or_defer(c);
    tc_svc_ctx_unref(c);
}

static size_t sk_backlog(void *user) { return tc_call_pending(((ctx *)user)->call); }
static double sk_deadline(void *user) { return tc_call_deadline_left(((ctx *)user)->call); }

static const tc_engine_sink SINK = {sk_appended, sk_tokens, sk_failed, tc_svc_sk_done, sk_backlog, sk_deadline};
const tc_engine_sink *tc_service_sink(void) { return &SINK; }

/* ---- request handling (RPC thread) ---- */

void tc_svc_finishf(tc_call *call, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void vfinish(tc_call *call, int code, const char *fmt, va_list ap) {
    char m[600];
    vsnprintf(m, sizeof m, fmt, ap);
    tc_call_finish(call, code, m);
}

void tc_svc_finishf(tc_call *call, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfinish(call, code, fmt, ap);
    va_end(ap);
}

void tc_svc_refuse(ctx *c, int code, const char *fmt, ...) {
    if (c->counted)
        tc_metric_inc(code == TC_GRPC_INTERNAL             ? TC_M_requests_total_error
                      : code == TC_GRPC_RESOURCE_EXHAUSTED ? TC_M_requests_total_overloaded
                                                           : TC_M_requests_total_rejected,
                      1);
    va_list ap;
    va_start(ap, fmt);
    vfinish(c->call, code, fmt, ap);
    va_end(ap);
}

/* A request that sets no seed samples from a fresh one (as vLLM and the
 * OpenAI API do: asking twice gives two samples), reported on its last
 * message so the output can be reproduced. */
static uint64_t random_seed(void) {
    uint64_t x;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) == (ssize_t)sizeof x) return x;
    static _Atomic uint64_t ctr;
    x = (uint64_t)(tc_now_s() * 1e9) ^ (atomic_fetch_add(&ctr, 1) * 0x9e3779b97f4a7c15ull); /* splitmix64 */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int sampling_from(const Tconst__V1__SamplingParams *p, tc_job_spec *sp) {
    sp->sp.temperature = 0.f;
    sp->sp.top_k = 0;
    sp->sp.top_p = 1.f;
    sp->sp.seed = random_seed();
    sp->max_tokens = 0;
    sp->max_tokens_unset = 1; /* the engine resolves it against --max-tokens */
    if (!p) return 0;
    if (p->_temperature_case == TCONST__V1__SAMPLING_PARAMS___TEMPERATURE_TEMPERATURE) sp->sp.temperature = p->temperature;
    if (p->_top_k_case == TCONST__V1__SAMPLING_PARAMS___TOP_K_TOP_K) sp->sp.top_k = p->top_k;
    if (p->_top_p_case == TCONST__V1__SAMPLING_PARAMS___TOP_P_TOP_P) sp->sp.top_p = p->top_p;
    if (p->_seed_case == TCONST__V1__SAMPLING_PARAMS___SEED_SEED) sp->sp.seed = p->seed;
    if (p->_max_tokens_case == TCONST__V1__SAMPLING_PARAMS___MAX_TOKENS_MAX_TOKENS)
        sp->max_tokens = p->max_tokens, sp->max_tokens_unset = 0;
    sp->stop_ids = p->stop_token_ids;
    sp->n_stop_ids = (int)p->n_stop_token_ids;
    sp->stop = (const char *const *)p->stop;
    sp->n_stop = (int)p->n_stop;
    sp->ignore_eos = p->ignore_eos;
    if (p->_logprobs_case == TCONST__V1__SAMPLING_PARAMS___LOGPROBS_LOGPROBS)
        sp->logprobs = 1, sp->top_logprobs = p->logprobs; /* the engine checks the range */
    return 0;
}

/* the prompt part of a job: session, ids or text (the engine checks that
 * not both are set) */
static void set_prompt(tc_job_spec *sp, const char *session_id, const int32_t *ids, size_t n, const char *text) {
    sp->session_id = session_id;
    sp->tokens = ids;
    sp->n_tokens = (int64_t)n;
    sp->text = text;
    sp->text_len = strlen(text);
}

/* Submits spec for ctx c; on refusal finishes the call. The engine holds
 * one ctx reference while the job lives. */
/* A Stream's request refused at admission by a limit that will pass
 * (RESOURCE_EXHAUSTED: --max-queued-requests, ...), once the stream is in
 * its session (a first request refused ends the stream), ends alone, as one refused after admission does (sk_failed): an ERROR
 * generation event naming the limit, and the stream takes the next
 * request. 1 when handled so; 0: the caller ends the call. */
static int stream_refused_softly(ctx *c, const tc_job_spec *spec, int code, const char *msg) {
    if (c->kind != K_STREAM || code != TC_GRPC_RESOURCE_EXHAUSTED) return 0;
    pthread_mutex_lock(&c->mu);
    const int gone = c->rpc_done || !c->session_id[0]; /* its first request: no session to go on in, it ends */
    if (!gone) snprintf(c->request_id, sizeof c->request_id, "%s", spec->request_id ? spec->request_id : "");
    pthread_mutex_unlock(&c->mu);
    if (gone) return 0;
    char m[700];
    snprintf(m, sizeof m, "RESOURCE_EXHAUSTED: %s", msg);
    sk_tokens(c, NULL, NULL, 0, "", 0, TC_FINISH_ERROR, NULL, m);
    tc_svc_recv_or_defer(c); /* its next request (or its half-close) */
    return 1;
}

static int submit(ctx *c, tc_job_spec *spec) {
    char msg[600];
    uint64_t jid = 0;
    spec->user = c;
    /* the prompt first, without c->mu: tokenizing a long text takes
     * seconds, and on_done (the RPC thread) takes c->mu */
    int32_t *toks;
    size_t nt;
    int code = tc_engine_prepare(c->svc->e, spec, &toks, &nt, msg, sizeof msg);
    if (code != 0) { /* counted by the engine */
        if (!stream_refused_softly(c, spec, code, msg)) tc_call_finish(c->call, code, msg);
        return -1;
    }
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&c->mu); /* tc_svc_sk_done may not run before job_id is set */
    if (c->rpc_done) { /* a large request's handler (bigq) ran after the client left: nothing to start */
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_sub(&c->refs, 1);
        free(toks);
        return -1;
    }
    code = tc_engine_submit_prepared(c->svc->e, spec, toks, nt, &jid, c->request_id, msg, sizeof msg);
    if (code == 0) c->job_id = jid;
    if (code == 0 && spec->pin) c->pinned = 1; /* before on_done can look (pin_key set by the submit) */
    pthread_mutex_unlock(&c->mu);
    if (code != 0) {
        atomic_fetch_sub(&c->refs, 1);
        if (!stream_refused_softly(c, spec, code, msg)) tc_call_finish(c->call, code, msg);
        return -1;
    }
    return 0;
}

/* The first string field (at any depth) of wire message m whose bytes
 * hold a NUL (*nul 1) or are not well-formed UTF-8 (*nul 0, *at the byte
 * offset): 1 and its path in path ("sampling.stop[1]"), else 0.
 * protobuf-c hands strings over NUL-terminated, so "a\0b" would silently
 * read as "a", and it does not check UTF-8, which proto3 strings must be
 * (an id echoed back ill-formed fails the client's decoder). The walk
 * trusts the framing only as far as unpack already checked it (it runs
 * after a successful unpack). */
int tc_svc_bad_string_field(const ProtobufCMessageDescriptor *d, const uint8_t *m, size_t len, int depth, int *nul,
                            size_t *at, char *path, size_t pathlen) {
    size_t i = 0;
    unsigned seen[64] = {0}; /* occurrences of each field number so far: a repeated field's index */
    while (i < len && depth < 32) {
        uint64_t key = 0;
        for (int sh = 0; i < len && sh < 64; sh += 7) {
            key |= (uint64_t)(m[i] & 0x7f) << sh;
            if (!(m[i++] & 0x80)) break;
        }
        const unsigned wt = (unsigned)(key & 7);
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
        if (wt == 0) {
            while (i < len && (m[i++] & 0x80)) {}
        } else if (wt == 1 || wt == 5) {
            i += wt == 1 ? 8 : 4;
        } else if (wt == 2) {
            uint64_t n = 0;
            for (int sh = 0; i < len && sh < 64; sh += 7) {
                n |= (uint64_t)(m[i] & 0x7f) << sh;
                if (!(m[i++] & 0x80)) break;
            }
            if (n > len - i) return 0;
            const unsigned num = (unsigned)(key >> 3), k = num < 64 ? seen[num]++ : 0;
            char here[96] = "";
            if (f && f->label == PROTOBUF_C_LABEL_REPEATED) snprintf(here, sizeof here, "%s[%u]", f->name, k);
            else if (f) snprintf(here, sizeof here, "%s", f->name);
            if (f && f->type == PROTOBUF_C_TYPE_STRING) {
                int bad = 0;
                if (memchr(m + i, 0, (size_t)n)) bad = 1, *nul = 1;
                else if ((*at = tc_utf8_first_invalid(m + i, (size_t)n)) < n) bad = 1, *nul = 0;
                if (bad) return snprintf(path, pathlen, "%s", here), 1;
            }
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                char in[160];
                if (tc_svc_bad_string_field(f->descriptor, m + i, (size_t)n, depth + 1, nul, at, in, sizeof in))
                    return snprintf(path, pathlen, "%s.%s", here, in), 1;
            }
            i += (size_t)n;
        } else return 0; /* groups: not in proto3 */
    }
    return 0;
}

static void h_generate(ctx *c, const uint8_t *m, size_t len, int in_session) {
    tc_job_spec sp = {0};
    if (!in_session) {
        DECODE(Tconst__V1__GenerateRequest, tconst__v1__generate_request, rq, m, len);
        set_prompt(&sp, rq->session_id, rq->token_ids, rq->n_token_ids, rq->text);
        sp.ephemeral = !rq->session_id[0];
        sp.request_id = rq->request_id;
        sampling_from(rq->sampling, &sp);
        if (!sp.n_tokens && !sp.text_len && sp.ephemeral)
            tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "prompt: empty (set text or token_ids)");
        else {
            sp.generate = 1;
            submit(c, &sp);
        }
        tconst__v1__generate_request__free_unpacked(rq, NULL);
    } else {
        DECODE(Tconst__V1__GenerateInSessionRequest, tconst__v1__generate_in_session_request, rq, m, len);
        if (!rq->session_id[0]) tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "session_id: required");
        else {
            set_prompt(&sp, rq->session_id, rq->token_ids, rq->n_token_ids, rq->text);
            sp.request_id = rq->request_id;
            sampling_from(rq->sampling, &sp);
            sp.generate = 1;
            submit(c, &sp);
        }
        tconst__v1__generate_in_session_request__free_unpacked(rq, NULL);
    }
}

static void h_open(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__OpenSessionRequest, tconst__v1__open_session_request, rq, m, len);
    tc_job_spec sp = {0};
    sp.create = 1;
    sp.copy_from = rq->copy_from;
    set_prompt(&sp, rq->session_id, rq->token_ids, rq->n_token_ids, rq->text);
    submit(c, &sp);
    tconst__v1__open_session_request__free_unpacked(rq, NULL);
}

static void h_append(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__AppendRequest, tconst__v1__append_request, rq, m, len);
    if (!rq->session_id[0]) tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "session_id: required");
    else if (!rq->n_token_ids && !rq->text[0])
        tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "append: empty (set text or token_ids)");
    else {
        tc_job_spec sp = {0};
        set_prompt(&sp, rq->session_id, rq->token_ids, rq->n_token_ids, rq->text);
        submit(c, &sp);
    }
    tconst__v1__append_request__free_unpacked(rq, NULL);
}

static void stream_msg(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__StreamRequest, tconst__v1__stream_request, rq, m, len);
    tc_job_spec sp = {0};
    int first = !c->session_id[0];
    if (first) {
        if (rq->session_id[0]) sp.session_id = rq->session_id;
        else {
            sp.create = 1;
            sp.session_id = "";
            pthread_mutex_lock(&c->mu); /* on_done reads it */
            c->owns_session = 1;
            pthread_mutex_unlock(&c->mu);
        }
        sp.session_id_out = c->session_id;
    } else {
        if (rq->session_id[0] && strcmp(rq->session_id, c->session_id) != 0) {
            tc_svc_refuse(c, TC_GRPC_INVALID_ARGUMENT, "session_id: a stream stays in session '%s'", c->session_id);
            tconst__v1__stream_request__free_unpacked(rq, NULL);
            return;
        }
        sp.session_id = c->session_id;
        pthread_mutex_lock(&c->mu);
        sp.expect_key = c->pin_key; /* the stream's session, not another opened under its id since */
        pthread_mutex_unlock(&c->mu);
    }
    set_prompt(&sp, sp.session_id, rq->token_ids, rq->n_token_ids, rq->text);
    sp.generate = rq->generate;
    sp.request_id = rq->request_id;
    sp.pin = first; /* its session does not expire idle while the stream is open */
    sp.pin_key_out = &c->pin_key;
    sampling_from(rq->sampling, &sp);
    if (submit(c, &sp) != 0 && first) {
        pthread_mutex_lock(&c->mu);
        c->owns_session = 0;
        pthread_mutex_unlock(&c->mu);
    }
    tconst__v1__stream_request__free_unpacked(rq, NULL);
}

static void h_get(ctx *c, const uint8_t *m, size_t len, int close) {
    DECODE(Tconst__V1__GetSessionRequest, tconst__v1__get_session_request, rq, m, len);
    tc_session_info si;
    char err[300];
    int ok = close ? tc_engine_session_close(c->svc->e, rq->session_id, &si, err, sizeof err)
                   : tc_engine_session_get(c->svc->e, rq->session_id, &si);
    if (!rq->session_id[0]) tc_svc_finishf(c->call, TC_GRPC_INVALID_ARGUMENT, "session_id: required");
    else if (ok < 0)
        tc_svc_finishf(c->call, TC_GRPC_INTERNAL, "session '%s' is not closed (it stays open as it was): the journal "
                       "cannot drop it: %s", rq->session_id, err);
    else if (!ok) tc_svc_finishf(c->call, TC_GRPC_NOT_FOUND, "session_id: no open session '%s'", rq->session_id);
    else {
        Tconst__V1__SessionInfo pi;
        session_info_pb(&si, &pi);
        tc_svc_reply(c->call, &pi.base);
    }
    tconst__v1__get_session_request__free_unpacked(rq, NULL);
}

/* SnapshotSession: the history in chunks, SNAPSHOT_AHEAD of them queued
 * ahead of the client (on_sent sends the next ones), so a long history is
 * held once, as the copy, not again as queued messages */
#define SNAPSHOT_CHUNK 65536
#define SNAPSHOT_CHUNK_MAX 262144
#define SNAPSHOT_AHEAD 4
static void snapshot_pump(ctx *c) { /* c->mu held */
    while (c->snap && tc_call_pending(c->call) < SNAPSHOT_AHEAD) {
        Tconst__V1__SnapshotSessionResponse r = TCONST__V1__SNAPSHOT_SESSION_RESPONSE__INIT;
        Tconst__V1__SessionInfo pi;
        const int64_t k = c->snap_n - c->snap_off < c->snap_chunk ? c->snap_n - c->snap_off : c->snap_chunk;
        if (c->snap_off == 0) { /* the first message, even for an empty session: it carries the info */
            session_info_pb(&c->snap_info, &pi);
            r.session = &pi;
        }
        r.offset = c->snap_off;
        r.token_ids = c->snap + c->snap_off, r.n_token_ids = (size_t)k;
        const int sent = tc_svc_send_msg(c->call, &r.base);
        c->snap_off += k;
        if (!sent || c->snap_off >= c->snap_n) { /* a chunk not sent ends it: never a history with a hole */
            free(c->snap);
            c->snap = NULL;
            if (sent) tc_call_finish(c->call, TC_GRPC_OK, "");
            else tc_call_finish(c->call, TC_GRPC_INTERNAL, "a snapshot chunk could not be sent (out of memory?)");
        }
    }
}

/* the copy of a snapshot that waited for the session's last request to
 * let go of it (tc_engine_session_snapshot's later): an engine thread */
static void snapshot_later(void *ud, int code, const char *msg, const tc_session_info *info, int32_t *tokens,
                           int64_t n) {
    ctx *c = ud;
    pthread_mutex_lock(&c->mu);
    if (code) {
        free(tokens);
        tc_svc_finishf(c->call, code, "%s", msg);
    } else if (tc_call_is_done(c->call)) /* its client went away meanwhile */
        free(tokens);
    else {
        c->snap_info = *info;
        c->snap = tokens, c->snap_n = n, c->snap_off = 0;
        snapshot_pump(c);
    }
    pthread_mutex_unlock(&c->mu);
    tc_svc_ctx_unref(c); /* the engine's reference */
}

static void h_snapshot(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__SnapshotSessionRequest, tconst__v1__snapshot_session_request, rq, m, len);
    const int chunk = rq->chunk_tokens ? rq->chunk_tokens : SNAPSHOT_CHUNK;
    char msg[300];
    int code;
    if (!rq->session_id[0]) tc_svc_finishf(c->call, TC_GRPC_INVALID_ARGUMENT, "session_id: required");
    else if (chunk < 1 || chunk > SNAPSHOT_CHUNK_MAX)
        tc_svc_finishf(c->call, TC_GRPC_INVALID_ARGUMENT, "chunk_tokens: %d out of range [1, %d] (0: %d)", rq->chunk_tokens,
                SNAPSHOT_CHUNK_MAX, SNAPSHOT_CHUNK);
    else {
        /* set before the engine may hand a later copy to another thread */
        c->kind = K_SNAPSHOT;
        c->snap_chunk = chunk;
        atomic_fetch_add(&c->refs, 1); /* the engine's, while a copy waits (snapshot_later lets go) */
        int32_t *t = NULL;
        int64_t n = 0;
        tc_session_info info;
        code = tc_engine_session_snapshot(c->svc->e, rq->session_id, &info, &t, &n, msg, sizeof msg, snapshot_later, c);
        if (code != TC_SNAPSHOT_LATER) {
            tc_svc_ctx_unref(c); /* not kept: the RPC side's reference stays */
            if (code) tc_svc_finishf(c->call, code, "%s", msg);
            else {
                pthread_mutex_lock(&c->mu);
                c->snap_info = info;
                c->snap = t, c->snap_n = n, c->snap_off = 0;
                snapshot_pump(c);
                pthread_mutex_unlock(&c->mu);
            }
        }
    }
    tconst__v1__snapshot_session_request__free_unpacked(rq, NULL);
}

static void h_abort(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__AbortRequest, tconst__v1__abort_request, rq, m, len);
    if (!rq->request_id[0]) tc_svc_finishf(c->call, TC_GRPC_INVALID_ARGUMENT, "request_id: required");
    else {
        Tconst__V1__AbortResponse r = TCONST__V1__ABORT_RESPONSE__INIT;
        r.found = tc_engine_abort(c->svc->e, rq->request_id);
        tc_svc_reply(c->call, &r.base);
    }
    tconst__v1__abort_request__free_unpacked(rq, NULL);
}

static void h_tokenize(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__TokenizeRequest, tconst__v1__tokenize_request, rq, m, len);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!c->svc->bpe) tc_svc_finishf(c->call, TC_GRPC_FAILED_PRECONDITION, "text: this model has no tokenizer");
    else if (tc_bpe_encode(c->svc->bpe, rq->text, strlen(rq->text), &ids, &n) != TC_OK)
        tc_svc_finishf(c->call, TC_GRPC_INVALID_ARGUMENT, "text: %s", tc_error_get() ? tc_error_get() : "cannot tokenize");
    else {
        Tconst__V1__TokenizeResponse r = TCONST__V1__TOKENIZE_RESPONSE__INIT;
        r.token_ids = ids;
        r.n_token_ids = n;
        tc_svc_reply(c->call, &r.base);
    }
    free(ids);
    tconst__v1__tokenize_request__free_unpacked(rq, NULL);
}

/* ids -> text exactly as a generation streams it: an id the model can
 * produce past its tokenizer's vocabulary (a padded head) is U+FFFD, as in
 * a GenerateResponse's text; an id outside the model's vocabulary is an
 * error naming it. *out is malloc'd (NUL-terminated); NULL with a message
 * in err on failure. */
static int detokenize(const tc_bpe *bpe, int32_t vocab, const int32_t *ids, size_t n, char **out, size_t *len,
                      char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) {
            snprintf(err, errlen, "token_ids[%zu]: %d out of range [0, %d)", i, (int)ids[i], (int)vocab);
            return TC_GRPC_INVALID_ARGUMENT;
        }
    const size_t step = tc_bpe_stream_max_out(bpe) + 8;
    size_t cap = 256 + step, n_out = 0;
    char *buf = malloc(cap);
    tc_bpe_stream st;
    tc_bpe_stream_init(&st, bpe);
    for (size_t i = 0; buf && i <= n; i++) {
        if (n_out + step + 1 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb, cap *= 2;
        }
        size_t np = 0;
        if (i == n) n_out += tc_bpe_stream_flush(&st, buf + n_out);
        else if (tc_bpe_stream_push(&st, ids[i], buf + n_out, cap - n_out, &np) == TC_OK) n_out += np;
        else { /* past the tokenizer: what the decoder holds, then U+FFFD */
            n_out += tc_bpe_stream_flush(&st, buf + n_out);
            memcpy(buf + n_out, "\xEF\xBF\xBD", 3);
            n_out += 3;
        }
    }
    if (!buf) {
        snprintf(err, errlen, "out of memory for the text of %zu ids", n);
        return TC_GRPC_RESOURCE_EXHAUSTED;
    }
    buf[n_out] = 0;
    *out = buf;
    *len = n_out;
    return 0;
}

static void h_detokenize(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Tconst__V1__DetokenizeRequest, tconst__v1__detokenize_request, rq, m, len);
    char *out = NULL, err[160];
    size_t n = 0;
    int code;
    if (!c->svc->bpe) tc_svc_finishf(c->call, TC_GRPC_FAILED_PRECONDITION, "token_ids: this model has no tokenizer");
    else if ((code = detokenize(c->svc->bpe, c->svc->wc->cfg->vocab_size, rq->token_ids, rq->n_token_ids, &out, &n,
                                err, sizeof err)))
        tc_svc_finishf(c->call, code, "%s", err);
    else {
        /* valid UTF-8 already (the stream decoder's output); a NUL is U+FFFD */
        char *txt = malloc(text_out_len(out, n) + 1);
        if (!txt) tc_svc_finishf(c->call, TC_GRPC_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of text", n);
        else {
            text_out(txt, out, n);
            Tconst__V1__DetokenizeResponse r = TCONST__V1__DETOKENIZE_RESPONSE__INIT;
            r.text = txt;
            tc_svc_reply(c->call, &r.base);
        }
        free(txt);
    }
    free(out);
    tconst__v1__detokenize_request__free_unpacked(rq, NULL);
}

static void h_model_info(ctx *c) {
    const tc_model_config *mc = c->svc->wc->cfg;
    Tconst__V1__ModelInfoResponse r = TCONST__V1__MODEL_INFO_RESPONSE__INIT;
    r.architecture = (char *)tc_arch_name(mc->arch);
    r.vocab_size = mc->vocab_size;
    r.n_embd = mc->n_embd;
    r.n_head = mc->n_head;
    r.n_block = mc->n_block;
    r.block_inner_depth = mc->arch == TC_ARCH_TRANSFORMER ? 0 : mc->inner_depth;
    r.ffn_hidden = mc->ffn_hidden;
    r.history_window = mc->history_window;
    r.generate_window = mc->generate_window;
    r.dtype = (char *)c->svc->wc->dtype;
    r.device = (char *)c->svc->wc->device;
    r.n_params = c->svc->wc->n_params;
    r.bos_token_id = mc->bos_token_id;
    r.eos_token_id = mc->eos_token_id;
    r.has_tokenizer = c->svc->bpe != NULL;
    int64_t d = mc->n_embd, nl = (int64_t)mc->n_block * mc->inner_depth;
    r.state_bytes_per_session =
        mc->arch == TC_ARCH_TRANSFORMER ? 0
                                        : nl * 2 * mc->generate_window * d * 4 +
                                              (int64_t)mc->n_block * (mc->inner_depth - 1) * 2 * mc->history_window * d * 4;
    r.model_path = (char *)c->svc->info.model_path;
    tc_svc_reply(c->call, &r.base);
}

static void h_server_info(ctx *c) {
    tc_service *s = c->svc;
    const tc_engine_limits *lim = tc_engine_get_limits(s->e);
    Tconst__V1__ServerInfoResponse r = TCONST__V1__SERVER_INFO_RESPONSE__INIT;
    Tconst__V1__Limits l = TCONST__V1__LIMITS__INIT;
    /* the workers as they are now: each process's role, device, address
     * and whether it answers; the backends are the kinds of their devices */
    enum { MAXW = 64 }; /* above worker_remote's MAX_PROCS */
    tc_wc_worker_info wi[MAXW];
    int nw = s->wc->workers ? s->wc->workers(s->wc, wi, MAXW) : 0;
    if (!s->wc->workers) {
        memset(&wi[0], 0, sizeof wi[0]);
        snprintf(wi[0].role, sizeof wi[0].role, "both");
        snprintf(wi[0].device, sizeof wi[0].device, "%s", s->wc->device ? s->wc->device : "cpu");
        snprintf(wi[0].address, sizeof wi[0].address, "in-process");
        wi[0].ready = 1;
        nw = 1;
    }
    Tconst__V1__WorkerInfo w[MAXW], *wp[MAXW];
    char *backends[2];
    int nb = 0, has_cpu = 0, has_cuda = 0;
    for (int i = 0; i < nw; i++) {
        tconst__v1__worker_info__init(&w[i]);
        w[i].role = wi[i].role;
        w[i].device = wi[i].device;
        w[i].address = wi[i].address;
        w[i].ready = wi[i].ready;
        wp[i] = &w[i];
        has_cuda |= !strncmp(wi[i].device, "cuda", 4);
        has_cpu |= !strcmp(wi[i].device, "cpu");
    }
    if (has_cpu) backends[nb++] = "cpu";
    if (has_cuda) backends[nb++] = "cuda";
    r.version = (char *)s->info.version;
    r.build = "C11 " __DATE__ " " __TIME__;
    r.backends = backends;
    r.n_backends = (size_t)nb;
    r.workers = wp;
    r.n_workers = (size_t)nw;
    l.max_sessions = lim->max_sessions;
    l.max_queued_requests = lim->max_queued;
    l.max_tokens = lim->max_tokens;
    l.idle_timeout = lim->idle_timeout_s;
    l.idle_timeout_seconds = lim->idle_timeout_s >= INT32_MAX ? INT32_MAX : (int32_t)ceil(lim->idle_timeout_s);
    l.max_message_bytes = s->info.max_message_bytes;
    l.stream_queue_messages = lim->stream_queue;
    l.max_session_tokens = lim->max_session_tokens;
    l.max_batch = lim->max_batch;
    l.max_state_bytes = lim->max_state_bytes;
    l.max_queued_syncs = lim->max_queued_syncs;
    l.large_request_budget = s->info.large_request_budget > 0 ? s->info.large_request_budget : TC_BIG_QUEUED_BYTES;
    r.limits = &l;
    r.uptime_seconds = tc_now_s() - s->t_start;
    int ns, nr, nq;
    tc_engine_counts(s->e, &ns, &nr, &nq);
    r.sessions_active = ns;
    r.requests_running = nr;
    pthread_mutex_lock(&s->mu);
    r.draining = s->draining;
    pthread_mutex_unlock(&s->mu);
    tc_svc_reply(c->call, &r.base);
}

/* ---- health ---- */

/* ---- rpc handlers ---- */

/* The handlers whose work grows with the request, run on the RPC thread
 * up to TC_INLINE_MAX bytes of request and on bigq past that. A Stream
 * takes its next message only after the job of this one ended (tc_svc_sk_done),
 * so its messages stay in order either way. */
enum { B_GENERATE, B_GENERATE_IN, B_OPEN, B_APPEND, B_TOKENIZE, B_DETOKENIZE, B_STREAM };
static void run_handler(ctx *c, int which, const uint8_t *m, size_t n) {
    switch (which) {
    case B_GENERATE: h_generate(c, m, n, 0); break;
    case B_GENERATE_IN: h_generate(c, m, n, 1); break;
    case B_OPEN: h_open(c, m, n); break;
    case B_APPEND: h_append(c, m, n); break;
    case B_TOKENIZE: h_tokenize(c, m, n); break;
    case B_DETOKENIZE: h_detokenize(c, m, n); break;
    default: stream_msg(c, m, n); break;
    }
}

typedef struct {
    ctx *c;
    int which;
    size_t len;
    uint8_t m[];
} big_item;

static void big_run(void *arg, int cancelled) {
    big_item *it = arg;
    ctx *c = it->c;
    pthread_mutex_lock(&c->mu);
    const int gone = c->rpc_done; /* the client left while it waited: no work for nobody */
    pthread_mutex_unlock(&c->mu);
    if (cancelled) tc_svc_refuse(c, TC_GRPC_UNAVAILABLE, "server shutting down");
    else if (!gone) run_handler(c, it->which, it->m, it->len);
    atomic_fetch_sub(&c->svc->big_bytes, (long long)it->len);
    tc_metric_add(TC_G_large_requests, -1);
    tc_svc_ctx_unref(c);
    free(it);
}

static void run_or_queue(ctx *c, int which, const uint8_t *m, size_t n) {
    c->counted = which != B_TOKENIZE && which != B_DETOKENIZE;
    if (n <= TC_INLINE_MAX || !c->svc->bigq) {
        run_handler(c, which, m, n);
        return;
    }
    tc_service *s = c->svc;
    const long long budget = s->info.large_request_budget > 0 ? s->info.large_request_budget : TC_BIG_QUEUED_BYTES;
    const long long held = atomic_fetch_add(&s->big_bytes, (long long)n);
    if (held + (long long)n > budget) {
        atomic_fetch_sub(&s->big_bytes, (long long)n);
        tc_svc_refuse(c, TC_GRPC_RESOURCE_EXHAUSTED,
                "too many large requests at once: this one (%zu bytes) and the %lld bytes of requests over 16 KiB "
                "queued or running exceed --large-request-budget %lld; retry later", n, held, budget);
        return;
    }
    big_item *it = malloc(sizeof *it + n);
    if (!it) {
        atomic_fetch_sub(&s->big_bytes, (long long)n);
        tc_svc_refuse(c, TC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    it->c = c, it->which = which, it->len = n;
    memcpy(it->m, m, n);
    atomic_fetch_add(&c->refs, 1);
    tc_metric_add(TC_G_large_requests, 1);
    const tc_status pst = tc_workq_post(s->bigq, big_run, it);
    if (pst != TC_OK) { /* stopped (shutting down), or out of memory */
        if (pst == TC_ERR_NOMEM) tc_svc_refuse(c, TC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        else tc_svc_refuse(c, TC_GRPC_UNAVAILABLE, "server shutting down");
        atomic_fetch_sub(&s->big_bytes, (long long)n);
        tc_metric_add(TC_G_large_requests, -1);
        tc_svc_ctx_unref(c);
        free(it);
    }
}

/* c on the list of open client streams (Stream, reflection), with a
 * reference of the list's: the end of a drain finishes the idle ones */
static void stream_link(tc_service *s, ctx *c) {
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&s->mu);
    c->st_next = s->streams;
    if (s->streams) s->streams->st_prev = c;
    s->streams = c;
    c->st_linked = 1;
    pthread_mutex_unlock(&s->mu);
}

/* c off the open streams' list: 1 when it was on it (its reference is the
 * caller's to let go) */
static int stream_unlink(tc_service *s, ctx *c) {
    pthread_mutex_lock(&s->mu);
    const int was = c->st_linked;
    if (was) {
        if (c->st_prev) c->st_prev->st_next = c->st_next;
        else s->streams = c->st_next;
        if (c->st_next) c->st_next->st_prev = c->st_prev;
        c->st_prev = c->st_next = NULL;
        c->st_linked = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return was;
}

void tc_service_end_idle_streams(tc_service *s) {
    for (;;) {
        /* off the list in the same locked section: on_done may otherwise
         * unlink and free it between a look and the unlink */
        pthread_mutex_lock(&s->mu);
        ctx *c = s->streams;
        if (c) {
            s->streams = c->st_next;
            if (c->st_next) c->st_next->st_prev = NULL;
            c->st_prev = c->st_next = NULL;
            c->st_linked = 0;
        }
        pthread_mutex_unlock(&s->mu);
        if (!c) return;
        pthread_mutex_lock(&c->mu);
        /* a job still running ends it itself; a later request of an ended
         * one is refused by the draining engine */
        const int idle = !c->job_id && !c->rpc_done;
        pthread_mutex_unlock(&c->mu);
        if (idle) tc_call_finish(c->call, TC_GRPC_UNAVAILABLE, "server shutting down");
        tc_svc_ctx_unref(c); /* the list's reference */
    }
}

static const char *const KNOWN[] = {"Generate", "GenerateInSession", "OpenSession", "Append", "Stream",
                                    "GetSession", "SnapshotSession", "CloseSession", "Abort", "Tokenize", "Detokenize",
                                    "ModelInfo", "ServerInfo"};

/* the methods served; any other is UNIMPLEMENTED, answered by rpc.c before any message */
static int svc_is_known(void *ud, const char *method) {
    (void)ud;
    int is_known = !strcmp(method, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") ||
                   !strcmp(method, "/grpc.health.v1.Health/Check") || !strcmp(method, "/grpc.health.v1.Health/Watch");
    for (size_t i = 0; !is_known && i < sizeof KNOWN / sizeof *KNOWN; i++)
        is_known = !strncmp(method, SVC, strlen(SVC)) && !strcmp(method + strlen(SVC), KNOWN[i]);
    return is_known;
}

static void on_start(void *ud, tc_call *call, const char *method, const uint8_t *m, size_t len) {
    tc_service *s = ud;
    /* over before its first message (an oversized message, a client gone
     * at once): on_done has already run and found no context, so nothing
     * else would release the call */
    if (tc_call_is_done(call)) {
        /* also with its first message: the close can be handled before
         * the receive that carried it (a client that cancels at once), and
         * a job started now would never be cancelled or released */
        tc_call_unref(call);
        return;
    }
    ctx *c = calloc(1, sizeof *c);
    if (!c) {
        tc_call_finish(call, TC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        tc_call_unref(call);
        return;
    }
    c->svc = s;
    c->call = call; /* takes on_start's reference */
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    tc_call_set_user(call, c);
    static const uint8_t none = 0;
    const uint8_t *msg = m ? m : &none;
    size_t n = m ? len : 0;
    int is_stream = !strcmp(method, SVC "Stream");
    int is_reflect = !strcmp(method, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    /* rpc.c answers unknown methods before any message; kept for a caller without the hook */
    if (!svc_is_known(ud, method)) {
        tc_svc_finishf(call, TC_GRPC_UNIMPLEMENTED, "unknown method %s", method);
        return;
    }
    if (!m && !is_stream && !is_reflect) {
        tc_svc_finishf(call, TC_GRPC_INVALID_ARGUMENT, "missing request message");
        return;
    }
    if (!strncmp(method, SVC, strlen(SVC))) {
        const char *r = method + strlen(SVC);
        int big = -1; /* the handlers whose work grows with the request: on bigq past TC_INLINE_MAX */
        if (!strcmp(r, "Generate")) c->kind = K_GENERATE, big = B_GENERATE;
        else if (!strcmp(r, "GenerateInSession")) c->kind = K_GENERATE, big = B_GENERATE_IN;
        else if (!strcmp(r, "OpenSession")) c->kind = K_OPEN, big = B_OPEN;
        else if (!strcmp(r, "Append")) c->kind = K_APPEND, big = B_APPEND;
        else if (!strcmp(r, "Tokenize")) big = B_TOKENIZE;
        else if (!strcmp(r, "Detokenize")) big = B_DETOKENIZE;
        else if (!strcmp(r, "Stream")) c->kind = K_STREAM, big = m ? B_STREAM : -1;
        if (c->kind == K_STREAM && m) stream_link(s, c);
        if (big >= 0) run_or_queue(c, big, msg, n);
        else if (!strcmp(r, "Stream")) tc_call_finish(call, TC_GRPC_OK, "");
        else if (!strcmp(r, "GetSession")) h_get(c, msg, n, 0);
        else if (!strcmp(r, "SnapshotSession")) h_snapshot(c, msg, n);
        else if (!strcmp(r, "CloseSession")) h_get(c, msg, n, 1);
        else if (!strcmp(r, "Abort")) h_abort(c, msg, n);
        else if (!strcmp(r, "ModelInfo")) h_model_info(c);
        else if (!strcmp(r, "ServerInfo")) h_server_info(c);
        else tc_svc_finishf(call, TC_GRPC_UNIMPLEMENTED, "unknown method %s", method);
    } else if (!strcmp(method, "/grpc.health.v1.Health/Check")) tc_svc_health(c, msg, n, 0);
    else if (!strcmp(method, "/grpc.health.v1.Health/Watch")) tc_svc_health(c, msg, n, 1);
    else if (is_reflect) {
        c->kind = K_REFLECT;
        if (m) stream_link(s, c);
        if (m) tc_svc_reflect(c, msg, n);
        else tc_call_finish(call, TC_GRPC_OK, "");
    } else tc_svc_finishf(call, TC_GRPC_UNIMPLEMENTED, "unknown method %s", method);
}

static void on_message(void *ud, tc_call *call, const uint8_t *m, size_t len) {
    (void)ud;
    ctx *c = tc_call_user(call);
    if (!c) return;
    if (c->kind == K_REFLECT) {
        if (m) tc_svc_reflect(c, m, len);
        else tc_call_finish(call, TC_GRPC_OK, "");
        return;
    }
    if (c->kind != K_STREAM) return;
    if (!m) { /* half-close: finish once the running job (if any) ends */
        pthread_mutex_lock(&c->mu);
        c->half_closed = 1;
        int idle = c->job_id == 0;
        pthread_mutex_unlock(&c->mu);
        if (idle) tc_call_finish(call, TC_GRPC_OK, "");
        return;
    }
    static const uint8_t none = 0;
    run_or_queue(c, B_STREAM, len ? m : &none, len);
}

/* how close to its deadline a cancelled call counts as one that expired:
 * the client's clock fires first, by about a one-way latency */
#define TC_DEADLINE_SLACK_S 0.25
static void on_done(void *ud, tc_call *call, int cancelled) {
    tc_service *s = ud;
    ctx *c = tc_call_user(call);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->rpc_done = 1;
    uint64_t jid = c->job_id;
    const int close_session = c->kind == K_STREAM && c->owns_session && c->session_id[0];
    const int unpin = c->kind == K_STREAM && c->pinned && c->session_id[0];
    char sid[TC_ID_MAX];
    memcpy(sid, c->session_id, sizeof sid);
    const uint64_t pin_key = c->pin_key;
    pthread_mutex_unlock(&c->mu);
    /* A client whose deadline passes cancels the call itself (its RST
     * arrives a few ms before the server's own deadline, which was set on
     * receipt): a cancel that close to the deadline is the deadline, and
     * is counted so, not as a client going away. */
    if (jid && cancelled)
        tc_engine_cancel(s->e, jid, tc_call_deadline_left(call) <= TC_DEADLINE_SLACK_S ? 4 : 1);
    if (unpin) tc_engine_session_unpin(s->e, sid, pin_key);
    if (close_session) { /* the session it opened: not one opened again under its id meanwhile */
        tc_session_info si;
        tc_engine_session_close_key(s->e, sid, pin_key, &si);
    }
    if (c->kind == K_WATCH) tc_svc_unwatch(s, c);
    if ((c->kind == K_STREAM || c->kind == K_REFLECT) && stream_unlink(s, c)) tc_svc_ctx_unref(c);
    /* a receive still queued behind the close (a client that cancels with
     * a message in flight) reaches on_message after this: it must find no
     * context, not this one freed (ASan saw exactly that under load). The
     * RPC thread runs the handlers one at a time, so this is ordered. */
    tc_call_set_user(call, NULL);
    tc_svc_ctx_unref(c);
}

static void on_sent(void *ud, tc_call *call) {
    tc_service *s = ud;
    ctx *c = tc_call_user(call);
    if (c && c->kind == K_SNAPSHOT) {
        pthread_mutex_lock(&c->mu);
        snapshot_pump(c);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (c) { /* a receive deferred for a client that did not read: resumed once it has read half */
        pthread_mutex_lock(&c->mu);
        const int go = c->recv_deferred && !c->rpc_done && tc_call_pending(call) <= TC_RECV_AHEAD / 2;
        if (go) c->recv_deferred = 0;
        pthread_mutex_unlock(&c->mu);
        if (go) tc_call_recv_next(call);
    }
    if (s->e) tc_engine_wake(s->e);
}

static const tc_rpc_handlers HANDLERS = {on_start, on_message, on_done, on_sent, svc_is_known};
const tc_rpc_handlers *tc_service_handlers(void) { return &HANDLERS; }

tc_status tc_service_init(tc_service **out, tc_engine *e, tc_worker_client *wc, struct tc_bpe *bpe,
                          const tc_service_info *info) {
    tc_service *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    s->e = e;
    s->wc = wc;
    s->bpe = bpe;
    s->info = *info;
    s->t_start = tc_now_s();
    pthread_mutex_init(&s->mu, NULL);
    const tc_status st = tc_workq_start(&s->bigq, 2, "large requests");
    if (st != TC_OK) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return st;
    }
    *out = s;
    return TC_OK;
}

void tc_service_stop_queue(tc_service *s) {
    if (s) tc_workq_stop(s->bigq);
}

void tc_service_wait_queue(tc_service *s) { tc_workq_wait_idle(s->bigq); }

void tc_service_bind_engine(tc_service *s, tc_engine *e) { s->e = e; }

void tc_service_free(tc_service *s) {
    if (!s) return;
    tc_workq_free(s->bigq);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
