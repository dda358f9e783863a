/* test_journal_db.c — the session journal's storage (daemon/journal.c)
 * without a daemon: histories exact (short messages grow the session's
 * last row up to 256 tokens, longer ones are rows of their own), a
 * close that leaves its history to the background purge (a new session
 * under the same id never sees the old tokens), rows a crash left behind
 * purged at the next open, keys never reused, schema 1 journals moved to
 * schema 2, a journal from a newer tconstd refused. Reads the database
 * with its own SQLite connection to count rows. Label: unit. */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/status.h"
#include "daemon/journal.h"

static int g_fail = 0;
#include "expect.h"

static char g_dir[256], g_db[300];

/* one session's loaded history */
typedef struct {
    const char *want_id;
    int32_t *toks;
    int64_t n;
    int seen, sessions;
} loaded;

static tc_status visit(void *ud, const char *id, int64_t created_ms, const int32_t *tokens, int64_t n) {
    (void)created_ms;
    loaded *l = ud;
    l->sessions++;
    if (strcmp(id, l->want_id) != 0) return TC_OK;
    l->seen++;
    free(l->toks);
    l->toks = malloc((size_t)(n ? n : 1) * 4);
    memcpy(l->toks, tokens, (size_t)n * 4);
    l->n = n;
    return TC_OK;
}

static loaded load(tc_journal *j, const char *id) {
    loaded l = {id, NULL, 0, 0, 0};
    EXPECT(tc_journal_load(j, visit, &l) == TC_OK, "load: %s", tc_error_get());
    return l;
}

static int same(const loaded *l, const int32_t *want, int64_t n) {
    return l->seen == 1 && l->n == n && (n == 0 || memcmp(l->toks, want, (size_t)n * 4) == 0);
}

/* a query's one integer, on a connection of its own */
static int64_t q1(const char *sql) {
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(g_db, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    else
        printf("query %s: %s\n", sql, db ? sqlite3_errmsg(db) : "no db");
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void exec(const char *sql) {
    sqlite3 *db = NULL;
    char *err = NULL;
    if (sqlite3_open_v2(g_db, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        EXPECT(0, "exec %s: %s", sql, err ? err : "open");
    sqlite3_free(err);
    sqlite3_close(db);
}

static tc_journal *open_j(void) {
    tc_journal *j = NULL;
    EXPECT(tc_journal_open(&j, g_dir) == TC_OK, "open: %s", tc_error_get());
    return j;
}

static void wipe(void) {
    char p[400];
    const char *sfx[] = {"journal.db", "journal.db-wal", "journal.db-shm", "LOCK"};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, sfx[i]);
        unlink(p);
    }
}

/* history rows of the session under id */
static int64_t rows_of(const char *id) {
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM hist WHERE sk = (SELECT sk FROM sessions WHERE id = '%s')", id);
    return q1(sql);
}

static void test_history_and_close(void) {
    wipe();
    tc_journal *j = open_j();
    if (!j) return;
    enum { N = 5000 };
    int32_t *want = malloc(N * 4 * sizeof *want);
    int64_t n = 0;
    for (int i = 0; i < 5; i++) want[n++] = 100 + i;
    EXPECT(tc_journal_create(j, "a", 1, want, 5, NULL) == TC_OK, "create a: %s", tc_error_get());
    /* the rows the tail rule makes: a message of < 256 tokens joins the
     * last row while that stays <= 256 tokens, else it is a new row */
    int64_t rows_written = 1, tail = 5;
#define WROTE(m) (((m) < 256 && tail + (m) <= 256) ? (void)(tail += (m)) : (void)(rows_written++, tail = (m)))
    for (int i = 0; i < N; i++) {
        if (i == 1500 || i == 3000) { /* large messages among the small ones */
            const int m = i == 1500 ? 300 : 200;
            for (int k = 0; k < m; k++) want[n + k] = 7000 + k;
            EXPECT(tc_journal_append(j, "a", want + n, m) == TC_OK, "append %d", m);
            n += m;
            WROTE(m);
        }
        want[n] = (i * 7919) % 50000;
        EXPECT(tc_journal_append(j, "a", want + n, 1) == TC_OK, "append %d: %s", i, tc_error_get());
        n++;
        WROTE(1);
    }
#undef WROTE
    int64_t purged = -1;
    tc_journal_settle(j, &purged);
    loaded l = load(j, "a");
    EXPECT(same(&l, want, n), "a's history exact (%lld tokens, want %lld)", (long long)l.n,
           (long long)n);
    const int64_t r = rows_of("a");
    EXPECT(r == rows_written && r < n / 200, "short messages share rows: %lld rows (want %lld) for %lld tokens",
           (long long)r, (long long)rows_written, (long long)n);
    EXPECT(q1("SELECT max(length(tokens)) FROM hist") == 300 * 4, "no row past 256 tokens but the 300-token message's");
    EXPECT(q1("SELECT count(*) FROM hist WHERE length(tokens) = 1024") >= 15, "rows fill up to exactly 256 tokens (%lld full)",
           (long long)q1("SELECT count(*) FROM hist WHERE length(tokens) = 1024"));
    free(l.toks);

    /* close: the session is gone at once; its rows go in the background */
    const int64_t total = q1("SELECT count(*) FROM hist");
    EXPECT(tc_journal_session_delete(j, "a") == TC_OK, "delete a");
    EXPECT(q1("SELECT count(*) FROM sessions WHERE id = 'a'") == 0, "a's row deleted before the delete returns");
    /* a new session under the same id starts empty, purged or not */
    const int32_t fresh[2] = {42, 43};
    EXPECT(tc_journal_create(j, "a", 2, fresh, 2, NULL) == TC_OK, "re-create a");
    l = load(j, "a");
    EXPECT(same(&l, fresh, 2), "the new 'a' holds only its own 2 tokens, not the old %lld (got %lld)", (long long)n,
           (long long)l.n);
    free(l.toks);
    tc_journal_settle(j, &purged);
    EXPECT(purged == total, "the old history's %lld rows purged (%lld)", (long long)total, (long long)purged);
    EXPECT(q1("SELECT count(*) FROM hist") == 1, "one row left: the new a's");
    /* appends to a closed session write nothing */
    EXPECT(tc_journal_session_delete(j, "a") == TC_OK, "delete a again");
    EXPECT(tc_journal_append(j, "a", fresh, 2) == TC_OK, "append to a closed session");
    tc_journal_settle(j, NULL);
    EXPECT(q1("SELECT count(*) FROM hist") == 0, "no row written for a closed session");
    tc_journal_close(j);
    free(want);
}

/* rows purged in several batches; a crash's leftovers purged at the next open */
static void test_purge_batches_and_orphans(void) {
    wipe();
    tc_journal *j = open_j();
    if (!j) return;
    int32_t big[300];
    for (int k = 0; k < 300; k++) big[k] = k;
    EXPECT(tc_journal_create(j, "b", 1, big, 300, NULL) == TC_OK, "create b");
    for (int i = 0; i < 4999; i++) EXPECT(tc_journal_append(j, "b", big, 300) == TC_OK, "append b %d", i);
    EXPECT(rows_of("b") == 5000, "5000 rows (%lld)", (long long)rows_of("b"));
    EXPECT(tc_journal_session_delete(j, "b") == TC_OK, "delete b");
    int64_t purged = 0;
    tc_journal_settle(j, &purged);
    EXPECT(purged == 5000 && q1("SELECT count(*) FROM hist") == 0, "5000 rows purged in batches (%lld)", (long long)purged);
    EXPECT(tc_journal_create(j, "c", 3, big, 3, NULL) == TC_OK, "create c");
    const int64_t c_sk = q1("SELECT sk FROM sessions WHERE id = 'c'");
    tc_journal_close(j);

    /* rows of a key no session holds, as a kill -9 between a close and its purge leaves them */
    char sql[300];
    snprintf(sql, sizeof sql, "INSERT INTO hist(sk, tokens) VALUES(%lld, x'01000000'), (%lld, x'02000000');",
             (long long)c_sk + 50, (long long)c_sk + 50);
    exec(sql);
    j = open_j();
    if (!j) return;
    /* the new session's key is past the leftovers' (they must never join it) */
    const int32_t t1[1] = {9};
    EXPECT(tc_journal_create(j, "d", 4, t1, 1, NULL) == TC_OK, "create d");
    EXPECT(q1("SELECT sk FROM sessions WHERE id = 'd'") > c_sk + 50, "a new key is past every key in the journal");
    loaded l = load(j, "d");
    EXPECT(same(&l, t1, 1), "d holds its own token only");
    free(l.toks);
    tc_journal_settle(j, &purged);
    EXPECT(purged == 2, "the 2 leftover rows purged at the open (%lld)", (long long)purged);
    l = load(j, "c");
    EXPECT(same(&l, big, 3) && l.sessions == 2, "c restored as it was, 2 sessions (%d)", l.sessions);
    free(l.toks);
    tc_journal_close(j);
}

static tc_status visit_gen(void *ud, const char *id, const tc_journal_gen *g) {
    int *n = ud;
    if (!strcmp(id, "s1") && !strcmp(g->request_id, "r1") && g->start_len == 4 && g->max_tokens == 9) (*n)++;
    return TC_OK;
}

/* a journal of schema 1 (tconstd before this change) is moved to schema 2 with every history intact */
static void test_migrate_v1(void) {
    wipe();
    exec("PRAGMA journal_mode=WAL;"
         "CREATE TABLE sessions(id TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);"
         "CREATE TABLE chunks(session TEXT NOT NULL, tokens BLOB NOT NULL);"
         "CREATE TABLE gens(session TEXT PRIMARY KEY, request_id TEXT NOT NULL, start_len INTEGER NOT NULL,"
         " temperature REAL NOT NULL, top_k INTEGER NOT NULL, top_p REAL NOT NULL, seed INTEGER NOT NULL,"
         " max_tokens INTEGER NOT NULL, ignore_eos INTEGER NOT NULL);"
         "CREATE INDEX chunks_by_session ON chunks(session);"
         "INSERT INTO sessions VALUES('s1', 10), ('s2', 20);"
         "INSERT INTO chunks VALUES('s1', x'0100000002000000'), ('s2', x'0a000000'), ('s1', x'03000000'),"
         " ('gone', x'63000000'), ('s2', x'0b0000000c000000'), ('s1', x'04000000');"
         "INSERT INTO gens VALUES('s1', 'r1', 4, 0.0, 0, 1.0, 5, 9, 0);");
    tc_journal *j = open_j();
    if (!j) return;
    const int32_t w1[4] = {1, 2, 3, 4}, w2[3] = {10, 11, 12};
    loaded l = load(j, "s1");
    EXPECT(same(&l, w1, 4), "s1's history in order after the move (%lld tokens)", (long long)l.n);
    free(l.toks);
    l = load(j, "s2");
    EXPECT(same(&l, w2, 3) && l.sessions == 2, "s2's history in order, 2 sessions (%d)", l.sessions);
    free(l.toks);
    int g = 0;
    EXPECT(tc_journal_load_gens(j, visit_gen, &g) == TC_OK && g == 1, "s1's generation record kept");
    EXPECT(q1("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'chunks'") == 0, "the old table is gone");
    EXPECT(q1("PRAGMA user_version") == 2, "schema 2");
    EXPECT(q1("SELECT count(*) FROM hist") == 5, "5 rows moved, the one of no session dropped");
    /* and it works as a schema 2 journal: appends, a new session */
    const int32_t t5[1] = {5};
    EXPECT(tc_journal_append(j, "s1", t5, 1) == TC_OK, "append to a moved session");
    EXPECT(tc_journal_create(j, "s3", 30, t5, 1, NULL) == TC_OK, "create after the move");
    EXPECT(q1("SELECT count(DISTINCT sk) FROM sessions") == 3, "three distinct keys");
    tc_journal_close(j);
    j = open_j();
    if (!j) return;
    const int32_t w1b[5] = {1, 2, 3, 4, 5};
    l = load(j, "s1");
    EXPECT(same(&l, w1b, 5) && l.sessions == 3, "s1 + its append after a reopen, 3 sessions");
    free(l.toks);
    tc_journal_close(j);

    /* a tconstd of schema 1 cannot use it: its start-up's index on chunks fails */
    sqlite3 *db = NULL;
    char *err = NULL;
    int rc = sqlite3_open_v2(g_db, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS chunks(session TEXT NOT NULL, tokens BLOB NOT NULL);"
                              "CREATE INDEX IF NOT EXISTS chunks_by_session ON chunks(session);", NULL, NULL, &err);
    EXPECT(rc != SQLITE_OK, "schema 1's start-up fails on a schema 2 journal (%s)", err ? err : "it succeeded");
    sqlite3_free(err);
    sqlite3_close(db);
    /* one that wrote to it anyway (an intermediate build without the guard):
     * its sessions, sk 0, get keys of their own at the next open */
    exec("DROP VIEW chunks; CREATE TABLE chunks(session TEXT NOT NULL, tokens BLOB NOT NULL);"
         "INSERT INTO sessions(id, created_ms) VALUES('z1', 40), ('z2', 41);"
         "INSERT INTO chunks VALUES('z1', x'07000000'), ('z2', x'0800000009000000');");
    j = open_j();
    if (!j) return;
    const int32_t wz1[1] = {7}, wz2[2] = {8, 9};
    l = load(j, "z1");
    EXPECT(same(&l, wz1, 1) && l.sessions == 5, "z1 restored with its token, 5 sessions (%d)", l.sessions);
    free(l.toks);
    l = load(j, "z2");
    EXPECT(same(&l, wz2, 2), "z2 restored with its tokens");
    free(l.toks);
    EXPECT(q1("SELECT count(DISTINCT sk) FROM sessions WHERE sk > 0") == 5, "five distinct keys");
    tc_journal_close(j);
}

/* a batched step's appends: one transaction, a closed session skipped */
static void test_append_rows(void) {
    wipe();
    tc_journal *j = open_j();
    if (!j) return;
    const int32_t a[2] = {1, 2}, b[1] = {3}, c[3] = {4, 5, 6};
    EXPECT(tc_journal_create(j, "x", 1, a, 2, NULL) == TC_OK && tc_journal_create(j, "y", 2, b, 1, NULL) == TC_OK &&
               tc_journal_create(j, "z", 3, c, 3, NULL) == TC_OK,
           "create x y z");
    EXPECT(tc_journal_session_delete(j, "z") == TC_OK, "close z");
    tc_journal_row rows[3] = {{"x", c, 3}, {"z", a, 2}, {"y", a, 1}};
    EXPECT(tc_journal_append_rows(j, rows, 3) == TC_OK, "append rows: %s", tc_error_get());
    const int32_t wx[5] = {1, 2, 4, 5, 6}, wy[2] = {3, 1};
    loaded l = load(j, "x");
    EXPECT(same(&l, wx, 5) && l.sessions == 2, "x took its 3, 2 sessions (%d)", l.sessions);
    free(l.toks);
    l = load(j, "y");
    EXPECT(same(&l, wy, 2), "y took its 1");
    free(l.toks);
    tc_journal_settle(j, NULL);
    EXPECT(q1("SELECT count(*) FROM hist") == 2, "x and y grew their rows, closed z wrote nothing (%lld rows)",
           (long long)q1("SELECT count(*) FROM hist"));
    /* a tail of a size no tconstd writes is left alone (the load reports it), not grown */
    exec("UPDATE hist SET tokens = x'010203' WHERE sk = (SELECT sk FROM sessions WHERE id = 'y')");
    EXPECT(tc_journal_append(j, "y", a, 1) == TC_OK, "append after a corrupt tail: %s", tc_error_get());
    EXPECT(rows_of("y") == 2 && q1("SELECT count(*) FROM hist WHERE tokens = x'010203'") == 1,
           "the corrupt row untouched, the token in a row of its own");
    loaded bad = {"y", NULL, 0, 0, 0};
    EXPECT(tc_journal_load(j, visit, &bad) != TC_OK && strstr(tc_error_get(), "corrupt"), "the load names the corrupt row: %s",
           tc_error_get());
    free(bad.toks);
    tc_journal_close(j);
}

static void test_newer_schema(void) {
    wipe();
    exec("PRAGMA user_version = 3;");
    tc_journal *j = NULL;
    EXPECT(tc_journal_open(&j, g_dir) != TC_OK && strstr(tc_error_get(), "newer tconstd"),
           "a journal of schema 3 is refused, naming why: %s", tc_error_get());
    tc_journal_close(j);
}

int main(void) {
    tc_log_set_level(TC_LOG_WARN);
    snprintf(g_dir, sizeof g_dir, "/tmp/tc_journal_db_XXXXXX");
    if (!mkdtemp(g_dir)) return perror("mkdtemp"), 1;
    snprintf(g_db, sizeof g_db, "%s/journal.db", g_dir);
    test_history_and_close();
    test_purge_batches_and_orphans();
    test_migrate_v1();
    test_append_rows();
    test_newer_schema();
    wipe();
    rmdir(g_dir);
    printf(g_fail ? "journal_db: %d failures\n" : "journal_db: all checks passed\n", g_fail);
    return g_fail ? 1 : 0;
}
