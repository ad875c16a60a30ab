/* COPY/ADD --chmod in symbolic form ("go-w", "u=rw,g=r,o=r", "a+X"), applied
 * as BuildKit applies it: every copied file and directory gets the clauses
 * applied to its own mode (chmod(1) semantics, umask 0), so "a+X" makes
 * directories searchable but only files that already had an execute bit
 * executable.  BuildKit does this with a Go port of BSD's setmode(3); this is
 * the same algorithm written from chmod(1)'s description: the mode string is
 * turned into a list of bit operations, consecutive set/clear operations are
 * merged, and the list is applied to each entry's mode. */
#include "plan.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define M_SUID 04000u
#define M_SGID 02000u
#define M_STXT 01000u
#define M_RWXU 00700u
#define M_RWXG 00070u
#define M_RWXO 00007u
#define M_STD  (M_SUID | M_SGID | M_RWXU | M_RWXG | M_RWXO)
#define M_ALL  07777u

#define COPY_U   1u /* "u", "g", "o" as a source: which classes receive it */
#define COPY_G   2u
#define COPY_O   4u
#define COPY_SET 8u
#define COPY_CLR 16u

#define MAX_OPS 64

typedef struct op {
    char cmd;       /* '+', '-', 'X' (add execute where it makes sense), 'u' 'g' 'o' (copy) */
    unsigned flags; /* copy: COPY_* */
    unsigned bits;
} op;

typedef struct ops {
    op v[MAX_OPS];
    size_t n;
} ops;

static int push(ops *o, op x)
{
    if (o->n >= MAX_OPS)
        return -1;
    o->v[o->n++] = x;
    return 0;
}

/* One operation for op with the classes who (0: all) and its argument. */
static int add(ops *o, char cmd, unsigned who, unsigned arg)
{
    switch (cmd) {
    case '=':
        /* "=" clears the classes' bits, then sets the listed ones. */
        if (push(o, (op){'-', 0, who ? who : M_STD}) < 0)
            return -1;
        cmd = '+';
        /* fall through */
    case '+':
    case '-':
    case 'X':
        return push(o, (op){cmd, 0, (who ? who : M_ALL) & arg});
    default: { /* 'u', 'g', 'o': copy that class's bits */
        op x = {cmd, 0, M_ALL};
        if (who) {
            x.flags |=
                (who & 0400 ? COPY_U : 0) | (who & 040 ? COPY_G : 0) | (who & 04 ? COPY_O : 0);
        } else {
            x.flags = COPY_U | COPY_G | COPY_O;
        }
        x.flags |= arg == '+' ? COPY_SET : arg == '-' ? COPY_CLR : COPY_SET | COPY_CLR;
        return push(o, x);
    }
    }
}

/* Parses the clauses of a symbolic mode; -1 when malformed. */
static int parse(ops *o, const char *s)
{
    bool equal_done = false;
    for (;;) {
        unsigned who = 0;
        for (;; s++) {
            if (*s == '\0')
                return -1;
            if (*s == 'a')
                who |= M_STD;
            else if (*s == 'u')
                who |= M_SUID | M_RWXU;
            else if (*s == 'g')
                who |= M_SGID | M_RWXG;
            else if (*s == 'o')
                who |= M_RWXO;
            else
                break;
        }
        for (;;) { /* one or more "op perms" for these classes */
            char opc = *s++;
            if (opc == '=')
                equal_done = false;
            else if (opc != '+' && opc != '-')
                return -1;
            who &= ~M_STXT;
            unsigned perm = 0, perm_x = 0;
            for (;; s++) {
                char b = *s;
                bool not_only_o = who == 0 || (who & ~M_RWXO) != 0;
                if (b == 'r') {
                    perm |= 0444;
                } else if (b == 'w') {
                    perm |= 0222;
                } else if (b == 'x') {
                    perm |= 0111;
                } else if (b == 'X') {
                    if (opc != '-')
                        perm_x = 0111;
                    else
                        perm |= 0111;
                } else if (b == 's') {
                    if (not_only_o)
                        perm |= M_SUID | M_SGID;
                } else if (b == 't') {
                    if (not_only_o) {
                        who |= M_STXT;
                        perm |= M_STXT;
                    }
                } else if (b == 'u' || b == 'g' || b == 'o') {
                    if (perm && add(o, opc, who, perm) < 0)
                        return -1;
                    perm = 0;
                    if (opc == '=')
                        equal_done = true;
                    if (perm_x && add(o, 'X', who, perm_x) < 0)
                        return -1;
                    perm_x = 0;
                    if (add(o, b, who, (unsigned)opc) < 0)
                        return -1;
                } else {
                    if (perm || (opc == '=' && !equal_done)) {
                        if (opc == '=')
                            equal_done = true;
                        if (add(o, opc, who, perm) < 0)
                            return -1;
                    }
                    if (perm_x && add(o, 'X', who, perm_x) < 0)
                        return -1;
                    break;
                }
            }
            if (*s == '\0')
                return 0;
            if (*s == ',') {
                s++;
                break;
            }
        }
    }
}

/* Merges each run of '+', '-' and 'X' into at most one of each (clear, set, X). */
static void compress(ops *o)
{
    size_t j = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (!strchr("+-X", o->v[i].cmd)) {
            o->v[j++] = o->v[i];
            continue;
        }
        unsigned set = 0, clr = 0, x = 0;
        for (; i < o->n && strchr("+-X", o->v[i].cmd); i++) {
            unsigned b = o->v[i].bits;
            if (o->v[i].cmd == '-') {
                clr |= b;
                set &= ~b;
                x &= ~b;
            } else if (o->v[i].cmd == '+') {
                set |= b;
                clr &= ~b;
                x &= ~b;
            } else {
                x |= b & ~set;
            }
        }
        i--;
        if (clr)
            o->v[j++] = (op){'-', 0, clr};
        if (set)
            o->v[j++] = (op){'+', 0, set};
        if (x)
            o->v[j++] = (op){'X', 0, x};
    }
    o->n = j;
}

static unsigned copy_bits(const op *x, unsigned mode, unsigned value)
{
    if (x->flags & COPY_CLR) {
        unsigned clr = (x->flags & COPY_SET) ? 07 : value;
        if (x->flags & COPY_U)
            mode &= ~((clr << 6) & x->bits);
        if (x->flags & COPY_G)
            mode &= ~((clr << 3) & x->bits);
        if (x->flags & COPY_O)
            mode &= ~(clr & x->bits);
    }
    if (x->flags & COPY_SET) {
        if (x->flags & COPY_U)
            mode |= (value << 6) & x->bits;
        if (x->flags & COPY_G)
            mode |= (value << 3) & x->bits;
        if (x->flags & COPY_O)
            mode |= value & x->bits;
    }
    return mode;
}

int bld_chmod_apply(const char *spec, unsigned mode, bool is_dir, unsigned *out)
{
    ops o = {0};
    if (spec == NULL || *spec == '\0')
        return -1;
    if (isdigit((unsigned char)*spec)) {
        char *end = NULL;
        unsigned long v = strtoul(spec, &end, 8);
        if (*end || v > 07777)
            return -1;
        if (out)
            *out = (unsigned)v;
        return 0;
    }
    if (parse(&o, spec) < 0)
        return -1;
    compress(&o);
    unsigned old = mode & M_ALL, m = old;
    for (size_t i = 0; i < o.n; i++) {
        const op *x = &o.v[i];
        switch (x->cmd) {
        case 'u':
            m = copy_bits(x, m, (m & M_RWXU) >> 6);
            break;
        case 'g':
            m = copy_bits(x, m, (m & M_RWXG) >> 3);
            break;
        case 'o':
            m = copy_bits(x, m, m & M_RWXO);
            break;
        case '+':
            m |= x->bits;
            break;
        case '-':
            m &= ~x->bits;
            break;
        default: /* 'X': only where some execute bit was set, or on directories */
            if ((old & 0111) || is_dir)
                m |= x->bits;
        }
    }
    if (out)
        *out = m & M_ALL;
    return 0;
}
