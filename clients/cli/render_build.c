/* Running `kiln build` and showing its progress.
 *
 *   plain  one line per step start/finish, RUN output prefixed by its step
 *          number (what pipes and CI logs get)
 *   tty    the same, plus a live status line under the log that shows the
 *          running step, its elapsed time (redrawn five times a second) and
 *          the last output line
 *   json   every event as one JSON object per line
 *   quiet  nothing but the image digest
 * auto is tty on a terminal, plain otherwise. */
#include "cli.h"
#include "config.h"
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
    FILE *out; /* progress goes to stderr so stdout carries only the digest */
    unsigned next_no;
    struct {
        uint32_t stage, step;
        unsigned no;
        bool running;
        unsigned long long t0;
        char text[160];
    } steps[MAX_STEPS];
    size_t n_steps;
    char stage_names[64][64];
    unsigned cur_no; /* latest step started and still running (stages run in parallel) */
    char last_line[160];
    bool status_shown;
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
    v->steps[v->n_steps].t0 = kiln_now_ms();
    return v->steps[v->n_steps++].no;
}

static void clear_status(view *v)
{
    if (v->mode == P_TTY && v->status_shown) {
        fputs("\r\033[2K", v->out);
        v->status_shown = false;
    }
}

/* The running step started last, and how many others run beside it. */
static size_t running_step(const view *v, unsigned *others)
{
    size_t best = SIZE_MAX;
    *others = 0;
    for (size_t i = 0; i < v->n_steps; i++) {
        if (!v->steps[i].running)
            continue;
        if (best != SIZE_MAX)
            (*others)++;
        if (best == SIZE_MAX || v->steps[i].no > v->steps[best].no)
            best = i;
    }
    return best;
}

static void draw_status(view *v)
{
    if (v->mode != P_TTY || v->cur_no == 0)
        return;
    unsigned others = 0;
    size_t i = running_step(v, &others); /* the step cur_no names: started last */
    if (i == SIZE_MAX)
        return;
    double secs = (double)(kiln_now_ms() - v->steps[i].t0) / 1000.0;
    char more[32] = "";
    if (others)
        snprintf(more, sizeof(more), " (+%u running)", others);
    fprintf(v->out, "\r\033[2K\033[36m#%u %.1fs\033[0m%s %.60s%s%.60s", v->cur_no, secs, more,
            v->steps[i].text, *v->last_line ? "  | " : "", v->last_line);
    fflush(v->out);
    v->status_shown = true;
}

/* After a step ends: the status follows the latest other running step. */
static void follow_running(view *v)
{
    unsigned others = 0;
    size_t i = running_step(v, &others);
    if (i == SIZE_MAX) {
        v->cur_no = 0;
    } else if (v->steps[i].no != v->cur_no) {
        v->cur_no = v->steps[i].no;
        v->last_line[0] = '\0';
    }
}

/* Between events: keep the elapsed time of the running step moving. */
static void on_idle(void *ud)
{
    view *v = ud;
    if (v->cur_no)
        draw_status(v);
}

static const char *stage_label(view *v, uint32_t stage)
{
    return stage < 64 && v->stage_names[stage][0] ? v->stage_names[stage] : "stage";
}

static int build_cb(void *ud, const kiln_event *e)
{
    view *v = ud;
    if (v->mode == P_JSON) {
        cli_print_event_json(stdout, e);
    }
    bool show = v->mode == P_PLAIN || v->mode == P_TTY;
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_STAGE_STARTED: {
        const Kiln__V1__BuildStageStarted *s = e->stage_started;
        if (s->stage < 64)
            snprintf(v->stage_names[s->stage], sizeof(v->stage_names[0]), "%s",
                     *s->name ? s->name : "stage");
        if (show) {
            clear_status(v);
            fprintf(v->out, "[%s] FROM %s\n", stage_label(v, s->stage), s->base_image);
        }
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_STEP_STARTED: {
        const Kiln__V1__BuildStepStarted *s = e->step_started;
        unsigned no = step_no(v, s->stage, s->step, true);
        for (size_t i = 0; i < v->n_steps; i++)
            if (v->steps[i].no == no) {
                v->steps[i].running = true;
                v->steps[i].t0 = kiln_now_ms();
                snprintf(v->steps[i].text, sizeof(v->steps[i].text), "%s", s->text);
            }
        v->cur_no = no;
        v->last_line[0] = '\0';
        if (show) {
            clear_status(v);
            fprintf(v->out, "#%u [%s] %s  (line %d)\n", no, stage_label(v, s->stage), s->text,
                    s->line);
            draw_status(v);
        }
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_OUTPUT: {
        const Kiln__V1__BuildOutput *o = e->output;
        unsigned no = step_no(v, o->stage, o->step, false);
        if (show) {
            clear_status(v);
            for (size_t i = 0; i < o->n_lines; i++)
                fprintf(v->out, "#%u %s %s\n", no,
                        o->lines[i]->stream == KILN__V1__LOG_LINE__STREAM__STDERR ? "!" : "|",
                        o->lines[i]->text);
            if (o->n_lines && no == v->cur_no)
                snprintf(v->last_line, sizeof(v->last_line), "%s", o->lines[o->n_lines - 1]->text);
            draw_status(v);
        }
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_STEP_DONE: {
        const Kiln__V1__BuildStepDone *d = e->step_done;
        unsigned no = step_no(v, d->stage, d->step, true);
        if (show) {
            clear_status(v);
            if (d->cached)
                fprintf(v->out, "#%u CACHED\n", no);
            else if (d->layer_bytes >= 1000000)
                fprintf(v->out, "#%u DONE %.2fs, layer %.1f MB\n", no,
                        (double)d->duration_ms / 1000.0, (double)d->layer_bytes / 1e6);
            else if (d->layer_bytes >= 1000)
                fprintf(v->out, "#%u DONE %.2fs, layer %.1f kB\n", no,
                        (double)d->duration_ms / 1000.0, (double)d->layer_bytes / 1e3);
            else if (d->layer_bytes)
                fprintf(v->out, "#%u DONE %.2fs, layer %llu B\n", no,
                        (double)d->duration_ms / 1000.0, (unsigned long long)d->layer_bytes);
            else
                fprintf(v->out, "#%u DONE %.2fs\n", no, (double)d->duration_ms / 1000.0);
        }
        for (size_t i = 0; i < v->n_steps; i++)
            if (v->steps[i].no == no)
                v->steps[i].running = false;
        follow_running(v);
        if (show)
            draw_status(v);
        break;
    }
    case KILN__V1__EVENT__PAYLOAD_PROGRESS:
        if (show && *e->progress->what) {
            clear_status(v);
            fprintf(v->out, "=> %s\n", e->progress->what);
            draw_status(v);
        }
        break;
    case KILN__V1__EVENT__PAYLOAD_COMPLETED:
        snprintf(v->digest, sizeof(v->digest), "%s", e->completed->digest);
        if (show) {
            clear_status(v);
            fprintf(v->out, "=> %s\n", e->completed->summary);
        }
        break;
    case KILN__V1__EVENT__PAYLOAD_FAILED: {
        const Kiln__V1__JobFailed *f = e->failed;
        v->failed = true;
        v->fail_code = f->error ? (int)f->error->code : 0;
        v->fail_line = f->line;
        snprintf(v->fail_text, sizeof(v->fail_text), "%s", f->instruction ? f->instruction : "");
        snprintf(v->fail_msg, sizeof(v->fail_msg), "%s",
                 f->error && f->error->message ? f->error->message : "build failed");
        clear_status(v);
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
                  const char *iidfile)
{
    view *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return CLI_EXIT_FAILED;
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
        v->mode = isatty(2) ? P_TTY : P_PLAIN;

    kiln_req req = KILN__V1__REQUEST__INIT;
    req.body_case = KILN__V1__REQUEST__BODY_BUILD;
    req.build = br;
    kiln_reply *rep = NULL;
    cli_cancel_arm(ctx, CLI_BUILDER, "build", NULL);
    int rc = cli_call(ctx, CLI_BUILDER, &req, &rep, 0);
    if (rc) {
        cli_cancel_disarm();
        free(v);
        return rc == CLI_EXIT_FAILED ? CLI_EXIT_BUILD : rc;
    }
    char job[KILN_JOB_ID_MAX + 1];
    snprintf(job, sizeof(job), "%s", rep->job_accepted->job_id);
    kiln_rpc_reply_free(rep);
    cli_cancel_arm(ctx, CLI_BUILDER, "build", job);

    kiln_rpc_client *c = cli_connect(ctx, CLI_BUILDER);
    if (c == NULL) {
        free(v);
        return CLI_EXIT_UNREACHABLE;
    }
    kiln_error *err = NULL;
    char *url = cli_events_url(c, ctx->timeout_ms, &err);
    rc = CLI_EXIT_OK;
    if (url != NULL) {
        kiln_follow_opts fo = {.job_id = job,
                               .events_url = url,
                               .transport = &ctx->transport,
                               .poll_ms = v->mode == P_TTY ? 200 : 1000,
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
    kiln_rpc_client_free(c);
    cli_cancel_disarm();
    if (rc == CLI_EXIT_OK && v->failed && cli_cancel_signal() &&
        kiln_code_from_wire(v->fail_code) == KILN_ECANCELED) {
        rc = cli_cancel_exit(rc); /* "cancelled" was printed when it happened */
    } else if (rc == CLI_EXIT_OK && v->failed && v->fail_line == 0 &&
               (kiln_code_from_wire(v->fail_code) == KILN_EUNAVAIL ||
                kiln_code_from_wire(v->fail_code) == KILN_ETIMEDOUT) &&
               pusher_down(ctx, v->fail_text, sizeof(v->fail_text))) {
        cli_errorf("build failed: kiln-pusher is unreachable from kiln-builder (%s)\n%s",
                   v->fail_text, v->fail_msg);
        rc = CLI_EXIT_UNREACHABLE;
    } else if (rc == CLI_EXIT_OK && v->failed) {
        if (v->fail_line > 0)
            cli_errorf("build failed at %s:%d: %s\n%s", br->filename, v->fail_line, v->fail_text,
                       v->fail_msg);
        else
            cli_errorf("build failed: %s", v->fail_msg);
        /* A registry refusing credentials, or failing the final push (no
         * instruction to blame), is a registry failure, not the Dockerfile's. */
        kiln_code code = kiln_code_from_wire(v->fail_code);
        bool registry = code == KILN_EAUTH ||
                        (v->fail_line == 0 &&
                         (code == KILN_EREMOTE || code == KILN_EUNAVAIL || code == KILN_EPERM));
        rc = registry ? CLI_EXIT_REGISTRY : CLI_EXIT_BUILD;
    }
    if (rc == CLI_EXIT_OK) {
        if (v->mode != P_JSON)
            printf("%s\n", v->digest);
        if (iidfile) {
            FILE *f = fopen(iidfile, "we");
            if (f == NULL || fprintf(f, "%s", v->digest) < 0 || fclose(f) != 0) {
                cli_errorf("--iidfile %s: cannot write", iidfile);
                rc = CLI_EXIT_FAILED;
            }
        }
    }
    free(v);
    return rc;
}
