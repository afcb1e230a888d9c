/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of incremental runs (src/pipeline/incremental.c, state.c):
 * definition fingerprints, path identities, the hash cache and its
 * distrust window, and each rule that decides whether a step runs, with
 * a fake op table that writes small files instead of images.  One rule,
 * one test.  Every test works in its own mkdtemp() directory with its own
 * store, so two copies of the suite can run at once.
 *
 * The fake op writes its step id into each path the step writes: fresh
 * for create/overlay/copy/convert/command, appended for in-place ops, so
 * that the files change exactly when a step runs.  A step whose
 * description is "fail" fails.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "incremental.h"
#include "pipeline.h"

/* ---- the fake op ---- */

static int fake_op(struct op_ctx *ctx)
{
    const struct job_step *s = ctx->step;
    bool fresh = s->op == JOB_OP_CREATE || s->op == JOB_OP_OVERLAY ||
                 s->op == JOB_OP_COPY || s->op == JOB_OP_CONVERT ||
                 s->op == JOB_OP_COMMAND;

    if (s->description && !strcmp(s->description, "fail")) {
        return df_fail(&ctx->err, DF_E_IO, "'%s': planned failure", s->id);
    }
    for (size_t k = 0; k < ctx->node->writes.n; k++) {
        int fd = open(ctx->node->writes.v[k],
                      O_WRONLY | O_CREAT | (fresh ? O_TRUNC : O_APPEND),
                      0644);
        if (fd < 0) {
            return df_fail_sys(&ctx->err, "cannot write '%s'",
                               ctx->node->writes.v[k]);
        }
        if (write(fd, s->id, strlen(s->id)) < 0 || write(fd, "\n", 1) < 0) {
            close(fd);
            return df_fail_sys(&ctx->err, "cannot write");
        }
        close(fd);
        if (s->description && !strcmp(s->description, "digest")) {
            /* a digest "computed while writing": not the file's, so a
             * test sees whether the file was read instead */
            unsigned char d[32];
            memset(d, 0xab, sizeof(d));
            ck_assert_int_eq(op_set_digest(ctx, ctx->node->writes.v[k], d,
                                           NULL), 0);
        }
    }
    return 0;
}

static struct op_table fake_table;

/* ---- a fixture: a directory, a store, a job, a decision, a run ---- */

struct fx {
    char dir[512];
    char state[600];
    struct job *job;
    struct dag *dag;
    struct incr *in;
    struct run *run;
};

static void fx_init(struct fx *f)
{
    const char *tmp = getenv("TMPDIR");

    memset(f, 0, sizeof(*f));
    for (int i = 0; i < JOB_OP_COUNT; i++) {
        fake_table.run[i] = fake_op;
    }
    snprintf(f->dir, sizeof(f->dir), "%s/df-incr.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    snprintf(f->state, sizeof(f->state), "%s/state.db", f->dir);
}

static int rm_entry(const char *p, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Free what one cycle made (the directory and the store stay). */
static void fx_done(struct fx *f)
{
    run_free(f->run);
    incr_free(f->in);
    dag_free(f->dag);
    job_free(f->job);
    f->run = NULL;
    f->in = NULL;
    f->dag = NULL;
    f->job = NULL;
}

static void fx_cleanup(struct fx *f)
{
    fx_done(f);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void fx_load(struct fx *f, const char *text, const struct job_vars *set)
{
    char path[600];
    struct job_diags diags;

    fx_done(f);
    snprintf(path, sizeof(path), "%s/job.yaml", f->dir);
    job_diags_init(&diags);
    f->job = job_load_string(path, text, strlen(text), set, &diags);
    if (!f->job) {
        job_diags_print(&diags, stderr);
    }
    ck_assert_ptr_nonnull(f->job);
    f->dag = dag_build(f->job, &diags);
    ck_assert_ptr_nonnull(f->dag);
    job_diags_release(&diags);
}

/* Decide against the store; @o may be NULL (writable, no window). */
static void fx_decide(struct fx *f, const struct incr_opts *o)
{
    struct incr_opts d = { .writable = true };
    struct df_error err = { 0 };

    if (o) {
        d = *o;
    }
    if (!d.state_path) {
        d.state_path = f->state;
    }
    incr_free(f->in);
    f->in = NULL;
    ck_assert_msg(incr_open(f->dag, &d, &f->in, &err) == 0, "%s", err.msg);
}

static void fx_run(struct fx *f, unsigned threads)
{
    struct run_opts o = { 0 };
    struct df_error err = { 0 };

    o.threads = threads;
    o.ops = &fake_table;
    o.hooks = incr_hooks(f->in);
    f->run = job_run(f->job, f->dag, &o, &err);
    ck_assert_ptr_nonnull(f->run);
    ck_assert_ptr_null(incr_store_error(f->in));
}

/* Load, decide and run @text in one go. */
static void cycle(struct fx *f, const char *text, const struct incr_opts *o)
{
    fx_load(f, text, NULL);
    fx_decide(f, o);
    fx_run(f, 2);
}

static size_t index_of(struct fx *f, const char *id)
{
    const struct job_step *s = job_find_step(f->job, id);

    ck_assert_msg(s != NULL, "no step %s", id);
    return s->index;
}

static const char *reason(struct fx *f, const char *id)
{
    return incr_reason(f->in, index_of(f, id));
}

static void expect_reason(struct fx *f, const char *id, const char *want)
{
    ck_assert_msg(!strcmp(reason(f, id), want), "%s: reason '%s', want '%s'",
                  id, reason(f, id), want);
}

static void write_file(struct fx *f, const char *name, const char *text)
{
    char path[700];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    fclose(fp);
}

static char *path_in(struct fx *f, const char *name)
{
    static char path[700];

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    return path;
}

static void fingerprint_of(struct fx *f, const char *text, const char *id,
                           const struct job_vars *set, int fmt, char hex[65])
{
    fx_load(f, text, set);
    incr_def_fingerprint(f->job, &f->job->steps[index_of(f, id)], fmt, hex);
}

/* ---- definition fingerprints ---- */

START_TEST(def_fp_ignores_id_description_needs)
{
    struct fx f;
    char a[65], b[65];

    fx_init(&f);
    fingerprint_of(&f, "version: 1\nsteps:\n"
                   "  - {id: x, op: create, image: a.img, size: 1M}\n"
                   "  - {id: y, op: fill, image: a.img, pattern: 7}\n",
                   "y", NULL, 1, a);
    fingerprint_of(&f, "version: 1\nsteps:\n"
                   "  - {id: x, op: create, image: a.img, size: 1M}\n"
                   "  - {id: other, op: fill, image: a.img, pattern: 7,\n"
                   "     description: words, needs: [x]}\n",
                   "other", NULL, 1, b);
    ck_assert_str_eq(a, b);
    fx_cleanup(&f);
}
END_TEST

START_TEST(def_fp_covers_every_key_after_substitution_and_defaults)
{
    static const char base[] =
        "version: 1\nvars: {sz: 1M}\ndefaults: {cluster_size: 64K}\n"
        "steps:\n  - {id: x, op: create, image: a.qcow2, size: \"${sz}\"}\n";
    struct job_vars set = { 0 };
    struct fx f;
    char a[65], b[65];

    fx_init(&f);
    fingerprint_of(&f, base, "x", NULL, 1, a);
    /* the same effective value written out: the same definition */
    fingerprint_of(&f, "version: 1\nsteps:\n  - {id: x, op: create, "
                   "image: a.qcow2, size: 1M, cluster_size: 64K}\n",
                   "x", NULL, 1, b);
    ck_assert_str_eq(a, b);
    /* another size through --set */
    ck_assert_int_eq(job_vars_set(&set, "sz", "2M"), 0);
    fingerprint_of(&f, base, "x", &set, 1, b);
    ck_assert_str_ne(a, b);
    /* another default */
    fingerprint_of(&f, "version: 1\nvars: {sz: 1M}\ndefaults: "
                   "{cluster_size: 128K}\nsteps:\n  - {id: x, op: create, "
                   "image: a.qcow2, size: \"${sz}\"}\n", "x", NULL, 1, b);
    ck_assert_str_ne(a, b);
    /* another path */
    fingerprint_of(&f, "version: 1\nsteps:\n  - {id: x, op: create, "
                   "image: b.qcow2, size: 1M}\n", "x", NULL, 1, b);
    ck_assert_str_ne(a, b);
    job_vars_release(&set);
    fx_cleanup(&f);
}
END_TEST

START_TEST(def_fp_covers_the_engine_format_version)
{
    static const char text[] = "version: 1\nsteps:\n"
                               "  - {id: x, op: create, image: a.img, size: 1M}\n";
    struct fx f;
    char a[65], b[65];

    fx_init(&f);
    fingerprint_of(&f, text, "x", NULL, 1, a);
    fingerprint_of(&f, text, "x", NULL, 2, b);
    ck_assert_str_ne(a, b);
    fx_cleanup(&f);
}
END_TEST

START_TEST(def_fp_of_a_command_covers_source_date_epoch)
{
    static const char text[] = "version: 1\nsteps:\n"
                               "  - {id: x, op: command, argv: [date],"
                               " outputs: [t.txt]}\n";
    char *saved = getenv("SOURCE_DATE_EPOCH");
    struct fx f;
    char a[65], b[65], c[65];

    saved = saved ? strdup(saved) : NULL;
    fx_init(&f);
    unsetenv("SOURCE_DATE_EPOCH");
    fingerprint_of(&f, text, "x", NULL, 1, a);
    setenv("SOURCE_DATE_EPOCH", "1700000000", 1);
    fingerprint_of(&f, text, "x", NULL, 1, b);
    setenv("SOURCE_DATE_EPOCH", "1700000001", 1);
    fingerprint_of(&f, text, "x", NULL, 1, c);
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(b, c);
    if (saved) {
        setenv("SOURCE_DATE_EPOCH", saved, 1);
    } else {
        unsetenv("SOURCE_DATE_EPOCH");
    }
    free(saved);
    fx_cleanup(&f);
}
END_TEST

/* ---- identities ---- */

static const char chain_job[] =
    "version: 1\nsteps:\n"
    "  - {id: mk, op: command, argv: [true], inputs: [src.txt],"
    " outputs: [mid.img]}\n"
    "  - {id: use, op: write, image: out.img, from: mid.img}\n"
    "  - {id: out, op: create, image: out.img, size: 1M}\n";

START_TEST(written_path_is_known_by_its_writers_fingerprint)
{
    struct fx f;
    char before[65];
    size_t mk, use;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    fx_load(&f, chain_job, NULL);
    fx_decide(&f, NULL);
    mk = index_of(&f, "mk");
    use = index_of(&f, "use");
    /* use reads mid.img, written by mk: mk's output identity */
    ck_assert_str_eq(incr_input_identity(f.in, use, path_in(&f, "mid.img")),
                     incr_output_identity(f.in, mk));
    memcpy(before, incr_output_identity(f.in, mk), 65);
    /* mk's input changes: the identity of what it writes changes, though
     * nothing ran and mid.img does not even exist */
    write_file(&f, "src.txt", "two");
    fx_decide(&f, NULL);
    ck_assert_str_ne(incr_output_identity(f.in, mk), before);
    ck_assert_str_eq(incr_input_identity(f.in, use, path_in(&f, "mid.img")),
                     incr_output_identity(f.in, mk));
    fx_cleanup(&f);
}
END_TEST

START_TEST(external_input_is_known_by_its_content)
{
    struct fx f;
    char one[65];
    size_t mk;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    fx_load(&f, chain_job, NULL);
    fx_decide(&f, NULL);
    mk = index_of(&f, "mk");
    memcpy(one, incr_input_identity(f.in, mk, path_in(&f, "src.txt")), 65);
    /* another file (new inode, new times), the same bytes */
    unlink(path_in(&f, "src.txt"));
    write_file(&f, "src.txt", "one");
    fx_decide(&f, NULL);
    ck_assert_str_eq(incr_input_identity(f.in, mk, path_in(&f, "src.txt")),
                     one);
    write_file(&f, "src.txt", "One");
    fx_decide(&f, NULL);
    ck_assert_str_ne(incr_input_identity(f.in, mk, path_in(&f, "src.txt")),
                     one);
    fx_cleanup(&f);
}
END_TEST

START_TEST(warm_stat_cache_reads_no_file)
{
    struct incr_opts o = { .writable = true, .window_ns = 0 };
    struct fx f;
    uint64_t n;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    fx_load(&f, chain_job, NULL);
    n = incr_files_hashed();
    fx_decide(&f, &o);
    ck_assert_uint_eq(incr_files_hashed(), n + 1);
    /* the cache (written by the writable opening) answers now */
    fx_decide(&f, &o);
    fx_decide(&f, &o);
    ck_assert_uint_eq(incr_files_hashed(), n + 1);
    fx_cleanup(&f);
}
END_TEST

/* An op's digest (op_set_digest()) is recorded as the output's sha256,
 * and the output is not read. */
START_TEST(op_digest_replaces_reading_the_output)
{
    struct fx f;
    sqlite3 *db;
    sqlite3_stmt *q;
    uint64_t n;

    fx_init(&f);
    fx_load(&f, "version: 1\nsteps:\n"
            "  - {id: a, op: create, image: a.img, size: 1M,"
            " description: digest}\n"
            "  - {id: b, op: create, image: b.img, size: 1M}\n", NULL);
    fx_decide(&f, NULL);
    n = incr_files_hashed();
    fx_run(&f, 1);
    ck_assert_int_eq(f.run->status, RUN_SUCCEEDED);
    /* b is hashed by reading it; a is not */
    ck_assert_uint_eq(incr_files_hashed(), n + 1);
    ck_assert_ptr_null(op_set_digest(&f.run->steps[0].ctx, "not-an-output",
                                     NULL, NULL) == 0 ? "x" : NULL);
    ck_assert_int_eq(sqlite3_open(f.state, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT step, sha256 FROM "
                                        "step_output ORDER BY step", -1, &q,
                                        NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "a");
    ck_assert_str_eq((const char *)sqlite3_column_text(q, 1),
                     "abababababababababababababababab"
                     "abababababababababababababababab");
    ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(q, 0), "b");
    /* sha256 of "b\n", what the fake op wrote */
    ck_assert_str_eq((const char *)sqlite3_column_text(q, 1),
                     "0263829989b6fd954f72baaf2fc64bc2"
                     "e2f01d692d4de72986ea808f6e99813f");
    sqlite3_finalize(q);
    sqlite3_close(db);
    fx_cleanup(&f);
}
END_TEST

static bool stop_always(void *opaque)
{
    (void)opaque;
    return true;
}

/* A signal while inputs are hashed stops the decision: DF_E_CANCELED. */
START_TEST(stop_while_hashing_inputs_cancels)
{
    struct incr_opts o = { .writable = true, .stop = stop_always };
    struct df_error err = { 0 };
    struct fx f;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    fx_load(&f, chain_job, NULL);
    o.state_path = f.state;
    ck_assert_int_eq(incr_open(f.dag, &o, &f.in, &err), -DF_E_CANCELED);
    ck_assert_ptr_null(f.in);
    ck_assert_ptr_nonnull(strstr(err.msg, "interrupted"));
    fx_cleanup(&f);
}
END_TEST

START_TEST(cached_hash_distrusted_within_the_window)
{
    struct incr_opts o = { .writable = true, .window_ns = INCR_DISTRUST_NS };
    struct fx f;
    uint64_t n;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    fx_load(&f, chain_job, NULL);
    n = incr_files_hashed();
    fx_decide(&f, &o);
    /* the file was written less than 2 s before it was hashed: a rewrite
     * of the same size within one timestamp tick could hide, so read it */
    fx_decide(&f, &o);
    ck_assert_uint_eq(incr_files_hashed(), n + 2);
    fx_cleanup(&f);
}
END_TEST

START_TEST(directory_identity_covers_names_modes_links_contents)
{
    static const char job[] = "version: 1\nsteps:\n"
                              "  - {id: mk, op: command, argv: [true],"
                              " inputs: [tree], outputs: [o.img]}\n";
    char ids[6][65], p[700];
    struct fx f;
    size_t mk;

    fx_init(&f);
    ck_assert_int_eq(mkdir(path_in(&f, "tree"), 0755), 0);
    ck_assert_int_eq(mkdir(path_in(&f, "tree/sub"), 0755), 0);
    write_file(&f, "tree/sub/a", "a");
    ck_assert_int_eq(symlink("sub/a", path_in(&f, "tree/link")), 0);
    fx_load(&f, job, NULL);
    mk = index_of(&f, "mk");
    snprintf(p, sizeof(p), "%s", path_in(&f, "tree"));
    for (int step = 0; step < 6; step++) {
        switch (step) {
        case 1: write_file(&f, "tree/sub/a", "b"); break;        /* content */
        case 2: chmod(path_in(&f, "tree/sub/a"), 0600); break;  /* mode */
        case 3:                                                  /* target */
            unlink(path_in(&f, "tree/link"));
            ck_assert_int_eq(symlink("sub/b", path_in(&f, "tree/link")), 0);
            break;
        case 4: {                                                /* name */
            char from[700];
            snprintf(from, sizeof(from), "%s", path_in(&f, "tree/sub/a"));
            ck_assert_int_eq(rename(from, path_in(&f, "tree/sub/c")), 0);
            break;
        }
        case 5: write_file(&f, "tree/new", ""); break;           /* entry */
        default: break;
        }
        fx_decide(&f, NULL);
        memcpy(ids[step], incr_input_identity(f.in, mk, p), 65);
        for (int k = 0; k < step; k++) {
            ck_assert_msg(strcmp(ids[k], ids[step]) != 0,
                          "change %d gave the identity of state %d", step, k);
        }
    }
    fx_cleanup(&f);
}
END_TEST

START_TEST(external_backing_chain_is_an_input)
{
    static const char job[] = "version: 1\nsteps:\n"
                              "  - {id: top, op: overlay, image: top.qcow2,"
                              " backing: mid.qcow2,"
                              " backing_format: qcow2}\n";
    struct df_create_opts o;
    struct df_error err = { 0 };
    char want[800], mid[700];
    struct fx f;
    FILE *fp;

    fx_init(&f);
    /* mid.qcow2 -> low.qcow2, both made outside the job */
    df_create_opts_init(&o);
    o.format = DF_FMT_QCOW2;
    o.size = 1 << 20;
    ck_assert_int_eq(df_image_create(path_in(&f, "low.qcow2"), &o, &err), 0);
    o.backing_file = "low.qcow2";
    o.backing_format = DF_FMT_QCOW2;
    snprintf(mid, sizeof(mid), "%s", path_in(&f, "mid.qcow2"));
    ck_assert_int_eq(df_image_create(mid, &o, &err), 0);
    cycle(&f, job, NULL);
    cycle(&f, job, NULL);
    expect_reason(&f, "top", "up-to-date");
    /* the job never names low.qcow2; a change there still counts */
    fp = fopen(path_in(&f, "low.qcow2"), "a");
    ck_assert_ptr_nonnull(fp);
    fputs("more bytes", fp);
    fclose(fp);
    fx_load(&f, job, NULL);
    fx_decide(&f, NULL);
    snprintf(want, sizeof(want), "input-changed %s", mid);
    expect_reason(&f, "top", want);
    fx_cleanup(&f);
}
END_TEST

/* ---- reasons ---- */

static const char basic_job[] =
    "version: 1\nsteps:\n"
    "  - {id: base, op: create, image: base.img, size: 1M}\n"
    "  - {id: fill, op: fill, image: base.img, pattern: 1}\n"
    "  - {id: top, op: overlay, image: top.img, backing: base.img}\n"
    "  - {id: check, op: check, image: top.img}\n"
    "  - {id: other, op: create, image: other.img, size: 1M}\n"
    "  - {id: tool, op: command, argv: [true], inputs: [src.txt],"
    " outputs: [tool.out]}\n";

/* @text with its first @from replaced by @to (you own it). */
static char *edited(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    char *out = NULL;

    ck_assert_ptr_nonnull(at);
    ck_assert_int_ge(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to,
                              at + strlen(from)), 0);
    return out;
}

/* Run basic_job once so that every step has a record. */
static void first_run(struct fx *f)
{
    fx_init(f);
    write_file(f, "src.txt", "one");
    cycle(f, basic_job, NULL);
    ck_assert_int_eq(f->run->status, RUN_SUCCEEDED);
}

START_TEST(never_run_then_up_to_date)
{
    struct fx f;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    cycle(&f, basic_job, NULL);
    for (size_t i = 0; i < f.dag->n; i++) {
        ck_assert_str_eq(incr_reason(f.in, i), "never-run");
        ck_assert_int_eq(f.run->steps[i].status, STEP_SUCCEEDED);
    }
    cycle(&f, basic_job, NULL);
    for (size_t i = 0; i < f.dag->n; i++) {
        ck_assert_str_eq(incr_reason(f.in, i), "up-to-date");
        ck_assert_int_eq(f.run->steps[i].status, STEP_UP_TO_DATE);
        ck_assert_ptr_null(f.run->steps[i].ctx.err.code ? "x" : NULL);
    }
    fx_cleanup(&f);
}
END_TEST

START_TEST(definition_changed)
{
    struct fx f;
    char *text;

    first_run(&f);
    /* other's size: only other runs */
    text = edited(basic_job, "other.img, size: 1M", "other.img, size: 2M");
    cycle(&f, text, NULL);
    expect_reason(&f, "other", "definition-changed");
    expect_reason(&f, "base", "up-to-date");
    expect_reason(&f, "tool", "up-to-date");
    ck_assert_int_eq(f.run->steps[index_of(&f, "other")].status,
                     STEP_SUCCEEDED);
    free(text);
    fx_cleanup(&f);
}
END_TEST

START_TEST(input_changed_names_the_path)
{
    struct fx f;
    char want[800];

    first_run(&f);
    write_file(&f, "src.txt", "two");
    cycle(&f, basic_job, NULL);
    snprintf(want, sizeof(want), "input-changed %s", path_in(&f, "src.txt"));
    expect_reason(&f, "tool", want);
    expect_reason(&f, "base", "up-to-date");
    fx_cleanup(&f);
}
END_TEST

START_TEST(output_missing_and_output_modified)
{
    struct fx f;
    char want[800];

    first_run(&f);
    unlink(path_in(&f, "other.img"));
    write_file(&f, "tool.out", "edited behind our back");
    fx_load(&f, basic_job, NULL);
    fx_decide(&f, NULL);
    snprintf(want, sizeof(want), "output-missing %s",
             path_in(&f, "other.img"));
    expect_reason(&f, "other", want);
    snprintf(want, sizeof(want), "output-modified %s",
             path_in(&f, "tool.out"));
    expect_reason(&f, "tool", want);
    expect_reason(&f, "check", "up-to-date");
    fx_cleanup(&f);
}
END_TEST

START_TEST(upstream_propagates_downstream)
{
    struct fx f;
    char *text;

    first_run(&f);
    /* top's definition changes: check reads what top writes */
    text = edited(basic_job, "backing: base.img}",
                  "backing: base.img, backing_path: absolute}");
    fx_load(&f, text, NULL);
    fx_decide(&f, NULL);
    expect_reason(&f, "top", "definition-changed");
    expect_reason(&f, "check", "upstream top");
    expect_reason(&f, "base", "up-to-date");
    expect_reason(&f, "fill", "up-to-date");
    free(text);
    fx_cleanup(&f);
}
END_TEST

START_TEST(in_place_chain_reruns_from_its_first_writer)
{
    struct fx f;
    char *text;

    first_run(&f);
    /* fill's pattern changes: base (the first writer of base.img) runs
     * again, so that the fill is not replayed onto its own result */
    text = edited(basic_job, "pattern: 1", "pattern: 2");
    fx_load(&f, text, NULL);
    fx_decide(&f, NULL);
    expect_reason(&f, "fill", "definition-changed");
    expect_reason(&f, "base", "upstream fill");
    expect_reason(&f, "top", "upstream fill");
    expect_reason(&f, "check", "upstream top");
    expect_reason(&f, "other", "up-to-date");
    fx_run(&f, 2);
    /* the file holds one create and one fill, not a fill on a fill */
    {
        char buf[64] = { 0 };
        FILE *fp = fopen(path_in(&f, "base.img"), "r");
        ck_assert_ptr_nonnull(fp);
        ck_assert_uint_gt(fread(buf, 1, sizeof(buf) - 1, fp), 0);
        fclose(fp);
        ck_assert_str_eq(buf, "base\nfill\n");
    }
    free(text);
    fx_cleanup(&f);
}
END_TEST

START_TEST(modified_in_place_output_reruns_the_chain)
{
    struct fx f;
    char want[800];

    first_run(&f);
    write_file(&f, "base.img", "someone else");
    fx_load(&f, basic_job, NULL);
    fx_decide(&f, NULL);
    /* the last writer (fill) recorded the file; its first writer runs */
    snprintf(want, sizeof(want), "output-modified %s", path_in(&f, "base.img"));
    expect_reason(&f, "base", want);
    expect_reason(&f, "fill", "upstream base");
    fx_cleanup(&f);
}
END_TEST

START_TEST(command_without_outputs_always_runs)
{
    static const char job[] = "version: 1\nsteps:\n"
                              "  - {id: hello, op: command, argv: [true]}\n"
                              "  - {id: x, op: create, image: x.img, size: 1M}\n";
    struct fx f;

    fx_init(&f);
    cycle(&f, job, NULL);
    cycle(&f, job, NULL);
    expect_reason(&f, "hello", "always");
    expect_reason(&f, "x", "up-to-date");
    ck_assert_int_eq(f.run->steps[0].status, STEP_SUCCEEDED);
    fx_cleanup(&f);
}
END_TEST

START_TEST(force_runs_everything)
{
    struct incr_opts o = { .writable = true, .force = true };
    struct fx f;

    first_run(&f);
    cycle(&f, basic_job, &o);
    for (size_t i = 0; i < f.dag->n; i++) {
        ck_assert_str_eq(incr_reason(f.in, i), "forced");
        ck_assert_int_eq(f.run->steps[i].status, STEP_SUCCEEDED);
    }
    fx_cleanup(&f);
}
END_TEST

START_TEST(rebuild_forces_one_step_and_its_dependents)
{
    const char *ids[] = { "top" };
    struct incr_opts o = { .writable = true, .rebuild = ids, .n_rebuild = 1 };
    struct fx f;

    first_run(&f);
    cycle(&f, basic_job, &o);
    expect_reason(&f, "top", "forced");
    expect_reason(&f, "check", "upstream top");
    expect_reason(&f, "base", "up-to-date");
    expect_reason(&f, "tool", "up-to-date");
    fx_cleanup(&f);
}
END_TEST

START_TEST(failed_step_is_forgotten)
{
    static const char bad[] =
        "version: 1\nsteps:\n"
        "  - {id: a, op: create, image: a.img, size: 1M, description: fail}\n";
    static const char good[] =
        "version: 1\nsteps:\n"
        "  - {id: a, op: create, image: a.img, size: 1M}\n";
    struct fx f;

    fx_init(&f);
    cycle(&f, good, NULL);
    /* a description is not part of the definition */
    cycle(&f, bad, NULL);
    expect_reason(&f, "a", "up-to-date");
    /* make it run, and fail: its old record goes */
    {
        const char *ids[] = { "a" };
        struct incr_opts o = { .writable = true, .rebuild = ids,
                               .n_rebuild = 1 };
        cycle(&f, bad, &o);
        ck_assert_int_eq(f.run->steps[0].status, STEP_FAILED);
    }
    cycle(&f, good, NULL);
    expect_reason(&f, "a", "never-run");
    fx_cleanup(&f);
}
END_TEST

START_TEST(read_only_opening_writes_nothing)
{
    struct incr_opts o = { .writable = false };
    struct stat sb;
    struct fx f;

    fx_init(&f);
    write_file(&f, "src.txt", "one");
    fx_load(&f, basic_job, NULL);
    fx_decide(&f, &o);
    ck_assert_int_ne(stat(f.state, &sb), 0);
    for (size_t i = 0; i < f.dag->n; i++) {
        ck_assert_str_eq(incr_reason(f.in, i), "never-run");
    }
    fx_cleanup(&f);
}
END_TEST

START_TEST(newer_schema_is_refused)
{
    struct incr_opts o = { .writable = true };
    struct df_error err = { 0 };
    struct incr *in = NULL;
    sqlite3 *db;
    struct fx f;

    first_run(&f);
    fx_done(&f);
    ck_assert_int_eq(sqlite3_open(f.state, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL,
                                  NULL), SQLITE_OK);
    sqlite3_close(db);
    fx_load(&f, basic_job, NULL);
    o.state_path = f.state;
    ck_assert_int_lt(incr_open(f.dag, &o, &in, &err), 0);
    ck_assert_ptr_null(in);
    ck_assert_ptr_nonnull(strstr(err.msg, "newer diskforge"));
    ck_assert_ptr_nonnull(strstr(err.msg, "99"));
    fx_cleanup(&f);
}
END_TEST

/* Many steps on 4 threads: every finished step recorded by the one
 * writer, no lock errors; the second run has nothing to do.  Under
 * -DDF_SANITIZE=thread this also checks the hooks for races. */
START_TEST(threaded_run_records_every_step)
{
    char *text = malloc(1 << 16);
    size_t n = 0;
    struct fx f;

    fx_init(&f);
    n += (size_t)snprintf(text, 1 << 16, "version: 1\nsteps:\n");
    for (int i = 0; i < 40; i++) {
        n += (size_t)snprintf(text + n, (1 << 16) - n,
                              "  - {id: c%d, op: create, image: i%d.img,"
                              " size: 1M}\n"
                              "  - {id: f%d, op: fill, image: i%d.img,"
                              " pattern: 3}\n"
                              "  - {id: k%d, op: check, image: i%d.img}\n",
                              i, i, i, i, i, i);
    }
    fx_load(&f, text, NULL);
    fx_decide(&f, NULL);
    fx_run(&f, 4);
    ck_assert_int_eq(f.run->status, RUN_SUCCEEDED);
    fx_load(&f, text, NULL);
    fx_decide(&f, NULL);
    fx_run(&f, 4);
    for (size_t i = 0; i < f.dag->n; i++) {
        ck_assert_int_eq(f.run->steps[i].status, STEP_UP_TO_DATE);
    }
    free(text);
    fx_cleanup(&f);
}
END_TEST

static Suite *incremental_suite(void)
{
    Suite *s = suite_create("incremental");
    TCase *fp = tcase_create("fingerprints");
    TCase *id = tcase_create("identities");
    TCase *rs = tcase_create("reasons");

    tcase_add_test(fp, def_fp_ignores_id_description_needs);
    tcase_add_test(fp, def_fp_covers_every_key_after_substitution_and_defaults);
    tcase_add_test(fp, def_fp_covers_the_engine_format_version);
    tcase_add_test(fp, def_fp_of_a_command_covers_source_date_epoch);
    tcase_add_test(id, written_path_is_known_by_its_writers_fingerprint);
    tcase_add_test(id, external_input_is_known_by_its_content);
    tcase_add_test(id, warm_stat_cache_reads_no_file);
    tcase_add_test(id, cached_hash_distrusted_within_the_window);
    tcase_add_test(id, op_digest_replaces_reading_the_output);
    tcase_add_test(id, stop_while_hashing_inputs_cancels);
    tcase_add_test(id, directory_identity_covers_names_modes_links_contents);
    tcase_add_test(id, external_backing_chain_is_an_input);
    tcase_add_test(rs, never_run_then_up_to_date);
    tcase_add_test(rs, definition_changed);
    tcase_add_test(rs, input_changed_names_the_path);
    tcase_add_test(rs, output_missing_and_output_modified);
    tcase_add_test(rs, upstream_propagates_downstream);
    tcase_add_test(rs, in_place_chain_reruns_from_its_first_writer);
    tcase_add_test(rs, modified_in_place_output_reruns_the_chain);
    tcase_add_test(rs, command_without_outputs_always_runs);
    tcase_add_test(rs, force_runs_everything);
    tcase_add_test(rs, rebuild_forces_one_step_and_its_dependents);
    tcase_add_test(rs, failed_step_is_forgotten);
    tcase_add_test(rs, read_only_opening_writes_nothing);
    tcase_add_test(rs, newer_schema_is_refused);
    tcase_add_test(rs, threaded_run_records_every_step);
    suite_add_tcase(s, fp);
    suite_add_tcase(s, id);
    suite_add_tcase(s, rs);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(incremental_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
