/* ADD end to end without RUN: a real kiln-pusher on a temp data dir, images
 * FROM scratch built with bld_build(), a python3 http.server on 127.0.0.1
 * (stopped by its pid) serving the URLs, results checked with umoci, skopeo
 * and jq.  Covers URL downloads (name, mode, Last-Modified, --checksum, HTTP
 * errors, credentials never shown, cache keys from the content) and local
 * archives (bzip2, xz, lzma extracted; hostile entries refused; non-archives
 * copied as they are).  Needs root (owners of copied files); exits 77
 * otherwise or when a tool is missing. */
#include "kt.h"
#include "svc_harness.h"
#include "bld_engine.h"
#include "error.h"
#include "rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char *dir;
static char data[512], url[600], srv[600], base[128];
static th_proc pusher, http;
static kiln_rpc_client *client;
static bld_engine *engine;

/* What the callbacks saw during one build. */
typedef struct seen {
    char text[8192]; /* step_started texts, one a line */
    size_t len;
} seen;

static void on_step(void *ud, size_t stage, size_t step, const char *text, int line)
{
    seen *s = ud;
    int n = snprintf(s->text + s->len, sizeof(s->text) - s->len, "%s\n", text);
    if (n > 0 && s->len + (size_t)n < sizeof(s->text))
        s->len += (size_t)n;
}

static int build(const char *ctx, const char *dockerfile, const char *tag, seen *s,
                 bld_build_result *res, kiln_error **err)
{
    const char *tags[] = {tag};
    bld_build_spec spec = {
        .context_dir = ctx,
        .dockerfile = dockerfile,
        .tags = tags,
        .n_tags = 1,
        .source_date_epoch = -1,
    };
    bld_build_events ev = {.step_started = on_step, .ud = s};
    memset(s, 0, sizeof(*s));
    memset(res, 0, sizeof(*res));
    kiln_error_free(err);
    int rc = bld_build(engine, &spec, &ev, res, err);
    if (rc < 0 && *err)
        fprintf(stderr, "build %s: %s (line %d)\n", tag, (*err)->msg, res->failed_line);
    return rc;
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

static int unpack(const char *tag, const char *bundle)
{
    return kt_sh("cd %s && rm -rf %s && umoci unpack --image %s/store:%s %s >/dev/null 2>&1", dir,
                 bundle, data, tag, bundle);
}

/* Path of a program, or "" when it is not installed. */
static void which(char *out, size_t cap, const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s", prog);
    out[0] = '\0';
    FILE *f = popen(cmd, "r");
    if (f && fgets(out, (int)cap, f) == NULL)
        out[0] = '\0';
    if (f)
        pclose(f);
    out[strcspn(out, "\n")] = '\0';
}

KT_SETUP(setup)
{
    kiln_error *err = NULL;
    char py[512];
    which(py, sizeof(py), "python3");
    if (geteuid() != 0 || !py[0] ||
        kt_sh("for t in umoci skopeo jq curl tar bzip2 xz gzip; do command -v $t >/dev/null || "
              "exit 1; done") != 0) {
        fprintf(stderr, "skip: needs root, python3, umoci, skopeo, jq, curl, tar, bzip2, xz\n");
        exit(77);
    }
    /* The test server is local: never through a proxy from the environment. */
    const char *np = getenv("no_proxy");
    char noproxy[1024];
    snprintf(noproxy, sizeof(noproxy), "%.900s%s127.0.0.1", np ? np : "", np && *np ? "," : "");
    setenv("no_proxy", noproxy, 1);
    dir = kt_tmpdir("engine-add");
    KT_REQUIRE(dir != NULL);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(url, sizeof(url), "ipc://%s/run/pusher.sock", data);
    snprintf(srv, sizeof(srv), "%s/srv", dir);
    KT_REQUIRE(kt_sh("mkdir -p %s %s", data, srv) == 0);

    /* The HTTP server: only 127.0.0.1, its own dir; another port when the
     * free one was taken meanwhile (the server then exits at once). */
    KT_REQUIRE(kt_sh("printf up > %s/ping", srv) == 0);
    int up = 1;
    for (int attempt = 0; attempt < 3 && up != 0; attempt++) {
        if (http.pid > 0)
            th_stop(&http, 2000, NULL);
        int port = kt_free_port();
        snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
        char ports[16];
        snprintf(ports, sizeof(ports), "%d", port);
        char *hargv[] = {py,  "-m",  "http.server", "--bind", "127.0.0.1", "--directory",
                         srv, ports, NULL};
        KT_REQUIRE(th_spawn(&http, dir, "http", hargv) == 0);
        for (int i = 0; i < 100 && up != 0; i++) {
            if (waitpid(http.pid, NULL, WNOHANG) == http.pid) {
                http.pid = 0; /* exited (port taken): reaped, never signalled */
                break;
            }
            if ((up = kt_sh("curl -fs %s/ping >/dev/null", base)) != 0)
                usleep(100 * 1000);
        }
    }
    if (up != 0)
        kt_sh("cat %s/http.log >&2", dir);
    KT_REQUIRE(up == 0);

    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", data, NULL};
    KT_REQUIRE(th_spawn(&pusher, dir, "pusher", argv) == 0);
    KT_REQUIRE(th_wait_ready(url, 10000) == 0);
    KT_REQUIRE(kiln_rpc_client_new(&client, url, NULL, true, &err) == 0);
    KT_REQUIRE(bld_engine_new(&engine, data, client, &err) == 0);
}

/* sha256 hex of a file. */
static void sha_of(char out[65], const char *path)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "sha256sum %s", path);
    out[0] = '\0';
    FILE *f = popen(cmd, "r");
    if (f && fgets(out, 65, f) == NULL)
        out[0] = '\0';
    if (f)
        pclose(f);
}

KT_TEST(add_url_names_mode_mtime_owner)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx-url");
    KT_REQUIRE(kt_sh("cd %s && printf 'hello remote' > hello.txt && touch -d @1234567890 "
                     "hello.txt && mkdir -p t/d && echo in > t/d/f && tar -czf arch.tar.gz -C t d "
                     "&& mkdir -p sub && printf spaced > 'sub/a b.txt'",
                     srv) == 0);
    char hex[65];
    char hp[700];
    snprintf(hp, sizeof(hp), "%s/hello.txt", srv);
    sha_of(hex, hp);
    char df[2048];
    snprintf(df, sizeof(df),
             "FROM scratch\n"
             "ADD %s/hello.txt /dl/\n"
             "ADD %s/hello.txt /named.txt\n"
             "ADD --chown=5:6 %s/arch.tar.gz /arch/\n"
             "ADD --checksum=sha256:%s %s/hello.txt /sum/\n"
             "ADD --chmod=0644 %s/sub/a%%20b.txt?x=1 /q/\n"
             "ADD %s/hello.txt /dl\n"
             "ADD %s/sub /listing.html\n",
             base, base, base, hex, base, base, base, base);
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, df, "url:1", &s, &res, &err) == 0);
    KT_REQUIRE(unpack("url:1", "bu") == 0);
    char r[700];
    snprintf(r, sizeof(r), "%s/bu/rootfs", dir);
    /* dest/ gets the URL's last path component; a dest without / is the name. */
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/dl/hello.txt)\" = 'hello remote' ]", r), 0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/named.txt)\" = 'hello remote' ]", r), 0);
    /* 0600, root, the Last-Modified time. */
    KT_EXPECT_INT(
        kt_sh("[ \"$(stat -c '%%a %%u:%%g %%Y' %s/dl/hello.txt)\" = '600 0:0 1234567890' ]", r), 0);
    KT_EXPECT_INT(
        kt_sh("[ \"$(stat -c '%%a %%u:%%g %%Y' %s/named.txt)\" = '600 0:0 1234567890' ]", r), 0);
    /* A downloaded archive is not extracted; --chown applies. */
    KT_EXPECT_INT(kt_sh("cmp -s %s/arch/arch.tar.gz %s/arch.tar.gz && test ! -e %s/arch/d && "
                        "[ \"$(stat -c '%%u:%%g' %s/arch/arch.tar.gz)\" = 5:6 ]",
                        r, srv, r, r),
                  0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/sum/hello.txt)\" = 'hello remote' ]", r), 0);
    /* Percent-decoded name, no query; --chmod. */
    KT_EXPECT_INT(kt_sh("[ \"$(cat '%s/q/a b.txt')\" = spaced ] && "
                        "[ \"$(stat -c %%a '%s/q/a b.txt')\" = 644 ]",
                        r, r),
                  0);
    /* An existing directory as dest (no trailing /) gets the file inside. */
    KT_EXPECT_INT(kt_sh("test -d %s/dl && [ \"$(cat %s/dl/hello.txt)\" = 'hello remote' ]", r, r),
                  0);
    /* Redirects are followed (http.server: /sub -> /sub/, a listing). */
    KT_EXPECT_INT(kt_sh("grep -q 'a%%20b.txt' %s/listing.html", r), 0);
    /* Nothing of the downloads is left in the step dirs. */
    KT_EXPECT_INT(kt_sh("! find %s/snapshots/steps -name 'fetch-*' | grep -q .", data), 0);
}

KT_TEST(add_url_errors_and_redaction)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx-err");
    KT_REQUIRE(kt_sh("printf 'checked' > %s/c.txt", srv) == 0);
    char hex[65], cp[700];
    snprintf(cp, sizeof(cp), "%s/c.txt", srv);
    sha_of(hex, cp);
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    char df[2048];
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;

    /* --checksum mismatch: both digests named. */
    snprintf(df, sizeof(df), "FROM scratch\nADD --checksum=sha256:%s %s/c.txt /c\n", wrong, base);
    KT_EXPECT_INT(build(ctx, df, "bad:1", &s, &res, &err), KILN_EINVAL);
    char want[200];
    snprintf(want, sizeof(want), "expected sha256:%s got sha256:%s", wrong, hex);
    KT_EXPECT(err && strstr(err->msg, "checksum mismatch") && strstr(err->msg, want));
    KT_EXPECT_INT(res.failed_line, 2);

    /* A right sha512 checksum. */
    KT_REQUIRE(kt_sh("sha512sum %s/c.txt | cut -c1-128 > %s/c.sha512", srv, dir) == 0);
    char h512[129] = "";
    char sp[700];
    snprintf(sp, sizeof(sp), "%s/c.sha512", dir);
    FILE *f = fopen(sp, "r");
    KT_REQUIRE(f && fgets(h512, sizeof(h512), f));
    fclose(f);
    snprintf(df, sizeof(df), "FROM scratch\nADD --checksum=sha512:%s %s/c.txt /c\n", h512, base);
    KT_EXPECT_INT(build(ctx, df, "sum512:1", &s, &res, &err), 0);

    /* 404: the status and the URL. */
    snprintf(df, sizeof(df), "FROM scratch\nADD %s/missing.txt /m\n", base);
    KT_EXPECT_INT(build(ctx, df, "bad:1", &s, &res, &err), KILN_EREMOTE);
    KT_EXPECT(err && strstr(err->msg, "404") && strstr(err->msg, "/missing.txt"));

    /* Nothing listens there. */
    int dead = kt_free_port();
    snprintf(df, sizeof(df), "FROM scratch\nADD http://127.0.0.1:%d/x /x\n", dead);
    KT_EXPECT_INT(build(ctx, df, "bad:1", &s, &res, &err), KILN_EUNAVAIL);

    /* Credentials in the URL: never in the error, the failed text, the events. */
    snprintf(df, sizeof(df), "FROM scratch\nADD http://alice:pw-s3cr3t@127.0.0.1:%s/missing /m\n",
             strrchr(base, ':') + 1);
    KT_EXPECT_INT(build(ctx, df, "bad:1", &s, &res, &err), KILN_EREMOTE);
    KT_EXPECT(err && strstr(err->msg, "404") && strstr(err->msg, "xxxxx@127.0.0.1"));
    KT_EXPECT(err && !strstr(err->msg, "pw-s3cr3t") && !strstr(err->msg, "alice"));
    KT_EXPECT(!strstr(res.failed_text, "pw-s3cr3t") && strstr(res.failed_text, "ADD http://"));
    KT_EXPECT(s.len > 0 && !strstr(s.text, "pw-s3cr3t"));
    /* ... nor in the image's history when it works. */
    snprintf(df, sizeof(df), "FROM scratch\nADD http://bob:hunter2-pw@127.0.0.1:%s/c.txt /c\n",
             strrchr(base, ':') + 1);
    KT_EXPECT_INT(build(ctx, df, "cred:1", &s, &res, &err), 0);
    KT_EXPECT(s.len > 0 && !strstr(s.text, "hunter2-pw") && strstr(s.text, "xxxxx@"));
    KT_EXPECT_INT(kt_sh("skopeo inspect --raw --config oci:%s/store:cred:1 > %s/cred.json && "
                        "! grep -q hunter2-pw %s/cred.json && grep -q 'xxxxx@' %s/cred.json",
                        data, dir, dir, dir),
                  0);

    /* git sources: a clear "not supported". */
    KT_EXPECT_INT(build(ctx,
                        "FROM scratch\nADD https://tok:pw-git@example.invalid/r.git#main /src\n",
                        "bad:1", &s, &res, &err),
                  KILN_ENOTSUP);
    KT_EXPECT(err && strstr(err->msg, "git") && !strstr(err->msg, "pw-git"));
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s/store:bad:1 >/dev/null 2>&1", data) != 0, 1);
    kiln_error_free(&err);
}

KT_TEST(add_url_cache_follows_content)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx-cache");
    KT_REQUIRE(kt_sh("printf 'version one' > %s/v.txt", srv) == 0);
    char df[1024];
    snprintf(df, sizeof(df), "FROM scratch\nADD %s/v.txt /v.txt\n", base);
    seen s;
    bld_build_result r1, r2, r3;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, df, "cache:1", &s, &r1, &err) == 0);
    KT_EXPECT_INT(r1.steps_run, 1);
    /* Unchanged remote file: a cache hit, same image. */
    KT_REQUIRE(build(ctx, df, "cache:1", &s, &r2, &err) == 0);
    KT_EXPECT_INT(r2.steps_run, 0);
    KT_EXPECT_INT(r2.steps_cached, 1);
    KT_EXPECT_STR(r2.digest, r1.digest);
    /* Changed remote file: the step runs again and gets the new content. */
    KT_REQUIRE(kt_sh("printf 'version two' > %s/v.txt", srv) == 0);
    KT_REQUIRE(build(ctx, df, "cache:1", &s, &r3, &err) == 0);
    KT_EXPECT_INT(r3.steps_run, 1);
    KT_EXPECT(strcmp(r3.digest, r1.digest) != 0);
    KT_REQUIRE(unpack("cache:1", "bc") == 0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/bc/rootfs/v.txt)\" = 'version two' ]", dir), 0);

    /* With --checksum the key is the checksum: a cache hit needs no
     * download (the file is gone from the server now). */
    char hex[65], vp[700];
    snprintf(vp, sizeof(vp), "%s/v.txt", srv);
    sha_of(hex, vp);
    snprintf(df, sizeof(df), "FROM scratch\nADD --checksum=sha256:%s %s/v.txt /v.txt\n", hex, base);
    KT_REQUIRE(build(ctx, df, "cache:2", &s, &r1, &err) == 0);
    KT_EXPECT_INT(r1.steps_run, 1);
    KT_REQUIRE(kt_sh("rm %s/v.txt", srv) == 0);
    KT_EXPECT_INT(build(ctx, df, "cache:2", &s, &r2, &err), 0);
    KT_EXPECT_INT(r2.steps_cached, 1);
    /* Without it, the content must be fetched: the 404 shows. */
    snprintf(df, sizeof(df), "FROM scratch\nADD %s/v.txt /v.txt\n", base);
    KT_EXPECT_INT(build(ctx, df, "cache:1", &s, &r3, &err), KILN_EREMOTE);
    kiln_error_free(&err);
    KT_EXPECT_INT(kt_sh("! ls -d %s/snapshots/steps/tmp-* 2>/dev/null | grep -q .", data), 0);
}

KT_TEST(add_local_archives)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx-arch");
    KT_REQUIRE(kt_sh("cd %s && mkdir -p a/top/sub && echo bz > a/top/sub/f && "
                     "touch -d @1000000000 a/top/sub/f && "
                     "tar --owner=7 --group=8 -cjf a.tar.bz2 -C a top && "
                     "tar -cJf a.tar.xz -C a top && tar --lzma -cf a.tar.lzma -C a top && "
                     "tar -cf a.tar -C a top && rm -rf a && "
                     "printf 'not an archive' > fake.tar.gz && "
                     "printf 'plain text' | gzip -c > text.gz && "
                     "printf 'BZh91AY' > fake.bz2",
                     ctx) == 0);
    const char *df = "FROM scratch\n"
                     "ADD a.tar.bz2 /bz/\n"
                     "ADD a.tar.xz /xz/\n"
                     "ADD a.tar.lzma /lz/\n"
                     "ADD a.tar /plain/\n"
                     "ADD fake.tar.gz text.gz fake.bz2 /copied/\n"
                     "ADD --unpack=false a.tar.xz /kept/\n";
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(build(ctx, df, "arch:1", &s, &res, &err) == 0);
    KT_REQUIRE(unpack("arch:1", "ba") == 0);
    char r[700];
    snprintf(r, sizeof(r), "%s/ba/rootfs", dir);
    for (int i = 0; i < 4; i++) {
        const char *d = (const char *[]){"bz", "xz", "lz", "plain"}[i];
        KT_EXPECT_INT(kt_sh("[ \"$(cat %s/%s/top/sub/f)\" = bz ] && "
                            "[ \"$(stat -c %%Y %s/%s/top/sub/f)\" = 1000000000 ]",
                            r, d, r, d),
                      0);
    }
    /* The archive's owners are kept. */
    KT_EXPECT_INT(kt_sh("[ \"$(stat -c %%u:%%g %s/bz/top/sub/f)\" = 7:8 ]", r), 0);
    /* Recognised by content, not by name. */
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/copied/fake.tar.gz)\" = 'not an archive' ] && "
                        "cmp -s %s/copied/text.gz %s/text.gz && cmp -s %s/copied/fake.bz2 "
                        "%s/fake.bz2 && cmp -s %s/kept/a.tar.xz %s/a.tar.xz",
                        r, r, ctx, r, ctx, r, ctx),
                  0);
}

KT_TEST(add_hostile_archives_stay_inside)
{
    if (engine == NULL)
        return;
    char *ctx = ctxdir("ctx-evil");
    char outside[700];
    snprintf(outside, sizeof(outside), "%s/outside", dir);
    KT_REQUIRE(kt_sh("mkdir -p %s", outside) == 0);
    /* ../ entries climbing to a host path, an absolute name, and an absolute
     * symlink to a host dir with a file written through it, all xz. */
    char py[512];
    which(py, sizeof(py), "python3");
    KT_REQUIRE(kt_sh("cd %s && %s - <<'EOF'\n"
                     "import io, tarfile\n"
                     "def add(t, name, data=b'x', link=None):\n"
                     "    i = tarfile.TarInfo(name)\n"
                     "    if link:\n"
                     "        i.type = tarfile.SYMTYPE; i.linkname = link; t.addfile(i)\n"
                     "    else:\n"
                     "        i.size = len(data); t.addfile(i, io.BytesIO(data))\n"
                     "with tarfile.open('up.tar.xz', 'w:xz') as t:\n"
                     "    add(t, '../' * 40 + '%s/escaped-up')\n"
                     "with tarfile.open('abs.tar.xz', 'w:xz') as t:\n"
                     "    add(t, '%s/escaped-abs')\n"
                     "with tarfile.open('link.tar.xz', 'w:xz') as t:\n"
                     "    add(t, 'l', link='%s')\n"
                     "    add(t, 'l/escaped-link')\n"
                     "EOF",
                     ctx, py, outside + 1, outside, outside) == 0);
    seen s;
    bld_build_result res;
    kiln_error *err = NULL;
    KT_EXPECT(build(ctx, "FROM scratch\nADD up.tar.xz /x/\n", "evil:1", &s, &res, &err) < 0);
    /* An absolute name is taken relative to the destination, as Docker and
     * containerd take it: inside the image, never on the host. */
    KT_EXPECT(build(ctx, "FROM scratch\nADD abs.tar.xz /x/\n", "evil:1", &s, &res, &err) == 0);
    KT_EXPECT(unpack("evil:1", "ba") == 0);
    KT_EXPECT_INT(kt_sh("[ \"$(cat %s/ba/rootfs/x%s/escaped-abs)\" = x ]", dir, outside), 0);
    /* The link may be refused or kept as a link inside the image; nothing
     * is written on the host either way. */
    int rc = build(ctx, "FROM scratch\nADD link.tar.xz /x/\n", "evil:2", &s, &res, &err);
    kiln_error_free(&err);
    KT_EXPECT_INT(kt_sh("[ -z \"$(ls -A %s)\" ]", outside), 0);
    if (rc == 0) {
        KT_REQUIRE(unpack("evil:2", "be") == 0);
        KT_EXPECT_INT(kt_sh("[ \"$(readlink %s/be/rootfs/x/l)\" = '%s' ]", dir, outside), 0);
    }
}

KT_TEARDOWN(teardown)
{
    bld_engine_free(engine);
    if (client)
        kiln_rpc_client_free(client);
    if (pusher.pid > 0)
        th_stop(&pusher, 10000, NULL);
    if (http.pid > 0)
        th_stop(&http, 5000, NULL);
    if (dir && !getenv("KT_KEEP"))
        kt_rmrf(dir);
}
