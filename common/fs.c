/* Filesystem primitives shared by the services and the CLI (see fs.h). */
#include "fs.h"
#include "cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int kiln_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = ENOSPC;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

bool kiln_sock_full(int fd, void *buf, size_t n, bool rd)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = rd ? recv(fd, p, n, 0) : send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

int kiln_atomic_write_at(int tmp_dirfd, int dirfd, const char *name, const void *data, size_t len,
                         unsigned mode, unsigned flags, kiln_error **err)
{
    if (tmp_dirfd < 0 && tmp_dirfd != AT_FDCWD)
        tmp_dirfd = dirfd;
    char tmp[96], rnd[17];
    kiln_random_hex(rnd, 16);
    snprintf(tmp, sizeof(tmp), ".tmp-%.40s-%s", name, rnd);
    _cleanup_close_ int fd =
        openat(tmp_dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "create %s", tmp);
    if ((flags & KILN_ATOMIC_LOCK) && flock(fd, LOCK_EX) < 0) {
        int e = errno;
        unlinkat(tmp_dirfd, tmp, 0);
        return kiln_error_set(err, KILN_EIO, e, "lock %s", tmp);
    }
    if (kiln_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        int e = errno;
        unlinkat(tmp_dirfd, tmp, 0);
        return kiln_error_set(err, kiln_code_from_errno(e), e, "write %s", name);
    }
    if (renameat(tmp_dirfd, tmp, dirfd, name) < 0) {
        int e = errno;
        unlinkat(tmp_dirfd, tmp, 0);
        return kiln_error_set(err, kiln_code_from_errno(e), e, "rename %s", name);
    }
    /* The rename is durable once the directory is. */
    if (dirfd == AT_FDCWD ? kiln_fsync_dir(".") < 0 : fsync(dirfd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fsync directory of %s", name);
    return 0;
}

int kiln_atomic_write(const char *path, const void *data, size_t len, unsigned mode, unsigned flags,
                      kiln_error **err)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return kiln_atomic_write_at(AT_FDCWD, AT_FDCWD, path, data, len, mode, flags, err);
    char dir[PATH_MAX];
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof(dir) || slash[1] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "bad file path '%s'", path);
    memcpy(dir, path, n);
    dir[n] = '\0';
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", dir);
    return kiln_atomic_write_at(dfd, dfd, slash + 1, data, len, mode, flags, err);
}

int kiln_fsync_dir(const char *dir)
{
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 || fsync(fd) < 0 ? -1 : 0;
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

int kiln_rm_rf_at(int dfd, const char *name, kiln_error **err)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : kiln_error_set(err, KILN_EIO, errno, "stat %s", name);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
            return kiln_error_set(err, KILN_EIO, errno, "unlink %s", name);
        return 0;
    }
    /* A directory we cannot list or write (mode 000 work dirs, read-only
     * directories from a tar) is opened up first: it goes anyway. */
    if ((st.st_mode & 0700) != 0700 && fchmodat(dfd, name, (st.st_mode & 07777) | 0700, 0) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chmod %s", name);
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s", name);
    _cleanup_closedir_ DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return kiln_error_set(err, KILN_EIO, errno, "opendir %s", name);
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int r = kiln_rm_rf_at(dirfd(d), de->d_name, err);
        if (r < 0)
            return kiln_error_wrap(err, "%s", name);
    }
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return kiln_error_set(err, KILN_EIO, errno, "rmdir %s", name);
    return 0;
}

int kiln_rm_rf(const char *path, kiln_error **err)
{
    return kiln_rm_rf_at(AT_FDCWD, path, err);
}

static bool path_append(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    bool sep = *o > 0 && out[*o - 1] != '/';
    if (*o + n + (sep ? 1 : 0) + 1 > cap)
        return false;
    if (sep)
        out[(*o)++] = '/';
    memcpy(out + *o, s, n);
    *o += n;
    return true;
}

int kiln_path_clean(char *out, size_t cap, const char *in, unsigned flags, kiln_error **err)
{
    bool lexical = flags & KILN_PATH_LEXICAL;
    if (lexical)
        flags |= KILN_PATH_ABS | KILN_PATH_DOTDOT;
    bool abs = in[0] == '/';
    if (abs && !(flags & KILN_PATH_ABS))
        return kiln_error_set(err, KILN_EINVAL, 0, "absolute path %s", in);
    bool clamp = (flags & KILN_PATH_CLAMP) || (abs && (flags & KILN_PATH_CLAMP_ABS));
    size_t o = 0, base = 0;
    if (cap == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "path too long: %.64s...", in);
    if (abs && lexical) {
        if (cap < 2)
            return kiln_error_set(err, KILN_EINVAL, 0, "path too long: %.64s...", in);
        out[o++] = '/';
        base = o;
    }
    for (const char *p = in; *p;) {
        while (*p == '/')
            p++;
        if (*p == '\0')
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (!(flags & KILN_PATH_DOTDOT))
                return kiln_error_set(err, KILN_EINVAL, 0, "path %s contains '..'", in);
            if (o > base) { /* drop the last component */
                while (o > base && out[o - 1] != '/')
                    o--;
                if (o > base)
                    o--;
            } else if (lexical && !abs) { /* a relative path may begin with "..": keep those */
                if (!path_append(out, cap, &o, p, n))
                    return kiln_error_set(err, KILN_EINVAL, 0, "path too long: %.64s...", in);
                base = o;
            } else if (!clamp && !lexical) {
                return kiln_error_set(err, KILN_EINVAL, 0, "path %s leaves the root", in);
            }
        } else if (!(n == 1 && p[0] == '.')) {
            if (n > NAME_MAX && (flags & KILN_PATH_NAME_MAX))
                return kiln_error_set(err, KILN_EINVAL, 0, "path component too long in %s", in);
            if (!path_append(out, cap, &o, p, n))
                return kiln_error_set(err, KILN_EINVAL, 0, "path too long: %.64s...", in);
        }
        p += n;
    }
    if (o == 0 && lexical) {
        if (cap < 2)
            return kiln_error_set(err, KILN_EINVAL, 0, "path too long: %.64s...", in);
        out[o++] = '.';
    }
    out[o] = '\0';
    return 0;
}

void kiln_random_hex(char *out, size_t nchars)
{
    static const char hx[] = "0123456789abcdef";
    unsigned char raw[64];
    if (nchars > 2 * sizeof(raw))
        nchars = 2 * sizeof(raw);
    size_t need = (nchars + 1) / 2, got = 0;
    while (got < need) {
        ssize_t r = getrandom(raw + got, need - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            /* getrandom cannot fail for small requests after boot; keep a
             * fallback anyway: time and pid keep names unique. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t v = (uint64_t)ts.tv_sec ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
            for (; got < need; got++, v = v * 6364136223846793005ULL + 1)
                raw[got] = (unsigned char)(v >> 56);
            break;
        }
        got += (size_t)r;
    }
    for (size_t i = 0; i < nchars; i++)
        out[i] = hx[(raw[i / 2] >> ((i & 1) ? 0 : 4)) & 15];
    out[nchars] = '\0';
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
