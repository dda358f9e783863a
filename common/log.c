/* log.c — the TC_LOG sink: text or JSON lines on stderr. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int tc_log_level_cur = TC_LOG_WARN;
static int tc_log_json = 0;
static const char *tc_level_names[] = {"error", "warn", "info", "debug", "trace"};

int tc_log_parse_level(const char *s, tc_log_level *out) {
    for (int i = 0; i <= TC_LOG_TRACE; i++)
        if (strcasecmp(s, tc_level_names[i]) == 0) { *out = (tc_log_level)i; return 0; }
    return -1;
}

void tc_log_set_level(tc_log_level l) { tc_log_level_cur = (int)l; }

/* TC_LOG_SUBSYS (NCCL_DEBUG_SUBSYS's habit): the subsystems whose debug
 * and trace records are written, comma-separated ("engine,workers"); a
 * leading ^ writes all but those ("^rpc,http"). Unset or empty: all.
 * Errors, warnings and info always pass: the filter thins a debug log,
 * it never hides a problem. */
static char tc_subsys[256];
static int tc_subsys_not;

void tc_log_set_subsys(const char *list) {
    tc_subsys_not = list && list[0] == '^';
    snprintf(tc_subsys, sizeof tc_subsys, "%s", list ? list + tc_subsys_not : "");
}

static int subsys_listed(const char *subsys) {
    const size_t n = strlen(subsys);
    for (const char *p = tc_subsys; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncasecmp(p, subsys, n)) return 1;
        p += len + (e != NULL);
    }
    return 0;
}

int tc_log_subsys_on(tc_log_level l, const char *subsys) {
    if (l < TC_LOG_DEBUG || !tc_subsys[0]) return 1;
    return subsys_listed(subsys) != tc_subsys_not;
}

void tc_log_init(void) {
    const char *lv = getenv("TC_LOG_LEVEL");
    tc_log_level l;
    if (lv && tc_log_parse_level(lv, &l) == 0) tc_log_level_cur = (int)l;
    const char *fmt = getenv("TC_LOG_FORMAT");
    tc_log_json = fmt && strcasecmp(fmt, "json") == 0;
    tc_log_set_subsys(getenv("TC_LOG_SUBSYS"));
}

/* The record as one write(2): stderr is shared by tconstd and the workers
 * it spawns, and a record written in pieces (fprintf, then a character at
 * a time) interleaves with another process's, which a JSON log pipeline
 * cannot parse. One write of up to PIPE_BUF bytes to a pipe is atomic;
 * a record longer than that is still one call. */
static void emit(const char *b, size_t n) {
    while (n > 0) {
        const ssize_t w = write(STDERR_FILENO, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* nowhere to report it */
        b += w, n -= (size_t)w;
    }
}

void tc_log_write(tc_log_level l, const char *subsys, const char *file, int line, const char *fmt, ...) {
    if (!tc_log_subsys_on(l, subsys)) return; /* before any formatting */
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[32];
    strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    /* the record: header, the message escaped -- JSON's escapes, or (text)
     * \xNN for a control character, so that a client's id with a newline
     * cannot forge a line -- and the tail. A message too long for the
     * buffer loses its end at an escape's boundary, never the tail: a
     * record is always one whole line (JSON: one whole object) */
    char rec[6 * sizeof msg + 512], tail[160];
    const int h = tc_log_json
        ? snprintf(rec, sizeof rec, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"subsys\":\"%s\",\"src\":\"%s:%d\",\"msg\":\"",
                   tbuf, ts.tv_nsec / 1000000, tc_level_names[l], subsys, base, line)
        : snprintf(rec, sizeof rec, "%s.%03ldZ %-5s [%s] ", tbuf, ts.tv_nsec / 1000000, tc_level_names[l], subsys);
    const int t = tc_log_json ? snprintf(tail, sizeof tail, "\"}\n") : snprintf(tail, sizeof tail, " (%s:%d)\n", base, line);
    const size_t tl = t < 0 ? 0 : (size_t)t < sizeof tail ? (size_t)t : sizeof tail - 1;
    size_t n = h < 0 ? 0 : (size_t)h < sizeof rec - tl - 1 ? (size_t)h : sizeof rec - tl - 1;
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
        char e[8];
        size_t el = 1;
        e[0] = (char)*p;
        if (tc_log_json && (*p == '"' || *p == '\\')) e[0] = '\\', e[1] = (char)*p, el = 2;
        else if (tc_log_json && *p < 0x20) el = (size_t)snprintf(e, sizeof e, "\\u%04x", *p);
        else if (!tc_log_json && (*p < 0x20 || *p == 0x7f)) el = (size_t)snprintf(e, sizeof e, "\\x%02x", *p);
        if (n + el + tl >= sizeof rec) break;
        memcpy(rec + n, e, el);
        n += el;
    }
    memcpy(rec + n, tail, tl);
    n += tl;
    emit(rec, n);
}

/* Precedence: the knob (default < config < TCONST_LOG_* < flag) when it
 * was given, else TC_LOG_LEVEL / TC_LOG_FORMAT (every binary's variables),
 * else info and text. A bad value is an error naming where it came from,
 * never silently ignored. */
int tc_log_configure(const char *prog, const char *level, const char *format) {
    const char *env_lv = getenv("TC_LOG_LEVEL"), *env_fmt = getenv("TC_LOG_FORMAT");
    tc_log_level lv;
    if (env_lv && tc_log_parse_level(env_lv, &lv) != 0) {
        fprintf(stderr, "%s: error: TC_LOG_LEVEL '%s': expected error, warn, info, debug or trace\n", prog, env_lv);
        return -1;
    }
    if (env_fmt && strcasecmp(env_fmt, "json") != 0 && strcasecmp(env_fmt, "text") != 0) {
        fprintf(stderr, "%s: error: TC_LOG_FORMAT '%s': expected text or json\n", prog, env_fmt);
        return -1;
    }
    if (!*level) level = env_lv ? env_lv : "info";
    if (!*format) format = env_fmt ? env_fmt : "text";
    if (tc_log_parse_level(level, &lv) != 0) {
        fprintf(stderr, "%s: error: --log-level '%s' (the flag, TCONST_LOG_LEVEL or the config file's log-level): "
                        "expected error, warn, info, debug or trace\n", prog, level);
        return -1;
    }
    if (strcasecmp(format, "json") != 0 && strcasecmp(format, "text") != 0) {
        fprintf(stderr, "%s: error: --log-format '%s' (the flag, TCONST_LOG_FORMAT or the config file's log-format): "
                        "expected text or json\n", prog, format);
        return -1;
    }
    tc_log_set_level(lv);
    tc_log_json = strcasecmp(format, "json") == 0;
    return 0;
}
