/* sched.h — the coordinator's scheduler (DESIGN.md §5): the per-session
 * state machine, the earliest-deadline-first sync queue with batching,
 * admission limits and placement of sessions on worker pairs.
 *
 * What it is not: it runs nothing. Pure C11 logic — no threads, no I/O, no
 * clock calls (time arrives as `double now`, in seconds, so tests use a fake
 * clock) — and not thread-safe: the caller serializes access (one lock, or
 * one thread owning it). Every structure is bounded by the limits given to
 * tc_sched_new; nothing allocates after it.
 *
 * Typical life of a session on pair p:
 *   admit -> OPEN -> PREFILLING -> GENERATING (hit steps, batched)
 *   -> AT_BOUNDARY (next token starts a new window) + sync_enqueue(deadline)
 *   -> sync_next pops it on p's context worker -> SYNCING
 *   -> sync_done -> GENERATING ... -> close.
 *
 * Session ids must not be reused while a sync popped for an earlier session
 * of the same id may still be reported (the daemon's ids are never reused). */
#ifndef TC_SCHED_H
#define TC_SCHED_H

#include <stdint.h>

#include "common/status.h"

typedef enum {
    TC_SS_OPEN,
    TC_SS_PREFILLING,
    TC_SS_GENERATING,
    TC_SS_AT_BOUNDARY,
    TC_SS_SYNCING,
    TC_SS_CLOSED,
} tc_sess_state;
#define TC_SS_COUNT 6

const char *tc_sess_state_name(tc_sess_state st);

typedef struct {
    int max_sessions;           /* admission (>= 1) */
    int max_queued_syncs;       /* sync queue bound (>= 1); enqueue beyond it is refused (backpressure) */
    int64_t max_state_bytes;    /* sum of admitted sessions' state bytes (0: unlimited) */
    int sync_batch_max;         /* syncs handed to the context worker together (>= 1) */
    double sync_batch_window_s; /* a queued sync joins the batch if its deadline is within this of the head's (>= 0) */
    int n_pairs;                /* worker pairs (context+generation) to place sessions on (>= 1) */
} tc_sched_limits;

typedef struct tc_sched tc_sched;

/* Validates the limits (a bad one: TC_ERR_INVALID naming the field). All
 * pairs start live. */
tc_status tc_sched_new(tc_sched **out, const tc_sched_limits *lim);
void tc_sched_free(tc_sched *s);

/* Admission + placement: the least-loaded live pair (by sessions, then state
 * bytes, ties lowest index); a session stays on its pair (see
 * tc_sched_move for fail-over). New sessions are OPEN. *pair_out is the pair,
 * or -1 on failure. Failures: duplicate sid or negative state_bytes
 * (TC_ERR_INVALID); max_sessions, max_state_bytes, or no live pair
 * (TC_ERR_EXHAUSTED, the message names the limit: tc_error_get()). */
tc_status tc_sched_admit(tc_sched *s, uint64_t sid, int64_t state_bytes, int *pair_out);
int tc_sched_pair_of(const tc_sched *s, uint64_t sid);        /* -1 unknown */
tc_sess_state tc_sched_state(const tc_sched *s, uint64_t sid); /* TC_SS_CLOSED when unknown */

/* State machine of DESIGN §5: OPEN->PREFILLING->GENERATING; OPEN->GENERATING
 * (nothing to prefill); GENERATING->AT_BOUNDARY->SYNCING->GENERATING;
 * GENERATING->PREFILLING (append into a live session); any->CLOSED (same as
 * tc_sched_close). Anything else, an unknown sid included, fails with
 * TC_ERR_INVALID and a message naming both states.
 * Leaving AT_BOUNDARY by hand (->SYNCING outside tc_sched_sync_next, or
 * ->CLOSED) drops its queued sync. SYNCING->GENERATING by hand records no
 * stall; tc_sched_sync_done does. */
tc_status tc_sched_transition(tc_sched *s, uint64_t sid, tc_sess_state to);

/* Sync queue: a session AT_BOUNDARY enqueues its sync with a deadline (when
 * its next token is due); earliest deadline first, FIFO among equal
 * deadlines. One queued sync per session. Refused with TC_ERR_EXHAUSTED
 * naming max_queued_syncs when full; TC_ERR_INVALID for an unknown sid, a
 * session not AT_BOUNDARY, one already queued, or a non-finite time. */
tc_status tc_sched_sync_enqueue(tc_sched *s, uint64_t sid, double now, double deadline);

/* Pops up to min(max, sync_batch_max) syncs of pair `pair` (only that pair's
 * sessions): the EDF head plus those whose deadline is within
 * sync_batch_window_s of the head's (inclusive), in EDF order; each moves
 * AT_BOUNDARY->SYNCING. Returns the count (0: nothing queued, pair out of
 * range or dead — a dead pair's context worker gets no work; its queued
 * syncs stay until it is live again or its sessions move). */
int tc_sched_sync_next(tc_sched *s, int pair, double now, uint64_t *sids, int max);
int tc_sched_sync_queued(const tc_sched *s, int pair); /* pair -1: all; -1 if pair out of range */

/* Closing removes the session from the queue and placement and releases its
 * state bytes; idempotent, unknown sids ignored. A sync already popped for a
 * closed session is reported by tc_sched_sync_done as stale (returns 0) so
 * the caller drops its result. */
void tc_sched_close(tc_sched *s, uint64_t sid);
/* 1: SYNCING->GENERATING, stall (now - enqueue time) and queue wait
 * recorded; 0: session closed/unknown meanwhile, or not SYNCING. */
int tc_sched_sync_done(tc_sched *s, uint64_t sid, double now);

/* Worker pair health: a dead pair gets no new sessions and no syncs from
 * tc_sched_sync_next; tc_sched_pair_sessions lists its sessions for
 * fail-over/re-sync (admission order). Returns the pair's session count
 * (may exceed max; at most max ids written), -1 if pair is out of range. */
void tc_sched_pair_set_live(tc_sched *s, int pair, int live);
int tc_sched_pair_live(const tc_sched *s, int pair); /* 0 also when out of range */
int tc_sched_pair_sessions(const tc_sched *s, int pair, uint64_t *sids, int max);

/* Fail-over: moves a session (with its queued sync, deadline and FIFO rank
 * kept) to live pair `pair`. The state is unchanged; the caller re-syncs it
 * there as needed. TC_ERR_INVALID for an unknown sid or pair, or a dead
 * target. */
tc_status tc_sched_move(tc_sched *s, uint64_t sid, int pair);

/* stats: per-session boundary stall (time from enqueue to sync_done)
 * accumulated; queue depth; admitted count and state bytes. */
typedef struct {
    int sessions;
    int64_t state_bytes;
    int queued_syncs;
    double stall_total_s;      /* sum over completed syncs of (done - enqueue) */
    int64_t syncs_done;
    /* additions */
    double stall_max_s;
    double queue_wait_total_s; /* sum over completed syncs of (popped - enqueue) */
    int64_t admit_refused;     /* admissions refused by a limit */
    int64_t sync_refused;      /* enqueues refused because the queue was full */
} tc_sched_stats;
void tc_sched_get_stats(const tc_sched *s, tc_sched_stats *out);

typedef struct {
    int64_t syncs_done;
    double stall_total_s;
    double stall_max_s;
    double stall_last_s;
    double queue_wait_total_s;
} tc_sched_sess_stats;
/* One session's figures; TC_ERR_INVALID for an unknown sid. */
tc_status tc_sched_get_sess_stats(const tc_sched *s, uint64_t sid, tc_sched_sess_stats *out);

#endif
