/* SPDX-License-Identifier: MIT */
/*
 * plan.c - the DAG of a job as text, JSON or Graphviz DOT.
 */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

#include "report.h"

int plan_format_parse(const char *name, enum plan_format *out)
{
    if (!strcmp(name, "text")) {
        *out = PLAN_TEXT;
    } else if (!strcmp(name, "json")) {
        *out = PLAN_JSON;
    } else if (!strcmp(name, "dot")) {
        *out = PLAN_DOT;
    } else {
        return -1;
    }
    return 0;
}

static const char *fmt_name(enum df_format f)
{
    return f == DF_FMT_AUTO ? "probed" : df_format_name(f);
}

static void size_text(uint64_t v, char *buf, size_t len)
{
    df_format_size(v, buf, len);
}

char *plan_step_summary(const struct job_step *s)
{
    char *out = NULL, a[32], b[32];
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    if (!f) {
        return NULL;
    }
    switch (s->op) {
    case JOB_OP_CREATE:
    case JOB_OP_OVERLAY:
        fprintf(f, "create %s image '%s'", fmt_name(s->format), s->image);
        if (job_step_has(s, JOB_KEY_SIZE)) {
            size_text(s->size, a, sizeof(a));
            fprintf(f, " of %s", a);
        }
        if (s->backing) {
            fprintf(f, " backed by '%s' (%s path)", s->backing,
                    s->backing_path_absolute ? "absolute" : "relative");
        }
        if (s->prealloc != DF_PREALLOC_OFF) {
            fprintf(f, ", preallocation %s", df_prealloc_name(s->prealloc));
        }
        break;
    case JOB_OP_COPY:
        fprintf(f, "copy '%s' to '%s' (sparse %s)", s->from, s->to,
                s->sparse == JOB_SPARSE_ALWAYS  ? "always"
                : s->sparse == JOB_SPARSE_NEVER ? "never"
                                                : "auto");
        break;
    case JOB_OP_CONVERT:
        fprintf(f, "convert '%s' to %s '%s'", s->from, fmt_name(s->format),
                s->to);
        if (s->compress != JOB_COMPRESS_NONE) {
            fprintf(f, ", %s-compressed",
                    s->compress == JOB_COMPRESS_ZSTD ? "zstd" : "zlib");
        }
        break;
    case JOB_OP_WRITE:
        size_text(s->offset, a, sizeof(a));
        fprintf(f, "write the bytes of '%s' into '%s' at %s", s->from,
                s->image, a);
        break;
    case JOB_OP_FILL:
        size_text(s->offset, a, sizeof(a));
        if (job_step_has(s, JOB_KEY_LENGTH)) {
            size_text(s->length, b, sizeof(b));
        } else {
            strcpy(b, "the rest");
        }
        fprintf(f, "fill %s of '%s' at %s with ", b, s->image, a);
        if (s->pattern == JOB_PATTERN_ZERO) {
            fputs("zeros", f);
        } else if (s->pattern == JOB_PATTERN_RANDOM) {
            fprintf(f, "random bytes (seed %llu)",
                    (unsigned long long)s->pattern_seed);
        } else {
            fprintf(f, "byte 0x%02x", s->pattern_byte);
        }
        break;
    case JOB_OP_RESIZE:
        size_text(s->size, a, sizeof(a));
        fprintf(f, "resize '%s' to %s", s->image, a);
        break;
    case JOB_OP_COMMIT:
        fprintf(f, "commit '%s' into its backing file", s->image);
        break;
    case JOB_OP_REBASE:
        fprintf(f, "rebase '%s' onto '%s'%s", s->image,
                s->backing ? s->backing : "(none)",
                s->unsafe ? " (unsafe)" : "");
        break;
    case JOB_OP_SPARSIFY:
        fprintf(f, "deallocate the zero clusters of '%s'", s->image);
        break;
    case JOB_OP_CHECK:
        fprintf(f, "check '%s'%s%s", s->image,
                s->repair == DF_REPAIR_NONE ? "" : ", repairing ",
                s->repair == DF_REPAIR_LEAKS ? "leaks"
                : s->repair == DF_REPAIR_ALL ? "all" : "");
        break;
    case JOB_OP_DIGEST:
        fprintf(f, "sha256 of '%s'%s", s->image,
                s->sha256[0] ? " (checked against the expected value)" : "");
        break;
    case JOB_OP_COMPARE:
        fprintf(f, "compare '%s' with '%s'", s->a, s->b);
        break;
    case JOB_OP_INFO:
        fprintf(f, "info of '%s'", s->image);
        break;
    case JOB_OP_COMMAND:
        if (s->shell) {
            fprintf(f, "run sh -c '%s'", s->shell);
        } else {
            fputs("run", f);
            for (size_t i = 0; i < s->argv.n; i++) {
                fprintf(f, " %s", s->argv.v[i]);
            }
        }
        break;
    case JOB_OP_PARTITION:
        fprintf(f, "write a GPT of %zu partition%s into '%s'", s->n_parts,
                s->n_parts == 1 ? "" : "s", s->image);
        break;
    case JOB_OP_FILESYSTEM:
        fprintf(f, "make %s in partition %s of '%s'",
                s->fs_type == JOB_FS_VFAT ? "vfat" : "ext4", s->partition,
                s->image);
        if (s->from) {
            fprintf(f, " from '%s'", s->from);
        }
        break;
    case JOB_OP_FILES:
        fprintf(f, "copy '%s' into '%s' of partition %s of '%s'", s->from,
                s->to ? s->to : "/", s->partition, s->image);
        break;
    case JOB_OP_COUNT:
        break;
    }
    fclose(f);
    return out;
}

/* Longest path from a step without dependencies: steps of one wave can
 * run at the same time. */
static size_t *waves(const struct dag *dag)
{
    size_t *w = calloc(dag->n + 1, sizeof(*w));
    bool changed = true;

    /* edges may point forward (needs), so relax until stable; the DAG is
     * acyclic, so this ends after at most n rounds */
    for (size_t round = 0; w && changed && round <= dag->n; round++) {
        changed = false;
        for (size_t i = 0; i < dag->n; i++) {
            for (size_t k = 0; k < dag->nodes[i].n_preds; k++) {
                size_t p = dag->nodes[i].preds[k].pred;
                if (w[p] + 1 > w[i]) {
                    w[i] = w[p] + 1;
                    changed = true;
                }
            }
        }
    }
    return w;
}

static const char *why_key(enum dag_why why)
{
    switch (why) {
    case DAG_NEEDS: return "needs";
    case DAG_RAW: return "read_after_write";
    case DAG_WAW: return "write_after_write";
    case DAG_WAR: return "write_after_read";
    }
    return "?";
}

static bool is_up_to_date(const char *reason)
{
    return reason && !strcmp(reason, "up-to-date");
}

static void print_text(const struct dag *dag, const char *const *reasons,
                       FILE *out)
{
    const struct job *job = dag->job;
    size_t *w = waves(dag), nw = 0;

    for (size_t i = 0; w && i < dag->n; i++) {
        nw = w[i] + 1 > nw ? w[i] + 1 : nw;
    }
    fprintf(out, "job %s (%s): %zu steps in %zu waves\n", job->name,
            job->path, dag->n, nw);
    for (size_t i = 0; i < dag->n; i++) {
        const struct job_step *s = &job->steps[i];
        char *sum = plan_step_summary(s);
        fprintf(out, "\n%s (%s), wave %zu\n", s->id, job_op_name(s->op),
                w ? w[i] + 1 : 0);
        fprintf(out, "    does: %s\n", sum ? sum : "?");
        free(sum);
        if (reasons && is_up_to_date(reasons[i])) {
            fputs("    up to date: does not run\n", out);
        } else if (reasons) {
            fprintf(out, "    runs: %s\n", reasons[i]);
        }
        if (s->description) {
            fprintf(out, "    description: %s\n", s->description);
        }
        if (!dag->nodes[i].n_preds) {
            fputs("    depends on nothing\n", out);
        }
        for (size_t k = 0; k < dag->nodes[i].n_preds; k++) {
            const struct dag_edge *e = &dag->nodes[i].preds[k];
            char *why = dag_explain(dag, i, e);
            fprintf(out, "    after %s: %s\n", job->steps[e->pred].id,
                    why ? why : "?");
            free(why);
        }
    }
    free(w);
}

json_t *plan_json(const struct dag *dag, const char *const *reasons)
{
    const struct job *job = dag->job;
    json_t *root = json_object(), *steps = json_array();
    size_t *w = waves(dag);

    json_object_set_new(root, "job", report_str(job->name));
    json_object_set_new(root, "path", report_str(job->path));
    for (size_t i = 0; i < dag->n; i++) {
        const struct job_step *s = &job->steps[i];
        const struct dag_node *n = &dag->nodes[i];
        json_t *o = json_object(), *deps = json_array();
        json_t *reads = json_array(), *writes = json_array();
        char *sum = plan_step_summary(s);
        json_object_set_new(o, "id", report_str(s->id));
        json_object_set_new(o, "op", json_string(job_op_name(s->op)));
        json_object_set_new(o, "does", report_str(sum));
        free(sum);
        json_object_set_new(o, "wave", json_integer(w ? (json_int_t)w[i] + 1
                                                       : 0));
        if (reasons) {
            json_object_set_new(o, "up_to_date",
                                json_boolean(is_up_to_date(reasons[i])));
            json_object_set_new(o, "reason", report_str(reasons[i]));
        }
        for (size_t k = 0; k < n->reads.n; k++) {
            json_array_append_new(reads, report_str(n->reads.v[k]));
        }
        for (size_t k = 0; k < n->writes.n; k++) {
            json_array_append_new(writes, report_str(n->writes.v[k]));
        }
        json_object_set_new(o, "reads", reads);
        json_object_set_new(o, "writes", writes);
        json_object_set_new(o, "needs", report_needs(dag, i));
        for (size_t k = 0; k < n->n_preds; k++) {
            const struct dag_edge *e = &n->preds[k];
            json_t *d = json_object(), *why = json_array();
            char *ex = dag_explain(dag, i, e);
            json_object_set_new(d, "id", report_str(job->steps[e->pred].id));
            for (size_t r = 0; r < e->n_reasons; r++) {
                json_t *ro = json_object();
                json_object_set_new(ro, "kind",
                                    json_string(why_key(e->reasons[r].why)));
                json_object_set_new(ro, "path",
                                    report_str(e->reasons[r].path));
                json_array_append_new(why, ro);
            }
            json_object_set_new(d, "reasons", why);
            json_object_set_new(d, "explanation", report_str(ex));
            free(ex);
            json_array_append_new(deps, d);
        }
        json_object_set_new(o, "dependencies", deps);
        json_array_append_new(steps, o);
    }
    json_object_set_new(root, "steps", steps);
    free(w);
    return root;
}

/* A DOT string literal: quotes and backslashes escaped. */
static void dot_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', out);
        }
        if (*s == '\n') {
            fputs("\\n", out);
            continue;
        }
        fputc(*s, out);
    }
    fputc('"', out);
}

static void print_dot(const struct dag *dag, FILE *out)
{
    const struct job *job = dag->job;

    fputs("digraph ", out);
    dot_str(out, job->name);
    fputs(" {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans\"];\n"
          "  edge [fontname=\"sans\", fontsize=10];\n", out);
    for (size_t i = 0; i < dag->n; i++) {
        const struct job_step *s = &job->steps[i];
        char label[256];
        snprintf(label, sizeof(label), "%s\n%s", s->id, job_op_name(s->op));
        fputs("  ", out);
        dot_str(out, s->id);
        fputs(" [label=", out);
        dot_str(out, label);
        fputs("];\n", out);
    }
    for (size_t i = 0; i < dag->n; i++) {
        for (size_t k = 0; k < dag->nodes[i].n_preds; k++) {
            const struct dag_edge *e = &dag->nodes[i].preds[k];
            char *label = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&label, &len);
            for (size_t r = 0; f && r < e->n_reasons; r++) {
                const struct dag_reason *re = &e->reasons[r];
                const char *base = re->path ? strrchr(re->path, '/') : NULL;
                fprintf(f, "%s%s%s%s", r ? "\n" : "",
                        re->why == DAG_NEEDS ? "needs" : why_key(re->why),
                        re->path ? " " : "",
                        re->path ? (base ? base + 1 : re->path) : "");
            }
            if (f) {
                fclose(f);
            }
            fputs("  ", out);
            dot_str(out, job->steps[e->pred].id);
            fputs(" -> ", out);
            dot_str(out, job->steps[i].id);
            fputs(" [label=", out);
            dot_str(out, label ? label : "");
            fputs(e->n_reasons == 1 && e->reasons[0].why == DAG_NEEDS
                      ? ", style=dashed];\n"
                      : "];\n",
                  out);
            free(label);
        }
    }
    fputs("}\n", out);
}

void plan_print(const struct dag *dag, const char *const *reasons,
                enum plan_format fmt, FILE *out)
{
    json_t *j;

    switch (fmt) {
    case PLAN_TEXT:
        print_text(dag, reasons, out);
        break;
    case PLAN_JSON:
        j = plan_json(dag, reasons);
        json_dumpf(j, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', out);
        json_decref(j);
        break;
    case PLAN_DOT:
        print_dot(dag, out);
        break;
    }
}
