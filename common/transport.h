/* Endpoint URLs and transport security for every NNG socket Kiln opens.
 *
 * Accepted schemes: ipc:// (default; same host), tcp:// and tls+tcp://.
 * Listening policy (SPEC §2): a builder runs whatever RUN commands reach it,
 * so a listener that is reachable from other hosts must be tls+tcp:// with a
 * client CA (mutual TLS), unless allow_insecure is set explicitly. */
#ifndef KILN_TRANSPORT_H
#define KILN_TRANSPORT_H

#include <stdbool.h>
#include <sys/types.h>

#include <nng/nng.h>

#include "error.h"

typedef struct kiln_tls_opts {
    const char *cert; /* PEM certificate file (ours); borrowed */
    const char *key;  /* PEM private key file; borrowed */
    const char *ca;   /* PEM CA bundle: verifies the peer; borrowed */
    /* Dialing: the name the server's certificate must carry; NULL: the URL's
     * host.  NNG's TLS engine (mbedtls 2.28) matches it against DNS names in
     * the certificate's subjectAltName only, so a certificate for an IP
     * endpoint needs that IP as a DNS entry too, or use this override. */
    const char *server_name;
    /* Dialing: accept any server certificate.  Only an explicit
     * --tls-insecure-skip-verify sets it; otherwise the server is verified
     * against ca, or the system CA store when ca is NULL. */
    bool insecure_skip_verify;
} kiln_tls_opts;

typedef struct kiln_transport_opts {
    kiln_tls_opts tls;
    bool allow_insecure; /* permit non-loopback tcp:// or tls+tcp:// without client auth */
    /* ipc:// listeners: the socket file is mode 0660, group ipc_gid when
     * ipc_group_set (else the process's group). */
    bool ipc_group_set;
    gid_t ipc_gid;
} kiln_transport_opts;

typedef enum kiln_scheme {
    KILN_SCHEME_IPC,
    KILN_SCHEME_TCP,
    KILN_SCHEME_TLS,
} kiln_scheme;

/* Validates url and reports its scheme; for tcp/tls also whether the host is a
 * loopback address (127.0.0.0/8, ::1, localhost).  KILN_EINVAL for anything else. */
int kiln_url_check(const char *url, kiln_scheme *scheme_out, bool *loopback_out, kiln_error **err);

/* Starts a listener on sock after enforcing the listening policy above.  For
 * ipc:// the socket's directory is created (0700) when missing, and the socket
 * file gets mode 0660 (and o->ipc_gid) whatever the umask. */
int kiln_listen(nng_socket sock, const char *url, const kiln_transport_opts *o, kiln_error **err);

/* Starts a dialer.  With wait=true the first connection attempt is made now
 * and its failure is returned (KILN_EUNAVAIL); otherwise NNG keeps redialling
 * in the background.  tls+tcp:// dials verify the server's certificate and
 * name against o->tls.ca, or the system CA store without one (unless
 * o->tls.insecure_skip_verify), and present o->tls.cert/key when given. */
int kiln_dial(nng_socket sock, const char *url, const kiln_transport_opts *o, bool wait,
              kiln_error **err);

/* Gives an ipc socket directory (the services' run/ dir) mode 0700, or 0750
 * with group gid when group_set, whatever it had before; creates it when
 * missing. */
int kiln_ipc_dir_secure(const char *dir, bool group_set, gid_t gid, kiln_error **err);

/* The system CA bundle (SSL_CERT_FILE, else the first of the usual Debian,
 * Fedora and Alpine paths that exists), or NULL. */
const char *kiln_system_ca_file(void);

/* Closes a client-side socket (REQ, SUB) waiting at most timeout_ms.  NNG
 * 1.5.2's nng_close() can block forever while a pipe with data in flight is
 * torn down (fixed upstream after that release); a caller must not hang on
 * it, so the close runs on a helper thread that is abandoned, with the socket,
 * if it does not finish in time.  Returns false when it timed out. */
bool kiln_nng_close_bounded(nng_socket s, int timeout_ms);

/* Maps an NNG error number onto a kiln_code. */
kiln_code kiln_code_from_nng(int rv);

/* For ipc:// URLs, the filesystem path (borrowed, points into url); else NULL. */
const char *kiln_ipc_path(const char *url);

/* A URL a service advertises (its events endpoint), made dialable by a
 * client: a wildcard listen host (0.0.0.0, [::], *) becomes the host of
 * via_url, the endpoint the client already reached.  Other URLs are copied.
 * Returns a malloc'd string (NULL when out of memory). */
char *kiln_url_for_dial(const char *url, const char *via_url);

#endif
