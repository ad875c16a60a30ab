/* Preflight: what the sandbox can do on this host, probed for real (forked
 * children create the namespaces and mount an overlay in a private mount
 * namespace) rather than guessed from kernel versions.  The result names the
 * mode in use and exactly which prerequisite is missing. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_run.h"

/* Runs fn in a forked child; returns 0 if it succeeded, else the errno it
 * reported through its exit status. */
static int in_child(int (*fn)(const void *), const void *arg)
{
    pid_t pid = fork();
    if (pid < 0)
        return errno;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int e = fn(arg);
        _exit(e > 0 && e < 255 ? e : (e ? 255 : 0));
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return errno;
    return WIFEXITED(st) ? WEXITSTATUS(st) : EINTR;
}

static int try_userns(const void *arg)
{
    return unshare(CLONE_NEWUSER) < 0 ? errno : 0;
}

static int try_namespaces(const void *arg)
{
    const bool *rootless = arg;
    if (*rootless && unshare(CLONE_NEWUSER) < 0)
        return errno;
    int fl = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
    return unshare(fl) < 0 ? errno : 0;
}

/* True when "/" is the root of a mount.  In a plain chroot it is not: its
 * mounts cannot be made private (EINVAL) nor pivot_root'ed from, and making
 * it a mount point here (a bind of / onto itself) would propagate to the
 * host's mount namespace when the mount enclosing the chroot is shared. */
bool sbx_root_is_mount_point(void)
{
    struct statx stx;
    if (statx(AT_FDCWD, "/", AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) == 0 &&
        (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
        return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
    /* Kernels before 5.8: mountinfo lists only mounts reachable from our
     * root, and one of them is mounted on "/" when it is a mount point. */
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return true; /* cannot tell: let the sandbox try */
    char line[4096];
    while (fgets(line, sizeof(line), f) != NULL) {
        char mp[4096];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && strcmp(mp, "/") == 0)
            return true;
    }
    return false;
}

static int write_proc(const char *file, const char *data)
{
    int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, data, strlen(data));
    close(fd);
    return n == (ssize_t)strlen(data) ? 0 : -1;
}

static int try_overlay(const void *arg)
{
    const char *dir = arg;
    bool rootless = geteuid() != 0;
    if (rootless) {
        /* As the sandbox does it: root of a new user namespace. */
        uid_t uid = geteuid();
        gid_t gid = getegid();
        char map[64];
        if (unshare(CLONE_NEWUSER) < 0)
            return errno;
        snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
        if (write_proc("/proc/self/setgroups", "deny") < 0 ||
            write_proc("/proc/self/uid_map", map) < 0)
            return EPERM;
        snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
        if (write_proc("/proc/self/gid_map", map) < 0)
            return EPERM;
    }
    if (unshare(CLONE_NEWNS) < 0)
        return errno;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || chdir(dir) < 0)
        return errno;
    const char *opts = rootless
                           ? "lowerdir=l,upperdir=u,workdir=w,redirect_dir=nofollow,metacopy=off,"
                             "index=off,userxattr"
                           : "lowerdir=l,upperdir=u,workdir=w,redirect_dir=nofollow,metacopy=off,"
                             "index=off";
    if (mount("overlay", "m", "overlay", 0, opts) < 0)
        return errno;
    return 0; /* the namespace and its mount die with this child */
}

static void add_missing(bld_preflight_info *pf, const char *what, int e);

static int try_net_filter(const void *arg)
{
    const bool *rootless = arg;
    if (unshare(*rootless ? CLONE_NEWUSER | CLONE_NEWNET : CLONE_NEWNET) < 0)
        return errno;
    return sbx_net_filter(true) < 0 ? errno : 0;
}

/* As root, pasta gets a /dev of its own with a tun node (sbx_net_own_dev):
 * what matters is whether the kernel has the device and the device cgroup
 * lets us open it, not whether the host's /dev holds the node. */
static int try_tun(const void *arg)
{
    (void)arg;
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        sbx_net_own_dev() < 0)
        return errno ? errno : EIO;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return errno;
    close(fd);
    return 0;
}

/* The private network: pasta installed, the tun device there (and open to
 * the builder's user when rootless: pasta runs as that user), the egress
 * filter installable. */
static void probe_network(bld_preflight_info *out, bool rootless)
{
    char pasta[PATH_MAX], why[200] = "";
    struct stat st;
    int e = 0;
    if (!sbx_net_find_pasta(pasta, sizeof(pasta)))
        snprintf(why, sizeof(why), "pasta not found (install Debian package passt)");
    else if (rootless && (stat("/dev/net/tun", &st) < 0 || !S_ISCHR(st.st_mode)))
        snprintf(why, sizeof(why), "no /dev/net/tun (kernel module tun)");
    else if (!rootless && (e = in_child(try_tun, NULL)) != 0)
        snprintf(why, sizeof(why), "tun device (char 10:200, kernel module tun) not usable: %s",
                 strerror(e));
    else if (rootless && access("/dev/net/tun", R_OK | W_OK) < 0)
        snprintf(why, sizeof(why), "/dev/net/tun not open to this user (udev sets it 0666)");
    else if ((e = in_child(try_net_filter, &rootless)) != 0)
        snprintf(why, sizeof(why), "egress filter cannot be installed (nf_tables): %s",
                 strerror(e));
    out->net_private = why[0] == '\0';
    if (out->net_private)
        snprintf(out->network, sizeof(out->network),
                 "default: private (%.200s); none; host only with the network.host entitlement",
                 pasta);
    else
        snprintf(out->network, sizeof(out->network),
                 "none; host only with the network.host entitlement; private unavailable: %s", why);
    if (!out->net_private) {
        char m[sizeof(why) + 48];
        snprintf(m, sizeof(m), "private network (RUN with network fails): %s", why);
        add_missing(out, m, 0);
    }
}

static int try_seccomp(const void *arg)
{
    return sbx_seccomp_install() < 0 ? errno : 0;
}

int sbx_probe_overlay(const char *tmp_parent, int *why)
{
    _cleanup_free_ char *dir = NULL;
    *why = 0;
    if (asprintf(&dir, "%s/.ovl-probe-XXXXXX", tmp_parent) < 0 || mkdtemp(dir) == NULL) {
        *why = errno;
        return 0;
    }
    static const char *const sub[] = {"l", "u", "w", "m"};
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (size_t i = 0; dfd >= 0 && i < KILN_ARRAY_SIZE(sub); i++)
        mkdirat(dfd, sub[i], 0700);
    *why = in_child(try_overlay, dir);
    kiln_rm_rf(dir, NULL);
    return *why == 0;
}

static void add_missing(bld_preflight_info *pf, const char *what, int e)
{
    size_t n = strlen(pf->missing);
    snprintf(pf->missing + n, sizeof(pf->missing) - n, "%s%s%s%s", n ? "; " : "", what,
             e ? ": " : "", e ? strerror(e) : "");
}

int bld_preflight(bld_preflight_info *out, const char *data_dir, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    out->root = geteuid() == 0;
    bool rootless = !out->root;
    int e = in_child(try_userns, NULL);
    out->userns = e == 0;
    if (!out->userns)
        add_missing(out, out->root ? "user namespaces (not needed as root)" : "user namespaces", e);
    e = in_child(try_namespaces, &rootless);
    out->namespaces = e == 0;
    if (!out->namespaces)
        add_missing(out, "mount/PID/IPC/UTS/network namespaces", e);
    out->root_mount = sbx_root_is_mount_point();
    if (!out->root_mount)
        add_missing(out,
                    "/ as a mount point (it is not one here: a plain chroot?); enter the root as "
                    "a container runtime does (own mount namespace, pivot_root) or bind-mount "
                    "its directory onto itself before chroot",
                    0);

    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/sandbox", data_dir) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    int r = kiln_mkdir_p(dir, 0700, err);
    if (r < 0)
        return r;
    out->overlay = sbx_probe_overlay(dir, &e);
    if (!out->overlay)
        add_missing(out, "overlay mounts (copy mode in use)", e);
    out->openat2 = sbx_have_openat2();
    if (!out->openat2)
        add_missing(out, "openat2 RESOLVE_IN_ROOT (O_NOFOLLOW walk in use)", 0);
    int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    out->pidfd = pfd >= 0;
    if (pfd >= 0)
        close(pfd);
    else
        add_missing(out, "pidfd_open", errno);
    e = in_child(try_seccomp, NULL);
    out->seccomp = e == 0;
    if (!out->seccomp)
        add_missing(out, "seccomp filters (RUN runs unfiltered)", e);
    probe_network(out, rootless);
    sbx_cgroup_probe(out);
    if (!out->cgroup_memory)
        add_missing(out, "cgroup memory controller (no memory limits)", 0);
    if (!out->cgroup_pids)
        add_missing(out, "cgroup pids controller (no pid limits)", 0);
    if (!out->cgroup_devices)
        add_missing(out, "cgroup device control (v1 devices or v2 BPF; nodev mounts still apply)",
                    0);
    out->usable = out->namespaces && out->root_mount && (out->root || out->userns);
    snprintf(out->isolation, sizeof(out->isolation), "%s",
             !out->usable ? "none"
             : out->root  ? "root"
                          : "rootless");
    snprintf(out->rootfs_mode, sizeof(out->rootfs_mode), "%s", out->overlay ? "overlay" : "copy");
    return 0;
}

char *bld_preflight_json(const bld_preflight_info *pf)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddBoolToObject(o, "usable", pf->usable);
    cJSON_AddStringToObject(o, "isolation", pf->isolation);
    cJSON_AddStringToObject(o, "rootfs_mode", pf->rootfs_mode);
    cJSON_AddBoolToObject(o, "root", pf->root);
    cJSON_AddBoolToObject(o, "namespaces", pf->namespaces);
    cJSON_AddBoolToObject(o, "root_mount", pf->root_mount);
    cJSON_AddBoolToObject(o, "user_namespaces", pf->userns);
    cJSON_AddBoolToObject(o, "overlay", pf->overlay);
    cJSON_AddBoolToObject(o, "openat2", pf->openat2);
    cJSON_AddBoolToObject(o, "pidfd", pf->pidfd);
    cJSON_AddBoolToObject(o, "seccomp", pf->seccomp);
    cJSON_AddNumberToObject(o, "cgroup_version", pf->cgroup_version);
    cJSON_AddBoolToObject(o, "cgroup_memory", pf->cgroup_memory);
    cJSON_AddBoolToObject(o, "cgroup_pids", pf->cgroup_pids);
    cJSON_AddBoolToObject(o, "cgroup_devices", pf->cgroup_devices);
    cJSON_AddStringToObject(o, "cgroups", pf->cgroups);
    cJSON_AddBoolToObject(o, "network_private", pf->net_private);
    cJSON_AddStringToObject(o, "network", pf->network);
    cJSON_AddStringToObject(o, "missing", pf->missing);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
