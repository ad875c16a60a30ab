/* Numbers with units: sizes, durations and clocks (see units.h). */
#include "units.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

unsigned long long kiln_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000ULL;
}

long long kiln_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000LL;
}

long long kiln_parse_size(const char *s)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long whole = strtoull(s, &end, 10);
    if (errno)
        return -1;
    double frac = 0;
    if (*end == '.') {
        end++;
        if (!isdigit((unsigned char)*end))
            return -1;
        for (double scale = 0.1; isdigit((unsigned char)*end); end++, scale /= 10)
            frac += (*end - '0') * scale;
    }
    static const char units[] = "kmgtp";
    unsigned shift = 0;
    const char *u = *end ? strchr(units, tolower((unsigned char)*end)) : NULL;
    if (u != NULL) {
        shift = 10 * (unsigned)(u - units + 1);
        end++;
        if (tolower((unsigned char)*end) == 'i')
            end++;
    }
    if (tolower((unsigned char)*end) == 'b')
        end++;
    if (*end != '\0')
        return -1;
    if (whole > (unsigned long long)LLONG_MAX >> shift)
        return -1;
    unsigned long long v = whole << shift;
    unsigned long long f = (unsigned long long)(frac * (double)(1ULL << shift));
    if (f > (unsigned long long)LLONG_MAX - v)
        return -1;
    return (long long)(v + f);
}

long long kiln_parse_duration_ms(const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    unsigned long long total = 0;
    while (*s) {
        char *end = NULL;
        errno = 0;
        if (*s < '0' || *s > '9')
            return -1;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s)
            return -1;
        unsigned long long mul;
        if (*end == '\0' && total == 0)
            mul = 1000, s = end; /* a bare number: seconds */
        else if (strncmp(end, "ms", 2) == 0)
            mul = 1, s = end + 2;
        else if (*end == 'h')
            mul = 3600000ULL, s = end + 1;
        else if (*end == 'm')
            mul = 60000ULL, s = end + 1;
        else if (*end == 's')
            mul = 1000, s = end + 1;
        else
            return -1;
        if (v > (unsigned long long)LLONG_MAX / mul ||
            total > (unsigned long long)LLONG_MAX - v * mul)
            return -1;
        total += v * mul;
    }
    return (long long)total;
}

void kiln_format_size(char *out, size_t cap, unsigned long long bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    int u = -1;
    unsigned long long div = 1;
    while (u < 3 && bytes >= div * 1024) {
        div *= 1024;
        u++;
    }
    if (u < 0)
        snprintf(out, cap, "%llu bytes", bytes);
    else if (bytes % div == 0)
        snprintf(out, cap, "%llu %s", bytes / div, units[u]);
    else
        snprintf(out, cap, "%.1f %s", (double)bytes / (double)div, units[u]);
}

void kiln_format_bytes(char *out, size_t cap, unsigned long long bytes)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)bytes;
    int i = 0;
    while (v >= 1000 && i < 4) {
        v /= 1000;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", v, units[i]);
}

void kiln_format_layer_size(char *out, size_t cap, unsigned long long compressed,
                            unsigned long long uncompressed)
{
    char c[24] = "?", u[24] = "?";
    if (compressed)
        kiln_format_bytes(c, sizeof(c), compressed);
    if (uncompressed)
        kiln_format_bytes(u, sizeof(u), uncompressed);
    snprintf(out, cap, "%s compressed / %s", c, u);
}

void kiln_format_duration(char *out, size_t cap, unsigned long long ms)
{
    if (ms % 1000 || ms == 0) {
        snprintf(out, cap, "%llums", ms);
        return;
    }
    unsigned long long s = ms / 1000, h = s / 3600, m = s / 60 % 60;
    s %= 60;
    int n = 0;
    out[0] = '\0';
    if (h)
        n += snprintf(out + n, cap - (size_t)n, "%lluh", h);
    if (m && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "%llum", m);
    if (s && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "%llus", s);
}

struct timespec kiln_deadline_in_ms(long long ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)(ms / 1000);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

long long kiln_age_s(const struct timespec *mtime)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long age = (long long)now.tv_sec - (long long)mtime->tv_sec;
    if (now.tv_nsec < mtime->tv_nsec)
        age--;
    return age < 0 ? 0 : age;
}
