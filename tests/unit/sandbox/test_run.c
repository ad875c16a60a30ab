/* RUN sandbox: isolation as the probe sees it from inside (PIDs, hostname,
 * network, mounts, host files), writes landing only in the upper dir, USER
 * resolution, exit codes and signals, streaming output, host networking,
 * deep lower stacks, and the copy fallback giving the same diff as overlay. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "sbx_fixture.h"
#include "sbx_internal.h"

static fx_base base;

__attribute__((constructor)) static void setup(void)
{
    fx_require_sandbox();
    if (fx_base_init(&base, NULL, 0) < 0) {
        fprintf(stderr, "cannot build the busybox base\n");
        exit(1);
    }
}

__attribute__((destructor)) static void teardown(void)
{
    fx_base_dispose(&base);
}

/* Runs spec; prints the error on failure; returns bld_run's result. */
static int run(bld_run_spec *s, bld_run_result *res)
{
    kiln_error *err = NULL;
    int r = sbx_run(s, res, &err);
    if (r < 0 && getenv("KT_VERBOSE"))
        fprintf(stderr, "  bld_run: %s\n", err->msg);
    kiln_error_free(&err);
    return r;
}

static void run_ok(bld_run_spec *s, bld_run_result *res)
{
    KT_EXPECT_INT(run(s, res), 0);
    KT_EXPECT_INT(res->exit_code, 0);
}

static void free_step(fx_out *o, char *upper, char *work)
{
    if (o)
        fx_out_dispose(o);
    KT_EXPECT(!kt_exists(work)); /* bld_run removed its scratch dir */
    KT_EXPECT_INT(fx_mounts_mentioning(work), 0);
    kt_rmrf(upper);
    free(upper);
    free(work);
}

KT_TEST(preflight_reports_this_host)
{
    bld_preflight_info pf;
    KT_REQUIRE(bld_preflight(&pf, base.data, NULL) == 0);
    char *j = bld_preflight_json(&pf);
    fprintf(stderr, "  preflight: %s\n", j ? j : "(null)");
    KT_EXPECT(j && strstr(j, "\"rootfs_mode\":"));
    KT_EXPECT(pf.usable && pf.namespaces);
    KT_EXPECT_STR(pf.rootfs_mode, pf.overlay ? "overlay" : "copy");
    KT_EXPECT_STR(pf.isolation, pf.root ? "root" : "rootless");
    if (!pf.cgroup_memory)
        KT_EXPECT(strstr(pf.missing, "memory") != NULL);
    free(j);
}

KT_TEST(isolation_seen_from_inside)
{
    char *upper, *work, hostmark[128];
    snprintf(hostmark, sizeof(hostmark), "/tmp/kiln-sbx-hostmark-%d", (int)getpid());
    KT_REQUIRE(kt_write_file_mode(hostmark, "host", 0644) == 0);
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, NULL, &o, &upper, &work);
    const char *argv[] = {"/probe", "info", NULL};
    const char *env[] = {"FOO=bar baz", NULL};
    s.argv = argv;
    s.env = env;
    s.cwd = "/srv/app/dir";
    bld_run_result res;
    run_ok(&s, &res);
    const char *t = o.out.data;
    KT_EXPECT_STR(fx_value(t, "ppid"), "1");
    KT_EXPECT_STR(fx_value(t, "pid"), "2"); /* init is PID 1, the command PID 2 */
    KT_EXPECT_STR(fx_value(t, "hostname"), "kiln-test");
    KT_EXPECT_STR(fx_value(t, "uid"), "0");
    KT_EXPECT_STR(fx_value(t, "cwd"), "/srv/app/dir");
    KT_EXPECT_INT(fx_count(t, "env", "FOO=bar baz"), 1);
    KT_EXPECT_INT(fx_count(t, "env", "HOME=/root"), 1);
    KT_EXPECT(fx_count(t, "env", NULL) >= 3); /* FOO, PATH, HOME */
    KT_EXPECT_INT(fx_count(t, "if", "lo"), 1);
    KT_EXPECT_INT(fx_count(t, "if", NULL), 1);
    KT_EXPECT(fx_count(t, "proc", NULL) <= 2); /* init and the probe: no host PIDs */
    /* Mount points: only the sandbox's own. */
    int mounts = 0, bad = 0;
    for (const char *p = t; (p = strstr(p, "\nmount=")) != NULL; p++) {
        char mp[512];
        if (sscanf(p + 7, "%*d %*d %*s %*s %511s", mp) != 1)
            continue;
        mounts++;
        if (strcmp(mp, "/") && strncmp(mp, "/proc", 5) && strncmp(mp, "/dev", 4) &&
            strcmp(mp, "/sys") && strcmp(mp, "/etc/hosts")) {
            fprintf(stderr, "  unexpected mount point %s\n", mp);
            bad++;
        }
    }
    KT_EXPECT(mounts >= 5);
    KT_EXPECT_INT(bad, 0);
    free_step(&o, upper, work);

    /* Host files are out of reach. */
    /* The test binary itself: a host file that certainly exists. */
    char self[4096];
    ssize_t sn = readlink("/proc/self/exe", self, sizeof(self) - 1);
    KT_REQUIRE(sn > 0);
    self[sn] = '\0';
    const char *paths[] = {hostmark, self, "/bin/bash"};
    for (size_t i = 0; i < 3; i++) {
        const char *a2[] = {"/probe", "exists", paths[i], NULL};
        fx_spec(&s, &base, NULL, &o, &upper, &work);
        s.argv = a2;
        KT_EXPECT_INT(run(&s, &res), 0);
        KT_EXPECT_INT(res.exit_code, 1);
        free_step(&o, upper, work);
    }
    unlink(hostmark);
}

KT_TEST(writes_land_in_upper_only)
{
    char *upper, *work, *upper2, *work2;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base,
            "echo hi > /newfile && rm /etc/motd && mkdir -p /a/b && "
            "echo x >> /etc/passwd && touch /tmp/t",
            &o, &upper, &work);
    bld_run_result res;
    run_ok(&s, &res);
    KT_EXPECT_INT(res.rootfs_used, BLD_ROOTFS_OVERLAY);
    char p[600];
    struct stat st;
    snprintf(p, sizeof(p), "%s/newfile", upper);
    char *c = kt_read_file(p, NULL);
    KT_EXPECT_STR(c, "hi\n");
    free(c);
    snprintf(p, sizeof(p), "%s/etc/motd", upper);
    KT_EXPECT(lstat(p, &st) == 0 && kiln_ovl_is_whiteout(&st));
    snprintf(p, sizeof(p), "%s/a/b", upper);
    KT_EXPECT(kt_exists(p));
    snprintf(p, sizeof(p), "%s/etc/motd", bld_snapshot_stack_dirs(base.stack)[0]);
    KT_EXPECT(kt_exists(p)); /* the snapshot itself is untouched */
    /* Nothing but the command's changes: no mount points, no sandbox files. */
    const char *absent[] = {"proc", "dev", "sys", "etc/hosts", "etc/resolv.conf", "work"};
    for (size_t i = 0; i < 6; i++) {
        snprintf(p, sizeof(p), "%s/%s", upper, absent[i]);
        KT_EXPECT(!kt_exists(p));
    }
    /* The next step stacks on this one. */
    const char *lowers[] = {bld_snapshot_stack_dirs(base.stack)[0], upper};
    fx_out o2;
    fx_spec(&s, &base, "test ! -e /etc/motd && cat /newfile && tail -1 /etc/passwd", &o2, &upper2,
            &work2);
    s.lowers = lowers;
    s.n_lowers = 2;
    run_ok(&s, &res);
    KT_EXPECT_STR(o2.out.data, "hi\nx\n");
    free_step(&o2, upper2, work2);
    free_step(&o, upper, work);
}

KT_TEST(user_resolution)
{
    static const struct {
        const char *user, *uid, *gid, *groups, *home;
    } cases[] = {
        {"app", "1000", "1000", "1000,2000", "HOME=/home/app"},
        {"1000", "1000", "1000", "1000,2000", "HOME=/home/app"},
        {"app:wheel", "1000", "10", "10", "HOME=/home/app"},
        {"1234:5", "1234", "5", "5", "HOME=/"},
        {"root", "0", "0", "0,10", "HOME=/root"},
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base, NULL, &o, &upper, &work);
        const char *argv[] = {"/probe", "info", NULL};
        s.argv = argv;
        s.user = cases[i].user;
        bld_run_result res;
        run_ok(&s, &res);
        KT_EXPECT_STR(fx_value(o.out.data, "uid"), cases[i].uid);
        KT_EXPECT_STR(fx_value(o.out.data, "euid"), cases[i].uid);
        KT_EXPECT_STR(fx_value(o.out.data, "gid"), cases[i].gid);
        KT_EXPECT_STR(fx_value(o.out.data, "groups"), cases[i].groups);
        KT_EXPECT_INT(fx_count(o.out.data, "env", cases[i].home + 0), 1);
        free_step(&o, upper, work);
    }
    char *upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, "true", NULL, &upper, &work);
    s.on_output = NULL;
    s.user = "nosuch";
    bld_run_result res;
    KT_EXPECT_INT(run(&s, &res), KILN_EINVAL);
    free_step(NULL, upper, work);
}

KT_TEST(exit_codes_signals_and_exec_form)
{
    static const struct {
        const char *cmd;
        int code, sig;
    } cases[] = {
        {"exit 3", 3, 0}, {"kill -9 $$", -1, 9}, {"kill -TERM $$", -1, 15}, {"true", 0, 0}};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(cases); i++) {
        char *upper, *work;
        bld_run_spec s;
        fx_spec(&s, &base, cases[i].cmd, NULL, &upper, &work);
        bld_run_result res;
        KT_EXPECT_INT(run(&s, &res), 0);
        KT_EXPECT_INT(res.exit_code, cases[i].code);
        KT_EXPECT_INT(res.signal, cases[i].sig);
        free_step(NULL, upper, work);
    }
    char *upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, NULL, NULL, &upper, &work);
    const char *missing[] = {"/no/such/binary", NULL};
    s.argv = missing;
    bld_run_result res;
    KT_EXPECT_INT(run(&s, &res), KILN_ENOENT);
    free_step(NULL, upper, work);
    /* SHELL is honoured: -e stops at the first failure. */
    fx_out o;
    fx_spec(&s, &base, "false; echo not-reached", &o, &upper, &work);
    const char *shell[] = {"/bin/sh", "-ec", NULL};
    s.shell = shell;
    KT_EXPECT_INT(run(&s, &res), 0);
    KT_EXPECT_INT(res.exit_code, 1);
    KT_EXPECT(strstr(o.out.data, "not-reached") == NULL);
    free_step(&o, upper, work);
    /* Exec form with PATH lookup in the image. */
    fx_spec(&s, &base, NULL, &o, &upper, &work);
    const char *echo[] = {"echo", "$HOME", "is not expanded", NULL};
    s.argv = echo;
    run_ok(&s, &res);
    KT_EXPECT_STR(o.out.data, "$HOME is not expanded\n");
    free_step(&o, upper, work);
}

KT_TEST(output_streams_while_running)
{
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, "echo first; echo to-err >&2; sleep 1.5; printf 'last-no-newline'", &o,
            &upper, &work);
    bld_run_result res;
    run_ok(&s, &res);
    KT_EXPECT(o.first_line_s >= 0 && o.first_line_s < 1.0);
    KT_EXPECT(res.duration_ms >= 1400);
    KT_EXPECT_STR(o.out.data, "first\nlast-no-newline\n");
    KT_EXPECT_STR(o.err.data, "to-err\n");
    free_step(&o, upper, work);
    /* An over-long line arrives in pieces of BLD_RUN_LINE_MAX. */
    fx_spec(&s, &base, "head -c 70000 /dev/zero | tr '\\0' x; echo", &o, &upper, &work);
    run_ok(&s, &res);
    KT_EXPECT_INT(o.lines, 2);
    KT_EXPECT_INT(strlen(o.out.data), 70000 + 2);
    free_step(&o, upper, work);
}

KT_TEST(host_network_gets_resolv_conf_and_hosts)
{
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    char *t = kt_tmpdir("sbx"), rc[300];
    snprintf(rc, sizeof(rc), "%s/resolv.conf", t);
    KT_REQUIRE(kt_write_file_mode(rc, "nameserver 192.0.2.53\n", 0644) == 0);
    fx_spec(&s, &base, "cat /etc/resolv.conf /etc/hosts; hostname; ls /sys/class/net | wc -l", &o,
            &upper, &work);
    s.network = SBX_NET_HOST;
    s.resolv_conf = rc;
    bld_run_result res;
    run_ok(&s, &res);
    KT_EXPECT(strstr(o.out.data, "nameserver 192.0.2.53\n") != NULL);
    KT_EXPECT(strstr(o.out.data, "127.0.1.1\tkiln-test\n") != NULL);
    KT_EXPECT(strstr(o.out.data, "image-hosts") == NULL);
    char p[600];
    snprintf(p, sizeof(p), "%s/etc", upper);
    KT_EXPECT(!kt_exists(p)); /* neither file left in the diff */
    free_step(&o, upper, work);
    kt_rmrf(t);
    free(t);
}

KT_TEST(deep_stack_of_long_lower_paths)
{
    /* 80 lowers with ~120-byte paths would need ~10 KiB of overlay options
     * written out in full; the short links keep them within a page. */
    char *t = kt_tmpdir("sbx");
    enum { N = 80 };
    char *dirs[N + 1];
    const char *lowers[N + 1];
    lowers[0] = bld_snapshot_stack_dirs(base.stack)[0];
    for (int i = 0; i < N; i++) {
        KT_REQUIRE(asprintf(&dirs[i],
                            "%s/a-rather-long-directory-name-for-layer-number-%03d/and-"
                            "another-level-of-nesting/fs",
                            t, i) > 0);
        KT_REQUIRE(kiln_mkdir_p(dirs[i], 0755, NULL) == 0);
        char f[512];
        snprintf(f, sizeof(f), "%s/f%03d", dirs[i], i);
        kt_write_file_mode(f, "x", 0644);
        lowers[i + 1] = dirs[i];
    }
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, "ls / | grep -c '^f[0-9]'", &o, &upper, &work);
    s.lowers = lowers;
    s.n_lowers = N + 1;
    bld_run_result res;
    run_ok(&s, &res);
    KT_EXPECT_STR(o.out.data, "80\n");
    free_step(&o, upper, work);
    for (int i = 0; i < N; i++)
        free(dirs[i]);
    kt_rmrf(t);
    free(t);
}

static char *tree_without_mtimes(const char *dir)
{
    char *cmd = NULL;
    if (asprintf(&cmd, "%s tree-links %s | sed 's/ mtime=[0-9]*//'", fx_probe(), dir) < 0)
        return NULL;
    FILE *p = popen(cmd, "r");
    kiln_buf b;
    kiln_buf_init(&b, 0);
    char line[2048];
    while (p && fgets(line, sizeof(line), p))
        kiln_buf_puts(&b, line, NULL);
    if (p)
        pclose(p);
    free(cmd);
    kiln_buf_append(&b, "", 0, NULL);
    return kiln_buf_steal(&b, NULL);
}

KT_TEST(copy_fallback_gives_the_same_diff)
{
    const char *script =
        "echo hi > /newfile && rm /etc/motd && mkdir -p /a/b && "
        "chmod 700 /home/app && echo x >> /etc/group && ln -s /newfile /lnk && "
        "rmdir /var && mkdir /proc/../newdir && ln /newfile /hard && chown 5:6 /tmp";
    char *trees[2];
    for (int mode = 0; mode < 2; mode++) {
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base, script, &o, &upper, &work);
        s.rootfs = mode ? BLD_ROOTFS_COPY : BLD_ROOTFS_OVERLAY;
        bld_run_result res;
        run_ok(&s, &res);
        KT_EXPECT_INT(res.rootfs_used, s.rootfs);
        trees[mode] = tree_without_mtimes(upper);
        free_step(&o, upper, work);
    }
    KT_EXPECT(trees[0] && strstr(trees[0], "etc/motd 20000 0:0 dev=0,0"));
    KT_EXPECT(trees[0] && strstr(trees[0], "hard 100644 0:0 links=2"));
    KT_EXPECT_STR(trees[1], trees[0]);
    free(trees[0]);
    free(trees[1]);
}

KT_TEST(from_scratch_with_a_bound_binary)
{
    /* No lower dirs at all; the probe comes in through a file bind. */
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", fx_probe());
    *strrchr(dir, '/') = '\0';
    for (int mode = 0; mode < 2; mode++) {
        sbx_mount m = {.type = SBX_MOUNT_BIND,
                       .target = "/probe",
                       .source = dir,
                       .source_path = strrchr(fx_probe(), '/') + 1};
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base, NULL, &o, &upper, &work);
        const char *argv[] = {"/probe", "info", NULL};
        s.argv = argv;
        s.lowers = NULL;
        s.n_lowers = 0;
        s.mounts = &m;
        s.n_mounts = 1;
        s.rootfs = mode ? BLD_ROOTFS_COPY : BLD_ROOTFS_OVERLAY;
        bld_run_result res;
        run_ok(&s, &res);
        KT_EXPECT_STR(fx_value(o.out.data, "pid"), "2");
        KT_EXPECT_STR(fx_value(o.out.data, "cwd"), "/");
        /* Every mount point was a stub: the diff is empty. */
        char *cmd = NULL;
        KT_REQUIRE(asprintf(&cmd, "test -z \"$(ls -A %s)\"", upper) > 0);
        KT_EXPECT(system(cmd) == 0);
        free(cmd);
        free_step(&o, upper, work);
    }
}

KT_TEST(seccomp_denies_host_wide_calls)
{
    bld_preflight_info pf;
    KT_REQUIRE(bld_preflight(&pf, base.data, NULL) == 0);
    if (!pf.seccomp) {
        fprintf(stderr, "  no seccomp here: not tested\n");
        return;
    }
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, NULL, &o, &upper, &work);
    const char *argv[] = {"/probe", "syscalls", NULL};
    s.argv = argv;
    bld_run_result res;
    run_ok(&s, &res);
    KT_EXPECT_STR(fx_value(o.out.data, "keyctl"), "1"); /* EPERM */
    KT_EXPECT_STR(fx_value(o.out.data, "unshare"), "1");
    KT_EXPECT_STR(fx_value(o.out.data, "clone_newuser"), "1");
    KT_EXPECT_STR(fx_value(o.out.data, "getpid"), "0");
    free_step(&o, upper, work);
}

KT_TEST(auto_mode_falls_back_to_copy_when_the_mount_fails)
{
    /* An upper dir on another filesystem than the work dir: overlay refuses
     * the mount, AUTO retries the step in copy mode.  The tmpfs is mounted
     * in a private mount namespace of a child, which runs the step. */
    char *t = kt_tmpdir("sbx");
    pid_t pid = fork();
    if (pid == 0) {
        char *upper = NULL, *work = NULL;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", t, "tmpfs", 0, "size=16m") < 0)
            _exit(2);
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base, "echo hi > /f && rm /etc/motd", &o, &upper, &work);
        free(upper);
        if (asprintf(&upper, "%s/upper", t) < 0)
            _exit(2);
        s.upper_dir = upper;
        bld_run_result res;
        int r = sbx_run(&s, &res, NULL);
        char p[600];
        struct stat st;
        snprintf(p, sizeof(p), "%s/etc/motd", upper);
        bool wh = lstat(p, &st) == 0 && kiln_ovl_is_whiteout(&st);
        snprintf(p, sizeof(p), "%s/f", upper);
        _exit(r == 0 && res.exit_code == 0 && res.rootfs_used == BLD_ROOTFS_COPY && wh &&
                      kt_exists(p)
                  ? 0
                  : 1);
    }
    int st;
    KT_REQUIRE(waitpid(pid, &st, 0) == pid);
    KT_EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    kt_rmrf(t); /* the tmpfs went with the child's mount namespace */
    free(t);
}
