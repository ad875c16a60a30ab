/* Checks of command-line arguments made before anything is sent: a bad tag
 * or a missing file must fail at once (exit 2), not after a build has run. */
#include "cli.h"
#include "ref.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_check_ref(const char *verb, const char *what, const char *ref, bool new_tag)
{
    if (!new_tag) {
        /* An image id (sha256:HEX, or a prefix of its hex) names a stored image. */
        const char *h = strncmp(ref, "sha256:", 7) == 0 ? ref + 7 : ref;
        size_t n = strspn(h, "0123456789abcdef");
        if (n >= 4 && h[n] == '\0' && (h != ref || n <= 64))
            return CLI_EXIT_OK;
    }
    kiln_ref r;
    kiln_error *err = NULL;
    unsigned flags = KILN_REF_DEFAULT_TAG | (new_tag ? KILN_REF_NO_DIGEST : 0);
    if (kiln_ref_parse(&r, ref, flags, &err) == 0)
        return CLI_EXIT_OK;
    cli_errorf("%s %s: %s", verb, what, err ? err->msg : "invalid reference");
    kiln_error_free(&err);
    return CLI_EXIT_USAGE;
}

int cli_check_path(const char *verb, const char *what, const char *path, cli_path_kind kind)
{
    struct stat st;
    if (kind == CLI_PATH_NEW_FILE) {
        /* The file is written later: its directory must exist now. */
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        const char *d = dirname(dir);
        if (*path == '\0' || stat(d, &st) < 0 || !S_ISDIR(st.st_mode) || access(d, W_OK) < 0) {
            cli_errorf("%s: %s %s: directory %s is missing or not writable", verb, what, path, d);
            return CLI_EXIT_USAGE;
        }
        return CLI_EXIT_OK;
    }
    if (stat(path, &st) < 0) {
        cli_errorf("%s: %s %s: %s", verb, what, path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    if (kind == CLI_PATH_DIR && !S_ISDIR(st.st_mode)) {
        cli_errorf("%s: %s %s: not a directory", verb, what, path);
        return CLI_EXIT_USAGE;
    }
    if (kind == CLI_PATH_FILE && S_ISDIR(st.st_mode)) {
        cli_errorf("%s: %s %s: is a directory", verb, what, path);
        return CLI_EXIT_USAGE;
    }
    if (access(path, R_OK) < 0) {
        cli_errorf("%s: %s %s: %s", verb, what, path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

int cli_check_platform(const char *verb, const char *platform)
{
    /* os/arch[/variant], each a non-empty lower-case word */
    int parts = 1;
    bool ok = *platform != '\0';
    for (const char *p = platform; ok && *p; p++) {
        if (*p == '/') {
            ok = p != platform && p[1] != '\0' && p[1] != '/';
            parts++;
        } else {
            ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-';
        }
    }
    if (ok && parts >= 2 && parts <= 3)
        return CLI_EXIT_OK;
    cli_errorf("%s: --platform wants OS/ARCH[/VARIANT] (e.g. linux/amd64), got '%s'", verb,
               platform);
    return CLI_EXIT_USAGE;
}

const char *cli_image_ref(cli_ctx *ctx, const char *verb, const char *arg, char *buf, size_t cap)
{
    /* Docker's rule: an image id prefix (at least 4 hex digits, "sha256:"
     * optional) names the one image whose id starts with it, unless a tag
     * of that name exists. */
    const char *h = strncmp(arg, "sha256:", 7) == 0 ? arg + 7 : arg;
    size_t n = strspn(h, "0123456789abcdef");
    if (n < 4 || n >= 64 || h[n] != '\0')
        return arg;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ListImagesRequest lr = KILN__V1__LIST_IMAGES_REQUEST__INIT;
    lr.untagged = true;
    req.body_case = KILN__V1__REQUEST__BODY_LIST_IMAGES;
    req.list_images = &lr;
    kiln_reply *rep = NULL;
    if (cli_call(ctx, CLI_PUSHER, &req, &rep, 0) != CLI_EXIT_OK)
        return arg; /* the verb's own call reports it */
    const Kiln__V1__ListImagesReply *l = rep->list_images_reply;
    char found[KILN_DIGEST_STRLEN + 1] = "", latest[300];
    snprintf(latest, sizeof(latest), "%s:latest", arg);
    bool tag = false, ambiguous = false;
    for (size_t i = 0; i < l->n_images; i++) {
        const Kiln__V1__ImageInfo *im = l->images[i];
        if (strcmp(im->ref, arg) == 0 || strcmp(im->ref, latest) == 0)
            tag = true;
        if (strncmp(im->digest, "sha256:", 7) != 0 || strncmp(im->digest + 7, h, n) != 0)
            continue;
        if (found[0] && strcmp(found, im->digest) != 0)
            ambiguous = true;
        snprintf(found, sizeof(found), "%s", im->digest);
    }
    kiln_rpc_reply_free(rep);
    if (tag || found[0] == '\0')
        return arg;
    if (ambiguous) {
        cli_errorf("%s: image id '%s' is ambiguous: give more digits", verb, arg);
        return NULL;
    }
    snprintf(buf, cap, "%s", found);
    return buf;
}
