/* sbx_run(): the builder side of one RUN step.  Prepares the work dir (short
 * lower-dir links, overlay options, /etc files, mounts, cgroup), forks the
 * monitor, then supervises: streams output line by line, enforces the
 * timeout and the cancel flag by killing init (the whole PID namespace goes
 * with it), and afterwards removes mount stubs from the diff, computes the
 * diff in copy mode and deletes the work dir. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cleanup.h"
#include "units.h"
#include "log.h"
#include "sbx_run.h"

#define OVL_OPTS_MAX 4095 /* the mount data page, minus its NUL */
#define MAX_STUBS    256

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int auto_overlay(const char *work_parent)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int cached = -1;
    pthread_mutex_lock(&mu);
    if (cached < 0) {
        int why = 0;
        cached = sbx_probe_overlay(work_parent, &why);
        if (!cached)
            kiln_warn("sandbox", "overlay unavailable (%s), using copy mode", strerror(why));
    }
    int r = cached;
    pthread_mutex_unlock(&mu);
    return r;
}

static int write_text(const char *path, const char *text, kiln_error **err)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || kiln_write_all(fd, text, strlen(text)) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "write %s", path);
    return 0;
}

/* lowerdir names: base-36 indexes, the shortest names that stay unique. */
static void short_name(char *out, size_t i)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[i % 36];
        i /= 36;
    } while (i);
    for (size_t k = 0; k < n; k++)
        out[k] = tmp[n - 1 - k];
    out[n] = '\0';
}

static int prepare_overlay(sbx_plan *p, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    _cleanup_free_ char *ldir = NULL;
    if (asprintf(&ldir, "%s/l", p->work) < 0 || mkdir(ldir, 0700) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s/l", p->work);
    kiln_buf b;
    kiln_buf_init(&b, OVL_OPTS_MAX + 1);
    int r = kiln_buf_puts(&b, "lowerdir=", err);
    if (r == 0 && s->n_lowers == 0)
        r = kiln_buf_puts(&b, "l", err); /* FROM scratch: the empty link dir as the lower */
    /* Overlay lists lower dirs top first. */
    for (size_t k = 0; r == 0 && k < s->n_lowers; k++) {
        size_t i = s->n_lowers - 1 - k;
        char name[16], link[PATH_MAX];
        short_name(name, i);
        snprintf(link, sizeof(link), "%s/%s", ldir, name);
        if (symlink(s->lowers[i], link) < 0)
            r = kiln_error_set(err, KILN_EIO, errno, "link lower dir %s", s->lowers[i]);
        else
            r = kiln_buf_printf(&b, err, "%sl/%s", k ? ":" : "", name);
    }
    /* redirect_dir=nofollow: a renamed directory is copied (rename gives
     * EXDEV and tools fall back), so the diff holds no redirect xattrs the
     * packer cannot express, and redirects are never followed in lowers;
     * metacopy=off: a chmod copies the data, every upper file is whole. */
    if (r == 0)
        r = kiln_buf_printf(&b, err,
                            ",upperdir=%s,workdir=w,redirect_dir=nofollow,metacopy=off,"
                            "index=off%s",
                            s->upper_dir, p->rootless ? ",userxattr" : "");
    if (r < 0) {
        kiln_buf_dispose(&b);
        if (r == KILN_ENOSPC)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "%zu lower dirs do not fit in the overlay "
                                  "options",
                                  s->n_lowers);
        return r;
    }
    p->ovl_opts = kiln_buf_steal(&b, NULL);
    _cleanup_free_ char *w = NULL;
    if (asprintf(&w, "%s/w", p->work) < 0 || mkdir(w, 0700) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create overlay work dir");
    return 0;
}

static int prepare_etc(sbx_plan *p, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    _cleanup_free_ char *text = NULL;
    if (asprintf(&p->hosts, "%s/hosts", p->work) < 0 ||
        asprintf(&text,
                 "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "127.0.1.1\t%s\n%s",
                 p->hostname, s->extra_hosts ? s->extra_hosts : "") < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    int r = write_text(p->hosts, text, err);
    if (r == 0 && s->network == SBX_NET_PRIVATE)
        return sbx_net_prepare(p, err);
    if (r < 0 || s->network != SBX_NET_HOST)
        return r;
    const char *src = s->resolv_conf ? s->resolv_conf : "/etc/resolv.conf";
    if (asprintf(&p->resolv, "%s/resolv.conf", p->work) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
    _cleanup_close_ int out = open(p->resolv, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        return kiln_error_set(err, KILN_EIO, errno, "create %s", p->resolv);
    char buf[4096];
    ssize_t n;
    while (in >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
        if (kiln_write_all(out, buf, (size_t)n) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "write %s", p->resolv);
    return 0;
}

static int build_argv(sbx_plan *p, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    static const char *const def_shell[] = {"/bin/sh", "-c", NULL};
    const char *const *head = s->argv;
    size_t n = 0, m = 0;
    if (head == NULL) {
        if (s->shell_cmd == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "RUN without a command");
        head = s->shell && s->shell[0] ? s->shell : def_shell;
    }
    while (head[n])
        n++;
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "RUN with an empty command");
    p->argv = calloc(n + 2, sizeof(char *));
    if (p->argv == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "calloc");
    for (; m < n; m++)
        p->argv[m] = (char *)head[m];
    if (s->argv == NULL)
        p->argv[m++] = (char *)s->shell_cmd;
    return 0;
}

static int plan_init(sbx_plan *p, const bld_run_spec *s, bld_rootfs_mode mode, kiln_error **err)
{
    memset(p, 0, sizeof(*p));
    p->spec = s;
    p->report_w = p->out_w = p->err_w = p->ack_r = p->go_r = p->go_w = -1;
    p->net_fd = p->net_userfd = -1;
    p->cg.mem_dir = p->cg.pids_dir = p->cg.v1_devices_dir = p->cg.v2_dir = -1;
    p->parent = getpid();
    p->host_uid = geteuid();
    p->host_gid = getegid();
    p->rootless = p->host_uid != 0;
    p->hostname = s->hostname && *s->hostname ? s->hostname : "kiln";
    p->cap_last = 40;
    _cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
    if (f && fscanf(f, "%d", &p->cap_last) != 1)
        p->cap_last = 40;
    if (!s->upper_dir || !s->work_dir || !s->data_dir || s->upper_dir[0] != '/' ||
        s->work_dir[0] != '/')
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "bld_run: absolute upper_dir, work_dir and "
                              "data_dir are required");
    for (size_t i = 0; i < s->n_lowers; i++)
        if (s->lowers[i] == NULL || s->lowers[i][0] != '/')
            return kiln_error_set(err, KILN_EINVAL, 0, "lower dir %zu is not absolute", i);
    int r = build_argv(p, err);
    if (r < 0)
        return r;
    p->work = strdup(s->work_dir);
    if (p->work == NULL || asprintf(&p->rootfs, "%s/rootfs", p->work) < 0 ||
        asprintf(&p->secrets, "%s/s", p->work) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "plan");
    if (mode == BLD_ROOTFS_AUTO) {
        _cleanup_free_ char *parent = strdup(p->work);
        char *sl = parent ? strrchr(parent, '/') : NULL;
        if (sl && sl != parent)
            *sl = '\0';
        p->overlay = parent && auto_overlay(parent);
    } else {
        p->overlay = mode == BLD_ROOTFS_OVERLAY;
    }
    return 0;
}

static void plan_dispose(sbx_plan *p)
{
    sbx_mounts_release(p);
    sbx_cgroup_destroy(&p->cg);
    free(p->work);
    free(p->rootfs);
    free(p->ovl_opts);
    free(p->hosts);
    free(p->resolv);
    bld_netns_free(p->own_net);
    free(p->secrets);
    free(p->argv);
}

/* ---- supervision ------------------------------------------------------ */

typedef struct linebuf {
    char *data;
    size_t len;
} linebuf;

static void emit(const bld_run_spec *s, int stream, linebuf *lb, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (lb->len + take > BLD_RUN_LINE_MAX)
            take = BLD_RUN_LINE_MAX - lb->len;
        memcpy(lb->data + lb->len, p, take);
        lb->len += take;
        p += take;
        n -= take;
        bool full = lb->len == BLD_RUN_LINE_MAX;
        if (n > 0 && *p == '\n') {
            p++;
            n--;
            full = true;
        }
        if (full) {
            if (s->on_output)
                s->on_output(s->output_ud, stream, lb->data, lb->len);
            lb->len = 0;
        }
    }
}

typedef struct supervise {
    sbx_plan *p;
    int out_r, err_r, rep_r, ack_w, pidfd;
    int go_w;              /* private network: tells init pasta is ready */
    kiln_error *net_err;   /* the network could not be used */
    uint64_t t0, setup_us; /* start of the step's setup; until the command was about to start */
    pid_t monitor, init;
    bool got_exit, killed;
    int status;
    sbx_msg first_error;
    bool have_error;
    char *stubs[MAX_STUBS];
    size_t nstubs;
    size_t rep_fill;
    sbx_msg rep;
} supervise;

/* Kills init, the PID namespace's reaper: the kernel then kills everything
 * else in it, and the monitor reaps init only once all of them are gone (so
 * the step's mounts are gone too when the monitor exits).  Before init's pid
 * is known, the monitor is killed and init follows by its death signal. */
static void kill_step(supervise *v)
{
    if (v->killed)
        return;
    v->killed = true;
    if (v->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, v->pidfd, SIGKILL, NULL, 0);
    else if (v->init > 0)
        kill(v->init, SIGKILL); /* not reaped before our ack: the pid is still init's */
    else
        kill(v->monitor, SIGKILL);
}

static void on_msg(supervise *v, const sbx_msg *m)
{
    switch (m->type) {
    case SBX_MSG_PID:
        v->init = m->value;
        v->pidfd = (int)syscall(SYS_pidfd_open, v->init, 0);
        /* A socket, not a pipe: MSG_NOSIGNAL spares the builder a SIGPIPE
         * should the monitor already be gone. */
        (void)!send(v->ack_w, "k", 1, MSG_NOSIGNAL);
        if (v->go_w >= 0) {
            /* init sets up the rootfs meanwhile, then waits for this */
            if (sbx_net_wait(v->p->net, v->p->spec->cancel, &v->net_err) == 0)
                (void)!write(v->go_w, "g", 1);
            else
                kill_step(v);
            close(v->go_w);
            v->go_w = -1;
        }
        break;
    case SBX_MSG_READY:
        v->setup_us = now_us() - v->t0;
        break;
    case SBX_MSG_ERROR:
        if (!v->have_error) {
            v->first_error = *m;
            v->have_error = true;
        }
        break;
    case SBX_MSG_STUB:
        if (v->nstubs < MAX_STUBS && (v->stubs[v->nstubs] = strndup(m->text, sizeof(m->text))))
            v->nstubs++;
        break;
    case SBX_MSG_EXIT:
        v->got_exit = true;
        v->status = m->value;
        break;
    }
}

static void read_report(supervise *v)
{
    char *dst = (char *)&v->rep;
    ssize_t n = read(v->rep_r, dst + v->rep_fill, sizeof(v->rep) - v->rep_fill);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(v->rep_r);
            v->rep_r = -1;
        }
        return;
    }
    v->rep_fill += (size_t)n;
    if (v->rep_fill == sizeof(v->rep)) {
        on_msg(v, &v->rep);
        v->rep_fill = 0;
    }
}

/* Ends the step as soon as its cgroup records an OOM kill or a fork refused
 * at the pids limit: a step over a limit is killed whole, not left to limp
 * on (a fork bomb would otherwise spin until its timeout). */
static void check_limits(const sbx_plan *p, supervise *v, bld_run_result *out)
{
    if (v->killed)
        return;
    if (sbx_cgroup_oom(&p->cg))
        out->oom_killed = true;
    else if (sbx_cgroup_pids_hit(&p->cg))
        out->pids_limited = true;
    else
        return;
    kill_step(v);
}

static void supervise_loop(const sbx_plan *p, supervise *v, bld_run_result *out)
{
    const bld_run_spec *s = p->spec;
    uint64_t start = now_ms(), checked = 0;
    bool watch = p->cg.mem_dir >= 0 || p->cg.pids_dir >= 0;
    linebuf lb[2] = {{malloc(BLD_RUN_LINE_MAX), 0}, {malloc(BLD_RUN_LINE_MAX), 0}};
    int *fds[3] = {&v->out_r, &v->err_r, &v->rep_r};
    char buf[16384];
    while (v->out_r >= 0 || v->err_r >= 0 || v->rep_r >= 0) {
        if (s->cancel && atomic_load(s->cancel) && !v->killed) {
            out->canceled = true;
            kill_step(v);
        }
        int wait = 100;
        if (watch && now_ms() - checked >= 50) {
            checked = now_ms();
            check_limits(p, v, out);
        }
        if (s->timeout_ms && !v->killed) {
            uint64_t el = now_ms() - start;
            if (el >= s->timeout_ms) {
                out->timed_out = true;
                kill_step(v);
            } else if (s->timeout_ms - el < (uint64_t)wait) {
                wait = (int)(s->timeout_ms - el);
            }
        }
        struct pollfd pf[3];
        for (int i = 0; i < 3; i++)
            pf[i] = (struct pollfd){*fds[i], POLLIN, 0};
        if (poll(pf, 3, wait) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 3; i++) {
            if (*fds[i] < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (i == 2) {
                read_report(v);
                continue;
            }
            ssize_t n = read(*fds[i], buf, sizeof(buf));
            if (n > 0 && lb[i].data)
                emit(s, i + 1, &lb[i], buf, (size_t)n);
            else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                close(*fds[i]);
                *fds[i] = -1;
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        if (lb[i].len && s->on_output)
            s->on_output(s->output_ud, i + 1, lb[i].data, lb[i].len);
        free(lb[i].data);
    }
    int st;
    while (waitpid(v->monitor, &st, 0) < 0 && errno == EINTR)
        ;
    out->duration_ms = now_ms() - start;
}

/* Removes the mount points the step had to create, deepest first, when they
 * are still empty: they are artefacts of the sandbox, not of the command.
 * Parent mtimes are kept as they were. */
static void remove_stubs(const char *layer_dir, supervise *v)
{
    _cleanup_close_ int root = open(layer_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (size_t i = v->nstubs; root >= 0 && i-- > 0;) {
        const char *leaf;
        _cleanup_close_ int parent =
            sbx_open_parent(root, v->stubs[i], false, NULL, NULL, &leaf, NULL);
        struct stat st, pst;
        if (parent < 0 || fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            fstat(parent, &pst) < 0)
            continue;
        int r = -1;
        if (S_ISDIR(st.st_mode))
            r = unlinkat(parent, leaf, AT_REMOVEDIR); /* fails when not empty: kept */
        else if (S_ISREG(st.st_mode) && st.st_size == 0)
            r = unlinkat(parent, leaf, 0);
        if (r == 0) {
            char pp[64];
            snprintf(pp, sizeof(pp), "/proc/self/fd/%d", parent);
            utimensat(AT_FDCWD, pp, (struct timespec[]){pst.st_atim, pst.st_mtim}, 0);
        }
    }
}

/* True when dir rel of the upper dir adds nothing over the lowers: empty,
 * not opaque, same owner, mode and mtime as the topmost lower's. */
static bool redundant_dir(int upper, const char *rel, const char *const *lowers, size_t n)
{
    _cleanup_close_ int fd =
        sbx_open_in_root(upper, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, NULL);
    struct stat us, ls;
    if (fd < 0 || fstat(fd, &us) < 0 || us.st_nlink != 2 || kiln_ovl_is_opaque_fd(fd))
        return false;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    _cleanup_closedir_ DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            return false;
    for (size_t i = n; i-- > 0;) {
        _cleanup_close_ int root = open(lowers[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int lf =
            root >= 0 ? sbx_open_in_root(root, rel, O_PATH | O_NOFOLLOW, NULL) : -1;
        if (lf < 0)
            continue;
        return fstat(lf, &ls) == 0 && S_ISDIR(ls.st_mode) && ls.st_mode == us.st_mode &&
               ls.st_uid == us.st_uid && ls.st_gid == us.st_gid &&
               ls.st_mtim.tv_sec == us.st_mtim.tv_sec && ls.st_mtim.tv_nsec == us.st_mtim.tv_nsec;
    }
    return false;
}

/* Creating a mount point copied its parents up into the diff; drop those
 * copies again when they carry nothing. */
static void prune_stub_parents(const bld_run_spec *s, supervise *v)
{
    _cleanup_close_ int upper = open(s->upper_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (size_t i = v->nstubs; upper >= 0 && i-- > 0;) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof(rel), "%s", v->stubs[i]);
        for (char *sl = strrchr(rel, '/'); sl; sl = strrchr(rel, '/')) {
            *sl = '\0';
            if (!redundant_dir(upper, rel, s->lowers, s->n_lowers))
                break;
            const char *leaf;
            _cleanup_close_ int parent =
                sbx_open_parent(upper, rel, false, NULL, NULL, &leaf, NULL);
            struct stat pst;
            if (parent < 0 || fstat(parent, &pst) < 0 || unlinkat(parent, leaf, AT_REMOVEDIR) < 0)
                break;
            char pp[64];
            snprintf(pp, sizeof(pp), "/proc/self/fd/%d", parent);
            utimensat(AT_FDCWD, pp, (struct timespec[]){pst.st_atim, pst.st_mtim}, 0);
        }
    }
}

/* The pipes between the builder and the sandbox ([0] reads, [1] writes):
 * reports, stdout, stderr, the ack socket and, for a private network, the
 * go pipe. */
typedef struct channels {
    int rep[2], out[2], err[2], ack[2], go[2];
} channels;

static int channels_open(channels *ch, const bld_run_spec *s, kiln_error **err)
{
    *ch = (channels){{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
    if (pipe2(ch->rep, O_CLOEXEC) < 0 || pipe2(ch->out, O_CLOEXEC) < 0 ||
        pipe2(ch->err, O_CLOEXEC) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch->ack) < 0 ||
        (s->network == SBX_NET_PRIVATE && pipe2(ch->go, O_CLOEXEC) < 0))
        return kiln_error_set(err, KILN_EIO, errno, "pipe");
    return 0;
}

/* Closes the ends still open (those not moved). */
static void channels_close(channels *ch)
{
    for (int i = 0; i < 2; i++) {
        if (ch->rep[i] >= 0)
            close(ch->rep[i]);
        if (ch->out[i] >= 0)
            close(ch->out[i]);
        if (ch->err[i] >= 0)
            close(ch->err[i]);
        if (ch->ack[i] >= 0)
            close(ch->ack[i]);
        if (ch->go[i] >= 0)
            close(ch->go[i]);
    }
}

/* Forks the monitor (which runs the sandbox) with the child ends of ch;
 * the builder's ends move to v. */
static int start_monitor(sbx_plan *p, channels *ch, supervise *v, kiln_error **err)
{
    p->go_r = ch->go[0];
    p->report_w = ch->rep[1];
    p->out_w = ch->out[1];
    p->err_w = ch->err[1];
    p->ack_r = ch->ack[0];
    v->monitor = fork();
    if (v->monitor < 0)
        return kiln_error_set(err, KILN_EIO, errno, "fork");
    if (v->monitor == 0)
        sbx_child_main(p);
    close(ch->rep[1]);
    close(ch->out[1]);
    close(ch->err[1]);
    close(ch->ack[0]);
    if (ch->go[0] >= 0)
        close(ch->go[0]);
    ch->rep[1] = ch->out[1] = ch->err[1] = ch->ack[0] = ch->go[0] = -1;
    p->go_r = -1;
    v->go_w = ch->go[1];
    ch->go[1] = -1;
    v->rep_r = ch->rep[0];
    v->out_r = ch->out[0];
    v->err_r = ch->err[0];
    v->ack_w = ch->ack[1];
    ch->rep[0] = ch->out[0] = ch->err[0] = ch->ack[1] = -1;
    return 0;
}

/* The error the step's outcome is, the first that applies: the network,
 * a limit, a cancel, a sandbox error, no status; 0 when none does. */
static int outcome_error(const sbx_plan *p, supervise *v, const bld_run_result *out,
                         kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    char lim[48];
    if (v->net_err && !out->canceled && !out->timed_out) {
        int r = v->net_err->code;
        if (err && *err == NULL)
            *err = kiln_error_steal(&v->net_err);
        return r;
    }
    if (out->timed_out) {
        kiln_format_duration(lim, sizeof(lim), s->timeout_ms);
        return kiln_error_set(err, KILN_ETIMEDOUT, 0, "RUN exceeded its time limit of %s", lim);
    }
    if (out->canceled)
        return kiln_error_set(err, KILN_ECANCELED, 0, "RUN canceled");
    if (out->oom_killed) {
        kiln_format_size(lim, sizeof(lim), s->memory_bytes);
        return s->memory_bytes
                   ? kiln_error_set(err, KILN_ENOSPC, 0, "RUN exceeded its memory limit of %s", lim)
                   : kiln_error_set(err, KILN_ENOSPC, 0,
                                    "RUN was killed by the kernel's out-of-memory killer");
    }
    if (out->pids_limited)
        return s->pids_max
                   ? kiln_error_set(err, KILN_ENOSPC, 0, "RUN exceeded its limit of %llu processes",
                                    (unsigned long long)s->pids_max)
                   : kiln_error_set(err, KILN_ENOSPC, 0,
                                    "RUN reached the process limit of the builder's cgroup");
    if (v->have_error && !(v->got_exit && WIFEXITED(v->status) && WEXITSTATUS(v->status) != 126 &&
                           WEXITSTATUS(v->status) != 127))
        return kiln_error_set(err, v->first_error.code ? v->first_error.code : KILN_EINTERNAL,
                              v->first_error.sys_errno, "sandbox: %s", v->first_error.text);
    if (!v->got_exit)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "sandbox init ended without a status");
    return 0;
}

/* Sets out's exit code and signal from how the step ended. */
static void record_exit(supervise *v, bld_run_result *out)
{
    /* Over its memory limit the kernel may pick the sandbox's own init (or
     * monitor) instead of the command: the step was killed all the same. */
    if (!v->got_exit && (out->oom_killed || out->pids_limited))
        v->killed = true;
    if (v->got_exit) {
        out->exit_code = WIFEXITED(v->status) ? WEXITSTATUS(v->status) : -1;
        out->signal = WIFSIGNALED(v->status) ? WTERMSIG(v->status) : 0;
    } else if (v->killed) {
        out->exit_code = -1;
        out->signal = SIGKILL;
    }
}

/* Releases what supervising left open or allocated. */
static void supervise_dispose(supervise *v)
{
    if (v->go_w >= 0)
        close(v->go_w);
    kiln_error_free(&v->net_err);
    if (v->ack_w >= 0)
        close(v->ack_w);
    if (v->pidfd >= 0)
        close(v->pidfd);
    for (size_t i = 0; i < v->nstubs; i++)
        free(v->stubs[i]);
}

/* Runs the sandbox's processes and supervises them to the end, then
 * collects the diff (copy mode) and the outcome. */
static int run_children(sbx_plan *p, uint64_t t0, bld_run_result *out, kiln_error **err)
{
    const bld_run_spec *s = p->spec;
    channels ch;
    supervise v = {.p = p,
                   .out_r = -1,
                   .err_r = -1,
                   .rep_r = -1,
                   .ack_w = -1,
                   .pidfd = -1,
                   .go_w = -1,
                   .t0 = t0};
    int r = channels_open(&ch, s, err);
    if (r == 0)
        r = start_monitor(p, &ch, &v, err);
    if (r == 0) {
        supervise_loop(p, &v, out);
        out->setup_us = v.setup_us;
        remove_stubs(p->overlay ? s->upper_dir : p->rootfs, &v);
        if (!p->overlay && v.got_exit && !out->timed_out && !out->canceled)
            r = sbx_copy_diff(s->lowers, s->n_lowers, p->rootfs, s->upper_dir, err);
        prune_stub_parents(s, &v);
        if (!out->timed_out && !out->canceled)
            check_limits(p, &v, out); /* what happened after the last look */
        int oe = outcome_error(p, &v, out, err);
        if (oe != 0)
            r = oe;
        record_exit(&v, out);
    }
    channels_close(&ch);
    supervise_dispose(&v);
    return r;
}

/* Runs the step in the prepared plan: work dir, rootfs, mounts, cgroup,
 * children, and the diff in copy mode. */
static int run_in_workdir(sbx_plan *p, bld_run_result *out, kiln_error **err)
{
    uint64_t t0 = now_us();
    const bld_run_spec *spec = p->spec;
    int r = kiln_mkdir_p(p->work, 0700, err);
    if (r == 0)
        r = kiln_mkdir_p(spec->upper_dir, 0755, err);
    if (r < 0)
        return r;
    _cleanup_closedir_ DIR *ud = opendir(spec->upper_dir);
    struct dirent *de;
    while (ud && (de = readdir(ud)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            return kiln_error_set(err, KILN_EINVAL, 0, "upper dir %s is not empty",
                                  spec->upper_dir);
    /* The lock marks the work dir as alive for bld_sandbox_cleanup_stale(). */
    _cleanup_free_ char *lockp = NULL;
    _cleanup_close_ int lock = -1;
    if (asprintf(&lockp, "%s/.lock", p->work) < 0 ||
        (lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 || flock(lock, LOCK_EX) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "lock %s", p->work);
    if (mkdir(p->rootfs, 0755) < 0 || mkdir(p->secrets, 0700) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "prepare %s (must be new or empty)", p->work);
    r = p->overlay ? prepare_overlay(p, err)
                   : sbx_copy_merge(spec->lowers, spec->n_lowers, p->rootfs, err);
    if (r == 0 && !p->overlay) {
        /* Everything whose ctime is newer than this marker's belongs to the
         * step (see copyfs.c). */
        _cleanup_free_ char *marker = NULL;
        if (asprintf(&marker, "%s.since", p->rootfs) < 0)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
        r = write_text(marker, "", err);
    }
    if (r == 0)
        r = prepare_etc(p, err);
    if (r == 0)
        r = sbx_mounts_prepare(p, err);
    sbx_limits lim = {spec->memory_bytes, spec->pids_max, spec->cpu_weight};
    if (r == 0)
        r = sbx_cgroup_create(&p->cg, &lim, err);
    if (r < 0)
        return r;
    out->limits_enforced = (!spec->memory_bytes || p->cg.memory) && (!spec->pids_max || p->cg.pids);
    if (!out->limits_enforced)
        kiln_warn("sandbox", "memory/pid limits requested but cgroups cannot enforce them");
    return run_children(p, t0, out, err);
}

static int run_once(const bld_run_spec *spec, bld_rootfs_mode mode, bld_run_result *out,
                    kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    sbx_plan p;
    int r = plan_init(&p, spec, mode, err);
    if (r < 0)
        goto out;
    out->rootfs_used = p.overlay ? BLD_ROOTFS_OVERLAY : BLD_ROOTFS_COPY;
    r = run_in_workdir(&p, out, err);
    /* Nothing of the step is mounted any more (its mount namespace died with
     * init), so the work dir is plain files now. */
    kiln_error *e2 = NULL;
    if (kiln_rm_rf(spec->work_dir, &e2) < 0) {
        kiln_warn("sandbox", "cannot remove work dir: %s", e2->msg);
        kiln_error_free(&e2);
    }
out:
    plan_dispose(&p);
    return r;
}

int sbx_run(const bld_run_spec *spec, bld_run_result *out, kiln_error **err)
{
    kiln_error *e = NULL;
    int r = run_once(spec, spec->rootfs, out, &e);
    /* Overlay probed fine but this mount failed (say, an upper dir on another
     * filesystem than the work dir): nothing ran yet, so copy mode can. */
    if (r == KILN_EUNAVAIL && spec->rootfs == BLD_ROOTFS_AUTO &&
        out->rootfs_used == BLD_ROOTFS_OVERLAY) {
        kiln_warn("sandbox", "%s; running this step in copy mode", e->msg);
        kiln_error_free(&e);
        r = run_once(spec, BLD_ROOTFS_COPY, out, &e);
    }
    if (r < 0 && err && *err == NULL)
        *err = kiln_error_steal(&e);
    kiln_error_free(&e);
    return r;
}

int bld_sandbox_cleanup_stale(const char *data_dir, kiln_error **err)
{
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/sandbox", data_dir) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    _cleanup_closedir_ DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        struct stat st;
        if (strncmp(de->d_name, ".ovl-probe-", 11) == 0 &&
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            kiln_age_s(&st.st_mtim) > 60) {
            /* an overlay probe whose process died (probes take milliseconds) */
            int r = kiln_rm_rf_at(dirfd(d), de->d_name, err);
            if (r < 0)
                return r;
            continue;
        }
        if (de->d_name[0] == '.')
            continue;
        _cleanup_free_ char *lockp = NULL;
        if (asprintf(&lockp, "%s/%s/.lock", dir, de->d_name) < 0)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
        _cleanup_close_ int fd = open(lockp, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* a live step */
        kiln_info("sandbox", "removing stale work dir %s/%s", dir, de->d_name);
        int r = kiln_rm_rf_at(dirfd(d), de->d_name, err);
        if (r < 0)
            return r;
    }
    sbx_cgroup_set_owner(data_dir);
    sbx_cgroup_cleanup_stale();
    return sbx_snapshot_clean_tmp(data_dir, err);
}
