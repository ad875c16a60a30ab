/* RUN --mount: cache, bind, tmpfs, secret and ssh mounts.
 *
 * Builder side (sbx_mounts_prepare, before the fork): cache dirs are created
 * under $DATA/cache-mounts/<sha256(id)> and locked according to their
 * sharing mode; bind sources are opened confined to the directory the engine
 * gave; secret files are opened.  Child side (sbx_mounts_apply, in init,
 * before pivot_root): the mounts themselves, on mount points resolved inside
 * the rootfs.  Secrets are copied into a tmpfs that exists only in the
 * step's mount namespace, so their bytes never touch the upper dir, the disk
 * or a log line. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "buf.h"
#include "config.h"
#include "digest.h"
#include "sbx_run.h"

#define MAX_PRIVATE 64 /* private cache instances per id */

static bool canceled(const sbx_plan *p)
{
    return p->spec->cancel && atomic_load(p->spec->cancel);
}

/* Locks fd: shared/exclusive, waiting (for "locked") while watching cancel. */
static int lock_wait(sbx_plan *p, int fd, int how, kiln_error **err)
{
    for (;;) {
        if (flock(fd, how | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK)
            return kiln_error_set(err, KILN_EIO, errno, "lock cache");
        if (canceled(p))
            return kiln_error_set(err, KILN_ECANCELED, 0,
                                  "canceled while waiting for a cache lock");
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
}

static int open_lock(const char *dir, kiln_error **err)
{
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/lock", dir) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    return fd >= 0 ? fd : kiln_error_set(err, KILN_EIO, errno, "open %s", p);
}

/* Creates dir/data with the requested owner and mode on first use. */
static int data_dir(char **out, const char *dir, const sbx_mount *m, kiln_error **err)
{
    if (asprintf(out, "%s/data", dir) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    if (mkdir(*out, 0700) < 0) {
        if (errno == EEXIST)
            return 0;
        return kiln_error_set(err, KILN_EIO, errno, "create cache %s", *out);
    }
    if ((geteuid() == 0 && chown(*out, m->uid, m->gid) < 0) ||
        chmod(*out, m->mode ? m->mode : 0755) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "set owner of cache %s", *out);
    return 0;
}

static int prepare_cache(sbx_plan *p, sbx_mountplan *mp, kiln_error **err)
{
    const sbx_mount *m = mp->m;
    const char *id = m->id && *m->id ? m->id : m->target;
    char digest[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes(id, strlen(id), digest);
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/cache-mounts/%.32s", p->spec->data_dir, digest + 7) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    int r = kiln_mkdir_p(dir, 0700, err);
    if (r < 0)
        return r;
    mp->lockfd = open_lock(dir, err);
    if (mp->lockfd < 0)
        return mp->lockfd;
    if (m->sharing == SBX_CACHE_SHARED)
        r = lock_wait(p, mp->lockfd, LOCK_SH, err);
    else if (m->sharing == SBX_CACHE_LOCKED)
        r = lock_wait(p, mp->lockfd, LOCK_EX, err);
    else if (flock(mp->lockfd, LOCK_EX | LOCK_NB) < 0) {
        /* private: the main dir is busy, take (or make) a free instance. */
        close(mp->lockfd);
        mp->lockfd = -1;
        for (int i = 0; i < MAX_PRIVATE && mp->lockfd < 0; i++) {
            _cleanup_free_ char *inst = NULL;
            if (asprintf(&inst, "%s/p%d", dir, i) < 0)
                return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
            if (mkdir(inst, 0700) < 0 && errno != EEXIST)
                return kiln_error_set(err, KILN_EIO, errno, "create %s", inst);
            int fd = open_lock(inst, err);
            if (fd < 0)
                return fd;
            if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
                mp->lockfd = fd;
                return data_dir(&mp->cache_dir, inst, m, err);
            }
            close(fd);
        }
        return kiln_error_set(err, KILN_ENOSPC, 0, "too many users of private cache %s", id);
    }
    if (r < 0)
        return r;
    return data_dir(&mp->cache_dir, dir, m, err);
}

/* A bind from a layer stack (a stage's rootfs).  Copy mode: a private
 * merged copy, bound like any dir (writes to it are lost with the work dir).
 * Overlay mode: an overlay of the layers that init mounts inside the step's
 * namespace (with scratch upper and work dirs when writable), bound from. */
static int prepare_layers(sbx_plan *p, sbx_mountplan *mp, size_t idx, const char *rel,
                          kiln_error **err)
{
    const sbx_mount *m = mp->m;
    if (!p->overlay) {
        if (asprintf(&mp->copy_dir, "%s/b%zu", p->work, idx) < 0 || mkdir(mp->copy_dir, 0755) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "create bind copy");
        int r = sbx_copy_merge(m->source_layers, m->n_source_layers, mp->copy_dir, err);
        if (r < 0)
            return r;
        _cleanup_close_ int root = open(mp->copy_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        mp->srcfd = root >= 0 ? sbx_open_in_root(root, rel, O_PATH, err) : -1;
        free(mp->copy_dir);
        mp->copy_dir = NULL; /* bound through srcfd, like a host source */
        return mp->srcfd >= 0 ? 0 : kiln_error_wrap(err, "bind source");
    }
    kiln_buf b;
    kiln_buf_init(&b, 4096);
    _cleanup_free_ char *links = NULL, *empty = NULL;
    int r = 0;
    if (asprintf(&links, "%s/s%zu", p->work, idx) < 0 ||
        asprintf(&empty, "%s/s%zue", p->work, idx) < 0 ||
        asprintf(&mp->layer_mnt, "%s/s%zum", p->work, idx) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    if (mkdir(links, 0700) < 0 || mkdir(empty, 0755) < 0 || mkdir(mp->layer_mnt, 0755) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create bind dirs");
    r = kiln_buf_puts(&b, "lowerdir=", err);
    /* Short relative names, top first; the empty dir at the bottom makes a
     * read-only overlay of a single layer possible (it needs two). */
    for (size_t k = m->n_source_layers; r == 0 && k-- > 0;) {
        char link[PATH_MAX];
        snprintf(link, sizeof(link), "%s/%zu", links, k);
        if (symlink(m->source_layers[k], link) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "link %s", m->source_layers[k]);
        else
            r = kiln_buf_printf(&b, err, "s%zu/%zu:", idx, k);
    }
    if (r == 0)
        r = kiln_buf_printf(&b, err, "s%zue", idx);
    if (r == 0 && m->writable)
        r = kiln_buf_printf(&b, err, ",upperdir=b%zuu,workdir=b%zuw%s", idx, idx,
                            p->rootless ? ",userxattr" : "");
    if (r == 0 && m->writable) {
        char d[PATH_MAX];
        snprintf(d, sizeof(d), "%s/b%zuu", p->work, idx);
        if (mkdir(d, 0755) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "create %s", d);
        snprintf(d, sizeof(d), "%s/b%zuw", p->work, idx);
        if (r == 0 && mkdir(d, 0700) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "create %s", d);
    }
    if (r < 0) {
        kiln_buf_dispose(&b);
        return r;
    }
    mp->layer_opts = kiln_buf_steal(&b, NULL);
    snprintf(mp->source_rel, sizeof(mp->source_rel), "%s", rel);
    return 0;
}

static int prepare_bind(sbx_plan *p, sbx_mountplan *mp, size_t idx, kiln_error **err)
{
    const sbx_mount *m = mp->m;
    if (m->n_source_layers) {
        char rel[PATH_MAX];
        int r = kiln_path_clean(rel, sizeof(rel), m->source_path ? m->source_path : "",
                                KILN_PATH_ABS | KILN_PATH_NAME_MAX, err);
        return r < 0 ? kiln_error_wrap(err, "bind source") : prepare_layers(p, mp, idx, rel, err);
    }
    if (m->source == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "bind mount on %s without source", m->target);
    _cleanup_close_ int root = open(m->source, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return kiln_error_set(err, KILN_EINVAL, errno, "bind source %s", m->source);
    char rel[PATH_MAX];
    int r = kiln_path_clean(rel, sizeof(rel), m->source_path ? m->source_path : "",
                            KILN_PATH_ABS | KILN_PATH_NAME_MAX, err);
    if (r < 0)
        return kiln_error_wrap(err, "bind source");
    mp->srcfd = sbx_open_in_root(root, rel, O_PATH, err);
    if (mp->srcfd < 0)
        return kiln_error_wrap(err, "bind source %s", m->source);
    if (!m->writable)
        return 0;
    struct stat st;
    if (fstat(mp->srcfd, &st) < 0 || !S_ISDIR(st.st_mode))
        return kiln_error_set(err, KILN_ENOTSUP, 0, "writable bind of a file on %s", m->target);
    if (!p->overlay) {
        /* Copy mode: writes go to a private copy thrown away afterwards. */
        char src[64];
        snprintf(src, sizeof(src), "/proc/self/fd/%d", mp->srcfd);
        const char *lowers[] = {src};
        if (asprintf(&mp->copy_dir, "%s/b%zu", p->work, idx) < 0 || mkdir(mp->copy_dir, 0755) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "create bind copy");
        return sbx_copy_merge(lowers, 1, mp->copy_dir, err);
    }
    /* Overlay mode: the source is a lower dir, writes land in scratch dirs. */
    _cleanup_free_ char *u = NULL, *w = NULL;
    if (asprintf(&u, "%s/b%zuu", p->work, idx) < 0 || asprintf(&w, "%s/b%zuw", p->work, idx) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    if (mkdir(u, 0755) < 0 || mkdir(w, 0700) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create bind scratch dirs");
    if (asprintf(&mp->ovl_opts, "upperdir=%s,workdir=%s%s", u, w, p->rootless ? ",userxattr" : "") <
        0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    return 0;
}

int sbx_mounts_prepare(sbx_plan *p, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    p->mounts = calloc(s->n_mounts + 1, sizeof(*p->mounts));
    if (p->mounts == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
    for (size_t i = 0; i < s->n_mounts; i++) {
        sbx_mountplan *mp = &p->mounts[i];
        mp->m = &s->mounts[i];
        mp->srcfd = mp->lockfd = -1;
        p->n_mounts++;
        if (mp->m->target == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "mount without target");
        int r = kiln_path_clean(mp->target, sizeof(mp->target), mp->m->target,
                                KILN_PATH_ABS | KILN_PATH_NAME_MAX, err);
        if (r == 0 && mp->target[0] == '\0')
            r = kiln_error_set(err, KILN_EINVAL, 0, "mount target is the root");
        if (r < 0)
            return kiln_error_wrap(err, "mount target");
        switch (mp->m->type) {
        case SBX_MOUNT_CACHE:
            r = prepare_cache(p, mp, err);
            break;
        case SBX_MOUNT_BIND:
            r = prepare_bind(p, mp, i, err);
            break;
        case SBX_MOUNT_TMPFS:
            break;
        case SBX_MOUNT_SECRET: {
            struct stat st;
            mp->srcfd = mp->m->source ? open(mp->m->source, O_RDONLY | O_CLOEXEC) : -1;
            if (mp->srcfd < 0)
                r = kiln_error_set(err, KILN_EINVAL, errno, "secret for %s unreadable",
                                   mp->m->target);
            else if (fstat(mp->srcfd, &st) < 0 || !S_ISREG(st.st_mode) ||
                     st.st_size > KILN_SECRET_MAX)
                r = kiln_error_set(err, KILN_EINVAL, 0,
                                   "secret for %s: not a file of at most %d "
                                   "bytes",
                                   mp->m->target, KILN_SECRET_MAX);
            break;
        }
        case SBX_MOUNT_SSH: {
            struct stat st;
            mp->srcfd = mp->m->source ? open(mp->m->source, O_PATH | O_NOFOLLOW | O_CLOEXEC) : -1;
            if (mp->srcfd < 0 || fstat(mp->srcfd, &st) < 0 || !S_ISSOCK(st.st_mode))
                r = kiln_error_set(err, KILN_EINVAL, errno, "ssh agent socket for %s",
                                   mp->m->target);
            break;
        }
        default:
            r = kiln_error_set(err, KILN_EINVAL, 0, "unknown mount type %d", (int)mp->m->type);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

void sbx_mounts_release(sbx_plan *p)
{
    for (size_t i = 0; i < p->n_mounts; i++) {
        sbx_mountplan *mp = &p->mounts[i];
        if (mp->srcfd >= 0)
            close(mp->srcfd);
        if (mp->lockfd >= 0)
            close(mp->lockfd);
        free(mp->cache_dir);
        free(mp->ovl_opts);
        free(mp->copy_dir);
        free(mp->layer_opts);
        free(mp->layer_mnt);
    }
    free(p->mounts);
    p->mounts = NULL;
    p->n_mounts = 0;
}

/* ---- child side ------------------------------------------------------- */

#define FAIL(p, what, ...)                                                                         \
    (sbx_report((p), SBX_MSG_ERROR, KILN_EIO, errno, 0, what, ##__VA_ARGS__), -1)

static int bind_on(sbx_plan *p, int rootfd, const sbx_mountplan *mp, const char *src, bool dir,
                   bool ro)
{
    _cleanup_close_ int fd = sbx_mount_point(p, rootfd, mp->target, dir);
    if (fd < 0)
        return -1;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    /* A cache dir is bound alone: nothing mounted below it on the host
     * comes along, so the step reaches only the cache's own files. */
    unsigned long rec = mp->m->type == SBX_MOUNT_CACHE ? 0 : MS_REC;
    if (mount(src, path, NULL, MS_BIND | rec, NULL) < 0)
        return FAIL(p, "bind mount on /%s", mp->target);
    /* The fd still names the covered directory: reopen to reach the mount. */
    _cleanup_close_ int top = sbx_open_in_root(rootfd, mp->target, O_PATH, NULL);
    if (top < 0)
        return FAIL(p, "reopen /%s", mp->target);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", top);
    /* Recursively: a read-only bind is read-only through every submount of
     * its source too (a tmpfs mounted under the context dir, say). */
    if (sbx_lock_mount(path, ro) < 0)
        return FAIL(p, "remount /%s%s", mp->target, ro ? " read-only" : "");
    return 0;
}

/* A bind source opened by the builder lives in the host's mount namespace,
 * and the kernel binds only from the caller's: look the same object up again
 * here by path and check it is still the one the builder resolved. */
static int reopen_source(sbx_plan *p, const sbx_mountplan *mp, char *out, size_t n)
{
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", mp->srcfd);
    ssize_t l = readlink(link, real, sizeof(real) - 1);
    if (l < 0)
        return FAIL(p, "bind source for /%s", mp->target);
    real[l] = '\0';
    int fd = open(real, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat a, b;
    if (fd < 0 || fstat(fd, &a) < 0 || fstat(mp->srcfd, &b) < 0 || a.st_dev != b.st_dev ||
        a.st_ino != b.st_ino) {
        sbx_report(p, SBX_MSG_ERROR, KILN_EINVAL, 0, 0, "bind source for /%s changed", mp->target);
        return -1;
    }
    snprintf(out, n, "/proc/self/fd/%d", fd); /* closed with init's other fds at exit */
    return 0;
}

/* Mounts the overlay of a layered bind source (cwd is the work dir, the
 * options are relative to it) and resolves the wanted path inside it. */
static int layer_source(sbx_plan *p, const sbx_mountplan *mp, char *out, size_t n, bool *dir)
{
    if (mount("overlay", mp->layer_mnt, "overlay", MS_NOSUID | MS_NODEV, mp->layer_opts) < 0)
        return FAIL(p, "mount the layers bound on /%s", mp->target);
    _cleanup_close_ int root = open(mp->layer_mnt, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int fd = root >= 0 ? sbx_open_in_root(root, mp->source_rel, O_PATH, NULL) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        sbx_report(p, SBX_MSG_ERROR, KILN_EINVAL, errno, 0, "bind source /%s for /%s",
                   mp->source_rel, mp->target);
        return -1;
    }
    *dir = S_ISDIR(st.st_mode);
    snprintf(out, n, "/proc/self/fd/%d", fd); /* closed with init's other fds at exit */
    return 0;
}

/* Copies a secret into the namespace-private tmpfs with its owner and mode. */
static int stage_secret(sbx_plan *p, const sbx_mountplan *mp, size_t idx, char *out, size_t n)
{
    snprintf(out, n, "%s/%zu", p->secrets, idx);
    _cleanup_close_ int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return FAIL(p, "stage secret");
    char buf[8192];
    ssize_t r;
    lseek(mp->srcfd, 0, SEEK_SET);
    while ((r = read(mp->srcfd, buf, sizeof(buf))) > 0)
        if (kiln_write_all(fd, buf, (size_t)r) < 0)
            return FAIL(p, "stage secret");
    if (r < 0 || fchown(fd, mp->m->uid, mp->m->gid) < 0 ||
        fchmod(fd, mp->m->mode ? mp->m->mode : 0400) < 0)
        return FAIL(p, "stage secret");
    return 0;
}

int sbx_mounts_apply(sbx_plan *p, int rootfd)
{
    bool staged = false;
    for (size_t i = 0; i < p->n_mounts; i++) {
        const sbx_mountplan *mp = &p->mounts[i];
        const sbx_mount *m = mp->m;
        char src[PATH_MAX];
        switch (m->type) {
        case SBX_MOUNT_CACHE: {
            /* Bound through an fd opened without following a final symlink:
             * the source is the builder's cache dir itself. */
            _cleanup_close_ int cd =
                open(mp->cache_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cd < 0)
                return FAIL(p, "cache dir for /%s", mp->target);
            snprintf(src, sizeof(src), "/proc/self/fd/%d", cd);
            if (bind_on(p, rootfd, mp, src, true, m->readonly) < 0)
                return -1;
            break;
        }
        case SBX_MOUNT_BIND: {
            bool dir = true;
            if (mp->layer_opts) {
                if (layer_source(p, mp, src, sizeof(src), &dir) < 0 ||
                    bind_on(p, rootfd, mp, src, dir, !m->writable) < 0)
                    return -1;
                break;
            }
            struct stat st;
            if (fstat(mp->srcfd, &st) < 0)
                return FAIL(p, "bind source for /%s", mp->target);
            dir = S_ISDIR(st.st_mode);
            if (mp->copy_dir)
                snprintf(src, sizeof(src), "%s", mp->copy_dir);
            else if (reopen_source(p, mp, src, sizeof(src)) < 0)
                return -1;
            if (mp->ovl_opts) {
                _cleanup_close_ int fd = sbx_mount_point(p, rootfd, mp->target, true);
                if (fd < 0)
                    return -1;
                char opts[PATH_MAX + 256], at[64];
                snprintf(opts, sizeof(opts), "lowerdir=%s,%s", src, mp->ovl_opts);
                snprintf(at, sizeof(at), "/proc/self/fd/%d", fd);
                if (mount("overlay", at, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
                    return FAIL(p, "writable bind on /%s", mp->target);
                break;
            }
            if (bind_on(p, rootfd, mp, src, dir, !m->writable) < 0)
                return -1;
            break;
        }
        case SBX_MOUNT_TMPFS: {
            char opts[64];
            snprintf(opts, sizeof(opts), "mode=1777%s%llu", m->size ? ",size=" : "",
                     (unsigned long long)m->size);
            if (!m->size)
                snprintf(opts, sizeof(opts), "mode=1777");
            _cleanup_close_ int fd = sbx_mount_point(p, rootfd, mp->target, true);
            if (fd < 0)
                return -1;
            snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
            if (mount("tmpfs", src, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
                return FAIL(p, "tmpfs on /%s", mp->target);
            break;
        }
        case SBX_MOUNT_SECRET:
            if (!staged) {
                /* This tmpfs exists only in the step's mount namespace. */
                if (mount("tmpfs", p->secrets, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                          "mode=700,size=4m") < 0)
                    return FAIL(p, "tmpfs for secrets");
                staged = true;
            }
            if (stage_secret(p, mp, i, src, sizeof(src)) < 0 ||
                bind_on(p, rootfd, mp, src, false, true) < 0)
                return -1;
            break;
        case SBX_MOUNT_SSH:
            /* The builder's socket, looked up again in this namespace;
             * connecting needs no write access to the mount. */
            if (reopen_source(p, mp, src, sizeof(src)) < 0 ||
                bind_on(p, rootfd, mp, src, false, true) < 0)
                return -1;
            break;
        }
    }
    return 0;
}
