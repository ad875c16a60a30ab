/* The instructions that touch files: RUN (with --mount,
 * --network, --security and heredoc scripts), COPY and ADD. */
#include "units.h"
#include "plan_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- --mount ------------------------------------------------------------------ */

/* encoding/csv-style fields: commas separate, "quoted" fields may hold commas. */
static int csv_fields(char ***out, size_t *n, df_arena *a, const char *s)
{
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    for (;;) {
        df_str f;
        df_str_init(&f, a);
        if (*s == '"') {
            s++;
            for (;;) {
                if (*s == '\0')
                    return -1;
                if (*s == '"' && s[1] == '"') {
                    df_str_addc(&f, '"');
                    s += 2;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    df_str_addc(&f, *s++);
                }
            }
            if (*s != ',' && *s != '\0')
                return -1;
        } else {
            while (*s && *s != ',') {
                if (*s == '"')
                    return -1;
                df_str_addc(&f, *s++);
            }
        }
        DF_PUSH(a, *out, *n, cap);
        (*out)[(*n)++] = df_str_get(&f);
        if (*s == '\0')
            return 0;
        s++;
    }
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "true", "TRUE", "True"};
    static const char *const f[] = {"0", "f", "F", "false", "FALSE", "False"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(t); i++) {
        if (strcmp(v, t[i]) == 0)
            return *out = true, true;
        if (strcmp(v, f[i]) == 0)
            return *out = false, true;
    }
    return false;
}

static bool parse_ulong(const char *v, int base, unsigned long max, long *out)
{
    if (!*v || !isalnum((unsigned char)*v))
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long x = strtoul(v, &end, base);
    if (errno || *end || x > max)
        return false;
    *out = (long)x;
    return true;
}

static const char *basename_of(df_arena *a, const char *p)
{
    char *c = df_path_clean(a, p);
    const char *s = strrchr(c, '/');
    return s && s[1] ? s + 1 : c;
}

static int mount_field(pctx *c, bld_mount *m, const char *key, const char *val, bool *has_ro,
                       const df_line *ln, size_t off, const char *spec, kiln_error **err)
{
    bool b = true;
    if (!strcmp(key, "readonly") || !strcmp(key, "ro") || !strcmp(key, "readwrite") ||
        !strcmp(key, "rw") || !strcmp(key, "required")) {
        if (val && !parse_bool(val, &b))
            return pc_err(c, ln, off, err, "invalid value for %s: %s", key, val);
        if (!strcmp(key, "required")) {
            m->required = b;
        } else {
            m->readonly = (!strcmp(key, "readonly") || !strcmp(key, "ro")) ? b : !b;
            *has_ro = true;
        }
        return 0;
    }
    if (val == NULL)
        return pc_err(c, ln, off, err, "invalid field '%s' must be a key=value pair", key);
    if (!strcmp(key, "type")) {
        static const char *const types[] = {"bind", "cache", "tmpfs", "secret", "ssh"};
        for (size_t i = 0; i < KILN_ARRAY_SIZE(types); i++)
            if (!strcasecmp(val, types[i]))
                return m->type = (bld_mount_type)i, 0;
        return pc_err(c, ln, off, err, "unsupported mount type \"%s\"", val);
    }
    if (!strcmp(key, "target") || !strcmp(key, "dst") || !strcmp(key, "destination"))
        m->target = val;
    else if (!strcmp(key, "source") || !strcmp(key, "src"))
        m->source = val;
    else if (!strcmp(key, "from"))
        m->from = val;
    else if (!strcmp(key, "id"))
        m->id = val;
    else if (!strcmp(key, "env"))
        m->env = val;
    else if (!strcmp(key, "sharing")) {
        if (!strcasecmp(val, "shared"))
            m->sharing = BLD_SHARING_SHARED;
        else if (!strcasecmp(val, "private"))
            m->sharing = BLD_SHARING_PRIVATE;
        else if (!strcasecmp(val, "locked"))
            m->sharing = BLD_SHARING_LOCKED;
        else
            return pc_err(c, ln, off, err, "unsupported sharing value \"%s\"", val);
    } else if (!strcmp(key, "mode")) {
        if (!parse_ulong(val, 8, 07777, &m->mode))
            return pc_err(c, ln, off, err, "invalid mode \"%s\" (want octal)", val);
    } else if (!strcmp(key, "uid") || !strcmp(key, "gid")) {
        long *dst = key[0] == 'u' ? &m->uid : &m->gid;
        if (!parse_ulong(val, 10, 0xffffffffUL, dst))
            return pc_err(c, ln, off, err, "invalid %s \"%s\"", key, val);
    } else if (!strcmp(key, "size")) {
        if ((m->size = kiln_parse_size(val)) < 0)
            return pc_err(c, ln, off, err, "invalid size \"%s\"", val);
    } else {
        return pc_err(c, ln, off, err, "unexpected key '%s' in '%s'", key, spec);
    }
    return 0;
}

static int parse_mount(pctx *c, bld_mount *m, const char *spec, const df_line *ln, size_t off,
                       kiln_error **err)
{
    char **f = NULL;
    size_t n = 0;
    bool has_ro = false;
    memset(m, 0, sizeof(*m));
    m->mode = m->uid = m->gid = -1;
    if (csv_fields(&f, &n, c->a, spec) < 0)
        return pc_err(c, ln, off, err, "invalid --mount value (bad quoting): %s", spec);
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(f[i], '=');
        char *key = eq ? df_strndup(c->a, f[i], (size_t)(eq - f[i])) : f[i];
        df_lower(key);
        char *val = NULL;
        if (eq) {
            int rc = pc_expand(c, &val, eq + 1, false, ln, off, err);
            if (rc < 0)
                return rc;
        }
        int rc = mount_field(c, m, key, val, &has_ro, ln, off, spec, err);
        if (rc < 0)
            return rc;
    }
    static const char *const tn[] = {"bind", "cache", "tmpfs", "secret", "ssh"};
    if (m->from && m->type != BLD_MOUNT_BIND && m->type != BLD_MOUNT_CACHE)
        return pc_err(c, ln, off, err, "from= is not supported for %s mounts", tn[m->type]);
    if (m->type == BLD_MOUNT_SECRET) {
        if (m->id == NULL && m->target == NULL)
            return pc_err(c, ln, off, err, "secret mount requires an id or a target");
        if (m->id == NULL)
            m->id = basename_of(c->a, m->target);
        if (m->target == NULL && m->env == NULL)
            m->target = df_printf(c->a, "/run/secrets/%s", m->id);
        if (m->mode < 0)
            m->mode = 0400;
        m->readonly = true;
    } else if (m->type == BLD_MOUNT_SSH) {
        if (m->id == NULL)
            m->id = "default";
        if (m->target == NULL)
            m->target = "/run/buildkit/ssh_agent.0";
        if (m->mode < 0)
            m->mode = 0600;
        m->readonly = true;
    } else if (m->target == NULL || *m->target == '\0') {
        return pc_err(c, ln, off, err, "%s mount requires a target", tn[m->type]);
    }
    if (m->type == BLD_MOUNT_BIND && !has_ro)
        m->readonly = true;
    if (m->type == BLD_MOUNT_CACHE && m->id == NULL)
        m->id = m->target;
    if (m->from && *m->from) {
        int rc = pc_stage_ref(c, &m->from, &m->from_kind, &m->from_stage, ln, off, err);
        if (rc < 0)
            return rc;
    } else {
        m->from = NULL;
    }
    return 0;
}

/* ---- RUN ---------------------------------------------------------------------- */

static void run_args(pctx *c, bld_instr *in)
{
    bld_kv *v = df_alloc(c->a, (c->ss.n_args + 1) * sizeof(bld_kv));
    size_t n = 0;
    c->work += c->ss.n_args * (c->ss.n_args + c->ss.n_env);
    if (c->work > DF_MAX_WORK)
        return;
    /* Each name's last ARG with a value, unless an ENV set later shadows it. */
    for (size_t i = 0; i < c->ss.n_args; i++) {
        const bld_kv *a = &c->ss.args[i];
        bool later = false, shadowed = false;
        for (size_t k = i + 1; k < c->ss.n_args; k++)
            later |= c->ss.args[k].value && strcmp(c->ss.args[k].key, a->key) == 0;
        for (size_t k = 0; k < c->ss.n_env; k++)
            shadowed |=
                c->ss.env_seq[k] > c->ss.arg_seq[i] && strcmp(c->ss.env[k].key, a->key) == 0;
        if (!later && !shadowed && a->value)
            v[n++] = *a;
    }
    in->args = v;
    in->n_args = n;
}

static bld_strv with_shell(pctx *c, const char *command)
{
    const char **v = df_alloc(c->a, (c->ss.shell.n + 2) * sizeof(char *));
    memcpy(v, c->ss.shell.v, c->ss.shell.n * sizeof(char *));
    v[c->ss.shell.n] = command;
    return (bld_strv){v, c->ss.shell.n + 1};
}

static char *chomp_tabs(df_arena *a, const char *s)
{
    df_str b;
    df_str_init(&b, a);
    bool bol = true;
    for (; *s; s++) {
        if (bol && *s == '\t')
            continue;
        bol = *s == '\n';
        df_str_addc(&b, *s);
    }
    return df_str_get(&b);
}

/* Copies the line's heredocs into the instruction (bodies chomped for <<-). */
static void take_heredocs(pctx *c, const df_line *ln, bld_instr *in)
{
    in->n_heredocs = ln->nheredocs;
    in->heredocs = df_alloc(c->a, (ln->nheredocs + 1) * sizeof(bld_heredoc));
    for (size_t i = 0; i < ln->nheredocs; i++) {
        const df_heredoc *h = &ln->heredocs[i];
        in->heredocs[i] =
            (bld_heredoc){h->name, h->chomp ? chomp_tabs(c->a, h->content) : h->content, h->expand,
                          h->chomp, h->fd};
    }
}

int df_instr_run(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    static const flag_spec spec[] = {
        {"mount", FLAG_LIST}, {"network", FLAG_STR}, {"security", FLAG_STR}};
    flag_val fv[3] = {0};
    bld_run *r = &in->u.run;
    int rc = pc_flags(c, ln, cmd, spec, 3, fv, err);
    if (rc < 0)
        return rc;
    if (*cmd->args == '\0')
        return pc_err(c, ln, cmd->kw_off, err, "RUN requires at least one argument");
    r->mounts = df_alloc(c->a, (fv[0].n + 1) * sizeof(bld_mount));
    for (size_t i = 0; i < fv[0].n; i++, r->n_mounts++)
        if ((rc = parse_mount(c, &r->mounts[i], fv[0].list[i], ln, fv[0].off, err)) < 0)
            return rc;
    if (fv[1].set) {
        if (!strcmp(fv[1].s, "default"))
            r->network = BLD_NET_DEFAULT;
        else if (!strcmp(fv[1].s, "none"))
            r->network = BLD_NET_NONE;
        else if (!strcmp(fv[1].s, "host"))
            r->network = BLD_NET_HOST;
        else
            return pc_err(c, ln, fv[1].off, err,
                          "unsupported network mode \"%s\" (want default, none or host)", fv[1].s);
    }
    if (fv[2].set) {
        if (!strcmp(fv[2].s, "insecure"))
            r->insecure = true;
        else if (strcmp(fv[2].s, "sandbox") != 0)
            return pc_err(c, ln, fv[2].off, err,
                          "unsupported security mode \"%s\" (want sandbox or insecure)", fv[2].s);
    }
    run_args(c, in);
    take_heredocs(c, ln, in);
    char **argv = NULL;
    size_t argc = 0;
    int j = pc_json(c, ln, cmd->args_off, cmd->args, &argv, &argc, err);
    if (j < 0)
        return j;
    if (j > 0 && in->n_heredocs == 0) {
        if (argc == 0)
            return pc_err(c, ln, cmd->args_off, err, "RUN requires at least one argument");
        r->exec_form = true;
        r->argv = (bld_strv){(const char **)argv, argc};
        return 0;
    }
    df_heredoc only;
    const char *command = cmd->args;
    if (in->n_heredocs == 1 && df_heredoc_word(&only, c->a, cmd->args) &&
        strcmp(only.name, in->heredocs[0].name) == 0) {
        /* "RUN <<EOF": the body is the script; with #! it is run as a file. */
        const bld_heredoc *h = &in->heredocs[0];
        if (strncmp(h->content, "#!", 2) == 0) {
            r->files = df_alloc(c->a, sizeof(bld_run_file));
            r->files[0] =
                (bld_run_file){df_printf(c->a, "/dev/pipes/%s", h->name), h->content, 0755};
            r->n_files = 1;
            command = r->files[0].path;
        } else {
            command = h->content;
        }
    } else if (in->n_heredocs) {
        /* The shell reads the heredocs itself: hand it the whole text. */
        df_str b;
        df_str_init(&b, c->a);
        df_str_adds(&b, cmd->args);
        for (size_t i = 0; i < ln->nheredocs; i++) {
            df_str_addc(&b, '\n');
            df_str_adds(&b, ln->heredocs[i].content);
            df_str_adds(&b, ln->heredocs[i].name);
        }
        command = df_str_get(&b);
    }
    r->command = command;
    r->argv = with_shell(c, command);
    return 0;
}

/* ---- COPY / ADD ------------------------------------------------------------- */

static bool is_url(const char *s)
{
    return !strncasecmp(s, "http://", 7) || !strncasecmp(s, "https://", 8);
}

static bool is_git(const char *s)
{
    if (!strncmp(s, "git@", 4) || !strncmp(s, "git://", 6))
        return true;
    if (!is_url(s))
        return false;
    const char *g = strstr(s, ".git");
    return g && (g[4] == '\0' || g[4] == '#' || g[4] == '/');
}

static bool valid_checksum(const char *s)
{
    const char *colon = strchr(s, ':');
    if (!colon)
        return false;
    size_t want = !strncmp(s, "sha256:", 7)   ? 64
                  : !strncmp(s, "sha384:", 7) ? 96
                  : !strncmp(s, "sha512:", 7) ? 128
                                              : 0;
    if (want == 0 || strlen(colon + 1) != want)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (!isxdigit((unsigned char)*p))
            return false;
    return true;
}

static int copy_flags(pctx *c, const df_line *ln, bld_copy *cp, flag_val *fv, bool add,
                      kiln_error **err)
{
    char *v = NULL;
    int rc;
    if (fv[0].set && !add) {
        if ((rc = pc_expand(c, &v, fv[0].s, false, ln, fv[0].off, err)) < 0)
            return rc;
        cp->from = v;
        if (*v && (rc = pc_stage_ref(c, &cp->from, &cp->from_kind, &cp->from_stage, ln, fv[0].off,
                                     err)) < 0)
            return rc;
    }
    if (fv[1].set) {
        if ((rc = pc_expand(c, &v, fv[1].s, false, ln, fv[1].off, err)) < 0)
            return rc;
        char *colon = strchr(v, ':');
        if (*v == '\0') {
            v = NULL; /* --chown= is no chown, as in BuildKit */
        } else {
            cp->chown_user = colon ? df_strndup(c->a, v, (size_t)(colon - v)) : v;
            cp->chown_group = colon ? colon + 1 : NULL;
            if (*cp->chown_user == '\0' || (colon && *cp->chown_group == '\0'))
                return pc_err(c, ln, fv[1].off, err, "invalid --chown \"%s\" (want user[:group])",
                              v);
        }
    }
    cp->mode = -1;
    if (fv[2].set) {
        if ((rc = pc_expand(c, &v, fv[2].s, false, ln, fv[2].off, err)) < 0)
            return rc;
        cp->chmod = v;
        if (isdigit((unsigned char)*v)) {
            if (!parse_ulong(v, 8, 07777, &cp->mode))
                return pc_err(c, ln, fv[2].off, err,
                              "invalid chmod parameter: '%s'. it should be octal string and "
                              "between 0 and 07777",
                              v);
        } else if (bld_chmod_apply(v, 0, false, NULL) < 0) {
            return pc_err(c, ln, fv[2].off, err,
                          "invalid chmod parameter \"%s\" (want octal, or symbolic as chmod(1): "
                          "u=rw,go=r, go-w, a+X)",
                          v);
        }
    }
    cp->link = fv[3].b;
    cp->parents = fv[4].b;
    cp->excludes.v = df_alloc(c->a, (fv[5].n + 1) * sizeof(char *));
    for (size_t i = 0; i < fv[5].n; i++) {
        if ((rc = pc_expand(c, &v, fv[5].list[i], false, ln, fv[5].off, err)) < 0)
            return rc;
        cp->excludes.v[cp->excludes.n++] = v;
    }
    cp->keep_git_dir = fv[6].b;
    if (fv[7].set) {
        if ((rc = pc_expand(c, &v, fv[7].s, false, ln, fv[7].off, err)) < 0)
            return rc;
        cp->checksum = v;
    }
    cp->unpack = fv[8].set ? fv[8].b : -1;
    return 0;
}

int df_instr_copy(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, bool add,
                  kiln_error **err)
{
    /* Same slots for both; the instruction's own table rejects the other's flags. */
    static const flag_spec copy_spec[] = {{"from", FLAG_STR},     {"chown", FLAG_STR},
                                          {"chmod", FLAG_STR},    {"link", FLAG_BOOL},
                                          {"parents", FLAG_BOOL}, {"exclude", FLAG_LIST}};
    static const flag_spec add_spec[] = {{"", FLAG_STR},
                                         {"chown", FLAG_STR},
                                         {"chmod", FLAG_STR},
                                         {"link", FLAG_BOOL},
                                         {"", FLAG_BOOL},
                                         {"exclude", FLAG_LIST},
                                         {"keep-git-dir", FLAG_BOOL},
                                         {"checksum", FLAG_STR},
                                         {"unpack", FLAG_BOOL}};
    flag_val fv[9] = {0};
    bld_copy *cp = &in->u.copy;
    const char *kw = add ? "ADD" : "COPY";
    int rc = add ? pc_flags(c, ln, cmd, add_spec, 9, fv, err)
                 : pc_flags(c, ln, cmd, copy_spec, 6, fv, err);
    if (rc < 0 || (rc = copy_flags(c, ln, cp, fv, add, err)) < 0)
        return rc;
    char **w = NULL;
    size_t n = 0;
    int j = pc_json(c, ln, cmd->args_off, cmd->args, &w, &n, err);
    if (j < 0)
        return j;
    if (j == 0)
        n = df_split_ws(&w, c->a, cmd->args);
    if (n < 2)
        return pc_err(c, ln, n ? cmd->args_off : cmd->kw_off, err,
                      "%s requires at least two arguments, but only %zu %s provided. Destination "
                      "could not be determined",
                      kw, n, n == 1 ? "was" : "were");
    take_heredocs(c, ln, in);
    cp->sources = df_alloc(c->a, n * sizeof(bld_source));
    size_t next_doc = 0;
    bool all_remote = true;
    for (size_t i = 0; i + 1 < n; i++) {
        bld_source *s = &cp->sources[cp->n_sources++];
        df_heredoc h;
        if (j == 0 && next_doc < in->n_heredocs && df_heredoc_word(&h, c->a, w[i]) &&
            strcmp(h.name, in->heredocs[next_doc].name) == 0) {
            bld_heredoc *hd = &in->heredocs[next_doc];
            if (hd->expand && (rc = pc_expand(c, (char **)&hd->content, hd->content, true, ln,
                                              cmd->args_off, err)) < 0)
                return rc;
            *s = (bld_source){BLD_SRC_HEREDOC, hd->name, next_doc++};
            all_remote = false;
            continue;
        }
        char *p = NULL;
        if ((rc = pc_expand(c, &p, w[i], false, ln, cmd->args_off, err)) < 0)
            return rc;
        if (!add && is_url(p))
            return pc_err(c, ln, cmd->args_off, err,
                          "source can't be a URL for COPY (ADD downloads URLs)");
        s->path = p;
        s->kind = add && is_git(p) ? BLD_SRC_GIT : add && is_url(p) ? BLD_SRC_URL : BLD_SRC_PATH;
        all_remote &= s->kind != BLD_SRC_PATH;
    }
    char *dest = NULL;
    df_heredoc hd;
    if (j == 0 && df_heredoc_word(&hd, c->a, w[n - 1]))
        return pc_err(c, ln, cmd->args_off, err, "%s cannot accept a heredoc as a destination", kw);
    if ((rc = pc_expand(c, &dest, w[n - 1], false, ln, cmd->args_off, err)) < 0)
        return rc;
    cp->dest = dest;
    size_t dl = strlen(dest);
    if (cp->n_sources > 1 && (dl == 0 || dest[dl - 1] != '/'))
        return pc_err(c, ln, cmd->args_off, err,
                      "when using %s with more than one source file, the destination must be a "
                      "directory and end with a /: write \"%s/\" (Kiln is stricter here than "
                      "BuildKit, as the Dockerfile reference asks)",
                      kw, dest);
    if (cp->checksum && !all_remote)
        return pc_err(c, ln, fv[7].off, err,
                      "checksum can't be specified for non-HTTP(S) or git sources");
    if (cp->checksum && cp->sources[0].kind == BLD_SRC_URL && !valid_checksum(cp->checksum))
        return pc_err(c, ln, fv[7].off, err,
                      "invalid checksum \"%s\" (want sha256:<hex>, sha384:<hex> or sha512:<hex>)",
                      cp->checksum);
    return 0;
}
