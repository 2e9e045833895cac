/* make opt-check: this program built at -O2 and at -O3 must write the same
   bytes. The kernels do not leave their unrolling and vectorising to -O3
   (see EBM__UNROLL, ebm__store_row, ebm__vexpf), and those hand-written
   forms do the scalar forms' operations in the same order, so the results
   are the same bits at either level. Written: the energies, input gradients
   and parameter gradients of three reference nets (LeakyReLU n_f = 32 and
   16, SiLU n_f = 32: the fused and the held-derivative paths, the vector
   exp) and the generator's input and parameter gradients (the transposed
   passes and the dense 1x1 -> 7x7 layer), at batch 64. */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdio.h>
#include <stdlib.h>

static FILE *out;

static void put(const float *p, size_t n)
{
    if (fwrite(p, sizeof *p, n, out) != n) { fprintf(stderr, "opt_check: write failed\n"); exit(1); }
}

static void need(int ok, const char *what)
{
    if (!ok) { fprintf(stderr, "opt_check: %s failed\n", what); exit(1); }
}

/* A recorded forward of m on in (shape), then the gradients of sum f
   (sq: of |f|^2) wrt the parameters and the input, both written. */
static void put_gradients(ebm_model *m, ebm_graph *g, float *in, const int *shape, int sq)
{
    ebm_var *v, *y, *gv;
    ebm_graph_reset(g);
    v = ebm_leaf(g, in, 4, shape);
    y = ebm_model_forward(m, g, v);
    ebm_model_zero_grad(m);
    need(ebm_model_backward_input(m, g, sq ? ebm_sqnorm(g, y) : ebm_sum(g, y), v, &gv) == EBM_OK, "model_backward_input");
    put(m->grads, m->n_params);
    put(gv->data, (size_t)shape[0] * shape[1] * shape[2] * shape[3]);
}

int main(int argc, char **argv)
{
    static const int acts[3] = { EBM_ACT_LEAKY_RELU, EBM_ACT_SILU, EBM_ACT_LEAKY_RELU }, nfs[3] = { 32, 32, 16 };
    const int batch = 64, xs[4] = { 64, 28, 28, 1 }, zs[4] = { 64, 1, 1, 100 };
    float *x = (float *)malloc((size_t)batch * 784 * sizeof *x), *z = (float *)malloc((size_t)batch * 100 * sizeof *z);
    float *f = (float *)malloc((size_t)batch * sizeof *f), *dx = (float *)malloc((size_t)batch * 784 * sizeof *dx);
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    ebm_rng r;
    int k;
    if (argc != 2) { fprintf(stderr, "usage: opt_check OUT\n"); return 2; }
    need(x && z && f && dx, "malloc");
    need((out = fopen(argv[1], "wb")) != NULL, "fopen");
    r.seed = 3; r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&r, 0, 0, -1, 1, x, (size_t)batch * 784);
    ebm_rng_normal(&r, 1, 0, z, (size_t)batch * 100);
    need(ebm_graph_create(&g, (size_t)512 << 20, &e) == EBM_OK, "graph_create");
    for (k = 0; k < 3; k++) {
        need(ebm_model_convnet(&m, 1, 28, nfs[k], acts[k], 0.2f, 1) == EBM_OK, "model_convnet");
        need(ebm_model_score(&m, g, x, batch, f, dx) == EBM_OK, "model_score"); /* the Langevin step's pass */
        put(f, (size_t)batch);
        put(dx, (size_t)batch * 784);
        put_gradients(&m, g, x, xs, 0);
        ebm_model_free(&m);
    }
    need(ebm_model_generator28(&m, 100, 64, 1, 1) == EBM_OK, "model_generator28");
    put_gradients(&m, g, z, zs, 1);
    need(ebm_graph_status(g) == EBM_OK, "the graph");
    need(fclose(out) == 0, "fclose");
    printf("opt_check isa=%s\n", ebm_isa());
    ebm_model_free(&m);
    ebm_graph_destroy(g);
    free(x); free(z); free(f); free(dx);
    return 0;
}
