/* Registry test fixture: temp dirs, shell helpers, a real docker-registry
 * started on 127.0.0.1 (plain, TLS, htpasswd or token auth), the fault proxy
 * and token server from tests/fakes/, and small images built in the store. */
#ifndef REG_FIXTURE_H
#define REG_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "kt_util.h"
#include "psh_commit.h"
#include "psh_registry.h"
#include "psh_store.h"

typedef enum rf_auth { RF_AUTH_NONE, RF_AUTH_BASIC, RF_AUTH_TOKEN } rf_auth;

typedef struct rf_registry {
    char *dir; /* config, storage, certs (owned) */
    int port;
    pid_t pid;
    bool tls;
    char host[64];      /* "127.0.0.1:PORT" */
    char certs_d[4200]; /* cert dir root holding <host>/ca.crt (tls only) */
    /* token auth */
    int token_port;
    pid_t token_pid;
    char token_log[4200];
} rf_registry;

/* Starts docker-registry with filesystem storage under a temp dir.  Basic
 * auth accepts user "kiln" / password "s3cret-pw"; token auth runs
 * tests/fakes/token_server.py (token_life seconds of JWT validity) with the
 * same account.  Returns 0, or 77 when docker-registry or one of the tools
 * the tests compare with (skopeo, umoci, python3, openssl, htpasswd, curl) is
 * missing. */
int rf_registry_start(rf_registry *r, bool tls, rf_auth auth, int token_life);
void rf_registry_stop(rf_registry *r);

/* A registry and a store in a fresh temp dir: what a registry test works
 * against. */
typedef struct rf_env {
    rf_registry reg;
    char *dir;
    psh_store *s;
} rf_env;
/* Starts the registry (exits 77 when a tool it needs is missing, see
 * rf_registry_start) and opens the store; 0 or -1. */
int rf_env_open(rf_env *e, bool tls, rf_auth auth, int token_life);
/* Stops both; the dir stays when KT_KEEP is set. */
void rf_env_close(rf_env *e);

/* Fault proxy in front of 127.0.0.1:upstream.  pattern: comma-separated
 * actions applied to successive requests (ok, 429, 500, 503, reset, slow,
 * resetresp).  Stats (JSON) go to stats_path. */
typedef struct rf_proxy {
    pid_t pid;
    int port;
    char stats[4200];
} rf_proxy;
int rf_proxy_start(rf_proxy *p, const char *dir, int upstream, const char *pattern);
/* Reads a counter from the proxy's stats ("body_bytes", "requests", "faults"). */
long long rf_proxy_stat(const rf_proxy *p, const char *key);
void rf_proxy_stop(rf_proxy *p);

/* Commits a small image from a busybox rootfs (plus a file with content
 * marker) and tags it; out receives the commit result. */
int rf_busybox_image(psh_store *s, const char *data_dir, const char *tag, const char *marker,
                     psh_commit_result *out);
/* Same with another architecture in the config (the files stay the host's). */
int rf_busybox_image_arch(psh_store *s, const char *data_dir, const char *tag, const char *marker,
                          const char *arch, psh_commit_result *out);
/* Stores an image with one random "uncompressed" layer blob of size bytes (not a tar:
 * the registry does not look inside) and tags it.  out_manifest receives the
 * manifest digest, out_layer the layer digest (both may be NULL). */
int rf_random_image(psh_store *s, const char *data_dir, const char *tag, size_t size,
                    const char *arch, char *out_manifest, char *out_layer);

/* Default options for a test registry (short retry delays). */
void rf_opts(psh_registry_opts *o, const rf_registry *r);

/* Event counters a test can install. */
typedef struct rf_counts {
    int started, skipped, mounted, done, retried, manifests, progress;
    int progress_sleep_ms; /* slows uploads down (kill tests, token expiry) */
} rf_counts;
void rf_events(psh_reg_events *ev, rf_counts *c);

#endif
