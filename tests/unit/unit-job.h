/* SPDX-License-Identifier: MIT */
/*
 * unit-job.h - small jobs for the scheduler's tests, written as one line:
 * steps "id:what[/need,need]" separated by spaces.  Each becomes an `info`
 * step on id.img whose description is `what` (the fake op or fake
 * executor reads it: "ok", "fail", "sleep:MS", "wait"...).
 *
 *   struct unit_job j;
 *   unit_job_load(&j, "c:ok/b b:ok/a a:ok");
 *   ... job_run(j.job, j.dag, ...) ...
 *   unit_job_free(&j);
 */
#ifndef DF_UNIT_JOB_H
#define DF_UNIT_JOB_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

struct unit_job {
    struct job *job;
    struct dag *dag;
};

static void unit_job_load(struct unit_job *j, const char *spec)
{
    static char text[65536];
    char *copy = strdup(spec), *save = NULL;
    size_t n = (size_t)snprintf(text, sizeof(text), "version: 1\nsteps:\n");
    struct job_diags diags;

    for (char *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        char *id = tok, *what = strchr(tok, ':'), *needs;
        *what++ = '\0';
        needs = strchr(what, '/');
        if (needs) {
            *needs++ = '\0';
        }
        n += (size_t)snprintf(text + n, sizeof(text) - n,
                              "  - id: %s\n    op: info\n    image: %s.img\n"
                              "    description: \"%s\"\n",
                              id, id, what);
        if (needs) {
            n += (size_t)snprintf(text + n, sizeof(text) - n,
                                  "    needs: [%s]\n", needs);
        }
    }
    free(copy);
    job_diags_init(&diags);
    j->job = job_load_string("sched.yaml", text, n, NULL, &diags);
    if (!j->job) {
        job_diags_print(&diags, stderr);
    }
    ck_assert_ptr_nonnull(j->job);
    j->dag = dag_build(j->job, &diags);
    ck_assert_ptr_nonnull(j->dag);
    job_diags_release(&diags);
}

static void unit_job_free(struct unit_job *j)
{
    dag_free(j->dag);
    job_free(j->job);
}

/* The index of step @id, which must exist. */
static size_t unit_job_index(const struct unit_job *j, const char *id)
{
    const struct job_step *s = job_find_step(j->job, id);

    ck_assert_ptr_nonnull(s);
    return s->index;
}

#endif
