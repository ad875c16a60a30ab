/* Image assembly: config and manifest contents, base stacking, and bad input
 * that must leave the store unchanged. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "psh_commit.h"
#include "store_fixture.h"

#define ZERO_DIGEST "sha256:0000000000000000000000000000000000000000000000000000000000000000"

/* Creates e->dir/name with a few files; returns the path (static buffer rotation). */
static const char *make_diff(fx_env *e, const char *name, const char *file, const char *text)
{
    static char bufs[4][4096];
    static int k;
    char *p = bufs[k++ % 4];
    snprintf(p, 4096, "%s/%s", e->dir, name);
    if (mkdir(p, 0755) < 0)
        return NULL;
    char f[4200];
    snprintf(f, sizeof(f), "%s/%s", p, file);
    return kt_write_file(f, text) == 0 ? p : NULL;
}

static cJSON *read_json_blob(fx_env *e, const char *digest)
{
    char *buf = NULL;
    size_t len = 0;
    if (psh_store_read_blob(e->s, digest, 1 << 20, &buf, &len, NULL) < 0)
        return NULL;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static char *index_bytes(fx_env *e)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.json", psh_store_path(e->s));
    return kt_read_file(path, NULL);
}

static void basic_spec(psh_commit_spec *spec)
{
    psh_commit_spec_init(spec);
    spec->platform.os = "linux";
    spec->platform.architecture = "arm64";
    spec->platform.variant = "v8";
    spec->source_date_epoch = 1700000000;
    spec->pack.threads = 1;
}

KT_TEST(commit_scratch_image)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *l1 = make_diff(&e, "l1", "hello.txt", "hello\n");
    KT_REQUIRE(l1 != NULL);
    static const char *env_v[] = {"PATH=/usr/bin:/bin", "A=1"};
    static const char *cmd_v[] = {"/bin/sh", "-c", "echo hi"};
    static const char *ports_v[] = {"80/tcp", "53/udp", "80/tcp"};
    static const char *hc_v[] = {"CMD-SHELL", "true"};
    static const psh_kv labels[] = {{"z", "last"}, {"a", "first"}, {"z", "really last"}};
    static const char *tags[] = {"app:1", "localhost:5000/team/app"};
    psh_history_entry hist[] = {
        {.created_by = "ENV A=1", .empty_layer = true, .created = -1},
        {.created_by = "COPY hello.txt /", .comment = "c", .created = -1},
    };
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.layers = &l1;
    spec.n_layers = 1;
    spec.history = hist;
    spec.n_history = 2;
    spec.tags = tags;
    spec.n_tags = 2;
    spec.config.env = (psh_strv){env_v, 2, true};
    spec.config.cmd = (psh_strv){cmd_v, 3, true};
    spec.config.entrypoint = (psh_strv){NULL, 0, true};
    spec.config.exposed_ports = (psh_strv){ports_v, 3, true};
    spec.config.labels = labels;
    spec.config.n_labels = 3;
    spec.config.user = "1000:1000";
    spec.config.working_dir = "/srv";
    spec.config.stop_signal = "SIGTERM";
    spec.config.healthcheck.test = (psh_strv){hc_v, 2, true};
    spec.config.healthcheck.interval_ns = 30000000000LL;
    spec.config.healthcheck.retries = 3;
    psh_commit_result res;
    kiln_error *err = NULL;
    int r = psh_commit(e.s, &spec, &res, &err);
    if (r < 0)
        KT_FAIL("commit: %s", err->msg);
    kiln_error_free(&err);
    KT_REQUIRE(r == 0);
    KT_EXPECT_INT(res.n_layers, 1);
    KT_EXPECT(!res.layers[0].from_base);
    KT_EXPECT_STR(res.layers[0].blob.media_type, PSH_MT_OCI_LAYER_GZ);

    psh_descriptor d;
    KT_EXPECT_INT(psh_store_resolve(e.s, "docker.io/library/app:1", &d, NULL), 0);
    KT_EXPECT_STR(d.digest, res.manifest.digest);
    KT_EXPECT_INT(psh_store_resolve(e.s, "localhost:5000/team/app:latest", &d, NULL), 0);
    KT_EXPECT_STR(d.digest, res.manifest.digest);

    cJSON *cfg = read_json_blob(&e, res.config.digest);
    KT_REQUIRE(cfg != NULL);
    KT_EXPECT_STR(cJSON_GetObjectItem(cfg, "created")->valuestring, "2023-11-14T22:13:20Z");
    KT_EXPECT_STR(cJSON_GetObjectItem(cfg, "architecture")->valuestring, "arm64");
    KT_EXPECT_STR(cJSON_GetObjectItem(cfg, "variant")->valuestring, "v8");
    cJSON *c = cJSON_GetObjectItem(cfg, "config");
    KT_EXPECT_STR(cJSON_GetObjectItem(c, "User")->valuestring, "1000:1000");
    KT_EXPECT_INT(cJSON_GetArraySize(cJSON_GetObjectItem(c, "Entrypoint")), 0);
    KT_EXPECT_INT(cJSON_GetArraySize(cJSON_GetObjectItem(c, "ExposedPorts")), 2);
    KT_EXPECT_STR(cJSON_GetObjectItem(c, "ExposedPorts")->child->string, "53/udp");
    KT_EXPECT_STR(cJSON_GetObjectItem(c, "Labels")->child->string, "a");
    KT_EXPECT_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "Labels"), "z")->valuestring,
                  "really last");
    cJSON *hc = cJSON_GetObjectItem(c, "Healthcheck");
    KT_EXPECT(cJSON_GetObjectItem(hc, "Interval")->valuedouble == 30000000000.0);
    KT_EXPECT(cJSON_GetObjectItem(c, "Volumes") == NULL);
    cJSON *ids = cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "rootfs"), "diff_ids");
    KT_EXPECT_INT(cJSON_GetArraySize(ids), 1);
    KT_EXPECT_STR(ids->child->valuestring, res.layers[0].diff_id);
    cJSON *h = cJSON_GetObjectItem(cfg, "history");
    KT_EXPECT_INT(cJSON_GetArraySize(h), 2);
    KT_EXPECT(cJSON_IsTrue(cJSON_GetObjectItem(h->child, "empty_layer")));
    KT_EXPECT(cJSON_GetObjectItem(h->child->next, "empty_layer") == NULL);
    cJSON_Delete(cfg);

    /* The stored manifest bytes hash to the returned digest and list the layer. */
    cJSON *man = read_json_blob(&e, res.manifest.digest);
    KT_REQUIRE(man != NULL);
    KT_EXPECT_STR(cJSON_GetObjectItem(man, "mediaType")->valuestring, PSH_MT_OCI_MANIFEST);
    cJSON *layer0 = cJSON_GetArrayItem(cJSON_GetObjectItem(man, "layers"), 0);
    KT_EXPECT_STR(cJSON_GetObjectItem(layer0, "digest")->valuestring, res.layers[0].blob.digest);
    cJSON_Delete(man);

    /* Same input, same SOURCE_DATE_EPOCH: same digests. */
    psh_commit_result again;
    spec.n_tags = 0;
    KT_REQUIRE(psh_commit(e.s, &spec, &again, NULL) == 0);
    KT_EXPECT_STR(again.manifest.digest, res.manifest.digest);
    psh_commit_result_dispose(&again);
    psh_commit_result_dispose(&res);
    fx_env_close(&e);
}

KT_TEST(commit_on_base_stacks_layers)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *l1 = make_diff(&e, "l1", "a", "base file\n");
    const char *l2 = make_diff(&e, "l2", "b", "top file\n");
    KT_REQUIRE(l1 && l2);
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.layers = &l1;
    spec.n_layers = 1;
    psh_commit_result base;
    KT_REQUIRE(psh_commit(e.s, &spec, &base, NULL) == 0);

    basic_spec(&spec);
    spec.base = base.manifest.digest;
    spec.layers = &l2;
    spec.n_layers = 1;
    psh_commit_result top;
    KT_REQUIRE(psh_commit(e.s, &spec, &top, NULL) == 0);
    KT_REQUIRE(top.n_layers == 2);
    KT_EXPECT(top.layers[0].from_base);
    KT_EXPECT_STR(top.layers[0].blob.digest, base.layers[0].blob.digest);
    KT_EXPECT_STR(top.layers[0].diff_id, base.layers[0].diff_id);
    cJSON *man = read_json_blob(&e, top.manifest.digest);
    cJSON *ml = cJSON_GetObjectItem(man, "layers");
    KT_EXPECT_INT(cJSON_GetArraySize(ml), 2);
    KT_EXPECT_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(ml, 0), "mediaType")->valuestring,
                  PSH_MT_OCI_LAYER_GZ);
    KT_EXPECT_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(ml, 0), "digest")->valuestring,
                  base.layers[0].blob.digest);
    cJSON_Delete(man);
    cJSON *cfg = read_json_blob(&e, top.config.digest);
    cJSON *ids = cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "rootfs"), "diff_ids");
    KT_EXPECT_INT(cJSON_GetArraySize(ids), 2);
    KT_EXPECT_STR(cJSON_GetArrayItem(ids, 0)->valuestring, base.layers[0].diff_id);
    KT_EXPECT_STR(cJSON_GetArrayItem(ids, 1)->valuestring, top.layers[1].diff_id);
    KT_EXPECT_INT(cJSON_GetArraySize(cJSON_GetObjectItem(cfg, "history")), 2);
    cJSON_Delete(cfg);
    psh_commit_result_dispose(&base);
    psh_commit_result_dispose(&top);
    fx_env_close(&e);
}

KT_TEST(commit_bad_input_changes_nothing)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    KT_REQUIRE(psh_store_tag(e.s, m1, "app:1", NULL) == 0);
    const char *good = make_diff(&e, "ok", "f", "x");
    KT_REQUIRE(good != NULL);
    char outside[4096], viasym[4096], dotdot[4096];
    char *other = kt_tmpdir("store-test");
    KT_REQUIRE(other != NULL);
    snprintf(outside, sizeof(outside), "%s", other);
    snprintf(viasym, sizeof(viasym), "%s/sym", e.dir);
    KT_REQUIRE(symlink(other, viasym) == 0);
    snprintf(dotdot, sizeof(dotdot), "%s/ok/../../", e.dir);
    char *before = index_bytes(&e);
    int before_blobs = 0;
    {
        char b[4096];
        snprintf(b, sizeof(b), "%s/blobs/sha256", psh_store_path(e.s));
        before_blobs = kt_count_dir(b);
    }

    struct {
        const char *what;
        const char *layer;
        const char *tag;
        const char *base;
        const char *arch;
        int code;
    } cases[] = {
        {"outside dir", outside, "x:1", NULL, "amd64", KILN_EPERM},
        {"symlink escape", viasym, "x:1", NULL, "amd64", KILN_EPERM},
        {"dot-dot escape", dotdot, "x:1", NULL, "amd64", KILN_EPERM},
        {"missing dir", "/nonexistent/kiln/diff", "x:1", NULL, "amd64", KILN_ENOENT},
        {"bad tag", good, "Bad:1", NULL, "amd64", KILN_EINVAL},
        {"digest tag", good, "sha256:abc", NULL, "amd64", KILN_EINVAL},
        {"missing base", good, "x:1", ZERO_DIGEST, "amd64", KILN_ENOENT},
        {"malformed base", good, "x:1", "sha256:../../etc", "amd64", KILN_EINVAL},
        {"base not a manifest", good, "x:1", NULL, "amd64", KILN_EINVAL},
        {"x86_64", good, "x:1", NULL, "x86_64", KILN_EINVAL},
        {"the store itself", NULL, "x:1", NULL, "amd64", KILN_EPERM},
        {"outside diff_root", good, "x:1", NULL, "amd64", KILN_EPERM},
    };
    char layer_blob[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(psh_store_put_blob_bytes(e.s, NULL, NULL, "{}", 2, layer_blob, NULL) == 0);
    before_blobs++;
    cases[8].base = layer_blob;
    char blobs_dir[4096], snapshots[4096];
    snprintf(blobs_dir, sizeof(blobs_dir), "%s/blobs", psh_store_path(e.s));
    cases[10].layer = blobs_dir;
    snprintf(snapshots, sizeof(snapshots), "%s/snapshots", e.dir);
    KT_REQUIRE(mkdir(snapshots, 0755) == 0);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        psh_commit_spec spec;
        basic_spec(&spec);
        spec.platform.architecture = cases[i].arch;
        spec.layers = &cases[i].layer;
        spec.n_layers = 1;
        spec.tags = &cases[i].tag;
        spec.n_tags = 1;
        spec.base = cases[i].base;
        if (i == 11)
            spec.diff_root = snapshots; /* "good" lies in the data dir, not in snapshots/ */
        psh_commit_result res;
        kiln_error *err = NULL;
        int r = psh_commit(e.s, &spec, &res, &err);
        if (r != cases[i].code)
            KT_FAIL("%s: got %d (%s), want %d", cases[i].what, r, err ? err->msg : "",
                    cases[i].code);
        KT_EXPECT(err != NULL);
        kiln_error_free(&err);
    }
    /* History that does not match the layers. */
    psh_commit_spec spec;
    basic_spec(&spec);
    psh_history_entry h = {.created_by = "RUN x", .created = -1};
    spec.layers = &good;
    spec.n_layers = 1;
    spec.history = &h;
    spec.n_history = 1;
    h.empty_layer = true;
    psh_commit_result res;
    KT_EXPECT_INT(psh_commit(e.s, &spec, &res, NULL), KILN_EINVAL);

    char *after = index_bytes(&e);
    KT_EXPECT_STR(after, before);
    char b[4096];
    snprintf(b, sizeof(b), "%s/blobs/sha256", psh_store_path(e.s));
    KT_EXPECT_INT(kt_count_dir(b), before_blobs);
    free(before);
    free(after);
    kt_rmrf(other);
    free(other);
    fx_env_close(&e);
}

KT_TEST(commit_base_with_missing_layer_is_enoent)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char m1[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(fx_fake_image(e.s, "one", m1) == 0);
    /* Delete the fake image's layer blob behind the store's back. */
    char *buf = NULL;
    KT_REQUIRE(psh_store_read_blob(e.s, m1, 1 << 20, &buf, NULL, NULL) == 0);
    cJSON *man = cJSON_Parse(buf);
    free(buf);
    const char *ld =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(man, "layers"), 0), "digest")
            ->valuestring;
    char p[4096];
    snprintf(p, sizeof(p), "%s/blobs/sha256/%s", psh_store_path(e.s), ld + 7);
    KT_REQUIRE(unlink(p) == 0);
    cJSON_Delete(man);
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.base = m1;
    psh_commit_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(psh_commit(e.s, &spec, &res, &err), KILN_ENOENT);
    KT_EXPECT(err && strstr(err->msg, "layer"));
    kiln_error_free(&err);
    fx_env_close(&e);
}

KT_TEST(commit_reuses_remembered_layer)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *l1 = make_diff(&e, "snap1", "f", "first\n");
    KT_REQUIRE(l1 != NULL);
    char cdir[4096];
    snprintf(cdir, sizeof(cdir), "%s/pack-cache", e.dir);
    psh_pack_cache *cache = NULL;
    KT_REQUIRE(psh_pack_cache_open(&cache, cdir, NULL) == 0);
    const char *key = "snapshot-1";
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.layers = &l1;
    spec.n_layers = 1;
    spec.pack_cache = cache;
    spec.layer_keys = &key;
    psh_commit_result a, b, c;
    KT_REQUIRE(psh_commit(e.s, &spec, &a, NULL) == 0);
    /* The diff changes behind the key's back: a hit proves nothing was re-packed. */
    char f[4200];
    snprintf(f, sizeof(f), "%s/g", l1);
    KT_REQUIRE(kt_write_file(f, "second\n") == 0);
    KT_REQUIRE(psh_commit(e.s, &spec, &b, NULL) == 0);
    KT_EXPECT_STR(b.layers[0].blob.digest, a.layers[0].blob.digest);
    KT_EXPECT_STR(b.layers[0].diff_id, a.layers[0].diff_id);
    /* Once the blob is gone (GC), the layer is packed again. */
    psh_gc_result gr;
    KT_REQUIRE(psh_store_gc(e.s, NULL, &gr, NULL) == 0);
    KT_EXPECT(!psh_store_has_blob(e.s, a.layers[0].blob.digest));
    KT_REQUIRE(psh_commit(e.s, &spec, &c, NULL) == 0);
    KT_EXPECT(strcmp(c.layers[0].blob.digest, a.layers[0].blob.digest) != 0);
    KT_EXPECT(psh_store_has_blob(e.s, c.layers[0].blob.digest));
    psh_commit_result_dispose(&a);
    psh_commit_result_dispose(&b);
    psh_commit_result_dispose(&c);
    psh_pack_cache_free(cache);
    fx_env_close(&e);
}

/* A pulled Docker schema 2 base: its layer blobs are reused byte for byte and
 * their media types become the OCI equivalents in the OCI manifest. */
KT_TEST(commit_on_docker_base_uses_oci_layer_types)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char layer[KILN_DIGEST_STRLEN + 1], cfg[KILN_DIGEST_STRLEN + 1], man[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(psh_store_put_blob_bytes(e.s, NULL, NULL, "gz", 2, layer, NULL) == 0);
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
             "\"diff_ids\":[\"%s\"]},\"history\":[{\"created_by\":\"base step\"}]}",
             ZERO_DIGEST);
    KT_REQUIRE(psh_store_put_blob_bytes(e.s, NULL, NULL, text, strlen(text), cfg, NULL) == 0);
    size_t cfg_len = strlen(text);
    snprintf(text, sizeof(text),
             "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
             "\"size\":%zu,\"digest\":\"%s\"},\"layers\":[{\"mediaType\":\"%s\",\"size\":2,"
             "\"digest\":\"%s\"}]}",
             PSH_MT_DOCKER_MANIFEST, PSH_MT_DOCKER_CONFIG, cfg_len, cfg, PSH_MT_DOCKER_LAYER_GZ,
             layer);
    KT_REQUIRE(psh_store_put_blob_bytes(e.s, NULL, NULL, text, strlen(text), man, NULL) == 0);
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.base = man;
    psh_history_entry h = {.created_by = "LABEL a=b", .empty_layer = true, .created = -1};
    spec.history = &h;
    spec.n_history = 1;
    psh_commit_result res;
    kiln_error *err = NULL;
    int r = psh_commit(e.s, &spec, &res, &err);
    if (r < 0)
        KT_FAIL("%s", err->msg);
    kiln_error_free(&err);
    KT_REQUIRE(r == 0);
    KT_EXPECT_INT(res.n_layers, 1);
    KT_EXPECT_STR(res.layers[0].diff_id, ZERO_DIGEST);
    cJSON *m = read_json_blob(&e, res.manifest.digest);
    cJSON *l0 = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "layers"), 0);
    KT_EXPECT_STR(cJSON_GetObjectItem(l0, "mediaType")->valuestring, PSH_MT_OCI_LAYER_GZ);
    KT_EXPECT_STR(cJSON_GetObjectItem(l0, "digest")->valuestring, layer);
    KT_EXPECT_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "config"), "mediaType")->valuestring,
                  PSH_MT_OCI_CONFIG);
    cJSON_Delete(m);
    cJSON *c = read_json_blob(&e, res.config.digest);
    cJSON *hist = cJSON_GetObjectItem(c, "history");
    KT_EXPECT_INT(cJSON_GetArraySize(hist), 2);
    KT_EXPECT_STR(cJSON_GetObjectItem(hist->child, "created_by")->valuestring, "base step");
    cJSON_Delete(c);
    psh_commit_result_dispose(&res);
    fx_env_close(&e);
}

KT_TEST(commit_accepts_dirs_inside_diff_root)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    char root[4096];
    snprintf(root, sizeof(root), "%s/snapshots", e.dir);
    KT_REQUIRE(mkdir(root, 0755) == 0);
    const char *l = make_diff(&e, "snapshots/step1", "f", "x");
    KT_REQUIRE(l != NULL);
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.diff_root = root;
    spec.layers = &l;
    spec.n_layers = 1;
    psh_commit_result res;
    KT_EXPECT_INT(psh_commit(e.s, &spec, &res, NULL), 0);
    psh_commit_result_dispose(&res);
    fx_env_close(&e);
}

KT_TEST(commit_docker_schema2_on_request)
{
    fx_env e;
    KT_REQUIRE(fx_env_open(&e) == 0);
    const char *l1 = make_diff(&e, "l1", "a", "base\n");
    const char *l2 = make_diff(&e, "l2", "b", "top\n");
    KT_REQUIRE(l1 && l2);
    psh_commit_spec spec;
    basic_spec(&spec);
    spec.layers = &l1;
    spec.n_layers = 1;
    psh_commit_result base, top;
    KT_REQUIRE(psh_commit(e.s, &spec, &base, NULL) == 0); /* an OCI base */
    basic_spec(&spec);
    spec.base = base.manifest.digest;
    spec.layers = &l2;
    spec.n_layers = 1;
    spec.docker_schema2 = true;
    KT_REQUIRE(psh_commit(e.s, &spec, &top, NULL) == 0);
    KT_EXPECT_STR(top.manifest.media_type, PSH_MT_DOCKER_MANIFEST);
    KT_EXPECT_STR(top.config.media_type, PSH_MT_DOCKER_CONFIG);
    cJSON *m = read_json_blob(&e, top.manifest.digest);
    KT_EXPECT_STR(cJSON_GetObjectItem(m, "mediaType")->valuestring, PSH_MT_DOCKER_MANIFEST);
    KT_EXPECT_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "config"), "mediaType")->valuestring,
                  PSH_MT_DOCKER_CONFIG);
    const cJSON *l;
    int n = 0;
    cJSON_ArrayForEach(l, cJSON_GetObjectItem(m, "layers"))
    {
        KT_EXPECT_STR(cJSON_GetObjectItem(l, "mediaType")->valuestring, PSH_MT_DOCKER_LAYER_GZ);
        n++;
    }
    KT_EXPECT_INT(n, 2);
    /* Same bytes under both names: the base layer blob is shared. */
    KT_EXPECT_STR(top.layers[0].blob.digest, base.layers[0].blob.digest);
    cJSON_Delete(m);
    spec.pack.comp = PSH_COMP_ZSTD;
    kiln_error *err = NULL;
    psh_commit_result bad;
    KT_EXPECT_INT(psh_commit(e.s, &spec, &bad, &err), KILN_EINVAL);
    KT_EXPECT(err && strstr(err->msg, "zstd"));
    kiln_error_free(&err);
    psh_commit_result_dispose(&base);
    psh_commit_result_dispose(&top);
    fx_env_close(&e);
}
