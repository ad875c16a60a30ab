/* SSH agent forwarding for RUN --mount=type=ssh (see bld_ssh.h): sessions
 * and their request queue, the SshAgentPoll long poll, and the unix sockets
 * the RUN steps talk to. */
#include "bld_ssh.h"
#include "fs.h"
#include "engine_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "runopts.h"

#define ID_MAX        KILN_SSH_ID_MAX
#define IDS_MAX       16
#define POLL_WAIT_MAX 5000        /* ms a poll may wait */
#define REPLY_WAIT_MS (60 * 1000) /* how long a RUN's request waits for the CLI */
#define POLL_BYTES    (1u << 20)  /* request bytes one poll reply carries (at least one) */
#define CONNS_MAX     8           /* connections of one listener at once */

typedef struct sreq {
    uint64_t seq;
    const char *id;      /* the listener's (it outlives the request) */
    const uint8_t *data; /* the connection's buffer, borrowed while queued */
    size_t len;
    uint8_t *reply; /* owned once answered */
    size_t reply_len;
    bool answered;
    struct sreq *next;
} sreq;

struct bld_ssh_session {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a request queued, answered, or the session ended */
    int refs;
    bool ended;
    char *token;
    char **ids;
    size_t n_ids;
    uint64_t next_seq;
    sreq *pending;
    size_t n_pending;
    bld_ssh_session *next; /* in the registry */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static bld_ssh_session *reg;

/* ---- checks and sessions ---------------------------------------------- */

int bld_ssh_check(char *const *ids, size_t n_ids, const char *token, kiln_error **err)
{
    if (n_ids == 0)
        return 0;
    if (n_ids > IDS_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "more than %d --ssh agents", IDS_MAX);
    for (size_t i = 0; i < n_ids; i++) {
        if (!kiln_ssh_id_ok(ids[i]))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "--ssh id '%.64s': 1-64 letters, digits, '.', '_' or '-'",
                                  ids[i]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(ids[k], ids[i]) == 0)
                return kiln_error_set(err, KILN_EINVAL, 0, "--ssh id %s given twice", ids[i]);
    }
    size_t n = token ? strlen(token) : 0;
    if (n < 32 || n > 128 || strspn(token, "0123456789abcdef") != n)
        return kiln_error_set(err, KILN_EINVAL, 0, "--ssh: the request has no valid ssh_token");
    return 0;
}

static void timeout_at(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void unref(bld_ssh_session *s)
{
    pthread_mutex_lock(&s->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    for (size_t i = 0; i < s->n_ids; i++)
        free(s->ids[i]);
    free(s->ids);
    explicit_bzero(s->token, strlen(s->token));
    free(s->token);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int bld_ssh_session_new(bld_ssh_session **out, const char *token, char *const *ids, size_t n_ids,
                        kiln_error **err)
{
    bld_ssh_session *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->token = strdup(token)) == NULL ||
        (s->ids = calloc(n_ids + 1, sizeof(char *))) == NULL) {
        if (s)
            free(s->token);
        free(s);
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "ssh session");
    }
    for (; s->n_ids < n_ids; s->n_ids++)
        if ((s->ids[s->n_ids] = strdup(ids[s->n_ids])) == NULL)
            break;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->mu, NULL);
    s->refs = 1;
    if (s->n_ids < n_ids) {
        unref(s);
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "ssh session");
    }
    pthread_mutex_lock(&reg_mu);
    s->next = reg;
    reg = s;
    pthread_mutex_unlock(&reg_mu);
    *out = s;
    return 0;
}

void bld_ssh_session_end(bld_ssh_session *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&reg_mu);
    for (bld_ssh_session **pp = &reg; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    unref(s);
}

bool bld_ssh_session_has(const bld_ssh_session *s, const char *id)
{
    for (size_t i = 0; s && id && i < s->n_ids; i++)
        if (strcmp(s->ids[i], id) == 0)
            return true;
    return false;
}

/* Compares without stopping at the first difference: the token is a secret. */
static bool token_eq(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (n != strlen(b))
        return false;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bld_ssh_session *find_ref(const char *token)
{
    bld_ssh_session *found = NULL;
    pthread_mutex_lock(&reg_mu);
    for (bld_ssh_session *s = reg; s && token && !found; s = s->next)
        if (token_eq(s->token, token)) {
            pthread_mutex_lock(&s->mu);
            s->refs++;
            pthread_mutex_unlock(&s->mu);
            found = s;
        }
    pthread_mutex_unlock(&reg_mu);
    return found;
}

/* ---- the poll ------------------------------------------------------------ */

static bool any_unanswered(const bld_ssh_session *s)
{
    for (const sreq *r = s->pending; r; r = r->next)
        if (!r->answered)
            return true;
    return false;
}

/* Under s->mu. */
static void deliver(bld_ssh_session *s, const Kiln__V1__SshAgentPollRequest *q)
{
    for (size_t i = 0; i < q->n_replies; i++) {
        const Kiln__V1__SshAgentMessage *m = q->replies[i];
        if (m == NULL || m->data.len == 0 || m->data.len > BLD_SSH_MSG_MAX)
            continue;
        for (sreq *r = s->pending; r; r = r->next) {
            if (r->seq != m->seq || r->answered)
                continue;
            if ((r->reply = malloc(m->data.len)) != NULL) {
                memcpy(r->reply, m->data.data, m->data.len);
                r->reply_len = m->data.len;
                r->answered = true;
            }
            break;
        }
    }
    pthread_cond_broadcast(&s->cv);
}

/* Under s->mu: every unanswered request, up to POLL_BYTES (at least one). */
static int collect(const bld_ssh_session *s, Kiln__V1__SshAgentPollReply *out, kiln_arena *a)
{
    out->requests = kiln_arena_alloc(a, (s->n_pending + 1) * sizeof(*out->requests));
    if (out->requests == NULL)
        return KILN_ENOSPC;
    size_t bytes = 0;
    for (const sreq *r = s->pending; r; r = r->next) {
        if (r->answered || (out->n_requests > 0 && bytes + r->len > POLL_BYTES))
            continue;
        Kiln__V1__SshAgentMessage *m = kiln_arena_alloc(a, sizeof(*m));
        uint8_t *data = kiln_arena_alloc(a, r->len);
        if (m == NULL || data == NULL)
            return KILN_ENOSPC;
        kiln__v1__ssh_agent_message__init(m);
        m->seq = r->seq;
        m->agent_id = kiln_arena_strdup(a, r->id);
        memcpy(data, r->data, r->len);
        m->data.data = data;
        m->data.len = r->len;
        out->requests[out->n_requests++] = m;
        bytes += r->len;
    }
    return 0;
}

int bld_ssh_poll(const Kiln__V1__SshAgentPollRequest *q, Kiln__V1__SshAgentPollReply *out,
                 kiln_arena *a, kiln_error **err)
{
    bld_ssh_session *s = find_ref(q->token);
    if (s == NULL)
        return kiln_error_set(err, KILN_ENOENT, 0, "no running build has this ssh token");
    struct timespec until;
    timeout_at(&until, q->wait_ms < POLL_WAIT_MAX ? (long)q->wait_ms : POLL_WAIT_MAX);
    pthread_mutex_lock(&s->mu);
    deliver(s, q);
    int r = 0;
    while (!s->ended && !any_unanswered(s) && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&s->cv, &s->mu, &until);
    int rc = collect(s, out, a);
    out->ended = s->ended;
    pthread_mutex_unlock(&s->mu);
    unref(s);
    return rc < 0 ? kiln_error_set(err, KILN_ENOSPC, 0, "out of memory") : 0;
}

/* ---- the RUN's side --------------------------------------------------- */

typedef struct conn {
    bld_ssh_listener *l;
    int fd;
    pthread_t th;
    atomic_bool used, done;
} conn;

struct bld_ssh_listener {
    bld_ssh_session *s; /* a reference */
    char id[ID_MAX + 1];
    int fd;
    pthread_t th;
    atomic_bool stop;
    conn conns[CONNS_MAX];
};

/* Queues one request and waits for its answer (or the end of the session,
 * the listener or REPLY_WAIT_MS).  The reply (caller frees) or NULL. */
static uint8_t *relay(bld_ssh_listener *l, const uint8_t *msg, size_t len, size_t *rlen)
{
    bld_ssh_session *s = l->s;
    sreq r = {.id = l->id, .data = msg, .len = len};
    struct timespec until;
    timeout_at(&until, REPLY_WAIT_MS);
    pthread_mutex_lock(&s->mu);
    if (s->ended || s->n_pending >= BLD_SSH_PENDING_MAX) {
        pthread_mutex_unlock(&s->mu);
        return NULL;
    }
    r.seq = ++s->next_seq;
    r.next = s->pending;
    s->pending = &r;
    s->n_pending++;
    pthread_cond_broadcast(&s->cv);
    int w = 0;
    while (!r.answered && !s->ended && !atomic_load(&l->stop) && w != ETIMEDOUT) {
        struct timespec slice; /* wakes for the listener's stop */
        timeout_at(&slice, 200);
        bool last = slice.tv_sec > until.tv_sec ||
                    (slice.tv_sec == until.tv_sec && slice.tv_nsec >= until.tv_nsec);
        w = pthread_cond_timedwait(&s->cv, &s->mu, last ? &until : &slice);
        if (w == ETIMEDOUT && !last)
            w = 0;
    }
    for (sreq **pp = &s->pending; *pp; pp = &(*pp)->next)
        if (*pp == &r) {
            *pp = r.next;
            break;
        }
    s->n_pending--;
    pthread_mutex_unlock(&s->mu);
    *rlen = r.reply_len;
    return r.reply;
}

static bool send_msg(int fd, const uint8_t *msg, size_t len)
{
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    return kiln_sock_full(fd, hdr, 4, false) && kiln_sock_full(fd, (void *)msg, len, false);
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    static const uint8_t failure[] = {5}; /* SSH_AGENT_FAILURE */
    _cleanup_free_ uint8_t *msg = malloc(BLD_SSH_MSG_MAX);
    uint8_t hdr[4];
    while (msg && !atomic_load(&c->l->stop) && kiln_sock_full(c->fd, hdr, 4, true)) {
        size_t len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
        if (len == 0 || len > BLD_SSH_MSG_MAX || !kiln_sock_full(c->fd, msg, len, true))
            break;
        size_t rlen = 0;
        _cleanup_free_ uint8_t *reply = relay(c->l, msg, len, &rlen);
        if (!(reply ? send_msg(c->fd, reply, rlen) : send_msg(c->fd, failure, sizeof(failure))))
            break;
    }
    shutdown(c->fd, SHUT_RDWR); /* the client sees EOF now, not when the slot is reaped */
    atomic_store(&c->done, true);
    return NULL;
}

/* Joins finished connections; a free slot or NULL. */
static conn *free_slot(bld_ssh_listener *l)
{
    conn *free_one = NULL;
    for (size_t i = 0; i < CONNS_MAX; i++) {
        conn *c = &l->conns[i];
        if (atomic_load(&c->used) && atomic_load(&c->done)) {
            pthread_join(c->th, NULL);
            close(c->fd);
            atomic_store(&c->used, false);
        }
        if (!atomic_load(&c->used) && free_one == NULL)
            free_one = c;
    }
    return free_one;
}

static void *accept_main(void *arg)
{
    bld_ssh_listener *l = arg;
    while (!atomic_load(&l->stop)) {
        struct pollfd pf = {l->fd, POLLIN, 0};
        if (poll(&pf, 1, 200) <= 0)
            continue;
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        conn *c = free_slot(l);
        if (c == NULL) { /* too many at once: the client sees EOF */
            close(fd);
            continue;
        }
        c->l = l;
        c->fd = fd;
        atomic_store(&c->done, false);
        if (pthread_create(&c->th, NULL, conn_main, c) != 0) {
            close(fd);
            continue;
        }
        atomic_store(&c->used, true);
    }
    return NULL;
}

/* Binds the socket at dir_fd/name through /proc/self/fd: the data dir's
 * path may be longer than sun_path allows. */
static int bind_at(int fd, int dir_fd, const char *name, kiln_error **err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dir_fd, name);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
        return kiln_error_set(err, KILN_EINVAL, 0, "ssh socket name %s too long", name);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "ssh agent socket");
    return 0;
}

int bld_ssh_listen(bld_ssh_listener **out, bld_ssh_session *s, const char *id, int dir_fd,
                   const char *name, unsigned mode, long uid, long gid, kiln_error **err)
{
    bld_ssh_listener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "ssh listener");
    snprintf(l->id, sizeof(l->id), "%s", id);
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r = l->fd < 0 ? kiln_error_set(err, KILN_EIO, errno, "socket") : 0;
    if (r == 0)
        r = bind_at(l->fd, dir_fd, name, err);
    /* The RUN's user reaches it as the mount asked (rootless, only root
     * exists inside and the chown is not needed). */
    if (r == 0 && fchmodat(dir_fd, name, mode & 07777, 0) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "chmod ssh agent socket");
    if (r == 0 && (uid > 0 || gid > 0) &&
        fchownat(dir_fd, name, uid > 0 ? (uid_t)uid : 0, gid > 0 ? (gid_t)gid : 0, 0) < 0 &&
        errno != EPERM)
        r = kiln_error_set(err, KILN_EIO, errno, "chown ssh agent socket");
    pthread_mutex_lock(&s->mu);
    s->refs++;
    pthread_mutex_unlock(&s->mu);
    l->s = s;
    if (r == 0 && pthread_create(&l->th, NULL, accept_main, l) != 0)
        r = kiln_error_set(err, KILN_ENOSPC, errno, "ssh listener thread");
    if (r < 0) {
        if (l->fd >= 0)
            close(l->fd);
        unref(s);
        free(l);
        return r;
    }
    *out = l;
    return 0;
}

void bld_ssh_listener_close(bld_ssh_listener *l)
{
    if (l == NULL)
        return;
    atomic_store(&l->stop, true);
    pthread_join(l->th, NULL);
    for (size_t i = 0; i < CONNS_MAX; i++) {
        conn *c = &l->conns[i];
        if (!atomic_load(&c->used))
            continue;
        shutdown(c->fd, SHUT_RDWR); /* wakes a recv; relay() sees stop */
        pthread_join(c->th, NULL);
        close(c->fd);
    }
    close(l->fd);
    unref(l->s);
    free(l);
}

/* ---- one RUN's sockets (engine_internal.h) --------------------------------- */

int eng_ssh_open(eng_ssh_socks *out, eng_build *b, const eng_mount *m, size_t n, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    out->dir_fd = -1;
    size_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += m[i].type == ENG_MNT_SSH;
    if (want == 0)
        return 0;
    if (want > ENG_SSH_MAX || n > ENG_SSH_MOUNTS_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "more than %d ssh mounts", ENG_SSH_MAX);
    if (asprintf(&out->dir, "%s/sandbox/ssh-XXXXXX", b->e->data_dir) < 0) {
        out->dir = NULL;
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    }
    if (mkdtemp(out->dir) == NULL ||
        (out->dir_fd = open(out->dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "ssh socket dir");
    for (size_t i = 0; i < n; i++) {
        if (m[i].type != ENG_MNT_SSH)
            continue;
        char name[16];
        snprintf(name, sizeof(name), "%zu", i);
        if (asprintf(&out->paths[i], "%s/%s", out->dir, name) < 0) {
            out->paths[i] = NULL;
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
        }
        int r =
            bld_ssh_listen(&out->l[out->n], b->spec->ssh, m[i].id, out->dir_fd, name,
                           m[i].mode >= 0 ? (unsigned)m[i].mode : 0600, m[i].uid, m[i].gid, err);
        if (r < 0)
            return r;
        out->n++;
    }
    return 0;
}

void eng_ssh_close(eng_ssh_socks *s)
{
    for (size_t i = 0; i < s->n; i++)
        bld_ssh_listener_close(s->l[i]);
    for (size_t i = 0; i < ENG_SSH_MOUNTS_MAX; i++) {
        if (s->paths[i])
            unlink(s->paths[i]);
        free(s->paths[i]);
    }
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    if (s->dir)
        rmdir(s->dir);
    free(s->dir);
    memset(s, 0, sizeof(*s));
    s->dir_fd = -1;
}
