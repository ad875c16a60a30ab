/* A tar of an OCI image layout (what `kiln export` streams to the client and
 * `kiln import` streams to the pusher) unpacked into a directory: regular
 * files and directories only, each name cleaned and kept below the
 * directory, every file created here (O_EXCL|O_NOFOLLOW: no symlink or
 * earlier entry can redirect a write), and a bound on the entry count.  The
 * tar comes from the other side of an RPC, so it is untrusted either way. */
#ifndef KILN_LAYOUT_TAR_H
#define KILN_LAYOUT_TAR_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct kiln_layout_untar_opts {
    const char *what;   /* prefix of error messages: "export", "streamed OCI layout" */
    kiln_code code;     /* for a refused entry or a malformed tar */
    unsigned dir_mode;  /* of the directories created */
    unsigned file_mode; /* of the files created */
    bool fsync;         /* each file is fsync'd once written */
    size_t max_entries; /* more entries than this are refused */
} kiln_layout_untar_opts;

/* Unpacks the tar read from fd (from its start) into dir, which exists. */
int kiln_layout_untar(int fd, const char *dir, const kiln_layout_untar_opts *o, kiln_error **err);

#endif
