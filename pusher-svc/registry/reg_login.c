/* Checking credentials for `kiln login`: GET /v2/ with them, through the
 * same auth rounds (Basic, or a Bearer token without a scope) as a push. */
#include "psh_registry.h"
#include "reg_internal.h"

#include <stdio.h>

int psh_registry_login_check(psh_store *s, const char *registry, const psh_registry_opts *o,
                             kiln_error **err)
{
    char name[KILN_REF_NAME_MAX + 16];
    kiln_ref r;
    snprintf(name, sizeof(name), "%s/login", registry);
    if (kiln_ref_parse(&r, name, KILN_REF_DEFAULT_TAG, err) < 0)
        return kiln_error_wrap(err, "registry %s", registry);
    reg_client *c = NULL;
    int rc = reg_client_new(&c, &r, o, NULL, reg_state_root(s, o), err);
    if (rc < 0)
        return rc;
    reg_req rq = {.method = "GET", .url = "/v2/", .fd = -1, .what = "/v2/", .retry = true};
    reg_resp rs;
    rc = reg_do(c, &rq, &rs, err);
    if (rc == 0 && rs.status == 401)
        rc = kiln_error_set(err, KILN_EAUTH, 0, "%s rejected the credentials", c->host);
    else if (rc == 0 && (rs.status < 200 || rs.status > 299))
        rc = reg_status_error(&rs, "/v2/", err);
    reg_resp_dispose(&rs);
    reg_client_free(c);
    return rc;
}
