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
#include "pipeline.h"
#include "admit.h"
#include "runlock.h"

static const char usage_text[] =
    "usage: diskforge run JOB.yaml [-j N] [--report FILE] [--keep-going]\n"
    "                     [--dry-run] [--set NAME=VALUE]... [--untrusted]\n"
    "                     [--no-space-check]\n"
    "\n"
    "Run the steps of JOB.yaml, each as soon as the steps it depends on\n"
    "have succeeded, at most N at a time, and write a JSON report.\n"
    "\n"
    "  -j, --jobs N       run at most N steps at once (default: the number\n"
    "                     of online CPUs)\n"
    "  --report FILE      where to write the report (default: JOB.report.json\n"
    "                     beside the job file)\n"
    "  -k, --keep-going   after a failure, still run the steps that do not\n"
    "                     depend on it (default: start nothing new)\n"
    "  -n, --dry-run      print the plan, run nothing, write no report\n"
    "  --set NAME=VALUE   override (or define) the job variable NAME\n"
    "  --untrusted        every step as 'untrusted: true': images are hostile\n"
    "                     (format given; backing files only if the job made\n"
    "                     them, allow_backing lists them, or they lie in the\n"
    "                     image's directory)\n"
    "  --no-space-check   start even if the steps' estimated new bytes do not\n"
    "                     fit in the free space of their file systems\n"
    "  -h, --help         show this help\n"
    "\n"
    "SIGINT or SIGTERM cancels the running steps, removes their temporary\n"
    "files and writes the report with status 'interrupted'.\n"
    "\n"
    "Exit status: 0 every step succeeded, 1 a step failed, 2 bad usage or\n"
    "an invalid job (nothing ran), 130 interrupted.\n";

enum { OPT_NO_SPACE_CHECK = CLI_OPT_UNTRUSTED + 1 };

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
    unsigned threads;
    bool keep_going;
    bool dry_run;
    bool untrusted;
    bool no_space_check;
    struct job_vars set;
};

static int parse_args(int argc, char **argv, struct run_args *a)
{
    static const struct option longopts[] = {
        { "jobs", required_argument, NULL, 'j' },
        { "report", required_argument, NULL, 'r' },
        { "keep-going", no_argument, NULL, 'k' },
        { "dry-run", no_argument, NULL, 'n' },
        { "set", required_argument, NULL, 's' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "no-space-check", no_argument, NULL, OPT_NO_SPACE_CHECK },
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
        case CLI_OPT_UNTRUSTED: a->untrusted = true; break;
        case OPT_NO_SPACE_CHECK: a->no_space_check = true; break;
        case 's':
            if (cli_job_set("run", &a->set, optarg) != CLI_OK) {
                return CLI_USAGE;
            }
            break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return cli_bad_option("run", c, argv, longopts);
        }
    }
    return cli_job_operand("run", argc, argv, &a->job_path);
}

static void print_summary(const struct run *run, const char *report)
{
    size_t n[STEP_UP_TO_DATE + 1] = { 0 };

    for (size_t i = 0; i < run->dag->n; i++) {
        n[run->steps[i].status]++;
    }
    printf("%s %s: %zu step%s, %zu succeeded, %zu failed, %zu skipped in "
           "%.2f s with %u thread%s\n",
           run->job->name, run_status_name(run->status), run->dag->n,
           run->dag->n == 1 ? "" : "s", n[STEP_SUCCEEDED], n[STEP_FAILED],
           n[STEP_SKIPPED], (double)run->duration_ms / 1000.0, run->threads,
           run->threads == 1 ? "" : "s");
    if (report) {
        printf("report: %s\n", report);
    }
    fflush(stdout);
    for (size_t i = 0; i < run->dag->n; i++) {
        if (run->steps[i].status == STEP_FAILED) {
            cli_error("step '%s' failed: %s", run->job->steps[i].id,
                      run->steps[i].ctx.err.msg);
        }
    }
}

/* Remove the temporaries that runs killed earlier left, and say so. */
static void report_stale_temps(const struct dag *dag, const char *report)
{
    struct stale_temps st;
    char human[32];

    runlock_clean_temps(dag, report, &st);
    if (st.removed) {
        df_format_size(st.bytes, human, sizeof(human));
        fprintf(stderr, "diskforge: removed %zu stale temporary file%s of "
                "this job's outputs (left by runs that are gone), freeing "
                "%llu bytes (%s)\n", st.removed, st.removed == 1 ? "" : "s",
                (unsigned long long)st.bytes, human);
    }
}

static int run_loaded(struct run_args *a, const struct job *job,
                      const struct dag *dag)
{
    struct run_observer ob;
    struct progress prog;
    struct run_opts opts = { 0 };
    struct df_error err = { 0 };
    char *report_path = NULL;
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
    report_stale_temps(dag, report_path);
    progress_init(&prog, &ob, stdout, isatty(STDOUT_FILENO));
    opts.threads = a->threads;
    opts.keep_going = a->keep_going;
    opts.observer = &ob;
    opts.should_stop = should_stop;
    if (!a->no_space_check && admit_check(dag, &err) < 0) {
        /* refused before anything started: every step skipped */
        cli_error("%s", err.msg);
        run = admit_refused_run(job, dag, err.msg);
        df_error_clear(&err);
        if (!run) {
            df_fail(&err, DF_E_NOMEM, "out of memory");
        }
    } else {
        catch_signals();
        run = job_run(job, dag, &opts, &err);
    }
    progress_end(&prog);
    if (!run) {
        runlock_release(lock);
        free(report_path);
        return cli_fail(&err);
    }
    report = report_build(run);
    ret = report ? report_write(report, report_path, &err) : -DF_E_NOMEM;
    json_decref(report);
    print_summary(run, ret == 0 ? report_path : NULL);
    if (ret < 0) {
        cli_error("%s", err.code ? err.msg : "cannot build the report");
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

int cmd_run(int argc, char **argv)
{
    struct run_args a = { 0 };
    struct job_diags diags;
    struct job *job;
    struct dag *dag;
    int ret = parse_args(argc, argv, &a);

    if (ret != CLI_OK) {
        job_vars_release(&a.set);
        return ret < 0 ? CLI_OK : ret; /* -1: --help */
    }
    if (cli_job_load(a.job_path, &a.set, &job, &dag, &diags) != CLI_OK) {
        job_diags_release(&diags);
        job_vars_release(&a.set);
        return CLI_USAGE;
    }
    for (size_t i = 0; a.untrusted && i < job->n_steps; i++) {
        job->steps[i].untrusted = true;
    }
    if (a.dry_run) {
        plan_print(dag, PLAN_TEXT, stdout);
        ret = CLI_OK;
    } else {
        ret = run_loaded(&a, job, dag);
    }
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    job_vars_release(&a.set);
    return ret;
}
