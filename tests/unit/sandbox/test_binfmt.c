/* binfmt_misc detection (builder-svc/sandbox/binfmt.c): entry files as the
 * kernel prints them, written into a temp dir, scanned, and what RUN may use
 * (natively, emulated, or the message naming what is missing). */
#include "kt.h"
#include "bld_binfmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* As Debian 12's qemu-user-static + binfmt-support register them. */
#define AARCH64_MAGIC "magic 7f454c460201010000000000000000000200b700\n"
#define AARCH64_MASK  "mask ffffffffffffff00fffffffffffffffffeffffff\n"
#define ENTRY_AARCH64                                                                              \
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset "           \
    "0\n" AARCH64_MAGIC AARCH64_MASK
#define ENTRY_ARM                                                                                  \
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: PF\noffset 0\n"            \
    "magic 7f454c4601010100000000000000000002002800\n"                                             \
    "mask ffffffffffffff00fffffffffffffffffeffffff\n"
#define ENTRY_S390X                                                                                \
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: PF\noffset 0\n"          \
    "magic 7f454c4602020100000000000000000000020016\n"                                             \
    "mask fffffffffffffffcfffffffffffffffffffeffff\n"
#define ENTRY_PPC64LE                                                                              \
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/ppc64le-binfmt-P\nflags: PF\noffset 0\n"        \
    "magic 7f454c4602010100000000000000000002001500\n"                                             \
    "mask fffffffffffffffcfffffffffffffffffeffff00\n"
#define ENTRY_MIPS64EL                                                                             \
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/mips64el-binfmt-P\nflags: PF\noffset 0\n"       \
    "magic 7f454c4602010100000000000000000002000800\n"                                             \
    "mask ffffffffffffff00fefffffffffffffffeffffff\n"
/* Registered by hand without F: the interpreter is looked up at exec time. */
#define ENTRY_RISCV64_NO_F                                                                         \
    "enabled\ninterpreter /usr/bin/qemu-riscv64-static\nflags: \noffset 0\n"                       \
    "magic 7f454c460201010000000000000000000200f300\n"                                             \
    "mask ffffffffffffff00fffffffffffffffffeffffff\n"
#define ENTRY_JAR "enabled\ninterpreter /usr/bin/jexec\nflags: \noffset 0\nmagic 504b0304\n"

static char *dir;

static void put(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f == NULL) {
        KT_FAIL("cannot write %s", p);
        return;
    }
    fputs(text, f);
    fclose(f);
}

static void reset(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
    if (system(cmd) != 0)
        KT_FAIL("%s", cmd);
}

KT_SETUP(setup)
{
    char t[] = "/tmp/kiln-binfmt-XXXXXX";
    KT_REQUIRE(mkdtemp(t) != NULL);
    dir = strdup(t);
}

KT_TEARDOWN(teardown)
{
    if (dir) {
        reset();
        rmdir(dir);
        free(dir);
    }
}

KT_TEST(parse_debian_entries)
{
    bld_binfmt_entry e;
    KT_EXPECT(bld_binfmt_parse_entry(&e, "qemu-aarch64", ENTRY_AARCH64));
    KT_EXPECT_STR(e.arch, "arm64");
    KT_EXPECT_STR(e.machine, "aarch64");
    KT_EXPECT_STR(e.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
    KT_EXPECT(e.enabled && e.fix_binary);
    KT_EXPECT(bld_binfmt_parse_entry(&e, "qemu-arm", ENTRY_ARM));
    KT_EXPECT_STR(e.arch, "arm");
    /* Big-endian: e_machine 0x0016 read in the header's byte order. */
    KT_EXPECT(bld_binfmt_parse_entry(&e, "qemu-s390x", ENTRY_S390X));
    KT_EXPECT_STR(e.arch, "s390x");
    KT_EXPECT(bld_binfmt_parse_entry(&e, "qemu-ppc64le", ENTRY_PPC64LE));
    KT_EXPECT_STR(e.arch, "ppc64le");
    KT_EXPECT(bld_binfmt_parse_entry(&e, "qemu-mips64el", ENTRY_MIPS64EL));
    KT_EXPECT_STR(e.arch, "mips64le");
    KT_EXPECT_STR(e.machine, "mips64el");
    KT_EXPECT(bld_binfmt_parse_entry(&e, "riscv", ENTRY_RISCV64_NO_F));
    KT_EXPECT_STR(e.arch, "riscv64");
    KT_EXPECT(e.enabled && !e.fix_binary);
}

KT_TEST(parse_other_entries)
{
    bld_binfmt_entry e;
    /* Not ELF (a jar handler), an ELF magic of an unknown machine, a disabled
     * entry, a magic at another offset. */
    KT_EXPECT(!bld_binfmt_parse_entry(&e, "jar", ENTRY_JAR));
    KT_EXPECT(!bld_binfmt_parse_entry(&e, "qemu-xtensa",
                                      "enabled\ninterpreter /x\nflags: F\noffset 0\n"
                                      "magic 7f454c4601010100000000000000000002005e00\n"));
    KT_EXPECT(bld_binfmt_parse_entry(
        &e, "qemu-aarch64", "disabled\ninterpreter /x\nflags: OCF\noffset 0\n" AARCH64_MAGIC));
    KT_EXPECT(!e.enabled && e.fix_binary);
    KT_EXPECT(!bld_binfmt_parse_entry(
        &e, "x", "enabled\ninterpreter /x\nflags: F\noffset 4\n" AARCH64_MAGIC));
    KT_EXPECT(!bld_binfmt_parse_entry(&e, "qemu-foo", "enabled\ninterpreter /q\nmagic 7f454c46\n"));
    /* A magic that stops before e_machine: the interpreter's QEMU name says. */
    KT_EXPECT(bld_binfmt_parse_entry(&e, "arm64",
                                     "enabled\ninterpreter /usr/bin/qemu-aarch64-static\n"
                                     "flags: F\noffset 0\nmagic 7f454c460201\n"));
    KT_EXPECT_STR(e.arch, "arm64");
    KT_EXPECT(bld_binfmt_parse_entry(&e, "qemu-s390x",
                                     "enabled\ninterpreter /opt/emu\nflags: F\noffset 0\n"
                                     "magic 7f454c46\n"));
    KT_EXPECT_STR(e.arch, "s390x");
    KT_EXPECT(bld_binfmt_parse_entry(&e, "riscv",
                                     "enabled\ninterpreter /usr/libexec/qemu-binfmt/"
                                     "riscv64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c46\n"));
    KT_EXPECT_STR(e.arch, "riscv64");
    KT_EXPECT(!bld_binfmt_parse_entry(&e, "x", ""));
}

KT_TEST(scan_and_check)
{
    reset();
    put("status", "enabled\n");
    put("register", "");
    put("qemu-aarch64", ENTRY_AARCH64);
    put("qemu-arm", ENTRY_ARM);
    put("qemu-riscv64", ENTRY_RISCV64_NO_F);
    put("jar", ENTRY_JAR);
    bld_binfmt b;
    bld_binfmt_scan(&b, dir);
    KT_EXPECT(b.mounted && b.enabled);
    KT_EXPECT_INT(b.n, 3);
    char why[512] = "";
    const bld_binfmt_entry *e = NULL;
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/amd64", &e, why, sizeof(why)), 0);
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/amd64/v3", &e, why, sizeof(why)), 0);
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/arm64", &e, why, sizeof(why)), 1);
    KT_EXPECT(e != NULL && strcmp(e->name, "qemu-aarch64") == 0);
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/arm/v6", &e, why, sizeof(why)), 1);
    /* No handler at all: the package to install. */
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/s390x", &e, why, sizeof(why)), -1);
    KT_EXPECT_STR(why, "RUN for linux/s390x needs a binfmt_misc handler for s390x with the F "
                       "flag: install qemu-user-static and binfmt-support");
    /* A handler without F: named, with what to do. */
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/riscv64", &e, why, sizeof(why)), -1);
    KT_EXPECT(strstr(why, "needs a binfmt_misc handler for riscv64 with the F flag") != NULL);
    KT_EXPECT(strstr(why, "qemu-riscv64 has no F flag") != NULL);
    KT_EXPECT(strstr(why, "/usr/bin/qemu-riscv64-static") != NULL);
    /* Another OS never runs. */
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "windows/amd64", &e, why, sizeof(why)), -1);
    KT_EXPECT(strstr(why, "only linux binaries run") != NULL);

    char(*list)[32] = calloc(16, 32);
    bool emu[16];
    KT_REQUIRE(list != NULL);
    size_t n = bld_binfmt_platforms(&b, "linux/amd64", list, emu, 16);
    KT_EXPECT_INT(n, 4);
    KT_EXPECT_STR(list[0], "linux/amd64");
    KT_EXPECT(!emu[0]);
    KT_EXPECT_STR(list[1], "linux/arm64");
    KT_EXPECT(emu[1]);
    KT_EXPECT_STR(list[2], "linux/arm/v7");
    KT_EXPECT_STR(list[3], "linux/arm/v6");
    free(list);
    char text[256];
    bld_binfmt_platforms_text(&b, "linux/amd64", text, sizeof(text));
    KT_EXPECT_STR(text, "linux/amd64, linux/arm64 (emulated), linux/arm/v7 (emulated), "
                        "linux/arm/v6 (emulated)");
    char desc[512];
    bld_binfmt_describe(&b, "linux/amd64", desc, sizeof(desc));
    KT_EXPECT(strstr(desc, "2 binfmt_misc handler(s) with the F flag") != NULL);
    KT_EXPECT(strstr(desc, "not usable: qemu-riscv64 (no F flag)") != NULL);
    /* A handler for the host's own architecture is not listed again. */
    n = 0;
    char(*l2)[32] = calloc(16, 32);
    KT_REQUIRE(l2 != NULL);
    n = bld_binfmt_platforms(&b, "linux/arm64", l2, emu, 16);
    KT_EXPECT_INT(n, 3);
    KT_EXPECT_STR(l2[0], "linux/arm64");
    KT_EXPECT_STR(l2[1], "linux/arm/v7");
    free(l2);
}

KT_TEST(disabled_entry_and_status)
{
    reset();
    put("status", "enabled\n");
    put("qemu-aarch64", "disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
                        "flags: PF\noffset 0\n" AARCH64_MAGIC AARCH64_MASK);
    bld_binfmt b;
    bld_binfmt_scan(&b, dir);
    char why[512];
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/arm64", NULL, why, sizeof(why)), -1);
    KT_EXPECT(strstr(why, "qemu-aarch64 is disabled (update-binfmts --enable qemu-aarch64)") !=
              NULL);
    bool emu[4];
    char list[4][32];
    KT_EXPECT_INT(bld_binfmt_platforms(&b, "linux/amd64", list, emu, 4), 1);
    /* binfmt_misc itself switched off: nothing foreign runs. */
    put("status", "disabled\n");
    put("qemu-aarch64", ENTRY_AARCH64);
    bld_binfmt_scan(&b, dir);
    KT_EXPECT(b.mounted && !b.enabled);
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/arm64", NULL, why, sizeof(why)), -1);
    KT_EXPECT(strstr(why, "binfmt_misc is disabled") != NULL);
    KT_EXPECT_INT(bld_binfmt_platforms(&b, "linux/amd64", list, emu, 4), 1);
}

KT_TEST(not_mounted)
{
    reset();
    /* No status file: binfmt_misc is not mounted there. */
    bld_binfmt b;
    bld_binfmt_scan(&b, dir);
    KT_EXPECT(!b.mounted);
    char why[512];
    KT_EXPECT_INT(bld_binfmt_check(&b, "linux/amd64", "linux/arm64", NULL, why, sizeof(why)), -1);
    KT_EXPECT(strstr(why, "binfmt_misc is not mounted at") != NULL);
    KT_EXPECT(strstr(why, "mount -t binfmt_misc binfmt_misc") != NULL);
    char desc[512];
    bld_binfmt_describe(&b, "linux/amd64", desc, sizeof(desc));
    KT_EXPECT(strstr(desc, "not mounted") != NULL);
    bld_binfmt_scan(&b, "/nonexistent/binfmt");
    KT_EXPECT(!b.mounted && b.n == 0);
    /* $KILN_BINFMT_MISC names the directory when none is given. */
    reset();
    put("status", "enabled\n");
    put("qemu-aarch64", ENTRY_AARCH64);
    setenv("KILN_BINFMT_MISC", dir, 1);
    bld_binfmt_scan(&b, NULL);
    unsetenv("KILN_BINFMT_MISC");
    KT_EXPECT(b.mounted && b.n == 1);
    KT_EXPECT_STR(b.dir, dir);
}

KT_TEST(machine_names)
{
    KT_EXPECT_STR(bld_binfmt_machine("arm64"), "aarch64");
    KT_EXPECT_STR(bld_binfmt_machine("amd64"), "x86_64");
    KT_EXPECT_STR(bld_binfmt_machine("386"), "i386");
    KT_EXPECT_STR(bld_binfmt_machine("mips64le"), "mips64el");
    KT_EXPECT_STR(bld_binfmt_machine("loong64"), "loongarch64");
    KT_EXPECT_STR(bld_binfmt_machine("weird"), "weird");
}
