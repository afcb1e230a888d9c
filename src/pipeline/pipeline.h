/* SPDX-License-Identifier: MIT */
/*
 * pipeline.h - the job runner as one include: job files (job.h), the DAG
 * (dag.h), the runner (runner.h), the report (report.h), plans (plan.h)
 * and progress output (progress.h), plus the loading step they share.
 */
#ifndef DF_PIPELINE_H
#define DF_PIPELINE_H

#include "dag.h"
#include "job.h"
#include "plan.h"
#include "progress.h"
#include "report.h"
#include "runner.h"

/*
 * pipeline_load() - read and check the job at @path with --set values
 * @set, and build its DAG.  Returns 0 with *@job and *@dag yours (free
 * with dag_free() then job_free()), or -DF_E_JOB with every problem in
 * @diags and both set to NULL.
 */
int pipeline_load(const char *path, const struct job_vars *set,
                  struct job **job, struct dag **dag,
                  struct job_diags *diags);

#endif
