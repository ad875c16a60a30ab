/* binfmt_misc entries -> the foreign architectures RUN can use (bld_binfmt.h). */
#include "bld_binfmt.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"

/* ELF (class, byte order, e_machine) -> Go and QEMU names.  The order is the
 * order platforms are listed in. */
static const struct {
    unsigned machine;
    int elf_class, elf_data; /* 1: 32-bit / little-endian, 2: 64-bit / big-endian */
    const char *arch, *qemu;
} arches[] = {
    {0x3e, 2, 1, "amd64", "x86_64"},
    {0xb7, 2, 1, "arm64", "aarch64"},
    {0x28, 1, 1, "arm", "arm"},
    {0x03, 1, 1, "386", "i386"},
    {0x15, 2, 1, "ppc64le", "ppc64le"},
    {0x16, 2, 2, "s390x", "s390x"},
    {0xf3, 2, 1, "riscv64", "riscv64"},
    {0x08, 2, 1, "mips64le", "mips64el"},
    {0x08, 2, 2, "mips64", "mips64"},
    {0x08, 1, 1, "mipsle", "mipsel"},
    {0x08, 1, 2, "mips", "mips"},
    {0x15, 2, 2, "ppc64", "ppc64"},
    {0x102, 2, 1, "loong64", "loongarch64"},
};

const char *bld_binfmt_machine(const char *arch)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(arches); i++)
        if (strcmp(arches[i].arch, arch) == 0)
            return arches[i].qemu;
    return arch;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Hex text into bytes; returns how many (at most cap). */
static size_t unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (n < cap && hexval(s[0]) >= 0 && hexval(s[1]) >= 0) {
        out[n++] = (unsigned char)(hexval(s[0]) << 4 | hexval(s[1]));
        s += 2;
    }
    return n;
}

static bool set_arch(bld_binfmt_entry *out, size_t i)
{
    snprintf(out->arch, sizeof(out->arch), "%s", arches[i].arch);
    snprintf(out->machine, sizeof(out->machine), "%s", arches[i].qemu);
    return true;
}

bool bld_binfmt_parse_entry(bld_binfmt_entry *out, const char *name, const char *text)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", name);
    unsigned char magic[64];
    size_t n_magic = 0;
    long offset = 0;
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof(buf), "%.*s", (int)(len < sizeof(buf) ? len : sizeof(buf) - 1), line);
        line = end ? end + 1 : NULL;
        if (strcmp(buf, "enabled") == 0)
            out->enabled = true;
        else if (strncmp(buf, "interpreter ", 12) == 0)
            snprintf(out->interpreter, sizeof(out->interpreter), "%.255s", buf + 12);
        else if (strncmp(buf, "flags:", 6) == 0)
            out->fix_binary = strchr(buf + 6, 'F') != NULL;
        else if (strncmp(buf, "offset ", 7) == 0)
            offset = strtol(buf + 7, NULL, 10);
        else if (strncmp(buf, "magic ", 6) == 0)
            n_magic = unhex(buf + 6, magic, sizeof(magic));
    }
    /* An ELF header from its start: class at 4, byte order at 5, e_machine
     * at 18 in that byte order. */
    static const unsigned char elf[4] = {0x7f, 'E', 'L', 'F'};
    if (offset != 0 || n_magic < 4 || memcmp(magic, elf, sizeof(elf)) != 0)
        return false;
    if (n_magic >= 20) {
        int cls = magic[4], data = magic[5];
        unsigned machine =
            data == 2 ? (unsigned)magic[18] << 8 | magic[19] : (unsigned)magic[19] << 8 | magic[18];
        for (size_t i = 0; i < KILN_ARRAY_SIZE(arches); i++)
            if (arches[i].machine == machine && arches[i].elf_class == cls &&
                arches[i].elf_data == data)
                return set_arch(out, i);
        return false;
    }
    /* A magic too short to name the machine: the interpreter's or the
     * entry's QEMU name ("qemu-aarch64-static", "aarch64-binfmt-P",
     * "qemu-aarch64"). */
    const char *base = strrchr(out->interpreter, '/');
    const char *names[] = {base ? base + 1 : out->interpreter, out->name};
    for (size_t k = 0; k < KILN_ARRAY_SIZE(names); k++) {
        char m[64];
        snprintf(m, sizeof(m), "%s", strncmp(names[k], "qemu-", 5) == 0 ? names[k] + 5 : names[k]);
        char *cut = strstr(m, "-static");
        if (cut == NULL)
            cut = strstr(m, "-binfmt");
        if (cut)
            *cut = '\0';
        for (size_t i = 0; i < KILN_ARRAY_SIZE(arches); i++)
            if (strcmp(arches[i].qemu, m) == 0)
                return set_arch(out, i);
    }
    return false;
}

/* A small file's text (binfmt_misc entries are a few hundred bytes). */
static bool read_small(int dirfd, const char *name, char *buf, size_t cap)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, buf + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    return true;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const bld_binfmt_entry *)a)->name, ((const bld_binfmt_entry *)b)->name);
}

void bld_binfmt_scan(bld_binfmt *out, const char *dir)
{
    memset(out, 0, sizeof(*out));
    const char *env = getenv("KILN_BINFMT_MISC");
    snprintf(out->dir, sizeof(out->dir), "%s", dir ? dir : env && *env ? env : BLD_BINFMT_DIR);
    _cleanup_closedir_ DIR *d = opendir(out->dir);
    if (d == NULL)
        return;
    char text[4096];
    if (!read_small(dirfd(d), "status", text, sizeof(text)))
        return;
    out->mounted = true;
    out->enabled = strncmp(text, "enabled", 7) == 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && out->n < BLD_BINFMT_MAX) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "status") == 0 ||
            strcmp(de->d_name, "register") == 0)
            continue;
        if (read_small(dirfd(d), de->d_name, text, sizeof(text)) &&
            bld_binfmt_parse_entry(&out->e[out->n], de->d_name, text))
            out->n++;
    }
    /* readdir order is the filesystem's: sorted, the choice among equals is
     * the same on every scan. */
    qsort(out->e, out->n, sizeof(out->e[0]), name_cmp);
}

static bool usable(const bld_binfmt *b, const bld_binfmt_entry *e)
{
    return b->mounted && b->enabled && e->enabled && e->fix_binary;
}

const bld_binfmt_entry *bld_binfmt_find(const bld_binfmt *b, const char *arch)
{
    const bld_binfmt_entry *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < b->n; i++) {
        const bld_binfmt_entry *e = &b->e[i];
        if (strcmp(e->arch, arch) != 0)
            continue;
        /* qemu-mipsn32 also has a 32-bit MIPS magic: qemu-mips is the one. */
        char own[80];
        snprintf(own, sizeof(own), "qemu-%s", e->machine);
        int score = (e->enabled ? 4 : 0) + (e->fix_binary ? 2 : 0) + (strcmp(e->name, own) == 0);
        if (score > best_score) {
            best = e;
            best_score = score;
        }
    }
    return best;
}

/* os and arch of "os/arch[/variant]" into their own buffers. */
static void split(const char *p, char os[32], char arch[32])
{
    const char *s1 = strchr(p, '/');
    snprintf(os, 32, "%.*s", (int)(s1 ? (size_t)(s1 - p) : strlen(p)), p);
    const char *a = s1 ? s1 + 1 : "";
    const char *s2 = strchr(a, '/');
    snprintf(arch, 32, "%.*s", (int)(s2 ? (size_t)(s2 - a) : strlen(a)), a);
}

int bld_binfmt_check(const bld_binfmt *b, const char *host, const char *platform,
                     const bld_binfmt_entry **entry, char *why, size_t cap)
{
    char hos[32], harch[32], os[32], arch[32];
    split(host, hos, harch);
    split(platform, os, arch);
    if (entry)
        *entry = NULL;
    if (strcmp(os, hos) == 0 && strcmp(arch, harch) == 0)
        return 0;
    if (strcmp(os, hos) != 0) {
        snprintf(why, cap,
                 "RUN for %s cannot run on a %s builder: only %s binaries run, natively or "
                 "under binfmt_misc emulation",
                 platform, host, hos);
        return -1;
    }
    const char *m = bld_binfmt_machine(arch);
    char need[160];
    snprintf(need, sizeof(need), "RUN for %s needs a binfmt_misc handler for %s with the F flag",
             platform, m);
    const bld_binfmt_entry *e = bld_binfmt_find(b, arch);
    if (!b->mounted)
        snprintf(why, cap,
                 "%s, and binfmt_misc is not mounted at %s: mount it (mount -t binfmt_misc "
                 "binfmt_misc %s), then install qemu-user-static and binfmt-support",
                 need, b->dir, b->dir);
    else if (!b->enabled)
        snprintf(why, cap, "%s: binfmt_misc is disabled (echo 1 > %s/status)", need, b->dir);
    else if (e == NULL)
        snprintf(why, cap, "%s: install qemu-user-static and binfmt-support", need);
    else if (!e->enabled)
        snprintf(why, cap, "%s: the entry %s/%s is disabled (update-binfmts --enable %s)", need,
                 b->dir, e->name, e->name);
    else if (!e->fix_binary)
        snprintf(why, cap,
                 "%s: the entry %s/%s has no F flag, so its interpreter %s would be looked up "
                 "inside the image; register it with F (Debian's qemu-user-static does)",
                 need, b->dir, e->name, e->interpreter[0] ? e->interpreter : "(none)");
    else {
        if (entry)
            *entry = e;
        return 1;
    }
    return -1;
}

size_t bld_binfmt_platforms(const bld_binfmt *b, const char *host, char (*out)[32], bool *emulated,
                            size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    char hos[32], harch[32];
    split(host, hos, harch);
    snprintf(out[n], 32, "%s", host);
    emulated[n++] = false;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(arches) && n < cap; i++) {
        const bld_binfmt_entry *e = bld_binfmt_find(b, arches[i].arch);
        if (strcmp(arches[i].arch, harch) == 0 || e == NULL || !usable(b, e))
            continue;
        if (strcmp(arches[i].arch, "arm") == 0) { /* one handler, both variants */
            snprintf(out[n], 32, "%.20s/arm/v7", hos);
            emulated[n++] = true;
            if (n < cap) {
                snprintf(out[n], 32, "%.20s/arm/v6", hos);
                emulated[n++] = true;
            }
            continue;
        }
        snprintf(out[n], 32, "%.20s/%s", hos, arches[i].arch);
        emulated[n++] = true;
    }
    return n;
}

size_t bld_binfmt_platforms_text(const bld_binfmt *b, const char *host, char *buf, size_t cap)
{
    char list[24][32];
    bool emu[24];
    size_t n = bld_binfmt_platforms(b, host, list, emu, 24), len = 0;
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(buf + (len < cap ? len : cap), len < cap ? cap - len : 0, "%s%s%s",
                         i ? ", " : "", list[i], emu[i] ? " (emulated)" : "");
        len += w > 0 ? (size_t)w : 0;
    }
    return len;
}

void bld_binfmt_describe(const bld_binfmt *b, const char *host, char *buf, size_t cap)
{
    if (!b->mounted) {
        snprintf(buf, cap,
                 "binfmt_misc is not mounted at %s: RUN only for %s (mount it, then install "
                 "qemu-user-static and binfmt-support for emulated platforms)",
                 b->dir, host);
        return;
    }
    if (!b->enabled) {
        snprintf(buf, cap, "binfmt_misc is disabled (%s/status): RUN only for %s", b->dir, host);
        return;
    }
    size_t len = 0, n_ok = 0;
    char bad[512] = "";
    size_t bl = 0;
    for (size_t i = 0; i < b->n; i++) {
        const bld_binfmt_entry *e = &b->e[i];
        if (usable(b, e)) {
            n_ok++;
            continue;
        }
        int w = snprintf(bad + bl, sizeof(bad) - bl, "%s%s (%s)", bl ? ", " : "", e->name,
                         !e->enabled ? "disabled" : "no F flag");
        if (w > 0 && (size_t)w < sizeof(bad) - bl)
            bl += (size_t)w;
    }
    if (n_ok == 0)
        len = (size_t)snprintf(buf, cap,
                               "no binfmt_misc handler with the F flag: RUN only for %s (install "
                               "qemu-user-static and binfmt-support for emulated platforms)",
                               host);
    else
        len = (size_t)snprintf(buf, cap, "%zu binfmt_misc handler(s) with the F flag in %s", n_ok,
                               b->dir);
    if (bl && len < cap)
        snprintf(buf + len, cap - len, "; not usable: %s", bad);
}
