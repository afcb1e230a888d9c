/* SPDX-License-Identifier: MIT */
/*
 * cmd-plan.c - `diskforge plan`: print a job's dependency graph, what each
 * step would do and why it waits for each step it depends on.
 */
#include <stdio.h>

#include "cli.h"
#include "incremental.h"
#include "pipeline.h"

static const char usage_text[] =
    "usage: diskforge plan JOB.yaml [--format text|json|dot] "
    "[--state FILE]\n"
    "                      [--set NAME=VALUE]...\n"
    "\n"
    "Print the steps of JOB.yaml in file order with what each would do and,\n"
    "for every step it depends on, the reason: 'needs', or the path and the\n"
    "hazard (read after write, write after write, write after read).\n"
    "With each step, whether it is up to date against the state store and\n"
    "if not, why it would run.  Nothing runs and nothing is written (the\n"
    "store included).  '--format dot' gives a Graphviz graph (dot -Tsvg).\n"
    "\n"
    "  --format FMT       text (default), json or dot\n"
    "  --state FILE       the state store (default: .diskforge/NAME.db beside\n"
    "                     the job file); without one every step is never-run\n"
    "  --set NAME=VALUE   override (or define) the job variable NAME\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 printed, 2 the job is invalid (or bad usage).\n";

int cmd_plan(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "format", required_argument, NULL, 'F' },
        { "set", required_argument, NULL, 's' },
        { "state", required_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum plan_format fmt = PLAN_TEXT;
    struct job_vars set = { 0 };
    struct incr_opts io = { .window_ns = INCR_DISTRUST_NS };
    struct df_error err = { 0 };
    struct incr *in = NULL;
    struct job_diags diags;
    struct job *job;
    struct dag *dag;
    const char *path;
    int c, ret = CLI_OK;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'F':
            if (plan_format_parse(optarg, &fmt) < 0) {
                ret = cli_usage("plan", "unknown format '%s' (use text, json "
                                "or dot)", optarg);
            }
            break;
        case 's':
            ret = cli_job_set("plan", &set, optarg);
            break;
        case 'S':
            io.state_path = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            job_vars_release(&set);
            return CLI_OK;
        default:
            ret = cli_bad_option("plan", c, argv, longopts);
            break;
        }
        if (ret != CLI_OK) {
            job_vars_release(&set);
            return ret;
        }
    }
    if (cli_job_operand("plan", argc, argv, &path) != CLI_OK) {
        job_vars_release(&set);
        return CLI_USAGE;
    }
    ret = cli_job_load(path, &set, &job, &dag, &diags);
    if (ret == CLI_OK && incr_open(dag, &io, &in, &err) < 0) {
        cli_error("%s", err.msg);
        ret = CLI_FAIL;
    }
    if (ret == CLI_OK) {
        plan_print(dag, incr_reasons(in), fmt, stdout);
    }
    incr_free(in);
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    job_vars_release(&set);
    return ret;
}
