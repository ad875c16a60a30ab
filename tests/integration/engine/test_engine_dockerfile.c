/* Dockerfile instructions whose effect shows in the image, end to end without
 * RUN: a real kiln-pusher on a temp data dir, images FROM scratch built with
 * bld_build(), checked with umoci (files and modes) and jq (config).  Covers
 * symbolic COPY/ADD --chmod applied as BuildKit does (files vs directories),
 * EXPOSE of a split expansion, TARGETSTAGE and pattern substitutions.  Needs
 * root (owners of copied files); exits 77 otherwise or when a tool is
 * missing. */
#include "kt.h"
#include "svc_harness.h"
#include "bld_engine.h"
#include "error.h"
#include "rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dir;
static char data[512], url[600];
static th_proc pusher;
static kiln_rpc_client *client;
static bld_engine *engine;

static int build(const char *ctx, const char *dockerfile, const char *tag, const char *target,
                 const char *const *args, size_t n_args)
{
    const char *tags[] = {tag};
    bld_build_spec spec = {
        .context_dir = ctx,
        .dockerfile = dockerfile,
        .tags = tags,
        .n_tags = 1,
        .build_args = args,
        .n_build_args = n_args,
        .target = target,
        .source_date_epoch = -1,
    };
    bld_build_events ev = {0};
    bld_build_result res = {0};
    kiln_error *err = NULL;
    int rc = bld_build(engine, &spec, &ev, &res, &err);
    if (rc < 0)
        fprintf(stderr, "build %s: %s (line %d)\n", tag, err ? err->msg : "?", res.failed_line);
    kiln_error_free(&err);
    return rc;
}

static int unpack(const char *tag, const char *bundle)
{
    return kt_sh("cd %s && rm -rf %s && umoci unpack --image %s/store:%s %s >/dev/null 2>&1", dir,
                 bundle, data, tag, bundle);
}

/* The image config of tag, as JSON, filtered by jq expression q equals want. */
static int config_is(const char *tag, const char *q, const char *want)
{
    return kt_sh(
        "d=$(jq -r '.manifests[] | select(.annotations[\"org.opencontainers.image.ref.name\"]"
        " == \"%s\") | .digest' %s/store/index.json | head -1 | cut -d: -f2) && "
        "m=$(jq -r .config.digest %s/store/blobs/sha256/$d | cut -d: -f2) && "
        "got=$(jq -c '%s' %s/store/blobs/sha256/$m) && [ \"$got\" = '%s' ] || "
        "{ echo \"config %s: got $got, want %s\" >&2; exit 1; }",
        tag, data, data, q, data, want, q, want);
}

KT_SETUP(setup)
{
    kiln_error *err = NULL;
    if (geteuid() != 0 ||
        kt_sh("for t in umoci jq stat; do command -v $t >/dev/null || exit 1; done") != 0) {
        fprintf(stderr, "skip: needs root, umoci, jq\n");
        exit(77);
    }
    dir = kt_tmpdir("engine-df");
    KT_REQUIRE(dir != NULL);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(url, sizeof(url), "ipc://%s/run/pusher.sock", data);
    KT_REQUIRE(kt_sh("mkdir -p %s", data) == 0);
    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", data, NULL};
    KT_REQUIRE(th_spawn(&pusher, dir, "pusher", argv) == 0);
    KT_REQUIRE(th_wait_ready(url, 10000) == 0);
    KT_REQUIRE(kiln_rpc_client_new(&client, url, NULL, true, &err) == 0);
    KT_REQUIRE(bld_engine_new(&engine, data, client, &err) == 0);
}

KT_TEST(copy_chmod_symbolic)
{
    if (engine == NULL)
        return;
    char ctx[700];
    snprintf(ctx, sizeof(ctx), "%s/ctx-chmod", dir);
    KT_REQUIRE(kt_sh("mkdir -p %s/tree/sub && cd %s && printf a > tree/plain && printf b > "
                     "tree/tool && chmod 0666 tree/plain && chmod 0744 tree/tool && "
                     "chmod 0700 tree/sub && printf c > tree/sub/f && chmod 0640 tree/sub/f",
                     ctx, ctx) == 0);
    const char *df = "FROM scratch\n"
                     "COPY --chmod=a+X tree /x/\n"
                     "COPY --chmod=go-w tree /w/\n"
                     "ARG M=u=rw,g=r,o=r\n"
                     "ADD --chmod=$M tree /s/\n"
                     "COPY --chmod=0750 tree/plain /o\n";
    KT_REQUIRE(build(ctx, df, "chmod:1", NULL, NULL, 0) == 0);
    KT_REQUIRE(unpack("chmod:1", "bc") == 0);
    char r[800];
    snprintf(r, sizeof(r), "%s/bc/rootfs", dir);
    /* a+X: files without an execute bit unchanged, with one executable by all,
     * directories searchable by all. */
    KT_EXPECT_INT(
        kt_sh("cd %s/x && [ \"$(echo $(stat -c %%a plain tool sub sub/f))\" = "
              "'666 755 711 640' ] || { stat -c '%%n %%a' plain tool sub sub/f >&2; exit 1; }",
              r),
        0);
    KT_EXPECT_INT(
        kt_sh("cd %s/w && [ \"$(echo $(stat -c %%a plain tool sub sub/f))\" = "
              "'644 744 700 640' ] || { stat -c '%%n %%a' plain tool sub sub/f >&2; exit 1; }",
              r),
        0);
    KT_EXPECT_INT(
        kt_sh("cd %s/s && [ \"$(echo $(stat -c %%a plain tool sub sub/f))\" = "
              "'644 644 644 644' ] || { stat -c '%%n %%a' plain tool sub sub/f >&2; exit 1; }",
              r),
        0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c %%a %s/o)\" = 750 ]", r), 0);
    /* A different symbolic mode is a different step (cache key). */
    const char *df2 = "FROM scratch\nCOPY --chmod=a+X tree /x/\nCOPY --chmod=go-r tree /w/\n";
    KT_REQUIRE(build(ctx, df2, "chmod:2", NULL, NULL, 0) == 0);
    KT_REQUIRE(unpack("chmod:2", "bc2") == 0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c %%a %s/bc2/rootfs/w/plain)\" = 622 ]", dir), 0);
}

KT_TEST(expose_targetstage_patterns_in_config)
{
    if (engine == NULL)
        return;
    char ctx[700];
    snprintf(ctx, sizeof(ctx), "%s/ctx-cfg", dir);
    KT_REQUIRE(kt_sh("mkdir -p %s", ctx) == 0);
    const char *df = "ARG V=release-1.2.3\n"
                     "FROM scratch AS base\n"
                     "ARG PORTS=\"3000 4000/udp\"\n"
                     "ARG NONE\n"
                     "EXPOSE $PORTS $NONE 5000-5001\n"
                     "ARG TARGETSTAGE\n"
                     "ARG V\n"
                     "LABEL stage=$TARGETSTAGE ver=${V#release-} major=${V%%.*} dots=${V//./_}\n"
                     "FROM base AS final\n"
                     "FROM scratch\n";
    KT_REQUIRE(build(ctx, df, "cfg:1", "final", NULL, 0) == 0);
    KT_EXPECT_INT(config_is("cfg:1", ".config.ExposedPorts | keys",
                            "[\"3000/tcp\",\"4000/udp\",\"5000/tcp\",\"5001/tcp\"]"),
                  0);
    KT_EXPECT_INT(config_is("cfg:1", ".config.Labels",
                            "{\"dots\":\"release-1_2_3\",\"major\":\"release-1\",\"stage\":"
                            "\"final\",\"ver\":\"1.2.3\"}"),
                  0);
    /* No --target: the last stage is unnamed, TARGETSTAGE is "default". */
    const char *df2 = "FROM scratch\nARG TARGETSTAGE\nLABEL stage=$TARGETSTAGE\nEXPOSE $NOTSET\n";
    KT_REQUIRE(build(ctx, df2, "cfg:2", NULL, NULL, 0) == 0);
    KT_EXPECT_INT(config_is("cfg:2", ".config.Labels.stage", "\"default\""), 0);
    KT_EXPECT_INT(config_is("cfg:2", ".config.ExposedPorts // {} | length", "0"), 0);
}

KT_TEARDOWN(teardown)
{
    bld_engine_free(engine);
    if (client)
        kiln_rpc_client_free(client);
    if (pusher.pid > 0)
        th_stop(&pusher, 10000, NULL);
    if (dir && !getenv("KT_KEEP"))
        kt_rmrf(dir);
}
