/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the scheduler (src/pipeline/runner.c) with a fake op
 * table, in the way ninja tests its builder with a fake command runner:
 * no image is touched.  Each step's `description` tells the fake op what
 * to do: "ok", "fail", "sleep:MS", or "wait" (until cancelled).
 *
 * Covered: dependency order, parallelism bounded by -j, fail-fast (no new
 * step after a failure, running steps finish), keep-going, skip
 * propagation through several levels, and cancellation.  Built with
 * -DDF_SANITIZE=thread these also check the pool and scheduler for races.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline.h"
#include "unit-job.h"

/* ---- the fake op and what it records ---- */

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static char rec_order[256][32]; /* ids in order of start */
static size_t rec_n;
static int running_now, running_max;
static atomic_int started_waiters;

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static int fake_op(struct op_ctx *ctx)
{
    const char *what = ctx->step->description ? ctx->step->description : "ok";
    int ret = 0;

    pthread_mutex_lock(&rec_lock);
    if (rec_n < 256) {
        snprintf(rec_order[rec_n++], sizeof(rec_order[0]), "%s",
                 ctx->step->id);
    }
    if (++running_now > running_max) {
        running_max = running_now;
    }
    pthread_mutex_unlock(&rec_lock);

    if (!strncmp(what, "sleep:", 6)) {
        sleep_ms(atoi(what + 6));
    } else if (!strcmp(what, "fail")) {
        ret = df_fail(&ctx->err, DF_E_IO, "'%s': planned failure",
                      ctx->step->id);
    } else if (!strcmp(what, "wait")) {
        atomic_fetch_add(&started_waiters, 1);
        for (int i = 0; i < 1000 && !op_cancelled(ctx); i++) {
            op_progress(ctx, (uint64_t)i, 1000);
            sleep_ms(5);
        }
        if (op_cancelled(ctx)) {
            ret = df_fail(&ctx->err, DF_E_CANCELED, "'%s': interrupted",
                          ctx->step->id);
        }
    }

    pthread_mutex_lock(&rec_lock);
    running_now--;
    pthread_mutex_unlock(&rec_lock);
    return ret;
}

static struct op_table fake_table;

static void reset(void)
{
    for (int i = 0; i < JOB_OP_COUNT; i++) {
        fake_table.run[i] = fake_op;
    }
    rec_n = 0;
    running_now = running_max = 0;
    atomic_store(&started_waiters, 0);
}

/* Stop as soon as a "wait" step has started: like a SIGINT mid-run. */
static bool stop_when_waiting(void *opaque)
{
    (void)opaque;
    return atomic_load(&started_waiters) > 0;
}

/* ---- building jobs ---- */

struct fixture {
    struct unit_job j;
    struct job *job;
    struct run *run;
};

static void load(struct fixture *f, const char *spec)
{
    unit_job_load(&f->j, spec);
    f->job = f->j.job;
}

static void run(struct fixture *f, unsigned threads, bool keep_going,
                bool (*stop)(void *))
{
    struct run_opts o = { 0 };
    struct df_error err = { 0 };

    reset();
    o.threads = threads;
    o.keep_going = keep_going;
    o.ops = &fake_table;
    o.should_stop = stop;
    f->run = job_run(f->job, f->j.dag, &o, &err);
    ck_assert_ptr_nonnull(f->run);
}

static void release(struct fixture *f)
{
    run_free(f->run);
    unit_job_free(&f->j);
}

static enum step_status status_of(struct fixture *f, const char *id)
{
    return f->run->steps[unit_job_index(&f->j, id)].status;
}

static int position(const char *id)
{
    for (size_t i = 0; i < rec_n; i++) {
        if (!strcmp(rec_order[i], id)) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- tests ---- */

START_TEST(order_follows_needs)
{
    struct fixture f;

    /* c is first in the file but needs b, which needs a */
    load(&f, "c:ok/b b:ok/a a:ok");
    run(&f, 4, false, NULL);
    ck_assert_int_eq(f.run->status, RUN_SUCCEEDED);
    ck_assert_int_eq(position("a"), 0);
    ck_assert_int_eq(position("b"), 1);
    ck_assert_int_eq(position("c"), 2);
    ck_assert_int_eq(running_max, 1);
    release(&f);
}
END_TEST

START_TEST(independent_steps_run_in_parallel)
{
    struct fixture f;

    load(&f, "a:sleep:150 b:sleep:150 c:sleep:150");
    run(&f, 3, false, NULL);
    ck_assert_int_eq(f.run->status, RUN_SUCCEEDED);
    ck_assert_int_eq(running_max, 3);
    release(&f);
}
END_TEST

START_TEST(threads_bound_parallelism)
{
    struct fixture f;

    load(&f, "a:sleep:30 b:sleep:30 c:sleep:30 d:sleep:30 e:sleep:30");
    run(&f, 2, false, NULL);
    ck_assert_int_eq(f.run->status, RUN_SUCCEEDED);
    ck_assert_int_le(running_max, 2);
    ck_assert_uint_eq(f.run->threads, 2);
    release(&f);
}
END_TEST

START_TEST(ready_steps_start_in_file_order)
{
    struct fixture f;

    load(&f, "a:ok b:ok c:ok d:ok");
    run(&f, 1, false, NULL);
    ck_assert_int_eq(position("a"), 0);
    ck_assert_int_eq(position("b"), 1);
    ck_assert_int_eq(position("c"), 2);
    ck_assert_int_eq(position("d"), 3);
    release(&f);
}
END_TEST

START_TEST(fail_fast_starts_nothing_new)
{
    struct fixture f;

    load(&f, "a:fail b:ok c:ok/a");
    run(&f, 1, false, NULL);
    ck_assert_int_eq(f.run->status, RUN_FAILED);
    ck_assert_int_eq(status_of(&f, "a"), STEP_FAILED);
    ck_assert_int_eq(status_of(&f, "b"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&f, "c"), STEP_SKIPPED);
    ck_assert_int_eq(position("b"), -1);
    ck_assert_ptr_nonnull(strstr(f.run->steps[1].skip_reason, "'a' failed"));
    ck_assert_ptr_nonnull(strstr(f.run->steps[2].skip_reason,
                                 "depends on 'a'"));
    release(&f);
}
END_TEST

START_TEST(fail_fast_lets_running_steps_finish)
{
    struct fixture f;

    load(&f, "slow:sleep:200 bad:fail later:ok/bad");
    run(&f, 2, false, NULL);
    ck_assert_int_eq(f.run->status, RUN_FAILED);
    ck_assert_int_eq(status_of(&f, "slow"), STEP_SUCCEEDED);
    ck_assert_int_eq(status_of(&f, "bad"), STEP_FAILED);
    ck_assert_int_eq(status_of(&f, "later"), STEP_SKIPPED);
    release(&f);
}
END_TEST

START_TEST(keep_going_runs_independent_steps)
{
    struct fixture f;

    load(&f, "a:fail b:ok c:ok/a d:ok/c e:ok/b");
    run(&f, 1, true, NULL);
    ck_assert_int_eq(f.run->status, RUN_FAILED);
    ck_assert_int_eq(status_of(&f, "a"), STEP_FAILED);
    ck_assert_int_eq(status_of(&f, "b"), STEP_SUCCEEDED);
    ck_assert_int_eq(status_of(&f, "e"), STEP_SUCCEEDED);
    ck_assert_int_eq(status_of(&f, "c"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&f, "d"), STEP_SKIPPED);
    ck_assert_ptr_nonnull(strstr(f.run->steps[3].skip_reason,
                                 "'c', which was skipped"));
    release(&f);
}
END_TEST

START_TEST(skip_needs_every_dependency_to_succeed)
{
    struct fixture f;

    /* join needs both; one fails */
    load(&f, "left:ok right:fail join:ok/left,right");
    run(&f, 2, true, NULL);
    ck_assert_int_eq(status_of(&f, "left"), STEP_SUCCEEDED);
    ck_assert_int_eq(status_of(&f, "join"), STEP_SKIPPED);
    ck_assert_int_eq(position("join"), -1);
    release(&f);
}
END_TEST

START_TEST(cancel_stops_running_steps)
{
    struct fixture f;

    load(&f, "w:wait x:sleep:20 after:ok/w later:ok/x");
    run(&f, 2, false, stop_when_waiting);
    ck_assert_int_eq(f.run->status, RUN_INTERRUPTED);
    ck_assert_int_eq(status_of(&f, "w"), STEP_FAILED);
    ck_assert_int_eq(f.run->steps[0].ctx.err.code, DF_E_CANCELED);
    ck_assert_int_eq(status_of(&f, "after"), STEP_SKIPPED);
    ck_assert_int_eq(status_of(&f, "later"), STEP_SKIPPED);
    ck_assert_ptr_nonnull(strstr(f.run->steps[3].skip_reason, "interrupted"));
    /* the waiter noticed within a few polls, far from its 5 s limit */
    ck_assert_int_lt(f.run->duration_ms, 2000);
    release(&f);
}
END_TEST

START_TEST(many_steps)
{
    struct fixture f;
    char spec[8192];
    size_t n = 0;

    /* a chain of 60 with a fan of independent steps beside it */
    for (int i = 0; i < 60; i++) {
        if (i) {
            n += (size_t)snprintf(spec + n, sizeof(spec) - n,
                                  "c%d:ok/c%d f%d:ok ", i, i - 1, i);
        } else {
            n += (size_t)snprintf(spec + n, sizeof(spec) - n, "c0:ok f0:ok ");
        }
    }
    load(&f, spec);
    run(&f, 4, false, NULL);
    ck_assert_int_eq(f.run->status, RUN_SUCCEEDED);
    for (int i = 1; i < 60; i++) {
        char a[8], b[8];
        snprintf(a, sizeof(a), "c%d", i - 1);
        snprintf(b, sizeof(b), "c%d", i);
        ck_assert_int_lt(position(a), position(b));
    }
    release(&f);
}
END_TEST

static Suite *sched_suite(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("scheduler");

    tcase_add_test(tc, order_follows_needs);
    tcase_add_test(tc, independent_steps_run_in_parallel);
    tcase_add_test(tc, threads_bound_parallelism);
    tcase_add_test(tc, ready_steps_start_in_file_order);
    tcase_add_test(tc, fail_fast_starts_nothing_new);
    tcase_add_test(tc, fail_fast_lets_running_steps_finish);
    tcase_add_test(tc, keep_going_runs_independent_steps);
    tcase_add_test(tc, skip_needs_every_dependency_to_succeed);
    tcase_add_test(tc, cancel_stops_running_steps);
    tcase_add_test(tc, many_steps);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sched_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
