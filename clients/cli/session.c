/* The CLI's plumbing, shared by every verb: errors and exit codes,
 * connecting to a service, one RPC, following a job to its end. */
#include "cli.h"
#include "cleanup.h"
#include "config.h"
#include "follow.h"
#include "units.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cli_service_name(cli_service s)
{
    return s == CLI_BUILDER ? "kiln-builder" : "kiln-pusher";
}

void cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kiln: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_exit_for(const kiln_error *err)
{
    if (err == NULL)
        return CLI_EXIT_FAILED;
    switch (err->code) {
    case KILN_EUNAVAIL:
    case KILN_ETIMEDOUT:
        return CLI_EXIT_UNREACHABLE;
    case KILN_EINVAL:
        return CLI_EXIT_FAILED;
    case KILN_EREMOTE:
    case KILN_EAUTH:
        return CLI_EXIT_REGISTRY;
    default:
        return CLI_EXIT_FAILED;
    }
}

kiln_rpc_client *cli_connect(cli_ctx *ctx, cli_service s)
{
    kiln_rpc_client *c = NULL;
    kiln_error *err = NULL;
    if (kiln_rpc_client_new(&c, ctx->url[s], &ctx->transport, true, &err) < 0) {
        cli_errorf("%s: %s", cli_service_name(s), err->msg);
        kiln_error_free(&err);
        return NULL;
    }
    return c;
}

int cli_call(cli_ctx *ctx, cli_service s, kiln_req *req, kiln_reply **out, int timeout_ms)
{
    kiln_rpc_client *c = cli_connect(ctx, s);
    if (c == NULL)
        return CLI_EXIT_UNREACHABLE;
    kiln_error *err = NULL;
    int r = kiln_rpc_call(c, req, out, timeout_ms ? timeout_ms : ctx->timeout_ms, &err);
    kiln_rpc_client_free(c);
    if (r < 0) {
        cli_errorf("%s", err->msg);
        int rc = cli_exit_for(err);
        kiln_error_free(&err);
        return rc;
    }
    return CLI_EXIT_OK;
}

/* ---- following a job ---- */

typedef struct job_view {
    bool json, quiet;
    bool failed;
    char digest[80];
    uint64_t last_progress;
} job_view;

static void print_layer(const Kiln__V1__LayerPacked *lp)
{
    double mb = (double)lp->tar_bytes / 1e6;
    char size[KILN_LAYER_SIZE_STRLEN];
    kiln_format_layer_size(size, sizeof(size), lp->blob_bytes, lp->tar_bytes);
    fprintf(stderr, "layer %u %s  %s (%.2fx) in %.2fs, %.0f MB/s\n", lp->index, lp->digest, size,
            lp->blob_bytes ? (double)lp->tar_bytes / (double)lp->blob_bytes : 0.0, lp->seconds,
            lp->seconds > 0 ? mb / lp->seconds : 0.0);
}

/* "(12.3 MB compressed / 40.1 MB)" for a layer blob whose uncompressed size
 * the store knows, else "(1.2 MB)" (a config, or a layer pulled as is). */
static void blob_size(const Kiln__V1__BlobEvent *b, char *out, size_t cap)
{
    char s[KILN_LAYER_SIZE_STRLEN];
    if (b->size_uncompressed)
        kiln_format_layer_size(s, sizeof(s), b->size_compressed ? b->size_compressed : b->total,
                               b->size_uncompressed);
    else
        kiln_format_bytes(s, sizeof(s), b->total);
    snprintf(out, cap, "(%s)", s);
}

static int job_cb(void *ud, const kiln_event *e)
{
    job_view *v = ud;
    if (v->json) {
        cli_print_event_json(stdout, e);
    } else if (!v->quiet) {
        switch (e->payload_case) {
        case KILN__V1__EVENT__PAYLOAD_PROGRESS:
            /* Throttle: one line per 64 MiB. */
            if (e->progress->done >= v->last_progress + (64u << 20)) {
                v->last_progress = e->progress->done;
                fprintf(stderr, "%s %.0f MB\n", e->progress->what, (double)e->progress->done / 1e6);
            }
            break;
        case KILN__V1__EVENT__PAYLOAD_LAYER_PACKED:
            print_layer(e->layer_packed);
            break;
        case KILN__V1__EVENT__PAYLOAD_LOG:
            fprintf(stderr, "%s\n", e->log->text);
            break;
        case KILN__V1__EVENT__PAYLOAD_BLOB: {
            const Kiln__V1__BlobEvent *b = e->blob;
            char size[KILN_LAYER_SIZE_STRLEN + 2];
            blob_size(b, size, sizeof(size));
            switch (b->kind) {
            case KILN__V1__BLOB_EVENT__KIND__DONE:
                fprintf(stderr, "blob %.19s done %s\n", b->digest, size);
                break;
            case KILN__V1__BLOB_EVENT__KIND__SKIPPED:
                fprintf(stderr, "blob %.19s already present %s\n", b->digest, size);
                break;
            case KILN__V1__BLOB_EVENT__KIND__MOUNTED:
                fprintf(stderr, "blob %.19s mounted from %s\n", b->digest, b->detail);
                break;
            case KILN__V1__BLOB_EVENT__KIND__RETRIED:
                fprintf(stderr, "retrying %s: %s\n", b->digest, b->detail);
                break;
            default:
                break;
            }
            break;
        }
        case KILN__V1__EVENT__PAYLOAD_MANIFEST_PUSHED:
            fprintf(stderr, "manifest %s pushed%s%s\n", e->manifest_pushed->digest,
                    *e->manifest_pushed->ref ? " as " : "", e->manifest_pushed->ref);
            break;
        case KILN__V1__EVENT__PAYLOAD_COMPLETED:
            fprintf(stderr, "%s\n", e->completed->summary);
            break;
        default:
            break;
        }
    }
    if (e->payload_case == KILN__V1__EVENT__PAYLOAD_COMPLETED)
        snprintf(v->digest, sizeof(v->digest), "%s", e->completed->digest);
    if (e->payload_case == KILN__V1__EVENT__PAYLOAD_FAILED) {
        v->failed = true;
        /* On stderr with --json too: stdout carries only the events. */
        cli_errorf("%s", e->failed->error && e->failed->error->message ? e->failed->error->message
                                                                       : "job failed");
    }
    return 0;
}

int cli_follow_job(cli_ctx *ctx, cli_service s, const char *job, bool json, bool quiet,
                   char *digest_out, size_t cap)
{
    kiln_rpc_client *c = cli_connect(ctx, s);
    if (c == NULL)
        return CLI_EXIT_UNREACHABLE;
    kiln_error *err = NULL;
    char *url = cli_events_url(c, ctx->timeout_ms, &err);
    if (url == NULL) {
        cli_errorf("%s", err->msg);
        int rc = cli_exit_for(err);
        kiln_error_free(&err);
        kiln_rpc_client_free(c);
        return rc;
    }
    job_view v = {.json = json, .quiet = quiet};
    kiln_follow_opts fo = {.job_id = job, .events_url = url, .transport = &ctx->transport};
    int r = kiln_follow_job(c, &fo, job_cb, &v, &err);
    free(url);
    kiln_rpc_client_free(c);
    if (r < 0) {
        cli_errorf("following job %s: %s", job, err ? err->msg : "stopped");
        int rc = cli_exit_for(err);
        kiln_error_free(&err);
        return rc;
    }
    if (digest_out)
        snprintf(digest_out, cap, "%s", v.digest);
    return v.failed ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}
