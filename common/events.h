/* Job events: a PUB socket plus an append-only log per job.
 *
 * Every event gets the job id, the next per-job sequence number (1, 2, ...),
 * a timestamp and its topic ("build.<id>", "push.<id>").  The PUB message is
 * "<topic> " followed by the packed kiln.v1.Event, so a subscriber filters on
 * "build." (all builds) or "build.<id> " (one job).  PUB drops messages for
 * slow subscribers; the log is what Events(job_id, after_seq) replays.
 *
 * A job ends with exactly one terminal event (completed or failed): after it,
 * emitting more events is refused, a job released without one gets a
 * failed(INTERNAL) event, and a job whose service died gets failed(CANCELLED)
 * when the service starts again (a "<job>.running" marker sits beside the log
 * until the terminal event), so no follower waits forever. */
#ifndef KILN_EVENTS_H
#define KILN_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "error.h"
#include "transport.h"
#include "kiln/kiln.pb-c.h"

typedef Kiln__V1__Event kiln_event;
typedef struct kiln_events kiln_events;
typedef struct kiln_job kiln_job;

#define KILN_JOB_ID_MAX 64

/* Binds the PUB socket at url and keeps per-job logs in log_dir (created). */
int kiln_events_new(kiln_events **out, const char *url, const kiln_transport_opts *t,
                    const char *log_dir, kiln_error **err);
/* Closes the socket (pending PUB messages are flushed best-effort).  Jobs must
 * have been released. */
void kiln_events_free(kiln_events *ev);
const char *kiln_events_url(const kiln_events *ev);
/* Publishes on one more endpoint too.  The caller removes an extra ipc://
 * socket file after kiln_events_free. */
int kiln_events_listen(kiln_events *ev, const char *url, const kiln_transport_opts *t,
                       kiln_error **err);
/* Number of jobs started and not yet released. */
unsigned kiln_events_running(kiln_events *ev);

/* Starts a job: allocates an id, opens its log, emits JobStarted (seq 1).
 * topic_prefix is "build" or "push"; kind/description go into JobStarted. */
int kiln_job_start(kiln_job **out, kiln_events *ev, const char *topic_prefix, const char *kind,
                   const char *description, kiln_error **err);
const char *kiln_job_id(const kiln_job *j);

/* Emits e (payload set by the caller; job_id, seq, ts and topic are filled in
 * here and restored afterwards).  KILN_EPRECOND after the terminal event. */
int kiln_job_emit(kiln_job *j, kiln_event *e, kiln_error **err);
int kiln_job_log(kiln_job *j, bool is_stderr, const char *line, kiln_error **err);
int kiln_job_progress(kiln_job *j, const char *what, uint64_t done, uint64_t total,
                      kiln_error **err);
/* Terminal events; each returns KILN_EPRECOND if the job already ended. */
int kiln_job_complete(kiln_job *j, const char *summary, const char *digest, kiln_error **err);
int kiln_job_fail(kiln_job *j, kiln_code code, const char *message, kiln_error **err);
/* Ends the caller's use of the job (emits failed(INTERNAL) if not terminal). */
void kiln_job_release(kiln_job *j);

/* Fills reply with logged events of job_id with seq > after_seq (at most max,
 * bounded to ~1 MiB); event memory comes from arena.  KILN_ENOENT for unknown
 * jobs, KILN_EINVAL for malformed ids. */
int kiln_events_replay(kiln_events *ev, const char *job_id, uint64_t after_seq, uint32_t max,
                       Kiln__V1__EventsReply *reply, kiln_arena *arena, kiln_error **err);

/* Waits up to timeout_ms for job_id to end, then reports whether it has and
 * its terminal event (memory from arena).  KILN_ENOENT for unknown jobs. */
int kiln_events_wait(kiln_events *ev, const char *job_id, int timeout_ms,
                     Kiln__V1__WaitReply *reply, kiln_arena *arena, kiln_error **err);

/* The log reader behind kiln_events_replay, on an open log file (for tests and
 * fuzzing: the file may hold anything; corrupt logs give KILN_EIO). */
int kiln_events_log_read(int fd, const char *job_id, uint64_t after_seq, uint32_t max,
                         Kiln__V1__EventsReply *reply, kiln_arena *arena, kiln_error **err);

/* True when s is a syntactically valid job id (safe as a file name). */
bool kiln_job_id_valid(const char *s);

#endif
