/* crosscheck: exports reference ConvNets, a batch, and what ebm.h computes on
   them (energies, grad_x, grad_theta, a Hessian-vector product) as NPY files,
   for tests/crosscheck.py to recompute in PyTorch (float64) and compare.
   Also exports freshly initialised models for PyTorch's init statistics.
   Usage: crosscheck DIR */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int save(const char *dir, const char *name, const float *d, int ndim, const int *shape)
{
    char path[512];
    ebm_error e;
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    if (ebm_npy_save(path, d, ndim, shape, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    return 0;
}

/* One case: a ConvNet (C, hw, nf, activation) on a batch; everything in PyTorch layouts. */
static void run_case(const char *dir, const char *tag, int C, int hw, int nf, int act, int n)
{
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    ebm_rng r;
    size_t nx = (size_t)n * C * hw * hw, i;
    float *x = (float *)malloc(nx * 4), *v = (float *)malloc(nx * 4), *tmp = (float *)malloc(nx * 4);
    float *tw, *tg;
    int s[4], one[1], sx[4];
    ebm_var *xv, *vv, *y, *gx = NULL, *hv = NULL;
    char name[64];
    if (ebm_model_convnet(&m, C, hw, nf, act, 0.2f, 5) != EBM_OK) { fprintf(stderr, "error: %s\n", m.err.msg); exit(1); }
    if (ebm_graph_create(&g, (size_t)256 << 20, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    ebm_graph_reset(g);
    r.seed = 17; r.stream = EBM_STREAM_USER;
    for (i = 0; i < (size_t)n; i++) {
        ebm_rng_uniform(&r, i, 0, -1, 1, x + i * C * hw * hw, (size_t)C * hw * hw);
        ebm_rng_normal(&r, i, 1, v + i * C * hw * hw, (size_t)C * hw * hw);
    }
    s[0] = n; s[1] = hw; s[2] = hw; s[3] = C;
    xv = ebm_leaf(g, x, 4, s);
    vv = ebm_leaf(g, v, 4, s);
    y = ebm_model_forward(&m, g, xv);
    /* energies, grad_x sum f, grad_theta sum f; Hv = grad_x (v . grad_x sum f) */
    ebm_grad(g, y, NULL, 1, &xv, &gx, 1);
    ebm_grad(g, ebm_dot(g, gx, vv), NULL, 1, &xv, &hv, 0);
    ebm_model_zero_grad(&m);
    ebm_model_backward(&m, g, ebm_sum(g, y));
    if (ebm_graph_status(g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); exit(1); }
    tw = (float *)malloc(m.n_params * 4); tg = (float *)malloc(m.n_params * 4);
    ebm_model_export_torch(&m, tw);
    /* the gradient block has the parameters' layout: export it the same way */
    {
        float *saved = (float *)malloc(m.n_params * 4);
        memcpy(saved, m.params, m.n_params * 4);
        memcpy(m.params, m.grads, m.n_params * 4);
        ebm_model_export_torch(&m, tg);
        memcpy(m.params, saved, m.n_params * 4);
        free(saved);
    }
    one[0] = (int)m.n_params;
    sx[0] = n; sx[1] = C; sx[2] = hw; sx[3] = hw;
    snprintf(name, sizeof name, "%s_params", tag); save(dir, name, tw, 1, one);
    snprintf(name, sizeof name, "%s_grad_params", tag); save(dir, name, tg, 1, one);
    ebm_nhwc_to_nchw(x, tmp, n, C, hw, hw); snprintf(name, sizeof name, "%s_x", tag); save(dir, name, tmp, 4, sx);
    ebm_nhwc_to_nchw(v, tmp, n, C, hw, hw); snprintf(name, sizeof name, "%s_v", tag); save(dir, name, tmp, 4, sx);
    ebm_nhwc_to_nchw(gx->data, tmp, n, C, hw, hw); snprintf(name, sizeof name, "%s_grad_x", tag); save(dir, name, tmp, 4, sx);
    ebm_nhwc_to_nchw(hv->data, tmp, n, C, hw, hw); snprintf(name, sizeof name, "%s_hvp", tag); save(dir, name, tmp, 4, sx);
    one[0] = n; snprintf(name, sizeof name, "%s_f", tag); save(dir, name, y->data, 1, one);
    printf("case %s: C=%d hw=%d nf=%d act=%s batch=%d params=%lu\n", tag, C, hw, nf, ebm_act_name(act), n, (unsigned long)m.n_params);
    free(x); free(v); free(tmp); free(tw); free(tg);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* Fresh models as ebm_model_alloc initialises them, in PyTorch's layout. */
static void export_init(const char *dir, const char *tag, ebm_model *m)
{
    float *t = (float *)malloc(m->n_params * 4);
    int one[1];
    char name[64];
    ebm_model_export_torch(m, t);
    one[0] = (int)m->n_params;
    snprintf(name, sizeof name, "init_%s", tag);
    save(dir, name, t, 1, one);
    free(t);
    ebm_model_free(m);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "crosscheck_data";
    ebm_model m;
    mkdir(dir, 0755);
    run_case(dir, "leaky28", 1, 28, 16, EBM_ACT_LEAKY_RELU, 4);
    run_case(dir, "silu28", 1, 28, 16, EBM_ACT_SILU, 4);
    run_case(dir, "silu32", 3, 32, 8, EBM_ACT_SILU, 3);
    ebm_model_convnet(&m, 3, 32, 64, EBM_ACT_LEAKY_RELU, 0.2f, 99); export_init(dir, "convnet32", &m);
    ebm_model_generator28(&m, 100, 64, 1, 99); export_init(dir, "generator28", &m);
    ebm_model_mlp_prior(&m, 100, 200, EBM_ACT_LEAKY_RELU, 0.2f, 99); export_init(dir, "prior", &m);
    return 0;
}
