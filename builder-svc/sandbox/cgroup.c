/* Memory and pid limits of a step through cgroups.  Both layouts are
 * handled: a unified v2 hierarchy (used when it offers the controllers) and
 * v1 controllers mounted separately (the usual hybrid host, whose v2
 * hierarchy is present but empty).  Step cgroups are created below the
 * builder's own cgroup of each hierarchy as kiln-<builder pid>-<n>; the
 * monitor child joins them before creating the namespaces, so everything in
 * the step is counted. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "cleanup.h"
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
            for (char *t = dup ? strtok(dup, ",") : NULL; t; t = strtok(NULL, ","))
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
    return fd >= 0 && sbx_write_all(fd, s, strlen(s)) >= 0;
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

static bool v2_has(const char *ctrl)
{
    const char *root = v2_root();
    char own[512], path[1024], buf[512] = "";
    if (!*root || !own_cgroup("", own, sizeof(own)))
        return false;
    snprintf(path, sizeof(path), "%s%s/cgroup.controllers", root, own);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (f == NULL || !fgets(buf, sizeof(buf), f))
        return false;
    for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n"))
        if (strcmp(t, ctrl) == 0)
            return true;
    return false;
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
    bool v1m = v1_has("memory"), v1p = v1_has("pids");
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
    snprintf(pf->cgroups, sizeof(pf->cgroups), "v1:%s%s%s; v2:%s%s%s%s",
             (v1m || v1p) ? "" : " none", v1m ? " memory" : "", v1p ? " pids" : "",
             *v2 ? "" : " not mounted", *v2 && !v2m && !v2p ? " no memory/pids controllers" : "",
             v2m ? " memory" : "", v2p ? " pids" : "");
}

static atomic_uint seq;

static int make_dir(sbx_cgroup *cg, const char *base, const char *own, kiln_error **err)
{
    char *dir = NULL, *procs = NULL;
    if (asprintf(&dir, "%s%s/kiln-%d-%u", base, strcmp(own, "/") ? own : "", (int)getpid(),
                 atomic_fetch_add(&seq, 1)) < 0)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    if (mkdir(dir, 0755) < 0) {
        int e = errno;
        free(dir);
        return kiln_error_set(err, KILN_EIO, e, "create cgroup");
    }
    if (asprintf(&procs, "%s/cgroup.procs", dir) < 0) {
        rmdir(dir);
        free(dir);
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "asprintf");
    }
    cg->dirs[cg->n] = dir;
    cg->procs[cg->n] = procs;
    cg->n++;
    return 0;
}

static bool set_in(const char *dir, const char *file, uint64_t v)
{
    char path[1100], val[32];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
    return write_str(path, val);
}

int sbx_cgroup_create(sbx_cgroup *cg, uint64_t memory_bytes, uint64_t pids_max, kiln_error **err)
{
    memset(cg, 0, sizeof(*cg));
    if (memory_bytes == 0 && pids_max == 0)
        return 0;
    char own[512];
    int r = 0;
    if ((memory_bytes && v2_has("memory")) || (pids_max && v2_has("pids"))) {
        if (!own_cgroup("", own, sizeof(own)))
            return 0;
        /* Children see a controller only when their parent delegates it;
         * this fails (harmlessly) where our own cgroup holds processes and is
         * not the root: then the limits are reported as not enforced. */
        char ctl[1100];
        snprintf(ctl, sizeof(ctl), "%s%s/cgroup.subtree_control", v2_root(),
                 strcmp(own, "/") ? own : "");
        if (memory_bytes)
            write_str(ctl, "+memory");
        if (pids_max)
            write_str(ctl, "+pids");
        if ((r = make_dir(cg, v2_root(), own, err)) < 0)
            return r;
        cg->version = 2;
        cg->memory = memory_bytes && set_in(cg->dirs[0], "memory.max", memory_bytes);
        if (cg->memory)
            set_in(cg->dirs[0], "memory.swap.max", 0);
        cg->pids = pids_max && set_in(cg->dirs[0], "pids.max", pids_max);
        return 0;
    }
    cg->version = 1;
    if (memory_bytes && v1_has("memory") && own_cgroup("memory", own, sizeof(own))) {
        if ((r = make_dir(cg, CG_ROOT "/memory", own, err)) < 0)
            return r;
        cg->memory = set_in(cg->dirs[cg->n - 1], "memory.limit_in_bytes", memory_bytes);
        /* Without swap accounting this file is absent: then the limit may
         * push into swap, which is still a bound. */
        set_in(cg->dirs[cg->n - 1], "memory.memsw.limit_in_bytes", memory_bytes);
    }
    if (pids_max && v1_has("pids") && own_cgroup("pids", own, sizeof(own))) {
        if ((r = make_dir(cg, CG_ROOT "/pids", own, err)) < 0)
            return r;
        cg->pids = set_in(cg->dirs[cg->n - 1], "pids.max", pids_max);
    }
    return 0;
}

bool sbx_cgroup_oom(const sbx_cgroup *cg)
{
    for (size_t i = 0; i < cg->n; i++) {
        char path[1100], line[128];
        snprintf(path, sizeof(path), "%s/%s", cg->dirs[i],
                 cg->version == 2 ? "memory.events" : "memory.oom_control");
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f)) {
            unsigned long long v;
            if (sscanf(line, "oom_kill %llu", &v) == 1 && v > 0)
                return true;
        }
    }
    return false;
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
        kill_and_remove(cg->dirs[i]);
        free(cg->dirs[i]);
        free(cg->procs[i]);
    }
    memset(cg, 0, sizeof(*cg));
}

static void clean_under(const char *base)
{
    _cleanup_closedir_ DIR *d = opendir(base);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        int pid;
        unsigned n;
        if (sscanf(de->d_name, "kiln-%d-%u", &pid, &n) != 2)
            continue;
        if (pid == getpid() || (kill(pid, 0) == 0 || errno == EPERM))
            continue; /* its builder is alive */
        char dir[1100];
        snprintf(dir, sizeof(dir), "%s/%s", base, de->d_name);
        kill_and_remove(dir);
    }
}

void sbx_cgroup_cleanup_stale(void)
{
    char own[512], base[1100];
    static const char *const v1[] = {"memory", "pids"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(v1); i++) {
        if (!own_cgroup(v1[i], own, sizeof(own)))
            continue;
        snprintf(base, sizeof(base), CG_ROOT "/%s%s", v1[i], strcmp(own, "/") ? own : "");
        clean_under(base);
    }
    if (*v2_root() && own_cgroup("", own, sizeof(own))) {
        snprintf(base, sizeof(base), "%s%s", v2_root(), strcmp(own, "/") ? own : "");
        clean_under(base);
    }
}
