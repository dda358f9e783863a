/* util.c — argument parsing, id files and model loading for the CLI. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int tc_cli_fail(const char *cmd, tc_status st) {
    const char *e = tc_error_get();
    fprintf(stderr, "tconst %s: error: %s\n", cmd, e ? e : tc_status_str(st));
    return 1;
}

int tc_cli_usage_fail(const char *cmd, tc_status st) {
    (void)tc_cli_fail(cmd, st);
    return 2;
}

int tc_cli_missing_value(const char *cmd, const char *flag) {
    fprintf(stderr, "tconst %s: error: %s needs a value\n", cmd, flag);
    return 2;
}

tc_status tc_cli_stdout_flush(void) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) /* ferror: an earlier write failed */
        return TC_FAIL(TC_ERR_IO, "writing standard output: %s", errno ? strerror(errno) : "write error");
    return TC_OK;
}

tc_status tc_cli_int(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    if (!v) return TC_FAIL(TC_ERR_INVALID, "%s needs a value", flag);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    /* strtoll would also take leading blanks and a '+' */
    if (!(v[0] == '-' ? v[1] >= '0' && v[1] <= '9' : v[0] >= '0' && v[0] <= '9') || end == v || *end)
        return TC_FAIL(TC_ERR_INVALID, "%s: '%s' is not an integer", flag, v);
    if (errno == ERANGE)
        return TC_FAIL(TC_ERR_INVALID, "%s: %s out of range [%lld, %lld]", flag, v, (long long)lo, (long long)hi);
    if (errno) return TC_FAIL(TC_ERR_INVALID, "%s: '%s' is not an integer", flag, v);
    if (x < lo || x > hi) return TC_FAIL(TC_ERR_INVALID, "%s: %lld out of range [%lld, %lld]", flag, x, (long long)lo, (long long)hi);
    *out = x;
    return TC_OK;
}

tc_status tc_cli_u64(const char *flag, const char *v, uint64_t *out) {
    if (!v) return TC_FAIL(TC_ERR_INVALID, "%s needs a value", flag);
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    /* strtoull would also take blanks, a '+' and a '-' (wrapping it) */
    if (!(v[0] >= '0' && v[0] <= '9') || *end) return TC_FAIL(TC_ERR_INVALID, "%s: '%s' is not an integer in [0, 2^64)", flag, v);
    if (errno == ERANGE) return TC_FAIL(TC_ERR_INVALID, "%s: %s out of range [0, 18446744073709551615]", flag, v);
    *out = (uint64_t)x;
    return TC_OK;
}

tc_status tc_cli_float(const char *flag, const char *v, double lo, double hi, double *out) {
    if (!v) return TC_FAIL(TC_ERR_INVALID, "%s needs a value", flag);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || (!isfinite(x) && errno != ERANGE) || v[0] == ' ' || (v[0] >= '\t' && v[0] <= '\r'))
        return TC_FAIL(TC_ERR_INVALID, "%s: '%s' is not a number", flag, v);
    if (errno == ERANGE) /* too large, or too small to be told from 0 */
        return TC_FAIL(TC_ERR_INVALID, "%s: %s out of range [%g, %g]", flag, v, lo, hi);
    if (x < lo || x > hi) return TC_FAIL(TC_ERR_INVALID, "%s: %g out of range [%g, %g]", flag, x, lo, hi);
    *out = x;
    return TC_OK;
}

tc_status tc_cli_model_dir(const char *arg, char *out, size_t n) {
    if (arg && *arg && strcmp(arg, "builtin:tiny") != 0) {
        snprintf(out, n, "%s", arg);
        return TC_OK;
    }
    /* the one built-in model of tconstd and the workers (model/init.c):
     * made once per user, used only when this user made it */
    return tc_model_builtin_dir(out, n);
}

tc_status tc_cli_load(const char *dir, tc_backend *be, tc_model **m) {
    TC_CHECK(tc_backend_cpu_init(be, 0));
    return tc_model_load(m, dir, be);
}

tc_status tc_parse_ids(const char *text, const char *label, int32_t **ids, int64_t *n) {
    int64_t cap = 256, k = 0;
    int32_t *v = malloc((size_t)cap * 4);
    if (!v) return TC_FAIL(TC_ERR_NOMEM, "out of memory");
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        /* digits only: strtoll would also take a sign or a vertical tab */
        if (*p < '0' || *p > '9' || end == p || errno || (*end && !strchr(" \t\r\n,", *end)) || x < 0 || x > INT32_MAX) {
            int len = 0;
            while (p[len] && !strchr(" \t\r\n,", p[len]) && len < 32) len++;
            free(v);
            return TC_FAIL(TC_ERR_INVALID, "%s: token %lld '%.*s' is not a non-negative 32-bit integer", label,
                           (long long)k, len, p);
        }
        if (k == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * 4);
            if (!nv) { free(v); return TC_FAIL(TC_ERR_NOMEM, "out of memory"); }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = k;
    return TC_OK;
}

tc_status tc_read_ids_file(const char *path, int32_t **ids, int64_t *n) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return TC_FAIL(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) { /* fopen takes a directory; reading it fails */
        if (f != stdin) fclose(f);
        return TC_FAIL(TC_ERR_IO, "%s: is a directory, not a file of token ids", path);
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t r;
    errno = 0;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (f != stdin) fclose(f);
    if (!buf) return TC_FAIL(TC_ERR_NOMEM, "out of memory reading %s", path);
    if (err) {
        free(buf);
        return TC_FAIL(TC_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    buf[len] = 0;
    if (strlen(buf) != len) { free(buf); return TC_FAIL(TC_ERR_INVALID, "%s: contains a NUL byte", path); }
    tc_status st = tc_parse_ids(buf, path, ids, n);
    free(buf);
    return st;
}
