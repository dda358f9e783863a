/* knobs.c — the knob table parser: defaults, config file (cJSON),
 * environment, flags; --help, markdown and dump from the same table.
 * Not a getopt replacement: see knobs.h for what is accepted. */
#include "knobs.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TC_KNOBS_MAX_CONFIG_BYTES (1u << 20) /* a config file is a few lines */

/* ---- field access --------------------------------------------------- */

static void *field(const tc_knob *k, void *cfg) { return (char *)cfg + k->offset; }
static const void *cfield(const tc_knob *k, const void *cfg) { return (const char *)cfg + k->offset; }

static tc_status set_str(const tc_knob *k, void *cfg, const char *v) {
    char **p = field(k, cfg);
    char *d = strdup(v);
    if (!d) return TC_FAIL(TC_ERR_NOMEM, "knob %s: out of memory", k->name);
    free(*p);
    *p = d;
    return TC_OK;
}

static const char *type_name(tc_knob_type t) {
    switch (t) {
    case TC_KNOB_STR: return "string";
    case TC_KNOB_INT: return "int";
    case TC_KNOB_DOUBLE: return "number";
    case TC_KNOB_BOOL: return "bool";
    }
    return "?";
}

static int has_range(const tc_knob *k) {
    return (k->type == TC_KNOB_INT || k->type == TC_KNOB_DOUBLE) && k->hi > k->lo;
}

/* Shortest text that reads back as the same double. */
static void fmt_double(char *buf, size_t cap, double v) {
    if (isnan(v)) { snprintf(buf, cap, "nan"); return; }
    if (isinf(v)) { snprintf(buf, cap, v > 0 ? "inf" : "-inf"); return; }
    if (v == trunc(v) && fabs(v) < 1e15) { snprintf(buf, cap, "%.0f", v); return; } /* 10, not 1e+01 */
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void fmt_bound(char *buf, size_t cap, const tc_knob *k, double v) {
    if (k->type == TC_KNOB_INT) snprintf(buf, cap, "%.0f", v);
    else fmt_double(buf, cap, v);
}

static void fmt_range(char *buf, size_t cap, const tc_knob *k) {
    char a[40], b[40];
    fmt_bound(a, sizeof a, k, k->lo);
    fmt_bound(b, sizeof b, k, k->hi);
    snprintf(buf, cap, "[%s, %s]", a, b);
}

char *tc_knobs_env_name(const char *name, char *buf, size_t cap) {
    if (cap == 0) return buf;
    size_t o = (size_t)snprintf(buf, cap, "TCONST_");
    for (const char *s = name; *s && o + 1 < cap; s++)
        buf[o++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
    if (o >= cap) o = cap - 1;
    buf[o] = '\0';
    return buf;
}

/* ---- value parsing: one path for defaults, env, flags --------------- */

static int parse_bool(const char *s, int *out) {
    static const char *yes[] = {"true", "1", "yes", "on"}, *no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = 1; return 0; }
        if (strcasecmp(s, no[i]) == 0) { *out = 0; return 0; }
    }
    return -1;
}

static tc_status check_range(const tc_knob *k, double v, const char *where, const char *text) {
    if (has_range(k) && (v < k->lo || v > k->hi)) {
        char r[96];
        fmt_range(r, sizeof r, k);
        return TC_FAIL(TC_ERR_INVALID, "%s: %s is out of range %s", where, text, r);
    }
    return TC_OK;
}

static tc_status set_int(const tc_knob *k, void *cfg, int64_t v, const char *where, const char *text) {
    TC_CHECK(check_range(k, (double)v, where, text));
    *(int64_t *)field(k, cfg) = v;
    return TC_OK;
}

static tc_status set_double(const tc_knob *k, void *cfg, double v, const char *where, const char *text) {
    TC_CHECK(check_range(k, v, where, text));
    *(double *)field(k, cfg) = v;
    return TC_OK;
}

/* where: "flag --max-sessions", "environment variable TCONST_X", ... */
static tc_status set_text(const tc_knob *k, void *cfg, const char *s, const char *where) {
    switch (k->type) {
    case TC_KNOB_STR: return set_str(k, cfg, s);
    case TC_KNOB_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0')
            return TC_FAIL(TC_ERR_INVALID, "%s: \"%s\" is not an integer", where, s);
        if (errno == ERANGE)
            return TC_FAIL(TC_ERR_INVALID, "%s: %s is out of range for a 64-bit integer", where, s);
        return set_int(k, cfg, (int64_t)v, where, s);
    }
    case TC_KNOB_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0' || !isfinite(v))
            return TC_FAIL(TC_ERR_INVALID, "%s: \"%s\" is not a finite number", where, s);
        if (errno == ERANGE && fabs(v) > 1.0)
            return TC_FAIL(TC_ERR_INVALID, "%s: %s overflows a double", where, s);
        return set_double(k, cfg, v, where, s);
    }
    case TC_KNOB_BOOL: {
        int b;
        if (parse_bool(s, &b) != 0)
            return TC_FAIL(TC_ERR_INVALID, "%s: \"%s\" is not a bool (true|false|1|0|yes|no|on|off)", where, s);
        *(int *)field(k, cfg) = b;
        return TC_OK;
    }
    }
    return TC_FAIL(TC_ERR_INTERNAL, "knob %s: unknown type %d", k->name, (int)k->type);
}

/* ---- names ---------------------------------------------------------- */

/* Equal up to '-' == '_'; b has length blen (not NUL-terminated). */
static int name_eq(const char *a, const char *b, size_t blen) {
    size_t i = 0;
    for (; i < blen && a[i]; i++) {
        char x = a[i] == '_' ? '-' : a[i], y = b[i] == '_' ? '-' : b[i];
        if (x != y) return 0;
    }
    return i == blen && a[i] == '\0';
}

static int find_knob(const tc_knob *t, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (name_eq(t[i].name, name, len)) return i;
    return -1;
}

/* ---- config file ---------------------------------------------------- */

static tc_status read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return TC_FAIL(TC_ERR_INVALID, "config file %s: %s", path, strerror(errno));
    char *buf = malloc(TC_KNOBS_MAX_CONFIG_BYTES + 1);
    if (!buf) { fclose(f); return TC_FAIL(TC_ERR_NOMEM, "config file %s: out of memory", path); }
    size_t n = fread(buf, 1, TC_KNOBS_MAX_CONFIG_BYTES + 1, f);
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return TC_FAIL(TC_ERR_INVALID, "config file %s: read error", path); }
    if (n > TC_KNOBS_MAX_CONFIG_BYTES) {
        free(buf);
        return TC_FAIL(TC_ERR_INVALID, "config file %s: larger than %u bytes", path, TC_KNOBS_MAX_CONFIG_BYTES);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return TC_OK;
}

static tc_status apply_json_value(const tc_knob *k, void *cfg, const cJSON *v, const char *where) {
    char text[64];
    switch (k->type) {
    case TC_KNOB_STR:
        if (!cJSON_IsString(v))
            return TC_FAIL(TC_ERR_INVALID, "%s: expected a string", where);
        return set_str(k, cfg, v->valuestring);
    case TC_KNOB_INT: {
        if (!cJSON_IsNumber(v))
            return TC_FAIL(TC_ERR_INVALID, "%s: expected an integer", where);
        double d = v->valuedouble;
        fmt_double(text, sizeof text, d);
        if (!isfinite(d) || d != floor(d) || fabs(d) >= 9223372036854775808.0)
            return TC_FAIL(TC_ERR_INVALID, "%s: %s is not a 64-bit integer", where, text);
        return set_int(k, cfg, (int64_t)d, where, text);
    }
    case TC_KNOB_DOUBLE:
        if (!cJSON_IsNumber(v))
            return TC_FAIL(TC_ERR_INVALID, "%s: expected a number", where);
        fmt_double(text, sizeof text, v->valuedouble);
        if (!isfinite(v->valuedouble))
            return TC_FAIL(TC_ERR_INVALID, "%s: %s is not a finite number", where, text);
        return set_double(k, cfg, v->valuedouble, where, text);
    case TC_KNOB_BOOL:
        if (!cJSON_IsBool(v))
            return TC_FAIL(TC_ERR_INVALID, "%s: expected true or false", where);
        *(int *)field(k, cfg) = cJSON_IsTrue(v) ? 1 : 0;
        return TC_OK;
    }
    return TC_FAIL(TC_ERR_INTERNAL, "knob %s: unknown type %d", k->name, (int)k->type);
}

static tc_status apply_config(const tc_knob *t, int n, void *cfg, const char *path) {
    char *buf = NULL;
    size_t len = 0;
    tc_status st = TC_OK;
    cJSON *root = NULL;
    unsigned char *seen = NULL;

    TC_CHECK(read_file(path, &buf, &len));
    if (memchr(buf, '\0', len)) {
        st = TC_FAIL(TC_ERR_INVALID, "config file %s: contains a NUL byte (not a JSON text file)", path);
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(buf, &end, 1); /* 1: nothing but whitespace may follow */
    if (!root) {
        /* cJSON reports where it stopped; turn that into line:col. */
        const char *at = end ? end : cJSON_GetErrorPtr();
        int line = 1, col = 1;
        if (at && at >= buf && at <= buf + len)
            for (const char *p = buf; p < at; p++) {
                if (*p == '\n') { line++; col = 1; } else col++;
            }
        st = TC_FAIL(TC_ERR_INVALID, "config file %s: bad JSON near line %d column %d", path, line, col);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        st = TC_FAIL(TC_ERR_INVALID, "config file %s: top level must be a JSON object", path);
        goto fail;
    }
    seen = calloc((size_t)(n > 0 ? n : 1), 1);
    if (!seen) { st = TC_FAIL(TC_ERR_NOMEM, "config file %s: out of memory", path); goto fail; }
    for (const cJSON *c = root->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        int i = find_knob(t, n, key, strlen(key));
        if (i < 0) {
            st = TC_FAIL(TC_ERR_INVALID, "config file %s: unknown key \"%s\"", path, key);
            goto fail;
        }
        char where[512];
        snprintf(where, sizeof where, "config file %s: key \"%s\"", path, key);
        if (seen[i]) {
            st = TC_FAIL(TC_ERR_INVALID, "%s: %s is set more than once", where, t[i].name);
            goto fail;
        }
        seen[i] = 1;
        TC_CHECK_GOTO(apply_json_value(&t[i], cfg, c, where));
    }
fail:
    free(seen);
    cJSON_Delete(root);
    free(buf);
    return st;
}

/* ---- flags ---------------------------------------------------------- */

/* Pre-scan, never failing: is help asked for, and which --config? Knows
 * which flags take a value so that `--listen -h` is not read as help. */
static void prescan(const tc_knob *t, int n, int argc, char **argv, int *help, const char **config) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) return;
        if (strcmp(a, "-h") == 0) { *help = 1; continue; }
        if (strncmp(a, "--", 2) != 0) continue;
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (name_eq("help", name, len)) { *help = 1; continue; }
        if (name_eq("config", name, len)) {
            if (eq) *config = eq + 1;
            else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) *config = argv[++i];
            continue;
        }
        int k = find_knob(t, n, name, len);
        if (k >= 0 && t[k].type != TC_KNOB_BOOL && !eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) i++;
    }
}

static tc_status apply_flags(const tc_knob *t, int n, void *cfg, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc)
                return TC_FAIL(TC_ERR_INVALID, "unexpected argument \"%s\" (no positional arguments are accepted)",
                               argv[i + 1]);
            return TC_OK;
        }
        if (a[0] != '-' || a[1] == '\0')
            return TC_FAIL(TC_ERR_INVALID, "unexpected argument \"%s\" (no positional arguments are accepted)", a);
        if (a[1] != '-') return TC_FAIL(TC_ERR_INVALID, "unknown flag %s (see --help)", a);

        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 0) return TC_FAIL(TC_ERR_INVALID, "unknown flag %s (see --help)", a);
        if (name_eq("config", name, len)) {
            if (!eq && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
                return TC_FAIL(TC_ERR_INVALID, "flag --config needs a value (a JSON file)");
            if (!eq) i++;
            continue;
        }
        char where[256];
        int k = find_knob(t, n, name, len);
        int negated = 0;
        if (k < 0 && len > 3 && strncmp(name, "no-", 3) == 0) {
            int kb = find_knob(t, n, name + 3, len - 3);
            if (kb >= 0 && t[kb].type == TC_KNOB_BOOL) { k = kb; negated = 1; }
        }
        if (k < 0) return TC_FAIL(TC_ERR_INVALID, "unknown flag --%.*s (see --help)", (int)len, name);
        snprintf(where, sizeof where, "flag --%.*s", (int)len, name);

        if (t[k].type == TC_KNOB_BOOL) {
            if (negated && eq) return TC_FAIL(TC_ERR_INVALID, "%s takes no value", where);
            if (eq) TC_CHECK(set_text(&t[k], cfg, eq + 1, where));
            else *(int *)field(&t[k], cfg) = !negated;
            continue;
        }
        const char *v;
        if (eq) v = eq + 1;
        else {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
                return TC_FAIL(TC_ERR_INVALID, "%s needs a value (%s)", where, type_name(t[k].type));
            v = argv[++i];
        }
        TC_CHECK(set_text(&t[k], cfg, v, where));
    }
    return TC_OK;
}

/* ---- parse ---------------------------------------------------------- */

void tc_knobs_free(const tc_knob *t, int n, void *cfg) {
    for (int i = 0; i < n; i++)
        if (t[i].type == TC_KNOB_STR) {
            char **p = field(&t[i], cfg);
            free(*p);
            *p = NULL;
        }
}

static tc_status apply_defaults(const tc_knob *t, int n, void *cfg) {
    for (int i = 0; i < n; i++)
        if (t[i].type == TC_KNOB_STR) *(char **)field(&t[i], cfg) = NULL;
    for (int i = 0; i < n; i++) {
        if (!t[i].name || strcmp(t[i].name, "config") == 0 || strcmp(t[i].name, "help") == 0)
            return TC_FAIL(TC_ERR_INTERNAL, "knob table entry %d: reserved or missing name", i);
    }
    for (int i = 0; i < n; i++) {
        const char *d = t[i].def;
        if (!d) d = t[i].type == TC_KNOB_STR ? "" : t[i].type == TC_KNOB_BOOL ? "false" : "0";
        char where[128];
        snprintf(where, sizeof where, "default of knob %s", t[i].name);
        tc_status st = set_text(&t[i], cfg, d, where);
        if (st == TC_ERR_INVALID) return TC_ERR_INTERNAL; /* message already names it */
        if (st != TC_OK) return st;
    }
    return TC_OK;
}

static tc_status apply_env(const tc_knob *t, int n, void *cfg) {
    for (int i = 0; i < n; i++) {
        char env[128], where[160];
        tc_knobs_env_name(t[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (!v) continue;
        snprintf(where, sizeof where, "environment variable %s", env);
        TC_CHECK(set_text(&t[i], cfg, v, where));
    }
    return TC_OK;
}

tc_status tc_knobs_parse(const tc_knob *t, int n, void *cfg, int argc, char **argv,
                         const char *prog, const char *summary, int *help_shown) {
    tc_status st;
    int help = 0;
    const char *config = NULL;
    if (help_shown) *help_shown = 0;

    TC_CHECK_GOTO(apply_defaults(t, n, cfg));
    prescan(t, n, argc, argv, &help, &config);
    if (help) {
        tc_knobs_help(t, n, stdout, prog, summary);
        if (help_shown) *help_shown = 1;
        return TC_OK;
    }
    if (!config) {
        config = getenv("TCONST_CONFIG");
        if (config && !*config) config = NULL;
    }
    if (config) TC_CHECK_GOTO(apply_config(t, n, cfg, config));
    TC_CHECK_GOTO(apply_env(t, n, cfg));
    TC_CHECK_GOTO(apply_flags(t, n, cfg, argc, argv));
    return TC_OK;
fail:
    tc_knobs_free(t, n, cfg);
    return st;
}

/* ---- help, markdown, dump ------------------------------------------- */

/* Non-string values as text; strings are written directly by the caller. */
static void fmt_value(char *buf, size_t cap, const tc_knob *k, const void *cfg) {
    switch (k->type) {
    case TC_KNOB_STR: break;
    case TC_KNOB_INT: snprintf(buf, cap, "%" PRId64, *(const int64_t *)cfield(k, cfg)); return;
    case TC_KNOB_DOUBLE: fmt_double(buf, cap, *(const double *)cfield(k, cfg)); return;
    case TC_KNOB_BOOL: snprintf(buf, cap, "%s", *(const int *)cfield(k, cfg) ? "true" : "false"); return;
    }
    snprintf(buf, cap, "?");
}

/* The default as shown to people: the table text, normalised for bools. */
static const char *def_text(const tc_knob *k) {
    if (k->def) return k->def;
    return k->type == TC_KNOB_STR ? "" : k->type == TC_KNOB_BOOL ? "false" : "0";
}

void tc_knobs_help(const tc_knob *t, int n, FILE *f, const char *prog, const char *summary) {
    fprintf(f, "usage: %s [flags]\n", prog ? prog : "prog");
    if (summary && *summary) fprintf(f, "\n%s\n", summary);
    fprintf(f, "\nEvery flag is also an environment variable (shown) and a key of the JSON\n"
               "config file; precedence: default < config file < environment < flag.\n\n");
    fprintf(f, "  --config FILE\n      JSON object of knob values; env TCONST_CONFIG\n");
    fprintf(f, "  -h, --help\n      print this help and exit\n");
    for (int i = 0; i < n; i++) {
        const tc_knob *k = &t[i];
        char env[128], range[112] = "";
        tc_knobs_env_name(k->name, env, sizeof env);
        if (k->type == TC_KNOB_BOOL) fprintf(f, "  --[no-]%s\n", k->name);
        else fprintf(f, "  --%s %s\n", k->name, k->type == TC_KNOB_STR ? "STR" : k->type == TC_KNOB_INT ? "INT" : "NUM");
        if (has_range(k)) {
            char r[96]; /* "[a, b]": two 40-byte bounds */
            fmt_range(r, sizeof r, k);
            snprintf(range, sizeof range, "; range %s", r);
        }
        fprintf(f, "      %s\n", k->help ? k->help : "");
        if (k->type == TC_KNOB_STR) fprintf(f, "      (%s; default \"%s\"; env %s)\n", type_name(k->type), def_text(k), env);
        else fprintf(f, "      (%s; default %s%s; env %s)\n", type_name(k->type), def_text(k), range, env);
    }
}

static void md_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else if (*s == '\n') fputc(' ', f);
        else fputc(*s, f);
    }
}

void tc_knobs_markdown(const tc_knob *t, int n, FILE *f, const char *title) {
    fprintf(f, "## %s\n\n", title ? title : "Configuration");
    fprintf(f, "Each knob is a flag `--name VALUE`, an environment variable and a key of the\n"
               "JSON config file (`--config FILE` or `TCONST_CONFIG`). Precedence: default <\n"
               "config file < environment < flag.\n\n");
    fprintf(f, "| name | env | type | default | range | help |\n");
    fprintf(f, "| --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < n; i++) {
        const tc_knob *k = &t[i];
        char env[128], range[96] = "";
        tc_knobs_env_name(k->name, env, sizeof env);
        if (has_range(k)) fmt_range(range, sizeof range, k);
        fprintf(f, "| `--%s` | `%s` | %s | ", k->name, env, type_name(k->type));
        const char *d = def_text(k);
        if (*d) { fputc('`', f); md_cell(f, d); fputc('`', f); }
        else fputs(k->type == TC_KNOB_STR ? "`\"\"`" : "", f);
        fprintf(f, " | %s | ", *range ? range : "");
        md_cell(f, k->help ? k->help : "");
        fputs(" |\n", f);
    }
    fputc('\n', f);
}

void tc_knobs_dump(const tc_knob *t, int n, const void *cfg, FILE *f) {
    for (int i = 0; i < n; i++) {
        char v[64];
        if (t[i].type == TC_KNOB_STR) {
            const char *s = *(char *const *)cfield(&t[i], cfg);
            fprintf(f, "%s=%s\n", t[i].name, s ? s : "");
            continue;
        }
        fmt_value(v, sizeof v, &t[i], cfg);
        fprintf(f, "%s=%s\n", t[i].name, v);
    }
}
