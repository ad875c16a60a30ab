/* common/fs: atomic writes, mkdir -p, rm -rf, path cleaning, random hex. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fs.h"
#include "kt.h"
#include "kt_util.h"

static char *slurp(const char *path)
{
    static char buf[256];
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static size_t count_entries(const char *dir)
{
    _cleanup_closedir_ DIR *d = opendir(dir);
    size_t n = 0;
    for (struct dirent *de; d && (de = readdir(d)) != NULL;)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    return n;
}

KT_TEST(atomic_write_replaces_and_leaves_no_temp)
{
    _cleanup_free_ char *d = kt_tmpdir("fs");
    KT_REQUIRE(d != NULL);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/file", d);
    KT_EXPECT_INT(kiln_atomic_write(p, "one", 3, 0640, 0, NULL), 0);
    KT_EXPECT_STR(slurp(p), "one");
    KT_EXPECT_INT(kiln_atomic_write(p, "second", 6, 0600, KILN_ATOMIC_LOCK, NULL), 0);
    KT_EXPECT_STR(slurp(p), "second");
    struct stat st;
    KT_REQUIRE(stat(p, &st) == 0);
    KT_EXPECT_INT(st.st_mode & 0777, 0600 & ~0u);
    KT_EXPECT_INT(count_entries(d), 1);

    /* Temp in another directory of the same filesystem, as the store does. */
    char sub[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/tmp", d);
    KT_REQUIRE(mkdir(sub, 0700) == 0);
    _cleanup_close_ int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_close_ int tfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    KT_EXPECT_INT(kiln_atomic_write_at(tfd, dfd, "file", "third", 5, 0644, 0, NULL), 0);
    KT_EXPECT_STR(slurp(p), "third");
    KT_EXPECT_INT(count_entries(sub), 0);

    /* A missing directory fails and leaves nothing behind. */
    char bad[PATH_MAX];
    snprintf(bad, sizeof(bad), "%s/missing/file", d);
    kiln_error *e = NULL;
    KT_EXPECT(kiln_atomic_write(bad, "x", 1, 0644, 0, &e) < 0);
    KT_EXPECT(e != NULL);
    kiln_error_free(&e);
    KT_EXPECT_INT(kiln_rm_rf(d, NULL), 0);
}

KT_TEST(write_all_writes_everything)
{
    int fds[2];
    KT_REQUIRE(pipe(fds) == 0);
    KT_EXPECT_INT(kiln_write_all(fds[1], "hello", 5), 0);
    close(fds[1]);
    char buf[8] = "";
    KT_EXPECT_INT(read(fds[0], buf, sizeof(buf)), 5);
    KT_EXPECT(memcmp(buf, "hello", 5) == 0);
    close(fds[0]);
    KT_EXPECT_INT(kiln_write_all(-1, "x", 1), -1);
    KT_EXPECT_INT(errno, EBADF);
}

KT_TEST(mkdir_p_and_rm_rf)
{
    _cleanup_free_ char *d = kt_tmpdir("fs");
    KT_REQUIRE(d != NULL);
    char p[PATH_MAX], f[PATH_MAX + 8], outside[PATH_MAX], link[PATH_MAX + 8];
    snprintf(p, sizeof(p), "%s/a/b/c", d);
    KT_EXPECT_INT(kiln_mkdir_p(p, 0755, NULL), 0);
    KT_EXPECT_INT(kiln_mkdir_p(p, 0755, NULL), 0); /* exists: fine */
    snprintf(f, sizeof(f), "%s/file", p);
    KT_EXPECT_INT(kiln_atomic_write(f, "x", 1, 0644, 0, NULL), 0);
    KT_EXPECT(kiln_mkdir_p(f, 0755, NULL) < 0); /* a file is not a directory */

    /* A symlink to a directory outside is removed, not followed; a
     * read-only and a mode-000 directory are opened up first. */
    snprintf(outside, sizeof(outside), "%s-outside", d);
    KT_REQUIRE(mkdir(outside, 0755) == 0);
    snprintf(link, sizeof(link), "%s/a/link", d);
    KT_REQUIRE(symlink(outside, link) == 0);
    snprintf(f, sizeof(f), "%s/keep", outside);
    KT_EXPECT_INT(kiln_atomic_write(f, "k", 1, 0644, 0, NULL), 0);
    snprintf(p, sizeof(p), "%s/a/b", d);
    KT_REQUIRE(chmod(p, 0555) == 0);
    snprintf(p, sizeof(p), "%s/a/b/c", d);
    KT_REQUIRE(chmod(p, 0) == 0);
    KT_EXPECT_INT(kiln_rm_rf(d, NULL), 0);
    KT_EXPECT(access(d, F_OK) < 0 && errno == ENOENT);
    KT_EXPECT_STR(slurp(f), "k");
    KT_EXPECT_INT(kiln_rm_rf(d, NULL), 0); /* missing: fine */
    KT_EXPECT_INT(kiln_rm_rf(outside, NULL), 0);
}

KT_TEST(random_hex_length_is_characters)
{
    char a[40], b[40];
    for (size_t n = 0; n <= 33; n++) {
        memset(a, 'X', sizeof(a));
        kiln_random_hex(a, n);
        KT_EXPECT_INT(strlen(a), n);
        KT_EXPECT_INT(strspn(a, "0123456789abcdef"), n);
        KT_EXPECT(a[n + 1] == 'X');
    }
    kiln_random_hex(a, 32);
    kiln_random_hex(b, 32);
    KT_EXPECT(strcmp(a, b) != 0);
}

/* Mount and archive member paths: ".." refused, "/" only when allowed. */
KT_TEST(clean_path_no_dotdot)
{
    static const struct {
        const char *in;
        bool abs;
        int rc;
        const char *out;
    } cases[] = {
        {"a/b", false, 0, "a/b"},
        {"./a//b/", false, 0, "a/b"},
        {"././.", false, 0, ""},
        {"/a", false, KILN_EINVAL, NULL},
        {"/a/./b", true, 0, "a/b"},
        {"a/../b", false, KILN_EINVAL, NULL},
        {"..", true, KILN_EINVAL, NULL},
        {"a/..", false, KILN_EINVAL, NULL},
        {"a/..b", false, 0, "a/..b"},
        {"...", false, 0, "..."},
        {".wh..wh..opq", false, 0, ".wh..wh..opq"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char out[64];
        unsigned fl = KILN_PATH_NAME_MAX | (cases[i].abs ? KILN_PATH_ABS : 0);
        int rc = kiln_path_clean(out, sizeof(out), cases[i].in, fl, NULL);
        KT_EXPECT_INT(rc, cases[i].rc);
        if (rc == 0)
            KT_EXPECT_STR(out, cases[i].out);
    }
    char longname[NAME_MAX + 8];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    char out[PATH_MAX];
    KT_EXPECT_INT(kiln_path_clean(out, sizeof(out), longname, KILN_PATH_NAME_MAX, NULL),
                  KILN_EINVAL);
    KT_EXPECT_INT(kiln_path_clean(out, sizeof(out), longname, 0, NULL), 0);
}

KT_TEST(clean_layer_path_table)
{
    static const struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"/", 0, ""},
        {".", 0, ""},
        {"./", 0, ""},
        {"", 0, ""},
        {"/etc/passwd", 0, "etc/passwd"},
        {"./etc/passwd", 0, "etc/passwd"},
        {"//etc//./passwd/", 0, "etc/passwd"},
        {"/../../etc", 0, "etc"},
        {"/etc/../../../x", 0, "x"},
        {"a/../b", 0, "b"},
        {"a/b/../../c", 0, "c"},
        {"a/..", 0, ""},
        {"../x", KILN_EINVAL, NULL},
        {"a/../../x", KILN_EINVAL, NULL},
        {"./../x", KILN_EINVAL, NULL},
        {"..", KILN_EINVAL, NULL},
        {"a/..b", 0, "a/..b"},
        {"...", 0, "..."},
        {"/.wh..wh..opq", 0, ".wh..wh..opq"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char out[64];
        int rc = kiln_path_clean(out, sizeof(out), cases[i].in, KILN_PATH_LAYER, NULL);
        if (rc != cases[i].rc)
            KT_FAIL("%s: rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 0 && strcmp(out, cases[i].out) != 0)
            KT_FAIL("%s: \"%s\", want \"%s\"", cases[i].in, out, cases[i].out);
    }
    char small[4];
    KT_EXPECT_INT(kiln_path_clean(small, sizeof(small), "/abcd", KILN_PATH_LAYER, NULL),
                  KILN_EINVAL);
}

/* Paths inside an image (COPY sources and destinations): ".." resolved,
 * clamped at the root or refused. */
KT_TEST(clean_path_dotdot_clamp)
{
    static const struct {
        const char *in;
        bool clamp;
        int rc;
        const char *out;
    } cases[] = {
        {"/usr/./bin/../lib/", false, 0, "usr/lib"},
        {"usr/bin/..", false, 0, "usr"},
        {"/..", false, KILN_EINVAL, NULL},
        {"/..", true, 0, ""},
        {"../../etc/passwd", true, 0, "etc/passwd"},
        {"../etc", false, KILN_EINVAL, NULL},
        {"a/b/../../..", true, 0, ""},
        {"", false, 0, ""},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char out[64];
        unsigned fl = KILN_PATH_ABS | KILN_PATH_DOTDOT | (cases[i].clamp ? KILN_PATH_CLAMP : 0);
        int rc = kiln_path_clean(out, sizeof(out), cases[i].in, fl, NULL);
        if (rc != cases[i].rc)
            KT_FAIL("%s: rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 0 && strcmp(out, cases[i].out) != 0)
            KT_FAIL("%s: \"%s\", want \"%s\"", cases[i].in, out, cases[i].out);
    }
}

/* Go's path.Clean (Dockerfile WORKDIR, .dockerignore patterns). */
KT_TEST(clean_path_lexical_is_go_path_clean)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", "."},
        {".", "."},
        {"/", "/"},
        {"//", "/"},
        {"/..", "/"},
        {"/../a", "/a"},
        {"a/b/../c", "a/c"},
        {"a/../..", ".."},
        {"../../a/../b", "../../b"},
        {"../a/..", ".."},
        {"./a/./b/", "a/b"},
        {"/a//b/../../..", "/"},
        {"abc/def/ghi/../..", "abc"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char out[64];
        int rc = kiln_path_clean(out, sizeof(out), cases[i].in, KILN_PATH_LEXICAL, NULL);
        if (rc != 0 || strcmp(out, cases[i].out) != 0)
            KT_FAIL("%s: rc %d \"%s\", want \"%s\"", cases[i].in, rc, rc ? "" : out, cases[i].out);
    }
}
