/* SPDX-License-Identifier: MIT */
/*
 * cli.h - what the files of the diskforge command share.
 *
 * Each subcommand lives in its own file, cmd-<name>.c, and is one function
 *
 *     int cmd_<name>(int argc, char **argv);
 *
 * called by main.c with argv[0] set to the subcommand's name.  It parses
 * its own options with getopt_long() (after cli_getopt_reset()), and its
 * return value is the process exit status (enum cli_exit).  Data goes to
 * stdout; diagnostics go to stderr as "diskforge: <message>", where the
 * message names the file and the problem.
 *
 * To add a command:
 *   1. write src/cli/cmd-<name>.c: a usage text, getopt_long() with -h and
 *      --help printing the usage to stdout (exit 0), cli_bad_option() for
 *      unknown options, then the work, done by a libdiskforge call;
 *   2. declare cmd_<name>() below;
 *   3. add { "<name>", cmd_<name>, "one line of help" } to the table in
 *      main.c, which is kept sorted by name;
 *   4. add the file to the diskforge_cli target in src/CMakeLists.txt;
 *   5. describe it in docs/cli.md (flags, exit codes, and where it differs
 *      from qemu-img).
 */
#ifndef DF_CLI_H
#define DF_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "diskforge/image.h"
#include "diskforge/ops.h"

/* Keep equal to project(... VERSION) in the top-level CMakeLists.txt. */
#define DF_CLI_VERSION "0.1.0"

enum cli_exit {
    CLI_OK = 0,
    CLI_FAIL = 1,  /* the operation failed */
    CLI_USAGE = 2, /* bad usage: nothing was done */
    CLI_INTERRUPTED = 130,
};

struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help; /* one line, for `diskforge --help` */
};

int cmd_check(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_copy(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_digest(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_sparsify(int argc, char **argv);
int cmd_step(int argc, char **argv);
int cmd_validate(int argc, char **argv);

/* ---- messages (cli-util.c) ---- */

/* "diskforge: <message>\n" on stderr. */
void cli_error(const char *fmt, ...) DF_PRINTF(1, 2);

/*
 * Print @err's message and return the exit status for a failed operation:
 * CLI_INTERRUPTED when a signal canceled it, else CLI_FAIL.
 */
int cli_fail(const struct df_error *err);

/*
 * Print "diskforge: <cmd>: <message>" and a pointer to `--help`; returns
 * CLI_USAGE so that `return cli_usage(...)` ends a command.
 */
int cli_usage(const char *cmd, const char *fmt, ...) DF_PRINTF(2, 3);

/*
 * A JSON string for @s; bytes that are not valid UTF-8 become U+FFFD, as
 * qemu-img prints them.  NULL only when out of memory.
 */
json_t *cli_json_string(const char *s);

/* ---- option parsing ---- */

/* Make getopt_long() start afresh (glibc needs optind = 0 for that). */
void cli_getopt_reset(void);

/* The getopt value of --untrusted (info, check, convert, compare, map,
 * digest): cli_untrusted() makes every image opened from then on hostile
 * (df_untrusted_begin(): format given, backing files only inside the
 * image's directory). */
#define CLI_OPT_UNTRUSTED 0x1001
#define CLI_UNTRUSTED_HELP \
    "  --untrusted  treat the image as hostile: its format must be given,\n" \
    "               and backing files outside its directory are refused\n"
void cli_untrusted(void);

/*
 * Report what getopt_long() returned as '?' or ':' (the option string must
 * start with ':').  Returns CLI_USAGE; CLI_FAIL for the qemu-img options
 * diskforge refuses by name (--image-opts, --target-image-opts).
 */
int cli_bad_option(const char *cmd, int c, char **argv,
                   const struct option *longopts);

/* "raw"/"qcow2"; prints the error itself and returns -1 on anything else. */
int cli_parse_format(const char *cmd, const char *name, enum df_format *out);

/* A size with qemu-img suffixes; prints the error and returns -1. */
int cli_parse_size(const char *cmd, const char *s, uint64_t *out);

/*
 * Replace each of the @n image names in @names (NULL entries skipped) by
 * the local path it stands for, as qemu-img reads names (df_filename():
 * "file:" stripped; json: and other protocols refused).  Returns CLI_OK,
 * or prints the error and returns CLI_FAIL.
 */
int cli_image_names(char **names, int n);
/*
 * Check a backing file name that will be recorded in @img (-b, -B): json:
 * and protocols other than file: are refused (CLI_FAIL, message printed).
 */
int cli_check_backing_name(const char *img, const char *name);
/*
 * A backing file (@backing, NULL or "" for none) recorded in @img needs
 * its format: CLI_OK, or the message and CLI_USAGE when @fmt is
 * DF_FMT_AUTO.  A recorded format is never probed.
 */
int cli_backing_format_given(const char *img, const char *backing,
                             enum df_format fmt);

/*
 * Image creation options given with -o (create and convert).  Values are
 * kept as the user spelt them as well, because `create` echoes them the
 * way qemu-img does.
 */
struct cli_image_opts {
    struct df_create_opts opts; /* filled by cli_image_opts_parse() */
    bool help;                  /* "-o help" was given */
    bool have_size;             /* "size" was given */
    /* as given, NULL when absent (borrowed from @list) */
    const char *compat;
    const char *lazy_refcounts;
    const char *preallocation;
    const char *compression_type;
    const char *extended_l2;
    const char *encryption;
    const char *backing_fmt;
    char *list; /* every -o argument joined by ',' (owned) */
};

void cli_image_opts_init(struct cli_image_opts *io);
void cli_image_opts_release(struct cli_image_opts *io);
/* Remember one -o argument; they are parsed together later. */
int cli_image_opts_add(struct cli_image_opts *io, const char *arg);
/*
 * Parse the collected list for format @fmt, validating values and their
 * combinations as qemu-img 7.2 does.  Messages name @img.  Returns CLI_OK,
 * CLI_USAGE (a bad or unknown option) or CLI_FAIL (a known option this
 * engine does not support).  When io->help is set afterwards, the caller
 * should print cli_image_opts_help() and stop.
 */
int cli_image_opts_parse(struct cli_image_opts *io, enum df_format fmt,
                         const char *img);
/* Print the options accepted for @fmt ("-o help"). */
void cli_image_opts_help(enum df_format fmt);

/* ---- progress and interruption ---- */

/*
 * Catch SIGINT and SIGTERM: the running operation is then canceled through
 * its progress callback, removes its partial output, and the command exits
 * with CLI_INTERRUPTED.
 */
void cli_catch_signals(void);
/* The signal cli_catch_signals() caught (SIGINT, SIGTERM), or 0. */
int cli_signal(void);

/* State for cli_progress(); @show is -p. */
struct cli_progress {
    bool show;
    bool printed;
    double last; /* last percentage printed */
};

/*
 * A df_progress_fn: prints qemu-img's "    (12.34/100%)\r" on stdout when
 * p->show, and cancels when a signal was caught.
 */
int cli_progress(void *p, uint64_t done, uint64_t total);
/* Finish the progress line (a newline), if one was printed. */
void cli_progress_end(struct cli_progress *p);

/* ---- the job commands (cli-job.c) ---- */

struct job_vars;
struct job;
struct dag;
struct job_diags;

/* --set NAME=VALUE into @set: CLI_OK, or a usage error for @cmd. */
int cli_job_set(const char *cmd, struct job_vars *set, const char *arg);
/* The single JOB.yaml operand left after getopt: CLI_OK with *@path set,
 * or a usage error. */
int cli_job_operand(const char *cmd, int argc, char **argv,
                    const char **path);
/* Initialise @diags and load the job with its DAG (pipeline_load());
 * on failure print every diagnostic on stderr and return CLI_USAGE. */
int cli_job_load(const char *path, const struct job_vars *set,
                 struct job **job, struct dag **dag, struct job_diags *diags);

#endif
