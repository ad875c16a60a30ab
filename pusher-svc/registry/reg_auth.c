/* Registry authentication: the WWW-Authenticate challenge (Basic or Bearer),
 * bearer tokens fetched from the realm per scope and cached until they
 * expire, and where credentials come from: explicit "user:pass", else the
 * per-registry credentials the client sent (resolved by the CLI from the
 * client's own Docker config), else o->authfile, else (only when
 * o->env_auth: kiln-registry-tool, tests) the Docker config.json of this
 * process's environment; common/dockercfg.c reads the file and helpers.
 *
 * Secrets live only in reg_client fields and in request headers; they are
 * wiped on free and never formatted into messages. */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dockercfg.h"
#include "log.h"
#include "reg_internal.h"

static const char *o_authfile(const reg_client *c)
{
    return c->o->authfile != NULL && c->o->authfile[0] != '\0' ? c->o->authfile : NULL;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void reg_auth_dispose(reg_client *c)
{
    wipe_free(c->basic);
    wipe_free(c->identity);
    free(c->realm);
    free(c->service);
    for (unsigned i = 0; i < c->n_tokens; i++) {
        free(c->tokens[i].scope);
        wipe_free(c->tokens[i].token);
    }
    c->basic = c->identity = c->realm = c->service = NULL;
    c->n_tokens = 0;
}

static char *b64(const char *s, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static void set_basic(reg_client *c, const char *user, const char *pass)
{
    _cleanup_free_ char *up = NULL;
    if (asprintf(&up, "%s:%s", user, pass) < 0)
        return;
    wipe_free(c->basic);
    c->basic = b64(up, strlen(up));
    explicit_bzero(up, strlen(up));
}

/* user + secret as the client's credentials: an identity token or Basic. */
static void set_cred(reg_client *c, const char *user, const char *secret)
{
    if (strcmp(user, KILN_DOCKERCFG_TOKEN_USER) == 0) {
        wipe_free(c->identity);
        c->identity = strdup(secret);
    } else {
        set_basic(c, user, secret);
    }
}

/* The Docker config.json of o->authfile, or of this process's environment
 * when o->env_auth (never for a kiln-pusher client: see psh_registry.h). */
static void from_config(reg_client *c, const char *host)
{
    char path[4096];
    if (o_authfile(c) == NULL && !c->o->env_auth)
        return;
    if (kiln_dockercfg_path(o_authfile(c), path, sizeof(path)) < 0)
        return;
    kiln_error *err = NULL;
    _cleanup_cjson_ cJSON *j = NULL;
    kiln_reg_cred cred = {0};
    int r = kiln_dockercfg_load(path, &j, &err);
    if (r == 0)
        r = kiln_dockercfg_lookup(j, host, true, &cred, &err);
    if (r < 0)
        kiln_warn("registry", "credentials for %s: %s; going on without", c->host, err->msg);
    else if (r > 0)
        set_cred(c, cred.username, cred.secret);
    kiln_error_free(&err);
    kiln_reg_cred_dispose(&cred);
}

/* Called with c->mu held. */
static void load_creds(reg_client *c)
{
    if (c->creds_loaded)
        return;
    c->creds_loaded = true;
    if (c->o->creds != NULL && c->o->creds[0] != '\0') {
        const char *colon = strchr(c->o->creds, ':');
        _cleanup_free_ char *user =
            strndup(c->o->creds, colon ? (size_t)(colon - c->o->creds) : strlen(c->o->creds));
        if (user != NULL)
            set_basic(c, user, colon ? colon + 1 : "");
        return;
    }
    char host[512];
    kiln_dockercfg_host(c->host, host, sizeof(host));
    const char *user = NULL, *secret = NULL;
    if (c->o->cred_lookup != NULL && c->o->cred_lookup(c->o->cred_ud, host, &user, &secret)) {
        set_cred(c, user, secret);
        return; /* what the client sent: never also a file of ours */
    }
    from_config(c, host);
}

char *reg_auth_header(reg_client *c, const char *scope)
{
    char *h = NULL;
    time_t now = time(NULL);
    pthread_mutex_lock(&c->mu);
    if (c->scheme == 2 && c->basic != NULL) {
        if (asprintf(&h, "Basic %s", c->basic) < 0)
            h = NULL;
    } else if (c->scheme == 3) {
        const char *key = scope ? scope : "";
        for (unsigned i = 0; i < c->n_tokens; i++) {
            reg_token *t = &c->tokens[i];
            if (strcmp(t->scope, key) == 0 && t->expires > now) {
                if (asprintf(&h, "Bearer %s", t->token) < 0)
                    h = NULL;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return h;
}

/* Parses 'Scheme k="v", k2=v2' into the scheme and up to three known keys. */
void reg_parse_challenge(const char *s, char *scheme, size_t sn, char **realm, char **service,
                         char **scope)
{
    size_t l = strcspn(s, " ");
    snprintf(scheme, sn, "%.*s", (int)l, s);
    const char *p = s + l;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *k = p;
        while (*p && *p != '=')
            p++;
        if (*p != '=')
            break;
        size_t kl = (size_t)(p - k);
        p++;
        char *v;
        if (*p == '"') {
            const char *e = strchr(p + 1, '"');
            if (e == NULL)
                break;
            v = strndup(p + 1, (size_t)(e - p - 1));
            p = e + 1;
        } else {
            size_t vl = strcspn(p, ",");
            v = strndup(p, vl);
            p += vl;
        }
        char **slot = NULL;
        if (kl == 5 && strncasecmp(k, "realm", 5) == 0)
            slot = realm;
        else if (kl == 7 && strncasecmp(k, "service", 7) == 0)
            slot = service;
        else if (kl == 5 && strncasecmp(k, "scope", 5) == 0)
            slot = scope;
        if (slot != NULL) {
            free(*slot);
            *slot = v;
        } else {
            free(v);
        }
    }
}

static char *url_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *o = malloc(strlen(s) * 3 + 1), *q = o;
    if (o == NULL)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-_.~", *p)) {
            *q++ = (char)*p;
        } else {
            *q++ = '%';
            *q++ = hex[*p >> 4];
            *q++ = hex[*p & 15];
        }
    }
    *q = '\0';
    return o;
}

/* Builds "realm?service=…&scope=…&scope=…" (one scope parameter per scope). */
static int token_url(kiln_buf *u, const char *realm, const char *service, const char *scope,
                     kiln_error **err)
{
    int r = kiln_buf_puts(u, realm, err);
    char sep = strchr(realm, '?') ? '&' : '?';
    if (r == 0 && service != NULL) {
        _cleanup_free_ char *e = url_escape(service);
        r = kiln_buf_printf(u, err, "%cservice=%s", sep, e ? e : "");
        sep = '&';
    }
    _cleanup_free_ char *sc = scope ? strdup(scope) : NULL;
    char *save = NULL;
    for (char *t = sc ? strtok_r(sc, " ", &save) : NULL; r == 0 && t;
         t = strtok_r(NULL, " ", &save)) {
        _cleanup_free_ char *e = url_escape(t);
        r = kiln_buf_printf(u, err, "%cscope=%s", sep, e ? e : "");
        sep = '&';
    }
    return r;
}

/* The form of an OAuth2 refresh-token grant presenting identity token ident,
 * or NULL when out of memory.  Caller wipes and frees. */
static char *refresh_form(const char *service, const char *scope, const char *ident)
{
    _cleanup_free_ char *es = url_escape(service ? service : "");
    _cleanup_free_ char *sc = url_escape(scope ? scope : "");
    _cleanup_free_ char *et = url_escape(ident);
    char *form = NULL;
    if (asprintf(&form,
                 "grant_type=refresh_token&client_id=kiln&service=%s&scope=%s&"
                 "refresh_token=%s",
                 es ? es : "", sc ? sc : "", et ? et : "") < 0)
        return NULL;
    return form;
}

static void wipe(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
}

/* Asks the token server at realm for a token for scope: with the identity
 * token (a POSTed refresh-token grant), else with Basic credentials, else
 * anonymously (*had_creds false).  The secrets are copied out of the client
 * under its lock, and the copies wiped before returning.  On success rs
 * holds the answer, whatever its status (the caller disposes it). */
static int token_request(reg_client *c, const char *realm, const char *service, const char *scope,
                         reg_resp *rs, bool *had_creds, kiln_error **err)
{
    kiln_buf u;
    kiln_buf_init(&u, 16384);
    int r = token_url(&u, realm, service, scope, err);
    if (r < 0) {
        kiln_buf_dispose(&u);
        return r;
    }
    pthread_mutex_lock(&c->mu);
    load_creds(c);
    _cleanup_free_ char *basic = c->basic ? strdup(c->basic) : NULL;
    _cleanup_free_ char *ident = c->identity ? strdup(c->identity) : NULL;
    pthread_mutex_unlock(&c->mu);
    *had_creds = basic || ident;
    _cleanup_free_ char *auth = NULL, *form = NULL;
    reg_req rq = {
        .method = "GET", .url = u.data, .fd = -1, .body_max = REG_TOKEN_MAX, .what = "token"};
    if (ident != NULL) { /* OAuth2 refresh-token grant */
        form = refresh_form(service, scope, ident);
        rq.method = "POST";
        rq.url = realm;
        rq.mem = form ? form : "";
        rq.mem_len = form ? strlen(form) : 0;
        rq.ctype = "application/x-www-form-urlencoded";
    } else if (basic != NULL) {
        if (asprintf(&auth, "Basic %s", basic) < 0)
            auth = NULL;
    }
    r = reg_do_raw(c, &rq, auth, rs, err);
    kiln_buf_dispose(&u);
    wipe(auth);
    wipe(form);
    wipe(basic);
    wipe(ident);
    if (r < 0) {
        reg_resp_dispose(rs);
        return kiln_error_wrap(err, "token request for %s", c->host);
    }
    return 0;
}

/* The token of a token server's answer ("token", else "access_token"), or
 * NULL; *ttl receives how many seconds to use it. */
static cJSON *token_of(const cJSON *j, long *ttl)
{
    cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "token");
    if (!cJSON_IsString(t) || t->valuestring[0] == '\0')
        t = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    if (!cJSON_IsString(t) || t->valuestring[0] == '\0')
        return NULL;
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
    long life = cJSON_IsNumber(ex) && ex->valuedouble >= 1 ? (long)ex->valuedouble : 60;
    if (life > 86400)
        life = 86400;
    /* Refresh a little early; short-lived tokens get a proportional margin. */
    long margin = life >= 30 ? 10 : life / 4;
    *ttl = life - margin;
    return t;
}

/* Caches token under key for ttl seconds: in key's slot, else a free one,
 * else the next in turn. */
static void cache_token(reg_client *c, const char *key, const char *token, long ttl)
{
    pthread_mutex_lock(&c->mu);
    reg_token *slot = NULL;
    for (unsigned i = 0; i < c->n_tokens; i++)
        if (strcmp(c->tokens[i].scope, key) == 0)
            slot = &c->tokens[i];
    if (slot == NULL && c->n_tokens < REG_TOKENS) {
        slot = &c->tokens[c->n_tokens++];
    } else if (slot == NULL) {
        slot = &c->tokens[c->next_token++ % REG_TOKENS];
    }
    free(slot->scope);
    wipe_free(slot->token);
    slot->scope = strdup(key);
    slot->token = strdup(token);
    slot->expires = time(NULL) + ttl;
    if (slot->scope == NULL || slot->token == NULL) {
        free(slot->scope);
        wipe_free(slot->token);
        slot->scope = strdup("\x01"); /* never matches */
        slot->token = NULL;
        slot->expires = 0;
    }
    pthread_mutex_unlock(&c->mu);
}

/* Fetches a token for scope and caches it under key (the scope the requests
 * will ask for). */
static int fetch_token(reg_client *c, const char *realm, const char *service, const char *scope,
                       const char *key, kiln_error **err)
{
    reg_resp rs;
    bool had_creds = false;
    int r = token_request(c, realm, service, scope, &rs, &had_creds, err);
    if (r < 0)
        return r;
    if (rs.status == 401 || rs.status == 403) {
        reg_resp_dispose(&rs);
        return kiln_error_set(err, KILN_EAUTH, 0, "%s: token server refused the %s (HTTP %ld)",
                              c->host, had_creds ? "credentials" : "anonymous request", rs.status);
    }
    if (rs.status != 200) {
        r = reg_status_error(&rs, "token request", err);
        reg_resp_dispose(&rs);
        return r;
    }
    _cleanup_cjson_ cJSON *j = cJSON_ParseWithLength(rs.body.data, rs.body.len);
    explicit_bzero(rs.body.data, rs.body.len);
    reg_resp_dispose(&rs);
    long ttl = 0;
    cJSON *t = token_of(j, &ttl);
    if (t == NULL)
        return kiln_error_set(err, KILN_EREMOTE, 0, "%s: token response has no token", c->host);
    cache_token(c, key, t->valuestring, ttl);
    explicit_bzero(t->valuestring, strlen(t->valuestring));
    return 0;
}

int reg_auth_challenge(reg_client *c, const char *www, const char *scope, bool had_auth,
                       kiln_error **err)
{
    if (www == NULL)
        return kiln_error_set(err, KILN_EAUTH, 0, "%s: HTTP 401 without a challenge", c->host);
    char scheme[32];
    char *realm = NULL, *service = NULL, *cscope = NULL;
    reg_parse_challenge(www, scheme, sizeof(scheme), &realm, &service, &cscope);
    int r = 0;
    if (strcasecmp(scheme, "Basic") == 0) {
        pthread_mutex_lock(&c->mu);
        load_creds(c);
        bool have = c->basic != NULL, was_basic = c->scheme == 2;
        c->scheme = 2;
        pthread_mutex_unlock(&c->mu);
        if (!have)
            r = kiln_error_set(err, KILN_EAUTH, 0,
                               "%s requires authentication: no credentials (kiln login, "
                               "--creds or --authfile on the client)",
                               c->host);
        else if (had_auth && was_basic)
            r = kiln_error_set(err, KILN_EAUTH, 0, "%s rejected the credentials", c->host);
    } else if (strcasecmp(scheme, "Bearer") == 0 && realm != NULL) {
        if (strncmp(realm, "http://", 7) != 0 && strncmp(realm, "https://", 8) != 0) {
            r = kiln_error_set(err, KILN_EREMOTE, 0, "%s: token realm is not an HTTP URL", c->host);
        } else if (strncmp(realm, "http://", 7) == 0 && !c->insecure) {
            /* The token request carries the credentials: never in clear
             * for a registry reached over verified HTTPS. */
            r = kiln_error_set(err, KILN_EREMOTE, 0,
                               "%s: refusing token realm %.200s: plain HTTP for a registry "
                               "reached over HTTPS would send credentials in clear (mark the "
                               "registry insecure, --tls-verify=false, only if it really is)",
                               c->host, realm);
        } else {
            pthread_mutex_lock(&c->mu);
            c->scheme = 3;
            free(c->realm);
            free(c->service);
            c->realm = strdup(realm);
            c->service = service ? strdup(service) : NULL;
            pthread_mutex_unlock(&c->mu);
            r = fetch_token(c, realm, service, scope ? scope : cscope, scope ? scope : "", err);
        }
    } else {
        r = kiln_error_set(err, KILN_EAUTH, 0, "%s: unsupported authentication scheme \"%.20s\"",
                           c->host, scheme);
    }
    free(realm);
    free(service);
    free(cscope);
    return r;
}
