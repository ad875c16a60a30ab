/* A step's index entry is its commit point: the step dir must reach the disk
 * before the entry that names it is published.  Linked with
 * -Wl,--wrap=rename,--wrap=renameat,--wrap=syncfs, so every rename and syncfs the engine
 * makes is recorded here (and then done); a build of a COPY step (a real
 * kiln-pusher on a temp data dir) must show, for its key: the rename of the
 * step dir into place, then a syncfs of the data dir's filesystem, then the
 * rename of the index entry.  Also checks the step's generation id file.
 * Needs root (owners of copied files): exits 77 otherwise. */
#include "kt.h"
#include "svc_harness.h"
#include "bld_engine.h"
#include "error.h"
#include "rpc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int __real_rename(const char *from, const char *to);
int __real_renameat(int fromfd, const char *from, int tofd, const char *to);
int __real_syncfs(int fd);
int __wrap_rename(const char *from, const char *to);
int __wrap_renameat(int fromfd, const char *from, int tofd, const char *to);
int __wrap_syncfs(int fd);

#define MAX_CALLS 256
static struct call {
    char op; /* 'r' rename, 's' syncfs */
    char to[600];
    dev_t dev;
} calls[MAX_CALLS];
static size_t n_calls;
static pthread_mutex_t calls_mu = PTHREAD_MUTEX_INITIALIZER;

int __wrap_rename(const char *from, const char *to)
{
    pthread_mutex_lock(&calls_mu);
    if (n_calls < MAX_CALLS) {
        calls[n_calls].op = 'r';
        snprintf(calls[n_calls].to, sizeof(calls[0].to), "%s", to);
        n_calls++;
    }
    pthread_mutex_unlock(&calls_mu);
    return __real_rename(from, to);
}

/* The atomic file writer (common/fs.c) renames relative to a directory fd:
 * recorded with the directory's path, as rename would be. */
int __wrap_renameat(int fromfd, const char *from, int tofd, const char *to)
{
    char dir[512] = "", link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", tofd);
    ssize_t n = tofd == AT_FDCWD ? 0 : readlink(link, dir, sizeof(dir) - 1);
    dir[n > 0 ? n : 0] = '\0';
    pthread_mutex_lock(&calls_mu);
    if (n_calls < MAX_CALLS) {
        calls[n_calls].op = 'r';
        snprintf(calls[n_calls].to, sizeof(calls[0].to), "%s%s%s", dir, *dir ? "/" : "", to);
        n_calls++;
    }
    pthread_mutex_unlock(&calls_mu);
    return __real_renameat(fromfd, from, tofd, to);
}

int __wrap_syncfs(int fd)
{
    struct stat st;
    pthread_mutex_lock(&calls_mu);
    if (n_calls < MAX_CALLS) {
        calls[n_calls].op = 's';
        calls[n_calls].dev = fstat(fd, &st) == 0 ? st.st_dev : 0;
        n_calls++;
    }
    pthread_mutex_unlock(&calls_mu);
    return __real_syncfs(fd);
}

static char *dir;
static char data[512], url[600];
static th_proc pusher;
static kiln_rpc_client *client;
static bld_engine *engine;
static char step_key[80];

static void on_step_done(void *ud, size_t stage, size_t step, int cached, const char *key,
                         uint64_t bytes, uint64_t ms)
{
    if (bytes > 0)
        snprintf(step_key, sizeof(step_key), "%s", key);
}

KT_SETUP(setup)
{
    kiln_error *err = NULL;
    if (geteuid() != 0) {
        fprintf(stderr, "skip: needs root\n");
        exit(77);
    }
    dir = kt_tmpdir("engine-sync");
    KT_REQUIRE(dir != NULL);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(url, sizeof(url), "ipc://%s/run/pusher.sock", data);
    KT_REQUIRE(kt_sh("mkdir -p %s %s/ctx && printf 'content\\n' > %s/ctx/f", data, dir, dir) == 0);
    char *argv[] = {(char *)th_bin("KILN_PUSHER_BIN"), "--data", data, NULL};
    KT_REQUIRE(th_spawn(&pusher, dir, "pusher", argv) == 0);
    KT_REQUIRE(th_wait_ready(url, 10000) == 0);
    KT_REQUIRE(kiln_rpc_client_new(&client, url, NULL, true, &err) == 0);
    KT_REQUIRE(bld_engine_new(&engine, data, client, &err) == 0);
}

/* Index of the first recorded call at or after from matching op and, for a
 * rename, whose target is `to`; -1 when none. */
static long find(size_t from, char op, const char *to, dev_t dev)
{
    for (size_t i = from; i < n_calls; i++)
        if (calls[i].op == op && (op != 'r' || strcmp(calls[i].to, to) == 0) &&
            (op != 's' || calls[i].dev == dev))
            return (long)i;
    return -1;
}

KT_TEST(step_synced_before_its_index_entry)
{
    char ctx[600];
    snprintf(ctx, sizeof(ctx), "%s/ctx", dir);
    const char *tags[] = {"sync:1"};
    bld_build_spec spec = {
        .context_dir = ctx,
        .dockerfile = "FROM scratch\nCOPY f /f\n",
        .tags = tags,
        .n_tags = 1,
        .source_date_epoch = -1,
    };
    bld_build_events ev = {.step_done = on_step_done};
    bld_build_result res = {0};
    kiln_error *err = NULL;
    n_calls = 0;
    int rc = bld_build(engine, &spec, &ev, &res, &err);
    if (rc < 0)
        fprintf(stderr, "build: %s\n", err ? err->msg : "?");
    KT_REQUIRE(rc == 0);
    KT_REQUIRE(strncmp(step_key, "sha256:", 7) == 0);
    const char *hex = step_key + 7;

    char step_dir[800], index[800];
    snprintf(step_dir, sizeof(step_dir), "%s/snapshots/steps/%s", data, hex);
    snprintf(index, sizeof(index), "%s/cache/steps/%s", data, hex);
    struct stat st;
    KT_REQUIRE(stat(data, &st) == 0);
    long i_step = find(0, 'r', step_dir, 0);
    long i_index = find(0, 'r', index, 0);
    KT_EXPECT(i_step >= 0);
    KT_EXPECT(i_index > i_step);
    long i_sync = i_step >= 0 ? find((size_t)i_step + 1, 's', NULL, st.st_dev) : -1;
    if (i_sync < 0 || i_sync > i_index)
        KT_FAIL("no syncfs of the data dir's filesystem between the step dir's rename (call %ld) "
                "and its index entry's (call %ld); syncfs at %ld",
                i_step, i_index, i_sync);

    /* The step's generation id: 32 hex digits beside its diff. */
    KT_EXPECT_INT(kt_sh("grep -qxE '[0-9a-f]{32}' %s/id", step_dir), 0);
    kiln_error_free(&err);
}

KT_TEARDOWN(teardown)
{
    bld_engine_free(engine);
    if (client)
        kiln_rpc_client_free(client);
    if (pusher.pid > 0)
        th_stop(&pusher, 10000, NULL);
    if (dir && !getenv("KT_KEEP"))
        kt_rmrf(dir);
}
