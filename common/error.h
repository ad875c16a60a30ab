/* Kiln error type: one small code set, mirrored 1:1 by kiln.v1.Code in proto/.
 *
 * Fallible functions return int (0 ok, negative kiln_code) and take
 * `kiln_error **err` last.  The failure site fills *err with kiln_error_set();
 * callers add context with kiln_error_wrap() on the way up; the layer that
 * handles the error logs it and frees it with kiln_error_free(). */
#ifndef KILN_ERROR_H
#define KILN_ERROR_H

#include <stdarg.h>

/* The values are the negated kiln.v1.Code numbers: KILN_EINVAL == -CODE_INVALID_ARGUMENT. */
typedef enum kiln_code {
    KILN_OK = 0,
    KILN_EINVAL = -1,     /* INVALID_ARGUMENT: the caller sent something wrong */
    KILN_ENOENT = -2,     /* NOT_FOUND */
    KILN_EEXIST = -3,     /* ALREADY_EXISTS */
    KILN_EPRECOND = -4,   /* FAILED_PRECONDITION: state does not allow it */
    KILN_EAUTH = -5,      /* UNAUTHENTICATED */
    KILN_EPERM = -6,      /* PERMISSION_DENIED */
    KILN_EUNAVAIL = -7,   /* UNAVAILABLE: peer or service unreachable, retry may work */
    KILN_ETIMEDOUT = -8,  /* DEADLINE_EXCEEDED */
    KILN_ECANCELED = -9,  /* CANCELLED */
    KILN_EINTERNAL = -10, /* INTERNAL: a bug or broken invariant */
    KILN_EIO = -11,       /* IO: local filesystem or device failure */
    KILN_ENOSPC = -12,    /* RESOURCE_EXHAUSTED: disk, memory, limits */
    KILN_ENOTSUP = -13,   /* UNIMPLEMENTED: unknown RPC or unsupported feature */
    KILN_EREMOTE = -14,   /* REMOTE: a registry or other upstream answered with an error */
} kiln_code;

#define KILN_CODE_COUNT 15 /* number of codes including KILN_OK */

typedef struct kiln_error {
    kiln_code code;
    int sys_errno; /* errno at the failure site, 0 if none */
    char *msg;     /* owned; "context: context: cause" */
} kiln_error;

/* Sets *err (when err is non-NULL and *err is NULL) and returns code.
 * If sys_errno is non-zero, ": strerror(sys_errno)" is appended. */
int kiln_error_set(kiln_error **err, kiln_code code, int sys_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes "context: " to an existing error's message; returns its code
 * (KILN_EINTERNAL if *err is NULL). */
int kiln_error_wrap(kiln_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Frees *err and sets it to NULL.  Safe on NULL. */
void kiln_error_free(kiln_error **err);

/* Moves the error out of *err into the return value. */
kiln_error *kiln_error_steal(kiln_error **err);

/* Stable upper-case name: "INVALID_ARGUMENT" for KILN_EINVAL, ... ; "UNKNOWN" otherwise. */
const char *kiln_code_name(kiln_code code);

/* Maps an errno value (e.g. from open()) onto the closest code. */
kiln_code kiln_code_from_errno(int e);

/* Conversions to and from the wire enum value (kiln.v1.Code).  Unknown wire
 * values map to KILN_EINTERNAL. */
int kiln_code_to_wire(kiln_code code);
kiln_code kiln_code_from_wire(int wire);

#endif
