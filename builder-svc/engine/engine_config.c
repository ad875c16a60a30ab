/* Image config handling: what the planner needs of a base image's config,
 * metadata instructions applied to a stage's config (Docker's semantics),
 * and the expanded form of an instruction hashed into its cache key. */
#include "engine_stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"

/* ---- base images ---- */

static const char **str_array(const cJSON *arr, size_t *n)
{
    *n = 0;
    if (!cJSON_IsArray(arr))
        return NULL;
    const char **v = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
    if (v == NULL)
        return NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (cJSON_IsString(it))
            v[(*n)++] = it->valuestring;
    }
    return v;
}

void base_img_index(base_img *bi)
{
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(bi->parsed, "config");
    bi->env = str_array(cJSON_GetObjectItemCaseSensitive(cfg, "Env"), &bi->n_env);
    bi->onbuild = str_array(cJSON_GetObjectItemCaseSensitive(cfg, "OnBuild"), &bi->n_onbuild);
    bi->shell = str_array(cJSON_GetObjectItemCaseSensitive(cfg, "Shell"), &bi->n_shell);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(cfg, "WorkingDir");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(cfg, "User");
    bi->workdir = cJSON_IsString(w) ? w->valuestring : NULL;
    bi->user = cJSON_IsString(u) ? u->valuestring : NULL;
}

void base_img_dispose(base_img *bi)
{
    eng_stack_release(bi->stack);
    eng_tree_free(bi->merged);
    free(bi->ref);
    free(bi->platform);
    free(bi->manifest);
    free(bi->config);
    cJSON_Delete(bi->parsed);
    free(bi->env);
    free(bi->onbuild);
    free(bi->shell);
    memset(bi, 0, sizeof(*bi));
}

/* ---- metadata instructions ---- */

static cJSON *obj(cJSON *cfg, const char *k)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(cfg, k);
    if (cJSON_IsObject(o))
        return o;
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, k);
    return cJSON_AddObjectToObject(cfg, k);
}

static int set_strv(cJSON *cfg, const char *k, const char *const *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    if (a == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, k);
    cJSON_AddItemToObject(cfg, k, a);
    return 0;
}

static void set_str(cJSON *cfg, const char *k, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, k);
    cJSON_AddStringToObject(cfg, k, v);
}

static void env_set(cJSON *cfg, const char *key, const char *value)
{
    cJSON *env = cJSON_GetObjectItemCaseSensitive(cfg, "Env");
    if (!cJSON_IsArray(env)) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "Env");
        env = cJSON_AddArrayToObject(cfg, "Env");
    }
    _cleanup_free_ char *kv = NULL;
    if (asprintf(&kv, "%s=%s", key, value ? value : "") < 0)
        return;
    size_t kl = strlen(key);
    int i = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, env)
    {
        if (cJSON_IsString(it) && strncmp(it->valuestring, key, kl) == 0 &&
            it->valuestring[kl] == '=') {
            cJSON_ReplaceItemInArray(env, i, cJSON_CreateString(kv));
            return;
        }
        i++;
    }
    cJSON_AddItemToArray(env, cJSON_CreateString(kv));
}

/* LABEL: each pair replaces a label of that name. */
static void add_labels(cJSON *cfg, const bld_instr *in)
{
    cJSON *l = obj(cfg, "Labels");
    for (size_t i = 0; i < in->u.kv.n; i++) {
        cJSON_DeleteItemFromObjectCaseSensitive(l, in->u.kv.pairs[i].key);
        cJSON_AddStringToObject(l, in->u.kv.pairs[i].key,
                                in->u.kv.pairs[i].value ? in->u.kv.pairs[i].value : "");
    }
}

/* EXPOSE: every port of every range, "tcp" unless given. */
static int add_ports(cJSON *cfg, const bld_instr *in, kiln_error **err)
{
    cJSON *p = obj(cfg, "ExposedPorts");
    char buf[64];
    for (size_t i = 0; i < in->u.expose.n; i++) {
        const bld_port *pt = &in->u.expose.v[i];
        if (pt->end - pt->start > 65535)
            return kiln_error_set(err, KILN_EINVAL, 0, "EXPOSE: bad port range");
        for (unsigned port = pt->start; port <= pt->end; port++) {
            snprintf(buf, sizeof(buf), "%u/%s", port, pt->proto ? pt->proto : "tcp");
            if (!cJSON_HasObjectItem(p, buf))
                cJSON_AddObjectToObject(p, buf);
        }
    }
    return 0;
}

/* VOLUME: each path once. */
static void add_volumes(cJSON *cfg, const bld_instr *in)
{
    cJSON *v = obj(cfg, "Volumes");
    for (size_t i = 0; i < in->u.list.n; i++)
        if (!cJSON_HasObjectItem(v, in->u.list.v[i]))
            cJSON_AddObjectToObject(v, in->u.list.v[i]);
}

/* ONBUILD: the trigger appended to the list. */
static void add_onbuild(cJSON *cfg, const bld_instr *in)
{
    cJSON *a = cJSON_GetObjectItemCaseSensitive(cfg, "OnBuild");
    if (!cJSON_IsArray(a)) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "OnBuild");
        a = cJSON_AddArrayToObject(cfg, "OnBuild");
    }
    cJSON_AddItemToArray(a, cJSON_CreateString(in->u.onbuild.trigger));
}

/* HEALTHCHECK: replaces the previous one; NONE disables an inherited one. */
static void set_healthcheck(cJSON *cfg, const bld_health *hc)
{
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "Healthcheck");
    cJSON *h = cJSON_AddObjectToObject(cfg, "Healthcheck");
    if (hc->none) {
        const char *none[] = {"NONE"};
        set_strv(h, "Test", none, 1);
        return;
    }
    set_strv(h, "Test", hc->test.v, hc->test.n);
    if (hc->interval_ns)
        cJSON_AddNumberToObject(h, "Interval", (double)hc->interval_ns);
    if (hc->timeout_ns)
        cJSON_AddNumberToObject(h, "Timeout", (double)hc->timeout_ns);
    if (hc->start_period_ns)
        cJSON_AddNumberToObject(h, "StartPeriod", (double)hc->start_period_ns);
    if (hc->start_interval_ns)
        cJSON_AddNumberToObject(h, "StartInterval", (double)hc->start_interval_ns);
    if (hc->retries)
        cJSON_AddNumberToObject(h, "Retries", (double)hc->retries);
}

int eng_apply_meta(stage_res *r, const bld_instr *in, kiln_error **err)
{
    cJSON *cfg = r->config;
    switch (in->kind) {
    case BLD_INSTR_ENV:
        for (size_t i = 0; i < in->u.kv.n; i++)
            env_set(cfg, in->u.kv.pairs[i].key, in->u.kv.pairs[i].value);
        break;
    case BLD_INSTR_LABEL:
        add_labels(cfg, in);
        break;
    case BLD_INSTR_WORKDIR:
        set_str(cfg, "WorkingDir", in->u.str);
        break;
    case BLD_INSTR_USER:
        set_str(cfg, "User", in->u.str);
        break;
    case BLD_INSTR_STOPSIGNAL:
        set_str(cfg, "StopSignal", in->u.str);
        break;
    case BLD_INSTR_MAINTAINER:
        free(r->author);
        r->author = strdup(in->u.str);
        break;
    case BLD_INSTR_EXPOSE:
        return add_ports(cfg, in, err);
    case BLD_INSTR_VOLUME:
        add_volumes(cfg, in);
        break;
    case BLD_INSTR_ENTRYPOINT:
        set_strv(cfg, "Entrypoint", in->u.cmd.argv.v, in->u.cmd.argv.n);
        /* An inherited CMD does not survive a new ENTRYPOINT (Docker). */
        if (!r->cmd_set)
            cJSON_DeleteItemFromObjectCaseSensitive(cfg, "Cmd");
        break;
    case BLD_INSTR_CMD:
        set_strv(cfg, "Cmd", in->u.cmd.argv.v, in->u.cmd.argv.n);
        r->cmd_set = true;
        break;
    case BLD_INSTR_SHELL:
        set_strv(cfg, "Shell", in->u.list.v, in->u.list.n);
        break;
    case BLD_INSTR_ONBUILD:
        add_onbuild(cfg, in);
        break;
    case BLD_INSTR_HEALTHCHECK:
        set_healthcheck(cfg, &in->u.health);
        break;
    default:
        break;
    }
    return 0;
}

/* ---- cache key input ---- */

static void hs(kiln_sha256 *h, const char *s)
{
    if (s == NULL)
        s = "\x01(null)";
    kiln_sha256_update(h, s, strlen(s) + 1);
}

static void hl(kiln_sha256 *h, long long v)
{
    char b[32];
    snprintf(b, sizeof(b), "%lld", v);
    hs(h, b);
}

static void hstrv(kiln_sha256 *h, const bld_strv *v)
{
    hl(h, (long long)v->n);
    for (size_t i = 0; i < v->n; i++)
        hs(h, v->v[i]);
}

void eng_hash_instr(kiln_sha256 *h, const bld_instr *in)
{
    hs(h, bld_instr_kind_name(in->kind));
    hs(h, in->user);
    hs(h, in->workdir);
    hl(h, (long long)in->n_args);
    for (size_t i = 0; i < in->n_args; i++) {
        hs(h, in->args[i].key);
        hs(h, in->args[i].value);
    }
    switch (in->kind) {
    case BLD_INSTR_RUN: {
        const bld_run *r = &in->u.run;
        hstrv(h, &r->argv);
        hl(h, (long long)in->n_env);
        for (size_t i = 0; i < in->n_env; i++) {
            hs(h, in->env[i].key);
            hs(h, in->env[i].value);
        }
        hl(h, r->network);
        hl(h, r->insecure);
        for (size_t i = 0; i < r->n_mounts; i++) {
            const bld_mount *m = &r->mounts[i];
            hl(h, m->type);
            hs(h, m->target);
            hs(h, m->source);
            hs(h, m->from);
            hs(h, m->id);
            hl(h, m->readonly);
            hl(h, m->sharing);
            hl(h, m->mode);
            hl(h, m->uid);
            hl(h, m->gid);
            hl(h, m->size);
            hs(h, m->env);
        }
        for (size_t i = 0; i < r->n_files; i++) {
            hs(h, r->files[i].path);
            hs(h, r->files[i].content);
            hl(h, r->files[i].mode);
        }
        break;
    }
    case BLD_INSTR_COPY:
    case BLD_INSTR_ADD: {
        const bld_copy *cp = &in->u.copy;
        for (size_t i = 0; i < cp->n_sources; i++) {
            hl(h, cp->sources[i].kind);
            hs(h, cp->sources[i].path);
        }
        hs(h, cp->dest);
        hs(h, cp->from);
        hs(h, cp->chown_user);
        hs(h, cp->chown_group);
        hl(h, cp->mode);
        if (cp->mode < 0 && cp->chmod)
            hs(h, cp->chmod); /* symbolic --chmod */
        hl(h, cp->link);
        hl(h, cp->parents);
        hstrv(h, &cp->excludes);
        hs(h, cp->checksum);
        break;
    }
    default:
        hs(h, in->original);
        break;
    }
}
