/* USER resolution against the image's own /etc/passwd and /etc/group (read
 * inside the sandbox after pivot_root, never through NSS: the host's name
 * service has no say over image users). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "sbx_internal.h"

static bool parse_id(const char *s, unsigned long *out)
{
    if (*s == '\0')
        return false;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > 0xfffffffeUL)
        return false;
    *out = v;
    return true;
}

/* Splits a colon-separated line in place into at most n fields. */
static size_t split(char *line, char **f, size_t n)
{
    size_t k = 0;
    line[strcspn(line, "\n")] = '\0';
    while (k < n) {
        f[k++] = line;
        char *c = strchr(line, ':');
        if (c == NULL)
            break;
        *c = '\0';
        line = c + 1;
    }
    return k;
}

static bool member(char *list, const char *name)
{
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, name) == 0)
            return true;
    return false;
}

int sbx_user_resolve(sbx_user *out, const char *spec, const char *passwd_path,
                     const char *group_path, kiln_error **err)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->home, sizeof(out->home), "/");
    char user[256] = "", group[256] = "";
    const char *colon = spec ? strchr(spec, ':') : NULL;
    if (spec == NULL || *spec == '\0')
        snprintf(user, sizeof(user), "0"); /* no USER: uid 0, even without a passwd file */
    else if (colon) {
        snprintf(user, sizeof(user), "%.*s", (int)(colon - spec), spec);
        snprintf(group, sizeof(group), "%s", colon + 1);
    } else
        snprintf(user, sizeof(user), "%s", spec);

    unsigned long uid = 0, gid = 0, v;
    bool uid_numeric = parse_id(user, &uid), found = false;
    char name[256] = "";
    char line[4096];
    char *f[7];
    _cleanup_fclose_ FILE *pw = fopen(passwd_path, "re");
    while (pw && fgets(line, sizeof(line), pw)) {
        if (split(line, f, 7) < 7 || !parse_id(f[2], &v))
            continue;
        if ((uid_numeric && v == uid) || (!uid_numeric && strcmp(f[0], user) == 0)) {
            uid = v;
            if (!parse_id(f[3], &gid))
                gid = 0;
            snprintf(name, sizeof(name), "%.*s", (int)sizeof(name) - 1, f[0]);
            snprintf(out->home, sizeof(out->home), "%s", *f[5] ? f[5] : "/");
            found = true;
            break;
        }
    }
    if (!found && !uid_numeric)
        return kiln_error_set(err, KILN_EINVAL, 0,
                              "unable to find user %s: no matching entries "
                              "in passwd file",
                              user);
    bool explicit_group = *group != '\0';
    if (explicit_group && !parse_id(group, &gid)) {
        bool gfound = false;
        _cleanup_fclose_ FILE *gr = fopen(group_path, "re");
        while (gr && fgets(line, sizeof(line), gr)) {
            if (split(line, f, 4) >= 3 && strcmp(f[0], group) == 0 && parse_id(f[2], &v)) {
                gid = v;
                gfound = true;
                break;
            }
        }
        if (!gfound)
            return kiln_error_set(err, KILN_EINVAL, 0,
                                  "unable to find group %s: no matching "
                                  "entries in group file",
                                  group);
    }
    out->uid = (uid_t)uid;
    out->gid = (gid_t)gid;
    out->groups[out->ngroups++] = (gid_t)gid;
    /* Supplementary groups come from membership, only when no group was
     * named explicitly (as Docker does). */
    if (!explicit_group && *name) {
        _cleanup_fclose_ FILE *gr = fopen(group_path, "re");
        while (gr && fgets(line, sizeof(line), gr) && out->ngroups < SBX_MAX_GROUPS) {
            if (split(line, f, 4) < 4 || !parse_id(f[2], &v) || v == gid)
                continue;
            if (member(f[3], name))
                out->groups[out->ngroups++] = (gid_t)v;
        }
    }
    return 0;
}
