/* journal.c — SQLite journal of session histories (see journal.h).
 *
 * Schema 2 (PRAGMA user_version 2):
 *   sessions(id TEXT PRIMARY KEY, created_ms, sk)  sk: the session's key,
 *            new for every session ever opened under any id (never reused)
 *   hist(sk, tokens BLOB of little-endian int32)   a session's history is
 *            the concatenation of its rows in rowid order
 *   gens(session, ...)                              a running generation
 * Schema 1 (chunks(session TEXT, tokens), no sk) is migrated at open.
 *
 * Closing a session deletes its sessions row (and gens row): two rows,
 * however long its history. Its hist rows are deleted after, by the
 * janitor thread, in batches of PURGE_BATCH rows each its own transaction,
 * so a close under the engine's lock no longer stalls every stream while
 * SQLite deletes a million rows. Rows whose key no session holds are
 * never read (a new session under the same id has a new key); those a
 * crash left behind are found and purged at the next open.
 *
 * A session's last row is its tail: a message of fewer than TAIL_TOKENS
 * tokens is added to the tail in place (an UPDATE of at most 1 KiB) while
 * the tail has room, else it starts a new row. A stream stepping one token
 * at a time writes a row every TAIL_TOKENS tokens, not every token: a
 * 1M-token history is ~4K rows, so its reload and its purge after a close
 * are quick and the file is ~4 B a token. Merging rows in the background
 * was tried first and taken out: a merge of a session's rows holds the
 * connection for milliseconds, and streams of one batch reach the
 * threshold together, so the merges came back to back and locked the
 * engine's writes out for up to seconds; growing the tail costs each
 * write the same small amount, in the write's own transaction. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/fault.h"
#include "../common/log.h"

#define SCHEMA_VERSION 2
#define PURGE_BATCH 512    /* hist rows a purge transaction deletes (~1 ms holding the connection) */
#define TAIL_TOKENS 256    /* a tail row grows in place up to this many tokens (1 KiB) */

/* the janitor's work: purge a dead key's rows */
typedef struct {
    int64_t sk;
} jitem;


struct tc_journal {
    int lock_fd; /* <data-dir>/LOCK, flock()ed for the process's life: one tconstd a directory */
    sqlite3 *db;
    sqlite3_stmt *ins_sess, *get_sk, *del_sess, *ins_chunk, *ins_gen, *del_gen, *purge, *get_tail, *grow_tail;
    _Atomic int64_t fault_deletes; /* tests: TC_FAULT_JOURNAL_DELETE_ERRORS, the session deletes still to fail */
    _Atomic int64_t fault_write_at; /* tests: TC_FAULT_JOURNAL_WRITE_FAIL_AT=K, the K-th prompt write fails (once) */
    int64_t next_sk;               /* under the db mutex */
    /* the janitor */
    pthread_t jt;
    int jt_on;
    pthread_mutex_t jm;
    pthread_cond_t jcv;
    jitem *q;
    size_t q_head, q_len, q_cap;
    int j_busy, j_stop;
    _Atomic int64_t purged_rows; /* for tests and the log */
};

static tc_status db_fail(tc_journal *j, const char *what) {
    return TC_FAIL(TC_ERR_IO, "journal: %s: %s", what, j->db ? sqlite3_errmsg(j->db) : "no database");
}

/* ---- the janitor ---- */

/* false when out of memory: the purge then waits for the next open */
static int jqueue(tc_journal *j, jitem it) {
    pthread_mutex_lock(&j->jm);
    int ok = 1;
    if (!j->jt_on) {
        ok = 0;
    } else {
        if (j->q_len == j->q_cap) {
            size_t nc = j->q_cap ? j->q_cap * 2 : 64;
            jitem *nq = malloc(nc * sizeof *nq);
            if (!nq) {
                ok = 0;
                goto out;
            }
            for (size_t i = 0; i < j->q_len; i++) nq[i] = j->q[(j->q_head + i) % j->q_cap];
            free(j->q);
            j->q = nq, j->q_cap = nc, j->q_head = 0;
        }
        j->q[(j->q_head + j->q_len) % j->q_cap] = it;
        j->q_len++;
        pthread_cond_broadcast(&j->jcv);
    }
out:
    pthread_mutex_unlock(&j->jm);
    return ok;
}

/* the dead key's rows, PURGE_BATCH at a time, the db mutex released between */
static void purge(tc_journal *j, int64_t sk) {
    for (;;) {
        sqlite3_mutex *mx = sqlite3_db_mutex(j->db);
        sqlite3_mutex_enter(mx);
        const double t0 = tc_now_s();
        sqlite3_bind_int64(j->purge, 1, sk);
        sqlite3_bind_int64(j->purge, 2, PURGE_BATCH);
        const int rc = sqlite3_step(j->purge);
        const int n = rc == SQLITE_DONE ? sqlite3_changes(j->db) : -1;
        if (n < 0)
            TC_LOG(TC_LOG_WARN, "journal", "deleting a closed session's history (key %lld): %s; it is tried again at the next start",
                   (long long)sk, sqlite3_errmsg(j->db));
        sqlite3_reset(j->purge);
        sqlite3_clear_bindings(j->purge);
        sqlite3_mutex_leave(mx);
        if (n > 0) atomic_fetch_add(&j->purged_rows, n);
        if (n < PURGE_BATCH) return;
        /* paced: as long again off the connection as the batch held it,
         * so the engine's writes (every stream's next tokens) always get
         * in between (the mutex is not fair); not at close, when nothing
         * else writes */
        if (__atomic_load_n(&j->j_stop, __ATOMIC_RELAXED)) continue;
        const double held = tc_now_s() - t0;
        struct timespec ts = {0, (long)(1e9 * (held < 0.01 ? held : 0.01))};
        nanosleep(&ts, NULL);
    }
}

static void *janitor_main(void *arg) {
    tc_journal *j = arg;
    pthread_mutex_lock(&j->jm);
    for (;;) {
        while (!j->q_len && !j->j_stop) pthread_cond_wait(&j->jcv, &j->jm);
        if (!j->q_len) break; /* stopping, nothing left */
        jitem it = j->q[j->q_head];
        j->q_head = (j->q_head + 1) % j->q_cap, j->q_len--;
        j->j_busy = 1;
        pthread_mutex_unlock(&j->jm);
        purge(j, it.sk);
        pthread_mutex_lock(&j->jm);
        j->j_busy = 0;
        pthread_cond_broadcast(&j->jcv);
    }
    pthread_mutex_unlock(&j->jm);
    return NULL;
}

void tc_journal_settle(tc_journal *j, int64_t *purged_rows) {
    pthread_mutex_lock(&j->jm);
    while (j->jt_on && (j->q_len || j->j_busy)) pthread_cond_wait(&j->jcv, &j->jm);
    pthread_mutex_unlock(&j->jm);
    if (purged_rows) *purged_rows = atomic_load(&j->purged_rows);
}

/* ---- open ---- */

static int has_table(tc_journal *j, const char *name) {
    sqlite3_stmt *q = NULL;
    int yes = 0;
    if (sqlite3_prepare_v2(j->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(q) == SQLITE_ROW;
    }
    sqlite3_finalize(q);
    return yes;
}

static int64_t one_int(tc_journal *j, const char *sql, int *ok) {
    sqlite3_stmt *q = NULL;
    int64_t v = 0;
    *ok = sqlite3_prepare_v2(j->db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW;
    if (*ok) v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* schema 1 (chunks keyed by the session's id) to 2, in one transaction */
static tc_status migrate_v1(tc_journal *j, const char *path) {
    char *err = NULL;
    sqlite3_stmt *q = NULL;
    const int has_sk = sqlite3_prepare_v2(j->db, "SELECT sk FROM sessions LIMIT 0", -1, &q, NULL) == SQLITE_OK;
    sqlite3_finalize(q);
    int ok = 1;
    const int64_t n = one_int(j, "SELECT count(*) FROM chunks", &ok);
    /* sessions without a key get new ones past every key in use (a journal
     * a schema-1 tconstd wrote to after a schema-2 one: its new sessions
     * have sk 0) */
    if (sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(j->db, "CREATE TABLE IF NOT EXISTS hist(sk INTEGER NOT NULL, tokens BLOB NOT NULL);", NULL, NULL,
                     &err) != SQLITE_OK ||
        (!has_sk && sqlite3_exec(j->db, "ALTER TABLE sessions ADD COLUMN sk INTEGER NOT NULL DEFAULT 0;", NULL, NULL,
                                 &err) != SQLITE_OK) ||
        sqlite3_exec(j->db,
                     "UPDATE sessions SET sk = rowid + (SELECT max(coalesce((SELECT max(sk) FROM sessions), 0),"
                     " coalesce((SELECT max(sk) FROM hist), 0))) WHERE sk <= 0;"
                     "INSERT INTO hist(sk, tokens) SELECT s.sk, c.tokens FROM chunks c JOIN sessions s"
                     " ON s.id = c.session ORDER BY c.rowid;"
                     "DROP TABLE chunks; PRAGMA user_version = 2; COMMIT;",
                     NULL, NULL, &err) != SQLITE_OK) {
        tc_status st = TC_FAIL(TC_ERR_IO, "journal %s: moving it to schema 2: %s", path, err ? err : sqlite3_errmsg(j->db));
        sqlite3_free(err);
        sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
        return st;
    }
    TC_LOG(TC_LOG_INFO, "journal", "%s: moved from schema 1 to 2 (%lld history rows)", path, (long long)n);
    return TC_OK;
}

tc_status tc_journal_open(tc_journal **out, const char *data_dir) {
    tc_journal *j = calloc(1, sizeof *j);
    if (!j) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    j->lock_fd = -1;
    pthread_mutex_init(&j->jm, NULL);
    pthread_cond_init(&j->jcv, NULL);
    char path[4200];
    tc_status st = TC_OK;
    int64_t fd = 0; /* tests: the first N session deletes fail (tests/e2e/test_journal_full.py) */
    if ((st = tc_fault_env_count("TC_FAULT_JOURNAL_DELETE_ERRORS", 1000000, &fd)) != TC_OK) goto fail;
    j->fault_deletes = fd;
    if ((st = tc_fault_env_count("TC_FAULT_JOURNAL_WRITE_FAIL_AT", 1000000, &fd)) != TC_OK) goto fail;
    j->fault_write_at = fd;
    /* two daemons on one journal would merge their sessions under the same
     * ids and expire each other's: the second is refused */
    snprintf(path, sizeof path, "%s/LOCK", data_dir);
    j->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (j->lock_fd < 0) {
        st = TC_FAIL(TC_ERR_IO, "--data-dir %s: cannot open %s: %s", data_dir, path, strerror(errno));
        goto fail;
    }
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        st = TC_FAIL(TC_ERR_INVALID, "--data-dir %s: in use by another tconstd (it holds %s)", data_dir, path);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/journal.db", data_dir);
    if (sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        st = TC_FAIL(TC_ERR_IO, "journal %s: %s", path, j->db ? sqlite3_errmsg(j->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(j->db, 5000);
    char *err = NULL;
    if (sqlite3_exec(j->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, &err) != SQLITE_OK) {
        st = TC_FAIL(TC_ERR_IO, "journal %s: %s (is it a tconst journal?)", path, err ? err : "pragmas");
        sqlite3_free(err);
        goto fail;
    }
    int ok = 1;
    const int64_t version = one_int(j, "PRAGMA user_version", &ok);
    if (!ok) {
        st = TC_FAIL(TC_ERR_IO, "journal %s: %s (is it a tconst journal?)", path, sqlite3_errmsg(j->db));
        goto fail;
    }
    if (version > SCHEMA_VERSION) {
        st = TC_FAIL(TC_ERR_INVALID, "journal %s: schema %lld, written by a newer tconstd (this one reads up to %d)", path,
                     (long long)version, SCHEMA_VERSION);
        goto fail;
    }
    if (has_table(j, "chunks") && (st = migrate_v1(j, path)) != TC_OK) goto fail;
    if (sqlite3_exec(j->db,
                     "CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL,"
                     " sk INTEGER NOT NULL DEFAULT 0);"
                     "CREATE TABLE IF NOT EXISTS hist(sk INTEGER NOT NULL, tokens BLOB NOT NULL);"
                     "CREATE TABLE IF NOT EXISTS gens(session TEXT PRIMARY KEY, request_id TEXT NOT NULL,"
                     " start_len INTEGER NOT NULL, temperature REAL NOT NULL, top_k INTEGER NOT NULL,"
                     " top_p REAL NOT NULL, seed INTEGER NOT NULL, max_tokens INTEGER NOT NULL,"
                     " ignore_eos INTEGER NOT NULL);"
                     "CREATE INDEX IF NOT EXISTS hist_by_sk ON hist(sk);"
                     /* a tconstd of schema 1 (it reads no user_version) must not
                      * use this journal: it would read every session empty and
                      * write where schema 2 does not look. Its start-up creates
                      * an index on chunks, which a view refuses: it stops with
                      * "views may not be indexed" */
                     "CREATE VIEW IF NOT EXISTS chunks AS SELECT '' AS session, x'' AS tokens WHERE 0;"
                     "PRAGMA user_version = 2;",
                     NULL, NULL, &err) != SQLITE_OK) {
        st = TC_FAIL(TC_ERR_IO, "journal %s: %s (is it a tconst journal?)", path, err ? err : "schema");
        sqlite3_free(err);
        goto fail;
    }
    { /* WAL is asked for, not guaranteed (a file system without shared memory keeps the rollback journal) */
        sqlite3_stmt *q = NULL;
        const unsigned char *mode = NULL;
        if (sqlite3_prepare_v2(j->db, "PRAGMA journal_mode", -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            mode = sqlite3_column_text(q, 0);
        if (!mode || strcmp((const char *)mode, "wal") != 0)
            TC_LOG(TC_LOG_WARN, "journal", "%s: journal_mode is %s, not WAL: writes are slower (and block reads)", path,
                   mode ? (const char *)mode : "unknown");
        sqlite3_finalize(q);
    }
    /* keys are never reused: rows of a closed session not yet purged must not join a new one */
    j->next_sk = one_int(j, "SELECT max(coalesce((SELECT max(sk) FROM sessions), 0),"
                            " coalesce((SELECT max(sk) FROM hist), 0)) + 1", &ok);
    if (!ok) {
        st = db_fail(j, "keys");
        goto fail;
    }
    /* appends to a session the journal no longer holds (closed while its
     * last tokens were on their way) write nothing: no orphan rows */
    if (sqlite3_prepare_v2(j->db, "INSERT INTO sessions(id, created_ms, sk) VALUES(?, ?, ?)", -1, &j->ins_sess, NULL) ||
        sqlite3_prepare_v2(j->db, "SELECT sk FROM sessions WHERE id = ?", -1, &j->get_sk, NULL) ||
        sqlite3_prepare_v2(j->db, "DELETE FROM sessions WHERE id = ?", -1, &j->del_sess, NULL) ||
        sqlite3_prepare_v2(j->db, "INSERT INTO hist(sk, tokens) SELECT sk, ?2 FROM sessions WHERE id = ?1", -1,
                           &j->ins_chunk, NULL) ||
        sqlite3_prepare_v2(j->db, "INSERT OR REPLACE INTO gens SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9"
                                  " WHERE EXISTS(SELECT 1 FROM sessions WHERE id = ?1)", -1, &j->ins_gen, NULL) ||
        sqlite3_prepare_v2(j->db, "DELETE FROM gens WHERE session = ?", -1, &j->del_gen, NULL) ||
        sqlite3_prepare_v2(j->db, "DELETE FROM hist WHERE rowid IN (SELECT rowid FROM hist WHERE sk = ?1 LIMIT ?2)", -1,
                           &j->purge, NULL) ||
        /* the session's tail: its last row (through hist_by_sk, which holds rowid) */
        sqlite3_prepare_v2(j->db, "SELECT h.rowid, h.tokens FROM hist h WHERE h.sk = (SELECT sk FROM sessions WHERE id = ?1)"
                                  " ORDER BY h.rowid DESC LIMIT 1", -1, &j->get_tail, NULL) ||
        sqlite3_prepare_v2(j->db, "UPDATE hist SET tokens = ?2 WHERE rowid = ?1", -1, &j->grow_tail, NULL)) {
        st = db_fail(j, "prepare");
        goto fail;
    }
    if (pthread_create(&j->jt, NULL, janitor_main, j) != 0) {
        st = TC_FAIL(TC_ERR_NOMEM, "journal: cannot start its thread");
        goto fail;
    }
    j->jt_on = 1;
    { /* what a crash left: history rows no session holds */
        sqlite3_stmt *q = NULL;
        int64_t n = 0;
        if (sqlite3_prepare_v2(j->db, "SELECT DISTINCT sk FROM hist WHERE sk NOT IN (SELECT sk FROM sessions)", -1, &q,
                               NULL) != SQLITE_OK) {
            st = db_fail(j, "orphans");
            goto fail;
        }
        while (sqlite3_step(q) == SQLITE_ROW) {
            jitem it = {sqlite3_column_int64(q, 0)};
            n += jqueue(j, it);
        }
        sqlite3_finalize(q);
        if (n) TC_LOG(TC_LOG_INFO, "journal", "deleting the history of %lld sessions closed before the last stop", (long long)n);
    }
    TC_LOG(TC_LOG_INFO, "journal", "journal at %s", path);
    *out = j;
    return TC_OK;
fail:
    tc_journal_close(j);
    return st;
}

void tc_journal_close(tc_journal *j) {
    if (!j) return;
    if (j->jt_on) { /* queued purges finish (a crash would leave them to the next open) */
        pthread_mutex_lock(&j->jm);
        __atomic_store_n(&j->j_stop, 1, __ATOMIC_RELAXED); /* (read unlocked by purge's pacing) */
        pthread_cond_broadcast(&j->jcv);
        pthread_mutex_unlock(&j->jm);
        pthread_join(j->jt, NULL);
        j->jt_on = 0;
    }
    sqlite3_finalize(j->ins_sess);
    sqlite3_finalize(j->get_sk);
    sqlite3_finalize(j->del_sess);
    sqlite3_finalize(j->ins_chunk);
    sqlite3_finalize(j->ins_gen);
    sqlite3_finalize(j->del_gen);
    sqlite3_finalize(j->purge);
    sqlite3_finalize(j->get_tail);
    sqlite3_finalize(j->grow_tail);
    if (j->db) sqlite3_close(j->db);
    if (j->lock_fd >= 0) close(j->lock_fd); /* releases the lock */
    free(j->q);
    pthread_mutex_destroy(&j->jm);
    pthread_cond_destroy(&j->jcv);
    free(j);
}

/* one statement under the connection's mutex */
static tc_status run(tc_journal *j, sqlite3_stmt *s, const char *what) {
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db);
    sqlite3_mutex_enter(mx);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    tc_status st = rc == SQLITE_DONE ? TC_OK : db_fail(j, what);
    sqlite3_mutex_leave(mx);
    return st;
}

/* caller holds the db mutex, in a transaction: the session's rows (its
 * row, its generation's) gone; *old its key (0: none), its history rows
 * to purge once the transaction commits */
static tc_status drop_locked(tc_journal *j, const char *id, int64_t *old) {
    *old = 0;
    sqlite3_bind_text(j->get_sk, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(j->get_sk);
    if (rc == SQLITE_ROW) *old = sqlite3_column_int64(j->get_sk, 0);
    sqlite3_reset(j->get_sk);
    sqlite3_clear_bindings(j->get_sk);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(j, "find session");
    sqlite3_bind_text(j->del_sess, 1, id, -1, SQLITE_TRANSIENT);
    tc_status st = run(j, j->del_sess, "delete session");
    sqlite3_bind_text(j->del_gen, 1, id, -1, SQLITE_TRANSIENT);
    if (st == TC_OK) st = run(j, j->del_gen, "delete generation");
    return st;
}

/* after the commit: the old key's rows go to the janitor */
static void dropped(tc_journal *j, int64_t old) {
    if (!old) return;
    jitem it = {old};
    if (!jqueue(j, it))
        TC_LOG(TC_LOG_WARN, "journal", "a closed session's history (key %lld) is deleted at the next start", (long long)old);
}

/* caller holds the db mutex, in a transaction */
static tc_status insert_locked(tc_journal *j, const char *id, int64_t created_ms) {
    sqlite3_bind_text(j->ins_sess, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(j->ins_sess, 2, created_ms);
    sqlite3_bind_int64(j->ins_sess, 3, j->next_sk);
    tc_status st = run(j, j->ins_sess, "open session");
    if (st == TC_OK) j->next_sk++;
    return st;
}

/* One transaction: the session's rows gone (history, generation record),
 * then, when reopen, its row written afresh under a new key. A reopen
 * drops what an earlier session under the same id may have left (a
 * delete that failed: only logged, the session closed live): a new
 * session never starts with an old one's tokens after a restart. */
static tc_status reset_session(tc_journal *j, const char *id, int reopen, int64_t created_ms) {
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db);
    sqlite3_mutex_enter(mx);
    if (sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        tc_status st = db_fail(j, reopen ? "open session (begin)" : "delete (begin)");
        sqlite3_mutex_leave(mx);
        return st;
    }
    int64_t old = 0;
    tc_status st = drop_locked(j, id, &old);
    if (st == TC_OK && reopen) st = insert_locked(j, id, created_ms);
    if (st == TC_OK && sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = db_fail(j, reopen ? "open session (commit)" : "delete (commit)");
    if (st != TC_OK) sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    else dropped(j, old);
    sqlite3_mutex_leave(mx);
    return st;
}

tc_status tc_journal_session_open(tc_journal *j, const char *id, int64_t created_ms) {
    return reset_session(j, id, 1, created_ms);
}

void tc_journal_lock(tc_journal *j) { sqlite3_mutex_enter(sqlite3_db_mutex(j->db)); }
void tc_journal_unlock(tc_journal *j) { sqlite3_mutex_leave(sqlite3_db_mutex(j->db)); }

tc_status tc_journal_session_delete(tc_journal *j, const char *id) {
    if (j->fault_deletes > 0 && atomic_fetch_sub(&j->fault_deletes, 1) > 0)
        return TC_FAIL(TC_ERR_IO, "journal: delete session %s: injected fault (TC_FAULT_JOURNAL_DELETE_ERRORS)", id);
    return reset_session(j, id, 0, 0);
}

/* caller holds the db mutex: adds a short message to the session's tail
 * row when it has room; *done 0 when it has not (or there is none, or the
 * session is not journaled: the INSERT then writes nothing) */
static tc_status grow_tail_locked(tc_journal *j, const char *id, const int32_t *tokens, int64_t n, int *done) {
    *done = 0;
    if (n >= TAIL_TOKENS) return TC_OK;
    sqlite3_bind_text(j->get_tail, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(j->get_tail);
    int64_t rowid = 0;
    int have = 0;
    int32_t buf[TAIL_TOKENS];
    if (rc == SQLITE_ROW) {
        rowid = sqlite3_column_int64(j->get_tail, 0);
        const int b = sqlite3_column_bytes(j->get_tail, 1);
        /* a tail of a size no tconstd writes (a corrupt row) is left as it
         * is for the load to report; the message goes to a new row */
        if (b >= 0 && b % 4 == 0 && b / 4 + n <= TAIL_TOKENS) {
            if (b) memcpy(buf, sqlite3_column_blob(j->get_tail, 1), (size_t)b);
            memcpy(buf + b / 4, tokens, (size_t)n * 4);
            have = b / 4 + (int)n;
        }
    }
    sqlite3_reset(j->get_tail);
    sqlite3_clear_bindings(j->get_tail);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_fail(j, "append tokens (find the tail)");
    if (!have) return TC_OK;
    sqlite3_bind_int64(j->grow_tail, 1, rowid);
    sqlite3_bind_blob(j->grow_tail, 2, buf, have * 4, SQLITE_STATIC);
    tc_status st = run(j, j->grow_tail, "append tokens (grow the tail)");
    if (st == TC_OK) *done = 1;
    return st;
}

tc_status tc_journal_append(tc_journal *j, const char *id, const int32_t *tokens, int64_t n) {
    if (n <= 0) return TC_OK;
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db);
    sqlite3_mutex_enter(mx);
    int done = 0;
    tc_status st0 = grow_tail_locked(j, id, tokens, n, &done);
    if (st0 != TC_OK || done) {
        sqlite3_mutex_leave(mx);
        return st0;
    }
    sqlite3_bind_text(j->ins_chunk, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob64(j->ins_chunk, 2, tokens, (sqlite3_uint64)n * 4, SQLITE_TRANSIENT);
    tc_status st = run(j, j->ins_chunk, "append tokens"); /* no row: the session is no longer journaled */
    sqlite3_mutex_leave(mx);
    return st;
}

tc_status tc_journal_append_rows(tc_journal *j, const tc_journal_row *rows, int n) {
    if (n == 1) return tc_journal_append(j, rows[0].id, rows[0].tokens, rows[0].n);
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db);
    sqlite3_mutex_enter(mx);
    if (sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        tc_status st = db_fail(j, "append tokens (begin)");
        sqlite3_mutex_leave(mx);
        return st;
    }
    tc_status st = TC_OK;
    for (int i = 0; i < n && st == TC_OK; i++) st = tc_journal_append(j, rows[i].id, rows[i].tokens, rows[i].n);
    if (st == TC_OK && sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) st = db_fail(j, "append tokens (commit)");
    if (st != TC_OK) sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_mutex_leave(mx);
    return st;
}

tc_status tc_journal_load(tc_journal *j, tc_journal_visit visit, void *ud) {
    sqlite3_stmt *ss = NULL, *cs = NULL;
    tc_status st = TC_OK;
    int32_t *buf = NULL;
    size_t cap = 0;
    if (sqlite3_prepare_v2(j->db, "SELECT id, created_ms, sk FROM sessions ORDER BY created_ms", -1, &ss, NULL) ||
        sqlite3_prepare_v2(j->db, "SELECT tokens FROM hist WHERE sk = ? ORDER BY rowid", -1, &cs, NULL)) {
        st = db_fail(j, "load");
        goto done;
    }
    int rc;
    while ((rc = sqlite3_step(ss)) == SQLITE_ROW) {
        char id[256];
        const unsigned char *idt = sqlite3_column_text(ss, 0);
        if (!idt || !idt[0]) {
            st = TC_FAIL(TC_ERR_INVALID, "journal: a session row without an id (corrupt)");
            goto done;
        }
        snprintf(id, sizeof id, "%s", (const char *)idt);
        int64_t created = sqlite3_column_int64(ss, 1), sk = sqlite3_column_int64(ss, 2);
        if (sk <= 0) {
            st = TC_FAIL(TC_ERR_INVALID, "journal: session '%s' has no key (corrupt)", id);
            goto done;
        }
        size_t n = 0;
        sqlite3_bind_int64(cs, 1, sk);
        while ((rc = sqlite3_step(cs)) == SQLITE_ROW) {
            size_t b = (size_t)sqlite3_column_bytes(cs, 0);
            if (b % 4) {
                st = TC_FAIL(TC_ERR_INVALID, "journal: session '%s' has a history chunk of %zu bytes (corrupt)", id, b);
                goto done;
            }
            if (n + b / 4 > cap) {
                cap = (n + b / 4) * 2;
                int32_t *nb = realloc(buf, cap * 4);
                if (!nb) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory loading the journal"); goto done; }
                buf = nb;
            }
            if (b) memcpy(buf + n, sqlite3_column_blob(cs, 0), b);
            n += b / 4;
        }
        sqlite3_reset(cs);
        if (rc != SQLITE_DONE) { st = db_fail(j, "load history"); goto done; }
        if ((st = visit(ud, id, created, buf, (int64_t)n)) != TC_OK) goto done;
    }
    if (rc != SQLITE_DONE) st = db_fail(j, "load sessions");
done:
    sqlite3_finalize(ss);
    sqlite3_finalize(cs);
    free(buf);
    return st;
}

tc_status tc_journal_gen_begin(tc_journal *j, const char *id, const tc_journal_gen *g) {
    sqlite3_mutex_enter(sqlite3_db_mutex(j->db));
    sqlite3_bind_text(j->ins_gen, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(j->ins_gen, 2, g->request_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(j->ins_gen, 3, g->start_len);
    sqlite3_bind_double(j->ins_gen, 4, g->sp.temperature);
    sqlite3_bind_int64(j->ins_gen, 5, g->sp.top_k);
    sqlite3_bind_double(j->ins_gen, 6, g->sp.top_p);
    sqlite3_bind_int64(j->ins_gen, 7, (sqlite3_int64)g->sp.seed);
    sqlite3_bind_int64(j->ins_gen, 8, g->max_tokens);
    sqlite3_bind_int64(j->ins_gen, 9, g->ignore_eos);
    tc_status st = run(j, j->ins_gen, "record generation");
    sqlite3_mutex_leave(sqlite3_db_mutex(j->db));
    return st;
}

tc_status tc_journal_append_gen(tc_journal *j, const char *id, const int32_t *tokens, int64_t n,
                                const tc_journal_gen *g) {
    return tc_journal_create(j, id, -1, tokens, n, g);
}

tc_status tc_journal_create(tc_journal *j, const char *id, int64_t created_ms, const int32_t *tokens, int64_t n,
                            const tc_journal_gen *g) {
    if (j->fault_write_at > 0 && atomic_fetch_sub(&j->fault_write_at, 1) == 1)
        return TC_FAIL(TC_ERR_IO, "journal: write for session %s: injected fault (TC_FAULT_JOURNAL_WRITE_FAIL_AT)", id);
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db); /* recursive: the calls below take it again */
    sqlite3_mutex_enter(mx);
    if (sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        tc_status st = db_fail(j, "prompt and generation (begin)");
        sqlite3_mutex_leave(mx);
        return st;
    }
    tc_status st = TC_OK;
    int64_t old = 0;
    if (created_ms >= 0) { /* the session's row, over whatever an older session of that id left */
        st = drop_locked(j, id, &old);
        if (st == TC_OK) st = insert_locked(j, id, created_ms);
    }
    if (st == TC_OK) st = tc_journal_append(j, id, tokens, n);
    if (st == TC_OK && g) st = tc_journal_gen_begin(j, id, g);
    if (st == TC_OK && sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = db_fail(j, "prompt and generation (commit)");
    if (st != TC_OK) sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    else dropped(j, old);
    sqlite3_mutex_leave(mx);
    return st;
}

tc_status tc_journal_gen_end(tc_journal *j, const char *id) {
    sqlite3_mutex_enter(sqlite3_db_mutex(j->db));
    sqlite3_bind_text(j->del_gen, 1, id, -1, SQLITE_TRANSIENT);
    tc_status st = run(j, j->del_gen, "end generation");
    sqlite3_mutex_leave(sqlite3_db_mutex(j->db));
    return st;
}

tc_status tc_journal_load_gens(tc_journal *j, tc_journal_gen_visit visit, void *ud) {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(j->db, "SELECT * FROM gens", -1, &q, NULL)) return db_fail(j, "load generations");
    tc_status st = TC_OK;
    int rc;
    while (st == TC_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        tc_journal_gen g;
        memset(&g, 0, sizeof g);
        const char *sid = (const char *)sqlite3_column_text(q, 0), *rid = (const char *)sqlite3_column_text(q, 1);
        snprintf(g.request_id, sizeof g.request_id, "%s", rid ? rid : "");
        g.start_len = sqlite3_column_int64(q, 2);
        g.sp.temperature = (float)sqlite3_column_double(q, 3);
        const int64_t top_k = sqlite3_column_int64(q, 4), max_tokens = sqlite3_column_int64(q, 7);
        g.sp.top_k = top_k < INT32_MIN || top_k > INT32_MAX ? -1 : (int)top_k; /* out of range: refused by the visitor's checks */
        g.sp.top_p = (float)sqlite3_column_double(q, 5);
        g.sp.seed = (uint64_t)sqlite3_column_int64(q, 6);
        g.max_tokens = max_tokens < 0 || max_tokens > INT32_MAX ? -1 : (int)max_tokens;
        g.ignore_eos = (int)sqlite3_column_int64(q, 8);
        st = visit(ud, sid ? sid : "", &g);
    }
    if (st == TC_OK && rc != SQLITE_DONE) st = db_fail(j, "load generations"); /* not the end: an error */
    sqlite3_finalize(q);
    return st;
}
