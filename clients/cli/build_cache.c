/* kiln build --cache-to / --cache-from: the step cache shared through a
 * registry.  Parses BuildKit's syntax (type=registry,ref=REF[,mode=min|max];
 * a bare REF for --cache-from) into the BuildRequest's CacheSpecs, and names
 * the caches' registries so the CLI resolves and sends credentials for them
 * as it does for FROM images and --push. */
#include "build_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the value of "key=" in one comma-separated field into out. */
static bool field(const char *f, size_t len, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    if (len <= kl || strncmp(f, key, kl) != 0 || f[kl] != '=')
        return false;
    snprintf(out, cap, "%.*s", (int)(len - kl - 1), f + kl + 1);
    return true;
}

static int parse(cli_build_cache_entry *e, const char *opt, const char *arg)
{
    char type[32] = "";
    e->mode[0] = e->ref[0] = '\0';
    if (strchr(arg, '=') == NULL) { /* --cache-from REF */
        snprintf(type, sizeof(type), "registry");
        snprintf(e->ref, sizeof(e->ref), "%s", arg);
    }
    for (const char *p = strchr(arg, '=') ? arg : ""; *p;) {
        size_t len = strcspn(p, ",");
        if (!field(p, len, "type", type, sizeof(type)) &&
            !field(p, len, "ref", e->ref, sizeof(e->ref)) &&
            !field(p, len, "mode", e->mode, sizeof(e->mode))) {
            cli_errorf("build: %s: unknown field '%.*s' (type, ref, mode)", opt, (int)len, p);
            return CLI_EXIT_USAGE;
        }
        p += len + (p[len] == ',');
    }
    if (strcmp(type, "registry") != 0) {
        cli_errorf("build: %s: type must be registry, got '%s'", opt, type);
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
        return parse(&c->to, "--cache-to", arg) == CLI_EXIT_OK ? (c->has_to = true, CLI_EXIT_OK)
                                                               : CLI_EXIT_USAGE;
    if (c->n_from == CLI_BUILD_CACHE_FROM_MAX) {
        cli_errorf("build: more than %d --cache-from", CLI_BUILD_CACHE_FROM_MAX);
        return CLI_EXIT_USAGE;
    }
    int rc = parse(&c->from[c->n_from], "--cache-from", arg);
    if (rc == CLI_EXIT_OK)
        c->n_from++;
    return rc;
}

size_t cli_build_cache_hosts(const cli_build_cache *c, char (*hosts)[512], size_t cap)
{
    size_t n = 0;
    if (c->has_to && n < cap && cli_ref_registry(c->to.ref, hosts[n], sizeof(hosts[n])))
        n++;
    for (size_t i = 0; i < c->n_from && n < cap; i++)
        if (cli_ref_registry(c->from[i].ref, hosts[n], sizeof(hosts[n])))
            n++;
    return n;
}

static void spec_of(Kiln__V1__CacheSpec *s, cli_build_cache_entry *e)
{
    kiln__v1__cache_spec__init(s);
    s->type = "registry";
    s->ref = e->ref;
    s->mode = e->mode;
}

void cli_build_cache_apply(cli_build_cache *c, Kiln__V1__BuildRequest *br)
{
    if (c->has_to) {
        spec_of(&c->to_spec, &c->to);
        br->cache_to = &c->to_spec;
    }
    for (size_t i = 0; i < c->n_from; i++) {
        spec_of(&c->from_spec[i], &c->from[i]);
        c->from_ptrs[i] = &c->from_spec[i];
    }
    br->cache_from = c->n_from ? c->from_ptrs : NULL;
    br->n_cache_from = c->n_from;
}
