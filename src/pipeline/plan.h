/* SPDX-License-Identifier: MIT */
/*
 * plan.h - print a job's DAG without running it (`plan`, `run --dry-run`):
 * what each step would do and, for each dependency, why it exists.
 *
 * Formats: text (for people), json (for scripts), dot (Graphviz: edges
 * run from a step to the steps that wait for it).
 * Thread-safety: any thread, on different outputs.
 */
#ifndef DF_PIPELINE_PLAN_H
#define DF_PIPELINE_PLAN_H

#include <stdio.h>

#include <jansson.h>

#include "dag.h"

enum plan_format { PLAN_TEXT, PLAN_JSON, PLAN_DOT };

int plan_format_parse(const char *name, enum plan_format *out);
/*
 * @reasons: per step, why it would run or "up-to-date" (incremental.h),
 * printed with each step (text) or as "up_to_date" and "reason" (json);
 * NULL leaves them out.
 */
void plan_print(const struct dag *dag, const char *const *reasons,
                enum plan_format fmt, FILE *out);
/* One line saying what step @s would do ("create qcow2 'x', 8 GiB"). */
char *plan_step_summary(const struct job_step *s);
/* The JSON form of the plan (you own it). */
json_t *plan_json(const struct dag *dag, const char *const *reasons);

#endif
