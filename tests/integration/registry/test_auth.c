/* Authentication and TLS against docker-registry: HTTPS with a test CA in a
 * certs.d directory and htpasswd Basic auth (explicit creds, config.json
 * auths, a credential helper; wrong or missing credentials; an unknown CA),
 * and Bearer tokens from tests/fakes/token_server.py whose JWTs expire in
 * the middle of a chunked push. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "reg_fixture.h"

/* Pushes and returns the code; the message goes to *msg (caller frees). */
static int try_push(rf_env *e, const char *src, const char *dst, const psh_registry_opts *o,
                    char **msg)
{
    kiln_error *err = NULL;
    psh_push_result res;
    int r = psh_push(e->s, src, dst, o, NULL, &res, &err);
    if (msg)
        *msg = err ? strdup(err->msg) : NULL;
    if (r < 0 && getenv("KT_VERBOSE"))
        fprintf(stderr, "    push: %s\n", err->msg);
    kiln_error_free(&err);
    return r;
}

KT_TEST(https_basic_auth)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, true, RF_AUTH_BASIC, 0) == 0);
    char man[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "auth:1", 100000, "amd64", man, NULL) == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    char dst[256];
    snprintf(dst, sizeof(dst), "%s/sec/app:1", e.reg.host);

    /* No credentials, wrong ones: EAUTH, and the password never shows. */
    char *msg = NULL;
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, &msg), KILN_EAUTH);
    KT_EXPECT(msg != NULL && strstr(msg, "credentials") != NULL);
    free(msg);
    o.creds = "kiln:wrong-pw-123";
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, &msg), KILN_EAUTH);
    KT_EXPECT(msg != NULL && strstr(msg, "wrong-pw-123") == NULL);
    KT_EXPECT(msg != NULL && strstr(msg, "rejected") != NULL);
    free(msg);

    /* Unknown CA (empty cert dir): a TLS error that says what to do. */
    o.creds = "kiln:s3cret-pw";
    char empty[4300];
    snprintf(empty, sizeof(empty), "%s/no-certs", e.dir);
    o.cert_dir = empty;
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, &msg), KILN_EPERM);
    KT_EXPECT(msg != NULL && strstr(msg, "cert-dir") != NULL);
    free(msg);

    /* Marked insecure (flag, or a registries config): TLS without verification. */
    o.cert_dir = empty;
    o.tls_verify = false;
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, NULL), 0);
    o.tls_verify = true;
    char conf[4300], line[128];
    snprintf(conf, sizeof(conf), "%s/registries.conf", e.dir);
    snprintf(line, sizeof(line), "[[registry]]\nlocation = \"%s\"\ninsecure = true\n", e.reg.host);
    KT_REQUIRE(kt_write_file(conf, line) == 0);
    o.registries_conf = conf;
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, NULL), 0);
    o.registries_conf = NULL;

    /* Right CA and credentials. */
    o.cert_dir = e.reg.certs_d;
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, NULL), 0);
    KT_EXPECT_INT(kt_sh("skopeo inspect --cert-dir %s/%s --creds kiln:s3cret-pw docker://%s | "
                        "grep -q %s",
                        e.reg.certs_d, e.reg.host, dst, man),
                  0);

    /* config.json: auths with base64 auth, then username/password. */
    char cfg[4300], js[1024];
    snprintf(cfg, sizeof(cfg), "%s/config.json", e.dir);
    snprintf(js, sizeof(js), "{\"auths\":{\"https://%s\":{\"auth\":\"a2lsbjpzM2NyZXQtcHc=\"}}}",
             e.reg.host);
    KT_REQUIRE(kt_write_file(cfg, js) == 0);
    o.creds = NULL;
    o.authfile = cfg;
    snprintf(dst, sizeof(dst), "%s/sec/app:2", e.reg.host);
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, NULL), 0);
    snprintf(js, sizeof(js),
             "{\"auths\":{\"%s\":{\"username\":\"kiln\",\"password\":\"s3cret-pw\"}}}", e.reg.host);
    KT_REQUIRE(kt_write_file(cfg, js) == 0);
    psh_store *s2 = NULL;
    char *d2 = kt_tmpdir("reg");
    KT_REQUIRE(psh_store_open(&s2, d2, NULL) == 0);
    kiln_error *err = NULL;
    psh_pull_result pr;
    KT_EXPECT_INT(psh_pull(s2, dst, NULL, &o, NULL, &pr, &err), 0);
    KT_EXPECT_STR(pr.manifest.digest, man);
    kiln_error_free(&err);

    /* A credential helper named in credHelpers. */
    char bin[4300], path[8192];
    snprintf(bin, sizeof(bin), "%s/bin", e.dir);
    char helper[4400], script[1024];
    KT_REQUIRE(kt_sh("mkdir -p %s", bin) == 0);
    snprintf(helper, sizeof(helper), "%s/docker-credential-kilntest", bin);
    snprintf(script, sizeof(script),
             "#!/bin/sh\nread h\n[ \"$h\" = \"%s\" ] || exit 1\n"
             "echo '{\"Username\":\"kiln\",\"Secret\":\"s3cret-pw\"}'\n",
             e.reg.host);
    KT_REQUIRE(kt_write_file(helper, script) == 0 && kt_sh("chmod +x %s", helper) == 0);
    const char *old = getenv("PATH");
    char *saved = old ? strdup(old) : NULL;
    snprintf(path, sizeof(path), "%s:%s", bin, old ? old : "/usr/bin:/bin");
    setenv("PATH", path, 1);
    snprintf(js, sizeof(js), "{\"credHelpers\":{\"%s\":\"kilntest\"}}", e.reg.host);
    KT_REQUIRE(kt_write_file(cfg, js) == 0);
    snprintf(dst, sizeof(dst), "%s/sec/app:3", e.reg.host);
    KT_EXPECT_INT(try_push(&e, "auth:1", dst, &o, NULL), 0);
    if (saved) {
        setenv("PATH", saved, 1);
        free(saved);
    }
    psh_store_free(s2);
    kt_rmrf(d2);
    free(d2);
    rf_env_close(&e);
}

static int count_lines(const char *path)
{
    char *t = kt_read_file(path, NULL);
    int n = 0;
    for (char *p = t; p && *p; p++)
        n += *p == '\n';
    free(t);
    return n;
}

KT_TEST(bearer_tokens_refresh_mid_push)
{
    rf_env e;
    /* JWTs live 2 s (after the registry's leeway); the token response
     * claims 300 s, so the cached token goes stale in the middle of the
     * upload and the registry answers 401 to a chunk. */
    KT_REQUIRE(rf_env_open(&e, false, RF_AUTH_TOKEN, 2) == 0);
    char man[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "tok:1", (size_t)6 << 20, "amd64", man, NULL) == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    o.chunk_size = (uint64_t)1 << 20;
    char dst[256];
    snprintf(dst, sizeof(dst), "%s/tok/app:1", e.reg.host);

    /* Anonymous: the token server grants pull only, so the push is refused. */
    char *msg = NULL;
    KT_EXPECT_INT(try_push(&e, "tok:1", dst, &o, &msg), KILN_EAUTH);
    free(msg);

    o.creds = "kiln:s3cret-pw";
    rf_counts c = {.progress_sleep_ms = 600};
    psh_reg_events ev;
    rf_events(&ev, &c);
    kiln_error *err = NULL;
    psh_push_result res;
    int before = count_lines(e.reg.token_log);
    KT_EXPECT_INT(psh_push(e.s, "tok:1", dst, &o, &ev, &res, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    int issued = count_lines(e.reg.token_log) - before;
    KT_EXPECT(issued >= 2); /* at least one refresh after a 401 mid-push */
    KT_EXPECT_STR(res.manifest.digest, man);

    /* An identity token from config.json: the OAuth2 refresh-token grant. */
    char cfg[4300], js[512];
    snprintf(cfg, sizeof(cfg), "%s/config.json", e.dir);
    snprintf(js, sizeof(js), "{\"auths\":{\"%s\":{\"identitytoken\":\"s3cret-pw\"}}}", e.reg.host);
    KT_REQUIRE(kt_write_file(cfg, js) == 0);
    o.creds = NULL;
    o.authfile = cfg;
    snprintf(dst, sizeof(dst), "%s/tok/app:2", e.reg.host);
    KT_EXPECT_INT(try_push(&e, "tok:1", dst, &o, NULL), 0);
    char *log = kt_read_file(e.reg.token_log, NULL);
    KT_EXPECT(log != NULL && strstr(log, "kiln access_token repository:tok/app:pull,push") != NULL);
    free(log);
    o.authfile = "/nonexistent/kiln-test-config.json";

    /* Anonymous pull works with a pull-only token. */
    psh_store *s2 = NULL;
    char *d2 = kt_tmpdir("reg");
    KT_REQUIRE(psh_store_open(&s2, d2, NULL) == 0);
    o.creds = NULL;
    psh_pull_result pr;
    KT_EXPECT_INT(psh_pull(s2, dst, NULL, &o, NULL, &pr, &err), 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT_STR(pr.manifest.digest, man);
    psh_store_free(s2);
    kt_rmrf(d2);
    free(d2);
    rf_env_close(&e);
}

/* A registry on HTTPS whose token realm is plain HTTP: the credentials would
 * go to the realm in clear, so the token is not fetched at all (the token
 * server logs every token it issues) and the error names the realm; a
 * registry marked insecure may use such a realm. */
KT_TEST(bearer_realm_over_plain_http_is_refused_for_https_registries)
{
    rf_env e;
    KT_REQUIRE(rf_env_open(&e, true, RF_AUTH_TOKEN, 60) == 0);
    char man[KILN_DIGEST_STRLEN + 1];
    KT_REQUIRE(rf_random_image(e.s, e.dir, "realm:1", 50000, "amd64", man, NULL) == 0);
    psh_registry_opts o;
    rf_opts(&o, &e.reg);
    o.creds = "kiln:s3cret-pw";
    char dst[256], realm[128];
    snprintf(dst, sizeof(dst), "%s/realm/app:1", e.reg.host);
    snprintf(realm, sizeof(realm), "http://127.0.0.1:%d/token", e.reg.token_port);
    int before = count_lines(e.reg.token_log);
    char *msg = NULL;
    KT_EXPECT_INT(try_push(&e, "realm:1", dst, &o, &msg), KILN_EREMOTE);
    KT_EXPECT(msg != NULL && strstr(msg, realm) != NULL);
    KT_EXPECT(msg != NULL && strstr(msg, "s3cret-pw") == NULL);
    if (msg)
        fprintf(stderr, "    %s\n", msg);
    free(msg);
    KT_EXPECT_INT(count_lines(e.reg.token_log) - before, 0);

    /* Marked insecure, the same registry and realm work. */
    o.tls_verify = false;
    KT_EXPECT_INT(try_push(&e, "realm:1", dst, &o, NULL), 0);
    KT_EXPECT(count_lines(e.reg.token_log) - before >= 1);
    rf_env_close(&e);
}
