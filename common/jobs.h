/* A small runner for long jobs (builds, commits, imports, pushes): each job
 * runs on its own thread, at most `max` at a time (the rest wait their turn),
 * and drain() lets a service finish or cancel them before it closes its event
 * socket.  Jobs poll kiln_jobs_cancelled() between steps. */
#ifndef KILN_JOBS_H
#define KILN_JOBS_H

#include <stdbool.h>

#include "error.h"

typedef struct kiln_jobs kiln_jobs;

typedef void (*kiln_job_fn)(void *arg);

int kiln_jobs_new(kiln_jobs **out, int max_concurrent, kiln_error **err);
/* Runs fn(arg) on a new thread; fn owns arg.  KILN_EUNAVAIL ("draining")
 * after drain began. */
int kiln_jobs_submit(kiln_jobs *r, kiln_job_fn fn, void *arg, kiln_error **err);
/* True once drain() has asked jobs to stop. */
bool kiln_jobs_cancelled(kiln_jobs *r);
/* Jobs running or waiting for a slot. */
unsigned kiln_jobs_active(kiln_jobs *r);
/* Jobs running (holding a slot). */
unsigned kiln_jobs_running(kiln_jobs *r);
/* The concurrency bound. */
int kiln_jobs_max(const kiln_jobs *r);
/* Refuses new jobs, waits up to grace_ms for running ones, then sets the
 * cancel flag and waits for them to return. */
void kiln_jobs_drain(kiln_jobs *r, int grace_ms);
/* Drains (if not done) and frees. */
void kiln_jobs_free(kiln_jobs *r);

#endif
