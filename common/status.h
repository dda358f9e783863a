/* status.h — tc_status codes and the TC_CHECK / TC_ASSERT macros.
 *
 * Every fallible internal function returns tc_status. TC_CHECK logs
 * "file:line -> code" and returns, so a failure reads as a backtrace in the
 * log (the NCCLCHECK habit). TC_ASSERT is for bugs only, never for input
 * validation: bad input gets a tc_status and a message naming the problem. */
#ifndef TC_STATUS_H
#define TC_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum {
    TC_OK = 0,
    TC_ERR_INVALID = 1,   /* bad input: file, flag, request            */
    TC_ERR_IO = 2,        /* open/read/write/mmap failed                */
    TC_ERR_NOMEM = 3,     /* allocation failed                          */
    TC_ERR_UNSUPPORTED = 4,
    TC_ERR_INTERNAL = 5,  /* a bug or a poisoned device                 */
    TC_ERR_EXHAUSTED = 6, /* a configured limit was reached             */
    TC_ERR_CANCELLED = 7, /* the caller gave up (tc_cancelled() below)  */
} tc_status;

const char *tc_status_str(tc_status s);

/* The outcome of one row of a batched call (a session of a batched step)
 * that can fail a row without failing the rest: its code and message. */
typedef struct {
    tc_status st;
    char msg[240];
} tc_row_status;

/* Last error message of this thread: set by tc_error_set where the error
 * is detected, read by the outermost caller (CLI prints it on one line). */
void tc_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *tc_error_get(void);
void tc_error_clear(void);

/* Cancellation of long computations (a prefill's sync, a baseline
 * prompt): the thread that starts one arms a predicate, the computation
 * asks tc_cancelled() between its tiles and layers and returns
 * TC_ERR_CANCELLED once it says yes. Per thread, so a compute thread's
 * predicate never stops another thread's work. tc_cancel_arm returns the
 * previous one, for tc_cancel_restore. */
typedef int (*tc_cancel_fn)(void *ud);
typedef struct {
    tc_cancel_fn fn;
    void *ud;
} tc_cancel_hook;
tc_cancel_hook tc_cancel_arm(tc_cancel_fn fn, void *ud);
void tc_cancel_restore(tc_cancel_hook prev);
int tc_cancelled(void);
/* A predicate is armed on this thread (else tc_cancelled() is always 0). */
int tc_cancel_armed(void);

/* Set the message and return the code: `return TC_FAIL(TC_ERR_INVALID, "..." )`. */
#define TC_FAIL(code, ...) (tc_error_set(__VA_ARGS__), (code))

void tc_check_trace(const char *file, int line, const char *expr, tc_status s);

#define TC_CHECK(call)                                                        \
    do {                                                                      \
        tc_status tc_check_s_ = (call);                                       \
        if (tc_check_s_ != TC_OK) {                                           \
            tc_check_trace(__FILE__, __LINE__, #call, tc_check_s_);           \
            return tc_check_s_;                                               \
        }                                                                     \
    } while (0)

/* Variant for functions with a `fail:` cleanup label and a `st` variable. */
#define TC_CHECK_GOTO(call)                                                   \
    do {                                                                      \
        st = (call);                                                          \
        if (st != TC_OK) {                                                    \
            tc_check_trace(__FILE__, __LINE__, #call, st);                    \
            goto fail;                                                        \
        }                                                                     \
    } while (0)

#define TC_ASSERT(cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: assertion failed: %s: ", __FILE__,        \
                    __LINE__, #cond);                                         \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
            abort();                                                          \
        }                                                                     \
    } while (0)

#endif
