/* kiln-probe: reports what a process inside the Kiln sandbox sees, one
 * "key=value" line per fact, for the privileged tests to assert on.
 *
 *   kiln-probe info            pid, ppid, hostname, uid/gid/groups, cwd, env,
 *                              mounts, network interfaces, visible pids
 *   kiln-probe tree[-links] DIR [EXCL…]
 *                              every entry below DIR, sorted, with type,
 *                              mode, owner, size, content hash, link target
 *                              (top-level names in EXCL skipped)
 *   kiln-probe exists PATH     exit 0 if PATH exists (lstat), else 1
 *   kiln-probe syscalls        errno of calls the sandbox filters (keyctl,
 *                              unshare, a namespace clone), 0 when allowed
 *   kiln-probe open PATH…      for each PATH, "PATH read=E write=E": the
 *                              errno of open(O_RDONLY) and open(O_WRONLY),
 *                              0 when it opened (nothing is read or written)
 *   kiln-probe connect ADDR PORT [DEV]
 *                              a TCP connect to the IPv4 ADDR:PORT (3 s at
 *                              most), the socket bound with SO_BINDTODEVICE
 *                              to DEV ("auto": the first device that is not
 *                              loopback); prints "connect=E dev=DEV" (E:
 *                              errno, 0 when connected); exit 0 connected,
 *                              1 not, 3 when the socket could not be set up
 *   kiln-probe ssh-agent …     the SSH agent at $SSH_AUTH_SOCK (probe_ssh.c)
 *
 * Statically linked so it runs in any rootfs. */
#include "probe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

static void print_file_lines(const char *key, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    while (f && fgets(line, sizeof(line), f))
        printf("%s=%s", key, line);
    if (f)
        fclose(f);
}

static int info(void)
{
    char buf[PATH_MAX];
    printf("pid=%d\nppid=%d\n", (int)getpid(), (int)getppid());
    if (gethostname(buf, sizeof(buf)) == 0)
        printf("hostname=%s\n", buf);
    printf("uid=%d\ngid=%d\neuid=%d\n", (int)getuid(), (int)getgid(), (int)geteuid());
    gid_t groups[256];
    int n = getgroups(256, groups);
    printf("groups=");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? "," : "", (int)groups[i]);
    printf("\n");
    if (getcwd(buf, sizeof(buf)))
        printf("cwd=%s\n", buf);
    for (char **e = environ; *e; e++)
        printf("env=%s\n", *e);
    print_file_lines("mount", "/proc/self/mountinfo");
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) == 0) {
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
            if (i->ifa_addr == NULL || i->ifa_addr->sa_family == AF_PACKET)
                printf("if=%s\n", i->ifa_name);
        freeifaddrs(ifa);
    }
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9')
            printf("proc=%s\n", de->d_name);
    if (d)
        closedir(d);
    return 0;
}

static int show_links;

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static uint64_t hash_file(int dfd, const char *name)
{
    uint64_t h = 1469598103934665603ULL;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW);
    unsigned char buf[65536];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++)
            h = (h ^ buf[i]) * 1099511628211ULL;
    if (fd >= 0)
        close(fd);
    return h;
}

static void walk(int dfd, const char *rel, char **excl, int nexcl)
{
    DIR *d = fdopendir(dup(dfd));
    if (d == NULL)
        return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof(char *));
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(char *), cmp);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "", names[i]);
        int skip = 0;
        for (int k = 0; !*rel && k < nexcl; k++)
            skip |= !strcmp(names[i], excl[k]);
        struct stat st;
        if (skip || fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
            free(names[i]);
            continue;
        }
        printf("%s %o %d:%d", path, (unsigned)st.st_mode, (int)st.st_uid, (int)st.st_gid);
        if (S_ISREG(st.st_mode) && show_links)
            printf(" links=%d", (int)st.st_nlink);
        if (S_ISREG(st.st_mode))
            printf(" size=%lld hash=%016llx mtime=%lld", (long long)st.st_size,
                   (unsigned long long)hash_file(dfd, names[i]), (long long)st.st_mtime);
        if (S_ISLNK(st.st_mode)) {
            char t[PATH_MAX];
            ssize_t l = readlinkat(dfd, names[i], t, sizeof(t) - 1);
            t[l > 0 ? l : 0] = '\0';
            printf(" -> %s", t);
        }
        if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
            printf(" dev=%u,%u", major(st.st_rdev), minor(st.st_rdev));
        printf("\n");
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (sub >= 0) {
                walk(sub, path, excl, nexcl);
                close(sub);
            }
        }
        free(names[i]);
    }
    free(names);
}

static int syscalls(void)
{
    errno = 0;
    long r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
    printf("keyctl=%d\n", r < 0 ? errno : 0);
    r = syscall(SYS_unshare, CLONE_NEWUSER);
    printf("unshare=%d\n", r < 0 ? errno : 0);
    r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (r == 0)
        _exit(0);
    printf("clone_newuser=%d\n", r < 0 ? errno : 0);
    r = syscall(SYS_getpid);
    printf("getpid=%d\n", r < 0 ? errno : 0);
    return 0;
}

/* The first network device that is not loopback, or "". */
static void first_device(char *out, size_t n)
{
    out[0] = '\0';
    struct if_nameindex *ifs = if_nameindex();
    for (struct if_nameindex *i = ifs; i && i->if_index; i++) {
        if (strcmp(i->if_name, "lo") != 0) {
            snprintf(out, n, "%s", i->if_name);
            break;
        }
    }
    if (ifs)
        if_freenameindex(ifs);
}

static int connect_dev(const char *addr, const char *port, const char *dev_arg)
{
    char dev[IF_NAMESIZE + 1] = "";
    if (dev_arg && strcmp(dev_arg, "auto") == 0)
        first_device(dev, sizeof(dev));
    else if (dev_arg)
        snprintf(dev, sizeof(dev), "%s", dev_arg);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        printf("setup=bad address %s\n", addr);
        return 3;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        printf("setup=socket errno %d\n", errno);
        return 3;
    }
    if (dev_arg &&
        (dev[0] == '\0' || setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, dev, strlen(dev)) < 0)) {
        printf("setup=SO_BINDTODEVICE %s errno %d\n", dev[0] ? dev : "(no device)", errno);
        return 3;
    }
    int e = 0;
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        e = errno;
        if (e == EINPROGRESS) {
            struct pollfd pf = {s, POLLOUT, 0};
            socklen_t len = sizeof(e);
            if (poll(&pf, 1, 3000) <= 0)
                e = ETIMEDOUT;
            else if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
                e = errno;
        }
    }
    close(s);
    printf("connect=%d dev=%s\n", e, dev[0] ? dev : "-");
    return e == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    if (argc >= 2 && !strcmp(argv[1], "info"))
        return info();
    if (argc >= 3 && (!strcmp(argv[1], "tree") || !strcmp(argv[1], "tree-links"))) {
        show_links = !strcmp(argv[1], "tree-links");
        int fd = open(argv[2], O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
            perror(argv[2]);
            return 1;
        }
        walk(fd, "", argv + 3, argc - 3);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "syscalls"))
        return syscalls();
    if (argc >= 3 && !strcmp(argv[1], "exists")) {
        struct stat st;
        return lstat(argv[2], &st) == 0 ? 0 : 1;
    }
    if (argc >= 3 && !strcmp(argv[1], "open")) {
        for (int i = 2; i < argc; i++) {
            int e[2], fl[2] = {O_RDONLY, O_WRONLY};
            for (int k = 0; k < 2; k++) {
                int fd = open(argv[i], fl[k] | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
                e[k] = fd < 0 ? errno : 0;
                if (fd >= 0)
                    close(fd);
            }
            printf("%s read=%d write=%d\n", argv[i], e[0], e[1]);
        }
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "connect"))
        return connect_dev(argv[2], argv[3], argc >= 5 ? argv[4] : NULL);
    if (argc >= 2 && !strcmp(argv[1], "ssh-agent"))
        return probe_ssh_agent(argc - 2, argv + 2);
    fprintf(stderr, "usage: kiln-probe info | tree DIR [EXCL...] | exists PATH | open PATH... | "
                    "connect ADDR PORT [DEV] | ssh-agent list|sign|send TYPE\n");
    return 2;
}
