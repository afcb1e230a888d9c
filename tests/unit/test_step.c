/* SPDX-License-Identifier: MIT */
/*
 * test_step.c - one step of a job on its own (step.c) and its report
 * object (report_step(), report_step_refused()).
 */
#include <check.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline.h"
#include "step.h"

#define UNIT_TMPDIR_NAME "step"
#include "unit-tmpdir.h"

static const char job_text[] =
    "version: 1\n"
    "steps:\n"
    "  - {id: a, op: create, image: a.raw, format: raw, size: 1M}\n"
    "  - {id: b, op: create, image: b.raw, format: raw, size: 2M, needs: [a]}\n"
    "  - {id: c, op: create, image: c.raw, format: raw, size: 3M, needs: [b]}\n"
    "  - {id: big, op: create, image: big.raw, format: raw, size: 4G,\n"
    "     preallocation: full}\n";

struct loaded {
    struct job_diags diags;
    struct job *job;
    struct dag *dag;
};

static void load(struct loaded *l)
{
    job_diags_init(&l->diags);
    l->job = job_load_string(path_in("job.yaml"), job_text,
                             sizeof(job_text) - 1, NULL, &l->diags);
    if (!l->job) {
        job_diags_print(&l->diags, stderr);
    }
    ck_assert_ptr_nonnull(l->job);
    l->dag = dag_build(l->job, &l->diags);
    ck_assert_ptr_nonnull(l->dag);
}

static void unload(struct loaded *l)
{
    dag_free(l->dag);
    job_free(l->job);
    job_diags_release(&l->diags);
}

static bool exists(const char *name)
{
    struct stat sb;

    return stat(path_in(name), &sb) == 0;
}

START_TEST(only_that_step_runs)
{
    struct df_error err = { 0 };
    struct loaded l;
    struct run *run;
    char hex[65];
    json_t *o, *out;

    load(&l);
    run = step_run(l.job, l.dag, 1, NULL, NULL, &err);
    ck_assert_ptr_nonnull(run);
    ck_assert_int_eq(run->status, RUN_SUCCEEDED);
    ck_assert_int_eq(run->steps[1].status, STEP_SUCCEEDED);
    /* its dependency did not run, nor what depends on it */
    ck_assert_int_eq(run->steps[0].status, STEP_UP_TO_DATE);
    ck_assert_int_eq(run->steps[2].status, STEP_UP_TO_DATE);
    ck_assert(exists("b.raw"));
    ck_assert(!exists("a.raw"));
    ck_assert(!exists("c.raw"));

    o = report_step(run, 1);
    ck_assert_str_eq(json_string_value(json_object_get(o, "id")), "b");
    ck_assert_str_eq(json_string_value(json_object_get(o, "op")), "create");
    ck_assert_str_eq(json_string_value(json_object_get(o, "status")),
                     "succeeded");
    ck_assert(json_is_null(json_object_get(o, "reason")));
    ck_assert(json_is_null(json_object_get(o, "error")));
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(o, "needs"), 0)), "a");
    out = json_array_get(json_object_get(o, "outputs"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "virtual_size")),
                     2 << 20);
    /* the output's sha256, as a local run gives it */
    ck_assert_int_eq(step_file_sha256(path_in("b.raw"), hex, &err), 0);
    ck_assert_str_eq(json_string_value(json_object_get(out, "sha256")), hex);
    json_decref(o);
    run_free(run);
    unload(&l);
}
END_TEST

static bool stop_soon(void *opaque)
{
    int *polls = opaque;

    return ++*polls > 3; /* a few scheduler ticks (100 ms each) in */
}

START_TEST(cancelled_step)
{
    struct df_error err = { 0 };
    struct loaded l;
    struct run *run;
    int polls = 0;
    json_t *o;

    load(&l);
    run = step_run(l.job, l.dag, 3, stop_soon, &polls, &err);
    ck_assert_ptr_nonnull(run);
    ck_assert_int_eq(run->status, RUN_INTERRUPTED);
    ck_assert_int_eq(run->steps[3].status, STEP_FAILED);
    ck_assert_int_eq(run->steps[3].ctx.err.code, DF_E_CANCELED);
    ck_assert(!exists("big.raw"));
    o = report_step(run, 3);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(o, "error"), "code")), "ECANCELED");
    json_decref(o);
    run_free(run);
    unload(&l);
}
END_TEST

START_TEST(bad_index)
{
    struct df_error err = { 0 };
    struct loaded l;

    load(&l);
    ck_assert_ptr_null(step_run(l.job, l.dag, 4, NULL, NULL, &err));
    ck_assert_int_eq(err.code, DF_E_INVAL);
    unload(&l);
}
END_TEST

START_TEST(refused_objects)
{
    struct loaded l;
    json_t *o, *e;

    load(&l);
    o = report_step_refused(l.dag, "c", "EVERSION", "v1 \xff v2");
    ck_assert_str_eq(json_string_value(json_object_get(o, "op")), "create");
    ck_assert_str_eq(json_string_value(json_object_get(o, "status")),
                     "failed");
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(o, "needs"), 0)), "b");
    ck_assert(json_is_null(json_object_get(o, "started_at")));
    e = json_object_get(o, "error");
    ck_assert_str_eq(json_string_value(json_object_get(e, "code")),
                     "EVERSION");
    /* foreign bytes made valid UTF-8 */
    ck_assert_str_eq(json_string_value(json_object_get(e, "message")),
                     "v1 \xef\xbf\xbd v2");
    json_decref(o);

    /* no job, or no such step: no op, no needs */
    o = report_step_refused(NULL, "gone", "EJOBCHANGED", "changed");
    ck_assert_ptr_null(json_object_get(o, "op"));
    ck_assert_str_eq(json_string_value(json_object_get(o, "id")), "gone");
    ck_assert_int_eq(json_array_size(json_object_get(o, "needs")), 0);
    json_decref(o);
    o = report_step_refused(l.dag, "nosuch", "EJOB", "no step");
    ck_assert_ptr_null(json_object_get(o, "op"));
    json_decref(o);
    unload(&l);
}
END_TEST

START_TEST(file_sha256)
{
    struct df_error err = { 0 };
    char hex[65];
    FILE *f = fopen(path_in("abc"), "w");

    ck_assert_ptr_nonnull(f);
    fputs("abc", f);
    fclose(f);
    ck_assert_int_eq(step_file_sha256(path_in("abc"), hex, &err), 0);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223"
                          "b00361a396177a9cb410ff61f20015ad");
    ck_assert_int_lt(step_file_sha256(path_in("none"), hex, &err), 0);
    ck_assert_int_eq(err.code, DF_E_NOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "none"));
}
END_TEST

static Suite *step_suite(void)
{
    Suite *s = suite_create("step");
    TCase *t = tcase_create("step");

    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, only_that_step_runs);
    tcase_add_test(t, cancelled_step);
    tcase_add_test(t, bad_index);
    tcase_add_test(t, refused_objects);
    tcase_add_test(t, file_sha256);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(step_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
