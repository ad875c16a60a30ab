/* Push to a plain-HTTP docker-registry, checked with what outside tools see:
 * skopeo inspect / copy, umoci unpack, curl on the /v2/ API.  Re-push skips
 * every blob; a second repository gets its blobs by cross-repo mount;
 * --format v2s2 gives a Docker schema 2 manifest; manifest lists push their
 * images by digest and the index by tag. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "reg_fixture.h"

static int push(rf_env *e, const char *src, const char *dst, const psh_registry_opts *o,
                rf_counts *c, psh_push_result *res)
{
    psh_reg_events ev;
    rf_events(&ev, c);
    kiln_error *err = NULL;
    int r = psh_push(e->s, src, dst, o, &ev, res, &err);
    if (r < 0)
        fprintf(stderr, "  push: %s\n", err->msg);
    kiln_error_free(&err);
    return r;
}

KT_TEST(push_plain_http_then_skopeo_curl_umoci)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 60) == 0);
    psh_commit_result img;
    KT_REQUIRE(rf_busybox_image(e.s, e.dir, "app:1", "hello-push", &img) == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    rf_counts c = {0};
    psh_push_result res;
    char dst[256];
    snprintf(dst, sizeof(dst), "%s/team/app:1", e.reg.host);
    KT_REQUIRE(push(&e, "app:1", dst, &o, &c, &res) == 0);
    KT_EXPECT_STR(res.manifest.digest, img.manifest.digest);
    KT_EXPECT_INT(res.blobs_uploaded, 2); /* config + layer */
    KT_EXPECT_INT(c.started, 2);
    KT_EXPECT_INT(c.done, 2);
    KT_EXPECT_INT(c.manifests, 1);

    /* skopeo sees the manifest digest Kiln computed. */
    char *out = kt_capture(false, "skopeo inspect --tls-verify=false docker://%s", dst);
    KT_EXPECT(out != NULL && strstr(out, img.manifest.digest) != NULL);
    free(out);
    /* The registry serves the stored bytes exactly. */
    out =
        kt_capture(false, "curl -sf -H 'Accept: %s' http://%s/v2/team/app/manifests/1 | sha256sum",
                   PSH_MT_OCI_MANIFEST, e.reg.host);
    KT_EXPECT(out != NULL && strncmp(out, img.manifest.digest + 7, 64) == 0);
    free(out);
    out = kt_capture(false, "curl -sf http://%s/v2/team/app/tags/list", e.reg.host);
    KT_EXPECT(out != NULL && strstr(out, "\"1\"") != NULL);
    free(out);
    /* skopeo copy back out and umoci unpack: same files. */
    KT_EXPECT_INT(kt_sh("skopeo copy -q --src-tls-verify=false docker://%s oci:%s/copy:x && "
                        "umoci unpack --image %s/copy:x %s/bundle >/dev/null 2>&1 && "
                        "cmp %s/bundle/rootfs/bin/busybox /bin/busybox && "
                        "grep -qx hello-push %s/bundle/rootfs/etc/marker",
                        dst, e.dir, e.dir, e.dir, e.dir, e.dir),
                  0);

    /* Re-push: every blob skipped, nothing uploaded, manifest put again. */
    KT_REQUIRE(push(&e, "app:1", dst, &o, &c, &res) == 0);
    KT_EXPECT_INT(res.blobs_skipped, 2);
    KT_EXPECT_INT(res.blobs_uploaded, 0);
    KT_EXPECT_INT(c.skipped, 2);
    KT_EXPECT_INT(c.started, 0);
    KT_EXPECT_INT(res.bytes_sent, 0);

    /* Another repository on the same registry: blobs mounted, not sent. */
    snprintf(dst, sizeof(dst), "%s/other/app:2", e.reg.host);
    KT_REQUIRE(push(&e, "app:1", dst, &o, &c, &res) == 0);
    KT_EXPECT_INT(res.blobs_mounted, 2);
    KT_EXPECT_INT(c.mounted, 2);
    KT_EXPECT_INT(res.bytes_sent, 0);
    KT_EXPECT_INT(kt_sh("curl -sf -I http://%s/v2/other/app/blobs/%s >/dev/null", e.reg.host,
                        img.layers[0].blob.digest),
                  0);
    KT_EXPECT_INT(kt_sh("skopeo inspect --tls-verify=false docker://%s >/dev/null", dst), 0);

    /* Docker schema 2 on request. */
    o.format = PSH_FORMAT_V2S2;
    snprintf(dst, sizeof(dst), "%s/team/app:v2s2", e.reg.host);
    KT_REQUIRE(push(&e, "app:1", dst, &o, &c, &res) == 0);
    KT_EXPECT_STR(res.manifest.media_type, PSH_MT_DOCKER_MANIFEST);
    out = kt_capture(false, "skopeo inspect --raw --tls-verify=false docker://%s", dst);
    KT_EXPECT(out != NULL && strstr(out, PSH_MT_DOCKER_MANIFEST) != NULL &&
              strstr(out, PSH_MT_DOCKER_LAYER_GZ) != NULL);
    free(out);
    out = kt_capture(false, "skopeo inspect --raw --tls-verify=false docker://%s | sha256sum", dst);
    KT_EXPECT(out != NULL && strncmp(out, res.manifest.digest + 7, 64) == 0);
    free(out);
    psh_commit_result_dispose(&img);
    rf_env_close(&e);
}

KT_TEST(manifest_list_push_resolves_every_entry)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 60) == 0);
    char amd[KILN_DIGEST_STRLEN + 1], arm[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "multi:amd64", 4096, "amd64", amd, NULL) == 0);
    KT_REQUIRE(rf_random_image(e.s, e.dir, "multi:arm64", 4096, "arm64", arm, NULL) == 0);
    kiln_error *err = NULL;
    KT_REQUIRE(psh_manifest_create(e.s, "multi:list", &err) == 0);
    KT_EXPECT_INT(psh_manifest_create(e.s, "multi:list", &err), KILN_EEXIST);
    kiln_error_free(&err);
    KT_REQUIRE(psh_manifest_add(e.s, "multi:list", "multi:amd64", NULL, NULL, &err) == 0);
    KT_REQUIRE(psh_manifest_add(e.s, "multi:list", "multi:arm64", NULL, NULL, &err) == 0);
    const char *ann[] = {"org.example.note=kiln"};
    KT_REQUIRE(psh_manifest_annotate(e.s, "multi:list", arm, NULL, NULL, "v8", ann, 1, &err) == 0);
    char *js = NULL;
    KT_REQUIRE(psh_manifest_inspect(e.s, "multi:list", &js, &err) == 0);
    KT_EXPECT(strstr(js, amd) != NULL && strstr(js, arm) != NULL);
    KT_EXPECT(strstr(js, "\"variant\":\"v8\"") != NULL);
    free(js);

    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    rf_counts c = {0};
    psh_push_result res;
    char dst[256];
    snprintf(dst, sizeof(dst), "%s/multi/app:latest", e.reg.host);
    KT_REQUIRE(push(&e, "multi:list", dst, &o, &c, &res) == 0);
    KT_EXPECT_INT(c.manifests, 3); /* two images by digest, then the index */
    KT_EXPECT_STR(res.manifest.media_type, PSH_MT_OCI_INDEX);
    char *raw = kt_capture(false, "skopeo inspect --raw --tls-verify=false docker://%s", dst);
    KT_EXPECT(raw != NULL && strstr(raw, PSH_MT_OCI_INDEX) != NULL);
    KT_EXPECT(raw != NULL && strstr(raw, "\"architecture\":\"arm64\"") != NULL);
    free(raw);
    /* Every entry resolves in the registry with its platform. */
    KT_EXPECT_INT(kt_sh("skopeo inspect --tls-verify=false --override-arch arm64 docker://%s | "
                        "grep -q '\"Architecture\": \"arm64\"'",
                        dst),
                  0);
    KT_EXPECT_INT(kt_sh("skopeo inspect --tls-verify=false --override-arch amd64 docker://%s | "
                        "grep -q '\"Architecture\": \"amd64\"'",
                        dst),
                  0);
    KT_EXPECT_INT(kt_sh("curl -sf -I -H 'Accept: %s' http://%s/v2/multi/app/manifests/%s "
                        ">/dev/null",
                        PSH_MT_OCI_MANIFEST, e.reg.host, amd),
                  0);
    KT_EXPECT_INT(kt_sh("curl -sf -I -H 'Accept: %s' http://%s/v2/multi/app/manifests/%s "
                        ">/dev/null",
                        PSH_MT_OCI_MANIFEST, e.reg.host, arm),
                  0);

    /* --format v2s2 on a list: a Docker manifest list of converted images. */
    psh_commit_result bb1, bb2;
    KT_REQUIRE(rf_busybox_image_arch(e.s, e.dir, "bb:amd64", "x", "amd64", &bb1) == 0);
    KT_REQUIRE(rf_busybox_image_arch(e.s, e.dir, "bb:arm64", "y", "arm64", &bb2) == 0);
    KT_REQUIRE(psh_manifest_create(e.s, "bb:list", &err) == 0);
    KT_REQUIRE(psh_manifest_add(e.s, "bb:list", "bb:amd64", NULL, NULL, &err) == 0);
    KT_REQUIRE(psh_manifest_add(e.s, "bb:list", "bb:arm64", NULL, NULL, &err) == 0);
    psh_registry_opts o2 = o;
    o2.format = PSH_FORMAT_V2S2;
    snprintf(dst, sizeof(dst), "%s/multi/docker:1", e.reg.host);
    KT_REQUIRE(push(&e, "bb:list", dst, &o2, &c, &res) == 0);
    KT_EXPECT_STR(res.manifest.media_type, PSH_MT_DOCKER_LIST);
    raw = kt_capture(false, "skopeo inspect --raw --tls-verify=false docker://%s", dst);
    KT_EXPECT(raw != NULL && strstr(raw, PSH_MT_DOCKER_LIST) != NULL &&
              strstr(raw, PSH_MT_DOCKER_MANIFEST) != NULL &&
              strstr(raw, bb1.manifest.digest) == NULL);
    free(raw);
    raw = kt_capture(false, "skopeo inspect --raw --tls-verify=false docker://%s | sha256sum", dst);
    KT_EXPECT(raw != NULL && strncmp(raw, res.manifest.digest + 7, 64) == 0);
    free(raw);
    psh_commit_result_dispose(&bb1);
    psh_commit_result_dispose(&bb2);
    KT_EXPECT_INT(kt_sh("skopeo inspect --tls-verify=false --override-arch arm64 docker://%s | "
                        "grep -q '\"Architecture\": \"arm64\"'",
                        dst),
                  0);

    /* A list built from a remote image by reference: nothing rebuilt, the
     * entry comes from the registry's manifest. */
    KT_REQUIRE(psh_manifest_create(e.s, "remote:list", &err) == 0);
    char src[256];
    snprintf(src, sizeof(src), "%s/multi/app@%s", e.reg.host, arm);
    /* Fresh store: the image is not local. */
    char *dir2 = kt_tmpdir("reg");
    psh_store *s2 = NULL;
    KT_REQUIRE(psh_store_open(&s2, dir2, NULL) == 0);
    KT_REQUIRE(psh_manifest_create(s2, "remote:list", &err) == 0);
    psh_descriptor added;
    KT_REQUIRE(psh_manifest_add(s2, "remote:list", src, &o, &added, &err) == 0);
    KT_EXPECT_STR(added.digest, arm);
    KT_REQUIRE(psh_manifest_inspect(s2, "remote:list", &js, &err) == 0);
    KT_EXPECT(strstr(js, "\"architecture\":\"arm64\"") != NULL);
    free(js);
    /* Pushed to another repository: the layers come by mount. */
    snprintf(dst, sizeof(dst), "%s/multi/remote:1", e.reg.host);
    psh_reg_events ev;
    rf_events(&ev, &c);
    KT_EXPECT_INT(psh_push(s2, "remote:list", dst, &o, &ev, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT(c.mounted >= 1);
    psh_store_free(s2);
    kt_rmrf(dir2);
    free(dir2);
    rf_env_close(&e);
}

static atomic_int cancel_flag;
static char cancel_digest[KILN_DIGEST_STRLEN + 1];

/* Cancels once the big layer has a chunk accepted. */
static void cancel_on_progress(void *ud, const char *d, uint64_t done, uint64_t total)
{
    (void)ud;
    (void)total;
    if (done > 0 && strcmp(d, cancel_digest) == 0)
        atomic_store(&cancel_flag, 1);
}

KT_TEST(base_layers_mount_from_pulled_origin_and_cancel)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 60) == 0);
    psh_commit_result base;
    KT_REQUIRE(rf_busybox_image(e.s, e.dir, "base:1", "base-marker", &base) == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    char ref[300];
    snprintf(ref, sizeof(ref), "%s/lib/base:1", e.reg.host);
    kiln_error *err = NULL;
    KT_REQUIRE(psh_push(e.s, "base:1", ref, &o, NULL, NULL, &err) == 0);

    /* A fresh pusher data dir pulls the base (recording where it came
     * from), builds on it and pushes elsewhere: the base layer is mounted,
     * only the new layer and config travel. */
    char *d2 = kt_tmpdir("reg");
    psh_store *s2 = NULL;
    KT_REQUIRE(psh_store_open(&s2, d2, NULL) == 0);
    psh_pull_result pr;
    KT_REQUIRE(psh_pull(s2, ref, NULL, &o, NULL, &pr, &err) == 0);
    char top[4300];
    snprintf(top, sizeof(top), "%s/top", d2);
    KT_REQUIRE(kt_sh("mkdir -p %s/etc && echo app > %s/etc/app", top, top) == 0);
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    const char *layers[] = {top};
    const char *tags[] = {"app:1"};
    spec.base = pr.manifest.digest;
    spec.layers = layers;
    spec.n_layers = 1;
    spec.tags = tags;
    spec.n_tags = 1;
    spec.platform.os = "linux";
    spec.platform.architecture = "amd64";
    psh_commit_result app;
    KT_REQUIRE(psh_commit(s2, &spec, &app, &err) == 0);
    rf_counts c = {0};
    psh_reg_events ev;
    rf_events(&ev, &c);
    psh_push_result res;
    snprintf(ref, sizeof(ref), "%s/team/app:1", e.reg.host);
    KT_EXPECT_INT(psh_push(s2, "app:1", ref, &o, &ev, &res, &err), 0);
    KT_EXPECT_INT(res.blobs_mounted, 1);  /* the base layer */
    KT_EXPECT_INT(res.blobs_uploaded, 2); /* new layer + config */
    KT_EXPECT_INT(kt_sh("skopeo copy -q --src-tls-verify=false docker://%s oci:%s/o:x && "
                        "umoci unpack --image %s/o:x %s/b >/dev/null 2>&1 && "
                        "grep -qx app %s/b/rootfs/etc/app && "
                        "grep -qx base-marker %s/b/rootfs/etc/marker",
                        ref, d2, d2, d2, d2, d2),
                  0);

    /* Cancellation between chunks: a clear code, the session kept for a
     * later resume. */
    char big[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "big:1", (size_t)6 << 20, "amd64", big, cancel_digest) ==
               0);
    o.cancel = &cancel_flag;
    o.chunk_size = (uint64_t)1 << 20;
    psh_reg_events cev = {.blob_progress = cancel_on_progress};
    snprintf(ref, sizeof(ref), "%s/team/big:1", e.reg.host);
    KT_EXPECT_INT(psh_push(e.s, "big:1", ref, &o, &cev, &res, &err), KILN_ECANCELED);
    kiln_error_free(&err);
    KT_EXPECT(res.bytes_sent < ((uint64_t)6 << 20));
    atomic_store(&cancel_flag, 0);
    o.cancel = NULL;
    KT_EXPECT_INT(psh_push(e.s, "big:1", ref, &o, NULL, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    KT_EXPECT(res.bytes_resumed > 0);
    kiln_error_free(&err);
    psh_commit_result_dispose(&app);
    psh_commit_result_dispose(&base);
    psh_store_free(s2);
    kt_rmrf(d2);
    free(d2);
    rf_env_close(&e);
}
