/* Unpacking a tar of an OCI layout (see layout_tar.h). */
#include "layout_tar.h"
#include "cleanup.h"
#include "fs.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Writes the current entry's data to a new file at full. */
static int write_entry(struct archive *a, const char *full, const char *rel,
                       const kiln_layout_untar_opts *o, kiln_error **err)
{
    _cleanup_close_ int out =
        open(full, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, o->file_mode);
    if (out < 0)
        return kiln_error_set(err, o->code, errno, "%s: create %.200s", o->what, rel);
    const void *buf;
    size_t size;
    la_int64_t off;
    int ar;
    while ((ar = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK)
        if (pwrite(out, buf, size, off) != (ssize_t)size)
            return kiln_error_set(err, KILN_EIO, errno, "%s: write %.200s", o->what, rel);
    if (ar != ARCHIVE_EOF)
        return kiln_error_set(err, o->code, 0, "%s: %s", o->what, archive_error_string(a));
    if (o->fsync && fsync(out) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "%s: fsync %.200s", o->what, rel);
    return 0;
}

/* One entry: a directory, or a file with its parent directories. */
static int unpack_entry(struct archive *a, struct archive_entry *e, const char *dir,
                        const kiln_layout_untar_opts *o, kiln_error **err)
{
    char rel[PATH_MAX], full[2 * PATH_MAX];
    const char *name = archive_entry_pathname(e);
    mode_t type = archive_entry_filetype(e);
    if (name == NULL || kiln_path_clean(rel, sizeof(rel), name, KILN_PATH_LAYER, NULL) < 0 ||
        (type != AE_IFREG && type != AE_IFDIR))
        return kiln_error_set(err, o->code, 0,
                              "%s: refused entry '%.200s' (only files and directories below "
                              "the layout, at most %zu)",
                              o->what, name ? name : "", o->max_entries);
    if (rel[0] == '\0')
        return 0;
    snprintf(full, sizeof(full), "%s/%s", dir, rel);
    if (type == AE_IFDIR)
        return kiln_mkdir_p(full, o->dir_mode, err);
    char *slash = strrchr(full, '/');
    *slash = '\0';
    int r = kiln_mkdir_p(full, o->dir_mode, err);
    *slash = '/';
    return r < 0 ? r : write_entry(a, full, rel, o, err);
}

int kiln_layout_untar(int fd, const char *dir, const kiln_layout_untar_opts *o, kiln_error **err)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    archive_read_support_format_tar(a);
    int r = 0, ar;
    size_t n = 0;
    if (lseek(fd, 0, SEEK_SET) < 0 || archive_read_open_fd(a, fd, 1 << 16) != ARCHIVE_OK) {
        r = kiln_error_set(err, o->code, 0, "%s: %s", o->what, archive_error_string(a));
        goto out;
    }
    struct archive_entry *e;
    while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        if (++n > o->max_entries) {
            r = kiln_error_set(err, o->code, 0,
                               "%s: refused entry '%.200s' (only files and directories below "
                               "the layout, at most %zu)",
                               o->what, archive_entry_pathname(e) ? archive_entry_pathname(e) : "",
                               o->max_entries);
            goto out;
        }
        if ((r = unpack_entry(a, e, dir, o, err)) < 0)
            goto out;
    }
    if (ar != ARCHIVE_EOF)
        r = kiln_error_set(err, o->code, 0, "%s: %s", o->what, archive_error_string(a));
out:
    archive_read_free(a);
    return r;
}
