/* Options of a build's RUN sandbox as the command line and the wire write
 * them: `--add-host NAME:IP`, `--ulimit NAME=SOFT[:HARD]`, `--shm-size SIZE`.
 * The CLI parses them to refuse a bad value before anything is sent; the
 * builder parses the same strings again from the request (input from the
 * network), so both sides accept exactly the same set. */
#ifndef KILN_RUNOPTS_H
#define KILN_RUNOPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* A limit value meaning "unlimited" (RLIM_INFINITY; written -1 or
 * "unlimited", as Docker does). */
#define KILN_ULIMIT_INFINITY UINT64_MAX

/* One --ulimit: a resource of setrlimit(2) with its soft and hard values. */
typedef struct kiln_ulimit {
    int resource;     /* RLIMIT_* */
    const char *name; /* Docker's name ("nofile"): static storage */
    uint64_t soft, hard;
} kiln_ulimit;

/* Parses "NAME=SOFT[:HARD]" (HARD defaults to SOFT; NAME one of Docker's:
 * core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio
 * rttime sigpending stack).  KILN_EINVAL with a message naming what is wrong
 * (unknown name, not a number, soft above hard). */
int kiln_ulimit_parse(kiln_ulimit *out, const char *s, kiln_error **err);

/* "1024", "unlimited" into out (cap >= 24). */
void kiln_ulimit_format(char *out, size_t cap, uint64_t v);

/* Largest --add-host name and the text of an address (INET6_ADDRSTRLEN). */
#define KILN_HOSTNAME_MAX 253
#define KILN_ADDR_STRLEN  46

/* One --add-host entry: a host name and its address, in canonical text. */
typedef struct kiln_host_entry {
    char name[KILN_HOSTNAME_MAX + 1];
    char addr[KILN_ADDR_STRLEN];
} kiln_host_entry;

/* Parses "NAME:IP" or "NAME=IP" (the IP v4 or v6, v6 optionally in
 * brackets; the name a DNS name: labels of letters, digits, '-' and '_',
 * 1-63 characters, not starting or ending with '-').  "host-gateway" is
 * refused: a RUN never reaches the builder's host.  KILN_EINVAL with a
 * message otherwise. */
int kiln_host_entry_parse(kiln_host_entry *out, const char *s, kiln_error **err);

/* An SSH agent id of `--ssh ID=SOCKET` and `RUN --mount=type=ssh,id=ID`:
 * 1-64 letters, digits, '.', '_' or '-'. */
#define KILN_SSH_ID_MAX 64
bool kiln_ssh_id_ok(const char *id);

#endif
