/* cli.h — shared helpers of the `tconst` command-line tool. */
#ifndef TC_CLI_H
#define TC_CLI_H

#include <stdint.h>

#include "../common/status.h"
#include "../kernels/backend.h"
#include "../model/weights.h"

/* Prints "tconst <cmd>: <last error>" on one line and returns 1. */
int tc_cli_fail(const char *cmd, tc_status st);

/* The same for a usage error -- a flag's value that is not one it takes --
 * and returns 2: every tconst command exits 2 on a bad command line (an
 * unknown flag, a missing or bad value) and 1 when the work itself fails. */
int tc_cli_usage_fail(const char *cmd, tc_status st);

/* Prints "tconst <cmd>: error: <flag> needs a value" and returns 2 (usage). */
int tc_cli_missing_value(const char *cmd, const char *flag);

/* Flushes standard output; a write that failed now or earlier (full disk,
 * closed pipe) is TC_ERR_IO "writing standard output: ...". */
tc_status tc_cli_stdout_flush(void);

/* Parses an integer / float flag value strictly, naming the flag: digits
 * (and a leading '-') only for an integer; a value past the type's range,
 * or a float too small to tell from 0, is "out of range". */
tc_status tc_cli_int(const char *flag, const char *v, int64_t lo, int64_t hi, int64_t *out);
/* a seed: all of uint64, as the API's SamplingParams.seed */
tc_status tc_cli_u64(const char *flag, const char *v, uint64_t *out);
tc_status tc_cli_float(const char *flag, const char *v, double lo, double hi, double *out);

/* "DIR", or empty/"builtin:tiny" for the built-in tiny tconstformer
 * (materialized once under $TMPDIR). Writes the directory to use. */
tc_status tc_cli_model_dir(const char *arg, char *out, size_t n);

/* Loads a model on the CPU backend. */
tc_status tc_cli_load(const char *dir, tc_backend *be, tc_model **m);

/* Reads whitespace-separated token ids from a file ("-" = stdin) or a
 * string; errors name the offending token. */
tc_status tc_read_ids_file(const char *path, int32_t **ids, int64_t *n);
tc_status tc_parse_ids(const char *text, const char *label, int32_t **ids, int64_t *n);

int tc_cli_init_model(int argc, char **argv);
int tc_cli_logits(int argc, char **argv);
int tc_cli_generate(int argc, char **argv);
int tc_cli_info(int argc, char **argv);
int tc_cli_sync_bench(int argc, char **argv);
int tc_cli_client(int argc, char **argv);
int tc_cli_bench(int argc, char **argv);
#ifdef TC_HAVE_TOKENIZER
int tc_cli_tokenize(int argc, char **argv);
int tc_cli_detokenize(int argc, char **argv);
#endif

#endif
