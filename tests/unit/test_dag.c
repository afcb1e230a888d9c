/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the DAG builder (src/pipeline/dag.c): each hazard kind,
 * reads through backing chains of overlays, commit writing the backing
 * file, needs, cycle reports, and the plan's text, JSON and DOT forms.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static struct job_diags diags;
static struct job *job;
static struct dag *dag;

static void build(const char *steps)
{
    char text[8192];
    int n = snprintf(text, sizeof(text), "version: 1\nsteps:\n%s", steps);

    job_diags_init(&diags);
    job = job_load_string("t.yaml", text, (size_t)n, NULL, &diags);
    if (!job) {
        job_diags_print(&diags, stderr);
    }
    ck_assert_ptr_nonnull(job);
    dag = dag_build(job, &diags);
}

static void teardown(void)
{
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    dag = NULL;
    job = NULL;
}

static const struct dag_edge *edge(const char *from, const char *to)
{
    const struct job_step *a = job_find_step(job, from);
    const struct job_step *b = job_find_step(job, to);

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    for (size_t k = 0; k < dag->nodes[b->index].n_preds; k++) {
        if (dag->nodes[b->index].preds[k].pred == a->index) {
            return &dag->nodes[b->index].preds[k];
        }
    }
    return NULL;
}

/* Does @to depend on @from for reason @why on a path ending in @path? */
static bool has(const char *from, const char *to, enum dag_why why,
                const char *path)
{
    const struct dag_edge *e = edge(from, to);

    for (size_t r = 0; e && r < e->n_reasons; r++) {
        const char *p = e->reasons[r].path;
        if (e->reasons[r].why == why &&
            (!path || (p && strlen(p) >= strlen(path) &&
                       !strcmp(p + strlen(p) - strlen(path), path)))) {
            return true;
        }
    }
    return false;
}

START_TEST(read_after_write)
{
    build("  - {id: mk, op: create, image: a.img, size: 1M}\n"
          "  - {id: sum, op: digest, image: a.img}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("mk", "sum", DAG_RAW, "a.img"));
    ck_assert_uint_eq(dag->nodes[1].n_preds, 1);
}
END_TEST

START_TEST(write_after_write)
{
    build("  - {id: mk, op: create, image: a.img, size: 1M}\n"
          "  - {id: f, op: fill, image: a.img, pattern: 1}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("mk", "f", DAG_WAW, "a.img"));
}
END_TEST

START_TEST(write_after_read)
{
    build("  - {id: mk, op: create, image: a.img, size: 1M}\n"
          "  - {id: s1, op: digest, image: a.img}\n"
          "  - {id: s2, op: info, image: a.img}\n"
          "  - {id: f, op: fill, image: a.img, pattern: 1}\n"
          "  - {id: s3, op: digest, image: a.img}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("s1", "f", DAG_WAR, "a.img"));
    ck_assert(has("s2", "f", DAG_WAR, "a.img"));
    ck_assert(has("mk", "f", DAG_WAW, "a.img"));
    /* s3 reads what f wrote, not what mk wrote */
    ck_assert(has("f", "s3", DAG_RAW, "a.img"));
    ck_assert_ptr_null(edge("mk", "s3"));
    /* readers of the same version do not wait for each other */
    ck_assert_ptr_null(edge("s1", "s2"));
}
END_TEST

START_TEST(independent_paths_have_no_edge)
{
    build("  - {id: a, op: create, image: a.img, size: 1M}\n"
          "  - {id: b, op: create, image: b.img, size: 1M}\n"
          "  - {id: c, op: compare, a: a.img, b: b.img}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert_uint_eq(dag->nodes[1].n_preds, 0);
    ck_assert(has("a", "c", DAG_RAW, "a.img"));
    ck_assert(has("b", "c", DAG_RAW, "b.img"));
}
END_TEST

START_TEST(overlay_reads_its_chain)
{
    build("  - {id: base, op: create, image: base.qcow2, size: 1M}\n"
          "  - {id: mid, op: overlay, image: mid.qcow2, backing: base.qcow2}\n"
          "  - {id: top, op: overlay, image: top.qcow2, backing: mid.qcow2}\n"
          "  - {id: sum, op: digest, image: top.qcow2}\n"
          "  - {id: w, op: fill, image: top.qcow2, pattern: 7}\n"
          "  - {id: poke, op: fill, image: base.qcow2, pattern: 1}\n");
    ck_assert_ptr_nonnull(dag);
    /* reading top reads mid and base, as the job knows the chain */
    ck_assert(has("top", "sum", DAG_RAW, "top.qcow2"));
    ck_assert(has("mid", "sum", DAG_RAW, "mid.qcow2"));
    ck_assert(has("base", "sum", DAG_RAW, "base.qcow2"));
    /* writing an overlay reads (never writes) the base */
    ck_assert(has("base", "w", DAG_RAW, "base.qcow2"));
    ck_assert(has("sum", "w", DAG_WAR, "top.qcow2"));
    /* a write to the base waits for everyone who read it through a chain */
    ck_assert(has("sum", "poke", DAG_WAR, "base.qcow2"));
    ck_assert(has("w", "poke", DAG_WAR, "base.qcow2"));
    ck_assert(has("mid", "poke", DAG_WAR, "base.qcow2"));
}
END_TEST

START_TEST(commit_writes_the_backing_file)
{
    build("  - {id: base, op: create, image: base.qcow2, size: 1M}\n"
          "  - {id: ov, op: overlay, image: ov.qcow2, backing: base.qcow2}\n"
          "  - {id: f, op: fill, image: ov.qcow2, pattern: 3}\n"
          "  - {id: peek, op: digest, image: base.qcow2}\n"
          "  - {id: c, op: commit, image: ov.qcow2}\n"
          "  - {id: after, op: digest, image: base.qcow2}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("f", "c", DAG_WAW, "ov.qcow2"));
    ck_assert(has("base", "c", DAG_WAW, "base.qcow2"));
    ck_assert(has("peek", "c", DAG_WAR, "base.qcow2"));
    ck_assert(has("c", "after", DAG_RAW, "base.qcow2"));
    ck_assert_uint_eq(dag->nodes[4].outputs.n, 2);
}
END_TEST

START_TEST(rebase_changes_the_chain)
{
    build("  - {id: a, op: create, image: a.qcow2, size: 1M}\n"
          "  - {id: b, op: create, image: b.qcow2, size: 1M}\n"
          "  - {id: ov, op: overlay, image: ov.qcow2, backing: a.qcow2}\n"
          "  - {id: rb, op: rebase, image: ov.qcow2, backing: b.qcow2}\n"
          "  - {id: sum, op: digest, image: ov.qcow2}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("a", "rb", DAG_RAW, "a.qcow2")); /* reads the old chain */
    ck_assert(has("b", "rb", DAG_RAW, "b.qcow2"));
    ck_assert(has("b", "sum", DAG_RAW, "b.qcow2"));
    ck_assert_ptr_null(edge("a", "sum"));
}
END_TEST

START_TEST(command_inputs_and_outputs)
{
    build("  - {id: fs, op: command, argv: [mkfs], outputs: [root.ext4]}\n"
          "  - {id: mk, op: create, image: d.qcow2, size: 1G}\n"
          "  - {id: w, op: write, image: d.qcow2, from: root.ext4}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("fs", "w", DAG_RAW, "root.ext4"));
    ck_assert(has("mk", "w", DAG_WAW, "d.qcow2"));
}
END_TEST

START_TEST(needs_edges_merge_with_paths)
{
    char *why;

    build("  - {id: mk, op: create, image: a.img, size: 1M}\n"
          "  - {id: sum, op: digest, image: a.img, needs: [mk, late]}\n"
          "  - {id: late, op: info, image: z.img}\n");
    ck_assert_ptr_nonnull(dag);
    ck_assert(has("mk", "sum", DAG_NEEDS, NULL));
    ck_assert(has("mk", "sum", DAG_RAW, "a.img"));
    ck_assert(has("late", "sum", DAG_NEEDS, NULL));
    why = dag_explain(dag, 1, edge("mk", "sum"));
    ck_assert_str_eq(why, "reads 'a.img', written by 'mk' (read after write)"
                          "; needs 'mk'");
    free(why);
}
END_TEST

START_TEST(cycle_through_needs)
{
    build("  - {id: a, op: info, image: x, needs: [c]}\n"
          "  - {id: b, op: info, image: y, needs: [a]}\n"
          "  - {id: c, op: info, image: z, needs: [b]}\n");
    ck_assert_ptr_null(dag);
    ck_assert_uint_ge(diags.n, 1);
    ck_assert_ptr_nonnull(strstr(diags.v[0].msg, "dependency cycle: "));
    ck_assert_ptr_nonnull(strstr(diags.v[0].msg, "a -> c -> b -> a"));
    ck_assert_int_gt(diags.v[0].loc.line, 0);
}
END_TEST

START_TEST(cycle_between_needs_and_paths)
{
    /* mk writes a.img first, so sum (later) reads after it; but mk also
     * says it needs sum: the two rules cannot both hold */
    build("  - {id: mk, op: create, image: a.img, size: 1M, needs: [sum]}\n"
          "  - {id: sum, op: digest, image: a.img}\n");
    ck_assert_ptr_null(dag);
    ck_assert_ptr_nonnull(strstr(diags.v[0].msg, "mk -> sum -> mk"));
    ck_assert_ptr_nonnull(strstr(diags.v[0].msg, "'sum' reads 'a.img', "
                                                 "written by 'mk'"));
    ck_assert_ptr_nonnull(strstr(diags.v[0].msg, "'mk' needs 'sum'"));
    ck_assert_int_eq(diags.v[0].loc.line, 3);
}
END_TEST

static char *capture(enum plan_format fmt)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    plan_print(dag, NULL, fmt, f);
    fclose(f);
    return buf;
}

START_TEST(plan_formats)
{
    char *out;
    json_t *j;
    json_error_t jerr;

    build("  - {id: base, op: create, image: 'b \"q\".qcow2', size: 1M}\n"
          "  - {id: ov, op: overlay, image: o.qcow2, backing: 'b \"q\".qcow2'}\n");
    ck_assert_ptr_nonnull(dag);
    out = capture(PLAN_TEXT);
    ck_assert_ptr_nonnull(strstr(out, "after base: reads 'b \"q\".qcow2', "
                                      "written by 'base' (read after write)"));
    free(out);
    out = capture(PLAN_DOT);
    ck_assert_ptr_nonnull(strstr(out, "\"base\" -> \"ov\""));
    ck_assert_ptr_nonnull(strstr(out, "read_after_write b \\\"q\\\".qcow2"));
    free(out);
    out = capture(PLAN_JSON);
    j = json_loads(out, 0, &jerr);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(
                                            json_array_get(json_object_get(
                                                               j, "steps"), 1),
                                            "dependencies"), 0), "id")),
                     "base");
    json_decref(j);
    free(out);
}
END_TEST

static Suite *dag_suite(void)
{
    Suite *s = suite_create("dag");
    TCase *tc = tcase_create("dag");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, read_after_write);
    tcase_add_test(tc, write_after_write);
    tcase_add_test(tc, write_after_read);
    tcase_add_test(tc, independent_paths_have_no_edge);
    tcase_add_test(tc, overlay_reads_its_chain);
    tcase_add_test(tc, commit_writes_the_backing_file);
    tcase_add_test(tc, rebase_changes_the_chain);
    tcase_add_test(tc, command_inputs_and_outputs);
    tcase_add_test(tc, needs_edges_merge_with_paths);
    tcase_add_test(tc, cycle_through_needs);
    tcase_add_test(tc, cycle_between_needs_and_paths);
    tcase_add_test(tc, plan_formats);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dag_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
