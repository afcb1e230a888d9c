/* SPDX-License-Identifier: MIT */
/*
 * exec-local.c - the local executor: steps run on the thread pool.
 *
 * start() queues the step's pool item; a worker runs it with
 * run_step_execute(); next() hands back finished items.  Cancelling sets
 * the run's cancel flag, which running ops read through op_progress(); the
 * scheduler never starts more steps than there are workers, so there is
 * nothing queued to take back.
 */
#include "executor.h"

#include <stdlib.h>

struct exec_local {
    struct executor ex;
    struct run *run;
    struct pool *pool;
};

static void run_item(struct pool_item *item)
{
    run_step_execute((struct run_step *)item);
}

static int local_start(struct executor *ex, struct run_step *rs)
{
    struct exec_local *l = (struct exec_local *)ex;

    rs->item.fn = run_item;
    pool_submit(l->pool, &rs->item);
    return 0;
}

static struct run_step *local_next(struct executor *ex, int timeout_ms,
                                   enum exec_event *what)
{
    struct exec_local *l = (struct exec_local *)ex;
    struct pool_item *it = pool_wait(l->pool, timeout_ms);

    *what = EXEC_FINISHED;
    return (struct run_step *)it;
}

static void local_cancel(struct executor *ex, enum exec_cancel how)
{
    struct exec_local *l = (struct exec_local *)ex;

    if (how == EXEC_CANCEL_ALL) {
        atomic_store(&l->run->cancel, true);
    }
}

static void local_finish(struct executor *ex)
{
    struct exec_local *l = (struct exec_local *)ex;

    pool_free(l->pool);
    l->pool = NULL;
}

static void local_free(struct executor *ex)
{
    struct exec_local *l = (struct exec_local *)ex;

    if (l) {
        pool_free(l->pool);
        free(l);
    }
}

static const struct executor_ops local_ops = {
    .name = "local",
    .start = local_start,
    .next = local_next,
    .cancel = local_cancel,
    .drop = NULL,
    .finish = local_finish,
    .free = local_free,
};

struct executor *executor_local_new(struct run *run, unsigned threads)
{
    struct exec_local *l = calloc(1, sizeof(*l));

    if (!l || !(l->pool = pool_new(threads))) {
        free(l);
        return NULL;
    }
    l->ex.ops = &local_ops;
    l->ex.ahead = false;
    l->run = run;
    return &l->ex;
}
