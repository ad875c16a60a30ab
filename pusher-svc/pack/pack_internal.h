/* Internal interfaces of psh_pack: the bounded compression pipeline
 * (pack_pipe.c) that the tar writer (pack_tar.c) and the tar importer feed. */
#ifndef PSH_PACK_INTERNAL_H
#define PSH_PACK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "psh_pack.h"

typedef struct pack_pipe pack_pipe;

/* Validates opts and starts the pipeline threads writing to blob_fd
 * (borrowed).  Free with pack_pipe_finish() or pack_pipe_abort(). */
int pack_pipe_new(pack_pipe **out, int blob_fd, const psh_pack_opts *opts, kiln_error **err);

/* Appends tar bytes.  Blocks while the bounded queue is full.  Fails with the
 * first error any pipeline thread met. */
int pack_pipe_write(pack_pipe *p, const void *data, size_t len, kiln_error **err);

/* Flushes the last block, waits for every thread, fills *out and frees p
 * (also on failure). */
int pack_pipe_finish(pack_pipe *p, psh_layer_info *out, kiln_error **err);

/* Stops every thread and frees p; the output is left incomplete. */
void pack_pipe_abort(pack_pipe *p);

/* Number of threads to use for opts->threads (0 = online CPUs), clamped. */
int pack_thread_count(int requested);

/* Codec level for opts (resolves -1) or KILN_EINVAL through err. */
int pack_resolve_level(const psh_pack_opts *opts, int *level, kiln_error **err);

#endif
