/* A small seccomp filter for RUN commands: a deny list of system calls that
 * reach kernel state no namespace isolates (keyrings, modules, kexec, swap,
 * BPF, perf, userfaultfd, file handles) or that would let the command build
 * new namespaces and mounts of its own.  Everything else is allowed, as in
 * Docker's default profile; clone3 answers ENOSYS so libc falls back to
 * clone, whose flags can be inspected.
 *
 * On x86-64 the i386 entry point has its own numbers and is filtered with
 * them; x32 is refused outright.  Other foreign ABIs are refused. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_run.h"

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

#define NS_FLAGS                                                                                   \
    (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |     \
     CLONE_NEWCGROUP)

static const int native_deny[] = {
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_kexec_load,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_userfaultfd,
    SYS_open_by_handle_at,
    SYS_reboot,
    SYS_swapon,
    SYS_swapoff,
    SYS_acct,
    SYS_unshare,
    SYS_setns,
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_quotactl,
    SYS_fsopen,
    SYS_fsmount,
    SYS_move_mount,
    SYS_open_tree,
    SYS_kexec_file_load,
    SYS_fsconfig,
    SYS_fspick,
    SYS_mount_setattr,
};

#if defined(__x86_64__)
/* The same calls by their i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
static const int i386_deny[] = {288, 286, 287, 283, 128, 350, 129, 357, 336, 374,
                                342, 88,  87,  115, 51,  310, 346, 21,  52,  22,
                                217, 131, 430, 432, 429, 428, 431, 433, 442};
#define I386_CLONE  120
#define I386_CLONE3 435
#endif

#define MAX_INSNS 160

typedef struct prog {
    struct sock_filter f[MAX_INSNS];
    unsigned short n;
} prog;

static void emit(prog *p, struct sock_filter ins)
{
    if (p->n < MAX_INSNS)
        p->f[p->n++] = ins;
}

#define STMT(c, k)       ((struct sock_filter)BPF_STMT((c), (k)))
#define JUMP(c, k, t, f) ((struct sock_filter)BPF_JUMP((c), (k), (t), (f)))
#define RET(v)           STMT(BPF_RET | BPF_K, (v))
#define EPERM_RET        RET(SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define ENOSYS_RET       RET(SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA))
#define LOAD(off)        STMT(BPF_LD | BPF_W | BPF_ABS, (off))

/* One ABI's checks: the nr is loaded; ends with a verdict. */
static void abi_section(prog *p, const int *deny, size_t n, int clone_nr, int clone3_nr)
{
    for (size_t i = 0; i < n; i++) {
        emit(p, JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)deny[i], 0, 1));
        emit(p, EPERM_RET);
    }
    emit(p, JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)clone3_nr, 0, 1));
    emit(p, ENOSYS_RET);
    /* clone(flags, …): no new namespaces from inside. */
    emit(p, JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)clone_nr, 0, 3));
    emit(p, LOAD(offsetof(struct seccomp_data, args[0])));
    emit(p, JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1));
    emit(p, EPERM_RET);
    emit(p, RET(SECCOMP_RET_ALLOW));
}

int sbx_seccomp_install(void)
{
#ifndef NATIVE_ARCH
    return 0; /* no filter for this architecture */
#else
    static prog p; /* built fresh each time: init runs this once per step */
    p.n = 0;
    emit(&p, LOAD(offsetof(struct seccomp_data, arch)));
    size_t jump_at = p.n;
    emit(&p, JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 0)); /* jf patched below */
    emit(&p, LOAD(offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    emit(&p, JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1)); /* x32 */
    emit(&p, EPERM_RET);
#endif
    abi_section(&p, native_deny, KILN_ARRAY_SIZE(native_deny), SYS_clone, SYS_clone3);
    p.f[jump_at].jf = (unsigned char)(p.n - jump_at - 1);
#if defined(__x86_64__)
    emit(&p, JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, 1, 0));
    emit(&p, EPERM_RET);
    emit(&p, LOAD(offsetof(struct seccomp_data, nr)));
    abi_section(&p, i386_deny, KILN_ARRAY_SIZE(i386_deny), I386_CLONE, I386_CLONE3);
#else
    emit(&p, EPERM_RET);
#endif
    if (p.n >= MAX_INSNS) {
        errno = E2BIG;
        return -1;
    }
    struct sock_fprog fp = {.len = p.n, .filter = p.f};
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0);
#endif
}
