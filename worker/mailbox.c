/* mailbox.c — arrived data-plane messages keyed by (sid, seq); see
 * mailbox.h. A list: a worker holds few undelivered messages at a time
 * (one per session at a boundary), and at most TC_MAILBOX_MAX_COUNT. */
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

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

struct tc_mailbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mail *box;
    uint64_t max_bytes;
    uint64_t bytes; /* in the box and reserved */
    int count;      /* in the box and reserved */
    int closed;
};

tc_status tc_mailbox_new(tc_mailbox **out, uint64_t max_bytes) {
    tc_mailbox *m = calloc(1, sizeof *m);
    if (!m) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    m->max_bytes = max_bytes;
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = m;
    return TC_OK;
}

static void unlink_free(tc_mailbox *m, mail **pp) {
    mail *x = *pp;
    *pp = x->next;
    m->bytes -= x->len;
    m->count--;
    free(x->buf), free(x);
}

/* drops sid's messages up to and including seq (superseded; the same seq:
 * a resend after a lost ack), and every message older than the TTL (its
 * Import gave up long ago: the session was closed or rebuilt) */
static void sweep_locked(tc_mailbox *m, int by_sid, uint64_t sid, uint64_t upto_seq) {
    const double now = mono_s();
    for (mail **pp = &m->box; *pp;) {
        if ((by_sid && (*pp)->sid == sid && (*pp)->seq <= upto_seq) || now - (*pp)->at > TC_MAILBOX_TTL_S)
            unlink_free(m, pp);
        else pp = &(*pp)->next;
    }
}

tc_status tc_mailbox_reserve(tc_mailbox *m, uint64_t sid, uint64_t seq, size_t len) {
    pthread_mutex_lock(&m->mu);
    tc_status st = TC_OK;
    if (m->closed) {
        st = TC_FAIL(TC_ERR_IO, "data plane: the receiver is closing");
    } else {
        sweep_locked(m, 1, sid, seq);
        if (m->count >= TC_MAILBOX_MAX_COUNT || (uint64_t)len > m->max_bytes - (m->bytes < m->max_bytes ? m->bytes : m->max_bytes))
            st = TC_FAIL(TC_ERR_EXHAUSTED,
                         "data plane: mailbox full (%d messages, %llu of %llu bytes not yet imported): no room for %zu "
                         "bytes of session %llu",
                         m->count, (unsigned long long)m->bytes, (unsigned long long)m->max_bytes, len,
                         (unsigned long long)sid);
        else m->bytes += len, m->count++;
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}

void tc_mailbox_unreserve(tc_mailbox *m, size_t len) {
    pthread_mutex_lock(&m->mu);
    m->bytes -= len;
    m->count--;
    pthread_mutex_unlock(&m->mu);
}

void tc_mailbox_put(tc_mailbox *m, uint64_t sid, uint64_t seq, void *buf, size_t len) {
    mail *x = malloc(sizeof *x);
    pthread_mutex_lock(&m->mu);
    if (!x || m->closed) {
        m->bytes -= len;
        m->count--;
        pthread_mutex_unlock(&m->mu);
        free(buf), free(x);
        return;
    }
    x->sid = sid, x->seq = seq, x->buf = buf, x->len = len, x->at = mono_s();
    sweep_locked(m, 1, sid, seq); /* one that arrived while this was received */
    x->next = m->box;
    m->box = x; /* its bytes and count were reserved */
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
    sweep_locked(m, 0, 0, 0);
    for (int timed_out = 0;;) {
        for (mail **pp = &m->box; *pp; pp = &(*pp)->next)
            if ((*pp)->sid == sid && (*pp)->seq == seq) {
                mail *x = *pp;
                *pp = x->next;
                m->bytes -= x->len;
                m->count--;
                pthread_mutex_unlock(&m->mu);
                *buf = x->buf, *len = x->len;
                free(x);
                return TC_OK;
            }
        if (m->closed) {
            pthread_mutex_unlock(&m->mu);
            return TC_FAIL(TC_ERR_IO, "data plane: the transport is closing (message %llu of session %llu not received)",
                           (unsigned long long)seq, (unsigned long long)sid);
        }
        if (timed_out) break;
        timed_out = pthread_cond_timedwait(&m->cv, &m->mu, &dl) == ETIMEDOUT; /* then one last look */
    }
    pthread_mutex_unlock(&m->mu);
    return TC_FAIL(TC_ERR_IO, "data plane: message %llu of session %llu did not arrive within %.1f s",
                   (unsigned long long)seq, (unsigned long long)sid, timeout_s);
}

void tc_mailbox_drop(tc_mailbox *m, uint64_t sid) {
    pthread_mutex_lock(&m->mu);
    for (mail **pp = &m->box; *pp;) {
        if ((*pp)->sid == sid) unlink_free(m, pp);
        else pp = &(*pp)->next;
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
    while (m->box) unlink_free(m, &m->box);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
}
