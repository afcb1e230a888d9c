/* SPDX-License-Identifier: MIT */
/*
 * pool.c - worker threads for the job runner.
 *
 * Lock order: there is one lock, pool->lock; it guards the two queues and
 * the flags.  Work items are run without it.  pool->work wakes workers
 * when an item is queued or the pool stops; pool->done wakes the owner
 * when an item finishes (or on pool_kick()).
 */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct queue {
    struct pool_item *head, *tail;
};

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t work;  /* todo not empty, or stopping */
    pthread_cond_t done;  /* finished not empty, or kicked */
    struct queue todo;
    struct queue finished;
    bool stopping;
    bool kicked;
    unsigned n_threads;
    pthread_t *threads;
};

static void push(struct queue *q, struct pool_item *it)
{
    it->link = NULL;
    if (q->tail) {
        q->tail->link = it;
    } else {
        q->head = it;
    }
    q->tail = it;
}

static struct pool_item *pop(struct queue *q)
{
    struct pool_item *it = q->head;

    if (it) {
        q->head = it->link;
        if (!q->head) {
            q->tail = NULL;
        }
        it->link = NULL;
    }
    return it;
}

static void *worker(void *arg)
{
    struct pool *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct pool_item *it = pop(&p->todo);
        if (!it) {
            if (p->stopping) {
                break;
            }
            pthread_cond_wait(&p->work, &p->lock);
            continue;
        }
        pthread_mutex_unlock(&p->lock);
        it->fn(it);
        pthread_mutex_lock(&p->lock);
        push(&p->finished, it);
        pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

struct pool *pool_new(unsigned threads)
{
    struct pool *p = calloc(1, sizeof(*p));
    pthread_condattr_t ca;

    if (!p) {
        return NULL;
    }
    if (threads == 0) {
        threads = 1;
    }
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->threads) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    /* timed waits measure with the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->done, &ca);
    pthread_condattr_destroy(&ca);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            break;
        }
        p->n_threads++;
    }
    if (!p->n_threads) {
        pool_free(p);
        return NULL;
    }
    return p;
}

void pool_submit(struct pool *p, struct pool_item *item)
{
    pthread_mutex_lock(&p->lock);
    push(&p->todo, item);
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
}

struct pool_item *pool_wait(struct pool *p, int timeout_ms)
{
    struct pool_item *it;
    struct timespec until;

    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&p->lock);
    while (!(it = pop(&p->finished)) && !p->kicked) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&p->done, &p->lock);
        } else if (pthread_cond_timedwait(&p->done, &p->lock, &until) ==
                   ETIMEDOUT) {
            it = pop(&p->finished);
            break;
        }
    }
    p->kicked = false;
    pthread_mutex_unlock(&p->lock);
    return it;
}

void pool_kick(struct pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->kicked = true;
    pthread_cond_signal(&p->done);
    pthread_mutex_unlock(&p->lock);
}

void pool_free(struct pool *p)
{
    if (!p) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n_threads; i++) {
        pthread_join(p->threads[i], NULL);
    }
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}
