/* kiln-registry-tool: drives the registry client on a store directly,
 * without the services (benchmarks and debugging; not installed).
 *
 *   kiln-registry-tool [FLAGS] import DATA DIR REF        rootfs dir → image
 *   kiln-registry-tool [FLAGS] commit DATA BASE DIR REF   one layer on BASE
 *   kiln-registry-tool [FLAGS] push DATA SRC [DEST]
 *   kiln-registry-tool [FLAGS] pull DATA REF
 * FLAGS: --tls-verify=false --creds U:P --cert-dir D --authfile F
 *        --chunk-size BYTES --platform P --format v2s2
 * Prints "<verb> <seconds> <peak RSS KiB> <digest>" on success. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "psh_commit.h"
#include "psh_registry.h"
#include "psh_transfer.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: kiln-registry-tool [--tls-verify=false] [--creds U:P] [--cert-dir D] "
                    "[--authfile F] [--chunk-size N] [--platform P] [--format v2s2] "
                    "import|commit|push|pull DATA ARGS...\n");
    return 2;
}

static int commit_layer(psh_store *s, const char *base, const char *dir, const char *ref,
                        psh_descriptor *out, kiln_error **err)
{
    psh_descriptor b;
    int r = psh_store_resolve(s, base, &b, err);
    if (r < 0)
        return r;
    psh_commit_spec spec;
    psh_commit_spec_init(&spec);
    spec.base = b.digest;
    spec.layers = &dir;
    spec.n_layers = 1;
    spec.tags = &ref;
    spec.n_tags = 1;
    spec.platform.os = "linux";
    spec.platform.architecture = "amd64";
    psh_commit_result res;
    if ((r = psh_commit(s, &spec, &res, err)) < 0)
        return r;
    *out = res.manifest;
    psh_commit_result_dispose(&res);
    return 0;
}

int main(int argc, char **argv)
{
    psh_registry_opts o;
    psh_registry_opts_init(&o);
    const char *platform = NULL;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--tls-verify=false") == 0)
            o.tls_verify = false;
        else if (strcmp(a, "--creds") == 0 && i + 1 < argc)
            o.creds = argv[++i];
        else if (strcmp(a, "--cert-dir") == 0 && i + 1 < argc)
            o.cert_dir = argv[++i];
        else if (strcmp(a, "--authfile") == 0 && i + 1 < argc)
            o.authfile = argv[++i];
        else if (strcmp(a, "--chunk-size") == 0 && i + 1 < argc)
            o.chunk_size = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--platform") == 0 && i + 1 < argc)
            platform = argv[++i];
        else if (strcmp(a, "--format") == 0 && i + 1 < argc && strcmp(argv[++i], "v2s2") == 0)
            o.format = PSH_FORMAT_V2S2;
        else
            return usage();
    }
    if (argc - i < 3)
        return usage();
    const char *verb = argv[i], *data = argv[i + 1];
    char **rest = argv + i + 2;
    int nrest = argc - i - 2;
    psh_store *s = NULL;
    kiln_error *err = NULL;
    if (psh_store_open(&s, data, &err) < 0) {
        fprintf(stderr, "kiln-registry-tool: %s\n", err->msg);
        return 1;
    }
    double t0 = now();
    psh_descriptor d = {0};
    int r;
    if (strcmp(verb, "import") == 0 && nrest == 2) {
        psh_import_opts io;
        psh_import_opts_init(&io);
        r = psh_store_import(s, rest[0], rest[1], &io, &d, &err);
    } else if (strcmp(verb, "commit") == 0 && nrest == 3) {
        r = commit_layer(s, rest[0], rest[1], rest[2], &d, &err);
    } else if (strcmp(verb, "push") == 0 && (nrest == 1 || nrest == 2)) {
        psh_push_result res;
        r = psh_push(s, rest[0], nrest == 2 ? rest[1] : NULL, &o, NULL, &res, &err);
        d = res.manifest;
    } else if (strcmp(verb, "pull") == 0 && nrest == 1) {
        psh_pull_result res;
        r = psh_pull(s, rest[0], platform, &o, NULL, &res, &err);
        d = res.manifest;
    } else {
        psh_store_free(s);
        return usage();
    }
    double dt = now() - t0;
    psh_store_free(s);
    if (r < 0) {
        fprintf(stderr, "kiln-registry-tool: %s\n", err->msg);
        kiln_error_free(&err);
        return 1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %.3f %ld %s\n", verb, dt, ru.ru_maxrss, d.digest);
    return 0;
}
