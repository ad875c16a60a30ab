/* Limits and teardown: timeout and cancel kill a process tree that forks
 * and ignores SIGTERM, memory and pid limits through cgroups, and a builder
 * killed with SIGKILL mid-RUN leaves no process and no mount behind (its
 * stale work dir and cgroup go with bld_sandbox_cleanup_stale()). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "kt.h"
#include "sbx_fixture.h"

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

/* A tree of SIGTERM-ignoring sleepers tagged with a unique number. */
static void tree_cmd(char *buf, size_t n, int tag)
{
    snprintf(buf, n,
             "trap '' TERM; (trap '' TERM; sleep %d; true) & (sleep %d & wait) & "
             "echo started; sleep %d; true",
             tag, tag, tag);
}

static bool wait_procs(const char *pat, int want, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        if (fx_procs_matching(pat) == want)
            return true;
        usleep(20000);
    }
    return fx_procs_matching(pat) == want;
}

KT_TEST(timeout_kills_the_whole_tree)
{
    char cmd[256], pat[32];
    int tag = 3000 + (int)(getpid() % 500);
    tree_cmd(cmd, sizeof(cmd), tag);
    snprintf(pat, sizeof(pat), "sleep %d", tag);
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, cmd, &o, &upper, &work);
    s.timeout_ms = 1500;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_ETIMEDOUT);
    kiln_error_free(&err);
    KT_EXPECT(res.timed_out);
    KT_EXPECT_INT(res.signal, SIGKILL);
    KT_EXPECT(res.duration_ms >= 1400 && res.duration_ms < 5000);
    KT_EXPECT_STR(o.out.data, "started\n");
    KT_EXPECT_INT(fx_procs_matching(pat), 0); /* gone when bld_run returns */
    KT_EXPECT(!kt_exists(work));
    fx_out_dispose(&o);
    kt_rmrf(upper);
    free(upper), free(work);
}

static void *cancel_later(void *arg)
{
    usleep(800000);
    atomic_store((atomic_bool *)arg, true);
    return NULL;
}

KT_TEST(cancel_kills_the_whole_tree)
{
    char cmd[256], pat[32];
    int tag = 3500 + (int)(getpid() % 500);
    tree_cmd(cmd, sizeof(cmd), tag);
    snprintf(pat, sizeof(pat), "sleep %d", tag);
    char *upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, cmd, NULL, &upper, &work);
    s.on_output = NULL;
    atomic_bool cancel = false;
    s.cancel = &cancel;
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, &cancel);
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_ECANCELED);
    kiln_error_free(&err);
    pthread_join(t, NULL);
    KT_EXPECT(res.canceled && !res.timed_out);
    KT_EXPECT(res.duration_ms < 4000);
    KT_EXPECT_INT(fx_procs_matching(pat), 0);
    kt_rmrf(upper);
    free(upper), free(work);
}

/* Number of step cgroups this process has left anywhere under /sys/fs/cgroup. */
static int own_step_cgroups(void)
{
    char *cmd = NULL;
    if (asprintf(&cmd, "find /sys/fs/cgroup/ -maxdepth 7 -type d -name 'kiln-*-%d-*' | wc -l",
                 (int)getpid()) < 0)
        return -1;
    FILE *f = popen(cmd, "r");
    free(cmd);
    int n = -1;
    if (f && fscanf(f, "%d", &n) != 1)
        n = -1;
    if (f)
        pclose(f);
    return n;
}

KT_TEST(memory_hog_ends_the_run_naming_the_limit)
{
    bld_preflight_info pf;
    KT_REQUIRE(bld_preflight(&pf, base.data, NULL) == 0);
    if (!pf.cgroup_memory) {
        fprintf(stderr, "  no memory cgroup controller here: memory limit not tested\n");
        return;
    }
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", &o, &upper,
            &work);
    s.memory_bytes = 32 << 20;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_ENOSPC);
    KT_EXPECT(err && strcmp(err->msg, "RUN exceeded its memory limit of 32 MiB") == 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT(res.limits_enforced);
    KT_EXPECT(res.oom_killed);
    KT_EXPECT(strstr(o.out.data, "survived") == NULL);
    KT_EXPECT_INT(own_step_cgroups(), 0);
    KT_EXPECT(!kt_exists(work));
    fx_out_dispose(&o);
    kt_rmrf(upper);
    free(upper), free(work);
}

KT_TEST(fork_bomb_ends_the_run_naming_the_limit)
{
    bld_preflight_info pf;
    KT_REQUIRE(bld_preflight(&pf, base.data, NULL) == 0);
    if (!pf.cgroup_pids) {
        fprintf(stderr, "  no pids cgroup controller here: pid limit not tested\n");
        return;
    }
    int tag = 4600 + (int)(getpid() % 300);
    char cmd[256], pat[32];
    /* Each bomb call forks two more; the sleeps mark the tree for counting. */
    snprintf(cmd, sizeof(cmd), "bomb() { sleep %d & bomb | bomb & }; bomb; sleep %d", tag, tag);
    snprintf(pat, sizeof(pat), "sleep %d", tag);
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, cmd, &o, &upper, &work);
    s.pids_max = 24;
    s.timeout_ms = 120000;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_ENOSPC);
    KT_EXPECT(err && strcmp(err->msg, "RUN exceeded its limit of 24 processes") == 0);
    if (err)
        fprintf(stderr, "  %s\n", err->msg);
    kiln_error_free(&err);
    KT_EXPECT(res.pids_limited && !res.timed_out);
    KT_EXPECT(res.duration_ms < 60000);
    KT_EXPECT_INT(fx_procs_matching(pat), 0); /* the whole tree is gone */
    KT_EXPECT_INT(own_step_cgroups(), 0);
    fx_out_dispose(&o);
    kt_rmrf(upper);
    free(upper), free(work);
}

KT_TEST(timeout_names_the_limit)
{
    char *upper, *work, cmd[32];
    bld_run_spec s;
    snprintf(cmd, sizeof(cmd), "sleep %d", 4900 + (int)(getpid() % 300));
    fx_spec(&s, &base, cmd, NULL, &upper, &work);
    s.on_output = NULL;
    s.timeout_ms = 1000;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_ETIMEDOUT);
    KT_EXPECT(err && strcmp(err->msg, "RUN exceeded its time limit of 1s") == 0);
    kiln_error_free(&err);
    KT_EXPECT_INT(fx_procs_matching(cmd), 0);
    KT_EXPECT_INT(own_step_cgroups(), 0);
    kt_rmrf(upper);
    free(upper), free(work);
}

/* Without any limit asked for, the step still runs in cgroups of its own:
 * /proc/self/cgroup inside is not the builder's in any hierarchy Kiln may
 * create cgroups in. */
KT_TEST(run_has_its_own_cgroups)
{
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, "cat /proc/self/cgroup", &o, &upper, &work);
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), 0);
    kiln_error_free(&err);
    char *mine = kt_read_file("/proc/self/cgroup", NULL);
    KT_REQUIRE(mine != NULL);
    fprintf(stderr, "  inside:\n%s", o.out.data);
    KT_EXPECT(strcmp(mine, o.out.data) != 0);
    static const char *const keys[] = {":memory:", ":pids:", ":devices:", ":cpu:", "0::"};
    int checked = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[32];
        snprintf(want, sizeof(want), "%s", keys[i]);
        const char *line = strstr(o.out.data, want);
        /* hierarchies this process may write to must hold the step */
        char own[512] = "", dir[700];
        const char *ml = strstr(mine, want);
        if (ml == NULL || line == NULL)
            continue;
        sscanf(ml + strlen(want), "%511[^\n]", own);
        const char *ctrl = strcmp(keys[i], "0::") == 0 ? "unified" : keys[i] + 1;
        snprintf(dir, sizeof(dir), "/sys/fs/cgroup/%.*s%s", (int)strcspn(ctrl, ":"), ctrl,
                 strcmp(own, "/") ? own : "");
        if (access(dir, W_OK) != 0)
            continue;
        char path[600] = "";
        sscanf(line + strlen(want), "%599[^\n]", path);
        KT_EXPECT(strstr(path, "/kiln-") != NULL);
        checked++;
    }
    KT_EXPECT(checked > 0);
    free(mine);
    KT_EXPECT_INT(own_step_cgroups(), 0);
    fx_out_dispose(&o);
    kt_rmrf(upper);
    free(upper), free(work);
}

KT_TEST(killed_builder_leaves_nothing_behind)
{
    int tag = 4000 + (int)(getpid() % 500);
    char pat[32], cmd[128];
    snprintf(pat, sizeof(pat), "sleep %d", tag);
    snprintf(cmd, sizeof(cmd), "sleep %d & exec sleep %d", tag, tag);
    int mounts_before = fx_mounts_mentioning("kiln-sbx");
    char *upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, cmd, NULL, &upper, &work);
    s.on_output = NULL;
    s.memory_bytes = 256 << 20; /* so that a step cgroup exists too */
    pid_t builder = fork();
    if (builder == 0) {
        /* A builder's start: its step cgroups belong to its data dir. */
        kiln_error *e = NULL;
        if (bld_sandbox_cleanup_stale(base.data, &e) < 0)
            _exit(1);
        bld_run_result res;
        sbx_run(&s, &res, NULL);
        _exit(0);
    }
    KT_EXPECT(wait_procs(pat, 2, 10000));
    kill(builder, SIGKILL);
    waitpid(builder, NULL, 0);
    KT_EXPECT(wait_procs(pat, 0, 5000));
    KT_EXPECT_INT(fx_mounts_mentioning("kiln-sbx"), mounts_before);
    KT_EXPECT(kt_exists(work)); /* stale, until the next start cleans it */
    /* Its cgroup is left too, empty. */
    char *cg = NULL;
    KT_REQUIRE(asprintf(&cg,
                        "find /sys/fs/cgroup/ -maxdepth 6 -type d -name 'kiln-*-%d-*' | grep -q .",
                        (int)builder) > 0);
    int had_cg = system(cg) == 0;
    kiln_error *err = NULL;
    KT_EXPECT_INT(bld_sandbox_cleanup_stale(base.data, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT(!kt_exists(work));
    if (had_cg)
        KT_EXPECT(system(cg) != 0);
    free(cg);
    kt_rmrf(upper);
    free(upper), free(work);
}
