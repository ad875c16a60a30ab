/* JSON rendering of a build plan (what `kiln build --plan` prints).  Field
 * names are stable: tools and the golden tests under tests/data/dockerfiles
 * depend on them. */
#include "plan.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static cJSON *str_or_null(const char *s)
{
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static cJSON *strv(bld_strv v)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < v.n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v.v[i]));
    return a;
}

static cJSON *kv_array(const bld_kv *kv, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", kv[i].key);
        cJSON_AddItemToObject(o, "value", str_or_null(kv[i].value));
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static void add_ref(cJSON *o, bld_ref_kind k, const char *from, size_t stage)
{
    if (from == NULL || k == BLD_REF_NONE) {
        cJSON_AddNullToObject(o, "from");
        return;
    }
    cJSON *f = cJSON_AddObjectToObject(o, "from");
    cJSON_AddStringToObject(f, "ref", from);
    if (k == BLD_REF_STAGE) {
        cJSON_AddStringToObject(f, "type", "stage");
        cJSON_AddNumberToObject(f, "stage", (double)stage);
    } else {
        cJSON_AddStringToObject(f, "type", "image");
    }
}

static void add_mode(cJSON *o, const char *key, long mode)
{
    if (mode < 0) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "%04lo", (unsigned long)mode);
    cJSON_AddStringToObject(o, key, buf);
}

static cJSON *mount_json(const bld_mount *m)
{
    static const char *const types[] = {"bind", "cache", "tmpfs", "secret", "ssh"};
    static const char *const sharing[] = {"shared", "private", "locked"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", types[m->type]);
    cJSON_AddItemToObject(o, "target", str_or_null(m->target));
    cJSON_AddItemToObject(o, "source", str_or_null(m->source));
    add_ref(o, m->from_kind, m->from, m->from_stage);
    cJSON_AddItemToObject(o, "id", str_or_null(m->id));
    cJSON_AddBoolToObject(o, "readonly", m->readonly);
    if (m->type == BLD_MOUNT_CACHE)
        cJSON_AddStringToObject(o, "sharing", sharing[m->sharing]);
    add_mode(o, "mode", m->mode);
    if (m->uid >= 0)
        cJSON_AddNumberToObject(o, "uid", (double)m->uid);
    if (m->gid >= 0)
        cJSON_AddNumberToObject(o, "gid", (double)m->gid);
    if (m->type == BLD_MOUNT_SECRET || m->type == BLD_MOUNT_SSH)
        cJSON_AddBoolToObject(o, "required", m->required);
    if (m->size)
        cJSON_AddNumberToObject(o, "size", (double)m->size);
    if (m->env)
        cJSON_AddStringToObject(o, "env", m->env);
    return o;
}

static void run_json(cJSON *o, const bld_run *r)
{
    static const char *const nets[] = {"default", "none", "host"};
    cJSON_AddStringToObject(o, "form", r->exec_form ? "exec" : "shell");
    if (!r->exec_form)
        cJSON_AddStringToObject(o, "command", r->command);
    cJSON_AddItemToObject(o, "argv", strv(r->argv));
    cJSON *m = cJSON_AddArrayToObject(o, "mounts");
    for (size_t i = 0; i < r->n_mounts; i++)
        cJSON_AddItemToArray(m, mount_json(&r->mounts[i]));
    cJSON_AddStringToObject(o, "network", nets[r->network]);
    cJSON_AddStringToObject(o, "security", r->insecure ? "insecure" : "sandbox");
    if (r->n_files) {
        cJSON *f = cJSON_AddArrayToObject(o, "files");
        for (size_t i = 0; i < r->n_files; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "path", r->files[i].path);
            cJSON_AddStringToObject(x, "content", r->files[i].content);
            add_mode(x, "mode", (long)r->files[i].mode);
            cJSON_AddItemToArray(f, x);
        }
    }
}

static void copy_json(cJSON *o, const bld_copy *c, bool add)
{
    static const char *const kinds[] = {"path", "heredoc", "url", "git"};
    cJSON *s = cJSON_AddArrayToObject(o, "sources");
    for (size_t i = 0; i < c->n_sources; i++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "type", kinds[c->sources[i].kind]);
        cJSON_AddStringToObject(x, "path", c->sources[i].path);
        if (c->sources[i].kind == BLD_SRC_HEREDOC)
            cJSON_AddNumberToObject(x, "heredoc", (double)c->sources[i].heredoc);
        cJSON_AddItemToArray(s, x);
    }
    cJSON_AddStringToObject(o, "dest", c->dest);
    if (!add)
        add_ref(o, c->from_kind, c->from, c->from_stage);
    if (c->chown_user) {
        cJSON *ch = cJSON_AddObjectToObject(o, "chown");
        cJSON_AddStringToObject(ch, "user", c->chown_user);
        cJSON_AddItemToObject(ch, "group", str_or_null(c->chown_group));
    } else {
        cJSON_AddNullToObject(o, "chown");
    }
    add_mode(o, "chmod", c->mode);
    cJSON_AddBoolToObject(o, "link", c->link);
    if (!add)
        cJSON_AddBoolToObject(o, "parents", c->parents);
    cJSON_AddItemToObject(o, "exclude", strv(c->excludes));
    if (add) {
        cJSON_AddBoolToObject(o, "keep_git_dir", c->keep_git_dir);
        cJSON_AddItemToObject(o, "checksum", str_or_null(c->checksum));
        if (c->unpack >= 0)
            cJSON_AddBoolToObject(o, "unpack", c->unpack == 1);
    }
}

static void health_json(cJSON *o, const bld_health *h)
{
    cJSON_AddItemToObject(o, "test", strv(h->test));
    if (h->none)
        return;
    cJSON_AddNumberToObject(o, "interval_ns", (double)h->interval_ns);
    cJSON_AddNumberToObject(o, "timeout_ns", (double)h->timeout_ns);
    cJSON_AddNumberToObject(o, "start_period_ns", (double)h->start_period_ns);
    cJSON_AddNumberToObject(o, "start_interval_ns", (double)h->start_interval_ns);
    cJSON_AddNumberToObject(o, "retries", (double)h->retries);
}

static cJSON *instr_json(const bld_instr *in)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "kind", bld_instr_kind_name(in->kind));
    cJSON_AddNumberToObject(o, "line", in->line);
    cJSON_AddNumberToObject(o, "end_line", in->end_line);
    cJSON_AddStringToObject(o, "original", in->original);
    if (in->from_onbuild)
        cJSON_AddBoolToObject(o, "from_onbuild", true);
    cJSON_AddItemToObject(o, "args", kv_array(in->args, in->n_args));
    if (in->unresolved.n)
        cJSON_AddItemToObject(o, "unresolved", strv(in->unresolved));
    cJSON_AddItemToObject(o, "env", kv_array(in->env, in->n_env));
    cJSON_AddItemToObject(o, "user", str_or_null(in->user));
    cJSON_AddItemToObject(o, "workdir", str_or_null(in->workdir));
    if (in->n_heredocs) {
        cJSON *h = cJSON_AddArrayToObject(o, "heredocs");
        for (size_t i = 0; i < in->n_heredocs; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", in->heredocs[i].name);
            cJSON_AddStringToObject(x, "content", in->heredocs[i].content);
            cJSON_AddBoolToObject(x, "expand", in->heredocs[i].expand);
            cJSON_AddBoolToObject(x, "chomp", in->heredocs[i].chomp);
            if (in->heredocs[i].fd)
                cJSON_AddNumberToObject(x, "fd", in->heredocs[i].fd);
            cJSON_AddItemToArray(h, x);
        }
    }
    switch (in->kind) {
    case BLD_INSTR_RUN:
        run_json(o, &in->u.run);
        break;
    case BLD_INSTR_COPY:
    case BLD_INSTR_ADD:
        copy_json(o, &in->u.copy, in->kind == BLD_INSTR_ADD);
        break;
    case BLD_INSTR_ARG:
    case BLD_INSTR_ENV:
    case BLD_INSTR_LABEL:
        cJSON_AddItemToObject(o, "pairs", kv_array(in->u.kv.pairs, in->u.kv.n));
        break;
    case BLD_INSTR_WORKDIR:
        cJSON_AddStringToObject(o, "path", in->u.str);
        break;
    case BLD_INSTR_USER:
    case BLD_INSTR_MAINTAINER:
    case BLD_INSTR_STOPSIGNAL:
        cJSON_AddStringToObject(o, "value", in->u.str);
        break;
    case BLD_INSTR_VOLUME:
    case BLD_INSTR_SHELL:
        cJSON_AddItemToObject(o, "values", strv(in->u.list));
        break;
    case BLD_INSTR_CMD:
    case BLD_INSTR_ENTRYPOINT:
        cJSON_AddStringToObject(o, "form", in->u.cmd.exec_form ? "exec" : "shell");
        cJSON_AddItemToObject(o, "argv", strv(in->u.cmd.argv));
        break;
    case BLD_INSTR_EXPOSE: {
        cJSON *p = cJSON_AddArrayToObject(o, "ports");
        for (size_t i = 0; i < in->u.expose.n; i++) {
            const bld_port *pt = &in->u.expose.v[i];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "start", pt->start);
            cJSON_AddNumberToObject(x, "end", pt->end);
            cJSON_AddStringToObject(x, "proto", pt->proto);
            cJSON_AddItemToArray(p, x);
        }
        break;
    }
    case BLD_INSTR_HEALTHCHECK:
        health_json(o, &in->u.health);
        break;
    case BLD_INSTR_ONBUILD:
        cJSON_AddStringToObject(o, "trigger", in->u.onbuild.trigger);
        cJSON_AddStringToObject(o, "trigger_kind", bld_instr_kind_name(in->u.onbuild.kind));
        break;
    }
    return o;
}

static cJSON *stage_json(const bld_stage *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", (double)s->index);
    cJSON_AddItemToObject(o, "name", str_or_null(s->name));
    cJSON_AddNumberToObject(o, "line", s->line);
    cJSON_AddStringToObject(o, "original", s->original);
    cJSON *b = cJSON_AddObjectToObject(o, "base");
    switch (s->base_kind) {
    case BLD_BASE_IMAGE:
        cJSON_AddStringToObject(b, "type", "image");
        cJSON_AddStringToObject(b, "ref", s->base_image);
        break;
    case BLD_BASE_STAGE:
        cJSON_AddStringToObject(b, "type", "stage");
        cJSON_AddNumberToObject(b, "stage", (double)s->base_stage);
        break;
    case BLD_BASE_SCRATCH:
        cJSON_AddStringToObject(b, "type", "scratch");
        break;
    }
    cJSON_AddStringToObject(o, "platform", s->platform);
    cJSON_AddBoolToObject(o, "platform_set", s->platform_set);
    cJSON *d = cJSON_AddArrayToObject(o, "depends_on");
    for (size_t i = 0; i < s->n_deps; i++)
        cJSON_AddItemToArray(d, cJSON_CreateNumber((double)s->deps[i]));
    cJSON_AddBoolToObject(o, "runs", s->runs);
    cJSON *in = cJSON_AddArrayToObject(o, "instructions");
    for (size_t i = 0; i < s->n_instrs; i++)
        cJSON_AddItemToArray(in, instr_json(&s->instrs[i]));
    cJSON_AddItemToObject(o, "onbuild", strv(s->onbuild));
    return o;
}

cJSON *bld_plan_to_json(const bld_plan *p)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "filename", p->filename);
    cJSON_AddItemToObject(o, "syntax", str_or_null(p->syntax));
    char esc[2] = {p->escape, '\0'};
    cJSON_AddStringToObject(o, "escape", esc);
    cJSON_AddStringToObject(o, "build_platform", p->build_platform);
    cJSON_AddStringToObject(o, "target_platform", p->target_platform);
    cJSON *t = cJSON_AddObjectToObject(o, "target");
    cJSON_AddNumberToObject(t, "index", (double)p->target);
    cJSON_AddItemToObject(t, "name", str_or_null(p->stages[p->target].name));
    cJSON_AddItemToObject(o, "build_args", kv_array(p->build_args, p->n_build_args));
    cJSON_AddItemToObject(o, "global_args", kv_array(p->global_args, p->n_global_args));
    cJSON_AddItemToObject(o, "warnings", strv(p->warnings));
    cJSON *s = cJSON_AddArrayToObject(o, "stages");
    for (size_t i = 0; i < p->n_stages; i++)
        cJSON_AddItemToArray(s, stage_json(&p->stages[i]));
    return o;
}
