/* Variables in scope while a Dockerfile is planned: ARG and ENV of the
 * current stage (or the global ARGs before the first FROM), build args, and
 * the expansions that read them, recording which ARGs each step used.  The
 * instructions (instr.c, instr_run.c) and the stage driver (plan.c) use
 * these through plan_internal.h. */
#include "plan_internal.h"

#include <stdlib.h>
#include <string.h>

static void record_use(pctx *c, const char *name, const char *value)
{
    c->work += c->n_used;
    for (size_t i = 0; i < c->n_used; i++)
        if (strcmp(c->used[i].key, name) == 0)
            return;
    DF_PUSH(c->a, c->used, c->n_used, c->cap_used);
    c->used[c->n_used++] = (bld_kv){df_strdup(c->a, name), value};
}

static const bld_kv *kv_find(const bld_kv *v, size_t n, const char *name)
{
    for (size_t i = n; i-- > 0;)
        if (strcmp(v[i].key, name) == 0)
            return &v[i];
    return NULL;
}

static void note_unresolved(pctx *c, const char *name)
{
    for (size_t i = 0; i < c->unresolved.n; i++)
        if (strcmp(c->unresolved.v[i], name) == 0)
            return;
    DF_PUSH(c->a, c->unresolved.v, c->unresolved.n, c->cap_unresolved);
    c->unresolved.v[c->unresolved.n++] = df_strdup(c->a, name);
}

static const char *lookup(void *ctx, const char *name)
{
    pctx *c = ctx;
    if (c->work > DF_MAX_WORK)
        return NULL;
    c->work += c->ss.n_env + c->ss.n_args + c->n_meta + c->unresolved.n + 8;
    if (!c->in_stage) {
        const bld_kv *m = kv_find(c->meta, c->n_meta, name);
        if (m) {
            record_use(c, name, m->value);
            return m->value;
        }
        m = kv_find(c->builtins, KILN_ARRAY_SIZE(c->builtins), name);
        if (m) {
            const char *o = pc_build_arg(c, name); /* --build-arg overrides a predefined ARG */
            return o ? o : m->value;
        }
        note_unresolved(c, name);
        return NULL;
    }
    const bld_kv *e = kv_find(c->ss.env, c->ss.n_env, name);
    unsigned long aseq = 0;
    const bld_kv *a = pc_stage_arg(c, name, &aseq);
    if (a && (e == NULL || aseq > c->ss.env_seq[e - c->ss.env])) {
        record_use(c, name, a->value);
        return a->value;
    }
    if (e)
        return e->value;
    if (c->ss.env_unknown)
        note_unresolved(c, name);
    return NULL;
}

int pc_expand(pctx *c, char **out, const char *word, bool skip_quotes, const df_line *ln,
              size_t off, kiln_error **err)
{
    df_lex_opts o = {
        .escape = c->dirs.escape, .skip_quotes = skip_quotes, .lookup = lookup, .ctx = c};
    const char *msg = NULL;
    if (df_expand(out, c->a, word, &o, &msg) < 0)
        return pc_err(c, ln, off, err, "%s", msg);
    return 0;
}

int pc_expand_words(pctx *c, char ***out, long *n, const char *word, const df_line *ln, size_t off,
                    kiln_error **err)
{
    df_lex_opts o = {.escape = c->dirs.escape, .lookup = lookup, .ctx = c};
    const char *msg = NULL;
    *n = df_expand_words(out, c->a, word, &o, &msg);
    if (*n < 0)
        return pc_err(c, ln, off, err, "%s", msg);
    return 0;
}

const char *pc_build_arg(pctx *c, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < c->n_bargs; i++)
        if (strcmp(c->bargs[i].key, name) == 0) {
            c->barg_used[i] = true;
            if (c->bargs[i].value)
                v = c->bargs[i].value;
        }
    return v;
}

/* BuildKit's order: the default; in a stage, then the global ARG's value
 * (global ARGs and predefined ones form one list there, a global ARG
 * replacing a predefined one of the same name). */
const char *pc_arg_value(pctx *c, const char *name, const char *dflt, bool has_default, bool global)
{
    if (has_default)
        return dflt;
    if (global)
        return NULL;
    const bld_kv *m = kv_find(c->meta, c->n_meta, name);
    if (m && m->value)
        return m->value;
    const bld_kv *b = kv_find(c->builtins, KILN_ARRAY_SIZE(c->builtins), name);
    return b ? b->value : NULL;
}

void pc_env_set(pctx *c, const char *name, const char *value)
{
    c->ss.snap = NULL;
    c->work += c->ss.n_env;
    /* A later value replaces the earlier one in place, like Config.Env. */
    size_t k = 0;
    while (k < c->ss.n_env && strcmp(c->ss.env[k].key, name) != 0)
        k++;
    if (k == c->ss.n_env) {
        size_t cap = c->ss.cap_env;
        DF_PUSH(c->a, c->ss.env, c->ss.n_env, c->ss.cap_env);
        if (cap != c->ss.cap_env)
            c->ss.env_seq = df_realloc(c->a, c->ss.env_seq, c->ss.cap_env * sizeof(unsigned long));
        c->ss.n_env++;
    }
    c->ss.env[k] = (bld_kv){name, value};
    c->ss.env_seq[k] = ++c->seq;
}

void pc_arg_add(pctx *c, const char *name, const char *value, unsigned long seq)
{
    size_t cap = c->ss.cap_args;
    DF_PUSH(c->a, c->ss.args, c->ss.n_args, c->ss.cap_args);
    if (cap != c->ss.cap_args)
        c->ss.arg_seq = df_realloc(c->a, c->ss.arg_seq, c->ss.cap_args * sizeof(unsigned long));
    c->ss.arg_seq[c->ss.n_args] = seq;
    c->ss.args[c->ss.n_args++] = (bld_kv){name, value};
}

const bld_kv *pc_stage_arg(const pctx *c, const char *name, unsigned long *seq)
{
    for (size_t i = c->ss.n_args; i-- > 0;)
        if (c->ss.args[i].value && strcmp(c->ss.args[i].key, name) == 0) {
            *seq = c->ss.arg_seq[i];
            return &c->ss.args[i];
        }
    return NULL;
}
