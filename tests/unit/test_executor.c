/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the scheduler above the executor interface
 * (src/pipeline/executor.h), with a fake executor in place of the thread
 * pool or Slurm: no thread, no image, no cluster.
 *
 * The fake keeps each step it was given in a state (queued, running,
 * done, cancelled, dropped) and, on every next() that finds no news
 * waiting, advances one "tick": queued steps whose dependencies all
 * succeeded begin (EXEC_STARTED), and running steps end as their
 * description says ("ok", "fail"; "hang" runs until cancelled).  In its
 * "ahead" form it is given every step up front and orders them itself, as
 * Slurm does with afterok; in order it is given a step only once its
 * dependencies succeeded, as the pool is.  It records every call, so the
 * tests check what the scheduler asked: the order of start(), drop() of
 * dependents of a failure, cancel() on the first failure without
 * keep_going, and cancel-all on an interrupt.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "executor.h"
#include "pipeline.h"
#include "unit-job.h"

enum fake_state { F_NONE, F_QUEUED, F_RUNNING, F_DONE, F_CANCELLED,
                  F_DROPPED };

#define MAXN 128

struct fake {
    struct executor ex;
    struct run *run;
    enum fake_state st[MAXN];
    int ret[MAXN];
    /* news not yet handed out */
    size_t ev_step[4 * MAXN];
    enum exec_event ev_what[4 * MAXN];
    size_t ev_head, ev_tail;
    /* what the scheduler asked */
    size_t started[MAXN], n_started;
    size_t n_dropped, n_cancel_unstarted, n_cancel_all;
    bool finished, refuse_second; /* refuse the second start() (ESLURM) */
    int ticks;
    int stop_at_tick; /* should_stop turns true from this tick (0: never) */
};

static struct fake *fake_of(struct executor *ex)
{
    return (struct fake *)ex;
}

static const char *what_of(struct fake *f, size_t i)
{
    const char *d = f->run->job->steps[i].description;

    return d ? d : "ok";
}

static void push(struct fake *f, size_t i, enum exec_event what)
{
    ck_assert_uint_lt(f->ev_tail, 4 * MAXN);
    f->ev_step[f->ev_tail] = i;
    f->ev_what[f->ev_tail++] = what;
}

static int fake_start(struct executor *ex, struct run_step *rs)
{
    struct fake *f = fake_of(ex);

    ck_assert_uint_lt(rs->index, MAXN);
    ck_assert_int_eq(f->st[rs->index], F_NONE);
    if (f->refuse_second && f->n_started == 1) {
        return df_fail(&rs->ctx.err, DF_E_IO, "sbatch: error: cannot reach "
                       "the controller");
    }
    f->started[f->n_started++] = rs->index;
    f->st[rs->index] = F_QUEUED;
    if (!ex->ahead) {
        f->st[rs->index] = F_RUNNING;
    }
    return 0;
}

/* Whether every dependency of @i the fake knows has succeeded. */
static bool deps_done(struct fake *f, size_t i)
{
    const struct dag_node *n = &f->run->dag->nodes[i];

    for (size_t k = 0; k < n->n_preds; k++) {
        size_t p = n->preds[k].pred;
        if (f->st[p] == F_NONE) {
            continue; /* up to date: not given to the executor */
        }
        if (f->st[p] != F_DONE || f->ret[p] != 0) {
            return false;
        }
    }
    return true;
}

/* One scheduling pass: queued steps whose dependencies finished in an
 * earlier pass begin; steps that were running end (but "hang"). */
static void tick(struct fake *f)
{
    size_t n = f->run->dag->n;
    bool was_running[MAXN] = { false };

    f->ticks++;
    for (size_t i = 0; i < n; i++) {
        was_running[i] = f->st[i] == F_RUNNING;
    }
    for (size_t i = 0; i < n; i++) {
        if (f->st[i] == F_QUEUED && deps_done(f, i)) {
            f->st[i] = F_RUNNING;
            push(f, i, EXEC_STARTED);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!was_running[i] || !strcmp(what_of(f, i), "hang")) {
            continue;
        }
        f->st[i] = F_DONE;
        f->ret[i] = strcmp(what_of(f, i), "fail") ? 0 : -DF_E_IO;
        if (f->ret[i]) {
            df_fail(&f->run->steps[i].ctx.err, DF_E_IO, "planned failure");
        }
        f->run->steps[i].ret = f->ret[i];
        push(f, i, EXEC_FINISHED);
    }
}

static struct run_step *fake_next(struct executor *ex, int timeout_ms,
                                  enum exec_event *what)
{
    struct fake *f = fake_of(ex);
    size_t i;

    if (f->ev_head == f->ev_tail && timeout_ms != 0) {
        tick(f);
    }
    if (f->ev_head == f->ev_tail) {
        return NULL;
    }
    i = f->ev_step[f->ev_head];
    *what = f->ev_what[f->ev_head++];
    return &f->run->steps[i];
}

static void fake_cancel(struct executor *ex, enum exec_cancel how)
{
    struct fake *f = fake_of(ex);

    if (how == EXEC_CANCEL_ALL) {
        f->n_cancel_all++;
    } else {
        f->n_cancel_unstarted++;
    }
    for (size_t i = 0; i < f->run->dag->n; i++) {
        if (f->st[i] == F_QUEUED) {
            f->st[i] = F_CANCELLED;
            push(f, i, EXEC_NOT_STARTED);
        } else if (f->st[i] == F_RUNNING && how == EXEC_CANCEL_ALL) {
            f->st[i] = F_DONE;
            f->ret[i] = -DF_E_CANCELED;
            f->run->steps[i].ret = f->ret[i];
            df_fail(&f->run->steps[i].ctx.err, DF_E_CANCELED, "cancelled");
            push(f, i, EXEC_FINISHED);
        }
    }
}

static void fake_drop(struct executor *ex, struct run_step *rs)
{
    struct fake *f = fake_of(ex);

    ck_assert(ex->ahead);
    /* waiting, or already cancelled by a fail-fast (Slurm: harmless) */
    ck_assert(f->st[rs->index] == F_QUEUED ||
              f->st[rs->index] == F_CANCELLED);
    f->st[rs->index] = F_DROPPED;
    f->n_dropped++;
}

static void fake_finish(struct executor *ex)
{
    struct fake *f = fake_of(ex);

    /* nothing may be left waiting or running */
    for (size_t i = 0; i < f->run->dag->n; i++) {
        ck_assert_msg(f->st[i] != F_QUEUED && f->st[i] != F_RUNNING,
                      "step %zu left with the executor", i);
    }
    f->finished = true;
}

static void fake_free(struct executor *ex)
{
    (void)ex;
}

static const struct executor_ops fake_ops = {
    .name = "fake",
    .start = fake_start,
    .next = fake_next,
    .cancel = fake_cancel,
    .drop = fake_drop,
    .finish = fake_finish,
    .free = fake_free,
};

/* ---- running a job on it ---- */

struct fixture {
    struct unit_job j;
    struct fake fake;
    struct run *run;
};

static bool stop_at(void *opaque)
{
    struct fake *f = opaque;

    return f->stop_at_tick && f->ticks >= f->stop_at_tick;
}

/* The fake needs the run before job_run() returns it: an observer's first
 * call, or the first start(), gives it; so a hook does it here. */
static bool hook_skip(void *opaque, struct run_step *rs)
{
    struct fake *f = opaque;

    f->run = rs->run;
    return false;
}

static const struct run_hooks *hooks_for(struct fake *f)
{
    static struct run_hooks h;

    h.opaque = f;
    h.skip = hook_skip;
    return &h;
}

/* Run @spec on the fake; set x->fake's options (stop_at_tick,
 * refuse_second) before, on a zeroed fixture. */
static void go(struct fixture *x, const char *spec, bool ahead,
               bool keep_going, unsigned threads)
{
    struct run_opts o = { 0 };
    struct df_error err = { 0 };

    unit_job_load(&x->j, spec);
    ck_assert_uint_le(x->j.dag->n, MAXN);
    x->fake.ex.ops = &fake_ops;
    x->fake.ex.ahead = ahead;
    o.threads = threads;
    o.keep_going = keep_going;
    o.executor = &x->fake.ex;
    o.hooks = hooks_for(&x->fake);
    o.should_stop = stop_at;
    o.stop_opaque = &x->fake;
    x->run = job_run(x->j.job, x->j.dag, &o, &err);
    ck_assert_ptr_nonnull(x->run);
    ck_assert(x->fake.finished);
}

static void done(struct fixture *x)
{
    run_free(x->run);
    unit_job_free(&x->j);
}

static enum step_status status_of(struct fixture *x, const char *id)
{
    return x->run->steps[unit_job_index(&x->j, id)].status;
}

/* Where @id came in the order of start() calls; -1: never. */
static int start_pos(struct fixture *x, const char *id)
{
    size_t i = unit_job_index(&x->j, id);

    for (size_t k = 0; k < x->fake.n_started; k++) {
        if (x->fake.started[k] == i) {
            return (int)k;
        }
    }
    return -1;
}

static const char *skip_reason(struct fixture *x, const char *id)
{
    const char *r = x->run->steps[unit_job_index(&x->j, id)].skip_reason;

    ck_assert_ptr_nonnull(r);
    return r;
}

/* ---- tests ---- */

START_TEST(ahead_starts_everything_in_dependency_order)
{
    struct fixture x = { 0 };

    /* file order c, b, a, d; c needs b needs a */
    go(&x, "c:ok/b b:ok/a a:ok d:ok", true, false, 1);
    ck_assert_int_eq(x.run->status, RUN_SUCCEEDED);
    ck_assert_uint_eq(x.fake.n_started, 4);
    ck_assert_int_lt(start_pos(&x, "a"), start_pos(&x, "b"));
    ck_assert_int_lt(start_pos(&x, "b"), start_pos(&x, "c"));
    /* all handed over before anything ran, whatever -j says: ticks come
     * only from next() */
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(x.run->steps[i].status, STEP_SUCCEEDED);
        ck_assert(x.run->steps[i].begun);
    }
    ck_assert_uint_eq(x.fake.n_cancel_unstarted + x.fake.n_cancel_all, 0);
    done(&x);
}
END_TEST

START_TEST(in_order_starts_after_dependencies)
{
    struct fixture x = { 0 };

    go(&x, "c:ok/b b:ok/a a:ok d:ok", false, false, 4);
    ck_assert_int_eq(x.run->status, RUN_SUCCEEDED);
    /* a and d first (file order among the free), then b, then c */
    ck_assert_int_eq(start_pos(&x, "a"), 0);
    ck_assert_int_eq(start_pos(&x, "d"), 1);
    ck_assert_int_eq(start_pos(&x, "b"), 2);
    ck_assert_int_eq(start_pos(&x, "c"), 3);
    done(&x);
}
END_TEST

START_TEST(ahead_failure_skips_and_drops_dependents)
{
    struct fixture x = { 0 };

    /* keep going: bad fails, its dependents are skipped (dropped from the
     * executor), the independent branch still succeeds */
    go(&x, "bad:fail mid:ok/bad end:ok/mid side:ok tail:ok/side", true,
       true, 1);
    ck_assert_int_eq(x.run->status, RUN_FAILED);
    ck_assert_int_eq(status_of(&x, "bad"), STEP_FAILED);
    ck_assert_int_eq(status_of(&x, "mid"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&x, "end"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&x, "side"), STEP_SUCCEEDED);
    ck_assert_int_eq(status_of(&x, "tail"), STEP_SUCCEEDED);
    ck_assert_uint_eq(x.fake.n_dropped, 2);
    ck_assert_uint_eq(x.fake.n_cancel_unstarted, 0);
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "mid"), "'bad', which failed"));
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "end"),
                                 "'mid', which was skipped"));
    ck_assert_int_eq(x.run->steps[unit_job_index(&x.j, "mid")].begun, false);
    done(&x);
}
END_TEST

START_TEST(ahead_first_failure_cancels_unstarted)
{
    struct fixture x = { 0 };

    /* bad and ok1 begin at the first pass and end at the second; bad's
     * failure makes the scheduler ask once for the unstarted steps to be
     * cancelled: after2 (waiting on ok1) is skipped as not started, ok1,
     * which was running, finished */
    go(&x, "bad:fail ok1:ok after2:ok/ok1 dep:ok/bad", true, false, 1);
    ck_assert_int_eq(x.run->status, RUN_FAILED);
    ck_assert_uint_eq(x.fake.n_cancel_unstarted, 1);
    ck_assert_uint_eq(x.fake.n_cancel_all, 0);
    ck_assert_int_eq(status_of(&x, "bad"), STEP_FAILED);
    ck_assert_int_eq(status_of(&x, "ok1"), STEP_SUCCEEDED);
    ck_assert_int_eq(status_of(&x, "after2"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&x, "dep"), STEP_SKIPPED);
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "after2"),
                                 "stopped after step 'bad' failed"));
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "dep"), "'bad', which failed"));
    done(&x);
}
END_TEST

START_TEST(in_order_failure_starts_nothing_new)
{
    struct fixture x = { 0 };

    go(&x, "bad:fail other:ok dep:ok/bad", false, false, 1);
    ck_assert_int_eq(x.run->status, RUN_FAILED);
    ck_assert_int_eq(start_pos(&x, "other"), -1);
    ck_assert_int_eq(status_of(&x, "other"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&x, "dep"), STEP_SKIPPED);
    /* the in-order executor is not asked to cancel: nothing waits in it */
    ck_assert_uint_eq(x.fake.n_cancel_unstarted + x.fake.n_cancel_all, 0);
    done(&x);
}
END_TEST

START_TEST(interrupt_cancels_everything)
{
    struct fixture x = { 0 };

    /* the stop comes after the second pass: a and c began and hang, b
     * waits on a */
    x.fake.stop_at_tick = 2;
    go(&x, "a:hang b:ok/a c:hang", true, false, 1);
    ck_assert_int_eq(x.run->status, RUN_INTERRUPTED);
    ck_assert_uint_eq(x.fake.n_cancel_all, 1);
    ck_assert_uint_eq(x.fake.n_cancel_unstarted, 0);
    ck_assert_int_eq(status_of(&x, "a"), STEP_FAILED);
    ck_assert_int_eq(x.run->steps[0].ctx.err.code, DF_E_CANCELED);
    ck_assert_int_eq(status_of(&x, "c"), STEP_FAILED);
    ck_assert_int_eq(status_of(&x, "b"), STEP_SKIPPED);
    ck_assert_int_eq(x.run->steps[1].begun, false);
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "b"), "'a', which failed"));
    done(&x);
}
END_TEST

START_TEST(interrupt_before_anything_began)
{
    struct fixture x = { 0 };

    /* the stop comes at the first pass: nothing began, all skipped */
    x.fake.stop_at_tick = 1;
    go(&x, "a:ok b:ok/a c:ok", true, false, 1);
    ck_assert_int_eq(x.run->status, RUN_INTERRUPTED);
    ck_assert_uint_eq(x.fake.n_cancel_all, 1);
    for (size_t i = 0; i < 3; i++) {
        /* a and c began at the first pass and were cancelled running */
        ck_assert(x.run->steps[i].status == STEP_SKIPPED ||
                  x.run->steps[i].ctx.err.code == DF_E_CANCELED);
    }
    ck_assert_int_eq(status_of(&x, "b"), STEP_SKIPPED);
    done(&x);
}
END_TEST

START_TEST(refused_start_fails_and_cancels)
{
    struct fixture x = { 0 };

    /* a broken executor stops the run even with keep_going */
    x.fake.refuse_second = true;
    go(&x, "a:ok b:ok c:ok/b", true, true, 1);
    ck_assert_int_eq(x.run->status, RUN_FAILED);
    ck_assert_uint_eq(x.fake.n_started, 1); /* c was never handed over */
    ck_assert_uint_eq(x.fake.n_cancel_all, 1);
    ck_assert_int_eq(status_of(&x, "a"), STEP_SKIPPED); /* cancelled queued */
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "a"), "'b' failed"));
    ck_assert_int_eq(status_of(&x, "b"), STEP_FAILED);
    ck_assert_ptr_nonnull(strstr(x.run->steps[1].ctx.err.msg, "sbatch"));
    ck_assert_int_eq(status_of(&x, "c"), STEP_SKIPPED);
    ck_assert_ptr_nonnull(strstr(skip_reason(&x, "c"), "'b', which failed"));
    done(&x);
}
END_TEST

START_TEST(many_steps_ahead)
{
    struct fixture x = { 0 };
    char spec[8192];
    size_t n = 0;

    /* a chain of 50, written last to first, beside 50 free steps */
    for (int i = 49; i > 0; i--) {
        n += (size_t)snprintf(spec + n, sizeof(spec) - n, "c%d:ok/c%d f%d:ok ",
                              i, i - 1, i);
    }
    snprintf(spec + n, sizeof(spec) - n, "c0:ok f0:ok");
    go(&x, spec, true, false, 2);
    ck_assert_int_eq(x.run->status, RUN_SUCCEEDED);
    ck_assert_uint_eq(x.fake.n_started, 100);
    for (int i = 1; i < 50; i++) {
        char a[8], b[8];
        snprintf(a, sizeof(a), "c%d", i - 1);
        snprintf(b, sizeof(b), "c%d", i);
        ck_assert_int_lt(start_pos(&x, a), start_pos(&x, b));
    }
    /* Slurm-style: the chain took a tick per link, all in one run */
    ck_assert_int_ge(x.fake.ticks, 50);
    done(&x);
}
END_TEST

static Suite *executor_suite(void)
{
    Suite *s = suite_create("executor");
    TCase *tc = tcase_create("fake executor");

    tcase_add_test(tc, ahead_starts_everything_in_dependency_order);
    tcase_add_test(tc, in_order_starts_after_dependencies);
    tcase_add_test(tc, ahead_failure_skips_and_drops_dependents);
    tcase_add_test(tc, ahead_first_failure_cancels_unstarted);
    tcase_add_test(tc, in_order_failure_starts_nothing_new);
    tcase_add_test(tc, interrupt_cancels_everything);
    tcase_add_test(tc, interrupt_before_anything_began);
    tcase_add_test(tc, refused_start_fails_and_cancels);
    tcase_add_test(tc, many_steps_ahead);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(executor_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
