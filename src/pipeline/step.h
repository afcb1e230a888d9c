/* SPDX-License-Identifier: MIT */
/*
 * step.h - run one step of a job on its own (`diskforge step`, SPEC §7):
 * what a cluster job does on a compute node for the coordinator.
 *
 * step_run() runs exactly step @i with the local runner (job_run()), so
 * the step gets everything a step of `run` gets: atomic outputs, image
 * locks, cancellation through should_stop().  Its dependencies do not
 * run (the coordinator ran them, on this node or another); no state
 * store is read or written and no run lock is taken (the coordinator
 * holds them).  Every other step counts as up to date, so the one step's
 * report object (report_step()) is what `run` would have written for it,
 * but for its `reason`, which only the coordinator knows (null here).
 *
 * Ownership: the run is yours (run_free()).
 * Thread-safety: one thread, like job_run().
 */
#ifndef DF_PIPELINE_STEP_H
#define DF_PIPELINE_STEP_H

#include <stdbool.h>

#include "dag.h"
#include "job.h"
#include "runner.h"

/*
 * Run step @i of @job.  @should_stop (may be NULL) is polled as in
 * run_opts; once true, the step is cancelled (it fails with ECANCELED
 * and the run is RUN_INTERRUPTED).  NULL when the runner could not
 * start (@err says why).
 */
struct run *step_run(const struct job *job, const struct dag *dag, size_t i,
                     bool (*should_stop)(void *opaque), void *stop_opaque,
                     struct df_error *err);

/*
 * The SHA-256 of the file at @path (a job file that may no longer load)
 * as 64 lowercase hex digits into @hex.  0, or -DF_E_* with @err set.
 */
int step_file_sha256(const char *path, char hex[65], struct df_error *err);

#endif
