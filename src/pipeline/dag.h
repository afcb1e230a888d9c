/* SPDX-License-Identifier: MIT */
/*
 * dag.h - the dependency graph of a job (SPEC §4 "The DAG").
 *
 * Edges come from `needs` and from the paths steps touch, taken in file
 * order: a step that reads or writes a path depends on the last earlier
 * step that wrote it (read after write, write after write), and a step
 * that writes a path depends on every earlier step that read it since
 * that write (write after read).  Reading or writing an overlay also reads
 * its backing chain as far as the job knows it.  Every edge keeps the
 * reasons it exists, so that `plan` can explain it.
 *
 * Ownership: dag_build() gives you a struct dag; release it with
 * dag_free().  It borrows the job, which must outlive it.
 * Thread-safety: read-only after dag_build(); any thread may read it.
 */
#ifndef DF_PIPELINE_DAG_H
#define DF_PIPELINE_DAG_H

#include "job.h"

enum dag_why {
    DAG_NEEDS, /* `needs:` names the predecessor */
    DAG_RAW,   /* reads a path the predecessor wrote */
    DAG_WAW,   /* writes a path the predecessor wrote */
    DAG_WAR,   /* writes a path the predecessor read */
};

struct dag_reason {
    enum dag_why why;
    const char *path; /* borrowed from the dag; NULL for DAG_NEEDS */
};

struct dag_edge {
    size_t pred; /* index of the step depended on */
    struct dag_reason *reasons;
    size_t n_reasons;
};

/* What a step touches, in the job's normalised paths. */
struct dag_paths {
    char **v;
    size_t n;
};

struct dag_node {
    struct dag_edge *preds; /* sorted by pred */
    size_t n_preds;
    size_t *succs;          /* sorted */
    size_t n_succs;
    struct dag_paths reads;   /* including backing chains */
    struct dag_paths writes;
    /* files the step makes or changes: its report "outputs" */
    struct dag_paths outputs;
};

struct dag {
    const struct job *job;
    size_t n;
    struct dag_node *nodes;
};

/*
 * dag_build() - the graph of @job.  A dependency cycle is reported in
 * @diags as "dependency cycle: a -> b -> a" with the reason of each
 * edge, and the function then returns NULL.
 */
struct dag *dag_build(const struct job *job, struct job_diags *diags);
void dag_free(struct dag *dag);

/* "needs", "read after write"... */
const char *dag_why_name(enum dag_why why);
/* One sentence on why @node depends on edge->pred, e.g. "reads
 * 'build/base.qcow2', written by 'base'".  You own the string. */
char *dag_explain(const struct dag *dag, size_t node,
                  const struct dag_edge *edge);

#endif
