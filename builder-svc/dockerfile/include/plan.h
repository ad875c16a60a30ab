/* Build plan: the Dockerfile frontend's output and the build engine's input.
 *
 * bld_plan_parse() lexes and parses a Dockerfile, applies Docker's ARG scoping
 * and variable expansion, resolves stage references and --target, and
 * returns a plan: stages in file order, each with its resolved base, platform,
 * dependencies and instructions (typed, expanded, with original text and line
 * numbers).  Everything in a plan is owned by the plan and freed by
 * bld_plan_free(); all pointers inside stay valid until then.
 *
 * How the engine consumes a plan:
 *   - Build the stages with runs == true; a stage can start when every stage
 *     in its deps[] is done (independent stages may run in parallel).
 *   - base.kind tells where the root filesystem comes from: an image to pull
 *     (base.image, for base.platform), an earlier stage (base.stage), scratch.
 *   - Docker expands instruction arguments with the base image's ENV too.  The
 *     plan can only know it when the caller passes opts.resolve_base; without
 *     it, names that might come from the base are listed in each instruction's
 *     unresolved[].  The engine therefore pulls the bases named by a first plan
 *     (stages with base_kind BLD_BASE_IMAGE), then parses again with a
 *     resolver, which also splices the base image's ONBUILD triggers right
 *     after FROM (instructions with from_onbuild set); bld_onbuild_check()
 *     validates a single trigger string on its own.
 *   - RUN: execute run.argv (shell form already wrapped in the SHELL in effect)
 *     with env = ENV in effect (env[]) plus the ARGs in scope (args[]: an ARG
 *     there replaces an ENV entry of the same name, it was set after it) plus
 *     proxy build args, as user/workdir in effect;
 *     run.files are heredoc scripts to mount read-only before running.
 *   - Cache keys: the instruction's original text is not enough; use the
 *     expanded fields plus args[] (the ARG values the instruction depends on). */
#ifndef BLD_PLAN_H
#define BLD_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "error.h"

/* A name and a value; value is NULL for a declared but unset ARG. */
typedef struct bld_kv {
    const char *key;
    const char *value;
} bld_kv;

/* A list of strings. */
typedef struct bld_strv {
    const char **v;
    size_t n;
} bld_strv;

typedef enum bld_instr_kind {
    BLD_INSTR_RUN,
    BLD_INSTR_COPY,
    BLD_INSTR_ADD,
    BLD_INSTR_ARG,
    BLD_INSTR_ENV,
    BLD_INSTR_WORKDIR,
    BLD_INSTR_USER,
    BLD_INSTR_EXPOSE,
    BLD_INSTR_LABEL,
    BLD_INSTR_MAINTAINER,
    BLD_INSTR_VOLUME,
    BLD_INSTR_ENTRYPOINT,
    BLD_INSTR_CMD,
    BLD_INSTR_SHELL,
    BLD_INSTR_HEALTHCHECK,
    BLD_INSTR_STOPSIGNAL,
    BLD_INSTR_ONBUILD,
} bld_instr_kind;

/* "RUN", "COPY", ... */
const char *bld_instr_kind_name(bld_instr_kind k);

/* A heredoc body. content is final: tabs stripped for <<-, variables expanded
 * for COPY/ADD when the delimiter was unquoted (RUN bodies are never expanded:
 * the shell does that). */
typedef struct bld_heredoc {
    const char *name;
    const char *content;
    bool expand; /* delimiter was unquoted */
    bool chomp;  /* <<- */
    int fd;      /* N in N<<EOF, else 0 */
} bld_heredoc;

typedef enum bld_mount_type {
    BLD_MOUNT_BIND,
    BLD_MOUNT_CACHE,
    BLD_MOUNT_TMPFS,
    BLD_MOUNT_SECRET,
    BLD_MOUNT_SSH,
} bld_mount_type;

typedef enum bld_sharing {
    BLD_SHARING_SHARED,
    BLD_SHARING_PRIVATE,
    BLD_SHARING_LOCKED,
} bld_sharing;

/* Where a COPY --from or a mount's from= points. */
typedef enum bld_ref_kind {
    BLD_REF_NONE,  /* build context */
    BLD_REF_STAGE, /* an earlier stage: stage index */
    BLD_REF_IMAGE, /* an image reference to pull */
} bld_ref_kind;

typedef struct bld_mount {
    bld_mount_type type;
    const char *target; /* as written: a relative target is relative to the workdir */
    const char *source; /* NULL: root of from */
    bld_ref_kind from_kind;
    const char *from; /* as written, after expansion; NULL for the context */
    size_t from_stage;
    const char *id; /* cache/secret/ssh id (defaulted as Docker does) */
    bool readonly;
    bld_sharing sharing; /* cache */
    long mode;           /* -1 unset */
    long uid, gid;       /* -1 unset */
    bool required;       /* secret, ssh */
    long long size;      /* tmpfs bytes, 0 unset */
    const char *env;     /* secret exposed as an environment variable */
} bld_mount;

typedef enum bld_network {
    BLD_NET_DEFAULT,
    BLD_NET_NONE,
    BLD_NET_HOST,
} bld_network;

/* A file to create before running (a heredoc script with a #! line). */
typedef struct bld_run_file {
    const char *path;
    const char *content;
    unsigned mode;
} bld_run_file;

typedef struct bld_run {
    bool exec_form;      /* JSON form: argv as written */
    const char *command; /* shell form: the command text (heredocs reassembled) */
    bld_strv argv;       /* what to execute (shell form: SHELL + [command]) */
    bld_mount *mounts;
    size_t n_mounts;
    bld_network network;
    bool insecure; /* --security=insecure */
    bld_run_file *files;
    size_t n_files;
} bld_run;

typedef enum bld_src_kind {
    BLD_SRC_PATH,    /* context or --from path; may contain globs */
    BLD_SRC_HEREDOC, /* inline file: heredoc index in the instruction */
    BLD_SRC_URL,     /* ADD http(s):// */
    BLD_SRC_GIT,     /* ADD of a git repository */
} bld_src_kind;

typedef struct bld_source {
    bld_src_kind kind;
    const char *path; /* path, URL, or the heredoc's file name */
    size_t heredoc;   /* BLD_SRC_HEREDOC: index into heredocs */
} bld_source;

typedef struct bld_copy {
    bld_source *sources;
    size_t n_sources;
    const char *dest;
    bld_ref_kind from_kind; /* COPY --from */
    const char *from;
    size_t from_stage;
    const char *chown_user; /* NULL when no --chown */
    const char *chown_group;
    const char *chmod; /* as written (after expansion); NULL when no --chmod */
    long mode;         /* octal --chmod, -1 when none or symbolic (then apply
                        * chmod to each copied entry with bld_chmod_apply) */
    bool link, parents, keep_git_dir;
    const char *checksum; /* ADD --checksum */
    bld_strv excludes;
    int unpack; /* ADD --unpack: -1 unset, 0/1 */
} bld_copy;

typedef struct bld_port {
    unsigned start, end; /* end == start for one port */
    const char *proto;   /* "tcp", "udp", "sctp" */
} bld_port;

typedef struct bld_health {
    bool none;     /* HEALTHCHECK NONE */
    bld_strv test; /* ["CMD", ...] or ["CMD-SHELL", cmd] */
    long long interval_ns, timeout_ns, start_period_ns, start_interval_ns; /* 0: inherit */
    long retries;                                                          /* 0: inherit */
} bld_health;

typedef struct bld_instr {
    bld_instr_kind kind;
    const char *original; /* continuation lines joined, as written */
    int line, end_line;   /* physical lines, heredoc bodies included */
    bool from_onbuild;    /* spliced in from a base's ONBUILD triggers */
    bld_kv *args;         /* ARGs this instruction depends on (RUN: all in scope) */
    size_t n_args;
    bld_strv unresolved; /* variables expanded as empty only because the base
                          * image's ENV was unknown: re-plan with a resolver */
    bld_kv *env;         /* ENV in effect before the instruction, in order */
    size_t n_env;
    const char *user;    /* USER in effect (NULL: the base's) */
    const char *workdir; /* WORKDIR in effect (NULL: the base's; not starting with
                          * '/': relative to the base image's WorkingDir) */
    bld_heredoc *heredocs;
    size_t n_heredocs;
    union {
        bld_run run;   /* RUN */
        bld_copy copy; /* COPY, ADD */
        struct {       /* ARG, ENV, LABEL */
            bld_kv *pairs;
            size_t n;
        } kv;
        const char *str; /* WORKDIR (resolved), USER, MAINTAINER, STOPSIGNAL */
        bld_strv list;   /* VOLUME, SHELL */
        struct {         /* CMD, ENTRYPOINT */
            bool exec_form;
            bld_strv argv; /* shell form: SHELL + [command] */
        } cmd;
        struct {
            bld_port *v;
            size_t n;
        } expose;
        bld_health health;
        struct {
            const char *trigger; /* text after ONBUILD, stored unexpanded */
            bld_instr_kind kind; /* the trigger's instruction */
        } onbuild;
    } u;
} bld_instr;

typedef enum bld_base_kind {
    BLD_BASE_IMAGE,
    BLD_BASE_STAGE,
    BLD_BASE_SCRATCH,
} bld_base_kind;

typedef struct bld_stage {
    size_t index;
    const char *name; /* lower case, NULL when unnamed */
    const char *original;
    int line;
    bld_base_kind base_kind;
    const char *base_image; /* BLD_BASE_IMAGE: reference after expansion */
    size_t base_stage;      /* BLD_BASE_STAGE */
    const char *platform;   /* "os/arch[/variant]" the stage builds for */
    bool platform_set;      /* FROM --platform was given */
    size_t *deps;           /* stage indexes this stage needs, ascending */
    size_t n_deps;
    bool runs; /* needed by the target */
    bld_instr *instrs;
    size_t n_instrs;
    bld_strv onbuild; /* triggers this stage leaves in its image */
} bld_stage;

typedef struct bld_plan {
    const char *filename;
    const char *syntax; /* "# syntax=" value or NULL */
    char escape;
    const char *build_platform, *target_platform;
    bld_kv *global_args; /* ARGs before the first FROM, resolved */
    size_t n_global_args;
    bld_kv *build_args; /* as given */
    size_t n_build_args;
    bld_stage *stages;
    size_t n_stages;
    size_t target; /* stage index */
    bld_strv warnings;
    void *priv;
} bld_plan;

/* What the engine knows about a pulled base image. */
typedef struct bld_base_info {
    const char *const *env; /* "K=V" */
    size_t n_env;
    const char *const *onbuild; /* trigger strings from the image config */
    size_t n_onbuild;
    const char *workdir; /* NULL or "" when unset */
    const char *user;
    const char *const *shell; /* NULL: default */
    size_t n_shell;
} bld_base_info;

/* Fills *out for image ref on platform and returns 0, or returns 1 when the
 * image is unknown (plan without it).  Pointers must stay valid until
 * bld_plan_parse returns. */
typedef int (*bld_base_resolver)(bld_base_info *out, void *ctx, const char *ref,
                                 const char *platform);

typedef struct bld_plan_opts {
    const char *target;            /* stage name or index; NULL: last stage */
    const char *const *build_args; /* "K=V" ("K" alone: unset) */
    size_t n_build_args;
    const char *platform;           /* target platform; NULL: build platform */
    const char *build_platform;     /* NULL: this host */
    bld_base_resolver resolve_base; /* optional */
    void *resolve_ctx;
    /* Named contexts "NAME=REF" (kiln build --build-context NAME=docker-image://REF):
     * a FROM or --from= naming NAME, when no earlier stage has that name,
     * means the image REF. */
    const char *const *named_images;
    size_t n_named_images;
} bld_plan_opts;

/* Parses a Dockerfile of len bytes (need not be NUL-terminated).  filename is
 * used in messages ("Dockerfile" when NULL); opts may be NULL.  On success
 * *out is a plan the caller frees with bld_plan_free().  Syntax and semantic
 * errors return KILN_EINVAL with "file:line:col: message" plus the offending
 * line and a caret. */
int bld_plan_parse(bld_plan **out, const char *text, size_t len, const char *filename,
                   const bld_plan_opts *opts, kiln_error **err);

/* Frees a plan and everything it points to.  Safe on NULL. */
void bld_plan_free(bld_plan *p);

/* The plan as JSON; NULL on allocation failure.  Caller frees with cJSON_Delete(). */
cJSON *bld_plan_to_json(const bld_plan *p);

/* Finds a stage by name (case-insensitive) or decimal index; NULL when none
 * (or when name_or_index is NULL). */
const bld_stage *bld_plan_stage(const bld_plan *p, const char *name_or_index);

/* Turns the ONBUILD triggers of a pulled base image (base->onbuild) into
 * instructions for stage `stage` of p, as they run right after its FROM:
 * expanded with the base's ENV (base->env) and nothing else in scope, and
 * with COPY --from / mount from= resolved against p's stages (their
 * dependencies are added to the stage).  ref names the image in messages.
 * *out (n_out entries, possibly 0) is owned by p and freed with it; splice the
 * instructions before the stage's own.  KILN_EINVAL for an invalid trigger. */
int bld_plan_parse_triggers(bld_instr **out, size_t *n_out, bld_plan *p, size_t stage,
                            const bld_base_info *base, const char *ref, kiln_error **err);

/* The mode a copied entry of mode `mode` (a directory when is_dir) gets from
 * --chmod=spec, octal or symbolic as chmod(1) ("go-w", "u=rw,g=r,o=r",
 * "a+X": X only on directories and entries that already have an execute
 * bit), as BuildKit applies it.  *out (may be NULL: validation only) gets the
 * permission bits (07777).  -1 when spec is not a valid mode. */
int bld_chmod_apply(const char *spec, unsigned mode, bool is_dir, unsigned *out);

/* Checks one ONBUILD trigger string (e.g. from an image config) without
 * expanding it: it must be a known instruction other than ONBUILD, FROM and
 * MAINTAINER with valid flags.  Sets *kind.  KILN_EINVAL when invalid. */
int bld_onbuild_check(bld_instr_kind *kind, const char *trigger, kiln_error **err);

/* The platform this host builds natively ("linux/amd64"). */
const char *bld_host_platform(void);

#endif
