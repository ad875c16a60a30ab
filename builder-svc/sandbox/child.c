/* The child side of sbx_run(): the monitor (host PID namespace), init (PID 1
 * of the step) and the command.  These run after fork() in a copy of the
 * builder; they never return, report failures over the report pipe and end
 * with _exit().  See bld_sandbox.h for the process tree. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_run.h"

extern char **environ;

#define DIE(p, code, ...)                                                                          \
    do {                                                                                           \
        sbx_report((p), SBX_MSG_ERROR, (code), errno, 0, __VA_ARGS__);                             \
        _exit(126);                                                                                \
    } while (0)

static void reset_signals(void)
{
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
}

void sbx_close_others(const int *keep, size_t n)
{
    int lo = 3;
    for (;;) {
        int next = -1;
        for (size_t i = 0; i < n; i++)
            if (keep[i] >= lo && (next < 0 || keep[i] < next))
                next = keep[i];
        if (next < 0) {
            syscall(SYS_close_range, lo, ~0U, 0);
            return;
        }
        if (next > lo)
            syscall(SYS_close_range, lo, next - 1, 0);
        lo = next + 1;
    }
}

static void write_map(sbx_plan *p, const char *file, const char *data)
{
    _cleanup_close_ int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || kiln_write_all(fd, data, strlen(data)) < 0)
        DIE(p, KILN_EPERM, "write %s", file);
}

/* Docker's default capability set, without CAP_MKNOD: there is no device
 * cgroup here to stop a created block device from reaching the host disk. */
static const int keep_caps[] = {
    CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FSETID,  CAP_FOWNER,           CAP_SETGID,
    CAP_SETUID, CAP_SETFCAP,      CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
    CAP_KILL,   CAP_AUDIT_WRITE,  CAP_NET_RAW,
};

static void drop_caps(sbx_plan *p)
{
    uint64_t keep = 0;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(keep_caps); i++)
        keep |= 1ULL << keep_caps[i];
    /* On the private network a raw frame written to the tap device would
     * reach pasta past the egress filter, and pasta connects wherever a
     * frame points (Podman's default set has no CAP_NET_RAW either). */
    if (p->spec->network == SBX_NET_PRIVATE)
        keep &= ~(1ULL << CAP_NET_RAW);
    for (int c = 0; c <= p->cap_last; c++)
        if (!(keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            DIE(p, KILN_EPERM, "drop capability %d", c);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    for (int i = 0; i < 2; i++)
        d[i].effective = d[i].permitted = d[i].inheritable = (uint32_t)(keep >> (32 * i));
    if (syscall(SYS_capset, &h, d) < 0)
        DIE(p, KILN_EPERM, "capset");
}

static char **build_env(const sbx_plan *p, const sbx_user *u)
{
    size_t n = 0;
    const char *const *env = p->spec->env;
    while (env && env[n])
        n++;
    char **out = calloc(n + 3, sizeof(char *));
    if (out == NULL)
        return NULL;
    bool has_path = false, has_home = false;
    for (size_t i = 0; i < n; i++) {
        out[i] = (char *)env[i];
        has_path |= strncmp(env[i], "PATH=", 5) == 0;
        has_home |= strncmp(env[i], "HOME=", 5) == 0;
    }
    if (!has_path)
        out[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    if (!has_home && asprintf(&out[n], "HOME=%s", u->home) >= 0)
        n++;
    return out;
}

/* --ulimit, in the command child before exec (the limits are inherited
 * across exec and by every process the command starts).  The builder
 * refused hard values above its own before the build started, so this never
 * gives a RUN more than the builder has.  -1 with errno and the failing
 * entry in *bad. */
static int apply_ulimits(const bld_run_spec *s, const kiln_ulimit **bad)
{
    for (size_t i = 0; i < s->n_ulimits; i++) {
        const kiln_ulimit *u = &s->ulimits[i];
        struct rlimit rl = {
            .rlim_cur = u->soft == KILN_ULIMIT_INFINITY ? RLIM_INFINITY : (rlim_t)u->soft,
            .rlim_max = u->hard == KILN_ULIMIT_INFINITY ? RLIM_INFINITY : (rlim_t)u->hard,
        };
        if (setrlimit(u->resource, &rl) < 0) {
            *bad = u;
            return -1;
        }
    }
    return 0;
}

static _Noreturn void command_main(sbx_plan *p)
{
    const bld_run_spec *s = p->spec;
    setsid();
    reset_signals();
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(p->out_w, 1) < 0 || dup2(p->err_w, 2) < 0)
        DIE(p, KILN_EIO, "set up stdio");
    /* Everything else closes at exec, including the report pipe, whose
     * EOF-free silence tells the parent the exec worked. */
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);

    sbx_user u;
    kiln_error *err = NULL;
    if (sbx_user_resolve(&u, s->user, "/etc/passwd", "/etc/group", &err) < 0) {
        sbx_report(p, SBX_MSG_ERROR, err->code, 0, 0, "%s", err->msg);
        _exit(126);
    }
    const char *cwd = s->cwd && *s->cwd ? s->cwd : "/";
    if (kiln_mkdir_p(cwd, 0755, &err) < 0) {
        sbx_report(p, SBX_MSG_ERROR, KILN_EIO, err->sys_errno, 0, "create WORKDIR %s", cwd);
        _exit(126);
    }
    if (chdir(cwd) < 0)
        DIE(p, KILN_EIO, "chdir %s", cwd);
    const kiln_ulimit *bad = NULL;
    if (apply_ulimits(s, &bad) < 0)
        DIE(p, KILN_EPERM, "ulimit %s", bad->name);
    /* The filter goes on while we still hold CAP_SYS_ADMIN, so no
     * no_new_privs is needed and set-uid programs keep working. */
    if (sbx_seccomp_install() < 0 && errno != EINVAL)
        DIE(p, KILN_EPERM, "install seccomp filter");
    drop_caps(p);
    if (setgroups(u.ngroups, u.groups) < 0 && !(p->rootless && errno == EPERM))
        DIE(p, KILN_EPERM, "setgroups");
    if (setresgid(u.gid, u.gid, u.gid) < 0 || setresuid(u.uid, u.uid, u.uid) < 0)
        DIE(p, KILN_EPERM, "switch to user %s", s->user ? s->user : "root");
    char **envp = build_env(p, &u);
    if (envp == NULL)
        DIE(p, KILN_ENOSPC, "environment");
    environ = envp; /* execvp searches the image's PATH */
    execvp(p->argv[0], p->argv);
    int e = errno;
    sbx_report(p, SBX_MSG_ERROR, e == ENOENT ? KILN_ENOENT : KILN_EPERM, e, 0, "exec %s",
               p->argv[0]);
    _exit(e == ENOENT ? 127 : 126);
}

static _Noreturn void init_main(sbx_plan *p, int life_r)
{
    /* Dies with the monitor; the poll catches a monitor that died before
     * the death signal was armed. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        _exit(1);
    struct pollfd pf = {life_r, POLLIN, 0};
    if (poll(&pf, 1, 0) != 0)
        _exit(1);
    close(life_r);
    umask(022);
    const char *hn = p->hostname;
    if (sethostname(hn, strlen(hn)) < 0)
        DIE(p, KILN_EIO, "sethostname");
    bool private_net = p->spec->network == SBX_NET_PRIVATE;
    /* The private network's loopback and filter were set up with it. */
    if (p->spec->network == SBX_NET_NONE && sbx_loopback_up() < 0)
        DIE(p, KILN_EIO, "bring up loopback");
    if (sbx_rootfs_setup(p) < 0)
        _exit(126);
    if (private_net) {
        /* The builder waits for pasta meanwhile (the first step of a
         * build may start with it) and says when it is ready; EOF means it
         * failed (and reports why). */
        char go = 0;
        ssize_t n;
        while ((n = read(p->go_r, &go, 1)) < 0 && errno == EINTR)
            ;
        if (n != 1)
            _exit(126);
        close(p->go_r);
    }
    sbx_report(p, SBX_MSG_READY, 0, 0, 0, "ready");
    pid_t cmd = fork();
    if (cmd < 0)
        DIE(p, KILN_EIO, "fork command");
    if (cmd == 0)
        command_main(p);
    close(p->out_w);
    close(p->err_w);
    /* As PID 1, reap orphans until the command itself ends; then exiting
     * makes the kernel kill whatever the command left behind. */
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w == cmd) {
            sbx_report(p, SBX_MSG_EXIT, 0, 0, st, "exit");
            _exit(0);
        }
        if (w < 0 && errno != EINTR)
            _exit(1);
    }
}

/* Closes every inherited descriptor but the ones the sandbox uses. */
static void close_inherited(const sbx_plan *p)
{
    int keep[8 + 2 * 64];
    size_t nk = 0;
    keep[nk++] = p->report_w;
    keep[nk++] = p->out_w;
    keep[nk++] = p->err_w;
    keep[nk++] = p->ack_r;
    if (p->go_r >= 0)
        keep[nk++] = p->go_r;
    if (p->net_fd >= 0)
        keep[nk++] = p->net_fd;
    if (p->net_userfd >= 0)
        keep[nk++] = p->net_userfd;
    for (size_t i = 0; i < p->n_mounts && nk < KILN_ARRAY_SIZE(keep); i++)
        if (p->mounts[i].srcfd >= 0)
            keep[nk++] = p->mounts[i].srcfd;
    sbx_close_others(keep, nk);
}

/* Joins the step's cgroups, the user namespace (rootless) and the build's
 * private network; dies on failure. */
static void join_namespaces(sbx_plan *p)
{
    /* Join the step's cgroups before anything else is created, so every
     * process of the step is counted and killed with it. */
    for (size_t i = 0; i < p->cg.n; i++) {
        _cleanup_close_ int fd = open(p->cg.procs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || kiln_write_all(fd, "0", 1) < 0)
            DIE(p, KILN_EIO, "join cgroup");
    }
    bool private_net = p->spec->network == SBX_NET_PRIVATE;
    if (private_net && p->rootless) {
        /* Rootless: the user namespace owning the build's network namespace
         * (builder's user as root, maps written) becomes the step's too. */
        if (setns(p->net_userfd, CLONE_NEWUSER) < 0)
            DIE(p, KILN_EPERM, "join the user namespace of the RUN's network");
    } else if (p->rootless) {
        /* Rootless: the caller becomes root of a new user namespace, which
         * then owns the other namespaces (and may mount in them). */
        char map[64];
        if (unshare(CLONE_NEWUSER) < 0)
            DIE(p, KILN_EPERM, "create user namespace");
        write_map(p, "/proc/self/setgroups", "deny");
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)p->host_uid);
        write_map(p, "/proc/self/uid_map", map);
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)p->host_gid);
        write_map(p, "/proc/self/gid_map", map);
    }
    /* The private network is made once per build (bld_netns): joining it
     * is a setns, not a new namespace, filter and pasta per step. */
    if (private_net && setns(p->net_fd, CLONE_NEWNET) < 0)
        DIE(p, KILN_EPERM, "join the RUN's network namespace");
    if (private_net) {
        close(p->net_fd);
        close(p->net_userfd);
    }
}

/* Reports init's pid, waits for the builder's ack, then exits with init's
 * status. */
static _Noreturn void wait_init(sbx_plan *p, pid_t init)
{
    sbx_report(p, SBX_MSG_PID, 0, 0, init, "init");
    /* Wait for the builder to hold a pidfd of init before init can be
     * reaped: a later kill must not hit a recycled pid. */
    char ack;
    while (read(p->ack_r, &ack, 1) < 0 && errno == EINTR)
        ;
    for (;;) {
        int st;
        pid_t w = waitpid(init, &st, 0);
        if (w == init)
            _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        if (w < 0 && errno != EINTR)
            _exit(1);
    }
}

_Noreturn void sbx_child_main(sbx_plan *p)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != p->parent)
        _exit(1);
    reset_signals();
    close_inherited(p);
    join_namespaces(p);
    int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
    if (p->spec->network == SBX_NET_NONE)
        flags |= CLONE_NEWNET;
    if (unshare(flags) < 0)
        DIE(p, KILN_EPERM, "create namespaces");
    int life[2];
    if (pipe2(life, O_CLOEXEC) < 0)
        DIE(p, KILN_EIO, "pipe");
    pid_t init = fork();
    if (init < 0)
        DIE(p, KILN_EIO, "fork init");
    if (init == 0) {
        close(life[1]);
        init_main(p, life[0]);
    }
    close(life[0]);
    close(p->out_w);
    close(p->err_w);
    if (p->go_r >= 0)
        close(p->go_r);
    wait_init(p, init);
}
