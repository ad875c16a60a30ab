/* ONBUILD triggers of a pulled base image, parsed after the fact: the engine
 * learns them only from the image config, so it asks for them to be turned
 * into instructions of an existing plan's stage (see bld_plan_parse_triggers). */
#include "plan_internal.h"

#include <string.h>

int bld_plan_parse_triggers(bld_instr **out, size_t *n_out, bld_plan *p, size_t stage,
                            const bld_base_info *base, const char *ref, kiln_error **err)
{
    static const bld_plan_opts no_opts = {0};
    if (p == NULL || stage >= p->n_stages)
        return kiln_error_set(err, KILN_EINVAL, 0, "no stage %zu in the plan", stage);
    if (base == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "no base image information");
    df_arena *a = p->priv;
    pctx c = {.a = a, .opts = &no_opts, .plan = p};
    c.dirs.escape = p->escape ? p->escape : '\\';
    c.target_stage = p->stages[p->target].name ? p->stages[p->target].name : "default";
    pc_set_builtins(&c, p->build_platform, p->target_platform);
    /* Earlier stages stay referable by name or index, as in the file. */
    c.all_names = df_alloc(a, (p->n_stages + 1) * sizeof(char *));
    for (size_t i = 0; i < p->n_stages; i++)
        c.all_names[i] = (char *)p->stages[i].name;
    c.n_all_names = p->n_stages;
    c.stages = df_alloc(a, (stage + 1) * sizeof(bld_stage));
    memcpy(c.stages, p->stages, (stage + 1) * sizeof(bld_stage));
    c.n_stages = c.cap_stages = stage + 1;
    bld_stage *st = &c.stages[stage];
    st->instrs = NULL;
    st->n_instrs = 0;
    /* Triggers run right after FROM: the scope holds only the base image's state. */
    pc_stage_state_init(&c);
    c.in_stage = true;
    int rc = pc_apply_base(&c, base, ref ? ref : "base image", err);
    if (rc < 0)
        return rc;
    p->stages[stage].deps = st->deps;
    p->stages[stage].n_deps = st->n_deps;
    *out = st->instrs;
    *n_out = st->n_instrs;
    return 0;
}
