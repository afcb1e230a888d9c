/* SPDX-License-Identifier: MIT */
/*
 * runner.c - the scheduler: a ready queue over the DAG feeding an
 * executor (executor.h: the pool, or Slurm).
 *
 * All scheduling state (statuses, pending counts, the ready heap) belongs
 * to the thread in job_run(); the pool's workers only touch their own
 * struct run_step, and hand it back through the pool's queue, whose lock
 * orders their writes before the scheduler's reads.  The one value shared
 * while steps run is run->cancel, an atomic that op_progress() reads.
 */
#include "runner.h"

#include "executor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *step_status_name(enum step_status s)
{
    switch (s) {
    case STEP_PENDING: return "pending";
    case STEP_RUNNING: return "running";
    case STEP_SUCCEEDED: return "succeeded";
    case STEP_FAILED: return "failed";
    case STEP_SKIPPED: return "skipped";
    case STEP_UP_TO_DATE: return "up_to_date";
    }
    return "?";
}

const char *run_status_name(enum run_status s)
{
    switch (s) {
    case RUN_SUCCEEDED: return "succeeded";
    case RUN_FAILED: return "failed";
    case RUN_INTERRUPTED: return "interrupted";
    }
    return "?";
}

int64_t run_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int op_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct op_ctx *ctx = opaque;

    atomic_store_explicit(&ctx->total, total, memory_order_relaxed);
    atomic_store_explicit(&ctx->done, done, memory_order_relaxed);
    return op_cancelled(ctx);
}

bool op_cancelled(const struct op_ctx *ctx)
{
    return ctx->cancel && atomic_load(ctx->cancel);
}

int op_set_digest(struct op_ctx *ctx, const char *path,
                  const unsigned char *sha256,
                  const unsigned char *guest_sha256)
{
    const struct dag_paths *out = &ctx->node->outputs;

    for (size_t k = 0; k < out->n; k++) {
        struct op_digest *d;
        if (strcmp(out->v[k], path) != 0) {
            continue;
        }
        if (!ctx->digests && !(ctx->digests = calloc(out->n,
                                                     sizeof(*d)))) {
            return -1;
        }
        d = &ctx->digests[k];
        if (sha256) {
            memcpy(d->sha256, sha256, sizeof(d->sha256));
            d->has_sha256 = true;
        }
        if (guest_sha256) {
            memcpy(d->guest_sha256, guest_sha256, sizeof(d->guest_sha256));
            d->has_guest_sha256 = true;
        }
        return 0;
    }
    return -1;
}

/* ---- the ready queue: a min-heap of step indices (file order) ---- */

struct heap {
    size_t *v;
    size_t n;
};

static void heap_push(struct heap *h, size_t x)
{
    size_t i = h->n++;

    while (i > 0 && h->v[(i - 1) / 2] > x) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = x;
}

static size_t heap_pop(struct heap *h)
{
    size_t top = h->v[0], last = h->v[--h->n], i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && h->v[c + 1] < h->v[c]) {
            c++;
        }
        if (h->v[c] >= last) {
            break;
        }
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) {
        h->v[i] = last;
    }
    return top;
}

/* ---- running one step (an executor's worker) ---- */

void run_step_execute(struct run_step *rs)
{
    const struct op_table *ops = rs->run->opts.ops;
    job_op_fn fn = ops->run[rs->ctx.step->op];
    int64_t t0 = mono_ms();
    int ret = 0;

    rs->started_ms = run_now_ms();
    if (op_cancelled(&rs->ctx)) {
        ret = df_fail(&rs->ctx.err, DF_E_CANCELED, "interrupted before it "
                      "started");
    }
    if (ret == 0 && ops->before) {
        ret = ops->before(&rs->ctx);
    }
    if (ret == 0) {
        ret = fn ? fn(&rs->ctx)
                 : df_fail(&rs->ctx.err, DF_E_UNSUPPORTED, "op '%s' has no "
                           "implementation", job_op_name(rs->ctx.step->op));
    }
    if (ret < 0 && rs->ctx.err.code == DF_OK) {
        df_fail(&rs->ctx.err, (enum df_errc)-ret, "op '%s' failed",
                job_op_name(rs->ctx.step->op));
    }
    if (ops->after) {
        ops->after(&rs->ctx, ret);
    }
    rs->ret = ret;
    if (rs->run->opts.hooks && rs->run->opts.hooks->after) {
        rs->run->opts.hooks->after(rs->run->opts.hooks->opaque, rs);
    }
    rs->finished_ms = run_now_ms();
    rs->duration_ms = mono_ms() - t0;
}

/* ---- the scheduler (caller's thread) ---- */

struct sched {
    struct run *run;
    struct executor *ex;
    struct heap ready;          /* in-order executors: steps free to start */
    bool stop_starting;
    bool cancelled_unstarted;   /* ahead executors: fail-fast was asked */
    size_t first_failure;
};

static const char *id_of(const struct run *run, size_t i)
{
    return run->job->steps[i].id ? run->job->steps[i].id : "?";
}

static void observe_finish(struct run *run, size_t i)
{
    if (run->opts.observer && run->opts.observer->finish) {
        run->opts.observer->finish(run->opts.observer->opaque, run, i);
    }
}

static void observe_start(struct run *run, struct run_step *rs)
{
    if (rs->begun) {
        return;
    }
    rs->begun = true;
    if (run->opts.observer && run->opts.observer->start) {
        run->opts.observer->start(run->opts.observer->opaque, run, rs->index);
    }
}

/*
 * Whether @s, a dependent of a failed or skipped step, can still be
 * skipped: not started yet, or handed to an ahead executor that has not
 * begun it (it waits on the dependency, so it never will: drop it).
 */
static bool skippable(struct sched *sc, struct run_step *s)
{
    if (s->status == STEP_PENDING) {
        return true;
    }
    if (s->status != STEP_RUNNING || !sc->ex->ahead || s->begun) {
        return false;
    }
    sc->run->n_running--;
    if (sc->ex->ops->drop) {
        sc->ex->ops->drop(sc->ex, s);
    }
    return true;
}

/* Mark every not-yet-run dependent of @i skipped, saying why. */
static void skip_dependents(struct sched *sc, size_t i)
{
    struct run *run = sc->run;
    const struct dag_node *n = &run->dag->nodes[i];

    for (size_t k = 0; k < n->n_succs; k++) {
        struct run_step *s = &run->steps[n->succs[k]];
        if (!skippable(sc, s)) {
            continue;
        }
        s->status = STEP_SKIPPED;
        if (asprintf(&s->skip_reason, "depends on '%s', which %s",
                     id_of(run, i),
                     run->steps[i].status == STEP_FAILED ? "failed"
                                                         : "was skipped") < 0) {
            s->skip_reason = NULL;
        }
        run->n_finished++;
        observe_finish(run, n->succs[k]);
        skip_dependents(sc, n->succs[k]);
    }
}

static void finish_step(struct sched *sc, struct run_step *rs)
{
    struct run *run = sc->run;
    const struct dag_node *n = &run->dag->nodes[rs->index];

    run->n_running--;
    run->n_finished++;
    if (rs->ret == 0) {
        rs->status = STEP_SUCCEEDED;
    } else {
        rs->status = STEP_FAILED;
        if (sc->first_failure == SIZE_MAX) {
            sc->first_failure = rs->index;
        }
        if (!run->opts.keep_going) {
            sc->stop_starting = true;
            if (sc->ex->ahead && !sc->cancelled_unstarted &&
                run->status != RUN_INTERRUPTED) {
                sc->cancelled_unstarted = true;
                sc->ex->ops->cancel(sc->ex, EXEC_CANCEL_UNSTARTED);
            }
        }
    }
    if (run->opts.hooks && run->opts.hooks->finished) {
        run->opts.hooks->finished(run->opts.hooks->opaque, rs);
    }
    observe_finish(run, rs->index);
    if (rs->status != STEP_SUCCEEDED) {
        skip_dependents(sc, rs->index);
        return;
    }
    for (size_t k = 0; k < n->n_succs; k++) {
        struct run_step *s = &run->steps[n->succs[k]];
        if (--s->pending == 0 && s->status == STEP_PENDING &&
            !sc->ex->ahead) {
            heap_push(&sc->ready, n->succs[k]);
        }
    }
}

static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n > 0 ? (unsigned)n : 1;
}

/* The run is stopped: interrupted by a signal, or an executor that cannot
 * take steps. */
static void cancel_all(struct sched *sc, enum run_status why)
{
    if (why == RUN_INTERRUPTED) {
        sc->run->status = RUN_INTERRUPTED;
    }
    atomic_store(&sc->run->cancel, true);
    sc->stop_starting = true;
    sc->ex->ops->cancel(sc->ex, EXEC_CANCEL_ALL);
}

/* Hand step @i to the executor.  False when it refused (the step failed
 * and the run stops). */
static bool start_step(struct sched *sc, size_t i)
{
    struct run *run = sc->run;
    struct run_step *rs = &run->steps[i];
    int ret;

    rs->status = STEP_RUNNING;
    run->n_running++;
    if (!sc->ex->ahead) {
        observe_start(run, rs);
    }
    ret = sc->ex->ops->start(sc->ex, rs);
    if (ret == 0) {
        return true;
    }
    /* the executor is broken: this step fails, nothing more starts, and
     * what was started is cancelled */
    observe_start(run, rs);
    rs->ret = ret;
    if (rs->ctx.err.code == DF_OK) {
        df_fail(&rs->ctx.err, (enum df_errc)-ret, "the %s executor could not "
                "start the step", sc->ex->ops->name);
    }
    rs->started_ms = rs->finished_ms = run_now_ms();
    finish_step(sc, rs);
    cancel_all(sc, RUN_FAILED);
    return false;
}

static bool stop_asked(struct sched *sc)
{
    struct run *run = sc->run;

    return run->status != RUN_INTERRUPTED && run->opts.should_stop &&
           run->opts.should_stop(run->opts.stop_opaque);
}

/* Ahead executors: every step that is to run, in dependency order (the
 * lowest file position first among those free). */
static void start_all(struct sched *sc)
{
    struct run *run = sc->run;
    size_t *left = calloc(run->dag->n + 1, sizeof(*left));

    if (!left) {
        return;
    }
    for (size_t i = 0; i < run->dag->n; i++) {
        left[i] = run->steps[i].pending;
        if (run->steps[i].status == STEP_PENDING && left[i] == 0) {
            heap_push(&sc->ready, i);
        }
    }
    while (sc->ready.n && !sc->stop_starting) {
        size_t i = heap_pop(&sc->ready);
        const struct dag_node *n = &run->dag->nodes[i];
        if (stop_asked(sc)) {
            cancel_all(sc, RUN_INTERRUPTED);
            break;
        }
        if (!start_step(sc, i)) {
            break;
        }
        for (size_t k = 0; k < n->n_succs; k++) {
            if (--left[n->succs[k]] == 0 &&
                run->steps[n->succs[k]].status == STEP_PENDING) {
                heap_push(&sc->ready, n->succs[k]);
            }
        }
    }
    sc->ready.n = 0;
    free(left);
}

/* What the executor says about @rs. */
static void on_event(struct sched *sc, struct run_step *rs,
                     enum exec_event what)
{
    struct run *run = sc->run;

    if (rs->status != STEP_RUNNING) {
        return; /* dropped: it was skipped meanwhile */
    }
    switch (what) {
    case EXEC_STARTED:
        observe_start(run, rs);
        break;
    case EXEC_NOT_STARTED:
        /* cancelled before it began: skipped at the end, with why */
        rs->status = STEP_PENDING;
        run->n_running--;
        break;
    case EXEC_FINISHED:
        observe_start(run, rs);
        finish_step(sc, rs);
        break;
    }
}

/* Steps that never got to run: say why. */
static void skip_unstarted(struct run *run, size_t first_failure)
{
    for (size_t i = 0; i < run->dag->n; i++) {
        struct run_step *s = &run->steps[i];
        int n;
        if (s->status != STEP_PENDING) {
            continue;
        }
        s->status = STEP_SKIPPED;
        if (run->status == RUN_INTERRUPTED) {
            n = asprintf(&s->skip_reason, "not started: the run was "
                         "interrupted");
        } else if (first_failure != SIZE_MAX) {
            n = asprintf(&s->skip_reason, "not started: the run stopped "
                         "after step '%s' failed (use --keep-going to run "
                         "independent steps)", id_of(run, first_failure));
        } else {
            n = asprintf(&s->skip_reason, "not started");
        }
        if (n < 0) {
            s->skip_reason = NULL;
        }
        run->n_finished++;
        observe_finish(run, i);
    }
}

/* Ask the hooks which steps are up to date; those count as done. */
static void mark_up_to_date(struct run *run)
{
    const struct run_hooks *h = run->opts.hooks;

    if (!h || !h->skip) {
        return;
    }
    for (size_t i = 0; i < run->dag->n; i++) {
        struct run_step *rs = &run->steps[i];
        if (!h->skip(h->opaque, rs)) {
            continue;
        }
        rs->status = STEP_UP_TO_DATE;
        run->n_finished++;
        observe_finish(run, i);
    }
    for (size_t i = 0; i < run->dag->n; i++) {
        const struct dag_node *n = &run->dag->nodes[i];
        if (run->steps[i].status != STEP_UP_TO_DATE) {
            continue;
        }
        for (size_t k = 0; k < n->n_succs; k++) {
            run->steps[n->succs[k]].pending--;
        }
    }
}

/* Start what may start, and take in what the executor says, until no
 * step is left with it. */
static void schedule(struct sched *sc)
{
    struct run *run = sc->run;

    if (sc->ex->ahead) {
        start_all(sc);
    }
    for (;;) {
        struct run_step *rs;
        enum exec_event what;
        if (stop_asked(sc)) {
            cancel_all(sc, RUN_INTERRUPTED);
        }
        while (!sc->ex->ahead && !sc->stop_starting &&
               run->n_running < run->threads && sc->ready.n) {
            start_step(sc, heap_pop(&sc->ready));
        }
        if (run->n_running == 0) {
            break;
        }
        rs = sc->ex->ops->next(sc->ex, 100, &what);
        while (rs) {
            on_event(sc, rs, what);
            rs = sc->ex->ops->next(sc->ex, 0, &what);
        }
        if (run->opts.observer && run->opts.observer->tick) {
            run->opts.observer->tick(run->opts.observer->opaque, run);
        }
    }
    sc->ex->ops->finish(sc->ex);
}

/* Link every step of @run to its job step and DAG node; none started. */
static void init_steps(struct run *run)
{
    for (size_t i = 0; i < run->dag->n; i++) {
        struct run_step *rs = &run->steps[i];
        rs->run = run;
        rs->index = i;
        rs->ctx.job = run->job;
        rs->ctx.step = &run->job->steps[i];
        rs->ctx.node = &run->dag->nodes[i];
        rs->ctx.cancel = &run->cancel;
        atomic_init(&rs->ctx.done, 0);
        atomic_init(&rs->ctx.total, 0);
        rs->pending = run->dag->nodes[i].n_preds;
    }
}

struct run *job_run(const struct job *job, const struct dag *dag,
                    const struct run_opts *opts, struct df_error *err)
{
    struct run *run = calloc(1, sizeof(*run));
    struct sched sc = { 0 };
    struct executor *own = NULL;
    int64_t t0 = mono_ms();

    if (!run || !(run->steps = calloc(dag->n + 1, sizeof(*run->steps))) ||
        !(sc.ready.v = calloc(dag->n + 1, sizeof(*sc.ready.v)))) {
        free(sc.ready.v);
        run_free(run);
        df_fail(err, DF_E_NOMEM, "out of memory");
        return NULL;
    }
    sc.run = run;
    sc.first_failure = SIZE_MAX;
    run->job = job;
    run->dag = dag;
    run->opts = *opts;
    if (!run->opts.ops) {
        run->opts.ops = &job_engine_ops;
    }
    run->threads = opts->threads ? opts->threads : default_threads();
    atomic_init(&run->cancel, false);
    run->started_ms = run_now_ms();
    init_steps(run);
    mark_up_to_date(run);
    sc.ex = opts->executor;
    if (!sc.ex) {
        sc.ex = own = executor_local_new(run, run->threads);
    }
    if (!sc.ex) {
        free(sc.ready.v);
        run_free(run);
        df_fail(err, DF_E_NOMEM, "cannot start %u worker threads",
                opts->threads);
        return NULL;
    }
    for (size_t i = 0; i < dag->n && !sc.ex->ahead; i++) {
        if (run->steps[i].status == STEP_PENDING &&
            run->steps[i].pending == 0) {
            heap_push(&sc.ready, i);
        }
    }
    run->status = RUN_SUCCEEDED;
    schedule(&sc);
    if (own) {
        own->ops->free(own);
    }
    free(sc.ready.v);
    skip_unstarted(run, sc.first_failure);
    if (run->status != RUN_INTERRUPTED) {
        for (size_t i = 0; i < dag->n; i++) {
            if (run->steps[i].status == STEP_FAILED) {
                run->status = RUN_FAILED;
            }
        }
    }
    run->finished_ms = run_now_ms();
    run->duration_ms = mono_ms() - t0;
    return run;
}

struct run *run_not_started(const struct job *job, const struct dag *dag,
                            enum run_status status, const char *reason)
{
    struct run *run = calloc(1, sizeof(*run));

    if (!run || !(run->steps = calloc(dag->n + 1, sizeof(*run->steps)))) {
        free(run);
        return NULL;
    }
    run->job = job;
    run->dag = dag;
    run->threads = 1;
    run->status = status;
    run->started_ms = run->finished_ms = run_now_ms();
    atomic_init(&run->cancel, false);
    init_steps(run);
    for (size_t i = 0; i < dag->n; i++) {
        run->steps[i].status = STEP_SKIPPED;
        run->steps[i].skip_reason = strdup(reason);
    }
    run->n_finished = dag->n;
    return run;
}

void run_free(struct run *run)
{
    if (!run) {
        return;
    }
    for (size_t i = 0; run->steps && i < run->dag->n; i++) {
        json_decref(run->steps[i].ctx.result);
        json_decref(run->steps[i].ctx.outputs);
        free(run->steps[i].ctx.digests);
        free(run->steps[i].skip_reason);
    }
    free(run->steps);
    free(run);
}
