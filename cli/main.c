/* main.c — `tconst`: the command-line tool. Dispatches subcommands; each
 * lives in its own file. */
#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} CMDS[] = {
    {"init-model", tc_cli_init_model, "write a seeded random-init model directory"},
    {"info", tc_cli_info, "print a model's config and parameter count"},
    {"logits", tc_cli_logits, "stream token ids through the engine, write per-step logits"},
    {"generate", tc_cli_generate, "generate token ids from a prompt"},
    {"sync-bench", tc_cli_sync_bench, "time one global synchronization over N history tokens"},
    {"bench", tc_cli_bench, "engine benchmarks: itl, state, prefill, batch, floor, flat (tables + CSV)"},
    {"client", tc_cli_client, "talk to tconstd over gRPC (generate, session, stream, info, health)"},
#ifdef TC_HAVE_TOKENIZER
    {"tokenize", tc_cli_tokenize, "text -> token ids (GPT-2 BPE of the model directory)"},
    {"detokenize", tc_cli_detokenize, "token ids -> text"},
#endif
};

static void usage(FILE *f) {
    fprintf(f, "usage: tconst <command> [options]   (tconst <command> --help)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++) fprintf(f, "  %-12s %s\n", CMDS[i].name, CMDS[i].help);
}

int main(int argc, char **argv) {
    tc_log_init();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tconst 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++)
        if (!strcmp(argv[1], CMDS[i].name)) {
            int rc = CMDS[i].fn(argc - 1, argv + 1);
            /* output still buffered, or a write that failed unchecked: exit 0
             * only when everything printed reached standard output */
            if (rc == 0 && tc_cli_stdout_flush() != TC_OK) rc = tc_cli_fail(argv[1], TC_ERR_IO);
            return rc;
        }
    fprintf(stderr, "tconst: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
