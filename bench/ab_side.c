/* One side of `make bench-ab`: the cases, built against one copy of ebm.h.
   bench/ab.c links two of these (-DAB_SIDE=base and -DAB_SIDE=new, each
   with its own ebm.h on the include path) and times them alternately in
   one process. EBM_STATIC keeps each copy's functions to itself. */
#define EBM_STATIC
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include "layer_geom.h"
#include <stdlib.h>

#define AB_CAT2(a, b) a##_##b
#define AB_CAT(a, b) AB_CAT2(a, b)
#define AB_FN(name) AB_CAT(AB_SIDE, name)

static ebm_model m;
static ebm_graph *g;
static float *x, *w, *gy;
static void *scratch;
static int kind, shape[4];
static long iteration;
static ebm__cgeom G;
static ebm_rng rng;

static void need(int ok)
{
    if (!ok) { fprintf(stderr, "bench-ab: setup failed\n"); exit(1); }
}

/* Case c: 0 gen28 (forward + gradient wrt z and the parameters), 16/32/64
   one Langevin step of net28_nf<c> (forward + grad_x), 100 + 16 the same
   of net28_nf16 at batch 16, 200 + 32 of net28_nf32_silu, 1 train_nf32 (as
   make bench's: K = 40 Langevin steps on 64 samples, the ML loss backward
   on 64 samples and 64 data, an Adam step), 1000 + 10 l + p pass p (0
   forward, 1 input gradient, 2 weight gradient) of net28_nf32's layer l
   alone, 2000 + 10 l + p the same of net28_nf16's, 3000 + 10 l + p of
   gen28's (pass p of the conv each transposed conv transposes: pass 1 is
   the generator's forward, pass 0 its input gradient), 4000 + 10 l + p
   of net28_nf64's, 5000 + 10 l + p of net32c3_nf32's. Batch 64. */
void AB_FN(setup)(int c)
{
    ebm_error e;
    ebm_rng r;
    size_t n;
    kind = c;
    r.seed = 2; r.stream = EBM_STREAM_USER;
    if (c >= 1000) {
        const ebm_layer *L;
        size_t nx, ny, nw, sb;
        if (c >= 3000 && c < 4000) need(ebm_model_generator28(&m, 100, 64, 1, 1) == EBM_OK);
        else if (c >= 5000) need(ebm_model_convnet(&m, 3, 32, 32, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK);
        else need(ebm_model_convnet(&m, 1, 28, c >= 4000 ? 64 : c >= 2000 ? 16 : 32, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK);
        L = &m.layer[c % 1000 / 10];
        sb = layer_geom(L, 64, &G);
        nx = (size_t)G.n * G.hx * G.wx * G.cx; ny = (size_t)G.n * G.hy * G.wy * G.cy; nw = (size_t)G.k * G.k * G.cx * G.cy;
        /* 64-byte aligned, as the graph's arena places tensors */
        need(posix_memalign((void **)&x, 64, nx * 4) == 0 && posix_memalign((void **)&gy, 64, ny * 4) == 0 &&
             posix_memalign((void **)&w, 64, nw * 4) == 0 && posix_memalign(&scratch, 64, sb) == 0);
        ebm_rng_normal(&r, 0, 0, x, nx); ebm_rng_normal(&r, 1, 0, gy, ny); ebm_rng_normal(&r, 2, 0, w, nw);
        return;
    }
    if (c == 1) { /* x: samples then data; w: the loss weights +1/B, -1/B */
        int i;
        need(ebm_model_convnet(&m, 1, 28, 32, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK);
        need(ebm_graph_create(&g, (size_t)512 << 20, &e) == EBM_OK);
        need((x = (float *)malloc((size_t)2 * 64 * 784 * sizeof *x)) != NULL && (w = (float *)malloc(128 * sizeof *w)) != NULL);
        for (i = 0; i < 128; i++) w[i] = i < 64 ? 1.0f / 64 : -1.0f / 64;
        ebm_rng_uniform(&r, 1000, 0, -1, 1, x + 64 * 784, (size_t)64 * 784);
        rng = r;
        iteration = 0;
        return;
    }
    if (c == 0) {
        need(ebm_model_generator28(&m, 100, 64, 1, 1) == EBM_OK);
        shape[0] = 64; shape[1] = 1; shape[2] = 1; shape[3] = 100;
    } else {
        need(ebm_model_convnet(&m, 1, 28, c % 100, c >= 200 ? EBM_ACT_SILU : EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK);
        shape[0] = c >= 100 && c < 200 ? 16 : 64; shape[1] = 28; shape[2] = 28; shape[3] = 1;
    }
    need(ebm_graph_create(&g, (size_t)512 << 20, &e) == EBM_OK);
    n = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
    need((x = (float *)malloc(n * sizeof *x)) != NULL);
    ebm_rng_normal(&r, 0, 0, x, n);
}

void AB_FN(run)(void)
{
    ebm_var *xv, *y, *gx = NULL;
    if (kind >= 1000) {
        const int pass = kind % 10;
        if (pass == 0) ebm__conv_fwd(&G, x, w, NULL, gy, scratch, 0, 0.0f);
        else if (pass == 1) ebm__conv_bwd_data(&G, gy, w, NULL, x, scratch);
        else ebm__conv_bwd_weight(&G, x, gy, w, scratch);
        return;
    }
    if (kind == 1) {
        ebm_langevin cfg;
        int i, s[4] = { 64, 28, 28, 1 }, ws[4] = { 64, 1, 1, 1 };
        for (i = 0; i < 64; i++) ebm_rng_uniform(&rng, (uint64_t)i, 100000u + (uint32_t)iteration, -1, 1, x + (size_t)i * 784, 784);
        ebm_langevin_default(&cfg);
        cfg.n_steps = 40;
        cfg.first_step = (uint32_t)iteration * 40;
        ebm_langevin_run(&m, g, &cfg, &rng, 0, x, 64, NULL);
        ebm_model_zero_grad(&m);
        for (i = 0; i < 2; i++) {
            ebm_graph_reset(g);
            y = ebm_dot(g, ebm_model_forward(&m, g, ebm_leaf(g, x + (size_t)i * 64 * 784, 4, s)), ebm_leaf(g, w + i * 64, 4, ws));
            ebm_model_backward(&m, g, y);
        }
        ebm_adam_step(&m, 1e-4f, 0.9f, 0.999f, 1e-8f, ++iteration);
        need(ebm_graph_status(g) == EBM_OK);
        return;
    }
    ebm_graph_reset(g);
    xv = ebm_leaf(g, x, 4, shape);
    if (kind == 0) {
        y = ebm_sqnorm(g, ebm_model_forward(&m, g, xv));
        ebm_model_zero_grad(&m);
        ebm_model_backward_input(&m, g, y, xv, &gx);
    } else {
        y = ebm_model_forward(&m, g, xv);
        ebm_grad(g, y, NULL, 1, &xv, &gx, 0);
    }
    need(ebm_graph_status(g) == EBM_OK);
}

void AB_FN(teardown)(void)
{
    free(x); free(gy); free(w); free(scratch);
    x = gy = w = NULL; scratch = NULL;
    if (kind < 1000) ebm_graph_destroy(g);
    ebm_model_free(&m);
}

double AB_FN(time_sec)(void) { return ebm_time_sec(); }
