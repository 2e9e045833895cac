/* hello_energy: the first thing to run with ebm.h.
   Builds the 28x28 reference ConvNet energy of ALGORITHMS.md (conv3x3 ->
   3 x conv4x4 stride 2 -> conv3x3, LeakyReLU 0.2), prints its layer table,
   parameter count and the memory a step needs, then the energies f(x) and
   input-gradient norms |grad_x f(x)| of a batch of uniform noise images — the
   quantities a Langevin step uses.
   Usage: hello_energy [--nf N] [--batch B] [--seed S] [--threads T] */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include "flags.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>

int main(int argc, char **argv)
{
    int nf = 32, batch = 8, seed = 1, threads = 0, i, k;
    const flag fl[] = {
        { "nf", "the net's width n_f (default 32)", 'i', &nf, F_POS },
        { "batch", "noise images (default 8)", 'i', &batch, F_POS },
        { "seed", "seed of the weights and the noise (default 1)", 'i', &seed, F_ANY },
        { "threads", "OpenMP threads (default 0: OpenMP's, OMP_NUM_THREADS or every core)", 'i', &threads, F_NONNEG },
    };
    const int D = 28 * 28;
    ebm_model m;
    ebm_graph *g;
    ebm_error err;
    ebm_rng noise;
    size_t step_bytes[5];
    float *x, *f, *dx;
    double t0, ms, noise_ms, emean = 0, gmean = 0;
    static const char *const kinds[5] = { "forward", "langevin_step", "train_step", "second_order_step", "third_order_step" };

    if (parse_flags(argv[0], argc, argv, fl, (int)(sizeof fl / sizeof fl[0])) != 0) return 2;
    if (threads > 0) ebm_set_threads(threads);

    if (ebm_model_convnet(&m, 1, 28, nf, EBM_ACT_LEAKY_RELU, 0.2f, (uint64_t)seed) != EBM_OK) {
        fprintf(stderr, "error: %s\n", m.err.msg);
        return 1;
    }
    printf("28x28 reference ConvNet energy, n_f = %d\n", nf);
    ebm_model_print(&m, stdout);
    for (k = 0; k < 5; k++)
        if (ebm_model_step_bytes(&m, batch, k, &step_bytes[k], &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    printf("graph arena needed for a batch of %d:\n", batch);
    for (k = 0; k < 5; k++) printf("  %-18s %8.2f MiB\n", kinds[k], step_bytes[k] / 1048576.0);

    /* One arena sized for the biggest of the first-order steps, reused every step. */
    if (ebm_graph_create(&g, step_bytes[EBM_STEP_INPUT_GRAD], &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    x = (float *)malloc((size_t)batch * D * sizeof *x);
    dx = (float *)malloc((size_t)batch * D * sizeof *dx);
    f = (float *)malloc((size_t)batch * sizeof *f);
    if (!x || !dx || !f) { fprintf(stderr, "error: out of memory\n"); return 1; }
    noise.seed = (uint64_t)seed; noise.stream = EBM_STREAM_USER;
    for (i = 0; i < batch; i++) ebm_rng_uniform(&noise, (uint64_t)i, 0, -1.0f, 1.0f, x + (size_t)i * D, (size_t)D);

    /* f(x) and grad_x f(x): a Langevin step's work, timed as the median of 5. */
    {
        double times[5], tmp;
        int a, b;
        for (k = 0; k < 5; k++) {
            t0 = ebm_time_sec();
            if (ebm_model_score(&m, g, x, batch, f, dx) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); return 1; }
            times[k] = (ebm_time_sec() - t0) * 1e3;
        }
        for (a = 0; a < 5; a++) for (b = a + 1; b < 5; b++) if (times[b] < times[a]) { tmp = times[a]; times[a] = times[b]; times[b] = tmp; }
        ms = times[2];
    }
    /* The Langevin noise for the same batch (one N(0,1) per pixel), timed the same way. */
    {
        double times[5], tmp;
        int a, b;
        for (k = 0; k < 5; k++) {
            t0 = ebm_time_sec();
            for (i = 0; i < batch; i++) ebm_rng_normal(&noise, (uint64_t)i, (uint32_t)(k + 1), dx + (size_t)i * D, (size_t)D);
            times[k] = (ebm_time_sec() - t0) * 1e3;
        }
        for (a = 0; a < 5; a++) for (b = a + 1; b < 5; b++) if (times[b] < times[a]) { tmp = times[a]; times[a] = times[b]; times[b] = tmp; }
        noise_ms = times[2];
        ebm_model_score(&m, g, x, batch, f, dx); /* dx again holds the gradients */
    }
    printf("\n%-6s %12s %14s\n", "image", "f(x)", "|grad_x f|");
    for (i = 0; i < batch; i++) {
        double nrm = 0;
        int j;
        for (j = 0; j < D; j++) nrm += (double)dx[(size_t)i * D + j] * dx[(size_t)i * D + j];
        nrm = sqrt(nrm);
        printf("%-6d %12.6f %14.6f\n", i, (double)f[i], nrm);
        emean += f[i] / batch;
        gmean += nrm / batch;
    }
    printf("\nparams=%lu\nmodel_bytes=%lu\nlangevin_step_bytes=%lu\ntrain_step_bytes=%lu\n", (unsigned long)m.n_params,
           (unsigned long)ebm_model_bytes(&m), (unsigned long)step_bytes[EBM_STEP_INPUT_GRAD], (unsigned long)step_bytes[EBM_STEP_PARAM_GRAD]);
    printf("energy_mean=%.6f\ngrad_norm_mean=%.6f\nlangevin_step_ms=%.3f\n", emean, gmean, ms);
    printf("noise_ms=%.3f\nnoise_fraction=%.4f\nthreads=%d\n", noise_ms, noise_ms / ms, ebm_threads());
    free(x); free(dx); free(f);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
    return 0;
}
