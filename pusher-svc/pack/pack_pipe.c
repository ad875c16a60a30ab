/* The bounded packing pipeline: the producer (tar writer or tar reader, on
 * the caller's thread) fills fixed PSH_PACK_BLOCK_SIZE blocks in a ring of
 * slots and, once a block is handed on, hashes its tar bytes (DiffID); gzip
 * workers deflate blocks in parallel; one writer thread takes the blocks
 * strictly in order, hashes the bytes it writes (blob digest) and writes them
 * to the blob fd.  A slot is reused only after the writer is done with it, so
 * memory is fixed by the slot count.
 *
 * Why the DiffID is hashed by the producer and not the writer: on
 * incompressible data (stored blocks, memory speed in the workers) the writer
 * was the bottleneck, hashing every block twice (tar and blob) and writing it,
 * while the workers idled; split this way the producer and the writer each
 * hash once and run in parallel.  The producer hashes a block after
 * publishing it, so the workers start at once; workers and writer only read
 * a published slot's input, and only the producer refills a slot, so the
 * bytes cannot change under the hash even if the writer frees the slot
 * first.
 *
 * Why the digests stay thread-count independent: the tar is cut at fixed
 * offsets (a block is closed only when full and more data follows, or at the
 * end), every block is compressed without reference to its neighbours, and
 * the writer emits blocks in sequence.  See psh_pack.h for the gzip joining. */
#include "pack_internal.h"
#include "cleanup.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libdeflate.h>
#include <zlib.h>
#include <zstd.h>

/* zstd job size, pinned so frames do not depend on the library's heuristics. */
#define ZSTD_JOB_SIZE    ((size_t)1 << 20)
#define ZSTD_MAX_WORKERS 4 /* output does not depend on it; memory does */
/* Blocks at least this long whose byte histogram passes STORE_CHI2 are
 * stored, not deflated (see looks_incompressible). */
#define STORE_MIN ((size_t)64 << 10)
/* Output window of the block walk's inflate, compared piecewise. */
#define CHECK_CHUNK ((size_t)64 << 10)
#define STORE_CHI2  16384

enum slot_state { SLOT_FREE, SLOT_READY, SLOT_BUSY, SLOT_DONE };

typedef struct slot {
    uint8_t *in;
    size_t in_len;
    uint8_t *out; /* gzip only */
    size_t out_len;
    uint32_t crc;
    bool final;
    enum slot_state state;
} slot;

typedef struct worker {
    pack_pipe *p;
    pthread_t tid;
    bool started;
    struct libdeflate_compressor *c;
    uint8_t *check; /* inflate target of the block walk */
    z_stream z;
    bool z_ready;
} worker;

struct pack_pipe {
    psh_compression comp;
    int level;
    int fd;
    size_t nslots;
    slot *slots;
    size_t out_cap;
    slot *cur;           /* slot the producer fills, NULL between blocks */
    uint64_t next_fill;  /* sequence number of the next slot to fill */
    uint64_t submitted;  /* slots handed on (READY or later) */
    uint64_t next_work;  /* next sequence number a worker claims */
    uint64_t next_write; /* next sequence number the writer emits */
    bool closed;         /* the final block has been submitted */
    bool stop;           /* failure or abort: every thread leaves */
    kiln_error *error;   /* first failure */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done, cv_free;
    int nworkers;
    worker *workers;
    pthread_t writer;
    bool writer_started;
    /* writer state */
    kiln_sha256 *h_blob;
    _Atomic uint64_t blob_size;
    uint32_t crc;
    ZSTD_CCtx *zc;
    uint8_t *zout;
    size_t zout_cap;
    /* producer state */
    kiln_sha256 *h_tar;
    uint64_t produced;
    void (*progress)(void *ud, uint64_t in, uint64_t out);
    void *progress_ud;
};

int pack_thread_count(int requested)
{
    long n = requested > 0 ? requested : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > PSH_PACK_MAX_THREADS)
        n = PSH_PACK_MAX_THREADS;
    return (int)n;
}

int pack_resolve_level(const psh_pack_opts *opts, int *level, kiln_error **err)
{
    int l = opts->level;
    switch (opts->comp) {
    case PSH_COMP_GZIP:
        if (l == -1)
            l = PSH_PACK_GZIP_DEFAULT_LEVEL;
        if (l < 0 || l > 12)
            return kiln_error_set(err, KILN_EINVAL, 0, "gzip level %d not in 0..12", l);
        break;
    case PSH_COMP_ZSTD:
        if (l == -1)
            l = PSH_PACK_ZSTD_DEFAULT_LEVEL;
        if (l < 1 || l > ZSTD_maxCLevel())
            return kiln_error_set(err, KILN_EINVAL, 0, "zstd level %d not in 1..%d", l,
                                  ZSTD_maxCLevel());
        break;
    case PSH_COMP_NONE:
        l = 0;
        break;
    default:
        return kiln_error_set(err, KILN_EINVAL, 0, "unknown compression %d", (int)opts->comp);
    }
    *level = l;
    return 0;
}

/* Records the first failure and wakes every thread. */
static void fail(pack_pipe *p, kiln_error **e)
{
    pthread_mutex_lock(&p->mu);
    if (p->error == NULL)
        p->error = kiln_error_steal(e);
    else
        kiln_error_free(e);
    p->stop = true;
    pthread_cond_broadcast(&p->cv_work);
    pthread_cond_broadcast(&p->cv_done);
    pthread_cond_broadcast(&p->cv_free);
    pthread_mutex_unlock(&p->mu);
}

/* Copies the pipeline's error into *err; call with p->mu held. */
static int copy_error(pack_pipe *p, kiln_error **err)
{
    if (p->error == NULL)
        return kiln_error_set(err, KILN_ECANCELED, 0, "packing aborted");
    return kiln_error_set(err, p->error->code, 0, "%s", p->error->msg);
}

/* ---- gzip block codec ---------------------------------------------------- */

/* Turns the final deflate stream in s->out into a non-final segment that ends
 * on a byte boundary.  zlib's inflate with Z_BLOCK stops after every block;
 * data_type then holds the number of unused bits of the last byte consumed,
 * which gives the exact bit offset of each block boundary.  The last boundary
 * before the end is where the final block's header (and its BFINAL bit)
 * starts; the stream end is where the empty stored block goes. */
static int make_nonfinal(worker *w, slot *s, kiln_error **err)
{
    z_stream *z = &w->z;
    if (!w->z_ready) {
        memset(z, 0, sizeof(*z));
        if (inflateInit2(z, -15) != Z_OK)
            return kiln_error_set(err, KILN_ENOSPC, 0, "inflateInit2 failed");
        w->z_ready = true;
    } else {
        inflateReset(z);
    }
    z->next_in = s->out;
    z->avail_in = (uInt)s->out_len;
    z->next_out = w->check;
    z->avail_out = (uInt)CHECK_CHUNK;
    uint64_t last_hdr = 0, end = 0;
    size_t verified = 0;
    bool same = true;
    for (;;) {
        int r = inflate(z, Z_BLOCK);
        size_t produced = (size_t)(z->next_out - w->check);
        if (produced > 0) { /* compare with the input in small pieces */
            same = same && verified + produced <= s->in_len &&
                   memcmp(w->check, s->in + verified, produced) == 0;
            verified += produced;
            z->next_out = w->check;
            z->avail_out = (uInt)CHECK_CHUNK;
        }
        if (r == Z_STREAM_END)
            break;
        if (r != Z_OK)
            return kiln_error_set(err, KILN_EINTERNAL, 0, "deflate block walk: inflate %d", r);
        /* 128: stopped at a block boundary; 64: the block just ended was the
         * final one.  (At Z_STREAM_END inflate has already skipped the
         * padding bits, so the end must be taken here.) */
        uint64_t bit = (uint64_t)(z->next_in - s->out) * 8 - (uint64_t)(z->data_type & 63);
        if ((z->data_type & 192) == 128)
            last_hdr = bit;
        else if ((z->data_type & 192) == 192)
            end = bit;
    }
    uint64_t nbits = (uint64_t)s->out_len * 8;
    if (!same || verified != s->in_len || end > nbits || end + 8 <= nbits || last_hdr >= end ||
        !(s->out[last_hdr >> 3] & (1u << (last_hdr & 7))) ||
        (end & 7 && (s->out[end >> 3] >> (end & 7)) != 0))
        return kiln_error_set(err, KILN_EINTERNAL, 0, "deflate block walk: inconsistent stream");
    s->out[last_hdr >> 3] &= (uint8_t) ~(1u << (last_hdr & 7)); /* BFINAL = 0 */
    /* Empty stored block: 3 zero header bits at `end`, pad to a byte, then
     * LEN = 0x0000 and NLEN = 0xffff.  Bits after `end` are already zero. */
    size_t aligned = (size_t)((end + 3 + 7) / 8);
    for (size_t i = s->out_len; i < aligned; i++)
        s->out[i] = 0;
    static const uint8_t stored[4] = {0x00, 0x00, 0xff, 0xff};
    memcpy(s->out + aligned, stored, sizeof(stored));
    s->out_len = aligned + sizeof(stored);
    return 0;
}

/* True when the block's byte histogram is so flat that no Huffman code can
 * gain more than ~0.15%: already-compressed or random data.  Integer
 * arithmetic only, so the decision (and the output) is the same everywhere.
 * With n bytes and counts c[i], the normalised chi-square statistic is
 * sum((256 c - n)^2) / (256 n); uniform random data gives ~255. */
static bool looks_incompressible(const uint8_t *in, size_t n)
{
    if (n < STORE_MIN)
        return false;
    uint32_t c[4][256];
    memset(c, 0, sizeof(c));
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        c[0][in[i]]++;
        c[1][in[i + 1]]++;
        c[2][in[i + 2]]++;
        c[3][in[i + 3]]++;
    }
    for (; i < n; i++)
        c[0][in[i]]++;
    uint64_t sum = 0;
    for (int b = 0; b < 256; b++) {
        int64_t d = 256 * (int64_t)(c[0][b] + c[1][b] + c[2][b] + c[3][b]) - (int64_t)n;
        sum += (uint64_t)(d * d);
    }
    return sum <= (uint64_t)STORE_CHI2 * 256 * n;
}

/* Emits the block as stored deflate blocks.  Every segment starts on a byte
 * boundary (the gzip header is 10 bytes and every segment ends aligned), so a
 * stored header is one byte: BFINAL in bit 0, BTYPE 00, padding. */
static size_t store_block(uint8_t *out, const uint8_t *in, size_t n, bool final)
{
    size_t o = 0;
    do {
        size_t len = n > 65535 ? 65535 : n;
        out[o++] = (final && len == n) ? 1 : 0;
        out[o++] = (uint8_t)len;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)~len;
        out[o++] = (uint8_t)(~len >> 8);
        memcpy(out + o, in, len);
        o += len;
        in += len;
        n -= len;
    } while (n > 0);
    return o;
}

static int compress_block(worker *w, slot *s, kiln_error **err)
{
    s->crc = (uint32_t)libdeflate_crc32(0, s->in, s->in_len);
    if (w->p->level > 0 && looks_incompressible(s->in, s->in_len)) {
        s->out_len = store_block(s->out, s->in, s->in_len, s->final);
        return 0;
    }
    s->out_len = libdeflate_deflate_compress(w->c, s->in, s->in_len, s->out, w->p->out_cap - 8);
    if (s->out_len == 0)
        return kiln_error_set(err, KILN_EINTERNAL, 0, "deflate output over its bound");
    if (s->final)
        return 0;
    return make_nonfinal(w, s, err);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pack_pipe *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->next_work == p->submitted && !p->closed)
            pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->stop || p->next_work == p->submitted) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        slot *s = &p->slots[p->next_work % p->nslots];
        p->next_work++;
        s->state = SLOT_BUSY;
        pthread_mutex_unlock(&p->mu);

        kiln_error *e = NULL;
        if (compress_block(w, s, &e) < 0) {
            fail(p, &e);
            return NULL;
        }
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---- writer -------------------------------------------------------------- */

static int emit(pack_pipe *p, const void *data, size_t len, kiln_error **err)
{
    const uint8_t *b = data;
    kiln_sha256_update(p->h_blob, data, len);
    while (len > 0) {
        ssize_t n = write(p->fd, b, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kiln_error_set(err, kiln_code_from_errno(errno), errno, "write layer blob");
        if (n == 0)
            return kiln_error_set(err, KILN_EIO, 0, "write layer blob: no progress");
        b += n;
        len -= (size_t)n;
        atomic_fetch_add(&p->blob_size, (uint64_t)n);
    }
    return 0;
}

static void put_le32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

/* gzip header of every Kiln blob: no name, mtime 0, no extra flags, OS = Unix. */
static const uint8_t gzip_header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};

static int emit_zstd(pack_pipe *p, const slot *s, kiln_error **err)
{
    ZSTD_inBuffer in = {s->in, s->in_len, 0};
    ZSTD_EndDirective mode = s->final ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
        ZSTD_outBuffer out = {p->zout, p->zout_cap, 0};
        size_t left = ZSTD_compressStream2(p->zc, &out, &in, mode);
        if (ZSTD_isError(left))
            return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd: %s", ZSTD_getErrorName(left));
        if (out.pos > 0 && emit(p, p->zout, out.pos, err) < 0)
            return KILN_EIO;
        if (s->final ? left == 0 : in.pos == in.size)
            return 0;
    }
}

static int write_slot(pack_pipe *p, const slot *s, uint64_t tar_size, kiln_error **err)
{
    switch (p->comp) {
    case PSH_COMP_GZIP:
        if (emit(p, s->out, s->out_len, err) < 0)
            return KILN_EIO;
        p->crc = (uint32_t)crc32_combine(p->crc, s->crc, (z_off_t)s->in_len);
        if (s->final) {
            uint8_t trailer[8];
            put_le32(trailer, p->crc);
            put_le32(trailer + 4, (uint32_t)tar_size); /* ISIZE: size mod 2^32 */
            return emit(p, trailer, sizeof(trailer), err);
        }
        return 0;
    case PSH_COMP_ZSTD:
        return emit_zstd(p, s, err);
    default:
        return emit(p, s->in, s->in_len, err);
    }
}

static void *writer_main(void *arg)
{
    pack_pipe *p = arg;
    kiln_error *e = NULL;
    if (p->comp == PSH_COMP_GZIP && emit(p, gzip_header, sizeof(gzip_header), &e) < 0) {
        fail(p, &e);
        return NULL;
    }
    enum slot_state want = p->comp == PSH_COMP_GZIP ? SLOT_DONE : SLOT_READY;
    uint64_t tar_size = 0; /* tar bytes up to and including the current slot */
    for (;;) {
        pthread_mutex_lock(&p->mu);
        slot *s = &p->slots[p->next_write % p->nslots];
        while (!p->stop && !(p->next_write < p->submitted && s->state == want) &&
               !(p->closed && p->next_write == p->submitted))
            pthread_cond_wait(&p->cv_done, &p->mu);
        if (p->stop || p->next_write == p->submitted) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        pthread_mutex_unlock(&p->mu);

        tar_size += s->in_len;
        if (write_slot(p, s, tar_size, &e) < 0) {
            fail(p, &e);
            return NULL;
        }
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_FREE;
        s->in_len = 0;
        p->next_write++;
        pthread_cond_broadcast(&p->cv_free);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---- producer side ------------------------------------------------------- */

static int acquire(pack_pipe *p, kiln_error **err)
{
    pthread_mutex_lock(&p->mu);
    slot *s = &p->slots[p->next_fill % p->nslots];
    while (!p->stop && s->state != SLOT_FREE)
        pthread_cond_wait(&p->cv_free, &p->mu);
    if (p->stop) {
        int rc = copy_error(p, err);
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    pthread_mutex_unlock(&p->mu);
    s->in_len = 0;
    s->final = false;
    p->cur = s;
    return 0;
}

static void submit(pack_pipe *p, bool final)
{
    slot *s = p->cur;
    p->cur = NULL;
    s->final = final;
    /* Saved before publishing: the writer may free the slot (and zero
     * in_len) while the hash below still reads it. */
    const uint8_t *in = s->in;
    size_t in_len = s->in_len;
    p->produced += in_len;
    pthread_mutex_lock(&p->mu);
    s->state = SLOT_READY;
    p->next_fill++;
    p->submitted++;
    if (final)
        p->closed = true;
    pthread_cond_broadcast(p->comp == PSH_COMP_GZIP && !final ? &p->cv_work : &p->cv_done);
    if (final)
        pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    kiln_sha256_update(p->h_tar, in, in_len);
    if (p->progress)
        p->progress(p->progress_ud, p->produced, atomic_load(&p->blob_size));
}

int pack_pipe_write(pack_pipe *p, const void *data, size_t len, kiln_error **err)
{
    const uint8_t *b = data;
    while (len > 0) {
        if (p->cur != NULL && p->cur->in_len == PSH_PACK_BLOCK_SIZE)
            submit(p, false);
        if (p->cur == NULL) {
            int rc = acquire(p, err);
            if (rc < 0)
                return rc;
        }
        size_t n = PSH_PACK_BLOCK_SIZE - p->cur->in_len;
        if (n > len)
            n = len;
        memcpy(p->cur->in + p->cur->in_len, b, n);
        p->cur->in_len += n;
        b += n;
        len -= n;
    }
    return 0;
}

/* ---- lifetime ------------------------------------------------------------ */

static void join_all(pack_pipe *p)
{
    if (p->writer_started)
        pthread_join(p->writer, NULL);
    p->writer_started = false;
    for (int i = 0; i < p->nworkers; i++) {
        if (p->workers[i].started)
            pthread_join(p->workers[i].tid, NULL);
        p->workers[i].started = false;
    }
}

static void pipe_free(pack_pipe *p)
{
    for (int i = 0; i < p->nworkers; i++) {
        worker *w = &p->workers[i];
        libdeflate_free_compressor(w->c);
        free(w->check);
        if (w->z_ready)
            inflateEnd(&w->z);
    }
    free(p->workers);
    for (size_t i = 0; p->slots && i < p->nslots; i++) {
        free(p->slots[i].in);
        free(p->slots[i].out);
    }
    free(p->slots);
    ZSTD_freeCCtx(p->zc);
    free(p->zout);
    kiln_sha256_free(p->h_tar);
    kiln_sha256_free(p->h_blob);
    kiln_error_free(&p->error);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_free);
    free(p);
}

void pack_pipe_abort(pack_pipe *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv_work);
    pthread_cond_broadcast(&p->cv_done);
    pthread_cond_broadcast(&p->cv_free);
    pthread_mutex_unlock(&p->mu);
    join_all(p);
    pipe_free(p);
}

static int setup_zstd(pack_pipe *p, int threads, kiln_error **err)
{
    p->zc = ZSTD_createCCtx();
    p->zout_cap = ZSTD_CStreamOutSize();
    p->zout = malloc(p->zout_cap);
    if (p->zc == NULL || p->zout == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "zstd context");
    /* nbWorkers >= 1 even for one thread: multi-threaded frames do not depend
     * on the worker count, single-threaded ones differ from them. */
    size_t r = ZSTD_CCtx_setParameter(p->zc, ZSTD_c_nbWorkers,
                                      threads < ZSTD_MAX_WORKERS ? threads : ZSTD_MAX_WORKERS);
    if (ZSTD_isError(r))
        return kiln_error_set(err, KILN_ENOTSUP, 0, "zstd without thread support: %s",
                              ZSTD_getErrorName(r));
    size_t rs[] = {
        ZSTD_CCtx_setParameter(p->zc, ZSTD_c_compressionLevel, p->level),
        ZSTD_CCtx_setParameter(p->zc, ZSTD_c_checksumFlag, 1),
        ZSTD_CCtx_setParameter(p->zc, ZSTD_c_jobSize, (int)ZSTD_JOB_SIZE),
    };
    for (size_t i = 0; i < KILN_ARRAY_SIZE(rs); i++)
        if (ZSTD_isError(rs[i]))
            return kiln_error_set(err, KILN_EINTERNAL, 0, "zstd parameter: %s",
                                  ZSTD_getErrorName(rs[i]));
    return 0;
}

static int setup(pack_pipe *p, int threads, kiln_error **err)
{
    p->h_tar = kiln_sha256_new();
    p->h_blob = kiln_sha256_new();
    if (p->h_tar == NULL || p->h_blob == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "sha256 context");
    if (p->comp == PSH_COMP_GZIP) {
        p->nworkers = threads;
        /* producer block + one per worker + two waiting for the writer, and
         * up to four more so a briefly descheduled writer or producer does
         * not stall the workers on a busy machine */
        p->nslots = (size_t)threads + 3 + (size_t)(threads < 4 ? threads : 4);
        size_t stored = PSH_PACK_BLOCK_SIZE + 5 * (PSH_PACK_BLOCK_SIZE / 65535 + 1);
        p->out_cap = libdeflate_deflate_compress_bound(NULL, PSH_PACK_BLOCK_SIZE);
        p->out_cap = (p->out_cap > stored ? p->out_cap : stored) + 8;
    } else {
        p->nslots = 3;
    }
    p->slots = calloc(p->nslots, sizeof(*p->slots));
    if (p->slots == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack slots");
    for (size_t i = 0; i < p->nslots; i++) {
        p->slots[i].in = malloc(PSH_PACK_BLOCK_SIZE);
        if (p->slots[i].in == NULL)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack slots");
        if (p->out_cap && (p->slots[i].out = malloc(p->out_cap)) == NULL)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack slots");
    }
    if (p->nworkers > 0) {
        p->workers = calloc((size_t)p->nworkers, sizeof(*p->workers));
        if (p->workers == NULL)
            return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack workers");
        for (int i = 0; i < p->nworkers; i++) {
            worker *w = &p->workers[i];
            w->p = p;
            w->c = libdeflate_alloc_compressor(p->level);
            w->check = malloc(CHECK_CHUNK);
            if (w->c == NULL || w->check == NULL)
                return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "deflate compressor");
        }
    }
    if (p->comp == PSH_COMP_ZSTD)
        return setup_zstd(p, threads, err);
    return 0;
}

int pack_pipe_new(pack_pipe **out, int blob_fd, const psh_pack_opts *opts, kiln_error **err)
{
    int level = 0;
    int rc = pack_resolve_level(opts, &level, err);
    if (rc < 0)
        return rc;
    pack_pipe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return kiln_error_set(err, KILN_ENOSPC, ENOMEM, "pack pipeline");
    p->comp = opts->comp;
    p->level = level;
    p->fd = blob_fd;
    p->progress = opts->progress;
    p->progress_ud = opts->progress_ud;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    pthread_cond_init(&p->cv_free, NULL);
    rc = setup(p, pack_thread_count(opts->threads), err);
    for (int i = 0; rc == 0 && i < p->nworkers; i++) {
        int e = pthread_create(&p->workers[i].tid, NULL, worker_main, &p->workers[i]);
        if (e != 0)
            rc = kiln_error_set(err, KILN_ENOSPC, e, "start pack worker");
        else
            p->workers[i].started = true;
    }
    if (rc == 0) {
        int e = pthread_create(&p->writer, NULL, writer_main, p);
        if (e != 0)
            rc = kiln_error_set(err, KILN_ENOSPC, e, "start pack writer");
        else
            p->writer_started = true;
    }
    if (rc < 0) {
        pack_pipe_abort(p);
        return rc;
    }
    *out = p;
    return 0;
}

int pack_pipe_finish(pack_pipe *p, psh_layer_info *out, kiln_error **err)
{
    int rc = 0;
    if (p->cur == NULL)
        rc = acquire(p, err);
    if (rc == 0)
        submit(p, true);
    join_all(p);
    if (rc == 0 && p->error != NULL)
        rc = copy_error(p, err);
    if (rc == 0) {
        kiln_sha256_final_str(p->h_tar, out->diff_id);
        kiln_sha256_final_str(p->h_blob, out->digest);
        out->size = atomic_load(&p->blob_size);
        out->tar_size = p->produced;
        out->media_type = psh_pack_media_type(p->comp);
    }
    pipe_free(p);
    return rc;
}

const char *psh_pack_media_type(psh_compression comp)
{
    switch (comp) {
    case PSH_COMP_ZSTD:
        return PSH_MEDIA_TYPE_TAR_ZSTD;
    case PSH_COMP_NONE:
        return PSH_MEDIA_TYPE_TAR;
    default:
        return PSH_MEDIA_TYPE_TAR_GZIP;
    }
}
