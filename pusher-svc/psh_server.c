/* kiln-pusher core: owns the store and registry traffic.  The store and
 * registry methods are registered here as they land; the service scaffolding
 * (Status, Health, Events, HTTP, shutdown) comes from common/service.c. */
#include "psh_server.h"

#include <stdlib.h>

struct psh_server {
    const kiln_service_opts *o;
    kiln_service *svc;
};

int psh_server_new(psh_server **out, const kiln_service_opts *o, kiln_error **err)
{
    psh_server *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    p->o = o;
    *out = p;
    return 0;
}

void psh_server_free(psh_server *p)
{
    free(p);
}

const kiln_rpc_method *psh_server_methods(psh_server *p, size_t *n)
{
    *n = 0;
    return NULL;
}

void psh_server_hooks(psh_server *p, kiln_service_hooks *out)
{
    out->checks = NULL;
    out->metrics = NULL;
    out->user = p;
}

void psh_server_attach(psh_server *p, kiln_service *svc)
{
    p->svc = svc;
}
