/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "diskforge/error.h"

int df_error_set_at(struct df_error *err, const char *file, int line,
                    enum df_errc code, int sys_errno, const char *fmt, ...)
{
    int saved = errno;

    if (err && err->code == DF_OK) {
        va_list ap;
        size_t n;

        err->code = code;
        err->sys_errno = sys_errno;
        err->file = file;
        err->line = line;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        n = strlen(err->msg);
        if (sys_errno && n + 3 < sizeof(err->msg)) {
            char sbuf[128];
            /* GNU strerror_r returns the text, which may not be sbuf */
            const char *s = strerror_r(sys_errno, sbuf, sizeof(sbuf));
            snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", s);
        }
    }
    errno = saved;
    return -(int)code;
}

void df_error_prefix(struct df_error *err, const char *fmt, ...)
{
    char pre[256], old[sizeof(err->msg)];
    va_list ap;

    if (!err || err->code == DF_OK) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    {
        size_t np = strlen(pre), no = strlen(old);
        if (np >= sizeof(err->msg)) {
            np = sizeof(err->msg) - 1;
        }
        if (no > sizeof(err->msg) - 1 - np) {
            no = sizeof(err->msg) - 1 - np;
        }
        memcpy(err->msg, pre, np);
        memcpy(err->msg + np, old, no);
        err->msg[np + no] = '\0';
    }
}

void df_error_clear(struct df_error *err)
{
    if (err) {
        memset(err, 0, sizeof(*err));
    }
}

const char *df_strerror(enum df_errc code)
{
    switch (code) {
    case DF_OK: return "OK";
    case DF_E_NOMEM: return "ENOMEM";
    case DF_E_IO: return "EIO";
    case DF_E_INVAL: return "EINVAL";
    case DF_E_FORMAT: return "EFORMAT";
    case DF_E_CORRUPT: return "ECORRUPT";
    case DF_E_UNSUPPORTED: return "ENOTSUP";
    case DF_E_JOB: return "EJOB";
    case DF_E_CYCLE: return "ECYCLE";
    case DF_E_CANCELED: return "ECANCELED";
    case DF_E_NOENT: return "ENOENT";
    case DF_E_EXISTS: return "EEXIST";
    case DF_E_NOSPC: return "ENOSPC";
    case DF_E_BUSY: return "EBUSY";
    }
    return "EUNKNOWN";
}

enum df_errc df_errc_from_errno(int e)
{
    switch (e) {
    case ENOENT: case ENOTDIR: return DF_E_NOENT;
    case ENOMEM: return DF_E_NOMEM;
    case EEXIST: return DF_E_EXISTS;
    case ENOSPC: case EFBIG: case EDQUOT: return DF_E_NOSPC;
    case EINVAL: return DF_E_INVAL;
    case ENOTSUP: return DF_E_UNSUPPORTED;
    case ECANCELED: return DF_E_CANCELED;
    default: return DF_E_IO;
    }
}
