/* make bench-ab BASE=<git revision>: ebm.h now against ebm.h at BASE, in one
   process. The machine's speed moves by tens of percent within minutes
   (other tenants), so two separate runs can differ more than the change
   being measured; here each repetition runs base and new back to back (in
   alternating order), and the figure is the median of the per-repetition
   ratios new/base, with its quartiles. One line per case:
     ab <case> base_ms=.. new_ms=.. ratio=.. q1=.. q3=..
   (ratio < 1: the new code is faster). Usage: ab [reps] [case-substring] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void base_setup(int c); void base_run(void); void base_teardown(void); double base_time_sec(void);
void new_setup(int c); void new_run(void); void new_teardown(void);

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void one(const char *name, int c, int reps)
{
    double *tb = (double *)malloc(3 * (size_t)reps * sizeof *tb), *tn = tb + reps, *r = tn + reps;
    int i;
    if (!tb) { fprintf(stderr, "ab: out of memory\n"); exit(1); }
    base_setup(c); new_setup(c);
    base_run(); new_run(); /* warm: first-touch pages, thread pool */
    for (i = 0; i < reps; i++) {
        double t0;
        if (i % 2) {
            t0 = base_time_sec(); new_run(); tn[i] = base_time_sec() - t0;
            t0 = base_time_sec(); base_run(); tb[i] = base_time_sec() - t0;
        } else {
            t0 = base_time_sec(); base_run(); tb[i] = base_time_sec() - t0;
            t0 = base_time_sec(); new_run(); tn[i] = base_time_sec() - t0;
        }
        r[i] = tn[i] / tb[i];
    }
    qsort(tb, (size_t)reps, sizeof *tb, cmp); qsort(tn, (size_t)reps, sizeof *tn, cmp); qsort(r, (size_t)reps, sizeof *r, cmp);
    printf("ab %s base_ms=%.3f new_ms=%.3f ratio=%.3f q1=%.3f q3=%.3f\n", name, tb[reps / 2] * 1e3, tn[reps / 2] * 1e3,
           r[reps / 2], r[reps / 4], r[3 * reps / 4]);
    fflush(stdout);
    base_teardown(); new_teardown();
    free(tb);
}

int main(int argc, char **argv)
{
    static const struct { const char *name; int c; } cases[] = {
        { "net28_nf16", 16 }, { "net28_nf16_b16", 116 }, { "net28_nf32", 32 }, { "net28_nf64", 64 }, { "gen28", 0 }, { "train_nf32", 1 },
        { "net28_nf32_silu", 232 },
        { "net28_nf32_L0_fwd", 1000 }, { "net28_nf32_L0_bwd_data", 1001 }, { "net28_nf32_L0_bwd_weight", 1002 },
        { "net28_nf32_L2_fwd", 1020 }, { "net28_nf32_L2_bwd_data", 1021 }, { "net28_nf32_L2_bwd_weight", 1022 },
        { "net28_nf32_L4_fwd", 1040 }, { "net28_nf32_L4_bwd_data", 1041 }, { "net28_nf32_L4_bwd_weight", 1042 },
        { "net28_nf32_L6_fwd", 1060 }, { "net28_nf32_L6_bwd_data", 1061 }, { "net28_nf32_L6_bwd_weight", 1062 },
        { "net28_nf16_L0_fwd", 2000 }, { "net28_nf16_L0_bwd_data", 2001 }, { "net28_nf16_L0_bwd_weight", 2002 },
        { "net28_nf16_L2_fwd", 2020 }, { "net28_nf16_L2_bwd_data", 2021 }, { "net28_nf16_L2_bwd_weight", 2022 },
        { "net28_nf16_L4_fwd", 2040 }, { "net28_nf16_L4_bwd_data", 2041 }, { "net28_nf16_L4_bwd_weight", 2042 },
        { "gen28_L0_fwd", 3001 }, { "gen28_L0_bwd_data", 3000 }, { "gen28_L0_bwd_weight", 3002 },
        { "gen28_L2_fwd", 3021 }, { "gen28_L2_bwd_data", 3020 }, { "gen28_L2_bwd_weight", 3022 },
        { "gen28_L4_fwd", 3041 }, { "gen28_L4_bwd_data", 3040 }, { "gen28_L4_bwd_weight", 3042 },
        { "net28_nf64_L2_fwd", 4020 }, { "net28_nf64_L2_bwd_data", 4021 }, { "net28_nf64_L2_bwd_weight", 4022 },
        { "net32c3_nf32_L2_fwd", 5020 }, { "net32c3_nf32_L2_bwd_data", 5021 }, { "net32c3_nf32_L2_bwd_weight", 5022 },
    };
    const int reps = argc > 1 ? atoi(argv[1]) : 30;
    const char *only = argc > 2 ? argv[2] : "";
    size_t i;
    if (reps < 4) { fprintf(stderr, "usage: ab [reps >= 4] [case-substring]\n"); return 2; }
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strstr(cases[i].name, only)) one(cases[i].name, cases[i].c, reps);
    return 0;
}
