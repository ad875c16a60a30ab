/* Docker config.json credentials, read the way podman, skopeo and docker do:
 * which file (an explicit path, else $REGISTRY_AUTH_FILE, else
 * $DOCKER_CONFIG/config.json, else ~/.docker/config.json), how its keys name
 * registries, and what it holds for one registry (credHelpers entry, else
 * auths with auth / username+password / identitytoken, else credsStore),
 * helpers being run as docker-credential-<name> get with the server on
 * stdin.  Used by the CLI (which resolves credentials and sends them with a
 * request) and by kiln-registry-tool / the registry library.
 *
 * Secrets are wiped when freed and never formatted into messages. */
#ifndef KILN_DOCKERCFG_H
#define KILN_DOCKERCFG_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "error.h"

/* Credentials for one registry; every string owned. */
typedef struct kiln_reg_cred {
    char *registry; /* canonical host (kiln_dockercfg_host) */
    char *username; /* KILN_DOCKERCFG_TOKEN_USER: secret is an identity token */
    char *secret;
} kiln_reg_cred;

#define KILN_DOCKERCFG_TOKEN_USER "<token>"

/* The config file to read: authfile if set, else $REGISTRY_AUTH_FILE, else
 * $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json.  -1 when none
 * can be named (or it does not fit n). */
int kiln_dockercfg_path(const char *authfile, char *out, size_t n);

/* The registry a config key, a login argument or a reference's domain names,
 * canonically: "https://h:5000/v1/" -> "h:5000"; Docker Hub's names
 * (docker.io, index.docker.io, registry-1.docker.io) -> "docker.io". */
void kiln_dockercfg_host(const char *key, char *out, size_t n);

/* What a helper is told for host: Docker Hub's legacy server URL for Hub,
 * else the host itself (what kiln login stores under). */
const char *kiln_dockercfg_server_key(const char *host);

/* Loads path: 0 with *out an object (an empty one when the file does not
 * exist or is empty), else KILN_EINVAL / KILN_EIO naming the path. */
int kiln_dockercfg_load(const char *path, cJSON **out, kiln_error **err);

/* What cfg holds for host: 1 with *out filled, 0 when nothing (including a
 * helper that knows nothing), -1 with *err when a helper cannot be run or
 * fails.  helpers = false: auths only (no process is started). */
int kiln_dockercfg_lookup(const cJSON *cfg, const char *host, bool helpers, kiln_reg_cred *out,
                          kiln_error **err);

/* docker-credential-<helper> get for host. Same returns as lookup. */
int kiln_dockercfg_helper_get(const char *helper, const char *host, kiln_reg_cred *out,
                              kiln_error **err);

/* Canonical hosts of cfg's auths and credHelpers keys, in file order, each
 * once; *n set; the array and strings owned by the caller (free each, then
 * the array).  NULL with *n = 0 when none. */
char **kiln_dockercfg_hosts(const cJSON *cfg, size_t *n);

/* Wipes and frees the strings of c. */
void kiln_reg_cred_dispose(kiln_reg_cred *c);

#endif
