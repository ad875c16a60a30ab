/* Dockerfile frontend utilities: the arena that owns every plan object,
 * growable arena strings, error messages with source excerpts, and the JSON
 * string-array decoder behind the exec form. */
#include "df_internal.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each block carries a header linking it into the arena's list, so a block
 * can be resized in place of the list and everything freed in one walk. */
typedef struct df_block {
    struct df_block *prev, *next;
    max_align_t align[];
} df_block;

struct df_arena {
    df_block head; /* sentinel of a circular list */
};

static void oom(size_t n)
{
    fprintf(stderr, "kiln: out of memory allocating %zu bytes\n", n);
    abort();
}

df_arena *df_arena_new(void)
{
    df_arena *a = malloc(sizeof(*a));
    if (a == NULL)
        oom(sizeof(*a));
    a->head.prev = a->head.next = &a->head;
    return a;
}

void df_arena_free(df_arena *a)
{
    if (a == NULL)
        return;
    df_block *b = a->head.next;
    while (b != &a->head) {
        df_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void *df_alloc(df_arena *a, size_t n)
{
    if (n > SIZE_MAX - sizeof(df_block))
        oom(n);
    df_block *b = calloc(1, sizeof(df_block) + n);
    if (b == NULL)
        oom(n);
    b->next = a->head.next;
    b->prev = &a->head;
    a->head.next->prev = b;
    a->head.next = b;
    return b->align;
}

void *df_realloc(df_arena *a, void *p, size_t n)
{
    if (p == NULL)
        return df_alloc(a, n);
    if (n > SIZE_MAX - sizeof(df_block))
        oom(n);
    df_block *old = (df_block *)((char *)p - offsetof(df_block, align));
    df_block *prev = old->prev, *next = old->next;
    df_block *b = realloc(old, sizeof(df_block) + n);
    if (b == NULL)
        oom(n);
    prev->next = b;
    next->prev = b;
    return b->align;
}

char *df_strndup(df_arena *a, const char *s, size_t n)
{
    char *d = df_alloc(a, n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *df_strdup(df_arena *a, const char *s)
{
    return s ? df_strndup(a, s, strlen(s)) : NULL;
}

char *df_printf(df_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return df_strdup(a, "");
    char *s = df_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

void df_str_init(df_str *b, df_arena *a)
{
    b->a = a;
    b->s = NULL;
    b->len = b->cap = 0;
}

void df_str_addn(df_str *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->s = df_realloc(b->a, b->s, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void df_str_addc(df_str *b, char c)
{
    df_str_addn(b, &c, 1);
}

void df_str_adds(df_str *b, const char *s)
{
    df_str_addn(b, s, strlen(s));
}

char *df_str_get(df_str *b)
{
    if (b->s == NULL)
        df_str_addn(b, "", 0);
    return b->s;
}

bool df_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void df_lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Appends a printable rendering of line[from, to) (control bytes become '?'). */
static void add_excerpt(df_str *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        df_str_addc(b, (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c);
    }
}

#define EXCERPT_MAX 120

int df_error_at(kiln_error **err, const df_src *src, int line, int col, const char *fmt, ...)
{
    df_arena *a = df_arena_new();
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (line < 1)
        line = 1;
    if (col < 1)
        col = 1;
    /* Find the physical line. */
    const char *p = src->text, *end = src->text + src->len;
    for (int l = 1; l < line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t llen = (size_t)((nl ? nl : end) - p);
    if (llen && p[llen - 1] == '\r')
        llen--;
    size_t c0 = (size_t)col - 1, from = 0;
    if (c0 > llen)
        c0 = llen;
    if (c0 > EXCERPT_MAX / 2)
        from = c0 - EXCERPT_MAX / 2;
    size_t to = from + EXCERPT_MAX < llen ? from + EXCERPT_MAX : llen;
    df_str b;
    df_str_init(&b, a);
    df_str_adds(&b, from ? "..." : "");
    add_excerpt(&b, p + from, to - from);
    if (to < llen)
        df_str_adds(&b, "...");
    df_str caret;
    df_str_init(&caret, a);
    if (from)
        df_str_adds(&caret, "   ");
    for (size_t i = from; i < c0; i++)
        df_str_addc(&caret, p[i] == '\t' ? '\t' : ' ');
    kiln_error_set(err, KILN_EINVAL, 0, "%s:%d:%d: %s\n %5d | %s\n       | %s^", src->name, line,
                   col, msg ? msg : "syntax error", line, df_str_get(&b), df_str_get(&caret));
    free(msg);
    df_arena_free(a);
    return KILN_EINVAL;
}

/* Decodes the JSON string literal at *p (valid: cJSON checked it) into b. */
static void json_string(df_str *b, const char **p)
{
    const char *s = *p + 1;
    while (*s != '"') {
        if (*s != '\\') {
            df_str_addc(b, *s++);
            continue;
        }
        s++;
        char e = *s++;
        switch (e) {
        case 'b':
            df_str_addc(b, '\b');
            break;
        case 'f':
            df_str_addc(b, '\f');
            break;
        case 'n':
            df_str_addc(b, '\n');
            break;
        case 'r':
            df_str_addc(b, '\r');
            break;
        case 't':
            df_str_addc(b, '\t');
            break;
        case 'u': {
            unsigned cp = (unsigned)strtoul((char[5]){s[0], s[1], s[2], s[3], 0}, NULL, 16);
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[0] == '\\' && s[1] == 'u') {
                unsigned lo = (unsigned)strtoul((char[5]){s[2], s[3], s[4], s[5], 0}, NULL, 16);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
            }
            if (cp >= 0xD800 && cp < 0xE000)
                cp = 0xFFFD; /* a lone surrogate, as Go decodes it */
            char u[4];
            size_t n = 0;
            if (cp < 0x80) {
                u[n++] = (char)cp;
            } else if (cp < 0x800) {
                u[n++] = (char)(0xC0 | cp >> 6);
                u[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                u[n++] = (char)(0xE0 | cp >> 12);
                u[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                u[n++] = (char)(0xF0 | cp >> 18);
                u[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[n++] = (char)(0x80 | (cp & 0x3F));
            }
            df_str_addn(b, u, n);
            break;
        }
        default: /* " \ / */
            df_str_addc(b, e);
        }
    }
    *p = s + 1;
}

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int df_json_array(char ***out, size_t **lens, size_t *n, df_arena *a, const char *s)
{
    while (df_is_space(*s))
        s++;
    if (*s != '[')
        return 0;
    /* Like Go's json.Unmarshal, the whole text is one JSON value: anything
     * after the array makes the instruction shell form. */
    const char *end = s + strlen(s);
    while (end > s && json_space(end[-1]))
        end--;
    if (end[-1] != ']')
        return 0;
    for (const char *q = s; q < end; q++)
        if ((unsigned char)*q < 0x20 && !json_space(*q))
            return 0; /* control characters are not JSON whitespace */
    cJSON *j = cJSON_ParseWithOpts(s, NULL, 1);
    if (j == NULL)
        return 0;
    if (!cJSON_IsArray(j)) {
        cJSON_Delete(j);
        return 0;
    }
    size_t cnt = (size_t)cJSON_GetArraySize(j);
    const cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        if (!cJSON_IsString(e)) {
            cJSON_Delete(j);
            return -1;
        }
    }
    cJSON_Delete(j);
    /* cJSON ends a string at \u0000: decode the literals again, NULs kept. */
    char **v = df_alloc(a, (cnt + 1) * sizeof(char *));
    size_t *l = df_alloc(a, (cnt + 1) * sizeof(size_t));
    const char *p = s + 1;
    for (size_t i = 0; i < cnt; i++) {
        while (*p != '"')
            p++;
        df_str b;
        df_str_init(&b, a);
        json_string(&b, &p);
        v[i] = df_str_get(&b);
        l[i] = b.len;
    }
    *out = v;
    if (lens)
        *lens = l;
    *n = cnt;
    return 1;
}

int df_json_strings(char ***out, size_t *n, df_arena *a, const char *s)
{
    size_t *lens = NULL;
    int j = df_json_array(out, &lens, n, a, s);
    for (size_t i = 0; j > 0 && i < *n; i++)
        if (strlen((*out)[i]) != lens[i])
            return -2;
    return j;
}
