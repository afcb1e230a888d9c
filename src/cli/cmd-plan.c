/* SPDX-License-Identifier: MIT */
/*
 * cmd-plan.c - `diskforge plan`: print a job's dependency graph, what each
 * step would do and why it waits for each step it depends on.
 */
#include <stdio.h>

#include "cli.h"
#include "pipeline.h"

static const char usage_text[] =
    "usage: diskforge plan JOB.yaml [--format text|json|dot] "
    "[--set NAME=VALUE]...\n"
    "\n"
    "Print the steps of JOB.yaml in file order with what each would do and,\n"
    "for every step it depends on, the reason: 'needs', or the path and the\n"
    "hazard (read after write, write after write, write after read).\n"
    "Nothing runs.  '--format dot' gives a Graphviz graph (dot -Tsvg).\n"
    "\n"
    "  --format FMT       text (default), json or dot\n"
    "  --set NAME=VALUE   override (or define) the job variable NAME\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 printed, 2 the job is invalid (or bad usage).\n";

int cmd_plan(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "format", required_argument, NULL, 'F' },
        { "set", required_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    enum plan_format fmt = PLAN_TEXT;
    struct job_vars set = { 0 };
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
    if (ret == CLI_OK) {
        plan_print(dag, fmt, stdout);
    }
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    job_vars_release(&set);
    return ret;
}
