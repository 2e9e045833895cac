/* toy2d: train an energy-based model on built-in 2-D data by maximum
   likelihood with Langevin MCMC (the library's trainer), and measure it
   exactly: log Z is integrated on a grid, so the test NLL of 10,000 held-out
   points is exact and can be set beside the true density's (ALGORITHMS.md 7).
   f is an MLP 2 -> 128 -> 128 -> 1 (SiLU); p(x) = exp(f(x)) / Z on the data box.
   Recipes:
     convergent  persistent chains (a replay buffer of 8192, 5 % restarted from
                 uniform noise) advanced by K = 20 MALA steps (exact for this
                 target; the box is a wall) - the chains sample the model
     shortrun    every iteration fresh uniform noise, K = 40 unadjusted Langevin
                 steps reflected at the box - the chain is the generator, and
                 the energy learns whatever makes it work (a different object)
   Adam, lr 1e-3 decayed to 0 by a cosine over the run, batch 256.
   Writes toy2d_<data>_<recipe>.png: data, the learned density exp(f)/Z, and
   samples from fresh chains started as the recipe starts them.
   Usage: toy2d [--data 8gaussians|rings|checkerboard] [--recipe convergent|shortrun]
                [--iters N] [--seed S] [--k K] [--eps E] [--lr LR] [--reg A] [--reinit P] [--samples N] [--out FILE.png] */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define NTEST 10000
#define RES 128   /* image panels */
#define GRID 256  /* log Z grid; 512 to check it converged */

static const char *arg_str(int argc, char **argv, const char *name, const char *def)
{
    int i;
    for (i = 1; i + 1 < argc; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

/* a dark-to-bright colour ramp for densities */
static void ramp(double v, unsigned char *rgb)
{
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    rgb[0] = (unsigned char)(255 * sqrt(v));
    rgb[1] = (unsigned char)(255 * v * v);
    rgb[2] = (unsigned char)(255 * (v < 0.5 ? 0.6 * v : 0.3 * (1 - v)));
}

/* A histogram of points as panel p (of 3) of the image, scaled to its maximum. */
static void hist_panel(unsigned char *img, int p, const float *xy, int n, float lo, float hi)
{
    static double h[RES * RES];
    double mx = 0;
    int i;
    memset(h, 0, sizeof h);
    for (i = 0; i < n; i++) {
        int cx = (int)((xy[2 * i] - lo) / (hi - lo) * RES), cy = (int)((hi - xy[2 * i + 1]) / (hi - lo) * RES);
        if (cx >= 0 && cx < RES && cy >= 0 && cy < RES) h[cy * RES + cx] += 1;
    }
    for (i = 0; i < RES * RES; i++) if (h[i] > mx) mx = h[i];
    for (i = 0; i < RES * RES; i++) ramp(mx > 0 ? h[i] / mx : 0, img + 3 * ((size_t)(i / RES) * (3 * RES + 8) + p * (RES + 4) + i % RES));
}

int main(int argc, char **argv)
{
    const char *data_name = arg_str(argc, argv, "--data", "8gaussians"), *recipe = arg_str(argc, argv, "--recipe", "convergent");
    const int convergent = strcmp(recipe, "convergent") == 0;
    const int iters = atoi(arg_str(argc, argv, "--iters", "3000")), seed = atoi(arg_str(argc, argv, "--seed", "1"));
    const int K = atoi(arg_str(argc, argv, "--k", convergent ? "20" : "40"));
    const float eps = (float)atof(arg_str(argc, argv, "--eps", convergent ? "0.5" : "0.3")), lr = (float)atof(arg_str(argc, argv, "--lr", convergent ? "1e-2" : "1e-3"));
    const float reg = (float)atof(arg_str(argc, argv, "--reg", "0")), reinit = (float)atof(arg_str(argc, argv, "--reinit", "0.05"));
    const int n_samples = atoi(arg_str(argc, argv, "--samples", "4096")); /* fresh chains in the picture */
    char out_default[128];
    const char *out;
    int set, t, i;
    ebm_model m;
    ebm_trainer tr;
    ebm_train_config c;
    ebm_error err;
    ebm_rng r_data, r_test;
    float lo, hi, xpos[2 * 256], *test, *samples;
    double true_nll = 0, nll = 0, nll_fine = 0, train_sec, t0;
    for (i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--data 8gaussians|rings|checkerboard] [--recipe convergent|shortrun] [--iters N] [--seed S] [--k K] [--eps E] [--lr LR] [--reg A] [--reinit P] [--samples N] [--out FILE.png]\n", argv[0]);
            return 0;
        }
    for (set = 0; set < EBM_TOY_COUNT; set++) if (strcmp(data_name, ebm_toy_name(set)) == 0) break;
    if (set == EBM_TOY_COUNT || (!convergent && strcmp(recipe, "shortrun") != 0) || iters < 1 || K < 1 || !(eps > 0) || !(lr > 0) || n_samples < 1) {
        fprintf(stderr, "error: unknown data set '%s' or recipe '%s', or --iters, --k, --eps, --lr or --samples not positive\n", data_name, recipe);
        return 2;
    }
    snprintf(out_default, sizeof out_default, "toy2d_%s_%s.png", data_name, recipe);
    out = arg_str(argc, argv, "--out", out_default);
    ebm_toy_box(set, &lo, &hi);
    if (ebm_model_mlp_prior(&m, 2, 128, EBM_ACT_SILU, 0.0f, (uint64_t)seed) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); return 1; }
    ebm_train_config_default(&c);
    c.batch = 256;
    c.start = convergent ? EBM_START_PERSISTENT : EBM_START_UNIFORM;
    c.buffer_size = 8192; c.reinit = reinit; c.energy_reg = reg;
    c.mala = convergent;
    c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = eps; c.chain.n_steps = K;
    c.chain.box = convergent ? EBM_BOX_CLAMP : EBM_BOX_REFLECT; /* MALA: a wall (proposals outside rejected) */
    c.chain.lo = lo; c.chain.hi = hi;
    c.data_noise = 0;
    c.lr = lr; c.schedule = EBM_LR_COSINE; c.total_iters = iters;
    c.max_abs_dt = 1e4f;
    c.seed = (uint64_t)seed;
    if (ebm_trainer_init(&tr, &m, &c, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    test = (float *)malloc(2 * NTEST * sizeof *test);
    samples = (float *)malloc(2 * (size_t)n_samples * sizeof *samples);
    if (!test || !samples) { fprintf(stderr, "error: out of memory\n"); return 1; }
    r_data.seed = (uint64_t)seed; r_data.stream = EBM_STREAM_USER;
    r_test.seed = 0x7e57; r_test.stream = EBM_STREAM_USER; /* held out: a seed training never uses */
    ebm_toy_sample(set, &r_test, 0, test, NTEST);
    for (i = 0; i < NTEST; i++) true_nll -= ebm_toy_logpdf(set, test[2 * i], test[2 * i + 1]) / NTEST;
    printf("toy2d: %s, recipe %s: MLP 2-128-128-1 (SiLU), %lu parameters, batch %d, %s K = %d, eps = %.2f, %s, Adam lr %g cosine over %d\n",
           data_name, recipe, (unsigned long)m.n_params, c.batch, convergent ? "MALA" : "Langevin", K, (double)eps,
           convergent ? "persistent buffer 8192 (5 % restarts)" : "fresh uniform starts", (double)lr, iters);
    printf("true density: test NLL %.4f nats; uniform on the box: %.4f\n", true_nll, 2 * log((double)(hi - lo)));
    t0 = ebm_time_sec();
    for (t = 0; t < iters; t++) {
        ebm_toy_sample(set, &r_data, (uint64_t)t * 256, xpos, 256);
        if (ebm_trainer_step(&tr, xpos) != EBM_OK) { fprintf(stderr, "error: %s\n", tr.err.msg); return 3; }
        if ((t + 1) % 500 == 0 || t + 1 == iters) {
            double el = ebm_time_sec() - t0, t1 = ebm_time_sec();
            ebm_model_nll2d(&m, tr.graph, lo, hi, GRID, test, NTEST, &nll, NULL);
            t0 += ebm_time_sec() - t1; /* the measurement is not training time */
            printf("iter %5d  d_t %+8.4f  r_t %7.3f  %s %.3f  test NLL %.4f  (true %.4f)  %.1f s\n", t + 1, tr.d_t, tr.r_t,
                   convergent ? "accept" : "lr", convergent ? tr.accept : tr.lr, nll, true_nll, el);
            fflush(stdout);
        }
    }
    train_sec = ebm_time_sec() - t0;
    ebm_model_nll2d(&m, tr.graph, lo, hi, 2 * GRID, test, NTEST, &nll_fine, NULL);
    /* the picture: data | exp(f)/Z | samples from fresh chains */
    {
        const int W = 3 * RES + 8;
        unsigned char *img = (unsigned char *)calloc((size_t)W * RES * 3, 1);
        float pts[2 * RES];
        double fmax = -1e300, *f = (double *)malloc((size_t)RES * RES * sizeof *f);
        int y, x, s4[4] = { RES, 1, 1, 2 };
        ebm_langevin lc = c.chain;
        ebm_rng rs;
        memset(img, 255, (size_t)W * RES * 3);
        hist_panel(img, 0, test, NTEST, lo, hi);
        for (y = 0; y < RES; y++) {
            ebm_var *e;
            for (x = 0; x < RES; x++) { pts[2 * x] = lo + (x + 0.5f) * (hi - lo) / RES; pts[2 * x + 1] = hi - (y + 0.5f) * (hi - lo) / RES; }
            ebm_graph_reset(tr.graph);
            e = ebm_model_forward(&m, tr.graph, ebm_leaf(tr.graph, pts, 4, s4));
            for (x = 0; x < RES && e; x++) { f[y * RES + x] = e->data[x]; if (e->data[x] > fmax) fmax = e->data[x]; }
        }
        for (i = 0; i < RES * RES; i++) ramp(exp(f[i] - fmax), img + 3 * ((size_t)(i / RES) * W + RES + 4 + i % RES));
        /* fresh chains: uniform noise; convergent recipe: 500 MALA steps (its
           chains are meant to reach the model); short-run: its own K steps */
        rs.seed = (uint64_t)seed; rs.stream = EBM_STREAM_USER + 5;
        ebm_chain_start(EBM_START_UNIFORM, &rs, 0, 0, lo, hi, samples, n_samples, 2);
        lc.n_steps = convergent ? 500 : K;
        for (i = 0; i < n_samples; i += 256) {
            int nb = n_samples - i < 256 ? n_samples - i : 256;
            if (convergent) ebm_mala_run(&m, tr.graph, &lc, &rs, (uint64_t)i, samples + 2 * i, nb, NULL, NULL);
            else ebm_langevin_run(&m, tr.graph, &lc, &rs, (uint64_t)i, samples + 2 * i, nb, NULL);
        }
        hist_panel(img, 2, samples, n_samples, lo, hi);
        if (ebm_png_save(out, img, W, RES, 3, "toy2d: data | learned density | fresh-chain samples", &err) != EBM_OK) fprintf(stderr, "warning: %s\n", err.msg);
        else printf("wrote %s (data | learned density exp(f)/Z | %d samples of fresh chains, %s)\n", out, n_samples, convergent ? "500 MALA steps" : "the recipe's K steps");
        free(img); free(f);
    }
    printf("grid check: NLL %.4f with a %dx%d grid, %.4f with %dx%d (difference %.4f)\n", nll, GRID, GRID, nll_fine, 2 * GRID, 2 * GRID, fabs(nll - nll_fine));
    printf("toy2d data=%s recipe=%s nll=%.4f true_nll=%.4f gap=%.4f seconds=%.1f\n", data_name, recipe, nll_fine, true_nll, nll_fine - true_nll, train_sec);
    free(test); free(samples);
    ebm_trainer_free(&tr);
    ebm_model_free(&m);
    return 0;
}
