/* The RUN's private network (BLD_NET_PRIVATE): its own network namespace,
 * connected to the outside by pasta (Debian package passt), a user-mode
 * stack that turns the namespace's TCP, UDP and ICMP echo traffic into
 * ordinary sockets of an unprivileged process on the host.
 *
 * Builder side: finding pasta, the RUN's /etc/resolv.conf, starting pasta
 * for one step once init's network namespace exists and stopping it when
 * the step ends.  Child side: (root) a network namespace owned by a user
 * namespace of "nobody", so that pasta can run as nobody and still enter
 * it; the egress filter init installs before the command runs.
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
 * tap device past that filter: pasta connects wherever a frame points. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/nsfs.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

int sbx_net_prepare(sbx_plan *p, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    p->pasta = malloc(PATH_MAX);
    if (p->pasta == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "malloc");
    if (!sbx_net_find_pasta(p->pasta, PATH_MAX))
        return kiln_error_set(err, KILN_EPRECOND, 0,
                              "RUN needs network but pasta is not installed (Debian package "
                              "passt); install it, or use RUN --network=none");
    const char *src = s->resolv_conf ? s->resolv_conf : "/etc/resolv.conf";
    _cleanup_fclose_ FILE *in = fopen(src, "re");
    if (asprintf(&p->resolv, "%s/resolv.conf", p->work) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    _cleanup_fclose_ FILE *out = fopen(p->resolv, "we");
    if (out == NULL)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", p->resolv);
    /* The first resolver decides: on a blocked address (systemd-resolved's
     * 127.0.0.53, a link-local cloud resolver) the RUN asks SBX_NET_DNS,
     * which pasta forwards to it; otherwise the usable resolvers are kept
     * as they are. */
    char line[1024], addr[256];
    bool first = true;
    while (in && fgets(line, sizeof(line), in)) {
        if (sscanf(line, " nameserver %255s", addr) != 1) {
            fputs(line, out);
            continue;
        }
        if (first && blocked_addr(addr)) {
            p->dns_forward = strdup(addr);
            if (p->dns_forward == NULL)
                return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strdup");
            p->dns_forward[strcspn(p->dns_forward, "%")] = '\0';
            fprintf(out, "nameserver %s\n", SBX_NET_DNS);
        } else if (!p->dns_forward && !blocked_addr(addr)) {
            fputs(line, out);
        }
        first = false;
    }
    if (fflush(out) != 0)
        return kiln_error_set(err, KILN_EIO, errno, "write %s", p->resolv);
    return 0;
}

/* ---- starting and stopping pasta -------------------------------------- */

static void pasta_log(const sbx_plan *p, char *out, size_t n)
{
    out[0] = '\0';
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/pasta.log", p->work);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    char line[512];
    size_t len = 0;
    while (f && fgets(line, sizeof(line), f) && len + 2 < n) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0' || strstr(line, "syslog"))
            continue; /* "Failed to send … bytes to syslog" */
        len += (size_t)snprintf(out + len, n - len, "%s%s", len ? "; " : "", line);
    }
    if (len == 0)
        snprintf(out, n, "no message");
}

/* In the forked child, before exec: only system calls. */
static _Noreturn void pasta_exec(const sbx_plan *p, char *const *argv, int nsfd, int usfd, int pidw,
                                 int logfd)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != p->parent)
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
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(logfd, 2) < 0 ||
        dup2(nsfd, 3) < 0 || dup2(usfd, 4) < 0 || dup2(pidw, 5) < 0)
        _exit(1);
    syscall(SYS_close_range, 6, ~0U, 0);
    if (!p->rootless) {
        /* pasta drops to nobody before it opens /dev/net/tun, which is
         * root's alone where no udev rule made it 0666, and absent from a
         * container's /dev: give this process a /dev of its own. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            sbx_net_own_dev() < 0)
            _exit(1);
    }
    execv(p->pasta, argv);
    _exit(127);
}

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

int sbx_net_start(sbx_plan *p, pid_t init, kiln_error **err)
{
    char nspath[64], log[PATH_MAX];
    snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)init);
    snprintf(log, sizeof(log), "%s/pasta.log", p->work);
    _cleanup_close_ int nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "open %s", nspath);
    /* The user namespace owning the RUN's network namespace: pasta enters
     * both, and needs no privilege on the host. */
    _cleanup_close_ int usfd = ioctl(nsfd, NS_GET_USERNS);
    if (usfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "owner of the RUN's network namespace");
    _cleanup_close_ int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", log);
    /* pasta writes its PID to /proc/self/fd/5 once the namespace is
     * configured: a pipe it can reopen, so it is nobody's when pasta is. */
    int pr[2];
    if (pipe2(pr, O_CLOEXEC) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "pipe");
    _cleanup_close_ int pid_r = pr[0];
    _cleanup_close_ int pid_w = pr[1];
    if (!p->rootless && fchown(pid_w, SBX_NET_NOBODY, SBX_NET_NOBODY) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "chown pipe");
    const char *argv[40];
    size_t n = 0;
    argv[n++] = "pasta";
    argv[n++] = "--foreground";
    argv[n++] = "--quiet";
    argv[n++] = "--config-net";
    argv[n++] = "--no-map-gw";
    /* no port forwarding in either direction */
    argv[n++] = "--tcp-ports";
    argv[n++] = "none";
    argv[n++] = "--udp-ports";
    argv[n++] = "none";
    argv[n++] = "--tcp-ns";
    argv[n++] = "none";
    argv[n++] = "--udp-ns";
    argv[n++] = "none";
    argv[n++] = "--no-netns-quit";
    argv[n++] = "--no-dhcp";
    argv[n++] = "--no-dhcpv6";
    if (p->dns_forward) {
        argv[n++] = "--dns";
        argv[n++] = p->dns_forward;
        argv[n++] = "--dns-forward";
        argv[n++] = SBX_NET_DNS;
    }
    if (!p->rootless) {
        argv[n++] = "--runas";
        argv[n++] = SBX_NET_NOBODY_STR ":" SBX_NET_NOBODY_STR;
    }
    argv[n++] = "--userns";
    argv[n++] = "/proc/self/fd/4";
    argv[n++] = "--netns";
    argv[n++] = "/proc/self/fd/3";
    argv[n++] = "--pid";
    argv[n++] = "/proc/self/fd/5";
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fork pasta");
    if (pid == 0)
        pasta_exec(p, (char *const *)argv, nsfd, usfd, pid_w, logfd);
    p->pasta_pid = pid;
    close(pid_w);
    pid_w = -1;
    _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pf[2] = {{pid_r, POLLIN, 0}, {pidfd, POLLIN, 0}};
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= PASTA_READY_MS)
            break;
        int r = poll(pf, pidfd >= 0 ? 2 : 1, (int)(PASTA_READY_MS - el));
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0 && (pf[0].revents & POLLIN)) {
            char buf[16];
            if (read(pid_r, buf, sizeof(buf)) > 0)
                return 0;
        }
        if (r <= 0 || (pf[1].revents & POLLIN) || (pf[0].revents & POLLHUP))
            break;
    }
    sbx_net_stop(p);
    char msg[512];
    pasta_log(p, msg, sizeof(msg));
    return kiln_error_set(err, KILN_EIO, 0,
                          "RUN network: pasta could not set up the step's network: %s", msg);
}

void sbx_net_stop(sbx_plan *p)
{
    if (p->pasta_pid <= 0)
        return;
    kill(p->pasta_pid, SIGKILL); /* our unreaped child: the pid is still pasta's */
    while (waitpid(p->pasta_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    p->pasta_pid = 0;
}

/* ---- child side: the namespace ---------------------------------------- */

static void write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, data, strlen(data));
        close(fd);
    }
}

int sbx_net_join_owned(void)
{
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0)
        return -1;
    pid_t h = fork();
    if (h < 0)
        return -1;
    if (h == 0) {
        /* A user namespace created by nobody, owning a new network
         * namespace: pasta, running as nobody, can enter both. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(sync[0]);
        if (setgroups(0, NULL) < 0 || setresgid(SBX_NET_NOBODY, SBX_NET_NOBODY, SBX_NET_NOBODY) ||
            setresuid(SBX_NET_NOBODY, SBX_NET_NOBODY, SBX_NET_NOBODY) ||
            unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
            _exit(1);
        prctl(PR_SET_DUMPABLE, 1);
        write_file("/proc/self/setgroups", "deny");
        write_file("/proc/self/uid_map", "0 " SBX_NET_NOBODY_STR " 1\n");
        write_file("/proc/self/gid_map", "0 " SBX_NET_NOBODY_STR " 1\n");
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

/* ---- child side: the egress filter (nftables over netlink) ------------ */

typedef struct nlb {
    char *buf;
    size_t len, cap;
    bool overflow;
} nlb;

static void *nl_put(nlb *b, size_t n)
{
    size_t al = NLMSG_ALIGN(n);
    if (b->len + al > b->cap) {
        b->overflow = true;
        return NULL;
    }
    void *p = b->buf + b->len;
    memset(p, 0, al);
    b->len += al;
    return p;
}

static size_t nl_msg(nlb *b, uint16_t type, uint16_t flags, uint32_t seq, uint16_t res)
{
    size_t at = b->len;
    struct nlmsghdr *h = nl_put(b, NLMSG_HDRLEN);
    struct nfgenmsg *g = nl_put(b, sizeof(struct nfgenmsg));
    if (h == NULL || g == NULL)
        return at;
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | flags;
    h->nlmsg_seq = seq;
    g->nfgen_family = NFPROTO_INET;
    g->version = NFNETLINK_V0;
    g->res_id = htons(res);
    return at;
}

static void nl_msg_end(nlb *b, size_t at)
{
    if (!b->overflow)
        ((struct nlmsghdr *)(b->buf + at))->nlmsg_len = (uint32_t)(b->len - at);
}

static void nl_attr(nlb *b, uint16_t type, const void *data, size_t n)
{
    struct nlattr *a = nl_put(b, NLA_HDRLEN + n);
    if (a == NULL)
        return;
    a->nla_type = type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + n);
    memcpy((char *)a + NLA_HDRLEN, data, n);
}

static void nl_u32(nlb *b, uint16_t type, uint32_t host)
{
    uint32_t be = htonl(host);
    nl_attr(b, type, &be, sizeof(be));
}

static void nl_str(nlb *b, uint16_t type, const char *s)
{
    nl_attr(b, type, s, strlen(s) + 1);
}

static size_t nl_nest(nlb *b, uint16_t type)
{
    size_t at = b->len;
    struct nlattr *a = nl_put(b, NLA_HDRLEN);
    if (a)
        a->nla_type = type | NLA_F_NESTED;
    return at;
}

static void nl_nest_end(nlb *b, size_t at)
{
    if (!b->overflow)
        ((struct nlattr *)(b->buf + at))->nla_len = (uint16_t)(b->len - at);
}

/* One expression of a rule: name and its NFTA_EXPR_DATA attributes. */
static size_t expr_begin(nlb *b, const char *name)
{
    size_t el = nl_nest(b, NFTA_LIST_ELEM);
    nl_str(b, NFTA_EXPR_NAME, name);
    nl_nest(b, NFTA_EXPR_DATA);
    return el;
}

static void expr_end(nlb *b, size_t el)
{
    /* the data nest is the second attribute after the name */
    struct nlattr *name = (struct nlattr *)(b->buf + el + NLA_HDRLEN);
    size_t data = el + NLA_HDRLEN + NLA_ALIGN(name->nla_len);
    nl_nest_end(b, data);
    nl_nest_end(b, el);
}

static void e_meta(nlb *b, uint32_t key)
{
    size_t e = expr_begin(b, "meta");
    nl_u32(b, NFTA_META_DREG, NFT_REG_1);
    nl_u32(b, NFTA_META_KEY, key);
    expr_end(b, e);
}

static void e_payload(nlb *b, uint32_t base, uint32_t off, uint32_t len)
{
    size_t e = expr_begin(b, "payload");
    nl_u32(b, NFTA_PAYLOAD_DREG, NFT_REG_1);
    nl_u32(b, NFTA_PAYLOAD_BASE, base);
    nl_u32(b, NFTA_PAYLOAD_OFFSET, off);
    nl_u32(b, NFTA_PAYLOAD_LEN, len);
    expr_end(b, e);
}

static void e_cmp(nlb *b, uint32_t op, const void *v, size_t n)
{
    size_t e = expr_begin(b, "cmp");
    nl_u32(b, NFTA_CMP_SREG, NFT_REG_1);
    nl_u32(b, NFTA_CMP_OP, op);
    size_t d = nl_nest(b, NFTA_CMP_DATA);
    nl_attr(b, NFTA_DATA_VALUE, v, n);
    nl_nest_end(b, d);
    expr_end(b, e);
}

static void e_mask(nlb *b, const void *mask, size_t n)
{
    static const unsigned char zero[16];
    size_t e = expr_begin(b, "bitwise");
    nl_u32(b, NFTA_BITWISE_SREG, NFT_REG_1);
    nl_u32(b, NFTA_BITWISE_DREG, NFT_REG_1);
    nl_u32(b, NFTA_BITWISE_LEN, (uint32_t)n);
    size_t d = nl_nest(b, NFTA_BITWISE_MASK);
    nl_attr(b, NFTA_DATA_VALUE, mask, n);
    nl_nest_end(b, d);
    d = nl_nest(b, NFTA_BITWISE_XOR);
    nl_attr(b, NFTA_DATA_VALUE, zero, n);
    nl_nest_end(b, d);
    expr_end(b, e);
}

static void e_verdict(nlb *b, bool accept)
{
    size_t e;
    if (accept) {
        e = expr_begin(b, "immediate");
        nl_u32(b, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        size_t d = nl_nest(b, NFTA_IMMEDIATE_DATA);
        size_t v = nl_nest(b, NFTA_DATA_VERDICT);
        nl_u32(b, NFTA_VERDICT_CODE, NF_ACCEPT);
        nl_nest_end(b, v);
        nl_nest_end(b, d);
    } else {
        /* an immediate error for the caller, not a silent timeout */
        e = expr_begin(b, "reject");
        nl_u32(b, NFTA_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
        uint8_t code = NFT_REJECT_ICMPX_ADMIN_PROHIBITED;
        nl_attr(b, NFTA_REJECT_ICMP_CODE, &code, 1);
    }
    expr_end(b, e);
}

typedef struct match {
    uint8_t nfproto;
    const void *addr, *mask; /* destination address and prefix mask */
    size_t alen;
    bool not_lo;      /* only when leaving by another device than lo */
    int l4proto;      /* -1: any */
    bool l4proto_not; /* l4proto is excluded rather than required */
    int dport;        /* -1: any */
    bool accept;
} match;

static void add_rule(nlb *b, uint32_t seq, const match *m)
{
    size_t msg = nl_msg(b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
                        NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, seq, 0);
    nl_str(b, NFTA_RULE_TABLE, "kiln");
    nl_str(b, NFTA_RULE_CHAIN, "out");
    size_t ex = nl_nest(b, NFTA_RULE_EXPRESSIONS);
    e_meta(b, NFT_META_NFPROTO);
    e_cmp(b, NFT_CMP_EQ, &m->nfproto, 1);
    e_payload(b, NFT_PAYLOAD_NETWORK_HEADER, m->nfproto == NFPROTO_IPV4 ? 16 : 24,
              (uint32_t)m->alen);
    e_mask(b, m->mask, m->alen);
    e_cmp(b, NFT_CMP_EQ, m->addr, m->alen);
    if (m->not_lo) {
        uint32_t lo = 1; /* the loopback device's index in every namespace */
        e_meta(b, NFT_META_OIF);
        e_cmp(b, NFT_CMP_NEQ, &lo, sizeof(lo));
    }
    if (m->l4proto >= 0) {
        uint8_t pr = (uint8_t)m->l4proto;
        e_meta(b, NFT_META_L4PROTO);
        e_cmp(b, m->l4proto_not ? NFT_CMP_NEQ : NFT_CMP_EQ, &pr, 1);
    }
    if (m->dport >= 0) {
        uint16_t port = htons((uint16_t)m->dport);
        e_payload(b, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
        e_cmp(b, NFT_CMP_EQ, &port, 2);
    }
    e_verdict(b, m->accept);
    nl_nest_end(b, ex);
    nl_msg_end(b, msg);
}

int sbx_net_filter(bool dns_forward)
{
    static const unsigned char v4_127[4] = {127, 0, 0, 0}, v4_m8[4] = {255, 0, 0, 0},
                               v4_ll[4] = {169, 254, 0, 0}, v4_m16[4] = {255, 255, 0, 0},
                               v4_m32[4] = {255, 255, 255, 255}, v6_lo[16] = {[15] = 1},
                               v6_ll[16] = {0xfe, 0x80}, v6_m10[16] = {0xff, 0xc0},
                               v6_m128[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                              0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    struct in_addr dns;
    inet_pton(AF_INET, SBX_NET_DNS, &dns);
    char mem[8192];
    nlb b = {mem, 0, sizeof(mem), false};
    uint32_t seq = (uint32_t)time(NULL);
    size_t m = nl_msg(&b, NFNL_MSG_BATCH_BEGIN, 0, seq++, NFNL_SUBSYS_NFTABLES);
    nl_msg_end(&b, m);
    m = nl_msg(&b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, seq++,
               0);
    nl_str(&b, NFTA_TABLE_NAME, "kiln");
    nl_msg_end(&b, m);
    m = nl_msg(&b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, seq++,
               0);
    nl_str(&b, NFTA_CHAIN_TABLE, "kiln");
    nl_str(&b, NFTA_CHAIN_NAME, "out");
    size_t hook = nl_nest(&b, NFTA_CHAIN_HOOK);
    nl_u32(&b, NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_OUT);
    nl_u32(&b, NFTA_HOOK_PRIORITY, 0);
    nl_nest_end(&b, hook);
    nl_u32(&b, NFTA_CHAIN_POLICY, NF_ACCEPT);
    nl_str(&b, NFTA_CHAIN_TYPE, "filter");
    nl_msg_end(&b, m);
    match rules[] = {
        /* pasta's DNS forwarding address: UDP port 53 only */
        {NFPROTO_IPV4, &dns, v4_m32, 4, false, IPPROTO_UDP, false, 53, true},
        {NFPROTO_IPV4, v4_ll, v4_m16, 4, false, -1, false, -1, false},
        {NFPROTO_IPV4, v4_127, v4_m8, 4, true, -1, false, -1, false},
        {NFPROTO_IPV6, v6_lo, v6_m128, 16, true, -1, false, -1, false},
        /* neighbour discovery towards a link-local gateway stays possible */
        {NFPROTO_IPV6, v6_ll, v6_m10, 16, false, IPPROTO_ICMPV6, true, -1, false},
    };
    for (size_t i = dns_forward ? 0 : 1; i < KILN_ARRAY_SIZE(rules); i++)
        add_rule(&b, seq++, &rules[i]);
    m = nl_msg(&b, NFNL_MSG_BATCH_END, 0, seq++, NFNL_SUBSYS_NFTABLES);
    nl_msg_end(&b, m);
    if (b.overflow) {
        errno = ENOBUFS;
        return -1;
    }
    _cleanup_close_ int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (s < 0 || sendto(s, b.buf, b.len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    /* One ack per table, chain and rule; the first error wins. */
    size_t want = 2 + KILN_ARRAY_SIZE(rules) - (dns_forward ? 0 : 1);
    char rbuf[8192];
    while (want > 0) {
        struct pollfd pf = {s, POLLIN, 0};
        if (poll(&pf, 1, 5000) <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        ssize_t n = recv(s, rbuf, sizeof(rbuf), 0);
        if (n < 0)
            return -1;
        for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type != NLMSG_ERROR)
                continue;
            const struct nlmsgerr *e = NLMSG_DATA(h);
            if (e->error != 0) {
                errno = -e->error;
                return -1;
            }
            want--;
        }
    }
    return 0;
}
