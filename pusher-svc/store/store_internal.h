/* Internals shared by the store's source files; not part of the API. */
#ifndef PSH_STORE_INTERNAL_H
#define PSH_STORE_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs.h"
#include "psh_store.h"

/* Seconds before GC reclaims a "new-" file in .kiln/tmp or .kiln/pins (one
 * whose creator died between creating and locking it). */
#define PSH_STORE_NEW_MIN_AGE 600

struct psh_store {
    char *path;     /* absolute layout dir */
    char *data_dir; /* realpath of the data dir */
    int root_fd;    /* layout dir */
    int blobs_fd;   /* blobs/sha256 */
    int tmp_fd;     /* .kiln/tmp */
    int pins_fd;    /* .kiln/pins */
    int kiln_fd;    /* .kiln */
};

/* Takes the store's writer lock (flock LOCK_EX on .kiln/lock); *out_fd is the
 * lock: closing it releases the lock. */
int psh_store_lock(const psh_store *s, int *out_fd, kiln_error **err);

/* Loads index.json (an empty index when the file is missing).  Caller frees
 * *out with cJSON_Delete(). */
int psh_store_index_load(const psh_store *s, cJSON **out, kiln_error **err);
/* Serialises and atomically replaces index.json.  Caller holds the lock. */
int psh_store_index_save(const psh_store *s, const cJSON *index, kiln_error **err);

/* Reads and parses a JSON blob of at most PSH_MANIFEST_MAX bytes. */
int psh_store_read_json(const psh_store *s, const char *digest, cJSON **out, kiln_error **err);

/* Fills d from a JSON descriptor object; KILN_EINVAL when malformed. */
int psh_descriptor_from_json(psh_descriptor *d, const cJSON *obj, kiln_error **err);
/* A new {"mediaType","digest","size"} object (NULL on allocation failure). */
cJSON *psh_descriptor_to_json(const psh_descriptor *d);

/* Media type of a manifest or index document: its mediaType field, else a
 * guess from its shape (manifests without mediaType exist). */
const char *psh_manifest_media_type(const cJSON *doc);
bool psh_media_type_is_index(const char *mt);
bool psh_media_type_is_manifest(const char *mt);

/* Parses an RFC 3339 time ("2026-01-02T03:04:05Z", fractions and offsets
 * allowed) into unix seconds; -1 when malformed. */
int64_t psh_parse_rfc3339(const char *s);
/* Formats unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (buf of at least 32 bytes). */
void psh_format_rfc3339(int64_t t, char *buf, size_t n);

struct psh_commit_spec;
struct psh_commit_result;
/* Writes config and manifest for the new layers already stored and listed in
 * res->layers (no base), then applies spec's tags (commit.c; used by import).
 * spec->n_layers must equal res->n_layers. */
int psh_commit_assemble(psh_store *s, psh_store_pin *pin, const struct psh_commit_spec *spec,
                        struct psh_commit_result *res, kiln_error **err);

/* A set of digests (GC reachability, export contents). */
typedef struct psh_dset {
    char (*v)[KILN_DIGEST_STRLEN + 1];
    size_t n, cap;
} psh_dset;

/* Adds a digest; KILN_ENOSPC on allocation failure. */
int psh_dset_add(psh_dset *set, const char *digest, kiln_error **err);
/* Sorts and removes duplicates; required before psh_dset_has(). */
void psh_dset_sort(psh_dset *set);
bool psh_dset_has(const psh_dset *set, const char *digest);
void psh_dset_dispose(psh_dset *set);

/* Adds the document d (a manifest or an index) and every blob it references,
 * recursively, to set.  strict: a missing or unreadable blob is an error
 * (KILN_ENOENT); otherwise it is skipped (GC keeps what it can prove). */
int psh_store_collect(const psh_store *s, const char *digest, psh_dset *set, bool strict,
                      kiln_error **err);

#endif
