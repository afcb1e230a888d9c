/* SPDX-License-Identifier: MIT */
/*
 * events.h - `run --events FILE|-`: one JSON object per line as the run
 * goes (SPEC §6), for a CI system or a dashboard to follow:
 *
 *   run-start     job, path, steps (count), threads
 *   step-start    step, op, reason
 *   step-progress step, done, total (at most once a second per step)
 *   step-finish   step, op, status, reason, duration_ms, error
 *   run-finish    status, duration_ms, summary
 *
 * Every object has "event" and "time" (Unix seconds, a JSON number with
 * millisecond precision, never decreasing); every line is flushed.  An
 * up-to-date step gets one step-finish (status "up_to_date") and no
 * step-start.  docs/incremental.md describes each event.
 *
 * The events observer wraps another one (the progress output), which it
 * calls first.  Thread-safety: like every observer, the scheduler thread.
 */
#ifndef DF_PIPELINE_EVENTS_H
#define DF_PIPELINE_EVENTS_H

#include <stdbool.h>
#include <stdio.h>

#include "runner.h"

struct events {
    FILE *out;
    bool owned;                      /* opened here: closed here */
    double last_time;
    const struct run_observer *inner;
    struct run_observer ob;
    int64_t *last_progress;          /* per step, ms */
    size_t n;
};

/* Write to @path ("-": stdout), wrapping @inner (may be NULL). */
int events_open(struct events *ev, const char *path,
                const struct run_observer *inner, size_t n_steps,
                struct df_error *err);
/* The observer to give job_run(). */
const struct run_observer *events_observer(struct events *ev);
void events_run_start(struct events *ev, const struct job *job,
                      unsigned threads);
void events_run_finish(struct events *ev, const struct run *run);
void events_close(struct events *ev);

#endif
