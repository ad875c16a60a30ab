/* RUN --mount: cache dirs persist across runs and stay out of the diff
 * (with owner/mode, locked and private sharing), secrets are readable inside
 * but absent from the diff and from Kiln's own logs, tmpfs sizes, read-only
 * and writable binds, and mount targets that try to leave the rootfs. */
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "digest.h"
#include "kt.h"
#include "sbx_fixture.h"
#include "sbx_internal.h"

static fx_base base;
static char hostdir[256];

__attribute__((constructor)) static void setup(void)
{
    fx_require_sandbox();
    /* The host-side mounts some tests make (a tmpfs under a context or cache
     * dir) stay in this process's own mount namespace, which its sandboxes
     * inherit: other test binaries counting mounts never see them. */
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        perror("private mount namespace");
        exit(1);
    }
    char *t = kt_tmpdir("sbx");
    snprintf(hostdir, sizeof(hostdir), "%s", t);
    free(t);
    fx_entry extra[] = {{'l', "hostlink", hostdir, 0, 0, 0, 0}, {'l', "rootlink", "/", 0, 0, 0, 0}};
    if (fx_base_init(&base, extra, 2) < 0) {
        fprintf(stderr, "cannot build the busybox base\n");
        exit(1);
    }
}

__attribute__((destructor)) static void teardown(void)
{
    fx_base_dispose(&base);
    kt_rmrf(hostdir);
}

static int run(bld_run_spec *s, bld_run_result *res, kiln_error **err)
{
    int r = sbx_run(s, res, err);
    if (r < 0 && getenv("KT_VERBOSE"))
        fprintf(stderr, "  bld_run: %s\n", (*err)->msg);
    return r;
}

static void done(fx_out *o, char *upper, char *work)
{
    if (o)
        fx_out_dispose(o);
    KT_EXPECT(!kt_exists(work));
    kt_rmrf(upper);
    free(upper);
    free(work);
}

static bool upper_has(const char *upper, const char *rel)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", upper, rel);
    return kt_exists(p);
}

KT_TEST(cache_persists_and_stays_out_of_the_diff)
{
    sbx_mount m = {.type = SBX_MOUNT_CACHE,
                   .target = "/root/.cache/pkg",
                   .id = "pkg-cache",
                   .uid = 1000,
                   .gid = 1000,
                   .mode = 0750};
    const char *cmds[] = {"stat -c '%u:%g %a' /root/.cache/pkg && echo data > /root/.cache/pkg/f",
                          "cat /root/.cache/pkg/f"};
    const char *want[] = {"1000:1000 750\n", "data\n"};
    for (int i = 0; i < 2; i++) {
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base, cmds[i], &o, &upper, &work);
        s.mounts = &m;
        s.n_mounts = 1;
        bld_run_result res;
        kiln_error *err = NULL;
        KT_EXPECT_INT(run(&s, &res, &err), 0);
        kiln_error_free(&err);
        KT_EXPECT_INT(res.exit_code, 0);
        KT_EXPECT_STR(o.out.data, want[i]);
        KT_EXPECT(!upper_has(upper, "root")); /* neither the stubs nor /root's copy-up */
        done(&o, upper, work);
    }
}

typedef struct cache_run {
    const char *cmd;
    sbx_cache_sharing sharing;
    fx_out o;
    int r, code;
    char *upper, *work;
} cache_run;

static void *cache_thread(void *arg)
{
    cache_run *c = arg;
    sbx_mount m = {
        .type = SBX_MOUNT_CACHE, .target = "/c", .id = "shared-id", .sharing = c->sharing};
    bld_run_spec s;
    fx_spec(&s, &base, c->cmd, &c->o, &c->upper, &c->work);
    s.mounts = &m;
    s.n_mounts = 1;
    bld_run_result res;
    kiln_error *err = NULL;
    c->r = sbx_run(&s, &res, &err);
    c->code = res.exit_code;
    kiln_error_free(&err);
    return NULL;
}

static void sharing_case(sbx_cache_sharing sharing, bool b_sees_a)
{
    static int round;
    char cmd_a[128];
    snprintf(cmd_a, sizeof(cmd_a), "echo a%d > /c/x; sleep 1.2", ++round);
    cache_run a = {.cmd = cmd_a, .sharing = sharing};
    cache_run b = {.cmd = "cat /c/x 2>/dev/null || echo none", .sharing = sharing};
    pthread_t ta, tb;
    /* fx_spec numbers the steps: keep the two threads from racing on it. */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    pthread_create(&ta, NULL, cache_thread, &a);
    usleep(400000);
    pthread_create(&tb, NULL, cache_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_mutex_unlock(&mu);
    KT_EXPECT_INT(a.r, 0);
    KT_EXPECT_INT(b.r, 0);
    char want[32] = "none\n";
    if (b_sees_a)
        snprintf(want, sizeof(want), "a%d\n", round);
    KT_EXPECT_STR(b.o.out.data, want);
    done(&a.o, a.upper, a.work);
    done(&b.o, b.upper, b.work);
}

KT_TEST(cache_sharing_locked_waits_private_separates)
{
    sharing_case(SBX_CACHE_LOCKED, true);   /* b waits for a's write */
    sharing_case(SBX_CACHE_PRIVATE, false); /* b gets its own dir */
    sharing_case(SBX_CACHE_SHARED, true);   /* b sees a's write at once */
}

KT_TEST(secret_readable_inside_absent_from_diff_and_logs)
{
    char secret[128], path[300];
    snprintf(secret, sizeof(secret), "s3cr3t-value-%d", (int)getpid());
    snprintf(path, sizeof(path), "%s/secret", base.tmp);
    KT_REQUIRE(kt_write_file_mode(path, secret, 0600) == 0);
    sbx_mount m = {.type = SBX_MOUNT_SECRET, .target = "/run/secrets/token", .source = path};
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base,
            "tr a-z A-Z < /run/secrets/token; echo; stat -c '%a %u' /run/secrets/token; "
            "cp /run/secrets/token /copied-out 2>/dev/null; echo >> /run/secrets/token || true",
            &o, &upper, &work);
    s.mounts = &m;
    s.n_mounts = 1;
    /* Kiln's own log lines go to stderr: catch them. */
    char logp[300];
    snprintf(logp, sizeof(logp), "%s/log", base.tmp);
    int saved = dup(2), lf = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(lf, 2);
    bld_run_result res;
    kiln_error *err = NULL;
    int r = sbx_run(&s, &res, &err);
    dup2(saved, 2);
    close(saved);
    close(lf);
    KT_EXPECT_INT(r, 0);
    kiln_error_free(&err);
    char upcase[128];
    for (size_t i = 0; i <= strlen(secret); i++)
        upcase[i] = (char)(secret[i] >= 'a' && secret[i] <= 'z' ? secret[i] - 32 : secret[i]);
    KT_EXPECT(strstr(o.out.data, upcase) != NULL);
    KT_EXPECT(strstr(o.out.data, "\n400 0\n") != NULL);
    KT_EXPECT(!upper_has(upper, "run"));
    /* The command copied it into the image on purpose: that copy is the
     * user's doing; nothing else of it may be in the diff. */
    KT_EXPECT(upper_has(upper, "copied-out"));
    char *cmd = NULL;
    KT_REQUIRE(asprintf(&cmd, "grep -rl --exclude=copied-out '%s' %s %s >/dev/null 2>&1", secret,
                        upper, logp) > 0);
    KT_EXPECT(system(cmd) != 0);
    free(cmd);
    char *log = kt_read_file(logp, NULL);
    KT_EXPECT(log && !strstr(log, secret));
    free(log);
    char *orig = kt_read_file(path, NULL);
    KT_EXPECT_STR(orig, secret); /* the read-only bind kept the file intact */
    free(orig);
    done(&o, upper, work);
}

KT_TEST(tmpfs_with_size)
{
    sbx_mount m = {.type = SBX_MOUNT_TMPFS, .target = "/scratch", .size = 1 << 20};
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base,
            "df -k /scratch | tail -1 | awk '{print $2}'; "
            "head -c 2000000 /dev/zero > /scratch/f 2>/dev/null && echo fits || echo full",
            &o, &upper, &work);
    s.mounts = &m;
    s.n_mounts = 1;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(run(&s, &res, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_STR(o.out.data, "1024\nfull\n");
    KT_EXPECT(!upper_has(upper, "scratch"));
    done(&o, upper, work);
}

KT_TEST(bind_read_only_writable_and_confined)
{
    char ctx[300], f[400];
    snprintf(ctx, sizeof(ctx), "%s/context", base.tmp);
    snprintf(f, sizeof(f), "%s/sub", ctx);
    KT_REQUIRE(kiln_mkdir_p(f, 0755, NULL) == 0);
    snprintf(f, sizeof(f), "%s/sub/file.txt", ctx);
    KT_REQUIRE(kt_write_file_mode(f, "ctx\n", 0644) == 0);
    const struct {
        bool writable;
        const char *src_path, *cmd, *want;
    } cases[] = {
        {false, NULL, "cat /ctx/sub/file.txt; touch /ctx/new 2>/dev/null && echo wrote || echo ro",
         "ctx\nro\n"},
        {true, "sub", "echo changed > /ctx/file.txt && cat /ctx/file.txt", "changed\n"},
    };
    for (size_t i = 0; i < 2; i++) {
        sbx_mount m = {.type = SBX_MOUNT_BIND,
                       .target = "/ctx",
                       .source = ctx,
                       .source_path = cases[i].src_path,
                       .writable = cases[i].writable};
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base, cases[i].cmd, &o, &upper, &work);
        s.mounts = &m;
        s.n_mounts = 1;
        bld_run_result res;
        kiln_error *err = NULL;
        KT_EXPECT_INT(run(&s, &res, &err), 0);
        kiln_error_free(&err);
        KT_EXPECT_STR(o.out.data, cases[i].want);
        KT_EXPECT(!upper_has(upper, "ctx"));
        done(&o, upper, work);
    }
    char *c = kt_read_file(f, NULL);
    KT_EXPECT_STR(c, "ctx\n"); /* writes to a writable bind are discarded */
    free(c);
    snprintf(f, sizeof(f), "%s/new", ctx);
    KT_EXPECT(!kt_exists(f));
    /* A source path leaving the given dir is refused. */
    sbx_mount m = {.type = SBX_MOUNT_BIND, .target = "/ctx", .source = ctx, .source_path = "../.."};
    char *upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, "true", NULL, &upper, &work);
    s.on_output = NULL;
    s.mounts = &m;
    s.n_mounts = 1;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_EINVAL);
    kiln_error_free(&err);
    done(NULL, upper, work);
}

KT_TEST(mount_target_through_image_symlink_stays_inside)
{
    /* The image has /rootlink -> / and /hostlink -> <a host dir>: mounts
     * below them resolve inside the rootfs (or are refused), never on the
     * host. */
    char inside[128], host_inside[400];
    snprintf(inside, sizeof(inside), "/rootlink/tmp/kiln-inside-%d", (int)getpid());
    sbx_mount m = {.type = SBX_MOUNT_TMPFS, .target = inside};
    char *upper, *work, cmd[300];
    snprintf(cmd, sizeof(cmd), "touch /tmp/kiln-inside-%d/x && echo ok", (int)getpid());
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, cmd, &o, &upper, &work);
    s.mounts = &m;
    s.n_mounts = 1;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(run(&s, &res, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_STR(o.out.data, "ok\n");
    KT_EXPECT(!kt_exists(inside + 9)); /* /tmp/kiln-inside-N on the host */
    KT_EXPECT(!upper_has(upper, "tmp"));
    done(&o, upper, work);

    sbx_mount m2 = {.type = SBX_MOUNT_TMPFS, .target = "/hostlink/inside"};
    fx_spec(&s, &base, "touch /hostlink/inside/x", &o, &upper, &work);
    s.mounts = &m2;
    s.n_mounts = 1;
    int r = run(&s, &res, &err);
    KT_EXPECT(r == 0 || r == KILN_EINVAL);
    kiln_error_free(&err);
    snprintf(host_inside, sizeof(host_inside), "%s/inside", hostdir);
    KT_EXPECT(!kt_exists(host_inside));
    done(&o, upper, work);
}

static void *cancel_soon(void *arg)
{
    usleep(300000);
    atomic_store((atomic_bool *)arg, true);
    return NULL;
}

KT_TEST(cancel_while_waiting_for_a_locked_cache)
{
    /* Another holder keeps the cache locked; the step waits, then is canceled. */
    char digest[KILN_DIGEST_STRLEN + 1], *lockp = NULL, *dir = NULL;
    kiln_sha256_bytes("busy-cache", 10, digest);
    KT_REQUIRE(asprintf(&dir, "%s/cache-mounts/%.32s", base.data, digest + 7) > 0);
    KT_REQUIRE(asprintf(&lockp, "%s/lock", dir) > 0);
    KT_REQUIRE(kiln_mkdir_p(dir, 0700, NULL) == 0);
    int fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    KT_REQUIRE(fd >= 0 && flock(fd, LOCK_EX) == 0);
    sbx_mount m = {
        .type = SBX_MOUNT_CACHE, .target = "/c", .id = "busy-cache", .sharing = SBX_CACHE_LOCKED};
    char *upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, "echo ran", NULL, &upper, &work);
    s.on_output = NULL;
    s.mounts = &m;
    s.n_mounts = 1;
    atomic_bool cancel = false;
    s.cancel = &cancel;
    pthread_t t;
    pthread_create(&t, NULL, cancel_soon, &cancel);
    double t0 = fx_now();
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(sbx_run(&s, &res, &err), KILN_ECANCELED);
    kiln_error_free(&err);
    KT_EXPECT(fx_now() - t0 < 3.0);
    pthread_join(t, NULL);
    close(fd);
    done(NULL, upper, work);
    free(lockp);
    free(dir);
}

KT_TEST(bind_from_a_stage_layer_stack)
{
    /* A "stage": the base plus one step's diff (a new file, a deletion). */
    char *stage_upper, *work;
    bld_run_spec s;
    fx_spec(&s, &base, "mkdir /out && echo built > /out/artifact && rm /etc/motd", NULL,
            &stage_upper, &work);
    s.on_output = NULL;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_REQUIRE(sbx_run(&s, &res, &err) == 0 && res.exit_code == 0);
    const char *layers[] = {bld_snapshot_stack_dirs(base.stack)[0], stage_upper};
    for (int mode = 0; mode < 2; mode++) {
        for (int writable = 0; writable < 2; writable++) {
            sbx_mount m = {.type = SBX_MOUNT_BIND,
                           .target = "/from-stage",
                           .source_layers = layers,
                           .n_source_layers = 2,
                           .writable = writable};
            sbx_mount m2 = {.type = SBX_MOUNT_BIND,
                            .target = "/artifact",
                            .source_layers = layers,
                            .n_source_layers = 2,
                            .source_path = "/out/artifact"};
            sbx_mount ms[] = {m, m2};
            char *upper, *work2;
            fx_out o;
            fx_spec(&s, &base,
                    "cat /from-stage/out/artifact /artifact; test -e /from-stage/etc/motd || echo "
                    "gone; "
                    "echo w > /from-stage/new 2>/dev/null && echo wrote || echo ro",
                    &o, &upper, &work2);
            s.mounts = ms;
            s.n_mounts = 2;
            s.rootfs = mode ? BLD_ROOTFS_COPY : BLD_ROOTFS_OVERLAY;
            KT_EXPECT_INT(run(&s, &res, &err), 0);
            kiln_error_free(&err);
            KT_EXPECT_STR(o.out.data,
                          writable ? "built\nbuilt\ngone\nwrote\n" : "built\nbuilt\ngone\nro\n");
            KT_EXPECT(!upper_has(upper, "from-stage") && !upper_has(upper, "artifact"));
            done(&o, upper, work2);
        }
    }
    KT_EXPECT(!upper_has(stage_upper, "new")); /* the stage itself never changes */
    free(work);
    kt_rmrf(stage_upper);
    free(stage_upper);
}

/* A read-only bind is read-only through the submounts of its source too: a
 * tmpfs mounted under the context dir by someone on the host stays
 * unwritable from RUN, and the host sees no write. */
KT_TEST(read_only_bind_is_read_only_through_submounts)
{
    char ctx[300], sub[400], f[500];
    snprintf(ctx, sizeof(ctx), "%s/subctx", base.tmp);
    snprintf(sub, sizeof(sub), "%s/mnt", ctx);
    KT_REQUIRE(kiln_mkdir_p(sub, 0755, NULL) == 0);
    KT_REQUIRE(mount("tmpfs", sub, "tmpfs", 0, "size=1m,mode=0777") == 0);
    snprintf(f, sizeof(f), "%s/there", sub);
    KT_REQUIRE(kt_write_file_mode(f, "host\n", 0666) == 0);
    /* overlay and copy rootfs; mount_setattr and the remount of each
     * submount that older kernels get */
    for (int mode = 0; mode < 4; mode++) {
        sbx_force_remount_each = mode >= 2;
        sbx_mount m = {.type = SBX_MOUNT_BIND, .target = "/ctx", .source = ctx};
        char *upper, *work;
        fx_out o;
        bld_run_spec s;
        fx_spec(&s, &base,
                "cat /ctx/mnt/there; for f in /ctx/mnt/new /ctx/mnt/there /ctx/new; do "
                "(echo x >> $f) 2>/dev/null && echo wrote $f || echo ro $f; done; "
                "mount -o remount,rw /ctx/mnt 2>/dev/null && echo remounted || echo stays",
                &o, &upper, &work);
        s.rootfs = mode % 2 ? BLD_ROOTFS_COPY : BLD_ROOTFS_OVERLAY;
        s.mounts = &m;
        s.n_mounts = 1;
        bld_run_result res;
        kiln_error *err = NULL;
        KT_EXPECT_INT(run(&s, &res, &err), 0);
        kiln_error_free(&err);
        KT_EXPECT_STR(o.out.data, "host\nro /ctx/mnt/new\nro /ctx/mnt/there\nro /ctx/new\nstays\n");
        done(&o, upper, work);
    }
    sbx_force_remount_each = false;
    char *c = kt_read_file(f, NULL);
    KT_EXPECT_STR(c, "host\n");
    free(c);
    snprintf(f, sizeof(f), "%s/new", sub);
    KT_EXPECT(!kt_exists(f));
    umount2(sub, MNT_DETACH);
}

/* A writable cache mount shows the cache dir's own files only: something
 * mounted below it on the host does not come along, and a symlink a step
 * leaves in the cache resolves inside the next step's rootfs. */
KT_TEST(cache_mount_exposes_nothing_outside_the_cache_dir)
{
    sbx_mount m = {.type = SBX_MOUNT_CACHE, .target = "/cache", .id = "confined-cache"};
    char *upper, *work;
    fx_out o;
    bld_run_spec s;
    fx_spec(&s, &base, "mkdir -p /cache/sub && ln -sfn / /cache/up && echo made", &o, &upper,
            &work);
    s.mounts = &m;
    s.n_mounts = 1;
    bld_run_result res;
    kiln_error *err = NULL;
    KT_EXPECT_INT(run(&s, &res, &err), 0);
    kiln_error_free(&err);
    KT_EXPECT_STR(o.out.data, "made\n");
    done(&o, upper, work);

    char digest[KILN_DIGEST_STRLEN + 1], sub[600], f[700];
    kiln_sha256_bytes("confined-cache", 14, digest);
    snprintf(sub, sizeof(sub), "%s/cache-mounts/%.32s/data/sub", base.data, digest + 7);
    KT_REQUIRE(mount("tmpfs", sub, "tmpfs", 0, "size=1m") == 0);
    snprintf(f, sizeof(f), "%s/host-only", sub);
    KT_REQUIRE(kt_write_file_mode(f, "host\n", 0644) == 0);
    fx_spec(&s, &base,
            "ls /cache/sub; echo x > /cache/sub/new && echo wrote; ls /cache/up/ | grep -c probe",
            &o, &upper, &work);
    s.mounts = &m;
    s.n_mounts = 1;
    KT_EXPECT_INT(run(&s, &res, &err), 0);
    kiln_error_free(&err);
    /* the empty dir under the host's tmpfs; "/" is the step's rootfs */
    KT_EXPECT_STR(o.out.data, "wrote\n1\n");
    done(&o, upper, work);
    snprintf(f, sizeof(f), "%s/new", sub);
    KT_EXPECT(!kt_exists(f));
    umount2(sub, MNT_DETACH);
}
