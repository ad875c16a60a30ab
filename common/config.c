/* Defaults for paths and endpoints, plus small process-wide utilities. */
#include "config.h"
#include "cleanup.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *kiln_default_data_dir(void)
{
    const char *env = getenv("KILN_DATA");
    if (env && *env)
        return strdup(env);
    if (geteuid() == 0)
        return strdup("/var/lib/kiln");
    char *out = NULL;
    const char *xdg = getenv("XDG_DATA_HOME");
    if (xdg && *xdg) {
        if (asprintf(&out, "%s/kiln", xdg) < 0)
            return NULL;
        return out;
    }
    const char *home = getenv("HOME");
    if (asprintf(&out, "%s/.local/share/kiln", home && *home ? home : "/tmp") < 0)
        return NULL;
    return out;
}

char *kiln_default_url(const char *data_dir, kiln_endpoint ep)
{
    static const char *const names[] = {"builder.sock", "builder-events.sock", "pusher.sock",
                                        "pusher-events.sock"};
    char *out = NULL;
    if (asprintf(&out, "ipc://%s/run/%s", data_dir, names[ep]) < 0)
        return NULL;
    return out;
}

int kiln_mkdir_p(const char *path, unsigned mode, kiln_error **err)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp))
        return kiln_error_set(err, KILN_EINVAL, 0, "bad directory path '%s'", path);
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdir %s", tmp);
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "mkdir %s", tmp);
    struct stat st;
    if (stat(tmp, &st) < 0 || !S_ISDIR(st.st_mode))
        return kiln_error_set(err, KILN_EIO, 0, "%s is not a directory", tmp);
    return 0;
}

void kiln_random_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof(raw))
        nbytes = sizeof(raw);
    size_t got = 0;
    while (got < nbytes) {
        ssize_t r = getrandom(raw + got, nbytes - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* getrandom cannot fail for small requests after boot; keep a fallback anyway. */
            for (; got < nbytes; got++)
                raw[got] = (unsigned char)(rand() ^ (int)kiln_now_ms());
            break;
        }
        got += (size_t)r;
    }
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hx[raw[i] >> 4];
        out[2 * i + 1] = hx[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

unsigned long long kiln_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000ULL;
}

long long kiln_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000LL;
}

long long kiln_parse_size(const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        return -1;
    }
    if (*end && end[1] != '\0' && !((end[1] == 'i' || end[1] == 'B') && end[2] == '\0') &&
        !(end[1] == 'i' && end[2] == 'B' && end[3] == '\0'))
        return -1;
    if (v > (unsigned long long)LLONG_MAX >> shift)
        return -1;
    return (long long)(v << shift);
}

void kiln_host_id(char *out, size_t cap)
{
    char boot[64] = "", ns[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f != NULL) {
        if (fgets(boot, sizeof(boot), f) == NULL)
            boot[0] = '\0';
        boot[strcspn(boot, "\n")] = '\0';
        fclose(f);
    }
    ssize_t n = readlink("/proc/self/ns/mnt", ns, sizeof(ns) - 1);
    ns[n > 0 ? n : 0] = '\0';
    struct stat st;
    if (stat("/", &st) < 0)
        memset(&st, 0, sizeof(st));
    snprintf(out, cap, "%.40s:%.40s:%llu:%llu", boot, ns, (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
}

static int rm_unlock_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)f;
    if (flag == FTW_D && (sb->st_mode & 0700) != 0700)
        chmod(p, (sb->st_mode & 07777) | 0700);
    return 0;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb, (void)flag, (void)f;
    return remove(p) < 0 && errno != ENOENT ? -1 : 0;
}

int kiln_rm_tree(const char *path)
{
    nftw(path, rm_unlock_cb, 16, FTW_PHYS);
    return nftw(path, rm_cb, 16, FTW_PHYS | FTW_DEPTH);
}

long long kiln_parse_duration_ms(const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    unsigned long long total = 0;
    while (*s) {
        char *end = NULL;
        errno = 0;
        if (*s < '0' || *s > '9')
            return -1;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s)
            return -1;
        unsigned long long mul;
        if (*end == '\0' && total == 0)
            mul = 1000, s = end; /* a bare number: seconds */
        else if (strncmp(end, "ms", 2) == 0)
            mul = 1, s = end + 2;
        else if (*end == 'h')
            mul = 3600000ULL, s = end + 1;
        else if (*end == 'm')
            mul = 60000ULL, s = end + 1;
        else if (*end == 's')
            mul = 1000, s = end + 1;
        else
            return -1;
        if (v > (unsigned long long)LLONG_MAX / mul ||
            total > (unsigned long long)LLONG_MAX - v * mul)
            return -1;
        total += v * mul;
    }
    return (long long)total;
}

void kiln_format_size(char *out, size_t cap, unsigned long long bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    int u = -1;
    unsigned long long div = 1;
    while (u < 3 && bytes >= div * 1024) {
        div *= 1024;
        u++;
    }
    if (u < 0)
        snprintf(out, cap, "%llu bytes", bytes);
    else if (bytes % div == 0)
        snprintf(out, cap, "%llu %s", bytes / div, units[u]);
    else
        snprintf(out, cap, "%.1f %s", (double)bytes / (double)div, units[u]);
}

void kiln_format_duration(char *out, size_t cap, unsigned long long ms)
{
    if (ms % 1000 || ms == 0) {
        snprintf(out, cap, "%llums", ms);
        return;
    }
    unsigned long long s = ms / 1000, h = s / 3600, m = s / 60 % 60;
    s %= 60;
    int n = 0;
    out[0] = '\0';
    if (h)
        n += snprintf(out + n, cap - (size_t)n, "%lluh", h);
    if (m && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "%llum", m);
    if (s && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "%llus", s);
}
