/* Registry credentials the CLI resolves on the client's side and sends with
 * a request (RegistryOptions.credentials, BuildRequest.credentials), so that
 * a service elsewhere never needs a path on its host, and a local client's
 * $REGISTRY_AUTH_FILE means the client's file.  The file is --authfile, else
 * $REGISTRY_AUTH_FILE, else $DOCKER_CONFIG/config.json, else
 * ~/.docker/config.json (common/dockercfg.c; kiln login writes the same
 * one), with credHelpers / credsStore run here as docker-credential-<name>
 * get.  Secrets are wiped when freed and never printed. */
#include "cli.h"
#include "cleanup.h"
#include "dockercfg.h"
#include "ref.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define CREDS_MAX 256

void cli_creds_free(cli_creds *c)
{
    for (size_t i = 0; i < c->n; i++) {
        Kiln__V1__RegistryCredential *r = c->v[i];
        free(r->registry);
        free(r->username);
        if (r->secret != NULL) {
            explicit_bzero(r->secret, strlen(r->secret));
            free(r->secret);
        }
        free(r);
    }
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

bool cli_ref_registry(const char *ref, char *out, size_t n)
{
    kiln_ref r;
    kiln_error *err = NULL;
    if (ref == NULL || kiln_ref_parse(&r, ref, KILN_REF_DEFAULT_TAG, &err) < 0) {
        kiln_error_free(&err);
        return false;
    }
    kiln_dockercfg_host(r.domain, out, n);
    return true;
}

static bool have(const cli_creds *c, const char *host)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i]->registry, host) == 0)
            return true;
    return false;
}

/* Takes cred's strings into c. */
static int add(cli_creds *c, kiln_reg_cred *cred)
{
    Kiln__V1__RegistryCredential **nv = NULL, *r = NULL;
    if (c->n >= CREDS_MAX || (nv = realloc(c->v, (c->n + 1) * sizeof(*nv))) == NULL ||
        (r = malloc(sizeof(*r))) == NULL) {
        free(r);
        if (nv != NULL)
            c->v = nv;
        kiln_reg_cred_dispose(cred);
        return -1;
    }
    c->v = nv;
    kiln__v1__registry_credential__init(r);
    r->registry = cred->registry;
    r->username = cred->username;
    r->secret = cred->secret;
    cred->registry = cred->username = cred->secret = NULL;
    c->v[c->n++] = r;
    return 0;
}

static void lookup(const char *verb, cli_creds *out, const cJSON *cfg, const char *host,
                   bool helpers)
{
    if (have(out, host))
        return;
    kiln_reg_cred cred = {0};
    kiln_error *err = NULL;
    int r = kiln_dockercfg_lookup(cfg, host, helpers, &cred, &err);
    if (r < 0)
        fprintf(stderr, "warning: %s: credentials for %s: %s; going on without\n", verb, host,
                err->msg);
    else if (r > 0 && add(out, &cred) < 0)
        fprintf(stderr, "warning: %s: credentials for %s not sent (more than %d)\n", verb, host,
                CREDS_MAX);
    kiln_error_free(&err);
    kiln_reg_cred_dispose(&cred);
}

int cli_creds_resolve(const char *verb, const char *authfile, const char *const *hosts,
                      size_t n_hosts, bool all_auths, cli_creds *out)
{
    out->v = NULL;
    out->n = 0;
    char path[PATH_MAX];
    if (kiln_dockercfg_path(authfile, path, sizeof(path)) < 0)
        return CLI_EXIT_OK; /* no HOME and nothing set: anonymous */
    _cleanup_cjson_ cJSON *cfg = NULL;
    kiln_error *err = NULL;
    if (kiln_dockercfg_load(path, &cfg, &err) < 0) {
        bool explicit = authfile != NULL && *authfile;
        if (explicit)
            cli_errorf("%s: --authfile %s", verb, err->msg);
        else
            fprintf(stderr, "warning: %s: %s; going on without credentials\n", verb, err->msg);
        kiln_error_free(&err);
        return explicit ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    for (size_t i = 0; i < n_hosts; i++)
        if (hosts[i] != NULL && *hosts[i])
            lookup(verb, out, cfg, hosts[i], true);
    if (all_auths) {
        size_t n = 0;
        char **all = kiln_dockercfg_hosts(cfg, &n);
        for (size_t i = 0; i < n; i++) {
            lookup(verb, out, cfg, all[i], false);
            free(all[i]);
        }
        free(all);
    }
    return CLI_EXIT_OK;
}
