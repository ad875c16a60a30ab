/* Rootless mode: a builder that is not root unpacks the base (ownership not
 * restored, opaque markers as user.overlay.opaque) and runs RUN in a user
 * namespace where it is root; its writes land in the upper dir owned by the
 * real (unprivileged) user.  As root, the test drops to nobody in a child;
 * exits 77 when user namespaces or overlay in them are unavailable. */
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "sbx_fixture.h"

#define NOBODY 65534

static int become_nobody(void)
{
    if (geteuid() != 0)
        return 0;
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
        setresuid(NOBODY, NOBODY, NOBODY) < 0)
        return -1;
    /* Changing credentials made us non-dumpable, which makes /proc/self
     * root's: a user started as nobody would not be. */
    return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* Two RUNs joining one private network, rootless: each enters the user
 * namespace owning it (the same uid map as a RUN of its own) and the same
 * network namespace. */
static int private_network(fx_base *b, const bld_preflight_info *pf)
{
    if (!pf->net_private) {
        fprintf(stderr, "  skip: rootless private network unavailable: %s\n", pf->network);
        return 0;
    }
    bld_netns *net = NULL;
    kiln_error *err = NULL;
    if (bld_netns_new(&net, NULL, &err) < 0) {
        fprintf(stderr, "  bld_netns_new: %s\n", err->msg);
        kiln_error_free(&err);
        return 1;
    }
    int fails = 0;
    char seen[2][128] = {"", ""};
    for (int i = 0; i < 2; i++) {
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, b, "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/net", &o, &upper,
                &work);
        s.network = SBX_NET_PRIVATE;
        s.netns = net;
        bld_run_result res;
        if (sbx_run(&s, &res, &err) < 0) {
            fprintf(stderr, "  bld_run on the private network: %s\n", err->msg);
            kiln_error_free(&err);
            fails++;
        }
        char want[128];
        snprintf(want, sizeof(want), "0\n         0      %d          1\nnet:[", (int)getuid());
        const char *ns = o.out.data ? strstr(o.out.data, "net:[") : NULL;
        if (res.exit_code != 0 || ns == NULL || strncmp(o.out.data, want, strlen(want)) != 0) {
            fprintf(stderr, "  private network: output %s, stderr %s\n", o.out.data, o.err.data);
            fails++;
        } else {
            snprintf(seen[i], sizeof(seen[i]), "%s", ns);
        }
        fx_out_dispose(&o);
        kt_rmrf(upper);
        free(upper), free(work);
    }
    if (seen[0][0] == '\0' || strcmp(seen[0], seen[1]) != 0) {
        fprintf(stderr, "  two RUNs joining one network: %s vs %s\n", seen[0], seen[1]);
        fails++;
    }
    bld_netns_free(net);
    return fails;
}

/* The whole scenario, run as an unprivileged user; returns a failure count,
 * or 77 when the kernel does not allow it here. */
static int scenario(void)
{
    bld_preflight_info pf;
    char *t = kt_tmpdir("sbx");
    int r = bld_preflight(&pf, t, NULL);
    kt_rmrf(t);
    free(t);
    if (r < 0 || !pf.usable || !pf.overlay) {
        fprintf(stderr, "  skip: rootless sandbox unavailable: %s\n", pf.missing);
        return 77;
    }
    if (strcmp(pf.isolation, "rootless") != 0)
        return 1;
    fx_base b;
    fx_entry extra[] = {{'d', "opq", 0, 0, 0, 0, 0}, {'f', "opq/.wh..wh..opq", "", 0, 0, 0, 0}};
    if (fx_base_init(&b, extra, 2) < 0)
        return 1;
    int fails = 0;
    char v[4] = "", opq[600];
    snprintf(opq, sizeof(opq), "%s/opq", bld_snapshot_stack_dirs(b.stack)[1]);
    if (lgetxattr(opq, "user.overlay.opaque", v, sizeof(v)) != 1 || v[0] != 'y') {
        fprintf(stderr, "  %s: no user.overlay.opaque\n", opq);
        fails++;
    }
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &b,
            "id -u; stat -c %u /bin/busybox; echo hi > /f; rm /etc/motd; cat /proc/self/uid_map",
            &o, &upper, &work);
    bld_run_result res;
    kiln_error *err = NULL;
    r = sbx_run(&s, &res, &err);
    if (r < 0) {
        fprintf(stderr, "  bld_run: %s\n", err->msg);
        kiln_error_free(&err);
        fails++;
    }
    char want[128];
    snprintf(want, sizeof(want), "0\n0\n         0      %d          1\n", (int)getuid());
    if (res.exit_code != 0 || strcmp(o.out.data, want) != 0) {
        fprintf(stderr, "  output %s, stderr %s, want %s\n", o.out.data, o.err.data, want);
        fails++;
    }
    char p[600];
    struct stat st;
    snprintf(p, sizeof(p), "%s/f", upper);
    if (stat(p, &st) < 0 || st.st_uid != getuid()) {
        fprintf(stderr, "  %s not written as the real user\n", p);
        fails++;
    }
    snprintf(p, sizeof(p), "%s/etc/motd", upper);
    if (lstat(p, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != 0) {
        fprintf(stderr, "  no whiteout for /etc/motd\n");
        fails++;
    }
    fx_out_dispose(&o);
    kt_rmrf(upper);
    free(upper), free(work);
    fails += private_network(&b, &pf);
    fx_base_dispose(&b);
    return fails;
}

KT_TEST(rootless_unpack_and_run)
{
    /* nobody may not reach the build tree (a clone under /root): the probe
     * goes into the base from a copy it can read. */
    KT_REQUIRE(geteuid() != 0 || fx_probe_copy() == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* pasta, rootless, opens /dev/net/tun as the user: where udev's
         * 0666 rule is missing, this child gets a mount namespace of its
         * own with such a node (the host's /dev is not touched). */
        if (geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
            mount("tmpfs", "/dev/net", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755") == 0) {
            umask(0);
            (void)!mknod("/dev/net/tun", S_IFCHR | 0666, makedev(10, 200));
            umask(022);
        }
        if (become_nobody() < 0)
            _exit(2);
        _exit(scenario());
    }
    int st;
    KT_REQUIRE(waitpid(pid, &st, 0) == pid);
    fx_probe_copy_remove();
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        exit(77);
    KT_EXPECT(WIFEXITED(st));
    KT_EXPECT_INT(WEXITSTATUS(st), 0);
}
