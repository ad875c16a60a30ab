/* Step directories and the step index.
 *
 *   $DATA/snapshots/steps/<key hex>/diff   a finished step's diff (overlay form)
 *   $DATA/snapshots/steps/<key hex>/id     its generation: 32 random hex digits
 *   $DATA/snapshots/steps/tmp-XXXXXX/      a step being produced
 *   $DATA/cache/steps/<key hex>            index entry: "layer=0|1\nsize=N\n"
 *
 * A step is produced in a tmp dir, given a new generation id and renamed into
 * place; the data dir's filesystem is then synced (syncfs), and only after
 * that is its index entry written to a temp file, fsynced and renamed.  The
 * index entry is the commit point: after a crash or power loss an entry
 * always names a complete diff, and a step dir without entry is a leftover.
 * The id tells apart two productions of the same key (a step pruned and run
 * again): the pusher remembers packed layers by it, not by the dir's path.
 * Interrupted steps are removed at engine start. */
#include "engine_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "fs.h"

static const char *hex_of(const char *key)
{
    return strncmp(key, "sha256:", 7) == 0 ? key + 7 : key;
}

static void index_path(char *out, size_t cap, eng_build *b, const char *key)
{
    snprintf(out, cap, "%s/cache/steps/%s", b->e->data_dir, hex_of(key));
}

static void step_path(char *out, size_t cap, eng_build *b, const char *key)
{
    snprintf(out, cap, "%s/snapshots/steps/%s", b->e->data_dir, hex_of(key));
}

/* Reads steps/<key>/id into id; "" when the dir has none (made by an older
 * builder) or it is malformed: such a diff is packed every time. */
static void read_step_id(const char *step_dir, char id[ENG_STEP_ID_LEN + 1])
{
    char p[ENG_PATH_MAX + 8], buf[ENG_STEP_ID_LEN + 3];
    id[0] = '\0';
    snprintf(p, sizeof(p), "%s/id", step_dir);
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < ENG_STEP_ID_LEN)
        return;
    buf[n] = '\0';
    if (strspn(buf, "0123456789abcdef") != ENG_STEP_ID_LEN)
        return;
    memcpy(id, buf, ENG_STEP_ID_LEN);
    id[ENG_STEP_ID_LEN] = '\0';
}

/* Draws a new generation id and writes it to dir/id. */
static int write_step_id(const char *dir, char id[ENG_STEP_ID_LEN + 1], kiln_error **err)
{
    unsigned char r[ENG_STEP_ID_LEN / 2];
    if (getentropy(r, sizeof(r)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "step id");
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(id + 2 * i, 3, "%02x", r[i]);
    char p[ENG_PATH_MAX + 8], line[ENG_STEP_ID_LEN + 2];
    snprintf(p, sizeof(p), "%s/id", dir);
    int n = snprintf(line, sizeof(line), "%s\n", id);
    _cleanup_close_ int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write(fd, line, (size_t)n) != n)
        return kiln_error_set(err, KILN_EIO, errno, "write %s", p);
    return 0;
}

/* Flushes the data dir's filesystem: the step dir's files, their metadata
 * and its rename reach the disk before an index entry can name them.  One
 * syncfs instead of an fsync per file of the tree (a RUN may write
 * thousands); the index entry's own fsync follows in write_index. */
static int sync_step(const char *step_dir, kiln_error **err)
{
    _cleanup_close_ int fd = open(step_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "sync %s", step_dir);
    return 0;
}

/* Takes a shared flock on steps/<key> for the rest of the build: prune
 * leaves it alone.  False when the dir is gone or being removed. */
static bool hold_fd(eng_build *b, int fd)
{
    pthread_mutex_lock(&b->mu);
    if (b->n_held == b->cap_held) {
        size_t nc = b->cap_held ? 2 * b->cap_held : 16;
        int *h = realloc(b->held, nc * sizeof(int));
        if (h == NULL) {
            pthread_mutex_unlock(&b->mu);
            close(fd);
            return false;
        }
        b->held = h;
        b->cap_held = nc;
    }
    b->held[b->n_held++] = fd;
    pthread_mutex_unlock(&b->mu);
    return true;
}

static bool hold(eng_build *b, const char *key)
{
    char sp[ENG_PATH_MAX - 64];
    step_path(sp, sizeof(sp), b, key);
    int fd = open(sp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    if (flock(fd, LOCK_SH | LOCK_NB) < 0 || fstat(fd, &st) < 0 || st.st_nlink == 0) {
        close(fd);
        return false;
    }
    return hold_fd(b, fd);
}

void eng_cache_release(eng_build *b)
{
    for (size_t i = 0; i < b->n_held; i++)
        close(b->held[i]);
    free(b->held);
    b->held = NULL;
    b->n_held = b->cap_held = 0;
}

int eng_cache_lookup(eng_build *b, const char *key, eng_cached_step *out)
{
    memset(out, 0, sizeof(*out));
    char p[ENG_PATH_MAX];
    index_path(p, sizeof(p), b, key);
    _cleanup_fclose_ FILE *f = fopen(p, "re");
    if (f == NULL)
        return 0;
    int layer = 0;
    uint64_t size = 0;
    int64_t created = 0;
    int got = fscanf(f, "layer=%d\nsize=%" SCNu64 "\ncreated=%" SCNd64, &layer, &size, &created);
    if (got < 2)
        return 0;
    out->layer = layer != 0;
    out->size = size;
    out->created = got == 3 ? created : 0;
    utimensat(AT_FDCWD, p, NULL, 0); /* last use, for pruning by age */
    if (!out->layer)
        return 1;
    eng_layer_ref *l = &out->blob;
    if (got == 3 && fscanf(f, "\nblob=%71s %71s %127s %" SCNu64, l->digest, l->diff_id,
                           l->media_type, &l->size) == 4) {
        if (!kiln_digest_valid(l->digest) || !kiln_digest_valid(l->diff_id))
            return 0;
        out->lazy = true;
        eng_regcache_virtual(b, out);
        return 1;
    }
    char sp[ENG_PATH_MAX - 64];
    step_path(sp, sizeof(sp), b, key);
    snprintf(out->diff, sizeof(out->diff), "%s/diff", sp);
    struct stat st;
    if (stat(out->diff, &st) < 0 || !S_ISDIR(st.st_mode) || !hold(b, key))
        return 0;
    read_step_id(sp, out->id); /* held: prune cannot replace it now */
    return 1;
}

static int write_index(eng_build *b, const char *key, bool layer, uint64_t size, int64_t created,
                       kiln_error **err)
{
    char dir[ENG_PATH_MAX], p[ENG_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/cache/steps", b->e->data_dir);
    if (kiln_mkdir_p(dir, 0700, err) < 0)
        return kiln_error_wrap(err, "cache index");
    index_path(p, sizeof(p), b, key);
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "layer=%d\nsize=%" PRIu64 "\ncreated=%" PRId64 "\n",
                     layer ? 1 : 0, size, created);
    return kiln_atomic_write(p, buf, (size_t)n, 0600, 0, err);
}

int eng_cache_record_lazy(eng_build *b, const char *key, const eng_layer_ref *l, int64_t created,
                          eng_cached_step *out, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    out->layer = out->lazy = true;
    out->blob = *l;
    out->size = l->size;
    out->created = created;
    eng_regcache_virtual(b, out);
    char dir[ENG_PATH_MAX], p[ENG_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/cache/steps", b->e->data_dir);
    if (kiln_mkdir_p(dir, 0700, err) < 0)
        return kiln_error_wrap(err, "cache index");
    index_path(p, sizeof(p), b, key);
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "layer=1\nsize=%" PRIu64 "\ncreated=%" PRId64 "\nblob=%s %s %s %" PRIu64 "\n",
                     l->size, created, l->digest, l->diff_id, l->media_type, l->size);
    return kiln_atomic_write(p, buf, (size_t)n, 0600, 0, err);
}

int eng_cache_rewrite(eng_build *b, const char *key, const eng_cached_step *cs, kiln_error **err)
{
    return write_index(b, key, cs->layer, cs->size, cs->created, err);
}

int eng_cache_record_empty(eng_build *b, const char *key, eng_cached_step *out, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    out->created = (int64_t)time(NULL);
    return write_index(b, key, false, 0, out->created, err);
}

int eng_step_begin(eng_build *b, eng_step_tmp *t, kiln_error **err)
{
    char dir[ENG_PATH_MAX - 64];
    snprintf(dir, sizeof(dir), "%s/snapshots/steps", b->e->data_dir);
    if (kiln_mkdir_p(dir, 0700, err) < 0)
        return kiln_error_wrap(err, "step dir");
    snprintf(t->dir, sizeof(t->dir), "%s/tmp-XXXXXX", dir);
    if (mkdtemp(t->dir) == NULL)
        return kiln_error_set(err, KILN_EIO, errno, "mkdtemp %s", t->dir);
    /* Held until the step is committed or aborted: eng_cache_cleanup() of
     * another builder on this data dir leaves a locked tmp dir alone. */
    int fd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        rmdir(t->dir);
        t->dir[0] = '\0';
        return kiln_error_set(err, KILN_EIO, e, "lock step dir");
    }
    t->lock = fd + 1;
    if (snprintf(t->diff, sizeof(t->diff), "%s/diff", t->dir) >= (int)sizeof(t->diff))
        return kiln_error_set(err, KILN_EINVAL, 0, "data dir path too long");
    if (mkdir(t->diff, 0755) < 0) {
        int e = errno;
        rmdir(t->dir);
        t->dir[0] = '\0';
        return kiln_error_set(err, KILN_EIO, e, "mkdir %s", t->diff);
    }
    return 0;
}

void eng_step_abort(eng_step_tmp *t)
{
    if (t->dir[0])
        eng_rmrf(t->dir);
    t->dir[0] = '\0';
    if (t->lock > 0)
        close(t->lock - 1);
    t->lock = 0;
}

static uint64_t du_total;
static size_t du_entries;
static int du_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)p;
    (void)flag;
    if (ftw->level > 0)
        du_entries++;
    if (S_ISREG(st->st_mode))
        du_total += (uint64_t)st->st_size;
    return 0;
}

/* Size of a diff and whether it has entries.  nftw has no user pointer;
 * steps of one process are measured under a lock. */
static pthread_mutex_t du_mu = PTHREAD_MUTEX_INITIALIZER;
static void measure(const char *dir, uint64_t *bytes, size_t *entries)
{
    pthread_mutex_lock(&du_mu);
    du_total = 0;
    du_entries = 0;
    nftw(dir, du_cb, 32, FTW_PHYS);
    *bytes = du_total;
    *entries = du_entries;
    pthread_mutex_unlock(&du_mu);
}

static bool prune_one(const char *data_dir, const char *hex);

/* Removes the step's scratch files (scripts, extracted archives): all of
 * dir but diff/. */
static void drop_scratch(const char *dir)
{
    _cleanup_closedir_ DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strcmp(de->d_name, "diff") == 0)
            continue;
        char p[2 * ENG_PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        eng_rmrf(p);
    }
}

/* alt = a key of its own derived from key and a nonce, which no lookup
 * finds; false (errno set) when none could be made. */
static bool unique_key(char alt[KILN_DIGEST_STRLEN + 1], const char *key)
{
    unsigned char nonce[16];
    kiln_sha256 *h = kiln_sha256_new();
    if (h == NULL || getentropy(nonce, sizeof(nonce)) < 0) {
        kiln_sha256_free(h);
        return false;
    }
    kiln_sha256_update(h, key, strlen(key) + 1);
    kiln_sha256_update(h, nonce, sizeof(nonce));
    kiln_sha256_final_str(h, alt);
    kiln_sha256_free(h);
    return true;
}

/* Renames the step dir t to sp, its place under *key.  *ours is false when
 * another build produced the same step meanwhile (t is dropped, theirs is
 * used); with --no-cache, ours goes in beside it under *key = alt.  t is
 * aborted on failure. */
static int place_step(eng_build *b, eng_step_tmp *t, const char **key,
                      char alt[KILN_DIGEST_STRLEN + 1], char *sp, size_t sp_size, bool *ours,
                      kiln_error **err)
{
    int r = rename(t->dir, sp);
    int e = r < 0 ? errno : 0;
    if (e == EEXIST || e == ENOTEMPTY) {
        /* A dir without index entry is a leftover (a prune or crash cut
         * short), unless a live build holds it: replace it. */
        char ip[ENG_PATH_MAX];
        index_path(ip, sizeof(ip), b, *key);
        if (access(ip, F_OK) < 0 && prune_one(b->e->data_dir, hex_of(*key))) {
            r = rename(t->dir, sp);
            e = r < 0 ? errno : 0;
        }
    }
    if (r < 0 && (e == EEXIST || e == ENOTEMPTY) && b->spec->no_cache) {
        /* --no-cache wants this run's output, not the stored one (a RUN may
         * differ from run to run).  The stored one may be in use by other
         * builds, which rely on it not changing: ours goes in beside it,
         * under a key of its own that no lookup finds. */
        if (!unique_key(alt, *key)) {
            eng_step_abort(t);
            return kiln_error_set(err, KILN_EIO, errno, "step key");
        }
        *key = alt;
        step_path(sp, sp_size, b, *key);
        r = rename(t->dir, sp);
        e = r < 0 ? errno : 0;
    }
    if (r < 0) {
        if (e != EEXIST && e != ENOTEMPTY) {
            eng_step_abort(t);
            return kiln_error_set(err, KILN_EIO, e, "rename %s", sp);
        }
        /* Another build produced the same step meanwhile: use theirs. */
        eng_step_abort(t);
        *ours = false;
    }
    return 0;
}

int eng_step_commit(eng_build *b, eng_step_tmp *t, const char *key, eng_cached_step *out,
                    kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    /* Scratch files of the step (scripts, extracted archives) stay behind. */
    drop_scratch(t->dir);
    uint64_t bytes = 0;
    size_t entries = 0;
    measure(t->diff, &bytes, &entries);
    if (entries == 0) {
        eng_step_abort(t);
        return eng_cache_record_empty(b, key, out, err);
    }
    char id[ENG_STEP_ID_LEN + 1];
    int r = write_step_id(t->dir, id, err);
    if (r < 0) {
        eng_step_abort(t);
        return r;
    }
    char sp[ENG_PATH_MAX - 64];
    step_path(sp, sizeof(sp), b, key);
    /* Our exclusive lock becomes the build's shared hold on the step. */
    if (t->lock > 0 && flock(t->lock - 1, LOCK_SH) < 0) {
        int e = errno;
        eng_step_abort(t);
        return kiln_error_set(err, KILN_EIO, e, "lock %s", sp);
    }
    bool ours = true;
    char alt[KILN_DIGEST_STRLEN + 1];
    if ((r = place_step(b, t, &key, alt, sp, sizeof(sp), &ours, err)) < 0)
        return r;
    t->dir[0] = '\0';
    out->layer = true;
    out->size = bytes;
    out->created = (int64_t)time(NULL);
    snprintf(out->diff, sizeof(out->diff), "%s/diff", sp);
    if (ours) {
        int fd = t->lock - 1;
        t->lock = 0;
        if (!hold_fd(b, fd))
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        memcpy(out->id, id, sizeof(out->id));
    } else if (!hold(b, key)) {
        return kiln_error_set(err, KILN_EIO, errno, "hold %s", sp);
    } else {
        read_step_id(sp, out->id);
    }
    /* Theirs too: its producer may not have synced it yet. */
    if ((r = sync_step(sp, err)) < 0)
        return r;
    return write_index(b, key, true, bytes, out->created, err);
}

void eng_cache_cleanup(const char *data_dir)
{
    char dir[ENG_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/snapshots/steps", data_dir);
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "tmp-", 4) != 0)
            continue;
        char p[ENG_PATH_MAX + 256];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* a step being produced by a live builder */
        eng_rmrf(p);
    }
}

/* Removes one step entry (index file name hex) unless a build holds it. */
static bool prune_one(const char *data_dir, const char *hex)
{
    char sp[ENG_PATH_MAX], ip[ENG_PATH_MAX];
    snprintf(sp, sizeof(sp), "%s/snapshots/steps/%.64s", data_dir, hex);
    snprintf(ip, sizeof(ip), "%s/cache/steps/%.64s", data_dir, hex);
    _cleanup_close_ int fd = open(sp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
        return false; /* in use */
    /* The index goes first: a lookup never finds an entry without its dir. */
    unlink(ip);
    if (fd >= 0)
        eng_rmrf(sp);
    return true;
}

void bld_engine_cache_usage(bld_engine *e, uint64_t *steps, uint64_t *bytes)
{
    *steps = *bytes = 0;
    char dir[ENG_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/cache/steps", e->data_dir);
    _cleanup_closedir_ DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 64 || strspn(de->d_name, "0123456789abcdef") != 64)
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
        _cleanup_fclose_ FILE *f = fd >= 0 ? fdopen(fd, "re") : NULL;
        if (f == NULL) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        int layer = 0;
        uint64_t size = 0;
        if (fscanf(f, "layer=%d\nsize=%" SCNu64, &layer, &size) == 2) {
            (*steps)++;
            *bytes += size;
        }
    }
}

int bld_engine_prune(bld_engine *e, uint64_t max_age_s, size_t *removed, kiln_error **err)
{
    size_t n = 0;
    time_t cutoff = time(NULL) - (time_t)max_age_s;
    char dir[ENG_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/cache/steps", e->data_dir);
    _cleanup_closedir_ DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strlen(de->d_name) != 64 || strspn(de->d_name, "0123456789abcdef") != 64)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || (max_age_s > 0 && st.st_mtime > cutoff))
            continue;
        if (prune_one(e->data_dir, de->d_name))
            n++;
    }
    /* Step dirs whose index entry is gone (a crash between the two writes). */
    snprintf(dir, sizeof(dir), "%s/snapshots/steps", e->data_dir);
    _cleanup_closedir_ DIR *sd = opendir(dir);
    while (sd && (de = readdir(sd)) != NULL) {
        char ip[ENG_PATH_MAX + 300];
        snprintf(ip, sizeof(ip), "%s/cache/steps/%s", e->data_dir, de->d_name);
        if (strlen(de->d_name) == 64 && access(ip, F_OK) < 0 && errno == ENOENT)
            prune_one(e->data_dir, de->d_name);
    }
    if (removed)
        *removed = n;
    return eng_snapshot_prune(e->data_dir, max_age_s, err);
}
