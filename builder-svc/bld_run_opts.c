/* RUN sandbox options of a build (see bld_run_opts.h). */
#include "bld_run_opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "buf.h"
#include "units.h"

/* Ceiling of the /etc/hosts lines: the most entries at their longest. */
#define HOSTS_MAX (BLD_RUN_OPTS_MAX_HOSTS * (KILN_ADDR_STRLEN + KILN_HOSTNAME_MAX + 2))

static int hosts_text(bld_run_opts *o, const Kiln__V1__BuildRequest *q, kiln_error **err)
{
    if (q->n_add_hosts == 0)
        return 0;
    if (q->n_add_hosts > BLD_RUN_OPTS_MAX_HOSTS)
        return kiln_error_set(err, KILN_EINVAL, 0, "more than %d --add-host entries",
                              BLD_RUN_OPTS_MAX_HOSTS);
    kiln_buf b;
    kiln_buf_init(&b, HOSTS_MAX);
    int r = 0;
    for (size_t i = 0; i < q->n_add_hosts && r == 0; i++) {
        kiln_host_entry h;
        r = kiln_host_entry_parse(&h, q->add_hosts[i], err);
        if (r == 0)
            r = kiln_buf_printf(&b, err, "%s\t%s\n", h.addr, h.name);
    }
    if (r < 0) {
        kiln_buf_dispose(&b);
        return r;
    }
    o->hosts = kiln_buf_steal(&b, NULL);
    return 0;
}

/* A RUN never gets a hard limit the builder does not have itself. */
static int ulimit_allowed(const kiln_ulimit *u, kiln_error **err)
{
    struct rlimit own;
    if (getrlimit(u->resource, &own) < 0)
        return kiln_error_set(err, KILN_EINTERNAL, errno, "getrlimit %s", u->name);
    if (own.rlim_max == RLIM_INFINITY)
        return 0;
    if (u->hard != KILN_ULIMIT_INFINITY && u->hard <= (uint64_t)own.rlim_max)
        return 0;
    char want[24], max[24];
    kiln_ulimit_format(want, sizeof(want), u->hard);
    kiln_ulimit_format(max, sizeof(max), (uint64_t)own.rlim_max);
    return kiln_error_set(err, KILN_EINVAL, 0,
                          "--ulimit %s: a hard limit of %s is above this builder's own of %s",
                          u->name, want, max);
}

static int ulimits(bld_run_opts *o, const Kiln__V1__BuildRequest *q, kiln_error **err)
{
    if (q->n_ulimits == 0)
        return 0;
    if (q->n_ulimits > BLD_RUN_OPTS_MAX_ULIMITS)
        return kiln_error_set(err, KILN_EINVAL, 0, "more than %d --ulimit entries",
                              BLD_RUN_OPTS_MAX_ULIMITS);
    o->ulimits = calloc(q->n_ulimits, sizeof(*o->ulimits));
    if (o->ulimits == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "ulimits");
    for (size_t i = 0; i < q->n_ulimits; i++) {
        int r = kiln_ulimit_parse(&o->ulimits[i], q->ulimits[i], err);
        if (r == 0)
            r = ulimit_allowed(&o->ulimits[i], err);
        if (r < 0)
            return r;
        o->n_ulimits++;
    }
    return 0;
}

int bld_run_opts_init(bld_run_opts *out, const Kiln__V1__BuildRequest *q, uint64_t run_memory,
                      kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    int r = hosts_text(out, q, err);
    if (r == 0)
        r = ulimits(out, q, err);
    if (r < 0)
        return r;
    if (run_memory && q->shm_size > run_memory) {
        char want[48], max[48];
        kiln_format_size(want, sizeof(want), q->shm_size);
        kiln_format_size(max, sizeof(max), run_memory);
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "--shm-size %s is above the RUN memory limit of %s", want, max);
    }
    out->shm_bytes = q->shm_size;
    return bld_ssh_check(q->ssh_ids, q->n_ssh_ids, q->ssh_token, err);
}

int bld_run_opts_ssh(bld_run_opts *o, const Kiln__V1__BuildRequest *q, kiln_error **err)
{
    if (q->n_ssh_ids == 0)
        return 0;
    return bld_ssh_session_new(&o->ssh, q->ssh_token, q->ssh_ids, q->n_ssh_ids, err);
}

void bld_run_opts_dispose(bld_run_opts *o)
{
    free(o->hosts);
    free(o->ulimits);
    bld_ssh_session_end(o->ssh);
    memset(o, 0, sizeof(*o));
}
