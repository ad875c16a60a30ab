/* The sandbox in a plain chroot, where "/" is not a mount point: its mounts
 * cannot be made private nor pivot_root'ed from, so the preflight (the
 * `sandbox` check of `kiln status`) must say the sandbox is unusable and
 * name exactly that; in a chroot whose directory is a mount point it must
 * not.  Each case runs in a forked child with a private mount namespace
 * (nothing reaches the host's).  Needs root: exits 77 otherwise. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kt.h"
#include "sbx_fixture.h"
#include "sbx_internal.h"

/* bld_preflight run inside a chroot of dir (made a mount point first when
 * bind is true); 0 and *out filled, or -1. */
static int preflight_in_chroot(const char *dir, bool bind, bld_preflight_info *out)
{
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        char proc[600];
        snprintf(proc, sizeof(proc), "%s/proc", dir);
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            (bind && mount(dir, dir, NULL, MS_BIND | MS_REC, NULL) < 0) ||
            mount("proc", proc, "proc", 0, NULL) < 0 || chroot(dir) < 0 || chdir("/") < 0)
            _exit(2);
        bld_preflight_info pf;
        if (bld_preflight(&pf, "/data", NULL) < 0)
            _exit(3);
        _exit(write(pfd[1], &pf, sizeof(pf)) == (ssize_t)sizeof(pf) ? 0 : 4);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], out, sizeof(*out));
    close(pfd[0]);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "  chroot child failed (status %d)\n", pid > 0 ? st : -1);
        return -1;
    }
    return n == (ssize_t)sizeof(*out) ? 0 : -1;
}

KT_TEST(plain_chroot_is_reported_precisely)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skip: needs root\n");
        exit(77);
    }
    if (!sbx_root_is_mount_point()) {
        fprintf(stderr, "skip: this test itself runs in a plain chroot\n");
        exit(77);
    }
    char *t = kt_tmpdir("sbx");
    char sub[600];
    snprintf(sub, sizeof(sub), "%s/proc", t);
    KT_REQUIRE(mkdir(sub, 0755) == 0);
    snprintf(sub, sizeof(sub), "%s/data", t);
    KT_REQUIRE(mkdir(sub, 0755) == 0);

    bld_preflight_info pf;
    KT_REQUIRE(preflight_in_chroot(t, false, &pf) == 0);
    KT_EXPECT(!pf.root_mount);
    KT_EXPECT(!pf.usable);
    KT_EXPECT_STR(pf.isolation, "none");
    if (strstr(pf.missing, "/ as a mount point") == NULL)
        KT_FAIL("missing does not name the root mount: %s", pf.missing);

    KT_REQUIRE(preflight_in_chroot(t, true, &pf) == 0);
    KT_EXPECT(pf.root_mount);
    KT_EXPECT(strstr(pf.missing, "/ as a mount point") == NULL);
    if (pf.namespaces)
        KT_EXPECT(pf.usable);
    kt_rmrf(t);
    free(t);
}
