/* Internal to sbx_run(): the plan the builder prepares before forking (so the
 * children mostly make system calls with ready-made arguments), the messages
 * the sandboxed children send back over the report pipe, and the entry points
 * of the child side. */
#ifndef BLD_SBX_RUN_H
#define BLD_SBX_RUN_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "bld_sandbox.h"
#include "sbx_internal.h"

/* Report pipe messages; each is written with one write() (< PIPE_BUF, so
 * atomic) by the monitor, init or the command child before exec. */
enum {
    SBX_MSG_PID = 1, /* value: host pid of init */
    SBX_MSG_ERROR,   /* setup failed: code, sys_errno, text */
    SBX_MSG_STUB,    /* text: mount point created in the rootfs (removed afterwards) */
    SBX_MSG_EXIT,    /* value: wait status of the command */
    SBX_MSG_READY,   /* init: the sandbox is set up, the command starts */
};

typedef struct sbx_msg {
    int type;
    int code;
    int sys_errno;
    int value;
    char text[2048];
} sbx_msg;

typedef struct sbx_mountplan {
    const sbx_mount *m;
    char target[PATH_MAX];     /* cleaned, relative to the rootfs */
    int srcfd;                 /* bind: O_PATH dir/file; secret: O_RDONLY file; -1 otherwise */
    char *cache_dir;           /* cache: host dir to bind */
    int lockfd;                /* cache: flock held for the step, -1 if none */
    char *ovl_opts;            /* writable bind (overlay mode): overlay options */
    char *copy_dir;            /* writable bind (copy mode): private copy to bind */
    char *layer_opts;          /* bind from layers (overlay mode): options, relative to work */
    char *layer_mnt;           /* … and where init mounts that overlay before binding from it */
    char source_rel[PATH_MAX]; /* … and the path inside it */
} sbx_mountplan;

typedef struct sbx_plan {
    const bld_run_spec *spec;
    bool rootless;
    bool overlay;
    char *work;         /* spec->work_dir, absolute */
    char *rootfs;       /* work/rootfs: overlay mount point, or the copy */
    char *ovl_opts;     /* lowerdir=l/…, relative to work (mounted after chdir(work)) */
    char *hosts;        /* generated /etc/hosts */
    char *resolv;       /* /etc/resolv.conf for host or private network, or NULL */
    bld_netns *net;     /* private network: the one the step joins (spec's or own_net) */
    bld_netns *own_net; /* private network without spec->netns: this step's alone */
    int net_fd;         /* private network: its namespace (borrowed from net) */
    int net_userfd;     /* … and the user namespace owning it */
    int go_r, go_w;     /* private network: the builder tells init the network is up */
    char *secrets;      /* work/s: tmpfs staging for secrets inside the child */
    sbx_mountplan *mounts;
    size_t n_mounts;
    sbx_cgroup cg;
    char **argv; /* final argv */
    const char *hostname;
    int cap_last; /* highest capability number of the kernel */
    uid_t host_uid;
    gid_t host_gid;
    pid_t parent; /* pid of the builder */
    int report_w, out_w, err_w, ack_r;
} sbx_plan;

/* /dev/shm of a RUN without --shm-size: Docker's default. */
#define SBX_SHM_DEFAULT ((uint64_t)64 << 20)

/* After fork: closes every fd but keep[0..n-1] (host files must not reach
 * the step, nor one build's namespaces another build's processes). */
void sbx_close_others(const int *keep, size_t n);

/* The monitor process (never returns). */
_Noreturn void sbx_child_main(sbx_plan *p);

/* In init: sends a message on the report pipe. */
void sbx_report(const sbx_plan *p, int type, int code, int sys_errno, int value, const char *fmt,
                ...) __attribute__((format(printf, 6, 7)));

/* In init, in the new mount namespace: builds the rootfs tree (overlay or the
 * copy, /proc, /dev, /sys, /etc files, RUN mounts) and pivots into it.  On
 * failure an SBX_MSG_ERROR has been sent. */
int sbx_rootfs_setup(sbx_plan *p);

/* Creates (reporting stubs) and opens the mount point rel inside the rootfs
 * as an O_PATH fd; dir selects a directory or an empty file. */
int sbx_mount_point(sbx_plan *p, int rootfd, const char *rel, bool dir);
/* Makes the mount at path and every mount below it nosuid and nodev, and
 * read-only when ro: mount_setattr(AT_RECURSIVE) where the kernel has it
 * (5.12), else a remount of each one listed in /proc/self/mountinfo (keeping
 * the flags a user namespace inherited locked).  -1 with errno on failure. */
int sbx_lock_mount(const char *path, bool ro);

/* mounts.c: builder side (cache dirs and locks, sources) and child side. */
int sbx_mounts_prepare(sbx_plan *p, kiln_error **err);
void sbx_mounts_release(sbx_plan *p);
int sbx_mounts_apply(sbx_plan *p, int rootfd);

/* net.c: the private network (see there). */
#define SBX_NET_DNS        "169.254.1.1" /* resolver address inside, forwarded by pasta */
#define SBX_NET_NOBODY     65534         /* pasta's user when the builder is root */
#define SBX_NET_NOBODY_STR "65534"
/* Finds pasta ($KILN_PASTA, else PATH, else /usr/bin); false if missing. */
bool sbx_net_find_pasta(char *out, size_t n);
/* In a mount namespace of the caller's own (made private): mounts a tmpfs
 * on /dev holding null, zero, urandom and net/tun (0666), for pasta, which
 * opens the tun device after dropping to nobody.  -1 with errno. */
int sbx_net_own_dev(void);
/* Builder side, before forking: the network the step joins (spec->netns, or
 * a bld_netns of its own, freed with the plan) and the RUN's resolv.conf. */
int sbx_net_prepare(sbx_plan *p, kiln_error **err);
/* Builder side: waits until pasta has configured n's namespace (at once
 * when it already has); KILN_ECANCELED when *cancel is set first, KILN_EIO
 * naming what pasta said when it failed or has ended since. */
int sbx_net_wait(bld_netns *n, const atomic_bool *cancel, kiln_error **err);
/* netfilter.c: installs the egress filter in the current network namespace
 * (CAP_NET_ADMIN over it needed).  -1 with errno on failure. */
int sbx_net_filter(bool dns_forward);

/* Brings the loopback interface up in a fresh network namespace; -1 on
 * failure (errno set). */
int sbx_loopback_up(void);

/* Installs the RUN seccomp filter on the calling process (see seccomp.c);
 * -1 with errno on failure (EINVAL: the kernel has no seccomp filters). */
int sbx_seccomp_install(void);

/* Probes whether overlay can be mounted (in a forked child with a private
 * mount namespace), using a temp dir below tmp_parent.  Returns 1 / 0, and
 * the errno of the failed mount in *why. */
int sbx_probe_overlay(const char *tmp_parent, int *why);

#endif
