/* SPDX-License-Identifier: MIT */
/*
 * output.c - helpers for the operations that write a new file (output.h).
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "output.h"

int df_write_nonzero(const unsigned char *buf, size_t len, uint64_t off,
                     uint64_t granule, df_write_fn write, void *opaque,
                     struct df_error *err)
{
    uint64_t end = off + len, pos = off, run = off;

    while (pos < end) {
        uint64_t next = DF_MIN(end, (pos / granule + 1) * granule);
        if (df_is_zero(buf + (pos - off), (size_t)(next - pos))) {
            if (run < pos) {
                int ret = write(opaque, buf + (run - off),
                                (size_t)(pos - run), run, err);
                if (ret < 0) {
                    return ret;
                }
            }
            run = next;
        }
        pos = next;
    }
    return run < end ? write(opaque, buf + (run - off), (size_t)(end - run),
                             run, err)
                     : 0;
}

bool df_same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void df_error_rename_file(struct df_error *err, const char *tmp,
                          const char *dst)
{
    char out[sizeof(err->msg)];
    const char *p, *hit;
    size_t used = 0, tlen = strlen(tmp);

    if (!err || !strstr(err->msg, tmp)) {
        return;
    }
    for (p = err->msg; (hit = strstr(p, tmp)) != NULL; p = hit + tlen) {
        used += (size_t)snprintf(out + used, sizeof(out) - used, "%.*s%s",
                                 (int)(hit - p), p, dst);
        if (used >= sizeof(out)) {
            break;
        }
    }
    if (used < sizeof(out)) {
        snprintf(out + used, sizeof(out) - used, "%s", p);
    }
    memcpy(err->msg, out, sizeof(out));
}
