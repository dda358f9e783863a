/* mailbox.h — where a data-plane receiver keeps arrived messages until the
 * worker asks for them by (sid, seq) (mailbox.c). Used by both transports:
 * the host transport's reader threads and the NCCL transport's receiving
 * thread put; Import takes. A newer (or the same) message of a session
 * supersedes an older one. Bounded: at most max_bytes of messages (those
 * being received count from their header on) and TC_MAILBOX_MAX_COUNT
 * messages; one nobody took for TC_MAILBOX_TTL_S is dropped (checked at
 * every reserve and take). */
#ifndef TC_WORKER_MAILBOX_H
#define TC_WORKER_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

#define TC_MAILBOX_MAX_COUNT 4096
#define TC_MAILBOX_TTL_S 300.0

typedef struct tc_mailbox tc_mailbox;

tc_status tc_mailbox_new(tc_mailbox **out, uint64_t max_bytes);
/* Before receiving a message's body: drops what (sid, seq) supersedes and
 * what expired, then holds len bytes of the bound for it. TC_ERR_EXHAUSTED
 * (the message says how full) when it does not fit; TC_ERR_IO when closed.
 * Every TC_OK is followed by exactly one put or unreserve of the same len. */
tc_status tc_mailbox_reserve(tc_mailbox *m, uint64_t sid, uint64_t seq, size_t len);
void tc_mailbox_unreserve(tc_mailbox *m, size_t len);
/* After a reserve of len: takes ownership of buf (malloc'd). */
void tc_mailbox_put(tc_mailbox *m, uint64_t sid, uint64_t seq, void *buf, size_t len);
/* Waits up to timeout_s; *buf is the caller's to free. TC_ERR_IO when it
 * did not arrive (or the mailbox was closed: at once). */
tc_status tc_mailbox_take(tc_mailbox *m, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s);
void tc_mailbox_drop(tc_mailbox *m, uint64_t sid);
/* Wakes every waiter with an error; later takes and reserves fail at once. */
void tc_mailbox_close(tc_mailbox *m);
void tc_mailbox_free(tc_mailbox *m);

#endif
