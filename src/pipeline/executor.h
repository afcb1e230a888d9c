/* SPDX-License-Identifier: MIT */
/*
 * executor.h - where the runner's steps run: the local thread pool
 * (exec-local.c) or a Slurm cluster (exec-slurm.c).
 *
 * The scheduler (runner.c, job_run()) keeps everything a run decides in
 * one place above every executor: the DAG order, up-to-date steps, skip
 * propagation, the failure policy, the observer and the state store's
 * hooks.  An executor only starts steps, says when a step started or
 * finished (and how: rs->ret, rs->ctx), and cancels.
 *
 * Two kinds:
 * - in order (ahead == false, the pool): the scheduler starts a step only
 *   once its dependencies succeeded, and at most `threads` at a time; the
 *   step counts as started when start() returns.
 * - ahead (the Slurm executor): the scheduler starts every step that is
 *   not up to date at once, in dependency order (each step after the
 *   steps it depends on), and the executor orders them itself (Slurm's
 *   afterok dependencies).  next() says EXEC_STARTED when a step really
 *   began, EXEC_FINISHED when it ended, and EXEC_NOT_STARTED for a step
 *   cancelled before it began (fail-fast or an interrupt).  A step whose
 *   dependency failed is given back with drop(): it never runs, and the
 *   executor says nothing more about it.
 *
 * A start() that fails (-DF_E_*, rs->ctx.err set) means the executor
 * itself is broken (Slurm's controller unreachable): that step fails, the
 * scheduler starts nothing more and cancels everything (EXEC_CANCEL_ALL),
 * whatever keep_going says.
 *
 * Ownership: job_run() makes and frees the local executor when run_opts
 * has none; an executor given in run_opts belongs to the caller, who
 * frees it after job_run() (job_run() calls finish() first).
 * Thread-safety: every call is for the scheduler's thread.
 */
#ifndef DF_PIPELINE_EXECUTOR_H
#define DF_PIPELINE_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>

#include "runner.h"

enum exec_event {
    EXEC_STARTED,     /* the step began running (ahead executors only) */
    EXEC_FINISHED,    /* the step ran: rs->ret, rs->ctx say how */
    EXEC_NOT_STARTED, /* cancelled before it began: it never ran */
};

enum exec_cancel {
    EXEC_CANCEL_UNSTARTED, /* fail-fast: what has not begun; running steps
                            * finish */
    EXEC_CANCEL_ALL,       /* an interrupt: running steps too */
};

struct executor;

struct executor_ops {
    const char *name;
    /* Start (ahead: hand over) step @rs.  0, or -DF_E_* with rs->ctx.err
     * set when the executor cannot take it. */
    int (*start)(struct executor *ex, struct run_step *rs);
    /* The next news about a started step, waiting at most @timeout_ms
     * (< 0: forever, 0: only what is known): the step, *@what set; NULL
     * when there is none yet. */
    struct run_step *(*next)(struct executor *ex, int timeout_ms,
                             enum exec_event *what);
    void (*cancel)(struct executor *ex, enum exec_cancel how);
    /* Ahead executors: @rs, started but not begun, will not run (a step
     * it depends on failed).  May be NULL for in-order executors. */
    void (*drop)(struct executor *ex, struct run_step *rs);
    /* Wait until nothing that was started still runs (Slurm: until none
     * of the run's jobs is queued).  No call but free() follows. */
    void (*finish)(struct executor *ex);
    void (*free)(struct executor *ex);
};

struct executor {
    const struct executor_ops *ops;
    bool ahead;
};

/* The thread pool, @threads workers, running @run's steps with its op
 * table and hooks.  NULL when the threads cannot start. */
struct executor *executor_local_new(struct run *run, unsigned threads);

/* What the Slurm executor (exec-slurm.c) needs; the strings are borrowed
 * and must outlive it. */
struct slurm_opts {
    const char *job_path;   /* the job file, absolute (on shared storage) */
    const char *job_name;   /* JOB in the Slurm job names diskforge:JOB:ID */
    const char *self;       /* the diskforge program, absolute */
    const char *job_sha256; /* hex: every step's --expect-job-sha256 */
    const char *version;    /* every step's --expect-version */
    const char *const *set; /* the run's --set NAME=VALUE, passed on */
    size_t n_set;
    bool untrusted;         /* run --untrusted: every step gets it too */
    const char *const *args; /* --slurm-arg: more sbatch arguments, each
                              * one word, after diskforge's own */
    size_t n_args;
    int poll_ms;            /* between squeue calls; 0: 1000 */
};

/*
 * executor_slurm_new() - each step a Slurm job (SPEC §7), submitted with
 * sbatch, watched with squeue (at most one call per poll_ms), its outcome
 * read from the step's result file.  NULL with @err set when @o is not
 * usable (a relative path).
 */
struct executor *executor_slurm_new(const struct slurm_opts *o,
                                    struct df_error *err);
/* How many times it ran squeue (the benchmark's figure). */
unsigned long executor_slurm_polls(const struct executor *ex);

/*
 * run_step_execute() - run step @rs here and now: the op table's before,
 * the op, after, then the hooks' after; sets rs->ret, ctx.err, the start
 * and finish times.  For executors that run steps in this process.
 */
void run_step_execute(struct run_step *rs);

#endif
