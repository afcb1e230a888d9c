/* SPDX-License-Identifier: MIT */
/*
 * step.c - one step of a job on its own, through the local runner.
 *
 * The runner is asked, through its skip() hook, which steps are up to
 * date: every step but the one wanted is.  Its dependencies then count
 * as done, so it starts at once, and nothing that depends on it can
 * start (their own skip() said up to date too).
 */
#include "step.h"

#include <string.h>

#include "incremental.h" /* incr_hash_file() */

struct one_step {
    size_t index;
};

static bool skip_all_but_one(void *opaque, struct run_step *rs)
{
    const struct one_step *one = opaque;

    return rs->index != one->index;
}

/* On the worker, as `run` does it: the SHA-256 of each output file. */
static void hash_outputs(void *opaque, struct run_step *rs)
{
    size_t k;
    json_t *o;

    (void)opaque;
    if (rs->ret < 0 || !rs->ctx.outputs) {
        return;
    }
    json_array_foreach(rs->ctx.outputs, k, o) {
        const char *path = json_string_value(json_object_get(o, "path"));
        char hex[65];
        json_object_set_new(o, "sha256", path && incr_hash_file(path, hex) == 0
                                             ? json_string(hex)
                                             : json_null());
    }
}

struct run *step_run(const struct job *job, const struct dag *dag, size_t i,
                     bool (*should_stop)(void *opaque), void *stop_opaque,
                     struct df_error *err)
{
    struct one_step one = { .index = i };
    struct run_hooks hooks = {
        .opaque = &one,
        .skip = skip_all_but_one,
        .after = hash_outputs,
    };
    struct run_opts opts = {
        .threads = 1,
        .should_stop = should_stop,
        .stop_opaque = stop_opaque,
        .hooks = &hooks,
    };
    struct run *run;

    if (i >= dag->n) {
        df_fail(err, DF_E_INVAL, "'%s' has no step number %zu", job->path, i);
        return NULL;
    }
    run = job_run(job, dag, &opts, err);
    if (run) {
        /* the hooks lived on this stack frame */
        run->opts.hooks = NULL;
    }
    return run;
}

int step_file_sha256(const char *path, char hex[65], struct df_error *err)
{
    if (incr_hash_file(path, hex) < 0) {
        hex[0] = '\0';
        return df_fail_sys(err, "cannot read the job file '%s'", path);
    }
    return 0;
}
