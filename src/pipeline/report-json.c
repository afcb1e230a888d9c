/* SPDX-License-Identifier: MIT */
/*
 * report-json.c - the run report as JSON.
 *
 * The report is a jansson object built after the run and dumped once, so
 * escaping lives in one place (jansson) and the output is always valid
 * JSON.  Strings from outside (error messages, command output, file
 * names) are made valid UTF-8 first; see report_string().
 */
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h" /* df_temp_name() */

#ifndef DF_VERSION
#define DF_VERSION "0.1.0"
#endif

/* Length of the valid UTF-8 sequence at @p (at most @n bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;

    if (p[0] < 0x80) {
        return 1;
    } else if ((p[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    /* overlong forms, surrogates and values past U+10FFFF are invalid */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return len;
}

json_t *report_string(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    char *clean;
    size_t o = 0;
    json_t *j;

    if (!s) {
        return json_null();
    }
    clean = malloc(len * 3 + 1); /* each bad byte becomes 3 bytes */
    if (!clean) {
        return json_string("(out of memory)");
    }
    for (size_t i = 0; i < len;) {
        size_t n = p[i] ? utf8_seq(p + i, len - i) : 0;
        if (n) {
            memcpy(clean + o, p + i, n);
            o += n;
            i += n;
        } else if (!p[i]) {
            /* NUL cannot travel in a C string: show it as U+FFFD too */
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(clean, o);
    free(clean);
    return j ? j : json_string("(invalid string)");
}

json_t *report_str(const char *s)
{
    return s ? report_string(s, strlen(s)) : json_null();
}

void report_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *time_json(int64_t ms)
{
    char buf[40];

    if (!ms) {
        return json_null();
    }
    report_time(ms, buf, sizeof(buf));
    return json_string(buf);
}

json_t *report_needs(const struct dag *dag, size_t i)
{
    json_t *a = json_array();

    for (size_t k = 0; k < dag->nodes[i].n_preds; k++) {
        const struct job_step *p = &dag->job->steps[dag->nodes[i].preds[k].pred];
        json_array_append_new(a, report_str(p->id));
    }
    return a;
}

static json_t *error_json(const struct run_step *rs)
{
    json_t *e;

    if (rs->status == STEP_FAILED) {
        e = json_object();
        json_object_set_new(e, "code",
                            json_string(rs->err_code[0]
                                            ? rs->err_code
                                            : df_strerror(rs->ctx.err.code)));
        json_object_set_new(e, "message", report_str(rs->ctx.err.msg));
        return e;
    }
    if (rs->status == STEP_SKIPPED) {
        e = json_object();
        json_object_set_new(e, "code", json_string(df_strerror(DF_E_CANCELED)));
        json_object_set_new(e, "message",
                            report_str(rs->skip_reason ? rs->skip_reason
                                                       : "not run"));
        return e;
    }
    return json_null();
}

/* The first keys of a step's object: id, op, description (if any). */
static json_t *step_head(const struct job_step *s, const char *id)
{
    json_t *o = json_object();

    json_object_set_new(o, "id", report_str(s ? s->id : id));
    if (s) {
        json_object_set_new(o, "op", json_string(job_op_name(s->op)));
    }
    if (s && s->description) {
        json_object_set_new(o, "description", report_str(s->description));
    }
    return o;
}

json_t *report_step(const struct run *run, size_t i)
{
    const struct run_step *rs = &run->steps[i];
    bool ran = rs->started_ms != 0;
    json_t *o = step_head(&run->job->steps[i], NULL);

    json_object_set_new(o, "status", json_string(step_status_name(rs->status)));
    json_object_set_new(o, "reason", report_str(rs->reason));
    if (rs->reproducible != RUN_REPRO_UNCHECKED) {
        json_object_set_new(o, "reproducible",
                            rs->reproducible == RUN_REPRO_UNKNOWN
                                ? json_null()
                                : json_boolean(rs->reproducible ==
                                               RUN_REPRO_SAME));
    }
    json_object_set_new(o, "needs", report_needs(run->dag, i));
    json_object_set_new(o, "started_at", time_json(ran ? rs->started_ms : 0));
    json_object_set_new(o, "finished_at",
                        time_json(ran ? rs->finished_ms : 0));
    json_object_set_new(o, "duration_ms",
                        ran ? json_integer(rs->duration_ms) : json_null());
    json_object_set_new(o, "error", error_json(rs));
    json_object_set_new(o, "outputs", rs->ctx.outputs
                                          ? json_incref(rs->ctx.outputs)
                                          : json_array());
    json_object_set_new(o, "result", rs->ctx.result
                                         ? json_incref(rs->ctx.result)
                                         : json_null());
    if (rs->slurm_job_id > 0) {
        json_object_set_new(o, "slurm_job_id",
                            json_integer((json_int_t)rs->slurm_job_id));
    }
    return o;
}

json_t *report_step_refused(const struct dag *dag, const char *id,
                            const char *code, const char *message)
{
    const struct job_step *s = dag ? job_find_step(dag->job, id) : NULL;
    json_t *o = step_head(s, id), *e = json_object(), *needs;

    needs = s ? report_needs(dag, (size_t)(s - dag->job->steps)) : json_array();
    json_object_set_new(o, "status", json_string("failed"));
    json_object_set_new(o, "reason", json_null());
    json_object_set_new(o, "needs", needs);
    json_object_set_new(o, "started_at", json_null());
    json_object_set_new(o, "finished_at", json_null());
    json_object_set_new(o, "duration_ms", json_null());
    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", report_str(message));
    json_object_set_new(o, "error", e);
    json_object_set_new(o, "outputs", json_array());
    json_object_set_new(o, "result", json_null());
    return o;
}

json_t *report_build(const struct run *run)
{
    json_t *r = json_object(), *job = json_object(), *steps = json_array();
    json_t *sum = json_object();
    char hex[2 * DF_SHA256_LEN + 1];
    size_t count[STEP_UP_TO_DATE + 1] = { 0 };

    df_digest_hex(run->job->sha256, hex);
    json_object_set_new(r, "diskforge_version", json_string(DF_VERSION));
    json_object_set_new(job, "name", report_str(run->job->name));
    json_object_set_new(job, "path", report_str(run->job->path));
    json_object_set_new(job, "sha256", json_string(hex));
    json_object_set_new(r, "job", job);
    json_object_set_new(r, "status", json_string(run_status_name(run->status)));
    json_object_set_new(r, "started_at", time_json(run->started_ms));
    json_object_set_new(r, "finished_at", time_json(run->finished_ms));
    json_object_set_new(r, "duration_ms", json_integer(run->duration_ms));
    json_object_set_new(r, "threads", json_integer(run->threads));
    for (size_t i = 0; i < run->dag->n; i++) {
        json_array_append_new(steps, report_step(run, i));
        count[run->steps[i].status]++;
    }
    json_object_set_new(r, "steps", steps);
    json_object_set_new(sum, "total", json_integer((json_int_t)run->dag->n));
    json_object_set_new(sum, "succeeded",
                        json_integer((json_int_t)count[STEP_SUCCEEDED]));
    json_object_set_new(sum, "failed",
                        json_integer((json_int_t)count[STEP_FAILED]));
    json_object_set_new(sum, "skipped",
                        json_integer((json_int_t)count[STEP_SKIPPED]));
    json_object_set_new(sum, "up_to_date",
                        json_integer((json_int_t)count[STEP_UP_TO_DATE]));
    json_object_set_new(r, "summary", sum);
    return r;
}

int report_write(json_t *report, const char *path, struct df_error *err)
{
    char *tmp = df_temp_name(path);
    int ret = 0;

    if (!tmp) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    if (json_dump_file(report, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
        ret = df_fail(err, DF_E_IO, "cannot write the report '%s'", path);
    } else if (rename(tmp, path) < 0) {
        ret = df_fail_sys(err, "cannot write the report '%s'", path);
    }
    if (ret < 0) {
        unlink(tmp);
    }
    free(tmp);
    return ret;
}

char *report_default_path(const char *job_path)
{
    size_t n = job_name_stem(job_path);
    char *out;

    if (asprintf(&out, "%.*s.report.json", (int)n, job_path) < 0) {
        return NULL;
    }
    return out;
}
