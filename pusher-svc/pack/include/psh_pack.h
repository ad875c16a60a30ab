/* Layer packing: a directory tree (a rootfs or an overlay upper dir) or an
 * existing tar stream becomes an OCI layer blob in one streaming pass that
 * also yields the DiffID (sha256 of the tar) and the blob digest (sha256 of
 * the compressed bytes).  Memory stays bounded whatever the layer size.
 *
 * Determinism: the same tree gives byte-identical tar, blob and digests on any
 * machine and with any thread count, provided the codec library versions are
 * the same (the cache key records them).
 *
 * Tar (libarchive's restricted PAX: ustar headers, a PAX record only where
 * ustar cannot hold a value, never a pid in a header name):
 *   - entries in depth-first order, each directory's children sorted bytewise
 *     by their name in the archive, so a parent always precedes its children
 *     (the order of Go's filepath.Walk); the root itself has no entry;
 *   - numeric uid/gid as stored in the tree (or through the id maps for
 *     rootless diffs), empty uname/gname, full mode bits, mtime in whole
 *     seconds (clamped to SOURCE_DATE_EPOCH when given), no
 *     atime/ctime/birthtime; xattrs sorted, as SCHILY.xattr records (overlay's
 *     own trusted.overlay.* and user.overlay.*, and the host's
 *     security.selinux label, are never copied);
 *   - names are bytes: UTF-8 names go out as PAX `path` records, others raw
 *     under hdrcharset=BINARY; the conversion runs under a pinned C.UTF-8
 *     locale so the process's LANG cannot change the tar;
 *   - hardlinks (same st_dev and st_ino) become link entries pointing at the
 *     first path in archive order; symlinks, char/block devices and fifos are
 *     kept; sockets are skipped with a warning;
 *   - the walk stays on the root's filesystem: a directory that is another
 *     filesystem's mount point is archived as an empty directory, with a
 *     warning (like `tar --one-file-system`), so a live /proc is never read;
 *   - the tar is not padded to a 10 KiB record: it ends with the two zero
 *     blocks, as Go's archive/tar writes it.
 * Overlay diff mode (psh_pack_opts.overlay_diff): a 0/0 character device
 * becomes an empty regular file `.wh.<name>` (mode 0600, owner and mtime of
 * the device); a directory whose trusted.overlay.opaque (or
 * user.overlay.opaque) is "y" is followed at once by `<dir>/.wh..wh..opq`.
 * Upper dirs written with overlay's metacopy or redirect_dir features are
 * refused (KILN_ENOTSUP): their files do not hold the data the image needs;
 * so are real files named `.wh.*` (KILN_EINVAL): they would delete files of
 * the layers below.  A diff that changes while it is packed is an error.
 *
 * Compression (gzip, the default): the tar is cut into fixed 1 MiB blocks;
 * each block is deflated on its own by libdeflate, every block but the last is
 * turned into a non-final deflate segment ending on a byte boundary, and the
 * segments are joined into ONE gzip member whose CRC32 is combined from the
 * per-block CRCs.  The block layout depends only on the input, so any thread
 * count gives the same bytes.  Codec chosen by measurement on this project's
 * 2-vCPU EPYC, one core, 200 MB tar of /usr binaries and docs, 1 MiB blocks
 * (reproduce: `kiln-pack-tool --codec-bench FILE`; the machine is shared, so
 * expect +-20% between runs):
 *     zlib -6 (dictionary + Z_SYNC_FLUSH)       37 MB/s  ratio 3.10
 *     zlib -1                                  120 MB/s  ratio 2.78
 *     libdeflate -6 (+ block walk, below)       75 MB/s  ratio 3.13
 *     libdeflate -5 (+ block walk)              84 MB/s  ratio 3.11
 *     libdeflate -4 (+ block walk)             104 MB/s  ratio 3.03
 *     ISA-L igzip level 3 / 1                  402 / 641 MB/s  ratio 2.80 / 2.71
 * libdeflate -5 (the default) matches zlib -6's ratio at 2.3x its speed.
 * ISA-L is faster still but 10% larger, and it picks its hash function and
 * kernels by CPU feature at run time, so the same tree could give different
 * digests on different machines; it is not used.  libdeflate only writes
 * final streams, so each non-final block is walked once with zlib's inflate
 * (Z_BLOCK) to find the bit where its last block header starts and where its
 * data ends: the BFINAL bit is cleared there and an empty stored block aligns
 * the end, as a zlib sync flush would.  The walk also proves that every block
 * decompresses to its input before any byte is written.  Blocks whose byte
 * histogram is flat (random or already-compressed data; integer chi-square
 * test, so the decision is the same on every machine) are written as stored
 * deflate blocks without running the compressor: at most ~0.15% larger than
 * Huffman coding could make them, and packed at memory speed.
 *
 * zstd: libzstd's own worker threads, always in multi-threaded mode (at least
 * one worker, at most 4), whose output does not depend on the number of
 * workers; job size pinned to 1 MiB.  Uncompressed: the tar itself, digest ==
 * DiffID.
 *
 * Memory: a ring of (threads + 3 + min(threads, 4)) 1 MiB blocks (input and
 * output) plus one compressor per thread, whatever the layer size: measured
 * peak RSS of kiln-pack-tool is ~25 MiB with 2 threads and ~56 MiB with 12
 * (the clamp); zstd stays near 33 MiB.  A larger ring does not help: with 12
 * or 24 slots instead of 7 the workers wait for input just as long (it is
 * the random data's stretch, bound by hashing and writing).  Directory
 * listings are held one directory level at a time, and the hardlink table
 * holds one path per multiply-linked inode.
 *
 * Wall-clock (bench/pack.sh: 528 MB tar of /usr files, 4,000 small files and
 * 150 MB of random data; 2 shared vCPUs): Kiln spends ~5.1 s of CPU where
 * `tar | pigz -6 -p2 | sha256sum` spends ~14.5 s.  Where it goes (perf):
 * libdeflate 64% (deflate and CRC-32), zlib's block walk 20%, SHA-256 8%,
 * kernel 5% (reads, writes), the histogram test 2.5%; the tar writer itself
 * (walk, libarchive, reads) ~3%.  Nothing serialises the compressible part:
 * the workers wait for input < 10% of the run, nearly all of it during the
 * random file (below), and < 1% on the /usr files alone; with the machine
 * otherwise quiet the threads use ~1.8-1.9 of the 2 cores; packing takes
 * 2.7-3.0 s, 2.6-2.9x faster than pigz in the same run.  When other work holds
 * a core, the scheduler leaves the process about one core and wall-clock
 * approaches the CPU time (4-6 s), so single runs compared with pigz range
 * from 1.4x to 2.9x; bench/pack.sh alternates the two and prints the median
 * and spread (2.76x median over 5 rounds, spread 1.66-2.90x, load average
 * 3-4.5).  On incompressible data the workers store blocks at memory speed and
 * the in-order hashing and writing set the pace: the DiffID is hashed on the
 * producer thread and the blob digest on the writer, so the two hashes run in
 * parallel (1 GiB of random data: 1.72 -> 1.46 s median, ~735 MB/s).
 *
 * Threads: psh_pack_dir() and psh_pack_tar_stream() run the producer on the
 * calling thread and start (and join) their own workers; calls on different
 * threads are independent.  A blob_fd that is a pipe or socket can raise
 * SIGPIPE: services ignore that signal. */
#ifndef PSH_PACK_H
#define PSH_PACK_H

#include <stdbool.h>
#include <stdint.h>

#include "digest.h"
#include "error.h"

#define PSH_MEDIA_TYPE_TAR      "application/vnd.oci.image.layer.v1.tar"
#define PSH_MEDIA_TYPE_TAR_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define PSH_MEDIA_TYPE_TAR_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"

#define PSH_PACK_GZIP_DEFAULT_LEVEL 5 /* libdeflate 0..12; 5 matches zlib -6 ratio */
#define PSH_PACK_ZSTD_DEFAULT_LEVEL 3
#define PSH_PACK_MAX_THREADS        12 /* more threads are clamped: bounds memory */
#define PSH_PACK_BLOCK_SIZE         ((size_t)1 << 20)

typedef enum psh_compression {
    PSH_COMP_GZIP = 0,
    PSH_COMP_ZSTD,
    PSH_COMP_NONE,
} psh_compression;

/* host ids [host, host + count) are container ids [container, ...) */
typedef struct psh_id_range {
    uint32_t container;
    uint32_t host;
    uint32_t count;
} psh_id_range;

typedef struct psh_pack_opts {
    psh_compression comp;
    int level;                 /* -1: codec default; gzip 0..12, zstd 1..19 */
    int threads;               /* 0: number of online CPUs; never changes the output */
    int64_t source_date_epoch; /* -1: none; else mtime = min(mtime, epoch) */
    bool overlay_diff;         /* translate overlay whiteouts and opaque dirs */
    /* Called on the calling thread about once per MiB of tar and once at the
     * end: in = tar bytes so far, out = blob bytes written so far. */
    void (*progress)(void *ud, uint64_t in, uint64_t out);
    void *progress_ud;
    /* Rootless diffs: files on disk carry host (sub)ids; when a map is given
     * (len > 0) every uid/gid is translated to the container id, and an id
     * outside the map is KILN_EINVAL.  Borrowed; part of the settings. */
    const psh_id_range *uid_map;
    size_t uid_map_len;
    const psh_id_range *gid_map;
    size_t gid_map_len;
} psh_pack_opts;

/* Defaults: gzip, default level, all CPUs, no epoch, not an overlay diff, ids
 * as stored. */
void psh_pack_opts_init(psh_pack_opts *o);

typedef struct psh_layer_info {
    char diff_id[KILN_DIGEST_STRLEN + 1]; /* sha256 of the uncompressed tar */
    char digest[KILN_DIGEST_STRLEN + 1];  /* sha256 of the blob as written */
    uint64_t size;                        /* blob (compressed) bytes */
    uint64_t tar_size;                    /* uncompressed tar bytes */
    const char *media_type;               /* static string, one of PSH_MEDIA_TYPE_* */
} psh_layer_info;

/* Packs the tree under dir into a layer blob written to blob_fd (borrowed:
 * written sequentially from its current offset, never seeked, closed or
 * synced — fsync and rename are the caller's).  On success fills *out.  On
 * failure *out is untouched and blob_fd holds garbage the caller discards.
 * Errors: KILN_ENOENT (dir missing), KILN_EPERM/KILN_EIO (unreadable entry,
 * write failure), KILN_ENOSPC (disk full), KILN_EINVAL (bad options, duplicate
 * archive path), KILN_ENOTSUP (metacopy/redirect overlay dirs). */
int psh_pack_dir(psh_layer_info *out, const char *dir, int blob_fd, const psh_pack_opts *opts,
                 kiln_error **err);

/* Streams an existing uncompressed tar read from tar_fd (borrowed, read to
 * EOF) through compression and both digests into blob_fd, for importing a
 * rootfs tarball.  The tar is not parsed: validating it is the caller's job.
 * Ignores source_date_epoch and overlay_diff. */
int psh_pack_tar_stream(psh_layer_info *out, int tar_fd, int blob_fd, const psh_pack_opts *opts,
                        kiln_error **err);

/* Media type for a compression setting. */
const char *psh_pack_media_type(psh_compression comp);

/* Writes into buf (NUL-terminated, truncated to len) a string naming every
 * setting that changes the packed bytes: format revision, codec and library
 * version, level, block size, epoch, overlay mode, id maps.  Never the
 * thread count. */
void psh_pack_settings_string(char *buf, size_t len, const psh_pack_opts *opts);

/* ---- Pack cache --------------------------------------------------------
 * Remembers (diff identity, settings) -> psh_layer_info so a diff committed or
 * pushed again is never packed again.  Identity is a caller-chosen key: the
 * builder's snapshot id of a completed step (diffs are immutable once the
 * step completes) or, for an imported directory, a key the caller derives.
 * The settings string (psh_pack_settings_string) is part of the key, so a new
 * level, codec version or epoch is a miss.  One small JSON file per entry,
 * named by sha256(key NUL settings), written temp + fsync + rename, so a
 * crash leaves either the old state or the new entry.  Whether the blob is
 * still in the store is for the caller to check (remove the entry if not). */
typedef struct psh_pack_cache psh_pack_cache;

/* Opens (creating it, mode 0700, if missing) the cache directory dir. */
int psh_pack_cache_open(psh_pack_cache **out, const char *dir, kiln_error **err);
void psh_pack_cache_free(psh_pack_cache *c);
/* 0 and *out filled on a hit; KILN_ENOENT on a miss (an unreadable or
 * inconsistent entry is also a miss); other codes on I/O errors. */
int psh_pack_cache_lookup(psh_pack_cache *c, psh_layer_info *out, const char *key,
                          const psh_pack_opts *opts, kiln_error **err);
/* Records info for (key, opts), replacing any previous entry. */
int psh_pack_cache_store(psh_pack_cache *c, const char *key, const psh_pack_opts *opts,
                         const psh_layer_info *info, kiln_error **err);
/* Forgets (key, opts); 0 also when there was no entry. */
int psh_pack_cache_remove(psh_pack_cache *c, const char *key, const psh_pack_opts *opts,
                          kiln_error **err);

#endif
