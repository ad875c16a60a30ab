/* SSH agent relay of RUN --mount=type=ssh (builder-svc/engine/include/bld_ssh.h)
 * without a sandbox: a client on the listener's socket plays the RUN, the
 * SshAgentPoll handler is called as the RPC server would, and the test
 * answers as the CLI would.  Checks the round trip, that only the right
 * token reaches the requests, that a request of an ended session (or a
 * listener closed under it) gets SSH_AGENT_FAILURE, and that an oversized
 * message ends the connection. */
#include "kt.h"
#include "svc_harness.h"
#include "arena.h"
#include "bld_ssh.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TOKEN "0123456789abcdef0123456789abcdef"

static char *dir;
static int dir_fd = -1;

KT_SETUP(setup)
{
    dir = kt_tmpdir("ssh");
    KT_REQUIRE(dir != NULL);
    dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    KT_REQUIRE(dir_fd >= 0);
}

KT_TEARDOWN(teardown)
{
    if (dir_fd >= 0)
        close(dir_fd);
    if (dir)
        kt_rmrf(dir);
}

/* The RUN's side: one request, its reply (type byte, or -1 for EOF). */
typedef struct client {
    char path[100]; /* fits sun_path */
    unsigned char msg[8];
    uint32_t len; /* as sent in the header (may lie) */
    int reply;
} client;

static void *client_main(void *arg)
{
    client *c = arg;
    c->reply = -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return NULL;
    unsigned char out[12] = {(unsigned char)(c->len >> 24), (unsigned char)(c->len >> 16),
                             (unsigned char)(c->len >> 8), (unsigned char)c->len};
    memcpy(out + 4, c->msg, sizeof(c->msg));
    unsigned char in[5];
    size_t got = 0;
    ssize_t k = write(fd, out, 4 + (c->len < 8 ? c->len : 8));
    while (k > 0 && got < sizeof(in) && (k = read(fd, in + got, sizeof(in) - got)) > 0)
        got += (size_t)k; /* the header and the body may come apart */
    if (got == sizeof(in))
        c->reply = in[4];
    close(fd);
    return NULL;
}

/* One poll as the RPC handler runs it; the number of requests seen. */
static size_t poll_once(const char *token, Kiln__V1__SshAgentMessage **replies, size_t n,
                        uint64_t *seq, char *id, int *code)
{
    kiln_arena *a = kiln_arena_new();
    Kiln__V1__SshAgentPollRequest q = KILN__V1__SSH_AGENT_POLL_REQUEST__INIT;
    q.token = (char *)token;
    q.replies = replies;
    q.n_replies = n;
    q.wait_ms = 2000;
    Kiln__V1__SshAgentPollReply r = KILN__V1__SSH_AGENT_POLL_REPLY__INIT;
    kiln_error *err = NULL;
    *code = bld_ssh_poll(&q, &r, a, &err);
    size_t got = r.n_requests;
    if (got && seq)
        *seq = r.requests[0]->seq;
    if (got && id)
        snprintf(id, 32, "%s", r.requests[0]->agent_id);
    kiln_error_free(&err);
    kiln_arena_free(a);
    return got;
}

KT_TEST(request_relayed_and_answered)
{
    char *ids[] = {"default"};
    bld_ssh_session *s = NULL;
    bld_ssh_listener *l = NULL;
    KT_REQUIRE(bld_ssh_check(ids, 1, TOKEN, NULL) == 0);
    KT_REQUIRE(bld_ssh_session_new(&s, TOKEN, ids, 1, NULL) == 0);
    KT_REQUIRE(bld_ssh_listen(&l, s, "default", dir_fd, "a", 0600, -1, -1, NULL) == 0);
    client c = {.msg = {11}, .len = 1};
    snprintf(c.path, sizeof(c.path), "%s/a", dir);
    pthread_t th;
    KT_REQUIRE(pthread_create(&th, NULL, client_main, &c) == 0);
    uint64_t seq = 0;
    char id[32] = "";
    int code = 0;
    KT_EXPECT(poll_once("fedcba9876543210fedcba9876543210", NULL, 0, NULL, NULL, &code) == 0);
    KT_EXPECT(code == KILN_ENOENT); /* another token sees nothing */
    KT_EXPECT(poll_once(TOKEN, NULL, 0, &seq, id, &code) == 1 && code == 0);
    KT_EXPECT_STR(id, "default");
    uint8_t answer[] = {12, 0, 0, 0, 0}; /* IDENTITIES_ANSWER, no keys */
    Kiln__V1__SshAgentMessage m = KILN__V1__SSH_AGENT_MESSAGE__INIT, *mp = &m;
    m.seq = seq;
    m.data.data = answer;
    m.data.len = sizeof(answer);
    poll_once(TOKEN, &mp, 1, NULL, NULL, &code);
    pthread_join(th, NULL);
    KT_EXPECT(c.reply == 12);
    bld_ssh_listener_close(l);
    bld_ssh_session_end(s);
    KT_EXPECT(poll_once(TOKEN, NULL, 0, NULL, NULL, &code) == 0 && code == KILN_ENOENT);
}

KT_TEST(ended_session_and_closed_listener_fail_the_request)
{
    char *ids[] = {"default"};
    bld_ssh_session *s = NULL;
    bld_ssh_listener *l = NULL;
    KT_REQUIRE(bld_ssh_session_new(&s, TOKEN, ids, 1, NULL) == 0);
    KT_REQUIRE(bld_ssh_listen(&l, s, "default", dir_fd, "b", 0600, -1, -1, NULL) == 0);
    client c = {.msg = {11}, .len = 1};
    snprintf(c.path, sizeof(c.path), "%s/b", dir);
    pthread_t th;
    KT_REQUIRE(pthread_create(&th, NULL, client_main, &c) == 0);
    int code = 0;
    KT_EXPECT(poll_once(TOKEN, NULL, 0, NULL, NULL, &code) == 1); /* queued, never answered */
    bld_ssh_session_end(s);
    pthread_join(th, NULL);
    KT_EXPECT(c.reply == 5); /* SSH_AGENT_FAILURE */
    /* A message over the limit: the connection is closed, nothing queued. */
    client big = {.msg = {11}, .len = BLD_SSH_MSG_MAX + 1};
    snprintf(big.path, sizeof(big.path), "%s/b", dir);
    KT_REQUIRE(pthread_create(&th, NULL, client_main, &big) == 0);
    pthread_join(th, NULL);
    KT_EXPECT(big.reply == -1);
    bld_ssh_listener_close(l);
}

KT_TEST(checks)
{
    char *good[] = {"default", "git.hub_1-x"}, *bad[] = {"bad id"}, *twice[] = {"a", "a"};
    KT_EXPECT(bld_ssh_check(good, 2, TOKEN, NULL) == 0);
    KT_EXPECT(bld_ssh_check(bad, 1, TOKEN, NULL) == KILN_EINVAL);
    KT_EXPECT(bld_ssh_check(twice, 2, TOKEN, NULL) == KILN_EINVAL);
    KT_EXPECT(bld_ssh_check(good, 1, "short", NULL) == KILN_EINVAL);
    KT_EXPECT(bld_ssh_check(good, 1, "0123456789ABCDEF0123456789ABCDEF", NULL) == KILN_EINVAL);
    KT_EXPECT(bld_ssh_check(NULL, 0, NULL, NULL) == 0);
}
