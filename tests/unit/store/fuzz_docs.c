/* Fuzz target for the store's readers of image documents (configs, manifests,
 * indexes), which come from registries and imported layouts.
 *
 * Input: up to three documents separated by NUL bytes.  Each is stored as a
 * blob after "@1"/"@2" in it are replaced by the digests of the documents
 * before it, so the fuzzer can build manifests that point at configs and
 * indexes that point at manifests.  The last one is tagged, then listed,
 * inspected, used as a commit base, exported and garbage-collected.  Any
 * outcome is fine except a crash, a sanitizer report or a broken invariant. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psh_commit.h"
#include "psh_transfer.h"
#include "store_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DOCS_MAX 3

static psh_store *store;
static char *root;

/* text with every "@1".."@3" replaced by digests[0..2]; caller frees. */
static char *substitute(const char *text, size_t len, char digests[][KILN_DIGEST_STRLEN + 1], int n)
{
    char *out = malloc(len * KILN_DIGEST_STRLEN + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        int k = (text[i] == '@' && i + 1 < len) ? text[i + 1] - '1' : -1;
        if (k >= 0 && k < n) {
            memcpy(out + o, digests[k], KILN_DIGEST_STRLEN);
            o += KILN_DIGEST_STRLEN;
            i++;
        } else {
            out[o++] = text[i];
        }
    }
    out[o] = '\0';
    return out;
}

static void exercise(const char *digest)
{
    psh_descriptor d = {.size = 1};
    snprintf(d.media_type, sizeof(d.media_type), "%s", PSH_MT_OCI_MANIFEST);
    snprintf(d.digest, sizeof(d.digest), "%s", digest);
    if (psh_store_tag_descriptor(store, &d, "linux", "amd64", NULL, "fuzz:1", NULL) < 0)
        abort(); /* the blob exists and the tag is valid: tagging cannot fail */
    psh_image_list l;
    if (psh_store_list(store, &l, NULL) == 0)
        psh_image_list_dispose(&l);
    psh_inspect in;
    if (psh_store_inspect(store, "fuzz:1", &in, NULL) == 0)
        psh_inspect_dispose(&in);
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    spec.platform.os = "linux";
    spec.platform.architecture = "amd64";
    spec.base = digest;
    psh_commit_result res;
    if (psh_commit(store, &spec, &res, NULL) == 0)
        psh_commit_result_dispose(&res);
    char dest[4096];
    snprintf(dest, sizeof(dest), "%s/export.tar", root);
    psh_store_export(store, "fuzz:1", PSH_EXPORT_OCI_ARCHIVE, dest, NULL, NULL);
    psh_store_remove(store, "fuzz:1", NULL);
    psh_gc_result gr;
    if (psh_store_gc(store, NULL, &gr, NULL) < 0)
        abort();
    if (psh_store_has_blob(store, digest))
        abort(); /* untagged and unpinned: GC must have removed it */
}

static void cleanup(void)
{
    psh_store_free(store);
    kt_rmrf(root);
    free(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    if (store == NULL) {
        root = kt_tmpdir("store-test");
        if (root == NULL || psh_store_open(&store, root, NULL) < 0)
            abort();
        atexit(cleanup);
    }
    char digests[DOCS_MAX][KILN_DIGEST_STRLEN + 1];
    int n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (n < DOCS_MAX && p <= end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        size_t len = nul ? (size_t)(nul - p) : (size_t)(end - p);
        char *doc = substitute(p, len, digests, n);
        if (doc == NULL)
            return 0;
        int r = psh_store_put_blob_bytes(store, NULL, NULL, doc, strlen(doc), digests[n], NULL);
        free(doc);
        if (r < 0)
            abort();
        n++;
        if (nul == NULL)
            break;
        p = nul + 1;
    }
    if (n > 0)
        exercise(digests[n - 1]);
    return 0;
}
