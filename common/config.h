/* Paths and endpoint defaults shared by the services and the CLI (SPEC §10).
 *
 * Data dir: --data, else $KILN_DATA, else /var/lib/kiln as root, else
 * $XDG_DATA_HOME/kiln, else ~/.local/share/kiln.  Default endpoints are ipc://
 * sockets under <data>/run/. */
#ifndef KILN_CONFIG_H
#define KILN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

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

/* mkdir -p with the given mode for missing components. */
/* Largest build secret (bytes), as BuildKit's 500 KiB rounded up: the CLI
 * that sends one, the builder that receives it and the sandbox that mounts it
 * agree on it. */
#define KILN_SECRET_MAX (512 * 1024)

int kiln_mkdir_p(const char *path, unsigned mode, kiln_error **err);
/* rm -rf path: never follows a symlink; read-only directories (from a tar)
 * are opened up first.  0, or -1 with errno when something stayed. */
int kiln_rm_tree(const char *path);

/* Random lower-case hex id of 2*nbytes characters into out (2*nbytes+1 bytes). */
void kiln_random_hex(char *out, size_t nbytes);

/* Milliseconds on CLOCK_MONOTONIC / CLOCK_REALTIME. */
unsigned long long kiln_now_ms(void);
long long kiln_wall_ms(void);

/* Identity of this host and of the filesystem this process sees:
 * "<boot id>:<mount namespace>:<st_dev>:<st_ino of />" into out.  Two
 * processes with the same id can hand each other absolute paths.  Never fails:
 * parts that cannot be read are left empty. */
void kiln_host_id(char *out, size_t cap);

/* Parses a size like "4M", "512k", "1048576"; -1 on error. */
long long kiln_parse_size(const char *s);

/* Parses a duration: a sequence of <number><unit> with units h, m, s, ms
 * ("1h30m", "10m", "90s", "500ms"); a bare number is seconds.  Milliseconds,
 * or -1 on error. */
long long kiln_parse_duration_ms(const char *s);
/* "2 GiB", "512 MiB", "1.5 GiB", "4096 bytes" into out. */
void kiln_format_size(char *out, size_t cap, unsigned long long bytes);
/* "10m", "1h30m", "1m30s", "1500ms" into out. */
void kiln_format_duration(char *out, size_t cap, unsigned long long ms);

#endif
