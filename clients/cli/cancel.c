/* Ctrl-C and SIGTERM for the kiln CLI.
 *
 * Why a thread and sigwait rather than a handler: cancelling a job means an
 * RPC (Cancel) to the service that runs it, which is not async-signal-safe.
 * main() blocks SIGINT/SIGTERM before any other thread exists (NNG's threads
 * inherit the mask), and one thread takes them with sigwait():
 *
 *   - no job armed: the CLI exits at once with 128+signal, as any tool would;
 *   - a job being submitted (armed with no id yet): the signal is remembered
 *     and cli_cancel_arm() cancels the job as soon as its id is known;
 *   - a job running: Cancel is sent, "cancelling ..." and then "cancelled ..."
 *     are printed, and the verb goes on following the job until its terminal
 *     event (failed CANCELLED), then exits 128+signal;
 *   - a second signal: exit at once, whatever is in flight. */
#include "cli.h"
#include "config.h"
#include "events.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    pthread_mutex_t mu;
    cli_ctx *ctx;
    cli_service svc;
    bool armed;
    char job[KILN_JOB_ID_MAX + 1]; /* "" while the job is being submitted */
    char what[16];                 /* "build", "push", ... */
    bool cancel_sent;
    atomic_int sig; /* the first signal received, 0 if none */
    /* While a live view owns the terminal its thread prints our messages
     * (cli_cancel_take_message), so they are not drawn over. */
    bool routed;
    char msgs[1024];
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&st.mu);
    bool routed = st.routed;
    if (routed) {
        size_t n = strlen(st.msgs);
        snprintf(st.msgs + n, sizeof(st.msgs) - n, "%s\n", line);
    }
    pthread_mutex_unlock(&st.mu);
    if (!routed)
        fprintf(stderr, "kiln: %s\n", line);
}

void cli_cancel_route(bool on)
{
    pthread_mutex_lock(&st.mu);
    st.routed = on;
    char left[sizeof(st.msgs)];
    snprintf(left, sizeof(left), "%s", on ? "" : st.msgs);
    if (!on)
        st.msgs[0] = '\0';
    pthread_mutex_unlock(&st.mu);
    for (char *l = left, *e; *l; l = e + 1) { /* what the view did not print */
        e = strchr(l, '\n');
        fprintf(stderr, "kiln: %.*s\n", (int)(e - l), l);
    }
}

bool cli_cancel_take_message(char *out, size_t cap)
{
    pthread_mutex_lock(&st.mu);
    char *e = strchr(st.msgs, '\n');
    bool got = e != NULL;
    if (got) {
        snprintf(out, cap, "%.*s", (int)(e - st.msgs), st.msgs);
        memmove(st.msgs, e + 1, strlen(e + 1) + 1);
    }
    pthread_mutex_unlock(&st.mu);
    return got;
}

/* Sends Cancel for the armed job; st.mu is not held (the RPC takes time). */
static void send_cancel(cli_ctx *ctx, cli_service s, const char *what, const char *job)
{
    say("cancelling %s %s (press Ctrl-C again to quit at once)", what, job);
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CancelRequest cr = KILN__V1__CANCEL_REQUEST__INIT;
    cr.job_id = (char *)job;
    req.body_case = KILN__V1__REQUEST__BODY_CANCEL;
    req.cancel = &cr;
    kiln_rpc_client *c = NULL;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    int timeout = ctx->timeout_ms;
    if (kiln_rpc_client_new(&c, ctx->url[s], &ctx->transport, true, &err) < 0 ||
        kiln_rpc_call(c, &req, &rep, timeout, &err) < 0) {
        /* The job cannot be told: leave rather than wait for an end that
         * will not come. */
        cli_errorf("could not cancel %s %s: %s", what, job, err ? err->msg : "?");
        kiln_error_free(&err);
        kiln_rpc_client_free(c);
        _exit(128 + atomic_load(&st.sig));
    }
    bool was = rep->cancel_reply && rep->cancel_reply->was_running;
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(c);
    if (was)
        say("cancelled %s %s", what, job);
    else
        say("%s %s had already ended", what, job);
}

typedef struct cancel_call {
    cli_ctx *ctx;
    cli_service s;
    char what[sizeof(st.what)];
    char job[sizeof(st.job)];
} cancel_call;

static void *cancel_main(void *arg)
{
    cancel_call *cc = arg;
    send_cancel(cc->ctx, cc->s, cc->what, cc->job);
    free(cc);
    return NULL;
}

/* Sends Cancel from a thread of its own: the call may block (a stopped
 * service completes no connection), and the waiter must stay free to take
 * the second signal, which quits at once. */
static void cancel_async(cli_ctx *ctx, cli_service s, const char *what, const char *job)
{
    cancel_call *cc = calloc(1, sizeof(*cc));
    pthread_t t;
    pthread_attr_t at;
    if (cc != NULL && pthread_attr_init(&at) == 0) {
        *cc = (cancel_call){.ctx = ctx, .s = s};
        snprintf(cc->what, sizeof(cc->what), "%s", what);
        snprintf(cc->job, sizeof(cc->job), "%s", job);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rv = pthread_create(&t, &at, cancel_main, cc);
        pthread_attr_destroy(&at);
        if (rv == 0)
            return;
    }
    free(cc);
    send_cancel(ctx, s, what, job); /* no thread: here, as a last resort */
}

static void *waiter(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig == SIGWINCH) {
            cli_tty_winch();
            continue;
        }
        int expected = 0;
        if (!atomic_compare_exchange_strong(&st.sig, &expected, sig))
            _exit(128 + expected); /* second signal: quit at once */
        pthread_mutex_lock(&st.mu);
        bool armed = st.armed, now = armed && st.job[0] && !st.cancel_sent;
        char job[sizeof(st.job)], what[sizeof(st.what)];
        snprintf(job, sizeof(job), "%s", st.job);
        snprintf(what, sizeof(what), "%s", st.what);
        cli_ctx *ctx = st.ctx;
        cli_service s = st.svc;
        if (now)
            st.cancel_sent = true;
        pthread_mutex_unlock(&st.mu);
        if (!armed) {
            fputc('\n', stderr);
            _exit(128 + sig);
        }
        if (now)
            cancel_async(ctx, s, what, job);
    }
    return NULL;
}

void cli_signals_init(void)
{
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGWINCH); /* taken here too: no other thread sees EINTR */
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return;
    /* A blocked signal whose disposition is SIG_IGN is discarded, never
     * pending: a shell starts background jobs with SIGINT ignored, and Docker's
     * CLI takes ^C there too. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    pthread_t t;
    if (pthread_create(&t, NULL, waiter, &set) != 0) {
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return;
    }
    pthread_detach(t);
}

void cli_cancel_arm(cli_ctx *ctx, cli_service s, const char *what, const char *job)
{
    pthread_mutex_lock(&st.mu);
    st.ctx = ctx;
    st.svc = s;
    st.armed = true;
    snprintf(st.what, sizeof(st.what), "%s", what);
    snprintf(st.job, sizeof(st.job), "%s", job ? job : "");
    bool now = st.job[0] && atomic_load(&st.sig) != 0 && !st.cancel_sent;
    if (now)
        st.cancel_sent = true;
    pthread_mutex_unlock(&st.mu);
    if (now) /* the signal came while the job was being submitted */
        send_cancel(ctx, s, what, job);
}

void cli_cancel_disarm(void)
{
    pthread_mutex_lock(&st.mu);
    st.armed = false;
    st.job[0] = '\0';
    bool pending = atomic_load(&st.sig) != 0 && !st.cancel_sent;
    pthread_mutex_unlock(&st.mu);
    if (pending) /* signalled before a job existed */
        _exit(128 + atomic_load(&st.sig));
}

int cli_cancel_signal(void)
{
    return atomic_load(&st.sig);
}

int cli_cancel_exit(int rc)
{
    int sig = atomic_load(&st.sig);
    return sig ? 128 + sig : rc;
}
