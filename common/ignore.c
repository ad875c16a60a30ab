/* .dockerignore patterns and filepath.Match globs, compiled to a small token
 * program and run as an NFA (time O(pattern × path), no backtracking, so
 * hostile patterns cannot blow up). */
#include "ignore.h"
#include "arena.h"
#include "fs.h"

#include <stdlib.h>
#include <string.h>

typedef enum tok_kind {
    T_LIT,    /* one literal byte */
    T_STAR,   /* [^/]* */
    T_ONE,    /* [^/] (filepath.Match: any byte but '/') */
    T_CLASS,  /* [...] */
    T_DSLASH, /* (.* /)? : "**" followed by more pattern */
    T_DEND,   /* .* : trailing "**" */
} tok_kind;

typedef struct tok {
    tok_kind kind;
    unsigned char c;
    bool negate;
    unsigned char set[32]; /* bitmap for T_CLASS */
} tok;

typedef struct prog {
    tok *t;
    size_t n;
    bool class_slash; /* classes may match '/' (Docker's regexp) */
} prog;

typedef struct ipat {
    char *text;
    bool exclusion;
    prog p;
} ipat;

struct kiln_ignore {
    kiln_arena *a; /* the patterns' text and programs */
    ipat *pats;    /* malloc'd */
    size_t n, cap;
};

#define IGNORE_MAX_INPUT ((size_t)32 << 20) /* bytes of .dockerignore text */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* p cleaned lexically ("." for the root, as Go's path.Clean), in a; NULL
 * when out of memory. */
static char *clean(kiln_arena *a, const char *p)
{
    size_t cap = strlen(p) + 2; /* never longer than p, or "." */
    char *out = kiln_arena_alloc(a, cap);
    if (out != NULL && kiln_path_clean(out, cap, p, KILN_PATH_LEXICAL, NULL) < 0)
        out[0] = '\0';
    return out;
}

static void set_bit(tok *t, unsigned char c)
{
    t->set[c >> 3] |= (unsigned char)(1u << (c & 7));
}

/* Parses "[...]" starting after '['; returns the index after ']' or 0 on error. */
static size_t parse_class(tok *t, const char *p, size_t i)
{
    t->kind = T_CLASS;
    if (p[i] == '^') {
        t->negate = true;
        i++;
    }
    bool first = true;
    while (p[i] && (p[i] != ']' || first)) {
        first = false;
        unsigned char lo = (unsigned char)p[i];
        if (lo == '\\') {
            if (!p[i + 1])
                return 0;
            lo = (unsigned char)p[++i];
        }
        i++;
        unsigned char hi = lo;
        if (p[i] == '-' && p[i + 1] && p[i + 1] != ']') {
            i++;
            hi = (unsigned char)p[i];
            if (hi == '\\') {
                if (!p[i + 1])
                    return 0;
                hi = (unsigned char)p[++i];
            }
            i++;
            if (hi < lo)
                return 0;
        }
        for (unsigned c = lo; c <= hi; c++)
            set_bit(t, (unsigned char)c);
    }
    if (p[i] != ']')
        return 0;
    return i + 1;
}

/* docker: "**" handling as in Docker's pattern matcher; otherwise filepath.Match. */
static int compile(prog *out, kiln_arena *a, const char *p, bool docker)
{
    size_t len = strlen(p), n = 0;
    tok *t = kiln_arena_calloc(a, len + 1, sizeof(tok));
    if (t == NULL)
        return -2;
    for (size_t i = 0; i < len;) {
        tok *k = &t[n++];
        char ch = p[i++];
        if (ch == '*') {
            if (docker && p[i] == '*') {
                i++;
                if (p[i] == '/')
                    i++;
                k->kind = p[i] ? T_DSLASH : T_DEND;
            } else {
                while (p[i] == '*' && !docker)
                    i++;
                k->kind = T_STAR;
            }
        } else if (ch == '?') {
            k->kind = T_ONE;
        } else if (ch == '[') {
            i = parse_class(k, p, i);
            if (i == 0)
                return -1;
        } else if (ch == '\\') {
            k->kind = T_LIT;
            if (p[i])
                k->c = (unsigned char)p[i++];
            else if (!docker)
                return -1;
            else
                k->c = '\\';
        } else {
            k->kind = T_LIT;
            k->c = (unsigned char)ch;
        }
    }
    out->t = t;
    out->n = n;
    out->class_slash = docker;
    return 0;
}

static bool class_has(const tok *k, unsigned char c)
{
    bool in = (k->set[c >> 3] >> (c & 7)) & 1;
    return in != k->negate;
}

/* States: 2*i = at token i; 2*i+1 = inside the ".*" of a T_DSLASH token i. */
static void closure(const prog *p, unsigned char *st)
{
    for (size_t i = 0; i < p->n; i++)
        if (st[2 * i] &&
            (p->t[i].kind == T_STAR || p->t[i].kind == T_DSLASH || p->t[i].kind == T_DEND))
            st[2 * (i + 1)] = 1;
}

/* Whether p matches all of s, or (prefix) the part of s before some '/'. */
static bool run(const prog *p, const char *s, bool prefix)
{
    size_t ns = 2 * (p->n + 1);
    unsigned char stack_a[128], stack_b[128];
    unsigned char *cur = ns <= sizeof(stack_a) ? stack_a : malloc(ns);
    unsigned char *nxt = ns <= sizeof(stack_b) ? stack_b : malloc(ns);
    bool ok = false;
    if (cur == NULL || nxt == NULL)
        goto out;
    memset(cur, 0, ns);
    cur[0] = 1;
    closure(p, cur);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (prefix && c == '/' && cur[2 * p->n]) {
            ok = true;
            goto out;
        }
        memset(nxt, 0, ns);
        bool any = false;
        for (size_t i = 0; i < p->n; i++) {
            const tok *k = &p->t[i];
            if (cur[2 * i]) {
                switch (k->kind) {
                case T_LIT:
                    if (c == k->c)
                        nxt[2 * (i + 1)] = 1;
                    break;
                case T_STAR:
                    if (c != '/')
                        nxt[2 * i] = 1;
                    break;
                case T_ONE:
                    if (c != '/')
                        nxt[2 * (i + 1)] = 1;
                    break;
                case T_CLASS:
                    if ((c != '/' || p->class_slash) && class_has(k, c))
                        nxt[2 * (i + 1)] = 1;
                    break;
                case T_DSLASH:
                    nxt[2 * i + 1] = 1;
                    if (c == '/')
                        nxt[2 * (i + 1)] = 1;
                    break;
                case T_DEND:
                    nxt[2 * i] = 1;
                    break;
                }
            }
            if (cur[2 * i + 1] && k->kind == T_DSLASH) {
                nxt[2 * i + 1] = 1;
                if (c == '/')
                    nxt[2 * (i + 1)] = 1;
            }
        }
        closure(p, nxt);
        for (size_t i = 0; i < ns && !any; i++)
            any = nxt[i];
        unsigned char *tmp = cur;
        cur = nxt;
        nxt = tmp;
        if (!any)
            goto out;
    }
    ok = cur[2 * p->n] != 0;
out:
    if (cur != stack_a && cur != stack_b)
        free(cur);
    if (nxt != stack_a && nxt != stack_b)
        free(nxt);
    return ok;
}

/* Adds the pattern s (n bytes, trimmed; inv: it began with '!'). */
static int add_pattern(kiln_ignore *ig, const char *s, size_t n, bool inv, int line,
                       kiln_error **err)
{
    kiln_arena *a = ig->a;
    char *pat = kiln_arena_alloc(a, n + 1);
    if (pat != NULL) {
        memcpy(pat, s, n);
        if (*pat && (pat = clean(a, pat)) != NULL && pat[0] == '/' && pat[1])
            pat++;
    }
    if (pat != NULL && ig->n == ig->cap) {
        size_t cap = ig->cap ? ig->cap * 2 : 4;
        ipat *np = realloc(ig->pats, cap * sizeof(*np));
        if (np == NULL)
            pat = NULL;
        else
            ig->pats = np, ig->cap = cap;
    }
    if (pat == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    ipat *ip = &ig->pats[ig->n];
    memset(ip, 0, sizeof(*ip));
    ip->exclusion = inv;
    ip->text = inv ? kiln_arena_printf(a, "!%s", pat) : pat;
    int rc = ip->text ? compile(&ip->p, a, pat, true) : -2;
    if (rc == -2)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (rc < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, ".dockerignore:%d: syntax error in pattern",
                              line);
    ig->n++;
    return 0;
}

int kiln_ignore_parse(kiln_ignore **out, const char *text, size_t len, kiln_error **err)
{
    if (len > IGNORE_MAX_INPUT)
        return kiln_error_set(err, KILN_EINVAL, 0, ".dockerignore is larger than %zu bytes",
                              IGNORE_MAX_INPUT);
    kiln_ignore *ig = calloc(1, sizeof(*ig));
    if (ig == NULL || (ig->a = kiln_arena_new()) == NULL) {
        free(ig);
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    }
    size_t pos = 0;
    int line = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    while (pos < len) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (n && s[0] == '#')
            continue;
        while (n && is_space(*s))
            s++, n--;
        while (n && is_space(s[n - 1]))
            n--;
        if (n == 0)
            continue;
        bool inv = s[0] == '!';
        if (inv) {
            s++, n--;
            while (n && is_space(*s))
                s++, n--;
        }
        if (add_pattern(ig, s, n, inv, line, err) < 0) {
            kiln_ignore_free(ig);
            return -1;
        }
    }
    *out = ig;
    return 0;
}

void kiln_ignore_free(kiln_ignore *ig)
{
    if (ig == NULL)
        return;
    kiln_arena_free(ig->a);
    free(ig->pats);
    free(ig);
}

size_t kiln_ignore_count(const kiln_ignore *ig)
{
    return ig->n;
}

const char *kiln_ignore_pattern(const kiln_ignore *ig, size_t i)
{
    return i < ig->n ? ig->pats[i].text : NULL;
}

bool kiln_ignore_match(const kiln_ignore *ig, const char *path)
{
    if (ig->n == 0)
        return false;
    size_t cap = strlen(path) + 2;
    char *buf = malloc(cap);
    if (buf == NULL)
        return false;
    if (kiln_path_clean(buf, cap, path, KILN_PATH_LEXICAL, NULL) < 0)
        buf[0] = '\0';
    const char *f = buf;
    while (f[0] == '/')
        f++;
    if (*f == '\0')
        f = ".";
    bool matched = false;
    for (size_t i = 0; i < ig->n; i++) {
        const ipat *p = &ig->pats[i];
        if (p->exclusion != matched)
            continue;
        /* A pattern matching a parent directory matches everything below it. */
        bool m = run(&p->p, f, true);
        if (m)
            matched = !p->exclusion;
    }
    free(buf);
    return matched;
}

int kiln_glob_match(bool *matched, const char *pattern, const char *name, kiln_error **err)
{
    kiln_arena *a = kiln_arena_new();
    prog p;
    int rc = a ? compile(&p, a, pattern, false) : -2;
    if (rc == 0)
        *matched = run(&p, name, false);
    kiln_arena_free(a);
    if (rc == -2)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (rc < 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "syntax error in pattern \"%s\"", pattern);
    return 0;
}

bool kiln_glob_has_meta(const char *pattern)
{
    return strpbrk(pattern, "*?[\\") != NULL;
}
