/* SPDX-License-Identifier: MIT */
/*
 * dag.c - build the dependency graph of a job and look for cycles.
 *
 * One pass over the steps in file order keeps, per path, the last step
 * that wrote it and the steps that read it since; each step's reads and
 * writes then give its path edges (see dag.h).  A second table follows
 * the backing file of every image the job makes (overlay, create with a
 * backing, rebase), so that touching an overlay also reads its chain.
 * Cycles can only come from `needs` pointing forward; they are found by a
 * depth-first search with three-state marks, as ninja does, and printed
 * with the path that closes them.
 */
#include "dag.h"

#include <stdlib.h>
#include <string.h>

/* ---- a small string-keyed table of path states ---- */

struct path_state {
    char *path;          /* owned by the dag's string pool */
    long writer;         /* last step that wrote it, -1 if none */
    size_t *readers;     /* steps that read it since that write */
    size_t n_readers, cap_readers;
    char *backing;       /* backing file as the job knows it, or NULL */
};

struct path_table {
    struct path_state **slots;
    size_t cap, n;
    struct path_state **all; /* insertion order, for freeing */
    size_t n_all, cap_all;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static int table_grow(struct path_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    struct path_state **slots = calloc(cap, sizeof(*slots));

    if (!slots) {
        return -1;
    }
    for (size_t i = 0; i < t->cap; i++) {
        struct path_state *p = t->slots[i];
        if (p) {
            size_t j = hash_str(p->path) & (cap - 1);
            while (slots[j]) {
                j = (j + 1) & (cap - 1);
            }
            slots[j] = p;
        }
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

/* The state of @path, created on first use; NULL when out of memory. */
static struct path_state *table_get(struct path_table *t, const char *path)
{
    struct path_state *p;
    size_t j;

    if ((t->n + 1) * 2 > t->cap && table_grow(t) < 0) {
        return NULL;
    }
    for (j = hash_str(path) & (t->cap - 1); t->slots[j];
         j = (j + 1) & (t->cap - 1)) {
        if (strcmp(t->slots[j]->path, path) == 0) {
            return t->slots[j];
        }
    }
    if (t->n_all == t->cap_all) {
        size_t cap = t->cap_all ? t->cap_all * 2 : 64;
        struct path_state **all = realloc(t->all, cap * sizeof(*all));
        if (!all) {
            return NULL;
        }
        t->all = all;
        t->cap_all = cap;
    }
    p = calloc(1, sizeof(*p));
    if (!p || !(p->path = strdup(path))) {
        free(p);
        return NULL;
    }
    p->writer = -1;
    t->slots[j] = p;
    t->n++;
    t->all[t->n_all++] = p;
    return p;
}

static void table_release(struct path_table *t)
{
    for (size_t i = 0; i < t->n_all; i++) {
        free(t->all[i]->readers);
        free(t->all[i]->backing);
        free(t->all[i]->path);
        free(t->all[i]);
    }
    free(t->all);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* ---- building ---- */

struct builder {
    struct dag *dag;
    struct path_table paths;
    int oom;
};

static int paths_add(struct builder *b, struct dag_paths *ps,
                     const char *path)
{
    char **v;

    if (!path) {
        return 0;
    }
    for (size_t i = 0; i < ps->n; i++) {
        if (strcmp(ps->v[i], path) == 0) {
            return 0;
        }
    }
    v = realloc(ps->v, (ps->n + 1) * sizeof(*v));
    if (!v || !(v[ps->n] = strdup(path))) {
        if (v) {
            ps->v = v;
        }
        b->oom = 1;
        return -1;
    }
    ps->v = v;
    ps->n++;
    return 0;
}

static bool paths_has(const struct dag_paths *ps, const char *path)
{
    for (size_t i = 0; i < ps->n; i++) {
        if (strcmp(ps->v[i], path) == 0) {
            return true;
        }
    }
    return false;
}

static void paths_release(struct dag_paths *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->v[i]);
    }
    free(ps->v);
}

/* Add the backing chain of @path, as the job knows it, to the reads. */
static void add_chain(struct builder *b, struct dag_node *n, const char *path)
{
    const char *cur = path;

    for (int depth = 0; cur && depth < DF_MAX_BACKING_DEPTH; depth++) {
        struct path_state *st = table_get(&b->paths, cur);
        if (!st) {
            b->oom = 1;
            return;
        }
        if (!st->backing || paths_has(&n->reads, st->backing)) {
            return; /* end of the chain, or a loop */
        }
        paths_add(b, &n->reads, st->backing);
        cur = st->backing;
    }
}

/* Read @path and its chain. */
static void reads(struct builder *b, struct dag_node *n, const char *path)
{
    if (path) {
        paths_add(b, &n->reads, path);
        add_chain(b, n, path);
    }
}

/* Write @path, which also reads its chain (copy-on-write). */
static void writes(struct builder *b, struct dag_node *n, const char *path)
{
    if (path) {
        paths_add(b, &n->writes, path);
        paths_add(b, &n->outputs, path);
        add_chain(b, n, path);
    }
}

/* The backing file the job knows for @path after step @s, or NULL. */
static void set_backing(struct builder *b, const char *path,
                        const char *backing)
{
    struct path_state *st = table_get(&b->paths, path);

    if (!st) {
        b->oom = 1;
        return;
    }
    free(st->backing);
    st->backing = backing ? strdup(backing) : NULL;
}

static const char *backing_of(struct builder *b, const char *path)
{
    struct path_state *st = table_get(&b->paths, path);

    return st ? st->backing : NULL;
}

/* Fill @n's reads and writes for step @s; update the backing table. */
static void step_paths(struct builder *b, const struct job_step *s,
                       struct dag_node *n)
{
    const char *old_backing;

    switch (s->op) {
    case JOB_OP_CREATE:
    case JOB_OP_OVERLAY:
        reads(b, n, s->backing);
        paths_add(b, &n->writes, s->image);
        paths_add(b, &n->outputs, s->image);
        set_backing(b, s->image, s->backing);
        break;
    case JOB_OP_COPY:
        reads(b, n, s->from);
        paths_add(b, &n->writes, s->to);
        paths_add(b, &n->outputs, s->to);
        /* a byte copy keeps the source's backing reference */
        set_backing(b, s->to, backing_of(b, s->from));
        break;
    case JOB_OP_CONVERT:
        reads(b, n, s->from);
        reads(b, n, s->backing);
        paths_add(b, &n->writes, s->to);
        paths_add(b, &n->outputs, s->to);
        set_backing(b, s->to, s->backing);
        break;
    case JOB_OP_WRITE:
        reads(b, n, s->from);
        writes(b, n, s->image);
        break;
    case JOB_OP_FILL:
    case JOB_OP_RESIZE:
    case JOB_OP_SPARSIFY:
    case JOB_OP_PARTITION:
        writes(b, n, s->image);
        break;
    case JOB_OP_FILESYSTEM:
    case JOB_OP_FILES:
        /* reads the partition table (the last writer of the image, by
         * write after write) and the host tree, writes the image */
        reads(b, n, s->from);
        writes(b, n, s->image);
        break;
    case JOB_OP_COMMIT:
        /* writes the backing file, and empties the overlay */
        old_backing = backing_of(b, s->image);
        writes(b, n, s->image);
        if (old_backing) {
            paths_add(b, &n->writes, old_backing);
            paths_add(b, &n->outputs, old_backing);
        }
        break;
    case JOB_OP_REBASE:
        writes(b, n, s->image); /* reads the old chain */
        reads(b, n, s->backing);
        set_backing(b, s->image, s->backing);
        break;
    case JOB_OP_CHECK:
        if (s->repair != DF_REPAIR_NONE) {
            paths_add(b, &n->writes, s->image);
            paths_add(b, &n->outputs, s->image);
        } else {
            paths_add(b, &n->reads, s->image);
        }
        break;
    case JOB_OP_DIGEST:
    case JOB_OP_INFO:
        reads(b, n, s->image);
        break;
    case JOB_OP_COMPARE:
        reads(b, n, s->a);
        reads(b, n, s->b);
        break;
    case JOB_OP_COMMAND:
        for (size_t i = 0; i < s->inputs.n; i++) {
            reads(b, n, s->inputs.v[i]);
        }
        for (size_t i = 0; i < s->outputs.n; i++) {
            paths_add(b, &n->writes, s->outputs.v[i]);
            paths_add(b, &n->outputs, s->outputs.v[i]);
            set_backing(b, s->outputs.v[i], NULL); /* unknown: none */
        }
        break;
    case JOB_OP_COUNT:
        break;
    }
}

/* Record that @node depends on @pred because of (@why, @path). */
static void add_edge(struct builder *b, size_t node, size_t pred,
                     enum dag_why why, const char *path)
{
    struct dag_node *n = &b->dag->nodes[node];
    struct dag_edge *e = NULL;
    struct dag_reason *r;
    size_t i;

    for (i = 0; i < n->n_preds; i++) {
        if (n->preds[i].pred == pred) {
            e = &n->preds[i];
            break;
        }
    }
    if (!e) {
        struct dag_edge *v = realloc(n->preds, (n->n_preds + 1) * sizeof(*v));
        if (!v) {
            b->oom = 1;
            return;
        }
        n->preds = v;
        /* keep the list sorted by predecessor */
        for (i = n->n_preds; i > 0 && v[i - 1].pred > pred; i--) {
            v[i] = v[i - 1];
        }
        e = &v[i];
        memset(e, 0, sizeof(*e));
        e->pred = pred;
        n->n_preds++;
    }
    for (i = 0; i < e->n_reasons; i++) {
        if (e->reasons[i].why == why &&
            (e->reasons[i].path == path ||
             (path && e->reasons[i].path &&
              !strcmp(e->reasons[i].path, path)))) {
            return;
        }
    }
    r = realloc(e->reasons, (e->n_reasons + 1) * sizeof(*r));
    if (!r) {
        b->oom = 1;
        return;
    }
    e->reasons = r;
    r[e->n_reasons].why = why;
    r[e->n_reasons].path = path;
    e->n_reasons++;
}

/* The path edges of step @i, then update the per-path state. */
static void hazards(struct builder *b, size_t i)
{
    struct dag_node *n = &b->dag->nodes[i];

    for (size_t k = 0; k < n->reads.n + n->writes.n; k++) {
        bool is_write = k >= n->reads.n;
        const char *p = is_write ? n->writes.v[k - n->reads.n] : n->reads.v[k];
        struct path_state *st = table_get(&b->paths, p);
        if (!st) {
            b->oom = 1;
            return;
        }
        if (!is_write && paths_has(&n->writes, p)) {
            continue; /* handled as a write */
        }
        if (st->writer >= 0 && (size_t)st->writer != i) {
            add_edge(b, i, (size_t)st->writer, is_write ? DAG_WAW : DAG_RAW,
                     p);
        }
        if (is_write) {
            for (size_t r = 0; r < st->n_readers; r++) {
                if (st->readers[r] != i) {
                    add_edge(b, i, st->readers[r], DAG_WAR, p);
                }
            }
        }
    }
    for (size_t k = 0; k < n->writes.n; k++) {
        struct path_state *st = table_get(&b->paths, n->writes.v[k]);
        st->writer = (long)i;
        st->n_readers = 0;
    }
    for (size_t k = 0; k < n->reads.n; k++) {
        struct path_state *st = table_get(&b->paths, n->reads.v[k]);
        if (paths_has(&n->writes, n->reads.v[k])) {
            continue;
        }
        if (st->n_readers == st->cap_readers) {
            size_t cap = st->cap_readers ? st->cap_readers * 2 : 4;
            size_t *v = realloc(st->readers, cap * sizeof(*v));
            if (!v) {
                b->oom = 1;
                return;
            }
            st->readers = v;
            st->cap_readers = cap;
        }
        st->readers[st->n_readers++] = i;
    }
}

/* Reason paths point at strings of the node that owns the edge. */
static const char *own_path(const struct dag_node *n, const char *p)
{
    for (size_t i = 0; i < n->reads.n; i++) {
        if (!strcmp(n->reads.v[i], p)) {
            return n->reads.v[i];
        }
    }
    for (size_t i = 0; i < n->writes.n; i++) {
        if (!strcmp(n->writes.v[i], p)) {
            return n->writes.v[i];
        }
    }
    return NULL;
}

static void fill_succs(struct builder *b)
{
    struct dag *d = b->dag;

    for (size_t i = 0; i < d->n; i++) {
        for (size_t k = 0; k < d->nodes[i].n_preds; k++) {
            struct dag_node *p = &d->nodes[d->nodes[i].preds[k].pred];
            size_t *v = realloc(p->succs, (p->n_succs + 1) * sizeof(*v));
            if (!v) {
                b->oom = 1;
                return;
            }
            p->succs = v;
            v[p->n_succs++] = i; /* i grows: the list stays sorted */
        }
    }
}

/* ---- cycles ---- */

enum mark { WHITE, GREY, BLACK };

struct cycle_search {
    const struct dag *dag;
    struct job_diags *diags;
    unsigned char *mark;
    size_t *stack; /* the current DFS path */
    size_t depth;
    int found;
};

static const char *step_name(const struct job *job, size_t i, char *buf,
                             size_t len)
{
    if (job->steps[i].id) {
        return job->steps[i].id;
    }
    snprintf(buf, len, "#%zu", i + 1);
    return buf;
}

static const struct dag_edge *find_edge(const struct dag *d, size_t node,
                                        size_t pred)
{
    for (size_t k = 0; k < d->nodes[node].n_preds; k++) {
        if (d->nodes[node].preds[k].pred == pred) {
            return &d->nodes[node].preds[k];
        }
    }
    return NULL;
}

/* The cycle is stack[from..depth-1] followed by stack[from] again. */
static void report_cycle(struct cycle_search *cs, size_t from)
{
    const struct job *job = cs->dag->job;
    char *msg = NULL, *why = NULL, nb[32];
    size_t len = 0, wlen = 0;
    FILE *m = open_memstream(&msg, &len);
    FILE *w = open_memstream(&why, &wlen);
    struct job_loc loc = job->steps[cs->stack[from]].loc;

    if (!m || !w) {
        if (m) {
            fclose(m);
        }
        if (w) {
            fclose(w);
        }
        free(msg);
        free(why);
        job_diag_add(cs->diags, &loc, "dependency cycle");
        return;
    }
    fputs("dependency cycle: ", m);
    for (size_t i = from; i < cs->depth; i++) {
        size_t a = cs->stack[i];
        size_t b = i + 1 < cs->depth ? cs->stack[i + 1] : cs->stack[from];
        const struct dag_edge *e = find_edge(cs->dag, a, b);
        char *ex = e ? dag_explain(cs->dag, a, e) : NULL;
        fprintf(m, "%s -> ", step_name(job, a, nb, sizeof(nb)));
        fprintf(w, "; '%s' %s", step_name(job, a, nb, sizeof(nb)),
                ex ? ex : "depends on it");
        free(ex);
        /* point at the `needs` entry that closes the loop, if there is one */
        for (size_t k = 0; e && k < job->steps[a].needs.n; k++) {
            if (!strcmp(job->steps[a].needs.v[k],
                        job->steps[b].id ? job->steps[b].id : "")) {
                loc = job->steps[a].needs.loc[k];
            }
        }
    }
    fprintf(m, "%s", step_name(job, cs->stack[from], nb, sizeof(nb)));
    fclose(w);
    fputs(why, m);
    fclose(m);
    loc.file = cs->diags->file ? cs->diags->file : loc.file;
    job_diag_add(cs->diags, &loc, "%s", msg);
    free(msg);
    free(why);
}

static void visit(struct cycle_search *cs, size_t i)
{
    const struct dag_node *n = &cs->dag->nodes[i];

    cs->mark[i] = GREY;
    cs->stack[cs->depth++] = i;
    for (size_t k = 0; k < n->n_preds; k++) {
        size_t p = n->preds[k].pred;
        if (cs->mark[p] == GREY) {
            size_t from = 0;
            while (cs->stack[from] != p) {
                from++;
            }
            report_cycle(cs, from);
            cs->found++;
        } else if (cs->mark[p] == WHITE) {
            visit(cs, p);
        }
    }
    cs->depth--;
    cs->mark[i] = BLACK;
}

static int find_cycles(const struct dag *d, struct job_diags *diags)
{
    struct cycle_search cs = { d, diags, calloc(d->n + 1, 1),
                               calloc(d->n + 1, sizeof(size_t)), 0, 0 };

    if (!cs.mark || !cs.stack) {
        free(cs.mark);
        free(cs.stack);
        job_diag_add(diags, NULL, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < d->n; i++) {
        if (cs.mark[i] == WHITE) {
            visit(&cs, i);
        }
    }
    free(cs.mark);
    free(cs.stack);
    return cs.found ? -1 : 0;
}

struct dag *dag_build(const struct job *job, struct job_diags *diags)
{
    struct builder b = { 0 };
    struct dag *d = calloc(1, sizeof(*d));

    if (!d || !(d->nodes = calloc(job->n_steps + 1, sizeof(*d->nodes)))) {
        free(d);
        job_diag_add(diags, NULL, "out of memory");
        return NULL;
    }
    d->job = job;
    d->n = job->n_steps;
    b.dag = d;
    for (size_t i = 0; i < d->n && !b.oom; i++) {
        const struct job_step *s = &job->steps[i];
        step_paths(&b, s, &d->nodes[i]);
        hazards(&b, i);
        for (size_t k = 0; k < s->needs.n; k++) {
            const struct job_step *p = job_find_step(job, s->needs.v[k]);
            if (p && p != s) {
                add_edge(&b, i, p->index, DAG_NEEDS, NULL);
            }
        }
    }
    /* reasons borrowed from the path table must point into the dag */
    for (size_t i = 0; i < d->n; i++) {
        for (size_t k = 0; k < d->nodes[i].n_preds; k++) {
            struct dag_edge *e = &d->nodes[i].preds[k];
            for (size_t r = 0; r < e->n_reasons; r++) {
                if (e->reasons[r].path) {
                    e->reasons[r].path = own_path(&d->nodes[i],
                                                  e->reasons[r].path);
                }
            }
        }
    }
    table_release(&b.paths);
    if (!b.oom) {
        fill_succs(&b);
    }
    if (b.oom) {
        job_diag_add(diags, NULL, "out of memory");
        dag_free(d);
        return NULL;
    }
    if (find_cycles(d, diags) < 0) {
        dag_free(d);
        return NULL;
    }
    return d;
}

void dag_free(struct dag *dag)
{
    if (!dag) {
        return;
    }
    for (size_t i = 0; i < dag->n; i++) {
        struct dag_node *n = &dag->nodes[i];
        for (size_t k = 0; k < n->n_preds; k++) {
            free(n->preds[k].reasons);
        }
        free(n->preds);
        free(n->succs);
        paths_release(&n->reads);
        paths_release(&n->writes);
        paths_release(&n->outputs);
    }
    free(dag->nodes);
    free(dag);
}

const char *dag_why_name(enum dag_why why)
{
    switch (why) {
    case DAG_NEEDS: return "needs";
    case DAG_RAW: return "read after write";
    case DAG_WAW: return "write after write";
    case DAG_WAR: return "write after read";
    }
    return "?";
}

char *dag_explain(const struct dag *dag, size_t node,
                  const struct dag_edge *edge)
{
    const struct job *job = dag->job;
    char nb[32], *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    const char *pred = step_name(job, edge->pred, nb, sizeof(nb));

    (void)node;
    if (!f) {
        return NULL;
    }
    for (size_t r = 0; r < edge->n_reasons; r++) {
        const struct dag_reason *re = &edge->reasons[r];
        if (r) {
            fputs("; ", f);
        }
        switch (re->why) {
        case DAG_NEEDS:
            fprintf(f, "needs '%s'", pred);
            break;
        case DAG_RAW:
            fprintf(f, "reads '%s', written by '%s' (read after write)",
                    re->path, pred);
            break;
        case DAG_WAW:
            fprintf(f, "writes '%s', written before by '%s' (write after "
                    "write)", re->path, pred);
            break;
        case DAG_WAR:
            fprintf(f, "writes '%s', read before by '%s' (write after read)",
                    re->path, pred);
            break;
        }
    }
    fclose(f);
    return out;
}
