/* certs.d, the containers/Docker per-registry TLS directory:
 * <root>/<host[:port]>/NAME.crt are CAs added to the system bundle, and
 * NAME.cert + NAME.key pairs are a client certificate and its key presented
 * to the registry (mutual TLS).  One root is consulted: --cert-dir, else
 * /etc/containers/certs.d (/etc/docker/certs.d is not read).
 *
 * Key material is only ever read to check it parses and matches its
 * certificate (libcurl reads the files again when it connects); it never
 * appears in messages, and the copy read here is wiped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "reg_internal.h"

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define DEFAULT_CERTS_D  "/etc/containers/certs.d"
#define CA_BLOB_MAX      ((size_t)8 << 20)
#define PEM_FILE_MAX     ((size_t)1 << 20) /* one client certificate or key */

int reg_certs_host_dir(const psh_registry_opts *o, const char *host, char *out, size_t n,
                       kiln_error **err)
{
    const char *root = o->cert_dir != NULL ? o->cert_dir : DEFAULT_CERTS_D;
    int l = snprintf(out, n, "%s/%s", root, host);
    if (l < 0 || (size_t)l >= n)
        return kiln_error_set(err, KILN_EINVAL, 0, "cert dir path too long");
    return 0;
}

static int append_file(kiln_buf *b, const char *path)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    char tmp[16384];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        if (kiln_buf_append(b, tmp, n, NULL) < 0)
            return -1;
    return kiln_buf_append(b, "\n", 1, NULL);
}

int reg_certs_load_cas(const char *dir, char **blob, size_t *len)
{
    *blob = NULL;
    *len = 0;
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    kiln_buf b;
    kiln_buf_init(&b, CA_BLOB_MAX);
    int found = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".crt") != 0)
            continue;
        char p[8192];
        snprintf(p, sizeof(p), "%.4096s/%.255s", dir, de->d_name);
        if (append_file(&b, p) == 0)
            found++;
    }
    if (found == 0) {
        kiln_buf_dispose(&b);
        return 0;
    }
    append_file(&b, SYSTEM_CA_BUNDLE); /* may be missing in minimal images */
    *blob = kiln_buf_steal(&b, len);
    return 0;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t l = strlen(s), sl = strlen(suf);
    return l > sl && strcmp(s + l - sl, suf) == 0;
}

static int pem_name(const struct dirent *de)
{
    return has_suffix(de->d_name, ".cert") || has_suffix(de->d_name, ".key");
}

/* Byte order, not the locale's collation: the same pair on every host. */
static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static bool listed(struct dirent **ents, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(ents[i]->d_name, name) == 0)
            return true;
    return false;
}

static void free_ents(struct dirent **ents, int n)
{
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
}

int reg_certs_find_pair(const char *dir, char **cert, char **key, kiln_error **err)
{
    *cert = NULL;
    *key = NULL;
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, pem_name, by_name);
    if (n < 0 && (errno == ENOENT || errno == ENOTDIR))
        return 0; /* no directory for this registry: no client certificate */
    if (n < 0)
        return kiln_error_set(err, KILN_EINVAL, errno, "cannot read cert dir %s", dir);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *name = ents[i]->d_name;
        bool is_cert = has_suffix(name, ".cert");
        size_t base = strlen(name) - (is_cert ? 5 : 4);
        char other[300];
        snprintf(other, sizeof(other), "%.*s%s", (int)base, name, is_cert ? ".key" : ".cert");
        if (!listed(ents, n, other)) {
            /* containers/image refuses half pairs too, with the same words. */
            if (is_cert)
                rc = kiln_error_set(err, KILN_EINVAL, 0,
                                    "missing key %s/%s for client certificate %s/%s (CA "
                                    "certificates use the extension .crt)",
                                    dir, other, dir, name);
            else
                rc = kiln_error_set(err, KILN_EINVAL, 0,
                                    "missing client certificate %s/%s for key %s/%s", dir, other,
                                    dir, name);
            break;
        }
        if (is_cert && *cert == NULL) {
            char *c = NULL, *k = NULL;
            if (asprintf(&c, "%s/%s", dir, name) < 0)
                c = NULL;
            if (asprintf(&k, "%s/%s", dir, other) < 0)
                k = NULL;
            *cert = c;
            *key = k;
            if (c == NULL || k == NULL)
                rc = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        }
    }
    free_ents(ents, n);
    if (rc < 0) {
        free(*cert);
        free(*key);
        *cert = NULL;
        *key = NULL;
    }
    return rc;
}

/* Reads a small file into *out (caller wipes and frees). */
static int read_small(const char *path, const char *what, char **out, size_t *len, kiln_error **err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return kiln_error_set(err, KILN_EINVAL, errno, "cannot read %s %s", what, path);
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > PEM_FILE_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s %s: not a regular file of at most %zu bytes",
                              what, path, PEM_FILE_MAX);
    char *b = malloc((size_t)st.st_size + 1);
    if (b == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            explicit_bzero(b, got);
            free(b);
            return kiln_error_set(err, KILN_EINVAL, e, "cannot read %s %s", what, path);
        }
        got += (size_t)r;
    }
    *out = b;
    *len = got;
    return 0;
}

/* Encrypted keys are refused rather than prompted for (no terminal here). */
static int no_passphrase(char *buf, int size, int rw, void *ud)
{
    (void)buf;
    (void)size;
    (void)rw;
    (void)ud;
    return -1;
}

int reg_certs_check_pair(const char *cert, const char *key, kiln_error **err)
{
    char *kb = NULL, *cb = NULL;
    size_t kl = 0, cl = 0;
    int rc = read_small(key, "client key", &kb, &kl, err);
    if (rc == 0)
        rc = read_small(cert, "client certificate", &cb, &cl, err);
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    if (rc == 0) {
        BIO *bio = BIO_new_mem_buf(kb, (int)kl);
        pk = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
        BIO_free(bio);
        if (pk == NULL)
            rc = kiln_error_set(err, KILN_EINVAL, 0,
                                "client key %s: not an unencrypted PEM private key", key);
    }
    if (rc == 0) {
        BIO *bio = BIO_new_mem_buf(cb, (int)cl);
        x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (x == NULL)
            rc = kiln_error_set(err, KILN_EINVAL, 0, "client certificate %s: not a PEM certificate",
                                cert);
    }
    if (rc == 0 && X509_check_private_key(x, pk) != 1)
        rc = kiln_error_set(err, KILN_EINVAL, 0, "client certificate %s does not match key %s",
                            cert, key);
    ERR_clear_error(); /* nothing of this thread's queue leaks into libcurl's messages */
    X509_free(x);
    EVP_PKEY_free(pk);
    if (kb != NULL)
        explicit_bzero(kb, kl);
    free(kb);
    free(cb);
    return rc;
}
