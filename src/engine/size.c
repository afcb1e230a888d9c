/* SPDX-License-Identifier: MIT */
/* Sizes as qemu-img reads and prints them. */
#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diskforge/image.h"

static int suffix_shift(char c)
{
    switch (toupper((unsigned char)c)) {
    case 'B': return 0;
    case 'K': return 10;
    case 'M': return 20;
    case 'G': return 30;
    case 'T': return 40;
    case 'P': return 50;
    case 'E': return 60;
    }
    return -1;
}

int df_parse_size(const char *s, uint64_t *out, struct df_error *err)
{
    const char *p = s, *end;
    uint64_t whole;
    double frac = 0;
    int shift = 0;
    bool hex;

    if (!s || !*s) {
        return df_fail(err, DF_E_INVAL, "empty size");
    }
    while (isspace((unsigned char)*p)) {
        p++;
    }
    if (!isdigit((unsigned char)*p)) {
        return df_fail(err, DF_E_INVAL,
                       "invalid size '%s': expected a non-negative number "
                       "with an optional suffix K, M, G, T, P or E", s);
    }
    /* hexadecimal as qemu-img 7.2 takes it: "0x10000"; no fraction */
    hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X') &&
          isxdigit((unsigned char)p[2]);
    errno = 0;
    whole = strtoull(p, (char **)&end, hex ? 16 : 10);
    if (errno == ERANGE) {
        return df_fail(err, DF_E_INVAL, "size '%s' is too large", s);
    }
    if (hex && *end == '.') {
        goto bad;
    }
    if (*end == '.') {
        const char *f = end + 1;
        double scale = 0.1;
        if (!isdigit((unsigned char)*f)) {
            goto bad;
        }
        while (isdigit((unsigned char)*f)) {
            frac += (*f - '0') * scale;
            scale /= 10;
            f++;
        }
        end = f;
    }
    if (*end) {
        shift = suffix_shift(*end);
        if (shift < 0) {
            goto bad;
        }
        end++;
        /* accept "KiB", "KB", "Ki" spellings after the unit letter */
        if (shift && (*end == 'i' || *end == 'I')) {
            end++;
        }
        if (shift && (*end == 'B' || *end == 'b')) {
            end++;
        }
        if (*end) {
            goto bad;
        }
    }
    if (frac != 0 && shift == 0) {
        return df_fail(err, DF_E_INVAL,
                       "invalid size '%s': a fraction needs a unit suffix", s);
    }
    if (shift && whole > (UINT64_MAX >> shift)) {
        return df_fail(err, DF_E_INVAL, "size '%s' is too large", s);
    }
    {
        uint64_t v = whole << shift;
        uint64_t f = (uint64_t)(frac * (double)(1ULL << shift));
        if (v + f < v || v + f > (uint64_t)INT64_MAX) {
            return df_fail(err, DF_E_INVAL, "size '%s' is too large", s);
        }
        *out = v + f;
    }
    return 0;
bad:
    return df_fail(err, DF_E_INVAL,
                   "invalid size '%s': use a number (decimal, or hexadecimal "
                   "as 0x...) with an optional suffix K, M, G, T, P or E "
                   "(powers of 1024)", s);
}

void df_format_size(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB",
                                         "TiB", "PiB", "EiB" };
    int i = 0;

    /*
     * Like qemu-img: the largest power of 1024 in which the value is
     * at least 1, switching up already at 1000 ("0.977 MiB", never
     * "1e+03 KiB").
     */
    while (i < 6 && (double)v * 1.024 >= (double)(1ULL << (10 * (i + 1)))) {
        i++;
    }
    snprintf(buf, len, "%0.3g %s", (double)v / (double)(1ULL << (10 * i)),
             units[i]);
}
