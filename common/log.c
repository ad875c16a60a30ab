/* Structured logging to stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_AREAS 16

static struct {
    char svc[32];
    kiln_log_level min;
    kiln_log_format fmt;
    bool debug_all;
    int n_areas;
    char areas[MAX_AREAS][24];
} cfg = {.svc = "kiln", .min = KILN_LOG_INFO, .fmt = KILN_LOG_LOGFMT};

static __thread char ctx_req[48];
static __thread char ctx_job[48];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void kiln_log_setup(const char *svc, kiln_log_level min, kiln_log_format fmt)
{
    snprintf(cfg.svc, sizeof(cfg.svc), "%s", svc ? svc : "kiln");
    cfg.min = min;
    cfg.fmt = fmt;
}

int kiln_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int kiln_log_format_parse(const char *s)
{
    if (strcmp(s, "logfmt") == 0)
        return KILN_LOG_LOGFMT;
    if (strcmp(s, "json") == 0)
        return KILN_LOG_JSON;
    return -1;
}

void kiln_log_debug_areas(const char *spec)
{
    cfg.n_areas = 0;
    cfg.debug_all = false;
    if (spec == NULL || *spec == '\0')
        return;
    const char *p = spec;
    while (*p && cfg.n_areas < MAX_AREAS) {
        size_t n = strcspn(p, ",");
        if (n == 3 && strncmp(p, "all", 3) == 0)
            cfg.debug_all = true;
        else if (n > 0 && n < sizeof(cfg.areas[0])) {
            memcpy(cfg.areas[cfg.n_areas], p, n);
            cfg.areas[cfg.n_areas++][n] = '\0';
        }
        p += n;
        if (*p == ',')
            p++;
    }
}

bool kiln_log_enabled(kiln_log_level level, const char *area)
{
    if (level >= cfg.min)
        return true;
    if (level != KILN_LOG_DEBUG)
        return false;
    if (cfg.debug_all)
        return true;
    for (int i = 0; i < cfg.n_areas; i++)
        if (area && strcmp(cfg.areas[i], area) == 0)
            return true;
    return false;
}

void kiln_log_context(const char *req, const char *job)
{
    snprintf(ctx_req, sizeof(ctx_req), "%s", req ? req : "");
    snprintf(ctx_job, sizeof(ctx_job), "%s", job ? job : "");
}

/* Writes s quoted for logfmt (json=false) or as a JSON string (json=true). */
static void put_quoted(FILE *f, const char *s, bool json)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, json ? "\\u%04x" : "\\x%02x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void kiln_log_emit(kiln_log_level level, const char *area, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[64];
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf, sizeof(tbuf), "%s.%03dZ", date, (int)(ts.tv_nsec / 1000000) % 1000);
    const char *lv = level_names[level < 0 || level > 3 ? 1 : level];

    /* Build the whole line in memory so concurrent threads never interleave. */
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (f == NULL)
        return;
    bool json = cfg.fmt == KILN_LOG_JSON;
    if (json) {
        fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"svc\":", tbuf, lv);
        put_quoted(f, cfg.svc, true);
        if (area) {
            fputs(",\"area\":", f);
            put_quoted(f, area, true);
        }
        if (ctx_req[0]) {
            fputs(",\"req\":", f);
            put_quoted(f, ctx_req, true);
        }
        if (ctx_job[0]) {
            fputs(",\"job\":", f);
            put_quoted(f, ctx_job, true);
        }
        fputs(",\"msg\":", f);
        put_quoted(f, msg, true);
        fputs("}\n", f);
    } else {
        fprintf(f, "ts=%s level=%s svc=%s", tbuf, lv, cfg.svc);
        if (area)
            fprintf(f, " area=%s", area);
        if (ctx_req[0])
            fprintf(f, " req=%s", ctx_req);
        if (ctx_job[0])
            fprintf(f, " job=%s", ctx_job);
        fputs(" msg=", f);
        put_quoted(f, msg, false);
        fputc('\n', f);
    }
    fclose(f);
    fwrite(line, 1, len, stderr);
    free(line);
}
