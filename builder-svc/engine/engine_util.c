/* Small helpers every engine file uses: notes to the build's output,
 * cancellation and deadline, step counters, removing a tree.  Kept out of
 * engine.c (the driver) so that the stage, copy, run, fs and cache files
 * depend on this file rather than on the driver. */
#include "engine_internal.h"

#include <stdarg.h>
#include <stdio.h>

#include "fs.h"
#include "units.h"

void eng_note(eng_build *b, const char *fmt, ...)
{
    if (b->ev == NULL || b->ev->note == NULL)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    b->ev->note(b->ev->ud, buf);
}

bool eng_past_deadline(const eng_build *b)
{
    return b->deadline && kiln_now_ms() >= b->deadline;
}

bool eng_canceled(const eng_build *b)
{
    return atomic_load(&b->stop) || (b->spec->cancel && atomic_load(b->spec->cancel)) ||
           eng_past_deadline(b);
}

void eng_count_step(eng_build *b, bool cached)
{
    pthread_mutex_lock(&b->mu);
    if (cached)
        b->out->steps_cached++;
    else
        b->out->steps_run++;
    pthread_mutex_unlock(&b->mu);
}

void eng_rmrf(const char *p)
{
    kiln_rm_rf(p, NULL);
}
