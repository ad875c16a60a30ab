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

#include "psh_pack.h"

/* Runs a shell command; returns its exit status (or -1). */
static inline int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
}

/* Runs a shell command and returns its stdout without the trailing newline
 * (caller frees), or NULL when it fails. */
static inline char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *sh_out(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    int st = pclose(f);
    if (buf == NULL || st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        free(buf);
        return NULL;
    }
    while (len > 0 && buf[len - 1] == '\n')
        len--;
    buf[len] = '\0';
    return buf;
}

/* Creates a fresh temp dir; returns its path (caller frees). */
static inline char *tmpdir_new(void)
{
    char tmpl[] = "/tmp/kiln-pack-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static inline void tmpdir_remove(char *d)
{
    if (d != NULL)
        sh("rm -rf '%s'", d);
    free(d);
}

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
    char *hex = sh_out("%s | sha256sum | cut -d' ' -f1", pipeline);
    if (hex == NULL)
        return NULL;
    char *d = malloc(strlen(hex) + 8);
    if (d != NULL)
        sprintf(d, "sha256:%s", hex);
    free(hex);
    return d;
}

#endif
