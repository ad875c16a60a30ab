/* kiln build --platform A,B,...: a multi-platform image.
 *
 *   1. one build per platform on kiln-builder, one after another, each
 *      committed untagged and not pushed (TARGETPLATFORM & co. are the
 *      builder's, per Docker's rules; FROM --platform=$BUILDPLATFORM stages
 *      run natively, other platforms' RUNs under QEMU user emulation);
 *   2. once every platform built: an OCI image index of their manifests
 *      (platform fields from each image's config, normalised by
 *      common/platform.c) assembled in kiln-pusher's store under a temporary
 *      name with ManifestCreate/ManifestAdd, tagged with every -t and the
 *      temporary name dropped;
 *   3. with --push, each tag pushed: the images by digest, then the index by
 *      tag (a Docker manifest list with --format v2s2).
 * A platform that fails stops the build with its error: nothing is tagged or
 * pushed.  The index's digest is what the command prints. */
#include "cli.h"
#include "events.h"
#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLATFORMS 16

int cli_platform_list(const char *verb, const char *arg, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *dup = strdup(arg), *save = NULL;
    char **v = calloc(MAX_PLATFORMS + 1, sizeof(char *));
    int rc = dup && v ? CLI_EXIT_OK : CLI_EXIT_FAILED;
    for (char *p = dup ? strtok_r(dup, ",", &save) : NULL; p && rc == CLI_EXIT_OK;
         p = strtok_r(NULL, ",", &save)) {
        while (*p == ' ')
            p++;
        kiln_platform pl;
        char norm[KILN_PLATFORM_STRMAX];
        if ((rc = cli_check_platform(verb, p)) != CLI_EXIT_OK)
            break;
        if (kiln_platform_parse(&pl, p, NULL, NULL) < 0) {
            cli_errorf("%s: --platform: invalid platform '%s'", verb, p);
            rc = CLI_EXIT_USAGE;
            break;
        }
        kiln_platform_format(&pl, norm, sizeof(norm));
        for (size_t i = 0; i < *n && rc == CLI_EXIT_OK; i++)
            if (strcmp(v[i], norm) == 0) {
                cli_errorf("%s: --platform names %s twice", verb, norm);
                rc = CLI_EXIT_USAGE;
            }
        if (rc == CLI_EXIT_OK && *n == MAX_PLATFORMS) {
            cli_errorf("%s: --platform: at most %d platforms", verb, MAX_PLATFORMS);
            rc = CLI_EXIT_USAGE;
        }
        if (rc == CLI_EXIT_OK && (v[*n] = strdup(norm)) == NULL)
            rc = CLI_EXIT_FAILED;
        if (rc == CLI_EXIT_OK)
            (*n)++;
    }
    if (rc == CLI_EXIT_OK && *n == 0) {
        cli_errorf("%s: --platform wants OS/ARCH[/VARIANT][,...], got '%s'", verb, arg);
        rc = CLI_EXIT_USAGE;
    }
    free(dup);
    if (rc != CLI_EXIT_OK) {
        cli_platform_list_free(v, *n);
        *n = 0;
        return rc;
    }
    *out = v;
    return CLI_EXIT_OK;
}

void cli_platform_list_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* One pusher RPC; the reply (freed by the caller) in *rep. */
static int call(cli_ctx *ctx, kiln_req *req, kiln_reply **rep)
{
    *rep = NULL;
    return cli_call(ctx, CLI_PUSHER, req, rep, 0);
}

/* The builder committed into its pusher's store: that must be the one this
 * client talks to, for the index. */
static int check_local(cli_ctx *ctx, const char *digest, const char *platform)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__InspectRequest ir = KILN__V1__INSPECT_REQUEST__INIT;
    ir.ref = (char *)digest;
    req.body_case = KILN__V1__REQUEST__BODY_INSPECT;
    req.inspect = &ir;
    kiln_rpc_client *c = cli_connect(ctx, CLI_PUSHER);
    if (c == NULL)
        return CLI_EXIT_UNREACHABLE;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    int r = kiln_rpc_call(c, &req, &rep, ctx->timeout_ms, &err);
    kiln_rpc_client_free(c);
    kiln_rpc_reply_free(rep);
    if (r == 0)
        return CLI_EXIT_OK;
    int rc = cli_exit_for(err);
    if (err && err->code == KILN_ENOENT) {
        cli_errorf("build: the image built for %s (%s) is not in the store of kiln-pusher at %s: "
                   "the index of a multi-platform build is made there, so --pusher must name "
                   "the pusher of the builder (%s)",
                   platform, digest, ctx->url[CLI_PUSHER], ctx->url[CLI_BUILDER]);
        rc = CLI_EXIT_FAILED;
    } else {
        cli_errorf("build: inspect %s: %s", digest, err ? err->msg : "failed");
    }
    kiln_error_free(&err);
    return rc;
}

/* Drops the temporary name of the index (best effort). */
static void drop(cli_ctx *ctx, const char *name)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__RemoveRequest rr = KILN__V1__REMOVE_REQUEST__INIT;
    rr.ref = (char *)name;
    req.body_case = KILN__V1__REQUEST__BODY_REMOVE;
    req.remove = &rr;
    kiln_rpc_client *c = cli_connect(ctx, CLI_PUSHER);
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    if (c && kiln_rpc_call(c, &req, &rep, ctx->timeout_ms, &err) < 0)
        fprintf(stderr, "kiln: warning: could not remove %s from the store: %s\n", name,
                err ? err->msg : "failed");
    kiln_error_free(&err);
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(c);
}

/* The index of the images (digests[i] built for platforms[i]) in the store,
 * tagged with tags; its digest into index (80 bytes). */
static int make_index(cli_ctx *ctx, char (*digests)[80], char *const *platforms, size_t n,
                      char *const *tags, size_t n_tags, char *index)
{
    char id[33], name[96];
    kiln_rpc_new_id(id);
    snprintf(name, sizeof(name), "localhost/kiln-build-index:%.16s", id);
    kiln_req req = KILN__V1__REQUEST__INIT;
    kiln_reply *rep = NULL;
    Kiln__V1__ManifestCreateRequest mc = KILN__V1__MANIFEST_CREATE_REQUEST__INIT;
    mc.list = name;
    req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_CREATE;
    req.manifest_create = &mc;
    int rc = call(ctx, &req, &rep);
    kiln_rpc_reply_free(rep);
    if (rc != CLI_EXIT_OK)
        return rc;
    for (size_t i = 0; i < n && rc == CLI_EXIT_OK; i++) {
        Kiln__V1__ManifestAddRequest ma = KILN__V1__MANIFEST_ADD_REQUEST__INIT;
        ma.list = name;
        ma.image = digests[i];
        req.body_case = KILN__V1__REQUEST__BODY_MANIFEST_ADD;
        req.manifest_add = &ma;
        if ((rc = call(ctx, &req, &rep)) == CLI_EXIT_OK)
            snprintf(index, 80, "%s", rep->manifest_reply->digest);
        else
            cli_errorf("build: adding the image for %s to the index failed", platforms[i]);
        kiln_rpc_reply_free(rep);
    }
    for (size_t i = 0; i < n_tags && rc == CLI_EXIT_OK; i++) {
        Kiln__V1__TagRequest tr = KILN__V1__TAG_REQUEST__INIT;
        tr.source = name;
        tr.target = tags[i];
        req.body_case = KILN__V1__REQUEST__BODY_TAG;
        req.tag = &tr;
        rc = call(ctx, &req, &rep);
        kiln_rpc_reply_free(rep);
    }
    drop(ctx, name);
    return rc;
}

/* Pushes tag (the index) as a pusher job, following it like kiln push. */
static int push_tag(cli_ctx *ctx, const Kiln__V1__BuildRequest *br, const char *tag,
                    const char *progress)
{
    Kiln__V1__RegistryOptions ro = KILN__V1__REGISTRY_OPTIONS__INIT;
    ro.insecure = br->insecure;
    ro.creds = br->creds;
    ro.cert_dir = br->cert_dir;
    ro.format = br->push_format;
    ro.credentials = br->credentials;
    ro.n_credentials = br->n_credentials;
    Kiln__V1__PushRequest pr = KILN__V1__PUSH_REQUEST__INIT;
    pr.source = (char *)tag;
    pr.destination = "";
    pr.registry = &ro;
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_PUSH;
    req.push = &pr;
    kiln_reply *rep = NULL;
    cli_cancel_arm(ctx, CLI_PUSHER, "push", NULL);
    int rc = call(ctx, &req, &rep);
    if (rc != CLI_EXIT_OK) {
        cli_cancel_disarm();
        return rc == CLI_EXIT_FAILED ? CLI_EXIT_REGISTRY : rc;
    }
    char job[KILN_JOB_ID_MAX + 1], digest[80] = "";
    snprintf(job, sizeof(job), "%s", rep->job_accepted->job_id);
    kiln_rpc_reply_free(rep);
    cli_cancel_arm(ctx, CLI_PUSHER, "push", job);
    bool json = strcmp(progress, "json") == 0, quiet = strcmp(progress, "quiet") == 0;
    rc = cli_follow_job(ctx, CLI_PUSHER, job, json, quiet, digest, sizeof(digest));
    cli_cancel_disarm();
    if (rc != CLI_EXIT_OK && cli_cancel_signal())
        return cli_cancel_exit(rc);
    if (rc == CLI_EXIT_OK && !quiet && !json)
        fprintf(stderr, "=> pushed %s (%s)\n", tag, digest);
    return rc == CLI_EXIT_FAILED ? CLI_EXIT_REGISTRY : rc;
}

int cli_build_multi(cli_ctx *ctx, Kiln__V1__BuildRequest *br, char *const *platforms,
                    size_t n_platforms, const char *progress, const char *iidfile)
{
    bool say = strcmp(progress, "quiet") != 0 && strcmp(progress, "json") != 0;
    char **tags = br->tags, *platform = br->platform;
    size_t n_tags = br->n_tags;
    bool push = br->push;
    char(*digests)[80] = calloc(n_platforms + 1, 80);
    if (digests == NULL)
        return CLI_EXIT_FAILED;
    /* The platforms' images: untagged until the index names them all. */
    br->tags = NULL;
    br->n_tags = 0;
    br->push = false;
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n_platforms && rc == CLI_EXIT_OK; i++) {
        if (say)
            fprintf(stderr, "=> [%zu/%zu] building for %s\n", i + 1, n_platforms, platforms[i]);
        br->platform = platforms[i];
        cli_build_result res = {0};
        rc = cli_run_build_to(ctx, br, progress, platforms[i], &res);
        snprintf(digests[i], 80, "%s", res.digest);
        if (rc == CLI_EXIT_OK && say)
            fprintf(stderr, "=> %s: %s\n", platforms[i], digests[i]);
        if (rc != CLI_EXIT_OK && !cli_cancel_signal())
            cli_errorf("build: %s failed (%zu of %zu platforms built): nothing was tagged%s",
                       platforms[i], i, n_platforms, push ? " or pushed" : "");
    }
    br->tags = tags;
    br->n_tags = n_tags;
    br->push = push;
    br->platform = platform;
    for (size_t i = 0; i < n_platforms && rc == CLI_EXIT_OK; i++)
        rc = check_local(ctx, digests[i], platforms[i]);
    char index[80] = "";
    if (rc == CLI_EXIT_OK) {
        if (say)
            fprintf(stderr, "=> index of %zu platforms%s%s\n", n_platforms, n_tags ? " as " : "",
                    n_tags ? tags[0] : "");
        rc = make_index(ctx, digests, platforms, n_platforms, tags, n_tags, index);
    }
    for (size_t i = 0; push && i < n_tags && rc == CLI_EXIT_OK; i++) {
        if (say)
            fprintf(stderr, "=> pushing %s\n", tags[i]);
        rc = push_tag(ctx, br, tags[i], progress);
        if (rc != CLI_EXIT_OK && !cli_cancel_signal())
            cli_errorf("build: pushing %s failed", tags[i]);
    }
    if (rc == CLI_EXIT_OK) {
        if (strcmp(progress, "json") != 0)
            printf("%s\n", index);
        if (iidfile) {
            FILE *f = fopen(iidfile, "we");
            if (f == NULL || fprintf(f, "%s", index) < 0 || fclose(f) != 0) {
                cli_errorf("--iidfile %s: cannot write", iidfile);
                rc = CLI_EXIT_FAILED;
            }
        }
    }
    free(digests);
    return rc;
}
