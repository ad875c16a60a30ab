/* Event rendering for terminals and pipes. */
#include "cli.h"

#include <time.h>

void cli_print_event(FILE *f, const Kiln__V1__Event *e)
{
    time_t secs = (time_t)(e->ts_unix_ms / 1000);
    struct tm tm;
    localtime_r(&secs, &tm);
    fprintf(f, "%02d:%02d:%02d.%03d %s #%llu ", tm.tm_hour, tm.tm_min, tm.tm_sec,
            (int)(e->ts_unix_ms % 1000), e->topic ? e->topic : "?", (unsigned long long)e->seq);
    switch (e->payload_case) {
    case KILN__V1__EVENT__PAYLOAD_JOB_STARTED:
        fprintf(f, "started %s: %s\n", e->job_started->kind, e->job_started->description);
        break;
    case KILN__V1__EVENT__PAYLOAD_PROGRESS:
        if (e->progress->total)
            fprintf(f, "progress %s %llu/%llu (%.0f%%)\n", e->progress->what,
                    (unsigned long long)e->progress->done, (unsigned long long)e->progress->total,
                    100.0 * (double)e->progress->done / (double)e->progress->total);
        else
            fprintf(f, "progress %s %llu\n", e->progress->what,
                    (unsigned long long)e->progress->done);
        break;
    case KILN__V1__EVENT__PAYLOAD_LOG:
        fprintf(f, "%s %s\n", e->log->stream == KILN__V1__LOG_LINE__STREAM__STDERR ? "err" : "out",
                e->log->text);
        break;
    case KILN__V1__EVENT__PAYLOAD_COMPLETED:
        fprintf(f, "completed %s%s%s\n", e->completed->summary, *e->completed->digest ? " " : "",
                e->completed->digest);
        break;
    case KILN__V1__EVENT__PAYLOAD_FAILED: {
        const Kiln__V1__Status *st = e->failed->error;
        const ProtobufCEnumValue *v =
            st ? protobuf_c_enum_descriptor_get_value(&kiln__v1__code__descriptor, st->code) : NULL;
        fprintf(f, "failed %s: %s\n", v ? v->name : "UNKNOWN",
                st && st->message ? st->message : "");
        break;
    }
    default: {
        /* A payload this CLI does not know yet: show it as JSON rather than drop it. */
        cJSON *j = cli_pb_to_json(&e->base);
        char *s = cJSON_PrintUnformatted(j);
        fprintf(f, "event %s\n", s ? s : "");
        cJSON_free(s);
        cJSON_Delete(j);
    }
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
