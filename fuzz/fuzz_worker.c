/* fuzz_worker.c — the internal worker protocol (proto/worker.proto) as
 * tconst-worker serves it: the real worker/worker.c (decode, role checks,
 * session table, both compute threads) and model/ underneath, the Import
 * blob going through tc_session_import (model/state.c), which must
 * validate all of it. rpc.c is replaced by an in-process fake call and the
 * data plane by a fake transport (below) whose recv hands out bytes taken
 * from the input.
 *
 * Models: one tiny random model per architecture (vocab 53, d 24, 3 heads,
 * ffn 40, 2 blocks; tconst and tlin with depth 3, W_oh 8, W_og 8), written
 * once to a temp dir; one worker per (architecture, role), made once. The
 * role both has no data plane (tp NULL), as in tconst-worker.
 *
 * Input: [select byte] then up to 8 calls, run one after another on the
 * selected worker. select: role = b % 3 (both, context, generation),
 * architecture = b / 3 % 3 (tconst, tlin, transformer). A call is
 *   [method byte][u16 LE len][message][u16 LE blob len][blob]
 * (a short field takes what is left). method: (b & 0x3f) % 12 picks Info,
 * Ping, Connect, Open, Close, Append, Sync, Import, Step, Health/Check, an
 * unknown Worker method or a foreign one; bit 0x80: no request message
 * (msg NULL); bit 0x40 on Open or Close: do not wait for it before the
 * next call (it races that call, a Step say; sessions are pinned). The
 * message is cut to 2 KiB, so no input asks for a huge prefill: the worker
 * bounds nothing but the protobuf size, which the coordinator keeps sane.
 * The blob is what the fake data plane's recv returns to this call's
 * Import: empty = a timeout (TC_ERR_IO), one byte = the last state the
 * worker sent in this input (an Append or Sync with send_seq on a context
 * or generation worker), otherwise the bytes themselves. The fake send
 * refuses seq >= 2^62 and Connect refuses a peer starting with '!', so the
 * data-plane error paths run too.
 *
 * Checked besides memory safety, UB and leaks: every call ends with
 * exactly one status within 20 s (a hang aborts); no send after the
 * status; OK comes with exactly one message, which decodes as the
 * method's response type, an error with none; unknown methods get
 * UNIMPLEMENTED; the worker touches no call after it released it. After
 * the input every session it opened is closed and Ping must report none
 * left, so state never carries over to the next input. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/rpc.h"
#include "fuzz.h"
#include "health.pb-c.h"
#include "model/config.h"
#include "model/weights.h"
#include "worker.pb-c.h"
#include "worker/worker.h"

#define MAX_MSG 2048
#define MAX_CALLS 8
#define WAIT_S 20

/* ---- the fake call: what rpc.c gives the worker ---- */

struct tc_call {
    atomic_int refs; /* ours (1) + the worker's while it holds the call */
    void *user;
    const char *method;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished, code, n_sent;
    uint8_t *sent; /* the first message, copied */
    size_t sent_len;
};

static void die(const tc_call *c, const char *what) {
    fprintf(stderr, "fuzz_worker: %s: %s\n", c ? c->method : "-", what);
    abort();
}
/* every tc_call_* below is called by the worker only */
static void held(const tc_call *c) {
    if (atomic_load(&c->refs) < 2) die(c, "the worker used a call after releasing it");
}

void tc_call_ref(tc_call *c) {
    held(c);
    atomic_fetch_add(&c->refs, 1);
}
void tc_call_unref(tc_call *c) {
    held(c);
    pthread_mutex_lock(&c->mu); /* the harness waits for the release */
    atomic_fetch_sub(&c->refs, 1);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}
void tc_call_set_user(tc_call *c, void *p) {
    held(c);
    c->user = p;
}
void *tc_call_user(const tc_call *c) {
    held(c);
    return c->user;
}
const char *tc_call_method(const tc_call *c) {
    held(c);
    return c->method;
}
void tc_call_recv_next(tc_call *c) {
    held(c);
    die(c, "recv_next on a unary method");
}
tc_status tc_call_send(tc_call *c, const uint8_t *msg, size_t len) {
    held(c);
    pthread_mutex_lock(&c->mu);
    if (c->finished) die(c, "a message sent after the status");
    if (c->n_sent++ == 0) {
        c->sent = malloc(len ? len : 1);
        if (!c->sent) abort();
        memcpy(c->sent, msg, len);
        c->sent_len = len;
    }
    pthread_mutex_unlock(&c->mu);
    return TC_OK;
}
size_t tc_call_pending(tc_call *c) {
    held(c);
    return 0; /* a fast reader */
}
void tc_call_finish(tc_call *c, int code, const char *message) {
    held(c);
    (void)message;
    pthread_mutex_lock(&c->mu);
    if (c->finished) die(c, "a second status");
    c->finished = 1;
    c->code = code;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}
int tc_call_is_done(tc_call *c) {
    held(c);
    return 0;
}
double tc_call_deadline_left(const tc_call *c) {
    held(c);
    return INFINITY;
}

/* ---- the fake data plane ---- */

typedef struct {
    tc_transport t;
    pthread_mutex_t mu;
    const uint8_t *blob; /* this call's blob (the input's bytes) */
    size_t blob_len;
    void *last; /* the last state sent, for a one-byte blob */
    size_t last_len;
} fake_tp;

static fake_tp g_tp;

static tc_status tp_connect(tc_transport *t, const char *peer) {
    (void)t;
    return peer[0] == '!' ? TC_FAIL(TC_ERR_IO, "fake: %s refused", peer) : TC_OK;
}
static tc_status tp_send(tc_transport *t, uint64_t sid, uint64_t seq, const void *buf, size_t len, double timeout_s) {
    (void)sid;
    (void)timeout_s;
    fake_tp *f = (fake_tp *)t;
    if (seq >= (uint64_t)1 << 62) return TC_FAIL(TC_ERR_IO, "fake: send of seq %llu failed", (unsigned long long)seq);
    void *copy = malloc(len ? len : 1);
    if (!copy) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    memcpy(copy, buf, len);
    pthread_mutex_lock(&f->mu);
    free(f->last);
    f->last = copy, f->last_len = len;
    t->bytes_sent += len, t->messages_sent++;
    pthread_mutex_unlock(&f->mu);
    return TC_OK;
}
static tc_status tp_recv(tc_transport *t, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s) {
    (void)sid;
    (void)seq;
    (void)timeout_s;
    fake_tp *f = (fake_tp *)t;
    *buf = NULL;
    *len = 0;
    pthread_mutex_lock(&f->mu);
    const void *src = f->blob_len == 1 ? f->last : f->blob;
    size_t n = f->blob_len == 1 ? f->last_len : f->blob_len;
    tc_status st = TC_OK;
    if (!src || (f->blob_len != 1 && n == 0)) st = TC_FAIL(TC_ERR_IO, "fake: nothing arrived");
    else if (!(*buf = malloc(n ? n : 1))) st = TC_FAIL(TC_ERR_NOMEM, "out of memory");
    else memcpy(*buf, src, n), *len = n, t->bytes_received += n;
    pthread_mutex_unlock(&f->mu);
    return st;
}
static void tp_drop(tc_transport *t, uint64_t sid) {
    (void)t;
    (void)sid;
}
static const char *tp_address(const tc_transport *t) {
    (void)t;
    return "";
}

/* ---- models and workers, made once ---- */

static const char *const ROLES[3] = {"both", "context", "generation"};
static const tc_arch ARCHS[3] = {TC_ARCH_TCONST, TC_ARCH_TLIN, TC_ARCH_TRANSFORMER};
static char g_dir[3][160], g_root[128];
static tc_backend g_be;
static tc_backend g_be_s; /* the generation workers': the CPU backend with its sample op (TC_CPU_SAMPLE=1) */
static tc_model *g_model[3][3]; /* [arch][role]: each worker its own workspaces */
static tc_worker *g_w[3][3];
static int g_verbose; /* TC_FUZZ_VERBOSE=1: one line per call */

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) free(s), s = NULL;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static void cleanup(void) {
    for (int a = 0; a < 3; a++)
        for (int r = 0; r < 3; r++) {
            tc_worker_free(g_w[a][r]); /* joins its threads, frees its sessions */
            tc_model_free(g_model[a][r]);
        }
    for (int a = 0; a < 3; a++) {
        char p[300];
        snprintf(p, sizeof p, "%.159s/config.json", g_dir[a]), unlink(p);
        snprintf(p, sizeof p, "%.159s/model.safetensors", g_dir[a]), unlink(p);
        rmdir(g_dir[a]);
    }
    rmdir(g_root);
    free(g_tp.last);
    pthread_mutex_destroy(&g_tp.mu);
    tc_backend_cpu_free(&g_be);
    tc_backend_cpu_free(&g_be_s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    tc_log_level_cur = -1; /* quiet: refusals are expected */
    g_verbose = getenv("TC_FUZZ_VERBOSE") != NULL;
    const char *tmp = getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 80 ? getenv("TMPDIR") : "/tmp";
    snprintf(g_root, sizeof g_root, "%s/tc_fuzz_worker_XXXXXX", tmp);
    if (!mkdtemp(g_root)) abort();
    tc_backend_cpu_init(&g_be, 1);
    setenv("TC_CPU_SAMPLE", "1", 1);
    if (tc_backend_cpu_init(&g_be_s, 1) != TC_OK || !g_be_s.sample) abort();
    unsetenv("TC_CPU_SAMPLE");
    pthread_mutex_init(&g_tp.mu, NULL);
    g_tp.t = (tc_transport){.kind = "fake", .connect = tp_connect, .send = tp_send, .recv = tp_recv,
                            .drop = tp_drop, .address = tp_address};
    for (int a = 0; a < 3; a++) {
        tc_model_config c;
        if (tc_config_preset(&c, "tiny", ARCHS[a]) != TC_OK) abort();
        c.vocab_size = 53, c.n_embd = 24, c.n_head = 3, c.head_dim = 8, c.ffn_hidden = 40;
        c.n_block = 2, c.eos_token_id = 1;
        if (ARCHS[a] != TC_ARCH_TRANSFORMER) c.inner_depth = 3, c.history_window = 8, c.generate_window = 8;
        snprintf(g_dir[a], sizeof g_dir[a], "%s/arch%d", g_root, a);
        char cp[300];
        snprintf(cp, sizeof cp, "%.159s/config.json", g_dir[a]);
        char *json = NULL;
        if (tc_model_init_random(&c, 7 + (uint64_t)a, "f32", g_dir[a]) != TC_OK || !(json = read_text(cp))) {
            fprintf(stderr, "fuzz_worker: model %s: %s\n", g_dir[a], tc_error_get());
            abort();
        }
        for (int r = 0; r < 3; r++) {
            tc_worker_opts o = {ROLES[r], "cpu", 1.0, "host", -1, 0.5, NULL, NULL, NULL, 0, 1, 0, 0, 0, 0, 0};
            if (tc_model_load(&g_model[a][r], g_dir[a], r == 2 ? &g_be_s : &g_be) != TC_OK ||
                tc_worker_new(&g_w[a][r], g_model[a][r], r ? &g_tp.t : NULL, json, &o) != TC_OK) {
                fprintf(stderr, "fuzz_worker: worker %s: %s\n", ROLES[r], tc_error_get());
                abort();
            }
        }
        free(json);
    }
    atexit(cleanup);
    return 0;
}

/* ---- one call ---- */

enum { M_INFO, M_PING, M_CONNECT, M_OPEN, M_CLOSE, M_APPEND, M_SYNC, M_IMPORT, M_STEP, M_HEALTH, M_UNKNOWN, M_FOREIGN,
       N_METHODS };
static const char *const METHODS[N_METHODS] = {
    "/tconst.worker.v1.Worker/Info", "/tconst.worker.v1.Worker/Ping", "/tconst.worker.v1.Worker/Connect",
    "/tconst.worker.v1.Worker/Open", "/tconst.worker.v1.Worker/Close", "/tconst.worker.v1.Worker/Append",
    "/tconst.worker.v1.Worker/Sync", "/tconst.worker.v1.Worker/Import", "/tconst.worker.v1.Worker/Step",
    "/grpc.health.v1.Health/Check", "/tconst.worker.v1.Worker/Extend", "/tconst.v1.TConst/Generate",
};
/* the response type of each method (NULL: must fail) */
static const ProtobufCMessageDescriptor *const REPLY[N_METHODS] = {
    &tconst__worker__v1__info_response__descriptor, &tconst__worker__v1__ping_response__descriptor,
    &tconst__worker__v1__connect_response__descriptor, &tconst__worker__v1__session_reply__descriptor,
    &tconst__worker__v1__session_reply__descriptor, &tconst__worker__v1__append_response__descriptor,
    &tconst__worker__v1__sync_response__descriptor, &tconst__worker__v1__session_reply__descriptor,
    &tconst__worker__v1__step_response__descriptor, &grpc__health__v1__health_check_response__descriptor,
    NULL, NULL,
};

static tc_call *call_start(tc_worker *w, int method, const uint8_t *msg, size_t len) {
    tc_call *c = calloc(1, sizeof *c);
    if (!c) abort();
    atomic_init(&c->refs, 2); /* the handler's and ours */
    c->method = METHODS[method];
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    tc_worker_handlers()->on_start(w, c, c->method, msg, len);
    return c;
}

/* Waits for the status and the worker's release, checks the reply, frees
 * the call; returns the status code, *reply (if asked) the decoded
 * message of an OK call. */
static int call_end(tc_call *c, int method, ProtobufCMessage **reply) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WAIT_S;
    pthread_mutex_lock(&c->mu);
    while (!c->finished || atomic_load(&c->refs) > 1)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
            die(c, c->finished ? "the worker held the call 20 s after its status" : "no status within 20 s");
    pthread_mutex_unlock(&c->mu);
    if (atomic_load(&c->refs) != 1) die(c, "released twice");
    int code = c->code;
    if (code == TC_GRPC_OK && c->n_sent != 1) die(c, "OK without exactly one message");
    if (code != TC_GRPC_OK && c->n_sent != 0) die(c, "an error after a message");
    if ((method == M_UNKNOWN || method == M_FOREIGN) && code != TC_GRPC_UNIMPLEMENTED) die(c, "not UNIMPLEMENTED");
    if (code == TC_GRPC_OK) {
        ProtobufCMessage *r = protobuf_c_message_unpack(REPLY[method], NULL, c->sent_len, c->sent);
        if (!r) die(c, "the reply does not decode");
        if (reply) *reply = r;
        else protobuf_c_message_free_unpacked(r, NULL);
    }
    if (g_verbose) fprintf(stderr, "call %s: code %d, %d messages\n", c->method, code, c->n_sent);
    free(c->sent);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    return code;
}

static size_t take_u16(const uint8_t *d, size_t size, size_t *pos) {
    size_t i = *pos, n = 0;
    if (i + 1 < size) n = (size_t)d[i] | (size_t)d[i + 1] << 8, i += 2;
    else i = size;
    if (n > size - i) n = size - i;
    *pos = i;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || size > 1 << 16) return 0;
    const int role = data[0] % 3, arch = data[0] / 3 % 3;
    tc_worker *w = g_w[arch][role];
    size_t pos = 1;
    uint64_t opened[MAX_CALLS];
    int n_opened = 0;
    struct {
        tc_call *c;
        int method;
    } pending[MAX_CALLS];
    int n_pending = 0;
    for (int k = 0; k < MAX_CALLS && pos < size; k++) {
        const int mb = data[pos++], method = (mb & 0x3f) % N_METHODS;
        size_t len = take_u16(data, size, &pos);
        const uint8_t *msg = data + pos;
        pos += len;
        size_t bl = take_u16(data, size, &pos);
        pthread_mutex_lock(&g_tp.mu);
        g_tp.blob = data + pos, g_tp.blob_len = bl;
        pthread_mutex_unlock(&g_tp.mu);
        pos += bl;
        if (len > MAX_MSG) len = MAX_MSG;
        if (mb & 0x80) msg = NULL, len = 0;
        if (method == M_OPEN) { /* remembered, to close it after the input */
            Tconst__Worker__V1__SessionRef *r = tconst__worker__v1__session_ref__unpack(NULL, len, msg ? msg : data);
            if (r) opened[n_opened++] = r->sid, tconst__worker__v1__session_ref__free_unpacked(r, NULL);
        }
        tc_call *c = call_start(w, method, msg, len);
        if ((mb & 0x40) && (method == M_OPEN || method == M_CLOSE)) {
            pending[n_pending].c = c, pending[n_pending++].method = method;
            continue;
        }
        call_end(c, method, NULL);
    }
    for (int i = 0; i < n_pending; i++) call_end(pending[i].c, pending[i].method, NULL);
    /* the next input starts from an empty worker */
    for (int i = 0; i < n_opened; i++) {
        Tconst__Worker__V1__SessionRef r = TCONST__WORKER__V1__SESSION_REF__INIT;
        uint8_t b[16];
        r.sid = opened[i];
        size_t n = tconst__worker__v1__session_ref__pack(&r, b);
        if (call_end(call_start(w, M_CLOSE, b, n), M_CLOSE, NULL) != TC_GRPC_OK) die(NULL, "Close failed");
    }
    ProtobufCMessage *pr = NULL;
    if (call_end(call_start(w, M_PING, NULL, 0), M_PING, &pr) != TC_GRPC_OK) die(NULL, "Ping failed");
    int left = ((Tconst__Worker__V1__PingResponse *)pr)->sessions;
    protobuf_c_message_free_unpacked(pr, NULL);
    if (left != 0) die(NULL, "sessions left after every Open was closed");
    pthread_mutex_lock(&g_tp.mu);
    free(g_tp.last);
    g_tp.last = NULL, g_tp.last_len = 0, g_tp.blob = NULL, g_tp.blob_len = 0;
    pthread_mutex_unlock(&g_tp.mu);
    return 0;
}
