/* SPDX-License-Identifier: MIT */
/*
 * unit-tmpdir.h - a fresh temporary directory for each Check test that
 * makes files.  Define UNIT_TMPDIR_NAME (a short word) and include this
 * once; then
 *
 *   tcase_add_checked_fixture(t, setup, teardown);
 *
 * gives every test its own /tmp/df-unit-NAME-XXXXXX (mkdtemp: unique, so
 * two copies of the suite can run at once), removed after the test, and
 * path_in("f.img") names a file in it.  path_in() returns one of four
 * buffers in turn, per thread, so a call may take two or three of them.
 */
#ifndef DF_UNIT_TMPDIR_H
#define DF_UNIT_TMPDIR_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef UNIT_TMPDIR_NAME
#error "define UNIT_TMPDIR_NAME before including unit-tmpdir.h"
#endif

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/df-unit-%s-XXXXXX", UNIT_TMPDIR_NAME);
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static inline char *path_in(const char *name)
{
    static _Thread_local char buf[4][300];
    static _Thread_local int i;
    char *p = buf[i++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

#endif
