/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c - load a job file and build its DAG in one call.
 */
#include "pipeline.h"

int pipeline_load(const char *path, const struct job_vars *set,
                  struct job **job, struct dag **dag,
                  struct job_diags *diags)
{
    *dag = NULL;
    *job = job_load(path, set, diags);
    if (!*job) {
        return -DF_E_JOB;
    }
    *dag = dag_build(*job, diags);
    if (!*dag) {
        job_free(*job);
        *job = NULL;
        return -DF_E_JOB;
    }
    return 0;
}
