/* SPDX-License-Identifier: MIT */
/*
 * progress.h - what `diskforge run` prints while a job runs.
 *
 * On a terminal: one line per running step with its progress (bytes done
 * of total for long ops), redrawn about ten times a second, and one
 * permanent line per finished step above them.  Otherwise: a plain line
 * when a step starts and one when it finishes, for logs.
 *
 * Thread-safety: the observer runs on the scheduler's thread only.
 */
#ifndef DF_PIPELINE_PROGRESS_H
#define DF_PIPELINE_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

#include "runner.h"

struct progress {
    FILE *out;
    bool tty;
    size_t drawn;      /* lines of the running block on screen */
    size_t started;
    int64_t last_draw; /* ms */
};

/* Fill @p and @ob for output on @out (a terminal or not: @tty). */
void progress_init(struct progress *p, struct run_observer *ob, FILE *out,
                   bool tty);
/* Remove the running block (call before printing the summary). */
void progress_end(struct progress *p);

#endif
