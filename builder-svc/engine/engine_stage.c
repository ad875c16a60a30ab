/* Runs one stage of the plan: sets up its base (image snapshots, an earlier
 * stage's result, or scratch), then each instruction in order, looking its
 * cache key up first.  RUN, COPY and ADD produce step diffs; the others
 * change the stage's image config.  Every instruction adds a history entry
 * (ARG excepted), with empty_layer when it produced no layer. */
#include "engine_stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cleanup.h"
#include "units.h"
#include "ignore.h"

#define ENG_MAX_MOUNTS 64

void stage_res_dispose(stage_res *r)
{
    eng_stack_release(r->stack);
    kiln_strv_dispose(&r->layers);
    kiln_strv_dispose(&r->layer_ids);
    for (size_t i = 0; i < r->n_hist; i++)
        free(r->hist[i].created_by);
    free(r->hist);
    cJSON_Delete(r->config);
    free(r->author);
    eng_tree_free(r->merged);
    free(r->lowers);
    free(r->recs);
    free(r->lazy);
    memset(r, 0, sizeof(*r));
}

static int add_hist(stage_res *r, const char *created_by, bool empty, int64_t created)
{
    if (r->n_hist == r->cap_hist) {
        size_t nc = r->cap_hist ? 2 * r->cap_hist : 16;
        eng_hist *h = realloc(r->hist, nc * sizeof(*h));
        if (h == NULL)
            return -1;
        r->hist = h;
        r->cap_hist = nc;
    }
    char *s = strdup(created_by);
    if (s == NULL)
        return -1;
    r->hist[r->n_hist++] = (eng_hist){s, empty, created};
    return 0;
}

/* Notes a finished step for --cache-to (layer: its index in r->layers, -1 none). */
static int add_rec(stage_res *r, const char *key, int64_t created, long layer)
{
    if (r->n_recs == r->cap_recs) {
        size_t nc = r->cap_recs ? 2 * r->cap_recs : 16;
        eng_step_rec *n = realloc(r->recs, nc * sizeof(*n));
        if (n == NULL)
            return -1;
        r->recs = n;
        r->cap_recs = nc;
    }
    eng_step_rec *e = &r->recs[r->n_recs++];
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->created = created;
    e->layer = layer;
    return 0;
}

/* Rebuilds r->lowers: the base snapshots, then this build's layers. */
static int refresh_lowers(stage_res *r)
{
    size_t ns = eng_stack_len(r->stack);
    const char **l = realloc(r->lowers, (ns + r->layers.n + 1) * sizeof(char *));
    if (l == NULL)
        return -1;
    const char *const *sd = eng_stack_dirs(r->stack);
    for (size_t i = 0; i < ns; i++)
        l[i] = sd[i];
    for (size_t i = 0; i < r->layers.n; i++)
        l[ns + i] = r->layers.v[i];
    l[ns + r->layers.n] = NULL;
    r->lowers = l;
    r->n_lowers = ns + r->layers.n;
    return 0;
}

/* Adds a step's layer (cs: a step dir, or a lazy imported step). */
static int push_layer(stage_res *r, const char *key, const eng_cached_step *cs)
{
    if (r->layers.n >= r->cap_lazy) {
        size_t nc = r->cap_lazy ? 2 * r->cap_lazy : 8;
        eng_lazy_layer *z = realloc(r->lazy, nc * sizeof(*z));
        if (z == NULL)
            return -1;
        r->lazy = z;
        r->cap_lazy = nc;
    }
    eng_lazy_layer *z = &r->lazy[r->layers.n];
    z->pending = cs->lazy;
    snprintf(z->key, sizeof(z->key), "%s", key);
    z->cs = *cs;
    r->fs_lazy = r->fs_lazy || cs->lazy;
    if (kiln_strv_push(&r->layers, cs->diff) < 0 || kiln_strv_push(&r->layer_ids, cs->id) < 0)
        return -1;
    return refresh_lowers(r);
}

static int replace_str(char **slot, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        return -1;
    free(*slot);
    *slot = d;
    return 0;
}

/* Makes the stage's filesystem real before anything reads it: unpacks its
 * base and the layers of lazily imported steps (in any order: each is a
 * layer of its own), then rebuilds lowers.  A fully cached build from a
 * registry cache never gets here and unpacks nothing.  held: the caller
 * holds lazy_mu (r is another, finished stage). */
static int ensure_fs(eng_ctx *c, stage_res *r, bool held, kiln_error **err)
{
    if (!r->fs_lazy)
        return 0;
    int rc = 0;
    if (r->lazy_base != NULL) {
        base_img *bi = r->lazy_base;
        if (!held)
            pthread_mutex_lock(&c->lazy_mu);
        if (!bi->unpacked) {
            eng_note(&c->b, "unpacking %s", bi->ref);
            rc = eng_base_unpack(&c->b, bi->manifest, bi->config, bi->chain, err);
            bi->unpacked = rc == 0;
        }
        if (!held)
            pthread_mutex_unlock(&c->lazy_mu);
        if (rc < 0)
            return kiln_error_wrap(err, "%s", bi->ref);
        memcpy(r->chain, bi->chain, sizeof(r->chain));
        r->lazy_base = NULL;
        if ((rc = eng_stack_acquire(&r->stack, &c->b, r->chain, err)) < 0)
            return rc;
    }
    for (size_t i = 0; i < r->layers.n; i++) {
        eng_lazy_layer *z = &r->lazy[i];
        if (!z->pending)
            continue;
        eng_cached_step cs;
        if (!(eng_cache_lookup(&c->b, z->key, &cs) == 1 && cs.layer && !cs.lazy)) {
            cs = z->cs;
            eng_note(&c->b, "unpacking cached layer %.19s", cs.blob.digest);
            if ((rc = eng_regcache_make(&c->b, z->key, &cs, err)) < 0)
                return rc;
        }
        if (replace_str(&r->layers.v[i], cs.diff) < 0 || replace_str(&r->layer_ids.v[i], cs.id) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        z->pending = false;
    }
    r->fs_lazy = false;
    return refresh_lowers(r) < 0 ? kiln_error_set(err, KILN_ENOSPC, 0, "out of memory") : 0;
}

static void set_key(char out[KILN_DIGEST_STRLEN + 1], const char *what, const char *a,
                    const char *b)
{
    kiln_sha256 *h = kiln_sha256_new();
    kiln_sha256_update(h, what, strlen(what) + 1);
    kiln_sha256_update(h, a, strlen(a) + 1);
    kiln_sha256_update(h, b ? b : "", strlen(b ? b : "") + 1);
    kiln_sha256_final_str(h, out);
    kiln_sha256_free(h);
}

/* FROM <stage>: r starts as a copy of p (lazy_mu held). */
static int copy_parent(stage_res *r, const stage_res *p, kiln_error **err)
{
    memcpy(r->base_manifest, p->base_manifest, sizeof(r->base_manifest));
    memcpy(r->chain, p->chain, sizeof(r->chain));
    memcpy(r->key, p->key, sizeof(r->key));
    r->lazy_base = p->lazy_base;
    r->fs_lazy = p->lazy_base != NULL;
    r->config = cJSON_Duplicate(p->config, true);
    r->author = p->author ? strdup(p->author) : NULL;
    if (r->config == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < p->layers.n; i++)
        if (push_layer(r, p->lazy[i].key, &p->lazy[i].cs) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < p->layers.n; i++) /* as p has them now (made real or not) */
        if (replace_str(&r->layers.v[i], p->layers.v[i]) < 0 ||
            replace_str(&r->layer_ids.v[i], p->layer_ids.v[i]) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < p->layers.n; i++) {
        r->lazy[i].pending = p->lazy[i].pending;
        r->fs_lazy = r->fs_lazy || p->lazy[i].pending;
    }
    for (size_t i = 0; i < p->n_hist; i++)
        if (add_hist(r, p->hist[i].created_by, p->hist[i].empty_layer, p->hist[i].created) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < p->n_recs; i++)
        if (add_rec(r, p->recs[i].key, p->recs[i].created, p->recs[i].layer) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    /* Triggers of the parent ran in this stage (the plan spliced them). */
    cJSON_DeleteItemFromObjectCaseSensitive(r->config, "OnBuild");
    return 0;
}

static int setup_base(eng_ctx *c, const bld_stage *st, stage_res *r, kiln_error **err)
{
    int rc = 0;
    if (st->base_kind == BLD_BASE_STAGE) {
        const stage_res *p = &c->res[st->base_stage];
        /* Another stage may be making p's filesystem real meanwhile. */
        pthread_mutex_lock(&c->lazy_mu);
        rc = copy_parent(r, p, err);
        pthread_mutex_unlock(&c->lazy_mu);
        if (rc < 0)
            return rc;
    } else if (st->base_kind == BLD_BASE_IMAGE) {
        base_img *bi = eng_find_base(c, st->base_image, st->platform);
        if (bi == NULL)
            return kiln_error_set(err, KILN_EINTERNAL, 0, "base %s not fetched", st->base_image);
        /* Unpacked when a step first reads the filesystem (ensure_fs). */
        r->lazy_base = bi;
        r->fs_lazy = true;
        snprintf(r->base_manifest, sizeof(r->base_manifest), "%s", bi->digest);
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(bi->parsed, "config");
        r->config = cJSON_IsObject(cfg) ? cJSON_Duplicate(cfg, true) : cJSON_CreateObject();
        const cJSON *au = cJSON_GetObjectItemCaseSensitive(bi->parsed, "author");
        if (cJSON_IsString(au))
            r->author = strdup(au->valuestring);
        if (r->config == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        cJSON_DeleteItemFromObjectCaseSensitive(r->config, "OnBuild");
        set_key(r->key, "from", bi->digest, st->platform);
    } else {
        r->config = cJSON_CreateObject();
        if (r->config == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        set_key(r->key, "scratch", "", st->platform);
    }
    if (r->lazy_base == NULL && (rc = eng_stack_acquire(&r->stack, &c->b, r->chain, err)) < 0)
        return rc;
    if (refresh_lowers(r) < 0)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return 0;
}

/* a + "/" + b into out (ENG_PATH_MAX); -1 when too long. */
static int join(char out[ENG_PATH_MAX], const char *a, const char *b)
{
    int n = snprintf(out, ENG_PATH_MAX, "%s/%s", a, b);
    return n < 0 || n >= ENG_PATH_MAX ? -1 : 0;
}

/* The workdir an instruction runs in, absolute. */
static void workdir_of(char out[ENG_PATH_MAX], const stage_res *r, const bld_instr *in)
{
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(r->config, "WorkingDir");
    const char *base = cJSON_IsString(w) && w->valuestring[0] ? w->valuestring : "/";
    const char *wd = in->workdir;
    if (wd == NULL || wd[0] == '\0')
        snprintf(out, ENG_PATH_MAX, "%s", base);
    else if (join(out, wd[0] == '/' ? "" : base, wd) < 0)
        snprintf(out, ENG_PATH_MAX, "/");
}

/* A stage's merged rootfs (for COPY --from and bind mounts), made once. */
static int merged_of(eng_ctx *c, size_t stage, const char **out, kiln_error **err)
{
    stage_res *p = &c->res[stage];
    if (!p->done)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "stage %zu not built", stage);
    int rc = 0;
    pthread_mutex_lock(&c->lazy_mu);
    if (p->merged == NULL && (rc = ensure_fs(c, p, true, err)) == 0)
        rc = eng_tree_merge(&p->merged, &c->b, p->lowers, p->n_lowers, err);
    if (rc == 0)
        *out = eng_tree_root(p->merged);
    pthread_mutex_unlock(&c->lazy_mu);
    return rc < 0 ? kiln_error_wrap(err, "stage %zu", stage) : 0;
}

/* An image used by COPY --from or a mount: unpacked and held; merged on demand. */
static int image_of_locked(eng_ctx *c, base_img *bi, const char *ref, bool merge, kiln_error **err)
{
    int rc = 0;
    if (!bi->unpacked) {
        eng_note(&c->b, "unpacking %s", ref);
        if ((rc = eng_base_unpack(&c->b, bi->manifest, bi->config, bi->chain, err)) < 0)
            return kiln_error_wrap(err, "%s", ref);
        bi->unpacked = true;
    }
    if (bi->stack == NULL && (rc = eng_stack_acquire(&bi->stack, &c->b, bi->chain, err)) < 0)
        return rc;
    if (merge && bi->merged == NULL &&
        (rc = eng_tree_merge(&bi->merged, &c->b, eng_stack_dirs(bi->stack),
                             eng_stack_len(bi->stack), err)) < 0)
        return kiln_error_wrap(err, "%s", ref);
    return 0;
}

static int image_of(eng_ctx *c, const char *ref, const char *platform, bool merge, base_img **out,
                    kiln_error **err)
{
    base_img *bi = eng_find_base(c, ref, platform);
    if (bi == NULL)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "image %s not fetched", ref);
    pthread_mutex_lock(&c->lazy_mu);
    int rc = image_of_locked(c, bi, ref, merge, err);
    pthread_mutex_unlock(&c->lazy_mu);
    if (rc == 0)
        *out = bi;
    return rc;
}

/* ---- RUN ---- */

static int run_mounts(eng_ctx *c, const bld_stage *st, const bld_instr *in, const char *wd,
                      eng_mount *out, size_t *n_out, char (*targets)[ENG_PATH_MAX],
                      kiln_error **err)
{
    const bld_run *run = &in->u.run;
    *n_out = 0;
    if (run->n_mounts > ENG_MAX_MOUNTS)
        return kiln_error_set(err, KILN_EINVAL, 0, "too many --mount options");
    for (size_t i = 0; i < run->n_mounts; i++) {
        const bld_mount *m = &run->mounts[i];
        eng_mount *o = &out[*n_out];
        memset(o, 0, sizeof(*o));
        if (m->target == NULL && m->type == BLD_MOUNT_SECRET && m->env != NULL)
            continue; /* only an environment variable (secret_env) */
        if (m->target == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "--mount without target");
        if (join(targets[i], m->target[0] == '/' ? "" : wd, m->target) < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "mount target too long");
        o->target = targets[i];
        o->uid = m->uid;
        o->gid = m->gid;
        o->mode = m->mode;
        o->id = m->id;
        o->readonly = m->readonly;
        switch (m->type) {
        case BLD_MOUNT_BIND:
            o->type = ENG_MNT_BIND;
            o->source_path = m->source;
            o->writable = !m->readonly;
            if (m->from_kind == BLD_REF_STAGE) {
                stage_res *p = &c->res[m->from_stage];
                pthread_mutex_lock(&c->lazy_mu);
                int rc = ensure_fs(c, p, true, err);
                pthread_mutex_unlock(&c->lazy_mu);
                if (rc < 0)
                    return rc;
                o->source_layers = p->lowers;
                o->n_source_layers = p->n_lowers;
            } else if (m->from_kind == BLD_REF_IMAGE) {
                base_img *bi = NULL;
                int rc = image_of(c, m->from, st->platform, false, &bi, err);
                if (rc < 0)
                    return rc;
                o->source_layers = eng_stack_dirs(bi->stack);
                o->n_source_layers = eng_stack_len(bi->stack);
            } else {
                o->source = c->b.spec->context_dir;
            }
            break;
        case BLD_MOUNT_CACHE:
            o->type = ENG_MNT_CACHE;
            o->sharing = m->sharing == BLD_SHARING_PRIVATE  ? 1
                         : m->sharing == BLD_SHARING_LOCKED ? 2
                                                            : 0;
            break;
        case BLD_MOUNT_TMPFS:
            o->type = ENG_MNT_TMPFS;
            o->size = m->size > 0 ? (uint64_t)m->size : 0;
            break;
        case BLD_MOUNT_SECRET: {
            const char *path = NULL;
            for (size_t k = 0; k < c->b.spec->n_secrets; k++)
                if (m->id && strcmp(c->b.spec->secrets[k].id, m->id) == 0)
                    path = c->b.spec->secrets[k].path;
            if (path == NULL) {
                if (m->required)
                    return kiln_error_set(err, KILN_EINVAL, 0, "secret %s: not provided",
                                          m->id ? m->id : "");
                continue;
            }
            o->type = ENG_MNT_SECRET;
            o->source = path;
            break;
        }
        case BLD_MOUNT_SSH:
            if (!bld_ssh_session_has(c->b.spec->ssh, m->id)) {
                if (m->required) /* engine.c refused the build before; kept as a wall */
                    return kiln_error_set(err, KILN_EINVAL, 0, ENG_SSH_MISSING_FMT, m->id, m->id,
                                          m->id);
                continue;
            }
            o->type = ENG_MNT_SSH;
            o->readonly = false; /* the RUN connects to the socket */
            break;
        }
        (*n_out)++;
    }
    return 0;
}

/* SSH_AUTH_SOCK names the RUN's first agent socket, as in BuildKit (unless
 * the image's environment sets it). */
static int ssh_env(const eng_mount *mounts, size_t n, kiln_strv *env, kiln_error **err)
{
    for (size_t i = 0; env->v && i < env->n; i++)
        if (strncmp(env->v[i], "SSH_AUTH_SOCK=", 14) == 0)
            return 0;
    for (size_t i = 0; i < n; i++) {
        if (mounts[i].type != ENG_MNT_SSH)
            continue;
        const char *t = mounts[i].target; /* joined to the workdir: "//run/…" */
        while (t[0] == '/' && t[1] == '/')
            t++;
        _cleanup_free_ char *kv = NULL;
        if (asprintf(&kv, "SSH_AUTH_SOCK=%s", t) < 0 || kiln_strv_push(env, kv) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        return 0;
    }
    return 0;
}

#define SECRET_ENV_MAX (64 * 1024)

/* Secrets exposed as environment variables (--mount=type=secret,env=NAME). */
static int secret_env(eng_ctx *c, const bld_instr *in, kiln_strv *out, kiln_error **err)
{
    for (size_t i = 0; i < in->u.run.n_mounts; i++) {
        const bld_mount *m = &in->u.run.mounts[i];
        if (m->type != BLD_MOUNT_SECRET || m->env == NULL || m->id == NULL)
            continue;
        const char *path = NULL;
        for (size_t k = 0; k < c->b.spec->n_secrets; k++)
            if (strcmp(c->b.spec->secrets[k].id, m->id) == 0)
                path = c->b.spec->secrets[k].path;
        if (path == NULL)
            continue; /* run_mounts() refused a required one */
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (f == NULL)
            return kiln_error_set(err, KILN_EINVAL, errno, "secret %s", m->id);
        _cleanup_free_ char *buf = calloc(1, SECRET_ENV_MAX + 1);
        if (buf == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
        size_t n = fread(buf, 1, SECRET_ENV_MAX + 1, f);
        if (n > SECRET_ENV_MAX || memchr(buf, '\0', n) != NULL)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "secret %s: too large or binary for env=", m->id);
        _cleanup_free_ char *kv = NULL;
        if (asprintf(&kv, "%s=%s", m->env, buf) < 0 || kiln_strv_push(out, kv) < 0)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    return 0;
}

/* ENV in effect, then the ARGs of a RUN: the plan lists only ARGs set after
 * any ENV of the same name, and those replace it (BuildKit's state env). */
static int env_of(kiln_strv *out, const bld_instr *in)
{
    for (size_t i = 0; i < in->n_env; i++) {
        bool replaced = false;
        for (size_t k = 0; k < in->n_args && !replaced; k++)
            replaced = in->args[k].value && strcmp(in->env[i].key, in->args[k].key) == 0;
        _cleanup_free_ char *kv = NULL;
        if (!replaced &&
            (asprintf(&kv, "%s=%s", in->env[i].key, in->env[i].value ? in->env[i].value : "") < 0 ||
             kiln_strv_push(out, kv) < 0))
            return -1;
    }
    for (size_t i = 0; i < in->n_args; i++) {
        if (in->args[i].value == NULL)
            continue;
        _cleanup_free_ char *kv = NULL;
        if (asprintf(&kv, "%s=%s", in->args[i].key, in->args[i].value) < 0 ||
            kiln_strv_push(out, kv) < 0)
            return -1;
    }
    return 0;
}

/* Heredoc scripts of a RUN: written to scratch/pipes and bind-mounted
 * read-only on their directory (/dev/pipes) as one extra mount. */
static int run_files(const bld_instr *in, const char *scratch, eng_mount *m,
                     char target[ENG_PATH_MAX], char src[ENG_PATH_MAX], kiln_error **err)
{
    const bld_run *run = &in->u.run;
    if (snprintf(src, ENG_PATH_MAX, "%s/pipes", scratch) >= ENG_PATH_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "data dir path too long");
    if (mkdir(src, 0755) < 0)
        return kiln_error_set(err, KILN_EIO, errno, "mkdir %s", src);
    for (size_t i = 0; i < run->n_files; i++) {
        const bld_run_file *f = &run->files[i];
        const char *slash = strrchr(f->path, '/');
        if (slash == NULL || slash == f->path || strchr(slash + 1, '.') == slash + 1)
            return kiln_error_set(err, KILN_EINVAL, 0, "RUN: bad script path %s", f->path);
        if (i == 0)
            snprintf(target, ENG_PATH_MAX, "%.*s", (int)(slash - f->path), f->path);
        else if (strncmp(target, f->path, (size_t)(slash - f->path)) != 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "RUN: scripts in different dirs");
        char p[2 * ENG_PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", src, slash + 1);
        _cleanup_fclose_ FILE *fp = fopen(p, "wxe");
        if (fp == NULL || fputs(f->content, fp) < 0 || fflush(fp) != 0 ||
            chmod(p, f->mode ? f->mode : 0755) < 0)
            return kiln_error_set(err, KILN_EIO, errno, "write %s", p);
    }
    memset(m, 0, sizeof(*m));
    m->type = ENG_MNT_BIND;
    m->target = target;
    m->source = src;
    m->uid = m->gid = m->mode = -1;
    return 0;
}

static int exec_run(eng_ctx *c, size_t si, size_t step, const bld_instr *in, stage_res *r,
                    const char *upper, const char *scratch, kiln_error **err)
{
    if (in->u.run.insecure)
        return kiln_error_set(err, KILN_EPERM, 0,
                              "RUN --security=insecure needs the security.insecure entitlement, "
                              "which kiln-builder does not grant: every RUN is sandboxed");
    if (!c->b.e->run_usable)
        return kiln_error_set(err, KILN_EPRECOND, 0, "RUN is not possible on this host (%s)",
                              c->b.e->preflight_json ? c->b.e->preflight_json : "no preflight");
    char wd[ENG_PATH_MAX];
    workdir_of(wd, r, in);
    eng_mount mounts[ENG_MAX_MOUNTS + 1];
    /* Mount targets (made absolute) and the scripts' dir: two extra slots. */
    _cleanup_free_ char(*targets)[ENG_PATH_MAX] = calloc(ENG_MAX_MOUNTS + 2, ENG_PATH_MAX);
    if (targets == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    size_t nm = 0;
    int rc = run_mounts(c, &c->plan->stages[si], in, wd, mounts, &nm, targets, err);
    if (rc < 0)
        return rc;
    if (in->u.run.n_files > 0) {
        if ((rc = run_files(in, scratch, &mounts[nm], targets[ENG_MAX_MOUNTS],
                            targets[ENG_MAX_MOUNTS + 1], err)) < 0)
            return rc;
        nm++;
    }
    kiln_strv env = {0}, argv = {0};
    for (size_t i = 0; i < in->u.run.argv.n; i++)
        if (kiln_strv_push(&argv, in->u.run.argv.v[i]) < 0)
            rc = -1;
    if (rc < 0 || env_of(&env, in) < 0) {
        kiln_strv_dispose(&env);
        kiln_strv_dispose(&argv);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    if ((rc = secret_env(c, in, &env, err)) < 0 || (rc = ssh_env(mounts, nm, &env, err)) < 0) {
        kiln_strv_dispose(&env);
        kiln_strv_dispose(&argv);
        return rc;
    }
    const char *user = in->user;
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(r->config, "User");
    if ((user == NULL || !*user) && cJSON_IsString(u) && u->valuestring[0])
        user = u->valuestring;
    int net = eng_run_network(c->b.spec, &in->u.run);
    if (net == ENG_NET_HOST && !c->b.e->allow_host_network)
        return kiln_error_set(err, KILN_EPERM, 0, "%s", ENG_HOST_NET_REFUSED);
    eng_run_desc d = {
        .argv = (const char *const *)argv.v,
        .env = (const char *const *)env.v,
        .cwd = wd,
        .user = user && *user ? user : NULL,
        .net = net,
        .mounts = mounts,
        .n_mounts = nm,
        .lowers = r->lowers,
        .n_lowers = r->n_lowers,
        .upper = upper,
        .stage = si,
        .step = step,
    };
    const char *empty[] = {NULL};
    if (env.v == NULL)
        d.env = empty;
    int code = -1;
    rc = eng_run(&c->b, &d, &code, err);
    kiln_strv_dispose(&env);
    kiln_strv_dispose(&argv);
    if (rc < 0)
        return rc;
    if (code != 0)
        return kiln_error_set(err, KILN_EREMOTE, 0,
                              "process \"%s\" did not complete successfully: exit code: %d",
                              in->u.run.command ? in->u.run.command : in->original, code);
    return 0;
}

/* ---- COPY / ADD ---- */

/* Fills d for in; srcs has room for every source. */
static int copy_desc(eng_ctx *c, const bld_instr *in, stage_res *r, eng_copy_desc *d,
                     eng_copy_src *srcs, char dest[ENG_PATH_MAX], kiln_error **err)
{
    const bld_copy *cp = &in->u.copy;
    bool add = in->kind == BLD_INSTR_ADD;
    memset(d, 0, sizeof(*d));
    d->what = add ? "ADD" : "COPY";
    for (size_t i = 0; i < cp->n_sources; i++) {
        const bld_source *s = &cp->sources[i];
        if (s->kind == BLD_SRC_GIT) {
            _cleanup_free_ char *shown = eng_redact_dup(s->path);
            return kiln_error_set(err, KILN_ENOTSUP, 0,
                                  "ADD %s: git sources are not supported (clone in a RUN step, "
                                  "or ADD an archive URL)",
                                  shown ? shown : "<git>");
        }
        if (s->kind == BLD_SRC_URL) {
            srcs[i] = (eng_copy_src){.url = s->path};
            continue;
        }
        if (s->kind == BLD_SRC_HEREDOC) {
            srcs[i] = (eng_copy_src){NULL, in->heredocs[s->heredoc].content, s->path};
            continue;
        }
        srcs[i] = (eng_copy_src){s->path, NULL, NULL};
    }
    d->srcs = srcs;
    d->n_srcs = cp->n_sources;
    char wd[ENG_PATH_MAX];
    workdir_of(wd, r, in);
    size_t dl = strlen(cp->dest);
    d->dest_is_dir = dl > 0 && (cp->dest[dl - 1] == '/' || strcmp(cp->dest, ".") == 0 ||
                                (dl >= 2 && strcmp(cp->dest + dl - 2, "/.") == 0));
    if (join(dest, cp->dest[0] == '/' ? "" : wd, cp->dest) < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "%s: destination too long", d->what);
    d->dest = dest;
    if (cp->from_kind != BLD_REF_NONE) {
        d->src_root = NULL; /* copy_root(), only when the step runs */
    } else {
        if (c->b.spec->context_dir == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "%s: no build context", d->what);
        d->src_root = c->b.spec->context_dir;
        d->ignore = c->b.ignore;
    }
    int rc = eng_resolve_owner(&d->uid, &d->gid, cp->chown_user, cp->chown_group, r->lowers,
                               r->n_lowers, err);
    if (rc < 0)
        return rc;
    d->mode = cp->mode;
    d->mode_sym = cp->mode < 0 ? cp->chmod : NULL;
    d->extract = add && cp->unpack != 0;
    d->extract_urls = add && cp->unpack == 1;
    d->checksum = cp->checksum;
    d->cancel = c->b.spec->cancel;
    if (cp->checksum && cp->n_sources != 1)
        return kiln_error_set(err, KILN_EINVAL, 0, "ADD --checksum: only with a single URL");
    d->parents = cp->parents;
    d->lowers = r->lowers;
    d->n_lowers = r->n_lowers;
    return 0;
}

/* The source tree of COPY --from (a stage's or an image's merged rootfs),
 * made only when the step runs: its cache key uses the stage's key or the
 * image's digest instead of the tree's content. */
static int copy_root(eng_ctx *c, const bld_stage *st, const bld_instr *in, eng_copy_desc *d,
                     kiln_error **err)
{
    const bld_copy *cp = &in->u.copy;
    if (cp->from_kind == BLD_REF_STAGE)
        return merged_of(c, cp->from_stage, &d->src_root, err);
    if (cp->from_kind == BLD_REF_IMAGE) {
        base_img *bi = NULL;
        int rc = image_of(c, cp->from, st->platform, true, &bi, err);
        if (rc < 0)
            return rc;
        d->src_root = eng_tree_root(bi->merged);
    }
    return 0;
}

/* What COPY --from reads, for its cache key: a stage's key determines its
 * layers; an image's digest its content. */
static void hash_copy_from(eng_ctx *c, const bld_stage *st, const bld_instr *in, kiln_sha256 *h)
{
    const bld_copy *cp = &in->u.copy;
    const char *id = "";
    if (cp->from_kind == BLD_REF_STAGE)
        id = c->res[cp->from_stage].key;
    else if (cp->from_kind == BLD_REF_IMAGE) {
        base_img *bi = eng_find_base(c, cp->from, st->platform);
        id = bi ? bi->digest : cp->from;
    }
    kiln_sha256_update(h, id, strlen(id) + 1);
}

/* ---- one instruction ---- */

static void fail_at(stage_res *r, int line, const char *text)
{
    r->failed_line = line;
    eng_redact(r->failed_text, sizeof(r->failed_text), text);
}

static bool fs_step(bld_instr_kind k)
{
    return k == BLD_INSTR_RUN || k == BLD_INSTR_COPY || k == BLD_INSTR_ADD ||
           k == BLD_INSTR_WORKDIR;
}

/* Adds to h what a RUN reads besides its text: the content of bind mounts
 * from the build context. */
static int hash_run_inputs(eng_ctx *c, const bld_instr *in, kiln_sha256 *h, kiln_error **err)
{
    for (size_t i = 0; i < in->u.run.n_mounts; i++) {
        const bld_mount *m = &in->u.run.mounts[i];
        if (m->type != BLD_MOUNT_BIND || m->from_kind != BLD_REF_NONE ||
            c->b.spec->context_dir == NULL)
            continue;
        eng_copy_src src = {m->source && *m->source ? m->source : ".", NULL, NULL};
        eng_copy_desc d = {.what = "RUN --mount",
                           .srcs = &src,
                           .n_srcs = 1,
                           .dest = "/",
                           .src_root = c->b.spec->context_dir,
                           .ignore = c->b.ignore};
        int rc = eng_copy_hash(&d, h, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --exclude patterns as a matcher (NULL when none). */
static int excludes_of(const bld_instr *in, struct kiln_ignore **out, kiln_error **err)
{
    *out = NULL;
    if ((in->kind != BLD_INSTR_COPY && in->kind != BLD_INSTR_ADD) || in->u.copy.excludes.n == 0)
        return 0;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (m == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < in->u.copy.excludes.n; i++)
        fprintf(m, "%s\n", in->u.copy.excludes.v[i]);
    fclose(m);
    int rc = kiln_ignore_parse(out, text, len, err);
    return rc < 0 ? kiln_error_wrap(err, "--exclude") : 0;
}

/* Produces the step's diff in t. */
static int exec_step(eng_ctx *c, size_t si, size_t step, const bld_instr *in, stage_res *r,
                     eng_copy_desc *cd, eng_step_tmp *t, kiln_error **err)
{
    if (in->kind == BLD_INSTR_RUN) {
        /* Another platform's RUN runs under QEMU user emulation when a
         * binfmt_misc handler with the F flag is registered for it (the
         * kernel then runs the image's binaries through it, inside the
         * sandbox as any other); else the message names what is missing. */
        const bld_stage *st = &c->plan->stages[si];
        char by[64];
        int rc =
            eng_platform_check(c->b.e, c->plan->build_platform, st->platform, by, sizeof(by), err);
        if (rc < 0)
            return rc;
        return exec_run(c, si, step, in, r, t->diff, t->dir, err);
    }
    if (in->kind == BLD_INSTR_WORKDIR) {
        char wd[ENG_PATH_MAX];
        bld_instr tmp = *in;
        tmp.workdir = in->u.str;
        workdir_of(wd, r, &tmp);
        bool created = false;
        return eng_workdir_mkdir(wd, r->lowers, r->n_lowers, t->diff, &created, err);
    }
    cd->upper = t->diff;
    cd->scratch = t->dir;
    int rc = copy_root(c, &c->plan->stages[si], in, cd, err);
    return rc < 0 ? rc : eng_copy_exec(cd, err);
}

/* A lazy step of the local index is usable while the pusher still has its
 * blob (binding it again checks). */
static bool lazy_usable(eng_ctx *c, const eng_cached_step *cs)
{
    kiln_error *e = NULL;
    bool ok = eng_regcache_rebind(&c->b, cs, &e) == 0;
    kiln_error_free(&e);
    return ok;
}

/* One step's state from its key to its execution. */
typedef struct step_run {
    bool is_copy, link;
    eng_copy_desc cd;   /* COPY / ADD: what is copied (points into srcs, dest) */
    eng_copy_src *srcs; /* its sources */
    char dest[ENG_PATH_MAX];
    struct kiln_ignore *excl; /* its --exclude patterns, or NULL */
    eng_step_tmp t;           /* begun before hashing when a download is part of the key */
    char key[KILN_DIGEST_STRLEN + 1];
} step_run;

/* Allocates what step in needs before its key is computed. */
static int step_run_init(step_run *s, const bld_instr *in, kiln_error **err)
{
    s->is_copy = in->kind == BLD_INSTR_COPY || in->kind == BLD_INSTR_ADD;
    s->link = s->is_copy && in->u.copy.link;
    s->srcs = calloc((s->is_copy ? in->u.copy.n_sources : 0) + 1, sizeof(*s->srcs));
    if (s->srcs == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return excludes_of(in, &s->excl, err);
}

/* Drops the step dir (unless committed) and frees what s holds. */
static void step_run_release(step_run *s)
{
    eng_step_abort(&s->t);
    kiln_ignore_free(s->excl);
    s->excl = NULL;
    free(s->srcs);
    s->srcs = NULL;
}

/* Hashes what a COPY or ADD reads into h, filling s->cd on the way. */
static int hash_copy_inputs(eng_ctx *c, size_t si, const bld_instr *in, stage_res *r, step_run *s,
                            kiln_sha256 *h, kiln_error **err)
{
    /* Resolving the destination and --chown reads the image. */
    int rc = ensure_fs(c, r, false, err);
    if (rc == 0)
        rc = copy_desc(c, in, r, &s->cd, s->srcs, s->dest, err);
    s->cd.exclude = s->excl;
    if (rc == 0 && s->link) {
        char res[ENG_PATH_MAX + 64];
        int n = snprintf(res, sizeof(res), "%s|%ld|%ld", s->cd.dest, s->cd.uid, s->cd.gid);
        kiln_sha256_update(h, res, (size_t)n + 1);
        s->cd.lowers = NULL; /* made on an empty tree: parents are created afresh */
        s->cd.n_lowers = 0;
    }
    if (rc == 0 && in->u.copy.from_kind == BLD_REF_NONE && eng_copy_fetches_early(&s->cd) &&
        (rc = eng_step_begin(&c->b, &s->t, err)) == 0)
        s->cd.scratch = s->t.dir;
    if (rc == 0 && in->u.copy.from_kind != BLD_REF_NONE)
        hash_copy_from(c, &c->plan->stages[si], in, h);
    else if (rc == 0)
        rc = eng_copy_hash(&s->cd, h, err);
    return rc;
}

/* The step's cache key into s->key: parent key + the expanded instruction +
 * what it reads. */
static int step_key(eng_ctx *c, size_t si, const bld_instr *in, stage_res *r, step_run *s,
                    kiln_error **err)
{
    kiln_sha256 *h = kiln_sha256_new();
    if (h == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    /* COPY --link: the layer does not depend on what is below it, so its key
     * leaves the parent out (a changed base reuses it); what it resolved
     * against the image (destination, owner) goes in instead. */
    const char *parent = s->link ? "link" : r->key;
    kiln_sha256_update(h, parent, strlen(parent) + 1);
    eng_hash_instr(h, in);
    int rc = 0;
    if (s->is_copy)
        rc = hash_copy_inputs(c, si, in, r, s, h, err);
    else if (in->kind == BLD_INSTR_RUN)
        rc = hash_run_inputs(c, in, h, err);
    kiln_sha256_final_str(h, s->key);
    kiln_sha256_free(h);
    return rc;
}

/* Looks key up in the local cache, then in the --cache-from caches
 * (unless --no-cache); *how says where it was found. */
static int find_cached(eng_ctx *c, const char *key, eng_cached_step *cs, bool *cached, int *how,
                       kiln_error **err)
{
    *cached = false;
    *how = BLD_STEP_RAN;
    if (c->b.spec->no_cache)
        return 0;
    *cached = eng_cache_lookup(&c->b, key, cs) == 1;
    if (*cached && cs->lazy && !lazy_usable(c, cs))
        *cached = false;
    if (*cached) {
        *how = BLD_STEP_CACHED;
        return 0;
    }
    memset(cs, 0, sizeof(*cs));
    int rc = eng_regcache_defer(&c->b, key, cs, err);
    *cached = rc == 1;
    if (*cached)
        *how = BLD_STEP_CACHED_REGISTRY;
    return rc < 0 ? rc : 0;
}

/* Produces a step the caches did not have: runs it in its step dir and
 * commits the diff, or records a step that changes no files. */
static int produce_step(eng_ctx *c, size_t si, size_t step, const bld_instr *in, stage_res *r,
                        step_run *s, eng_cached_step *cs, kiln_error **err)
{
    if (!fs_step(in->kind))
        return eng_cache_record_empty(&c->b, s->key, cs, err);
    int rc = ensure_fs(c, r, false, err);
    if (rc == 0 && (s->t.dir[0] || (rc = eng_step_begin(&c->b, &s->t, err)) == 0)) {
        rc = exec_step(c, si, step, in, r, &s->cd, &s->t, err);
        if (rc == 0)
            rc = eng_step_commit(&c->b, &s->t, s->key, cs, err);
    }
    return rc;
}

/* Chains the step's key into the stage's and records its layer, history
 * entry and cache record. */
static int record_step(stage_res *r, const bld_instr *in, const char *shown, const step_run *s,
                       const eng_cached_step *cs, kiln_error **err)
{
    if (s->link) /* the chain goes on from both */
        set_key(r->key, "linked", r->key, s->key);
    else
        memcpy(r->key, s->key, sizeof(r->key));
    if (cs->layer && push_layer(r, s->key, cs) < 0)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (in->kind != BLD_INSTR_ARG && add_hist(r, shown, !cs->layer, cs->created) < 0)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (add_rec(r, s->key, cs->created, cs->layer ? (long)r->layers.n - 1 : -1) < 0)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return 0;
}

static int run_step(eng_ctx *c, size_t si, size_t step, const bld_instr *in, stage_res *r,
                    kiln_error **err)
{
    const bld_build_events *ev = c->b.ev;
    unsigned long long t0 = kiln_now_ms();
    /* What events and the history show: URL credentials redacted. */
    _cleanup_free_ char *shown = eng_redact_dup(in->original);
    if (shown == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (ev && ev->step_started)
        ev->step_started(ev->ud, si, step, shown, in->line);
    if (eng_canceled(&c->b))
        return kiln_error_set(err, KILN_ECANCELED, 0, "build canceled");
    step_run s = {0};
    eng_cached_step cs = {0};
    bool cached = false;
    int how = BLD_STEP_RAN;
    int rc = step_run_init(&s, in, err);
    if (rc == 0)
        rc = step_key(c, si, in, r, &s, err);
    if (rc == 0)
        rc = find_cached(c, s.key, &cs, &cached, &how, err);
    if (rc == 0 && !cached)
        rc = produce_step(c, si, step, in, r, &s, &cs, err);
    step_run_release(&s);
    if (rc < 0)
        return rc;
    if (in->kind != BLD_INSTR_RUN && !s.is_copy && (rc = eng_apply_meta(r, in, err)) < 0)
        return rc;
    if ((rc = record_step(r, in, shown, &s, &cs, err)) < 0)
        return rc;
    eng_count_step(&c->b, cached);
    if (ev && ev->step_done)
        ev->step_done(ev->ud, si, step, how, s.key, cs.layer ? cs.size : 0, kiln_now_ms() - t0);
    return 0;
}

int eng_run_stage(eng_ctx *c, size_t si, kiln_error **err)
{
    const bld_stage *st = &c->plan->stages[si];
    stage_res *r = &c->res[si];
    const bld_build_events *ev = c->b.ev;
    if (ev && ev->stage_started) {
        char base[64];
        const char *bn = st->base_image;
        if (st->base_kind == BLD_BASE_SCRATCH)
            bn = "scratch";
        else if (st->base_kind == BLD_BASE_STAGE) {
            const bld_stage *p = &c->plan->stages[st->base_stage];
            snprintf(base, sizeof(base), "%s%zu", p->name ? "" : "stage ", p->index);
            bn = p->name ? p->name : base;
        }
        ev->stage_started(ev->ud, si, st->name, bn);
    }
    int rc = setup_base(c, st, r, err);
    if (rc < 0) {
        fail_at(r, st->line, st->original);
        return rc;
    }
    for (size_t i = 0; i < st->n_instrs; i++) {
        if ((rc = run_step(c, si, i, &st->instrs[i], r, err)) < 0) {
            fail_at(r, st->instrs[i].line, st->instrs[i].original);
            return rc;
        }
    }
    r->done = true;
    if (ev && ev->stage_done)
        ev->stage_done(ev->ud, si);
    return 0;
}
