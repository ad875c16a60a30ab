/* Internal interfaces shared by the files of the sandbox library: path
 * resolution confined to a root directory, tree removal and copying, the
 * overlay whiteout conventions, cgroups, user lookup and the child side of
 * sbx_run().  Nothing here is part of the public API; tests may use it. */
#ifndef BLD_SBX_INTERNAL_H
#define BLD_SBX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "error.h"
#include "fs.h"
#include "overlay.h" /* whiteouts and opaque dirs, used by snapshots and diffs */
#include "bld_sandbox.h"

/* ---- fsutil.c: confined path resolution ------------------------------- */

/* Test hook: when true, the O_NOFOLLOW component walk is used even where
 * openat2() exists. */
extern bool sbx_force_walk;

/* Test hook: when true, read-only binds are locked by remounting each
 * submount (the path for kernels before mount_setattr) even where
 * mount_setattr exists. */
extern bool sbx_force_remount_each;

/* True when openat2() with RESOLVE_IN_ROOT works on this kernel. */
bool sbx_have_openat2(void);

/* True when "/" is a mount point: false in a plain chroot, where the
 * sandbox's private mount namespace and pivot_root cannot work (preflight.c). */
bool sbx_root_is_mount_point(void);

/* Opens rel (a cleaned relative path, "" = the root) below rootfd as if
 * rootfd were "/": absolute symlinks and ".." never leave it, magic links are
 * refused.  flags are open(2) flags (O_CLOEXEC is added); with O_NOFOLLOW the
 * last component is not followed.  Returns the new fd or a negative kiln_code;
 * sys errno of the failure is left in errno (ENOENT for a missing path). */
int sbx_open_in_root(int rootfd, const char *rel, int flags, kiln_error **err);

/* Opens the parent directory of rel in root (creating missing directories
 * with mode 0755 when create is true; each creation is reported through
 * on_create(rel_prefix, ud) when given) and stores a pointer to the last
 * component of rel in *leaf.  rel must not be "". */
typedef int (*sbx_mkdir_cb)(int parentfd, const char *name, const char *rel_prefix, void *ud,
                            kiln_error **err);
int sbx_open_parent(int rootfd, const char *rel, bool create, sbx_mkdir_cb mkdir_cb, void *ud,
                    const char **leaf, kiln_error **err);

/* Copies one tree entry (name below sdir) to ddir/dname with data, mode,
 * ownership (when privileged), times and xattrs (overlay's own excluded);
 * directories are created empty (children are the caller's business).
 * Hard links between copied files are kept through the optional map. */
typedef struct sbx_inomap sbx_inomap;
sbx_inomap *sbx_inomap_new(void);
void sbx_inomap_free(sbx_inomap *m);
int sbx_copy_entry(int sdir, const char *name, int ddir, const char *dname, sbx_inomap *links,
                   kiln_error **err);
/* Copies xattrs from fd src to fd dst, skipping overlay's own. */
int sbx_copy_xattrs(int src, int dst, kiln_error **err);
/* True when an xattr name may be restored from a layer or copied between
 * trees: overlay's private namespaces are refused. */
bool sbx_xattr_allowed(const char *name);

/* ---- copyfs.c: copy-based rootfs (when overlay cannot be mounted) ----- */

/* Materialises the merged view of lowers (bottom first, overlay form) into
 * the empty directory dst. */
int sbx_copy_merge(const char *const *lowers, size_t n, const char *dst, kiln_error **err);
/* Writes into the empty directory upper the overlay-form difference between
 * the merged view of lowers and the tree rootfs; entries whose ctime is newer
 * than that of the file "<rootfs>.since" count as changed. */
int sbx_copy_diff(const char *const *lowers, size_t n, const char *rootfs, const char *upper,
                  kiln_error **err);

/* ---- snapshot.c ------------------------------------------------------- */

/* Removes interrupted unpacks (unlocked tmp-* dirs) under data_dir/snapshots. */
int sbx_snapshot_clean_tmp(const char *data_dir, kiln_error **err);

/* ---- cgroup.c, cgroup_dev.c ------------------------------------------ */

/* Limits of one step's cgroup (0 = none). */
typedef struct sbx_limits {
    uint64_t memory_bytes; /* memory, and memory + swap: no swap beyond it */
    uint64_t pids_max;
    unsigned cpu_weight; /* v2 scale 1..10000 (v1 shares = weight * 1024 / 100); 0 = 100 */
} sbx_limits;

#define SBX_CG_MAX 6
typedef struct sbx_cgroup {
    int version;             /* hierarchy carrying the limits: 0 none, 1 v1, 2 v2 */
    char *dirs[SBX_CG_MAX];  /* created cgroup dirs (v1 controllers, the v2 one) */
    char *procs[SBX_CG_MAX]; /* their cgroup.procs files, for the child to join */
    size_t n;
    int mem_dir, pids_dir;        /* index in dirs holding the memory / pids files, -1 if none */
    int v1_devices_dir;           /* index of the v1 devices dir, -1 if none */
    int v2_dir;                   /* index of the unified-hierarchy dir, -1 if none */
    bool memory, pids, cpu;       /* which limits are enforced */
    bool devices_v1, devices_bpf; /* which device walls are up */
} sbx_cgroup;

/* Describes what cgroup support this process has (for the preflight). */
void sbx_cgroup_probe(bld_preflight_info *pf);
/* Creates the cgroup(s) of one step: always (so the step's processes are
 * never counted in the builder's own cgroup), wherever this process may
 * create cgroups: on each v1 controller among memory, pids, cpu and devices
 * and on the unified hierarchy.  Applies the limits and the device
 * allow-list (v1 devices, v2 BPF program); cg tells which took effect.
 * Fails only on errors that are not "this host cannot". */
int sbx_cgroup_create(sbx_cgroup *cg, const sbx_limits *lim, kiln_error **err);
/* True when the step's memory cgroup recorded an OOM kill. */
bool sbx_cgroup_oom(const sbx_cgroup *cg);
/* True when a fork in the step failed on the pids limit. */
bool sbx_cgroup_pids_hit(const sbx_cgroup *cg);
/* SIGKILLs every task left in the cgroup, then removes it (retrying while the
 * kernel finishes the exits).  Safe on an empty struct. */
void sbx_cgroup_destroy(sbx_cgroup *cg);
/* Ties this process's step cgroups to data_dir (their names carry a tag of
 * its identity), so that stale cleanup only ever touches cgroups of builders
 * of the same data dir. */
void sbx_cgroup_set_owner(const char *data_dir);
/* Removes the cgroups left by dead builders of the same data dir. */
void sbx_cgroup_cleanup_stale(void);

/* cgroup_dev.c: the device allow-list (runc's default).  v1: writes it into
 * the devices controller dir; false on failure. */
bool sbx_devices_v1(const char *dir);
/* v2: loads the BPF_PROG_TYPE_CGROUP_DEVICE program (fd, close-on-exec) or
 * -1 with errno; the verifier's log goes to log when given. */
int sbx_devices_bpf_load(char *log, size_t log_size);
/* Attaches the program to the cgroup dir (BPF_F_ALLOW_MULTI); -1 with errno. */
int sbx_devices_bpf_attach(int prog_fd, const char *dir);

/* ---- user.c ----------------------------------------------------------- */

#define SBX_MAX_GROUPS 64
typedef struct sbx_user {
    uid_t uid;
    gid_t gid;
    gid_t groups[SBX_MAX_GROUPS];
    size_t ngroups;
    char home[256];
} sbx_user;

/* Resolves a USER spec ("name", "uid", "name:group", "uid:gid", "" = root)
 * against passwd and group files of the current root (paths given for
 * tests).  Unknown names fail with KILN_EINVAL; unknown numeric ids are
 * accepted with gid 0 (Docker's behaviour). */
int sbx_user_resolve(sbx_user *out, const char *spec, const char *passwd_path,
                     const char *group_path, kiln_error **err);

#endif
