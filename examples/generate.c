/* generate: what a trained EBM is for (ALGORITHMS.md section 3 and the
   long-run part of section 2), from a checkpoint of train_images.

   The short-run chain x_K = M(z, u) is a generator of its initial noise z and
   its Langevin noise u. This program uses it, and the energy itself, for:
     sample    a grid of fresh chains with fixed (z, u): the same --seed gives
               the same picture;
     interp    chains from noises between two initial noises z1, z2 (linear for
               uniform noise, spherical for Gaussian), Langevin noise fixed;
     recon     reconstruction of images by Adam or SGD on z through the whole chain,
               after a small fixed budget of steps, for test images and for
               out-of-distribution ones, and the AUROC of that error;
     inpaint   three built-in masks (and --mask FILE.npy): conditional Langevin
               and z-optimisation against mean-image and nearest-neighbour fill;
     superres  2x from the 2x2 means: conditional Langevin (projected back on
               every step) and z-optimisation against nearest and bilinear;
     longrun   chains of --long-steps steps from noise and from data,
               unadjusted and MALA (step adapted in the first tenth): snapshot
               strips and the energy trace, the test of whether the model's
               steady state looks like data;
     anomaly   the energy as an anomaly score: AUROC of test images against
               noisy, negated, upside-down, uniform-noise and (--mnist-dir)
               MNIST images.
   Every task ends with key=value summary lines; pictures go to --out DIR. */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/stat.h>
#include "flags.h"

#define CHUNK 64 /* images per chain call: the graph is sized for this */

/* Everything the tasks share: the model, its sampler, the noise keys. */
typedef struct {
    ebm_model m;
    ebm_trainer t;
    ebm_graph *g;
    ebm_langevin chain; /* the recipe's sampler, K possibly overridden */
    int noise;          /* EBM_START_UNIFORM or _GAUSSIAN: how chains start */
    ebm_rng rz, ru;     /* initial noise z and Langevin noise u */
    int H, W, C;
    size_t D;
    const char *out;
    int anneal;         /* conditional chains reach what is known along the chain */
    int recon_opt;      /* EBM_OPT_ADAM or EBM_OPT_SGD on z */
} ctx;

static void *xalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) { fprintf(stderr, "error: out of memory (%zu bytes)\n", n); exit(1); }
    return p;
}
#define FALLOC(n) ((float *)xalloc((size_t)(n) * sizeof(float)))

static int fail(ctx *c, const char *what)
{
    fprintf(stderr, "error: %s: %s\n", what, ebm_graph_error(c->g)->msg);
    return -1;
}

static int grid(ctx *c, const char *name, const float *x, int n, int cols, const char *label)
{
    char path[1100];
    ebm_error err;
    snprintf(path, sizeof path, "%s/%s", c->out, name);
    if (ebm_png_save_grid(path, x, n, c->H, c->W, c->C, cols, label, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return -1; }
    printf("wrote %s\n", path);
    return 0;
}

/* Initial noise of samples first.. as the recipe draws it. */
static void start_noise(ctx *c, uint64_t first, float *x, int n)
{
    ebm_chain_start(c->noise, &c->rz, first, 0, c->chain.lo, c->chain.hi, x, n, c->D);
}

/* K-step chains on x (n images) in chunks; noise u keyed by first+i. */
static int run_chains(ctx *c, uint64_t first, float *x, int n)
{
    int i;
    for (i = 0; i < n; i += CHUNK)
        if (ebm_langevin_run(&c->m, c->g, &c->chain, &c->ru, first + (uint64_t)i, x + (size_t)i * c->D, n - i < CHUNK ? n - i : CHUNK, NULL) != EBM_OK)
            return fail(c, "langevin");
    return 0;
}

static int energies(ctx *c, const float *x, int n, float *f)
{
    int i;
    for (i = 0; i < n; i += CHUNK)
        if (ebm_model_score(&c->m, c->g, x + (size_t)i * c->D, n - i < CHUNK ? n - i : CHUNK, f + i, NULL) != EBM_OK) return fail(c, "energy");
    return 0;
}

/* ---------------------------------------------------------------- sample, interp */

static int task_sample(ctx *c, int n)
{
    float *x = FALLOC((size_t)n * c->D), *f = FALLOC(n);
    char label[160];
    double mf = 0;
    int i, rc;
    start_noise(c, 0, x, n);
    rc = run_chains(c, 0, x, n);
    if (!rc) rc = energies(c, x, n, f);
    for (i = 0; i < n; i++) mf += f[i] / n;
    snprintf(label, sizeof label, "fresh %s chains k=%d, seed %llu (z, u fixed)", ebm_start_name(c->noise), c->chain.n_steps,
             (unsigned long long)c->rz.seed);
    if (!rc) rc = grid(c, "sample.png", x, n, 8, label);
    if (!rc) printf("sample n=%d k=%d seed=%llu mean_f=%.4f\n", n, c->chain.n_steps, (unsigned long long)c->rz.seed, mf);
    free(x); free(f);
    return rc;
}

/* One row per pair (z1, z2), columns rho = 0 .. 1; every image of a row has
   the Langevin noise of the row's own index, so only z changes along it. */
static int task_interp(ctx *c, int pairs, int cols)
{
    float *z = FALLOC(2 * (size_t)pairs * c->D), *col = FALLOC((size_t)pairs * c->D), *out = FALLOC((size_t)pairs * cols * c->D);
    char label[160];
    int p, k, rc = 0, spherical = c->noise == EBM_START_GAUSSIAN;
    start_noise(c, 1000000, z, 2 * pairs);
    for (k = 0; k < cols && !rc; k++) {
        float rho = (float)k / (float)(cols - 1);
        for (p = 0; p < pairs; p++) ebm_noise_interpolate(z + 2 * (size_t)p * c->D, z + (2 * (size_t)p + 1) * c->D, c->D, rho, spherical, col + (size_t)p * c->D);
        rc = run_chains(c, 1000000, col, pairs);
        for (p = 0; p < pairs && !rc; p++) memcpy(out + ((size_t)p * cols + k) * c->D, col + (size_t)p * c->D, c->D * sizeof(float));
    }
    snprintf(label, sizeof label, "%s interpolation of z, u fixed per row, k=%d", spherical ? "spherical" : "linear", c->chain.n_steps);
    if (!rc) rc = grid(c, "interp.png", out, pairs * cols, cols, label);
    if (!rc) printf("interp pairs=%d cols=%d kind=%s\n", pairs, cols, spherical ? "spherical" : "linear");
    free(z); free(col); free(out);
    return rc;
}

/* ---------------------------------------------------------------- out-of-distribution sets */

enum { OOD_NOISY, OOD_NEGATED, OOD_FLIPPED, OOD_UNIFORM, OOD_MNIST, OOD_COUNT };
static const char *const ood_names[OOD_COUNT] = { "noisy", "negated", "flipped", "uniform", "mnist" };

/* n images of set k made from the test images x (noisy: N(0, 0.3^2) added and
   clamped; negated; flipped upside down; U(-1, 1) noise; MNIST test images). */
static int ood_set(ctx *c, int k, const float *x, const ebm_dataset *mnist, int n, float *o)
{
    size_t j, nD = (size_t)n * c->D, row = (size_t)c->W * c->C;
    int i, y;
    ebm_rng r = c->rz;
    r.stream += 77;
    switch (k) {
    case OOD_NOISY:
        ebm_chain_start(EBM_START_GAUSSIAN, &r, 0, 0, 0, 0, o, n, c->D);
        for (j = 0; j < nD; j++) { float v = x[j] + 0.3f * o[j]; o[j] = v < -1 ? -1 : v > 1 ? 1 : v; }
        break;
    case OOD_NEGATED: for (j = 0; j < nD; j++) o[j] = -x[j]; break;
    case OOD_FLIPPED:
        for (i = 0; i < n; i++)
            for (y = 0; y < c->H; y++) memcpy(o + (size_t)i * c->D + y * row, x + (size_t)i * c->D + (size_t)(c->H - 1 - y) * row, row * sizeof(float));
        break;
    case OOD_UNIFORM: ebm_chain_start(EBM_START_UNIFORM, &r, 0, 1, -1, 1, o, n, c->D); break;
    default:
        if (!mnist) return -1;
        if (mnist->n < n || mnist->h != c->H || mnist->w != c->W || mnist->c != c->C) {
            fprintf(stderr, "warning: MNIST skipped: %d images of %dx%dx%d, need %d of %dx%dx%d\n", mnist->n, mnist->h, mnist->w, mnist->c, n, c->H, c->W, c->C);
            return -1;
        }
        ebm_dataset_get(mnist, 0, n, o);
    }
    return 0;
}

static int task_anomaly(ctx *c, const float *test, int n, const ebm_dataset *mnist)
{
    float *fin = FALLOC(n), *fout = FALLOC(n), *o = FALLOC((size_t)n * c->D);
    int k, i, rc = energies(c, test, n, fin);
    for (i = 0; i < n; i++) fin[i] = -fin[i]; /* the anomaly score is the energy -f */
    for (k = 0; k < OOD_COUNT && !rc; k++) {
        if (ood_set(c, k, test, mnist, n, o) != 0) continue;
        if ((rc = energies(c, o, n, fout)) != 0) break;
        for (i = 0; i < n; i++) fout[i] = -fout[i];
        printf("anomaly ood=%s n=%d score=energy auroc=%.4f\n", ood_names[k], n, ebm_auroc(fin, n, fout, n));
    }
    free(fin); free(fout); free(o);
    return rc;
}

/* ---------------------------------------------------------------- reconstruction */

/* Per-image squared error of x against the truth on the pixels where
   mask is 0 (mask NULL: every pixel), averaged over those pixels. */
static void mse_per_image(const float *x, const float *truth, const float *mask, int n, size_t D, float *e)
{
    int i;
    size_t j;
    for (i = 0; i < n; i++) {
        double s = 0, cnt = 0;
        for (j = (size_t)i * D; j < (size_t)(i + 1) * D; j++)
            if (!mask || mask[j] == 0) { double d = (double)x[j] - truth[j]; s += d * d; cnt++; }
        e[i] = (float)(cnt ? s / cnt : 0);
    }
}

static double mean_of(const float *e, int n)
{
    double s = 0;
    int i;
    for (i = 0; i < n; i++) s += e[i];
    return n ? s / n : 0;
}

/* The mean over n images of their errors on the unknown pixels (e: scratch). */
static double mean_mse(const float *x, const float *truth, const float *mask, int n, size_t D, float *e)
{
    mse_per_image(x, truth, mask, n, D, e);
    return mean_of(e, n);
}

/* Adam on z through the chain (iters steps, lr) against what is known; x
   receives x_K. z starts from the recipe's noise of samples first... */
static int zopt(ctx *c, uint64_t first, int kind, const float *target, const float *mask, int n, int iters, float lr, float *x)
{
    float *z = FALLOC((size_t)n * c->D);
    size_t tD = kind == EBM_KNOWN_DOWNSAMPLE ? c->D / 4 : c->D;
    int i, rc = 0;
    ebm_langevin iso = c->chain;
    iso.aniso_th = 0; /* a STANLEY chain is not differentiated (its step depends on |drift|): z is fitted through isotropic steps */
    start_noise(c, first, z, n);
    for (i = 0; i < n && !rc; i += CHUNK) {
        int m = n - i < CHUNK ? n - i : CHUNK;
        if (ebm_chain_reconstruct(&c->m, c->g, &iso, &c->ru, first + (uint64_t)i, kind, target + (size_t)i * tD, mask ? mask + (size_t)i * c->D : NULL, m,
                                  z + (size_t)i * c->D, iters, c->recon_opt, lr, x + (size_t)i * c->D, NULL) != EBM_OK)
            rc = fail(c, "reconstruct");
    }
    free(z);
    return rc;
}

static int task_recon(ctx *c, const float *test, int n, const ebm_dataset *mnist, int iters, float lr)
{
    float *x = FALLOC((size_t)n * c->D), *o = FALLOC((size_t)n * c->D), *ein = FALLOC(n), *eout = FALLOC(n), *panel = FALLOC(16 * c->D);
    int k, rc;
    double t0 = ebm_time_sec();
    char label[160];
    rc = zopt(c, 2000000, EBM_KNOWN_PIXELS, test, NULL, n, iters, lr, x);
    if (rc) goto done;
    mse_per_image(x, test, NULL, n, c->D, ein);
    printf("recon set=test n=%d iters=%d lr=%g mse=%.5f seconds=%.1f\n", n, iters, lr, mean_of(ein, n), ebm_time_sec() - t0);
    memcpy(panel, test, 8 * c->D * sizeof(float));
    memcpy(panel + 8 * c->D, x, 8 * c->D * sizeof(float));
    snprintf(label, sizeof label, "reconstruction by z, %d adam steps: truth, result", iters);
    if ((rc = grid(c, "recon.png", panel, 16, 8, label)) != 0) goto done;
    for (k = 0; k < OOD_COUNT && !rc; k++) {
        if (ood_set(c, k, test, mnist, n, o) != 0) continue;
        if ((rc = zopt(c, 2000000, EBM_KNOWN_PIXELS, o, NULL, n, iters, lr, x)) != 0) break;
        mse_per_image(x, o, NULL, n, c->D, eout);
        printf("recon ood=%s n=%d mse=%.5f auroc=%.4f\n", ood_names[k], n, mean_of(eout, n), ebm_auroc(ein, n, eout, n));
    }
done:
    free(x); free(o); free(ein); free(eout); free(panel);
    return rc;
}

/* ---------------------------------------------------------------- inpainting and super-resolution */

/* Nearest-neighbour fill: the training image closest on the known pixels
   gives the unknown ones. */
static void nn_fill(const float *train, int n_train, const float *x, const float *mask, int n, size_t D, float *out)
{
    int i;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4)
#endif
    for (i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D, *mi = mask + (size_t)i * D;
        double best = 1e30;
        int b = 0, t;
        size_t j;
        for (t = 0; t < n_train; t++) {
            const float *p = train + (size_t)t * D;
            float s = 0;
            for (j = 0; j < D; j++) { float d = (p[j] - xi[j]) * mi[j]; s += d * d; }
            if (s < best) { best = s; b = t; }
        }
        for (j = 0; j < D; j++) out[(size_t)i * D + j] = mi[j] != 0 ? xi[j] : train[(size_t)b * D + j];
    }
}

/* Conditional Langevin from the recipe's noise (or `start`), averaged over
   S chains (the average estimates the model's conditional mean, which is
   what MSE rewards); anneal: what is known is reached along the chain
   (EBM_KNOWN_ANNEALED) rather than clamped from the first step. */
static int cond_chains(ctx *c, int kind, const float *known, const float *mask, const float *start, int n, int S, int anneal, float *avg, float *one)
{
    float *x = FALLOC((size_t)n * c->D);
    size_t j, nD = (size_t)n * c->D, kD = kind == EBM_KNOWN_DOWNSAMPLE ? c->D / 4 : c->D;
    int s, i, rc = 0;
    memset(avg, 0, nD * sizeof(float));
    for (s = 0; s < S && !rc; s++) {
        uint64_t first = 3000000 + (uint64_t)s * 100000;
        if (start) memcpy(x, start, nD * sizeof(float));
        else start_noise(c, first, x, n);
        for (i = 0; i < n && !rc; i += CHUNK)
            if (ebm_langevin_conditional(&c->m, c->g, &c->chain, &c->ru, first + (uint64_t)i, x + (size_t)i * c->D, n - i < CHUNK ? n - i : CHUNK,
                                         kind | (anneal ? EBM_KNOWN_ANNEALED : 0), known + (size_t)i * kD, mask ? mask + (size_t)i * c->D : NULL) != EBM_OK)
                rc = fail(c, "conditional langevin");
        for (j = 0; j < nD; j++) avg[j] += x[j] / (float)S;
        if (s == 0) memcpy(one, x, nD * sizeof(float));
    }
    free(x);
    return rc;
}

/* The panel: for 8 images, one row per method. */
static int panel(ctx *c, const char *name, const float *const *rows, int n_rows, const char *label)
{
    float *p = FALLOC((size_t)n_rows * 8 * c->D);
    int r, rc;
    for (r = 0; r < n_rows; r++) memcpy(p + (size_t)r * 8 * c->D, rows[r], 8 * c->D * sizeof(float));
    rc = grid(c, name, p, 8 * n_rows, 8, label);
    free(p);
    return rc;
}

typedef struct { const float *train; int n_train; const float *mean; } baseline_data;

static int task_inpaint(ctx *c, const char *mask_name, const float *mask, const float *test, int n, const baseline_data *bd, int S, int n_z,
                        int iters, float lr, int from_baseline)
{
    size_t nD = (size_t)n * c->D, j;
    float *shown = FALLOC(nD), *mfill = FALLOC(nD), *nfill = FALLOC(nD), *lav = FALLOC(nD), *l1 = FALLOC(nD), *zx = FALLOC(nD), *e = FALLOC(n);
    double m_mean, m_nn, m_lav, m_l1, m_z = 0, m_nn_z = 0, m_mean_z = 0, t0 = ebm_time_sec();
    int rc;
    char label[200], name[64];
    for (j = 0; j < nD; j++) {
        shown[j] = mask[j] != 0 ? test[j] : 0.0f; /* unknown pixels shown grey */
        mfill[j] = mask[j] != 0 ? test[j] : bd->mean[j % c->D];
    }
    nn_fill(bd->train, bd->n_train, test, mask, n, c->D, nfill);
    if ((rc = cond_chains(c, EBM_KNOWN_PIXELS, test, mask, from_baseline ? nfill : NULL, n, S, c->anneal, lav, l1)) != 0) goto done;
    if (n_z > 0 && (rc = zopt(c, 4000000, EBM_KNOWN_PIXELS, test, mask, n_z, iters, lr, zx)) != 0) goto done;
    m_mean = mean_mse(mfill, test, mask, n, c->D, e);
    m_nn = mean_mse(nfill, test, mask, n, c->D, e);
    m_lav = mean_mse(lav, test, mask, n, c->D, e);
    m_l1 = mean_mse(l1, test, mask, n, c->D, e);
    if (n_z > 0) {
        m_z = mean_mse(zx, test, mask, n_z, c->D, e);
        m_nn_z = mean_mse(nfill, test, mask, n_z, c->D, e);
        m_mean_z = mean_mse(mfill, test, mask, n_z, c->D, e);
    }
    printf("inpaint mask=%s n=%d mse_unknown=%.5f baseline_mse=%.5f mean_fill=%.5f nn_fill=%.5f langevin_1=%.5f langevin_avg=%.5f chains=%d k=%d"
           " seconds=%.1f\n",
           mask_name, n, m_lav, m_mean < m_nn ? m_mean : m_nn, m_mean, m_nn, m_l1, m_lav, S, c->chain.n_steps, ebm_time_sec() - t0);
    if (n_z > 0)
        printf("inpaint mask=%s method=zopt n=%d iters=%d mse_unknown=%.5f baseline_mse=%.5f mean_fill=%.5f nn_fill=%.5f\n", mask_name, n_z, iters, m_z,
               m_mean_z < m_nn_z ? m_mean_z : m_nn_z, m_mean_z, m_nn_z);
    {
        const float *rows[7] = { shown, mfill, nfill, l1, lav, zx, test };
        snprintf(label, sizeof label, "inpaint %s: input, mean fill, nearest fill, langevin, mean of %d,%s truth", mask_name, S, n_z >= 8 ? " z-opt," : "");
        snprintf(name, sizeof name, "inpaint_%s.png", mask_name);
        if (n_z < 8) rows[5] = test;
        rc = panel(c, name, rows, n_z >= 8 ? 7 : 6, label);
    }
done:
    free(shown); free(mfill); free(nfill); free(lav); free(l1); free(zx); free(e);
    return rc;
}

/* Upsampling baselines from (n, H/2, W/2, C): nearest (each value repeated
   2x2) and bilinear (half-pixel centres, edges clamped). */
static void upsample(const float *lo, int n, int H, int W, int C, int bilinear, float *out)
{
    int i, y, x, k, h = H / 2, w = W / 2;
    for (i = 0; i < n; i++)
        for (y = 0; y < H; y++)
            for (x = 0; x < W; x++)
                for (k = 0; k < C; k++) {
                    const float *L = lo + (size_t)i * h * w * C;
                    float v;
                    if (!bilinear) v = L[((size_t)(y / 2) * w + x / 2) * C + k];
                    else {
                        float sy = (y + 0.5f) / 2 - 0.5f, sx = (x + 0.5f) / 2 - 0.5f;
                        int y0 = (int)floorf(sy), x0 = (int)floorf(sx), y1 = y0 + 1, x1 = x0 + 1;
                        float fy = sy - y0, fx = sx - x0;
                        y0 = y0 < 0 ? 0 : y0; x0 = x0 < 0 ? 0 : x0; y1 = y1 >= h ? h - 1 : y1; x1 = x1 >= w ? w - 1 : x1;
                        v = (1 - fy) * ((1 - fx) * L[((size_t)y0 * w + x0) * C + k] + fx * L[((size_t)y0 * w + x1) * C + k]) +
                            fy * ((1 - fx) * L[((size_t)y1 * w + x0) * C + k] + fx * L[((size_t)y1 * w + x1) * C + k]);
                    }
                    out[(((size_t)i * H + y) * W + x) * C + k] = v;
                }
}

static int task_superres(ctx *c, const float *test, int n, int S, int n_z, int iters, float lr, int from_baseline)
{
    size_t nD = (size_t)n * c->D;
    float *lo = FALLOC(nD / 4), *near = FALLOC(nD), *bil = FALLOC(nD), *lav = FALLOC(nD), *l1 = FALLOC(nD), *zx = FALLOC(nD), *e = FALLOC(n);
    double m_near, m_bil, m_lav, m_l1, m_z = 0, m_bil_z = 0, m_near_z = 0, t0 = ebm_time_sec();
    int rc;
    ebm_downsample2(test, n, c->H, c->W, c->C, lo);
    upsample(lo, n, c->H, c->W, c->C, 0, near);
    upsample(lo, n, c->H, c->W, c->C, 1, bil);
    if ((rc = cond_chains(c, EBM_KNOWN_DOWNSAMPLE, lo, NULL, from_baseline ? bil : NULL, n, S, c->anneal, lav, l1)) != 0) goto done;
    if (n_z > 0 && (rc = zopt(c, 5000000, EBM_KNOWN_DOWNSAMPLE, lo, NULL, n_z, iters, lr, zx)) != 0) goto done;
    m_near = mean_mse(near, test, NULL, n, c->D, e);
    m_bil = mean_mse(bil, test, NULL, n, c->D, e);
    m_lav = mean_mse(lav, test, NULL, n, c->D, e);
    m_l1 = mean_mse(l1, test, NULL, n, c->D, e);
    if (n_z > 0) {
        m_z = mean_mse(zx, test, NULL, n_z, c->D, e);
        m_bil_z = mean_mse(bil, test, NULL, n_z, c->D, e);
        m_near_z = mean_mse(near, test, NULL, n_z, c->D, e);
    }
    printf("superres n=%d mse_unknown=%.5f baseline_mse=%.5f nearest=%.5f bilinear=%.5f langevin_1=%.5f langevin_avg=%.5f chains=%d k=%d seconds=%.1f\n", n,
           m_lav, m_near < m_bil ? m_near : m_bil, m_near, m_bil, m_l1, m_lav, S, c->chain.n_steps, ebm_time_sec() - t0);
    if (n_z > 0)
        printf("superres method=zopt n=%d iters=%d mse_unknown=%.5f baseline_mse=%.5f nearest=%.5f bilinear=%.5f\n", n_z, iters, m_z,
               m_near_z < m_bil_z ? m_near_z : m_bil_z, m_near_z, m_bil_z);
    {
        const float *rows[6] = { near, bil, l1, lav, zx, test };
        char label[200];
        snprintf(label, sizeof label, "2x super-resolution: nearest, bilinear, langevin, mean of %d,%s truth", S, n_z >= 8 ? " z-opt," : "");
        if (n_z < 8) rows[4] = test;
        rc = panel(c, "superres.png", rows, n_z >= 8 ? 6 : 5, label);
    }
done:
    free(lo); free(near); free(bil); free(lav); free(l1); free(zx); free(e);
    return rc;
}

/* ---------------------------------------------------------------- long-run chains */

/* n chains of L steps from x (noise or data), unadjusted or MALA with the
   step adapted over the first L/10 steps; snapshots at 0 and log-spaced
   steps, the mean energy every L/1000 steps into trace[1001]. */
static int longrun(ctx *c, float *x, int n, long L, int mala, float *snaps, int n_snap, const long *at, float *trace, double *accept, float *step_out)
{
    ebm_langevin cfg = c->chain;
    long cur = 0, every = L / 1000 > 0 ? L / 1000 : 1, n_burn = L / 10;
    int s = 0, tr = 0, i;
    float f[CHUNK];
    double acc_sum = 0, acc_n = 0;
    while (1) {
        long next;
        if (s < n_snap && at[s] == cur) { memcpy(snaps + (size_t)s * n * c->D, x, (size_t)n * c->D * sizeof(float)); s++; }
        if (cur % every == 0 && tr <= 1000) {
            double m = 0;
            if (energies(c, x, n, f) != 0) return -1;
            for (i = 0; i < n; i++) m += f[i] / n;
            trace[tr++] = (float)m;
        }
        if (cur >= L) break;
        next = (cur / every + 1) * every;
        if (s < n_snap && at[s] < next) next = at[s];
        cfg.n_steps = (int)(next - cur);
        cfg.first_step = (uint32_t)cur;
        if (!mala) {
            if (ebm_langevin_run(&c->m, c->g, &cfg, &c->ru, 7000000, x, n, NULL) != EBM_OK) return fail(c, "long-run langevin");
        } else if (cur < n_burn && cfg.n_steps >= 10) { /* adapt in whole rounds, during burn-in only */
            ebm_langevin adapted;
            if (ebm_mala_adapt(&c->m, c->g, &cfg, &c->ru, 7000000, x, n, cfg.n_steps, 0.57, &adapted) != EBM_OK) return fail(c, "mala adapt");
            cfg.step = adapted.step; cfg.noise = adapted.noise; cfg.eps = adapted.eps;
        } else {
            double a = 0;
            if (ebm_mala_run(&c->m, c->g, &cfg, &c->ru, 7000000, x, n, &a, NULL) != EBM_OK) return fail(c, "long-run mala");
            if (cur >= n_burn) { acc_sum += a * cfg.n_steps; acc_n += cfg.n_steps; }
        }
        cur = next;
    }
    *accept = acc_n > 0 ? acc_sum / acc_n : -1;
    *step_out = cfg.form == EBM_LANGEVIN_EPS ? cfg.eps : cfg.step;
    return tr;
}

static int task_longrun(ctx *c, const float *test, int n, long L)
{
    enum { MAX_SNAP = 16 };
    long at[MAX_SNAP];
    int n_snap = 0, v, i, s, rc = 0, n_tr = 0;
    float *x = FALLOC((size_t)n * c->D), *snaps = FALLOC((size_t)MAX_SNAP * n * c->D), *strip = FALLOC((size_t)MAX_SNAP * n * c->D);
    float *trace = FALLOC(4 * 1001);
    static const char *const names[4] = { "f, langevin from noise", "f, langevin from data", "f, mala from noise", "f, mala from data" };
    /* snapshots: 0, then 1, 3, 10, 30, ... up to L, and L itself */
    at[n_snap++] = 0;
    for (i = 0; n_snap < MAX_SNAP - 1; i++) {
        long a = (long)floor(pow(10.0, i / 2.0) * (i % 2 ? 3.0 / sqrt(10.0) : 1.0) + 0.5);
        if (a >= L) break;
        if (a > at[n_snap - 1]) at[n_snap++] = a;
    }
    at[n_snap++] = L;
    for (v = 0; v < 4 && !rc; v++) {
        int mala = v >= 2, from_data = v % 2;
        double acc;
        float step;
        char label[200], name[64];
        if (from_data) memcpy(x, test, (size_t)n * c->D * sizeof(float));
        else start_noise(c, 6000000, x, n);
        if ((n_tr = longrun(c, x, n, L, mala, snaps, n_snap, at, trace + (size_t)v * 1001, &acc, &step)) < 0) { rc = -1; break; }
        /* one row per chain, one column per snapshot */
        for (i = 0; i < n; i++)
            for (s = 0; s < n_snap; s++) memcpy(strip + ((size_t)i * n_snap + s) * c->D, snaps + ((size_t)s * n + i) * c->D, c->D * sizeof(float));
        snprintf(label, sizeof label, "%s from %s, steps 0 1 3 10 30 ... %ld", mala ? "mala" : "langevin", from_data ? "data" : "noise", L);
        snprintf(name, sizeof name, "longrun_%s_%s.png", mala ? "mala" : "langevin", from_data ? "data" : "noise");
        if ((rc = grid(c, name, strip, n * n_snap, n_snap, label)) != 0) break;
        if (acc < 0) snprintf(name, sizeof name, "na");
        else snprintf(name, sizeof name, "%.3f", acc);
        printf("longrun chain=%s start=%s steps=%ld n=%d f_start=%.4f f_end=%.4f step=%.4g accept=%s\n", mala ? "mala" : "langevin",
               from_data ? "data" : "noise", L, n, trace[(size_t)v * 1001], trace[(size_t)v * 1001 + n_tr - 1], step, name);
    }
    if (!rc) {
        char path[1100];
        ebm_error err;
        float *y = FALLOC(4 * (size_t)n_tr);
        for (v = 0; v < 4; v++) memcpy(y + (size_t)v * n_tr, trace + (size_t)v * 1001, (size_t)n_tr * sizeof(float));
        snprintf(path, sizeof path, "%s/longrun_energy.png", c->out);
        if (ebm_png_save_plot(path, y, 4, n_tr, names, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = -1; }
        else printf("wrote %s\n", path);
        free(y);
    }
    free(x); free(snaps); free(strip); free(trace);
    return rc;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    static const char *const all_tasks[] = { "sample", "interp", "recon", "inpaint", "superres", "longrun", "anomaly" };
    const char *recon_opt = "adam", *clamp = "anneal", *cond_start = "noise", *ckpt = NULL, *out = "gen", *tasks = "all", *data_dir = NULL, *mnist_dir = NULL, *mask_path = NULL;
    int seed = 1, n_eval = 1000, n_recon = 128, recon_iters = 20, chains = 8, k = 0, n_z = 128, long_n = 4, threads = 0;
    long long_steps = 10000;
    float recon_lr = 0.1f, stanley = -1;
    ctx c;
    ebm_dataset train, test, mnist;
    ebm_error err;
    float *xt = NULL, *xtrain = NULL, *mean = NULL;
    int have_mnist = 0, rc = 0, i, cs;
    size_t bytes, b2;
    double t_start = ebm_time_sec();
    flag f[] = {
        { "ckpt", "checkpoint of train_images (required)", 's', &ckpt, F_ANY },
        { "out", "directory for the pictures (default gen)", 's', &out, F_ANY },
        { "task", "all, or a comma list of sample,interp,recon,inpaint,superres,longrun,anomaly", 's', &tasks, F_ANY },
        { "seed", "keys the noise z and u of every chain (default 1)", 'i', &seed, F_ANY },
        { "k", "Langevin steps (default: the checkpoint's K)", 'i', &k, F_POS },
        { "data-dir", "Fashion-MNIST directory (default: Debian's)", 's', &data_dir, F_ANY },
        { "mnist-dir", "MNIST directory: adds MNIST as an out-of-distribution set", 's', &mnist_dir, F_ANY },
        { "n-eval", "test images for anomaly, inpainting, super-resolution (default 1000)", 'i', &n_eval, F_POS },
        { "chains", "conditional chains averaged per image (default 8)", 'i', &chains, F_POS },
        { "cond-start", "conditional chains start from: noise | baseline (nearest-neighbour fill, bilinear) (default noise)", 's', &cond_start, F_ANY },
        { "clamp", "conditional chains: anneal (what is known reached along the chain) | hard (from the first step) (default anneal)", 's', &clamp, F_ANY },
        { "n-recon", "images per set for reconstruction (default 128)", 'i', &n_recon, F_POS },
        { "recon-iters", "Adam steps on z (default 20)", 'i', &recon_iters, F_NONNEG },
        { "recon-opt", "adam | sgd on z (default adam)", 's', &recon_opt, F_ANY },
        { "recon-lr", "learning rate on z (default 0.1)", 'f', &recon_lr, F_POS },
        { "n-zopt", "images for z-optimised inpainting / super-resolution (default 128, 0: none)", 'i', &n_z, F_NONNEG },
        { "mask", "a user inpainting mask: NPY (H, W), 1 = known", 's', &mask_path, F_ANY },
        { "long-steps", "steps of the long-run chains (default 10000)", 'l', &long_steps, F_POS },
        { "long-chains", "chains per long-run variant (default 4)", 'i', &long_n, F_POS },
        { "stanley", "STANLEY's threshold for every chain (0: isotropic; default: the checkpoint's)", 'f', &stanley, F_NONNEG },
        { "threads", "OpenMP threads (default 0: OpenMP's, OMP_NUM_THREADS or every core)", 'i', &threads, F_NONNEG },
    };
    setvbuf(stdout, NULL, _IOLBF, 0); /* summary lines appear as each task ends, also in a log file */
    memset(&c, 0, sizeof c);
    if (parse_flags("generate", argc, argv, f, (int)(sizeof f / sizeof f[0])) != 0) return 2;
    if (!ckpt) { fprintf(stderr, "error: give --ckpt (a train_images checkpoint)\n"); return 2; }
    if (n_eval < 8 || n_recon < 8 || chains < 1 || recon_iters < 0 || n_z < 0 || long_steps < 10 || long_n < 1 || long_n > CHUNK) {
        fprintf(stderr, "error: need --n-eval, --n-recon >= 8, --chains >= 1, --long-steps >= 10, 1 <= --long-chains <= %d\n", CHUNK);
        return 2;
    }
    {
        static const char *const starts[2] = { "noise", "baseline" };
        static const char *const clamps[2] = { "hard", "anneal" }; /* index = anneal */
        static const char *const opts[2] = { "adam", "sgd" };     /* index = EBM_OPT_* */
        if ((cs = lookup("cond-start", cond_start, starts, 2)) < 0 || (c.anneal = lookup("clamp", clamp, clamps, 2)) < 0 ||
            (c.recon_opt = lookup("recon-opt", recon_opt, opts, 2)) < 0)
            return 2;
    }
    if (strcmp(tasks, "all") != 0) { /* every name in the list must be a task */
        char buf[256], *tok;
        snprintf(buf, sizeof buf, "%s", tasks);
        for (tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
            if (lookup("task", tok, all_tasks, 7) < 0) return 2;
    }
    if (threads > 0) ebm_set_threads(threads);
    if (ebm_trainer_load(&c.t, &c.m, ckpt, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    c.chain = c.t.cfg.chain;
    c.chain.first_step = 0;
    if (k > 0) c.chain.n_steps = k;
    if (stanley >= 0) c.chain.aniso_th = stanley;
    if (c.chain.aniso_th > 0) printf("chains: STANLEY steps, th %g (reconstruction through isotropic ones)\n", (double)c.chain.aniso_th);
    c.noise = c.t.cfg.start == EBM_START_GAUSSIAN || (c.t.cfg.start == EBM_START_PERSISTENT && c.t.cfg.restart == EBM_START_GAUSSIAN) ? EBM_START_GAUSSIAN
                                                                                                                                       : EBM_START_UNIFORM;
    c.rz.seed = (uint64_t)seed; c.rz.stream = 1000;
    c.ru.seed = (uint64_t)seed; c.ru.stream = 1001;
    c.H = c.m.in_h; c.W = c.m.in_w; c.C = c.m.in_c;
    c.D = (size_t)c.H * c.W * c.C;
    c.out = out;
    mkdir(out, 0777);
    /* one graph for all: second-order (reconstruction) work on a chunk, plus MALA's state */
    if (ebm_model_step_bytes(&c.m, CHUNK, EBM_STEP_SECOND_ORDER, &bytes, &err) != EBM_OK ||
        ebm_model_step_bytes(&c.m, CHUNK, EBM_STEP_INPUT_GRAD, &b2, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    if (ebm_graph_create(&c.g, 2 * bytes + b2 + (3 * CHUNK * c.D + 2 * CHUNK) * sizeof(float) + (1 << 20), &err) != EBM_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    if (ebm_mnist_load(&test, data_dir, 1, &err) != EBM_OK || ebm_mnist_load(&train, data_dir, 0, &err) != EBM_OK) {
        fprintf(stderr, "error: %s\n(Fashion-MNIST: apt-get install dataset-fashion-mnist)\n", err.msg);
        return 1;
    }
    if (test.h != c.H || test.w != c.W || test.c != c.C) { fprintf(stderr, "error: the checkpoint's model is for %dx%dx%d images\n", c.H, c.W, c.C); return 1; }
    if (mnist_dir) {
        if (ebm_mnist_load(&mnist, mnist_dir, 1, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
        have_mnist = 1;
    }
    if (n_eval > test.n) n_eval = test.n;
    if (n_recon > n_eval) n_recon = n_eval;
    if (n_z > n_eval) n_z = n_eval;
    xt = FALLOC((size_t)n_eval * c.D);
    ebm_dataset_get(&test, 0, n_eval, xt);
    printf("generate: %s, iteration %ld, %s starts, K %d, step %g, noise %g; %d threads, %s\n", ckpt, c.t.iter, ebm_start_name(c.noise), c.chain.n_steps,
           c.chain.step, c.chain.noise, ebm_threads(), ebm_isa());
#define WANT(name) (!strcmp(tasks, "all") || strstr(tasks, name))
    if (!rc && WANT("sample")) rc = task_sample(&c, 64);
    if (!rc && WANT("interp")) rc = task_interp(&c, 8, 10);
    if (!rc && WANT("anomaly")) rc = task_anomaly(&c, xt, n_eval, have_mnist ? &mnist : NULL);
    if (!rc && (WANT("inpaint") || WANT("superres"))) {
        baseline_data bd;
        size_t j;
        xtrain = FALLOC((size_t)train.n * c.D);
        mean = FALLOC(c.D);
        ebm_dataset_get(&train, 0, train.n, xtrain);
        for (i = 0; i < train.n; i++)
            for (j = 0; j < c.D; j++) mean[j] += xtrain[(size_t)i * c.D + j] / (float)train.n;
        bd.train = xtrain; bd.n_train = train.n; bd.mean = mean;
        if (WANT("inpaint")) {
            static const char *const mnames[3] = { "center", "lower", "random" };
            float *mask = FALLOC((size_t)n_eval * c.D);
            int mk;
            for (mk = 0; mk < 3 && !rc; mk++) {
                ebm_inpaint_mask(mk, &c.rz, 0, n_eval, c.H, c.W, c.C, mask);
                rc = task_inpaint(&c, mnames[mk], mask, xt, n_eval, &bd, chains, n_z, recon_iters, recon_lr, cs);
            }
            if (!rc && mask_path) { /* the user's (H, W) mask, the same for every image */
                float *um = NULL;
                int nd, shape[4];
                size_t p;
                if (ebm_npy_load(mask_path, &um, &nd, shape, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = -1; }
                else if (nd != 2 || shape[0] != c.H || shape[1] != c.W) { fprintf(stderr, "error: %s: expected shape (%d, %d)\n", mask_path, c.H, c.W); rc = -1; }
                else {
                    for (i = 0; i < n_eval; i++)
                        for (p = 0; p < c.D; p++) mask[(size_t)i * c.D + p] = um[p / c.C] != 0;
                    rc = task_inpaint(&c, "user", mask, xt, n_eval, &bd, chains, n_z, recon_iters, recon_lr, cs);
                }
                free(um);
            }
            free(mask);
        }
        if (!rc && WANT("superres")) rc = task_superres(&c, xt, n_eval, chains, n_z, recon_iters, recon_lr, cs);
    }
    if (!rc && WANT("recon")) rc = task_recon(&c, xt, n_recon, have_mnist ? &mnist : NULL, recon_iters, recon_lr);
    if (!rc && WANT("longrun")) rc = task_longrun(&c, xt, long_n, long_steps);
    printf("generate ckpt=%s tasks=%s seconds=%.1f status=%s\n", ckpt, tasks, ebm_time_sec() - t_start, rc ? "error" : "ok");
    free(xt); free(xtrain); free(mean);
    ebm_dataset_free(&test); ebm_dataset_free(&train);
    if (have_mnist) ebm_dataset_free(&mnist);
    ebm_graph_destroy(c.g);
    ebm_trainer_free(&c.t);
    ebm_model_free(&c.m);
    return rc ? 1 : 0;
}
