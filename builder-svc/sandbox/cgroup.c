/* The cgroups of a RUN step: every step gets its own (so its processes are
 * never counted, limited or listed in the builder's cgroup), with memory
 * (+swap), pid and CPU-weight limits and the device allow-list of
 * cgroup_dev.c.  Both layouts are handled: a unified v2 hierarchy (limits
 * there when it offers the controllers) and v1 controllers mounted
 * separately (the usual hybrid host, whose v2 hierarchy is present but
 * empty: the step still gets a v2 cgroup there, for the BPF device program).
 * Step cgroups are created below the builder's own cgroup of each hierarchy
 * as kiln-<builder pid>-<n>; the monitor child joins them before creating
 * the namespaces, so everything in the step is counted. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include "cleanup.h"
#include "log.h"
#include "sbx_internal.h"

#define CG_ROOT "/sys/fs/cgroup"

/* Path of this process's cgroup in the hierarchy named by key ("memory",
 * "pids", or "" for v2), into out; false if not found. */
static bool own_cgroup(const char *key, char *out, size_t n)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/cgroup", "re");
    char line[1024];
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1;
        bool match = *key == '\0' ? *ctrls == '\0' : false;
        if (*key) {
            _cleanup_free_ char *dup = strdup(ctrls);
            char *save = NULL;
            for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t;
                 t = strtok_r(NULL, ",", &save))
                if (strcmp(t, key) == 0)
                    match = true;
        }
        if (match) {
            snprintf(out, n, "%s", c2 + 1);
            return true;
        }
    }
    return false;
}

static bool write_str(const char *path, const char *s)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    return fd >= 0 && kiln_write_all(fd, s, strlen(s)) >= 0;
}

/* Where the v2 hierarchy is mounted ("" if nowhere) and whether its
 * controllers include memory and pids for our cgroup's children. */
static const char *v2_root(void)
{
    struct statfs sf;
    if (statfs(CG_ROOT, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC)
        return CG_ROOT;
    if (statfs(CG_ROOT "/unified", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC)
        return CG_ROOT "/unified";
    return "";
}

/* Whether the v2 cgroup root+own offers ctrl (its cgroup.controllers). */
static bool v2_has_at(const char *root, const char *own, const char *ctrl)
{
    char path[1100], buf[512] = "";
    snprintf(path, sizeof(path), "%s%s/cgroup.controllers", root, own);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL || !fgets(buf, sizeof(buf), f))
        return false;
    char *save = NULL;
    for (char *t = strtok_r(buf, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
        if (strcmp(t, ctrl) == 0)
            return true;
    return false;
}

static bool v2_has(const char *ctrl)
{
    const char *root = v2_root();
    char own[512];
    return *root && own_cgroup("", own, sizeof(own)) &&
           v2_has_at(root, strcmp(own, "/") ? own : "", ctrl);
}

static bool write_str_in(const char *dir, const char *file, const char *s)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return write_str(path, s);
}

static bool v1_has(const char *ctrl)
{
    char own[512], path[1024];
    struct statfs sf;
    snprintf(path, sizeof(path), CG_ROOT "/%s", ctrl);
    if (statfs(path, &sf) < 0 || sf.f_type != CGROUP_SUPER_MAGIC ||
        !own_cgroup(ctrl, own, sizeof(own)))
        return false;
    snprintf(path, sizeof(path), CG_ROOT "/%s%s", ctrl, own);
    return access(path, W_OK) == 0;
}

void sbx_cgroup_probe(bld_preflight_info *pf)
{
    bool v2m = v2_has("memory"), v2p = v2_has("pids");
    bool v1m = v1_has("memory"), v1p = v1_has("pids"), v1d = v1_has("devices");
    const char *v2 = v2_root();
    if (v2m || v2p) {
        pf->cgroup_version = 2;
        pf->cgroup_memory = v2m;
        pf->cgroup_pids = v2p;
    } else if (v1m || v1p) {
        pf->cgroup_version = 1;
        pf->cgroup_memory = v1m;
        pf->cgroup_pids = v1p;
    }
    int fd = geteuid() == 0 && *v2 ? sbx_devices_bpf_load(NULL, 0) : -1;
    bool bpf = fd >= 0;
    if (fd >= 0)
        close(fd);
    pf->cgroup_devices = v1d || bpf;
    snprintf(pf->cgroups, sizeof(pf->cgroups), "v1:%s%s%s%s; v2:%s%s%s%s%s",
             (v1m || v1p || v1d) ? "" : " none", v1m ? " memory" : "", v1p ? " pids" : "",
             v1d ? " devices" : "", *v2 ? "" : " not mounted",
             *v2 && !v2m && !v2p ? " no memory/pids controllers" : "", v2m ? " memory" : "",
             v2p ? " pids" : "", bpf ? " devices(bpf)" : "");
}

static atomic_uint seq;

/* Step cgroups are named kiln-<owner>-<pid>-<n>.  The owner tag is taken
 * from the data dir's identity (sbx_cgroup_set_owner) because a pid alone
 * says nothing across PID namespaces: builders in two containers that share
 * the host's cgroup tree may both be pid 7, and each would take the other's
 * live steps for a dead builder's.  Until a data dir is set the tag is
 * random, so such cgroups are never anyone else's to clean. */
static char owner_tag[17];
static pthread_once_t owner_once = PTHREAD_ONCE_INIT;

static void owner_random(void)
{
    if (owner_tag[0])
        return;
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
    snprintf(owner_tag, sizeof(owner_tag), "r%07llx", (unsigned long long)(r & 0xfffffff));
}

static const char *owner(void)
{
    pthread_once(&owner_once, owner_random);
    return owner_tag;
}

void sbx_cgroup_set_owner(const char *data_dir)
{
    struct stat st;
    if (stat(data_dir, &st) < 0)
        return;
    /* FNV-1a over the data dir's device and inode. */
    uint64_t h = 1469598103934665603ULL, v[2] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino};
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < sizeof(v); i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    pthread_once(&owner_once, owner_random);
    snprintf(owner_tag, sizeof(owner_tag), "d%07llx", (unsigned long long)(h & 0xfffffff));
}

/* Creates <base><own>/kiln-<owner>-<pid>-<n> and records it; 0, or -1 when
 * this host does not let us (the caller goes on without it). */
static int make_dir(sbx_cgroup *cg, const char *base, const char *own)
{
    char *dir = NULL, *procs = NULL;
    if (cg->n == SBX_CG_MAX ||
        asprintf(&dir, "%s%s/kiln-%s-%d-%u", base, strcmp(own, "/") ? own : "", owner(),
                 (int)getpid(), atomic_fetch_add(&seq, 1)) < 0)
        return -1;
    if (mkdir(dir, 0755) < 0 || asprintf(&procs, "%s/cgroup.procs", dir) < 0) {
        kiln_debug("sandbox", "cannot create cgroup %s: %s", dir, strerror(errno));
        rmdir(dir);
        free(dir);
        return -1;
    }
    cg->dirs[cg->n] = dir;
    cg->procs[cg->n] = procs;
    return (int)cg->n++;
}

static bool set_in(const char *dir, const char *file, uint64_t v)
{
    char path[1100], val[32];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
    return write_str(path, val);
}

/* ---- v2 --------------------------------------------------------------- */

static pthread_mutex_t v2_mu = PTHREAD_MUTEX_INITIALIZER;
static bool v2_inited;
static char v2_parent[600]; /* own v2 cgroup ("/" or "/a/b"), below which steps go */
static int bpf_prog = -1;

/* Once per process: where step cgroups go on the unified hierarchy, with the
 * controllers the limits need delegated to them.  A non-root cgroup that
 * holds processes cannot delegate (v2's no-internal-process rule): then the
 * builder moves itself into a leaf kiln-builder-<owner>-<pid> beside its steps, as
 * container engines under systemd's Delegate= do.  Also loads the device
 * program. */
static void v2_init_locked(void)
{
    if (v2_inited)
        return;
    v2_inited = true;
    const char *root = v2_root();
    char own[512];
    if (!*root || !own_cgroup("", own, sizeof(own)))
        return;
    snprintf(v2_parent, sizeof(v2_parent), "%s", strcmp(own, "/") ? own : "");
    if (geteuid() == 0) {
        char log[4096];
        bpf_prog = sbx_devices_bpf_load(log, sizeof(log));
        if (bpf_prog < 0)
            kiln_warn("sandbox", "cannot load the cgroup v2 device program: %s%s%.300s",
                      strerror(errno), *log ? ": " : "", log);
    }
    static const char *const ctrls[] = {"memory", "pids", "cpu"};
    char ctl[1100];
    snprintf(ctl, sizeof(ctl), "%s%s/cgroup.subtree_control", root, v2_parent);
    bool busy = false;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(ctrls); i++) {
        char plus[16];
        snprintf(plus, sizeof(plus), "+%s", ctrls[i]);
        if (v2_has(ctrls[i]) && !write_str(ctl, plus) && errno == EBUSY)
            busy = true;
    }
    if (!busy || !*v2_parent)
        return;
    char leaf[1100];
    snprintf(leaf, sizeof(leaf), "%s%s/kiln-builder-%s-%d", root, v2_parent, owner(),
             (int)getpid());
    char procs[1200];
    snprintf(procs, sizeof(procs), "%s/cgroup.procs", leaf);
    if ((mkdir(leaf, 0755) < 0 && errno != EEXIST) || !write_str(procs, "0")) {
        kiln_warn("sandbox", "cgroup v2: cannot move the builder into %s: %s", leaf,
                  strerror(errno));
        return;
    }
    for (size_t i = 0; i < KILN_ARRAY_SIZE(ctrls); i++) {
        char plus[16];
        snprintf(plus, sizeof(plus), "+%s", ctrls[i]);
        if (v2_has_at(root, v2_parent, ctrls[i]))
            write_str(ctl, plus);
    }
}

static void v2_step(sbx_cgroup *cg, const sbx_limits *lim)
{
    pthread_mutex_lock(&v2_mu);
    v2_init_locked();
    int prog = bpf_prog;
    pthread_mutex_unlock(&v2_mu);
    const char *root = v2_root();
    if (!*root)
        return;
    int i = make_dir(cg, root, *v2_parent ? v2_parent : "/");
    if (i < 0)
        return;
    cg->v2_dir = i;
    const char *d = cg->dirs[i];
    char path[1100];
    snprintf(path, sizeof(path), "%s/memory.max", d);
    if (access(path, F_OK) == 0) {
        cg->mem_dir = i;
        write_str_in(d, "memory.oom.group", "1"); /* an OOM kill takes the whole step */
        if (lim->memory_bytes) {
            cg->memory = set_in(d, "memory.max", lim->memory_bytes);
            set_in(d, "memory.swap.max", 0);
            cg->version = 2;
        }
    }
    snprintf(path, sizeof(path), "%s/pids.max", d);
    if (access(path, F_OK) == 0) {
        cg->pids_dir = i;
        if (lim->pids_max) {
            cg->pids = set_in(d, "pids.max", lim->pids_max);
            cg->version = 2;
        }
    }
    snprintf(path, sizeof(path), "%s/cpu.weight", d);
    if (access(path, F_OK) == 0)
        cg->cpu = set_in(d, "cpu.weight", lim->cpu_weight ? lim->cpu_weight : 100);
    cg->devices_bpf = prog >= 0 && sbx_devices_bpf_attach(prog, d) == 0;
}

/* ---- v1 --------------------------------------------------------------- */

static int v1_dir(sbx_cgroup *cg, const char *ctrl)
{
    char own[512], base[256];
    if (!v1_has(ctrl) || !own_cgroup(ctrl, own, sizeof(own)))
        return -1;
    snprintf(base, sizeof(base), CG_ROOT "/%s", ctrl);
    return make_dir(cg, base, own);
}

/* Memory and pids get a step dir even without a limit: the step is then
 * accounted (and listed) apart from the builder all the same. */
static void v1_step(sbx_cgroup *cg, const sbx_limits *lim)
{
    int i;
    if (cg->mem_dir < 0 && (i = v1_dir(cg, "memory")) >= 0) {
        cg->mem_dir = i;
        if (lim->memory_bytes) {
            cg->memory = set_in(cg->dirs[i], "memory.limit_in_bytes", lim->memory_bytes);
            /* Without swap accounting this file is absent: then the limit may
             * push into swap, which is still a bound. */
            set_in(cg->dirs[i], "memory.memsw.limit_in_bytes", lim->memory_bytes);
            cg->version = 1;
        }
    }
    if (cg->pids_dir < 0 && (i = v1_dir(cg, "pids")) >= 0) {
        cg->pids_dir = i;
        if (lim->pids_max) {
            cg->pids = set_in(cg->dirs[i], "pids.max", lim->pids_max);
            cg->version = 1;
        }
    }
    if (!cg->cpu && (i = v1_dir(cg, "cpu")) >= 0) {
        unsigned w = lim->cpu_weight ? lim->cpu_weight : 100;
        cg->cpu = set_in(cg->dirs[i], "cpu.shares", (uint64_t)w * 1024 / 100);
    }
    if ((i = v1_dir(cg, "devices")) >= 0) {
        cg->v1_devices_dir = i;
        cg->devices_v1 = sbx_devices_v1(cg->dirs[i]);
    }
}

int sbx_cgroup_create(sbx_cgroup *cg, const sbx_limits *lim, kiln_error **err)
{
    (void)err;
    memset(cg, 0, sizeof(*cg));
    cg->mem_dir = cg->pids_dir = cg->v1_devices_dir = cg->v2_dir = -1;
    v2_step(cg, lim);
    v1_step(cg, lim);
    return 0;
}

/* Value of "key N" in a flat-keyed cgroup file of dir; 0 if absent. */
static unsigned long long counter(const char *dir, const char *file, const char *key)
{
    char path[1100], line[128];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
            return strtoull(line + kl + 1, NULL, 10);
    return 0;
}

bool sbx_cgroup_oom(const sbx_cgroup *cg)
{
    if (cg->mem_dir < 0)
        return false;
    const char *d = cg->dirs[cg->mem_dir];
    return counter(d, cg->mem_dir == cg->v2_dir ? "memory.events" : "memory.oom_control",
                   "oom_kill") > 0;
}

bool sbx_cgroup_pids_hit(const sbx_cgroup *cg)
{
    return cg->pids_dir >= 0 && counter(cg->dirs[cg->pids_dir], "pids.events", "max") > 0;
}

/* Kills the tasks of one cgroup dir and removes it; true when gone. */
static bool kill_and_remove(const char *dir)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    for (int tries = 0; tries < 200; tries++) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        int pid;
        while (f && fscanf(f, "%d", &pid) == 1)
            if (pid > 0)
                kill(pid, SIGKILL);
        if (rmdir(dir) == 0 || errno == ENOENT)
            return true;
        usleep(10000);
    }
    return false;
}

void sbx_cgroup_destroy(sbx_cgroup *cg)
{
    for (size_t i = 0; i < cg->n; i++) {
        if (!kill_and_remove(cg->dirs[i]))
            kiln_warn("sandbox", "cannot remove cgroup %s: %s", cg->dirs[i], strerror(errno));
        free(cg->dirs[i]);
        free(cg->procs[i]);
    }
    memset(cg, 0, sizeof(*cg));
    cg->mem_dir = cg->pids_dir = cg->v1_devices_dir = cg->v2_dir = -1;
}

static void clean_under(const char *base)
{
    _cleanup_closedir_ DIR *d = opendir(base);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        int pid;
        unsigned n;
        char tag[17];
        bool leaf = sscanf(de->d_name, "kiln-builder-%16[a-z0-9]-%d", tag, &pid) == 2;
        if (!leaf && sscanf(de->d_name, "kiln-%16[a-z0-9]-%d-%u", tag, &pid, &n) != 3)
            continue;
        if (strcmp(tag, owner()) != 0)
            continue; /* another data dir's builder: maybe alive in another PID namespace */
        if (pid == getpid() || (kill(pid, 0) == 0 || errno == EPERM))
            continue; /* its builder is alive */
        char dir[1100];
        snprintf(dir, sizeof(dir), "%s/%s", base, de->d_name);
        if (leaf)
            rmdir(dir); /* empty once that builder is gone; never kill through it */
        else
            kill_and_remove(dir);
    }
}

void sbx_cgroup_cleanup_stale(void)
{
    char own[512], base[1100];
    static const char *const v1[] = {"memory", "pids", "cpu", "devices"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(v1); i++) {
        if (!own_cgroup(v1[i], own, sizeof(own)))
            continue;
        snprintf(base, sizeof(base), CG_ROOT "/%s%s", v1[i], strcmp(own, "/") ? own : "");
        clean_under(base);
    }
    pthread_mutex_lock(&v2_mu);
    v2_init_locked();
    snprintf(base, sizeof(base), "%s%s", v2_root(), v2_parent);
    pthread_mutex_unlock(&v2_mu);
    if (*v2_root())
        clean_under(base);
}
