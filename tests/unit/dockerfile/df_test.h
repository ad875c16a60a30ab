/* Shared helpers of the Dockerfile frontend unit tests. */
#ifndef DF_TEST_H
#define DF_TEST_H

#include <stddef.h>

#include "plan.h"

/* One table row: a Dockerfile, options and what the compact plan JSON must
 * contain.  In want[] and err, ' stands for " (keeps the table readable) and
 * in err '' for a literal '; a want entry starting with '!' must NOT occur. */
typedef struct df_case {
    const char *name;
    const char *df;
    const char *bargs;  /* "K=V;K2=V2" or NULL */
    const char *target; /* --target or NULL */
    const char *want[8];
    const char *err; /* expected error substring; NULL: must succeed */
} df_case;

/* Runs the rows, reporting each failing one through the kt harness. */
void df_run_cases(const df_case *cases, size_t n);

/* Parses df with build platform linux/amd64; returns the compact JSON (free())
 * or NULL with *errmsg (free()) set. */
char *df_plan_json(const char *df, size_t len, const char *bargs, const char *target,
                   const char *platform, char **errmsg);

#endif
