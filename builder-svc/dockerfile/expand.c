/* Variable expansion with Docker's rules (BuildKit's shell lexer): $V, ${V},
 * ${V:-w}, ${V-w}, ${V:+w}, ${V+w}, ${V:?w}, ${V?w}, and the pattern forms
 * ${V#p}, ${V##p}, ${V%p}, ${V%%p}, ${V/p/r}, ${V//p/r} (pattern.c); single quotes are
 * literal, double quotes allow $ and escape only " $ and the escape
 * character; the escape character makes the next character literal.  Also the
 * word splitter used to find heredoc delimiters, and the public wrapper in
 * expand.h. */
#include "df_internal.h"
#include "expand.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct lexer {
    const char *s;
    size_t pos, len;
    const df_lex_opts *o;
    df_arena *a;
    int depth;
    bool raw_esc; /* keep escape characters (changes inside pattern words) */
    const char *msg;
    /* word splitting state (ProcessWords) */
    bool split;
    int wdepth; /* > 0 inside quotes and ${...} words: no splitting there */
    char **words;
    size_t nwords, capwords;
    df_str word;
    bool in_word;
} lexer;

#define EOF_CH (-1)

static int peek(lexer *l)
{
    return l->pos < l->len ? (unsigned char)l->s[l->pos] : EOF_CH;
}

static int next(lexer *l)
{
    return l->pos < l->len ? (unsigned char)l->s[l->pos++] : EOF_CH;
}

static void w_flush(lexer *l)
{
    if (!l->in_word)
        return;
    DF_PUSH(l->a, l->words, l->nwords, l->capwords);
    l->words[l->nwords++] = df_str_get(&l->word);
    df_str_init(&l->word, l->a);
    l->in_word = false;
}

/* A plain character: whitespace separates words. */
static void w_char(lexer *l, char c)
{
    if (!l->split || l->wdepth)
        return;
    if (df_is_space(c)) {
        w_flush(l);
        return;
    }
    df_str_addc(&l->word, c);
    l->in_word = true;
}

/* A quoted or escaped character: always part of the word. */
static void w_raw(lexer *l, const char *p, size_t n)
{
    if (!l->split || l->wdepth)
        return;
    df_str_addn(&l->word, p, n);
    l->in_word = true;
}

static void w_expanded(lexer *l, const char *s)
{
    for (; *s; s++)
        w_char(l, *s);
}

static int fail(lexer *l, const char *msg)
{
    if (l->msg == NULL)
        l->msg = msg;
    return -1;
}

static int process(lexer *l, int stop, bool raw, df_str *out);
static int process_body(lexer *l, int stop, df_str *out);
static int dollar(lexer *l, df_str *out);

static int single_quote(lexer *l, df_str *out)
{
    size_t start = out->len;
    int ch = next(l);
    if (l->o->raw_quotes)
        df_str_addc(out, (char)ch);
    for (;;) {
        ch = next(l);
        if (ch == EOF_CH)
            return fail(l, "unexpected end of statement while looking for matching single-quote");
        if (ch == '\'') {
            if (l->o->raw_quotes)
                df_str_addc(out, (char)ch);
            break;
        }
        df_str_addc(out, (char)ch);
    }
    w_raw(l, out->s + start, out->len - start);
    return 0;
}

static int double_quote(lexer *l, df_str *out)
{
    size_t start = out->len;
    int ch = next(l);
    if (l->o->raw_quotes)
        df_str_addc(out, (char)ch);
    l->wdepth++;
    for (;;) {
        ch = peek(l);
        if (ch == EOF_CH)
            return fail(l, "unexpected end of statement while looking for matching double-quote");
        if (ch == '"') {
            next(l);
            if (l->o->raw_quotes)
                df_str_addc(out, '"');
            break;
        }
        if (ch == '$') {
            if (dollar(l, out) < 0)
                return -1;
            continue;
        }
        ch = next(l);
        if (ch == l->o->escape) {
            if (l->raw_esc)
                df_str_addc(out, (char)ch);
            int nx = peek(l);
            if (nx == EOF_CH)
                continue;
            if (nx == '"' || nx == '$' || nx == l->o->escape)
                ch = next(l);
        }
        df_str_addc(out, (char)ch);
    }
    l->wdepth--;
    w_raw(l, out->s + start, out->len - start);
    return 0;
}

static bool special_param(int ch)
{
    return ch == '@' || ch == '*' || ch == '#' || ch == '?' || ch == '-' || ch == '$' ||
           ch == '!' || ch == '0';
}

static bool name_char(int ch)
{
    return ch != EOF_CH && (isalnum(ch) || ch == '_' || ch >= 0x80);
}

static char *name(lexer *l)
{
    size_t b = l->pos;
    int ch = peek(l);
    if (ch != EOF_CH && isdigit(ch)) {
        while (peek(l) != EOF_CH && isdigit(peek(l)))
            next(l);
    } else if (special_param(ch)) {
        next(l);
    } else {
        while (name_char(peek(l)))
            next(l);
    }
    return df_strndup(l->a, l->s + b, l->pos - b);
}

static const char *lookup(lexer *l, const char *n)
{
    return l->o->lookup ? l->o->lookup(l->o->ctx, n) : NULL;
}

/* The word of ${name<op>word}, expanded (recursively) up to the closing
 * brace; raw keeps escape characters (pattern words). */
static int brace_word(lexer *l, bool raw, df_str *w)
{
    df_str_init(w, l->a);
    l->wdepth++;
    int rc = process(l, '}', raw, w);
    l->wdepth--;
    if (rc < 0 && peek(l) == EOF_CH && l->msg && strstr(l->msg, "matching }") != NULL)
        l->msg = "syntax error: missing '}'";
    return rc;
}

/* ${name...} left as written when name is unset and skip_unset is on. */
static bool keep_unset(lexer *l, df_str *out, const char *v, const char *nm, const char *op,
                       const char *word, const char *word2)
{
    if (v != NULL || !l->o->skip_unset)
        return false;
    df_str_adds(out, "${");
    df_str_adds(out, nm);
    df_str_adds(out, op);
    df_str_adds(out, word);
    if (word2) {
        df_str_addc(out, '/');
        df_str_adds(out, word2);
    }
    df_str_addc(out, '}');
    return true;
}

/* ${name-w} ${name+w} ${name?w} and their ':' forms (colon: empty counts as unset). */
static int modifier(lexer *l, df_str *out, const char *nm, bool colon, int op)
{
    df_str w;
    if (brace_word(l, false, &w) < 0)
        return -1;
    const char *word = df_str_get(&w);
    const char *v = lookup(l, nm);
    char opstr[3] = {colon ? ':' : (char)op, colon ? (char)op : '\0', '\0'};
    if (keep_unset(l, out, v, nm, opstr, word, NULL))
        return 0;
    bool set = colon ? (v != NULL && *v) : v != NULL;
    switch (op) {
    case '-':
        df_str_adds(out, set ? v : word);
        return 0;
    case '+':
        df_str_adds(out, set ? word : "");
        return 0;
    default: /* '?': BuildKit's message, "NAME: word" */
        if (!set)
            return fail(l, df_printf(l->a, "%s: %s", nm,
                                     *word       ? word
                                     : v == NULL ? "is not allowed to be unset"
                                                 : "is not allowed to be empty"));
        df_str_adds(out, v);
        return 0;
    }
}

/* ${name#p} ${name##p} ${name%p} ${name%%p}: the word keeps its escapes (they
 * belong to the pattern); a leading repeat of the operator makes it greedy. */
static int trim_op(lexer *l, df_str *out, const char *nm, int op)
{
    df_str w;
    if (brace_word(l, true, &w) < 0)
        return -1;
    const char *word = df_str_get(&w);
    const char *v = lookup(l, nm);
    char opstr[2] = {(char)op, '\0'};
    if (keep_unset(l, out, v, nm, opstr, word, NULL))
        return 0;
    bool greedy = word[0] == op;
    char *res = NULL;
    const char *msg = NULL;
    if (df_pattern_trim(&res, l->a, v ? v : "", greedy ? word + 1 : word, op == '%', greedy, &msg) <
        0)
        return fail(l, df_printf(l->a, "invalid pattern (%s) in substitution: %s", word, msg));
    df_str_adds(out, res);
    return 0;
}

/* ${name/p/r} and ${name//p/r}. */
static int replace_op(lexer *l, df_str *out, const char *nm)
{
    bool all = peek(l) == '/';
    if (all)
        next(l);
    df_str p, r;
    df_str_init(&p, l->a);
    l->wdepth++;
    int rc = process(l, '/', true, &p);
    l->wdepth--;
    if (rc < 0) {
        if (peek(l) == EOF_CH && l->msg && strstr(l->msg, "matching /") != NULL)
            l->msg = "syntax error: missing '/' in ${}";
        return -1;
    }
    if (brace_word(l, true, &r) < 0)
        return -1;
    const char *pat = df_str_get(&p), *repl = df_str_get(&r);
    const char *v = lookup(l, nm);
    if (keep_unset(l, out, v, nm, all ? "//" : "/", pat, repl))
        return 0;
    char *res = NULL;
    const char *msg = NULL;
    if (df_pattern_replace(&res, l->a, v ? v : "", pat, repl, all, &msg) < 0)
        return fail(l, df_printf(l->a, "invalid pattern (%s) in substitution: %s", pat, msg));
    df_str_adds(out, res);
    return 0;
}

static int dollar_brace(lexer *l, df_str *out)
{
    next(l); /* '{' */
    int ch = peek(l);
    if (ch == EOF_CH)
        return fail(l, "syntax error: missing '}'");
    if (ch == '{' || ch == '}' || ch == ':')
        return fail(l, "syntax error: bad substitution");
    char *nm = name(l);
    ch = next(l);
    if (ch == '}') {
        const char *v = lookup(l, nm);
        if (v == NULL && l->o->skip_unset) {
            df_str_adds(out, "${");
            df_str_adds(out, nm);
            df_str_addc(out, '}');
        } else if (v) {
            df_str_adds(out, v);
        }
        return 0;
    }
    if (ch == EOF_CH)
        return fail(l, "syntax error: missing '}'");
    if (ch == ':') {
        int op = next(l);
        if (op == '-' || op == '+' || op == '?')
            return modifier(l, out, nm, true, op);
        if (op == EOF_CH)
            return fail(l, "syntax error: missing '}'");
        return fail(l, df_printf(l->a, "unsupported modifier (:%c) in substitution", op));
    }
    if (ch == '-' || ch == '+' || ch == '?')
        return modifier(l, out, nm, false, ch);
    if (ch == '#' || ch == '%')
        return trim_op(l, out, nm, ch);
    if (ch == '/')
        return replace_op(l, out, nm);
    return fail(l, df_printf(l->a, "unsupported modifier (%c) in substitution", ch));
}

static int dollar(lexer *l, df_str *out)
{
    if (++l->depth > DF_MAX_NESTING)
        return fail(l, "variable substitutions nested too deeply");
    size_t start = out->len;
    next(l); /* '$' */
    int rc = 0;
    if (peek(l) == '{') {
        rc = dollar_brace(l, out);
    } else {
        char *nm = name(l);
        if (*nm == '\0') {
            df_str_addc(out, '$');
        } else {
            const char *v = lookup(l, nm);
            if (v == NULL && l->o->skip_unset) {
                df_str_addc(out, '$');
                df_str_adds(out, nm);
            } else if (v) {
                df_str_adds(out, v);
            }
        }
    }
    l->depth--;
    if (rc == 0 && l->split && l->wdepth == 0) {
        /* Expanded text splits into words; its bytes live in out. */
        char *tmp = df_strndup(l->a, out->s ? out->s + start : "", out->len - start);
        w_expanded(l, tmp);
    }
    return rc;
}

/* Expands up to stop (EOF_CH: the end); raw keeps escape characters. */
static int process(lexer *l, int stop, bool raw, df_str *out)
{
    bool saved = l->raw_esc;
    l->raw_esc = raw;
    int rc = process_body(l, stop, out);
    l->raw_esc = saved;
    return rc;
}

/* "<<" and the blanks after it stay in one word, as in BuildKit: that is
 * how "RUN <<  EOF" names heredoc EOF.  The text itself is unchanged. */
static void angle(lexer *l, df_str *out)
{
    size_t start = out->len;
    df_str_addc(out, (char)next(l));
    if (peek(l) == '<') {
        df_str_addc(out, (char)next(l));
        while (peek(l) == ' ' || peek(l) == '\t' || peek(l) == '\r')
            df_str_addc(out, (char)next(l));
    }
    w_raw(l, out->s + start, out->len - start);
}

static int process_body(lexer *l, int stop, df_str *out)
{
    df_str_get(out);
    while (peek(l) != EOF_CH) {
        int ch = peek(l);
        if (stop != EOF_CH && ch == stop) {
            next(l);
            return 0;
        }
        if (ch == '$') {
            if (dollar(l, out) < 0)
                return -1;
            continue;
        }
        if (ch == '<') {
            angle(l, out);
            continue;
        }
        if (!l->o->skip_quotes && ch == '\'') {
            if (single_quote(l, out) < 0)
                return -1;
            continue;
        }
        if (!l->o->skip_quotes && ch == '"') {
            if (double_quote(l, out) < 0)
                return -1;
            continue;
        }
        ch = next(l);
        if (ch == l->o->escape) {
            if (l->raw_esc) {
                df_str_addc(out, (char)ch);
                w_raw(l, (const char *)&l->s[l->pos - 1], 1);
            }
            ch = next(l);
            if (ch == EOF_CH)
                break;
            char c = (char)ch;
            w_raw(l, &c, 1);
        } else {
            w_char(l, (char)ch);
        }
        df_str_addc(out, (char)ch);
    }
    if (stop != EOF_CH)
        return fail(l, stop == '}' ? "unexpected end of statement while looking for matching }"
                                   : "unexpected end of statement while looking for matching /");
    return 0;
}

int df_expand(char **out, df_arena *a, const char *word, const df_lex_opts *o, const char **msg)
{
    lexer l = {.s = word, .len = strlen(word), .o = o, .a = a};
    df_str res;
    df_str_init(&res, a);
    if (process(&l, EOF_CH, o->raw_escapes, &res) < 0) {
        *msg = l.msg ? l.msg : "syntax error";
        return -1;
    }
    *out = df_str_get(&res);
    return 0;
}

long df_expand_words(char ***out, df_arena *a, const char *s, const df_lex_opts *o,
                     const char **msg)
{
    lexer l = {.s = s, .len = strlen(s), .o = o, .a = a, .split = true};
    df_str res;
    df_str_init(&res, a);
    df_str_init(&l.word, a);
    if (process(&l, EOF_CH, o->raw_escapes, &res) < 0) {
        *msg = l.msg ? l.msg : "syntax error";
        return -1;
    }
    w_flush(&l);
    *out = l.words;
    return (long)l.nwords;
}

static size_t count_quotes(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\'' || *s == '"';
    return n;
}

bool df_heredoc_word(df_heredoc *out, df_arena *a, const char *word)
{
    const char *p = word;
    int fd = 0;
    while (isdigit((unsigned char)*p)) {
        if (fd < 1000000)
            fd = fd * 10 + (*p - '0');
        p++;
    }
    if (p[0] != '<' || p[1] != '<')
        return false;
    p += 2;
    bool chomp = false;
    if (*p == '-') {
        chomp = true;
        p++;
    }
    if (*p == '\0' || strchr(p, '<') != NULL)
        return false;
    df_lex_opts o = {.escape = '\\', .skip_unset = true};
    char **w = NULL, **wraw = NULL;
    const char *msg = NULL;
    if (df_expand_words(&w, a, p, &o, &msg) != 1)
        return false;
    o.raw_quotes = true;
    if (df_expand_words(&wraw, a, p, &o, &msg) != 1)
        return false;
    memset(out, 0, sizeof(*out));
    out->name = w[0];
    out->chomp = chomp;
    out->fd = fd;
    out->expand = count_quotes(w[0]) == count_quotes(wraw[0]);
    return true;
}

/* ---- public wrapper ---------------------------------------------------------- */

typedef struct kv_ctx {
    const char *const *env;
    size_t n;
} kv_ctx;

static const char *kv_lookup(void *ctx, const char *nm)
{
    kv_ctx *c = ctx;
    size_t nl = strlen(nm);
    for (size_t i = c->n; i-- > 0;) {
        const char *e = c->env[i];
        if (strncmp(e, nm, nl) == 0 && e[nl] == '=')
            return e + nl + 1;
    }
    return NULL;
}

int bld_expand_word(char **out, const char *word, const char *const *env, size_t n_env, char escape,
                    kiln_error **err)
{
    df_arena *a = df_arena_new();
    kv_ctx c = {env, n_env};
    df_lex_opts o = {.escape = escape ? escape : '\\', .lookup = kv_lookup, .ctx = &c};
    char *res = NULL;
    const char *msg = NULL;
    if (df_expand(&res, a, word, &o, &msg) < 0) {
        kiln_error_set(err, KILN_EINVAL, 0, "%s", msg); /* msg may live in the arena */
        df_arena_free(a);
        return KILN_EINVAL;
    }
    *out = strdup(res);
    df_arena_free(a);
    if (*out == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return 0;
}
