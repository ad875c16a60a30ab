/* Error objects and the code table shared with the wire protocol. */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[KILN_CODE_COUNT] = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "INTERNAL",
    "IO",
    "RESOURCE_EXHAUSTED",
    "UNIMPLEMENTED",
    "REMOTE",
};

const char *kiln_code_name(kiln_code code)
{
    int i = -(int)code;
    if (i < 0 || i >= KILN_CODE_COUNT)
        return "UNKNOWN";
    return code_names[i];
}

int kiln_code_to_wire(kiln_code code)
{
    int i = -(int)code;
    return (i >= 0 && i < KILN_CODE_COUNT) ? i : -(int)KILN_EINTERNAL;
}

kiln_code kiln_code_from_wire(int wire)
{
    if (wire < 0 || wire >= KILN_CODE_COUNT)
        return KILN_EINTERNAL;
    return (kiln_code)-wire;
}

kiln_code kiln_code_from_errno(int e)
{
    switch (e) {
    case 0:
        return KILN_OK;
    case ENOENT:
    case ENOTDIR:
        return KILN_ENOENT;
    case EEXIST:
    case ENOTEMPTY:
        return KILN_EEXIST;
    case EACCES:
    case EPERM:
    case EROFS:
        return KILN_EPERM;
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
        return KILN_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
        return KILN_ENOSPC;
    case ETIMEDOUT:
        return KILN_ETIMEDOUT;
    case ECANCELED:
    case EINTR:
        return KILN_ECANCELED;
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPIPE:
        return KILN_EUNAVAIL;
    case ENOSYS:
    case EOPNOTSUPP:
        return KILN_ENOTSUP;
    default:
        return KILN_EIO;
    }
}

__attribute__((format(printf, 1, 0))) static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

int kiln_error_set(kiln_error **err, kiln_code code, int sys_errno, const char *fmt, ...)
{
    if (err == NULL || *err != NULL)
        return code;
    kiln_error *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    char *m = vformat(fmt, ap);
    va_end(ap);
    if (m != NULL && sys_errno != 0) {
        char *full = NULL;
        if (asprintf(&full, "%s: %s", m, strerror(sys_errno)) >= 0) {
            free(m);
            m = full;
        }
    }
    e->code = code;
    e->sys_errno = sys_errno;
    e->msg = m != NULL ? m : strdup(kiln_code_name(code));
    *err = e;
    return code;
}

int kiln_error_wrap(kiln_error **err, const char *fmt, ...)
{
    if (err == NULL || *err == NULL)
        return KILN_EINTERNAL;
    va_list ap;
    va_start(ap, fmt);
    char *ctx = vformat(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (ctx != NULL && asprintf(&full, "%s: %s", ctx, (*err)->msg ? (*err)->msg : "") >= 0) {
        free((*err)->msg);
        (*err)->msg = full;
    }
    free(ctx);
    return (*err)->code;
}

void kiln_error_free(kiln_error **err)
{
    if (err == NULL || *err == NULL)
        return;
    free((*err)->msg);
    free(*err);
    *err = NULL;
}

kiln_error *kiln_error_steal(kiln_error **err)
{
    kiln_error *e = *err;
    *err = NULL;
    return e;
}
