/* Command-line flags for the examples: a table of --name value pairs, each
   with its help line, parsed into the variables it points to. */
#ifndef EBM_EXAMPLE_FLAGS_H
#define EBM_EXAMPLE_FLAGS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* type: 'b' a switch (no value), 'i' int, 'l' long, 'f' float, 's' string */
typedef struct { const char *name, *help; char type; void *p; } flag;

static void usage(const char *program, const flag *f, int nf)
{
    int i;
    printf("usage: %s [flags]\n", program);
    for (i = 0; i < nf; i++) printf("  --%-14s %s\n", f[i].name, f[i].help);
}

/* 0, or -1 after a message on an unknown flag or a missing value; --help
   prints the table and exits. */
static int parse_flags(const char *program, int argc, char **argv, const flag *f, int nf)
{
    int i, j;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(program, f, nf); exit(0); }
        for (j = 0; j < nf; j++)
            if (!strncmp(argv[i], "--", 2) && !strcmp(argv[i] + 2, f[j].name)) break;
        if (j == nf) { fprintf(stderr, "error: unknown flag %s (see --help)\n", argv[i]); return -1; }
        if (f[j].type == 'b') { *(int *)f[j].p = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", argv[i]); return -1; }
        i++;
        if (f[j].type == 'i') *(int *)f[j].p = atoi(argv[i]);
        else if (f[j].type == 'l') *(long *)f[j].p = atol(argv[i]);
        else if (f[j].type == 'f') *(float *)f[j].p = (float)atof(argv[i]);
        else *(const char **)f[j].p = argv[i];
    }
    return 0;
}

/* The index of v in names, or -1 after a message. */
static int lookup(const char *what, const char *v, const char *const *names, int n)
{
    int i;
    for (i = 0; i < n; i++) if (!strcmp(v, names[i])) return i;
    fprintf(stderr, "error: unknown %s '%s'\n", what, v);
    return -1;
}
#endif
