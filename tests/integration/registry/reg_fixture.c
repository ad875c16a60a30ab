/* Registry test fixture (see reg_fixture.h).  docker-registry is always
 * started by hand on 127.0.0.1 with its own config; the packaged service is
 * never used. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "reg_fixture.h"

#ifndef KILN_FAKES_DIR
#error "KILN_FAKES_DIR must point at tests/fakes"
#endif

static pid_t spawn_logged(const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setpgid(0, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int make_certs(rf_registry *r)
{
    /* A CA and a server certificate for IP 127.0.0.1 signed by it. */
    return kt_sh(
        "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-test-ca "
        "-keyout ca.key -out ca.crt >/dev/null 2>&1 && "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
        "-out server.csr >/dev/null 2>&1 && "
        "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-days 2 -extfile san.ext -out server.crt >/dev/null 2>&1 && "
        "mkdir -p certs.d/%s && cp ca.crt certs.d/%s/ca.crt",
        r->dir, r->host, r->host);
}

int rf_registry_start(rf_registry *r, bool tls, rf_auth auth, int token_life)
{
    memset(r, 0, sizeof(*r));
    static const char *tools[] = {"docker-registry", "skopeo",   "umoci", "python3",
                                  "openssl",         "htpasswd", "curl"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(tools); i++) {
        if (!kt_have(tools[i])) {
            fprintf(stderr, "skipped: %s is not installed\n", tools[i]);
            return 77;
        }
    }
    r->dir = kt_tmpdir("reg");
    r->port = kt_free_port();
    r->tls = tls;
    snprintf(r->host, sizeof(r->host), "127.0.0.1:%d", r->port);
    snprintf(r->certs_d, sizeof(r->certs_d), "%s/certs.d", r->dir);
    if (tls && make_certs(r) != 0)
        return -1;
    char cfg[16384];
    int n = snprintf(cfg, sizeof(cfg),
                     "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                     "storage:\n  filesystem:\n    rootdirectory: %s/data\n  delete:\n"
                     "    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n"
                     "http:\n  addr: 127.0.0.1:%d\n  secret: kiln-test-secret\n",
                     r->dir, r->port);
    if (tls)
        n += snprintf(cfg + n, sizeof(cfg) - (size_t)n,
                      "  tls:\n    certificate: %s/server.crt\n    key: %s/server.key\n", r->dir,
                      r->dir);
    if (auth == RF_AUTH_BASIC) {
        if (kt_sh("htpasswd -Bbn kiln s3cret-pw > %s/htpasswd 2>/dev/null", r->dir) != 0)
            return -1;
        n += snprintf(cfg + n, sizeof(cfg) - (size_t)n,
                      "auth:\n  htpasswd:\n    realm: kiln-test\n    path: %s/htpasswd\n", r->dir);
    } else if (auth == RF_AUTH_TOKEN) {
        r->token_port = kt_free_port();
        if (kt_sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kiln-token "
                  "-keyout token.key -out token.crt >/dev/null 2>&1",
                  r->dir) != 0)
            return -1;
        n += snprintf(cfg + n, sizeof(cfg) - (size_t)n,
                      "auth:\n  token:\n    realm: http://127.0.0.1:%d/token\n"
                      "    service: kiln-test-registry\n    issuer: kiln-test-issuer\n"
                      "    rootcertbundle: %s/token.crt\n",
                      r->token_port, r->dir);
        char port[16], life[16], key[4200], crt[4200];
        snprintf(port, sizeof(port), "%d", r->token_port);
        snprintf(life, sizeof(life), "%d", token_life);
        snprintf(key, sizeof(key), "%s/token.key", r->dir);
        snprintf(crt, sizeof(crt), "%s/token.crt", r->dir);
        snprintf(r->token_log, sizeof(r->token_log), "%s/token.log", r->dir);
        char *argv[] = {"python3",    KILN_FAKES_DIR "/token_server.py",
                        "--port",     port,
                        "--key",      key,
                        "--cert",     crt,
                        "--life",     life,
                        "--user",     "kiln",
                        "--password", "s3cret-pw",
                        "--log",      r->token_log,
                        NULL};
        char tlog[4300];
        snprintf(tlog, sizeof(tlog), "%s/token.out", r->dir);
        r->token_pid = spawn_logged(tlog, argv);
        if (kt_wait_port(r->token_port, 10000) != 0)
            return -1;
    }
    char path[4200], log[4200];
    snprintf(path, sizeof(path), "%s/config.yml", r->dir);
    snprintf(log, sizeof(log), "%s/registry.log", r->dir);
    if (kt_write_file(path, cfg) != 0)
        return -1;
    char *argv[] = {"docker-registry", "serve", path, NULL};
    r->pid = spawn_logged(log, argv);
    if (r->pid < 0 || kt_wait_port(r->port, 15000) != 0) {
        fprintf(stderr, "docker-registry did not start; log in %s\n", log);
        return -1;
    }
    return 0;
}

static void stop_pid(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        for (int i = 0; i < 100; i++) {
            if (waitpid(*pid, NULL, WNOHANG) == *pid) {
                *pid = 0;
                return;
            }
            usleep(20000);
        }
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

void rf_registry_stop(rf_registry *r)
{
    stop_pid(&r->pid);
    stop_pid(&r->token_pid);
    if (getenv("KT_KEEP") == NULL)
        kt_rmrf(r->dir);
    free(r->dir);
    r->dir = NULL;
}

int rf_proxy_start(rf_proxy *p, const char *dir, int upstream, const char *pattern)
{
    memset(p, 0, sizeof(*p));
    p->port = kt_free_port();
    snprintf(p->stats, sizeof(p->stats), "%s/proxy-%d.json", dir, p->port);
    char port[16], up[32], log[4300];
    snprintf(port, sizeof(port), "%d", p->port);
    snprintf(up, sizeof(up), "%d", upstream);
    snprintf(log, sizeof(log), "%s/proxy-%d.log", dir, p->port);
    char *argv[] = {"python3",    KILN_FAKES_DIR "/fault_proxy.py",
                    "--port",     port,
                    "--upstream", up,
                    "--pattern",  (char *)pattern,
                    "--stats",    p->stats,
                    NULL};
    p->pid = spawn_logged(log, argv);
    return kt_wait_port(p->port, 10000);
}

long long rf_proxy_stat(const rf_proxy *p, const char *key)
{
    _cleanup_free_ char *s = kt_read_file(p->stats, NULL);
    if (s == NULL)
        return -1;
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    const char *at = strstr(s, pat);
    return at ? atoll(at + strlen(pat)) : -1;
}

void rf_proxy_stop(rf_proxy *p)
{
    stop_pid(&p->pid);
}

static int commit_tree(psh_store *s, const char *dir, const char *tag, const char *arch,
                       psh_commit_result *out)
{
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    spec.platform.os = "linux";
    spec.platform.architecture = arch;
    spec.layers = &dir;
    spec.n_layers = 1;
    spec.tags = &tag;
    spec.n_tags = 1;
    spec.created = 1700000000;
    static const char *cmd[] = {"/bin/sh"};
    spec.config.cmd = (psh_strv){cmd, 1, true};
    kiln_error *err = NULL;
    int r = psh_commit(s, &spec, out, &err);
    if (r < 0)
        fprintf(stderr, "commit: %s\n", err->msg);
    kiln_error_free(&err);
    return r;
}

int rf_busybox_image(psh_store *s, const char *data_dir, const char *tag, const char *marker,
                     psh_commit_result *out)
{
    return rf_busybox_image_arch(s, data_dir, tag, marker, "amd64", out);
}

int rf_busybox_image_arch(psh_store *s, const char *data_dir, const char *tag, const char *marker,
                          const char *arch, psh_commit_result *out)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/tree-%ld-%d", data_dir, (long)time(NULL), rand());
    if (kt_sh("mkdir -p %s/bin %s/etc && cp /bin/busybox %s/bin/busybox && "
              "ln -s busybox %s/bin/sh && printf '%%s\\n' '%s' > %s/etc/marker",
              dir, dir, dir, dir, marker, dir) != 0)
        return -1;
    return commit_tree(s, dir, tag, arch, out);
}

int rf_random_image(psh_store *s, const char *data_dir, const char *tag, size_t size,
                    const char *arch, char *out_manifest, char *out_layer)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/random-%d.bin", data_dir, rand());
    if (kt_sh("head -c %zu /dev/urandom > %s", size, path) != 0)
        return -1;
    kiln_error *err = NULL;
    char layer[KILN_DIGEST_STRLEN + 1], cfgd[KILN_DIGEST_STRLEN + 1], mand[KILN_DIGEST_STRLEN + 1];
    int fd = open(path, O_RDONLY);
    uint64_t lsize = 0;
    int r = psh_store_put_blob_fd(s, NULL, NULL, fd, layer, &lsize, &err);
    close(fd);
    unlink(path);
    char cfg[1024], man[2048];
    if (r == 0) {
        snprintf(cfg, sizeof(cfg),
                 "{\"architecture\":\"%s\",\"os\":\"linux\",\"config\":{\"Labels\":{\"n\":\"%d\"}},"
                 "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]}}",
                 arch, rand(), layer);
        r = psh_store_put_blob_bytes(s, NULL, NULL, cfg, strlen(cfg), cfgd, &err);
    }
    if (r == 0) {
        snprintf(man, sizeof(man),
                 "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"config\":{\"mediaType\":\"%s\","
                 "\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"%s\",\"digest\":"
                 "\"%s\",\"size\":%llu}]}",
                 PSH_MT_OCI_MANIFEST, PSH_MT_OCI_CONFIG, cfgd, strlen(cfg), PSH_MT_OCI_LAYER, layer,
                 (unsigned long long)lsize);
        r = psh_store_put_blob_bytes(s, NULL, NULL, man, strlen(man), mand, &err);
    }
    if (r == 0) {
        psh_descriptor d = {.media_type = PSH_MT_OCI_MANIFEST, .size = strlen(man)};
        snprintf(d.digest, sizeof(d.digest), "%s", mand);
        r = psh_store_tag_descriptor(s, &d, "linux", arch, NULL, tag, &err);
    }
    if (r < 0)
        fprintf(stderr, "random image: %s\n", err->msg);
    kiln_error_free(&err);
    if (r == 0 && out_manifest)
        memcpy(out_manifest, mand, sizeof(mand));
    if (r == 0 && out_layer)
        memcpy(out_layer, layer, sizeof(layer));
    (void)data_dir;
    return r;
}

void rf_opts(psh_registry_opts *o, const rf_registry *r)
{
    psh_registry_opts_init(o);
    o->tls_verify = r == NULL || r->tls;
    o->cert_dir = r && r->tls ? r->certs_d : NULL;
    o->retry_base_ms = 50;
    o->authfile = "/nonexistent/kiln-test-config.json"; /* never the user's */
}

static void ev_started(void *ud, const char *d, uint64_t s)
{
    (void)d;
    (void)s;
    __atomic_add_fetch(&((rf_counts *)ud)->started, 1, __ATOMIC_RELAXED);
}
static void ev_progress(void *ud, const char *d, uint64_t done, uint64_t total)
{
    (void)d;
    (void)done;
    (void)total;
    rf_counts *c = ud;
    __atomic_add_fetch(&c->progress, 1, __ATOMIC_RELAXED);
    if (c->progress_sleep_ms > 0)
        usleep((useconds_t)c->progress_sleep_ms * 1000);
}
static void ev_skipped(void *ud, const char *d, uint64_t s)
{
    (void)d;
    (void)s;
    __atomic_add_fetch(&((rf_counts *)ud)->skipped, 1, __ATOMIC_RELAXED);
}
static void ev_mounted(void *ud, const char *d, const char *from)
{
    (void)d;
    (void)from;
    __atomic_add_fetch(&((rf_counts *)ud)->mounted, 1, __ATOMIC_RELAXED);
}
static void ev_retried(void *ud, const char *what, const char *why)
{
    (void)what;
    if (getenv("KT_VERBOSE"))
        fprintf(stderr, "    retried: %s\n", why);
    __atomic_add_fetch(&((rf_counts *)ud)->retried, 1, __ATOMIC_RELAXED);
}
static void ev_done(void *ud, const char *d, uint64_t s)
{
    (void)d;
    (void)s;
    __atomic_add_fetch(&((rf_counts *)ud)->done, 1, __ATOMIC_RELAXED);
}
static void ev_manifest(void *ud, const char *d, const char *ref)
{
    (void)d;
    (void)ref;
    __atomic_add_fetch(&((rf_counts *)ud)->manifests, 1, __ATOMIC_RELAXED);
}

void rf_events(psh_reg_events *ev, rf_counts *c)
{
    int sleep_ms = c->progress_sleep_ms;
    memset(c, 0, sizeof(*c));
    c->progress_sleep_ms = sleep_ms;
    *ev = (psh_reg_events){ev_started, ev_progress, ev_skipped,  ev_mounted,
                           ev_retried, ev_done,     ev_manifest, c};
}

/* KILN_DEBUG=registry turns on the client's debug lines in tests. */
__attribute__((constructor)) static void rf_log_init(void)
{
    const char *d = getenv("KILN_DEBUG");
    if (d != NULL) {
        kiln_log_setup("test", KILN_LOG_DEBUG, KILN_LOG_LOGFMT);
        kiln_log_debug_areas(d);
    }
}

int rf_env_open(rf_env *e, bool tls, rf_auth auth, int token_life)
{
    int r = rf_registry_start(&e->reg, tls, auth, token_life);
    if (r == 77)
        exit(77);
    e->s = NULL;
    e->dir = kt_tmpdir("reg");
    if (r != 0 || e->dir == NULL)
        return -1;
    return psh_store_open(&e->s, e->dir, NULL);
}

void rf_env_close(rf_env *e)
{
    psh_store_free(e->s);
    if (getenv("KT_KEEP") == NULL)
        kt_rmrf(e->dir);
    free(e->dir);
    rf_registry_stop(&e->reg);
}
