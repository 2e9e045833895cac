/* Command-line flags for the examples: a table of --name value pairs, each
   with its help line, parsed into the variables it points to. */
#ifndef EBM_EXAMPLE_FLAGS_H
#define EBM_EXAMPLE_FLAGS_H
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* type: 'b' a switch (no value), 'i' int, 'l' long, 'f' float, 's' string.
   range: the values a number given on the command line may take (a flag
   not given keeps its variable's initial value, which may be a sentinel
   such as 0 or -1 for "the default"): F_ANY, F_POS (> 0), F_NONNEG (>= 0),
   F_UNIT (from 0 to 1; an int: 0 or 1). Switches and strings take F_ANY. */
enum { F_ANY, F_POS, F_NONNEG, F_UNIT };
typedef struct { const char *name, *help; char type; void *p; int range; } flag;

/* The flag's range in words ("" for F_ANY). */
static const char *range_text(const flag *f)
{
    static const char *const ranges[] = { "", "> 0", ">= 0", "from 0 to 1" };
    return (f->type == 'i' || f->type == 'l') && f->range == F_UNIT ? "0 or 1" : ranges[f->range];
}

static void usage(const char *program, const flag *f, int nf)
{
    int i;
    printf("usage: %s [flags]\n", program);
    for (i = 0; i < nf; i++)
        printf("  --%-14s %s%s%s%s\n", f[i].name, f[i].help, f[i].range ? " [" : "", range_text(&f[i]), f[i].range ? "]" : "");
}

/* *v = the whole of s as a number of the flag's type, or -1 after a
   message: "12x", "", "1e9" for an int or "nan" would otherwise be read
   as a number they are not (atoi stops at the first stray character), and
   a number out of the flag's range (a negative learning rate, say) would
   be taken for the default or run as given. */
static int parse_value(const flag *f, const char *s)
{
    const int integer = f->type == 'i' || f->type == 'l';
    const char *range = range_text(f), *sep = !f->range ? "" : integer && f->range == F_UNIT ? ": " : " ";
    char *end;
    double x;
    errno = 0;
    if (integer) {
        const long i = strtol(s, &end, 10);
        if (end == s || *end || errno == ERANGE || (f->type == 'i' && (i < INT_MIN || i > INT_MAX))) {
            fprintf(stderr, "error: --%s wants an integer%s%s, got '%s'\n", f->name, sep, range, s);
            return -1;
        }
        if (f->type == 'i') *(int *)f->p = (int)i;
        else *(long *)f->p = i;
        x = (double)i;
    } else {
        x = strtod(s, &end);
        if (end == s || *end || !isfinite(x) || fabs(x) > FLT_MAX) {
            fprintf(stderr, "error: --%s wants a finite number%s%s, got '%s'\n", f->name, sep, range, s);
            return -1;
        }
        *(float *)f->p = (float)x;
        x = (double)(float)x; /* the range holds for what is stored: 1e-60 is no positive float */
    }
    if ((f->range == F_POS && !(x > 0)) || (f->range == F_NONNEG && !(x >= 0)) || (f->range == F_UNIT && !(x >= 0 && x <= 1))) {
        fprintf(stderr, "error: --%s wants %s%s%s, got '%s'\n", f->name, integer ? "an integer" : "a number", sep, range, s);
        return -1;
    }
    return 0;
}

/* 0, or -1 after a message on an unknown flag, a missing value or one that
   is not a number of the flag's type and range; --help prints the table,
   each number's range with it, and exits. The arguments that are not
   flags (file names, say) go in order to pos[0 .. *n_pos - 1] where pos is
   given (argc entries are enough), and are errors where it is NULL. */
static int parse_flags_pos(const char *program, int argc, char **argv, const flag *f, int nf, const char **pos, int *n_pos)
{
    int i, j;
    if (n_pos) *n_pos = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(program, f, nf); exit(0); }
        if (pos && argv[i][0] != '-') { pos[(*n_pos)++] = argv[i]; continue; }
        for (j = 0; j < nf; j++)
            if (!strncmp(argv[i], "--", 2) && !strcmp(argv[i] + 2, f[j].name)) break;
        if (j == nf) { fprintf(stderr, "error: unknown flag %s (see --help)\n", argv[i]); return -1; }
        if (f[j].type == 'b') { *(int *)f[j].p = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n", argv[i]); return -1; }
        i++;
        if (f[j].type == 's') *(const char **)f[j].p = argv[i];
        else if (parse_value(&f[j], argv[i]) != 0) return -1;
    }
    return 0;
}
/* (parse_flags and lookup are inline so that a program calling neither
   draws no unused-function warning) */
static inline int parse_flags(const char *program, int argc, char **argv, const flag *f, int nf)
{
    return parse_flags_pos(program, argc, argv, f, nf, NULL, NULL);
}

/* The index of v in names, or -1 after a message. */
static inline int lookup(const char *what, const char *v, const char *const *names, int n)
{
    int i;
    for (i = 0; i < n; i++) if (!strcmp(v, names[i])) return i;
    fprintf(stderr, "error: unknown %s '%s'\n", what, v);
    return -1;
}
#endif
