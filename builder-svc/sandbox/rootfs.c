/* The sandbox's root filesystem, built by init inside the step's own mount
 * namespace: overlay (or the prepared copy), /proc, a minimal /dev, read-only
 * /sys, /etc/hosts and /etc/resolv.conf, the RUN mounts, then pivot_root.
 *
 * Every mount here is nodev and nosuid except the /dev tmpfs (which must hold
 * the device nodes made below) and its devpts; bind mounts are made
 * read-only, nodev and nosuid recursively (sbx_lock_mount).
 *
 * Mount points inside the rootfs are resolved with sbx_open_in_root() and
 * mounted on through /proc/self/fd/N, so an image symlink such as
 * /proc -> /host can never place a mount outside the rootfs.  Mount points
 * that had to be created are reported as stubs and removed from the diff
 * afterwards. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cleanup.h"
#include "sbx_run.h"

#define FAIL(p, what, ...)                                                                         \
    (sbx_report((p), SBX_MSG_ERROR, KILN_EIO, errno, 0, what, ##__VA_ARGS__), -1)

static void fdpath(char *buf, size_t n, int fd)
{
    snprintf(buf, n, "/proc/self/fd/%d", fd);
}

typedef struct stub_ctx {
    sbx_plan *p;
} stub_ctx;

/* Keeps a directory's times across the creation of a mount point in it, so
 * the parent carries no trace of the stub in the diff. */
static void restore_times(int dirfd, const struct stat *st)
{
    char path[64];
    fdpath(path, sizeof(path), dirfd);
    utimensat(AT_FDCWD, path, (struct timespec[]){st->st_atim, st->st_mtim}, 0);
}

/* Reports a created mount point by its real path in the rootfs (symlinks
 * of the image resolved), which is where the builder finds it afterwards. */
static void report_stub(sbx_plan *p, int parentfd, const char *name)
{
    char link[64], real[PATH_MAX];
    int fd = openat(parentfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    fdpath(link, sizeof(link), fd);
    ssize_t n = fd >= 0 ? readlink(link, real, sizeof(real) - 1) : -1;
    if (fd >= 0)
        close(fd);
    size_t rl = strlen(p->rootfs);
    if (n <= (ssize_t)rl || strncmp(real, p->rootfs, rl) != 0 || real[rl] != '/')
        return;
    real[n] = '\0';
    sbx_report(p, SBX_MSG_STUB, 0, 0, 0, "%s", real + rl + 1);
}

static int stub_mkdir(int parentfd, const char *name, const char *rel, void *ud, kiln_error **err)
{
    stub_ctx *c = ud;
    struct stat st;
    bool have = fstat(parentfd, &st) == 0;
    if (mkdirat(parentfd, name, 0755) < 0 && errno != EEXIST)
        return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", rel);
    if (have)
        restore_times(parentfd, &st);
    report_stub(c->p, parentfd, name);
    return 0;
}

int sbx_mount_point(sbx_plan *p, int rootfd, const char *rel, bool dir)
{
    int fd = sbx_open_in_root(rootfd, rel, O_PATH, NULL);
    if (fd >= 0 || errno != ENOENT)
        return fd >= 0 ? fd : FAIL(p, "mount point /%s", rel);
    stub_ctx c = {p};
    const char *leaf;
    kiln_error *err = NULL;
    _cleanup_close_ int parent = sbx_open_parent(rootfd, rel, true, stub_mkdir, &c, &leaf, &err);
    if (parent < 0) {
        sbx_report(p, SBX_MSG_ERROR, KILN_EINVAL, err ? err->sys_errno : 0, 0,
                   "mount point /%s: %s", rel, err ? err->msg : "?");
        kiln_error_free(&err);
        return -1;
    }
    struct stat pst;
    bool have = fstat(parent, &pst) == 0;
    int r = dir ? mkdirat(parent, leaf, 0755)
                : openat(parent, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (r < 0)
        return FAIL(p, "create mount point /%s (a dangling symlink?)", rel);
    if (!dir)
        close(r);
    if (have)
        restore_times(parent, &pst);
    report_stub(p, parent, leaf);
    fd = openat(parent, leaf, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    return fd >= 0 ? fd : FAIL(p, "open mount point /%s", rel);
}

/* Flags a user namespace inherited locked must be repeated on a remount. */
static unsigned long locked_flags(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return 0;
    return (sv.f_flag & ST_NOSUID ? MS_NOSUID : 0) | (sv.f_flag & ST_NODEV ? MS_NODEV : 0) |
           (sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0) | (sv.f_flag & ST_RDONLY ? MS_RDONLY : 0);
}

/* mountinfo escapes blanks and backslashes as \ooo. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Kernels before mount_setattr (5.12): remount the mount at real and each
 * mount below it, as /proc/self/mountinfo lists them. */
static int lock_each(const char *real, unsigned long add)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -1;
    size_t rl = strlen(real);
    char *line = NULL;
    size_t cap = 0;
    int r = 0;
    while (getline(&line, &cap, f) > 0) {
        /* id parent maj:min root mount-point … */
        char *save = NULL, *mp = NULL;
        char *t = strtok_r(line, " ", &save);
        for (int i = 0; t && i < 4; i++)
            t = strtok_r(NULL, " ", &save);
        mp = t;
        if (mp == NULL)
            continue;
        unescape(mp);
        if (strncmp(mp, real, rl) != 0 || (mp[rl] != '\0' && mp[rl] != '/' && rl > 1))
            continue;
        if (mount(NULL, mp, NULL, MS_REMOUNT | MS_BIND | add | locked_flags(mp), NULL) < 0)
            r = -1;
    }
    free(line);
    fclose(f);
    return r;
}

bool sbx_force_remount_each;

int sbx_lock_mount(const char *path, bool ro)
{
    struct mount_attr a = {.attr_set =
                               MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (ro ? MOUNT_ATTR_RDONLY : 0)};
    if (!sbx_force_remount_each) {
        if (mount_setattr(AT_FDCWD, path, AT_RECURSIVE, &a, sizeof(a)) == 0)
            return 0;
        if (errno != ENOSYS)
            return -1;
    }
    char real[PATH_MAX];
    ssize_t n = readlink(path, real, sizeof(real) - 1);
    if (n > 0)
        real[n] = '\0';
    else if (realpath(path, real) == NULL)
        return -1;
    return lock_each(real, MS_NOSUID | MS_NODEV | (ro ? MS_RDONLY : 0));
}

static int mount_at(sbx_plan *p, int rootfd, const char *rel, bool dir, const char *src,
                    const char *type, unsigned long flags, const char *data)
{
    _cleanup_close_ int fd = sbx_mount_point(p, rootfd, rel, dir);
    if (fd < 0)
        return -1;
    char path[64];
    fdpath(path, sizeof(path), fd);
    if (mount(src, path, type, flags, data) < 0)
        return FAIL(p, "mount %s on /%s", type ? type : src, rel);
    return 0;
}

static int make_dev(sbx_plan *p, int rootfd)
{
    static const struct {
        const char *name;
        unsigned maj, min;
    } devs[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    if (mount_at(p, rootfd, "dev", true, "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME,
                 "mode=755,size=65536k") < 0)
        return -1;
    _cleanup_close_ int dev = sbx_open_in_root(rootfd, "dev", O_RDONLY | O_DIRECTORY, NULL);
    if (dev < 0)
        return FAIL(p, "open /dev");
    for (size_t i = 0; i < KILN_ARRAY_SIZE(devs); i++) {
        if (!p->rootless) {
            if (mknodat(dev, devs[i].name, S_IFCHR | 0666, makedev(devs[i].maj, devs[i].min)) < 0 ||
                fchmodat(dev, devs[i].name, 0666, 0) < 0)
                return FAIL(p, "mknod /dev/%s", devs[i].name);
            continue;
        }
        /* A user namespace cannot create device nodes: bind the host's. */
        char host[64], dst[128];
        snprintf(host, sizeof(host), "/dev/%s", devs[i].name);
        int fd = openat(dev, devs[i].name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0)
            return FAIL(p, "create /dev/%s", devs[i].name);
        close(fd);
        snprintf(dst, sizeof(dst), "/proc/self/fd/%d/%s", dev, devs[i].name);
        if (mount(host, dst, NULL, MS_BIND, NULL) < 0)
            return FAIL(p, "bind %s", host);
    }
    static const char *const links[][2] = {{"/proc/self/fd", "fd"},
                                           {"/proc/self/fd/0", "stdin"},
                                           {"/proc/self/fd/1", "stdout"},
                                           {"/proc/self/fd/2", "stderr"},
                                           {"pts/ptmx", "ptmx"}};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(links); i++)
        if (symlinkat(links[i][0], dev, links[i][1]) < 0)
            return FAIL(p, "symlink /dev/%s", links[i][1]);
    if (mount_at(p, rootfd, "dev/pts", true, "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620") < 0)
        return -1;
    /* Docker's 64 MiB unless the build asked (--shm-size); its pages count
     * against the step's memory cgroup like any other. */
    char shm[64];
    snprintf(shm, sizeof(shm), "mode=1777,size=%llu",
             (unsigned long long)(p->spec->shm_bytes ? p->spec->shm_bytes : SBX_SHM_DEFAULT));
    if (mount_at(p, rootfd, "dev/shm", true, "shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 shm) < 0)
        return -1;
    return 0;
}

static int mount_sys(sbx_plan *p, int rootfd)
{
    _cleanup_close_ int fd = sbx_mount_point(p, rootfd, "sys", true);
    if (fd < 0)
        return -1;
    char path[64];
    fdpath(path, sizeof(path), fd);
    unsigned long fl = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if (mount("sysfs", path, "sysfs", fl, NULL) == 0)
        return 0;
    /* sysfs cannot be mounted from a user namespace that does not own the
     * network namespace: bind the host's, read-only. */
    if (mount("/sys", path, NULL, MS_BIND | MS_REC, NULL) < 0 || sbx_lock_mount(path, true) < 0)
        return FAIL(p, "mount /sys");
    return 0;
}

static int bind_etc(sbx_plan *p, int rootfd, const char *rel, const char *src)
{
    int fd = sbx_open_in_root(rootfd, rel, O_PATH, NULL);
    if (fd < 0 && errno != ENOENT)
        return 0; /* e.g. a dangling symlink to /run/…: leave the image's choice alone */
    if (fd >= 0)
        close(fd);
    if (mount_at(p, rootfd, rel, false, src, NULL, MS_BIND, NULL) < 0)
        return -1;
    /* The file the bind put there, not the image's one it covers. */
    _cleanup_close_ int top = sbx_open_in_root(rootfd, rel, O_PATH, NULL);
    char path[64];
    fdpath(path, sizeof(path), top);
    if (top < 0 || sbx_lock_mount(path, false) < 0)
        return FAIL(p, "remount /%s", rel);
    return 0;
}

/* Read-only or hidden parts of /proc, as container runtimes do: kernel
 * knobs must not be changed from a build step. */
static void protect_proc(void)
{
    static const char *const ro[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"};
    static const char *const hide[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(ro); i++)
        if (mount(ro[i], ro[i], NULL, MS_BIND | MS_REC, NULL) == 0)
            sbx_lock_mount(ro[i], true);
    for (size_t i = 0; i < KILN_ARRAY_SIZE(hide); i++)
        mount("/dev/null", hide[i], NULL, MS_BIND, NULL);
}

int sbx_rootfs_setup(sbx_plan *p)
{
    /* First of all: no mount event may propagate between the host and this
     * namespace, in either direction (the host's / is usually shared). */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return FAIL(p, "make mounts private%s",
                    sbx_root_is_mount_point() ? "" : " (/ is not a mount point: a plain chroot?)");
    if (p->overlay) {
        /* lowerdir entries are short names relative to the work dir: the
         * options of a deep stack must fit in one page. */
        if (chdir(p->work) < 0)
            return FAIL(p, "chdir %s", p->work);
        /* nodev: device nodes a layer carries stay in the image but open
         * nothing; nosuid: no set-id or file-capability gain inside. */
        if (mount("overlay", p->rootfs, "overlay", MS_NOSUID | MS_NODEV, p->ovl_opts) < 0) {
            sbx_report(p, SBX_MSG_ERROR, KILN_EUNAVAIL, errno, 0, "mount overlay on %s", p->rootfs);
            return -1;
        }
    } else if (mount(p->rootfs, p->rootfs, NULL, MS_BIND | MS_REC, NULL) < 0 ||
               sbx_lock_mount(p->rootfs, false) < 0) {
        /* pivot_root needs the new root to be a mount point. */
        return FAIL(p, "bind %s", p->rootfs);
    }
    _cleanup_close_ int rootfd = open(p->rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return FAIL(p, "open %s", p->rootfs);
    /* /proc belongs to the new PID namespace: mounted by init, which is in it. */
    if (mount_at(p, rootfd, "proc", true, "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) <
            0 ||
        make_dev(p, rootfd) < 0 || mount_sys(p, rootfd) < 0)
        return -1;
    if (p->hosts && bind_etc(p, rootfd, "etc/hosts", p->hosts) < 0)
        return -1;
    if (p->resolv && bind_etc(p, rootfd, "etc/resolv.conf", p->resolv) < 0)
        return -1;
    /* RUN mounts last: a cache or bind target may lie below /dev or /etc. */
    if (sbx_mounts_apply(p, rootfd) < 0)
        return -1;

    /* pivot_root(".", ".") stacks the old root on top of the new one; the
     * lazy unmount then drops it, and with it every host path. */
    if (fchdir(rootfd) < 0)
        return FAIL(p, "chdir to rootfs");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return FAIL(p, "pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        return FAIL(p, "detach old root");
    if (chdir("/") < 0)
        return FAIL(p, "chdir /");
    protect_proc();
    return 0;
}

int sbx_loopback_up(void)
{
    _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}
