/* SPDX-License-Identifier: MIT */
/*
 * runlock.c - the per-job run lock and the removal of stale temporaries
 * (runlock.h).
 *
 * The run lock is an open file description (OFD) write lock on the whole
 * of `.diskforge/NAME.lock` beside the job file's real path.  OFD locks
 * belong to the open file, not to a thread or a PID, so they do not
 * vanish when some other descriptor of the file is closed, and the kernel
 * drops them when the process dies, SIGKILL included: a lock file left
 * behind by a killed run is free.  The kernel does not say who holds an
 * OFD lock (F_OFD_GETLK reports PID -1), so the holder writes its PID
 * into the file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h" /* df_lock_in_use(), df_path_dir() */
#include "runlock.h"

struct runlock {
    int fd;
};

/* "DIR/.diskforge/NAME.lock" for the job file @job_path; malloc'd. */
static char *lock_path(const char *job_path, struct df_error *err)
{
    char *real = realpath(job_path, NULL), *dir, *path = NULL;
    const char *name;

    if (!real) {
        df_fail_sys(err, "'%s': cannot resolve the job file's path",
                    job_path);
        return NULL;
    }
    name = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
    dir = df_path_dir(real);
    if (!dir || asprintf(&path, "%s/.diskforge", dir) < 0) {
        path = NULL;
    } else if (mkdir(path, 0777) < 0 && errno != EEXIST) {
        df_fail_sys(err, "cannot create directory '%s'", path);
        free(path);
        path = NULL;
    } else {
        char *dirpath = path;
        if (asprintf(&path, "%s/%s.lock", dirpath, name) < 0) {
            path = NULL;
        }
        free(dirpath);
    }
    if (!path && err && err->code == DF_OK) {
        df_fail(err, DF_E_NOMEM, "out of memory");
    }
    free(dir);
    free(real);
    return path;
}

/* The PID the holder wrote, waiting a moment for it to be written. */
static long holder_pid(int fd)
{
    for (int tries = 0; tries < 40; tries++) {
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            long pid = strtol(buf, NULL, 10);
            if (pid > 0) {
                return pid;
            }
        }
        nanosleep(&(struct timespec){ .tv_nsec = 25 * 1000000 }, NULL);
    }
    return -1;
}

struct runlock *runlock_take(const char *job_path, struct df_error *err)
{
    char *path = lock_path(job_path, err);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    struct runlock *l;
    char pid[32];
    int fd, n;

    if (!path) {
        return NULL;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) {
        df_fail_sys(err, "'%s': cannot open the run lock", path);
        free(path);
        return NULL;
    }
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        if (errno == EAGAIN || errno == EACCES) {
            long holder = holder_pid(fd);
            if (holder > 0) {
                df_fail(err, DF_E_BUSY, "'%s' is already being run by "
                        "process %ld (it holds the run lock '%s'); wait for "
                        "it to finish", job_path, holder, path);
            } else {
                df_fail(err, DF_E_BUSY, "'%s' is already being run by "
                        "another process (it holds the run lock '%s')",
                        job_path, path);
            }
        } else {
            df_fail_sys(err, "'%s': cannot lock", path);
        }
        close(fd);
        free(path);
        return NULL;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        df_fail_sys(err, "'%s': cannot write the run lock", path);
        close(fd);
        free(path);
        return NULL;
    }
    free(path);
    l = malloc(sizeof(*l));
    if (!l) {
        close(fd);
        df_fail(err, DF_E_NOMEM, "out of memory");
        return NULL;
    }
    l->fd = fd;
    return l;
}

void runlock_release(struct runlock *l)
{
    if (l) {
        /* an empty file says no one runs it; the lock goes with the fd */
        if (ftruncate(l->fd, 0) < 0) {
            /* harmless: the next holder rewrites it */
        }
        close(l->fd);
        free(l);
    }
}

/* ---- stale temporaries ---- */

/*
 * Is @name a temporary of the file called @base (df_temp_name():
 * ".BASE.df-PID-N.tmp")?  *@pid receives PID.
 */
static bool is_temp_of(const char *name, const char *base, long *pid)
{
    size_t bl = strlen(base);
    const char *p;
    char *end;

    if (name[0] != '.' || strncmp(name + 1, base, bl) != 0 ||
        strncmp(name + 1 + bl, ".df-", 4) != 0) {
        return false;
    }
    p = name + 1 + bl + 4;
    if (*p < '1' || *p > '9') {
        return false;
    }
    *pid = strtol(p, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9') {
        return false;
    }
    strtoul(end + 1, &end, 10);
    return strcmp(end, ".tmp") == 0;
}

static bool process_alive(long pid)
{
    return pid == (long)getpid() || kill((pid_t)pid, 0) == 0 ||
           errno == EPERM;
}

/* Remove the temporary @dir/@name if no one holds it. */
static void clean_one(int dirfd, const char *name, long pid,
                      struct stale_temps *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
                                     O_NONBLOCK | O_NOCTTY);
    struct stat sb;

    if (fd < 0) {
        return; /* gone already, or not ours to look at */
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || df_lock_in_use(fd) ||
        process_alive(pid)) {
        st->kept++;
    } else if (unlinkat(dirfd, name, 0) == 0) {
        st->removed++;
        st->bytes += (uint64_t)sb.st_blocks * 512;
    } else {
        st->kept++;
    }
    close(fd);
}

/* The temporaries of @path, in its directory. */
static void clean_for(const char *path, struct stale_temps *st)
{
    char *dir = df_path_dir(path);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;

    if (d) {
        while ((e = readdir(d)) != NULL) {
            long pid;
            if (is_temp_of(e->d_name, base, &pid)) {
                clean_one(dirfd(d), e->d_name, pid, st);
            }
        }
        closedir(d);
    }
    free(dir);
}

void runlock_clean_temps(const struct dag *dag, const char *extra,
                         struct stale_temps *st)
{
    memset(st, 0, sizeof(*st));
    for (size_t i = 0; dag && i < dag->n; i++) {
        const struct dag_paths *w = &dag->nodes[i].writes;
        for (size_t j = 0; j < w->n; j++) {
            /* a path written by several steps is looked at once */
            bool seen = false;
            for (size_t k = 0; k <= i && !seen; k++) {
                const struct dag_paths *o = &dag->nodes[k].writes;
                for (size_t m = 0; m < (k == i ? j : o->n) && !seen; m++) {
                    seen = strcmp(o->v[m], w->v[j]) == 0;
                }
            }
            if (!seen) {
                clean_for(w->v[j], st);
            }
        }
    }
    if (extra) {
        clean_for(extra, st);
    }
}
