/* kiln login / kiln logout: registry credentials in the Docker config.json
 * that pushes and pulls read (--authfile, else $REGISTRY_AUTH_FILE, else
 * $DOCKER_CONFIG/config.json, else ~/.docker/config.json).  As docker does:
 * a credHelpers entry for the registry, else a credsStore, keeps the secret
 * (docker-credential-<name> store/erase); otherwise it goes to auths as
 * base64 user:password.  Push, pull and build read the same file on the
 * client's side (creds.c) and send what it holds with the request.  Credentials are checked with the registry first
 * (through kiln-pusher), and never printed or logged. */
#include "cli.h"
#include "cliconfig.h"
#include "cleanup.h"
#include "dockercfg.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define CONFIG_MAX ((size_t)4 << 20)
#define SECRET_MAX 4096

extern char **environ;

static const char login_usage[] =
    "Usage: kiln login [-u USER] [--password-stdin] [--authfile FILE] [registry flags] "
    "REGISTRY\n\n"
    "Checks USER's password with REGISTRY (host[:port]) and stores them in the Docker\n"
    "config.json that push, pull and build read on this side (and send with the\n"
    "request, so a remote kiln-pusher or kiln-builder uses them): --authfile FILE, else "
    "$REGISTRY_AUTH_FILE,\n"
    "else $DOCKER_CONFIG/config.json, else ~/.docker/config.json.  A credHelpers entry\n"
    "for REGISTRY, else credsStore, keeps them in docker-credential-<name> instead.\n"
    "The password comes from stdin with --password-stdin, else from a prompt on the\n"
    "terminal (-p PASSWORD works, but leaves it in the shell's history).\n\n"
    "  -u, --username USER\n"
    "  -p, --password PASSWORD\n"
    "  --password-stdin\n"
    "  --authfile FILE\n"
    "  --tls-verify=false   the registry speaks plain HTTP or unverified TLS\n"
    "  --cert-dir DIR       certs.d root for the registry's CA / client certificate\n";

static const char logout_usage[] =
    "Usage: kiln logout [--authfile FILE] REGISTRY\n\n"
    "Removes REGISTRY's credentials from the Docker config.json (and from its\n"
    "credential helper) that kiln login wrote.\n";

/* Standard base64 of n bytes into out (4 * ((n + 2) / 3) + 1 bytes). */
static void b64(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* The file and the registry names are read as everywhere else: dockercfg.h. */
#define config_path(authfile, out) kiln_dockercfg_path((authfile), (out), PATH_MAX)
#define key_host                   kiln_dockercfg_host
#define store_key                  kiln_dockercfg_server_key

static cJSON *load_config(const char *path, int *rc)
{
    *rc = CLI_EXIT_OK;
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno != ENOENT) {
            cli_errorf("%s: %s", path, strerror(errno));
            *rc = CLI_EXIT_FAILED;
            return NULL;
        }
        return cJSON_CreateObject();
    }
    char *buf = malloc(CONFIG_MAX + 1);
    size_t len = buf ? fread(buf, 1, CONFIG_MAX + 1, f) : 0;
    fclose(f);
    cJSON *j = buf && len <= CONFIG_MAX ? cJSON_ParseWithLength(buf, len) : NULL;
    if (buf) {
        explicit_bzero(buf, len);
        free(buf);
    }
    if (len == 0) {
        cJSON_Delete(j);
        return cJSON_CreateObject();
    }
    if (!cJSON_IsObject(j)) {
        cli_errorf("%s is not a JSON object: not touching it", path);
        cJSON_Delete(j);
        *rc = CLI_EXIT_FAILED;
        return NULL;
    }
    return j;
}

/* Writes j to path (0600, its directory 0700 when made) through a temp file
 * and a rename. */
static int save_config(const char *path, cJSON *j)
{
    char dir[PATH_MAX], tmp[PATH_MAX + 16];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            cli_errorf("%s: %s", dir, strerror(errno));
            return CLI_EXIT_FAILED;
        }
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
    char *text = cJSON_Print(j);
    if (text == NULL)
        return CLI_EXIT_FAILED;
    size_t len = strlen(text);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    bool ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
              fsync(fd) == 0;
    int e = errno;
    if (fd >= 0)
        close(fd);
    explicit_bzero(text, len);
    cJSON_free(text);
    if (!ok || rename(tmp, path) < 0) {
        e = ok ? errno : e;
        unlink(tmp);
        cli_errorf("write %s: %s", path, strerror(e));
        return CLI_EXIT_FAILED;
    }
    return CLI_EXIT_OK;
}

/* docker-credential-<name> ACTION with input on stdin; 0 when it exits 0. */
static int run_helper(const char *name, const char *action, const char *input)
{
    char prog[256];
    snprintf(prog, sizeof(prog), "docker-credential-%.200s", name);
    int in[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    char *argv[] = {prog, (char *)action, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    if (rc != 0) {
        close(in[1]);
        cli_errorf("credential helper %s: %s", prog, strerror(rc));
        return -1;
    }
    size_t len = strlen(input);
    bool ok = write(in[1], input, len) == (ssize_t)len;
    close(in[1]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cli_errorf("credential helper %s %s failed", prog, action);
        return -1;
    }
    return 0;
}

/* The helper that keeps host's credentials, or NULL (borrowed from j). */
static const char *helper_for(const cJSON *j, const char *host)
{
    const cJSON *it;
    char h[512];
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "credHelpers"))
    {
        key_host(it->string ? it->string : "", h, sizeof(h));
        if (strcmp(h, host) == 0 && cJSON_IsString(it) && *it->valuestring)
            return it->valuestring;
    }
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "credsStore");
    return cJSON_IsString(s) && *s->valuestring ? s->valuestring : NULL;
}

/* Removes every auths entry naming host; true if there was one. */
static bool drop_auths(cJSON *j, const char *host)
{
    cJSON *auths = cJSON_GetObjectItemCaseSensitive(j, "auths");
    bool found = false;
    char h[512];
    for (cJSON *it = auths ? auths->child : NULL, *next; it; it = next) {
        next = it->next;
        key_host(it->string ? it->string : "", h, sizeof(h));
        if (strcmp(h, host) == 0) {
            cJSON_Delete(cJSON_DetachItemViaPointer(auths, it));
            found = true;
        }
    }
    return found;
}

/* Reads a line from the terminal; echo off when secret. */
static int prompt(const char *what, bool secret, char *out, size_t cap)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct termios old, t;
    bool restore = false;
    if (secret && tcgetattr(fd, &old) == 0) {
        t = old;
        t.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fd, TCSAFLUSH, &t) == 0;
    }
    if (write(fd, what, strlen(what)) < 0) {
        /* the prompt is cosmetic */
    }
    size_t n = 0;
    char ch;
    while (n + 1 < cap && read(fd, &ch, 1) == 1 && ch != '\n')
        out[n++] = ch;
    out[n] = '\0';
    if (restore) {
        tcsetattr(fd, TCSAFLUSH, &old);
        if (write(fd, "\n", 1) < 0) {
            /* cosmetic too */
        }
    }
    close(fd);
    return 0;
}

static int read_stdin_secret(char *out, size_t cap)
{
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(0, out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return 0;
}

/* LoginCheck on kiln-pusher with user:pass. */
static int check_login(cli_ctx *ctx, const char *host, const char *creds, bool insecure,
                       const char *cert_dir)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__LoginCheckRequest lr = KILN__V1__LOGIN_CHECK_REQUEST__INIT;
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    ro.creds = (char *)creds;
    ro.insecure = insecure;
    ro.cert_dir = (char *)(cert_dir ? cert_dir : "");
    lr.registry = (char *)host;
    lr.registry_options = &ro;
    req.body_case = KILN__V1__REQUEST__BODY_LOGIN_CHECK;
    req.login_check = &lr;
    kiln_reply *rep = NULL;
    /* Status first, so that a failing check is the registry's (exit 5) and
     * not kiln-pusher being away (exit 3). */
    kiln_req sreq = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    sreq.body_case = KILN__V1__REQUEST__BODY_STATUS;
    sreq.status = &sr;
    int rc = cli_call(ctx, CLI_PUSHER, &sreq, &rep, 0);
    kiln_rpc_reply_free(rep);
    rep = NULL;
    if (rc != CLI_EXIT_OK)
        return rc;
    rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    kiln_rpc_reply_free(rep);
    return rc == CLI_EXIT_OK ? rc : CLI_EXIT_REGISTRY;
}

enum { L_STDIN = 600, L_AUTHFILE, L_TLS, L_CERTDIR };

static int parse_registry(const char *verb, const char *arg, char *host, size_t cap)
{
    key_host(arg, host, cap);
    char probe[600];
    snprintf(probe, sizeof(probe), "%s/x", host);
    if (*host == '\0' || cli_check_ref(verb, "registry", probe, true) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    return CLI_EXIT_OK;
}

/* The options of the verb, for its parser, completion and man page. */
const struct option cli_login_opts[] = {
    {"username", required_argument, NULL, 'u'},
    {"password", required_argument, NULL, 'p'},
    {"password-stdin", no_argument, NULL, L_STDIN},
    {"authfile", required_argument, NULL, L_AUTHFILE},
    {"tls-verify", required_argument, NULL, L_TLS},
    {"cert-dir", required_argument, NULL, L_CERTDIR},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* What kiln login was asked to do. */
struct login_args {
    const char *user, *pass_arg, *authfile; /* -u, -p, --authfile (from argv) */
    bool from_stdin, insecure, help;
    bool tls_given;          /* --tls-verify was given */
    char cert_dir[PATH_MAX]; /* --cert-dir resolved, or "" */
    char host[512];          /* REGISTRY as credentials are keyed */
    char path[PATH_MAX];     /* the config.json to write */
};

/* The flags; a->help set when only the usage was asked for. */
static int login_flags(int argc, char **argv, struct login_args *a)
{
    int c;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "u:p:h", cli_login_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            a->help = true;
            return CLI_EXIT_OK;
        case 'u':
            a->user = optarg;
            break;
        case 'p':
            a->pass_arg = optarg;
            break;
        case L_STDIN:
            a->from_stdin = true;
            break;
        case L_AUTHFILE:
            a->authfile = optarg;
            break;
        case L_TLS:
            if (strcmp(optarg, "true") && strcmp(optarg, "false")) {
                cli_errorf("login: --tls-verify wants true or false");
                return CLI_EXIT_USAGE;
            }
            a->insecure = strcmp(optarg, "false") == 0;
            a->tls_given = true;
            break;
        case L_CERTDIR:
            if (cli_check_path("login", "--cert-dir", optarg, CLI_PATH_DIR) != CLI_EXIT_OK ||
                realpath(optarg, a->cert_dir) == NULL)
                return CLI_EXIT_USAGE;
            break;
        default:
            cli_errorf("login: unknown option '%s'", argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

/* The command line, then the registry's name and the file to write. */
static int login_args_parse(int argc, char **argv, struct login_args *a)
{
    int rc = login_flags(argc, argv, a);
    if (rc != CLI_EXIT_OK || a->help)
        return rc;
    if (argc - optind != 1) {
        cli_errorf("login: expected one REGISTRY, got %d; see 'kiln login --help'", argc - optind);
        return CLI_EXIT_USAGE;
    }
    if (a->from_stdin && a->pass_arg) {
        cli_errorf("login: --password and --password-stdin are exclusive");
        return CLI_EXIT_USAGE;
    }
    if (parse_registry("login", argv[optind], a->host, sizeof(a->host)) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (config_path(a->authfile, a->path) < 0) {
        cli_errorf("login: no place for credentials: set --authfile, REGISTRY_AUTH_FILE, "
                   "DOCKER_CONFIG or HOME");
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

#define USER_MAX 256

/* The credentials being stored. */
struct login_creds {
    const char *user; /* -u, or ubuf */
    char ubuf[USER_MAX];
    char pass[SECRET_MAX];
    char creds[USER_MAX + SECRET_MAX + 2]; /* "user:pass" */
};

static void login_creds_wipe(struct login_creds *lc)
{
    explicit_bzero(lc->pass, sizeof(lc->pass));
    explicit_bzero(lc->creds, sizeof(lc->creds));
}

/* The user (-u, else asked on the terminal) and the password (-p, else
 * --password-stdin, else asked on the terminal with echo off). */
static int login_ask(const struct login_args *a, struct login_creds *lc)
{
    lc->user = a->user;
    if (lc->user == NULL) {
        if (a->from_stdin || !isatty(0) ||
            prompt("Username: ", false, lc->ubuf, sizeof(lc->ubuf)) < 0) {
            cli_errorf("login: -u USER is needed when not asking on a terminal");
            return CLI_EXIT_USAGE;
        }
        lc->user = lc->ubuf;
    }
    if (*lc->user == '\0' || strchr(lc->user, ':')) {
        cli_errorf("login: the user name must be non-empty and have no ':'");
        return CLI_EXIT_USAGE;
    }
    if (a->pass_arg) {
        snprintf(lc->pass, sizeof(lc->pass), "%s", a->pass_arg);
        fprintf(stderr, "warning: --password leaves the password in the shell's history; "
                        "use --password-stdin\n");
    } else if (a->from_stdin) {
        read_stdin_secret(lc->pass, sizeof(lc->pass));
    } else if (!isatty(0) || prompt("Password: ", true, lc->pass, sizeof(lc->pass)) < 0) {
        cli_errorf("login: no terminal to ask for the password: use --password-stdin");
        return CLI_EXIT_USAGE;
    }
    if (*lc->pass == '\0') {
        cli_errorf("login: empty password");
        return CLI_EXIT_USAGE;
    }
    snprintf(lc->creds, sizeof(lc->creds), "%s:%s", lc->user, lc->pass);
    return CLI_EXIT_OK;
}

/* docker-credential-<helper> store with the credentials for key. */
static int store_in_helper(const char *helper, const char *key, const struct login_creds *lc)
{
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "ServerURL", key);
    cJSON_AddStringToObject(in, "Username", lc->user);
    cJSON_AddStringToObject(in, "Secret", lc->pass);
    char *text = cJSON_PrintUnformatted(in);
    int hr = text ? run_helper(helper, "store", text) : -1;
    if (text) {
        explicit_bzero(text, strlen(text));
        cJSON_free(text);
    }
    cJSON_Delete(in); /* its strings held the secret: cJSON frees, not wipes */
    return hr < 0 ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}

/* An auths entry for key holding base64 user:pass, as docker writes it. */
static int store_in_auths(cJSON *j, const char *key, const struct login_creds *lc)
{
    cJSON *auths = cJSON_GetObjectItemCaseSensitive(j, "auths");
    if (!cJSON_IsObject(auths)) {
        cJSON_DeleteItemFromObjectCaseSensitive(j, "auths");
        auths = cJSON_AddObjectToObject(j, "auths");
    }
    cJSON *entry = auths == NULL ? NULL : cJSON_AddObjectToObject(auths, key);
    if (entry == NULL)
        return CLI_EXIT_FAILED;
    char enc[(sizeof(lc->creds) + 2) / 3 * 4 + 1];
    b64((const unsigned char *)lc->creds, strlen(lc->creds), enc);
    cJSON_AddStringToObject(entry, "auth", enc);
    explicit_bzero(enc, sizeof(enc));
    return CLI_EXIT_OK;
}

/* Keeps the checked credentials: with the credential helper the config
 * names for the registry, else in the config's auths. */
static int login_store(const struct login_args *a, const struct login_creds *lc)
{
    int rc = CLI_EXIT_OK;
    _cleanup_cjson_ cJSON *j = load_config(a->path, &rc);
    if (j == NULL)
        return rc;
    const char *helper = helper_for(j, a->host);
    const char *key = store_key(a->host);
    /* No auths entry at all when a helper keeps the secret: an entry, even
     * an empty one, would be read before the helper is asked. */
    drop_auths(j, a->host);
    rc = helper ? store_in_helper(helper, key, lc) : store_in_auths(j, key, lc);
    if (rc != CLI_EXIT_OK)
        return rc;
    if ((rc = save_config(a->path, j)) == CLI_EXIT_OK)
        printf("Login Succeeded: credentials for %s kept in %s%s\n", a->host,
               helper ? "docker-credential-" : a->path, helper ? helper : "");
    return rc;
}

int cli_cmd_login(cli_ctx *ctx, int argc, char **argv)
{
    struct login_args a = {0};
    int rc = login_args_parse(argc, argv, &a);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (a.help) {
        printf("%s", login_usage);
        return CLI_EXIT_OK;
    }
    _cleanup_(login_creds_wipe) struct login_creds lc = {0};
    if ((rc = login_ask(&a, &lc)) != CLI_EXIT_OK)
        return rc;
    const char *cert_dir = a.cert_dir[0] ? a.cert_dir : NULL;
    if (!a.tls_given && cli_config_insecure_registry(a.host))
        a.insecure = true; /* the config's insecure_registries */
    if ((rc = check_login(ctx, a.host, lc.creds, a.insecure, cert_dir)) != CLI_EXIT_OK)
        return rc;
    return login_store(&a, &lc);
}

/* The options of the verb, for its parser, completion and man page. */
const struct option cli_logout_opts[] = {{"authfile", required_argument, NULL, L_AUTHFILE},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};

int cli_cmd_logout(cli_ctx *ctx, int argc, char **argv)
{
    (void)ctx;
    const char *authfile = NULL;
    int c;
    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, "h", cli_logout_opts, NULL)) != -1) {
        if (c == 'h') {
            printf("%s", logout_usage);
            return CLI_EXIT_OK;
        }
        if (c == L_AUTHFILE) {
            authfile = optarg;
            continue;
        }
        cli_errorf("logout: unknown option '%s'", argv[optind - 1]);
        return CLI_EXIT_USAGE;
    }
    if (argc - optind != 1) {
        cli_errorf("logout: expected one REGISTRY, got %d; see 'kiln logout --help'",
                   argc - optind);
        return CLI_EXIT_USAGE;
    }
    char host[512], path[PATH_MAX];
    if (parse_registry("logout", argv[optind], host, sizeof(host)) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (config_path(authfile, path) < 0) {
        cli_errorf("logout: no credentials file: set --authfile, REGISTRY_AUTH_FILE, "
                   "DOCKER_CONFIG or HOME");
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    cJSON *j = load_config(path, &rc);
    if (j == NULL)
        return rc;
    const char *helper = helper_for(j, host);
    bool had = drop_auths(j, host);
    if (helper && run_helper(helper, "erase", store_key(host)) == 0)
        had = true;
    if (!had) {
        fprintf(stderr, "Not logged in to %s\n", host);
    } else if ((rc = save_config(path, j)) == CLI_EXIT_OK) {
        printf("Removed login credentials for %s\n", host);
    }
    cJSON_Delete(j);
    return rc;
}
