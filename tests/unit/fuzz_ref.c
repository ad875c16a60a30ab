/* Fuzz target for the reference parser: any input either fails with an error
 * message or parses to a reference whose familiar and canonical spellings
 * both parse back to the same reference. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[2048];
    if (size >= sizeof(in))
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    static const unsigned flags[] = {0, KILN_REF_DEFAULT_TAG, KILN_REF_NO_DIGEST};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        kiln_ref r, back;
        kiln_error *err = NULL;
        if (kiln_ref_parse(&r, in, flags[i], &err) < 0) {
            if (err == NULL || err->msg == NULL || r.path[0] != '\0')
                abort();
            kiln_error_free(&err);
            continue;
        }
        char fam[KILN_REF_STRMAX], can[KILN_REF_STRMAX];
        if (kiln_ref_familiar(&r, fam, sizeof(fam)) >= sizeof(fam) ||
            kiln_ref_canonical(&r, can, sizeof(can)) >= sizeof(can))
            abort();
        if (strlen(r.domain) + 1 + strlen(r.path) > KILN_REF_NAME_MAX)
            abort();
        if (kiln_ref_parse(&back, fam, flags[i], NULL) < 0 || !kiln_ref_equal(&r, &back))
            abort();
        if (kiln_ref_parse(&back, can, flags[i], NULL) < 0 || !kiln_ref_equal(&r, &back))
            abort();
    }
    return 0;
}
