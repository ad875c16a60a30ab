/* Devices: nodes a base layer carries (a char device like /dev/null, and
 * char and block devices of an unassigned major, so nothing on the host is
 * ever touched) stay in the image but cannot be opened for reading or
 * writing from RUN, in overlay and in copy mode, while the /dev the sandbox
 * makes works.  Each device cgroup wall (v1 devices controller, v2 BPF
 * program) is also checked on its own, where the host has it. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "sbx_fixture.h"
#include "sbx_internal.h"

static fx_base base;

/* 240-254 are the "local/experimental use" majors: no driver behind them. */
static const fx_entry devnodes[] = {
    {'c', "hostnull", "1,3", 0666, 0, 0, 0, NULL},
    {'c', "hostchr", "240,0", 0666, 0, 0, 0, NULL},
    {'b', "hostblk", "240,0", 0660, 0, 0, 0, NULL},
};

__attribute__((constructor)) static void setup(void)
{
    fx_require_sandbox();
    if (fx_base_init(&base, devnodes, KILN_ARRAY_SIZE(devnodes)) < 0) {
        fprintf(stderr, "cannot build the base\n");
        exit(1);
    }
}

__attribute__((destructor)) static void teardown(void)
{
    fx_base_dispose(&base);
}

static bool denied(int e)
{
    return e == EACCES || e == EPERM;
}

/* "PATH read=E write=E" from kiln-probe open. */
static void errnos(const char *out, const char *path, int *r, int *w)
{
    char key[64];
    snprintf(key, sizeof(key), "%s read=", path);
    const char *l = strstr(out, key);
    *r = *w = -1;
    if (l)
        sscanf(l + strlen(path), " read=%d write=%d", r, w);
}

static bool node_is(const char *path, mode_t type, unsigned ma, unsigned mi)
{
    struct stat st;
    return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == type && major(st.st_rdev) == ma &&
           minor(st.st_rdev) == mi;
}

KT_TEST(layer_devices_cannot_be_opened_from_run)
{
    const bld_rootfs_mode modes[] = {BLD_ROOTFS_OVERLAY, BLD_ROOTFS_COPY};
    for (size_t m = 0; m < 2; m++) {
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base,
                "/probe open /hostnull /hostchr /hostblk /dev/null /dev/zero /dev/full "
                "/dev/urandom /dev/ptmx; chmod 0600 /hostnull",
                &o, &upper, &work);
        s.rootfs = modes[m];
        bld_run_result res;
        kiln_error *err = NULL;
        KT_EXPECT_INT(sbx_run(&s, &res, &err), 0);
        kiln_error_free(&err);
        fprintf(stderr, "  %s mode:\n%s", m ? "copy" : "overlay", o.out.data);
        static const char *const layer[] = {"/hostnull", "/hostchr", "/hostblk"};
        for (size_t i = 0; i < KILN_ARRAY_SIZE(layer); i++) {
            int r, w;
            errnos(o.out.data, layer[i], &r, &w);
            KT_EXPECT(denied(r));
            KT_EXPECT(denied(w));
        }
        static const char *const ok[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/urandom",
                                         "/dev/ptmx"};
        for (size_t i = 0; i < KILN_ARRAY_SIZE(ok); i++) {
            int r, w;
            errnos(o.out.data, ok[i], &r, &w);
            KT_EXPECT_INT(r, 0);
            KT_EXPECT_INT(w, 0);
        }
        /* Fidelity: the changed node is in the diff as the same device. */
        char p[600];
        snprintf(p, sizeof(p), "%s/hostnull", upper);
        KT_EXPECT(node_is(p, S_IFCHR, 1, 3));
        struct stat st;
        KT_EXPECT(lstat(p, &st) == 0 && (st.st_mode & 07777) == 0600);
        fx_out_dispose(&o);
        kt_rmrf(upper);
        free(upper), free(work);
    }
    /* … and the base layer's snapshot still holds all three. */
    const char *const *dirs = bld_snapshot_stack_dirs(base.stack);
    size_t n = bld_snapshot_stack_len(base.stack);
    KT_REQUIRE(n == 2);
    char p[600];
    snprintf(p, sizeof(p), "%s/hostnull", dirs[1]);
    KT_EXPECT(node_is(p, S_IFCHR, 1, 3));
    snprintf(p, sizeof(p), "%s/hostchr", dirs[1]);
    KT_EXPECT(node_is(p, S_IFCHR, 240, 0));
    snprintf(p, sizeof(p), "%s/hostblk", dirs[1]);
    KT_EXPECT(node_is(p, S_IFBLK, 240, 0));
    /* … out of reach of other users of the host (the nodes keep the image's
     * modes, 0666 here). */
    struct stat st;
    snprintf(p, sizeof(p), "%s/snapshots", base.data);
    KT_EXPECT(stat(p, &st) == 0 && (st.st_mode & 077) == 0);
}

/* In a child: joins the one cgroup given (or none), makes device nodes on a
 * fresh tmpfs of a private mount namespace (so no nodev mount is involved)
 * and reports open(2)'s errno per node as exit-status bits: 1 null opened,
 * 2 240:0 char refused with EPERM, 4 240:0 block refused with EPERM, 8 the
 * same char node gave ENXIO (no driver: nothing stopped the open). */
static int probe_in(const char *procs, const char *tmp)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (procs) {
            int fd = open(procs, O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, "0", 1) != 1)
                _exit(100);
            close(fd);
        }
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", tmp, "tmpfs", 0, "size=64k") < 0)
            _exit(101);
        char n[600], c[600], b[600];
        snprintf(n, sizeof(n), "%s/n", tmp);
        snprintf(c, sizeof(c), "%s/c", tmp);
        snprintf(b, sizeof(b), "%s/b", tmp);
        if (mknod(n, S_IFCHR | 0666, makedev(1, 3)) < 0 ||
            mknod(c, S_IFCHR | 0666, makedev(240, 0)) < 0 ||
            mknod(b, S_IFBLK | 0666, makedev(240, 0)) < 0)
            _exit(102);
        int bits = 0, fd = open(n, O_RDWR | O_CLOEXEC);
        if (fd >= 0)
            bits |= 1, close(fd);
        fd = open(c, O_RDONLY | O_CLOEXEC);
        bits |= fd < 0 && errno == EPERM ? 2 : fd < 0 && errno == ENXIO ? 8 : 0;
        fd = open(b, O_RDONLY | O_CLOEXEC);
        bits |= fd < 0 && errno == EPERM ? 4 : 0;
        _exit(bits);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

KT_TEST(device_cgroup_walls_each_deny_unlisted_devices)
{
    char *tmp = kt_tmpdir("sbx");
    KT_EXPECT_INT(probe_in(NULL, tmp), 1 | 8); /* no wall: the open reaches the (absent) driver */
    sbx_cgroup cg;
    sbx_limits lim = {0};
    KT_REQUIRE(sbx_cgroup_create(&cg, &lim, NULL) == 0);
    if (cg.devices_v1) {
        char *procs = cg.procs[cg.v1_devices_dir];
        KT_EXPECT_INT(probe_in(procs, tmp), 1 | 2 | 4);
    } else {
        fprintf(stderr, "  no cgroup v1 devices controller here: that wall not exercised\n");
    }
    if (cg.devices_bpf) {
        KT_EXPECT_INT(probe_in(cg.procs[cg.v2_dir], tmp), 1 | 2 | 4);
    } else {
        fprintf(stderr, "  no cgroup v2 BPF device program here: that wall not exercised\n");
    }
    sbx_cgroup_destroy(&cg);
    kt_rmrf(tmp);
    free(tmp);
}
