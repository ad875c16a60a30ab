/* Fuzz target for everything Kiln parses off the wire or off its own event
 * logs: Request/Reply envelopes, PUB messages, event log files, endpoint URLs
 * and size strings.  Must never crash, hang or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arena.h"
#include "units.h"
#include "follow.h"
#include "transport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kiln_req *req = kiln__v1__request__unpack(NULL, size, data);
    if (req)
        kiln__v1__request__free_unpacked(req, NULL);
    kiln_reply *rep = kiln__v1__reply__unpack(NULL, size, data);
    if (rep)
        kiln__v1__reply__free_unpacked(rep, NULL);
    kiln_event *e = kiln_event_from_msg(data, size);
    if (e)
        kiln__v1__event__free_unpacked(e, NULL);

    /* Strings: NUL-terminated copies, bounded. */
    size_t n = size < 512 ? size : 512;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, data, n);
        s[n] = '\0';
        kiln_error *err = NULL;
        kiln_scheme sc;
        bool loop;
        kiln_url_check(s, &sc, &loop, &err);
        kiln_error_free(&err);
        (void)kiln_parse_size(s);
        (void)kiln_job_id_valid(s);
        free(s);
    }

    /* The bytes as an event log file. */
    int fd = memfd_create("kiln-fuzz-log", MFD_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, data, size) == (ssize_t)size) {
            for (uint64_t after = 0; after < 3; after += 2) {
                kiln_arena *a = kiln_arena_new();
                Kiln__V1__EventsReply r = KILN__V1__EVENTS_REPLY__INIT;
                kiln_error *err = NULL;
                kiln_events_log_read(fd, "fuzz", after, 3, &r, a, &err);
                kiln_error_free(&err);
                kiln_arena_free(a);
            }
        }
        close(fd);
    }
    return 0;
}
