/* Lexical cleaning of names inside layer tars (path.h). */
#include "path.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

int kiln_clean_layer_path(char *out, size_t out_size, const char *in, kiln_error **err)
{
    bool abs = *in == '/';
    size_t o = 0;
    for (const char *p = in; *p;) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (o == 0 && !abs)
                return kiln_error_set(err, KILN_EINVAL, 0, "path %s leaves the layer root", in);
            while (o > 0 && out[o - 1] != '/') /* drop the last component */
                o--;
            if (o > 0)
                o--;
        } else if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (n > NAME_MAX)
                return kiln_error_set(err, KILN_EINVAL, 0, "path component too long in %s", in);
            if (o + n + 2 > out_size)
                return kiln_error_set(err, KILN_EINVAL, 0, "path too long: %.64s...", in);
            if (o > 0)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
    }
    if (out_size > 0)
        out[o] = '\0';
    return 0;
}
