/* Thread-per-job runner with a concurrency bound. */
#include "jobs.h"
#include "units.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct kiln_jobs {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int max, running;
    unsigned active; /* running + waiting */
    bool draining, cancelled;
};

struct task {
    kiln_jobs *r;
    kiln_job_fn fn;
    void *arg;
};

int kiln_jobs_new(kiln_jobs **out, int max_concurrent, kiln_error **err)
{
    kiln_jobs *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->max = max_concurrent > 0 ? max_concurrent : 4;
    *out = r;
    return 0;
}

static void *task_main(void *p)
{
    struct task *t = p;
    kiln_jobs *r = t->r;
    pthread_mutex_lock(&r->mu);
    while (r->running >= r->max)
        pthread_cond_wait(&r->cv, &r->mu);
    r->running++;
    pthread_mutex_unlock(&r->mu);
    t->fn(t->arg);
    pthread_mutex_lock(&r->mu);
    r->running--;
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(t);
    return NULL;
}

int kiln_jobs_submit(kiln_jobs *r, kiln_job_fn fn, void *arg, kiln_error **err)
{
    struct task *t = malloc(sizeof(*t));
    if (t == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    *t = (struct task){r, fn, arg};
    pthread_mutex_lock(&r->mu);
    if (r->draining) {
        pthread_mutex_unlock(&r->mu);
        free(t);
        return kiln_error_set(err, KILN_EUNAVAIL, 0,
                              "draining: the service is shutting down and takes no new jobs");
    }
    r->active++;
    pthread_mutex_unlock(&r->mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    int rc = pthread_create(&th, &attr, task_main, t);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&r->mu);
        r->active--;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        free(t);
        return kiln_error_set(err, KILN_ENOSPC, rc, "cannot start a job thread");
    }
    return 0;
}

bool kiln_jobs_cancelled(kiln_jobs *r)
{
    pthread_mutex_lock(&r->mu);
    bool c = r->cancelled;
    pthread_mutex_unlock(&r->mu);
    return c;
}

unsigned kiln_jobs_running(kiln_jobs *r)
{
    pthread_mutex_lock(&r->mu);
    unsigned n = (unsigned)r->running;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int kiln_jobs_max(const kiln_jobs *r)
{
    return r->max;
}

unsigned kiln_jobs_active(kiln_jobs *r)
{
    pthread_mutex_lock(&r->mu);
    unsigned n = r->active;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void kiln_jobs_drain(kiln_jobs *r, int grace_ms)
{
    struct timespec dl = kiln_deadline_in_ms(grace_ms);
    pthread_mutex_lock(&r->mu);
    r->draining = true;
    while (r->active > 0 && !r->cancelled)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) != 0)
            r->cancelled = true;
    r->cancelled = true;
    pthread_cond_broadcast(&r->cv);
    while (r->active > 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

void kiln_jobs_free(kiln_jobs *r)
{
    if (r == NULL)
        return;
    kiln_jobs_drain(r, 0);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
