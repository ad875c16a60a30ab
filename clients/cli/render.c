/* Event rendering for terminals and pipes. */
#include "cli.h"
#include "units.h"

#include <time.h>

/* The events of any job (started, progress, log, completed, failed) and
 * of the pusher's transfers (blob, manifest pushed), one line on f; false
 * when e is none of them. */
static bool print_job_event(FILE *f, const Kiln__V1__Event *e)
{
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_JOB_STARTED:
        fprintf(f, "started %s: %s\n", e->job_started->kind, e->job_started->description);
        return true;
    case KILN__V1__EVENT__PAYLOAD_PROGRESS:
        if (e->progress->total)
            fprintf(f, "progress %s %llu/%llu (%.0f%%)\n", e->progress->what,
                    (unsigned long long)e->progress->done, (unsigned long long)e->progress->total,
                    100.0 * (double)e->progress->done / (double)e->progress->total);
        else
            fprintf(f, "progress %s %llu\n", e->progress->what,
                    (unsigned long long)e->progress->done);
        return true;
    case KILN__V1__EVENT__PAYLOAD_LOG:
        fprintf(f, "%s %s\n", e->log->stream == KILN__V1__LOG_LINE__STREAM__STDERR ? "err" : "out",
                e->log->text);
        return true;
    case KILN__V1__EVENT__PAYLOAD_COMPLETED:
        fprintf(f, "completed %s%s%s\n", e->completed->summary, *e->completed->digest ? " " : "",
                e->completed->digest);
        return true;
    case KILN__V1__EVENT__PAYLOAD_FAILED: {
        const Kiln__V1__Status *st = e->failed->error;
        const ProtobufCEnumValue *v =
            st ? protobuf_c_enum_descriptor_get_value(&kiln__v1__code__descriptor, st->code) : NULL;
        fprintf(f, "failed %s: %s\n", v ? v->name : "UNKNOWN",
                st && st->message ? st->message : "");
        return true;
    }
    case KILN__V1__EVENT__PAYLOAD_BLOB: {
        const ProtobufCEnumValue *k = protobuf_c_enum_descriptor_get_value(
            &kiln__v1__blob_event__kind__descriptor, e->blob->kind);
        fprintf(f, "blob %s %s %llu/%llu%s%s\n", k ? k->name : "?", e->blob->digest,
                (unsigned long long)e->blob->done, (unsigned long long)e->blob->total,
                *e->blob->detail ? " " : "", e->blob->detail);
        return true;
    }
    case KILN__V1__EVENT__PAYLOAD_MANIFEST_PUSHED:
        fprintf(f, "manifest %s pushed as %s\n", e->manifest_pushed->digest,
                e->manifest_pushed->ref);
        return true;
    default:
        return false;
    }
}

/* The events of a build's stages and steps (and the layers it packs), one
 * line on f (a step's output: one per line); false when e is none of them. */
static bool print_build_event(FILE *f, const Kiln__V1__Event *e)
{
    char size[KILN_LAYER_SIZE_STRLEN];
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_LAYER_PACKED:
        kiln_format_layer_size(size, sizeof(size), e->layer_packed->blob_bytes,
                               e->layer_packed->tar_bytes);
        fprintf(f, "layer %u %s %s in %.2fs\n", e->layer_packed->index, e->layer_packed->digest,
                size, e->layer_packed->seconds);
        return true;
    case KILN__V1__EVENT__PAYLOAD_STAGE_STARTED:
        fprintf(f, "stage %u %s from %s\n", e->stage_started->stage, e->stage_started->name,
                e->stage_started->base_image);
        return true;
    case KILN__V1__EVENT__PAYLOAD_STEP_STARTED:
        fprintf(f, "step %u.%u line %d: %s\n", e->step_started->stage, e->step_started->step,
                e->step_started->line, e->step_started->text);
        return true;
    case KILN__V1__EVENT__PAYLOAD_OUTPUT:
        for (size_t i = 0; i < e->output->n_lines; i++)
            fprintf(f, "%s%s %s\n", i ? "    " : "output ",
                    e->output->lines[i]->stream == KILN__V1__LOG_LINE__STREAM__STDERR ? "err"
                                                                                      : "out",
                    e->output->lines[i]->text);
        return true;
    case KILN__V1__EVENT__PAYLOAD_STEP_DONE:
        kiln_format_layer_size(size, sizeof(size), e->step_done->size_compressed,
                               e->step_done->size_uncompressed ? e->step_done->size_uncompressed
                                                               : e->step_done->layer_bytes);
        fprintf(f, "step %u.%u %s in %llu ms, layer %s, key %.19s\n", e->step_done->stage,
                e->step_done->step,
                !e->step_done->cached         ? "done"
                : *e->step_done->cache_source ? "cached (registry)"
                                              : "cached",
                (unsigned long long)e->step_done->duration_ms, size, e->step_done->cache_key);
        return true;
    case KILN__V1__EVENT__PAYLOAD_STAGE_DONE:
        fprintf(f, "stage %u done\n", e->stage_done->stage);
        return true;
    default:
        return false;
    }
}

void cli_print_event(FILE *f, const Kiln__V1__Event *e)
{
    time_t secs = (time_t)(e->ts_unix_ms / 1000);
    struct tm tm;
    localtime_r(&secs, &tm);
    fprintf(f, "%02d:%02d:%02d.%03d %s #%llu ", tm.tm_hour, tm.tm_min, tm.tm_sec,
            (int)(e->ts_unix_ms % 1000), e->topic ? e->topic : "?", (unsigned long long)e->seq);
    if (!print_job_event(f, e) && !print_build_event(f, e)) {
        /* A payload this CLI does not know yet: show it as JSON rather than drop it. */
        cJSON *j = cli_pb_to_json(&e->base);
        char *s = cJSON_PrintUnformatted(j);
        fprintf(f, "event %s\n", s ? s : "");
        cJSON_free(s);
        cJSON_Delete(j);
    }
    fflush(f);
}

void cli_print_event_json(FILE *f, const Kiln__V1__Event *e)
{
    cJSON *j = cli_pb_to_json(&e->base);
    char *s = cJSON_PrintUnformatted(j);
    if (s)
        fprintf(f, "%s\n", s);
    cJSON_free(s);
    cJSON_Delete(j);
    fflush(f);
}
