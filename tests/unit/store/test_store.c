/* Store core: layout creation, verified blobs, index operations, crash safety
 * and path confinement. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "psh_store.h"
#include "store_fixture.h"

#define ZERO_DIGEST "sha256:0000000000000000000000000000000000000000000000000000000000000000"

static char *index_bytes(fx_env *e)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.json", psh_store_path(e->s));
    return kt_read_file(path, NULL);
}

KT_TEST(store_open_creates_layout)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char path[4096];
    snprintf(path, sizeof(path), "%s/oci-layout", psh_store_path(e.s));
    char *layout = kt_read_file(path, NULL);
    KT_EXPECT_STR(layout, "{\"imageLayoutVersion\":\"1.0.0\"}");
    free(layout);
    char *idx = index_bytes(&e);
    cJSON *j = cJSON_Parse(idx);
    KT_EXPECT(cJSON_IsArray(cJSON_GetObjectItem(j, "manifests")));
    KT_EXPECT_INT(cJSON_GetObjectItem(j, "schemaVersion")->valueint, 2);
    cJSON_Delete(j);
    free(idx);
    /* Re-opening an existing store keeps it. */
    psh_store *again = NULL;
    KT_EXPECT_INT(psh_store_open(&again, e.dir, NULL), 0);
    psh_store_free(again);
    /* A directory that is not a version-1 layout is refused. */
    snprintf(path, sizeof(path), "%s/oci-layout", psh_store_path(e.s));
    kt_write_file(path, "{\"imageLayoutVersion\":\"2.0.0\"}");
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_open(&again, e.dir, &err), KILN_EPRECOND);
    kiln_error_free(&err);
    fx_env_close(&e);
}

KT_TEST(blob_put_read_verify)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char d[KILN_DIGEST_STRLEN + 1], expect[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes("hello", 5, expect);
    KT_EXPECT_INT(psh_store_put_blob_bytes(e.s, NULL, expect, "hello", 5, d, NULL), 0);
    KT_EXPECT_STR(d, expect);
    KT_EXPECT(psh_store_has_blob(e.s, expect));
    char *buf = NULL;
    size_t len = 0;
    KT_EXPECT_INT(psh_store_read_blob(e.s, expect, 100, &buf, &len, NULL), 0);
    KT_EXPECT_STR(buf, "hello");
    free(buf);
    KT_EXPECT_INT(psh_store_read_blob(e.s, expect, 4, &buf, &len, NULL), KILN_ENOSPC);

    /* Wrong expected digest: error, nothing stored, no temp left behind. */
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_put_blob_bytes(e.s, NULL, ZERO_DIGEST, "other", 5, d, &err),
                  KILN_EINVAL);
    KT_EXPECT(err && strstr(err->msg, "mismatch"));
    kiln_error_free(&err);
    KT_EXPECT(!psh_store_has_blob(e.s, ZERO_DIGEST));

    /* From an fd, with and without a wrong expectation. */
    int p[2];
    KT_REQUIRE(pipe(p) == 0);
    KT_REQUIRE(write(p[1], "piped data", 10) == 10);
    close(p[1]);
    uint64_t size = 0;
    KT_EXPECT_INT(psh_store_put_blob_fd(e.s, NULL, ZERO_DIGEST, p[0], d, &size, &err), KILN_EINVAL);
    kiln_error_free(&err);
    close(p[0]);
    KT_REQUIRE(pipe(p) == 0);
    KT_REQUIRE(write(p[1], "piped data", 10) == 10);
    close(p[1]);
    KT_EXPECT_INT(psh_store_put_blob_fd(e.s, NULL, NULL, p[0], d, &size, NULL), 0);
    close(p[0]);
    KT_EXPECT_INT(size, 10);
    kiln_sha256_bytes("piped data", 10, expect);
    KT_EXPECT_STR(d, expect);

    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s/.kiln/tmp", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(tmp), 0);
    fx_env_close(&e);
}

KT_TEST(blob_bad_digests_never_become_paths)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *bad[] = {
        "sha256:../../../../etc/passwd",
        "sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF",
        "sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
        "sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "",
        "../index.json",
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        int fd = -1;
        kiln_error *err = NULL;
        KT_EXPECT(!psh_store_has_blob(e.s, bad[i]));
        KT_EXPECT_INT(psh_store_open_blob(e.s, bad[i], &fd, NULL, &err), KILN_EINVAL);
        KT_EXPECT(fd == -1);
        kiln_error_free(&err);
        KT_EXPECT_INT(psh_store_put_blob_bytes(e.s, NULL, bad[i], "x", 1, NULL, &err), KILN_EINVAL);
        kiln_error_free(&err);
    }
    fx_env_close(&e);
}

KT_TEST(tmp_commit_verifies_disk_content)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    psh_store_tmp t;
    KT_REQUIRE(psh_store_tmp_open(e.s, &t, NULL) == 0);
    KT_REQUIRE(write(t.fd, "abc", 3) == 3);
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_tmp_commit(e.s, &t, ZERO_DIGEST, NULL, NULL, &err), KILN_EINVAL);
    kiln_error_free(&err);
    KT_EXPECT(t.fd == -1);
    char d[KILN_DIGEST_STRLEN + 1], expect[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes("abc", 3, expect);
    KT_EXPECT(!psh_store_has_blob(e.s, expect));
    KT_REQUIRE(psh_store_tmp_open(e.s, &t, NULL) == 0);
    KT_REQUIRE(write(t.fd, "abc", 3) == 3);
    uint64_t size = 0;
    KT_EXPECT_INT(psh_store_tmp_commit(e.s, &t, expect, d, &size, NULL), 0);
    KT_EXPECT_STR(d, expect);
    KT_EXPECT_INT(size, 3);
    KT_EXPECT(psh_store_has_blob(e.s, expect));
    psh_store_tmp_abort(e.s, &t); /* no-op after commit */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s/.kiln/tmp", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(tmp), 0);
    fx_env_close(&e);
}

KT_TEST(tag_resolve_list_inspect_remove)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1], m2[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(fx_fake_image(e.s, "two", m2) == 0);
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_tag(e.s, m1, "app", &err), 0);
    KT_EXPECT_INT(psh_store_tag(e.s, m1, "docker.io/library/app:1", NULL), 0);
    KT_EXPECT_INT(psh_store_tag(e.s, m2, "localhost:5000/team/app:2", NULL), 0);

    /* Stored names are familiar forms with :latest added. */
    psh_image_list l;
    KT_REQUIRE(psh_store_list(e.s, &l, NULL) == 0);
    KT_REQUIRE(l.n == 3);
    KT_EXPECT_STR(l.items[0].ref, "app:latest");
    KT_EXPECT_STR(l.items[1].ref, "app:1");
    KT_EXPECT_STR(l.items[2].ref, "localhost:5000/team/app:2");
    KT_EXPECT_STR(l.items[0].manifest.digest, m1);
    KT_EXPECT_STR(l.items[0].architecture, "amd64");
    KT_EXPECT_STR(l.items[0].os, "linux");
    KT_EXPECT_INT(l.items[0].created, 1767323045);
    KT_EXPECT(l.items[0].size > l.items[0].manifest.size);
    psh_image_list_dispose(&l);

    /* Every spelling finds the same image. */
    const char *forms1[] = {"app",
                            "app:latest",
                            "docker.io/library/app",
                            "docker.io/library/app:latest",
                            "index.docker.io/library/app",
                            m1,
                            "app:1",
                            "docker.io/library/app:1"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(forms1); i++) {
        psh_descriptor d;
        KT_EXPECT_INT(psh_store_resolve(e.s, forms1[i], &d, NULL), 0);
        KT_EXPECT_STR(d.digest, m1);
        KT_EXPECT_STR(d.media_type, PSH_MT_OCI_MANIFEST);
    }
    psh_descriptor d;
    KT_EXPECT_INT(psh_store_resolve(e.s, "localhost:5000/team/app:2", &d, NULL), 0);
    KT_EXPECT_STR(d.digest, m2);
    char byd[256];
    snprintf(byd, sizeof(byd), "app@%s", m2);
    KT_EXPECT_INT(psh_store_resolve(e.s, byd, &d, NULL), 0);
    KT_EXPECT_STR(d.digest, m2);
    KT_EXPECT_INT(psh_store_resolve(e.s, "app:2", &d, &err), KILN_ENOENT);
    KT_EXPECT(err && strstr(err->msg, "app:2"));
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_resolve(e.s, "App:2", &d, &err), KILN_EINVAL);
    kiln_error_free(&err);

    psh_inspect in;
    KT_REQUIRE(psh_store_inspect(e.s, "app:1", &in, NULL) == 0);
    KT_EXPECT(strstr(in.manifest_json, PSH_MT_OCI_MANIFEST) != NULL);
    KT_EXPECT(in.config_json && strstr(in.config_json, "\"t\":\"one\"") != NULL);
    psh_inspect_dispose(&in);

    /* Remove by tag: one entry; remove by digest: every entry of it. */
    KT_EXPECT_INT(psh_store_remove(e.s, "docker.io/library/app:latest", NULL), 0);
    KT_EXPECT_INT(psh_store_resolve(e.s, "app", &d, NULL), KILN_ENOENT);
    KT_EXPECT_INT(psh_store_resolve(e.s, "app:1", &d, NULL), 0);
    KT_EXPECT_INT(psh_store_remove(e.s, "app", &err), KILN_ENOENT);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_tag(e.s, "app:1", "again", NULL), 0);
    KT_EXPECT_INT(psh_store_remove(e.s, m1, NULL), 0);
    KT_REQUIRE(psh_store_list(e.s, &l, NULL) == 0);
    KT_EXPECT_INT(l.n, 1);
    psh_image_list_dispose(&l);
    /* Removing the last tag leaves the blobs for GC. */
    KT_EXPECT(psh_store_has_blob(e.s, m1));
    fx_env_close(&e);
}

KT_TEST(tag_move_keeps_old_image)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1], m2[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(fx_fake_image(e.s, "two", m2) == 0);
    KT_EXPECT_INT(psh_store_tag(e.s, m1, "a:1", NULL), 0);
    KT_EXPECT_INT(psh_store_tag(e.s, m1, "b:1", NULL), 0);
    KT_EXPECT_INT(psh_store_tag(e.s, m2, "docker.io/library/a:1", NULL), 0);
    psh_image_list l;
    KT_REQUIRE(psh_store_list(e.s, &l, NULL) == 0);
    KT_REQUIRE(l.n == 2);
    KT_EXPECT_STR(l.items[0].ref, "a:1"); /* replaced in place */
    KT_EXPECT_STR(l.items[0].manifest.digest, m2);
    psh_image_list_dispose(&l);
    KT_EXPECT(psh_store_has_blob(e.s, m1));
    /* Tagging the same thing twice is idempotent. */
    KT_EXPECT_INT(psh_store_tag(e.s, m2, "a:1", NULL), 0);
    KT_REQUIRE(psh_store_list(e.s, &l, NULL) == 0);
    KT_EXPECT_INT(l.n, 2);
    psh_image_list_dispose(&l);
    fx_env_close(&e);
}

/* Re-tagging keeps every other tag, whatever the entry's position (cJSON
 * 1.7.15 cannot insert before the last item of an array: an entry moved
 * there used to vanish). */
KT_TEST(retag_at_every_position_keeps_all_tags)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1], m2[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(fx_fake_image(e.s, "two", m2) == 0);
    static const char *const tags[] = {"t0:1", "t1:1", "t2:1", "t3:1"};
    for (size_t i = 0; i < 4; i++)
        KT_REQUIRE(psh_store_tag(e.s, m1, tags[i], NULL) == 0);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < 4; i++) {
            KT_EXPECT_INT(psh_store_tag(e.s, round ? m1 : m2, tags[i], NULL), 0);
            psh_image_list l;
            KT_REQUIRE(psh_store_list(e.s, &l, NULL) == 0);
            KT_EXPECT_INT(l.n, 4);
            for (size_t k = 0; k < l.n && k < 4; k++) {
                KT_EXPECT_STR(l.items[k].ref, tags[k]); /* order kept */
                KT_EXPECT_STR(l.items[k].manifest.digest, (round ? k <= i : k > i) ? m1 : m2);
            }
            psh_image_list_dispose(&l);
        }
    }
    fx_env_close(&e);
}

KT_TEST(bad_refs_change_nothing)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(psh_store_tag(e.s, m1, "app:1", NULL) == 0);
    char *before = index_bytes(&e);
    char withdigest[256];
    snprintf(withdigest, sizeof(withdigest), "app@%s", m1);
    const char *bad_dst[] = {"App:1",    "app:", "../x", "app:1:2",
                             withdigest, "",     "a//b", "sha256:1234"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad_dst); i++) {
        kiln_error *err = NULL;
        KT_EXPECT_INT(psh_store_tag(e.s, "app:1", bad_dst[i], &err), KILN_EINVAL);
        KT_EXPECT(err != NULL);
        kiln_error_free(&err);
    }
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_tag(e.s, "nothere:1", "x:1", &err), KILN_ENOENT);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_tag(e.s, ZERO_DIGEST, "x:1", &err), KILN_ENOENT);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_remove(e.s, "sha256:zz", &err), KILN_EINVAL);
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_remove(e.s, "Bad/Ref", &err), KILN_EINVAL);
    kiln_error_free(&err);
    /* A descriptor for a manifest that is not in the store is refused. */
    psh_descriptor d = {.media_type = PSH_MT_OCI_MANIFEST, .digest = ZERO_DIGEST, .size = 3};
    KT_EXPECT_INT(psh_store_tag_descriptor(e.s, &d, NULL, NULL, NULL, "x:1", &err), KILN_ENOENT);
    kiln_error_free(&err);
    char *after = index_bytes(&e);
    KT_EXPECT_STR(after, before);
    free(before);
    free(after);
    fx_env_close(&e);
}

KT_TEST(confine_rejects_escapes)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char in[4096], link[4096], dotdot[4096];
    snprintf(in, sizeof(in), "%s/snap", e.dir);
    KT_REQUIRE(mkdir(in, 0755) == 0);
    snprintf(link, sizeof(link), "%s/escape", e.dir);
    KT_REQUIRE(symlink("/etc", link) == 0);
    snprintf(dotdot, sizeof(dotdot), "%s/snap/../..", e.dir);
    char *res = NULL;
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, in, &res, NULL), 0);
    free(res);
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, link, &res, &err), KILN_EPERM);
    KT_EXPECT(err && strstr(err->msg, "outside"));
    kiln_error_free(&err);
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, dotdot, &res, NULL), KILN_EPERM);
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, e.dir, &res, NULL), KILN_EPERM);
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, "/", &res, NULL), KILN_EPERM);
    snprintf(in, sizeof(in), "%s/missing", e.dir);
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, in, &res, NULL), KILN_ENOENT);
    /* A sibling whose name shares the prefix is outside. */
    snprintf(in, sizeof(in), "%s-sibling", e.dir);
    KT_REQUIRE(mkdir(in, 0755) == 0);
    KT_EXPECT_INT(psh_store_confine(e.s, NULL, in, &res, NULL), KILN_EPERM);
    rmdir(in);
    fx_env_close(&e);
}

/* A child streams a blob from a pipe and is SIGKILLed half way. */
KT_TEST(crash_mid_put_leaves_store_consistent)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(psh_store_tag(e.s, m1, "app:1", NULL) == 0);
    int p[2];
    KT_REQUIRE(pipe(p) == 0);
    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        psh_store_put_blob_fd(e.s, NULL, NULL, p[0], NULL, NULL, NULL);
        _exit(0);
    }
    close(p[0]);
    char block[65536];
    memset(block, 'x', sizeof(block));
    for (int i = 0; i < 64; i++)
        KT_REQUIRE(write(p[1], block, sizeof(block)) == (ssize_t)sizeof(block));
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    close(p[1]);
    KT_EXPECT(WIFSIGNALED(st));

    /* Every blob's name is its digest; the index still parses and resolves. */
    char blobs[4096];
    snprintf(blobs, sizeof(blobs), "%s/blobs/sha256", psh_store_path(e.s));
    KT_EXPECT_INT(kt_sh("cd %s && for f in *; do "
                        "[ \"$(sha256sum \"$f\" | cut -d' ' -f1)\" = \"$f\" ] || exit 1; done",
                        blobs),
                  0);
    char *idx = index_bytes(&e);
    cJSON *j = cJSON_Parse(idx);
    KT_EXPECT(j != NULL);
    cJSON_Delete(j);
    free(idx);
    psh_descriptor d;
    KT_EXPECT_INT(psh_store_resolve(e.s, "app:1", &d, NULL), 0);
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s/.kiln/tmp", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(tmp), 1); /* the dead writer's temp, for GC */

    /* The retried put succeeds. */
    KT_REQUIRE(pipe(p) == 0);
    KT_REQUIRE(write(p[1], block, 4096) == 4096);
    close(p[1]);
    char dg[KILN_DIGEST_STRLEN + 1], expect[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes(block, 4096, expect);
    KT_EXPECT_INT(psh_store_put_blob_fd(e.s, NULL, expect, p[0], dg, NULL, NULL), 0);
    close(p[0]);
    KT_EXPECT(psh_store_has_blob(e.s, expect));
    fx_env_close(&e);
}

/* Writers in several processes serialise on the lock: no tag is lost. */
KT_TEST(concurrent_taggers_lose_nothing)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    enum { PROCS = 4, TAGS = 15 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        KT_REQUIRE(pids[p] >= 0);
        if (pids[p] == 0) {
            int bad = 0;
            for (int t = 0; t < TAGS; t++) {
                char tag[64];
                snprintf(tag, sizeof(tag), "p%d:t%d", p, t);
                bad += psh_store_tag(e.s, m1, tag, NULL) != 0;
            }
            _exit(bad ? 1 : 0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st = 0;
        waitpid(pids[p], &st, 0);
        KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    psh_image_list l;
    KT_REQUIRE(psh_store_list(e.s, &l, NULL) == 0);
    KT_EXPECT_INT(l.n, PROCS * TAGS);
    psh_image_list_dispose(&l);
    fx_env_close(&e);
}
