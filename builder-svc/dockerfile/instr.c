/* Instruction dispatch and the metadata instructions: ARG, ENV, LABEL,
 * WORKDIR, USER, EXPOSE, MAINTAINER, VOLUME, CMD, ENTRYPOINT, SHELL,
 * HEALTHCHECK, STOPSIGNAL and ONBUILD.  Each parses its arguments the way
 * BuildKit's parser does, expands them when Docker does, validates them and
 * updates the stage state. */
#include "plan_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {
    "RUN",  "COPY",   "ADD",         "ARG",        "ENV",     "WORKDIR",
    "USER", "EXPOSE", "LABEL",       "MAINTAINER", "VOLUME",  "ENTRYPOINT",
    "CMD",  "SHELL",  "HEALTHCHECK", "STOPSIGNAL", "ONBUILD",
};

const char *bld_instr_kind_name(bld_instr_kind k)
{
    return (size_t)k < KILN_ARRAY_SIZE(kind_names) ? kind_names[k] : "UNKNOWN";
}

static bool kind_of(const char *kw, bld_instr_kind *k)
{
    for (size_t i = 0; i < KILN_ARRAY_SIZE(kind_names); i++)
        if (strcasecmp(kw, kind_names[i]) == 0)
            return *k = (bld_instr_kind)i, true;
    return false;
}

int pc_json(pctx *c, const df_line *ln, size_t off, const char *args, char ***w, size_t *n,
            kiln_error **err)
{
    int j = df_json_strings(w, n, c->a, args);
    if (j == -1)
        return pc_err(c, ln, off, err,
                      "when using JSON array syntax, arrays must be comprised of strings only");
    if (j == -2)
        return pc_err(c, ln, off, err,
                      "a JSON string holds a NUL character (\\u0000), which no command, path or "
                      "image config value can contain");
    return j;
}

static int no_flags(pctx *c, const df_line *ln, const df_cmd *cmd, kiln_error **err)
{
    return pc_flags(c, ln, cmd, NULL, 0, NULL, err);
}

/* ENV and LABEL: "key value" (legacy) or key=value pairs; keys and values expanded
 * with the state before the instruction, as Docker does. */
static int name_vals(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, const char *kw,
                     kiln_error **err)
{
    df_name_val *nv = NULL;
    size_t cnt = 0;
    bool legacy = false;
    const char *bad = NULL;
    if (*cmd->args == '\0')
        return pc_err(c, ln, cmd->kw_off, err, "%s requires at least one argument", kw);
    if (df_name_vals(&nv, &cnt, &legacy, c->a, cmd->args, c->dirs.escape, &bad) < 0)
        return bad ? pc_err(c, ln, cmd->args_off, err,
                            "Syntax error - can't find = in \"%s\". Must be of the form: "
                            "name=value",
                            bad)
                   : pc_err(c, ln, cmd->args_off, err, "%s must have two arguments", kw);
    if (cnt == 0)
        return pc_err(c, ln, cmd->kw_off, err, "%s requires at least one argument", kw);
    bld_kv *pairs = df_alloc(c->a, cnt * sizeof(bld_kv));
    for (size_t i = 0; i < cnt; i++) {
        char *k = NULL, *v = NULL;
        int rc = pc_expand(c, &k, nv[i].name, false, ln, cmd->args_off, err);
        if (rc == 0)
            rc = pc_expand(c, &v, nv[i].value, false, ln, cmd->args_off, err);
        if (rc < 0)
            return rc;
        if (*k == '\0')
            return pc_err(c, ln, cmd->args_off, err, "%s names can not be blank", kw);
        pairs[i] = (bld_kv){k, v};
    }
    in->u.kv.pairs = pairs;
    in->u.kv.n = cnt;
    return 0;
}

static int do_env(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    int rc = name_vals(c, ln, cmd, in, "ENV", err);
    for (size_t i = 0; rc == 0 && i < in->u.kv.n; i++)
        pc_env_set(c, in->u.kv.pairs[i].key, in->u.kv.pairs[i].value);
    return rc;
}

static int do_arg(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    char **w = NULL;
    size_t n = df_parse_words(&w, c->a, cmd->args, c->dirs.escape);
    if (n == 0)
        return pc_err(c, ln, cmd->kw_off, err, "ARG requires at least one argument");
    in->u.kv.pairs = df_alloc(c->a, n * sizeof(bld_kv));
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(w[i], '=');
        char *name = eq ? df_strndup(c->a, w[i], (size_t)(eq - w[i])) : w[i], *dflt = NULL;
        if (*name == '\0')
            return pc_err(c, ln, cmd->args_off, err, "ARG names can not be blank");
        /* A --build-arg value wins, and then the default is not evaluated at
         * all (BuildKit's dispatchArg): ARG B=${A:?} with --build-arg B=x works. */
        const char *v = pc_build_arg(c, name);
        if (v == NULL && eq) {
            int rc = pc_expand(c, &dflt, eq + 1, false, ln, cmd->args_off, err);
            if (rc < 0)
                return rc;
        }
        if (v == NULL)
            v = pc_arg_value(c, name, dflt, eq != NULL, false);
        pc_arg_add(c, name, v, ++c->seq);
        in->u.kv.pairs[in->u.kv.n++] = (bld_kv){name, v};
    }
    return 0;
}

static int one_string(pctx *c, const df_line *ln, const df_cmd *cmd, const char *kw, bool expand,
                      const char **out, kiln_error **err)
{
    int rc = no_flags(c, ln, cmd, err);
    if (rc < 0)
        return rc;
    if (*cmd->args == '\0')
        return pc_err(c, ln, cmd->kw_off, err, "%s requires exactly one argument", kw);
    char *v = (char *)cmd->args;
    if (expand && (rc = pc_expand(c, &v, cmd->args, false, ln, cmd->args_off, err)) < 0)
        return rc;
    *out = v;
    return 0;
}

static int do_workdir(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in,
                      kiln_error **err)
{
    const char *p = NULL;
    int rc = one_string(c, ln, cmd, "WORKDIR", true, &p, err);
    if (rc < 0)
        return rc;
    if (*p == '\0' && c->unresolved.n) {
        in->u.str = p; /* decided once the base image's ENV is known */
        return 0;
    }
    if (*p == '\0')
        return pc_err(c, ln, cmd->args_off, err, "WORKDIR requires a non-empty path");
    const char *cur = c->ss.workdir;
    if (*p != '/' && cur != NULL)
        p = df_printf(c->a, "%s/%s", cur, p);
    /* A result not starting with '/' is relative to the base image's WorkingDir. */
    c->ss.workdir = in->u.str = df_path_clean(c->a, p);
    return 0;
}

static int parse_port(const char *s, unsigned *out)
{
    if (*s == '+')
        s++; /* Go's ParseInt takes a sign */
    if (!*s || strlen(s) > 5)
        return -1;
    unsigned v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return -1;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > 65535)
        return -1;
    *out = v;
    return 0;
}

/* "start[-end]"; -1 when invalid, -2 when end < start. */
static int parse_range(char *s, unsigned *start, unsigned *end)
{
    char *dash = strchr(s, '-');
    if (dash)
        *dash = '\0';
    if (parse_port(s, start) < 0)
        return -1;
    if (dash == NULL || strcmp(s, dash + 1) == 0) {
        *end = *start;
        return 0;
    }
    if (parse_port(dash + 1, end) < 0)
        return -1;
    return *end < *start ? -2 : 0;
}

/* BuildKit's parsePort: [[ip:]hostPort:]port[-end][/proto]; the IP must be a
 * valid address and a host port range must fit the container one. */
static int expose_one(pctx *c, const df_line *ln, const df_cmd *cmd, char *spec, bld_port *pt,
                      kiln_error **err)
{
    const char *raw = df_strdup(c->a, spec);
    char *ip = NULL, *host = NULL, *port = spec;
    char *last = strrchr(spec, ':');
    if (last) {
        *last = '\0';
        port = last + 1;
        char *prev = strrchr(spec, ':');
        if (prev) {
            *prev = '\0';
            ip = spec;
            host = prev + 1;
        } else {
            host = spec;
        }
    }
    char *slash = strchr(port, '/');
    pt->proto = "tcp";
    if (slash) {
        *slash = '\0';
        char *proto = slash + 1;
        df_lower(proto);
        if (*proto && strcmp(proto, "tcp") && strcmp(proto, "udp") && strcmp(proto, "sctp"))
            return pc_err(c, ln, cmd->args_off, err, "invalid port \"%s\": invalid proto: %s", raw,
                          slash + 1);
        if (*proto)
            pt->proto = proto;
    }
    if (*port == '\0')
        return pc_err(c, ln, cmd->args_off, err, "invalid port \"%s\": no port specified", raw);
    if (ip && *ip) {
        size_t il = strlen(ip);
        if (ip[0] == '[' && il >= 2 && ip[il - 1] == ']') {
            ip[il - 1] = '\0';
            ip++;
        }
        unsigned char buf[16];
        if (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1)
            return pc_err(c, ln, cmd->args_off, err, "invalid IP address: %s", ip);
    }
    int r = parse_range(port, &pt->start, &pt->end);
    if (r == -2)
        return pc_err(c, ln, cmd->args_off, err, "invalid port range: %s", raw);
    if (r < 0)
        return pc_err(c, ln, cmd->args_off, err, "invalid containerPort: %s", port);
    if (host && *host) {
        unsigned hs = 0, he = 0;
        if (parse_range(host, &hs, &he) < 0)
            return pc_err(c, ln, cmd->args_off, err, "invalid hostPort: %s", host);
        if (he - hs != pt->end - pt->start && pt->end != pt->start)
            return pc_err(c, ln, cmd->args_off, err,
                          "invalid ranges specified for container and host Ports: %s", raw);
    }
    return 0;
}

/* EXPOSE: each argument is expanded and split into words (BuildKit's
 * ProcessWords), so ARG PORTS="80 443/udp" + EXPOSE $PORTS gives two ports and
 * an empty expansion none. */
static int do_expose(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    int rc = no_flags(c, ln, cmd, err);
    char **w = NULL;
    size_t n = df_split_ws(&w, c->a, cmd->args), cap = 0;
    if (rc < 0)
        return rc;
    if (n == 0)
        return pc_err(c, ln, cmd->kw_off, err, "EXPOSE requires at least one argument");
    for (size_t i = 0; i < n; i++) {
        char **ports = NULL;
        long np = 0;
        if ((rc = pc_expand_words(c, &ports, &np, w[i], ln, cmd->args_off, err)) < 0)
            return rc;
        for (long k = 0; k < np; k++) {
            DF_PUSH(c->a, in->u.expose.v, in->u.expose.n, cap);
            bld_port *pt = &in->u.expose.v[in->u.expose.n];
            if ((rc = expose_one(c, ln, cmd, ports[k], pt, err)) < 0)
                return rc;
            in->u.expose.n++;
        }
    }
    return 0;
}

static int do_volume(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    int rc = no_flags(c, ln, cmd, err);
    char **w = NULL;
    size_t n = 0;
    if (rc < 0)
        return rc;
    int j = pc_json(c, ln, cmd->args_off, cmd->args, &w, &n, err);
    if (j < 0)
        return j;
    if (j == 0)
        n = df_split_ws(&w, c->a, cmd->args);
    if (n == 0)
        return pc_err(c, ln, cmd->kw_off, err, "VOLUME requires at least one argument");
    in->u.list.v = df_alloc(c->a, n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        char *v = NULL;
        if ((rc = pc_expand(c, &v, w[i], false, ln, cmd->args_off, err)) < 0)
            return rc;
        size_t b = 0, e = strlen(v);
        while (b < e && df_is_space(v[b]))
            b++;
        while (e > b && df_is_space(v[e - 1]))
            e--;
        if (b == e)
            return pc_err(c, ln, cmd->args_off, err, "VOLUME specified can not be an empty string");
        in->u.list.v[in->u.list.n++] = df_strndup(c->a, v + b, e - b);
    }
    return 0;
}

/* CMD, ENTRYPOINT and HEALTHCHECK CMD: exec form, or the shell form wrapped in SHELL. */
static int command_form(pctx *c, const df_line *ln, const char *args, size_t off, const char *kw,
                        bool *exec_form, bld_strv *argv, kiln_error **err)
{
    char **w = NULL;
    size_t n = 0;
    int j = pc_json(c, ln, off, args, &w, &n, err);
    if (j < 0)
        return j;
    if (j > 0) {
        *exec_form = true;
        *argv = (bld_strv){(const char **)w, n};
        return 0;
    }
    if (*args == '\0')
        return pc_err(c, ln, off, err, "%s requires at least one argument", kw);
    const char **v = df_alloc(c->a, (c->ss.shell.n + 1) * sizeof(char *));
    memcpy(v, c->ss.shell.v, c->ss.shell.n * sizeof(char *));
    v[c->ss.shell.n] = args;
    *exec_form = false;
    *argv = (bld_strv){v, c->ss.shell.n + 1};
    return 0;
}

static int do_shell(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    int rc = no_flags(c, ln, cmd, err);
    char **w = NULL;
    size_t n = 0;
    if (rc < 0)
        return rc;
    int j = pc_json(c, ln, cmd->args_off, cmd->args, &w, &n, err);
    if (j < 0)
        return j;
    if (j == 0)
        return pc_err(c, ln, cmd->args_off, err, "SHELL requires the arguments to be in JSON form");
    if (n == 0)
        return pc_err(c, ln, cmd->args_off, err, "SHELL requires at least one argument");
    in->u.list = (bld_strv){(const char **)w, n};
    c->ss.shell = in->u.list;
    return 0;
}

/* Go's time.ParseDuration, in nanoseconds. */
static bool parse_duration(const char *s, long long *out)
{
    static const struct {
        const char *u;
        double ns;
    } units[] = {{"ns", 1},   {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3},
                 {"ms", 1e6}, {"s", 1e9},  {"m", 60e9},        {"h", 3600e9}};
    bool neg = false;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (strcmp(s, "0") == 0)
        return *out = 0, true;
    if (*s == '\0')
        return false;
    double total = 0;
    while (*s) {
        if (!isdigit((unsigned char)*s) && *s != '.')
            return false;
        char *end = NULL;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s)
            return false;
        for (const char *p = s; p < end; p++)
            if (!isdigit((unsigned char)*p) && *p != '.')
                return false;
        s = end;
        size_t best = 0, bl = 0;
        for (size_t i = 0; i < KILN_ARRAY_SIZE(units); i++) {
            size_t l = strlen(units[i].u);
            if (strncmp(s, units[i].u, l) == 0 && l > bl)
                best = i, bl = l;
        }
        if (bl == 0)
            return false;
        total += v * units[best].ns;
        s += bl;
        if (total > 9.2e18)
            return false;
    }
    *out = (long long)(neg ? -total : total);
    return true;
}

static int do_healthcheck(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in,
                          kiln_error **err)
{
    static const flag_spec spec[] = {{"interval", FLAG_STR},
                                     {"timeout", FLAG_STR},
                                     {"start-period", FLAG_STR},
                                     {"start-interval", FLAG_STR},
                                     {"retries", FLAG_STR}};
    flag_val fv[5] = {0};
    bld_health *h = &in->u.health;
    int rc = pc_flags(c, ln, cmd, spec, 5, fv, err);
    if (rc < 0)
        return rc;
    const char *a = cmd->args;
    size_t k = 0;
    while (a[k] && !df_is_space(a[k]))
        k++;
    if (k == 0)
        return pc_err(c, ln, cmd->kw_off, err, "HEALTHCHECK requires at least one argument");
    if (k == 4 && strncasecmp(a, "none", 4) == 0) {
        if (a[k] != '\0' || cmd->nflags)
            return pc_err(c, ln, cmd->args_off, err, "HEALTHCHECK NONE takes no arguments");
        h->none = true;
        static const char *const none[] = {"NONE"};
        h->test = (bld_strv){(const char **)none, 1};
        return 0;
    }
    if (k != 3 || strncasecmp(a, "cmd", 3) != 0)
        return pc_err(c, ln, cmd->args_off, err, "Unknown type \"%.*s\" in HEALTHCHECK (try CMD)",
                      (int)(k > 40 ? 40 : k), a);
    size_t r = k;
    while (a[r] && df_is_space(a[r]))
        r++;
    bool exec_form = false;
    bld_strv argv = {0};
    if ((rc = command_form(c, ln, a + r, cmd->args_off + r, "HEALTHCHECK CMD", &exec_form, &argv,
                           err)) < 0)
        return rc;
    const char **t = df_alloc(c->a, (argv.n + 1) * sizeof(char *));
    if (exec_form) {
        t[0] = "CMD";
        memcpy(t + 1, argv.v, argv.n * sizeof(char *));
        h->test = (bld_strv){t, argv.n + 1};
    } else {
        t[0] = "CMD-SHELL";
        t[1] = a + r;
        h->test = (bld_strv){t, 2};
    }
    long long *dst[] = {&h->interval_ns, &h->timeout_ns, &h->start_period_ns,
                        &h->start_interval_ns};
    for (size_t i = 0; i < 4; i++) {
        if (!fv[i].set)
            continue;
        if (!parse_duration(fv[i].s, dst[i]) || *dst[i] < 0)
            return pc_err(c, ln, fv[i].off, err, "invalid duration for --%s: \"%s\"", spec[i].name,
                          fv[i].s);
        if (*dst[i] != 0 && *dst[i] < 1000000)
            return pc_err(c, ln, fv[i].off, err, "--%s \"%s\" cannot be less than 1ms",
                          spec[i].name, fv[i].s);
    }
    if (fv[4].set) {
        char *end = NULL;
        errno = 0;
        long v = strtol(fv[4].s, &end, 10);
        if (errno || end == fv[4].s || *end)
            return pc_err(c, ln, fv[4].off, err, "invalid value for --retries: \"%s\"", fv[4].s);
        if (v < 0)
            return pc_err(c, ln, fv[4].off, err, "--retries cannot be negative (%ld)", v);
        h->retries = v;
    }
    return 0;
}

static bool valid_signal(const char *s)
{
    static const char *const names[] = {
        "ABRT", "ALRM",   "BUS",  "CHLD",   "CLD",   "CONT", "FPE",  "HUP",   "ILL",
        "INT",  "IO",     "IOT",  "KILL",   "PIPE",  "POLL", "PROF", "PWR",   "QUIT",
        "SEGV", "STKFLT", "STOP", "SYS",    "TERM",  "TRAP", "TSTP", "TTIN",  "TTOU",
        "URG",  "USR1",   "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX"};
    if (isdigit((unsigned char)*s)) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        return *end == '\0' && v > 0 && v <= 64;
    }
    char up[24];
    size_t n = strlen(s);
    if (n >= sizeof(up))
        return false;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)toupper((unsigned char)s[i]);
    const char *p = strncmp(up, "SIG", 3) == 0 ? up + 3 : up;
    for (size_t i = 0; i < KILN_ARRAY_SIZE(names); i++)
        if (strcmp(p, names[i]) == 0)
            return true;
    /* RTMIN+n, RTMAX-n */
    if ((strncmp(p, "RTMIN+", 6) == 0 || strncmp(p, "RTMAX-", 6) == 0) &&
        isdigit((unsigned char)p[6])) {
        char *end = NULL;
        long v = strtol(p + 6, &end, 10);
        return *end == '\0' && v >= 1 && v <= 15;
    }
    return false;
}

static int do_onbuild(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in,
                      kiln_error **err)
{
    int rc = no_flags(c, ln, cmd, err);
    if (rc < 0)
        return rc;
    if (*cmd->args == '\0')
        return pc_err(c, ln, cmd->kw_off, err, "ONBUILD requires at least one argument");
    /* The trigger as a line of its own, keeping positions in the file. */
    df_trigger t = {.src = c->src};
    t.line = *ln;
    t.line.text = (char *)cmd->args;
    t.line.len = strlen(cmd->args);
    t.line.nheredocs = 0;
    t.line.segs = df_alloc(c->a, (ln->nsegs + 1) * sizeof(df_seg));
    t.line.nsegs = 0;
    for (size_t i = 0; i < ln->nsegs; i++) {
        df_seg s = ln->segs[i];
        bool last = i + 1 == ln->nsegs || ln->segs[i + 1].off > cmd->args_off;
        if (s.off < cmd->args_off && !last)
            continue;
        if (s.off <= cmd->args_off) {
            s.col += (int)(cmd->args_off - s.off);
            s.off = 0;
        } else {
            s.off -= cmd->args_off;
        }
        t.line.segs[t.line.nsegs++] = s;
    }
    df_cmd sub;
    if ((rc = df_split_command(&sub, c->a, &t.line, c->src, err)) < 0)
        return rc;
    if (!df_known_keyword(sub.keyword))
        return pc_err(c, &t.line, 0, err, "unknown instruction in ONBUILD: %.40s", sub.keyword);
    if (strcmp(sub.keyword, "onbuild") == 0)
        return pc_err(c, &t.line, 0, err, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
    if (strcmp(sub.keyword, "from") == 0 || strcmp(sub.keyword, "maintainer") == 0)
        return pc_err(c, &t.line, 0, err, "%s isn't allowed as an ONBUILD trigger",
                      strcmp(sub.keyword, "from") == 0 ? "FROM" : "MAINTAINER");
    in->u.onbuild.trigger = cmd->args;
    kind_of(sub.keyword, &in->u.onbuild.kind);
    DF_PUSH(c->a, c->ss.triggers, c->ss.n_triggers, c->ss.cap_triggers);
    c->ss.triggers[c->ss.n_triggers++] = t;
    return 0;
}

int df_instr(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err)
{
    bld_instr_kind k;
    if (!kind_of(cmd->keyword, &k))
        return pc_err(c, ln, cmd->kw_off, err, "unknown instruction: %.40s", cmd->keyword);
    in->kind = k;
    int rc;
    switch (k) {
    case BLD_INSTR_RUN:
        return df_instr_run(c, ln, cmd, in, err);
    case BLD_INSTR_COPY:
    case BLD_INSTR_ADD:
        return df_instr_copy(c, ln, cmd, in, k == BLD_INSTR_ADD, err);
    case BLD_INSTR_ARG:
        rc = no_flags(c, ln, cmd, err);
        return rc < 0 ? rc : do_arg(c, ln, cmd, in, err);
    case BLD_INSTR_ENV:
        rc = no_flags(c, ln, cmd, err);
        return rc < 0 ? rc : do_env(c, ln, cmd, in, err);
    case BLD_INSTR_LABEL:
        rc = no_flags(c, ln, cmd, err);
        return rc < 0 ? rc : name_vals(c, ln, cmd, in, "LABEL", err);
    case BLD_INSTR_WORKDIR:
        return do_workdir(c, ln, cmd, in, err);
    case BLD_INSTR_USER:
        rc = one_string(c, ln, cmd, "USER", true, &in->u.str, err);
        if (rc == 0 && *in->u.str == '\0' && c->unresolved.n == 0)
            return pc_err(c, ln, cmd->args_off, err, "USER requires a non-empty user");
        c->ss.user = in->u.str;
        return rc;
    case BLD_INSTR_MAINTAINER:
        return one_string(c, ln, cmd, "MAINTAINER", false, &in->u.str, err);
    case BLD_INSTR_STOPSIGNAL:
        rc = one_string(c, ln, cmd, "STOPSIGNAL", true, &in->u.str, err);
        if (rc == 0 && !valid_signal(in->u.str))
            return pc_err(c, ln, cmd->args_off, err, "invalid signal: %.40s", in->u.str);
        return rc;
    case BLD_INSTR_EXPOSE:
        return do_expose(c, ln, cmd, in, err);
    case BLD_INSTR_VOLUME:
        return do_volume(c, ln, cmd, in, err);
    case BLD_INSTR_CMD:
    case BLD_INSTR_ENTRYPOINT:
        rc = no_flags(c, ln, cmd, err);
        return rc < 0 ? rc
                      : command_form(c, ln, cmd->args, cmd->args_off, kind_names[k],
                                     &in->u.cmd.exec_form, &in->u.cmd.argv, err);
    case BLD_INSTR_SHELL:
        return do_shell(c, ln, cmd, in, err);
    case BLD_INSTR_HEALTHCHECK:
        return do_healthcheck(c, ln, cmd, in, err);
    case BLD_INSTR_ONBUILD:
        return do_onbuild(c, ln, cmd, in, err);
    }
    return pc_err(c, ln, cmd->kw_off, err, "unknown instruction: %.40s", cmd->keyword);
}

int bld_onbuild_check(bld_instr_kind *kind, const char *trigger, kiln_error **err)
{
    df_arena *a = df_arena_new();
    df_src src = {"ONBUILD trigger", trigger ? trigger : "", trigger ? strlen(trigger) : 0};
    df_line ln;
    df_cmd cmd;
    int rc = df_lex_one(&ln, a, src.text, 1, '\\', &src, err);
    if (rc == 0)
        rc = df_split_command(&cmd, a, &ln, &src, err);
    if (rc == 0 && (!kind_of(cmd.keyword, kind) || *kind == BLD_INSTR_ONBUILD ||
                    strcmp(cmd.keyword, "from") == 0 || strcmp(cmd.keyword, "maintainer") == 0))
        rc =
            df_error_at(err, &src, 1, 1, "invalid ONBUILD trigger instruction: %.40s", cmd.keyword);
    df_arena_free(a);
    return rc;
}
