/* The RUN sandbox: one command in new mount, PID, IPC and UTS namespaces (a
 * network namespace: with only loopback for network=none, with outbound
 * access through pasta for network=private; a user namespace
 * mapping the caller to root when the builder is not root), over an overlay
 * of the given lower dirs with a fresh upper dir that becomes the step's
 * diff (whiteouts in overlay form, handed to the pusher as is).
 *
 * Process tree of one sbx_run():
 *   builder thread ── fork ─► monitor (host PID ns, joins the step's cgroup,
 *                              unshares the namespaces, dies with the caller
 *                              thread: PR_SET_PDEATHSIG)
 *                              └─ fork ─► init (PID 1: mounts, pivot_root,
 *                                          dies with the monitor)
 *                                          └─ fork ─► the command
 * All mounts exist only in the step's mount namespace and all processes in
 * its PID namespace, so when init dies (end of the command, timeout, cancel,
 * or the builder being killed) the kernel removes every process and mount of
 * the step.  sbx_run() must be called from a thread that stays alive until it
 * returns (the death signal follows the forking thread).
 *
 * The command runs with the builder's file descriptors closed, Docker's
 * default capabilities minus CAP_MKNOD, a seccomp deny list, parts of /proc
 * read-only or hidden, and the image's /etc/passwd and /etc/group deciding
 * USER; in its own cgroup(s) with the device allow-list of runc's default
 * spec; on a rootfs and mounts that are all nodev and nosuid except the
 * /dev the sandbox makes itself (see README.md, "Security profile").  Rootless, only uid 0 exists inside: a non-root USER is refused. */
#ifndef BLD_SANDBOX_H
#define BLD_SANDBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "runopts.h"

/* ---- preflight -------------------------------------------------------- */

typedef struct bld_preflight_info {
    bool root;            /* running as uid 0 */
    bool namespaces;      /* mount, PID, IPC, UTS and network namespaces can be created */
    bool root_mount;      /* "/" is a mount point (not so in a plain chroot) */
    bool userns;          /* user namespaces can be created (needed when not root) */
    bool overlay;         /* overlay mounts work in a fresh mount namespace */
    bool openat2;         /* RESOLVE_IN_ROOT available (else the O_NOFOLLOW walk is used) */
    bool pidfd;           /* pidfd_open available (else plain kill by pid) */
    bool seccomp;         /* the RUN seccomp filter can be installed */
    int cgroup_version;   /* cgroup hierarchy used for limits: 0 none, 1 v1, 2 v2 */
    bool cgroup_memory;   /* memory limits can be enforced */
    bool cgroup_pids;     /* pid limits can be enforced */
    bool cgroup_devices;  /* a device allow-list can be enforced (v1 devices or v2 BPF) */
    bool usable;          /* RUN can work at all */
    char isolation[16];   /* "root", "rootless" or "none" */
    char rootfs_mode[16]; /* "overlay" or "copy" */
    char cgroups[160];    /* e.g. "v1: memory pids; v2: no memory/pids controllers" */
    bool net_private;     /* RUN's private network (pasta + egress filter) works */
    char network[320];    /* network modes RUN can use, and why private is not among them */
    char missing[768];    /* "; "-separated list of what is missing and why, "" if nothing */
} bld_preflight_info;

/* Probes the kernel and this process's privileges (forking short-lived
 * children; an overlay test mount is made under data_dir/sandbox inside a
 * private mount namespace).  Never fails because a feature is missing: that
 * is what the result reports. */
int bld_preflight(bld_preflight_info *out, const char *data_dir, kiln_error **err);

/* The result as a JSON object (for `kiln status`); caller frees.  NULL on
 * allocation failure. */
char *bld_preflight_json(const bld_preflight_info *pf);

/* ---- RUN -------------------------------------------------------------- */

typedef enum sbx_network {
    SBX_NET_NONE = 0, /* own network namespace, loopback only */
    SBX_NET_HOST,     /* the host's network; /etc/resolv.conf, /etc/hosts provided (the
                       * caller decides whether that is allowed: network.host entitlement) */
    SBX_NET_PRIVATE,  /* own network namespace with outbound access through pasta; the
                       * host's loopback and link-local addresses unreachable */
} sbx_network;

/* A private network (SBX_NET_PRIVATE) that RUN steps join: a network
 * namespace with loopback up and the egress filter installed (see README.md,
 * "Network"), the RUNs' /etc/resolv.conf, and pasta attached to it by a
 * thread of its own.  The engine makes one per build, the first time a RUN
 * of the build needs it, and frees it when the build ends: the RUN steps of
 * one build share it (their processes leave it with their PID namespace),
 * two builds never do.  Opaque; thread-safe. */
typedef struct bld_netns bld_netns;

/* Creates the namespace and its filter (a few ms, in a forked child) and
 * starts pasta without waiting for it: a RUN joining the network waits
 * until pasta has configured it.  resolv_conf: the host file the RUNs'
 * /etc/resolv.conf is derived from (NULL = /etc/resolv.conf).
 * KILN_EPRECOND when pasta is not installed or nf_tables is missing. */
int bld_netns_new(bld_netns **out, const char *resolv_conf, kiln_error **err);
/* Ends the network and returns at once: pasta is killed right away and
 * reaped by n's thread, which then closes the namespace (gone once no RUN
 * is in it any more) and frees n.  Safe on NULL.  No sbx_run() may still
 * use n. */
void bld_netns_free(bld_netns *n);

typedef enum bld_rootfs_mode {
    BLD_ROOTFS_AUTO = 0, /* overlay when it can be mounted (probed once per process, and a
                          * step whose overlay mount fails is retried in copy mode) */
    BLD_ROOTFS_OVERLAY,
    BLD_ROOTFS_COPY, /* copy the lowers, diff afterwards: identical diff, slower */
} bld_rootfs_mode;

typedef enum sbx_mount_type {
    SBX_MOUNT_BIND = 0,
    SBX_MOUNT_CACHE,
    SBX_MOUNT_TMPFS,
    SBX_MOUNT_SECRET,
    SBX_MOUNT_SSH, /* source: a unix socket of the builder, bound on target (--ssh) */
} sbx_mount_type;

typedef enum sbx_cache_sharing {
    SBX_CACHE_SHARED = 0, /* concurrent users share one dir */
    SBX_CACHE_PRIVATE,    /* a concurrent user gets a separate dir */
    SBX_CACHE_LOCKED,     /* a concurrent user waits */
} sbx_cache_sharing;

/* One RUN --mount.  Strings are borrowed. */
typedef struct sbx_mount {
    sbx_mount_type type;
    const char *target;      /* path inside the rootfs (required) */
    const char *source;      /* bind: host dir given by the engine (context or stage
                              * rootfs); secret: host file with the secret */
    const char *source_path; /* bind: path inside source, resolved confined to it; NULL = "/" */
    const char *const *source_layers; /* bind from a stage: instead of source, its layer dirs
                                       * (bottom first), mounted as their merged view */
    size_t n_source_layers;
    bool writable;  /* bind: writes allowed (and discarded afterwards) */
    const char *id; /* cache: cache id (NULL = target) */
    sbx_cache_sharing sharing;
    bool readonly; /* cache: mount read-only */
    uid_t uid;     /* cache (at creation) and secret: owner */
    gid_t gid;
    mode_t mode;   /* cache: dir mode (0 = 0755); secret: file mode (0 = 0400) */
    uint64_t size; /* tmpfs: size limit in bytes (0 = half of RAM) */
} sbx_mount;

/* Output callback: one line of the command's stdout (stream 1) or stderr
 * (stream 2) without its newline, called on the sbx_run() thread while the
 * command runs.  Lines longer than BLD_RUN_LINE_MAX arrive in pieces. */
typedef void (*bld_output_fn)(void *ud, int stream, const char *line, size_t len);
#define BLD_RUN_LINE_MAX (64 * 1024)

typedef struct bld_run_spec {
    const char *data_dir;      /* $KILN_DATA (cache mounts under data_dir/cache-mounts) */
    const char *const *lowers; /* bottom first: snapshot dirs, then earlier steps' upper dirs */
    size_t n_lowers;
    const char *upper_dir;    /* new or empty dir: receives the diff */
    const char *work_dir;     /* new or empty scratch dir on upper_dir's filesystem, best
                                  * under data_dir/sandbox/ (bld_sandbox_cleanup_stale());
                                  * removed when sbx_run() returns */
    const char *const *argv;  /* exec form (NULL-terminated), or NULL for shell form */
    const char *shell_cmd;    /* shell form: run as shell + [shell_cmd] */
    const char *const *shell; /* SHELL argv (NULL-terminated); NULL = /bin/sh -c */
    const char *const *env;   /* "KEY=VALUE", NULL-terminated; PATH and HOME added if absent */
    const char *cwd;          /* WORKDIR, created if missing; NULL = "/" */
    const char *user;         /* USER: "name", "uid", "name:group", "uid:gid"; NULL = root */
    const char *hostname;     /* NULL = "kiln" */
    sbx_network network;
    bld_netns *netns;        /* private network: the network to join (borrowed; see bld_netns);
                       * NULL = one for this step alone, made and freed by sbx_run() */
    const char *resolv_conf; /* host file for /etc/resolv.conf (host network, and private
                              * without netns); NULL = /etc/resolv.conf */
    const sbx_mount *mounts;
    size_t n_mounts;
    uint64_t timeout_ms;   /* 0 = none */
    uint64_t memory_bytes; /* memory (swap included: none beyond it); 0 = no limit */
    uint64_t pids_max;     /* processes and threads at once; 0 = no limit */
    unsigned cpu_weight;   /* the step's CPU weight as one group (v2 scale 1..10000); 0 = 100 */

    /* --add-host: lines appended to the generated /etc/hosts ("IP\tNAME\n"
     * each); NULL = none.  --ulimit: setrlimit'd in the command before exec
     * (hard values never above the builder's own: the caller checks).
     * --shm-size: bytes of /dev/shm; 0 = 64 MiB (Docker's default). */
    const char *extra_hosts;
    const kiln_ulimit *ulimits;
    size_t n_ulimits;
    uint64_t shm_bytes;

    bld_rootfs_mode rootfs;
    bld_output_fn on_output; /* may be NULL (output discarded) */
    void *output_ud;
    const atomic_bool *cancel; /* set from any thread to kill the step; may be NULL */
} bld_run_spec;

typedef struct bld_run_result {
    int exit_code; /* the command's exit status, or -1 when killed by a signal */
    int signal;    /* the signal that killed it, 0 if none */
    bool timed_out;
    bool canceled;
    bool oom_killed;      /* the memory cgroup killed something: the step was ended */
    bool pids_limited;    /* a fork failed on the pids limit: the step was ended */
    bool limits_enforced; /* memory/pid limits requested were applied */
    bld_rootfs_mode rootfs_used;
    uint64_t duration_ms;
    uint64_t setup_us; /* from the start of the step's setup (work dir, cgroup, namespaces,
                        * network, mounts) until the command was about to start */
} bld_run_result;

/* Runs one command in the sandbox and waits for it, streaming its output.
 * Returns 0 when the command ran (whatever its exit status: see out),
 * KILN_ETIMEDOUT / KILN_ECANCELED when it was killed for the timeout or the
 * cancel flag (out filled as well), KILN_ENOSPC when it was ended for its
 * memory or pids limit (the message names the limit: "RUN exceeded its
 * memory limit of 2 GiB", "RUN exceeded its limit of 512 processes"; the
 * step is killed as soon as the cgroup records the event), KILN_ENOENT when the executable was not
 * found, KILN_EINVAL for a bad spec (unknown user, mount target escaping…),
 * other codes when the sandbox could not be set up.  When it returns, no
 * process and no mount of the step remains; the upper dir holds the diff. */
int sbx_run(const bld_run_spec *spec, bld_run_result *out, kiln_error **err);

/* Removes what a killed builder left under data_dir: scratch dirs in
 * data_dir/sandbox, interrupted snapshot unpacks, empty cgroups of dead
 * builders.  Anything still locked by a live process is left alone.  Call at
 * service start. */
int bld_sandbox_cleanup_stale(const char *data_dir, kiln_error **err);

#endif
