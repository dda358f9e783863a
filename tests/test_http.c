/* test_http.c — the ops HTTP endpoint over a real socket: /metrics,
 * /healthz, /readyz with hooks flipping, 404, 405, HEAD, IPv6, port in use
 * and bad listen addresses. Label: unit. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "daemon/http.h"
#include "daemon/metrics.h"

static int g_fail = 0, g_n = 0;

#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        g_n++;                                                                                 \
        if (!(cond)) {                                                                         \
            g_fail++;                                                                          \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
        }                                                                                      \
    } while (0)

typedef struct {
    int status;
    char head[2048];
    char body[1 << 16];
} response;

/* One request on a fresh connection (Connection: close); returns 0 on a
 * parsed response, -1 on a transport error. */
static int request(int v6, int port, const char *method, const char *path, const char *body, response *r) {
    memset(r, 0, sizeof *r);
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    }
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0) { close(fd); return -1; }
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n", method, path);
    if (body) n += snprintf(req + n, sizeof req - (size_t)n, "Content-Length: %zu\r\n", strlen(body));
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n%s", body ? body : "");
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) { close(fd); return -1; }

    static char buf[sizeof r->head + sizeof r->body];
    size_t len = 0;
    for (ssize_t k; len < sizeof buf - 1 && (k = recv(fd, buf + len, sizeof buf - 1 - len, 0)) > 0;) len += (size_t)k;
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) return -1;
    size_t hl = (size_t)(sep - buf);
    if (hl >= sizeof r->head) hl = sizeof r->head - 1;
    memcpy(r->head, buf, hl);
    snprintf(r->body, sizeof r->body, "%s", sep + 4);
    return 0;
}

static int has_header(const response *r, const char *h) {
    for (const char *p = r->head; *p; p++)
        if (strncasecmp(p, h, strlen(h)) == 0) return 1;
    return 0;
}

static atomic_int g_ready, g_alive;
static int ready_hook(void *ud) { return atomic_load((atomic_int *)ud); }
static int alive_hook(void *ud) { (void)ud; return atomic_load(&g_alive); }

static void test_endpoints(void) {
    tc_http_hooks hooks = {ready_hook, alive_hook, &g_ready};
    tc_http_server *s = NULL;
    atomic_store(&g_ready, 0);
    atomic_store(&g_alive, 1);
    tc_status st = tc_http_start(&s, "127.0.0.1:0", &hooks);
    EXPECT(st == TC_OK && s, "start: %s", tc_error_get());
    if (!s) return;
    int port = tc_http_port(s);
    EXPECT(port > 0 && port < 65536, "port %d", port);
    printf("ok   listening on 127.0.0.1:%d\n", port);
    response r;

    tc_metrics_reset();
    tc_metric_inc(TC_M_steps_total, 7);
    tc_metric_observe(TC_H_sync_duration_seconds, 0.3);
    EXPECT(request(0, port, "GET", "/metrics", NULL, &r) == 0 && r.status == 200, "/metrics status %d", r.status);
    EXPECT(has_header(&r, "Content-Type: text/plain; version=0.0.4"), "content type:\n%s", r.head);
    EXPECT(strstr(r.body, "# TYPE tconst_steps_total counter\ntconst_steps_total 7\n"), "metrics body");
    EXPECT(strstr(r.body, "tconst_sync_duration_seconds_count 1\n"), "histogram in body");
    EXPECT(request(0, port, "GET", "/metrics?name=x", NULL, &r) == 0 && r.status == 200, "query string ignored");

    EXPECT(request(0, port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200 && strncmp(r.body, "ok", 2) == 0,
           "/healthz alive: %d %s", r.status, r.body);
    atomic_store(&g_alive, 0);
    EXPECT(request(0, port, "GET", "/healthz", NULL, &r) == 0 && r.status == 503, "/healthz not alive: %d", r.status);
    atomic_store(&g_alive, 1);

    EXPECT(request(0, port, "GET", "/readyz", NULL, &r) == 0 && r.status == 503 &&
               strncmp(r.body, "not ready", 9) == 0,
           "/readyz before ready: %d %s", r.status, r.body);
    atomic_store(&g_ready, 1);
    EXPECT(request(0, port, "GET", "/readyz", NULL, &r) == 0 && r.status == 200 && strncmp(r.body, "ready", 5) == 0,
           "/readyz ready: %d %s", r.status, r.body);
    atomic_store(&g_ready, 0);
    EXPECT(request(0, port, "GET", "/readyz", NULL, &r) == 0 && r.status == 503, "/readyz flips back: %d", r.status);
    printf("ok   metrics, healthz, readyz (503 -> 200 -> 503)\n");

    EXPECT(request(0, port, "GET", "/", NULL, &r) == 0 && r.status == 404, "/ -> %d", r.status);
    EXPECT(request(0, port, "GET", "/metrics/x", NULL, &r) == 0 && r.status == 404, "/metrics/x -> %d", r.status);
    EXPECT(request(0, port, "POST", "/metrics", NULL, &r) == 0 && r.status == 405, "POST -> %d", r.status);
    EXPECT(has_header(&r, "Allow: GET, HEAD"), "405 carries Allow:\n%s", r.head);
    EXPECT(request(0, port, "POST", "/readyz", "{\"x\": 1}", &r) == 0 && r.status == 405, "POST body -> %d",
           r.status);
    EXPECT(request(0, port, "DELETE", "/healthz", NULL, &r) == 0 && r.status == 405, "DELETE -> %d", r.status);
    EXPECT(request(0, port, "PUT", "/nowhere", "x", &r) == 0 && r.status == 405, "PUT elsewhere -> %d", r.status);
    EXPECT(request(0, port, "HEAD", "/healthz", NULL, &r) == 0 && r.status == 200 && r.body[0] == '\0',
           "HEAD -> %d body \"%s\"", r.status, r.body);
    printf("ok   404, 405, HEAD\n");

    /* the same port again: in use, named */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    tc_http_server *s2 = NULL;
    st = tc_http_start(&s2, addr, NULL);
    EXPECT(st == TC_ERR_IO && !s2, "second bind: %d", (int)st);
    EXPECT(strstr(tc_error_get(), addr) && strstr(tc_error_get(), "in use"), "message: %s", tc_error_get());
    printf("ok   port in use -> %s\n", tc_error_get());

    tc_http_stop(s);
    EXPECT(request(0, port, "GET", "/healthz", NULL, &r) != 0, "stopped server still answers");
    /* the port is free again right after stop */
    st = tc_http_start(&s2, addr, NULL);
    EXPECT(st == TC_OK, "restart on the same port: %s", tc_error_get());
    if (st == TC_OK) {
        EXPECT(request(0, port, "GET", "/readyz", NULL, &r) == 0 && r.status == 200, "NULL hooks are ready: %d",
               r.status);
        tc_http_stop(s2);
    }
    tc_http_stop(NULL);
}

static void test_ipv6(void) {
    tc_http_server *s = NULL;
    tc_status st = tc_http_start(&s, "[::1]:0", NULL);
    if (st != TC_OK) {
        printf("note IPv6 loopback unavailable here (%s); IPv6 case not run\n", tc_error_get());
        return;
    }
    response r;
    int port = tc_http_port(s);
    EXPECT(request(1, port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200, "IPv6 /healthz: %d", r.status);
    EXPECT(request(0, port, "GET", "/healthz", NULL, &r) != 0, "[::1] must not answer on 127.0.0.1");
    tc_http_stop(s);
    printf("ok   [::1]:%d\n", port);
}

static void test_bad_addresses(void) {
    static const struct { const char *addr, *needle; tc_status st; } cases[] = {
        {"", "empty", TC_ERR_INVALID},
        {"127.0.0.1", "no port", TC_ERR_INVALID},
        {"127.0.0.1:", "port", TC_ERR_INVALID},
        {"127.0.0.1:99999", "99999", TC_ERR_INVALID},
        {"127.0.0.1:-1", "-1", TC_ERR_INVALID},
        {"127.0.0.1:9180x", "9180x", TC_ERR_INVALID},
        {"::1:9180", "brackets", TC_ERR_INVALID},
        {"[::1:9180", "[IPV6]:PORT", TC_ERR_INVALID},
        {"[]:9180", "empty IPv6", TC_ERR_INVALID},
        {"[::1]9180", "[IPV6]:PORT", TC_ERR_INVALID},
        {"[zz::1]:9180", "zz::1", TC_ERR_INVALID},
        {"192.0.2.1:0", "not available", TC_ERR_IO}, /* TEST-NET-1: not ours to bind */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_http_server *s = (tc_http_server *)1;
        tc_status st = tc_http_start(&s, cases[i].addr, NULL);
        const char *m = tc_error_get();
        EXPECT(st == cases[i].st && s == NULL, "\"%s\": status %d", cases[i].addr, (int)st);
        EXPECT(strstr(m, cases[i].needle), "\"%s\": message \"%s\" lacks \"%s\"", cases[i].addr, m, cases[i].needle);
        if (*cases[i].addr) EXPECT(strstr(m, cases[i].addr), "\"%s\" not named in \"%s\"", cases[i].addr, m);
        printf("ok   bad address %-16s -> %s\n", cases[i].addr, m);
        if (st == TC_OK) tc_http_stop(s);
    }
}

int main(void) {
    test_endpoints();
    test_ipv6();
    test_bad_addresses();
    printf("%s: %d checks, %d failed\n", g_fail ? "FAIL" : "PASS", g_n, g_fail);
    return g_fail ? 1 : 0;
}
