/* certs.d client certificates: which NAME.cert/NAME.key pair of a registry's
 * directory is used (table-driven over directory layouts), half pairs
 * refused with the files named, and the pair check (unreadable, not PEM,
 * encrypted, mismatched) never echoing key material.  Keys are made with
 * OpenSSL in the test: no tools, no network. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kt.h"
#include "kt_util.h"
#include "reg_internal.h"

static char *mkdtemp_dup(void)
{
    char tmpl[] = "/tmp/kiln-certs-XXXXXX";
    return mkdtemp(tmpl) != NULL ? strdup(tmpl) : NULL;
}

static void touch(const char *dir, const char *name, const char *content)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f != NULL) {
        fputs(content, f);
        fclose(f);
    }
}

KT_TEST(pair_selection)
{
    static const struct {
        const char *files; /* space-separated names created in the directory */
        const char *cert;  /* chosen certificate, NULL = none */
        const char *error; /* substring of the error, NULL = success */
    } cases[] = {
        {"", NULL, NULL},
        {"ca.crt", NULL, NULL},
        {"ca.crt client.cert client.key", "client.cert", NULL},
        {"b.cert b.key a.cert a.key", "a.cert", NULL},
        {"B.cert B.key a.cert a.key", "B.cert", NULL}, /* byte order, not the locale's */
        {"client.cert", NULL, "missing key"},
        {"client.key", NULL, "missing client certificate"},
        {"a.cert a.key z.cert", NULL, "z.key for client certificate"},
        {"a.crt a.key", NULL, "missing client certificate"}, /* a CA is not a client cert */
        {".cert .key", NULL, NULL},                          /* no NAME: not a pair */
        {"x.cert.bak x.key~", NULL, NULL},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char *dir = mkdtemp_dup();
        KT_REQUIRE(dir != NULL);
        char files[256];
        snprintf(files, sizeof(files), "%s", cases[i].files);
        for (char *sv = NULL, *t = strtok_r(files, " ", &sv); t; t = strtok_r(NULL, " ", &sv))
            touch(dir, t, "x");
        char *cert = NULL, *key = NULL;
        kiln_error *err = NULL;
        int rc = reg_certs_find_pair(dir, &cert, &key, &err);
        if (cases[i].error != NULL) {
            KT_EXPECT_INT(rc, KILN_EINVAL);
            KT_EXPECT(err != NULL && strstr(err->msg, cases[i].error) != NULL);
            KT_EXPECT(err != NULL && strstr(err->msg, dir) != NULL); /* full paths */
            KT_EXPECT(cert == NULL && key == NULL);
        } else if (cases[i].cert != NULL) {
            KT_EXPECT_INT(rc, 0);
            char want[512];
            snprintf(want, sizeof(want), "%s/%s", dir, cases[i].cert);
            KT_EXPECT(cert != NULL && strcmp(cert, want) == 0);
            size_t bl = strlen(want) - 5;
            KT_EXPECT(key != NULL && strncmp(key, want, bl) == 0 && strcmp(key + bl, ".key") == 0);
        } else {
            KT_EXPECT_INT(rc, 0);
            KT_EXPECT(cert == NULL && key == NULL);
        }
        if (rc == 0 && cases[i].error != NULL)
            fprintf(stderr, "case %zu (%s) accepted\n", i, cases[i].files);
        free(cert);
        free(key);
        kiln_error_free(&err);
        kt_rmrf(dir);
        free(dir);
    }
    /* No directory for the registry: no client certificate, no error. */
    char *cert = NULL, *key = NULL;
    KT_EXPECT_INT(reg_certs_find_pair("/nonexistent/certs.d/host:5000", &cert, &key, NULL), 0);
    KT_EXPECT(cert == NULL && key == NULL);
}

static EVP_PKEY *new_key(void)
{
    return EVP_EC_gen("P-256");
}

/* Writes a self-signed certificate for k to path. */
static int write_cert(const char *path, EVP_PKEY *k)
{
    X509 *x = X509_new();
    int ok = x != NULL && X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
             X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
             X509_gmtime_adj(X509_getm_notAfter(x), 3600) && X509_set_pubkey(x, k) &&
             X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                        (const unsigned char *)"kiln-client", -1, -1, 0) &&
             X509_set_issuer_name(x, X509_get_subject_name(x)) && X509_sign(x, k, EVP_sha256());
    FILE *f = ok ? fopen(path, "w") : NULL;
    ok = f != NULL && PEM_write_X509(f, x);
    if (f != NULL)
        fclose(f);
    X509_free(x);
    return ok ? 0 : -1;
}

static int write_key(const char *path, EVP_PKEY *k, const char *pass)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok = pass == NULL
                 ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_PrivateKey(f, k, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)pass);
    fclose(f);
    return ok ? 0 : -1;
}

static int check(const char *dir, const char *cert, const char *key, char **msg)
{
    char c[512], k[512];
    snprintf(c, sizeof(c), "%s/%s", dir, cert);
    snprintf(k, sizeof(k), "%s/%s", dir, key);
    kiln_error *err = NULL;
    int rc = reg_certs_check_pair(c, k, &err);
    *msg = err != NULL ? strdup(err->msg) : NULL;
    kiln_error_free(&err);
    return rc;
}

KT_TEST(pair_check)
{
    char *dir = mkdtemp_dup();
    KT_REQUIRE(dir != NULL);
    EVP_PKEY *k1 = new_key(), *k2 = new_key();
    KT_REQUIRE(k1 != NULL && k2 != NULL);
    char p[512];
    snprintf(p, sizeof(p), "%s/c.cert", dir);
    KT_REQUIRE(write_cert(p, k1) == 0);
    snprintf(p, sizeof(p), "%s/c.key", dir);
    KT_REQUIRE(write_key(p, k1, NULL) == 0);
    snprintf(p, sizeof(p), "%s/other.key", dir);
    KT_REQUIRE(write_key(p, k2, NULL) == 0);
    snprintf(p, sizeof(p), "%s/enc.key", dir);
    KT_REQUIRE(write_key(p, k1, "s3cret-passphrase") == 0);
    touch(dir, "garbage.key", "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n");
    snprintf(p, sizeof(p), "%s/dangling.key", dir);
    KT_REQUIRE(symlink("/nonexistent/kiln.key", p) == 0);
    snprintf(p, sizeof(p), "%s/dir.key", dir);
    KT_REQUIRE(mkdir(p, 0700) == 0);

    static const struct {
        const char *cert, *key, *error; /* error substring; NULL = accepted */
    } cases[] = {
        {"c.cert", "c.key", NULL},
        {"c.cert", "other.key", "does not match"},
        {"c.cert", "enc.key", "not an unencrypted PEM private key"},
        {"c.cert", "garbage.key", "not an unencrypted PEM private key"},
        {"c.cert", "dangling.key", "cannot read client key"},
        {"c.cert", "dir.key", "not a regular file"},
        {"c.key", "c.key", "not a PEM certificate"},
        {"missing.cert", "c.key", "cannot read client certificate"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char *msg = NULL;
        int rc = check(dir, cases[i].cert, cases[i].key, &msg);
        if (cases[i].error == NULL) {
            KT_EXPECT_INT(rc, 0);
        } else {
            KT_EXPECT_INT(rc, KILN_EINVAL);
            KT_EXPECT(msg != NULL && strstr(msg, cases[i].error) != NULL);
            /* The file is named; its contents are not. */
            KT_EXPECT(msg != NULL && strstr(msg, dir) != NULL);
            KT_EXPECT(msg != NULL && strstr(msg, "BEGIN") == NULL);
            KT_EXPECT(msg != NULL && strstr(msg, "s3cret") == NULL);
        }
        if (msg != NULL && cases[i].error != NULL && strstr(msg, cases[i].error) == NULL)
            fprintf(stderr, "case %zu: %s\n", i, msg);
        free(msg);
    }
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    kt_rmrf(dir);
    free(dir);
}
