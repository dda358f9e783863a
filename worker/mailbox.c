/* mailbox.c — arrived data-plane messages keyed by (sid, seq); see
 * mailbox.h. A list: a worker holds few undelivered messages at a time
 * (one per session at a boundary). */
#include "mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct mail {
    uint64_t sid, seq;
    void *buf;
    size_t len;
    double at; /* arrival, CLOCK_MONOTONIC seconds */
    struct mail *next;
} mail;

/* A message nobody took for this long was given up on (its Import timed
 * out and the session was closed or rebuilt): dropped at the next put, so
 * a worker does not keep a session state per such event until it exits.
 * Far above any take's timeout. */
#define TC_MAIL_TTL_S 300.0

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

struct tc_mailbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mail *box;
    int closed;
};

tc_status tc_mailbox_new(tc_mailbox **out) {
    tc_mailbox *m = calloc(1, sizeof *m);
    if (!m) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    *out = m;
    return TC_OK;
}

static void drop_locked(tc_mailbox *m, uint64_t sid, uint64_t below_seq) {
    for (mail **pp = &m->box; *pp;) {
        if ((*pp)->sid == sid && (*pp)->seq < below_seq) {
            mail *x = *pp;
            *pp = x->next;
            free(x->buf), free(x);
        } else pp = &(*pp)->next;
    }
}

void tc_mailbox_put(tc_mailbox *m, uint64_t sid, uint64_t seq, void *buf, size_t len) {
    mail *x = malloc(sizeof *x);
    if (!x) {
        free(buf);
        return;
    }
    x->sid = sid, x->seq = seq, x->buf = buf, x->len = len, x->at = mono_s();
    pthread_mutex_lock(&m->mu);
    drop_locked(m, sid, seq); /* superseded */
    for (mail **pp = &m->box; *pp;) { /* abandoned */
        if (x->at - (*pp)->at > TC_MAIL_TTL_S) {
            mail *y = *pp;
            *pp = y->next;
            free(y->buf), free(y);
        } else pp = &(*pp)->next;
    }
    x->next = m->box;
    m->box = x;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

tc_status tc_mailbox_take(tc_mailbox *m, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s) {
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    double end = (double)dl.tv_sec + dl.tv_nsec * 1e-9 + timeout_s;
    dl.tv_sec = (time_t)end;
    dl.tv_nsec = (long)((end - (double)dl.tv_sec) * 1e9);
    pthread_mutex_lock(&m->mu);
    for (;;) {
        for (mail **pp = &m->box; *pp; pp = &(*pp)->next)
            if ((*pp)->sid == sid && (*pp)->seq == seq) {
                mail *x = *pp;
                *pp = x->next;
                pthread_mutex_unlock(&m->mu);
                *buf = x->buf, *len = x->len;
                free(x);
                return TC_OK;
            }
        if (m->closed || pthread_cond_timedwait(&m->cv, &m->mu, &dl) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&m->mu);
    return TC_FAIL(TC_ERR_IO, "data plane: message %llu of session %llu did not arrive within %.1f s",
                   (unsigned long long)seq, (unsigned long long)sid, timeout_s);
}

void tc_mailbox_drop(tc_mailbox *m, uint64_t sid) {
    pthread_mutex_lock(&m->mu);
    for (mail **pp = &m->box; *pp;) {
        if ((*pp)->sid == sid) {
            mail *x = *pp;
            *pp = x->next;
            free(x->buf), free(x);
        } else pp = &(*pp)->next;
    }
    pthread_mutex_unlock(&m->mu);
}

void tc_mailbox_close(tc_mailbox *m) {
    pthread_mutex_lock(&m->mu);
    m->closed = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

void tc_mailbox_free(tc_mailbox *m) {
    if (!m) return;
    while (m->box) {
        mail *x = m->box;
        m->box = x->next;
        free(x->buf), free(x);
    }
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
