/* The test harness: one binary, many small tests, a closing line
   "N passed, N failed" that CI reads. A test fails if any CHECK in it fails. */
#ifndef EBM_TEST_HARNESS_H
#define EBM_TEST_HARNESS_H
#include <stdio.h>
#include <string.h>

typedef void (*test_fn)(void);
static int t_failed;        /* the running test has failed */
static const char *t_name;  /* the running test's name */

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            printf("  FAIL %s (%s:%d): ", t_name, __FILE__, __LINE__);            \
            printf(__VA_ARGS__);                                                  \
            printf("\n");                                                         \
            t_failed = 1;                                                         \
        }                                                                         \
    } while (0)

typedef struct { const char *name; test_fn fn; } test_case;

/* Run the tests whose name contains one of the filters (all if there are
   none); print the summary. */
static int run_tests(const test_case *tests, int n, int n_filters, char **filters)
{
    int i, j, passed = 0, failed = 0;
    for (i = 0; i < n; i++) {
        int chosen = n_filters == 0;
        for (j = 0; j < n_filters; j++) chosen |= strstr(tests[i].name, filters[j]) != NULL;
        if (!chosen) continue;
        t_failed = 0;
        t_name = tests[i].name;
        tests[i].fn();
        printf("%s %s\n", t_failed ? "FAIL" : "ok  ", tests[i].name);
        fflush(stdout);
        if (t_failed) failed++; else passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
#endif
