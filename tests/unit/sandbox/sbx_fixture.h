/* Fixtures for the sandbox tests: temp dirs, layers written with libarchive
 * (including hostile ones), a busybox base image unpacked as a snapshot, and
 * a sbx_run() wrapper collecting the output. */
#ifndef SBX_FIXTURE_H
#define SBX_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "bld_sandbox.h"
#include "bld_snapshot.h"
#include "buf.h"
#include "kt_util.h"

/* Exits 77 (skip) unless running as root with a usable sandbox; with
 * sanitizers the namespaced children still work (fork, then exec of a
 * static binary). */
void fx_require_sandbox(void);

/* One tar member.  type: 'f' file (data = content), 'd' dir, 'l' symlink
 * (data = target), 'h' hard link (data = target), 'c' char device (data =
 * "maj,min"), 'b' block device (same). */
typedef struct fx_entry {
    char type;
    const char *path;
    const char *data;
    unsigned mode; /* 0: 0644 files, 0755 dirs */
    int uid, gid;
    long mtime;        /* 0: 1000000000 */
    const char *xattr; /* optional "name=value" */
} fx_entry;

enum { FX_TAR = 0, FX_GZIP = 1, FX_ZSTD = 2 };
/* Writes a layer blob; its blob digest and DiffID go to digest/diff_id when
 * non-NULL. */
int fx_layer(const char *out, const fx_entry *e, size_t n, int compression, char *digest,
             char *diff_id);

/* A data dir with the busybox base image (bin/busybox + applet links,
 * etc/passwd, etc/group, tmp, root, proc, dev, sys, /probe) unpacked. */
typedef struct fx_base {
    char *tmp;   /* temp root of everything below */
    char *data;  /* data dir */
    char *layer; /* the layer blob */
    char chain[80];
    bld_snapshot_stack *stack;
    int step; /* counter for upper/work dir names */
} fx_base;

int fx_base_init(fx_base *b, const fx_entry *extra, size_t n_extra);
void fx_base_dispose(fx_base *b);
/* Fresh upper and work dir paths for one step (caller frees). */
void fx_step_dirs(fx_base *b, char **upper, char **work);

/* Collected output of one run. */
typedef struct fx_out {
    kiln_buf out, err; /* lines joined with '\n' */
    size_t lines;
    double first_line_s; /* seconds from start to the first line */
    double start;
} fx_out;
void fx_out_init(fx_out *o);
void fx_out_dispose(fx_out *o);
void fx_on_output(void *ud, int stream, const char *line, size_t len);
double fx_now(void);

/* A spec with the base stack as lowers and the given shell command. */
void fx_spec(bld_run_spec *s, fx_base *b, const char *shell_cmd, fx_out *o, char **upper,
             char **work);

/* Value of "key=" on its own line in text (static buffer), NULL if absent. */
const char *fx_value(const char *text, const char *key);
/* Number of lines "key=value" with exactly this value… or any value (NULL). */
int fx_count(const char *text, const char *key, const char *value);

/* Path of the probe binary. */
const char *fx_probe(void);
/* Copies the probe into a new world-readable temp dir, which fx_probe()
 * names from then on: a user other than the one who built it may be unable
 * to read the build tree (a clone under /root).  0 or -1. */
int fx_probe_copy(void);
/* Removes that copy; fx_probe() names the built one again. */
void fx_probe_copy_remove(void);

/* Count of mounts in /proc/self/mountinfo whose mount point or source
 * mentions s. */
int fx_mounts_mentioning(const char *s);
/* Number of processes whose command line contains s. */
int fx_procs_matching(const char *s);

#endif
