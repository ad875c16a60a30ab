/* Faults between Kiln and docker-registry, injected by
 * tests/fakes/fault_proxy.py: 429 with Retry-After, 500/503, connections
 * reset in the middle of request and response bodies, slow answers.  Push
 * and pull still succeed with identical digests.  A pusher killed with
 * SIGKILL during a chunked upload resumes it when the push is retried, and
 * re-sends less than two chunks (bytes counted at the proxy). */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kt.h"
#include "reg_fixture.h"

KT_TEST(push_and_pull_through_faults)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 0) == 0);
    psh_commit_result img;
    KT_REQUIRE(rf_busybox_image(e.s, e.dir, "f:1", "fault-marker", &img) == 0);
    char big[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "f:big", (size_t)5 << 20, "amd64", big, NULL) == 0);
    rf_proxy px;
    KT_REQUIRE(rf_proxy_start(&px, e.dir, e.reg.port,
                              "ok,429,ok,500,reset,ok,503,slow,ok,reset,ok,ok") == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    o.chunk_size = (uint64_t)1 << 20; /* the 5 MiB layer goes in chunks */
    rf_counts c = {0};
    psh_reg_events ev;
    rf_events(&ev, &c);
    kiln_error *err = NULL;
    psh_push_result res;
    char dst[300];
    snprintf(dst, sizeof(dst), "127.0.0.1:%d/faults/app:1", px.port);
    KT_EXPECT_INT(psh_push(e.s, "f:1", dst, &o, &ev, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(res.manifest.digest, img.manifest.digest);
    snprintf(dst, sizeof(dst), "127.0.0.1:%d/faults/big:1", px.port);
    KT_EXPECT_INT(psh_push(e.s, "f:big", dst, &o, &ev, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(res.manifest.digest, big);
    KT_EXPECT(c.retried >= 3);
    KT_EXPECT(rf_proxy_stat(&px, "faults") >= 3);

    /* What the registry holds, seen directly: the same digests. */
    char *out = kt_capture(false,
                           "skopeo inspect --raw --tls-verify=false docker://%s/faults/big:1 | "
                           "sha256sum",
                           e.reg.host);
    KT_EXPECT(out != NULL && strncmp(out, big + 7, 64) == 0);
    free(out);
    out =
        kt_capture(false, "skopeo inspect --tls-verify=false docker://%s/faults/app:1", e.reg.host);
    KT_EXPECT(out != NULL && strstr(out, img.manifest.digest) != NULL);
    free(out);

    /* Pull both back through the faults into a fresh store. */
    char *d2 = kt_tmpdir("reg");
    psh_store *s2 = NULL;
    KT_REQUIRE(psh_store_open(&s2, d2, NULL) == 0);
    psh_pull_result pr;
    rf_events(&ev, &c);
    KT_EXPECT_INT(psh_pull(s2, dst, NULL, &o, &ev, &pr, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(pr.manifest.digest, big);
    snprintf(dst, sizeof(dst), "127.0.0.1:%d/faults/app:1", px.port);
    KT_EXPECT_INT(psh_pull(s2, dst, NULL, &o, &ev, &pr, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(pr.manifest.digest, img.manifest.digest);
    KT_EXPECT(c.retried >= 1);
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:%s %s/bundle >/dev/null 2>&1 && "
                        "grep -qx fault-marker %s/bundle/rootfs/etc/marker",
                        psh_store_path(s2), dst, d2, d2),
                  0);
    rf_proxy_stop(&px);

    /* Downloads broken in the middle of the body resume with Range. */
    rf_proxy rp;
    KT_REQUIRE(rf_proxy_start(&rp, e.dir, e.reg.port, "ok,reset,ok") == 0);
    char *d3 = kt_tmpdir("reg");
    psh_store *s3 = NULL;
    KT_REQUIRE(psh_store_open(&s3, d3, NULL) == 0);
    o.concurrency = 1;
    snprintf(dst, sizeof(dst), "127.0.0.1:%d/faults/big:1", rp.port);
    KT_EXPECT_INT(psh_pull(s3, dst, NULL, &o, NULL, &pr, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(pr.manifest.digest, big);
    KT_EXPECT(rf_proxy_stat(&rp, "range_gets") >= 1);
    rf_proxy_stop(&rp);
    psh_store_free(s3);
    kt_rmrf(d3);
    free(d3);

    psh_store_free(s2);
    kt_rmrf(d2);
    free(d2);
    psh_commit_result_dispose(&img);
    rf_env_close(&e);
}

/* Highest offset among persisted upload sessions (0 when none; -1 when
 * there is no session file at all). */
static long long session_offset(const char *data_dir)
{
    char dir[4300];
    snprintf(dir, sizeof(dir), "%s/registry/uploads", data_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    long long best = -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
            continue;
        char p[4600];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        char *t = kt_read_file(p, NULL);
        const char *o = t ? strstr(t, "\"offset\":") : NULL;
        if (o && atoll(o + 9) > best)
            best = atoll(o + 9);
        else if (best < 0)
            best = 0;
        free(t);
    }
    closedir(d);
    return best;
}

KT_TEST(killed_pusher_resumes_chunked_upload)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 0) == 0);
    const size_t size = (size_t)48 << 20, chunk = (size_t)4 << 20;
    char man[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "k:1", size, "amd64", man, NULL) == 0);
    rf_proxy px;
    KT_REQUIRE(rf_proxy_start(&px, e.dir, e.reg.port, "ok") == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    o.chunk_size = chunk;
    char dst[300];
    snprintf(dst, sizeof(dst), "127.0.0.1:%d/kill/app:1", px.port);

    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) {
        /* The doomed pusher: slowed down by its progress callback. */
        rf_counts c = {.progress_sleep_ms = 400};
        psh_reg_events ev;
        rf_events(&ev, &c);
        psh_store *s = NULL;
        if (psh_store_open(&s, e.dir, NULL) < 0)
            _exit(3);
        _exit(psh_push(s, "k:1", dst, &o, &ev, NULL, NULL) == 0 ? 0 : 1);
    }
    long long at = 0;
    for (int i = 0; i < 600 && (at = session_offset(e.dir)) < (long long)(3 * chunk); i++)
        usleep(20000);
    usleep(60000); /* into the middle of the next chunk */
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    KT_EXPECT(WIFSIGNALED(st));
    KT_EXPECT(at >= (long long)(3 * chunk));
    long long before = rf_proxy_stat(&px, "body_bytes");
    KT_EXPECT(before < (long long)size);

    /* The retried push resumes the session the dead pusher left. */
    rf_counts c = {0};
    psh_reg_events ev;
    rf_events(&ev, &c);
    kiln_error *err = NULL;
    psh_push_result res;
    KT_EXPECT_INT(psh_push(e.s, "k:1", dst, &o, &ev, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(res.manifest.digest, man);
    KT_EXPECT(res.bytes_resumed >= 3 * chunk);
    long long total = rf_proxy_stat(&px, "body_bytes");
    long long config_bytes = 1024; /* the small config blob and the manifest */
    long long resent = total - (long long)size - config_bytes;
    if (getenv("KT_VERBOSE"))
        fprintf(stderr, "    killed at %lld, proxy saw %lld then %lld bytes, resent %lld\n", at,
                before, total, resent);
    KT_EXPECT(resent < (long long)(2 * chunk));
    KT_EXPECT(session_offset(e.dir) < 0); /* session closed */
    KT_EXPECT_INT(kt_sh("skopeo inspect --tls-verify=false docker://%s/kill/app:1 | grep -q %s",
                        e.reg.host, man),
                  0);
    rf_proxy_stop(&px);
    rf_env_close(&e);
}

KT_TEST(killed_mid_chunk_push_still_completes)
{
    /* Killed in the middle of a chunk body: docker-registry keeps the
     * partial bytes and then refuses the stale session ("upload resumed at
     * wrong offset"), so the retried push must notice and start the blob
     * over in a new session. */
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 0) == 0);
    const size_t size = (size_t)24 << 20, chunk = (size_t)8 << 20;
    char man[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "m:1", size, "amd64", man, NULL) == 0);
    rf_proxy px;
    KT_REQUIRE(rf_proxy_start(&px, e.dir, e.reg.port, "ok") == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    o.chunk_size = chunk;
    char dst[300];
    snprintf(dst, sizeof(dst), "127.0.0.1:%d/kill/mid:1", px.port);
    pid_t pid = fork();
    KT_REQUIRE(pid >= 0);
    if (pid == 0) {
        /* Progress inside a body comes every 4 MiB: the sleep holds the
         * pusher half way through its 8 MiB chunk. */
        rf_counts c = {.progress_sleep_ms = 2000};
        psh_reg_events ev;
        rf_events(&ev, &c);
        psh_store *s = NULL;
        if (psh_store_open(&s, e.dir, NULL) < 0)
            _exit(3);
        _exit(psh_push(s, "m:1", dst, &o, &ev, NULL, NULL) == 0 ? 0 : 1);
    }
    /* The session is persisted right after its POST; the first PATCH then
     * reaches its 4 MiB progress point at once and sleeps there. */
    for (int i = 0; i < 500 && session_offset(e.dir) < 0; i++)
        usleep(20000);
    usleep(500000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    kiln_error *err = NULL;
    psh_push_result res;
    KT_EXPECT_INT(psh_push(e.s, "m:1", dst, &o, NULL, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(res.manifest.digest, man);
    KT_EXPECT_INT(kt_sh("skopeo inspect --tls-verify=false docker://%s/kill/mid:1 | grep -q %s",
                        e.reg.host, man),
                  0);
    KT_EXPECT_INT(kt_sh("grep -q 'wrong offest\\|wrong offset' %s/registry.log", e.reg.dir), 0);
    rf_proxy_stop(&px);
    rf_env_close(&e);
}
