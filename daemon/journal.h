/* journal.h — the session journal: every non-ephemeral session's token
 * history in SQLite (WAL mode) under --data-dir, so sessions survive a
 * coordinator restart (they resume by re-syncing from their history).
 *
 * Written before any acknowledgement that depends on it, and only for what
 * the workers took: an Append is journaled after its prefill and before
 * its reply (a failed one leaves nothing), a request's prompt together with
 * its generation's record, a generated token before it is streamed.
 * synchronous=NORMAL: a commit survives the process being killed (kill -9);
 * an OS crash may lose the last commits. Thread-safe (one connection in
 * SQLite's serialized mode). A running generation's request id, sampling
 * parameters and starting length are recorded too, so after a crash the
 * same request (same request_id) resumes it exactly: the sampler's RNG
 * takes one draw per sampled token, so its state is the seed advanced by
 * the number of tokens journaled since the start.
 *
 * A close deletes a session's rows at once but its history in the
 * background (journal.c): closing a session of a million rows does not
 * hold the journal, or the engine's lock around it, while SQLite deletes
 * them. */
#ifndef TC_DAEMON_JOURNAL_H
#define TC_DAEMON_JOURNAL_H

#include <stdint.h>

#include "../common/status.h"
#include "../model/sampler.h"

typedef struct tc_journal tc_journal;


tc_status tc_journal_open(tc_journal **out, const char *data_dir);
void tc_journal_close(tc_journal *j);
/* Holds the journal (recursively; the calls below take it too) across a
 * check and a write: a session closed -- its rows deleted and it marked
 * not to be journaled -- under the hold is never written to by a job that
 * checked before, so its id can be opened again at once without an old
 * write landing in the new session's history. */
void tc_journal_lock(tc_journal *j);
void tc_journal_unlock(tc_journal *j);

tc_status tc_journal_session_open(tc_journal *j, const char *id, int64_t created_ms);
tc_status tc_journal_session_delete(tc_journal *j, const char *id);
/* Appends tokens to a session's history, in order. */
tc_status tc_journal_append(tc_journal *j, const char *id, const int32_t *tokens, int64_t n);
/* Several sessions' appends in one transaction (one commit: a batched
 * step's tokens); all or none. A session no longer journaled is skipped. */
typedef struct {
    const char *id;
    const int32_t *tokens;
    int64_t n;
} tc_journal_row;
tc_status tc_journal_append_rows(tc_journal *j, const tc_journal_row *rows, int n);

/* Calls visit once per journaled session with its whole history (tokens
 * valid during the call). */
typedef tc_status (*tc_journal_visit)(void *ud, const char *id, int64_t created_ms, const int32_t *tokens, int64_t n);
tc_status tc_journal_load(tc_journal *j, tc_journal_visit visit, void *ud);

/* The running generation of a session (at most one). */
typedef struct {
    char request_id[64];
    int64_t start_len; /* session length when its first token was sampled */
    tc_sampling_params sp;
    int max_tokens, ignore_eos;
} tc_journal_gen;
tc_status tc_journal_gen_begin(tc_journal *j, const char *id, const tc_journal_gen *g);
/* A session's first write, in one transaction: its row (created_ms >= 0;
 * -1: it exists), its first n tokens, and a generation's record (g, or
 * NULL). A session is journaled only from here -- once its workers took
 * its prompt -- so a crash during that prefill leaves no empty session
 * behind that its client never heard of. */
tc_status tc_journal_create(tc_journal *j, const char *id, int64_t created_ms, const int32_t *tokens, int64_t n,
                            const tc_journal_gen *g);
/* A request's prompt tokens (n may be 0) and its generation, in one
 * transaction: a crash leaves both or neither, so the same request_id
 * either resumes or starts over, never appends its prompt twice. */
tc_status tc_journal_append_gen(tc_journal *j, const char *id, const int32_t *tokens, int64_t n,
                                const tc_journal_gen *g);
/* Waits until the journal's thread has nothing left to do (the history
 * of closed sessions deleted), and says how many history rows it deleted
 * since the open (tests, benchmarks). */
void tc_journal_settle(tc_journal *j, int64_t *purged_rows);
tc_status tc_journal_gen_end(tc_journal *j, const char *id);
typedef tc_status (*tc_journal_gen_visit)(void *ud, const char *id, const tc_journal_gen *g);
tc_status tc_journal_load_gens(tc_journal *j, tc_journal_gen_visit visit, void *ud);

#endif
