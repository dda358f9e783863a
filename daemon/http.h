/* http.h — the ops HTTP endpoint of tconstd (libmicrohttpd, its own
 * polling thread):
 *
 *   GET /metrics  200, tc_metrics_render(), text/plain; version=0.0.4
 *   GET /healthz  200 "ok" while hooks->alive says 1, else 503 "not alive"
 *   GET /readyz   200 "ready" while hooks->ready says 1, else 503 "not ready"
 *   other paths   404;  methods other than GET and HEAD  405 (Allow: GET, HEAD)
 *
 * Hooks are called from the HTTP thread, so they must be thread-safe and
 * quick (read an atomic flag). A NULL hooks pointer or a NULL hook counts
 * as 1. This is not the public API (that is gRPC) and serves nothing
 * else: no TLS, no auth — bind it to a private address. */
#ifndef TC_HTTP_H
#define TC_HTTP_H

#include "common/status.h"

typedef struct {
    int (*ready)(void *ud); /* 1 = ready for new requests */
    int (*alive)(void *ud); /* 1 = live (not wedged)      */
    void *ud;
} tc_http_hooks;

typedef struct tc_http_server tc_http_server;

/* listen_addr: "HOST:PORT" or "[IPV6]:PORT"; HOST is an address or a name
 * ("localhost"), empty ("" before ':') means all IPv4 interfaces; PORT 0
 * picks a free port (see tc_http_port). hooks is copied.
 * TC_ERR_INVALID when the address does not parse or resolve, TC_ERR_IO
 * when it cannot be bound (in use, not permitted, not local); the message
 * names the address. */
tc_status tc_http_start(tc_http_server **out, const char *listen_addr, const tc_http_hooks *hooks);

/* The listening socket tc_http_start binds (also the OpenAI API's,
 * openai.h): non-blocking, close-on-exec, listening; *port_out its port.
 * Errors as tc_http_start's, prefixed "<what> listen address". */
tc_status tc_http_bind(const char *what, const char *listen_addr, int *fd_out, int *port_out);

/* libmicrohttpd's error log into ours (MHD_OPTION_EXTERNAL_LOGGER), cls
 * the subsystem's name */
#include <stdarg.h>
void tc_http_mhd_log(void *cls, const char *fmt, va_list ap);

/* The bound port. */
int tc_http_port(const tc_http_server *s);

/* Stops the thread, closes the socket, frees s. NULL is a no-op. */
void tc_http_stop(tc_http_server *s);

#endif
