/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the report writer (src/pipeline/report-json.c): strings
 * with quotes, newlines, control characters and bytes that are not UTF-8
 * come out as valid JSON, and whole reports (succeeded, failed, skipped
 * and interrupted steps) validate against docs/report.schema.json.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline.h"

static char tmpdir[] = "/tmp/df-test-report.XXXXXX";

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    strcpy(tmpdir, "/tmp/df-test-report.XXXXXX");
}

/* Dump @j and load it back: the text must parse as JSON. */
static json_t *round_trip(json_t *j)
{
    char *text = json_dumps(j, JSON_ENCODE_ANY);
    json_error_t err;
    json_t *back;

    ck_assert_ptr_nonnull(text);
    back = json_loads(text, JSON_DECODE_ANY, &err);
    ck_assert_msg(back != NULL, "not JSON: %s (%s)", text, err.text);
    free(text);
    return back;
}

START_TEST(escapes_and_invalid_utf8)
{
    static const char msg[] = "say \"hi\"\n\tback\\slash \x01 "
                              "caf\xc3\xa9 bad \xff\xfe end \xe2\x82";
    json_t *s = report_string(msg, sizeof(msg) - 1);
    json_t *back = round_trip(s);
    const char *v = json_string_value(back);

    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_nonnull(strstr(v, "say \"hi\"\n\tback\\slash \x01 "));
    ck_assert_ptr_nonnull(strstr(v, "caf\xc3\xa9"));       /* kept */
    ck_assert_ptr_nonnull(strstr(v, "bad \xef\xbf\xbd\xef\xbf\xbd end"));
    ck_assert_ptr_nonnull(strstr(v, "end \xef\xbf\xbd")); /* cut sequence */
    json_decref(s);
    json_decref(back);
}
END_TEST

START_TEST(overlong_and_surrogates_are_replaced)
{
    /* overlong '/', a UTF-16 surrogate, a code point past U+10FFFF */
    static const char msg[] = "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|ok";
    json_t *s = report_string(msg, sizeof(msg) - 1);
    const char *v = json_string_value(s);

    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_null(strstr(v, "\xc0"));
    ck_assert_ptr_null(strstr(v, "\xed\xa0"));
    ck_assert_ptr_nonnull(strstr(v, "|ok"));
    json_decref(s);
}
END_TEST

START_TEST(default_report_path)
{
    char *p = report_default_path("jobs/golden-image.yaml");

    ck_assert_str_eq(p, "jobs/golden-image.report.json");
    free(p);
    p = report_default_path("job.yml");
    ck_assert_str_eq(p, "job.report.json");
    free(p);
    p = report_default_path("job");
    ck_assert_str_eq(p, "job.report.json");
    free(p);
}
END_TEST

/* ---- whole reports from runs with fake ops ---- */

static int fake_op(struct op_ctx *ctx)
{
    const char *d = ctx->step->description;

    if (d && !strcmp(d, "fail")) {
        return df_fail(&ctx->err, DF_E_IO, "'%s': \"quoted\"\nsecond line "
                       "\xff\xfe", ctx->step->id);
    }
    ctx->result = json_object();
    json_object_set_new(ctx->result, "output",
                        report_string("bin\xff\x80 out\n", 10));
    return 0;
}

static bool stop_now(void *opaque)
{
    (void)opaque;
    return true;
}

/* Run a job with fake ops and write its report; returns its path. */
static char *run_to_report(const char *steps, bool keep_going,
                           bool interrupt, const char *name)
{
    char text[4096], *path;
    struct job_diags diags;
    struct op_table ops = { 0 };
    struct run_opts o = { 0 };
    struct df_error err = { 0 };
    struct job *job;
    struct dag *dag;
    struct run *run;
    json_t *r;
    int n = snprintf(text, sizeof(text),
                     "version: 1\nname: \"r\\xe9port \\\"q\\\"\"\n"
                     "steps:\n%s", steps);

    for (int i = 0; i < JOB_OP_COUNT; i++) {
        ops.run[i] = fake_op;
    }
    job_diags_init(&diags);
    job = job_load_string("dir/\"odd\" name.yaml", text, (size_t)n, NULL,
                          &diags);
    if (!job) {
        job_diags_print(&diags, stderr);
    }
    ck_assert_ptr_nonnull(job);
    dag = dag_build(job, &diags);
    ck_assert_ptr_nonnull(dag);
    o.threads = 2;
    o.keep_going = keep_going;
    o.ops = &ops;
    o.should_stop = interrupt ? stop_now : NULL;
    run = job_run(job, dag, &o, &err);
    ck_assert_ptr_nonnull(run);
    r = report_build(run);
    ck_assert_int_eq(asprintf(&path, "%s/%s.json", tmpdir, name) > 0, 1);
    ck_assert_int_eq(report_write(r, path, &err), 0);
    json_decref(r);
    run_free(run);
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    return path;
}

/* Validate @path against the schema with python3-jsonschema. */
static void validate(const char *path)
{
    char script[1024], cmd[2048];
    const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3"
                                                           : "python3";
    char *cut;

    snprintf(script, sizeof(script), "%s", __FILE__);
    cut = strstr(script, "unit/test_report.c");
    ck_assert_ptr_nonnull(cut);
    strcpy(cut, "interop/pipeline_check_report.py");
    snprintf(cmd, sizeof(cmd), "%s -c 'import jsonschema' 2>/dev/null", py);
    if (system(cmd) != 0) {
        fprintf(stderr, "python3-jsonschema missing: schema not checked\n");
        return;
    }
    snprintf(cmd, sizeof(cmd), "%s '%s' '%s'", py, script, path);
    ck_assert_msg(system(cmd) == 0, "%s does not match the schema", path);
}

static json_t *load_report(const char *path)
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);

    ck_assert_msg(j != NULL, "%s: %s", path, err.text);
    return j;
}

static json_t *step(json_t *r, size_t i)
{
    return json_array_get(json_object_get(r, "steps"), i);
}

START_TEST(failed_run_report)
{
    char *path = run_to_report(
        "  - {id: a, op: info, image: x, description: fail}\n"
        "  - {id: b, op: info, image: y}\n"
        "  - {id: c, op: info, image: z, needs: [a]}\n",
        true, false, "failed");
    json_t *r = load_report(path);
    const char *msg;

    validate(path);
    ck_assert_str_eq(json_string_value(json_object_get(r, "status")),
                     "failed");
    ck_assert_str_eq(json_string_value(json_object_get(step(r, 0), "status")),
                     "failed");
    msg = json_string_value(json_object_get(
        json_object_get(step(r, 0), "error"), "message"));
    ck_assert_ptr_nonnull(strstr(msg, "\"quoted\"\nsecond line "
                                      "\xef\xbf\xbd\xef\xbf\xbd"));
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(step(r, 0), "error"), "code")),
                     "EIO");
    ck_assert_str_eq(json_string_value(json_object_get(step(r, 1), "status")),
                     "succeeded");
    ck_assert_str_eq(json_string_value(json_object_get(step(r, 2), "status")),
                     "skipped");
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(step(r, 2), "needs"), 0)),
                     "a");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(r, "summary"), "skipped")),
                     1);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(r, "job"), "path")),
                     "dir/\"odd\" name.yaml");
    json_decref(r);
    free(path);
}
END_TEST

START_TEST(interrupted_run_report)
{
    char *path = run_to_report("  - {id: a, op: info, image: x}\n"
                               "  - {id: b, op: info, image: y}\n",
                               false, true, "interrupted");
    json_t *r = load_report(path);

    validate(path);
    ck_assert_str_eq(json_string_value(json_object_get(r, "status")),
                     "interrupted");
    ck_assert_str_eq(json_string_value(json_object_get(step(r, 0), "status")),
                     "skipped");
    ck_assert(json_is_null(json_object_get(step(r, 0), "started_at")));
    json_decref(r);
    free(path);
}
END_TEST

START_TEST(succeeded_run_report)
{
    char *path = run_to_report("  - {id: a, op: info, image: x}\n"
                               "  - {id: b, op: digest, image: x}\n",
                               false, false, "ok");
    json_t *r = load_report(path);

    validate(path);
    ck_assert_str_eq(json_string_value(json_object_get(r, "status")),
                     "succeeded");
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(step(r, 0), "result"), "output")),
                     "bin\xef\xbf\xbd\xef\xbf\xbd out\n");
    ck_assert_int_eq(json_integer_value(json_object_get(r, "threads")), 2);
    json_decref(r);
    free(path);
}
END_TEST

static Suite *report_suite(void)
{
    Suite *s = suite_create("report");
    TCase *strings = tcase_create("strings");
    TCase *reports = tcase_create("reports");

    tcase_add_test(strings, escapes_and_invalid_utf8);
    tcase_add_test(strings, overlong_and_surrogates_are_replaced);
    tcase_add_test(strings, default_report_path);
    tcase_add_checked_fixture(reports, setup, teardown);
    tcase_add_test(reports, failed_run_report);
    tcase_add_test(reports, interrupted_run_report);
    tcase_add_test(reports, succeeded_run_report);
    suite_add_tcase(s, strings);
    suite_add_tcase(s, reports);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(report_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
