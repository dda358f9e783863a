/* expect.h — the unit tests' one assertion: EXPECT(cond, fmt, ...) prints
 * "FAIL file:line: message" and counts the failure in g_fail, then the test
 * goes on (every check of a run is reported, not just the first). A test
 * defines `int g_fail` (or `static int g_fail`) before including this and
 * exits non-zero when it is. Thread-safe counting. */
#ifndef TC_TESTS_EXPECT_H
#define TC_TESTS_EXPECT_H

#include <stdio.h>

#define EXPECT(cond, ...)                                     \
    do {                                                      \
        if (!(cond)) {                                        \
            __atomic_add_fetch(&g_fail, 1, __ATOMIC_RELAXED); \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);       \
            printf(__VA_ARGS__);                              \
            printf("\n");                                     \
        }                                                     \
    } while (0)

#endif
