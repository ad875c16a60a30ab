/* Fixtures for the sandbox tests (see sbx_fixture.h). */
#include "sbx_fixture.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "digest.h"
#include "kt.h"
#include "sbx_internal.h"

void fx_require_sandbox(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skip: these tests run as root (test_rootless covers the rest)\n");
        exit(77);
    }
    bld_preflight_info pf;
    char *d = kt_tmpdir("sbx");
    kiln_error *err = NULL;
    int r = bld_preflight(&pf, d, &err);
    kt_rmrf(d);
    free(d);
    if (r < 0 || !pf.usable) {
        fprintf(stderr, "skip: sandbox unusable here: %s\n", r < 0 ? err->msg : pf.missing);
        exit(77);
    }
}

/* ---- layers ----------------------------------------------------------- */

static int write_cb_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "ab");
    if (f == NULL)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

int fx_layer(const char *out, const fx_entry *e, size_t n, int compression, char *digest,
             char *diff_id)
{
    /* The uncompressed tar goes to memory first, so its DiffID is known. */
    size_t cap = 1 << 20, used = 0;
    for (size_t i = 0; i < n; i++)
        cap += (e[i].data ? strlen(e[i].data) : 0) + 4096;
    char *tar = malloc(cap);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_memory(a, tar, cap, &used) != ARCHIVE_OK)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e[i].path);
        archive_entry_set_uid(ae, e[i].uid);
        archive_entry_set_gid(ae, e[i].gid);
        archive_entry_set_mtime(ae, e[i].mtime ? e[i].mtime : 1000000000, 0);
        size_t len = 0;
        switch (e[i].type) {
        case 'f':
            len = strlen(e[i].data ? e[i].data : "");
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, e[i].mode ? e[i].mode : 0644);
            archive_entry_set_size(ae, (la_int64_t)len);
            break;
        case 'd':
            archive_entry_set_filetype(ae, AE_IFDIR);
            archive_entry_set_perm(ae, e[i].mode ? e[i].mode : 0755);
            break;
        case 'l':
            archive_entry_set_filetype(ae, AE_IFLNK);
            archive_entry_set_perm(ae, 0777);
            archive_entry_set_symlink(ae, e[i].data);
            break;
        case 'h':
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, 0644);
            archive_entry_set_hardlink(ae, e[i].data);
            archive_entry_set_size(ae, 0);
            break;
        case 'c':
        case 'b': {
            unsigned ma = 0, mi = 0;
            if (e[i].data)
                sscanf(e[i].data, "%u,%u", &ma, &mi);
            archive_entry_set_filetype(ae, e[i].type == 'c' ? AE_IFCHR : AE_IFBLK);
            archive_entry_set_perm(ae, e[i].mode ? e[i].mode : 0666);
            archive_entry_set_rdevmajor(ae, ma);
            archive_entry_set_rdevminor(ae, mi);
            break;
        }
        }
        if (e[i].xattr) {
            const char *eq = strchr(e[i].xattr, '=');
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)(eq - e[i].xattr), e[i].xattr);
            const char *v = eq + 1;
            unsigned char raw[256];
            size_t vl = strlen(v);
            if (strncmp(v, "hex:", 4) == 0) { /* binary values */
                vl = 0;
                for (const char *h = v + 4; h[0] && h[1] && vl < sizeof(raw); h += 2) {
                    unsigned x;
                    sscanf(h, "%2x", &x);
                    raw[vl++] = (unsigned char)x;
                }
                v = (const char *)raw;
            }
            archive_entry_xattr_add_entry(ae, name, v, vl);
        }
        if (archive_write_header(a, ae) != ARCHIVE_OK) {
            fprintf(stderr, "tar header %s: %s\n", e[i].path, archive_error_string(a));
            return -1;
        }
        if (e[i].type == 'f' && len)
            archive_write_data(a, e[i].data, len);
        archive_entry_free(ae);
    }
    archive_write_close(a);
    archive_write_free(a);
    if (diff_id)
        kiln_sha256_bytes(tar, used, diff_id);
    unlink(out);
    void *blob = tar;
    size_t blen = used;
    if (compression == FX_GZIP) {
        blen = compressBound(used) + 64;
        blob = malloc(blen);
        z_stream z = {0};
        deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
        z.next_in = (Bytef *)tar;
        z.avail_in = (uInt)used;
        z.next_out = blob;
        z.avail_out = (uInt)blen;
        deflate(&z, Z_FINISH);
        blen = z.total_out;
        deflateEnd(&z);
    } else if (compression == FX_ZSTD) {
        blen = ZSTD_compressBound(used);
        blob = malloc(blen);
        blen = ZSTD_compress(blob, blen, tar, used, 3);
    }
    int r = write_cb_file(out, blob, blen);
    if (digest)
        kiln_sha256_bytes(blob, blen, digest);
    if (blob != tar)
        free(blob);
    free(tar);
    return r;
}

/* ---- the busybox base ------------------------------------------------- */

int fx_base_init(fx_base *b, const fx_entry *extra, size_t n_extra)
{
    memset(b, 0, sizeof(*b));
    b->tmp = kt_tmpdir("sbx");
    if (asprintf(&b->data, "%s/data", b->tmp) < 0 ||
        asprintf(&b->layer, "%s/base.tar.gz", b->tmp) < 0)
        return -1;
    mkdir(b->data, 0755);
    char *stage = NULL, *cmd = NULL;
    if (asprintf(&stage, "%s/stage", b->tmp) < 0)
        return -1;
    const char *dirs[] = {"bin", "etc", "tmp",  "root",     "proc",
                          "dev", "sys", "home", "home/app", "var"};
    mkdir(stage, 0755);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", stage, dirs[i]);
        mkdir(p, strcmp(dirs[i], "tmp") ? 0755 : 01777);
        if (!strcmp(dirs[i], "tmp"))
            chmod(p, 01777);
    }
    char p[512];
    snprintf(p, sizeof(p), "%s/etc/passwd", stage);
    kt_write_file_mode(p,
                       "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                       "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                       0644);
    snprintf(p, sizeof(p), "%s/etc/group", stage);
    kt_write_file_mode(p,
                       "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nwheel:x:10:root\n"
                       "nogroup:x:65534:\n",
                       0644);
    snprintf(p, sizeof(p), "%s/etc/motd", stage);
    kt_write_file_mode(p, "welcome\n", 0644);
    snprintf(p, sizeof(p), "%s/etc/hosts", stage);
    kt_write_file_mode(p, "127.0.0.1 image-hosts\n", 0644);
    /* busybox plus one relative link per applet */
    if (asprintf(
            &cmd,
            "cp /bin/busybox %s/bin/busybox && cp %s %s/probe && cd %s/bin && "
            "for a in $(/bin/busybox --list); do [ -e \"$a\" ] || ln -s busybox \"$a\"; done && "
            "tar --numeric-owner -czf %s -C %s .",
            stage, fx_probe(), stage, stage, b->layer, stage) < 0)
        return -1;
    int r = system(cmd);
    free(cmd);
    kt_rmrf(stage);
    free(stage);
    if (r != 0)
        return -1;
    bld_layer layers[2] = {{.blob_path = b->layer, .media = BLD_LAYER_GZIP}};
    char *extra_path = NULL;
    size_t n = 1;
    if (n_extra) {
        if (asprintf(&extra_path, "%s/extra.tar", b->tmp) < 0 ||
            fx_layer(extra_path, extra, n_extra, FX_TAR, NULL, NULL) < 0)
            return -1;
        layers[1] = (bld_layer){.blob_path = extra_path, .media = BLD_LAYER_TAR};
        n = 2;
    }
    kiln_error *err = NULL;
    r = bld_snapshot_ensure(b->chain, b->data, layers, n, &err);
    if (r == 0)
        r = bld_snapshot_acquire(&b->stack, b->data, b->chain, &err);
    free(extra_path);
    if (r < 0) {
        fprintf(stderr, "base: %s\n", err->msg);
        kiln_error_free(&err);
    }
    return r;
}

void fx_base_dispose(fx_base *b)
{
    bld_snapshot_release(b->stack);
    kt_rmrf(b->tmp);
    free(b->tmp);
    free(b->data);
    free(b->layer);
}

void fx_step_dirs(fx_base *b, char **upper, char **work)
{
    int n = b->step++;
    if (asprintf(upper, "%s/upper%d", b->tmp, n) < 0 ||
        asprintf(work, "%s/sandbox/w%d", b->data, n) < 0)
        exit(1);
    char *sb = NULL;
    if (asprintf(&sb, "%s/sandbox", b->data) >= 0)
        mkdir(sb, 0700);
    free(sb);
}

/* ---- output ----------------------------------------------------------- */

double fx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void fx_out_init(fx_out *o)
{
    memset(o, 0, sizeof(*o));
    kiln_buf_init(&o->out, 0);
    kiln_buf_init(&o->err, 0);
    kiln_buf_append(&o->out, "", 0, NULL);
    kiln_buf_append(&o->err, "", 0, NULL);
    o->start = fx_now();
    o->first_line_s = -1;
}

void fx_out_dispose(fx_out *o)
{
    kiln_buf_dispose(&o->out);
    kiln_buf_dispose(&o->err);
}

void fx_on_output(void *ud, int stream, const char *line, size_t len)
{
    fx_out *o = ud;
    kiln_buf *b = stream == 1 ? &o->out : &o->err;
    kiln_buf_append(b, line, len, NULL);
    kiln_buf_append(b, "\n", 1, NULL);
    if (o->lines++ == 0)
        o->first_line_s = fx_now() - o->start;
}

void fx_spec(bld_run_spec *s, fx_base *b, const char *shell_cmd, fx_out *o, char **upper,
             char **work)
{
    memset(s, 0, sizeof(*s));
    fx_step_dirs(b, upper, work);
    s->data_dir = b->data;
    s->lowers = bld_snapshot_stack_dirs(b->stack);
    s->n_lowers = bld_snapshot_stack_len(b->stack);
    s->upper_dir = *upper;
    s->work_dir = *work;
    s->shell_cmd = shell_cmd;
    s->hostname = "kiln-test";
    s->network = SBX_NET_NONE;
    s->on_output = fx_on_output;
    s->output_ud = o;
    s->timeout_ms = 60000;
    if (o)
        fx_out_init(o);
}

const char *fx_value(const char *text, const char *key)
{
    static char val[4096];
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(val, sizeof(val), "%.*s", (int)(ll - kl - 1), p + kl + 1);
            return val;
        }
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

int fx_count(const char *text, const char *key, const char *value)
{
    int c = 0;
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (ll > kl && strncmp(p, key, kl) == 0 && p[kl] == '=' &&
            (value == NULL ||
             (ll - kl - 1 == strlen(value) && !strncmp(p + kl + 1, value, ll - kl - 1))))
            c++;
        p = nl ? nl + 1 : NULL;
    }
    return c;
}

/* cp src dst, mode 0755. */
static bool copy_file(const char *src, const char *dst)
{
    char *cmd = NULL;
    if (asprintf(&cmd, "cp '%s' '%s' && chmod 755 '%s'", src, dst, dst) < 0)
        return false;
    int r = system(cmd);
    free(cmd);
    return r == 0;
}

static char *probe_copy; /* fx_probe_copy's, for users who cannot read the build tree */

const char *fx_probe(void)
{
    return probe_copy ? probe_copy : KT_PROBE_PATH;
}

int fx_probe_copy(void)
{
    char *dir = kt_tmpdir("sbx");
    if (chmod(dir, 0755) < 0 || asprintf(&probe_copy, "%s/kiln-probe", dir) < 0 ||
        !copy_file(KT_PROBE_PATH, probe_copy)) {
        free(dir);
        return -1;
    }
    free(dir);
    return 0;
}

void fx_probe_copy_remove(void)
{
    if (probe_copy == NULL)
        return;
    char *dir = strdup(probe_copy);
    if (dir != NULL) {
        *strrchr(dir, '/') = '\0';
        kt_rmrf(dir);
    }
    free(dir);
    free(probe_copy);
    probe_copy = NULL;
}

int fx_mounts_mentioning(const char *s)
{
    char *t = kt_read_file("/proc/self/mountinfo", NULL);
    int c = 0;
    for (char *p = t; p && (p = strstr(p, s)) != NULL; p += strlen(s))
        c++;
    free(t);
    return c;
}

int fx_procs_matching(const char *s)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int c = 0;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char path[300], buf[4096];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\0')
                buf[i] = ' ';
        buf[n] = '\0';
        if (strstr(buf, s))
            c++;
    }
    if (d)
        closedir(d);
    return c;
}
