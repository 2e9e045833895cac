/* train_images: maximum-likelihood training of the reference ConvNet energy on
   Fashion-MNIST, MNIST or CIFAR-10 with Langevin chains (ALGORITHMS.md
   sections 1-2; STANLEY's anisotropic steps with --stanley TH), or with an
   MCMC-free objective (--objective dsm | ssm | ssm-vr | fd-ssm | nce,
   section 5; score matching wants a smooth --act such as silu), with a time budget, checkpoints, resume, divergence handling,
   PNG sample grids from fresh chains, a CSV log of d_t and r_t with its plot,
   and samples.npy at the end. Run with --help for the flags.

   Files in --out DIR: ckpt.bin (everything to resume), log.csv, curves.png,
   grid_<iter>.png and grid_final.png (fresh chains, labelled), samples.npy
   (N, C, H, W) float32 in [-1, 1]. */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h> /* isatty, for the progress line */
#include <sys/stat.h>
#include "flags.h"
#include "images.h"

/* --sample-noise: the Langevin noise of fresh chains (grids, samples.npy),
   when it should differ from training's (e.g. annealed DSM sampling);
   -1: training's. */
static float sample_noise = -1;
static int sample(ebm_trainer *t, uint64_t first, const float *x_data, float *x, int n, int k)
{
    float keep = t->cfg.chain.noise;
    int rc;
    if (sample_noise >= 0) t->cfg.chain.noise = sample_noise;
    rc = ebm_trainer_sample(t, first, x_data, x, n, k);
    t->cfg.chain.noise = keep;
    return rc;
}

static int save_grid(ebm_trainer *t, const char *dir, const char *tag, const float *x_data, float *x, int n, int k)
{
    char path[1100], label[200];
    ebm_error err;
    ebm_model *m = t->model;
    const ebm_train_config *c = &t->cfg;
    if (sample(t, 0, x_data, x, n, k) != EBM_OK) { fprintf(stderr, "error: %s\n", t->err.msg); return -1; }
    snprintf(label, sizeof label, "fresh %s start, %s%s k=%d, iter %ld", c->start == EBM_START_PERSISTENT ? ebm_start_name(c->restart) : ebm_start_name(c->start),
             c->mala ? "mala" : "langevin", c->chain.aniso_th > 0 ? " stanley" : "", k, t->iter);
    snprintf(path, sizeof path, "%s/grid_%s.png", dir, tag);
    if (ebm_png_save_grid(path, x, n, m->in_h, m->in_w, m->in_c, 8, label, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return -1; }
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const datasets[] = { "fashion", "mnist", "cifar10" }, *const starts[] = { "uniform", "gaussian", "data", "persistent" };
    static const char *const opts[] = { "adam", "sgd" }, *const scheds[] = { "constant", "cosine", "linear" }, *const boxes[] = { "none", "clamp", "reflect" };
    static const char *const acts[] = { "lrelu", "silu", "softplus", "elu", "gelu", "tanh" }, *const diverge[] = { "stop", "rollback" };
    const char *data = "fashion", *data_dir = NULL, *out = "run", *start = "uniform", *restart = "uniform", *opt = "adam", *sched = "cosine";
    const char *box = "clamp", *act = "lrelu", *on_div = "rollback", *objective = "ml", *proj = "rademacher";
    static const char *const objectives[] = { "ml", "dsm", "ssm", "ssm-vr", "fd-ssm", "nce" }, *const projs[] = { "gaussian", "rademacher" };
    int nf = 16, resume = 0, seed = 1, n_samples = 64, sample_k = 0, threads = 0, mala = 0, rollbacks = 0;
    long iters = 0;
    float minutes = 0, save_minutes = 2, act_param = 0.2f;
    ebm_train_config c;
    ebm_model m;
    ebm_trainer t;
    ebm_dataset ds;
    ebm_error err;
    ebm_rng rdata;
    float *xb, *xs;
    size_t D;
    double t0, last_save, last_print = 0, last_plan = 0, it0;
    int planned = 0; /* the schedule's length came from the timing probe: kept in step with the run's own speed */
    int d, rc = 0, tty = isatty(2), diverged = 0;
    char path[1100];
    FILE *log;
    ebm_train_config_default(&c);
    c.chain.n_steps = 40; c.energy_reg = 0;
    {
        flag f[] = {
            { "data", "fashion | mnist | cifar10 (default fashion)", 's', &data, F_ANY },
            { "data-dir", "directory of the data files (default: Debian's for fashion)", 's', &data_dir, F_ANY },
            { "out", "directory for checkpoints, grids, log, samples (default run)", 's', &out, F_ANY },
            { "minutes", "time budget in minutes (0: none)", 'f', &minutes, F_NONNEG },
            { "iters", "stop after this many iterations in total (0: none)", 'l', &iters, F_NONNEG },
            { "resume", "continue from OUT/ckpt.bin (its settings win)", 'b', &resume, F_ANY },
            { "seed", "keys every random number (default 1)", 'i', &seed, F_ANY },
            { "threads", "OpenMP threads (default 0: OpenMP's, OMP_NUM_THREADS or every core)", 'i', &threads, F_NONNEG },
            { "nf", "ConvNet width n_f (default 16)", 'i', &nf, F_POS },
            { "act", "lrelu | silu | softplus | elu | gelu | tanh (default lrelu)", 's', &act, F_ANY },
            { "act-param", "LeakyReLU slope / ELU alpha (default 0.2)", 'f', &act_param, F_ANY },
            { "batch", "batch size (default 64)", 'i', &c.batch, F_POS },
            { "start", "chain start: uniform | gaussian | data | persistent (default uniform)", 's', &start, F_ANY },
            { "restart", "noise of restarts and fresh chains: uniform | gaussian", 's', &restart, F_ANY },
            { "buffer", "replay buffer size (default 10000)", 'i', &c.buffer_size, F_POS },
            { "reinit", "replay restart probability (default 0.05)", 'f', &c.reinit, F_UNIT },
            { "start-noise", "noise std added to data starts (default 0)", 'f', &c.start_noise, F_NONNEG },
            { "k", "Langevin steps per iteration K (default 40)", 'i', &c.chain.n_steps, F_NONNEG },
            { "step", "Langevin step s (default 1)", 'f', &c.chain.step, F_NONNEG },
            { "noise", "Langevin noise tau (default 0.01)", 'f', &c.chain.noise, F_NONNEG },
            { "box", "none | clamp | reflect (default clamp to [-1, 1])", 's', &box, F_ANY },
            { "mala", "Metropolis-adjusted chains", 'b', &mala, F_ANY },
            { "stanley", "STANLEY's threshold th: anisotropic steps (default 0: isotropic)", 'f', &c.chain.aniso_th, F_NONNEG },
            { "objective", "ml | dsm | ssm | ssm-vr | fd-ssm | nce (default ml)", 's', &objective, F_ANY },
            { "sigma", "DSM: noise, the smallest level (default 0.1)", 'f', &c.sigma, F_POS },
            { "sigmas", "DSM: noise levels (default 1)", 'i', &c.n_sigmas, F_POS },
            { "sigma-max", "DSM: largest level (default 1)", 'f', &c.sigma_max, F_POS },
            { "proj", "SSM, SSM-VR, FD-SSM: rademacher | gaussian (default rademacher)", 's', &proj, F_ANY },
            { "fd-eps", "FD-SSM: finite-difference step (default 0.1)", 'f', &c.fd_eps, F_POS },
            { "data-noise", "noise std added to data (default 0.03)", 'f', &c.data_noise, F_NONNEG },
            { "energy-reg", "alpha of alpha (f+^2 + f-^2) (default 0)", 'f', &c.energy_reg, F_NONNEG },
            { "optimizer", "adam | sgd (default adam)", 's', &opt, F_ANY },
            { "lr", "learning rate (default 1e-4)", 'f', &c.lr, F_POS },
            { "lr-min", "end of the schedule (default 0)", 'f', &c.lr_min, F_NONNEG },
            { "schedule", "constant | cosine | linear over the run (default cosine)", 's', &sched, F_ANY },
            { "warmup", "iterations of warm-up (default 0)", 'l', &c.warmup, F_NONNEG },
            { "total-iters", "schedule length (default: --iters, or planned from --minutes and again every 30 s)", 'l', &c.total_iters, F_POS },
            { "beta1", "Adam beta1 (default 0.9)", 'f', &c.beta1, F_UNIT },
            { "beta2", "Adam beta2 (default 0.999)", 'f', &c.beta2, F_UNIT },
            { "momentum", "SGD momentum (default 0)", 'f', &c.momentum, F_UNIT },
            { "max-dt", "|d_t| that counts as divergence (default 1000)", 'f', &c.max_abs_dt, F_POS },
            { "on-diverge", "stop | rollback (to the last checkpoint at half the lr)", 's', &on_div, F_ANY },
            { "samples", "fresh samples written to samples.npy at the end (default 64)", 'i', &n_samples, F_NONNEG },
            { "sample-k", "Langevin steps of fresh chains (default: K, at least 100 for persistent)", 'i', &sample_k, F_POS },
            { "sample-noise", "Langevin noise of fresh chains (default: training's)", 'f', &sample_noise, F_NONNEG },
            { "save-minutes", "minutes between checkpoints and grids (default 2; 0: every iteration)", 'f', &save_minutes, F_NONNEG },
        };
        int ds_i, st, rs, op, sc, bx, ac, dv, ob, pj;
        if (parse_flags("train_images", argc, argv, f, (int)(sizeof f / sizeof f[0])) != 0) return 2;
        if ((ds_i = lookup("data set", data, datasets, 3)) < 0 || (st = lookup("start", start, starts, 4)) < 0 ||
            (rs = lookup("restart", restart, starts, 2)) < 0 || (op = lookup("optimizer", opt, opts, 2)) < 0 ||
            (sc = lookup("schedule", sched, scheds, 3)) < 0 || (bx = lookup("box", box, boxes, 3)) < 0 ||
            (ac = lookup("activation", act, acts, 6)) < 0 || (dv = lookup("on-diverge", on_div, diverge, 2)) < 0 ||
            (ob = lookup("objective", objective, objectives, 6)) < 0 || (pj = lookup("projection", proj, projs, 2)) < 0)
            return 2;
        c.objective = ob; c.proj = pj;
        if (minutes <= 0 && iters <= 0) { fprintf(stderr, "error: give --minutes or --iters\n"); return 2; }
        c.start = st; c.restart = rs; c.optimizer = op; c.schedule = sc; c.chain.box = bx; c.mala = mala; c.seed = (uint64_t)seed;
        on_div = diverge[dv];
        if (threads > 0) ebm_set_threads(threads);
        if ((rc = load_images(ds_i, data_dir, &ds)) != 0) return rc;
        mkdir(out, 0777);
        snprintf(path, sizeof path, "%s/ckpt.bin", out);
        if (resume) {
            if (ebm_trainer_load(&t, &m, path, &err) != EBM_OK) { fprintf(stderr, "error: cannot resume: %s\n", err.msg); return 1; }
            if (m.in_h != ds.h || m.in_w != ds.w || m.in_c != ds.c) { fprintf(stderr, "error: the checkpoint's model is for other images\n"); return 1; }
            printf("resumed %s at iteration %ld (its settings replace the flags)\n", path, t.iter);
        } else {
            if (ebm_model_convnet(&m, ds.c, ds.h, nf, ac, act_param, (uint64_t)seed) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); return 2; }
            if (c.schedule != EBM_LR_CONSTANT && c.total_iters <= 0) {
                if (iters > 0) c.total_iters = iters;
                else { /* fix the schedule's length from a short timing run, so it is in the checkpoint */
                    ebm_trainer probe;
                    float *xp = (float *)malloc((size_t)c.batch * ds.h * ds.w * ds.c * sizeof(float));
                    float *xg = (float *)malloc((size_t)c.batch * ds.h * ds.w * ds.c * sizeof(float));
                    const int sk = sample_k > 0 ? sample_k : c.start == EBM_START_PERSISTENT && c.chain.n_steps < 100 ? 100 : c.chain.n_steps;
                    double ts, it_s, grid_s, budget;
                    int i;
                    ebm_train_config pc = c;
                    pc.schedule = EBM_LR_CONSTANT;
                    rdata.seed = (uint64_t)seed; rdata.stream = EBM_STREAM_USER;
                    if (!xp || !xg || ebm_trainer_init(&probe, &m, &pc, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
                    ebm_dataset_batch(&ds, &rdata, 0, c.batch, xp, NULL);
                    ebm_trainer_step(&probe, xp); /* warm-up */
                    ts = ebm_time_sec();
                    for (i = 0; i < 3; i++) ebm_trainer_step(&probe, xp);
                    it_s = (ebm_time_sec() - ts) / 3.0;
                    /* the sample grids written every save_minutes take time from the budget too */
                    ts = ebm_time_sec();
                    ebm_trainer_sample(&probe, 0, xp, xg, 64 < c.batch ? 64 : c.batch, sk);
                    grid_s = (ebm_time_sec() - ts) * (64 < c.batch ? 1.0 : 64.0 / c.batch);
                    budget = minutes * 60.0 - (save_minutes > 0 ? floor(minutes / save_minutes) : 0) * grid_s;
                    c.total_iters = (long)(budget / it_s);
                    if (c.total_iters < 1) c.total_iters = 1;
                    ebm_trainer_free(&probe);
                    free(xp); free(xg);
                    ebm_model_free(&m); /* the probe trained it: start again from the seed */
                    ebm_model_convnet(&m, ds.c, ds.h, nf, ac, act_param, (uint64_t)seed);
                    printf("schedule length from a timing probe: %ld iterations for %.1f minutes\n", c.total_iters, (double)minutes);
                    planned = 1;
                }
            }
            if (ebm_trainer_init(&t, &m, &c, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 2; }
            if (c.objective == EBM_OBJ_NCE) { /* the noise: a Gaussian fitted to (up to) 10,000 training images */
                int nfit = ds.n < 10000 ? ds.n : 10000;
                float *xf = (float *)malloc((size_t)nfit * ds.h * ds.w * ds.c * sizeof(float));
                if (!xf) { fprintf(stderr, "error: out of memory\n"); return 1; }
                ebm_dataset_get(&ds, 0, nfit, xf);
                ebm_trainer_fit_noise(&t, xf, nfit);
                free(xf);
            }
        }
    }
    c = t.cfg;
    if (sample_k <= 0) sample_k = c.start == EBM_START_PERSISTENT && c.chain.n_steps < 100 ? 100 : c.chain.n_steps;
    D = (size_t)ds.h * ds.w * ds.c;
    xb = (float *)malloc((size_t)c.batch * D * sizeof *xb);
    xs = (float *)malloc((size_t)(n_samples > 64 ? n_samples : 64) * D * sizeof *xs);
    if (!xb || !xs) { fprintf(stderr, "error: out of memory\n"); return 1; }
    rdata.seed = c.seed; rdata.stream = EBM_STREAM_USER; /* data order: a function of the seed and the iteration */
    ebm_model_print(&m, stdout);
    printf("data %s: %d images %dx%dx%d; objective %s; batch %d, start %s, K %d, step %g, noise %g, %s%s, lr %g (%s to %g over %ld), data noise %g, energy reg %g, %d threads, %s\n",
           data, ds.n, ds.h, ds.w, ds.c, objectives[c.objective], c.batch, ebm_start_name(c.start), c.chain.n_steps, (double)c.chain.step, (double)c.chain.noise,
           c.mala ? "MALA" : "unadjusted", c.chain.aniso_th > 0 ? " STANLEY" : "", (double)c.lr, scheds[c.schedule], (double)c.lr_min, c.total_iters,
           (double)c.data_noise, (double)c.energy_reg, ebm_threads(), ebm_isa());
    snprintf(path, sizeof path, "%s/log.csv", out);
    log = fopen(path, resume ? "a" : "w");
    if (!log) { fprintf(stderr, "error: cannot write %s\n", path); return 1; }
    if (!resume) fprintf(log, "iter,seconds,lr,d_t,r_t,f_pos,f_neg,accept,loss\n");
    t0 = last_save = ebm_time_sec();
    it0 = (double)t.iter;
    for (;;) {
        double now = ebm_time_sec();
        if ((iters > 0 && t.iter >= iters) || (minutes > 0 && now - t0 >= minutes * 60.0)) break;
        if (planned && t.iter > it0 && now - last_plan >= (minutes * 3.0 < 30.0 ? minutes * 3.0 : 30.0)) {
            /* the probe timed a few iterations; a shared machine's speed drifts by 10-30 %. Every 30 s (every
               twentieth of a shorter budget) the schedule is planned again from the run's own rate, sample grids
               included, so that it ends when the budget does: the learning rate moves by a few percent, instead
               of the run going on at lr 0 or stopping with lr above 0. The checkpoint keeps the latest plan. */
            const double per = (now - t0) / ((double)t.iter - it0);
            const long plan = t.iter + (long)((minutes * 60.0 - (now - t0)) / per);
            t.cfg.total_iters = plan > t.iter ? plan : t.iter + 1;
            last_plan = now;
        }
        if (iters == 0 && c.schedule != EBM_LR_CONSTANT && t.iter >= t.cfg.total_iters && ebm_trainer_lr(&t) == 0.0f) {
            /* (a schedule given with --total-iters, or less than an iteration left): at lr 0 the model stays as it is */
            if (minutes * 60.0 - (now - t0) >= 1.0)
                printf("the schedule ended at iteration %ld (learning rate 0): stopping %.0f s before the time budget\n", t.iter,
                       minutes * 60.0 - (now - t0));
            break;
        }
        ebm_dataset_batch(&ds, &rdata, (uint64_t)t.iter * (uint64_t)c.batch, c.batch, xb, NULL);
        d = ebm_trainer_step(&t, xb);
        if (d == EBM_EDIVERGED) {
            fprintf(stderr, "\n%s\n", t.err.msg);
            snprintf(path, sizeof path, "%s/ckpt.bin", out);
            if (!strcmp(on_div, "rollback") && rollbacks < 8) {
                float scale = t.lr_scale * 0.5f;
                ebm_trainer_free(&t); ebm_model_free(&m);
                if (ebm_trainer_load(&t, &m, path, &err) != EBM_OK) { fprintf(stderr, "error: no checkpoint to roll back to: %s\n", err.msg); diverged = 1; rc = 3; break; }
                t.lr_scale = scale;
                rollbacks++;
                fprintf(stderr, "rolled back to iteration %ld with learning rate x%g\n", t.iter, (double)scale);
                fprintf(log, "# rollback to %ld, lr scale %g\n", t.iter, (double)scale);
                continue;
            }
            diverged = 1; rc = 3;
            break;
        }
        if (d != EBM_OK) { fprintf(stderr, "error: %s\n", t.err.msg); rc = 1; break; }
        now = ebm_time_sec();
        fprintf(log, "%ld,%.2f,%.4g,%.6g,%.6g,%.6g,%.6g,%.4f,%.6g\n", t.iter, now - t0, t.lr, t.d_t, t.r_t, t.f_pos, t.f_neg, t.accept, t.loss);
        if (now - last_print >= (tty ? 1.0 : 30.0)) {
            double rate = (t.iter - it0) / (now - t0), left = -1;
            if (minutes > 0) left = minutes * 60.0 - (now - t0);
            if (iters > 0 && rate > 0 && (left < 0 || (iters - t.iter) / rate < left)) left = (iters - t.iter) / rate;
            fprintf(tty ? stderr : stdout, "%siter %6ld  %.2f it/s  ETA %5.0f s  d_t %+9.4f  r_t %8.4f  loss %+9.4g  lr %.3g%s", tty ? "\r" : "", t.iter, rate,
                    left, t.d_t, t.r_t, t.loss, t.lr, tty ? "  " : "\n");
            fflush(tty ? stderr : stdout);
            last_print = now;
        }
        if (now - last_save >= save_minutes * 60.0) {
            char tag[32];
            snprintf(path, sizeof path, "%s/ckpt.bin", out);
            if (ebm_trainer_save(&t, path, &err) != EBM_OK) fprintf(stderr, "warning: %s\n", err.msg);
            snprintf(tag, sizeof tag, "%06ld", t.iter);
            save_grid(&t, out, tag, xb, xs, 64, sample_k);
            fflush(log);
            last_save = ebm_time_sec();
        }
    }
    if (tty) fprintf(stderr, "\n");
    fclose(log);
    plot_log(out, "d_t", "r_t");
    if (!diverged && rc == 0) {
        int shape[4];
        float *nchw = (float *)malloc((size_t)n_samples * D * sizeof *nchw);
        snprintf(path, sizeof path, "%s/ckpt.bin", out);
        if (ebm_trainer_save(&t, path, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
        save_grid(&t, out, "final", xb, xs, 64, sample_k);
        if (n_samples > 0 && !nchw) { fprintf(stderr, "error: out of memory for %d samples\n", n_samples); rc = 1; }
        if (n_samples > 0 && nchw) { /* (N, C, H, W), float32 in [-1, 1] */
            int i;
            for (i = 0; i < n_samples; i += 64) {
                int n = n_samples - i < 64 ? n_samples - i : 64;
                ebm_dataset_batch(&ds, &rdata, 0xFFFF0000u + (uint64_t)i, n, xb, NULL); /* data starts only */
                if (sample(&t, (uint64_t)i, xb, xs + (size_t)i * D, n, sample_k) != EBM_OK) { fprintf(stderr, "error: %s\n", t.err.msg); rc = 1; break; }
            }
            ebm_nhwc_to_nchw(xs, nchw, n_samples, ds.c, ds.h, ds.w);
            shape[0] = n_samples; shape[1] = ds.c; shape[2] = ds.h; shape[3] = ds.w;
            snprintf(path, sizeof path, "%s/samples.npy", out);
            if (ebm_npy_save(path, nchw, 4, shape, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
        }
        free(nchw);
    }
    printf("train_images data=%s objective=%s iters=%ld seconds=%.1f d_t=%.5g r_t=%.5g rollbacks=%d diverged=%d status=%s\n", data, objectives[c.objective], t.iter, ebm_time_sec() - t0,
           t.d_t, t.r_t, rollbacks, diverged, rc == 0 ? "ok" : diverged ? "diverged" : "error");
    free(xb); free(xs);
    ebm_trainer_free(&t);
    ebm_model_free(&m);
    ebm_dataset_free(&ds);
    return rc;
}
