/* SPDX-License-Identifier: MIT */
/*
 * cli-job.c - what the job commands (run, plan, validate) share: the
 * --set option, the one JOB.yaml operand, and loading the job with its
 * diagnostics printed.
 */
#include <stdio.h>

#include "cli.h"
#include "pipeline.h"

int cli_job_set(const char *cmd, struct job_vars *set, const char *arg)
{
    if (job_vars_set_arg(set, arg) < 0) {
        return cli_usage(cmd, "--set wants NAME=VALUE, not '%s'", arg);
    }
    return CLI_OK;
}

int cli_job_operand(const char *cmd, int argc, char **argv, const char **path)
{
    if (argc - optind != 1) {
        return cli_usage(cmd, argc == optind ? "missing job file"
                                             : "expected one job file");
    }
    *path = argv[optind];
    return CLI_OK;
}

int cli_job_load(const char *path, const struct job_vars *set,
                 struct job **job, struct dag **dag, struct job_diags *diags)
{
    job_diags_init(diags);
    if (pipeline_load(path, set, job, dag, diags) < 0) {
        job_diags_print(diags, stderr);
        return CLI_USAGE;
    }
    return CLI_OK;
}
