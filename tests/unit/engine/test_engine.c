/* Build engine end to end: a real kiln-pusher on a temp data dir, a busybox
 * base imported from a rootfs made of /bin/busybox, Dockerfiles built with
 * bld_build(), results checked with skopeo, umoci and jq.  Needs root (the
 * RUN sandbox): exits 77 when the sandbox preflight says RUN cannot work. */
#include "kt.h"
#include "svc_harness.h"
#include "bld_engine.h"
#include "bld_sandbox.h"
#include "units.h"
#include "events.h"
#include "rpc.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char *dir;
static char data[512], url[600];
static th_proc pusher;
static kiln_rpc_client *client;
static bld_engine *engine;

/* What the callbacks saw during one build. */
typedef struct seen {
    char out[8192]; /* "1:line\n" / "2:line\n" */
    size_t out_len;
    unsigned done, cached, stages;
    char keys[16][80]; /* cache keys of the first steps done */
} seen;

static void on_output(void *ud, size_t stage, size_t step, int stream, const char *line, size_t len)
{
    seen *s = ud;
    int n = snprintf(s->out + s->out_len, sizeof(s->out) - s->out_len, "%d:%.*s\n", stream,
                     (int)len, line);
    if (n > 0 && s->out_len + (size_t)n < sizeof(s->out))
        s->out_len += (size_t)n;
}

static void on_step_done(void *ud, size_t stage, size_t step, int cached, const char *key,
                         uint64_t bytes, uint64_t ms)
{
    seen *s = ud;
    if (s->done < 16)
        snprintf(s->keys[s->done], sizeof(s->keys[0]), "%s", key);
    s->done++;
    s->cached += cached;
}

static void on_stage(void *ud, size_t stage, const char *name, const char *base)
{
    ((seen *)ud)->stages++;
}

/* Writes a context file (creating parents). */
static void put(const char *ctx, const char *name, const char *content)
{
    KT_EXPECT_INT(kt_sh("mkdir -p \"$(dirname %s/%s)\" && printf '%%s' '%s' > %s/%s", ctx, name,
                        content, ctx, name),
                  0);
}

static int build(const char *ctx, const char *dockerfile, const char *tag, bool no_cache, seen *s,
                 bld_build_result *res, kiln_error **err)
{
    const char *tags[] = {tag};
    bld_build_spec spec = {
        .context_dir = ctx,
        .dockerfile = dockerfile,
        .tags = tags,
        .n_tags = 1,
        .no_cache = no_cache,
        .source_date_epoch = -1,
    };
    bld_build_events ev = {
        .stage_started = on_stage,
        .output = on_output,
        .step_done = on_step_done,
        .ud = s,
    };
    memset(s, 0, sizeof(*s));
    return bld_build(engine, &spec, &ev, res, err);
}

static char *ctxdir(const char *name)
{
    static char p[8][600];
    static int next;
    char *d = p[next++ % 8];
    snprintf(d, 600, "%s/%s", dir, name);
    kt_sh("rm -rf %s && mkdir -p %s", d, d);
    return d;
}

KT_SETUP(setup)
{
    bld_preflight_info pf;
    kiln_error *err = NULL;
    dir = kt_tmpdir("engine");
    KT_REQUIRE(dir != NULL);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(url, sizeof(url), "ipc://%s/run/pusher.sock", data);
    KT_REQUIRE(kt_sh("mkdir -p %s", data) == 0);
    if (geteuid() != 0 || bld_preflight(&pf, data, &err) < 0 || !pf.usable) {
        fprintf(stderr, "skip: RUN sandbox not usable here\n");
        kiln_error_free(&err);
        kt_rmrf(dir);
        exit(77);
    }
    KT_REQUIRE(kt_sh("set -e; R=%s/rootfs; mkdir -p $R/bin $R/etc $R/tmp; chmod 1777 $R/tmp; "
                     "cp \"$(command -v busybox)\" $R/bin/busybox; "
                     "for a in sh cat echo id ls true false mkdir touch stat; do "
                     "ln -s busybox $R/bin/$a; done; "
                     "printf 'root:x:0:0:root:/root:/bin/sh\\napp:x:1000:50::/home/app:/bin/sh\\n'"
                     " > $R/etc/passwd; printf 'root:x:0:\\napp:x:1000:\\nstaff:x:50:\\n' > "
                     "$R/etc/group",
                     dir) == 0);
    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", data, NULL};
    KT_REQUIRE(th_spawn(&pusher, dir, "pusher", argv) == 0);
    KT_REQUIRE(th_wait_ready(url, 10000) == 0);
    KT_REQUIRE(kiln_rpc_client_new(&client, url, NULL, true, &err) == 0);

    /* The base image, through the pusher's Import job. */
    char src[600];
    snprintf(src, sizeof(src), "%s/rootfs", dir);
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ImportRequest ir = KILN__V1__IMPORT_REQUEST__INIT;
    ir.source = src;
    ir.ref = "busybox:test";
    req.body_case = KILN__V1__REQUEST__BODY_IMPORT;
    req.import = &ir;
    kiln_reply *r = NULL;
    KT_REQUIRE(kiln_rpc_call(client, &req, &r, 10000, &err) == 0);
    char job[KILN_JOB_ID_MAX + 1];
    snprintf(job, sizeof(job), "%s", r->job_accepted->job_id);
    kiln_rpc_reply_free(r);
    bool ok = false;
    for (int i = 0; i < 60 && !ok; i++) {
        kiln_req wq = KILN__V1__REQUEST__INIT;
        Kiln__V1__WaitRequest wr = KILN__V1__WAIT_REQUEST__INIT;
        wr.job_id = job;
        wr.timeout_ms = 1000;
        wq.body_case = KILN__V1__REQUEST__BODY_WAIT;
        wq.wait = &wr;
        KT_REQUIRE(kiln_rpc_call(client, &wq, &r, 10000, &err) == 0);
        if (r->wait_reply->finished) {
            KT_EXPECT(r->wait_reply->terminal->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED);
            ok = true;
        }
        kiln_rpc_reply_free(r);
    }
    KT_REQUIRE(ok);
    KT_REQUIRE(bld_engine_new(&engine, data, client, &err) == 0);
    KT_EXPECT(bld_engine_preflight_json(engine)[0] == '{');
}

/* Config value through skopeo + jq (string compare). */
static int cfg_is(const char *tag, const char *jq, const char *want)
{
    return kt_sh("v=$(skopeo inspect --raw --config oci:%s/store:%s | jq -c '%s') && "
                 "[ \"$v\" = '%s' ] || { echo \"%s: $v\" >&2; exit 1; }",
                 data, tag, jq, want, jq);
}

static int unpack(const char *tag, const char *bundle)
{
    return kt_sh("cd %s && rm -rf %s && umoci unpack --image %s/store:%s %s >/dev/null 2>&1", dir,
                 bundle, data, tag, bundle);
}

KT_TEST(multi_stage_metadata_copy_run)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx1");
    put(ctx, "hello.txt", "hello");
    put(ctx, "data/f", "payload");
    put(ctx, "data/sub/g", "deep");
    KT_REQUIRE(kt_sh("touch -d '2001-02-03 04:05:06 UTC' %s/data/f && chmod 0600 %s/data/sub/g",
                     ctx, ctx) == 0);
    const char *df = "FROM busybox:test AS builder\n"
                     "WORKDIR /src\n"
                     "COPY hello.txt ./\n"
                     "RUN cat hello.txt > out.txt && echo ' built' >> out.txt && "
                     "echo 'line one' && echo 'err line' >&2\n"
                     "\n"
                     "FROM busybox:test\n"
                     "ENV GREETING=\"hello world\" MODE=prod\n"
                     "WORKDIR /app\n"
                     "COPY --from=builder /src/out.txt /app/\n"
                     "COPY --chown=app:staff --chmod=0640 data/ /app/data/\n"
                     "COPY --chown=app hello.txt /app/owned-by-app\n"
                     "USER app\n"
                     "RUN id -u && echo \"$GREETING in $(pwd)\" && touch /tmp/ran\n"
                     "EXPOSE 8080 53/udp\n"
                     "LABEL org.example.team=kiln\n"
                     "STOPSIGNAL SIGTERM\n"
                     "ENTRYPOINT [\"/bin/sh\", \"-c\"]\n"
                     "CMD [\"cat /app/out.txt\"]\n";
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    int rc = build(ctx, df, "app:1", false, &s, &res, &err);
    if (rc < 0)
        fprintf(stderr, "build: %s (line %d: %s)\n", err->msg, res.failed_line, res.failed_text);
    KT_REQUIRE(rc == 0);
    kiln_error_free(&err);
    KT_EXPECT(strncmp(res.digest, "sha256:", 7) == 0);
    KT_EXPECT_INT(s.stages, 2);
    KT_EXPECT(strstr(s.out, "1:line one\n") != NULL);
    KT_EXPECT(strstr(s.out, "2:err line\n") != NULL);
    KT_EXPECT(strstr(s.out, "1:1000\n") != NULL);                /* USER applies to RUN */
    KT_EXPECT(strstr(s.out, "1:hello world in /app\n") != NULL); /* ENV, WORKDIR */

    /* An unchanged multi-stage rebuild runs nothing (COPY --from included). */
    bld_build_result again;
    KT_REQUIRE(build(ctx, df, "app:1", false, &s, &again, &err) == 0);
    KT_EXPECT_INT(again.steps_run, 0);
    KT_EXPECT_STR(again.digest, res.digest);

    KT_EXPECT_INT(cfg_is("app:1", ".config.Env | map(select(startswith(\"GREETING=\")))",
                         "[\"GREETING=hello world\"]"),
                  0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.WorkingDir", "\"/app\""), 0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.User", "\"app\""), 0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.Entrypoint", "[\"/bin/sh\",\"-c\"]"), 0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.Cmd", "[\"cat /app/out.txt\"]"), 0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.ExposedPorts | keys", "[\"53/udp\",\"8080/tcp\"]"), 0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.Labels", "{\"org.example.team\":\"kiln\"}"), 0);
    KT_EXPECT_INT(cfg_is("app:1", ".config.StopSignal", "\"SIGTERM\""), 0);
    /* Base layer + WORKDIR (creates /app) + COPY --from + COPY + RUN;
     * metadata steps are empty_layer. */
    KT_EXPECT_INT(cfg_is("app:1", ".rootfs.diff_ids | length", "6"), 0);
    KT_EXPECT_INT(cfg_is("app:1", "[.history[] | select(.empty_layer != true)] | length", "6"), 0);
    KT_EXPECT_INT(cfg_is("app:1", "[.history[] | select(.empty_layer == true)] | length", "7"), 0);
    KT_EXPECT_INT(cfg_is("app:1", "[.history[] | select(.empty_layer == true) | .created_by][0]",
                         "\"ENV GREETING=\\\"hello world\\\" MODE=prod\""),
                  0);

    KT_REQUIRE(unpack("app:1", "b1") == 0);
    char r[700];
    snprintf(r, sizeof(r), "%s/b1/rootfs", dir);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/app/out.txt)\" = 'hello built' ]", r), 0);
    /* --chown/--chmod on the copied files only; mtimes preserved. */
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g %%a' %s/app/data/f)\" = '1000:50 640' ]", r), 0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g %%a' %s/app/data/sub/g)\" = '1000:50 640' ]", r),
                  0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%Y' %s/app/data/f)\" = 981173106 ]", r), 0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g' %s/app)\" = '0:0' ]", r), 0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g %%a' %s/app/out.txt)\" = '0:0 644' ]", r), 0);
    KT_EXPECT_INT(kt_sh("test -x %s/bin/busybox && test ! -e %s/src", r, r), 0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g' %s/app/owned-by-app)\" = '1000:1000' ]", r), 0);
    /* The created destination dir: 0755, owned by the --chown user. */
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g %%a' %s/app/data)\" = '1000:50 755' ]", r), 0);
}

KT_TEST(failing_run_reports_line)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx2");
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(kt_sh("cp %s/store/index.json %s/index.before", data, dir) == 0);
    int rc = build(ctx, "FROM busybox:test\nRUN true\nRUN echo about to fail; exit 3\n", "fail:1",
                   false, &s, &res, &err);
    KT_EXPECT_INT(rc, KILN_EREMOTE);
    KT_EXPECT_INT(res.failed_line, 3);
    KT_EXPECT(strstr(res.failed_text, "exit 3") != NULL);
    KT_EXPECT(err && strstr(err->msg, "exit code: 3") != NULL);
    KT_EXPECT(strstr(s.out, "1:about to fail\n") != NULL);
    kiln_error_free(&err);
    /* A Dockerfile error names its line too. */
    KT_EXPECT_INT(
        build(ctx, "FROM busybox:test\nRUN true\nBOGUS x\n", "fail:1", false, &s, &res, &err),
        KILN_EINVAL);
    KT_EXPECT_INT(res.failed_line, 3);
    KT_EXPECT_STR(res.failed_text, "BOGUS x");
    kiln_error_free(&err);
    /* So does an invalid base reference. */
    KT_EXPECT(build(ctx, "FROM busybox:test\nFROM busybox:-bad\nRUN true\n", "fail:1", false, &s,
                    &res, &err) < 0);
    KT_EXPECT_INT(res.failed_line, 2);
    kiln_error_free(&err);
    /* A privileged RUN is refused, not silently sandboxed. */
    KT_EXPECT_INT(build(ctx, "FROM busybox:test\nRUN --security=insecure true\n", "fail:1", true,
                        &s, &res, &err),
                  KILN_EPERM);
    KT_EXPECT_INT(res.failed_line, 2);
    KT_EXPECT(err && strstr(err->msg, "entitlement") != NULL);
    kiln_error_free(&err);
    /* Nothing was tagged. */
    KT_EXPECT_INT(kt_sh("cmp -s %s/store/index.json %s/index.before", data, dir), 0);
}

KT_TEST(dockerignore_and_context_escape)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx3");
    put(ctx, "keep.txt", "keep");
    put(ctx, "secret.key", "no");
    put(ctx, "logs/a.log", "no");
    put(ctx, "logs/keep.md", "yes");
    put(ctx, ".dockerignore", "*.key\nlogs/*.log\n");
    put(ctx, "src/app/x/m.c", "m");
    put(ctx, "src/app/y.c", "y");
    KT_REQUIRE(kt_sh("chmod 0750 %s", ctx) == 0); /* must not become the image root's mode */
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx,
                     "FROM busybox:test\nCOPY . /ctx/\nCOPY *.txt /glob/\n"
                     "COPY --exclude=**/*.md . /ex/\n"
                     "COPY --parents logs/keep.md keep.txt /par/\n"
                     "COPY --parents ./src/./app/x/*.c ./src/app/./y.c /piv/\n"
                     "COPY . /\n",
                     "ign:1", false, &s, &res, &err) == 0);
    KT_REQUIRE(unpack("ign:1", "b3") == 0);
    KT_EXPECT_INT(
        kt_sh("cd %s/b3/rootfs && test -f ctx/keep.txt && test ! -e ctx/secret.key && "
              "test ! -e ctx/logs/a.log && test -f ctx/logs/keep.md && "
              "test -f glob/keep.txt && test -f ex/keep.txt && test -d ex/logs && "
              "test ! -e ex/logs/keep.md && test -f par/logs/keep.md && test -f par/keep.txt && "
              "test -f piv/app/x/m.c && test -f piv/y.c && test ! -e piv/src",
              dir),
        0);

    /* A symlink in the context that points outside it. */
    KT_REQUIRE(kt_sh("ln -s /etc/shadow %s/shadow && ln -s / %s/up", ctx, ctx) == 0);
    KT_EXPECT_INT(build(ctx, "FROM busybox:test\nCOPY shadow /x\n", "esc:1", false, &s, &res, &err),
                  KILN_EPERM);
    KT_EXPECT_INT(res.failed_line, 2);
    kiln_error_free(&err);
    KT_EXPECT_INT(
        build(ctx, "FROM busybox:test\nCOPY up/etc/passwd /x\n", "esc:1", false, &s, &res, &err),
        KILN_EPERM);
    kiln_error_free(&err);
    KT_EXPECT_INT(build(ctx, "FROM busybox:test\nCOPY ../x /x\n", "esc:1", false, &s, &res, &err),
                  KILN_EPERM);
    kiln_error_free(&err);
    KT_EXPECT(build(ctx, "FROM busybox:test\nCOPY secret.key /x\n", "esc:1", false, &s, &res,
                    &err) == KILN_ENOENT);
    kiln_error_free(&err);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s/store:esc:1 >/dev/null 2>&1", data) != 0, 1);
}

KT_TEST(destination_symlink_stays_in_rootfs)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx5");
    put(ctx, "f", "inside");
    char host[700];
    snprintf(host, sizeof(host), "%s/hostdir", dir);
    KT_REQUIRE(kt_sh("mkdir -p %s", host) == 0);
    /* /link points at an absolute host-looking path: resolved inside the image. */
    char df[1400];
    snprintf(df, sizeof(df),
             "FROM busybox:test\nRUN ln -s %s /link && rm /bin/ls\nCOPY f /link/f\n", host);
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    int rc = build(ctx, df, "sym:1", false, &s, &res, &err);
    if (rc < 0)
        fprintf(stderr, "build: %s\n", err->msg);
    KT_REQUIRE(rc == 0);
    KT_EXPECT_INT(kt_sh("test ! -e %s/f", host), 0);
    KT_REQUIRE(unpack("sym:1", "b5") == 0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/b5/rootfs%s/f)\" = inside ]", dir, host), 0);
    /* RUN rm of a base file: a whiteout in the layer, the file gone after unpack. */
    KT_EXPECT_INT(kt_sh("test ! -e %s/b5/rootfs/bin/ls && test -L %s/b5/rootfs/bin/cat", dir, dir),
                  0);
}

KT_TEST(cache_rebuild_and_changed_source)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx4");
    put(ctx, "a.txt", "first");
    put(ctx, "b.txt", "other");
    const char *df = "FROM busybox:test\n"
                     "RUN --mount=type=cache,target=/c echo x >> /c/count && echo one > /one\n"
                     "COPY a.txt /a.txt\n"
                     "RUN cat /a.txt > /b.txt\n"
                     "COPY b.txt /c.txt\n"
                     "CMD [\"cat\", \"/b.txt\"]\n";
    seen s;
    bld_build_result r1, r2, r3;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, df, "cache:1", false, &s, &r1, &err) == 0);
    KT_EXPECT_INT(r1.steps_run, 5);
    KT_EXPECT_INT(r1.n_layers, 5);

    /* Unchanged rebuild: every step cached, nothing runs, same image (its
     * created time is its newest step's, so a later second changes nothing). */
    sleep(1);
    KT_REQUIRE(build(ctx, df, "cache:1", false, &s, &r2, &err) == 0);
    KT_EXPECT_INT(r2.steps_run, 0);
    KT_EXPECT_INT(r2.steps_cached, 5);
    KT_EXPECT_INT(s.cached, 5);
    KT_EXPECT(s.out_len == 0); /* no RUN output: nothing ran */
    KT_EXPECT_STR(r2.digest, r1.digest);
    /* The cache mount saw exactly one run. */
    KT_EXPECT_INT(kt_sh("[ \"$(cat $(find %s/cache-mounts -name count) | wc -l)\" = 1 ]", data), 0);
    fprintf(stderr, "cached rebuild: %llu ms\n", (unsigned long long)r2.duration_ms);

    /* One COPY source changed: the steps before it stay cached, it and the
     * ones after it run again. */
    put(ctx, "a.txt", "second");
    KT_REQUIRE(build(ctx, df, "cache:1", false, &s, &r3, &err) == 0);
    KT_EXPECT_INT(r3.steps_cached, 1);
    KT_EXPECT_INT(r3.steps_run, 4);
    KT_EXPECT(strcmp(r3.digest, r1.digest) != 0);
    KT_REQUIRE(unpack("cache:1", "b4") == 0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/b4/rootfs/b.txt)\" = second ]", dir), 0);

    /* --no-cache runs everything again. */
    KT_REQUIRE(build(ctx, df, "cache:2", true, &s, &r3, &err) == 0);
    KT_EXPECT_INT(r3.steps_run, 5);
    KT_EXPECT_INT(r3.steps_cached, 0);

    /* ... and keeps what this run made, even where a stored step has the
     * same key: a RUN with different output gives a different image. */
    const char *rnd = "FROM busybox:test\nRUN head -c 64 /dev/urandom > /r\n";
    bld_build_result n1, n2, n3;
    KT_REQUIRE(build(ctx, rnd, "rnd:1", true, &s, &n1, &err) == 0);
    KT_REQUIRE(build(ctx, rnd, "rnd:2", true, &s, &n2, &err) == 0);
    KT_EXPECT(strcmp(n1.digest, n2.digest) != 0);
    KT_EXPECT_INT(
        kt_sh("a=$(skopeo inspect --raw oci:%s/store:rnd:1 | jq -r '.layers[-1].digest'); "
              "b=$(skopeo inspect --raw oci:%s/store:rnd:2 | jq -r '.layers[-1].digest'); "
              "[ \"$a\" != \"$b\" ]",
              data, data),
        0);
    /* A cached build afterwards still finds the step. */
    KT_REQUIRE(build(ctx, rnd, "rnd:3", false, &s, &n3, &err) == 0);
    KT_EXPECT_INT(n3.steps_cached, 1);
}

/* COPY --link: a layer keyed without its parent, so a change below it
 * reuses it; a plain COPY after the same change runs again. */
KT_TEST(copy_link_survives_a_changed_parent)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx12");
    put(ctx, "l.txt", "linked");
    put(ctx, "p.txt", "plain");
    const char *df1 = "FROM busybox:test\n"
                      "RUN echo one > /below\n"
                      "COPY --link l.txt /opt/l/l.txt\n"
                      "COPY p.txt /opt/p.txt\n";
    const char *df2 = "FROM busybox:test\n"
                      "RUN echo two > /below\n"
                      "COPY --link l.txt /opt/l/l.txt\n"
                      "COPY p.txt /opt/p.txt\n";
    seen s;
    bld_build_result r1, r2;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, df1, "link:1", false, &s, &r1, &err) == 0);
    char k1[80];
    snprintf(k1, sizeof(k1), "%s", s.keys[1]);
    KT_REQUIRE(build(ctx, df2, "link:2", false, &s, &r2, &err) == 0);
    KT_EXPECT_INT(r2.steps_run, 2); /* the changed RUN and the plain COPY */
    KT_EXPECT_INT(r2.steps_cached, 1);
    KT_EXPECT_STR(s.keys[1], k1);
    KT_REQUIRE(unpack("link:2", "b12") == 0);
    KT_EXPECT_INT(
        kt_sh("cd %s/b12/rootfs && [ \"$(cat below)$(cat opt/l/l.txt)$(cat opt/p.txt)\" = "
              "twolinkedplain ] && test -x bin/busybox",
              dir),
        0);
    /* Both images share the linked layer's blob. */
    KT_EXPECT_INT(
        kt_sh("a=$(skopeo inspect --raw oci:%s/store:link:1 | jq -r '.layers[-2].digest'); "
              "b=$(skopeo inspect --raw oci:%s/store:link:2 | jq -r '.layers[-2].digest'); "
              "[ -n \"$a\" ] && [ \"$a\" = \"$b\" ]",
              data, data),
        0);
}

/* --label: set on the image after the Dockerfile's LABELs (which it overrides). */
KT_TEST(labels_from_the_command_line)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx13");
    put(ctx, "f", "x");
    const char *tags[] = {"lab:1"};
    const char *labels[] = {"a=1", "b=x=y", "empty="};
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = "FROM scratch\nLABEL a=0 keep=yes\nCOPY f /f\n",
                           .tags = tags,
                           .n_tags = 1,
                           .labels = labels,
                           .n_labels = 3,
                           .source_date_epoch = -1};
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(bld_build(engine, &spec, NULL, &res, &err) == 0);
    KT_EXPECT_INT(cfg_is("lab:1", ".config.Labels",
                         "{\"a\":\"1\",\"b\":\"x=y\",\"empty\":\"\",\"keep\":\"yes\"}"),
                  0);
    const char *bad[] = {"=v"};
    spec.labels = bad;
    spec.n_labels = 1;
    KT_EXPECT_INT(bld_build(engine, &spec, NULL, &res, &err), KILN_EINVAL);
    kiln_error_free(&err);
}

KT_TEST(from_stage_onbuild_heredocs_add_archive_copy_from_image)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx6");
    KT_REQUIRE(kt_sh("cd %s && mkdir -p a/x && echo why > a/x/y && touch -d @1000000000 a/x/y && "
                     "ln a/x/y a/x/hard && "
                     "tar --owner=123 --group=456 -czf arch.tar.gz -C a x && rm -rf a",
                     ctx) == 0);
    const char *df = "FROM busybox:test AS base\n"
                     "ENV A=1\n"
                     "RUN echo base > /base.txt\n"
                     "ONBUILD RUN echo trig > /trig.txt\n"
                     "FROM base\n"
                     "WORKDIR /w/x\n"
                     "COPY --from=busybox:test /etc/group /from-image-group\n"
                     "ADD arch.tar.gz /unpacked/\n"
                     "RUN <<EOF\n"
                     "#!/bin/sh\n"
                     "echo \"heredoc $A\" > /heredoc.txt\n"
                     "EOF\n"
                     "COPY <<EOT /inline.txt\n"
                     "inline $A\n"
                     "EOT\n";
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    int rc = build(ctx, df, "stage:1", false, &s, &res, &err);
    if (rc < 0)
        fprintf(stderr, "build: %s (line %d)\n", err->msg, res.failed_line);
    KT_REQUIRE(rc == 0);
    KT_REQUIRE(unpack("stage:1", "b6") == 0);
    KT_EXPECT_INT(
        kt_sh("cd %s/b6/rootfs && [ \"$(cat base.txt)\" = base ] && "
              "[ \"$(cat trig.txt)\" = trig ] && cmp -s from-image-group %s/rootfs/etc/group && "
              "[ \"$(cat heredoc.txt)\" = 'heredoc 1' ] && [ \"$(cat inline.txt)\" = 'inline 1' ]",
              dir, dir),
        0);
    /* ADD extracts a local archive, keeping the archive's owners and mtimes. */
    KT_EXPECT_INT(
        kt_sh("[ \"$(stat -c '%%u:%%g %%Y' %s/b6/rootfs/unpacked/x/y)\" = '123:456 1000000000' ]",
              dir),
        0);
    KT_EXPECT_INT(kt_sh("[ $(stat -c %%i %s/b6/rootfs/unpacked/x/y) = "
                        "$(stat -c %%i %s/b6/rootfs/unpacked/x/hard) ] && "
                        "[ \"$(stat -c %%a %s/b6/rootfs/unpacked)\" = 755 ]",
                        dir, dir, dir),
                  0);
    KT_EXPECT_INT(cfg_is("stage:1", ".config.OnBuild", "null"), 0);
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c '%%u:%%g %%a' %s/b6/rootfs/w/x)\" = '0:0 755' ]", dir), 0);
    KT_EXPECT_INT(cfg_is("stage:1", ".config.Env | map(select(startswith(\"A=\")))", "[\"A=1\"]"),
                  0);
}

static atomic_bool cancel_flag;

static void *cancel_later(void *arg)
{
    usleep(300 * 1000);
    atomic_store(&cancel_flag, true);
    return arg;
}

KT_TEST(run_mounts_secret_bind_tmpfs)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx9");
    put(ctx, "conf/app.conf", "from-context");
    char secret[700];
    snprintf(secret, sizeof(secret), "%s/secret.txt", dir);
    KT_REQUIRE(kt_sh("printf s3cr3t > %s", secret) == 0);
    bld_secret_src secrets[] = {{"tok", secret}};
    const char *tags[] = {"mounts:1"};
    bld_build_spec spec = {
        .context_dir = ctx,
        .dockerfile = "FROM busybox:test\n"
                      "RUN --mount=type=secret,id=tok cat /run/secrets/tok; echo\n"
                      "RUN --mount=type=secret,id=tok,env=TOK echo \"env:$TOK\"\n"
                      "RUN --mount=type=bind,source=conf,target=/m cat /m/app.conf; echo\n"
                      "RUN --mount=type=tmpfs,target=/t touch /t/x && ls /t\n",
        .tags = tags,
        .n_tags = 1,
        .secrets = secrets,
        .n_secrets = 1,
        .source_date_epoch = -1,
    };
    seen s;
    memset(&s, 0, sizeof(s));
    bld_build_events ev = {.output = on_output, .step_done = on_step_done, .ud = &s};
    bld_build_result res;
    kiln_error *err = NULL;
    int rc = bld_build(engine, &spec, &ev, &res, &err);
    if (rc < 0)
        fprintf(stderr, "build: %s\n", err->msg);
    KT_REQUIRE(rc == 0);
    KT_EXPECT(strstr(s.out, "1:s3cr3t\n") != NULL);
    KT_EXPECT(strstr(s.out, "1:env:s3cr3t\n") != NULL);
    KT_EXPECT(strstr(s.out, "1:from-context\n") != NULL);
    KT_EXPECT(strstr(s.out, "1:x\n") != NULL);
    /* Nothing of the mounts is left in the image. */
    KT_REQUIRE(unpack("mounts:1", "b9") == 0);
    KT_EXPECT_INT(kt_sh("cd %s/b9/rootfs && test ! -e run/secrets/tok && test ! -e m/app.conf && "
                        "test ! -e t/x",
                        dir),
                  0);
    /* A changed bind-mounted context file invalidates the RUN that reads it. */
    put(ctx, "conf/app.conf", "changed");
    memset(&s, 0, sizeof(s));
    KT_REQUIRE(bld_build(engine, &spec, &ev, &res, &err) == 0);
    KT_EXPECT_INT(res.steps_cached, 2);
    KT_EXPECT(strstr(s.out, "1:changed\n") != NULL);
}

static void on_note(void *ud, const char *what)
{
    seen *s = ud;
    int n = snprintf(s->out + s->out_len, sizeof(s->out) - s->out_len, "note:%s\n", what);
    if (n > 0 && s->out_len + (size_t)n < sizeof(s->out))
        s->out_len += (size_t)n;
}

/* ONBUILD triggers of a base image in the store run in the child build. */
/* ARG values reach RUN through its environment and are part of its key. */
KT_TEST(build_args_in_run_and_cache_key)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx13");
    const char *df = "ARG GREET=hi\n"
                     "FROM busybox:test\n"
                     "ARG GREET\n"
                     "RUN echo \"arg:$GREET\"\n";
    const char *args[] = {"GREET=yo"};
    const char *tags[] = {"args:1"};
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = df,
                           .tags = tags,
                           .n_tags = 1,
                           .build_args = args,
                           .n_build_args = 1,
                           .source_date_epoch = -1};
    seen s;
    memset(&s, 0, sizeof(s));
    bld_build_events ev = {.output = on_output, .ud = &s};
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(bld_build(engine, &spec, &ev, &res, &err) == 0);
    KT_EXPECT(strstr(s.out, "1:arg:yo\n") != NULL);
    memset(&s, 0, sizeof(s));
    spec.n_build_args = 0; /* the default value: a different key, the RUN runs again */
    KT_REQUIRE(bld_build(engine, &spec, &ev, &res, &err) == 0);
    KT_EXPECT(strstr(s.out, "1:arg:hi\n") != NULL);
    KT_EXPECT_INT(res.steps_run, 1);
}

KT_TEST(onbuild_of_a_base_image)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx10");
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, "FROM busybox:test\nONBUILD RUN echo triggered > /t\n", "onb:1", false,
                     &s, &res, &err) == 0);
    KT_EXPECT_INT(cfg_is("onb:1", ".config.OnBuild", "[\"RUN echo triggered > /t\"]"), 0);
    KT_REQUIRE(build(ctx, "FROM onb:1\nRUN cat /t\n", "onb:2", false, &s, &res, &err) == 0);
    KT_EXPECT(strstr(s.out, "1:triggered\n") != NULL);
    KT_EXPECT_INT(cfg_is("onb:2", ".config.OnBuild", "null"), 0);
}

/* --push to a plain-HTTP docker-registry, then FROM that reference after the
 * local tag is gone: the engine has the pusher pull it. */
KT_TEST(push_then_pull_base)
{
    if (engine == NULL)
        return;
    if (kt_sh("command -v docker-registry >/dev/null && command -v curl >/dev/null") != 0) {
        fprintf(stderr, "skip push_then_pull_base: docker-registry or curl missing\n");
        return;
    }
    int port = kt_free_port();
    KT_REQUIRE(kt_sh("mkdir -p %s/registry && printf 'version: 0.1\\nlog: { level: error, "
                     "accesslog: { disabled: true } }\\n"
                     "storage: { filesystem: { rootdirectory: %s/registry } }\\n"
                     "http: { addr: 127.0.0.1:%d }\\n' > %s/registry.yml",
                     dir, dir, port, dir) == 0);
    char yml[700];
    snprintf(yml, sizeof(yml), "%s/registry.yml", dir);
    char regbin[512] = "";
    FILE *pf = popen("command -v docker-registry", "r");
    if (pf == NULL || fgets(regbin, sizeof(regbin), pf) == NULL)
        regbin[0] = '\0';
    if (pf)
        pclose(pf);
    regbin[strcspn(regbin, "\n")] = '\0';
    char *argv[] = {regbin, "serve", yml, NULL};
    th_proc reg = {0};
    KT_REQUIRE(th_spawn(&reg, dir, "registry", argv) == 0);
    int up = 1;
    for (int i = 0; i < 100 && up != 0; i++) {
        up = kt_sh("curl -fs http://127.0.0.1:%d/v2/ >/dev/null", port);
        if (up != 0)
            usleep(100 * 1000);
    }
    char ref[128];
    snprintf(ref, sizeof(ref), "127.0.0.1:%d/team/base:1", port);
    char *ctx = ctxdir("ctx11");
    const char *tags[] = {ref};
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = "FROM busybox:test\nRUN echo pushed > /p\n",
                           .tags = tags,
                           .n_tags = 1,
                           .push = true,
                           .registry_insecure = true,
                           .source_date_epoch = -1};
    seen s;
    memset(&s, 0, sizeof(s));
    bld_build_events ev = {.output = on_output, .note = on_note, .ud = &s};
    bld_build_result res;
    kiln_error *err = NULL;
    int rc = up == 0 ? bld_build(engine, &spec, &ev, &res, &err) : -1;
    if (rc < 0 && err)
        fprintf(stderr, "build: %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_INT(rc, 0);
    if (rc == 0) {
        KT_EXPECT_INT(
            kt_sh("[ \"$(skopeo inspect --tls-verify=false docker://%s | jq -r .Digest)\" "
                  "= %s ]",
                  ref, res.digest),
            0);
        /* Forget the local tag; the next FROM must pull it. */
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__RemoveRequest rr = KILN__V1__REMOVE_REQUEST__INIT;
        rr.ref = ref;
        req.body_case = KILN__V1__REQUEST__BODY_REMOVE;
        req.remove = &rr;
        kiln_reply *r = NULL;
        KT_REQUIRE(kiln_rpc_call(client, &req, &r, 10000, &err) == 0);
        kiln_rpc_reply_free(r);
        KT_REQUIRE(kt_sh("skopeo inspect oci:%s/store:%s >/dev/null 2>&1", data, ref) != 0);
        char df[256];
        snprintf(df, sizeof(df), "FROM %s\nRUN cat /p\n", ref);
        const char *tags2[] = {"pulled:1"};
        spec.dockerfile = df;
        spec.tags = tags2;
        spec.push = false;
        memset(&s, 0, sizeof(s));
        rc = bld_build(engine, &spec, &ev, &res, &err);
        if (rc < 0)
            fprintf(stderr, "build: %s\n", err->msg);
        kiln_error_free(&err);
        KT_EXPECT_INT(rc, 0);
        KT_EXPECT(strstr(s.out, "note:pulling ") != NULL);
        KT_EXPECT(strstr(s.out, "1:pushed\n") != NULL);
        /* The base is in the store now: a build uses it as it is, unless
         * --pull asks for the registry's. */
        memset(&s, 0, sizeof(s));
        rc = bld_build(engine, &spec, &ev, &res, &err);
        if (rc < 0)
            fprintf(stderr, "build: %s\n", err->msg);
        KT_EXPECT_INT(rc, 0);
        kiln_error_free(&err);
        KT_EXPECT(strstr(s.out, "note:pulling ") == NULL);
        spec.pull = true;
        memset(&s, 0, sizeof(s));
        rc = bld_build(engine, &spec, &ev, &res, &err);
        if (rc < 0)
            fprintf(stderr, "build --pull: %s\n", err->msg);
        KT_EXPECT_INT(rc, 0);
        kiln_error_free(&err);
        KT_EXPECT(strstr(s.out, "note:pulling ") != NULL);
    }
    th_stop(&reg, 5000, NULL);
}

KT_TEST(cancel_and_run_timeout)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx7");
    const char *tags[] = {"slow:1"};
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = "FROM busybox:test\nRUN echo start; sleep 30\n",
                           .tags = tags,
                           .n_tags = 1,
                           .no_cache = true,
                           .source_date_epoch = -1,
                           .run_timeout_ms = 400};
    bld_build_result res;
    kiln_error *err = NULL;
    unsigned long long t0 = kiln_now_ms();
    KT_EXPECT_INT(bld_build(engine, &spec, NULL, &res, &err), KILN_ETIMEDOUT);
    KT_EXPECT_INT(res.failed_line, 2);
    kiln_error_free(&err);
    spec.run_timeout_ms = 0;
    spec.cancel = &cancel_flag;
    pthread_t th;
    KT_REQUIRE(pthread_create(&th, NULL, cancel_later, NULL) == 0);
    KT_EXPECT_INT(bld_build(engine, &spec, NULL, &res, &err), KILN_ECANCELED);
    pthread_join(th, NULL);
    kiln_error_free(&err);
    KT_EXPECT(kiln_now_ms() - t0 < 10000);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s/store:slow:1 >/dev/null 2>&1", data) != 0, 1);
    /* No step dir or scratch dir is left behind. */
    KT_EXPECT_INT(kt_sh("! ls -d %s/snapshots/steps/tmp-* %s/sandbox/work-* %s/sandbox/merge-* "
                        "2>/dev/null | grep -q .",
                        data, data, data),
                  0);
}

/* The build's deadline ends it (with its RUN) naming the limit; the RUN
 * limits of the spec reach the sandbox. */
KT_TEST(build_deadline_and_run_limits)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx7d");
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = "FROM busybox:test\nRUN sleep 1\nRUN sleep 30\n",
                           .no_cache = true,
                           .source_date_epoch = -1,
                           .build_timeout_ms = 2000};
    bld_build_result res;
    kiln_error *err = NULL;
    unsigned long long t0 = kiln_now_ms();
    KT_EXPECT_INT(bld_build(engine, &spec, NULL, &res, &err), KILN_ETIMEDOUT);
    KT_EXPECT(err && strcmp(err->msg, "build exceeded its time limit of 2s") == 0);
    kiln_error_free(&err);
    KT_EXPECT(kiln_now_ms() - t0 < 10000);
    KT_EXPECT_INT(res.failed_line, 3);
    spec.build_timeout_ms = 0;
    spec.dockerfile = "FROM busybox:test\nRUN cat /proc/self/cgroup; bomb() { bomb | bomb & }; "
                      "bomb; sleep 30\n";
    spec.run_pids_max = 16;
    spec.run_memory_bytes = 64 << 20;
    int r = bld_build(engine, &spec, NULL, &res, &err);
    bool pids =
        access("/sys/fs/cgroup/pids", F_OK) == 0 || access("/sys/fs/cgroup/pids.max", F_OK) == 0;
    if (pids) {
        KT_EXPECT_INT(r, KILN_ENOSPC);
        KT_EXPECT(err && strcmp(err->msg, "RUN exceeded its limit of 16 processes") == 0);
    }
    kiln_error_free(&err);
}

typedef struct par_build {
    const char *df, *tag;
    char ctx[600];
    bld_build_result res;
    int rc;
} par_build;

static void *par_run(void *arg)
{
    par_build *p = arg;
    const char *tags[] = {p->tag};
    bld_build_spec spec = {.context_dir = p->ctx,
                           .dockerfile = p->df,
                           .tags = tags,
                           .n_tags = 1,
                           .no_cache = true,
                           .source_date_epoch = 1700000000};
    kiln_error *err = NULL;
    p->rc = bld_build(engine, &spec, NULL, &p->res, &err);
    if (p->rc < 0)
        fprintf(stderr, "%s: %s\n", p->tag, err->msg);
    kiln_error_free(&err);
    return NULL;
}

KT_TEST(concurrent_builds_match_sequential)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx8");
    put(ctx, "f.txt", "concurrent");
    const char *dfs[] = {
        "FROM busybox:test\nCOPY f.txt /f\nRUN cat /f /f > /g\nCMD [\"cat\", \"/g\"]\n",
        "FROM busybox:test AS a\nRUN echo a > /a\nFROM busybox:test\nCOPY --from=a /a /b\n",
        "FROM busybox:test\nWORKDIR /w\nRUN echo w > w.txt && mkdir -p d/e\nUSER app\n",
        "FROM scratch\nCOPY f.txt /only\nLABEL x=y\n",
    };
    par_build seq[4], par[4];
    const char *stags[] = {"seq:0", "seq:1", "seq:2", "seq:3"};
    const char *ptags[] = {"par:0", "par:1", "par:2", "par:3"};
    for (int i = 0; i < 4; i++) {
        seq[i] = (par_build){.df = dfs[i], .tag = stags[i]};
        par[i] = (par_build){.df = dfs[i], .tag = ptags[i]};
        snprintf(seq[i].ctx, sizeof(seq[i].ctx), "%s", ctx);
        snprintf(par[i].ctx, sizeof(par[i].ctx), "%s", ctx);
        par_run(&seq[i]);
        KT_EXPECT_INT(seq[i].rc, 0);
    }
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        KT_REQUIRE(pthread_create(&th[i], NULL, par_run, &par[i]) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++) {
        KT_EXPECT_INT(par[i].rc, 0);
        KT_EXPECT_STR(par[i].res.digest, seq[i].res.digest);
    }
}

/* Two stages that can only finish together: each RUN marks its arrival in
 * a shared cache mount and waits for the other's mark. */
static int rendezvous(const char *ctx, const char *id, int tries, unsigned max_par,
                      bld_build_result *res, kiln_error **err)
{
    char df[2048];
    snprintf(df, sizeof(df),
             "FROM busybox:test AS a\n"
             "RUN --mount=type=cache,id=%s,target=/c touch /c/a && i=0 && "
             "while [ ! -e /c/b ]; do i=$((i+1)); [ $i -gt %d ] && exit 7; sleep 0.1; done; "
             "echo a > /a\n"
             "FROM busybox:test AS b\n"
             "RUN --mount=type=cache,id=%s,target=/c touch /c/b && i=0 && "
             "while [ ! -e /c/a ]; do i=$((i+1)); [ $i -gt %d ] && exit 7; sleep 0.1; done; "
             "echo b > /b\n"
             "FROM scratch\n"
             "COPY --from=a /a /a\n"
             "COPY --from=b /b /b\n",
             id, tries, id, tries);
    const char *tags[] = {"rdv:1"};
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = df,
                           .tags = tags,
                           .n_tags = 1,
                           .no_cache = true,
                           .source_date_epoch = -1,
                           .max_parallel_stages = max_par};
    return bld_build(engine, &spec, NULL, res, err);
}

KT_TEST(independent_stages_run_in_parallel)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx10");
    bld_build_result res;
    kiln_error *err = NULL;
    char id[64];
    /* One stage at a time cannot meet: the first one waits in vain. */
    snprintf(id, sizeof(id), "rdv-serial-%d", (int)getpid());
    KT_EXPECT_INT(rendezvous(ctx, id, 10, 1, &res, &err), KILN_EREMOTE);
    KT_EXPECT_INT(res.failed_line, 2);
    kiln_error_free(&err);
    /* By default they run together. */
    snprintf(id, sizeof(id), "rdv-par-%d", (int)getpid());
    int rc = rendezvous(ctx, id, 300, 0, &res, &err);
    KT_EXPECT_INT(rc, 0);
    if (rc < 0)
        fprintf(stderr, "rendezvous: %s\n", err->msg);
    kiln_error_free(&err);
    KT_REQUIRE(unpack("rdv:1", "b10") == 0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/b10/rootfs/a)$(cat %s/b10/rootfs/b)\" = ab ]", dir, dir), 0);
}

/* A failing stage stops its siblings: their RUNs are killed, and the error
 * (with its line) is the failing stage's, not a CANCELLED sibling's. */
KT_TEST(failing_stage_stops_siblings)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx11");
    const char *tags[] = {"sib:1"};
    bld_build_spec spec = {.context_dir = ctx,
                           .dockerfile = "FROM busybox:test AS slow\n"
                                         "RUN sleep 61\n"
                                         "FROM busybox:test AS bad\n"
                                         "RUN sleep 0.5; exit 3\n"
                                         "FROM scratch\n"
                                         "COPY --from=slow /bin /s\n"
                                         "COPY --from=bad /bin /b\n",
                           .tags = tags,
                           .n_tags = 1,
                           .no_cache = true,
                           .source_date_epoch = -1,
                           .max_parallel_stages = 2};
    bld_build_result res;
    kiln_error *err = NULL;
    unsigned long long t0 = kiln_now_ms();
    KT_EXPECT_INT(bld_build(engine, &spec, NULL, &res, &err), KILN_EREMOTE);
    KT_EXPECT(kiln_now_ms() - t0 < 30000);
    KT_EXPECT_INT(res.failed_line, 4);
    KT_EXPECT(err && strstr(err->msg, "exit code: 3") != NULL);
    kiln_error_free(&err);
    KT_EXPECT_INT(kt_sh("! pgrep -f '^(/bin/sh -c )?sleep 61$' >/dev/null"), 0);
}

KT_TEST(prune_steps)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx12");
    put(ctx, "p.txt", "prune");
    const char *df = "FROM busybox:test\nCOPY p.txt /p\nRUN cat /p > /q\n";
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, df, "prune:1", false, &s, &res, &err) == 0);
    size_t removed = 99;
    KT_REQUIRE(bld_engine_prune(engine, 3600, &removed, &err) == 0);
    KT_EXPECT_INT(removed, 0); /* everything was used just now */
    KT_REQUIRE(build(ctx, df, "prune:1", false, &s, &res, &err) == 0);
    KT_EXPECT_INT(res.steps_run, 0);
    KT_REQUIRE(bld_engine_prune(engine, 0, &removed, &err) == 0);
    KT_EXPECT(removed >= 3);
    KT_EXPECT_INT(
        kt_sh("[ -z \"$(ls %s/snapshots/steps)\" ] && [ -z \"$(ls %s/cache/steps)\" ]", data, data),
        0);
    /* The image in the store is untouched; the next build runs every step. */
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s/store:prune:1 >/dev/null", data), 0);
    KT_REQUIRE(build(ctx, df, "prune:1", false, &s, &res, &err) == 0);
    KT_EXPECT_INT(res.steps_run, 2);

    /* A step dir left without its index entry (a cut-short prune) is
     * replaced, not reused, when the step runs again. */
    const char *hex = s.keys[0] + 7; /* COPY p.txt /p */
    KT_REQUIRE(kt_sh("rm %s/cache/steps/%s && touch %s/snapshots/steps/%s/diff/junk", data, hex,
                     data, hex) == 0);
    KT_REQUIRE(build(ctx, df, "prune:2", false, &s, &res, &err) == 0);
    KT_EXPECT_INT(res.steps_run, 1); /* the COPY; the RUN after it keeps its key */
    KT_REQUIRE(unpack("prune:2", "b12") == 0);
    KT_EXPECT_INT(kt_sh("test ! -e %s/b12/rootfs/junk && test -f %s/b12/rootfs/p", dir, dir), 0);
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
