/* kiln-pusher's RPC surface: the methods it serves beyond the common
 * Status/Health/Events, and its checks and metrics. */
#ifndef PSH_SERVER_H
#define PSH_SERVER_H

#include "service.h"

typedef struct psh_server psh_server;

/* Creates the pusher core for the data dir in o (borrowed, must outlive it). */
int psh_server_new(psh_server **out, const kiln_service_opts *o, kiln_error **err);
void psh_server_free(psh_server *p);
/* Methods and hooks to pass to kiln_service_start(); valid while p lives. */
const kiln_rpc_method *psh_server_methods(psh_server *p, size_t *n);
void psh_server_hooks(psh_server *p, kiln_service_hooks *out);
/* Hands the running service to the core (for events); call after start. */
void psh_server_attach(psh_server *p, kiln_service *svc);

#endif
