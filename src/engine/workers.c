/* SPDX-License-Identifier: MIT */
/*
 * workers.c - a fixed set of threads that run one function on every
 * thread at once, as often as asked (see internal.h).
 *
 * A bulk operation (convert, convert -c) starts it once and hands it one
 * batch after another: no thread is created inside the copy loop.  The
 * caller is thread 0 and works too, so n threads means n - 1 workers.
 *
 * The functions share out their work themselves (an atomic index), so a
 * batch is done once any one thread has run it through.  A worker joins a
 * batch only while it is open; the caller closes it when its own call
 * returns and then waits only for the workers that joined.  So a worker
 * the scheduler has not run yet (the machine is busy) never holds the
 * caller up: it skips the batches it missed.  A batch can also be posted
 * and joined later (df_workers_post(), then df_workers_wait()), so that
 * the workers read ahead while the caller writes.
 *
 * Lock order: only w->mu.
 */
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define MAX_WORKERS 16

struct df_workers;

struct worker {
    struct df_workers *w;
    unsigned index;
    pthread_t thread;
};

struct df_workers {
    pthread_mutex_t mu;
    pthread_cond_t go;   /* a new batch, or quit */
    pthread_cond_t done; /* a worker finished its share */
    unsigned generation;
    bool open;           /* workers may still join the current batch */
    unsigned busy;       /* workers inside the current batch */
    bool quit;
    unsigned n;          /* threads, the caller included */
    void (*fn)(void *ctx, unsigned t);
    void *ctx;
    struct worker t[MAX_WORKERS];
};

static void *worker_main(void *arg)
{
    struct worker *me = arg;
    struct df_workers *w = me->w;
    unsigned seen = 0;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->quit && w->generation == seen) {
            pthread_cond_wait(&w->go, &w->mu);
        }
        if (w->quit) {
            break;
        }
        seen = w->generation;
        if (!w->open) {
            continue; /* missed it: the caller did the work */
        }
        w->busy++;
        pthread_mutex_unlock(&w->mu);
        w->fn(w->ctx, me->index);
        pthread_mutex_lock(&w->mu);
        if (--w->busy == 0) {
            pthread_cond_signal(&w->done);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct df_workers *df_workers_start(unsigned n)
{
    struct df_workers *w = calloc(1, sizeof(*w));

    if (!w) {
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->go, NULL);
    pthread_cond_init(&w->done, NULL);
    n = DF_MAX(DF_MIN(n, (unsigned)MAX_WORKERS), 1u);
    w->n = 1;
    for (unsigned i = 1; i < n; i++) {
        w->t[i].w = w;
        w->t[i].index = i;
        if (pthread_create(&w->t[i].thread, NULL, worker_main, &w->t[i])) {
            break; /* run with the threads we have */
        }
        w->n = i + 1;
    }
    return w;
}

unsigned df_workers_count(const struct df_workers *w)
{
    return w ? w->n : 1;
}

void df_workers_post(struct df_workers *w, void (*fn)(void *ctx, unsigned t),
                     void *ctx)
{
    if (!w || w->n == 1) {
        return; /* df_workers_wait() does it all */
    }
    pthread_mutex_lock(&w->mu);
    w->fn = fn;
    w->ctx = ctx;
    w->open = true;
    w->generation++;
    pthread_cond_broadcast(&w->go);
    pthread_mutex_unlock(&w->mu);
}

void df_workers_wait(struct df_workers *w, void (*fn)(void *ctx, unsigned t),
                     void *ctx)
{
    /* whatever the workers have not taken yet, the caller does */
    fn(ctx, 0);
    if (!w || w->n == 1) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->open = false;
    while (w->busy) {
        pthread_cond_wait(&w->done, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
}

void df_workers_run(struct df_workers *w, void (*fn)(void *ctx, unsigned t),
                    void *ctx)
{
    df_workers_post(w, fn, ctx);
    df_workers_wait(w, fn, ctx);
}

void df_workers_stop(struct df_workers *w)
{
    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->quit = true;
    pthread_cond_broadcast(&w->go);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 1; i < w->n; i++) {
        pthread_join(w->t[i].thread, NULL);
    }
    pthread_cond_destroy(&w->go);
    pthread_cond_destroy(&w->done);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

unsigned df_usable_cpus(void)
{
    cpu_set_t set;
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    /* the CPUs this process may run on (taskset), else all online ones */
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
    }
    return n < 1 ? 1 : (unsigned)n;
}
