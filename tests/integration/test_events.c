/* The event path end to end, in process with the same code the daemons run:
 * 100,000 events seen in order without gaps by a live follower and by a replay
 * afterwards; exactly one terminal event; request_id idempotency of mutating
 * RPCs, including a resend that arrives while the first is still running. */
#include "kt.h"
#include "svc_harness.h"
#include "config.h"
#include "follow.h"
#include "rpc.h"
#include "service.h"

#include <pthread.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_EVENTS 100000

/* A service that dies in the middle of a job, without any cleanup: run when
 * this binary is exec'd with KILN_TEST_DOOMED_LOGDIR set (see the test below). */
__attribute__((constructor)) static void doomed_service(void)
{
    const char *logdir = getenv("KILN_TEST_DOOMED_LOGDIR");
    if (logdir == NULL)
        return;
    kiln_events *ev = NULL;
    kiln_job *job = NULL;
    kiln_error *e = NULL;
    if (kiln_events_new(&ev, getenv("KILN_TEST_DOOMED_URL"), NULL, logdir, &e) < 0 ||
        kiln_job_start(&job, ev, "push", "push", "doomed", &e) < 0 ||
        kiln_job_log(job, false, "working", &e) < 0)
        _exit(1);
    if (write(1, kiln_job_id(job), strlen(kiln_job_id(job))) < 0)
        _exit(1);
    _exit(0);
}

static char *dir;
static kiln_service_opts opts;
static kiln_service *svc;
static kiln_rpc_client *client;

KT_SETUP(setup)
{
    dir = kt_tmpdir("events");
    KT_REQUIRE(dir != NULL);
    kiln_service_opts_init(&opts, "kiln-test", "build", KILN_EP_BUILDER, KILN_EP_BUILDER_EVENTS);
    char *argv[] = {"kiln-test", "--data", dir, NULL};
    kiln_error *err = NULL;
    if (kiln_service_parse_args(&opts, 3, argv, NULL, &err) != KILN_ARGS_RUN ||
        kiln_service_start(&svc, &opts, NULL, 0, NULL, &err) < 0 ||
        kiln_rpc_client_new(&client, opts.listen_url, NULL, true, &err) < 0)
        KT_FAIL("setup: %s", err ? err->msg : "?");
    kiln_error_free(&err);
}

struct follower {
    const char *job;
    uint64_t count, last;
    bool in_order, terminal_seen, extra_after_terminal;
    int rc;
};

static int follow_cb(void *ud, const kiln_event *e)
{
    struct follower *f = ud;
    if (f->terminal_seen)
        f->extra_after_terminal = true;
    if (e->seq != f->last + 1)
        f->in_order = false;
    f->last = e->seq;
    f->count++;
    if (kiln_event_is_terminal(e))
        f->terminal_seen = true;
    return 0;
}

static void *follower_main(void *arg)
{
    struct follower *f = arg;
    kiln_follow_opts fo = {.job_id = f->job, .events_url = opts.events_url, .timeout_ms = 60000};
    kiln_error *err = NULL;
    f->rc = kiln_follow_job(client, &fo, follow_cb, f, &err);
    if (err)
        fprintf(stderr, "follow: %s\n", err->msg);
    kiln_error_free(&err);
    return NULL;
}

KT_TEST(hundred_thousand_events_live_and_replayed_in_order)
{
    kiln_job *job = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_job_start(&job, kiln_service_events(svc), "build", "build", "test", &err) == 0);
    char id[KILN_JOB_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s",
             kiln_job_id(job)); /* the job is released before the follower ends */
    struct follower live = {.job = id, .in_order = true};
    pthread_t th;
    pthread_create(&th, NULL, follower_main, &live);
    usleep(100000); /* let the follower subscribe; anything earlier comes from replay anyway */
    char line[64];
    for (int i = 0; i < N_EVENTS; i++) {
        snprintf(line, sizeof(line), "line %d", i);
        if (kiln_job_log(job, i % 7 == 0, line, &err) < 0)
            break;
    }
    KT_EXPECT(err == NULL);
    KT_EXPECT_INT(kiln_job_complete(job, "done", NULL, &err), 0);
    /* A second terminal event is refused. */
    KT_EXPECT_INT(kiln_job_fail(job, KILN_EINTERNAL, "again", &err), KILN_EPRECOND);
    kiln_error_free(&err);
    KT_EXPECT_INT(kiln_job_log(job, false, "late", &err), KILN_EPRECOND);
    kiln_error_free(&err);
    kiln_job_release(job);
    pthread_join(th, NULL);
    KT_EXPECT_INT(live.rc, 0);
    KT_EXPECT_INT(live.count, N_EVENTS + 2); /* started + lines + completed */
    KT_EXPECT(live.in_order);
    KT_EXPECT(live.terminal_seen);
    KT_EXPECT(!live.extra_after_terminal);

    /* A replay after the fact, paging through the Events RPC. */
    struct follower rep = {.job = id, .in_order = true};
    uint64_t after = 0;
    bool finished = false;
    for (;;) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
        er.job_id = id;
        er.after_seq = after;
        req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
        req.events = &er;
        kiln_reply *r = NULL;
        KT_REQUIRE(kiln_rpc_call(client, &req, &r, 10000, &err) == 0);
        for (size_t i = 0; i < r->events_reply->n_events; i++) {
            const kiln_event *e = r->events_reply->events[i];
            follow_cb(&rep, e);
            KT_EXPECT_STR(e->job_id, id);
            after = e->seq;
        }
        finished = r->events_reply->finished;
        bool more = r->events_reply->more;
        kiln_rpc_reply_free(r);
        if (!more)
            break;
    }
    KT_EXPECT_INT(rep.count, N_EVENTS + 2);
    KT_EXPECT(rep.in_order);
    KT_EXPECT(rep.terminal_seen);
    KT_EXPECT(finished);
}

KT_TEST(job_released_without_result_gets_a_failed_event)
{
    kiln_job *job = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_job_start(&job, kiln_service_events(svc), "build", "build", "t", &err) == 0);
    char id[KILN_JOB_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", kiln_job_id(job));
    kiln_job_release(job);
    struct follower f = {.job = id, .in_order = true};
    kiln_follow_opts fo = {.job_id = id, .events_url = opts.events_url, .timeout_ms = 10000};
    KT_EXPECT_INT(kiln_follow_job(client, &fo, follow_cb, &f, &err), 0);
    KT_EXPECT_INT(f.count, 2);
    KT_EXPECT(f.terminal_seen);
}

KT_TEST(events_rpc_rejects_bad_and_unknown_job_ids)
{
    const char *bad[] = {"../../etc/passwd", "", "ABC", "a/b", "x.y"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
        er.job_id = (char *)bad[i];
        req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
        req.events = &er;
        kiln_reply *r = NULL;
        kiln_error *err = NULL;
        KT_EXPECT_INT(kiln_rpc_call(client, &req, &r, 5000, &err), KILN_EINVAL);
        kiln_error_free(&err);
    }
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__EventsRequest er = KILN__V1__EVENTS_REQUEST__INIT;
    er.job_id = "0123456789abcdef";
    req.body_case = KILN__V1__REQUEST__BODY_EVENTS;
    req.events = &er;
    kiln_reply *r = NULL;
    kiln_error *err = NULL;
    KT_EXPECT_INT(kiln_rpc_call(client, &req, &r, 5000, &err), KILN_ENOENT);
    kiln_error_free(&err);
}

/* ---- idempotency: a custom server whose Health is "mutating" and slow ---- */

static int calls;

static int slow_counter(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                        kiln_error **err)
{
    int n = __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    usleep(300000);
    Kiln__V1__HealthReply *h = kiln_arena_alloc(a, sizeof(*h));
    kiln__v1__health_reply__init(h);
    h->ready = true;
    h->checks = kiln_arena_calloc(a, 1, sizeof(*h->checks));
    h->checks[0] = kiln_arena_alloc(a, sizeof(Kiln__V1__Check));
    kiln__v1__check__init(h->checks[0]);
    h->checks[0]->name = "calls";
    h->checks[0]->detail = kiln_arena_printf(a, "%d", n);
    h->n_checks = 1;
    reply->body_case = KILN__V1__REPLY__BODY_HEALTH_REPLY;
    reply->health_reply = h;
    return 0;
}

static const kiln_rpc_method idem_methods[] = {
    {KILN__V1__REQUEST__BODY_HEALTH, "Mutate", slow_counter, KILN_RPC_MUTATING, NULL},
};

struct caller {
    kiln_rpc_client *c;
    const char *id;
    char detail[32];
    int rc;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__HealthRequest hr = KILN__V1__HEALTH_REQUEST__INIT;
    req.request_id = (char *)c->id;
    req.body_case = KILN__V1__REQUEST__BODY_HEALTH;
    req.health = &hr;
    kiln_reply *r = NULL;
    kiln_error *err = NULL;
    c->rc = kiln_rpc_call(c->c, &req, &r, 5000, &err);
    if (c->rc == 0)
        snprintf(c->detail, sizeof(c->detail), "%s", r->health_reply->checks[0]->detail);
    kiln_rpc_reply_free(r);
    kiln_error_free(&err);
    return NULL;
}

KT_TEST(mutating_calls_are_idempotent_on_request_id)
{
    char url[300];
    snprintf(url, sizeof(url), "ipc://%s/run/idem.sock", dir);
    kiln_rpc_server_opts so = {.url = url, .methods = idem_methods, .n_methods = 1};
    kiln_rpc_server *srv = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_rpc_server_start(&srv, &so, &err) == 0);
    kiln_rpc_client *c1 = NULL, *c2 = NULL;
    KT_REQUIRE(kiln_rpc_client_new(&c1, url, NULL, true, &err) == 0);
    KT_REQUIRE(kiln_rpc_client_new(&c2, url, NULL, true, &err) == 0);

    /* Two sends of one request_id, the second while the first still runs. */
    struct caller a = {c1, "req-1"}, b = {c2, "req-1"};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, caller_main, &a);
    usleep(50000);
    pthread_create(&tb, NULL, caller_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    KT_EXPECT_INT(a.rc, 0);
    KT_EXPECT_INT(b.rc, 0);
    KT_EXPECT_STR(a.detail, "1");
    KT_EXPECT_STR(b.detail, "1");
    /* A later resend is answered from the cache; a new id runs again. */
    struct caller c = {c1, "req-1"}, d = {c1, "req-2"};
    caller_main(&c);
    caller_main(&d);
    KT_EXPECT_STR(c.detail, "1");
    KT_EXPECT_STR(d.detail, "2");
    KT_EXPECT_INT(calls, 2);
    /* Mutating calls need an id (the client fills a random one when empty). */
    struct caller e = {c1, ""};
    caller_main(&e);
    KT_EXPECT_INT(e.rc, 0);
    KT_EXPECT_INT(calls, 3);
    kiln_rpc_client_free(c1);
    kiln_rpc_client_free(c2);
    kiln_rpc_server_stop(srv, 2000);
}

static kiln_reply *wait_call(const char *job, uint32_t timeout_ms, kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__WaitRequest wr = KILN__V1__WAIT_REQUEST__INIT;
    wr.job_id = (char *)job;
    wr.timeout_ms = timeout_ms;
    req.body_case = KILN__V1__REQUEST__BODY_WAIT;
    req.wait = &wr;
    kiln_reply *r = NULL;
    kiln_rpc_call(client, &req, &r, 10000, err);
    return r;
}

KT_TEST(wait_returns_the_terminal_event)
{
    kiln_job *job = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_job_start(&job, kiln_service_events(svc), "build", "build", "t", &err) == 0);
    char id[KILN_JOB_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", kiln_job_id(job));
    kiln_reply *r = wait_call(id, 200, &err);
    KT_REQUIRE(r != NULL);
    KT_EXPECT(!r->wait_reply->finished);
    KT_EXPECT_INT(r->wait_reply->last_seq, 1);
    kiln_rpc_reply_free(r);
    KT_EXPECT_INT(kiln_job_complete(job, "ok", "sha256:abc", &err), 0);
    r = wait_call(id, 5000, &err);
    KT_REQUIRE(r != NULL);
    KT_EXPECT(r->wait_reply->finished);
    KT_REQUIRE(r->wait_reply->terminal != NULL);
    KT_EXPECT_INT(r->wait_reply->terminal->payload_case, KILN__V1__EVENT__PAYLOAD_COMPLETED);
    KT_EXPECT_STR(r->wait_reply->terminal->completed->digest, "sha256:abc");
    KT_EXPECT_INT(r->wait_reply->terminal->seq, 2);
    kiln_rpc_reply_free(r);
    kiln_job_release(job);
    r = wait_call("feedfacefeedface", 0, &err);
    KT_EXPECT(r == NULL && err && err->code == KILN_ENOENT);
    kiln_error_free(&err);
}

KT_TEST(jobs_of_a_killed_service_end_failed_at_next_start)
{
    char *d = kt_tmpdir("recover");
    KT_REQUIRE(d != NULL);
    char logdir[512], url[600];
    snprintf(logdir, sizeof(logdir), "%s/events/push", d);
    snprintf(url, sizeof(url), "ipc://%s/ev.sock", d);
    /* NNG cannot be used in a forked child of a process that already uses it:
     * run the doomed service as a fresh exec of this binary.  Everything the
     * child needs is prepared before fork(): between fork and exec a child of
     * a multi-threaded process may only make async-signal-safe calls. */
    extern char **environ;
    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **envp = calloc(n_env + 3, sizeof(char *));
    KT_REQUIRE(envp != NULL);
    memcpy(envp, environ, n_env * sizeof(char *));
    char e1[600], e2[700];
    snprintf(e1, sizeof(e1), "KILN_TEST_DOOMED_LOGDIR=%s", logdir);
    snprintf(e2, sizeof(e2), "KILN_TEST_DOOMED_URL=%s", url);
    envp[n_env] = e1;
    envp[n_env + 1] = e2;
    char *const child_argv[] = {"doomed", NULL};
    int pipefd[2];
    KT_REQUIRE(pipe(pipefd) == 0);
    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        execve("/proc/self/exe", child_argv, envp);
        _exit(127);
    }
    free(envp);
    close(pipefd[1]);
    char id[KILN_JOB_ID_MAX + 1] = {0};
    struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
    ssize_t n = poll(&pfd, 1, 30000) == 1 ? read(pipefd[0], id, KILN_JOB_ID_MAX) : -1;
    close(pipefd[0]);
    int st = 0;
    if (n <= 0)
        kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    KT_REQUIRE(n > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

    kiln_events *ev = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_events_new(&ev, url, NULL, logdir, &err) == 0);
    kiln_arena *a = kiln_arena_new();
    Kiln__V1__EventsReply r = KILN__V1__EVENTS_REPLY__INIT;
    KT_EXPECT_INT(kiln_events_replay(ev, id, 0, 0, &r, a, &err), 0);
    KT_EXPECT_INT(r.n_events, 3);
    KT_EXPECT(r.finished);
    if (r.n_events == 3) {
        KT_EXPECT_INT(r.events[2]->seq, 3);
        KT_EXPECT_INT(r.events[2]->payload_case, KILN__V1__EVENT__PAYLOAD_FAILED);
        KT_EXPECT(strncmp(r.events[2]->topic, "push.", 5) == 0);
    }
    kiln_arena_free(a);
    kiln_events_free(ev);
    /* A second start finds nothing left to recover. */
    KT_REQUIRE(kiln_events_new(&ev, url, NULL, logdir, &err) == 0);
    a = kiln_arena_new();
    Kiln__V1__EventsReply r2 = KILN__V1__EVENTS_REPLY__INIT;
    KT_EXPECT_INT(kiln_events_replay(ev, id, 0, 0, &r2, a, &err), 0);
    KT_EXPECT_INT(r2.n_events, 3);
    kiln_arena_free(a);
    kiln_events_free(ev);
    kt_rmrf(d);
    free(d);
}

KT_TEARDOWN(teardown)
{
    if (client)
        kiln_rpc_client_free(client);
    if (svc)
        kiln_service_stop(svc);
    kiln_service_opts_dispose(&opts);
    if (dir)
        kt_rmrf(dir);
    free(dir);
}
