/* SHA-256 through OpenSSL EVP; the EVP path picks SHA-NI where the CPU has it. */
#include "digest.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

struct kiln_sha256 {
    EVP_MD_CTX *ctx;
};

kiln_sha256 *kiln_sha256_new(void)
{
    kiln_sha256 *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void kiln_sha256_free(kiln_sha256 *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void kiln_sha256_reset(kiln_sha256 *h)
{
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void kiln_sha256_update(kiln_sha256 *h, const void *data, size_t len)
{
    if (len)
        EVP_DigestUpdate(h->ctx, data, len);
}

void kiln_sha256_final(kiln_sha256 *h, uint8_t out[KILN_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, out, &n);
}

void kiln_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void kiln_sha256_final_str(kiln_sha256 *h, char out[KILN_DIGEST_STRLEN + 1])
{
    uint8_t raw[KILN_SHA256_LEN];
    kiln_sha256_final(h, raw);
    memcpy(out, "sha256:", 7);
    kiln_hex(raw, sizeof(raw), out + 7);
}

void kiln_sha256_bytes(const void *data, size_t len, char out[KILN_DIGEST_STRLEN + 1])
{
    uint8_t raw[KILN_SHA256_LEN];
    unsigned int n = 0;
    EVP_Digest(data, len, raw, &n, EVP_sha256(), NULL);
    memcpy(out, "sha256:", 7);
    kiln_hex(raw, sizeof(raw), out + 7);
}

int kiln_sha256_file(const char *path, char out[KILN_DIGEST_STRLEN + 1], uint64_t *size_out,
                     kiln_error **err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kiln_error_set(err, kiln_code_from_errno(errno), errno, "open %s", path);
    kiln_sha256 *h = kiln_sha256_new();
    if (h == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "sha256 context");
    _cleanup_free_ char *block = malloc(1 << 16);
    if (block == NULL) {
        kiln_sha256_free(h);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, block, 1 << 16);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            kiln_sha256_free(h);
            return kiln_error_set(err, KILN_EIO, e, "read %s", path);
        }
        if (n == 0)
            break;
        kiln_sha256_update(h, block, (size_t)n);
        total += (uint64_t)n;
    }
    kiln_sha256_final_str(h, out);
    kiln_sha256_free(h);
    if (size_out)
        *size_out = total;
    return 0;
}

int kiln_digest_valid(const char *s)
{
    if (s == NULL || strncmp(s, "sha256:", 7) != 0 || strlen(s) != KILN_DIGEST_STRLEN)
        return 0;
    for (const char *p = s + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}
