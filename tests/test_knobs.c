/* test_knobs.c — the knob table: defaults, each source (config file,
 * environment, flag), their precedence, every error kind, --help,
 * markdown and dump. Label: unit. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/knobs.h"
#include "common/log.h"

typedef struct {
    char *listen;
    int64_t max_sessions;
    double temperature;
    int verbose;
    char *data_dir;
    int64_t offset; /* unbounded, may be negative */
} cfg_t;

static const tc_knob knobs[] = {
    {"listen", TC_KNOB_STR, "127.0.0.1:50051", 0, 0, "gRPC listen address", offsetof(cfg_t, listen)},
    {"max-sessions", TC_KNOB_INT, "64", 1, 4096, "maximum open sessions", offsetof(cfg_t, max_sessions)},
    {"temperature", TC_KNOB_DOUBLE, "0.7", 0, 2, "default sampling temperature", offsetof(cfg_t, temperature)},
    {"verbose", TC_KNOB_BOOL, NULL, 0, 0, "log | more", offsetof(cfg_t, verbose)},
    {"data-dir", TC_KNOB_STR, NULL, 0, 0, "journal directory", offsetof(cfg_t, data_dir)},
    {"offset", TC_KNOB_INT, "-3", 0, 0, "an unbounded integer", offsetof(cfg_t, offset)},
};
#define N_KNOBS ((int)(sizeof knobs / sizeof knobs[0]))

static const char *envs[] = {"TCONST_LISTEN", "TCONST_MAX_SESSIONS", "TCONST_TEMPERATURE", "TCONST_VERBOSE",
                             "TCONST_DATA_DIR", "TCONST_OFFSET", "TCONST_CONFIG"};

static int g_fail = 0, g_n = 0;
static char g_dir[256];

#define EXPECT(cond, ...)                                                                      \
    do {                                                                                       \
        g_n++;                                                                                 \
        if (!(cond)) {                                                                         \
            g_fail++;                                                                          \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                             \
            printf(__VA_ARGS__);                                                               \
            printf("\n");                                                                      \
        }                                                                                      \
    } while (0)

static void clear_env(void) {
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) unsetenv(envs[i]);
}

/* parse(&cfg, "--a", "b", NULL): argv[0] is supplied. */
static tc_status parse(cfg_t *c, ...) {
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, c);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 31;) argv[argc++] = (char *)a;
    va_end(ap);
    memset(c, 0x5a, sizeof *c); /* garbage: parse must not free or read it */
    int help = -1;
    tc_status st = tc_knobs_parse(knobs, N_KNOBS, c, argc, argv, "prog", "A test program.", &help);
    if (st == TC_OK && help != 0 && help != 1) printf("FAIL help_shown not set\n"), g_fail++;
    return st;
}

static const char *write_config(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(2); }
    fputs(text, f);
    fclose(f);
    return path;
}

/* An error that must be TC_ERR_INVALID, with every needle in the message. */
static void expect_error(tc_status st, cfg_t *c, const char *what, const char *n1, const char *n2) {
    const char *m = tc_error_get();
    EXPECT(st == TC_ERR_INVALID, "%s: status %d", what, (int)st);
    EXPECT(m && strstr(m, n1), "%s: message \"%s\" lacks \"%s\"", what, m ? m : "", n1);
    if (n2) EXPECT(m && strstr(m, n2), "%s: message \"%s\" lacks \"%s\"", what, m ? m : "", n2);
    EXPECT(c->listen == NULL && c->data_dir == NULL, "%s: string fields not released on error", what);
    printf("ok   error %-28s -> %s\n", what, m ? m : "");
    tc_knobs_free(knobs, N_KNOBS, c); /* must be harmless after an error */
}

static void test_defaults(void) {
    cfg_t c;
    EXPECT(parse(&c, NULL) == TC_OK, "%s", tc_error_get());
    EXPECT(strcmp(c.listen, "127.0.0.1:50051") == 0, "listen %s", c.listen);
    EXPECT(c.max_sessions == 64, "max_sessions %lld", (long long)c.max_sessions);
    EXPECT(c.temperature == 0.7, "temperature %g", c.temperature);
    EXPECT(c.verbose == 0, "verbose %d", c.verbose);
    EXPECT(c.data_dir && c.data_dir[0] == '\0', "data_dir should be empty, non-NULL");
    EXPECT(c.offset == -3, "offset %lld", (long long)c.offset);
    tc_knobs_free(knobs, N_KNOBS, &c);
    EXPECT(c.listen == NULL && c.data_dir == NULL, "free must NULL the strings");
}

static void test_flags(void) {
    cfg_t c;
    EXPECT(parse(&c, "--listen", "0.0.0.0:1", "--max-sessions=7", "--temperature", "1.5", "--verbose", "--data-dir=",
                 "--offset", "-9", NULL) == TC_OK,
           "%s", tc_error_get());
    EXPECT(strcmp(c.listen, "0.0.0.0:1") == 0, "listen %s", c.listen);
    EXPECT(c.max_sessions == 7 && c.temperature == 1.5 && c.verbose == 1, "values");
    EXPECT(c.data_dir && !*c.data_dir && c.offset == -9, "data_dir/offset");
    tc_knobs_free(knobs, N_KNOBS, &c);

    /* bool forms; last flag wins; '_' accepted for '-' */
    EXPECT(parse(&c, "--verbose", "--no-verbose", NULL) == TC_OK && c.verbose == 0, "--no-verbose");
    tc_knobs_free(knobs, N_KNOBS, &c);
    EXPECT(parse(&c, "--verbose=true", NULL) == TC_OK && c.verbose == 1, "--verbose=true");
    tc_knobs_free(knobs, N_KNOBS, &c);
    EXPECT(parse(&c, "--verbose=off", NULL) == TC_OK && c.verbose == 0, "--verbose=off");
    tc_knobs_free(knobs, N_KNOBS, &c);
    EXPECT(parse(&c, "--max_sessions", "9", "--max-sessions", "10", NULL) == TC_OK && c.max_sessions == 10,
           "underscore form, last wins: %lld", (long long)c.max_sessions);
    tc_knobs_free(knobs, N_KNOBS, &c);
    EXPECT(parse(&c, "--listen=a=b", NULL) == TC_OK && strcmp(c.listen, "a=b") == 0, "value with '='");
    tc_knobs_free(knobs, N_KNOBS, &c);
    EXPECT(parse(&c, "--", NULL) == TC_OK, "a lone -- is fine");
    tc_knobs_free(knobs, N_KNOBS, &c);
    printf("ok   flags\n");
}

static void test_env(void) {
    cfg_t c;
    setenv("TCONST_LISTEN", "[::1]:9", 1);
    setenv("TCONST_MAX_SESSIONS", "4096", 1);
    setenv("TCONST_TEMPERATURE", "0", 1);
    setenv("TCONST_VERBOSE", "yes", 1);
    setenv("TCONST_DATA_DIR", "/var/lib/tconst", 1);
    EXPECT(parse(&c, NULL) == TC_OK, "%s", tc_error_get());
    EXPECT(strcmp(c.listen, "[::1]:9") == 0 && c.max_sessions == 4096 && c.temperature == 0 && c.verbose == 1 &&
               strcmp(c.data_dir, "/var/lib/tconst") == 0,
           "env values");
    tc_knobs_free(knobs, N_KNOBS, &c);
    clear_env();
    printf("ok   environment\n");
}

static void test_config(void) {
    cfg_t c;
    const char *p = write_config("ok.json", "{\n  \"listen\": \"10.0.0.1:5\",\n  \"max_sessions\": 100,\n"
                                            "  \"temperature\": 1,\n  \"verbose\": true,\n  \"data-dir\": \"/d\"\n}\n");
    EXPECT(parse(&c, "--config", p, NULL) == TC_OK, "%s", tc_error_get());
    EXPECT(strcmp(c.listen, "10.0.0.1:5") == 0 && c.max_sessions == 100 && c.temperature == 1.0 && c.verbose == 1 &&
               strcmp(c.data_dir, "/d") == 0 && c.offset == -3,
           "config values");
    tc_knobs_free(knobs, N_KNOBS, &c);

    setenv("TCONST_CONFIG", p, 1); /* the env names the file too */
    EXPECT(parse(&c, NULL) == TC_OK && c.max_sessions == 100, "TCONST_CONFIG: %s", tc_error_get());
    tc_knobs_free(knobs, N_KNOBS, &c);
    /* --config beats TCONST_CONFIG */
    const char *p2 = write_config("ok2.json", "{\"max-sessions\": 200}");
    EXPECT(parse(&c, "--config=", p2, NULL) != TC_OK, "--config= with an empty value must fail");
    tc_knobs_free(knobs, N_KNOBS, &c);
    char arg[600];
    snprintf(arg, sizeof arg, "--config=%s", p2);
    EXPECT(parse(&c, arg, NULL) == TC_OK && c.max_sessions == 200, "--config= form");
    tc_knobs_free(knobs, N_KNOBS, &c);
    unsetenv("TCONST_CONFIG");

    p = write_config("empty.json", "{}");
    EXPECT(parse(&c, "--config", p, NULL) == TC_OK && c.max_sessions == 64, "empty object");
    tc_knobs_free(knobs, N_KNOBS, &c);
    printf("ok   config file\n");
}

static void test_precedence(void) {
    cfg_t c;
    const char *p = write_config("prec.json", "{\"max-sessions\": 2, \"temperature\": 0.2, \"listen\": \"file\", "
                                              "\"verbose\": true}");
    setenv("TCONST_TEMPERATURE", "0.3", 1);
    setenv("TCONST_LISTEN", "env", 1);
    /* default < file (max-sessions), file < env (temperature), env < flag (listen),
     * file < flag (verbose), default kept (offset) */
    EXPECT(parse(&c, "--config", p, "--listen", "flag", "--no-verbose", NULL) == TC_OK, "%s", tc_error_get());
    EXPECT(c.max_sessions == 2, "file over default: %lld", (long long)c.max_sessions);
    EXPECT(c.temperature == 0.3, "env over file: %g", c.temperature);
    EXPECT(strcmp(c.listen, "flag") == 0, "flag over env: %s", c.listen);
    EXPECT(c.verbose == 0, "flag over file (bool)");
    EXPECT(c.offset == -3, "default kept");
    tc_knobs_free(knobs, N_KNOBS, &c);
    /* without the flag, env wins over the file */
    EXPECT(parse(&c, "--config", p, NULL) == TC_OK && strcmp(c.listen, "env") == 0, "env over file: %s", c.listen);
    tc_knobs_free(knobs, N_KNOBS, &c);
    clear_env();
    printf("ok   precedence\n");
}

static void test_errors(void) {
    cfg_t c;
    tc_status st;
    st = parse(&c, "--bogus", "1", NULL);
    expect_error(st, &c, "unknown flag", "--bogus", NULL);
    st = parse(&c, "-x", NULL);
    expect_error(st, &c, "unknown short flag", "-x", NULL);
    st = parse(&c, "--no-listen", NULL);
    expect_error(st, &c, "--no- on a string", "--no-listen", NULL);
    st = parse(&c, "--max-sessions", NULL);
    expect_error(st, &c, "missing value (end)", "--max-sessions", "needs a value");
    st = parse(&c, "--listen", "--verbose", NULL);
    expect_error(st, &c, "missing value (next flag)", "--listen", "needs a value");
    st = parse(&c, "--config", NULL);
    expect_error(st, &c, "missing --config value", "--config", "needs a value");
    st = parse(&c, "--max-sessions", "12x", NULL);
    expect_error(st, &c, "bad int", "--max-sessions", "12x");
    st = parse(&c, "--max-sessions=", NULL);
    expect_error(st, &c, "empty int", "--max-sessions", "not an integer");
    st = parse(&c, "--offset", "99999999999999999999", NULL);
    expect_error(st, &c, "int overflow", "--offset", "64-bit");
    st = parse(&c, "--temperature", "warm", NULL);
    expect_error(st, &c, "bad double", "--temperature", "warm");
    st = parse(&c, "--temperature", "nan", NULL);
    expect_error(st, &c, "nan double", "--temperature", "finite");
    st = parse(&c, "--verbose=maybe", NULL);
    expect_error(st, &c, "bad bool", "--verbose", "maybe");
    st = parse(&c, "--no-verbose=true", NULL);
    expect_error(st, &c, "value on --no-", "--no-verbose", "takes no value");
    st = parse(&c, "--max-sessions", "0", NULL);
    expect_error(st, &c, "int below range", "--max-sessions", "[1, 4096]");
    st = parse(&c, "--max-sessions", "4097", NULL);
    expect_error(st, &c, "int above range", "--max-sessions", "out of range");
    st = parse(&c, "--temperature=2.5", NULL);
    expect_error(st, &c, "double above range", "--temperature", "[0, 2]");
    st = parse(&c, "extra", NULL);
    expect_error(st, &c, "positional", "\"extra\"", "positional");
    st = parse(&c, "--", "extra", NULL);
    expect_error(st, &c, "positional after --", "\"extra\"", NULL);

    setenv("TCONST_MAX_SESSIONS", "lots", 1);
    st = parse(&c, NULL);
    expect_error(st, &c, "env bad int", "TCONST_MAX_SESSIONS", "lots");
    setenv("TCONST_MAX_SESSIONS", "5000", 1);
    st = parse(&c, NULL);
    expect_error(st, &c, "env out of range", "TCONST_MAX_SESSIONS", "out of range");
    unsetenv("TCONST_MAX_SESSIONS");
    setenv("TCONST_VERBOSE", "", 1);
    st = parse(&c, NULL);
    expect_error(st, &c, "env bad bool", "TCONST_VERBOSE", "not a bool");
    clear_env();

    char missing[300];
    snprintf(missing, sizeof missing, "%s/does-not-exist.json", g_dir);
    st = parse(&c, "--config", missing, NULL);
    expect_error(st, &c, "missing config file", "does-not-exist.json", "No such file");
    setenv("TCONST_CONFIG", missing, 1);
    st = parse(&c, NULL);
    expect_error(st, &c, "missing TCONST_CONFIG file", "does-not-exist.json", NULL);
    unsetenv("TCONST_CONFIG");

    const char *p = write_config("bad.json", "{\n  \"listen\": \"x\",\n  \"max-sessions\": ,\n}\n");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "bad JSON", "bad.json", "line 3");
    p = write_config("trailing.json", "{} {}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "trailing garbage", "trailing.json", "bad JSON");
    p = write_config("array.json", "[1, 2]");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "non-object root", "array.json", "JSON object");
    p = write_config("unknown.json", "{\"max-sessions\": 3, \"max-session\": 4}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "unknown config key", "unknown key", "\"max-session\"");
    p = write_config("type1.json", "{\"max-sessions\": \"8\"}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "string for int", "\"max-sessions\"", "expected an integer");
    p = write_config("type2.json", "{\"max-sessions\": 8.5}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "fraction for int", "\"max-sessions\"", "8.5");
    p = write_config("type3.json", "{\"listen\": 80}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "number for string", "\"listen\"", "expected a string");
    p = write_config("type4.json", "{\"verbose\": 1}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "number for bool", "\"verbose\"", "true or false");
    p = write_config("type5.json", "{\"temperature\": null}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "null for double", "\"temperature\"", "expected a number");
    p = write_config("range.json", "{\"temperature\": 3}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "config out of range", "\"temperature\"", "out of range");
    p = write_config("dup.json", "{\"data-dir\": \"a\", \"data_dir\": \"b\"}");
    st = parse(&c, "--config", p, NULL);
    expect_error(st, &c, "key given twice", "data_dir", "more than once");

    /* A bad default is a table bug: TC_ERR_INTERNAL naming the knob. */
    static const tc_knob bad[] = {{"n", TC_KNOB_INT, "ten", 0, 0, "", 0}};
    int64_t v;
    char *argv[] = {"prog"};
    st = tc_knobs_parse(bad, 1, &v, 1, argv, "prog", "", NULL);
    EXPECT(st == TC_ERR_INTERNAL && strstr(tc_error_get(), "knob n"), "bad default: %d %s", (int)st, tc_error_get());
}

static char *capture(void (*fn)(FILE *)) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fn(f);
    fclose(f);
    return buf;
}

static void help_to(FILE *f) { tc_knobs_help(knobs, N_KNOBS, f, "prog", "A test program."); }
static void md_to(FILE *f) { tc_knobs_markdown(knobs, N_KNOBS, f, "prog"); }

static void test_help(void) {
    char *h = capture(help_to);
    const char *want[] = {"usage: prog", "A test program.", "--config FILE", "TCONST_CONFIG", "--help",
                          "--[no-]verbose", "range [1, 4096]", "default 64", "default \"127.0.0.1:50051\""};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) EXPECT(strstr(h, want[i]), "help lacks %s", want[i]);
    for (int i = 0; i < N_KNOBS; i++) {
        char flag[64], env[64];
        snprintf(flag, sizeof flag, "%s", knobs[i].name);
        tc_knobs_env_name(knobs[i].name, env, sizeof env);
        EXPECT(strstr(h, flag), "help lacks knob %s", flag);
        EXPECT(strstr(h, env), "help lacks env %s", env);
        EXPECT(strstr(h, knobs[i].help), "help lacks help text of %s", flag);
    }
    free(h);

    char *m = capture(md_to);
    EXPECT(strstr(m, "## prog"), "markdown title");
    EXPECT(strstr(m, "| name | env | type | default | range | help |"), "markdown header");
    EXPECT(strstr(m, "| `--max-sessions` | `TCONST_MAX_SESSIONS` | int | `64` | [1, 4096] | maximum open sessions |"),
           "markdown row:\n%s", m);
    EXPECT(strstr(m, "log \\| more"), "markdown escapes |");
    free(m);

    /* --help anywhere wins, even over an unknown flag; defaults filled in */
    cfg_t c;
    char *argv[] = {"prog", "--bogus", "--help"};
    int shown = 0;
    fflush(stdout);
    EXPECT(tc_knobs_parse(knobs, N_KNOBS, &c, 3, argv, "prog", "A test program.", &shown) == TC_OK && shown == 1,
           "--help");
    EXPECT(c.max_sessions == 64 && c.listen && strcmp(c.listen, "127.0.0.1:50051") == 0, "defaults after --help");
    tc_knobs_free(knobs, N_KNOBS, &c);
    char *argv2[] = {"prog", "-h"};
    EXPECT(tc_knobs_parse(knobs, N_KNOBS, &c, 2, argv2, "prog", "", &shown) == TC_OK && shown == 1, "-h");
    tc_knobs_free(knobs, N_KNOBS, &c);
    /* "-h" as the value of a string flag is a value, not help */
    char *argv3[] = {"prog", "--listen", "-h"};
    EXPECT(tc_knobs_parse(knobs, N_KNOBS, &c, 3, argv3, "prog", "", &shown) == TC_OK && shown == 0 &&
               strcmp(c.listen, "-h") == 0,
           "value -h");
    tc_knobs_free(knobs, N_KNOBS, &c);
    printf("ok   help and markdown\n");
}

static void dump_to(FILE *f);
static cfg_t g_dump_cfg;
static void dump_to(FILE *f) { tc_knobs_dump(knobs, N_KNOBS, &g_dump_cfg, f); }

static void test_dump(void) {
    EXPECT(parse(&g_dump_cfg, "--temperature", "0.1", "--verbose", NULL) == TC_OK, "%s", tc_error_get());
    char *d = capture(dump_to);
    const char *want = "listen=127.0.0.1:50051\nmax-sessions=64\ntemperature=0.1\nverbose=true\ndata-dir=\noffset=-3\n";
    EXPECT(strcmp(d, want) == 0, "dump:\n%s", d);
    free(d);
    tc_knobs_free(knobs, N_KNOBS, &g_dump_cfg);
    char env[64];
    EXPECT(strcmp(tc_knobs_env_name("max-sessions", env, sizeof env), "TCONST_MAX_SESSIONS") == 0, "env name");
    EXPECT(strcmp(tc_knobs_env_name("max-sessions", env, 10), "TCONST_MA") == 0, "env name truncates: %s", env);
    printf("ok   dump\n");
}

/* a log line in text format is one line: control characters in the
 * message (an id a client chose) are escaped, never written raw */
static void test_log_one_line(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/log.txt", g_dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w");
    EXPECT(f && saved >= 0, "log: open %s", path);
    if (!f || saved < 0) return;
    dup2(fileno(f), 2);
    tc_log_write(TC_LOG_ERROR, "test", "t.c", 1, "session %s closed", "evil\n2026-01-01T00:00:00Z error [x] forged\x7f");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    char buf[1024] = "";
    f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
    EXPECT(lines == 1 && strstr(buf, "evil\\x0a2026") && strstr(buf, "forged\\x7f closed (t.c:1)"),
           "log: a message with a newline and DEL is one escaped line: %s", buf);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the log if a check crashes */
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/tc_knobs_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 2; }
    clear_env();

    test_defaults();
    test_flags();
    test_env();
    test_config();
    test_precedence();
    test_errors();
    test_help();
    test_dump();
    test_log_one_line();

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", g_dir);
    printf("%s: %d checks, %d failed\n", g_fail ? "FAIL" : "PASS", g_n, g_fail);
    return g_fail ? 1 : 0;
}
