/* SPDX-License-Identifier: MIT */
/*
 * state.h - the run state store (SPEC §6): an SQLite database, by default
 * .diskforge/NAME.db beside the job file, that remembers what each step
 * did the last time it succeeded, and a content-hash cache of the files a
 * job reads from outside.
 *
 * This is the only file that speaks SQL.  What the records mean (the
 * fingerprints, identities and reasons) is incremental.c's business; the
 * store only keeps them.
 *
 * Durability: the database uses SQLite's rollback journal with
 * synchronous=FULL, and every change is one transaction (one per finished
 * step), so a process killed at any instant (SIGKILL included) leaves
 * either the old or the new record, never half of one; the next opening
 * rolls a hot journal back.  The rollback journal (not WAL) is chosen so
 * that the store also works on NFS and other shared file systems (§7),
 * where WAL's shared memory does not, and so that a read-only opening
 * (`plan`, `run --dry-run`) needs no -shm/-wal files and writes nothing.
 *
 * Schema version: PRAGMA user_version (STATE_SCHEMA_VERSION).  A store
 * written by a newer diskforge is refused with a message that says so.
 *
 * Thread-safety: one struct state is one SQLite connection, for one
 * thread at a time.  The runner calls it from its scheduler thread only,
 * which makes it the single serialised writer of a run (no "database is
 * locked" under -j).  A second process waits up to 10 s for the lock.
 */
#ifndef DF_PIPELINE_STATE_H
#define DF_PIPELINE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "diskforge/error.h"

#define STATE_SCHEMA_VERSION 1

/* What stat() said of a file: enough to notice a change behind our back. */
struct state_stat {
    int64_t size;
    int64_t mtime_ns;
    int64_t ctime_ns;
    int64_t inode;
};

struct state_input {
    char *path;     /* the path's key (relative to the job's directory) */
    char *identity; /* hex */
};

struct state_output {
    char *path;              /* key */
    struct state_stat st;
    char sha256[65];         /* of the file's bytes; "" for no file */
    char *info;              /* the report's output object, JSON text */
};

/* The record of a step's last successful run. */
struct state_step {
    char *id;
    char def_fp[65];         /* definition fingerprint, hex */
    int64_t finished_ms;
    char *result;            /* the report's result object (JSON) or NULL */
    struct state_input *inputs;
    size_t n_inputs;
    struct state_output *outputs;
    size_t n_outputs;
};

/* Every step record of a store, sorted by id. */
struct state_records {
    struct state_step *v;
    size_t n;
};

/* A cached content hash of an external input. */
struct state_hash {
    char *path;              /* key */
    struct state_stat st;
    char sha256[65];
    int64_t recorded_ns;     /* wall clock when it was computed */
    char *backing;           /* a qcow2 image's backing name as stored in it,
                              * or NULL (state_get_hash: malloc'd, yours) */
};

struct state;

/*
 * state_open() - open the store at @path.  Writable: the file is created
 * when missing (its directory must exist).  Read-only: a missing file is
 * no error, *@out is then NULL ("no store": every step never ran), and
 * nothing is created or written.  A file that is not a diskforge store,
 * or one of a newer schema, is refused (-DF_E_FORMAT, @err says why).
 */
int state_open(const char *path, bool writable, struct state **out,
               struct df_error *err);
void state_close(struct state *st);
const char *state_path(const struct state *st);

/* Every step record; free with state_records_free(). */
int state_load(struct state *st, struct state_records *out,
               struct df_error *err);
void state_records_free(struct state_records *r);
const struct state_step *state_records_find(const struct state_records *r,
                                            const char *id);

/* Replace the record of @rec->id, in one transaction. */
int state_put_step(struct state *st, const struct state_step *rec,
                   struct df_error *err);
/* Drop the record of step @id (it failed: it has no trusted result). */
int state_forget_step(struct state *st, const char *id,
                      struct df_error *err);

/* The cached hash of @path: 1 found (into @out, path not set), 0 none. */
int state_get_hash(struct state *st, const char *path, struct state_hash *out,
                   struct df_error *err);
/* Store @n cached hashes in one transaction. */
int state_put_hashes(struct state *st, const struct state_hash *v, size_t n,
                     struct df_error *err);

#endif
