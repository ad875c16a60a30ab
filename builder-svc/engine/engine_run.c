/* Executes what the engine describes against the sandbox: base layers into
 * snapshots (blobs read from the shared store), snapshot stacks held while a
 * stage runs, merged trees for COPY --from, and one RUN in sbx_run(). */
#include "engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bld_sandbox.h"
#include "bld_snapshot.h"
#include "cleanup.h"
#include "log.h"
#include "fs.h"

#define MAX_BASE_LAYERS 256

int eng_base_unpack(eng_build *b, const char *manifest_json, const char *config_json,
                    char chain_out[KILN_DIGEST_STRLEN + 1], kiln_error **err)
{
    chain_out[0] = '\0';
    cJSON *m = cJSON_Parse(manifest_json);
    cJSON *c = cJSON_Parse(config_json);
    int rc = 0;
    bld_layer *layers = NULL;
    char(*paths)[ENG_PATH_MAX] = NULL;
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(m, "layers");
    const cJSON *rootfs = cJSON_GetObjectItemCaseSensitive(c, "rootfs");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(rootfs, "diff_ids");
    if (!cJSON_IsArray(ls) || !cJSON_IsArray(ids) ||
        cJSON_GetArraySize(ls) != cJSON_GetArraySize(ids) ||
        cJSON_GetArraySize(ls) > MAX_BASE_LAYERS) {
        rc = kiln_error_set(err, KILN_EINVAL, 0, "base image: layers and diff_ids do not match");
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(ls);
    if (n == 0)
        goto out;
    layers = calloc(n, sizeof(*layers));
    paths = calloc(n, sizeof(*paths));
    if (layers == NULL || paths == NULL) {
        rc = kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const cJSON *l = cJSON_GetArrayItem(ls, (int)i);
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(l, "digest");
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(l, "mediaType");
        const cJSON *di = cJSON_GetArrayItem(ids, (int)i);
        if (!cJSON_IsString(d) || !kiln_digest_valid(d->valuestring) || !cJSON_IsString(di) ||
            !kiln_digest_valid(di->valuestring)) {
            rc = kiln_error_set(err, KILN_EINVAL, 0, "base image: bad layer %zu", i);
            goto out;
        }
        snprintf(paths[i], ENG_PATH_MAX, "%s/store/blobs/sha256/%s", b->e->data_dir,
                 d->valuestring + 7);
        layers[i].blob_path = paths[i];
        layers[i].digest = d->valuestring;
        layers[i].media = bld_layer_media_parse(cJSON_IsString(mt) ? mt->valuestring : "");
        layers[i].diff_id = di->valuestring;
    }
    rc = bld_snapshot_ensure(chain_out, b->e->data_dir, layers, n, err);
    if (rc < 0)
        kiln_error_wrap(err, "unpack base layers");
out:
    free(layers);
    free(paths);
    cJSON_Delete(m);
    cJSON_Delete(c);
    return rc;
}

struct eng_stack {
    bld_snapshot_stack *s;
};

int eng_stack_acquire(eng_stack **out, eng_build *b, const char *chain, kiln_error **err)
{
    eng_stack *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    int rc = bld_snapshot_acquire(&s->s, b->e->data_dir, chain, err);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void eng_stack_release(eng_stack *s)
{
    if (s == NULL)
        return;
    bld_snapshot_release(s->s);
    free(s);
}

size_t eng_stack_len(const eng_stack *s)
{
    return s ? bld_snapshot_stack_len(s->s) : 0;
}

const char *const *eng_stack_dirs(const eng_stack *s)
{
    return s ? bld_snapshot_stack_dirs(s->s) : NULL;
}

struct eng_tree {
    char dir[ENG_PATH_MAX];  /* $DATA/sandbox/merge-XXXXXX */
    char root[ENG_PATH_MAX]; /* dir/root */
    int lock;                /* dir/.lock, flocked: bld_sandbox_cleanup_stale() skips it */
};

void eng_tree_free(eng_tree *t)
{
    if (t == NULL)
        return;
    eng_rmrf(t->dir);
    if (t->lock >= 0)
        close(t->lock);
    free(t);
}

const char *eng_tree_root(const eng_tree *t)
{
    return t->root;
}

int eng_tree_merge(eng_tree **out, eng_build *b, const char *const *dirs, size_t n,
                   kiln_error **err)
{
    eng_tree *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    t->lock = -1;
    snprintf(t->dir, sizeof(t->dir), "%s/sandbox", b->e->data_dir);
    if (kiln_mkdir_p(t->dir, 0700, err) < 0) {
        free(t);
        return kiln_error_wrap(err, "merge");
    }
    snprintf(t->dir, sizeof(t->dir), "%s/sandbox/merge-XXXXXX", b->e->data_dir);
    if (mkdtemp(t->dir) == NULL) {
        int e = errno;
        free(t);
        return kiln_error_set(err, KILN_EIO, e, "mkdtemp under %s/sandbox", b->e->data_dir);
    }
    char lockp[ENG_PATH_MAX + 8];
    snprintf(lockp, sizeof(lockp), "%s/.lock", t->dir);
    int rc = 0;
    if (snprintf(t->root, sizeof(t->root), "%s/root", t->dir) >= (int)sizeof(t->root))
        rc = kiln_error_set(err, KILN_EINVAL, 0, "data dir path too long");
    else if ((t->lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
             flock(t->lock, LOCK_EX) < 0 || mkdir(t->root, 0755) < 0)
        rc = kiln_error_set(err, KILN_EIO, errno, "prepare %s", t->dir);
    if (rc == 0 && (rc = bld_layers_merge(t->root, dirs, n, err)) < 0)
        kiln_error_wrap(err, "merge layers");
    if (rc < 0) {
        eng_tree_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

typedef struct out_ctx {
    eng_build *b;
    size_t stage, step;
} out_ctx;

static void on_output(void *ud, int stream, const char *line, size_t len)
{
    out_ctx *o = ud;
    const bld_build_events *ev = o->b->ev;
    if (ev && ev->output)
        ev->output(ev->ud, o->stage, o->step, stream, line, len);
}

static unsigned long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

/* The build's private network: made once, by the first RUN that needs it
 * (a build whose steps are all cached starts no pasta); every RUN of the
 * build on the private network joins it. */
static int build_net(eng_build *b, bld_netns **out, bool *made, kiln_error **err)
{
    pthread_mutex_lock(&b->net_mu);
    *made = b->net == NULL;
    unsigned long long t0 = now_us();
    int rc = b->net ? 0 : bld_netns_new(&b->net, NULL, err);
    if (*made && rc == 0)
        kiln_debug("sandbox", "build network: namespace and filter in %.2f ms",
                   (double)(now_us() - t0) / 1000.0);
    *out = b->net;
    pthread_mutex_unlock(&b->net_mu);
    return rc;
}

void eng_net_release(eng_build *b)
{
    if (b->net == NULL)
        return;
    unsigned long long t0 = now_us();
    bld_netns_free(b->net);
    b->net = NULL;
    kiln_debug("sandbox", "build network: stopped in %.2f ms", (double)(now_us() - t0) / 1000.0);
}

/* The sandbox's form of RUN mount m. */
static void mount_to_sbx(sbx_mount *o, const eng_mount *m)
{
    switch (m->type) {
    case ENG_MNT_BIND:
        o->type = SBX_MOUNT_BIND;
        break;
    case ENG_MNT_CACHE:
        o->type = SBX_MOUNT_CACHE;
        break;
    case ENG_MNT_TMPFS:
        o->type = SBX_MOUNT_TMPFS;
        break;
    case ENG_MNT_SECRET:
        o->type = SBX_MOUNT_SECRET;
        break;
    case ENG_MNT_SSH:
        o->type = SBX_MOUNT_SSH;
        break;
    }
    o->target = m->target;
    o->source = m->source;
    o->source_path = m->source_path;
    o->source_layers = m->source_layers;
    o->n_source_layers = m->n_source_layers;
    o->writable = m->writable;
    o->id = m->id;
    o->sharing = m->sharing == 1   ? SBX_CACHE_PRIVATE
                 : m->sharing == 2 ? SBX_CACHE_LOCKED
                                   : SBX_CACHE_SHARED;
    o->readonly = m->readonly;
    o->uid = m->uid >= 0 ? (uid_t)m->uid : 0;
    o->gid = m->gid >= 0 ? (gid_t)m->gid : 0;
    o->mode = m->mode >= 0 ? (mode_t)m->mode : 0;
    o->size = m->size;
}

/* Creates a fresh work dir for one RUN under data_dir/sandbox. */
static int make_work_dir(char work[ENG_PATH_MAX], const char *data_dir, kiln_error **err)
{
    snprintf(work, ENG_PATH_MAX, "%s/sandbox/work-XXXXXX", data_dir);
    char sbx[ENG_PATH_MAX];
    snprintf(sbx, sizeof(sbx), "%s/sandbox", data_dir);
    if (kiln_mkdir_p(sbx, 0700, err) < 0)
        return kiln_error_wrap(err, "RUN");
    if (mkdtemp(work) == NULL)
        return kiln_error_set(err, KILN_EIO, errno, "mkdtemp %s", work);
    return 0;
}

int eng_run(eng_build *b, const eng_run_desc *d, int *exit_code, kiln_error **err)
{
    *exit_code = -1;
    _cleanup_free_ sbx_mount *mounts = calloc(d->n_mounts + 1, sizeof(*mounts));
    if (mounts == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < d->n_mounts; i++)
        mount_to_sbx(&mounts[i], &d->mounts[i]);
    _cleanup_(eng_ssh_close) eng_ssh_socks ssh;
    int src = eng_ssh_open(&ssh, b, d->mounts, d->n_mounts, err);
    if (src < 0)
        return src;
    for (size_t i = 0; i < d->n_mounts && ssh.n; i++)
        if (d->mounts[i].type == ENG_MNT_SSH)
            mounts[i].source = ssh.paths[i];
    bld_netns *net = NULL;
    bool made = false;
    int nrc = d->net == ENG_NET_PRIVATE ? build_net(b, &net, &made, err) : 0;
    if (nrc < 0)
        return nrc;
    char work[ENG_PATH_MAX];
    if ((nrc = make_work_dir(work, b->e->data_dir, err)) < 0)
        return nrc;
    out_ctx oc = {b, d->stage, d->step};
    bld_run_spec rs = {
        .data_dir = b->e->data_dir,
        .lowers = d->lowers,
        .n_lowers = d->n_lowers,
        .upper_dir = d->upper,
        .work_dir = work,
        .argv = d->argv,
        .env = d->env,
        .cwd = d->cwd,
        .user = d->user,
        .network = d->net == ENG_NET_NONE   ? SBX_NET_NONE
                   : d->net == ENG_NET_HOST ? SBX_NET_HOST
                                            : SBX_NET_PRIVATE,
        .netns = net,
        .mounts = mounts,
        .n_mounts = d->n_mounts,
        .timeout_ms = b->spec->run_timeout_ms,
        .memory_bytes = b->spec->run_memory_bytes,
        .pids_max = b->spec->run_pids_max,
        .extra_hosts = b->spec->run_hosts,
        .ulimits = b->spec->run_ulimits,
        .n_ulimits = b->spec->n_run_ulimits,
        .shm_bytes = b->spec->run_shm_bytes,
        .rootfs = BLD_ROOTFS_AUTO,
        .on_output = on_output,
        .output_ud = &oc,
        .cancel = &b->stop,
    };
    bld_run_result res = {0};
    int rc = sbx_run(&rs, &res, err);
    /* "private, new": this RUN started the build's network (and waited for
     * pasta); bench/build.sh reads these lines. */
    kiln_debug("sandbox", "RUN setup %.2f ms (network %s)", (double)res.setup_us / 1000.0,
               made                            ? "private, new"
               : rs.network == SBX_NET_PRIVATE ? "private"
               : rs.network == SBX_NET_NONE    ? "none"
                                               : "host");
    rmdir(work);
    if (rc < 0)
        return rc;
    *exit_code = res.exit_code;
    if (res.signal)
        *exit_code = 128 + res.signal;
    return 0;
}

char *eng_preflight(const char *data_dir, bool *usable)
{
    bld_preflight_info pf;
    kiln_error *err = NULL;
    *usable = false;
    if (bld_preflight(&pf, data_dir, &err) < 0) {
        kiln_error_free(&err);
        return NULL;
    }
    *usable = pf.usable;
    return bld_preflight_json(&pf);
}

int eng_snapshot_prune(const char *data_dir, uint64_t max_age_s, kiln_error **err)
{
    return bld_snapshot_prune(data_dir, max_age_s, NULL, err);
}
