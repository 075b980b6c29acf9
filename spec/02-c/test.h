/* test.h -- a tiny TAP producer for C unit tests (after picotest and redis testhelp.h).
 * SPDX-License-Identifier: MIT
 *
 * Usage: each test_<module>.c #includes "../../src/<module>.c" so that statics are
 * reachable, then defines main() calling test_plan(), ok(...), test_done(). */
#ifndef LG_TEST_H
#define LG_TEST_H

#include <stdio.h>
#include <string.h>

static int test_n, test_failed;

#define ok(cond, ...)                                                                              \
    do {                                                                                           \
        int ok_c_ = !!(cond);                                                                      \
        test_n++;                                                                                  \
        printf("%s %d - ", ok_c_ ? "ok" : "not ok", test_n);                                       \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        if (!ok_c_) {                                                                              \
            test_failed++;                                                                         \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define ok_streq(a, b, ...)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        ok(a_ &&b_ &&strcmp(a_, b_) == 0, __VA_ARGS__);                                            \
        if (!(a_ && b_ && strcmp(a_, b_) == 0))                                                    \
            printf("#   got '%s', want '%s'\n", a_ ? a_ : "(null)", b_ ? b_ : "(null)");           \
    } while (0)

static inline int test_done(void)
{
    printf("1..%d\n", test_n);
    return test_failed ? 1 : 0;
}

#endif
