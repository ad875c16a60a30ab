/* Internals of the registry client shared by its files: the per-registry
 * HTTP client (reg_http.c), authentication (reg_auth.c), on-disk state
 * (reg_state.c), manifest helpers (reg_doc.c), push, pull and lists. */
#ifndef PSH_REG_INTERNAL_H
#define PSH_REG_INTERNAL_H

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "cleanup.h"
#include "ref.h"
#include "psh_registry.h"
#define REG_ERRBODY_MAX ((size_t)64 << 10) /* error bodies kept for messages */
#define REG_TOKEN_MAX   ((size_t)64 << 10) /* token responses */
#define REG_TOKENS      16                 /* cached bearer tokens per registry */
#define REG_SCOPE_MAX   1024

typedef struct reg_token {
    char *scope; /* owned; "" for scopeless */
    char *token; /* owned; secret */
    time_t expires;
} reg_token;

/* One registry host.  Shared by the threads of one operation. */
typedef struct reg_client {
    char host[KILN_REF_NAME_MAX + 1];  /* host[:port] on the wire */
    char base[KILN_REF_NAME_MAX + 16]; /* "https://host[:port]" */
    bool insecure;                     /* plain HTTP */
    bool plain_http;                   /* a TLS handshake got a plain-HTTP answer (probe) */
    const psh_registry_opts *o;
    const psh_reg_events *ev;
    char *ca_blob; /* system CAs + the .crt files of certs.d/<host>, or NULL (owned) */
    size_t ca_len;
    char *client_cert;    /* certs.d/<host>/NAME.cert presented to the registry, or NULL (owned) */
    char *client_key;     /* its NAME.key (owned; the path, never the key) */
    char state_dir[4096]; /* <data>/registry */

    pthread_mutex_t mu; /* protects everything below */
    CURL *idle[8];      /* reusable easy handles (each keeps its connections) */
    unsigned n_idle;
    CURLSH *share; /* DNS and TLS sessions */
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    /* Credentials (secrets). */
    char *basic;    /* base64("user:pass") or NULL */
    char *identity; /* identity (refresh) token or NULL */
    bool creds_loaded;
    /* Challenge learnt from the registry. */
    int scheme; /* 0 unknown, 1 none needed, 2 basic, 3 bearer */
    char *realm, *service;
    reg_token tokens[REG_TOKENS];
    unsigned n_tokens, next_token;
    /* Statistics. */
    unsigned retries;
} reg_client;

/* Opens a client for the registry of r.  The options and events are borrowed
 * for the client's lifetime.  data_dir is where state is kept. */
int reg_client_new(reg_client **out, const kiln_ref *r, const psh_registry_opts *o,
                   const psh_reg_events *ev, const char *data_dir, kiln_error **err);
void reg_client_free(reg_client *c);

/* A response.  Header values are owned; body holds error bodies and small
 * documents (2xx bodies go to the sink when one is set). */
typedef struct reg_resp {
    long status;
    char *location, *digest, *ctype, *range, *www_auth, *upload_uuid;
    long retry_after;   /* seconds, -1 when absent */
    int64_t clen;       /* Content-Length, -1 when absent */
    uint64_t chunk_min; /* OCI-Chunk-Min-Length, 0 when absent */
    kiln_buf body;
    /* internal */
    size_t body_max;
} reg_resp;

void reg_resp_dispose(reg_resp *rs);

/* Response sink for 2xx bodies (status tells 200 from 206): return 0 to
 * continue, non-zero to abort. */
typedef int (*reg_sink_fn)(void *ud, long status, const char *p, size_t n);

typedef struct reg_req {
    const char *method; /* GET HEAD POST PUT PATCH DELETE */
    const char *url;    /* absolute, or a path starting with '/' (joined to base) */
    const char *scope;  /* bearer scopes, space-separated; NULL = none */
    const char *ctype;  /* Content-Type of the body */
    const char *accept;
    const char *hdr; /* one extra header line ("Content-Range: 0-9"), or NULL */
    const void *mem; /* memory body */
    size_t mem_len;
    int fd; /* file body when >= 0: fd_len bytes from fd_off (pread) */
    uint64_t fd_off, fd_len;
    reg_sink_fn sink; /* 2xx body receiver; NULL = into rs->body */
    void *sink_ud;
    size_t body_max;     /* ceiling for rs->body; 0 = REG_ERRBODY_MAX */
    bool retry;          /* idempotent: retry transient failures here */
    bool no_low_speed;   /* finalising PUT: no low-speed timeout */
    const char *what;    /* for retried events and messages (digest or path) */
    uint64_t *sent;      /* add body bytes sent here (may be NULL) */
    const char *pdigest; /* when set, report blob_progress for the body */
    uint64_t pbase, ptotal;
    bool progress_end; /* also report when the whole body is handed over */
    long timeout_ms;   /* whole-request limit; 0 = none */
} reg_req;

/* Performs rq with authentication (a 401 leads to a challenge round and one
 * resend), retrying transient failures when rq->retry.  Returns 0 when an
 * HTTP response arrived (any status: see rs->status) or a negative code for
 * transport failures (KILN_EUNAVAIL), auth failures, cancellation.  The caller
 * disposes rs in both cases (it is initialised here). */
int reg_do(reg_client *c, const reg_req *rq, reg_resp *rs, kiln_error **err);

/* Same without the auth rounds, with auth (a full header value, or NULL)
 * sent as given; transient failures are always retried.  Used for token
 * endpoints. */
int reg_do_raw(reg_client *c, const reg_req *rq, const char *auth, reg_resp *rs, kiln_error **err);

/* True for statuses worth retrying: 408, 429, 5xx. */
bool reg_status_transient(long status);

/* Maps an unexpected status to a kiln code with the registry's message:
 * "<what>: <status>: CODE: message".  Returns the code. */
int reg_status_error(const reg_resp *rs, const char *what, kiln_error **err);

/* Sleeps before retry number attempt (0-based): exponential with jitter, or
 * Retry-After when given (capped).  Emits the retried event.  Returns
 * KILN_ECANCELED when cancelled meanwhile. */
int reg_backoff(reg_client *c, unsigned attempt, long retry_after, const char *what,
                const char *why, kiln_error **err);

bool reg_cancelled(const reg_client *c);

/* Builds the URL for path relative to the registry ("/v2/..."), or returns a
 * copy of an absolute URL.  Caller frees. */
char *reg_url(const reg_client *c, const char *path_or_url);

/* Appends "digest=<d>" to an upload location with '?' or '&'.  Caller frees. */
char *reg_url_add_query(const char *url, const char *key, const char *value);

/* ---- auth (reg_auth.c) ---- */

/* Authorization header value for scope ("Bearer …"/"Basic …") or NULL when
 * none is known yet.  Caller frees. */
char *reg_auth_header(reg_client *c, const char *scope);
/* Handles a 401 challenge: learns the scheme, fetches a token for scope.
 * KILN_EAUTH when no usable credentials. */
int reg_auth_challenge(reg_client *c, const char *www_auth, const char *scope, bool had_auth,
                       kiln_error **err);
void reg_auth_dispose(reg_client *c);

/* Parsers of registry input, exposed for the table-driven tests. */
/* 'Scheme k="v", k2=v2': the scheme and the realm/service/scope values
 * (each *out replaced with a malloc'd copy or left NULL; caller frees). */
void reg_parse_challenge(const char *s, char *scheme, size_t sn, char **realm, char **service,
                         char **scope);
/* The next offset after a Range header value ("0-1234" → 1235; "0-0" → 0). */
uint64_t reg_range_next(const char *range);
/* ": CODE: message" of the first entry of an {"errors":[…]} body, or "". */
void reg_registry_message(const reg_resp *rs, char *out, size_t n);

/* ---- certs.d (reg_certs.c) ---- */

/* <root>/<host> into out (n bytes), root being o->cert_dir or
 * /etc/containers/certs.d.  KILN_EINVAL when it does not fit. */
int reg_certs_host_dir(const psh_registry_opts *o, const char *host, char *out, size_t n,
                       kiln_error **err);
/* The .crt files of dir followed by the system CA bundle into *blob (caller
 * frees), or *blob NULL when dir holds none (or does not exist). */
int reg_certs_load_cas(const char *dir, char **blob, size_t *len);
/* The client certificate pair of dir: the first NAME.cert in byte order of
 * names, with its NAME.key.  *cert and *key receive paths (caller frees), or
 * NULL when dir has no pair or does not exist.  KILN_EINVAL (naming the
 * files) for a .cert without its .key or a .key without its .cert. */
int reg_certs_find_pair(const char *dir, char **cert, char **key, kiln_error **err);
/* Checks that key is a readable, unencrypted PEM private key and cert a PEM
 * certificate for it.  KILN_EINVAL naming the file; key contents never
 * appear in the message. */
int reg_certs_check_pair(const char *cert, const char *key, kiln_error **err);

/* ---- state (reg_state.c) ---- */

/* Records that repo on host holds digest.  Best effort (errors ignored). */
void reg_origin_add(const char *state_dir, const char *digest, const char *host, const char *repo);
/* Finds a repository other than not_repo on host known to hold digest.
 * Returns 0 and fills out (n bytes) or KILN_ENOENT. */
int reg_origin_find(const char *state_dir, const char *digest, const char *host,
                    const char *not_repo, char *out, size_t n);

typedef struct reg_session {
    char *location; /* owned */
    uint64_t offset;
} reg_session;

/* Loads the persisted upload session for (host, repo, digest): 0, or
 * KILN_ENOENT when none. */
int reg_session_load(const char *state_dir, const char *host, const char *repo, const char *digest,
                     reg_session *out);
/* Persists (temp + fsync + rename). */
int reg_session_save(const char *state_dir, const char *host, const char *repo, const char *digest,
                     const reg_session *ss, kiln_error **err);
void reg_session_drop(const char *state_dir, const char *host, const char *repo,
                      const char *digest);

/* True when host is listed as insecure in the registries config. */
bool reg_conf_insecure(const char *conf_path, const char *host);

/* Writes data to path crash-safely (temp + fsync + rename + dir fsync). */
int reg_write_atomic(const char *path, const void *data, size_t len, kiln_error **err);
/* mkdir -p. */
int reg_mkdirs(const char *path, kiln_error **err);

/* ---- documents (reg_doc.c) ---- */

/* Media type of a manifest document: the Content-Type when it names a
 * manifest type, else the mediaType field, else inferred (OCI manifests
 * written without mediaType).  Writes "" when unknown. */
void reg_doc_media_type(const cJSON *doc, const char *ctype, char *out, size_t n);
bool reg_mt_is_index(const char *mt);
bool reg_mt_is_manifest(const char *mt);
/* Reads a descriptor object ({mediaType, digest, size}); KILN_EREMOTE/EINVAL
 * when malformed. */
int reg_doc_descriptor(const cJSON *o, psh_descriptor *out, kiln_error **err);
/* The blobs of an image manifest: config first, then the layers.  Caller
 * frees *out. */
int reg_doc_blobs(const cJSON *manifest, psh_descriptor **out, size_t *n, kiln_error **err);

/* Runs fn(i, ud) for i in [0, n) on up to `width` threads; stops handing out
 * work after the first failure, whose error is returned. */
typedef int (*reg_job_fn)(void *ud, size_t i, kiln_error **err);
int reg_parallel(size_t n, unsigned width, reg_job_fn fn, void *ud, kiln_error **err);

/* Fetches the manifest ref (tag or digest) of repo through c, verified
 * against expect (may be NULL) and the registry's Docker-Content-Digest.
 * *bytes (caller frees), *len and d (media type negotiated or inferred). */
int reg_fetch_manifest(reg_client *c, const char *repo, const char *ref, const char *expect,
                       char **bytes, size_t *len, psh_descriptor *d, kiln_error **err);

/* Fetches the remote image manifest ref (not an index) with its config into
 * the store (layers are not fetched), records the blobs' origin, and returns
 * its descriptor and platform.  For manifest lists built from remote images. */
int reg_remote_image(psh_store *s, const char *ref, const psh_registry_opts *o, psh_descriptor *out,
                     char *os, size_t osn, char *arch, size_t archn, char *variant, size_t varn,
                     kiln_error **err);

/* The state root: o->data_dir or the store's data dir. */
const char *reg_state_root(const psh_store *s, const psh_registry_opts *o);

/* Waits until fewer than limit blob transfers to host are in flight in this
 * process, then takes a slot; give it back with reg_slot_release(). */
int reg_slot_acquire(const char *host, unsigned limit);
void reg_slot_release(int slot);

#endif
