/* fuzz_request.c — every public request (tconst.v1.TConst, grpc.health.v1,
 * server reflection) as tconstd decodes, validates and admits it: the real
 * daemon/service.c and daemon/engine.c, with rpc.c replaced by an
 * in-process fake call (below) and the model by a stub worker client that
 * returns fixed logits, so a request costs microseconds.
 *
 * Input: up to 4 calls run one after another on one engine (so a call can
 * use a session an earlier one opened). A call is
 *   [method byte][flags byte][n frames byte] then n frames [u16 LE len][bytes]
 * (a short last frame takes what is left). Frame 0 is the first request
 * message (none: the client half-closed at once); later frames go to
 * client-streaming methods whenever the service asks for the next message,
 * then a half-close. flags bit 0: the client cancels after frame 0; bit 1:
 * the call is over before its first message (on_done, then on_start NULL);
 * bit 2: a receive still queued behind the close completes after on_done
 * (on_message NULL), an order rpc.c's one completion queue can deliver.
 *
 * Checked besides memory safety and leaks: every call the client did not
 * cancel ends with exactly one status once the engine is quiet (a unary
 * call never hangs), and no callback touches a call after it is done. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "daemon/engine.h"
#include "daemon/rpc.h"
#include "daemon/service.h"
#include "fuzz.h"
#include "memfile.h"
#include "tokenizer/bpe.h"

/* ---- the fake call: what rpc.c gives the service ---- */

struct tc_call {
    atomic_int refs;
    void *user;
    const char *method;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished, code, done, recv_req;
    size_t n_sent;
};

void tc_call_ref(tc_call *c) { atomic_fetch_add(&c->refs, 1); }
void tc_call_unref(tc_call *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
    }
}
void tc_call_set_user(tc_call *c, void *p) { c->user = p; }
void *tc_call_user(const tc_call *c) { return c->user; }
const char *tc_call_method(const tc_call *c) { return c->method; }
void tc_call_recv_next(tc_call *c) {
    pthread_mutex_lock(&c->mu);
    c->recv_req++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}
tc_status tc_call_send(tc_call *c, const uint8_t *msg, size_t len) {
    (void)msg;
    (void)len;
    pthread_mutex_lock(&c->mu);
    int ok = !c->done && !c->finished;
    if (ok) c->n_sent++;
    pthread_mutex_unlock(&c->mu);
    return ok ? TC_OK : TC_ERR_INVALID;
}
size_t tc_call_pending(tc_call *c) {
    (void)c;
    return 0; /* a fast reader */
}
void tc_call_finish(tc_call *c, int code, const char *message) {
    (void)message;
    pthread_mutex_lock(&c->mu);
    if (!c->finished && !c->done) {
        c->finished = 1;
        c->code = code;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}
int tc_call_is_done(tc_call *c) {
    pthread_mutex_lock(&c->mu);
    int d = c->done;
    pthread_mutex_unlock(&c->mu);
    return d;
}
double tc_call_deadline_left(const tc_call *c) {
    (void)c;
    return INFINITY;
}

/* ---- a stub worker: sessions are a length, logits a fixed pattern ---- */

typedef struct {
    int64_t len;
} stub_sess;

static tc_model_config g_cfg;

static tc_status w_new(tc_worker_client *w, tc_wc_session **out) {
    (void)w;
    stub_sess *s = calloc(1, sizeof *s);
    if (!s) return TC_ERR_NOMEM;
    *out = (tc_wc_session *)s;
    return TC_OK;
}
static void w_free_s(tc_worker_client *w, tc_wc_session *s) {
    (void)w;
    free(s);
}
static void fill(float *lg, int64_t len, int32_t t) {
    int V = g_cfg.vocab_size;
    memset(lg, 0, (size_t)V * sizeof *lg);
    lg[(len * 7 + t) % V] = 4.f;
    lg[(len * 13 + 5) % V] = 3.f;
}
static tc_status w_append(tc_worker_client *w, tc_wc_session *s, const int32_t *t, int64_t n, float *logits) {
    (void)w;
    stub_sess *x = (stub_sess *)s;
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= g_cfg.vocab_size) abort(); /* the engine validates ids before this */
    x->len += n;
    if (logits) fill(logits, x->len, n ? t[n - 1] : 0);
    return TC_OK;
}
static tc_status w_sync(tc_worker_client *w, tc_wc_session *s) {
    (void)w;
    (void)s;
    return TC_OK;
}
static tc_status w_step(tc_worker_client *w, tc_wc_session **s, const int32_t *t, int B, tc_sampler **smp,
                        int32_t *next, float *logits, tc_row_status *rows) {
    (void)w;
    static float lg[1 << 16];
    for (int b = 0; b < B; b++) {
        if (rows) rows[b].st = TC_OK;
        stub_sess *x = (stub_sess *)s[b];
        if (t[b] < 0 || t[b] >= g_cfg.vocab_size) abort();
        x->len++;
        float *l = logits ? logits + (size_t)b * g_cfg.vocab_size : lg;
        fill(l, x->len, t[b]);
        if (smp) next[b] = tc_sampler_sample(smp[b], l);
    }
    return TC_OK;
}
static void w_stats(tc_worker_client *w, const tc_wc_session *s, tc_wc_session_stats *o) {
    (void)w;
    o->length = ((const stub_sess *)s)->len;
    o->syncs = o->length / 32;
    o->state_bytes = 4096;
    o->sync_due = 0;
}

static int64_t w_history(tc_worker_client *w, const tc_wc_session *s, int32_t *out, int64_t max) {
    (void)w;
    const int64_t n = ((const stub_sess *)s)->len; /* the stub keeps no ids: zeros stand in */
    if (out && max >= n && n > 0) memset(out, 0, (size_t)n * 4);
    return n;
}

static tc_worker_client g_wc = {.cfg = &g_cfg, .device = "cpu", .dtype = "F32", .n_params = 1000,
                                .session_new = w_new, .session_free = w_free_s, .append = w_append,
                                .sync = w_sync, .step = w_step, .stats = w_stats, .history = w_history};

/* ---- a small tokenizer: the 256 byte tokens and 256 two-letter merges,
 * 512 ids like the tiny preset ---- */

static tc_bpe *g_bpe;

static size_t put_cp(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static tc_bpe *mini_bpe(void) {
    uint32_t cp[256];
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
    }
    static char vocab[32768], merges[8192];
    size_t v = 0, m = 0;
    int id = 0;
    vocab[v++] = '{';
    for (int b = 0; b < 256; b++) {
        v += (size_t)snprintf(vocab + v, sizeof vocab - v, "%s\"", id ? "," : "");
        if (cp[b] == '"' || cp[b] == '\\') vocab[v++] = '\\';
        v += put_cp(vocab + v, cp[b]);
        v += (size_t)snprintf(vocab + v, sizeof vocab - v, "\":%d", id++);
    }
    m += (size_t)snprintf(merges, sizeof merges, "#version: 0.2\n");
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            char a = (char)('a' + i), b = (char)('a' + j);
            v += (size_t)snprintf(vocab + v, sizeof vocab - v, ",\"%c%c\":%d", a, b, id++);
            m += (size_t)snprintf(merges + m, sizeof merges - m, "%c %c\n", a, b);
        }
    vocab[v++] = '}';
    char vp[64], mp[64];
    int vfd = tc_fuzz_memfile((const uint8_t *)vocab, v, vp, sizeof vp);
    int mfd = tc_fuzz_memfile((const uint8_t *)merges, m, mp, sizeof mp);
    tc_bpe *bpe = NULL;
    if (tc_bpe_load_files(&bpe, vp, mp) != TC_OK) {
        fprintf(stderr, "fuzz_request: mini tokenizer: %s\n", tc_error_get());
        abort();
    }
    close(vfd);
    close(mfd);
    return bpe;
}

/* ---- counting admissions, so the harness knows when the engine is quiet ---- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static long g_admitted, g_retired;

int __real_tc_engine_submit_prepared(tc_engine *e, const tc_job_spec *spec, int32_t *toks, size_t nt,
                                     uint64_t *job_id, char *rid, char *msg, size_t n);
int __wrap_tc_engine_submit_prepared(tc_engine *e, const tc_job_spec *spec, int32_t *toks, size_t nt,
                                     uint64_t *job_id, char *rid, char *msg, size_t n) {
    pthread_mutex_lock(&g_mu); /* counted first: the job may retire before submit returns */
    g_admitted++;
    pthread_mutex_unlock(&g_mu);
    int code = __real_tc_engine_submit_prepared(e, spec, toks, nt, job_id, rid, msg, n);
    if (code != 0) {
        pthread_mutex_lock(&g_mu);
        g_admitted--;
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
    }
    return code;
}

static tc_engine_sink g_sink;
static void sink_done(void *user) {
    tc_service_sink()->done(user);
    pthread_mutex_lock(&g_mu);
    g_retired++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static tc_service *g_svc;
static void wait_quiet(void) {
    tc_service_wait_queue(g_svc); /* a request over 16 KiB: its handler runs on the service's own threads */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&g_mu);
    while (g_admitted != g_retired)
        if (pthread_cond_timedwait(&g_cv, &g_mu, &dl) != 0) {
            fprintf(stderr, "fuzz_request: a job did not end within 20 s\n");
            abort();
        }
    pthread_mutex_unlock(&g_mu);
}

static int g_verbose; /* TC_FUZZ_VERBOSE=1: one line per call */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    tc_log_level_cur = -1; /* quiet: refusals are expected */
    g_verbose = getenv("TC_FUZZ_VERBOSE") != NULL;
    if (tc_config_preset(&g_cfg, "tiny", TC_ARCH_TCONST) != TC_OK) abort();
    g_bpe = mini_bpe();
    if (tc_bpe_vocab_size(g_bpe) != g_cfg.vocab_size) abort();
    tc_service_info info = {"fuzz", "0.1.0", 1 << 22, 0};
    if (tc_service_init(&g_svc, NULL, &g_wc, g_bpe, &info) != TC_OK) abort();
    tc_service_set_serving(g_svc, 1, 0);
    g_sink = *tc_service_sink();
    g_sink.done = sink_done;
    return 0;
}

static const char *const METHODS[] = {
    "/tconst.v1.TConst/Generate", "/tconst.v1.TConst/GenerateInSession", "/tconst.v1.TConst/OpenSession",
    "/tconst.v1.TConst/Append", "/tconst.v1.TConst/Stream", "/tconst.v1.TConst/GetSession",
    "/tconst.v1.TConst/CloseSession", "/tconst.v1.TConst/Abort", "/tconst.v1.TConst/Tokenize",
    "/tconst.v1.TConst/Detokenize", "/tconst.v1.TConst/ModelInfo", "/tconst.v1.TConst/ServerInfo",
    "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "/tconst.v1.TConst/NoSuchMethod",
    "/tconst.v1.TConst/SnapshotSession", /* after the rest: the seeds' indices stay as they were */
};
#define N_METHODS (sizeof METHODS / sizeof METHODS[0])

typedef struct {
    const uint8_t *p;
    size_t n;
} frame;

/* parses one call at *pos; returns the number of frames (<= 8) */
static int parse_call(const uint8_t *d, size_t size, size_t *pos, int *method, int *flags, frame *fr) {
    size_t i = *pos;
    *method = d[i++] % N_METHODS;
    *flags = i < size ? d[i++] : 0;
    int want = i < size ? d[i++] % 9 : 0;
    int n = 0;
    while (n < want && i < size) {
        size_t len = i + 1 < size ? (size_t)d[i] | (size_t)d[i + 1] << 8 : 0;
        i += i + 1 < size ? 2 : 1;
        if (len > size - i) len = size - i;
        fr[n].p = d + i;
        fr[n].n = len;
        i += len;
        n++;
    }
    *pos = i;
    return n;
}

static void run_call(const tc_rpc_handlers *h, int method, int flags, const frame *fr, int nf) {
    tc_call *c = calloc(1, sizeof *c);
    atomic_init(&c->refs, 2); /* the handler's and ours */
    c->method = METHODS[method];
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    static const uint8_t none = 0;
    if (flags & 2) {
        /* the call ends before its first message arrives (an oversized
         * message, a client gone at once): rpc.c reports the close first,
         * while the call has no user yet, then the failed receive */
        c->done = 1;
        h->on_done(g_svc, c, 1);
        h->on_start(g_svc, c, c->method, NULL, 0);
        tc_call_unref(c);
        return;
    }
    /* rpc.c hands an empty message as a non-NULL pointer of length 0 */
    h->on_start(g_svc, c, c->method, nf ? (fr[0].n ? fr[0].p : &none) : NULL, nf ? fr[0].n : 0);
    int next = 1, half_closed = nf == 0, cancel = flags & 1;
    while (!cancel) {
        wait_quiet();
        pthread_mutex_lock(&c->mu);
        int fin = c->finished, ask = c->recv_req > 0;
        if (ask) c->recv_req--;
        pthread_mutex_unlock(&c->mu);
        if (fin || !ask || half_closed) break;
        if (next < nf) {
            h->on_message(g_svc, c, fr[next].n ? fr[next].p : &none, fr[next].n);
            next++;
        } else {
            h->on_message(g_svc, c, NULL, 0);
            half_closed = 1;
        }
    }
    if (!cancel) {
        wait_quiet();
        pthread_mutex_lock(&c->mu);
        int fin = c->finished;
        pthread_mutex_unlock(&c->mu);
        /* only Health.Watch may stay open after the client half-closed */
        int may_stay = !strcmp(c->method, "/grpc.health.v1.Health/Watch");
        if (!fin && !may_stay && (half_closed || nf == 0 || strcmp(c->method, "/tconst.v1.TConst/Stream") != 0) &&
            strcmp(c->method, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") != 0) {
            fprintf(stderr, "fuzz_request: %s ended without a status\n", c->method);
            abort();
        }
        if (!fin) cancel = 1;
    }
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_mutex_unlock(&c->mu);
    h->on_done(g_svc, c, cancel);
    wait_quiet();
    if (flags & 4) { /* the failed receive, after the close: must find no context */
        h->on_message(g_svc, c, NULL, 0);
        wait_quiet();
    }
    if (g_verbose)
        fprintf(stderr, "call %s: %s code %d, %zu messages\n", c->method, c->finished ? "status" : "cancelled", c->code,
                c->n_sent);
    tc_call_unref(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || size > 1 << 16) return 0;
    tc_engine_limits lim = {.max_sessions = 4, .max_queued = 4, .max_batch = 4, .max_tokens = 64,
                            .stream_queue = 8, .idle_timeout_s = 0};
    tc_engine *e = NULL;
    if (tc_engine_start(&e, &g_wc, g_bpe, &lim, &g_sink) != TC_OK) abort();
    tc_service_bind_engine(g_svc, e);
    const tc_rpc_handlers *h = tc_service_handlers();
    size_t pos = 0;
    for (int k = 0; k < 4 && pos < size; k++) {
        frame fr[8];
        int method, flags;
        int nf = parse_call(data, size, &pos, &method, &flags, fr);
        run_call(h, method, flags, fr, nf);
    }
    tc_engine_stop(e);
    tc_service_bind_engine(g_svc, NULL);
    return 0;
}
