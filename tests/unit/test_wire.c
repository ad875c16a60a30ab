/* Envelope round trips, endpoint URL policy, small parsers. */
#include "kt.h"
#include "arena.h"
#include "config.h"
#include "units.h"
#include "events.h"
#include "follow.h"
#include "transport.h"
#include "kiln/kiln.pb-c.h"

KT_TEST(request_envelope_round_trips_every_body)
{
    Kiln__V1__StatusRequest st = KILN__V1__STATUS_REQUEST__INIT;
    Kiln__V1__HealthRequest he = KILN__V1__HEALTH_REQUEST__INIT;
    Kiln__V1__EventsRequest ev = KILN__V1__EVENTS_REQUEST__INIT;
    ev.job_id = "0123456789abcdef";
    ev.after_seq = 42;
    ev.max_events = 7;
    Kiln__V1__Request__BodyCase cases[] = {KILN__V1__REQUEST__BODY_STATUS,
                                           KILN__V1__REQUEST__BODY_HEALTH,
                                           KILN__V1__REQUEST__BODY_EVENTS};
    for (size_t i = 0; i < 3; i++) {
        Kiln__V1__Request r = KILN__V1__REQUEST__INIT;
        r.request_id = "rid-1";
        r.body_case = cases[i];
        if (i == 0)
            r.status = &st;
        else if (i == 1)
            r.health = &he;
        else
            r.events = &ev;
        uint8_t buf[256];
        size_t n = kiln__v1__request__pack(&r, buf);
        KT_EXPECT_INT(n, kiln__v1__request__get_packed_size(&r));
        Kiln__V1__Request *u = kiln__v1__request__unpack(NULL, n, buf);
        KT_REQUIRE(u != NULL);
        KT_EXPECT_STR(u->request_id, "rid-1");
        KT_EXPECT_INT(u->body_case, cases[i]);
        if (i == 2) {
            KT_EXPECT_STR(u->events->job_id, "0123456789abcdef");
            KT_EXPECT_INT(u->events->after_seq, 42);
            KT_EXPECT_INT(u->events->max_events, 7);
        }
        kiln__v1__request__free_unpacked(u, NULL);
    }
}

KT_TEST(reply_envelope_carries_status_and_body)
{
    Kiln__V1__Status s = KILN__V1__STATUS__INIT;
    s.code = KILN__V1__CODE__NOT_FOUND;
    s.message = "no job x";
    Kiln__V1__StatusReply sr = KILN__V1__STATUS_REPLY__INIT;
    sr.service = "kiln-pusher";
    sr.uptime_ms = 1ULL << 40;
    Kiln__V1__Reply r = KILN__V1__REPLY__INIT;
    r.request_id = "abc";
    r.status = &s;
    r.body_case = KILN__V1__REPLY__BODY_STATUS_REPLY;
    r.status_reply = &sr;
    uint8_t buf[256];
    size_t n = kiln__v1__reply__pack(&r, buf);
    Kiln__V1__Reply *u = kiln__v1__reply__unpack(NULL, n, buf);
    KT_REQUIRE(u != NULL);
    KT_EXPECT_INT(u->status->code, KILN__V1__CODE__NOT_FOUND);
    KT_EXPECT_INT(kiln_code_from_wire((int)u->status->code), KILN_ENOENT);
    KT_EXPECT_STR(u->status->message, "no job x");
    KT_EXPECT_STR(u->status_reply->service, "kiln-pusher");
    KT_EXPECT_INT(u->status_reply->uptime_ms, 1ULL << 40);
    kiln__v1__reply__free_unpacked(u, NULL);
}

KT_TEST(event_round_trips_through_a_pub_message)
{
    Kiln__V1__LogLine l = KILN__V1__LOG_LINE__INIT;
    l.stream = KILN__V1__LOG_LINE__STREAM__STDERR;
    l.text = "hello\tworld";
    Kiln__V1__Event e = KILN__V1__EVENT__INIT;
    e.job_id = "00ff";
    e.seq = 9;
    e.ts_unix_ms = 1700000000123;
    e.topic = "build.00ff";
    e.payload_case = KILN__V1__EVENT__PAYLOAD_LOG;
    e.log = &l;
    uint8_t buf[256];
    memcpy(buf, "build.00ff ", 11);
    size_t n = kiln__v1__event__pack(&e, buf + 11);
    Kiln__V1__Event *u = kiln_event_from_msg(buf, n + 11);
    KT_REQUIRE(u != NULL);
    KT_EXPECT_STR(u->job_id, "00ff");
    KT_EXPECT_INT(u->seq, 9);
    KT_EXPECT_INT(u->ts_unix_ms, 1700000000123);
    KT_EXPECT_INT(u->payload_case, KILN__V1__EVENT__PAYLOAD_LOG);
    KT_EXPECT_STR(u->log->text, "hello\tworld");
    KT_EXPECT(!kiln_event_is_terminal(u));
    kiln__v1__event__free_unpacked(u, NULL);
    KT_EXPECT(kiln_event_from_msg("no-space-here", 13) == NULL);
}

KT_TEST(endpoint_urls_and_loopback_detection)
{
    static const struct {
        const char *url;
        int ok;
        kiln_scheme scheme;
        bool loop;
    } cases[] = {
        {"ipc:///var/lib/kiln/run/pusher.sock", 1, KILN_SCHEME_IPC, true},
        {"tcp://127.0.0.1:7401", 1, KILN_SCHEME_TCP, true},
        {"tcp://127.1.2.3:7401", 1, KILN_SCHEME_TCP, true},
        {"tcp://localhost:1", 1, KILN_SCHEME_TCP, true},
        {"tcp://[::1]:7401", 1, KILN_SCHEME_TCP, true},
        {"tcp://0.0.0.0:7401", 1, KILN_SCHEME_TCP, false},
        {"tcp://10.0.0.1:7401", 1, KILN_SCHEME_TCP, false},
        {"tcp://127.0.0.1.evil.com:1", 1, KILN_SCHEME_TCP, false},
        {"tcp://*:7401", 1, KILN_SCHEME_TCP, false},
        {"tls+tcp://builder.example:7403", 1, KILN_SCHEME_TLS, false},
        {"tcp://127.0.0.1", 0, 0, 0},
        {"tcp://127.0.0.1:", 0, 0, 0},
        {"tcp://127.0.0.1:80x", 0, 0, 0},
        {"http://127.0.0.1:80", 0, 0, 0},
        {"ws://127.0.0.1:80", 0, 0, 0},
        {"ipc://", 0, 0, 0},
        {"", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kiln_error *err = NULL;
        kiln_scheme sc = KILN_SCHEME_IPC;
        bool loop = false;
        int r = kiln_url_check(cases[i].url, &sc, &loop, &err);
        if (cases[i].ok) {
            KT_EXPECT_INT(r, 0);
            KT_EXPECT_INT(sc, cases[i].scheme);
            KT_EXPECT_INT(loop, cases[i].loop);
        } else {
            KT_EXPECT_INT(r, KILN_EINVAL);
            KT_EXPECT(err != NULL && err->msg != NULL);
        }
        kiln_error_free(&err);
    }
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    memcpy(longpath, "ipc:///", 7);
    kiln_error *err = NULL;
    KT_EXPECT_INT(kiln_url_check(longpath, NULL, NULL, &err), KILN_EINVAL);
    kiln_error_free(&err);
}

KT_TEST(advertised_wildcard_hosts_become_the_dialled_host)
{
    static const char *const cases[][3] = {
        {"tls+tcp://0.0.0.0:7404", "tls+tcp://kiln.example:7403", "tls+tcp://kiln.example:7404"},
        {"tcp://[::]:7404", "tcp://10.1.2.3:7403", "tcp://10.1.2.3:7404"},
        {"tcp://*:7404", "tcp://[fd00::1]:7403", "tcp://[fd00::1]:7404"},
        {"tcp://127.0.0.1:7404", "tcp://kiln.example:7403", "tcp://127.0.0.1:7404"},
        {"ipc:///run/kiln/builder-events.sock", "ipc:///run/kiln/builder.sock",
         "ipc:///run/kiln/builder-events.sock"},
        {"tcp://0.0.0.0:7404", "ipc:///run/kiln/builder.sock", "tcp://0.0.0.0:7404"},
        {"tcp://0.0.0.0:7404", NULL, "tcp://0.0.0.0:7404"},
        {"garbage", "tcp://h:1", "garbage"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = kiln_url_for_dial(cases[i][0], cases[i][1]);
        KT_REQUIRE(got != NULL);
        KT_EXPECT_STR(got, cases[i][2]);
        free(got);
    }
}

KT_TEST(default_paths_follow_the_data_dir)
{
    char *u = kiln_default_url("/d", KILN_EP_PUSHER_EVENTS);
    KT_EXPECT_STR(u, "ipc:///d/run/pusher-events.sock");
    free(u);
    setenv("KILN_DATA", "/srv/kiln", 1);
    char *d = kiln_default_data_dir();
    KT_EXPECT_STR(d, "/srv/kiln");
    free(d);
    unsetenv("KILN_DATA");
}

KT_TEST(sizes_and_job_ids)
{
    KT_EXPECT_INT(kiln_parse_size("4M"), 4 << 20);
    KT_EXPECT_INT(kiln_parse_size("512k"), 512 << 10);
    KT_EXPECT_INT(kiln_parse_size("64Mi"), 64 << 20);
    KT_EXPECT_INT(kiln_parse_size("1GiB"), 1LL << 30);
    KT_EXPECT_INT(kiln_parse_size("1024"), 1024);
    KT_EXPECT_INT(kiln_parse_size("4X"), -1);
    KT_EXPECT_INT(kiln_parse_size(""), -1);
    KT_EXPECT_INT(kiln_parse_size("99999999999999999999G"), -1);
    /* Docker's RAMInBytes forms (RUN --mount=type=tmpfs,size=...). */
    KT_EXPECT_INT(kiln_parse_size("1.5g"), 3LL << 29);
    KT_EXPECT_INT(kiln_parse_size("64mb"), 64 << 20);
    KT_EXPECT_INT(kiln_parse_size("64MiB"), 64 << 20);
    KT_EXPECT_INT(kiln_parse_size("10b"), 10);
    KT_EXPECT_INT(kiln_parse_size("1t"), 1LL << 40);
    KT_EXPECT_INT(kiln_parse_size("-1"), -1);
    KT_EXPECT_INT(kiln_parse_size(" 4"), -1);
    KT_EXPECT_INT(kiln_parse_size("1."), -1);
    KT_EXPECT_INT(kiln_parse_size("8192p"), -1);
    KT_EXPECT(kiln_job_id_valid("0123456789abcdef"));
    KT_EXPECT(!kiln_job_id_valid("../x"));
    KT_EXPECT(!kiln_job_id_valid("ABC"));
    KT_EXPECT(!kiln_job_id_valid(""));
}

KT_TEST(arena_allocations_are_zeroed_and_aligned)
{
    kiln_arena *a = kiln_arena_new();
    KT_REQUIRE(a != NULL);
    for (int i = 1; i < 3000; i += 7) {
        unsigned char *p = kiln_arena_alloc(a, (size_t)i);
        KT_REQUIRE(p != NULL);
        KT_EXPECT(((uintptr_t)p % _Alignof(max_align_t)) == 0);
        KT_EXPECT(p[0] == 0 && p[i - 1] == 0);
        memset(p, 0xab, (size_t)i);
    }
    void *big = kiln_arena_alloc(a, 1 << 20);
    KT_EXPECT(big != NULL);
    KT_EXPECT_STR(kiln_arena_printf(a, "%s-%d", "x", 5), "x-5");
    KT_EXPECT(kiln_arena_calloc(a, SIZE_MAX / 2, 4) == NULL);
    kiln_arena_free(a);
}
