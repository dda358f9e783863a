/* test_log.c — a log record reaches stderr whole, in one write, so that
 * processes sharing a stderr (tconstd and the workers it spawns) never
 * interleave inside a record; JSON records are one object a line, their
 * message escaped; text records turn control characters into \xNN.
 *
 * Three child processes write 3000 records each, as fast as they can, to
 * one pipe whose reader is this process; every line read must be a whole
 * record of one child (the format's start, its end, and the child's own
 * message between), and every child's records must all arrive. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/log.h"

static int g_fail = 0;
#include "expect.h"

enum { CHILDREN = 3, RECORDS = 3000 };

/* the children's stderr into a pipe; all of it read back into a string */
static char *run_children(const char *format, const char *msg_fmt) {
    int p[2];
    if (pipe(p) != 0) return NULL;
    for (int c = 0; c < CHILDREN; c++) {
        const pid_t pid = fork();
        if (pid < 0) return NULL;
        if (pid == 0) {
            close(p[0]);
            dup2(p[1], STDERR_FILENO);
            close(p[1]);
            if (tc_log_configure("test_log", "info", format) != 0) _exit(2);
            for (int i = 0; i < RECORDS; i++)
                TC_LOG(TC_LOG_INFO, "test", msg_fmt, c, i, "quote \" backslash \\ newline \n tab \t end");
            _exit(0);
        }
    }
    close(p[1]);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 65536 > cap) buf = realloc(buf, cap *= 2);
        const ssize_t r = read(p[0], buf + n, 65536);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(p[0]);
    buf[n] = 0;
    for (int c = 0; c < CHILDREN; c++) {
        int st = 0;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) EXPECT(0, "a child failed (%s)", format);
    }
    return buf;
}

static int occurs(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

/* a line is one whole record: it starts with head, holds msg_head once
 * (then the child and record numbers) and the escaped message's tail mid
 * once, and ends with end */
static void check(const char *format, const char *head, const char *msg_head, const char *mid, const char *end) {
    char *all = run_children(format, "child %d record %d: %s");
    if (!all) {
        EXPECT(0, "%s: fork/pipe failed: %s", format, strerror(errno));
        return;
    }
    int count[CHILDREN] = {0}, bad = 0;
    char *save = NULL;
    for (char *ln = strtok_r(all, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        int c = -1, i = -1;
        const char *m = strstr(ln, msg_head);
        const size_t ll = strlen(ln), tl = strlen(end);
        const int whole = strncmp(ln, head, strlen(head)) == 0 && occurs(ln, msg_head) == 1 &&
                          sscanf(m + strlen(msg_head), "%d record %d", &c, &i) == 2 && c >= 0 && c < CHILDREN &&
                          occurs(ln, mid) == 1 && ll >= tl && strcmp(ln + ll - tl, end) == 0;
        if (!whole) {
            if (bad++ < 3) printf("     not one record: %.200s\n", ln);
            continue;
        }
        count[c]++;
    }
    EXPECT(bad == 0, "%s: %d lines were not one whole record", format, bad);
    for (int c = 0; c < CHILDREN; c++)
        EXPECT(count[c] == RECORDS, "%s: child %d: %d of %d records arrived whole", format, c, count[c], RECORDS);
    printf("%-5s %s: %d processes x %d records on one pipe, every line one whole record\n",
           bad == 0 ? "ok" : "FAIL", format, CHILDREN, RECORDS);
    free(all);
}

/* The longest message (2047 control characters, each six bytes escaped
 * in JSON) fits a record whole: one JSON object on one line, every escape
 * complete. (A record's buffer holds the worst case; were a header ever
 * too long, the message would lose its end at an escape's boundary, never
 * the tail.) */
static void check_long(void) {
    int p[2];
    if (pipe(p) != 0) {
        EXPECT(0, "pipe: %s", strerror(errno));
        return;
    }
    const int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    char m[2048];
    memset(m, 1, sizeof m - 1);
    m[sizeof m - 1] = 0;
    (void)tc_log_configure("test_log", "info", "json");
    TC_LOG(TC_LOG_INFO, "test", "%s", m);
    dup2(saved, STDERR_FILENO);
    close(saved);
    static char buf[65536];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    buf[n > 0 ? n : 0] = 0;
    const char *msg = strstr(buf, "\"msg\":\"");
    int whole = msg && n > 8 && !strcmp(buf + n - 3, "\"}\n") && strchr(buf, '\n') == buf + n - 1;
    /* between the msg's quote and the tail: whole escapes only */
    size_t esc = 0;
    for (const char *q = msg ? msg + 7 : buf; whole && q < buf + n - 3; q += 6, esc++)
        if (strncmp(q, "\\u0001", 6)) whole = 0;
    EXPECT(whole && esc == 2047, "a 2047-character message: %zu whole escapes, the record closed: %.80s ... %s", esc,
           buf, n > 40 ? buf + n - 40 : buf);
    printf("%-5s json: the longest message, all control characters: %zu of 2047 escapes whole, the object closed\n",
           whole && esc == 2047 ? "ok" : "FAIL", esc);
}

/* TC_LOG_SUBSYS: debug and trace of the listed subsystems only (^: all
 * but them), case-insensitive, whole names; errors, warnings and info of
 * every subsystem always */
static void check_subsys(void) {
    tc_log_set_subsys("engine,Workers");
    EXPECT(tc_log_subsys_on(TC_LOG_DEBUG, "engine") && tc_log_subsys_on(TC_LOG_TRACE, "workers"), "listed: off");
    EXPECT(!tc_log_subsys_on(TC_LOG_DEBUG, "rpc") && !tc_log_subsys_on(TC_LOG_DEBUG, "engin") &&
               !tc_log_subsys_on(TC_LOG_DEBUG, "engines"),
           "a subsystem not listed (or a part of a name) writes debug");
    EXPECT(tc_log_subsys_on(TC_LOG_INFO, "rpc") && tc_log_subsys_on(TC_LOG_ERROR, "rpc") &&
               tc_log_subsys_on(TC_LOG_WARN, "http"),
           "the filter hid an error, warning or info record");
    tc_log_set_subsys("^rpc,http");
    EXPECT(!tc_log_subsys_on(TC_LOG_DEBUG, "rpc") && !tc_log_subsys_on(TC_LOG_TRACE, "http") &&
               tc_log_subsys_on(TC_LOG_DEBUG, "engine"),
           "^rpc,http: wrong");
    tc_log_set_subsys("");
    EXPECT(tc_log_subsys_on(TC_LOG_TRACE, "rpc"), "an empty filter hides debug");
    /* end to end: a filtered record is not written at all */
    int p[2];
    EXPECT(pipe(p) == 0, "pipe");
    const int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    tc_log_set_level(TC_LOG_DEBUG);
    tc_log_set_subsys("engine");
    TC_LOG(TC_LOG_DEBUG, "rpc", "hidden");
    TC_LOG(TC_LOG_DEBUG, "engine", "shown");
    TC_LOG(TC_LOG_WARN, "rpc", "warned");
    tc_log_set_subsys(NULL);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    char buf[4096];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    buf[n > 0 ? n : 0] = 0;
    EXPECT(!strstr(buf, "hidden") && strstr(buf, "shown") && strstr(buf, "warned"), "written: '%s'", buf);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    check_subsys();
    /* JSON: one object a line, the message's quote, backslash and control
     * characters escaped (so the newline does not end the line) */
    check("json", "{\"ts\":\"", "\"msg\":\"child ", "quote \\\" backslash \\\\ newline \\u000a tab \\u0009 end\"}", "\"}");
    /* text: the control characters as \xNN, the source at the end */
    check("text", "", "info  [test] child ", "newline \\x0a tab \\x09 end (test_log.c:", ")");
    check_long();
    return g_fail ? 1 : 0;
}
