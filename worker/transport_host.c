/* transport_host.c — the host data plane: length-prefixed frames over TCP.
 * The receiving side runs one accept thread and one reader thread per
 * connection; complete frames go to a mailbox keyed by (sid, seq) that
 * recv waits on. Frames are validated (magic, length bound) before any
 * allocation, and acknowledged (8 bytes: its seq) once complete, so a
 * sender never takes a frame lost with a dead connection for delivered; it
 * redials and sends again once. Not here: shared memory (TCP over loopback moves a paper-size
 * zip, 2.6 MB, in about a millisecond, small next to a sync). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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
#define ACK_TOO_LARGE UINT64_MAX /* the receiver's answer to a frame over its limit, instead of the seq */
#define MAX_CONNS 64
#define RECV_IDLE_S 120 /* a data-plane connection silent this long is closed */

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
    int conns[MAX_CONNS], cstate[MAX_CONNS]; /* cstate: 0 free, 1 reading, 2 ended (join me) */
    pthread_t readers[MAX_CONNS];
    int stopping;
    /* sender */
    pthread_mutex_t send_mu; /* the sending side: sfd, one send at a time */
    pthread_mutex_t peer_mu; /* peer and redial: Connect never waits for a send in flight */
    char peer[300];
    int redial; /* Connect named a peer: the next send dials it */
    int sfd;
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

static int write_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w, n -= (size_t)w;
    }
    return 0;
}
static int read_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = recv(fd, b, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        b += r, n -= (size_t)r;
    }
    return 0;
}

typedef struct {
    host_tp *H;
    int fd, slot;
} reader_arg;

static void *reader_main(void *arg) {
    reader_arg ra = *(reader_arg *)arg;
    free(arg);
    host_tp *H = ra.H;
    for (;;) {
        frame_hdr h;
        if (read_all(ra.fd, &h, sizeof h) != 0) break;
        if (h.magic != FRAME_MAGIC || h.version != 1) {
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: bad frame header (magic 0x%08x version %u); closing", h.magic,
                   h.version);
            break;
        }
        if (h.len > H->max_message) {
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: frame of %llu bytes exceeds the limit %llu; closing",
                   (unsigned long long)h.len, (unsigned long long)H->max_message);
            const uint64_t refused = ACK_TOO_LARGE; /* the sender says why, and does not retry */
            (void)write_all(ra.fd, &refused, sizeof refused);
            /* closed now, with a reset (linger 0): a sender blocked writing
             * the body into a full window sees it at once. The fd is ours
             * to close here; the acceptor skips it */
            struct linger lg = {1, 0};
            setsockopt(ra.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            pthread_mutex_lock(&H->mu);
            close(ra.fd);
            H->conns[ra.slot] = -1;
            H->cstate[ra.slot] = 2;
            pthread_mutex_unlock(&H->mu);
            return NULL;
        }
        void *buf = malloc(h.len ? h.len : 1);
        if (!buf) {
            TC_LOG(TC_LOG_ERROR, "transport", "data plane: out of memory for %llu bytes", (unsigned long long)h.len);
            break;
        }
        if (read_all(ra.fd, buf, h.len) != 0) {
            free(buf);
            TC_LOG(TC_LOG_WARN, "transport", "data plane: connection closed inside a frame");
            break;
        }
        /* the ack tells the sender the frame is here (a write into a
         * connection whose reader died would otherwise look sent) */
        if (write_all(ra.fd, &h.seq, sizeof h.seq) != 0) {
            free(buf);
            break;
        }
        pthread_mutex_lock(&H->mu);
        H->t.bytes_received += h.len;
        pthread_mutex_unlock(&H->mu);
        tc_mailbox_put(H->mb, h.sid, h.seq, buf, h.len);
    }
    shutdown(ra.fd, SHUT_RDWR); /* the peer sees the close now; the fd is closed when reaped */
    pthread_mutex_lock(&H->mu);
    H->cstate[ra.slot] = 2;
    pthread_mutex_unlock(&H->mu);
    return NULL;
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
        int fd = accept(H->lfd, NULL, NULL);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* a peer that vanished without closing (a lost node, a partition)
         * must not hold a reader slot for good: keepalive finds it in ~90
         * s, and a connection silent for RECV_IDLE_S (idle or inside a
         * frame) is closed -- the sender redials on its next state */
        int idle = 60, intvl = 10, cnt = 3;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
        struct timeval rt = {RECV_IDLE_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt);
        pthread_mutex_lock(&H->mu);
        int slot = -1;
        for (int i = 0; i < MAX_CONNS && slot < 0; i++)
            if (H->cstate[i] != 1) slot = i;
        if (slot >= 0 && H->cstate[slot] == 2) { /* its reader ended: reap it */
            pthread_join(H->readers[slot], NULL);
            if (H->conns[slot] >= 0) close(H->conns[slot]); /* -1: its reader closed it (a refusal) */
            H->cstate[slot] = 0;
        }
        reader_arg *ra = slot >= 0 ? malloc(sizeof *ra) : NULL;
        if (!ra || H->stopping) {
            pthread_mutex_unlock(&H->mu);
            TC_LOG(TC_LOG_WARN, "transport", "data plane: connection refused (too many or stopping)");
            free(ra);
            close(fd);
            continue;
        }
        ra->H = H, ra->fd = fd, ra->slot = slot;
        H->conns[slot] = fd;
        H->cstate[slot] = 1;
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
    pthread_mutex_lock(&H->peer_mu);
    snprintf(H->peer, sizeof H->peer, "%s", peer);
    H->redial = 1; /* the next send closes its connection and dials the new peer */
    pthread_mutex_unlock(&H->peer_mu);
    return TC_OK;
}

static int dial(const char *peer, double timeout_s) {
    char host[256], ps[16];
    int port;
    if (tc_addr_split(peer, host, sizeof host, &port) != TC_OK) return -1;
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, ps, &hints, &ai) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {(time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) close(fd), fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static tc_status h_send(tc_transport *t, uint64_t sid, uint64_t seq, const void *buf, size_t len, double timeout_s) {
    host_tp *H = (host_tp *)t;
    double t0 = tc_now_s();
    pthread_mutex_lock(&H->send_mu);
    tc_status st = TC_OK;
    char peer_now[sizeof H->peer];
    pthread_mutex_lock(&H->peer_mu);
    snprintf(peer_now, sizeof peer_now, "%s", H->peer);
    const int redial = H->redial;
    H->redial = 0;
    pthread_mutex_unlock(&H->peer_mu);
    if (redial && H->sfd >= 0) close(H->sfd), H->sfd = -1;
    if (!peer_now[0]) {
        st = TC_FAIL(TC_ERR_INVALID, "data plane: no peer (Connect was not called)");
        goto out;
    }
    if (len > H->max_message) { /* the peers share the setting: it would refuse it */
        st = TC_FAIL(TC_ERR_EXHAUSTED,
                     "data plane: a state of %zu bytes exceeds --max-message-bytes %llu (raise it on both workers)",
                     len, (unsigned long long)H->max_message);
        goto out;
    }
    frame_hdr h = {FRAME_MAGIC, 1, sid, seq, len};
    for (int attempt = 0; attempt < 2; attempt++) { /* the peer may have restarted: redial once */
        if (H->sfd < 0) H->sfd = dial(peer_now, timeout_s);
        if (H->sfd < 0) {
            st = TC_FAIL(TC_ERR_IO, "data plane: cannot connect to %s: %s", peer_now, strerror(errno));
            continue;
        }
        uint64_t ack = 0;
        errno = 0;
        const int sent_hdr = write_all(H->sfd, &h, sizeof h) == 0;
        const int sent_body = sent_hdr && write_all(H->sfd, buf, len) == 0;
        if (sent_body && read_all(H->sfd, &ack, sizeof ack) == 0 && ack == seq) {
            st = TC_OK;
            break;
        }
        const int why = errno;
        /* the body's write failed: the receiver may have refused the frame
         * and reset the connection -- its refusal can still be read */
        if (sent_hdr && !sent_body) (void)read_all(H->sfd, &ack, sizeof ack);
        errno = why;
        close(H->sfd);
        H->sfd = -1;
        if (ack == ACK_TOO_LARGE) {
            st = TC_FAIL(TC_ERR_EXHAUSTED,
                         "data plane: %s refused a state of %zu bytes: over its --max-message-bytes (raise it on "
                         "both workers)", peer_now, len);
            break;
        }
        st = TC_FAIL(TC_ERR_IO, "data plane: send to %s failed: %s", peer_now,
                     errno ? strerror(errno) : "the peer closed the connection");
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

static void h_free(tc_transport *t) {
    host_tp *H = (host_tp *)t;
    if (!H) return;
    if (H->lfd >= 0) {
        pthread_mutex_lock(&H->mu);
        H->stopping = 1;
        pthread_mutex_unlock(&H->mu);
        tc_mailbox_close(H->mb);
        if (write(H->wake[1], "x", 1) != 1) TC_LOG(TC_LOG_WARN, "transport", "wake pipe write failed");
        pthread_join(H->acceptor, NULL);
        for (int i = 0; i < MAX_CONNS; i++)
            if (H->cstate[i]) {
                if (H->conns[i] >= 0) shutdown(H->conns[i], SHUT_RDWR);
                pthread_join(H->readers[i], NULL);
                if (H->conns[i] >= 0) close(H->conns[i]);
            }
        close(H->lfd);
        close(H->wake[0]), close(H->wake[1]);
    }
    if (H->sfd >= 0) close(H->sfd);
    tc_mailbox_free(H->mb);
    pthread_mutex_destroy(&H->mu);
    pthread_mutex_destroy(&H->send_mu);
    pthread_mutex_destroy(&H->peer_mu);
    free(H);
}

tc_status tc_transport_host_open(tc_transport **out, const char *listen_addr, uint64_t max_message) {
    *out = NULL;
    host_tp *H = calloc(1, sizeof *H);
    if (!H) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    H->lfd = -1, H->sfd = -1, H->max_message = max_message;
    pthread_mutex_init(&H->mu, NULL);
    pthread_mutex_init(&H->send_mu, NULL);
    pthread_mutex_init(&H->peer_mu, NULL);
    if (tc_mailbox_new(&H->mb) != TC_OK) {
        free(H);
        return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    }
    H->t.kind = "host";
    H->t.connect = h_connect;
    H->t.send = h_send;
    H->t.recv = h_recv;
    H->t.drop = h_drop;
    H->t.address = h_address;
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
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 16) != 0) {
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
