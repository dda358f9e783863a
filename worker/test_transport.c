/* test_transport.c — the host data plane: messages arrive intact whatever
 * the order recv asks for them in; a newer message of a session supersedes
 * an older one; drop forgets a session; a frame over the size limit or
 * with a bad header closes the connection without delivering anything;
 * the sender redials a receiver that restarted. Label: unit. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "transport.h"

static int g_fail;
#include "../tests/expect.h"

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
    EXPECT(tc_transport_host_open(&rx, "127.0.0.1:0", 1 << 24) == TC_OK, "open rx: %s", tc_error_get());
    EXPECT(tc_transport_host_open(&tx, "", 1 << 24) == TC_OK, "open tx");
    if (g_fail) return 1;
    const char *addr = rx->address(rx);
    EXPECT(strncmp(addr, "127.0.0.1:", 10) == 0 && atoi(addr + 10) > 0, "address %s", addr);
    EXPECT(tx->send(tx, 1, 1, "x", 1, 1.0) == TC_ERR_INVALID, "send without a peer accepted");
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
        EXPECT(tc_transport_host_open(&small_rx, "127.0.0.1:0", 64) == TC_OK, "open small rx");
        EXPECT(tc_transport_host_open(&small_tx, "", 64) == TC_OK, "open small tx");
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

    /* the receiver restarts on the same port: the sender redials */
    rx->free(rx);
    char again[80];
    snprintf(again, sizeof again, "127.0.0.1:%d", port);
    EXPECT(tc_transport_host_open(&rx, again, 1 << 24) == TC_OK, "reopen rx on %s: %s", again, tc_error_get());
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
