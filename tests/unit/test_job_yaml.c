/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the job-file reader (src/pipeline/job-yaml.c): values,
 * variables, defaults, paths, and every kind of error with the line and
 * column it names.  Job texts are given in memory under the name
 * "jobs/t.yaml", so relative paths resolve against "jobs".
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static struct job_diags diags;

static struct job *load_with(const char *text, const struct job_vars *set)
{
    job_diags_release(&diags);
    job_diags_init(&diags);
    return job_load_string("jobs/t.yaml", text, strlen(text), set, &diags);
}

static struct job *load(const char *text)
{
    return load_with(text, NULL);
}

/* Is there a diagnostic at @line:@col whose message holds @needle? */
static bool has_diag(int line, int col, const char *needle)
{
    for (size_t i = 0; i < diags.n; i++) {
        if (diags.v[i].loc.line == line && diags.v[i].loc.col == col &&
            strstr(diags.v[i].msg, needle)) {
            return true;
        }
    }
    return false;
}

static void dump(void)
{
    job_diags_print(&diags, stderr);
}

#define ck_diag(line, col, needle)                                            \
    do {                                                                      \
        if (!has_diag(line, col, needle)) {                                   \
            dump();                                                           \
        }                                                                     \
        ck_assert_msg(has_diag(line, col, needle),                            \
                      "no diagnostic %d:%d containing \"%s\"", line, col,     \
                      needle);                                                \
    } while (0)

static void teardown(void)
{
    job_diags_release(&diags);
}

/* ---- good files ---- */

START_TEST(reads_a_full_step)
{
    struct job *job = load("version: 1\n"
                           "name: golden\n"
                           "steps:\n"
                           "  - id: base\n"
                           "    op: create\n"
                           "    image: out/base.qcow2\n"
                           "    size: 8G\n"
                           "    preallocation: metadata\n"
                           "    cluster_size: 128K\n"
                           "    lazy_refcounts: true\n"
                           "    refcount_bits: 16\n"
                           "    compat: \"1.1\"\n"
                           "    description: the base\n");
    const struct job_step *s;

    ck_assert_ptr_nonnull(job);
    ck_assert_str_eq(job->name, "golden");
    ck_assert_str_eq(job->dir, "jobs");
    ck_assert_uint_eq(job->n_steps, 1);
    s = &job->steps[0];
    ck_assert_str_eq(s->id, "base");
    ck_assert_int_eq(s->op, JOB_OP_CREATE);
    ck_assert_str_eq(s->image, "jobs/out/base.qcow2");
    ck_assert_uint_eq(s->size, 8ull << 30);
    ck_assert_int_eq(s->prealloc, DF_PREALLOC_METADATA);
    ck_assert_uint_eq(s->cluster_size, 128 << 10);
    ck_assert(s->lazy_refcounts);
    ck_assert_int_eq(s->compat, 3);
    ck_assert_int_eq(s->format, DF_FMT_QCOW2); /* from the name */
    ck_assert_str_eq(s->description, "the base");
    ck_assert_int_eq(s->key_loc[JOB_KEY_SIZE].line, 7);
    ck_assert_int_eq(s->key_loc[JOB_KEY_SIZE].col, 11);
    job_free(job);
}
END_TEST

START_TEST(vars_set_and_defaults)
{
    struct job_vars set = { 0 };
    struct job *job;

    job_vars_set_arg(&set, "out=/tmp/elsewhere");
    job = load_with("version: 1\n"
                    "vars:\n"
                    "  out: build\n"
                    "  size: 1G\n"
                    "  base: ${out}/base\n"
                    "defaults:\n"
                    "  format: qcow2\n"
                    "  cluster_size: 64K\n"
                    "  compat: '0.10'\n"
                    "steps:\n"
                    "  - id: a\n"
                    "    op: create\n"
                    "    image: ${base}.img\n"
                    "    size: ${size}\n"
                    "  - id: b\n"
                    "    op: create\n"
                    "    image: raw.img\n"
                    "    format: raw\n"
                    "    size: $${not-a-var}1M\n",
                    &set);
    ck_assert_ptr_null(job); /* "$${not-a-var}1M" is not a size */
    ck_diag(19, 11, "invalid size '${not-a-var}1M'");
    job = load_with("version: 1\n"
                    "vars:\n"
                    "  out: build\n"
                    "  size: 1G\n"
                    "  base: ${out}/base\n"
                    "defaults:\n"
                    "  format: qcow2\n"
                    "  cluster_size: 64K\n"
                    "  compat: '0.10'\n"
                    "steps:\n"
                    "  - id: a\n"
                    "    op: create\n"
                    "    image: ${base}.img\n"
                    "    size: ${size}\n"
                    "  - id: b\n"
                    "    op: overlay\n"
                    "    image: o.qcow2\n"
                    "    backing: ${base}.img\n",
                    &set);
    if (!job) {
        dump();
    }
    ck_assert_ptr_nonnull(job);
    /* --set wins over vars, and vars see it */
    ck_assert_str_eq(job->steps[0].image, "/tmp/elsewhere/base.img");
    ck_assert_uint_eq(job->steps[0].size, 1ull << 30);
    ck_assert_int_eq(job->steps[0].format, DF_FMT_QCOW2); /* defaults */
    ck_assert_int_eq(job->steps[0].compat, 2);
    ck_assert_int_eq(job->steps[1].format, DF_FMT_QCOW2);
    ck_assert_int_eq(job->steps[1].compat, 2);
    ck_assert_str_eq(job->steps[1].backing, "/tmp/elsewhere/base.img");
    ck_assert_str_eq(job->steps[1].image, "jobs/o.qcow2");
    job_free(job);
    job_vars_release(&set);
}
END_TEST

START_TEST(explicit_keys_beat_defaults)
{
    struct job *job = load("version: 1\n"
                           "defaults: {format: qcow2, preallocation: full}\n"
                           "steps:\n"
                           "  - {id: r, op: create, image: r.img, size: 1M,"
                           " format: raw, preallocation: off}\n"
                           "  - {id: d, op: digest, image: r.img}\n");

    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(job->steps[0].format, DF_FMT_RAW);
    ck_assert_int_eq(job->steps[0].prealloc, DF_PREALLOC_OFF);
    ck_assert_int_eq(job->steps[1].format, DF_FMT_AUTO); /* not for digest */
    job_free(job);
}
END_TEST

START_TEST(ops_and_values)
{
    struct job *job = load(
        "version: 1\n"
        "steps:\n"
        "  - {id: f1, op: fill, image: a.img, pattern: 0x41, offset: 1M, "
        "length: 4K}\n"
        "  - {id: f2, op: fill, image: a.img, pattern: zero}\n"
        "  - {id: f3, op: fill, image: a.img, pattern: 'random:42'}\n"
        "  - id: d\n"
        "    op: digest\n"
        "    image: a.img\n"
        "    sha256: sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789"
        "abcdef0123456789\n"
        "  - {id: c, op: check, image: a.qcow2, repair: leaks, "
        "expect: {errors: 0, leaks: 2}}\n"
        "  - {id: cmd, op: command, argv: [mkfs.ext4, -q, x.img], "
        "inputs: [a.img], outputs: [x.img]}\n"
        "  - {id: sh, op: command, shell: 'echo $HOME > y'}\n"
        "  - {id: cv, op: convert, from: a.img, to: b.qcow2, "
        "compress: zstd, sparse_size: 0}\n"
        "  - {id: rb, op: rebase, image: b.qcow2, backing: null}\n"
        "  - {id: cp, op: copy, from: a.img, to: c.img, sparse: always}\n");
    const struct job_step *s;

    if (!job) {
        dump();
    }
    ck_assert_ptr_nonnull(job);
    s = job_find_step(job, "f1");
    ck_assert_int_eq(s->pattern, JOB_PATTERN_BYTE);
    ck_assert_int_eq(s->pattern_byte, 0x41);
    ck_assert_uint_eq(s->offset, 1 << 20);
    ck_assert_uint_eq(s->length, 4096);
    ck_assert_int_eq(job_find_step(job, "f2")->pattern, JOB_PATTERN_ZERO);
    ck_assert_uint_eq(job_find_step(job, "f3")->pattern_seed, 42);
    ck_assert_str_eq(job_find_step(job, "d")->sha256,
                     "abcdef0123456789abcdef0123456789abcdef0123456789"
                     "abcdef0123456789");
    s = job_find_step(job, "c");
    ck_assert_int_eq(s->repair, DF_REPAIR_LEAKS);
    ck_assert_uint_eq(s->expect_leaks, 2);
    s = job_find_step(job, "cmd");
    ck_assert_uint_eq(s->argv.n, 3);
    ck_assert_str_eq(s->argv.v[0], "mkfs.ext4"); /* argv is not a path */
    ck_assert_str_eq(s->outputs.v[0], "jobs/x.img");
    ck_assert_str_eq(job_find_step(job, "sh")->shell, "echo $HOME > y");
    s = job_find_step(job, "cv");
    ck_assert_int_eq(s->compress, JOB_COMPRESS_ZSTD);
    ck_assert_uint_eq(s->sparse_size, 0);
    ck_assert_ptr_null(job_find_step(job, "rb")->backing);
    ck_assert_int_eq(job_find_step(job, "cp")->sparse, JOB_SPARSE_ALWAYS);
    job_free(job);
}
END_TEST

/* ---- errors, each at its position ---- */

START_TEST(unknown_key_suggests)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - id: a\n"
                            "    op: create\n"
                            "    imgae: x.img\n"
                            "    size: 1M\n"));
    ck_diag(5, 5, "unknown key 'imgae' (did you mean 'image'?)");
    ck_diag(3, 5, "op 'create' needs 'image'");
}
END_TEST

START_TEST(key_of_another_op)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - {id: a, op: digest, image: x, sparse: auto}\n"));
    ck_diag(3, 35, "op 'digest' has no key 'sparse'");
}
END_TEST

START_TEST(unknown_op_suggests)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - id: a\n"
                            "    op: creat\n"
                            "    image: x\n"));
    ck_diag(4, 9, "unknown op 'creat' (did you mean 'create'?)");
    ck_assert_uint_eq(diags.n, 1); /* no cascade from the unknown op */
}
END_TEST

START_TEST(wrong_types)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - id: a\n"
                            "    op: create\n"
                            "    image: [x, y]\n"
                            "    size: 1M\n"
                            "    lazy_refcounts: maybe\n"
                            "    refcount_bits: 12\n"
                            "  - id: b\n"
                            "    op: command\n"
                            "    argv: 'ls -l'\n"
                            "  - id: c\n"
                            "    op: check\n"
                            "    image: c.qcow2\n"
                            "    expect: 3\n"));
    ck_diag(5, 12, "'image' must be a single value, not a list");
    ck_diag(7, 21, "'lazy_refcounts' must be true or false, not 'maybe'");
    ck_diag(8, 20, "refcount_bits");
    ck_diag(11, 11, "'argv' must be a list");
    ck_diag(15, 13, "'expect' must be a mapping");
}
END_TEST

START_TEST(bad_sizes_and_patterns)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - {id: a, op: create, image: x, size: 12Q}\n"
                            "  - {id: b, op: fill, image: x, pattern: 300}\n"
                            "  - {id: c, op: fill, image: x, pattern: "
                            "'random:x'}\n"
                            "  - {id: d, op: digest, image: x, sha256: abc}\n"
                            "  - {id: e, op: create, image: e.qcow2, size: 1M,"
                            " cluster_size: 3K}\n"
                            "  - {id: f, op: convert, from: x, to: y, "
                            "sparse_size: 100}\n"
                            "  - {id: g, op: create, image: g, size: 1M, "
                            "preallocation: metdata}\n"));
    ck_diag(3, 41, "invalid size '12Q'");
    ck_diag(4, 42, "invalid pattern '300'");
    ck_diag(5, 42, "random:SEED");
    ck_diag(6, 43, "expected 64 hexadecimal digits");
    ck_diag(7, 65, "invalid cluster_size");
    ck_diag(8, 55, "invalid sparse_size");
    ck_diag(9, 60, "did you mean 'metadata'?");
}
END_TEST

START_TEST(ids_and_needs)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - {id: base, op: info, image: x}\n"
                            "  - {id: base, op: info, image: y}\n"
                            "  - {id: 'bad id!', op: info, image: z}\n"
                            "  - {id: c, op: info, image: z, needs: [bsae]}\n"
                            "  - {id: d, op: info, image: z, needs: d}\n"
                            "  - {op: info, image: z}\n"));
    ck_diag(4, 10, "duplicate step id 'base' (first used at line 3)");
    ck_diag(5, 10, "invalid step id 'bad id!'");
    ck_diag(6, 41, "needs 'bsae', which is not a step (did you mean "
                   "'base'?)");
    ck_diag(7, 40, "step 'd' needs itself");
    ck_diag(8, 5, "step 6 has no 'id'");
}
END_TEST

START_TEST(variables_errors)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "vars: {out: build}\n"
                            "steps:\n"
                            "  - {id: a, op: info, image: '${otu}/x'}\n"
                            "  - {id: b, op: info, image: '${out'}\n"));
    ck_diag(4, 30, "undefined variable 'otu' (did you mean 'out'?)");
    ck_diag(5, 30, "unterminated '${'");
}
END_TEST

START_TEST(option_combinations)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - {id: a, op: create, image: a.raw, size: 1M, "
                            "cluster_size: 64K}\n"
                            "  - {id: b, op: create, image: b.qcow2, size: 1M,"
                            " compat: '0.10', lazy_refcounts: true}\n"
                            "  - {id: c, op: overlay, image: c.raw, "
                            "backing: b.qcow2, format: raw}\n"
                            "  - {id: d, op: convert, from: a, to: d.qcow2, "
                            "compress: zlib, preallocation: full}\n"
                            "  - {id: e, op: command, argv: [true], "
                            "shell: 'true'}\n"
                            "  - {id: f, op: create, image: f.raw}\n"));
    ck_diag(3, 63, "'cluster_size' is only for qcow2 images");
    ck_diag(4, 83, "lazy_refcounts needs compat 1.1");
    ck_diag(5, 66, "an overlay is always qcow2");
    ck_diag(6, 58, "compression and preallocation");
    ck_diag(7, 47, "give 'argv' or 'shell', not both");
    ck_diag(8, 5, "op 'create' needs 'size'");
}
END_TEST

START_TEST(top_level_errors)
{
    ck_assert_ptr_null(load("version: 2\n"
                            "step:\n"
                            "  - {id: a, op: info, image: x}\n"));
    ck_diag(1, 10, "unsupported job file version 2");
    ck_diag(2, 1, "unknown key 'step' at the top of the job (did you mean "
                  "'steps'?)");
    ck_diag(1, 1, "the job has no 'steps'");
}
END_TEST

START_TEST(duplicate_keys)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - id: a\n"
                            "    op: info\n"
                            "    image: x\n"
                            "    image: y\n"));
    ck_diag(6, 5, "duplicate key 'image' (first at line 5)");
}
END_TEST

START_TEST(yaml_syntax_error)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - id: a\n"
                            "    op: [info\n"
                            "    image: x\n"));
    ck_assert_uint_eq(diags.n, 1);
    ck_assert_ptr_nonnull(strstr(diags.v[0].msg, "YAML syntax error"));
    ck_assert_int_gt(diags.v[0].loc.line, 3);
    ck_assert_int_gt(diags.v[0].loc.col, 0);
}
END_TEST

START_TEST(every_error_is_reported)
{
    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - {id: a, op: fill, image: x, pattern: 999}\n"
                            "  - {id: b, op: create, image: y, size: huge}\n"
                            "  - {id: c, op: nope, image: z}\n"
                            "  - {id: d, op: info, image: z, needs: [zz]}\n"));
    ck_assert_uint_eq(diags.n, 4);
}
END_TEST

START_TEST(print_format)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    ck_assert_ptr_null(load("version: 1\n"
                            "steps:\n"
                            "  - {id: a, op: fill, image: x, pattern: 999}\n"));
    f = open_memstream(&buf, &len);
    job_diags_print(&diags, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(buf, "jobs/t.yaml:3:42: error: "));
    free(buf);
}
END_TEST

/* ---- paths ---- */

START_TEST(path_helpers)
{
    char *p;

    p = job_path_normalize("a/./b//c/../d/");
    ck_assert_str_eq(p, "a/b/d");
    free(p);
    p = job_path_normalize("../x/../../y");
    ck_assert_str_eq(p, "../../y");
    free(p);
    p = job_path_resolve("jobs", "/abs/x");
    ck_assert_str_eq(p, "/abs/x");
    free(p);
    p = job_path_resolve("jobs", "../build/x.img");
    ck_assert_str_eq(p, "build/x.img");
    free(p);
    p = job_path_relative("build/img", "build/base.qcow2");
    ck_assert_str_eq(p, "../base.qcow2");
    free(p);
    p = job_path_relative("build", "build/base.qcow2");
    ck_assert_str_eq(p, "base.qcow2");
    free(p);
    p = job_path_relative("/a/b", "/c/d");
    ck_assert_str_eq(p, "../../c/d");
    free(p);
    p = job_path_relative(".", "x/y");
    ck_assert_str_eq(p, "x/y");
    free(p);
}
END_TEST

static Suite *job_suite(void)
{
    Suite *s = suite_create("job_yaml");
    TCase *good = tcase_create("good");
    TCase *bad = tcase_create("errors");
    TCase *paths = tcase_create("paths");

    tcase_add_checked_fixture(good, NULL, teardown);
    tcase_add_checked_fixture(bad, NULL, teardown);
    tcase_add_test(good, reads_a_full_step);
    tcase_add_test(good, vars_set_and_defaults);
    tcase_add_test(good, explicit_keys_beat_defaults);
    tcase_add_test(good, ops_and_values);
    tcase_add_test(bad, unknown_key_suggests);
    tcase_add_test(bad, key_of_another_op);
    tcase_add_test(bad, unknown_op_suggests);
    tcase_add_test(bad, wrong_types);
    tcase_add_test(bad, bad_sizes_and_patterns);
    tcase_add_test(bad, ids_and_needs);
    tcase_add_test(bad, variables_errors);
    tcase_add_test(bad, option_combinations);
    tcase_add_test(bad, top_level_errors);
    tcase_add_test(bad, duplicate_keys);
    tcase_add_test(bad, yaml_syntax_error);
    tcase_add_test(bad, every_error_is_reported);
    tcase_add_test(bad, print_format);
    tcase_add_test(paths, path_helpers);
    suite_add_tcase(s, good);
    suite_add_tcase(s, bad);
    suite_add_tcase(s, paths);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(job_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
