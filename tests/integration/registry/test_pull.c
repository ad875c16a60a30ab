/* Pull of images that skopeo (and curl) put in a docker-registry: a Docker
 * schema 2 manifest, an OCI manifest without mediaType, a multi-platform
 * index (host platform and an explicit one); unpacked with umoci and
 * compared by digest.  Bad input: malformed references, a closed port, a
 * registry whose manifest or blob does not match its digest (through the
 * corrupting proxy) — clear errors, nothing tagged, nothing stored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "reg_fixture.h"

static psh_store *fresh_store(char **dir)
{
    *dir = kt_tmpdir("reg");
    psh_store *s = NULL;
    return *dir && psh_store_open(&s, *dir, NULL) == 0 ? s : NULL;
}

static int pull(psh_store *s, const char *ref, const char *platform, const psh_registry_opts *o,
                psh_pull_result *res, char **msg)
{
    kiln_error *err = NULL;
    int r = psh_pull(s, ref, platform, o, NULL, res, &err);
    if (msg)
        *msg = err ? strdup(err->msg) : NULL;
    if (r < 0 && getenv("KT_VERBOSE"))
        fprintf(stderr, "    pull: %s\n", err->msg);
    kiln_error_free(&err);
    return r;
}

/* sha256 hex of what skopeo inspect --raw prints. */
static bool raw_digest_is(const char *ref, const char *digest)
{
    char *out =
        kt_capture(false, "skopeo inspect --raw --tls-verify=false docker://%s | sha256sum", ref);
    bool ok = out != NULL && strncmp(out, digest + 7, 64) == 0;
    free(out);
    return ok;
}

KT_TEST(pull_images_skopeo_pushed)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 0) == 0);
    psh_commit_result img;
    KT_REQUIRE(rf_busybox_image(e.s, e.dir, "base:1", "pulled-marker", &img) == 0);
    const char *st = psh_store_path(e.s);
    const char *h = e.reg.host;
    psh_registry_opts o;
    rf_opts(&o, &e.reg);

    /* Docker schema 2, written by skopeo. */
    KT_REQUIRE(kt_sh("skopeo copy -q --dest-tls-verify=false --format v2s2 oci:%s:base:1 "
                     "docker://%s/sk/docker:1",
                     st, h) == 0);
    char *d2 = NULL;
    psh_store *s2 = fresh_store(&d2);
    KT_REQUIRE(s2 != NULL);
    char ref[300];
    snprintf(ref, sizeof(ref), "%s/sk/docker:1", h);
    psh_pull_result pr;
    KT_REQUIRE(pull(s2, ref, NULL, &o, &pr, NULL) == 0);
    KT_EXPECT_STR(pr.manifest.media_type, PSH_MT_DOCKER_MANIFEST);
    KT_EXPECT(raw_digest_is(ref, pr.manifest.digest));
    KT_EXPECT_INT(pr.blobs_fetched, 2);
    KT_EXPECT_STR(pr.architecture, "amd64");
    psh_descriptor d;
    KT_EXPECT_INT(psh_store_resolve(s2, ref, &d, NULL), 0);
    KT_EXPECT_STR(d.digest, pr.manifest.digest);
    /* Again: nothing fetched. */
    KT_REQUIRE(pull(s2, ref, NULL, &o, &pr, NULL) == 0);
    KT_EXPECT_INT(pr.blobs_fetched, 0);
    KT_EXPECT_INT(pr.blobs_present, 2);

    /* An OCI manifest without mediaType (as umoci writes them), put with curl. */
    char path[4300];
    snprintf(path, sizeof(path), "%s/nomt.json", e.dir);
    KT_REQUIRE(kt_sh("skopeo copy -q --dest-tls-verify=false oci:%s:base:1 docker://%s/sk/oci:base "
                     "&& cat %s/blobs/sha256/%s | sed 's|\"mediaType\":\"%s\",||' > %s",
                     st, h, st, img.manifest.digest + 7, PSH_MT_OCI_MANIFEST, path) == 0);
    KT_REQUIRE(kt_sh("! grep -q '%s' %s", PSH_MT_OCI_MANIFEST, path) == 0);
    KT_REQUIRE(kt_sh("curl -sf -X PUT -H 'Content-Type: %s' --data-binary @%s "
                     "http://%s/v2/sk/oci/manifests/nomt",
                     PSH_MT_OCI_MANIFEST, path, h) == 0);
    snprintf(ref, sizeof(ref), "%s/sk/oci:nomt", h);
    KT_REQUIRE(pull(s2, ref, NULL, &o, &pr, NULL) == 0);
    KT_EXPECT_STR(pr.manifest.media_type, PSH_MT_OCI_MANIFEST);
    KT_EXPECT(raw_digest_is(ref, pr.manifest.digest));
    KT_EXPECT_INT(pr.blobs_fetched, 0); /* same blobs as the Docker one */
    KT_EXPECT_INT(kt_sh("umoci unpack --image %s:%s %s/bundle >/dev/null 2>&1 && "
                        "grep -qx pulled-marker %s/bundle/rootfs/etc/marker && "
                        "cmp %s/bundle/rootfs/bin/busybox /bin/busybox",
                        psh_store_path(s2), ref, d2, d2, d2),
                  0);

    /* A multi-platform index (skopeo copy --all of a Kiln manifest list). */
    psh_commit_result armimg;
    KT_REQUIRE(rf_busybox_image_arch(e.s, e.dir, "base:arm64", "arm-marker", "arm64", &armimg) ==
               0);
    const char *arm = armimg.manifest.digest;
    kiln_error *err = NULL;
    KT_REQUIRE(psh_manifest_create(e.s, "base:list", &err) == 0);
    KT_REQUIRE(psh_manifest_add(e.s, "base:list", "base:1", NULL, NULL, &err) == 0);
    KT_REQUIRE(psh_manifest_add(e.s, "base:list", "base:arm64", NULL, NULL, &err) == 0);
    KT_REQUIRE(psh_manifest_annotate(e.s, "base:list", arm, NULL, NULL, "v8", NULL, 0, &err) == 0);
    KT_REQUIRE(kt_sh("skopeo copy -q --all --dest-tls-verify=false oci:%s:base:list "
                     "docker://%s/sk/multi:1",
                     st, h) == 0);
    char *d3 = NULL;
    psh_store *s3 = fresh_store(&d3);
    KT_REQUIRE(s3 != NULL);
    snprintf(ref, sizeof(ref), "%s/sk/multi:1", h);
    KT_REQUIRE(pull(s3, ref, NULL, &o, &pr, NULL) == 0); /* host: linux/amd64 */
    KT_EXPECT_STR(pr.manifest.digest, img.manifest.digest);
    KT_EXPECT(raw_digest_is(ref, pr.index.digest));
    KT_REQUIRE(pull(s3, ref, "linux/arm64/v8", &o, &pr, NULL) == 0);
    KT_EXPECT_STR(pr.manifest.digest, arm);
    KT_EXPECT_STR(pr.variant, "");
    char *msg = NULL;
    KT_EXPECT_INT(pull(s3, ref, "linux/s390x", &o, &pr, &msg), KILN_ENOENT);
    KT_EXPECT(msg != NULL && strstr(msg, "linux/arm64/v8") != NULL);
    free(msg);
    /* By digest. */
    snprintf(ref, sizeof(ref), "%s/sk/multi@%s", h, arm);
    KT_EXPECT_INT(pull(s3, ref, NULL, &o, &pr, NULL), 0);
    KT_EXPECT_STR(pr.manifest.digest, arm);

    psh_store_free(s2);
    psh_store_free(s3);
    kt_rmrf(d2);
    kt_rmrf(d3);
    free(d2);
    free(d3);
    psh_commit_result_dispose(&img);
    psh_commit_result_dispose(&armimg);
    rf_env_close(&e);
}

KT_TEST(bad_input_clear_errors_nothing_stored)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_NONE, 0) == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    o.max_retries = 1;
    psh_pull_result pr;
    char *msg = NULL;
    static const char *bad[] = {"", "team/Upper:1", "a:b:c", "app:", "app@sha256:12", "x/../y:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        KT_EXPECT_INT(pull(e.s, bad[i], NULL, &o, &pr, NULL), KILN_EINVAL);
        kiln_error *err = NULL;
        KT_EXPECT_INT(psh_push(e.s, "app:1", bad[i], &o, NULL, NULL, &err), KILN_EINVAL);
        kiln_error_free(&err);
    }
    KT_EXPECT_INT(pull(e.s, "127.0.0.1:5000/x:1", "linux", &o, &pr, NULL), KILN_EINVAL);

    /* Nothing listens: unavailable, saying where. */
    char ref[300];
    snprintf(ref, sizeof(ref), "127.0.0.1:%d/x/y:1", kt_free_port());
    KT_EXPECT_INT(pull(e.s, ref, NULL, &o, &pr, &msg), KILN_EUNAVAIL);
    KT_EXPECT(msg != NULL && strstr(msg, "127.0.0.1") != NULL);
    free(msg);
    snprintf(ref, sizeof(ref), "%s/none/such:1", e.reg.host);
    KT_EXPECT_INT(pull(e.s, ref, NULL, &o, &pr, &msg), KILN_ENOENT);
    KT_EXPECT(msg != NULL && strstr(msg, "MANIFEST_UNKNOWN") != NULL);
    free(msg);

    /* A registry (behind the corrupting proxy) whose bytes do not match. */
    char man[KILN_DIGEST_STRLEN + 1], layer[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "img:1", 200000, "amd64", man, layer) == 0);
    char dst[300];
    snprintf(dst, sizeof(dst), "%s/bad/img:1", e.reg.host);
    kiln_error *err = NULL;
    KT_REQUIRE(psh_push(e.s, "img:1", dst, &o, NULL, NULL, &err) == 0);
    rf_proxy px;
    KT_REQUIRE(rf_proxy_start(&px, e.dir, e.reg.port, "corrupt") == 0);
    char *d2 = NULL;
    psh_store *s2 = fresh_store(&d2);
    KT_REQUIRE(s2 != NULL);
    snprintf(ref, sizeof(ref), "127.0.0.1:%d/bad/img:1", px.port);
    KT_EXPECT_INT(pull(s2, ref, NULL, &o, &pr, &msg), KILN_EREMOTE);
    KT_EXPECT(msg != NULL && strstr(msg, "hashes to") != NULL);
    free(msg);
    snprintf(ref, sizeof(ref), "127.0.0.1:%d/bad/img@%s", px.port, man);
    KT_EXPECT_INT(pull(s2, ref, NULL, &o, &pr, &msg), KILN_EREMOTE);
    free(msg);
    rf_proxy_stop(&px);
    /* The manifest is fine but the layer is corrupted. */
    KT_REQUIRE(rf_proxy_start(&px, e.dir, e.reg.port, "ok,corrupt") == 0);
    snprintf(ref, sizeof(ref), "127.0.0.1:%d/bad/img:1", px.port);
    o.concurrency = 1;
    KT_EXPECT_INT(pull(s2, ref, NULL, &o, &pr, &msg), KILN_EREMOTE);
    KT_EXPECT(msg != NULL && strstr(msg, "hashes to") != NULL);
    free(msg);
    rf_proxy_stop(&px);
    /* Nothing tagged, no blob stored, no temp left behind. */
    psh_image_list l;
    KT_REQUIRE(psh_store_list(s2, &l, NULL) == 0);
    KT_EXPECT_INT(l.n, 0);
    psh_image_list_dispose(&l);
    KT_EXPECT_INT(kt_sh("[ -z \"$(ls -A %s/blobs/sha256)\" ] && [ -z \"$(ls -A %s/.kiln/tmp)\" ]",
                        psh_store_path(s2), psh_store_path(s2)),
                  0);
    KT_EXPECT(!psh_store_has_blob(s2, layer));
    psh_store_free(s2);
    kt_rmrf(d2);
    free(d2);
    rf_env_close(&e);
}
