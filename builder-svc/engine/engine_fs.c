/* The image being built as a filesystem, seen from the engine: the merged
 * view of a step's lower dirs and its upper dir (whiteouts and opaque dirs
 * honoured), destination paths resolved inside the image root (a symlinked
 * parent never leads to the host), parent directories recreated in the upper
 * dir with their lower metadata, WORKDIR creation, and --chown names looked
 * up in the image's /etc/passwd and /etc/group. */
#include "engine_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"
#include "overlay.h"

#define MAX_LINKS 40

/* ---- paths ---- */

/* Looks rel (cleaned) up in the merged view: upper (may be NULL) over lowers.
 * Returns 1 with *st and host filled, 0 when absent. */
int eng_image_lookup(const char *const *lowers, size_t n, const char *upper, const char *rel,
                     struct stat *st, char host[ENG_PATH_MAX])
{
    size_t total = n + (upper ? 1 : 0);
    for (size_t k = total; k-- > 0;) {
        const char *layer = (upper && k == n) ? upper : lowers[k];
        bool stop = false;
        /* Prefixes of rel: a whiteout or non-dir hides rel; an opaque dir
         * hides the layers below. */
        char pre[ENG_PATH_MAX];
        size_t rl = strlen(rel);
        for (size_t i = 0; i <= rl; i++) {
            if (rel[i] != '/' && rel[i] != '\0')
                continue;
            snprintf(pre, sizeof(pre), "%s/%.*s", layer, (int)i, rel);
            struct stat ps;
            if (lstat(pre, &ps) < 0)
                break;
            if (kiln_ovl_is_whiteout(&ps))
                return 0;
            if (rel[i] == '\0') {
                *st = ps;
                snprintf(host, ENG_PATH_MAX, "%s", pre);
                return 1;
            }
            if (!S_ISDIR(ps.st_mode))
                return 0;
            if (i > 0 && kiln_ovl_is_opaque_path(pre))
                stop = true;
        }
        if (stop)
            return 0;
    }
    return 0;
}

char *eng_read_image_file(const char *const *lowers, size_t n_lowers, const char *path)
{
    char rel[ENG_PATH_MAX], host[ENG_PATH_MAX];
    struct stat st;
    if (kiln_path_clean(rel, sizeof(rel), path, KILN_PATH_ABS | KILN_PATH_DOTDOT | KILN_PATH_CLAMP,
                        NULL) < 0 ||
        eng_image_lookup(lowers, n_lowers, NULL, rel, &st, host) != 1 || !S_ISREG(st.st_mode) ||
        st.st_size > (16 << 20))
        return NULL;
    _cleanup_fclose_ FILE *f = fopen(host, "re");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, (size_t)st.st_size + 1);
    if (buf && fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Resolves symlinks in the parents of path (absolute inside the image) within
 * the image root; the last component is not followed. */
int eng_resolve_dest(char out[ENG_PATH_MAX], const eng_copy_desc *d, const char *path,
                     kiln_error **err)
{
    char cur[ENG_PATH_MAX];
    if (kiln_path_clean(cur, sizeof(cur), path, KILN_PATH_ABS | KILN_PATH_DOTDOT | KILN_PATH_CLAMP,
                        NULL) < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: destination too long", d->what);
    for (int links = 0; links <= MAX_LINKS; links++) {
        bool changed = false;
        size_t len = strlen(cur);
        for (size_t i = 0; i < len && !changed; i++) {
            if (cur[i] != '/')
                continue;
            char pre[ENG_PATH_MAX];
            snprintf(pre, sizeof(pre), "%.*s", (int)i, cur);
            struct stat st;
            char host[ENG_PATH_MAX];
            if (eng_image_lookup(d->lowers, d->n_lowers, d->upper, pre, &st, host) != 1 ||
                !S_ISLNK(st.st_mode))
                continue;
            char target[ENG_PATH_MAX];
            ssize_t tl = readlink(host, target, sizeof(target) - 1);
            if (tl < 0)
                return kiln_error_set(err, KILN_EIO, errno, "readlink %s", host);
            target[tl] = '\0';
            char joined[3 * ENG_PATH_MAX];
            const char *slash = strrchr(pre, '/');
            if (target[0] == '/')
                snprintf(joined, sizeof(joined), "%s/%s", target, cur + i + 1);
            else
                snprintf(joined, sizeof(joined), "%.*s/%s/%s", slash ? (int)(slash - pre) : 0, pre,
                         target, cur + i + 1);
            if (kiln_path_clean(cur, sizeof(cur), joined,
                                KILN_PATH_ABS | KILN_PATH_DOTDOT | KILN_PATH_CLAMP, NULL) < 0)
                return kiln_error_set(err, KILN_EINVAL, 0, "%s: destination too long", d->what);
            changed = true;
        }
        if (!changed) {
            snprintf(out, ENG_PATH_MAX, "%s", cur);
            return 0;
        }
    }
    return kiln_error_set(err, KILN_EINVAL, 0, "%s: too many symlinks in destination %s", d->what,
                          path);
}

/* Makes sure every directory of rel (cleaned, symlink-free) exists in the
 * upper dir as a real directory. */
int eng_ensure_dirs(const eng_copy_desc *d, const char *rel, long uid, long gid, kiln_strv *fix,
                    kiln_error **err)
{
    size_t len = strlen(rel);
    for (size_t i = 0; i <= len; i++) {
        if (i == 0 || (rel[i] != '/' && rel[i] != '\0'))
            continue;
        char pre[ENG_PATH_MAX], up[2 * ENG_PATH_MAX];
        snprintf(pre, sizeof(pre), "%.*s", (int)i, rel);
        snprintf(up, sizeof(up), "%s/%s", d->upper, pre);
        struct stat st;
        if (lstat(up, &st) == 0) {
            if (S_ISDIR(st.st_mode))
                continue;
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: /%s is not a directory", d->what, pre);
        }
        char host[ENG_PATH_MAX];
        int found = eng_image_lookup(d->lowers, d->n_lowers, NULL, pre, &st, host);
        if (found && !S_ISDIR(st.st_mode))
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: /%s is not a directory", d->what, pre);
        if (mkdir(up, found ? (st.st_mode & 07777) : 0755) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", up);
        if (found) {
            if (lchown(up, st.st_uid, st.st_gid) < 0 || chmod(up, st.st_mode & 07777) < 0)
                return kiln_error_set(err, KILN_EIO, errno, "chown %s", up);
            if (fix && kiln_strv_push(fix, pre) < 0)
                return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        } else if (lchown(up, (uid_t)(uid >= 0 ? uid : 0), (gid_t)(gid >= 0 ? gid : 0)) < 0) {
            return kiln_error_set(err, KILN_EIO, errno, "chown %s", up);
        }
    }
    return 0;
}

/* ---- --chown ---- */

static bool parse_id(const char *s, long *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > 0x7fffffffL)
        return false;
    *out = v;
    return true;
}

/* Finds name in a passwd/group text and returns its id (field 3). */
static bool find_entry(const char *text, const char *name, long *id)
{
    if (text == NULL)
        return false;
    size_t nl = strlen(name);
    for (const char *l = text; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
        if (strncmp(l, name, nl) != 0 || l[nl] != ':')
            continue;
        const char *f = strchr(l + nl + 1, ':');
        if (f == NULL)
            return false;
        *id = strtol(f + 1, NULL, 10);
        return true;
    }
    return false;
}

int eng_resolve_owner(long *uid, long *gid, const char *user, const char *group,
                      const char *const *lowers, size_t n_lowers, kiln_error **err)
{
    *uid = *gid = -1;
    if (user == NULL)
        return 0;
    _cleanup_free_ char *passwd = eng_read_image_file(lowers, n_lowers, "/etc/passwd");
    if (!parse_id(user, uid) && !find_entry(passwd, user, uid))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "--chown: unknown user %s (not in the image's /etc/passwd)", user);
    /* Docker: a user without group uses the same numeric id as the GID. */
    if (group == NULL || *group == '\0') {
        *gid = *uid;
        return 0;
    }
    if (parse_id(group, gid))
        return 0;
    _cleanup_free_ char *groups = eng_read_image_file(lowers, n_lowers, "/etc/group");
    if (!find_entry(groups, group, gid))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "--chown: unknown group %s (not in the image's /etc/group)", group);
    return 0;
}

int eng_workdir_mkdir(const char *path, const char *const *lowers, size_t n_lowers,
                      const char *upper, bool *created, kiln_error **err)
{
    *created = false;
    eng_copy_desc d = {.what = "WORKDIR", .lowers = lowers, .n_lowers = n_lowers, .upper = upper};
    char rel[ENG_PATH_MAX], host[ENG_PATH_MAX];
    int rc = eng_resolve_dest(rel, &d, path, err);
    if (rc < 0 || rel[0] == '\0')
        return rc;
    struct stat st;
    if (eng_image_lookup(lowers, n_lowers, upper, rel, &st, host) == 1) {
        if (S_ISDIR(st.st_mode))
            return 0;
        if (!S_ISLNK(st.st_mode))
            return kiln_error_set(err, KILN_EINVAL, 0, "WORKDIR %s: not a directory", path);
        /* A symlink as the last component: resolve it like a parent. */
        char sub[ENG_PATH_MAX + 4];
        snprintf(sub, sizeof(sub), "/%s/.", rel);
        if ((rc = eng_resolve_dest(rel, &d, sub, err)) < 0)
            return rc;
        if (eng_image_lookup(lowers, n_lowers, upper, rel, &st, host) == 1 && S_ISDIR(st.st_mode))
            return 0;
    }
    kiln_strv fix = {0};
    rc = eng_ensure_dirs(&d, rel, -1, -1, &fix, err);
    for (size_t i = fix.n; rc == 0 && i-- > 0;) {
        char up[2 * ENG_PATH_MAX];
        if (eng_image_lookup(lowers, n_lowers, NULL, fix.v[i], &st, host) != 1)
            continue;
        snprintf(up, sizeof(up), "%s/%s", upper, fix.v[i]);
        struct timespec ts[2] = {st.st_atim, st.st_mtim};
        utimensat(AT_FDCWD, up, ts, AT_SYMLINK_NOFOLLOW);
    }
    kiln_strv_dispose(&fix);
    *created = rc == 0;
    return rc;
}
