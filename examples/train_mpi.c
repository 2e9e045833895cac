/* train_mpi: data-parallel maximum-likelihood training of the reference
   ConvNet energy over MPI. ebm.h knows nothing of MPI: this program hands the
   trainer an ebm_comm whose allgather is MPI_Allgather, and each rank then
   computes its shards of every batch and adds every shard's gradient in the
   same fixed order, so R ranks with --batch B each give, bit for bit, the
   model one rank gives with --batch R*B and the same --shards.

     mpicc -std=c99 -O3 -march=native -ffp-contract=off -fopenmp -I. \
           examples/train_mpi.c -o train_mpi -lm          (make build/train_mpi)
     OMP_NUM_THREADS=1 mpirun -np 4 ./train_mpi --batch 16 --minutes 10

   Every rank reads the data set and draws its part of each batch by global
   sample index; rank 0 decides when to stop, prints the progress line and
   writes everything in --out: ckpt.bin (resumable with any number of ranks
   that divides --shards), log.csv and curves.png, grid_final.png (fresh
   chains, labelled) and samples.npy (N, C, H, W) float32 in [-1, 1]. */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <mpi.h>
#include <limits.h>
#include <math.h>
#include <unistd.h> /* isatty */
#include <sys/stat.h>
#include "flags.h"
#include "images.h"

/* ebm_comm's allgather: every rank's block of buf filled in place */
static int mpi_allgather(void *user, void *buf, size_t bytes)
{
    if (bytes > INT_MAX) return -1; /* MPI counts are ints */
    return MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)bytes, MPI_BYTE, *(MPI_Comm *)user) == MPI_SUCCESS ? 0 : -1;
}

static int run(int rank, int ranks, int argc, char **argv)
{
    static const char *const datasets[] = { "fashion", "mnist", "cifar10" }, *const starts[] = { "uniform", "gaussian", "data", "persistent" };
    const char *data = "fashion", *data_dir = NULL, *out = "run_mpi", *start = "uniform";
    int nf = 16, resume = 0, seed = 1, batch = 16, shards = 0, n_samples = 64, ds_i, st, rc = 0, d = EBM_OK, tty = isatty(2);
    long iters = 0;
    float minutes = 0, save_minutes = 2;
    ebm_train_config c;
    ebm_model m;
    ebm_trainer t;
    ebm_dataset ds;
    ebm_error err;
    ebm_rng rdata;
    ebm_comm comm;
    MPI_Comm world = MPI_COMM_WORLD;
    float *xb, *xs;
    size_t D;
    int local;
    double t0, last_save, last_print = 0, it0, per_iter;
    char path[1100];
    FILE *log = NULL;
    ebm_train_config_default(&c);
    c.chain.n_steps = 40; c.schedule = EBM_LR_CONSTANT;
    {
        flag f[] = {
            { "data", "fashion | mnist | cifar10 (default fashion)", 's', &data, F_ANY },
            { "data-dir", "directory of the data files (default: Debian's for fashion)", 's', &data_dir, F_ANY },
            { "out", "directory for checkpoints, grids, log, samples (default run_mpi)", 's', &out, F_ANY },
            { "minutes", "time budget in minutes (0: none)", 'f', &minutes, F_NONNEG },
            { "iters", "stop after this many iterations in total (0: none)", 'l', &iters, F_NONNEG },
            { "resume", "continue from OUT/ckpt.bin with any number of ranks dividing its shards", 'b', &resume, F_ANY },
            { "seed", "keys every random number (default 1)", 'i', &seed, F_ANY },
            { "nf", "ConvNet width n_f (default 16)", 'i', &nf, F_POS },
            { "batch", "data points and chains per rank (default 16)", 'i', &batch, F_POS },
            { "shards", "gradient shards of the whole batch (default: the ranks); runs with equal shards agree bit for bit", 'i', &shards, F_POS },
            { "start", "chain start: uniform | gaussian | data | persistent (default uniform)", 's', &start, F_ANY },
            { "buffer", "replay buffer size (default 10000)", 'i', &c.buffer_size, F_POS },
            { "k", "Langevin steps per iteration K (default 40)", 'i', &c.chain.n_steps, F_NONNEG },
            { "step", "Langevin step s (default 1)", 'f', &c.chain.step, F_NONNEG },
            { "noise", "Langevin noise tau (default 0.01)", 'f', &c.chain.noise, F_NONNEG },
            { "lr", "Adam learning rate (default 1e-4)", 'f', &c.lr, F_POS },
            { "samples", "fresh samples written to samples.npy at the end (default 64)", 'i', &n_samples, F_NONNEG },
            { "save-minutes", "minutes between checkpoints (default 2; 0: every iteration)", 'f', &save_minutes, F_NONNEG },
        };
        if (parse_flags("train_mpi", argc, argv, f, (int)(sizeof f / sizeof f[0])) != 0) return 2;
        if ((ds_i = lookup("data set", data, datasets, 3)) < 0 || (st = lookup("start", start, starts, 4)) < 0) return 2;
        if (minutes <= 0 && iters <= 0) { fprintf(stderr, "error: give --minutes or --iters\n"); return 2; }
        if (batch < 1) { fprintf(stderr, "error: --batch %d\n", batch); return 2; }
        c.batch = batch * ranks; c.shards = shards > 0 ? shards : ranks; c.start = st; c.seed = (uint64_t)seed;
    }
    if ((rc = load_images(ds_i, data_dir, &ds)) != 0) return rc;
    snprintf(path, sizeof path, "%s/ckpt.bin", out);
    if (resume) { /* every rank reads rank 0's checkpoint */
        if (ebm_trainer_load(&t, &m, path, &err) != EBM_OK) { fprintf(stderr, "error: cannot resume: %s\n", err.msg); return 1; }
        if (m.in_h != ds.h || m.in_w != ds.w || m.in_c != ds.c) { fprintf(stderr, "error: the checkpoint's model is for other images\n"); return 1; }
    } else {
        if (ebm_model_convnet(&m, ds.c, ds.h, nf, EBM_ACT_LEAKY_RELU, 0.2f, (uint64_t)seed) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); return 2; }
        if (ebm_trainer_init(&t, &m, &c, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 2; }
    }
    c = t.cfg;
    if (c.batch % ranks) { fprintf(stderr, "error: %d ranks do not divide the batch of %d\n", ranks, c.batch); return 2; }
    comm.rank = rank; comm.size = ranks; comm.allgather = mpi_allgather; comm.user = &world;
    if (ebm_trainer_set_comm(&t, &comm) != EBM_OK) { fprintf(stderr, "error: %s\n", t.err.msg); return 2; }
    local = c.batch / ranks;
    D = (size_t)ds.h * ds.w * ds.c;
    xb = (float *)malloc((size_t)local * D * sizeof *xb);
    xs = (float *)malloc((size_t)(n_samples > 0 ? n_samples : 1) * D * sizeof *xs);
    if (!xb || !xs) { fprintf(stderr, "error: out of memory\n"); return 1; }
    rdata.seed = c.seed; rdata.stream = EBM_STREAM_USER; /* data order: a function of the seed and the global sample index */
    if (rank == 0) {
        mkdir(out, 0777);
        ebm_model_print(&m, stdout);
        printf("%s at iteration %ld: %d ranks x %d = batch %d in %d shards, start %s, K %d, step %g, noise %g, lr %g, %d threads per rank, %s\n",
               resume ? "resumed" : "new run", t.iter, ranks, local, c.batch, c.shards, ebm_start_name(c.start), c.chain.n_steps,
               (double)c.chain.step, (double)c.chain.noise, (double)c.lr, ebm_threads(), ebm_isa());
        snprintf(path, sizeof path, "%s/log.csv", out);
        if (!(log = fopen(path, resume ? "a" : "w"))) fprintf(stderr, "warning: cannot write %s\n", path);
        else if (!resume) fprintf(log, "iter,seconds,lr,d_t,r_t,f_pos,f_neg,accept,loss\n");
    }
    MPI_Barrier(world);
    t0 = last_save = MPI_Wtime();
    it0 = (double)t.iter;
    for (;;) {
        /* rank 0's clock decides, so that every rank stops at the same iteration */
        int stop = (iters > 0 && t.iter >= iters) || (minutes > 0 && MPI_Wtime() - t0 >= minutes * 60.0);
        MPI_Bcast(&stop, 1, MPI_INT, 0, world);
        if (stop) break;
        ebm_dataset_batch(&ds, &rdata, (uint64_t)t.iter * c.batch + (uint64_t)rank * local, local, xb, NULL);
        if ((d = ebm_trainer_step(&t, xb)) != EBM_OK) { /* every rank gets the same status */
            if (rank == 0) fprintf(stderr, "\nerror: %s\n", t.err.msg);
            rc = d == EBM_EDIVERGED ? 3 : 1;
            break;
        }
        if (rank == 0) {
            double now = MPI_Wtime();
            if (log) fprintf(log, "%ld,%.2f,%.4g,%.6g,%.6g,%.6g,%.6g,%.4f,%.6g\n", t.iter, now - t0, t.lr, t.d_t, t.r_t, t.f_pos, t.f_neg, t.accept, t.loss);
            if (now - last_print >= (tty ? 1.0 : 30.0)) {
                fprintf(tty ? stderr : stdout, "%siter %6ld  %.2f it/s  d_t %+9.4f  r_t %8.4f%s", tty ? "\r" : "", t.iter, (t.iter - it0) / (now - t0),
                        t.d_t, t.r_t, tty ? "  " : "\n");
                fflush(tty ? stderr : stdout);
                last_print = now;
            }
            if (now - last_save >= save_minutes * 60.0) { /* the state is the same on every rank: rank 0's copy is the run's */
                snprintf(path, sizeof path, "%s/ckpt.bin", out);
                if (ebm_trainer_save(&t, path, &err) != EBM_OK) fprintf(stderr, "warning: %s\n", err.msg);
                if (log) fflush(log);
                last_save = MPI_Wtime();
            }
        }
    }
    per_iter = t.iter > it0 ? (MPI_Wtime() - t0) / (t.iter - it0) : 0;
    if (rank == 0) {
        if (tty) fprintf(stderr, "\n");
        if (log) fclose(log);
        plot_log(out, "d_t", "r_t");
        if (rc == 0) {
            float *nchw = (float *)malloc((size_t)n_samples * D * sizeof *nchw);
            snprintf(path, sizeof path, "%s/ckpt.bin", out);
            if (ebm_trainer_save(&t, path, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; }
            float *xd = (float *)malloc((size_t)n_samples * D * sizeof *xd); /* data starts begin at data */
            if (xd) ebm_dataset_batch(&ds, &rdata, 0xFFFF0000u, n_samples, xd, NULL);
            if (n_samples > 0 && nchw && xd && ebm_trainer_sample(&t, 0, xd, xs, n_samples, c.chain.n_steps) == EBM_OK) {
                char label[160];
                int shape[4];
                snprintf(label, sizeof label, "fresh %s start, langevin k=%d, iter %ld, %d ranks", ebm_start_name(c.start == EBM_START_PERSISTENT ? c.restart : c.start),
                         c.chain.n_steps, t.iter, ranks);
                snprintf(path, sizeof path, "%s/grid_final.png", out);
                if (ebm_png_save_grid(path, xs, n_samples < 64 ? n_samples : 64, ds.h, ds.w, ds.c, 8, label, &err) != EBM_OK) fprintf(stderr, "error: %s\n", err.msg);
                ebm_nhwc_to_nchw(xs, nchw, n_samples, ds.c, ds.h, ds.w);
                shape[0] = n_samples; shape[1] = ds.c; shape[2] = ds.h; shape[3] = ds.w;
                snprintf(path, sizeof path, "%s/samples.npy", out);
                if (ebm_npy_save(path, nchw, 4, shape, &err) != EBM_OK) fprintf(stderr, "error: %s\n", err.msg);
            } else if (n_samples > 0) fprintf(stderr, "error: fresh samples: %s\n", nchw ? t.err.msg : "out of memory");
            free(nchw); free(xd);
        }
        printf("train_mpi data=%s ranks=%d shards=%d batch=%d iters=%ld seconds=%.1f ms_per_iter=%.1f d_t=%.5g r_t=%.5g status=%s\n", data, ranks, c.shards,
               c.batch, t.iter, MPI_Wtime() - t0, 1e3 * per_iter, t.d_t, t.r_t, rc == 0 ? "ok" : rc == 3 ? "diverged" : "error");
    }
    free(xb); free(xs);
    ebm_trainer_free(&t);
    ebm_model_free(&m);
    ebm_dataset_free(&ds);
    return rc;
}

int main(int argc, char **argv)
{
    int rank, ranks, rc;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    rc = run(rank, ranks, argc, argv);
    /* a failure on one rank (a flag, a file) may leave the others waiting; a step's failure or divergence (3) is every rank's */
    if (rc != 0 && rc != 3 && ranks > 1) MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
    return rc;
}
