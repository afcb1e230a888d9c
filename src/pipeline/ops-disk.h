/* SPDX-License-Identifier: MIT */
/*
 * ops-disk.h - the disk-layout ops (ops-disk.c: partition, filesystem;
 * SPEC §9) and the helpers for running external programs that ops.c
 * shares with them.
 */
#ifndef DF_PIPELINE_OPS_DISK_H
#define DF_PIPELINE_OPS_DISK_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "diskforge/gpt.h"
#include "runner.h"

/* How much of a program's output a step keeps. */
#define OUTPUT_LIMIT (64u << 10)

/* A program's output: the first OUTPUT_LIMIT (or @cap) bytes of it. */
struct capture {
    char *buf;
    size_t len;      /* kept, at most the limit */
    uint64_t total;  /* produced */
    size_t cap;      /* the size of buf; 0: OUTPUT_LIMIT */
};

/*
 * op_spawn() - start @prog (a path, or a name looked up in PATH) with
 * @argv and @envp in directory @dir (NULL: the current one), stdin
 * /dev/null, stdout to @out_fd (-1: /dev/null) and stderr to @err_fd, in
 * its own process group, signals at their defaults.
 */
int op_spawn(struct op_ctx *ctx, const char *prog, char *const argv[],
             char *const envp[], const char *dir, int out_fd, int err_fd,
             pid_t *pid);

/*
 * op_supervise() - read the child's output from @fd into @cap until it
 * exits (status in *@status); kill its process group when the step is
 * cancelled.  Returns 1 when it was killed, else 0.
 */
int op_supervise(struct op_ctx *ctx, int fd, pid_t pid, struct capture *cap,
                 int *status);

/*
 * ext4_fix_inodes() - in the ext4 file system in @fd (just made by mke2fs
 * -d), set owner root and every time to @epoch on the root directory and
 * every inode in use from the first non-reserved one on, checksums
 * updated (ext4-fix.c).  *@fixed: how many.
 */
int ext4_fix_inodes(struct op_ctx *ctx, int fd, long long epoch,
                    uint64_t *fixed);

int op_partition(struct op_ctx *ctx);
int op_filesystem(struct op_ctx *ctx);
int op_files(struct op_ctx *ctx);

/* The partitions of @g as SPEC §9's JSON: [{"number", "name", "type",
 * "guid", "start", "size"}], type and guid upper case, start and size in
 * bytes. */
json_t *gpt_partitions_json(const struct df_gpt *g);

#endif
