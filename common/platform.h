/* Image platforms ("os/arch[/variant]"), normalised the way containerd's
 * platforms package does, so every part of Kiln spells and matches them
 * alike:
 *   os        lower-cased; "macos" -> "darwin"
 *   x86_64, x86-64 -> amd64 (variant "v1" dropped: it is the default)
 *   aarch64   -> arm64; variants "8", "v8", "v8.0" dropped (v8 is the
 *                default), "9", "9.0", "v9.0" -> "v9"
 *   armhf     -> arm/v7, armel -> arm/v6
 *   arm       -> variant "v7" when none is given; "5", "6", "7", "8" -> "vN"
 *   i386, i686 -> 386 (no variant)
 * Everything lower-cased.  Image configs and manifest lists Kiln writes
 * carry the normalised form; an index entry matches a wanted platform when
 * both normalise to the same os and architecture and, if the wanted one has
 * a variant, the same variant (so arm64 matches arm64/v8 either way round). */
#ifndef KILN_PLATFORM_H
#define KILN_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define KILN_PLATFORM_PART_MAX 31
#define KILN_PLATFORM_STRMAX   (3 * (KILN_PLATFORM_PART_MAX + 1))

typedef struct kiln_platform {
    char os[KILN_PLATFORM_PART_MAX + 1];
    char arch[KILN_PLATFORM_PART_MAX + 1];
    char variant[KILN_PLATFORM_PART_MAX + 1]; /* "" when none */
} kiln_platform;

/* Normalises in place (see above). */
void kiln_platform_normalize(kiln_platform *p);

/* Sets *out from its parts (variant may be NULL or "") and normalises.
 * Returns 0, or KILN_EINVAL when a part is empty (os, arch), too long or
 * holds other than [a-z0-9._-] after lower-casing. */
int kiln_platform_set(kiln_platform *out, const char *os, const char *arch, const char *variant,
                      kiln_error **err);

/* Parses "os/arch[/variant]" and normalises ("os/arch/" has no variant).
 * With default_arch non-NULL, a bare "os" takes that architecture.  Returns 0
 * or KILN_EINVAL. */
int kiln_platform_parse(kiln_platform *out, const char *s, const char *default_arch,
                        kiln_error **err);

/* "os/arch" or "os/arch/variant"; snprintf contract (returns the length
 * needed).  KILN_PLATFORM_STRMAX always suffices. */
size_t kiln_platform_format(const kiln_platform *p, char *buf, size_t n);

/* The platform this binary runs as ("linux/amd64", "linux/arm/v7", ...),
 * static. */
const kiln_platform *kiln_platform_host(void);
const char *kiln_platform_host_string(void);

/* True when the index entry (os, arch, variant as found in a manifest list,
 * any spelling; variant NULL or "" for none) is the wanted platform.  want
 * is normalised.  A wanted platform without a variant takes any variant of
 * its architecture. */
bool kiln_platform_match(const kiln_platform *want, const char *os, const char *arch,
                         const char *variant);

/* True when the entry's normalised variant equals want's (an exact match,
 * to prefer over one only kiln_platform_match accepts). */
bool kiln_platform_exact(const kiln_platform *want, const char *os, const char *arch,
                         const char *variant);

#endif
