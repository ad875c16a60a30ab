/* Numbers with units: sizes and durations as people write them (flags,
 * configuration, Dockerfile options), and the clocks durations are measured
 * on. */
#ifndef KILN_UNITS_H
#define KILN_UNITS_H

#include <time.h>

#include <stddef.h>

/* Parses a size in bytes: a number with an optional fraction and an
 * optional binary unit k, m, g, t or p (any case), optionally followed by
 * "i" and/or "b": "4M", "512k", "64Mi", "1GiB", "1.5g", "64mb", "10b",
 * "1048576" (Docker's RAMInBytes).  -1 on error or overflow. */
long long kiln_parse_size(const char *s);

/* Parses a duration: a sequence of <number><unit> with units h, m, s, ms
 * ("1h30m", "10m", "90s", "500ms"); a bare number is seconds.  Milliseconds,
 * or -1 on error. */
long long kiln_parse_duration_ms(const char *s);
/* "2 GiB", "512 MiB", "1.5 GiB", "4096 bytes" into out. */
void kiln_format_size(char *out, size_t cap, unsigned long long bytes);
/* Data sizes as Docker shows them (decimal units): "0 B", "512 B",
 * "12.3 kB", "40.1 MB", "1.2 GB" into out. */
void kiln_format_bytes(char *out, size_t cap, unsigned long long bytes);
/* A layer's size, the one way Kiln shows it everywhere (build progress,
 * history, events, push): "12.3 MB compressed / 40.1 MB" (the second is the
 * uncompressed tar).  A side not known at that point is 0 and shows as "?":
 * a step's layer is compressed only when the image is committed, and a
 * layer pulled from a registry comes with its compressed size only. */
#define KILN_LAYER_SIZE_STRLEN 48
void kiln_format_layer_size(char *out, size_t cap, unsigned long long compressed,
                            unsigned long long uncompressed);
/* "10m", "1h30m", "1m30s", "1500ms" into out. */
void kiln_format_duration(char *out, size_t cap, unsigned long long ms);

/* Milliseconds on CLOCK_MONOTONIC / CLOCK_REALTIME. */
unsigned long long kiln_now_ms(void);

/* Whole seconds since a file's mtime, never negative: the kernel may stamp
 * a file from a finer clock than time()'s, a moment ahead of it. */
long long kiln_age_s(const struct timespec *mtime);

/* The CLOCK_REALTIME instant ms milliseconds from now, as
 * pthread_cond_timedwait() wants its deadline. */
struct timespec kiln_deadline_in_ms(long long ms);
long long kiln_wall_ms(void);

#endif
