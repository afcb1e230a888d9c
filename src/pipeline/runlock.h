/* SPDX-License-Identifier: MIT */
/*
 * runlock.h - what keeps runs of one job from hurting each other (SPEC §8):
 * the per-job run lock, and the removal of temporaries that killed runs
 * left behind.
 *
 * Thread-safety: for the thread that starts the run.
 */
#ifndef DF_PIPELINE_RUNLOCK_H
#define DF_PIPELINE_RUNLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "dag.h"
#include "diskforge/error.h"

struct runlock;

/*
 * runlock_take() - take the run lock of the job file @job_path, known by
 * its real path: an open file description lock on
 * `.diskforge/NAME.lock` in the job file's real directory (NAME: the job
 * file's name), which records the holder's PID.  A second run of the same
 * job gets NULL and -DF_E_BUSY in @err, naming the first run's PID.  The
 * lock goes when the process ends, however it ends.
 */
struct runlock *runlock_take(const char *job_path, struct df_error *err);

/* runlock_release() - let the next run in; NULL is accepted. */
void runlock_release(struct runlock *l);

struct stale_temps {
    size_t removed;  /* temporaries removed */
    uint64_t bytes;  /* the disk space they held (allocated bytes) */
    size_t kept;     /* temporaries of the outputs still in use */
};

/*
 * runlock_clean_temps() - remove the temporaries of the files the steps of
 * @dag write (and of @extra, e.g. the report, may be NULL): the
 * `.NAME.df-PID-N.tmp` files beside each output that no live process
 * holds.  A temporary is in use, and kept, while any process holds one of
 * QEMU's lock bytes on it (a live run locks every temporary it writes) or
 * while the process of PID is alive.  Never fails: what cannot be removed
 * is left (and counted in @st->kept).
 */
void runlock_clean_temps(const struct dag *dag, const char *extra,
                         struct stale_temps *st);

#endif
