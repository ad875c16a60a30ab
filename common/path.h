/* Names of entries in layer tars, taken as Docker and containerd take them.
 * One home for the rule, used where layers are unpacked (the builder's
 * sandbox) and where tars become layers (the pusher's import). */
#ifndef KILN_PATH_H
#define KILN_PATH_H

#include <stddef.h>

#include "error.h"

/* Normalises the name of a layer entry (or a hard link's target) as Docker
 * and containerd do: taken relative to the layer root and cleaned lexically,
 * so "/", "./" and "/etc/passwd" are the root, the root and "etc/passwd";
 * "a/../b" is "b", and ".." at the root of an absolute name stays there
 * ("/../../etc" is "etc").  A relative name that climbs above the root
 * ("../x", "a/../../x") fails with KILN_EINVAL, as does an over-long one.
 * The result is "" for the root itself. */
int kiln_clean_layer_path(char *out, size_t out_size, const char *in, kiln_error **err);

#endif
