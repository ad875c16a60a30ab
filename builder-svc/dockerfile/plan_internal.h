/* Internal state of one bld_plan_parse() call, shared by plan.c (stages,
 * targets), scope.c (ARG/ENV and expansion), instr.c and instr_run.c (one
 * function per instruction), flags.c and platform.c. */
#ifndef BLD_PLAN_INTERNAL_H
#define BLD_PLAN_INTERNAL_H

#include "df_internal.h"
#include "plan.h"

/* A trigger recorded by ONBUILD: its text as a logical line of the file. */
typedef struct df_trigger {
    df_line line;
    const df_src *src;
} df_trigger;

/* Per-stage build state while its instructions are dispatched. */
typedef struct stage_state {
    bld_kv *env;
    unsigned long *env_seq; /* when each env entry was last set (pctx.seq) */
    size_t n_env, cap_env;
    bld_kv *args; /* ARGs declared in the stage so far (and the parent stage's) */
    unsigned long *arg_seq;
    size_t n_args, cap_args;
    const char *user;
    const char *workdir; /* NULL: the base image's (unknown) */
    bld_strv shell;
    bool env_unknown;     /* the base image's ENV is not known (no resolver) */
    bld_kv *snap;         /* copy of env shared by instructions until ENV changes */
    df_trigger *triggers; /* this stage's ONBUILD triggers */
    size_t n_triggers, cap_triggers;
} stage_state;

typedef struct pctx {
    df_arena *a;
    const df_src *src; /* file being dispatched (a trigger has its own) */
    df_directives dirs;
    const bld_plan_opts *opts;
    bld_plan *plan;
    bld_kv *meta; /* global ARGs */
    size_t n_meta, cap_meta;
    bld_kv builtins[11];
    const char *target_stage; /* TARGETSTAGE */
    unsigned long seq;        /* orders ENV and ARG settings within a stage */
    bld_kv *bargs;            /* build args (value NULL: given without =) */
    bool *barg_used;
    size_t n_bargs;
    char **all_names; /* every stage name in the file, by stage index (NULL: unnamed) */
    size_t n_all_names;
    bld_stage *stages;
    size_t n_stages, cap_stages;
    size_t cap_instrs;
    stage_state *states; /* final state of each finished stage */
    stage_state ss;      /* current stage */
    bool in_stage;
    /* ARGs referenced by the instruction being expanded */
    bld_kv *used;
    size_t n_used, cap_used;
    bld_strv unresolved; /* names not found while the base ENV is unknown */
    size_t cap_unresolved;
    bld_strv warnings;
    size_t cap_warnings;
    /* Work done in loops whose cost depends on input shape (variables x
     * references, stages x references); past DF_MAX_WORK the parse fails
     * instead of running for minutes on hostile input. */
    unsigned long long work;
} pctx;

/* Error at a logical offset of ln. */
int pc_err(pctx *c, const df_line *ln, size_t off, kiln_error **err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Expands word in the current scope (global before the first FROM), recording
 * the ARGs it reads.  skip_quotes: heredoc body mode. */
int pc_expand(pctx *c, char **out, const char *word, bool skip_quotes, const df_line *ln,
              size_t off, kiln_error **err);

/* Expands word and splits the result into words (BuildKit's ProcessWords). */
int pc_expand_words(pctx *c, char ***out, long *n, const char *word, const df_line *ln, size_t off,
                    kiln_error **err);

/* Resolves a COPY --from / mount from= reference and records the dependency;
 * an image named by a named context replaces *ref. */
int pc_stage_ref(pctx *c, const char **ref, bld_ref_kind *kind, size_t *stage, const df_line *ln,
                 size_t off, kiln_error **err);
/* The image a named context gives name (case-insensitive), or NULL. */
const char *pc_named_image(const pctx *c, const char *name);

void pc_warn(pctx *c, const char *msg);

/* The exec form of args (df_json_strings): 1 = JSON array of strings in *w,
 * 0 = shell form, negative = error reported (not strings, or a NUL byte). */
int pc_json(pctx *c, const df_line *ln, size_t off, const char *args, char ***w, size_t *n,
            kiln_error **err);

/* The value of --build-arg name (marked used), or NULL when not given with a value. */
const char *pc_build_arg(pctx *c, const char *name);
/* Value an ARG declaration without a build arg takes: its default when it has
 * one, else (in a stage) the global ARG's or the predefined one's. */
const char *pc_arg_value(pctx *c, const char *name, const char *dflt, bool has_default,
                         bool global);
/* Sets ENV name in the current stage (replacing an earlier value in place). */
void pc_env_set(pctx *c, const char *name, const char *value);
/* Declares ARG name in the current stage. */
void pc_arg_add(pctx *c, const char *name, const char *value, unsigned long seq);
/* The ARG of the stage an expansion or RUN sees for name: the last one with a
 * value, or NULL; *seq tells when it was set. */
const bld_kv *pc_stage_arg(const pctx *c, const char *name, unsigned long *seq);

/* Stage start: empty scope, default SHELL. */
void pc_stage_state_init(pctx *c);
/* Takes a base image's ENV, WORKDIR, USER, SHELL, then runs its ONBUILD triggers. */
int pc_apply_base(pctx *c, const bld_base_info *bi, const char *ref, kiln_error **err);
/* Appends the triggers' instructions to the current stage. */
int pc_splice_triggers(pctx *c, const df_trigger *t, size_t n, kiln_error **err);
/* Fills the predefined platform ARGs from normalised platforms. */
void pc_set_builtins(pctx *c, const char *build_platform, const char *target_platform);

/* Dispatches one instruction (not FROM) into in. */
int df_instr(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err);

/* RUN, and COPY/ADD (add selects ADD's flags and remote sources). */
int df_instr_run(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, kiln_error **err);
int df_instr_copy(pctx *c, const df_line *ln, const df_cmd *cmd, bld_instr *in, bool add,
                  kiln_error **err);

/* Builder-flag values. */
typedef enum flag_type { FLAG_STR, FLAG_BOOL, FLAG_LIST } flag_type;
typedef struct flag_spec {
    const char *name;
    flag_type type;
} flag_spec;
typedef struct flag_val {
    bool set;
    const char *s; /* FLAG_STR */
    bool b;        /* FLAG_BOOL */
    size_t off;
    const char **list; /* FLAG_LIST */
    size_t n;
} flag_val;

int pc_flags(pctx *c, const df_line *ln, const df_cmd *cmd, const flag_spec *spec, size_t n,
             flag_val *vals, kiln_error **err);

/* Platforms: "os/arch[/variant]" normalised (common/platform.h); false when
 * invalid. */
bool df_platform_normalize(char **out, df_arena *a, const char *in, const char *default_arch);
const char *df_host_platform(void);
/* Splits a normalised platform into os, arch and variant (arena copies). */
void df_platform_split(df_arena *a, const char *p, char **os, char **arch, char **variant);

/* Instruction keyword table. */
bool df_known_keyword(const char *kw);
const char *df_suggest_keyword(const char *kw);

#endif
