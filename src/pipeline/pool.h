/* SPDX-License-Identifier: MIT */
/*
 * pool.h - a fixed set of worker threads fed from one queue.
 *
 * The scheduler (runner.c) submits work items from its own thread and
 * collects finished items with pool_wait(); workers never call back into
 * the scheduler, so all scheduling state stays on one thread.
 *
 * Ownership: the pool owns nothing it is given; an item submitted with
 * pool_submit() is handed back, unchanged but run, by pool_wait().
 * Thread-safety: pool_submit(), pool_wait() and pool_free() are for the
 * thread that called pool_new(); @fn runs on a worker without any pool
 * lock held.
 */
#ifndef DF_PIPELINE_POOL_H
#define DF_PIPELINE_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct pool;

/* A unit of work; link is the pool's (leave it alone). */
struct pool_item {
    void (*fn)(struct pool_item *item);
    struct pool_item *link;
};

/* Start @threads workers (at least one).  NULL when that fails. */
struct pool *pool_new(unsigned threads);

/* Queue @item to run on a worker. */
void pool_submit(struct pool *pool, struct pool_item *item);

/*
 * The next finished item, waiting at most @timeout_ms for one (< 0:
 * forever).  NULL when none finished in that time.
 */
struct pool_item *pool_wait(struct pool *pool, int timeout_ms);

/* Wake a pool_wait() in progress early (any thread, not signal-safe). */
void pool_kick(struct pool *pool);

/* Let queued items finish, stop the workers and free the pool. */
void pool_free(struct pool *pool);

#endif
