/* Service scaffolding shared by kiln-builder and kiln-pusher. */
#include "service.h"
#include "cleanup.h"
#include "config.h"
#include "fs.h"
#include "units.h"
#include "http.h"
#include "log.h"

#include <limits.h>
#include <pthread.h>
#include <execinfo.h>
#include <grp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct kiln_service {
    const kiln_service_opts *o;
    kiln_service_hooks hooks;
    kiln_rpc_method *methods;
    size_t n_methods;
    kiln_rpc_server *rpc;
    kiln_events *events;
    kiln_http *http;
    unsigned long long started_ms;
    size_t n_listen_bound, n_events_bound; /* extra endpoints listening */
    atomic_bool draining;
    int sig; /* the signal kiln_service_wait returned */
};

static void shutdown_sigs(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* A crash leaves its backtrace in the log (raw frames: resolve them with
 * `addr2line -f -e BINARY`), then dies of the same signal for the core dump
 * and the exit status.  Only async-signal-safe calls; backtrace() is loaded
 * once beforehand so the handler does not hit the dynamic loader. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KILN_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KILN_SANITIZED 1
#endif
#ifndef KILN_SANITIZED
static void on_fatal(int sig)
{
    static const char head[] = "kiln: fatal signal, backtrace:\n";
    ssize_t w = write(2, head, sizeof(head) - 1);
    (void)w;
    void *frames[64];
    int n = backtrace(frames, 64);
    backtrace_symbols_fd(frames, n, 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_crash_handlers(void)
{
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
    sigaltstack(&ss, NULL);
    void *warm[1];
    backtrace(warm, 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal;
    sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}
#else
static void install_crash_handlers(void)
{
    /* the sanitizers report crashes themselves */
}
#endif

void kiln_service_block_signals(void)
{
    sigset_t set;
    shutdown_sigs(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A shell starts background commands with SIGINT ignored, and an ignored
     * signal is discarded before sigwait() could take it. */
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    install_crash_handlers();
}

const char kiln_service_common_usage[] =
    "  --data DIR            data directory (env KILN_DATA; default /var/lib/kiln as root,\n"
    "                        else $XDG_DATA_HOME/kiln or ~/.local/share/kiln)\n"
    "  --listen URL          RPC endpoint: ipc://PATH, tcp://HOST:PORT, tls+tcp://HOST:PORT;\n"
    "                        repeat for more (up to 4: ipc:// for the pod, tls+tcp:// for "
    "clients)\n"
    "  --events URL          event (pub/sub) endpoint, same schemes; repeatable like --listen\n"
    "  --http ADDR           serve /healthz, /readyz and /metrics on ADDR (e.g. 127.0.0.1:9090)\n"
    "  --node-name NAME      this node's stable name in a farm (default $HOSTNAME, else the\n"
    "                        hostname: kiln-0, kiln-1 ... in a StatefulSet)\n"
    "  --grace-period SECS   on SIGTERM, how long running work may finish before it is\n"
    "                        cancelled (default 600; readiness turns false at once)\n"
    "  --tls-cert FILE       PEM certificate for tls+tcp:// endpoints\n"
    "  --tls-key FILE        PEM private key for --tls-cert\n"
    "  --tls-ca FILE         PEM CA bundle; clients must present a certificate it signed\n"
    "  --tls-server-name N   name a dialled service's certificate must carry (default: the\n"
    "                        URL's host, matched against DNS subjectAltNames)\n"
    "  --allow-insecure-tcp  allow tcp:// (or tls+tcp:// without --tls-ca) on non-loopback\n"
    "                        addresses: anyone who can connect can run builds\n"
    "  --socket-group G      group (name or gid) of the ipc:// sockets (mode 0660) and of\n"
    "                        DATA/run (then 0750); default: only the service's user\n"
    "  --workers N           concurrent RPCs in flight (default 32)\n"
    "  --max-msg SIZE        largest request accepted (default 4M)\n"
    "  --log-level LEVEL     debug|info|warn|error (default info; KILN_DEBUG=area,... for debug)\n"
    "  --log-format FMT      logfmt|json (default logfmt)\n"
    "  -h, --help            show this help\n"
    "  -V, --version         show the version\n";

void kiln_service_opts_init(kiln_service_opts *o, const char *name, const char *topic,
                            kiln_endpoint listen_ep, kiln_endpoint events_ep)
{
    memset(o, 0, sizeof(*o));
    o->name = name;
    o->topic = topic;
    o->listen_ep = listen_ep;
    o->events_ep = events_ep;
    o->drain_ms = 10000;
    o->grace_ms = KILN_SERVICE_GRACE_MS;
}

void kiln_service_opts_dispose(kiln_service_opts *o)
{
    free(o->data_dir);
    free(o->listen_url);
    free(o->events_url);
    for (size_t i = 0; i < o->n_listen_more; i++)
        free(o->listen_more[i]);
    for (size_t i = 0; i < o->n_events_more; i++)
        free(o->events_more[i]);
    free(o->node_name);
    free(o->http_addr);
    free((char *)o->transport.tls.cert);
    free((char *)o->transport.tls.key);
    free((char *)o->transport.tls.ca);
    free((char *)o->transport.tls.server_name);
    memset(o, 0, sizeof(*o));
}

enum {
    OPT_DATA = 1000,
    OPT_LISTEN,
    OPT_EVENTS,
    OPT_HTTP,
    OPT_CERT,
    OPT_KEY,
    OPT_CA,
    OPT_SNI,
    OPT_INSECURE,
    OPT_WORKERS,
    OPT_MAXMSG,
    OPT_LOGLEVEL,
    OPT_LOGFMT,
    OPT_SOCKGROUP,
    OPT_NODE,
    OPT_GRACE,
};

static const struct option common_opts[] = {
    {"data", required_argument, NULL, OPT_DATA},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"events", required_argument, NULL, OPT_EVENTS},
    {"http", required_argument, NULL, OPT_HTTP},
    {"tls-cert", required_argument, NULL, OPT_CERT},
    {"tls-key", required_argument, NULL, OPT_KEY},
    {"tls-ca", required_argument, NULL, OPT_CA},
    {"tls-server-name", required_argument, NULL, OPT_SNI},
    {"allow-insecure-tcp", no_argument, NULL, OPT_INSECURE},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"max-msg", required_argument, NULL, OPT_MAXMSG},
    {"log-level", required_argument, NULL, OPT_LOGLEVEL},
    {"log-format", required_argument, NULL, OPT_LOGFMT},
    {"socket-group", required_argument, NULL, OPT_SOCKGROUP},
    {"node-name", required_argument, NULL, OPT_NODE},
    {"grace-period", required_argument, NULL, OPT_GRACE},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
};

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
}

/* ---- farm node flags: several endpoints, node name, grace period ---- */

/* The first --listen (--events) is the primary endpoint, later ones are
 * added to more[]. */
static int add_endpoint(char **first, char **more, size_t *n_more, const char *flag,
                        const char *url, kiln_error **err)
{
    if (*first == NULL) {
        set_str(first, url);
        return 0;
    }
    if (*n_more + 1 >= KILN_SERVICE_MAX_ENDPOINTS)
        return kiln_error_set(err, KILN_EINVAL, 0, "at most %d %s endpoints",
                              KILN_SERVICE_MAX_ENDPOINTS, flag);
    more[(*n_more)++] = strdup(url);
    return 0;
}

/* A node name is a DNS label or dotted name: it shows in Status and logs. */
static bool node_name_valid(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
              (n[i] >= '0' && n[i] <= '9') || n[i] == '-' || n[i] == '.' || n[i] == '_'))
            return false;
    return true;
}

static char *default_node_name(void)
{
    const char *env = getenv("HOSTNAME");
    if (env && node_name_valid(env))
        return strdup(env);
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) == 0 && node_name_valid(host))
        return strdup(host);
    return strdup("localhost");
}

static int parse_grace(kiln_service_opts *o, const char *arg, kiln_error **err)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end || v < 0 || v > 86400)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "--grace-period wants 0..86400 seconds, got '%s'", arg);
    o->grace_ms = (int)v * 1000;
    return 0;
}

/* all[] (cap entries) receives the common flags, then the service's own,
 * then the zero entry that ends a getopt_long table. */
static int option_table(struct option *all, size_t cap, const kiln_service_flags *extra,
                        kiln_error **err)
{
    size_t n_common = KILN_ARRAY_SIZE(common_opts), n_extra = 0;
    if (extra && extra->options)
        while (extra->options[n_extra].name)
            n_extra++;
    if (n_common + n_extra + 1 > cap)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "too many flags");
    memcpy(all, common_opts, sizeof(common_opts));
    if (n_extra)
        memcpy(all + n_common, extra->options, n_extra * sizeof(struct option));
    memset(&all[n_common + n_extra], 0, sizeof(struct option));
    return 0;
}

/* --socket-group: a numeric gid, else a group name. */
static int parse_socket_group(kiln_service_opts *o, const char *arg, kiln_error **err)
{
    char *end = NULL;
    unsigned long v = strtoul(arg, &end, 10);
    if (*arg != '\0' && *end == '\0' && v < 0x7fffffffUL) {
        o->transport.ipc_gid = (gid_t)v;
    } else {
        struct group gr, *res = NULL;
        char buf[4096];
        if (getgrnam_r(arg, &gr, buf, sizeof(buf), &res) != 0 || res == NULL)
            return kiln_error_set(err, KILN_EINVAL, 0, "--socket-group: no group named '%s'", arg);
        o->transport.ipc_gid = res->gr_gid;
    }
    o->transport.ipc_group_set = true;
    return 0;
}

static int parse_workers(kiln_service_opts *o, const char *arg, kiln_error **err)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end || v < 1 || v > 1024)
        return kiln_error_set(err, KILN_EINVAL, 0, "--workers wants 1..1024, got '%s'", arg);
    o->workers = (int)v;
    return 0;
}

static int parse_max_msg(kiln_service_opts *o, const char *arg, kiln_error **err)
{
    long long v = kiln_parse_size(arg);
    if (v < 1024 || v > (1LL << 30))
        return kiln_error_set(err, KILN_EINVAL, 0, "--max-msg wants 1K..1G, got '%s'", arg);
    o->max_msg = (size_t)v;
    return 0;
}

/* The log flags are only collected here: logging is set up once all flags
 * are read. */
struct log_flags {
    int level, fmt;
};

/* Applies common flag c with its argument: 0, 1 when c is not a common flag
 * (a service's own, or a getopt complaint), or KILN_EINVAL. */
static int common_flag(kiln_service_opts *o, int c, const char *arg, struct log_flags *lf,
                       kiln_error **err)
{
    switch (c) {
    case OPT_DATA:
        set_str(&o->data_dir, arg);
        return 0;
    case OPT_LISTEN:
        return add_endpoint(&o->listen_url, o->listen_more, &o->n_listen_more, "--listen", arg,
                            err);
    case OPT_EVENTS:
        return add_endpoint(&o->events_url, o->events_more, &o->n_events_more, "--events", arg,
                            err);
    case OPT_NODE:
        if (!node_name_valid(arg))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "--node-name wants letters, digits, '-', '.', '_', got '%s'",
                                  arg);
        set_str(&o->node_name, arg);
        return 0;
    case OPT_GRACE:
        return parse_grace(o, arg, err);
    case OPT_HTTP:
        set_str(&o->http_addr, arg);
        return 0;
    case OPT_CERT:
        set_str((char **)&o->transport.tls.cert, arg);
        return 0;
    case OPT_KEY:
        set_str((char **)&o->transport.tls.key, arg);
        return 0;
    case OPT_CA:
        set_str((char **)&o->transport.tls.ca, arg);
        return 0;
    case OPT_SNI:
        set_str((char **)&o->transport.tls.server_name, arg);
        return 0;
    case OPT_INSECURE:
        o->transport.allow_insecure = true;
        return 0;
    case OPT_SOCKGROUP:
        return parse_socket_group(o, arg, err);
    case OPT_WORKERS:
        return parse_workers(o, arg, err);
    case OPT_MAXMSG:
        return parse_max_msg(o, arg, err);
    case OPT_LOGLEVEL:
        if ((lf->level = kiln_log_level_parse(arg)) < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "unknown log level '%s'", arg);
        return 0;
    case OPT_LOGFMT:
        if ((lf->fmt = kiln_log_format_parse(arg)) < 0)
            return kiln_error_set(err, KILN_EINVAL, 0, "unknown log format '%s'", arg);
        return 0;
    default:
        return 1;
    }
}

/* A flag that is not a common one: the service's own (extra->on_flag), or a
 * usage error naming the argument getopt_long stopped at. */
static int service_flag(const kiln_service_flags *extra, int c, char **argv, kiln_error **err)
{
    if (c == ':')
        return kiln_error_set(err, KILN_EINVAL, 0, "option %s needs a value", argv[optind - 1]);
    if (c != '?' && extra && extra->on_flag)
        return extra->on_flag(extra->ud, c, optarg, err);
    return kiln_error_set(err, KILN_EINVAL, 0, "unknown option '%s'", argv[optind - 1]);
}

/* The defaults of what was not given; they depend on the data dir. */
static int fill_defaults(kiln_service_opts *o, kiln_error **err)
{
    if (o->data_dir == NULL && (o->data_dir = kiln_default_data_dir()) == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    if (o->listen_url == NULL)
        o->listen_url = kiln_default_url(o->data_dir, o->listen_ep);
    if (o->events_url == NULL)
        o->events_url = kiln_default_url(o->data_dir, o->events_ep);
    if (o->node_name == NULL)
        o->node_name = default_node_name();
    if (!o->listen_url || !o->events_url || !o->node_name)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    /* add_endpoint() leaves NULL where strdup() failed */
    for (size_t i = 0; i < o->n_listen_more; i++)
        if (o->listen_more[i] == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < o->n_events_more; i++)
        if (o->events_more[i] == NULL)
            return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    return 0;
}

int kiln_service_parse_args(kiln_service_opts *o, int argc, char **argv,
                            const kiln_service_flags *extra, kiln_error **err)
{
    struct option all[64];
    int r = option_table(all, KILN_ARRAY_SIZE(all), extra, err);
    if (r < 0)
        return r;
    struct log_flags lf = {KILN_LOG_INFO, KILN_LOG_LOGFMT};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":hV", all, NULL)) != -1) {
        if (c == 'h')
            return KILN_ARGS_HELP;
        if (c == 'V')
            return KILN_ARGS_VERSION;
        if ((r = common_flag(o, c, optarg, &lf, err)) == 1)
            r = service_flag(extra, c, argv, err);
        if (r < 0)
            return r;
    }
    if (optind < argc)
        return kiln_error_set(err, KILN_EINVAL, 0, "unexpected argument '%s'", argv[optind]);
    kiln_log_setup(o->name, (kiln_log_level)lf.level, (kiln_log_format)lf.fmt);
    kiln_log_debug_areas(getenv("KILN_DEBUG"));
    if ((r = fill_defaults(o, err)) < 0)
        return r;
    return KILN_ARGS_RUN;
}

/* ---- built-in methods ---- */

static Kiln__V1__Check *new_check(kiln_arena *a, const char *name, bool ok, const char *detail)
{
    Kiln__V1__Check *c = kiln_arena_alloc(a, sizeof(*c));
    if (c == NULL)
        return NULL;
    kiln__v1__check__init(c);
    c->name = kiln_arena_strdup(a, name);
    c->ok = ok;
    c->detail = kiln_arena_strdup(a, detail);
    return c;
}

/* Checks common to all services plus the service's own. */
static void collect_checks(kiln_service *s, Kiln__V1__Check ***out, size_t *n, kiln_arena *a)
{
    Kiln__V1__Check **own = NULL;
    size_t n_own = 0;
    if (s->hooks.checks)
        s->hooks.checks(s->hooks.user, &own, &n_own, a);
    Kiln__V1__Check **all = kiln_arena_calloc(a, n_own + 1, sizeof(*all));
    if (all == NULL) {
        *n = 0;
        return;
    }
    bool writable = access(s->o->data_dir, W_OK | X_OK) == 0;
    all[0] = new_check(a, "data_dir", writable, writable ? s->o->data_dir : "not writable");
    for (size_t i = 0; i < n_own; i++)
        all[1 + i] = own[i];
    *out = all;
    *n = n_own + 1;
}

/* The farm part of Status: who this node is, every endpoint, draining, and
 * what the service adds (load, platforms, cache). */
static void status_node(kiln_service *s, Kiln__V1__StatusReply *r, kiln_arena *a)
{
    const kiln_service_opts *o = s->o;
    r->node_name = o->node_name ? o->node_name : "";
    r->draining = atomic_load(&s->draining);
    r->listen_urls = kiln_arena_calloc(a, 1 + o->n_listen_more, sizeof(char *));
    r->events_urls = kiln_arena_calloc(a, 1 + o->n_events_more, sizeof(char *));
    if (r->listen_urls) {
        r->listen_urls[r->n_listen_urls++] = o->listen_url;
        for (size_t i = 0; i < o->n_listen_more; i++)
            r->listen_urls[r->n_listen_urls++] = o->listen_more[i];
    }
    if (r->events_urls) {
        r->events_urls[r->n_events_urls++] = o->events_url;
        for (size_t i = 0; i < o->n_events_more; i++)
            r->events_urls[r->n_events_urls++] = o->events_more[i];
    }
    if (s->hooks.status)
        s->hooks.status(s->hooks.user, r, a);
}

static int m_status(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    kiln_service *s = user;
    Kiln__V1__StatusReply *r = kiln_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__status_reply__init(r);
    r->service = (char *)s->o->name;
    r->version = KILN_VERSION_STRING;
    r->pid = (int32_t)getpid();
    r->uptime_ms = kiln_now_ms() - s->started_ms;
    r->data_dir = s->o->data_dir;
    r->listen_url = s->o->listen_url;
    r->events_url = s->o->events_url;
    r->jobs_running = kiln_events_running(s->events);
    r->rpcs_served = kiln_rpc_server_served(s->rpc);
    char host[192];
    kiln_host_id(host, sizeof(host));
    r->host_id = kiln_arena_strdup(a, host);
    collect_checks(s, &r->checks, &r->n_checks, a);
    status_node(s, r, a);
    reply->body_case = KILN__V1__REPLY__BODY_STATUS_REPLY;
    reply->status_reply = r;
    return 0;
}

static int m_health(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    kiln_service *s = user;
    Kiln__V1__HealthReply *r = kiln_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__health_reply__init(r);
    collect_checks(s, &r->checks, &r->n_checks, a);
    r->ready = !atomic_load(&s->draining);
    for (size_t i = 0; i < r->n_checks; i++)
        if (r->checks[i] && !r->checks[i]->ok)
            r->ready = false;
    reply->body_case = KILN__V1__REPLY__BODY_HEALTH_REPLY;
    reply->health_reply = r;
    return 0;
}

static int m_events(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                    kiln_error **err)
{
    kiln_service *s = user;
    const Kiln__V1__EventsRequest *q = req->events;
    Kiln__V1__EventsReply *r = kiln_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__events_reply__init(r);
    int rc = kiln_events_replay(s->events, q->job_id, q->after_seq, q->max_events, r, a, err);
    if (rc < 0)
        return rc;
    reply->body_case = KILN__V1__REPLY__BODY_EVENTS_REPLY;
    reply->events_reply = r;
    return 0;
}

#define WAIT_MAX_MS 30000

static int m_wait(void *user, const kiln_req *req, kiln_reply *reply, kiln_arena *a,
                  kiln_error **err)
{
    kiln_service *s = user;
    Kiln__V1__WaitReply *r = kiln_arena_alloc(a, sizeof(*r));
    if (r == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    kiln__v1__wait_reply__init(r);
    int t = req->wait->timeout_ms > WAIT_MAX_MS ? WAIT_MAX_MS : (int)req->wait->timeout_ms;
    int rc = kiln_events_wait(s->events, req->wait->job_id, t, r, a, err);
    if (rc < 0)
        return rc;
    reply->body_case = KILN__V1__REPLY__BODY_WAIT_REPLY;
    reply->wait_reply = r;
    return 0;
}

static const kiln_rpc_method builtin[] = {
    {KILN__V1__REQUEST__BODY_STATUS, "Status", m_status, KILN_RPC_INLINE, NULL},
    {KILN__V1__REQUEST__BODY_HEALTH, "Health", m_health, KILN_RPC_INLINE, NULL},
    {KILN__V1__REQUEST__BODY_EVENTS, "Events", m_events, 0, NULL},
    {KILN__V1__REQUEST__BODY_WAIT, "Wait", m_wait, 0, NULL},
};

/* ---- HTTP ---- */

static bool http_ready(void *user, kiln_buf *detail)
{
    kiln_service *s = user;
    kiln_arena *a = kiln_arena_new();
    if (a == NULL)
        return false;
    Kiln__V1__Check **checks = NULL;
    size_t n = 0;
    collect_checks(s, &checks, &n, a);
    bool ready = true;
    if (atomic_load(&s->draining)) {
        ready = false;
        kiln_buf_puts(detail, "draining FAIL shutting down: new work is refused\n", NULL);
    }
    for (size_t i = 0; i < n; i++) {
        if (checks[i] == NULL)
            continue;
        ready = ready && checks[i]->ok;
        kiln_buf_printf(detail, NULL, "%s %s %s\n", checks[i]->name, checks[i]->ok ? "ok" : "FAIL",
                        checks[i]->detail ? checks[i]->detail : "");
    }
    kiln_arena_free(a);
    return ready;
}

static void http_metrics(void *user, kiln_buf *out)
{
    kiln_service *s = user;
    kiln_rpc_method_stats st[64];
    size_t n = kiln_rpc_server_stats(s->rpc, st, KILN_ARRAY_SIZE(st));
    kiln_buf_printf(
        out, NULL,
        "# HELP kiln_build_info Kiln service and version.\n"
        "# TYPE kiln_build_info gauge\n"
        "kiln_build_info{service=\"%s\",version=\"%s\"} 1\n"
        "# HELP kiln_uptime_seconds Seconds since the service started.\n"
        "# TYPE kiln_uptime_seconds gauge\n"
        "kiln_uptime_seconds %.3f\n"
        "# HELP kiln_jobs_running Jobs started and not finished.\n"
        "# TYPE kiln_jobs_running gauge\n"
        "kiln_jobs_running %u\n"
        "# HELP kiln_rpc_requests_total RPC requests answered, by method and status code.\n"
        "# TYPE kiln_rpc_requests_total counter\n",
        s->o->name, KILN_VERSION_STRING, (double)(kiln_now_ms() - s->started_ms) / 1000.0,
        kiln_events_running(s->events));
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < KILN_CODE_COUNT; c++)
            if (st[i].by_code[c])
                kiln_buf_printf(out, NULL,
                                "kiln_rpc_requests_total{method=\"%s\",code=\"%s\"} %llu\n",
                                st[i].name, kiln_code_name(kiln_code_from_wire(c)),
                                (unsigned long long)st[i].by_code[c]);
    kiln_buf_puts(out,
                  "# HELP kiln_rpc_duration_seconds Time to handle an RPC, by method.\n"
                  "# TYPE kiln_rpc_duration_seconds histogram\n",
                  NULL);
    for (size_t i = 0; i < n; i++) {
        unsigned long long cum = 0;
        for (int b = 0; b < KILN_RPC_LAT_BUCKETS; b++) {
            cum += st[i].lat_buckets[b];
            kiln_buf_printf(out, NULL,
                            "kiln_rpc_duration_seconds_bucket{method=\"%s\",le=\"%g\"} %llu\n",
                            st[i].name, kiln_rpc_lat_bounds[b], cum);
        }
        cum += st[i].lat_buckets[KILN_RPC_LAT_BUCKETS];
        kiln_buf_printf(out, NULL,
                        "kiln_rpc_duration_seconds_bucket{method=\"%s\",le=\"+Inf\"} %llu\n"
                        "kiln_rpc_duration_seconds_sum{method=\"%s\"} %.6f\n"
                        "kiln_rpc_duration_seconds_count{method=\"%s\"} %llu\n",
                        st[i].name, cum, st[i].name, st[i].lat_sum, st[i].name, cum);
    }
    if (s->hooks.metrics)
        s->hooks.metrics(s->hooks.user, out);
}

/* ---- life cycle ---- */

/* The extra --listen / --events endpoints on the sockets already serving. */
static int listen_more(kiln_service *s, kiln_error **err)
{
    const kiln_service_opts *o = s->o;
    for (size_t i = 0; i < o->n_listen_more; i++, s->n_listen_bound++)
        if (kiln_rpc_server_listen(s->rpc, o->listen_more[i], err) < 0)
            return kiln_error_wrap(err, "--listen %s", o->listen_more[i]);
    for (size_t i = 0; i < o->n_events_more; i++, s->n_events_bound++)
        if (kiln_events_listen(s->events, o->events_more[i], &o->transport, err) < 0)
            return kiln_error_wrap(err, "--events %s", o->events_more[i]);
    return 0;
}

/* Removes the socket files of the extra ipc:// endpoints this service bound
 * (the primary ones are removed by their owners). */
static void unlink_more(const kiln_service *s)
{
    const kiln_service_opts *o = s->o;
    for (size_t i = 0; i < s->n_listen_bound; i++)
        if (kiln_ipc_path(o->listen_more[i]))
            unlink(kiln_ipc_path(o->listen_more[i]));
    for (size_t i = 0; i < s->n_events_bound; i++)
        if (kiln_ipc_path(o->events_more[i]))
            unlink(kiln_ipc_path(o->events_more[i]));
}

/* s->methods: the built-in methods, then the service's (which default to
 * the hooks' user data). */
static int method_table(kiln_service *s, const kiln_rpc_method *extra, size_t n_extra,
                        kiln_error **err)
{
    s->n_methods = KILN_ARRAY_SIZE(builtin) + n_extra;
    s->methods = calloc(s->n_methods, sizeof(*s->methods));
    if (s->methods == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    for (size_t i = 0; i < KILN_ARRAY_SIZE(builtin); i++) {
        s->methods[i] = builtin[i];
        s->methods[i].user = s;
    }
    for (size_t i = 0; i < n_extra; i++) {
        s->methods[KILN_ARRAY_SIZE(builtin) + i] = extra[i];
        if (s->methods[KILN_ARRAY_SIZE(builtin) + i].user == NULL)
            s->methods[KILN_ARRAY_SIZE(builtin) + i].user = s->hooks.user;
    }
    return 0;
}

/* Creates the data dir and secures DATA/run when a primary endpoint has its
 * socket there. */
static int prepare_data_dir(const kiln_service_opts *o, kiln_error **err)
{
    int r = kiln_mkdir_p(o->data_dir, 0755, err);
    if (r < 0)
        return r;
    /* run/ holds the default sockets: private (or the socket group's),
     * whatever mode an earlier run or the umask left. */
    char rundir[PATH_MAX];
    snprintf(rundir, sizeof(rundir), "%s/run", o->data_dir);
    const char *urls[] = {o->listen_url, o->events_url};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(urls); i++) {
        const char *ipc = kiln_ipc_path(urls[i]);
        const char *slash = ipc ? strrchr(ipc, '/') : NULL;
        if (slash && (size_t)(slash - ipc) == strlen(rundir) &&
            strncmp(ipc, rundir, strlen(rundir)) == 0)
            return kiln_ipc_dir_secure(rundir, o->transport.ipc_group_set, o->transport.ipc_gid,
                                       err);
    }
    return 0;
}

static void log_serving(const kiln_service_opts *o)
{
    kiln_info("svc", "%s %s serving node=%s rpc=%s events=%s%s%s data=%s", o->name,
              KILN_VERSION_STRING, o->node_name ? o->node_name : "", o->listen_url, o->events_url,
              o->http_addr ? " http=" : "", o->http_addr ? o->http_addr : "", o->data_dir);
    for (size_t i = 0; i < o->n_listen_more; i++)
        kiln_info("svc", "also serving rpc=%s", o->listen_more[i]);
    for (size_t i = 0; i < o->n_events_more; i++)
        kiln_info("svc", "also serving events=%s", o->events_more[i]);
}

int kiln_service_start(kiln_service **out, const kiln_service_opts *o, const kiln_rpc_method *extra,
                       size_t n_extra, const kiln_service_hooks *hooks, kiln_error **err)
{
    kiln_service *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return kiln_error_set(err, KILN_ENOSPC, 0, "out of memory");
    s->o = o;
    if (hooks)
        s->hooks = *hooks;
    s->started_ms = kiln_now_ms();
    kiln_service_block_signals();
    int r = method_table(s, extra, n_extra, err);
    if (r < 0) {
        free(s);
        return r;
    }

    char logdir[PATH_MAX];
    snprintf(logdir, sizeof(logdir), "%s/events/%s", o->data_dir, o->topic);
    if ((r = prepare_data_dir(o, err)) < 0)
        goto fail;
    if ((r = kiln_events_new(&s->events, o->events_url, &o->transport, logdir, err)) < 0)
        goto fail;
    kiln_rpc_server_opts so = {
        .url = o->listen_url,
        .transport = &o->transport,
        .methods = s->methods,
        .n_methods = s->n_methods,
        .user = s,
        .workers = o->workers,
        .threads = o->threads,
        .max_msg = o->max_msg,
    };
    if ((r = kiln_rpc_server_start(&s->rpc, &so, err)) < 0)
        goto fail;
    if ((r = listen_more(s, err)) < 0)
        goto fail;
    if (o->http_addr) {
        kiln_http_hooks hh = {http_ready, http_metrics, s};
        if ((r = kiln_http_start(&s->http, o->http_addr, &hh, err)) < 0)
            goto fail;
    }
    log_serving(o);
    *out = s;
    return 0;
fail:
    kiln_http_stop(s->http);
    kiln_rpc_server_stop(s->rpc, 0);
    kiln_events_free(s->events);
    unlink_more(s);
    free(s->methods);
    free(s);
    return r;
}

kiln_events *kiln_service_events(kiln_service *s)
{
    return s->events;
}

int kiln_service_wait(kiln_service *s)
{
    sigset_t set;
    shutdown_sigs(&set);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            kiln_info("svc", "SIGHUP ignored (configuration is read at start)");
            continue;
        }
        kiln_info("svc", "received %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        s->sig = sig;
        return sig;
    }
}

bool kiln_service_draining(const kiln_service *s)
{
    return s && atomic_load(&s->draining);
}

struct drain_run {
    kiln_service *s;
    int grace_ms;
    atomic_bool done;
};

static void *drain_main(void *arg)
{
    struct drain_run *d = arg;
    d->s->hooks.drain(d->s->hooks.user, d->grace_ms);
    atomic_store(&d->done, true);
    return NULL;
}

/* Runs hooks.drain on a helper thread while this one keeps taking the
 * (blocked) shutdown signals: a second SIGTERM or SIGINT cancels what still
 * runs instead of waiting out the grace period. */
static void drain(kiln_service *s)
{
    atomic_store(&s->draining, true);
    if (s->hooks.drain == NULL)
        return;
    int grace = s->sig == SIGINT ? 0 : s->o->grace_ms;
    kiln_info("svc", "draining (grace %d s): not ready, new work refused", grace / 1000);
    struct drain_run d = {.s = s, .grace_ms = grace};
    pthread_t th;
    if (pthread_create(&th, NULL, drain_main, &d) != 0) {
        s->hooks.drain(s->hooks.user, grace);
        return;
    }
    sigset_t set;
    shutdown_sigs(&set);
    while (!atomic_load(&d.done)) {
        struct timespec ts = {0, 100 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &ts);
        if ((sig == SIGTERM || sig == SIGINT) && s->hooks.cancel) {
            kiln_info("svc", "second signal: cancelling running work");
            s->hooks.cancel(s->hooks.user);
        }
    }
    pthread_join(th, NULL);
}

void kiln_service_stop(kiln_service *s)
{
    if (s == NULL)
        return;
    drain(s);
    kiln_http_stop(s->http);
    kiln_rpc_server_stop(s->rpc, s->o->drain_ms);
    kiln_events_free(s->events);
    unlink_more(s);
    free(s->methods);
    kiln_info("svc", "%s stopped", s->o->name);
    free(s);
}
