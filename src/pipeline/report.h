/* SPDX-License-Identifier: MIT */
/*
 * report.h - the JSON report of a run (SPEC §5, docs/report.schema.json)
 * and the JSON form of a plan, written with jansson.
 *
 * jansson escapes quotes, control characters and newlines itself but
 * refuses strings that are not UTF-8; every string that may hold foreign
 * bytes (messages, command output, paths) goes through report_string(),
 * which replaces each invalid byte with U+FFFD first.
 *
 * Ownership: the json_t results are yours (json_decref()).
 * Thread-safety: any thread, on different objects.
 */
#ifndef DF_PIPELINE_REPORT_H
#define DF_PIPELINE_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dag.h"
#include "runner.h"

/* A JSON string of @len bytes at @s with invalid UTF-8 replaced. */
json_t *report_string(const char *s, size_t len);
/* The same for a NUL-terminated string; NULL gives JSON null. */
json_t *report_str(const char *s);

/* "2026-11-27T15:00:00Z" for @ms since the epoch, into @buf (>= 32). */
void report_time(int64_t ms, char *buf, size_t len);

/* The report of a finished @run. */
json_t *report_build(const struct run *run);

/* The object of step @i of a finished @run, as in its report's "steps". */
json_t *report_step(const struct run *run, size_t i);

/*
 * The object of a step that was refused before it could run (`diskforge
 * step`: the job file changed, another diskforge version): status
 * "failed", error {@code, @message}.  The step @id is looked up in
 * @dag's job for its op, description and needs; when @dag is NULL (the
 * job file no longer loads) or has no such step, the object holds no
 * "op" and empty needs (docs/report.schema.json allows that only with
 * the codes EJOB and EJOBCHANGED).
 */
json_t *report_step_refused(const struct dag *dag, const char *id,
                            const char *code, const char *message);

/* The effective `needs` of step @i: ids of every predecessor. */
json_t *report_needs(const struct dag *dag, size_t i);

/*
 * Write @report to @path atomically (a temporary file beside it, renamed
 * into place), pretty-printed.  Returns 0 or -DF_E_* with @err set.
 */
int report_write(json_t *report, const char *path, struct df_error *err);

/* The default report path: JOB.report.json beside the job file. */
char *report_default_path(const char *job_path);

#endif
