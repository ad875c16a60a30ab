/* kiln build's RUN sandbox flags: --add-host, --ulimit, --shm-size (see
 * cli.h).  Checked here with the parsers the builder uses again on the
 * request, so a bad value fails with exit 2 before anything is sent. */
#include "cli.h"
#include "runopts.h"
#include "units.h"

static int keep(const char **list, size_t *n, const char *flag, const char *arg)
{
    if (*n == CLI_RUN_OPTS_MAX) {
        cli_errorf("build: too many --%s (at most %d)", flag, CLI_RUN_OPTS_MAX);
        return CLI_EXIT_USAGE;
    }
    list[(*n)++] = arg;
    return CLI_EXIT_OK;
}

int cli_run_opt(cli_run_opts *o, cli_run_flag flag, const char *arg)
{
    kiln_error *err = NULL;
    if (flag == CLI_RUN_SHM_SIZE) {
        long long v = kiln_parse_size(arg);
        if (v <= 0) {
            cli_errorf("build: --shm-size wants a size like 64m or 1g, got '%s'", arg);
            return CLI_EXIT_USAGE;
        }
        o->shm_size = (uint64_t)v;
        return CLI_EXIT_OK;
    }
    int r;
    if (flag == CLI_RUN_ADD_HOST) {
        kiln_host_entry h;
        r = kiln_host_entry_parse(&h, arg, &err);
    } else {
        kiln_ulimit u;
        r = kiln_ulimit_parse(&u, arg, &err);
    }
    if (r < 0) {
        cli_errorf("build: --%s", err ? err->msg : "invalid value");
        kiln_error_free(&err);
        return CLI_EXIT_USAGE;
    }
    return flag == CLI_RUN_ADD_HOST ? keep(o->hosts, &o->n_hosts, "add-host", arg)
                                    : keep(o->ulimits, &o->n_ulimits, "ulimit", arg);
}

void cli_run_opts_apply(const cli_run_opts *o, Kiln__V1__BuildRequest *br)
{
    br->add_hosts = (char **)o->hosts;
    br->n_add_hosts = o->n_hosts;
    br->ulimits = (char **)o->ulimits;
    br->n_ulimits = o->n_ulimits;
    br->shm_size = o->shm_size;
}
