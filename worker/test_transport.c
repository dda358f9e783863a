/* test_transport.c — the host data plane: messages arrive intact whatever
 * the order recv asks for them in; a newer message of a session supersedes
 * an older one; drop forgets a session; a frame over the size limit or
 * with a bad header closes the connection without delivering anything;
 * the sender redials a receiver that restarted; the mailbox is bounded
 * (bytes and count, a refused frame fails the send with the reason); a
 * full connection table makes room for the context peer; a send that gets
 * no answer waits one deadline, not one per attempt; close wakes a recv or
 * send in progress. Label: unit. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"

static int g_fail;
#include "../tests/expect.h"

static int check(tc_transport *rx, uint64_t sid, uint64_t seq, const uint8_t *want, size_t n);

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* a raw TCP peer: a connection to addr ("127.0.0.1:port"), or a listener
 * that never answers (its address in out) */
static int raw_connect(const char *addr) {
    char host[64];
    int port;
    if (tc_addr_split(addr, host, sizeof host, &port) != TC_OK) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) close(fd), fd = -1;
    return fd;
}
static int raw_listen(char *out, size_t on) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    snprintf(out, on, "127.0.0.1:%d", ntohs(sa.sin_port));
    return fd;
}
/* 1 once fd is readable (data, EOF or reset) within bound_s: a bound that
 * only catches a hang */
static int readable(int fd, double bound_s) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, (int)(bound_s * 1000)) == 1;
}

/* a recv or send in another thread, to be woken by close */
typedef struct {
    tc_transport *t;
    int send;
    tc_status st;
    char err[512];
    atomic_int done;
} blocked;
static void *blocked_main(void *p) {
    blocked *b = p;
    void *buf = NULL;
    size_t l = 0;
    b->st = b->send ? b->t->send(b->t, 1, 1, "four", 4, 120.0) : b->t->recv(b->t, 999, 1, &buf, &l, 120.0);
    snprintf(b->err, sizeof b->err, "%s", b->st == TC_OK ? "" : tc_error_get());
    free(buf);
    atomic_store(&b->done, 1);
    return NULL;
}
/* 1 once the call returned, within bound_s (only a hang misses it); a
 * hang ends the test (the thread would hold it for its 120 s) */
static int wait_done(blocked *b, double bound_s) {
    const double end = now_s() + bound_s;
    while (!atomic_load(&b->done) && now_s() < end) {
        const struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (!atomic_load(&b->done)) {
        printf("FAIL %s: a blocked %s not woken by close within %.0f s\n", __FILE__, b->send ? "send" : "recv", bound_s);
        fflush(stdout);
        _exit(1);
    }
    return 1;
}

/* close wakes a recv waiting for a message and a send waiting for its
 * ack (both with 120 s timeouts) with an error; later calls fail at once */
static void test_close(void) {
    tc_transport *rx, *tx;
    EXPECT(tc_transport_host_open(&rx, "127.0.0.1:0", 1 << 20, 0) == TC_OK, "open rx");
    blocked br = {rx, 0, TC_OK, "", 0};
    pthread_t th;
    pthread_create(&th, NULL, blocked_main, &br);
    rx->close(rx);
    EXPECT(wait_done(&br, 20.0), "recv not woken by close");
    pthread_join(th, NULL);
    EXPECT(br.st == TC_ERR_IO && strstr(br.err, "closing"), "recv after close: %d %s", br.st, br.err);

    char paddr[64];
    const int lfd = raw_listen(paddr, sizeof paddr);
    EXPECT(lfd >= 0, "raw listen");
    EXPECT(tc_transport_host_open(&tx, "", 1 << 20, 0) == TC_OK && tx->connect(tx, paddr) == TC_OK, "open tx");
    blocked bs = {tx, 1, TC_OK, "", 0};
    pthread_create(&th, NULL, blocked_main, &bs);
    /* the send is past its frame, waiting for an ack that never comes */
    int cfd = readable(lfd, 20.0) ? accept(lfd, NULL, NULL) : -1;
    EXPECT(cfd >= 0, "the sender did not connect");
    uint8_t frame[36];
    size_t got = 0;
    while (cfd >= 0 && got < sizeof frame && readable(cfd, 20.0)) {
        const ssize_t r = read(cfd, frame + got, sizeof frame - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    EXPECT(got == sizeof frame, "frame not received (%zu bytes)", got);
    tx->close(tx);
    EXPECT(wait_done(&bs, 20.0), "send not woken by close");
    pthread_join(th, NULL);
    EXPECT(bs.st == TC_ERR_IO && strstr(bs.err, "closing"), "send after close: %d %s", bs.st, bs.err);
    EXPECT(tx->send(tx, 1, 2, "x", 1, 120.0) == TC_ERR_IO && strstr(tc_error_get(), "closing"), "a send after close: %s",
           tc_error_get());
    void *b = NULL;
    size_t bl;
    EXPECT(rx->recv(rx, 1, 1, &b, &bl, 120.0) == TC_ERR_IO, "a recv after close");
    tx->close(tx); /* idempotent */
    if (cfd >= 0) close(cfd);
    close(lfd);
    tx->free(tx), rx->free(rx);
}

typedef struct {
    tc_transport *tx;
    uint64_t sid;
    const void *p;
    size_t n;
    double timeout_s;
    tc_status st;
} send_arg;

static void *send_thread(void *arg) {
    send_arg *a = arg;
    a->st = a->tx->send(a->tx, a->sid, 1, a->p, a->n, a->timeout_s);
    return NULL;
}

/* the mailbox's bounds: frames nobody takes are refused past max_buffered
 * bytes or TC_MAILBOX_MAX_COUNT (4096) frames, with TC_ERR_EXHAUSTED at
 * the sender; taking one makes room; a resend of the same (sid, seq) and a
 * frame cut short do not count twice or for good */
static void test_mailbox_bounds(void) {
    tc_transport *rx, *tx;
    const size_t n = 60000;
    uint8_t *p = calloc(1, n);
    EXPECT(tc_transport_host_open(&rx, "127.0.0.1:0", 1 << 16, 4 << 16) == TC_OK, "open bounded rx");
    EXPECT(tc_transport_host_open(&tx, "", 1 << 16, 0) == TC_OK && tx->connect(tx, rx->address(rx)) == TC_OK, "open tx");
    for (uint64_t sid = 100; sid < 104; sid++) EXPECT(tx->send(tx, sid, 1, p, n, 10) == TC_OK, "send %llu: %s", (unsigned long long)sid, tc_error_get());
    EXPECT(tx->send(tx, 104, 1, p, n, 0.3) == TC_ERR_EXHAUSTED && strstr(tc_error_get(), "mailbox") &&
               strstr(tc_error_get(), "stayed full"),
           "a frame past the mailbox's bound, nobody taking: %s", tc_error_get());
    EXPECT(tx->full_waits == 1, "full_waits %llu after one refused send", (unsigned long long)tx->full_waits);
    /* the two seqs the refusal acks use: refused at once (a refusal of
     * such a frame would read as its ack, a lost frame as delivered) */
    for (uint64_t q = UINT64_MAX - 1; q != 0; q++)
        EXPECT(tx->send(tx, 104, q, p, n, 10) == TC_ERR_INVALID && strstr(tc_error_get(), "reserved"),
               "a frame with seq %llx into the full mailbox: %s", (unsigned long long)q, tc_error_get());
    EXPECT(tx->send(tx, 101, 1, p, n, 10) == TC_OK, "a resend of the same frame: %s", tc_error_get());
    /* a send into the full mailbox waits for room: the take below comes
     * only once the sender has been refused, and the send then lands */
    send_arg sa = {tx, 104, p, n, 60.0, TC_ERR_INTERNAL};
    pthread_t th;
    EXPECT(pthread_create(&th, NULL, send_thread, &sa) == 0, "send thread");
    const double until = now_s() + 30.0;
    while (__atomic_load_n(&tx->full_waits, __ATOMIC_RELAXED) < 2 && now_s() < until) {
        const struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    EXPECT(__atomic_load_n(&tx->full_waits, __ATOMIC_RELAXED) == 2, "the send was never refused");
    EXPECT(check(rx, 100, 1, p, n), "take one");
    pthread_join(th, NULL);
    EXPECT(sa.st == TC_OK, "a send waiting for room: %s", sa.st == TC_OK ? "" : "failed");
    for (uint64_t sid = 101; sid < 105; sid++) EXPECT(check(rx, sid, 1, p, n), "message %llu", (unsigned long long)sid);

    /* a frame cut short gives its room back (polled: its reader sees the
     * close in its own time) */
    int fd = raw_connect(rx->address(rx));
    uint32_t hdr[8] = {0x50444354u, 1};
    uint64_t *h64 = (uint64_t *)(void *)&hdr[2];
    h64[0] = 300, h64[1] = 1, h64[2] = n;
    EXPECT(fd >= 0 && write(fd, hdr, 32) == 32 && write(fd, p, 10) == 10, "raw cut frame");
    close(fd);
    const double end = now_s() + 20.0;
    for (uint64_t sid = 310; sid < 314; sid++) {
        tc_status st;
        while ((st = tx->send(tx, sid, 1, p, n, 10)) == TC_ERR_EXHAUSTED && now_s() < end) {
            const struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
        EXPECT(st == TC_OK, "send %llu after a cut frame: %s", (unsigned long long)sid, tc_error_get());
    }
    tx->free(tx), rx->free(rx);

    /* the count: empty frames for sessions nobody opened */
    EXPECT(tc_transport_host_open(&rx, "127.0.0.1:0", 1 << 16, 0) == TC_OK, "open rx");
    EXPECT(tc_transport_host_open(&tx, "", 1 << 16, 0) == TC_OK && tx->connect(tx, rx->address(rx)) == TC_OK, "open tx");
    int ok = 0;
    for (uint64_t sid = 1; sid <= 4096; sid++) ok += tx->send(tx, sid, 1, "", 0, 10) == TC_OK;
    EXPECT(ok == 4096, "%d of 4096 empty frames", ok);
    EXPECT(tx->send(tx, 5000, 1, "", 0, 0.3) == TC_ERR_EXHAUSTED, "frame 4097 accepted: %s", tc_error_get());
    rx->drop(rx, 7);
    EXPECT(tx->send(tx, 5000, 1, "", 0, 10) == TC_OK, "room after a drop: %s", tc_error_get());
    tx->free(tx), rx->free(rx);
    free(p);
}

/* 64 connections (the table's size) idle or stalled inside a frame
 * header: the context peer still gets in, the least recently active goes */
static void test_full_table(void) {
    tc_transport *rx, *tx;
    EXPECT(tc_transport_host_open(&rx, "127.0.0.1:0", 1 << 20, 0) == TC_OK, "open rx");
    int raw[64];
    for (int i = 0; i < 64; i++) {
        raw[i] = raw_connect(rx->address(rx)); /* accepted in this order (the listen queue) */
        EXPECT(raw[i] >= 0, "raw connect %d", i);
        if (i % 2 && raw[i] >= 0) EXPECT(write(raw[i], "T", 1) == 1, "trickle"); /* a header begun */
    }
    EXPECT(tc_transport_host_open(&tx, "", 1 << 20, 0) == TC_OK && tx->connect(tx, rx->address(rx)) == TC_OK, "open tx");
    EXPECT(tx->send(tx, 1, 1, "live", 4, 10) == TC_OK, "send with the table full: %s", tc_error_get());
    EXPECT(check(rx, 1, 1, (const uint8_t *)"live", 4), "message with the table full");
    char c;
    EXPECT(raw[0] >= 0 && readable(raw[0], 20.0) && read(raw[0], &c, 1) <= 0, "the oldest idle connection is open");
    for (int i = 0; i < 64; i++)
        if (raw[i] >= 0) close(raw[i]);
    tx->free(tx), rx->free(rx);
}

/* a peer that takes the frame and never acks: the send fails after its one
 * deadline, without a redial that would wait it again */
static void test_one_deadline(void) {
    char paddr[64];
    const int lfd = raw_listen(paddr, sizeof paddr); /* the kernel accepts; nobody reads */
    tc_transport *tx;
    EXPECT(lfd >= 0 && tc_transport_host_open(&tx, "", 1 << 20, 0) == TC_OK && tx->connect(tx, paddr) == TC_OK, "open");
    EXPECT(tx->send(tx, 1, 1, "x", 1, 0.5) == TC_ERR_IO, "send to a silent peer: %s", tc_error_get());
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    int conns = 0, fd;
    while ((fd = accept(lfd, NULL, NULL)) >= 0) conns++, close(fd);
    EXPECT(conns == 1, "%d connections for one send past its deadline (a redial waits again)", conns);
    EXPECT(tx->connect(tx, "127.0.0.1:0") == TC_ERR_INVALID, "peer port 0 accepted");
    tx->free(tx);
    close(lfd);
}

static int check(tc_transport *rx, uint64_t sid, uint64_t seq, const uint8_t *want, size_t n) {
    void *b = NULL;
    size_t l = 0;
    if (rx->recv(rx, sid, seq, &b, &l, 10.0) != TC_OK) return 0;
    int ok = l == n && (n == 0 || memcmp(b, want, n) == 0);
    free(b);
    return ok;
}

int main(void) {
    tc_transport *rx, *tx;
    EXPECT(tc_transport_host_open(&rx, "127.0.0.1:0", 1 << 24, 0) == TC_OK, "open rx: %s", tc_error_get());
    EXPECT(tc_transport_host_open(&tx, "", 1 << 24, 0) == TC_OK, "open tx");
    if (g_fail) return 1;
    const char *addr = rx->address(rx);
    EXPECT(strncmp(addr, "127.0.0.1:", 10) == 0 && atoi(addr + 10) > 0, "address %s", addr);
    EXPECT(tx->send(tx, 1, 1, "x", 1, 1.0) == TC_ERR_IO, "send without a peer accepted (or not I/O: retried once linked)");
    EXPECT(tx->connect(tx, "nonsense") == TC_ERR_INVALID, "bad peer address accepted");
    EXPECT(tx->connect(tx, addr) == TC_OK, "connect");

    size_t big = 5u << 20;
    uint8_t *a = malloc(big), *b2 = malloc(1000);
    for (size_t i = 0; i < big; i++) a[i] = (uint8_t)(i * 131 + 7);
    for (int i = 0; i < 1000; i++) b2[i] = (uint8_t)(255 - i);
    EXPECT(tx->send(tx, 7, 1, a, big, 10) == TC_OK, "send big");
    EXPECT(tx->send(tx, 8, 3, b2, 1000, 10) == TC_OK, "send small");
    EXPECT(tx->send(tx, 9, 1, "", 0, 10) == TC_OK, "send empty");
    /* asked for in another order than sent */
    EXPECT(check(rx, 9, 1, NULL, 0), "empty message");
    EXPECT(check(rx, 8, 3, b2, 1000), "small message");
    EXPECT(check(rx, 7, 1, a, big), "big message");
    EXPECT(tx->bytes_sent == big + 1000 && tx->messages_sent == 3, "sent counters %llu", (unsigned long long)tx->bytes_sent);

    /* a newer message supersedes an older one of the same session */
    EXPECT(tx->send(tx, 5, 1, "old", 3, 10) == TC_OK && tx->send(tx, 5, 2, "new", 3, 10) == TC_OK, "send 5");
    EXPECT(check(rx, 5, 2, (const uint8_t *)"new", 3), "newest");
    void *x;
    size_t xl;
    EXPECT(rx->recv(rx, 5, 1, &x, &xl, 0.2) == TC_ERR_IO, "superseded message still delivered");
    /* drop forgets a session */
    EXPECT(tx->send(tx, 6, 1, "abc", 3, 10) == TC_OK, "send 6");
    EXPECT(tx->send(tx, 4, 1, "sync", 4, 10) == TC_OK, "send 4"); /* after 6 on the same connection */
    EXPECT(check(rx, 4, 1, (const uint8_t *)"sync", 4), "message 4");
    rx->drop(rx, 6);
    EXPECT(rx->recv(rx, 6, 1, &x, &xl, 0.2) == TC_ERR_IO, "dropped session's message delivered");

    /* raw peers: a bad header and an oversized frame are refused */
    char host[64];
    int port;
    EXPECT(tc_addr_split(addr, host, sizeof host, &port) == TC_OK, "split");
    for (int k = 0; k < 2; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        EXPECT(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "raw connect");
        uint32_t hdr[8] = {k == 0 ? 0xdeadbeefu : 0x50444354u, 1};
        uint64_t *h64 = (uint64_t *)(void *)&hdr[2];
        h64[0] = 77, h64[1] = 1, h64[2] = k == 0 ? 3 : (1ull << 40);
        EXPECT(write(fd, hdr, 32) == 32, "raw write");
        if (k == 1) { /* oversized: the refusal first, so the sender says why and does not retry */
            uint64_t ack = 0;
            EXPECT(read(fd, &ack, 8) == 8 && ack == UINT64_MAX, "no refusal for an oversized frame (got %llx)",
                   (unsigned long long)ack);
        }
        char c;
        errno = 0;
        const ssize_t r = read(fd, &c, 1); /* closed: EOF, or (a refusal) a reset */
        EXPECT(r == 0 || (k == 1 && r < 0 && errno == ECONNRESET), "connection not closed after a bad frame %d", k);
        close(fd);
    }
    EXPECT(rx->recv(rx, 77, 1, &x, &xl, 0.2) == TC_ERR_IO, "bad frame delivered");

    /* a state over the limit: the sender's own (the peers share the
     * setting) and, when they differ, the receiver's refusal -- both
     * TC_ERR_EXHAUSTED naming the flag, not an I/O error to retry */
    {
        tc_transport *small_rx, *small_tx;
        EXPECT(tc_transport_host_open(&small_rx, "127.0.0.1:0", 64, 0) == TC_OK, "open small rx");
        EXPECT(tc_transport_host_open(&small_tx, "", 64, 0) == TC_OK, "open small tx");
        EXPECT(small_tx->connect(small_tx, small_rx->address(small_rx)) == TC_OK, "connect small");
        EXPECT(small_tx->send(small_tx, 1, 1, b2, 65, 10) == TC_ERR_EXHAUSTED &&
                   strstr(tc_error_get(), "--max-message-bytes"),
               "own limit: %s", tc_error_get());
        EXPECT(tx->connect(tx, small_rx->address(small_rx)) == TC_OK, "connect to the small peer");
        EXPECT(tx->send(tx, 2, 1, b2, 1000, 10) == TC_ERR_EXHAUSTED && strstr(tc_error_get(), "refused"),
               "the peer's refusal: %s", tc_error_get());
        EXPECT(tx->send(tx, 3, 1, b2, 64, 10) == TC_OK, "a state at the limit after a refusal: %s", tc_error_get());
        EXPECT(check(small_rx, 3, 1, b2, 64), "the state at the limit");
        EXPECT(tx->connect(tx, addr) == TC_OK, "connect back");
        small_tx->free(small_tx), small_rx->free(small_rx);
    }

    test_close();
    test_mailbox_bounds();
    test_full_table();
    test_one_deadline();

    /* the receiver restarts on the same port: the sender redials */
    rx->free(rx);
    char again[80];
    snprintf(again, sizeof again, "127.0.0.1:%d", port);
    EXPECT(tc_transport_host_open(&rx, again, 1 << 24, 0) == TC_OK, "reopen rx on %s: %s", again, tc_error_get());
    if (rx) {
        tc_status st = tx->send(tx, 3, 1, "hello", 5, 10);
        EXPECT(st == TC_OK, "send after receiver restart: %s", tc_error_get());
        EXPECT(check(rx, 3, 1, (const uint8_t *)"hello", 5), "message after restart");
        rx->free(rx);
    }
    tx->free(tx);
    free(a), free(b2);
    printf(g_fail ? "transport: %d failures\n" : "transport: all checks passed\n", g_fail);
    return g_fail ? 1 : 0;
}
