/* transport.h — the data plane between a context worker and its
 * generation peer (DESIGN.md §4): whole messages (a session's state after
 * a sync or a prefill) tagged (sid, seq). One interface, two transports:
 *
 *   host  TCP between processes (CPU workers, tests); the receiver keeps
 *         arrived messages in a mailbox until recv asks for them, so the
 *         order of posting does not matter.
 *   nccl  ncclSend/ncclRecv between two ranks of one communicator
 *         (transport_nccl.c, built when NCCL is present). NCCL calls must
 *         match in order on both sides: the coordinator issues each Sync on
 *         the context worker and the Import on the generation worker in the
 *         same order, one at a time per pair.
 *
 * Not here: what a message means (model/state.c), when to send (the
 * coordinator). */
#ifndef TC_WORKER_TRANSPORT_H
#define TC_WORKER_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

typedef struct tc_transport tc_transport;
struct tc_transport {
    const char *kind;
    /* sender: where the peer receives (host: "host:port") */
    tc_status (*connect)(tc_transport *t, const char *peer);
    /* waits at most timeout_s in all (dial, write, the receiver's ack, one
     * redial of a peer that restarted) */
    tc_status (*send)(tc_transport *t, uint64_t sid, uint64_t seq, const void *buf, size_t len, double timeout_s);
    /* receiver: waits up to timeout_s for (sid, seq); *buf is malloc'd */
    tc_status (*recv)(tc_transport *t, uint64_t sid, uint64_t seq, void **buf, size_t *len, double timeout_s);
    /* receiver: forget what arrived for sid (the session closed) */
    void (*drop)(tc_transport *t, uint64_t sid);
    /* where peers connect ("" when not listening) */
    const char *(*address)(const tc_transport *t);
    /* stops the data plane, from any thread, without waiting for anything:
     * a recv or send in progress fails promptly (TC_ERR_IO, "closing"),
     * later ones at once. For a stop (SIGTERM) before joining the threads
     * that may be blocked in them; free still follows. Idempotent. */
    void (*close)(tc_transport *t);
    void (*free)(tc_transport *t);
    /* counters */
    uint64_t bytes_sent, bytes_received, messages_sent;
    double send_s;
    /* sends that found the receiver's mailbox full and waited for room
     * (host transport; atomic: a reader may poll it while a send runs) */
    uint64_t full_waits;
};

/* Host transport listening on listen_addr ("host:port"; port 0 picks
 * one). max_message bounds what a peer may send (a larger frame is refused:
 * the sender fails with TC_ERR_EXHAUSTED). max_buffered bounds the bytes
 * arrived and not yet taken by recv, over all sessions (0: 4 x
 * max_message); a frame that does not fit is refused the same way. */
tc_status tc_transport_host_open(tc_transport **out, const char *listen_addr, uint64_t max_message,
                                 uint64_t max_buffered);

#ifdef TC_HAVE_NCCL
/* NCCL transport: rank 0 sends (context), rank 1 receives (generation).
 * id: the 128-byte ncclUniqueId created by rank 0 (tc_transport_nccl_id).
 * tc_transport_nccl_id hands out the same id until an open of rank 0 uses
 * it (ncclGetUniqueId starts a bootstrap thread and socket that live until
 * the ranks join: one per Info would leak them). */
tc_status tc_transport_nccl_id(uint8_t id[128]);
/* The process's limits for the transports opened after it (main, at
 * start): a message over max_message is refused by the sender and stops
 * the receiver; received messages not yet taken are bounded by 4 x
 * max_message. Default 256 MiB. */
void tc_transport_nccl_limits(uint64_t max_message);
/* Joins the communicator as rank on cuda:device; fails (TC_ERR_IO) when
 * the peer has not joined within timeout_s (over an hour, INFINITY
 * included: 120 s; <= 0: at once), the half-made communicator aborted. */
tc_status tc_transport_nccl_open(tc_transport **out, const uint8_t id[128], int rank, int device, double timeout_s);
#endif

/* Splits "host:port" (IPv4 name or address; "[v6]:port" too). */
tc_status tc_addr_split(const char *addr, char *host, size_t hn, int *port);

#endif
