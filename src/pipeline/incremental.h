/* SPDX-License-Identifier: MIT */
/*
 * incremental.h - deciding which steps of a job need to run (SPEC §6):
 * definition fingerprints, path identities, the content-hash cache of
 * external inputs, the reasons, and the runner hooks that record each
 * finished step in the state store (state.h).
 *
 * - A step's definition fingerprint is a SHA-256 over its op, every key
 *   but id, description and needs (values after ${} substitution and
 *   defaults, paths relative to the job file's directory) and
 *   INCR_ENGINE_FORMAT; a command's also covers SOURCE_DATE_EPOCH, which
 *   its program gets.
 * - The identity of a path a step reads is, when an earlier step of the
 *   job wrote it, that writer's output identity: a SHA-256 of the writer's
 *   definition fingerprint and the identities of everything it read (its
 *   image's previous version included, for in-place ops).  Otherwise it is
 *   the SHA-256 of the content (directories: names, modes, symlink targets
 *   and contents, recursively), cached in the store under (size, mtime_ns,
 *   ctime_ns, inode); a cached hash is not trusted while the file's mtime
 *   or ctime is within `window_ns` of when it was computed.
 * - A step runs, with the first reason that applies, when: forced,
 *   `always` (a command without outputs), `never-run`,
 *   `definition-changed`, `input-changed PATH` (an input not written by a
 *   step that runs now), `output-missing PATH` / `output-modified PATH`
 *   (the file differs from what its last writer recorded; given to the
 *   first writer of the path), or `upstream ID` (a step it depends on
 *   runs, or another writer of a path it writes runs: in-place chains
 *   rerun together from their first writer).  Otherwise `up-to-date`.
 *
 * Ownership: incr_open() gives a struct incr that borrows the dag (and its
 * job); free it with incr_free() after the run.
 * Thread-safety: the hooks follow run_hooks' rules; everything else is for
 * one thread.
 */
#ifndef DF_PIPELINE_INCREMENTAL_H
#define DF_PIPELINE_INCREMENTAL_H

#include <stdbool.h>
#include <stdint.h>

#include "dag.h"
#include "runner.h"

/*
 * The version of what the engine writes for a given step definition: bump
 * it when the same definition gives other bytes (every step then reruns).
 */
#define INCR_ENGINE_FORMAT 1

/* SPEC §6: a cached hash is not trusted within 2 s of the file's times. */
#define INCR_DISTRUST_NS INT64_C(2000000000)

struct incr_opts {
    const char *state_path;   /* NULL: .diskforge/NAME.db beside the job */
    bool writable;            /* run: record; plan/dry-run: read only */
    bool force;               /* every step runs, reason "forced" */
    /* run every step (as force) and compare each output's sha256 with the
     * record of the previous run (run_step.reproducible) */
    bool expect_reproducible;
    const char *const *rebuild; /* ids forced, with what depends on them */
    size_t n_rebuild;
    int64_t window_ns;        /* the distrust window (INCR_DISTRUST_NS) */
    int engine_format;        /* 0: INCR_ENGINE_FORMAT (tests vary it) */
};

struct incr;

/*
 * incr_open() - open the store (or, read-only, find there is none), load
 * what it recorded, and decide for every step whether it runs and why.
 * Writable: the default store's .diskforge/ directory is created, and the
 * new content hashes are written.  Returns 0, or -DF_E_* with @err set (a
 * store that cannot be opened, is foreign or too new).  Ids in @o->rebuild
 * must be the job's (job_find_step()): the caller checks them first.
 */
int incr_open(const struct dag *dag, const struct incr_opts *o,
              struct incr **out, struct df_error *err);
void incr_free(struct incr *in);

/* The default store of the job file at @job_path (you own it). */
char *incr_default_state_path(const char *job_path);

/* Whether step @i is up to date, and its reason ("up-to-date" if so). */
bool incr_up_to_date(const struct incr *in, size_t i);
const char *incr_reason(const struct incr *in, size_t i);
/* Every step's reason, indexed like the dag's nodes. */
const char *const *incr_reasons(const struct incr *in);

/* The hooks that make job_run() skip up-to-date steps and record steps. */
const struct run_hooks *incr_hooks(struct incr *in);

/* The first error recording a step met (a warning), or NULL. */
const struct df_error *incr_store_error(const struct incr *in);

/*
 * Write a `sha256sum -c` file of every path a step of the job writes, as
 * its final writer left it (ran now, or up to date), sorted by path, each
 * path relative to @path's directory.  Paths without a known hash (their
 * writer failed or was skipped) are left out and counted in *@missing.
 */
int incr_write_sums(const struct incr *in, const struct run *run,
                    const char *path, size_t *missing, struct df_error *err);

/*
 * The plain SHA-256 of the bytes of the file at @path (an output's
 * "sha256" in the report) as lowercase hex into @hex; -1 if it cannot be
 * read.
 */
int incr_hash_file(const char *path, char hex[65]);

/* ---- the parts, for tests ---- */

/* The definition fingerprint of step @s of @job (hex into @hex). */
void incr_def_fingerprint(const struct job *job, const struct job_step *s,
                          int engine_format, char hex[65]);
/* The output identity of step @i (valid after incr_open()). */
const char *incr_output_identity(const struct incr *in, size_t i);
/* The identity step @i gave its input @path, or NULL if it reads no such
 * path. */
const char *incr_input_identity(const struct incr *in, size_t i,
                                const char *path);
/* How many files were read to hash them since the program started. */
uint64_t incr_files_hashed(void);

#endif
