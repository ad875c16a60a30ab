/* RUN sandbox options as written on the command line (see runopts.h). */
#include "runopts.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cleanup.h"

/* Docker's names (github.com/docker/go-units ulimit table), in its order. */
static const struct {
    const char *name;
    int resource;
} ulimit_names[] = {
    {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},         {"fsize", RLIMIT_FSIZE},
    {"locks", RLIMIT_LOCKS},       {"memlock", RLIMIT_MEMLOCK},
    {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE},     {"nproc", RLIMIT_NPROC},
    {"rss", RLIMIT_RSS},           {"rtprio", RLIMIT_RTPRIO},
    {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
};

static bool ulimit_value(const char *s, uint64_t *out)
{
    if (strcmp(s, "-1") == 0 || strcmp(s, "unlimited") == 0) {
        *out = KILN_ULIMIT_INFINITY;
        return true;
    }
    if (!isdigit((unsigned char)*s))
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v >= KILN_ULIMIT_INFINITY)
        return false;
    *out = v;
    return true;
}

int kiln_ulimit_parse(kiln_ulimit *out, const char *s, kiln_error **err)
{
    const char *eq = strchr(s, '=');
    size_t n = eq ? (size_t)(eq - s) : 0;
    out->name = NULL;
    for (size_t i = 0; eq && i < sizeof(ulimit_names) / sizeof(ulimit_names[0]); i++)
        if (strlen(ulimit_names[i].name) == n && strncmp(ulimit_names[i].name, s, n) == 0) {
            out->name = ulimit_names[i].name;
            out->resource = ulimit_names[i].resource;
        }
    if (eq == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "ulimit '%s': want NAME=SOFT[:HARD]", s);
    if (out->name == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "ulimit '%.*s': unknown; one of core, cpu, data, fsize, locks, "
                              "memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, "
                              "sigpending, stack",
                              (int)n, s);
    _cleanup_free_ char *v = strdup(eq + 1);
    if (v == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "strdup");
    char *colon = strchr(v, ':');
    if (colon)
        *colon = '\0';
    if (!ulimit_value(v, &out->soft) || (colon && !ulimit_value(colon + 1, &out->hard)))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "ulimit '%s': SOFT and HARD are numbers, -1 or unlimited", s);
    if (colon == NULL)
        out->hard = out->soft;
    if (out->soft > out->hard)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "ulimit '%s': the soft limit is above the hard limit", s);
    return 0;
}

void kiln_ulimit_format(char *out, size_t cap, uint64_t v)
{
    if (v == KILN_ULIMIT_INFINITY)
        snprintf(out, cap, "unlimited");
    else
        snprintf(out, cap, "%llu", (unsigned long long)v);
}

bool kiln_ssh_id_ok(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n <= KILN_SSH_ID_MAX &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* RFC 1123 host name labels; '_' is accepted as hosts files see it. */
static bool host_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > KILN_HOSTNAME_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)c) && c != '-' && c != '_')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[n - 1] != '-';
}

/* The address in canonical text (inet_ntop), v6 brackets removed. */
static bool host_addr(const char *s, char *out)
{
    char buf[KILN_ADDR_STRLEN + 2];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    unsigned char raw[16];
    if (inet_pton(AF_INET, buf, raw) == 1)
        return inet_ntop(AF_INET, raw, out, KILN_ADDR_STRLEN) != NULL;
    if (inet_pton(AF_INET6, buf, raw) == 1)
        return inet_ntop(AF_INET6, raw, out, KILN_ADDR_STRLEN) != NULL;
    return false;
}

int kiln_host_entry_parse(kiln_host_entry *out, const char *s, kiln_error **err)
{
    /* Docker splits at the first ':' (a v6 address keeps its own colons);
     * "NAME=IP" is its newer spelling. */
    const char *sep = strchr(s, '=');
    if (sep == NULL)
        sep = strchr(s, ':');
    if (sep == NULL)
        return kiln_error_set(err, KILN_EINVAL, 0, "add-host '%s': want NAME:IP", s);
    size_t n = (size_t)(sep - s);
    if (!host_name_ok(s, n))
        return kiln_error_set(err, KILN_EINVAL, 0, "add-host '%s': '%.*s' is not a host name", s,
                              (int)(n > KILN_HOSTNAME_MAX ? 32 : n), s);
    if (strcmp(sep + 1, "host-gateway") == 0)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "add-host '%s': host-gateway is not supported (a RUN never reaches "
                              "the builder's host)",
                              s);
    if (!host_addr(sep + 1, out->addr))
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "add-host '%s': '%s' is not an IPv4 or IPv6 "
                              "address",
                              s, sep + 1);
    memcpy(out->name, s, n);
    out->name[n] = '\0';
    return 0;
}
