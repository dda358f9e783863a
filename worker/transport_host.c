/* transport_host.c — the host data plane: length-prefixed frames over TCP.
 * The receiving side runs one accept thread and one reader thread per
 * connection (at most MAX_CONNS: a new one beyond closes the least
 * recently active); complete frames go to a mailbox keyed by (sid, seq)
 * that recv waits on. Frames are validated (magic, length bound, room in
 * the mailbox) before any allocation, and acknowledged (8 bytes: its seq)
 * once complete, so a sender never takes a frame lost with a dead
 * connection for delivered; it redials and sends again once, all within
 * the send's one deadline. close wakes a send or recv in progress. Not
 * here: shared memory (TCP over loopback moves a paper-size zip, 2.6 MB,
 * in about a millisecond, small next to a sync). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "mailbox.h"
#include "transport.h"

#define FRAME_MAGIC 0x50444354u /* "TCDP" */
/* the receiver's answers instead of the seq: the frame is over its limit;
 * its mailbox (messages nobody imported yet) has no room for it. The
 * sender says why and does not retry */
#define ACK_TOO_LARGE UINT64_MAX
#define ACK_FULL (UINT64_MAX - 1)
#define MAX_CONNS 64
/* a connection silent this long between frames is closed, and a frame
 * (header to last byte) must arrive within FRAME_S of its first byte: a
 * peer trickling bytes does not hold a reader for good. The sender's own
 * deadline (--peer-timeout) is shorter */
#define RECV_IDLE_S 120.0
#define FRAME_S 120.0
/* ...plus this much a byte for large frames (a multi-GB baseline state
 * over a slow link): a frame may move as slowly as 64 MiB/s on both ends */
static double frame_allow_s(uint64_t len) { return (double)len / (64.0 * 1048576.0); }

typedef struct {
    uint32_t magic, version;
    uint64_t sid, seq, len;
} frame_hdr;

typedef struct {
    tc_transport t;
    char addr[300];
    uint64_t max_message;
    int lfd, wake[2];
    pthread_t acceptor;
    pthread_mutex_t mu; /* the connection table */
    tc_mailbox *mb;
    /* cstate: 0 free, 1 reading, 2 ended (join me), 3 being evicted */
    int conns[MAX_CONNS], cstate[MAX_CONNS];
    double active[MAX_CONNS]; /* accepted, a frame begun or completed (tc_now_s) */
    pthread_t readers[MAX_CONNS];
    int stopping;
    /* sender */
    pthread_mutex_t send_mu; /* the sending side: sfd, one send at a time */
    pthread_mutex_t peer_mu; /* peer and redial: Connect never waits for a send in flight */
    char peer[300];
    int redial; /* Connect named a peer: the next send dials it */
    int sfd;
    int swake[2];          /* readable once closed: wakes a send's waits */
    _Atomic int closing; /* close was called */
} host_tp;

tc_status tc_addr_split(const char *addr, char *host, size_t hn, int *port) {
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr) return TC_FAIL(TC_ERR_INVALID, "address '%s': expected host:port", addr);
    size_t l = (size_t)(colon - addr);
    const char *h = addr;
    if (h[0] == '[' && l >= 2 && h[l - 1] == ']') h++, l -= 2;
    if (l + 1 > hn) return TC_FAIL(TC_ERR_INVALID, "address '%s': host too long", addr);
    memcpy(host, h, l);
    host[l] = 0;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return TC_FAIL(TC_ERR_INVALID, "address '%s': port must be 0..65535", addr);
    *port = (int)p;
    return TC_OK;
}

/* Moves n bytes (wr: sends, else receives) by deadline (tc_now_s clock;
 * 0: none), giving up when wakefd (-1: none) turns readable. 0 when done;
 * -1 otherwise, errno: ETIMEDOUT (the deadline), ECANCELED (woken), 0 (the
 * peer closed), or the socket's error. */
static int io_all(int fd, void *p, size_t n, int wr, double deadline, int wakefd) {
    uint8_t *b = p;
    while (n) {
        int ms = -1;
        if (deadline > 0) {
            const double left = deadline - tc_now_s();
            if (left <= 0) return errno = ETIMEDOUT, -1;
            ms = left > 3600 ? 3600 * 1000 : (int)(left * 1000) + 1;
        }
        struct pollfd pf[2] = {{fd, wr ? POLLOUT : POLLIN, 0}, {wakefd, POLLIN, 0}};
        const int pr = poll(pf, wakefd >= 0 ? 2 : 1, ms);
        if (pr < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (wakefd >= 0 && pf[1].revents) return errno = ECANCELED, -1;
        if (pr == 0) continue; /* the deadline, checked above */
        const ssize_t r = wr ? send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, b, n, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (r < 0) return -1;
        if (r == 0) return errno = 0, -1;
        b += r, n -= (size_t)r;
    }
    return 0;
}

typedef struct {
    host_tp *H;
    int fd, slot;
} reader_arg;

static void set_active(host_tp *H, int slot) {
    pthread_mutex_lock(&H->mu);
    H->active[slot] = tc_now_s();
    pthread_mutex_unlock(&H->mu);
}

/* answers a frame with a refusal instead of its ack and closes the
 * connection now, with a reset (linger 0): a sender blocked writing the
 * body into a full window sees it at once. The fd is ours to close here;
 * the acceptor skips it */
static void refuse(const reader_arg *ra, uint64_t why, double deadline) {
    host_tp *H = ra->H;
    (void)io_all(ra->fd, &why, sizeof why, 1, deadline, -1);
    struct linger lg = {1, 0};
    setsockopt(ra->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    pthread_mutex_lock(&H->mu);
    close(ra->fd);
    H->conns[ra->slot] = -1;
    if (H->cstate[ra->slot] == 1) H->cstate[ra->slot] = 2; /* 3: the acceptor is joining it */
    pthread_mutex_unlock(&H->mu);
}

static void *reader_main(void *arg) {
    reader_arg ra = *(reader_arg *)arg;
    free(arg);
    host_tp *H = ra.H;
    for (;;) {
        frame_hdr h;
        /* idle: the first byte of the next frame, then the frame's deadline */
        if (io_all(ra.fd, &h, 1, 0, tc_now_s() + RECV_IDLE_S, -1) != 0) break;
        set_active(H, ra.slot);
        double fdl = tc_now_s() + FRAME_S; /* the header's; the body's grows with its length below */
        if (io_all(ra.fd, (uint8_t *)&h + 1, sizeof h - 1, 0, fdl, -1) != 0) {
            if (errno == ETIMEDOUT) TC_LOG(TC_LOG_WARN, "transport", "data plane: a frame header took over %.0f s; closing", FRAME_S);
            break;
        }
        if (h.magic != FRAME_MAGIC || h.version != 1) {
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: bad frame header (magic 0x%08x version %u); closing", h.magic,
                   h.version);
            break;
        }
        if (h.len > H->max_message) {
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: frame of %llu bytes exceeds the limit %llu (a state of a "
                   "session of this worker's --max-session-tokens, at least --max-message-bytes); closing",
                   (unsigned long long)h.len, (unsigned long long)H->max_message);
            refuse(&ra, ACK_TOO_LARGE, fdl);
            return NULL;
        }
        fdl += frame_allow_s(h.len); /* within the limit: the body's transfer time */
        /* room in the mailbox before any allocation: frames nobody takes
         * (sessions never opened, Imports that gave up) cannot grow the
         * worker without bound */
        const tc_status rs = tc_mailbox_reserve(H->mb, h.sid, h.seq, (size_t)h.len);
        if (rs == TC_ERR_EXHAUSTED) {
            /* a waiting sender retries every 2-100 ms: one line in 5 s */
            static _Atomic double last_said;
            const double now = tc_now_s();
            if (now - last_said >= 5.0) {
                last_said = now;
                TC_LOG(TC_LOG_WARN, "transport", "%s; refused (the sender waits for room; more refusals in the "
                                                 "next 5 s are not logged)", tc_error_get());
            }
            refuse(&ra, ACK_FULL, fdl);
            return NULL;
        }
        if (rs != TC_OK) break; /* closing */
        void *buf = malloc(h.len ? h.len : 1);
        if (!buf) {
            tc_mailbox_unreserve(H->mb, (size_t)h.len);
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: out of memory for %llu bytes", (unsigned long long)h.len);
            break;
        }
        if (io_all(ra.fd, buf, h.len, 0, fdl, -1) != 0) {
            tc_mailbox_unreserve(H->mb, (size_t)h.len);
            free(buf);
            TC_LOG(TC_LOG_WARN, "transport", "data plane: %s inside a frame; closing",
                   errno == ETIMEDOUT ? "the frame's deadline passed" : "connection closed");
            break;
        }
        /* the ack tells the sender the frame is here (a write into a
         * connection whose reader died would otherwise look sent) */
        if (io_all(ra.fd, &h.seq, sizeof h.seq, 1, fdl, -1) != 0) {
            tc_mailbox_unreserve(H->mb, (size_t)h.len);
            free(buf);
            break;
        }
        pthread_mutex_lock(&H->mu);
        H->t.bytes_received += h.len;
        H->active[ra.slot] = tc_now_s();
        pthread_mutex_unlock(&H->mu);
        tc_mailbox_put(H->mb, h.sid, h.seq, buf, h.len);
    }
    shutdown(ra.fd, SHUT_RDWR); /* the peer sees the close now; the fd is closed when reaped */
    pthread_mutex_lock(&H->mu);
    if (H->cstate[ra.slot] == 1) H->cstate[ra.slot] = 2; /* 3: the acceptor is joining it */
    pthread_mutex_unlock(&H->mu);
    return NULL;
}

/* Under H->mu: a free slot, the slot of an ended reader (joined here), or,
 * the table full, the slot of the reader least recently active -- accepted
 * or last begun or completed a frame: an idle or stalled connection, never
 * the context peer's in the middle of a frame -- whose reader is stopped
 * and joined here (mu released meanwhile). -1 when none. */
static int take_slot(host_tp *H) {
    int slot = -1, victim = -1;
    for (int i = 0; i < MAX_CONNS && slot < 0; i++)
        if (H->cstate[i] == 0 || H->cstate[i] == 2) slot = i;
    if (slot < 0) {
        for (int i = 0; i < MAX_CONNS; i++)
            if (H->cstate[i] == 1 && (victim < 0 || H->active[i] < H->active[victim])) victim = i;
        if (victim < 0) return -1;
        TC_LOG(TC_LOG_WARN, "transport",
               "data plane: %d connections open; closing the one silent for %.0f s to accept a new one", MAX_CONNS,
               tc_now_s() - H->active[victim]);
        H->cstate[victim] = 3;
        if (H->conns[victim] >= 0) shutdown(H->conns[victim], SHUT_RDWR); /* its reader returns now */
        pthread_mutex_unlock(&H->mu);
        pthread_join(H->readers[victim], NULL);
        pthread_mutex_lock(&H->mu);
        if (H->conns[victim] >= 0) close(H->conns[victim]);
        H->cstate[victim] = 0;
        return victim;
    }
    if (H->cstate[slot] == 2) { /* its reader ended: reap it */
        pthread_join(H->readers[slot], NULL);
        if (H->conns[slot] >= 0) close(H->conns[slot]); /* -1: its reader closed it (a refusal) */
        H->cstate[slot] = 0;
    }
    return slot;
}

static void *acceptor_main(void *arg) {
    host_tp *H = arg;
    for (;;) {
        struct pollfd p[2] = {{H->lfd, POLLIN, 0}, {H->wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break;
        int fd = accept4(H->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* a peer that vanished without closing (a lost node, a partition)
         * is found by keepalive in ~90 s, besides the reader's deadlines */
        int idle = 60, intvl = 10, cnt = 3;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
        pthread_mutex_lock(&H->mu);
        const int slot = H->stopping ? -1 : take_slot(H);
        reader_arg *ra = slot >= 0 && !H->stopping ? malloc(sizeof *ra) : NULL;
        if (!ra) {
            const int stopping = H->stopping;
            pthread_mutex_unlock(&H->mu);
            if (!stopping) TC_LOG(TC_LOG_WARN, "transport", "data plane: connection refused (out of memory)");
            close(fd);
            continue;
        }
        ra->H = H, ra->fd = fd, ra->slot = slot;
        H->conns[slot] = fd;
        H->cstate[slot] = 1;
        H->active[slot] = tc_now_s();
        if (pthread_create(&H->readers[slot], NULL, reader_main, ra) != 0) {
            H->cstate[slot] = 0;
            free(ra);
            close(fd);
        }
        pthread_mutex_unlock(&H->mu);
    }
    return NULL;
}

static tc_status h_connect(tc_transport *t, const char *peer) {
    host_tp *H = (host_tp *)t;
    char host[256];
    int port;
    TC_CHECK(tc_addr_split(peer, host, sizeof host, &port));
    if (port == 0 || !host[0]) return TC_FAIL(TC_ERR_INVALID, "peer address '%s': needs a host and a port 1..65535", peer);
    pthread_mutex_lock(&H->peer_mu);
    snprintf(H->peer, sizeof H->peer, "%s", peer);
    H->redial = 1; /* the next send closes its connection and dials the new peer */
    pthread_mutex_unlock(&H->peer_mu);
    return TC_OK;
}

/* A connected socket (non-blocking) to peer by deadline, or -1 with why
 * filled. errno ECANCELED: woken by close; ETIMEDOUT: the deadline. */
static int dial(const char *peer, double deadline, int wakefd, char *why, size_t wn) {
    char host[256], ps[16];
    int port;
    if (tc_addr_split(peer, host, sizeof host, &port) != TC_OK) {
        snprintf(why, wn, "%s", tc_error_get());
        return errno = EINVAL, -1;
    }
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    const int gr = getaddrinfo(host, ps, &hints, &ai);
    if (gr != 0) {
        snprintf(why, wn, "cannot resolve '%s': %s", host, gai_strerror(gr));
        return errno = EHOSTUNREACH, -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        e = errno;
        if (e == EINPROGRESS) { /* wait for it: writable once connected or failed */
            for (;;) {
                int ms = -1;
                if (deadline > 0) {
                    const double left = deadline - tc_now_s();
                    ms = left <= 0 ? 0 : left > 3600 ? 3600 * 1000 : (int)(left * 1000) + 1;
                }
                struct pollfd pf[2] = {{fd, POLLOUT, 0}, {wakefd, POLLIN, 0}};
                const int pr = poll(pf, 2, ms);
                if (pr < 0 && errno == EINTR) continue;
                if (pr > 0 && pf[1].revents) e = ECANCELED;
                else if (pr > 0) {
                    socklen_t sl = sizeof e;
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0) e = errno;
                } else e = pr == 0 ? ETIMEDOUT : errno;
                break;
            }
        }
        if (e != 0) {
            close(fd), fd = -1;
            if (e == ECANCELED || e == ETIMEDOUT) break; /* no time for the next address */
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        snprintf(why, wn, "cannot connect to %s: %s", peer,
                 e == ECANCELED ? "the transport is closing" : e == ETIMEDOUT ? "timed out" : strerror(e));
        return errno = e, -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static tc_status h_send(tc_transport *t, uint64_t sid, uint64_t seq, const void *buf, size_t len, double timeout_s) {
    host_tp *H = (host_tp *)t;
    if (seq >= ACK_FULL) /* an ack of this seq would read as a refusal, a refusal as its ack */
        return TC_FAIL(TC_ERR_INVALID, "data plane: seq %llu is reserved (at most 2^64-3)", (unsigned long long)seq);
    const double t0 = tc_now_s();
    /* for the whole send, redial included; a large state gets its transfer time on top */
    const double deadline = timeout_s > 0 ? t0 + timeout_s + frame_allow_s(len) : 0;
    pthread_mutex_lock(&H->send_mu);
    tc_status st = TC_OK;
    char peer_now[sizeof H->peer];
    pthread_mutex_lock(&H->peer_mu);
    snprintf(peer_now, sizeof peer_now, "%s", H->peer);
    const int redial = H->redial;
    H->redial = 0;
    pthread_mutex_unlock(&H->peer_mu);
    if (redial && H->sfd >= 0) close(H->sfd), H->sfd = -1;
    if (H->closing) {
        st = TC_FAIL(TC_ERR_IO, "data plane: the transport is closing");
        goto out;
    }
    if (!peer_now[0]) {
        /* a fresh process its coordinator has not linked yet: it will
         * (I/O, retried once the pair is linked), not a bad request */
        st = TC_FAIL(TC_ERR_IO, "data plane: no peer yet (no Connect since this worker started)");
        goto out;
    }
    if (len > H->max_message) { /* the peers share the setting: it would refuse it */
        st = TC_FAIL(TC_ERR_EXHAUSTED,
                     "data plane: a state of %zu bytes exceeds the limit %llu (the largest state of a session of "
                     "--max-session-tokens tokens, at least --max-message-bytes: raise them on both workers)",
                     len, (unsigned long long)H->max_message);
        goto out;
    }
    frame_hdr h = {FRAME_MAGIC, 1, sid, seq, len};
    int full_waits = 0;  /* refusals for a full mailbox, each waited out while the deadline allows */
    for (int attempt = 0; attempt < 2; attempt++) { /* the peer may have restarted: redial once */
        if (H->sfd < 0) {
            char why[400];
            H->sfd = dial(peer_now, deadline, H->swake[0], why, sizeof why);
            if (H->sfd < 0) {
                const int e = errno;
                st = TC_FAIL(TC_ERR_IO, "data plane: %s", why);
                if (e == ECANCELED || e == ETIMEDOUT) break;
                continue;
            }
        }
        uint64_t ack = 0;
        errno = 0;
        const int sent_hdr = io_all(H->sfd, &h, sizeof h, 1, deadline, H->swake[0]) == 0;
        const int sent_body = sent_hdr && io_all(H->sfd, (void *)buf, len, 1, deadline, H->swake[0]) == 0;
        if (sent_body && io_all(H->sfd, &ack, sizeof ack, 0, deadline, H->swake[0]) == 0 && ack == seq) {
            st = TC_OK;
            break;
        }
        const int why = errno;
        /* the body's write failed: the receiver may have refused the frame
         * and reset the connection -- its refusal can still be read */
        if (sent_hdr && !sent_body && why != ECANCELED && why != ETIMEDOUT)
            (void)io_all(H->sfd, &ack, sizeof ack, 0, deadline, H->swake[0]);
        close(H->sfd);
        H->sfd = -1;
        if (ack == ACK_TOO_LARGE) {
            st = TC_FAIL(TC_ERR_EXHAUSTED,
                         "data plane: %s refused a state of %zu bytes: over its limit (its --max-session-tokens, at least --max-message-bytes: raise it on "
                         "both workers)", peer_now, len);
            break;
        }
        if (ack == ACK_FULL) {
            /* the receiver imports as its steps go: wait for room (backing
             * off 2 ms .. 100 ms) while the deadline allows, then give up */
            const double left = deadline > 0 ? deadline - tc_now_s() : 0;
            double wait_s = 0.002 * (double)(1 << (full_waits < 6 ? full_waits : 6));
            if (wait_s > 0.1) wait_s = 0.1;
            if (left > wait_s) {
                if (full_waits++ == 0) __atomic_fetch_add(&t->full_waits, 1, __ATOMIC_RELAXED);
                struct pollfd pf = {H->swake[0], POLLIN, 0};
                if (poll(&pf, 1, (int)(wait_s * 1000)) > 0) {
                    st = TC_FAIL(TC_ERR_IO, "data plane: send to %s: the transport is closing", peer_now);
                    break;
                }
                attempt = -1; /* a fresh pair of tries: the refusal was no dead connection */
                continue;
            }
            st = TC_FAIL(TC_ERR_EXHAUSTED,
                         "data plane: %s refused a state of %zu bytes: its mailbox of states not yet imported stayed "
                         "full for %.1f s (%d refusals)",
                         peer_now, len, tc_now_s() - t0, full_waits + 1);
            break;
        }
        if (why == ECANCELED) {
            st = TC_FAIL(TC_ERR_IO, "data plane: send to %s: the transport is closing", peer_now);
            break;
        }
        if (why == ETIMEDOUT) { /* the deadline covers the redial too: none left */
            st = TC_FAIL(TC_ERR_IO, "data plane: send to %s: the peer did not take the state within %.1f s", peer_now, timeout_s);
            break;
        }
        st = TC_FAIL(TC_ERR_IO, "data plane: send to %s failed: %s", peer_now,
                     why ? strerror(why) : "the peer closed the connection");
    }
    if (st == TC_OK) {
        t->bytes_sent += len;
        t->messages_sent++;
        t->send_s += tc_now_s() - t0;
    }
out:
    pthread_mutex_unlock(&H->send_mu);
    return st;
}

static tc_status h_recv(tc_transport *t, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s) {
    return tc_mailbox_take(((host_tp *)t)->mb, sid, seq, buf, len, timeout_s);
}

static void h_drop(tc_transport *t, uint64_t sid) { tc_mailbox_drop(((host_tp *)t)->mb, sid); }

static const char *h_address(const tc_transport *t) { return ((const host_tp *)t)->addr; }

static void h_close(tc_transport *t) {
    host_tp *H = (host_tp *)t;
    pthread_mutex_lock(&H->mu);
    H->stopping = 1; /* no new connections */
    pthread_mutex_unlock(&H->mu);
    tc_mailbox_close(H->mb); /* recv: fails now */
    /* send: its waits poll this pipe; it stays readable */
    if (!atomic_exchange(&H->closing, 1) && H->swake[1] >= 0 && write(H->swake[1], "x", 1) != 1)
        TC_LOG(TC_LOG_WARN, "transport", "wake pipe write failed");
}

static void h_free(tc_transport *t) {
    host_tp *H = (host_tp *)t;
    if (!H) return;
    if (H->mb) h_close(t);
    if (H->lfd >= 0) {
        if (write(H->wake[1], "x", 1) != 1) TC_LOG(TC_LOG_WARN, "transport", "wake pipe write failed");
        pthread_join(H->acceptor, NULL);
        for (int i = 0; i < MAX_CONNS; i++) {
            /* under mu: a reader refusing a frame closes its fd itself */
            pthread_mutex_lock(&H->mu);
            const int used = H->cstate[i] != 0;
            if (used && H->conns[i] >= 0) shutdown(H->conns[i], SHUT_RDWR);
            pthread_mutex_unlock(&H->mu);
            if (!used) continue;
            pthread_join(H->readers[i], NULL);
            if (H->conns[i] >= 0) close(H->conns[i]);
        }
        close(H->lfd);
        close(H->wake[0]), close(H->wake[1]);
    }
    if (H->sfd >= 0) close(H->sfd);
    if (H->swake[0] >= 0) close(H->swake[0]), close(H->swake[1]);
    tc_mailbox_free(H->mb);
    pthread_mutex_destroy(&H->mu);
    pthread_mutex_destroy(&H->send_mu);
    pthread_mutex_destroy(&H->peer_mu);
    free(H);
}

tc_status tc_transport_host_open(tc_transport **out, const char *listen_addr, uint64_t max_message,
                                 uint64_t max_buffered) {
    *out = NULL;
    host_tp *H = calloc(1, sizeof *H);
    if (!H) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    H->lfd = -1, H->sfd = -1, H->max_message = max_message;
    H->swake[0] = H->swake[1] = -1;
    pthread_mutex_init(&H->mu, NULL);
    pthread_mutex_init(&H->send_mu, NULL);
    pthread_mutex_init(&H->peer_mu, NULL);
    if (!max_buffered) max_buffered = max_message > UINT64_MAX / 4 ? UINT64_MAX : 4 * max_message;
    if (tc_mailbox_new(&H->mb, max_buffered) != TC_OK || pipe2(H->swake, O_CLOEXEC) != 0) {
        H->swake[0] = H->swake[1] = -1;
        h_free(&H->t);
        return TC_FAIL(TC_ERR_NOMEM, "data plane: out of memory or descriptors");
    }
    H->t.kind = "host";
    H->t.connect = h_connect;
    H->t.send = h_send;
    H->t.recv = h_recv;
    H->t.drop = h_drop;
    H->t.address = h_address;
    H->t.close = h_close;
    H->t.free = h_free;
    if (listen_addr && listen_addr[0]) {
        char host[256], ps[16];
        int port;
        tc_status st = tc_addr_split(listen_addr, host, sizeof host, &port);
        if (st != TC_OK) {
            h_free(&H->t);
            return st;
        }
        snprintf(ps, sizeof ps, "%d", port);
        struct addrinfo hints = {0}, *ai;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        int gr = getaddrinfo(host[0] ? host : NULL, ps, &hints, &ai);
        if (gr != 0) {
            h_free(&H->t);
            return TC_FAIL(TC_ERR_INVALID, "data plane: cannot resolve '%s': %s", listen_addr, gai_strerror(gr));
        }
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol), one = 1;
        if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, MAX_CONNS) != 0) {
            int e = errno;
            freeaddrinfo(ai);
            if (fd >= 0) close(fd);
            h_free(&H->t);
            return TC_FAIL(TC_ERR_IO, "data plane: cannot listen on %s: %s", listen_addr, strerror(e));
        }
        freeaddrinfo(ai);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        int bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
        snprintf(H->addr, sizeof H->addr, "%s:%d", host, bound);
        H->lfd = fd;
        if (pipe2(H->wake, O_CLOEXEC) != 0 || pthread_create(&H->acceptor, NULL, acceptor_main, H) != 0) {
            close(fd);
            H->lfd = -1;
            h_free(&H->t);
            return TC_FAIL(TC_ERR_IO, "data plane: cannot start the listener");
        }
    }
    *out = &H->t;
    return TC_OK;
}
