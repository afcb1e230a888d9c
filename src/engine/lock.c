/* SPDX-License-Identifier: MIT */
/*
 * lock.c - image locks that QEMU understands, and the engine's cancel hook.
 *
 * QEMU (block/file-posix.c) marks its use of an image file with open file
 * description (OFD) read locks on single bytes: byte 100 + N says "I hold
 * permission N", byte 200 + N says "I do not let others have permission
 * N".  The permissions are QEMU's BLK_PERM_* bits: 0 consistent read,
 * 1 write, 2 write unchanged, 3 resize.  Before an opener takes a
 * permission it tests (F_OFD_GETLK with a write lock) that no one holds
 * the matching "do not share" byte, and for each permission it does not
 * share, that no one holds the "I hold" byte.  Read locks never conflict
 * with each other, so readers that share reading never block each other.
 *
 * What diskforge takes, as qemu-img, qemu-io and qemu-nbd do on qcow2
 * images (see docs/design.md, "Image locks"):
 *   read-only:     hold consistent read; do not share write, resize
 *   read-write:    hold consistent read, write, resize; do not share
 *                  write, resize
 *   force-share:   hold consistent read; share everything (qemu-img -U)
 *   metadata only: qcow2: hold nothing, do not share write, resize; raw:
 *                  nothing (qemu-img info, which opens with BDRV_O_NO_IO)
 *
 * The locks belong to the image's file descriptor and go when it is
 * closed.  File systems that do not support OFD locks are used without
 * them, as QEMU's locking=auto does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

enum {
    PERM_CONSISTENT_READ = 1 << 0,
    PERM_WRITE = 1 << 1,
    PERM_WRITE_UNCHANGED = 1 << 2,
    PERM_RESIZE = 1 << 3,
    PERM_COUNT = 4,
};

static const char *const perm_names[PERM_COUNT] = {
    "consistent read", "write", "write unchanged", "resize",
};

static void lock_mode_perms(enum df_lock_mode mode, unsigned *perm,
                            unsigned *unshared)
{
    *perm = mode == DF_LOCK_NONE || mode == DF_LOCK_METADATA
                ? 0
                : PERM_CONSISTENT_READ;
    *unshared = mode == DF_LOCK_NONE || mode == DF_LOCK_SHARE_ALL
                    ? 0
                    : PERM_WRITE | PERM_RESIZE;
    if (mode == DF_LOCK_WRITE) {
        *perm |= PERM_WRITE | PERM_RESIZE;
    }
}

/* OFD locks cannot be used on this file (file system without them). */
static bool lock_unsupported(int e)
{
    return e == EINVAL || e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS;
}

/* Is byte @off locked by another open file description?  1 yes, 0 no,
 * -1 locks unsupported (errno set). */
static int byte_held(int fd, off_t off, off_t len)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = len;
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -1;
    }
    return fl.l_type != F_UNLCK;
}

static int lock_byte(int fd, off_t off)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &fl);
}

/*
 * The first conflict an opener holding @perm and not sharing @unshared
 * would meet on @fd, as an error: someone not sharing a permission it
 * holds (byte 200 + N), or holding one it does not share (byte 100 + N).
 * 1 when the file system has no OFD locks.
 */
static int check_bytes(int fd, const char *path, unsigned perm,
                       unsigned unshared, struct df_error *err)
{
    for (int pass = 0; pass < 2; pass++) {
        unsigned mask = pass == 0 ? perm : unshared;
        int base = pass == 0 ? LOCK_SHARED_BASE : LOCK_PERM_BASE;
        for (int i = 0; i < PERM_COUNT; i++) {
            int r = mask & (1u << i) ? byte_held(fd, base + i, 1) : 0;
            if (r < 0) {
                return lock_unsupported(errno)
                           ? 1
                           : df_fail_sys(err, "'%s': cannot test its locks",
                                         path);
            }
            if (r > 0) {
                return df_fail(err, DF_E_BUSY, "'%s' is in use: another "
                               "process (QEMU, qemu-nbd, qemu-img or "
                               "diskforge) %s the \"%s\" permission (lock "
                               "byte %d; qemu says: Failed to get %s\"%s\" "
                               "lock)", path,
                               pass == 0 ? "does not share" : "holds",
                               perm_names[i], base + i,
                               pass == 0 ? "" : "shared ", perm_names[i]);
            }
        }
    }
    return 0;
}

int df_lock_take(int fd, const char *path, enum df_lock_mode mode,
                 struct df_error *err)
{
    unsigned perm, unshared;
    int ret;

    lock_mode_perms(mode, &perm, &unshared);
    if (!perm && !unshared) {
        return 0;
    }
    /* as QEMU: take our bytes first, then look for conflicts, so two
     * openers racing each see the other's bytes */
    for (int i = 0; i < 2 * PERM_COUNT; i++) {
        bool mine = i < PERM_COUNT;
        int bit = mine ? i : i - PERM_COUNT;
        if (!((mine ? perm : unshared) & (1u << bit))) {
            continue;
        }
        if (lock_byte(fd, (mine ? LOCK_PERM_BASE : LOCK_SHARED_BASE) + bit) <
            0) {
            if (lock_unsupported(errno)) {
                return 0;
            }
            if (errno == EAGAIN || errno == EACCES) {
                break; /* someone holds a write lock there: check says who */
            }
            return df_fail_sys(err, "'%s': cannot lock byte %d", path,
                               (mine ? LOCK_PERM_BASE : LOCK_SHARED_BASE) +
                                   bit);
        }
    }
    ret = check_bytes(fd, path, perm, unshared, err);
    return ret > 0 ? 0 : ret;
}

int df_lock_check_replace(const char *path, struct df_error *err)
{
    unsigned perm, unshared;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    int ret;

    if (fd < 0) {
        return 0; /* nothing there (or nothing we can see): nothing held */
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd); /* not an image file: the rename says what is wrong */
        return 0;
    }
    lock_mode_perms(DF_LOCK_WRITE, &perm, &unshared);
    ret = check_bytes(fd, path, perm, unshared, err);
    close(fd);
    return ret > 0 ? 0 : ret;
}

int df_lock_close(int fd)
{
    struct flock fl;

    /*
     * Drop the locks before the descriptor: a child forked by another
     * thread (posix_spawn of a job's command) shares this open file
     * description until it calls exec, and would hold the locks that long
     * after we closed; unlocking the description drops them for all.
     */
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = LOCK_PERM_BASE;
    fl.l_len = LOCK_SHARED_BASE + PERM_COUNT - LOCK_PERM_BASE;
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        /* no locks on this file system, or none taken: nothing to drop */
    }
    return close(fd);
}

bool df_lock_in_use(int fd)
{
    /* any byte of either range: someone holds the file as an image */
    return byte_held(fd, LOCK_PERM_BASE,
                     LOCK_SHARED_BASE + PERM_COUNT - LOCK_PERM_BASE) > 0;
}

/* ---- cancellation ---- */

static _Thread_local bool (*cancel_fn)(void *opaque);
static _Thread_local void *cancel_opaque;

void df_cancel_hook(bool (*fn)(void *opaque), void *opaque)
{
    cancel_fn = fn;
    cancel_opaque = opaque;
}

bool df_cancel_requested(void)
{
    return cancel_fn && cancel_fn(cancel_opaque);
}

int df_cancel_point(const char *path, struct df_error *err)
{
    if (df_cancel_requested()) {
        return df_fail(err, DF_E_CANCELED, "'%s': interrupted", path);
    }
    return 0;
}
