/* SPDX-License-Identifier: MIT */
/*
 * state.c - the run state store in SQLite (see state.h).
 *
 * Tables (schema version 1):
 *   step(id, def_fp, finished_ms, result)      one row per step that last
 *                                              succeeded
 *   step_input(step, path, identity)           what it read, and as what
 *   step_output(step, path, size, mtime_ns, ctime_ns, inode, sha256, info)
 *                                              what it left, as stat() saw it
 *   file_hash(path, size, mtime_ns, ctime_ns, inode, sha256, recorded_ns,
 *             backing)                         content hashes of external
 *                                              inputs, under their stat,
 *                                              with a qcow2 image's backing
 */
#include "state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

/* "DFst": marks the file as a diskforge store (PRAGMA application_id). */
#define STATE_APP_ID 0x44467374

struct state {
    sqlite3 *db;
    char *path;
    bool writable;
    sqlite3_stmt *get_hash;
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS step ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  def_fp TEXT NOT NULL,"
    "  finished_ms INTEGER NOT NULL,"
    "  result TEXT);"
    "CREATE TABLE IF NOT EXISTS step_input ("
    "  step TEXT NOT NULL REFERENCES step(id) ON DELETE CASCADE,"
    "  path TEXT NOT NULL,"
    "  identity TEXT NOT NULL,"
    "  PRIMARY KEY (step, path)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS step_output ("
    "  step TEXT NOT NULL REFERENCES step(id) ON DELETE CASCADE,"
    "  path TEXT NOT NULL,"
    "  size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    "  ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  info TEXT,"
    "  PRIMARY KEY (step, path)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS file_hash ("
    "  path TEXT PRIMARY KEY NOT NULL,"
    "  size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    "  ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  recorded_ns INTEGER NOT NULL,"
    "  backing TEXT) WITHOUT ROWID;";

static int db_fail(struct state *st, struct df_error *err, const char *what)
{
    int code = sqlite3_errcode(st->db);

    return df_fail(err, code == SQLITE_FULL ? DF_E_NOSPC : DF_E_IO,
                   "state store '%s': %s: %s", st->path, what,
                   sqlite3_errmsg(st->db));
}

static int exec(struct state *st, const char *sql, struct df_error *err)
{
    char *msg = NULL;

    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int ret = df_fail(err, DF_E_IO, "state store '%s': %s", st->path,
                          msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return ret;
    }
    return 0;
}

/* One integer from a pragma query. */
static int pragma_int(struct state *st, const char *sql, int64_t *out)
{
    sqlite3_stmt *q;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &q, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        *out = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(q);
    return rc;
}

/* Check (and for a new file, set) the application id and the version. */
static int check_schema(struct state *st, struct df_error *err)
{
    int64_t app = 0, version = 0, tables = 0;

    if (pragma_int(st, "PRAGMA application_id", &app) != SQLITE_OK ||
        pragma_int(st, "PRAGMA user_version", &version) != SQLITE_OK ||
        pragma_int(st, "SELECT count(*) FROM sqlite_master", &tables) !=
            SQLITE_OK) {
        if (sqlite3_extended_errcode(st->db) == SQLITE_READONLY_ROLLBACK) {
            /* a run was killed while recording a step: its journal must
             * be rolled back, which a read-only opening may not do */
            return df_fail(err, DF_E_IO, "state store '%s': a run was "
                           "killed while writing it; the next 'diskforge "
                           "run' repairs it (plan and --dry-run only read, "
                           "and cannot)", st->path);
        }
        return df_fail(err, DF_E_FORMAT, "'%s' is not a diskforge state "
                       "store (%s); delete it, or give another --state",
                       st->path, sqlite3_errmsg(st->db));
    }
    if (app != STATE_APP_ID && (app != 0 || tables != 0)) {
        return df_fail(err, DF_E_FORMAT, "'%s' is an SQLite database but "
                       "not a diskforge state store; delete it, or give "
                       "another --state", st->path);
    }
    if (version > STATE_SCHEMA_VERSION) {
        return df_fail(err, DF_E_FORMAT, "state store '%s' was written by a "
                       "newer diskforge (schema version %lld; this one reads "
                       "up to %d): run that diskforge, or delete the store "
                       "to rebuild everything", st->path, (long long)version,
                       STATE_SCHEMA_VERSION);
    }
    if (app == 0 && tables == 0) {
        char sql[128];
        if (!st->writable) {
            return 0; /* an empty file: nothing recorded */
        }
        snprintf(sql, sizeof(sql), "PRAGMA application_id=%d;"
                 "PRAGMA user_version=%d;", STATE_APP_ID,
                 STATE_SCHEMA_VERSION);
        if (exec(st, "BEGIN IMMEDIATE", err) < 0) {
            return -DF_E_IO;
        }
        if (exec(st, schema_sql, err) < 0 || exec(st, sql, err) < 0) {
            exec(st, "ROLLBACK", NULL);
            return -DF_E_IO;
        }
        return exec(st, "COMMIT", err);
    }
    return 0;
}

int state_open(const char *path, bool writable, struct state **out,
               struct df_error *err)
{
    struct state *st;
    struct stat sb;
    int flags = writable ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                         : SQLITE_OPEN_READONLY;
    int ret;

    *out = NULL;
    if (!writable && stat(path, &sb) < 0 && errno == ENOENT) {
        return 0; /* no store yet */
    }
    st = calloc(1, sizeof(*st));
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return df_fail(err, DF_E_NOMEM, "out of memory");
    }
    st->writable = writable;
    if (sqlite3_open_v2(path, &st->db, flags | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        ret = df_fail(err, DF_E_IO, "cannot open the state store '%s': %s",
                      path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
        state_close(st);
        return ret;
    }
    sqlite3_busy_timeout(st->db, 10000);
    sqlite3_extended_result_codes(st->db, 0);
    if ((writable && (exec(st, "PRAGMA journal_mode=DELETE", err) < 0 ||
                      exec(st, "PRAGMA synchronous=FULL", err) < 0)) ||
        exec(st, "PRAGMA foreign_keys=ON", err) < 0 ||
        check_schema(st, err) < 0) {
        ret = -(int)err->code;
        state_close(st);
        return ret ? ret : -DF_E_IO;
    }
    *out = st;
    return 0;
}

void state_close(struct state *st)
{
    if (!st) {
        return;
    }
    sqlite3_finalize(st->get_hash);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

const char *state_path(const struct state *st)
{
    return st ? st->path : NULL;
}

/* ---- reading step records ---- */

static char *col_text(sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);

    return t ? strdup((const char *)t) : NULL;
}

static void col_hex(sqlite3_stmt *q, int col, char out[65])
{
    const unsigned char *t = sqlite3_column_text(q, col);

    snprintf(out, 65, "%s", t ? (const char *)t : "");
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct state_step *)a)->id,
                  ((const struct state_step *)b)->id);
}

static struct state_step *find(struct state_records *r, const char *id)
{
    struct state_step key = { .id = (char *)id };

    return r->n ? bsearch(&key, r->v, r->n, sizeof(*r->v), by_id) : NULL;
}

static int load_steps(struct state *st, struct state_records *r)
{
    sqlite3_stmt *q;
    size_t cap = 0;
    int rc;

    if (sqlite3_prepare_v2(st->db, "SELECT id, def_fp, finished_ms, result "
                           "FROM step ORDER BY id", -1, &q, NULL) != SQLITE_OK) {
        return -1;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct state_step *s;
        if (r->n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            struct state_step *v = realloc(r->v, nc * sizeof(*v));
            if (!v) {
                break;
            }
            r->v = v;
            cap = nc;
        }
        s = &r->v[r->n];
        memset(s, 0, sizeof(*s));
        s->id = col_text(q, 0);
        if (!s->id) {
            break;
        }
        col_hex(q, 1, s->def_fp);
        s->finished_ms = sqlite3_column_int64(q, 2);
        s->result = col_text(q, 3);
        r->n++;
    }
    sqlite3_finalize(q);
    /* ORDER BY uses SQLite's collation (bytes): the same as strcmp */
    return rc == SQLITE_DONE ? 0 : -1;
}

static int load_inputs(struct state *st, struct state_records *r)
{
    sqlite3_stmt *q;
    int rc;

    if (sqlite3_prepare_v2(st->db, "SELECT step, path, identity FROM "
                           "step_input ORDER BY step, path", -1, &q,
                           NULL) != SQLITE_OK) {
        return -1;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct state_step *s = find(r, (const char *)sqlite3_column_text(q, 0));
        struct state_input *v;
        if (!s) {
            continue;
        }
        v = realloc(s->inputs, (s->n_inputs + 1) * sizeof(*v));
        if (!v) {
            break;
        }
        s->inputs = v;
        v[s->n_inputs].path = col_text(q, 1);
        v[s->n_inputs].identity = col_text(q, 2);
        s->n_inputs++;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int load_outputs(struct state *st, struct state_records *r)
{
    sqlite3_stmt *q;
    int rc;

    if (sqlite3_prepare_v2(st->db, "SELECT step, path, size, mtime_ns, "
                           "ctime_ns, inode, sha256, info FROM step_output "
                           "ORDER BY step, path", -1, &q, NULL) != SQLITE_OK) {
        return -1;
    }
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct state_step *s = find(r, (const char *)sqlite3_column_text(q, 0));
        struct state_output *v, *o;
        if (!s) {
            continue;
        }
        v = realloc(s->outputs, (s->n_outputs + 1) * sizeof(*v));
        if (!v) {
            break;
        }
        s->outputs = v;
        o = &v[s->n_outputs++];
        o->path = col_text(q, 1);
        o->st.size = sqlite3_column_int64(q, 2);
        o->st.mtime_ns = sqlite3_column_int64(q, 3);
        o->st.ctime_ns = sqlite3_column_int64(q, 4);
        o->st.inode = sqlite3_column_int64(q, 5);
        col_hex(q, 6, o->sha256);
        o->info = col_text(q, 7);
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

int state_load(struct state *st, struct state_records *out,
               struct df_error *err)
{
    int64_t tables = 0;

    memset(out, 0, sizeof(*out));
    if (!st) {
        return 0;
    }
    /* a read-only opening of an empty file has no tables yet */
    if (pragma_int(st, "SELECT count(*) FROM sqlite_master WHERE "
                   "name='step'", &tables) != SQLITE_OK) {
        return db_fail(st, err, "cannot read");
    }
    if (!tables) {
        return 0;
    }
    /* one read transaction: a consistent picture of the three tables */
    if (exec(st, "BEGIN", err) < 0) {
        return -DF_E_IO;
    }
    if (load_steps(st, out) < 0 || load_inputs(st, out) < 0 ||
        load_outputs(st, out) < 0) {
        int ret = db_fail(st, err, "cannot read the step records");
        exec(st, "ROLLBACK", NULL);
        state_records_free(out);
        return ret;
    }
    return exec(st, "COMMIT", err);
}

void state_records_free(struct state_records *r)
{
    for (size_t i = 0; i < r->n; i++) {
        struct state_step *s = &r->v[i];
        for (size_t k = 0; k < s->n_inputs; k++) {
            free(s->inputs[k].path);
            free(s->inputs[k].identity);
        }
        for (size_t k = 0; k < s->n_outputs; k++) {
            free(s->outputs[k].path);
            free(s->outputs[k].info);
        }
        free(s->inputs);
        free(s->outputs);
        free(s->id);
        free(s->result);
    }
    free(r->v);
    memset(r, 0, sizeof(*r));
}

const struct state_step *state_records_find(const struct state_records *r,
                                            const char *id)
{
    return find((struct state_records *)r, id);
}

/* ---- writing step records ---- */

static int bind_text(sqlite3_stmt *q, int col, const char *s)
{
    return s ? sqlite3_bind_text(q, col, s, -1, SQLITE_TRANSIENT)
             : sqlite3_bind_null(q, col);
}

static int bind_stat(sqlite3_stmt *q, int col, const struct state_stat *s)
{
    int rc = sqlite3_bind_int64(q, col, s->size);

    rc = rc ? rc : sqlite3_bind_int64(q, col + 1, s->mtime_ns);
    rc = rc ? rc : sqlite3_bind_int64(q, col + 2, s->ctime_ns);
    return rc ? rc : sqlite3_bind_int64(q, col + 3, s->inode);
}

/* Run @q once (already bound) and reset it. */
static int step_once(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);

    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int put_rows(struct state *st, const struct state_step *rec)
{
    sqlite3_stmt *q = NULL, *qi = NULL, *qo = NULL;
    int ret = -1;

    if (sqlite3_prepare_v2(st->db, "DELETE FROM step WHERE id=?1", -1, &q,
                           NULL) != SQLITE_OK ||
        bind_text(q, 1, rec->id) || step_once(q) < 0) {
        goto out;
    }
    sqlite3_finalize(q);
    q = NULL;
    if (sqlite3_prepare_v2(st->db, "INSERT INTO step (id, def_fp, "
                           "finished_ms, result) VALUES (?1, ?2, ?3, ?4)",
                           -1, &q, NULL) != SQLITE_OK ||
        bind_text(q, 1, rec->id) || bind_text(q, 2, rec->def_fp) ||
        sqlite3_bind_int64(q, 3, rec->finished_ms) ||
        bind_text(q, 4, rec->result) || step_once(q) < 0) {
        goto out;
    }
    if (sqlite3_prepare_v2(st->db, "INSERT INTO step_input (step, path, "
                           "identity) VALUES (?1, ?2, ?3)", -1, &qi,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO step_output "
                           "(step, path, size, mtime_ns, ctime_ns, inode, "
                           "sha256, info) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                           "?7, ?8)", -1, &qo, NULL) != SQLITE_OK) {
        goto out;
    }
    for (size_t i = 0; i < rec->n_inputs; i++) {
        /* a path read twice (e.g. compare a a) is one row */
        if (i && !strcmp(rec->inputs[i].path, rec->inputs[i - 1].path)) {
            continue;
        }
        if (bind_text(qi, 1, rec->id) || bind_text(qi, 2, rec->inputs[i].path) ||
            bind_text(qi, 3, rec->inputs[i].identity) || step_once(qi) < 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < rec->n_outputs; i++) {
        const struct state_output *o = &rec->outputs[i];
        if (bind_text(qo, 1, rec->id) || bind_text(qo, 2, o->path) ||
            bind_stat(qo, 3, &o->st) || bind_text(qo, 7, o->sha256) ||
            bind_text(qo, 8, o->info) || step_once(qo) < 0) {
            goto out;
        }
    }
    ret = 0;
out:
    sqlite3_finalize(q);
    sqlite3_finalize(qi);
    sqlite3_finalize(qo);
    return ret;
}

/* Run @fn in one write transaction; roll back when it fails. */
static int in_transaction(struct state *st, int (*fn)(struct state *,
                                                       const void *),
                          const void *arg, const char *what,
                          struct df_error *err)
{
    if (!st->writable) {
        return df_fail(err, DF_E_INVAL, "state store '%s' is open read-only",
                       st->path);
    }
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
        SQLITE_OK) {
        return db_fail(st, err, what);
    }
    if (fn(st, arg) < 0) {
        int ret = db_fail(st, err, what);
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return ret;
    }
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int ret = db_fail(st, err, what);
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return ret;
    }
    return 0;
}

static int put_step_fn(struct state *st, const void *arg)
{
    return put_rows(st, arg);
}

int state_put_step(struct state *st, const struct state_step *rec,
                   struct df_error *err)
{
    return in_transaction(st, put_step_fn, rec, "cannot record a step", err);
}

static int forget_fn(struct state *st, const void *arg)
{
    sqlite3_stmt *q;
    int ret = -1;

    if (sqlite3_prepare_v2(st->db, "DELETE FROM step WHERE id=?1", -1, &q,
                           NULL) == SQLITE_OK &&
        !bind_text(q, 1, arg) && step_once(q) == 0) {
        ret = 0;
    }
    sqlite3_finalize(q);
    return ret;
}

int state_forget_step(struct state *st, const char *id, struct df_error *err)
{
    return in_transaction(st, forget_fn, id, "cannot forget a step", err);
}

/* ---- the hash cache ---- */

int state_get_hash(struct state *st, const char *path, struct state_hash *out,
                   struct df_error *err)
{
    int64_t tables = 0;
    int rc;

    if (!st) {
        return 0;
    }
    if (!st->get_hash) {
        if (pragma_int(st, "SELECT count(*) FROM sqlite_master WHERE "
                       "name='file_hash'", &tables) != SQLITE_OK) {
            return db_fail(st, err, "cannot read");
        }
        if (!tables) {
            return 0;
        }
        if (sqlite3_prepare_v2(st->db, "SELECT size, mtime_ns, ctime_ns, "
                               "inode, sha256, recorded_ns, backing FROM "
                               "file_hash WHERE path=?1", -1, &st->get_hash,
                               NULL) != SQLITE_OK) {
            return db_fail(st, err, "cannot read the hash cache");
        }
    }
    bind_text(st->get_hash, 1, path);
    rc = sqlite3_step(st->get_hash);
    if (rc == SQLITE_ROW) {
        out->st.size = sqlite3_column_int64(st->get_hash, 0);
        out->st.mtime_ns = sqlite3_column_int64(st->get_hash, 1);
        out->st.ctime_ns = sqlite3_column_int64(st->get_hash, 2);
        out->st.inode = sqlite3_column_int64(st->get_hash, 3);
        col_hex(st->get_hash, 4, out->sha256);
        out->recorded_ns = sqlite3_column_int64(st->get_hash, 5);
        out->backing = col_text(st->get_hash, 6);
    }
    sqlite3_reset(st->get_hash);
    sqlite3_clear_bindings(st->get_hash);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return db_fail(st, err, "cannot read the hash cache");
    }
    return rc == SQLITE_ROW;
}

struct hash_batch {
    const struct state_hash *v;
    size_t n;
};

static int put_hashes_fn(struct state *st, const void *arg)
{
    const struct hash_batch *b = arg;
    sqlite3_stmt *q;
    int ret = 0;

    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO file_hash (path, "
                           "size, mtime_ns, ctime_ns, inode, sha256, "
                           "recorded_ns, backing) VALUES (?1, ?2, ?3, ?4, "
                           "?5, ?6, ?7, ?8)",
                           -1, &q, NULL) != SQLITE_OK) {
        return -1;
    }
    for (size_t i = 0; i < b->n && ret == 0; i++) {
        if (bind_text(q, 1, b->v[i].path) || bind_stat(q, 2, &b->v[i].st) ||
            bind_text(q, 6, b->v[i].sha256) ||
            sqlite3_bind_int64(q, 7, b->v[i].recorded_ns) ||
            bind_text(q, 8, b->v[i].backing) || step_once(q) < 0) {
            ret = -1;
        }
    }
    sqlite3_finalize(q);
    return ret;
}

int state_put_hashes(struct state *st, const struct state_hash *v, size_t n,
                     struct df_error *err)
{
    struct hash_batch b = { v, n };

    if (!n) {
        return 0;
    }
    return in_transaction(st, put_hashes_fn, &b, "cannot record file hashes",
                          err);
}
