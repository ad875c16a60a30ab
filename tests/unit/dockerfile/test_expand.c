/* Variable expansion forms, quoting and escapes (bld_expand_word). */
#include "expand.h"
#include "kt.h"

#include <stdlib.h>
#include <string.h>

typedef struct xcase {
    const char *word;
    char escape;
    const char *want; /* NULL: error expected */
    const char *err;
} xcase;

static const char *const env[] = {"A=1",          "E=",
                                  "S=a b",        "A_B=2",
                                  "P=/usr/local", "Q=it's",
                                  "X=xxyy",       "F=/tmp/tmp/a.txt",
                                  "N=\\*/",       "U8=h\xc3\xa9h\xc3\xa9"};

static const xcase xcases[] = {
    {"$A", 0, "1", NULL},
    {"${A}", 0, "1", NULL},
    {"${A}b", 0, "1b", NULL},
    {"$Ab", 0, "", NULL},
    {"$A-x", 0, "1-x", NULL},
    {"${A_B}", 0, "2", NULL},
    {"$A_B", 0, "2", NULL},
    {"${A}${A}", 0, "11", NULL},
    {"$P/bin", 0, "/usr/local/bin", NULL},
    {"${U:-w}", 0, "w", NULL},
    {"${E:-w}", 0, "w", NULL},
    {"${A:-w}", 0, "1", NULL},
    {"${U-w}", 0, "w", NULL},
    {"${E-w}", 0, "", NULL},
    {"${A-w}", 0, "1", NULL},
    {"${A:+w}", 0, "w", NULL},
    {"${E:+w}", 0, "", NULL},
    {"${U:+w}", 0, "", NULL},
    {"${E+w}", 0, "w", NULL},
    {"${U+w}", 0, "", NULL},
    {"${A:?need}", 0, "1", NULL},
    {"${U:?need}", 0, NULL, "U: need"},
    {"${E:?need $A}", 0, NULL, "E: need 1"},
    {"${U:?}", 0, NULL, "U: is not allowed to be unset"},
    {"${E:?}", 0, NULL, "E: is not allowed to be empty"},
    {"${E?need}", 0, "", NULL},
    {"${U?need}", 0, NULL, "U: need"},
    {"${U?}", 0, NULL, "U: is not allowed to be unset"},
    {"${U:-${A}}", 0, "1", NULL},
    {"${U:-${U2:-deep}}", 0, "deep", NULL},
    {"${U:-$A$A}", 0, "11", NULL},
    {"${U:-a b}", 0, "a b", NULL},
    {"${U:-'q}'}", 0, "q}", NULL},
    {"${U:-\"$A\"}", 0, "1", NULL},
    {"'$A'", 0, "$A", NULL},
    {"\"$A\"", 0, "1", NULL},
    {"\"$S\"", 0, "a b", NULL},
    {"'a\\b'", 0, "a\\b", NULL},
    {"\"a\\b\"", 0, "a\\b", NULL},
    {"\"a\\\"b\"", 0, "a\"b", NULL},
    {"\"\\$A\"", 0, "$A", NULL},
    {"\\$A", 0, "$A", NULL},
    {"\\${A}", 0, "${A}", NULL},
    {"a\\ b", 0, "a b", NULL},
    {"\\\\", 0, "\\", NULL},
    {"a\\", 0, "a", NULL},
    {"$", 0, "$", NULL},
    {"a$", 0, "a$", NULL},
    {"$1", 0, "", NULL},
    {"$$", 0, "", NULL},
    {"$Q", 0, "it's", NULL},
    {"x'y'z", 0, "xyz", NULL},
    {"\"'\"", 0, "'", NULL},
    {"'\"'", 0, "\"", NULL},
    {"`$A", '`', "$A", NULL},
    {"\\$A", '`', "\\1", NULL},
    {"\"a`\"b\"", '`', "a\"b", NULL},
    {"${", 0, NULL, "missing '}'"},
    {"${A", 0, NULL, "missing '}'"},
    {"${A:-x", 0, NULL, "missing '}'"},
    {"${}", 0, NULL, "bad substitution"},
    {"${:-x}", 0, NULL, "bad substitution"},
    {"${{A}}", 0, NULL, "bad substitution"},
    {"${A:x}", 0, NULL, "unsupported modifier"},
    {"${A:#x}", 0, NULL, "unsupported modifier (:#)"},
    {"${A:%x}", 0, NULL, "unsupported modifier (:%)"},
    {"${A=x}", 0, NULL, "unsupported modifier (=)"},
    /* pattern substitutions (BuildKit's lex_test.go and the Dockerfile reference) */
    {"${X#*x*y}", 0, "y", NULL},
    {"${X#*}", 0, "xxyy", NULL},
    {"${X##*x}", 0, "yy", NULL},
    {"${X#x}", 0, "xyy", NULL},
    {"${X#}", 0, "xxyy", NULL},
    {"${X##}", 0, "xxyy", NULL},
    {"${X%y}", 0, "xxy", NULL},
    {"${X%%y*}", 0, "xx", NULL},
    {"${X%x}", 0, "xxyy", NULL},
    {"${X%?y}", 0, "xx", NULL},
    {"${X%%?y}", 0, "xx", NULL},
    {"${X#$A}", 0, "xxyy", NULL},
    {"${X#[x]}", 0, "xxyy", NULL},
    {"${U#x}", 0, "", NULL},
    {"${U8#h?}", 0, "h\xc3\xa9", NULL},
    {"${U8%?}", 0, "h\xc3\xa9h", NULL},
    {"${F/\\/tmp/}", 0, "/tmp/a.txt", NULL},
    {"${F//\\/tmp/}", 0, "/a.txt", NULL},
    {"${F//\\//\\/}", 0, "\\/tmp\\/tmp\\/a.txt", NULL},
    {"${F/t*p/X}", 0, "/X/a.txt", NULL},
    {"${F//t?p/X}", 0, "/X/X/a.txt", NULL},
    {"${F/$N/.}", 0, "/tmp/tmp/a.txt", NULL},
    {"${X/x/$A}", 0, "1xyy", NULL},
    {"${X//x/$$}", 0, "yy", NULL},         /* $$ is a (never set) special parameter */
    {"${X//x/\\$0}", 0, "\\x\\xyy", NULL}, /* Go's ReplaceAllString expands $0 */
    {"${X///}", 0, "xxyy", NULL},
    {"${X//y}", 0, NULL, "missing '/'"},
    {"${X#\\x}", 0, NULL, "invalid pattern"},
    {"${X#\\}", 0, NULL, "missing '}'"},
    {"${A x}", 0, NULL, "unsupported modifier ( )"},
    {"'abc", 0, NULL, "matching single-quote"},
    {"\"abc", 0, NULL, "matching double-quote"},
    {"\"${A\"", 0, NULL, "unsupported modifier"},
};

KT_TEST(expansion_table)
{
    for (size_t i = 0; i < sizeof(xcases) / sizeof(xcases[0]); i++) {
        const xcase *x = &xcases[i];
        char *out = NULL;
        kiln_error *err = NULL;
        int rc = bld_expand_word(&out, x->word, env, sizeof(env) / sizeof(env[0]), x->escape, &err);
        if (x->want) {
            if (rc < 0)
                KT_FAIL("[%s] unexpected error: %s", x->word, err->msg);
            else if (strcmp(out, x->want) != 0)
                KT_FAIL("[%s] expanded to \"%s\", expected \"%s\"", x->word, out, x->want);
        } else if (rc == 0) {
            KT_FAIL("[%s] expected an error, got \"%s\"", x->word, out);
        } else {
            KT_EXPECT_INT(rc, KILN_EINVAL);
            if (strstr(err->msg, x->err) == NULL)
                KT_FAIL("[%s] error \"%s\" lacks \"%s\"", x->word, err->msg, x->err);
        }
        free(out);
        kiln_error_free(&err);
    }
}

KT_TEST(expansion_later_env_entry_wins)
{
    const char *e[] = {"X=1", "X=2"};
    char *out = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(bld_expand_word(&out, "$X", e, 2, 0, &err) == 0);
    KT_EXPECT_STR(out, "2");
    free(out);
}
