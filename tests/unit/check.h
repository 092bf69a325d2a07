/*
 * check.h - the unit tests' harness: REQUIRE fails a test with a reason,
 * run() prints "PASS: name" or "FAIL: name: why" (tests/run.sh counts
 * them).  Included once per test program.
 */
#ifndef VMC_CHECK_H
#define VMC_CHECK_H

#include <stdio.h>

static int failures, passes;
static char why[512];

#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond)) {                                                        \
            snprintf(why, sizeof(why), __VA_ARGS__);                          \
            return -1;                                                        \
        }                                                                     \
    } while (0)

static void run(const char *name, int (*fn)(void))
{
    why[0] = '\0';
    if (fn() == 0) {
        printf("PASS: %s\n", name);
        passes++;
    } else {
        printf("FAIL: %s: %s\n", name, why);
        failures++;
    }
    fflush(stdout);
}

#endif
