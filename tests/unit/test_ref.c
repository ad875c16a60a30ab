/* Table-driven tests for the Docker-compatible reference parser (kiln_ref). */
#include <string.h>

#include "cleanup.h"
#include "kt.h"
#include "ref.h"

struct good_case {
    const char *in;
    unsigned flags;
    const char *domain, *path, *tag, *digest;
    const char *familiar, *canonical;
};

#define D64 "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const struct good_case good[] = {
    {"app", KILN_REF_DEFAULT_TAG, "docker.io", "library/app", "latest", "", "app:latest",
     "docker.io/library/app:latest"},
    {"app", 0, "docker.io", "library/app", "", "", "app", "docker.io/library/app"},
    {"app:1", 0, "docker.io", "library/app", "1", "", "app:1", "docker.io/library/app:1"},
    {"docker.io/library/app:1", 0, "docker.io", "library/app", "1", "", "app:1",
     "docker.io/library/app:1"},
    {"index.docker.io/library/app:1", 0, "docker.io", "library/app", "1", "", "app:1",
     "docker.io/library/app:1"},
    {"docker.io/app", KILN_REF_DEFAULT_TAG, "docker.io", "library/app", "latest", "", "app:latest",
     "docker.io/library/app:latest"},
    {"team/app:v1.2-rc_3", 0, "docker.io", "team/app", "v1.2-rc_3", "", "team/app:v1.2-rc_3",
     "docker.io/team/app:v1.2-rc_3"},
    {"docker.io/library/a/b", 0, "docker.io", "library/a/b", "", "", "library/a/b",
     "docker.io/library/a/b"},
    {"localhost/app", KILN_REF_DEFAULT_TAG, "localhost", "app", "latest", "",
     "localhost/app:latest", "localhost/app:latest"},
    {"localhost:5000/team/app:1", 0, "localhost:5000", "team/app", "1", "",
     "localhost:5000/team/app:1", "localhost:5000/team/app:1"},
    {"127.0.0.1:5000/app", 0, "127.0.0.1:5000", "app", "", "", "127.0.0.1:5000/app",
     "127.0.0.1:5000/app"},
    {"ghcr.io/owner/repo/sub:tag", 0, "ghcr.io", "owner/repo/sub", "tag", "",
     "ghcr.io/owner/repo/sub:tag", "ghcr.io/owner/repo/sub:tag"},
    {"Registry.Example.com/app", 0, "Registry.Example.com", "app", "", "",
     "Registry.Example.com/app", "Registry.Example.com/app"},
    {"my-registry:443/a", 0, "my-registry:443", "a", "", "", "my-registry:443/a",
     "my-registry:443/a"},
    {"[::1]:5000/app:2", 0, "[::1]:5000", "app", "2", "", "[::1]:5000/app:2", "[::1]:5000/app:2"},
    {"app@" D64, KILN_REF_DEFAULT_TAG, "docker.io", "library/app", "", D64, "app@" D64,
     "docker.io/library/app@" D64},
    {"app:1@" D64, 0, "docker.io", "library/app", "1", D64, "app:1@" D64,
     "docker.io/library/app:1@" D64},
    {"team/a__b.c-d---e_f", 0, "docker.io", "team/a__b.c-d---e_f", "", "", "team/a__b.c-d---e_f",
     "docker.io/team/a__b.c-d---e_f"},
    {"a.b/x", 0, "a.b", "x", "", "", "a.b/x", "a.b/x"}, /* '.' in the first part: a domain */
    {"app:_", 0, "docker.io", "library/app", "_", "", "app:_", "docker.io/library/app:_"},
    {"app:A.b-C", 0, "docker.io", "library/app", "A.b-C", "", "app:A.b-C",
     "docker.io/library/app:A.b-C"},
    /* Hub paths that would read as a registry keep their domain when printed. */
    {"docker.io/foo.bar/x:1", 0, "docker.io", "foo.bar/x", "1", "", "docker.io/foo.bar/x:1",
     "docker.io/foo.bar/x:1"},
    {"docker.io/localhost/x", 0, "docker.io", "localhost/x", "", "", "docker.io/localhost/x",
     "docker.io/localhost/x"},
    {"docker.io/foo.bar", 0, "docker.io", "library/foo.bar", "", "", "foo.bar",
     "docker.io/library/foo.bar"},
    {"library/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 0, "docker.io",
     "library/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "", "",
     "library/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
     "docker.io/library/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
    {"0/1", 0, "docker.io", "0/1", "", "", "0/1", "docker.io/0/1"},
};

KT_TEST(ref_good_table)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(good); i++) {
        const struct good_case *c = &good[i];
        kiln_ref r;
        kiln_error *err = NULL;
        int rc = kiln_ref_parse(&r, c->in, c->flags, &err);
        if (rc != 0) {
            KT_FAIL("%s: %s", c->in, err ? err->msg : "?");
            kiln_error_free(&err);
            continue;
        }
        char fam[KILN_REF_STRMAX], can[KILN_REF_STRMAX];
        kiln_ref_familiar(&r, fam, sizeof(fam));
        kiln_ref_canonical(&r, can, sizeof(can));
        KT_EXPECT_STR(r.domain, c->domain);
        KT_EXPECT_STR(r.path, c->path);
        KT_EXPECT_STR(r.tag, c->tag);
        KT_EXPECT_STR(r.digest, c->digest);
        KT_EXPECT_STR(fam, c->familiar);
        KT_EXPECT_STR(can, c->canonical);
        /* Both printed forms parse back to the same reference. */
        kiln_ref r2, r3;
        KT_EXPECT_INT(kiln_ref_parse(&r2, fam, c->flags, NULL), 0);
        KT_EXPECT_INT(kiln_ref_parse(&r3, can, c->flags, NULL), 0);
        KT_EXPECT(kiln_ref_equal(&r, &r2));
        KT_EXPECT(kiln_ref_equal(&r, &r3));
    }
}

struct bad_case {
    const char *in;
    unsigned flags;
    const char *why; /* a word the message must contain */
};

static const struct bad_case bad[] = {
    {"", 0, "empty"},
    {"App", 0, "lowercase"},
    {"team/App:1", 0, "lowercase"},
    {"app:", 0, "tag"},
    {"app:-x", 0, "tag"},
    {"app:.x", 0, "tag"},
    {"app:a/b", 0, "invalid"},
    {"app:1:2", 0, "invalid"},
    {"app@sha256:abc", 0, "digest"},
    {"app@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", 0, "digest"},
    {"app@sha512:0123", 0, "algorithm"},
    {"app@", 0, "digest"},
    {"app@" D64, KILN_REF_NO_DIGEST, "digest"},
    {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 0, "image id"},
    {"/app", 0, "invalid"},
    {"app/", 0, "invalid"},
    {"a//b", 0, "invalid"},
    {"-app", 0, "invalid"},
    {"app-", 0, "invalid"},
    {"a..b", 0, "invalid"},
    {"a___b", 0, "invalid"},
    {"a.-b", 0, "invalid"},
    {"a b", 0, "invalid"},
    {"../../etc/passwd", 0, "invalid"},
    {"team/../app", 0, "invalid"},
    {"localhost:5000/", 0, "empty"},
    {"localhost:port/app", 0, "registry"},
    {"-bad.io/app", 0, "registry"},
    {"bad-.io/app", 0, "registry"},
    {"a..io/app", 0, "registry"},
    {"host:123456/app", 0, "registry"},
    {"[zz::1]/app", 0, "registry"},
    {":tag", 0, "repository"},
    {"@" D64, 0, "repository"},
    {"app\n", 0, "invalid"},
};

KT_TEST(ref_bad_table)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(bad); i++) {
        const struct bad_case *c = &bad[i];
        kiln_ref r;
        kiln_error *err = NULL;
        int rc = kiln_ref_parse(&r, c->in, c->flags, &err);
        if (rc != KILN_EINVAL) {
            KT_FAIL("\"%s\" accepted (rc %d)", c->in, rc);
            kiln_error_free(&err);
            continue;
        }
        KT_REQUIRE(err != NULL);
        if (strstr(err->msg, c->why) == NULL)
            KT_FAIL("\"%s\": message \"%s\" lacks \"%s\"", c->in, err->msg, c->why);
        KT_EXPECT_STR(r.path, ""); /* zeroed on failure */
        kiln_error_free(&err);
    }
}

KT_TEST(ref_name_length_limit)
{
    /* docker.io/library/ + n = 255 is the longest accepted Hub name. */
    char name[300];
    size_t n = 255 - strlen("docker.io/library/");
    memset(name, 'a', n);
    name[n] = '\0';
    kiln_ref r;
    KT_EXPECT_INT(kiln_ref_parse(&r, name, 0, NULL), 0);
    name[n] = 'a';
    name[n + 1] = '\0';
    KT_EXPECT_INT(kiln_ref_parse(&r, name, 0, NULL), KILN_EINVAL);
}

KT_TEST(ref_tag_length_limit)
{
    char in[200] = "app:";
    memset(in + 4, 'x', 128);
    in[4 + 128] = '\0';
    kiln_ref r;
    KT_EXPECT_INT(kiln_ref_parse(&r, in, 0, NULL), 0);
    KT_EXPECT_INT(strlen(r.tag), 128);
    in[4 + 128] = 'x';
    in[4 + 129] = '\0';
    KT_EXPECT_INT(kiln_ref_parse(&r, in, 0, NULL), KILN_EINVAL);
}

KT_TEST(ref_other_registry_length_limit)
{
    char in[400] = "example.com/";
    size_t n = strlen(in);
    memset(in + n, 'a', 255 - n); /* exactly 255 */
    in[255] = '\0';
    kiln_ref r;
    KT_EXPECT_INT(kiln_ref_parse(&r, in, 0, NULL), 0);
    in[255] = 'a';
    in[256] = '\0';
    kiln_error *err = NULL;
    KT_EXPECT_INT(kiln_ref_parse(&r, in, 0, &err), KILN_EINVAL);
    KT_EXPECT(err != NULL && strstr(err->msg, "255") != NULL);
    kiln_error_free(&err);
}

KT_TEST(ref_registry_host)
{
    kiln_ref r;
    KT_REQUIRE(kiln_ref_parse(&r, "app", 0, NULL) == 0);
    KT_EXPECT_STR(kiln_ref_registry_host(&r), "registry-1.docker.io");
    KT_REQUIRE(kiln_ref_parse(&r, "localhost:5000/app", 0, NULL) == 0);
    KT_EXPECT_STR(kiln_ref_registry_host(&r), "localhost:5000");
    char repo[KILN_REF_STRMAX];
    KT_REQUIRE(kiln_ref_parse(&r, "app:3", 0, NULL) == 0);
    kiln_ref_repository(&r, repo, sizeof(repo));
    KT_EXPECT_STR(repo, "docker.io/library/app");
}

KT_TEST(ref_tag_valid)
{
    KT_EXPECT(kiln_ref_tag_valid("latest"));
    KT_EXPECT(kiln_ref_tag_valid("_x"));
    KT_EXPECT(!kiln_ref_tag_valid(""));
    KT_EXPECT(!kiln_ref_tag_valid(".x"));
    KT_EXPECT(!kiln_ref_tag_valid("x/y"));
}

KT_TEST(ref_format_truncation)
{
    kiln_ref r;
    KT_REQUIRE(kiln_ref_parse(&r, "localhost:5000/team/app:1", 0, NULL) == 0);
    char small[8];
    size_t need = kiln_ref_familiar(&r, small, sizeof(small));
    KT_EXPECT_INT(need, strlen("localhost:5000/team/app:1"));
    KT_EXPECT_INT(strlen(small), 7);
}
