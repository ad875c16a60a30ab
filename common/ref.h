/* Image references, parsed and normalised like Docker's reference grammar.
 *
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [ domain "/" ] component ( "/" component )*
 *   domain    := host-component ( "." host-component )* [ ":" port ]   (or "localhost")
 *   component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"* ) [a-z0-9]+ )*
 *   tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *   digest    := "sha256:" 64 lower-case hex
 *
 * The first component is a registry domain when it contains '.' or ':' or is
 * "localhost"; otherwise the image lives on Docker Hub ("docker.io"), and a
 * single-component Hub name gets the "library/" prefix.  Two spellings are
 * kept apart:
 *   - familiar: what a user writes, normalised ("app:1", "team/app:1",
 *     "localhost:5000/team/app:1").  Kiln stores this form as the
 *     org.opencontainers.image.ref.name annotation.
 *   - canonical: fully qualified ("docker.io/library/app:1").
 * Both parse to the same kiln_ref, so either finds the same image. */
#ifndef KILN_REF_H
#define KILN_REF_H

#include <stdbool.h>
#include <stddef.h>

#include "digest.h"
#include "error.h"

#define KILN_REF_NAME_MAX   255 /* domain + "/" + path, as in Docker */
#define KILN_REF_TAG_MAX    128
#define KILN_REF_STRMAX     (KILN_REF_NAME_MAX + 1 + KILN_REF_TAG_MAX + 1 + KILN_DIGEST_STRLEN + 1)
#define KILN_REF_DOCKER_HUB "docker.io"

/* Parse flags. */
enum {
    KILN_REF_DEFAULT_TAG = 1 << 0, /* add tag "latest" when neither tag nor digest is given */
    KILN_REF_NO_DIGEST = 1 << 1,   /* reject "@digest" (a tag is being created) */
};

/* A parsed reference.  All fields are NUL-terminated; tag and digest are ""
 * when absent. */
typedef struct kiln_ref {
    char domain[KILN_REF_NAME_MAX + 1]; /* "docker.io", "localhost:5000", "ghcr.io" */
    char path[KILN_REF_NAME_MAX + 1];   /* "library/app", "team/app" */
    char tag[KILN_REF_TAG_MAX + 1];
    char digest[KILN_DIGEST_STRLEN + 1];
} kiln_ref;

/* Parses s into *out.  Returns 0, or KILN_EINVAL with a message that says
 * what is wrong (upper case in the repository, tag too long, bad digest,
 * name over 255 characters, ...).  *out is zeroed on failure. */
int kiln_ref_parse(kiln_ref *out, const char *s, unsigned flags, kiln_error **err);

/* Familiar form: "app:1", "team/app@sha256:…", "localhost:5000/a/b:2".
 * Writes at most n bytes including the NUL; returns the length it needed
 * (like snprintf), so a result >= n means truncation.  KILN_REF_STRMAX always
 * suffices. */
size_t kiln_ref_familiar(const kiln_ref *r, char *buf, size_t n);

/* Fully qualified form: "docker.io/library/app:1".  Same contract as
 * kiln_ref_familiar(). */
size_t kiln_ref_canonical(const kiln_ref *r, char *buf, size_t n);

/* Fully qualified repository name without tag or digest ("docker.io/library/app"). */
size_t kiln_ref_repository(const kiln_ref *r, char *buf, size_t n);

/* Host to contact on the wire: "registry-1.docker.io" for Docker Hub, else the
 * domain as written.  The returned string is borrowed from r or static. */
const char *kiln_ref_registry_host(const kiln_ref *r);

/* True when a and b name the same repository, tag and digest. */
bool kiln_ref_equal(const kiln_ref *a, const kiln_ref *b);

/* True when s is a valid tag (without the leading ':'). */
bool kiln_ref_tag_valid(const char *s);

#endif
