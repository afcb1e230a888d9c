/* SPDX-License-Identifier: MIT */
/*
 * fuzz_job.c - one fuzz input is the text of a job file.  The job reader,
 * the validator, the DAG builder and the three plan printers must take
 * any bytes without crashing, hanging or leaking: an invalid file ends in
 * diagnostics, a valid one in a plan.  Nothing is run and no file is
 * touched (the job is read from memory; its relative paths resolve
 * against a directory that is never opened).
 */
#include <stdint.h>
#include <stdio.h>

#include "dag.h"
#include "job.h"
#include "plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    struct job_diags diags;
    struct job_vars set = { 0 };
    struct job *job;

    if (!sink && !(sink = fopen("/dev/null", "w"))) {
        return 0;
    }
    job_diags_init(&diags);
    job_vars_set(&set, "out", "build/fuzz"); /* as --set out=... */
    job = job_load_string("/nonexistent/fuzz/job.yaml", (const char *)data,
                          size, &set, &diags);
    if (job) {
        struct dag *dag = dag_build(job, &diags);
        if (dag) {
            plan_print(dag, NULL, PLAN_TEXT, sink);
            plan_print(dag, NULL, PLAN_JSON, sink);
            plan_print(dag, NULL, PLAN_DOT, sink);
            dag_free(dag);
        }
        job_free(job);
    }
    job_diags_print(&diags, sink);
    job_diags_release(&diags);
    job_vars_release(&set);
    return 0;
}
