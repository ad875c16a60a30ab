/* Commit through kiln-pusher's RPC, the way the builder uses it: overlay-style
 * diff dirs stacked on an imported base, checked with skopeo and umoci; bad
 * input; kill -9 of the pusher in the middle of a large commit. */
#include "kt.h"
#include "svc_harness.h"
#include "config.h"
#include "follow.h"
#include "rpc.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

static char *dir;
static char data[512], url[600], evurl[600];
static th_proc pusher;
static kiln_rpc_client *client;
static char base_digest[80];

static int start_pusher(void)
{
    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", data, NULL};
    if (th_spawn(&pusher, dir, "pusher", argv) < 0)
        return -1;
    return th_wait_ready(url, 10000);
}

/* Waits for a job's terminal event through the Wait RPC. */
static Kiln__V1__Event *wait_job(const char *job, kiln_reply **hold)
{
    for (int i = 0; i < 40; i++) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__WaitRequest wr = KILN__V1__WAIT_REQUEST__INIT;
        wr.job_id = (char *)job;
        wr.timeout_ms = 30000;
        req.body_case = KILN__V1__REQUEST__BODY_WAIT;
        req.wait = &wr;
        kiln_reply *r = NULL;
        kiln_error *err = NULL;
        if (kiln_rpc_call(client, &req, &r, 40000, &err) < 0) {
            fprintf(stderr, "wait: %s\n", err->msg);
            kiln_error_free(&err);
            return NULL;
        }
        if (r->wait_reply->finished) {
            *hold = r;
            return r->wait_reply->terminal;
        }
        kiln_rpc_reply_free(r);
    }
    return NULL;
}

/* Sends req (a job) and returns its job id in out; < 0 on an immediate error. */
static int start_job(kiln_req *req, char out[KILN_JOB_ID_MAX + 1], kiln_error **err)
{
    kiln_reply *r = NULL;
    int rc = kiln_rpc_call(client, req, &r, 10000, err);
    if (rc < 0)
        return rc;
    snprintf(out, KILN_JOB_ID_MAX + 1, "%s", r->job_accepted->job_id);
    kiln_rpc_reply_free(r);
    return 0;
}

KT_SETUP(setup_pusher_and_base_image)
{
    dir = kt_tmpdir("commit");
    KT_REQUIRE(dir != NULL);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(url, sizeof(url), "ipc://%s/run/pusher.sock", data);
    snprintf(evurl, sizeof(evurl), "ipc://%s/run/pusher-events.sock", data);
    KT_REQUIRE(kt_sh("set -e; R=%s/rootfs; mkdir -p $R/bin $R/etc $R/opt/keep; "
                     "cp \"$(command -v busybox)\" $R/bin/busybox; ln -s busybox $R/bin/sh; "
                     "echo motd > $R/etc/motd; echo a > $R/opt/keep/a; echo b > $R/opt/b",
                     dir) == 0);
    KT_REQUIRE(start_pusher() == 0);
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_rpc_client_new(&client, url, NULL, true, &err) == 0);

    char src[600], job[KILN_JOB_ID_MAX + 1];
    snprintf(src, sizeof(src), "%s/rootfs", dir);
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ImportRequest ir = KILN__V1__IMPORT_REQUEST__INIT;
    ir.source = src;
    ir.ref = "base:1";
    req.body_case = KILN__V1__REQUEST__BODY_IMPORT;
    req.import = &ir;
    req.request_id = "import-base-1";
    KT_REQUIRE(start_job(&req, job, &err) == 0);
    /* A resend of the same request is answered from the request_id cache. */
    char job2[KILN_JOB_ID_MAX + 1];
    KT_REQUIRE(start_job(&req, job2, &err) == 0);
    KT_EXPECT_STR(job2, job);
    kiln_reply *hold = NULL;
    Kiln__V1__Event *e = wait_job(job, &hold);
    KT_REQUIRE(e != NULL);
    KT_REQUIRE(e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED);
    snprintf(base_digest, sizeof(base_digest), "%s", e->completed->digest);
    kiln_rpc_reply_free(hold);
}

/* Commit request with a full config; layers are paths relative to the data dir. */
static int commit(const char *const *layers, size_t n, const char *base, const char *tag,
                  char job[KILN_JOB_ID_MAX + 1], kiln_error **err)
{
    char *lp[8];
    for (size_t i = 0; i < n; i++)
        if (asprintf(&lp[i], "%s/%s", data, layers[i]) < 0)
            return -1;
    char *env[] = {"PATH=/bin", "GREETING=hello world"};
    char *cmd[] = {"/bin/sh", "-c", "cat /etc/motd"};
    char *ports[] = {"8080/tcp", "53/udp"};
    char *hc_test[] = {"CMD-SHELL", "true"};
    Kiln__V1__HealthcheckSpec hc = KILN__V1__HEALTHCHECK_SPEC__INIT;
    hc.test = hc_test;
    hc.n_test = 2;
    hc.interval_ns = 30000000000LL;
    hc.retries = 3;
    Kiln__V1__ImageConfigSpec__LabelsEntry l1 = KILN__V1__IMAGE_CONFIG_SPEC__LABELS_ENTRY__INIT;
    l1.key = "org.example.team";
    l1.value = "kiln";
    Kiln__V1__ImageConfigSpec__LabelsEntry *labels[] = {&l1};
    Kiln__V1__ImageConfigSpec cfg = KILN__V1__IMAGE_CONFIG_SPEC__INIT;
    cfg.user = "1000:1000";
    cfg.env = env;
    cfg.n_env = 2;
    cfg.cmd = cmd;
    cfg.n_cmd = 3;
    cfg.cmd_set = true;
    cfg.exposed_ports = ports;
    cfg.n_exposed_ports = 2;
    cfg.working_dir = "/opt";
    cfg.labels = labels;
    cfg.n_labels = 1;
    cfg.healthcheck = &hc;
    char *tags[] = {(char *)tag};
    Kiln__V1__CommitRequest cr = KILN__V1__COMMIT_REQUEST__INIT;
    cr.base_manifest = (char *)base;
    cr.layers = lp;
    cr.n_layers = n;
    cr.config = &cfg;
    cr.tags = tags;
    cr.n_tags = 1;
    cr.source_date_epoch = 1700000000;
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_COMMIT;
    req.commit = &cr;
    int rc = start_job(&req, job, err);
    for (size_t i = 0; i < n; i++)
        free(lp[i]);
    return rc;
}

KT_TEST(commit_stacks_overlay_diffs_on_the_base)
{
    KT_REQUIRE(base_digest[0]);
    /* Diff 1 adds files; diff 2 deletes /etc/motd (overlay whiteout: 0/0 char
     * device) and makes /opt opaque (hides the base's /opt content). */
    KT_REQUIRE(kt_sh("set -e; D=%s/snapshots/steps; mkdir -p $D/1/app $D/2/etc $D/2/opt; "
                     "echo 'echo hi' > $D/1/app/run.sh; chmod 755 $D/1/app/run.sh; "
                     "mknod $D/2/etc/motd c 0 0; echo new > $D/2/opt/new; "
                     "setfattr -n trusted.overlay.opaque -v y $D/2/opt",
                     data) == 0);
    const char *layers[] = {"snapshots/steps/1", "snapshots/steps/2"};
    char job[KILN_JOB_ID_MAX + 1];
    kiln_error *err = NULL;
    KT_REQUIRE(commit(layers, 2, base_digest, "app:1", job, &err) == 0);
    kiln_reply *hold = NULL;
    Kiln__V1__Event *e = wait_job(job, &hold);
    KT_REQUIRE(e != NULL);
    if (e->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED)
        fprintf(stderr, "commit failed: %s\n", e->failed->error->message);
    KT_REQUIRE(e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED);
    const Kiln__V1__CommitResult *res = e->completed->commit;
    KT_REQUIRE(res != NULL);
    KT_EXPECT_INT(res->n_layers, 3);
    KT_EXPECT(res->layers[0]->from_base);
    KT_EXPECT(!res->layers[1]->from_base);
    KT_EXPECT_STR(res->manifest_digest, e->completed->digest);
    kiln_rpc_reply_free(hold);

    /* What outside tools see. */
    KT_EXPECT_INT(
        kt_sh("cd %s && skopeo inspect --raw --config oci:%s/store:app:1 > cfg.json && "
              "jq -e '.config.User == \"1000:1000\" and .config.WorkingDir == \"/opt\" and "
              ".config.Env[1] == \"GREETING=hello world\" and .config.Cmd[2] == \"cat /etc/motd\" "
              "and (.config.ExposedPorts | has(\"53/udp\")) and "
              ".config.Labels[\"org.example.team\"] == \"kiln\" and "
              ".config.Healthcheck.Retries == 3 and (.rootfs.diff_ids | length) == 3' cfg.json",
              dir, data),
        0);
    KT_EXPECT_INT(
        kt_sh("cd %s && umoci unpack --image %s/store:app:1 bundle >/dev/null 2>&1", dir, data), 0);
    KT_EXPECT_INT(kt_sh("test -x %s/bundle/rootfs/app/run.sh", dir), 0);
    KT_EXPECT_INT(kt_sh("test ! -e %s/bundle/rootfs/etc/motd", dir), 0); /* whiteout */
    KT_EXPECT_INT(
        kt_sh("test -e %s/bundle/rootfs/etc/passwd || test -d %s/bundle/rootfs/etc", dir, dir), 0);
    KT_EXPECT_INT(kt_sh("test ! -e %s/bundle/rootfs/opt/b", dir), 0); /* opaque dir */
    KT_EXPECT_INT(kt_sh("test ! -e %s/bundle/rootfs/opt/keep/a", dir), 0);
    KT_EXPECT_INT(kt_sh("grep -qx new %s/bundle/rootfs/opt/new", dir), 0);
    KT_EXPECT_INT(kt_sh("test -x %s/bundle/rootfs/bin/busybox", dir), 0);

    /* The same diffs committed again give the same digest (reproducible). */
    char job2[KILN_JOB_ID_MAX + 1];
    KT_REQUIRE(commit(layers, 2, base_digest, "app:2", job2, &err) == 0);
    e = wait_job(job2, &hold);
    KT_REQUIRE(e != NULL && e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED);
    KT_EXPECT_INT(kt_sh("test \"$(skopeo inspect oci:%s/store:app:1 | jq -r .Digest)\" = %s", data,
                        e->completed->digest),
                  0);
    kiln_rpc_reply_free(hold);
}

static kiln_code job_failure(const char *job)
{
    kiln_reply *hold = NULL;
    Kiln__V1__Event *e = wait_job(job, &hold);
    kiln_code c = KILN_OK;
    if (e && e->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED)
        c = kiln_code_from_wire((int)e->failed->error->code);
    kiln_rpc_reply_free(hold);
    return c;
}

KT_TEST(bad_commits_fail_cleanly_and_change_nothing)
{
    KT_REQUIRE(base_digest[0]);
    KT_REQUIRE(kt_sh("cp %s/store/index.json %s/index.before && mkdir -p %s/outside "
                     "%s/events/stolen && ln -sfn %s/outside %s/snapshots/steps/escape",
                     data, dir, dir, data, dir, data) == 0);
    kiln_error *err = NULL;
    char job[KILN_JOB_ID_MAX + 1];
    /* Invalid tag: refused before any job starts. */
    const char *l1[] = {"snapshots/steps/1"};
    KT_EXPECT_INT(commit(l1, 1, base_digest, "Bad:Tag:x", job, &err), KILN_EINVAL);
    kiln_error_free(&err);
    /* A diff outside the data dir, by .. and by symlink. */
    const char *out1[] = {"../outside"};
    const char *out3[] = {"events/stolen"}; /* inside the data dir, not a build diff */
    KT_REQUIRE(commit(out1, 1, base_digest, "evil:1", job, &err) == 0);
    KT_EXPECT_INT(job_failure(job), KILN_EPERM);
    KT_REQUIRE(commit(out3, 1, base_digest, "evil:3", job, &err) == 0);
    KT_EXPECT_INT(job_failure(job), KILN_EPERM);
    const char *out2[] = {"snapshots/steps/escape"};
    KT_REQUIRE(commit(out2, 1, base_digest, "evil:2", job, &err) == 0);
    KT_EXPECT_INT(job_failure(job), KILN_EPERM);
    /* A base that is not in the store. */
    KT_REQUIRE(commit(l1, 1,
                      "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                      "nobase:1", job, &err) == 0);
    KT_EXPECT_INT(job_failure(job), KILN_ENOENT);
    KT_EXPECT_INT(kt_sh("cmp -s %s/store/index.json %s/index.before", data, dir), 0);
}

/* Every blob's name is its digest. */
static int blobs_intact(void)
{
    return kt_sh("cd %s/store/blobs/sha256 && for f in *; do "
                 "[ \"$(sha256sum \"$f\" | cut -d' ' -f1)\" = \"$f\" ] || exit 1; done",
                 data);
}

KT_TEST(kill_9_during_a_large_commit_leaves_a_readable_store)
{
    KT_REQUIRE(base_digest[0]);
    /* ~96 MiB of incompressible data makes the commit last long enough. */
    KT_REQUIRE(kt_sh("mkdir -p %s/snapshots/steps/big && head -c 100663296 /dev/urandom > "
                     "%s/snapshots/steps/big/blob",
                     data, data) == 0);
    const char *layers[] = {"snapshots/steps/big"};
    char job[KILN_JOB_ID_MAX + 1];
    kiln_error *err = NULL;
    KT_REQUIRE(commit(layers, 1, base_digest, "big:1", job, &err) == 0);
    usleep(150000);
    kill(pusher.pid, SIGKILL);
    waitpid(pusher.pid, NULL, 0);
    pusher.pid = 0;

    KT_EXPECT_INT(blobs_intact(), 0);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s/store:app:1 >/dev/null", data), 0);
    KT_EXPECT_INT(kt_sh("jq -e . %s/store/index.json >/dev/null", data), 0);

    kiln_rpc_client_free(client);
    client = NULL;
    KT_REQUIRE(start_pusher() == 0);
    KT_REQUIRE(kiln_rpc_client_new(&client, url, NULL, true, &err) == 0);
    /* The interrupted job ended failed when the pusher came back. */
    KT_EXPECT_INT(job_failure(job), KILN_ECANCELED);
    /* The retry succeeds. */
    KT_REQUIRE(commit(layers, 1, base_digest, "big:1", job, &err) == 0);
    kiln_reply *hold = NULL;
    Kiln__V1__Event *e = wait_job(job, &hold);
    KT_EXPECT(e != NULL && e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED);
    kiln_rpc_reply_free(hold);
    KT_EXPECT_INT(kt_sh("skopeo inspect oci:%s/store:big:1 >/dev/null", data), 0);
    KT_EXPECT_INT(blobs_intact(), 0);
}

/* Commit names directories on the pusher's host: a client reached over
 * tcp:// is refused before any job starts, and nothing is tagged.  (The same
 * request over ipc:// is what every other case here sends.) */
KT_TEST(commit_over_tcp_is_refused)
{
    char d2[600], listen[64], ev[700], layer[700];
    snprintf(d2, sizeof(d2), "%s/tcp-data", dir);
    snprintf(listen, sizeof(listen), "tcp://127.0.0.1:%d", kt_free_port());
    snprintf(ev, sizeof(ev), "ipc://%s/tcp-events.sock", dir);
    snprintf(layer, sizeof(layer), "%s/snapshots/steps/t", d2);
    KT_REQUIRE(kt_sh("mkdir -p %s && echo x > %s/file", layer, layer) == 0);
    char *argv[] = {
        (char *)th_bin("KILN_PUSHER_BIN"), "--data", d2, "--listen", listen, "--events", ev, NULL};
    th_proc p2;
    KT_REQUIRE(th_spawn(&p2, dir, "pusher-tcp", argv) == 0);
    KT_REQUIRE(th_wait_ready(listen, 10000) == 0);
    kiln_rpc_client *tc = NULL;
    kiln_error *err = NULL;
    KT_REQUIRE(kiln_rpc_client_new(&tc, listen, NULL, true, &err) == 0);
    char *layers[] = {layer};
    char *tags[] = {"remote:1"};
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__CommitRequest cr = KILN__V1__COMMIT_REQUEST__INIT;
    cr.layers = layers;
    cr.n_layers = 1;
    cr.tags = tags;
    cr.n_tags = 1;
    req.body_case = KILN__V1__REQUEST__BODY_COMMIT;
    req.commit = &cr;
    kiln_reply *rep = NULL;
    KT_EXPECT_INT(kiln_rpc_call(tc, &req, &rep, 10000, &err), KILN_EPERM);
    KT_EXPECT(err != NULL && strstr(err->msg, "ipc://") != NULL);
    kiln_error_free(&err);
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(tc);
    KT_EXPECT_INT(th_stop(&p2, 10000, NULL), 0);
    KT_EXPECT(kt_sh("grep -q remote %s/store/index.json 2>/dev/null", d2) != 0);
}

KT_TEARDOWN(teardown)
{
    kiln_rpc_client_free(client);
    KT_EXPECT_INT(th_stop(&pusher, 10000, NULL), 0);
    kt_rmrf(dir);
    free(dir);
}
