/* Instruction flags (--from=, --chown=, --mount=, ...): every instruction
 * parses its flags through pc_flags (see plan_internal.h). */
#include "plan_internal.h"

#include <stdlib.h>
#include <string.h>

int pc_flags(pctx *c, const df_line *ln, const df_cmd *cmd, const flag_spec *spec, size_t n,
             flag_val *vals, kiln_error **err)
{
    for (size_t i = 0; i < cmd->nflags; i++) {
        const df_flag *f = &cmd->flags[i];
        size_t k = 0;
        while (k < n && strcmp(spec[k].name, f->name) != 0)
            k++;
        if (k == n)
            return pc_err(c, ln, f->off, err, "unknown flag: --%s", f->name);
        flag_val *v = &vals[k];
        v->off = f->off;
        if (spec[k].type == FLAG_LIST) {
            if (f->value == NULL)
                return pc_err(c, ln, f->off, err, "missing a value on flag: --%s", f->name);
            v->list = df_realloc(c->a, v->list, (v->n + 1) * sizeof(char *));
            v->list[v->n++] = f->value;
            v->set = true;
            continue;
        }
        if (v->set)
            return pc_err(c, ln, f->off, err, "duplicate flag specified: --%s", f->name);
        v->set = true;
        if (spec[k].type == FLAG_BOOL) {
            if (f->value == NULL || strcasecmp(f->value, "true") == 0)
                v->b = true;
            else if (strcasecmp(f->value, "false") == 0)
                v->b = false;
            else
                return pc_err(c, ln, f->off, err, "expecting boolean value for flag --%s, not: %s",
                              f->name, f->value);
        } else {
            if (f->value == NULL)
                return pc_err(c, ln, f->off, err, "missing a value on flag: --%s", f->name);
            v->s = f->value;
        }
    }
    return 0;
}
