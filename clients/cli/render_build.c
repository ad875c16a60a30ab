/* Running `kiln build` and showing its progress.
 *
 *   plain  one line per step start/finish, RUN output prefixed by its step
 *          number (what pipes and CI logs get)
 *   tty    a live view like buildx's (render_tty.c): finished steps scroll
 *          up, each running step has a line with its elapsed time and its
 *          last output line, all cut to the terminal's width
 *   json   every event as one JSON object per line
 *   quiet  nothing but the image digest
 * auto is tty on a terminal (not TERM=dumb), plain otherwise. */
#include "cli.h"
#include "units.h"
#include "follow.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_STEPS 1024

typedef enum { P_PLAIN, P_TTY, P_JSON, P_QUIET } pmode;

typedef struct view {
    pmode mode;
    FILE *out;    /* progress goes to stderr so stdout carries only the digest */
    cli_tty *tty; /* P_TTY: the live view (render_tty.c) */
    unsigned next_no;
    struct {
        uint32_t stage, step;
        unsigned no;
    } steps[MAX_STEPS];
    size_t n_steps;
    char stage_names[64][64];
    bool failed;
    int fail_code; /* wire code of the failure */
    int fail_line;
    char fail_text[512], fail_msg[1024], digest[80];
} view;

static unsigned step_no(view *v, uint32_t stage, uint32_t step, bool create)
{
    for (size_t i = 0; i < v->n_steps; i++)
        if (v->steps[i].stage == stage && v->steps[i].step == step)
            return v->steps[i].no;
    if (!create || v->n_steps == MAX_STEPS)
        return 0;
    v->steps[v->n_steps].stage = stage;
    v->steps[v->n_steps].step = step;
    v->steps[v->n_steps].no = ++v->next_no;
    return v->steps[v->n_steps++].no;
}

/* Messages of the Ctrl-C thread, printed by the view so it does not draw
 * over them. */
static void cancel_messages(view *v)
{
    char m[512], line[520];
    while (cli_cancel_take_message(m, sizeof(m))) {
        snprintf(line, sizeof(line), "kiln: %s", m);
        cli_tty_note(v->tty, line);
    }
}

/* Between events: keep the live view's elapsed times moving. */
static void on_idle(void *ud)
{
    view *v = ud;
    cancel_messages(v);
    cli_tty_draw(v->tty, false);
}

static const char *stage_label(view *v, uint32_t stage)
{
    return stage < 64 && v->stage_names[stage][0] ? v->stage_names[stage] : "stage";
}

/* "DONE 1.23s, layer ? compressed / 4.5 MB" (the layer is compressed at
 * commit) / "CACHED" */
static void done_status(const Kiln__V1__BuildStepDone *d, char *out, size_t cap)
{
    double secs = (double)d->duration_ms / 1000.0;
    uint64_t raw = d->size_uncompressed ? d->size_uncompressed : d->layer_bytes;
    char size[KILN_LAYER_SIZE_STRLEN];
    kiln_format_layer_size(size, sizeof(size), d->size_compressed, raw);
    if (d->cached && *d->cache_source)
        snprintf(out, cap, "CACHED (%s)", d->cache_source);
    else if (d->cached)
        snprintf(out, cap, "CACHED");
    else if (raw)
        snprintf(out, cap, "DONE %.2fs, layer %s", secs, size);
    else
        snprintf(out, cap, "DONE %.2fs", secs);
}

static void tty_event(view *v, const kiln_event *e)
{
    char line[1024], status[96];
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_STAGE_STARTED:
        snprintf(line, sizeof(line), "[%s] FROM %s", stage_label(v, e->stage_started->stage),
                 e->stage_started->base_image);
        cli_tty_note(v->tty, line);
        break;
    case KILN__V1__EVENT__PAYLOAD_STEP_STARTED: {
        const Kiln__V1__BuildStepStarted *s = e->step_started;
        unsigned no = step_no(v, s->stage, s->step, true);
        snprintf(line, sizeof(line), "#%u [%s] %s (line %d)", no, stage_label(v, s->stage), s->text,
                 s->line);
        cli_tty_step_started(v->tty, no, line);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_OUTPUT: {
        unsigned no = step_no(v, e->output->stage, e->output->step, false);
        for (size_t i = 0; i < e->output->n_lines; i++)
            cli_tty_output(v->tty, no, e->output->lines[i]->text);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_STEP_DONE: {
        const Kiln__V1__BuildStepDone *d = e->step_done;
        unsigned no = step_no(v, d->stage, d->step, true);
        /* short, to stay whole at the right edge of a narrow terminal */
        if (d->cached)
            snprintf(status, sizeof(status), "CACHED%s%s%s", *d->cache_source ? " (" : "",
                     d->cache_source, *d->cache_source ? ")" : "");
        else
            snprintf(status, sizeof(status), "DONE %.1fs", (double)d->duration_ms / 1000.0);
        snprintf(line, sizeof(line), "#%u [%s]", no, stage_label(v, d->stage));
        cli_tty_step_done(v->tty, no, line, status);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_PROGRESS:
        if (*e->progress->what) {
            snprintf(line, sizeof(line), "=> %s", e->progress->what);
            cli_tty_note(v->tty, line);
        }
        break;
    case KILN__V1__EVENT__PAYLOAD_COMPLETED:
        snprintf(line, sizeof(line), "=> %s", e->completed->summary);
        cli_tty_note(v->tty, line);
        cli_tty_finish(v->tty, false);
        break;
    case KILN__V1__EVENT__PAYLOAD_FAILED:
        cli_tty_finish(v->tty, true);
        break;
    default:
        break;
    }
}

static void plain_event(view *v, const kiln_event *e)
{
    char status[96];
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_STAGE_STARTED:
        fprintf(v->out, "[%s] FROM %s\n", stage_label(v, e->stage_started->stage),
                e->stage_started->base_image);
        break;
    case KILN__V1__EVENT__PAYLOAD_STEP_STARTED: {
        const Kiln__V1__BuildStepStarted *s = e->step_started;
        unsigned no = step_no(v, s->stage, s->step, true);
        fprintf(v->out, "#%u [%s] %s  (line %d)\n", no, stage_label(v, s->stage), s->text, s->line);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_OUTPUT: {
        const Kiln__V1__BuildOutput *o = e->output;
        unsigned no = step_no(v, o->stage, o->step, false);
        for (size_t i = 0; i < o->n_lines; i++)
            fprintf(v->out, "#%u %s %s\n", no,
                    o->lines[i]->stream == KILN__V1__LOG_LINE__STREAM__STDERR ? "!" : "|",
                    o->lines[i]->text);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_STEP_DONE: {
        const Kiln__V1__BuildStepDone *d = e->step_done;
        done_status(d, status, sizeof(status));
        fprintf(v->out, "#%u %s\n", step_no(v, d->stage, d->step, true), status);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_PROGRESS:
        if (*e->progress->what)
            fprintf(v->out, "=> %s\n", e->progress->what);
        break;
    case KILN__V1__EVENT__PAYLOAD_COMPLETED:
        fprintf(v->out, "=> %s\n", e->completed->summary);
        break;
    default:
        break;
    }
}

static int build_cb(void *ud, const kiln_event *e)
{
    view *v = ud;
    if (e->payload_case == KILN__V1__EVENT__PAYLOAD_STAGE_STARTED && e->stage_started->stage < 64)
        snprintf(v->stage_names[e->stage_started->stage], sizeof(v->stage_names[0]), "%s",
                 *e->stage_started->name ? e->stage_started->name : "stage");
    if (v->mode == P_JSON)
        cli_print_event_json(stdout, e);
    else if (v->mode == P_TTY) {
        cancel_messages(v);
        tty_event(v, e);
    } else if (v->mode == P_PLAIN)
        plain_event(v, e);
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_COMPLETED:
        snprintf(v->digest, sizeof(v->digest), "%s", e->completed->digest);
        break;
    case KILN__V1__EVENT__PAYLOAD_FAILED: {
        const Kiln__V1__JobFailed *f = e->failed;
        v->failed = true;
        v->fail_code = f->error ? (int)f->error->code : 0;
        v->fail_line = f->line;
        snprintf(v->fail_text, sizeof(v->fail_text), "%s", f->instruction ? f->instruction : "");
        snprintf(v->fail_msg, sizeof(v->fail_msg), "%s",
                 f->error && f->error->message ? f->error->message : "build failed");
        break;
    }
    default:
        break;
    }
    if (v->mode != P_JSON)
        fflush(v->out);
    return 0;
}

/* After a build failed for want of a service: whether kiln-builder's own
 * check of kiln-pusher says it is down (detail copied), as opposed to a
 * registry that failed the final push. */
static bool pusher_down(cli_ctx *ctx, char *detail, size_t cap)
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__StatusRequest sr = KILN__V1__STATUS_REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_STATUS;
    req.status = &sr;
    kiln_rpc_client *c = NULL;
    kiln_reply *rep = NULL;
    kiln_error *err = NULL;
    bool down = false;
    if (kiln_rpc_client_new(&c, ctx->url[CLI_BUILDER], &ctx->transport, true, &err) == 0 &&
        kiln_rpc_call(c, &req, &rep, ctx->timeout_ms < 5000 ? ctx->timeout_ms : 5000, &err) == 0) {
        for (size_t i = 0; i < rep->status_reply->n_checks; i++) {
            const Kiln__V1__Check *k = rep->status_reply->checks[i];
            if (strcmp(k->name, "pusher") == 0 && !k->ok) {
                down = true;
                snprintf(detail, cap, "%s", k->detail);
            }
        }
    }
    kiln_error_free(&err);
    kiln_rpc_reply_free(rep);
    kiln_rpc_client_free(c);
    return down;
}

int cli_run_build(cli_ctx *ctx, Kiln__V1__BuildRequest *br, const char *progress,
                  const char *iidfile, cli_build_result *res)
{
    cli_build_result r = {0};
    int rc = cli_run_build_to(ctx, br, progress, NULL, &r);
    if (rc == CLI_EXIT_OK) {
        if (strcmp(progress, "json") != 0)
            printf("%s\n", r.digest);
        if (res != NULL)
            *res = r;
        if (iidfile) {
            FILE *f = fopen(iidfile, "we");
            if (f == NULL || fprintf(f, "%s", r.digest) < 0 || fclose(f) != 0) {
                cli_errorf("--iidfile %s: cannot write", iidfile);
                rc = CLI_EXIT_FAILED;
            }
        }
    }
    return rc;
}

/* A view of a build's events in the given --progress mode on stderr; NULL
 * when out of memory.  Free with view_free. */
static view *view_new(const char *progress)
{
    view *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return NULL;
    v->out = stderr;
    if (strcmp(progress, "json") == 0)
        v->mode = P_JSON;
    else if (strcmp(progress, "quiet") == 0)
        v->mode = P_QUIET;
    else if (strcmp(progress, "plain") == 0)
        v->mode = P_PLAIN;
    else if (strcmp(progress, "tty") == 0)
        v->mode = P_TTY;
    else
        v->mode = cli_stderr_is_tty() ? P_TTY : P_PLAIN;
    if (v->mode == P_TTY && (v->tty = cli_tty_new(v->out)) == NULL)
        v->mode = P_PLAIN;
    return v;
}

/* Frees v and its live view. */
static void view_free(view *v)
{
    cli_tty_free(v->tty);
    free(v);
}

/* Sends br to kiln-builder; the job id it accepted into job.  Returns a CLI
 * exit code (a refused build: CLI_EXIT_BUILD). */
static int submit_build(cli_ctx *ctx, Kiln__V1__BuildRequest *br, char job[KILN_JOB_ID_MAX + 1])
{
    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_BUILD;
    req.build = br;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_BUILDER, &req, &rep, 0);
    if (rc)
        return rc == CLI_EXIT_FAILED ? CLI_EXIT_BUILD : rc;
    snprintf(job, KILN_JOB_ID_MAX + 1, "%s", rep->job_accepted->job_id);
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}

/* Renders job's events into v, over c, until the build ends.  Returns a
 * CLI exit code for losing them (a failed build is in v). */
static int follow_build(cli_ctx *ctx, kiln_rpc_client *c, view *v, const char *job)
{
    kiln_error *err = NULL;
    char *url = cli_events_url(c, ctx->timeout_ms, &err);
    int rc = CLI_EXIT_OK;
    if (url != NULL) {
        kiln_follow_opts fo = {.job_id = job,
                               .events_url = url,
                               .transport = &ctx->transport,
                               .poll_ms = v->mode == P_TTY ? 100 : 1000,
                               .idle = v->mode == P_TTY ? on_idle : NULL};
        if (kiln_follow_job(c, &fo, build_cb, v, &err) < 0) {
            cli_errorf("build %s: %s", job, err ? err->msg : "lost the build's events");
            rc = cli_exit_for(err);
        }
    } else {
        cli_errorf("%s", err->msg);
        rc = cli_exit_for(err);
    }
    kiln_error_free(&err);
    free(url);
    return rc;
}

/* Says why the build v followed failed ("what failed ...", filename: the
 * Dockerfile's) and returns its exit code. */
static int build_failed(cli_ctx *ctx, view *v, const char *what, const char *filename)
{
    kiln_code code = kiln_code_from_wire(v->fail_code);
    if (cli_cancel_signal() && code == KILN_ECANCELED)
        return cli_cancel_exit(CLI_EXIT_OK); /* "cancelled" was printed when it happened */
    if (v->fail_line == 0 && (code == KILN_EUNAVAIL || code == KILN_ETIMEDOUT) &&
        pusher_down(ctx, v->fail_text, sizeof(v->fail_text))) {
        cli_errorf("%s failed: kiln-pusher is unreachable from kiln-builder (%s)\n%s", what,
                   v->fail_text, v->fail_msg);
        return CLI_EXIT_UNREACHABLE;
    }
    if (v->fail_line > 0)
        cli_errorf("%s failed at %s:%d: %s\n%s", what, filename, v->fail_line, v->fail_text,
                   v->fail_msg);
    else
        cli_errorf("%s failed: %s", what, v->fail_msg);
    /* A registry refusing credentials, or failing the final push (no
     * instruction to blame), is a registry failure, not the Dockerfile's. */
    bool registry = code == KILN_EAUTH ||
                    (v->fail_line == 0 &&
                     (code == KILN_EREMOTE || code == KILN_EUNAVAIL || code == KILN_EPERM));
    return registry ? CLI_EXIT_REGISTRY : CLI_EXIT_BUILD;
}

int cli_run_build_to(cli_ctx *ctx, Kiln__V1__BuildRequest *br, const char *progress,
                     const char *label, cli_build_result *res)
{
    /* "build failed" or "build for linux/arm64 failed" */
    char what[96];
    snprintf(what, sizeof(what), "build%s%.80s", label ? " for " : "", label ? label : "");
    view *v = view_new(progress);
    if (v == NULL)
        return CLI_EXIT_FAILED;
    char job[KILN_JOB_ID_MAX + 1];
    cli_cancel_arm(ctx, CLI_BUILDER, "build", NULL);
    int rc = submit_build(ctx, br, job);
    if (rc) {
        cli_cancel_disarm();
        view_free(v);
        return rc;
    }
    cli_cancel_arm(ctx, CLI_BUILDER, "build", job);
    if (v->mode == P_TTY)
        cli_cancel_route(true);
    cli_ssh_proxy *ssh = cli_ssh_proxy_start(ctx, ctx->ssh); /* --ssh */
    kiln_rpc_client *c = cli_connect(ctx, CLI_BUILDER);
    if (c == NULL) {
        cli_ssh_proxy_stop(ssh);
        view_free(v);
        return CLI_EXIT_UNREACHABLE;
    }
    rc = follow_build(ctx, c, v, job);
    kiln_rpc_client_free(c);
    cli_ssh_proxy_stop(ssh);
    if (v->mode == P_TTY)
        cli_cancel_route(false);
    cli_cancel_disarm();
    if (rc == CLI_EXIT_OK && v->failed)
        rc = build_failed(ctx, v, what, br->filename);
    if (rc == CLI_EXIT_OK) {
        snprintf(res->job, sizeof(res->job), "%s", job);
        snprintf(res->digest, sizeof(res->digest), "%s", v->digest);
    }
    view_free(v);
    return rc;
}
