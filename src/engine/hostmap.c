/* SPDX-License-Identifier: MIT */
/*
 * hostmap.c - where an image's host file holds data, asked once.
 *
 * Each SEEK_DATA/SEEK_HOLE costs the file system a walk of the file's
 * extents (and, for unwritten extents, of its page cache): on a file with
 * thousands of extents one lseek() can take milliseconds.  Asking once per
 * extent of the guest image made convert two orders of magnitude slower
 * than qemu-img on fragmented images.  So the file's data extents are
 * found in one pass, on the first question, and kept as a sorted array;
 * every later question is a binary search.
 *
 * Our own writes keep the map true: a write (of data or of zeros) marks
 * its range as data.  That is conservative for zero writes (a punched
 * range may now be a hole), which is safe: "data" only means "read it",
 * and reading a hole gives zeros.  Cutting the file short (a shrink)
 * forgets the map, so data past the cut is not claimed again should the
 * file grow back; the next question walks the file again.
 *
 * Locking: the map has its own mutex, taken briefly; callers may hold the
 * image lock (lock order: image lock, then map lock).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct df_hostmap {
    pthread_mutex_t mu;
    bool built;
    bool no_seek;     /* the file system does not answer SEEK_DATA */
    uint64_t *ext;    /* pairs: [start, end) of each data extent, sorted */
    size_t n, cap;    /* extents used / allocated */
};

struct df_hostmap *df_hostmap_new(void)
{
    struct df_hostmap *m = calloc(1, sizeof(*m));

    if (m) {
        pthread_mutex_init(&m->mu, NULL);
    }
    return m;
}

void df_hostmap_free(struct df_hostmap *m)
{
    if (m) {
        pthread_mutex_destroy(&m->mu);
        free(m->ext);
        free(m);
    }
}

static int reserve(struct df_hostmap *m, size_t want)
{
    if (want > m->cap) {
        size_t cap = DF_MAX(want, m->cap * 2 + 16);
        uint64_t *e = realloc(m->ext, cap * 2 * sizeof(uint64_t));
        if (!e) {
            return -1;
        }
        m->ext = e;
        m->cap = cap;
    }
    return 0;
}

/* Walk the file once (called with m->mu held). */
static int build(struct df_hostmap *m, int fd, const char *path,
                 struct df_error *err)
{
    off_t end = lseek(fd, 0, SEEK_END), pos = 0;

    if (end < 0) {
        return df_fail_errno(err, DF_E_IO, "'%s': cannot get size", path);
    }
    m->n = 0;
    m->no_seek = false;
    while (pos < end) {
        off_t d = lseek(fd, pos, SEEK_DATA), h;
        if (d < 0 && errno == ENXIO) {
            break; /* a hole to the end */
        }
        if (d < 0) {
            /* no SEEK_DATA here (or it failed): everything is data */
            m->no_seek = true;
            break;
        }
        h = lseek(fd, d, SEEK_HOLE);
        if (h <= d) {
            h = end;
        }
        if (reserve(m, m->n + 1) < 0) {
            return df_fail(err, DF_E_NOMEM, "'%s': out of memory", path);
        }
        m->ext[2 * m->n] = (uint64_t)d;
        m->ext[2 * m->n + 1] = (uint64_t)h;
        m->n++;
        pos = h;
    }
    m->built = true;
    return 0;
}

/* Index of the first extent that ends after @off. */
static size_t first_after(const struct df_hostmap *m, uint64_t off)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->ext[2 * mid + 1] <= off) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int df_hostmap_lookup(struct df_hostmap *m, int fd, const char *path,
                      uint64_t off, uint64_t len, bool *data, uint64_t *run,
                      struct df_error *err)
{
    int ret = 0;

    pthread_mutex_lock(&m->mu);
    if (!m->built) {
        ret = build(m, fd, path, err);
    }
    if (ret == 0) {
        size_t i = first_after(m, off);
        if (m->no_seek) {
            *data = true;
            *run = len;
        } else if (i == m->n) {
            *data = false; /* a hole up to the end of the file, or beyond */
            *run = len;
        } else if (m->ext[2 * i] <= off) {
            *data = true;
            *run = DF_MIN(len, m->ext[2 * i + 1] - off);
        } else {
            *data = false;
            *run = DF_MIN(len, m->ext[2 * i] - off);
        }
    }
    pthread_mutex_unlock(&m->mu);
    return ret;
}

void df_hostmap_note_write(struct df_hostmap *m, uint64_t off, uint64_t len)
{
    uint64_t end = off + len;
    size_t i, j;

    if (!m || !len) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    if (!m->built || m->no_seek) {
        goto out;
    }
    /* extents [i, j) touch [off, end): merge them with it */
    i = first_after(m, off ? off - 1 : 0);
    j = i;
    while (j < m->n && m->ext[2 * j] <= end) {
        off = DF_MIN(off, m->ext[2 * j]);
        end = DF_MAX(end, m->ext[2 * j + 1]);
        j++;
    }
    if (j == i) {
        /* nothing to merge with: insert a new extent at i */
        if (reserve(m, m->n + 1) < 0) {
            m->built = false; /* forget the map; the next lookup rebuilds */
            goto out;
        }
        memmove(m->ext + 2 * (i + 1), m->ext + 2 * i,
                (m->n - i) * 2 * sizeof(uint64_t));
        m->n++;
    } else if (j > i + 1) {
        memmove(m->ext + 2 * (i + 1), m->ext + 2 * j,
                (m->n - j) * 2 * sizeof(uint64_t));
        m->n -= j - i - 1;
    }
    m->ext[2 * i] = off;
    m->ext[2 * i + 1] = end;
out:
    pthread_mutex_unlock(&m->mu);
}

void df_hostmap_forget(struct df_hostmap *m)
{
    if (m) {
        pthread_mutex_lock(&m->mu);
        m->built = false;
        pthread_mutex_unlock(&m->mu);
    }
}
