/* kiln-builder's RPC surface: the methods it serves beyond the common
 * Status/Health/Events, its client to kiln-pusher and that client's health. */
#ifndef BLD_SERVER_H
#define BLD_SERVER_H

#include <stdbool.h>

#include "bld_build_job.h"
#include "rpc.h"
#include "service.h"

typedef struct bld_server bld_server;

/* Creates the builder core.  pusher_url is dialled in the background and
 * probed every few seconds; o is borrowed and must outlive the core.  At most
 * max_builds builds run at once (0: BLD_MAX_BUILDS_DEFAULT); more queue. */
int bld_server_new(bld_server **out, const kiln_service_opts *o, const char *pusher_url,
                   int max_builds, kiln_error **err);
void bld_server_free(bld_server *b);
/* The builds' resource limits (kiln-builder --run-memory, …); before serving. */
void bld_server_set_limits(bld_server *b, const bld_build_limits *l);
const kiln_rpc_method *bld_server_methods(bld_server *b, size_t *n);
void bld_server_hooks(bld_server *b, kiln_service_hooks *out);
void bld_server_attach(bld_server *b, kiln_service *svc);

/* The network.host entitlement (off by default): see bld_engine.h. */
void bld_server_allow_host_network(bld_server *b, bool allow);

/* Last probe result: whether the pusher answered Status, with a short detail. */
bool bld_server_pusher_ok(bld_server *b, char *detail, size_t cap);
/* The shared client to kiln-pusher (borrowed). */
kiln_rpc_client *bld_server_pusher(bld_server *b);

#endif
