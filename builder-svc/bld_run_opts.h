/* The RUN sandbox options of a BuildRequest (add_hosts, ulimits, shm_size:
 * `kiln build --add-host/--ulimit/--shm-size`) checked and turned into what
 * the engine takes.  The request is input from the network: every value is
 * parsed again here with the CLI's own parsers (common/runopts.h). */
#ifndef BLD_RUN_OPTS_H
#define BLD_RUN_OPTS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "rpc.h"
#include "runopts.h"
#include "bld_ssh.h"

/* Most entries of each list a build may send. */
#define BLD_RUN_OPTS_MAX_HOSTS   256
#define BLD_RUN_OPTS_MAX_ULIMITS 32

typedef struct bld_run_opts {
    char *hosts;          /* "IP\tNAME\n" lines for /etc/hosts, NULL when none; owned */
    kiln_ulimit *ulimits; /* owned */
    size_t n_ulimits;
    uint64_t shm_bytes;   /* 0 = the sandbox's default */
    bld_ssh_session *ssh; /* --ssh agents, after bld_run_opts_ssh(); NULL = none */
} bld_run_opts;

/* Fills *out from q (zeroed first, so dispose is safe on any result).
 * run_memory: the build's RUN memory limit in effect (0 = none), which
 * shm_size may not exceed.  KILN_EINVAL naming the bad value: a malformed
 * entry, a ulimit hard value above this builder's own limit (refused, not
 * clamped: Docker refuses too), /dev/shm larger than the RUN's memory, bad
 * --ssh ids or token. */
int bld_run_opts_init(bld_run_opts *out, const Kiln__V1__BuildRequest *q, uint64_t run_memory,
                      kiln_error **err);
/* Starts the build's SSH agent session (ssh_ids, ssh_token) when it has
 * one; bld_run_opts_dispose() ends it. */
int bld_run_opts_ssh(bld_run_opts *o, const Kiln__V1__BuildRequest *q, kiln_error **err);
void bld_run_opts_dispose(bld_run_opts *o);

#endif
