/* evaluate: the project's measure of sample quality on Fashion-MNIST, built
   on ebm.h. A small classifier (conv 32 - pool - conv 64 - pool - 128 - 10,
   LeakyReLU) is trained once; its 128 penultimate features score samples by
     fid           Frechet distance between Gaussians fitted to the features
                   of the samples and of the 10,000 test images (lower is better);
     class_entropy entropy (nats) of the histogram of predicted classes: ln 10
                   = 2.303 when all ten classes appear equally, 0 for one class;
     nn_dist       mean L2 distance (pixels in [-1, 1]) from each sample to its
                   nearest training image: near 0 means memorised copies.
   Usage:
     evaluate --train [--epochs E]      train the classifier, print its test accuracy
              [--steps S]               (or only S steps: a smoke test)
     evaluate --self-test [--n N]       reference scores: training images, blurred
                                        test images, uniform noise (N of each)
     evaluate SAMPLES.npy [...]         score (N, 1, 28, 28) float32 arrays in [-1, 1]
   The three combine: --train first, then the self-test and the files are
   scored by the classifier just trained.
   --classifier PATH (default build/classifier.ckpt), --threads T, --subset N
   (only the first N training and test images: a smoke test whose scores are
   not comparable with the full sets'). */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include "flags.h"
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define FEAT 128
#define CLASSES 10
#define CHUNK 500

static void classifier_build(ebm_model *m, uint64_t seed)
{
    ebm_model_init(m, 1, 28, 28);
    ebm_model_add_conv2d(m, 32, 3, 1, 1, 1);
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.1f);
    ebm_model_add_maxpool(m, 2, 2);
    ebm_model_add_conv2d(m, 64, 3, 1, 1, 1);
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.1f);
    ebm_model_add_maxpool(m, 2, 2);
    ebm_model_add_linear(m, FEAT, 1);
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.1f);
    ebm_model_add_linear(m, CLASSES, 1);
    ebm_model_alloc(m, seed);
}
#define FEAT_LAYERS 8 /* layers up to the 128 features */

/* Features (n x FEAT) and predicted classes of n images (NHWC in [-1, 1]). */
static int features(ebm_model *m, ebm_graph *g, const float *x, int n, double *feat, int *pred)
{
    int i, j, k;
    for (i = 0; i < n; i += CHUNK) {
        int b = n - i < CHUNK ? n - i : CHUNK, s[4] = { 0, 28, 28, 1 };
        ebm_var *h, *logits;
        s[0] = b;
        ebm_graph_reset(g);
        h = ebm_model_forward_partial(m, g, ebm_leaf(g, (float *)x + (size_t)i * 784, 4, s), FEAT_LAYERS);
        logits = ebm_model_forward(m, g, ebm_leaf(g, (float *)x + (size_t)i * 784, 4, s));
        if (ebm_graph_status(g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); return -1; }
        for (j = 0; j < b; j++) {
            int best = 0;
            for (k = 0; k < FEAT; k++) feat[(size_t)(i + j) * FEAT + k] = h->data[(size_t)j * FEAT + k];
            for (k = 1; k < CLASSES; k++) if (logits->data[j * CLASSES + k] > logits->data[j * CLASSES + best]) best = k;
            pred[i + j] = best;
        }
    }
    return 0;
}

/* Eigen-decomposition of a symmetric n x n matrix by cyclic Jacobi rotations:
   a is destroyed, its diagonal left with the eigenvalues; v gets the vectors. */
static void jacobi(double *a, double *v, int n)
{
    int sweep, p, q, k;
    for (p = 0; p < n; p++) for (q = 0; q < n; q++) v[p * n + q] = p == q;
    for (sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (p = 0; p < n; p++) for (q = 0; q < n; q++) { if (p != q) off += a[p * n + q] * a[p * n + q]; else diag += a[p * n + p] * a[p * n + p]; }
        if (off <= 1e-26 * diag) break;
        for (p = 0; p < n; p++)
            for (q = p + 1; q < n; q++) {
                double apq = a[p * n + q], th, t, c, s;
                if (fabs(apq) < 1e-300) continue;
                th = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
                c = 1 / sqrt(t * t + 1); s = t * c;
                for (k = 0; k < n; k++) { /* columns p, q */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq; a[k * n + q] = s * akp + c * akq;
                }
                for (k = 0; k < n; k++) { /* rows p, q */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk; a[q * n + k] = s * apk + c * aqk;
                }
                for (k = 0; k < n; k++) {
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq; v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
}

static void moments(const double *f, int n, double *mu, double *cov)
{
    int i, a, b;
    for (a = 0; a < FEAT; a++) { mu[a] = 0; for (i = 0; i < n; i++) mu[a] += f[(size_t)i * FEAT + a]; mu[a] /= n; }
    for (a = 0; a < FEAT; a++)
        for (b = a; b < FEAT; b++) {
            double s = 0;
            for (i = 0; i < n; i++) s += (f[(size_t)i * FEAT + a] - mu[a]) * (f[(size_t)i * FEAT + b] - mu[b]);
            cov[a * FEAT + b] = cov[b * FEAT + a] = s / (n > 1 ? n - 1 : 1);
        }
}

/* |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 */
static double frechet(const double *mu1, const double *s1, const double *mu2, const double *s2)
{
    static double a[FEAT * FEAT], v[FEAT * FEAT], r[FEAT * FEAT], t[FEAT * FEAT];
    double d = 0, tr = 0;
    int i, j, k;
    for (i = 0; i < FEAT; i++) d += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]) + s1[i * FEAT + i] + s2[i * FEAT + i];
    memcpy(a, s1, sizeof a);
    jacobi(a, v, FEAT);
    for (i = 0; i < FEAT; i++) /* r = S1^1/2 = V sqrt(L) V' */
        for (j = 0; j < FEAT; j++) {
            double s = 0;
            for (k = 0; k < FEAT; k++) s += v[i * FEAT + k] * sqrt(a[k * FEAT + k] > 0 ? a[k * FEAT + k] : 0) * v[j * FEAT + k];
            r[i * FEAT + j] = s;
        }
    for (i = 0; i < FEAT; i++) /* t = r S2 */
        for (j = 0; j < FEAT; j++) { double s = 0; for (k = 0; k < FEAT; k++) s += r[i * FEAT + k] * s2[k * FEAT + j]; t[i * FEAT + j] = s; }
    for (i = 0; i < FEAT; i++) /* a = t r */
        for (j = 0; j < FEAT; j++) { double s = 0; for (k = 0; k < FEAT; k++) s += t[i * FEAT + k] * r[k * FEAT + j]; a[i * FEAT + j] = s; }
    for (i = 0; i < FEAT; i++) for (j = i + 1; j < FEAT; j++) a[i * FEAT + j] = a[j * FEAT + i] = 0.5 * (a[i * FEAT + j] + a[j * FEAT + i]);
    jacobi(a, v, FEAT);
    for (i = 0; i < FEAT; i++) tr += sqrt(a[i * FEAT + i] > 0 ? a[i * FEAT + i] : 0);
    return d - 2 * tr;
}

typedef struct { ebm_model *m; ebm_graph *g; const ebm_dataset *train; float *train_f; double mu[FEAT], cov[FEAT * FEAT]; } scorer;

/* Score n images x (NHWC, [-1, 1]); prints one key=value line set under `name`. */
static int score(scorer *sc, const char *name, const float *x, int n)
{
    double *f = (double *)malloc((size_t)n * FEAT * sizeof *f), mu[FEAT], *cov = (double *)malloc(FEAT * FEAT * sizeof *cov), ent = 0, nn = 0;
    int *pred = (int *)malloc((size_t)n * sizeof *pred), hist[CLASSES] = { 0 }, i;
    long j;
    if (!f || !cov || !pred || features(sc->m, sc->g, x, n, f, pred) != 0) return -1;
    moments(f, n, mu, cov);
    for (i = 0; i < n; i++) hist[pred[i]]++;
    for (i = 0; i < CLASSES; i++) if (hist[i]) ent -= (double)hist[i] / n * log((double)hist[i] / n);
    /* nearest training image: the training set in pixels, one sample per task */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic) reduction(+ : nn)
#endif
    for (j = 0; j < n; j++) {
        const float *s = x + (size_t)j * 784;
        float best = 1e30f;
        int t, p, l;
        for (t = 0; t < sc->train->n; t++) {
            const float *q = sc->train_f + (size_t)t * 784;
            float acc[16] = { 0 }, d = 0; /* 16 independent sums: 784 = 49 x 16, and the compiler can vectorise */
            for (p = 0; p < 784; p += 16)
                for (l = 0; l < 16; l++) { float e = s[p + l] - q[p + l]; acc[l] += e * e; }
            for (l = 0; l < 16; l++) d += acc[l];
            if (d < best) best = d;
        }
        nn += sqrt((double)best);
    }
    printf("%s n=%d fid=%.3f class_entropy=%.3f nn_dist=%.3f classes=", name, n, frechet(mu, cov, sc->mu, sc->cov), ent, nn / n);
    for (i = 0; i < CLASSES; i++) printf("%d%s", hist[i], i + 1 < CLASSES ? "," : "\n");
    free(f); free(cov); free(pred);
    return 0;
}

static double accuracy(ebm_model *m, ebm_graph *g, const ebm_dataset *test, float *buf)
{
    int i, correct = 0, *pred = (int *)malloc((size_t)test->n * sizeof *pred);
    double *f = (double *)malloc((size_t)test->n * FEAT * sizeof *f);
    ebm_dataset_get(test, 0, test->n, buf);
    features(m, g, buf, test->n, f, pred);
    for (i = 0; i < test->n; i++) correct += pred[i] == test->labels[i];
    free(pred); free(f);
    return (double)correct / test->n;
}

int main(int argc, char **argv)
{
    const char *ckpt = "build/classifier.ckpt";
    int train_mode = 0, self_test = 0, threads = 0, subset = 0, epochs = 4, n_ref = 1000;
    long steps = 0; /* a short run (smoke tests) */
    const flag f[] = {
        { "train", "train the classifier, print its test accuracy", 'b', &train_mode, F_ANY },
        { "epochs", "epochs of --train (default 4)", 'i', &epochs, F_POS },
        { "steps", "--train: only this many steps, a smoke test (default 0: --epochs)", 'l', &steps, F_NONNEG },
        { "self-test", "reference scores: training images, blurred test images, uniform noise", 'b', &self_test, F_ANY },
        { "n", "--self-test: images of each reference (default 1000)", 'i', &n_ref, F_POS },
        { "classifier", "the classifier's checkpoint (default build/classifier.ckpt)", 's', &ckpt, F_ANY },
        { "threads", "OpenMP threads (default 0: OpenMP's, OMP_NUM_THREADS or every core)", 'i', &threads, F_NONNEG },
        { "subset", "only the first N training and test images, at least 128: a smoke test (default 0: all)", 'i', &subset, F_NONNEG },
    };
    const int n_flags = (int)(sizeof f / sizeof f[0]);
    const char **files;
    int i, n_files = 0, rc = 0;
    ebm_dataset train, test;
    ebm_model m;
    ebm_graph *g = NULL;
    ebm_error err;
    size_t bytes;
    float *buf;
    scorer sc;
    files = (const char **)malloc((size_t)argc * sizeof *files); /* the sample files, in order */
    if (!files || parse_flags_pos("evaluate --train | --self-test | SAMPLES.npy ... (float32, (N, 1, 28, 28), in [-1, 1])",
                                  argc, argv, f, n_flags, files, &n_files) != 0) {
        free(files);
        return 2;
    }
    if (!train_mode && !self_test && n_files == 0) {
        fprintf(stderr, "error: nothing to do: --train, --self-test or sample files (see --help)\n");
        free(files);
        return 2;
    }
    if (threads > 0) ebm_set_threads(threads);
    if (subset > 0 && subset < 128) { fprintf(stderr, "error: --subset must be at least 128 (one training batch)\n"); return 2; }
    if (ebm_mnist_load(&train, NULL, 0, &err) != EBM_OK || ebm_mnist_load(&test, NULL, 1, &err) != EBM_OK) {
        fprintf(stderr, "error: %s\n(Fashion-MNIST: apt-get install dataset-fashion-mnist)\n", err.msg);
        return 1;
    }
    if (subset > 0) { /* the first N of each set: the arrays stay as loaded, only n shrinks */
        if (train.n > subset) train.n = subset;
        if (test.n > subset) test.n = subset;
    }
    buf = (float *)malloc((size_t)test.n * 784 * sizeof *buf);
    if (train_mode) {
        const int B = 128;
        long t;
        ebm_rng rd;
        float x[128 * 784];
        int labels[128], s[4] = { 128, 28, 28, 1 };
        double t0 = ebm_time_sec();
        if (steps <= 0) steps = (long)epochs * (train.n / B);
        classifier_build(&m, 7);
        ebm_model_step_bytes(&m, CHUNK, EBM_STEP_FORWARD, &bytes, &err);
        {
            size_t b2;
            ebm_model_step_bytes(&m, B, EBM_STEP_PARAM_GRAD, &b2, &err);
            bytes = (bytes > b2 ? bytes : b2) * 2 + (1 << 20);
        }
        if (ebm_graph_create(&g, bytes, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
        rd.seed = 7; rd.stream = EBM_STREAM_USER;
        for (t = 0; t < steps; t++) {
            float lr = (float)(1e-3 * 0.5 * (1 + cos(3.14159265358979 * (double)t / (double)steps))); /* cosine to 0 */
            ebm_dataset_batch(&train, &rd, (uint64_t)t * B, B, x, labels);
            ebm_graph_reset(g);
            ebm_model_zero_grad(&m);
            {
                int ls[2] = { 128, CLASSES };
                ebm_var *logits = ebm_reshape(g, ebm_model_forward(&m, g, ebm_leaf(g, x, 4, s)), 2, ls);
                ebm_model_backward(&m, g, ebm_softmax_xent(g, logits, labels));
            }
            if (ebm_graph_status(g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); return 1; }
            ebm_adam_step(&m, lr, 0.9f, 0.999f, 1e-8f, t + 1);
            if ((t + 1) % (train.n / B) == 0) {
                printf("epoch %ld  test accuracy %.4f  %.0f s\n", (t + 1) / (train.n / B), accuracy(&m, g, &test, buf), ebm_time_sec() - t0);
                fflush(stdout);
            }
        }
        if (ebm_model_save(&m, ckpt, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
        printf("classifier path=%s test_accuracy=%.4f seconds=%.0f\n", ckpt, accuracy(&m, g, &test, buf), ebm_time_sec() - t0);
        fflush(stdout);
        ebm_graph_destroy(g); /* scoring below sizes its own arena */
        g = NULL;
    }
    if (self_test || n_files > 0) { /* with --train: scored by the classifier just trained */
        double *f;
        int *pred;
        if (!train_mode && ebm_model_load(&m, ckpt, &err) != EBM_OK) { fprintf(stderr, "error: %s\n(train it first: evaluate --train)\n", err.msg); return 1; }
        ebm_model_step_bytes(&m, CHUNK, EBM_STEP_FORWARD, &bytes, &err);
        if (ebm_graph_create(&g, 2 * bytes + (1 << 20), &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
        /* the reference: the test set's features */
        f = (double *)malloc((size_t)test.n * FEAT * sizeof *f);
        pred = (int *)malloc((size_t)test.n * sizeof *pred);
        ebm_dataset_get(&test, 0, test.n, buf);
        if (features(&m, g, buf, test.n, f, pred) != 0) return 1;
        moments(f, test.n, sc.mu, sc.cov);
        free(f); free(pred);
        sc.m = &m; sc.g = g; sc.train = &train;
        sc.train_f = (float *)malloc((size_t)train.n * 784 * sizeof(float));
        if (!sc.train_f) { fprintf(stderr, "error: out of memory\n"); return 1; }
        ebm_dataset_get(&train, 0, train.n, sc.train_f);
        if (self_test) {
            float *x, *y;
            ebm_rng r;
            int k, p, q;
            if (n_ref < 2 || n_ref > test.n) { fprintf(stderr, "error: --n must be in 2..%d\n", test.n); return 2; }
            x = (float *)malloc((size_t)n_ref * 784 * sizeof *x); y = (float *)malloc((size_t)n_ref * 784 * sizeof *y);
            if (!x || !y) { fprintf(stderr, "error: out of memory\n"); return 1; }
            printf("test_accuracy=%.4f\n", accuracy(&m, g, &test, buf));
            ebm_dataset_get(&train, 0, n_ref, x);
            score(&sc, "ref=train", x, n_ref);
            ebm_dataset_get(&test, 0, n_ref, x);
            score(&sc, "ref=test", x, n_ref);
            for (k = 0; k < n_ref; k++) /* 3x3 box blur of test images */
                for (p = 0; p < 28; p++)
                    for (q = 0; q < 28; q++) {
                        float s = 0;
                        int a, b, c = 0;
                        for (a = -1; a <= 1; a++) for (b = -1; b <= 1; b++)
                            if (p + a >= 0 && p + a < 28 && q + b >= 0 && q + b < 28) { s += x[(size_t)k * 784 + (p + a) * 28 + q + b]; c++; }
                        y[(size_t)k * 784 + p * 28 + q] = s / c;
                    }
            score(&sc, "ref=blurred_test", y, n_ref);
            r.seed = 99; r.stream = EBM_STREAM_USER;
            ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, -1.0f, 1.0f, x, n_ref, 784);
            score(&sc, "ref=uniform_noise", x, n_ref);
            free(x); free(y);
        }
        for (i = 0; i < n_files; i++) {
            float *data, *nhwc;
            int nd, shape[4];
            if (ebm_npy_load(files[i], &data, &nd, shape, &err) != EBM_OK) { fprintf(stderr, "error: %s\n", err.msg); rc = 1; continue; }
            if (nd != 4 || shape[1] != 1 || shape[2] != 28 || shape[3] != 28 || shape[0] < 2) {
                fprintf(stderr, "error: %s: expected (N, 1, 28, 28) with N >= 2\n", files[i]); free(data); rc = 1; continue;
            }
            nhwc = (float *)malloc((size_t)shape[0] * 784 * sizeof *nhwc);
            ebm_nchw_to_nhwc(data, nhwc, shape[0], 1, 28, 28);
            {
                char name[1100];
                snprintf(name, sizeof name, "samples=%s", files[i]);
                if (score(&sc, name, nhwc, shape[0]) != 0) rc = 1;
            }
            free(data); free(nhwc);
        }
        free(sc.train_f);
    }
    free(buf);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
    ebm_dataset_free(&train); ebm_dataset_free(&test);
    free(files);
    return rc;
}
