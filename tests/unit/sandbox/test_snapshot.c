/* Snapshots: chain ids, unpacking (gzip, zstd, plain tar), digest checks,
 * hostile layers contained or rejected with nothing written outside, overlay
 * whiteout semantics across three layers compared with `umoci unpack`, use
 * counting and pruning, interrupted unpacks. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "sbx_fixture.h"
#include "sbx_internal.h"

/* Ownership, device nodes and trusted.* xattrs need root. */
__attribute__((constructor)) static void require_root(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skip: snapshot tests run as root\n");
        exit(77);
    }
}

static char *path2(const char *a, const char *b)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s", a, b) < 0)
        exit(1);
    return s;
}

KT_TEST(chain_id_follows_oci)
{
    char d1[80], d2[80], c[80], expect[80], buf[200];
    kiln_sha256_bytes("a", 1, d1);
    kiln_sha256_bytes("b", 1, d2);
    bld_chain_id(c, NULL, d1);
    KT_EXPECT_STR(c, d1);
    bld_chain_id(c, d1, d2);
    snprintf(buf, sizeof(buf), "%s %s", d1, d2);
    kiln_sha256_bytes(buf, strlen(buf), expect);
    KT_EXPECT_STR(c, expect);
    KT_EXPECT_INT(bld_layer_media_parse("application/vnd.oci.image.layer.v1.tar+zstd"),
                  BLD_LAYER_ZSTD);
    KT_EXPECT_INT(bld_layer_media_parse("application/vnd.docker.image.rootfs.diff.tar.gzip"),
                  BLD_LAYER_GZIP);
    KT_EXPECT_INT(bld_layer_media_parse("application/vnd.oci.image.layer.v1.tar"), BLD_LAYER_TAR);
}

static const fx_entry simple[] = {
    {'d', "etc", NULL, 0755, 0, 0, 0},
    {'f', "etc/conf", "hello\n", 0640, 12, 34, 1234567890},
    {'f', "bin/tool", "#!/bin/sh\n", 04755, 0, 0, 0}, /* implied parent bin/ */
    {'l', "etc/link", "/etc/conf", 0, 0, 0, 0},
    {'h', "etc/hard", "etc/conf", 0, 0, 0, 0},
    {'c', "dev-null", "1,3", 0666, 0, 0, 0},
    {'f', "./etc/dotted", "d", 0, 0, 0, 0},
    {'d', "xdir", 0, 0, 0, 0, 0, "trusted.overlay.opaque=y"}, /* overlay's own: dropped */
    {'f', "xdir/cap", "c", 0755, 0, 0, 0,
     "security.capability=hex:0100000200040000000000000000000000000000"},
    {'f', "xdir/user", "u", 0, 0, 0, 0, "user.note=kept"},
    {'f', "xdir/redir", "r", 0, 0, 0, 0, "trusted.overlay.redirect=/etc"},
};

KT_TEST(unpack_all_compressions_and_metadata)
{
    char *t = kt_tmpdir("sbx");
    for (int comp = FX_TAR; comp <= FX_ZSTD; comp++) {
        char *blob = path2(t, "layer"), *data = path2(t, "data");
        char digest[80], diff[80], chain[80];
        KT_REQUIRE(fx_layer(blob, simple, KILN_ARRAY_SIZE(simple), comp, digest, diff) == 0);
        bld_layer l = {.blob_path = blob, .digest = digest, .media = BLD_LAYER_AUTO};
        kiln_error *err = NULL;
        int r = bld_snapshot_ensure(chain, data, &l, 1, &err);
        KT_EXPECT_INT(r, 0);
        if (r < 0) {
            fprintf(stderr, "  %s\n", err->msg);
            kiln_error_free(&err);
            break;
        }
        KT_EXPECT_STR(chain, diff); /* chain of one layer = its DiffID, computed */
        char *fs = NULL;
        KT_REQUIRE(asprintf(&fs, "%s/snapshots/%s/fs", data, diff + 7) > 0);
        char *conf = path2(fs, "etc/conf"), *hard = path2(fs, "etc/hard"),
             *tool = path2(fs, "bin/tool"), *lnk = path2(fs, "etc/link"),
             *dev = path2(fs, "dev-null");
        struct stat st, st2;
        KT_EXPECT(stat(conf, &st) == 0 && st.st_uid == 12 && st.st_gid == 34 &&
                  (st.st_mode & 07777) == 0640 && st.st_mtime == 1234567890);
        KT_EXPECT(stat(hard, &st2) == 0 && st2.st_ino == st.st_ino);
        KT_EXPECT(stat(tool, &st) == 0 && (st.st_mode & 07777) == 04755);
        char target[64] = "";
        KT_EXPECT(readlink(lnk, target, sizeof(target) - 1) > 0 && !strcmp(target, "/etc/conf"));
        KT_EXPECT(lstat(dev, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
        char *c = kt_read_file(conf, NULL);
        KT_EXPECT_STR(c, "hello\n");
        free(c);
        char *xd = path2(fs, "xdir"), *xu = path2(fs, "xdir/user"), *xr = path2(fs, "xdir/redir"),
             *xc = path2(fs, "xdir/cap"), *dotted = path2(fs, "etc/dotted");
        char v[64] = "";
        KT_EXPECT(kt_exists(dotted));
        KT_EXPECT(lgetxattr(xd, "trusted.overlay.opaque", v, sizeof(v)) < 0);
        KT_EXPECT(lgetxattr(xr, "trusted.overlay.redirect", v, sizeof(v)) < 0);
        KT_EXPECT(lgetxattr(xu, "user.note", v, sizeof(v)) == 4 && !memcmp(v, "kept", 4));
        KT_EXPECT(lgetxattr(xc, "security.capability", v, sizeof(v)) > 0);
        free(xd), free(xu), free(xr), free(xc), free(dotted);
        /* A second ensure finds it: the same inode, nothing unpacked. */
        struct stat before, after;
        stat(fs, &before);
        char chain2[80];
        bld_layer l2 = {.blob_path = blob, .digest = digest}; /* DiffID remembered by digest */
        KT_EXPECT_INT(bld_snapshot_ensure(chain2, data, &l2, 1, NULL), 0);
        stat(fs, &after);
        KT_EXPECT_STR(chain2, chain);
        KT_EXPECT(before.st_ino == after.st_ino);
        free(conf), free(hard), free(tool), free(lnk), free(dev), free(fs);
        kt_rmrf(data);
        free(blob), free(data);
    }
    kt_rmrf(t);
    free(t);
}

static int snapshots_count(const char *data)
{
    char *d = path2(data, "snapshots");
    char *cmd = NULL;
    int n = -1;
    if (asprintf(&cmd, "ls -A %s | grep -v '^.diffids$' | wc -l", d) > 0) {
        FILE *p = popen(cmd, "r");
        if (p && fscanf(p, "%d", &n) != 1)
            n = -1;
        if (p)
            pclose(p);
    }
    free(cmd);
    free(d);
    return n;
}

KT_TEST(digest_mismatch_leaves_nothing)
{
    char *t = kt_tmpdir("sbx"), *blob = path2(t, "l.tgz"), *data = path2(t, "data");
    char digest[80], diff[80], chain[80];
    KT_REQUIRE(fx_layer(blob, simple, 2, FX_GZIP, digest, diff) == 0);
    bld_layer l = {.blob_path = blob, .digest = diff /* wrong on purpose */};
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_snapshot_ensure(chain, data, &l, 1, &err), KILN_EINVAL);
    KT_EXPECT(err && strstr(err->msg, "digest"));
    kiln_error_free(&err);
    l = (bld_layer){.blob_path = blob, .digest = digest, .diff_id = digest /* wrong DiffID */};
    KT_EXPECT_INT(bld_snapshot_ensure(chain, data, &l, 1, &err), KILN_EINVAL);
    kiln_error_free(&err);
    KT_EXPECT_INT(snapshots_count(data), 0);
    /* A truncated blob fails too. */
    KT_REQUIRE(truncate(blob, 40) == 0);
    l = (bld_layer){.blob_path = blob};
    KT_EXPECT(bld_snapshot_ensure(chain, data, &l, 1, &err) < 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(snapshots_count(data), 0);
    kt_rmrf(t);
    free(t), free(blob), free(data);
}

/* Lists every path below dir (for "nothing outside" checks). */
static char *listing(const char *dir)
{
    char *cmd = NULL, *out = NULL;
    if (asprintf(&cmd, "cd %s && find . -path ./data -prune -o -print | sort", dir) < 0)
        return NULL;
    FILE *p = popen(cmd, "r");
    kiln_buf b;
    kiln_buf_init(&b, 0);
    char line[1024];
    while (p && fgets(line, sizeof(line), p))
        kiln_buf_puts(&b, line, NULL);
    if (p)
        pclose(p);
    kiln_buf_append(&b, "", 0, NULL);
    out = kiln_buf_steal(&b, NULL);
    free(cmd);
    return out;
}

/* must_fail: 1 refused (KILN_EINVAL), 0 accepted and contained, -1 either. */
static void hostile_case(const char *t, const fx_entry *e, size_t n, int must_fail,
                         const char *inside_expect)
{
    char *blob = path2(t, "evil.tar"), *data = path2(t, "data");
    char rootmark[128];
    snprintf(rootmark, sizeof(rootmark), "/kiln-sbx-escape-%d", (int)getpid());
    char *before = listing(t);
    KT_REQUIRE(fx_layer(blob, e, n, FX_TAR, NULL, NULL) == 0);
    char *before2 = listing(t); /* includes the blob */
    bld_layer l = {.blob_path = blob};
    char chain[80];
    kiln_error *err = NULL;
    int r = bld_snapshot_ensure(chain, data, &l, 1, &err);
    if (must_fail == 1)
        KT_EXPECT_INT(r, KILN_EINVAL);
    if (r < 0)
        KT_EXPECT_INT(snapshots_count(data), 0);
    if (must_fail == 0)
        KT_EXPECT_INT(r, 0);
    if (r < 0 && must_fail == 0)
        fprintf(stderr, "  %s: %s\n", e[n - 1].path, err->msg);
    if (r == 0 && inside_expect) {
        char *in = NULL;
        KT_REQUIRE(asprintf(&in, "%s/snapshots/%s/fs/%s", data, chain + 7, inside_expect) > 0);
        KT_EXPECT(kt_exists(in));
        free(in);
    }
    kiln_error_free(&err);
    /* Nothing outside the data dir changed, and nothing at the host root. */
    char *after = listing(t);
    KT_EXPECT_STR(after, before2);
    KT_EXPECT(!kt_exists(rootmark));
    unlink(rootmark);
    free(before), free(before2), free(after);
    unlink(blob);
    kt_rmrf(data);
    free(blob), free(data);
}

KT_TEST(hostile_layers_rejected_or_contained)
{
    char *t = kt_tmpdir("sbx");
    char *victim = path2(t, "victim");
    KT_REQUIRE(kt_write_file_mode(victim, "precious\n", 0644) == 0);
    char abs[512], rootmark[128], rootmark_rel[128];
    snprintf(abs, sizeof(abs), "%s/abs-escape", t);
    snprintf(rootmark, sizeof(rootmark), "/kiln-sbx-escape-%d", (int)getpid());
    snprintf(rootmark_rel, sizeof(rootmark_rel), "up/kiln-sbx-escape-%d", (int)getpid());
    const char *dotdot[] = {"../escape", "a/../../escape", "./../escape"};
    for (size_t i = 0; i < sizeof(dotdot) / sizeof(dotdot[0]); i++) {
        fx_entry e[] = {{'d', "a", 0, 0, 0, 0, 0}, {'f', dotdot[i], "x", 0, 0, 0, 0}};
        hostile_case(t, e, 2, 1, NULL);
    }
    /* An absolute name is taken relative to the layer root (as Docker does):
     * it lands inside the snapshot, never at the host path it names. */
    fx_entry absent[] = {{'f', abs, "x", 0, 0, 0, 0}};
    hostile_case(t, absent, 1, 0, abs + 1);
    KT_EXPECT(!kt_exists(abs));
    fx_entry absup[] = {{'f', "/../../../kiln-abs-up", "x", 0, 0, 0, 0}};
    hostile_case(t, absup, 1, 0, "kiln-abs-up");
    KT_EXPECT(!kt_exists("/kiln-abs-up"));
    /* Symlink to / then a file below it: lands inside the snapshot. */
    fx_entry viaroot[] = {{'l', "up", "/", 0, 0, 0, 0}, {'f', rootmark_rel, "x", 0, 0, 0, 0}};
    hostile_case(t, viaroot, 2, 0, rootmark + 1);
    /* Symlink to the host temp dir, then a file through it: contained or refused. */
    fx_entry viatmp[] = {{'l', "tmpl", t, 0, 0, 0, 0}, {'f', "tmpl/victim", "pwned", 0, 0, 0, 0}};
    hostile_case(t, viatmp, 2, -1, NULL);
    /* Symlink then a file of the same name: the link is replaced, not followed. */
    char vabs[512];
    snprintf(vabs, sizeof(vabs), "%s/victim", t);
    fx_entry overlink[] = {{'l', "v", vabs, 0, 0, 0, 0}, {'f', "v", "pwned", 0, 0, 0, 0}};
    hostile_case(t, overlink, 2, 0, "v");
    /* Hard links to host files. */
    fx_entry hl1[] = {{'h', "h", vabs + 1, 0, 0, 0, 0}};
    hostile_case(t, hl1, 1, 1, NULL);
    fx_entry hl2[] = {{'h', "h", "../../../../../../etc/passwd", 0, 0, 0, 0}};
    hostile_case(t, hl2, 1, 1, NULL);
    fx_entry hl3[] = {{'h', "h", "/etc/passwd", 0, 0, 0, 0}};
    hostile_case(t, hl3, 1, 1, NULL);
    fx_entry hl4[] = {{'l', "lnk", "/etc", 0, 0, 0, 0}, {'h', "h", "lnk/passwd", 0, 0, 0, 0}};
    hostile_case(t, hl4, 2, 1, NULL);
    /* Whiteouts naming paths outside the tree. */
    const char *wh[] = {"../.wh.victim", ".wh..", ".wh...", "a/../../.wh.victim"};
    for (size_t i = 0; i < sizeof(wh) / sizeof(wh[0]); i++) {
        fx_entry e[] = {{'f', wh[i], "", 0, 0, 0, 0}};
        hostile_case(t, e, 1, 1, NULL);
    }
    char *v = kt_read_file(victim, NULL);
    KT_EXPECT_STR(v, "precious\n");
    free(v);
    KT_EXPECT(!kt_exists("/escape"));
    kt_rmrf(t);
    free(t), free(victim);
}

KT_TEST(hostile_layers_without_openat2)
{
    sbx_force_walk = true;
    char *t = kt_tmpdir("sbx");
    char rootmark_rel[128], rootmark[128];
    snprintf(rootmark, sizeof(rootmark), "/kiln-sbx-escape-%d", (int)getpid());
    snprintf(rootmark_rel, sizeof(rootmark_rel), "up/x/../kiln-sbx-escape-%d", (int)getpid());
    fx_entry viaroot[] = {{'l', "up", "/", 0, 0, 0, 0},
                          {'l', "up2", "../../../..", 0, 0, 0, 0},
                          {'f', rootmark_rel + 0, "x", 0, 0, 0, 0}};
    /* "up/x/.." is "up" (lexically, as Docker cleans names): through the
     * link to "/", which resolves to the snapshot root. */
    hostile_case(t, viaroot, 3, 0, rootmark + 1);
    fx_entry viaroot2[] = {{'l', "up", "../../../..", 0, 0, 0, 0},
                           {'d', "d", 0, 0, 0, 0, 0},
                           {'l', "d/rel", "../up/tmp", 0, 0, 0, 0},
                           {'d', "tmp", 0, 0, 0, 0, 0},
                           {'f', "d/rel/kiln-walk", "x", 0, 0, 0, 0}};
    hostile_case(t, viaroot2, 5, 0, "tmp/kiln-walk");
    KT_EXPECT(!kt_exists("/tmp/kiln-walk"));
    fx_entry e[] = {{'f', "../escape", "x", 0, 0, 0, 0}};
    hostile_case(t, e, 1, 1, NULL);
    sbx_force_walk = false;
    kt_rmrf(t);
    free(t);
}

/* ---- whiteouts: three layers, compared with umoci ---------------------- */

static const fx_entry L1[] = {
    {'d', "a", 0, 0755, 0, 0, 0},
    {'f', "a/x", "x1", 0, 0, 0, 0},
    {'f', "a/y", "y1", 0600, 5, 6, 0},
    {'d', "b", 0, 0700, 0, 0, 0},
    {'f', "b/z", "z1", 0, 0, 0, 0},
    {'f', "f", "f1", 0, 0, 0, 0},
    {'f', "g", "g1", 0, 0, 0, 0},
    {'d', "c", 0, 0, 0, 0, 0},
    {'f', "c/keep", "k", 0, 0, 0, 0},
    {'l', "s", "a/x", 0, 0, 0, 0},
    {'h', "hl", "a/y", 0, 0, 0, 0},
    {'d', "deep/er/est", 0, 0750, 7, 7, 0},
    {'f', "deep/er/est/file", "d", 0, 0, 0, 0},
    {'d', "e", 0, 0, 0, 0, 0},
    {'f', "e/old", "o", 0, 0, 0, 0},
};
static const fx_entry L2[] = {
    {'f', ".wh.f", "", 0, 0, 0, 0},
    {'f', "a/.wh.x", "", 0, 0, 0, 0},
    {'d', "b", 0, 0711, 0, 0, 0},
    {'f', "b/.wh..wh..opq", "", 0, 0, 0, 0},
    {'f', "b/new", "n2", 0, 0, 0, 0},
    {'f', "g", "g2", 0, 0, 0, 0},
    {'f', ".wh.c", "", 0, 0, 0, 0},
    {'f', "deep/er/est/new", "n", 0, 0, 0, 0},
    /* deleted and re-created in the same layer: opaque */
    {'f', ".wh.e", "", 0, 0, 0, 0},
    {'d', "e", 0, 0700, 0, 0, 0},
    {'f', "e/new", "n", 0, 0, 0, 0},
};
static const fx_entry L3[] = {
    {'f', "f", "f3", 0, 0, 0, 0},
    {'d', "c", 0, 0, 0, 0, 0},
    {'f', "c/fresh", "c3", 0, 0, 0, 0},
    {'d', "a", 0, 0, 0, 0, 0},
    {'f', "a/w", "w3", 0, 0, 0, 0},
    {'f', "a/.wh..wh..opq", "", 0, 0, 0, 0},
    {'f', ".wh.g", "", 0, 0, 0, 0},
    {'d', "newdir", 0, 0, 0, 0, 0},
    {'f', "newdir/.wh.ghost", "", 0, 0, 0, 0},
};

static int run_cmd(const char *cmd)
{
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static char *probe_tree(const char *dir)
{
    char *cmd = NULL, *out = NULL;
    if (asprintf(&cmd, "%s tree %s", fx_probe(), dir) < 0)
        return NULL;
    FILE *p = popen(cmd, "r");
    kiln_buf b;
    kiln_buf_init(&b, 0);
    char line[2048];
    while (p && fgets(line, sizeof(line), p))
        kiln_buf_puts(&b, line, NULL);
    if (p)
        pclose(p);
    kiln_buf_append(&b, "", 0, NULL);
    out = kiln_buf_steal(&b, NULL);
    free(cmd);
    return out;
}

static int write_blob(const char *layout, const char *content, char *digest)
{
    kiln_sha256_bytes(content, strlen(content), digest);
    char *p = NULL;
    if (asprintf(&p, "%s/blobs/sha256/%s", layout, digest + 7) < 0)
        return -1;
    int r = kt_write_file_mode(p, content, 0644);
    free(p);
    return r;
}

/* The same three layers as an OCI layout for umoci. */
static int oci_layout(const char *layout, char blobs[3][256], char digests[3][80],
                      char diffs[3][80])
{
    char *cmd = NULL;
    if (asprintf(&cmd, "mkdir -p %s/blobs/sha256", layout) < 0 || run_cmd(cmd) != 0)
        return -1;
    free(cmd);
    char path[512];
    snprintf(path, sizeof(path), "%s/oci-layout", layout);
    kt_write_file_mode(path, "{\"imageLayoutVersion\":\"1.0.0\"}", 0644);
    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (stat(blobs[i], &st) < 0)
            return -1;
        snprintf(path, sizeof(path), "%s/blobs/sha256/%s", layout, digests[i] + 7);
        if (asprintf(&cmd, "cp %s %s", blobs[i], path) < 0 || run_cmd(cmd) != 0)
            return -1;
        free(cmd);
    }
    char config[1024], cfgd[80], manifest[2048], mand[80], index[1024];
    snprintf(config, sizeof(config),
             "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":"
             "\"layers\",\"diff_ids\":[\"%s\",\"%s\",\"%s\"]}}",
             diffs[0], diffs[1], diffs[2]);
    write_blob(layout, config, cfgd);
    int n = snprintf(
        manifest, sizeof(manifest),
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
        "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
        "\"digest\":\"%s\",\"size\":%zu},\"layers\":[",
        cfgd, strlen(config));
    for (int i = 0; i < 3; i++) {
        struct stat st;
        stat(blobs[i], &st);
        n += snprintf(manifest + n, sizeof(manifest) - (size_t)n,
                      "%s{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
                      "\"digest\":\"%s\",\"size\":%lld}",
                      i ? "," : "", digests[i], (long long)st.st_size);
    }
    snprintf(manifest + n, sizeof(manifest) - (size_t)n, "]}");
    write_blob(layout, manifest, mand);
    snprintf(index, sizeof(index),
             "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image."
             "manifest.v1+json\",\"digest\":\"%s\",\"size\":%zu,\"annotations\":{\"org."
             "opencontainers.image.ref.name\":\"t\"}}]}",
             mand, strlen(manifest));
    snprintf(path, sizeof(path), "%s/index.json", layout);
    return kt_write_file_mode(path, index, 0644);
}

/* The stack as overlay shows it: mounted read-only in a private mount
 * namespace of a child, listed by the probe. */
static char *overlay_tree(const char *const *dirs, size_t n, const char *mnt)
{
    char *opts = NULL, *out = NULL;
    kiln_buf b;
    kiln_buf_init(&b, 0);
    kiln_buf_puts(&b, "lowerdir=", NULL);
    for (size_t i = n; i-- > 0;)
        kiln_buf_printf(&b, NULL, "%s%s", i == n - 1 ? "" : ":", dirs[i]);
    opts = kiln_buf_steal(&b, NULL);
    char *file = path2(mnt, "../ovl-tree.txt");
    mkdir(mnt, 0755);
    pid_t pid = fork();
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("overlay", mnt, "overlay", MS_RDONLY, opts) < 0)
            _exit(3);
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        execl(fx_probe(), "kiln-probe", "tree", mnt, (char *)NULL);
        _exit(4);
    }
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        out = kt_read_file(file, NULL);
    free(file);
    free(opts);
    return out;
}

KT_TEST(whiteouts_match_umoci)
{
    char *t = kt_tmpdir("sbx"), *data = path2(t, "data");
    char blobs[3][256], digests[3][80], diffs[3][80];
    const fx_entry *L[3] = {L1, L2, L3};
    size_t nL[3] = {KILN_ARRAY_SIZE(L1), KILN_ARRAY_SIZE(L2), KILN_ARRAY_SIZE(L3)};
    bld_layer layers[3];
    for (int i = 0; i < 3; i++) {
        snprintf(blobs[i], sizeof(blobs[i]), "%s/l%d.tgz", t, i);
        KT_REQUIRE(fx_layer(blobs[i], L[i], nL[i], FX_GZIP, digests[i], diffs[i]) == 0);
        layers[i] = (bld_layer){blobs[i], digests[i], BLD_LAYER_GZIP, diffs[i]};
    }
    char chain[80];
    kiln_error *err = NULL;
    int r = bld_snapshot_ensure(chain, data, layers, 3, &err);
    KT_EXPECT_INT(r, 0);
    if (r < 0)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    bld_snapshot_stack *s = NULL;
    KT_REQUIRE(bld_snapshot_acquire(&s, data, chain, NULL) == 0);
    KT_EXPECT_INT(bld_snapshot_stack_len(s), 3);
    const char *const *dirs = bld_snapshot_stack_dirs(s);

    /* Overlay form in the snapshot dirs themselves. */
    char *p = path2(dirs[1], "f");
    struct stat st;
    KT_EXPECT(lstat(p, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == 0);
    free(p);
    char v[4] = "";
    p = path2(dirs[1], "b");
    KT_EXPECT(lgetxattr(p, "trusted.overlay.opaque", v, sizeof(v)) == 1 && v[0] == 'y');
    free(p);
    p = path2(dirs[2], "a/w"); /* the opaque marker came after a/w: a/w stays */
    KT_EXPECT(kt_exists(p));
    free(p);

    /* Our stack through a real overlay mount, and as the copy fallback
     * merges it, against umoci's unpack of the same image. */
    char *layout = path2(t, "layout"), *bundle = path2(t, "bundle"), *merged = path2(t, "merged"),
         *mnt = path2(t, "mnt");
    KT_REQUIRE(oci_layout(layout, blobs, digests, diffs) == 0);
    char *cmd = NULL;
    KT_REQUIRE(asprintf(&cmd, "umoci unpack --image %s:t %s >/dev/null 2>&1", layout, bundle) > 0);
    int ur = run_cmd(cmd);
    free(cmd);
    if (ur != 0) {
        fprintf(stderr, "  umoci unpack failed (%d)\n", ur);
        KT_FAIL("umoci");
    } else {
        char *rootfs = path2(bundle, "rootfs");
        char *want = probe_tree(rootfs);
        char *ovl = overlay_tree(dirs, 3, mnt);
        KT_EXPECT_INT(bld_layers_merge(merged, dirs, 3, NULL), 0);
        char *copy = probe_tree(merged);
        KT_EXPECT(want && strstr(want, "f 100644") && strstr(want, "a/w") && !strstr(want, "a/y") &&
                  strstr(want, "e/new") && !strstr(want, "e/old"));
        KT_EXPECT_STR(ovl, want);
        KT_EXPECT_STR(copy, want);
        if (ovl && want && strcmp(ovl, want))
            fprintf(stderr, "--- umoci\n%s--- overlay\n%s", want, ovl);
        free(rootfs), free(want), free(ovl), free(copy);
    }
    bld_snapshot_release(s);
    kt_rmrf(t);
    free(t), free(data), free(layout), free(bundle), free(merged), free(mnt);
}

KT_TEST(use_counting_and_prune)
{
    char *t = kt_tmpdir("sbx"), *data = path2(t, "data");
    char b0[256], b1[256], chain[80];
    snprintf(b0, sizeof(b0), "%s/0.tar", t);
    snprintf(b1, sizeof(b1), "%s/1.tar", t);
    KT_REQUIRE(fx_layer(b0, L1, KILN_ARRAY_SIZE(L1), FX_TAR, NULL, NULL) == 0);
    KT_REQUIRE(fx_layer(b1, L2, KILN_ARRAY_SIZE(L2), FX_TAR, NULL, NULL) == 0);
    bld_layer ls[2] = {{.blob_path = b0}, {.blob_path = b1}};
    KT_REQUIRE(bld_snapshot_ensure(chain, data, ls, 2, NULL) == 0);
    bld_snapshot_stack *s = NULL;
    KT_REQUIRE(bld_snapshot_acquire(&s, data, chain, NULL) == 0);
    /* Debris: an interrupted unpack and a snapshot dir without its marker. */
    char *tmp = path2(data, "snapshots/tmp-crashed"), *inc = NULL;
    KT_REQUIRE(asprintf(&inc, "%s/snapshots/%064d", data, 0) > 0);
    mkdir(tmp, 0755);
    mkdir(inc, 0755);
    struct timespec old[2] = {{1000, 0}, {1000, 0}};
    utimensat(AT_FDCWD, tmp, old, 0);
    size_t removed = 99;
    KT_EXPECT_INT(bld_snapshot_prune(data, 0, &removed, NULL), 0);
    KT_EXPECT_INT(removed, 1); /* the incomplete one; both held ones stay */
    KT_EXPECT(!kt_exists(tmp) && !kt_exists(inc));
    KT_EXPECT_INT(snapshots_count(data), 2);
    /* Held by another process too: still in use after our release. */
    int pfd[2];
    KT_REQUIRE(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        bld_snapshot_stack *s2 = NULL;
        char c = bld_snapshot_acquire(&s2, data, chain, NULL) == 0 ? 'y' : 'n';
        (void)!write(pfd[1], &c, 1);
        pause();
        _exit(0);
    }
    char c = 0;
    KT_EXPECT(read(pfd[0], &c, 1) == 1 && c == 'y');
    bld_snapshot_release(s);
    KT_EXPECT_INT(bld_snapshot_prune(data, 0, &removed, NULL), 0);
    KT_EXPECT_INT(removed, 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    KT_EXPECT_INT(bld_snapshot_prune(data, 0, &removed, NULL), 0);
    KT_EXPECT_INT(removed, 2);
    KT_EXPECT_INT(snapshots_count(data), 0);
    KT_EXPECT_INT(bld_snapshot_acquire(&s, data, chain, NULL), KILN_ENOENT);
    kt_rmrf(t);
    close(pfd[0]), close(pfd[1]);
    free(t), free(data), free(tmp), free(inc);
}

KT_TEST(incomplete_snapshot_is_discarded_not_reused)
{
    char *t = kt_tmpdir("sbx"), *blob = path2(t, "l.tar"), *data = path2(t, "data");
    char digest[80], diff[80], chain[80];
    KT_REQUIRE(fx_layer(blob, L1, KILN_ARRAY_SIZE(L1), FX_TAR, digest, diff) == 0);
    /* What a crash between mkdir and the marker could look like. */
    char *junk = NULL;
    KT_REQUIRE(asprintf(&junk, "%s/snapshots/%s/fs/junk", data, diff + 7) > 0);
    KT_REQUIRE(kiln_mkdir_p(junk, 0755, NULL) == 0);
    bld_layer l = {.blob_path = blob, .digest = digest, .diff_id = diff};
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_snapshot_ensure(chain, data, &l, 1, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT(!kt_exists(junk));
    char *ax = NULL;
    KT_REQUIRE(asprintf(&ax, "%s/snapshots/%s/fs/a/x", data, diff + 7) > 0);
    KT_EXPECT(kt_exists(ax));
    kt_rmrf(t);
    free(t), free(blob), free(data), free(junk), free(ax);
}

KT_TEST(concurrent_ensure_from_several_processes)
{
    char *t = kt_tmpdir("sbx"), *blob = path2(t, "l.tgz"), *data = path2(t, "data");
    char digest[80], diff[80];
    KT_REQUIRE(fx_layer(blob, L1, KILN_ARRAY_SIZE(L1), FX_GZIP, digest, diff) == 0);
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            char chain[80];
            bld_layer l = {.blob_path = blob, .digest = digest};
            _exit(bld_snapshot_ensure(chain, data, &l, 1, NULL) == 0 && !strcmp(chain, diff) ? 0
                                                                                             : 1);
        }
    }
    for (int i = 0; i < 4; i++) {
        int st;
        KT_REQUIRE(waitpid(kids[i], &st, 0) == kids[i]);
        KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    KT_EXPECT_INT(snapshots_count(data), 1); /* one snapshot, no temp dirs */
    kt_rmrf(t);
    free(t), free(blob), free(data);
}

KT_TEST(multi_member_gzip_and_diff_id)
{
    char *t = kt_tmpdir("sbx"), *tar = path2(t, "l.tar"), *blob = path2(t, "l.tgz"),
         *data = path2(t, "data");
    char diff[80], chain[80];
    KT_REQUIRE(fx_layer(tar, L1, KILN_ARRAY_SIZE(L1), FX_TAR, NULL, diff) == 0);
    /* Two gzip members splitting the tar in the middle of an entry. */
    char *cmd = NULL;
    KT_REQUIRE(asprintf(&cmd, "(head -c 1500 %s | gzip -c; tail -c +1501 %s | gzip -c) > %s", tar,
                        tar, blob) > 0);
    KT_REQUIRE(run_cmd(cmd) == 0);
    bld_layer l = {.blob_path = blob, .media = BLD_LAYER_GZIP};
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_snapshot_ensure(chain, data, &l, 1, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_STR(chain, diff);
    kt_rmrf(t);
    free(cmd), free(t), free(tar), free(blob), free(data);
}

KT_TEST(cleanup_stale_removes_interrupted_unpacks_only)
{
    char *t = kt_tmpdir("sbx"), *data = path2(t, "data");
    char *dead = path2(data, "snapshots/tmp-dead"), *live = path2(data, "snapshots/tmp-live");
    KT_REQUIRE(kiln_mkdir_p(dead, 0755, NULL) == 0 && kiln_mkdir_p(live, 0755, NULL) == 0);
    char *dl = path2(dead, ".lock"), *ll = path2(live, ".lock");
    kt_write_file_mode(dl, "", 0600);
    kt_write_file_mode(ll, "", 0600);
    int pfd[2];
    KT_REQUIRE(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) { /* an unpack in progress in another builder */
        int fd = open(ll, O_RDWR);
        char c = flock(fd, LOCK_EX) == 0 ? 'y' : 'n';
        (void)!write(pfd[1], &c, 1);
        pause();
        _exit(0);
    }
    char c = 0;
    KT_EXPECT(read(pfd[0], &c, 1) == 1 && c == 'y');
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_sandbox_cleanup_stale(data, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT(!kt_exists(dead));
    KT_EXPECT(kt_exists(live));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    KT_EXPECT_INT(bld_sandbox_cleanup_stale(data, NULL), 0);
    KT_EXPECT(!kt_exists(live));
    close(pfd[0]), close(pfd[1]);
    kt_rmrf(t);
    free(t), free(data), free(dead), free(live), free(dl), free(ll);
}

/* Layers written by other tools: the root as "/" (umoci insert), absolute
 * names, "./" names, an absolute hard link target; all in place. */
KT_TEST(absolute_and_dot_names_unpack_in_place)
{
    char *t = kt_tmpdir("sbx"), *data = path2(t, "data"), *blob = path2(t, "abs.tar");
    fx_entry e[] = {
        {'d', "/", 0, 0751, 0, 0, 0},
        {'d', "/etc", 0, 0755, 0, 0, 0},
        {'f', "/etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0644, 0, 0, 0},
        {'h', "/etc/passwd-hard", "/etc/passwd", 0, 0, 0, 0},
        {'f', "/../../etc/climbed", "c\n", 0600, 0, 0, 0},
        {'d', "./usr/", 0, 0755, 0, 0, 0},
        {'f', "./usr/dot", "d\n", 0644, 0, 0, 0},
        {'f', "usr/../usr/lexical", "l\n", 0644, 0, 0, 0},
    };
    KT_REQUIRE(fx_layer(blob, e, KILN_ARRAY_SIZE(e), FX_GZIP, NULL, NULL) == 0);
    bld_layer l = {.blob_path = blob};
    char chain[80];
    kiln_error *err = NULL;
    int r = bld_snapshot_ensure(chain, data, &l, 1, &err);
    if (r < 0)
        fprintf(stderr, "  unpack: %s\n", err->msg);
    KT_REQUIRE(r == 0);
    char *fs = NULL;
    KT_REQUIRE(asprintf(&fs, "%s/snapshots/%s/fs", data, chain + 7) > 0);
    char *passwd = path2(fs, "etc/passwd"), *hard = path2(fs, "etc/passwd-hard");
    char *climbed = path2(fs, "etc/climbed"), *dot = path2(fs, "usr/dot");
    char *lexical = path2(fs, "usr/lexical");
    char *v = kt_read_file(passwd, NULL);
    KT_EXPECT_STR(v, "root:x:0:0::/root:/bin/sh\n");
    free(v);
    struct stat a, b;
    KT_EXPECT(stat(passwd, &a) == 0 && stat(hard, &b) == 0 && a.st_ino == b.st_ino);
    KT_EXPECT(stat(climbed, &a) == 0 && (a.st_mode & 07777) == 0600);
    KT_EXPECT(kt_exists(dot) && kt_exists(lexical));
    KT_EXPECT(stat(fs, &a) == 0 && (a.st_mode & 07777) == 0751); /* the "/" entry's mode */
    KT_EXPECT(!kt_exists("/etc/climbed"));
    kiln_error_free(&err);
    kt_rmrf(t);
    free(fs), free(passwd), free(hard), free(climbed), free(dot), free(lexical);
    free(t), free(data), free(blob);
}

/* A tar that stops right after its last file's data (no padding, no
 * end-of-archive blocks; umoci 0.4's insert writes these) is read as Go's
 * archive/tar reads it; one that stops inside the data is refused. */
KT_TEST(tar_without_final_padding)
{
    char *t = kt_tmpdir("sbx"), *blob = path2(t, "short.tar");
    fx_entry e[] = {{'d', "d", 0, 0, 0, 0, 0}, {'f', "d/f", "hello", 0644, 0, 0, 0}};
    static const struct {
        off_t len;
        int rc;
    } cases[] = {{3 * 512 + 5, 0}, {3 * 512 + 3, KILN_EINVAL}, {3 * 512, KILN_EINVAL}};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char *data = path2(t, "data");
        KT_REQUIRE(fx_layer(blob, e, KILN_ARRAY_SIZE(e), FX_TAR, NULL, NULL) == 0);
        struct stat st;
        KT_REQUIRE(stat(blob, &st) == 0 && st.st_size > cases[i].len);
        /* "d/" header, "d/f" header, its data: check the layout first */
        char *head = kt_read_file(blob, NULL);
        KT_REQUIRE(head != NULL);
        KT_EXPECT(memcmp(head + 1024, "hello", 5) == 0 || memcmp(head + 1536, "hello", 5) == 0);
        off_t len = memcmp(head + 1024, "hello", 5) == 0 ? cases[i].len - 512 : cases[i].len;
        free(head);
        KT_REQUIRE(truncate(blob, len) == 0);
        bld_layer l = {.blob_path = blob};
        char chain[80];
        kiln_error *err = NULL;
        int r = bld_snapshot_ensure(chain, data, &l, 1, &err);
        if (r != cases[i].rc)
            KT_FAIL("truncated at %lld: rc %d (%s), want %d", (long long)len, r,
                    err ? err->msg : "", cases[i].rc);
        if (r == 0) {
            char *f = NULL;
            KT_REQUIRE(asprintf(&f, "%s/snapshots/%s/fs/d/f", data, chain + 7) > 0);
            char *v = kt_read_file(f, NULL);
            KT_EXPECT_STR(v, "hello");
            free(v), free(f);
        }
        kiln_error_free(&err);
        kt_rmrf(data);
        free(data);
    }
    kt_rmrf(t);
    free(t), free(blob);
}

KT_TEST(hard_link_to_a_lower_layer_is_copied)
{
    char *t = kt_tmpdir("sbx"), *data = path2(t, "data");
    char b0[256], b1[256], chain[80];
    snprintf(b0, sizeof(b0), "%s/0.tar", t);
    snprintf(b1, sizeof(b1), "%s/1.tar", t);
    fx_entry top[] = {{'h', "hl2", "a/y", 0, 0, 0, 0}};
    KT_REQUIRE(fx_layer(b0, L1, KILN_ARRAY_SIZE(L1), FX_TAR, NULL, NULL) == 0);
    KT_REQUIRE(fx_layer(b1, top, 1, FX_TAR, NULL, NULL) == 0);
    bld_layer ls[2] = {{.blob_path = b0}, {.blob_path = b1}};
    KT_REQUIRE(bld_snapshot_ensure(chain, data, ls, 2, NULL) == 0);
    bld_snapshot_stack *s = NULL;
    KT_REQUIRE(bld_snapshot_acquire(&s, data, chain, NULL) == 0);
    const char *const *dirs = bld_snapshot_stack_dirs(s);
    char *low = path2(dirs[0], "a/y"), *up = path2(dirs[1], "hl2");
    struct stat a, b;
    KT_EXPECT(stat(low, &a) == 0 && stat(up, &b) == 0);
    KT_EXPECT(a.st_ino != b.st_ino && b.st_uid == 5 && (b.st_mode & 07777) == 0600);
    char *c = kt_read_file(up, NULL);
    KT_EXPECT_STR(c, "y1");
    free(c), free(low), free(up);
    bld_snapshot_release(s);
    kt_rmrf(t);
    free(t), free(data);
}

KT_TEST(prune_by_age)
{
    char *t = kt_tmpdir("sbx"), *data = path2(t, "data"), *blob = path2(t, "0.tar");
    char chain[80];
    KT_REQUIRE(fx_layer(blob, L1, KILN_ARRAY_SIZE(L1), FX_TAR, NULL, NULL) == 0);
    bld_layer l = {.blob_path = blob};
    KT_REQUIRE(bld_snapshot_ensure(chain, data, &l, 1, NULL) == 0);
    size_t removed = 99;
    KT_EXPECT_INT(bld_snapshot_prune(data, 3600, &removed, NULL), 0);
    KT_EXPECT_INT(removed, 0); /* younger than an hour */
    char *marker = NULL;
    KT_REQUIRE(asprintf(&marker, "%s/snapshots/%s/complete", data, chain + 7) > 0);
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    KT_REQUIRE(utimensat(AT_FDCWD, marker, old, 0) == 0);
    KT_EXPECT_INT(bld_snapshot_prune(data, 3600, &removed, NULL), 0);
    KT_EXPECT_INT(removed, 1);
    kt_rmrf(t);
    free(t), free(data), free(blob), free(marker);
}

KT_TEST(gnu_tar_layer_round_trip)
{
    /* GNU tar's own formats (long names, sparse files, hard links, fifos)
     * unpack to the same tree as the source. */
    char *t = kt_tmpdir("sbx"), *src = path2(t, "src"), *blob = path2(t, "gnu.tgz"),
         *data = path2(t, "data"), *cmd = NULL;
    KT_REQUIRE(asprintf(&cmd,
                        "set -e; mkdir -p %s/d/%0200d/%0100d && cd %s && "
                        "echo long > d/%0200d/%0100d/file && truncate -s 5M sparse && "
                        "echo tail >> sparse && echo x > a && ln a b && mkfifo fifo && "
                        "ln -s d/nowhere dangling && chmod 2750 d && chown 7:8 a && "
                        "touch -d @1234567890 a sparse && "
                        "tar --numeric-owner --sparse --format=gnu -czf %s .",
                        src, 0, 0, src, 0, 0, blob) > 0);
    KT_REQUIRE(run_cmd(cmd) == 0);
    bld_layer l = {.blob_path = blob};
    char chain[80];
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_snapshot_ensure(chain, data, &l, 1, &err), 0);
    kiln_error_free(&err);
    char *fs = NULL;
    KT_REQUIRE(asprintf(&fs, "%s/snapshots/%s/fs", data, chain + 7) > 0);
    char *want = probe_tree(src), *got = probe_tree(fs);
    KT_EXPECT(want && strstr(want, "sparse 100644") && strstr(want, "fifo 10644"));
    KT_EXPECT_STR(got, want);
    char *a = path2(fs, "a"), *b = path2(fs, "b");
    struct stat sa, sb;
    KT_EXPECT(stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_ino == sb.st_ino);
    free(a), free(b), free(want), free(got), free(fs), free(cmd);
    kt_rmrf(t);
    free(t), free(src), free(blob), free(data);
}
