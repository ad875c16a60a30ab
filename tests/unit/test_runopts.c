/* --add-host and --ulimit values as the CLI and the builder both parse them
 * (common/runopts.h), table-driven, with bad input. */
#include "kt.h"
#include "runopts.h"

#include <string.h>
#include <sys/resource.h>

KT_TEST(add_host_entries)
{
    static const struct {
        const char *in;
        const char *name, *addr; /* NULL: refused */
    } cases[] = {
        {"myhost:10.1.2.3", "myhost", "10.1.2.3"},
        {"myhost=10.1.2.3", "myhost", "10.1.2.3"},
        {"a.b-c.d_e:192.168.0.1", "a.b-c.d_e", "192.168.0.1"},
        {"v6:fd00:0::1", "v6", "fd00::1"},
        {"v6=[fd00::1]", "v6", "fd00::1"},
        {"v6:::1", "v6", "::1"},
        {"v4mapped:::ffff:10.0.0.1", "v4mapped", "::ffff:10.0.0.1"},
        {"noaddress", NULL, NULL},
        {":10.0.0.1", NULL, NULL},
        {"-x:10.0.0.1", NULL, NULL},
        {"x-:10.0.0.1", NULL, NULL},
        {"a..b:10.0.0.1", NULL, NULL},
        {".a:10.0.0.1", NULL, NULL},
        {"a.:10.0.0.1", NULL, NULL},
        {"sp ace:10.0.0.1", NULL, NULL},
        {"x:999.1.1.1", NULL, NULL},
        {"x:10.0.0", NULL, NULL},
        {"x:", NULL, NULL},
        {"x:fd00::zz", NULL, NULL},
        {"x:[10.0.0.1", NULL, NULL},
        {"x:host-gateway", NULL, NULL},
        {"x:10.0.0.1\n", NULL, NULL},
        {"a234567890123456789012345678901234567890123456789012345678901234:10.0.0.1", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_host_entry h;
        kiln_error *err = NULL;
        int r = kiln_host_entry_parse(&h, cases[i].in, &err);
        if ((r == 0) != (cases[i].name != NULL))
            fprintf(stderr, "  '%s': %d (%s)\n", cases[i].in, r, err ? err->msg : "");
        KT_EXPECT((r == 0) == (cases[i].name != NULL));
        if (r == 0 && cases[i].name) {
            KT_EXPECT_STR(h.name, cases[i].name);
            KT_EXPECT_STR(h.addr, cases[i].addr);
        } else if (r < 0) {
            KT_EXPECT(err != NULL && strstr(err->msg, "add-host") != NULL);
        }
        kiln_error_free(&err);
    }
}

KT_TEST(ulimits)
{
    const uint64_t inf = KILN_ULIMIT_INFINITY;
    static const struct {
        const char *in;
        int ok, resource;
        uint64_t soft, hard;
    } cases[] = {
        {"nofile=1024", 1, RLIMIT_NOFILE, 1024, 1024},
        {"nofile=512:1024", 1, RLIMIT_NOFILE, 512, 1024},
        {"nproc=300", 1, RLIMIT_NPROC, 300, 300},
        {"core=-1", 1, RLIMIT_CORE, UINT64_MAX, UINT64_MAX},
        {"core=0:unlimited", 1, RLIMIT_CORE, 0, UINT64_MAX},
        {"stack=8388608", 1, RLIMIT_STACK, 8388608, 8388608},
        {"memlock=65536", 1, RLIMIT_MEMLOCK, 65536, 65536},
        {"fsize=1", 1, RLIMIT_FSIZE, 1, 1},
        {"cpu=10:20", 1, RLIMIT_CPU, 10, 20},
        {"sigpending=5", 1, RLIMIT_SIGPENDING, 5, 5},
        {"nofile", 0, 0, 0, 0},
        {"nofiles=1", 0, 0, 0, 0},
        {"=1", 0, 0, 0, 0},
        {"nofile=", 0, 0, 0, 0},
        {"nofile=x", 0, 0, 0, 0},
        {"nofile=20:10", 0, 0, 0, 0},
        {"nofile=-1:10", 0, 0, 0, 0},
        {"nofile=10:", 0, 0, 0, 0},
        {"nofile=-2", 0, 0, 0, 0},
        {"nofile=1e3", 0, 0, 0, 0},
        {"nofile=99999999999999999999", 0, 0, 0, 0},
        {"NOFILE=1", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_ulimit u;
        kiln_error *err = NULL;
        int r = kiln_ulimit_parse(&u, cases[i].in, &err);
        if ((r == 0) != cases[i].ok)
            fprintf(stderr, "  '%s': %d (%s)\n", cases[i].in, r, err ? err->msg : "");
        KT_EXPECT((r == 0) == cases[i].ok);
        if (r == 0 && cases[i].ok) {
            KT_EXPECT(u.resource == cases[i].resource);
            KT_EXPECT(u.soft == cases[i].soft && u.hard == cases[i].hard);
        }
        kiln_error_free(&err);
    }
    char b[24];
    kiln_ulimit_format(b, sizeof(b), inf);
    KT_EXPECT_STR(b, "unlimited");
    kiln_ulimit_format(b, sizeof(b), 4096);
    KT_EXPECT_STR(b, "4096");
}
