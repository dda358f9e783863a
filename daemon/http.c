/* http.c — /metrics, /healthz, /readyz on libmicrohttpd. We bind the
 * listening socket ourselves (so the address is honoured exactly and bind
 * errors are ours to word) and hand it to MHD, which runs its own polling
 * thread. No request body is ever read. */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/hostport.h"
#include "common/log.h"
#include "daemon/metrics.h"

/* Probes must get through whatever else connects: idle sockets held open
 * by one peer (64 of them once blocked /healthz until they timed out, and
 * a liveness probe failing restarts the pod) are capped per address, the
 * total is high, and an idle connection is dropped after 3 s (a scrape
 * or a probe is one request answered at once). */
#define TC_HTTP_MAX_CONNECTIONS 1024u
#define TC_HTTP_MAX_PER_IP 16u
#define TC_HTTP_TIMEOUT_S 3u

struct tc_http_server {
    struct MHD_Daemon *mhd;
    tc_http_hooks hooks;
    int port;
};

/* ---- address --------------------------------------------------------- */

/* "host:port" / "[v6]:port" -> host (may be "") and port text; *literal
 * is set for the bracketed form, which must not go to DNS. */
/* HOST:PORT through the common parser (common/hostport.h), its error
 * prefixed with what the address is for */
static tc_status split_addr(const char *what, const char *addr, char *host, size_t hcap, char *port, size_t pcap,
                            int *literal) {
    if (tc_hostport_split(addr, host, hcap, port, pcap, literal) == TC_OK) return TC_OK;
    char msg[600];
    snprintf(msg, sizeof msg, "%s", tc_error_get());
    return TC_FAIL(TC_ERR_INVALID, "%s listen %s", what, msg);
}

static const char *bind_reason(int e) {
    switch (e) {
    case EADDRINUSE: return "port already in use";
    case EADDRNOTAVAIL: return "address not available on this host";
    case EACCES: return "permission denied (ports below 1024 need privileges)";
    default: return strerror(e);
    }
}

tc_status tc_http_bind(const char *what, const char *listen_addr, int *fd_out, int *port_out) {
    char host[256], port[8];
    int literal = 0;
    TC_CHECK(split_addr(what, listen_addr, host, sizeof host, port, sizeof port, &literal));

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | (literal ? AI_NUMERICHOST : 0);
    if (literal) hints.ai_family = AF_INET6;
    int rc = getaddrinfo(*host ? host : "0.0.0.0", port, &hints, &res);
    if (rc != 0)
        return TC_FAIL(TC_ERR_INVALID, "%s listen address \"%s\": cannot resolve \"%s\": %s", what, listen_addr, host,
                       gai_strerror(rc));

    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { if (!err) err = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* restart while TIME_WAIT lingers */
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) break;
        if (!err) err = errno; /* the first address's reason is the one people expect */
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return TC_FAIL(TC_ERR_IO, "%s listen address \"%s\": cannot listen: %s", what, listen_addr, bind_reason(err));

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        int e = errno;
        close(fd);
        return TC_FAIL(TC_ERR_IO, "%s listen address \"%s\": getsockname: %s", what, listen_addr, strerror(e));
    }
    *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return TC_OK;
}

/* ---- requests -------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *body) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static int hook(int (*fn)(void *), void *ud) { return fn ? fn(ud) == 1 : 1; }

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    tc_http_server *s = cls;
    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    if (strcmp(url, "/metrics") == 0) {
        if (!is_get) return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        char *text = tc_metrics_render();
        if (!text) return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r) { free(text); return MHD_NO; }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/healthz") == 0) {
        if (!is_get) return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        return hook(s->hooks.alive, s->hooks.ud) ? reply(c, MHD_HTTP_OK, "ok\n")
                                                 : reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not alive\n");
    }
    if (strcmp(url, "/readyz") == 0) {
        if (!is_get) return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        return hook(s->hooks.ready, s->hooks.ud) ? reply(c, MHD_HTTP_OK, "ready\n")
                                                 : reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n");
    }
    if (!is_get) return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    return reply(c, MHD_HTTP_NOT_FOUND, "not found (try /metrics, /healthz, /readyz)\n");
}

void tc_http_mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    TC_LOG(TC_LOG_WARN, cls ? (const char *)cls : "http", "libmicrohttpd: %s", msg);
}

/* ---- lifecycle ------------------------------------------------------- */

tc_status tc_http_start(tc_http_server **out, const char *listen_addr, const tc_http_hooks *hooks) {
    *out = NULL;
    tc_http_server *s = calloc(1, sizeof *s);
    if (!s) return TC_FAIL(TC_ERR_NOMEM, "http: out of memory");
    if (hooks) s->hooks = *hooks;
    int fd = -1;
    tc_status st = tc_http_bind("http", listen_addr, &fd, &s->port);
    if (st != TC_OK) { free(s); return st; }

    s->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle,
                              s, MHD_OPTION_EXTERNAL_LOGGER, tc_http_mhd_log, (void *)"http", MHD_OPTION_LISTEN_SOCKET, fd,
                              MHD_OPTION_CONNECTION_LIMIT, TC_HTTP_MAX_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                              TC_HTTP_MAX_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT, TC_HTTP_TIMEOUT_S, MHD_OPTION_END);
    if (!s->mhd) {
        /* MHD may or may not have closed the socket on its failure path. */
        if (fcntl(fd, F_GETFD) != -1) close(fd);
        free(s);
        return TC_FAIL(TC_ERR_IO, "http listen address \"%s\": libmicrohttpd failed to start", listen_addr);
    }
    TC_LOG(TC_LOG_INFO, "http", "ops endpoint on %s (port %d): /metrics /healthz /readyz", listen_addr, s->port);
    *out = s;
    return TC_OK;
}

int tc_http_port(const tc_http_server *s) { return s ? s->port : 0; }

void tc_http_stop(tc_http_server *s) {
    if (!s) return;
    MHD_stop_daemon(s->mhd); /* joins the thread and closes the listening socket */
    free(s);
}
