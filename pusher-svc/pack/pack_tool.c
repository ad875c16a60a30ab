/* kiln-pack-tool: packs a directory (or an uncompressed tar) into a layer
 * blob and prints one JSON line with digests, sizes and MB/s; with
 * --codec-bench, measures the deflate libraries on one core (the numbers in
 * psh_pack.h come from it).  Used by bench/pack.sh and the unit tests. */
#include "psh_pack.h"
#include "cleanup.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libdeflate.h>
#include <zlib.h>
#ifdef KILN_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define BENCH_MAX ((size_t)256 << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: kiln-pack-tool [--comp gzip|zstd|none] [--level N] [--threads N]\n"
               "                      [--epoch SECONDS] [--overlay] [--tar] SRC BLOB\n"
               "       kiln-pack-tool --codec-bench FILE\n"
               "SRC is a directory, or an uncompressed tar with --tar.  Prints JSON.\n");
}

typedef struct bench_ctx {
    const uint8_t *in;
    size_t n;
    uint8_t *out;
    uint8_t *tmp;
} bench_ctx;

static void report(const char *name, const bench_ctx *b, double dt, size_t total)
{
    printf("{\"codec\":\"%s\",\"mb_per_s\":%.1f,\"ratio\":%.3f}\n", name, (double)b->n / dt / 1e6,
           (double)b->n / (double)total);
}

static void bench_zlib(const bench_ctx *b, int level)
{
    double t0 = now();
    size_t total = 0;
    for (size_t off = 0; off < b->n; off += PSH_PACK_BLOCK_SIZE) {
        size_t len = b->n - off < PSH_PACK_BLOCK_SIZE ? b->n - off : PSH_PACK_BLOCK_SIZE;
        z_stream z;
        memset(&z, 0, sizeof(z));
        deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        if (off > 0)
            deflateSetDictionary(&z, b->in + off - 32768, 32768);
        z.next_in = (uint8_t *)b->in + off;
        z.avail_in = (uInt)len;
        z.next_out = b->out;
        z.avail_out = (uInt)(2 * PSH_PACK_BLOCK_SIZE);
        deflate(&z, off + len >= b->n ? Z_FINISH : Z_SYNC_FLUSH);
        total += 2 * PSH_PACK_BLOCK_SIZE - z.avail_out;
        deflateEnd(&z);
    }
    char name[32];
    snprintf(name, sizeof(name), "zlib-%d", level);
    report(name, b, now() - t0, total);
}

/* libdeflate plus the inflate walk Kiln runs on every non-final block. */
static void bench_libdeflate(const bench_ctx *b, int level)
{
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    double t0 = now();
    size_t total = 0;
    for (size_t off = 0; c != NULL && off < b->n; off += PSH_PACK_BLOCK_SIZE) {
        size_t len = b->n - off < PSH_PACK_BLOCK_SIZE ? b->n - off : PSH_PACK_BLOCK_SIZE;
        size_t o =
            libdeflate_deflate_compress(c, b->in + off, len, b->out, 2 * PSH_PACK_BLOCK_SIZE);
        total += o + 5;
        z_stream z;
        memset(&z, 0, sizeof(z));
        inflateInit2(&z, -15);
        z.next_in = b->out;
        z.avail_in = (uInt)o;
        z.next_out = b->tmp;
        z.avail_out = (uInt)(PSH_PACK_BLOCK_SIZE + 1);
        while (inflate(&z, Z_BLOCK) == Z_OK)
            ;
        inflateEnd(&z);
    }
    libdeflate_free_compressor(c);
    char name[32];
    snprintf(name, sizeof(name), "libdeflate-%d+walk", level);
    report(name, b, now() - t0, total);
}

#ifdef KILN_HAVE_ISAL
static void bench_isal(const bench_ctx *b, int level)
{
    static uint8_t lvlbuf[ISAL_DEF_LVL3_LARGE];
    double t0 = now();
    size_t total = 0;
    for (size_t off = 0; off < b->n; off += PSH_PACK_BLOCK_SIZE) {
        size_t len = b->n - off < PSH_PACK_BLOCK_SIZE ? b->n - off : PSH_PACK_BLOCK_SIZE;
        struct isal_zstream s;
        isal_deflate_init(&s);
        s.level = (uint32_t)level;
        s.level_buf = lvlbuf;
        s.level_buf_size = sizeof(lvlbuf);
        s.gzip_flag = IGZIP_DEFLATE;
        if (off > 0)
            isal_deflate_set_dict(&s, (uint8_t *)b->in + off - 32768, 32768);
        s.next_in = (uint8_t *)b->in + off;
        s.avail_in = (uint32_t)len;
        s.next_out = b->out;
        s.avail_out = (uint32_t)(2 * PSH_PACK_BLOCK_SIZE);
        s.end_of_stream = off + len >= b->n;
        s.flush = s.end_of_stream ? NO_FLUSH : SYNC_FLUSH;
        isal_deflate(&s);
        total += 2 * PSH_PACK_BLOCK_SIZE - s.avail_out;
    }
    char name[32];
    snprintf(name, sizeof(name), "isal-%d", level);
    report(name, b, now() - t0, total);
}
#endif

static int codec_bench(const char *path)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    _cleanup_free_ uint8_t *in = malloc(BENCH_MAX);
    _cleanup_free_ uint8_t *out = malloc(2 * PSH_PACK_BLOCK_SIZE);
    _cleanup_free_ uint8_t *tmp = malloc(PSH_PACK_BLOCK_SIZE + 1);
    if (fd < 0 || in == NULL || out == NULL || tmp == NULL) {
        perror(path);
        return 1;
    }
    size_t n = 0;
    ssize_t r;
    while (n < BENCH_MAX && (r = read(fd, in + n, BENCH_MAX - n)) > 0)
        n += (size_t)r;
    bench_ctx b = {in, n, out, tmp};
    printf("{\"input_bytes\":%zu,\"block\":%zu,\"threads\":1}\n", n, PSH_PACK_BLOCK_SIZE);
    bench_zlib(&b, 6);
    bench_zlib(&b, 1);
    bench_libdeflate(&b, 6);
    bench_libdeflate(&b, 5);
    bench_libdeflate(&b, 4);
    bench_libdeflate(&b, 1);
#ifdef KILN_HAVE_ISAL
    bench_isal(&b, 3);
    bench_isal(&b, 1);
#endif
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"comp", required_argument, NULL, 'c'},
        {"level", required_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 't'},
        {"epoch", required_argument, NULL, 'e'},
        {"overlay", no_argument, NULL, 'o'},
        {"tar", no_argument, NULL, 'T'},
        {"codec-bench", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    psh_pack_opts opts;
    psh_pack_opts_init(&opts);
    bool tar = false;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (strcmp(optarg, "gzip") == 0)
                opts.comp = PSH_COMP_GZIP;
            else if (strcmp(optarg, "zstd") == 0)
                opts.comp = PSH_COMP_ZSTD;
            else if (strcmp(optarg, "none") == 0)
                opts.comp = PSH_COMP_NONE;
            else {
                usage(stderr);
                return 2;
            }
            break;
        case 'l':
            opts.level = atoi(optarg);
            break;
        case 't':
            opts.threads = atoi(optarg);
            break;
        case 'e':
            opts.source_date_epoch = strtoll(optarg, NULL, 10);
            break;
        case 'o':
            opts.overlay_diff = true;
            break;
        case 'T':
            tar = true;
            break;
        case 'B':
            return codec_bench(optarg);
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    const char *src = argv[optind], *dst = argv[optind + 1];
    _cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        perror(dst);
        return 1;
    }
    psh_layer_info info;
    kiln_error *err = NULL;
    double t0 = now();
    int rc;
    if (tar) {
        _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            perror(src);
            return 1;
        }
        rc = psh_pack_tar_stream(&info, in, out, &opts, &err);
    } else {
        rc = psh_pack_dir(&info, src, out, &opts, &err);
    }
    double dt = now() - t0;
    if (rc < 0) {
        fprintf(stderr, "kiln-pack-tool: %s: %s\n", kiln_code_name(err->code), err->msg);
        kiln_error_free(&err);
        return 1;
    }
    printf("{\"diff_id\":\"%s\",\"digest\":\"%s\",\"size\":%llu,\"tar_size\":%llu,"
           "\"media_type\":\"%s\",\"seconds\":%.3f,\"mb_per_s\":%.1f}\n",
           info.diff_id, info.digest, (unsigned long long)info.size,
           (unsigned long long)info.tar_size, info.media_type, dt,
           dt > 0 ? (double)info.tar_size / dt / 1e6 : 0.0);
    return 0;
}
