/* common/platform: containerd's normalisation, parsing, formatting and the
 * matching of manifest-list entries, as tables. */
#include "kt.h"
#include "platform.h"

static const struct {
    const char *in, *want; /* want NULL: refused */
} parse_cases[] = {
    {"linux/amd64", "linux/amd64"},
    {"linux/x86_64", "linux/amd64"},
    {"linux/x86-64", "linux/amd64"},
    {"LINUX/X86_64", "linux/amd64"},
    {"linux/amd64/v1", "linux/amd64"},
    {"linux/amd64/v3", "linux/amd64/v3"},
    {"linux/aarch64", "linux/arm64"},
    {"linux/arm64/v8", "linux/arm64"},
    {"linux/arm64/8", "linux/arm64"},
    {"linux/arm64/v8.0", "linux/arm64"},
    {"linux/aarch64/v8", "linux/arm64"},
    {"linux/arm64/9", "linux/arm64/v9"},
    {"linux/arm64/v9.0", "linux/arm64/v9"},
    {"linux/arm64/v9", "linux/arm64/v9"},
    {"linux/armhf", "linux/arm/v7"},
    {"linux/armel", "linux/arm/v6"},
    {"linux/arm", "linux/arm/v7"},
    {"linux/arm/7", "linux/arm/v7"},
    {"linux/arm/6", "linux/arm/v6"},
    {"linux/arm/5", "linux/arm/v5"},
    {"linux/arm/v6", "linux/arm/v6"},
    {"linux/arm/V6", "linux/arm/v6"},
    {"linux/i386", "linux/386"},
    {"linux/i686", "linux/386"},
    {"linux/386", "linux/386"},
    {"linux/ppc64le", "linux/ppc64le"},
    {"linux/s390x", "linux/s390x"},
    {"linux/riscv64", "linux/riscv64"},
    {"Linux/amd64", "linux/amd64"},
    {"macos/arm64", "darwin/arm64"},
    {"windows/amd64", "windows/amd64"},
    {"linux/amd64/", "linux/amd64"},
    {"linux", NULL},
    {"", NULL},
    {"/amd64", NULL},
    {"linux/", NULL},
    {"linux//v7", NULL},
    {"linux/amd64/v1/x", NULL},
    {"linux/am d64", NULL},
    {"linux/amd64\n", NULL},
    {"linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL},
};

KT_TEST(parse_and_normalise_table)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        kiln_platform p;
        kiln_error *err = NULL;
        int rc = kiln_platform_parse(&p, parse_cases[i].in, NULL, &err);
        if (parse_cases[i].want == NULL) {
            if (rc != KILN_EINVAL || err == NULL)
                KT_FAIL("\"%s\": accepted", parse_cases[i].in);
            kiln_error_free(&err);
            continue;
        }
        char buf[KILN_PLATFORM_STRMAX];
        if (rc != 0) {
            KT_FAIL("\"%s\": %s", parse_cases[i].in, err ? err->msg : "?");
            kiln_error_free(&err);
            continue;
        }
        KT_EXPECT(kiln_platform_format(&p, buf, sizeof(buf)) < sizeof(buf));
        KT_EXPECT_STR(buf, parse_cases[i].want);
        /* Normalising twice changes nothing. */
        kiln_platform again = p;
        kiln_platform_normalize(&again);
        KT_EXPECT(memcmp(&again, &p, sizeof(p)) == 0);
    }
}

KT_TEST(default_arch_for_a_bare_os)
{
    kiln_platform p;
    char buf[KILN_PLATFORM_STRMAX];
    KT_REQUIRE(kiln_platform_parse(&p, "linux", "x86_64", NULL) == 0);
    kiln_platform_format(&p, buf, sizeof(buf));
    KT_EXPECT_STR(buf, "linux/amd64");
    KT_EXPECT_INT(kiln_platform_parse(&p, "linux", NULL, NULL), KILN_EINVAL);
}

KT_TEST(set_from_parts)
{
    kiln_platform p;
    KT_REQUIRE(kiln_platform_set(&p, "linux", "aarch64", "v8", NULL) == 0);
    KT_EXPECT_STR(p.arch, "arm64");
    KT_EXPECT_STR(p.variant, "");
    KT_REQUIRE(kiln_platform_set(&p, "linux", "arm", NULL, NULL) == 0);
    KT_EXPECT_STR(p.variant, "v7");
    KT_EXPECT_INT(kiln_platform_set(&p, "", "amd64", NULL, NULL), KILN_EINVAL);
    KT_EXPECT_INT(kiln_platform_set(&p, "linux", NULL, NULL, NULL), KILN_EINVAL);
    KT_EXPECT_INT(kiln_platform_set(&p, "linux", "amd64", "v/1", NULL), KILN_EINVAL);
}

KT_TEST(host_is_normalised)
{
    const kiln_platform *h = kiln_platform_host();
    kiln_platform n = *h;
    kiln_platform_normalize(&n);
    KT_EXPECT(memcmp(&n, h, sizeof(n)) == 0);
    char buf[KILN_PLATFORM_STRMAX];
    kiln_platform_format(h, buf, sizeof(buf));
    KT_EXPECT_STR(kiln_platform_host_string(), buf);
#if defined(__x86_64__)
    KT_EXPECT_STR(buf, "linux/amd64");
#endif
}

static const struct {
    const char *want;
    const char *os, *arch, *variant; /* an index entry as a registry spells it */
    bool match, exact;
} match_cases[] = {
    {"linux/amd64", "linux", "amd64", NULL, true, true},
    {"linux/amd64", "linux", "x86_64", "", true, true},
    {"linux/amd64", "linux", "amd64", "v3", true, false},
    {"linux/amd64/v3", "linux", "amd64", NULL, false, false},
    {"linux/amd64", "windows", "amd64", NULL, false, false},
    {"linux/arm64", "linux", "arm64", "v8", true, true},
    {"linux/arm64/v8", "linux", "arm64", NULL, true, true},
    {"linux/arm64", "linux", "aarch64", NULL, true, true},
    {"linux/arm64", "linux", "arm64", "v9", true, false},
    {"linux/arm64/v9", "linux", "arm64", "v8", false, false},
    {"linux/arm/v7", "linux", "arm", NULL, true, true},
    {"linux/arm/v7", "linux", "arm", "v6", false, false},
    {"linux/arm/v6", "linux", "armel", NULL, true, true},
    {"linux/386", "linux", "i386", NULL, true, true},
    {"linux/amd64", "linux", "386", NULL, false, false},
    {"linux/amd64", "linux", "", NULL, false, false},
    {"linux/amd64", "", "amd64", NULL, false, false},
};

KT_TEST(match_table)
{
    for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
        kiln_platform w;
        KT_REQUIRE(kiln_platform_parse(&w, match_cases[i].want, NULL, NULL) == 0);
        bool m =
            kiln_platform_match(&w, match_cases[i].os, match_cases[i].arch, match_cases[i].variant);
        bool e =
            kiln_platform_exact(&w, match_cases[i].os, match_cases[i].arch, match_cases[i].variant);
        if (m != match_cases[i].match || e != match_cases[i].exact)
            KT_FAIL("%s against %s/%s/%s: match %d exact %d", match_cases[i].want,
                    match_cases[i].os, match_cases[i].arch,
                    match_cases[i].variant ? match_cases[i].variant : "(none)", m, e);
    }
}
