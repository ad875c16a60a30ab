/* kiln build --cache-to / --cache-from: the step cache shared through a
 * registry.  Parses BuildKit's syntax (type=registry,ref=REF[,mode=min|max];
 * type=local,dest=DIR / src=DIR; a bare REF for --cache-from) into the
 * BuildRequest's CacheSpecs, and names the caches' registries so the CLI
 * resolves and sends credentials for them as it does for FROM images and
 * --push.
 *
 * type=local is an OCI image layout on this side.  The services never read a
 * client path: the CLI streams the directory into the pusher's store under a
 * temporary tag (as `kiln import` does), the build reads the cache from the
 * store (CacheSpec type "store"), and a --cache-to comes back out the way
 * `kiln export` streams an image. */
#include "build_cache.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "events.h"
#include "fs.h"

/* Copies the value of "key=" in one comma-separated field into out. */
static bool field(const char *f, size_t len, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    if (len <= kl || strncmp(f, key, kl) != 0 || f[kl] != '=')
        return false;
    snprintf(out, cap, "%.*s", (int)(len - kl - 1), f + kl + 1);
    return true;
}

/* A tag in the pusher's store no user picks: kiln-cache/<what>-<hex>. */
static void temp_tag(char *out, size_t cap, const char *what)
{
    unsigned char r[8] = {0};
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
        snprintf((char *)r, sizeof(r), "%07d", (int)getpid());
    char hex[17];
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    snprintf(out, cap, "kiln-cache/%s-%s:latest", what, hex);
}

static int parse(cli_build_cache_entry *e, bool to, const char *opt, const char *arg)
{
    char type[32] = "";
    e->mode[0] = e->ref[0] = e->dir[0] = '\0';
    if (strchr(arg, '=') == NULL) { /* --cache-from REF */
        snprintf(type, sizeof(type), "registry");
        snprintf(e->ref, sizeof(e->ref), "%s", arg);
    }
    for (const char *p = strchr(arg, '=') ? arg : ""; *p;) {
        size_t len = strcspn(p, ",");
        if (!field(p, len, "type", type, sizeof(type)) &&
            !field(p, len, "ref", e->ref, sizeof(e->ref)) &&
            !field(p, len, "mode", e->mode, sizeof(e->mode)) &&
            !field(p, len, to ? "dest" : "src", e->dir, sizeof(e->dir))) {
            cli_errorf("build: %s: unknown field '%.*s' (type, ref, %s, mode)", opt, (int)len, p,
                       to ? "dest" : "src");
            return CLI_EXIT_USAGE;
        }
        p += len + (p[len] == ',');
    }
    if (strcmp(type, "local") == 0) {
        if (!*e->dir) {
            cli_errorf("build: %s: type=local needs %s=DIR", opt, to ? "dest" : "src");
            return CLI_EXIT_USAGE;
        }
        temp_tag(e->ref, sizeof(e->ref), to ? "out" : "in");
        e->in_store = to; /* a --cache-from is in the store once imported */
    } else if (strcmp(type, "registry") != 0 || *e->dir) {
        cli_errorf("build: %s: type must be registry (ref=) or local (%s=), got '%s'", opt,
                   to ? "dest" : "src", type);
        return CLI_EXIT_USAGE;
    }
    if (*e->mode && strcmp(e->mode, "min") != 0 && strcmp(e->mode, "max") != 0) {
        cli_errorf("build: %s: mode must be min or max, got '%s'", opt, e->mode);
        return CLI_EXIT_USAGE;
    }
    if (!*e->ref) {
        cli_errorf("build: %s: missing ref=REGISTRY/REPOSITORY:TAG", opt);
        return CLI_EXIT_USAGE;
    }
    return cli_check_ref("build", opt, e->ref, false);
}

int cli_build_cache_add(cli_build_cache *c, bool to, const char *arg)
{
    if (to)
        return parse(&c->to, true, "--cache-to", arg) == CLI_EXIT_OK
                   ? (c->has_to = true, CLI_EXIT_OK)
                   : CLI_EXIT_USAGE;
    if (c->n_from == CLI_BUILD_CACHE_FROM_MAX) {
        cli_errorf("build: more than %d --cache-from", CLI_BUILD_CACHE_FROM_MAX);
        return CLI_EXIT_USAGE;
    }
    int rc = parse(&c->from[c->n_from], false, "--cache-from", arg);
    if (rc == CLI_EXIT_OK)
        c->n_from++;
    return rc;
}

size_t cli_build_cache_hosts(const cli_build_cache *c, char (*hosts)[512], size_t cap)
{
    size_t n = 0;
    if (c->has_to && !*c->to.dir && n < cap &&
        cli_ref_registry(c->to.ref, hosts[n], sizeof(hosts[n])))
        n++;
    for (size_t i = 0; i < c->n_from && n < cap; i++)
        if (!*c->from[i].dir && cli_ref_registry(c->from[i].ref, hosts[n], sizeof(hosts[n])))
            n++;
    return n;
}

static void spec_of(Kiln__V1__CacheSpec *s, cli_build_cache_entry *e)
{
    kiln__v1__cache_spec__init(s);
    s->type = *e->dir ? "store" : "registry";
    s->ref = e->ref;
    s->mode = e->mode;
}

void cli_build_cache_apply(cli_build_cache *c, Kiln__V1__BuildRequest *br)
{
    if (c->has_to) {
        spec_of(&c->to_spec, &c->to);
        br->cache_to = &c->to_spec;
    }
    size_t n = 0;
    for (size_t i = 0; i < c->n_from; i++) {
        if (*c->from[i].dir && !c->from[i].in_store)
            continue; /* a local cache that could not be imported */
        spec_of(&c->from_spec[n], &c->from[i]);
        c->from_ptrs[n] = &c->from_spec[n];
        n++;
    }
    br->cache_from = n ? c->from_ptrs : NULL;
    br->n_cache_from = n;
}

/* Imports the OCI layout dir into the pusher's store as tag (kiln import's
 * way: streamed unless the pusher shares this filesystem). */
static int import_dir(cli_ctx *ctx, const char *dir, const char *tag)
{
    bool stream = false;
    int rc = cli_choose_transfer(ctx, CLI_PUSHER, "auto", &stream);
    if (rc != CLI_EXIT_OK)
        return rc;
    char abs[PATH_MAX];
    if (realpath(dir, abs) == NULL) {
        cli_errorf("warning: --cache-from %s: %s; building without it", dir, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    Kiln__V1__ImportRequest ir = KILN__V1__IMPORT_REQUEST__INIT;
    ir.ref = (char *)tag;
    cli_context cc = {.fd = -1};
    bool layout = false;
    if (stream) {
        if ((rc = cli_import_send(ctx, abs, CLI_PROGRESS_QUIET, &cc, &layout)) != CLI_EXIT_OK) {
            cli_context_dispose(&cc);
            return rc;
        }
        ir.source_name = basename(abs);
    }
    char digest[80] = "";
    return cli_import_run(ctx, &ir, stream ? &cc : NULL, layout, abs, false, true, digest,
                          sizeof(digest));
}

int cli_build_cache_prepare(cli_ctx *ctx, cli_build_cache *c)
{
    for (size_t i = 0; i < c->n_from; i++) {
        cli_build_cache_entry *e = &c->from[i];
        if (!*e->dir)
            continue;
        struct stat st;
        char layout[PATH_MAX];
        if (snprintf(layout, sizeof(layout), "%s/oci-layout", e->dir) >= (int)sizeof(layout) ||
            stat(layout, &st) < 0) {
            cli_errorf("warning: --cache-from %s: no OCI layout there; building without it",
                       e->dir);
            continue;
        }
        int rc = import_dir(ctx, e->dir, e->ref);
        if (rc == CLI_EXIT_UNREACHABLE)
            return rc;
        e->in_store = rc == CLI_EXIT_OK;
        if (rc != CLI_EXIT_OK)
            cli_errorf("warning: --cache-from %s could not be imported; building without it",
                       e->dir);
    }
    return CLI_EXIT_OK;
}

static void remove_tag(cli_ctx *ctx, const char *tag)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__RemoveRequest q = KILN__V1__REMOVE_REQUEST__INIT;
    q.ref = (char *)tag;
    req.body_case = KILN__V1__REQUEST__BODY_REMOVE;
    req.remove = &q;
    kiln_reply *rep = NULL;
    if (cli_call(ctx, CLI_PUSHER, &req, &rep, 0) == CLI_EXIT_OK)
        kiln_rpc_reply_free(rep);
}

/* Streams tag out into a new dir beside dest, then puts it in dest's place. */
static int export_dir(cli_ctx *ctx, const char *tag, const char *dest)
{
    char fresh[PATH_MAX], old[PATH_MAX], target[PATH_MAX + 8];
    snprintf(fresh, sizeof(fresh), "%s.kiln-new-%d", dest, (int)getpid());
    snprintf(old, sizeof(old), "%s.kiln-old-%d", dest, (int)getpid());
    snprintf(target, sizeof(target), "oci:%s", fresh);
    kiln_rm_rf(fresh, NULL);
    int rc = cli_export_stream(ctx, tag, target, false);
    if (rc != CLI_EXIT_OK)
        return rc;
    bool had = access(dest, F_OK) == 0;
    if ((had && rename(dest, old) < 0) || rename(fresh, dest) < 0) {
        cli_errorf("build: --cache-to %s: %s", dest, strerror(errno));
        kiln_rm_rf(fresh, NULL);
        return CLI_EXIT_FAILED;
    }
    if (had)
        kiln_rm_rf(old, NULL);
    return CLI_EXIT_OK;
}

int cli_build_cache_finish(cli_ctx *ctx, cli_build_cache *c, int build_rc)
{
    int rc = build_rc;
    if (c->has_to && *c->to.dir && build_rc == CLI_EXIT_OK)
        rc = export_dir(ctx, c->to.ref, c->to.dir);
    if (c->has_to && *c->to.dir)
        remove_tag(ctx, c->to.ref);
    for (size_t i = 0; i < c->n_from; i++)
        if (*c->from[i].dir && c->from[i].in_store)
            remove_tag(ctx, c->from[i].ref);
    return rc;
}
