/* sched.c — session state machine, EDF sync queue, admission and placement
 * (sched.h says what and why).
 *
 * Layout: a fixed pool of max_sessions session records; an open-addressing
 * hash map (linear probing, backward-shift deletion, no tombstones) from sid
 * to pool slot; per pair an intrusive list of its sessions (admission order,
 * O(1) unlink) and an indexed binary min-heap of its queued syncs keyed by
 * (deadline, enqueue sequence) — the sequence makes equal deadlines FIFO,
 * the index (heap_pos in the record) makes removal on close O(log n).
 * Everything is allocated in tc_sched_new. */
#include "scheduler/sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t sid;
    int64_t state_bytes;
    int in_use;
    int pair;
    tc_sess_state state;
    int prev, next;   /* pair list; free list uses next */
    int heap_pos;     /* index in its pair's heap; -1 when not queued */
    double deadline;  /* queued sync's key ...      */
    uint64_t seq;     /* ... and FIFO rank          */
    int has_enq;      /* an enqueue awaits sync_done: stall is measured */
    double enq_time;
    double pop_time;
    tc_sched_sess_stats st;
} sched_sess;

typedef struct {
    int live;
    int n_sessions;
    int64_t state_bytes;
    int head, tail; /* session list, -1 when empty */
    int *heap;      /* [heap_cap] pool slots */
    int heap_n;
} sched_pair;

struct tc_sched {
    tc_sched_limits lim;
    sched_sess *pool; /* [max_sessions] */
    int free_head;
    int32_t *map;     /* [map_cap] pool slot or -1 */
    uint32_t map_mask;
    sched_pair *pairs; /* [n_pairs] */
    int heap_cap;
    uint64_t next_seq;
    /* totals */
    int sessions;
    int64_t state_bytes;
    int queued;
    double stall_total_s, stall_max_s, wait_total_s;
    int64_t syncs_done, admit_refused, sync_refused;
};

static const char *const state_names[TC_SS_COUNT] = {
    "open", "prefilling", "generating", "at_boundary", "syncing", "closed",
};

const char *tc_sess_state_name(tc_sess_state st) {
    if ((unsigned)st >= TC_SS_COUNT) return "invalid";
    return state_names[st];
}

/* ---- hash map ------------------------------------------------------------ */

static uint32_t sid_hash(uint64_t x) { /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (uint32_t)x;
}

static int map_find(const tc_sched *s, uint64_t sid) {
    uint32_t i = sid_hash(sid) & s->map_mask;
    for (;;) {
        int32_t slot = s->map[i];
        if (slot < 0) return -1;
        if (s->pool[slot].sid == sid) return slot;
        i = (i + 1) & s->map_mask;
    }
}

static void map_insert(tc_sched *s, uint64_t sid, int slot) {
    uint32_t i = sid_hash(sid) & s->map_mask;
    while (s->map[i] >= 0) i = (i + 1) & s->map_mask;
    s->map[i] = slot;
}

static void map_erase(tc_sched *s, uint64_t sid) {
    uint32_t i = sid_hash(sid) & s->map_mask;
    while (s->map[i] >= 0 && s->pool[s->map[i]].sid != sid) i = (i + 1) & s->map_mask;
    TC_ASSERT(s->map[i] >= 0, "sid %llu not in map", (unsigned long long)sid);
    /* Backward shift: pull later entries of the probe run into the hole
     * unless their home lies cyclically in (hole, j]. */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & s->map_mask;
        if (s->map[j] < 0) break;
        uint32_t k = sid_hash(s->pool[s->map[j]].sid) & s->map_mask;
        int stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (stays) continue;
        s->map[i] = s->map[j];
        i = j;
    }
    s->map[i] = -1;
}

/* ---- per-pair EDF heap -------------------------------------------------- */

static int heap_less(const tc_sched *s, int a, int b) {
    const sched_sess *x = &s->pool[a], *y = &s->pool[b];
    if (x->deadline != y->deadline) return x->deadline < y->deadline;
    return x->seq < y->seq;
}

static void heap_set(tc_sched *s, sched_pair *p, int pos, int slot) {
    p->heap[pos] = slot;
    s->pool[slot].heap_pos = pos;
}

static void heap_sift_up(tc_sched *s, sched_pair *p, int pos) {
    int slot = p->heap[pos];
    while (pos > 0) {
        int parent = (pos - 1) / 2;
        if (!heap_less(s, slot, p->heap[parent])) break;
        heap_set(s, p, pos, p->heap[parent]);
        pos = parent;
    }
    heap_set(s, p, pos, slot);
}

static void heap_sift_down(tc_sched *s, sched_pair *p, int pos) {
    int slot = p->heap[pos];
    for (;;) {
        int c = 2 * pos + 1;
        if (c >= p->heap_n) break;
        if (c + 1 < p->heap_n && heap_less(s, p->heap[c + 1], p->heap[c])) c++;
        if (!heap_less(s, p->heap[c], slot)) break;
        heap_set(s, p, pos, p->heap[c]);
        pos = c;
    }
    heap_set(s, p, pos, slot);
}

static void heap_push(tc_sched *s, sched_pair *p, int slot) {
    TC_ASSERT(p->heap_n < s->heap_cap, "sync heap overflow (%d)", s->heap_cap);
    p->heap[p->heap_n++] = slot;
    heap_sift_up(s, p, p->heap_n - 1);
}

static void heap_remove(tc_sched *s, sched_pair *p, int pos) {
    int slot = p->heap[pos];
    s->pool[slot].heap_pos = -1;
    p->heap_n--;
    if (pos == p->heap_n) return;
    heap_set(s, p, pos, p->heap[p->heap_n]);
    if (pos > 0 && heap_less(s, p->heap[pos], p->heap[(pos - 1) / 2]))
        heap_sift_up(s, p, pos);
    else
        heap_sift_down(s, p, pos);
}

/* Drops a session's queued sync, if any. */
static void unqueue(tc_sched *s, int slot) {
    sched_sess *e = &s->pool[slot];
    if (e->heap_pos < 0) return;
    heap_remove(s, &s->pairs[e->pair], e->heap_pos);
    s->queued--;
}

/* ---- pair lists ---------------------------------------------------------- */

static void pair_link(tc_sched *s, int pair, int slot) {
    sched_pair *p = &s->pairs[pair];
    sched_sess *e = &s->pool[slot];
    e->pair = pair;
    e->prev = p->tail;
    e->next = -1;
    if (p->tail >= 0) s->pool[p->tail].next = slot;
    else p->head = slot;
    p->tail = slot;
    p->n_sessions++;
    p->state_bytes += e->state_bytes;
}

static void pair_unlink(tc_sched *s, int slot) {
    sched_sess *e = &s->pool[slot];
    sched_pair *p = &s->pairs[e->pair];
    if (e->prev >= 0) s->pool[e->prev].next = e->next;
    else p->head = e->next;
    if (e->next >= 0) s->pool[e->next].prev = e->prev;
    else p->tail = e->prev;
    p->n_sessions--;
    p->state_bytes -= e->state_bytes;
    e->prev = e->next = -1;
}

/* ---- life cycle ---------------------------------------------------------- */

tc_status tc_sched_new(tc_sched **out, const tc_sched_limits *lim) {
    *out = NULL;
    if (lim->max_sessions < 1 || lim->max_sessions > (1 << 24))
        return TC_FAIL(TC_ERR_INVALID, "scheduler: max_sessions %d out of range [1, %d]",
                       lim->max_sessions, 1 << 24);
    if (lim->max_queued_syncs < 1 || lim->max_queued_syncs > (1 << 24))
        return TC_FAIL(TC_ERR_INVALID, "scheduler: max_queued_syncs %d out of range [1, %d]",
                       lim->max_queued_syncs, 1 << 24);
    if (lim->max_state_bytes < 0)
        return TC_FAIL(TC_ERR_INVALID, "scheduler: max_state_bytes %lld is negative (0: unlimited)",
                       (long long)lim->max_state_bytes);
    if (lim->sync_batch_max < 1)
        return TC_FAIL(TC_ERR_INVALID, "scheduler: sync_batch_max %d must be >= 1", lim->sync_batch_max);
    if (!isfinite(lim->sync_batch_window_s) || lim->sync_batch_window_s < 0)
        return TC_FAIL(TC_ERR_INVALID, "scheduler: sync_batch_window_s %g must be finite and >= 0",
                       lim->sync_batch_window_s);
    if (lim->n_pairs < 1 || lim->n_pairs > 4096)
        return TC_FAIL(TC_ERR_INVALID, "scheduler: n_pairs %d out of range [1, 4096]", lim->n_pairs);

    tc_sched *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "scheduler: out of memory");
    s->lim = *lim;
    s->heap_cap = lim->max_sessions < lim->max_queued_syncs ? lim->max_sessions : lim->max_queued_syncs;
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)lim->max_sessions) cap <<= 1; /* load <= 1/2 */
    s->map_mask = cap - 1;
    s->pool = calloc((size_t)lim->max_sessions, sizeof *s->pool);
    s->map = malloc((size_t)cap * sizeof *s->map);
    s->pairs = calloc((size_t)lim->n_pairs, sizeof *s->pairs);
    if (!s->pool || !s->map || !s->pairs) goto nomem;
    for (int p = 0; p < lim->n_pairs; p++) {
        s->pairs[p].live = 1;
        s->pairs[p].head = s->pairs[p].tail = -1;
        s->pairs[p].heap = malloc((size_t)s->heap_cap * sizeof *s->pairs[p].heap);
        if (!s->pairs[p].heap) goto nomem;
    }
    memset(s->map, 0xff, (size_t)cap * sizeof *s->map); /* all -1 */
    for (int i = 0; i < lim->max_sessions; i++) {
        s->pool[i].next = i + 1 < lim->max_sessions ? i + 1 : -1;
        s->pool[i].heap_pos = -1;
    }
    s->free_head = 0;
    *out = s;
    return TC_OK;
nomem:
    tc_sched_free(s);
    return TC_FAIL(TC_ERR_NOMEM, "scheduler: out of memory for %d sessions, %d pairs",
                   lim->max_sessions, lim->n_pairs);
}

void tc_sched_free(tc_sched *s) {
    if (!s) return;
    if (s->pairs)
        for (int p = 0; p < s->lim.n_pairs; p++) free(s->pairs[p].heap);
    free(s->pairs);
    free(s->map);
    free(s->pool);
    free(s);
}

/* ---- admission and placement -------------------------------------------- */

tc_status tc_sched_admit(tc_sched *s, uint64_t sid, int64_t state_bytes, int *pair_out) {
    *pair_out = -1;
    if (map_find(s, sid) >= 0)
        return TC_FAIL(TC_ERR_INVALID, "session %llu already admitted", (unsigned long long)sid);
    if (state_bytes < 0)
        return TC_FAIL(TC_ERR_INVALID, "session %llu: state_bytes %lld is negative",
                       (unsigned long long)sid, (long long)state_bytes);
    if (s->sessions >= s->lim.max_sessions) {
        s->admit_refused++;
        return TC_FAIL(TC_ERR_EXHAUSTED, "admission refused: max_sessions (%d) reached",
                       s->lim.max_sessions);
    }
    int64_t room = (s->lim.max_state_bytes > 0 ? s->lim.max_state_bytes : INT64_MAX) - s->state_bytes;
    if (state_bytes > room) {
        s->admit_refused++;
        return TC_FAIL(TC_ERR_EXHAUSTED,
                       "admission refused: max_state_bytes (%lld) exceeded: %lld in use + %lld requested",
                       (long long)s->lim.max_state_bytes, (long long)s->state_bytes, (long long)state_bytes);
    }
    int best = -1;
    for (int p = 0; p < s->lim.n_pairs; p++) {
        const sched_pair *c = &s->pairs[p];
        if (!c->live) continue;
        if (best < 0 || c->n_sessions < s->pairs[best].n_sessions ||
            (c->n_sessions == s->pairs[best].n_sessions && c->state_bytes < s->pairs[best].state_bytes))
            best = p;
    }
    if (best < 0) {
        s->admit_refused++;
        return TC_FAIL(TC_ERR_EXHAUSTED, "admission refused: no live worker pair (of %d)", s->lim.n_pairs);
    }
    int slot = s->free_head;
    TC_ASSERT(slot >= 0, "session pool empty with %d/%d sessions", s->sessions, s->lim.max_sessions);
    sched_sess *e = &s->pool[slot];
    s->free_head = e->next;
    memset(e, 0, sizeof *e);
    e->sid = sid;
    e->state_bytes = state_bytes;
    e->in_use = 1;
    e->state = TC_SS_OPEN;
    e->heap_pos = -1;
    map_insert(s, sid, slot);
    pair_link(s, best, slot);
    s->sessions++;
    s->state_bytes += state_bytes;
    *pair_out = best;
    return TC_OK;
}

int tc_sched_pair_of(const tc_sched *s, uint64_t sid) {
    int slot = map_find(s, sid);
    return slot < 0 ? -1 : s->pool[slot].pair;
}

tc_sess_state tc_sched_state(const tc_sched *s, uint64_t sid) {
    int slot = map_find(s, sid);
    return slot < 0 ? TC_SS_CLOSED : s->pool[slot].state;
}

void tc_sched_close(tc_sched *s, uint64_t sid) {
    int slot = map_find(s, sid);
    if (slot < 0) return;
    sched_sess *e = &s->pool[slot];
    unqueue(s, slot);
    pair_unlink(s, slot);
    map_erase(s, sid);
    s->sessions--;
    s->state_bytes -= e->state_bytes;
    e->in_use = 0;
    e->state = TC_SS_CLOSED;
    e->next = s->free_head;
    s->free_head = slot;
}

/* ---- state machine ------------------------------------------------------- */

static int transition_legal(tc_sess_state from, tc_sess_state to) {
    if (from == TC_SS_CLOSED) return 0;
    if (to == TC_SS_CLOSED) return 1;
    switch (from) {
    case TC_SS_OPEN: return to == TC_SS_PREFILLING || to == TC_SS_GENERATING;
    case TC_SS_PREFILLING: return to == TC_SS_GENERATING;
    case TC_SS_GENERATING: return to == TC_SS_AT_BOUNDARY || to == TC_SS_PREFILLING;
    case TC_SS_AT_BOUNDARY: return to == TC_SS_SYNCING;
    case TC_SS_SYNCING: return to == TC_SS_GENERATING;
    default: return 0;
    }
}

tc_status tc_sched_transition(tc_sched *s, uint64_t sid, tc_sess_state to) {
    int slot = map_find(s, sid);
    if ((unsigned)to >= TC_SS_COUNT)
        return TC_FAIL(TC_ERR_INVALID, "session %llu: illegal transition to state %d",
                       (unsigned long long)sid, (int)to);
    if (slot < 0)
        return TC_FAIL(TC_ERR_INVALID, "session %llu: illegal transition %s -> %s (unknown or closed session)",
                       (unsigned long long)sid, tc_sess_state_name(TC_SS_CLOSED), tc_sess_state_name(to));
    sched_sess *e = &s->pool[slot];
    if (!transition_legal(e->state, to))
        return TC_FAIL(TC_ERR_INVALID, "session %llu: illegal transition %s -> %s",
                       (unsigned long long)sid, tc_sess_state_name(e->state), tc_sess_state_name(to));
    if (to == TC_SS_CLOSED) {
        tc_sched_close(s, sid);
        return TC_OK;
    }
    if (to == TC_SS_AT_BOUNDARY || to == TC_SS_SYNCING) {
        /* a new boundary starts unmeasured; a sync started by hand was
         * never popped, so its stall is not measured either */
        unqueue(s, slot);
        e->has_enq = 0;
    }
    e->state = to;
    return TC_OK;
}

/* ---- sync queue ---------------------------------------------------------- */

tc_status tc_sched_sync_enqueue(tc_sched *s, uint64_t sid, double now, double deadline) {
    int slot = map_find(s, sid);
    if (slot < 0)
        return TC_FAIL(TC_ERR_INVALID, "sync enqueue: unknown session %llu", (unsigned long long)sid);
    sched_sess *e = &s->pool[slot];
    if (e->state != TC_SS_AT_BOUNDARY)
        return TC_FAIL(TC_ERR_INVALID, "sync enqueue: session %llu is %s, not %s",
                       (unsigned long long)sid, tc_sess_state_name(e->state),
                       tc_sess_state_name(TC_SS_AT_BOUNDARY));
    if (e->heap_pos >= 0)
        return TC_FAIL(TC_ERR_INVALID, "sync enqueue: session %llu already has a queued sync",
                       (unsigned long long)sid);
    if (!isfinite(now) || !isfinite(deadline))
        return TC_FAIL(TC_ERR_INVALID, "sync enqueue: session %llu: non-finite time (now %g, deadline %g)",
                       (unsigned long long)sid, now, deadline);
    if (s->queued >= s->lim.max_queued_syncs) {
        s->sync_refused++;
        return TC_FAIL(TC_ERR_EXHAUSTED, "sync enqueue refused: max_queued_syncs (%d) reached",
                       s->lim.max_queued_syncs);
    }
    e->deadline = deadline;
    e->seq = s->next_seq++;
    e->enq_time = now;
    e->has_enq = 1;
    heap_push(s, &s->pairs[e->pair], slot);
    s->queued++;
    return TC_OK;
}

int tc_sched_sync_next(tc_sched *s, int pair, double now, uint64_t *sids, int max) {
    TC_ASSERT(isfinite(now), "sync_next: non-finite now %g", now);
    if (pair < 0 || pair >= s->lim.n_pairs || max <= 0) return 0;
    sched_pair *p = &s->pairs[pair];
    if (!p->live || p->heap_n == 0) return 0;
    int limit = max < s->lim.sync_batch_max ? max : s->lim.sync_batch_max;
    double head_deadline = s->pool[p->heap[0]].deadline;
    int n = 0;
    /* The heap yields deadlines in order, so the first one outside the
     * window ends the batch: nothing behind it can be inside. */
    while (n < limit && p->heap_n > 0) {
        int slot = p->heap[0];
        sched_sess *e = &s->pool[slot];
        if (n > 0 && e->deadline - head_deadline > s->lim.sync_batch_window_s) break;
        heap_remove(s, p, 0);
        s->queued--;
        e->state = TC_SS_SYNCING;
        e->pop_time = now;
        sids[n++] = e->sid;
    }
    return n;
}

int tc_sched_sync_queued(const tc_sched *s, int pair) {
    if (pair == -1) return s->queued;
    if (pair < 0 || pair >= s->lim.n_pairs) return -1;
    return s->pairs[pair].heap_n;
}

int tc_sched_sync_done(tc_sched *s, uint64_t sid, double now) {
    TC_ASSERT(isfinite(now), "sync_done: non-finite now %g", now);
    int slot = map_find(s, sid);
    if (slot < 0) return 0;
    sched_sess *e = &s->pool[slot];
    if (e->state != TC_SS_SYNCING) return 0;
    e->state = TC_SS_GENERATING;
    if (e->has_enq) {
        double stall = now - e->enq_time, wait = e->pop_time - e->enq_time;
        e->has_enq = 0;
        e->st.syncs_done++;
        e->st.stall_total_s += stall;
        e->st.stall_last_s = stall;
        if (stall > e->st.stall_max_s) e->st.stall_max_s = stall;
        e->st.queue_wait_total_s += wait;
        s->syncs_done++;
        s->stall_total_s += stall;
        if (stall > s->stall_max_s) s->stall_max_s = stall;
        s->wait_total_s += wait;
    }
    return 1;
}

/* ---- worker pairs -------------------------------------------------------- */

void tc_sched_pair_set_live(tc_sched *s, int pair, int live) {
    if (pair < 0 || pair >= s->lim.n_pairs) return;
    s->pairs[pair].live = live != 0;
}

int tc_sched_pair_live(const tc_sched *s, int pair) {
    if (pair < 0 || pair >= s->lim.n_pairs) return 0;
    return s->pairs[pair].live;
}

int tc_sched_pair_sessions(const tc_sched *s, int pair, uint64_t *sids, int max) {
    if (pair < 0 || pair >= s->lim.n_pairs) return -1;
    const sched_pair *p = &s->pairs[pair];
    int n = 0;
    for (int slot = p->head; slot >= 0 && n < max; slot = s->pool[slot].next) sids[n++] = s->pool[slot].sid;
    return p->n_sessions;
}

tc_status tc_sched_move(tc_sched *s, uint64_t sid, int pair) {
    int slot = map_find(s, sid);
    if (slot < 0) return TC_FAIL(TC_ERR_INVALID, "move: unknown session %llu", (unsigned long long)sid);
    if (pair < 0 || pair >= s->lim.n_pairs)
        return TC_FAIL(TC_ERR_INVALID, "move: session %llu: pair %d out of range [0, %d)",
                       (unsigned long long)sid, pair, s->lim.n_pairs);
    if (!s->pairs[pair].live)
        return TC_FAIL(TC_ERR_INVALID, "move: session %llu: pair %d is not live", (unsigned long long)sid, pair);
    sched_sess *e = &s->pool[slot];
    if (e->pair == pair) return TC_OK;
    int queued = e->heap_pos >= 0;
    if (queued) heap_remove(s, &s->pairs[e->pair], e->heap_pos); /* keeps deadline and seq */
    pair_unlink(s, slot);
    pair_link(s, pair, slot);
    if (queued) heap_push(s, &s->pairs[pair], slot);
    return TC_OK;
}

/* ---- stats --------------------------------------------------------------- */

void tc_sched_get_stats(const tc_sched *s, tc_sched_stats *out) {
    memset(out, 0, sizeof *out);
    out->sessions = s->sessions;
    out->state_bytes = s->state_bytes;
    out->queued_syncs = s->queued;
    out->stall_total_s = s->stall_total_s;
    out->syncs_done = s->syncs_done;
    out->stall_max_s = s->stall_max_s;
    out->queue_wait_total_s = s->wait_total_s;
    out->admit_refused = s->admit_refused;
    out->sync_refused = s->sync_refused;
}

tc_status tc_sched_get_sess_stats(const tc_sched *s, uint64_t sid, tc_sched_sess_stats *out) {
    int slot = map_find(s, sid);
    if (slot < 0) {
        memset(out, 0, sizeof *out);
        return TC_FAIL(TC_ERR_INVALID, "stats: unknown session %llu", (unsigned long long)sid);
    }
    *out = s->pool[slot].st;
    return TC_OK;
}
