/* SPDX-License-Identifier: MIT */
/*
 * job.h - the job model: a YAML job file (docs/job-file.md) parsed into
 * typed steps that remember where every value came from.
 *
 * job_load() reads and validates a job file; job_load_string() does the
 * same for text in memory (tests).  Neither runs anything.  Every problem
 * found is appended to a struct job_diags as "file:line:column: message",
 * so a caller can print all of them at once.
 *
 * Ownership: job_load() gives you a struct job; release it with
 * job_free().  Strings inside are owned by the job.
 * Thread-safety: a loaded job is read-only and may be read from any
 * thread; loading is per object.
 */
#ifndef DF_PIPELINE_JOB_H
#define DF_PIPELINE_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "diskforge/gpt.h"
#include "diskforge/image.h"
#include "diskforge/ops.h"

/* Where a value was written: 1-based line and column, like compilers. */
struct job_loc {
    const char *file; /* borrowed from the job (or the diags' owner) */
    int line;
    int col;
};

/* ---- diagnostics ---- */

struct job_diag {
    struct job_loc loc;
    char *msg;
};

struct job_diags {
    struct job_diag *v;
    size_t n, cap;
    char *file; /* owned copy of the file name the locations point at */
};

void job_diags_init(struct job_diags *d);
void job_diags_release(struct job_diags *d);
/* Record one error at @loc (NULL: no location). */
void job_diag_add(struct job_diags *d, const struct job_loc *loc,
                  const char *fmt, ...) DF_PRINTF(3, 4);
/* "file:line:col: error: message" per diagnostic, in order of position. */
void job_diags_print(const struct job_diags *d, FILE *out);

/* ---- variables (vars: and --set NAME=VALUE) ---- */

struct job_var {
    char *name;
    char *value;
};

struct job_vars {
    struct job_var *v;
    size_t n, cap;
};

void job_vars_release(struct job_vars *vars);
/* Set @name to @value (copies both), replacing an earlier value. */
int job_vars_set(struct job_vars *vars, const char *name, const char *value);
/* Parse "NAME=VALUE" (--set); returns -1 when it has no '=' or bad NAME. */
int job_vars_set_arg(struct job_vars *vars, const char *arg);
const char *job_vars_get(const struct job_vars *vars, const char *name);

/* ---- ops and keys ---- */

enum job_op {
    JOB_OP_CREATE,
    JOB_OP_OVERLAY,
    JOB_OP_COPY,
    JOB_OP_CONVERT,
    JOB_OP_WRITE,
    JOB_OP_FILL,
    JOB_OP_RESIZE,
    JOB_OP_COMMIT,
    JOB_OP_REBASE,
    JOB_OP_SPARSIFY,
    JOB_OP_CHECK,
    JOB_OP_DIGEST,
    JOB_OP_COMPARE,
    JOB_OP_INFO,
    JOB_OP_COMMAND,
    JOB_OP_PARTITION,  /* SPEC §9 */
    JOB_OP_FILESYSTEM,
    JOB_OP_FILES,
    JOB_OP_COUNT
};

const char *job_op_name(enum job_op op);

/* Every key a step may have; which op takes which is in job.c. */
enum job_key {
    JOB_KEY_ID,
    JOB_KEY_OP,
    JOB_KEY_NEEDS,
    JOB_KEY_DESCRIPTION,
    JOB_KEY_IMAGE,
    JOB_KEY_FORMAT,
    JOB_KEY_SIZE,
    JOB_KEY_PREALLOCATION,
    JOB_KEY_CLUSTER_SIZE,
    JOB_KEY_COMPAT,
    JOB_KEY_LAZY_REFCOUNTS,
    JOB_KEY_REFCOUNT_BITS,
    JOB_KEY_COMPRESSION_TYPE,
    JOB_KEY_BACKING,
    JOB_KEY_BACKING_FORMAT,
    JOB_KEY_BACKING_PATH,
    JOB_KEY_FROM,
    JOB_KEY_FROM_FORMAT,
    JOB_KEY_TO,
    JOB_KEY_SPARSE,
    JOB_KEY_COMPRESS,
    JOB_KEY_SPARSE_SIZE,
    JOB_KEY_OFFSET,
    JOB_KEY_LENGTH,
    JOB_KEY_PATTERN,
    JOB_KEY_REPAIR,
    JOB_KEY_EXPECT,
    JOB_KEY_SHA256,
    JOB_KEY_A,
    JOB_KEY_B,
    JOB_KEY_UNSAFE,
    JOB_KEY_ARGV,
    JOB_KEY_SHELL,
    JOB_KEY_INPUTS,
    JOB_KEY_OUTPUTS,
    JOB_KEY_TABLE,      /* partition (SPEC §9) */
    JOB_KEY_DISK_GUID,
    JOB_KEY_PARTITIONS,
    JOB_KEY_PARTITION,  /* filesystem */
    JOB_KEY_TYPE,
    JOB_KEY_LABEL,
    JOB_KEY_UUID,
    JOB_KEY_OPTIONS,
    JOB_KEY_UNTRUSTED,
    JOB_KEY_ALLOW_BACKING,
    JOB_KEY_COUNT
};

const char *job_key_name(enum job_key key);

enum job_sparse { JOB_SPARSE_AUTO, JOB_SPARSE_ALWAYS, JOB_SPARSE_NEVER };
enum job_compress { JOB_COMPRESS_NONE, JOB_COMPRESS_ZLIB, JOB_COMPRESS_ZSTD };
enum job_pattern { JOB_PATTERN_BYTE, JOB_PATTERN_ZERO, JOB_PATTERN_RANDOM };

enum job_fs_type { JOB_FS_EXT4, JOB_FS_VFAT };

/* One entry of a partition step's `partitions`. */
struct job_part {
    char *name;
    struct df_guid type;
    uint64_t size;      /* bytes; 0 with rest */
    bool rest;
    bool has_guid;      /* else derived at run time */
    struct df_guid guid;
    uint64_t attributes;
    struct job_loc loc; /* the entry's mapping */
    struct job_loc size_loc;
};

/* A list of strings with the location of each. */
struct job_strv {
    char **v;
    struct job_loc *loc;
    size_t n;
};

struct job_step {
    size_t index;        /* position in the file, from 0 */
    char *id;
    enum job_op op;
    struct job_loc loc;  /* the step's mapping */
    char *description;   /* or NULL */
    struct job_strv needs;

    uint64_t keys;                      /* bit (1 << JOB_KEY_x): present */
    uint64_t bad_keys;                  /* present but invalid (reported) */
    struct job_loc key_loc[JOB_KEY_COUNT]; /* where each value is */

    /* Paths, resolved against the job file's directory and normalised
     * (`to` of a files step: a directory of the file system, "/..."). */
    char *image, *backing, *from, *to, *a, *b;
    /* `backing` as written (after ${} substitution); "" = none (rebase) */
    char *backing_given;

    enum df_format format, from_format, backing_format;
    uint64_t size, offset, length, sparse_size;
    enum df_prealloc prealloc;
    uint32_t cluster_size;
    int compat; /* 2 or 3 */
    bool lazy_refcounts;
    int refcount_bits;
    enum df_compression compression_type;
    bool backing_path_absolute;
    enum job_sparse sparse;
    enum job_compress compress;
    enum job_pattern pattern;
    unsigned char pattern_byte;
    uint64_t pattern_seed;
    enum df_repair repair;
    uint64_t expect_errors, expect_leaks;
    char sha256[2 * DF_SHA256_LEN + 1]; /* lowercase hex, "" if none */
    bool unsafe;
    struct job_strv argv;     /* as written: run in the job's directory */
    char *shell;              /* or NULL */
    struct job_strv inputs;   /* resolved paths */
    struct job_strv outputs;  /* resolved paths */
    /* partition and filesystem (SPEC §9) */
    struct df_guid disk_guid; /* when JOB_KEY_DISK_GUID */
    struct job_part *parts;
    size_t n_parts;
    char *partition;          /* a name or a 1-based number */
    enum job_fs_type fs_type;
    char *label, *uuid;       /* as written, or NULL */
    struct job_strv options;  /* extra mkfs arguments */
    bool untrusted;           /* open its images as hostile (SPEC §8) */
    struct job_strv allow_backing; /* resolved paths */
};

static inline bool job_step_has(const struct job_step *s, enum job_key k)
{
    return (s->keys >> k) & 1;
}

struct job {
    char *path;        /* the job file as given */
    char *dir;         /* its directory ("." when none) */
    char *name;        /* `name:`, else the file name without .yaml */
    int version;
    struct job_step *steps;
    size_t n_steps;
    struct job_vars vars; /* after --set */
    unsigned char sha256[DF_SHA256_LEN]; /* of the file's bytes */
};

/*
 * job_load() - read, parse and validate the job file at @path with the
 * --set values @set (may be NULL).  Returns a job you own, or NULL with at
 * least one diagnostic in @diags (also for a file that cannot be read).
 * The dependency graph is checked separately (dag.h).
 */
struct job *job_load(const char *path, const struct job_vars *set,
                     struct job_diags *diags);

/* job_load_string() - the same for @len bytes of @text named @path. */
struct job *job_load_string(const char *path, const char *text, size_t len,
                            const struct job_vars *set,
                            struct job_diags *diags);

void job_free(struct job *job);

/*
 * job_step_disk_text() - the partition and filesystem keys of @s as one
 * canonical string (you own it), for fingerprints: what the job asks for
 * after defaults, in a fixed order.
 */
char *job_step_disk_text(const struct job_step *s);

/* Look a step up by id; NULL if none. */
const struct job_step *job_find_step(const struct job *job, const char *id);

/* ---- paths (job-path.c) ---- */

/* Lexically normalised @path: no ".", "..", "//" where avoidable. */
char *job_path_normalize(const char *path);
/* @path (relative to @dir unless absolute), normalised; malloc'd. */
char *job_path_resolve(const char *dir, const char *path);
/* @path made absolute with the current directory, normalised (NULL: out
 * of memory, or no current directory). */
char *job_path_absolute(const char *path);
/* @target written relative to directory @from_dir (both normalised). */
char *job_path_relative(const char *from_dir, const char *target);

/* ---- small helpers shared by the pipeline files ---- */

/* The length of @name without its ".yaml" or ".yml" ending. */
size_t job_name_stem(const char *name);

/* Levenshtein distance, capped at 100. */
int job_edit_distance(const char *a, const char *b);

#endif
