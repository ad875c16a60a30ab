/* Build plan construction: stages, ARG scoping, stage references, --target.
 *
 * ARG scoping follows BuildKit: ARGs before the first FROM are global, usable
 * in FROM lines and visible in a stage only after an `ARG NAME` there; stage
 * ARGs end at the next FROM, except that a stage built FROM another stage
 * starts with that stage's ARG values (BuildKit copies the parent's state);
 * --build-arg values override defaults (which are then not evaluated); the
 * platform ARGs and TARGETSTAGE are predefined globally and must be declared
 * in a stage too; the proxy ARGs need no declaration.  Within a stage, ENV
 * and ARG values form one environment for expansion and RUN where the one set
 * last wins (an ARG with a value after ENV X overrides it, as BuildKit adds
 * ARG values to the build state's environment); the image config gets ENV
 * only. */
#include "plan_internal.h"
#include "ref.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* An image reference, checked with the parser the pusher and the CLI use:
 * what it refuses here would be refused at pull time anyway, after the
 * stages before it had run. */
static int check_ref(pctx *c, const df_line *ln, size_t off, const char *ref, kiln_error **err)
{
    kiln_ref r;
    kiln_error *why = NULL;
    if (kiln_ref_parse(&r, ref, 0, &why) == 0)
        return 0;
    int rc = pc_err(c, ln, off, err, "invalid reference format: %s: %s", ref, why->msg);
    kiln_error_free(&why);
    return rc;
}

static const char *const proxy_args[] = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                         "FTP_PROXY",  "ftp_proxy",  "NO_PROXY",    "no_proxy",
                                         "ALL_PROXY",  "all_proxy"};

int pc_err(pctx *c, const df_line *ln, size_t off, kiln_error **err, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    int line = 1, col = 1;
    if (ln)
        df_line_pos(ln, off, &line, &col);
    int rc = df_error_at(err, c->src, line, col, "%s", msg ? msg : "error");
    free(msg);
    return rc;
}

void pc_warn(pctx *c, const char *msg)
{
    DF_PUSH(c->a, c->warnings.v, c->warnings.n, c->cap_warnings);
    c->warnings.v[c->warnings.n++] = df_strdup(c->a, msg);
}

static bool is_all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

static void add_dep(pctx *c, size_t dep)
{
    bld_stage *st = &c->stages[c->n_stages - 1];
    size_t i = 0;
    c->work += st->n_deps;
    while (i < st->n_deps && st->deps[i] < dep)
        i++;
    if (i < st->n_deps && st->deps[i] == dep)
        return;
    st->deps = df_realloc(c->a, st->deps, (st->n_deps + 1) * sizeof(size_t));
    memmove(st->deps + i + 1, st->deps + i, (st->n_deps - i) * sizeof(size_t));
    st->deps[i] = dep;
    st->n_deps++;
}

const char *pc_named_image(const pctx *c, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; c->opts && i < c->opts->n_named_images; i++) {
        const char *kv = c->opts->named_images[i];
        if (strncasecmp(kv, name, n) == 0 && kv[n] == '=')
            return kv + n + 1;
    }
    return NULL;
}

int pc_stage_ref(pctx *c, const char **refp, bld_ref_kind *kind, size_t *stage, const df_line *ln,
                 size_t off, kiln_error **err)
{
    const char *ref = *refp;
    size_t cur = c->n_stages - 1;
    if (is_all_digits(ref)) {
        unsigned long long idx = strlen(ref) > 9 ? ~0ULL : strtoull(ref, NULL, 10);
        if (idx == cur)
            return pc_err(c, ln, off, err, "circular dependency: stage %zu refers to itself", cur);
        if (idx > cur)
            return pc_err(c, ln, off, err,
                          "invalid stage index %s: a stage can only refer to an earlier stage",
                          ref);
        *kind = BLD_REF_STAGE;
        *stage = (size_t)idx;
        add_dep(c, *stage);
        return 0;
    }
    char *low = df_strdup(c->a, ref);
    df_lower(low);
    c->work += c->n_all_names;
    for (size_t i = 0; i < c->n_all_names; i++) {
        if (c->all_names[i] == NULL || strcmp(c->all_names[i], low) != 0)
            continue;
        if (i < cur) {
            *kind = BLD_REF_STAGE;
            *stage = i;
            add_dep(c, i);
            return 0;
        }
        if (i == cur)
            return pc_err(c, ln, off, err, "circular dependency: stage %s refers to itself", low);
        return pc_err(c, ln, off, err,
                      "stage %s is defined later: a stage can only refer to an earlier stage", low);
    }
    const char *named = pc_named_image(c, ref);
    if (named)
        *refp = ref = df_strdup(c->a, named);
    if (check_ref(c, ln, off, ref, err) < 0)
        return -1;
    *kind = BLD_REF_IMAGE;
    return 0;
}

/* ---- FROM ------------------------------------------------------------------- */

static bool valid_stage_name(const char *s)
{
    if (!islower((unsigned char)*s))
        return false;
    for (s++; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-' || *s == '_' ||
              *s == '.'))
            return false;
    return true;
}

static const char *stage_name_of(df_arena *a, const df_cmd *cmd)
{
    char **w = NULL;
    size_t n = df_split_ws(&w, a, cmd->args);
    if (n != 3 || strcasecmp(w[1], "as") != 0)
        return NULL;
    df_lower(w[2]);
    return w[2];
}

void pc_stage_state_init(pctx *c)
{
    memset(&c->ss, 0, sizeof(c->ss));
    static const char *const sh[] = {"/bin/sh", "-c"};
    c->ss.shell.v = (const char **)sh;
    c->ss.shell.n = 2;
}

int pc_apply_base(pctx *c, const bld_base_info *bi, const char *ref, kiln_error **err)
{
    c->ss.env_unknown = false;
    for (size_t i = 0; i < bi->n_env; i++) {
        const char *e = bi->env[i], *eq = e ? strchr(e, '=') : NULL;
        if (eq)
            pc_env_set(c, df_strndup(c->a, e, (size_t)(eq - e)), df_strdup(c->a, eq + 1));
    }
    if (bi->workdir && *bi->workdir)
        c->ss.workdir = df_strdup(c->a, bi->workdir);
    if (bi->user && *bi->user)
        c->ss.user = df_strdup(c->a, bi->user);
    if (bi->shell && bi->n_shell) {
        const char **v = df_alloc(c->a, bi->n_shell * sizeof(char *));
        for (size_t i = 0; i < bi->n_shell; i++)
            v[i] = df_strdup(c->a, bi->shell[i] ? bi->shell[i] : "");
        c->ss.shell = (bld_strv){v, bi->n_shell};
    }
    if (bi->n_onbuild == 0)
        return 0;
    df_trigger *t = df_alloc(c->a, bi->n_onbuild * sizeof(*t));
    for (size_t i = 0; i < bi->n_onbuild; i++) {
        df_src *src = df_alloc(c->a, sizeof(*src));
        src->name = df_printf(c->a, "ONBUILD trigger %zu of %s", i + 1, ref);
        src->text = df_strdup(c->a, bi->onbuild[i] ? bi->onbuild[i] : "");
        src->len = strlen(src->text);
        t[i].src = src;
        int rc = df_lex_one(&t[i].line, c->a, src->text, 1, c->dirs.escape, src, err);
        if (rc < 0)
            return rc;
        t[i].line.first_line = t[i].line.last_line = 0;
    }
    return pc_splice_triggers(c, t, bi->n_onbuild, err);
}

static int base_from_image(pctx *c, bld_stage *st, kiln_error **err)
{
    bld_base_info bi = {0};
    c->ss.env_unknown = true;
    if (c->opts->resolve_base == NULL ||
        c->opts->resolve_base(&bi, c->opts->resolve_ctx, st->base_image, st->platform) != 0)
        return 0;
    return pc_apply_base(c, &bi, st->base_image, err);
}

/* Starts stage c->n_stages, named name (NULL: unnamed). */
static int new_stage(pctx *c, const df_line *ln, size_t off, char *name, kiln_error **err)
{
    DF_PUSH(c->a, c->stages, c->n_stages, c->cap_stages);
    bld_stage *st = &c->stages[c->n_stages];
    memset(st, 0, sizeof(*st));
    st->index = c->n_stages++;
    st->original = ln->text;
    st->line = ln->first_line;
    c->cap_instrs = 0;
    c->work += 2 * c->n_all_names;
    if (name == NULL)
        return 0;
    df_lower(name);
    if (!valid_stage_name(name))
        return pc_err(c, ln, off, err,
                      "invalid name for build stage: \"%s\", name can't start with a number or "
                      "contain symbols",
                      name);
    for (size_t i = 0; i < st->index; i++)
        if (c->stages[i].name && strcmp(c->stages[i].name, name) == 0)
            return pc_err(c, ln, off, err, "duplicate stage name \"%s\"", name);
    st->name = name;
    return 0;
}

/* The stage's platform: FROM --platform (global scope), else the target platform. */
static int stage_platform(pctx *c, bld_stage *st, const flag_val *fv, const df_line *ln,
                          kiln_error **err)
{
    st->platform = c->plan->target_platform;
    if (!fv->set)
        return 0;
    char *p = NULL, *norm = NULL;
    int rc = pc_expand(c, &p, fv->s, false, ln, fv->off, err);
    if (rc < 0)
        return rc;
    if (!df_platform_normalize(&norm, c->a, p, NULL))
        return pc_err(c, ln, fv->off, err, "invalid platform \"%s\" (want os/arch[/variant])", p);
    st->platform = norm;
    st->platform_set = true;
    return 0;
}

/* FROM an earlier stage: the child starts from the parent's final state,
 * its ARG values included (BuildKit's child state is the parent's, whose
 * environment holds them), and runs the parent's ONBUILD triggers. */
static int base_from_stage(pctx *c, bld_stage *st, size_t parent, kiln_error **err)
{
    st->base_kind = BLD_BASE_STAGE;
    st->base_stage = parent;
    add_dep(c, parent);
    const stage_state *ps = &c->states[parent];
    for (size_t k = 0; k < ps->n_env; k++) {
        pc_env_set(c, ps->env[k].key, ps->env[k].value);
        c->ss.env_seq[k] = ps->env_seq[k];
    }
    for (size_t k = 0; k < ps->n_args; k++)
        if (ps->args[k].value)
            pc_arg_add(c, ps->args[k].key, ps->args[k].value, ps->arg_seq[k]);
    c->ss.user = ps->user;
    c->ss.workdir = ps->workdir;
    c->ss.shell = ps->shell;
    c->ss.env_unknown = ps->env_unknown;
    if (!st->platform_set)
        st->platform = c->stages[parent].platform;
    return pc_splice_triggers(c, ps->triggers, ps->n_triggers, err);
}

static int resolve_base(pctx *c, bld_stage *st, char *ref, const df_line *ln, size_t off,
                        kiln_error **err)
{
    char *low = df_strdup(c->a, ref);
    df_lower(low);
    for (size_t i = 0; i < c->n_all_names; i++) {
        if (c->all_names[i] == NULL || strcmp(c->all_names[i], low) != 0)
            continue;
        if (i == st->index)
            return pc_err(c, ln, off, err, "circular dependency: stage %s uses itself as its base",
                          low);
        if (i > st->index)
            return pc_err(c, ln, off, err,
                          "stage %s is defined later: FROM can only refer to an earlier stage",
                          low);
        return base_from_stage(c, st, i, err);
    }
    const char *named = pc_named_image(c, ref);
    if (named)
        ref = df_strdup(c->a, named);
    if (strcmp(ref, "scratch") == 0) {
        st->base_kind = BLD_BASE_SCRATCH;
        c->ss.workdir = "/";
        return 0;
    }
    if (check_ref(c, ln, off, ref, err) < 0)
        return -1;
    st->base_kind = BLD_BASE_IMAGE;
    st->base_image = ref;
    return base_from_image(c, st, err);
}

static int dispatch_from(pctx *c, const df_line *ln, const df_cmd *cmd, kiln_error **err)
{
    static const flag_spec spec[] = {{"platform", FLAG_STR}};
    flag_val fv[1] = {0};
    int rc = pc_flags(c, ln, cmd, spec, 1, fv, err);
    if (rc < 0)
        return rc;
    char **w = NULL;
    size_t n = df_split_ws(&w, c->a, cmd->args);
    if (!(n == 1 || (n == 3 && strcasecmp(w[1], "as") == 0)))
        return pc_err(c, ln, cmd->args_off, err,
                      "FROM requires either one argument, or three: FROM <image> [AS <name>]");
    c->in_stage = false; /* FROM sees the global scope only */
    c->n_used = 0;
    if ((rc = new_stage(c, ln, cmd->args_off, n == 3 ? w[2] : NULL, err)) < 0)
        return rc;
    bld_stage *st = &c->stages[c->n_stages - 1];
    char *ref = NULL;
    c->unresolved = (bld_strv){0};
    c->cap_unresolved = 0;
    if ((rc = pc_expand(c, &ref, w[0], false, ln, cmd->args_off, err)) < 0)
        return rc;
    if (*ref == '\0')
        return pc_err(c, ln, cmd->args_off, err, "base name (%s) should not be blank", w[0]);
    if ((rc = stage_platform(c, st, &fv[0], ln, err)) < 0)
        return rc;
    for (size_t i = 0; i < c->unresolved.n; i++)
        pc_warn(c, df_printf(c->a,
                             "%s:%d: FROM uses ARG %s, which is not declared before the "
                             "first FROM",
                             c->src->name, ln->first_line, c->unresolved.v[i]));
    pc_stage_state_init(c);
    c->in_stage = true;
    return resolve_base(c, st, ref, ln, cmd->args_off, err);
}

/* Appends one instruction to the current stage and dispatches it. */
static int dispatch(pctx *c, const df_line *ln, const df_cmd *cmd, bool from_onbuild,
                    kiln_error **err)
{
    bld_stage *st = &c->stages[c->n_stages - 1];
    DF_PUSH(c->a, st->instrs, st->n_instrs, c->cap_instrs);
    bld_instr *in = &st->instrs[st->n_instrs];
    memset(in, 0, sizeof(*in));
    in->original = ln->text;
    in->line = ln->first_line;
    in->end_line = ln->last_line;
    in->from_onbuild = from_onbuild;
    if (c->ss.snap == NULL) {
        c->ss.snap = df_alloc(c->a, (c->ss.n_env + 1) * sizeof(bld_kv));
        if (c->ss.n_env)
            memcpy(c->ss.snap, c->ss.env, c->ss.n_env * sizeof(bld_kv));
        c->work += c->ss.n_env;
    }
    in->env = c->ss.snap;
    in->n_env = c->ss.n_env;
    in->user = c->ss.user;
    in->workdir = c->ss.workdir;
    c->n_used = 0;
    c->cap_used = 0;
    c->used = NULL;
    c->unresolved = (bld_strv){0};
    c->cap_unresolved = 0;
    int rc = df_instr(c, ln, cmd, in, err);
    if (rc < 0)
        return rc;
    in->unresolved = c->unresolved;
    if (in->kind != BLD_INSTR_RUN) {
        in->args = c->used;
        in->n_args = c->n_used;
    }
    st->n_instrs++;
    return 0;
}

int pc_splice_triggers(pctx *c, const df_trigger *t, size_t n, kiln_error **err)
{
    const df_src *saved = c->src;
    for (size_t i = 0; i < n; i++) {
        df_cmd cmd;
        c->src = t[i].src;
        int rc = df_split_command(&cmd, c->a, &t[i].line, c->src, err);
        if (rc == 0 &&
            (!df_known_keyword(cmd.keyword) || strcmp(cmd.keyword, "from") == 0 ||
             strcmp(cmd.keyword, "onbuild") == 0 || strcmp(cmd.keyword, "maintainer") == 0))
            rc = pc_err(c, &t[i].line, 0, err, "invalid ONBUILD trigger: %s", t[i].line.text);
        if (rc == 0)
            rc = dispatch(c, &t[i].line, &cmd, true, err);
        if (rc < 0) {
            c->src = saved;
            return rc;
        }
    }
    c->src = saved;
    return 0;
}

static void finish_stage(pctx *c)
{
    if (!c->in_stage || c->n_stages == 0)
        return;
    bld_stage *st = &c->stages[c->n_stages - 1];
    c->states = df_realloc(c->a, c->states, c->n_stages * sizeof(stage_state));
    c->states[c->n_stages - 1] = c->ss;
    const char **v = df_alloc(c->a, (c->ss.n_triggers + 1) * sizeof(char *));
    for (size_t i = 0; i < c->ss.n_triggers; i++)
        v[i] = c->ss.triggers[i].line.text;
    st->onbuild = (bld_strv){v, c->ss.n_triggers};
    /* Triggers fire once, in the direct child: a grandchild does not inherit them. */
    c->states[c->n_stages - 1].triggers = c->ss.triggers;
}

static int global_arg(pctx *c, const df_line *ln, const df_cmd *cmd, kiln_error **err)
{
    int rc = pc_flags(c, ln, cmd, NULL, 0, NULL, err);
    if (rc < 0)
        return rc;
    char **w = NULL;
    size_t n = df_parse_words(&w, c->a, cmd->args, c->dirs.escape);
    if (n == 0)
        return pc_err(c, ln, cmd->kw_off, err, "ARG requires at least one argument");
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(w[i], '=');
        char *name = eq ? df_strndup(c->a, w[i], (size_t)(eq - w[i])) : w[i];
        char *dflt = NULL;
        if (*name == '\0')
            return pc_err(c, ln, cmd->args_off, err, "ARG names can not be blank");
        const char *v = pc_build_arg(c, name); /* then the default is not evaluated */
        if (v == NULL && eq) {
            rc = pc_expand(c, &dflt, eq + 1, false, ln, cmd->args_off, err);
            if (rc < 0)
                return rc;
        }
        if (v == NULL)
            v = pc_arg_value(c, name, dflt, eq != NULL, true);
        DF_PUSH(c->a, c->meta, c->n_meta, c->cap_meta);
        c->meta[c->n_meta++] = (bld_kv){name, v};
    }
    return 0;
}

static int dispatch_line(pctx *c, const df_line *ln, kiln_error **err)
{
    df_cmd cmd;
    if (c->work > DF_MAX_WORK)
        return pc_err(c, ln, 0, err,
                      "Dockerfile too complex: too many variables, stages or references");
    int rc = df_split_command(&cmd, c->a, ln, c->src, err);
    if (rc < 0)
        return rc;
    if (!df_known_keyword(cmd.keyword)) {
        const char *sug = df_suggest_keyword(cmd.keyword);
        size_t kl = strlen(cmd.keyword);
        char *shown = df_strndup(c->a, ln->text + cmd.kw_off, kl > 40 ? 40 : kl);
        for (char *p = shown; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
        return pc_err(c, ln, cmd.kw_off, err, "unknown instruction: %s%s%s%s", shown,
                      kl > 40 ? "..." : "", sug ? " (did you mean " : "",
                      sug ? df_printf(c->a, "%s?)", sug) : "");
    }
    if (strcmp(cmd.keyword, "from") == 0) {
        finish_stage(c);
        return dispatch_from(c, ln, &cmd, err);
    }
    if (!c->in_stage) {
        if (strcmp(cmd.keyword, "arg") == 0)
            return global_arg(c, ln, &cmd, err);
        return pc_err(c, ln, cmd.kw_off, err,
                      "no build stage in current context: only ARG may come before the first "
                      "FROM");
    }
    return dispatch(c, ln, &cmd, false, err);
}

static int parse_build_args(pctx *c, kiln_error **err)
{
    size_t n = c->opts->n_build_args;
    c->bargs = df_alloc(c->a, (n + 1) * sizeof(bld_kv));
    c->barg_used = df_alloc(c->a, n + 1);
    for (size_t i = 0; i < n; i++) {
        const char *s = c->opts->build_args[i];
        const char *eq = s ? strchr(s, '=') : NULL;
        if (s == NULL || s == eq || *s == '\0')
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid build arg \"%s\": want KEY=VALUE",
                                  s ? s : "(null)");
        c->bargs[i].key = eq ? df_strndup(c->a, s, (size_t)(eq - s)) : df_strdup(c->a, s);
        c->bargs[i].value = eq ? df_strdup(c->a, eq + 1) : NULL;
        /* Proxies go to RUN without an ARG; the others are read by the builder itself. */
        for (size_t k = 0; k < KILN_ARRAY_SIZE(proxy_args); k++)
            if (strcmp(c->bargs[i].key, proxy_args[k]) == 0)
                c->barg_used[i] = true;
        if (strcmp(c->bargs[i].key, "SOURCE_DATE_EPOCH") == 0 ||
            strncmp(c->bargs[i].key, "BUILDKIT_", 9) == 0)
            c->barg_used[i] = true;
    }
    c->n_bargs = n;
    c->plan->build_args = c->bargs;
    c->plan->n_build_args = n;
    return 0;
}

static int setup_platforms(pctx *c, kiln_error **err)
{
    bld_plan *p = c->plan;
    char *bp = NULL, *tp = NULL;
    const char *b = c->opts->build_platform ? c->opts->build_platform : df_host_platform();
    if (!df_platform_normalize(&bp, c->a, b, NULL))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid build platform \"%s\"", b);
    char *os = NULL, *arch = NULL, *var = NULL;
    df_platform_split(c->a, bp, &os, &arch, &var);
    const char *t = c->opts->platform ? c->opts->platform : bp;
    if (!df_platform_normalize(&tp, c->a, t, arch))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid platform \"%s\" (want os/arch[/variant])", t);
    p->build_platform = bp;
    p->target_platform = tp;
    pc_set_builtins(c, bp, tp);
    return 0;
}

void pc_set_builtins(pctx *c, const char *bp, const char *tp)
{
    char *os = NULL, *arch = NULL, *var = NULL;
    df_platform_split(c->a, bp, &os, &arch, &var);
    c->builtins[0] = (bld_kv){"BUILDPLATFORM", bp};
    c->builtins[1] = (bld_kv){"BUILDOS", os};
    c->builtins[2] = (bld_kv){"BUILDARCH", arch};
    c->builtins[3] = (bld_kv){"BUILDVARIANT", var};
    df_platform_split(c->a, tp, &os, &arch, &var);
    c->builtins[4] = (bld_kv){"TARGETPLATFORM", tp};
    c->builtins[5] = (bld_kv){"TARGETOS", os};
    c->builtins[6] = (bld_kv){"TARGETARCH", arch};
    c->builtins[7] = (bld_kv){"TARGETVARIANT", var};
    c->builtins[8] = (bld_kv){"BUILDOSVERSION", ""};
    c->builtins[9] = (bld_kv){"TARGETOSVERSION", ""};
    c->builtins[10] = (bld_kv){"TARGETSTAGE", c->target_stage ? c->target_stage : "default"};
}

static int finish(pctx *c, kiln_error **err)
{
    bld_plan *p = c->plan;
    if (c->n_stages == 0)
        return df_error_at(err, c->src, 1, 1, "the Dockerfile has no FROM instruction");
    if (c->work > DF_MAX_WORK)
        return df_error_at(err, c->src, 1, 1,
                           "Dockerfile too complex: too many variables, stages or references");
    finish_stage(c);
    p->stages = c->stages;
    p->n_stages = c->n_stages;
    p->global_args = c->meta;
    p->n_global_args = c->n_meta;
    p->target = c->n_stages - 1;
    const char *t = c->opts->target;
    if (t && *t) {
        const bld_stage *s = bld_plan_stage(p, t);
        if (s == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "target stage \"%s\" could not be found", t);
        p->target = s->index;
    }
    /* Dependencies only point backwards, so marking from the target terminates;
     * iterate from the highest index down instead of recursing deeply. */
    p->stages[p->target].runs = true;
    for (size_t i = p->target + 1; i-- > 0;)
        if (p->stages[i].runs)
            for (size_t k = 0; k < p->stages[i].n_deps; k++)
                p->stages[p->stages[i].deps[k]].runs = true;
    for (size_t i = 0; i < c->n_bargs; i++)
        if (!c->barg_used[i])
            pc_warn(c, df_printf(c->a, "build-arg %s was not consumed by any ARG instruction",
                                 c->bargs[i].key));
    p->warnings = c->warnings;
    return 0;
}

/* TARGETSTAGE: the name of the stage --target selects (by name or index),
 * else of the last stage; "default" when that stage has no name. */
static const char *target_stage(pctx *c)
{
    const char *t = c->opts->target;
    if (c->n_all_names == 0)
        return "default";
    if (t == NULL || *t == '\0')
        return c->all_names[c->n_all_names - 1] ? c->all_names[c->n_all_names - 1] : "default";
    if (is_all_digits(t)) {
        unsigned long long i = strlen(t) > 9 ? ~0ULL : strtoull(t, NULL, 10);
        return i < c->n_all_names && c->all_names[i] ? c->all_names[i] : "default";
    }
    char *low = df_strdup(c->a, t);
    df_lower(low);
    return low;
}

int bld_plan_parse(bld_plan **out, const char *text, size_t len, const char *filename,
                   const bld_plan_opts *opts, kiln_error **err)
{
    static const bld_plan_opts no_opts = {0};
    df_arena *a = df_arena_new();
    bld_plan *p = df_alloc(a, sizeof(*p));
    p->priv = a;
    df_src src = {filename ? filename : "Dockerfile", text ? text : "", text ? len : 0};
    pctx c = {.a = a, .src = &src, .opts = opts ? opts : &no_opts, .plan = p};
    p->filename = df_strdup(a, src.name);
    df_src *keep = df_alloc(a, sizeof(*keep));
    *keep = src;
    c.src = keep;
    df_line *lines = NULL;
    size_t n = 0;
    int rc = parse_build_args(&c, err);
    if (rc == 0)
        rc = setup_platforms(&c, err);
    if (rc == 0)
        rc = df_lex(&lines, &n, &c.dirs, a, keep, err);
    if (rc < 0) {
        bld_plan_free(p);
        return rc;
    }
    p->syntax = c.dirs.syntax;
    p->escape = c.dirs.escape;
    /* Stage names first: references to later stages get a precise error. */
    c.all_names = df_alloc(a, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        df_cmd cmd;
        kiln_error *ignore = NULL;
        if (df_split_command(&cmd, a, &lines[i], keep, &ignore) < 0) {
            kiln_error_free(&ignore);
            continue;
        }
        if (strcmp(cmd.keyword, "from") == 0)
            c.all_names[c.n_all_names++] = (char *)stage_name_of(a, &cmd);
    }
    c.target_stage = target_stage(&c);
    c.builtins[10].value = c.target_stage;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = dispatch_line(&c, &lines[i], err);
    if (rc == 0)
        rc = finish(&c, err);
    if (rc < 0) {
        bld_plan_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void bld_plan_free(bld_plan *p)
{
    if (p)
        df_arena_free(p->priv);
}

const bld_stage *bld_plan_stage(const bld_plan *p, const char *name)
{
    if (p == NULL || name == NULL)
        return NULL;
    if (is_all_digits(name)) {
        unsigned long long i = strlen(name) > 9 ? ~0ULL : strtoull(name, NULL, 10);
        return i < p->n_stages ? &p->stages[i] : NULL;
    }
    for (size_t i = 0; i < p->n_stages; i++)
        if (p->stages[i].name && strcasecmp(p->stages[i].name, name) == 0)
            return &p->stages[i];
    return NULL;
}
