/* workq.h — a FIFO of work items run by a few threads of their own.
 *
 * tconstd's RPC thread answers every call; work whose cost grows with the
 * request (tokenizing megabytes of text) goes here instead, so one large
 * request does not hold up every other call. Items run in the order
 * posted (with one thread, strictly one after another). */
#ifndef TC_COMMON_WORKQ_H
#define TC_COMMON_WORKQ_H

#include "status.h"

typedef struct tc_workq tc_workq;
/* run(arg, 0) does the work; run(arg, 1) when the queue stopped before
 * it ran: the item only releases what it holds */
typedef void (*tc_workq_fn)(void *arg, int cancelled);

tc_status tc_workq_start(tc_workq **out, int n_threads, const char *name);
/* Queues run(arg). After tc_workq_stop, or without memory, an error:
 * nothing was queued and arg is still the caller's. */
tc_status tc_workq_post(tc_workq *q, tc_workq_fn run, void *arg);
/* Until nothing is queued or running (tests: a handler posted here has
 * run once this returns). */
void tc_workq_wait_idle(tc_workq *q);
/* Items queued now and later get run(arg, 1); the item running finishes;
 * the threads are joined. Idempotent. */
void tc_workq_stop(tc_workq *q);
void tc_workq_free(tc_workq *q); /* stops first */

#endif
