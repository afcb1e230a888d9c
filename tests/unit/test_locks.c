/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the engine's image locks, the cancel hook and the run lock
 * (lock.c, runlock.c).  Open file description locks conflict between two
 * opens of one file in one process as between two processes, so one
 * process can play both sides.
 *
 *   - readers share: two read-only opens of one image at once, from many
 *     threads at once (run under TSan in CI);
 *   - a writer excludes readers and writers, both ways, with
 *     -DF_E_BUSY and a message naming the image and "in use";
 *   - a force-share open (qemu-img -U) reads an image being written; a
 *     metadata-only open (info) of a raw image takes no lock;
 *   - the bytes taken are QEMU's: 100 + N held, 200 + N not shared;
 *   - an output in use is not replaced by create;
 *   - closing an image frees its locks even while a forked child that has
 *     not exec'd shares the descriptor;
 *   - a cancel seen after the work but before the rename: no rename, no
 *     temporary left; the hook is per thread;
 *   - the run lock: a second take fails naming this PID; stale
 *     temporaries: one nobody holds goes, one held stays.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "diskforge/image.h"
#include "diskforge/ops.h"
#include "internal.h"
#include "runlock.h"

#define UNIT_TMPDIR_NAME "locks"
#include "unit-tmpdir.h"

static void make_image(const char *name, enum df_format fmt)
{
    struct df_create_opts o;
    struct df_error err = { 0 };

    df_create_opts_init(&o);
    o.format = fmt;
    o.size = 1 << 20;
    ck_assert_msg(df_image_create(path_in(name), &o, &err) == 0, "%s",
                  err.msg);
}

/* Does someone (through any descriptor) hold lock byte @b of @path? */
static bool byte_locked(const char *path, int b)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                        .l_start = b, .l_len = 1 };
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
    close(fd);
    return fl.l_type != F_UNLCK;
}

START_TEST(readers_share)
{
    struct df_error err = { 0 };
    struct df_image *a, *b;

    make_image("r.qcow2", DF_FMT_QCOW2);
    a = df_image_open(path_in("r.qcow2"), DF_FMT_QCOW2, 0, &err);
    ck_assert_msg(a != NULL, "%s", err.msg);
    b = df_image_open(path_in("r.qcow2"), DF_FMT_QCOW2, 0, &err);
    ck_assert_msg(b != NULL, "second reader: %s", err.msg);
    /* QEMU's bytes: consistent read held; write and resize not shared */
    ck_assert(byte_locked(path_in("r.qcow2"), 100));
    ck_assert(!byte_locked(path_in("r.qcow2"), 101));
    ck_assert(byte_locked(path_in("r.qcow2"), 201));
    ck_assert(byte_locked(path_in("r.qcow2"), 203));
    ck_assert(!byte_locked(path_in("r.qcow2"), 200));
    df_image_close(a, NULL);
    df_image_close(b, NULL);
}
END_TEST

START_TEST(writer_excludes)
{
    struct df_error err = { 0 };
    struct df_image *w, *r;

    make_image("w.raw", DF_FMT_RAW);
    w = df_image_open(path_in("w.raw"), DF_FMT_RAW, DF_OPEN_RDWR, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    ck_assert(byte_locked(path_in("w.raw"), 101));
    ck_assert(byte_locked(path_in("w.raw"), 103));
    r = df_image_open(path_in("w.raw"), DF_FMT_RAW, 0, &err);
    ck_assert(r == NULL);
    ck_assert_int_eq(err.code, DF_E_BUSY);
    ck_assert_msg(strstr(err.msg, "w.raw' is in use"), "%s", err.msg);
    df_error_clear(&err);
    r = df_image_open(path_in("w.raw"), DF_FMT_RAW, DF_OPEN_RDWR, &err);
    ck_assert(r == NULL);
    ck_assert_int_eq(err.code, DF_E_BUSY);
    df_error_clear(&err);
    /* -U reads it; info of a raw image takes no lock (as qemu-img) */
    r = df_image_open(path_in("w.raw"), DF_FMT_RAW, DF_OPEN_SHARE, &err);
    ck_assert_msg(r != NULL, "%s", err.msg);
    df_image_close(r, NULL);
    r = df_image_open(path_in("w.raw"), DF_FMT_AUTO, DF_OPEN_METADATA, &err);
    ck_assert_msg(r != NULL, "%s", err.msg);
    df_image_close(r, NULL);
    df_image_close(w, NULL);
    /* closed: free again */
    r = df_image_open(path_in("w.raw"), DF_FMT_RAW, DF_OPEN_RDWR, &err);
    ck_assert_msg(r != NULL, "%s", err.msg);
    df_image_close(r, NULL);
}
END_TEST

START_TEST(reader_blocks_writer_and_replace)
{
    struct df_error err = { 0 };
    struct df_create_opts o;
    struct df_image *r, *w;

    make_image("b.qcow2", DF_FMT_QCOW2);
    r = df_image_open(path_in("b.qcow2"), DF_FMT_QCOW2, 0, &err);
    ck_assert_msg(r != NULL, "%s", err.msg);
    w = df_image_open(path_in("b.qcow2"), DF_FMT_QCOW2, DF_OPEN_RDWR, &err);
    ck_assert(w == NULL);
    ck_assert_int_eq(err.code, DF_E_BUSY);
    df_error_clear(&err);
    /* info of a qcow2 (metadata) is refused only by writers: fine here */
    w = df_image_open(path_in("b.qcow2"), DF_FMT_AUTO, DF_OPEN_METADATA, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    df_image_close(w, NULL);
    /* a file in use is not replaced */
    df_create_opts_init(&o);
    o.size = 4096;
    ck_assert_int_eq(df_image_create(path_in("b.qcow2"), &o, &err),
                     -DF_E_BUSY);
    ck_assert_msg(strstr(err.msg, "b.qcow2' is in use"), "%s", err.msg);
    df_image_close(r, NULL);
}
END_TEST

static bool always(void *opaque)
{
    (void)opaque;
    return true;
}

START_TEST(cancel_before_rename)
{
    struct df_error err = { 0 };
    struct df_create_opts o;
    struct stat st;
    char cmd[600];

    df_create_opts_init(&o);
    o.size = 1 << 20; /* no loop at all: only the rename is left to stop */
    df_cancel_hook(always, NULL);
    ck_assert_int_eq(df_image_create(path_in("c.qcow2"), &o, &err),
                     -DF_E_CANCELED);
    df_cancel_hook(NULL, NULL);
    ck_assert_int_eq(stat(path_in("c.qcow2"), &st), -1);
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", dir);
    ck_assert_msg(system(cmd) == 0, "a temporary was left");
}
END_TEST

/* ---- threads: readers at once, and the hook belongs to its thread ---- */

static void *reader_thread(void *arg)
{
    struct df_error err = { 0 };
    unsigned char buf[4096];
    (void)arg;
    for (int i = 0; i < 20; i++) {
        struct df_image *img =
            df_image_open(path_in("t.qcow2"), DF_FMT_QCOW2, 0, &err);
        if (!img || df_image_pread(img, buf, sizeof(buf), 0, &err) < 0 ||
            df_cancel_requested()) {
            df_image_close(img, NULL);
            return (void *)1;
        }
        df_image_close(img, NULL);
    }
    return NULL;
}

START_TEST(threads_read_at_once)
{
    pthread_t t[8];

    make_image("t.qcow2", DF_FMT_QCOW2);
    /* this thread's hook says stop; the readers' threads have none */
    df_cancel_hook(always, NULL);
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(pthread_create(&t[i], NULL, reader_thread, NULL), 0);
    }
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_msg(r == NULL, "reader %d failed", i);
    }
    ck_assert(df_cancel_requested());
    df_cancel_hook(NULL, NULL);
}
END_TEST

/* A child forked while an image was open (as posix_spawn of a job's
 * command does from another thread) shares its open file description until
 * it execs: closing the image must still free it at once. */
START_TEST(forked_child_keeps_no_lock)
{
    struct df_error err = { 0 };
    struct df_image *img;
    pid_t child;

    make_image("f.raw", DF_FMT_RAW);
    img = df_image_open(path_in("f.raw"), DF_FMT_RAW, DF_OPEN_RDWR, &err);
    ck_assert_msg(img != NULL, "%s", err.msg);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        pause(); /* holds a copy of the descriptor, never execs */
        _exit(0);
    }
    df_image_close(img, NULL);
    img = df_image_open(path_in("f.raw"), DF_FMT_RAW, DF_OPEN_RDWR, &err);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    ck_assert_msg(img != NULL, "reopen after close: %s", err.msg);
    df_image_close(img, NULL);
}
END_TEST

/* ---- run lock and stale temporaries ---- */

START_TEST(run_lock)
{
    struct df_error err = { 0 };
    struct runlock *a, *b;
    char want[64];
    FILE *f = fopen(path_in("job.yaml"), "w");

    ck_assert_ptr_nonnull(f);
    fclose(f);
    a = runlock_take(path_in("job.yaml"), &err);
    ck_assert_msg(a != NULL, "%s", err.msg);
    b = runlock_take(path_in("job.yaml"), &err);
    ck_assert(b == NULL);
    ck_assert_int_eq(err.code, DF_E_BUSY);
    snprintf(want, sizeof(want), "by process %ld", (long)getpid());
    ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
    runlock_release(a);
    df_error_clear(&err);
    b = runlock_take(path_in("job.yaml"), &err);
    ck_assert_msg(b != NULL, "%s", err.msg);
    runlock_release(b);
}
END_TEST

START_TEST(stale_temps)
{
    struct df_error err = { 0 };
    struct stale_temps st;
    struct df_image *held;
    char gone[600], kept[600], other[600];
    pid_t child = fork();

    ck_assert_int_ge(child, 0);
    if (child == 0) {
        _exit(0);
    }
    ck_assert_int_eq(waitpid(child, NULL, 0), child); /* a dead PID */
    snprintf(gone, sizeof(gone), "%s/.out.raw.df-%ld-0.tmp", dir, (long)child);
    snprintf(kept, sizeof(kept), "%s/.out.raw.df-%ld-1.tmp", dir, (long)child);
    snprintf(other, sizeof(other), "%s/.other.raw.df-%ld-0.tmp", dir,
             (long)child);
    for (const char *p = gone; p; p = p == gone ? kept : p == kept ? other
                                                                   : NULL) {
        int fd = open(p, O_CREAT | O_WRONLY, 0644);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "x", 1), 1);
        close(fd);
    }
    held = df_image_open(kept, DF_FMT_RAW, DF_OPEN_RDWR, &err);
    ck_assert_msg(held != NULL, "%s", err.msg);
    runlock_clean_temps(NULL, path_in("out.raw"), &st);
    ck_assert_uint_eq(st.removed, 1);
    ck_assert_uint_eq(st.kept, 1);
    ck_assert_uint_ge(st.bytes, 1);
    ck_assert_int_eq(access(gone, F_OK), -1);
    ck_assert_int_eq(access(kept, F_OK), 0);
    ck_assert_int_eq(access(other, F_OK), 0); /* not an output's */
    df_image_close(held, NULL);
    runlock_clean_temps(NULL, path_in("out.raw"), &st);
    ck_assert_uint_eq(st.removed, 1);
    ck_assert_int_eq(access(kept, F_OK), -1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("locks");
    TCase *tc = tcase_create("locks");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, readers_share);
    tcase_add_test(tc, writer_excludes);
    tcase_add_test(tc, reader_blocks_writer_and_replace);
    tcase_add_test(tc, cancel_before_rename);
    tcase_add_test(tc, threads_read_at_once);
    tcase_add_test(tc, forked_child_keeps_no_lock);
    tcase_add_test(tc, run_lock);
    tcase_add_test(tc, stale_temps);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
