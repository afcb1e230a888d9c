/* SPDX-License-Identifier: MIT */
/*
 * cmd-step.c - `diskforge step`: run one step of a job on its own and
 * write its report object to a result file (SPEC §7).  This is what a
 * cluster job runs: the coordinator (`run --executor slurm`) submits one
 * per step and reads the result files back.
 */
#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "pipeline.h"
#include "step.h"

static const char usage_text[] =
    "usage: diskforge step JOB.yaml ID --result FILE [--set NAME=VALUE]...\n"
    "                      [--expect-job-sha256 HEX] [--expect-version V]\n"
    "                      [--untrusted]\n"
    "\n"
    "Run step ID of JOB.yaml alone, as `run` would run it (atomic outputs,\n"
    "image locks), and write its report object (the form of one entry of\n"
    "a report's \"steps\") to FILE, whatever the outcome.  The steps it\n"
    "depends on do not run: they must be done already.  No state store is\n"
    "read or written and no run lock is taken; `run --executor slurm`\n"
    "submits one `step` per step and does both (docs/cluster.md).\n"
    "\n"
    "  --result FILE         where to write the step's object (required;\n"
    "                        written atomically)\n"
    "  --set NAME=VALUE      override (or define) the job variable NAME\n"
    "  --expect-job-sha256 HEX\n"
    "                        refuse to run (error EJOBCHANGED) unless the\n"
    "                        job file's SHA-256 is HEX\n"
    "  --expect-version V    refuse to run (error EVERSION) unless this is\n"
    "                        diskforge V\n"
    "  --untrusted           the step as 'untrusted: true' (`run --untrusted`\n"
    "                        passes it on)\n"
    "  -h, --help            show this help\n"
    "\n"
    "SIGINT or SIGTERM cancels the step (error ECANCELED); its temporary\n"
    "files are removed.\n"
    "\n"
    "Exit status: 0 the step succeeded, 1 it failed or was refused, 2 bad\n"
    "usage, an invalid job or no step ID (FILE, if given, says why), 130\n"
    "interrupted.\n";

struct step_args {
    const char *job_path;
    const char *id;
    const char *result;
    const char *expect_sha256;
    const char *expect_version;
    bool untrusted;
    struct job_vars set;
};

static bool is_sha256_hex(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        if (!isxdigit((unsigned char)s[n])) {
            return false;
        }
    }
    return n == 64;
}

static int parse_args(int argc, char **argv, struct step_args *a)
{
    static const struct option longopts[] = {
        { "result", required_argument, NULL, 'r' },
        { "set", required_argument, NULL, 's' },
        { "expect-job-sha256", required_argument, NULL, 'J' },
        { "expect-version", required_argument, NULL, 'V' },
        { "untrusted", no_argument, NULL, CLI_OPT_UNTRUSTED },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    cli_getopt_reset();
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'r': a->result = optarg; break;
        case 'J':
            if (!is_sha256_hex(optarg)) {
                return cli_usage("step", "--expect-job-sha256 wants 64 "
                                 "hexadecimal digits, not '%s'", optarg);
            }
            a->expect_sha256 = optarg;
            break;
        case 'V': a->expect_version = optarg; break;
        case CLI_OPT_UNTRUSTED: a->untrusted = true; break;
        case 's':
            if (cli_job_set("step", &a->set, optarg) != CLI_OK) {
                return CLI_USAGE;
            }
            break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return cli_bad_option("step", c, argv, longopts);
        }
    }
    if (argc - optind != 2) {
        return cli_usage("step", argc - optind < 2 ? "expected a job file "
                         "and a step id" : "expected one job file and one "
                         "step id");
    }
    if (!a->result) {
        return cli_usage("step", "--result FILE is required");
    }
    a->job_path = argv[optind];
    a->id = argv[optind + 1];
    return CLI_OK;
}

/* Write @obj (consumed) to the result file; CLI_OK or CLI_FAIL. */
static int write_result(const struct step_args *a, json_t *obj)
{
    struct df_error err = { 0 };
    int ret = obj ? report_write(obj, a->result, &err)
                  : df_fail(&err, DF_E_NOMEM, "out of memory");

    json_decref(obj);
    if (ret < 0) {
        cli_error("%s", err.msg);
        return CLI_FAIL;
    }
    return CLI_OK;
}

/*
 * The step is refused before it runs: say why on stderr and in the
 * result file (error @code), and return @exit_code.
 */
static int refuse(const struct step_args *a, const struct dag *dag,
                  const char *code, int exit_code, const char *fmt, ...)
    DF_PRINTF(5, 6);

static int refuse(const struct step_args *a, const struct dag *dag,
                  const char *code, int exit_code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_error("step '%s': %s", a->id, msg);
    write_result(a, report_step_refused(dag, a->id, code, msg));
    return exit_code;
}

/* --expect-job-sha256: the job file must be the coordinator's. */
static bool job_changed(const struct step_args *a, const struct job *job,
                        char hex[65])
{
    struct df_error err = { 0 };

    if (!a->expect_sha256) {
        return false;
    }
    if (job) {
        df_digest_hex(job->sha256, hex);
    } else if (step_file_sha256(a->job_path, hex, &err) < 0) {
        snprintf(hex, 65, "unreadable");
    }
    return strcasecmp(hex, a->expect_sha256) != 0;
}

static bool should_stop(void *opaque)
{
    (void)opaque;
    return cli_signal() != 0;
}

static int run_step(const struct step_args *a, const struct job *job,
                    const struct dag *dag, size_t i)
{
    struct df_error err = { 0 };
    const struct run_step *rs;
    struct run *run;
    int ret;

    run = step_run(job, dag, i, should_stop, NULL, &err);
    if (!run) {
        return refuse(a, dag, df_strerror(err.code), CLI_FAIL, "%s", err.msg);
    }
    rs = &run->steps[i];
    ret = write_result(a, report_step(run, i));
    if (rs->status == STEP_SUCCEEDED) {
        printf("step '%s' succeeded in %.2f s; result: %s\n", a->id,
               (double)rs->duration_ms / 1000.0, a->result);
        fflush(stdout);
    } else {
        cli_error("step '%s' failed: %s", a->id, rs->ctx.err.msg);
    }
    /* a signal that came as the step finished does not undo its work:
     * the result says succeeded, and so does the exit status */
    if (rs->status != STEP_SUCCEEDED && run->status == RUN_INTERRUPTED) {
        cli_error("interrupted by %s", cli_signal() == SIGTERM ? "SIGTERM"
                                                               : "SIGINT");
        ret = CLI_INTERRUPTED;
    } else if (rs->status != STEP_SUCCEEDED) {
        ret = CLI_FAIL;
    }
    run_free(run);
    return ret;
}

static int step_loaded(const struct step_args *a, const struct job *job,
                       const struct dag *dag, const struct job_diags *diags)
{
    const struct job_step *s;
    char hex[65];

    if (job_changed(a, job, hex)) {
        return refuse(a, dag, "EJOBCHANGED", CLI_FAIL,
                      "the job file '%s' changed: its SHA-256 is %s, the "
                      "coordinator expected %s", a->job_path, hex,
                      a->expect_sha256);
    }
    if (!job) {
        /* the first problem; stderr has them all */
        const struct job_diag *d = diags->n ? &diags->v[0] : NULL;
        char where[32] = "";
        if (d && d->loc.line > 0) {
            snprintf(where, sizeof(where), "line %d: ", d->loc.line);
        }
        return refuse(a, NULL, "EJOB", CLI_USAGE, "'%s' is not a valid job "
                      "(%zu error%s): %s%s", a->job_path, diags->n,
                      diags->n == 1 ? "" : "s", where,
                      d ? d->msg : "unknown error");
    }
    s = job_find_step(job, a->id);
    if (!s) {
        return refuse(a, NULL, "EJOB", CLI_USAGE, "the job '%s' has no step "
                      "'%s'", a->job_path, a->id);
    }
    if (a->expect_version && strcmp(a->expect_version, DF_CLI_VERSION) != 0) {
        return refuse(a, dag, "EVERSION", CLI_FAIL,
                      "this is diskforge %s, the coordinator runs diskforge "
                      "%s (every node must run the same version)",
                      DF_CLI_VERSION, a->expect_version);
    }
    if (cli_signal()) {
        return refuse(a, dag, "ECANCELED", CLI_INTERRUPTED,
                      "interrupted by %s before the step started",
                      cli_signal() == SIGTERM ? "SIGTERM" : "SIGINT");
    }
    return run_step(a, job, dag, (size_t)(s - job->steps));
}

int cmd_step(int argc, char **argv)
{
    struct step_args a = { 0 };
    struct job_diags diags;
    struct job *job = NULL;
    struct dag *dag = NULL;
    int ret = parse_args(argc, argv, &a);

    if (ret != CLI_OK) {
        job_vars_release(&a.set);
        return ret < 0 ? CLI_OK : ret; /* -1: --help */
    }
    /* Slurm sends SIGTERM on scancel and at the time limit */
    cli_catch_signals();
    if (cli_job_load(a.job_path, &a.set, &job, &dag, &diags) != CLI_OK) {
        job = NULL;
        dag = NULL;
    }
    for (size_t i = 0; job && a.untrusted && i < job->n_steps; i++) {
        job->steps[i].untrusted = true;
    }
    ret = step_loaded(&a, job, dag, &diags);
    dag_free(dag);
    job_free(job);
    job_diags_release(&diags);
    job_vars_release(&a.set);
    return ret;
}
