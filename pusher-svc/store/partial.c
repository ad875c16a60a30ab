/* Resumable downloads: one partial file per blob digest in .kiln/tmp
 * ("pull-<hex>.partial") that outlives the process writing it.  Its writer
 * holds an exclusive flock on it, so a second writer (same process or not)
 * and GC can tell a live download from an abandoned one.  Only the bytes on
 * disk count: whoever resumes re-hashes them, and the final digest check
 * decides whether they were right. */
#include "store_internal.h"
#include "units.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

#define OPEN_TRIES 4 /* a name GC or a finishing writer replaced under us: try again */

bool psh_store_is_partial_name(const char *name)
{
    size_t pl = strlen(PSH_STORE_PARTIAL_PREFIX), sl = strlen(PSH_STORE_PARTIAL_SUFFIX);
    size_t n = strlen(name);
    return n == pl + 64 + sl && strncmp(name, PSH_STORE_PARTIAL_PREFIX, pl) == 0 &&
           strcmp(name + n - sl, PSH_STORE_PARTIAL_SUFFIX) == 0;
}

int psh_store_partial_open(psh_store *s, const char *digest, psh_store_tmp *out, uint64_t *out_size,
                           kiln_error **err)
{
    out->pin = NULL;
    out->fd = -1;
    *out_size = 0;
    if (!kiln_digest_valid(digest))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid digest \"%.80s\"", digest);
    snprintf(out->name, sizeof(out->name), "%s%.64s%s", PSH_STORE_PARTIAL_PREFIX, digest + 7,
             PSH_STORE_PARTIAL_SUFFIX);
    for (int i = 0; i < OPEN_TRIES; i++) {
        _cleanup_close_ int fd =
            openat(s->tmp_fd, out->name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s/.kiln/tmp/%s",
                                  s->path, out->name);
        int r;
        while ((r = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EINTR)
            ;
        if (r < 0 && errno == EWOULDBLOCK)
            return 1; /* another download of the same blob is running */
        if (r < 0)
            return kiln_error_set(err, KILN_EIO, errno, "lock %s", out->name);
        /* GC may have removed the name between our open and our lock (it
         * locks before it unlinks), or a finished writer renamed it: only the
         * file that still carries the name is ours to extend. */
        struct stat mine, named;
        if (fstat(fd, &mine) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "stat %s", out->name);
        if (fstatat(s->tmp_fd, out->name, &named, AT_SYMLINK_NOFOLLOW) < 0 ||
            named.st_ino != mine.st_ino || named.st_dev != mine.st_dev)
            continue;
        if (!S_ISREG(mine.st_mode))
            return kiln_error_set(err, KILN_EIO, 0, "%s is not a regular file", out->name);
        *out_size = (uint64_t)mine.st_size;
        out->fd = steal_fd(&fd);
        return 0;
    }
    return kiln_error_set(err, KILN_EIO, 0, "%s keeps changing under us", out->name);
}

void psh_store_partial_keep(psh_store *s, psh_store_tmp *t)
{
    (void)s;
    if (t->fd < 0)
        return;
    close(t->fd); /* releases the lock; the bytes stay for the next attempt */
    t->fd = -1;
}

unsigned psh_store_partial_sweep(psh_store *s, int64_t max_age)
{
    int dfd = dup(s->tmp_fd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (d == NULL) {
        if (dfd >= 0)
            close(dfd);
        return 0;
    }
    rewinddir(d);
    unsigned removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!psh_store_is_partial_name(e->d_name))
            continue;
        _cleanup_close_ int fd =
            openat(s->tmp_fd, e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
            kiln_age_s(&st.st_mtim) >= max_age && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            unlinkat(s->tmp_fd, e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}
