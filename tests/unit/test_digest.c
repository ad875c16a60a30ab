/* SHA-256 against NIST FIPS 180-2 vectors, streamed in odd chunk sizes. */
#include "kt.h"
#include "digest.h"
#include "buf.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *msg;
    const char *hex;
} vectors[] = {
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlm"
     "nopqrsmnopqrstnopqrstu",
     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
};

KT_TEST(nist_vectors_one_shot)
{
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char out[KILN_DIGEST_STRLEN + 1];
        kiln_sha256_bytes(vectors[i].msg, strlen(vectors[i].msg), out);
        KT_EXPECT_STR(out + 7, vectors[i].hex);
        KT_EXPECT(strncmp(out, "sha256:", 7) == 0);
        KT_EXPECT(kiln_digest_valid(out));
    }
}

KT_TEST(nist_vectors_streamed_in_odd_chunks)
{
    static const size_t chunks[] = {1, 3, 7, 13, 63, 64, 65, 127};
    kiln_sha256 *h = kiln_sha256_new();
    KT_REQUIRE(h != NULL);
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
            kiln_sha256_reset(h);
            const char *m = vectors[i].msg;
            size_t len = strlen(m);
            for (size_t off = 0; off < len; off += chunks[c]) {
                size_t n = len - off < chunks[c] ? len - off : chunks[c];
                kiln_sha256_update(h, m + off, n);
            }
            char out[KILN_DIGEST_STRLEN + 1];
            kiln_sha256_final_str(h, out);
            KT_EXPECT_STR(out + 7, vectors[i].hex);
        }
    }
    kiln_sha256_free(h);
}

KT_TEST(one_million_a_streamed)
{
    /* FIPS 180-2 long message: one million repetitions of 'a'. */
    kiln_sha256 *h = kiln_sha256_new();
    KT_REQUIRE(h != NULL);
    char block[997];
    memset(block, 'a', sizeof(block));
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof(block) ? left : sizeof(block);
        kiln_sha256_update(h, block, n);
        left -= n;
    }
    char out[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_final_str(h, out);
    KT_EXPECT_STR(out, "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    kiln_sha256_free(h);
}

KT_TEST(file_digest_matches_bytes)
{
    char path[] = "/tmp/kiln-digest-XXXXXX";
    int fd = mkstemp(path);
    KT_REQUIRE(fd >= 0);
    KT_REQUIRE(write(fd, "abc", 3) == 3);
    close(fd);
    char out[KILN_DIGEST_STRLEN + 1];
    uint64_t size = 0;
    kiln_error *err = NULL;
    KT_EXPECT_INT(kiln_sha256_file(path, out, &size, &err), 0);
    KT_EXPECT_STR(out + 7, vectors[1].hex);
    KT_EXPECT_INT(size, 3);
    unlink(path);
    KT_EXPECT(kiln_sha256_file(path, out, NULL, &err) == KILN_ENOENT);
    kiln_error_free(&err);
}

KT_TEST(digest_validation)
{
    KT_EXPECT(!kiln_digest_valid("sha256:abc"));
    KT_EXPECT(
        !kiln_digest_valid("md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    KT_EXPECT(!kiln_digest_valid(
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));
    KT_EXPECT(!kiln_digest_valid(NULL));
}

KT_TEST(buf_ceiling)
{
    kiln_buf b;
    kiln_buf_init(&b, 8);
    kiln_error *err = NULL;
    KT_EXPECT_INT(kiln_buf_puts(&b, "12345678", &err), 0);
    KT_EXPECT_INT(kiln_buf_puts(&b, "9", &err), KILN_ENOSPC);
    KT_EXPECT_INT(b.len, 8);
    KT_EXPECT_STR(b.data, "12345678");
    kiln_error_free(&err);
    kiln_buf_reset(&b);
    KT_EXPECT_INT(kiln_buf_printf(&b, &err, "%d-%s", 42, "x"), 0);
    KT_EXPECT_STR(b.data, "42-x");
    kiln_buf_dispose(&b);
}
