/* kiln_clean_layer_path: layer entry names taken as Docker and containerd
 * take them. */
#include "kt.h"
#include "cleanup.h"
#include "path.h"

#include <string.h>

KT_TEST(clean_layer_path_table)
{
    static const struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"/", 0, ""},
        {".", 0, ""},
        {"./", 0, ""},
        {"", 0, ""},
        {"/etc/passwd", 0, "etc/passwd"},
        {"./etc/passwd", 0, "etc/passwd"},
        {"//etc//./passwd/", 0, "etc/passwd"},
        {"/../../etc", 0, "etc"},
        {"/etc/../../../x", 0, "x"},
        {"a/../b", 0, "b"},
        {"a/b/../../c", 0, "c"},
        {"a/..", 0, ""},
        {"../x", KILN_EINVAL, NULL},
        {"a/../../x", KILN_EINVAL, NULL},
        {"./../x", KILN_EINVAL, NULL},
        {"..", KILN_EINVAL, NULL},
        {"a/..b", 0, "a/..b"},
        {"...", 0, "..."},
        {"/.wh..wh..opq", 0, ".wh..wh..opq"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char out[64];
        int rc = kiln_clean_layer_path(out, sizeof(out), cases[i].in, NULL);
        if (rc != cases[i].rc)
            KT_FAIL("%s: rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == 0 && strcmp(out, cases[i].out) != 0)
            KT_FAIL("%s: \"%s\", want \"%s\"", cases[i].in, out, cases[i].out);
    }
    char small[4];
    KT_EXPECT_INT(kiln_clean_layer_path(small, sizeof(small), "/abcd", NULL), KILN_EINVAL);
}
