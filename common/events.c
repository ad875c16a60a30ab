/* Event publishing and per-job replay logs.
 *
 * Log format (<log_dir>/<job id>.log, host byte order), one record per event:
 *   u32 payload length | u32 flags (bit 0: terminal) | u64 seq | packed Event
 * A record is appended with one write() on an O_APPEND fd while the job's lock
 * is held, so records appear in seq order; a reader that meets a partial record
 * at the end treats it as not yet logged. */
#include "events.h"
#include "cleanup.h"
#include "fs.h"
#include "units.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <nng/protocol/pubsub0/pub.h>

#define REC_HDR           16
#define REC_TERMINAL      1u
#define REC_MAX           ((uint32_t)4 << 20)
#define REPLAY_MAX_EVENTS 4096
#define REPLAY_MAX_BYTES  ((size_t)1 << 20)
#define READ_CHUNK        ((size_t)1 << 20)

struct kiln_events {
    nng_socket pub;
    char *url;
    char *log_dir;
    pthread_mutex_t mu;
    pthread_cond_t ended; /* a job emitted its terminal event */
    unsigned running;
    kiln_job *jobs; /* jobs started and not released (for Wait) */
};

struct kiln_job {
    kiln_events *ev;
    kiln_job *next;
    pthread_mutex_t mu;
    char id[KILN_JOB_ID_MAX + 1];
    char topic[KILN_JOB_ID_MAX + 16];
    uint64_t seq;
    int fd;
    bool terminal;
};

static void recover_jobs(kiln_events *ev);

bool kiln_job_id_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > KILN_JOB_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

int kiln_events_new(kiln_events **out, const char *url, const kiln_transport_opts *t,
                    const char *log_dir, kiln_error **err)
{
    int r = kiln_mkdir_p(log_dir, 0700, err);
    if (r < 0)
        return kiln_error_wrap(err, "event log directory");
    kiln_events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    ev->url = strdup(url);
    ev->log_dir = strdup(log_dir);
    pthread_mutex_init(&ev->mu, NULL);
    pthread_cond_init(&ev->ended, NULL);
    int rv = nng_pub0_open(&ev->pub);
    if (rv != 0 || !ev->url || !ev->log_dir) {
        free(ev->url);
        free(ev->log_dir);
        pthread_mutex_destroy(&ev->mu);
        free(ev);
        return kiln_error_set(err, KILN_EINTERNAL, 0, "pub socket: %s", nng_strerror(rv));
    }
    /* Subscribers never send; keep the limit tiny. */
    nng_socket_set_size(ev->pub, NNG_OPT_RECVMAXSZ, 1024);
    recover_jobs(ev);
    if ((r = kiln_listen(ev->pub, url, t, err)) < 0) {
        nng_close(ev->pub);
        free(ev->url);
        free(ev->log_dir);
        pthread_mutex_destroy(&ev->mu);
        free(ev);
        return r;
    }
    *out = ev;
    return 0;
}

int kiln_events_listen(kiln_events *ev, const char *url, const kiln_transport_opts *t,
                       kiln_error **err)
{
    return kiln_listen(ev->pub, url, t, err);
}

void kiln_events_free(kiln_events *ev)
{
    if (ev == NULL)
        return;
    nng_close(ev->pub);
    const char *ipc = kiln_ipc_path(ev->url);
    if (ipc)
        unlink(ipc);
    pthread_mutex_destroy(&ev->mu);
    pthread_cond_destroy(&ev->ended);
    free(ev->url);
    free(ev->log_dir);
    free(ev);
}

const char *kiln_events_url(const kiln_events *ev)
{
    return ev->url;
}

unsigned kiln_events_running(kiln_events *ev)
{
    pthread_mutex_lock(&ev->mu);
    unsigned n = ev->running;
    pthread_mutex_unlock(&ev->mu);
    return n;
}

const char *kiln_job_id(const kiln_job *j)
{
    return j->id;
}

/* Appends and publishes e; job lock held. */
static int emit_locked(kiln_job *j, kiln_event *e, bool terminal, kiln_error **err)
{
    if (j->terminal)
        return kiln_error_set(err, KILN_EPRECOND, 0, "job %s already ended", j->id);
    char *saved_id = e->job_id, *saved_topic = e->topic;
    e->job_id = j->id;
    e->topic = j->topic;
    e->seq = j->seq + 1;
    e->ts_unix_ms = kiln_wall_ms();
    size_t n = kiln__v1__event__get_packed_size(e);
    size_t tl = strlen(j->topic);
    if (n > REC_MAX) {
        e->job_id = saved_id;
        e->topic = saved_topic;
        return kiln_error_set(err, KILN_EINVAL, 0, "event of %zu bytes is too large", n);
    }
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, tl + 1 + n) != 0) {
        e->job_id = saved_id;
        e->topic = saved_topic;
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    uint8_t *body = nng_msg_body(m);
    memcpy(body, j->topic, tl);
    body[tl] = ' ';
    kiln__v1__event__pack(e, body + tl + 1);
    e->job_id = saved_id;
    e->topic = saved_topic;

    uint8_t hdr[REC_HDR];
    uint32_t len32 = (uint32_t)n, flags = terminal ? REC_TERMINAL : 0;
    uint64_t seq = j->seq + 1;
    memcpy(hdr, &len32, 4);
    memcpy(hdr + 4, &flags, 4);
    memcpy(hdr + 8, &seq, 8);
    struct iovec iov[2] = {{hdr, REC_HDR}, {body + tl + 1, n}};
    ssize_t w;
    do
        w = writev(j->fd, iov, 2);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)(REC_HDR + n)) {
        int e2 = w < 0 ? errno : ENOSPC;
        nng_msg_free(m);
        return kiln_error_set(err, kiln_code_from_errno(e2), e2, "append event log of job %s",
                              j->id);
    }
    j->seq = seq;
    if (terminal) {
        fsync(j->fd);
        char marker[PATH_MAX];
        snprintf(marker, sizeof(marker), "%s/%s.running", j->ev->log_dir, j->id);
        unlink(marker);
        pthread_mutex_lock(&j->ev->mu);
        j->terminal = true;
        pthread_cond_broadcast(&j->ev->ended);
        pthread_mutex_unlock(&j->ev->mu);
    }
    if (nng_sendmsg(j->ev->pub, m, NNG_FLAG_NONBLOCK) != 0)
        nng_msg_free(m); /* no subscriber room: the log still has it */
    return 0;
}

int kiln_job_start(kiln_job **out, kiln_events *ev, const char *topic_prefix, const char *kind,
                   const char *description, kiln_error **err)
{
    kiln_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    j->ev = ev;
    j->fd = -1;
    pthread_mutex_init(&j->mu, NULL);
    char path[PATH_MAX];
    for (int tries = 0; tries < 8 && j->fd < 0; tries++) {
        kiln_random_hex(j->id, 16);
        snprintf(path, sizeof(path), "%s/%s.log", ev->log_dir, j->id);
        j->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
        if (j->fd < 0 && errno != EEXIST)
            break;
    }
    if (j->fd < 0) {
        int e = errno;
        pthread_mutex_destroy(&j->mu);
        free(j);
        return kiln_error_set(err, kiln_code_from_errno(e), e, "create event log in %s",
                              ev->log_dir);
    }
    snprintf(j->topic, sizeof(j->topic), "%s.%s", topic_prefix, j->id);

    Kiln__V1__JobStarted st = KILN__V1__JOB_STARTED__INIT;
    st.kind = (char *)(kind ? kind : topic_prefix);
    st.description = (char *)(description ? description : "");
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_JOB_STARTED;
    e.job_started = &st;
    pthread_mutex_lock(&j->mu);
    int r = emit_locked(j, &e, false, err);
    pthread_mutex_unlock(&j->mu);
    if (r < 0) {
        close(j->fd);
        unlink(path);
        pthread_mutex_destroy(&j->mu);
        free(j);
        return r;
    }
    /* The marker says "this job has no terminal event yet"; a service that
     * dies leaves it behind and the next start ends the job (recover_jobs). */
    char marker[PATH_MAX];
    snprintf(marker, sizeof(marker), "%s/%s.running", ev->log_dir, j->id);
    int mfd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (mfd >= 0)
        close(mfd);
    pthread_mutex_lock(&ev->mu);
    ev->running++;
    j->next = ev->jobs;
    ev->jobs = j;
    pthread_mutex_unlock(&ev->mu);
    *out = j;
    return 0;
}

int kiln_job_emit(kiln_job *j, kiln_event *e, kiln_error **err)
{
    bool terminal = e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED ||
                    e->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED;
    pthread_mutex_lock(&j->mu);
    int r = emit_locked(j, e, terminal, err);
    pthread_mutex_unlock(&j->mu);
    return r;
}

int kiln_job_log(kiln_job *j, bool is_stderr, const char *line, kiln_error **err)
{
    Kiln__V1__LogLine l = KILN__V1__LOG_LINE__INIT;
    l.stream = is_stderr ? KILN__V1__LOG_LINE__STREAM__STDERR : KILN__V1__LOG_LINE__STREAM__STDOUT;
    l.text = (char *)line;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_LOG;
    e.log = &l;
    return kiln_job_emit(j, &e, err);
}

int kiln_job_progress(kiln_job *j, const char *what, uint64_t done, uint64_t total,
                      kiln_error **err)
{
    Kiln__V1__Progress p = KILN__V1__PROGRESS__INIT;
    p.what = (char *)what;
    p.done = done;
    p.total = total;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_PROGRESS;
    e.progress = &p;
    return kiln_job_emit(j, &e, err);
}

int kiln_job_complete(kiln_job *j, const char *summary, const char *digest, kiln_error **err)
{
    Kiln__V1__JobCompleted c = KILN__V1__JOB_COMPLETED__INIT;
    c.summary = (char *)(summary ? summary : "");
    c.digest = (char *)(digest ? digest : "");
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_COMPLETED;
    e.completed = &c;
    return kiln_job_emit(j, &e, err);
}

int kiln_job_fail(kiln_job *j, kiln_code code, const char *message, kiln_error **err)
{
    Kiln__V1__Status st = KILN__V1__STATUS__INIT;
    st.code = (Kiln__V1__Code)kiln_code_to_wire(code);
    st.message = (char *)(message ? message : "");
    Kiln__V1__JobFailed f = KILN__V1__JOB_FAILED__INIT;
    f.error = &st;
    kiln_event e = KILN__V1__EVENT__INIT;
    e.payload_case = KILN__V1__EVENT__PAYLOAD_FAILED;
    e.failed = &f;
    return kiln_job_emit(j, &e, err);
}

void kiln_job_release(kiln_job *j)
{
    if (j == NULL)
        return;
    if (!j->terminal) {
        kiln_error *err = NULL;
        if (kiln_job_fail(j, KILN_EINTERNAL, "job ended without a result", &err) < 0) {
            kiln_err("events", "job %s: %s", j->id, err->msg);
            kiln_error_free(&err);
        }
    }
    pthread_mutex_lock(&j->ev->mu);
    j->ev->running--;
    for (kiln_job **pp = &j->ev->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    pthread_mutex_unlock(&j->ev->mu);
    close(j->fd);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

/* ---- recovery and waiting ---- */

/* Ends the jobs a previous instance of the service left without a terminal
 * event (it was killed): each gets failed(CANCELLED) so followers stop. */
static void recover_jobs(kiln_events *ev)
{
    _cleanup_closedir_ DIR *d = opendir(ev->log_dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 8 || strcmp(e->d_name + n - 8, ".running") != 0 || n - 8 > KILN_JOB_ID_MAX)
            continue;
        kiln_job j = {.ev = ev, .fd = -1};
        memcpy(j.id, e->d_name, n - 8);
        j.id[n - 8] = '\0';
        if (!kiln_job_id_valid(j.id))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s.log", ev->log_dir, j.id);
        _cleanup_close_ int rfd = open(path, O_RDONLY | O_CLOEXEC);
        j.fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (rfd < 0 || j.fd < 0) {
            if (j.fd >= 0)
                close(j.fd);
            snprintf(path, sizeof(path), "%s/%s", ev->log_dir, e->d_name);
            unlink(path);
            continue;
        }
        /* Header-only pass: no event is after UINT64_MAX. */
        kiln_arena *a = kiln_arena_new();
        Kiln__V1__EventsReply r = KILN__V1__EVENTS_REPLY__INIT;
        kiln_error *err = NULL;
        if (a && kiln_events_log_read(rfd, j.id, UINT64_MAX, 1, &r, a, &err) == 0 && !r.finished) {
            pthread_mutex_init(&j.mu, NULL);
            /* Logs live in events/<topic prefix>/. */
            const char *prefix = strrchr(ev->log_dir, '/');
            snprintf(j.topic, sizeof(j.topic), "%.8s.%s", prefix ? prefix + 1 : "job", j.id);
            j.seq = r.last_seq;
            kiln_job_fail(&j, KILN_ECANCELED, "the service stopped while the job ran", &err);
            pthread_mutex_destroy(&j.mu);
            kiln_warn("events", "job %s was interrupted by a service stop; marked failed", j.id);
        }
        kiln_error_free(&err);
        kiln_arena_free(a);
        close(j.fd);
        snprintf(path, sizeof(path), "%s/%s", ev->log_dir, e->d_name);
        unlink(path);
    }
}

int kiln_events_wait(kiln_events *ev, const char *job_id, int timeout_ms,
                     Kiln__V1__WaitReply *reply, kiln_arena *arena, kiln_error **err)
{
    if (!kiln_job_id_valid(job_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid job id");
    struct timespec dl = kiln_deadline_in_ms(timeout_ms);
    pthread_mutex_lock(&ev->mu);
    for (;;) {
        kiln_job *j = ev->jobs;
        while (j && strcmp(j->id, job_id) != 0)
            j = j->next;
        if (j == NULL || j->terminal || timeout_ms <= 0)
            break;
        if (pthread_cond_timedwait(&ev->ended, &ev->mu, &dl) != 0)
            break;
    }
    pthread_mutex_unlock(&ev->mu);

    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.log", ev->log_dir, job_id);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, errno == ENOENT ? KILN_ENOENT : KILN_EIO,
                              errno == ENOENT ? 0 : errno, "no job %s", job_id);
    Kiln__V1__EventsReply r = KILN__V1__EVENTS_REPLY__INIT;
    int rc = kiln_events_log_read(fd, job_id, UINT64_MAX, 1, &r, arena, err);
    if (rc < 0)
        return rc;
    reply->last_seq = r.last_seq;
    reply->finished = r.finished;
    if (!r.finished)
        return 0;
    Kiln__V1__EventsReply last = KILN__V1__EVENTS_REPLY__INIT;
    if ((rc = kiln_events_log_read(fd, job_id, r.last_seq - 1, 1, &last, arena, err)) < 0)
        return rc;
    if (last.n_events == 1)
        reply->terminal = last.events[0];
    return 0;
}

/* ---- replay ---- */

static void *arena_alloc_cb(void *data, size_t n)
{
    return kiln_arena_alloc(data, n);
}
static void arena_free_cb(void *data, void *p)
{
    (void)data;
    (void)p;
}

int kiln_events_replay(kiln_events *ev, const char *job_id, uint64_t after_seq, uint32_t max,
                       Kiln__V1__EventsReply *reply, kiln_arena *arena, kiln_error **err)
{
    if (!kiln_job_id_valid(job_id))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid job id");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.log", ev->log_dir, job_id);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return kiln_error_set(err, KILN_ENOENT, 0, "no job %s", job_id);
        return kiln_error_set(err, KILN_EIO, errno, "open event log of job %s", job_id);
    }
    return kiln_events_log_read(fd, job_id, after_seq, max, reply, arena, err);
}

int kiln_events_log_read(int fd, const char *job_id, uint64_t after_seq, uint32_t max,
                         Kiln__V1__EventsReply *reply, kiln_arena *arena, kiln_error **err)
{
    if (max == 0 || max > REPLAY_MAX_EVENTS)
        max = REPLAY_MAX_EVENTS;
    ProtobufCAllocator alloc = {arena_alloc_cb, arena_free_cb, arena};
    kiln_event **events = kiln_arena_calloc(arena, max, sizeof(*events));
    _cleanup_free_ uint8_t *buf = malloc(READ_CHUNK);
    if (events == NULL || buf == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t cap = READ_CHUNK, have = 0, pos = 0, bytes = 0;
    off_t off = 0;
    uint32_t count = 0;
    uint64_t last = 0;
    bool finished = false, more = false, eof = false;
    for (;;) {
        size_t avail = have - pos;
        uint32_t len = 0;
        if (avail >= REC_HDR)
            memcpy(&len, buf + pos, 4);
        if (len > REC_MAX)
            return kiln_error_set(err, KILN_EIO, 0, "event log of job %s is corrupt", job_id);
        if (avail < REC_HDR || avail < REC_HDR + (size_t)len) {
            if (eof)
                break; /* a partial record at the end is still being written */
            memmove(buf, buf + pos, avail);
            have = avail;
            pos = 0;
            if (REC_HDR + (size_t)len > cap) {
                uint8_t *nb = realloc(buf, REC_HDR + (size_t)len);
                if (nb == NULL)
                    return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
                buf = nb;
                cap = REC_HDR + (size_t)len;
            }
            ssize_t n = pread(fd, buf + have, cap - have, off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return kiln_error_set(err, KILN_EIO, errno, "read event log of job %s", job_id);
            eof = n == 0;
            have += (size_t)n;
            off += n;
            continue;
        }
        uint32_t flags;
        uint64_t seq;
        memcpy(&flags, buf + pos + 4, 4);
        memcpy(&seq, buf + pos + 8, 8);
        const uint8_t *payload = buf + pos + REC_HDR;
        pos += REC_HDR + len;
        last = seq;
        if (flags & REC_TERMINAL)
            finished = true;
        if (seq <= after_seq)
            continue;
        if (count == max || (count > 0 && bytes + len > REPLAY_MAX_BYTES)) {
            more = true;
            last = events[count - 1]->seq;
            finished = false;
            break;
        }
        kiln_event *e = kiln__v1__event__unpack(&alloc, len, payload);
        if (e == NULL)
            return kiln_error_set(err, KILN_EIO, 0, "event log of job %s is corrupt", job_id);
        events[count++] = e;
        bytes += len;
    }
    reply->events = events;
    reply->n_events = count;
    reply->more = more;
    reply->finished = finished;
    reply->last_seq = last;
    return 0;
}
