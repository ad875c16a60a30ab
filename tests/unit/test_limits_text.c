/* Durations and sizes as the limit flags take them and the limit errors
 * print them (kiln_parse_duration_ms, kiln_format_duration,
 * kiln_format_size), table-driven, with bad input; layer sizes as every
 * output shows them (kiln_format_layer_size). */
#include "kt.h"
#include "units.h"

#include <string.h>

KT_TEST(durations_parse)
{
    static const struct {
        const char *in;
        long long ms;
    } cases[] = {
        {"90", 90000},
        {"90s", 90000},
        {"10m", 600000},
        {"1h", 3600000},
        {"1h30m", 5400000},
        {"2m30s", 150000},
        {"500ms", 500},
        {"1s500ms", 1500},
        {"0", 0},
        {"", -1},
        {"m", -1},
        {"10x", -1},
        {"-5s", -1},
        {"1.5h", -1},
        {"10m ", -1},
        {"5s10", -1},
        {"99999999999999999999h", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long long got = kiln_parse_duration_ms(cases[i].in);
        if (got != cases[i].ms)
            fprintf(stderr, "  '%s': %lld, want %lld\n", cases[i].in, got, cases[i].ms);
        KT_EXPECT(got == cases[i].ms);
    }
    KT_EXPECT(kiln_parse_duration_ms(NULL) == -1);
}

KT_TEST(durations_and_sizes_print)
{
    char b[48];
    kiln_format_duration(b, sizeof(b), 600000);
    KT_EXPECT_STR(b, "10m");
    kiln_format_duration(b, sizeof(b), 5400000);
    KT_EXPECT_STR(b, "1h30m");
    kiln_format_duration(b, sizeof(b), 3661000);
    KT_EXPECT_STR(b, "1h1m1s");
    kiln_format_duration(b, sizeof(b), 2000);
    KT_EXPECT_STR(b, "2s");
    kiln_format_duration(b, sizeof(b), 1500);
    KT_EXPECT_STR(b, "1500ms");
    kiln_format_size(b, sizeof(b), 2ULL << 30);
    KT_EXPECT_STR(b, "2 GiB");
    kiln_format_size(b, sizeof(b), 512ULL << 20);
    KT_EXPECT_STR(b, "512 MiB");
    kiln_format_size(b, sizeof(b), 3ULL << 29);
    KT_EXPECT_STR(b, "1.5 GiB");
    kiln_format_size(b, sizeof(b), 1000);
    KT_EXPECT_STR(b, "1000 bytes");
    /* what the flags parse is what the errors print */
    kiln_format_size(b, sizeof(b), (unsigned long long)kiln_parse_size("64M"));
    KT_EXPECT_STR(b, "64 MiB");
    kiln_format_duration(b, sizeof(b), (unsigned long long)kiln_parse_duration_ms("1h30m"));
    KT_EXPECT_STR(b, "1h30m");
}

KT_TEST(layer_sizes_print)
{
    char b[KILN_LAYER_SIZE_STRLEN];
    kiln_format_layer_size(b, sizeof(b), 12300000, 40100000);
    KT_EXPECT_STR(b, "12.3 MB compressed / 40.1 MB");
    kiln_format_layer_size(b, sizeof(b), 0, 2000000);
    KT_EXPECT_STR(b, "? compressed / 2.0 MB");
    kiln_format_layer_size(b, sizeof(b), 1500, 0);
    KT_EXPECT_STR(b, "1.5 kB compressed / ?");
    kiln_format_layer_size(b, sizeof(b), 999, 1000);
    KT_EXPECT_STR(b, "999 B compressed / 1.0 kB");
    kiln_format_layer_size(b, sizeof(b), 18446744073709551615ULL, 18446744073709551615ULL);
    KT_EXPECT(strlen(b) < sizeof(b) - 1);
    kiln_format_bytes(b, sizeof(b), 0);
    KT_EXPECT_STR(b, "0 B");
}
