/* workq.c — see workq.h. A mutex, a condition variable and a singly
 * linked FIFO: the items are few and large, so nothing cleverer pays. */
#include "workq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct item {
    struct item *next;
    tc_workq_fn run;
    void *arg;
} item;

struct tc_workq {
    pthread_mutex_t mu;
    pthread_cond_t cv, idle_cv;
    item *head, *tail;
    int stop, n_threads, running;
    pthread_t th[8];
};

static void *loop(void *p) {
    tc_workq *q = p;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
        item *it = q->head;
        if (!it) break; /* stopped and empty */
        q->head = it->next;
        if (!q->head) q->tail = NULL;
        const int cancelled = q->stop;
        q->running++;
        pthread_mutex_unlock(&q->mu);
        it->run(it->arg, cancelled);
        free(it);
        pthread_mutex_lock(&q->mu);
        if (--q->running == 0 && !q->head) pthread_cond_broadcast(&q->idle_cv);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

tc_status tc_workq_start(tc_workq **out, int n_threads, const char *name) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 8) return TC_FAIL(TC_ERR_INVALID, "workq %s: %d threads (1..8)", name, n_threads);
    tc_workq *q = calloc(1, sizeof *q);
    if (!q) return TC_FAIL(TC_ERR_NOMEM, "workq %s: out of memory", name);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_cond_init(&q->idle_cv, NULL);
    for (; q->n_threads < n_threads; q->n_threads++)
        if (pthread_create(&q->th[q->n_threads], NULL, loop, q) != 0) {
            tc_workq_free(q);
            return TC_FAIL(TC_ERR_IO, "workq %s: cannot start a thread", name);
        }
    *out = q;
    return TC_OK;
}

tc_status tc_workq_post(tc_workq *q, tc_workq_fn run, void *arg) {
    item *it = malloc(sizeof *it);
    pthread_mutex_lock(&q->mu);
    const int stopped = q->stop;
    if (it && !stopped) {
        it->next = NULL, it->run = run, it->arg = arg;
        if (q->tail) q->tail->next = it;
        else q->head = it;
        q->tail = it;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    if (it && !stopped) return TC_OK;
    free(it);
    return stopped ? TC_FAIL(TC_ERR_IO, "workq: stopped") : TC_FAIL(TC_ERR_NOMEM, "workq: out of memory");
}

void tc_workq_wait_idle(tc_workq *q) {
    pthread_mutex_lock(&q->mu);
    while (q->head || q->running) pthread_cond_wait(&q->idle_cv, &q->mu);
    pthread_mutex_unlock(&q->mu);
}

void tc_workq_stop(tc_workq *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    const int was = q->stop;
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    if (was) return;
    for (int i = 0; i < q->n_threads; i++) pthread_join(q->th[i], NULL);
    q->n_threads = 0;
}

void tc_workq_free(tc_workq *q) {
    if (!q) return;
    tc_workq_stop(q);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_cond_destroy(&q->idle_cv);
    free(q);
}
