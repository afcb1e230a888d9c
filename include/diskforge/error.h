/* SPDX-License-Identifier: MIT */
/*
 * diskforge/error.h - how every libdiskforge call reports failure.
 *
 * Actions return 0 on success or a negative -DF_E_* code, and fill a
 * caller-owned struct df_error with a message naming the file and the
 * problem.  The struct needs no allocation, so it can be copied by value
 * into a job result and it works on the out-of-memory path.
 *
 * Thread-safety: any thread; a struct df_error belongs to one caller.
 */
#ifndef DISKFORGE_ERROR_H
#define DISKFORGE_ERROR_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DF_API __attribute__((visibility("default")))
#define DF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DF_API
#define DF_PRINTF(a, b)
#endif

/* Values are never renumbered. */
enum df_errc {
    DF_OK = 0,
    DF_E_NOMEM = 1,       /* out of memory */
    DF_E_IO = 2,          /* the operating system refused a read or write */
    DF_E_INVAL = 3,       /* a bad argument or option */
    DF_E_FORMAT = 4,      /* not an image of the expected format */
    DF_E_CORRUPT = 5,     /* the image's metadata is inconsistent */
    DF_E_UNSUPPORTED = 6, /* a valid feature this engine does not handle */
    DF_E_JOB = 7,         /* an invalid job file */
    DF_E_CYCLE = 8,       /* a dependency cycle */
    DF_E_CANCELED = 9,    /* stopped on request */
    DF_E_NOENT = 10,      /* a file that does not exist */
    DF_E_EXISTS = 11,     /* a file that should not exist */
    DF_E_NOSPC = 12,      /* no space left, or a format limit reached */
    DF_E_BUSY = 13,       /* the image is in use by another process (its
                           * QEMU-compatible locks say so) */
};

struct df_error {
    enum df_errc code; /* DF_OK when nothing was recorded */
    int sys_errno;     /* errno at the failure, 0 if none */
    const char *file;  /* __FILE__ of the raising call */
    int line;          /* __LINE__ of the raising call */
    char msg[512];     /* "'a.qcow2': L2 table offset 0x51200 is not aligned" */
};

/**
 * df_error_set_at() - record an error in @err (which may be NULL).
 * The first error recorded wins; later calls keep it and only return.
 * When @sys_errno is non-zero its text is appended after ": ".
 * errno is preserved.  Returns -@code, so that
 * `return df_fail(err, DF_E_CORRUPT, "...")` reads naturally.
 */
DF_API int df_error_set_at(struct df_error *err, const char *file, int line,
                           enum df_errc code, int sys_errno, const char *fmt,
                           ...) DF_PRINTF(6, 7);

#define df_fail(err, code, ...)                                                \
    df_error_set_at((err), __FILE__, __LINE__, (code), 0, __VA_ARGS__)
#define df_fail_errno(err, code, ...)                                          \
    df_error_set_at((err), __FILE__, __LINE__, (code), errno, __VA_ARGS__)

/* Like df_fail_errno(), choosing the code from errno (ENOENT, ENOSPC...). */
#define df_fail_sys(err, ...)                                                  \
    df_error_set_at((err), __FILE__, __LINE__, df_errc_from_errno(errno),     \
                    errno, __VA_ARGS__)

/** df_error_prefix() - put context in front of an existing message. */
DF_API void df_error_prefix(struct df_error *err, const char *fmt, ...)
    DF_PRINTF(2, 3);

/** df_error_clear() - forget any recorded error. */
DF_API void df_error_clear(struct df_error *err);

/** df_strerror() - a static name for @code ("ENOENT"-like), never NULL. */
DF_API const char *df_strerror(enum df_errc code);

/** df_errc_from_errno() - the df_errc closest to an errno value. */
DF_API enum df_errc df_errc_from_errno(int e);

#ifdef __cplusplus
}
#endif
#endif
