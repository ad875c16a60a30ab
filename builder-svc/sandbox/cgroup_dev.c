/* The device allow-list of a RUN step's cgroup: the second wall behind the
 * nodev mounts (rootfs.c, mounts.c).  It is the list of runc's default spec
 * (libcontainer/specconv AllowedDevices) minus /dev/net/tun, which Kiln's
 * /dev does not provide:
 *
 *   c *:* m, b *:* m        mknod allowed (CAP_MKNOD is dropped anyway; the
 *                           cgroup must allow it for overlay copy-up of a
 *                           device node a layer carries, which the kernel
 *                           performs as the step's process)
 *   c 1:3 1:5 1:7 1:8 1:9   null zero full random urandom
 *   c 5:0 5:2 136:*         tty, ptmx, the pts
 *
 * Everything else (every block device, every other char device) can be
 * neither read nor written, whatever node reaches the step.  cgroup v1: the
 * "devices" controller (devices.deny "a", then devices.allow per rule).
 * cgroup v2 has no device files: a BPF_PROG_TYPE_CGROUP_DEVICE program
 * attached to the step's cgroup decides each access (it runs for the step's
 * cgroup on the unified hierarchy, so a hybrid host gets both walls). */
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_internal.h"

typedef struct dev_rule {
    char type;        /* 'c' or 'b' */
    int major, minor; /* -1: any */
    const char *access;
} dev_rule;

static const dev_rule rules[] = {
    {'c', -1, -1, "m"}, {'b', -1, -1, "m"},    {'c', 1, 3, "rwm"}, {'c', 1, 5, "rwm"},
    {'c', 1, 7, "rwm"}, {'c', 1, 8, "rwm"},    {'c', 1, 9, "rwm"}, {'c', 5, 0, "rwm"},
    {'c', 5, 2, "rwm"}, {'c', 136, -1, "rwm"},
};

static bool write_file(const char *dir, const char *file, const char *s)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    return fd >= 0 && kiln_write_all(fd, s, strlen(s)) >= 0;
}

bool sbx_devices_v1(const char *dir)
{
    if (!write_file(dir, "devices.deny", "a"))
        return false;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(rules); i++) {
        char line[64], maj[12] = "*", min[12] = "*";
        if (rules[i].major >= 0)
            snprintf(maj, sizeof(maj), "%d", rules[i].major);
        if (rules[i].minor >= 0)
            snprintf(min, sizeof(min), "%d", rules[i].minor);
        snprintf(line, sizeof(line), "%c %s:%s %s", rules[i].type, maj, min, rules[i].access);
        if (!write_file(dir, "devices.allow", line))
            return false;
    }
    return true;
}

/* ---- cgroup v2: the BPF program ---------------------------------------- */

#define INSN(c, d, s, o, i)                                                                        \
    ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})
#define LDX_W(d, s, off) INSN(BPF_LDX | BPF_MEM | BPF_W, d, s, off, 0)
#define MOV_R(d, s)      INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV_K(d, k)      INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, k)
#define AND_K(d, k)      INSN(BPF_ALU64 | BPF_AND | BPF_K, d, 0, 0, k)
#define RSH_K(d, k)      INSN(BPF_ALU64 | BPF_RSH | BPF_K, d, 0, 0, k)
#define JNE_K(d, k, off) INSN(BPF_JMP | BPF_JNE | BPF_K, d, 0, off, k)
#define EXIT()           INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

static unsigned access_bits(const char *a)
{
    unsigned bits = 0;
    for (; *a; a++)
        bits |= *a == 'r'   ? BPF_DEVCG_ACC_READ
                : *a == 'w' ? BPF_DEVCG_ACC_WRITE
                            : BPF_DEVCG_ACC_MKNOD;
    return bits;
}

/* The program: r2 = type, r3 = access bits, r4 = major, r5 = minor; one block
 * per rule that jumps to the next block on any mismatch and returns 1 (allow)
 * when all match; the end returns 0 (deny). */
static size_t build_prog(struct bpf_insn *p, size_t cap)
{
    size_t n = 0;
    p[n++] = LDX_W(2, 1, 0); /* access_type: (access << 16) | type */
    p[n++] = MOV_R(3, 2);
    p[n++] = AND_K(2, 0xffff);
    p[n++] = RSH_K(3, 16);
    p[n++] = LDX_W(4, 1, 4); /* major */
    p[n++] = LDX_W(5, 1, 8); /* minor */
    for (size_t i = 0; i < KILN_ARRAY_SIZE(rules) && n + 8 < cap; i++) {
        const dev_rule *r = &rules[i];
        int len = 1 + (r->major >= 0) + (r->minor >= 0) + 3 + 2; /* insns after the first jump */
        int skip = len;
        p[n++] = JNE_K(2, r->type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK, --skip);
        if (r->major >= 0)
            p[n++] = JNE_K(4, r->major, --skip);
        if (r->minor >= 0)
            p[n++] = JNE_K(5, r->minor, --skip);
        /* requested access must be a subset of the rule's */
        p[n++] = MOV_R(6, 3);
        --skip;
        p[n++] = AND_K(6, (int)(~access_bits(r->access) & 0xffff));
        --skip;
        p[n++] = JNE_K(6, 0, --skip);
        p[n++] = MOV_K(0, 1);
        p[n++] = EXIT();
    }
    p[n++] = MOV_K(0, 0);
    p[n++] = EXIT();
    return n;
}

int sbx_devices_bpf_load(char *log, size_t log_size)
{
    struct bpf_insn prog[256];
    size_t n = build_prog(prog, KILN_ARRAY_SIZE(prog) - 2);
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    a.insns = (uintptr_t)prog;
    a.insn_cnt = (unsigned)n;
    a.license = (uintptr_t) "Apache-2.0";
    if (log && log_size)
        log[0] = '\0';
    int fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
    if (fd < 0 && log && log_size > 1 && errno != EPERM && errno != ENOSYS) {
        /* Again, for the verifier's reason (a log too small fails too). */
        int e = errno;
        a.log_buf = (uintptr_t)log;
        a.log_size = (unsigned)log_size;
        a.log_level = 1;
        fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
        if (fd < 0)
            errno = e;
    }
    if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int sbx_devices_bpf_attach(int prog_fd, const char *dir)
{
    _cleanup_close_ int cg = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg < 0)
        return -1;
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.target_fd = (unsigned)cg;
    a.attach_bpf_fd = (unsigned)prog_fd;
    a.attach_type = BPF_CGROUP_DEVICE;
    /* MULTI: programs of the ancestors (systemd attaches its own) still run
     * and must allow too: this one only ever narrows. */
    a.attach_flags = BPF_F_ALLOW_MULTI;
    return (int)syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof(a)) < 0 ? -1 : 0;
}
