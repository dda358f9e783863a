/* status.c — status strings and the per-thread last-error message. */
#include "status.h"
#include "log.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char tc_err_buf[1024];

const char *tc_status_str(tc_status s) {
    switch (s) {
    case TC_OK: return "ok";
    case TC_ERR_INVALID: return "invalid argument";
    case TC_ERR_IO: return "i/o error";
    case TC_ERR_NOMEM: return "out of memory";
    case TC_ERR_UNSUPPORTED: return "unsupported";
    case TC_ERR_INTERNAL: return "internal error";
    case TC_ERR_EXHAUSTED: return "resource exhausted";
    case TC_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

void tc_error_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tc_err_buf, sizeof tc_err_buf, fmt, ap);
    va_end(ap);
    /* one line: a message must never smuggle a newline into the log */
    for (char *p = tc_err_buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}

static _Thread_local tc_cancel_hook tc_cancel_cur;

tc_cancel_hook tc_cancel_arm(tc_cancel_fn fn, void *ud) {
    tc_cancel_hook prev = tc_cancel_cur;
    tc_cancel_cur = (tc_cancel_hook){fn, ud};
    return prev;
}
void tc_cancel_restore(tc_cancel_hook prev) { tc_cancel_cur = prev; }
int tc_cancel_armed(void) { return tc_cancel_cur.fn != NULL; }
int tc_cancelled(void) { return tc_cancel_cur.fn && tc_cancel_cur.fn(tc_cancel_cur.ud); }

const char *tc_error_get(void) { return tc_err_buf[0] ? tc_err_buf : NULL; }
void tc_error_clear(void) { tc_err_buf[0] = 0; }

void tc_check_trace(const char *file, int line, const char *expr, tc_status s) {
    TC_LOG(TC_LOG_DEBUG, "check", "%s:%d %s -> %s", file, line, expr, tc_status_str(s));
}
