/* Garbage collection: what is reachable, in use or pinned stays; the rest goes. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "psh_commit.h"
#include "store_fixture.h"

static int blob_count(fx_env *e)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/blobs/sha256", psh_store_path(e->s));
    return kt_count_dir(p);
}

static void put(fx_env *e, const char *text, char *digest)
{
    if (psh_store_put_blob_bytes(e->s, NULL, NULL, text, strlen(text), digest, NULL) < 0)
        KT_FAIL("put %s", text);
}

KT_TEST(gc_keeps_reachable_in_use_and_pinned)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1], m2[KILN_DIGEST_STRLEN + 1], m3[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "tagged", m1) == 0);   /* 3 blobs, reachable */
    KT_REQUIRE(fx_fake_image(e.s, "in-use", m2) == 0);   /* 3 blobs, in use */
    KT_REQUIRE(fx_fake_image(e.s, "untagged", m3) == 0); /* 3 blobs, garbage */
    KT_REQUIRE(psh_store_tag(e.s, m1, "app:1", NULL) == 0);
    char loose[KILN_DIGEST_STRLEN + 1], pinned[KILN_DIGEST_STRLEN + 1];
    put(&e, "loose blob", loose);
    psh_store_pin pin;
    KT_REQUIRE(psh_store_pin_open(e.s, &pin, NULL) == 0);
    KT_REQUIRE(psh_store_put_blob_bytes(e.s, &pin, NULL, "pinned", 6, pinned, NULL) == 0);
    KT_EXPECT_INT(blob_count(&e), 11);

    const char *in_use[] = {m2};
    psh_gc_opts o;
    psh_gc_opts_init(&o);
    o.in_use = in_use;
    o.n_in_use = 1;
    o.dry_run = true;
    psh_gc_result res;
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, NULL), 0);
    KT_EXPECT_INT(res.blobs_removed, 4);
    KT_EXPECT_INT(blob_count(&e), 11); /* dry run deletes nothing */
    o.dry_run = false;
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, NULL), 0);
    KT_EXPECT_INT(res.blobs_removed, 4);
    KT_EXPECT(res.bytes_freed > strlen("loose blob"));
    KT_EXPECT_INT(blob_count(&e), 7);
    KT_EXPECT(psh_store_has_blob(e.s, m1) && psh_store_has_blob(e.s, m2));
    KT_EXPECT(psh_store_has_blob(e.s, pinned));
    KT_EXPECT(!psh_store_has_blob(e.s, m3) && !psh_store_has_blob(e.s, loose));
    psh_inspect in;
    KT_EXPECT_INT(psh_store_inspect(e.s, "app:1", &in, NULL), 0); /* still whole */
    psh_inspect_dispose(&in);

    /* Released pins and untagged images go on the next run. */
    psh_store_pin_close(e.s, &pin);
    KT_EXPECT_INT(psh_store_remove(e.s, "app:1", NULL), 0);
    KT_EXPECT_INT(psh_store_gc(e.s, NULL, &res, NULL), 0);
    KT_EXPECT_INT(res.blobs_removed, 7);
    KT_EXPECT_INT(blob_count(&e), 0);
    fx_env_close(&e);
}

KT_TEST(gc_drops_pins_and_temps_of_dead_writers)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char d[KILN_DIGEST_STRLEN + 1];
    int p[2];
    KT_REQUIRE(pipe(p) == 0);
    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) { /* pins a blob, leaves a temp behind, dies without cleaning up */
        psh_store_pin pin;
        psh_store_tmp t;
        if (psh_store_pin_open(e.s, &pin, NULL) < 0 ||
            psh_store_put_blob_bytes(e.s, &pin, NULL, "orphan", 6, NULL, NULL) < 0 ||
            psh_store_tmp_open(e.s, &t, NULL) < 0)
            _exit(1);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    close(p[0]);
    close(p[1]);
    KT_REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    kiln_sha256_bytes("orphan", 6, d);
    KT_EXPECT(psh_store_has_blob(e.s, d));

    /* A live temp of this process survives even with no minimum age. */
    psh_store_tmp live;
    KT_REQUIRE(psh_store_tmp_open(e.s, &live, NULL) == 0);
    psh_gc_opts o;
    psh_gc_opts_init(&o);
    psh_gc_result res;
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, NULL), 0);
    KT_EXPECT_INT(res.tmps_removed, 0);  /* the dead temp is younger than an hour */
    KT_EXPECT_INT(res.blobs_removed, 1); /* the dead pin no longer protects */
    o.tmp_min_age = 0;
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, NULL), 0);
    KT_EXPECT_INT(res.tmps_removed, 1);
    char path[4096];
    snprintf(path, sizeof(path), "%s/.kiln/pins", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(path), 0);
    snprintf(path, sizeof(path), "%s/.kiln/tmp", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(path), 1);
    KT_REQUIRE(write(live.fd, "x", 1) == 1);
    KT_EXPECT_INT(psh_store_tmp_commit(e.s, &live, NULL, NULL, NULL, NULL), 0);
    KT_EXPECT_INT(kt_count_dir(path), 0);

    const char *bad[] = {"sha256:../../x"};
    o.in_use = bad;
    o.n_in_use = 1;
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, &err), KILN_EINVAL);
    kiln_error_free(&err);
    fx_env_close(&e);
}

/* A download's partial file: one writer at a time (a second open reports
 * busy), its bytes kept across a close for the next writer, committed under
 * its digest; prune drops it only once nobody holds it, the start-up sweep
 * only once it is old. */
KT_TEST(partial_downloads_locked_kept_swept)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char d[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes("resumable", 9, d);
    psh_store_tmp a, b;
    uint64_t have = 99;
    KT_REQUIRE(psh_store_partial_open(e.s, d, &a, &have, NULL) == 0);
    KT_EXPECT_INT(have, 0);
    KT_EXPECT(psh_store_is_partial_name(a.name));
    KT_EXPECT_INT(psh_store_partial_open(e.s, d, &b, &have, NULL), 1); /* busy, same process */
    KT_EXPECT_INT(b.fd, -1);
    KT_REQUIRE(write(a.fd, "resu", 4) == 4);
    psh_gc_opts o;
    psh_gc_opts_init(&o);
    psh_gc_result res;
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, NULL), 0);
    KT_EXPECT_INT(res.tmps_removed, 0); /* held: live */
    psh_store_partial_keep(e.s, &a);
    KT_EXPECT_INT(psh_store_partial_sweep(e.s, PSH_STORE_PARTIAL_MAX_AGE), 0); /* young */

    KT_REQUIRE(psh_store_partial_open(e.s, d, &a, &have, NULL) == 0);
    KT_EXPECT_INT(have, 4);
    KT_REQUIRE(lseek(a.fd, 4, SEEK_SET) == 4 && write(a.fd, "mable", 5) == 5);
    KT_EXPECT_INT(psh_store_tmp_commit(e.s, &a, d, NULL, NULL, NULL), 0);
    KT_EXPECT(psh_store_has_blob(e.s, d));
    char path[4096];
    snprintf(path, sizeof(path), "%s/.kiln/tmp", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(path), 0);

    KT_REQUIRE(psh_store_partial_open(e.s, d, &a, &have, NULL) == 0);
    KT_EXPECT_INT(have, 0); /* a fresh file under the same name */
    psh_store_partial_keep(e.s, &a);
    KT_EXPECT_INT(psh_store_partial_sweep(e.s, 0), 1);
    KT_REQUIRE(psh_store_partial_open(e.s, d, &a, &have, NULL) == 0);
    psh_store_partial_keep(e.s, &a);
    KT_EXPECT_INT(psh_store_gc(e.s, &o, &res, NULL), 0);
    KT_EXPECT_INT(res.tmps_removed, 1); /* abandoned: gone whatever its age */
    KT_EXPECT_INT(kt_count_dir(path), 0);
    KT_EXPECT(psh_store_partial_open(e.s, "sha256:../x", &a, &have, NULL) == KILN_EINVAL);
    fx_env_close(&e);
}

/* GC running non-stop in another process while commits add and tag new
 * images: pins keep every blob of a commit alive until its tag exists. */
KT_TEST(gc_racing_commits_never_breaks_an_image)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) {
        psh_store *s = NULL;
        if (psh_store_open(&s, e.dir, NULL) < 0)
            _exit(1);
        psh_gc_opts o;
        psh_gc_opts_init(&o);
        o.tmp_min_age = 0;
        for (int i = 0; i < 4000; i++) {
            psh_gc_result r;
            if (psh_store_gc(s, &o, &r, NULL) < 0)
                _exit(2);
            char stop[4200];
            snprintf(stop, sizeof(stop), "%s/stop", e.dir);
            if (access(stop, F_OK) == 0)
                break;
        }
        psh_store_free(s);
        _exit(0);
    }
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        char dir[4096], tag[32];
        snprintf(dir, sizeof(dir), "%s/d%d", e.dir, i);
        snprintf(tag, sizeof(tag), "race:%d", i);
        KT_REQUIRE(kt_sh("mkdir -p %s && echo %d > %s/f", dir, i, dir) == 0);
        const char *d = dir;
        const char *t = tag;
        psh_commit_spec spec;
        psh_commit_spec_init(&spec);
        spec.platform.os = "linux";
        spec.platform.architecture = "amd64";
        spec.pack.threads = 1;
        spec.layers = &d;
        spec.n_layers = 1;
        spec.tags = &t;
        spec.n_tags = 1;
        psh_commit_result res;
        kiln_error *err = NULL;
        if (psh_commit(e.s, &spec, &res, &err) < 0)
            KT_FAIL("commit %d: %s", i, err->msg);
        kiln_error_free(&err);
        psh_commit_result_dispose(&res);
    }
    char stop[4200];
    snprintf(stop, sizeof(stop), "%s/stop", e.dir);
    kt_write_file(stop, "");
    int st = 0;
    waitpid(pid, &st, 0);
    KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Every tagged image is whole: manifest, config and layer present. */
    for (int i = 0; i < N; i++) {
        char tag[32];
        snprintf(tag, sizeof(tag), "race:%d", i);
        psh_inspect in;
        kiln_error *err = NULL;
        if (psh_store_inspect(e.s, tag, &in, &err) < 0) {
            KT_FAIL("%s: %s", tag, err->msg);
            kiln_error_free(&err);
            continue;
        }
        cJSON *m = cJSON_Parse(in.manifest_json);
        const cJSON *l;
        cJSON_ArrayForEach(l, cJSON_GetObjectItem(m, "layers"))
        {
            const char *dg = cJSON_GetObjectItem(l, "digest")->valuestring;
            if (!psh_store_has_blob(e.s, dg))
                KT_FAIL("%s: layer %s was collected", tag, dg);
        }
        cJSON_Delete(m);
        psh_inspect_dispose(&in);
    }
    fx_env_close(&e);
}
