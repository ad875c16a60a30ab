/* Minimal HTTP endpoint for operators and probes, on NNG's HTTP server:
 * GET /healthz (process is serving), /readyz (dependencies reachable) and
 * /metrics (Prometheus text format, version 0.0.4). */
#ifndef KILN_HTTP_H
#define KILN_HTTP_H

#include <stdbool.h>

#include "buf.h"
#include "error.h"

typedef struct kiln_http kiln_http;

typedef struct kiln_http_hooks {
    /* Fills detail (one line per check) and returns whether the service is ready. */
    bool (*ready)(void *user, kiln_buf *detail);
    /* Appends Prometheus text to out. */
    void (*metrics)(void *user, kiln_buf *out);
    void *user;
} kiln_http_hooks;

/* Serves on addr ("127.0.0.1:9090", ":9090" or "http://host:port"). */
int kiln_http_start(kiln_http **out, const char *addr, const kiln_http_hooks *hooks,
                    kiln_error **err);
/* Actual bound port (useful when addr asked for port 0); -1 if unknown. */
int kiln_http_port(kiln_http *h);
void kiln_http_stop(kiln_http *h);

#endif
