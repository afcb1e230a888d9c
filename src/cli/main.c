/* SPDX-License-Identifier: MIT */
/*
 * main.c - the diskforge command: find the subcommand and run it.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Sorted by name; `diskforge --help` lists them in this order. */
static const struct cli_command commands[] = {
    { "check", cmd_check, "check a qcow2 image's metadata, and repair it" },
    { "commit", cmd_commit, "write an overlay's changes into its backing file" },
    { "compare", cmd_compare, "check that two images have the same content" },
    { "convert", cmd_convert, "copy an image, changing format or sparseness" },
    { "copy", cmd_copy, "copy a file, keeping or making it sparse (cp)" },
    { "create", cmd_create, "create a new raw or qcow2 image" },
    { "digest", cmd_digest, "print the SHA-256 of an image's content" },
    { "info", cmd_info, "show an image's format, sizes and options" },
    { "map", cmd_map, "show where an image's data is, layer by layer" },
    { "measure", cmd_measure, "compute the file size a new image needs" },
    { "plan", cmd_plan, "print a job's steps, dependencies and reasons" },
    { "rebase", cmd_rebase, "change the backing file of an overlay" },
    { "resize", cmd_resize, "change the virtual size of an image" },
    { "run", cmd_run, "run a job file's steps in parallel, with a report" },
    { "sparsify", cmd_sparsify, "deallocate the all-zero parts of an image" },
    { "step", cmd_step, "run one step of a job alone (a cluster job)" },
    { "validate", cmd_validate, "check a job file without running it" },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fputs("usage: diskforge [--version] [--help] <command> [<args>]\n"
          "\n"
          "Commands:\n", out);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        fprintf(out, "   %-10s %s\n", commands[i].name, commands[i].help);
    }
    fputs("\n"
          "'diskforge <command> --help' describes a command.\n"
          "Exit status: 0 success, 1 the operation failed, 2 bad usage.\n",
          out);
}

static const struct cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const struct cli_command *cmd;
    const char *name = argc > 1 ? argv[1] : NULL;

    if (!name) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
        printf("diskforge %s\n", DF_CLI_VERSION);
        return CLI_OK;
    }
    if (!strcmp(name, "help")) {
        /* `diskforge help CMD` is `diskforge CMD --help` */
        char *help_argv[] = { argc > 2 ? argv[2] : NULL, "--help", NULL };
        if (argc <= 2) {
            usage(stdout);
            return CLI_OK;
        }
        cmd = find_command(argv[2]);
        if (cmd) {
            return cmd->fn(2, help_argv);
        }
        name = argv[2];
    } else {
        cmd = find_command(name);
        if (cmd) {
            return cmd->fn(argc - 1, argv + 1);
        }
    }
    if (name[0] == '-') {
        cli_error("unknown option '%s'", name);
    } else {
        cli_error("'%s' is not a diskforge command", name);
    }
    fputs("See 'diskforge --help'.\n", stderr);
    return CLI_USAGE;
}
