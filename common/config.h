/* Paths and endpoint defaults shared by the services and the CLI (SPEC §10).
 *
 * Data dir: --data, else $KILN_DATA, else /var/lib/kiln as root, else
 * $XDG_DATA_HOME/kiln, else ~/.local/share/kiln.  Default endpoints are ipc://
 * sockets under <data>/run/. */
#ifndef KILN_CONFIG_H
#define KILN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define KILN_VERSION_STRING "0.1.0"

/* Returns the default data dir (caller frees). */
char *kiln_default_data_dir(void);

/* Which socket under <data>/run/. */
typedef enum kiln_endpoint {
    KILN_EP_BUILDER,
    KILN_EP_BUILDER_EVENTS,
    KILN_EP_PUSHER,
    KILN_EP_PUSHER_EVENTS,
} kiln_endpoint;

/* Returns "ipc://<data>/run/<name>.sock" (caller frees). */
char *kiln_default_url(const char *data_dir, kiln_endpoint ep);

/* Largest build secret (bytes), as BuildKit's 500 KiB rounded up: the CLI
 * that sends one, the builder that receives it and the sandbox that mounts it
 * agree on it. */
#define KILN_SECRET_MAX (512 * 1024)

#endif
