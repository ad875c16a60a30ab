/* Platform names normalised once (see platform.h). */
#include "platform.h"

#include <stdio.h>
#include <string.h>

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static void set(char *dst, const char *src)
{
    snprintf(dst, KILN_PLATFORM_PART_MAX + 1, "%s", src);
}

static bool eq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

void kiln_platform_normalize(kiln_platform *p)
{
    lower(p->os);
    lower(p->arch);
    lower(p->variant);
    char *a = p->arch, *v = p->variant;
    if (eq(p->os, "macos"))
        set(p->os, "darwin");
    if (eq(a, "i386") || eq(a, "i686")) {
        set(a, "386");
        v[0] = '\0';
    } else if (eq(a, "x86_64") || eq(a, "x86-64") || eq(a, "amd64")) {
        set(a, "amd64");
        if (eq(v, "v1"))
            v[0] = '\0';
    } else if (eq(a, "aarch64") || eq(a, "arm64")) {
        set(a, "arm64");
        if (eq(v, "8") || eq(v, "v8") || eq(v, "v8.0"))
            v[0] = '\0';
        else if (eq(v, "9") || eq(v, "9.0") || eq(v, "v9.0"))
            set(v, "v9");
    } else if (eq(a, "armhf")) {
        set(a, "arm");
        set(v, "v7");
    } else if (eq(a, "armel")) {
        set(a, "arm");
        set(v, "v6");
    } else if (eq(a, "arm")) {
        if (eq(v, "") || eq(v, "7"))
            set(v, "v7");
        else if (eq(v, "5") || eq(v, "6") || eq(v, "8"))
            snprintf(v, KILN_PLATFORM_PART_MAX + 1, "v%c", v[0]);
    }
}

/* Copies a part of at most KILN_PLATFORM_PART_MAX characters of [a-zA-Z0-9._-]. */
static bool part(char *dst, const char *src, size_t n, bool may_be_empty)
{
    if ((n == 0 && !may_be_empty) || n > KILN_PLATFORM_PART_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
    return true;
}

int kiln_platform_set(kiln_platform *out, const char *os, const char *arch, const char *variant,
                      kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    os = os ? os : "";
    arch = arch ? arch : "";
    variant = variant ? variant : "";
    if (!part(out->os, os, strlen(os), false) || !part(out->arch, arch, strlen(arch), false) ||
        !part(out->variant, variant, strlen(variant), true)) {
        memset(out, 0, sizeof(*out));
        return kiln_error_set(err, KILN_EINVAL, 0, "platform \"%.32s/%.32s%s%.32s\" is not valid",
                              os, arch, *variant ? "/" : "", variant);
    }
    kiln_platform_normalize(out);
    return 0;
}

int kiln_platform_parse(kiln_platform *out, const char *s, const char *default_arch,
                        kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    s = s ? s : "";
    const char *s1 = strchr(s, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    bool ok = (s1 != NULL || default_arch != NULL) && (s2 == NULL || strchr(s2 + 1, '/') == NULL);
    if (ok) {
        size_t ol = s1 ? (size_t)(s1 - s) : strlen(s);
        const char *a = s1 ? s1 + 1 : default_arch;
        size_t al = s1 ? (s2 ? (size_t)(s2 - a) : strlen(a)) : strlen(a);
        ok = part(out->os, s, ol, false) && part(out->arch, a, al, false) &&
             (s2 == NULL || part(out->variant, s2 + 1, strlen(s2 + 1), true));
    }
    if (!ok) {
        memset(out, 0, sizeof(*out));
        return kiln_error_set(err, KILN_EINVAL, 0, "platform \"%.100s\" is not os/arch[/variant]",
                              s);
    }
    kiln_platform_normalize(out);
    return 0;
}

size_t kiln_platform_format(const kiln_platform *p, char *buf, size_t n)
{
    int len = snprintf(buf, n, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "", p->variant);
    return len < 0 ? 0 : (size_t)len;
}

#if defined(__x86_64__)
#define HOST_ARCH "amd64"
#elif defined(__aarch64__)
#define HOST_ARCH "arm64"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v7"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH == 5
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v5"
#elif defined(__arm__)
#define HOST_ARCH    "arm"
#define HOST_VARIANT "v6"
#elif defined(__i386__)
#define HOST_ARCH "386"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_ARCH "ppc64le"
#elif defined(__s390x__)
#define HOST_ARCH "s390x"
#elif defined(__riscv) && __riscv_xlen == 64
#define HOST_ARCH "riscv64"
#elif defined(__loongarch64)
#define HOST_ARCH "loong64"
#else
#define HOST_ARCH "unknown"
#endif
#ifndef HOST_VARIANT
#define HOST_VARIANT ""
#endif

const kiln_platform *kiln_platform_host(void)
{
    static const kiln_platform host = {"linux", HOST_ARCH, HOST_VARIANT};
    return &host;
}

const char *kiln_platform_host_string(void)
{
    return HOST_VARIANT[0] ? "linux/" HOST_ARCH "/" HOST_VARIANT : "linux/" HOST_ARCH;
}

/* The entry normalised; false when it is not a platform at all. */
static bool entry(kiln_platform *e, const char *os, const char *arch, const char *variant)
{
    return kiln_platform_set(e, os, arch, variant, NULL) == 0;
}

bool kiln_platform_match(const kiln_platform *want, const char *os, const char *arch,
                         const char *variant)
{
    kiln_platform e;
    if (!entry(&e, os, arch, variant) || !eq(e.os, want->os) || !eq(e.arch, want->arch))
        return false;
    return want->variant[0] == '\0' || eq(e.variant, want->variant);
}

bool kiln_platform_exact(const kiln_platform *want, const char *os, const char *arch,
                         const char *variant)
{
    kiln_platform e;
    return entry(&e, os, arch, variant) && eq(e.os, want->os) && eq(e.arch, want->arch) &&
           eq(e.variant, want->variant);
}
