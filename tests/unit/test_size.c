/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of df_parse_size() and df_format_size(): sizes as qemu-img
 * reads and prints them.
 *
 * The expected strings of df_format_size() were taken from qemu-img 7.2
 * (`qemu-img info` of raw and qcow2 files of each size, "virtual size:"
 * line).  qemu switches to the next unit once the value reaches 1000 of the
 * current unit, so 1000 KiB prints as "0.977 MiB", while 999.5 KiB still
 * prints "1e+03 KiB" (printf's %0.3g).  Rows marked "derived" cannot be
 * observed through qemu-img (raw sizes are rounded up to 512 bytes) and
 * follow the same rule.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskforge/image.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)
#define PiB (UINT64_C(1) << 50)
#define EiB (UINT64_C(1) << 60)

/* ------------------------------------------------------------------------ */
/* df_parse_size: accepted input                                            */

static const struct {
    const char *in;
    uint64_t want;
} good_sizes[] = {
    { "0", 0 },
    { "1", 1 },
    { "512", 512 },
    { "65536", 65536 },
    { "1B", 1 },                    /* qemu-img: B is bytes */
    { "1b", 1 },
    { "1K", KiB },
    { "1k", KiB },
    { "64K", 64 * KiB },
    { "1M", MiB },
    { "1m", MiB },
    { "1G", GiB },
    { "1g", GiB },
    { "1T", TiB },
    { "1P", PiB },
    { "1E", EiB },
    { "7E", 7 * EiB },
    { "1.5G", GiB + GiB / 2 },      /* qemu-img: size=1610612736 */
    { "1.5k", 1536 },               /* qemu-img: size=1536 */
    { "0.5M", MiB / 2 },
    { "2.25K", 2304 },
    { "1.0", 1 },                   /* qemu-img accepts a zero fraction */
    { " 5", 5 },                    /* qemu-img skips leading blanks */
    { "1KiB", KiB },                /* documented diskforge extension */
    { "1KB", KiB },
    { "9223372036854775807", UINT64_C(9223372036854775807) }, /* INT64_MAX */
    { "0x10000", 64 * KiB },        /* hexadecimal, as qemu-img 7.2 */
    { "0X100000", MiB },
    { "0xffff", 65535 },
    { "0x100000B", 0x100000B },     /* B is a hex digit there (qemu too) */
    { "0x1E", 30 },                 /* and so is E */
    { "0x10K", 16 * KiB },          /* qemu-img 7.2: deprecated, accepted */
    { "0x7fffffffffffffff", UINT64_C(9223372036854775807) },
};

START_TEST(parse_good)
{
    struct df_error err = { 0 };
    uint64_t v = 12345;
    int rc = df_parse_size(good_sizes[_i].in, &v, &err);

    ck_assert_msg(rc == 0, "df_parse_size(\"%s\") = %d (%s)",
                  good_sizes[_i].in, rc, err.msg);
    ck_assert_msg(v == good_sizes[_i].want,
                  "df_parse_size(\"%s\") gave %llu, want %llu",
                  good_sizes[_i].in, (unsigned long long)v,
                  (unsigned long long)good_sizes[_i].want);
    ck_assert_int_eq(err.code, DF_OK);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* df_parse_size: refused input.  @needle must appear in the message (the   */
/* input itself where there is one, so the user sees what was wrong).       */

static const struct {
    const char *in;
    const char *needle;
} bad_sizes[] = {
    { "12Q", "12Q" },               /* unknown suffix */
    { "-5", "-5" },                 /* negative */
    { "-0", "-0" },
    { "", "" },                     /* empty */
    { "abc", "abc" },
    { "K", "K" },                   /* suffix without a number */
    { "1.5", "1.5" },               /* fraction needs a suffix (as qemu) */
    { "0.5", "0.5" },
    { ".5K", ".5K" },
    { "1K2", "1K2" },               /* trailing garbage */
    { "1 K", "1 K" },
    { "1e3", "1e3" },
    { "1X", "1X" },
    { "20E", "20E" },               /* > 2^64 */
    { "8E", "8E" },                 /* 2^63 > INT64_MAX, as qemu-img */
    { "16383P", "16383P" },
    { "9223372036854775808", "9223372036854775808" },
    { "18446744073709551616", "18446744073709551616" }, /* 2^64: ERANGE */
    { "99999999999999999999999", "99999999999999999999999" },
    { "17179869184G", "17179869184G" }, /* 2^64 exactly, via the shift */
    { "0x", "0x" },                 /* no hex digits */
    { "0xg", "0xg" },
    { "0x1.8M", "0x1.8M" },         /* no hex fractions (qemu-img) */
    { "0x8000000000000000", "0x8000000000000000" }, /* > INT64_MAX */
    { "0x10000000000000000", "0x10000000000000000" }, /* 2^64: ERANGE */
};

START_TEST(parse_bad)
{
    struct df_error err = { 0 };
    uint64_t v = 12345;
    const char *in = bad_sizes[_i].in;
    int rc = df_parse_size(in, &v, &err);

    ck_assert_msg(rc == -DF_E_INVAL, "df_parse_size(\"%s\") = %d, gave %llu;"
                  " want -DF_E_INVAL", in, rc, (unsigned long long)v);
    ck_assert_int_eq(err.code, DF_E_INVAL);
    ck_assert_msg(err.msg[0] != '\0', "no message for \"%s\"", in);
    ck_assert_msg(strstr(err.msg, bad_sizes[_i].needle) != NULL,
                  "message for \"%s\" does not quote it: %s", in, err.msg);
}
END_TEST

START_TEST(parse_null)
{
    struct df_error err = { 0 };
    uint64_t v = 0;

    ck_assert_int_eq(df_parse_size(NULL, &v, &err), -DF_E_INVAL);
    ck_assert_int_eq(err.code, DF_E_INVAL);
}
END_TEST

/* A NULL error pointer is allowed everywhere in the API. */
START_TEST(parse_null_err)
{
    uint64_t v = 0;

    ck_assert_int_eq(df_parse_size("12Q", &v, NULL), -DF_E_INVAL);
    ck_assert_int_eq(df_parse_size("3M", &v, NULL), 0);
    ck_assert_uint_eq(v, 3 * MiB);
}
END_TEST

/* Every suffix and its lower-case spelling scale by the same power. */
START_TEST(parse_suffix_powers)
{
    static const char letters[] = "KMGTPE";
    char buf[16];

    for (int i = 0; letters[i]; i++) {
        for (int lower = 0; lower < 2; lower++) {
            struct df_error err = { 0 };
            uint64_t v = 0;
            char c = lower ? (char)(letters[i] - 'A' + 'a') : letters[i];

            snprintf(buf, sizeof(buf), "3%c", c);
            ck_assert_msg(df_parse_size(buf, &v, &err) == 0, "%s: %s", buf,
                          err.msg);
            ck_assert_msg(v == UINT64_C(3) << (10 * (i + 1)),
                          "%s gave %llu", buf, (unsigned long long)v);
        }
    }
}
END_TEST

/* ------------------------------------------------------------------------ */
/* df_format_size: what qemu-img prints                                     */

static const struct {
    uint64_t v;
    const char *want;
} formatted[] = {
    { 0, "0 B" },
    { 1, "1 B" },                         /* derived */
    { 512, "512 B" },
    { 999, "999 B" },                     /* derived */
    { 1000, "0.977 KiB" },                /* derived */
    { 1023, "0.999 KiB" },                /* derived */
    { 1024, "1 KiB" },
    { 1536, "1.5 KiB" },
    { 10240, "10 KiB" },
    { 102400, "100 KiB" },
    { 200704, "196 KiB" },                /* a fresh 1 GiB qcow2 on disk */
    { 999 * KiB, "999 KiB" },
    { 999 * KiB + 512, "1e+03 KiB" },     /* qemu's own output */
    { 1000 * KiB, "0.977 MiB" },
    { 1023 * KiB, "0.999 MiB" },
    { 1023 * KiB + 512, "1 MiB" },
    { MiB, "1 MiB" },
    { MiB + MiB / 2, "1.5 MiB" },
    { 123457024, "118 MiB" },
    { 1000 * MiB, "0.977 GiB" },
    { 1023 * MiB, "0.999 GiB" },
    { GiB, "1 GiB" },
    { GiB + GiB / 2, "1.5 GiB" },
    { 2 * GiB, "2 GiB" },
    { TiB, "1 TiB" },
    { 1151051235328, "1.05 TiB" },
    { 999 * TiB, "999 TiB" },
    { 1000 * TiB, "0.977 PiB" },
    { 1023 * TiB, "0.999 PiB" },
    { PiB, "1 PiB" },
    { 1000 * PiB, "0.977 EiB" },
    { EiB, "1 EiB" },
    { EiB + EiB / 2, "1.5 EiB" },
    { 2 * EiB, "2 EiB" },
    { UINT64_C(9223372036854775807), "8 EiB" },   /* derived */
    { UINT64_MAX, "16 EiB" },                      /* derived */
};

START_TEST(format_like_qemu)
{
    char buf[64];

    memset(buf, 'x', sizeof(buf));
    df_format_size(formatted[_i].v, buf, sizeof(buf));
    ck_assert_msg(strcmp(buf, formatted[_i].want) == 0,
                  "df_format_size(%llu) = \"%s\", qemu-img prints \"%s\"",
                  (unsigned long long)formatted[_i].v, buf,
                  formatted[_i].want);
}
END_TEST

/* A short buffer gets a NUL-terminated prefix, never an overrun. */
START_TEST(format_short_buffer)
{
    char buf[8];

    memset(buf, 'x', sizeof(buf));
    df_format_size(GiB + GiB / 2, buf, 4);
    ck_assert_uint_lt(strlen(buf), 4);
    ck_assert_msg(strncmp(buf, "1.5", strlen(buf)) == 0, "got \"%s\"", buf);
    ck_assert_int_eq(buf[4], 'x');
}
END_TEST

/* Whatever df_format_size prints for a whole unit parses back. */
START_TEST(format_parse_round_trip)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
    static const char suffix[] = "KMGTP";

    for (int i = 0; i < 5; i++) {
        for (uint64_t n = 1; n < 1000; n = n * 3 + 1) {
            struct df_error err = { 0 };
            char want[32], buf[32], in[32];
            uint64_t v = n << (10 * (i + 1)), back = 0;

            snprintf(want, sizeof(want), "%llu %s", (unsigned long long)n,
                     units[i]);
            df_format_size(v, buf, sizeof(buf));
            ck_assert_str_eq(buf, want);
            snprintf(in, sizeof(in), "%llu%c", (unsigned long long)n,
                     suffix[i]);
            ck_assert_int_eq(df_parse_size(in, &back, &err), 0);
            ck_assert_uint_eq(back, v);
        }
    }
}
END_TEST

static Suite *size_suite(void)
{
    Suite *s = suite_create("size");
    TCase *tc = tcase_create("parse");

    tcase_add_loop_test(tc, parse_good, 0,
                        (int)(sizeof(good_sizes) / sizeof(good_sizes[0])));
    tcase_add_loop_test(tc, parse_bad, 0,
                        (int)(sizeof(bad_sizes) / sizeof(bad_sizes[0])));
    tcase_add_test(tc, parse_null);
    tcase_add_test(tc, parse_null_err);
    tcase_add_test(tc, parse_suffix_powers);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_loop_test(tc, format_like_qemu, 0,
                        (int)(sizeof(formatted) / sizeof(formatted[0])));
    tcase_add_test(tc, format_short_buffer);
    tcase_add_test(tc, format_parse_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(size_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
