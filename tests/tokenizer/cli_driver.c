/* cli_driver.c — tc_tokenizer_cli: a stand-in for the tconst binary that
 * dispatches `tokenize` / `detokenize` to cli/cmd_tokenize.c exactly as
 * cli/main.c does, so the CLI code is tested on its own. Test-only. */
#include <stdio.h>
#include <string.h>

int tc_cli_tokenize(int argc, char **argv);
int tc_cli_detokenize(int argc, char **argv);

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "tokenize") == 0) return tc_cli_tokenize(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "detokenize") == 0) return tc_cli_detokenize(argc - 1, argv + 1);
    fprintf(stderr, "usage: %s tokenize|detokenize --model DIR [--file F]\n", argv[0]);
    return 2;
}
