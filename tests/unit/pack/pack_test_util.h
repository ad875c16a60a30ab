/* Helpers shared by the packing tests: temp dirs, shell commands whose
 * output the tests compare, and a one-call pack into a file. */
#ifndef PACK_TEST_UTIL_H
#define PACK_TEST_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kt_util.h"
#include "psh_pack.h"

/* Packs dir into file blob with opts; returns the psh_pack_dir result and
 * frees any error (message printed for diagnosis). */
static inline int pack_to(psh_layer_info *info, const char *dir, const char *blob,
                          const psh_pack_opts *opts, kiln_code *code_out)
{
    int fd = open(blob, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    kiln_error *err = NULL;
    int rc = psh_pack_dir(info, dir, fd, opts, &err);
    close(fd);
    if (code_out)
        *code_out = err ? err->code : KILN_OK;
    if (err != NULL && getenv("KT_VERBOSE"))
        fprintf(stderr, "  pack error: %s\n", err->msg);
    kiln_error_free(&err);
    return rc;
}

/* "sha256:" + sha256sum of a shell pipeline's output. */
static inline char *digest_of(const char *pipeline)
{
    char *hex = kt_capture(true, "%s | sha256sum | cut -d' ' -f1", pipeline);
    if (hex == NULL)
        return NULL;
    char *d = malloc(strlen(hex) + 8);
    if (d != NULL)
        sprintf(d, "sha256:%s", hex);
    free(hex);
    return d;
}

#endif
