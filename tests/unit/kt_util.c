/* Helpers every test shares (see kt_util.h). */
#include "kt_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "fs.h"

char *kt_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *p = NULL;
    if (asprintf(&p, "%s/kiln-%s-XXXXXX", base && *base ? base : "/tmp", tag) < 0)
        return NULL;
    if (mkdtemp(p) == NULL) {
        perror("mkdtemp");
        free(p);
        return NULL;
    }
    return p;
}

void kt_rmrf(const char *path)
{
    kiln_error *err = NULL;
    if (path != NULL && kiln_rm_rf(path, &err) < 0) {
        fprintf(stderr, "rm -rf %s: %s\n", path, err->msg);
        kiln_error_free(&err);
    }
}

void kt_rmrf_free(char *path)
{
    kt_rmrf(path);
    free(path);
}

char *kt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0, got;
    char *b = malloc(cap + 1);
    while (b != NULL && (got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (nb == NULL) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b == NULL)
        return NULL;
    b[n] = '\0';
    if (len != NULL)
        *len = n;
    return b;
}

int kt_write_file_mode(const char *path, const char *content, unsigned mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode ? mode : 0644);
    if (fd < 0)
        return -1;
    int r = kiln_write_all(fd, content, strlen(content));
    return close(fd) == 0 && r == 0 ? 0 : -1;
}

int kt_write_file(const char *path, const char *content)
{
    return kt_write_file_mode(path, content, 0644);
}

bool kt_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int kt_count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static int run_status(int st)
{
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int kt_sh(const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int st = system(cmd);
    free(cmd);
    return run_status(st);
}

char *kt_capture(bool trim, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (p == NULL)
        return NULL;
    size_t cap = 1 << 20, len = 0, got;
    char *b = malloc(cap);
    while (b != NULL && len + 1 < cap && (got = fread(b + len, 1, cap - len - 1, p)) > 0)
        len += got;
    int st = pclose(p);
    if (b == NULL)
        return NULL;
    b[len] = '\0';
    if (run_status(st) != 0) {
        free(b);
        return NULL;
    }
    while (trim && len > 0 && b[len - 1] == '\n')
        b[--len] = '\0';
    return b;
}

bool kt_have(const char *prog)
{
    return kt_sh("command -v %s >/dev/null 2>&1", prog) == 0;
}

int kt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

int kt_wait_port(int port, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        usleep(50000);
    }
    return -1;
}
