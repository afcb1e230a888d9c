/* SPDX-License-Identifier: MIT */
/*
 * output.h - what the operations that write a new file share (convert,
 * copy): the scan that leaves all-zero granules unwritten so the output
 * stays sparse, the check that source and destination are different
 * files, and the fix-up that makes messages name the user's file rather
 * than the temporary one it is built under.
 */
#ifndef DF_ENGINE_OUTPUT_H
#define DF_ENGINE_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diskforge/error.h"

/* Writes @len bytes of @buf at offset @off of some output. */
typedef int (*df_write_fn)(void *opaque, const unsigned char *buf,
                           size_t len, uint64_t off, struct df_error *err);

/*
 * df_write_nonzero() - hand @write the parts of @buf (the @len bytes at
 * offset @off) that are not all-zero granules.  Granules sit at multiples
 * of @granule in the output, so the first and last one of @buf may be
 * partial; they are judged on the bytes @buf has of them.  That never
 * changes the content of an output that already reads as zeros where
 * nothing is written.  Adjacent non-zero granules go out in one call.
 * Returns 0, or the first error of @write.
 */
int df_write_nonzero(const unsigned char *buf, size_t len, uint64_t off,
                     uint64_t granule, df_write_fn write, void *opaque,
                     struct df_error *err);

/* df_same_file() - @a and @b exist and are one file (same inode). */
bool df_same_file(const char *a, const char *b);

/*
 * df_error_rename_file() - replace every @tmp in @err's message by @dst:
 * messages raised while writing a temporary output should name the file
 * the user knows.  @err may be NULL.
 */
void df_error_rename_file(struct df_error *err, const char *tmp,
                          const char *dst);

#endif
