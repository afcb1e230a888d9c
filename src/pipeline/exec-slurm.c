/* SPDX-License-Identifier: MIT */
/*
 * exec-slurm.c - the Slurm executor (SPEC §7): each step one Slurm job.
 *
 * start() submits the step at once with `sbatch --parsable`, its
 * dependencies as `--dependency=afterok:J1:J2` on the Slurm jobs of the
 * steps it depends on (the scheduler hands steps over in dependency
 * order, so theirs are known), `--kill-on-invalid-dep=yes`, the name
 * `diskforge:JOB:ID` and the log `.diskforge/slurm/ID-%j.out` beside the
 * job file.  The job's script is a file this executor writes: one `exec`
 * line of `diskforge step ABSJOB ID --result FILE --set... [--untrusted]
 * --expect-job-sha256 HEX --expect-version V`, every word single-quoted
 * here (no user text is ever parsed by a shell); sbatch keeps a copy, so
 * the file is removed once sbatch returns.  sbatch, squeue, scancel and
 * scontrol are run from an argv with posix_spawn (op_spawn()), in their
 * own process group, so a terminal's ^C reaches only the coordinator.
 *
 * Outcomes come from the result files (`step --result`, written
 * atomically on the shared file system); Slurm is only asked which of the
 * run's jobs are still queued: one `squeue -h -o "%i %t" -j LIST` per poll,
 * at most one poll per `poll_ms` (1 s), whatever the number of jobs.  A
 * job that left the queue without a result file is given one more poll
 * (a shared file system may show the file late), then `scontrol show
 * job` is asked once for its last state, and the step fails with
 * ESLURM naming the Slurm job, that state and its log.  A job cancelled
 * here before squeue saw it running never started (EXEC_NOT_STARTED).
 *
 * Thread-safety: one thread (the scheduler's); no thread of its own.
 */
#include "executor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "diskforge/ops.h" /* df_digest_hex() */
#include "ops-disk.h"       /* op_spawn() */
#include "report.h"

extern char **environ;

/* squeue failing this many polls in a row gives up on the jobs left. */
#define SQUEUE_TRIES 120
/* A longer job list than this is not passed to squeue -j. */
#define SQUEUE_LIST_MAX (64u << 10)

struct sjob {
    int64_t id;          /* Slurm's job id; 0: not submitted */
    char *result;        /* its result file */
    bool queued;         /* squeue listed it at the last poll */
    bool running_seen;   /* ... in a state other than pending */
    bool told_started;
    bool done;           /* its outcome was handed to the scheduler */
    bool dropped;        /* the scheduler no longer wants it */
    bool drop_pending;   /* dropped, not yet cancelled */
    bool cancelled;      /* scancel was asked for it */
    int gone_polls;      /* polls since it left the queue without result */
};

struct event {
    size_t step;
    enum exec_event what;
};

struct exec_slurm {
    struct executor ex;
    struct slurm_opts o;
    struct run *run;
    struct sjob *jobs;      /* by step index */
    size_t *order;          /* step indices in submission order */
    size_t n_order;
    size_t *by_id;          /* the same, sorted by Slurm job id */
    size_t n_by_id;         /* how many of order[] by_id holds */
    char *dir;              /* JOBDIR/.diskforge/slurm */
    char *job_dir;
    char token[48];         /* this run's part of the file names */
    struct event *ev;       /* news not yet handed out */
    size_t ev_head, ev_tail;
    int64_t next_poll;      /* monotonic ms */
    unsigned long polls;
    int squeue_fails;
    char squeue_err[256];
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

    /* a signal ends it early: the scheduler then looks at should_stop */
    nanosleep(&ts, NULL);
}

static void push(struct exec_slurm *s, size_t i, enum exec_event what)
{
    s->ev[s->ev_tail].step = i;
    s->ev[s->ev_tail++].what = what;
}

/* ---- running Slurm's commands ---- */

/* A word for sh, single-quoted: ' becomes '\''. */
static void put_quoted(FILE *f, const char *w)
{
    fputc('\'', f);
    for (; *w; w++) {
        if (*w == '\'') {
            fputs("'\\''", f);
        } else {
            fputc(*w, f);
        }
    }
    fputc('\'', f);
}

/*
 * Run @argv (argv[0] looked up in PATH), its stdout and stderr together
 * into @out (NUL-terminated, trailing newlines cut).  Returns the exit
 * status (0-255; 127: could not start, with @out saying why; 125 when
 * the output did not fit in @outlen).
 */
static int command(char *const argv[], char *out, size_t outlen)
{
    struct op_ctx ctx = { 0 };
    int pipefd[2], status = 0;
    size_t len = 0;
    bool cut = false;
    char chunk[4096];
    pid_t pid;

    out[0] = '\0';
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        snprintf(out, outlen, "cannot create a pipe: %s", strerror(errno));
        return 127;
    }
    if (op_spawn(&ctx, argv[0], argv, environ, NULL, pipefd[1], pipefd[1],
                 &pid) < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        snprintf(out, outlen, "%s", ctx.err.msg);
        return 127;
    }
    close(pipefd[1]);
    /* Slurm's commands leave nothing behind that holds the pipe: read to
     * its end, then reap (no polling, no sleep: a call costs what the
     * command costs) */
    for (;;) {
        ssize_t n = read(pipefd[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        if (len + (size_t)n >= outlen) {
            cut = true;
            n = (ssize_t)(outlen - 1 - len);
        }
        memcpy(out + len, chunk, (size_t)n);
        len += (size_t)n;
    }
    close(pipefd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    while (len && (out[len - 1] == '\n' || out[len - 1] == ' ')) {
        len--;
    }
    out[len] = '\0';
    if (cut) {
        return 125;
    }
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Append ",ID" (or "ID" first) to a job list. */
static void list_add(char **list, size_t *len, int64_t id)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%s%lld", *len ? "," : "",
                     (long long)id);
    char *p = realloc(*list, *len + (size_t)n + 1);

    if (!p) {
        return;
    }
    memcpy(p + *len, buf, (size_t)n + 1);
    *list = p;
    *len += (size_t)n;
}

/* scancel [--state=PENDING] the jobs in @list (comma-separated). */
static void scancel(const char *list, bool pending_only)
{
    char *argv[5], out[1024];
    int n = 0, rc;

    argv[n++] = "scancel";
    if (pending_only) {
        argv[n++] = "--state=PENDING";
    }
    argv[n++] = (char *)list;
    argv[n] = NULL;
    rc = command(argv, out, sizeof(out));
    if (rc != 0 && out[0] && !strstr(out, "already completing") &&
        !strstr(out, "Invalid job id")) {
        fprintf(stderr, "diskforge: scancel %s: %s\n", list, out);
    }
}

/* ---- submitting ---- */

static int ensure_dir(const char *path, struct df_error *err)
{
    char *p = strdup(path);

    if (!p) {
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    for (char *q = p + 1; *q; q++) {
        if (*q == '/') {
            *q = '\0';
            if (mkdir(p, 0777) < 0 && errno != EEXIST) {
                df_fail_sys(err, "cannot create '%s'", p);
                free(p);
                return -DF_E_IO;
            }
            *q = '/';
        }
    }
    free(p);
    if (mkdir(path, 0777) < 0 && errno != EEXIST) {
        return df_fail_sys(err, "cannot create '%s'", path);
    }
    return 0;
}

/* The first use: the run, its job's directory, the per-step table. */
static int setup(struct exec_slurm *s, struct run *run, struct df_error *err)
{
    const char *slash = strrchr(s->o.job_path, '/');
    size_t n = run->dag->n + 1;

    s->run = run;
    s->jobs = calloc(n, sizeof(*s->jobs));
    s->order = calloc(n, sizeof(*s->order));
    s->by_id = calloc(n, sizeof(*s->by_id));
    s->ev = calloc(3 * n, sizeof(*s->ev));
    s->job_dir = strndup(s->o.job_path, (size_t)(slash - s->o.job_path));
    if (!s->jobs || !s->order || !s->by_id || !s->ev || !s->job_dir ||
        asprintf(&s->dir, "%s/.diskforge/slurm",
                 s->job_dir[0] ? s->job_dir : "/") < 0) {
        s->dir = NULL;
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    snprintf(s->token, sizeof(s->token), "%ld-%lld", (long)getpid(),
             (long long)run->started_ms);
    return ensure_dir(s->dir, err);
}

/* The job's script: one exec line of words quoted here.  0 or -DF_E_*. */
static int write_script(struct exec_slurm *s, const char *path,
                        const struct job_step *st, const char *result,
                        struct df_error *err)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        return df_fail_sys(err, "cannot write '%s'", path);
    }
    fprintf(f, "#!/bin/sh\n# step '%s', submitted by diskforge run "
            "--executor slurm\nexec ", st->id);
    put_quoted(f, s->o.self);
    fputs(" step ", f);
    put_quoted(f, s->o.job_path);
    fputc(' ', f);
    put_quoted(f, st->id);
    fputs(" --result ", f);
    put_quoted(f, result);
    for (size_t k = 0; k < s->o.n_set; k++) {
        fputs(" --set ", f);
        put_quoted(f, s->o.set[k]);
    }
    if (s->o.untrusted) {
        fputs(" --untrusted", f);
    }
    fputs(" --expect-job-sha256 ", f);
    put_quoted(f, s->o.job_sha256);
    fputs(" --expect-version ", f);
    put_quoted(f, s->o.version);
    fputc('\n', f);
    if (fclose(f) != 0) {
        return df_fail_sys(err, "cannot write '%s'", path);
    }
    return 0;
}

/* "--dependency=afterok:J1:J2" on the submitted steps @i depends on, or
 * NULL when it depends on none (up-to-date steps have no job). */
static char *dependency_arg(struct exec_slurm *s, size_t i)
{
    const struct dag_node *n = &s->run->dag->nodes[i];
    char *arg = NULL;
    size_t len = 0;

    for (size_t k = 0; k < n->n_preds; k++) {
        int64_t id = s->jobs[n->preds[k].pred].id;
        char buf[40];
        int m;
        char *p;
        if (id <= 0) {
            continue;
        }
        m = snprintf(buf, sizeof(buf), "%s:%lld",
                     len ? "" : "--dependency=afterok", (long long)id);
        p = realloc(arg, len + (size_t)m + 1);
        if (!p) {
            free(arg);
            return NULL;
        }
        memcpy(p + len, buf, (size_t)m + 1);
        arg = p;
        len += (size_t)m;
    }
    return arg;
}

/* The job id in sbatch --parsable's output: the line that is "ID" or
 * "ID;CLUSTER" (warnings may come before or after it); 0 if none. */
static int64_t parse_job_id(const char *out)
{
    int64_t id = 0;

    for (const char *line = out; line && *line;) {
        const char *nl = strchr(line, '\n');
        char *end;
        long long v;
        errno = 0;
        v = strtoll(line, &end, 10);
        if (!errno && end != line && v > 0 && line[0] != '-' &&
            line[0] != '+' && (*end == ';' || *end == '\n' || !*end)) {
            id = v;
        }
        line = nl ? nl + 1 : NULL;
    }
    return id;
}

/* @s with every % doubled: sbatch's --output expands %-patterns. */
static char *escape_percent(const char *s)
{
    size_t n = 0;
    char *out, *o;

    for (const char *p = s; *p; p++) {
        n += *p == '%' ? 2 : 1;
    }
    out = o = malloc(n + 1);
    if (!out) {
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        *o++ = *p;
        if (*p == '%') {
            *o++ = '%';
        }
    }
    *o = '\0';
    return out;
}

static int slurm_start(struct executor *ex, struct run_step *rs)
{
    struct exec_slurm *s = (struct exec_slurm *)ex;
    const struct job_step *st = rs->ctx.step;
    char *script = NULL, *name = NULL, *output = NULL, *chdir_arg = NULL;
    char *dep = NULL, **argv = NULL, *dir_pct = NULL, out[4096];
    struct sjob *j;
    size_t n = 0;
    int rc, ret = 0;

    if (!s->run && setup(s, rs->run, &rs->ctx.err) < 0) {
        return -DF_E_IO;
    }
    j = &s->jobs[rs->index];
    if (asprintf(&j->result, "%s/%s.%s.result.json", s->dir, st->id,
                 s->token) < 0 ||
        asprintf(&script, "%s/%s.%s.sh", s->dir, st->id, s->token) < 0 ||
        asprintf(&name, "--job-name=diskforge:%s:%s", s->o.job_name,
                 st->id) < 0 ||
        !(dir_pct = escape_percent(s->dir)) ||
        asprintf(&output, "--output=%s/%s-%%j.out", dir_pct, st->id) < 0 ||
        asprintf(&chdir_arg, "--chdir=%s", s->job_dir[0] ? s->job_dir
                                                          : "/") < 0 ||
        !(argv = calloc(s->o.n_args + 10, sizeof(*argv)))) {
        ret = df_fail(&rs->ctx.err, DF_E_NOMEM, "out of memory");
        goto out;
    }
    unlink(j->result); /* a run killed before could not have left it:
                        * the token is new; be sure anyway */
    ret = write_script(s, script, st, j->result, &rs->ctx.err);
    if (ret < 0) {
        goto out;
    }
    dep = dependency_arg(s, rs->index);
    argv[n++] = "sbatch";
    argv[n++] = "--parsable";
    argv[n++] = name;
    argv[n++] = output;
    argv[n++] = chdir_arg;
    argv[n++] = "--kill-on-invalid-dep=yes";
    if (dep) {
        argv[n++] = dep;
    }
    for (size_t k = 0; k < s->o.n_args; k++) {
        argv[n++] = (char *)s->o.args[k];
    }
    argv[n++] = script;
    argv[n] = NULL;
    rc = command(argv, out, sizeof(out));
    unlink(script);
    j->id = rc == 0 ? parse_job_id(out) : 0;
    if (!j->id) {
        ret = df_fail(&rs->ctx.err, DF_E_IO, "sbatch %s (step '%s'): %s",
                      rc == 0 ? "gave no job id" : "failed", st->id,
                      out[0] ? out : "no message");
        snprintf(rs->err_code, sizeof(rs->err_code), "ESLURM");
        goto out;
    }
    j->queued = true;
    rs->slurm_job_id = j->id;
    s->order[s->n_order++] = rs->index;
out:
    free(argv);
    free(dir_pct);
    free(dep);
    free(chdir_arg);
    free(output);
    free(name);
    free(script);
    return ret;
}

/* ---- outcomes ---- */

static int64_t time_ms(json_t *v)
{
    const char *t = json_string_value(v);
    struct tm tm = { 0 };
    const char *end;

    if (!t || !(end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm))) {
        return 0;
    }
    return (int64_t)timegm(&tm) * 1000;
}

static enum df_errc errc_named(const char *name)
{
    for (int c = 1; c < 64; c++) {
        if (!strcmp(df_strerror((enum df_errc)c), name)) {
            return (enum df_errc)c;
        }
    }
    return DF_E_IO;
}

/* Take the step's result object into @rs: 0, or -1 if it is not one. */
static int merge_result(struct run_step *rs, json_t *r)
{
    const char *status = json_string_value(json_object_get(r, "status"));
    const char *id = json_string_value(json_object_get(r, "id"));
    json_t *e = json_object_get(r, "error");
    json_t *outputs = json_object_get(r, "outputs");
    json_t *result = json_object_get(r, "result");
    json_int_t dur = json_integer_value(json_object_get(r, "duration_ms"));

    if (!status || !id || strcmp(id, rs->ctx.step->id) != 0) {
        return -1;
    }
    rs->started_ms = time_ms(json_object_get(r, "started_at"));
    rs->finished_ms = time_ms(json_object_get(r, "finished_at"));
    rs->duration_ms = dur > 0 ? dur : 0;
    if (json_is_array(outputs)) {
        rs->ctx.outputs = json_incref(outputs);
    }
    if (json_is_object(result)) {
        rs->ctx.result = json_incref(result);
    }
    if (!strcmp(status, "succeeded")) {
        rs->ret = 0;
        return 0;
    }
    {
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        enum df_errc c = code ? errc_named(code) : DF_E_IO;
        df_fail(&rs->ctx.err, c, "%s", msg ? msg : "the step failed");
        if (code && strcmp(df_strerror(c), code) != 0) {
            snprintf(rs->err_code, sizeof(rs->err_code), "%s", code);
        }
        rs->ret = -(int)c;
    }
    return 0;
}

/* The step's outcome is known: tell the scheduler, after the hooks saw
 * what it left (on this thread: the step ran elsewhere). */
static void report_done(struct exec_slurm *s, size_t i)
{
    struct run_step *rs = &s->run->steps[i];
    const struct run_hooks *h = s->run->opts.hooks;

    s->jobs[i].done = true;
    if (h && h->after) {
        h->after(h->opaque, rs);
    }
    if (!s->jobs[i].told_started) {
        s->jobs[i].told_started = true;
        push(s, i, EXEC_STARTED);
    }
    push(s, i, EXEC_FINISHED);
}

/* Read the result file of step @i if it is there: true when it was. */
static bool take_result(struct exec_slurm *s, size_t i)
{
    struct sjob *j = &s->jobs[i];
    struct run_step *rs = &s->run->steps[i];
    json_error_t jerr;
    json_t *r;

    if (access(j->result, F_OK) != 0) {
        return false;
    }
    r = json_load_file(j->result, 0, &jerr);
    if (!r || merge_result(rs, r) < 0) {
        rs->ret = df_fail(&rs->ctx.err, DF_E_IO, "the result file '%s' of "
                          "Slurm job %lld is not a result of step '%s'%s%s",
                          j->result, (long long)j->id, rs->ctx.step->id,
                          r ? "" : ": ", r ? "" : jerr.text);
        snprintf(rs->err_code, sizeof(rs->err_code), "ESLURM");
    }
    json_decref(r);
    unlink(j->result);
    report_done(s, i);
    return true;
}

/* The job left the queue and wrote nothing: Slurm's last word on it. */
static void lost(struct exec_slurm *s, size_t i)
{
    struct sjob *j = &s->jobs[i];
    struct run_step *rs = &s->run->steps[i];
    char id[32], out[2048], state[512] = "";
    char *argv[] = { "scontrol", "-o", "show", "job", id, NULL };

    if (j->cancelled && !j->running_seen) {
        j->done = true;
        push(s, i, EXEC_NOT_STARTED);
        return;
    }
    snprintf(id, sizeof(id), "%lld", (long long)j->id);
    if (command(argv, out, sizeof(out)) == 0) {
        /* JobState=FAILED Reason=NonZeroExitCode ... ExitCode=1:0 */
        const char *keys[] = { "JobState=", "Reason=", "ExitCode=" };
        size_t len = 0;
        for (size_t k = 0; k < 3; k++) {
            const char *p = strstr(out, keys[k]);
            size_t w = p ? strcspn(p, " \n") : 0;
            if (p && len + w + 2 < sizeof(state)) {
                len += (size_t)snprintf(state + len, sizeof(state) - len,
                                        "%s%.*s", len ? " " : "", (int)w, p);
            }
        }
    } else {
        snprintf(state, sizeof(state), "unknown (scontrol: %.400s)", out);
    }
    rs->ret = df_fail(&rs->ctx.err, j->cancelled ? DF_E_CANCELED : DF_E_IO,
                      "Slurm job %lld left the queue without writing its "
                      "result (scontrol show job: %s); its log: %s/%s-%lld.out",
                      (long long)j->id, state[0] ? state : "no state", s->dir,
                      rs->ctx.step->id, (long long)j->id);
    if (!j->cancelled) {
        snprintf(rs->err_code, sizeof(rs->err_code), "ESLURM");
    }
    report_done(s, i);
}

/* For qsort_r(): two step indices by their Slurm job ids in @jobs. */
static int id_cmp(const void *a, const void *b, void *jobs)
{
    const struct sjob *j = jobs;
    int64_t x = j[*(const size_t *)a].id, y = j[*(const size_t *)b].id;

    return (x > y) - (x < y);
}

/* The submitted job whose Slurm id is @id, or NULL. */
static struct sjob *job_by_id(struct exec_slurm *s, long long id)
{
    size_t lo = 0, hi;

    if (s->n_by_id != s->n_order) {
        memcpy(s->by_id, s->order, s->n_order * sizeof(*s->by_id));
        qsort_r(s->by_id, s->n_order, sizeof(*s->by_id), id_cmp, s->jobs);
        s->n_by_id = s->n_order;
    }
    hi = s->n_by_id;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct sjob *j = &s->jobs[s->by_id[mid]];
        if (j->id == id) {
            return j;
        }
        if (j->id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

/* One squeue for every job still queued: updates queued/running_seen.
 * False when squeue failed (nothing changed). */
static bool squeue(struct exec_slurm *s)
{
    char *list = NULL, *out, *argv[7];
    size_t len = 0, outlen;
    int rc;

    for (size_t k = 0; k < s->n_order; k++) {
        if (s->jobs[s->order[k]].queued) {
            list_add(&list, &len, s->jobs[s->order[k]].id);
        }
    }
    if (!list) {
        return true;
    }
    /* "ID ST\n" a job: room for all of ours (with --me, for many more) */
    outlen = OUTPUT_LIMIT + s->n_order * 32;
    if (len > SQUEUE_LIST_MAX) {
        outlen *= 16;
    }
    out = malloc(outlen);
    if (!out) {
        free(list);
        return false;
    }
    argv[0] = "squeue";
    argv[1] = "-h";
    argv[2] = "-o";
    argv[3] = "%i %t";
    argv[4] = "-j";
    argv[5] = list;
    argv[6] = NULL;
    if (len > SQUEUE_LIST_MAX) {
        /* one argument is limited (128 KiB on Linux): ask for all of the
         * user's jobs instead, and pick ours out below */
        argv[4] = "--me";
        argv[5] = NULL;
    }
    rc = command(argv, out, outlen);
    s->polls++;
    if (rc != 0 && (rc == 125 || !strstr(out, "Invalid job id"))) {
        snprintf(s->squeue_err, sizeof(s->squeue_err), "%s",
                 rc == 125 ? "its output was too long" : out);
        free(out);
        free(list);
        return false;
    }
    for (size_t k = 0; k < s->n_order; k++) {
        s->jobs[s->order[k]].queued = false;
    }
    for (char *line = rc == 0 ? out : NULL, *next; line && *line;
         line = next) {
        struct sjob *j;
        char *end;
        long long id;
        next = strchr(line, '\n');
        if (next) {
            *next++ = '\0';
        }
        id = strtoll(line, &end, 10);
        if (*end != ' ' || !(j = job_by_id(s, id))) {
            continue;
        }
        j->queued = true;
        if (strcmp(end + 1, "PD") != 0) {
            j->running_seen = true;
        }
    }
    free(out);
    free(list);
    return true;
}

/* scancel the dropped jobs not cancelled yet, in one call. */
static void flush_drops(struct exec_slurm *s)
{
    char *list = NULL;
    size_t len = 0;

    for (size_t k = 0; k < s->n_order; k++) {
        struct sjob *j = &s->jobs[s->order[k]];
        if (j->drop_pending) {
            j->drop_pending = false;
            if (j->queued && !j->cancelled) {
                j->cancelled = true;
                list_add(&list, &len, j->id);
            }
        }
    }
    if (list) {
        scancel(list, false);
        free(list);
    }
}

/* Results first, then the queue; news pushed in submission order. */
static void poll_jobs(struct exec_slurm *s)
{
    bool ok;

    flush_drops(s);
    for (size_t k = 0; k < s->n_order; k++) {
        struct sjob *j = &s->jobs[s->order[k]];
        if (!j->done && !j->dropped) {
            take_result(s, s->order[k]);
        }
    }
    ok = squeue(s);
    s->squeue_fails = ok ? 0 : s->squeue_fails + 1;
    for (size_t k = 0; k < s->n_order; k++) {
        size_t i = s->order[k];
        struct sjob *j = &s->jobs[i];
        if (j->done || j->dropped) {
            continue;
        }
        if (j->running_seen && !j->told_started) {
            j->told_started = true;
            push(s, i, EXEC_STARTED);
        }
        if (s->squeue_fails >= SQUEUE_TRIES) {
            struct run_step *rs = &s->run->steps[i];
            rs->ret = df_fail(&rs->ctx.err, DF_E_IO, "squeue failed %d times "
                              "in a row, Slurm job %lld given up: %s",
                              s->squeue_fails, (long long)j->id,
                              s->squeue_err);
            snprintf(rs->err_code, sizeof(rs->err_code), "ESLURM");
            report_done(s, i);
            continue;
        }
        if (!ok || j->queued || take_result(s, i)) {
            continue;
        }
        /* gone without a result: one more poll's grace, then lost */
        if (++j->gone_polls >= 2) {
            lost(s, i);
        }
    }
    s->next_poll = mono_ms() + s->o.poll_ms;
}

static struct run_step *slurm_next(struct executor *ex, int timeout_ms,
                                   enum exec_event *what)
{
    struct exec_slurm *s = (struct exec_slurm *)ex;

    if (!s->run) {
        return NULL;
    }
    if (s->ev_head == s->ev_tail && timeout_ms != 0) {
        int64_t wait = s->next_poll - mono_ms();
        if (timeout_ms > 0 && wait > timeout_ms) {
            sleep_ms(timeout_ms);
            return NULL;
        }
        if (wait > 0) {
            sleep_ms(wait);
        }
        if (mono_ms() >= s->next_poll) {
            poll_jobs(s);
        }
    }
    if (s->ev_head == s->ev_tail) {
        return NULL;
    }
    *what = s->ev[s->ev_head].what;
    return &s->run->steps[s->ev[s->ev_head++].step];
}

static void slurm_cancel(struct executor *ex, enum exec_cancel how)
{
    struct exec_slurm *s = (struct exec_slurm *)ex;
    char *list = NULL;
    size_t len = 0;

    for (size_t k = 0; k < s->n_order; k++) {
        struct sjob *j = &s->jobs[s->order[k]];
        if (!j->queued || (how == EXEC_CANCEL_UNSTARTED &&
                           (j->running_seen || j->done))) {
            continue;
        }
        j->cancelled = true;
        list_add(&list, &len, j->id);
    }
    if (list) {
        scancel(list, how == EXEC_CANCEL_UNSTARTED);
        free(list);
    }
}

static void slurm_drop(struct executor *ex, struct run_step *rs)
{
    struct exec_slurm *s = (struct exec_slurm *)ex;

    s->jobs[rs->index].dropped = true;
    s->jobs[rs->index].drop_pending = true;
}

/* Until none of the run's jobs is queued (squeue at the same pace). */
static void slurm_finish(struct executor *ex)
{
    struct exec_slurm *s = (struct exec_slurm *)ex;
    int fails = 0;

    if (!s->run) {
        return;
    }
    flush_drops(s);
    for (;;) {
        bool any = false;
        int64_t wait;
        for (size_t k = 0; k < s->n_order && !any; k++) {
            any = s->jobs[s->order[k]].queued;
        }
        if (!any) {
            break;
        }
        wait = s->next_poll - mono_ms();
        if (wait > 0) {
            sleep_ms(wait);
        }
        fails = squeue(s) ? 0 : fails + 1;
        s->next_poll = mono_ms() + s->o.poll_ms;
        if (fails >= SQUEUE_TRIES) {
            fprintf(stderr, "diskforge: squeue failed %d times in a row; not "
                    "waiting any longer for this run's Slurm jobs to leave "
                    "the queue: %s\n", fails, s->squeue_err);
            break;
        }
    }
    /* results never read (dropped, cancelled) are this run's litter */
    for (size_t k = 0; k < s->n_order; k++) {
        unlink(s->jobs[s->order[k]].result);
    }
}

static void slurm_free(struct executor *ex)
{
    struct exec_slurm *s = (struct exec_slurm *)ex;

    if (!s) {
        return;
    }
    for (size_t i = 0; s->jobs && s->run && i < s->run->dag->n; i++) {
        free(s->jobs[i].result);
    }
    free(s->jobs);
    free(s->order);
    free(s->by_id);
    free(s->ev);
    free(s->dir);
    free(s->job_dir);
    free(s);
}

static const struct executor_ops slurm_ops = {
    .name = "slurm",
    .start = slurm_start,
    .next = slurm_next,
    .cancel = slurm_cancel,
    .drop = slurm_drop,
    .finish = slurm_finish,
    .free = slurm_free,
};

struct executor *executor_slurm_new(const struct slurm_opts *o,
                                    struct df_error *err)
{
    struct exec_slurm *s;

    if (!o->job_path || o->job_path[0] != '/') {
        df_fail(err, DF_E_INVAL, "the Slurm executor needs the job file's "
                "absolute path, not '%s'", o->job_path ? o->job_path : "");
        return NULL;
    }
    if (!o->self || o->self[0] != '/') {
        df_fail(err, DF_E_INVAL, "the Slurm executor needs diskforge's "
                "absolute path");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        df_fail(err, DF_E_NOMEM, "out of memory");
        return NULL;
    }
    s->ex.ops = &slurm_ops;
    s->ex.ahead = true;
    s->o = *o;
    if (s->o.poll_ms <= 0) {
        s->o.poll_ms = 1000;
    }
    return &s->ex;
}

unsigned long executor_slurm_polls(const struct executor *ex)
{
    return ((const struct exec_slurm *)ex)->polls;
}
