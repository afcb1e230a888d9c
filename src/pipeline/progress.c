/* SPDX-License-Identifier: MIT */
/*
 * progress.c - the observer behind `diskforge run`'s output.
 */
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *id_of(const struct run *run, size_t i)
{
    return run->job->steps[i].id ? run->job->steps[i].id : "?";
}

static int width_of(FILE *out)
{
    struct winsize ws;

    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) {
        return ws.ws_col;
    }
    return 80;
}

/* Move to the start of the running block and clear it. */
static void erase(struct progress *p)
{
    if (p->drawn) {
        fprintf(p->out, "\r\033[%zuA\033[J", p->drawn);
        p->drawn = 0;
    }
}

static void draw(struct progress *p, const struct run *run)
{
    int width = width_of(p->out);

    erase(p);
    for (size_t i = 0; i < run->dag->n; i++) {
        const struct run_step *rs = &run->steps[i];
        uint64_t done, total;
        char line[512], d[32], t[32];
        int n;
        if (rs->status != STEP_RUNNING) {
            continue;
        }
        done = atomic_load_explicit(&rs->ctx.done, memory_order_relaxed);
        total = atomic_load_explicit(&rs->ctx.total, memory_order_relaxed);
        n = snprintf(line, sizeof(line), "  running %s (%s)", id_of(run, i),
                     job_op_name(run->job->steps[i].op));
        if (total > 1) {
            df_format_size(done, d, sizeof(d));
            df_format_size(total, t, sizeof(t));
            n += snprintf(line + n, sizeof(line) - (size_t)n,
                          "  %3d%%  %s / %s",
                          (int)(done * 100 / total), d, t);
        }
        if (n >= width) {
            line[width - 1] = '\0';
        }
        fprintf(p->out, "%s\n", line);
        p->drawn++;
    }
    fflush(p->out);
    p->last_draw = mono_ms();
}

static void on_start(void *opaque, const struct run *run, size_t i)
{
    struct progress *p = opaque;

    p->started++;
    if (p->tty) {
        draw(p, run);
        return;
    }
    fprintf(p->out, "start %s (%s)%s%s\n", id_of(run, i),
            job_op_name(run->job->steps[i].op),
            run->steps[i].reason ? ": " : "",
            run->steps[i].reason ? run->steps[i].reason : "");
    fflush(p->out);
}

static void on_finish(void *opaque, const struct run *run, size_t i)
{
    struct progress *p = opaque;
    const struct run_step *rs = &run->steps[i];

    if (p->tty) {
        erase(p);
    }
    switch (rs->status) {
    case STEP_SUCCEEDED:
        fprintf(p->out, "[%zu/%zu] ok %s (%s, %.2f s)\n", run->n_finished,
                run->dag->n, id_of(run, i),
                job_op_name(run->job->steps[i].op),
                (double)rs->duration_ms / 1000.0);
        break;
    case STEP_FAILED:
        fprintf(p->out, "[%zu/%zu] FAILED %s (%s): %s\n", run->n_finished,
                run->dag->n, id_of(run, i),
                job_op_name(run->job->steps[i].op), rs->ctx.err.msg);
        break;
    case STEP_UP_TO_DATE:
        fprintf(p->out, "[%zu/%zu] up to date %s (%s)\n", run->n_finished,
                run->dag->n, id_of(run, i),
                job_op_name(run->job->steps[i].op));
        break;
    case STEP_SKIPPED:
        fprintf(p->out, "[%zu/%zu] skipped %s: %s\n", run->n_finished,
                run->dag->n, id_of(run, i),
                rs->skip_reason ? rs->skip_reason : "not run");
        break;
    default:
        break;
    }
    if (p->tty) {
        draw(p, run);
    }
    fflush(p->out);
}

static void on_tick(void *opaque, const struct run *run)
{
    struct progress *p = opaque;

    if (p->tty && mono_ms() - p->last_draw >= 100) {
        draw(p, run);
    }
}

void progress_init(struct progress *p, struct run_observer *ob, FILE *out,
                   bool tty)
{
    memset(p, 0, sizeof(*p));
    p->out = out;
    p->tty = tty;
    memset(ob, 0, sizeof(*ob));
    ob->opaque = p;
    ob->start = on_start;
    ob->finish = on_finish;
    ob->tick = on_tick;
}

void progress_end(struct progress *p)
{
    if (p->tty) {
        erase(p);
        fflush(p->out);
    }
}
