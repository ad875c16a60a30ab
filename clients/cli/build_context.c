/* kiln build --build-context NAME=docker-image://REF | NAME=DIR: named
 * contexts, as buildx has them.  Both become "NAME=REF" for the builder's
 * plan (BuildRequest.named_images), where a FROM or --from= naming NAME means
 * the image REF.  A directory is sent as bytes, never as a path: packed like
 * an import source (a tar of the tree, owners and modes kept), streamed to
 * kiln-pusher in content-defined chunks and imported as a one-layer image
 * tagged kiln-context-NAME:<digest prefix>, with a fixed created time so
 * the same tree gives the same image digest and the build's cache holds.
 * FROM NAME then starts from the directory's files, COPY --from=NAME copies
 * from them. */
#include "cli.h"
#include "cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define IMAGE_PREFIX "docker-image://"

int cli_build_context_parse(const char *arg, cli_named_context *out)
{
    memset(out, 0, sizeof(*out));
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : 0;
    bool name_ok = n > 0 && n < sizeof(out->name) && isalnum((unsigned char)arg[0]);
    for (size_t i = 0; name_ok && i < n; i++)
        name_ok = isalnum((unsigned char)arg[i]) || strchr("-_.", arg[i]) != NULL;
    if (!name_ok || eq[1] == '\0') {
        cli_errorf("build: --build-context wants NAME=DIR or NAME=docker-image://REF, got '%s'",
                   arg);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++)
        out->name[i] = (char)tolower((unsigned char)arg[i]);
    const char *v = eq + 1;
    if (strncmp(v, IMAGE_PREFIX, strlen(IMAGE_PREFIX)) == 0) {
        out->image = v + strlen(IMAGE_PREFIX);
        return cli_check_ref("build", "--build-context image", out->image, false);
    }
    if (strstr(v, "://") != NULL) {
        cli_errorf("build: --build-context %s: only docker-image:// and local directories are "
                   "supported",
                   arg);
        return CLI_EXIT_USAGE;
    }
    if (cli_check_path("build", "--build-context", v, CLI_PATH_DIR) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (realpath(v, out->dir) == NULL) {
        cli_errorf("build: --build-context %s: %s", v, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    return CLI_EXIT_OK;
}

/* Streams dir to the pusher and imports it as an image; its reference
 * ("kiln-context-NAME:<hex>") into ref. */
static int import_dir(cli_ctx *ctx, const cli_named_context *nc, cli_progress mode, char *ref,
                      size_t cap)
{
    cli_context c = {.fd = -1};
    bool layout = false;
    int rc = cli_import_send(ctx, nc->dir, mode, &c, &layout);
    if (rc == CLI_EXIT_OK && layout) {
        cli_errorf("build: --build-context %s: an OCI layout, not a directory of files "
                   "(import it with kiln import and use docker-image://)",
                   nc->name);
        rc = CLI_EXIT_USAGE;
    }
    if (rc != CLI_EXIT_OK) {
        cli_context_dispose(&c);
        return rc;
    }
    /* The tar's digest names the tree: the same tree, the same tag. */
    snprintf(ref, cap, "kiln-context-%s:%.16s", nc->name, c.digest + 7);
    Kiln__V1__ImportRequest ir = KILN__V1__IMPORT_REQUEST__INIT;
    ir.ref = ref;
    ir.format = (char *)"rootfs";
    ir.source_name = (char *)nc->name;
    ir.created = 1; /* fixed: the image is a function of the tree */
    char digest[80] = "";
    return cli_import_run(ctx, &ir, &c, false, NULL, false, true, digest, sizeof(digest));
}

int cli_build_contexts_resolve(cli_ctx *ctx, const cli_named_context *nc, size_t n,
                               cli_progress mode, char **out)
{
    for (size_t i = 0; i < n; i++) {
        char ref[512];
        int rc = CLI_EXIT_OK;
        if (nc[i].image)
            snprintf(ref, sizeof(ref), "%s", nc[i].image);
        else if ((rc = import_dir(ctx, &nc[i], mode, ref, sizeof(ref))) != CLI_EXIT_OK)
            return rc;
        if (asprintf(&out[i], "%s=%s", nc[i].name, ref) < 0)
            return CLI_EXIT_FAILED;
    }
    return CLI_EXIT_OK;
}
