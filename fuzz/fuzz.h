/* fuzz.h — the libFuzzer entry points every target in fuzz/ defines. The
 * same sources link either against libFuzzer (-DTC_FUZZ=ON, clang) or
 * against replay_main.c, a plain main that feeds files to them, so the
 * gcc build of CI replays the corpora and every regression input. */
#ifndef TC_FUZZ_H
#define TC_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* optional; replay_main calls it when the target defines it */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* The usual initializer: the library logs nothing, since refusals are the
 * expected outcome of most inputs. Needs common/log.h. */
#define TC_FUZZ_QUIET_INITIALIZE()                            \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {      \
        (void)argc;                                           \
        (void)argv;                                           \
        tc_log_level_cur = -1;                                \
        return 0;                                             \
    }

#endif
