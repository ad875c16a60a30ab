/* One line per event on stderr, logfmt (default) or JSON:
 *   ts=2026-01-02T03:04:05.678Z level=info svc=pusher area=rpc req=… job=… msg="…"
 * Levels are checked before arguments are evaluated (KILN_LOG macros).  Debug
 * output is enabled per area with KILN_DEBUG=rpc,events (or "all"). */
#ifndef KILN_LOG_H
#define KILN_LOG_H

#include <stdbool.h>

typedef enum kiln_log_level {
    KILN_LOG_DEBUG = 0,
    KILN_LOG_INFO = 1,
    KILN_LOG_WARN = 2,
    KILN_LOG_ERROR = 3,
} kiln_log_level;

typedef enum kiln_log_format {
    KILN_LOG_LOGFMT = 0,
    KILN_LOG_JSON = 1,
} kiln_log_format;

/* Process-wide setup; call once before threads start.  svc names the service. */
void kiln_log_setup(const char *svc, kiln_log_level min, kiln_log_format fmt);
/* Parses "debug|info|warn|error" / "logfmt|json"; -1 if unknown. */
int kiln_log_level_parse(const char *s);
int kiln_log_format_parse(const char *s);
/* Reads KILN_DEBUG (comma-separated areas, or "all"). */
void kiln_log_debug_areas(const char *spec);

bool kiln_log_enabled(kiln_log_level level, const char *area);
void kiln_log_emit(kiln_log_level level, const char *area, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Per-thread context added to every line: request and job ids (NULL clears). */
void kiln_log_context(const char *req, const char *job);

#define KILN_LOG(level, area, ...)                                                                 \
    do {                                                                                           \
        if (kiln_log_enabled((level), (area)))                                                     \
            kiln_log_emit((level), (area), __VA_ARGS__);                                           \
    } while (0)
#define kiln_debug(area, ...) KILN_LOG(KILN_LOG_DEBUG, area, __VA_ARGS__)
#define kiln_info(area, ...)  KILN_LOG(KILN_LOG_INFO, area, __VA_ARGS__)
#define kiln_warn(area, ...)  KILN_LOG(KILN_LOG_WARN, area, __VA_ARGS__)
#define kiln_err(area, ...)   KILN_LOG(KILN_LOG_ERROR, area, __VA_ARGS__)

#endif
