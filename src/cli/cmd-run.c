/* SPDX-License-Identifier: MIT */
/*
 * cmd-run.c - `diskforge run`: run a job file's steps as a DAG on a
 * thread pool and write the JSON report.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "events.h"
#include "incremental.h"
#include "pipeline.h"
#include "admit.h"
#include "executor.h"
#include "runlock.h"

static const char usage_text[] =
    "usage: diskforge run JOB.yaml [-j N] [--report FILE] [--keep-going]\n"
    "                     [--dry-run] [--set NAME=VALUE]... [--force]\n"
    "                     [--rebuild ID]... [--state FILE] [--sums FILE]\n"
    "                     [--events FILE|-] [--expect-reproducible]\n"
    "                     [--untrusted] [--no-space-check]\n"
    "                     [--executor local|slurm [--slurm-arg ARG]...]\n"
    "\n"
    "Run the steps of JOB.yaml that are not up to date, each as soon as the\n"
    "steps it depends on are done, at most N at a time, and write a JSON\n"
    "report.  A step is up to date when its definition, the identity of\n"
    "everything it reads and the files it left are what the state store\n"
    "recorded when it last succeeded (docs/incremental.md).\n"
    "\n"
    "  -j, --jobs N       run at most N steps at once (default: the number\n"
    "                     of online CPUs)\n"
    "  --report FILE      where to write the report (default: JOB.report.json\n"
    "                     beside the job file)\n"
    "  -k, --keep-going   after a failure, still run the steps that do not\n"
    "                     depend on it (default: start nothing new)\n"
    "  -n, --dry-run      print the plan with why each step would run (or\n"
    "                     that it is up to date); run and write nothing\n"
    "  --set NAME=VALUE   override (or define) the job variable NAME\n"
    "  --force            run every step (reason 'forced')\n"
    "  --rebuild ID       run step ID (reason 'forced') and what depends on\n"
    "                     it; repeatable\n"
    "  --state FILE       the state store (default: .diskforge/NAME.db beside\n"
    "                     the job file)\n"
    "  --sums FILE        write the SHA-256 of every file the job makes, as\n"
    "                     `sha256sum -c` reads them in FILE's directory\n"
    "  --events FILE|-    write one JSON object per line as the run goes\n"
    "                     (-: stdout, and progress goes to stderr)\n"
    "  --expect-reproducible\n"
    "                     run every step and fail (exit 1) naming each step\n"
    "                     whose outputs' sha256 differ from the last run's\n"
    "  --untrusted        every step as 'untrusted: true': images are hostile\n"
    "                     (format given; backing files only if the job made\n"
    "                     them, allow_backing lists them, or they lie in the\n"
    "                     image's directory)\n"
    "  --no-space-check   start even if the steps' estimated new bytes do not\n"
    "                     fit in the free space of their file systems\n"
    "  --executor NAME    where steps run: local (the default: threads here)\n"
    "                     or slurm (each step a Slurm job, submitted up front\n"
    "                     with sbatch, ordered by Slurm; the job file and\n"
    "                     everything it touches must be on storage that\n"
    "                     every node shares: docs/cluster.md)\n"
    "  --slurm-arg ARG    one more sbatch argument, as one word, after\n"
    "                     diskforge's own (--slurm-arg=--partition=big);\n"
    "                     repeatable\n"
    "  -h, --help         show this help\n"
    "\n"
    "SIGINT or SIGTERM cancels the running steps, removes their temporary\n"
    "files and writes the report with status 'interrupted'.\n"
    "\n"
    "Exit status: 0 every step succeeded, 1 a step failed, 2 bad usage or\n"
    "an invalid job (nothing ran), 130 interrupted.\n";

enum {
    OPT_NO_SPACE_CHECK = CLI_OPT_UNTRUSTED + 1,
    OPT_EXECUTOR,
    OPT_SLURM_ARG,
};

/* Set by the signal handler, read by should_stop() on the main thread. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static bool should_stop(void *opaque)
{
    (void)opaque;
    return stop_signal != 0;
}

static void catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    /* a second signal takes the default action: a way out if stuck */
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

struct run_args {
    const char *job_path;
    const char *report;
    const char *state;
    const char *sums;
    const char *events;
    unsigned threads;
    bool expect_reproducible;
    bool keep_going;
    bool dry_run;
    bool force;
    const char **rebuild;
    size_t n_rebuild;
    bool untrusted;
    bool no_space_check;
    struct job_vars set;
    bool slurm;                /* --executor slurm */
    const char **set_args;     /* the --set NAME=VALUE words, for steps */
    size_t n_set_args;
    const char **slurm_args;   /* --slurm-arg */
    size_t n_slurm_args;
};

static int add_word(const char ***v, size_t *n, const char *w)
{
    const char **p = realloc(*v, (*n + 1) * sizeof(*p));

    if (!p) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    *v = p;
    p[(*n)++] = w;
    return CLI_OK;
}

static int parse_args(int argc, char **argv, struct run_args *a)
{
    static const struct option longopts[] = {
        { "jobs", required_argument, NULL, 'j' },
        { "report", required_argument, NULL, 'r' },
        { "keep-going", no_argument, NULL, 'k' },
        { "dry-run", no_argument, NULL, 'n' },
        { "set", required_argument, NULL, 's' },
        { "force", no_argument, NULL, 'f' },
        { "rebuild", required_argument, NULL, 'B' },
        { "state", required_argument, NULL, 'S' },
        { "sums", required_argument, NULL, 'U' },
        { "events", required_argument, NULL, 'E' },
        { "expect-reproducible", no_argument, NULL, 'R' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "no-space-check", no_argument, NULL, OPT_NO_SPACE_CHECK },
        { "executor", required_argument, NULL, OPT_EXECUTOR },
        { "slurm-arg", required_argument, NULL, OPT_SLURM_ARG },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    char *end;
    long v;
    int c;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":j:knh", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || *end || !*optarg || v < 1 || v > 1024) {
                return cli_usage("run", "-j wants a number of threads from "
                                 "1 to 1024, not '%s'", optarg);
            }
            a->threads = (unsigned)v;
            break;
        case 'r': a->report = optarg; break;
        case 'k': a->keep_going = true; break;
        case 'n': a->dry_run = true; break;
        case 'f': a->force = true; break;
        case 'B':
            if (add_word(&a->rebuild, &a->n_rebuild, optarg) != CLI_OK) {
                return CLI_FAIL;
            }
            break;
        case 'S': a->state = optarg; break;
        case 'U': a->sums = optarg; break;
        case 'E': a->events = optarg; break;
        case 'R': a->expect_reproducible = true; break;
        case CLI_OPT_UNTRUSTED: a->untrusted = true; break;
        case OPT_NO_SPACE_CHECK: a->no_space_check = true; break;
        case OPT_EXECUTOR:
            if (strcmp(optarg, "local") != 0 && strcmp(optarg, "slurm") != 0) {
                return cli_usage("run", "--executor wants local or slurm, "
                                 "not '%s'", optarg);
            }
            a->slurm = !strcmp(optarg, "slurm");
            break;
        case OPT_SLURM_ARG:
            if (add_word(&a->slurm_args, &a->n_slurm_args, optarg) != CLI_OK) {
                return CLI_FAIL;
            }
            break;
        case 's':
            if (cli_job_set("run", &a->set, optarg) != CLI_OK ||
                add_word(&a->set_args, &a->n_set_args, optarg) != CLI_OK) {
                return CLI_USAGE;
            }
            break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return cli_bad_option("run", c, argv, longopts);
        }
    }
    if (a->n_slurm_args && !a->slurm) {
        return cli_usage("run", "--slurm-arg needs --executor slurm");
    }
    return cli_job_operand("run", argc, argv, &a->job_path);
}

static void print_summary(FILE *out, const struct run *run,
                          const char *report)
{
    size_t n[STEP_UP_TO_DATE + 1] = { 0 };

    for (size_t i = 0; i < run->dag->n; i++) {
        n[run->steps[i].status]++;
    }
    fprintf(out, "%s %s: %zu step%s, %zu succeeded, %zu failed, %zu skipped, "
           "%zu up to date in %.2f s with %u thread%s\n",
           run->job->name, run_status_name(run->status), run->dag->n,
           run->dag->n == 1 ? "" : "s", n[STEP_SUCCEEDED], n[STEP_FAILED],
           n[STEP_SKIPPED], n[STEP_UP_TO_DATE],
           (double)run->duration_ms / 1000.0, run->threads,
           run->threads == 1 ? "" : "s");
    if (report) {
        fprintf(out, "report: %s\n", report);
    }
    fflush(out);
    for (size_t i = 0; i < run->dag->n; i++) {
        if (run->steps[i].status == STEP_FAILED) {
            cli_error("step '%s' failed: %s", run->job->steps[i].id,
                      run->steps[i].ctx.err.msg);
        }
    }
}

/* Remove the temporaries that runs killed earlier left, and say so. */
static void report_stale_temps(const struct dag *dag, const char *report,
                               struct stale_temps *stale)
{
    struct stale_temps st;
    char human[32];

    runlock_clean_temps(dag, report, &st);
    *stale = st;
    if (st.removed) {
        df_format_size(st.bytes, human, sizeof(human));
        fprintf(stderr, "diskforge: removed %zu stale temporary file%s of "
                "this job's outputs (left by runs that are gone), freeing "
                "%llu bytes (%s)\n", st.removed, st.removed == 1 ? "" : "s",
                (unsigned long long)st.bytes, human);
    }
}

/* --sums FILE: the hashes of what the job made, for sha256sum -c. */
static int write_sums(const struct run_args *a, const struct incr *in,
                      const struct run *run)
{
    struct df_error err = { 0 };
    size_t missing = 0;

    if (incr_write_sums(in, run, a->sums, &missing, &err) < 0) {
        cli_error("%s", err.msg);
        return CLI_FAIL;
    }
    if (missing) {
        cli_error("%s: %zu file%s left out: the step%s that make%s them "
                  "did not succeed", a->sums, missing, missing == 1 ? "" : "s",
                  missing == 1 ? "" : "s", missing == 1 ? "s" : "");
    }
    return CLI_OK;
}

/* --expect-reproducible: name each step whose outputs differ; the run
 * fails when one does. */
static void check_reproducible(struct run *run)
{
    for (size_t i = 0; i < run->dag->n; i++) {
        if (run->steps[i].reproducible == RUN_REPRO_DIFFERENT) {
            cli_error("step '%s' is not reproducible: its output differs "
                      "from the previous run's", run->job->steps[i].id);
            if (run->status == RUN_SUCCEEDED) {
                run->status = RUN_FAILED;
            }
        }
    }
}

/* The run-level "stale_temporaries" of the report (SPEC §8). */
static void add_stale_temps(json_t *report, const struct stale_temps *st)
{
    json_t *o = json_object();

    json_object_set_new(o, "files", json_integer((json_int_t)st->removed));
    json_object_set_new(o, "bytes", json_integer((json_int_t)st->bytes));
    json_object_set_new(report, "stale_temporaries", o);
}

/* Space admission over the steps that will run (@in NULL: all). */
static int admit(const struct dag *dag, const struct incr *in,
                 struct df_error *err)
{
    bool *skip = calloc(dag->n + 1, sizeof(*skip));
    int ret;

    if (!skip) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; in && i < dag->n; i++) {
        skip[i] = incr_up_to_date(in, i);
    }
    ret = admit_check(dag, skip, err);
    free(skip);
    return ret;
}

/* The Slurm executor for this run; @hex and @self are its buffers. */
static struct executor *slurm_executor(const struct run_args *a,
                                       const struct job *job,
                                       struct slurm_opts *o, char hex[65],
                                       char *self, size_t self_len,
                                       struct df_error *err)
{
    ssize_t n = readlink("/proc/self/exe", self, self_len - 1);

    if (n <= 0 || (size_t)n >= self_len - 1) {
        df_fail_sys(err, "cannot find the diskforge program's own path "
                    "(/proc/self/exe), which every Slurm job runs");
        return NULL;
    }
    self[n] = '\0';
    df_digest_hex(job->sha256, hex);
    memset(o, 0, sizeof(*o));
    o->job_path = a->job_path;
    o->job_name = job->name ? job->name : "job";
    o->self = self;
    o->job_sha256 = hex;
    o->version = DF_CLI_VERSION;
    o->set = a->set_args;
    o->n_set = a->n_set_args;
    o->untrusted = a->untrusted;
    o->args = a->slurm_args;
    o->n_args = a->n_slurm_args;
    return executor_slurm_new(o, err);
}

/*
 * Run the job: @in NULL when a signal stopped the look at the inputs
 * before anything was decided; the report then says `interrupted`, with
 * every step skipped, and nothing is recorded.
 */
static int run_loaded(struct run_args *a, const struct job *job,
                      const struct dag *dag, struct incr *in)
{
    struct executor *ex = NULL;
    struct slurm_opts so;
    char hex[65], self[4096];
    /* with --events -, stdout carries the events alone */
    FILE *human = a->events && !strcmp(a->events, "-") ? stderr : stdout;
    struct run_observer ob;
    struct progress prog;
    struct events ev = { 0 };
    struct run_opts opts = { 0 };
    struct df_error err = { 0 };
    char *report_path = NULL;
    struct stale_temps stale;
    struct runlock *lock;
    struct run *run;
    json_t *report;
    int ret;

    report_path = a->report ? strdup(a->report)
                            : report_default_path(a->job_path);
    if (!report_path) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    /* one run of a job at a time; then what killed runs left behind */
    lock = runlock_take(a->job_path, &err);
    if (!lock) {
        free(report_path);
        return cli_fail(&err);
    }
    report_stale_temps(dag, report_path, &stale);
    progress_init(&prog, &ob, human, isatty(fileno(human)));
    opts.threads = a->threads;
    opts.keep_going = a->keep_going;
    opts.observer = &ob;
    opts.should_stop = should_stop;
    opts.hooks = in ? incr_hooks(in) : NULL;
    if (a->events) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (events_open(&ev, a->events, &ob, dag->n, &err) < 0) {
            runlock_release(lock);
            free(report_path);
            return cli_fail(&err);
        }
        opts.observer = events_observer(&ev);
        events_run_start(&ev, job, a->threads ? a->threads
                                              : (unsigned)(cpus > 0 ? cpus
                                                                    : 1));
    }
    if (!in) {
        run = run_not_started(job, dag, RUN_INTERRUPTED, "not started: the "
                              "run was interrupted");
        if (!run) {
            df_fail(&err, DF_E_NOMEM, "out of memory");
        }
    } else if (!stop_signal && !a->no_space_check &&
               admit(dag, in, &err) < 0) {
        /* refused before anything started: every step skipped */
        cli_error("%s", err.msg);
        run = run_not_started(job, dag, RUN_FAILED, err.msg);
        df_error_clear(&err);
        if (!run) {
            df_fail(&err, DF_E_NOMEM, "out of memory");
        }
    } else if (a->slurm &&
               !(ex = slurm_executor(a, job, &so, hex, self, sizeof(self),
                                     &err))) {
        run = NULL;
    } else {
        opts.executor = ex;
        run = job_run(job, dag, &opts, &err);
    }
    if (ex) {
        ex->ops->free(ex);
    }
    progress_end(&prog);
    if (!run) {
        events_close(&ev);
        runlock_release(lock);
        free(report_path);
        return cli_fail(&err);
    }
    if (a->expect_reproducible) {
        check_reproducible(run);
    }
    if (a->events) {
        events_run_finish(&ev, run);
        events_close(&ev);
    }
    report = report_build(run);
    if (report) {
        add_stale_temps(report, &stale);
    }
    ret = report ? report_write(report, report_path, &err) : -DF_E_NOMEM;
    json_decref(report);
    print_summary(human, run, ret == 0 ? report_path : NULL);
    if (ret < 0) {
        cli_error("%s", err.code ? err.msg : "cannot build the report");
    }
    if (in && incr_store_error(in)) {
        cli_error("warning: %s (the steps it did not record will run "
                  "again next time)", incr_store_error(in)->msg);
    }
    if (in && a->sums && write_sums(a, in, run) != CLI_OK) {
        ret = -DF_E_IO;
    }
    ret = run->status == RUN_INTERRUPTED ? CLI_INTERRUPTED
          : run->status == RUN_FAILED || ret < 0 ? CLI_FAIL
                                                 : CLI_OK;
    if (run->status == RUN_INTERRUPTED) {
        cli_error("interrupted by %s", stop_signal == SIGTERM ? "SIGTERM"
                                                              : "SIGINT");
    }
    run_free(run);
    runlock_release(lock);
    free(report_path);
    return ret;
}

/* Check --rebuild, open the store and decide what runs. */
static int open_state(const struct run_args *a, const struct dag *dag,
                      struct incr **in)
{
    struct incr_opts o = { 0 };
    struct df_error err = { 0 };

    *in = NULL;
    for (size_t k = 0; k < a->n_rebuild; k++) {
        if (!job_find_step(dag->job, a->rebuild[k])) {
            return cli_usage("run", "--rebuild: the job has no step '%s'",
                             a->rebuild[k]);
        }
    }
    o.state_path = a->state;
    o.writable = !a->dry_run;
    o.force = a->force;
    o.expect_reproducible = a->expect_reproducible;
    o.rebuild = a->rebuild;
    o.n_rebuild = a->n_rebuild;
    o.window_ns = INCR_DISTRUST_NS;
    o.stop = should_stop;
    if (incr_open(dag, &o, in, &err) < 0) {
        cli_error("%s", err.msg);
        /* interrupted: the run still writes its report, saying so */
        return err.code == DF_E_CANCELED ? CLI_INTERRUPTED : CLI_FAIL;
    }
    return CLI_OK;
}

static void run_args_release(struct run_args *a)
{
    job_vars_release(&a->set);
    free(a->rebuild);
    free(a->set_args);
    free(a->slurm_args);
}

int cmd_run(int argc, char **argv)
{
    struct run_args a = { 0 };
    char *abs_path = NULL;
    struct incr *in = NULL;
    struct job_diags diags;
    struct job *job;
    struct dag *dag;
    int ret = parse_args(argc, argv, &a);

    if (ret == CLI_OK && a.slurm && a.job_path[0] != '/') {
        /* every node runs `step` on this path: it must name one file for
         * all of them (on shared storage, which diskforge cannot check) */
        abs_path = job_path_absolute(a.job_path);
        if (!abs_path) {
            cli_error("%s: cannot make the path absolute: %s", a.job_path,
                      strerror(errno));
            ret = CLI_FAIL;
        }
        a.job_path = abs_path;
    }
    if (ret != CLI_OK) {
        run_args_release(&a);
        return ret < 0 ? CLI_OK : ret; /* -1: --help */
    }
    if (cli_job_load(a.job_path, &a.set, &job, &dag, &diags) != CLI_OK) {
        job_diags_release(&diags);
        run_args_release(&a);
        free(abs_path);
        return CLI_USAGE;
    }
    for (size_t i = 0; a.untrusted && i < job->n_steps; i++) {
        job->steps[i].untrusted = true;
    }
    /* from here on a signal is ours: a background job starts with SIGINT
     * ignored, and reading the store and hashing inputs can take a while;
     * a signal seen by then stops the hashing, and the run, before any
     * step starts: the report says `interrupted` (up-to-date steps as
     * such when the decision was made, the others skipped), exit 130 */
    catch_signals();
    ret = open_state(&a, dag, &in);
    if (ret == CLI_INTERRUPTED && a.dry_run) {
        cli_error("interrupted by %s", stop_signal == SIGTERM ? "SIGTERM"
                                                              : "SIGINT");
    } else if (ret == CLI_OK && a.dry_run) {
        plan_print(dag, incr_reasons(in), PLAN_TEXT, stdout);
    } else if (ret == CLI_OK || ret == CLI_INTERRUPTED) {
        ret = run_loaded(&a, job, dag, in);
    }
    incr_free(in);
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    run_args_release(&a);
    free(abs_path);
    return ret;
}
