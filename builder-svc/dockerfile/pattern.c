/* Shell patterns of ${V#p}, ${V##p}, ${V%p}, ${V%%p}, ${V/p/r} and ${V//p/r},
 * with the semantics of BuildKit's shell lexer (which turns a pattern into a
 * Go regular expression):
 *   - '*' is any string and '?' any one character; neither matches a newline
 *     (Go's '.' does not);
 *   - every other character is literal, brackets included (BuildKit escapes
 *     '[' and ']': there are no bracket expressions);
 *   - a backslash escapes '*', '?' or '\'; before '}' or '/' it is dropped
 *     (that is how those two get into a pattern); before anything else, or at
 *     the end, the pattern is invalid.
 * Matching is leftmost-first, as Go's regexp: at a given start, '*' tries the
 * shortest string first when lazy (# and %) and the longest first when greedy
 * (## %% and the replacements).  "Shortest suffix" is found the way BuildKit
 * does it: pattern and value reversed, then a prefix match.
 *
 * A match is a search over (pattern token, value offset) states; each state's
 * outcome is memoised, and the cells and steps are bounded so that hostile
 * patterns fail instead of running for minutes. */
#include "df_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PAT_MAX_CELLS  ((size_t)4 << 20) /* memo cells: tokens x value offsets */
#define PAT_MAX_STEPS  50000000ULL
#define PAT_MAX_TOKENS 1024 /* wildcards and literal runs: the match recursion depth */

typedef enum { T_LIT, T_ANY, T_STAR } tok_kind;

typedef struct tok {
    tok_kind kind;
    const char *lit; /* T_LIT: one character's bytes */
    size_t n;
} tok;

typedef struct matcher {
    const tok *t;
    size_t nt;
    const char *s;
    size_t ns;
    bool greedy;
    unsigned char *starts; /* starts[i]: a character begins at offset i (and at ns) */
    int32_t *memo;         /* (nt+1) x (ns+1): -2 unknown, -1 no match, else end offset */
    unsigned long long steps;
    bool overflow;
} matcher;

/* Bytes in the UTF-8 sequence starting at s (1 for an invalid byte). */
static size_t rune_len(const char *s, size_t avail)
{
    unsigned char c = (unsigned char)s[0];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (n > avail)
        return 1;
    for (size_t i = 1; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            return 1;
    return n;
}

/* Tokens of pattern p, runs of literal characters merged into one token
 * (the match recurses once per token: their number is bounded); NULL with
 * *msg when the pattern is invalid or too long. */
static tok *compile(df_arena *a, const char *p, size_t *nt, const char **msg)
{
    size_t len = strlen(p), n = 0;
    tok *t = df_alloc(a, (len + 1) * sizeof(tok));
    char *lits = df_alloc(a, len + 1); /* literal bytes, escapes removed */
    size_t nl = 0;
    for (size_t i = 0; i < len;) {
        char c = p[i];
        const char *lit = p + i;
        size_t ln = 0;
        if (c == '*' || c == '?') {
            t[n++] = (tok){c == '*' ? T_STAR : T_ANY, NULL, 0};
            i++;
            continue;
        }
        if (c == '\\') {
            if (i + 1 < len && (p[i + 1] == '}' || p[i + 1] == '/')) {
                i++; /* the next character is taken literally by the next round */
                continue;
            }
            if (i + 1 >= len || !(p[i + 1] == '*' || p[i + 1] == '?' || p[i + 1] == '\\')) {
                *msg = "invalid escape in pattern (only \\*, \\? and \\\\ are allowed)";
                return NULL;
            }
            lit = p + i + 1;
            ln = 1;
            i += 2;
        } else {
            ln = rune_len(p + i, len - i);
            i += ln;
        }
        if (n > 0 && t[n - 1].kind == T_LIT) {
            t[n - 1].n += ln; /* the previous token's bytes end at lits + nl */
        } else {
            if (n >= PAT_MAX_TOKENS) {
                *msg = "pattern has too many wildcards";
                return NULL;
            }
            t[n++] = (tok){T_LIT, lits + nl, ln};
        }
        memcpy(lits + nl, lit, ln);
        nl += ln;
    }
    if (n > PAT_MAX_TOKENS) {
        *msg = "pattern has too many wildcards";
        return NULL;
    }
    *nt = n;
    return t;
}

/* End offset of the first match of tokens [ti..] at value offset si, or -1. */
static int32_t match_at(matcher *m, size_t ti, size_t si)
{
    if (ti == m->nt)
        return (int32_t)si;
    int32_t *cell = &m->memo[ti * (m->ns + 1) + si];
    if (*cell != -2)
        return *cell;
    if (++m->steps > PAT_MAX_STEPS) {
        m->overflow = true;
        return -1;
    }
    int32_t r = -1;
    const tok *t = &m->t[ti];
    if (t->kind == T_LIT) {
        if (si + t->n <= m->ns && memcmp(m->s + si, t->lit, t->n) == 0)
            r = match_at(m, ti + 1, si + t->n);
    } else if (t->kind == T_ANY) {
        if (si < m->ns && m->s[si] != '\n')
            r = match_at(m, ti + 1, si + rune_len(m->s + si, m->ns - si));
    } else {
        /* Offsets the star can stop at: up to the next newline, on rune bounds. */
        size_t stop = si;
        while (stop < m->ns && m->s[stop] != '\n')
            stop += rune_len(m->s + stop, m->ns - stop);
        if (!m->greedy) {
            for (size_t e = si;; e += rune_len(m->s + e, m->ns - e)) {
                if ((r = match_at(m, ti + 1, e)) >= 0 || e >= stop || m->overflow)
                    break;
            }
        } else {
            /* Longest first: walk the rune starts backwards from stop. */
            for (size_t e = stop;;) {
                if ((r = match_at(m, ti + 1, e)) >= 0 || e == si || m->overflow)
                    break;
                do
                    e--;
                while (e > si && !m->starts[e]);
            }
        }
    }
    *cell = r;
    return r;
}

static int matcher_init(matcher *m, df_arena *a, const char *pat, const char *s, size_t ns,
                        bool greedy, const char **msg)
{
    memset(m, 0, sizeof(*m));
    m->t = compile(a, pat, &m->nt, msg);
    if (m->t == NULL)
        return -1;
    m->s = s;
    m->ns = ns;
    m->greedy = greedy;
    if (ns >= INT32_MAX || (m->nt + 1) > PAT_MAX_CELLS / (ns + 1)) {
        *msg = "value or pattern too long for a pattern substitution";
        return -1;
    }
    size_t cells = (m->nt + 1) * (ns + 1);
    m->memo = df_alloc(a, cells * sizeof(int32_t));
    for (size_t i = 0; i < cells; i++)
        m->memo[i] = -2;
    m->starts = df_alloc(a, ns + 1);
    for (size_t i = 0; i < ns; i += rune_len(s + i, ns - i))
        m->starts[i] = 1;
    m->starts[ns] = 1;
    return 0;
}

static int overflowed(const matcher *m, const char **msg)
{
    if (!m->overflow)
        return 0;
    *msg = "pattern substitution too complex";
    return -1;
}

/* Reverses s by characters (UTF-8 sequences kept whole). */
static char *reverse_runes(df_arena *a, const char *s, size_t n)
{
    char *out = df_alloc(a, n + 1);
    for (size_t i = 0; i < n;) {
        size_t rl = rune_len(s + i, n - i);
        memcpy(out + n - i - rl, s + i, rl);
        i += rl;
    }
    return out;
}

/* Reverses a pattern, keeping each "\x" escape in front of its character. */
static char *reverse_pattern(df_arena *a, const char *p)
{
    size_t n = strlen(p);
    char *out = df_alloc(a, n + 1);
    for (size_t i = 0; i < n;) {
        size_t unit =
            p[i] == '\\' && i + 1 < n ? 1 + rune_len(p + i + 1, n - i - 1) : rune_len(p + i, n - i);
        memcpy(out + n - i - unit, p + i, unit);
        i += unit;
    }
    return out;
}

int df_pattern_trim(char **out, df_arena *a, const char *value, const char *pat, bool suffix,
                    bool greedy, const char **msg)
{
    size_t n = strlen(value);
    const char *s = suffix ? reverse_runes(a, value, n) : value;
    const char *p = suffix ? reverse_pattern(a, pat) : pat;
    matcher m;
    if (matcher_init(&m, a, p, s, n, greedy, msg) < 0)
        return -1;
    int32_t e = match_at(&m, 0, 0);
    if (overflowed(&m, msg) < 0)
        return -1;
    size_t cut = e < 0 ? 0 : (size_t)e;
    *out = suffix ? reverse_runes(a, s + cut, n - cut) : df_strdup(a, s + cut);
    return 0;
}

/* Leftmost match at or after from: *start and *end, false when none. */
static bool find(matcher *m, size_t from, size_t *start, size_t *end)
{
    for (size_t st = from; st <= m->ns; st += st < m->ns ? rune_len(m->s + st, m->ns - st) : 1) {
        int32_t e = match_at(m, 0, st);
        if (m->overflow)
            return false;
        if (e >= 0) {
            *start = st;
            *end = (size_t)e;
            return true;
        }
    }
    return false;
}

/* Go's Regexp.Expand for a template with no groups but $0: "$$" is '$',
 * "$name" / "${name}" a group (only 0 exists; others are empty), a '$'
 * not followed by a name is literal. */
static void expand_template(df_str *b, const char *t, const char *match, size_t mlen)
{
    while (*t) {
        const char *d = strchr(t, '$');
        if (d == NULL) {
            df_str_adds(b, t);
            return;
        }
        df_str_addn(b, t, (size_t)(d - t));
        t = d + 1;
        if (*t == '$') {
            df_str_addc(b, '$');
            t++;
            continue;
        }
        bool brace = *t == '{';
        const char *nm = brace ? t + 1 : t, *e = nm;
        while (*e == '_' || (*e >= '0' && *e <= '9') || (*e >= 'a' && *e <= 'z') ||
               (*e >= 'A' && *e <= 'Z') || (unsigned char)*e >= 0x80)
            e++;
        if (e == nm || (brace && *e != '}')) {
            df_str_addc(b, '$');
            continue;
        }
        if (e - nm == 1 && *nm == '0')
            df_str_addn(b, match, mlen);
        t = brace ? e + 1 : e;
    }
}

int df_pattern_replace(char **out, df_arena *a, const char *value, const char *pat,
                       const char *repl, bool all, const char **msg)
{
    size_t n = strlen(value), st = 0, en = 0;
    matcher m;
    if (matcher_init(&m, a, pat, value, n, true, msg) < 0)
        return -1;
    df_str b;
    df_str_init(&b, a);
    if (!all) {
        bool found = find(&m, 0, &st, &en);
        if (overflowed(&m, msg) < 0)
            return -1;
        if (!found) {
            *out = df_strdup(a, value);
            return 0;
        }
        df_str_addn(&b, value, st);
        df_str_adds(&b, repl); /* literal: BuildKit splices it in as it is */
        df_str_adds(&b, value + en);
        *out = df_str_get(&b);
        return 0;
    }
    /* Go's ReplaceAllString: successive non-overlapping matches; an empty
     * match right after a match is skipped; always advance by a character. */
    size_t search = 0, last = 0;
    while (search <= n && find(&m, search, &st, &en)) {
        df_str_addn(&b, value + last, st - last);
        if (en > last || st == 0)
            expand_template(&b, repl, value + st, en - st);
        last = en;
        size_t w = search < n ? rune_len(value + search, n - search) : 0;
        if (search + w > en)
            search += w;
        else if (search + 1 > en)
            search++;
        else
            search = en;
    }
    if (overflowed(&m, msg) < 0)
        return -1;
    df_str_adds(&b, value + last);
    *out = df_str_get(&b);
    return 0;
}
