/* latent_ebm: a latent-space EBM prior with a top-down generator (Pang et
   al. 2020; ALGORITHMS.md section 6) trained on Fashion-MNIST, MNIST
   (ebm_model_generator28) or CIFAR-10 (ebm_model_generator32): the prior
   chain in z (K 60, s 0.4), the posterior chain given each image
   (K 20, s 0.1, sigma 0.3), Adam on both models (prior 2e-5, generator
   1e-4, beta1 0.5). With --holdout C, class C is left out of training and
   serves as the anomalies of the anomaly test. Run with --help for the flags.

   Files in --out DIR: ckpt.bin (everything to resume), log.csv and
   curves.png (d_t and the reconstruction error), grid_<iter>.png and
   grid_final.png (prior chain, then the generator), recon.png (test images
   and their reconstructions through the posterior chain, row by row; with
   --holdout, anomaly.png: the held-out class's and the others'),
   samples.npy (N, C, H, W) float32 in [-1, 1]. The last line is
   latent_ebm data= iters= seconds= mse= recon_mse_test= holdout= auroc= status= */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h> /* isatty */
#include <sys/stat.h>
#include "flags.h"
#include "images.h"

static int save_grid(ebm_latent *L, const char *dir, const char *tag, float *x, int n, int h, int w, int c)
{
    char path[1100], label[160];
    ebm_error err;
    if (ebm_latent_sample(L, 0, x, n, NULL) != EBM_OK) { fprintf(stderr, "error: %s\n", L->err.msg); return -1; }
    snprintf(label, sizeof label, "latent ebm: prior chain k=%d s=%g, then g; iter %ld", L->cfg.prior_steps, (double)L->cfg.prior_step, L->iter);
    snprintf(path, sizeof path, "%s/grid_%s.png", dir, tag);
    if (ebm_png_save_grid(path, x, n, h, w, c, 8, label, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return -1; }
    return 0;
}

/* The test images of the data set: t10k-* or test_batch.bin. */
static int load_test(int ds_i, const char *data_dir, ebm_dataset *test, ebm_error *err)
{
    if (ds_i == 2) {
        char p[1100];
        const char *pp = p;
        snprintf(p, sizeof p, "%s/test_batch.bin", data_dir);
        return ebm_cifar10_load(test, &pp, 1, err);
    }
    return ebm_mnist_load(test, data_dir, 1, err);
}

/* Keep the images whose label is not `holdout` (all when holdout < 0). */
static int drop_class(ebm_dataset *ds, int holdout)
{
    size_t D = (size_t)ds->h * ds->w * ds->c;
    int i, k = 0;
    if (holdout < 0) return 0;
    if (!ds->labels) { fprintf(stderr, "error: --holdout needs labels\n"); return -1; }
    for (i = 0; i < ds->n; i++)
        if (ds->labels[i] != holdout) {
            memmove(ds->pixels + (size_t)k * D, ds->pixels + (size_t)i * D, D);
            ds->labels[k++] = ds->labels[i];
        }
    if (k == ds->n) { fprintf(stderr, "error: --holdout %d: no image has that label\n", holdout); return -1; }
    ds->n = k;
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const datasets[] = { "fashion", "mnist", "cifar10" };
    static const char *const acts[] = { "lrelu", "silu", "softplus", "elu", "gelu", "tanh" };
    const char *data = "fashion", *data_dir = NULL, *out = "run_latent", *act = "lrelu";
    float act_param = 0.2f;
    int nz = 100, hidden = 200, ngf = 32, resume = 0, seed = 1, n_samples = 64, threads = 0, holdout = -1, n_test = 2000;
    int ds_i, ac, rc = 0, d, tty = isatty(2);
    long iters = 0;
    float minutes = 0, save_minutes = 2;
    ebm_latent_config c;
    ebm_model prior, gen;
    ebm_latent L;
    ebm_dataset ds, test;
    ebm_error err;
    ebm_rng rdata;
    float *xb, *xs;
    size_t D;
    double t0, last_save, last_print = 0, it0, recon_mse = -1, auroc = -1;
    char path[1100];
    FILE *log;
    ebm_latent_config_default(&c);
    {
        flag f[] = {
            { "data", "fashion | mnist | cifar10 (default fashion)", 's', &data, F_ANY },
            { "data-dir", "directory of the data files (default: Debian's for fashion)", 's', &data_dir, F_ANY },
            { "out", "directory for checkpoints, grids, log, samples (default run_latent)", 's', &out, F_ANY },
            { "minutes", "time budget in minutes (0: none)", 'f', &minutes, F_NONNEG },
            { "iters", "stop after this many iterations in total (0: none)", 'l', &iters, F_NONNEG },
            { "resume", "continue from OUT/ckpt.bin (its settings win)", 'b', &resume, F_ANY },
            { "seed", "keys every random number (default 1)", 'i', &seed, F_ANY },
            { "threads", "OpenMP threads (default 0: OpenMP's, OMP_NUM_THREADS or every core)", 'i', &threads, F_NONNEG },
            { "nz", "latent dimension (default 100)", 'i', &nz, F_POS },
            { "hidden", "width of the prior MLP nz -> h -> h -> 1 (default 200)", 'i', &hidden, F_POS },
            { "prior-act", "the prior MLP's activation: lrelu | silu | softplus | elu | gelu | tanh (default lrelu)", 's', &act, F_ANY },
            { "prior-act-param", "LeakyReLU slope / ELU alpha (default 0.2)", 'f', &act_param, F_ANY },
            { "ngf", "generator width: nz -> 2ngf x 7x7 -> ngf x 14x14 -> 28x28 (32x32: 4ngf x 4x4 -> 2ngf x 8x8 -> ngf x 16x16 -> 32x32) (default 32)", 'i', &ngf, F_POS },
            { "batch", "batch size (default 64)", 'i', &c.batch, F_POS },
            { "prior-k", "prior chain steps (default 60)", 'i', &c.prior_steps, F_NONNEG },
            { "prior-step", "prior chain step s (default 0.4)", 'f', &c.prior_step, F_POS },
            { "post-k", "posterior chain steps (default 20)", 'i', &c.post_steps, F_NONNEG },
            { "post-step", "posterior chain step s (default 0.1)", 'f', &c.post_step, F_POS },
            { "sigma", "std of x given z (default 0.3)", 'f', &c.sigma, F_POS },
            { "lr-prior", "Adam learning rate of the prior (default 2e-5)", 'f', &c.lr_prior, F_POS },
            { "lr-gen", "Adam learning rate of the generator (default 1e-4)", 'f', &c.lr_gen, F_POS },
            { "beta1", "Adam beta1 of both (default 0.5)", 'f', &c.beta1, F_UNIT },
            { "holdout", "leave this class out of training; the anomaly test's anomalies (default: none)", 'i', &holdout, F_NONNEG },
            { "test-images", "test images reconstructed for the error and the anomaly test (default 2000)", 'i', &n_test, F_NONNEG },
            { "samples", "samples written to samples.npy at the end (default 64)", 'i', &n_samples, F_POS },
            { "save-minutes", "minutes between checkpoints and grids (default 2; 0: every iteration)", 'f', &save_minutes, F_NONNEG },
        };
        if (parse_flags("latent_ebm", argc, argv, f, (int)(sizeof f / sizeof f[0])) != 0) return 2;
        if ((ds_i = lookup("data set", data, datasets, 3)) < 0 || (ac = lookup("activation", act, acts, 6)) < 0) return 2;
        if (minutes <= 0 && iters <= 0) { fprintf(stderr, "error: give --minutes or --iters\n"); return 2; }
        if (n_samples < 1 || n_test < 0) { fprintf(stderr, "error: --samples must be >= 1, --test-images >= 0\n"); return 2; }
        c.seed = (uint64_t)seed;
        if (threads > 0) ebm_set_threads(threads);
    }
    if ((rc = load_images(ds_i, data_dir, &ds)) != 0) return rc;
    if (drop_class(&ds, holdout) != 0) return 2;
    mkdir(out, 0777);
    snprintf(path, sizeof path, "%s/ckpt.bin", out);
    if (resume) {
        int oh, ow, oc;
        if (ebm_latent_load(&L, &prior, &gen, path, &err) != EBM_OK) { fprintf(stderr, "error: cannot resume: %s\n", err.msg); return 1; }
        ebm_model_out_shape(&gen, &oh, &ow, &oc);
        if (oh != ds.h || ow != ds.w || oc != ds.c) { fprintf(stderr, "error: the checkpoint's generator makes other images\n"); return 1; }
        printf("resumed %s at iteration %ld (its settings replace the flags)\n", path, L.iter);
    } else {
        if (ebm_model_mlp_prior(&prior, nz, hidden, ac, act_param, (uint64_t)seed) != EBM_OK) { fprintf(stderr, "error: prior: %s\n", prior.err.msg); return 2; }
        if ((ds.h == 32 ? ebm_model_generator32(&gen, nz, ngf, ds.c, (uint64_t)seed + 1) : ebm_model_generator28(&gen, nz, ngf, ds.c, (uint64_t)seed + 1)) != EBM_OK) { fprintf(stderr, "error: generator: %s\n", gen.err.msg); return 2; }
        if (ebm_latent_init(&L, &prior, &gen, &c, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 2; }
    }
    c = L.cfg;
    D = (size_t)ds.h * ds.w * ds.c;
    xb = (float *)malloc((size_t)c.batch * D * sizeof *xb);
    xs = (float *)malloc((size_t)(n_samples > 64 ? n_samples : 64) * D * sizeof *xs);
    if (!xb || !xs) { fprintf(stderr, "error: out of memory\n"); return 1; }
    rdata.seed = c.seed; rdata.stream = EBM_STREAM_USER;
    printf("prior:\n"); ebm_model_print(&prior, stdout);
    printf("generator:\n"); ebm_model_print(&gen, stdout);
    printf("data %s: %d training images%s; batch %d; prior chain K %d s %g; posterior chain K %d s %g, sigma %g; Adam %g / %g, beta1 %g; %d threads, %s\n",
           data, ds.n, holdout >= 0 ? " (one class held out)" : "", c.batch, c.prior_steps, (double)c.prior_step, c.post_steps, (double)c.post_step,
           (double)c.sigma, (double)c.lr_prior, (double)c.lr_gen, (double)c.beta1, ebm_threads(), ebm_isa());
    snprintf(path, sizeof path, "%s/log.csv", out);
    log = fopen(path, resume ? "a" : "w");
    if (!log) { fprintf(stderr, "error: cannot write %s\n", path); return 1; }
    /* columns 4 and 5 are what curves.png plots */
    if (!resume) fprintf(log, "iter,seconds,lr,d_t,mse,f_pos,f_neg\n");
    t0 = last_save = ebm_time_sec();
    it0 = (double)L.iter;
    for (;;) {
        double now = ebm_time_sec();
        if ((iters > 0 && L.iter >= iters) || (minutes > 0 && now - t0 >= minutes * 60.0)) break;
        ebm_dataset_batch(&ds, &rdata, (uint64_t)L.iter * (uint64_t)c.batch, c.batch, xb, NULL);
        if ((d = ebm_latent_step(&L, xb)) != EBM_OK) { fprintf(stderr, "\nerror: %s\n", L.err.msg); rc = d == EBM_EDIVERGED ? 3 : 1; break; }
        now = ebm_time_sec();
        fprintf(log, "%ld,%.2f,%.4g,%.6g,%.6g,%.6g,%.6g\n", L.iter, now - t0, (double)c.lr_gen, L.d_t, L.mse, L.f_pos, L.f_neg);
        if (now - last_print >= (tty ? 1.0 : 30.0)) {
            double rate = (L.iter - it0) / (now - t0), left = minutes > 0 ? minutes * 60.0 - (now - t0) : -1;
            if (iters > 0 && rate > 0 && (left < 0 || (iters - L.iter) / rate < left)) left = (iters - L.iter) / rate;
            fprintf(tty ? stderr : stdout, "%siter %6ld  %.2f it/s  ETA %5.0f s  d_t %+9.4f  mse %.5f%s", tty ? "\r" : "", L.iter, rate, left, L.d_t, L.mse,
                    tty ? "  " : "\n");
            fflush(tty ? stderr : stdout);
            last_print = now;
        }
        if (now - last_save >= save_minutes * 60.0) {
            char tag[32];
            snprintf(path, sizeof path, "%s/ckpt.bin", out);
            if (ebm_latent_save(&L, path, &err) != EBM_OK) fprintf(stderr, "warning: %s\n", err.msg);
            snprintf(tag, sizeof tag, "%06ld", L.iter);
            save_grid(&L, out, tag, xs, 64, ds.h, ds.w, ds.c);
            fflush(log);
            last_save = ebm_time_sec();
        }
    }
    if (tty) fprintf(stderr, "\n");
    fclose(log);
    plot_log(out, "d_t", "mse");
    if (rc == 0) {
        float *nchw = (float *)malloc((size_t)n_samples * D * sizeof *nchw);
        int shape[4];
        snprintf(path, sizeof path, "%s/ckpt.bin", out);
        if (ebm_latent_save(&L, path, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
        save_grid(&L, out, "final", xs, 64, ds.h, ds.w, ds.c);
        if (nchw && ebm_latent_sample(&L, 0, xs, n_samples, NULL) == EBM_OK) { /* (N, C, H, W), float32 in [-1, 1] */
            ebm_nhwc_to_nchw(xs, nchw, n_samples, ds.c, ds.h, ds.w);
            shape[0] = n_samples; shape[1] = ds.c; shape[2] = ds.h; shape[3] = ds.w;
            snprintf(path, sizeof path, "%s/samples.npy", out);
            if (ebm_npy_save(path, nchw, 4, shape, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
        } else { fprintf(stderr, "error: samples: %s\n", nchw ? L.err.msg : "out of memory"); rc = 1; }
        free(nchw);
        /* reconstruction of test images through the posterior chain; with a
           held-out class, its images' error against the others' (AUROC) */
        if (n_test > 0 && load_test(ds_i, data_dir, &test, &err) == EBM_OK) {
            int n = n_test < test.n ? n_test : test.n, i, n_anom = 0, n_norm = 0;
            float *xt = (float *)malloc((size_t)n * D * sizeof *xt), *xr = (float *)malloc((size_t)n * D * sizeof *xr);
            float *sc_norm = (float *)malloc((size_t)n * sizeof(float)), *sc_anom = (float *)malloc((size_t)n * sizeof(float));
            if (xt && xr && sc_norm && sc_anom) {
                double sum = 0;
                ebm_dataset_get(&test, 0, n, xt);
                if (ebm_latent_reconstruct(&L, 0, xt, xr, n) == EBM_OK) {
                    for (i = 0; i < n; i++) {
                        double e = 0;
                        size_t j;
                        for (j = 0; j < D; j++) e += (xt[(size_t)i * D + j] - xr[(size_t)i * D + j]) * (double)(xt[(size_t)i * D + j] - xr[(size_t)i * D + j]);
                        e /= (double)D;
                        if (holdout >= 0 && test.labels && test.labels[i] == holdout) sc_anom[n_anom++] = (float)e;
                        else { sc_norm[n_norm++] = (float)e; sum += e; }
                    }
                    recon_mse = n_norm ? sum / n_norm : -1;
                    if (holdout >= 0) auroc = ebm_auroc(sc_norm, n_norm, sc_anom, n_anom);
                    if (holdout >= 0 && test.labels) { /* 16 held-out images, then 16 others, each row of 8 above its reconstructions */
                        float *panel = (float *)malloc(64 * D * sizeof *panel);
                        int got[2] = { 0, 0 }, kind;
                        if (panel) {
                            for (i = 0; i < n && (got[0] < 16 || got[1] < 16); i++) {
                                kind = test.labels[i] == holdout ? 0 : 1;
                                if (got[kind] < 16) {
                                    int slot = 32 * kind + 16 * (got[kind] / 8) + got[kind] % 8;
                                    memcpy(panel + (size_t)slot * D, xt + (size_t)i * D, D * sizeof *panel);
                                    memcpy(panel + (size_t)(slot + 8) * D, xr + (size_t)i * D, D * sizeof *panel);
                                    got[kind]++;
                                }
                            }
                            snprintf(path, sizeof path, "%s/anomaly.png", out);
                            if (got[0] == 16 && got[1] == 16 &&
                                ebm_png_save_grid(path, panel, 64, ds.h, ds.w, ds.c, 8, "held-out class (rows 1-4) and others (5-8): images, reconstructions", &err) != EBM_OK)
                                { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
                            free(panel);
                        }
                    }
                    { /* 32 test images (rows of 8) each above its reconstruction */
                        float *panel = (float *)malloc(64 * D * sizeof *panel);
                        int r;
                        if (panel && n >= 32) {
                            for (r = 0; r < 4; r++) {
                                memcpy(panel + (size_t)(16 * r) * D, xt + (size_t)(8 * r) * D, 8 * D * sizeof *panel);
                                memcpy(panel + (size_t)(16 * r + 8) * D, xr + (size_t)(8 * r) * D, 8 * D * sizeof *panel);
                            }
                            snprintf(path, sizeof path, "%s/recon.png", out);
                            if (ebm_png_save_grid(path, panel, 64, ds.h, ds.w, ds.c, 8, "test images (odd rows) and their reconstructions (even rows)", &err) != EBM_OK)
                                { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
                        }
                        free(panel);
                    }
                } else { fprintf(stderr, "error: reconstruction: %s\n", L.err.msg); rc = 1; }
            } else { fprintf(stderr, "error: out of memory for %d test images\n", n); rc = 1; }
            free(xt); free(xr); free(sc_norm); free(sc_anom);
            ebm_dataset_free(&test);
        } else if (n_test > 0) fprintf(stderr, "warning: no test set for the reconstruction error (%s)\n", err.msg);
    }
    printf("latent_ebm data=%s iters=%ld seconds=%.1f mse=%.5f recon_mse_test=%.5f holdout=%d auroc=%.4f status=%s\n", data, L.iter, ebm_time_sec() - t0, L.mse,
           recon_mse, holdout, auroc, rc == 0 ? "ok" : rc == 3 ? "diverged" : "error");
    free(xb); free(xs);
    ebm_latent_free(&L);
    ebm_model_free(&prior);
    ebm_model_free(&gen);
    ebm_dataset_free(&ds);
    return rc;
}
