/* .dockerignore rules and filepath.Match globs. */
#include "ignore.h"
#include "kt.h"

#include <string.h>

typedef struct icase {
    const char *patterns;
    const char *path;
    bool excluded;
} icase;

static const icase icases[] = {
    {"node_modules", "node_modules", true},
    {"node_modules", "node_modules/x/y.js", true},
    {"node_modules", "src/node_modules", false},
    {"*.md", "README.md", true},
    {"*.md", "docs/a.md", false},
    {"*/*.md", "docs/a.md", true},
    {"**/*.md", "docs/deep/a.md", true},
    {"**/*.md", "a.md", true},
    {"**/build", "x/y/build/out.o", true},
    {"docs/**", "docs/a/b", true},
    {"docs/**", "docsx", false},
    {"a/**/b", "a/b", true},
    {"a/**/b", "a/x/y/b", true},
    {"a/**/b", "a/x/y/c", false},
    {"/abs", "abs", true},
    {"./rel/x", "rel/x", true},
    {"a/../b", "b", true},
    {"te?t", "test", true},
    {"te?t", "te/t", false},
    {"[a-c]x", "bx", true},
    {"[a-c]x", "dx", false},
    {"[^a-c]x", "dx", true},
    {"*\n!keep.txt", "keep.txt", false},
    {"*\n!keep.txt", "other.txt", true},
    {"*.log\n!important.log\nimportant.log", "important.log", true},
    {"dir\n!dir/keep", "dir/keep", false},
    {"dir\n!dir/keep", "dir/other", true},
    {"# comment\nfoo", "# comment", false},
    {"# comment\nfoo", "foo", true},
    {"  spaced  ", "spaced", true},
    {"\\*literal", "*literal", true},
    {"\\*literal", "xliteral", false},
    {"", "anything", false},
    {"!", "x", false},
    {"a*", "a/b", true},
    {"*", "x/y", true},
    {"Dockerfile\n.dockerignore", ".dockerignore", true},
    {".git", ".git/objects/ab", true},
    {"**", "x/y/z", true},
    {"x/**/*.o", "x/a.o", true},
};

KT_TEST(dockerignore_table)
{
    for (size_t i = 0; i < sizeof(icases) / sizeof(icases[0]); i++) {
        const icase *c = &icases[i];
        kiln_ignore *ig = NULL;
        kiln_error *err = NULL;
        if (kiln_ignore_parse(&ig, c->patterns, strlen(c->patterns), &err) < 0) {
            KT_FAIL("[%s] parse error %s", c->patterns, err->msg);
            kiln_error_free(&err);
            continue;
        }
        if (kiln_ignore_match(ig, c->path) != c->excluded)
            KT_FAIL("[%s] on %s: expected %s", c->patterns, c->path,
                    c->excluded ? "excluded" : "kept");
        kiln_ignore_free(ig);
    }
}

KT_TEST(dockerignore_patterns_cleaned)
{
    kiln_ignore *ig = NULL;
    kiln_error *err = NULL;
    const char *t = "\xEF\xBB\xBF/a/b/\n! ./c\n#x\n\n";
    KT_REQUIRE(kiln_ignore_parse(&ig, t, strlen(t), &err) == 0);
    KT_EXPECT_INT(kiln_ignore_count(ig), 2);
    KT_EXPECT_STR(kiln_ignore_pattern(ig, 0), "a/b");
    KT_EXPECT_STR(kiln_ignore_pattern(ig, 1), "!c");
    kiln_ignore_free(ig);
}

KT_TEST(dockerignore_bad_pattern)
{
    kiln_ignore *ig = NULL;
    kiln_error *err = NULL;
    KT_EXPECT_INT(kiln_ignore_parse(&ig, "ok\n[abc\n", 8, &err), KILN_EINVAL);
    KT_REQUIRE(err != NULL);
    KT_EXPECT(strstr(err->msg, ".dockerignore:2:") != NULL);
    kiln_error_free(&err);
}

typedef struct gcase {
    const char *pattern, *name;
    int want; /* 1 match, 0 no match, -1 bad pattern */
} gcase;

static const gcase gcases[] = {
    {"*.go", "main.go", 1},  {"*.go", "a/main.go", 0},
    {"a/*.go", "a/b.go", 1}, {"?", "a", 1},
    {"?", "/", 0},           {"[abc]", "b", 1},
    {"[^abc]", "b", 0},      {"[a-z]*", "hello", 1},
    {"[a-z]", "/", 0},       {"\\*", "*", 1},
    {"\\*", "x", 0},         {"abc", "abc", 1},
    {"abc", "abcd", 0},      {"*", "", 1},
    {"**", "ab", 1},         {"[", "x", -1},
    {"a\\", "a", -1},        {"[z-a]", "b", -1},
    {"*b*c*", "xbyc", 1},    {"a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
};

KT_TEST(glob_table)
{
    for (size_t i = 0; i < sizeof(gcases) / sizeof(gcases[0]); i++) {
        bool m = false;
        kiln_error *err = NULL;
        int rc = kiln_glob_match(&m, gcases[i].pattern, gcases[i].name, &err);
        int got = rc < 0 ? -1 : m;
        if (got != gcases[i].want)
            KT_FAIL("[%s ~ %s] got %d, want %d", gcases[i].pattern, gcases[i].name, got,
                    gcases[i].want);
        kiln_error_free(&err);
    }
    KT_EXPECT(kiln_glob_has_meta("a*"));
    KT_EXPECT(!kiln_glob_has_meta("a/b.c"));
}
