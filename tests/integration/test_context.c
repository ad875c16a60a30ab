/* Streamed build contexts through raw RPCs on a real kiln-builder: chunk
 * digests are verified, missing chunks fail the build as FAILED_PRECONDITION,
 * and hostile tars (.., absolute names, writes through a symlink, hard links,
 * devices) fail the build cleanly without writing anything outside the
 * context's own directory. */
#include "kt.h"
#include "svc_harness.h"
#include "config.h"
#include "digest.h"
#include "rpc.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char *dir;
static char url_b[300];
static th_proc pusher, builder;
static kiln_rpc_client *client;

static int start_services(void)
{
    dir = kt_tmpdir("ctx");
    if (dir == NULL)
        return -1;
    char url_p[300];
    snprintf(url_p, sizeof(url_p), "ipc://%s/run/pusher.sock", dir);
    snprintf(url_b, sizeof(url_b), "ipc://%s/run/builder.sock", dir);
    char *pargv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", dir, NULL};
    char *bargv[] = {(char *)th_bin("KILN_BUILDER_BIN"), "--data", dir, NULL};
    if (th_spawn(&pusher, dir, "pusher", pargv) < 0 ||
        th_spawn(&builder, dir, "builder", bargv) < 0)
        return -1;
    if (th_wait_ready(url_p, 5000) < 0 || th_wait_ready(url_b, 5000) < 0)
        return -1;
    kiln_error *err = NULL;
    if (kiln_rpc_client_new(&client, url_b, NULL, true, &err) < 0) {
        kiln_error_free(&err);
        return -1;
    }
    return 0;
}

static int put(const char *digest, const void *data, size_t len, bool *existed, kiln_error **err)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ContextPutRequest pr = KILN__V1__CONTEXT_PUT_REQUEST__INIT;
    pr.digest = (char *)digest;
    pr.data.data = (uint8_t *)data;
    pr.data.len = len;
    req.body_case = KILN__V1__REQUEST__BODY_CONTEXT_PUT;
    req.context_put = &pr;
    kiln_reply *rep = NULL;
    int r = kiln_rpc_call(client, &req, &rep, 10000, err);
    if (r == 0 && existed)
        *existed = rep->context_put_reply->existed;
    kiln_rpc_reply_free(rep);
    return r;
}

/* Builds FROM scratch / COPY . / over a one-chunk streamed context and waits
 * for the job's end; returns the failure's wire code (0: completed) and its
 * message in msg. */
static int build_streamed(const char *digest, uint64_t size, char *msg, size_t cap)
{
    Kiln__V1__ContextChunk ch = KILN__V1__CONTEXT_CHUNK__INIT, *chp = &ch;
    ch.digest = (char *)digest;
    ch.size = size;
    Kiln__V1__BuildRequest br = KILN__V1__BUILD_REQUEST__INIT;
    br.dockerfile = "FROM scratch\nCOPY . /\n";
    br.context_digest = (char *)digest;
    br.context_chunks = &chp;
    br.n_context_chunks = 1;
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_BUILD;
    req.build = &br;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    if (kiln_rpc_call(client, &req, &rep, 10000, &err) < 0) {
        snprintf(msg, cap, "%s", err->msg);
        kiln_error_free(&err);
        return -1;
    }
    char job[64];
    snprintf(job, sizeof(job), "%s", rep->job_accepted->job_id);
    kiln_rpc_reply_free(rep);
    for (int i = 0; i < 60; i++) {
        kiln_req w = KILN__V1__REQUEST__INIT;
        Kiln__V1__WaitRequest wr = KILN__V1__WAIT_REQUEST__INIT;
        wr.job_id = job;
        wr.timeout_ms = 1000;
        w.body_case = KILN__V1__REQUEST__BODY_WAIT;
        w.wait = &wr;
        if (kiln_rpc_call(client, &w, &rep, 5000, &err) < 0) {
            snprintf(msg, cap, "%s", err->msg);
            kiln_error_free(&err);
            return -1;
        }
        if (rep->wait_reply->finished) {
            const Kiln__V1__Event *t = rep->wait_reply->terminal;
            int code = 0;
            msg[0] = '\0';
            if (t->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED) {
                code = t->failed->error->code;
                snprintf(msg, cap, "%s", t->failed->error->message);
            }
            kiln_rpc_reply_free(rep);
            return code;
        }
        kiln_rpc_reply_free(rep);
    }
    snprintf(msg, cap, "build did not finish");
    return -1;
}

typedef struct tar_entry {
    const char *name;
    mode_t type;
    const char *data; /* file content or symlink/hardlink target */
    bool hardlink;
} tar_entry;

/* A PAX tar of the given entries in memory (caller frees). */
static uint8_t *make_tar(const tar_entry *e, size_t n, size_t *len)
{
    size_t cap = 1 << 20;
    uint8_t *buf = calloc(1, cap);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_open_memory(a, buf, cap, len);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e[i].name);
        archive_entry_set_perm(ae, e[i].type == AE_IFDIR ? 0755 : 0644);
        archive_entry_set_mtime(ae, 1700000000, 0);
        if (e[i].hardlink) {
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_hardlink(ae, e[i].data);
        } else {
            archive_entry_set_filetype(ae, e[i].type);
            if (e[i].type == AE_IFLNK)
                archive_entry_set_symlink(ae, e[i].data);
            if (e[i].type == AE_IFREG)
                archive_entry_set_size(ae, (la_int64_t)strlen(e[i].data));
        }
        if (e[i].type == AE_IFCHR)
            archive_entry_set_rdev(ae, makedev(1, 3));
        archive_write_header(a, ae);
        if (e[i].type == AE_IFREG && !e[i].hardlink)
            archive_write_data(a, e[i].data, strlen(e[i].data));
        archive_entry_free(ae);
    }
    archive_write_close(a);
    archive_write_free(a);
    return buf;
}

static bool exists(const char *base, const char *name)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", base, name);
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Nothing but chunks/ and the .used marks of finished contexts. */
static int unpacked_contexts(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "test -z \"$(ls -A %s/contexts | grep -v -e '^chunks$' -e '.used$')\"", dir);
    return kt_sh("%s", cmd);
}

KT_SETUP(setup)
{
    KT_REQUIRE(start_services() == 0);
}

KT_TEST(context_put_verifies_digest)
{
    const char *data = "some context bytes";
    char good[KILN_DIGEST_STRLEN + 1], other[KILN_DIGEST_STRLEN + 1];
    kiln_sha256_bytes(data, strlen(data), good);
    kiln_sha256_bytes("other", 5, other);
    kiln_error *err = NULL;
    KT_EXPECT_INT(put(other, data, strlen(data), NULL, &err), KILN_EINVAL);
    KT_EXPECT(err && strstr(err->msg, "mismatch") != NULL);
    kiln_error_free(&err);
    char p[1024];
    snprintf(p, sizeof(p), "%s/contexts/chunks/%s", dir, other + 7);
    KT_EXPECT(access(p, F_OK) != 0);
    KT_EXPECT_INT(put("sha256:nothex", data, strlen(data), NULL, &err), KILN_EINVAL);
    kiln_error_free(&err);
    bool existed = true;
    KT_EXPECT_INT(put(good, data, strlen(data), &existed, &err), 0);
    KT_EXPECT(!existed);
    KT_EXPECT_INT(put(good, data, strlen(data), &existed, &err), 0);
    KT_EXPECT(existed);
    kiln_error_free(&err);

    /* ContextCheck: the stored chunk is not missing, an unknown one is. */
    Kiln__V1__ContextChunk c0 = KILN__V1__CONTEXT_CHUNK__INIT, c1 = KILN__V1__CONTEXT_CHUNK__INIT;
    c0.digest = good;
    c0.size = strlen(data);
    c1.digest = other;
    c1.size = 5;
    Kiln__V1__ContextChunk *cs[2] = {&c0, &c1};
    Kiln__V1__ContextCheckRequest cr = KILN__V1__CONTEXT_CHECK_REQUEST__INIT;
    cr.context_digest = other;
    cr.chunks = cs;
    cr.n_chunks = 2;
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_CONTEXT_CHECK;
    req.context_check = &cr;
    kiln_reply *rep = NULL;
    KT_REQUIRE(kiln_rpc_call(client, &req, &rep, 5000, &err) == 0);
    KT_EXPECT(!rep->context_check_reply->ready);
    KT_REQUIRE(rep->context_check_reply->n_missing == 1);
    KT_EXPECT_INT(rep->context_check_reply->missing[0], 1);
    kiln_rpc_reply_free(rep);
}

KT_TEST(context_missing_chunk_fails_precondition)
{
    char d[KILN_DIGEST_STRLEN + 1], msg[512];
    kiln_sha256_bytes("never sent", 10, d);
    KT_EXPECT_INT(build_streamed(d, 10, msg, sizeof(msg)), KILN__V1__CODE__FAILED_PRECONDITION);
    KT_EXPECT(strstr(msg, "missing") != NULL);
}

/* Sends a crafted tar as one chunk and builds it: the build must fail with
 * INVALID_ARGUMENT naming the refusal, and leave no unpacked context. */
static void expect_refused(const tar_entry *e, size_t n, const char *what)
{
    size_t len = 0;
    uint8_t *tar = make_tar(e, n, &len);
    KT_REQUIRE(tar != NULL && len > 0);
    char d[KILN_DIGEST_STRLEN + 1], msg[512];
    kiln_sha256_bytes(tar, len, d);
    kiln_error *err = NULL;
    if (put(d, tar, len, NULL, &err) < 0) {
        KT_FAIL("ContextPut: %s", err ? err->msg : "?");
        kiln_error_free(&err);
        free(tar);
        return;
    }
    int code = build_streamed(d, len, msg, sizeof(msg));
    if (code != KILN__V1__CODE__INVALID_ARGUMENT || strstr(msg, what) == NULL)
        KT_FAIL("code %d, message '%s'; wanted INVALID_ARGUMENT with '%s'", code, msg, what);
    KT_EXPECT_INT(unpacked_contexts(), 0);
    free(tar);
}

KT_TEST(context_hostile_tars_write_nothing_outside)
{
    char outside[600];
    snprintf(outside, sizeof(outside), "%s/outside", dir);
    KT_REQUIRE(mkdir(outside, 0755) == 0);
    char abs[700];
    snprintf(abs, sizeof(abs), "%s/abs.txt", outside);

    tar_entry dotdot[] = {{"ok.txt", AE_IFREG, "fine", false},
                          {"../escape.txt", AE_IFREG, "pwned", false}};
    expect_refused(dotdot, 2, "refused entry");
    KT_EXPECT(!exists(dir, "contexts/escape.txt"));
    KT_EXPECT(!exists(dir, "escape.txt"));

    tar_entry deep[] = {{"a/b/../../../escape2.txt", AE_IFREG, "pwned", false}};
    expect_refused(deep, 1, "refused entry");
    KT_EXPECT(!exists(dir, "contexts/escape2.txt"));

    tar_entry absolute[] = {{abs, AE_IFREG, "pwned", false}};
    expect_refused(absolute, 1, "refused entry");
    KT_EXPECT(!exists(outside, "abs.txt"));

    /* A symlink to a directory outside, then a file "through" it. */
    tar_entry through[] = {{"evil", AE_IFLNK, outside, false},
                           {"evil/planted.txt", AE_IFREG, "pwned", false}};
    size_t len = 0;
    uint8_t *tar = make_tar(through, 2, &len);
    char d[KILN_DIGEST_STRLEN + 1], msg[512];
    kiln_sha256_bytes(tar, len, d);
    kiln_error *err = NULL;
    KT_REQUIRE(put(d, tar, len, NULL, &err) == 0);
    int code = build_streamed(d, len, msg, sizeof(msg));
    if (code == 0 || strstr(msg, "planted.txt") == NULL)
        KT_FAIL("write through a symlink: code %d, message '%s'", code, msg);
    KT_EXPECT(!exists(outside, "planted.txt"));
    free(tar);
    KT_EXPECT_INT(unpacked_contexts(), 0);

    tar_entry hard[] = {{"h", AE_IFREG, "/etc/passwd", true}};
    expect_refused(hard, 1, "hard link");
    tar_entry dev[] = {{"null", AE_IFCHR, "", false}};
    expect_refused(dev, 1, "only files, directories and symlinks");
}

KT_TEARDOWN(teardown)
{
    if (client)
        kiln_rpc_client_free(client);
    client = NULL;
    if (builder.pid > 0)
        KT_EXPECT_INT(th_stop(&builder, 10000, NULL), 0);
    if (pusher.pid > 0)
        KT_EXPECT_INT(th_stop(&pusher, 10000, NULL), 0);
    if (dir)
        kt_rmrf(dir);
}
