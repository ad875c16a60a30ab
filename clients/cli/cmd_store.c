/* Image store verbs, served by kiln-pusher: images, tag, inspect, rmi, import,
 * export, prune. */
#include "cli.h"
#include "cleanup.h"
#include "config.h"
#include "follow.h"
#include "units.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- argument helpers ---- */

/* Parses the options of table: for entry i, dest[i] is a bool * (set when
 * the option is given) or, for an option with an argument, a const char **
 * (its value).  An entry's val is its short letter, or 1 for none; the last
 * entry before the end is --help.  Returns -1 on a usage error, 1 after
 * printing help, 0 to go on; positional arguments stay in argv[optind..]. */
static int parse_flags(int argc, char **argv, const struct option *table, void *const *dest,
                       const char *usage)
{
    char shorts[32] = "h";
    size_t ns = 1;
    for (size_t i = 0; table[i].name && ns + 2 < sizeof(shorts); i++)
        if (table[i].val > 1 && table[i].val != 'h') {
            shorts[ns++] = (char)table[i].val;
            if (table[i].has_arg)
                shorts[ns++] = ':';
        }
    shorts[ns] = '\0';
    cli_getopt_reset();
    int c, li = -1;
    while ((c = getopt_long(argc, argv, shorts, table, &li)) != -1) {
        if (c == 'h') {
            printf("%s", usage);
            return 1;
        }
        int i = -1;
        if (c == 1)
            i = li;
        for (int k = 0; i < 0 && c > 1 && table[k].name; k++)
            if (table[k].val == c)
                i = k;
        if (c == '?' || c == ':' || i < 0) {
            cli_errorf("%s: %s option '%s'", argv[0],
                       c == ':' ? "a value is needed for" : "unknown", argv[optind - 1]);
            return -1;
        }
        if (table[i].has_arg)
            *(const char **)dest[i] = optarg;
        else
            *(bool *)dest[i] = true;
        li = -1;
    }
    return 0;
}

#define HELP_OPT                                                                                   \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }
#define OPTS_END                                                                                   \
    {                                                                                              \
        NULL, 0, NULL, 0                                                                           \
    }
/* The options of the store verbs: their parsers' tables, also read by
 * completion and the man pages. */
const struct option cli_images_opts[] = {{"json", no_argument, NULL, 1},
                                         {"digests", no_argument, NULL, 1},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"format", required_argument, NULL, 1},
                                         HELP_OPT,
                                         OPTS_END};
const struct option cli_history_opts[] = {
    {"json", no_argument, NULL, 1}, {"no-trunc", no_argument, NULL, 1}, HELP_OPT, OPTS_END};
const struct option cli_prune_opts[] = {{"dry-run", no_argument, NULL, 1},
                                        {"store-only", no_argument, NULL, 1},
                                        {"older-than", required_argument, NULL, 1},
                                        {"force", no_argument, NULL, 'f'},
                                        HELP_OPT,
                                        OPTS_END};
const struct option cli_import_opts[] = {{"platform", required_argument, NULL, 1},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"json", no_argument, NULL, 1},
                                         {"transfer", required_argument, NULL, 1},
                                         HELP_OPT,
                                         OPTS_END};
const struct option cli_export_opts[] = {
    {"transfer", required_argument, NULL, 1}, HELP_OPT, OPTS_END};
const struct option cli_help_only_opts[] = {HELP_OPT, OPTS_END};

static int want_args(int argc, char **argv, int min, int max)
{
    int n = argc - optind;
    if (n < min || n > max) {
        if (max == 0)
            cli_errorf("%s: takes no arguments, got '%s'; see 'kiln %s --help'", argv[0],
                       argv[optind], argv[0]);
        else if (min == max)
            cli_errorf("%s: expected %d argument(s), got %d; see 'kiln %s --help'", argv[0], min, n,
                       argv[0]);
        else
            cli_errorf("%s: expected %d to %d arguments, got %d; see 'kiln %s --help'", argv[0],
                       min, max, n, argv[0]);
        return -1;
    }
    return 0;
}

/* ---- verbs ---- */

static void human_age(int64_t created, char *out, size_t cap)
{
    if (created < 0) {
        snprintf(out, cap, "unknown");
        return;
    }
    long long d = (long long)time(NULL) - created;
    if (d < 0)
        d = 0;
    if (d < 120)
        snprintf(out, cap, "%lld seconds ago", d);
    else if (d < 7200)
        snprintf(out, cap, "%lld minutes ago", d / 60);
    else if (d < 172800)
        snprintf(out, cap, "%lld hours ago", d / 3600);
    else
        snprintf(out, cap, "%lld days ago", d / 86400);
}

/* Repository and tag of a stored reference ("<none>" for what is missing). */
static void split_ref(const char *ref, char *repo, size_t rn, char *tag, size_t tn)
{
    const char *at = strchr(ref, '@'), *slash = strrchr(ref, '/');
    const char *colon = strrchr(ref, ':');
    if (colon && slash && colon < slash)
        colon = NULL;
    if (*ref == '\0') {
        snprintf(repo, rn, "<none>");
        snprintf(tag, tn, "<none>");
    } else if (colon && (!at || colon < at)) {
        snprintf(repo, rn, "%.*s", (int)(colon - ref), ref);
        snprintf(tag, tn, "%.*s", at ? (int)(at - colon - 1) : (int)strlen(colon + 1), colon + 1);
    } else {
        snprintf(repo, rn, "%.*s", at ? (int)(at - ref) : (int)strlen(ref), ref);
        snprintf(tag, tn, "<none>");
    }
}

static const char *const image_fields[] = {"Repository", "Tag",       "ID",
                                           "Digest",     "CreatedAt", "CreatedSince",
                                           "Size",       "Platform",  "Reference"};

/* Checks a --format template: text with {{.Field}} (and \t, \n). */
static int check_template(const char *t)
{
    for (const char *p = strstr(t, "{{"); p; p = strstr(p + 2, "{{")) {
        const char *e = strstr(p, "}}");
        const char *f = p + 2;
        while (*f == ' ')
            f++;
        bool known = false;
        for (size_t i = 0; e && *f == '.' && i < KILN_ARRAY_SIZE(image_fields); i++) {
            size_t n = strlen(image_fields[i]);
            const char *after = f + 1 + n;
            while (*after == ' ')
                after++;
            known |= strncmp(f + 1, image_fields[i], n) == 0 && after == e;
        }
        if (!known) {
            cli_errorf("images: --format: unknown field in '%s' (fields: .Repository .Tag .ID "
                       ".Digest .CreatedAt .CreatedSince .Size .Platform .Reference)",
                       t);
            return -1;
        }
    }
    return 0;
}

static void print_template(const char *t, const Kiln__V1__ImageInfo *im, bool full_id)
{
    char repo[300], tag[200], size[32], age[32], plat[80], created[40] = "";
    split_ref(im->ref, repo, sizeof(repo), tag, sizeof(tag));
    kiln_format_bytes(size, sizeof(size), im->size);
    human_age(im->created, age, sizeof(age));
    snprintf(plat, sizeof(plat), "%s%s%s%s%s", im->os, *im->architecture ? "/" : "",
             im->architecture, *im->variant ? "/" : "", im->variant);
    if (im->created >= 0) {
        time_t secs = (time_t)im->created;
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(created, sizeof(created), "%Y-%m-%d %H:%M:%S +0000 UTC", &tm);
    }
    char id[80];
    snprintf(id, sizeof(id), "%.*s", full_id ? 64 : 12,
             strncmp(im->digest, "sha256:", 7) == 0 ? im->digest + 7 : im->digest);
    for (const char *p = t; *p;) {
        if (p[0] == '\\' && (p[1] == 't' || p[1] == 'n')) {
            putchar(p[1] == 't' ? '\t' : '\n');
            p += 2;
            continue;
        }
        if (p[0] != '{' || p[1] != '{') {
            putchar(*p++);
            continue;
        }
        const char *f = p + 2, *e = strstr(p, "}}");
        while (*f == ' ')
            f++;
        f++; /* the '.' */
        const char *v = strncmp(f, "Repository", 10) == 0     ? repo
                        : strncmp(f, "Reference", 9) == 0     ? (*im->ref ? im->ref : "<none>")
                        : strncmp(f, "Tag", 3) == 0           ? tag
                        : strncmp(f, "ID", 2) == 0            ? id
                        : strncmp(f, "Digest", 6) == 0        ? im->digest
                        : strncmp(f, "CreatedAt", 9) == 0     ? created
                        : strncmp(f, "CreatedSince", 12) == 0 ? age
                        : strncmp(f, "Size", 4) == 0          ? size
                                                              : plat;
        fputs(v, stdout);
        p = e + 2;
    }
    putchar('\n');
}

int cli_cmd_images(cli_ctx *ctx, int argc, char **argv)
{
    bool json = false, digests = false, quiet = false;
    const char *format = NULL;
    int p = parse_flags(argc, argv, cli_images_opts, (void *[]){&json, &digests, &quiet, &format},
                        "Usage: kiln images [--json] [--digests] [-q] [--format FORMAT]\n\n"
                        "Lists the images in the store: reference, image id (manifest\n"
                        "digest), age, size and platform; images no tag reaches (left by a\n"
                        "re-tag or a rebuild, until prune) show as <none>.  -q prints only\n"
                        "the image ids.\n"
                        "--format json is --json, table the default table, anything else a\n"
                        "template over .Repository .Tag .ID .Digest .CreatedAt .CreatedSince\n"
                        ".Size .Platform .Reference, e.g. '{{.Repository}}:{{.Tag}}' (\\t and\n"
                        "\\n work; .ID is 12 digits, all 64 with --digests).  Image ids, or 4\n"
                        "or more of their first digits, name "
                        "images wherever a reference does.\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 0, 0) < 0)
        return CLI_EXIT_USAGE;
    if (format && strcmp(format, "json") == 0)
        json = true, format = NULL;
    else if (format && strcmp(format, "table") == 0)
        format = NULL;
    else if (format && check_template(format) < 0)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ListImagesRequest lr = KILN__V1__LIST_IMAGES_REQUEST__INIT;
    lr.untagged = true; /* as docker: what a re-tag or rebuild left shows as <none> */
    req.body_case = KILN__V1__REQUEST__BODY_LIST_IMAGES;
    req.list_images = &lr;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    if (rc)
        return rc;
    const Kiln__V1__ListImagesReply *l = rep->list_images_reply;
    if (quiet) {
        /* each image once, in list order */
        for (size_t i = 0; i < l->n_images; i++) {
            bool seen = false;
            for (size_t k = 0; k < i && !seen; k++)
                seen = strcmp(l->images[k]->digest, l->images[i]->digest) == 0;
            const char *id = l->images[i]->digest;
            if (!seen)
                printf("%.*s\n", digests ? 71 : 12, strncmp(id, "sha256:", 7) ? id : id + 7);
        }
    } else if (json) {
        cJSON *j = cli_pb_to_json(&l->base);
        char *s = cJSON_Print(j);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(j);
    } else if (format) {
        for (size_t i = 0; i < l->n_images; i++)
            print_template(format, l->images[i], digests);
    } else {
        printf("%-40s %-*s %-16s %-10s %s\n", "REFERENCE", digests ? 71 : 12, "IMAGE ID", "CREATED",
               "SIZE", "PLATFORM");
        for (size_t i = 0; i < l->n_images; i++) {
            const Kiln__V1__ImageInfo *im = l->images[i];
            char size[32], age[32], plat[80];
            kiln_format_bytes(size, sizeof(size), im->size);
            human_age(im->created, age, sizeof(age));
            snprintf(plat, sizeof(plat), "%s%s%s%s%s", im->os, *im->architecture ? "/" : "",
                     im->architecture, *im->variant ? "/" : "", im->variant);
            const char *id = strncmp(im->digest, "sha256:", 7) == 0 ? im->digest + 7 : im->digest;
            printf("%-40s %-*.*s %-16s %-10s %s\n", *im->ref ? im->ref : "<none>",
                   digests ? 71 : 12, digests ? 71 : 12, digests ? im->digest : id, age, size,
                   plat);
        }
    }
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}

int cli_cmd_tag(cli_ctx *ctx, int argc, char **argv)
{
    int p = parse_flags(argc, argv, cli_help_only_opts, NULL,
                        "Usage: kiln tag SOURCE TARGET\n\n"
                        "Gives the image SOURCE (reference or digest) the tag\n"
                        "TARGET.  Only metadata changes.\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 2, 2) < 0 ||
        cli_check_ref("tag", "target", argv[optind + 1], true) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__TagRequest tr = KILN__V1__TAG_REQUEST__INIT;
    char idbuf[KILN_DIGEST_STRLEN + 1];
    if ((tr.source = (char *)cli_image_ref(ctx, "tag", argv[optind], idbuf, sizeof(idbuf))) == NULL)
        return CLI_EXIT_USAGE;
    tr.target = argv[optind + 1];
    req.body_case = KILN__V1__REQUEST__BODY_TAG;
    req.tag = &tr;
    kiln_reply *rep = NULL;
    int rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
    kiln_rpc_reply_free(rep);
    return rc;
}

/* The pusher's Inspect of ref; a CLI exit code. */
static int inspect(cli_ctx *ctx, const char *ref, kiln_reply **rep)
{
    char idbuf[KILN_DIGEST_STRLEN + 1];
    if ((ref = cli_image_ref(ctx, "inspect", ref, idbuf, sizeof(idbuf))) == NULL)
        return CLI_EXIT_USAGE;
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__InspectRequest ir = KILN__V1__INSPECT_REQUEST__INIT;
    ir.ref = (char *)ref;
    req.body_case = KILN__V1__REQUEST__BODY_INSPECT;
    req.inspect = &ir;
    return cli_call(ctx, CLI_PUSHER, &req, rep, 0);
}

int cli_cmd_inspect(cli_ctx *ctx, int argc, char **argv)
{
    int p =
        parse_flags(argc, argv, cli_help_only_opts, NULL,
                    "Usage: kiln inspect REF\n\n"
                    "Prints {\"digest\", \"mediaType\", \"manifest\", \"config\"} for an image\n"
                    "in the store: its manifest (or index) and config as stored.\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 1, 1) < 0)
        return CLI_EXIT_USAGE;
    kiln_reply *rep = NULL;
    int rc = inspect(ctx, argv[optind], &rep);
    if (rc)
        return rc;
    const Kiln__V1__InspectReply *r = rep->inspect_reply;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "digest", r->digest);
    cJSON_AddStringToObject(o, "mediaType", r->media_type);
    cJSON *m = cJSON_Parse(r->manifest_json);
    cJSON_AddItemToObject(o, "manifest", m ? m : cJSON_CreateString(r->manifest_json));
    if (*r->config_json) {
        cJSON *c = cJSON_Parse(r->config_json);
        cJSON_AddItemToObject(o, "config", c ? c : cJSON_CreateString(r->config_json));
    }
    char *s = cJSON_Print(o);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(o);
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}

/* "2026-11-27T10:00:00Z" (fractions and offsets ignored) as unix seconds; -1 when unreadable. */
static int64_t rfc3339_seconds(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (s == NULL || strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
        return -1;
    return (int64_t)timegm(&tm);
}

/* One row of kiln history for the config's history entry h: when it added
 * a layer, the manifest's next one (*next_layer counts them) with its sizes
 * (r's uncompressed sizes, 0 when unknown). */
static cJSON *history_row(const cJSON *h, const cJSON *layers, int *next_layer,
                          const Kiln__V1__InspectReply *r)
{
    const cJSON *empty = cJSON_GetObjectItemCaseSensitive(h, "empty_layer");
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(h, "created_by");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(h, "created");
    const cJSON *comment = cJSON_GetObjectItemCaseSensitive(h, "comment");
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "created", cJSON_IsString(at) ? at->valuestring : "");
    cJSON_AddStringToObject(row, "created_by", cJSON_IsString(by) ? by->valuestring : "");
    if (cJSON_IsString(comment))
        cJSON_AddStringToObject(row, "comment", comment->valuestring);
    bool is_empty = cJSON_IsTrue(empty);
    cJSON_AddBoolToObject(row, "empty_layer", is_empty);
    int li = is_empty ? -1 : (*next_layer)++;
    const cJSON *l = li < 0 ? NULL : cJSON_GetArrayItem(layers, li);
    const cJSON *ld = cJSON_GetObjectItemCaseSensitive(l, "digest");
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(l, "size");
    if (cJSON_IsString(ld)) {
        double c = cJSON_IsNumber(ls) ? ls->valuedouble : 0;
        double u = (size_t)li < r->n_layer_sizes_uncompressed
                       ? (double)r->layer_sizes_uncompressed[li]
                       : 0;
        cJSON_AddStringToObject(row, "layer", ld->valuestring);
        cJSON_AddNumberToObject(row, "size", c); /* = size_compressed, as before */
        cJSON_AddNumberToObject(row, "size_compressed", c);
        cJSON_AddNumberToObject(row, "size_uncompressed", u);
    }
    return row;
}

/* The rows of kiln history, newest first (caller deletes). */
static cJSON *history_rows(const cJSON *hist, const cJSON *layers, const Kiln__V1__InspectReply *r)
{
    /* Entries that added a layer take the manifest's layers in order. */
    int n = cJSON_GetArraySize(hist), next_layer = 0;
    cJSON *rows = cJSON_CreateArray(), *fwd = cJSON_CreateArray();
    const cJSON *h;
    cJSON_ArrayForEach(h, hist)
    {
        cJSON_AddItemToArray(fwd, history_row(h, layers, &next_layer, r));
    }
    for (int i = n - 1; i >= 0; i--) /* newest first */
        cJSON_AddItemToArray(rows, cJSON_Duplicate(cJSON_GetArrayItem(fwd, i), 1));
    cJSON_Delete(fwd);
    return rows;
}

/* kiln history's table: one line per row, CREATED BY cut at 60 columns
 * unless no_trunc. */
static void history_print_table(const cJSON *rows, bool no_trunc)
{
    printf("%-14s %-16s %-30s %s\n", "LAYER", "CREATED", "SIZE", "CREATED BY");
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        const cJSON *ld = cJSON_GetObjectItemCaseSensitive(row, "layer");
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(row, "size_compressed");
        const cJSON *su = cJSON_GetObjectItemCaseSensitive(row, "size_uncompressed");
        const char *by = cJSON_GetObjectItemCaseSensitive(row, "created_by")->valuestring;
        char layer[16] = "-", size[KILN_LAYER_SIZE_STRLEN] = "0 B", age[48];
        if (cJSON_IsString(ld) && strlen(ld->valuestring) > 19) {
            snprintf(layer, sizeof(layer), "%.12s", ld->valuestring + 7);
            kiln_format_layer_size(size, sizeof(size), (uint64_t)sc->valuedouble,
                                   (uint64_t)su->valuedouble);
        }
        human_age(rfc3339_seconds(cJSON_GetObjectItemCaseSensitive(row, "created")->valuestring),
                  age, sizeof(age));
        size_t bl = strlen(by);
        printf("%-14s %-16s %-30s %.*s%s\n", layer, age, size,
               (int)(no_trunc || bl <= 60 ? bl : 57), by, no_trunc || bl <= 60 ? "" : "...");
    }
}

int cli_cmd_history(cli_ctx *ctx, int argc, char **argv)
{
    bool json = false, no_trunc = false;
    int p = parse_flags(argc, argv, cli_history_opts, (void *[]){&json, &no_trunc},
                        "Usage: kiln history [--json] [--no-trunc] REF\n\n"
                        "Shows how an image was made, newest step first: each history entry\n"
                        "of its config with the layer it added and that layer's size\n"
                        "('12.3 MB compressed / 40.1 MB'; '?' where the store does not know\n"
                        "the uncompressed size: a layer pulled from a registry), or '-' for\n"
                        "steps that changed only the config.  --json rows carry size_compressed\n"
                        "and size_uncompressed (0 = unknown).\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 1, 1) < 0)
        return CLI_EXIT_USAGE;
    kiln_reply *rep = NULL;
    int rc = inspect(ctx, argv[optind], &rep);
    if (rc)
        return rc;
    const Kiln__V1__InspectReply *r = rep->inspect_reply;
    cJSON *man = cJSON_Parse(r->manifest_json), *cfg = cJSON_Parse(r->config_json);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(man, "layers");
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(cfg, "history");
    rc = CLI_EXIT_OK;
    if (!cJSON_IsArray(layers) || !cJSON_IsArray(hist)) {
        cli_errorf("history: %s is not an image with a config history (an index? see 'kiln "
                   "manifest inspect')",
                   argv[optind]);
        rc = CLI_EXIT_FAILED;
    } else {
        cJSON *rows = history_rows(hist, layers, r);
        if (json) {
            char *s = cJSON_Print(rows);
            printf("%s\n", s);
            cJSON_free(s);
        } else {
            history_print_table(rows, no_trunc);
        }
        cJSON_Delete(rows);
    }
    cJSON_Delete(man);
    cJSON_Delete(cfg);
    kiln_rpc_reply_free(rep);
    return rc;
}

int cli_cmd_rmi(cli_ctx *ctx, int argc, char **argv)
{
    int p = parse_flags(argc, argv, cli_help_only_opts, NULL,
                        "Usage: kiln rmi REF...\n\n"
                        "Removes tags (or, given a digest, every tag of that image) from the\n"
                        "store.  Blobs are freed by 'kiln prune'.\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (argc - optind < 1) {
        cli_errorf("rmi: expected at least one reference");
        return CLI_EXIT_USAGE;
    }
    int rc = CLI_EXIT_OK;
    for (int i = optind; i < argc; i++) {
        kiln_req req = KILN__V1__REQUEST__INIT;
        Kiln__V1__RemoveRequest rr = KILN__V1__REMOVE_REQUEST__INIT;
        char idbuf[KILN_DIGEST_STRLEN + 1];
        if ((rr.ref = (char *)cli_image_ref(ctx, "rmi", argv[i], idbuf, sizeof(idbuf))) == NULL)
            return CLI_EXIT_USAGE;
        req.body_case = KILN__V1__REQUEST__BODY_REMOVE;
        req.remove = &rr;
        kiln_reply *rep = NULL;
        int r = cli_call(ctx, CLI_PUSHER, &req, &rep, 0);
        if (r == CLI_EXIT_OK)
            printf("Untagged: %s (%s)\n", argv[i], rep->remove_reply->digest);
        else if (rc == CLI_EXIT_OK)
            rc = r;
        kiln_rpc_reply_free(rep);
    }
    return rc;
}

int cli_cmd_prune(cli_ctx *ctx, int argc, char **argv)
{
    bool dry = false, store_only = false, force = false;
    const char *older = NULL;
    int p =
        parse_flags(argc, argv, cli_prune_opts, (void *[]){&dry, &store_only, &older, &force},
                    "Usage: kiln prune [-f] [--dry-run] [--store-only] [--older-than SECONDS]\n\n"
                    "Deletes the builder's cached steps and base snapshots unused for\n"
                    "SECONDS (default: all unused), then store blobs no tag reaches (never\n"
                    "one a running job uses) and stale temporary files.  --dry-run and\n"
                    "--store-only leave the builder's cache alone.  On a terminal it asks\n"
                    "first, unless -f (--force).\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 0, 0) < 0)
        return CLI_EXIT_USAGE;
    if (!dry && !force && isatty(0)) {
        fprintf(stderr,
                "This removes %s store blobs no tag reaches%s.\n"
                "Are you sure you want to continue? [y/N] ",
                store_only ? "" : "the unused build cache and", older ? " (older ones only)" : "");
        fflush(stderr);
        char answer[16] = "";
        if (fgets(answer, sizeof(answer), stdin) == NULL ||
            (answer[0] != 'y' && answer[0] != 'Y')) {
            fprintf(stderr, "Nothing removed.\n");
            return CLI_EXIT_FAILED;
        }
    }
    unsigned long long age = 0;
    if (older) {
        char *end = NULL;
        age = strtoull(older, &end, 10);
        if (*older == '\0' || *end) {
            cli_errorf("prune: --older-than wants seconds");
            return CLI_EXIT_USAGE;
        }
    }
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__PruneRequest pr = KILN__V1__PRUNE_REQUEST__INIT;
    pr.dry_run = dry;
    pr.older_than_s = age;
    req.body_case = KILN__V1__REQUEST__BODY_PRUNE;
    req.prune = &pr;
    kiln_reply *rep = NULL;
    int rc;
    if (!dry && !store_only) {
        /* The builder first: steps it drops may free store blobs below. */
        rc = cli_call(ctx, CLI_BUILDER, &req, &rep, 600000);
        if (rc)
            return rc;
        printf("Removed %llu cached build step(s)\n",
               (unsigned long long)rep->prune_reply->steps_removed);
        if (rep->prune_reply->contexts_removed)
            printf("Removed %llu streamed build context(s) and chunk(s)\n",
                   (unsigned long long)rep->prune_reply->contexts_removed);
        kiln_rpc_reply_free(rep);
        rep = NULL;
    }
    rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 600000);
    if (rc)
        return rc;
    char size[32];
    kiln_format_bytes(size, sizeof(size), rep->prune_reply->bytes_freed);
    printf("%s %llu blob(s), %s; %llu temporary file(s)\n", dry ? "Would remove" : "Removed",
           (unsigned long long)rep->prune_reply->blobs_removed, size,
           (unsigned long long)rep->prune_reply->temps_removed);
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}

static bool transfer_valid(const char *verb, const char *t)
{
    if (strcmp(t, "auto") == 0 || strcmp(t, "local") == 0 || strcmp(t, "stream") == 0)
        return true;
    cli_errorf("%s: --transfer wants auto, local or stream, got '%s'", verb, t);
    return false;
}

int cli_cmd_import(cli_ctx *ctx, int argc, char **argv)
{
    const char *platform = "", *transfer = "auto";
    bool quiet = false, json = false;
    int p = parse_flags(
        argc, argv, cli_import_opts, (void *[]){&platform, &quiet, &json, &transfer},
        "Usage: kiln import [--platform OS/ARCH[/VARIANT]] [--transfer auto|local|stream]\n"
        "                   [--quiet] [--json] SOURCE REF\n\n"
        "Imports SOURCE into the store as REF: an OCI image layout directory, an\n"
        "oci-archive (kiln export, skopeo) or docker-archive (docker save) tar, a\n"
        "root filesystem directory, or a tar (optionally gzip/zstd/xz/bzip2\n"
        "compressed) of one.  What SOURCE is gets detected; oci:DIR,\n"
        "oci-archive:FILE, docker-archive:FILE or rootfs:PATH say it.  This is how\n"
        "air-gapped hosts get base images.\n"
        "--transfer local names SOURCE to the pusher as a path (over ipc:// only);\n"
        "stream sends its bytes (a directory as a tar) in chunks; auto (default)\n"
        "streams unless the pusher is reached over ipc:// and sees this filesystem.\n"
        "Prints the image digest.\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 2, 2) < 0 ||
        cli_check_ref("import", "reference", argv[optind + 1], true) != CLI_EXIT_OK ||
        (*platform && cli_check_platform("import", platform) != CLI_EXIT_OK) ||
        !transfer_valid("import", transfer))
        return CLI_EXIT_USAGE;
    /* skopeo's transports name what SOURCE is; without one it is detected. */
    const char *src = argv[optind], *format = "";
    static const char *const kinds[] = {"oci-archive", "docker-archive", "oci", "rootfs"};
    for (size_t i = 0; i < KILN_ARRAY_SIZE(kinds); i++) {
        size_t n = strlen(kinds[i]);
        if (strncmp(src, kinds[i], n) == 0 && src[n] == ':') {
            format = kinds[i];
            src += n + 1;
            break;
        }
    }
    bool stream = false;
    int rc = cli_choose_transfer(ctx, CLI_PUSHER, transfer, &stream);
    if (rc)
        return rc;
    char abs[PATH_MAX];
    if (realpath(src, abs) == NULL) {
        cli_errorf("import: %s: %s", src, strerror(errno));
        return CLI_EXIT_FAILED;
    }
    Kiln__V1__ImportRequest ir = KILN__V1__IMPORT_REQUEST__INIT;
    ir.ref = argv[optind + 1];
    ir.platform = (char *)platform;
    ir.format = (char *)format;
    cli_context c = {.fd = -1};
    bool layout = false;
    if (stream) {
        cli_progress mode = json || quiet           ? CLI_PROGRESS_QUIET
                            : isatty(STDERR_FILENO) ? CLI_PROGRESS_TTY
                                                    : CLI_PROGRESS_PLAIN;
        rc = cli_import_send(ctx, abs, mode, &c, &layout);
        if (rc) {
            cli_context_dispose(&c);
            return rc;
        }
        ir.source_name = basename(abs);
    }
    char digest[80] = "";
    rc = cli_import_run(ctx, &ir, stream ? &c : NULL, layout, abs, json, quiet, digest,
                        sizeof(digest));
    if (rc == CLI_EXIT_OK && !json)
        printf("%s\n", digest);
    return rc;
}

int cli_cmd_export(cli_ctx *ctx, int argc, char **argv)
{
    const char *transfer = "auto";
    int p = parse_flags(argc, argv, cli_export_opts, (void *[]){&transfer},
                        "Usage: kiln export [--transfer auto|local|stream] REF "
                        "oci:DIR|oci-archive:FILE\n\n"
                        "Writes the image REF with all its blobs as an OCI image layout\n"
                        "directory (DIR must not exist or be empty) or as an oci-archive tar.\n"
                        "--transfer local has the pusher write the target itself (over ipc://\n"
                        "only); stream receives the archive and writes it here (a temp file or\n"
                        "dir renamed into place); auto (default) streams unless the pusher is\n"
                        "reached over ipc:// and sees this filesystem.\n");
    if (p)
        return p > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (want_args(argc, argv, 2, 2) < 0 || !transfer_valid("export", transfer))
        return CLI_EXIT_USAGE;
    const char *target = argv[optind + 1];
    const char *colon = strchr(target, ':');
    if (colon == NULL || colon[1] == '\0' ||
        (strncmp(target, "oci:", 4) != 0 && strncmp(target, "oci-archive:", 12) != 0)) {
        cli_errorf("export: target must be oci:DIR or oci-archive:FILE, got '%s'", target);
        return CLI_EXIT_USAGE;
    }
    bool stream = false;
    int rc = cli_choose_transfer(ctx, CLI_PUSHER, transfer, &stream);
    if (rc)
        return rc;
    if (stream)
        return cli_export_receive(ctx, argv[optind], target);
    /* Paths are taken on the pusher's host: make a relative one absolute here. */
    char full[PATH_MAX + 16], cwd[PATH_MAX];
    if (colon[1] != '/' && getcwd(cwd, sizeof(cwd)))
        snprintf(full, sizeof(full), "%.*s%s/%s", (int)(colon - target + 1), target, cwd,
                 colon + 1);
    else
        snprintf(full, sizeof(full), "%s", target);
    kiln_req req = KILN__V1__REQUEST__INIT;
    Kiln__V1__ExportRequest er = KILN__V1__EXPORT_REQUEST__INIT;
    char idbuf[KILN_DIGEST_STRLEN + 1];
    if ((er.ref = (char *)cli_image_ref(ctx, "export", argv[optind], idbuf, sizeof(idbuf))) == NULL)
        return CLI_EXIT_USAGE;
    er.target = full;
    req.body_case = KILN__V1__REQUEST__BODY_EXPORT;
    req.export = &er;
    kiln_reply *rep = NULL;
    rc = cli_call(ctx, CLI_PUSHER, &req, &rep, 3600000);
    if (rc)
        return rc;
    printf("%s\n", rep->export_reply->digest);
    kiln_rpc_reply_free(rep);
    return CLI_EXIT_OK;
}
