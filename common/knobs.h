/* knobs.h — one table of knobs feeding flags, environment, config file,
 * --help and docs/config.md (the valkey config-table habit).
 *
 * Each program declares its knobs once, as a `tc_knob` array whose entries
 * point (offsetof) into the program's own config struct. tc_knobs_parse
 * fills that struct from, lowest to highest precedence:
 *
 *   default  <  config file  <  environment  <  flag
 *
 *   flag         --max-sessions 64, --max-sessions=64; a bool is
 *                --name, --no-name, --name=true|false (no separate value)
 *   environment  TCONST_MAX_SESSIONS=64 (upper case, '-' -> '_')
 *   config file  a JSON object, {"max-sessions": 64} or {"max_sessions": 64};
 *                the file is named by --config FILE or TCONST_CONFIG
 *                (the flag wins). Values keep their JSON type: a string for
 *                STR, an integral number for INT, a number for DOUBLE,
 *                true/false for BOOL.
 *
 * Bool text (env, --name=VALUE) is true|false|1|0|yes|no|on|off.
 * `--config` and `--help`/`-h` are built in; the table must not declare
 * them. Flag and key names also accept '_' in place of '-'.
 *
 * This is not a general getopt: no short options besides -h, no
 * positional arguments (any is an error), no repeated-value lists. It does
 * not watch files or reload. */
#ifndef TC_KNOBS_H
#define TC_KNOBS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

typedef enum { TC_KNOB_STR, TC_KNOB_INT, TC_KNOB_DOUBLE, TC_KNOB_BOOL } tc_knob_type;

typedef struct {
    const char *name;  /* "max-sessions": lower case, digits, '-'           */
    tc_knob_type type;
    const char *def;   /* default as text ("64", "0.5", "true"); NULL = ""
                          for STR, 0 / false otherwise                     */
    double lo, hi;     /* inclusive range for INT/DOUBLE, checked when
                          hi > lo; lo = hi = 0 means unbounded             */
    const char *help;  /* one sentence, no trailing period needed          */
    size_t offset;     /* offsetof() into the caller's config struct, field
                          type by knob type: STR char* (owned, strdup'd,
                          never NULL after parse), INT int64_t, DOUBLE
                          double, BOOL int (0/1)                           */
} tc_knob;

/* Fills every knob field of cfg (prior contents are overwritten, not
 * freed). Returns TC_OK, or TC_ERR_INVALID with tc_error_get() naming the
 * flag / environment variable / config key and the problem: unknown flag,
 * missing value, bad number or bool, out of range, unreadable config file,
 * bad JSON, unknown config key, wrong JSON type, positional argument.
 * TC_ERR_INTERNAL when a table default does not parse (a table bug).
 * On error every STR field is freed and set to NULL; tc_knobs_free is safe
 * to call either way.
 * If --help or -h is given: prints tc_knobs_help to stdout, sets
 * *help_shown = 1 (when help_shown is non-NULL) and returns TC_OK with the
 * defaults filled in; otherwise *help_shown = 0.
 * argv[0] is the program, as in main. prog and summary are for --help. */
tc_status tc_knobs_parse(const tc_knob *t, int n, void *cfg, int argc, char **argv,
                         const char *prog, const char *summary, int *help_shown);

/* --help text: usage line, summary, then each knob with its flag form,
 * type, default, range, help and environment variable name. */
void tc_knobs_help(const tc_knob *t, int n, FILE *f, const char *prog, const char *summary);

/* A docs/config.md section: "## title", a line on sources and precedence,
 * then a table  name | env | type | default | range | help. */
void tc_knobs_markdown(const tc_knob *t, int n, FILE *f, const char *title);

/* Frees the STR fields of cfg and sets them to NULL. */
void tc_knobs_free(const tc_knob *t, int n, void *cfg);

/* Current values as "name=value" lines, in table order (for ServerInfo and
 * the startup log). Strings are written as they are, unquoted. */
void tc_knobs_dump(const tc_knob *t, int n, const void *cfg, FILE *f);

/* "max-sessions" -> "TCONST_MAX_SESSIONS" into buf (NUL-terminated,
 * truncated to cap). Returns buf. */
char *tc_knobs_env_name(const char *name, char *buf, size_t cap);

#endif
