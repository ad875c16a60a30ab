/* kt: a minimal test harness for Kiln's unit tests.
 *
 *   KT_TEST(name) { KT_EXPECT(x == 1); KT_EXPECT_STR(a, "b"); }
 *   int main(void) { return kt_run(); }
 *
 * Tests register themselves through a constructor; kt_run() runs them in
 * order of definition and prints "N passed, N failed".
 *
 * Suite fixtures (at most one of each per binary):
 *   KT_SETUP(setup) { dir = kt_tmpdir("x"); KT_REQUIRE(dir != NULL); ... }
 *   KT_TEARDOWN(teardown) { if (dir) th_rmrf(dir); }
 * The setup runs before the first case, the teardown after the last one, also
 * when only some cases run (KT_ONLY=<case> runs that one case with its
 * fixtures).  A setup that fails (KT_FAIL/KT_EXPECT/KT_REQUIRE) stops the
 * suite: no case runs on half-built fixtures, the teardown still runs (so it
 * must cope with what the setup left NULL), and the binary fails.
 *
 * Environment: KT_ONLY=<case> runs one case (an unknown name is an error),
 * KT_VERBOSE=1 names each passing case. */
#ifndef KT_H
#define KT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How much slower this build runs than a plain one: tests with time bounds
 * multiply them by it.  ThreadSanitizer costs 5-15x in CPU; ASan's ~2x fits
 * in the bounds as they are. */
#if defined(__SANITIZE_THREAD__)
#define KT_SLOWDOWN 10
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KT_SLOWDOWN 10
#endif
#endif
#ifndef KT_SLOWDOWN
#define KT_SLOWDOWN 1
#endif

typedef void (*kt_fn)(void);
struct kt_case {
    const char *name;
    kt_fn fn;
};

#define KT_MAX_CASES 4096
extern struct kt_case kt_cases[KT_MAX_CASES];
extern int kt_ncases;
extern int kt_failures; /* failures in the current case */

#define KT_TEST(name)                                                                              \
    static void kt_##name(void);                                                                   \
    __attribute__((constructor)) static void kt_reg_##name(void)                                   \
    {                                                                                              \
        if (kt_ncases < KT_MAX_CASES)                                                              \
            kt_cases[kt_ncases++] = (struct kt_case){#name, kt_##name};                            \
    }                                                                                              \
    static void kt_##name(void)

extern kt_fn kt_setup_fn, kt_teardown_fn;

#define KT_SETUP(name)                                                                             \
    static void kt_##name(void);                                                                   \
    __attribute__((constructor)) static void kt_reg_##name(void)                                   \
    {                                                                                              \
        kt_setup_fn = kt_##name;                                                                   \
    }                                                                                              \
    static void kt_##name(void)

#define KT_TEARDOWN(name)                                                                          \
    static void kt_##name(void);                                                                   \
    __attribute__((constructor)) static void kt_reg_##name(void)                                   \
    {                                                                                              \
        kt_teardown_fn = kt_##name;                                                                \
    }                                                                                              \
    static void kt_##name(void)

#define KT_FAIL(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        kt_failures++;                                                                             \
    } while (0)

#define KT_EXPECT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            KT_FAIL("expected %s", #cond);                                                         \
    } while (0)

#define KT_EXPECT_INT(a, b)                                                                        \
    do {                                                                                           \
        long long kt_a_ = (long long)(a), kt_b_ = (long long)(b);                                  \
        if (kt_a_ != kt_b_)                                                                        \
            KT_FAIL("%s == %lld, expected %lld", #a, kt_a_, kt_b_);                                \
    } while (0)

#define KT_EXPECT_STR(a, b)                                                                        \
    do {                                                                                           \
        const char *kt_a_ = (a), *kt_b_ = (b);                                                     \
        if (kt_a_ == NULL || kt_b_ == NULL || strcmp(kt_a_, kt_b_) != 0)                           \
            KT_FAIL("%s == \"%s\", expected \"%s\"", #a, kt_a_ ? kt_a_ : "(null)",                 \
                    kt_b_ ? kt_b_ : "(null)");                                                     \
    } while (0)

/* Stops the current case when cond is false (for preconditions of later checks). */
#define KT_REQUIRE(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            KT_FAIL("required %s", #cond);                                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

int kt_run(void);

#ifdef KT_IMPLEMENTATION
struct kt_case kt_cases[KT_MAX_CASES];
int kt_ncases;
int kt_failures;
kt_fn kt_setup_fn, kt_teardown_fn;

/* Runs a fixture; returns its failure count. */
static int kt_fixture(kt_fn fn, const char *what)
{
    if (fn == NULL)
        return 0;
    kt_failures = 0;
    fn();
    if (kt_failures)
        fprintf(stderr, "FAIL %s\n", what);
    return kt_failures;
}

int kt_run(void)
{
    int passed = 0, failed = 0;
    const char *only = getenv("KT_ONLY");
    if (only && *only) {
        int found = 0;
        for (int i = 0; i < kt_ncases && !found; i++)
            found = strcmp(only, kt_cases[i].name) == 0;
        if (!found) {
            fprintf(stderr, "KT_ONLY=%s: no such case\n", only);
            return 1;
        }
    } else
        only = NULL;
    if (kt_fixture(kt_setup_fn, "(suite setup)")) {
        kt_fixture(kt_teardown_fn, "(suite teardown)");
        printf("suite setup failed: 0 passed, %d not run\n", only ? 1 : kt_ncases);
        return 1;
    }
    for (int i = 0; i < kt_ncases; i++) {
        if (only && strcmp(only, kt_cases[i].name) != 0)
            continue;
        kt_failures = 0;
        kt_cases[i].fn();
        if (kt_failures) {
            failed++;
            fprintf(stderr, "FAIL %s\n", kt_cases[i].name);
        } else {
            passed++;
            if (getenv("KT_VERBOSE"))
                fprintf(stderr, "ok   %s\n", kt_cases[i].name);
        }
    }
    if (kt_fixture(kt_teardown_fn, "(suite teardown)"))
        failed++;
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
#endif

#endif
