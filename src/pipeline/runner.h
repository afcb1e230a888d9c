/* SPDX-License-Identifier: MIT */
/*
 * runner.h - run the steps of a job in dependency order, on a thread pool
 * or another executor (executor.h: Slurm).
 *
 * The scheduler lives on the calling thread: it starts every step whose
 * dependencies all succeeded (lowest file position first) as long as
 * fewer than `threads` steps run, collects finished steps, and decides
 * what may start next.  An executor that orders steps itself (Slurm) gets
 * every step up front instead.  What a step does is looked up in a struct
 * op_table, so tests can run the scheduler with fake ops; the real table
 * (ops.c) calls the engine.
 *
 * Failure policy (SPEC §4 "Running"): after a failed step no new step
 * starts (running steps finish) unless keep_going; with keep_going every
 * step that does not depend on a failure still runs.  Dependents of a
 * failed or skipped step end `skipped`.  When should_stop() turns true
 * (SIGINT/SIGTERM), running steps are cancelled through their progress
 * callbacks, nothing new starts, and the run ends `interrupted`.
 *
 * Thread-safety: job_run() is for one thread; it calls the observer on
 * that thread, and op functions on worker threads.
 */
#ifndef DF_PIPELINE_RUNNER_H
#define DF_PIPELINE_RUNNER_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "dag.h"
#include "job.h"
#include "pool.h"

enum step_status {
    STEP_PENDING,
    STEP_RUNNING,
    STEP_SUCCEEDED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_UP_TO_DATE,
};

enum run_status { RUN_SUCCEEDED, RUN_FAILED, RUN_INTERRUPTED };

const char *step_status_name(enum step_status s);
const char *run_status_name(enum run_status s);

/*
 * Digests of one output that its op computed while writing it (see
 * op_set_digest()), in binary.  sha256: the SHA-256 of the file's bytes;
 * guest_sha256: of the bytes a guest reads from the image (its virtual
 * size, through its backing chain).
 */
struct op_digest {
    bool has_sha256, has_guest_sha256;
    unsigned char sha256[32];
    unsigned char guest_sha256[32];
};

/*
 * What an op function gets.  It runs on a worker thread, reads the step,
 * reports progress through op_progress() (which also says when to stop),
 * and on failure returns a negative -DF_E_* with @err set.  It may leave a
 * JSON object in @result (op-specific figures for the report) and entries
 * in @outputs; the runner owns both afterwards.  An op that hashed an
 * output while writing it hands the digests over with op_set_digest():
 * they land in @digests (one per node->outputs entry, same order; NULL
 * until the first call), the engine's table copies them onto the output's
 * report entry ("sha256", "guest_sha256", in hex), and the incremental
 * hooks then take that sha256 instead of reading the file again.
 */
struct op_ctx {
    const struct job *job;
    const struct job_step *step;
    const struct dag_node *node;
    struct df_error err;
    json_t *result;  /* object or NULL */
    json_t *outputs; /* array or NULL */
    _Atomic uint64_t done;  /* bytes (or units) done, for progress */
    _Atomic uint64_t total;
    const atomic_bool *cancel;
    struct op_digest *digests; /* per output, or NULL (op_set_digest()) */
};

/*
 * op_set_digest() - the op computed, while writing the output @path (one
 * of ctx->node->outputs), the SHA-256 of its file's bytes (@sha256) and/or
 * of its guest-visible bytes (@guest_sha256); each DF_SHA256_LEN bytes or
 * NULL (not computed).  Call it only once the file holds its final bytes
 * (after the rename).  Returns 0, or -1 (not an output, out of memory:
 * the digest is then computed after the step, as without it).
 */
int op_set_digest(struct op_ctx *ctx, const char *path,
                  const unsigned char *sha256,
                  const unsigned char *guest_sha256);

/* A df_progress_fn: records progress in ctx; non-zero once cancelled. */
int op_progress(void *ctx, uint64_t done, uint64_t total);
/* True once the run asked running steps to stop. */
bool op_cancelled(const struct op_ctx *ctx);

typedef int (*job_op_fn)(struct op_ctx *ctx);

struct op_table {
    job_op_fn run[JOB_OP_COUNT];
    /* optional: called on the worker before run[] (e.g. make parent
     * directories) and after it with its result (e.g. describe outputs) */
    int (*before)(struct op_ctx *ctx);
    void (*after)(struct op_ctx *ctx, int ret);
};

/* The engine's ops (ops.c). */
extern const struct op_table job_engine_ops;

struct run_step;

/*
 * Hooks for incremental runs (incremental.h gives the real ones).  All
 * optional.  skip() is asked once per step on the scheduler thread before
 * anything starts: true means the step is up to date and does not run (it
 * may fill the step's ctx.outputs and ctx.result with what was recorded);
 * either way it may set rs->reason.  after() runs on the worker right after
 * the op (and op_table.after), e.g. to hash the outputs.  finished() runs
 * on the scheduler thread when a step has succeeded or failed, before any
 * step that depends on it starts: the one place where a run's state is
 * written, so that writes are serialised.
 */
struct run_hooks {
    void *opaque;
    bool (*skip)(void *opaque, struct run_step *rs);
    void (*after)(void *opaque, struct run_step *rs);
    void (*finished)(void *opaque, struct run_step *rs);
};

/* --expect-reproducible: how a step's outputs compare with the last run. */
enum run_repro {
    RUN_REPRO_UNCHECKED, /* not asked: no "reproducible" in the report */
    RUN_REPRO_UNKNOWN,   /* nothing recorded to compare with: null */
    RUN_REPRO_SAME,      /* true */
    RUN_REPRO_DIFFERENT, /* false */
};

struct executor;

struct run_step {
    struct pool_item item; /* the pool's link; first member */
    struct run *run;
    size_t index;
    struct op_ctx ctx;
    enum step_status status;
    int ret;
    size_t pending;          /* dependencies that have not succeeded yet */
    int64_t started_ms;      /* wall clock, ms since the epoch; 0: never */
    int64_t finished_ms;
    int64_t duration_ms;     /* measured with the monotonic clock */
    char *skip_reason;       /* why a skipped step did not run */
    const char *reason;      /* why it runs, or "up-to-date" (borrowed from
                              * the hooks' owner); NULL without hooks */
    enum run_repro reproducible; /* set by the hooks' finished() */
    bool begun;              /* the observer was told it started */
    int64_t slurm_job_id;    /* the Slurm job that ran it; 0: none */
    /* the report's error code when it is not df_strerror(ctx.err.code):
     * a code only a step run elsewhere gives (EJOBCHANGED, EVERSION) or
     * the Slurm executor's ESLURM; "" otherwise */
    char err_code[24];
};

struct run_observer {
    void *opaque;
    void (*start)(void *opaque, const struct run *run, size_t step);
    void (*finish)(void *opaque, const struct run *run, size_t step);
    /* about every 100 ms while steps run */
    void (*tick)(void *opaque, const struct run *run);
};

struct run_opts {
    unsigned threads;         /* 0: the number of online CPUs */
    bool keep_going;
    const struct op_table *ops; /* NULL: job_engine_ops */
    const struct run_observer *observer; /* may be NULL */
    /* polled on the scheduler thread; true stops the run (may be NULL) */
    bool (*should_stop)(void *opaque);
    void *stop_opaque;
    const struct run_hooks *hooks; /* may be NULL: every step runs */
    /* where steps run (executor.h); NULL: the thread pool with `threads`
     * workers.  Yours: free it after job_run(). */
    struct executor *executor;
};

struct run {
    const struct job *job;
    const struct dag *dag;
    struct run_opts opts;
    unsigned threads;
    struct run_step *steps;
    enum run_status status;
    int64_t started_ms, finished_ms, duration_ms;
    size_t n_running, n_finished;
    atomic_bool cancel;
};

/*
 * job_run() - run @job along @dag.  Returns the finished run (free it with
 * run_free()), or NULL when the pool could not start (@err says why).
 * With opts->executor, that executor runs the steps.
 * Step failures are in the run, not in the return value.
 */
struct run *job_run(const struct job *job, const struct dag *dag,
                    const struct run_opts *opts, struct df_error *err);
void run_free(struct run *run);

/*
 * run_not_started() - a finished run in which no step started (refused
 * by space admission, interrupted before the first step): every step
 * `skipped` with @reason, the run's status @status, for the report.  Free
 * it with run_free().  NULL when out of memory.
 */
struct run *run_not_started(const struct job *job, const struct dag *dag,
                            enum run_status status, const char *reason);

/* Wall clock in milliseconds since the epoch. */
int64_t run_now_ms(void);

#endif
