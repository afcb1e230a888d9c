/* SPDX-License-Identifier: MIT */
/*
 * fuzz_replay.c - run saved fuzz inputs through LLVMFuzzerTestOneInput()
 * without libFuzzer, so that the ordinary (and the sanitizer) test suite
 * replays the corpus with any compiler.
 *
 *   fuzz_replay FILE...
 *
 * Prints one line per file and exits 0 when every file ran to the end;
 * a crash or a sanitizer report ends the process with a failure of its
 * own, naming nothing, so the line printed before each input says which
 * one it was.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *name)
{
    FILE *f = fopen(name, "rb");
    unsigned char *data = NULL;
    size_t len = 0, cap = 0;

    if (!f) {
        perror(name);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            unsigned char *p = realloc(data, cap ? cap * 2 : 1 << 16);
            if (!p) {
                fprintf(stderr, "%s: out of memory\n", name);
                free(data);
                fclose(f);
                return -1;
            }
            data = p;
            cap = cap ? cap * 2 : 1 << 16;
        }
        size_t n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        perror(name);
        free(data);
        fclose(f);
        return -1;
    }
    fclose(f);
    printf("%s (%zu bytes)\n", name, len);
    fflush(stdout);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int failed = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: fuzz_replay FILE...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        failed |= run_file(argv[i]) < 0;
    }
    printf("%d input%s replayed\n", argc - 1, argc == 2 ? "" : "s");
    return failed;
}
