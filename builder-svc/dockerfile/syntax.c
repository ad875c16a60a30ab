/* The syntax of each instruction's arguments, before any expansion, shared
 * by the instruction parsers and by df_syntax_dump(), which renders a
 * Dockerfile the way BuildKit's parser dumps its AST ("(from \"image\")"),
 * so that BuildKit's own parser test files can check Kiln's lexer and
 * argument splitting (tests/data/buildkit). */
#include "df_internal.h"

#include <stdio.h>
#include <string.h>

int df_name_vals(df_name_val **out, size_t *n_out, bool *legacy, df_arena *a, const char *args,
                 char escape, const char **bad_word)
{
    char **w = NULL;
    size_t n = df_parse_words(&w, a, args, escape), cnt = 0;
    *out = NULL;
    *n_out = 0;
    *legacy = false;
    *bad_word = NULL;
    if (n == 0)
        return 0;
    df_name_val *v = df_alloc(a, n * sizeof(*v));
    if (strchr(w[0], '=') == NULL) {
        /* "KEY name value": the name, then everything after the blanks. */
        size_t k = 0;
        while (args[k] && !df_is_space(args[k]))
            k++;
        size_t s = k;
        while (args[s] && df_is_space(args[s]))
            s++;
        *legacy = true;
        if (args[s] == '\0')
            return -1;
        v[0] = (df_name_val){df_strndup(a, args, k), args + s};
        *out = v;
        *n_out = 1;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(w[i], '=');
        if (eq == NULL) {
            *bad_word = w[i];
            return -1;
        }
        v[cnt++] = (df_name_val){df_strndup(a, w[i], (size_t)(eq - w[i])), eq + 1};
    }
    *out = v;
    *n_out = cnt;
    return 0;
}

/* ---- BuildKit-style AST dump --------------------------------------------------- */

/* Go's strconv.Quote. */
static void quote(df_str *b, const char *s, size_t n)
{
    df_str_addc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *e = NULL;
        switch (c) {
        case '\a':
            e = "\\a";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        case '\v':
            e = "\\v";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '"':
            e = "\\\"";
            break;
        default:
            break;
        }
        if (e) {
            df_str_adds(b, e);
        } else if (c < 0x20 || c == 0x7f) {
            char x[5];
            snprintf(x, sizeof(x), "\\x%02x", c);
            df_str_adds(b, x);
        } else {
            df_str_addc(b, (char)c);
        }
    }
    df_str_addc(b, '"');
}

static void word(df_str *b, const char *s)
{
    df_str_addc(b, ' ');
    quote(b, s, strlen(s));
}

static void words(df_str *b, char **w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        word(b, w[i]);
}

/* BuildKit's parseMaybeJSON: a JSON array, or the text as one word. */
static int maybe_json(df_str *b, df_arena *a, const char *args, bool to_list)
{
    char **w = NULL;
    size_t *lens = NULL, n = 0;
    int j = df_json_array(&w, &lens, &n, a, args);
    if (j < 0)
        return -1;
    if (j > 0) {
        for (size_t i = 0; i < n; i++) {
            df_str_addc(b, ' ');
            quote(b, w[i], lens[i]);
        }
        return 0;
    }
    if (to_list) {
        n = df_split_ws(&w, a, args);
        words(b, w, n);
    } else if (*args) {
        word(b, args);
    }
    return 0;
}

static int dump_cmd(df_str *b, df_arena *a, const df_line *ln, char escape, const df_src *src,
                    kiln_error **err);

/* The arguments of one instruction; -1 with *msg on a syntax error. */
static int dump_args(df_str *b, df_arena *a, const df_line *ln, const df_cmd *cmd, char escape,
                     const df_src *src, const char **msg, kiln_error **err)
{
    const char *kw = cmd->keyword, *args = cmd->args;
    char **w = NULL;
    size_t n = 0;
    if (!strcmp(kw, "env") || !strcmp(kw, "label")) {
        df_name_val *v = NULL;
        bool legacy = false;
        const char *bad = NULL;
        if (df_name_vals(&v, &n, &legacy, a, args, escape, &bad) < 0) {
            *msg = bad ? df_printf(a, "Syntax error - can't find = in \"%s\"", bad)
                       : df_printf(a, "%s must have two arguments", kw);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            word(b, v[i].name);
            word(b, v[i].value);
            word(b, legacy ? "" : "=");
        }
    } else if (!strcmp(kw, "arg")) {
        n = df_parse_words(&w, a, args, escape);
        words(b, w, n);
    } else if (!strcmp(kw, "expose") || !strcmp(kw, "from")) {
        n = df_split_ws(&w, a, args);
        words(b, w, n);
    } else if (!strcmp(kw, "maintainer") || !strcmp(kw, "stopsignal") || !strcmp(kw, "user") ||
               !strcmp(kw, "workdir")) {
        if (*args)
            word(b, args);
    } else if (!strcmp(kw, "add") || !strcmp(kw, "copy") || !strcmp(kw, "volume") ||
               !strcmp(kw, "run") || !strcmp(kw, "cmd") || !strcmp(kw, "entrypoint") ||
               !strcmp(kw, "shell")) {
        bool list = !strcmp(kw, "add") || !strcmp(kw, "copy") || !strcmp(kw, "volume");
        if (maybe_json(b, a, args, list) < 0) {
            *msg = "when using JSON array syntax, arrays must be comprised of strings only";
            return -1;
        }
    } else if (!strcmp(kw, "healthcheck")) {
        size_t k = 0;
        while (args[k] && !df_is_space(args[k]))
            k++;
        if (k) {
            word(b, df_strndup(a, args, k));
            while (args[k] && df_is_space(args[k]))
                k++;
            if (maybe_json(b, a, args + k, false) < 0) {
                *msg = "when using JSON array syntax, arrays must be comprised of strings only";
                return -1;
            }
        }
    } else if (!strcmp(kw, "onbuild")) {
        if (*args) {
            df_line sub = *ln;
            sub.text = (char *)args;
            sub.len = strlen(args);
            sub.nsegs = 0;
            df_str_adds(b, " (");
            int rc = dump_cmd(b, a, &sub, escape, src, err);
            if (rc < 0)
                return rc;
            df_str_addc(b, ')');
        }
    } /* an unknown instruction keeps no arguments, as BuildKit's parseIgnore */
    return 0;
}

static int dump_cmd(df_str *b, df_arena *a, const df_line *ln, char escape, const df_src *src,
                    kiln_error **err)
{
    df_cmd cmd;
    int rc = df_split_command(&cmd, a, ln, src, err);
    if (rc < 0)
        return rc;
    df_str_adds(b, cmd.keyword);
    if (cmd.nflags) {
        df_str_adds(b, " [");
        for (size_t i = 0; i < cmd.nflags; i++) {
            const df_flag *f = &cmd.flags[i];
            char *fw = f->value ? df_printf(a, "--%s=%s", f->name, f->value)
                                : df_printf(a, "--%s", f->name);
            if (i)
                df_str_addc(b, ' ');
            quote(b, fw, strlen(fw));
        }
        df_str_addc(b, ']');
    }
    const char *msg = NULL;
    if (dump_args(b, a, ln, &cmd, escape, src, &msg, err) < 0)
        return msg ? df_error_at(err, src, ln->first_line, 1, "%s", msg) : -1;
    return 0;
}

int df_syntax_dump(char **out, df_arena *a, const char *text, size_t len, kiln_error **err)
{
    df_src src = {"Dockerfile", text, len};
    df_line *lines = NULL;
    size_t n = 0;
    df_directives dirs;
    int rc = df_lex(&lines, &n, &dirs, a, &src, err);
    if (rc < 0)
        return rc;
    if (n == 0)
        return df_error_at(err, &src, 1, 1, "file with no instructions");
    df_str b;
    df_str_init(&b, a);
    for (size_t i = 0; i < n; i++) {
        df_str_addc(&b, '(');
        if ((rc = dump_cmd(&b, a, &lines[i], dirs.escape, &src, err)) < 0)
            return rc;
        df_str_adds(&b, ")\n");
    }
    *out = df_str_get(&b);
    return 0;
}
