/* ebm.h tests. Built by `make test` as C99, as C++, without OpenMP, with
   EBM_NO_SIMD, and under AddressSanitizer + UBSan. */
#define _POSIX_C_SOURCE 200809L /* pthread barriers: the data-parallel test's workers */
#include <stdlib.h>
#include <pthread.h>
#include <math.h>

/* An allocator hook that counts live blocks and can be told to fail. */
static long t_live, t_calls, t_fail_at = -1;
static void *t_malloc(size_t n)
{
    void *p;
    if (t_fail_at >= 0 && t_calls++ >= t_fail_at) return NULL;
    if (t_fail_at < 0) t_calls++;
    p = malloc(n);
    if (p) t_live++;
    return p;
}
static void t_free(void *p)
{
    if (p) { t_live--; free(p); }
}
#define EBM_MALLOC(n) t_malloc(n)
#define EBM_FREE(p) t_free(p)
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include "harness.h"

/* ------------------------------------------------------------------ helpers */

static uint32_t t_stream = EBM_STREAM_USER;

/* Fresh uniform numbers in [lo, hi) (a new stream every call). */
static void rnd(float *x, size_t n, float lo, float hi)
{
    ebm_rng r;
    r.seed = 1234; r.stream = t_stream++;
    ebm_rng_uniform(&r, 0, 0, lo, hi, x, n);
}

/* Values in +-[lo, hi]: away from the kinks of piecewise-linear activations. */
static void rnd_away(float *x, size_t n, float lo, float hi)
{
    size_t i;
    rnd(x, n, lo, hi);
    for (i = 0; i < n; i += 2) x[i] = -x[i];
}

/* Values spread evenly over (lo, hi) in random order, 1/n of the range
   apart: no two so close that a finite-difference step reorders them (a
   window's maximum switching inside the step is a kink of maxpool). */
static void rnd_spaced(float *x, size_t n, float lo, float hi)
{
    size_t i, j, *rank = (size_t *)calloc(n ? n : 1, sizeof *rank);
    rnd(x, n, 0.0f, 1.0f);
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++) rank[i] += x[j] < x[i] || (x[j] == x[i] && j < i);
    for (i = 0; i < n; i++) x[i] = lo + (hi - lo) * ((float)rank[i] + 0.5f) / (float)n;
    free(rank);
}

static float *falloc(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }
static double *dalloc(size_t n) { return (double *)calloc(n ? n : 1, sizeof(double)); }

/* ||a - b|| / max(||b||, tiny): the norm-wise relative error. */
static double rel_err_fd(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    size_t i;
    for (i = 0; i < n; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
    return sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
}

static double rel_err_ff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    size_t i;
    for (i = 0; i < n; i++) { num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]); den += (double)b[i] * b[i]; }
    return sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
}

/* The reason a graph failed ("" if none). */
static const char *gmsg(const ebm_graph *g)
{
    const ebm_error *e = ebm_graph_error(g);
    return e ? e->msg : "";
}

static ebm_graph *new_graph(size_t mb)
{
    ebm_graph *g = NULL;
    ebm_error e;
    if (ebm_graph_create(&g, mb << 20, &e) != EBM_OK) { printf("cannot create graph: %s\n", e.msg); exit(2); }
    ebm_graph_reset(g);
    return g;
}

/* ------------------------------------------------------------------ double references */
/* The definitions of the ops in double precision, written independently of
   the library's kernels, for finite differences that are exact to ~1e-9. */

typedef struct {
    int n, hx, wx, cx, hy, wy, cy, k, s, p; /* conv geometry */
    int act, order; double a;               /* activations */
    int pk, ps;                             /* pooling */
    const int *labels;                      /* cross-entropy */
    double c;                               /* scale */
} dctx;

/* The trilinear form of convolution: out receives the contraction over the
   other two of (x, w, y); which = 0: y = F(x,w); 1: x = D(y,w); 2: w = G(x,y). */
static void d_conv(const dctx *G, const double *x, const double *w, const double *y, double *out, int which)
{
    int n, ho, wo, kh, kw, ci, co;
    size_t sz = which == 0 ? (size_t)G->n * G->hy * G->wy * G->cy
              : which == 1 ? (size_t)G->n * G->hx * G->wx * G->cx : (size_t)G->k * G->k * G->cx * G->cy;
    memset(out, 0, sz * sizeof *out);
    for (n = 0; n < G->n; n++)
        for (ho = 0; ho < G->hy; ho++)
            for (wo = 0; wo < G->wy; wo++)
                for (kh = 0; kh < G->k; kh++)
                    for (kw = 0; kw < G->k; kw++) {
                        int hi = ho * G->s + kh - G->p, wi = wo * G->s + kw - G->p;
                        if (hi < 0 || hi >= G->hx || wi < 0 || wi >= G->wx) continue;
                        for (ci = 0; ci < G->cx; ci++)
                            for (co = 0; co < G->cy; co++) {
                                size_t ix = (((size_t)n * G->hx + hi) * G->wx + wi) * G->cx + ci;
                                size_t iw = (((size_t)kh * G->k + kw) * G->cx + ci) * G->cy + co;
                                size_t iy = (((size_t)n * G->hy + ho) * G->wy + wo) * G->cy + co;
                                if (which == 0) out[iy] += x[ix] * w[iw];
                                else if (which == 1) out[ix] += y[iy] * w[iw];
                                else out[iw] += x[ix] * y[iy];
                            }
                    }
}

/* An op under test: how to build it with ebm.h and how to evaluate it in double. */
typedef struct {
    const char *name;
    int nin;
    int ndim[3];
    int shape[3][4];
    ebm_var *(*build)(ebm_graph *g, ebm_var **in, const dctx *c);
    void (*eval)(double **in, double *out, const dctx *c);
    dctx c;
    int away;          /* draw inputs away from 0 (kinks) */
    int spaced;        /* draw inputs spaced apart (rnd_spaced) */
    int second_order;  /* also check the derivative of the backward pass */
    int sum_terms;     /* the output is a sum of this many terms in float (see check_op) */
} opcase;

static size_t shape_size(int nd, const int *s)
{
    size_t n = 1;
    int i;
    for (i = 0; i < nd; i++) n *= (size_t)s[i];
    return n;
}

/* L(in) = sum_j r_j op(in)_j in double. */
static double d_loss(const opcase *oc, double **in, const double *r, size_t ny, double *tmp)
{
    double L = 0;
    size_t j;
    oc->eval(in, tmp, &oc->c);
    for (j = 0; j < ny; j++) L += r[j] * tmp[j];
    return L;
}

/* Check an op's forward against the double reference, its gradient (fused and
   composite) against central differences in double, and, if asked, its second
   derivatives (the backward pass differentiated) against differences of
   differences in double. */
static void check_op(const opcase *oc)
{
    ebm_graph *g = new_graph(64);
    ebm_var *in[3], *y, *rv, *gf[3], *gc[3];
    float *fin[3], *r;
    double *din[3], *dr, *tmp, *dy;
    size_t nin[3], ny, i, j;
    int k;
    for (k = 0; k < oc->nin; k++) {
        nin[k] = shape_size(oc->ndim[k], oc->shape[k]);
        fin[k] = falloc(nin[k]);
        din[k] = dalloc(nin[k]);
        if (oc->away) rnd_away(fin[k], nin[k], 0.05f, 1.5f);
        else if (oc->spaced) rnd_spaced(fin[k], nin[k], -1.0f, 1.0f);
        else rnd(fin[k], nin[k], -1.0f, 1.0f);
        for (j = 0; j < nin[k]; j++) din[k][j] = fin[k][j];
        in[k] = ebm_leaf(g, fin[k], oc->ndim[k], oc->shape[k]);
    }
    y = oc->build(g, in, &oc->c);
    CHECK(y != NULL, "%s: build failed: %s", oc->name, gmsg(g));
    if (!y) goto done;
    ny = y->size;
    tmp = dalloc(ny); dy = dalloc(ny); dr = dalloc(ny); r = falloc(ny);
    /* forward; a sum of n terms in float, each term a product (dot) and the
       sum perhaps scaled (mean), is within gamma_(n+1) = (n+1) u / (1 - (n+1) u)
       of the sum of their magnitudes (u = 2^-24; Higham's bound), not of its
       own value (which cancellation can make as small as it likes): that
       scale is the op on |inputs| */
    oc->eval(din, dy, &oc->c);
    if (oc->sum_terms) {
        const double nu = (oc->sum_terms + 1) * ldexp(1.0, -24), gamma = nu / (1 - nu);
        double scale;
        for (k = 0; k < oc->nin; k++) for (j = 0; j < nin[k]; j++) din[k][j] = fabs(din[k][j]);
        oc->eval(din, tmp, &oc->c);
        scale = fabs(tmp[0]);
        for (k = 0; k < oc->nin; k++) for (j = 0; j < nin[k]; j++) din[k][j] = fin[k][j];
        CHECK(fabs(y->data[0] - dy[0]) <= gamma * scale, "%s: forward %.9g, double reference %.9g, beyond gamma_%d of %.9g",
              oc->name, (double)y->data[0], dy[0], oc->sum_terms + 1, scale);
    } else
        CHECK(rel_err_fd(y->data, dy, ny) < 2e-6, "%s: forward differs from the double reference (rel %.2e)", oc->name, rel_err_fd(y->data, dy, ny));
    /* first derivatives: fused (create_graph 0) and composite (1) */
    rnd(r, ny, -1.0f, 1.0f);
    for (j = 0; j < ny; j++) dr[j] = r[j];
    rv = ebm_leaf(g, r, y->ndim, y->shape);
    CHECK(ebm_grad(g, y, rv, oc->nin, in, gf, 0) == EBM_OK, "%s: grad failed: %s", oc->name, gmsg(g));
    if (oc->second_order)
        CHECK(ebm_grad(g, y, rv, oc->nin, in, gc, 1) == EBM_OK, "%s: create_graph grad failed: %s", oc->name, gmsg(g));
    if (ebm_graph_status(g) != EBM_OK) goto done2;
    for (k = 0; k < oc->nin; k++) {
        double *fd = dalloc(nin[k]), h = 1e-6;
        for (j = 0; j < nin[k]; j++) {
            double save = din[k][j], lp, lm;
            din[k][j] = save + h; lp = d_loss(oc, din, dr, ny, tmp);
            din[k][j] = save - h; lm = d_loss(oc, din, dr, ny, tmp);
            din[k][j] = save;
            fd[j] = (lp - lm) / (2 * h);
        }
        CHECK(rel_err_fd(gf[k]->data, fd, nin[k]) < 1e-4, "%s: d/d input %d differs from finite differences (rel %.2e)",
              oc->name, k, rel_err_fd(gf[k]->data, fd, nin[k]));
        if (oc->second_order)
            CHECK(memcmp(gf[k]->data, gc[k]->data, nin[k] * sizeof(float)) == 0,
                  "%s: fused and composite gradients of input %d differ", oc->name, k);
        free(fd);
    }
    /* second derivatives: S = sum_k u_k . dL/din_k; check dS/din against
       d/din of the double directional difference quotient of L along u. */
    if (oc->second_order) {
        ebm_var *uv[3], *S = NULL, *g2[3];
        double *du[3], h = 1e-4;
        for (k = 0; k < oc->nin; k++) {
            float *u = falloc(nin[k]);
            rnd(u, nin[k], -1.0f, 1.0f);
            du[k] = dalloc(nin[k]);
            for (j = 0; j < nin[k]; j++) du[k][j] = u[j];
            uv[k] = ebm_leaf(g, u, oc->ndim[k], oc->shape[k]);
            S = S ? ebm_add(g, S, ebm_dot(g, gc[k], uv[k])) : ebm_dot(g, gc[k], uv[k]);
        }
        CHECK(ebm_grad(g, S, NULL, oc->nin, in, g2, 0) == EBM_OK, "%s: second-order grad failed: %s", oc->name, gmsg(g));
        if (ebm_graph_status(g) == EBM_OK)
            for (k = 0; k < oc->nin; k++) {
                double *fd = dalloc(nin[k]);
                for (j = 0; j < nin[k]; j++) {
                    double save = din[k][j], sv[2];
                    int sgn;
                    for (sgn = 0; sgn < 2; sgn++) {
                        double lp, lm;
                        int q;
                        din[k][j] = save + (sgn ? -h : h);
                        for (q = 0; q < oc->nin; q++) for (i = 0; i < nin[q]; i++) din[q][i] += h * du[q][i];
                        lp = d_loss(oc, din, dr, ny, tmp);
                        for (q = 0; q < oc->nin; q++) for (i = 0; i < nin[q]; i++) din[q][i] -= 2 * h * du[q][i];
                        lm = d_loss(oc, din, dr, ny, tmp);
                        for (q = 0; q < oc->nin; q++) for (i = 0; i < nin[q]; i++) din[q][i] += h * du[q][i];
                        sv[sgn] = (lp - lm) / (2 * h);
                    }
                    din[k][j] = save;
                    fd[j] = (sv[0] - sv[1]) / (2 * h);
                }
                /* Where the second derivative is identically 0 (a bias, a linear op)
                   both sides only carry rounding: the difference of differences has
                   noise ~ 1e-16 |L| / h^2 ~ 1e-7 per coordinate here, and a real
                   second derivative of these ops is O(0.1). So: both norms below
                   1e-4 pass as "vanishing", anything else must agree to 2e-3. */
                {
                    double nf = 0, ng = 0;
                    for (j = 0; j < nin[k]; j++) { nf += fd[j] * fd[j]; ng += (double)g2[k]->data[j] * g2[k]->data[j]; }
                    if (sqrt(nf) > 1e-4 || sqrt(ng) > 1e-4)
                        CHECK(rel_err_fd(g2[k]->data, fd, nin[k]) < 2e-3, "%s: second derivative in input %d differs from finite differences (rel %.2e)",
                              oc->name, k, rel_err_fd(g2[k]->data, fd, nin[k]));
                }
                free(fd);
            }
        for (k = 0; k < oc->nin; k++) { free(uv[k] ? uv[k]->data : NULL); free(du[k]); }
    }
done2:
    free(tmp); free(dy); free(dr); free(r);
done:
    for (k = 0; k < oc->nin; k++) { free(fin[k]); free(din[k]); }
    ebm_graph_destroy(g);
}

/* ------------------------------------------------------------------ op builders and double evaluators */

static ebm_var *b_conv(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_conv2d(g, in[0], in[1], in[2], c->s, c->p); }
static void e_conv(double **in, double *out, const dctx *c)
{
    size_t i, j, rows = (size_t)c->n * c->hy * c->wy;
    d_conv(c, in[0], in[1], NULL, out, 0);
    for (i = 0; i < rows; i++) for (j = 0; j < (size_t)c->cy; j++) out[i * c->cy + j] += in[2][j];
}
static ebm_var *b_convt(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_conv2d_transpose(g, in[0], in[1], in[2], c->s, c->p, c->hx, c->wx); }
static void e_convt(double **in, double *out, const dctx *c)
{
    size_t i, j, rows = (size_t)c->n * c->hx * c->wx;
    d_conv(c, NULL, in[1], in[0], out, 1);
    for (i = 0; i < rows; i++) for (j = 0; j < (size_t)c->cx; j++) out[i * c->cx + j] += in[2][j];
}
static ebm_var *b_wgrad(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_conv2d_weight_grad(g, in[0], in[1], c->k, c->s, c->p); }
static void e_wgrad(double **in, double *out, const dctx *c) { d_conv(c, in[0], NULL, in[1], out, 2); }

static ebm_var *b_act(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_act_deriv(g, in[0], c->act, (float)c->a, c->order); }
static void e_act(double **in, double *out, const dctx *c)
{
    size_t i, n = (size_t)c->n;
    for (i = 0; i < n; i++) out[i] = ebm__act_ref(c->act, c->order, c->a, in[0][i]);
}

/* Taylor mode's activation node: kind (c->order) 1: a'(h0) h1; 2: a''(h0) h1^2 + a'(h0) h2. */
static ebm_var *b_jet(ebm_graph *g, ebm_var **in, const dctx *c)
{
    return ebm__act_jet(g, in[0], in[1], c->order == 2 ? in[2] : NULL, c->act, (float)c->a, c->order);
}
static void e_jet(double **in, double *out, const dctx *c)
{
    size_t i, n = (size_t)c->n;
    for (i = 0; i < n; i++)
        out[i] = c->order == 1 ? ebm__act_ref(c->act, 1, c->a, in[0][i]) * in[1][i]
                               : ebm__act_ref(c->act, 2, c->a, in[0][i]) * in[1][i] * in[1][i] + ebm__act_ref(c->act, 1, c->a, in[0][i]) * in[2][i];
}

static void e_pool(double **in, double *out, const dctx *c, int is_max)
{
    int n, ho, wo, i, j, ch, Ho = (c->hx - c->pk) / c->ps + 1, Wo = (c->wx - c->pk) / c->ps + 1;
    for (n = 0; n < c->n; n++)
        for (ho = 0; ho < Ho; ho++)
            for (wo = 0; wo < Wo; wo++)
                for (ch = 0; ch < c->cx; ch++) {
                    double acc = is_max ? -1e300 : 0;
                    for (i = 0; i < c->pk; i++)
                        for (j = 0; j < c->pk; j++) {
                            double v = in[0][(((size_t)n * c->hx + ho * c->ps + i) * c->wx + wo * c->ps + j) * c->cx + ch];
                            acc = is_max ? (v > acc ? v : acc) : acc + v / (c->pk * c->pk);
                        }
                    out[(((size_t)n * Ho + ho) * Wo + wo) * c->cx + ch] = acc;
                }
}
static ebm_var *b_avgpool(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_avgpool(g, in[0], c->pk, c->ps); }
static void e_avgpool(double **in, double *out, const dctx *c) { e_pool(in, out, c, 0); }
static ebm_var *b_maxpool(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_maxpool(g, in[0], c->pk, c->ps); }
static void e_maxpool(double **in, double *out, const dctx *c) { e_pool(in, out, c, 1); }

static ebm_var *b_xent(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_softmax_xent(g, in[0], c->labels); }
static void e_xent(double **in, double *out, const dctx *c)
{
    int i, j, C = c->cx;
    double tot = 0;
    for (i = 0; i < c->n; i++) {
        double s = 0;
        for (j = 0; j < C; j++) s += exp(in[0][i * C + j]);
        tot += log(s) - in[0][i * C + c->labels[i]];
    }
    out[0] = tot / c->n;
}

static ebm_var *b_add(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_add(g, in[0], in[1]); }
static void e_add(double **in, double *out, const dctx *c) { int i; for (i = 0; i < c->n; i++) out[i] = in[0][i] + in[1][i]; }
static ebm_var *b_sub(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_sub(g, in[0], in[1]); }
static void e_sub(double **in, double *out, const dctx *c) { int i; for (i = 0; i < c->n; i++) out[i] = in[0][i] - in[1][i]; }
static ebm_var *b_mul(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_mul(g, in[0], in[1]); }
static void e_mul(double **in, double *out, const dctx *c) { int i; for (i = 0; i < c->n; i++) out[i] = in[0][i] * in[1][i]; }
static ebm_var *b_scale(ebm_graph *g, ebm_var **in, const dctx *c) { return ebm_scale(g, in[0], (float)c->c); }
static void e_scale(double **in, double *out, const dctx *c) { int i; for (i = 0; i < c->n; i++) out[i] = (double)(float)c->c * in[0][i]; }
static ebm_var *b_sum(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_sum(g, in[0]); }
static void e_sum(double **in, double *out, const dctx *c) { int i; out[0] = 0; for (i = 0; i < c->n; i++) out[0] += in[0][i]; }
static ebm_var *b_mean(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_mean(g, in[0]); }
static void e_mean(double **in, double *out, const dctx *c) { e_sum(in, out, c); out[0] *= (double)(1.0f / (float)c->n); }
static ebm_var *b_sqnorm(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_sqnorm(g, in[0]); }
static void e_sqnorm(double **in, double *out, const dctx *c) { int i; out[0] = 0; for (i = 0; i < c->n; i++) out[0] += in[0][i] * in[0][i]; }
static ebm_var *b_dot(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_dot(g, in[0], in[1]); }
static void e_dot(double **in, double *out, const dctx *c) { int i; out[0] = 0; for (i = 0; i < c->n; i++) out[0] += in[0][i] * in[1][i]; }
/* reshape, then an op that cares about the shape, so a wrong view shows. */
static ebm_var *b_reshape(ebm_graph *g, ebm_var **in, const dctx *c)
{
    int s[4];
    (void)c;
    s[0] = 2; s[1] = 3; s[2] = 2; s[3] = 2;
    return ebm_avgpool(g, ebm_reshape(g, in[0], 4, s), 2, 1);
}
static void e_reshape(double **in, double *out, const dctx *c)
{
    dctx p = *c;
    p.n = 2; p.hx = 3; p.wx = 2; p.cx = 2; p.pk = 2; p.ps = 1;
    e_pool(in, out, &p, 0);
}
static ebm_var *b_linear(ebm_graph *g, ebm_var **in, const dctx *c) { (void)c; return ebm_linear(g, in[0], in[1], in[2]); }
static void e_linear(double **in, double *out, const dctx *c)
{
    int n, i, o;
    for (n = 0; n < c->n; n++)
        for (o = 0; o < c->cy; o++) {
            double acc = in[2][o];
            for (i = 0; i < c->cx; i++) acc += in[0][n * c->cx + i] * in[1][i * c->cy + o];
            out[n * c->cy + o] = acc;
        }
}

/* The convolution geometries of the tests: 1x1 images, stride > kernel,
   padding > 1, batch 1 and 7, channels 1 and 3, and the reference nets' shapes. */
static const int conv_geoms[][8] = {
    /* n  h  w  ci co k  s  p */
    { 1, 1, 1, 1, 1, 1, 1, 0 },
    { 7, 5, 6, 3, 2, 3, 1, 1 },
    { 1, 6, 5, 1, 3, 2, 3, 0 },
    { 2, 4, 4, 3, 4, 3, 1, 2 },
    { 2, 9, 7, 2, 3, 4, 2, 1 },
    { 3, 7, 7, 3, 1, 3, 1, 0 },
    { 1, 3, 3, 5, 2, 3, 1, 0 },
    { 2, 8, 8, 1, 3, 4, 2, 1 },
};
#define N_GEOMS (int)(sizeof conv_geoms / sizeof conv_geoms[0])

static void geom_ctx(int i, dctx *c)
{
    const int *q = conv_geoms[i];
    memset(c, 0, sizeof *c);
    c->n = q[0]; c->hx = q[1]; c->wx = q[2]; c->cx = q[3]; c->cy = q[4]; c->k = q[5]; c->s = q[6]; c->p = q[7];
    c->hy = (c->hx + 2 * c->p - c->k) / c->s + 1;
    c->wy = (c->wx + 2 * c->p - c->k) / c->s + 1;
}

static void set_shape(opcase *oc, int i, int nd, int a, int b, int c, int d)
{
    oc->ndim[i] = nd; oc->shape[i][0] = a; oc->shape[i][1] = b; oc->shape[i][2] = c; oc->shape[i][3] = d;
}

/* ------------------------------------------------------------------ tests: random numbers */

static void test_rng_philox_known_answers(void)
{
    /* Known-answer vectors of Philox4x32-10 from the Random123 distribution. */
    static const uint32_t ctr[3][4] = { { 0, 0, 0, 0 }, { 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu },
                                        { 0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u } };
    static const uint32_t key[3][2] = { { 0, 0 }, { 0xffffffffu, 0xffffffffu }, { 0xa4093822u, 0x299f31d0u } };
    static const uint32_t want[3][4] = { { 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u },
                                         { 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu },
                                         { 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u } };
    int i, j;
    for (i = 0; i < 3; i++) {
        uint32_t out[4];
        ebm_philox4x32(ctr[i], key[i], out);
        for (j = 0; j < 4; j++) CHECK(out[j] == want[i][j], "vector %d word %d: %08x, want %08x", i, j, out[j], want[i][j]);
    }
}

static void test_rng_lanes_match_scalar_philox(void)
{
    /* The vectorised draw is the scalar block at counter (coord/4, step, sample, stream), key = seed. */
    ebm_rng r;
    float u[203];
    uint32_t key[2], ctr[4], out[4];
    int i;
    r.seed = 0x123456789abcdefULL; r.stream = 77;
    key[0] = (uint32_t)r.seed; key[1] = (uint32_t)(r.seed >> 32);
    ebm_rng_uniform(&r, 31, 9, 0.0f, 1.0f, u, 203);
    for (i = 0; i < 203; i++) {
        ctr[0] = (uint32_t)(i / 4); ctr[1] = 9; ctr[2] = 31; ctr[3] = 77;
        ebm_philox4x32(ctr, key, out);
        CHECK(u[i] == (float)(out[i % 4] >> 8) * (1.0f / 16777216.0f), "coordinate %d: %.9g", i, (double)u[i]);
    }
}

static void test_rng_counter_based(void)
{
    ebm_rng r;
    float a[300], b[300], c[300];
    size_t i;
    int diff;
    r.seed = 99; r.stream = 7;
    ebm_rng_normal(&r, 5, 3, a, 300);
    ebm_rng_normal(&r, 5, 3, b, 37); /* a prefix is the same numbers, whatever n is */
    CHECK(memcmp(a, b, 37 * sizeof(float)) == 0, "normal: a shorter draw is not a prefix of a longer one");
    ebm_rng_uniform(&r, 5, 3, -1, 1, a, 300);
    ebm_rng_uniform(&r, 5, 3, -1, 1, b, 131);
    CHECK(memcmp(a, b, 131 * sizeof(float)) == 0, "uniform: a shorter draw is not a prefix of a longer one");
    /* each key component changes the numbers */
    ebm_rng_uniform(&r, 6, 3, -1, 1, b, 300); for (diff = 0, i = 0; i < 300; i++) diff += a[i] != b[i];
    CHECK(diff > 290, "sample index does not change the stream (%d of 300 differ)", diff);
    ebm_rng_uniform(&r, 5, 4, -1, 1, b, 300); for (diff = 0, i = 0; i < 300; i++) diff += a[i] != b[i];
    CHECK(diff > 290, "step does not change the stream (%d of 300 differ)", diff);
    r.stream = 8; ebm_rng_uniform(&r, 5, 3, -1, 1, b, 300); for (diff = 0, i = 0; i < 300; i++) diff += a[i] != b[i];
    CHECK(diff > 290, "stream does not change the numbers (%d of 300 differ)", diff);
    r.stream = 7; r.seed = 100; ebm_rng_uniform(&r, 5, 3, -1, 1, c, 300); for (diff = 0, i = 0; i < 300; i++) diff += a[i] != c[i];
    CHECK(diff > 290, "seed does not change the numbers (%d of 300 differ)", diff);
    for (i = 0; i < 300; i++) CHECK(a[i] >= -1 && a[i] < 1, "uniform value %g outside [-1,1)", (double)a[i]);
}

static void test_rng_normal_statistics(void)
{
    /* 2^21 normals: each moment's tolerance is 5 standard errors at this n. */
    const size_t n = (size_t)1 << 21, per = 4096;
    float *z = falloc(per);
    double s1 = 0, s2 = 0, s4 = 0, tail = 0, N = (double)n, p2 = 0.04550026389635842;
    size_t i, k;
    ebm_rng r;
    r.seed = 2024; r.stream = 3;
    for (k = 0; k < n / per; k++) {
        ebm_rng_normal(&r, k, 0, z, per);
        for (i = 0; i < per; i++) {
            double v = z[i];
            s1 += v; s2 += v * v; s4 += v * v * v * v; tail += fabs(v) > 2;
        }
    }
    s1 /= N; s2 /= N; s4 /= N; tail /= N;
    CHECK(fabs(s1) < 5 / sqrt(N), "mean %.5f (tolerance %.5f)", s1, 5 / sqrt(N));
    CHECK(fabs(s2 - 1) < 5 * sqrt(2 / N), "variance %.5f (tolerance %.5f)", s2, 5 * sqrt(2 / N));
    CHECK(fabs(s4 - 3) < 5 * sqrt(96 / N), "fourth moment %.4f (tolerance %.4f)", s4, 5 * sqrt(96 / N));
    CHECK(fabs(tail - p2) < 5 * sqrt(p2 * (1 - p2) / N), "P(|z|>2) = %.5f, want %.5f", tail, p2);
    free(z);
}

static void test_rng_uniform_statistics(void)
{
    const size_t n = (size_t)1 << 20;
    float *u = falloc(n);
    double m = 0, v = 0;
    size_t i;
    ebm_rng r;
    r.seed = 5; r.stream = 11;
    ebm_rng_uniform(&r, 0, 0, 0, 1, u, n);
    for (i = 0; i < n; i++) m += u[i];
    m /= (double)n;
    for (i = 0; i < n; i++) v += (u[i] - m) * (u[i] - m);
    v /= (double)n;
    CHECK(fabs(m - 0.5) < 5 * sqrt(1.0 / 12 / n), "mean %.5f", m);
    CHECK(fabs(v - 1.0 / 12) < 5 * sqrt(1.0 / 180 / n), "variance %.6f", v); /* Var of (u-1/2)^2 = 1/180 */
    free(u);
}

static void test_rng_math_kernels(void)
{
    /* The branch-free log and cos/sin used by the normal sampler, against libm. */
    double worst_log = 0, worst_trig = 0;
    int i;
    for (i = 1; i <= 1 << 24; i += 97) {
        float u = (float)i / 16777216.0f, c, s;
        double e = fabs(ebm__logf(u) - log((double)u)) / (fabs(log((double)u)) + 1e-3);
        if (e > worst_log) worst_log = e;
        ebm__cossin2pi(u - 1.0f / 16777216.0f, &c, &s);
        e = fabs(c - cos(6.283185307179586 * (u - 1.0 / 16777216.0))) + fabs(s - sin(6.283185307179586 * (u - 1.0 / 16777216.0)));
        if (e > worst_trig) worst_trig = e;
    }
    CHECK(worst_log < 1e-6, "log error %.2e", worst_log);
    CHECK(worst_trig < 1e-6, "cos/sin error %.2e", worst_trig);
    /* the activations' exp on its whole range, and log on (1, 2] (softplus) and beyond, in ulps-ish relative terms */
    {
        double worst_exp = 0, worst_log2 = 0;
        for (i = -870000; i <= 880000; i += 37) {
            double x = i * 1e-4, e = fabs(ebm__expf((float)x) - exp((double)(float)x)) / exp((double)(float)x);
            if (e > worst_exp) worst_exp = e;
        }
        for (i = 1; i <= 1000000; i += 13) {
            float x = 1.0f + (float)i * 1e-6f * 3.0f;
            double e = fabs(ebm__logf(x) - log((double)x)) / (fabs(log((double)x)) + 1e-3);
            if (e > worst_log2) worst_log2 = e;
        }
        CHECK(worst_exp < 5e-7, "exp relative error %.2e", worst_exp);
        CHECK(worst_log2 < 1e-6, "log error above 1: %.2e", worst_log2);
    }
    /* the vector exp and SiLU loops against their scalar forms, bit for bit
       (the same operations in the same order), on a length with a tail and
       the clamps, zeros, infinities and NaN among the values */
    {
        enum { N = 3 * EBM__VL * 37 + 5 };
        static const float special[] = { 0.0f, -0.0f, 87.5f, -87.5f, 88.5f, -88.5f, 200.0f, -200.0f, 1e-30f, -1e-30f };
        static float x[N], y[N], d[N], g[N], v[N];
        ebm__vf xv, ev;
        int bad = 0, k;
        for (i = 0; i < N; i++) x[i] = i < 10 ? special[i] : (float)((i * 7919) % 20011 - 10005) * 1e-2f;
        x[N - 1] = (float)INFINITY; x[N - 2] = -(float)INFINITY; x[N - 3] = (float)NAN;
        for (i = 0; i + EBM__VL <= N; i += EBM__VL) { /* exp and sigmoid of whole vectors */
            float e[EBM__VL], sg[EBM__VL];
            xv = ebm__vload(x + i);
            ev = ebm__vexpf(xv);
            ebm__vstore(e, ev);
            ebm__vstore(sg, ebm__vsigmoid(xv));
            for (k = 0; k < EBM__VL; k++) {
                const float es = ebm__expf(x[i + k]), ss = ebm__sigmoid(x[i + k]);
                if (!(memcmp(&es, &e[k], 4) == 0 || (es != es && e[k] != e[k]))) bad++;
                if (!(memcmp(&ss, &sg[k], 4) == 0 || (ss != ss && sg[k] != sg[k]))) bad++;
            }
        }
        CHECK(bad == 0, "%d vector exp / sigmoid values differ from the scalar ones", bad);
        for (k = 0; k < 5; k++) { /* SiLU, orders 0 and 1; value and derivative in one pass; times gy, apart and in place */
            int j;
            for (j = 0; j < N; j++) g[j] = v[j] = (float)(j % 13) - 6.0f;
            if (k < 2) ebm__act_range(EBM_ACT_SILU, k, 0.0f, x, y, N);
            else if (k == 2) ebm__act_val_range(EBM_ACT_SILU, 0.0f, x, y, d, N);
            else if (k == 3) ebm__act_bwd_range(EBM_ACT_SILU, 0.0f, x, g, y, N);
            else { ebm__act_bwd_range(EBM_ACT_SILU, 0.0f, x, v, v, N); memcpy(y, v, sizeof y); }
            for (j = 0, bad = 0; j < N; j++) {
                /* (the product in an initializer of its own: clang contracts within one
                   expression by default, and the library's loops, which it does not
                   contract, round the product before the sum) */
                const float s = ebm__sigmoid(x[j]), xss = x[j] * s * (1 - s), ds = s + xss;
                const float want = k == 0 || k == 2 ? x[j] * s : k == 1 ? ds : ds * g[j];
                if (!(memcmp(&want, &y[j], 4) == 0 || (want != want && y[j] != y[j]))) bad++;
                if (k == 2 && !(memcmp(&ds, &d[j], 4) == 0 || (ds != ds && d[j] != d[j]))) bad++;
            }
            CHECK(bad == 0, "SiLU loop %d: %d values differ from the scalar form", k, bad);
        }
    }
}

/* ------------------------------------------------------------------ tests: kernels */

/* Wider channel counts for the kernel comparison only (too big for the
   per-coordinate differences of the op tests): whole panels (64, 32),
   panels plus a tail (33, 48), the reference nets' 3x3-output
   and first layers, a weight gradient large enough to be blocked,
   batches large enough for the input gradient's position-first order,
   few input channels with many taps, the weight gradient's row form
   (input channels in whole panels) with and without padding, and weights
   too large to stay in cache (the forward's tiles in groups). */
static const int wide_geoms[][8] = {
    /* n  h  w  ci co k  s  p */
    { 2, 6, 5, 3, 32, 4, 2, 1 },
    { 1, 4, 4, 33, 64, 3, 1, 1 },
    { 3, 7, 7, 64, 48, 4, 2, 1 },
    { 2, 7, 7, 16, 32, 4, 2, 1 },
    { 5, 9, 9, 1, 32, 3, 1, 1 },
    { 2, 3, 3, 64, 1, 3, 1, 0 },
    { 4, 12, 12, 32, 32, 3, 1, 1 }, /* weight gradient: grouped row tiles and several pixel chunks */
    { 9, 7, 7, 64, 48, 4, 2, 1 },   /* input gradient position-first: a batch that fills a tile, */
    { 17, 7, 7, 12, 32, 4, 2, 1 },  /* and a narrow one, each with tiles across two positions */
    { 17, 7, 7, 32, 16, 4, 2, 1 },  /* the forward position-first with narrow tiles, across two positions */
    { 3, 10, 10, 1, 20, 4, 2, 1 },  /* few input channels (the tap-vector input gradient): one narrow */
    { 2, 9, 9, 4, 5, 4, 2, 1 },     /* panel of 16 taps; two wide panels of 64 taps over gy's 5 channels */
    { 2, 11, 11, 3, 40, 9, 1, 4 },  /* 81 taps, more than one tap table holds: the forward's two panels */
    { 2, 10, 10, 40, 6, 9, 1, 4 },  /* rebuild it per panel; likewise the input gradient's */
    { 9, 7, 7, 40, 20, 7, 1, 0 },   /* 7x7 -> 1x1: its input gradient is a 1x1 -> 7x7 transposed conv */
    { 9, 7, 7, 64, 20, 7, 1, 0 },   /* weight gradient's row form unpadded, with a channel tail (20 = 2 x 8 + 4) */
    { 9, 7, 7, 128, 288, 4, 2, 1 }, /* weights past EBM__PANELS_HOT: forward tiles in groups through one panel */
    { 3, 14, 13, 1, 16, 3, 1, 1 },  /* the few-channel forward: blocks of inside pixels, the last overlapping; */
    { 2, 12, 23, 3, 40, 3, 2, 1 },  /* strided, two panels, the second a tail of 8; */
    { 2, 9, 12, 4, 7, 4, 1, 2 },    /* 64 taps (its limit), one narrow panel of 7 */
    { 2, 10, 12, 3, 32, 3, 1, 1 },  /* the direct few-channel input gradient: 3 channels, 2 vectors of gy; */
    { 2, 12, 14, 2, 16, 5, 1, 2 },  /* a 5x5 kernel; */
    { 2, 12, 12, 1, 16, 3, 1, 0 },  /* unpadded, one block exactly */
    { 2, 8, 7, 8, 12, 5, 3, 2 },    /* input gradient: 9 phases of unequal sizes and tap counts, interleaved */
    { 2, 10, 10, 1, 64, 4, 2, 1 },  /* weight gradient, gather form: all row tiles in one task, gy's two panels in place */
    { 3, 5, 21, 1, 16, 3, 1, 1 },   /* rows of 21 (more than 16 pixels): the few-channel forward's narrow blocks */
    { 2, 4, 18, 2, 7, 3, 1, 1 },    /* of 16 pixels, the last overlapping, also on a narrow tail; the direct */
    { 2, 6, 20, 1, 16, 3, 1, 1 },   /* input gradient's blocks of 16 pixels (cy 16, 32 and 48: its two */
    { 2, 5, 19, 3, 32, 3, 1, 1 },   /* constant widths and the general one), with the top and bottom */
    { 2, 4, 20, 2, 48, 3, 1, 0 },   /* rows' shorter tap lists; unpadded, one block exactly */
    { 3, 15, 30, 64, 20, 4, 2, 1 }, /* the weight gradient's runs (output rows of 15): the last tap column short, */
    { 3, 44, 44, 32, 8, 5, 3, 2 },  /* stride 3, six chunks of rows (the last short); */
    { 3, 1, 16, 32, 8, 7, 1, 3 },   /* taps outside every row, the others' runs cut at both ends */
    { 3, 9, 11, 16, 24, 4, 2, 1 },  /* the input gradient in the tap form with one vector of input channels */
    { 2, 8, 9, 16, 40, 3, 1, 1 },   /* (16: AVX-512's): strided, odd sizes; stride 1, two panels of taps */
    { 9, 24, 22, 32, 24, 4, 2, 1 }, /* the forward position first on 12x11 outputs (32 input channels), a tail panel;
                                       storing SiLU's value too, image first: the epilogue checks compare their bits */
};

/* The write-backs that apply another activation (SiLU, GELU) on
   geometry i: the forward storing its sum and act(sum) as well must give
   the bits of the plain forward and of act over its output; the forward
   and the input gradient times act'(mask) those of the plain pass
   followed by ebm__act_bwd; the forward storing act'(sum) as well (yd)
   the bits of act' over the plain output; and the passes times a held
   derivative (EBM__ACT_HELD) the plain ones times it. The plain passes
   are the ones checked against the references. */
static void epilogue_checks(int i, const ebm__cgeom *G, const float *x, const float *w, const float *b, const float *gy,
                            void *scr, size_t ny, size_t nx)
{
    const int acts[2] = { EBM_ACT_SILU, EBM_ACT_GELU };
    const size_t M = nx > ny ? nx : ny;
    float *plain = falloc(M), *out = falloc(M), *ya = falloc(M), *yd = falloc(M), *want = falloc(M), *mk = falloc(M);
    int a;
    size_t j;
    rnd(mk, M, -3, 3);
    for (a = 0; a < 3; a++) {
        ebm__epi e;
        const int held = a == 2, act = held ? EBM__ACT_HELD : acts[a];
        static const char *const factors[3] = { "silu'(mask)", "gelu'(mask)", "the mask (a held act')" };
        const char *name = held ? "" : ebm_act_name(act), *factor = factors[a];
        memset(&e, 0, sizeof e);
        if (!held) {
            ebm__conv_fwd(G, x, w, b, plain, scr, 0, 0.0f);
            ebm__act_fwd(act, 0, 0.0f, plain, want, ny);
            e.ya = ya; e.act = act;
            ebm__conv_fwd_epi(G, x, w, b, out, scr, &e);
            CHECK(memcmp(out, plain, ny * sizeof(float)) == 0, "geometry %d: forward storing %s as well: its sum differs", i, name);
            CHECK(memcmp(ya, want, ny * sizeof(float)) == 0, "geometry %d: forward's %s of its sum differs from the pass after it", i, name);
            e.yd = yd;
            memset(ya, 0, ny * sizeof(float));
            ebm__conv_fwd_epi(G, x, w, b, out, scr, &e);
            CHECK(memcmp(ya, want, ny * sizeof(float)) == 0, "geometry %d: forward's %s of its sum, with its derivative, differs", i, name);
            ebm__act_fwd(act, 1, 0.0f, plain, want, ny);
            CHECK(memcmp(yd, want, ny * sizeof(float)) == 0, "geometry %d: forward's %s' of its sum differs from the pass after it", i, name);
        }
        memset(&e, 0, sizeof e);
        e.mask = mk; e.mact = act;
        ebm__conv_fwd(G, x, w, NULL, plain, scr, 0, 0.0f);
        if (held) for (j = 0; j < ny; j++) want[j] = mk[j] * plain[j];
        else ebm__act_bwd(act, 0.0f, mk, plain, want, ny);
        ebm__conv_fwd_epi(G, x, w, NULL, out, scr, &e);
        CHECK(memcmp(out, want, ny * sizeof(float)) == 0, "geometry %d: forward times %s differs from the pass after it", i, factor);
        ebm__conv_bwd_data(G, gy, w, NULL, plain, scr);
        if (held) for (j = 0; j < nx; j++) want[j] = mk[j] * plain[j];
        else ebm__act_bwd(act, 0.0f, mk, plain, want, nx);
        ebm__conv_bwd_data_epi(G, gy, w, NULL, out, scr, &e);
        CHECK(memcmp(out, want, nx * sizeof(float)) == 0, "geometry %d: input gradient times %s differs from the pass after it", i, factor);
    }
    free(plain); free(out); free(ya); free(yd); free(want); free(mk);
}

/* Pass bwd (0 the forward, 1 the input gradient) of geometry G on `in`,
   with its write-back times LeakyReLU'(mask) for a mask s of n values
   drawn here, against the reference pass times the same factors: the
   relative error. */
static double masked_pass_err(const ebm__cgeom *G, int bwd, const float *in, const float *w, float *out, float *ref, float *s,
                              size_t n, void *scr)
{
    size_t j;
    ebm__epi e;
    memset(&e, 0, sizeof e);
    rnd(s, n, -1, 1);
    e.mask = s; e.mact = EBM_ACT_LEAKY_RELU; e.ma = 0.2f;
    if (bwd) {
        ebm__conv_bwd_data_epi(G, in, w, NULL, out, scr, &e);
        ebm__conv_bwd_data_ref(G, in, w, NULL, ref);
    } else {
        ebm__conv_fwd_epi(G, in, w, NULL, out, scr, &e);
        ebm__conv_fwd_ref(G, in, w, NULL, ref);
    }
    for (j = 0; j < n; j++) ref[j] = s[j] > 0 ? ref[j] : 0.2f * ref[j];
    return rel_err_ff(out, ref, n);
}

static void test_conv_kernels_match_reference(void)
{
    int i;
    const int n_all = N_GEOMS + (int)(sizeof wide_geoms / sizeof wide_geoms[0]);
    for (i = 0; i < n_all; i++) {
        dctx c;
        ebm__cgeom G;
        size_t nx, nw, ny;
        float *x, *w, *b, *y1, *y2, *s;
        if (i < N_GEOMS) geom_ctx(i, &c);
        else {
            const int *q = wide_geoms[i - N_GEOMS];
            memset(&c, 0, sizeof c);
            c.n = q[0]; c.hx = q[1]; c.wx = q[2]; c.cx = q[3]; c.cy = q[4]; c.k = q[5]; c.s = q[6]; c.p = q[7];
            c.hy = (c.hx + 2 * c.p - c.k) / c.s + 1;
            c.wy = (c.wx + 2 * c.p - c.k) / c.s + 1;
        }
        G.n = c.n; G.hx = c.hx; G.wx = c.wx; G.cx = c.cx; G.hy = c.hy; G.wy = c.wy; G.cy = c.cy; G.k = c.k; G.s = c.s; G.p = c.p;
        nx = (size_t)c.n * c.hx * c.wx * c.cx; nw = (size_t)c.k * c.k * c.cx * c.cy; ny = (size_t)c.n * c.hy * c.wy * c.cy;
        {
            size_t M = nx > nw ? (nx > ny ? nx : ny) : (nw > ny ? nw : ny);
            float *gy = falloc(M);
            size_t sb = ebm__conv_fwd_scratch(&G);
            void *scr;
            if (ebm__conv_bwd_data_scratch(&G) > sb) sb = ebm__conv_bwd_data_scratch(&G);
            if (ebm__conv_bwd_weight_scratch(&G) > sb) sb = ebm__conv_bwd_weight_scratch(&G);
            scr = malloc(sb);
            x = falloc(M); w = falloc(M); b = falloc(M); y1 = falloc(M); y2 = falloc(M); s = falloc(M);
            rnd(x, nx, -1, 1); rnd(w, nw, -1, 1); rnd(b, M, -1, 1); rnd(gy, ny, -1, 1);
            ebm__conv_fwd(&G, x, w, b, y1, scr, 0, 0.0f);
            ebm__conv_fwd_ref(&G, x, w, b, y2);
            CHECK(rel_err_ff(y1, y2, ny) < 2e-6, "geometry %d: forward kernel vs reference rel %.2e", i, rel_err_ff(y1, y2, ny));
            { /* without a bias, with the fused LeakyReLU */
                size_t j;
                ebm__conv_fwd(&G, x, w, NULL, y1, scr, 1, 0.2f);
                ebm__conv_fwd_ref(&G, x, w, NULL, y2);
                for (j = 0; j < ny; j++) y2[j] = y2[j] > 0 ? y2[j] : 0.2f * y2[j];
                CHECK(rel_err_ff(y1, y2, ny) < 2e-6, "geometry %d: forward + LeakyReLU, no bias, vs reference rel %.2e", i,
                      rel_err_ff(y1, y2, ny));
            }
            { /* the forward times LeakyReLU'(mask) (a transposed conv's input gradient, premasked) */
                const double err = masked_pass_err(&G, 0, x, w, y1, y2, s, ny, scr);
                CHECK(err < 2e-6, "geometry %d: forward times LeakyReLU'(mask) vs reference rel %.2e", i, err);
            }
            epilogue_checks(i, &G, x, w, b, gy, scr, ny, nx);
            ebm__conv_bwd_data(&G, gy, w, b, y1, scr);
            ebm__conv_bwd_data_ref(&G, gy, w, b, y2);
            CHECK(rel_err_ff(y1, y2, nx) < 2e-6, "geometry %d: input-gradient kernel vs reference rel %.2e", i, rel_err_ff(y1, y2, nx));
            { /* as a transposed conv fused with the LeakyReLU after it */
                size_t j;
                ebm__epi e;
                memset(&e, 0, sizeof e);
                e.leaky = 1; e.slope = 0.2f;
                ebm__conv_bwd_data_epi(&G, gy, w, b, y1, scr, &e);
                for (j = 0; j < nx; j++) y2[j] = y2[j] > 0 ? y2[j] : 0.2f * y2[j];
                CHECK(rel_err_ff(y1, y2, nx) < 2e-6, "geometry %d: transposed conv + LeakyReLU vs reference rel %.2e", i,
                      rel_err_ff(y1, y2, nx));
            }
            { /* the input gradient times LeakyReLU'(mask) (the gradient of a fused layer's output, premasked) */
                const double err = masked_pass_err(&G, 1, gy, w, y1, y2, s, nx, scr);
                CHECK(err < 2e-6, "geometry %d: input gradient times LeakyReLU'(mask) vs reference rel %.2e", i, err);
            }
            ebm__conv_bwd_weight(&G, x, gy, y1, scr);
            ebm__conv_bwd_weight_ref(&G, x, gy, y2);
            CHECK(rel_err_ff(y1, y2, nw) < 2e-6, "geometry %d: weight-gradient kernel vs reference rel %.2e", i, rel_err_ff(y1, y2, nw));
            free(gy); free(scr);
        }
        free(x); free(w); free(b); free(y1); free(y2); free(s);
    }
}

static void test_activation_derivatives(void)
{
    /* Each order of each activation, in double, against central differences
       of the order below; then the float kernel against the double reference. */
    int t, o, i;
    for (t = 0; t < EBM_ACT_COUNT; t++)
        for (o = 1; o <= 3; o++)
            for (i = -40; i <= 40; i++) {
                double x = i * 0.1 + 0.0123, h = 1e-5, a = t == EBM_ACT_LEAKY_RELU ? 0.2 : 1.0;
                double fd = (ebm__act_ref(t, o - 1, a, x + h) - ebm__act_ref(t, o - 1, a, x - h)) / (2 * h);
                double an = ebm__act_ref(t, o, a, x);
                if (fabs(x) < 2 * h) continue;
                CHECK(fabs(fd - an) < 1e-6 * (1 + fabs(an)), "%s order %d at %g: %.9g vs differences %.9g", ebm_act_name(t), o, x, an, fd);
            }
    for (t = 0; t < EBM_ACT_COUNT; t++)
        for (o = 0; o <= 3; o++) {
            float x[161], y[161];
            double worst = 0, a = t == EBM_ACT_LEAKY_RELU ? 0.2 : 1.0;
            for (i = 0; i < 161; i++) x[i] = (float)((i - 80) * 0.1 + 0.0123);
            ebm__act_fwd(t, o, (float)a, x, y, 161);
            for (i = 0; i < 161; i++) {
                double ref = ebm__act_ref(t, o, a, x[i]), e = fabs(y[i] - ref) / (1 + fabs(ref));
                if (e > worst) worst = e;
            }
            CHECK(worst < 2e-6, "%s order %d: float kernel vs double reference %.2e", ebm_act_name(t), o, worst);
        }
}

/* ------------------------------------------------------------------ tests: ops and their derivatives */

static void test_op_conv2d(void)
{
    int i;
    for (i = 0; i < N_GEOMS; i++) {
        opcase oc;
        memset(&oc, 0, sizeof oc);
        geom_ctx(i, &oc.c);
        oc.name = "conv2d"; oc.nin = 3; oc.build = b_conv; oc.eval = e_conv; oc.second_order = 1;
        set_shape(&oc, 0, 4, oc.c.n, oc.c.hx, oc.c.wx, oc.c.cx);
        set_shape(&oc, 1, 4, oc.c.k, oc.c.k, oc.c.cx, oc.c.cy);
        set_shape(&oc, 2, 1, oc.c.cy, 1, 1, 1);
        check_op(&oc);
    }
}

static void test_op_conv2d_transpose(void)
{
    int i;
    for (i = 0; i < N_GEOMS; i++) {
        opcase oc;
        memset(&oc, 0, sizeof oc);
        geom_ctx(i, &oc.c);
        oc.name = "conv2d_transpose"; oc.nin = 3; oc.build = b_convt; oc.eval = e_convt; oc.second_order = 1;
        set_shape(&oc, 0, 4, oc.c.n, oc.c.hy, oc.c.wy, oc.c.cy);
        set_shape(&oc, 1, 4, oc.c.k, oc.c.k, oc.c.cx, oc.c.cy);
        set_shape(&oc, 2, 1, oc.c.cx, 1, 1, 1);
        check_op(&oc);
    }
}

static void test_op_conv2d_weight_grad(void)
{
    int i;
    for (i = 0; i < N_GEOMS; i++) {
        opcase oc;
        memset(&oc, 0, sizeof oc);
        geom_ctx(i, &oc.c);
        oc.name = "conv2d_weight_grad"; oc.nin = 2; oc.build = b_wgrad; oc.eval = e_wgrad; oc.second_order = 1;
        set_shape(&oc, 0, 4, oc.c.n, oc.c.hx, oc.c.wx, oc.c.cx);
        set_shape(&oc, 1, 4, oc.c.n, oc.c.hy, oc.c.wy, oc.c.cy);
        check_op(&oc);
    }
}

/* The parameter the op tests give activation t (LeakyReLU's slope, ELU's
   alpha), rounded to float as the op stores it. */
static double act_param(int t)
{
    return (double)(float)(t == EBM_ACT_LEAKY_RELU ? 0.2 : t == EBM_ACT_ELU ? 1.3 : 0.0);
}

static void test_op_activations(void)
{
    int t, o;
    for (t = 0; t < EBM_ACT_COUNT; t++)
        for (o = 0; o <= 2; o++) {
            opcase oc;
            memset(&oc, 0, sizeof oc);
            oc.name = ebm_act_name(t); oc.nin = 1; oc.build = b_act; oc.eval = e_act; oc.away = 1; oc.second_order = 1;
            /* the derivative of order o's backward needs order o + 2: at most 3 for the smooth ones */
            oc.second_order = o <= 1 || t == EBM_ACT_LEAKY_RELU || t == EBM_ACT_ELU;
            oc.c.act = t; oc.c.order = o; oc.c.a = act_param(t);
            oc.c.n = 2 * 3 * 4 * 5;
            set_shape(&oc, 0, 4, 2, 3, 4, 5);
            check_op(&oc);
        }
}

/* The fused Taylor-mode activation node against double references and
   finite differences, and its fused backward against its recorded one, bit
   for bit (for kind 2 of a smooth activation the recorded rule needs a
   fourth derivative to be differentiated again, so only that is skipped). */
static void test_op_act_jet(void)
{
    int t, kind;
    for (t = 0; t < EBM_ACT_COUNT; t++)
        for (kind = 1; kind <= 2; kind++) {
            opcase oc;
            memset(&oc, 0, sizeof oc);
            oc.name = "act_jet"; oc.nin = kind + 1; oc.build = b_jet; oc.eval = e_jet; oc.away = 1;
            oc.second_order = kind == 1 || t == EBM_ACT_LEAKY_RELU || t == EBM_ACT_ELU;
            oc.c.act = t; oc.c.order = kind; oc.c.a = act_param(t);
            oc.c.n = 2 * 3 * 4 * 5 + 7; /* not a multiple of any vector or block */
            set_shape(&oc, 0, 1, oc.c.n, 1, 1, 1); set_shape(&oc, 1, 1, oc.c.n, 1, 1, 1); set_shape(&oc, 2, 1, oc.c.n, 1, 1, 1);
            check_op(&oc);
            if (!oc.second_order) { /* fused and recorded backward rules give the same bits */
                ebm_graph *g = new_graph(8);
                float *h[3], *r = falloc((size_t)oc.c.n);
                ebm_var *in[3], *y, *gf[3], *gc[3];
                int k, n = oc.c.n, same = 1;
                for (k = 0; k < 3; k++) { h[k] = falloc((size_t)n); rnd(h[k], (size_t)n, -2.0f, 2.0f); in[k] = ebm_leaf(g, h[k], 1, &n); }
                rnd(r, (size_t)n, -1.0f, 1.0f);
                y = b_jet(g, in, &oc.c);
                CHECK(ebm_grad(g, y, ebm_leaf(g, r, 1, &n), 3, in, gf, 0) == EBM_OK &&
                          ebm_grad(g, y, ebm_leaf(g, r, 1, &n), 3, in, gc, 1) == EBM_OK, "act_jet grads: %s", gmsg(g));
                for (k = 0; k < 3 && ebm_graph_status(g) == EBM_OK; k++) same &= !memcmp(gf[k]->data, gc[k]->data, (size_t)n * sizeof(float));
                CHECK(same, "act_jet (%s, kind 2): fused and recorded gradients differ", ebm_act_name(t));
                for (k = 0; k < 3; k++) free(h[k]);
                free(r);
                ebm_graph_destroy(g);
            }
        }
}

static void test_op_pooling(void)
{
    static const int cfg[][6] = { /* n h w c k s */ { 2, 4, 4, 3, 2, 2 }, { 1, 5, 6, 2, 3, 1 }, { 3, 7, 5, 1, 3, 2 }, { 1, 1, 1, 2, 1, 1 } };
    int i, m;
    for (i = 0; i < 4; i++)
        for (m = 0; m < 2; m++) {
            opcase oc;
            memset(&oc, 0, sizeof oc);
            oc.name = m ? "maxpool" : "avgpool"; oc.nin = 1; oc.second_order = 1; oc.spaced = m;
            oc.build = m ? b_maxpool : b_avgpool; oc.eval = m ? e_maxpool : e_avgpool;
            oc.c.n = cfg[i][0]; oc.c.hx = cfg[i][1]; oc.c.wx = cfg[i][2]; oc.c.cx = cfg[i][3]; oc.c.pk = cfg[i][4]; oc.c.ps = cfg[i][5];
            set_shape(&oc, 0, 4, cfg[i][0], cfg[i][1], cfg[i][2], cfg[i][3]);
            check_op(&oc);
        }
}

static void test_op_softmax_xent(void)
{
    static const int labels[5] = { 0, 3, 2, 3, 1 };
    opcase oc;
    memset(&oc, 0, sizeof oc);
    oc.name = "softmax_xent"; oc.nin = 1; oc.build = b_xent; oc.eval = e_xent;
    oc.c.n = 5; oc.c.cx = 4; oc.c.labels = labels;
    set_shape(&oc, 0, 2, 5, 4, 1, 1);
    check_op(&oc);
}

static void test_op_elementwise(void)
{
    struct { const char *name; int nin; ebm_var *(*b)(ebm_graph *, ebm_var **, const dctx *); void (*e)(double **, double *, const dctx *); } ops[] = {
        { "add", 2, b_add, e_add }, { "sub", 2, b_sub, e_sub }, { "mul", 2, b_mul, e_mul }, { "scale", 1, b_scale, e_scale },
        { "sum", 1, b_sum, e_sum }, { "mean", 1, b_mean, e_mean }, { "sqnorm", 1, b_sqnorm, e_sqnorm },
        { "dot", 2, b_dot, e_dot }, { "reshape", 1, b_reshape, e_reshape } };
    int i;
    for (i = 0; i < (int)(sizeof ops / sizeof ops[0]); i++) {
        opcase oc;
        memset(&oc, 0, sizeof oc);
        oc.name = ops[i].name; oc.nin = ops[i].nin; oc.build = ops[i].b; oc.eval = ops[i].e; oc.second_order = 1;
        oc.c.n = 24; oc.c.c = -0.75;
        if (ops[i].e == e_sum || ops[i].e == e_mean || ops[i].e == e_sqnorm || ops[i].e == e_dot) oc.sum_terms = 24;
        set_shape(&oc, 0, 2, 4, 6, 1, 1);
        set_shape(&oc, 1, 3, 2, 3, 4, 1); /* same size, another shape */
        check_op(&oc);
    }
}

static void test_op_linear(void)
{
    opcase oc;
    memset(&oc, 0, sizeof oc);
    oc.name = "linear"; oc.nin = 3; oc.build = b_linear; oc.eval = e_linear; oc.second_order = 1;
    oc.c.n = 3; oc.c.cx = 2 * 2 * 3; oc.c.cy = 5;
    set_shape(&oc, 0, 4, 3, 2, 2, 3); /* flattened to 12 features */
    set_shape(&oc, 1, 2, 12, 5, 1, 1);
    set_shape(&oc, 2, 1, 5, 1, 1, 1);
    check_op(&oc);
}

/* ------------------------------------------------------------------ tests: networks, higher order */

/* A small smooth net: conv3x3 -> act -> conv4x4 s2 -> act -> conv4x4 (to one energy). */
static int small_net(ebm_model *m, int act, uint64_t seed)
{
    ebm_model_init(m, 2, 8, 8);
    ebm_model_add_conv2d(m, 4, 3, 1, 1, 1);
    ebm_model_add_act(m, act, act == EBM_ACT_ELU ? 1.0f : 0.2f);
    ebm_model_add_conv2d(m, 5, 4, 2, 1, 1);
    ebm_model_add_act(m, act, act == EBM_ACT_ELU ? 1.0f : 0.2f);
    ebm_model_add_conv2d(m, 1, 4, 1, 0, 1);
    return ebm_model_alloc(m, seed);
}

#define NB 2
#define NX (NB * 8 * 8 * 2)

/* grad_x sum f into gx, and (if v) H v = grad_x (v . grad_x f) into hv; returns v . H v. */
static double net_grads(ebm_model *m, ebm_graph *g, float *x, float *v, float *gx, float *hv)
{
    int s[4] = { NB, 8, 8, 2 };
    ebm_var *xv, *y, *gxv = NULL, *hvv = NULL, *vv;
    double r = 0;
    ebm_graph_reset(g);
    xv = ebm_leaf(g, x, 4, s);
    y = ebm_model_forward(m, g, xv);
    ebm_grad(g, y, NULL, 1, &xv, &gxv, v != NULL);
    if (gx && gxv) memcpy(gx, gxv->data, NX * sizeof(float));
    if (v) {
        vv = ebm_leaf(g, v, 4, s);
        ebm_grad(g, ebm_dot(g, gxv, vv), NULL, 1, &xv, &hvv, 1);
        if (hvv) {
            int i;
            if (hv) memcpy(hv, hvv->data, NX * sizeof(float));
            for (i = 0; i < NX; i++) r += (double)hvv->data[i] * v[i];
        }
    }
    return ebm_graph_status(g) == EBM_OK ? r : NAN;
}

/* sum f(x) of small_net in double, from the double op definitions above. */
static double net_f_double(const ebm_model *m, const double *x)
{
    double *bufs[2], L = 0;
    const double *cur = x;
    int i, which = 0;
    size_t j, mx = (size_t)NB * 8 * 8 * 8;
    bufs[0] = dalloc(mx); bufs[1] = dalloc(mx);
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *Ly = &m->layer[i];
        double *out = bufs[which];
        size_t n_out = (size_t)NB * Ly->out_h * Ly->out_w * Ly->out_c;
        if (Ly->type == EBM_LAYER_CONV2D) {
            dctx c;
            double *w = dalloc(Ly->w_size);
            memset(&c, 0, sizeof c);
            c.n = NB; c.hx = Ly->in_h; c.wx = Ly->in_w; c.cx = Ly->in_c; c.hy = Ly->out_h; c.wy = Ly->out_w; c.cy = Ly->out_c;
            c.k = Ly->k; c.s = Ly->stride; c.p = Ly->pad;
            for (j = 0; j < Ly->w_size; j++) w[j] = m->params[Ly->w_off + j];
            d_conv(&c, cur, w, NULL, out, 0);
            for (j = 0; j < n_out; j++) out[j] += m->params[Ly->b_off + j % (size_t)Ly->out_c];
            free(w);
        } else {
            for (j = 0; j < n_out; j++) out[j] = ebm__act_ref(Ly->act, 0, (double)Ly->act_param, cur[j]);
        }
        cur = out;
        which ^= 1;
    }
    for (j = 0; j < NB; j++) L += cur[j];
    free(bufs[0]); free(bufs[1]);
    return L;
}

static void test_network_first_order(void)
{
    /* grad_x and grad_theta of sum f against central differences of the same
       network evaluated in double (h = 1e-6), along random directions. */
    int acts[] = { EBM_ACT_LEAKY_RELU, EBM_ACT_SILU, EBM_ACT_SOFTPLUS, EBM_ACT_ELU, EBM_ACT_GELU, EBM_ACT_TANH };
    int a;
    for (a = 0; a < 6; a++) {
        ebm_model m;
        ebm_graph *g = new_graph(16);
        float x[NX], d[NX], gx[NX], *u, *p0;
        double xd[NX], an = 0, fd, h = 1e-6, fp, fm;
        size_t j, P;
        int s[4] = { NB, 8, 8, 2 };
        ebm_var *y;
        CHECK(small_net(&m, acts[a], 3) == EBM_OK, "model: %s", m.err.msg);
        P = m.n_params;
        u = falloc(P); p0 = falloc(P);
        rnd(x, NX, -1, 1); rnd(d, NX, -1, 1); rnd(u, P, -1, 1);
        net_grads(&m, g, x, NULL, gx, NULL);
        for (j = 0; j < NX; j++) an += (double)gx[j] * d[j];
        for (j = 0; j < NX; j++) xd[j] = x[j] + h * d[j];
        fp = net_f_double(&m, xd);
        for (j = 0; j < NX; j++) xd[j] = x[j] - h * d[j];
        fm = net_f_double(&m, xd);
        fd = (fp - fm) / (2 * h);
        CHECK(fabs(an - fd) < 1e-4 * (fabs(an) + 1e-3), "%s: grad_x . d = %.7g, differences %.7g", ebm_act_name(acts[a]), an, fd);
        /* parameters: theta +- h u, evaluated in double from float parameters
           (the perturbation is applied in double: copy the block and shift). */
        ebm_graph_reset(g);
        y = ebm_sum(g, ebm_model_forward(&m, g, ebm_leaf(g, x, 4, s)));
        ebm_model_zero_grad(&m);
        ebm_model_backward(&m, g, y);
        for (an = 0, j = 0; j < P; j++) an += (double)m.grads[j] * u[j];
        {
            /* the float parameters move by exactly (p+ - p-); f is evaluated in double there */
            double t = 1e-5, dp = 0, dm = 0;
            for (j = 0; j < NX; j++) xd[j] = x[j];
            memcpy(p0, m.params, P * sizeof(float));
            for (j = 0; j < P; j++) m.params[j] = p0[j] + (float)t * u[j];
            fp = net_f_double(&m, xd);
            for (j = 0; j < P; j++) { dp += ((double)m.params[j] - p0[j]) * m.grads[j]; }
            for (j = 0; j < P; j++) m.params[j] = p0[j] - (float)t * u[j];
            fm = net_f_double(&m, xd);
            for (j = 0; j < P; j++) { dm += ((double)m.params[j] - p0[j]) * m.grads[j]; }
            memcpy(m.params, p0, P * sizeof(float));
            /* first order: f(p+) - f(p-) = grad . (p+ - p-) + O(t^3) */
            CHECK(fabs((fp - fm) - (dp - dm)) < 1e-4 * fabs(dp - dm) + 1e-9, "%s: grad_theta . step = %.7g, difference of f %.7g",
                  ebm_act_name(acts[a]), dp - dm, fp - fm);
        }
        free(u); free(p0);
        ebm_graph_destroy(g);
        ebm_model_free(&m);
    }
}

/* Hessian-vector products against differences of the gradient (the order below). */
static void test_network_hessian_vector(void)
{
    /* (ELU is left to the op test: its second derivative jumps at 0, which
       differences of width 2e-2 straddle somewhere in the net.) */
    int acts[] = { EBM_ACT_SILU, EBM_ACT_SOFTPLUS, EBM_ACT_GELU, EBM_ACT_TANH };
    int a;
    for (a = 0; a < 4; a++) {
        ebm_model m;
        ebm_graph *g = new_graph(16);
        float x[NX], v[NX], hv[NX], xt[NX], gp[4][NX];
        double fd[NX], hs[4] = { 2e-2, 1e-2, -1e-2, -2e-2 };
        int q, j;
        small_net(&m, acts[a], 4);
        rnd(x, NX, -1, 1); rnd(v, NX, -1, 1);
        net_grads(&m, g, x, v, NULL, hv);
        for (q = 0; q < 4; q++) {
            for (j = 0; j < NX; j++) xt[j] = x[j] + (float)hs[q] * v[j];
            net_grads(&m, g, xt, NULL, gp[q], NULL);
        }
        for (j = 0; j < NX; j++) fd[j] = (-(double)gp[0][j] + 8.0 * gp[1][j] - 8.0 * gp[2][j] + gp[3][j]) / (12 * 1e-2);
        CHECK(rel_err_fd(hv, fd, NX) < 2e-3, "%s: Hv vs differences of grad_x: rel %.2e", ebm_act_name(acts[a]), rel_err_fd(hv, fd, NX));
        ebm_graph_destroy(g);
        ebm_model_free(&m);
    }
}

/* S(theta) = |grad_x f|^2 (denoising score matching's shape) or
   v . H v (sliced score matching); returns S, and grad_theta S into gt. */
static double net_param_objective(ebm_model *m, ebm_graph *g, float *x, float *v, int third, float *gt)
{
    int s[4] = { NB, 8, 8, 2 };
    ebm_var *xv, *y, *gxv = NULL, *hvv = NULL, *S = NULL;
    ebm_graph_reset(g);
    xv = ebm_leaf(g, x, 4, s);
    y = ebm_model_forward(m, g, xv);
    ebm_grad(g, y, NULL, 1, &xv, &gxv, 1);
    if (!third) S = ebm_sqnorm(g, gxv);
    else {
        ebm_var *vv = ebm_leaf(g, v, 4, s);
        ebm_grad(g, ebm_dot(g, gxv, vv), NULL, 1, &xv, &hvv, 1);
        S = ebm_dot(g, hvv, vv);
    }
    if (gt) {
        ebm_model_zero_grad(m);
        ebm_model_backward(m, g, S);
        memcpy(gt, m->grads, m->n_params * sizeof(float));
    }
    return ebm_graph_status(g) == EBM_OK ? S->data[0] : NAN;
}

static void test_network_mixed_and_third_order(void)
{
    int acts[] = { EBM_ACT_SILU, EBM_ACT_SOFTPLUS, EBM_ACT_GELU, EBM_ACT_TANH };
    int a, third;
    for (a = 0; a < 4; a++)
        for (third = 0; third <= 1; third++) {
            ebm_model m;
            ebm_graph *g = new_graph(32);
            float x[NX], v[NX], *gt, *u, *p0;
            double an = 0, fd, sp[4], hs[4] = { 2e-2, 1e-2, -1e-2, -2e-2 };
            size_t j, P;
            int q;
            small_net(&m, acts[a], 5);
            P = m.n_params;
            gt = falloc(P); u = falloc(P); p0 = falloc(P);
            rnd(x, NX, -1, 1); rnd(v, NX, -1, 1); rnd(u, P, -1, 1);
            memcpy(p0, m.params, P * sizeof(float));
            net_param_objective(&m, g, x, v, third, gt);
            for (j = 0; j < P; j++) an += (double)gt[j] * u[j];
            /* S along theta + t u, t = +-h, +-2h: the order below, differenced */
            for (q = 0; q < 4; q++) {
                for (j = 0; j < P; j++) m.params[j] = p0[j] + (float)hs[q] * u[j];
                sp[q] = net_param_objective(&m, g, x, v, third, NULL);
            }
            memcpy(m.params, p0, P * sizeof(float));
            fd = (-sp[0] + 8 * sp[1] - 8 * sp[2] + sp[3]) / (12 * 1e-2);
            CHECK(fabs(an - fd) < 2e-3 * (fabs(an) + 1e-2), "%s, %s: grad_theta . u = %.7g, differences %.7g", ebm_act_name(acts[a]),
                  third ? "third order (sliced score matching)" : "mixed second order (grad_theta |grad_x f|^2)", an, fd);
            free(gt); free(u); free(p0);
            ebm_graph_destroy(g);
            ebm_model_free(&m);
        }
}

static void test_fused_matches_composite_on_network(void)
{
    /* The plain backward (fused activation kernels) and the recorded one give the same bits. */
    int acts[] = { EBM_ACT_LEAKY_RELU, EBM_ACT_SILU, EBM_ACT_GELU };
    int a;
    for (a = 0; a < 3; a++) {
        ebm_model m;
        ebm_graph *g = new_graph(16);
        float x[NX];
        int s[4] = { NB, 8, 8, 2 };
        ebm_var *xv, *y, *g0 = NULL, *g1 = NULL;
        small_net(&m, acts[a], 6);
        rnd(x, NX, -1, 1);
        xv = ebm_leaf(g, x, 4, s);
        y = ebm_model_forward(&m, g, xv);
        ebm_grad(g, y, NULL, 1, &xv, &g0, 0);
        ebm_grad(g, y, NULL, 1, &xv, &g1, 1);
        CHECK(g0 && g1 && memcmp(g0->data, g1->data, NX * sizeof(float)) == 0, "%s: fused and composite grad_x differ", ebm_act_name(acts[a]));
        ebm_graph_destroy(g);
        ebm_model_free(&m);
    }
}

/* The weights and bias of each conv or transposed conv layer of m, as
   parameter leaves of g, in layer order (P[2 i], P[2 i + 1]). */
static void conv_params(ebm_graph *g, ebm_model *m, ebm_var **P)
{
    int i, k = 0;
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *L = &m->layer[i];
        const int tr = L->type == EBM_LAYER_CONVT2D, bs = L->out_c;
        int ws[4];
        if (L->type != EBM_LAYER_CONV2D && !tr) continue;
        ws[0] = ws[1] = L->k; ws[2] = tr ? L->out_c : L->in_c; ws[3] = tr ? L->in_c : L->out_c;
        P[k++] = ebm__param(g, m, L->w_off, 4, ws);
        P[k++] = ebm__param(g, m, L->b_off, 1, &bs);
    }
}

static void test_fused_conv_leaky_matches_separate_ops(void)
{
    /* The model fuses conv + LeakyReLU into one op whose backward reads the
       mask off the output; built from the separate public ops instead, the
       same network must give the same bits for f, grad_x and grad_theta. */
    ebm_model m;
    ebm_graph *g = new_graph(16);
    float x[NX], *g1, *g2;
    int s[4] = { NB, 8, 8, 2 };
    ebm_var *xv, *y, *gx1 = NULL, *gx2 = NULL, *h;
    float f1[NB], gxs[NX];
    small_net(&m, EBM_ACT_LEAKY_RELU, 7);
    g1 = falloc(m.n_params); g2 = falloc(m.n_params);
    rnd(x, NX, -1, 1);
    xv = ebm_leaf(g, x, 4, s);
    y = ebm_model_forward(&m, g, xv);
    CHECK(y != NULL && y->op == EBM__OP_CONV && y->in[0]->op == EBM__OP_CONV && y->in[0]->ip[2] == 1, "the model did not fuse");
    ebm_grad(g, ebm_sum(g, y), NULL, 1, &xv, &gx1, 0);
    ebm_model_zero_grad(&m);
    ebm_model_backward(&m, g, ebm_sum(g, y));
    memcpy(g1, m.grads, m.n_params * sizeof(float));
    memcpy(f1, y->data, sizeof f1);
    if (gx1) memcpy(gxs, gx1->data, sizeof gxs); /* (the graph is reset next) */
    ebm_graph_reset(g);
    {   /* the same net from public ops: conv, leaky_relu, conv, leaky_relu, conv */
        ebm_var *P[6];
        conv_params(g, &m, P);
        xv = ebm_leaf(g, x, 4, s);
        h = ebm_leaky_relu(g, ebm_conv2d(g, xv, P[0], P[1], 1, 1), 0.2f);
        h = ebm_leaky_relu(g, ebm_conv2d(g, h, P[2], P[3], 2, 1), 0.2f);
        y = ebm_conv2d(g, h, P[4], P[5], 1, 0);
    }
    ebm_grad(g, ebm_sum(g, y), NULL, 1, &xv, &gx2, 0);
    ebm_model_zero_grad(&m);
    ebm_model_backward(&m, g, ebm_sum(g, y));
    memcpy(g2, m.grads, m.n_params * sizeof(float));
    CHECK(ebm_graph_status(g) == EBM_OK, "graph: %s", gmsg(g));
    CHECK(memcmp(f1, y->data, sizeof f1) == 0, "energies differ");
    CHECK(gx1 && gx2 && memcmp(gxs, gx2->data, NX * sizeof(float)) == 0, "grad_x differs");
    CHECK(memcmp(g1, g2, m.n_params * sizeof(float)) == 0, "grad_theta differs");
    free(g1); free(g2);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* Any other activation after a conv: the model computes both nodes in the
   conv's pass (ebm__conv2d_act), and the activation's gradient is held
   multiplied (ebm__premasked: the next conv's input gradient applies the
   derivative). Against the separate public ops differentiated by a
   recorded backward (which multiplies by the derivative as an op of its
   own): the same bits for f, grad_x and grad_theta, since each hidden
   gradient has one term here. The first hidden layer has 4 channels (the
   next conv's few-channel input gradient, then a pass of its own), the
   second 5 (its tile form). */
static void test_conv_act_pairs_match_separate_ops(void)
{
    const int acts[2] = { EBM_ACT_SILU, EBM_ACT_GELU };
    int a;
    for (a = 0; a < 2; a++) {
        const char *name = ebm_act_name(acts[a]);
        ebm_model m;
        ebm_graph *g = new_graph(16);
        float x[NX], *g1, *g2, f1[NB], gxs[NX];
        int s[4] = { NB, 8, 8, 2 }, i, held = 0;
        ebm_var *xv, *y, *gx1 = NULL, *gx2 = NULL, *h, *wrt[7], *out[7];
        small_net(&m, acts[a], 8);
        g1 = falloc(m.n_params); g2 = falloc(m.n_params);
        rnd(x, NX, -2, 2);
        xv = ebm_leaf(g, x, 4, s);
        y = ebm_model_forward(&m, g, xv);
        h = y ? y->in[0] : NULL;
        CHECK(h && h->op == EBM__OP_ACT && h->in[0]->op == EBM__OP_CONV && h->in[0]->ip[2] == 0, "%s: not a conv node and an activation node", name);
        ebm_model_zero_grad(&m);
        ebm_model_backward_input(&m, g, ebm_sum(g, y), xv, &gx1);
        for (h = g->first; h; h = h->next) held += h->op == EBM__OP_ACT && h->ip[2] == 1;
        CHECK(held == 2, "%s: %d activation gradients held multiplied, not 2", name, held);
        memcpy(g1, m.grads, m.n_params * sizeof(float));
        if (y) memcpy(f1, y->data, sizeof f1);
        if (gx1) memcpy(gxs, gx1->data, sizeof gxs);
        ebm_graph_reset(g);
        {   /* the same net from public ops, its gradients from a recorded backward */
            ebm_var *P[6];
            conv_params(g, &m, P);
            xv = ebm_leaf(g, x, 4, s);
            h = ebm_act(g, ebm_conv2d(g, xv, P[0], P[1], 1, 1), acts[a], 0.2f);
            h = ebm_act(g, ebm_conv2d(g, h, P[2], P[3], 2, 1), acts[a], 0.2f);
            y = ebm_conv2d(g, h, P[4], P[5], 1, 0);
            wrt[0] = xv;
            for (i = 0; i < 6; i++) wrt[i + 1] = P[i];
            CHECK(ebm_grad(g, ebm_sum(g, y), NULL, 7, wrt, out, 1) == EBM_OK, "%s: grad: %s", name, gmsg(g));
            gx2 = out[0];
            for (i = 0; i < 6 && out[i + 1]; i++)
                memcpy(g2 + (P[i]->data - m.params), out[i + 1]->data, out[i + 1]->size * sizeof(float));
        }
        CHECK(ebm_graph_status(g) == EBM_OK, "graph: %s", gmsg(g));
        CHECK(y && memcmp(f1, y->data, sizeof f1) == 0, "%s: energies differ", name);
        CHECK(gx1 && gx2 && memcmp(gxs, gx2->data, NX * sizeof(float)) == 0, "%s: grad_x differs", name);
        CHECK(memcmp(g1, g2, m.n_params * sizeof(float)) == 0, "%s: grad_theta differs", name);
        free(g1); free(g2);
        ebm_graph_destroy(g);
        ebm_model_free(&m);
    }
}

/* The same for a generator: its transposed convs fused with the
   LeakyReLU after each (the last, before tanh, not), against the public
   ops: the same bits for g(z), grad_z and grad_theta. The gradient of the
   first fused layer gets the factor in the next transposed conv's input
   gradient (a forward conv's write-back, ebm__premasked). */
static void test_fused_transposed_leaky_matches_separate_ops(void)
{
    enum { NZ = 3 * 4, NO = 3 * 12 * 12 * 2 };
    ebm_model m;
    ebm_graph *g = new_graph(16);
    float z[NZ], *g1, *g2, out1[NO], gz1[NZ];
    int zs[4] = { 3, 1, 1, 4 };
    ebm_var *zv, *y, *gz = NULL, *h;
    CHECK(ebm_model_init(&m, 4, 1, 1) == EBM_OK, "init");
    ebm_model_add_conv_transpose2d(&m, 8, 3, 1, 0, 0, 1); /* 1 -> 3 */
    ebm_model_add_act(&m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(&m, 5, 4, 2, 1, 0, 1); /* 3 -> 6 */
    ebm_model_add_act(&m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(&m, 2, 4, 2, 1, 0, 1); /* 6 -> 12 */
    ebm_model_add_act(&m, EBM_ACT_TANH, 0.0f);
    CHECK(ebm_model_alloc(&m, 5) == EBM_OK, "alloc: %s", m.err.msg);
    g1 = falloc(m.n_params); g2 = falloc(m.n_params);
    rnd(z, NZ, -1, 1);
    zv = ebm_leaf(g, z, 4, zs);
    y = ebm_model_forward(&m, g, zv);
    h = y ? y->in[0] : NULL; /* tanh's input: the last transposed conv, unfused */
    CHECK(h && h->op == EBM__OP_CONVT && h->ip[4] == 0 && h->in[0]->op == EBM__OP_CONVT && h->in[0]->ip[4] == 1 &&
          h->in[0]->in[0]->op == EBM__OP_CONVT && h->in[0]->in[0]->ip[4] == 1, "the model did not fuse");
    ebm_model_zero_grad(&m);
    ebm_model_backward_input(&m, g, ebm_sqnorm(g, y), zv, &gz);
    CHECK(h && h->in[0]->ip[5] == 1, "the middle layer's gradient was not held multiplied (state %d)", h ? h->in[0]->ip[5] : -9);
    memcpy(g1, m.grads, m.n_params * sizeof(float));
    if (y) memcpy(out1, y->data, sizeof out1);
    if (gz) memcpy(gz1, gz->data, sizeof gz1);
    ebm_graph_reset(g);
    {   /* the same generator from public ops */
        ebm_var *P[6];
        conv_params(g, &m, P);
        zv = ebm_leaf(g, z, 4, zs);
        h = ebm_leaky_relu(g, ebm_conv2d_transpose(g, zv, P[0], P[1], 1, 0, 3, 3), 0.2f);
        h = ebm_leaky_relu(g, ebm_conv2d_transpose(g, h, P[2], P[3], 2, 1, 6, 6), 0.2f);
        y = ebm_tanh(g, ebm_conv2d_transpose(g, h, P[4], P[5], 2, 1, 12, 12));
    }
    ebm_model_zero_grad(&m);
    gz = NULL;
    ebm_model_backward_input(&m, g, ebm_sqnorm(g, y), zv, &gz);
    memcpy(g2, m.grads, m.n_params * sizeof(float));
    CHECK(ebm_graph_status(g) == EBM_OK, "graph: %s", gmsg(g));
    CHECK(y && memcmp(out1, y->data, sizeof out1) == 0, "g(z) differs");
    CHECK(gz && memcmp(gz1, gz->data, sizeof gz1) == 0, "grad_z differs");
    CHECK(memcmp(g1, g2, m.n_params * sizeof(float)) == 0, "grad_theta differs");
    free(g1); free(g2);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* A node h whose gradient gets its activation's factor in the next
   conv's input-gradient write-back (ebm__premasked): a fused conv +
   LeakyReLU node (kind 2), or an activation node after a conv, LeakyReLU
   or SiLU (kind 1); when h has a second consumer (h * h) whose term
   arrives after the conv's, or before it (then nothing is multiplied
   early), and when ebm_grad also returns h's own gradient (which must come
   back without the factor): against the same sums from the separate
   public ops and a recorded backward (kind 0, which multiplies by the
   factor as an op of its own). h has 8 channels (the next conv's tile
   form applies the factor) or 3 (its few-channel form, then a pass of its
   own). The same with transposed convs (tr): the next one's input gradient
   is a forward conv, of its tile form (5 output channels) or its
   few-channel form (3; 8-pixel rows, one block). The gradient terms are
   multiplied before or after they are summed, so the sums differ by
   rounding: 1e-5 relative. */
static void test_premasked_gradient_terms(void)
{
    enum { NX_ = 2 * 6 * 6 * 3, NW1 = 4 * 4 * 3 * 8, NW2 = 4 * 4 * 8 * 5, NH = 2 * 8 * 8 * 8 };
    static float x[NX_], w1[NW1], b1[8], w2[NW2], b2[5], want[3][NH];
    ebm_graph *g = new_graph(16);
    int tr, few, order, kind, i, silu;
    rnd(x, NX_, -1, 1); rnd(w1, NW1, -1, 1); rnd(b1, 8, -0.5f, 0.5f); rnd(w2, NW2, -1, 1); rnd(b2, 5, -1, 1);
    for (silu = 0; silu < 2; silu++)
    for (tr = 0; tr < 2; tr++)
    for (few = 0; few < 2; few++)
        for (order = 0; order < 2; order++)
            for (kind = 0; kind < 3 - silu; kind++) { /* 0 the reference, 1 an activation node, 2 a fused node (LeakyReLU only) */
                /* conv: x 6x6x3 -> h 6x6xhc -> 6x6x5; transposed: x 4x4x3 -> h 8x8x8 -> 16x16xco */
                const int hc = !tr && few ? 3 : 8, co = tr && few ? 3 : 5, k = tr ? 4 : 3, xw = tr ? 4 : 6, hw = tr ? 8 : 6;
                const int xs[4] = { 2, xw, xw, 3 }, w1s[4] = { k, k, tr ? hc : 3, tr ? 3 : hc }, w2s[4] = { k, k, tr ? co : hc, tr ? hc : co };
                const size_t n_out[3] = { (size_t)2 * xw * xw * 3, (size_t)k * k * 3 * hc, (size_t)2 * hw * hw * hc };
                ebm_var *xv, *W1, *B1, *W2, *B2, *h, *sq = NULL, *cv, *y, *wrt[3], *out[3] = { NULL, NULL, NULL };
                ebm_graph_reset(g);
                xv = ebm_leaf(g, x, 4, xs); W1 = ebm_leaf(g, w1, 4, w1s); B1 = ebm_leaf(g, b1, 1, &hc);
                W2 = ebm_leaf(g, w2, 4, w2s); B2 = ebm_leaf(g, b2, 1, &co);
                if (kind == 2) h = tr ? ebm__conv2d_transpose(g, xv, W1, B1, 2, 1, 8, 8, 1, 0.2f, NULL) : ebm__conv2d(g, xv, W1, B1, 1, 1, 1, 0.2f, NULL, NULL);
                else h = ebm_act(g, tr ? ebm_conv2d_transpose(g, xv, W1, B1, 2, 1, 8, 8) : ebm_conv2d(g, xv, W1, B1, 1, 1),
                                 silu ? EBM_ACT_SILU : EBM_ACT_LEAKY_RELU, 0.2f);
                if (order == 1) sq = ebm_mul(g, h, h); /* the conv's term first */
                cv = tr ? ebm_conv2d_transpose(g, h, W2, B2, 2, 1, 16, 16) : ebm_conv2d(g, h, W2, B2, 1, 1);
                if (order == 0) sq = ebm_mul(g, h, h); /* h * h's term first */
                y = ebm_add(g, ebm_sum(g, cv), ebm_scale(g, ebm_sum(g, sq), 0.3f));
                wrt[0] = xv; wrt[1] = W1; wrt[2] = h;
                CHECK(ebm_grad(g, y, NULL, 3, wrt, out, kind == 0) == EBM_OK, "grad: %s", gmsg(g));
                if (!out[0] || !out[1] || !out[2]) continue;
                for (i = 0; i < 3; i++)
                    if (!kind) memcpy(want[i], out[i]->data, n_out[i] * sizeof(float));
                    else CHECK(rel_err_ff(out[i]->data, want[i], n_out[i]) < 1e-5,
                               "%s, %s %s, h of %d channels, next %d, order %d, gradient %d: vs separate ops rel %.2e",
                               tr ? "transposed" : "conv", silu ? "SiLU" : "LeakyReLU", kind == 2 ? "fused" : "node", hc, co, order, i,
                               rel_err_ff(out[i]->data, want[i], n_out[i]));
                if (kind) { /* and with h not asked for: its gradient held multiplied when the conv's term came first */
                    const int slot = kind == 1 ? 2 : tr ? 5 : 3;
                    CHECK(ebm_grad(g, y, NULL, 2, wrt, out, 0) == EBM_OK, "grad: %s", gmsg(g));
                    for (i = 0; i < 2 && out[i]; i++)
                        CHECK(rel_err_ff(out[i]->data, want[i], n_out[i]) < 1e-5,
                              "%s, %s %s, h of %d channels, next %d, order %d, gradient %d without h: rel %.2e", tr ? "transposed" : "conv",
                              silu ? "SiLU" : "LeakyReLU", kind == 2 ? "fused" : "node", hc, co, order, i,
                              rel_err_ff(out[i]->data, want[i], n_out[i]));
                    CHECK(h->ip[slot] == order, "%s, %s %s, h of %d channels, next %d, order %d: gradient state %d",
                          tr ? "transposed" : "conv", silu ? "SiLU" : "LeakyReLU", kind == 2 ? "fused" : "node", hc, co, order, h->ip[slot]);
                }
            }
    ebm_graph_destroy(g);
}

/* A conv's bias gradient is the seed summed over every output row, each
   channel row by row in order (ebm__chsum, in parallel over blocks of 16
   channels), a single channel as 64 partial sums, of the rows r with r
   mod 64 = k in order, added for k = 0 .. 63: the same bits as those
   float sums written out here, for 40 channels (two whole blocks and a
   tail of 8) and for 1, on outputs of 40,960 and 1,024 values (past the
   parallel threshold and not), and of 675 rows (not a whole number of
   partial sums' turns). */
static void test_bias_gradient_sums_in_order(void)
{
    static float x[4 * 16 * 16 * 3], w[3 * 3 * 3 * 40], b[40], seed[4 * 16 * 16 * 40], want[40];
    ebm_graph *g = new_graph(16);
    int co, i, j, v;
    rnd(x, sizeof x / sizeof x[0], -1, 1); rnd(w, sizeof w / sizeof w[0], -1, 1); rnd(b, 40, -1, 1);
    /* 4 16x16 images, then 3 of 15x15 (675 rows: the partial sums' last rows) with eight
       draws of the seed: a sum in another order rounds to the same float for about half
       of all draws (measured, for a single channel's last rows all added to the first
       partial sum) */
    for (v = 0; v < 9; v++)
        for (co = 40; co >= 1; co -= 39) {
            const int n = v ? 3 : 4, hw = v ? 15 : 16, xs[4] = { n, hw, hw, 3 }, ws[4] = { 3, 3, 3, co }, rows = n * hw * hw;
            ebm_var *xv, *W, *B, *y, *sv, *gb = NULL;
            int ys[4];
            ys[0] = n; ys[1] = hw; ys[2] = hw; ys[3] = co;
            if (co == 40) rnd(seed, sizeof seed / sizeof seed[0], -1, 1);
            ebm_graph_reset(g);
            xv = ebm_leaf(g, x, 4, xs); W = ebm_leaf(g, w, 4, ws); B = ebm_leaf(g, b, 1, &co);
            y = ebm_conv2d(g, xv, W, B, 1, 1);
            sv = ebm_leaf(g, seed, 4, ys);
            CHECK(ebm_grad(g, y, sv, 1, &B, &gb, 0) == EBM_OK && gb, "grad: %s", gmsg(g));
            if (!gb) continue;
            for (j = 0; j < co; j++) {
                const int P = co == 1 ? 64 : 1;
                int k;
                want[j] = 0.0f;
                for (k = 0; k < P; k++) {
                    float part = 0.0f;
                    for (i = k; i < rows; i += P) part += seed[(size_t)i * co + j];
                    want[j] = k == 0 ? part : want[j] + part;
                }
            }
            CHECK(memcmp(gb->data, want, (size_t)co * sizeof(float)) == 0, "%d rows, %d channels: the bias gradient is not the sum in its order",
                  rows, co);
        }
    ebm_graph_destroy(g);
}

/* Everything a step computes, for the thread test: f, grad_x, grad_theta, and the third-order objective's grad_theta. */
static void all_results(ebm_model *m, ebm_graph *g, float *x, float *v, int n, float *out)
{
    int s[4];
    ebm_var *xv, *y, *gx = NULL;
    size_t nx = (size_t)n * m->in_h * m->in_w * m->in_c, P = m->n_params;
    s[0] = n; s[1] = m->in_h; s[2] = m->in_w; s[3] = m->in_c;
    ebm_graph_reset(g);
    xv = ebm_leaf(g, x, 4, s);
    y = ebm_model_forward(m, g, xv);
    ebm_grad(g, y, NULL, 1, &xv, &gx, 0);
    memcpy(out, y->data, (size_t)n * sizeof(float));
    memcpy(out + n, gx->data, nx * sizeof(float));
    ebm_model_zero_grad(m);
    ebm_model_backward(m, g, ebm_mean(g, y));
    memcpy(out + n + nx, m->grads, P * sizeof(float));
    ebm_graph_reset(g);
    {
        ebm_var *hv = NULL, *vv;
        xv = ebm_leaf(g, x, 4, s);
        vv = ebm_leaf(g, v, 4, s);
        y = ebm_model_forward(m, g, xv);
        ebm_grad(g, y, NULL, 1, &xv, &gx, 1);
        ebm_grad(g, ebm_dot(g, gx, vv), NULL, 1, &xv, &hv, 1);
        ebm_model_zero_grad(m);
        ebm_model_backward(m, g, ebm_dot(g, hv, vv));
        memcpy(out + n + nx + P, m->grads, P * sizeof(float));
    }
}

static void test_threads_bit_identical(void)
{
    int act;
    for (act = 0; act < 2; act++) {
        ebm_model m;
        ebm_graph *g = new_graph(256);
        const int n = 3;
        size_t nx, tot;
        float *x, *v, *r1, *r2;
        CHECK(ebm_model_convnet(&m, 1, 28, 8, act ? EBM_ACT_SILU : EBM_ACT_LEAKY_RELU, 0.2f, 11) == EBM_OK, "convnet: %s", m.err.msg);
        nx = (size_t)n * 28 * 28;
        tot = (size_t)n + nx + 2 * m.n_params;
        x = falloc(nx); v = falloc(nx); r1 = falloc(tot); r2 = falloc(tot);
        rnd(x, nx, -1, 1); rnd(v, nx, -1, 1);
        ebm_set_threads(1);
        all_results(&m, g, x, v, n, r1);
        ebm_set_threads(2);
        all_results(&m, g, x, v, n, r2);
        CHECK(ebm_graph_status(g) == EBM_OK, "graph: %s", gmsg(g));
        CHECK(memcmp(r1, r2, tot * sizeof(float)) == 0, "%s net: 1 and 2 threads give different bits", act ? "silu" : "leaky");
        free(x); free(v); free(r1); free(r2);
        ebm_graph_destroy(g);
        ebm_model_free(&m);
    }
}

/* ------------------------------------------------------------------ tests: models */

static void test_reference_networks(void)
{
    ebm_model m;
    int h, w, c, nf;
    for (nf = 16; nf <= 64; nf *= 4) {
        int hw;
        for (hw = 28; hw <= 32; hw += 4) {
            int C = hw == 28 ? 1 : 3, k = hw == 28 ? 3 : 4;
            /* PyTorch's count: sum over convs of Co*Ci*K*K + Co */
            size_t want = (size_t)nf * C * 9 + nf + (size_t)2 * nf * nf * 16 + 2 * nf + (size_t)4 * nf * 2 * nf * 16 + 4 * nf +
                          (size_t)8 * nf * 4 * nf * 16 + 8 * nf + (size_t)8 * nf * k * k + 1;
            CHECK(ebm_model_convnet(&m, C, hw, nf, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK, "convnet: %s", m.err.msg);
            ebm_model_out_shape(&m, &h, &w, &c);
            CHECK(h == 1 && w == 1 && c == 1, "convnet %d: output %dx%dx%d", hw, c, h, w);
            CHECK(m.n_params == want, "convnet %d nf %d: %lu parameters, PyTorch has %lu", hw, nf, (unsigned long)m.n_params, (unsigned long)want);
            CHECK(m.layer[8].k == k, "convnet %d: last kernel %d", hw, m.layer[8].k);
            ebm_model_free(&m);
        }
    }
    CHECK(ebm_model_generator28(&m, 100, 16, 1, 1) == EBM_OK, "generator: %s", m.err.msg);
    ebm_model_out_shape(&m, &h, &w, &c);
    CHECK(h == 28 && w == 28 && c == 1, "generator output %dx%dx%d", c, h, w);
    ebm_model_free(&m);
    CHECK(ebm_model_mlp_prior(&m, 100, 200, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK, "prior: %s", m.err.msg);
    CHECK(m.n_params == (size_t)100 * 200 + 200 + 200 * 200 + 200 + 200 + 1, "prior parameters %lu", (unsigned long)m.n_params);
    ebm_model_free(&m);
}

/* The empirical spread of a block of U(-b, b) values: max |w| <= b, and the
   standard deviation b/sqrt(3) within 5 standard errors (Var(w^2) = 4b^4/45). */
static void check_uniform_block(const char *what, const float *w, size_t n, double b)
{
    double s2 = 0, mx = 0, want = b * b / 3, se = sqrt(4 * b * b * b * b / 45 / (double)n);
    size_t i;
    for (i = 0; i < n; i++) { s2 += (double)w[i] * w[i]; if (fabs(w[i]) > mx) mx = fabs(w[i]); }
    s2 /= (double)n;
    CHECK(mx <= b * (1 + 1e-6), "%s: |w| reaches %.5f > bound %.5f", what, mx, b);
    CHECK(mx > b * (1 - 20.0 / (double)n), "%s: |w| only reaches %.5f of %.5f", what, mx, b);
    CHECK(fabs(s2 - want) < 5 * se, "%s: mean square %.6f, want %.6f +- %.6f", what, s2, want, 5 * se);
}

static void test_init_matches_pytorch_defaults(void)
{
    ebm_model m;
    CHECK(ebm_model_convnet(&m, 1, 28, 32, EBM_ACT_LEAKY_RELU, 0.2f, 7) == EBM_OK, "convnet");
    check_uniform_block("conv 4x4 weights", m.params + m.layer[4].w_off, m.layer[4].w_size, 1 / sqrt(64.0 * 16));
    check_uniform_block("conv 4x4 bias", m.params + m.layer[4].b_off, m.layer[4].b_size, 1 / sqrt(64.0 * 16));
    ebm_model_free(&m);
    /* transposed conv: PyTorch's fan_in is weight.size(1) * K * K = out_channels * K * K */
    CHECK(ebm_model_generator28(&m, 100, 32, 1, 7) == EBM_OK, "generator");
    check_uniform_block("convT 7x7 weights (fan_in = Co*K*K)", m.params + m.layer[0].w_off, m.layer[0].w_size, 1 / sqrt(64.0 * 49));
    check_uniform_block("convT 4x4 weights (fan_in = Co*K*K)", m.params + m.layer[2].w_off, m.layer[2].w_size, 1 / sqrt(32.0 * 16));
    ebm_model_free(&m);
    CHECK(ebm_model_mlp_prior(&m, 100, 200, EBM_ACT_GELU, 0, 7) == EBM_OK, "prior");
    check_uniform_block("linear weights", m.params + m.layer[2].w_off, m.layer[2].w_size, 1 / sqrt(200.0));
    ebm_model_free(&m);
}

static void test_torch_layout_roundtrip(void)
{
    ebm_model m;
    float *t, *saved;
    int k, ci, co, kh, kw;
    ebm_model_init(&m, 3, 4, 5);
    ebm_model_add_conv2d(&m, 6, 3, 1, 1, 1);
    ebm_model_add_conv_transpose2d(&m, 2, 4, 2, 1, 1, 1);
    ebm_model_add_linear(&m, 7, 1);
    CHECK(ebm_model_alloc(&m, 3) == EBM_OK, "alloc: %s", m.err.msg);
    t = falloc(m.n_params); saved = falloc(m.n_params);
    memcpy(saved, m.params, m.n_params * sizeof(float));
    ebm_model_export_torch(&m, t);
    /* spot the layouts: conv (Co,Ci,K,K) and convT (Ci,Co,K,K) */
    for (co = 0; co < 6; co++) for (ci = 0; ci < 3; ci++) for (kh = 0; kh < 3; kh++) for (kw = 0; kw < 3; kw++)
        CHECK(t[((co * 3 + ci) * 3 + kh) * 3 + kw] == m.params[((kh * 3 + kw) * 3 + ci) * 6 + co], "conv layout");
    for (ci = 0; ci < 6; ci++) for (co = 0; co < 2; co++) for (k = 0; k < 16; k++)
        CHECK(t[m.layer[1].w_off + (ci * 2 + co) * 16 + k] == m.params[m.layer[1].w_off + (k * 2 + co) * 6 + ci], "convT layout");
    memset(m.params, 0, m.n_params * sizeof(float));
    ebm_model_import_torch(&m, t);
    CHECK(memcmp(saved, m.params, m.n_params * sizeof(float)) == 0, "export then import is not the identity");
    free(t); free(saved);
    ebm_model_free(&m);
}

static void test_linear_flatten_order_matches_torch(void)
{
    /* A linear layer on a 2x3x2 (CxHxW) input: ours on NHWC with our weights
       equals PyTorch's formula on NCHW with the exported weights. */
    ebm_model m;
    ebm_graph *g = new_graph(4);
    float x[2 * 12], xc[2 * 12], *t;
    int s[4] = { 2, 3, 2, 2 }, n, o, i;
    ebm_var *y;
    ebm_model_init(&m, 2, 3, 2);
    ebm_model_add_linear(&m, 4, 1);
    ebm_model_alloc(&m, 9);
    t = falloc(m.n_params);
    ebm_model_export_torch(&m, t);
    rnd(x, 24, -1, 1);
    ebm_nhwc_to_nchw(x, xc, 2, 2, 3, 2);
    y = ebm_model_forward(&m, g, ebm_leaf(g, x, 4, s));
    for (n = 0; n < 2; n++)
        for (o = 0; o < 4; o++) {
            double acc = t[48 + o];
            for (i = 0; i < 12; i++) acc += (double)t[o * 12 + i] * xc[n * 12 + i];
            CHECK(fabs(acc - y->data[n * 4 + o]) < 1e-5, "sample %d output %d: %g vs torch formula %g", n, o, (double)y->data[n * 4 + o], acc);
        }
    free(t);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

static void test_step_bytes_exact(void)
{
    /* The measured prediction equals what the real step uses, for every kind. */
    int kind;
    for (kind = EBM_STEP_FORWARD; kind <= EBM_STEP_THIRD_ORDER; kind++) {
        ebm_model m;
        ebm_graph *g;
        ebm_error e;
        size_t pred = 0, nx = 5 * 28 * 28;
        float *x = falloc(nx), *v = falloc(nx);
        ebm_model_convnet(&m, 1, 28, 8, EBM_ACT_SILU, 0, 1);
        CHECK(ebm_model_step_bytes(&m, 5, kind, &pred, &e) == EBM_OK, "step_bytes: %s", e.msg);
        rnd(x, nx, -1, 1); rnd(v, nx, -1, 1);
        ebm_graph_create(&g, pred, &e);
        ebm_graph_reset(g);
        CHECK(ebm__step_build(&m, g, kind, 5, x, v) == EBM_OK, "kind %d does not fit its predicted %lu bytes: %s", kind, (unsigned long)pred,
              gmsg(g));
        CHECK(ebm_graph_peak_bytes(g) - (size_t)(ebm__aligned_base(g) - g->a.base) + EBM__ALIGN == pred,
              "kind %d: used %lu, predicted %lu", kind, (unsigned long)ebm_graph_peak_bytes(g), (unsigned long)pred);
        ebm_graph_destroy(g);
        /* and one that is 1 KiB short fails cleanly with ENOMEM */
        ebm_graph_create(&g, pred - 1024, &e);
        ebm_graph_reset(g);
        CHECK(ebm__step_build(&m, g, kind, 5, x, v) == EBM_ENOMEM, "kind %d ran in less than its predicted memory", kind);
        CHECK(strstr(gmsg(g), "arena full") != NULL, "ENOMEM reason: %s", gmsg(g));
        ebm_graph_destroy(g);
        free(x); free(v);
        ebm_model_free(&m);
    }
}

static void test_no_allocation_per_step(void)
{
    /* After setup, a loop of Langevin-style steps calls the allocator zero times. */
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    size_t bytes, nx = 4 * 28 * 28;
    float *x = falloc(nx), *dx = falloc(nx), f[4];
    long before;
    int k;
    ebm_model_convnet(&m, 1, 28, 8, EBM_ACT_LEAKY_RELU, 0.2f, 1);
    ebm_model_step_bytes(&m, 4, EBM_STEP_INPUT_GRAD, &bytes, &e);
    ebm_graph_create(&g, bytes, &e);
    rnd(x, nx, -1, 1);
    before = t_calls;
    for (k = 0; k < 5; k++) {
        size_t i;
        CHECK(ebm_model_score(&m, g, x, 4, f, dx) == EBM_OK, "score: %s", gmsg(g));
        for (i = 0; i < nx; i++) x[i] += 0.01f * dx[i];
    }
    CHECK(t_calls == before, "%ld allocations in 5 steps", t_calls - before);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
    free(x); free(dx);
}

static void test_optimisers(void)
{
    /* Adam and SGD minimise a quadratic; Adam's first step is lr * sign(g) (PyTorch's rule). */
    ebm_model m;
    ebm_graph *g = new_graph(4);
    int s[4] = { 1, 1, 1, 3 }, t;
    float x[3] = { 0.5f, -1.0f, 2.0f }, p0;
    ebm_model_init(&m, 3, 1, 1);
    ebm_model_add_linear(&m, 1, 0);
    ebm_model_alloc(&m, 1);
    p0 = m.params[0];
    ebm_model_zero_grad(&m);
    ebm_model_backward(&m, g, ebm_model_forward(&m, g, ebm_leaf(g, x, 4, s)));
    CHECK(ebm_adam_step(&m, 0.01f, 0.9f, 0.999f, 1e-8f, 1) == EBM_OK, "adam");
    CHECK(fabs(m.params[0] - (p0 - 0.01f)) < 1e-6, "adam first step %g, want %g", (double)(m.params[0] - p0), -0.01);
    for (t = 0; t < 300; t++) { /* minimise (w.x - 1)^2 */
        ebm_var *y;
        ebm_graph_reset(g);
        y = ebm_model_forward(&m, g, ebm_leaf(g, x, 4, s));
        ebm_model_zero_grad(&m);
        ebm_model_backward(&m, g, ebm_sqnorm(g, ebm_add(g, y, ebm_full(g, 1, s, -1.0f))));
        ebm_sgd_step(&m, 0.02f, 0.9f);
    }
    {
        float y = m.params[0] * x[0] + m.params[1] * x[1] + m.params[2] * x[2];
        CHECK(fabs(y - 1) < 1e-4, "SGD with momentum did not reach the minimum: %g", (double)y);
    }
    CHECK(ebm_adam_step(&m, -1, 0.9f, 0.999f, 1e-8f, 1) == EBM_EINVAL, "negative lr accepted");
    CHECK(ebm_sgd_step(&m, 0.1f, 1.5f) == EBM_EINVAL, "momentum 1.5 accepted");
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* ebm_model_backward_input: one backward pass gives the parameter gradients
   of ebm_model_backward and the input gradient of ebm_grad, bit for bit, on
   the latent model's generator (transposed convs, tanh). */
static void test_model_backward_input(void)
{
    ebm_model m;
    ebm_graph *g = new_graph(64);
    ebm_rng r;
    int s[4] = { 3, 1, 1, 8 };
    float z[3 * 8], *grads;
    ebm_var *zv, *loss, *gz = NULL, *gz2 = NULL;
    size_t j;
    ebm_model_generator28(&m, 8, 4, 1, 5);
    grads = (float *)malloc(m.n_params * sizeof *grads);
    r.seed = 31; r.stream = 2;
    ebm_rng_normal(&r, 0, 0, z, 3 * 8);
    zv = ebm_leaf(g, z, 4, s);
    loss = ebm_sqnorm(g, ebm_model_forward(&m, g, zv));
    ebm_model_zero_grad(&m);
    CHECK(ebm_model_backward(&m, g, loss) == EBM_OK, "backward: %s", gmsg(g));
    memcpy(grads, m.grads, m.n_params * sizeof *grads);
    CHECK(ebm_grad(g, loss, NULL, 1, &zv, &gz2, 0) == EBM_OK, "grad: %s", gmsg(g));
    ebm_model_zero_grad(&m);
    CHECK(ebm_model_backward_input(&m, g, loss, zv, &gz) == EBM_OK && gz && gz2, "backward_input: %s", gmsg(g));
    CHECK(!memcmp(grads, m.grads, m.n_params * sizeof *grads), "parameter gradients differ from ebm_model_backward's");
    if (gz && gz2) {
        CHECK(!memcmp(gz->data, gz2->data, sizeof z), "input gradient differs from ebm_grad's");
        for (j = 0; j < 3 * 8 && gz->data[j] == 0; j++) {}
        CHECK(j < 3 * 8, "the input gradient is zero");
    }
    CHECK(ebm_model_backward_input(&m, g, loss, zv, NULL) == EBM_EINVAL, "an input without a place for its gradient accepted");
    free(grads);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

static void test_model_score_matches_graph(void)
{
    ebm_model m;
    ebm_graph *g = new_graph(16);
    float x[3 * 28 * 28], f[3], dx[3 * 28 * 28], f1[3];
    int i;
    ebm_model_convnet(&m, 1, 28, 4, EBM_ACT_LEAKY_RELU, 0.2f, 2);
    rnd(x, sizeof x / sizeof x[0], -1, 1);
    CHECK(ebm_model_score(&m, g, x, 3, f, dx) == EBM_OK, "score");
    for (i = 0; i < 3; i++) { /* one sample at a time gives the same energies */
        CHECK(ebm_model_score(&m, g, x + i * 784, 1, f1 + i, NULL) == EBM_OK, "score single");
        CHECK(fabs(f1[i] - f[i]) <= 1e-6 * (1 + fabs(f[i])), "sample %d: %g alone, %g in a batch", i, (double)f1[i], (double)f[i]);
    }
    ebm_model_free(&m);
    /* without dx the forward is not recorded (no derivative held after a
       conv + SiLU): the same energies, bit for bit, in no more memory than
       EBM_STEP_FORWARD predicts */
    {
        size_t pred = 0;
        ebm_error e;
        ebm_graph *g2 = NULL;
        ebm_model_convnet(&m, 1, 28, 4, EBM_ACT_SILU, 0.0f, 2);
        CHECK(ebm_model_score(&m, g, x, 3, f, dx) == EBM_OK && ebm_model_score(&m, g, x, 3, f1, NULL) == EBM_OK, "SiLU score");
        CHECK(memcmp(f, f1, sizeof f) == 0, "SiLU net: energies with and without dx differ");
        CHECK(ebm_model_step_bytes(&m, 3, EBM_STEP_FORWARD, &pred, &e) == EBM_OK && ebm_graph_create(&g2, pred, &e) == EBM_OK, "forward bytes");
        if (g2) {
            CHECK(ebm_model_score(&m, g2, x, 3, f1, NULL) == EBM_OK, "energies only do not fit EBM_STEP_FORWARD's %lu bytes", (unsigned long)pred);
            ebm_graph_destroy(g2);
        }
        ebm_model_free(&m);
    }
    ebm_graph_destroy(g);
}

/* ------------------------------------------------------------------ tests: Langevin */

/* Sample mean and (unbiased) variance of N values. */
static void sample_moments(const float *x, size_t N, double *mean, double *var)
{
    double m = 0, v = 0;
    size_t i;
    for (i = 0; i < N; i++) m += x[i];
    m /= (double)N;
    for (i = 0; i < N; i++) v += (x[i] - m) * (x[i] - m);
    *mean = m;
    *var = v / (double)(N - 1);
}

/* f(x) = c . sum(x): a linear layer 64 -> 1 with every weight c and no bias. */
static void linear_energy(ebm_model *m, float c)
{
    size_t i;
    ebm_model_init(m, 64, 1, 1);
    ebm_model_add_linear(m, 1, 0);
    ebm_model_alloc(m, 1);
    for (i = 0; i < m->n_params; i++) m->params[i] = c;
}

static void test_langevin_gaussian_exact_discretisation(void)
{
    /* Target exp(c sum x) N(0, I) = N(c, I) per coordinate. The unadjusted
       chain x' = x + (e^2/2)(c - x) + e xi is AR(1): its law is exactly
       N(c, 1 / (1 - e^2/4)) at stationarity (the known step-size bias), and
       after K = 300 steps from 0 the start is forgotten to 1e-17.
       n = 4000 chains x 64 coordinates; tolerances are 5 standard errors. */
    ebm_model m;
    ebm_graph *g = new_graph(16);
    ebm_langevin cfg;
    ebm_rng r;
    const int n = 4000;
    const size_t N = (size_t)n * 64;
    float *x = falloc(N), c = 0.7f, e = 0.5f;
    double mean = 0, var = 0, want_var = 1.0 / (1.0 - e * e / 4.0), rt = -1;
    linear_energy(&m, c);
    ebm_langevin_default(&cfg);
    cfg.form = EBM_LANGEVIN_EPS; cfg.eps = e; cfg.sigma_q = 1.0f; cfg.box = EBM_BOX_NONE; cfg.n_steps = 300;
    r.seed = 8; r.stream = EBM_STREAM_USER + 1;
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 0, x, n, &rt) == EBM_OK, "langevin: %s", gmsg(g));
    sample_moments(x, N, &mean, &var);
    CHECK(fabs(mean - c) < 5 * sqrt(want_var / (double)N), "mean %.5f, want %.5f +- %.5f", mean, (double)c, 5 * sqrt(want_var / (double)N));
    CHECK(fabs(var - want_var) < 5 * want_var * sqrt(2.0 / (double)N), "variance %.5f, want %.5f +- %.5f (without the step bias: 1)", var, want_var,
          5 * want_var * sqrt(2.0 / (double)N));
    CHECK(fabs(rt - c * 8.0) < 1e-4, "r_t = %.6f, |grad f| = c sqrt(64) = %.6f", rt, c * 8.0);
    free(x);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

static void test_langevin_same_bits_in_any_batch(void)
{
    /* 10 chains run as one batch, or as batches of 3 and 7 with first_sample
       3: each chain's bits depend only on its global sample index. */
    ebm_model m;
    ebm_graph *g = new_graph(32);
    ebm_langevin cfg;
    ebm_rng r;
    const size_t D = 28 * 28;
    float *a = falloc(10 * D), *b = falloc(10 * D);
    ebm_model_convnet(&m, 1, 28, 4, EBM_ACT_LEAKY_RELU, 0.2f, 3);
    ebm_langevin_default(&cfg);
    cfg.n_steps = 5;
    cfg.noise = 0.05f;
    r.seed = 4; r.stream = EBM_STREAM_USER + 2;
    rnd(a, 10 * D, -1, 1);
    memcpy(b, a, 10 * D * sizeof(float));
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 100, a, 10, NULL) == EBM_OK, "run: %s", gmsg(g));
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 100, b, 3, NULL) == EBM_OK, "run: %s", gmsg(g));
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 103, b + 3 * D, 7, NULL) == EBM_OK, "run: %s", gmsg(g));
    CHECK(memcmp(a, b, 10 * D * sizeof(float)) == 0, "a chain's result depends on its batch");
    { /* and not on the thread count (the update runs in parallel groups of samples) */
        double r1 = 0, r2 = 0;
        rnd(a, 10 * D, -1, 1);
        memcpy(b, a, 10 * D * sizeof(float));
        ebm_set_threads(1);
        ebm_langevin_run(&m, g, &cfg, &r, 0, a, 10, &r1);
        ebm_set_threads(2);
        ebm_langevin_run(&m, g, &cfg, &r, 0, b, 10, &r2);
        CHECK(memcmp(a, b, 10 * D * sizeof(float)) == 0 && r1 == r2, "1 and 2 threads give different chains (r_t %.9g vs %.9g)", r1, r2);
    }
    {
        size_t i;
        int inside = 1;
        for (i = 0; i < 10 * D; i++) inside &= a[i] >= -1 && a[i] <= 1;
        CHECK(inside, "clamped chain left [-1, 1]");
    }
    cfg.box = EBM_BOX_REFLECT; cfg.lo = 1; cfg.hi = -1;
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 0, a, 10, NULL) == EBM_EINVAL && strstr(gmsg(g), "empty"), "empty box accepted: %s", gmsg(g));
    ebm_langevin_default(&cfg); cfg.step = NAN;
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 0, a, 10, NULL) == EBM_EINVAL, "NaN step accepted");
    free(a); free(b);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

static void test_langevin_reflect_stays_in_box(void)
{
    /* A strong pull (c = 50) out of a box [-0.5, 0.5]: reflection and
       clamping both keep every coordinate inside. */
    ebm_model m;
    ebm_graph *g = new_graph(4);
    ebm_langevin cfg;
    ebm_rng r;
    float x[20 * 64];
    size_t i;
    int rule;
    linear_energy(&m, 50.0f);
    r.seed = 1; r.stream = EBM_STREAM_USER + 3;
    for (rule = EBM_BOX_CLAMP; rule <= EBM_BOX_REFLECT; rule++) {
        ebm_langevin_default(&cfg);
        cfg.box = rule; cfg.lo = -0.5f; cfg.hi = 0.5f; cfg.step = 0.01f; cfg.noise = 0.3f; cfg.n_steps = 20;
        memset(x, 0, sizeof x);
        CHECK(ebm_langevin_run(&m, g, &cfg, &r, 0, x, 20, NULL) == EBM_OK, "run: %s", gmsg(g));
        for (i = 0; i < 20 * 64; i++) CHECK(x[i] >= -0.5f && x[i] <= 0.5f, "rule %d: %g outside the box", rule, (double)x[i]);
    }
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

static void test_mala_exact_on_gaussian(void)
{
    /* MALA on the same N(c, 1) target: exact, so the variance is 1, not the
       unadjusted chain's 1/(1 - e^2/4) = 1.067; 5 standard errors over
       256,000 coordinates is 0.014. Independent chains, K = 300 from 0. */
    ebm_model m;
    ebm_graph *g = new_graph(32);
    ebm_langevin cfg;
    ebm_rng r;
    const int n = 4000;
    const size_t N = (size_t)n * 64;
    float *x = falloc(N), c = 0.7f;
    double mean = 0, var = 0, acc = 0;
    size_t i;
    linear_energy(&m, c);
    ebm_langevin_default(&cfg);
    cfg.form = EBM_LANGEVIN_EPS; cfg.eps = 0.5f; cfg.sigma_q = 1.0f; cfg.box = EBM_BOX_NONE; cfg.n_steps = 300;
    r.seed = 9; r.stream = EBM_STREAM_USER + 4;
    CHECK(ebm_mala_run(&m, g, &cfg, &r, 0, x, n, &acc, NULL) == EBM_OK, "mala: %s", gmsg(g));
    sample_moments(x, N, &mean, &var);
    CHECK(fabs(mean - c) < 5 * sqrt(1.0 / (double)N), "mean %.5f, want %.5f", mean, (double)c);
    CHECK(fabs(var - 1.0) < 5 * sqrt(2.0 / (double)N), "variance %.5f, want 1 +- %.5f", var, 5 * sqrt(2.0 / (double)N));
    CHECK(acc > 0.3 && acc < 1.0, "acceptance rate %.3f", acc);
    /* a wall at [-0.5, 0.5]: proposals outside are rejected, never clamped */
    cfg.box = EBM_BOX_CLAMP; cfg.lo = -0.5f; cfg.hi = 0.5f; cfg.n_steps = 20;
    memset(x, 0, N * sizeof(float));
    CHECK(ebm_mala_run(&m, g, &cfg, &r, 0, x, 50, &acc, NULL) == EBM_OK, "mala: %s", gmsg(g));
    for (i = 0; i < (size_t)50 * 64; i++) CHECK(x[i] > -0.5f && x[i] < 0.5f, "%g outside the wall", (double)x[i]);
    free(x);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* ------------------------------------------------------------------ tests: 2-D data and exact NLL */

static void test_toy_densities(void)
{
    /* Each true density integrates to 1 over its box (midpoint rule on a
       900 x 900 grid: error well under 1e-3 for these widths), and the
       samples' mean -log p matches the density's entropy by the same grid
       within 5 standard errors of 20000 samples. */
    int set;
    for (set = 0; set < EBM_TOY_COUNT; set++) {
        const int res = set == EBM_TOY_MOONS ? 200 : 900, n = 20000; /* moons: an integral per point; std 0.2 = 4.4 cells */
        float lo, hi, *xy = falloc(2 * (size_t)n);
        double cell, mass = 0, ent = 0, m1 = 0, m2 = 0;
        int i, j;
        ebm_rng r;
        ebm_toy_box(set, &lo, &hi);
        cell = (double)(hi - lo) / res;
        for (i = 0; i < res; i++)
            for (j = 0; j < res; j++) {
                double lp = ebm_toy_logpdf(set, lo + (i + 0.5) * cell, lo + (j + 0.5) * cell), p = exp(lp);
                mass += p * cell * cell;
                if (p > 0) ent -= p * lp * cell * cell;
            }
        CHECK(fabs(mass - 1) < 1e-3, "%s: density integrates to %.5f", ebm_toy_name(set), mass);
        r.seed = 31; r.stream = EBM_STREAM_USER + 7;
        ebm_toy_sample(set, &r, 0, xy, n);
        for (i = 0; i < n; i++) {
            double v = -ebm_toy_logpdf(set, xy[2 * i], xy[2 * i + 1]);
            m1 += v; m2 += v * v;
        }
        m1 /= n; m2 = m2 / n - m1 * m1;
        CHECK(fabs(m1 - ent) < 5 * sqrt(m2 / n) + 2e-3, "%s: samples' NLL %.4f, entropy %.4f (+- %.4f)", ebm_toy_name(set), m1, ent, 5 * sqrt(m2 / n));
        free(xy);
    }
}

static void test_toy_smoothed_densities(void)
{
    /* The sigma-smoothed densities (what DSM learns): each integrates to 1
       over the box widened by 6 sigma (midpoint rule, 80 x 80 cells for the
       quadrature of rings, 400 x 400 otherwise: 1e-3 covers both), tends to
       the true density as sigma -> 0 (away from the checkerboard's edges),
       and the rings' quadrature rule, applied to 8 Gaussians at points of
       the data, agrees with their exact smoothing. */
    const double sigma = 0.1;
    int set;
    for (set = 0; set < EBM_TOY_COUNT; set++) {
        const int res = set == EBM_TOY_RINGS ? 80 : set == EBM_TOY_MOONS ? 160 : 400;
        float lo, hi;
        double cell, mass = 0, worst = 0;
        int i, j;
        ebm_toy_box(set, &lo, &hi);
        lo -= 0.6f; hi += 0.6f;
        cell = (double)(hi - lo) / res;
        for (i = 0; i < res; i++)
            for (j = 0; j < res; j++) mass += exp(ebm_toy_logpdf_smoothed(set, sigma, lo + (i + 0.5) * cell, lo + (j + 0.5) * cell)) * cell * cell;
        CHECK(fabs(mass - 1) < 1e-3, "%s: smoothed density integrates to %.5f", ebm_toy_name(set), mass);
        for (i = 0; i < 20; i++) { /* points on and between the modes, off the board's edges */
            double x = -3.25 + 0.33 * i, y = 0.17 * i - 1.63, lt = ebm_toy_logpdf(set, x, y), ls = ebm_toy_logpdf_smoothed(set, 1e-4, x, y);
            if (lt > -30 && fabs(lt - ls) > worst) worst = fabs(lt - ls);
        }
        CHECK(worst < 1e-3, "%s: smoothed with sigma 1e-4 differs from the true log density by %.3g", ebm_toy_name(set), worst);
    }
    {
        float xy[40];
        double worst = 0;
        int i, a, b;
        ebm_rng r;
        r.seed = 3; r.stream = EBM_STREAM_USER + 11;
        ebm_toy_sample(EBM_TOY_8GAUSSIANS, &r, 0, xy, 20);
        for (i = 0; i < 20; i++) {
            double p = 0, e;
            for (a = -18; a <= 18; a++)
                for (b = -18; b <= 18; b++)
                    p += exp(ebm_toy_logpdf(EBM_TOY_8GAUSSIANS, xy[2 * i] + sigma * a / 3.0, xy[2 * i + 1] + sigma * b / 3.0) - (a * a + b * b) / 18.0);
            e = fabs(log(p / 9.0 / (2 * 3.14159265358979)) - ebm_toy_logpdf_smoothed(EBM_TOY_8GAUSSIANS, sigma, xy[2 * i], xy[2 * i + 1]));
            if (e > worst) worst = e;
        }
        CHECK(worst < 1e-6, "trapezoid smoothing vs exact on 8 Gaussians: %.3g", worst);
    }
}

static void test_nll2d_and_short_training(void)
{
    /* f = 0 is the uniform density on the box: NLL = log(area) exactly. Then
       600 iterations of the library trainer with a small form of toy2d's
       convergent recipe (persistent chains of isotropic MALA, eps 0.5, Adam
       lr 1e-2 cosine; hidden 64, batch 128, K = 10) must bring the test NLL
       on 8 Gaussians from log 81 = 4.394 to within 0.5 nats of the true
       density's 2.835 (it reaches a gap of 0.40 with this seed; toy2d's
       full run, 3000 iterations of batch 256, K = 20 STANLEY-MALA steps of
       eps 0.7 and 30 % restarts, gets within 0.019-0.030 over three seeds). */
    ebm_model m;
    ebm_trainer tr;
    ebm_train_config c;
    ebm_graph *g;
    ebm_error e;
    ebm_rng rd, rt;
    float lo, hi, *test = falloc(2 * 2048), xpos[2 * 128];
    double nll = 0, lz = 0, true_nll = 0;
    int t, i;
    size_t bytes;
    ebm_toy_box(EBM_TOY_8GAUSSIANS, &lo, &hi);
    ebm_model_mlp_prior(&m, 2, 64, EBM_ACT_SILU, 0, 3);
    ebm_model_step_bytes(&m, 256, EBM_STEP_PARAM_GRAD, &bytes, &e);
    ebm_graph_create(&g, 2 * bytes, &e);
    memset(m.params, 0, m.n_params * sizeof(float));
    rt.seed = 0x7e57; rt.stream = EBM_STREAM_USER;
    ebm_toy_sample(EBM_TOY_8GAUSSIANS, &rt, 0, test, 2048);
    for (i = 0; i < 2048; i++) true_nll -= ebm_toy_logpdf(EBM_TOY_8GAUSSIANS, test[2 * i], test[2 * i + 1]) / 2048;
    CHECK(ebm_model_nll2d(&m, g, lo, hi, 64, test, 2048, &nll, &lz) == EBM_OK, "nll2d: %s", gmsg(g));
    CHECK(fabs(nll - log(81.0)) < 1e-6 && fabs(lz - log(81.0)) < 1e-6, "f = 0: NLL %.6f, log Z %.6f, want %.6f", nll, lz, log(81.0));
    ebm_model_free(&m);
    ebm_model_mlp_prior(&m, 2, 64, EBM_ACT_SILU, 0, 3);
    ebm_train_config_default(&c);
    c.batch = 128; c.start = EBM_START_PERSISTENT; c.buffer_size = 1024; c.mala = 1;
    c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = 0.5f; c.chain.box = EBM_BOX_CLAMP; c.chain.lo = lo; c.chain.hi = hi; c.chain.n_steps = 10;
    c.data_noise = 0; c.lr = 1e-2f; c.schedule = EBM_LR_COSINE; c.total_iters = 600; c.max_abs_dt = 1e4f; c.seed = 5;
    CHECK(ebm_trainer_init(&tr, &m, &c, &e) == EBM_OK, "trainer: %s", e.msg);
    rd.seed = 5; rd.stream = EBM_STREAM_USER;
    for (t = 0; t < 600 && tr.model; t++) {
        ebm_toy_sample(EBM_TOY_8GAUSSIANS, &rd, (uint64_t)t * 128, xpos, 128);
        if (ebm_trainer_step(&tr, xpos) != EBM_OK) { CHECK(0, "step %d: %s", t, tr.err.msg); break; }
    }
    CHECK(ebm_model_nll2d(&m, g, lo, hi, 128, test, 2048, &nll, NULL) == EBM_OK, "nll2d: %s", gmsg(g));
    CHECK(nll - true_nll < 0.5, "after 600 iterations the test NLL is %.4f, true %.4f: gap %.4f (uniform 4.394)", nll, true_nll, nll - true_nll);
    printf("  # nll2d_and_short_training: gap %.4f after 600 iterations (bound 0.5)\n", nll - true_nll);
    free(test);
    ebm_trainer_free(&tr);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* ------------------------------------------------------------------ tests: bad input */

static void test_bad_arguments(void)
{
    ebm_graph *g = new_graph(4);
    float d[64];
    int s4[4] = { 1, 4, 4, 2 }, ws[4] = { 3, 3, 3, 5 }, zero[2] = { 3, 0 }, lab[2] = { 0, 7 };
    ebm_var *x, *w;
    ebm_error e;
    ebm_model m;
    memset(d, 0, sizeof d);
    /* channel mismatch: NULL, EINVAL, a reason, and the error sticks */
    x = ebm_leaf(g, d, 4, s4);
    w = ebm_leaf(g, d, 4, ws);
    CHECK(ebm_conv2d(g, x, w, NULL, 1, 1) == NULL, "mismatched conv accepted");
    CHECK(ebm_graph_status(g) == EBM_EINVAL, "status %s", ebm_status_name(ebm_graph_status(g)));
    CHECK(strstr(gmsg(g), "channels") != NULL, "reason: %s", gmsg(g));
    CHECK(ebm_add(g, x, x) == NULL, "an op ran on a failed graph");
    ebm_graph_reset(g);
    CHECK(ebm_graph_status(g) == EBM_OK, "reset did not clear the error");
    /* zero sizes, NULL arguments, bad strides, kernels that do not fit */
    CHECK(ebm_tensor(g, 2, zero) == NULL && ebm_graph_status(g) == EBM_EINVAL, "zero-size tensor accepted"); ebm_graph_reset(g);
    CHECK(ebm_conv2d(g, NULL, NULL, NULL, 1, 0) == NULL && ebm_graph_status(g) == EBM_EINVAL, "NULL conv input accepted"); ebm_graph_reset(g);
    x = ebm_leaf(g, d, 4, s4);
    ws[2] = 2; ws[0] = ws[1] = 7;
    CHECK(ebm_conv2d(g, x, ebm_leaf(g, d, 4, ws), NULL, 1, 0) == NULL && strstr(gmsg(g), "does not fit"), "oversized kernel: %s", gmsg(g)); ebm_graph_reset(g);
    x = ebm_leaf(g, d, 4, s4);
    ws[0] = ws[1] = 3;
    CHECK(ebm_conv2d(g, x, ebm_leaf(g, d, 4, ws), NULL, 0, 0) == NULL && ebm_graph_status(g) == EBM_EINVAL, "stride 0 accepted"); ebm_graph_reset(g);
    x = ebm_leaf(g, d, 4, s4);
    CHECK(ebm_conv2d_transpose(g, x, ebm_leaf(g, d, 4, ws), NULL, 2, 1, 20, 20) == NULL && ebm_graph_status(g) == EBM_EINVAL, "impossible transposed output accepted"); ebm_graph_reset(g);
    CHECK(ebm_add(g, ebm_leaf(g, d, 4, s4), ebm_leaf(g, d, 4, ws)) == NULL && ebm_graph_status(g) == EBM_EINVAL, "add of different sizes accepted"); ebm_graph_reset(g);
    CHECK(ebm_reshape(g, ebm_leaf(g, d, 4, s4), 2, ws) == NULL && ebm_graph_status(g) == EBM_EINVAL, "reshape to another size accepted"); ebm_graph_reset(g);
    CHECK(ebm_maxpool(g, ebm_leaf(g, d, 4, s4), 5, 1) == NULL && ebm_graph_status(g) == EBM_EINVAL, "pool window larger than input accepted"); ebm_graph_reset(g);
    zero[0] = 2; zero[1] = 3;
    CHECK(ebm_softmax_xent(g, ebm_leaf(g, d, 2, zero), lab) == NULL && strstr(gmsg(g), "label 7"), "label out of range: %s", gmsg(g)); ebm_graph_reset(g);
    CHECK(ebm_act(g, ebm_leaf(g, d, 4, s4), 99, 0) == NULL && ebm_graph_status(g) == EBM_EINVAL, "unknown activation accepted"); ebm_graph_reset(g);
    CHECK(ebm_act_deriv(g, ebm_leaf(g, d, 4, s4), EBM_ACT_SILU, 0, 4) == NULL && ebm_graph_status(g) == EBM_EUNSUPPORTED, "4th derivative of silu"); ebm_graph_reset(g);
    x = ebm_leaf(g, d, 4, s4);
    CHECK(ebm_grad(g, ebm_sum(g, x), NULL, 1, NULL, NULL, 0) == EBM_EINVAL, "grad with NULL inputs accepted"); ebm_graph_reset(g);
    { /* differentiating cross-entropy twice is refused, not silently wrong */
        ebm_var *z, *gz = NULL, *gg = NULL;
        lab[1] = 1;
        z = ebm_leaf(g, d, 2, zero);
        ebm_grad(g, ebm_softmax_xent(g, z, lab), NULL, 1, &z, &gz, 1);
        CHECK(ebm_grad(g, ebm_sum(g, gz), NULL, 1, &z, &gg, 0) == EBM_EUNSUPPORTED, "second derivative of softmax_xent: %s", ebm_status_name(ebm_graph_status(g)));
        ebm_graph_reset(g);
    }
    /* graph creation */
    CHECK(ebm_graph_create(NULL, 1 << 20, &e) == EBM_EINVAL, "NULL graph pointer accepted");
    { ebm_graph *g2; CHECK(ebm_graph_create(&g2, 10, &e) == EBM_EINVAL && g2 == NULL, "tiny arena accepted"); }
    /* model building: the first error sticks and carries the reason */
    ebm_model_init(&m, 1, 8, 8);
    CHECK(ebm_model_add_conv2d(&m, 4, 11, 1, 1, 1) == EBM_EINVAL, "11x11 kernel on 8x8 accepted");
    CHECK(strstr(m.err.msg, "does not fit") != NULL, "reason: %s", m.err.msg);
    CHECK(ebm_model_add_act(&m, EBM_ACT_SILU, 0) == EBM_EINVAL, "builder continued after an error");
    CHECK(ebm_model_alloc(&m, 1) == EBM_EINVAL && m.params == NULL, "alloc after an error");
    CHECK(ebm_model_init(&m, 0, 8, 8) == EBM_EINVAL, "0 channels accepted");
    ebm_model_init(&m, 1, 8, 8);
    CHECK(ebm_model_add_conv_transpose2d(&m, 2, 4, 2, 1, 2, 1) == EBM_EINVAL, "output padding >= stride accepted");
    ebm_model_init(&m, 1, 8, 8);
    CHECK(ebm_model_add_conv2d(&m, 0, 3, 1, 1, 1) == EBM_EINVAL, "0 output channels accepted");
    ebm_model_init(&m, 1, 8, 8);
    CHECK(ebm_model_add_act(&m, EBM_ACT_LEAKY_RELU, NAN) == EBM_EINVAL, "NaN slope accepted");
    ebm_model_init(&m, 1, 8, 8);
    CHECK(ebm_model_alloc(&m, 1) == EBM_EINVAL, "empty model allocated");
    CHECK(ebm_model_convnet(&m, 1, 4, 8, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_EINVAL, "4x4 convnet accepted");
    /* a model forward on the wrong input shape */
    ebm_model_convnet(&m, 1, 28, 4, EBM_ACT_LEAKY_RELU, 0.2f, 1);
    CHECK(ebm_model_forward(&m, g, ebm_leaf(g, d, 4, s4)) == NULL && strstr(gmsg(g), "input must be"), "wrong input shape: %s", gmsg(g));
    ebm_model_free(&m);
    ebm_graph_destroy(g);
    CHECK(ebm_model_step_bytes(&m, 0, EBM_STEP_FORWARD, NULL, &e) == EBM_EINVAL, "step_bytes with NULL result accepted");
}

static void test_failing_allocator(void)
{
    /* Each allocation a setup makes fails in turn: a status and a reason, and nothing leaks. */
    long k, live0 = t_live;
    for (k = 0; k < 3; k++) {
        ebm_graph *g = NULL;
        ebm_model m;
        ebm_error e;
        int st;
        t_calls = 0; t_fail_at = k;
        st = ebm_graph_create(&g, 1 << 20, &e);
        if (k < 2) CHECK(st == EBM_ENOMEM && g == NULL && e.msg[0] != 0, "graph create with allocation %ld failing: %s", k, e.msg);
        else CHECK(st == EBM_OK && g != NULL, "graph create with enough memory: %s", e.msg);
        ebm_graph_destroy(g);
        t_calls = 0; t_fail_at = 0;
        st = ebm_model_convnet(&m, 1, 28, 4, EBM_ACT_LEAKY_RELU, 0.2f, 1);
        CHECK(st == EBM_ENOMEM && m.params == NULL, "model alloc with a failing allocator: %s", ebm_status_name(st));
        CHECK(strstr(m.err.msg, "allocate") != NULL, "reason: %s", m.err.msg);
        ebm_model_free(&m);
        t_fail_at = -1;
        CHECK(ebm_model_step_bytes(&m, 1, EBM_STEP_FORWARD, NULL, &e) == EBM_EINVAL, "unallocated model measured");
    }
    t_fail_at = -1;
    CHECK(t_live == live0, "%ld blocks leaked", t_live - live0);
}

static void test_npy_save(void)
{
    float d[6] = { 1, 2, 3, 4, 5, 6 }, back[6];
    int shape[3] = { 1, 2, 3 };
    unsigned char hdr[128];
    ebm_error e;
    FILE *f;
    unsigned hl;
    CHECK(ebm_npy_save("test_npy.npy", d, 3, shape, &e) == EBM_OK, "save: %s", e.msg);
    f = fopen("test_npy.npy", "rb");
    CHECK(f != NULL, "cannot reopen");
    if (!f) return;
    CHECK(fread(hdr, 1, 10, f) == 10, "short file");
    CHECK(memcmp(hdr, "\x93NUMPY\x01\x00", 8) == 0, "magic");
    hl = hdr[8] | (unsigned)hdr[9] << 8;
    CHECK((10 + hl) % 64 == 0, "header length %u is not 64-aligned", hl);
    CHECK(hl < sizeof hdr && fread(hdr, 1, hl, f) == hl, "header");
    hdr[hl < sizeof hdr ? hl - 1 : 0] = 0;
    CHECK(strstr((char *)hdr, "'shape': (1, 2, 3)") != NULL && strstr((char *)hdr, "'<f4'") != NULL, "header: %s", hdr);
    CHECK(fread(back, sizeof(float), 6, f) == 6 && memcmp(back, d, sizeof d) == 0, "data");
    fclose(f);
    remove("test_npy.npy");
    CHECK(ebm_npy_save("/nonexistent-dir/x.npy", d, 3, shape, &e) == EBM_EIO, "unwritable path: %s", ebm_status_name(e.status));
}

#include "test_train.c"

static const test_case tests[] = {
    { "rng_philox_known_answers", test_rng_philox_known_answers },
    { "rng_lanes_match_scalar_philox", test_rng_lanes_match_scalar_philox },
    { "rng_counter_based", test_rng_counter_based },
    { "rng_normal_statistics", test_rng_normal_statistics },
    { "rng_uniform_statistics", test_rng_uniform_statistics },
    { "fast_math_kernels", test_rng_math_kernels },
    { "conv_kernels_match_reference", test_conv_kernels_match_reference },
    { "activation_derivatives", test_activation_derivatives },
    { "op_conv2d", test_op_conv2d },
    { "op_conv2d_transpose", test_op_conv2d_transpose },
    { "op_conv2d_weight_grad", test_op_conv2d_weight_grad },
    { "op_activations", test_op_activations },
    { "op_act_jet", test_op_act_jet },
    { "op_pooling", test_op_pooling },
    { "op_softmax_xent", test_op_softmax_xent },
    { "op_elementwise", test_op_elementwise },
    { "op_linear", test_op_linear },
    { "network_first_order", test_network_first_order },
    { "network_hessian_vector", test_network_hessian_vector },
    { "network_mixed_and_third_order", test_network_mixed_and_third_order },
    { "fused_matches_composite_on_network", test_fused_matches_composite_on_network },
    { "fused_conv_leaky_matches_separate_ops", test_fused_conv_leaky_matches_separate_ops },
    { "premasked_gradient_terms", test_premasked_gradient_terms },
    { "bias_gradient_sums_in_order", test_bias_gradient_sums_in_order },
    { "fused_transposed_leaky_matches_separate_ops", test_fused_transposed_leaky_matches_separate_ops },
    { "conv_act_pairs_match_separate_ops", test_conv_act_pairs_match_separate_ops },
    { "threads_bit_identical", test_threads_bit_identical },
    { "reference_networks", test_reference_networks },
    { "init_matches_pytorch_defaults", test_init_matches_pytorch_defaults },
    { "torch_layout_roundtrip", test_torch_layout_roundtrip },
    { "linear_flatten_order_matches_torch", test_linear_flatten_order_matches_torch },
    { "step_bytes_exact", test_step_bytes_exact },
    { "no_allocation_per_step", test_no_allocation_per_step },
    { "optimisers", test_optimisers },
    { "model_backward_input", test_model_backward_input },
    { "model_score_matches_graph", test_model_score_matches_graph },
    { "langevin_gaussian_exact_discretisation", test_langevin_gaussian_exact_discretisation },
    { "langevin_same_bits_in_any_batch", test_langevin_same_bits_in_any_batch },
    { "langevin_reflect_stays_in_box", test_langevin_reflect_stays_in_box },
    { "mala_exact_on_gaussian", test_mala_exact_on_gaussian },
    { "toy_densities", test_toy_densities },
    { "toy_smoothed_densities", test_toy_smoothed_densities },
    { "nll2d_and_short_training", test_nll2d_and_short_training },
    { "bad_arguments", test_bad_arguments },
    { "failing_allocator", test_failing_allocator },
    { "idx_reader", test_idx_reader },
    { "cifar10_reader", test_cifar10_reader },
    { "png_writer", test_png_writer },
    { "npy_roundtrip", test_npy_roundtrip },
    { "checkpoint_resume_bit_identical", test_checkpoint_resume_bit_identical },
    { "checkpoint_refuses_damage", test_checkpoint_refuses_damage },
    { "trainer_detects_divergence", test_trainer_detects_divergence },
    { "trainer_gradient_is_the_loss_gradient", test_trainer_gradient_is_the_loss_gradient },
    { "trainer_bad_settings", test_trainer_bad_settings },
    { "samplers_on_2d_mixture", test_samplers_on_2d_mixture },
    { "chain_gradient_through_every_step", test_chain_gradient_through_every_step },
    { "chain_gradient_piecewise_linear", test_chain_gradient_piecewise_linear },
    { "chain_kept_activations", test_chain_kept_activations },
    { "chain_reconstruct_and_interpolate", test_chain_reconstruct_and_interpolate },
    { "langevin_conditional", test_langevin_conditional },
    { "generator_helpers", test_generator_helpers },
    { "npy_save", test_npy_save },
    { "objective_gradients", test_objective_gradients },
    { "objective_values", test_objective_values },
    { "objectives_lower_nll", test_objectives_lower_nll },
    { "stanley_sampler", test_stanley_sampler },
    { "checkpoint_objectives", test_checkpoint_objectives },
    { "ssm_taylor_matches_nested", test_ssm_taylor_matches_nested },
    { "dsm_annealed_sampling", test_dsm_annealed_sampling },
    { "data_parallel_bit_identical", test_data_parallel_bit_identical },
    { "latent_chains_known_laws", test_latent_chains_known_laws },
    { "latent_nll_gradient", test_latent_nll_gradient },
    { "latent_checkpoint", test_latent_checkpoint },
    { "memory_io", test_memory_io },
};

int main(int argc, char **argv)
{
    printf("# kernels: isa=%s, threads=%d\n", ebm_isa(), ebm_threads());
    return run_tests(tests, (int)(sizeof tests / sizeof tests[0]), argc - 1, argv + 1);
}
