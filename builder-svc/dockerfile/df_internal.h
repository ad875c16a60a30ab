/* Internal interfaces shared by the Dockerfile frontend's source files: the
 * allocation arena every plan object lives in, the source map used for error
 * positions, the logical-line lexer and the shell-word expander.  Nothing here
 * is part of the public API (see plan.h, expand.h and ignore.h). */
#ifndef BLD_DF_INTERNAL_H
#define BLD_DF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "cleanup.h"
#include "error.h"

/* Ceilings that keep hostile input bounded. */
#define DF_MAX_INPUT      ((size_t)32 << 20) /* bytes of Dockerfile text */
#define DF_MAX_NESTING    64                 /* ${...} nesting depth */
#define DF_MAX_HEREDOCS   64                 /* heredocs on one instruction line */
#define DF_MAX_FLAG_WORDS 256                /* flags on one instruction */
#define DF_MAX_WORK       200000000ULL       /* lookups x variables, stages x references */

/* ---- arena: every object of a plan is freed at once ---------------------- */

/* Allocation failure aborts the process, as redis' allocator does: a parse
 * never allocates more than a small multiple of its bounded input. */
typedef struct df_arena df_arena;

df_arena *df_arena_new(void);
void df_arena_free(df_arena *a);
/* Zeroed block owned by the arena. */
void *df_alloc(df_arena *a, size_t n);
/* Resizes a block obtained from df_alloc/df_realloc (p may be NULL). */
void *df_realloc(df_arena *a, void *p, size_t n);
char *df_strndup(df_arena *a, const char *s, size_t n);
char *df_strdup(df_arena *a, const char *s);
char *df_printf(df_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Makes room for one more element in an arena array of *n elements. */
#define DF_PUSH(a, arr, n, cap)                                                                    \
    do {                                                                                           \
        if ((n) >= (cap)) {                                                                        \
            (cap) = (cap) ? (cap)*2 : 4;                                                           \
            (arr) = df_realloc((a), (arr), (cap) * sizeof(*(arr)));                                \
        }                                                                                          \
    } while (0)

/* A growable string in the arena. */
typedef struct df_str {
    df_arena *a;
    char *s;
    size_t len, cap;
} df_str;

void df_str_init(df_str *b, df_arena *a);
void df_str_addn(df_str *b, const char *p, size_t n);
void df_str_addc(df_str *b, char c);
void df_str_adds(df_str *b, const char *s);
/* Always returns a NUL-terminated string (empty when nothing was added). */
char *df_str_get(df_str *b);

/* ---- source text and error positions ------------------------------------ */

typedef struct df_src {
    const char *name; /* file name used in messages */
    const char *text;
    size_t len;
} df_src;

/* Formats "name:line:col: message" followed by the offending physical line
 * and a caret under col, sets *err (KILN_EINVAL) and returns KILN_EINVAL. */
int df_error_at(kiln_error **err, const df_src *src, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- logical lines -------------------------------------------------------- */

/* Maps a byte offset of a logical line to the physical line and column it came from. */
typedef struct df_seg {
    size_t off; /* first logical offset of this piece */
    int line;   /* physical line (1-based) */
    int col;    /* column (1-based) of that first byte */
} df_seg;

typedef struct df_heredoc {
    char *name;
    char *content; /* raw body, lines joined with '\n', trailing '\n' kept */
    bool expand;   /* delimiter unquoted */
    bool chomp;    /* <<- : strip leading tabs */
    int fd;        /* 0 unless written as N<<EOF */
} df_heredoc;

typedef struct df_line {
    char *text; /* continuation lines joined, comment lines dropped */
    size_t len;
    int first_line, last_line; /* physical, heredoc bodies included */
    df_seg *segs;
    size_t nsegs;
    df_heredoc *heredocs;
    size_t nheredocs;
} df_line;

typedef struct df_directives {
    char escape;        /* '\\' or '`' */
    const char *syntax; /* NULL when absent */
    const char *check;  /* NULL when absent */
} df_directives;

/* Position of a logical offset. */
void df_line_pos(const df_line *ln, size_t off, int *line, int *col);

/* Splits text into logical lines (see lexer.c). */
int df_lex(df_line **out, size_t *n_out, df_directives *dirs, df_arena *a, const df_src *src,
           kiln_error **err);

/* Lexes one ONBUILD trigger (a single instruction without heredocs). */
int df_lex_one(df_line *out, df_arena *a, const char *text, int line, char escape,
               const df_src *src, kiln_error **err);

/* Keyword, flags and argument text of one logical line. */
typedef struct df_flag {
    char *name;
    char *value; /* NULL for a bare --name */
    size_t off;  /* logical offset of the "--" */
} df_flag;

typedef struct df_cmd {
    char *keyword; /* lower case */
    size_t kw_off;
    df_flag *flags;
    size_t nflags;
    const char *args; /* points into the line text, trimmed */
    size_t args_off;
} df_cmd;

int df_split_command(df_cmd *out, df_arena *a, const df_line *ln, const df_src *src,
                     kiln_error **err);

/* Docker's quote-aware word split (quotes and escapes are kept in the words). */
size_t df_parse_words(char ***out, df_arena *a, const char *s, char escape);
/* Split on runs of space, tab, \v, \f, \r (no quote handling). */
size_t df_split_ws(char ***out, df_arena *a, const char *s);

/* ---- shell-word expansion --------------------------------------------------- */

/* Returns the value of a variable or NULL when unset. */
typedef const char *(*df_lookup_fn)(void *ctx, const char *name);

typedef struct df_lex_opts {
    char escape;
    bool raw_quotes;  /* keep quote characters in the result */
    bool raw_escapes; /* keep escape characters in the result */
    bool skip_unset;  /* leave references to unset variables as written */
    bool skip_quotes; /* quotes are ordinary characters (heredoc bodies) */
    df_lookup_fn lookup;
    void *ctx;
} df_lex_opts;

/* Expands one word; on error *msg is a static description. */
int df_expand(char **out, df_arena *a, const char *word, const df_lex_opts *o, const char **msg);
/* Expands and splits into words (ProcessWords); returns the count or -1 with *msg. */
long df_expand_words(char ***out, df_arena *a, const char *s, const df_lex_opts *o,
                     const char **msg);

/* Shell patterns (pattern.c): removes the shortest (longest when greedy)
 * prefix, or suffix, of value matching pat; replaces the first (or every)
 * match of pat in value by repl.  -1 with a static *msg on an invalid or too
 * complex pattern. */
int df_pattern_trim(char **out, df_arena *a, const char *value, const char *pat, bool suffix,
                    bool greedy, const char **msg);
int df_pattern_replace(char **out, df_arena *a, const char *value, const char *pat,
                       const char *repl, bool all, const char **msg);

/* Heredoc reference in one word ("<<EOF", "<<-'EOF'", "3<<EOF"); false when not one. */
bool df_heredoc_word(df_heredoc *out, df_arena *a, const char *word);

/* ---- argument syntax (syntax.c) -------------------------------------------- */

typedef struct df_name_val {
    char *name;
    const char *value; /* as written (quotes and escapes kept) */
} df_name_val;

/* ENV and LABEL arguments: "name value" (legacy, *legacy set) or name=value
 * words.  -1 when malformed: *bad_word is the word without '=' or NULL when
 * the legacy form lacks a value.  Zero pairs for an empty text. */
int df_name_vals(df_name_val **out, size_t *n_out, bool *legacy, df_arena *a, const char *args,
                 char escape, const char **bad_word);

/* The Dockerfile as BuildKit's parser dumps its AST: one "(keyword [flags]
 * \"arg\" ...)" line per instruction, arguments split as the instruction
 * parsers split them, nothing expanded.  *out is owned by a. */
int df_syntax_dump(char **out, df_arena *a, const char *text, size_t len, kiln_error **err);

/* ---- small helpers --------------------------------------------------------- */

bool df_is_space(char c);
/* Decodes s as BuildKit's exec form: 1 = the whole text (blanks around it
 * aside) is a JSON array of strings (*out filled, and *lens with each
 * string's length when lens is not NULL: a string may hold NUL bytes),
 * 0 = not JSON (shell form), -1 = a JSON array with an element that is not a
 * string. */
int df_json_array(char ***out, size_t **lens, size_t *n, df_arena *a, const char *s);
/* df_json_array for C strings: -2 when a string holds a NUL byte. */
int df_json_strings(char ***out, size_t *n, df_arena *a, const char *s);
/* Go's path.Clean: collapses "//", "." and "..". */
char *df_path_clean(df_arena *a, const char *p);
/* Lowercases in place. */
void df_lower(char *s);

#endif
