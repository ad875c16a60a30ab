/* Snapshot store of the builder: chain ids, atomic creation of unpacked
 * layers under $DATA/snapshots, and the flock-based use counting that keeps
 * pruning away from snapshots a build holds.  See bld_snapshot.h for the
 * on-disk layout. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bld_snapshot.h"
#include "units.h"
#include "cleanup.h"
#include "log.h"
#include "sbx_internal.h"

#define MAX_CHAIN 1024 /* layers in one stack; overlay itself stops at 500 */

struct bld_snapshot_stack {
    size_t n;
    char **dirs; /* fs dirs, bottom first */
    int *locks;  /* shared flocks on the markers */
};

bld_layer_media bld_layer_media_parse(const char *mt)
{
    if (mt == NULL)
        return BLD_LAYER_AUTO;
    size_t n = strlen(mt);
    if (n >= 5 && strcmp(mt + n - 5, "+gzip") == 0)
        return BLD_LAYER_GZIP;
    if (strcmp(mt, "application/vnd.docker.image.rootfs.diff.tar.gzip") == 0)
        return BLD_LAYER_GZIP;
    if (n >= 5 && strcmp(mt + n - 5, "+zstd") == 0)
        return BLD_LAYER_ZSTD;
    if (n >= 4 && strcmp(mt + n - 4, ".tar") == 0)
        return BLD_LAYER_TAR;
    return BLD_LAYER_AUTO;
}

void bld_chain_id(char out[KILN_DIGEST_STRLEN + 1], const char *parent, const char *diff_id)
{
    if (parent == NULL || *parent == '\0') {
        snprintf(out, KILN_DIGEST_STRLEN + 1, "%s", diff_id);
        return;
    }
    char buf[2 * KILN_DIGEST_STRLEN + 2];
    int n = snprintf(buf, sizeof(buf), "%s %s", parent, diff_id);
    kiln_sha256_bytes(buf, (size_t)n, out);
}

static const char *hex_of(const char *digest)
{
    const char *c = strchr(digest, ':');
    return c ? c + 1 : digest;
}

static char *path_join(const char *a, const char *b, const char *c)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s%s%s", a, b, c ? "/" : "", c ? c : "") < 0)
        return NULL;
    return s;
}

/* Takes a shared lock on a complete snapshot; returns the lock fd or -1
 * (errno ENOENT when the snapshot is missing or was pruned meanwhile). */
static int lock_snapshot(const char *snapdir, const char *chain)
{
    _cleanup_free_ char *marker = path_join(snapdir, hex_of(chain), "complete");
    if (marker == NULL)
        return -1;
    for (int tries = 0; tries < 3; tries++) {
        int fd = open(marker, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -1;
        struct stat a, b;
        if (flock(fd, LOCK_SH) == 0 && fstat(fd, &a) == 0 && stat(marker, &b) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            return fd;
        close(fd); /* pruned between open and flock: look again */
    }
    errno = ENOENT;
    return -1;
}

static int read_meta(const char *snapdir, const char *chain, char parent[KILN_DIGEST_STRLEN + 1],
                     kiln_error **err)
{
    _cleanup_free_ char *p = path_join(snapdir, hex_of(chain), "meta");
    _cleanup_fclose_ FILE *f = p ? fopen(p, "re") : NULL;
    if (f == NULL)
        return kiln_error_set(err, KILN_ENOENT, errno, "snapshot %s metadata", chain);
    char line[256];
    parent[0] = '\0';
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "parent=", 7) == 0) {
            if (line[7] && !kiln_digest_valid(line + 7))
                return kiln_error_set(err, KILN_EIO, 0, "snapshot %s: bad parent", chain);
            size_t n = strlen(line + 7);
            memcpy(parent, line + 7, n > KILN_DIGEST_STRLEN ? KILN_DIGEST_STRLEN : n);
            parent[n > KILN_DIGEST_STRLEN ? KILN_DIGEST_STRLEN : n] = '\0';
        }
    }
    return 0;
}

static int write_file_sync(const char *path, const char *data, kiln_error **err)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", path);
    if (kiln_write_all(fd, data, strlen(data)) < 0 || fsync(fd) < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "write %s", path);
    return 0;
}

/* DiffIDs remembered per blob digest, so an unknown DiffID costs one
 * decompression ever. */
static void diffid_cache_get(const char *snapdir, const char *blob,
                             char out[KILN_DIGEST_STRLEN + 1])
{
    out[0] = '\0';
    if (blob == NULL || !kiln_digest_valid(blob))
        return;
    _cleanup_free_ char *p = path_join(snapdir, ".diffids", hex_of(blob));
    _cleanup_fclose_ FILE *f = p ? fopen(p, "re") : NULL;
    if (f && fgets(out, KILN_DIGEST_STRLEN + 1, f) && !kiln_digest_valid(out))
        out[0] = '\0';
}

static void diffid_cache_put(const char *snapdir, const char *blob, const char *diff_id)
{
    if (blob == NULL || !kiln_digest_valid(blob))
        return;
    _cleanup_free_ char *dir = path_join(snapdir, ".diffids", NULL);
    _cleanup_free_ char *p = path_join(snapdir, ".diffids", hex_of(blob));
    if (!dir || !p)
        return;
    (void)mkdir(dir, 0755);
    (void)kiln_atomic_write(p, diff_id, strlen(diff_id), 0600, 0, NULL); /* a cache: best effort */
}

static int remove_unused(const char *snapdir, const char *name, const char *lockname,
                         uint64_t max_age_s, kiln_error **err);

/* Renames the finished temp dir into place.  A complete snapshot already
 * there (another builder was faster) is fine; an incomplete one (a directory
 * without its marker) is discarded first, never reused. */
static int publish(const char *snapdir, const char *tmp, const char *final, const char *chain,
                   kiln_error **err)
{
    for (int tries = 0; tries < 2; tries++) {
        if (rename(tmp, final) == 0)
            return 0;
        if (errno != EEXIST && errno != ENOTEMPTY)
            break;
        int fd = lock_snapshot(snapdir, chain);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        int r = remove_unused(snapdir, hex_of(chain), "complete", 0, err);
        if (r < 0)
            return r;
    }
    return kiln_error_set(err, KILN_EIO, errno, "publish snapshot %s", chain);
}

/* Unpacks one layer into a fresh temp dir and publishes it under its chain
 * id.  On return *lockfd holds a shared lock on the published snapshot. */
static int create_snapshot(char chain[KILN_DIGEST_STRLEN + 1], int *lockfd, const char *snapdir,
                           const bld_layer *l, const char *parent, const char *const *lowers,
                           size_t nlower, kiln_error **err)
{
    _cleanup_free_ char *tmp = path_join(snapdir, "tmp-XXXXXX", NULL);
    if (tmp == NULL || mkdtemp(tmp) == NULL)
        return kiln_error_set(err, KILN_EIO, errno, "create temp dir in %s", snapdir);
    /* The temp dir's lock tells bld_sandbox_cleanup_stale() it is alive. */
    _cleanup_free_ char *lockp = path_join(tmp, ".lock", NULL);
    _cleanup_free_ char *fs = path_join(tmp, "fs", NULL);
    _cleanup_close_ int tlock = lockp ? open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    int r = 0;
    char diff[KILN_DIGEST_STRLEN + 1];
    if (tlock < 0 || flock(tlock, LOCK_EX) < 0 || fs == NULL || mkdir(fs, 0755) < 0) {
        r = kiln_error_set(err, KILN_EIO, errno, "prepare %s", tmp);
    } else {
        r = bld_layer_unpack(diff, l, fs, lowers, nlower, err);
    }
    if (r == 0) {
        bld_chain_id(chain, parent, diff);
        diffid_cache_put(snapdir, l->digest, diff);
        *lockfd = lock_snapshot(snapdir, chain);
        if (*lockfd >= 0) { /* someone else finished it first */
            kiln_rm_rf(tmp, NULL);
            return 0;
        }
        _cleanup_free_ char *meta = NULL;
        _cleanup_free_ char *mp = path_join(tmp, "meta", NULL);
        _cleanup_free_ char *cp = path_join(tmp, "complete", NULL);
        _cleanup_free_ char *final = path_join(snapdir, hex_of(chain), NULL);
        if (asprintf(&meta, "chain=%s\ndiff_id=%s\nparent=%s\nblob=%s\n", chain, diff,
                     parent ? parent : "", l->digest ? l->digest : "") < 0 ||
            !mp || !cp || !final) {
            r = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "snapshot metadata");
        } else if ((r = write_file_sync(mp, meta, err)) == 0) {
            /* Data first, then the marker, then the rename that publishes
             * both: after a crash a snapshot is either complete or absent. */
            if (syncfs(tlock) < 0)
                r = kiln_error_set(err, KILN_EIO, errno, "sync %s", tmp);
            else
                r = write_file_sync(cp, "", err);
        }
        if (r == 0)
            r = publish(snapdir, tmp, final, chain, err);
        if (r == 0) {
            _cleanup_close_ int dfd = open(snapdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0)
                fsync(dfd);
            *lockfd = lock_snapshot(snapdir, chain);
            if (*lockfd < 0)
                r = kiln_error_set(err, KILN_EIO, errno, "lock snapshot %s", chain);
        }
    }
    kiln_rm_rf(tmp, NULL); /* a no-op once renamed */
    return r;
}

int bld_snapshot_ensure(char out_chain_id[KILN_DIGEST_STRLEN + 1], const char *data_dir,
                        const bld_layer *layers, size_t n, kiln_error **err)
{
    out_chain_id[0] = '\0';
    if (n > MAX_CHAIN)
        return kiln_error_set(err, KILN_EINVAL, 0, "%zu layers: at most %d", n, MAX_CHAIN);
    _cleanup_free_ char *snapdir = path_join(data_dir, "snapshots", NULL);
    _cleanup_free_ int *locks = calloc(n + 1, sizeof(int));
    _cleanup_free_ char **dirs = calloc(n + 1, sizeof(char *));
    if (!snapdir || !locks || !dirs)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "snapshot ensure");
    /* 0700: snapshots hold the device nodes of images (with the images'
     * modes); only the builder and the pusher (same user) may reach them. */
    int r = kiln_mkdir_p(snapdir, 0700, err);
    if (r == 0 && chmod(snapdir, 0700) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "chmod %s", snapdir);
    char parent[KILN_DIGEST_STRLEN + 1] = "";
    size_t held = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        char diff[KILN_DIGEST_STRLEN + 1], chain[KILN_DIGEST_STRLEN + 1];
        if (layers[i].diff_id && !kiln_digest_valid(layers[i].diff_id)) {
            r = kiln_error_set(err, KILN_EINVAL, 0, "invalid DiffID %s", layers[i].diff_id);
            break;
        }
        if (layers[i].diff_id)
            snprintf(diff, sizeof(diff), "%s", layers[i].diff_id);
        else
            diffid_cache_get(snapdir, layers[i].digest, diff);
        int lk = -1;
        if (diff[0]) {
            bld_chain_id(chain, parent, diff);
            lk = lock_snapshot(snapdir, chain);
        }
        if (lk < 0) {
            kiln_info("sandbox", "unpacking layer %s", layers[i].blob_path);
            r = create_snapshot(chain, &lk, snapdir, &layers[i], parent, (const char *const *)dirs,
                                held, err);
            if (r < 0)
                break;
        }
        /* Hold every parent while children are unpacked: a concurrent prune
         * must not take the lower dirs away. */
        locks[held] = lk;
        dirs[held] = path_join(snapdir, hex_of(chain), "fs");
        held++;
        if (dirs[held - 1] == NULL)
            r = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "path");
        snprintf(parent, sizeof(parent), "%s", chain);
    }
    for (size_t i = 0; i < held; i++) {
        close(locks[i]);
        free(dirs[i]);
    }
    if (r == 0)
        snprintf(out_chain_id, KILN_DIGEST_STRLEN + 1, "%s", parent);
    return r;
}

int bld_snapshot_acquire(bld_snapshot_stack **out, const char *data_dir, const char *chain_id,
                         kiln_error **err)
{
    *out = NULL;
    _cleanup_free_ char *snapdir = path_join(data_dir, "snapshots", NULL);
    bld_snapshot_stack *s = calloc(1, sizeof(*s));
    if (!snapdir || !s) {
        free(s);
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "snapshot stack");
    }
    s->dirs = calloc(MAX_CHAIN, sizeof(char *));
    s->locks = calloc(MAX_CHAIN, sizeof(int));
    char chain[KILN_DIGEST_STRLEN + 1];
    snprintf(chain, sizeof(chain), "%s", chain_id ? chain_id : "");
    int r = (s->dirs && s->locks) ? 0 : kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
    while (r == 0 && chain[0]) {
        if (!kiln_digest_valid(chain)) {
            r = kiln_error_set(err, KILN_EINVAL, 0, "invalid chain id %s", chain);
            break;
        }
        if (s->n == MAX_CHAIN) {
            r = kiln_error_set(err, KILN_EINVAL, 0, "snapshot chain too deep");
            break;
        }
        int lk = lock_snapshot(snapdir, chain);
        if (lk < 0) {
            r = kiln_error_set(err, KILN_ENOENT, 0, "snapshot %s is missing", chain);
            break;
        }
        s->locks[s->n] = lk;
        s->dirs[s->n] = path_join(snapdir, hex_of(chain), "fs");
        s->n++;
        char parent[KILN_DIGEST_STRLEN + 1];
        if (s->dirs[s->n - 1] == NULL)
            r = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "path");
        else
            r = read_meta(snapdir, chain, parent, err);
        snprintf(chain, sizeof(chain), "%s", parent);
    }
    if (r < 0) {
        bld_snapshot_release(s);
        return r;
    }
    /* Walked top-down; callers want bottom first. */
    for (size_t i = 0; i < s->n / 2; i++) {
        char *d = s->dirs[i];
        s->dirs[i] = s->dirs[s->n - 1 - i];
        s->dirs[s->n - 1 - i] = d;
    }
    *out = s;
    return 0;
}

void bld_snapshot_release(bld_snapshot_stack *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->dirs[i]);
        close(s->locks[i]);
    }
    free(s->dirs);
    free(s->locks);
    free(s);
}

size_t bld_snapshot_stack_len(const bld_snapshot_stack *s)
{
    return s ? s->n : 0;
}

const char *const *bld_snapshot_stack_dirs(const bld_snapshot_stack *s)
{
    return s ? (const char *const *)s->dirs : NULL;
}

/* Removes a snapshot or temp dir if nobody holds it: the exclusive lock is
 * kept while the directory is renamed away, then it is deleted. */
static int remove_unused(const char *snapdir, const char *name, const char *lockname,
                         uint64_t max_age_s, kiln_error **err)
{
    _cleanup_free_ char *dir = path_join(snapdir, name, NULL);
    _cleanup_free_ char *lockp = path_join(snapdir, name, lockname);
    if (!dir || !lockp)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "path");
    _cleanup_close_ int fd = open(lockp, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
        return 0; /* in use */
    struct stat st;
    /* A temp dir without its lock file may be one being created right now. */
    if (fd < 0 && strncmp(name, "tmp-", 4) == 0 &&
        (stat(dir, &st) < 0 || kiln_age_s(&st.st_mtim) < 60))
        return 0;
    if (max_age_s && fd >= 0 && fstat(fd, &st) == 0 &&
        (uint64_t)kiln_age_s(&st.st_mtim) < max_age_s)
        return 0;
    _cleanup_free_ char *grave = path_join(snapdir, "tmp-XXXXXX", NULL);
    if (grave == NULL || mkdtemp(grave) == NULL)
        return kiln_error_set(err, KILN_EIO, errno, "create temp dir in %s", snapdir);
    if (rename(dir, grave) < 0) {
        rmdir(grave);
        return errno == ENOENT ? 0 : kiln_error_set(err, KILN_EIO, errno, "rename %s", dir);
    }
    int r = kiln_rm_rf(grave, err);
    return r < 0 ? r : 1;
}

int bld_snapshot_prune(const char *data_dir, uint64_t max_age_s, size_t *removed, kiln_error **err)
{
    if (removed)
        *removed = 0;
    _cleanup_free_ char *snapdir = path_join(data_dir, "snapshots", NULL);
    if (snapdir == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "path");
    _cleanup_closedir_ DIR *d = opendir(snapdir);
    if (d == NULL)
        return errno == ENOENT ? 0 : kiln_error_set(err, KILN_EIO, errno, "open %s", snapdir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        int r = 0;
        if (strncmp(nm, "tmp-", 4) == 0)
            r = remove_unused(snapdir, nm, ".lock", 0, err);
        else if (strlen(nm) == 64 && strspn(nm, "0123456789abcdef") == 64)
            r = remove_unused(snapdir, nm, "complete", max_age_s, err);
        else
            continue;
        if (r < 0)
            return r;
        if (r > 0 && removed && strncmp(nm, "tmp-", 4) != 0)
            (*removed)++;
    }
    return 0;
}

int sbx_snapshot_clean_tmp(const char *data_dir, kiln_error **err)
{
    _cleanup_free_ char *snapdir = path_join(data_dir, "snapshots", NULL);
    if (snapdir == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "path");
    _cleanup_closedir_ DIR *d = opendir(snapdir);
    if (d == NULL)
        return errno == ENOENT ? 0 : kiln_error_set(err, KILN_EIO, errno, "open %s", snapdir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "tmp-", 4) != 0)
            continue;
        int r = remove_unused(snapdir, de->d_name, ".lock", 0, err);
        if (r < 0)
            return r;
    }
    return 0;
}
