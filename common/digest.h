/* Streaming SHA-256 over OpenSSL EVP (uses the CPU's SHA instructions).
 * Digests are written as OCI digest strings: "sha256:" + 64 lower-case hex. */
#ifndef KILN_DIGEST_H
#define KILN_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define KILN_SHA256_LEN    32
#define KILN_DIGEST_STRLEN (7 + 64) /* "sha256:" + hex, without NUL */

typedef struct kiln_sha256 kiln_sha256;

/* Allocates a hashing context; NULL on allocation failure. Free with kiln_sha256_free(). */
kiln_sha256 *kiln_sha256_new(void);
void kiln_sha256_free(kiln_sha256 *h);
/* Restarts the context for a new message. */
void kiln_sha256_reset(kiln_sha256 *h);
void kiln_sha256_update(kiln_sha256 *h, const void *data, size_t len);
/* Finishes; writes the raw digest to out (32 bytes).  The context must be reset before reuse. */
void kiln_sha256_final(kiln_sha256 *h, uint8_t out[KILN_SHA256_LEN]);
/* Finishes; writes "sha256:<hex>" plus NUL into out (KILN_DIGEST_STRLEN + 1 bytes). */
void kiln_sha256_final_str(kiln_sha256 *h, char out[KILN_DIGEST_STRLEN + 1]);

/* One-shot helpers. */
void kiln_sha256_bytes(const void *data, size_t len, char out[KILN_DIGEST_STRLEN + 1]);
/* Hashes a whole file by streaming it; returns 0 or a negative kiln_code. */
int kiln_sha256_file(const char *path, char out[KILN_DIGEST_STRLEN + 1], uint64_t *size_out,
                     kiln_error **err);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void kiln_hex(const uint8_t *in, size_t n, char *out);

/* True when s is a well-formed "sha256:<64 lower-case hex>" digest. */
int kiln_digest_valid(const char *s);

#endif
