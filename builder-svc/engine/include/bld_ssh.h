/* SSH agent forwarding for RUN --mount=type=ssh (kiln build --ssh).
 *
 * The builder never opens an agent socket of the client, which may be on
 * another machine: each RUN mount gets a unix socket of the builder's own
 * (bld_ssh_listen), bound into the RUN; every agent request read from it is
 * queued on the build's session, fetched by the CLI with SshAgentPoll
 * (bld_ssh_poll), answered by the CLI's own agent, and the answer written
 * back.  Only agent protocol messages travel; private keys stay with the
 * client's agent.  A session is found by a random token the CLI chose and
 * sent with the build, so no other client can read or answer its requests.
 *
 * Thread-safe.  Sessions are reference-counted: bld_ssh_session_end() drops
 * the builder's reference, a poll or a listener holds its own meanwhile. */
#ifndef BLD_SSH_H
#define BLD_SSH_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "error.h"
#include "rpc.h"

/* Largest agent message either way (OpenSSH's own limit). */
#define BLD_SSH_MSG_MAX (256 * 1024)
/* Requests of one session waiting for the CLI at once; more are refused. */
#define BLD_SSH_PENDING_MAX 64

typedef struct bld_ssh_session bld_ssh_session;

/* Checks the ssh fields of a build request: ids are 1-64 characters of
 * letters, digits, '.', '_', '-', at most 16 of them, no duplicate; the
 * token 32-128 hex digits.  KILN_EINVAL naming what is wrong (never the
 * token). */
int bld_ssh_check(char *const *ids, size_t n_ids, const char *token, kiln_error **err);

/* Starts a build's session (ids and token are copied) and registers it. */
int bld_ssh_session_new(bld_ssh_session **out, const char *token, char *const *ids, size_t n_ids,
                        kiln_error **err);
/* The build is over: pending requests fail (the RUN's client gets
 * SSH_AGENT_FAILURE), pollers are told it ended, the token is forgotten and
 * the caller's reference dropped.  Safe on NULL. */
void bld_ssh_session_end(bld_ssh_session *s);
/* True when the CLI serves agent id. */
bool bld_ssh_session_has(const bld_ssh_session *s, const char *id);

/* SshAgentPoll: delivers q's replies, waits up to q->wait_ms (at most 5 s)
 * for requests, and fills out with every request not answered yet (copied
 * into a).  KILN_ENOENT when no running build has that token. */
int bld_ssh_poll(const Kiln__V1__SshAgentPollRequest *q, Kiln__V1__SshAgentPollReply *out,
                 kiln_arena *a, kiln_error **err);

/* A unix socket at dir_fd/name (mode, owned by uid:gid when the builder may
 * chown) served by a thread of its own until closed: each connection's
 * agent requests go to agent id of s. */
typedef struct bld_ssh_listener bld_ssh_listener;
int bld_ssh_listen(bld_ssh_listener **out, bld_ssh_session *s, const char *id, int dir_fd,
                   const char *name, unsigned mode, long uid, long gid, kiln_error **err);
/* Stops serving (requests in flight fail) and joins the threads.  Safe on
 * NULL. */
void bld_ssh_listener_close(bld_ssh_listener *l);

#endif
