/* SPDX-License-Identifier: MIT */
/*
 * admit.h - space admission (SPEC §8 "Space before work"): before the
 * first step starts, estimate what each step will write, sum it per file
 * system and refuse a run that cannot fit.
 *
 * Thread-safety: for the thread that starts the run.
 */
#ifndef DF_PIPELINE_ADMIT_H
#define DF_PIPELINE_ADMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "runner.h"

/*
 * admit_estimate() - the worst-case new bytes step @i of @dag writes:
 * create/overlay as `measure` computes them (the whole size with falloc
 * or full preallocation), convert and copy at their source's allocated
 * size (a source another step makes: that step's estimate), write at its
 * file's length, fill at its length (zero fills: 0), resize with
 * preallocation at the growth, commit at the overlay's allocated size,
 * a safe rebase at the allocated size of the image's old backing chain
 * (the clusters it may have to copy in; at most the virtual size);
 * 0 for what only reads, edits in place without growing (check with
 * repair frees space), or runs a command: a command's declared outputs
 * say where it writes, not how much, and counting their current size
 * would refuse reruns of commands that rewrite a file in place (mke2fs
 * into an image), so a command is not estimated at all.  @est holds the
 * estimates of the steps before @i.
 */
uint64_t admit_estimate(const struct dag *dag, size_t i, const uint64_t *est);

/*
 * admit_check() - sum the estimates per file system (st_dev of each
 * output's nearest existing directory) and compare each sum with the
 * space free there (statvfs f_bavail).  Steps with @skip[i] true (up to
 * date: they write nothing) are left out; @skip may be NULL.  0 when
 * everything fits; else -DF_E_NOSPC with @err naming the mount point,
 * the bytes needed and the bytes free.
 */
int admit_check(const struct dag *dag, const bool *skip,
                struct df_error *err);

#endif
