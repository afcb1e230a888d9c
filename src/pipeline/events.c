/* SPDX-License-Identifier: MIT */
/*
 * events.c - the JSON-lines event stream of a run (events.h).
 */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "report.h"

static void emit(struct events *ev, const char *name, json_t *o)
{
    double t = (double)run_now_ms() / 1000.0;
    json_t *line = json_object();
    char *text;

    /* the wall clock may step back: the stream's time does not */
    if (t < ev->last_time) {
        t = ev->last_time;
    }
    ev->last_time = t;
    json_object_set_new(line, "event", json_string(name));
    json_object_set_new(line, "time", json_real(t));
    json_object_update(line, o);
    json_decref(o);
    text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text) {
        fputs(text, ev->out);
        fputc('\n', ev->out);
        fflush(ev->out);
        free(text);
    }
}

static json_t *step_obj(const struct run *run, size_t i)
{
    json_t *o = json_object();

    json_object_set_new(o, "step", report_str(run->job->steps[i].id));
    json_object_set_new(o, "op", json_string(job_op_name(run->job->steps[i].op)));
    return o;
}

static void on_start(void *opaque, const struct run *run, size_t i)
{
    struct events *ev = opaque;
    json_t *o;

    if (ev->inner && ev->inner->start) {
        ev->inner->start(ev->inner->opaque, run, i);
    }
    o = step_obj(run, i);
    json_object_set_new(o, "reason", report_str(run->steps[i].reason));
    emit(ev, "step-start", o);
}

static void on_finish(void *opaque, const struct run *run, size_t i)
{
    struct events *ev = opaque;
    const struct run_step *rs = &run->steps[i];
    json_t *o, *err = json_null();

    if (ev->inner && ev->inner->finish) {
        ev->inner->finish(ev->inner->opaque, run, i);
    }
    o = step_obj(run, i);
    json_object_set_new(o, "status", json_string(step_status_name(rs->status)));
    json_object_set_new(o, "reason", report_str(rs->reason));
    json_object_set_new(o, "duration_ms", rs->started_ms
                                              ? json_integer(rs->duration_ms)
                                              : json_null());
    if (rs->status == STEP_FAILED || rs->status == STEP_SKIPPED) {
        err = json_object();
        json_object_set_new(err, "code", json_string(df_strerror(
                                             rs->status == STEP_FAILED
                                                 ? rs->ctx.err.code
                                                 : DF_E_CANCELED)));
        json_object_set_new(err, "message",
                            report_str(rs->status == STEP_FAILED
                                           ? rs->ctx.err.msg
                                           : rs->skip_reason));
    }
    json_object_set_new(o, "error", err);
    emit(ev, "step-finish", o);
}

static void on_tick(void *opaque, const struct run *run)
{
    struct events *ev = opaque;
    int64_t now = run_now_ms();

    if (ev->inner && ev->inner->tick) {
        ev->inner->tick(ev->inner->opaque, run);
    }
    for (size_t i = 0; i < run->dag->n && i < ev->n; i++) {
        const struct run_step *rs = &run->steps[i];
        uint64_t done, total;
        json_t *o;
        if (rs->status != STEP_RUNNING || now - ev->last_progress[i] < 1000) {
            continue;
        }
        total = atomic_load_explicit(&rs->ctx.total, memory_order_relaxed);
        done = atomic_load_explicit(&rs->ctx.done, memory_order_relaxed);
        if (total <= 1) {
            continue;
        }
        ev->last_progress[i] = now;
        o = json_object();
        json_object_set_new(o, "step", report_str(run->job->steps[i].id));
        json_object_set_new(o, "done", json_integer((json_int_t)done));
        json_object_set_new(o, "total", json_integer((json_int_t)total));
        emit(ev, "step-progress", o);
    }
}

int events_open(struct events *ev, const char *path,
                const struct run_observer *inner, size_t n_steps,
                struct df_error *err)
{
    memset(ev, 0, sizeof(*ev));
    ev->inner = inner;
    ev->n = n_steps;
    ev->last_progress = calloc(n_steps + 1, sizeof(*ev->last_progress));
    if (!ev->last_progress) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    if (!strcmp(path, "-")) {
        ev->out = stdout;
    } else {
        ev->out = fopen(path, "w");
        ev->owned = true;
        if (!ev->out) {
            free(ev->last_progress);
            ev->last_progress = NULL;
            return df_fail_sys(err, "cannot write the events file '%s'",
                               path);
        }
    }
    ev->ob.opaque = ev;
    ev->ob.start = on_start;
    ev->ob.finish = on_finish;
    ev->ob.tick = on_tick;
    return 0;
}

const struct run_observer *events_observer(struct events *ev)
{
    return &ev->ob;
}

void events_run_start(struct events *ev, const struct job *job,
                      unsigned threads)
{
    json_t *o = json_object();

    json_object_set_new(o, "job", report_str(job->name));
    json_object_set_new(o, "path", report_str(job->path));
    json_object_set_new(o, "steps", json_integer((json_int_t)job->n_steps));
    json_object_set_new(o, "threads", json_integer(threads));
    emit(ev, "run-start", o);
}

void events_run_finish(struct events *ev, const struct run *run)
{
    json_t *report = report_build(run), *o = json_object();

    json_object_set_new(o, "status", json_string(run_status_name(run->status)));
    json_object_set_new(o, "duration_ms", json_integer(run->duration_ms));
    json_object_set(o, "summary", json_object_get(report, "summary"));
    json_decref(report);
    emit(ev, "run-finish", o);
}

void events_close(struct events *ev)
{
    if (ev->owned && ev->out) {
        fclose(ev->out);
    }
    free(ev->last_progress);
    memset(ev, 0, sizeof(*ev));
}
