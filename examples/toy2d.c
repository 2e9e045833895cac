/* toy2d: train an energy-based model on built-in 2-D data and measure it
   exactly: log Z is integrated on a grid, so the test NLL of 10,000 held-out
   points is exact and can be set beside the true density's (ALGORITHMS.md 7).
   f is an MLP 2 -> 128 -> 128 -> 1 (SiLU); p(x) = exp(f(x)) / Z on the data box.
   Recipes (--recipe):
     convergent  maximum likelihood; persistent chains (a replay buffer of
                 8192, 30 % restarted from uniform noise) advanced by K = 20
                 Metropolis-adjusted STANLEY steps of eps 0.7 (exact for this
                 target; the box is a wall): MALA whose per-coordinate step
                 shrinks where |grad f| exceeds --th 2, which keeps proposals
                 acceptable on the steep flanks of sharp modes where isotropic
                 MALA stalls (--th 0: isotropic MALA). The restarts reach
                 what settled chains no longer visit, such as the disc inside
                 the innermost ring: with 5 % that disc kept its mass in some
                 seeds' runs, with 15 % in one seed of five
     shortrun    maximum likelihood; every iteration fresh uniform noise,
                 K = 40 unadjusted Langevin steps reflected at the box - the
                 chain is the generator, and the energy learns whatever makes
                 it work (a different object)
     stanley     the convergent recipe with unadjusted STANLEY steps (global
                 step eta = eps^2, threshold --th) reflected at the box, or
                 with --mala 1 MH-corrected STANLEY steps (a wall)
     dsm, ssm, ssm-vr, fd-ssm, nce
                 the MCMC-free objectives (ALGORITHMS.md 5): denoising score
                 matching at --sigma (its model is the data smoothed by
                 N(0, sigma^2), so its NLL is also set beside that density's),
                 sliced score matching (exact Hessian-vector products; the
                 variance-reduced form; finite differences; Rademacher
                 projections by default), noise-contrastive estimation
                 against a Gaussian fitted to the data
   Adam, lr 1e-2 (shortrun 1e-3) decayed to 0 by a cosine over the run,
   batch 256. With --seconds the run's length is set by timing its first 20
   iterations, and set again after 200 and every 500.
   Writes toy2d_<data>_<recipe>.png: data, the learned density exp(f)/Z, and
   samples from fresh chains (the ML recipes: started as the recipe starts
   them; the others: 500 MALA steps from uniform noise, which sample exp(f)/Z).
   The last line is a key=value summary. */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include "flags.h"
#include <math.h>

#define NTEST 10000
#define RES 128   /* image panels */
#define GRID 256  /* log Z grid; 512 to check it converged */

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

enum { R_CONVERGENT, R_SHORTRUN, R_STANLEY, R_DSM, R_SSM, R_SSM_VR, R_FD_SSM, R_NCE, R_COUNT };
static const char *const recipe_names[R_COUNT] = { "convergent", "shortrun", "stanley", "dsm", "ssm", "ssm-vr", "fd-ssm", "nce" };

int main(int argc, char **argv)
{
    const char *data_name = "8gaussians", *recipe_name = "convergent", *out = NULL, *npy = NULL, *proj = "rademacher";
    int iters = 0, seed = 1, K = 0, n_samples = 4096, threads = 0, n_sigmas = 1, set, recipe, ml, chains_mala, i, mala = -1, rc = 0;
    long t;
    float eps = 0, lr = 0, reg = 0, reinit = 0.3f, th = -1.0f, sigma = 0.1f, sigma_max = 1.0f, fd_eps = 0.1f, seconds = 0;
    const flag flags[] = {
        { "data", "8gaussians | rings | checkerboard | moons (default 8gaussians)", 's', &data_name, F_ANY },
        { "recipe", "convergent | shortrun | stanley | dsm | ssm | ssm-vr | fd-ssm | nce (default convergent)", 's', &recipe_name, F_ANY },
        { "iters", "iterations (default 3000; with --seconds, from the timing probe)", 'i', &iters, F_POS },
        { "seconds", "training budget in seconds: sets --iters from a timing probe", 'f', &seconds, F_NONNEG },
        { "seed", "seed of every random number (default 1)", 'i', &seed, F_ANY },
        { "k", "chain steps per iteration (default 20, shortrun 40)", 'i', &K, F_POS },
        { "eps", "Langevin step (default 0.7, shortrun 0.3, stanley 0.3; stanley's eta = eps^2)", 'f', &eps, F_POS },
        { "th", "STANLEY's threshold on |grad f| (default 2, stanley 1; convergent: 0 = isotropic MALA)", 'f', &th, F_NONNEG },
        { "mala", "1: Metropolis-adjusted chains, 0: unadjusted (default: 1 for convergent only)", 'i', &mala, F_UNIT },
        { "lr", "Adam learning rate (default 1e-2, shortrun 1e-3)", 'f', &lr, F_POS },
        { "reg", "energy regulariser alpha (ML)", 'f', &reg, F_NONNEG },
        { "reinit", "persistent chains' restart probability (default 0.3)", 'f', &reinit, F_UNIT },
        { "sigma", "DSM: noise (the smallest level; default 0.1)", 'f', &sigma, F_POS },
        { "sigmas", "DSM: noise levels (default 1)", 'i', &n_sigmas, F_POS },
        { "sigma-max", "DSM: largest level (default 1)", 'f', &sigma_max, F_POS },
        { "proj", "SSM, SSM-VR, FD-SSM: rademacher | gaussian projections (default rademacher)", 's', &proj, F_ANY },
        { "fd-eps", "FD-SSM: finite-difference step (default 0.1)", 'f', &fd_eps, F_POS },
        { "samples", "fresh chains in the picture (default 4096)", 'i', &n_samples, F_POS },
        { "threads", "OpenMP threads (default 0: OpenMP's, OMP_NUM_THREADS or every core)", 'i', &threads, F_NONNEG },
        { "out", "picture (default toy2d_<data>_<recipe>.png)", 's', &out, F_ANY },
        { "density-npy", "also write the learned density exp(f)/Z on the picture's 128x128 grid", 's', &npy, F_ANY },
    };
    static const char *const proj_names[] = { "gaussian", "rademacher" };
    const char *toy_names[EBM_TOY_COUNT];
    char out_default[128];
    ebm_model m;
    ebm_trainer tr;
    ebm_train_config c;
    ebm_error err;
    ebm_rng r_data, r_test;
    float lo, hi, xpos[2 * 256], *test, *samples;
    double true_nll = 0, smooth_nll = 0, nll = 0, nll_fine = 0, log_z = 0, train_sec, t0;
    int pj;
    if (parse_flags(argv[0], argc, argv, flags, (int)(sizeof flags / sizeof flags[0])) != 0) return 2;
    for (set = 0; set < EBM_TOY_COUNT; set++) toy_names[set] = ebm_toy_name(set);
    if ((set = lookup("data set", data_name, toy_names, EBM_TOY_COUNT)) < 0 || (recipe = lookup("recipe", recipe_name, recipe_names, R_COUNT)) < 0 ||
        (pj = lookup("projection", proj, proj_names, 2)) < 0)
        return 2;
    ml = recipe <= R_STANLEY;
    chains_mala = mala >= 0 && ml && recipe != R_SHORTRUN ? mala != 0 : recipe == R_CONVERGENT;
    if (!iters) iters = seconds > 0 ? 1000000000 : 3000;
    if (!K) K = recipe == R_SHORTRUN ? 40 : 20;
    if (!(eps > 0)) eps = recipe == R_CONVERGENT ? 0.7f : 0.3f;
    if (!(lr > 0)) lr = recipe == R_SHORTRUN ? 1e-3f : 1e-2f;
    if (th < 0) th = recipe == R_CONVERGENT ? 2.0f : 1.0f;
    if (iters < 1 || K < 1 || !(th > 0 || (th == 0 && recipe == R_CONVERGENT)) || n_samples < 1 || seconds < 0) {
        fprintf(stderr, "error: --iters, --k, --th and --samples must be positive (--th 0 allowed for convergent), --seconds >= 0\n");
        return 2;
    }
    if (threads > 0) ebm_set_threads(threads);
    snprintf(out_default, sizeof out_default, "toy2d_%s_%s.png", data_name, recipe_name);
    if (!out) out = out_default;
    ebm_toy_box(set, &lo, &hi);
    if (ebm_model_mlp_prior(&m, 2, 128, EBM_ACT_SILU, 0.0f, (uint64_t)seed) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); return 1; }
    ebm_train_config_default(&c);
    c.batch = 256;
    c.objective = recipe == R_DSM ? EBM_OBJ_DSM : recipe == R_SSM ? EBM_OBJ_SSM : recipe == R_SSM_VR ? EBM_OBJ_SSM_VR :
                  recipe == R_FD_SSM ? EBM_OBJ_FD_SSM : recipe == R_NCE ? EBM_OBJ_NCE : EBM_OBJ_ML;
    c.start = recipe == R_SHORTRUN ? EBM_START_UNIFORM : EBM_START_PERSISTENT;
    c.buffer_size = 8192; c.reinit = reinit; c.energy_reg = reg;
    c.mala = chains_mala;
    c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = eps; c.chain.n_steps = K;
    c.chain.box = chains_mala ? EBM_BOX_CLAMP : EBM_BOX_REFLECT; /* MALA: a wall (proposals outside rejected) */
    c.chain.lo = lo; c.chain.hi = hi;
    if (recipe == R_STANLEY || recipe == R_CONVERGENT) c.chain.aniso_th = th; /* 0: isotropic */
    c.sigma = sigma; c.n_sigmas = n_sigmas; c.sigma_max = sigma_max; c.proj = pj; c.fd_eps = fd_eps;
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
    for (i = 0; i < NTEST; i++) {
        true_nll -= ebm_toy_logpdf(set, test[2 * i], test[2 * i + 1]) / NTEST;
        if (recipe == R_DSM) smooth_nll -= ebm_toy_logpdf_smoothed(set, sigma, test[2 * i], test[2 * i + 1]) / NTEST;
    }
    if (recipe == R_NCE) { /* the noise: a Gaussian fitted to 10,000 training points */
        float *fit = (float *)malloc(2 * NTEST * sizeof *fit);
        if (!fit) { fprintf(stderr, "error: out of memory\n"); return 1; }
        ebm_toy_sample(set, &r_data, (uint64_t)1 << 40, fit, NTEST); /* indices training never reaches */
        ebm_trainer_fit_noise(&tr, fit, NTEST);
        printf("nce noise: N((%.3f, %.3f), diag(%.3f, %.3f)^2)\n", (double)tr.noise_mu[0], (double)tr.noise_mu[1], (double)tr.noise_sd[0], (double)tr.noise_sd[1]);
        free(fit);
    }
    {
        const char *on = ebm_objective_name(c.objective);
        printf("toy2d: %s, recipe %s (objective %s): MLP 2-128-128-1 (SiLU), %lu parameters, batch %d, Adam lr %g cosine\n",
               data_name, recipe_name, on ? on : "?", (unsigned long)m.n_params, c.batch, (double)lr);
    }
    if (ml) {
        if (recipe == R_SHORTRUN) printf("chains: fresh uniform starts");
        else printf("chains: persistent buffer 8192 (%.0f %% restarts)", 100.0 * reinit);
        printf(", K = %d, eps = %.2f, %s%s", K, (double)eps,
               chains_mala ? "Metropolis-adjusted" : "unadjusted, reflected", c.chain.aniso_th > 0 ? " STANLEY steps" : "");
        if (c.chain.aniso_th > 0) printf(" (th %g)", (double)th);
        printf("\n");
    }
    printf("true density: test NLL %.4f nats; uniform on the box: %.4f\n", true_nll, 2 * log((double)(hi - lo)));
    if (recipe == R_DSM) printf("the data smoothed by N(0, %g^2): test NLL %.4f (what DSM learns)\n", (double)sigma, smooth_nll);
    fflush(stdout);
    t0 = ebm_time_sec();
    for (t = 0; t < iters; t++) {
        ebm_toy_sample(set, &r_data, (uint64_t)t * 256, xpos, 256);
        if (ebm_trainer_step(&tr, xpos) != EBM_OK) {
            fprintf(stderr, "error: %s\n", tr.err.msg);
            printf("toy2d data=%s recipe=%s status=%s iters=%ld\n", data_name, recipe_name, ebm_status_name(tr.err.status), t);
            return 3;
        }
        if (seconds > 0 && t + 1 < iters && ebm_time_sec() - t0 > seconds) iters = (int)t + 1; /* the budget is spent: stop here */
        if (seconds > 0 && (t + 1 == 20 || t + 1 == 200 || (t + 1) % 500 == 0)) {
            /* the timing probe, refined twice: the schedule ends when the budget does */
            double el = ebm_time_sec() - t0, per = el / (double)(t + 1);
            iters = (int)(t + 1) + (int)((seconds - el) / per);
            if (iters < t + 2) iters = (int)t + 2;
            tr.cfg.total_iters = iters;
        }
        if ((t + 1) % 500 == 0 || t + 1 == iters) {
            double el = ebm_time_sec() - t0, t1 = ebm_time_sec();
            ebm_model_nll2d(&m, tr.graph, lo, hi, GRID, test, NTEST, &nll, NULL);
            t0 += ebm_time_sec() - t1; /* the measurement is not training time */
            if (ml)
                printf("iter %5ld  d_t %+8.4f  r_t %7.3f  %s %.3f  test NLL %.4f  (true %.4f)  %.1f s\n", t + 1, tr.d_t, tr.r_t,
                       chains_mala ? "accept" : "lr", chains_mala ? tr.accept : tr.lr, nll, true_nll, el);
            else
                printf("iter %5ld  loss %+9.4f  |grad f| %7.3f  test NLL %.4f  (true %.4f)  %.1f s\n", t + 1, tr.loss, tr.r_t, nll, true_nll, el);
            fflush(stdout);
        }
    }
    train_sec = ebm_time_sec() - t0;
    ebm_model_nll2d(&m, tr.graph, lo, hi, 2 * GRID, test, NTEST, &nll_fine, &log_z);
    if (recipe == R_NCE) printf("nce: learned log-normaliser c = %.4f, log Z on the grid = %.4f\n", (double)tr.nce_c, log_z);
    /* the picture: data | exp(f)/Z | samples from fresh chains */
    {
        const int W = 3 * RES + 8;
        unsigned char *img = (unsigned char *)calloc((size_t)W * RES * 3, 1);
        float pts[2 * RES], *dens = (float *)malloc((size_t)RES * RES * sizeof *dens);
        double fmax = -1e300, zsum = 0, *f = (double *)malloc((size_t)RES * RES * sizeof *f);
        int y, x, s4[4] = { RES, 1, 1, 2 };
        ebm_langevin lc = c.chain;
        ebm_rng rs;
        if (!img || !dens || !f) { fprintf(stderr, "error: out of memory\n"); return 1; }
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
        for (i = 0; i < RES * RES; i++) zsum += exp(f[i] - fmax);
        for (i = 0; i < RES * RES; i++) dens[i] = (float)(exp(f[i] - fmax) / zsum * (RES * RES) / ((hi - lo) * (hi - lo)));
        if (npy) {
            int shape[2] = { RES, RES };
            if (ebm_npy_save(npy, dens, 2, shape, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
        }
        /* fresh chains from uniform noise: the ML recipes their own way
           (convergent: 500 MALA steps, meant to reach the model; short-run:
           its own K steps; stanley: 500 of its steps); the others 500 MALA
           steps, which sample exp(f)/Z on the box */
        rs.seed = (uint64_t)seed; rs.stream = EBM_STREAM_USER + 5;
        ebm_chain_start(EBM_START_UNIFORM, &rs, 0, 0, lo, hi, samples, n_samples, 2);
        lc.n_steps = recipe == R_SHORTRUN ? K : 500;
        if (!ml) { lc.eps = 0.5f; lc.box = EBM_BOX_CLAMP; }
        for (i = 0; i < n_samples; i += 256) {
            int nb = n_samples - i < 256 ? n_samples - i : 256;
            if (chains_mala || !ml) ebm_mala_run(&m, tr.graph, &lc, &rs, (uint64_t)i, samples + 2 * i, nb, NULL, NULL);
            else ebm_langevin_run(&m, tr.graph, &lc, &rs, (uint64_t)i, samples + 2 * i, nb, NULL);
        }
        hist_panel(img, 2, samples, n_samples, lo, hi);
        if (ebm_png_save(out, img, W, RES, 3, "toy2d: data | learned density | fresh-chain samples", &err) != EBM_OK) {
            fprintf(stderr, "error: %s\n", err.msg);
            rc = 1;
        } else printf("wrote %s (data | learned density exp(f)/Z | %d samples of fresh chains)\n", out, n_samples);
        free(img); free(f); free(dens);
    }
    printf("grid check: NLL %.4f with a %dx%d grid, %.4f with %dx%d (difference %.4f)\n", nll, GRID, GRID, nll_fine, 2 * GRID, 2 * GRID, fabs(nll - nll_fine));
    printf("toy2d data=%s recipe=%s nll=%.4f true_nll=%.4f gap=%.4f", data_name, recipe_name, nll_fine, true_nll, nll_fine - true_nll);
    if (recipe == R_DSM) printf(" smoothed_nll=%.4f smoothed_gap=%.4f", smooth_nll, nll_fine - smooth_nll);
    printf(" iters=%ld seconds=%.1f status=%s\n", t, train_sec, rc == 0 ? "ok" : "error");
    free(test); free(samples);
    ebm_trainer_free(&tr);
    ebm_model_free(&m);
    return rc;
}
