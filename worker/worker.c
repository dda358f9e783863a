/* worker.c — tconst-worker's service (proto/worker.proto): the model on
 * one device, a table of session copies, and two or three compute threads:
 *
 *   generation thread  Step (batched hit steps, sampled here)
 *   context thread     Sync, Import, Open, Close (and Append without
 *                      a prefill thread)
 *   prefill thread     Append (opts.prefill_thread: the CPU; a GPU with
 *                      TC_CUDA_PREFILL_LANE=1, lane 2), so a long
 *                      prefill does not hold up other sessions' Syncs
 *
 * The RPC thread decodes and queues; Info and Ping are answered on it at
 * once, so a worker busy with a long sync still answers its supervisor.
 * Each compute thread computes in its own model workspace. Sessions are
 * used by one thread at a time because the coordinator never steps a
 * session it is syncing or appending to. Not here: flags, signals
 * (worker/main.c), the data plane (worker/transport_host.c). */
#include "worker.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <string.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../daemon/rpc.h"
#include "../model/sampler.h"
#include "../model/session.h"
#include "health.pb-c.h"
#include "worker.pb-c.h"

#define M_PREFIX "/tconst.worker.v1.Worker/"

typedef struct wjob {
    tc_call *call;
    char method[32];
    uint8_t *msg;
    size_t len;
    struct wjob *next;
} wjob;

typedef struct {
    uint64_t sid;
    tc_session *s;
    int busy;   /* calls computing on it (all on one thread); Open/Close wait for 0 */
    pthread_t holder; /* the thread computing on it while busy */
    int orphan; /* its coordinator is gone: freed when no call computes on it */
} wsess;

typedef struct {
    wjob *head, *tail;
} wqueue;

struct tc_worker {
    tc_worker_opts o;
    atomic_int fault_syncs;    /* o.fault_sync_errors still to inject */
    atomic_int fault_connects; /* o.fault_connect_errors still to inject */
    atomic_llong fault_appends, fault_steps; /* replies counted for o.fault_append_reply_at, o.fault_step_reply_at */
    tc_model *m;
    tc_transport *tp;
    int tp_owned; /* made by Connect (nccl) */
    tc_transport **retired; /* replaced by a later Connect, freed with the worker */
    int n_retired;
    uint64_t boot_id;
    uint64_t owner;    /* the coordinator served (0: none yet) */
    double owner_seen; /* when it last called Info or Ping */
    char *config_json;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wqueue q[3]; /* 0 generation, 1 context, 2 prefill */
    pthread_t thr[3];
    int n_thr;
    int stop;
    wsess *sess; /* sorted by sid */
    int n_sess, cap_sess;
    tc_sampler smp; /* generation thread's scratch */
    atomic_int poisoned; /* the device failed: no result leaves this process */
    uint64_t cancels[16]; /* the latest Cancel ids (a ring), mu held */
    int n_cancels;
};

/* ---- cancellation of a running Append / Sync (the Cancel RPC) ---- */
typedef struct {
    tc_worker *w;
    tc_call *c;
    uint64_t id;
} cancel_ctx;
/* asked between a computation's layers and tiles (tc_cancelled): a Cancel
 * named it, or its caller is gone (the call ended, its deadline passed) --
 * a result nobody reads would only be shipped to a peer nobody tells to
 * import it */
static int job_cancelled(void *ud) {
    const cancel_ctx *x = ud;
    if (tc_call_is_done(x->c) || tc_call_deadline_left(x->c) <= 0) return 1;
    if (!x->id) return 0;
    int hit = 0;
    pthread_mutex_lock(&x->w->mu);
    for (int i = 0; i < 16 && !hit; i++) hit = x->w->cancels[i] == x->id;
    pthread_mutex_unlock(&x->w->mu);
    return hit;
}

/* ---- session table (mu held) ---- */
static int sess_find(tc_worker *w, uint64_t sid) {
    int lo = 0, hi = w->n_sess;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (w->sess[mid].sid < sid) lo = mid + 1;
        else hi = mid;
    }
    return lo < w->n_sess && w->sess[lo].sid == sid ? lo : -lo - 1;
}
/* A session for one call: marked busy until sess_put, so a re-Open or a
 * Close (say, a rebuild after the coordinator gave up on a stopped worker
 * whose queued call runs late) never frees it under a computing thread.
 * One thread at a time computes on a session: the other thread's call
 * waits for it (wait 1: the context thread's Append, Sync, Import) or is
 * refused (wait 0: a Step, which must not stall the batch; *busy set). The
 * coordinator never sends both at once; a stale or hostile call could,
 * and two threads in one session's window rows abort the process. A
 * thread may hold a session twice (a batch naming it twice is refused by
 * the model, with its own message). */
/* The sessions this thread holds: given back (release_held) as soon as
 * its device work is done, before its reply leaves -- the coordinator
 * sends a session's next call the moment it has the reply, often to the
 * other thread, which must find the session free (released after the
 * reply, a Step racing it was refused ABORTED, retried and rebuilt) */
static _Thread_local uint64_t *t_held;
static _Thread_local int t_n_held, t_cap_held;

static tc_session *sess_get(tc_worker *w, uint64_t sid, int wait, int *busy) {
    if (t_n_held == t_cap_held) {
        const int nc = t_cap_held ? 2 * t_cap_held : 64;
        uint64_t *nh = realloc(t_held, (size_t)nc * sizeof *nh);
        if (!nh) return NULL; /* the caller reports the session missing: out of memory, rare */
        t_held = nh, t_cap_held = nc;
    }
    const pthread_t self = pthread_self();
    if (busy) *busy = 0;
    pthread_mutex_lock(&w->mu);
    int i;
    while ((i = sess_find(w, sid)) >= 0 && !w->sess[i].orphan && w->sess[i].busy &&
           !pthread_equal(w->sess[i].holder, self)) {
        if (!wait) {
            if (busy) *busy = 1;
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        pthread_cond_wait(&w->cv, &w->mu);
    }
    tc_session *s = i >= 0 && !w->sess[i].orphan ? w->sess[i].s : NULL;
    if (s) w->sess[i].busy++, w->sess[i].holder = self, t_held[t_n_held++] = sid;
    pthread_mutex_unlock(&w->mu);
    return s;
}
static void sess_remove_at(tc_worker *w, int i) {
    tc_session_free(w->sess[i].s);
    memmove(&w->sess[i], &w->sess[i + 1], (size_t)(w->n_sess - i - 1) * sizeof *w->sess);
    w->n_sess--;
}
static void put_locked(tc_worker *w, uint64_t sid) {
    int i = sess_find(w, sid);
    if (i >= 0 && w->sess[i].busy > 0) w->sess[i].busy--;
    if (i >= 0 && w->sess[i].orphan && !w->sess[i].busy) sess_remove_at(w, i);
}
static void release_held(tc_worker *w) {
    if (!t_n_held) return;
    pthread_mutex_lock(&w->mu);
    for (int k = 0; k < t_n_held; k++) put_locked(w, t_held[k]);
    t_n_held = 0;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}
/* gives back one hold of sid (none left after release_held: a no-op) */
static void sess_put(tc_worker *w, uint64_t sid) {
    int k = t_n_held - 1;
    while (k >= 0 && t_held[k] != sid) k--;
    if (k < 0) return;
    t_held[k] = t_held[--t_n_held];
    pthread_mutex_lock(&w->mu);
    put_locked(w, sid);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One coordinator per worker (mu held): `id` may call when it owns the
 * worker, when nobody does, or when the owner has been silent for the
 * orphan timeout -- then the owner is taken for dead and its session
 * copies are dropped (they would otherwise stay until this worker
 * restarts). 0: a caller that only looks. Returns 0, or -1 with why. */
static void drop_all(tc_worker *w) {
    /* the departing coordinator's Cancel ids mean nothing to the next one
     * (whose ids may repeat them) */
    memset(w->cancels, 0, sizeof w->cancels);
    w->n_cancels = 0;
    for (int i = w->n_sess - 1; i >= 0; i--) {
        if (w->tp) w->tp->drop(w->tp, w->sess[i].sid); /* its frames in the mailbox */
        if (w->sess[i].busy) w->sess[i].orphan = 1;  /* freed by the last sess_put */
        else sess_remove_at(w, i);
    }
}
static int claim(tc_worker *w, uint64_t id, int release, char *why, size_t n) {
    if (!id) return 0;
    double now = tc_now_s(), silent = now - w->owner_seen;
    if (w->owner && w->owner != id) {
        if (silent < w->o.orphan_timeout_s) {
            snprintf(why, n, "it serves coordinator %016llx (heard from %.1f s ago; a worker serves one "
                     "coordinator, another may take over after --orphan-timeout %.0f s of silence)",
                     (unsigned long long)w->owner, silent, w->o.orphan_timeout_s);
            return -1;
        }
        TC_LOG(TC_LOG_WARN, "worker", "coordinator %016llx takes over from %016llx (silent %.1f s): %d session "
               "copies of the old one dropped", (unsigned long long)id, (unsigned long long)w->owner, silent, w->n_sess);
        drop_all(w);
    }
    if (release) { /* the owner leaves cleanly: free at once */
        TC_LOG(TC_LOG_INFO, "worker", "coordinator %016llx released this worker: %d session copies dropped",
               (unsigned long long)id, w->n_sess);
        drop_all(w);
        w->owner = 0;
        return 0;
    }
    w->owner = id;
    w->owner_seen = now;
    return 0;
}

static void reply_session(const tc_session *s, Tconst__Worker__V1__SessionReply *r) {
    r->n_tokens = s->n_tokens;
    r->syncs = s->n_syncs;
    r->state_bytes = (int64_t)tc_session_state_bytes(s);
}

/* Whether the device has failed (o.device_status: a sticky CUDA error).
 * A poisoned device's results are garbage, so none may leave the worker:
 * the first time, it logs, and SIGTERMs itself; main then exits with
 * status 3 and the supervisor (tconstd, or Kubernetes) restarts it, and
 * the coordinator rebuilds the sessions from their history (DESIGN §9). */
static _Thread_local int t_compute; /* 1 on the compute threads */
static int device_bad(tc_worker *w) {
    if (atomic_load(&w->poisoned)) return 1;
    if (!w->o.device_status || w->o.device_status(w->o.device_arg, t_compute) == TC_OK) return 0;
    if (!atomic_exchange(&w->poisoned, 1)) {
        TC_LOG(TC_LOG_ERROR, "worker", "device %s poisoned: %s; failing every call and exiting (status 3)",
               w->o.device, tc_error_get() ? tc_error_get() : "device error");
        kill(getpid(), SIGTERM);
    }
    return 1;
}
int tc_worker_poisoned(tc_worker *w) { return atomic_load(&w->poisoned); }

#define POISONED_MSG "worker: device poisoned; this worker exits to be restarted"

/* Every successful reply goes through here: none leaves a poisoned device
 * (UNAVAILABLE: the coordinator waits for the restart and retries). */
static void send_msg(tc_worker *w, tc_call *c, const ProtobufCMessage *m) {
    const int bad = device_bad(w); /* waits for this thread's device work */
    release_held(w);
    if (bad) {
        tc_call_finish(c, TC_GRPC_UNAVAILABLE, POISONED_MSG);
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        tc_call_finish(c, TC_GRPC_RESOURCE_EXHAUSTED, "worker: out of memory");
        return;
    }
    protobuf_c_message_pack(m, b);
    if (tc_call_send(c, b, n) == TC_OK) tc_call_finish(c, TC_GRPC_OK, "");
    else /* no memory for the copy (a Step's logits can be tens of MB), or the call is over: a status, not silence */
        tc_call_finish(c, TC_GRPC_RESOURCE_EXHAUSTED, "worker: cannot send the reply (out of memory)");
    free(b);
}

static int code_of(tc_status st) {
    return st == TC_ERR_INVALID ? TC_GRPC_INVALID_ARGUMENT
           : st == TC_ERR_NOMEM || st == TC_ERR_EXHAUSTED ? TC_GRPC_RESOURCE_EXHAUSTED
           : st == TC_ERR_IO ? TC_GRPC_ABORTED /* the data plane: retry, not a dead worker */
           : st == TC_ERR_CANCELLED ? TC_GRPC_CANCELLED
                                : TC_GRPC_INTERNAL;
}
/* An error reply from a compute thread also waits for the thread's device
 * work first (device_bad: a GPU lane's queued kernels may still be writing
 * the session the coordinator hands on next), as every reply does. */
static _Thread_local tc_worker *t_worker; /* set on the compute threads */
static void fail(tc_call *c, int code, const char *fmt, const char *arg) {
    char m[600];
    snprintf(m, sizeof m, fmt, arg ? arg : "");
    if (t_compute && t_worker) (void)device_bad(t_worker), release_held(t_worker); /* as send_msg */
    tc_call_finish(c, code, m);
}
/* tests: counts a reply of one kind while armed (at > 0); true for the
 * at-th, which then goes out malformed (TC_FAULT_*_REPLY_AT,
 * worker/main.c) */
static int fault_due(atomic_llong *seen, int64_t at) { return at > 0 && atomic_fetch_add(seen, 1) + 1 == at; }

static void fail_st(tc_call *c, tc_status st, const char *what) {
    char m[700];
    snprintf(m, sizeof m, "%s: %s", what, tc_error_get() ? tc_error_get() : tc_status_str(st));
    if (t_compute && t_worker) (void)device_bad(t_worker), release_held(t_worker); /* as send_msg */
    tc_call_finish(c, code_of(st), m);
}

/* Ships s to the peer under seq; kind TC_STATE_SYNC or TC_STATE_FULL. */
static tc_status ship(tc_worker *w, uint64_t sid, uint64_t seq, const tc_session *s, int kind, int64_t *bytes,
                      double *secs) {
    if (!w->tp) /* role both has none; an NCCL one not linked yet by its coordinator: retried once it is */
        return !strcmp(w->o.role, "both")
                   ? TC_FAIL(TC_ERR_INVALID, "this worker has no data plane (role both): send_seq must be 0")
                   : TC_FAIL(TC_ERR_IO, "data plane: no peer yet (no Connect since this worker started)");
    if (seq >= UINT64_MAX - 1) /* the host transport's refusal acks are those two values */
        return TC_FAIL(TC_ERR_INVALID, "send_seq %llu is out of range (at most 2^64-3)", (unsigned long long)seq);
    if (device_bad(w)) return TC_FAIL(TC_ERR_IO, "%s", POISONED_MSG); /* no garbage state to the peer */
    void *blob;
    size_t len;
    double t0 = tc_now_s();
    TC_CHECK(tc_session_export(s, kind, &blob, &len));
    if (device_bad(w)) { /* a fault often surfaces in the export's own downloads */
        free(blob);
        return TC_FAIL(TC_ERR_IO, "%s", POISONED_MSG);
    }
    tc_status st = w->tp->send(w->tp, sid, seq, blob, len, w->o.peer_timeout_s);
    free(blob);
    *bytes = (int64_t)len;
    *secs = tc_now_s() - t0;
    return st;
}

/* ---- handlers on the compute threads ---- */
static void do_open_close(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len, int open) {
    Tconst__Worker__V1__SessionRef *rq = tconst__worker__v1__session_ref__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "SessionRef: cannot decode the request", NULL);
    uint64_t sid = rq->sid;
    tconst__worker__v1__session_ref__free_unpacked(rq, NULL);
    Tconst__Worker__V1__SessionReply r = TCONST__WORKER__V1__SESSION_REPLY__INIT;
    pthread_mutex_lock(&w->mu);
    int i;
    while ((i = sess_find(w, sid)) >= 0 && w->sess[i].busy) pthread_cond_wait(&w->cv, &w->mu);
    if (open) {
        if (i >= 0) { /* re-open replaces: the coordinator rebuilds it */
            sess_remove_at(w, i);
            i = sess_find(w, sid);
        }
        if (w->n_sess == w->cap_sess) {
            int nc = w->cap_sess ? w->cap_sess * 2 : 64;
            wsess *ns = realloc(w->sess, (size_t)nc * sizeof *ns);
            if (!ns) {
                pthread_mutex_unlock(&w->mu);
                return fail(c, TC_GRPC_RESOURCE_EXHAUSTED, "Open: out of memory", NULL);
            }
            w->sess = ns, w->cap_sess = nc;
        }
        tc_session *s;
        tc_status st = tc_session_new(w->m, &s);
        if (st != TC_OK) {
            pthread_mutex_unlock(&w->mu);
            return fail_st(c, st, "Open");
        }
        int at = -i - 1;
        memmove(&w->sess[at + 1], &w->sess[at], (size_t)(w->n_sess - at) * sizeof *w->sess);
        w->sess[at].sid = sid, w->sess[at].s = s, w->sess[at].busy = 0, w->sess[at].orphan = 0;
        w->n_sess++;
        reply_session(s, &r);
    } else if (i >= 0) sess_remove_at(w, i);
    pthread_mutex_unlock(&w->mu);
    if (!open && w->tp) w->tp->drop(w->tp, sid);
    send_msg(w, c, &r.base);
}

static void do_append(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len) {
    Tconst__Worker__V1__AppendRequest *rq = tconst__worker__v1__append_request__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "AppendRequest: cannot decode the request", NULL);
    tc_session *s = sess_get(w, rq->sid, 1, NULL);
    Tconst__Worker__V1__AppendResponse r = TCONST__WORKER__V1__APPEND_RESPONSE__INIT;
    Tconst__Worker__V1__SessionReply sr = TCONST__WORKER__V1__SESSION_REPLY__INIT;
    float *lg = NULL;
    tc_status st = TC_OK;
    if (!s) {
        fail(c, TC_GRPC_NOT_FOUND, "Append: no such session on this worker%s", "");
        goto out;
    }
    if (rq->n_extend && (st = tc_session_extend(s, rq->extend, (int64_t)rq->n_extend)) != TC_OK) {
        fail_st(c, st, "Append: extend");
        goto out;
    }
    double t0 = tc_now_s();
    if (rq->n_tokens) {
        if (rq->want_logits && !(lg = malloc((size_t)w->m->cfg.vocab_size * 4))) {
            fail(c, TC_GRPC_RESOURCE_EXHAUSTED, "Append: out of memory", NULL);
            goto out;
        }
        cancel_ctx cx = {w, c, rq->cancel_id};
        tc_cancel_hook prev = tc_cancel_arm(job_cancelled, &cx);
        st = tc_session_append(s, rq->tokens, (int64_t)rq->n_tokens, lg);
        tc_cancel_restore(prev);
        if (st != TC_OK) {
            if (st == TC_ERR_CANCELLED) TC_LOG(TC_LOG_INFO, "worker", "Append of session %llu cancelled: %s",
                                               (unsigned long long)rq->sid, tc_error_get());
            fail_st(c, st, "Append");
            goto out;
        }
        if (lg) r.logits = lg, r.n_logits = (size_t)w->m->cfg.vocab_size;
        if (lg && fault_due(&w->fault_appends, w->o.fault_append_reply_at)) r.n_logits--; /* tests: a malformed reply */
    }
    r.compute_s = tc_now_s() - t0;
    if (rq->send_seq && (st = ship(w, rq->sid, rq->send_seq, s, TC_STATE_FULL, &r.sent_bytes, &r.send_s)) != TC_OK) {
        fail_st(c, st, "Append: shipping the state");
        goto out;
    }
    reply_session(s, &sr);
    r.s = &sr;
    send_msg(w, c, &r.base);
out:
    if (s) sess_put(w, rq->sid);
    free(lg);
    tconst__worker__v1__append_request__free_unpacked(rq, NULL);
}

static void do_sync(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len) {
    Tconst__Worker__V1__SyncRequest *rq = tconst__worker__v1__sync_request__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "SyncRequest: cannot decode the request", NULL);
    tc_session *s = sess_get(w, rq->sid, 1, NULL);
    Tconst__Worker__V1__SyncResponse r = TCONST__WORKER__V1__SYNC_RESPONSE__INIT;
    Tconst__Worker__V1__SessionReply sr = TCONST__WORKER__V1__SESSION_REPLY__INIT;
    tc_status st;
    if (!s) {
        fail(c, TC_GRPC_NOT_FOUND, "Sync: no such session on this worker%s", "");
        goto out;
    }
    if (rq->n_extend && (st = tc_session_extend(s, rq->extend, (int64_t)rq->n_extend)) != TC_OK) {
        fail_st(c, st, "Sync: extend");
        goto out;
    }
    if (w->m->cfg.arch == TC_ARCH_TRANSFORMER || s->n_tokens % w->m->cfg.generate_window != 0) {
        fail(c, TC_GRPC_FAILED_PRECONDITION, "Sync: the session is not at a window boundary%s", "");
        goto out;
    }
    double t0 = tc_now_s();
    if (atomic_load(&w->fault_syncs) > 0 && atomic_fetch_sub(&w->fault_syncs, 1) > 0) {
        fail(c, TC_GRPC_INTERNAL, "Sync: injected fault (TC_FAULT_SYNC_ERRORS)%s", "");
        goto out;
    }
    cancel_ctx cx = {w, c, rq->cancel_id};
    tc_cancel_hook prev = tc_cancel_arm(job_cancelled, &cx);
    st = tc_session_sync(s, s->n_tokens);
    tc_cancel_restore(prev);
    if (st != TC_OK) {
        if (st == TC_ERR_CANCELLED) TC_LOG(TC_LOG_INFO, "worker", "Sync of session %llu cancelled: %s",
                                           (unsigned long long)rq->sid, tc_error_get());
        fail_st(c, st, "Sync");
        goto out;
    }
    r.compute_s = tc_now_s() - t0;
    if (rq->send_seq && (st = ship(w, rq->sid, rq->send_seq, s, TC_STATE_SYNC, &r.sent_bytes, &r.send_s)) != TC_OK) {
        fail_st(c, st, "Sync: shipping the state");
        goto out;
    }
    reply_session(s, &sr);
    r.s = &sr;
    send_msg(w, c, &r.base);
out:
    if (s) sess_put(w, rq->sid);
    tconst__worker__v1__sync_request__free_unpacked(rq, NULL);
}

static void do_import(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len) {
    Tconst__Worker__V1__ImportRequest *rq = tconst__worker__v1__import_request__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "ImportRequest: cannot decode the request", NULL);
    tc_session *s = sess_get(w, rq->sid, 1, NULL);
    Tconst__Worker__V1__SessionReply sr = TCONST__WORKER__V1__SESSION_REPLY__INIT;
    void *blob = NULL;
    size_t bl = 0;
    tc_status st;
    double to = rq->timeout_s > 0 && rq->timeout_s < w->o.peer_timeout_s ? rq->timeout_s : w->o.peer_timeout_s;
    if (!s) fail(c, TC_GRPC_NOT_FOUND, "Import: no such session on this worker%s", "");
    else if (!w->tp) fail(c, TC_GRPC_FAILED_PRECONDITION, "Import: this worker has no data plane (role both)%s", "");
    else if ((st = w->tp->recv(w->tp, rq->sid, rq->seq, &blob, &bl, to)) != TC_OK) fail_st(c, st, "Import");
    else if ((st = tc_session_import(s, blob, bl)) != TC_OK) fail_st(c, st, "Import");
    else {
        reply_session(s, &sr);
        send_msg(w, c, &sr.base);
    }
    free(blob);
    if (s) sess_put(w, rq->sid);
    tconst__worker__v1__import_request__free_unpacked(rq, NULL);
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Step: one batched hit step, or the worker's own step loop when a
 * session asks for more than one token (Sampler.max_steps): each session
 * is fed what it just sampled and stepped again, in one batch with the
 * others still going, until it has its tokens, sampled a stop token, or
 * reached a window boundary, or the call has computed max_seconds. */
/* most tokens one Step call may produce (its sessions' max_steps summed):
 * 16M ids, 64 MiB of reply; a coordinator asks for far fewer */
#define TC_STEP_MAX_TOKENS (1 << 24)
/* ... and of them, the most with logprobs (a record of 168 bytes each):
 * 4096 sessions (--max-batch's most) x 64 steps (the coordinator's
 * TC_LP_RUN_MAX for such a run) */
#define TC_STEP_MAX_LOGPROBS (1 << 18)

static atomic_int g_draw_logged; /* the first step drawn by the backend's sample op is logged */

static void do_step(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len) {
    Tconst__Worker__V1__StepRequest *rq = tconst__worker__v1__step_request__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "StepRequest: cannot decode the request", NULL);
    const int B = (int)rq->n_sids, V = w->m->cfg.vocab_size;
    int multi = 0;
    int64_t tot = 0;
    tc_session **ss = NULL, **as = NULL;
    float *lg = NULL;
    int32_t *next = NULL, *feed = NULL, *out = NULL;
    int32_t *cnt = NULL;
    int *act = NULL;
    int64_t *off = NULL, *nt = NULL, *sb = NULL;
    Tconst__Worker__V1__Sampler *so = NULL, **sop = NULL;
    uint64_t *rng = NULL;
    int32_t *cid = NULL; /* candidates [B, K] when every sampler can draw from the top K */
    float *cval = NULL;
    tc_draw *dr = NULL;      /* draws [B] when the backend samples the full rows on its device */
    int32_t *tk = NULL;      /* the tokens it drew [B] */
    uint64_t *rng2 = NULL;   /* the RNGs after those draws [B, 4], kept once the step stands */
    tc_row_status *rows = NULL; /* [B]: the sessions left out (their inline sync or rebuild failed) */
    Tconst__Worker__V1__StepError *se = NULL, **sep = NULL;
    tc_logprob *lpr = NULL;     /* [lp_tot]: the tokens' of the rows asking for logprobs, row i's from lpoff[i] */
    int64_t lp_tot = 0, *lpoff = NULL;
    float *lpo = NULL, *lpto = NULL; /* the reply's logprob and top_logprobs */
    int32_t *lpti = NULL;            /* and top_ids */
    int K = 0, dense = 0, draw = 0, n_bad = 0, any_lp = 0;
    tc_status st;
    if (rq->n_tokens != rq->n_sids || (rq->n_samplers && rq->n_samplers != rq->n_sids)) {
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: sids, tokens and samplers must have one entry per session%s", "");
        goto out;
    }
    if (B > 65536) {
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: a batch holds at most 65536 sessions%s", "");
        goto out;
    }
    if (!(rq->max_seconds >= 0) || isinf(rq->max_seconds)) {
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: max_seconds must be a finite number >= 0 (0: no limit)%s", "");
        goto out;
    }
    for (int i = 0; i < (int)rq->n_samplers; i++) {
        const Tconst__Worker__V1__Sampler *in = rq->samplers[i];
        tc_sampling_params p = {in->temperature, in->top_k, in->top_p, 0};
        if (in->n_rng != 4 || tc_sampling_validate(&p) != TC_OK) {
            fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: bad sampler: %s", in->n_rng != 4 ? "rng must be 4 words" : tc_error_get());
            goto out;
        }
        if (!(in->rng[0] | in->rng[1] | in->rng[2] | in->rng[3])) { /* xoshiro's fixed point: zeros forever */
            fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: bad sampler: rng must not be all zero%s", "");
            goto out;
        }
        if (in->max_steps < 0 || in->max_steps > 65536) {
            fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: sampler max_steps must be within 0..65536%s", "");
            goto out;
        }
        if (in->n_stop > 65536) {
            fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: a sampler's stop list holds at most 65536 ids%s", "");
            goto out;
        }
        if (in->logprobs < 0 || in->logprobs > TC_LOGPROBS_MAX + 1) {
            char why[64];
            snprintf(why, sizeof why, "within 0..%d", TC_LOGPROBS_MAX + 1);
            fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: sampler logprobs must be %s", why);
            goto out;
        }
        any_lp |= in->logprobs > 0;
        dense |= in->logprobs > 0; /* the full rows, sampled on the host */
        /* a long list (a stop string's candidate tokens): searched, not scanned */
        if (in->n_stop > 16) qsort(in->stop, in->n_stop, sizeof *in->stop, cmp_i32);
        multi |= in->max_steps > 1;
        tot += in->max_steps > 1 ? in->max_steps : 1;
        if (in->logprobs > 0) lp_tot += in->max_steps > 1 ? in->max_steps : 1;
        int need = tc_sampler_topk_need(&p, V);
        dense |= need == 0;
        if (need > K) K = need;
    }
    if (dense || rq->want_logits) K = 0; /* some sampler (or the caller) needs the full rows */
    /* ... which a sampling backend (the GPU) draws from where they are */
    draw = dense && !any_lp && !rq->want_logits && rq->n_samplers && tc_model_draws_on_backend(w->m, B);
    if (draw && !atomic_exchange(&g_draw_logged, 1))
        TC_LOG(TC_LOG_INFO, "worker", "sampling on the backend (its sample op): steps hand back token ids, not logits");
    if (multi && rq->want_logits) {
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: logits are one step's; max_steps > 1 cannot return them%s", "");
        goto out;
    }
    if (!rq->n_samplers) tot = B;
    if (lp_tot > TC_STEP_MAX_LOGPROBS) {
        char why[128];
        snprintf(why, sizeof why, "%lld tokens with logprobs asked in one call, at most %d", (long long)lp_tot,
                 TC_STEP_MAX_LOGPROBS);
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: %s", why);
        goto out;
    }
    if (tot > TC_STEP_MAX_TOKENS) { /* B x max_steps: the reply's ids, reserved up front */
        char why[128];
        snprintf(why, sizeof why, "%lld tokens asked in one call (sessions x max_steps), at most %d", (long long)tot,
                 TC_STEP_MAX_TOKENS);
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Step: %s", why);
        goto out;
    }
    ss = calloc((size_t)B + 1, sizeof *ss), as = calloc((size_t)B + 1, sizeof *as);
    if (K > 0) {
        /* greedy / top-k: only K candidates per row leave the backend */
        cid = malloc((size_t)(B ? B : 1) * K * 4), cval = malloc((size_t)(B ? B : 1) * K * 4);
    } else if (draw) {
        dr = calloc((size_t)B + 1, sizeof *dr), tk = calloc((size_t)B + 1, 4), rng2 = calloc((size_t)B * 4 + 1, 8);
    } else
        lg = malloc((size_t)(B ? B : 1) * V * 4);
    next = calloc((size_t)tot + 1, 4), out = calloc((size_t)tot + 1, 4), feed = calloc((size_t)B + 1, 4);
    cnt = calloc((size_t)B + 1, sizeof *cnt), act = calloc((size_t)B + 1, sizeof *act);
    off = calloc((size_t)B + 1, 8), nt = calloc((size_t)B + 1, 8), sb = calloc((size_t)B + 1, 8);
    so = calloc((size_t)B + 1, sizeof *so), sop = calloc((size_t)B + 1, sizeof *sop);
    rng = calloc((size_t)B * 4 + 1, 8);
    rows = calloc((size_t)B + 1, sizeof *rows);
    if (any_lp && (!(lpr = malloc((size_t)lp_tot * sizeof *lpr)) || !(lpoff = calloc((size_t)B + 1, 8)))) {
        fail(c, TC_GRPC_RESOURCE_EXHAUSTED, "Step: out of memory for the logprobs%s", "");
        goto out;
    }
    if (!ss || !rows || !as || (K > 0 ? !cid || !cval : draw ? !dr || !tk || !rng2 : !lg) || !next || !out || !feed || !cnt || !act || !off || !nt || !sb ||
        !so || !sop || !rng) {
        fail(c, TC_GRPC_RESOURCE_EXHAUSTED, "Step: out of memory%s", "");
        goto out;
    }
    for (int i = 0; i < B; i++) {
        int busy;
        if (!(ss[i] = sess_get(w, rq->sids[i], 0, &busy))) {
            if (busy) fail(c, TC_GRPC_ABORTED, "Step: a session of the batch is busy with another call%s", "");
            else fail(c, TC_GRPC_NOT_FOUND, "Step: a session of the batch is not on this worker%s", "");
            goto out;
        }
    }
    /* each session's inline sync (or window rebuild) first, apart: one
     * that fails is left out of the batch, the others step without it */
    for (int i = 0; i < B; i++)
        if (w->o.fault_step_sync_at > 0 && ss[i]->n_tokens == w->o.fault_step_sync_at && tc_session_sync_due(ss[i])) {
            rows[i].st = TC_ERR_INTERNAL;
            snprintf(rows[i].msg, sizeof rows[i].msg, "inline sync at %lld tokens: injected fault (TC_FAULT_STEP_SYNC_AT)",
                     (long long)ss[i]->n_tokens);
        }
    n_bad = tc_step_ready(ss, B, rows);
    for (int i = 0; i < B && n_bad; i++)
        if (rows[i].st != TC_OK) {
            TC_LOG(TC_LOG_WARN, "worker", "Step: %d of %d sessions left out of the batch (first: %s)", n_bad, B,
                   rows[i].msg);
            break;
        }
    int nact = 0;
    int64_t o = 0;
    for (int i = 0; i < B; i++) {
        if (rows[i].st == TC_OK) act[nact++] = i;
        feed[i] = rq->tokens[i];
        off[i] = o;
        o += rq->n_samplers && rq->samplers[i]->max_steps > 1 ? rq->samplers[i]->max_steps : 1;
        if (any_lp) lpoff[i + 1] = lpoff[i] + (rq->samplers[i]->logprobs > 0 ? o - off[i] : 0);
        if (rq->n_samplers) memcpy(rng + 4 * i, rq->samplers[i]->rng, 32);
    }
    const double t0 = tc_now_s();
    for (int it = 0; nact > 0; it++) {
        for (int k = 0; k < nact; k++) as[k] = ss[act[k]], out[k] = feed[act[k]];
        if (draw) /* the RNGs advance in rng2, kept only when the step stands */
            for (int k = 0; k < nact; k++) {
                const Tconst__Worker__V1__Sampler *in = rq->samplers[act[k]];
                w->smp.p = (tc_sampling_params){in->temperature, in->top_k, in->top_p, 0};
                memcpy(w->smp.rng, rng + 4 * act[k], sizeof w->smp.rng);
                tc_sampler_draw_params(&w->smp, &dr[k]);
                memcpy(rng2 + 4 * k, w->smp.rng, sizeof w->smp.rng);
            }
        st = K > 0   ? tc_step_batch_topk(as, out, nact, K, cid, cval)
             : draw ? tc_step_batch_draw(as, out, nact, dr, tk)
                    : tc_step_batch(as, out, nact, lg);
        if (st != TC_OK) {
            if (it == 0) {
                fail_st(c, st, "Step");
                goto out;
            }
            /* the steps before stand (this one was rolled back): return
             * them; the next call meets the error again if it persists */
            TC_LOG(TC_LOG_WARN, "worker", "step loop ended after %d steps: %s", it, tc_error_get());
            break;
        }
        if (!rq->n_samplers) { /* logits only: one step, each session stepped counts 1 */
            for (int k = 0; k < nact; k++) cnt[act[k]] = 1;
            break;
        }
        int more_time = rq->max_seconds <= 0 || tc_now_s() - t0 < rq->max_seconds, keep = 0;
        for (int k = 0; k < nact; k++) {
            const int i = act[k];
            const Tconst__Worker__V1__Sampler *in = rq->samplers[i];
            w->smp.p = (tc_sampling_params){in->temperature, in->top_k, in->top_p, 0};
            memcpy(w->smp.rng, rng + 4 * i, sizeof w->smp.rng);
            int32_t tok = draw    ? tk[k]
                          : K > 0 ? tc_sampler_sample_topk(&w->smp, cid + (size_t)k * K, cval + (size_t)k * K, K)
                                  : tc_sampler_sample(&w->smp, lg + (size_t)k * V);
            memcpy(rng + 4 * i, draw ? rng2 + 4 * k : w->smp.rng, 32);
            if (in->logprobs > 0) tc_logprob_of(lg + (size_t)k * V, V, tok, in->logprobs - 1, &lpr[lpoff[i] + cnt[i]]);
            next[off[i] + cnt[i]++] = tok;
            int go = more_time && cnt[i] < in->max_steps && !tc_session_sync_due(ss[i]);
            if (in->n_stop > 16) go = go && !bsearch(&tok, in->stop, in->n_stop, sizeof *in->stop, cmp_i32);
            else
                for (size_t q = 0; go && q < in->n_stop; q++) go = tok != in->stop[q];
            feed[i] = tok;
            if (go) act[keep++] = i;
        }
        if (it == 0 && rq->want_logits) break; /* lg holds this step's logits */
        nact = keep;
    }
    if (rq->want_logits && n_bad) { /* lg rows are the stepped sessions': each to its own row */
        for (int i = B - 1, k = B - n_bad - 1; i >= 0; i--) {
            float *row = lg + (size_t)i * V;
            if (rows[i].st != TC_OK) memset(row, 0, (size_t)V * 4);
            else if (k-- != i) memmove(row, lg + (size_t)(k + 1) * V, (size_t)V * 4);
        }
    }
    Tconst__Worker__V1__StepResponse r = TCONST__WORKER__V1__STEP_RESPONSE__INIT;
    size_t n_out = 0;
    for (int i = 0; i < B; i++) {
        nt[i] = ss[i]->n_tokens;
        sb[i] = (int64_t)tc_session_state_bytes(ss[i]);
        if (!rq->n_samplers) continue;
        for (int q = 0; q < cnt[i]; q++) out[n_out++] = next[off[i] + q];
        tconst__worker__v1__sampler__init(&so[i]);
        so[i].rng = rng + 4 * i;
        so[i].n_rng = 4;
        sop[i] = &so[i];
    }
    if (rq->n_samplers) r.next = out, r.n_next = n_out, r.samplers = sop, r.n_samplers = (size_t)B;
    if (n_out > 0 && fault_due(&w->fault_steps, w->o.fault_step_reply_at)) out[0] = V; /* tests: an id past the vocabulary */
    if (multi || n_bad) r.counts = cnt, r.n_counts = (size_t)B;
    if (n_bad) {
        se = calloc((size_t)n_bad, sizeof *se), sep = calloc((size_t)n_bad, sizeof *sep);
        if (!se || !sep) {
            fail(c, TC_GRPC_RESOURCE_EXHAUSTED, "Step: out of memory%s", "");
            goto out;
        }
        for (int i = 0; i < B; i++)
            if (rows[i].st != TC_OK) {
                tconst__worker__v1__step_error__init(&se[r.n_errors]);
                se[r.n_errors].index = (uint32_t)i;
                se[r.n_errors].code = code_of(rows[i].st);
                se[r.n_errors].message = rows[i].msg;
                sep[r.n_errors] = &se[r.n_errors];
                r.n_errors++;
            }
        r.errors = sep;
    }
    if (rq->want_logits) r.logits = lg, r.n_logits = (size_t)B * V;
    if (any_lp) { /* the records of the rows that asked, in next's order */
        size_t nl = 0, nt2 = 0;
        for (int i = 0; i < B; i++)
            if (rq->samplers[i]->logprobs > 0)
                for (int q = 0; q < cnt[i]; q++) nl++, nt2 += (size_t)lpr[lpoff[i] + q].n_top;
        lpo = malloc((nl + 1) * sizeof *lpo), lpto = malloc((nt2 + 1) * sizeof *lpto), lpti = malloc((nt2 + 1) * 4);
        if (!lpo || !lpto || !lpti) {
            fail(c, TC_GRPC_RESOURCE_EXHAUSTED, "Step: out of memory%s", "");
            goto out;
        }
        for (int i = 0; i < B; i++)
            if (rq->samplers[i]->logprobs > 0)
                for (int q = 0; q < cnt[i]; q++) {
                    const tc_logprob *x = &lpr[lpoff[i] + q];
                    lpo[r.n_logprob++] = x->logprob;
                    memcpy(lpti + r.n_top_ids, x->top_id, (size_t)x->n_top * 4);
                    memcpy(lpto + r.n_top_logprobs, x->top_logprob, (size_t)x->n_top * 4);
                    r.n_top_ids += (size_t)x->n_top, r.n_top_logprobs += (size_t)x->n_top;
                }
        r.logprob = lpo, r.top_ids = lpti, r.top_logprobs = lpto;
    }
    r.n_tokens = nt, r.n_n_tokens = (size_t)B;
    r.state_bytes = sb, r.n_state_bytes = (size_t)B;
    send_msg(w, c, &r.base);
out:
    for (int i = 0; ss && i < B; i++)
        if (ss[i]) sess_put(w, rq->sids[i]);
    free(cid), free(cval), free(dr), free(tk), free(rng2);
    free(ss), free(as), free(lg), free(next), free(out), free(feed), free(cnt), free(act), free(off), free(nt);
    free(sb), free(so), free(sop), free(rng), free(rows), free(se), free(sep), free(lpr), free(lpoff), free(lpo), free(lpto), free(lpti);
    tconst__worker__v1__step_request__free_unpacked(rq, NULL);
}

static void do_connect(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len);

static void run_job(tc_worker *w, wjob *j) {
    const char *m = j->method;
    /* (an Open too: the coordinator takes one that timed out for failed
     * and opens again before it sends that session anything else. A
     * Connect too: the coordinator tries again; a late NCCL one's peer
     * gives up its init at the same deadline) */
    const int compute = !strcmp(m, "Step") || !strcmp(m, "Sync") || !strcmp(m, "Append") || !strcmp(m, "Import") ||
                        !strcmp(m, "Open") || !strcmp(m, "Connect");
    if (compute && (tc_call_is_done(j->call) || tc_call_deadline_left(j->call) <= 0)) {
        /* queued past its deadline (or cancelled): the coordinator has
         * given up on it and may be rebuilding these sessions -- running it
         * now would change a session behind its back */
        TC_LOG(TC_LOG_WARN, "worker", "%s dropped: its deadline passed while it was queued", m);
        tc_call_finish(j->call, TC_GRPC_DEADLINE_EXCEEDED, "the deadline passed before the call ran");
    } else if (!strcmp(m, "Step")) do_step(w, j->call, j->msg, j->len);
    else if (!strcmp(m, "Sync")) do_sync(w, j->call, j->msg, j->len);
    else if (!strcmp(m, "Append")) do_append(w, j->call, j->msg, j->len);
    else if (!strcmp(m, "Import")) do_import(w, j->call, j->msg, j->len);
    else if (!strcmp(m, "Open")) do_open_close(w, j->call, j->msg, j->len, 1);
    else if (!strcmp(m, "Close")) do_open_close(w, j->call, j->msg, j->len, 0);
    else if (!strcmp(m, "Connect")) do_connect(w, j->call, j->msg, j->len);
    tc_call_unref(j->call);
    free(j->msg);
    free(j);
}

typedef struct {
    tc_worker *w;
    int role;
} thr_arg;

static void *compute_main(void *arg) {
    thr_arg a = *(thr_arg *)arg;
    free(arg);
    tc_worker *w = a.w;
    t_compute = 1;
    t_worker = w;
    tc_model_bind_workspace(a.role);
    if (w->o.thread_init) w->o.thread_init(w->o.device_arg, a.role);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        wqueue *q = &w->q[a.role];
        if (q->head) {
            wjob *j = q->head;
            q->head = j->next;
            if (!q->head) q->tail = NULL;
            pthread_mutex_unlock(&w->mu);
            run_job(w, j);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (w->stop) break;
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    free(t_held); /* this thread's list of held sessions (sess_get) */
    t_held = NULL, t_n_held = t_cap_held = 0;
    return NULL;
}

/* ---- the RPC thread ---- */
static void do_info(tc_worker *w, tc_call *c, int ping, const uint8_t *msg, size_t len) {
    uint64_t caller = 0;
    int release = 0;
    if (ping) {
        Tconst__Worker__V1__PingRequest *rq = tconst__worker__v1__ping_request__unpack(NULL, len, msg);
        if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "PingRequest: cannot decode the request", NULL);
        caller = rq->coordinator;
        release = rq->release;
        tconst__worker__v1__ping_request__free_unpacked(rq, NULL);
    } else {
        Tconst__Worker__V1__InfoRequest *rq = tconst__worker__v1__info_request__unpack(NULL, len, msg);
        if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "InfoRequest: cannot decode the request", NULL);
        caller = rq->coordinator;
        tconst__worker__v1__info_request__free_unpacked(rq, NULL);
    }
    char why[300];
    pthread_mutex_lock(&w->mu);
    int refused = claim(w, caller, release, why, sizeof why);
    int n = 0;
    for (int i = 0; i < w->n_sess; i++) n += !w->sess[i].orphan;
    uint64_t owner = w->owner;
    tc_transport *tp = w->tp; /* an NCCL Connect swaps it under mu (the old one retired, never freed) */
    pthread_mutex_unlock(&w->mu);
    if (refused) {
        tc_call_finish(c, TC_GRPC_RESOURCE_EXHAUSTED, why);
        return;
    }
    if (ping) {
        Tconst__Worker__V1__PingResponse r = TCONST__WORKER__V1__PING_RESPONSE__INIT;
        r.boot_id = w->boot_id;
        r.sessions = n;
        return send_msg(w, c, &r.base);
    }
    Tconst__Worker__V1__InfoResponse r = TCONST__WORKER__V1__INFO_RESPONSE__INIT;
    char role[32], device[64], dtype[32], addr[300], ver[32];
    snprintf(role, sizeof role, "%s", w->o.role);
    snprintf(device, sizeof device, "%s", w->o.device);
    snprintf(dtype, sizeof dtype, "%s", w->m->dtype_name);
    snprintf(addr, sizeof addr, "%s", tp ? tp->address(tp) : "");
    snprintf(ver, sizeof ver, "%s", TC_WORKER_VERSION);
    r.role = role, r.device = device, r.dtype = dtype, r.data_address = addr, r.version = ver;
    r.config_json = w->config_json;
    r.n_params = w->m->n_params;
    r.weights_digest = w->m->weights_digest;
    r.max_message_bytes = w->o.max_message_bytes;
    r.pid = (int32_t)getpid();
    r.boot_id = w->boot_id;
    r.transport = !strcmp(w->o.transport, "nccl") ? (char *)"nccl" : tp ? (char *)tp->kind : (char *)"none";
    r.sessions = n;
    r.coordinator = owner;
#ifdef TC_HAVE_NCCL
    uint8_t id[128];
    if (!strcmp(w->o.transport, "nccl") && !strcmp(w->o.role, "context") && tc_transport_nccl_id(id) == TC_OK) {
        r.nccl_id.data = id;
        r.nccl_id.len = 128;
    }
#endif
    send_msg(w, c, &r.base);
}

/* RPC thread: records a Cancel; the Append or Sync carrying its id stops at
 * its next layer or tile, queued or running. */
static void do_cancel(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len) {
    Tconst__Worker__V1__CancelRequest *rq = tconst__worker__v1__cancel_request__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "CancelRequest: cannot decode the request", NULL);
    const uint64_t id = rq->cancel_id;
    tconst__worker__v1__cancel_request__free_unpacked(rq, NULL);
    if (!id) return fail(c, TC_GRPC_INVALID_ARGUMENT, "Cancel: cancel_id must be nonzero%s", "");
    pthread_mutex_lock(&w->mu);
    w->cancels[w->n_cancels] = id;
    w->n_cancels = (w->n_cancels + 1) % 16;
    pthread_mutex_unlock(&w->mu);
    Tconst__Worker__V1__CancelResponse r = TCONST__WORKER__V1__CANCEL_RESPONSE__INIT;
    send_msg(w, c, &r.base);
}

/* Context thread: (re)points the data plane — the host transport's peer
 * address, or a new NCCL communicator (blocks until the peer joins with
 * the same id; the coordinator calls both workers at once). */
#ifdef TC_HAVE_NCCL
/* Before a new NCCL communicator: the old one stops (it is retired, freed
 * at exit, once the new one is up). Its receiver returns and aborts its
 * communicator -- a receive left posted on the device would hold the new
 * one's device calls -- and its later sends fail. */
static void retire_nccl(tc_worker *w) {
    pthread_mutex_lock(&w->mu);
    if (w->tp && w->tp_owned) w->tp->close(w->tp);
    pthread_mutex_unlock(&w->mu);
}
#endif

static void do_connect(tc_worker *w, tc_call *c, const uint8_t *msg, size_t len) {
    Tconst__Worker__V1__ConnectRequest *rq = tconst__worker__v1__connect_request__unpack(NULL, len, msg);
    if (!rq) return fail(c, TC_GRPC_INVALID_ARGUMENT, "ConnectRequest: cannot decode the request", NULL);
    tc_status st;
    if (atomic_load(&w->fault_connects) > 0 && atomic_fetch_sub(&w->fault_connects, 1) > 0) {
        fail(c, TC_GRPC_INTERNAL, "Connect: injected fault (TC_FAULT_CONNECT_ERRORS)%s", "");
    } else if (!strcmp(w->o.transport, "nccl") && strcmp(w->o.role, "both") != 0) {
#ifdef TC_HAVE_NCCL
        tc_transport *tp = NULL;
        if (rq->nccl_id.len != 128 || (rq->nccl_rank != 0 && rq->nccl_rank != 1) ||
            rq->nccl_rank != (strcmp(w->o.role, "context") == 0 ? 0 : 1))
            fail(c, TC_GRPC_INVALID_ARGUMENT, "Connect: nccl_id must be 128 bytes and nccl_rank 0 (context) or 1 (generation)%s", "");
        else if ((st = (retire_nccl(w), tc_transport_nccl_open(&tp, rq->nccl_id.data, rq->nccl_rank, w->o.cuda_device,
                                                 tc_call_deadline_left(c)))) != TC_OK)
            fail_st(c, st, "Connect");
        else {
            /* the RPC thread (Info, Close, drop_all) may hold the old
             * one (Import and ship run on this thread, the context one):
             * it is retired, not freed, until the worker ends (a
             * communicator per peer restart) */
            pthread_mutex_lock(&w->mu);
            tc_transport **rt = w->tp && w->tp_owned ? realloc(w->retired, (size_t)(w->n_retired + 1) * sizeof *rt) : NULL;
            if (rt) w->retired = rt, w->retired[w->n_retired++] = w->tp;
            else if (w->tp && w->tp_owned) TC_LOG(TC_LOG_WARN, "worker", "out of memory: the old data plane is leaked");
            w->tp = tp;
            w->tp_owned = 1;
            pthread_mutex_unlock(&w->mu);
            TC_LOG(TC_LOG_INFO, "worker", "NCCL data plane up (rank %d)", rq->nccl_rank);
            Tconst__Worker__V1__ConnectResponse r = TCONST__WORKER__V1__CONNECT_RESPONSE__INIT;
            send_msg(w, c, &r.base);
        }
#else
        fail(c, TC_GRPC_FAILED_PRECONDITION, "Connect: this build has no NCCL%s", "");
#endif
    } else if (!w->tp) fail(c, TC_GRPC_FAILED_PRECONDITION, "Connect: this worker has no data plane (role both)%s", "");
    else if (!rq->peer_data_address || !rq->peer_data_address[0])
        fail(c, TC_GRPC_INVALID_ARGUMENT, "Connect: peer_data_address is empty%s", "");
    else if ((st = w->tp->connect(w->tp, rq->peer_data_address)) != TC_OK) fail_st(c, st, "Connect");
    else {
        TC_LOG(TC_LOG_INFO, "worker", "data plane peer: %s", rq->peer_data_address);
        Tconst__Worker__V1__ConnectResponse r = TCONST__WORKER__V1__CONNECT_RESPONSE__INIT;
        send_msg(w, c, &r.base);
    }
    tconst__worker__v1__connect_request__free_unpacked(rq, NULL);
}

static void on_start(void *ud, tc_call *c, const char *method, const uint8_t *msg, size_t len) {
    tc_worker *w = ud;
    if (!strcmp(method, "/grpc.health.v1.Health/Check")) { /* Kubernetes' grpc probe */
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        send_msg(w, c, &r.base);
        tc_call_unref(c);
        return;
    }
    if (strncmp(method, M_PREFIX, strlen(M_PREFIX)) != 0) {
        fail(c, TC_GRPC_UNIMPLEMENTED, "unknown method %s", method);
        tc_call_unref(c);
        return;
    }
    const char *m = method + strlen(M_PREFIX);
    if (!msg) msg = (const uint8_t *)"", len = 0;
    if (!strcmp(m, "Info") || !strcmp(m, "Ping")) {
        do_info(w, c, m[0] == 'P', msg, len);
        tc_call_unref(c);
        return;
    }
    if (!strcmp(m, "Cancel")) { /* here: the computation it stops holds the compute thread */
        do_cancel(w, c, msg, len);
        tc_call_unref(c);
        return;
    }
    /* Connect on the host transport only records the peer's address: here,
     * on the RPC thread, so a coordinator's supervisor does not wait (up to
     * minutes) behind the context thread's running sync or prefill. NCCL's
     * joins a communicator: the context thread, with the data it guards */
    if (!strcmp(m, "Connect") && strcmp(w->o.transport, "nccl") != 0) {
        do_connect(w, c, msg, len);
        tc_call_unref(c);
        return;
    }
    /* an Open before a prefill (SessionRef.prefill) goes with the Appends:
     * a new session's copy is opened and then prefilled, and neither may
     * wait behind another session's Sync (a long context's takes seconds
     * to minutes) on the context thread; an Open for a Sync's or an
     * Import's copy stays there, not behind another session's long
     * prefill. The coordinator waits for the Open's reply before it sends
     * that session anything else, so the two queues never reorder one
     * session's calls */
    int role = !strcmp(m, "Step") ? 0 : !strcmp(m, "Append") && w->n_thr == 3 ? 2 : 1;
    if (!strcmp(m, "Open") && w->n_thr == 3) {
        Tconst__Worker__V1__SessionRef *sr = tconst__worker__v1__session_ref__unpack(NULL, len, msg);
        if (sr && sr->prefill) role = 2;
        if (sr) tconst__worker__v1__session_ref__free_unpacked(sr, NULL);
    }
    if (role == 1 && strcmp(m, "Sync") && strcmp(m, "Append") && strcmp(m, "Import") && strcmp(m, "Open") &&
        strcmp(m, "Close") && strcmp(m, "Connect")) {
        fail(c, TC_GRPC_UNIMPLEMENTED, "unknown method %s", method);
        tc_call_unref(c);
        return;
    }
    /* a role's worker refuses the other role's work: a misrouted call is a
     * coordinator bug, better loud than slow */
    int is_ctx = !strcmp(w->o.role, "context"), is_gen = !strcmp(w->o.role, "generation");
    if ((is_ctx && (!strcmp(m, "Step") || !strcmp(m, "Import"))) || (is_gen && !strcmp(m, "Sync"))) {
        char e[200];
        snprintf(e, sizeof e, "%s is not served by a %s worker", m, w->o.role);
        tc_call_finish(c, TC_GRPC_FAILED_PRECONDITION, e);
        tc_call_unref(c);
        return;
    }
    wjob *j = calloc(1, sizeof *j);
    if (j) j->msg = malloc(len ? len : 1);
    if (!j || !j->msg) {
        if (j) free(j);
        tc_call_finish(c, TC_GRPC_RESOURCE_EXHAUSTED, "worker: out of memory");
        tc_call_unref(c);
        return;
    }
    memcpy(j->msg, msg, len);
    j->len = len;
    j->call = c;
    snprintf(j->method, sizeof j->method, "%s", m);
    pthread_mutex_lock(&w->mu);
    wqueue *q = &w->q[role];
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}
static void on_message(void *ud, tc_call *c, const uint8_t *msg, size_t len) { (void)ud, (void)c, (void)msg, (void)len; }
static void on_done(void *ud, tc_call *c, int cancelled) { (void)ud, (void)c, (void)cancelled; }
static void on_sent(void *ud, tc_call *c) { (void)ud, (void)c; }

static const tc_rpc_handlers HANDLERS = {on_start, on_message, on_done, on_sent, NULL};
const tc_rpc_handlers *tc_worker_handlers(void) { return &HANDLERS; }

tc_status tc_worker_new(tc_worker **out, tc_model *m, tc_transport *tp, const char *config_json,
                        const tc_worker_opts *o) {
    tc_worker *w = calloc(1, sizeof *w);
    if (!w) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    w->o = *o;
    atomic_init(&w->fault_syncs, o->fault_sync_errors);
    atomic_init(&w->fault_connects, o->fault_connect_errors);
    if (w->o.orphan_timeout_s <= 0) w->o.orphan_timeout_s = 30;
    w->m = m;
    w->tp = tp;
    w->config_json = strdup(config_json);
    /* random: the coordinator tells processes apart by it (a restart, one
     * worker named twice in --workers); pid and time alone collide between
     * identical containers started together */
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint64_t)getpid() ^ ((uint64_t)tc_wall_ms() << 20) ^ (uint64_t)(uintptr_t)w;
    w->boot_id = seed ? seed : 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    tc_sampling_params p = {0, 0, 1, 0};
    if (!w->config_json || tc_sampler_init(&w->smp, &p, m->cfg.vocab_size) != TC_OK) {
        free(w->config_json);
        free(w);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    int started = 0;
    w->n_thr = w->o.prefill_thread ? 3 : 2;
    for (int r = 0; r < w->n_thr; r++, started++) {
        thr_arg *a = malloc(sizeof *a);
        if (!a) break;
        a->w = w, a->role = r;
        if (pthread_create(&w->thr[r], NULL, compute_main, a) != 0) {
            free(a);
            break;
        }
    }
    if (started < w->n_thr) { /* stop what started, give everything back */
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        for (int r = 0; r < started; r++) pthread_join(w->thr[r], NULL);
        tc_sampler_free(&w->smp);
        free(w->config_json);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return TC_FAIL(TC_ERR_INTERNAL, "cannot start the worker's compute threads");
    }
    *out = w;
    return TC_OK;
}

/* After the RPC server stopped: finishes queued work (the calls are gone,
 * sends fail harmlessly), joins, frees the sessions. */
void tc_worker_free(tc_worker *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    /* a compute thread waiting on the data plane (an Import's receive, a
     * send to a stopped peer) returns now, not at its timeout: the joins
     * below would wait it out (main.c closes the host transport it owns;
     * these are the NCCL ones Connect made) */
    if (w->tp && w->tp_owned && w->tp->close) w->tp->close(w->tp);
    for (int i = 0; i < w->n_retired; i++)
        if (w->retired[i]->close) w->retired[i]->close(w->retired[i]);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int r = 0; r < w->n_thr; r++) pthread_join(w->thr[r], NULL);
    for (int i = 0; i < w->n_sess; i++) tc_session_free(w->sess[i].s);
    if (w->tp && w->tp_owned) w->tp->free(w->tp);
    for (int i = 0; i < w->n_retired; i++) w->retired[i]->free(w->retired[i]);
    free(w->retired);
    free(w->sess);
    tc_sampler_free(&w->smp);
    free(w->config_json);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
