/* Uncompressed (tar) sizes of the layer blobs the store packed, kept in
 * .kiln/sizes/HEX as a decimal number (see psh_store.h).  The OCI layout has
 * no place for them: a manifest lists the compressed size only, and adding
 * an annotation would change the image's digest. */
#include "psh_store.h"
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"

/* The hex part of a well-formed digest, or NULL. */
static const char *hex_of(const char *digest)
{
    if (digest == NULL || strncmp(digest, "sha256:", 7) != 0)
        return NULL;
    const char *h = digest + 7;
    return strlen(h) == 64 && strspn(h, "0123456789abcdef") == 64 ? h : NULL;
}

static int sizes_dir(const psh_store *s, bool create)
{
    if (create && mkdirat(s->kiln_fd, "sizes", 0755) < 0 && errno != EEXIST)
        return -1;
    return openat(s->kiln_fd, "sizes", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

void psh_store_note_tar_size(psh_store *s, const char *digest, uint64_t tar_size)
{
    const char *h = hex_of(digest);
    if (h == NULL || tar_size == 0 || psh_store_tar_size(s, digest) == tar_size)
        return;
    _cleanup_close_ int dfd = sizes_dir(s, true);
    if (dfd < 0)
        return;
    char text[32];
    int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", tar_size);
    kiln_error *err = NULL;
    kiln_atomic_write_at(s->tmp_fd, dfd, h, text, (size_t)n, 0644, 0, &err);
    kiln_error_free(&err);
}

uint64_t psh_store_tar_size(const psh_store *s, const char *digest)
{
    const char *h = hex_of(digest);
    _cleanup_close_ int dfd = h ? sizes_dir(s, false) : -1;
    if (dfd < 0)
        return 0;
    _cleanup_close_ int fd = openat(dfd, h, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    char text[32];
    ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
    if (n <= 0)
        return 0;
    text[n] = '\0';
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    return end != text && (*end == '\n' || *end == '\0') ? (uint64_t)v : 0;
}

void psh_store_forget_tar_size(psh_store *s, const char *digest)
{
    const char *h = hex_of(digest);
    _cleanup_close_ int dfd = h ? sizes_dir(s, false) : -1;
    if (dfd >= 0)
        unlinkat(dfd, h, 0);
}
