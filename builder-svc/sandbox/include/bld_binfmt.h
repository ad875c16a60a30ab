/* Foreign platforms through binfmt_misc: which architectures this host can
 * run under QEMU user emulation, read from the kernel's binfmt_misc entries
 * (/proc/sys/fs/binfmt_misc/<name>: "enabled", "interpreter PATH", "flags:
 * PF", "offset 0", "magic 7f454c46…", "mask …").  An entry counts for RUN
 * when it is enabled and has the F (fix-binary) flag: the kernel then opened
 * the interpreter when the entry was registered, so it runs inside an image
 * that does not contain it.  The architecture is read from the ELF header in
 * the magic (class, byte order, e_machine), so entries named otherwise than
 * Debian's qemu-user-static + binfmt-support ("qemu-aarch64") count too.
 *
 * Pure parsing and formatting, no protobuf and no plan types: the engine
 * (RUN checks), the builder's Status and the unit tests use it alike. */
#ifndef BLD_BINFMT_H
#define BLD_BINFMT_H

#include <stdbool.h>
#include <stddef.h>

#define BLD_BINFMT_DIR "/proc/sys/fs/binfmt_misc"
#define BLD_BINFMT_MAX 64

typedef struct bld_binfmt_entry {
    char name[64];         /* the entry's file name: "qemu-aarch64" */
    char arch[16];         /* Go name of the architecture: "arm64" */
    char machine[16];      /* as QEMU and uname name it: "aarch64" */
    char interpreter[256]; /* "" when the entry has none */
    bool enabled;
    bool fix_binary; /* flags contain F */
} bld_binfmt_entry;

typedef struct bld_binfmt {
    char dir[256];
    bool mounted; /* dir holds binfmt_misc's "status" file */
    bool enabled; /* … and it says "enabled" */
    size_t n;     /* ELF entries of a known architecture, at most BLD_BINFMT_MAX */
    bld_binfmt_entry e[BLD_BINFMT_MAX];
} bld_binfmt;

/* Reads every entry of dir (NULL: $KILN_BINFMT_MISC when set, else
 * BLD_BINFMT_DIR).  Never fails: an unreadable or unmounted dir leaves
 * mounted false and no entries. */
void bld_binfmt_scan(bld_binfmt *out, const char *dir);

/* Parses the text of one entry file named name.  True when it is an ELF
 * handler of an architecture Kiln knows (then *out is filled). */
bool bld_binfmt_parse_entry(bld_binfmt_entry *out, const char *name, const char *text);

/* The name QEMU and uname use for a Go architecture ("arm64" -> "aarch64",
 * "amd64" -> "x86_64"); the argument itself when unknown. */
const char *bld_binfmt_machine(const char *arch);

/* The best entry for arch (enabled with F first, then enabled, then any);
 * NULL when there is none. */
const bld_binfmt_entry *bld_binfmt_find(const bld_binfmt *b, const char *arch);

/* Whether a RUN for platform (normalised "os/arch[/variant]") can run on a
 * host of platform host: 0 natively (same os and architecture), 1 under
 * emulation (*entry, may be NULL, set to the handler), -1 not at all: why
 * (cap bytes) then says what is missing, e.g. "RUN for linux/arm64 needs a
 * binfmt_misc handler for aarch64 with the F flag: install qemu-user-static
 * and binfmt-support". */
int bld_binfmt_check(const bld_binfmt *b, const char *host, const char *platform,
                     const bld_binfmt_entry **entry, char *why, size_t cap);

/* The platforms RUN can use: host first, then one per architecture with a
 * usable handler ("linux/arm64"; for arm both "linux/arm/v7" and
 * "linux/arm/v6"), in the order of a fixed list.  emulated[i] is true for all
 * but the host.  Returns how many were written (at most cap). */
size_t bld_binfmt_platforms(const bld_binfmt *b, const char *host, char (*out)[32], bool *emulated,
                            size_t cap);

/* "linux/amd64, linux/arm64 (emulated), …" into buf (snprintf contract). */
size_t bld_binfmt_platforms_text(const bld_binfmt *b, const char *host, char *buf, size_t cap);

/* One line about emulation for the sandbox check: the usable handlers, or
 * what is missing ("binfmt_misc is not mounted at …", "no binfmt_misc handler
 * with the F flag: install qemu-user-static and binfmt-support", entries
 * without F). */
void bld_binfmt_describe(const bld_binfmt *b, const char *host, char *buf, size_t cap);

#endif
