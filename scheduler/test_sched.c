/* test_sched.c — unit tests of the scheduler (scheduler/sched.h) with a fake
 * clock and fake workers. Label: unit.
 *
 * Groups: EDF ordering (hand cases, and a randomized run against a
 * linear-scan reference queue with closes in between), batching (window,
 * sync_batch_max, the caller's max, pair filter), admission limits, placement
 * (against a reference argmin model) and stickiness, dead pairs and
 * fail-over, the whole transition matrix, closing while queued or syncing,
 * and a simulation: 16 sessions, a fake generation worker stepping every
 * GENERATING session each tick and a fake context worker per pair with a
 * sync duration; each session's stall must equal the queue wait + sync
 * duration the test computed itself, and every batch must equal the one a
 * reference EDF model picks. Time is a tick counter times an exactly
 * representable step; nothing reads the real clock. Exit status 1 on any
 * failure. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"

static int g_checks, g_fails;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        g_checks++;                                                           \
        if (!(cond)) {                                                        \
            g_fails++;                                                        \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__,  \
                    #cond);                                                   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
        }                                                                     \
    } while (0)

/* A call expected to fail with `code` and a message containing `needle`. */
#define CHECK_FAIL(call, code, needle)                                        \
    do {                                                                      \
        tc_error_clear();                                                     \
        tc_status st_ = (call);                                               \
        const char *msg_ = tc_error_get();                                    \
        CHECK(st_ == (code), "%s -> %s, want %s", #call, tc_status_str(st_),  \
              tc_status_str(code));                                           \
        CHECK(msg_ && strstr(msg_, (needle)), "%s: message '%s' lacks '%s'",  \
              #call, msg_ ? msg_ : "(none)", (needle));                       \
    } while (0)

#define CHECK_OK(call)                                                        \
    do {                                                                      \
        tc_status st_ = (call);                                               \
        CHECK(st_ == TC_OK, "%s -> %s: %s", #call, tc_status_str(st_),        \
              tc_error_get() ? tc_error_get() : "");                          \
    } while (0)

static void group_done(const char *name, int checks0, int fails0) {
    printf("sched.%-12s %5d checks, %d failed\n", name, g_checks - checks0, g_fails - fails0);
}

static tc_sched_limits limits(int max_sessions, int max_q, int64_t max_bytes, int batch_max,
                              double window, int n_pairs) {
    tc_sched_limits l = {max_sessions, max_q, max_bytes, batch_max, window, n_pairs};
    return l;
}

static tc_sched *mk(tc_sched_limits l) {
    tc_sched *s = NULL;
    tc_status st = tc_sched_new(&s, &l);
    if (st != TC_OK) {
        fprintf(stderr, "tc_sched_new: %s: %s\n", tc_status_str(st), tc_error_get());
        exit(1);
    }
    return s;
}

/* Admit sid and bring it AT_BOUNDARY; returns its pair. */
static int admit_at_boundary(tc_sched *s, uint64_t sid) {
    int pair = -1;
    CHECK_OK(tc_sched_admit(s, sid, 100, &pair));
    CHECK_OK(tc_sched_transition(s, sid, TC_SS_GENERATING));
    CHECK_OK(tc_sched_transition(s, sid, TC_SS_AT_BOUNDARY));
    return pair;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n) { /* xorshift64*, uniform enough for tests */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 33) % n;
}

/* ---- reference queue: a plain array scanned linearly -------------------- */

typedef struct {
    uint64_t sid;
    double deadline;
    long seq;
} ref_item;

typedef struct {
    ref_item it[512];
    int n;
    long next_seq;
} ref_queue;

static void ref_push(ref_queue *q, uint64_t sid, double deadline) {
    if (q->n >= 512) { fprintf(stderr, "ref queue overflow\n"); exit(1); }
    q->it[q->n].sid = sid;
    q->it[q->n].deadline = deadline;
    q->it[q->n].seq = q->next_seq++;
    q->n++;
}

static int ref_min(const ref_queue *q) {
    int m = -1;
    for (int i = 0; i < q->n; i++)
        if (m < 0 || q->it[i].deadline < q->it[m].deadline ||
            (q->it[i].deadline == q->it[m].deadline && q->it[i].seq < q->it[m].seq))
            m = i;
    return m;
}

static void ref_del(ref_queue *q, int i) { q->it[i] = q->it[--q->n]; }

static int ref_find(const ref_queue *q, uint64_t sid) {
    for (int i = 0; i < q->n; i++)
        if (q->it[i].sid == sid) return i;
    return -1;
}

/* The batch the contract asks for: head, then the next earliest while within
 * the window and under the cap. Removes them from q. */
static int ref_batch(ref_queue *q, int cap, double window, uint64_t *out) {
    int n = 0;
    double head = 0;
    while (n < cap && q->n > 0) {
        int m = ref_min(q);
        if (n == 0) head = q->it[m].deadline;
        else if (q->it[m].deadline - head > window) break;
        out[n++] = q->it[m].sid;
        ref_del(q, m);
    }
    return n;
}

/* ---- EDF ordering -------------------------------------------------------- */

static void test_edf(void) {
    int c0 = g_checks, f0 = g_fails;
    uint64_t got[8];

    /* hand case: ties FIFO in enqueue order */
    tc_sched *s = mk(limits(16, 16, 0, 1, 0.0, 1));
    const double dl[6] = {5.0, 3.0, 5.0, 1.0, 3.0, 5.0};
    for (int i = 0; i < 6; i++) {
        admit_at_boundary(s, 1 + i);
        CHECK_OK(tc_sched_sync_enqueue(s, 1 + i, 0.0, dl[i]));
    }
    CHECK(tc_sched_sync_queued(s, 0) == 6, "queued %d", tc_sched_sync_queued(s, 0));
    const uint64_t want[6] = {4, 2, 5, 1, 3, 6};
    for (int i = 0; i < 6; i++) {
        int n = tc_sched_sync_next(s, 0, 1.0, got, 8);
        CHECK(n == 1 && got[0] == want[i], "pop %d: n %d sid %llu, want %llu", i, n,
              (unsigned long long)got[0], (unsigned long long)want[i]);
        CHECK(tc_sched_state(s, want[i]) == TC_SS_SYNCING, "popped %llu is %s",
              (unsigned long long)want[i], tc_sess_state_name(tc_sched_state(s, want[i])));
    }
    CHECK(tc_sched_sync_next(s, 0, 1.0, got, 8) == 0, "queue should be empty");
    CHECK(tc_sched_sync_queued(s, -1) == 0, "queued %d", tc_sched_sync_queued(s, -1));
    tc_sched_free(s);

    /* randomized: interleaved enqueues, pops and closes (indexed removal from
     * the middle of the heap) against the reference queue */
    enum { N = 64 };
    s = mk(limits(N, N, 0, 1, 0.0, 1));
    ref_queue *q = calloc(1, sizeof *q);
    uint64_t sids[N];
    uint64_t next_sid = 1000;
    int pair;
    for (int i = 0; i < N; i++) {
        sids[i] = next_sid++;
        CHECK_OK(tc_sched_admit(s, sids[i], 10, &pair));
        CHECK_OK(tc_sched_transition(s, sids[i], TC_SS_GENERATING));
    }
    int pops = 0, closes_queued = 0;
    for (int op = 0; op < 12000; op++) {
        uint32_t r = rnd(100);
        int i = (int)rnd(N);
        tc_sess_state st = tc_sched_state(s, sids[i]);
        if (r < 50 && st == TC_SS_GENERATING) {
            double d = 0.5 * rnd(10); /* few distinct values: many ties */
            CHECK_OK(tc_sched_transition(s, sids[i], TC_SS_AT_BOUNDARY));
            CHECK_OK(tc_sched_sync_enqueue(s, sids[i], 0.0, d));
            ref_push(q, sids[i], d);
        } else if (r < 90) {
            uint64_t want1[1];
            int wn = ref_batch(q, 1, 0.0, want1);
            int n = tc_sched_sync_next(s, 0, 0.0, got, 8);
            CHECK(n == wn && (n == 0 || got[0] == want1[0]), "op %d: pop n %d sid %llu, want n %d sid %llu", op,
                  n, n ? (unsigned long long)got[0] : 0ULL, wn, wn ? (unsigned long long)want1[0] : 0ULL);
            if (n == 1) {
                pops++;
                CHECK(tc_sched_sync_done(s, got[0], 0.0) == 1, "sync_done %llu", (unsigned long long)got[0]);
            }
        } else if (r < 97 && st == TC_SS_AT_BOUNDARY) {
            /* close a queued session, replace it by a fresh one */
            int k = ref_find(q, sids[i]);
            CHECK(k >= 0, "queued sid %llu missing from reference", (unsigned long long)sids[i]);
            if (k >= 0) ref_del(q, k);
            tc_sched_close(s, sids[i]);
            closes_queued++;
            sids[i] = next_sid++;
            CHECK_OK(tc_sched_admit(s, sids[i], 10, &pair));
            CHECK_OK(tc_sched_transition(s, sids[i], TC_SS_GENERATING));
        }
        CHECK(tc_sched_sync_queued(s, 0) == q->n, "op %d: queued %d, reference %d", op,
              tc_sched_sync_queued(s, 0), q->n);
    }
    CHECK(pops > 2000 && closes_queued > 50, "random run too thin: %d pops, %d closes", pops, closes_queued);
    free(q);
    tc_sched_free(s);
    group_done("edf", c0, f0);
}

/* ---- batching ------------------------------------------------------------ */

static void test_batch(void) {
    int c0 = g_checks, f0 = g_fails;
    uint64_t got[16];

    /* by window (inclusive), enqueued in reverse deadline order */
    tc_sched *s = mk(limits(16, 16, 0, 8, 1.0, 1));
    const uint64_t id[5] = {1, 2, 3, 4, 5};
    const double dl[5] = {10.0, 10.5, 11.0, 11.25, 20.0};
    for (int i = 4; i >= 0; i--) {
        admit_at_boundary(s, id[i]);
        CHECK_OK(tc_sched_sync_enqueue(s, id[i], 0.0, dl[i]));
    }
    int n = tc_sched_sync_next(s, 0, 1.0, got, 16);
    CHECK(n == 3 && got[0] == 1 && got[1] == 2 && got[2] == 3, "window batch n %d [%llu %llu %llu]", n,
          (unsigned long long)got[0], (unsigned long long)got[1], (unsigned long long)got[2]);
    CHECK(tc_sched_state(s, 4) == TC_SS_AT_BOUNDARY && tc_sched_state(s, 3) == TC_SS_SYNCING,
          "states 3 %s 4 %s", tc_sess_state_name(tc_sched_state(s, 3)), tc_sess_state_name(tc_sched_state(s, 4)));
    n = tc_sched_sync_next(s, 0, 1.0, got, 16);
    CHECK(n == 1 && got[0] == 4, "second batch n %d sid %llu", n, (unsigned long long)got[0]);
    n = tc_sched_sync_next(s, 0, 1.0, got, 16);
    CHECK(n == 1 && got[0] == 5, "third batch n %d sid %llu", n, (unsigned long long)got[0]);
    tc_sched_free(s);

    /* window 0: equal deadlines batch, different ones do not */
    s = mk(limits(16, 16, 0, 8, 0.0, 1));
    const double dz[4] = {2.0, 2.0, 2.0 + 1.0 / 1024, 2.0};
    for (int i = 0; i < 4; i++) {
        admit_at_boundary(s, 10 + i);
        CHECK_OK(tc_sched_sync_enqueue(s, 10 + i, 0.0, dz[i]));
    }
    n = tc_sched_sync_next(s, 0, 0.0, got, 16);
    CHECK(n == 3 && got[0] == 10 && got[1] == 11 && got[2] == 13, "window-0 batch n %d", n);
    n = tc_sched_sync_next(s, 0, 0.0, got, 16);
    CHECK(n == 1 && got[0] == 12, "window-0 rest n %d", n);
    tc_sched_free(s);

    /* by sync_batch_max, and by the caller's max; FIFO among ties */
    s = mk(limits(16, 16, 0, 2, 100.0, 1));
    for (int i = 0; i < 5; i++) {
        admit_at_boundary(s, 20 + i);
        CHECK_OK(tc_sched_sync_enqueue(s, 20 + i, 0.0, 1.0));
    }
    n = tc_sched_sync_next(s, 0, 0.0, got, 16);
    CHECK(n == 2 && got[0] == 20 && got[1] == 21, "batch_max batch 1: n %d", n);
    n = tc_sched_sync_next(s, 0, 0.0, got, 1);
    CHECK(n == 1 && got[0] == 22, "caller max 1: n %d", n);
    n = tc_sched_sync_next(s, 0, 0.0, got, 16);
    CHECK(n == 2 && got[0] == 23 && got[1] == 24, "batch_max batch 3: n %d", n);
    CHECK(tc_sched_sync_next(s, 0, 0.0, got, 0) == 0, "max 0 must pop nothing");
    tc_sched_free(s);

    /* pair filter: pair 1's syncs are earlier, pair 0 still gets only its own */
    s = mk(limits(16, 16, 0, 8, 100.0, 2));
    for (int i = 0; i < 6; i++) {
        int p = admit_at_boundary(s, 30 + i);
        CHECK(p == i % 2, "sid %d on pair %d, want %d", 30 + i, p, i % 2);
        CHECK_OK(tc_sched_sync_enqueue(s, 30 + i, 0.0, p == 1 ? 1.0 + i : 50.0 - i));
    }
    CHECK(tc_sched_sync_queued(s, 0) == 3 && tc_sched_sync_queued(s, 1) == 3 && tc_sched_sync_queued(s, -1) == 6,
          "queued %d %d %d", tc_sched_sync_queued(s, 0), tc_sched_sync_queued(s, 1), tc_sched_sync_queued(s, -1));
    CHECK(tc_sched_sync_queued(s, 2) == -1 && tc_sched_sync_queued(s, -2) == -1, "out-of-range pair count");
    CHECK(tc_sched_sync_next(s, 2, 0.0, got, 16) == 0, "out-of-range pair pops");
    n = tc_sched_sync_next(s, 0, 0.0, got, 16);
    CHECK(n == 3 && got[0] == 34 && got[1] == 32 && got[2] == 30, "pair 0 batch n %d [%llu %llu %llu]", n,
          (unsigned long long)got[0], (unsigned long long)got[1], (unsigned long long)got[2]);
    CHECK(tc_sched_sync_queued(s, 1) == 3, "pair 1 lost syncs: %d", tc_sched_sync_queued(s, 1));
    n = tc_sched_sync_next(s, 1, 0.0, got, 16);
    CHECK(n == 3 && got[0] == 31 && got[1] == 33 && got[2] == 35, "pair 1 batch n %d", n);
    tc_sched_free(s);
    group_done("batch", c0, f0);
}

/* ---- admission ----------------------------------------------------------- */

static void test_admit(void) {
    int c0 = g_checks, f0 = g_fails;
    int pair;
    tc_sched_stats stt;

    /* invalid limits name the field */
    const struct {
        tc_sched_limits l;
        const char *field;
    } bad[] = {
        {{0, 4, 0, 1, 0, 1}, "max_sessions"},       {{4, 0, 0, 1, 0, 1}, "max_queued_syncs"},
        {{4, 4, -1, 1, 0, 1}, "max_state_bytes"},   {{4, 4, 0, 0, 0, 1}, "sync_batch_max"},
        {{4, 4, 0, 1, -1, 1}, "sync_batch_window_s"}, {{4, 4, 0, 1, NAN, 1}, "sync_batch_window_s"},
        {{4, 4, 0, 1, 0, 0}, "n_pairs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        static char dummy;
        tc_sched *x = (tc_sched *)(void *)&dummy; /* must be reset to NULL */
        CHECK_FAIL(tc_sched_new(&x, &bad[i].l), TC_ERR_INVALID, bad[i].field);
        CHECK(x == NULL, "bad limits %zu left a scheduler", i);
    }

    /* max_sessions */
    tc_sched *s = mk(limits(4, 4, 0, 1, 0, 2));
    for (int i = 0; i < 4; i++) CHECK_OK(tc_sched_admit(s, 1 + i, 10, &pair));
    pair = 7;
    CHECK_FAIL(tc_sched_admit(s, 5, 10, &pair), TC_ERR_EXHAUSTED, "max_sessions");
    CHECK(pair == -1, "refused admission set pair %d", pair);
    CHECK(tc_sched_pair_of(s, 5) == -1 && tc_sched_state(s, 5) == TC_SS_CLOSED, "refused session is known");
    CHECK_FAIL(tc_sched_admit(s, 2, 10, &pair), TC_ERR_INVALID, "already");
    tc_sched_close(s, 2);
    CHECK_OK(tc_sched_admit(s, 5, 10, &pair));
    CHECK_FAIL(tc_sched_admit(s, 2, 10, &pair), TC_ERR_EXHAUSTED, "max_sessions");
    tc_sched_get_stats(s, &stt);
    CHECK(stt.sessions == 4 && stt.state_bytes == 40 && stt.admit_refused == 2, "stats %d %lld %lld", stt.sessions,
          (long long)stt.state_bytes, (long long)stt.admit_refused);
    CHECK_FAIL(tc_sched_admit(s, 99, -1, &pair), TC_ERR_INVALID, "state_bytes");
    tc_sched_free(s);

    /* max_state_bytes: an exact fill is allowed */
    s = mk(limits(8, 4, 1000, 1, 0, 1));
    CHECK_OK(tc_sched_admit(s, 1, 400, &pair));
    CHECK_OK(tc_sched_admit(s, 2, 600, &pair));
    CHECK_FAIL(tc_sched_admit(s, 3, 1, &pair), TC_ERR_EXHAUSTED, "max_state_bytes");
    CHECK_OK(tc_sched_admit(s, 4, 0, &pair));
    tc_sched_close(s, 1);
    CHECK_FAIL(tc_sched_admit(s, 3, 401, &pair), TC_ERR_EXHAUSTED, "max_state_bytes");
    CHECK_OK(tc_sched_admit(s, 3, 400, &pair));
    tc_sched_get_stats(s, &stt);
    CHECK(stt.sessions == 3 && stt.state_bytes == 1000, "stats %d %lld", stt.sessions, (long long)stt.state_bytes);
    tc_sched_free(s);

    /* unlimited bytes still refuses an overflowing sum */
    s = mk(limits(8, 4, 0, 1, 0, 1));
    CHECK_OK(tc_sched_admit(s, 1, INT64_MAX / 2, &pair));
    CHECK_OK(tc_sched_admit(s, 2, INT64_MAX / 2, &pair));
    CHECK_FAIL(tc_sched_admit(s, 3, 2, &pair), TC_ERR_EXHAUSTED, "max_state_bytes");
    tc_sched_free(s);

    /* queue full: backpressure, then room again after a pop */
    s = mk(limits(8, 3, 0, 1, 0, 1));
    for (int i = 0; i < 4; i++) admit_at_boundary(s, 10 + i);
    for (int i = 0; i < 3; i++) CHECK_OK(tc_sched_sync_enqueue(s, 10 + i, 0.0, 1.0 + i));
    CHECK_FAIL(tc_sched_sync_enqueue(s, 13, 0.0, 0.5), TC_ERR_EXHAUSTED, "max_queued_syncs");
    tc_sched_get_stats(s, &stt);
    CHECK(stt.queued_syncs == 3 && stt.sync_refused == 1, "stats queued %d refused %lld", stt.queued_syncs,
          (long long)stt.sync_refused);
    uint64_t got[4];
    CHECK(tc_sched_sync_next(s, 0, 0.0, got, 4) == 1 && got[0] == 10, "pop after full");
    CHECK_OK(tc_sched_sync_enqueue(s, 13, 0.0, 0.5));
    /* enqueue misuse */
    CHECK_FAIL(tc_sched_sync_enqueue(s, 13, 0.0, 0.5), TC_ERR_INVALID, "already");
    CHECK_FAIL(tc_sched_sync_enqueue(s, 10, 0.0, 0.5), TC_ERR_INVALID, "at_boundary");
    CHECK_FAIL(tc_sched_sync_enqueue(s, 77, 0.0, 0.5), TC_ERR_INVALID, "unknown");
    CHECK_OK(tc_sched_admit(s, 20, 1, &pair));
    CHECK_FAIL(tc_sched_sync_enqueue(s, 20, 0.0, 0.5), TC_ERR_INVALID, "open");
    tc_sched_close(s, 13);
    admit_at_boundary(s, 21);
    CHECK_FAIL(tc_sched_sync_enqueue(s, 21, 0.0, NAN), TC_ERR_INVALID, "non-finite");
    CHECK_FAIL(tc_sched_sync_enqueue(s, 21, INFINITY, 1.0), TC_ERR_INVALID, "non-finite");
    CHECK(tc_sched_sync_queued(s, -1) == 2, "queued %d", tc_sched_sync_queued(s, -1));
    tc_sched_free(s);
    group_done("admit", c0, f0);
}

/* ---- placement ----------------------------------------------------------- */

static void test_place(void) {
    int c0 = g_checks, f0 = g_fails;
    int pair;

    /* equal sessions round-robin over 3 pairs */
    tc_sched *s = mk(limits(64, 8, 0, 1, 0, 3));
    for (int i = 0; i < 9; i++) {
        CHECK_OK(tc_sched_admit(s, 1 + i, 100, &pair));
        CHECK(pair == i % 3, "equal session %d on pair %d", i, pair);
    }
    uint64_t list[16];
    for (int p = 0; p < 3; p++) {
        int n = tc_sched_pair_sessions(s, p, list, 16);
        CHECK(n == 3 && list[0] == (uint64_t)(1 + p) && list[1] == (uint64_t)(4 + p) && list[2] == (uint64_t)(7 + p),
              "pair %d lists %d sessions", p, n);
    }
    CHECK(tc_sched_pair_sessions(s, 0, list, 1) == 3 && list[0] == 1, "truncated listing");
    CHECK(tc_sched_pair_sessions(s, 3, list, 16) == -1, "out-of-range pair listing");
    tc_sched_free(s);

    /* ties on count broken by state bytes, then lowest index */
    s = mk(limits(64, 8, 0, 1, 0, 2));
    CHECK_OK(tc_sched_admit(s, 1, 100, &pair));
    CHECK(pair == 0, "first on %d", pair);
    CHECK_OK(tc_sched_admit(s, 2, 50, &pair));
    CHECK(pair == 1, "second on %d", pair);
    CHECK_OK(tc_sched_admit(s, 3, 10, &pair));
    CHECK(pair == 1, "lighter pair 1 should win, got %d", pair);
    CHECK_OK(tc_sched_admit(s, 4, 10, &pair));
    CHECK(pair == 0, "fewer sessions on pair 0 should win, got %d", pair);
    tc_sched_free(s);

    /* random admits and closes against a reference argmin; stickiness */
    enum { P = 4, MAXS = 48 };
    s = mk(limits(MAXS, 8, 0, 1, 0, P));
    struct { uint64_t sid; int64_t bytes; int pair; int live; } ses[MAXS];
    int cnt[P] = {0};
    int64_t bytes[P] = {0};
    memset(ses, 0, sizeof ses);
    uint64_t next_sid = 100;
    int admits = 0, closes = 0;
    for (int op = 0; op < 3000; op++) {
        int i = (int)rnd(MAXS);
        if (!ses[i].live) {
            int64_t b = 1 + rnd(5) * 100;
            int want = 0;
            for (int p = 1; p < P; p++)
                if (cnt[p] < cnt[want] || (cnt[p] == cnt[want] && bytes[p] < bytes[want])) want = p;
            ses[i].sid = next_sid++;
            CHECK_OK(tc_sched_admit(s, ses[i].sid, b, &pair));
            CHECK(pair == want, "op %d: placed on %d, reference %d", op, pair, want);
            ses[i].bytes = b;
            ses[i].pair = pair;
            ses[i].live = 1;
            if (pair >= 0 && pair < P) { cnt[pair]++; bytes[pair] += b; }
            admits++;
        } else if (rnd(3) == 0) {
            tc_sched_close(s, ses[i].sid);
            ses[i].live = 0;
            cnt[ses[i].pair]--;
            bytes[ses[i].pair] -= ses[i].bytes;
            closes++;
        }
        for (int k = 0; k < MAXS; k++)
            if (ses[k].live)
                CHECK(tc_sched_pair_of(s, ses[k].sid) == ses[k].pair, "op %d: sid %llu moved %d -> %d", op,
                      (unsigned long long)ses[k].sid, ses[k].pair, tc_sched_pair_of(s, ses[k].sid));
    }
    /* the listing per pair is exactly the reference's set */
    for (int p = 0; p < P; p++) {
        uint64_t l2[MAXS];
        int n = tc_sched_pair_sessions(s, p, l2, MAXS);
        CHECK(n == cnt[p], "pair %d count %d, reference %d", p, n, cnt[p]);
        for (int j = 0; j < n && j < MAXS; j++) {
            int found = 0;
            for (int k = 0; k < MAXS; k++) found |= ses[k].live && ses[k].sid == l2[j] && ses[k].pair == p;
            CHECK(found, "pair %d lists sid %llu it should not", p, (unsigned long long)l2[j]);
        }
    }
    CHECK(admits > 200 && closes > 150, "placement run too thin: %d admits %d closes", admits, closes);
    tc_sched_free(s);
    group_done("place", c0, f0);
}

/* ---- dead pairs and fail-over --------------------------------------------- */

static void test_dead(void) {
    int c0 = g_checks, f0 = g_fails;
    int pair;
    uint64_t list[32];
    tc_sched *s = mk(limits(32, 16, 0, 4, 0.0, 3));
    for (int i = 0; i < 6; i++) CHECK_OK(tc_sched_admit(s, 1 + i, 100, &pair)); /* 2, 5 on pair 1 */
    tc_sched_pair_set_live(s, 1, 0);
    CHECK(!tc_sched_pair_live(s, 1) && tc_sched_pair_live(s, 0) && tc_sched_pair_live(s, 2), "liveness flags");
    for (int i = 0; i < 8; i++) {
        CHECK_OK(tc_sched_admit(s, 10 + i, 100, &pair));
        CHECK(pair == 0 || pair == 2, "dead pair 1 got session %d", 10 + i);
    }
    int n = tc_sched_pair_sessions(s, 1, list, 32);
    CHECK(n == 2 && list[0] == 2 && list[1] == 5, "dead pair lists %d sessions", n);
    CHECK(tc_sched_pair_sessions(s, 0, list, 32) == 6 && tc_sched_pair_sessions(s, 2, list, 32) == 6,
          "live pairs should hold 6 each");

    /* a dead pair's context worker gets no syncs */
    CHECK_OK(tc_sched_transition(s, 2, TC_SS_GENERATING));
    CHECK_OK(tc_sched_transition(s, 2, TC_SS_AT_BOUNDARY));
    CHECK_OK(tc_sched_sync_enqueue(s, 2, 0.0, 5.0));
    CHECK(tc_sched_sync_next(s, 1, 0.0, list, 32) == 0 && tc_sched_sync_queued(s, 1) == 1, "dead pair popped");
    /* a sync of pair 0 with the same deadline, enqueued later */
    CHECK_OK(tc_sched_transition(s, 1, TC_SS_GENERATING));
    CHECK_OK(tc_sched_transition(s, 1, TC_SS_AT_BOUNDARY));
    CHECK_OK(tc_sched_sync_enqueue(s, 1, 0.0, 5.0));

    /* fail-over: move pair 1's sessions to pair 0, queued sync and FIFO rank too */
    CHECK_FAIL(tc_sched_move(s, 2, 1), TC_ERR_INVALID, "not live");
    CHECK_FAIL(tc_sched_move(s, 2, 3), TC_ERR_INVALID, "out of range");
    CHECK_FAIL(tc_sched_move(s, 999, 0), TC_ERR_INVALID, "unknown");
    n = tc_sched_pair_sessions(s, 1, list, 32);
    for (int i = 0; i < n && i < 32; i++) CHECK_OK(tc_sched_move(s, list[i], 0));
    CHECK(tc_sched_pair_sessions(s, 1, list, 32) == 0 && tc_sched_pair_sessions(s, 0, list, 32) == 8,
          "after move: pair 1 %d, pair 0 %d", tc_sched_pair_sessions(s, 1, list, 32),
          tc_sched_pair_sessions(s, 0, list, 32));
    CHECK(tc_sched_pair_of(s, 2) == 0 && tc_sched_pair_of(s, 5) == 0, "moved sessions' pair");
    CHECK(tc_sched_sync_queued(s, 1) == 0 && tc_sched_sync_queued(s, 0) == 2, "queued after move %d %d",
          tc_sched_sync_queued(s, 0), tc_sched_sync_queued(s, 1));
    n = tc_sched_sync_next(s, 0, 0.0, list, 32);
    CHECK(n == 2 && list[0] == 2 && list[1] == 1, "moved sync kept its FIFO rank: n %d first %llu", n,
          (unsigned long long)list[0]);
    CHECK_OK(tc_sched_move(s, 3, tc_sched_pair_of(s, 3))); /* no-op move */

    /* all dead: refused naming the reason; revived pair is least loaded */
    tc_sched_pair_set_live(s, 0, 0);
    tc_sched_pair_set_live(s, 2, 0);
    CHECK_FAIL(tc_sched_admit(s, 50, 1, &pair), TC_ERR_EXHAUSTED, "no live worker pair");
    tc_sched_pair_set_live(s, 1, 1);
    tc_sched_pair_set_live(s, 0, 1);
    tc_sched_pair_set_live(s, 2, 1);
    tc_sched_pair_set_live(s, 9, 1); /* out of range: ignored */
    CHECK_OK(tc_sched_admit(s, 51, 1, &pair));
    CHECK(pair == 1, "revived empty pair should get the next session, got %d", pair);
    tc_sched_free(s);
    group_done("dead", c0, f0);
}

/* ---- transition matrix --------------------------------------------------- */

/* Legal per DESIGN §5, written out independently of the library. */
static const int legal[TC_SS_COUNT][TC_SS_COUNT] = {
    /* to:            OPEN PREF GEN  BOUND SYNC CLOSED */
    /* OPEN      */ {0, 1, 1, 0, 0, 1},
    /* PREFILL   */ {0, 0, 1, 0, 0, 1},
    /* GENERATE  */ {0, 1, 0, 1, 0, 1},
    /* BOUNDARY  */ {0, 0, 0, 0, 1, 1},
    /* SYNCING   */ {0, 0, 1, 0, 0, 1},
    /* CLOSED    */ {0, 0, 0, 0, 0, 0},
};

/* Brings a fresh session `sid` to `st` by the usual path. */
static void drive(tc_sched *s, uint64_t sid, tc_sess_state st) {
    int pair;
    uint64_t got[2];
    CHECK_OK(tc_sched_admit(s, sid, 1, &pair));
    switch (st) {
    case TC_SS_OPEN: break;
    case TC_SS_PREFILLING: CHECK_OK(tc_sched_transition(s, sid, TC_SS_PREFILLING)); break;
    case TC_SS_GENERATING:
        CHECK_OK(tc_sched_transition(s, sid, TC_SS_PREFILLING));
        CHECK_OK(tc_sched_transition(s, sid, TC_SS_GENERATING));
        break;
    case TC_SS_AT_BOUNDARY:
        CHECK_OK(tc_sched_transition(s, sid, TC_SS_GENERATING));
        CHECK_OK(tc_sched_transition(s, sid, TC_SS_AT_BOUNDARY));
        break;
    case TC_SS_SYNCING:
        CHECK_OK(tc_sched_transition(s, sid, TC_SS_GENERATING));
        CHECK_OK(tc_sched_transition(s, sid, TC_SS_AT_BOUNDARY));
        CHECK_OK(tc_sched_sync_enqueue(s, sid, 0.0, 1.0));
        CHECK(tc_sched_sync_next(s, pair, 0.0, got, 2) == 1 && got[0] == sid, "drive to syncing");
        break;
    case TC_SS_CLOSED: tc_sched_close(s, sid); break;
    }
    CHECK(tc_sched_state(s, sid) == st, "drive: at %s, want %s", tc_sess_state_name(tc_sched_state(s, sid)),
          tc_sess_state_name(st));
}

static void test_transitions(void) {
    int c0 = g_checks, f0 = g_fails;
    for (int a = 0; a < TC_SS_COUNT; a++)
        for (int b = a + 1; b < TC_SS_COUNT; b++)
            CHECK(strcmp(tc_sess_state_name(a), tc_sess_state_name(b)) != 0, "state names %d %d equal", a, b);
    int legal_seen = 0, illegal_seen = 0;
    for (int from = 0; from < TC_SS_COUNT; from++) {
        for (int to = 0; to < TC_SS_COUNT; to++) {
            tc_sched *s = mk(limits(4, 4, 0, 1, 0, 1));
            drive(s, 7, from);
            tc_error_clear();
            tc_status st = tc_sched_transition(s, 7, to);
            if (legal[from][to]) {
                legal_seen++;
                CHECK(st == TC_OK, "%s -> %s refused: %s", tc_sess_state_name(from), tc_sess_state_name(to),
                      tc_error_get() ? tc_error_get() : "");
                CHECK((int)tc_sched_state(s, 7) == to, "%s -> %s left it %s", tc_sess_state_name(from),
                      tc_sess_state_name(to), tc_sess_state_name(tc_sched_state(s, 7)));
                if (to == TC_SS_CLOSED) CHECK(tc_sched_pair_of(s, 7) == -1, "closed session still placed");
            } else {
                illegal_seen++;
                char want[96];
                snprintf(want, sizeof want, "%s -> %s", tc_sess_state_name(from), tc_sess_state_name(to));
                const char *msg = tc_error_get();
                CHECK(st == TC_ERR_INVALID, "%s accepted (%s)", want, tc_status_str(st));
                CHECK(msg && strstr(msg, want), "%s: message '%s'", want, msg ? msg : "(none)");
                CHECK((int)tc_sched_state(s, 7) == from, "refused %s changed the state to %s", want,
                      tc_sess_state_name(tc_sched_state(s, 7)));
            }
            tc_sched_stats stt;
            tc_sched_get_stats(s, &stt);
            int alive = !(from == TC_SS_CLOSED || (legal[from][to] && to == TC_SS_CLOSED));
            CHECK(stt.sessions == alive && stt.queued_syncs == 0, "%s -> %s: %d sessions %d queued",
                  tc_sess_state_name(from), tc_sess_state_name(to), stt.sessions, stt.queued_syncs);
            tc_sched_free(s);
        }
    }
    CHECK(legal_seen == 12 && illegal_seen == 24, "matrix %d legal %d illegal", legal_seen, illegal_seen);

    tc_sched *s = mk(limits(4, 4, 0, 1, 0, 1));
    drive(s, 1, TC_SS_OPEN);
    CHECK_FAIL(tc_sched_transition(s, 1, (tc_sess_state)17), TC_ERR_INVALID, "illegal transition");
    /* leaving AT_BOUNDARY by hand drops the queued sync; no stall recorded */
    drive(s, 2, TC_SS_AT_BOUNDARY);
    CHECK_OK(tc_sched_sync_enqueue(s, 2, 0.0, 1.0));
    CHECK_OK(tc_sched_transition(s, 2, TC_SS_SYNCING));
    CHECK(tc_sched_sync_queued(s, -1) == 0, "manual SYNCING left the sync queued");
    CHECK(tc_sched_sync_done(s, 2, 3.0) == 1 && tc_sched_state(s, 2) == TC_SS_GENERATING, "manual sync done");
    tc_sched_stats stt;
    tc_sched_get_stats(s, &stt);
    CHECK(stt.syncs_done == 0 && stt.stall_total_s == 0, "manual sync measured: %lld %g", (long long)stt.syncs_done,
          stt.stall_total_s);
    tc_sched_free(s);
    group_done("transitions", c0, f0);
}

/* ---- closing while queued / syncing -------------------------------------- */

static void test_close(void) {
    int c0 = g_checks, f0 = g_fails;
    uint64_t got[8];
    tc_sched_stats stt;
    tc_sched *s = mk(limits(8, 8, 0, 8, 100.0, 1));
    for (int i = 0; i < 4; i++) {
        admit_at_boundary(s, 1 + i);
        CHECK_OK(tc_sched_sync_enqueue(s, 1 + i, 0.0, 1.0 + i));
    }
    /* queued, not popped: B (middle) and A (the heap's head) */
    tc_sched_close(s, 2);
    tc_sched_close(s, 1);
    CHECK(tc_sched_state(s, 2) == TC_SS_CLOSED && tc_sched_pair_of(s, 2) == -1, "closed session still known");
    tc_sched_get_stats(s, &stt);
    CHECK(stt.sessions == 2 && stt.state_bytes == 200 && stt.queued_syncs == 2, "stats %d %lld %d", stt.sessions,
          (long long)stt.state_bytes, stt.queued_syncs);
    int n = tc_sched_sync_next(s, 0, 2.0, got, 8);
    CHECK(n == 2 && got[0] == 3 && got[1] == 4, "popped closed syncs: n %d", n);
    CHECK(tc_sched_sync_done(s, 2, 3.0) == 0 && tc_sched_sync_done(s, 1, 3.0) == 0, "stale done accepted");
    /* while SYNCING */
    tc_sched_close(s, 4);
    CHECK(tc_sched_sync_done(s, 4, 3.0) == 0, "done for a session closed while syncing returned 1");
    CHECK(tc_sched_sync_done(s, 3, 3.0) == 1, "done for live session returned 0");
    CHECK(tc_sched_sync_done(s, 3, 3.5) == 0, "second done for the same sync returned 1");
    tc_sched_get_stats(s, &stt);
    CHECK(stt.syncs_done == 1 && stt.stall_total_s == 3.0 && stt.queue_wait_total_s == 2.0,
          "stats done %lld stall %g wait %g", (long long)stt.syncs_done, stt.stall_total_s, stt.queue_wait_total_s);
    tc_sched_sess_stats ss;
    CHECK_OK(tc_sched_get_sess_stats(s, 3, &ss));
    CHECK(ss.syncs_done == 1 && ss.stall_last_s == 3.0 && ss.queue_wait_total_s == 2.0, "session stats");
    CHECK_FAIL(tc_sched_get_sess_stats(s, 4, &ss), TC_ERR_INVALID, "unknown");
    /* done on a session that is not syncing, or unknown */
    CHECK(tc_sched_sync_done(s, 3, 4.0) == 0 && tc_sched_state(s, 3) == TC_SS_GENERATING, "done on generating");
    CHECK(tc_sched_sync_done(s, 12345, 4.0) == 0, "done on unknown");
    /* idempotent close; pool slots come back */
    tc_sched_close(s, 4);
    tc_sched_close(s, 999);
    tc_sched_close(s, 3);
    tc_sched_get_stats(s, &stt);
    CHECK(stt.sessions == 0 && stt.state_bytes == 0 && stt.queued_syncs == 0, "not empty after closes");
    int pair;
    for (int i = 0; i < 8; i++) CHECK_OK(tc_sched_admit(s, 100 + i, 1, &pair));
    tc_sched_free(s);
    group_done("close", c0, f0);
}

/* ---- simulation with fake workers ----------------------------------------- */

typedef struct {
    const char *name;
    int n_pairs, W, batch_max, ticks;
    int dur_base, dur_per; /* sync of a batch of n takes dur_base + dur_per*n ticks */
    int window_ticks;
    int churn; /* close one session mid-run and admit another */
} sim_cfg;

typedef struct {
    uint64_t sid;
    int live;
    int pair;
    long tokens;
    int where;      /* 0 generating, 1 queued, 2 syncing */
    long enq_tick, pop_tick;
    int dur;        /* of the batch it rides in */
    /* computed by the test, independently of the scheduler */
    double exp_stall, exp_wait;
    long exp_syncs;
} sim_sess;

typedef struct {
    int busy;
    long finish;
    uint64_t batch[16];
    int n;
} fake_ctx;

static void sim_run(const sim_cfg *c) {
    int c0 = g_checks, f0 = g_fails;
    enum { NS = 16 };
    const double dt = 1.0 / 1024; /* exact: times compare exactly */
    tc_sched *s = mk(limits(NS + 4, NS, 0, c->batch_max, c->window_ticks * dt, c->n_pairs));
    sim_sess ses[NS];
    fake_ctx ctx[4];
    ref_queue *ref = calloc((size_t)c->n_pairs, sizeof *ref);
    memset(ses, 0, sizeof ses);
    memset(ctx, 0, sizeof ctx);
    for (int i = 0; i < NS; i++) {
        ses[i].sid = 500 + i;
        ses[i].live = 1;
        ses[i].tokens = (long)i * c->W / NS; /* staggered boundaries */
        CHECK_OK(tc_sched_admit(s, ses[i].sid, 1000, &ses[i].pair));
        CHECK_OK(tc_sched_transition(s, ses[i].sid, TC_SS_PREFILLING));
        CHECK_OK(tc_sched_transition(s, ses[i].sid, TC_SS_GENERATING));
    }
    long tokens_total = 0, batches = 0, multi_batches = 0, stale = 0;
    double max_stall = 0;
    for (long t = 0; t < c->ticks; t++) {
        double now = t * dt;
        /* context workers: finish, then pick the next batch */
        for (int p = 0; p < c->n_pairs; p++) {
            fake_ctx *w = &ctx[p];
            if (w->busy && w->finish == t) {
                for (int j = 0; j < w->n; j++) {
                    sim_sess *e = NULL;
                    for (int k = 0; k < NS; k++)
                        if (ses[k].live && ses[k].sid == w->batch[j]) e = &ses[k];
                    int r = tc_sched_sync_done(s, w->batch[j], now);
                    CHECK(r == (e != NULL), "t %ld: sync_done(%llu) = %d", t, (unsigned long long)w->batch[j], r);
                    if (!e) { stale++; continue; }
                    double wait = (e->pop_tick - e->enq_tick) * dt, stall = wait + e->dur * dt;
                    e->exp_wait += wait;
                    e->exp_stall += stall;
                    e->exp_syncs++;
                    if (stall > max_stall) max_stall = stall;
                    e->where = 0;
                }
                w->busy = 0;
            }
            if (!w->busy) {
                uint64_t want[16];
                int wn = ref_batch(&ref[p], c->batch_max, c->window_ticks * dt, want);
                w->n = tc_sched_sync_next(s, p, now, w->batch, 16);
                int same = w->n == wn;
                for (int j = 0; same && j < wn; j++) same = w->batch[j] == want[j];
                CHECK(same, "t %ld pair %d: batch of %d differs from the reference's %d", t, p, w->n, wn);
                if (w->n > 0) {
                    w->busy = 1;
                    int dur = c->dur_base + c->dur_per * w->n;
                    w->finish = t + dur;
                    batches++;
                    multi_batches += w->n > 1;
                    for (int j = 0; j < w->n; j++)
                        for (int k = 0; k < NS; k++)
                            if (ses[k].live && ses[k].sid == w->batch[j]) {
                                ses[k].where = 2;
                                ses[k].pop_tick = t;
                                ses[k].dur = dur;
                            }
                }
            }
        }
        /* churn: a session closed whatever it is doing, a new one admitted */
        if (c->churn && t == c->ticks / 2) {
            sim_sess *e = &ses[3];
            int k = ref_find(&ref[e->pair], e->sid);
            if (k >= 0) ref_del(&ref[e->pair], k);
            tc_sched_close(s, e->sid);
            memset(e, 0, sizeof *e);
            e->sid = 900;
            e->live = 1;
            CHECK_OK(tc_sched_admit(s, e->sid, 1000, &e->pair));
            CHECK_OK(tc_sched_transition(s, e->sid, TC_SS_GENERATING));
        }
        /* generation worker(s): one hit step for every GENERATING session */
        for (int i = 0; i < NS; i++) {
            sim_sess *e = &ses[i];
            tc_sess_state st = tc_sched_state(s, e->sid);
            tc_sess_state want = e->where == 0 ? TC_SS_GENERATING : e->where == 1 ? TC_SS_AT_BOUNDARY : TC_SS_SYNCING;
            CHECK(st == want, "t %ld sid %llu: scheduler says %s, workers %s", t, (unsigned long long)e->sid,
                  tc_sess_state_name(st), tc_sess_state_name(want));
            if (st != TC_SS_GENERATING) continue;
            e->tokens++;
            tokens_total++;
            if (e->tokens % c->W == 0) {
                /* the next token needs the sync; sessions pace differently */
                double deadline = now + dt * (1 + (int)(e->sid % 3));
                CHECK_OK(tc_sched_transition(s, e->sid, TC_SS_AT_BOUNDARY));
                CHECK_OK(tc_sched_sync_enqueue(s, e->sid, now, deadline));
                ref_push(&ref[e->pair], e->sid, deadline);
                e->where = 1;
                e->enq_tick = t;
            }
        }
        int qn = 0;
        for (int p = 0; p < c->n_pairs; p++) qn += ref[p].n;
        CHECK(tc_sched_sync_queued(s, -1) == qn, "t %ld: queued %d, reference %d", t, tc_sched_sync_queued(s, -1), qn);
    }

    /* every session's stall = queue wait + sync duration, as computed here */
    tc_sched_stats stt;
    tc_sched_get_stats(s, &stt);
    double sum_stall = 0, sum_wait = 0;
    long sum_syncs = 0, min_syncs = -1;
    for (int i = 0; i < NS; i++) {
        tc_sched_sess_stats ss;
        CHECK_OK(tc_sched_get_sess_stats(s, ses[i].sid, &ss));
        CHECK(ss.syncs_done == ses[i].exp_syncs, "sid %llu: %lld syncs, expected %ld", (unsigned long long)ses[i].sid,
              (long long)ss.syncs_done, ses[i].exp_syncs);
        CHECK(fabs(ss.stall_total_s - ses[i].exp_stall) < 1e-9, "sid %llu: stall %.9f, expected %.9f",
              (unsigned long long)ses[i].sid, ss.stall_total_s, ses[i].exp_stall);
        CHECK(fabs(ss.queue_wait_total_s - ses[i].exp_wait) < 1e-9, "sid %llu: wait %.9f, expected %.9f",
              (unsigned long long)ses[i].sid, ss.queue_wait_total_s, ses[i].exp_wait);
        sum_stall += ses[i].exp_stall;
        sum_wait += ses[i].exp_wait;
        sum_syncs += ses[i].exp_syncs;
        if (min_syncs < 0 || ses[i].exp_syncs < min_syncs) min_syncs = ses[i].exp_syncs;
    }
    /* the churned-out session's syncs are in the totals but not in ses[] */
    if (!c->churn) {
        CHECK(stt.syncs_done == sum_syncs, "total syncs %lld, expected %ld", (long long)stt.syncs_done, sum_syncs);
        CHECK(fabs(stt.stall_total_s - sum_stall) < 1e-6, "total stall %.9f, expected %.9f", stt.stall_total_s,
              sum_stall);
        CHECK(fabs(stt.queue_wait_total_s - sum_wait) < 1e-6, "total wait %.9f, expected %.9f",
              stt.queue_wait_total_s, sum_wait);
        CHECK(stt.stall_max_s == max_stall, "max stall %.9f, expected %.9f", stt.stall_max_s, max_stall);
    } else {
        CHECK(stt.syncs_done >= sum_syncs, "total syncs %lld < live sessions' %ld", (long long)stt.syncs_done, sum_syncs);
    }
    /* the run exercised what it claims to */
    CHECK(min_syncs >= 3, "a session synced only %ld times", min_syncs);
    CHECK(sum_wait > 0, "no sync ever waited in the queue");
    if (c->batch_max > 1) CHECK(multi_batches > 0, "no batch of more than one sync");
    CHECK(stt.sessions == NS && stt.state_bytes == (int64_t)NS * 1000, "sessions %d bytes %lld", stt.sessions,
          (long long)stt.state_bytes);

    /* shut down mid-flight: everything closes, in-flight results are stale */
    for (int i = 0; i < NS; i++) tc_sched_close(s, ses[i].sid);
    for (int p = 0; p < c->n_pairs; p++)
        for (int j = 0; ctx[p].busy && j < ctx[p].n; j++)
            CHECK(tc_sched_sync_done(s, ctx[p].batch[j], c->ticks * dt) == 0, "in-flight sync after close");
    tc_sched_get_stats(s, &stt);
    CHECK(stt.sessions == 0 && stt.queued_syncs == 0 && stt.state_bytes == 0, "not empty after shutdown");
    char name[32];
    snprintf(name, sizeof name, "sim.%s", c->name);
    printf("  %s: %ld tokens, %lld syncs in %ld batches (%ld multi), %ld stale, mean stall %.2f ticks\n", c->name,
           tokens_total, (long long)stt.syncs_done, batches, multi_batches, stale,
           stt.syncs_done ? stt.stall_total_s / (double)stt.syncs_done / dt : 0.0);
    free(ref);
    tc_sched_free(s);
    group_done(name, c0, f0);
}

int main(void) {
    test_edf();
    test_batch();
    test_admit();
    test_place();
    test_dead();
    test_transitions();
    test_close();
    /* contended single pair, one sync at a time */
    sim_cfg a = {"edf1", 1, 8, 1, 4000, 1, 0, 0, 0};
    /* two pairs, batches of up to 4 within a 2-tick window, churn */
    sim_cfg b = {"batch2", 2, 16, 4, 4000, 2, 1, 2, 1};
    /* one pair, large batches, light load */
    sim_cfg c = {"batch16", 1, 64, 16, 6000, 8, 1, 64, 0};
    sim_run(&a);
    sim_run(&b);
    sim_run(&c);
    printf("sched: %d checks, %d failed\n", g_checks, g_fails);
    return g_fails ? 1 : 0;
}
