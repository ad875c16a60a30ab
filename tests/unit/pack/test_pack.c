/* Layer packing as outside tools see it: gzip -t, gzip -dc | sha256sum ==
 * DiffID, Python's gzip/tarfile, GNU tar listings, zstd -dc; determinism
 * across thread counts, locales and mtimes under SOURCE_DATE_EPOCH; the tar
 * stream importer; errors for bad input; the pack cache. */
#include "kt.h"
#include "pack_test_util.h"
#include "cleanup.h"

#include <locale.h>

/* A tree of ~5 MiB (several pack blocks): text, random, empty, symlinks,
 * hardlinks, nested dirs, unusual names. */
static char *make_tree(void)
{
    char *root = kt_tmpdir("pack-test");
    if (root == NULL)
        return NULL;
    int rc = kt_sh(
        "set -e; cd '%s'; D=deep/$(printf 'x%%.0s' $(seq 1 60))/$(printf 'y%%.0s' $(seq 1 58));"
        "mkdir -p d/sub 'sp ace' 'ü' $D;"
        "seq 1 400000 > d/seq.txt; head -c 1500000 /dev/urandom > d/rand.bin;"
        ": > empty; printf 'hi\\n' > 'sp ace/f g'; printf u > 'ü/ñ';"
        "ln -s d/seq.txt rel-link; ln -s /etc/passwd abs-link; ln d/seq.txt hard;"
        "printf z > $D/leaf; printf a > a-b; printf b > d/sub/z;"
        "python3 -c \"import os; os.setxattr('d/seq.txt','user.k',b'v1')\"",
        root);
    if (rc != 0) {
        kt_rmrf_free(root);
        return NULL;
    }
    return root;
}

KT_TEST(gzip_blob_reads_everywhere_and_digests_match)
{
    char *root = make_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512];
    snprintf(blob, sizeof(blob), "%s/layer.tgz", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    psh_layer_info info;
    KT_REQUIRE(pack_to(&info, root, blob, &o, NULL) == 0);
    KT_EXPECT_STR(info.media_type, PSH_MEDIA_TYPE_TAR_GZIP);
    KT_EXPECT_INT(kt_sh("gzip -t '%s'", blob), 0);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "gzip -dc '%s'", blob);
    char *diff = digest_of(cmd);
    snprintf(cmd, sizeof(cmd), "cat '%s'", blob);
    char *dg = digest_of(cmd);
    KT_EXPECT_STR(diff, info.diff_id);
    KT_EXPECT_STR(dg, info.digest);
    free(diff);
    free(dg);
    struct stat st;
    KT_EXPECT(stat(blob, &st) == 0 && (uint64_t)st.st_size == info.size);
    /* one gzip member: the trailer's ISIZE is the whole tar */
    char *isize = kt_capture(true, "gzip -l '%s' | awk 'NR==2{print $2}'", blob);
    char want[32];
    snprintf(want, sizeof(want), "%llu", (unsigned long long)info.tar_size);
    KT_EXPECT_STR(isize, want);
    free(isize);
    /* Python's gzip + tarfile: same DiffID, same members, metadata */
    char *py = kt_capture(
        true,
        "python3 -c \"import gzip,hashlib,tarfile,sys\n"
        "d=gzip.open(sys.argv[1]).read(); print('sha256:'+hashlib.sha256(d).hexdigest())\n"
        "t=tarfile.open(sys.argv[1])\n"
        "m={x.name:x for x in t.getmembers()}\n"
        "print(m['hard'].islnk(), m['hard'].linkname, m['abs-link'].linkname, "
        "m['rel-link'].issym())\n"
        "print(m['d/seq.txt'].pax_headers.get('SCHILY.xattr.user.k'), m['d/seq.txt'].uname=='', "
        "m['ü/ñ'].size, len([n for n in m if len(n) > 100]))\" '%s'",
        blob);
    KT_REQUIRE(py != NULL);
    char expect[512];
    snprintf(expect, sizeof(expect), "%s\nTrue d/seq.txt /etc/passwd True\nv1 True 1 2",
             info.diff_id);
    KT_EXPECT_STR(py, expect);
    free(py);
    /* GNU tar: parents first, each directory sorted bytewise, no root entry */
    char *names = kt_capture(true, "tar --quoting-style=literal -tzf '%s' | tr '\\n' '|'", blob);
    KT_EXPECT_STR(names, "a-b|abs-link|d/|d/rand.bin|d/seq.txt|d/sub/|d/sub/z|deep/|deep/"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/|deep/"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/"
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy/|deep/"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/"
                         "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy/leaf|"
                         "empty|hard|rel-link|sp ace/|sp ace/f g|ü/|ü/ñ|");
    free(names);
    /* no atime/ctime or pid-dependent names in the PAX headers */
    KT_EXPECT_INT(
        kt_sh("gzip -dc '%s' | grep -a -q -e 'atime=' -e 'ctime=' -e 'PaxHeader\\.'", blob), 1);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

static void pack_digests(const char *root, const char *blob, psh_pack_opts *o, char *diff, char *dg)
{
    psh_layer_info info;
    diff[0] = dg[0] = '\0';
    if (pack_to(&info, root, blob, o, NULL) == 0) {
        strcpy(diff, info.diff_id);
        strcpy(dg, info.digest);
    }
}

KT_TEST(digests_do_not_depend_on_thread_count)
{
    char *root = make_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512];
    snprintf(blob, sizeof(blob), "%s/b", work);
    static const psh_compression comps[] = {PSH_COMP_GZIP, PSH_COMP_ZSTD};
    static const int threads[] = {1, 2, 3, 8};
    for (size_t c = 0; c < KILN_ARRAY_SIZE(comps); c++) {
        char d0[80], g0[80];
        for (size_t t = 0; t < KILN_ARRAY_SIZE(threads); t++) {
            psh_pack_opts o;
            psh_pack_opts_init(&o);
            o.comp = comps[c];
            o.threads = threads[t];
            char d[80], g[80];
            pack_digests(root, blob, &o, d, g);
            KT_EXPECT(d[0] != '\0');
            if (t == 0) {
                strcpy(d0, d);
                strcpy(g0, g);
            } else {
                KT_EXPECT_STR(d, d0);
                KT_EXPECT_STR(g, g0);
            }
        }
    }
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(source_date_epoch_makes_copies_with_other_mtimes_identical)
{
    char *root = make_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    KT_REQUIRE(kt_sh("cp -a '%s' '%s/copy' && find '%s/copy' -exec touch -h -d '2031-01-01' {} +",
                     root, work, work) == 0);
    char blob[512], copy[512];
    snprintf(blob, sizeof(blob), "%s/b", work);
    snprintf(copy, sizeof(copy), "%s/copy", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    o.source_date_epoch = 1700000000;
    char d1[80], g1[80], d2[80], g2[80];
    pack_digests(root, blob, &o, d1, g1);
    pack_digests(copy, blob, &o, d2, g2);
    KT_EXPECT(d1[0] != '\0');
    KT_EXPECT_STR(d1, d2);
    KT_EXPECT_STR(g1, g2);
    char *mt =
        kt_capture(true, "tar -tvzf '%s' --full-time | awk '{print $4\" \"$5}' | sort -u", blob);
    KT_EXPECT_STR(mt, "2023-11-14 22:13:20");
    free(mt);
    o.source_date_epoch = -1; /* without the epoch the mtimes show */
    pack_digests(copy, blob, &o, d2, g2);
    KT_EXPECT(strcmp(d1, d2) != 0);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(locale_does_not_change_the_tar)
{
    char *root = make_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512];
    snprintf(blob, sizeof(blob), "%s/b", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    char d1[80], g1[80], d2[80], g2[80];
    setlocale(LC_ALL, "C");
    pack_digests(root, blob, &o, d1, g1);
    KT_REQUIRE(setlocale(LC_ALL, "C.UTF-8") != NULL);
    pack_digests(root, blob, &o, d2, g2);
    setlocale(LC_ALL, "C");
    KT_EXPECT(d1[0] != '\0');
    KT_EXPECT_STR(d1, d2);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(zstd_and_uncompressed_blobs)
{
    char *root = make_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512], cmd[1024];
    snprintf(blob, sizeof(blob), "%s/b", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    psh_layer_info gz, zs, none;
    KT_REQUIRE(pack_to(&gz, root, blob, &o, NULL) == 0);
    o.comp = PSH_COMP_ZSTD;
    KT_REQUIRE(pack_to(&zs, root, blob, &o, NULL) == 0);
    KT_EXPECT_STR(zs.media_type, PSH_MEDIA_TYPE_TAR_ZSTD);
    KT_EXPECT_STR(zs.diff_id, gz.diff_id);
    if (kt_sh("command -v zstd >/dev/null") == 0) {
        KT_EXPECT_INT(kt_sh("zstd -q -t '%s'", blob), 0);
        snprintf(cmd, sizeof(cmd), "zstd -q -dc '%s'", blob);
        char *d = digest_of(cmd);
        KT_EXPECT_STR(d, zs.diff_id);
        free(d);
    }
    o.comp = PSH_COMP_NONE;
    KT_REQUIRE(pack_to(&none, root, blob, &o, NULL) == 0);
    KT_EXPECT_STR(none.media_type, PSH_MEDIA_TYPE_TAR);
    KT_EXPECT_STR(none.digest, none.diff_id);
    KT_EXPECT_STR(none.diff_id, gz.diff_id);
    KT_EXPECT_INT(none.size, none.tar_size);
    KT_EXPECT_INT(kt_sh("tar -tf '%s' >/dev/null", blob), 0);
    /* the importer path: the same tar streamed gives the same gzip blob */
    int in = open(blob, O_RDONLY | O_CLOEXEC);
    snprintf(cmd, sizeof(cmd), "%s/b2", work);
    int out = open(cmd, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    KT_REQUIRE(in >= 0 && out >= 0);
    psh_pack_opts_init(&o);
    psh_layer_info st;
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_pack_tar_stream(&st, in, out, &o, &err), 0);
    close(in);
    close(out);
    KT_EXPECT_STR(st.diff_id, gz.diff_id);
    KT_EXPECT_STR(st.digest, gz.digest);
    KT_EXPECT_INT(st.size, gz.size);
    kiln_error_free(&err);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(empty_tar_stream_and_empty_dir)
{
    char *work = kt_tmpdir("pack-test");
    KT_REQUIRE(work != NULL);
    char blob[512], cmd[1024];
    snprintf(blob, sizeof(blob), "%s/b", work);
    int in = open("/dev/null", O_RDONLY), out = open(blob, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    KT_REQUIRE(in >= 0 && out >= 0);
    psh_layer_info info;
    KT_EXPECT_INT(psh_pack_tar_stream(&info, in, out, NULL, NULL), 0);
    close(in);
    close(out);
    KT_EXPECT_STR(info.diff_id,
                  "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    KT_EXPECT_INT(info.tar_size, 0);
    KT_EXPECT_INT(kt_sh("gzip -t '%s'", blob), 0);
    KT_REQUIRE(kt_sh("mkdir '%s/empty'", work) == 0);
    snprintf(cmd, sizeof(cmd), "%s/empty", work);
    KT_EXPECT_INT(pack_to(&info, cmd, blob, NULL, NULL), 0);
    KT_EXPECT_INT(info.tar_size, 1024); /* just the two end blocks */
    KT_EXPECT_INT(kt_sh("gzip -t '%s' && tar -tzf '%s' >/dev/null", blob, blob), 0);
    kt_rmrf_free(work);
}

static uint64_t last_in, last_out;
static int progress_calls;
static void on_progress(void *ud, uint64_t in, uint64_t out)
{
    (void)ud;
    progress_calls++;
    last_in = in;
    last_out = out;
}

KT_TEST(progress_reports_tar_bytes)
{
    char *root = make_tree(), *work = kt_tmpdir("pack-test");
    KT_REQUIRE(root != NULL && work != NULL);
    char blob[512];
    snprintf(blob, sizeof(blob), "%s/b", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    o.progress = on_progress;
    psh_layer_info info;
    KT_REQUIRE(pack_to(&info, root, blob, &o, NULL) == 0);
    KT_EXPECT(progress_calls >= 5);
    KT_EXPECT_INT(last_in, info.tar_size);
    KT_EXPECT(last_out <= info.size);
    kt_rmrf_free(root);
    kt_rmrf_free(work);
}

KT_TEST(bad_input_gives_clear_errors)
{
    char *root = make_tree();
    KT_REQUIRE(root != NULL);
    psh_layer_info info;
    memset(&info, 0x5a, sizeof(info));
    kiln_error *err = NULL;
    int fd = open("/dev/null", O_WRONLY);
    KT_EXPECT_INT(psh_pack_dir(&info, "/nonexistent/kiln-dir", fd, NULL, &err), KILN_ENOENT);
    KT_EXPECT(err != NULL && strstr(err->msg, "/nonexistent/kiln-dir") != NULL);
    KT_EXPECT(info.size == 0x5a5a5a5a5a5a5a5aULL); /* untouched on failure */
    kiln_error_free(&err);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    o.level = 42;
    KT_EXPECT_INT(psh_pack_dir(&info, root, fd, &o, &err), KILN_EINVAL);
    KT_EXPECT(err != NULL && strstr(err->msg, "level") != NULL);
    kiln_error_free(&err);
    close(fd);
    /* write failure: disk full */
    fd = open("/dev/full", O_WRONLY);
    KT_REQUIRE(fd >= 0);
    static const psh_compression comps[] = {PSH_COMP_GZIP, PSH_COMP_ZSTD, PSH_COMP_NONE};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(comps); i++) {
        psh_pack_opts_init(&o);
        o.comp = comps[i];
        KT_EXPECT_INT(psh_pack_dir(&info, root, fd, &o, &err), KILN_ENOSPC);
        KT_EXPECT(err != NULL && strstr(err->msg, "write layer blob") != NULL);
        kiln_error_free(&err);
    }
    close(fd);
    /* a file the packing user may not read (drop to nobody in a child) */
    if (geteuid() == 0) {
        KT_REQUIRE(kt_sh("chmod 0755 '%s' && chmod 0000 '%s/d/sub/z'", root, root) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                _exit(3);
            int nfd = open("/dev/null", O_WRONLY);
            kiln_error *e = NULL;
            int rc = psh_pack_dir(&info, root, nfd, NULL, &e);
            _exit(rc == KILN_EPERM && strstr(e->msg, "d/sub/z") != NULL ? 0 : 1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    kt_rmrf_free(root);
}

KT_TEST(pack_cache_remembers_per_settings)
{
    char *work = kt_tmpdir("pack-test");
    KT_REQUIRE(work != NULL);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/cache", work);
    psh_pack_cache *c = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(psh_pack_cache_open(&c, dir, &err) == 0);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    psh_layer_info in = {.size = 123456789012ULL, .tar_size = 987654321098ULL};
    strcpy(in.diff_id, "sha256:1111111111111111111111111111111111111111111111111111111111111111");
    strcpy(in.digest, "sha256:2222222222222222222222222222222222222222222222222222222222222222");
    in.media_type = PSH_MEDIA_TYPE_TAR_GZIP;
    psh_layer_info out;
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o, &err), KILN_ENOENT);
    KT_EXPECT_INT(psh_pack_cache_store(c, "snap-1", &o, &in, &err), 0);
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o, &err), 0);
    KT_EXPECT_STR(out.diff_id, in.diff_id);
    KT_EXPECT_STR(out.digest, in.digest);
    KT_EXPECT_INT(out.size, in.size);
    KT_EXPECT_INT(out.tar_size, in.tar_size);
    KT_EXPECT_STR(out.media_type, in.media_type);
    /* another level, codec or epoch is another entry; threads are not */
    psh_pack_opts o2 = o;
    o2.threads = 7;
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o2, &err), 0);
    o2.level = 9;
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o2, &err), KILN_ENOENT);
    o2 = o;
    o2.comp = PSH_COMP_ZSTD;
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o2, &err), KILN_ENOENT);
    o2 = o;
    o2.source_date_epoch = 0;
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o2, &err), KILN_ENOENT);
    o2 = o;
    static const psh_id_range map[] = {{0, 100000, 65536}};
    o2.uid_map = map;
    o2.uid_map_len = 1;
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o2, &err), KILN_ENOENT);
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-2", &o, &err), KILN_ENOENT);
    /* persisted: a new handle sees it; no temp files left */
    psh_pack_cache_free(c);
    KT_REQUIRE(psh_pack_cache_open(&c, dir, &err) == 0);
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o, &err), 0);
    char *n = kt_capture(true, "ls -A '%s' | wc -l", dir);
    KT_EXPECT_STR(n, "1");
    free(n);
    /* a torn entry is a miss, not an error */
    KT_REQUIRE(
        kt_sh("for f in '%s'/*.json; do printf '{\"key\":\"snap-1\",' > \"$f\"; done", dir) == 0);
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o, &err), KILN_ENOENT);
    KT_EXPECT_INT(psh_pack_cache_store(c, "snap-1", &o, &in, &err), 0);
    KT_EXPECT_INT(psh_pack_cache_remove(c, "snap-1", &o, &err), 0);
    KT_EXPECT_INT(psh_pack_cache_lookup(c, &out, "snap-1", &o, &err), KILN_ENOENT);
    KT_EXPECT_INT(psh_pack_cache_remove(c, "snap-1", &o, &err), 0);
    KT_EXPECT(err == NULL);
    kiln_error_free(&err);
    psh_pack_cache_free(c);
    kt_rmrf_free(work);
}

KT_TEST(incompressible_blocks_are_stored_not_inflated)
{
    char *work = kt_tmpdir("pack-test");
    KT_REQUIRE(work != NULL);
    /* 1.25 MiB of random bytes: one full stored block and a stored final block */
    KT_REQUIRE(kt_sh("head -c 1310720 /dev/urandom > '%s/rnd' && mkdir '%s/d' && "
                     "cp '%s/rnd' '%s/d/r' && seq 1 1000 > '%s/d/s'",
                     work, work, work, work, work) == 0);
    char in_path[512], blob[512], cmd[1024];
    snprintf(in_path, sizeof(in_path), "%s/rnd", work);
    snprintf(blob, sizeof(blob), "%s/b", work);
    int in = open(in_path, O_RDONLY), out = open(blob, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    KT_REQUIRE(in >= 0 && out >= 0);
    psh_layer_info info;
    KT_EXPECT_INT(psh_pack_tar_stream(&info, in, out, NULL, NULL), 0);
    close(in);
    close(out);
    KT_EXPECT_INT(kt_sh("gzip -t '%s'", blob), 0);
    snprintf(cmd, sizeof(cmd), "gzip -dc '%s'", blob);
    char *d = digest_of(cmd);
    KT_EXPECT_STR(d, info.diff_id);
    free(d);
    /* stored: 5 bytes per stored block (17 for the 1 MiB block, 5 for the
     * 256 KiB one) plus the gzip header and trailer */
    KT_EXPECT_INT(info.size, 1310720 + 5 * (17 + 5) + 18);
    /* mixed: random file then text in the same final block */
    snprintf(in_path, sizeof(in_path), "%s/d", work);
    KT_EXPECT_INT(pack_to(&info, in_path, blob, NULL, NULL), 0);
    KT_EXPECT_INT(kt_sh("gzip -t '%s'", blob), 0);
    d = digest_of(cmd);
    KT_EXPECT_STR(d, info.diff_id);
    free(d);
    KT_EXPECT(info.size <= info.tar_size + 5 * 22 + 18);
    kt_rmrf_free(work);
}

KT_TEST(sockets_are_skipped)
{
    char *work = kt_tmpdir("pack-test");
    KT_REQUIRE(work != NULL);
    KT_REQUIRE(kt_sh("cd '%s' && mkdir t && printf a > t/a && python3 -c \"import socket; "
                     "socket.socket(socket.AF_UNIX).bind('t/sock')\" && test -S t/sock",
                     work) == 0);
    char dir[512], blob[512];
    snprintf(dir, sizeof(dir), "%s/t", work);
    snprintf(blob, sizeof(blob), "%s/b", work);
    psh_layer_info info;
    KT_EXPECT_INT(pack_to(&info, dir, blob, NULL, NULL), 0);
    char *names = kt_capture(true, "tar --quoting-style=literal -tzf '%s' | tr '\\n' '|'", blob);
    KT_EXPECT_STR(names, "a|");
    free(names);
    kt_rmrf_free(work);
}

KT_TEST(names_that_are_not_utf8_are_kept_as_bytes)
{
    char *work = kt_tmpdir("pack-test");
    KT_REQUIRE(work != NULL);
    KT_REQUIRE(kt_sh("cd '%s' && mkdir t && printf a > \"t/$(printf 'caf\\351')\" && "
                     "ln -s \"$(printf 'caf\\351')\" t/link",
                     work) == 0);
    char dir[512], blob[512];
    snprintf(dir, sizeof(dir), "%s/t", work);
    snprintf(blob, sizeof(blob), "%s/b", work);
    psh_layer_info info;
    KT_EXPECT_INT(pack_to(&info, dir, blob, NULL, NULL), 0);
    /* GNU tar warns that it does not know hdrcharset, and uses the bytes */
    KT_EXPECT_INT(kt_sh("mkdir '%s/x' && tar -xzf '%s' -C '%s/x' 2>/dev/null && "
                        "test \"$(cat \"%s/x/$(printf 'caf\\351')\")\" = a && "
                        "test \"$(readlink '%s/x/link')\" = \"$(printf 'caf\\351')\"",
                        work, blob, work, work, work),
                  0);
    char *py = kt_capture(true,
                          "python3 -c \"import tarfile,sys; print([m.name.encode('utf-8', "
                          "'surrogateescape') for m in tarfile.open(sys.argv[1])])\" '%s'",
                          blob);
    KT_EXPECT_STR(py, "[b'caf\\xe9', b'link']");
    free(py);
    kt_rmrf_free(work);
}

KT_TEST(overlay_diff_refuses_files_named_like_whiteouts)
{
    char *work = kt_tmpdir("pack-test");
    KT_REQUIRE(work != NULL);
    KT_REQUIRE(kt_sh("cd '%s' && mkdir -p t/d && printf a > t/d/.wh.x", work) == 0);
    char dir[512], blob[512];
    snprintf(dir, sizeof(dir), "%s/t", work);
    snprintf(blob, sizeof(blob), "%s/b", work);
    psh_pack_opts o;
    psh_pack_opts_init(&o);
    psh_layer_info info;
    KT_EXPECT_INT(pack_to(&info, dir, blob, &o, NULL), 0); /* a plain tree may hold it */
    o.overlay_diff = true;
    kiln_code code = KILN_OK;
    KT_EXPECT(pack_to(&info, dir, blob, &o, &code) < 0);
    KT_EXPECT_INT(code, KILN_EINVAL);
    kt_rmrf_free(work);
}
