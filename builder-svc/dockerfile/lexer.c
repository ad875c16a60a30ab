/* Dockerfile lexer: turns source text into logical instruction lines.
 *
 * Follows BuildKit's parser: parser directives (# syntax=, # escape=, # check=)
 * are recognised only at the top of the file; whole-line comments are dropped,
 * also between continued lines; a line ending in the escape character (plus
 * optional blanks) continues on the next one; heredoc bodies of RUN, COPY and
 * ADD are read after the instruction line.  Also splits a logical line into
 * keyword, builder flags and arguments. */
#include "df_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const df_src *src;
    size_t pos;
    int line; /* number of the line last returned */
} reader;

/* Returns the next physical line without its newline and trailing '\r'. */
static bool next_line(reader *r, const char **p, size_t *n)
{
    if (r->pos >= r->src->len)
        return false;
    const char *s = r->src->text + r->pos;
    size_t rest = r->src->len - r->pos;
    const char *nl = memchr(s, '\n', rest);
    size_t len = nl ? (size_t)(nl - s) : rest;
    r->pos += nl ? len + 1 : len;
    while (len && s[len - 1] == '\r')
        len--;
    r->line++;
    *p = s;
    *n = len;
    return true;
}

static size_t skip_ws(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && df_is_space(p[i]))
        i++;
    return i;
}

static bool is_comment(const char *p, size_t n)
{
    size_t i = skip_ws(p, n);
    return i < n && p[i] == '#';
}

/* Removes a trailing escape character followed by blanks; true when found.
 * As in BuildKit, an escape that is itself escaped (a line ending in two
 * escapes) does not continue the line, nor does any escape preceded by the
 * escape character. */
static bool trim_continuation(const char *p, size_t *n, char escape)
{
    size_t i = *n;
    while (i && (p[i - 1] == ' ' || p[i - 1] == '\t'))
        i--;
    if (i && p[i - 1] == escape && (i == 1 || p[i - 2] != escape)) {
        *n = i - 1;
        return true;
    }
    return false;
}

/* Parses "# key = value"; returns false when the line is not a directive. */
static bool directive(const char *p, size_t n, char **key, char **val, df_arena *a)
{
    size_t i = 0;
    if (n == 0 || p[0] != '#')
        return false;
    i = 1;
    while (i < n && df_is_space(p[i]))
        i++;
    size_t k0 = i;
    if (i >= n || !isalpha((unsigned char)p[i]))
        return false;
    while (i < n && isalnum((unsigned char)p[i]))
        i++;
    size_t k1 = i;
    while (i < n && df_is_space(p[i]))
        i++;
    if (i >= n || p[i] != '=')
        return false;
    i++;
    while (i < n && df_is_space(p[i]))
        i++;
    size_t v1 = n;
    while (v1 > i && df_is_space(p[v1 - 1]))
        v1--;
    if (v1 == i)
        return false;
    *key = df_strndup(a, p + k0, k1 - k0);
    df_lower(*key);
    *val = df_strndup(a, p + i, v1 - i);
    return true;
}

typedef struct dir_state {
    bool done;
    bool seen_escape, seen_syntax, seen_check;
} dir_state;

static int check_directive(dir_state *ds, df_directives *d, df_arena *a, const char *p, size_t n,
                           const df_src *src, int line, kiln_error **err)
{
    char *key = NULL, *val = NULL;
    if (ds->done)
        return 0;
    if (!directive(p, n, &key, &val, a)) {
        ds->done = true;
        return 0;
    }
    bool *seen = NULL;
    if (strcmp(key, "escape") == 0)
        seen = &ds->seen_escape;
    else if (strcmp(key, "syntax") == 0)
        seen = &ds->seen_syntax;
    else if (strcmp(key, "check") == 0)
        seen = &ds->seen_check;
    if (seen == NULL) {
        ds->done = true;
        return 0;
    }
    if (*seen)
        return df_error_at(err, src, line, 1, "only one %s parser directive can be used", key);
    *seen = true;
    if (seen == &ds->seen_escape) {
        if (strcmp(val, "`") != 0 && strcmp(val, "\\") != 0)
            return df_error_at(err, src, line, 1,
                               "invalid escape token '%s' does not match ` or \\", val);
        d->escape = val[0];
    } else if (seen == &ds->seen_syntax) {
        d->syntax = val;
    } else {
        d->check = val;
    }
    return 0;
}

static void add_seg(df_line *ln, df_arena *a, size_t *cap, size_t off, int line, int col)
{
    DF_PUSH(a, ln->segs, ln->nsegs, *cap);
    ln->segs[ln->nsegs++] = (df_seg){off, line, col};
}

void df_line_pos(const df_line *ln, size_t off, int *line, int *col)
{
    size_t i = 0;
    while (i + 1 < ln->nsegs && ln->segs[i + 1].off <= off)
        i++;
    if (ln->nsegs == 0) {
        *line = ln->first_line;
        *col = 1;
        return;
    }
    *line = ln->segs[i].line;
    *col = ln->segs[i].col + (int)(off - ln->segs[i].off);
}

static bool may_have_heredoc(const char *text)
{
    size_t i = 0;
    while (text[i] && !df_is_space(text[i]))
        i++;
    if (!((i == 3 && (strncasecmp(text, "run", 3) == 0 || strncasecmp(text, "add", 3) == 0)) ||
          (i == 4 && strncasecmp(text, "copy", 4) == 0)))
        return false;
    return strstr(text, "<<") != NULL;
}

/* Reads the bodies of the heredocs named on ln. */
static int read_heredocs(df_line *ln, df_arena *a, reader *r, const df_src *src, kiln_error **err)
{
    df_lex_opts o = {.escape = '\\', .raw_quotes = true, .raw_escapes = true, .skip_unset = true};
    char **words = NULL;
    const char *msg = NULL;
    long nw = df_expand_words(&words, a, ln->text, &o, &msg);
    if (nw < 0)
        return 0; /* not shell-like: no heredocs (the instruction parser reports errors) */
    size_t cap = 0;
    for (long i = 0; i < nw; i++) {
        df_heredoc h;
        if (!df_heredoc_word(&h, a, words[i]))
            continue;
        if (ln->nheredocs >= DF_MAX_HEREDOCS)
            return df_error_at(err, src, ln->first_line, 1, "too many heredocs on one line");
        DF_PUSH(a, ln->heredocs, ln->nheredocs, cap);
        ln->heredocs[ln->nheredocs++] = h;
    }
    const char *where = strstr(ln->text, "<<");
    int hl = ln->first_line, hc = 1;
    df_line_pos(ln, where ? (size_t)(where - ln->text) : 0, &hl, &hc);
    for (size_t i = 0; i < ln->nheredocs; i++) {
        df_heredoc *h = &ln->heredocs[i];
        df_str body;
        df_str_init(&body, a);
        size_t nlen = strlen(h->name);
        bool done = false;
        const char *p;
        size_t n;
        while (next_line(r, &p, &n)) {
            const char *t = p;
            size_t tn = n;
            if (h->chomp)
                while (tn && *t == '\t')
                    t++, tn--;
            if (tn == nlen && memcmp(t, h->name, nlen) == 0) {
                done = true;
                break;
            }
            df_str_addn(&body, p, n);
            df_str_addc(&body, '\n');
        }
        if (!done)
            return df_error_at(err, src, hl, hc, "unterminated heredoc %s (no line \"%s\" follows)",
                               h->name, h->name);
        h->content = df_str_get(&body);
    }
    ln->last_line = r->line;
    return 0;
}

int df_lex(df_line **out, size_t *n_out, df_directives *dirs, df_arena *a, const df_src *src,
           kiln_error **err)
{
    reader r = {src, 0, 0};
    dir_state ds = {0};
    df_line *lines = NULL;
    size_t n = 0, cap = 0;
    const char *p;
    size_t len;

    dirs->escape = '\\';
    if (src->len > DF_MAX_INPUT)
        return df_error_at(err, src, 1, 1, "Dockerfile is larger than %zu bytes", DF_MAX_INPUT);
    /* Everything downstream is C strings: a NUL would cut an instruction short. */
    const char *nul = memchr(src->text, '\0', src->len);
    if (nul) {
        int line = 1, col = 1;
        for (const char *q = src->text; q < nul; q++, col++)
            if (*q == '\n')
                line++, col = 0;
        return df_error_at(err, src, line, col, "NUL byte in the Dockerfile (it must be text)");
    }
    if (src->len >= 3 && memcmp(src->text, "\xEF\xBB\xBF", 3) == 0)
        r.pos = 3;
    while (next_line(&r, &p, &len)) {
        int rc = check_directive(&ds, dirs, a, p + skip_ws(p, len), len - skip_ws(p, len), src,
                                 r.line, err);
        if (rc < 0)
            return rc;
        size_t lead = skip_ws(p, len);
        if (is_comment(p, len))
            continue;
        size_t l = len - lead;
        bool cont = trim_continuation(p + lead, &l, dirs->escape);
        if (!cont && l == 0)
            continue;
        df_line ln = {0};
        size_t segcap = 0;
        df_str text;
        df_str_init(&text, a);
        ln.first_line = r.line;
        int col0 =
            (int)lead + 1 +
            (r.line == 1 && r.pos >= 3 && src->len >= 3 && memcmp(src->text, "\xEF\xBB\xBF", 3) == 0
                 ? 3
                 : 0);
        add_seg(&ln, a, &segcap, 0, r.line, col0);
        df_str_addn(&text, p + lead, l);
        while (cont && next_line(&r, &p, &len)) {
            ds.done = true;
            if (is_comment(p, len) || skip_ws(p, len) == len)
                continue;
            l = len;
            cont = trim_continuation(p, &l, dirs->escape);
            add_seg(&ln, a, &segcap, text.len, r.line, 1);
            df_str_addn(&text, p, l);
        }
        ln.text = df_str_get(&text);
        ln.len = text.len;
        ln.last_line = r.line;
        /* Trailing blanks are not part of the instruction. */
        while (ln.len && df_is_space(ln.text[ln.len - 1]))
            ln.text[--ln.len] = '\0';
        if (ln.len == 0)
            continue;
        if (may_have_heredoc(ln.text)) {
            rc = read_heredocs(&ln, a, &r, src, err);
            if (rc < 0)
                return rc;
        }
        DF_PUSH(a, lines, n, cap);
        lines[n++] = ln;
    }
    *out = lines;
    *n_out = n;
    return 0;
}

int df_lex_one(df_line *out, df_arena *a, const char *text, int line, char escape,
               const df_src *src, kiln_error **err)
{
    size_t n = strlen(text), lead = skip_ws(text, n);
    memset(out, 0, sizeof(*out));
    size_t cap = 0;
    out->first_line = out->last_line = line;
    add_seg(out, a, &cap, 0, line, 1);
    out->text = df_strndup(a, text + lead, n - lead);
    out->len = n - lead;
    while (out->len && df_is_space(out->text[out->len - 1]))
        out->text[--out->len] = '\0';
    if (memchr(out->text, '\n', out->len) != NULL)
        return df_error_at(err, src, line, 1, "ONBUILD trigger must be a single line");
    return 0;
}

/* BuildKit's extractBuilderFlags: leading words that start with "--", with
 * quotes removed and backslash escapes resolved; "--" alone ends the flags. */
static int extract_flags(df_cmd *c, df_arena *a, const df_line *ln, size_t start, const df_src *src,
                         kiln_error **err)
{
    const char *s = ln->text;
    size_t len = ln->len, pos = start, cap = 0;
    for (;;) {
        while (pos < len && df_is_space(s[pos]))
            pos++;
        if (pos + 1 >= len || s[pos] != '-' || s[pos + 1] != '-')
            break;
        size_t w0 = pos;
        df_str w;
        df_str_init(&w, a);
        char quote = 0;
        bool blank_ok = false;
        for (; pos < len; pos++) {
            char ch = s[pos];
            if (quote) {
                if (ch == quote) {
                    quote = 0;
                    continue;
                }
            } else if (df_is_space(ch)) {
                break;
            } else if (ch == '\'' || ch == '"') {
                quote = ch;
                blank_ok = true;
                continue;
            }
            if (ch == '\\') {
                if (pos + 1 == len)
                    continue;
                ch = s[++pos];
            }
            df_str_addc(&w, ch);
        }
        char *word = df_str_get(&w);
        if (quote) {
            int l, col;
            df_line_pos(ln, w0, &l, &col);
            return df_error_at(err, src, l, col, "unterminated quote in flag %s", word);
        }
        if (strcmp(word, "--") == 0)
            break;
        if (!blank_ok && w.len == 0)
            continue;
        if (c->nflags >= DF_MAX_FLAG_WORDS) {
            int l, col;
            df_line_pos(ln, w0, &l, &col);
            return df_error_at(err, src, l, col, "too many flags");
        }
        DF_PUSH(a, c->flags, c->nflags, cap);
        df_flag *f = &c->flags[c->nflags++];
        f->off = w0;
        char *eq = strchr(word + 2, '=');
        if (eq) {
            f->name = df_strndup(a, word + 2, (size_t)(eq - word - 2));
            f->value = eq + 1;
        } else {
            f->name = word + 2;
            f->value = NULL;
        }
        if (f->name[0] == '\0') {
            int l, col;
            df_line_pos(ln, w0, &l, &col);
            return df_error_at(err, src, l, col, "malformed flag '%s': missing name", word);
        }
    }
    c->args_off = pos;
    return 0;
}

int df_split_command(df_cmd *out, df_arena *a, const df_line *ln, const df_src *src,
                     kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    size_t i = 0;
    while (i < ln->len && df_is_space(ln->text[i]))
        i++;
    size_t k0 = i;
    while (i < ln->len && !df_is_space(ln->text[i]))
        i++;
    out->kw_off = k0;
    out->keyword = df_strndup(a, ln->text + k0, i - k0);
    df_lower(out->keyword);
    int rc = extract_flags(out, a, ln, i, src, err);
    if (rc < 0)
        return rc;
    while (out->args_off < ln->len && df_is_space(ln->text[out->args_off]))
        out->args_off++;
    size_t e = ln->len;
    while (e > out->args_off && df_is_space(ln->text[e - 1]))
        e--;
    out->args = df_strndup(a, ln->text + out->args_off, e - out->args_off);
    return 0;
}

size_t df_split_ws(char ***out, df_arena *a, const char *s)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\v' || *s == '\f' || *s == '\r' || *s == '\n')
            s++;
        if (!*s)
            break;
        const char *b = s;
        while (*s &&
               !(*s == ' ' || *s == '\t' || *s == '\v' || *s == '\f' || *s == '\r' || *s == '\n'))
            s++;
        DF_PUSH(a, v, n, cap);
        v[n++] = df_strndup(a, b, (size_t)(s - b));
    }
    *out = v;
    return n;
}

size_t df_parse_words(char ***out, df_arena *a, const char *s, char escape)
{
    char **v = NULL;
    size_t n = 0, cap = 0, len = strlen(s), pos = 0;
    for (;;) {
        while (pos < len && df_is_space(s[pos]))
            pos++;
        if (pos >= len)
            break;
        df_str w;
        df_str_init(&w, a);
        char quote = 0;
        for (; pos < len; pos++) {
            char ch = s[pos];
            if (!quote) {
                if (df_is_space(ch))
                    break;
                if (ch == '\'' || ch == '"')
                    quote = ch;
                else if (ch == escape) {
                    if (pos + 1 == len)
                        continue;
                    df_str_addc(&w, ch);
                    ch = s[++pos];
                }
                df_str_addc(&w, ch);
            } else {
                if (ch == quote)
                    quote = 0;
                else if (ch == escape && quote != '\'') {
                    if (pos + 1 == len)
                        continue;
                    df_str_addc(&w, ch);
                    ch = s[++pos];
                }
                df_str_addc(&w, ch);
            }
        }
        DF_PUSH(a, v, n, cap);
        v[n++] = df_str_get(&w);
    }
    *out = v;
    return n;
}
