/* The RUN's private network (SBX_NET_PRIVATE): a network namespace of its
 * own, connected to the outside by pasta (Debian package passt), a user-mode
 * stack that turns the namespace's TCP, UDP and ICMP echo traffic into
 * ordinary sockets of an unprivileged process on the host.
 *
 * One bld_netns is one such network: the namespace (owned by a user
 * namespace of "nobody" when the builder is root, so that pasta can run as
 * nobody and still enter it), with loopback up and the egress filter
 * (netfilter.c) installed before pasta is attached, the RUNs'
 * /etc/resolv.conf, and a keeper thread that starts pasta, reports when it
 * has configured the namespace and kills it when the network is freed.  The
 * engine makes one per build and every RUN of that build on the private
 * network joins it (setns in the monitor); sbx_run() makes one for a single
 * step when the caller gives none.
 *
 * What keeps the host's loopback and link-local addresses out of reach
 * (see README.md, "Network"): pasta runs with --no-map-gw (the gateway
 * address is not the host's loopback), -T none -U none (no port of the
 * host's loopback appears on the namespace's), -t none -u none (nothing
 * inbound); the namespace's loopback is its own; and an nftables output
 * chain, which the command cannot change (no CAP_NET_ADMIN), rejects
 * 127.0.0.0/8 and ::1 off the loopback device, 169.254.0.0/16 and
 * non-ICMPv6 fe80::/10 whatever route or device a socket picks
 * (SO_BINDTODEVICE would otherwise bypass a plain unreachable route).  The
 * command also runs without CAP_NET_RAW, so it cannot write frames to the
 * tap device past that filter: pasta connects wherever a frame points.
 *
 * Lifetimes: pasta is a child of a warden process that the keeper thread
 * forks with PR_SET_PDEATHSIG, so it dies with bld_netns_free() or with the
 * builder (see warden_main); the namespace lives as
 * long as the bld_netns holds its fd (and pasta is in it), and a RUN's
 * processes leave it when their PID namespace ends. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "sbx_run.h"

#define PASTA_READY_MS 10000

/* ---- finding pasta ---------------------------------------------------- */

bool sbx_net_find_pasta(char *out, size_t n)
{
    const char *env = getenv("KILN_PASTA");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return access(out, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    _cleanup_free_ char *dirs =
        strdup(path && *path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin");
    char *save = NULL;
    for (char *d = dirs ? strtok_r(dirs, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, n, "%s/pasta", d);
        if (d[0] == '/' && access(out, X_OK) == 0)
            return true;
    }
    snprintf(out, n, "/usr/bin/pasta");
    return access(out, X_OK) == 0;
}

/* ---- /etc/resolv.conf ------------------------------------------------- */

/* Addresses the RUN cannot reach: a resolver there is reached through
 * pasta's DNS forwarding instead. */
static bool blocked_addr(const char *a)
{
    struct in_addr v4;
    struct in6_addr v6;
    char buf[INET6_ADDRSTRLEN + 1];
    snprintf(buf, sizeof(buf), "%s", a);
    buf[strcspn(buf, "%")] = '\0';
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        uint32_t h = ntohl(v4.s_addr);
        return (h >> 24) == 127 || (h >> 16) == 0xa9fe;
    }
    if (inet_pton(AF_INET6, buf, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6) || IN6_IS_ADDR_LINKLOCAL(&v6) || IN6_IS_ADDR_V4MAPPED(&v6);
    return true;
}

/* ---- the network object ----------------------------------------------- */

enum { NET_STARTING, NET_READY, NET_FAILED };

struct bld_netns {
    bool rootless;
    int netfd;         /* the network namespace */
    int userfd;        /* the user namespace owning it */
    char *resolv;      /* /etc/resolv.conf text for the RUNs */
    char *dns_forward; /* host resolver pasta forwards SBX_NET_DNS to, or NULL */
    char pasta[PATH_MAX];
    pid_t parent; /* the builder: pasta dies unless it is still its parent */
    int logfd;    /* pasta's stderr (a memfd) */
    int quit;     /* eventfd: bld_netns_free() tells the keeper */
    pthread_t keeper;
    bool keeper_started;
    bool keeper_done; /* under mu: the keeper no longer uses n unless detached */
    bool detached;    /* under mu: bld_netns_free() was called, the keeper frees n */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;     /* NET_*, under mu */
    char why[640]; /* NET_FAILED: what pasta said, under mu */
};

/* The first resolver of src decides: on a blocked address (systemd-resolved's
 * 127.0.0.53, a link-local cloud resolver) the RUN asks SBX_NET_DNS, which
 * pasta forwards to it; otherwise the usable resolvers are kept as they are. */
static int make_resolv(bld_netns *n, const char *src, kiln_error **err)
{
    _cleanup_fclose_ FILE *in = fopen(src, "re");
    size_t len = 0;
    FILE *out = open_memstream(&n->resolv, &len);
    if (out == NULL)
        return kiln_error_set(err, KILN_ENOSPC, errno, "open_memstream");
    char line[1024], addr[256];
    bool first = true;
    int r = 0;
    while (r == 0 && in && fgets(line, sizeof(line), in)) {
        if (sscanf(line, " nameserver %255s", addr) != 1) {
            fputs(line, out);
            continue;
        }
        if (first && blocked_addr(addr)) {
            n->dns_forward = strdup(addr);
            if (n->dns_forward == NULL)
                r = kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strdup");
            else
                n->dns_forward[strcspn(n->dns_forward, "%")] = '\0';
            fprintf(out, "nameserver %s\n", SBX_NET_DNS);
        } else if (!n->dns_forward && !blocked_addr(addr)) {
            fputs(line, out);
        }
        first = false;
    }
    if (fclose(out) != 0 && r == 0)
        r = kiln_error_set(err, KILN_ENOSPC, errno, "resolv.conf");
    return r;
}

/* ---- the namespace ---------------------------------------------------- */

static bool write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, data, strlen(data)) == (ssize_t)strlen(data);
    close(fd);
    return ok;
}

/* As root: joins a new network namespace owned by a new user namespace of
 * SBX_NET_NOBODY (pasta, running as nobody, can enter both).  -1 with errno
 * on failure. */
static int join_owned(void)
{
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0)
        return -1;
    pid_t h = fork();
    if (h < 0)
        return -1;
    if (h == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(sync[0]);
        if (setgroups(0, NULL) < 0 || setresgid(SBX_NET_NOBODY, SBX_NET_NOBODY, SBX_NET_NOBODY) ||
            setresuid(SBX_NET_NOBODY, SBX_NET_NOBODY, SBX_NET_NOBODY) ||
            unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
            _exit(1);
        prctl(PR_SET_DUMPABLE, 1);
        if (write_file("/proc/self/setgroups", "deny") &&
            write_file("/proc/self/uid_map", "0 " SBX_NET_NOBODY_STR " 1\n") &&
            write_file("/proc/self/gid_map", "0 " SBX_NET_NOBODY_STR " 1\n"))
            (void)!write(sync[1], "k", 1);
        for (;;)
            pause();
    }
    close(sync[1]);
    char c;
    ssize_t r;
    while ((r = read(sync[0], &c, 1)) < 0 && errno == EINTR)
        ;
    close(sync[0]);
    int rc = -1, e = EIO;
    if (r == 1) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)h);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        rc = fd >= 0 ? setns(fd, CLONE_NEWNET) : -1;
        e = errno;
        if (fd >= 0)
            close(fd);
    }
    kill(h, SIGKILL);
    while (waitpid(h, NULL, 0) < 0 && errno == EINTR)
        ;
    errno = e;
    return rc;
}

/* In the forked child: enters a new namespace and configures it (loopback,
 * the egress filter, ICMP echo sockets), then reports "errno step" (0 on
 * success) and waits to be killed once the parent holds the namespace. */
static _Noreturn void ns_child(const bld_netns *n, int rep)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != n->parent)
        _exit(1);
    int step = 0;
    bool ok;
    if (n->rootless) {
        /* the builder's user becomes root of a user namespace owning the
         * network namespace; pasta (same user) enters both */
        char map[64];
        uid_t uid = geteuid();
        gid_t gid = getegid();
        ok = unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0 &&
             write_file("/proc/self/setgroups", "deny");
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
        ok = ok && write_file("/proc/self/uid_map", map);
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
        ok = ok && write_file("/proc/self/gid_map", map);
    } else {
        ok = join_owned() == 0;
    }
    /* Before pasta connects the namespace: nothing leaves it unfiltered. */
    if (ok && (step = 1, sbx_loopback_up() == 0) &&
        (step = 2, sbx_net_filter(n->dns_forward != NULL) == 0)) {
        /* ping without CAP_NET_RAW: ICMP echo sockets for every group */
        (void)write_file("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
        step = -1;
    }
    int msg[2] = {step < 0 ? 0 : errno, step};
    (void)!write(rep, msg, sizeof(msg));
    for (;;)
        pause();
}

static int ns_create(bld_netns *n, kiln_error **err)
{
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "pipe");
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(rp[0]);
        close(rp[1]);
        return kiln_error_set(err, KILN_EIO, e, "fork");
    }
    if (pid == 0)
        ns_child(n, rp[1]);
    close(rp[1]);
    int msg[2] = {EIO, 0};
    ssize_t got;
    while ((got = read(rp[0], msg, sizeof(msg))) < 0 && errno == EINTR)
        ;
    close(rp[0]);
    int r = 0;
    if (got != (ssize_t)sizeof(msg))
        r = kiln_error_set(err, KILN_EIO, 0, "RUN network: the namespace helper died");
    else if (msg[0] != 0 && msg[1] == 0)
        r = kiln_error_set(err, KILN_EPERM, msg[0], "create the RUN's network namespace");
    else if (msg[0] != 0 && msg[1] == 1)
        r = kiln_error_set(err, KILN_EIO, msg[0], "bring up the RUN network's loopback");
    else if (msg[0] != 0)
        r = kiln_error_set(err, KILN_EPRECOND, msg[0],
                           "RUN network: install the egress filter (nf_tables)");
    if (r == 0) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
        n->netfd = open(path, O_RDONLY | O_CLOEXEC);
        /* the user namespace owning it: pasta enters both, and so does a
         * rootless RUN */
        n->userfd = n->netfd >= 0 ? ioctl(n->netfd, NS_GET_USERNS) : -1;
        if (n->userfd >= 0 && fcntl(n->userfd, F_SETFD, FD_CLOEXEC) < 0) {
            close(n->userfd);
            n->userfd = -1;
        }
        if (n->netfd < 0 || n->userfd < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "open the RUN's network namespace");
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return r;
}

/* ---- pasta ------------------------------------------------------------ */

static void pasta_log(const bld_netns *n, char *out, size_t len)
{
    char buf[4096];
    ssize_t got = pread(n->logfd, buf, sizeof(buf) - 1, 0);
    buf[got > 0 ? got : 0] = '\0';
    size_t at = 0;
    out[0] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line && at + 2 < len;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '\0' || strstr(line, "syslog"))
            continue; /* "Failed to send … bytes to syslog" */
        at += (size_t)snprintf(out + at, len - at, "%s%s", at ? "; " : "", line);
    }
    if (at == 0)
        snprintf(out, len, "no message");
}

/* In the forked child, before exec: only system calls. */

int sbx_net_own_dev(void)
{
    static const struct {
        const char *path;
        unsigned maj, min;
    } nodes[] = {{"/dev/null", 1, 3},
                 {"/dev/zero", 1, 5},
                 {"/dev/urandom", 1, 9},
                 {"/dev/net/tun", 10, 200}};
    if (mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=16k") < 0 ||
        mkdir("/dev/net", 0755) < 0)
        return -1;
    mode_t old = umask(0);
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++)
        if (mknod(nodes[i].path, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0) {
            umask(old);
            return -1;
        }
    umask(old);
    return 0;
}

static _Noreturn void pasta_exec(const bld_netns *n, char *const *argv, int pidw, pid_t warden)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != warden)
        _exit(1);
    /* Default dispositions (pasta refuses to start with SIGPIPE ignored,
     * as the builder has it) and no blocked signals. */
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    /* copies above 9 first: the sources may be 3, 4 or 5 */
    int ns = fcntl(n->netfd, F_DUPFD_CLOEXEC, 10), us = fcntl(n->userfd, F_DUPFD_CLOEXEC, 10),
        pw = fcntl(pidw, F_DUPFD_CLOEXEC, 10);
    if (null < 0 || ns < 0 || us < 0 || pw < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
        dup2(n->logfd, 2) < 0 || dup2(ns, 3) < 0 || dup2(us, 4) < 0 || dup2(pw, 5) < 0)
        _exit(1);
    syscall(SYS_close_range, 6, ~0U, 0);
    if (!n->rootless) {
        /* pasta drops to nobody before it opens /dev/net/tun, which is
         * root's alone where no udev rule made it 0666, and absent from a
         * container's /dev: give this process a /dev of its own. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            sbx_net_own_dev() < 0)
            _exit(1);
    }
    execv(n->pasta, argv);
    _exit(127);
}

static void set_state(bld_netns *n, int state, const char *why)
{
    pthread_mutex_lock(&n->mu);
    if (n->state != NET_FAILED) {
        n->state = state;
        if (why)
            snprintf(n->why, sizeof(n->why), "%s", why);
    }
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* The warden, a forked child of the keeper thread and pasta's parent: it
 * exists because pasta cannot be given a death signal of its own (the
 * kernel clears PR_SET_PDEATHSIG when pasta drops to nobody).  The warden
 * keeps its credentials, so SIGTERM reaches it when the keeper thread ends,
 * the builder's death included; on SIGTERM it kills pasta, and it exits as
 * soon as pasta has.  Signals arrive blocked (the keeper blocks them all)
 * and are taken with sigwait; only system calls after fork. */
static _Noreturn void warden_main(const bld_netns *n, char *const *argv, int pidw)
{
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != n->parent)
        _exit(1);
    /* Nothing of other builds (their namespaces) stays open here. */
    int keep[] = {pidw, n->logfd, n->netfd, n->userfd};
    sbx_close_others(keep, KILN_ARRAY_SIZE(keep));
    pid_t self = getpid();
    pid_t pasta = fork();
    if (pasta < 0)
        _exit(1);
    if (pasta == 0)
        pasta_exec(n, argv, pidw, self);
    close(pidw);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    for (;;) {
        int sig = 0, st;
        if (sigwait(&set, &sig) == 0 && sig == SIGTERM)
            kill(pasta, SIGKILL); /* our unreaped child: the pid is still pasta's */
        if (waitpid(pasta, &st, WNOHANG) == pasta)
            _exit(0);
    }
}

/* Waits for pasta's readiness (the PID it writes to the pipe once the
 * namespace is configured), then for its end or bld_netns_free(). */
static void keeper_watch(bld_netns *n, pid_t warden, int pid_r)
{
    _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, warden, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool ready = false;
    for (;;) {
        struct pollfd pf[3] = {{n->quit, POLLIN, 0}, {pidfd, POLLIN, 0}, {pid_r, POLLIN, 0}};
        int timeout = -1;
        if (!ready) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= PASTA_READY_MS) {
                set_state(n, NET_FAILED, "pasta did not configure the namespace in time");
                return;
            }
            timeout = (int)(PASTA_READY_MS - el);
        }
        int r = poll(pf, ready ? 2 : 3, timeout);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (pf[0].revents & POLLIN))
            return; /* freed */
        if (!ready && (pf[2].revents & POLLIN)) {
            char buf[16];
            if (read(pid_r, buf, sizeof(buf)) > 0) {
                ready = true;
                set_state(n, NET_READY, NULL);
                continue;
            }
        }
        if ((pf[1].revents & POLLIN) || (!ready && (pf[2].revents & POLLHUP))) {
            char msg[512], why[600];
            pasta_log(n, msg, sizeof(msg));
            snprintf(why, sizeof(why), "pasta %s: %s",
                     ready ? "ended" : "could not set up the network", msg);
            set_state(n, NET_FAILED, why);
            return;
        }
    }
}

static void keeper_run(bld_netns *n)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* and so does the warden (see there) */
    /* pasta writes its PID to /proc/self/fd/5 once the namespace is
     * configured: a pipe it can reopen, so it is nobody's when pasta is. */
    int pr[2];
    if (pipe2(pr, O_CLOEXEC) < 0) {
        set_state(n, NET_FAILED, "pipe failed");
        return;
    }
    if (!n->rootless && fchown(pr[1], SBX_NET_NOBODY, SBX_NET_NOBODY) < 0) {
        close(pr[0]);
        close(pr[1]);
        set_state(n, NET_FAILED, "chown pipe failed");
        return;
    }
    const char *argv[40];
    size_t i = 0;
    argv[i++] = "pasta";
    argv[i++] = "--foreground";
    argv[i++] = "--quiet";
    argv[i++] = "--config-net";
    argv[i++] = "--no-map-gw";
    /* no port forwarding in either direction */
    argv[i++] = "--tcp-ports";
    argv[i++] = "none";
    argv[i++] = "--udp-ports";
    argv[i++] = "none";
    argv[i++] = "--tcp-ns";
    argv[i++] = "none";
    argv[i++] = "--udp-ns";
    argv[i++] = "none";
    argv[i++] = "--no-netns-quit";
    argv[i++] = "--no-dhcp";
    argv[i++] = "--no-dhcpv6";
    if (n->dns_forward) {
        argv[i++] = "--dns";
        argv[i++] = n->dns_forward;
        argv[i++] = "--dns-forward";
        argv[i++] = SBX_NET_DNS;
    }
    if (!n->rootless) {
        argv[i++] = "--runas";
        argv[i++] = SBX_NET_NOBODY_STR ":" SBX_NET_NOBODY_STR;
    }
    argv[i++] = "--userns";
    argv[i++] = "/proc/self/fd/4";
    argv[i++] = "--netns";
    argv[i++] = "/proc/self/fd/3";
    argv[i++] = "--pid";
    argv[i++] = "/proc/self/fd/5";
    argv[i] = NULL;
    pid_t warden = fork();
    if (warden == 0)
        warden_main(n, (char *const *)argv, pr[1]);
    close(pr[1]);
    if (warden < 0) {
        close(pr[0]);
        set_state(n, NET_FAILED, "fork failed");
        return;
    }
    keeper_watch(n, warden, pr[0]);
    close(pr[0]);
    kill(warden, SIGTERM); /* our unreaped child: the pid is still the warden's */
    while (waitpid(warden, NULL, 0) < 0 && errno == EINTR)
        ;
}

static void destroy(bld_netns *n)
{
    int fds[] = {n->netfd, n->userfd, n->logfd, n->quit};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n->resolv);
    free(n->dns_forward);
    free(n);
}

static void *keeper_main(void *arg)
{
    bld_netns *n = arg;
    keeper_run(n);
    /* Whoever waits for readiness from now on is told it is gone; once
     * bld_netns_free() has let go of n, the keeper frees it. */
    set_state(n, NET_FAILED, "the network was shut down");
    pthread_mutex_lock(&n->mu);
    n->keeper_done = true;
    bool detached = n->detached;
    pthread_mutex_unlock(&n->mu);
    if (detached)
        destroy(n);
    return NULL;
}

/* ---- public ----------------------------------------------------------- */

int bld_netns_new(bld_netns **out, const char *resolv_conf, kiln_error **err)
{
    *out = NULL;
    bld_netns *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
    n->netfd = n->userfd = n->logfd = n->quit = -1;
    n->rootless = geteuid() != 0;
    n->parent = getpid();
    n->state = NET_STARTING;
    pthread_mutex_init(&n->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    int r = 0;
    if (!sbx_net_find_pasta(n->pasta, sizeof(n->pasta)))
        r = kiln_error_set(err, KILN_EPRECOND, 0,
                           "RUN needs network but pasta is not installed (Debian package "
                           "passt); install it, or use RUN --network=none");
    if (r == 0)
        r = make_resolv(n, resolv_conf ? resolv_conf : "/etc/resolv.conf", err);
    if (r == 0 && (n->logfd = memfd_create("pasta-log", MFD_CLOEXEC)) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "memfd_create");
    if (r == 0 && (n->quit = eventfd(0, EFD_CLOEXEC)) < 0)
        r = kiln_error_set(err, KILN_EIO, errno, "eventfd");
    if (r == 0)
        r = ns_create(n, err);
    if (r == 0) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int e = pthread_create(&n->keeper, &attr, keeper_main, n);
        pthread_attr_destroy(&attr);
        if (e != 0)
            r = kiln_error_set(err, KILN_ENOSPC, e, "network keeper thread");
        n->keeper_started = e == 0;
    }
    if (r < 0) {
        bld_netns_free(n);
        return r;
    }
    *out = n;
    return 0;
}

void bld_netns_free(bld_netns *n)
{
    if (n == NULL)
        return;
    if (!n->keeper_started) {
        destroy(n);
        return;
    }
    /* pasta's exit (its tap device unregistered, its memory unmapped) takes
     * tens of ms: the keeper waits for it off the caller's path, then frees
     * n; pasta is sent SIGKILL right away all the same. */
    pthread_mutex_lock(&n->mu);
    uint64_t one = 1;
    (void)!write(n->quit, &one, sizeof(one));
    n->detached = true;
    bool done = n->keeper_done;
    pthread_mutex_unlock(&n->mu);
    if (done) {
        pthread_join(n->keeper, NULL);
        destroy(n);
    } else {
        pthread_detach(n->keeper);
    }
}

/* ---- for sbx_run() ---------------------------------------------------- */

int sbx_net_prepare(sbx_plan *p, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    if (s->netns == NULL) {
        int r = bld_netns_new(&p->own_net, s->resolv_conf, err);
        if (r < 0)
            return r;
    }
    p->net = s->netns ? s->netns : p->own_net;
    p->net_fd = p->net->netfd;
    p->net_userfd = p->net->userfd;
    if (asprintf(&p->resolv, "%s/resolv.conf", p->work) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    _cleanup_close_ int fd = open(p->resolv, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || kiln_write_all(fd, p->net->resolv, strlen(p->net->resolv)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write %s", p->resolv);
    return 0;
}

int sbx_net_wait(bld_netns *n, const atomic_bool *cancel, kiln_error **err)
{
    pthread_mutex_lock(&n->mu);
    while (n->state == NET_STARTING && !(cancel && atomic_load(cancel))) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&n->cv, &n->mu, &ts);
    }
    int state = n->state;
    char why[sizeof(n->why)];
    snprintf(why, sizeof(why), "%s", n->why);
    pthread_mutex_unlock(&n->mu);
    if (state == NET_READY)
        return 0;
    if (state == NET_STARTING)
        return kiln_error_set(err, KILN_ECANCELED, 0, "RUN canceled");
    return kiln_error_set(err, KILN_EIO, 0, "RUN network: %s", why);
}
