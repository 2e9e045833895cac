/* toy2d: train an energy-based model on built-in 2-D data by maximum
   likelihood with Langevin MCMC, and measure it exactly.
   f is an MLP 2 -> 128 -> 128 -> 1 (SiLU); p(x) = exp(f(x)) / Z on the data
   box. Each iteration: a batch of data x+; a batch of persistent chains x-
   (a buffer of 8192, each drawn chain restarted from uniform noise with
   probability --reinit) advanced by K steps of MALA (exact for this target;
   the box is a wall) or of unadjusted Langevin (reflected at the box); the
   loss mean f(x-) - mean f(x+) by Adam. Every 250 iterations, the exact NLL
   of held-out points (log Z integrated on a grid), next to the true density's.
   Usage: toy2d [--data 8gaussians|rings|checkerboard] [--iters N] [--seed S]
                [--sampler mala|langevin] [--k K] [--eps E] [--lr LR] [--reinit P] */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdlib.h>
#include <string.h>

#define NBUF 8192
#define BATCH 256
#define NTEST 4096

static const char *arg_str(int argc, char **argv, const char *name, const char *def)
{
    int i;
    for (i = 1; i + 1 < argc; i++) if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

int main(int argc, char **argv)
{
    const char *data_name = arg_str(argc, argv, "--data", "8gaussians");
    const int iters = atoi(arg_str(argc, argv, "--iters", "1500")), seed = atoi(arg_str(argc, argv, "--seed", "1"));
    const int K = atoi(arg_str(argc, argv, "--k", "20"));
    const float eps = (float)atof(arg_str(argc, argv, "--eps", "0.5")), lr = (float)atof(arg_str(argc, argv, "--lr", "1e-3"));
    const float reinit = (float)atof(arg_str(argc, argv, "--reinit", "0.05"));
    const int mala = strcmp(arg_str(argc, argv, "--sampler", "mala"), "mala") == 0;
    int set, t, i, k, s4[4] = { BATCH, 1, 1, 2 };
    ebm_model m;
    ebm_graph *g;
    ebm_error err;
    ebm_langevin cfg;
    ebm_rng r_data, r_test, r_noise, r_init;
    size_t b1, b2, b3, bytes;
    float lo, hi, *buf, xpos[2 * BATCH], xneg[2 * BATCH], wpos[BATCH], wneg[BATCH], *test;
    double true_nll = 0, nll = 0, acc = 0, t0 = ebm_time_sec();
    for (i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--data 8gaussians|rings|checkerboard] [--iters N] [--seed S] [--sampler mala|langevin] [--k K] [--eps E] [--lr LR] [--reinit P]\n", argv[0]);
            return 0;
        }
    for (set = 0; set < EBM_TOY_COUNT; set++) if (strcmp(data_name, ebm_toy_name(set)) == 0) break;
    if (set == EBM_TOY_COUNT || iters < 1 || K < 1 || !(eps > 0) || !(lr > 0)) { fprintf(stderr, "error: unknown data set '%s', or --iters, --k, --eps or --lr not positive\n", data_name); return 2; }
    ebm_toy_box(set, &lo, &hi);
    if (ebm_model_mlp_prior(&m, 2, 128, EBM_ACT_SILU, 0.0f, (uint64_t)seed) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); return 1; }
    ebm_model_step_bytes(&m, BATCH, EBM_STEP_INPUT_GRAD, &b1, &err);
    ebm_model_step_bytes(&m, BATCH, EBM_STEP_PARAM_GRAD, &b2, &err);
    ebm_model_step_bytes(&m, 256, EBM_STEP_FORWARD, &b3, &err);
    bytes = b1 > b2 ? b1 : b2;
    bytes = bytes > b3 ? bytes : b3;
    if (ebm_graph_create(&g, bytes, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    buf = (float *)malloc(2 * NBUF * sizeof *buf);
    test = (float *)malloc(2 * NTEST * sizeof *test);
    if (!buf || !test) { fprintf(stderr, "error: out of memory\n"); return 1; }
    r_data.seed = (uint64_t)seed; r_data.stream = EBM_STREAM_USER;
    r_test.seed = 0x7e57; r_test.stream = EBM_STREAM_USER;      /* held out: a seed training never uses */
    r_noise.seed = (uint64_t)seed; r_noise.stream = EBM_STREAM_USER + 1;
    r_init.seed = (uint64_t)seed; r_init.stream = EBM_STREAM_USER + 2;
    for (i = 0; i < NBUF; i++) ebm_rng_uniform(&r_init, (uint64_t)i, 0, lo, hi, buf + 2 * i, 2);
    ebm_toy_sample(set, &r_test, 0, test, NTEST);
    for (i = 0; i < NTEST; i++) true_nll -= ebm_toy_logpdf(set, test[2 * i], test[2 * i + 1]) / NTEST;
    for (i = 0; i < BATCH; i++) { wneg[i] = 1.0f / BATCH; wpos[i] = -1.0f / BATCH; }
    ebm_langevin_default(&cfg);
    cfg.form = EBM_LANGEVIN_EPS; cfg.eps = eps; cfg.box = EBM_BOX_REFLECT; cfg.lo = lo; cfg.hi = hi; cfg.n_steps = K;
    printf("toy2d: %s, MLP 2-128-128-1 (SiLU), %lu parameters, batch %d, %s K = %d, eps = %.2f, persistent buffer %d\n",
           data_name, (unsigned long)m.n_params, BATCH, mala ? "MALA" : "Langevin", cfg.n_steps, (double)cfg.eps, NBUF);
    printf("true density: test NLL %.4f nats\n", true_nll);
    for (t = 0; t < iters; t++) {
        double rt = 0, fpos = 0, fneg = 0;
        ebm_var *y;
        uint64_t first = (uint64_t)t * BATCH;
        ebm_toy_sample(set, &r_data, first, xpos, BATCH);
        for (i = 0; i < BATCH; i++) {
            size_t slot = (size_t)((first + (uint64_t)i) % NBUF);
            float u;
            ebm_rng_uniform(&r_init, first + (uint64_t)i, 1, 0.0f, 1.0f, &u, 1);
            if (u < reinit) ebm_rng_uniform(&r_init, first + (uint64_t)i, 2, lo, hi, xneg + 2 * i, 2);
            else memcpy(xneg + 2 * i, buf + 2 * slot, 2 * sizeof(float));
        }
        cfg.first_step = 0;
        if ((mala ? ebm_mala_run(&m, g, &cfg, &r_noise, first, xneg, BATCH, &acc)
                  : ebm_langevin_run(&m, g, &cfg, &r_noise, first, xneg, BATCH, &rt)) != EBM_OK) {
            fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg);
            return 1;
        }
        for (i = 0; i < BATCH; i++) memcpy(buf + 2 * (size_t)((first + (uint64_t)i) % NBUF), xneg + 2 * i, 2 * sizeof(float));
        /* the loss mean f(x-) - mean f(x+): backward on the samples, then on the data */
        ebm_model_zero_grad(&m);
        for (k = 0; k < 2; k++) {
            int ws[4] = { BATCH, 1, 1, 1 };
            ebm_graph_reset(g);
            y = ebm_model_forward(&m, g, ebm_leaf(g, k ? xpos : xneg, 4, s4));
            ebm_model_backward(&m, g, ebm_dot(g, y, ebm_leaf(g, k ? wpos : wneg, 4, ws)));
            if (ebm_graph_status(g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); return 1; }
            for (i = 0; i < BATCH; i++) *(k ? &fpos : &fneg) += y->data[i] / BATCH;
        }
        if (ebm_adam_step(&m, lr, 0.9f, 0.999f, 1e-8f, t + 1) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); return 2; }
        if ((t + 1) % 250 == 0 || t + 1 == iters) {
            ebm_model_nll2d(&m, g, lo, hi, 128, test, NTEST, &nll, NULL);
            if (mala) printf("iter %5d  d_t %+8.4f  accept %.3f  test NLL %.4f  (true %.4f)  %.1f s\n", t + 1, fpos - fneg, acc, nll,
                             true_nll, ebm_time_sec() - t0);
            else printf("iter %5d  d_t %+8.4f  r_t %7.3f  test NLL %.4f  (true %.4f)  %.1f s\n", t + 1, fpos - fneg, rt, nll, true_nll,
                        ebm_time_sec() - t0);
            fflush(stdout);
        }
    }
    printf("data=%s\niters=%d\nnll=%.4f\ntrue_nll=%.4f\nnll_gap=%.4f\nuniform_nll=%.4f\nseconds=%.1f\n", data_name, iters, nll, true_nll,
           nll - true_nll, 2 * log((double)(hi - lo)), ebm_time_sec() - t0);
    free(buf); free(test);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
    return 0;
}
