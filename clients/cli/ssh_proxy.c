/* kiln build --ssh: serves the build's SSH agent requests from this client's
 * agents (see cli.h).  kiln-builder queues what a RUN asks its agent socket
 * (builder-svc/engine/include/bld_ssh.h); a thread here fetches the requests with
 * SshAgentPoll, asks the local agent and sends the answers with the next
 * poll.  The builder never names a path here, and only agent messages
 * travel: keys stay in the agent.  Only the two requests a client needs to
 * authenticate are passed on (list identities, sign); a RUN cannot add,
 * remove or lock keys, nor use extensions. */
#include "cli.h"
#include "fs.h"
#include "cleanup.h"
#include "runopts.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define MSG_MAX     (256 * 1024) /* OpenSSH's own limit */
#define POLL_WAIT   1000         /* ms a poll waits on the builder */
#define AGENT_IO_MS 10000        /* ms the local agent may take */

#define POLL_MAX 64 /* answers sent with one poll (the builder queues as many) */

enum { AGENT_FAILURE = 5, AGENTC_REQUEST_IDENTITIES = 11, AGENTC_SIGN_REQUEST = 13 };
static unsigned char failure[] = {AGENT_FAILURE};

int cli_ssh_opt(cli_ssh_opts *o, const char *arg)
{
    /* default | default=SOCKET | ID=SOCKET (Docker's forms, one socket each) */
    char id[KILN_SSH_ID_MAX + 2] = "";
    const char *eq = strchr(arg, '='), *sock = eq ? eq + 1 : NULL;
    snprintf(id, sizeof(id), "%.*s", (int)(eq ? (size_t)(eq - arg) : strlen(arg)), arg);
    if (!kiln_ssh_id_ok(id) || (eq && !*sock) || (sock && strchr(sock, ','))) {
        cli_errorf("build: --ssh wants default, default=SOCKET or ID=SOCKET (ID: 1-64 letters, "
                   "digits, '.', '_', '-'), got '%s'",
                   arg);
        return CLI_EXIT_USAGE;
    }
    if (sock == NULL && strcmp(id, "default") == 0)
        sock = getenv("SSH_AUTH_SOCK");
    if (sock == NULL || !*sock) {
        cli_errorf("build: --ssh %s: %s", arg,
                   strcmp(id, "default") ? "give the agent socket as ID=SOCKET"
                                         : "SSH_AUTH_SOCK is not set (no agent running?)");
        return CLI_EXIT_USAGE;
    }
    struct stat st;
    if (stat(sock, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        cli_errorf("build: --ssh %s: %s is not a socket", id, sock);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->ids[i], id) == 0) {
            cli_errorf("build: --ssh %s given twice", id);
            return CLI_EXIT_USAGE;
        }
    if (o->n == CLI_SSH_MAX ||
        snprintf(o->ids[o->n], sizeof(o->ids[0]), "%s", id) >= (int)sizeof(o->ids[0]) ||
        snprintf(o->socks[o->n], sizeof(o->socks[0]), "%s", sock) >= (int)sizeof(o->socks[0])) {
        cli_errorf("build: --ssh %s: too many agents or too long a socket path", id);
        return CLI_EXIT_USAGE;
    }
    o->id_ptrs[o->n] = o->ids[o->n];
    o->n++;
    return CLI_EXIT_OK;
}

int cli_ssh_apply(cli_ssh_opts *o, Kiln__V1__BuildRequest *br)
{
    if (o->n == 0)
        return CLI_EXIT_OK;
    unsigned char raw[24];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        cli_errorf("build: --ssh: no random bytes for the session token: %s", strerror(errno));
        return CLI_EXIT_FAILED;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(o->token + 2 * i, 3, "%02x", raw[i]);
    explicit_bzero(raw, sizeof(raw));
    br->ssh_ids = o->id_ptrs;
    br->n_ssh_ids = o->n;
    br->ssh_token = o->token;
    return CLI_EXIT_OK;
}

/* ---- asking the local agent ---- */

/* One request to the agent at sock; the reply (caller frees) or NULL. */
static unsigned char *ask_agent(const char *sock, const ProtobufCBinaryData *q, size_t *len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof(sa.sun_path))
        return NULL;
    strcpy(sa.sun_path, sock);
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {AGENT_IO_MS / 1000, 0};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return NULL;
    unsigned char hdr[4] = {(unsigned char)(q->len >> 24), (unsigned char)(q->len >> 16),
                            (unsigned char)(q->len >> 8), (unsigned char)q->len};
    if (!kiln_sock_full(fd, hdr, 4, false) || !kiln_sock_full(fd, q->data, q->len, false) ||
        !kiln_sock_full(fd, hdr, 4, true))
        return NULL;
    size_t n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    unsigned char *r = n > 0 && n <= MSG_MAX ? malloc(n) : NULL;
    if (r == NULL || !kiln_sock_full(fd, r, n, true)) {
        free(r);
        return NULL;
    }
    *len = n;
    return r;
}

/* The answer to one request: the agent's, or SSH_AGENT_FAILURE. */
static void answer(const cli_ssh_opts *o, const Kiln__V1__SshAgentMessage *m,
                   Kiln__V1__SshAgentMessage *out)
{
    kiln__v1__ssh_agent_message__init(out);
    out->seq = m->seq;
    out->data.data = failure;
    out->data.len = sizeof(failure);
    const char *sock = NULL;
    for (size_t i = 0; i < o->n; i++)
        if (m->agent_id && strcmp(o->ids[i], m->agent_id) == 0)
            sock = o->socks[i];
    if (sock == NULL || m->data.len == 0 || m->data.len > MSG_MAX ||
        (m->data.data[0] != AGENTC_REQUEST_IDENTITIES && m->data.data[0] != AGENTC_SIGN_REQUEST))
        return;
    size_t len = 0;
    unsigned char *r = ask_agent(sock, &m->data, &len);
    if (r) {
        out->data.data = r;
        out->data.len = len;
    }
}

/* ---- the poll loop ---- */

struct cli_ssh_proxy {
    cli_ctx *ctx;
    const cli_ssh_opts *o;
    kiln_rpc_client *c;
    pthread_t th;
    atomic_bool stop;
};

static void free_answers(Kiln__V1__SshAgentMessage *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].data.data != failure)
            free(a[i].data.data);
}

static void *proxy_main(void *arg)
{
    cli_ssh_proxy *p = arg;
    Kiln__V1__SshAgentMessage answers[POLL_MAX], *ptrs[POLL_MAX];
    size_t n = 0;
    while (!atomic_load(&p->stop)) {
        Kiln__V1__SshAgentPollRequest q = KILN__V1__SSH_AGENT_POLL_REQUEST__INIT;
        q.token = (char *)p->o->token;
        q.replies = ptrs;
        q.n_replies = n;
        q.wait_ms = POLL_WAIT;
        kiln_req req = KILN__V1__REQUEST__INIT;
        req.body_case = KILN__V1__REQUEST__BODY_SSH_AGENT_POLL;
        req.ssh_agent_poll = &q;
        kiln_reply *rep = NULL;
        kiln_error *err = NULL;
        int r = kiln_rpc_call(p->c, &req, &rep, POLL_WAIT + p->ctx->timeout_ms, &err);
        free_answers(answers, n);
        n = 0;
        kiln_code code = r < 0 && err ? err->code : KILN_OK;
        kiln_error_free(&err);
        if (r < 0 && code == KILN_ENOENT)
            break; /* the build is over (or not started on that node) */
        if (r < 0) {
            usleep(200 * 1000);
            continue;
        }
        const Kiln__V1__SshAgentPollReply *pr = rep->ssh_agent_poll_reply;
        for (size_t i = 0; pr && i < pr->n_requests && n < POLL_MAX; i++, n++) {
            answer(p->o, pr->requests[i], &answers[n]);
            ptrs[n] = &answers[n];
        }
        bool ended = pr == NULL || pr->ended;
        kiln_rpc_reply_free(rep);
        if (ended)
            break;
    }
    free_answers(answers, n);
    return NULL;
}

cli_ssh_proxy *cli_ssh_proxy_start(cli_ctx *ctx, const cli_ssh_opts *o)
{
    if (o == NULL || o->n == 0)
        return NULL;
    cli_ssh_proxy *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->ctx = ctx;
    p->o = o;
    if ((p->c = cli_connect(ctx, CLI_BUILDER)) == NULL ||
        pthread_create(&p->th, NULL, proxy_main, p) != 0) {
        cli_errorf("build: --ssh: cannot serve the agent requests; RUN steps will see a failing "
                   "agent");
        kiln_rpc_client_free(p->c);
        free(p);
        return NULL;
    }
    return p;
}

void cli_ssh_proxy_stop(cli_ssh_proxy *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->th, NULL);
    kiln_rpc_client_free(p->c);
    free(p);
}
