/* make bench: speed of the hot paths, as ratios within one run.
   Per case: ms (median of several runs), GFLOP/s counted like
   ../shared/bench/torch_langevin.py (nominal convolution FLOPs: 2 H W Co Ci K^2
   per conv forward, the same again for grad_x), % of the FMA peak this run
   measures itself (measured again before each case, and the highest so far
   taken: other tenants only ever lower it, and one low reading at the start
   once put layers at 140 % of it), and PyTorch's time for the same network
   in the same command when /usr/bin/python3 has torch, its processes taken
   in turn with rounds of ours (measure). One line per case:
     bench <case> ms=.. gflops=.. peak_pct=.. torch_ms=..|na speedup=..|na
   and for the relative targets, measured paired (case_relative):
     bench relative_to_nf32 silu=.. gen28=.. target=0.9 rounds=51 ...
     bench relative_gen28_to_conv_mirror ratio=.. target=0.9 rounds=51 ...
   Usage: bench [--no-torch] [--quick] [case-substring] */
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include "layer_geom.h"
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>


static int use_torch = 1, reps = 7;
static double peak_gflops;

static double median(double *t, int n)
{
    int i, j;
    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (t[j] < t[i]) { double x = t[i]; t[i] = t[j]; t[j] = x; }
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The machine's fp32 FMA peak with the threads the kernels use: independent
   accumulator chains, enough to cover the FMA latency, per thread. */
static double measure_peak(int n_reps)
{
    const long iters = 20000000;
    double best = 0;
    int rep;
    for (rep = 0; rep < n_reps; rep++) {
        double t0 = ebm_time_sec(), secs;
        float sink = 0;
        int nt = ebm_threads();
        long th;
#ifdef _OPENMP
#pragma omp parallel for reduction(+ : sink)
#endif
        for (th = 0; th < nt; th++) {
            ebm__vf a[12], b = ebm__vbcast(0.999999f), c = ebm__vbcast(1e-7f);
            float out[EBM__VL];
            long i;
            int k;
            for (k = 0; k < 12; k++) a[k] = ebm__vbcast((float)k);
            for (i = 0; i < iters; i++)
                for (k = 0; k < 12; k++) a[k] = ebm__vfma(a[k], b, c);
            for (k = 1; k < 12; k++) a[0] = ebm__vfma(a[k], b, a[0]);
            ebm__vstore(out, a[0]);
            sink += out[0];
        }
        secs = ebm_time_sec() - t0;
        if (sink == 12345.0f) printf(" ");
        if (2.0 * 12 * EBM__VL * iters * nt / secs / 1e9 > best) best = 2.0 * 12 * EBM__VL * iters * nt / secs / 1e9;
    }
    return best;
}

/* Nominal forward FLOPs of one sample through the model's convolutions. */
static double model_flops(const ebm_model *m)
{
    double f = 0;
    int i;
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *L = &m->layer[i];
        if (L->type == EBM_LAYER_CONV2D) f += 2.0 * L->out_h * L->out_w * L->out_c * L->in_c * L->k * L->k;
        if (L->type == EBM_LAYER_CONVT2D) f += 2.0 * L->in_h * L->in_w * L->in_c * L->out_c * L->k * L->k;
        if (L->type == EBM_LAYER_LINEAR) f += 2.0 * L->in_h * L->in_w * L->in_c * L->out_c;
    }
    return f;
}

/* PyTorch's time varies far more between processes than within one (seen
   here: 8 to 37 ms for one case), so the peer runs in TORCH_RUNS processes and
   the median of their medians is taken; the range is printed too. */
#define TORCH_RUNS 3
static double torch_lo, torch_hi;

/* One process of the PyTorch peer; its time in ms (its median of 5), or -1. */
static double torch_once(const char *args)
{
    char cmd[512], line[256];
    double ms = -1;
    FILE *p;
    snprintf(cmd, sizeof cmd, "THREADS=%d /usr/bin/python3 bench/torch_peer.py %s 2>/dev/null", ebm_threads(), args);
    if (!(p = popen(cmd, "r"))) return -1;
    while (fgets(line, sizeof line, p)) sscanf(line, "torch_ms=%lf", &ms);
    pclose(p);
    return ms;
}

/* A case's time (ms, median) and PyTorch's (ms, median of its processes'
   medians, or -1), interleaved: TORCH_RUNS rounds, each an untimed run (the
   threads and caches are cold after the peer's process), then n_timed /
   TORCH_RUNS (rounded up) timed runs of ours, then one process of the peer.
   The machine's load moves by tens of percent within a minute here: taken
   in turn, both sides see the same moves, as make bench-ab's pairs do.
   run returns seconds. */
static void measure(double (*run)(void *), void *ctx, int n_timed, const char *torch_args, double *ms, double *tms)
{
    double t[64], tt[TORCH_RUNS];
    const int rounds = use_torch && torch_args ? TORCH_RUNS : 1, per = (n_timed + rounds - 1) / rounds;
    int k, i, n = 0, nt = 0;
    for (k = 0; k < rounds; k++) {
        run(ctx);
        for (i = 0; i < per && n < 64; i++) t[n++] = run(ctx) * 1e3;
        if (rounds > 1) { const double v = torch_once(torch_args); if (v > 0) tt[nt++] = v; }
    }
    *ms = median(t, n);
    *tms = -1;
    if (nt) {
        *tms = median(tt, nt);
        torch_lo = tt[0]; torch_hi = tt[nt - 1]; /* (median sorts) */
    }
}

static void report(const char *name, double ms, double flops, double tms)
{
    double gf = flops / (ms * 1e-3) / 1e9, p = measure_peak(1);
    if (p > peak_gflops) peak_gflops = p;
    printf("bench %s ms=%.3f gflops=%.1f peak_pct=%.1f", name, ms, gf, 100 * gf / peak_gflops);
    if (tms > 0) printf(" torch_ms=%.3f speedup=%.2f torch_range=%.1f-%.1f\n", tms, tms / ms, torch_lo, torch_hi);
    else printf(" torch_ms=na speedup=na\n");
    fflush(stdout);
}

static ebm_graph *graph_for(ebm_model *m, int batch, int kind)
{
    ebm_graph *g;
    ebm_error e;
    size_t bytes;
    if (ebm_model_step_bytes(m, batch, kind, &bytes, &e) != EBM_OK || ebm_graph_create(&g, bytes, &e) != EBM_OK) {
        fprintf(stderr, "error: %s\n", e.msg);
        exit(1);
    }
    return g;
}

/* A timed case: set up once, then run (one step) as often as asked; flops
   per run, nominal. */
typedef struct {
    ebm_model m;
    ebm_graph *g;
    ebm_langevin cfg;
    ebm_rng r;
    float *x;
    int batch, runs;
    double flops;
} timed;

/* One Langevin step (forward + grad_x + update) of a ConvNet at a batch. */
static void langevin_setup(timed *c, int C, int hw, int nf, int batch, int act)
{
    size_t nx = (size_t)batch * C * hw * hw;
    ebm_model_convnet(&c->m, C, hw, nf, act, 0.2f, 1);
    c->g = graph_for(&c->m, batch, EBM_STEP_INPUT_GRAD);
    c->x = (float *)malloc(nx * sizeof *c->x);
    c->r.seed = 1; c->r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&c->r, 0, 0, -1, 1, c->x, nx);
    ebm_langevin_default(&c->cfg);
    c->cfg.n_steps = 1;
    c->batch = batch; c->runs = 0;
    c->flops = 2 * model_flops(&c->m) * batch;
}

/* Seconds of one step (c: a timed). */
static double langevin_run(void *v)
{
    timed *c = (timed *)v;
    double t0 = ebm_time_sec();
    c->cfg.first_step = (uint32_t)c->runs++;
    if (ebm_langevin_run(&c->m, c->g, &c->cfg, &c->r, 0, c->x, c->batch, NULL) != EBM_OK) {
        fprintf(stderr, "error: %s\n", ebm_graph_error(c->g)->msg);
        exit(1);
    }
    return ebm_time_sec() - t0;
}

/* The generator: forward, then grad of |g(z)|^2 wrt z and the parameters. */
static void gen_setup(timed *c)
{
    ebm_error e;
    ebm_model_generator28(&c->m, 100, 64, 1, 1);
    if (ebm_graph_create(&c->g, (size_t)256 << 20, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    c->batch = 64; c->runs = 0;
    c->x = (float *)malloc((size_t)c->batch * 100 * sizeof *c->x);
    c->r.seed = 2; c->r.stream = EBM_STREAM_USER;
    ebm_rng_normal(&c->r, 0, 0, c->x, (size_t)c->batch * 100);
    c->flops = 3 * model_flops(&c->m) * c->batch;
}

/* The generator's conv mirror: the three convolutions that its transposed
   ones transpose (28x28x1 -> 14x14x64 -> 7x7x128 -> 1x1x100, LeakyReLU
   between, biases), run the same way: forward, then the gradient of
   |f(x)|^2 wrt x and the parameters. The same nine passes over the same
   shapes (a transposed conv's forward is its conv's input gradient, and
   the other way round), so the same FLOPs. */
static void mirror_setup(timed *c)
{
    ebm_error e;
    ebm_model_init(&c->m, 1, 28, 28);
    ebm_model_add_conv2d(&c->m, 64, 4, 2, 1, 1);
    ebm_model_add_act(&c->m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv2d(&c->m, 128, 4, 2, 1, 1);
    ebm_model_add_act(&c->m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv2d(&c->m, 100, 7, 1, 0, 1);
    if (ebm_model_alloc(&c->m, 1) != EBM_OK) { fprintf(stderr, "error: mirror model\n"); exit(1); }
    if (ebm_graph_create(&c->g, (size_t)256 << 20, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    c->batch = 64; c->runs = 0;
    c->x = (float *)malloc((size_t)c->batch * 784 * sizeof *c->x);
    c->r.seed = 2; c->r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&c->r, 0, 0, -1, 1, c->x, (size_t)c->batch * 784);
    c->flops = 3 * model_flops(&c->m) * c->batch;
}

/* Seconds of one forward and backward of the generator (c: a timed) or,
   with its 28x28x1 input, of its mirror. */
static double gen_run(void *v)
{
    timed *c = (timed *)v;
    const int mirror = c->m.in_c == 1;
    const int s[4] = { 64, mirror ? 28 : 1, mirror ? 28 : 1, mirror ? 1 : 100 };
    double t0 = ebm_time_sec();
    ebm_var *zv, *loss, *gz = NULL;
    ebm_graph_reset(c->g);
    zv = ebm_leaf(c->g, c->x, 4, s);
    loss = ebm_sqnorm(c->g, ebm_model_forward(&c->m, c->g, zv));
    ebm_model_zero_grad(&c->m);
    ebm_model_backward_input(&c->m, c->g, loss, zv, &gz); /* grad wrt the parameters and z, one pass */
    if (ebm_graph_status(c->g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(c->g)->msg); exit(1); }
    c->runs++;
    return ebm_time_sec() - t0;
}

static void timed_free(timed *c)
{
    free(c->x);
    ebm_graph_destroy(c->g);
    ebm_model_free(&c->m);
}

static void case_langevin(const char *name, int C, int hw, int nf, int batch, int act)
{
    timed c;
    double ms, tms;
    char args[128];
    langevin_setup(&c, C, hw, nf, batch, act);
    snprintf(args, sizeof args, "langevin %d %d %d %d %s", C, hw, nf, batch, act == EBM_ACT_SILU ? "silu" : "leaky");
    measure(langevin_run, &c, reps, args, &ms, &tms);
    report(name, ms, c.flops, tms);
    timed_free(&c);
}

/* The sampler's own cost per step (noise, update, box, r_t; MALA's proposal,
   accept test and copies) beyond the network's forward + grad_x, on the
   smallest reference net (where it weighs most): K = 40 steps (the image
   recipe's) of each, alternated, medians. Target: under 5 %. A K-step MALA
   chain calls the network K + 1 times (the start's energy and gradient, then
   each proposal's), so its own cost is measured against K + 1 calls;
   mala_vs_k_calls_pct is the whole chain against K calls. */
static void case_sampler_overhead(int nf)
{
    ebm_model m;
    ebm_graph *g;
    ebm_langevin cfg;
    ebm_rng r;
    float *x;
    const int batch = 64, K = 40, shape[4] = { 64, 28, 28, 1 };
    double tn[32], tl[32], tm[32], net, lang, mala;
    const int R = 2 * reps + 1; /* a few percent between two ~7 ms figures: more runs than the other cases */
    size_t nx = (size_t)batch * 784, bytes, extra = (3 * nx + 2 * (size_t)batch) * sizeof(float) + 4096;
    ebm_error e;
    int i, k;
    ebm_model_convnet(&m, 1, 28, nf, EBM_ACT_LEAKY_RELU, 0.2f, 1);
    ebm_model_step_bytes(&m, batch, EBM_STEP_INPUT_GRAD, &bytes, &e);
    if (ebm_graph_create(&g, bytes + extra, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    x = (float *)malloc(nx * sizeof *x);
    r.seed = 1; r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&r, 0, 0, -1, 1, x, nx);
    ebm_langevin_default(&cfg);
    cfg.n_steps = K;
    for (i = 0; i < R; i++) {
        double t0 = ebm_time_sec();
        for (k = 0; k < K; k++) { /* the network alone: forward and grad_x */
            ebm_var *xv, *y, *gx;
            ebm_graph_reset(g);
            xv = ebm_leaf(g, x, 4, shape);
            y = ebm_model_forward(&m, g, xv);
            ebm_grad(g, y, NULL, 1, &xv, &gx, 0);
        }
        tn[i] = (ebm_time_sec() - t0) * 1e3 / K;
        t0 = ebm_time_sec();
        ebm_langevin_run(&m, g, &cfg, &r, 0, x, batch, NULL);
        tl[i] = (ebm_time_sec() - t0) * 1e3 / K;
        t0 = ebm_time_sec();
        ebm_mala_run(&m, g, &cfg, &r, 0, x, batch, NULL, NULL);
        tm[i] = (ebm_time_sec() - t0) * 1e3 / K;
    }
    net = median(tn, R); lang = median(tl, R); mala = median(tm, R);
    printf("bench sampler_overhead_nf%d net_ms=%.3f langevin_ms=%.3f mala_ms=%.3f langevin_overhead_pct=%.1f mala_overhead_pct=%.1f "
           "mala_vs_k_calls_pct=%.1f target_pct=5\n", nf, net, lang, mala, 100 * (lang - net) / net,
           100 * (mala - net * (K + 1) / K) / (net * (K + 1) / K), 100 * (mala - net) / net);
    free(x);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* One reconstruction step of ALGORITHMS.md section 3 (the chain recorded,
   then dL/dz through all K steps: a Hessian-vector product per step) against
   the K-step chain alone, on the SiLU reference net (whose Hessian is not
   zero), batch 64, K = 40, medians; with the chain's conv outputs kept (as
   ebm_chain_reconstruct runs it) and, beside it, recomputed. Target: at most 3x. */
static void case_chain_gradient(int nf)
{
    ebm_model m;
    ebm_graph *g;
    ebm_langevin cfg;
    ebm_rng r;
    float *z, *x, *st, *gk, *kept;
    const int batch = 64, K = 40;
    double tc[16], tr[16], tn[16], chain, recon, recon_nokeep;
    size_t nx = (size_t)batch * 784, bytes, n_kept, j;
    ebm_error e;
    int i, keep;
    ebm_model_convnet(&m, 1, 28, nf, EBM_ACT_SILU, 0, 1);
    ebm_model_step_bytes(&m, batch, EBM_STEP_SECOND_ORDER, &bytes, &e);
    if (ebm_graph_create(&g, 2 * bytes, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    ebm_langevin_default(&cfg);
    cfg.n_steps = K;
    n_kept = ebm_chain_kept_floats(&m, &cfg, batch);
    z = (float *)malloc(nx * sizeof *z); x = (float *)malloc(nx * sizeof *x); gk = (float *)malloc(nx * sizeof *gk);
    st = (float *)malloc((K + 1) * nx * sizeof *st);
    kept = (float *)malloc((n_kept ? n_kept : 1) * sizeof *kept);
    r.seed = 1; r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&r, 0, 0, -1, 1, z, nx);
    for (i = 0; i < reps; i++) {
        double t0 = ebm_time_sec();
        memcpy(x, z, nx * sizeof *x);
        ebm_langevin_run(&m, g, &cfg, &r, 0, x, batch, NULL);
        tc[i] = (ebm_time_sec() - t0) * 1e3;
        for (keep = 1; keep >= 0; keep--) {
            t0 = ebm_time_sec();
            ebm_chain_record(&m, g, &cfg, &r, 0, z, batch, st, keep ? kept : NULL);
            for (j = 0; j < nx; j++) gk[j] = 2 * (st[(size_t)K * nx + j] - x[j]) / (float)nx;
            ebm_chain_backward(&m, g, &cfg, &r, 0, st, keep ? kept : NULL, batch, gk, gk);
            (keep ? tr : tn)[i] = (ebm_time_sec() - t0) * 1e3;
        }
    }
    if (ebm_graph_status(g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); exit(1); }
    chain = median(tc, reps); recon = median(tr, reps); recon_nokeep = median(tn, reps);
    printf("bench chain_gradient_nf%d_silu chain_ms=%.1f recon_step_ms=%.1f ratio=%.2f target_ratio=3 kept_mb=%.1f "
           "recomputed_ms=%.1f recomputed_ratio=%.2f\n", nf, chain, recon, recon / chain, n_kept * 4.0 / (1 << 20),
           recon_nokeep, recon_nokeep / chain);
    free(z); free(x); free(gk); free(st); free(kept);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* Issue 7: one sliced-score-matching step with exact Hessian-vector products
   (the trainer's loss and its parameter gradient: three nested derivatives)
   against one forward + backward pass of the same net on the same batch
   giving grad_theta and grad_x (of sum f), on the SiLU reference net, batch
   64, medians. Also the variance-reduced form, DSM and FD-SSM. Target: SSM
   at most 3x. */
static void case_objectives(int nf)
{
    static const int objs[] = { EBM_OBJ_SSM, EBM_OBJ_SSM_VR, EBM_OBJ_DSM, EBM_OBJ_FD_SSM };
    static const char *const names[] = { "ssm", "ssm_vr", "dsm", "fd_ssm" };
    ebm_model m;
    ebm_graph *g;
    ebm_trainer t;
    ebm_train_config c;
    ebm_error e;
    ebm_rng r;
    float *x;
    double tb[16], to[16], base, loss;
    const int batch = 64;
    int i, k, shape[4] = { 64, 28, 28, 1 };
    ebm_model_convnet(&m, 1, 28, nf, EBM_ACT_SILU, 0, 1);
    x = (float *)malloc((size_t)batch * 784 * sizeof *x);
    r.seed = 1; r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&r, 0, 0, -1, 1, x, (size_t)batch * 784);
    g = graph_for(&m, batch, EBM_STEP_SECOND_ORDER);
    for (i = 0; i < reps; i++) { /* forward, then grad_theta and grad_x of sum f in one backward */
        double t0 = ebm_time_sec();
        ebm_var *xv, *y;
        ebm_graph_reset(g);
        ebm_model_zero_grad(&m);
        xv = ebm_leaf(g, x, 4, shape);
        y = ebm_model_forward(&m, g, xv);
        {
            ebm_var *wrt[64], *out[64], *v;
            int n = 0;
            for (v = g->first; v; v = v->next) if (v->is_param && n < 63) wrt[n++] = v;
            wrt[n++] = xv;
            ebm_grad(g, ebm_sum(g, y), NULL, n, wrt, out, 0);
        }
        tb[i] = (ebm_time_sec() - t0) * 1e3;
    }
    if (ebm_graph_status(g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(g)->msg); exit(1); }
    ebm_graph_destroy(g);
    base = median(tb, reps);
    for (k = 0; k < 4; k++) {
        ebm_train_config_default(&c);
        c.batch = batch; c.objective = objs[k];
        if (ebm_trainer_init(&t, &m, &c, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
        for (i = 0; i < reps; i++) {
            double t0 = ebm_time_sec();
            if (ebm_trainer_loss(&t, x, i, &loss) != EBM_OK) { fprintf(stderr, "error: %s\n", t.err.msg); exit(1); }
            to[i] = (ebm_time_sec() - t0) * 1e3;
        }
        printf("bench objective_%s_nf%d_silu ms=%.1f fwd_bwd_ms=%.1f ratio=%.2f%s\n", names[k], nf, median(to, reps), base, median(to, reps) / base,
               objs[k] == EBM_OBJ_SSM ? " target_ratio=3" : "");
        fflush(stdout);
        ebm_trainer_free(&t);
    }
    free(x);
    ebm_model_free(&m);
}

static void case_gen(void)
{
    timed c;
    double ms, tms;
    gen_setup(&c);
    measure(gen_run, &c, reps, "gen 100 64 64", &ms, &tms);
    report("gen28", ms, c.flops, tms);
    timed_free(&c);
}

/* The relative targets, % of peak within 10 % of the counterpart's:
   net28_nf32_silu against net28_nf32, and gen28 against net28_nf32 and
   against its conv mirror (mirror_setup: the same passes, as
   convolutions, so the ratio says what the transposition costs; nf32's
   Langevin step has no weight gradients and no small layers, so that
   ratio also says what gen28's mix of passes costs). The cases above run
   minutes apart on a shared machine whose speed moves by tens of percent
   in that time, so here one step of each runs in turn, and each ratio is
   the median over the rounds of that round's ratio of GFLOP/s (the peak
   cancels), as make bench-ab pairs its runs. */
static void case_relative(void)
{
    enum { R = 51 }; /* (21 rounds gave medians 0.86-0.92 for gen28 over five runs: the rounds vary by +-10 %) */
    timed nf32, silu, gen, mir;
    double rs[R], rg[R], rm[R], tn[R], ts[R], tg[R], tm[R];
    int i;
    langevin_setup(&nf32, 1, 28, 32, 64, EBM_ACT_LEAKY_RELU);
    langevin_setup(&silu, 1, 28, 32, 64, EBM_ACT_SILU);
    gen_setup(&gen);
    mirror_setup(&mir);
    langevin_run(&nf32); langevin_run(&silu); gen_run(&gen); gen_run(&mir);
    for (i = 0; i < R; i++) {
        tn[i] = langevin_run(&nf32); ts[i] = langevin_run(&silu); tg[i] = gen_run(&gen); tm[i] = gen_run(&mir);
        rs[i] = (silu.flops / ts[i]) / (nf32.flops / tn[i]);
        rg[i] = (gen.flops / tg[i]) / (nf32.flops / tn[i]);
        rm[i] = (gen.flops / tg[i]) / (mir.flops / tm[i]);
    }
    printf("bench relative_to_nf32 silu=%.2f gen28=%.2f target=0.9 rounds=%d nf32_ms=%.2f silu_ms=%.2f gen28_ms=%.2f\n",
           median(rs, R), median(rg, R), R, median(tn, R) * 1e3, median(ts, R) * 1e3, median(tg, R) * 1e3);
    printf("bench relative_gen28_to_conv_mirror ratio=%.2f target=0.9 rounds=%d gen28_ms=%.2f mirror_ms=%.2f flops_ratio=%.3f\n",
           median(rm, R), R, median(tg, R) * 1e3, median(tm, R) * 1e3, gen.flops / mir.flops);
    fflush(stdout);
    timed_free(&nf32); timed_free(&silu); timed_free(&gen); timed_free(&mir);
}

/* A whole ML iteration: K = 40 Langevin steps on 64 noise samples, the loss
   mean f(x-) - mean f(x+) backward on 64 samples and 64 data, an Adam step. */
enum { TRAIN_B = 64, TRAIN_K = 40, TRAIN_D = 28 * 28 };
typedef struct {
    ebm_model m;
    ebm_graph *g;
    ebm_langevin cfg;
    ebm_rng r;
    float *x, *w; /* samples then data (x); the loss weights, +1/B samples, -1/B data */
    int it;
} train_ctx;

/* Seconds of one iteration (v: a train_ctx). */
static double train_run(void *v)
{
    train_ctx *c = (train_ctx *)v;
    const int B = TRAIN_B, D = TRAIN_D, s[4] = { TRAIN_B, 28, 28, 1 }, ws[4] = { TRAIN_B, 1, 1, 1 };
    double t0 = ebm_time_sec();
    int i;
    for (i = 0; i < B; i++) ebm_rng_uniform(&c->r, (uint64_t)i, 100000u + (uint32_t)c->it, -1, 1, c->x + (size_t)i * D, (size_t)D);
    c->cfg.first_step = (uint32_t)c->it * TRAIN_K;
    ebm_langevin_run(&c->m, c->g, &c->cfg, &c->r, 0, c->x, B, NULL);
    /* the loss mean f(x-) - mean f(x+), backward on the samples, then on the data */
    ebm_model_zero_grad(&c->m);
    for (i = 0; i < 2; i++) {
        ebm_var *loss;
        ebm_graph_reset(c->g);
        loss = ebm_dot(c->g, ebm_model_forward(&c->m, c->g, ebm_leaf(c->g, c->x + (size_t)i * B * D, 4, s)),
                       ebm_leaf(c->g, c->w + i * B, 4, ws));
        ebm_model_backward(&c->m, c->g, loss);
    }
    ebm_adam_step(&c->m, 1e-4f, 0.9f, 0.999f, 1e-8f, ++c->it);
    if (ebm_graph_status(c->g) != EBM_OK) { fprintf(stderr, "error: %s\n", ebm_graph_error(c->g)->msg); exit(1); }
    return ebm_time_sec() - t0;
}

static void case_train(void)
{
    const int B = TRAIN_B, D = TRAIN_D;
    train_ctx c;
    ebm_error e;
    size_t lbytes, tbytes, predicted;
    double ms, tms, flops;
    int i;
    struct rusage ru;
    ebm_model_convnet(&c.m, 1, 28, 32, EBM_ACT_LEAKY_RELU, 0.2f, 1);
    ebm_model_step_bytes(&c.m, B, EBM_STEP_INPUT_GRAD, &lbytes, &e);
    ebm_model_step_bytes(&c.m, B, EBM_STEP_PARAM_GRAD, &tbytes, &e);
    ebm_graph_create(&c.g, lbytes > tbytes ? lbytes : tbytes, &e);
    c.x = (float *)malloc((size_t)2 * B * D * sizeof *c.x);
    c.w = (float *)malloc((size_t)2 * B * sizeof *c.w);
    for (i = 0; i < 2 * B; i++) c.w[i] = i < B ? 1.0f / B : -1.0f / B;
    c.r.seed = 3; c.r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&c.r, 1000, 0, -1, 1, c.x + (size_t)B * D, (size_t)B * D);
    ebm_langevin_default(&c.cfg);
    c.cfg.n_steps = TRAIN_K;
    c.it = 0;
    measure(train_run, &c, reps < 6 ? reps : 6, "train 1 28 32 64 40", &ms, &tms); /* (two per round: a second each) */
    /* K steps of forward + grad_x on B, then forward + backward (grad_x of
       inner layers and grad_theta: about 3x forward) on 2B */
    flops = TRAIN_K * 2 * model_flops(&c.m) * B + 3 * model_flops(&c.m) * 2 * B; /* (the backward on 2 x B) */
    report("train_nf32", ms, flops, tms);
    getrusage(RUSAGE_SELF, &ru);
    predicted = ebm_model_bytes(&c.m) + (lbytes > tbytes ? lbytes : tbytes) + (size_t)2 * B * D * 4 + (size_t)2 * B * 4;
    printf("bench train_nf32_memory peak_rss_mb=%.1f predicted_mb=%.1f ratio=%.2f (prediction: model blocks + graph arena + batches)\n",
           ru.ru_maxrss / 1024.0, predicted / 1048576.0, ru.ru_maxrss * 1024.0 / predicted);
    free(c.x); free(c.w);
    ebm_graph_destroy(c.g);
    ebm_model_free(&c.m);
}

/* n zeroed floats on a 64-byte boundary, as the graph's arena places every
   tensor (the kernels read rows in place; malloc's 16-byte alignment would
   split their vectors across cache lines). */
static float *aligned_zeros(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float) + 64) != 0) { fprintf(stderr, "error: out of memory\n"); exit(1); }
    memset(p, 0, n * sizeof(float) + 64);
    return (float *)p;
}

/* Each conv layer of net28_nf<nf>, each pass, alone (with its packing). */
static void case_layers(int nf)
{
    ebm_model m;
    int i, pass;
    ebm_model_convnet(&m, 1, 28, nf, EBM_ACT_LEAKY_RELU, 0.2f, 1);
    for (i = 0; i < m.n_layers; i++) {
        const ebm_layer *L = &m.layer[i];
        ebm__cgeom G;
        size_t nx, ny, nw, sb;
        float *x, *y, *w;
        void *scr;
        if (L->type != EBM_LAYER_CONV2D) continue;
        sb = layer_geom(L, 64, &G);
        nx = (size_t)G.n * G.hx * G.wx * G.cx; ny = (size_t)G.n * G.hy * G.wy * G.cy; nw = (size_t)G.k * G.k * G.cx * G.cy;
        x = aligned_zeros(nx); y = aligned_zeros(ny); w = aligned_zeros(nw); scr = aligned_zeros(sb / sizeof(float) + 1);
        for (pass = 0; pass < 3; pass++) {
            static const char *const names[3] = { "fwd", "bwd_data", "bwd_weight" };
            double t[16];
            char name[64];
            int k;
            for (k = 0; k <= reps; k++) {
                double t0 = ebm_time_sec();
                if (pass == 0) ebm__conv_fwd(&G, x, w, NULL, y, scr, 0, 0.0f);
                else if (pass == 1) ebm__conv_bwd_data(&G, y, w, NULL, x, scr);
                else ebm__conv_bwd_weight(&G, x, y, w, scr);
                if (k) t[k - 1] = (ebm_time_sec() - t0) * 1e3;
            }
            snprintf(name, sizeof name, "net28_nf%d_L%d_%s", nf, i, names[pass]);
            report(name, median(t, reps), 2.0 * G.n * G.hy * G.wy * G.cy * G.cx * G.k * G.k, -1);
        }
        free(x); free(y); free(w); free(scr);
    }
    ebm_model_free(&m);
}

/* The latent EBM's iteration (ALGORITHMS.md section 6, the paper's
   settings: nz 100, prior MLP 200, K 60 / 20, batch 64; generator ngf 32)
   against the network work inside it, timed call by call: the prior's
   forward + grad_z at every step of both chains, the generator's forward +
   grad_z at every posterior step, and the two parameter-gradient passes.
   What is left (noise, updates, copies, Adam) is the bookkeeping. Target:
   under 10 % of the iteration. */
static void case_latent(void)
{
    ebm_model prior, gen;
    ebm_latent L;
    ebm_latent_config c;
    ebm_error e;
    const int B = 64, nz = 100;
    float *x = (float *)malloc((size_t)B * 784 * sizeof(float)), *z = (float *)malloc(2 * (size_t)B * nz * sizeof(float));
    float *f = (float *)malloc(2 * (size_t)B * sizeof(float)), *dz = (float *)malloc((size_t)B * nz * sizeof(float));
    double ts[16], tn[16], step, net, nll;
    ebm_rng r;
    int i, k;
    ebm_latent_config_default(&c);
    ebm_model_mlp_prior(&prior, nz, 200, EBM_ACT_LEAKY_RELU, 0.2f, 1);
    ebm_model_generator28(&gen, nz, 32, 1, 2);
    if (ebm_latent_init(&L, &prior, &gen, &c, &e) != EBM_OK) { fprintf(stderr, "error: %s\n", e.msg); exit(1); }
    r.seed = 1; r.stream = EBM_STREAM_USER;
    ebm_rng_uniform(&r, 0, 0, -1, 1, x, (size_t)B * 784);
    ebm_rng_normal(&r, 0, 1, z, 2 * (size_t)B * nz);
    ebm_latent_step(&L, x); /* warm-up */
    for (i = 0; i < reps; i++) {
        double t0 = ebm_time_sec();
        ebm_latent_step(&L, x);
        ts[i] = (ebm_time_sec() - t0) * 1e3;
        t0 = ebm_time_sec();
        for (k = 0; k < c.prior_steps; k++) ebm_model_score(&prior, L.graph, z, B, f, dz);
        for (k = 0; k < c.post_steps; k++) {
            ebm_model_score(&prior, L.graph, z, B, f, dz);
            ebm__latent_nll(&L, x, z, B, 1.0, &nll, dz);
        }
        { /* the prior's parameter gradient on [z-; z+], the generator's on z+ */
            int shape[4];
            ebm_var *y;
            ebm_graph_reset(L.graph);
            shape[0] = 2 * B; shape[1] = 1; shape[2] = 1; shape[3] = nz;
            y = ebm_model_forward(&prior, L.graph, ebm_leaf(L.graph, z, 4, shape));
            ebm_model_backward(&prior, L.graph, ebm_sum(L.graph, y));
            ebm__latent_nll(&L, x, z, B, 1.0 / B, &nll, NULL);
        }
        tn[i] = (ebm_time_sec() - t0) * 1e3;
    }
    step = median(ts, reps); net = median(tn, reps);
    printf("bench latent_step_nz100_ngf32 ms=%.2f network_ms=%.2f bookkeeping_pct=%.1f target_pct=10\n", step, net, 100 * (step - net) / step);
    ebm_latent_free(&L);
    ebm_model_free(&prior); ebm_model_free(&gen);
    free(x); free(z); free(f); free(dz);
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    int i, train_alone = 0;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-torch") == 0) use_torch = 0;
        else if (strcmp(argv[i], "--quick") == 0) reps = 3;
        else if (strcmp(argv[i], "--train-alone") == 0) train_alone = 1;
        else only = argv[i];
    }
    if (use_torch && system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        use_torch = 0;
        printf("note: /usr/bin/python3 has no torch (Debian python3-torch): PyTorch figures are na\n");
    }
    peak_gflops = measure_peak(3);
    if (train_alone) {
        case_train();
        return 0;
    }
    printf("bench peak gflops=%.1f threads=%d isa=%s\n", peak_gflops, ebm_threads(), ebm_isa());
#define RUN(name, call) if (!only || strstr(name, only)) call
    RUN("net28_nf16", case_langevin("net28_nf16", 1, 28, 16, 64, EBM_ACT_LEAKY_RELU));
    RUN("net28_nf16_b16", case_langevin("net28_nf16_b16", 1, 28, 16, 16, EBM_ACT_LEAKY_RELU));
    RUN("net28_nf32", case_langevin("net28_nf32", 1, 28, 32, 64, EBM_ACT_LEAKY_RELU));
    RUN("net28_nf64", case_langevin("net28_nf64", 1, 28, 64, 64, EBM_ACT_LEAKY_RELU));
    RUN("net32c3_nf32", case_langevin("net32c3_nf32", 3, 32, 32, 64, EBM_ACT_LEAKY_RELU));
    RUN("net28_nf32_silu", case_langevin("net28_nf32_silu", 1, 28, 32, 64, EBM_ACT_SILU));
    RUN("sampler_overhead_nf16", case_sampler_overhead(16));
    RUN("chain_gradient_nf16_silu", case_chain_gradient(16));
    RUN("objective_nf16_silu", case_objectives(16));
    RUN("gen28", case_gen());
    RUN("relative_to_nf32", case_relative());
    RUN("latent_step", case_latent());
    /* in a process of its own (this program again), so that its peak memory
       is its own: getrusage's peak covers a process's whole life */
    if (!only || strstr("train_nf32", only)) {
        char cmd[1024];
        fflush(stdout);
        snprintf(cmd, sizeof cmd, "%s --train-alone%s%s", argv[0], use_torch ? "" : " --no-torch", reps == 3 ? " --quick" : "");
        if (system(cmd) != 0) printf("bench train_nf32 failed\n");
    }
    RUN("net28_nf32_L", case_layers(32));
    RUN("net28_nf16_L", case_layers(16));
    printf("bench peak_final gflops=%.1f (the highest reading, which the last case's peak_pct used)\n", peak_gflops);
    return 0;
}
