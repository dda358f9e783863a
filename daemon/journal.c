/* journal.c — SQLite journal of session histories (see journal.h).
 * Schema: sessions(id, created_ms); chunks(session, tokens BLOB of
 * little-endian int32) in rowid order. A session's history is the
 * concatenation of its chunks. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "../common/fault.h"
#include "../common/log.h"

struct tc_journal {
    int lock_fd; /* <data-dir>/LOCK, flock()ed for the process's life: one tconstd a directory */
    sqlite3 *db;
    sqlite3_stmt *ins_sess, *del_sess, *del_chunks, *ins_chunk, *ins_gen, *del_gen;
    _Atomic int64_t fault_deletes; /* tests: TC_FAULT_JOURNAL_DELETE_ERRORS, the session deletes still to fail */
};

static tc_status db_fail(tc_journal *j, const char *what) {
    return TC_FAIL(TC_ERR_IO, "journal: %s: %s", what, j->db ? sqlite3_errmsg(j->db) : "no database");
}

tc_status tc_journal_open(tc_journal **out, const char *data_dir) {
    tc_journal *j = calloc(1, sizeof *j);
    if (!j) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    j->lock_fd = -1;
    char path[4200];
    tc_status st = TC_OK;
    int64_t fd = 0; /* tests: the first N session deletes fail (tests/e2e/test_journal_full.py) */
    if ((st = tc_fault_env_count("TC_FAULT_JOURNAL_DELETE_ERRORS", 1000000, &fd)) != TC_OK) goto fail;
    j->fault_deletes = fd;
    if (fd) TC_LOG(TC_LOG_WARN, "journal", "fault injection armed: the first %lld session deletes fail", (long long)fd);
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
    if (sqlite3_exec(j->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);"
                     "CREATE TABLE IF NOT EXISTS chunks(session TEXT NOT NULL, tokens BLOB NOT NULL);"
                     "CREATE TABLE IF NOT EXISTS gens(session TEXT PRIMARY KEY, request_id TEXT NOT NULL,"
                     " start_len INTEGER NOT NULL, temperature REAL NOT NULL, top_k INTEGER NOT NULL,"
                     " top_p REAL NOT NULL, seed INTEGER NOT NULL, max_tokens INTEGER NOT NULL,"
                     " ignore_eos INTEGER NOT NULL);"
                     "CREATE INDEX IF NOT EXISTS chunks_by_session ON chunks(session);",
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
    /* appends to a session the journal no longer holds (closed while its
     * last tokens were on their way) write nothing: no orphan rows */
    if (sqlite3_prepare_v2(j->db, "INSERT OR REPLACE INTO sessions(id, created_ms) VALUES(?, ?)", -1, &j->ins_sess, NULL) ||
        sqlite3_prepare_v2(j->db, "DELETE FROM sessions WHERE id = ?", -1, &j->del_sess, NULL) ||
        sqlite3_prepare_v2(j->db, "DELETE FROM chunks WHERE session = ?", -1, &j->del_chunks, NULL) ||
        sqlite3_prepare_v2(j->db, "INSERT INTO chunks(session, tokens) SELECT ?1, ?2"
                                  " WHERE EXISTS(SELECT 1 FROM sessions WHERE id = ?1)", -1, &j->ins_chunk, NULL) ||
        sqlite3_prepare_v2(j->db, "INSERT OR REPLACE INTO gens SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9"
                                  " WHERE EXISTS(SELECT 1 FROM sessions WHERE id = ?1)", -1, &j->ins_gen, NULL) ||
        sqlite3_prepare_v2(j->db, "DELETE FROM gens WHERE session = ?", -1, &j->del_gen, NULL)) {
        st = db_fail(j, "prepare");
        goto fail;
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
    sqlite3_finalize(j->ins_sess);
    sqlite3_finalize(j->del_sess);
    sqlite3_finalize(j->del_chunks);
    sqlite3_finalize(j->ins_chunk);
    sqlite3_finalize(j->ins_gen);
    sqlite3_finalize(j->del_gen);
    if (j->db) sqlite3_close(j->db);
    if (j->lock_fd >= 0) close(j->lock_fd); /* releases the lock */
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

/* One transaction: the session's rows gone (history, generation record),
 * then, when reopen, its row written afresh. A reopen clears what an
 * earlier session under the same id may have left (a delete that failed:
 * only logged, the session closed live): a new session never starts with
 * an old one's tokens after a restart. */
static tc_status reset_session(tc_journal *j, const char *id, int reopen, int64_t created_ms) {
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db);
    sqlite3_mutex_enter(mx);
    if (sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        tc_status st = db_fail(j, reopen ? "open session (begin)" : "delete (begin)");
        sqlite3_mutex_leave(mx);
        return st;
    }
    tc_status st = TC_OK;
    if (!reopen) {
        sqlite3_bind_text(j->del_sess, 1, id, -1, SQLITE_TRANSIENT);
        st = run(j, j->del_sess, "delete session");
    }
    sqlite3_bind_text(j->del_chunks, 1, id, -1, SQLITE_TRANSIENT);
    if (st == TC_OK) st = run(j, j->del_chunks, "delete history");
    sqlite3_bind_text(j->del_gen, 1, id, -1, SQLITE_TRANSIENT);
    if (st == TC_OK) st = run(j, j->del_gen, "delete generation");
    if (st == TC_OK && reopen) {
        sqlite3_bind_text(j->ins_sess, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(j->ins_sess, 2, created_ms);
        st = run(j, j->ins_sess, "open session");
    }
    if (st == TC_OK && sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = db_fail(j, reopen ? "open session (commit)" : "delete (commit)");
    if (st != TC_OK) sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
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

tc_status tc_journal_append(tc_journal *j, const char *id, const int32_t *tokens, int64_t n) {
    if (n <= 0) return TC_OK;
    sqlite3_mutex_enter(sqlite3_db_mutex(j->db));
    sqlite3_bind_text(j->ins_chunk, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob64(j->ins_chunk, 2, tokens, (sqlite3_uint64)n * 4, SQLITE_TRANSIENT);
    tc_status st = run(j, j->ins_chunk, "append tokens");
    sqlite3_mutex_leave(sqlite3_db_mutex(j->db));
    return st;
}

tc_status tc_journal_load(tc_journal *j, tc_journal_visit visit, void *ud) {
    sqlite3_stmt *ss = NULL, *cs = NULL;
    tc_status st = TC_OK;
    int32_t *buf = NULL;
    size_t cap = 0;
    if (sqlite3_prepare_v2(j->db, "SELECT id, created_ms FROM sessions ORDER BY created_ms", -1, &ss, NULL) ||
        sqlite3_prepare_v2(j->db, "SELECT tokens FROM chunks WHERE session = ? ORDER BY rowid", -1, &cs, NULL)) {
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
        int64_t created = sqlite3_column_int64(ss, 1);
        size_t n = 0;
        sqlite3_bind_text(cs, 1, id, -1, SQLITE_TRANSIENT);
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
    sqlite3_mutex *mx = sqlite3_db_mutex(j->db); /* recursive: the calls below take it again */
    sqlite3_mutex_enter(mx);
    if (sqlite3_exec(j->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        tc_status st = db_fail(j, "prompt and generation (begin)");
        sqlite3_mutex_leave(mx);
        return st;
    }
    tc_status st = TC_OK;
    if (created_ms >= 0) { /* the session's row, over whatever an older session of that id left */
        sqlite3_bind_text(j->del_chunks, 1, id, -1, SQLITE_TRANSIENT);
        st = run(j, j->del_chunks, "open session (history)");
        sqlite3_bind_text(j->del_gen, 1, id, -1, SQLITE_TRANSIENT);
        if (st == TC_OK) st = run(j, j->del_gen, "open session (generation)");
        sqlite3_bind_text(j->ins_sess, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(j->ins_sess, 2, created_ms);
        if (st == TC_OK) st = run(j, j->ins_sess, "open session");
    }
    if (st == TC_OK) st = tc_journal_append(j, id, tokens, n);
    if (st == TC_OK && g) st = tc_journal_gen_begin(j, id, g);
    if (st == TC_OK && sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        st = db_fail(j, "prompt and generation (commit)");
    if (st != TC_OK) sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
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
