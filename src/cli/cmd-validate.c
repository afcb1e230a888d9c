/* SPDX-License-Identifier: MIT */
/*
 * cmd-validate.c - `diskforge validate`: check a job file without running
 * anything, printing every problem as file:line:column.
 */
#include <stdio.h>

#include "cli.h"
#include "pipeline.h"

static const char usage_text[] =
    "usage: diskforge validate JOB.yaml [--set NAME=VALUE]...\n"
    "\n"
    "Check JOB.yaml: its syntax, every key and value of every step, the\n"
    "ids that 'needs' names, and the dependency graph (no cycles).  Every\n"
    "problem is printed as FILE:LINE:COLUMN: error: MESSAGE.  Nothing runs.\n"
    "\n"
    "  --set NAME=VALUE   override (or define) the job variable NAME\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 the job is valid, 2 it is not (or bad usage).\n";

int cmd_validate(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "set", required_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct job_vars set = { 0 };
    struct job_diags diags;
    struct job *job;
    struct dag *dag;
    const char *path;
    int c, ret;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (cli_job_set("validate", &set, optarg) != CLI_OK) {
                job_vars_release(&set);
                return CLI_USAGE;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            job_vars_release(&set);
            return CLI_OK;
        default:
            job_vars_release(&set);
            return cli_bad_option("validate", c, argv, longopts);
        }
    }
    if (cli_job_operand("validate", argc, argv, &path) != CLI_OK) {
        job_vars_release(&set);
        return CLI_USAGE;
    }
    ret = cli_job_load(path, &set, &job, &dag, &diags);
    if (ret != CLI_OK) {
        fprintf(stderr, "diskforge: '%s' is not a valid job: %zu error%s\n",
                path, diags.n, diags.n == 1 ? "" : "s");
    } else {
        printf("%s: valid job '%s' with %zu step%s\n", path, job->name,
               job->n_steps, job->n_steps == 1 ? "" : "s");
    }
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    job_vars_release(&set);
    return ret;
}
