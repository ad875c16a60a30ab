/* What outside tools see: skopeo and umoci read committed and imported images
 * straight from the store; overlay whiteouts delete base files; a commit
 * killed half way leaves a store they can still read.  Exits 77 (skip) when
 * skopeo or umoci is missing. */
#define KT_IMPLEMENTATION
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "psh_commit.h"
#include "psh_transfer.h"
#include "store_fixture.h"

static int commit_dirs(fx_env *e, const char *base, const char **dirs, size_t n, const char *tag,
                       psh_commit_result *res)
{
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    spec.platform.os = "linux";
    spec.platform.architecture = "amd64";
    spec.base = base;
    spec.layers = dirs;
    spec.n_layers = n;
    spec.tags = &tag;
    spec.n_tags = 1;
    static const char *cmd[] = {"/bin/sh"};
    spec.config.cmd = (psh_strv){cmd, 1, true};
    kiln_error *err = NULL;
    int r = psh_commit(e->s, &spec, res, &err);
    if (r < 0)
        fprintf(stderr, "commit: %s\n", err->msg);
    kiln_error_free(&err);
    return r;
}

/* A tree with a regular file, an executable, a symlink and a subdirectory. */
static const char *make_tree(fx_env *e, const char *name)
{
    static char p[4096];
    snprintf(p, sizeof(p), "%s/%s", e->dir, name);
    if (kt_sh("mkdir -p %s/etc %s/bin && echo hello > %s/hello.txt && printf '#!/bin/sh\\n' > "
              "%s/bin/tool && chmod 755 %s/bin/tool && ln -s ../hello.txt %s/etc/link",
              p, p, p, p, p, p) != 0)
        return NULL;
    return p;
}

KT_TEST(skopeo_and_umoci_read_committed_image)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *tree = make_tree(&e, "tree");
    KT_REQUIRE(tree != NULL);
    psh_commit_result res;
    KT_REQUIRE(commit_dirs(&e, NULL, &tree, 1, "app:1", &res) == 0);
    KT_REQUIRE(psh_store_tag(e.s, "app:1", "localhost:5000/team/app:2", NULL) == 0);
    const char *st = psh_store_path(e.s);

    /* skopeo splits oci:PATH:REF at the first ':' after PATH, so references
     * that contain ':' (a registry port) work as long as PATH has none. */
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:app:1 > %s/inspect.json", st, e.dir), 0);
    char path[4096];
    snprintf(path, sizeof(path), "%s/inspect.json", e.dir);
    char *out = kt_read_file(path, NULL);
    KT_EXPECT(out && strstr(out, res.manifest.digest) != NULL);
    KT_EXPECT(out && strstr(out, "\"Architecture\": \"amd64\"") != NULL);
    free(out);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:localhost:5000/team/app:2 >/dev/null", st), 0);
    KT_EXPECT_INT(kt_sh("skopeo copy -q oci:%s:app:1 dir:%s/copy", st, e.dir), 0);
    KT_EXPECT_INT(kt_sh("test -s %s/copy/manifest.json && test -s %s/copy/%s", e.dir, e.dir,
                        res.layers[0].blob.digest + 7),
                  0);

    /* umoci unpacks the same tree. */
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:app:1 %s/bundle >/dev/null 2>&1", st, e.dir), 0);
    KT_EXPECT_INT(kt_sh("cd %s/bundle/rootfs && grep -qx hello hello.txt && test -x bin/tool && "
                        "[ \"$(readlink etc/link)\" = ../hello.txt ]",
                        e.dir),
                  0);
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:localhost:5000/team/app:2 %s/bundle2 "
                        ">/dev/null 2>&1",
                        st, e.dir),
                  0);
    psh_commit_result_dispose(&res);
    fx_env_close(&e);
}

/* Every file kind survives commit + umoci unpack: content, mode, owner, link
 * targets, link counts, devices, xattrs including security.capability. */
KT_TEST(umoci_reproduces_every_file_kind)
{
    if (geteuid() != 0) {
        fprintf(stderr, "  (skipped: devices and owners need root)\n");
        return;
    }
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char t[4096];
    snprintf(t, sizeof(t), "%s/tree", e.dir);
    KT_REQUIRE(
        kt_sh("set -e; R=%s; mkdir -p $R/dir/sub; printf data > $R/reg; : > $R/empty; "
              "truncate -s 5M $R/sparse; "
              "printf x | dd of=$R/sparse bs=1 seek=4000000 conv=notrunc status=none; "
              "cp $R/reg $R/setuid; chmod 4755 $R/setuid; "
              "ln -s /etc/passwd $R/abs_link; ln -s ../reg $R/dir/rel_link; "
              "ln $R/reg $R/hard1; mknod $R/cdev c 1 3; mknod $R/bdev b 7 0; "
              "mkfifo $R/fifo; chown 1234:5678 $R/dir/sub; chown -h 42:43 $R/dir/rel_link; "
              "chown 7:8 $R/empty; touch \"$R/we ird name \xc3\xbc\" $R/-dash $R/dir/.hidden; "
              "python3 -c \"import os,sys; r=sys.argv[1]; "
              "os.setxattr(r+'/reg','user.kiln',b'v'); "
              "os.setxattr(r+'/setuid','security.capability',"
              "bytes.fromhex('0100000200040000000000000000000000000000'))\" $R",
              t) == 0);
    const char *tp = t;
    psh_commit_result res;
    KT_REQUIRE(commit_dirs(&e, NULL, &tp, 1, "full:1", &res) == 0);
    psh_commit_result_dispose(&res);
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:full:1 %s/bundle >/dev/null 2>&1",
                        psh_store_path(e.s), e.dir),
                  0);
    KT_EXPECT_INT(kt_sh("python3 %s/tree_compare.py %s %s/bundle/rootfs", KT_STORE_SRC, t, e.dir),
                  0);
    fx_env_close(&e);
}

KT_TEST(overlay_whiteouts_remove_base_files)
{
    if (geteuid() != 0) {
        fprintf(stderr, "  (skipped: whiteout devices need root)\n");
        return;
    }
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char base[4096], top[4096];
    snprintf(base, sizeof(base), "%s/base", e.dir);
    snprintf(top, sizeof(top), "%s/top", e.dir);
    KT_REQUIRE(kt_sh("mkdir -p %s/d %s/keep && echo a > %s/gone && echo x > %s/d/x && "
                     "echo k > %s/keep/k && mkdir -p %s/d && echo z > %s/d/z",
                     base, base, base, base, base, top, top) == 0);
    char wh[4200];
    snprintf(wh, sizeof(wh), "%s/gone", top);
    KT_REQUIRE(mknod(wh, S_IFCHR | 0600, makedev(0, 0)) == 0);
    snprintf(wh, sizeof(wh), "%s/d", top);
    KT_REQUIRE(setxattr(wh, "trusted.overlay.opaque", "y", 1, 0) == 0);
    const char *bp = base, *tp = top;
    psh_commit_result b, t;
    KT_REQUIRE(commit_dirs(&e, NULL, &bp, 1, "base:1", &b) == 0);
    KT_REQUIRE(commit_dirs(&e, b.manifest.digest, &tp, 1, "top:1", &t) == 0);
    KT_EXPECT_INT(t.n_layers, 2);
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:top:1 %s/bundle >/dev/null 2>&1",
                        psh_store_path(e.s), e.dir),
                  0);
    KT_EXPECT_INT(kt_sh("cd %s/bundle/rootfs && test ! -e gone && test ! -e d/x && "
                        "grep -qx z d/z && grep -qx k keep/k",
                        e.dir),
                  0);
    psh_commit_result_dispose(&b);
    psh_commit_result_dispose(&t);
    fx_env_close(&e);
}

KT_TEST(commit_killed_midway_leaves_readable_store)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *tree = make_tree(&e, "small");
    KT_REQUIRE(tree != NULL);
    psh_commit_result res;
    KT_REQUIRE(commit_dirs(&e, NULL, &tree, 1, "app:1", &res) == 0);
    psh_commit_result_dispose(&res);
    char big[4096];
    snprintf(big, sizeof(big), "%s/big", e.dir);
    KT_REQUIRE(kt_sh("mkdir -p %s && head -c 200000000 /dev/urandom > %s/blob", big, big) == 0);

    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) {
        const char *d = big;
        psh_commit_result r2;
        _exit(commit_dirs(&e, NULL, &d, 1, "app:1", &r2) == 0 ? 0 : 1);
    }
    usleep(300000);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    KT_EXPECT(WIFSIGNALED(status)); /* killed while packing 200 MB */

    const char *st = psh_store_path(e.s);
    KT_EXPECT_INT(kt_sh("cd %s/blobs/sha256 && for f in *; do "
                        "[ \"$(sha256sum \"$f\" | cut -d' ' -f1)\" = \"$f\" ] || exit 1; done",
                        st),
                  0);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:app:1 >/dev/null", st), 0);
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:app:1 %s/b1 >/dev/null 2>&1", st, e.dir), 0);

    /* The retried commit succeeds and GC clears the dead writer's leftovers. */
    const char *d = big;
    KT_REQUIRE(commit_dirs(&e, NULL, &d, 1, "app:2", &res) == 0);
    psh_commit_result_dispose(&res);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:app:2 >/dev/null", st), 0);
    psh_gc_opts go;
    psh_gc_opts_init(&go);
    go.tmp_min_age = 0;
    psh_gc_result gr;
    KT_EXPECT_INT(psh_store_gc(e.s, &go, &gr, NULL), 0);
    char tmp[4096], pins[4096];
    snprintf(tmp, sizeof(tmp), "%s/.kiln/tmp", st);
    snprintf(pins, sizeof(pins), "%s/.kiln/pins", st);
    KT_EXPECT_INT(kt_count_dir(tmp), 0);
    KT_EXPECT_INT(kt_count_dir(pins), 0);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:app:2 >/dev/null", st), 0);
    fx_env_close(&e);
}

KT_TEST(imported_images_are_readable)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *tree = make_tree(&e, "rootfs");
    KT_REQUIRE(tree != NULL);
    const char *st = psh_store_path(e.s);
    char tgz[4096];
    snprintf(tgz, sizeof(tgz), "%s/rootfs.tar.gz", e.dir);
    KT_REQUIRE(kt_sh("tar -C %s -czf %s .", tree, tgz) == 0);

    psh_import_opts io;
    psh_import_opts_init(&io);
    io.platform.os = "linux";
    io.platform.architecture = "amd64";
    psh_descriptor d;
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_import(e.s, tree, "imp/dir:1", &io, &d, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_import(e.s, tgz, "imp/tgz:1", &io, &d, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    const char *refs[] = {"imp/dir:1", "imp/tgz:1"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(refs); i++) {
        KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:%s >/dev/null", st, refs[i]), 0);
        KT_EXPECT_INT(
            kt_sh("rm -rf %s/x && skopeo copy -q oci:%s:%s dir:%s/x", e.dir, st, refs[i], e.dir),
            0);
        KT_EXPECT_INT(kt_sh("rm -rf %s/bu && umoci unpack --image %s:%s %s/bu >/dev/null 2>&1 && "
                            "grep -qx hello %s/bu/rootfs/hello.txt",
                            e.dir, st, refs[i], e.dir, e.dir),
                      0);
    }

    /* Export as a layout and as an archive; both read back with skopeo, and the
     * layout imports back into a second store under a new name. */
    char dir[4096], tar[4096];
    snprintf(dir, sizeof(dir), "%s/exported", e.dir);
    snprintf(tar, sizeof(tar), "%s/exported.tar", e.dir);
    KT_EXPECT_INT(psh_store_export(e.s, "imp/tgz:1", PSH_EXPORT_OCI_DIR, dir, NULL, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_export(e.s, "imp/tgz:1", PSH_EXPORT_OCI_ARCHIVE, tar, NULL, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:imp/tgz:1 >/dev/null", dir), 0);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci-archive:%s:imp/tgz:1 >/dev/null", tar), 0);
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:imp/tgz:1 %s/bu3 >/dev/null 2>&1", dir, e.dir), 0);
    KT_EXPECT_INT(kt_count_dir(dir), 3); /* oci-layout, index.json, blobs */

    fx_env e2;
    KT_REQUIRE(fx_env_open(&e2) == 0);
    psh_import_opts_init(&io);
    io.layout_ref = "imp/tgz:1";
    KT_EXPECT_INT(psh_store_import(e2.s, dir, "copied:1", &io, &d, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s:copied:1 >/dev/null", psh_store_path(e2.s)), 0);
    fx_env_close(&e2);
    fx_env_close(&e);
}

int main(void)
{
    if (!kt_have("skopeo") || !kt_have("umoci")) {
        fprintf(stderr, "skopeo or umoci not installed: skipping\n");
        return 77;
    }
    return kt_run();
}
