/* mailbox.h — where a data-plane receiver keeps arrived messages until the
 * worker asks for them by (sid, seq) (mailbox.c). Used by both transports:
 * the host transport's reader threads and the NCCL transport's receiving
 * thread put; Import takes. A newer message of a session supersedes an
 * older one. */
#ifndef TC_WORKER_MAILBOX_H
#define TC_WORKER_MAILBOX_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

typedef struct tc_mailbox tc_mailbox;

tc_status tc_mailbox_new(tc_mailbox **out);
/* Takes ownership of buf (malloc'd). */
void tc_mailbox_put(tc_mailbox *m, uint64_t sid, uint64_t seq, void *buf, size_t len);
/* Waits up to timeout_s; *buf is the caller's to free. TC_ERR_IO when it
 * did not arrive (or the mailbox was closed). */
tc_status tc_mailbox_take(tc_mailbox *m, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s);
void tc_mailbox_drop(tc_mailbox *m, uint64_t sid);
/* Wakes every waiter; later takes fail at once. */
void tc_mailbox_close(tc_mailbox *m);
void tc_mailbox_free(tc_mailbox *m);

#endif
