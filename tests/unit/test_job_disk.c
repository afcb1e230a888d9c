/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the disk-layout keys of job files (SPEC §9): what the
 * reader makes of partition, filesystem and files steps, the checks
 * across steps (partitions against a stated disk size, filesystem steps
 * against the table), the DAG edges of the new ops, and the canonical
 * text that fingerprints them.  The interop scripts disk_layout.sh and
 * disk_files.sh check the same errors through `diskforge validate`.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static struct job_diags diags;

static struct job *load(const char *text)
{
    job_diags_release(&diags);
    job_diags_init(&diags);
    return job_load_string("jobs/t.yaml", text, strlen(text), NULL, &diags);
}

static bool has_diag(int line, const char *needle)
{
    for (size_t i = 0; i < diags.n; i++) {
        if (diags.v[i].loc.line == line && strstr(diags.v[i].msg, needle)) {
            return true;
        }
    }
    return false;
}

#define ck_diag(line, needle)                                                 \
    do {                                                                      \
        if (!has_diag(line, needle)) {                                        \
            job_diags_print(&diags, stderr);                                  \
        }                                                                     \
        ck_assert_msg(has_diag(line, needle), "no diagnostic on line %d "     \
                      "containing \"%s\"", line, needle);                     \
    } while (0)

static void teardown(void)
{
    job_diags_release(&diags);
}

static const char good[] =
    "version: 1\n"
    "name: disk\n"
    "steps:\n"
    "  - {id: d, op: create, image: d.qcow2, size: 1G}\n"
    "  - id: p\n"
    "    op: partition\n"
    "    image: d.qcow2\n"
    "    table: gpt\n"
    "    disk_guid: 11111111-2222-3333-4444-555555555555\n"
    "    partitions:\n"
    "      - {name: esp, type: esp, size: 64M, attributes: [0, legacy_bios_bootable]}\n"
    "      - {name: root, type: 0fc63daf-8483-4772-8e79-3d69d8477de4, size: rest,\n"
    "         guid: AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE, attributes: [read_only, no_automount]}\n"
    "  - {id: f, op: filesystem, image: d.qcow2, partition: esp, type: vfat,\n"
    "     label: ESP, uuid: 1234-ABCD, from: tree, options: [-F, '32']}\n"
    "  - {id: g, op: filesystem, image: d.qcow2, partition: '2', type: ext4}\n"
    "  - {id: h, op: files, image: d.qcow2, partition: root, from: role, to: /etc//x/}\n";

START_TEST(reads_the_keys)
{
    struct job *job = load(good);
    const struct job_step *p, *f, *g, *h;
    char buf[37];

    if (!job) {
        job_diags_print(&diags, stderr);
    }
    ck_assert_ptr_nonnull(job);
    p = job_find_step(job, "p");
    ck_assert_int_eq(p->op, JOB_OP_PARTITION);
    ck_assert(job_step_has(p, JOB_KEY_DISK_GUID));
    df_guid_format(&p->disk_guid, true, buf);
    ck_assert_str_eq(buf, "11111111-2222-3333-4444-555555555555");
    ck_assert_uint_eq(p->n_parts, 2);
    ck_assert_str_eq(p->parts[0].name, "esp");
    ck_assert_uint_eq(p->parts[0].size, 64u << 20);
    ck_assert(!p->parts[0].rest && !p->parts[0].has_guid);
    ck_assert_uint_eq(p->parts[0].attributes, 5); /* bits 0 and 2 */
    ck_assert_str_eq(df_gpt_type_name(&p->parts[0].type), "esp");
    ck_assert(p->parts[1].rest && p->parts[1].has_guid);
    ck_assert_str_eq(df_gpt_type_name(&p->parts[1].type), "linux");
    ck_assert_uint_eq(p->parts[1].attributes,
                      UINT64_C(1) << 60 | UINT64_C(1) << 63);
    f = job_find_step(job, "f");
    ck_assert_int_eq(f->fs_type, JOB_FS_VFAT);
    ck_assert_str_eq(f->partition, "esp");
    ck_assert_str_eq(f->label, "ESP");
    ck_assert_str_eq(f->uuid, "1234-ABCD");
    ck_assert_str_eq(f->from, "jobs/tree");
    ck_assert_uint_eq(f->options.n, 2);
    ck_assert_str_eq(f->options.v[1], "32");
    g = job_find_step(job, "g");
    ck_assert_int_eq(g->fs_type, JOB_FS_EXT4);
    ck_assert_str_eq(g->partition, "2");
    h = job_find_step(job, "h");
    ck_assert_int_eq(h->op, JOB_OP_FILES);
    ck_assert_str_eq(h->to, "/etc/x"); /* a directory of the file system */
    ck_assert_str_eq(h->from, "jobs/role");
    job_free(job);
}
END_TEST

START_TEST(dag_edges)
{
    struct job *job = load(good);
    struct dag *dag;

    ck_assert_ptr_nonnull(job);
    dag = dag_build(job, &diags);
    ck_assert_ptr_nonnull(dag);
    /* p after d, f after p, g after f, h after g: one image, in order */
    for (size_t i = 1; i < 5; i++) {
        ck_assert_uint_eq(dag->nodes[i].n_preds, 1);
        ck_assert_uint_eq(dag->nodes[i].preds[0].pred, i - 1);
        ck_assert_uint_eq(dag->nodes[i].writes.n, 1);
        ck_assert_str_eq(dag->nodes[i].writes.v[0], "jobs/d.qcow2");
    }
    ck_assert_uint_eq(dag->nodes[2].reads.n, 1);
    ck_assert_str_eq(dag->nodes[2].reads.v[0], "jobs/tree");
    ck_assert_str_eq(dag->nodes[4].reads.v[0], "jobs/role");
    dag_free(dag);
    job_free(job);
}
END_TEST

START_TEST(canonical_text)
{
    struct job *job = load(good);
    char *a, *b;

    ck_assert_ptr_nonnull(job);
    a = job_step_disk_text(job_find_step(job, "p"));
    ck_assert_ptr_nonnull(strstr(a, "disk_guid=11111111-2222-3333-4444-"));
    ck_assert_ptr_nonnull(strstr(a, "1 name=root type=0FC63DAF-8483-4772-"
                                    "8E79-3D69D8477DE4 size=0 rest=1 "
                                    "guid=AAAAAAAA-BBBB-CCCC-DDDD-"
                                    "EEEEEEEEEEEE attributes=9000000000000000"));
    b = job_step_disk_text(job_find_step(job, "f"));
    ck_assert_str_eq(b, "partition=esp type=vfat label=ESP uuid=1234-ABCD\n"
                        "option=-F\noption=32\n");
    free(a);
    free(b);
    a = job_step_disk_text(job_find_step(job, "h"));
    ck_assert_str_eq(a, "partition=root to=/etc/x\n");
    free(a);
    job_free(job);
}
END_TEST

START_TEST(cross_step_checks)
{
    struct job *job = load(
        "version: 1\n"
        "steps:\n"
        "  - {id: d, op: create, image: d.raw, size: 100M}\n"
        "  - {id: r, op: resize, image: d.raw, size: 64M}\n"
        "  - id: p\n"
        "    op: partition\n"
        "    image: d.raw\n"
        "    partitions:\n"
        "      - {name: a, type: linux, size: 32M}\n"
        "      - {name: b, type: linux, size: 32M}\n"
        "  - {id: f, op: filesystem, image: d.raw, partition: c, type: ext4}\n"
        "  - {id: g, op: files, image: d.raw, partition: '3', from: x}\n"
        "  - {id: h, op: filesystem, image: d.raw, partition: '2', type: vfat,"
        " uuid: 12345678, label: TWELVE_CHARS}\n");

    ck_assert_ptr_null(job);
    /* the resize states the size the partition step sees */
    ck_diag(10, "partition 'b' does not fit on the disk of 67108864 bytes");
    ck_diag(11, "step 'p' makes no partition 'c'");
    ck_diag(12, "step 'p' makes no partition '3'");
    ck_diag(13, "label 'TWELVE_CHARS' is longer than the 11 bytes vfat holds");
    ck_assert_uint_eq(diags.n, 4);
}
END_TEST

START_TEST(unknown_size_is_checked_at_run_time)
{
    struct job *job = load(
        "version: 1\n"
        "steps:\n"
        "  - id: p\n"
        "    op: partition\n"
        "    image: somebody-elses.raw\n"
        "    partitions: [{name: a, type: linux, size: 1T}]\n");

    ck_assert_ptr_nonnull(job);
    job_free(job);
}
END_TEST

START_TEST(partition_errors)
{
    struct job *job = load(
        "version: 1\n"
        "steps:\n"
        "  - id: p\n"
        "    op: partition\n"
        "    image: d.raw\n"
        "    table: mbr\n"
        "    partitions:\n"
        "      - {name: a, type: linux, size: 1M, colour: red}\n"
        "      - {type: linux, size: 1M}\n"
        "      - {name: c, size: 1M}\n"
        "      - {name: d, type: linux}\n"
        "      - just a string\n"
        "      - {name: 0123456789012345678901234567890123456, type: swap, size: 1M}\n");

    ck_assert_ptr_null(job);
    ck_diag(6, "invalid table 'mbr'");
    ck_diag(8, "unknown key 'colour' in a partition");
    ck_diag(9, "a partition needs a 'name'");
    ck_diag(10, "partition 'c' needs a 'type'");
    ck_diag(11, "partition 'd' needs a 'size'");
    ck_diag(12, "a partition is a mapping");
    ck_diag(13, "longer than the 36 UTF-16 code units");
}
END_TEST

static Suite *job_disk_suite(void)
{
    Suite *s = suite_create("job_disk");
    TCase *tc = tcase_create("keys");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, reads_the_keys);
    tcase_add_test(tc, dag_edges);
    tcase_add_test(tc, canonical_text);
    tcase_add_test(tc, cross_step_checks);
    tcase_add_test(tc, unknown_size_is_checked_at_run_time);
    tcase_add_test(tc, partition_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(job_disk_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
