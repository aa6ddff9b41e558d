/* check.h - minimal assertion helpers shared by the C and C++ tests. */
#ifndef LCV_TEST_CHECK_H
#define LCV_TEST_CHECK_H

#include <math.h>
#include <stdio.h>

static int g_checks = 0;
static int g_failures = 0;

/* CHECK(condition, printf-format, args...): records a failure, keeps going. */
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        ++g_checks;                                                             \
        if (!(cond)) {                                                          \
            ++g_failures;                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

/* Print the summary and return the process exit status. */
static int check_summary(const char *name) {
    printf("%s: %d checks, %d failures -> %s\n", name, g_checks, g_failures,
           g_failures ? "FAILED" : "OK");
    return g_failures ? 1 : 0;
}

#endif
