/* openai.c — the OpenAI-compatible HTTP API (openai.h) on libmicrohttpd
 * and cJSON. A request's body is read whole (up to max_body_bytes), parsed
 * and checked here (fields named as OpenAI names them), then goes to the
 * engine as a Generate would, with a sink of its own (oreq below). The
 * connection's thread waits for the engine's first answer (so a refusal
 * or an early failure is an HTTP error, not a broken stream), then either
 * streams server-sent events from a content reader or waits for the end
 * and sends one JSON object. While it waits it polls the client's socket:
 * a client that hung up cancels its generation. */
#include "openai.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/clock.h"
#include "daemon/engine.h"
#include "daemon/http.h"
#include "daemon/metrics.h"
#include "daemon/openai_parse.h"
#include "tokenizer/bpe.h"
#include "tokenizer/utf8.h"

#define POLL_MS 200           /* how often a waiting thread looks at its client's socket */
#define IDLE_TIMEOUT_S 60u    /* a keep-alive connection with no request for this long is closed */
#define THREAD_STACK (512u << 10)
#define BODY_DEADLINE_S 60.0 /* a request body must arrive within this (a trickle holds a thread) */

struct tc_openai {
    struct MHD_Daemon *mhd;
    tc_openai_config cfg;
    char model_id[256];
    int port;
    long long started;
};

typedef struct oreq oreq;

/* One choice of a completion: a job of the engine (its sink's user), under
 * its request's mu. A request of n choices runs n jobs, choice i sampled
 * with seed + i, all under the request's id (one group: Abort ends all). */
typedef struct {
    oreq *r;
    int index;
    uint64_t job_id; /* 0 once the engine let go */
    int submitted, answered, finished, done;
    char *text; /* not streamed: the whole text */
    size_t tlen, tcap;
    int32_t *ids; /* not streamed: every generated id */
    size_t nids, idcap;
    tc_finish fin;
    int64_t n_gen; /* ids generated (sent or not) */
    cJSON *lp;      /* logprobs, not streamed: the whole choice's (lp_json) */
    long long lp_off; /* logprobs: the text_offset of the next token */
    int err_code;  /* failed before generating: a gRPC code */
    char err[600];
    tc_job_stats st;
} ochoice;

struct oreq {
    tc_openai *srv;
    int64_t prompt_n; /* the prompt's ids (usage of a choice that ended before it started) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs; /* MHD's (until completed) and each submitted choice's engine job (until done) */
    struct MHD_Connection *conn;
    /* the body */
    char *body;
    size_t blen, bcap;
    int too_big;
    double t_headers;
    /* the request */
    int stream, include_usage;
    int logprobs; /* asked for */
    char rid[TC_ID_MAX], id[TC_ID_MAX + 8];
    long long created;
    /* the jobs, under mu */
    int n; /* choices */
    ochoice ch[TC_OAI_MAX_N];
    int n_finished, failed, cancelled, tail_sent;
    tc_job_stats usage; /* stream: the finished choices', summed */
    char *out; /* stream: SSE bytes not yet read */
    size_t olen, ocap, ooff;
    atomic_size_t unread; /* stream: events not yet read (the engine's backpressure; read under its lock, so not under mu) */
};

/* ---- small helpers ---------------------------------------------------- */

static void req_unref(oreq *r) {
    pthread_mutex_lock(&r->mu);
    const int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!last) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->body);
    free(r->out);
    for (int i = 0; i < TC_OAI_MAX_N; i++) free(r->ch[i].text), free(r->ch[i].ids), cJSON_Delete(r->ch[i].lp);
    free(r);
}

/* appends n bytes to *buf (len, cap; mu held): 0, or -1 out of memory */
static int buf_put(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1) c *= 2;
        char *p = realloc(*buf, c);
        if (!p) return -1;
        *buf = p, *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}
static int out_put(oreq *r, const char *s, size_t n) { return buf_put(&r->out, &r->olen, &r->ocap, s, n); }

/* the engine jobs of r's choices that are still running end (mu held) */
static void cancel_all(oreq *r, int code) {
    for (int i = 0; i < r->n; i++)
        if (r->ch[i].job_id && !r->ch[i].finished) tc_engine_cancel(r->srv->cfg.engine, r->ch[i].job_id, code);
}

/* text as a C string for cJSON: a generated U+0000 would end it, so it
 * goes out as U+FFFD (as over gRPC) */
static char *text_dup(const char *t, size_t n) {
    size_t z = 0;
    for (size_t i = 0; i < n; i++) z += t[i] == 0;
    char *d = malloc(n + 2 * z + 1), *p = d;
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (t[i]) *p++ = t[i];
        else *p++ = (char)0xef, *p++ = (char)0xbf, *p++ = (char)0xbd;
    }
    *p = 0;
    return d;
}

static int http_status_of(int grpc) {
    switch (grpc) {
    case 3: return MHD_HTTP_BAD_REQUEST;         /* INVALID_ARGUMENT */
    case 5: return MHD_HTTP_NOT_FOUND;           /* NOT_FOUND (a session) */
    case 6: case 9: case 10: return MHD_HTTP_CONFLICT; /* ALREADY_EXISTS, FAILED_PRECONDITION (busy), ABORTED */
    case 8: return MHD_HTTP_TOO_MANY_REQUESTS;   /* RESOURCE_EXHAUSTED: a limit */
    case 4: return MHD_HTTP_GATEWAY_TIMEOUT;     /* DEADLINE_EXCEEDED */
    case 14: return MHD_HTTP_SERVICE_UNAVAILABLE; /* UNAVAILABLE: draining, no worker */
    case 12: return MHD_HTTP_NOT_IMPLEMENTED;
    default: return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

/* {"error": {"message", "type", "param", "code"}} as OpenAI sends it */
static char *error_json(int status, const char *param, const char *msg) {
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", status == MHD_HTTP_TOO_MANY_REQUESTS ? "rate_limit_error"
                                      : status >= 500                       ? "server_error"
                                                                            : "invalid_request_error");
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (status == MHD_HTTP_NOT_FOUND && param && strcmp(param, "model") == 0)
        cJSON_AddStringToObject(e, "code", "model_not_found");
    else cJSON_AddNullToObject(e, "code");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, char *json /* freed */) {
    if (!json) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(json); return MHD_NO; }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, POST");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result vsend_error(struct MHD_Connection *c, unsigned status, const char *param, const char *fmt,
                                   va_list ap) {
    char msg[700];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return send_json(c, status, error_json((int)status, param, msg));
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = vsend_error(c, status, param, fmt, ap);
    va_end(ap);
    return ret;
}

/* a completion refused before the engine saw it: counted as the engine
 * counts its own refusals (rejected), then the error */
static enum MHD_Result reject(struct MHD_Connection *c, unsigned status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result reject(struct MHD_Connection *c, unsigned status, const char *param, const char *fmt, ...) {
    tc_metric_inc(TC_M_requests_total_rejected, 1);
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = vsend_error(c, status, param, fmt, ap);
    va_end(ap);
    return ret;
}

/* An engine message "field: why" names its field as the gRPC API does
 * (sampling.max_tokens, token_ids[3]): for the common ones, msg is
 * rewritten to OpenAI's name (max_tokens, prompt[3]) and that name goes
 * to *param (else NULL). */
static void openai_names(char *msg, size_t cap, const char **param) {
    static const char *const map[][2] = {
        {"sampling.max_tokens", "max_tokens"}, {"sampling.temperature", "temperature"}, {"sampling.top_p", "top_p"},
        {"sampling.top_k", "top_k"},           {"sampling.stop_token_ids", "stop_token_ids"}, {"sampling.stop", "stop"},
        {"token_ids", "prompt"},               {"text", "prompt"},                      {"prompt", "prompt"},
        {"session_id", "session_id"},          {"request_id", "X-Request-Id"},
    };
    *param = NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const size_t k = strlen(map[i][0]);
        if (strncmp(msg, map[i][0], k) != 0 || (msg[k] != ':' && msg[k] != '[')) continue;
        char rest[700];
        snprintf(rest, sizeof rest, "%s", msg + k);
        const size_t m = strlen(map[i][1]);
        if (m + strlen(rest) + 1 > cap) return; /* as it was: never cut a message */
        memcpy(msg, map[i][1], m);
        memcpy(msg + m, rest, strlen(rest) + 1);
        *param = map[i][1];
        return;
    }
}

/* How a job's end reads in the API: a finish_reason ("length", "stop" for
 * EOS and stop strings or ids, "abort" for an Abort or a client that hung
 * up, as vLLM says), or NULL and *status, the HTTP status of an error (a
 * shutdown or a lost worker 503, else 500). Streams and JSON alike. */
static const char *end_of(tc_finish fin, const char *err, int *status) {
    switch (fin) {
    case TC_FINISH_LENGTH: return "length";
    case TC_FINISH_EOS:
    case TC_FINISH_STOP: return "stop";
    case TC_FINISH_CANCELLED:
        if (err && strstr(err, "shutting down")) break;
        return "abort";
    default:
        if (err && strstr(err, "unavailable")) break;
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return NULL;
    }
    *status = MHD_HTTP_SERVICE_UNAVAILABLE;
    return NULL;
}

static cJSON *usage_json(const tc_job_stats *st) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)st->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)st->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(st->prompt_tokens + st->completion_tokens));
    return u;
}

/* A token as logprobs name it: its text (bytes that are not whole UTF-8
 * characters as U+FFFD, as in the completion's text), or "token_id:N"
 * without a tokenizer or for an id past its vocabulary, as vLLM does.
 * Into buf [cap]; its length in characters to *chars. */
static const char *token_str(const struct tc_bpe *bpe, int32_t id, char *buf, size_t cap, long long *chars) {
    size_t n = 0;
    const uint8_t *b = bpe && id >= 0 && id < tc_bpe_vocab_size(bpe) ? tc_bpe_token_bytes(bpe, id, &n) : NULL;
    if (b && 3 * n < cap) {
        n = tc_utf8_sanitize(b, n, (uint8_t *)buf);
        buf[n] = 0;
        for (size_t i = 0; i < n; i++) /* a U+0000 goes out as U+FFFD, as in the text (text_dup) */
            if (!buf[i]) {
                if (n + 3 >= cap) break;
                memmove(buf + i + 3, buf + i + 1, n - i);
                buf[i] = (char)0xef, buf[i + 1] = (char)0xbf, buf[i + 2] = (char)0xbd;
                n += 2;
            }
    } else snprintf(buf, cap, "token_id:%d", (int)id), n = strlen(buf);
    long long k = 0;
    for (size_t i = 0; i < n; i++) k += ((uint8_t)buf[i] & 0xc0) != 0x80;
    *chars = k;
    return buf;
}

/* adds item to arr (both may be NULL after an allocation failed): 0, or
 * -1 with item freed */
static int put(cJSON *arr, cJSON *item) {
    if (arr && item && cJSON_AddItemToArray(arr, item)) return 0;
    cJSON_Delete(item);
    return -1;
}

/* Appends n tokens' logprobs to an OpenAI logprobs object (created into
 * *o when NULL): tokens, token_logprobs, top_logprobs (a {token: logprob}
 * of the most likely, and the sampled one, as OpenAI and vLLM send) and
 * text_offset (characters into the completion's text, counted from *off,
 * which advances). lp NULL (the tokens a resumed generation re-sends):
 * the tokens and offsets, null logprobs. -inf goes out as -9999.0, as
 * vLLM clamps it (JSON has no infinity). 0, or -1 out of memory. */
static int lp_json(cJSON **o, const struct tc_bpe *bpe, const int32_t *ids, const tc_logprob *lp, int n,
                   long long *off) {
    if (!*o) {
        *o = cJSON_CreateObject();
        if (!*o || !cJSON_AddArrayToObject(*o, "tokens") || !cJSON_AddArrayToObject(*o, "token_logprobs") ||
            !cJSON_AddArrayToObject(*o, "top_logprobs") || !cJSON_AddArrayToObject(*o, "text_offset"))
            return -1;
    }
    cJSON *tk = cJSON_GetObjectItemCaseSensitive(*o, "tokens"), *tl = cJSON_GetObjectItemCaseSensitive(*o, "token_logprobs"),
          *tt = cJSON_GetObjectItemCaseSensitive(*o, "top_logprobs"), *to = cJSON_GetObjectItemCaseSensitive(*o, "text_offset");
#define LPV(x) cJSON_CreateNumber((x) > -9999.f ? (double)(x) : -9999.0)
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char buf[1024];
        long long chars;
        const char *s = token_str(bpe, ids[i], buf, sizeof buf, &chars);
        cJSON *top = lp ? cJSON_CreateObject() : cJSON_CreateNull();
        for (int k = 0; lp && top && k < lp[i].n_top; k++) { /* two tokens of one text: the more likely one's */
            char tb[1024];
            long long tc;
            const char *ts = token_str(bpe, lp[i].top_id[k], tb, sizeof tb, &tc);
            if (!cJSON_GetObjectItemCaseSensitive(top, ts)) bad |= !cJSON_AddItemToObject(top, ts, LPV(lp[i].top_logprob[k]));
        }
        if (lp && top && !cJSON_GetObjectItemCaseSensitive(top, s)) bad |= !cJSON_AddItemToObject(top, s, LPV(lp[i].logprob));
        bad |= put(tk, cJSON_CreateString(s)) | put(tl, lp ? LPV(lp[i].logprob) : cJSON_CreateNull()) | put(tt, top) |
               put(to, cJSON_CreateNumber((double)*off));
        *off += chars;
    }
#undef LPV
    return bad ? -1 : 0;
}

/* one choice: its text and token ids (tconst's extension), logprobs
 * (taken; NULL: null), finish (NULL: null) */
static cJSON *choice_json(int index, const char *text, const int32_t *ids, int n, cJSON *logprobs, const char *finish) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    cJSON_AddStringToObject(c, "text", text);
    cJSON *ia = cJSON_AddArrayToObject(c, "token_ids");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(ia, cJSON_CreateNumber(ids[i]));
    if (logprobs) cJSON_AddItemToObject(c, "logprobs", logprobs);
    else cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

/* a completion object with these choices (taken: an array, one choice, or
 * NULL: none, the usage chunk of a stream), usage (NULL: left out) */
static char *completion_json(const oreq *r, cJSON *choices, const tc_job_stats *usage) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", r->srv->model_id);
    if (choices && cJSON_IsArray(choices)) cJSON_AddItemToObject(o, "choices", choices);
    else {
        cJSON *ch = cJSON_AddArrayToObject(o, "choices");
        if (choices) cJSON_AddItemToArray(ch, choices);
    }
    if (usage) cJSON_AddItemToObject(o, "usage", usage_json(usage));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* the usage of a request: the prompt once, every choice's completion */
static void usage_add(tc_job_stats *u, const tc_job_stats *st) {
    if (st->prompt_tokens > u->prompt_tokens) u->prompt_tokens = st->prompt_tokens;
    u->completion_tokens += st->completion_tokens;
}

static int sse_put(oreq *r, char *json /* freed */) {
    if (!json) return -1;
    int rc = out_put(r, "data: ", 6) | out_put(r, json, strlen(json)) | out_put(r, "\n\n", 2);
    free(json);
    r->unread++;
    return rc;
}

/* ---- the engine's sink (engine thread; never blocks) ------------------- */

static void sk_appended(void *user, const tc_session_info *si, int64_t n) {
    (void)user, (void)si, (void)n; /* a completion always generates: its end comes as tokens */
}

static int is_done(const oreq *r);

/* A stream's tail (mu held): once every choice has ended and the engine let
 * go of each (its session free for the next request, its length final), the
 * usage chunk (asked for, nothing failed) and [DONE]. A client acting on
 * [DONE] (a GetSession, the session's next request) finds the session as
 * the completion left it. 0, or -1 when they did not fit in memory. */
static int stream_tail(oreq *r) {
    int oom = 0;
    if (r->stream && !r->tail_sent && r->n_finished == r->n && is_done(r)) {
        r->tail_sent = 1;
        if (!r->failed && r->include_usage) oom |= sse_put(r, completion_json(r, NULL, &r->usage));
        oom |= out_put(r, "data: [DONE]\n\n", 14);
        r->unread++;
    }
    return oom;
}

/* a choice ended (mu held): counted once; one that failed ends its
 * siblings (the request as a whole fails); the stream's tail follows
 * the last (stream_tail, once the engine let go of every choice). 0, or
 * -1 when it did not fit in memory. */
static int choice_end(ochoice *c, int failed) {
    oreq *r = c->r;
    if (c->finished) return 0;
    c->finished = 1;
    r->n_finished++;
    if (failed && !r->failed) {
        r->failed = 1;
        if (r->n > 1) cancel_all(r, 1);
    }
    return stream_tail(r);
}

static void sk_tokens(void *user, const int32_t *ids, const tc_logprob *lp, int n, const char *text, size_t tlen,
                      tc_finish fin, const tc_job_stats *st, const char *error) {
    ochoice *c = user;
    oreq *r = c->r;
    char *t = text_dup(text, tlen);
    pthread_mutex_lock(&r->mu);
    int oom = !t, hs = 0;
    const char *why = fin != TC_FINISH_NONE ? end_of(fin, error, &hs) : NULL;
    c->n_gen += n;
    const struct tc_bpe *bpe = r->srv->cfg.bpe;
    if (t && r->stream) {
        const int ok_end = fin != TC_FINISH_NONE && why;
        cJSON *lj = NULL; /* this chunk's tokens' (an empty object for none: the field is there while asked) */
        if (r->logprobs && (n > 0 || tlen > 0 || ok_end)) oom |= lp_json(&lj, bpe, ids, lp, n, &c->lp_off);
        if (n > 0 || tlen > 0 || ok_end)
            oom |= sse_put(r, completion_json(r, choice_json(c->index, t, ids, n, lj, ok_end ? why : NULL), NULL));
        else cJSON_Delete(lj);
        if (fin != TC_FINISH_NONE && !why) oom |= sse_put(r, error_json(hs, NULL, error ? error : "failed"));
        if (fin != TC_FINISH_NONE && st) usage_add(&r->usage, st);
    } else if (t) {
        oom |= buf_put(&c->text, &c->tlen, &c->tcap, t, strlen(t));
        if (c->nids + (size_t)n > c->idcap) {
            size_t cap = c->idcap ? c->idcap : 64;
            while (cap < c->nids + (size_t)n) cap *= 2;
            int32_t *p = realloc(c->ids, cap * sizeof *p);
            if (p) c->ids = p, c->idcap = cap;
            else oom = 1;
        }
        if (!oom && n > 0) memcpy(c->ids + c->nids, ids, (size_t)n * sizeof *ids), c->nids += (size_t)n;
        if (!oom && r->logprobs) oom |= lp_json(&c->lp, bpe, ids, lp, n, &c->lp_off);
    }
    if (oom && fin == TC_FINISH_NONE && c->job_id) /* cannot keep the text: end it rather than lose some silently */
        tc_engine_cancel(r->srv->cfg.engine, c->job_id, 13);
    if (fin != TC_FINISH_NONE) {
        c->fin = oom ? TC_FINISH_ERROR : fin;
        if (st) c->st = *st;
        if (fin == TC_FINISH_ERROR || fin == TC_FINISH_CANCELLED || oom)
            snprintf(c->err, sizeof c->err, "%s", oom ? "out of memory" : error ? error : "cancelled");
        if (choice_end(c, oom || !why)) c->fin = TC_FINISH_ERROR;
    }
    c->answered = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(t);
}

static void sk_failed(void *user, int code, const char *msg) {
    if (code == 1) { /* cancelled before its first token (an Abort while it queued or prefilled): an end, as vLLM */
        tc_job_stats st = {0};
        st.prompt_tokens = ((ochoice *)user)->r->prompt_n;
        sk_tokens(user, NULL, NULL, 0, "", 0, TC_FINISH_CANCELLED, &st, msg);
        return;
    }
    ochoice *c = user;
    oreq *r = c->r;
    pthread_mutex_lock(&r->mu);
    c->err_code = code ? code : 13;
    snprintf(c->err, sizeof c->err, "%s", msg ? msg : "failed");
    c->answered = 1;
    c->fin = TC_FINISH_ERROR;
    (void)choice_end(c, 1);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void sk_done(void *user) {
    ochoice *c = user;
    oreq *r = c->r;
    pthread_mutex_lock(&r->mu);
    c->done = c->answered = 1;
    (void)choice_end(c, 0);
    (void)stream_tail(r); /* this was the last one the engine held */
    c->job_id = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

static size_t sk_backlog(void *user) { return atomic_load(&((ochoice *)user)->r->unread); }

static double sk_deadline(void *user) {
    (void)user;
    return INFINITY;
}

static const tc_engine_sink SINK = {sk_appended, sk_tokens, sk_failed, sk_done, sk_backlog, sk_deadline};

/* ---- waiting ------------------------------------------------------------ */

/* 1 when the client has hung up (its socket reads end-of-stream or an error) */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* waits (mu held) until cond(r) or the client hangs up (then cancels the
 * job, once): 1 when cond holds */
static int wait_until(oreq *r, int (*cond)(const oreq *)) {
    while (!cond(r)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        /* after every wake, not only a timeout: a JSON completion's tokens
         * wake it every run, more often than POLL_MS */
        if (!cond(r) && client_gone(r->conn)) {
            if (!r->cancelled) cancel_all(r, 1);
            r->cancelled = 1;
            return 0;
        }
    }
    return 1;
}

/* every submitted choice has its first answer / has finished / and the engine let go of it */
static int is_answered(const oreq *r) {
    for (int i = 0; i < r->n; i++)
        if (r->ch[i].submitted && !r->ch[i].answered) return 0;
    return 1;
}
static int is_finished(const oreq *r) {
    for (int i = 0; i < r->n; i++)
        if (r->ch[i].submitted && !r->ch[i].finished) return 0;
    return 1;
}
static int is_done(const oreq *r) {
    for (int i = 0; i < r->n; i++)
        if (r->ch[i].submitted && !r->ch[i].done) return 0;
    return 1;
}
/* a JSON completion answers once its choices ended and the engine let go
 * of them: a client acting on the response (a GetSession, the session's
 * next request) finds the session as the completion left it */
static int is_settled(const oreq *r) { return is_finished(r) && is_done(r); }
static int has_output(const oreq *r) { return r->ooff < r->olen || (is_finished(r) && is_done(r)); }

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    oreq *r = cls;
    pthread_mutex_lock(&r->mu);
    if (!wait_until(r, has_output)) {
        pthread_mutex_unlock(&r->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (r->ooff == r->olen) { /* all sent, and the engine let go */
        pthread_mutex_unlock(&r->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = r->olen - r->ooff;
    if (n > max) n = max;
    memcpy(buf, r->out + r->ooff, n);
    r->ooff += n;
    int wake = 0;
    if (r->ooff == r->olen) { /* every event read: the engine may step this stream again */
        wake = r->unread >= (size_t)tc_engine_get_limits(r->srv->cfg.engine)->stream_queue;
        r->ooff = r->olen = 0;
        r->unread = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (wake) tc_engine_wake(r->srv->cfg.engine);
    return (ssize_t)n;
}

/* ---- the request -------------------------------------------------------- */

/* a request without a seed samples from a fresh one (as OpenAI's API does) */
static uint64_t fresh_seed(const void *salt) {
    uint64_t seed;
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&seed, sizeof seed, 1, ur) != 1) seed = (uint64_t)(tc_now_s() * 1e9) ^ (uint64_t)(uintptr_t)salt;
    if (ur) fclose(ur);
    return seed;
}

static enum MHD_Result completions(tc_openai *s, struct MHD_Connection *c, oreq *r) {
    const char *hrid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (hrid && strlen(hrid) >= TC_ID_MAX)
        return reject(c, MHD_HTTP_BAD_REQUEST, "X-Request-Id", "X-Request-Id: longer than %d bytes", TC_ID_MAX - 1);
    snprintf(r->rid, sizeof r->rid, "%s", hrid ? hrid : "");
    tc_oai_request p;
    char err[600];
    const char *param = NULL;
    const int pr = tc_oai_parse(&p, r->body ? r->body : "", r->blen, s->model_id, s->cfg.has_tokenizer, &param, err,
                                sizeof err);
    if (pr != 0) {
        enum MHD_Result ret = reject(c, (unsigned)pr, param, "%s", err);
        tc_oai_request_free(&p);
        return ret;
    }
    r->stream = p.stream, r->include_usage = p.include_usage;
    r->logprobs = p.sp.logprobs;
    r->n = p.n;
    if (!p.seed_given) p.sp.sp.seed = fresh_seed(r);
    const uint64_t seed0 = p.sp.sp.seed;
    static _Atomic uint64_t groups;
    p.sp.request_id = r->rid;
    p.sp.request_group = r->n > 1 ? atomic_fetch_add(&groups, 1) + 1 : 0;
    p.sp.sink = &SINK;
    int32_t *toks = NULL;
    size_t nt = 0;
    int code = tc_engine_prepare(s->cfg.engine, &p.sp, &toks, &nt, err, sizeof err);
    r->prompt_n = (int64_t)nt;
    if (code == 0) {
        pthread_mutex_lock(&r->mu); /* the sinks may not see r before the job ids are set */
        for (int i = 0; i < r->n && code == 0; i++) {
            ochoice *oc = &r->ch[i];
            oc->r = r, oc->index = i;
            /* submit_prepared owns the tokens it is given: every choice but
             * the last gets a copy */
            int32_t *ti = toks;
            if (i + 1 < r->n && !(ti = malloc((nt ? nt : 1) * sizeof *ti))) {
                code = 8;
                snprintf(err, sizeof err, "out of memory for %d choices of %zu prompt tokens", r->n, nt);
                break;
            }
            if (ti != toks) memcpy(ti, toks, nt * sizeof *ti);
            else toks = NULL;
            p.sp.sp.seed = seed0 + (uint64_t)i; /* choice i: seed + i */
            p.sp.user = oc;
            r->refs++; /* the engine's */
            code = tc_engine_submit_prepared(s->cfg.engine, &p.sp, ti, nt, &oc->job_id, r->rid, err, sizeof err);
            if (code != 0) r->refs--;
            else oc->submitted = 1;
        }
        if (code != 0) { /* the choices already running end: the request fails as a whole */
            r->failed = r->cancelled = 1;
            cancel_all(r, 1);
        }
        snprintf(r->id, sizeof r->id, "cmpl-%s", r->rid); /* before the sink's first chunk can read it */
        pthread_mutex_unlock(&r->mu);
    }
    free(toks);
    tc_oai_request_free(&p);
    if (code != 0) {
        openai_names(err, sizeof err, &param);
        return send_error(c, (unsigned)http_status_of(code), param, "%s", err);
    }
    /* the first answers: a refusal or failure is still an HTTP status */
    pthread_mutex_lock(&r->mu);
    if (!wait_until(r, r->stream ? is_answered : is_settled)) {
        pthread_mutex_unlock(&r->mu);
        return MHD_NO; /* the client is gone: close */
    }
    /* refused or failed before a first token (a stream too: its status
     * line is not out yet): the choice whose own failure it was, not a
     * sibling it cancelled on the way (code 1), answers */
    int pick = -1, pick_st = 0;
    for (int i = 0; i < r->n; i++) {
        const ochoice *ci = &r->ch[i];
        int est = 0;
        if (ci->err_code || (ci->finished && !ci->n_gen && !end_of(ci->fin, ci->err, &est))) {
            if (pick < 0 || (r->ch[pick].err_code == 1 && ci->err_code != 1))
                pick = i, pick_st = ci->err_code ? http_status_of(ci->err_code) : est;
        }
    }
    if (pick >= 0) { /* the other choices end */
        snprintf(err, sizeof err, "%s", r->ch[pick].err);
        r->failed = r->cancelled = 1;
        cancel_all(r, 1);
        pthread_mutex_unlock(&r->mu);
        openai_names(err, sizeof err, &param);
        return send_error(c, (unsigned)pick_st, param, "%s", err);
    }
    if (r->stream) {
        pthread_mutex_unlock(&r->mu);
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, r, NULL);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(resp, "X-Request-Id", r->rid);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    /* the whole completion: every choice, or the first error */
    int st = MHD_HTTP_OK;
    char *body = NULL;
    cJSON *choices = cJSON_CreateArray();
    tc_job_stats usage = {0};
    for (int i = 0; i < r->n && choices; i++) {
        ochoice *ci = &r->ch[i];
        const char *why = end_of(ci->fin, ci->err, &st);
        if (!why) {
            body = error_json(st, NULL, ci->err);
            cJSON_Delete(choices);
            choices = NULL;
            break;
        }
        if (r->logprobs && !ci->lp) (void)lp_json(&ci->lp, NULL, NULL, NULL, 0, &ci->lp_off); /* none generated */
        cJSON *lj = ci->lp; /* taken by the choice */
        ci->lp = NULL;
        cJSON_AddItemToArray(choices, choice_json(i, ci->text ? ci->text : "", ci->ids, (int)ci->nids, lj, why));
        usage_add(&usage, &ci->st);
    }
    if (choices) body = completion_json(r, choices, &usage);
    pthread_mutex_unlock(&r->mu);
    struct MHD_Response *resp = NULL;
    if (body && (resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE))) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, "X-Request-Id", r->rid);
        enum MHD_Result ret = MHD_queue_response(c, (unsigned)st, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    free(body);
    return MHD_NO;
}

static enum MHD_Result models(tc_openai *s, struct MHD_Connection *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)s->started);
    cJSON_AddStringToObject(m, "owned_by", "tconst");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), m);
    char *j = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return send_json(c, MHD_HTTP_OK, j);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls) {
    (void)version;
    tc_openai *s = cls;
    const int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    const int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (strcmp(url, "/v1/completions") != 0) {
        if (strcmp(url, "/v1/models") == 0 && get) return models(s, c);
        if (strcmp(url, "/health") == 0 && get) {
            const int ok = !s->cfg.ready || s->cfg.ready(s->cfg.ud) == 1;
            return send_json(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                             strdup(ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}"));
        }
        if (strcmp(url, "/v1/models") == 0 || strcmp(url, "/health") == 0)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, "%s takes GET", url);
        if (strcmp(url, "/v1/chat/completions") == 0)
            return send_error(c, MHD_HTTP_NOT_FOUND, NULL,
                              "/v1/chat/completions: this model has no chat template; use /v1/completions");
        return send_error(c, MHD_HTTP_NOT_FOUND, NULL, "%s: not found (POST /v1/completions, GET /v1/models)", url);
    }
    if (!post) return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, NULL, "/v1/completions takes POST");
    oreq *r = *con_cls;
    if (!r) { /* the headers: a request object, held by MHD until completed() */
        /* a client that waits for "100 Continue" before its body hears
         * 413 instead, and sends nothing. One that sends at once is read
         * to the end first (bounded by BODY_DEADLINE_S): an answer while it
         * still sends would be lost to the reset that closing on unread
         * data causes */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        if (cl && ex && strcasecmp(ex, "100-continue") == 0 &&
            strtoull(cl, NULL, 10) > (unsigned long long)s->cfg.max_body_bytes)
            return reject(c, 413, NULL, "the request body (Content-Length %s) is over %lld bytes (tconstd "
                          "--max-message-bytes)", cl, s->cfg.max_body_bytes);
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->srv = s;
        r->conn = c;
        r->refs = 1;
        r->created = (long long)time(NULL);
        r->t_headers = tc_now_s();
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a piece of the body */
        const size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (tc_now_s() - r->t_headers > BODY_DEADLINE_S) { /* a trickle (or an endless body) holds a thread */
            TC_LOG(TC_LOG_WARN, "openai", "a request body took over %.0f s to arrive: connection closed",
                   BODY_DEADLINE_S);
            return MHD_NO;
        }
        if (r->too_big) return MHD_YES; /* read and dropped: 413 at its end */
        if (r->blen + n > (size_t)s->cfg.max_body_bytes) {
            r->too_big = 1;
            return MHD_YES;
        }
        if (r->blen + n > r->bcap) {
            size_t cap = r->bcap ? r->bcap : 4096;
            while (cap < r->blen + n) cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b) { r->too_big = 1; return MHD_YES; }
            r->body = b, r->bcap = cap;
        }
        memcpy(r->body + r->blen, upload_data, n);
        r->blen += n;
        return MHD_YES;
    }
    if (r->too_big)
        return reject(c, 413, NULL, "the request body is over %lld bytes (tconstd --max-message-bytes)",
                      s->cfg.max_body_bytes);
    return completions(s, c, r);
}

/* the request is over (answered, or the client left): a job still running
 * is cancelled; MHD's reference goes */
static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)c, (void)toe;
    tc_openai *s = cls;
    oreq *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    (void)s;
    pthread_mutex_lock(&r->mu);
    if (!r->cancelled) {
        r->cancelled = 1;
        cancel_all(r, 1);
    }
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

tc_status tc_openai_start(tc_openai **out, const char *listen_addr, const tc_openai_config *cfg) {
    *out = NULL;
    tc_openai *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "openai: out of memory");
    s->cfg = *cfg;
    snprintf(s->model_id, sizeof s->model_id, "%s", cfg->model_id ? cfg->model_id : "tconst");
    s->cfg.model_id = s->model_id;
    s->started = (long long)time(NULL);
    int fd = -1;
    tc_status st = tc_http_bind("openai", listen_addr, &fd, &s->port);
    if (st != TC_OK) { free(s); return st; }
    /* blocking accept()s are MHD's: the thread-per-connection mode wants a
     * blocking listening socket */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    s->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
                              NULL, NULL, handle, s, MHD_OPTION_EXTERNAL_LOGGER, tc_http_mhd_log, (void *)"openai",
                              MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)(cfg->max_connections > 0 ? cfg->max_connections : 256),
                              MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S, MHD_OPTION_THREAD_STACK_SIZE,
                              (size_t)THREAD_STACK, MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
    if (!s->mhd) {
        if (fcntl(fd, F_GETFD) != -1) close(fd);
        free(s);
        return TC_FAIL(TC_ERR_IO, "openai listen address \"%s\": libmicrohttpd failed to start", listen_addr);
    }
    TC_LOG(TC_LOG_INFO, "openai", "OpenAI-compatible API on %s (port %d): POST /v1/completions, GET /v1/models",
           listen_addr, s->port);
    *out = s;
    return TC_OK;
}

int tc_openai_port(const tc_openai *s) { return s ? s->port : 0; }

void tc_openai_stop(tc_openai *s) {
    if (!s) return;
    MHD_stop_daemon(s->mhd);
    free(s);
}
