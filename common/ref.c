/* Docker-compatible image reference parsing and formatting (see ref.h). */
#include "ref.h"

#include <stdio.h>
#include <string.h>

#define INPUT_MAX 1024 /* longer input cannot be a valid reference */

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_word(char c)
{
    return is_alnum(c) || c == '_';
}

static bool is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool kiln_ref_tag_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KILN_REF_TAG_MAX || !is_word(s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!is_word(s[i]) && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

/* One path component of [p, p+n): alnum runs joined by ".", "_", "__" or "-"+. */
static bool component_valid(const char *p, size_t n)
{
    size_t i = 0;
    if (n == 0 || !is_lower_alnum(p[0]) || !is_lower_alnum(p[n - 1]))
        return false;
    while (i < n) {
        while (i < n && is_lower_alnum(p[i]))
            i++;
        if (i == n)
            break;
        size_t sep = i;
        if (p[i] == '.') {
            i++;
        } else if (p[i] == '_') {
            i++;
            if (i < n && p[i] == '_')
                i++;
        } else if (p[i] == '-') {
            while (i < n && p[i] == '-')
                i++;
        } else {
            return false;
        }
        if (i == sep || i == n || !is_lower_alnum(p[i]))
            return false;
    }
    return true;
}

/* A host label: alnum, or alnum [alnum-]* alnum. */
static bool host_label_valid(const char *p, size_t n)
{
    if (n == 0 || !is_alnum(p[0]) || !is_alnum(p[n - 1]))
        return false;
    for (size_t i = 1; i + 1 < n; i++)
        if (!is_alnum(p[i]) && p[i] != '-')
            return false;
    return true;
}

static bool domain_valid(const char *d)
{
    const char *port = NULL;
    size_t hostlen;
    if (d[0] == '[') { /* IPv6 literal: "[::1]" or "[::1]:5000" */
        const char *close = strchr(d, ']');
        if (close == NULL || close == d + 1)
            return false;
        for (const char *p = d + 1; p < close; p++)
            if (!(is_hex_lower(*p) || (*p >= 'A' && *p <= 'F') || *p == ':'))
                return false;
        if (close[1] == '\0')
            return true;
        if (close[1] != ':')
            return false;
        port = close + 2;
    } else {
        const char *colon = strchr(d, ':');
        hostlen = colon ? (size_t)(colon - d) : strlen(d);
        port = colon ? colon + 1 : NULL;
        const char *p = d, *end = d + hostlen;
        while (p <= end) {
            const char *dot = memchr(p, '.', (size_t)(end - p));
            const char *lend = dot ? dot : end;
            if (!host_label_valid(p, (size_t)(lend - p)))
                return false;
            if (dot == NULL)
                break;
            p = dot + 1;
        }
    }
    if (port == NULL)
        return true;
    if (*port == '\0' || strlen(port) > 5)
        return false;
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static bool has_upper(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            return true;
    return false;
}

static int parse_path(kiln_ref *out, const char *remainder, kiln_error **err)
{
    size_t n = strlen(remainder);
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "repository name is empty");
    if (has_upper(remainder, n))
        return kiln_error_set(err, KILN_EINVAL, 0, "repository name must be lowercase: \"%s\"",
                              remainder);
    const char *p = remainder;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (!component_valid(p, len))
            return kiln_error_set(err, KILN_EINVAL, 0, "invalid repository path component \"%.*s\"",
                                  (int)len, p);
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    bool hub = strcmp(out->domain, KILN_REF_DOCKER_HUB) == 0;
    const char *prefix = (hub && strchr(remainder, '/') == NULL) ? "library/" : "";
    size_t total = strlen(out->domain) + 1 + strlen(prefix) + n;
    if (total > KILN_REF_NAME_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "repository name must not be more than %d characters",
                              KILN_REF_NAME_MAX);
    snprintf(out->path, sizeof(out->path), "%s%s", prefix, remainder);
    return 0;
}

static int parse_name(kiln_ref *out, const char *name, kiln_error **err)
{
    const char *slash = strchr(name, '/');
    size_t first = slash ? (size_t)(slash - name) : 0;
    bool is_domain = slash != NULL &&
                     (memchr(name, '.', first) != NULL || memchr(name, ':', first) != NULL ||
                      (first == 9 && memcmp(name, "localhost", 9) == 0) || has_upper(name, first));
    if (!is_domain) {
        snprintf(out->domain, sizeof(out->domain), "%s", KILN_REF_DOCKER_HUB);
        return parse_path(out, name, err);
    }
    if (first > KILN_REF_NAME_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "registry name too long");
    memcpy(out->domain, name, first);
    out->domain[first] = '\0';
    if (!domain_valid(out->domain))
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid registry name \"%s\"", out->domain);
    if (strcmp(out->domain, "index.docker.io") == 0)
        snprintf(out->domain, sizeof(out->domain), "%s", KILN_REF_DOCKER_HUB);
    return parse_path(out, slash + 1, err);
}

static bool is_image_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!is_hex_lower(s[n]))
            return false;
    return n == 64;
}

static int parse(kiln_ref *out, const char *s, unsigned flags, kiln_error **err)
{
    char name[INPUT_MAX + 1];
    size_t n = strlen(s);
    if (n == 0)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty image reference");
    if (n > INPUT_MAX)
        return kiln_error_set(err, KILN_EINVAL, 0, "image reference too long (%zu bytes)", n);
    memcpy(name, s, n + 1);

    if (is_image_id(s))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "invalid reference \"%s\": a 64-character hex string is an "
                              "image id, not a repository name (use sha256:<hex>)",
                              s);

    char *at = strchr(name, '@');
    if (at != NULL) {
        *at = '\0';
        const char *dg = at + 1;
        if (flags & KILN_REF_NO_DIGEST)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference \"%s\": a digest cannot be used here", s);
        if (strchr(dg, ':') != NULL && strncmp(dg, "sha256:", 7) != 0)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference \"%s\": unsupported digest algorithm", s);
        if (!kiln_digest_valid(dg))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid reference \"%s\": digest must be sha256:<64 "
                                  "lower-case hex>",
                                  s);
        memcpy(out->digest, dg, KILN_DIGEST_STRLEN + 1);
    }

    char *lastslash = strrchr(name, '/');
    char *colon = strrchr(lastslash ? lastslash : name, ':');
    if (colon != NULL) {
        *colon = '\0';
        if (!kiln_ref_tag_valid(colon + 1))
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "invalid tag \"%s\" in \"%s\": a tag is 1-128 characters of "
                                  "[A-Za-z0-9_.-] not starting with '.' or '-'",
                                  colon + 1, s);
        snprintf(out->tag, sizeof(out->tag), "%s", colon + 1);
    }
    if (name[0] == '\0')
        return kiln_error_set(err, KILN_EINVAL, 0, "invalid reference \"%s\": no repository name",
                              s);
    int r = parse_name(out, name, err);
    if (r < 0) {
        kiln_error_wrap(err, "invalid reference \"%s\"", s);
        return r;
    }
    if ((flags & KILN_REF_DEFAULT_TAG) && out->tag[0] == '\0' && out->digest[0] == '\0')
        snprintf(out->tag, sizeof(out->tag), "latest");
    return 0;
}

int kiln_ref_parse(kiln_ref *out, const char *s, unsigned flags, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "empty image reference");
    int r = parse(out, s, flags, err);
    if (r < 0)
        memset(out, 0, sizeof(*out));
    return r;
}

/* name, then ":tag" and "@digest" when present. */
static size_t format(const kiln_ref *r, const char *name, char *buf, size_t n)
{
    int len = snprintf(buf, n, "%s%s%s%s%s", name, r->tag[0] ? ":" : "", r->tag,
                       r->digest[0] ? "@" : "", r->digest);
    return len < 0 ? 0 : (size_t)len;
}

size_t kiln_ref_familiar(const kiln_ref *r, char *buf, size_t n)
{
    if (strcmp(r->domain, KILN_REF_DOCKER_HUB) != 0)
        return kiln_ref_canonical(r, buf, n);
    const char *path = r->path;
    if (strncmp(path, "library/", 8) == 0 && strchr(path + 8, '/') == NULL &&
        !is_image_id(path + 8)) /* a bare 64-hex name would read as an image id */
        path += 8;
    /* "docker.io/foo.bar/x" must keep its domain: "foo.bar/x" would name the
     * registry foo.bar when parsed again. */
    const char *slash = strchr(path, '/');
    size_t first = slash ? (size_t)(slash - path) : 0;
    if (slash != NULL &&
        (memchr(path, '.', first) != NULL || (first == 9 && memcmp(path, "localhost", 9) == 0)))
        return kiln_ref_canonical(r, buf, n);
    return format(r, path, buf, n);
}

size_t kiln_ref_canonical(const kiln_ref *r, char *buf, size_t n)
{
    char name[2 * KILN_REF_NAME_MAX + 2]; /* a parsed name is at most 255 */
    snprintf(name, sizeof(name), "%s/%s", r->domain, r->path);
    return format(r, name, buf, n);
}

size_t kiln_ref_repository(const kiln_ref *r, char *buf, size_t n)
{
    int len = snprintf(buf, n, "%s/%s", r->domain, r->path);
    return len < 0 ? 0 : (size_t)len;
}

const char *kiln_ref_registry_host(const kiln_ref *r)
{
    if (strcmp(r->domain, KILN_REF_DOCKER_HUB) == 0)
        return "registry-1.docker.io";
    return r->domain;
}

bool kiln_ref_equal(const kiln_ref *a, const kiln_ref *b)
{
    return strcmp(a->domain, b->domain) == 0 && strcmp(a->path, b->path) == 0 &&
           strcmp(a->tag, b->tag) == 0 && strcmp(a->digest, b->digest) == 0;
}
