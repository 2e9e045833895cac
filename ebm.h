/* ebm.h - energy-based models in plain C, one header.                 v0.6.14

   Train and sample energy-based models p(x) = exp(f(x)) q(x) / Z with a ConvNet
   f, Langevin MCMC and autograd (including gradients of gradients), using only
   libc and libm. OpenMP is optional and never changes a single bit of a result.

   In exactly one C or C++ file:
       #define EBM_IMPLEMENTATION
       #include "ebm.h"
   everywhere else just #include "ebm.h".

   QUICK START (the energies and input gradients of a batch)

       ebm_model m; ebm_graph *g; ebm_error err;
       ebm_model_init(&m, 1, 28, 28);                      // input: 1x28x28
       ebm_model_add_conv2d(&m, 32, 3, 1, 1, 1);           // conv 3x3 s1 p1, bias
       ebm_model_add_act(&m, EBM_ACT_LEAKY_RELU, 0.2f);
       ebm_model_add_conv2d(&m, 1, 28, 1, 0, 1);           // one energy per image
       if (ebm_model_alloc(&m, 42) != EBM_OK) puts(m.err.msg);
       ebm_graph_create(&g, 64u << 20, &err);              // 64 MiB step arena
       float x[8*28*28], f[8], dx[8*28*28];                // NHWC, values in [-1,1]
       ... fill x ...
       ebm_model_score(&m, g, x, 8, f, dx);                // f(x) and grad_x f(x)
       ebm_graph_destroy(g); ebm_model_free(&m);

   TRAINING (maximum likelihood with Langevin chains, or c.objective =
   EBM_OBJ_DSM, _SSM, _SSM_VR, _FD_SSM, _NCE; see examples/)

       ebm_train_config c; ebm_trainer t;
       ebm_train_config_default(&c);                       // short-run image recipe
       ebm_model_convnet(&m, 1, 28, 16, EBM_ACT_LEAKY_RELU, 0.2f, 1);
       ebm_trainer_init(&t, &m, &c, &err);
       for (...) { fill xb with c.batch data images; ebm_trainer_step(&t, xb); }
       ebm_trainer_save(&t, "ckpt.bin", &err);             // resume: ebm_trainer_load

   Images are float32, channels last (N, H, W, C) inside the library; the
   PyTorch-layout helpers (ebm_nchw_to_nhwc, ebm_model_export_torch) convert at
   the edges.

   CONTENTS (the implementation follows this order)
       1. platform      allocation hooks, status codes and error records, timer
       2. random        counter-based Philox4x32-10; uniform and normal variates
       3. arena         one block per graph, rewound every step
       4. kernels       convolution (forward, input-gradient, weight-gradient),
                        activations, pooling; scalar reference twin beside each
       5. autograd      the tape (ebm_graph), ops, reverse mode with create_graph
       6. models        layer sequences, PyTorch-default initialisation, memory
                        prediction, the reference networks, Adam and SGD
       6b. samplers     Langevin dynamics (both forms, Gaussian reference, box,
                        STANLEY's anisotropic steps), MALA
       6c. 2-D data     built-in data sets with known (and smoothed) densities, exact NLL
       6d. trainer      maximum likelihood: chain starts, replay buffer,
                        diagnostics d_t and r_t, divergence, schedules; the
                        MCMC-free objectives (DSM, SSM in Taylor mode, FD-SSM,
                        NCE) and annealed sampling; shards and workers
                        (ebm_comm: data parallelism through a user allgather)
       6e. generator    the short-run chain as a function of its noise, and
                        its gradient by reverse mode through every step
       6f. latent EBM   an EBM prior on a generator's latent vector: prior
                        and posterior chains, the joint training step
       7. file formats  NPY; CRC-32, inflate and gzip; IDX and CIFAR-10
                        readers; PNG grids and plots; checkpoints - each
                        as bytes through a write function or from memory,
                        with the file forms built on them

   OPTIONS (#define before including the implementation)
       EBM_STATIC             make every function static (private to one file)
       EBM_MALLOC(n)/EBM_FREE(p)   allocation hooks; define both or neither
       EBM_ASSERT(c)          internal-invariant check (default: assert)
       EBM_NO_SIMD            use the scalar reference kernels (slower)
       EBM_NO_STDIO           leave out every function that opens a file (for
                              systems without a file system): checkpoints,
                              data, NPY and PNG go through the ebm_*_write
                              (a write function) and ebm_*_read (bytes in
                              memory) forms, which are always there; the
                              grids, plots and ebm_model_print go too.
                              (<stdio.h> is still included, for snprintf.)
       EBM_NO_FSYNC           do not fsync a checkpoint before its rename
       EBM_MAX_LAYERS         layers per model (default 32)
       EBM_DATA_MAX_BYTES     the most bytes a data file may declare (default 1 GiB)
       EBM_CKPT_MAX_BYTES     the largest checkpoint read (default 4 GiB)
       EBM_FASHION_MNIST_DIR  default directory of ebm_mnist_load
                              ("/usr/share/datasets/fashion-mnist", Debian's)
   Compile with -ffp-contract=off (or without -ffast-math and with no FMA
   contraction) for results that are identical in C and C++ builds, with
   and without SIMD; clang 13 and later need it only with
   -ffp-contract=fast (the implementation turns clang's default
   contraction off for itself);
   -fopenmp to use threads.

   DETERMINISM: every random number is a pure function of (seed, stream,
   sample index, step, coordinate); every parallel loop splits work into tiles
   whose number and size do not depend on the thread count, and every reduction
   runs in a fixed order. The same seed therefore gives bit-identical results
   with any number of threads, with or without OpenMP, and with any number
   of ebm_comm workers that divides cfg.shards.

   ERRORS: functions that can fail return an ebm_status (EBM_OK == 0). The reason
   is left in the object that failed (model->err, ebm_graph_error(g)) or in the
   ebm_error record the caller passed. Graph ops return NULL once the graph has
   failed, and the first failure is kept ("sticky"), so a whole computation can
   be written without checks and tested once at the end. There is no global
   state; nothing is printed unless a function is given a FILE to print to.

   License: MIT or public domain (Unlicense), at the end of this file.
*/
#ifndef EBM_H
#define EBM_H

#define EBM_VERSION "0.6.14"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef EBM_STATIC /* (unused: a program calls only some of them, and -Wall should stay quiet) */
#if defined(__GNUC__) || defined(__clang__)
#define EBMDEF static __attribute__((unused))
#else
#define EBMDEF static
#endif
#else
#define EBMDEF extern
#endif

#ifndef EBM_MAX_LAYERS
#define EBM_MAX_LAYERS 32
#endif

#ifdef __cplusplus
#define EBM_RESTRICT __restrict
extern "C" {
#else
#define EBM_RESTRICT restrict
#endif

/* ---------------------------------------------------------------- status */

/* Every fallible call returns one of these; EBM_OK is 0, failures are < 0. */
typedef enum {
    EBM_OK = 0,
    EBM_EINVAL = -1,      /* a bad argument, shape or hyper-parameter */
    EBM_ENOMEM = -2,      /* an allocation failed or an arena is full */
    EBM_EIO = -3,         /* a file could not be read or written */
    EBM_EFORMAT = -4,     /* a file's contents are malformed */
    EBM_EDIVERGED = -5,   /* training produced non-finite or runaway values */
    EBM_EUNSUPPORTED = -6 /* a valid request this build cannot do */
} ebm_status;

/* A caller-owned error record: the status and a human-readable reason. */
typedef struct ebm_error {
    int status;
    char msg[240];
} ebm_error;

/* The name of a status code, e.g. "EBM_EINVAL". */
EBMDEF const char *ebm_status_name(int status);

/* Wall-clock seconds from an arbitrary origin: CLOCK_MONOTONIC where time.h
   offers it (in strict -std=c99, define _POSIX_C_SOURCE 199309L before any
   include), else omp_get_wtime() with OpenMP, else clock(). */
EBMDEF double ebm_time_sec(void);

/* Number of threads the kernels may use (1 without OpenMP); results never depend on it. */
EBMDEF int ebm_threads(void);
/* Set the number of OpenMP threads (no effect without OpenMP). */
EBMDEF void ebm_set_threads(int n);
/* The vector instruction set the kernels were compiled for: "avx512", "avx2", "neon" or "scalar". */
EBMDEF const char *ebm_isa(void);

/* ---------------------------------------------------------------- random */

/* Key of a counter-based generator. A value is a pure function of
   (seed, stream, sample, step, coordinate): no state advances, so any thread
   or process draws the same number for the same position. */
typedef struct ebm_rng {
    uint64_t seed;
    uint32_t stream; /* what the numbers are for: init, data order, Langevin noise, ... */
} ebm_rng;

/* Streams the library itself uses (user streams should start at EBM_STREAM_USER). */
enum { EBM_STREAM_INIT = 1, EBM_STREAM_USER = 1024 };

/* The raw Philox4x32-10 block for a 128-bit counter and 64-bit key. */
EBMDEF void ebm_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* out[i] ~ U[lo, hi) for coordinates i = 0..n-1 of (sample, step). sample < 2^32. */
EBMDEF void ebm_rng_uniform(const ebm_rng *r, uint64_t sample, uint32_t step,
                            float lo, float hi, float *out, size_t n);
/* out[i] ~ N(0, 1) for coordinates i = 0..n-1 of (sample, step) (Box-Muller,
   vectorisable; |out| <= 5.8). */
EBMDEF void ebm_rng_normal(const ebm_rng *r, uint64_t sample, uint32_t step,
                           float *out, size_t n);

/* ---------------------------------------------------------------- graph */

/* A tensor in a graph: float32, up to 4-D, row-major; images are (N, H, W, C).
   Only the first four fields are public. */
typedef struct ebm_var ebm_var;
struct ebm_var {
    float *data;  /* size floats (NULL while measuring memory) */
    size_t size;  /* product of shape */
    int ndim;     /* 1..4 */
    int shape[4];
    /* private: the tape */
    int op, id, needed, is_param;
    ebm_var *in[3];
    ebm_var *prev, *next;
    int ip[8];
    float fp[2];
    void *aux;
    ebm_var *grad;
    const void *owner;   /* model owning this parameter leaf */
    size_t owner_off;    /* offset of the parameter in the model's block */
};

/* The tape of one step and the arena that holds its tensors. */
typedef struct ebm_graph ebm_graph;

/* Create a graph whose arena holds `bytes` (see ebm_model_step_bytes). */
EBMDEF int ebm_graph_create(ebm_graph **g, size_t bytes, ebm_error *err);
EBMDEF void ebm_graph_destroy(ebm_graph *g);
/* Forget every tensor and rewind the arena; clears a sticky error. */
EBMDEF void ebm_graph_reset(ebm_graph *g);
/* The graph's first failure since the last reset (EBM_OK if none). */
EBMDEF int ebm_graph_status(const ebm_graph *g);
EBMDEF const ebm_error *ebm_graph_error(const ebm_graph *g);
/* High-water mark of the arena in bytes since creation. */
EBMDEF size_t ebm_graph_peak_bytes(const ebm_graph *g);

/* Leaves. ebm_leaf wraps caller memory without copying (it must outlive the
   step); ebm_tensor allocates an uninitialised tensor; ebm_zeros and
   ebm_full allocate filled ones. A shape has ndim entries. */
EBMDEF ebm_var *ebm_leaf(ebm_graph *g, float *data, int ndim, const int *shape);
EBMDEF ebm_var *ebm_tensor(ebm_graph *g, int ndim, const int *shape);
EBMDEF ebm_var *ebm_zeros(ebm_graph *g, int ndim, const int *shape);
EBMDEF ebm_var *ebm_full(ebm_graph *g, int ndim, const int *shape, float value);

/* Convolution, cross-correlation as in PyTorch. x (N,H,W,Ci), w (K,K,Ci,Co),
   b (Co) or NULL -> (N,Ho,Wo,Co), Ho = (H + 2 pad - K) / stride + 1. */
EBMDEF ebm_var *ebm_conv2d(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b, int stride, int pad);
/* Transposed convolution (the adjoint of ebm_conv2d in x): y (N,Hy,Wy,Co),
   w (K,K,Cx,Co), b (Cx) or NULL -> (N,out_h,out_w,Cx); out_h must be one of the
   sizes a stride-`stride` conv maps to Hy. */
EBMDEF ebm_var *ebm_conv2d_transpose(ebm_graph *g, ebm_var *y, ebm_var *w, ebm_var *b,
                                     int stride, int pad, int out_h, int out_w);
/* The adjoint of ebm_conv2d in w: x (N,H,W,Ci), gy (N,Ho,Wo,Co) -> (K,K,Ci,Co). */
EBMDEF ebm_var *ebm_conv2d_weight_grad(ebm_graph *g, ebm_var *x, ebm_var *gy, int k, int stride, int pad);
/* Fully connected: x (N, ...) flattened to (N, I), w (I, O), b (O) or NULL -> (N, O). */
EBMDEF ebm_var *ebm_linear(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b);

/* Activations. ebm_act(g, x, type, param) is the activation itself;
   ebm_act_deriv gives its order-th derivative, element-wise (order 0..3). */
enum { EBM_ACT_LEAKY_RELU, EBM_ACT_SILU, EBM_ACT_SOFTPLUS, EBM_ACT_ELU, EBM_ACT_GELU,
       EBM_ACT_TANH, EBM_ACT_COUNT };
EBMDEF ebm_var *ebm_act(ebm_graph *g, ebm_var *x, int type, float param);
EBMDEF ebm_var *ebm_act_deriv(ebm_graph *g, ebm_var *x, int type, float param, int order);
EBMDEF ebm_var *ebm_leaky_relu(ebm_graph *g, ebm_var *x, float slope);
EBMDEF ebm_var *ebm_silu(ebm_graph *g, ebm_var *x);
EBMDEF ebm_var *ebm_softplus(ebm_graph *g, ebm_var *x);
EBMDEF ebm_var *ebm_elu(ebm_graph *g, ebm_var *x, float alpha);
EBMDEF ebm_var *ebm_gelu(ebm_graph *g, ebm_var *x);
EBMDEF ebm_var *ebm_tanh(ebm_graph *g, ebm_var *x);
/* The name of an activation type ("silu", ...), or NULL. */
EBMDEF const char *ebm_act_name(int type);

/* Pooling over k x k windows with the given stride, no padding: (N,H,W,C) -> (N,Ho,Wo,C). */
EBMDEF ebm_var *ebm_avgpool(ebm_graph *g, ebm_var *x, int k, int stride);
EBMDEF ebm_var *ebm_maxpool(ebm_graph *g, ebm_var *x, int k, int stride);
/* Mean softmax cross-entropy of logits (N, C) against labels[N] in 0..C-1 -> (1).
   First derivatives only. */
EBMDEF ebm_var *ebm_softmax_xent(ebm_graph *g, ebm_var *logits, const int *labels);

/* Element-wise and reductions. a and b must have the same size; the result has a's shape. */
EBMDEF ebm_var *ebm_add(ebm_graph *g, ebm_var *a, ebm_var *b);
EBMDEF ebm_var *ebm_sub(ebm_graph *g, ebm_var *a, ebm_var *b);
EBMDEF ebm_var *ebm_mul(ebm_graph *g, ebm_var *a, ebm_var *b);
EBMDEF ebm_var *ebm_scale(ebm_graph *g, ebm_var *a, float c);
EBMDEF ebm_var *ebm_sum(ebm_graph *g, ebm_var *a);    /* -> (1) */
EBMDEF ebm_var *ebm_mean(ebm_graph *g, ebm_var *a);   /* -> (1) */
EBMDEF ebm_var *ebm_sqnorm(ebm_graph *g, ebm_var *a); /* sum of squares -> (1) */
EBMDEF ebm_var *ebm_dot(ebm_graph *g, ebm_var *a, ebm_var *b); /* sum(a*b) -> (1) */
/* Same data, another shape of the same size (a view: no copy). */
EBMDEF ebm_var *ebm_reshape(ebm_graph *g, ebm_var *a, int ndim, const int *shape);

/* Reverse mode: out[i] = d(seed . y)/d wrt[i] for i < n (seed NULL means all
   ones). With create_graph != 0 the gradients are themselves recorded on the
   tape, so they can be differentiated again (Hessian-vector products, score
   matching); with 0 they are constants and the backward pass uses the fused
   first-order kernels. A wrt that y does not depend on gets zeros. */
EBMDEF int ebm_grad(ebm_graph *g, ebm_var *y, ebm_var *seed, int n, ebm_var *const *wrt,
                    ebm_var **out, int create_graph);

/* ---------------------------------------------------------------- models */

enum { EBM_LAYER_CONV2D, EBM_LAYER_CONVT2D, EBM_LAYER_LINEAR, EBM_LAYER_ACT,
       EBM_LAYER_AVGPOOL, EBM_LAYER_MAXPOOL };

/* One layer of a model; shapes are per sample, (H, W, C). */
typedef struct ebm_layer {
    int type;                 /* EBM_LAYER_* */
    int in_h, in_w, in_c, out_h, out_w, out_c;
    int k, stride, pad, out_pad, bias;
    int act; float act_param; /* EBM_LAYER_ACT */
    size_t w_off, w_size, b_off, b_size; /* into the parameter block */
} ebm_layer;

/* A model is a sequence of layers. Its parameters, their gradients and the two
   optimiser moments are each one block of n_params floats (one allocation).
   Weights are stored the way the kernels read them: conv (K,K,Ci,Co),
   transposed conv (K,K,Co,Ci), linear (I,O) with I in (H,W,C) order. */
typedef struct ebm_model {
    int n_layers;
    ebm_layer layer[EBM_MAX_LAYERS];
    int in_h, in_w, in_c;
    size_t n_params;
    float *params, *grads, *m1, *m2;
    int status;               /* first failure while building, sticky */
    ebm_error err;
} ebm_model;

/* Start a model whose input is (C, H, W) per sample. */
EBMDEF int ebm_model_init(ebm_model *m, int c, int h, int w);
/* conv2d with out_c channels, k x k kernel; bias 0/1. */
EBMDEF int ebm_model_add_conv2d(ebm_model *m, int out_c, int k, int stride, int pad, int bias);
/* Transposed conv2d, output size (H-1)*stride - 2*pad + k + out_pad as in PyTorch. */
EBMDEF int ebm_model_add_conv_transpose2d(ebm_model *m, int out_c, int k, int stride, int pad,
                                          int out_pad, int bias);
/* Fully connected to out features (flattens the input). */
EBMDEF int ebm_model_add_linear(ebm_model *m, int out, int bias);
EBMDEF int ebm_model_add_act(ebm_model *m, int type, float param);
EBMDEF int ebm_model_add_avgpool(ebm_model *m, int k, int stride);
EBMDEF int ebm_model_add_maxpool(ebm_model *m, int k, int stride);
/* Allocate the blocks and initialise as PyTorch does by default: weights and
   biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = Ci*K*K for conv and
   Co*K*K for transposed conv (PyTorch's convention), I for linear. */
EBMDEF int ebm_model_alloc(ebm_model *m, uint64_t seed);
EBMDEF void ebm_model_free(ebm_model *m);
/* Output shape per sample (H, W, C) of the whole model. */
EBMDEF void ebm_model_out_shape(const ebm_model *m, int *h, int *w, int *c);

/* Reference networks of ALGORITHMS.md. ConvNet energy: conv3x3 s1 p1 (C->nf),
   3 x conv4x4 s2 p1 (doubling), conv(kxk) to 1, LeakyReLU(slope) (or `act`)
   after every layer but the last; for 28x28 (k=3) or 32x32 (k=4) inputs. */
EBMDEF int ebm_model_convnet(ebm_model *m, int c, int hw, int nf, int act, float act_param, uint64_t seed);
/* Latent prior MLP nz -> hidden -> hidden -> 1 with the given activation. */
EBMDEF int ebm_model_mlp_prior(ebm_model *m, int nz, int hidden, int act, float act_param, uint64_t seed);
/* 28x28 generator: nz -> convT 7x7 (ngf*2, 7x7) -> convT 4x4 s2 (ngf, 14x14)
   -> convT 4x4 s2 (C, 28x28) -> tanh; LeakyReLU(0.2) between. */
EBMDEF int ebm_model_generator28(ebm_model *m, int nz, int ngf, int c, uint64_t seed);
/* 32x32 generator: nz -> convT 4x4 (ngf*4, 4x4) -> convT 4x4 s2 (ngf*2, 8x8)
   -> (ngf, 16x16) -> (C, 32x32) -> tanh; LeakyReLU(0.2) between. */
EBMDEF int ebm_model_generator32(ebm_model *m, int nz, int ngf, int c, uint64_t seed);

/* Run the model on x (N,H,W,C) in g; returns (N, out_h, out_w, out_c). The
   parameters enter the graph as leaves owned by m. */
EBMDEF ebm_var *ebm_model_forward(ebm_model *m, ebm_graph *g, ebm_var *x);
/* The first n_layers layers only (features of an inner layer). */
EBMDEF ebm_var *ebm_model_forward_partial(ebm_model *m, ebm_graph *g, ebm_var *x, int n_layers);
/* Add d loss / d theta to m->grads for every parameter leaf of m in g. */
EBMDEF int ebm_model_backward(ebm_model *m, ebm_graph *g, ebm_var *loss);
/* The same, and d loss / d x into *gx, in one backward pass. */
EBMDEF int ebm_model_backward_input(ebm_model *m, ebm_graph *g, ebm_var *loss, ebm_var *x, ebm_var **gx);
EBMDEF void ebm_model_zero_grad(ebm_model *m);
/* One-shot energies and input gradients: resets g, computes f(x) into f[n]
   and grad_x sum f into dx (n*H*W*C, may be NULL). x is (n,H,W,C). */
EBMDEF int ebm_model_score(ebm_model *m, ebm_graph *g, const float *x, int n, float *f, float *dx);

/* Bytes of the model's four blocks (parameters, gradients, two moments). */
EBMDEF size_t ebm_model_bytes(const ebm_model *m);
/* What a step needs in a graph arena, measured exactly by running the step's
   shapes through the tape without arithmetic. */
enum { EBM_STEP_FORWARD,      /* f(x) */
       EBM_STEP_INPUT_GRAD,   /* f(x) and grad_x f: one Langevin step */
       EBM_STEP_PARAM_GRAD,   /* grad_theta of sum_i w_i f(x_i): one maximum-likelihood update */
       EBM_STEP_SECOND_ORDER, /* grad_theta of |grad_x f|^2: denoising score matching */
       EBM_STEP_THIRD_ORDER   /* grad_theta of v.grad_x(v.grad_x f): sliced score matching */ };
EBMDEF int ebm_model_step_bytes(ebm_model *m, int batch, int kind, size_t *bytes, ebm_error *err);
/* A table of layers, shapes and parameter counts. */
#ifndef EBM_NO_STDIO
EBMDEF void ebm_model_print(const ebm_model *m, FILE *out);
#endif

/* Parameters in PyTorch's order and layouts (conv OIHW, transposed conv IOHW,
   linear (O,I) with I in (C,H,W) order): export writes n_params floats. */
EBMDEF void ebm_model_export_torch(const ebm_model *m, float *dst);
EBMDEF void ebm_model_import_torch(ebm_model *m, const float *src);

/* Optimisers over the model's blocks. t counts Adam steps from 1. */
EBMDEF int ebm_adam_step(ebm_model *m, float lr, float beta1, float beta2, float eps, long t);
EBMDEF int ebm_sgd_step(ebm_model *m, float lr, float momentum);

/* Layout helpers: (N,C,H,W) <-> (N,H,W,C). */
EBMDEF void ebm_nchw_to_nhwc(const float *src, float *dst, int n, int c, int h, int w);
EBMDEF void ebm_nhwc_to_nchw(const float *src, float *dst, int n, int c, int h, int w);

/* ---------------------------------------------------------------- sampling */

/* Langevin dynamics towards p(x) = exp(f(x)) q(x) / Z (ALGORITHMS.md §2), in
   either form:
     EBM_LANGEVIN_EPS:        x += (eps^2 / 2) drift + eps xi        (textbook)
     EBM_LANGEVIN_STEP_NOISE: x += step drift + noise xi             (short-run papers;
                              samples the tempered exp(f/T), T = noise^2 / (2 step))
   with drift = grad_x f(x) - x / sigma_q^2 for a Gaussian reference
   q = N(0, sigma_q^2 I) (sigma_q > 0), or grad_x f(x) alone (sigma_q = 0).
   An unadjusted chain that leaves the box [lo, hi] is clamped back or
   reflected (it then samples a slightly different law than the boxed target).
   STANLEY (ALGORITHMS.md section 4; aniso_th > 0): each coordinate's step and
   noise variance are scaled by gamma = th / max(th, |drift|), so
     x += gamma a drift + sqrt(gamma) b xi
   (the eps form's global step eta is eps^2). Steep coordinates move with
   short steps and little noise, flat ones with the whole step; the
   temperature b^2 / (2a) is the same for every coordinate. A position-
   dependent step is biased even for small steps (it lacks the 1/2 div Gamma
   term); ebm_mala_run corrects it exactly. */
enum { EBM_LANGEVIN_EPS, EBM_LANGEVIN_STEP_NOISE };
enum { EBM_BOX_NONE, EBM_BOX_CLAMP, EBM_BOX_REFLECT };
typedef struct ebm_langevin {
    int form;            /* EBM_LANGEVIN_* */
    float eps;           /* EBM_LANGEVIN_EPS */
    float step, noise;   /* EBM_LANGEVIN_STEP_NOISE */
    float sigma_q;       /* Gaussian reference's std, or 0 for none */
    int box;             /* EBM_BOX_* */
    float lo, hi;        /* the box */
    int n_steps;         /* K */
    uint32_t first_step; /* step index of the first step: keys the noise */
    float aniso_th;      /* STANLEY's threshold th, or 0 for isotropic steps */
} ebm_langevin;

/* The short-run image recipe: step 1, noise 0.01, K = 100, clamped to [-1, 1]. */
EBMDEF void ebm_langevin_default(ebm_langevin *cfg);
/* Run cfg->n_steps steps on x (n samples, (n,H,W,C)) in place, in graph g
   (reset every step; size it with EBM_STEP_INPUT_GRAD). The noise of sample
   i at step k is drawn at (rng, first_sample + i, first_step + k), so a chain
   gives the same bits whatever batch it runs in. If grad_norm is not NULL it
   receives r_t: the mean over steps and samples of |grad_x f(x_k)|. */
EBMDEF int ebm_langevin_run(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng,
                            uint64_t first_sample, float *x, int n, double *grad_norm);

/* Metropolis-adjusted Langevin (MALA): the same proposal as ebm_langevin_run
   (cfg->box is a hard wall: proposals outside it are rejected), accepted with
   the Metropolis-Hastings test for the tempered target
   exp((f(x) - |x|^2 / (2 sigma_q^2)) / T), T = b^2 / (2a) (T = 1 in the eps
   form), so the chain's stationary law is exactly that target. Needs, besides
   an EBM_STEP_INPUT_GRAD step, 3 n D + 2 n floats in g's arena (D = H W C).
   *accept_rate (if not NULL) receives the fraction of accepted proposals,
   *grad_norm (if not NULL) r_t as for ebm_langevin_run, at the chain's states. */
EBMDEF int ebm_mala_run(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng,
                        uint64_t first_sample, float *x, int n, double *accept_rate, double *grad_norm);

/* MALA burn-in with step adaptation: n_burn steps in rounds of 10, after each
   round the step is multiplied by exp(2 (rate - target)) (eps form: eps; step
   and noise form: step, with noise scaled by its square root so that the
   temperature stays the same). *adapted receives cfg with the final step; the
   chains x are left burned in. Adapt during burn-in only: a chain whose step
   keeps changing does not keep its target law. */
EBMDEF int ebm_mala_adapt(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                          float *x, int n, int n_burn, double target_rate, ebm_langevin *adapted);

/* ---------------------------------------------------------------- 2-D data */

/* The built-in 2-D data sets of ALGORITHMS.md section 7, whose densities are
   known, so a model's exact NLL can be compared with the truth:
     8 Gaussians: centres 2 sqrt2 (cos k pi/4, sin k pi/4), std 0.5/sqrt2;
     rings: radii 1..4 with weights proportional to the radius, angle
       uniform, radial noise std 0.1;
     checkerboard: uniform on the 8 squares (i + j even) of side 2 of a 4x4
       board on [-4, 4]^2;
     two moons: t uniform on [0, pi], the arcs (2 cos t - 1, 2 sin t - 1/2)
       and (1 - 2 cos t, 1/2 - 2 sin t) with equal weights, isotropic noise
       std 0.2 (scikit-learn's make_moons with noise 0.1, scaled by 2 and
       centred); its density is an integral over t, done by the midpoint
       rule with 1024 points per arc (doubling them changes the test NLL by
       less than 1e-6 nats). */
enum { EBM_TOY_8GAUSSIANS, EBM_TOY_RINGS, EBM_TOY_CHECKERBOARD, EBM_TOY_MOONS, EBM_TOY_COUNT };
/* "8gaussians", "rings", "checkerboard", "moons", or NULL. */
EBMDEF const char *ebm_toy_name(int set);
/* The data box: [-4.5, 4.5]^2, or [-4, 4]^2 for the checkerboard. */
EBMDEF void ebm_toy_box(int set, float *lo, float *hi);
/* Points first .. first+n-1 of the set into xy (x, y pairs), each a pure
   function of (rng, its index). */
EBMDEF int ebm_toy_sample(int set, const ebm_rng *rng, uint64_t first, float *xy, int n);
/* The true log density at (x, y). */
EBMDEF double ebm_toy_logpdf(int set, double x, double y);
/* The log density of the set convolved with N(0, sigma^2 I): what denoising
   score matching at noise sigma learns. Exact for 8 Gaussians, moons and the
   checkerboard; for rings by a trapezoid rule on +-6 sigma (step sigma/3),
   accurate near the data (the test points), not far from it. */
EBMDEF double ebm_toy_logpdf_smoothed(int set, double sigma, double x, double y);
/* Exact NLL of the points xy[n] under p(x) = exp(f(x)) / Z on the box
   [lo, hi]^2 (a model with input (2, 1, 1) and one output), log Z from a
   res x res grid of cell centres. g must hold a forward of 256 points. */
EBMDEF int ebm_model_nll2d(ebm_model *m, ebm_graph *g, float lo, float hi, int res, const float *xy, int n,
                           double *nll, double *log_z);

/* ---------------------------------------------------------------- training */

/* Maximum-likelihood training (ALGORITHMS.md section 1): each iteration runs
   chains x- towards the model, takes the data batch x+ plus N(0, data_noise^2)
   noise, and descends L = mean f(x-) - mean f(x+). Where the chains start: */
enum { EBM_START_UNIFORM,   /* fresh U(lo, hi) noise every iteration (short-run) */
       EBM_START_GAUSSIAN,  /* fresh N(0, 1) noise every iteration */
       EBM_START_DATA,      /* the data batch, plus N(0, start_noise^2) (contrastive divergence) */
       EBM_START_PERSISTENT /* a replay buffer: each chain continues one of buffer_size
                               stored chains, restarted from noise with probability reinit */ };
enum { EBM_OPT_ADAM, EBM_OPT_SGD };
enum { EBM_LR_CONSTANT, EBM_LR_COSINE, EBM_LR_LINEAR }; /* from lr to lr_min over total_iters */
/* The objective (ALGORITHMS.md sections 1 and 5). Only EBM_OBJ_ML runs
   chains; the others need no sampling, and score matching needs a smooth
   net (SiLU, softplus, ELU: with LeakyReLU the Hessian in x is zero).
   With s = grad_x f the model's score and B the batch:
     ML      mean f(x-) - mean f(x+), x- from the chains
     DSM     1/(2B) sum |sigma_min s(x~) + xi|^2, x~ = x + sigma_l xi: denoising
             score matching. One level (n_sigmas = 1, sigma_l = sigma) is the
             usual loss times sigma^2. With n_sigmas > 1 the levels run
             geometrically from sigma_max down to sigma (sample i at level
             i mod n_sigmas) and the net is conditioned on the level as
             f_l = f sigma / sigma_l (NCSNv2's s(x, sigma) = s(x) / sigma), each
             term weighted by sigma_l^2: the same formula, f is the energy of
             the least noisy level.
     SSM     1/B sum [v.H v + (v.s)^2 / 2], H = grad_x s: sliced score matching,
             v Rademacher (the default) or Gaussian (proj); three nested derivatives
     SSM_VR  the variance-reduced form, (v.s)^2 / 2 replaced by |s|^2 / 2
     FD_SSM  SSM with v.H v and v.s from finite differences of f at x, x +- eps v
             (Pang et al. 2020): first derivatives only
     NCE     -1/B sum log sigmoid(u(x+)) - 1/B sum log sigmoid(-u(y)),
             u = f - c - log q_n: noise-contrastive estimation against a
             diagonal Gaussian q_n fitted to the data (ebm_trainer_fit_noise,
             else the first batch), y ~ q_n, c the learned log-normaliser
             (noise outside the box, where the model is 0, drops out). */
enum { EBM_OBJ_ML, EBM_OBJ_DSM, EBM_OBJ_SSM, EBM_OBJ_SSM_VR, EBM_OBJ_FD_SSM, EBM_OBJ_NCE, EBM_OBJ_COUNT };
enum { EBM_PROJ_GAUSSIAN, EBM_PROJ_RADEMACHER };
typedef struct ebm_train_config {
    int batch;           /* data points and chains per iteration */
    int start;           /* EBM_START_* */
    int restart;         /* noise for persistent restarts and fresh samples: EBM_START_UNIFORM or _GAUSSIAN */
    int buffer_size;     /* persistent: stored chains */
    float reinit;        /* persistent: restart probability */
    float start_noise;   /* data starts: std of the noise added */
    ebm_langevin chain;  /* the sampler; its box is the data box */
    int mala;            /* 1: Metropolis-adjusted chains (ebm_mala_run) */
    float data_noise;    /* std of the noise added to every data batch */
    float energy_reg;    /* alpha: adds alpha (mean f(x+)^2 + mean f(x-)^2) to the loss
                            (Du & Mordatch 2019), which keeps energies from running away */
    int optimizer;       /* EBM_OPT_* */
    float lr, beta1, beta2, momentum; /* Adam (beta1, beta2) or SGD (momentum) */
    int schedule;        /* EBM_LR_* */
    long warmup;         /* iterations of linear warm-up from 0 to lr */
    long total_iters;    /* length of the schedule */
    float lr_min;        /* the schedule's end */
    float max_abs_dt;    /* |d_t| above this is divergence */
    uint64_t seed;       /* keys every random number of the run */
    int objective;       /* EBM_OBJ_* */
    float sigma;         /* DSM: the noise (the smallest level) */
    int n_sigmas;        /* DSM: levels (1: one sigma) */
    float sigma_max;     /* DSM: the largest level */
    int proj;            /* SSM, SSM-VR, FD-SSM: EBM_PROJ_* */
    float fd_eps;        /* FD-SSM: the finite-difference step */
    int shards;          /* the batch is cut into this many equal shards, each one's gradient
                            summed on its own, then the shards' added in a fixed pairwise tree:
                            the unit of data parallelism (ebm_comm). Runs with the same shards
                            agree bit for bit on any number of workers that divides it. */
} ebm_train_config;

/* The short-run image recipe of ALGORITHMS.md section 2: batch 64, uniform
   starts, K = 100, step 1, noise 0.01, clamped to [-1, 1], data noise 0.03,
   Adam lr 1e-4 (0.9, 0.999), constant; persistent settings 10000 / 0.05. */
EBMDEF void ebm_train_config_default(ebm_train_config *c);
/* "uniform", "gaussian", "data", "persistent", or NULL. */
EBMDEF const char *ebm_start_name(int start);
/* "ml", "dsm", "ssm", "ssm-vr", "fd-ssm", "nce", or NULL. */
EBMDEF const char *ebm_objective_name(int objective);

/* Data parallelism without a dependency: the caller's message passing,
   e.g. MPI's. Worker `rank` of `size` computes shards rank*S/size ..
   (rank+1)*S/size - 1 of each batch (S = cfg.shards, a multiple of size):
   the global samples iter*batch + rank*batch/size on, whose batch/size data
   points it passes to ebm_trainer_step. allgather must fill buf's `size`
   blocks of `bytes` bytes each, block r from worker r, on every worker (its
   own block is in place: MPI_Allgather with MPI_IN_PLACE); 0 on success.
   Every worker then holds every shard's gradient and adds them in the same
   order as one process would, so the model does not depend on size. */
typedef struct ebm_comm {
    int rank, size;
    int (*allgather)(void *user, void *buf, size_t bytes);
    void *user;
} ebm_comm;

/* A trainer: the model (not owned), its graph and buffers (owned), the
   iteration count and the last iteration's diagnostics. */
typedef struct ebm_trainer {
    ebm_train_config cfg;
    ebm_model *model;
    ebm_graph *graph;
    float *x, *w;       /* three batches ([x-; x+], FD-SSM's [x + eps v; x - eps v; x], score
                           matching's inputs) and a loss weight per sample */
    float *buffer;      /* persistent chains, buffer_size samples (ML only) */
    long iter;          /* iterations completed */
    float lr_scale;     /* multiplies the schedule (lowered by a rollback) */
    double d_t;         /* mean f(x+) - mean f(x-) (ML, NCE; 0 for score matching) */
    double r_t;         /* mean |grad_x f| along the chains (score matching: at the data, where computed; else 0) */
    double f_pos, f_neg, accept, lr;
    double loss;        /* the objective's value at the last iteration */
    float *noise_mu, *noise_sd; /* NCE: the fitted Gaussian (D values each) */
    int noise_fitted;
    float nce_c, nce_m1, nce_m2; /* NCE: the log-normaliser and its Adam moments */
    float nce_grad;     /* NCE: dL/dc at the last iteration */
    ebm_comm comm;      /* the workers (one by default) */
    float *partial;     /* shards > 1: each shard's gradient (shards x n_params) */
    double *diag;       /* each shard's part of the diagnostics */
    float *neg;         /* persistent ML: the batch's chains, for the buffer */
    ebm_error err;      /* why the last call failed */
} ebm_trainer;

/* The memory a trainer for model m with settings c will hold: the model's
   blocks (parameters, gradients, Adam moments), the graph arena (the larger
   of a Langevin step on a batch and the objective's update), the batches
   and the replay buffer. A training process's peak is this plus its data. */
EBMDEF int ebm_trainer_memory(ebm_model *m, const ebm_train_config *c, size_t *bytes, ebm_error *err);
/* Set up a trainer for an allocated model m with settings c: EBM_EINVAL,
   with the reason, for a setting out of its range (ML's chain settings
   too, checked here rather than at the first step). */
EBMDEF int ebm_trainer_init(ebm_trainer *t, ebm_model *m, const ebm_train_config *c, ebm_error *err);
EBMDEF void ebm_trainer_free(ebm_trainer *t);
/* Make t one of comm->size workers (see ebm_comm); comm is copied. */
EBMDEF int ebm_trainer_set_comm(ebm_trainer *t, const ebm_comm *comm);
/* One iteration on the data batch x_data (batch samples, (N,H,W,C), in the
   box; batch / comm.size of them, this worker's, when there are several). Sample i of iteration t has global index t*batch + i, which keys its
   noise, so a run is a pure function of the seed and the data order. Returns
   EBM_EDIVERGED (and leaves the model as it was before the iteration) when an
   energy, gradient or sample is not finite or |d_t| > max_abs_dt. */
EBMDEF int ebm_trainer_step(ebm_trainer *t, const float *x_data);
/* NCE: fit the noise q_n (per-coordinate mean and standard deviation) to n
   data points; without it the first batch is used. */
EBMDEF int ebm_trainer_fit_noise(ebm_trainer *t, const float *x, int n);
/* The objective's value and its gradient in t->model->grads (zeroed first)
   at iteration `iter`'s random numbers, without a step: for checking. */
EBMDEF int ebm_trainer_loss(ebm_trainer *t, const float *x_data, long iter, double *loss);
/* The learning rate of the next iteration (schedule times lr_scale). */
EBMDEF float ebm_trainer_lr(const ebm_trainer *t);
/* n fresh samples, started as the recipe starts its chains (noise; for data
   starts, the given x_data; persistent recipes from their restart noise,
   never the buffer), run n_steps (for DSM on several levels: annealed
   Langevin, the steps spread over the levels, the chain's eps - or noise -
   the last level's noise, scaled by sigma_l / sigma on the others). Samples first.. of their own streams, so
   the same first gives the same starting noise and Langevin noise whenever
   it is called. */
EBMDEF int ebm_trainer_sample(ebm_trainer *t, uint64_t first, const float *x_data, float *x, int n, int n_steps);
/* Fill x (n samples of D floats) with U(lo, hi) (EBM_START_UNIFORM; lo < hi,
   both finite) or N(0, 1) (EBM_START_GAUSSIAN; lo and hi unused) noise for
   samples first.. at the given step. */
EBMDEF int ebm_chain_start(int kind, const ebm_rng *r, uint64_t first, uint32_t step, float lo, float hi, float *x, int n, size_t D);

/* Every writer has a form that gives its bytes to a function instead of a
   file (ebm_*_write; the files' ebm_*_save are built on them), and every
   reader a form that reads bytes in memory (ebm_*_read): for programs
   without a file system (EBM_NO_STDIO leaves the file functions out), or
   that keep a checkpoint in memory or send it elsewhere. The function gets
   the bytes in order and returns 0 when it has taken all n of them. */
typedef int (*ebm_write_fn)(void *user, const void *data, size_t n);

/* Checkpoints (crash-safe: written to <path>.tmp, synced, then renamed;
   CRC-32 checked on load; a model or buffer holding a NaN or an infinity is
   refused with EBM_EDIVERGED, so it never replaces a good checkpoint). A trainer's holds everything to continue bit-identically:
   model, optimiser moments, settings, iteration, replay buffer. */
#ifndef EBM_NO_STDIO
EBMDEF int ebm_trainer_save(const ebm_trainer *t, const char *path, ebm_error *err);
/* Build model m (uninitialised; it is overwritten) and trainer t from a
   checkpoint. The caller frees both. */
EBMDEF int ebm_trainer_load(ebm_trainer *t, ebm_model *m, const char *path, ebm_error *err);
/* A model alone: save, or build m (uninitialised) from any checkpoint. */
EBMDEF int ebm_model_save(const ebm_model *m, const char *path, ebm_error *err);
EBMDEF int ebm_model_load(ebm_model *m, const char *path, ebm_error *err);
#endif
/* The same bytes to fn, and the same checks from len bytes at buf. */
EBMDEF int ebm_trainer_write(const ebm_trainer *t, ebm_write_fn fn, void *user, ebm_error *err);
EBMDEF int ebm_trainer_read(ebm_trainer *t, ebm_model *m, const void *buf, size_t len, ebm_error *err);
EBMDEF int ebm_model_write(const ebm_model *m, ebm_write_fn fn, void *user, ebm_error *err);
EBMDEF int ebm_model_read(ebm_model *m, const void *buf, size_t len, ebm_error *err);

/* ---------------------------------------------------------------- the chain as a generator */

/* A short-run chain x_K = M(z, u) (ALGORITHMS.md section 3) is a generator of
   its initial noise z and Langevin noise u (u keyed by rng and the sample
   indices). ebm_chain_record runs cfg->n_steps unadjusted steps from z
   (n samples) like ebm_langevin_run and keeps every state: states holds
   (K + 1) n D floats, states[k n D ..] = x_k; x_K is the last block.
   ebm_chain_backward then maps dL/dx_K (gK, n D floats) to dL/dz (gz) by
   reverse mode through every step: dL/dx_k = J_k^T dL/dx_{k+1} with
   J_k = B_k ((1 - a / sigma_q^2) I + a H(x_k)), H the Hessian of f (a
   Hessian-vector product per step) and B_k the box's derivative (1 inside,
   0 where clamped, -1 where reflected). For a piecewise-linear net (LeakyReLU,
   pooling) H = 0 almost everywhere and the product is skipped: J_k = B_k
   (1 - a / sigma_q^2) I, the identity inside the box without a reference
   density (ALGORITHMS.md section 3's caveat). Size g for EBM_STEP_SECOND_ORDER.
   kept (may be NULL) trades memory for time: ebm_chain_kept_floats floats in
   which the record keeps every step's conv-layer outputs, so that the
   backward pass reads them instead of recomputing them (one forward pass in
   four of its work). It is 0 where nothing is kept, and kept is then
   ignored: piecewise-linear nets, max-pooling, a reflecting wall, STANLEY,
   or a LeakyReLU fused into a conv (whose output is not the conv's). */
EBMDEF size_t ebm_chain_kept_floats(const ebm_model *m, const ebm_langevin *cfg, int n);
EBMDEF int ebm_chain_record(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                            const float *z, int n, float *states, float *kept);
EBMDEF int ebm_chain_backward(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                              const float *states, const float *kept, int n, const float *gK, float *gz);

/* Reconstruct images (n samples) by gradient descent on the chain's initial
   noise z (in/out; start it as the recipe starts its chains): each of n_iters
   steps (optimizer EBM_OPT_ADAM: Adam with betas 0.9 / 0.999, or
   EBM_OPT_SGD: plain gradient descent, at lr) runs the chain and descends the
   mean squared error of x_K against what is known of the images (kind as for
   ebm_langevin_conditional below):
     EBM_KNOWN_PIXELS     target n D values, compared where mask is 1 (mask
                          NULL: everywhere; 0/1 per coordinate: inpainting);
     EBM_KNOWN_DOWNSAMPLE target the (n, H/2, W/2, C) image, compared with
                          x_K's 2x2 means (super-resolution); mask unused.
   x_out (may be NULL) receives the final x_K, *mse its error on what is known.
   Allocates (K + 4) n D floats for the duration of the call, and the chain's
   kept activations (ebm_chain_kept_floats) when there is memory for them. */
enum { EBM_KNOWN_PIXELS, EBM_KNOWN_DOWNSAMPLE };
EBMDEF int ebm_chain_reconstruct(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                                 int kind, const float *target, const float *mask, int n, float *z, int n_iters, int optimizer,
                                 float lr, float *x_out, double *mse);
/* Initial noises between z1 and z2 (D floats each) at rho in [0, 1]: linear
   (1 - rho) z1 + rho z2 for uniform noise, or spherical for Gaussian noise,
   c z1 + sqrt(1 - c^2) z2 with c = cos(rho pi/2), which keeps N(0, I). */
EBMDEF void ebm_noise_interpolate(const float *z1, const float *z2, size_t D, float rho, int spherical, float *out);

/* Conditional Langevin: after every step of ebm_langevin_run the chain is
   put back on the set of images consistent with what is known:
     EBM_KNOWN_PIXELS     x = known where mask is 1 (inpainting; known and
                          mask are n D values, mask 0/1);
     EBM_KNOWN_DOWNSAMPLE each 2x2 block is shifted so that its mean equals
                          the known (n, H/2, W/2, C) image (2x super-resolution:
                          the orthogonal projection onto images with that
                          average-pooled copy); mask unused.
   The projection is applied to x first, so the chain starts consistent.
   kind | EBM_KNOWN_ANNEALED: what is known is reached along the chain
   instead: step k projects onto known_k = (1 - w_k) z + w_k known,
   w_k = (k + 1) / K, with z what x holds at the start (its 2x2 means for
   super-resolution). A short-run chain then stays among the states it was
   trained on (part noise, part image) and ends on what is known; on
   Fashion-MNIST it lowers the error on unknown pixels 1.1-2.6x (README).
   Allocates n D floats for the duration of the call. */
#define EBM_KNOWN_ANNEALED 0x100
EBMDEF int ebm_langevin_conditional(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng,
                                    uint64_t first_sample, float *x, int n, int kind, const float *known, const float *mask);
/* 2x2 average pooling of n images (n, h, w, c), h and w even, into
   (n, h/2, w/2, c): the low-resolution copy super-resolution starts from.
   EBM_EINVAL, writing nothing, for a NULL array, n < 0, c < 1, or an odd
   or empty h or w (an odd side has no 2x2 cells to cover its last row). */
EBMDEF int ebm_downsample2(const float *x, int n, int h, int w, int c, float *out);
/* The built-in inpainting masks, 1 where a pixel is known (every channel alike):
   EBM_MASK_CENTER the centre square of half the side is unknown; EBM_MASK_LOWER
   the lower half is unknown; EBM_MASK_RANDOM each pixel is unknown with
   probability 1/2, drawn for image first+i at (r, first+i). */
enum { EBM_MASK_CENTER, EBM_MASK_LOWER, EBM_MASK_RANDOM };
EBMDEF int ebm_inpaint_mask(int kind, const ebm_rng *r, uint64_t first, int n, int h, int w, int c, float *mask);
/* The area under the ROC curve of an anomaly score: the probability that a
   score of `anomalous` exceeds one of `normal` (ties count 1/2), from ranks,
   O((n + m) log(n + m)). Returns -1 when out of memory or a set is empty. */
EBMDEF double ebm_auroc(const float *normal, int n_normal, const float *anomalous, int n_anomalous);

/* ---------------------------------------------------------------- latent-space EBM prior */

/* A top-down generator x = g_beta(z) + N(0, sigma^2 I) with an EBM prior
   p_alpha(z) = exp(f_alpha(z)) N(z; 0, I) / Z on its latent vector (Pang et
   al. 2020; ALGORITHMS.md section 6), learned together by maximum
   likelihood with short-run Langevin chains in latent space:
     prior chain:     z += (s^2/2) grad_z[f(z) - |z|^2/2] + s xi
     posterior chain: z += (s^2/2) grad_z[f(z) - |z|^2/2 - |x - g(z)|^2 / (2 sigma^2)] + s xi
   both started from N(0, I). An iteration draws z+ from the posterior of
   the data batch and z- from the prior, then takes an Adam step on
   alpha with mean f(z-) - mean f(z+) (the EBM's maximum-likelihood loss)
   and one on beta with mean |x - g(z+)|^2 / (2 sigma^2). The prior is any
   model mapping (nz,1,1) to one value (ebm_model_mlp_prior), the generator
   any model mapping (nz,1,1) to an image (ebm_model_generator28). */
typedef struct ebm_latent_config {
    int batch;                 /* data points per iteration (default 64) */
    int prior_steps;           /* prior chain: K (60) ... */
    float prior_step;          /* ... and s (0.4) */
    int post_steps;            /* posterior chain: K (20) ... */
    float post_step;           /* ... and s (0.1) */
    float sigma;               /* std of x given z (0.3) */
    float lr_prior, lr_gen;    /* Adam learning rates (2e-5, 1e-4) */
    float beta1, beta2;        /* Adam's betas for both (0.5, 0.999) */
    uint64_t seed;             /* keys every chain's noise */
} ebm_latent_config;

typedef struct ebm_latent {
    ebm_latent_config cfg;
    ebm_model *prior, *gen;    /* not owned */
    ebm_graph *graph;
    float *z;                  /* two batches of latents: [z-; z+] */
    float *f, *dz, *w;         /* energies, gradients in z, loss weights */
    long iter;                 /* iterations completed */
    double mse;                /* mean squared error per pixel of g(z+) at the last iteration */
    double f_pos, f_neg, d_t;  /* mean f(z+), mean f(z-), their difference */
    ebm_error err;
} ebm_latent;

/* The paper's settings (above). */
EBMDEF void ebm_latent_config_default(ebm_latent_config *c);
/* Set up a latent EBM on an allocated prior and generator (both (nz,1,1)
   inputs, the prior one output). */
EBMDEF int ebm_latent_init(ebm_latent *L, ebm_model *prior, ebm_model *gen, const ebm_latent_config *c, ebm_error *err);
EBMDEF void ebm_latent_free(ebm_latent *L);
/* n_steps of the prior chain (n_steps < 0: cfg's K) on z (n x nz) in place;
   the noise of sample i at step k is drawn at (seed, stream, first + i, k). */
EBMDEF int ebm_latent_prior_chain(ebm_latent *L, uint32_t stream, uint64_t first, float *z, int n, int n_steps);
/* The same for the posterior chain given images x (n, H, W, C). */
EBMDEF int ebm_latent_posterior_chain(ebm_latent *L, uint32_t stream, uint64_t first, const float *x, float *z, int n, int n_steps);
/* x = g(z) for n latents. */
EBMDEF int ebm_latent_generate(ebm_latent *L, const float *z, int n, float *x);
/* sum_i |x_i - g(z_i)|^2 / (2 sigma^2) in *nll; its gradient in beta in
   gen->grads (zeroed first) and, if dz is not NULL, in z (n x nz). */
EBMDEF int ebm_latent_nll(ebm_latent *L, const float *x, const float *z, int n, double *nll, float *dz);
/* One iteration on the data batch x (batch images in [-1, 1]). Returns
   EBM_EDIVERGED, leaving both models as they were, on non-finite values. */
EBMDEF int ebm_latent_step(ebm_latent *L, const float *x);
/* n new images: N(0, I) noise for samples first.., the prior chain, g.
   z (n x nz, may be NULL) receives the latents. */
EBMDEF int ebm_latent_sample(ebm_latent *L, uint64_t first, float *x, int n, float *z);
/* Reconstructions xr of n images x: the posterior chain from N(0, I) (K
   steps, noise of samples first..), then g. */
EBMDEF int ebm_latent_reconstruct(ebm_latent *L, uint64_t first, const float *x, float *xr, int n);
/* Checkpoints of both models, their Adam moments, the settings and the
   iteration (the trainer's crash-safe format; ebm_model_load reads the
   generator out of one). ebm_latent_load builds prior and gen; the caller
   frees them and L. */
#ifndef EBM_NO_STDIO
EBMDEF int ebm_latent_save(const ebm_latent *L, const char *path, ebm_error *err);
EBMDEF int ebm_latent_load(ebm_latent *L, ebm_model *prior, ebm_model *gen, const char *path, ebm_error *err);
#endif
EBMDEF int ebm_latent_write(const ebm_latent *L, ebm_write_fn fn, void *user, ebm_error *err);
EBMDEF int ebm_latent_read(ebm_latent *L, ebm_model *prior, ebm_model *gen, const void *buf, size_t len, ebm_error *err);

/* ---------------------------------------------------------------- data sets */

/* Images as bytes, channels last (n, h, w, c), with labels 0..n_classes-1. */
typedef struct ebm_dataset {
    int n, h, w, c, n_classes;
    unsigned char *pixels;
    int *labels; /* NULL when loaded without labels */
} ebm_dataset;

#ifndef EBM_DATA_MAX_BYTES /* the most bytes a data file may declare */
#define EBM_DATA_MAX_BYTES ((size_t)1 << 30)
#endif
#ifndef EBM_CKPT_MAX_BYTES
#define EBM_CKPT_MAX_BYTES ((size_t)1 << 32)
#endif
#ifndef EBM_FASHION_MNIST_DIR /* where Debian's dataset-fashion-mnist puts it */
#define EBM_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#endif

/* IDX images (3 dimensions) and optional labels (1), gzip or raw (no zlib:
   ebm.h carries its own inflate). Memory is the size the header declares,
   checked against EBM_DATA_MAX_BYTES; a stream that holds more or less is an error. */
#ifndef EBM_NO_STDIO
EBMDEF int ebm_idx_load(ebm_dataset *ds, const char *images_path, const char *labels_path, ebm_error *err);
/* MNIST or Fashion-MNIST from a directory with the standard file names
   (.gz or not); dir NULL means EBM_FASHION_MNIST_DIR; test 0 = train, 1 = t10k. */
EBMDEF int ebm_mnist_load(ebm_dataset *ds, const char *dir, int test, ebm_error *err);
/* CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin), concatenated. */
EBMDEF int ebm_cifar10_load(ebm_dataset *ds, const char *const *paths, int n_paths, ebm_error *err);
#endif
/* The same from bytes in memory (labels may be NULL; n_bufs batches). */
EBMDEF int ebm_idx_read(ebm_dataset *ds, const void *images, size_t images_len, const void *labels, size_t labels_len, ebm_error *err);
EBMDEF int ebm_cifar10_read(ebm_dataset *ds, const void *const *bufs, const size_t *lens, int n_bufs, ebm_error *err);
EBMDEF void ebm_dataset_free(ebm_dataset *ds);
/* A batch by global sample index: sample first+i is image idx(r, first+i),
   drawn uniformly with replacement, as floats in [-1, 1]; labels may be NULL. */
EBMDEF int ebm_dataset_batch(const ebm_dataset *ds, const ebm_rng *r, uint64_t first, int n, float *x, int *labels);
/* Images first .. first+n-1 in order, as floats in [-1, 1]. */
EBMDEF void ebm_dataset_get(const ebm_dataset *ds, int first, int n, float *x);

/* ---------------------------------------------------------------- files */

#ifndef EBM_NO_STDIO
/* Write a float32 little-endian NPY file of the given shape. */
EBMDEF int ebm_npy_save(const char *path, const float *data, int ndim, const int *shape, ebm_error *err);
/* Read a float32 little-endian C-order NPY file of 1..4 dimensions: *data
   (free with EBM_FREE / free) and shape[4]; at most EBM_DATA_MAX_BYTES. */
EBMDEF int ebm_npy_load(const char *path, float **data, int *ndim, int shape[4], ebm_error *err);
/* 8-bit PNG (channels 1 = grey, 3 = RGB), rows top to bottom; description
   (may be NULL) goes in a tEXt chunk. */
EBMDEF int ebm_png_save(const char *path, const unsigned char *pixels, int w, int h, int channels, const char *description,
                        ebm_error *err);
/* n images (N,H,W,C) in [-1, 1] as a grid of cols columns, label (may be
   NULL) written above it and in the file's description. */
EBMDEF int ebm_png_save_grid(const char *path, const float *x, int n, int h, int w, int c, int cols, const char *label,
                             ebm_error *err);
/* n_series curves y[s*n + i], one panel each with its name, range and zero
   line; each pixel column shows the band and the mean of its points. */
EBMDEF int ebm_png_save_plot(const char *path, const float *y, int n_series, int n, const char *const *names, ebm_error *err);
#endif
/* NPY and PNG through a write function, and NPY from memory. */
EBMDEF int ebm_npy_write(ebm_write_fn fn, void *user, const float *data, int ndim, const int *shape, ebm_error *err);
EBMDEF int ebm_npy_read(const void *buf, size_t len, float **data, int *ndim, int shape[4], ebm_error *err);
EBMDEF int ebm_png_write(ebm_write_fn fn, void *user, const unsigned char *pixels, int w, int h, int channels, const char *description,
                         ebm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* EBM_H */

/* ======================================================================= */
/*                            IMPLEMENTATION                               */
/* ======================================================================= */
#ifdef EBM_IMPLEMENTATION
#ifndef EBM_IMPLEMENTATION_DONE
#define EBM_IMPLEMENTATION_DONE

/* clang contracts a * b + c into one FMA by default (-ffp-contract=on),
   which changes the bits a scalar kernel and its SIMD twin agree on; so the
   implementation turns contraction off for itself, and the code after it
   gets the user's setting back. (It cannot override -ffp-contract=fast or
   -ffast-math; g++ and gcc need -ffp-contract=off, above.) */
#if defined(__clang__) && __clang_major__ >= 13
#pragma float_control(push)
#pragma clang fp contract(off)
#define EBM__FP_PUSHED
#endif

#include <math.h>
#include <string.h>
#include <stdarg.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---------------------------------------------------------------- 1. platform */

#if defined(EBM_MALLOC) != defined(EBM_FREE)
#error "define both EBM_MALLOC and EBM_FREE, or neither"
#endif
#ifndef EBM_MALLOC
#include <stdlib.h>
#define EBM_MALLOC(n) malloc(n)
#define EBM_FREE(p) free(p)
#endif
#ifndef EBM_ASSERT
#include <assert.h>
#define EBM_ASSERT(c) assert(c)
#endif

/* A parallel loop over a fixed set of n tiles: each iteration writes its own
   outputs, so the result cannot depend on which thread ran it. The tiles
   are handed out in chunks of about n / (8 threads) as threads come free,
   not split in halves up front: on a shared machine one core often runs
   slower than the other (1.7x slower in one measurement here), and a
   static split waits for the slower. `c` false keeps the loop on one thread
   when the work is too small to share. */
#ifdef _OPENMP
#define EBM__PRAGMA(x) _Pragma(#x)
#define EBM__PARALLEL_FOR(n, c) EBM__PRAGMA(omp parallel for schedule(dynamic, ebm__tile_chunk(n)) if(c))
#else
#define EBM__PARALLEL_FOR(n, c)
#endif

/* The scalar reference twins: the definitions the tests compare the fast
   kernels with. EBM__PREFETCH: a cache hint where the compiler has one;
   EBM__PREFETCH_W: the same for a line about to be written. */
#if defined(__GNUC__) || defined(__clang__)
#define EBM__REFERENCE static __attribute__((unused))
#define EBM__PREFETCH(p) __builtin_prefetch(p)
#define EBM__PREFETCH_W(p) __builtin_prefetch(p, 1)
#else
#define EBM__REFERENCE static
#define EBM__PREFETCH(p) ((void)(p))
#define EBM__PREFETCH_W(p) ((void)(p))
#endif

EBMDEF const char *ebm_status_name(int s)
{
    switch (s) {
    case EBM_OK: return "EBM_OK";
    case EBM_EINVAL: return "EBM_EINVAL";
    case EBM_ENOMEM: return "EBM_ENOMEM";
    case EBM_EIO: return "EBM_EIO";
    case EBM_EFORMAT: return "EBM_EFORMAT";
    case EBM_EDIVERGED: return "EBM_EDIVERGED";
    case EBM_EUNSUPPORTED: return "EBM_EUNSUPPORTED";
    default: return "EBM_E?";
    }
}

/* Fill an error record (if any) and return the status: every failure goes through here. */
static int ebm__fail(ebm_error *e, int status, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->status = status;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

static void ebm__ok(ebm_error *e)
{
    if (e) { e->status = EBM_OK; e->msg[0] = 0; }
}

EBMDEF double ebm_time_sec(void)
{
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#elif defined(_OPENMP)
    return omp_get_wtime();
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

EBMDEF int ebm_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#ifdef _OPENMP
/* Tiles per grab in an EBM__PARALLEL_FOR loop: about 8 grabs per thread. */
static long ebm__tile_chunk(long n_tiles)
{
    const long c = n_tiles / (8L * ebm_threads());
    return c > 0 ? c : 1;
}
#endif

EBMDEF void ebm_set_threads(int n)
{
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---------------------------------------------------------------- 2. random */
/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
   SC 2011): ten rounds of a 32x32->64-bit multiply-xor permutation of a 128-bit
   counter under a 64-bit key. We key it with the seed and count with
   (coordinate / 4, step, sample, stream): each block of 4 values belongs to one
   position, so no generator state exists to share between threads. */

#define EBM__PHILOX_M0 0xD2511F53u
#define EBM__PHILOX_M1 0xCD9E8D57u
#define EBM__PHILOX_W0 0x9E3779B9u
#define EBM__PHILOX_W1 0xBB67AE85u

EBMDEF void ebm_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3], k0 = key[0], k1 = key[1];
    int r;
    for (r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)EBM__PHILOX_M0 * x0, p1 = (uint64_t)EBM__PHILOX_M1 * x2;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x1 = (uint32_t)p1; x3 = (uint32_t)p0; x0 = y0; x2 = y2;
        k0 += EBM__PHILOX_W0; k1 += EBM__PHILOX_W1;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}

/* The same permutation on 16 counters at once (only the first word differs),
   written as plain loops over lanes so the compiler vectorises them. */
#define EBM__LANES 16
static void ebm__philox_lanes(uint32_t first_block, uint32_t c1, uint32_t c2, uint32_t c3,
                              uint32_t k0, uint32_t k1, uint32_t o[4][EBM__LANES], int nl)
{
    uint32_t x0[EBM__LANES], x1[EBM__LANES], x2[EBM__LANES], x3[EBM__LANES];
    int i, r;
    for (i = 0; i < nl; i++) { x0[i] = first_block + (uint32_t)i; x1[i] = c1; x2[i] = c2; x3[i] = c3; }
    for (r = 0; r < 10; r++) {
        for (i = 0; i < nl; i++) {
            uint64_t p0 = (uint64_t)EBM__PHILOX_M0 * x0[i], p1 = (uint64_t)EBM__PHILOX_M1 * x2[i];
            uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1[i] ^ k0, y2 = (uint32_t)(p0 >> 32) ^ x3[i] ^ k1;
            x1[i] = (uint32_t)p1; x3[i] = (uint32_t)p0; x0[i] = y0; x2[i] = y2;
        }
        k0 += EBM__PHILOX_W0; k1 += EBM__PHILOX_W1;
    }
    for (i = 0; i < nl; i++) { o[0][i] = x0[i]; o[1][i] = x1[i]; o[2][i] = x2[i]; o[3][i] = x3[i]; }
}

/* Small functions called inside loops that must vectorise: inlined, so the
   vectoriser sees their bodies. */
#if defined(__GNUC__)
#define EBM__INLINE static inline __attribute__((always_inline))
#else
#define EBM__INLINE static inline
#endif

/* 24 random bits -> [0, 1) exactly representable. */
EBM__INLINE float ebm__u01(uint32_t u) { return (float)(u >> 8) * (1.0f / 16777216.0f); }

/* log(x) for a positive normal float, branch-free so that loops over it
   vectorise (Cephes-style: x = m 2^e with m in [sqrt(1/2), sqrt(2)), a
   degree-9 polynomial for log(1+t)). Error ~1 ulp. */
EBM__INLINE float ebm__logf(float x)
{
    uint32_t u, mb;
    float m, t, z, y, e;
    int ei;
    memcpy(&u, &x, 4);
    ei = (int)((u >> 23) & 0xffu) - 126;
    mb = (u & 0x007fffffu) | 0x3f000000u; /* m in [0.5, 1) */
    memcpy(&m, &mb, 4);
    ei -= (m < 0.70710678f) ? 1 : 0;
    m = (m < 0.70710678f) ? m + m : m;
    t = m - 1.0f;
    e = (float)ei;
    z = t * t;
    y = 7.0376836292e-2f;
    y = y * t - 1.1514610310e-1f;
    y = y * t + 1.1676998740e-1f;
    y = y * t - 1.2420140846e-1f;
    y = y * t + 1.4249322787e-1f;
    y = y * t - 1.6668057665e-1f;
    y = y * t + 2.0000714765e-1f;
    y = y * t - 2.4999993993e-1f;
    y = y * t + 3.3333331174e-1f;
    y = y * t * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return t + y + 0.693359375f * e;
}

/* cos and sin of 2 pi u for u in [0, 1), branch-free: the quadrant
   k = floor(4u) picks a rotation by (k + 1/2) pi/2, the remainder a in
   [-pi/4, pi/4) goes through Taylor polynomials (error < 4e-8). */
EBM__INLINE void ebm__cossin2pi(float u, float *c, float *s)
{
    float q = u * 4.0f, a, a2, ca, sa, c0, s0;
    int k = (int)q;
    k = k > 3 ? 3 : k;
    a = (q - (float)k - 0.5f) * 1.57079632679f;
    a2 = a * a;
    ca = 1.0f + a2 * (-0.5f + a2 * (1.0f / 24 + a2 * (-1.0f / 720 + a2 * (1.0f / 40320))));
    sa = a * (1.0f + a2 * (-1.0f / 6 + a2 * (1.0f / 120 + a2 * (-1.0f / 5040 + a2 * (1.0f / 362880)))));
    c0 = (float)(1 - 2 * (((k + 1) >> 1) & 1)) * 0.70710678118f; /* cos((k+1/2) pi/2) */
    s0 = (float)(1 - 2 * (k >> 1)) * 0.70710678118f;             /* sin((k+1/2) pi/2) */
    *c = c0 * ca - s0 * sa;
    *s = s0 * ca + c0 * sa;
}

static void ebm__key(const ebm_rng *r, uint32_t *k0, uint32_t *k1)
{
    *k0 = (uint32_t)r->seed;
    *k1 = (uint32_t)(r->seed >> 32);
}

EBMDEF void ebm_rng_uniform(const ebm_rng *r, uint64_t sample, uint32_t step,
                            float lo, float hi, float *out, size_t n)
{
    uint32_t k0, k1, o[4][EBM__LANES];
    size_t base = 0;
    float span = hi - lo;
    ebm__key(r, &k0, &k1);
    while (base < n) {
        size_t i, m = n - base < 4 * EBM__LANES ? n - base : 4 * EBM__LANES;
        ebm__philox_lanes((uint32_t)(base / 4), step, (uint32_t)sample, r->stream, k0, k1, o, (int)((m + 3) / 4));
        for (i = 0; i < m; i++) out[base + i] = lo + span * ebm__u01(o[i & 3][i >> 2]);
        base += m;
    }
}

/* v[i] = sqrt(v[i]), i < n, with the SIMD unit (defined with the kernels).
   sqrt is correctly rounded everywhere, so the bits are the scalar ones;
   sqrtf itself does not vectorise, as it may set errno. */
static void ebm__sqrt_lanes(float *v, int n);

/* Normals for coordinates coord0 .. coord0+n-1 (coord0 a multiple of 4).
   Box-Muller in passes over the lanes (logs, square roots, rotations), each
   a loop the compiler vectorises: this is the sampler's main own cost. */
static void ebm__rng_normal_at(const ebm_rng *r, uint64_t sample, uint32_t step, size_t coord0, float *out, size_t n)
{
    uint32_t k0, k1, o[4][EBM__LANES];
    float z[4][EBM__LANES], rad[2 * EBM__LANES];
    size_t base = 0;
    EBM_ASSERT(coord0 % 4 == 0);
    ebm__key(r, &k0, &k1);
    while (base < n) {
        size_t i, m = n - base < 4 * EBM__LANES ? n - base : 4 * EBM__LANES;
        int l;
        int nl = (int)((m + 3) / 4); /* only the lanes a short tail needs (a 2-D point: one) */
        ebm__philox_lanes((uint32_t)((coord0 + base) / 4), step, (uint32_t)sample, r->stream, k0, k1, o, nl);
        /* radii from (u0, u2) in (0, 1], so the log is finite; angles from (u1, u3) */
        for (l = 0; l < nl; l++) {
            rad[l] = -2.0f * ebm__logf(ebm__u01(o[0][l]) + (1.0f / 16777216.0f));
            rad[EBM__LANES + l] = -2.0f * ebm__logf(ebm__u01(o[2][l]) + (1.0f / 16777216.0f));
        }
        ebm__sqrt_lanes(rad, nl);
        ebm__sqrt_lanes(rad + EBM__LANES, nl);
        for (l = 0; l < nl; l++) {
            float ca, sa, cb, sb;
            ebm__cossin2pi(ebm__u01(o[1][l]), &ca, &sa);
            ebm__cossin2pi(ebm__u01(o[3][l]), &cb, &sb);
            z[0][l] = rad[l] * ca; z[1][l] = rad[l] * sa;
            z[2][l] = rad[EBM__LANES + l] * cb; z[3][l] = rad[EBM__LANES + l] * sb;
        }
        for (i = 0; i < m; i++) out[base + i] = z[i & 3][i >> 2];
        base += m;
    }
}

EBMDEF void ebm_rng_normal(const ebm_rng *r, uint64_t sample, uint32_t step, float *out, size_t n)
{
    ebm__rng_normal_at(r, sample, step, 0, out, n);
}

/* ---------------------------------------------------------------- 3. arena */
/* One block per graph. Everything a step creates (tape nodes, tensors,
   scratch) is pushed here and dropped at once by ebm_graph_reset: no malloc on
   the per-step path. A "measuring" arena holds only the nodes and counts the
   tensor bytes, which is how ebm_model_step_bytes knows a step's size exactly. */
typedef struct ebm__arena {
    unsigned char *base;
    size_t size, used, peak;
} ebm__arena;

#define EBM__ALIGN 64
static size_t ebm__round(size_t n) { return (n + (EBM__ALIGN - 1)) & ~(size_t)(EBM__ALIGN - 1); }

static void *ebm__arena_push(ebm__arena *a, size_t n)
{
    size_t need = ebm__round(n);
    void *p;
    if (need > a->size - a->used) return NULL;
    p = a->base + a->used;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

/* ---------------------------------------------------------------- 4. kernels */
/* Layout: activations (N,H,W,C), channels last, so the innermost loop of every
   convolution pass runs over contiguous channels; conv weights (K,K,Ci,Co).
   Three passes share one geometry: forward y = F(x, w), input gradient
   gx = D(gy, w) (also the transposed convolution) and weight gradient
   gw = G(x, gy). Each has a scalar reference twin that the tests compare with.
   Parallel loops run over output tiles (rows of the output), each owned by one
   iteration, so threads never share an accumulator. */

typedef struct ebm__cgeom {
    int n, hx, wx, cx; /* the conv's input  (x side) */
    int hy, wy, cy;    /* the conv's output (y side) */
    int k, s, p;
} ebm__cgeom;

/* --- scalar references: the definition of each pass, nothing else --- */

EBM__REFERENCE void ebm__conv_fwd_ref(const ebm__cgeom *G, const float *x, const float *w, const float *b, float *y)
{
    int n, ho, wo, co, kh, kw, ci;
    for (n = 0; n < G->n; n++)
        for (ho = 0; ho < G->hy; ho++)
            for (wo = 0; wo < G->wy; wo++)
                for (co = 0; co < G->cy; co++) {
                    float acc = 0.0f;
                    for (kh = 0; kh < G->k; kh++)
                        for (kw = 0; kw < G->k; kw++) {
                            int hi = ho * G->s + kh - G->p, wi = wo * G->s + kw - G->p;
                            if (hi < 0 || hi >= G->hx || wi < 0 || wi >= G->wx) continue;
                            for (ci = 0; ci < G->cx; ci++)
                                acc += x[(((size_t)n * G->hx + hi) * G->wx + wi) * G->cx + ci] *
                                       w[(((size_t)kh * G->k + kw) * G->cx + ci) * G->cy + co];
                        }
                    y[(((size_t)n * G->hy + ho) * G->wy + wo) * G->cy + co] = acc + (b ? b[co] : 0.0f);
                }
}

EBM__REFERENCE void ebm__conv_bwd_data_ref(const ebm__cgeom *G, const float *gy, const float *w, const float *b, float *gx)
{
    int n, hi, wi, ci, kh, kw, co;
    for (n = 0; n < G->n; n++)
        for (hi = 0; hi < G->hx; hi++)
            for (wi = 0; wi < G->wx; wi++)
                for (ci = 0; ci < G->cx; ci++) {
                    float acc = 0.0f;
                    for (kh = 0; kh < G->k; kh++)
                        for (kw = 0; kw < G->k; kw++) {
                            int th = hi + G->p - kh, tw = wi + G->p - kw, ho, wo;
                            if (th < 0 || tw < 0 || th % G->s || tw % G->s) continue;
                            ho = th / G->s; wo = tw / G->s;
                            if (ho >= G->hy || wo >= G->wy) continue;
                            for (co = 0; co < G->cy; co++)
                                acc += gy[(((size_t)n * G->hy + ho) * G->wy + wo) * G->cy + co] *
                                       w[(((size_t)kh * G->k + kw) * G->cx + ci) * G->cy + co];
                        }
                    gx[(((size_t)n * G->hx + hi) * G->wx + wi) * G->cx + ci] = acc + (b ? b[ci] : 0.0f);
                }
}

EBM__REFERENCE void ebm__conv_bwd_weight_ref(const ebm__cgeom *G, const float *x, const float *gy, float *gw)
{
    int n, ho, wo, co, kh, kw, ci;
    for (kh = 0; kh < G->k; kh++)
        for (kw = 0; kw < G->k; kw++)
            for (ci = 0; ci < G->cx; ci++)
                for (co = 0; co < G->cy; co++) {
                    float acc = 0.0f;
                    for (n = 0; n < G->n; n++)
                        for (ho = 0; ho < G->hy; ho++)
                            for (wo = 0; wo < G->wy; wo++) {
                                int hi = ho * G->s + kh - G->p, wi = wo * G->s + kw - G->p;
                                if (hi < 0 || hi >= G->hx || wi < 0 || wi >= G->wx) continue;
                                acc += x[(((size_t)n * G->hx + hi) * G->wx + wi) * G->cx + ci] *
                                       gy[(((size_t)n * G->hy + ho) * G->wy + wo) * G->cy + co];
                            }
                    gw[(((size_t)kh * G->k + kw) * G->cx + ci) * G->cy + co] = acc;
                }
}

/* --- fast kernels: the same sums, reordered so the inner loop is a
   contiguous multiply-add over channels (what SIMD wants). --- */

/* --- fast kernels: one register-blocked micro-kernel for all three passes.

   Each pass is a matrix product C[r][j] = sum_k A(r, k) B(k, j) with the
   operands read in place (an "implicit GEMM"):
     forward   r = output pixel (n,ho,wo) (the batch folded in, so the 3x3
               layer still has work), j = output channel, k = (tap, ci);
               A = the zero-padded input, B = the weights packed in panels;
     input gradient, split by output phase: for the input pixels with
               (hi + p) mod s = ph, only the taps kh = ph + s*i reach an
               output pixel, so each phase is a small stride-1 product
               with no zero-inserted work; A = the padded gy, B = the
               phase's taps of the weights, transposed, in panels; with
               at most 4 input channels, r = gy pixel, j = (kh, kw, ci),
               k = co instead, each product then added into place;
     weight gradient  r = (kh, kw, ci), j = co, k = output pixel; A = the
               padded input, B = gy packed in panels.
   The micro-kernel keeps EBM__RM x EBM__CV vector accumulators in
   registers: each step broadcasts one A value per row and loads CV vectors
   of B. B panels are EBM__CB = CV x VL channels wide, zero-padded, so
   channel tails cost nothing special. Every output element is summed by one
   tile in one fixed order, whatever thread runs the tile. The kernels use
   fused multiply-adds, so they round differently from the scalar
   references; the tests bound the difference. */

#if !defined(EBM_NO_SIMD) && defined(__AVX512F__)
#include <immintrin.h>
#define EBM__VL 16
#define EBM__RM 8
typedef __m512 ebm__vf;
#define ebm__vzero() _mm512_setzero_ps()
#define ebm__vload(p) _mm512_loadu_ps(p)
#define ebm__vstore(p, v) _mm512_storeu_ps(p, v)
#define ebm__vbcast(x) _mm512_set1_ps(x)
#define ebm__vfma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define ebm__vadd(a, b) _mm512_add_ps(a, b)
#define ebm__vmul(a, b) _mm512_mul_ps(a, b)
#define ebm__vsub(a, b) _mm512_sub_ps(a, b)
#define ebm__vdiv(a, b) _mm512_div_ps(a, b)
/* x < lo ? lo : x > hi ? hi : x, as ebm__expf clamps (a NaN x stays: max_ps returns its second operand then) */
#define ebm__vclamp(x, lo, hi) _mm512_maskz_min_ps((__mmask16)0xffff, _mm512_set1_ps(hi), _mm512_maskz_max_ps((__mmask16)0xffff, _mm512_set1_ps(lo), x))
/* 2^n for integral n in [-126, 127], from the exponent bits (the maskz forms
   here too: the unmasked ones draw maybe-uninitialized warnings from g++ 12
   in C++) */
#define ebm__vpow2i(n) _mm512_castsi512_ps(_mm512_maskz_slli_epi32((__mmask16)0xffff, \
    _mm512_add_epi32(_mm512_maskz_cvtps_epi32((__mmask16)0xffff, n), _mm512_set1_epi32(127)), 23))
/* The sum of the lanes (_mm512_reduce_add_ps, and even a cast to the lower
   half, draw maybe-uninitialized warnings from g++ 12 in C++: they extract
   halves unmasked; the maskz forms do not) */
static float ebm__vhsum(__m512 v)
{
    const __m512d d = _mm512_castps_pd(v);
    const __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xff, d, 0)),
                                   _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xff, d, 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
/* v > 0 ? v : slope v, lane by lane (a NaN stays a NaN either way) */
#define ebm__vleaky_by(v, m, sv) _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_NGT_UQ), v, sv)
#define EBM__ISA "avx512"
#elif !defined(EBM_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define EBM__VL 8
#define EBM__RM 6
typedef __m256 ebm__vf;
#define ebm__vzero() _mm256_setzero_ps()
#define ebm__vload(p) _mm256_loadu_ps(p)
#define ebm__vstore(p, v) _mm256_storeu_ps(p, v)
#define ebm__vbcast(x) _mm256_set1_ps(x)
#define ebm__vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define ebm__vadd(a, b) _mm256_add_ps(a, b)
#define ebm__vmul(a, b) _mm256_mul_ps(a, b)
#define ebm__vsub(a, b) _mm256_sub_ps(a, b)
#define ebm__vdiv(a, b) _mm256_div_ps(a, b)
#define ebm__vclamp(x, lo, hi) _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x))
#define ebm__vpow2i(n) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
static float ebm__vhsum(__m256 v)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}
#define ebm__vleaky_by(v, m, sv) _mm256_blendv_ps(v, _mm256_mul_ps(v, sv), _mm256_cmp_ps(m, _mm256_setzero_ps(), _CMP_NGT_UQ))
#define EBM__ISA "avx2"
#elif !defined(EBM_NO_SIMD) && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define EBM__VL 4
#define EBM__RM 8
typedef float32x4_t ebm__vf;
#define ebm__vzero() vdupq_n_f32(0.0f)
#define ebm__vload(p) vld1q_f32(p)
#define ebm__vstore(p, v) vst1q_f32(p, v)
#define ebm__vbcast(x) vdupq_n_f32(x)
#define ebm__vfma(a, b, c) vfmaq_f32(c, a, b)
#define ebm__vadd(a, b) vaddq_f32(a, b)
#define ebm__vmul(a, b) vmulq_f32(a, b)
#define ebm__vsub(a, b) vsubq_f32(a, b)
#define ebm__vdiv(a, b) vdivq_f32(a, b)
#define ebm__vclamp(x, lo, hi) vminq_f32(vdupq_n_f32(hi), vmaxq_f32(vdupq_n_f32(lo), x)) /* (NaN propagates) */
#define ebm__vpow2i(n) vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23))
#define ebm__vhsum(v) vaddvq_f32(v)
#define ebm__vleaky_by(v, m, sv) vbslq_f32(vcgtq_f32(m, vdupq_n_f32(0.0f)), v, vmulq_f32(v, sv))
#define EBM__ISA "neon"
#else /* portable: the same blocking on scalars (what EBM_NO_SIMD builds test) */
#define EBM__VL 1
#define EBM__RM 4
typedef float ebm__vf;
#define ebm__vzero() 0.0f
#define ebm__vload(p) (*(p))
#define ebm__vstore(p, v) (*(p) = (v))
#define ebm__vbcast(x) (x)
#define ebm__vfma(a, b, c) ((a) * (b) + (c))
#define ebm__vadd(a, b) ((a) + (b))
#define ebm__vmul(a, b) ((a) * (b))
#define ebm__vsub(a, b) ((a) - (b))
#define ebm__vdiv(a, b) ((a) / (b))
#define ebm__vleaky_by(v, m, sv) ((m) > 0 ? (v) : (sv) * (v))
#define ebm__vhsum(v) (v)
#define EBM__ISA "scalar"
#endif
#define EBM__CV 2
#define EBM__CB (EBM__CV * EBM__VL)
/* The kernels' loops over a tile's rows and vectors have constant trip
   counts, and their accumulators stay in registers only when those loops
   are unrolled completely. g++ -O2 does not unroll a loop whose unrolled
   body is larger (-O3's -fpeel-loops does), and left the accumulators in
   memory: net28_nf32's Langevin step took 3.1x its -O3 time. So each such
   loop asks for it (clang reads the same pragma). */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define EBM__UNROLL _Pragma("GCC unroll 16")
#else
#define EBM__UNROLL
#endif
/* LeakyReLU with the vector of slopes sv: v where m > 0, else sv v (m = v),
   or v times LeakyReLU'(m) (an input gradient times the factor read off a
   fused layer's output m: same sign as its pre-activation) */
#define ebm__vleaky(v, sv) ebm__vleaky_by(v, v, sv)

EBMDEF const char *ebm_isa(void) { return EBM__ISA; }

/* dst[j ld + k] = row[k][j] for j, k < 8: eight rows' eight values,
   transposed (the input gradient's weight packing). On x86 (AVX2, also in
   AVX-512 builds) an 8x8 transpose in registers: eight loads, three
   shuffles a row, eight stores; elsewhere the plain loop. */
static void ebm__transpose8(const float *const *row, float *dst, size_t ld)
{
#if EBM__VL == 16 || EBM__VL == 8
    const __m256 r0 = _mm256_loadu_ps(row[0]), r1 = _mm256_loadu_ps(row[1]), r2 = _mm256_loadu_ps(row[2]);
    const __m256 r3 = _mm256_loadu_ps(row[3]), r4 = _mm256_loadu_ps(row[4]), r5 = _mm256_loadu_ps(row[5]);
    const __m256 r6 = _mm256_loadu_ps(row[6]), r7 = _mm256_loadu_ps(row[7]);
    /* pairs of rows interleaved, then quads: u0 = (r0..r3)[0] | (r0..r3)[4], u1 the same of [1], [5], ... */
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3);
    const __m256 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ld, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
#else
    int j, k;
    for (j = 0; j < 8; j++)
        for (k = 0; k < 8; k++) dst[(size_t)j * ld + (size_t)k] = row[k][j];
#endif
}

static void ebm__sqrt_lanes(float *v, int n)
{
    int i = 0;
#if EBM__VL == 16
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(v + i, _mm512_maskz_sqrt_ps((__mmask16)0xffff, _mm512_loadu_ps(v + i))); /* maskz: g++ 12 warns on the unmasked form */
#elif EBM__VL == 8
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, _mm256_sqrt_ps(_mm256_loadu_ps(v + i)));
#elif EBM__VL == 4
    for (; i + 4 <= n; i += 4) vst1q_f32(v + i, vsqrtq_f32(vld1q_f32(v + i)));
#endif
    for (; i < n; i++) v[i] = sqrtf(v[i]);
}

/* Taps per pointer table: a tile reads its input rows through a table of
   (tap, pixel) row addresses, built in chunks of this many taps (64: a 7x7
   kernel's 49 fit one table, built once for all of a tile's panels). */
#define EBM__TAPS 64

/* Two tile shapes: EBM__RM pixels x 2 vectors of channels (wide panels of
   EBM__CB), or EBM__RM1 = 2 EBM__RM pixels x 1 vector (narrow panels of
   EBM__VL) when a layer has no more channels than one vector holds (n_f = 16
   on AVX-512), so that no half panel is multiplied by zeros. */
#define EBM__RM1 (2 * EBM__RM)

/* Tap form (forward and input gradient): for each of RMX pixels r,
   tmp[r][j] += sum over taps t < nt and channels c < kc of
   ap[t RMX + r][c] * bt[t][c ldb + j], j < CVX vectors. ap holds the
   address of the input row each (tap, pixel) reads, or of a row of zeros
   where the tap falls outside the image: no padded copy is ever made; bt
   the tap's rows of weights. A tap that is outside for every pixel of the
   tile is left out of the list altogether (a 1x1 -> 7x7 transposed conv
   would otherwise multiply 48 zero rows for each real one). All
   RMX rows are computed (a short tile repeats its last pixel). With `fresh`
   the sums start from zero instead of tmp (no memset of tmp per tile:
   23,000 calls of 1 KB per nf32 Langevin step, ~2 % of its CPU time in
   perf). Each tile shape is its own function, with accumulator arrays of
   exactly its size, so the compiler keeps them in registers (a shared body
   sized for the largest shape was measured 20 % slower). */
static void ebm__mk_taps_wide(const float *const *ap, const float *const *bt, int nt, int kc, size_t ldb, float *tmp,
                              int fresh)
{
    ebm__vf acc[EBM__RM][EBM__CV];
    int r, v, t, c;
    if (fresh) EBM__UNROLL for (r = 0; r < EBM__RM; r++) EBM__UNROLL for (v = 0; v < EBM__CV; v++) acc[r][v] = ebm__vzero();
    else EBM__UNROLL for (r = 0; r < EBM__RM; r++) EBM__UNROLL for (v = 0; v < EBM__CV; v++) acc[r][v] = ebm__vload(tmp + (r * EBM__CV + v) * EBM__VL);
    for (t = 0; t < nt; t++) {
        const float *ar[EBM__RM];
        EBM__UNROLL for (r = 0; r < EBM__RM; r++) ar[r] = ap[t * EBM__RM + r];
        /* two channels per turn: one channel per turn, g++ stepped each of the
           RM row pointers once per channel (integer adds competing with the
           FMAs for ports); unrolled, it indexes all rows off one counter */
#define EBM__MK_WIDE_STEP(cc)                                                                     \
        do {                                                                                      \
            const float *b = bt[t] + (size_t)(cc) * ldb;                                          \
            ebm__vf bv[EBM__CV];                                                                  \
            EBM__UNROLL for (v = 0; v < EBM__CV; v++) bv[v] = ebm__vload(b + v * EBM__VL);        \
            EBM__UNROLL for (r = 0; r < EBM__RM; r++) {                                           \
                ebm__vf x = ebm__vbcast(ar[r][cc]);                                               \
                EBM__UNROLL for (v = 0; v < EBM__CV; v++) acc[r][v] = ebm__vfma(x, bv[v], acc[r][v]); \
            }                                                                                     \
        } while (0)
        for (c = 0; c + 1 < kc; c += 2) { EBM__MK_WIDE_STEP(c); EBM__MK_WIDE_STEP(c + 1); }
        if (c < kc) EBM__MK_WIDE_STEP(c);
#undef EBM__MK_WIDE_STEP
    }
    EBM__UNROLL for (r = 0; r < EBM__RM; r++) EBM__UNROLL for (v = 0; v < EBM__CV; v++) ebm__vstore(tmp + (r * EBM__CV + v) * EBM__VL, acc[r][v]);
}

/* The narrow tile, EBM__RM1 pixels x 1 vector, as two halves of EBM__RM
   pixels, each half's sum split in two by channel parity (even channels
   into a0, odd into a1, added at the end): 16 accumulators from 8 row
   pointers. Sixteen row pointers at once do not fit x86-64's 16 general
   registers, and g++ kept the spilled ones in vector registers, moving
   each back before its broadcast (on the ports the FMAs need); half the
   pointers with the same 16 independent sums made the 28x28x16 input
   gradient 0.84 of its time (medians of 21 paired runs), while halves
   without the split (8 sums in flight) made it only 0.95. */
static void ebm__mk_taps_narrow(const float *const *ap, const float *const *bt, int nt, int kc, size_t ldb, float *tmp,
                                int fresh)
{
    int h, r, t, c;
    EBM__UNROLL for (h = 0; h < EBM__RM1 / EBM__RM; h++) {
        ebm__vf a0[EBM__RM], a1[EBM__RM];
        float *th = tmp + h * EBM__RM * EBM__VL;
        EBM__UNROLL for (r = 0; r < EBM__RM; r++) { a0[r] = fresh ? ebm__vzero() : ebm__vload(th + r * EBM__VL); a1[r] = ebm__vzero(); }
        for (t = 0; t < nt; t++) {
            const float *ar[EBM__RM];
            const float *b = bt[t];
            EBM__UNROLL for (r = 0; r < EBM__RM; r++) ar[r] = ap[t * EBM__RM1 + h * EBM__RM + r];
            for (c = 0; c + 1 < kc; c += 2) {
                const ebm__vf b0 = ebm__vload(b + (size_t)c * ldb), b1 = ebm__vload(b + (size_t)(c + 1) * ldb);
                EBM__UNROLL for (r = 0; r < EBM__RM; r++) {
                    a0[r] = ebm__vfma(ebm__vbcast(ar[r][c]), b0, a0[r]);
                    a1[r] = ebm__vfma(ebm__vbcast(ar[r][c + 1]), b1, a1[r]);
                }
            }
            if (c < kc) {
                const ebm__vf b0 = ebm__vload(b + (size_t)c * ldb);
                EBM__UNROLL for (r = 0; r < EBM__RM; r++) a0[r] = ebm__vfma(ebm__vbcast(ar[r][c]), b0, a0[r]);
            }
        }
        EBM__UNROLL for (r = 0; r < EBM__RM; r++) ebm__vstore(th + r * EBM__VL, ebm__vadd(a0[r], a1[r]));
    }
}

static void ebm__mk_taps(const float *const *ap, const float *const *bt, int nt, int kc, size_t ldb, float *tmp,
                         int fresh, int narrow)
{
    if (narrow) ebm__mk_taps_narrow(ap, bt, nt, kc, ldb, tmp, fresh);
    else ebm__mk_taps_wide(ap, bt, nt, kc, ldb, tmp, fresh);
}

/* Gather form (weight gradient): tmp[r][j] += sum over k < K of
   A[koff[k] + row[r]] * B[k ldb + j]. Each pixel k reads a new line of A,
   s pixels past the last one, and the pass stalled on that load (a quarter
   of its samples in perf); so the line EBM__WG_AHEAD pixels ahead is asked
   for in advance. (Measured before the row form below took these layers
   over; medians of 16 interleaved runs, batch 64: the weight gradients of
   14x14x64 -> 7x7x128 5.4 -> 4.5 ms, 14x14x32 -> 7x7x64 1.20 -> 1.02 ms,
   7x7x64 -> 3x3x128 1.02 -> 0.88 ms. Prefetching the forward's next tap
   rows gained nothing.) koff holds k_end >= K entries, so the prefetch
   runs on past this call's K. */
#define EBM__WG_AHEAD 24
#define EBM__DEF_MK_GATHER(name, RMX, CVX)                                                        \
static void name(const float *A, const ptrdiff_t *row, const ptrdiff_t *koff, size_t K, size_t k_end, \
                 const float *B, size_t ldb, float *tmp)                                          \
{                                                                                                 \
    ebm__vf acc[RMX][CVX];                                                                        \
    int r, v;                                                                                     \
    size_t k;                                                                                     \
    EBM__UNROLL for (r = 0; r < RMX; r++) EBM__UNROLL for (v = 0; v < CVX; v++) acc[r][v] = ebm__vload(tmp + (r * CVX + v) * EBM__VL); \
    for (k = 0; k < K; k++) {                                                                     \
        const float *a = A + koff[k], *b = B + k * ldb;                                           \
        ebm__vf bv[CVX];                                                                          \
        if (k + EBM__WG_AHEAD < k_end) EBM__PREFETCH(A + koff[k + EBM__WG_AHEAD] + row[0]);       \
        EBM__UNROLL for (v = 0; v < CVX; v++) bv[v] = ebm__vload(b + v * EBM__VL);                \
        EBM__UNROLL for (r = 0; r < RMX; r++) {                                                   \
            ebm__vf av = ebm__vbcast(a[row[r]]);                                                  \
            EBM__UNROLL for (v = 0; v < CVX; v++) acc[r][v] = ebm__vfma(av, bv[v], acc[r][v]);    \
        }                                                                                         \
    }                                                                                             \
    EBM__UNROLL for (r = 0; r < RMX; r++) EBM__UNROLL for (v = 0; v < CVX; v++) ebm__vstore(tmp + (r * CVX + v) * EBM__VL, acc[r][v]); \
}
EBM__DEF_MK_GATHER(ebm__mk_gather_wide, EBM__RM, EBM__CV)
EBM__DEF_MK_GATHER(ebm__mk_gather_narrow, EBM__RM1, 1)

static void ebm__mk_gather(const float *A, const ptrdiff_t *row, const ptrdiff_t *koff, size_t K, size_t k_end,
                           const float *B, size_t ldb, float *tmp, int narrow)
{
    if (narrow) ebm__mk_gather_narrow(A, row, koff, K, k_end, B, ldb, tmp);
    else ebm__mk_gather_wide(A, row, koff, K, k_end, B, ldb, tmp);
}

/* Row form (the weight gradient when the input has whole panels of
   channels): tmp[r][j] += sum over k < K of g[kx[k] ldg + r] * xr[k][col + j],
   j < CVX vectors; xr[k] is the input row of pixel kx[k] (xr holds k_end
   >= K entries). The broadcasts come from one packed gy row at fixed
   offsets and the vectors from one input row, so no per-row index is held
   in registers (the gather form needs RMX of them); both lines of the
   input row EBM__WG_AHEAD pixels ahead are prefetched. */
#define EBM__DEF_MK_ROWS(name, RMX, CVX)                                                          \
static void name(const float *const *xr, const int *kx, size_t col, size_t K, size_t k_end, const float *g, \
                 size_t ldg, float *tmp)                                                          \
{                                                                                                 \
    ebm__vf acc[RMX][CVX];                                                                        \
    int r, v;                                                                                     \
    size_t k;                                                                                     \
    EBM__UNROLL for (r = 0; r < RMX; r++) EBM__UNROLL for (v = 0; v < CVX; v++) acc[r][v] = ebm__vload(tmp + (r * CVX + v) * EBM__VL); \
    for (k = 0; k < K; k++) {                                                                     \
        const float *xa = xr[k] + col, *gk = g + (size_t)kx[k] * ldg;                             \
        ebm__vf bv[CVX];                                                                          \
        if (k + EBM__WG_AHEAD < k_end)                                                            \
            EBM__UNROLL for (v = 0; v < CVX; v++) EBM__PREFETCH(xr[k + EBM__WG_AHEAD] + col + v * EBM__VL); \
        EBM__UNROLL for (v = 0; v < CVX; v++) bv[v] = ebm__vload(xa + v * EBM__VL);               \
        EBM__UNROLL for (r = 0; r < RMX; r++) {                                                   \
            ebm__vf av = ebm__vbcast(gk[r]);                                                      \
            EBM__UNROLL for (v = 0; v < CVX; v++) acc[r][v] = ebm__vfma(av, bv[v], acc[r][v]);    \
        }                                                                                         \
    }                                                                                             \
    EBM__UNROLL for (r = 0; r < RMX; r++) EBM__UNROLL for (v = 0; v < CVX; v++) ebm__vstore(tmp + (r * CVX + v) * EBM__VL, acc[r][v]); \
}
EBM__DEF_MK_ROWS(ebm__mk_rows, EBM__RM, EBM__CV)

/* Run form of the row kernel: no table where output rows are long. On
   output row q = (n, ho) a tap falls inside for ho in [ho_lo, ho_hi) and,
   along the row, for the run of wl pixels from wo_lo: their input rows are
   xstep = s cx floats apart, their packed gy rows RM. tmp[r][j] += the sums
   over rows q0 .. q1-1, pixel by pixel in the table form's order (the same
   bits). Each pixel asks for the input row of the same pixel pf_rows rows
   on, counting only the rows where the tap falls inside, into the next
   image; no address outside x is formed. */
typedef struct {
    const float *x, *g;                /* the input; gy's packed panel */
    ptrdiff_t x0, xstep, xrow, ximg;   /* the row of (n 0, ho 0, wo_lo) for this tap and column; floats per pixel, output row, image */
    int n, hy, wy, ho_lo, ho_hi, wo_lo, wl, pf_rows;
} ebm__wrun;

static void ebm__mk_rows_run(const ebm__wrun *R, int q0, int q1, float *tmp)
{
    ebm__vf acc[EBM__RM][EBM__CV];
    int r, v, q, i, n = q0 / R->hy, ho = q0 % R->hy;
    EBM__UNROLL for (r = 0; r < EBM__RM; r++) EBM__UNROLL for (v = 0; v < EBM__CV; v++) acc[r][v] = ebm__vload(tmp + (r * EBM__CV + v) * EBM__VL);
    for (q = q0; q < q1; q++) {
        if (ho >= R->ho_lo && ho < R->ho_hi) {
            const float *xa = R->x + (R->x0 + (ptrdiff_t)n * R->ximg + (ptrdiff_t)ho * R->xrow);
            const float *gk = R->g + ((size_t)q * (size_t)R->wy + (size_t)R->wo_lo) * EBM__RM;
            /* the same pixel pf_rows rows on inside the tap's range, maybe in the next image (0 past the last: a repeat) */
            const ptrdiff_t pf = ho + R->pf_rows < R->ho_hi ? R->pf_rows * R->xrow
                                 : n + 1 < R->n ? R->ximg - (ptrdiff_t)(R->ho_hi - R->ho_lo - R->pf_rows) * R->xrow : 0;
            for (i = 0; i < R->wl; i++) {
                const float *xi = xa + (ptrdiff_t)i * R->xstep, *gi = gk + (size_t)i * EBM__RM;
                ebm__vf bv[EBM__CV];
                EBM__UNROLL for (v = 0; v < EBM__CV; v++) EBM__PREFETCH(xi + pf + v * EBM__VL);
                EBM__UNROLL for (v = 0; v < EBM__CV; v++) bv[v] = ebm__vload(xi + v * EBM__VL);
                EBM__UNROLL for (r = 0; r < EBM__RM; r++) {
                    ebm__vf av = ebm__vbcast(gi[r]);
                    EBM__UNROLL for (v = 0; v < EBM__CV; v++) acc[r][v] = ebm__vfma(av, bv[v], acc[r][v]);
                }
            }
        }
        if (++ho == R->hy) { ho = 0; n++; }
    }
    EBM__UNROLL for (r = 0; r < EBM__RM; r++) EBM__UNROLL for (v = 0; v < EBM__CV; v++) ebm__vstore(tmp + (r * EBM__CV + v) * EBM__VL, acc[r][v]);
}

/* A tile row's write-back without a bias. g++ makes any copying loop of
   unknown length a call to memcpy, even one of vector loads and stores
   (perf put ~4 % of the 28x28x16 input gradient on that call and its plt
   stub), so a whole panel, the common case, is copied by a loop of
   constant length, which it unrolls. (No paired difference in time was
   measurable either way: the call mostly shows where the copy's cache
   misses land.) */
static void ebm__copy_row(float *o, const float *src, int n)
{
    int q;
    if (n == EBM__VL) ebm__vstore(o, ebm__vload(src));
    else if (n == EBM__CB) for (q = 0; q < EBM__CB; q += EBM__VL) ebm__vstore(o + q, ebm__vload(src + q));
    else for (q = 0; q < n; q++) o[q] = src[q];
}

/* A tile row's write-back: o[q] = tr[q] (+ b[q] with a bias), then times
   LeakyReLU'(mk[q]) with a mask (the gradient of a fused layer), or
   through LeakyReLU(slope) with leaky; n values. Whole vectors by hand, as
   g++ -O2 does not vectorise these loops (at -O2, with the kernels
   unrolled, perf put 31 % of net28_nf32's Langevin step in the input
   gradient's tasks outside the kernel, mostly these loops, against 6 % at
   -O3). ebm__store_part does rows of n <=
   EBM__VL on AVX-512, masked, and of any n elsewhere, a loop per case (the
   dense input gradient's rows of EBM__RM, and store_row's tails). */
EBM__INLINE void ebm__store_part(float *o, const float *tr, const float *b, const float *mk, int leaky, float slope, int n)
{
#if EBM__VL == 16
    const __mmask16 k = (__mmask16)((1u << n) - 1);
    ebm__vf v = _mm512_maskz_loadu_ps(k, tr);
    if (b) v = ebm__vadd(v, _mm512_maskz_loadu_ps(k, b));
    if (mk) v = ebm__vleaky_by(v, _mm512_maskz_loadu_ps(k, mk), ebm__vbcast(slope));
    else if (leaky) v = ebm__vleaky(v, ebm__vbcast(slope));
    _mm512_mask_storeu_ps(o, k, v);
#else
    int q;
    if (mk) for (q = 0; q < n; q++) { const float v = b ? tr[q] + b[q] : tr[q]; o[q] = mk[q] > 0 ? v : slope * v; }
    else if (leaky) for (q = 0; q < n; q++) { const float v = b ? tr[q] + b[q] : tr[q]; o[q] = v > 0 ? v : slope * v; }
    else if (b) for (q = 0; q < n; q++) o[q] = tr[q] + b[q];
    else for (q = 0; q < n; q++) o[q] = tr[q];
#endif
}

EBM__INLINE void ebm__store_row(float *o, const float *tr, const float *b, const float *mk, int leaky, float slope, int n)
{
    const ebm__vf sv = ebm__vbcast(slope);
    int q = 0;
    if (!b && !mk && !leaky) { ebm__copy_row(o, tr, n); return; }
    for (; q + EBM__VL <= n; q += EBM__VL) {
        ebm__vf v = b ? ebm__vadd(ebm__vload(tr + q), ebm__vload(b + q)) : ebm__vload(tr + q);
        if (mk) v = ebm__vleaky_by(v, ebm__vload(mk + q), sv);
        else if (leaky) v = ebm__vleaky(v, sv);
        ebm__vstore(o + q, v);
    }
    if (q < n) ebm__store_part(o + q, tr + q, b ? b + q : NULL, mk ? mk + q : NULL, leaky, slope, n - q);
}

/* o[i] = v[i] where m[i] > 0, else a v[i] (LeakyReLU, m = v, or its
   derivative times v), and o[i] = m[i] v[i] (held derivatives): whole
   vectors by hand, as g++ -O2 does not vectorise these loops either. */
static void ebm__leaky_by_range(const float *m, const float *v, float *o, float a, size_t n)
{
    const ebm__vf sv = ebm__vbcast(a);
    size_t i = 0;
    for (; i + EBM__VL <= n; i += EBM__VL) ebm__vstore(o + i, ebm__vleaky_by(ebm__vload(v + i), ebm__vload(m + i), sv));
    for (; i < n; i++) o[i] = m[i] > 0 ? v[i] : a * v[i];
}

static void ebm__mul_range(const float *m, const float *v, float *o, size_t n)
{
    size_t i = 0;
    for (; i + EBM__VL <= n; i += EBM__VL) ebm__vstore(o + i, ebm__vmul(ebm__vload(m + i), ebm__vload(v + i)));
    for (; i < n; i++) o[i] = m[i] * v[i];
}

/* A tile's result buffer and pointer table hold any of the shapes above. */
#define EBM__TILE (EBM__RM * EBM__CB)
#define EBM__ROWS EBM__RM1

static size_t ebm__ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* x (N,h,w,C) into the middle of out (N,Hp,Wp,C) at (top, left), zeros around. */
static void ebm__pad(const float *x, int n, int h, int w, int c, int top, int left, int Hp, int Wp, float *out)
{
    int i;
    EBM__PARALLEL_FOR(n, n > 1)
    for (i = 0; i < n; i++) {
        int y;
        for (y = 0; y < Hp; y++) {
            float *o = out + ((size_t)i * Hp + y) * Wp * c;
            if (y < top || y >= top + h) { memset(o, 0, (size_t)Wp * c * sizeof(float)); continue; }
            memset(o, 0, (size_t)left * c * sizeof(float));
            memcpy(o + (size_t)left * c, x + ((size_t)i * h + y - top) * w * c, (size_t)w * c * sizeof(float));
            memset(o + (size_t)(left + w) * c, 0, (size_t)(Wp - left - w) * c * sizeof(float));
        }
    }
}

/* Panels of `width` columns, zero past `cols`: out[(i rows + j) width + c] =
   src[j ld + i width + c]. In parallel over rows; a copy, so any split is exact. */
static void ebm__pack(const float *src, size_t rows, size_t cols, size_t ld, float *out, size_t width)
{
    const size_t n_ct = ebm__ceil_div(cols, width);
    long j;
    EBM__PARALLEL_FOR((long)rows, rows * cols > 16384)
    for (j = 0; j < (long)rows; j++) {
        size_t i, c;
        for (i = 0; i < n_ct; i++) { /* a plain copy and a zero tail: no test per element */
            const float *in = src + (size_t)j * ld + i * width;
            float *o = out + (i * rows + (size_t)j) * width;
            const size_t nv = cols - i * width < width ? cols - i * width : width;
            for (c = 0; c < nv; c++) o[c] = in[c];
            for (; c < width; c++) o[c] = 0.0f;
        }
    }
}

/* Carve a 64-byte-aligned piece off a scratch block. */
static void *ebm__carve(unsigned char **p, size_t bytes)
{
    uintptr_t u = (uintptr_t)*p;
    unsigned char *q = *p + ((EBM__ALIGN - (u % EBM__ALIGN)) % EBM__ALIGN);
    *p = q + bytes;
    return q;
}

/* Fill a tile's pointer table for taps t0 .. t0+nt-1 (tap t at kernel
   offset (t / tw, t % tw)): pixel r of the tile reads source pixel
   (bh[r] + dir (t / tw), bw[r] + dir (t % tw)) of image pn[r] of an
   (N, H, W, C) source, or the zero row where that falls outside. Taps that
   fall outside for every pixel are dropped; bt gets each kept tap's weight
   rows (B + t bstride). Returns the taps kept. The box around the tile's
   source pixels settles most taps at once: wholly outside (dropped without
   a look at any pixel: a 1x1 -> 7x7 transposed conv keeps 1 tap of 49) or
   wholly inside (no test per pixel); only taps across the border test each. */
static int ebm__tap_table(const float *src, int H, int W, int C, const float *zero, const int *pn, const int *bh,
                          const int *bw, int dir, int tw, int RR, int t0, int nt, const float *B,
                          size_t bstride, const float **ap, const float **bt)
{
    ptrdiff_t base[EBM__ROWS];
    int tt, r, kept = 0, h_lo = bh[0], h_hi = bh[0], w_lo = bw[0], w_hi = bw[0];
    for (r = 0; r < RR; r++) {
        base[r] = (((ptrdiff_t)pn[r] * H + bh[r]) * W + bw[r]) * C;
        h_lo = bh[r] < h_lo ? bh[r] : h_lo; h_hi = bh[r] > h_hi ? bh[r] : h_hi;
        w_lo = bw[r] < w_lo ? bw[r] : w_lo; w_hi = bw[r] > w_hi ? bw[r] : w_hi;
    }
    for (tt = 0; tt < nt; tt++) {
        const int dh = dir * ((t0 + tt) / tw), dw = dir * ((t0 + tt) % tw);
        const ptrdiff_t d = ((ptrdiff_t)dh * W + dw) * C;
        const float **row = ap + kept * RR;
        if (h_hi + dh < 0 || h_lo + dh >= H || w_hi + dw < 0 || w_lo + dw >= W) continue;
        if (h_lo + dh >= 0 && h_hi + dh < H && w_lo + dw >= 0 && w_hi + dw < W)
            for (r = 0; r < RR; r++) row[r] = src + (base[r] + d);
        else {
            int inside = 0;
            for (r = 0; r < RR; r++) {
                const int h = bh[r] + dh, w = bw[r] + dw, in = h >= 0 && h < H && w >= 0 && w < W;
                row[r] = in ? src + (base[r] + d) : zero;
                inside |= in;
            }
            if (!inside) continue;
        }
        bt[kept++] = B + (size_t)(t0 + tt) * bstride;
    }
    return kept;
}

/* Prefetch the lines a tile's write-back touches: out's rows pix[r] +
   [c0, c1) for writing, and the same floats of mask (if any) for reading.
   Each tile's stores of its results would otherwise miss the cache and wait
   in the store buffer, in order, behind which the next tile's first loads of
   what it had just stored itself (its pixels' coordinates, read back as
   vectors) waited too: fetched ahead, the 28x28x32 input gradient's own time
   outside its products went from a third of the pass to a sixth (6.0
   against 8.2 ms on one thread, batch 64). */
static void ebm__prefetch_rows(float *out, const float *mask, const size_t *pix, int nr, size_t c0, size_t c1)
{
    int r;
    size_t q;
    for (r = 0; r < nr; r++)
        for (q = c0; q < c1; q += 64 / sizeof(float)) {
            EBM__PREFETCH_W(out + pix[r] + q);
            if (mask) EBM__PREFETCH(mask + pix[r] + q);
        }
}

/* Panel width for a channel count: narrow when one vector holds them all. */
static int ebm__narrow(int channels) { return channels <= EBM__VL; }
static size_t ebm__panel(int channels) { return ebm__narrow(channels) ? EBM__VL : EBM__CB; }

/* Scratch each pass needs, in bytes: a zero row, packed panels, offset
   tables (+ alignment slack). The ops allocate it in the arena, so measuring
   runs count it like any tensor. */
static size_t ebm__conv_fwd_few_pad(const ebm__cgeom *G);
static size_t ebm__conv_fwd_scratch(const ebm__cgeom *G)
{
    size_t panels = ebm__ceil_div((size_t)G->cy, ebm__panel(G->cy)) * ebm__panel(G->cy) * G->k * G->k * G->cx;
    return (panels + (size_t)G->cx + (size_t)G->cy + EBM__CB + ebm__conv_fwd_few_pad(G)) * sizeof(float) + 4 * EBM__ALIGN;
}

/* The input gradient of a layer with few input channels (a first layer of
   1 or 3, a transposed conv's last layer), or with one vector of them
   (net28_nf16's 28x28x16 layer on AVX-512, where the phase form's tiles
   would be narrow), takes the tap form, ebm__conv_bwd_data_few. */
#define EBM__FEW_CX 4
static int ebm__few_cx(const ebm__cgeom *G) { return G->cx <= EBM__FEW_CX; }
static int ebm__bwd_taps(const ebm__cgeom *G) { return ebm__few_cx(G) || G->cx == EBM__VL; }

/* One output phase of the input gradient (see ebm__conv_bwd_data_epi): its
   first row and column, its size, its taps and their packed weights. */
typedef struct {
    int ph, pw, fh, fw, cnt_h, cnt_w, th, tw, nt_all, pos_major, qh0, qw0;
    size_t M, per, KC;
    long n_pt;
    float *Bp;
} ebm__phase;

/* 1 if the input gradient is a dense product (ebm__conv_bwd_data_dense):
   gy one pixel per image, every tap inside (no padding, a kernel the size
   of the input), enough channels to sum over (as a generator's 1x1 -> 7x7
   transposed first layer). */
static int ebm__bwd_dense(const ebm__cgeom *G)
{
    return G->hy == 1 && G->wy == 1 && G->p == 0 && G->k == G->hx && G->k == G->wx && G->cy >= EBM__VL && !ebm__few_cx(G);
}

static size_t ebm__conv_bwd_data_scratch(const ebm__cgeom *G)
{
    const size_t T = (size_t)G->k * G->k * G->cx; /* ebm__conv_bwd_data_few: the weights in panels of taps, a tap table */
    size_t panels = ebm__ceil_div((size_t)G->cx, ebm__panel(G->cx)) * ebm__panel(G->cx) * G->k * G->k * G->cy;
    if (ebm__bwd_dense(G)) return ebm__ceil_div((size_t)G->n, EBM__CB) * EBM__CB * G->cy * sizeof(float) + EBM__ALIGN;
    if (ebm__bwd_taps(G)) return ebm__ceil_div(T, ebm__panel((int)T)) * ebm__panel((int)T) * G->cy * sizeof(float) +
                               3 * T * sizeof(int) + 2 * EBM__ALIGN;
    return (panels + (size_t)G->cy) * sizeof(float) + (size_t)G->s * G->s * sizeof(ebm__phase) + 4 * EBM__ALIGN;
}

/* The weight gradient's gather form (ebm__conv_bwd_weight): a task is a
   group of row tiles (kh, kw, ci) through one panel of gy's channels. With
   many row tiles, groups of EBM__WG_GROUP; with a few (at most 4: a 4x4
   kernel on 1 channel) and several panels, all of them, so that gy is read
   once; else one each, for more tasks. */
#define EBM__WG_GROUP 16
static size_t ebm__wg_row_tiles(const ebm__cgeom *G)
{
    return ebm__ceil_div((size_t)G->k * G->k * G->cx, ebm__narrow(G->cy) ? EBM__RM1 : EBM__RM);
}
static size_t ebm__wg_group(const ebm__cgeom *G)
{
    const size_t n_rt = ebm__wg_row_tiles(G), n_ct = ebm__ceil_div((size_t)G->cy, ebm__panel(G->cy));
    return n_rt >= 4 * EBM__WG_GROUP ? EBM__WG_GROUP : n_ct > 1 && n_rt <= 4 ? n_rt : 1;
}

/* That form packs gy into panels, except when gy already is one panel (cy
   equal to the panel width): the copy would change nothing (the first
   layer of net28_nf32, 1 -> 32 channels: 1.0 -> 0.24 ms); or when one
   group takes every row tile and the panels fill gy's rows: each task
   then reads its panel's part of each row once, in place (the generator's
   14x14x64 -> 28x28x1 weight gradient: 0.65 of its time, with the
   grouping). Reading several panels in place with one row tile per task,
   rows cy floats apart, was measured 20-25 % slower than packing them. */
static int ebm__wg_gy_in_place(const ebm__cgeom *G)
{
    const int CBW = (int)ebm__panel(G->cy);
    return G->cy == CBW || (ebm__wg_group(G) == ebm__wg_row_tiles(G) && G->cy % CBW == 0);
}

#define EBM__WGR_CHUNK 128 /* pixels per chunk in the weight gradient's row form */

/* The row form walks a tap's pixels as runs along output rows
   (ebm__mk_rows_run) where the rows have at least EBM__WGR_RUN_MIN pixels,
   each pixel asking for its input row some EBM__WGR_AHEAD pixels on (in
   whole rows); through a table per tap where they are shorter. Measured
   against the table (medians of 41-61 paired runs, batch 64, 2 threads,
   the same bits): net28_nf32's 28x28x32 -> 14x14x64 weight gradient
   0.87-0.94 of its time (its tables were 2.4 MB, written on every call),
   net28_nf64's 28x28x64 one 0.93; but on rows of 7 (the 14x14x64 -> 7x7x128
   layers) 0.99-1.10, and on the 3x3 outputs' rows of 3 1.06-1.20. */
#define EBM__WGR_RUN_MIN 14
#define EBM__WGR_AHEAD 12
static int ebm__wg_runs(const ebm__cgeom *G) { return G->wy >= EBM__WGR_RUN_MIN; }

/* The weight gradient's row form (ebm__conv_bwd_weight_rows) takes the
   layers whose input channels fill whole panels and that have a tile's
   worth of output channels; the gather form takes the rest (the first
   layers, 1 or 3 channels; a last layer, 1 output channel). */
static int ebm__wg_rows(const ebm__cgeom *G) { return G->cx % EBM__CB == 0 && G->cy >= EBM__RM; }

static size_t ebm__conv_bwd_weight_scratch(const ebm__cgeom *G)
{
    size_t M = (size_t)G->n * G->hy * G->wy, packed;
    size_t pad = G->p ? (size_t)G->n * (G->hx + 2 * G->p) * (G->wx + 2 * G->p) * G->cx : 0;
    if (ebm__wg_rows(G)) /* packed gy; unless in runs, per tap a row and an index per pixel and a start per chunk */
        return ebm__ceil_div((size_t)G->cy, EBM__RM) * EBM__RM * M * sizeof(float) +
               (ebm__wg_runs(G) ? 0 : (size_t)G->k * G->k * (M * (sizeof(float *) + sizeof(int)) +
                                                              (ebm__ceil_div(M, EBM__WGR_CHUNK) + 1) * sizeof(size_t))) +
               4 * EBM__ALIGN;
    packed = ebm__wg_gy_in_place(G) ? 0 : ebm__ceil_div((size_t)G->cy, ebm__panel(G->cy)) * ebm__panel(G->cy) * M;
    return (pad + packed) * sizeof(float) + M * sizeof(ptrdiff_t) + 3 * EBM__ALIGN;
}

/* The forward's tasks over n_pt pixel tiles and n_ct panels of packed
   weights (`grouped`: more than one panel, and more than EBM__PANELS_HOT
   bytes in all). Small weights: a task is one pixel tile through
   every panel, so its tap table is built once. Weights past
   EBM__PANELS_HOT bytes no longer stay in a core's cache from tile to
   tile, and each tile would stream them all from memory again, so a task
   is then a group of EBM__PT_GROUP tiles through one panel: the panel is
   read once per group, and each tile's table is rebuilt per panel (cheap
   beside its products). Measured (batch 64, medians of 12 interleaved
   runs): net28_nf32's 7x7 -> 3x3 forward (2 MB of weights) 3.43 -> 2.52
   ms, net28_nf64's (8 MB) 20.4 -> 9.3 ms, the generator's gz pass (7x7 ->
   1x1, 3.2 MB) 1.12 -> 0.76 ms. The input gradient grouped the same way
   ran no faster (its phases' weights are a quarter of the size, and
   position-first tiles already share their taps), so it keeps one tile
   per task. */
#define EBM__PANELS_HOT ((size_t)512 << 10)
#define EBM__PT_GROUP 8
static long ebm__pt_tasks(long n_pt, size_t n_ct, int grouped)
{
    return grouped ? (long)ebm__ceil_div((size_t)n_pt, EBM__PT_GROUP) * (long)n_ct : n_pt;
}

/* Task t's pixel tiles [pt0, pt1) and panels [ct0, ct1). */
static void ebm__pt_task(long t, long n_pt, size_t n_ct, int grouped, long *pt0, long *pt1, size_t *ct0, size_t *ct1)
{
    if (grouped) {
        *pt0 = (t / (long)n_ct) * EBM__PT_GROUP;
        *pt1 = *pt0 + EBM__PT_GROUP < n_pt ? *pt0 + EBM__PT_GROUP : n_pt;
        *ct0 = (size_t)(t % (long)n_ct);
        *ct1 = *ct0 + 1;
    } else {
        *pt0 = t; *pt1 = t + 1;
        *ct0 = 0; *ct1 = n_ct;
    }
}

/* The forward of a layer with few input channels (ebm__few_cx: a first
   layer of 1 or 3). Its k k cx products per output pixel are too few for
   the tile form, whose tap table and write-back then cost more than the
   products (perf on the 1 -> 32 layer: 49 % table, 29 % write-back, 19 %
   FMAs). Here a task is one output row of one image, a panel of output
   channels at a time. Pixels go EBM__FEW_PX at a time through ebm__few_px:
   the taps' input offsets from a table, the weight vectors from the packed
   panel, all the block's sums in registers, and bias and LeakyReLU applied
   there before the one store. With padding the input is first copied with
   its zero border (small: 230 KB for 64 28x28 images), so that every
   window lies inside and no pixel needs the one-by-one path, whose taps
   are a chain of dependent FMAs: the border pixels had taken half of the
   input gradient of the generator's 14x14x64 -> 28x28x1 layer, a forward
   conv 28x28x1 -> 14x14x64 (0.45 -> 0.22 ms on a 30x30 input without
   padding). Only rows narrower than a block go pixel by pixel.
   Every sum runs over the taps in the tile form's order, (kh, kw, ci); the
   zeros of the border add nothing (the tile form multiplies a zero row). */
#define EBM__FEW_PX (16 / EBM__CV)
#define EBM__FEW_TAPS 64 /* at most this many taps (a 4x4 kernel of 4 channels) */

/* Floats of the padded input copy the few-channel forward takes (0: none). */
static size_t ebm__conv_fwd_few_pad(const ebm__cgeom *G)
{
    if (!ebm__few_cx(G) || G->k * G->k * G->cx > EBM__FEW_TAPS || G->p == 0) return 0;
    return (size_t)G->n * (G->hx + 2 * G->p) * (G->wx + 2 * G->p) * G->cx;
}

static void ebm__act_range(int type, int order, float a, const float *x, float *y, size_t n); /* section 4 */
static void ebm__act_bwd_range(int type, float a, const float *x, const float *gy, float *gx, size_t n);
static void ebm__act_val_range(int type, float a, const float *x, float *y, float *d, size_t n);
static void ebm__act_fwd(int type, int order, float a, const float *x, float *y, size_t n);
static void ebm__act_bwd(int type, float a, const float *x, const float *gy, float *gx, size_t n);

/* What a conv pass's write-back does with each sum (plus bias) while it
   is still in cache; all fields zero: store it.
   - leaky: store LeakyReLU(slope) of it (a conv fused with the LeakyReLU
     after it: one node, see ebm__fuses_act);
   - mask: store it times act'(mask) of activation mact (parameter ma):
     the gradient of a node held multiplied (ebm__premasked). mask is that
     fused node's output (LeakyReLU: it has the pre-activation's sign) or
     an activation node's input;
   - ya: store it, and act(it) to ya as well (a conv and the activation
     node after it computed in one pass: ebm__conv2d_act); with yd,
     act'(it) to yd too, held for the backward (EBM__ACT_HELD). */
typedef struct {
    int leaky;
    float slope;
    const float *mask;
    int mact;
    float ma;
    float *ya, *yd;
    int act;
    float a;
} ebm__epi;

/* One pixel's nv <= EBM__CV vectors of sums to o: plus the bias, through
   LeakyReLU if asked, nc floats stored (through a buffer for a tail). */
static void ebm__few_store(float *o, ebm__vf *acc, int nv, const ebm__vf *bias, int leaky, ebm__vf sv, int nc)
{
    float lane[EBM__CB] = { 0.0f }; /* (initialised: g++ cannot see that nc <= nv VL) */
    int v;
    for (v = 0; v < nv; v++) {
        if (bias) acc[v] = ebm__vadd(acc[v], bias[v]);
        if (leaky) acc[v] = ebm__vleaky(acc[v], sv);
        ebm__vstore(nc == nv * EBM__VL ? o + v * EBM__VL : lane + v * EBM__VL, acc[v]);
    }
    if (nc != nv * EBM__VL) for (v = 0; v < nc; v++) o[v] = lane[v];
}

/* n pixels' nc stored values (os apart) times LeakyReLU'(mk), mk as far apart:
   after the stores, for tails and single pixels (applied inside
   ebm__few_store, the unmasked forward ran 10 % slower) */
static void ebm__few_mask(float *o, const float *mk, size_t os, int n, int nc, float slope)
{
    int i, q;
    for (i = 0; i < n; i++, o += os, mk += os)
        for (q = 0; q < nc; q++) o[q] = mk[q] > 0 ? o[q] : slope * o[q];
}

/* np pixels (input windows at x0 + i xs) x nv vectors, sums in registers:
   a narrow panel's 2 EBM__FEW_PX x 1 (EBM__FEW_PX x 1 in a row narrower
   than that) or a wide one's EBM__FEW_PX x EBM__CV (16 sums either way on
   AVX-512), np and nv constants where it is inlined. With mk (whole
   vectors only), times LeakyReLU'(mk); then the bias and LeakyReLU, stored
   in place when the panel's vectors are whole, else through
   ebm__few_store. (Called, with nv a variable, the block spent a quarter
   of its time in that call and the loop tested nv at every tap: the 28x28
   1 -> 16 layer took 4.5x its FMAs' time.) */
EBM__INLINE void ebm__few_px(const float *x0, ptrdiff_t xs, const int *toff, int T, const float *bp, const int np,
                             const int nv, const ebm__vf *bias, int leaky, ebm__vf sv, const float *mk, float *o,
                             size_t os, int nc)
{
    ebm__vf acc[2 * EBM__FEW_PX][EBM__CV];
    int i, t, v;
    EBM__UNROLL for (i = 0; i < np; i++) EBM__UNROLL for (v = 0; v < nv; v++) acc[i][v] = ebm__vzero();
    for (t = 0; t < T; t++) {
        const float *xt = x0 + toff[t];
        ebm__vf bv[EBM__CV];
        EBM__UNROLL for (v = 0; v < nv; v++) bv[v] = ebm__vload(bp + ((size_t)t * nv + v) * EBM__VL);
        EBM__UNROLL for (i = 0; i < np; i++) {
            const ebm__vf xv = ebm__vbcast(xt[i * xs]);
            EBM__UNROLL for (v = 0; v < nv; v++) acc[i][v] = ebm__vfma(xv, bv[v], acc[i][v]);
        }
    }
    if (mk)
        EBM__UNROLL for (i = 0; i < np; i++)
            EBM__UNROLL for (v = 0; v < nv; v++) acc[i][v] = ebm__vleaky_by(acc[i][v], ebm__vload(mk + (size_t)i * os + (size_t)v * EBM__VL), sv);
    if (nc == nv * EBM__VL)
        EBM__UNROLL for (i = 0; i < np; i++)
            EBM__UNROLL for (v = 0; v < nv; v++) {
                ebm__vf a = bias ? ebm__vadd(acc[i][v], bias[v]) : acc[i][v];
                ebm__vstore(o + (size_t)i * os + (size_t)v * EBM__VL, leaky ? ebm__vleaky(a, sv) : a);
            }
    else
        EBM__UNROLL for (i = 0; i < np; i++) ebm__few_store(o + (size_t)i * os, acc[i], nv, bias, leaky, sv, nc);
}

static void ebm__conv_fwd_few(const ebm__cgeom *G, const float *x, const float *w, const float *b, float *y,
                              void *scratch, const ebm__epi *e)
{
    const int leaky = e->leaky;
    const float slope = e->mask ? e->ma : e->slope;
    const float *mask = e->mask && e->mact == EBM_ACT_LEAKY_RELU ? e->mask : NULL; /* in the kernel; others after each row */
    unsigned char *sp = (unsigned char *)scratch;
    const int K = G->k, cx = G->cx, cy = G->cy, s = G->s, T = K * K * cx;
    const int hx = G->hx + 2 * G->p, wx = G->wx + 2 * G->p; /* the padded input's size */
    const size_t CBW = ebm__panel(cy), n_ct = ebm__ceil_div((size_t)cy, CBW);
    const int nv = (int)(CBW / EBM__VL); /* a block's vectors and pixels: see ebm__few_px */
    const int np = nv == 1 && G->wy >= 2 * EBM__FEW_PX ? 2 * EBM__FEW_PX : EBM__FEW_PX;
    const long n_rows = (long)G->n * G->hy;
    float *Bp = (float *)ebm__carve(&sp, n_ct * CBW * (size_t)T * sizeof(float));
    float *bz = (float *)ebm__carve(&sp, n_ct * CBW * sizeof(float)); /* the bias, zero past cy */
    int toff[EBM__FEW_TAPS];
    long task;
    int t;
    if (G->p) {
        float *xp = (float *)ebm__carve(&sp, ebm__conv_fwd_few_pad(G) * sizeof(float));
        ebm__pad(x, G->n, G->hx, G->wx, cx, G->p, G->p, hx, wx, xp);
        x = xp;
    }
    ebm__pack(w, (size_t)T, (size_t)cy, (size_t)cy, Bp, CBW); /* Bp[(ct T + t) CBW + j] */
    for (t = 0; t < (int)(n_ct * CBW); t++) bz[t] = b && t < cy ? b[t] : 0.0f;
    for (t = 0; t < T; t++) toff[t] = ((t / (K * cx)) * wx + t / cx % K) * cx + t % cx;
    EBM__PARALLEL_FOR(n_rows, n_rows > 1)
    for (task = 0; task < n_rows; task++) {
        const int n = (int)(task / G->hy), ho = (int)(task % G->hy);
        const float *xr = x + ((size_t)n * hx + (size_t)ho * s) * wx * cx; /* the windows' first row */
        float *yr = y + (size_t)task * G->wy * cy;
        const float *mr = mask ? mask + (size_t)task * G->wy * cy : NULL;
        const ebm__vf sv = ebm__vbcast(slope);
        size_t ct;
        int wo, v, q;
        for (ct = 0; ct < n_ct; ct++) {
            const float *bp = Bp + ct * (size_t)T * CBW;
            const int co0 = (int)(ct * CBW), nc = cy - co0 < (int)CBW ? cy - co0 : (int)CBW;
            ebm__vf bias[EBM__CV];
            for (v = 0; v < nv; v++) bias[v] = ebm__vload(bz + co0 + v * EBM__VL);
            if (G->wy >= np)
                for (wo = 0; wo < G->wy; wo += np) {
                    /* the last block ends at the row's end, overlapping the one before it
                       (the pixels in both are computed twice, the same way) */
                    const int w_ = wo + np <= G->wy ? wo : G->wy - np;
                    const int whole = nc == nv * EBM__VL;
                    const float *xw = xr + (size_t)w_ * s * cx, *mw = mr && whole ? mr + (size_t)w_ * cy + co0 : NULL;
                    float *yw = yr + (size_t)w_ * cy + co0;
                    if (np > EBM__FEW_PX) /* (three calls, each inlined with its constants) */
                        ebm__few_px(xw, (ptrdiff_t)s * cx, toff, T, bp, 2 * EBM__FEW_PX, 1, b ? bias : NULL, leaky, sv, mw, yw, (size_t)cy, nc);
                    else if (nv == 1)
                        ebm__few_px(xw, (ptrdiff_t)s * cx, toff, T, bp, EBM__FEW_PX, 1, b ? bias : NULL, leaky, sv, mw, yw, (size_t)cy, nc);
                    else
                        ebm__few_px(xw, (ptrdiff_t)s * cx, toff, T, bp, EBM__FEW_PX, EBM__CV, b ? bias : NULL, leaky, sv, mw, yw, (size_t)cy, nc);
                    if (mr && !whole) ebm__few_mask(yw, mr + (size_t)w_ * cy + co0, (size_t)cy, np, nc, slope);
                }
            else
                for (wo = 0; wo < G->wy; wo++) { /* a row narrower than a block: pixel by pixel */
                    const float *xp = xr + (size_t)wo * s * cx;
                    ebm__vf acc[EBM__CV];
                    for (v = 0; v < nv; v++) acc[v] = ebm__vzero();
                    for (q = 0; q < T; q++) {
                        const ebm__vf xv = ebm__vbcast(xp[toff[q]]);
                        for (v = 0; v < nv; v++) acc[v] = ebm__vfma(xv, ebm__vload(bp + (size_t)q * CBW + v * EBM__VL), acc[v]);
                    }
                    ebm__few_store(yr + (size_t)wo * cy + co0, acc, nv, b ? bias : NULL, leaky, sv, nc);
                    if (mr) ebm__few_mask(yr + (size_t)wo * cy + co0, mr + (size_t)wo * cy + co0, 0, 1, nc, slope);
                }
        }
        /* the row's epilogues that need more than LeakyReLU, while it is in cache */
        if (e->ya) {
            const size_t off = (size_t)task * G->wy * cy;
            ebm__act_val_range(e->act, e->a, yr, e->ya + off, e->yd ? e->yd + off : NULL, (size_t)G->wy * cy);
        }
        if (e->mask && !mask) ebm__act_bwd_range(e->mact, e->ma, e->mask + (size_t)task * G->wy * cy, yr, yr, (size_t)G->wy * cy);
    }
}

/* A tile's pixels in the order (position, image) where the output (or an
   input-gradient phase) has at most EBM__POS_MAJOR positions and the
   batch fills a tile. Near the border some taps fall outside the input: 14
   % of a 4x4 stride-2 layer's products to 7x7, 16 % to 3x3. A tile whose
   pixels are one position in 8 (or 16) images misses the same taps for all
   of them, and they are left out of its list instead of multiplied as
   zeros (image first, a tile spans positions, and keeps a tap that any one
   of them needs). Every element is summed over the same taps in the same
   order either way: zeros left out change no bit. The forward gained
   (medians of 15 paired runs, batch 64): net28_nf32's 14x14 -> 7x7 0.84
   of its time, 7x7 -> 3x3 0.88, the generator's gz pass through 14x14x64
   -> 7x7x128 0.85; whole Langevin steps of nf16 0.96, nf32 0.96. (On the
   AMD EPYC of v0.5 it had made an nf16 step 10 % slower, likely because
   the element-wise ops after it split the output by image, so each core
   read what the other wrote; the LeakyReLU is fused into the write-back
   since.) The forward takes up to EBM__POS_MAJOR_WIDE positions position
   first when its input has 32 channels or more: 14x14 and 16x16 outputs,
   where the border's taps are 7 % of the products. Paired, medians of 31
   runs: net28_nf32's 28x28x32 -> 14x14x64 forward 0.91, net28_nf64's
   28x28x64 one 0.89, net32c3's 32x32x32 -> 16x16x64 one 0.95; but
   net28_nf16's 28x28x16 one 1.03, so rows of 16 channels keep the
   image-first order there. So do forwards whose write-back applies
   another activation than LeakyReLU, or its derivative: storing SiLU's
   value and derivative as well, position first, scatters those rows over
   8 images, and the pass took 1.05 of its time (0.99-1.00 with their
   lines prefetched as the output's are). */
#define EBM__POS_MAJOR 128
#define EBM__POS_MAJOR_WIDE 256
static int ebm__fwd_pos_major(const ebm__cgeom *G, int RR, const ebm__epi *e)
{
    const int wide = G->cx >= 32 && !e->ya && !(e->mask && e->mact != EBM_ACT_LEAKY_RELU);
    return G->n >= RR && G->hy * G->wy <= (wide ? EBM__POS_MAJOR_WIDE : EBM__POS_MAJOR);
}

/* Forward: tile = (RM output pixels of the whole batch, image first or
   position first (see EBM__POS_MAJOR), one panel of output channels); a
   task takes a pixel tile's panels in turn, so the tile's tap table is
   built once for all of them (building it per panel was 7 % of a training
   iteration at n_f = 32), or, for large weights, a group of tiles through
   one panel (ebm__pt_task). The write-back does e (see
   ebm__epi): LeakyReLU in its loops (the models fuse a conv and the
   LeakyReLU after it: one pass over the output instead of three, and no
   pre-activation tensor), as is LeakyReLU'(mask) (a transposed conv's
   input gradient that is the gradient of a fused layer's output: see
   ebm__premasked); another activation, or its derivative, over each
   tile's rows once they are written. */
static void ebm__conv_fwd_epi(const ebm__cgeom *G, const float *x, const float *w, const float *b, float *y, void *scratch,
                              const ebm__epi *e)
{
    const int leaky = e->leaky;
    const float slope = e->mask ? e->ma : e->slope;
    const float *mask = e->mask && e->mact == EBM_ACT_LEAKY_RELU ? e->mask : NULL; /* in the loops below; others after them */
    unsigned char *sp = (unsigned char *)scratch;
    const int K = G->k, KK = G->k * G->k, cx = G->cx, cy = G->cy, s = G->s, p = G->p, HW = G->hy * G->wy;
    const int narrow = ebm__narrow(cy), RR = narrow ? EBM__RM1 : EBM__RM;
    const size_t CBW = ebm__panel(cy), M = (size_t)G->n * HW, n_ct = ebm__ceil_div((size_t)cy, CBW), KKC = (size_t)KK * cx;
    const int grouped = n_ct > 1 && n_ct * CBW * KKC * sizeof(float) > EBM__PANELS_HOT; /* see ebm__pt_task */
    const int pos_major = ebm__fwd_pos_major(G, RR, e);
    const long n_pt = (long)ebm__ceil_div(M, (size_t)RR), n_tasks = ebm__pt_tasks(n_pt, n_ct, grouped);
    float *zero, *Bp;
    long task;
    if (ebm__few_cx(G) && G->k * G->k * cx <= EBM__FEW_TAPS) { ebm__conv_fwd_few(G, x, w, b, y, scratch, e); return; }
    zero = (float *)ebm__carve(&sp, (size_t)cx * sizeof(float));
    memset(zero, 0, (size_t)cx * sizeof(float));
    /* B: the weights (tap, ci) x co in contiguous panels (faster to stream
       than reading rows of cy floats in place, measured) */
    Bp = (float *)ebm__carve(&sp, n_ct * CBW * KKC * sizeof(float));
    ebm__pack(w, KKC, (size_t)cy, (size_t)cy, Bp, CBW);
    EBM__PARALLEL_FOR(n_tasks, n_tasks > 1)
    for (task = 0; task < n_tasks; task++) {
        long pt, pt0, pt1;
        size_t ct0, ct1;
        ebm__pt_task(task, n_pt, n_ct, grouped, &pt0, &pt1, &ct0, &ct1);
        for (pt = pt0; pt < pt1; pt++) {
            const size_t m0 = (size_t)pt * (size_t)RR;
            const int nr = M - m0 < (size_t)RR ? (int)(M - m0) : RR;
            const float *ap[EBM__TAPS * EBM__ROWS], *bt[EBM__TAPS];
            int pn[EBM__ROWS], ph[EBM__ROWS], pw[EBM__ROWS];
            size_t pix[EBM__ROWS], ct;
            float tmp[EBM__TILE];
            int r, q, t0, kept = 0, fresh;
            { /* pixel m0's (image, row, column) by division, the next ones by counting */
                const int pos = (int)(pos_major ? m0 / (size_t)G->n : m0 % (size_t)HW);
                int n_ = (int)(pos_major ? m0 % (size_t)G->n : m0 / (size_t)HW), ho = pos / G->wy, wo = pos % G->wy;
                for (r = 0; r < RR; r++) {
                    pn[r] = n_; ph[r] = ho * s - p; pw[r] = wo * s - p;
                    pix[r] = ((size_t)n_ * HW + (size_t)ho * G->wy + (size_t)wo) * cy;
                    if (r + 1 >= nr) continue; /* a short tile repeats its last pixel */
                    if (pos_major) { if (++n_ == G->n) { n_ = 0; if (++wo == G->wy) { wo = 0; ho++; } } }
                    else if (++wo == G->wy) { wo = 0; if (++ho == G->hy) { ho = 0; n_++; } }
                }
            }
            ebm__prefetch_rows(y, mask, pix, nr < EBM__ROWS ? nr : EBM__ROWS, ct0 * CBW, ct1 * CBW < (size_t)cy ? ct1 * CBW : (size_t)cy);
            for (ct = ct0; ct < ct1; ct++) {
                const int co0 = (int)(ct * CBW), nc = cy - co0 < (int)CBW ? cy - co0 : (int)CBW;
                for (t0 = 0, fresh = 1; t0 < KK; t0 += EBM__TAPS) {
                    const int nt = KK - t0 < EBM__TAPS ? KK - t0 : EBM__TAPS;
                    if (ct == ct0 || KK > EBM__TAPS)
                        kept = ebm__tap_table(x, G->hx, G->wx, cx, zero, pn, ph, pw, 1, K, RR, t0, nt,
                                              Bp + ct * KKC * CBW, (size_t)cx * CBW, ap, bt);
                    else /* one table serves all panels: the same taps, the next panel's weights */
                        for (q = 0; q < kept; q++) bt[q] += KKC * CBW;
                    if (kept) ebm__mk_taps(ap, bt, kept, cx, CBW, tmp, fresh, narrow), fresh = 0;
                }
                if (fresh) memset(tmp, 0, sizeof tmp); /* no tap inside */
                for (r = 0; r < nr && r < EBM__ROWS; r++) {
                    float *o = y + pix[r] + co0;
                    ebm__store_row(o, tmp + r * (int)CBW, b ? b + co0 : NULL, mask ? mask + pix[r] + co0 : NULL, leaky, slope, nc);
                }
            }
            if (e->ya || (e->mask && !mask)) { /* the tile's other epilogues, on its panels' part of each row */
                const size_t c0 = ct0 * CBW, c1 = ct1 * CBW < (size_t)cy ? ct1 * CBW : (size_t)cy;
                const int whole = !pos_major && c0 == 0 && c1 == (size_t)cy; /* then its rows are one range */
                for (r = 0; r < (whole ? 1 : nr); r++) {
                    const size_t off = pix[r] + c0, len = whole ? (size_t)nr * cy : c1 - c0;
                    if (e->ya) ebm__act_val_range(e->act, e->a, y + off, e->ya + off, e->yd ? e->yd + off : NULL, len);
                    else ebm__act_bwd_range(e->mact, e->ma, e->mask + off, y + off, y + off, len);
                }
            }
        }
    }
}

/* The forward with LeakyReLU or none, as the tests and benchmarks call it. */
EBM__REFERENCE void ebm__conv_fwd(const ebm__cgeom *G, const float *x, const float *w, const float *b, float *y, void *scratch,
                                  int leaky, float slope)
{
    ebm__epi e;
    memset(&e, 0, sizeof e);
    e.leaky = leaky; e.slope = slope;
    ebm__conv_fwd_epi(G, x, w, b, y, scratch, &e);
}

/* Input gradient (and transposed convolution), phase by phase: the input
   pixels (hi, wi) with (hi + p) mod s = ph (and likewise pw) receive only
   the taps kh = ph + s a, kw = pw + s e, from gy pixel
   ((hi + p - kh) / s, (wi + p - kw) / s).
   Near the border some of those gy pixels are outside gy: on a 4x4
   stride-2 layer from 7x7 to 3x3 only 62 % of the taps are inside. Phases
   of up to EBM__POS_MAJOR positions are taken position first, as the
   forward's small outputs are (see there). Measured (net28_nf32, batch 64,
   on the AMD EPYC of v0.5): that layer's input gradient 2.90 -> 2.29 ms,
   the 14x14 one's 2.57 -> 2.40; the whole step of nf64 65 -> 60 ms. The
   limit was 256 positions; on an Intel Xeon (2 MB L2) the 14x14 phases of
   the 28x28x32 input gradient ran faster image first (medians of 30 paired
   runs: 6.7 -> 5.2 ms), while the 7x7 ones of the next layer ran 7 %
   slower that way: hence 128. */

/* The input gradient in the tap form (ebm__bwd_taps). With few input
   channels a panel of them would be mostly zeros, so the products run the
   other way:
   each gy pixel's contribution to each of the T = (kh, kw, ci) taps,
   P = gy W^T, is a 1x1 convolution from cy channels to T, on the forward's
   micro-kernel with its vectors along the taps (one tap, the pixels' gy rows
   read in place); each tile's P is then added into place in gx (col2im),
   pixel by pixel and tap by tap. Images are split between threads, so no
   two threads add into the same pixel and every sum has one fixed order.
   Measured (batch 64, AVX-512, three runs each, against the form before it,
   which summed across the channels of a vector per pixel and tap): the
   28x28 3x3 first layers 1 -> 32 0.80-0.86 -> 0.36 ms, 1 -> 16 0.68 ->
   0.29 ms, 3 -> 32 (32x32) 2.7 -> 1.15 ms; the generator's last layer
   (14x14x64 -> 28x28x1, transposed) 0.88 -> 0.17 ms. With one vector of
   input channels, the phase form's narrow tiles load a broadcast per
   product (16 pixels x 1 vector), where here a tile is the wide 8 pixels x
   2 vectors of taps and the col2im adds whole vectors: net28_nf16's
   28x28x16 input gradient 0.78-0.90 of its time (medians of 31 paired
   runs in three sets, batch 64, 2 threads; with 32 channels, two vectors,
   1.07: that layer keeps the phase form). An activation's derivative (e->mask) or a
   fused LeakyReLU (e->leaky) is applied image by image while the image is
   in cache: the same element-wise bits as a pass over all of gx. */
static void ebm__conv_bwd_data_few(const ebm__cgeom *G, const float *gy, const float *w, const float *b, float *gx, void *scratch,
                                   const ebm__epi *e)
{
    unsigned char *sp = (unsigned char *)scratch;
    const int K = G->k, cx = G->cx, cy = G->cy, T = K * K * cx, s = G->s, p = G->p, HW = G->hy * G->wy;
    const int narrow = ebm__narrow(T), RR = narrow ? EBM__RM1 : EBM__RM;
    const int qs = cx % EBM__VL == 0 ? EBM__VL : 1; /* col2im: a tap's channels a vector at a time, or one */
    const size_t CBW = ebm__panel(T), n_ct = ebm__ceil_div((size_t)T, CBW), per_x = (size_t)G->hx * G->wx * cx;
    const float slope = e->mask ? e->ma : e->slope;
    float *Bp = (float *)ebm__carve(&sp, n_ct * CBW * cy * sizeof(float));
    int *tap_h = (int *)ebm__carve(&sp, 3 * (size_t)T * sizeof(int)), *tap_w = tap_h + T, *tap_c = tap_w + T;
    size_t ct;
    long i;
    int t, c;
    /* B: the weights, co x (kh, kw, ci), in panels of CBW taps: Bp[(ct cy + co) CBW + q] */
    for (ct = 0; ct < n_ct; ct++)
        for (c = 0; c < cy; c++)
            for (t = 0; t < (int)CBW; t++) {
                const size_t tap = ct * CBW + (size_t)t;
                Bp[(ct * cy + (size_t)c) * CBW + (size_t)t] = tap < (size_t)T ? w[tap * cy + (size_t)c] : 0.0f;
            }
    for (t = 0; t < T; t++) { tap_h[t] = t / (K * cx) - p; tap_w[t] = t / cx % K - p; tap_c[t] = t % cx; }
    EBM__PARALLEL_FOR(G->n, G->n > 1)
    for (i = 0; i < G->n; i++) {
        float *xi = gx + (size_t)i * per_x;
        const float *gi = gy + (size_t)i * HW * cy;
        const float *ap[EBM__TAPS * EBM__ROWS];
        float tmp[EBM__TILE];
        size_t j, kt;
        int m0, r, r0, r1, q;
        if (!b) memset(xi, 0, per_x * sizeof(float));
        else for (j = 0; j < per_x; j += (size_t)cx) for (q = 0; q < cx; q++) xi[j + (size_t)q] = b[q];
        for (m0 = 0; m0 < HW; m0 += RR) {
            const int nr = HW - m0 < RR ? HW - m0 : RR;
            for (r = 0; r < RR; r++) ap[r] = gi + (size_t)(m0 + (r < nr ? r : nr - 1)) * cy; /* a short tile repeats its last pixel */
            for (kt = 0; kt < n_ct; kt++) {
                const float *bt = Bp + kt * cy * CBW;
                const int nq = T - (int)(kt * CBW) < (int)CBW ? T - (int)(kt * CBW) : (int)CBW;
                ebm__mk_taps(ap, &bt, 1, cy, CBW, tmp, 1, narrow);
                /* col2im, run by run of the tile's pixels on one gy row, tap by
                   tap: each tap's pixels land on one gx row, s pixels apart,
                   those inside for a range of r (no test in the inner loop) */
                for (r0 = 0; r0 < nr; r0 = r1) {
                    const int oy = (m0 + r0) / G->wy, ox0 = (m0 + r0) % G->wy;
                    r1 = r0 + (G->wy - ox0 < nr - r0 ? G->wy - ox0 : nr - r0);
                    for (q = 0; q < nq; q += qs) {
                        const int tq = (int)(kt * CBW) + q, hi = oy * s + tap_h[tq], w0 = ox0 * s + tap_w[tq];
                        /* r in [ra, rb): 0 <= w0 + (r - r0) s < wx */
                        const int ra = r0 + (w0 < 0 ? (-w0 + s - 1) / s : 0);
                        const int rb = w0 >= G->wx ? r0 : (r1 < r0 + (G->wx - 1 - w0) / s + 1 ? r1 : r0 + (G->wx - 1 - w0) / s + 1);
                        float *o;
                        const float *pr = tmp + q + ra * (int)CBW;
                        if (hi < 0 || hi >= G->hx || ra >= rb) continue;
                        o = xi + ((size_t)hi * G->wx + (size_t)(w0 + (ra - r0) * s)) * cx + (size_t)tap_c[tq];
                        if (qs > 1) /* a vector of one tap's channels */
                            for (r = 0; r < rb - ra; r++) {
                                float *orow = o + (size_t)r * s * cx;
                                ebm__vstore(orow, ebm__vadd(ebm__vload(orow), ebm__vload(pr + r * (int)CBW)));
                            }
                        else for (r = 0; r < rb - ra; r++) o[(size_t)r * s * cx] += pr[r * (int)CBW];
                    }
                }
            }
        }
        if (e->mask) ebm__act_bwd_range(e->mact, e->ma, e->mask + (size_t)i * per_x, xi, xi, per_x);
        if (e->leaky) ebm__act_range(EBM_ACT_LEAKY_RELU, 0, slope, xi, xi, per_x);
    }
}

/* The input gradient of a stride-1 layer with few input channels and
   whole vectors of output channels (the reference nets' first layers):
   each gx element is a dot product, over the taps and the cy channels, of
   gy rows read in place with weight rows read in place, gx(hi, wi, ci) =
   sum over (kh, kw) inside of gy(hi + p - kh, wi + p - kw, :) .
   w(kh, kw, ci, :), summed lane by lane and added across the lanes at the
   end. A task is one gx row of one image; pixels whose taps all fall inside
   gy go EBM__DOT_PX at a time (their sums in registers, the last block
   overlapping the one before it), the others one at a time. No products
   to scatter back, unlike ebm__conv_bwd_data_few below. */
static int ebm__bwd_few_direct(const ebm__cgeom *G)
{
    return G->s == 1 && G->cy % EBM__VL == 0 && G->k * G->k <= EBM__FEW_TAPS;
}

/* out[l] = the sum of a[l]'s lanes, l < EBM__VL: the lanes of pairs of
   vectors added, then of pairs of those, ..., log2(VL) rounds of VL / 2
   adds each, the last one a vector of the VL sums (ebm__vhsum on each was
   most of the 28x28x16 -> 28x28x1 input gradient's time: 4 shuffles and 4
   adds per pixel against 9 FMAs). Round k (ebm__fold) keeps the lanes
   whose bit k is set from y, the others from x, and adds to each the lane
   2^k away in the same vector. Each sum is added up in the same order
   (adjacent lanes, then adjacent pairs, ...) whatever l is. */
#if EBM__VL == 16
EBM__INLINE __m512 ebm__fold(__m512 x, __m512 y, int k)
{
    static const __mmask16 upper[4] = { 0xaaaa, 0xcccc, 0xf0f0, 0xff00 };
    const __m512 keep = _mm512_mask_blend_ps(upper[k], x, y), move = _mm512_mask_blend_ps(upper[k], y, x);
    __m512 moved; /* (maskz forms: g++ 12 warns on the unmasked ones, as in ebm__vhsum) */
    if (k == 0) moved = _mm512_maskz_permute_ps((__mmask16)0xffff, move, 0xb1);
    else if (k == 1) moved = _mm512_maskz_permute_ps((__mmask16)0xffff, move, 0x4e);
    else if (k == 2) moved = _mm512_maskz_shuffle_f32x4((__mmask16)0xffff, move, move, 0xb1);
    else moved = _mm512_maskz_shuffle_f32x4((__mmask16)0xffff, move, move, 0x4e);
    return _mm512_add_ps(keep, moved);
}
#elif EBM__VL == 8
EBM__INLINE __m256 ebm__fold(__m256 x, __m256 y, int k)
{
    __m256 keep, move;
    if (k == 0) {
        keep = _mm256_blend_ps(x, y, 0xaa); move = _mm256_blend_ps(y, x, 0xaa);
        return _mm256_add_ps(keep, _mm256_permute_ps(move, 0xb1));
    }
    if (k == 1) {
        keep = _mm256_blend_ps(x, y, 0xcc); move = _mm256_blend_ps(y, x, 0xcc);
        return _mm256_add_ps(keep, _mm256_permute_ps(move, 0x4e));
    }
    keep = _mm256_blend_ps(x, y, 0xf0); move = _mm256_blend_ps(y, x, 0xf0);
    return _mm256_add_ps(keep, _mm256_permute2f128_ps(move, move, 0x01));
}
#endif
EBM__INLINE void ebm__vsum_lanes(const ebm__vf *a, float *out)
{
#if EBM__VL == 16 || EBM__VL == 8
    ebm__vf r[EBM__VL];
    int n, i, k;
    for (i = 0; i < EBM__VL; i++) r[i] = a[i];
    for (k = 0, n = EBM__VL / 2; n >= 1; k++, n /= 2)
        for (i = 0; i < n; i++) r[i] = ebm__fold(r[2 * i], r[2 * i + 1], k);
    ebm__vstore(out, r[0]);
#elif EBM__VL == 4
    vst1q_f32(out, vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]))); /* (pairwise adds do it directly) */
#else
    out[0] = a[0];
#endif
}

/* EBM__DOT_PX gx pixels, channel ci, over the nt taps listed in tap[]:
   pixel i's tap t reads gy row gn + o0 + goff[t] + i cy (o0: where tap
   (0, 0) of pixel 0 would read, maybe outside gy; the sum is inside): 16
   sums in flight where the vector registers hold them (AVX-512's and
   NEON's 32), 8 on AVX2's 16. Inlined with cy a constant where it is 16
   or 32, so that the pixels' rows are one base and constant offsets (a
   variable cy kept 16 row pointers, which do not fit the integer
   registers: spilled, reloaded at every tap). */
#define EBM__DOT_PX (EBM__VL == 8 ? 8 : 16)
EBM__INLINE void ebm__few_dot_px(const float *gn, ptrdiff_t o0, const ptrdiff_t *goff, const int *tap, int nt, const float *w,
                                 int cx, int ci, const int cy, float bias, float *o, int ocs)
{
    ebm__vf acc[EBM__DOT_PX];
    float sum[EBM__DOT_PX];
    int i, j, v;
    for (i = 0; i < EBM__DOT_PX; i++) acc[i] = ebm__vzero();
    for (j = 0; j < nt; j++) {
        const float *gt = gn + (o0 + goff[tap[j]]), *wt = w + ((size_t)tap[j] * cx + (size_t)ci) * cy;
        for (v = 0; v < cy; v += EBM__VL) {
            const ebm__vf wv = ebm__vload(wt + v);
            for (i = 0; i < EBM__DOT_PX; i++) acc[i] = ebm__vfma(ebm__vload(gt + (size_t)i * cy + v), wv, acc[i]);
        }
    }
    for (i = 0; i < EBM__DOT_PX; i += EBM__VL) ebm__vsum_lanes(acc + i, sum + i);
    for (i = 0; i < EBM__DOT_PX; i++) o[(size_t)i * ocs] = sum[i] + bias;
}

static void ebm__conv_bwd_data_direct(const ebm__cgeom *G, const float *gy, const float *w, const float *b, float *gx)
{
    const int K = G->k, KK = K * K, cx = G->cx, cy = G->cy, p = G->p;
    /* gx columns whose taps are all inside gy horizontally: wi in [wa, wb] */
    const int wa = K - 1 - p, wb = G->wy - 1 - p;
    const long n_rows = (long)G->n * G->hx;
    ptrdiff_t goff[EBM__FEW_TAPS]; /* tap t's gy pixel (hi + p - kh, wi + p - kw) from that of tap (0, 0) */
    long task;
    int t;
    for (t = 0; t < KK; t++) goff[t] = -((ptrdiff_t)(t / K) * G->wy + t % K) * cy;
    EBM__PARALLEL_FOR(n_rows, n_rows > 1)
    for (task = 0; task < n_rows; task++) {
        const int n = (int)(task / G->hx), hi = (int)(task % G->hx);
        const float *gn = gy + (size_t)n * G->hy * G->wy * cy;
        float *xr = gx + (size_t)task * G->wx * cx;
        int tap[EBM__FEW_TAPS], nt = 0; /* the row's taps inside gy vertically (all but at a top or bottom row) */
        int wi, ci, kh, kw, v;
        for (kh = 0; kh < K; kh++) /* (in (kh, kw) order, without a division per tap) */
            if (hi + p - kh >= 0 && hi + p - kh < G->hy) for (kw = 0; kw < K; kw++) tap[nt++] = kh * K + kw;
        for (wi = 0; wi < G->wx;) {
            if (wi >= wa && wi <= wb && wb - wa + 1 >= EBM__DOT_PX) {
                const int w_ = wi + EBM__DOT_PX <= wb + 1 ? wi : wb + 1 - EBM__DOT_PX; /* see ebm__conv_fwd_few */
                const ptrdiff_t o0 = ((ptrdiff_t)(hi + p) * G->wy + (ptrdiff_t)(w_ + p)) * cy;
                for (ci = 0; ci < cx; ci++) {
                    const float bias = b ? b[ci] : 0.0f;
                    float *o = xr + (size_t)w_ * cx + ci;
                    if (cy == 16) ebm__few_dot_px(gn, o0, goff, tap, nt, w, cx, ci, 16, bias, o, cx);
                    else if (cy == 32) ebm__few_dot_px(gn, o0, goff, tap, nt, w, cx, ci, 32, bias, o, cx);
                    else ebm__few_dot_px(gn, o0, goff, tap, nt, w, cx, ci, cy, bias, o, cx);
                }
                wi = w_ + EBM__DOT_PX;
                continue;
            }
            for (ci = 0; ci < cx; ci++) { /* a pixel at a left or right edge: the taps inside gy one by one */
                ebm__vf acc = ebm__vzero();
                for (kh = 0; kh < K; kh++) {
                    const int ho = hi + p - kh;
                    if (ho < 0 || ho >= G->hy) continue;
                    for (kw = 0; kw < K; kw++) {
                        const int wo = wi + p - kw;
                        const float *gt = gn + ((size_t)ho * G->wy + (size_t)wo) * cy;
                        const float *wt = w + (((size_t)kh * K + (size_t)kw) * cx + (size_t)ci) * cy;
                        if (wo < 0 || wo >= G->wy) continue;
                        for (v = 0; v < cy; v += EBM__VL) acc = ebm__vfma(ebm__vload(gt + v), ebm__vload(wt + v), acc);
                    }
                }
                xr[(size_t)wi * cx + ci] = ebm__vhsum(acc) + (b ? b[ci] : 0.0f);
            }
            wi++;
        }
    }
}

#define EBM__TR_ROWS 8 /* weight rows transposed together (the packing below; ebm__transpose8) */

/* Panels of `width` rows of src (rows x cols), transposed: out[(i cols + c)
   width + q] = src[(i width + q) cols + c], zeros past the last row. */
static void ebm__pack_t(const float *src, size_t rows, size_t cols, float *out, size_t width)
{
    size_t i, c, q;
    for (i = 0; i < ebm__ceil_div(rows, width); i++)
        for (c = 0; c < cols; c++)
            for (q = 0; q < width; q++)
                out[(i * cols + c) * width + q] = i * width + q < rows ? src[(i * width + q) * cols + c] : 0.0f;
}

/* tr[q][r] = tmp[r CB + q]: a wide tile's sums, transposed (8x8 blocks
   through registers where a tile has 8 rows). */
static void ebm__transpose_tile(const float *tmp, float tr[EBM__CB][EBM__RM])
{
#if EBM__RM == 8
    int q0, k;
    for (q0 = 0; q0 < EBM__CB; q0 += 8) {
        const float *row[8];
        for (k = 0; k < 8; k++) row[k] = tmp + k * EBM__CB + q0;
        ebm__transpose8(row, &tr[q0][0], EBM__RM);
    }
#else
    int r, q;
    for (r = 0; r < EBM__RM; r++)
        for (q = 0; q < EBM__CB; q++) tr[q][r] = tmp[r * EBM__CB + q];
#endif
}

/* The input gradient when it is a dense product (ebm__bwd_dense): with gy
   one pixel per image and every tap inside, gx[n][j] = sum over c of
   gy[n][c] w[j][c] for j = (kh, kw, ci), J of them, with w a J x cy matrix
   read in place. So the roles turn: a tile is 8 rows j x a panel of 32
   images, the rows' weights broadcast from w as it is, and gy, transposed
   (cy x 32 images, a few KB), the panel; the tile is written transposed,
   8x8 blocks through registers. The phase form above packed the weights
   transposed on every call (2.5 MB for the generator's 1x1 -> 7x7 layer, a
   quarter of that pass) and built a 49-tap table per tile for its one tap
   inside. Every element is the same sum in the same order, over c, as that
   form's: the same products (the two factors swapped), the same bits. */
static void ebm__conv_bwd_data_dense(const ebm__cgeom *G, const float *gy, const float *w, const float *b, float *gx,
                                     void *scratch, const ebm__epi *e)
{
    const int cx = G->cx, cy = G->cy, N = G->n;
    const size_t J = (size_t)G->k * G->k * cx, n_rt = ebm__ceil_div(J, EBM__RM), n_nt = ebm__ceil_div((size_t)N, EBM__CB);
    const float slope = e->mask ? e->ma : e->slope;
    const float *mask = e->mask && e->mact == EBM_ACT_LEAKY_RELU ? e->mask : NULL;
    unsigned char *sp = (unsigned char *)scratch;
    float *Bt = (float *)ebm__carve(&sp, n_nt * EBM__CB * (size_t)cy * sizeof(float));
    long task;
    ebm__pack_t(gy, (size_t)N, (size_t)cy, Bt, EBM__CB); /* Bt[(nt cy + c) CB + q] = gy[nt CB + q][c], zeros past N */
    EBM__PARALLEL_FOR((long)(n_rt * n_nt), n_rt * n_nt > 1)
    for (task = 0; task < (long)(n_rt * n_nt); task++) {
        const size_t rt = (size_t)task / n_nt, nt = (size_t)task % n_nt, j0 = rt * EBM__RM, n0 = nt * EBM__CB;
        const int nr = J - j0 < EBM__RM ? (int)(J - j0) : EBM__RM, nq = N - (int)n0 < EBM__CB ? N - (int)n0 : EBM__CB;
        const float *ap[EBM__RM], *bt = Bt + nt * cy * EBM__CB;
        float tmp[EBM__TILE], tr[EBM__CB][EBM__RM], bias[EBM__RM];
        int r, q;
        for (r = 0; r < EBM__RM; r++) {
            const size_t j = j0 + (size_t)(r < nr ? r : nr - 1); /* a short tile repeats its last row */
            ap[r] = w + j * (size_t)cy;
            bias[r] = b ? b[j % (size_t)cx] : 0.0f;
        }
        ebm__mk_taps_wide(ap, &bt, 1, cy, EBM__CB, tmp, 1);
        ebm__transpose_tile(tmp, tr); /* tr[q][r] = tmp[r CB + q] */
        for (q = 0; q < nq; q++) {
            float *o = gx + (n0 + (size_t)q) * J + j0;
            const float *mk = mask ? mask + (n0 + (size_t)q) * J + j0 : NULL;
#if EBM__VL > 1
            ebm__store_part(o, tr[q], bias, mk, e->leaky, slope, nr);
#else /* (g++ -O3 takes bias as maybe uninitialised through ebm__store_part here) */
            for (r = 0; r < nr; r++) { const float v = tr[q][r] + bias[r]; o[r] = (mk ? mk[r] > 0 : !e->leaky || v > 0) ? v : slope * v; }
#endif
            if (e->mask && !mask) ebm__act_bwd_range(e->mact, e->ma, e->mask + (n0 + (size_t)q) * J + j0, o, o, (size_t)nr);
        }
    }
}

/* The input gradient, and the transposed convolution. With e->mask (see
   ebm__premasked: gx is the gradient of a node of the same shape whose
   gradient is held multiplied) the write-back applies that activation's
   derivative as well, LeakyReLU's in its loops, another's on each
   pixel's channels after them: the same products as the separate pass
   over gx it saves. With e->leaky (a transposed conv fused with the
   LeakyReLU after it) the write-back applies LeakyReLU(slope) to the sum
   plus bias. */
static void ebm__conv_bwd_data_epi(const ebm__cgeom *G, const float *gy, const float *w, const float *b, float *gx,
                                   void *scratch, const ebm__epi *e)
{
    const int leaky = e->leaky;
    const float slope = e->mask ? e->ma : e->slope;
    const float *mask = e->mask && e->mact == EBM_ACT_LEAKY_RELU ? e->mask : NULL; /* in the loops below; others after them */
    unsigned char *sp = (unsigned char *)scratch;
    const int K = G->k, cx = G->cx, cy = G->cy, s = G->s, p = G->p;
    const int narrow = ebm__narrow(cx), RR = narrow ? EBM__RM1 : EBM__RM;
    const size_t CBW = ebm__panel(cx), n_ct = ebm__ceil_div((size_t)cx, CBW);
    int ph, pw, n_ph = 0, g0, g1, fi, interleave;
    long n_pt, pt;
    float *zero, *Bp;
    ebm__phase *P;
    EBM_ASSERT(!e->ya); /* (no caller asks it) */
    if (ebm__bwd_dense(G)) { ebm__conv_bwd_data_dense(G, gy, w, b, gx, scratch, e); return; }
    if (ebm__few_cx(G) && ebm__bwd_few_direct(G)) { /* (a first layer's input is never masked: the pass after is kept for any other) */
        ebm__conv_bwd_data_direct(G, gy, w, b, gx);
        if (e->mask) ebm__act_bwd(e->mact, e->ma, e->mask, gx, gx, (size_t)G->n * G->hx * G->wx * cx);
        if (leaky) ebm__act_fwd(EBM_ACT_LEAKY_RELU, 0, slope, gx, gx, (size_t)G->n * G->hx * G->wx * cx);
        return;
    }
    if (ebm__bwd_taps(G)) { ebm__conv_bwd_data_few(G, gy, w, b, gx, scratch, e); return; }
    zero = (float *)ebm__carve(&sp, (size_t)cy * sizeof(float));
    memset(zero, 0, (size_t)cy * sizeof(float));
    Bp = (float *)ebm__carve(&sp, n_ct * CBW * K * K * cy * sizeof(float));
    P = (ebm__phase *)ebm__carve(&sp, (size_t)s * s * sizeof *P);
    interleave = n_ct * CBW * (size_t)K * K * cy * sizeof(float) <= EBM__PANELS_HOT; /* see below */
    for (ph = 0; ph < s; ph++)
        for (pw = 0; pw < s; pw++) {
            ebm__phase *f = &P[n_ph++];
            const int fh = ((ph - p) % s + s) % s, fw = ((pw - p) % s + s) % s; /* first row / column of the phase */
            f->ph = ph; f->pw = pw; f->fh = fh; f->fw = fw;
            f->th = ph < K ? (K - ph + s - 1) / s : 0;
            f->tw = pw < K ? (K - pw + s - 1) / s : 0;
            f->nt_all = f->th * f->tw;
            f->KC = (size_t)f->nt_all * cy;
            f->cnt_h = fh < G->hx ? (G->hx - fh + s - 1) / s : 0;
            f->cnt_w = fw < G->wx ? (G->wx - fw + s - 1) / s : 0;
            f->per = (size_t)f->cnt_h * f->cnt_w;
            f->M = (size_t)G->n * f->per;
            /* the phase's pixels in the order (image, position), or (position, image) when
               gy is tiny (a 1x1 -> 7x7 transposed conv: the tile's pixels then share their
               taps) or the phase small and the batch fills a tile (see above) */
            f->pos_major = G->hy * G->wy <= 4 || (G->n >= RR && f->per <= EBM__POS_MAJOR);
            f->qh0 = (fh + p - ph) / s; f->qw0 = (fw + p - pw) / s; /* exact: fh + p - ph is a multiple of s, >= 0 */
            f->n_pt = (long)ebm__ceil_div(f->M, (size_t)RR);
            f->Bp = Bp; /* interleaved, the phases' panels one after another; else each in the same place */
            if (interleave) Bp += n_ct * f->KC * CBW;
        }
    /* With small weights (all phases' panels together within
       EBM__PANELS_HOT), a task is tile pt of every phase in turn: the
       phases' tiles of the same pixels together, so that a region of gx is
       written at once rather than one pixel in s^2 at a time, s^2 times
       over (net28_nf16's 28x28x16 input gradient: 0.87 of its time, medians
       of 21 paired runs). Larger weights go phase by phase, each packed
       just before it is used, so that one phase's panels stay in cache
       (interleaved, the 7x7x128 input gradient of net28_nf32, 2 MB of
       weights, took 1.10 of its time). */
    for (g0 = 0; g0 < n_ph; g0 = g1) {
        g1 = interleave ? n_ph : g0 + 1;
        for (fi = g0, n_pt = 0; fi < g1; fi++) {
            const ebm__phase *f = &P[fi];
            long t;
            n_pt = f->n_pt > n_pt ? f->n_pt : n_pt;
            /* phase fi's taps of the weights, transposed so the input channel runs fastest:
               panels Bp[(i KC + (tap, co)) CBW + c], a (tap, panel) block at a time, 8
               weight rows w[kh][kw][ci][.] (the zero row past cx) read in order
               together, so each co's 8 values are one contiguous store (reading down
               the columns, cy floats apart, and computing each address was 30 % of a
               1x1 -> 7x7 transposed conv; a row at a time, one scattered store per
               value, the copy was a third of that conv's time) */
            EBM__PARALLEL_FOR((long)(f->nt_all * n_ct), f->KC * n_ct * CBW > 16384) /* by the floats packed, as ebm__pack */
            for (t = 0; t < (long)(f->nt_all * n_ct); t++) {
                const size_t tap = (size_t)t / n_ct, ii = (size_t)t % n_ct;
                const int kh = f->ph + s * (int)(tap / f->tw), kw = f->pw + s * (int)(tap % f->tw);
                float *dst = f->Bp + (ii * f->KC + tap * cy) * CBW;
                const float *tw0 = w + ((size_t)kh * K + kw) * cx * cy; /* tap (kh, kw)'s rows */
                size_t cc, k;
                int co;
                for (cc = 0; cc < CBW; cc += EBM__TR_ROWS) {
                    const float *row[EBM__TR_ROWS];
                    const size_t nk = CBW - cc < EBM__TR_ROWS ? CBW - cc : EBM__TR_ROWS;
                    for (k = 0; k < EBM__TR_ROWS; k++)
                        row[k] = k < nk && ii * CBW + cc + k < (size_t)cx ? tw0 + (ii * CBW + cc + k) * cy : zero;
                    if (nk == EBM__TR_ROWS) {
                        for (co = 0; co + 8 <= cy; co += 8) {
                            const float *r8[EBM__TR_ROWS];
                            for (k = 0; k < EBM__TR_ROWS; k++) r8[k] = row[k] + co;
                            ebm__transpose8(r8, dst + (size_t)co * CBW + cc, CBW);
                        }
                        for (; co < cy; co++)
                            for (k = 0; k < EBM__TR_ROWS; k++) dst[(size_t)co * CBW + cc + k] = row[k][co];
                    } else
                        for (co = 0; co < cy; co++)
                            for (k = 0; k < nk; k++) dst[(size_t)co * CBW + cc + k] = row[k][co];
                }
            }
        }
        EBM__PARALLEL_FOR(n_pt, n_pt > 1)
        for (pt = 0; pt < n_pt; pt++) {
          int fj;
          for (fj = g0; fj < g1; fj++) { /* a pixel tile of phase fj, its panels in turn (as the forward) */
            const ebm__phase F = P[fj], *f = &F; /* a copy: no reloads after each store to the tables */
            const size_t m0 = (size_t)pt * (size_t)RR;
            const int nr = pt >= f->n_pt ? 0 : f->M - m0 < (size_t)RR ? (int)(f->M - m0) : RR;
            const float *ap[EBM__TAPS * EBM__ROWS], *bt[EBM__TAPS];
            size_t pix[EBM__ROWS], ct;
            int pn[EBM__ROWS], qh[EBM__ROWS], qw[EBM__ROWS];
            float tmp[EBM__TILE];
            int r, q, t0, kept = 0, fresh;
            if (nr == 0) continue;
            { /* pixel m0's (image, position) by division, the next ones by counting */
                int n_ = (int)(f->pos_major ? m0 % (size_t)G->n : m0 / f->per);
                const int pos = (int)(f->pos_major ? m0 / (size_t)G->n : m0 % f->per);
                int a = pos / f->cnt_w, e = pos % f->cnt_w;
                for (r = 0; r < RR; r++) {
                    const int hi = f->fh + s * a, wi = f->fw + s * e;
                    pn[r] = n_;
                    qh[r] = a + f->qh0; /* gy row of tap a = 0: (hi + p - ph) / s */
                    qw[r] = e + f->qw0;
                    pix[r] = (((size_t)n_ * G->hx + hi) * G->wx + wi) * cx;
                    if (r + 1 >= nr) continue; /* a short tile repeats its last pixel */
                    if (f->pos_major) { if (++n_ == G->n) { n_ = 0; if (++e == f->cnt_w) { e = 0; a++; } } }
                    else if (++e == f->cnt_w) { e = 0; if (++a == f->cnt_h) { a = 0; n_++; } }
                }
            }
            /* the lines its write-back reads (the mask) and writes, fetched while
               it computes (see ebm__prefetch_rows) */
            ebm__prefetch_rows(gx, e->mask, pix, nr < EBM__ROWS ? nr : EBM__ROWS, 0, (size_t)cx);
            for (ct = 0; ct < n_ct; ct++) {
                const int c0 = (int)(ct * CBW), nc = cx - c0 < (int)CBW ? cx - c0 : (int)CBW;
                for (t0 = 0, fresh = 1; t0 < f->nt_all; t0 += EBM__TAPS) {
                    const int nt = f->nt_all - t0 < EBM__TAPS ? f->nt_all - t0 : EBM__TAPS;
                    if (ct == 0 || f->nt_all > EBM__TAPS)
                        kept = ebm__tap_table(gy, G->hy, G->wy, cy, zero, pn, qh, qw, -1, f->tw, RR, t0, nt,
                                              f->Bp + ct * f->KC * CBW, (size_t)cy * CBW, ap, bt);
                    else
                        for (q = 0; q < kept; q++) bt[q] += f->KC * CBW;
                    if (kept) ebm__mk_taps(ap, bt, kept, cy, CBW, tmp, fresh, narrow), fresh = 0;
                }
                if (fresh) memset(tmp, 0, sizeof tmp); /* no tap inside */
                for (r = 0; r < nr && r < EBM__ROWS; r++) {
                    float *o = gx + pix[r] + c0;
                    ebm__store_row(o, tmp + r * (int)CBW, b ? b + c0 : NULL, mask ? mask + pix[r] + c0 : NULL, leaky, slope, nc);
                }
            }
            if (e->mask && !mask) /* another activation's derivative, on each pixel's channels */
                for (r = 0; r < nr && r < EBM__ROWS; r++) ebm__act_bwd_range(e->mact, e->ma, e->mask + pix[r], gx + pix[r], gx + pix[r], (size_t)cx);
          }
        }
    }
}

/* The input gradient without a mask, as the tests and benchmarks call it
   (declared as the references are: the library itself may not use it). */
EBM__REFERENCE void ebm__conv_bwd_data(const ebm__cgeom *G, const float *gy, const float *w, const float *b, float *gx,
                                       void *scratch)
{
    ebm__epi e;
    memset(&e, 0, sizeof e);
    ebm__conv_bwd_data_epi(G, gy, w, b, gx, scratch, &e);
}

/* The gather form's input, zero-padded (when p > 0), and each output
   pixel m = (n, ho, wo)'s offset koff[m] in it: where tap (0, 0) reads. */
static const float *ebm__wg_input(const ebm__cgeom *G, const float *x, unsigned char **sp, ptrdiff_t **koff)
{
    const int Hp = G->hx + 2 * G->p, Wp = G->wx + 2 * G->p;
    const float *A = x;
    size_t m = 0;
    int n, ho, wo;
    if (G->p) {
        float *xp = (float *)ebm__carve(sp, (size_t)G->n * Hp * Wp * G->cx * sizeof(float));
        ebm__pad(x, G->n, G->hx, G->wx, G->cx, G->p, G->p, Hp, Wp, xp);
        A = xp;
    }
    *koff = (ptrdiff_t *)ebm__carve(sp, (size_t)G->n * G->hy * G->wy * sizeof(ptrdiff_t));
    for (n = 0; n < G->n; n++) /* nested loops, no division per pixel */
        for (ho = 0; ho < G->hy; ho++)
            for (wo = 0; wo < G->wy; wo++)
                (*koff)[m++] = (((ptrdiff_t)n * Hp + (ptrdiff_t)ho * G->s) * Wp + (ptrdiff_t)wo * G->s) * G->cx;
    return A;
}

/* The outputs o < n_out whose tap, at offset k of a kernel with stride s
   and padding p, reads inside an input of n_in: [*lo, *hi), maybe empty. */
static void ebm__tap_span(int k, int s, int p, int n_in, int n_out, int *lo, int *hi)
{
    const int last = n_in - 1 + p - k; /* o s <= last */
    *lo = k < p ? (p - k + s - 1) / s : 0;
    *hi = last < 0 ? 0 : last / s + 1 < n_out ? last / s + 1 : n_out;
}

/* Tap (kh, kw)'s runs over input channels from ci (ebm__mk_rows_run); 0 if
   the tap falls outside everywhere. */
static int ebm__wrun_tap(const ebm__cgeom *G, const float *x, int kh, int kw, int ci, ebm__wrun *R)
{
    int wo_hi;
    ebm__tap_span(kh, G->s, G->p, G->hx, G->hy, &R->ho_lo, &R->ho_hi);
    ebm__tap_span(kw, G->s, G->p, G->wx, G->wy, &R->wo_lo, &wo_hi);
    if (R->ho_lo >= R->ho_hi || R->wo_lo >= wo_hi) return 0;
    R->x = x;
    R->n = G->n; R->hy = G->hy; R->wy = G->wy; R->wl = wo_hi - R->wo_lo;
    R->xstep = (ptrdiff_t)G->s * G->cx; R->xrow = (ptrdiff_t)G->s * G->wx * G->cx; R->ximg = (ptrdiff_t)G->hx * G->wx * G->cx;
    R->x0 = ((ptrdiff_t)(kh - G->p) * G->wx + (ptrdiff_t)R->wo_lo * G->s + kw - G->p) * G->cx + ci;
    R->pf_rows = (EBM__WGR_AHEAD + R->wl - 1) / R->wl;
    if (R->pf_rows > R->ho_hi - R->ho_lo) R->pf_rows = R->ho_hi - R->ho_lo; /* (at most one image on) */
    return 1;
}

/* The row form's tables, where output rows are short: for tap t, the input
   rows xr and indices kx of the pixels where it falls inside, and chunk c's
   first in cs[c]. */
static void ebm__wg_tables(const ebm__cgeom *G, const float *x, const float **xr, int *kx, size_t *cs, size_t n_ch)
{
    const size_t M = (size_t)G->n * G->hy * G->wy;
    const int KK = G->k * G->k, cx = G->cx;
    long t;
    EBM__PARALLEL_FOR(KK, KK > 1)
    for (t = 0; t < KK; t++) {
        const int kh = (int)t / G->k, kw = (int)t % G->k;
        const float **o = xr + (size_t)t * M;
        int *ko = kx + (size_t)t * M;
        size_t *c = cs + (size_t)t * (n_ch + 1), j = 0, m = 0;
        int n, ho, wo;
        for (n = 0; n < G->n; n++)
            for (ho = 0; ho < G->hy; ho++) {
                const int hi = ho * G->s + kh - G->p;
                for (wo = 0; wo < G->wy; wo++, m++) {
                    const int wi = wo * G->s + kw - G->p;
                    if (m % EBM__WGR_CHUNK == 0) c[m / EBM__WGR_CHUNK] = j;
                    if (hi < 0 || hi >= G->hx || wi < 0 || wi >= G->wx) continue;
                    o[j] = x + (((size_t)n * G->hx + hi) * G->wx + wi) * cx;
                    ko[j++] = (int)m;
                }
            }
        c[n_ch] = j;
    }
}

/* Weight gradient, row form: tile = (RM output channels, one panel of
   input channels of one tap), summed over every output pixel of the batch
   in order, and written transposed into gw. A tap's channels are
   contiguous in the input, so each tile reads one input row per pixel as
   whole vectors, in place (no padded copy of the input: 7.4 MB for
   net28_nf32's 28x28x32 layer): along output rows of EBM__WGR_RUN_MIN
   pixels or more, as runs whose rows step by a constant (a chunk is then
   whole output rows); else through a table per tap of the row of each
   pixel where the tap falls inside the image, and that pixel's index. The pixels
   where it falls outside are left out: a row of zeros in their place took
   14 % of the products of a 4x4 stride-2 layer to 7x7 (16 % to 3x3) for
   nothing. Left out, net28_nf32's weight gradients to 7x7 and 3x3 took
   0.92 and 0.91 of their time, the generator's 7x7x128 -> 14x14x64 one
   0.95 (medians of 21 paired runs); each sum skips only zeros, the others
   in the same order, so the bits are those of the zero rows (for finite
   gy: a zero times an infinity was a NaN). gy is packed in
   panels of RM channels (zeros past cy), read as broadcasts from one row.
   A task runs a group of EBM__WGR_COLS column tiles by EBM__WGR_COS
   channel tiles over the pixels chunk by chunk, so both operands' chunks
   are read from cache by the whole group; groups shrink (column groups
   first) only below EBM__WGR_TASKS_PER_THREAD tasks per thread (larger
   groups measured faster than more tasks: on 2 threads, 4 tasks instead
   of 8 made net28_nf32's and net32c3's 32 -> 64 layers 0.95-0.97 of their
   time, medians of 31-61 paired runs; the bits do not depend on the
   groups). Medians of 14 interleaved runs, batch 64, 2 threads,
   against the gather form (padded copy, prefetch): net28_nf32's three 4x4
   layers 4.84 -> 4.01, 4.42 -> 3.35, 3.20 -> 2.67 ms; net28_nf16's 32 ->
   64 and 64 -> 128 layers 1.27 -> 0.94, 0.95 -> 0.71 ms; the 32x32x3
   net's 32 -> 64 layer 6.41 -> 5.05 ms; the generator's 7x7 -> 1x1 (cy
   100) 0.86 -> 0.67 ms. With 16 input channels (a column tile then spans
   two taps) an earlier row form, on a padded copy, was slower than the
   gather form (0.29 -> 0.36 ms), so those layers keep the gather form. */
#define EBM__WGR_COLS 8
#define EBM__WGR_COS 4
#define EBM__WGR_TASKS_PER_THREAD 2
static void ebm__conv_bwd_weight_rows(const ebm__cgeom *G, const float *x, const float *gy, float *gw, void *scratch)
{
    unsigned char *sp = (unsigned char *)scratch;
    const int cy = G->cy;
    const size_t M = (size_t)G->n * G->hy * G->wy, KC = (size_t)G->k * G->cx, row_jt = KC / EBM__CB;
    const size_t n_jt = (size_t)G->k * row_jt, n_rt = ebm__ceil_div((size_t)cy, EBM__RM); /* column tiles, channel tiles */
    const int runs = ebm__wg_runs(G), nrows = G->n * G->hy, rpc = runs ? (G->wy < EBM__WGR_CHUNK ? EBM__WGR_CHUNK / G->wy : 1) : 0;
    const size_t n_ch = runs ? ebm__ceil_div((size_t)nrows, (size_t)rpc) : ebm__ceil_div(M, EBM__WGR_CHUNK); /* chunks: of rows in runs */
    size_t gj = EBM__WGR_COLS, gc = EBM__WGR_COS, n_gc, min_tasks = (size_t)EBM__WGR_TASKS_PER_THREAD * (size_t)ebm_threads();
    long n_tasks, t;
    const int KK = G->k * G->k, cx = G->cx;
    float *gp = (float *)ebm__carve(&sp, n_rt * EBM__RM * M * sizeof(float));
    const float **xr = runs ? NULL : (const float **)ebm__carve(&sp, (size_t)KK * M * sizeof(*xr));
    int *kx = runs ? NULL : (int *)ebm__carve(&sp, (size_t)KK * M * sizeof(int));
    size_t *cs = runs ? NULL : (size_t *)ebm__carve(&sp, (size_t)KK * (n_ch + 1) * sizeof(size_t));
    EBM_ASSERT(M <= 0x7fffffff); /* (kx holds pixel indices as int; rows and runs are int) */
    if (!runs) ebm__wg_tables(G, x, xr, kx, cs, n_ch);
    /* smaller groups when there would be fewer tasks than that (column groups first: they read more) */
    while (gj > 1 && ebm__ceil_div(n_jt, gj) * ebm__ceil_div(n_rt, gc) < min_tasks) gj /= 2;
    while (gc > 1 && ebm__ceil_div(n_jt, gj) * ebm__ceil_div(n_rt, gc) < min_tasks) gc /= 2;
    n_gc = ebm__ceil_div(n_rt, gc);
    n_tasks = (long)(ebm__ceil_div(n_jt, gj) * n_gc);
    ebm__pack(gy, M, (size_t)cy, (size_t)cy, gp, EBM__RM); /* gp[(ct M + m) RM + r] = gy[m][ct RM + r] */
    EBM__PARALLEL_FOR(n_tasks, n_tasks > 1)
    for (t = 0; t < n_tasks; t++) {
        const size_t j0 = ((size_t)t / n_gc) * gj, j1 = j0 + gj < n_jt ? j0 + gj : n_jt;
        const size_t c0 = ((size_t)t % n_gc) * gc, c1 = c0 + gc < n_rt ? c0 + gc : n_rt;
        float tmp[EBM__WGR_COLS * EBM__WGR_COS][EBM__TILE];
        ebm__wrun run[EBM__WGR_COLS]; /* in runs: each column tile's, set once for all chunks */
        int inside[EBM__WGR_COLS];
        size_t jt, ct, ch;
        memset(tmp, 0, sizeof tmp);
        for (jt = j0; jt < j1 && runs; jt++) {
            const size_t j = (jt % row_jt) * EBM__CB;
            inside[jt - j0] = ebm__wrun_tap(G, x, (int)(jt / row_jt), (int)(j / (size_t)cx), (int)(j % (size_t)cx), &run[jt - j0]);
        }
        for (ch = 0; ch < n_ch; ch++)
            for (jt = j0; jt < j1; jt++) {
                const size_t j = (jt % row_jt) * EBM__CB, tap = (jt / row_jt) * G->k + j / cx; /* kernel row kh, column j */
                if (runs) { /* the chunk's rows, in runs */
                    const int q0 = (int)ch * rpc, q1 = q0 + rpc < nrows ? q0 + rpc : nrows;
                    ebm__wrun *R = &run[jt - j0];
                    for (ct = c0; ct < c1 && inside[jt - j0]; ct++) {
                        R->g = gp + ct * M * EBM__RM;
                        ebm__mk_rows_run(R, q0, q1, tmp[(jt - j0) * gc + ct - c0]);
                    }
                } else { /* the chunk's pixels inside, from the tap's table */
                    const size_t *c = cs + tap * (n_ch + 1), a = c[ch], kn = c[ch + 1] - a;
                    for (ct = c0; ct < c1 && kn; ct++)
                        ebm__mk_rows(xr + tap * M + a, kx + tap * M + a, j % cx, kn, c[n_ch] - a, gp + ct * M * EBM__RM,
                                     EBM__RM, tmp[(jt - j0) * gc + ct - c0]);
                }
            }
        for (jt = j0; jt < j1; jt++)
            for (ct = c0; ct < c1; ct++) { /* gw[(kh, kw, ci)][co] = tile[co][j] */
                const float *tr = tmp[(jt - j0) * gc + ct - c0];
                const int co0 = (int)ct * EBM__RM, nr = cy - co0 < EBM__RM ? cy - co0 : EBM__RM;
                int r, c;
                for (c = 0; c < EBM__CB; c++) {
                    float *o = gw + ((jt / row_jt) * KC + (jt % row_jt) * EBM__CB + (size_t)c) * cy + co0;
                    if (nr == EBM__RM) for (r = 0; r < EBM__RM; r++) o[r] = tr[r * EBM__CB + c]; /* (a constant length: no test per value) */
                    else for (r = 0; r < nr; r++) o[r] = tr[r * EBM__CB + c];
                }
            }
    }
}

/* Weight gradient, gather form: tile = (RM rows (kh,kw,ci), one panel of
   co), summed over every output pixel of the batch in order. A task runs a
   group of row tiles (ebm__wg_group) over the pixels chunk by chunk, so
   each chunk of the gy panel is read from cache by the whole group
   (streaming the whole panel once per tile was memory-bound: 39-61 % of
   peak). */
#define EBM__WG_CHUNK 256
static void ebm__conv_bwd_weight(const ebm__cgeom *G, const float *x, const float *gy, float *gw, void *scratch)
{
    unsigned char *sp = (unsigned char *)scratch;
    const int K = G->k, cx = G->cx, cy = G->cy, Wp = G->wx + 2 * G->p;
    const int narrow = ebm__narrow(cy), RR = narrow ? EBM__RM1 : EBM__RM;
    const size_t CBW = ebm__panel(cy), M = (size_t)G->n * G->hy * G->wy, n_ct = ebm__ceil_div((size_t)cy, CBW), R = (size_t)K * K * cx;
    /* tasks: groups of row tiles, x panels */
    const size_t n_rt = ebm__wg_row_tiles(G);
    const int group = (int)ebm__wg_group(G), in_place = ebm__wg_gy_in_place(G);
    const long n_tasks = (long)(ebm__ceil_div(n_rt, (size_t)group) * n_ct);
    const float *A, *Bp;
    ptrdiff_t *koff;
    long t;
    if (ebm__wg_rows(G)) { ebm__conv_bwd_weight_rows(G, x, gy, gw, scratch); return; }
    A = ebm__wg_input(G, x, &sp, &koff);
    /* B: gy, pixels x co, in contiguous panels, or read in place (rows cy apart) */
    if (in_place) Bp = gy;
    else {
        float *packed = (float *)ebm__carve(&sp, n_ct * CBW * M * sizeof(float));
        ebm__pack(gy, M, (size_t)cy, (size_t)cy, packed, CBW);
        Bp = packed;
    }
    EBM__PARALLEL_FOR(n_tasks, n_tasks > 1)
    for (t = 0; t < n_tasks; t++) {
        const size_t gt = (size_t)t / n_ct, ct = (size_t)t % n_ct;
        const size_t rt0 = gt * (size_t)group, rt1 = rt0 + (size_t)group < n_rt ? rt0 + (size_t)group : n_rt;
        const int co0 = (int)(ct * CBW), nc = cy - co0 < (int)CBW ? cy - co0 : (int)CBW;
        ptrdiff_t row[EBM__WG_GROUP][EBM__ROWS];
        float tmp[EBM__WG_GROUP][EBM__TILE];
        size_t rt, k0;
        int r, q;
        for (rt = rt0; rt < rt1; rt++) {
            const size_t r0 = rt * (size_t)RR;
            const int nr = R - r0 < (size_t)RR ? (int)(R - r0) : RR;
            for (r = 0; r < RR; r++) {
                size_t rr = r0 + (size_t)(r < nr ? r : nr - 1);
                int kh = (int)(rr / ((size_t)K * cx)), kw = (int)(rr / (size_t)cx) % K, ci = (int)(rr % (size_t)cx);
                row[rt - rt0][r] = ((ptrdiff_t)kh * Wp + kw) * cx + ci;
            }
            memset(tmp[rt - rt0], 0, sizeof tmp[0]);
        }
        /* pixels in chunks that stay in cache, every row tile of the group over each chunk */
        for (k0 = 0; k0 < M; k0 += EBM__WG_CHUNK) {
            const size_t kn = M - k0 < EBM__WG_CHUNK ? M - k0 : EBM__WG_CHUNK;
            for (rt = rt0; rt < rt1; rt++)
                ebm__mk_gather(A, row[rt - rt0], koff + k0, kn, M - k0, in_place ? gy + k0 * cy + co0 : Bp + ct * M * CBW + k0 * CBW,
                               in_place ? (size_t)cy : CBW, tmp[rt - rt0], narrow);
        }
        for (rt = rt0; rt < rt1; rt++) {
            const size_t r0 = rt * (size_t)RR;
            const int nr = R - r0 < (size_t)RR ? (int)(R - r0) : RR;
            for (r = 0; r < nr && r < EBM__ROWS; r++) { /* (the second bounds tell the compiler tmp suffices) */
                float *o = gw + (r0 + (size_t)r) * cy + co0;
                for (q = 0; q < nc && r * (int)CBW + q < EBM__TILE; q++) o[q] = tmp[rt - rt0][r * (int)CBW + q];
            }
        }
    }
}

/* --- activations: value and derivatives up to third order --- */

/* Reference in double: order-th derivative of activation `type` at x. The
   float kernels below must agree with it; the tests check each order against
   finite differences of the order below. Returns NAN for an unsupported order. */
EBM__REFERENCE double ebm__act_ref(int type, int order, double a, double x)
{
    double s, s1, t, phi;
    switch (type) {
    case EBM_ACT_LEAKY_RELU:
        if (order == 0) return x > 0 ? x : a * x;
        return order == 1 ? (x > 0 ? 1.0 : a) : 0.0;
    case EBM_ACT_SILU: /* x sigma(x) */
        s = 1.0 / (1.0 + exp(-x)); s1 = s * (1 - s);
        if (order == 0) return x * s;
        if (order == 1) return s + x * s1;
        if (order == 2) return s1 * (2 + x * (1 - 2 * s));
        if (order == 3) return s1 * ((1 - 2 * s) * (3 + x * (1 - 2 * s)) - 2 * x * s1);
        break;
    case EBM_ACT_SOFTPLUS: /* log(1 + e^x) */
        s = 1.0 / (1.0 + exp(-x)); s1 = s * (1 - s);
        if (order == 0) return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
        if (order == 1) return s;
        if (order == 2) return s1;
        if (order == 3) return s1 * (1 - 2 * s);
        break;
    case EBM_ACT_ELU: /* x, or a (e^x - 1) for x <= 0 */
        if (x > 0) return order == 0 ? x : order == 1 ? 1.0 : 0.0;
        return order == 0 ? a * (exp(x) - 1) : a * exp(x);
    case EBM_ACT_GELU: /* x Phi(x), exact (erf) form */
        phi = exp(-0.5 * x * x) * 0.39894228040143267794;
        if (order == 0) return 0.5 * x * (1 + erf(x * 0.70710678118654752440));
        if (order == 1) return 0.5 * (1 + erf(x * 0.70710678118654752440)) + x * phi;
        if (order == 2) return (2 - x * x) * phi;
        if (order == 3) return (x * x * x - 4 * x) * phi;
        break;
    case EBM_ACT_TANH:
        t = tanh(x);
        if (order == 0) return t;
        if (order == 1) return 1 - t * t;
        if (order == 2) return -2 * t * (1 - t * t);
        if (order == 3) return (1 - t * t) * (6 * t * t - 2);
        break;
    }
    return NAN;
}

/* The highest derivative order each activation provides (nested autograd of
   depth d needs order d; sliced score matching needs 3). */
#define EBM__ACT_MAX_ORDER 3

/* The type ebm__act_bwd_range takes for x = act'(pre-activation) itself,
   held from the forward (ebm__conv2d_act): gx = gy x, no activation
   computed again. */
#define EBM__ACT_HELD (-1)

/* a b + c in one rounding where the target has a fused multiply-add in
   hardware (C99's FP_FAST_FMAF: x86 with FMA, AArch64), else a multiply and
   an add (a software fmaf would be far slower). In ebm__expf it made
   SiLU's forward and backward passes 0.77 and 0.73 of their time on the
   Xeon (three alternated runs each). */
#if defined(FP_FAST_FMAF)
#define EBM__FMAF(a, b, c) fmaf(a, b, c)
#else
#define EBM__FMAF(a, b, c) ((a) * (b) + (c))
#endif

/* exp(x) for float, branch-free so that loops over it vectorise (Cephes-
   style: x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r, 2^n
   from the exponent bits). x is clamped to [-87, 88], where the result is a
   normal float; error ~2 ulp. */
EBM__INLINE float ebm__expf(float x)
{
    float n, r, p, scale;
    uint32_t u;
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    n = (x * 1.44269504089f + 12582912.0f) - 12582912.0f; /* round to nearest via 1.5 * 2^23 */
    r = EBM__FMAF(n, -0.693359375f, x);
    r = EBM__FMAF(n, 2.12194440e-4f, r);
    p = 1.9875691500e-4f;
    p = EBM__FMAF(p, r, 1.3981999507e-3f);
    p = EBM__FMAF(p, r, 8.3334519073e-3f);
    p = EBM__FMAF(p, r, 4.1665795894e-2f);
    p = EBM__FMAF(p, r, 1.6666665459e-1f);
    p = EBM__FMAF(p, r, 5.0000001201e-1f);
    p = EBM__FMAF(p * r, r, r) + 1.0f;
    u = (uint32_t)((int32_t)n + 127) << 23;
    memcpy(&scale, &u, 4);
    return p * scale;
}

EBM__INLINE float ebm__sigmoid(float v) { return 1.0f / (1.0f + ebm__expf(-v)); }
EBM__INLINE float ebm__tanhf(float v) { return 1.0f - 2.0f / (ebm__expf(2.0f * v) + 1.0f); }

/* ebm__expf and ebm__sigmoid on a vector, operation for operation (the
   same bits): g++ -O2 does not vectorise loops over the scalar forms, and
   SiLU's Langevin step took 1.37x its -O3 time (with the kernels and the
   write-backs above already done by hand). */
#if EBM__VL == 1
#define ebm__vexpf ebm__expf
#else
#if defined(FP_FAST_FMAF)
#define EBM__VFMAF(a, b, c) ebm__vfma(a, b, c)
#else
#define EBM__VFMAF(a, b, c) ebm__vadd(ebm__vmul(a, b), c)
#endif
EBM__INLINE ebm__vf ebm__vexpf(ebm__vf x)
{
    const ebm__vf magic = ebm__vbcast(12582912.0f);
    ebm__vf n, r, p;
    x = ebm__vclamp(x, -87.0f, 88.0f);
    n = ebm__vsub(ebm__vadd(ebm__vmul(x, ebm__vbcast(1.44269504089f)), magic), magic);
    r = EBM__VFMAF(n, ebm__vbcast(-0.693359375f), x);
    r = EBM__VFMAF(n, ebm__vbcast(2.12194440e-4f), r);
    p = ebm__vbcast(1.9875691500e-4f);
    p = EBM__VFMAF(p, r, ebm__vbcast(1.3981999507e-3f));
    p = EBM__VFMAF(p, r, ebm__vbcast(8.3334519073e-3f));
    p = EBM__VFMAF(p, r, ebm__vbcast(4.1665795894e-2f));
    p = EBM__VFMAF(p, r, ebm__vbcast(1.6666665459e-1f));
    p = EBM__VFMAF(p, r, ebm__vbcast(5.0000001201e-1f));
    p = ebm__vadd(EBM__VFMAF(ebm__vmul(p, r), r, r), ebm__vbcast(1.0f));
    return ebm__vmul(p, ebm__vpow2i(n));
}
#endif
EBM__INLINE ebm__vf ebm__vsigmoid(ebm__vf v)
{
    const ebm__vf one = ebm__vbcast(1.0f);
    return ebm__vdiv(one, ebm__vadd(one, ebm__vexpf(ebm__vmul(v, ebm__vbcast(-1.0f)))));
}
/* SiLU'(v) from s = sigmoid(v): s + v s (1 - s), in ebm__act_range's order */
EBM__INLINE ebm__vf ebm__vsilu_d(ebm__vf v, ebm__vf s)
{
    return ebm__vadd(s, ebm__vmul(ebm__vmul(v, s), ebm__vsub(ebm__vbcast(1.0f), s)));
}

/* y = act^(order)(x) on one range, one branch-free loop per (type, order). */
static void ebm__act_range(int type, int order, float a, const float *x, float *y, size_t n)
{
    size_t i;
    switch (type) {
    case EBM_ACT_LEAKY_RELU:
        if (order == 0) ebm__leaky_by_range(x, x, y, a, n);
        else if (order == 1) for (i = 0; i < n; i++) y[i] = x[i] > 0 ? 1.0f : a;
        else memset(y, 0, n * sizeof *y);
        return;
    case EBM_ACT_SILU: /* x s, s = sigmoid(x), s1 = s (1 - s) */
        if (order == 0) {
            for (i = 0; i + EBM__VL <= n; i += EBM__VL) {
                const ebm__vf v = ebm__vload(x + i);
                ebm__vstore(y + i, ebm__vmul(v, ebm__vsigmoid(v)));
            }
            for (; i < n; i++) y[i] = x[i] * ebm__sigmoid(x[i]);
        } else if (order == 1) {
            for (i = 0; i + EBM__VL <= n; i += EBM__VL) {
                const ebm__vf v = ebm__vload(x + i);
                ebm__vstore(y + i, ebm__vsilu_d(v, ebm__vsigmoid(v)));
            }
            for (; i < n; i++) { float s = ebm__sigmoid(x[i]); y[i] = s + x[i] * s * (1 - s); }
        }
        else if (order == 2) for (i = 0; i < n; i++) { float s = ebm__sigmoid(x[i]), s1 = s * (1 - s); y[i] = s1 * (2 + x[i] * (1 - 2 * s)); }
        else for (i = 0; i < n; i++) {
            float v = x[i], s = ebm__sigmoid(v), s1 = s * (1 - s);
            y[i] = s1 * ((1 - 2 * s) * (3 + v * (1 - 2 * s)) - 2 * v * s1);
        }
        return;
    case EBM_ACT_SOFTPLUS: /* max(x, 0) + log(1 + e^-|x|) */
        if (order == 0) for (i = 0; i < n; i++) {
            float v = x[i], e = ebm__expf(v > 0 ? -v : v);
            y[i] = (v > 0 ? v : 0.0f) + ebm__logf(1.0f + e);
        }
        else if (order == 1) for (i = 0; i < n; i++) y[i] = ebm__sigmoid(x[i]);
        else if (order == 2) for (i = 0; i < n; i++) { float s = ebm__sigmoid(x[i]); y[i] = s * (1 - s); }
        else for (i = 0; i < n; i++) { float s = ebm__sigmoid(x[i]); y[i] = s * (1 - s) * (1 - 2 * s); }
        return;
    case EBM_ACT_ELU:
        if (order == 0) for (i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : a * (ebm__expf(x[i]) - 1.0f);
        else if (order == 1) for (i = 0; i < n; i++) y[i] = x[i] > 0 ? 1.0f : a * ebm__expf(x[i]);
        else for (i = 0; i < n; i++) y[i] = x[i] > 0 ? 0.0f : a * ebm__expf(x[i]);
        return;
    case EBM_ACT_GELU: /* x Phi(x) (erff from libm: not vectorised) */
        for (i = 0; i < n; i++) {
            float v = x[i], phi = ebm__expf(-0.5f * v * v) * 0.398942280f, P = 0.5f * (1 + erff(v * 0.707106781f));
            y[i] = order == 0 ? v * P : order == 1 ? P + v * phi : order == 2 ? (2 - v * v) * phi
                 : (v * v * v - 4 * v) * phi;
        }
        return;
    case EBM_ACT_TANH: /* t = 1 - 2 / (e^2x + 1), d = 1 - t^2 (a loop per order: vectorised) */
        if (order == 0) for (i = 0; i < n; i++) y[i] = ebm__tanhf(x[i]);
        else if (order == 1) for (i = 0; i < n; i++) { float t = ebm__tanhf(x[i]); y[i] = 1 - t * t; }
        else if (order == 2) for (i = 0; i < n; i++) { float t = ebm__tanhf(x[i]), d = 1 - t * t; y[i] = -2 * t * d; }
        else for (i = 0; i < n; i++) { float t = ebm__tanhf(x[i]), d = 1 - t * t; y[i] = d * (6 * t * t - 2); }
        return;
    }
    EBM_ASSERT(0);
}

/* y = act(x), and (d not NULL) d = act'(x), in one pass: SiLU's from one
   sigmoid, by the same expressions as ebm__act_range's (the same bits). */
static void ebm__act_val_range(int type, float a, const float *x, float *y, float *d, size_t n)
{
    size_t i;
    if (d && type == EBM_ACT_SILU) {
        for (i = 0; i + EBM__VL <= n; i += EBM__VL) {
            const ebm__vf v = ebm__vload(x + i), s = ebm__vsigmoid(v);
            ebm__vstore(y + i, ebm__vmul(v, s));
            ebm__vstore(d + i, ebm__vsilu_d(v, s));
        }
        for (; i < n; i++) { const float s = ebm__sigmoid(x[i]); y[i] = x[i] * s; d[i] = s + x[i] * s * (1 - s); }
    }
    else {
        ebm__act_range(type, 0, a, x, y, n);
        if (d) ebm__act_range(type, 1, a, x, d, n);
    }
}

/* Element-wise work is split into fixed chunks run in parallel: each element
   is computed alone, so any split gives the same bits. */
#define EBM__CHUNK 16384

/* y = act^(order)(x), element-wise. */
static void ebm__act_fwd(int type, int order, float a, const float *x, float *y, size_t n)
{
    const long nc = (long)ebm__ceil_div(n, EBM__CHUNK);
    long c;
    EBM__PARALLEL_FOR(nc, nc > 1)
    for (c = 0; c < nc; c++) {
        size_t o = (size_t)c * EBM__CHUNK;
        ebm__act_range(type, order, a, x + o, y + o, n - o < EBM__CHUNK ? n - o : EBM__CHUNK);
    }
}

/* gx = gy * act'(x) on one range, without the act'(x) tensor. gx may be
   gy: the loops by hand read each vector before they write it; for the
   other activations the compiler's overlap check then takes its scalar
   loops. */
static void ebm__act_bwd_range(int type, float a, const float *x, const float *gy, float *gx, size_t n)
{
    size_t i, j;
    if (type == EBM__ACT_HELD)
        ebm__mul_range(gy, x, gx, n);
    else if (type == EBM_ACT_LEAKY_RELU)
        ebm__leaky_by_range(x, gy, gx, a, n);
    else if (type == EBM_ACT_SILU) {
        for (i = 0; i + EBM__VL <= n; i += EBM__VL) { /* (in place too: each vector read before it is written) */
            const ebm__vf v = ebm__vload(x + i);
            ebm__vstore(gx + i, ebm__vmul(ebm__vsilu_d(v, ebm__vsigmoid(v)), ebm__vload(gy + i)));
        }
        for (; i < n; i++) { const float s = ebm__sigmoid(x[i]); gx[i] = (s + x[i] * s * (1 - s)) * gy[i]; }
    }
    else
        for (i = 0; i < n; i += 256) { /* act' through a buffer, then times gy */
            float d[256];
            const size_t m = n - i < 256 ? n - i : 256;
            ebm__act_range(type, 1, a, x + i, d, m);
            for (j = 0; j < m; j++) gx[i + j] = d[j] * gy[i + j];
        }
}

/* The same over any length, in parallel. */
static void ebm__act_bwd(int type, float a, const float *x, const float *gy, float *gx, size_t n)
{
    const long nc = (long)ebm__ceil_div(n, EBM__CHUNK);
    long c;
    EBM__PARALLEL_FOR(nc, nc > 1)
    for (c = 0; c < nc; c++) {
        const size_t o = (size_t)c * EBM__CHUNK;
        ebm__act_bwd_range(type, a, x + o, gy + o, gx + o, n - o < EBM__CHUNK ? n - o : EBM__CHUNK);
    }
}

/* ---------------------------------------------------------------- 5. autograd */
/* The tape. Every op appends a node (ebm_var) holding its output, its inputs
   and its parameters; nodes are linked in creation order, which is a
   topological order. ebm_grad walks the tape backwards from y, and each op's
   backward rule is written with the ops themselves: when create_graph is set,
   the backward pass is recorded like any other computation and can be
   differentiated again (to any depth the activations support). When it is not,
   the same rules run with recording off, and the activation rule uses a fused
   kernel, so a first-order pass costs what a hand-written backward costs.

   The closed set for convolution: with y = F(x, w), gx = D(gy, w) (transposed
   convolution) and gw = G(x, gy) (weight correlation) are adjoints of one
   trilinear form sum(y . F(x, w)), so the derivatives of D and G are F, D and
   G again. */

enum {
    EBM__OP_LEAF, EBM__OP_CONV, EBM__OP_CONVT, EBM__OP_WGRAD, EBM__OP_ACT,
    EBM__OP_CHSUM, EBM__OP_CHBCAST, EBM__OP_SUM, EBM__OP_EXPAND, EBM__OP_ADD,
    EBM__OP_MUL, EBM__OP_SCALE, EBM__OP_RESHAPE, EBM__OP_AVGPOOL, EBM__OP_AVGPOOL_T,
    EBM__OP_MAXPOOL, EBM__OP_SCATTER, EBM__OP_GATHER, EBM__OP_XENT, EBM__OP_XENT_GRAD, EBM__OP_JET
};

static const char *const ebm__op_names[] = {
    "leaf", "conv2d", "conv2d_transpose", "conv2d_weight_grad", "act", "channel_sum",
    "channel_broadcast", "sum", "expand", "add", "mul", "scale", "reshape", "avgpool",
    "avgpool_transpose", "maxpool", "scatter", "gather", "softmax_xent", "softmax_xent_grad", "act_jet"
};

struct ebm_graph {
    ebm__arena a;        /* nodes and (unless measuring) tensors */
    int measuring;       /* count tensor bytes instead of allocating them */
    size_t counted;      /* tensor bytes counted while measuring */
    size_t peak;         /* high-water mark of nodes + tensors */
    int record;          /* link new nodes to their inputs (off in a plain backward) */
    ebm_var *first, *last;
    int n_nodes;
    ebm_error err;
};

static ebm_var *ebm__gfail(ebm_graph *g, int status, const char *fmt, ...)
{
    if (g->err.status == EBM_OK) {
        va_list ap;
        va_start(ap, fmt);
        g->err.status = status;
        vsnprintf(g->err.msg, sizeof g->err.msg, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

static void ebm__note_peak(ebm_graph *g)
{
    size_t now = g->a.used + g->counted;
    if (now > g->peak) g->peak = now;
}

/* Memory that must be real even while measuring (nodes, pointer lists). */
static void *ebm__meta(ebm_graph *g, size_t bytes)
{
    void *p = ebm__arena_push(&g->a, bytes);
    if (!p) {
        ebm__gfail(g, EBM_ENOMEM, "graph arena full (%lu bytes): the step needs more; size it with ebm_model_step_bytes",
                   (unsigned long)g->a.size);
        return NULL;
    }
    ebm__note_peak(g);
    return p;
}

/* Tensor memory: counted, not allocated, while measuring (*p = NULL then). */
static int ebm__data(ebm_graph *g, size_t bytes, void **p)
{
    *p = NULL;
    if (g->measuring) {
        g->counted += ebm__round(bytes);
        ebm__note_peak(g);
        return 1;
    }
    *p = ebm__meta(g, bytes);
    return *p != NULL;
}

/* A point in the graph's life to come back to: the arena and the tape as
   they were. Used to drop an op's scratch, and by samplers whose state sits
   below the mark while each step's tape above it is forgotten. */
typedef struct { size_t used, counted; ebm_var *first, *last; int n_nodes; } ebm__mark;
static ebm__mark ebm__mark_get(const ebm_graph *g)
{
    ebm__mark m;
    m.used = g->a.used; m.counted = g->counted;
    m.first = g->first; m.last = g->last; m.n_nodes = g->n_nodes;
    return m;
}
static void ebm__mark_set(ebm_graph *g, ebm__mark m)
{
    g->a.used = m.used; g->counted = m.counted;
    g->first = m.first; g->last = m.last; g->n_nodes = m.n_nodes;
    if (g->last) g->last->next = NULL;
}

EBMDEF int ebm_graph_create(ebm_graph **out, size_t bytes, ebm_error *err)
{
    ebm_graph *g;
    if (!out) return ebm__fail(err, EBM_EINVAL, "ebm_graph_create: NULL output pointer");
    *out = NULL;
    if (bytes < 4096) return ebm__fail(err, EBM_EINVAL, "ebm_graph_create: arena of %lu bytes is too small (at least 4096)", (unsigned long)bytes);
    g = (ebm_graph *)EBM_MALLOC(sizeof *g);
    if (!g) return ebm__fail(err, EBM_ENOMEM, "ebm_graph_create: out of memory");
    memset(g, 0, sizeof *g);
    g->a.base = (unsigned char *)EBM_MALLOC(bytes + EBM__ALIGN);
    if (!g->a.base) {
        EBM_FREE(g);
        return ebm__fail(err, EBM_ENOMEM, "ebm_graph_create: cannot allocate a %lu-byte arena", (unsigned long)bytes);
    }
    g->a.size = bytes;
    ebm_graph_reset(g);
    *out = g;
    ebm__ok(err);
    return EBM_OK;
}

/* The arena's first byte, aligned (malloc gives 16 at least; kernels like 64). */
static unsigned char *ebm__aligned_base(const ebm_graph *g)
{
    uintptr_t u = (uintptr_t)g->a.base;
    return g->a.base + ((EBM__ALIGN - (u % EBM__ALIGN)) % EBM__ALIGN);
}

EBMDEF void ebm_graph_destroy(ebm_graph *g)
{
    if (!g) return;
    EBM_FREE(g->a.base);
    EBM_FREE(g);
}

EBMDEF void ebm_graph_reset(ebm_graph *g)
{
    if (!g) return;
    g->a.used = (size_t)(ebm__aligned_base(g) - g->a.base);
    g->counted = 0;
    g->first = g->last = NULL;
    g->n_nodes = 0;
    g->record = 1;
    g->err.status = EBM_OK;
    g->err.msg[0] = 0;
}

EBMDEF int ebm_graph_status(const ebm_graph *g) { return g ? g->err.status : EBM_EINVAL; }
EBMDEF const ebm_error *ebm_graph_error(const ebm_graph *g) { return g ? &g->err : NULL; }
EBMDEF size_t ebm_graph_peak_bytes(const ebm_graph *g) { return g ? g->peak : 0; }

static size_t ebm__shape_size(int ndim, const int *shape)
{
    size_t s = 1;
    int i;
    for (i = 0; i < ndim; i++) s *= (size_t)shape[i];
    return s;
}

static int ebm__same_shape(const ebm_var *a, const ebm_var *b)
{
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof(int)) == 0;
}

/* Append a node with an output of the given shape (data allocated unless
   `view` is set). Inputs are linked only while recording. */
static ebm_var *ebm__node(ebm_graph *g, int op, int ndim, const int *shape, ebm_var *a, ebm_var *b,
                          ebm_var *c, int view)
{
    ebm_var *v;
    int i;
    if (g->err.status != EBM_OK) return NULL;
    if (ndim < 1 || ndim > 4) return ebm__gfail(g, EBM_EINVAL, "%s: %d dimensions (1 to 4 allowed)", ebm__op_names[op], ndim);
    for (i = 0; i < ndim; i++)
        if (shape[i] < 1) return ebm__gfail(g, EBM_EINVAL, "%s: dimension %d has size %d", ebm__op_names[op], i, shape[i]);
    v = (ebm_var *)ebm__meta(g, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->ndim = ndim;
    for (i = 0; i < 4; i++) v->shape[i] = i < ndim ? shape[i] : 1;
    v->size = ebm__shape_size(ndim, shape);
    if (!view && !ebm__data(g, v->size * sizeof(float), (void **)&v->data)) return NULL;
    v->op = op;
    if (g->record) { v->in[0] = a; v->in[1] = b; v->in[2] = c; }
    v->id = g->n_nodes++;
    v->prev = g->last;
    if (g->last) g->last->next = v; else g->first = v;
    g->last = v;
    return v;
}

/* Ops return NULL once the graph has failed; a NULL input only ever comes
   from such a failure, or from the caller (which is an error in its own right). */
#define EBM__BEGIN(g) do { if (!(g) || (g)->err.status != EBM_OK) return NULL; } while (0)
#define EBM__NEED(g, v, opname) do { if (!(v)) return ebm__gfail(g, EBM_EINVAL, "%s: NULL tensor argument", opname); } while (0)

EBMDEF ebm_var *ebm_leaf(ebm_graph *g, float *data, int ndim, const int *shape)
{
    ebm_var *v;
    EBM__BEGIN(g);
    if (!shape) return ebm__gfail(g, EBM_EINVAL, "leaf: NULL shape");
    if (!data && !g->measuring) return ebm__gfail(g, EBM_EINVAL, "leaf: NULL data");
    v = ebm__node(g, EBM__OP_LEAF, ndim, shape, NULL, NULL, NULL, 1);
    if (v) v->data = data;
    return v;
}

EBMDEF ebm_var *ebm_tensor(ebm_graph *g, int ndim, const int *shape)
{
    EBM__BEGIN(g);
    if (!shape) return ebm__gfail(g, EBM_EINVAL, "tensor: NULL shape");
    return ebm__node(g, EBM__OP_LEAF, ndim, shape, NULL, NULL, NULL, 0);
}

EBMDEF ebm_var *ebm_full(ebm_graph *g, int ndim, const int *shape, float value)
{
    ebm_var *v = ebm_tensor(g, ndim, shape);
    size_t i;
    if (v && v->data) for (i = 0; i < v->size; i++) v->data[i] = value;
    return v;
}

EBMDEF ebm_var *ebm_zeros(ebm_graph *g, int ndim, const int *shape) { return ebm_full(g, ndim, shape, 0.0f); }

/* --- convolution ops --- */

static int ebm__conv_out(int h, int k, int s, int p) { return h + 2 * p < k ? 0 : (h + 2 * p - k) / s + 1; }

static void ebm__geom(ebm__cgeom *G, const ebm_var *x, const ebm_var *y, int k, int s, int p)
{
    G->n = x->shape[0]; G->hx = x->shape[1]; G->wx = x->shape[2]; G->cx = x->shape[3];
    G->hy = y->shape[1]; G->wy = y->shape[2]; G->cy = y->shape[3];
    G->k = k; G->s = s; G->p = p;
}

static ebm_var *ebm__check_conv(ebm_graph *g, const char *op, ebm_var *w, int k_expect_ci, int stride, int pad)
{
    if (w->ndim != 4 || w->shape[0] != w->shape[1])
        return ebm__gfail(g, EBM_EINVAL, "%s: weights must be (K,K,Cin,Cout)", op);
    if (w->shape[2] != k_expect_ci)
        return ebm__gfail(g, EBM_EINVAL, "%s: weights have %d input channels, the tensor has %d", op, w->shape[2], k_expect_ci);
    if (stride < 1 || pad < 0) return ebm__gfail(g, EBM_EINVAL, "%s: stride %d, padding %d (need stride >= 1, padding >= 0)", op, stride, pad);
    return w;
}

/* Where the first derivative of activation node v comes from: the one its
   forward held (aux, ebm__conv2d_act; type EBM__ACT_HELD), else computed
   again from its input. */
static const float *ebm__act_deriv_src(const ebm_var *v, int *type)
{
    *type = v->aux ? EBM__ACT_HELD : v->ip[0];
    return v->aux ? (const float *)v->aux : v->in[0]->data;
}

/* The write-back that multiplies by the derivative held for node m (see
   ebm__premasked): a fused node's LeakyReLU, read off its output, or an
   activation node's (ebm__act_deriv_src). */
static void ebm__epi_mask(ebm__epi *e, const ebm_var *m)
{
    memset(e, 0, sizeof *e);
    if (!m) return;
    if (m->op == EBM__OP_ACT) e->mask = ebm__act_deriv_src(m, &e->mact);
    else { e->mask = m->data; e->mact = EBM_ACT_LEAKY_RELU; }
    e->ma = m->fp[0];
}

/* conv2d's node y, checked, its output not yet computed (ebm__conv2d_run);
   optionally followed by LeakyReLU(slope >= 0) in the same pass (ip[2] =
   1). Its backward reads the activation's derivative off the output: with
   slope >= 0 the output has the sign of the pre-activation. given (may be
   NULL): the output, already computed (a recorded chain's kept
   activations); the node then points at it. */
static ebm_var *ebm__conv2d_node(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b, int stride, int pad, int leaky, float slope,
                                 const float *given)
{
    int shape[4], k;
    ebm_var *y;
    EBM__BEGIN(g);
    EBM__NEED(g, x, "conv2d"); EBM__NEED(g, w, "conv2d");
    if (x->ndim != 4) return ebm__gfail(g, EBM_EINVAL, "conv2d: input must be (N,H,W,C), got %d dimensions", x->ndim);
    if (!ebm__check_conv(g, "conv2d", w, x->shape[3], stride, pad)) return NULL;
    k = w->shape[0];
    if (b && (b->size != (size_t)w->shape[3])) return ebm__gfail(g, EBM_EINVAL, "conv2d: bias has %lu values for %d channels", (unsigned long)b->size, w->shape[3]);
    shape[0] = x->shape[0];
    shape[1] = ebm__conv_out(x->shape[1], k, stride, pad);
    shape[2] = ebm__conv_out(x->shape[2], k, stride, pad);
    shape[3] = w->shape[3];
    if (shape[1] < 1 || shape[2] < 1)
        return ebm__gfail(g, EBM_EINVAL, "conv2d: %dx%d kernel does not fit a %dx%d input with padding %d", k, k, x->shape[1], x->shape[2], pad);
    y = ebm__node(g, EBM__OP_CONV, 4, shape, x, w, b, given != NULL);
    if (!y) return NULL;
    y->ip[0] = stride; y->ip[1] = pad; y->ip[2] = leaky; y->fp[0] = slope;
    if (given) y->data = (float *)(uintptr_t)given; /* read only: nothing writes a node's output */
    return y;
}

/* Computes conv node y's output from its inputs (which a node outside a
   recorded pass does not keep), the write-back doing e (its leaky and
   slope: the node's). */
static ebm_var *ebm__conv2d_run(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b, ebm_var *y, const ebm__epi *e)
{
    ebm__cgeom G;
    ebm__mark mk = ebm__mark_get(g);
    void *scratch;
    ebm__geom(&G, x, y, w->shape[0], y->ip[0], y->ip[1]);
    if (!ebm__data(g, ebm__conv_fwd_scratch(&G), &scratch)) return NULL;
    if (y->data) ebm__conv_fwd_epi(&G, x->data, w->data, b ? b->data : NULL, y->data, scratch, e);
    ebm__mark_set(g, mk);
    return y;
}

/* conv2d, optionally fused with LeakyReLU (see ebm__conv2d_node). mask
   (may be NULL; in a backward that is not recorded, a node of the output's
   shape whose gradient is held multiplied, ebm__premasked): the output, a
   transposed conv's input gradient, is multiplied by that node's
   activation derivative. */
static ebm_var *ebm__conv2d(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b, int stride, int pad, int leaky, float slope,
                            const float *given, const ebm_var *mask)
{
    ebm__epi e;
    ebm_var *y = ebm__conv2d_node(g, x, w, b, stride, pad, leaky, slope, given);
    if (!y || given) return y;
    ebm__epi_mask(&e, mask);
    e.leaky = leaky; e.slope = slope;
    return ebm__conv2d_run(g, x, w, b, y, &e);
}

static ebm_var *ebm__act_node(ebm_graph *g, ebm_var *x, int type, float param, int order);

/* conv2d and the activation after it as the two nodes that ebm_conv2d and
   ebm_act make (the graph, its bits and every derivative the same), both
   outputs computed in the conv's pass: act is applied to each tile while
   it is in cache, instead of in a pass over the whole output after it.
   On a recorded forward (a backward may follow) the activation's
   derivative is computed in the same pass and held (the node's aux) for
   the first-order backward, which then multiplies by it instead of
   computing the activation again (LeakyReLU's is cheaper to compute than
   to read). Returns the activation's node. */
static ebm_var *ebm__conv2d_act(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b, int stride, int pad, int act, float param)
{
    ebm__epi e;
    ebm_var *z = ebm__conv2d_node(g, x, w, b, stride, pad, 0, 0.0f, NULL), *y;
    if (!z || !(y = ebm__act_node(g, z, act, param, 0))) return NULL;
    if (g->record && act != EBM_ACT_LEAKY_RELU && !ebm__data(g, y->size * sizeof(float), &y->aux)) return NULL;
    memset(&e, 0, sizeof e);
    e.ya = y->data; e.yd = (float *)y->aux; e.act = act; e.a = param;
    return ebm__conv2d_run(g, x, w, b, z, &e) ? y : NULL;
}

EBMDEF ebm_var *ebm_conv2d(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b, int stride, int pad)
{
    return ebm__conv2d(g, x, w, b, stride, pad, 0, 0.0f, NULL, NULL);
}

/* gy times LeakyReLU'(pre-activation) of a fused conv or transposed conv
   y, read off y. The factor is piecewise constant, so in a recorded
   backward it enters as a constant (LeakyReLU's second derivative is 0). */
static ebm_var *ebm__leaky_mask(ebm_graph *g, ebm_var *gy, ebm_var *y)
{
    ebm_var *r;
    int saved = g->record;
    if (!g->record) {
        r = ebm__node(g, EBM__OP_LEAF, y->ndim, y->shape, NULL, NULL, NULL, 0);
        if (r && r->data) ebm__act_bwd(EBM_ACT_LEAKY_RELU, y->fp[0], y->data, gy->data, r->data, y->size);
        return r;
    }
    g->record = 0;
    r = ebm__node(g, EBM__OP_LEAF, y->ndim, y->shape, NULL, NULL, NULL, 0);
    if (r && r->data) ebm__act_fwd(EBM_ACT_LEAKY_RELU, 1, y->fp[0], y->data, r->data, y->size);
    g->record = saved;
    return ebm_mul(g, gy, r);
}

/* The transposed convolution, optionally followed by LeakyReLU(slope >= 0)
   in the same pass (ip[4] = 1; its backward as the fused conv's). With
   `mask` (as ebm__conv2d's) its output is the input gradient already
   multiplied by that node's activation derivative. */
static ebm_var *ebm__conv2d_transpose(ebm_graph *g, ebm_var *y, ebm_var *w, ebm_var *b, int stride, int pad, int out_h,
                                      int out_w, int leaky, float slope, const ebm_var *mask)
{
    int shape[4], k;
    ebm_var *x;
    EBM__BEGIN(g);
    EBM__NEED(g, y, "conv2d_transpose"); EBM__NEED(g, w, "conv2d_transpose");
    if (y->ndim != 4) return ebm__gfail(g, EBM_EINVAL, "conv2d_transpose: input must be (N,H,W,C), got %d dimensions", y->ndim);
    if (w->ndim != 4 || w->shape[0] != w->shape[1] || w->shape[3] != y->shape[3])
        return ebm__gfail(g, EBM_EINVAL, "conv2d_transpose: weights must be (K,K,Cout,Cin) with Cin = %d", y->shape[3]);
    if (stride < 1 || pad < 0) return ebm__gfail(g, EBM_EINVAL, "conv2d_transpose: stride %d, padding %d", stride, pad);
    k = w->shape[0];
    if (out_h < 1 || out_w < 1 || ebm__conv_out(out_h, k, stride, pad) != y->shape[1] ||
        ebm__conv_out(out_w, k, stride, pad) != y->shape[2])
        return ebm__gfail(g, EBM_EINVAL, "conv2d_transpose: a %dx%d output is not one that a %dx%d stride-%d pad-%d conv maps to %dx%d",
                          out_h, out_w, k, k, stride, pad, y->shape[1], y->shape[2]);
    if (b && b->size != (size_t)w->shape[2]) return ebm__gfail(g, EBM_EINVAL, "conv2d_transpose: bias has %lu values for %d channels", (unsigned long)b->size, w->shape[2]);
    shape[0] = y->shape[0]; shape[1] = out_h; shape[2] = out_w; shape[3] = w->shape[2];
    x = ebm__node(g, EBM__OP_CONVT, 4, shape, y, w, b, 0);
    if (!x) return NULL;
    x->ip[0] = stride; x->ip[1] = pad; x->ip[2] = out_h; x->ip[3] = out_w; x->ip[4] = leaky; x->fp[0] = slope;
    {
        ebm__cgeom G;
        ebm__epi e;
        ebm__mark mk = ebm__mark_get(g);
        void *scratch;
        ebm__geom(&G, x, y, k, stride, pad);
        if (!ebm__data(g, ebm__conv_bwd_data_scratch(&G), &scratch)) return NULL;
        ebm__epi_mask(&e, mask);
        e.leaky = leaky; e.slope = slope;
        if (x->data) ebm__conv_bwd_data_epi(&G, y->data, w->data, b ? b->data : NULL, x->data, scratch, &e);
        ebm__mark_set(g, mk);
    }
    return x;
}

EBMDEF ebm_var *ebm_conv2d_transpose(ebm_graph *g, ebm_var *y, ebm_var *w, ebm_var *b, int stride, int pad,
                                     int out_h, int out_w)
{
    return ebm__conv2d_transpose(g, y, w, b, stride, pad, out_h, out_w, 0, 0.0f, NULL);
}

EBMDEF ebm_var *ebm_conv2d_weight_grad(ebm_graph *g, ebm_var *x, ebm_var *gy, int k, int stride, int pad)
{
    int shape[4];
    ebm_var *gw;
    EBM__BEGIN(g);
    EBM__NEED(g, x, "conv2d_weight_grad"); EBM__NEED(g, gy, "conv2d_weight_grad");
    if (x->ndim != 4 || gy->ndim != 4 || x->shape[0] != gy->shape[0])
        return ebm__gfail(g, EBM_EINVAL, "conv2d_weight_grad: x and gy must be (N,H,W,C) with the same N");
    if (k < 1 || stride < 1 || pad < 0) return ebm__gfail(g, EBM_EINVAL, "conv2d_weight_grad: kernel %d, stride %d, padding %d", k, stride, pad);
    if (ebm__conv_out(x->shape[1], k, stride, pad) != gy->shape[1] || ebm__conv_out(x->shape[2], k, stride, pad) != gy->shape[2])
        return ebm__gfail(g, EBM_EINVAL, "conv2d_weight_grad: a %dx%d input does not map to %dx%d", x->shape[1], x->shape[2], gy->shape[1], gy->shape[2]);
    shape[0] = k; shape[1] = k; shape[2] = x->shape[3]; shape[3] = gy->shape[3];
    gw = ebm__node(g, EBM__OP_WGRAD, 4, shape, x, gy, NULL, 0);
    if (!gw) return NULL;
    gw->ip[0] = k; gw->ip[1] = stride; gw->ip[2] = pad;
    {
        ebm__cgeom G;
        ebm__mark mk = ebm__mark_get(g);
        void *scratch;
        ebm__geom(&G, x, gy, k, stride, pad);
        if (!ebm__data(g, ebm__conv_bwd_weight_scratch(&G), &scratch)) return NULL;
        if (gw->data) ebm__conv_bwd_weight(&G, x->data, gy->data, gw->data, scratch);
        ebm__mark_set(g, mk);
    }
    return gw;
}

EBMDEF ebm_var *ebm_reshape(ebm_graph *g, ebm_var *a, int ndim, const int *shape)
{
    ebm_var *v;
    EBM__BEGIN(g);
    EBM__NEED(g, a, "reshape");
    if (!shape || ndim < 1 || ndim > 4) return ebm__gfail(g, EBM_EINVAL, "reshape: bad shape");
    if (ebm__shape_size(ndim, shape) != a->size)
        return ebm__gfail(g, EBM_EINVAL, "reshape: %lu values cannot take a shape of %lu", (unsigned long)a->size,
                          (unsigned long)ebm__shape_size(ndim, shape));
    v = ebm__node(g, EBM__OP_RESHAPE, ndim, shape, a, NULL, NULL, 1);
    if (v) v->data = a->data;
    return v;
}

/* b viewed with a's shape (no node if they already agree). */
static ebm_var *ebm__like(ebm_graph *g, ebm_var *b, const ebm_var *a)
{
    if (!b || ebm__same_shape(a, b)) return b;
    return ebm_reshape(g, b, a->ndim, a->shape);
}

EBMDEF ebm_var *ebm_linear(ebm_graph *g, ebm_var *x, ebm_var *w, ebm_var *b)
{
    int xs[4], ws[4], ys[2];
    ebm_var *y;
    EBM__BEGIN(g);
    EBM__NEED(g, x, "linear"); EBM__NEED(g, w, "linear");
    if (w->ndim != 2) return ebm__gfail(g, EBM_EINVAL, "linear: weights must be (In, Out)");
    if (x->size != (size_t)x->shape[0] * (size_t)w->shape[0])
        return ebm__gfail(g, EBM_EINVAL, "linear: %lu input features per sample, weights expect %d",
                          (unsigned long)(x->size / (size_t)x->shape[0]), w->shape[0]);
    /* A linear layer is a 1x1 convolution on a 1x1 image. */
    xs[0] = x->shape[0]; xs[1] = 1; xs[2] = 1; xs[3] = w->shape[0];
    ws[0] = 1; ws[1] = 1; ws[2] = w->shape[0]; ws[3] = w->shape[1];
    y = ebm_conv2d(g, ebm_reshape(g, x, 4, xs), ebm_reshape(g, w, 4, ws), b, 1, 0);
    ys[0] = x->shape[0]; ys[1] = w->shape[1];
    return ebm_reshape(g, y, 2, ys);
}

/* --- activations --- */

EBMDEF const char *ebm_act_name(int type)
{
    static const char *const names[] = { "leaky_relu", "silu", "softplus", "elu", "gelu", "tanh" };
    return type >= 0 && type < EBM_ACT_COUNT ? names[type] : NULL;
}

/* The activation's node, checked, its output not yet computed. */
static ebm_var *ebm__act_node(ebm_graph *g, ebm_var *x, int type, float param, int order)
{
    ebm_var *y;
    EBM__BEGIN(g);
    EBM__NEED(g, x, "act");
    if (type < 0 || type >= EBM_ACT_COUNT) return ebm__gfail(g, EBM_EINVAL, "act: unknown activation %d", type);
    if (order < 0) return ebm__gfail(g, EBM_EINVAL, "act: negative derivative order");
    /* LeakyReLU's and ELU's derivatives are known to every order; the others are written out to the third. */
    if (order > EBM__ACT_MAX_ORDER && type != EBM_ACT_LEAKY_RELU && type != EBM_ACT_ELU)
        return ebm__gfail(g, EBM_EUNSUPPORTED, "act: %s is differentiable to order %d here, order %d was asked",
                          ebm_act_name(type), EBM__ACT_MAX_ORDER, order);
    if (!(param == param)) return ebm__gfail(g, EBM_EINVAL, "act: parameter is NaN");
    y = ebm__node(g, EBM__OP_ACT, x->ndim, x->shape, x, NULL, NULL, 0);
    if (!y) return NULL;
    y->ip[0] = type; y->ip[1] = order; y->fp[0] = param;
    return y;
}

EBMDEF ebm_var *ebm_act_deriv(ebm_graph *g, ebm_var *x, int type, float param, int order)
{
    ebm_var *y = ebm__act_node(g, x, type, param, order);
    if (y && y->data) ebm__act_fwd(type, order > 3 ? 3 : order, param, x->data, y->data, x->size);
    return y;
}

EBMDEF ebm_var *ebm_act(ebm_graph *g, ebm_var *x, int type, float param) { return ebm_act_deriv(g, x, type, param, 0); }
EBMDEF ebm_var *ebm_leaky_relu(ebm_graph *g, ebm_var *x, float slope) { return ebm_act(g, x, EBM_ACT_LEAKY_RELU, slope); }
EBMDEF ebm_var *ebm_silu(ebm_graph *g, ebm_var *x) { return ebm_act(g, x, EBM_ACT_SILU, 0.0f); }
EBMDEF ebm_var *ebm_softplus(ebm_graph *g, ebm_var *x) { return ebm_act(g, x, EBM_ACT_SOFTPLUS, 0.0f); }
EBMDEF ebm_var *ebm_elu(ebm_graph *g, ebm_var *x, float alpha) { return ebm_act(g, x, EBM_ACT_ELU, alpha); }
EBMDEF ebm_var *ebm_gelu(ebm_graph *g, ebm_var *x) { return ebm_act(g, x, EBM_ACT_GELU, 0.0f); }
EBMDEF ebm_var *ebm_tanh(ebm_graph *g, ebm_var *x) { return ebm_act(g, x, EBM_ACT_TANH, 0.0f); }

/* Taylor mode's activation rules (ebm__model_jet) as one element-wise node
   each instead of five: through a(h0 + t h1 + t^2/2 h2 + ...) the first
   coefficient is a'(h0) h1 (kind 1) and the second a''(h0) h1^2 + a'(h0) h2
   (kind 2; h2 may be NULL, meaning 0). The backward rules, with d_k the
   k-th derivative at h0:
     kind 1: dh0 = d2 h1 g,                 dh1 = d1 g
     kind 2: dh0 = (d3 h1^2 + d2 h2) g,     dh1 = 2 d2 h1 g,    dh2 = d1 g
   fused when not recording; recorded, the same products of ebm_act_deriv
   nodes, in the same order, so both give the same bits. */
#define EBM__JET_BLOCK 256
/* d1, d2 and (d3 not NULL) d3 at x: for SiLU from one sigmoid, by the
   expressions of ebm__act_range (so the same bits as ebm_act_deriv's). */
static void ebm__jet_derivs(int type, float a, const float *x, float *d1, float *d2, float *d3, size_t m)
{
    size_t i;
    if (type != EBM_ACT_SILU) {
        ebm__act_range(type, 1, a, x, d1, m);
        ebm__act_range(type, 2, a, x, d2, m);
        if (d3) ebm__act_range(type, 3, a, x, d3, m);
        return;
    }
    if (d3)
        for (i = 0; i < m; i++) {
            float v = x[i], s = ebm__sigmoid(v), s1 = s * (1 - s);
            d1[i] = s + v * s * (1 - s);
            d2[i] = s1 * (2 + v * (1 - 2 * s));
            d3[i] = s1 * ((1 - 2 * s) * (3 + v * (1 - 2 * s)) - 2 * v * s1);
        }
    else
        for (i = 0; i < m; i++) {
            float v = x[i], s = ebm__sigmoid(v), s1 = s * (1 - s);
            d1[i] = s + v * s * (1 - s);
            d2[i] = s1 * (2 + v * (1 - 2 * s));
        }
}

static void ebm__jet_range(int type, float a, int kind, const float *h0, const float *h1, const float *h2, const float *gy,
                           float *y, float *g0, float *g1, float *g2, size_t n)
{
    float d1[EBM__JET_BLOCK], d2[EBM__JET_BLOCK], d3[EBM__JET_BLOCK];
    size_t o, i;
    for (o = 0; o < n; o += EBM__JET_BLOCK) {
        const size_t m = n - o < EBM__JET_BLOCK ? n - o : EBM__JET_BLOCK;
        const float *x0 = h0 + o, *x1 = h1 + o, *x2 = h2 ? h2 + o : NULL;
        ebm__jet_derivs(type, a, x0, d1, d2, gy && kind == 2 && g0 ? d3 : NULL, m);
        if (!gy) { /* forward */
            if (kind == 1) for (i = 0; i < m; i++) y[o + i] = d1[i] * x1[i];
            else if (x2) for (i = 0; i < m; i++) y[o + i] = d2[i] * (x1[i] * x1[i]) + d1[i] * x2[i];
            else for (i = 0; i < m; i++) y[o + i] = d2[i] * (x1[i] * x1[i]);
            continue;
        }
        if (kind == 1) {
            if (g0) for (i = 0; i < m; i++) g0[o + i] = gy[o + i] * (d2[i] * x1[i]);
            if (g1) for (i = 0; i < m; i++) g1[o + i] = gy[o + i] * d1[i];
            continue;
        }
        if (g0) {
            if (x2) for (i = 0; i < m; i++) g0[o + i] = gy[o + i] * (d3[i] * (x1[i] * x1[i]) + d2[i] * x2[i]);
            else for (i = 0; i < m; i++) g0[o + i] = gy[o + i] * (d3[i] * (x1[i] * x1[i]));
        }
        if (g1) for (i = 0; i < m; i++) g1[o + i] = gy[o + i] * (2.0f * (d2[i] * x1[i]));
        if (g2) for (i = 0; i < m; i++) g2[o + i] = gy[o + i] * d1[i];
    }
}

/* The same over n elements, in fixed chunks run in parallel. */
static void ebm__jet_kernel(int type, float a, int kind, const float *h0, const float *h1, const float *h2, const float *gy,
                            float *y, float *g0, float *g1, float *g2, size_t n)
{
    const long nc = (long)ebm__ceil_div(n, EBM__CHUNK);
    long c;
    EBM__PARALLEL_FOR(nc, nc > 1)
    for (c = 0; c < nc; c++) {
        size_t o = (size_t)c * EBM__CHUNK, m = n - o < EBM__CHUNK ? n - o : EBM__CHUNK;
        ebm__jet_range(type, a, kind, h0 + o, h1 + o, h2 ? h2 + o : NULL, gy ? gy + o : NULL, y ? y + o : NULL,
                       g0 ? g0 + o : NULL, g1 ? g1 + o : NULL, g2 ? g2 + o : NULL, m);
    }
}

static ebm_var *ebm__act_jet(ebm_graph *g, ebm_var *h0, ebm_var *h1, ebm_var *h2, int type, float param, int kind)
{
    ebm_var *y;
    EBM__BEGIN(g);
    EBM__NEED(g, h0, "act_jet"); EBM__NEED(g, h1, "act_jet");
    if (h1->size != h0->size || (h2 && h2->size != h0->size)) return ebm__gfail(g, EBM_EINVAL, "act_jet: sizes differ");
    if (type < 0 || type >= EBM_ACT_COUNT || (kind != 1 && kind != 2)) return ebm__gfail(g, EBM_EINVAL, "act_jet: activation %d, kind %d", type, kind);
    y = ebm__node(g, EBM__OP_JET, h0->ndim, h0->shape, h0, h1, kind == 2 ? h2 : NULL, 0);
    if (!y) return NULL;
    y->ip[0] = type; y->ip[1] = kind; y->fp[0] = param;
    if (y->data) ebm__jet_kernel(type, param, kind, h0->data, h1->data, kind == 2 && h2 ? h2->data : NULL, NULL, y->data, NULL, NULL, NULL, y->size);
    return y;
}

/* --- element-wise ops and reductions --- */

static ebm_var *ebm__binary(ebm_graph *g, int op, ebm_var *a, ebm_var *b)
{
    ebm_var *y;
    EBM__BEGIN(g);
    EBM__NEED(g, a, ebm__op_names[op]); EBM__NEED(g, b, ebm__op_names[op]);
    if (a->size != b->size) return ebm__gfail(g, EBM_EINVAL, "%s: sizes %lu and %lu differ", ebm__op_names[op], (unsigned long)a->size, (unsigned long)b->size);
    y = ebm__node(g, op, a->ndim, a->shape, a, b, NULL, 0);
    if (y && y->data) { /* in fixed chunks, in parallel (each element alone: the same bits) */
        const long nc = (long)ebm__ceil_div(y->size, EBM__CHUNK);
        long c;
        EBM__PARALLEL_FOR(nc, nc > 1)
        for (c = 0; c < nc; c++) {
            size_t o = (size_t)c * EBM__CHUNK, e = y->size - o < EBM__CHUNK ? y->size : o + EBM__CHUNK, j;
            float *yd = y->data;
            const float *ad = a->data, *bd = b->data;
            if (op == EBM__OP_ADD) for (j = o; j < e; j++) yd[j] = ad[j] + bd[j];
            else for (j = o; j < e; j++) yd[j] = ad[j] * bd[j];
        }
    }
    return y;
}

EBMDEF ebm_var *ebm_add(ebm_graph *g, ebm_var *a, ebm_var *b) { return ebm__binary(g, EBM__OP_ADD, a, b); }
EBMDEF ebm_var *ebm_mul(ebm_graph *g, ebm_var *a, ebm_var *b) { return ebm__binary(g, EBM__OP_MUL, a, b); }
EBMDEF ebm_var *ebm_sub(ebm_graph *g, ebm_var *a, ebm_var *b) { return ebm_add(g, a, ebm_scale(g, b, -1.0f)); }

EBMDEF ebm_var *ebm_scale(ebm_graph *g, ebm_var *a, float c)
{
    ebm_var *y;
    size_t i;
    EBM__BEGIN(g);
    EBM__NEED(g, a, "scale");
    y = ebm__node(g, EBM__OP_SCALE, a->ndim, a->shape, a, NULL, NULL, 0);
    if (!y) return NULL;
    y->fp[0] = c;
    if (y->data) for (i = 0; i < y->size; i++) y->data[i] = c * a->data[i];
    return y;
}

/* Sums run in one fixed order, in double: the same bits on any thread count. */
EBMDEF ebm_var *ebm_sum(ebm_graph *g, ebm_var *a)
{
    ebm_var *y;
    int one = 1;
    EBM__BEGIN(g);
    EBM__NEED(g, a, "sum");
    y = ebm__node(g, EBM__OP_SUM, 1, &one, a, NULL, NULL, 0);
    if (y && y->data) {
        double s = 0;
        size_t i;
        for (i = 0; i < a->size; i++) s += a->data[i];
        y->data[0] = (float)s;
    }
    return y;
}

EBMDEF ebm_var *ebm_mean(ebm_graph *g, ebm_var *a)
{
    EBM__BEGIN(g);
    EBM__NEED(g, a, "mean");
    return ebm_scale(g, ebm_sum(g, a), 1.0f / (float)a->size);
}

EBMDEF ebm_var *ebm_dot(ebm_graph *g, ebm_var *a, ebm_var *b) { return ebm_sum(g, ebm_mul(g, a, b)); }
EBMDEF ebm_var *ebm_sqnorm(ebm_graph *g, ebm_var *a) { return ebm_dot(g, a, a); }

/* A scalar (1) broadcast to a shape: the adjoint of ebm_sum. */
static ebm_var *ebm__expand(ebm_graph *g, ebm_var *s, const ebm_var *like)
{
    ebm_var *y;
    size_t i;
    EBM__BEGIN(g);
    y = ebm__node(g, EBM__OP_EXPAND, like->ndim, like->shape, s, NULL, NULL, 0);
    if (y && y->data) for (i = 0; i < y->size; i++) y->data[i] = s->data[0];
    return y;
}

/* Sum over every dimension but the last: (..., C) -> (C), row by row in
   order; in parallel over blocks of EBM__CHSUM_COLS channels (a bias
   gradient: each channel's sum in the same order either way). A single
   channel (a last layer's: 50,176 values for the generator's 28x28 output
   at batch 64) is one contiguous range, summed as EBM__CHSUM_FLAT partial
   sums of every EBM__CHSUM_FLAT-th value, added in order at the end: one
   running sum was a chain of dependent scalar adds (36 us there; 1.6 us
   in partial sums). With more channels the pass is bound by reading them (94 us for
   net28's 14x14x64 at batch 64 either way), so their sums stay in order. */
#define EBM__CHSUM_COLS 16
#define EBM__CHSUM_FLAT 64
static ebm_var *ebm__chsum(ebm_graph *g, ebm_var *a)
{
    ebm_var *y;
    int c;
    EBM__BEGIN(g);
    c = a->shape[a->ndim - 1];
    y = ebm__node(g, EBM__OP_CHSUM, 1, &c, a, NULL, NULL, 0);
    if (y && y->data && c == 1) {
        float acc[EBM__CHSUM_FLAT] = { 0.0f }, sum = 0.0f;
        size_t r = 0;
        int j;
        for (; r + EBM__CHSUM_FLAT <= a->size; r += EBM__CHSUM_FLAT) /* (a loop the compiler vectorises) */
            for (j = 0; j < EBM__CHSUM_FLAT; j++) acc[j] += a->data[r + (size_t)j];
        for (j = 0; r < a->size; r++, j++) acc[j] += a->data[r];
        for (j = 0; j < EBM__CHSUM_FLAT; j++) sum += acc[j];
        y->data[0] = sum;
    } else if (y && y->data) {
        const size_t rows = a->size / (size_t)c;
        const long n_cb = (long)ebm__ceil_div((size_t)c, EBM__CHSUM_COLS);
        long cb;
        EBM__PARALLEL_FOR(n_cb, n_cb > 1 && a->size > EBM__CHUNK)
        for (cb = 0; cb < n_cb; cb++) {
            const int j0 = (int)cb * EBM__CHSUM_COLS, nj = c - j0 < EBM__CHSUM_COLS ? c - j0 : EBM__CHSUM_COLS;
            float acc[EBM__CHSUM_COLS] = { 0.0f };
            const float *row = a->data + j0;
            size_t r;
            int j;
            if (nj == EBM__CHSUM_COLS) /* a constant length: the sums stay in registers */
                for (r = 0; r < rows; r++, row += c)
                    for (j = 0; j < EBM__CHSUM_COLS; j++) acc[j] += row[j];
            else
                for (r = 0; r < rows; r++, row += c)
                    for (j = 0; j < nj; j++) acc[j] += row[j];
            for (j = 0; j < nj; j++) y->data[j0 + j] = acc[j];
        }
    }
    return y;
}

/* (C) broadcast over the rows of a shape (..., C): the adjoint of ebm__chsum. */
static ebm_var *ebm__chbcast(ebm_graph *g, ebm_var *b, const ebm_var *like)
{
    ebm_var *y;
    EBM__BEGIN(g);
    y = ebm__node(g, EBM__OP_CHBCAST, like->ndim, like->shape, b, NULL, NULL, 0);
    if (y && y->data) {
        size_t r, c = b->size, rows = y->size / c;
        for (r = 0; r < rows; r++) memcpy(y->data + r * c, b->data, c * sizeof(float));
    }
    return y;
}

/* --- pooling --- */

static ebm_var *ebm__pool_check(ebm_graph *g, const char *op, ebm_var *x, int k, int s, int *shape)
{
    if (!x) return ebm__gfail(g, EBM_EINVAL, "%s: NULL tensor argument", op);
    if (x->ndim != 4) return ebm__gfail(g, EBM_EINVAL, "%s: input must be (N,H,W,C)", op);
    if (k < 1 || s < 1) return ebm__gfail(g, EBM_EINVAL, "%s: window %d, stride %d", op, k, s);
    if (k > x->shape[1] || k > x->shape[2]) return ebm__gfail(g, EBM_EINVAL, "%s: %dx%d window on a %dx%d input", op, k, k, x->shape[1], x->shape[2]);
    shape[0] = x->shape[0]; shape[1] = (x->shape[1] - k) / s + 1; shape[2] = (x->shape[2] - k) / s + 1; shape[3] = x->shape[3];
    return x;
}

/* Average pooling (transpose = 0), or its adjoint spreading g back over the
   windows of an (N,H,W,C) input of shape `big` (transpose = 1). */
static void ebm__avgpool_kernel(const int *big, const int *small, int k, int s, const float *src, float *dst, int transpose)
{
    int n, ho, wo, i, j, c, C = big[3];
    float inv = 1.0f / (float)(k * k);
    if (transpose) memset(dst, 0, ebm__shape_size(4, big) * sizeof(float));
    for (n = 0; n < big[0]; n++)
        for (ho = 0; ho < small[1]; ho++)
            for (wo = 0; wo < small[2]; wo++) {
                size_t o = (((size_t)n * small[1] + ho) * small[2] + wo) * C;
                if (!transpose) for (c = 0; c < C; c++) dst[o + c] = 0.0f;
                for (i = 0; i < k; i++)
                    for (j = 0; j < k; j++) {
                        size_t b = (((size_t)n * big[1] + ho * s + i) * big[2] + wo * s + j) * C;
                        if (transpose) for (c = 0; c < C; c++) dst[b + c] += src[o + c] * inv;
                        else for (c = 0; c < C; c++) dst[o + c] += src[b + c];
                    }
                if (!transpose) for (c = 0; c < C; c++) dst[o + c] *= inv;
            }
}

EBMDEF ebm_var *ebm_avgpool(ebm_graph *g, ebm_var *x, int k, int stride)
{
    int shape[4];
    ebm_var *y;
    EBM__BEGIN(g);
    if (!ebm__pool_check(g, "avgpool", x, k, stride, shape)) return NULL;
    y = ebm__node(g, EBM__OP_AVGPOOL, 4, shape, x, NULL, NULL, 0);
    if (!y) return NULL;
    y->ip[0] = k; y->ip[1] = stride;
    if (y->data) ebm__avgpool_kernel(x->shape, y->shape, k, stride, x->data, y->data, 0);
    return y;
}

static ebm_var *ebm__avgpool_t(ebm_graph *g, ebm_var *gy, const ebm_var *x, int k, int stride)
{
    ebm_var *gx;
    EBM__BEGIN(g);
    gx = ebm__node(g, EBM__OP_AVGPOOL_T, 4, x->shape, gy, NULL, NULL, 0);
    if (!gx) return NULL;
    gx->ip[0] = k; gx->ip[1] = stride;
    if (gx->data) ebm__avgpool_kernel(x->shape, gy->shape, k, stride, gy->data, gx->data, 1);
    return gx;
}

EBMDEF ebm_var *ebm_maxpool(ebm_graph *g, ebm_var *x, int k, int stride)
{
    int shape[4];
    ebm_var *y;
    int32_t *idx;
    EBM__BEGIN(g);
    if (!ebm__pool_check(g, "maxpool", x, k, stride, shape)) return NULL;
    if (x->size > (size_t)INT32_MAX) return ebm__gfail(g, EBM_EINVAL, "maxpool: %lu values do not fit its int32 indices", (unsigned long)x->size);
    y = ebm__node(g, EBM__OP_MAXPOOL, 4, shape, x, NULL, NULL, 0);
    if (!y || !ebm__data(g, y->size * sizeof(int32_t), (void **)&idx)) return NULL;
    y->aux = idx;
    y->ip[0] = k; y->ip[1] = stride;
    if (y->data) { /* idx[o] = flat index into x of the window's first maximum */
        int n, ho, wo, i, j, c, C = x->shape[3];
        for (n = 0; n < shape[0]; n++)
            for (ho = 0; ho < shape[1]; ho++)
                for (wo = 0; wo < shape[2]; wo++)
                    for (c = 0; c < C; c++) {
                        size_t o = (((size_t)n * shape[1] + ho) * shape[2] + wo) * C + c;
                        int32_t best = -1;
                        for (i = 0; i < k; i++)
                            for (j = 0; j < k; j++) {
                                int32_t b = (int32_t)((((size_t)n * x->shape[1] + ho * stride + i) * x->shape[2] + wo * stride + j) * C + c);
                                if (best < 0 || x->data[b] > x->data[best]) best = b;
                            }
                        idx[o] = best;
                        y->data[o] = x->data[best];
                    }
    }
    return y;
}

/* out[idx[i]] += g[i] into a tensor shaped like `like` (adjoint of gather). */
static ebm_var *ebm__scatter(ebm_graph *g, ebm_var *src, int32_t *idx, const ebm_var *like)
{
    ebm_var *y;
    EBM__BEGIN(g);
    y = ebm__node(g, EBM__OP_SCATTER, like->ndim, like->shape, src, NULL, NULL, 0);
    if (!y) return NULL;
    y->aux = idx;
    if (y->data) {
        size_t i;
        memset(y->data, 0, y->size * sizeof(float));
        for (i = 0; i < src->size; i++) y->data[idx[i]] += src->data[i];
    }
    return y;
}

/* out[i] = src[idx[i]] shaped like `like` (adjoint of scatter). */
static ebm_var *ebm__gather(ebm_graph *g, ebm_var *src, int32_t *idx, const ebm_var *like)
{
    ebm_var *y;
    EBM__BEGIN(g);
    y = ebm__node(g, EBM__OP_GATHER, like->ndim, like->shape, src, NULL, NULL, 0);
    if (!y) return NULL;
    y->aux = idx;
    if (y->data) {
        size_t i;
        for (i = 0; i < y->size; i++) y->data[i] = src->data[idx[i]];
    }
    return y;
}

/* --- softmax cross-entropy --- */

EBMDEF ebm_var *ebm_softmax_xent(ebm_graph *g, ebm_var *z, const int *labels)
{
    ebm_var *y;
    int one = 1, n, C, i;
    int32_t *lab;
    EBM__BEGIN(g);
    EBM__NEED(g, z, "softmax_xent");
    if (!labels) return ebm__gfail(g, EBM_EINVAL, "softmax_xent: NULL labels");
    if (z->ndim != 2) return ebm__gfail(g, EBM_EINVAL, "softmax_xent: logits must be (N, classes)");
    n = z->shape[0]; C = z->shape[1];
    for (i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= C) return ebm__gfail(g, EBM_EINVAL, "softmax_xent: label %d of sample %d is not in 0..%d", labels[i], i, C - 1);
    y = ebm__node(g, EBM__OP_XENT, 1, &one, z, NULL, NULL, 0);
    if (!y) return NULL;
    lab = (int32_t *)ebm__meta(g, (size_t)n * sizeof(int32_t)); /* labels are needed even when measuring */
    if (!lab) return NULL;
    for (i = 0; i < n; i++) lab[i] = labels[i];
    y->aux = lab;
    if (y->data) {
        double total = 0;
        for (i = 0; i < n; i++) {
            const float *r = z->data + (size_t)i * C;
            double mx = r[0], s = 0;
            int j;
            for (j = 1; j < C; j++) if (r[j] > mx) mx = r[j];
            for (j = 0; j < C; j++) s += exp(r[j] - mx);
            total += mx + log(s) - r[lab[i]];
        }
        y->data[0] = (float)(total / n);
    }
    return y;
}

/* d(loss)/dz = (softmax(z) - onehot(label)) * gy / N. */
static ebm_var *ebm__xent_grad(ebm_graph *g, ebm_var *z, ebm_var *gy, int32_t *lab)
{
    ebm_var *gz;
    EBM__BEGIN(g);
    gz = ebm__node(g, EBM__OP_XENT_GRAD, 2, z->shape, z, gy, NULL, 0);
    if (!gz) return NULL;
    gz->aux = lab;
    if (gz->data) {
        int n = z->shape[0], C = z->shape[1], i, j;
        double scale = (double)gy->data[0] / n;
        for (i = 0; i < n; i++) {
            const float *r = z->data + (size_t)i * C;
            float *o = gz->data + (size_t)i * C;
            double mx = r[0], s = 0;
            for (j = 1; j < C; j++) if (r[j] > mx) mx = r[j];
            for (j = 0; j < C; j++) s += exp(r[j] - mx);
            for (j = 0; j < C; j++) o[j] = (float)((exp(r[j] - mx) / s - (j == lab[i])) * scale);
        }
    }
    return gz;
}

/* --- reverse mode --- */

/* A fused conv (or transposed conv) + LeakyReLU node's gradient has to be
   multiplied by the LeakyReLU's derivative before the node's own backward
   uses it, and an activation node's gradient by the activation's
   derivative before it is passed on. When the node's first gradient term
   comes from the next layer's input gradient (the reference nets and
   generators: always), that pass applies the factor in its write-back
   (ebm__conv_bwd_data_epi after a conv, ebm__conv_fwd_epi after a
   transposed conv; ebm__epi_mask), and the node's state slot (ip[3] of a
   conv, ip[5] of a transposed conv, ip[2] of an activation) = 1 records
   that its gradient is held multiplied: every later term is multiplied as
   it is added (ebm__acc), and the node's backward does not multiply again.
   Not in a recorded backward (the factor must then enter as an op), and
   not for a node whose gradient ebm_grad returns (state -1).
   ebm__premasked returns the node's state: 1 held multiplied, 0 not (yet),
   -1 never; 2 for any other node. (Saves a pass over each hidden layer's
   gradient: 4-5 % of net28_nf16's Langevin step in perf; with SiLU, the
   activation's backward pass, which also reads the gradient and writes
   another.) */
static int ebm__mask_slot(const ebm_var *v)
{
    return v->op == EBM__OP_CONV && v->ip[2] ? 3 : v->op == EBM__OP_CONVT && v->ip[4] ? 5
         : v->op == EBM__OP_ACT && v->ip[1] == 0 ? 2 : 0;
}
static int ebm__premasked(const ebm_var *v) { return ebm__mask_slot(v) ? v->ip[ebm__mask_slot(v)] : 2; }

/* d times the activation derivative of a node whose gradient is held
   multiplied (ebm__premasked; a backward that is not recorded). */
static ebm_var *ebm__held_factor(ebm_graph *g, ebm_var *d, ebm_var *v)
{
    ebm_var *r;
    int type;
    const float *src;
    if (v->op != EBM__OP_ACT) return ebm__leaky_mask(g, d, v);
    src = ebm__act_deriv_src(v, &type);
    r = ebm__node(g, EBM__OP_LEAF, v->ndim, v->shape, NULL, NULL, NULL, 0);
    if (r && r->data) ebm__act_bwd(type, v->fp[0], src, d->data, r->data, v->size);
    return r;
}

/* Add contribution d to v's gradient. */
static void ebm__acc(ebm_graph *g, ebm_var *v, ebm_var *d)
{
    if (!d || !v->needed) return;
    EBM_ASSERT(d->size == v->size);
    d = ebm__like(g, d, v);
    if (ebm__premasked(v) == 1) d = ebm__held_factor(g, d, v); /* the sum holds multiplied terms only */
    if (d) v->grad = v->grad ? ebm_add(g, v->grad, d) : d;
}


/* One node's backward rule: push node->grad to its needed inputs. */
static void ebm__backward(ebm_graph *g, ebm_var *v)
{
    ebm_var *gy = v->grad, *a = v->in[0], *b = v->in[1], *c = v->in[2];
    switch (v->op) {
    case EBM__OP_CONV: /* y = F(x, w) + b, or LeakyReLU of it */
        if (v->ip[2] && v->ip[3] != 1 && !(gy = ebm__leaky_mask(g, gy, v))) break;
        if (a->needed) {
            /* the input's gradient multiplied here: see ebm__premasked */
            const int pre = !g->record && ebm__premasked(a) == (a->grad ? 1 : 0);
            ebm_var *d = ebm__conv2d_transpose(g, gy, b, NULL, v->ip[0], v->ip[1], a->shape[1], a->shape[2], 0, 0.0f, pre ? a : NULL);
            if (pre && d) { a->ip[ebm__mask_slot(a)] = 1; a->grad = a->grad ? ebm_add(g, a->grad, d) : d; }
            else ebm__acc(g, a, d);
        }
        if (b->needed) ebm__acc(g, b, ebm_conv2d_weight_grad(g, a, gy, b->shape[0], v->ip[0], v->ip[1]));
        if (c && c->needed) ebm__acc(g, c, ebm__chsum(g, gy));
        break;
    case EBM__OP_CONVT: /* x = D(y, w) + b, or LeakyReLU of it */
        if (v->ip[4] && v->ip[5] != 1 && !(gy = ebm__leaky_mask(g, gy, v))) break;
        if (a->needed) { /* as the conv's */
            const int pre = !g->record && ebm__premasked(a) == (a->grad ? 1 : 0);
            ebm_var *d = ebm__conv2d(g, gy, b, NULL, v->ip[0], v->ip[1], 0, 0.0f, NULL, pre ? a : NULL);
            if (pre && d) { a->ip[ebm__mask_slot(a)] = 1; a->grad = a->grad ? ebm_add(g, a->grad, d) : d; }
            else ebm__acc(g, a, d);
        }
        if (b->needed) ebm__acc(g, b, ebm_conv2d_weight_grad(g, gy, a, b->shape[0], v->ip[0], v->ip[1]));
        if (c && c->needed) ebm__acc(g, c, ebm__chsum(g, gy));
        break;
    case EBM__OP_WGRAD: /* gw = G(x, gy0) */
        if (a->needed) ebm__acc(g, a, ebm_conv2d_transpose(g, b, gy, NULL, v->ip[1], v->ip[2], a->shape[1], a->shape[2]));
        if (b->needed) ebm__acc(g, b, ebm_conv2d(g, a, gy, NULL, v->ip[1], v->ip[2]));
        break;
    case EBM__OP_ACT:
        if (!a->needed) break;
        if (v->ip[1] == 0 && v->ip[2] == 1) ebm__acc(g, a, gy); /* already times act'(a): see ebm__premasked */
        else if (g->record) {
            ebm__acc(g, a, ebm_mul(g, gy, ebm_act_deriv(g, a, v->ip[0], v->fp[0], v->ip[1] + 1)));
        } else if (v->ip[1] + 1 > EBM__ACT_MAX_ORDER && v->ip[0] != EBM_ACT_LEAKY_RELU && v->ip[0] != EBM_ACT_ELU) {
            ebm__gfail(g, EBM_EUNSUPPORTED, "act: %s is differentiable to order %d here", ebm_act_name(v->ip[0]), EBM__ACT_MAX_ORDER);
        } else { /* fused: gx = gy * act^(order+1)(x) in one pass */
            ebm_var *gx = ebm__node(g, EBM__OP_LEAF, a->ndim, a->shape, NULL, NULL, NULL, 0);
            if (gx && gx->data) {
                if (v->ip[1] == 0) {
                    int type;
                    const float *src = ebm__act_deriv_src(v, &type);
                    ebm__act_bwd(type, v->fp[0], src, gy->data, gx->data, a->size);
                } else {
                    size_t i;
                    ebm__act_fwd(v->ip[0], v->ip[1] + 1 > 3 ? 3 : v->ip[1] + 1, v->fp[0], a->data, gx->data, a->size);
                    for (i = 0; i < a->size; i++) gx->data[i] *= gy->data[i];
                }
            }
            ebm__acc(g, a, gx);
        }
        break;
    case EBM__OP_JET: { /* a = h0, b = h1, c = h2 (kind 2; may be NULL) */
        const int type = v->ip[0], kind = v->ip[1];
        const float prm = v->fp[0];
        if (g->record) {
            ebm_var *h11 = kind == 2 ? ebm_mul(g, b, b) : NULL, *t;
            if (a->needed) {
                if (kind == 1) t = ebm_mul(g, ebm_act_deriv(g, a, type, prm, 2), b);
                else {
                    t = ebm_mul(g, ebm_act_deriv(g, a, type, prm, 3), h11);
                    if (c) t = ebm_add(g, t, ebm_mul(g, ebm_act_deriv(g, a, type, prm, 2), c));
                }
                ebm__acc(g, a, ebm_mul(g, gy, t));
            }
            if (b->needed)
                ebm__acc(g, b, ebm_mul(g, gy, kind == 1 ? ebm_act_deriv(g, a, type, prm, 1)
                                                        : ebm_scale(g, ebm_mul(g, ebm_act_deriv(g, a, type, prm, 2), b), 2.0f)));
            if (c && c->needed) ebm__acc(g, c, ebm_mul(g, gy, ebm_act_deriv(g, a, type, prm, 1)));
        } else {
            ebm_var *g0 = a->needed ? ebm__node(g, EBM__OP_LEAF, a->ndim, a->shape, NULL, NULL, NULL, 0) : NULL;
            ebm_var *g1 = b->needed ? ebm__node(g, EBM__OP_LEAF, b->ndim, b->shape, NULL, NULL, NULL, 0) : NULL;
            ebm_var *g2 = c && c->needed ? ebm__node(g, EBM__OP_LEAF, c->ndim, c->shape, NULL, NULL, NULL, 0) : NULL;
            if (g->err.status != EBM_OK) break;
            if (gy->data && (!g0 || g0->data) && (!g1 || g1->data) && (!g2 || g2->data))
                ebm__jet_kernel(type, prm, kind, a->data, b->data, c ? c->data : NULL, gy->data, NULL, g0 ? g0->data : NULL,
                                g1 ? g1->data : NULL, g2 ? g2->data : NULL, a->size);
            if (g0) ebm__acc(g, a, g0);
            if (g1) ebm__acc(g, b, g1);
            if (g2) ebm__acc(g, c, g2);
        }
        break;
    }
    case EBM__OP_CHSUM: ebm__acc(g, a, ebm__chbcast(g, gy, a)); break;
    case EBM__OP_CHBCAST: ebm__acc(g, a, ebm__chsum(g, gy)); break;
    case EBM__OP_SUM: ebm__acc(g, a, ebm__expand(g, gy, a)); break;
    case EBM__OP_EXPAND: ebm__acc(g, a, ebm_sum(g, gy)); break;
    case EBM__OP_ADD:
        if (a->needed) ebm__acc(g, a, gy);
        if (b->needed) ebm__acc(g, b, gy);
        break;
    case EBM__OP_MUL:
        if (a->needed) ebm__acc(g, a, ebm_mul(g, gy, b));
        if (b->needed) ebm__acc(g, b, ebm_mul(g, gy, a));
        break;
    case EBM__OP_SCALE: ebm__acc(g, a, ebm_scale(g, gy, v->fp[0])); break;
    case EBM__OP_RESHAPE: ebm__acc(g, a, gy); break;
    case EBM__OP_AVGPOOL: ebm__acc(g, a, ebm__avgpool_t(g, gy, a, v->ip[0], v->ip[1])); break;
    case EBM__OP_AVGPOOL_T: ebm__acc(g, a, ebm_avgpool(g, gy, v->ip[0], v->ip[1])); break;
    case EBM__OP_MAXPOOL: ebm__acc(g, a, ebm__scatter(g, gy, (int32_t *)v->aux, a)); break;
    case EBM__OP_SCATTER: ebm__acc(g, a, ebm__gather(g, gy, (int32_t *)v->aux, a)); break;
    case EBM__OP_GATHER: ebm__acc(g, a, ebm__scatter(g, gy, (int32_t *)v->aux, a)); break;
    case EBM__OP_XENT: ebm__acc(g, a, ebm__xent_grad(g, a, gy, (int32_t *)v->aux)); break;
    case EBM__OP_XENT_GRAD:
        ebm__gfail(g, EBM_EUNSUPPORTED, "softmax_xent is differentiable once; its gradient was differentiated");
        break;
    default: EBM_ASSERT(0);
    }
}

EBMDEF int ebm_grad(ebm_graph *g, ebm_var *y, ebm_var *seed, int n, ebm_var *const *wrt, ebm_var **out, int create_graph)
{
    ebm_var *v;
    int i, saved;
    if (!g) return EBM_EINVAL;
    if (g->err.status != EBM_OK) return g->err.status;
    if (!y || n < 0 || (n > 0 && (!wrt || !out)))
        return ebm__gfail(g, EBM_EINVAL, "grad: NULL output, inputs or results"), EBM_EINVAL;
    for (i = 0; i < n; i++)
        if (!wrt[i]) return ebm__gfail(g, EBM_EINVAL, "grad: input %d is NULL", i), EBM_EINVAL;
    if (seed && seed->size != y->size)
        return ebm__gfail(g, EBM_EINVAL, "grad: seed has %lu values, output %lu", (unsigned long)seed->size, (unsigned long)y->size), EBM_EINVAL;
    /* needed = depends on some wrt; scanned forward in tape order up to y. */
    for (v = g->first; v; v = v->next) {
        v->grad = NULL; v->needed = 0;
        if (ebm__mask_slot(v)) v->ip[ebm__mask_slot(v)] = 0; /* see ebm__premasked */
    }
    for (i = 0; i < n; i++) {
        wrt[i]->needed = 1;
        if (ebm__mask_slot(wrt[i])) wrt[i]->ip[ebm__mask_slot(wrt[i])] = -1;
    }
    for (v = g->first; v; v = v->next) {
        if (!v->needed)
            v->needed = (v->in[0] && v->in[0]->needed) || (v->in[1] && v->in[1]->needed) || (v->in[2] && v->in[2]->needed);
        if (v == y) break;
    }
    saved = g->record;
    g->record = create_graph != 0;
    if (y->needed) {
        y->grad = seed ? ebm__like(g, seed, y) : ebm_full(g, y->ndim, y->shape, 1.0f);
        for (v = y; v && g->err.status == EBM_OK; v = v->prev)
            if (v->grad && v->needed && v->in[0]) ebm__backward(g, v);
    }
    g->record = saved;
    for (i = 0; i < n && g->err.status == EBM_OK; i++)
        out[i] = wrt[i]->grad ? wrt[i]->grad : ebm_zeros(g, wrt[i]->ndim, wrt[i]->shape);
    return g->err.status;
}

/* ---------------------------------------------------------------- 6. models */

/* Sizes are capped so that every index fits the int32 the kernels use. */
#define EBM__MAX_DIM 65536
#define EBM__MAX_PER_SAMPLE ((size_t)1 << 28)

static int ebm__mfail(ebm_model *m, int status, const char *fmt, ...)
{
    if (m->status == EBM_OK) {
        va_list ap;
        va_start(ap, fmt);
        m->status = status;
        m->err.status = status;
        vsnprintf(m->err.msg, sizeof m->err.msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

EBMDEF int ebm_model_init(ebm_model *m, int c, int h, int w)
{
    if (!m) return EBM_EINVAL;
    memset(m, 0, sizeof *m);
    if (c < 1 || h < 1 || w < 1 || c > EBM__MAX_DIM || h > EBM__MAX_DIM || w > EBM__MAX_DIM ||
        (size_t)c * h * w > EBM__MAX_PER_SAMPLE)
        return ebm__mfail(m, EBM_EINVAL, "model input %dx%dx%d is not a valid size", c, h, w);
    m->in_c = c; m->in_h = h; m->in_w = w;
    return EBM_OK;
}

/* Append a layer after checking the builder is usable; fills its input shape. */
static ebm_layer *ebm__add(ebm_model *m, int type)
{
    ebm_layer *L;
    if (!m) return NULL;
    if (m->status != EBM_OK) return NULL;
    if (m->params) { ebm__mfail(m, EBM_EINVAL, "layers cannot be added after ebm_model_alloc"); return NULL; }
    if (m->in_c < 1) { ebm__mfail(m, EBM_EINVAL, "ebm_model_init was not called"); return NULL; }
    if (m->n_layers >= EBM_MAX_LAYERS) { ebm__mfail(m, EBM_EINVAL, "more than EBM_MAX_LAYERS (%d) layers", EBM_MAX_LAYERS); return NULL; }
    L = &m->layer[m->n_layers];
    memset(L, 0, sizeof *L);
    L->type = type;
    if (m->n_layers == 0) { L->in_h = m->in_h; L->in_w = m->in_w; L->in_c = m->in_c; }
    else { const ebm_layer *P = &m->layer[m->n_layers - 1]; L->in_h = P->out_h; L->in_w = P->out_w; L->in_c = P->out_c; }
    return L;
}

/* Accept the layer if its output is a sane size; assign its parameters. */
static int ebm__commit(ebm_model *m, ebm_layer *L, size_t w_size, size_t b_size)
{
    if (L->out_h < 1 || L->out_w < 1 || L->out_c < 1 || L->out_h > EBM__MAX_DIM || L->out_w > EBM__MAX_DIM ||
        L->out_c > EBM__MAX_DIM || (size_t)L->out_h * L->out_w * L->out_c > EBM__MAX_PER_SAMPLE)
        return ebm__mfail(m, EBM_EINVAL, "layer %d: output %dx%dx%d is not a valid size (input %dx%dx%d)", m->n_layers,
                          L->out_c, L->out_h, L->out_w, L->in_c, L->in_h, L->in_w);
    if (w_size > ((size_t)1 << 30)) return ebm__mfail(m, EBM_EINVAL, "layer %d: %lu weights is too many", m->n_layers, (unsigned long)w_size);
    L->w_off = m->n_params; L->w_size = w_size; m->n_params += w_size;
    L->b_off = m->n_params; L->b_size = b_size; m->n_params += b_size;
    m->n_layers++;
    return EBM_OK;
}

static int ebm__check_geom(ebm_model *m, const char *what, int out_c, int k, int stride, int pad)
{
    if (out_c < 1 || out_c > EBM__MAX_DIM) return ebm__mfail(m, EBM_EINVAL, "%s: %d output channels", what, out_c);
    if (k < 1 || k > EBM__MAX_DIM) return ebm__mfail(m, EBM_EINVAL, "%s: kernel size %d", what, k);
    if (stride < 1 || stride > EBM__MAX_DIM) return ebm__mfail(m, EBM_EINVAL, "%s: stride %d", what, stride);
    if (pad < 0 || pad > EBM__MAX_DIM) return ebm__mfail(m, EBM_EINVAL, "%s: padding %d", what, pad);
    return EBM_OK;
}

EBMDEF int ebm_model_add_conv2d(ebm_model *m, int out_c, int k, int stride, int pad, int bias)
{
    ebm_layer *L = ebm__add(m, EBM_LAYER_CONV2D);
    if (!L) return m ? m->status : EBM_EINVAL;
    if (ebm__check_geom(m, "conv2d", out_c, k, stride, pad)) return m->status;
    if (L->in_h + 2 * pad < k || L->in_w + 2 * pad < k)
        return ebm__mfail(m, EBM_EINVAL, "layer %d conv2d: a %dx%d kernel does not fit a %dx%d input with padding %d",
                          m->n_layers, k, k, L->in_h, L->in_w, pad);
    L->k = k; L->stride = stride; L->pad = pad; L->bias = bias != 0;
    L->out_h = ebm__conv_out(L->in_h, k, stride, pad);
    L->out_w = ebm__conv_out(L->in_w, k, stride, pad);
    L->out_c = out_c;
    return ebm__commit(m, L, (size_t)k * k * L->in_c * out_c, L->bias ? (size_t)out_c : 0);
}

EBMDEF int ebm_model_add_conv_transpose2d(ebm_model *m, int out_c, int k, int stride, int pad, int out_pad, int bias)
{
    ebm_layer *L = ebm__add(m, EBM_LAYER_CONVT2D);
    if (!L) return m ? m->status : EBM_EINVAL;
    if (ebm__check_geom(m, "conv_transpose2d", out_c, k, stride, pad)) return m->status;
    if (out_pad < 0 || out_pad >= stride)
        return ebm__mfail(m, EBM_EINVAL, "layer %d conv_transpose2d: output padding %d must be in 0..stride-1", m->n_layers, out_pad);
    L->k = k; L->stride = stride; L->pad = pad; L->out_pad = out_pad; L->bias = bias != 0;
    L->out_h = (L->in_h - 1) * stride - 2 * pad + k + out_pad;
    L->out_w = (L->in_w - 1) * stride - 2 * pad + k + out_pad;
    L->out_c = out_c;
    return ebm__commit(m, L, (size_t)k * k * L->in_c * out_c, L->bias ? (size_t)out_c : 0);
}

EBMDEF int ebm_model_add_linear(ebm_model *m, int out, int bias)
{
    ebm_layer *L = ebm__add(m, EBM_LAYER_LINEAR);
    size_t in;
    if (!L) return m ? m->status : EBM_EINVAL;
    if (out < 1 || out > EBM__MAX_DIM) return ebm__mfail(m, EBM_EINVAL, "linear: %d outputs", out);
    in = (size_t)L->in_h * L->in_w * L->in_c;
    L->bias = bias != 0;
    L->out_h = 1; L->out_w = 1; L->out_c = out;
    return ebm__commit(m, L, in * (size_t)out, L->bias ? (size_t)out : 0);
}

EBMDEF int ebm_model_add_act(ebm_model *m, int type, float param)
{
    ebm_layer *L = ebm__add(m, EBM_LAYER_ACT);
    if (!L) return m ? m->status : EBM_EINVAL;
    if (type < 0 || type >= EBM_ACT_COUNT) return ebm__mfail(m, EBM_EINVAL, "unknown activation type %d", type);
    if (!(param == param) || param > 1e30f || param < -1e30f) return ebm__mfail(m, EBM_EINVAL, "activation parameter is not finite");
    L->act = type; L->act_param = param;
    L->out_h = L->in_h; L->out_w = L->in_w; L->out_c = L->in_c;
    return ebm__commit(m, L, 0, 0);
}

static int ebm__add_pool(ebm_model *m, int type, int k, int stride)
{
    ebm_layer *L = ebm__add(m, type);
    if (!L) return m ? m->status : EBM_EINVAL;
    if (k < 1 || stride < 1 || k > L->in_h || k > L->in_w)
        return ebm__mfail(m, EBM_EINVAL, "layer %d pool: window %d, stride %d on a %dx%d input", m->n_layers, k, stride, L->in_h, L->in_w);
    L->k = k; L->stride = stride;
    L->out_h = (L->in_h - k) / stride + 1; L->out_w = (L->in_w - k) / stride + 1; L->out_c = L->in_c;
    return ebm__commit(m, L, 0, 0);
}

EBMDEF int ebm_model_add_avgpool(ebm_model *m, int k, int stride) { return ebm__add_pool(m, EBM_LAYER_AVGPOOL, k, stride); }
EBMDEF int ebm_model_add_maxpool(ebm_model *m, int k, int stride) { return ebm__add_pool(m, EBM_LAYER_MAXPOOL, k, stride); }

EBMDEF void ebm_model_out_shape(const ebm_model *m, int *h, int *w, int *c)
{
    const ebm_layer *L = m->n_layers ? &m->layer[m->n_layers - 1] : NULL;
    if (h) *h = L ? L->out_h : m->in_h;
    if (w) *w = L ? L->out_w : m->in_w;
    if (c) *c = L ? L->out_c : m->in_c;
}

/* PyTorch's fan_in for the default init: Conv2d weight (Co,Ci,K,K) -> Ci*K*K;
   ConvTranspose2d weight (Ci,Co,K,K) -> size(1)*K*K = Co*K*K; Linear -> I. */
static size_t ebm__fan_in(const ebm_layer *L)
{
    switch (L->type) {
    case EBM_LAYER_CONV2D: return (size_t)L->in_c * L->k * L->k;
    case EBM_LAYER_CONVT2D: return (size_t)L->out_c * L->k * L->k;
    case EBM_LAYER_LINEAR: return (size_t)L->in_h * L->in_w * L->in_c;
    }
    return 0;
}

EBMDEF int ebm_model_alloc(ebm_model *m, uint64_t seed)
{
    int i;
    ebm_rng r;
    if (!m) return EBM_EINVAL;
    if (m->status != EBM_OK) return m->status;
    if (m->params) return ebm__mfail(m, EBM_EINVAL, "ebm_model_alloc called twice");
    if (m->n_layers == 0) return ebm__mfail(m, EBM_EINVAL, "the model has no layers");
    m->params = (float *)EBM_MALLOC(4 * (m->n_params ? m->n_params : 1) * sizeof(float));
    if (!m->params) return ebm__mfail(m, EBM_ENOMEM, "cannot allocate %lu parameters", (unsigned long)m->n_params);
    m->grads = m->params + m->n_params;
    m->m1 = m->grads + m->n_params;
    m->m2 = m->m1 + m->n_params;
    memset(m->grads, 0, 3 * m->n_params * sizeof(float));
    /* Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)): what PyTorch's
       kaiming_uniform_(a = sqrt(5)) and its bias rule give. Layer i draws from
       sample i of the init stream: weights at step 0, biases at step 1. */
    r.seed = seed; r.stream = EBM_STREAM_INIT;
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *L = &m->layer[i];
        if (L->w_size) {
            float bound = 1.0f / sqrtf((float)ebm__fan_in(L));
            ebm_rng_uniform(&r, (uint64_t)i, 0, -bound, bound, m->params + L->w_off, L->w_size);
            if (L->b_size) ebm_rng_uniform(&r, (uint64_t)i, 1, -bound, bound, m->params + L->b_off, L->b_size);
        }
    }
    return EBM_OK;
}

EBMDEF void ebm_model_free(ebm_model *m)
{
    if (!m) return;
    EBM_FREE(m->params);
    m->params = m->grads = m->m1 = m->m2 = NULL;
}

EBMDEF void ebm_model_zero_grad(ebm_model *m)
{
    if (m && m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

EBMDEF size_t ebm_model_bytes(const ebm_model *m) { return m ? 4 * m->n_params * sizeof(float) : 0; }

/* A parameter of m as a leaf of g, tagged so ebm_model_backward finds it. */
static ebm_var *ebm__param(ebm_graph *g, ebm_model *m, size_t off, int ndim, const int *shape)
{
    ebm_var *v = ebm_leaf(g, m->params + off, ndim, shape);
    if (v) { v->is_param = 1; v->owner = m; v->owner_off = off; }
    return v;
}

/* A layer's weights and bias as parameter leaves of the graph (NULL where it has none). */
static void ebm__layer_params(ebm_model *m, ebm_graph *g, const ebm_layer *L, ebm_var **w, ebm_var **b)
{
    int ws[4], bs = L->out_c;
    *w = *b = NULL;
    if (L->type == EBM_LAYER_CONV2D || L->type == EBM_LAYER_CONVT2D) {
        ws[0] = L->k; ws[1] = L->k;
        ws[2] = L->type == EBM_LAYER_CONV2D ? L->in_c : L->out_c;
        ws[3] = L->type == EBM_LAYER_CONV2D ? L->out_c : L->in_c;
        *w = ebm__param(g, m, L->w_off, 4, ws);
    } else if (L->type == EBM_LAYER_LINEAR) {
        ws[0] = L->in_h * L->in_w * L->in_c; ws[1] = L->out_c;
        *w = ebm__param(g, m, L->w_off, 2, ws);
    }
    if (L->b_size) *b = ebm__param(g, m, L->b_off, 1, &bs);
}

/* 1 if a recorded chain keeps this layer's output (ebm_chain_kept_floats): a
   conv with at least 32 multiply-adds per output. Below that (a first layer
   of 1 or 3 channels) recomputing costs less than storing and reading back. */
static int ebm__keeps_output(const ebm_layer *L)
{
    return L->type == EBM_LAYER_CONV2D && (size_t)L->k * L->k * L->in_c >= 32;
}

/* The floats one step of n samples keeps (ebm__keep_convs). */
static size_t ebm__kept_per_step(const ebm_model *m, int n)
{
    size_t s = 0;
    int l;
    for (l = 0; l < m->n_layers; l++)
        if (ebm__keeps_output(&m->layer[l])) s += (size_t)n * m->layer[l].out_h * m->layer[l].out_w * m->layer[l].out_c;
    return s;
}

/* The second-order Taylor expansion of f along v, pushed through the net
   layer by layer (Taylor mode): f(x + t v) = f0 + t f1 + t^2/2 f2 + ..., so
   f1 = v.grad f and f2 = v.H v. A linear layer maps each coefficient (the
   bias goes to the first only); an activation a maps (h0, h1, h2) to
   (a(h0), a'(h0) h1, a''(h0) h1^2 + a'(h0) h2). The graph holds only forward
   ops, so the parameter gradient of any function of (f0, f1, f2) is one
   first-order backward on the fast kernels: cheaper than differentiating a
   Hessian-vector product (reverse over reverse), which the first two
   coefficients' pass replaces. f2 NULL: the first two coefficients only.
   Max-pooling has no rule here: 0 is returned, nothing built, and the
   caller takes the nested path. kept (may be NULL): the outputs at x of the
   conv layers a recorded chain keeps (ebm__keeps_output), one block each in
   layer order, which the primal stream then reads instead of recomputing. */
static int ebm__model_jet(ebm_model *m, ebm_graph *g, ebm_var *x, ebm_var *v, ebm_var **f0, ebm_var **f1, ebm_var **f2,
                          const float *kept)
{
    ebm_var *h0 = x, *h1 = v, *h2 = NULL; /* h2 = 0 at the input: kept NULL while it is zero */
    int i;
    for (i = 0; i < m->n_layers; i++) if (m->layer[i].type == EBM_LAYER_MAXPOOL) return 0;
    for (i = 0; i < m->n_layers && h0; i++) {
        const ebm_layer *L = &m->layer[i];
        ebm_var *w, *b;
        int shape[4];
        ebm__layer_params(m, g, L, &w, &b);
        switch (L->type) {
        case EBM_LAYER_CONV2D:
            if (kept && ebm__keeps_output(L)) {
                h0 = ebm__conv2d(g, h0, w, b, L->stride, L->pad, 0, 0.0f, kept, NULL);
                kept += (size_t)x->shape[0] * L->out_h * L->out_w * L->out_c;
            } else h0 = ebm_conv2d(g, h0, w, b, L->stride, L->pad);
            h1 = ebm_conv2d(g, h1, w, NULL, L->stride, L->pad);
            if (h2) h2 = ebm_conv2d(g, h2, w, NULL, L->stride, L->pad);
            break;
        case EBM_LAYER_CONVT2D:
            h0 = ebm_conv2d_transpose(g, h0, w, b, L->stride, L->pad, L->out_h, L->out_w);
            h1 = ebm_conv2d_transpose(g, h1, w, NULL, L->stride, L->pad, L->out_h, L->out_w);
            if (h2) h2 = ebm_conv2d_transpose(g, h2, w, NULL, L->stride, L->pad, L->out_h, L->out_w);
            break;
        case EBM_LAYER_LINEAR:
            shape[0] = x->shape[0]; shape[1] = 1; shape[2] = 1; shape[3] = L->out_c;
            h0 = ebm_reshape(g, ebm_linear(g, h0, w, b), 4, shape);
            h1 = ebm_reshape(g, ebm_linear(g, h1, w, NULL), 4, shape);
            if (h2) h2 = ebm_reshape(g, ebm_linear(g, h2, w, NULL), 4, shape);
            break;
        case EBM_LAYER_ACT: { /* h2 stays NULL (zero) through a LeakyReLU, whose a'' is 0, and when not asked for */
            ebm_var *n2 = f2 && (h2 || L->act != EBM_ACT_LEAKY_RELU) ? ebm__act_jet(g, h0, h1, h2, L->act, L->act_param, 2) : NULL;
            h1 = ebm__act_jet(g, h0, h1, NULL, L->act, L->act_param, 1);
            h0 = ebm_act(g, h0, L->act, L->act_param);
            h2 = n2;
            break;
        }
        case EBM_LAYER_AVGPOOL:
            h0 = ebm_avgpool(g, h0, L->k, L->stride);
            h1 = ebm_avgpool(g, h1, L->k, L->stride);
            if (h2) h2 = ebm_avgpool(g, h2, L->k, L->stride);
            break;
        }
    }
    *f0 = h0; *f1 = h1;
    if (f2) *f2 = h2 ? h2 : h0 ? ebm_zeros(g, h0->ndim, h0->shape) : NULL; /* a piecewise-linear net: v.H v = 0 */
    return 1;
}

/* 1 if layer i is a conv or transposed conv whose next layer, a LeakyReLU
   of slope >= 0, the forward pass fuses into it (one node, the
   pre-activation never stored). */
static int ebm__fuses_act(const ebm_model *m, int i)
{
    return (m->layer[i].type == EBM_LAYER_CONV2D || m->layer[i].type == EBM_LAYER_CONVT2D) && i + 1 < m->n_layers &&
           m->layer[i + 1].type == EBM_LAYER_ACT &&
           m->layer[i + 1].act == EBM_ACT_LEAKY_RELU && m->layer[i + 1].act_param >= 0;
}

EBMDEF ebm_var *ebm_model_forward(ebm_model *m, ebm_graph *g, ebm_var *x)
{
    return ebm_model_forward_partial(m, g, x, m ? m->n_layers : 0);
}

EBMDEF ebm_var *ebm_model_forward_partial(ebm_model *m, ebm_graph *g, ebm_var *x, int n_layers)
{
    int i;
    EBM__BEGIN(g);
    if (m && (n_layers < 1 || n_layers > m->n_layers)) return ebm__gfail(g, EBM_EINVAL, "model_forward: %d layers of %d", n_layers, m->n_layers);
    if (!m || !m->params) return ebm__gfail(g, EBM_EINVAL, "model_forward: the model is not allocated");
    if (!x) return ebm__gfail(g, EBM_EINVAL, "model_forward: NULL input");
    if (x->ndim != 4 || x->shape[1] != m->in_h || x->shape[2] != m->in_w || x->shape[3] != m->in_c)
        return ebm__gfail(g, EBM_EINVAL, "model_forward: input must be (N,%d,%d,%d)", m->in_h, m->in_w, m->in_c);
    for (i = 0; i < n_layers && x; i++) {
        const ebm_layer *L = &m->layer[i];
        int shape[4];
        ebm_var *w = NULL, *b = NULL;
        ebm__layer_params(m, g, L, &w, &b);
        switch (L->type) {
        case EBM_LAYER_CONV2D: /* a LeakyReLU (slope >= 0) right after is fused into the conv, */
            if (i + 1 < n_layers && ebm__fuses_act(m, i)) {
                x = ebm__conv2d(g, x, w, b, L->stride, L->pad, 1, m->layer[i + 1].act_param, NULL, NULL);
                i++;
            } else if (i + 1 < n_layers && m->layer[i + 1].type == EBM_LAYER_ACT) { /* any other computed in its pass */
                x = ebm__conv2d_act(g, x, w, b, L->stride, L->pad, m->layer[i + 1].act, m->layer[i + 1].act_param);
                i++;
            } else x = ebm_conv2d(g, x, w, b, L->stride, L->pad);
            break;
        case EBM_LAYER_CONVT2D: { /* likewise */
            const int fuse = i + 1 < n_layers && ebm__fuses_act(m, i);
            x = ebm__conv2d_transpose(g, x, w, b, L->stride, L->pad, L->out_h, L->out_w, fuse, fuse ? m->layer[i + 1].act_param : 0.0f, NULL);
            i += fuse;
            break;
        }
        case EBM_LAYER_LINEAR:
            shape[0] = x->shape[0]; shape[1] = 1; shape[2] = 1; shape[3] = L->out_c;
            x = ebm_reshape(g, ebm_linear(g, x, w, b), 4, shape);
            break;
        case EBM_LAYER_ACT: x = ebm_act(g, x, L->act, L->act_param); break;
        case EBM_LAYER_AVGPOOL: x = ebm_avgpool(g, x, L->k, L->stride); break;
        case EBM_LAYER_MAXPOOL: x = ebm_maxpool(g, x, L->k, L->stride); break;
        }
    }
    return x;
}

EBMDEF int ebm_model_backward(ebm_model *m, ebm_graph *g, ebm_var *loss)
{
    return ebm_model_backward_input(m, g, loss, NULL, NULL);
}

EBMDEF int ebm_model_backward_input(ebm_model *m, ebm_graph *g, ebm_var *loss, ebm_var *x, ebm_var **gx)
{
    ebm_var *v, **wrt, **out;
    int n = 0, i, st;
    if (!g) return EBM_EINVAL;
    if (g->err.status != EBM_OK) return g->err.status;
    if (!m || !m->params || !loss) return ebm__gfail(g, EBM_EINVAL, "model_backward: NULL or unallocated model, or NULL loss"), EBM_EINVAL;
    if (!x != !gx) return ebm__gfail(g, EBM_EINVAL, "model_backward: an input x needs somewhere for its gradient, and gx an x"), EBM_EINVAL;
    for (v = g->first; v; v = v->next) n += v->is_param && v->owner == m;
    wrt = (ebm_var **)ebm__meta(g, 2 * (size_t)(n + 1) * sizeof *wrt);
    if (!wrt) return g->err.status;
    out = wrt + n + 1;
    n = 0;
    for (v = g->first; v; v = v->next) if (v->is_param && v->owner == m) wrt[n++] = v;
    if (x) wrt[n] = x; /* last, after the parameters */
    st = ebm_grad(g, loss, NULL, n + (x != NULL), wrt, out, 0);
    if (st != EBM_OK) return st;
    if (x) *gx = out[n];
    for (i = 0; i < n; i++)
        if (out[i]->data) { /* in parallel over fixed chunks, as element-wise ops */
            float *dst = m->grads + wrt[i]->owner_off;
            const float *src = out[i]->data;
            const size_t size = out[i]->size;
            const long nc = (long)ebm__ceil_div(size, EBM__CHUNK);
            long ch;
            EBM__PARALLEL_FOR(nc, nc > 1)
            for (ch = 0; ch < nc; ch++) {
                size_t j, j1 = (size_t)(ch + 1) * EBM__CHUNK < size ? (size_t)(ch + 1) * EBM__CHUNK : size;
                for (j = (size_t)ch * EBM__CHUNK; j < j1; j++) dst[j] += src[j];
            }
        }
    return EBM_OK;
}

/* The model's forward with no backward to follow: not recorded, so no
   tape and no held derivatives (ebm__conv2d_act), as EBM_STEP_FORWARD
   measures it. */
static ebm_var *ebm__forward_only(ebm_model *m, ebm_graph *g, ebm_var *x)
{
    const int saved = g->record;
    ebm_var *y;
    g->record = 0;
    y = ebm_model_forward(m, g, x);
    g->record = saved;
    return y;
}

EBMDEF int ebm_model_score(ebm_model *m, ebm_graph *g, const float *x, int n, float *f, float *dx)
{
    int shape[4], oh, ow, oc;
    ebm_var *xv, *y, *gx = NULL;
    if (!g) return EBM_EINVAL;
    ebm_graph_reset(g);
    if (!m || !x || !f || n < 1) return ebm__gfail(g, EBM_EINVAL, "model_score: NULL model, input or output, or n < 1"), EBM_EINVAL;
    ebm_model_out_shape(m, &oh, &ow, &oc);
    if (oh * ow * oc != 1) return ebm__gfail(g, EBM_EINVAL, "model_score: the model gives %d values per sample, not one energy", oh * ow * oc), EBM_EINVAL;
    shape[0] = n; shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    xv = ebm_leaf(g, (float *)(uintptr_t)x, 4, shape); /* read only */
    y = dx ? ebm_model_forward(m, g, xv) : ebm__forward_only(m, g, xv);
    if (dx && ebm_grad(g, y, NULL, 1, &xv, &gx, 0) != EBM_OK) return g->err.status;
    if (g->err.status != EBM_OK) return g->err.status;
    memcpy(f, y->data, (size_t)n * sizeof *f);
    if (dx) memcpy(dx, gx->data, xv->size * sizeof *dx);
    return EBM_OK;
}

/* The score-matching losses (EBM_OBJ_DSM, _SSM, _SSM_VR; see the trainer)
   on B samples x, as a graph whose gradient in theta is the objective's,
   each sum over the samples divided by N (the whole batch; B for one shard):
     DSM:    x holds x~, r the noise xi:  |sigma_min grad f(x~) + xi|^2 / (2N)
     SSM:    r holds v: [v.H v + (v.s)^2 / 2] / N from the Taylor coefficients
             of f along v (ebm__model_jet); or, nested (a net with max-pooling,
             or asked for), [v . grad_x(v . grad f) + u . grad f] / N, where
             u = (v . grad f) v is read off the first pass and held constant
             (the gradient of (v . s)^2 / 2 is (v . s) times that of v . s)
     SSM_VR: [v.H v + |grad f|^2 / 2] / N, v.H v the same two ways
   u (nested SSM only) is NULL while measuring memory. *value gets the loss
   itself (for nested SSM not the graph's value, which has u . grad f in
   place of (v . grad f)^2 / 2). */
static ebm_var *ebm__sm_loss(ebm_model *m, ebm_graph *g, int obj, int B, float N, float sigma_min, float *x, float *r, float *u,
                             int nested, ebm_var **y_out, ebm_var **gx_out, double *value)
{
    int shape[4], i;
    size_t D = (size_t)m->in_h * m->in_w * m->in_c, j;
    ebm_var *xv, *y, *gx = NULL, *hv = NULL, *rv, *loss = NULL, *f1, *f2;
    shape[0] = B; shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    xv = ebm_leaf(g, x, 4, shape);
    rv = ebm_leaf(g, r, 4, shape);
    if (obj != EBM_OBJ_DSM && !nested && ebm__model_jet(m, g, xv, rv, &y, &f1, &f2, NULL)) {
        /* Taylor mode: f1 = v.s and f2 = v.H v per sample, without a nested backward */
        *y_out = y;
        if (obj == EBM_OBJ_SSM) {
            loss = ebm_scale(g, ebm_add(g, ebm_sum(g, f2), ebm_scale(g, ebm_sqnorm(g, f1), 0.5f)), 1.0f / N);
        } else { /* s itself is needed */
            if (ebm_grad(g, y, NULL, 1, &xv, &gx, 1) != EBM_OK) return NULL;
            loss = ebm_scale(g, ebm_add(g, ebm_sum(g, f2), ebm_scale(g, ebm_sqnorm(g, gx), 0.5f)), 1.0f / N);
        }
        *gx_out = gx;
        if (loss && loss->data && value) *value = loss->data[0];
        return loss;
    }
    y = ebm_model_forward(m, g, xv);
    if (ebm_grad(g, y, NULL, 1, &xv, &gx, 1) != EBM_OK) return NULL;
    *y_out = y; *gx_out = gx;
    if (obj == EBM_OBJ_DSM) {
        loss = ebm_scale(g, ebm_sqnorm(g, ebm_add(g, ebm_scale(g, gx, sigma_min), rv)), 0.5f / N);
        if (loss && loss->data && value) *value = loss->data[0];
        return loss;
    }
    /* v . H v: H v = grad_x (v . grad f), per sample (the samples do not interact) */
    if (ebm_grad(g, ebm_dot(g, gx, rv), NULL, 1, &xv, &hv, 1) != EBM_OK) return NULL;
    if (obj == EBM_OBJ_SSM_VR) {
        loss = ebm_scale(g, ebm_add(g, ebm_dot(g, hv, rv), ebm_scale(g, ebm_sqnorm(g, gx), 0.5f)), 1.0f / N);
        if (loss && loss->data && value) *value = loss->data[0];
        return loss;
    }
    if (u && gx->data) {
        double sq = 0;
        for (i = 0; i < B; i++) {
            double d = 0;
            for (j = 0; j < D; j++) d += (double)r[i * D + j] * gx->data[i * D + j];
            for (j = 0; j < D; j++) u[i * D + j] = (float)d * r[i * D + j];
            sq += 0.5 * d * d;
        }
        if (value) *value = sq;
    }
    loss = ebm_scale(g, ebm_add(g, ebm_dot(g, hv, rv), ebm_dot(g, gx, ebm_leaf(g, u, 4, shape))), 1.0f / N);
    if (loss && loss->data && value) { /* v . H v from the graph, plus the quadratic term */
        double vhv = 0;
        for (j = 0; j < (size_t)B * D; j++) vhv += (double)hv->data[j] * r[j];
        *value = (vhv + *value) / N;
    }
    return loss;
}

/* Step kinds of the trainer's score-matching objectives (for its memory). */
enum { EBM__STEP_DSM = 100, EBM__STEP_SSM, EBM__STEP_SSM_VR };

/* The computation of one step of the given kind on a batch: used to measure
   its memory (data NULL) and by the tests to check the measurement. v is the
   projection of the third-order step, or the loss weights (batch values) of
   EBM_STEP_PARAM_GRAD. */
static int ebm__step_build(ebm_model *m, ebm_graph *g, int kind, int batch, float *x, float *v)
{
    int shape[4];
    ebm_var *xv, *y, *gx = NULL, *hv = NULL, *loss = NULL, *vv;
    if (kind >= EBM__STEP_DSM && kind <= EBM__STEP_SSM_VR) {
        /* (SSM's constant u lives in the trainer's buffer, not the arena) */
        loss = ebm__sm_loss(m, g, kind - EBM__STEP_DSM + EBM_OBJ_DSM, batch, (float)batch, 1.0f, x, v, NULL, 0, &y, &gx, NULL);
        if (loss) ebm_model_backward(m, g, loss);
        return g->err.status;
    }
    shape[0] = batch; shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    xv = ebm_leaf(g, x, 4, shape);
    y = kind == EBM_STEP_FORWARD ? ebm__forward_only(m, g, xv) : ebm_model_forward(m, g, xv);
    switch (kind) {
    case EBM_STEP_FORWARD: break;
    case EBM_STEP_INPUT_GRAD: ebm_grad(g, y, NULL, 1, &xv, &gx, 0); break;
    case EBM_STEP_PARAM_GRAD: /* the ML loss: sum_i w_i f(x_i), w = +1/m on samples, -1/n on data */
        shape[1] = shape[2] = shape[3] = 1;
        loss = ebm_dot(g, y, ebm_leaf(g, v, 4, shape));
        shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
        break;
    case EBM_STEP_SECOND_ORDER:
        if (ebm_grad(g, y, NULL, 1, &xv, &gx, 1) == EBM_OK) loss = ebm_sqnorm(g, gx);
        break;
    case EBM_STEP_THIRD_ORDER:
        vv = ebm_leaf(g, v, 4, shape);
        if (ebm_grad(g, y, NULL, 1, &xv, &gx, 1) == EBM_OK &&
            ebm_grad(g, ebm_dot(g, gx, vv), NULL, 1, &xv, &hv, 1) == EBM_OK)
            loss = ebm_dot(g, hv, vv);
        break;
    default: return ebm__gfail(g, EBM_EINVAL, "step kind %d is unknown", kind), EBM_EINVAL;
    }
    if (loss) ebm_model_backward(m, g, loss);
    return g->err.status;
}

EBMDEF int ebm_model_step_bytes(ebm_model *m, int batch, int kind, size_t *bytes, ebm_error *err)
{
    ebm_graph *g;
    int st;
    if (!m || !bytes || !m->params) return ebm__fail(err, EBM_EINVAL, "step_bytes: NULL or unallocated model, or NULL result");
    if (batch < 1) return ebm__fail(err, EBM_EINVAL, "step_bytes: batch %d", batch);
    if ((st = ebm_graph_create(&g, (size_t)16 << 20, err)) != EBM_OK) return st;
    ebm_graph_reset(g);
    g->measuring = 1;
    st = ebm__step_build(m, g, kind, batch, NULL, NULL);
    /* What the step used, plus the most a real arena can lose to aligning its base. */
    *bytes = g->peak - (size_t)(ebm__aligned_base(g) - g->a.base) + EBM__ALIGN;
    if (st != EBM_OK) ebm__fail(err, st, "step_bytes: %s", g->err.msg);
    else ebm__ok(err);
    ebm_graph_destroy(g);
    return st;
}

#ifndef EBM_NO_STDIO
EBMDEF void ebm_model_print(const ebm_model *m, FILE *out)
{
    static const char *const kinds[] = { "conv2d", "conv_transpose2d", "linear", "act", "avgpool", "maxpool" };
    int i;
    if (!m || !out) return;
    fprintf(out, "%-3s %-17s %-22s %-16s %-16s %10s\n", "#", "layer", "settings", "input (CxHxW)", "output (CxHxW)", "params");
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *L = &m->layer[i];
        char set[64], in[32], o[32];
        if (L->type == EBM_LAYER_ACT) snprintf(set, sizeof set, "%s(%g)", ebm_act_name(L->act), (double)L->act_param);
        else if (L->type == EBM_LAYER_LINEAR) snprintf(set, sizeof set, "bias=%d", L->bias);
        else if (L->type == EBM_LAYER_AVGPOOL || L->type == EBM_LAYER_MAXPOOL) snprintf(set, sizeof set, "k%d s%d", L->k, L->stride);
        else snprintf(set, sizeof set, "k%d s%d p%d%s", L->k, L->stride, L->pad, L->bias ? " bias" : "");
        snprintf(in, sizeof in, "%dx%dx%d", L->in_c, L->in_h, L->in_w);
        snprintf(o, sizeof o, "%dx%dx%d", L->out_c, L->out_h, L->out_w);
        fprintf(out, "%-3d %-17s %-22s %-16s %-16s %10lu\n", i, kinds[L->type], set, in, o, (unsigned long)(L->w_size + L->b_size));
    }
    fprintf(out, "parameters: %lu (%lu bytes with gradients and Adam moments)\n", (unsigned long)m->n_params,
            (unsigned long)ebm_model_bytes(m));
}
#endif

/* Weight index maps between the kernels' layouts and PyTorch's. `to_torch`
   copies ours -> theirs, else theirs -> ours. */
static void ebm__torch_map(const ebm_model *m, float *ours, float *theirs, int to_torch)
{
    int i;
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *L = &m->layer[i];
        size_t K = (size_t)L->k, a, b, kk, I, O;
        float *w = ours + L->w_off, *t = theirs + L->w_off;
        if (!L->w_size) continue;
        if (L->type == EBM_LAYER_CONV2D) { /* ours (K,K,Ci,Co), theirs (Co,Ci,K,K) */
            for (kk = 0; kk < K * K; kk++)
                for (a = 0; a < (size_t)L->in_c; a++)
                    for (b = 0; b < (size_t)L->out_c; b++) {
                        size_t io = (kk * L->in_c + a) * L->out_c + b, it = (b * L->in_c + a) * K * K + kk;
                        if (to_torch) t[it] = w[io]; else w[io] = t[it];
                    }
        } else if (L->type == EBM_LAYER_CONVT2D) { /* ours (K,K,Co,Ci), theirs (Ci,Co,K,K) */
            for (kk = 0; kk < K * K; kk++)
                for (a = 0; a < (size_t)L->out_c; a++)
                    for (b = 0; b < (size_t)L->in_c; b++) {
                        size_t io = (kk * L->out_c + a) * L->in_c + b, it = (b * L->out_c + a) * K * K + kk;
                        if (to_torch) t[it] = w[io]; else w[io] = t[it];
                    }
        } else { /* linear: ours (I,O) with I in (H,W,C) order, theirs (O,I) with I in (C,H,W) order */
            size_t h, x, c, H = (size_t)L->in_h, W = (size_t)L->in_w, C = (size_t)L->in_c;
            O = (size_t)L->out_c;
            for (h = 0; h < H; h++)
                for (x = 0; x < W; x++)
                    for (c = 0; c < C; c++) {
                        size_t ii = (h * W + x) * C + c, it = (c * H + h) * W + x;
                        I = H * W * C;
                        for (b = 0; b < O; b++) {
                            if (to_torch) t[b * I + it] = w[ii * O + b]; else w[ii * O + b] = t[b * I + it];
                        }
                    }
        }
        if (L->b_size) {
            if (to_torch) memcpy(theirs + L->b_off, ours + L->b_off, L->b_size * sizeof(float));
            else memcpy(ours + L->b_off, theirs + L->b_off, L->b_size * sizeof(float));
        }
    }
}

EBMDEF void ebm_model_export_torch(const ebm_model *m, float *dst)
{
    if (m && m->params && dst) ebm__torch_map(m, m->params, dst, 1);
}

EBMDEF void ebm_model_import_torch(ebm_model *m, const float *src)
{
    if (m && m->params && src) ebm__torch_map(m, m->params, (float *)(uintptr_t)src, 0);
}

/* --- the reference networks --- */

EBMDEF int ebm_model_convnet(ebm_model *m, int c, int hw, int nf, int act, float act_param, uint64_t seed)
{
    int i;
    if (!m) return EBM_EINVAL;
    if (ebm_model_init(m, c, hw, hw) != EBM_OK) return m->status;
    if (hw < 8 || nf < 1 || nf > EBM__MAX_DIM / 8) return ebm__mfail(m, EBM_EINVAL, "convnet: image size %d (need >= 8), n_f %d", hw, nf);
    ebm_model_add_conv2d(m, nf, 3, 1, 1, 1);
    ebm_model_add_act(m, act, act_param);
    for (i = 1; i <= 3; i++) {
        ebm_model_add_conv2d(m, nf << i, 4, 2, 1, 1);
        ebm_model_add_act(m, act, act_param);
    }
    /* 28 -> 14 -> 7 -> 3 and 32 -> 16 -> 8 -> 4: the last conv covers what is left. */
    ebm_model_add_conv2d(m, 1, m->status == EBM_OK ? m->layer[m->n_layers - 1].out_h : 1, 1, 0, 1);
    return ebm_model_alloc(m, seed);
}

EBMDEF int ebm_model_mlp_prior(ebm_model *m, int nz, int hidden, int act, float act_param, uint64_t seed)
{
    if (!m) return EBM_EINVAL;
    if (ebm_model_init(m, nz, 1, 1) != EBM_OK) return m->status;
    ebm_model_add_linear(m, hidden, 1);
    ebm_model_add_act(m, act, act_param);
    ebm_model_add_linear(m, hidden, 1);
    ebm_model_add_act(m, act, act_param);
    ebm_model_add_linear(m, 1, 1);
    return ebm_model_alloc(m, seed);
}

EBMDEF int ebm_model_generator28(ebm_model *m, int nz, int ngf, int c, uint64_t seed)
{
    if (!m) return EBM_EINVAL;
    if (ebm_model_init(m, nz, 1, 1) != EBM_OK) return m->status;
    if (ngf < 1 || ngf > EBM__MAX_DIM / 2) return ebm__mfail(m, EBM_EINVAL, "generator: ngf %d", ngf);
    ebm_model_add_conv_transpose2d(m, ngf * 2, 7, 1, 0, 0, 1); /* 1 -> 7 */
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(m, ngf, 4, 2, 1, 0, 1);     /* 7 -> 14 */
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(m, c, 4, 2, 1, 0, 1);       /* 14 -> 28 */
    ebm_model_add_act(m, EBM_ACT_TANH, 0.0f);
    return ebm_model_alloc(m, seed);
}

EBMDEF int ebm_model_generator32(ebm_model *m, int nz, int ngf, int c, uint64_t seed)
{
    if (!m) return EBM_EINVAL;
    if (ebm_model_init(m, nz, 1, 1) != EBM_OK) return m->status;
    if (ngf < 1 || ngf > EBM__MAX_DIM / 4) return ebm__mfail(m, EBM_EINVAL, "generator: ngf %d", ngf);
    ebm_model_add_conv_transpose2d(m, ngf * 4, 4, 1, 0, 0, 1); /* 1 -> 4 */
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(m, ngf * 2, 4, 2, 1, 0, 1); /* 4 -> 8 */
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(m, ngf, 4, 2, 1, 0, 1);     /* 8 -> 16 */
    ebm_model_add_act(m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv_transpose2d(m, c, 4, 2, 1, 0, 1);       /* 16 -> 32 */
    ebm_model_add_act(m, EBM_ACT_TANH, 0.0f);
    return ebm_model_alloc(m, seed);
}

/* --- optimisers (PyTorch's update rules, so its recipes carry over) --- */

static int ebm__finite_pos(float x) { return x == x && x > 0 && x < 1e30f; }

EBMDEF int ebm_adam_step(ebm_model *m, float lr, float beta1, float beta2, float eps, long t)
{
    size_t i;
    double bc1, bc2;
    float step, inv_sqrt_bc2;
    if (!m || !m->params) return EBM_EINVAL;
    if (!(lr >= 0 && lr < 1e30f) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !ebm__finite_pos(eps) || t < 1)
        return ebm__mfail(m, EBM_EINVAL, "adam: lr %g, betas (%g, %g), eps %g, step %ld out of range",
                          (double)lr, (double)beta1, (double)beta2, (double)eps, t);
    bc1 = 1.0 - pow((double)beta1, (double)t);
    bc2 = 1.0 - pow((double)beta2, (double)t);
    step = (float)(lr / bc1);
    inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    for (i = 0; i < m->n_params; i++) {
        float gr = m->grads[i];
        m->m1[i] = beta1 * m->m1[i] + (1 - beta1) * gr;
        m->m2[i] = beta2 * m->m2[i] + (1 - beta2) * gr * gr;
        m->params[i] -= step * m->m1[i] / (sqrtf(m->m2[i]) * inv_sqrt_bc2 + eps);
    }
    return EBM_OK;
}

EBMDEF int ebm_sgd_step(ebm_model *m, float lr, float momentum)
{
    size_t i;
    if (!m || !m->params) return EBM_EINVAL;
    if (!(lr >= 0 && lr < 1e30f) || !(momentum >= 0 && momentum < 1))
        return ebm__mfail(m, EBM_EINVAL, "sgd: lr %g, momentum %g out of range", (double)lr, (double)momentum);
    for (i = 0; i < m->n_params; i++) {
        m->m1[i] = momentum * m->m1[i] + m->grads[i]; /* PyTorch: buf = momentum buf + g */
        m->params[i] -= lr * m->m1[i];
    }
    return EBM_OK;
}

EBMDEF void ebm_nchw_to_nhwc(const float *src, float *dst, int n, int c, int h, int w)
{
    size_t i, j, hw = (size_t)h * w;
    int k;
    for (i = 0; i < (size_t)n; i++)
        for (j = 0; j < hw; j++)
            for (k = 0; k < c; k++) dst[(i * hw + j) * c + k] = src[(i * c + k) * hw + j];
}

EBMDEF void ebm_nhwc_to_nchw(const float *src, float *dst, int n, int c, int h, int w)
{
    size_t i, j, hw = (size_t)h * w;
    int k;
    for (i = 0; i < (size_t)n; i++)
        for (j = 0; j < hw; j++)
            for (k = 0; k < c; k++) dst[(i * c + k) * hw + j] = src[(i * hw + j) * c + k];
}

/* ---------------------------------------------------------------- 6b. samplers */

EBMDEF void ebm_langevin_default(ebm_langevin *c)
{
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->form = EBM_LANGEVIN_STEP_NOISE;
    c->eps = 0.1f;
    c->step = 1.0f;
    c->noise = 0.01f;
    c->box = EBM_BOX_CLAMP;
    c->lo = -1.0f;
    c->hi = 1.0f;
    c->n_steps = 100;
}

static int ebm__finite(float x) { return x == x && x < 1e30f && x > -1e30f; }

/* Samples are updated in this many fixed groups (in parallel). */
#define EBM__SAMPLE_CHUNKS 16

/* Keep a coordinate in [lo, hi]: clamp, or mirror at the wall (then clamp, for
   a step longer than the box). */
EBM__INLINE float ebm__box(float v, int box, float lo, float hi)
{
    if (box == EBM_BOX_REFLECT) {
        if (v > hi) v = hi - (v - hi);
        if (v < lo) v = lo + (lo - v);
    }
    return v > hi ? hi : v < lo ? lo : v;
}

/* STANLEY's per-coordinate scale of the step: th / max(th, |drift|). */
EBM__INLINE float ebm__stanley_gamma(float drift, float th)
{
    float ad = drift < 0 ? -drift : drift;
    return ad > th ? th / ad : 1.0f;
}

/* Check a sampler's settings (the trainer's too, at init); the update is
   x += a drift + b xi. */
static int ebm__langevin_check(ebm_error *err, const ebm_langevin *c, float *pa, float *pb)
{
    float a, b;
    if (c->form == EBM_LANGEVIN_EPS) {
        if (!ebm__finite(c->eps) || c->eps <= 0) return ebm__fail(err, EBM_EINVAL, "langevin: eps %g must be positive", (double)c->eps);
        a = 0.5f * c->eps * c->eps; b = c->eps;
    } else if (c->form == EBM_LANGEVIN_STEP_NOISE) {
        if (!ebm__finite(c->step) || !ebm__finite(c->noise) || c->step < 0 || c->noise < 0)
            return ebm__fail(err, EBM_EINVAL, "langevin: step %g and noise %g must be finite and >= 0", (double)c->step, (double)c->noise);
        a = c->step; b = c->noise;
    } else return ebm__fail(err, EBM_EINVAL, "langevin: unknown form %d", c->form);
    if (!ebm__finite(c->sigma_q) || c->sigma_q < 0) return ebm__fail(err, EBM_EINVAL, "langevin: sigma_q %g", (double)c->sigma_q);
    if (c->box < EBM_BOX_NONE || c->box > EBM_BOX_REFLECT) return ebm__fail(err, EBM_EINVAL, "langevin: unknown box rule %d", c->box);
    if (c->box != EBM_BOX_NONE && !(ebm__finite(c->lo) && ebm__finite(c->hi) && c->lo < c->hi))
        return ebm__fail(err, EBM_EINVAL, "langevin: box [%g, %g] is empty", (double)c->lo, (double)c->hi);
    if (c->n_steps < 0) return ebm__fail(err, EBM_EINVAL, "langevin: %d steps", c->n_steps);
    if (!(c->aniso_th >= 0 && c->aniso_th < 1e30f)) return ebm__fail(err, EBM_EINVAL, "langevin: STANLEY threshold %g", (double)c->aniso_th);
    *pa = a; *pb = b;
    return EBM_OK;
}

/* What every sampler checks first: a fresh graph, an energy model, valid settings. */
static int ebm__sampler_begin(ebm_model *m, ebm_graph *g, const ebm_langevin *c, const ebm_rng *rng,
                              const float *x, int n, float *a, float *b)
{
    int oh, ow, oc;
    ebm_graph_reset(g);
    if (!m || !m->params || !c || !rng || !x || n < 1)
        return ebm__gfail(g, EBM_EINVAL, "sampler: NULL model, settings, generator or samples, or n < 1"), EBM_EINVAL;
    ebm_model_out_shape(m, &oh, &ow, &oc);
    if (oh * ow * oc != 1) return ebm__gfail(g, EBM_EINVAL, "sampler: the model gives %d values per sample, not one energy", oh * ow * oc), EBM_EINVAL;
    return ebm__langevin_check(&g->err, c, a, b);
}

/* Copy the kept conv outputs among the nodes from x to y to out. The conv
   nodes come in tape order, which is the order of the model's conv layers. */
static void ebm__keep_convs(const ebm_model *m, const ebm_var *x, const ebm_var *y, float *out)
{
    const ebm_var *v;
    int l = 0;
    for (v = x; v && v != y->next; v = v->next) {
        if (v->op != EBM__OP_CONV) continue;
        while (m->layer[l].type != EBM_LAYER_CONV2D) l++;
        if (ebm__keeps_output(&m->layer[l++])) { memcpy(out, v->data, v->size * sizeof(float)); out += v->size; }
    }
}

/* ebm_langevin_run; keep (may be NULL) receives each step's conv outputs
   (ebm__kept_per_step floats per step), for ebm_chain_record. */
static int ebm__langevin_run(ebm_model *m, ebm_graph *g, const ebm_langevin *c, const ebm_rng *rng,
                             uint64_t first_sample, float *x, int n, double *grad_norm, float *keep)
{
    int shape[4], k, i;
    size_t D;
    float a, b, inv_q;
    double gsum = 0;
    if (!g) return EBM_EINVAL;
    if (ebm__sampler_begin(m, g, c, rng, x, n, &a, &b) != EBM_OK) return g->err.status;
    inv_q = c->sigma_q > 0 ? 1.0f / (c->sigma_q * c->sigma_q) : 0.0f;
    shape[0] = n; shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    D = (size_t)m->in_h * m->in_w * m->in_c;
    for (k = 0; k < c->n_steps; k++) {
        ebm_var *xv, *y, *gx = NULL;
        ebm_graph_reset(g);
        xv = ebm_leaf(g, x, 4, shape);
        y = ebm_model_forward(m, g, xv);
        if (ebm_grad(g, y, NULL, 1, &xv, &gx, 0) != EBM_OK) return g->err.status;
        if (keep) ebm__keep_convs(m, xv, y, keep + (size_t)k * ebm__kept_per_step(m, n));
        /* x_{k+1} = x_k + a (grad f - x / sigma_q^2) + b xi, sample by sample,
           the noise drawn in chunks on the stack. Samples are split into
           EBM__SAMPLE_CHUNKS fixed groups run in parallel; each group sums
           its |grad f| and the groups are added in order, so r_t does not
           depend on the thread count. */
        {
            double part[EBM__SAMPLE_CHUNKS];
            long q;
            EBM__PARALLEL_FOR(EBM__SAMPLE_CHUNKS, n > 1)
            for (q = 0; q < EBM__SAMPLE_CHUNKS; q++) {
                int i0 = (int)((long)n * q / EBM__SAMPLE_CHUNKS), i1 = (int)((long)n * (q + 1) / EBM__SAMPLE_CHUNKS), ii;
                part[q] = 0;
                for (ii = i0; ii < i1; ii++) {
                    float *xs = x + (size_t)ii * D;
                    const float *gs = gx->data + (size_t)ii * D;
                    double nrm = 0;
                    float xi[256];
                    size_t jj;
                    for (jj = 0; jj < D; jj += 256) {
                        size_t t, len = D - jj < 256 ? D - jj : 256;
                        ebm__rng_normal_at(rng, first_sample + (uint64_t)ii, c->first_step + (uint32_t)k, jj, xi, len);
                        if (c->aniso_th > 0) /* STANLEY: per-coordinate step gamma */
                            for (t = 0; t < len; t++) {
                                float v = xs[jj + t], gr = gs[jj + t], d = gr - inv_q * v, gam = ebm__stanley_gamma(d, c->aniso_th);
                                nrm += (double)gr * gr;
                                v = v + gam * a * d + sqrtf(gam) * b * xi[t];
                                xs[jj + t] = c->box == EBM_BOX_NONE ? v : ebm__box(v, c->box, c->lo, c->hi);
                            }
                        else
                            for (t = 0; t < len; t++) {
                                float v = xs[jj + t], gr = gs[jj + t];
                                nrm += (double)gr * gr;
                                v = v + a * (gr - inv_q * v) + b * xi[t];
                                xs[jj + t] = c->box == EBM_BOX_NONE ? v : ebm__box(v, c->box, c->lo, c->hi);
                            }
                    }
                    part[q] += sqrt(nrm);
                }
            }
            for (i = 0; i < EBM__SAMPLE_CHUNKS; i++) gsum += part[i];
        }
    }
    if (grad_norm) *grad_norm = c->n_steps ? gsum / ((double)c->n_steps * n) : 0.0;
    return EBM_OK;
}

EBMDEF int ebm_langevin_run(ebm_model *m, ebm_graph *g, const ebm_langevin *c, const ebm_rng *rng,
                            uint64_t first_sample, float *x, int n, double *grad_norm)
{
    return ebm__langevin_run(m, g, c, rng, first_sample, x, n, grad_norm, NULL);
}


/* f and grad_x f of x (n samples) into f_out, g_out, from a graph rewound to
   the state it had after the sampler's buffers were allocated. */
static int ebm__energy_grad(ebm_model *m, ebm_graph *g, float *x, int n, float *f_out, float *g_out)
{
    int shape[4];
    ebm_var *xv, *y, *gx = NULL;
    shape[0] = n; shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    xv = ebm_leaf(g, x, 4, shape);
    y = ebm_model_forward(m, g, xv);
    if (ebm_grad(g, y, NULL, 1, &xv, &gx, 0) != EBM_OK) return g->err.status;
    memcpy(f_out, y->data, (size_t)n * sizeof(float));
    memcpy(g_out, gx->data, xv->size * sizeof(float));
    return EBM_OK;
}

EBMDEF int ebm_mala_run(ebm_model *m, ebm_graph *g, const ebm_langevin *c, const ebm_rng *rng,
                        uint64_t first_sample, float *x, int n, double *accept_rate, double *grad_norm)
{
    int k;
    size_t D, nD;
    float a, b, inv_q, *xp, *gc, *gp, *fc, *fp;
    double T, accepted = 0, gsum = 0;
    ebm_rng ur;
    ebm__mark mk;
    if (!g) return EBM_EINVAL;
    if (ebm__sampler_begin(m, g, c, rng, x, n, &a, &b) != EBM_OK) return g->err.status;
    if (a <= 0 || b <= 0) return ebm__gfail(g, EBM_EINVAL, "mala: step and noise must both be positive"), EBM_EINVAL;
    inv_q = c->sigma_q > 0 ? 1.0f / (c->sigma_q * c->sigma_q) : 0.0f;
    T = (double)b * b / (2.0 * a);
    D = (size_t)m->in_h * m->in_w * m->in_c;
    nD = (size_t)n * D;
    /* The chain's state lives below a mark in the arena; each step's tape above it. */
    xp = (float *)ebm__meta(g, (3 * nD + 2 * (size_t)n) * sizeof(float));
    if (!xp) return g->err.status;
    gc = xp + nD; gp = gc + nD; fc = gp + nD; fp = fc + n;
    mk = ebm__mark_get(g);
    ur = *rng;
    ur.stream ^= 0x80000000u; /* the accept test's uniforms: a stream of their own */
    if (ebm__energy_grad(m, g, x, n, fc, gc) != EBM_OK) return g->err.status;
    for (k = 0; k < c->n_steps; k++) {
        uint32_t step = c->first_step + (uint32_t)k;
        double part_g[EBM__SAMPLE_CHUNKS], part_a[EBM__SAMPLE_CHUNKS];
        long q;
        /* proposal x' = x + a (grad f - x/sigma_q^2) + b xi, in the fixed
           sample groups of ebm_langevin_run (r_t summed per group, in order) */
        EBM__PARALLEL_FOR(EBM__SAMPLE_CHUNKS, n > 1)
        for (q = 0; q < EBM__SAMPLE_CHUNKS; q++) {
            int i0 = (int)((long)n * q / EBM__SAMPLE_CHUNKS), i1 = (int)((long)n * (q + 1) / EBM__SAMPLE_CHUNKS), ii;
            part_g[q] = 0;
            for (ii = i0; ii < i1; ii++) {
                float xi[256];
                double nrm = 0;
                size_t jj;
                for (jj = 0; jj < D; jj += 256) {
                    size_t t, len = D - jj < 256 ? D - jj : 256, o = (size_t)ii * D + jj;
                    ebm__rng_normal_at(rng, first_sample + (uint64_t)ii, step, jj, xi, len);
                    if (c->aniso_th > 0) /* STANLEY: per-coordinate step gamma */
                        for (t = 0; t < len; t++) {
                            float d = gc[o + t] - inv_q * x[o + t], gam = ebm__stanley_gamma(d, c->aniso_th);
                            nrm += (double)gc[o + t] * gc[o + t];
                            xp[o + t] = x[o + t] + gam * a * d + sqrtf(gam) * b * xi[t];
                        }
                    else /* no square root or scale per coordinate on the isotropic path */
                        for (t = 0; t < len; t++) {
                            nrm += (double)gc[o + t] * gc[o + t];
                            xp[o + t] = x[o + t] + a * (gc[o + t] - inv_q * x[o + t]) + b * xi[t];
                        }
                }
                part_g[q] += sqrt(nrm);
            }
        }
        for (q = 0; q < EBM__SAMPLE_CHUNKS; q++) gsum += part_g[q];
        ebm__mark_set(g, mk);
        if (ebm__energy_grad(m, g, xp, n, fp, gp) != EBM_OK) return g->err.status;
        /* accept or reject each sample: the Metropolis-Hastings test */
        EBM__PARALLEL_FOR(EBM__SAMPLE_CHUNKS, n > 1)
        for (q = 0; q < EBM__SAMPLE_CHUNKS; q++) {
            int i0 = (int)((long)n * q / EBM__SAMPLE_CHUNKS), i1 = (int)((long)n * (q + 1) / EBM__SAMPLE_CHUNKS), ii;
            part_a[q] = 0;
            for (ii = i0; ii < i1; ii++) {
                const float *X = x + (size_t)ii * D, *P = xp + (size_t)ii * D, *GX = gc + (size_t)ii * D, *GP = gp + (size_t)ii * D;
                double lq_fwd = 0, lq_bwd = 0, ldet = 0, nx = 0, np_ = 0, log_alpha;
                float u;
                int inside = 1;
                size_t jj;
                /* log q(x|x') - log q(x'|x) for Gaussian proposals of mean
                   mu(x) and per-coordinate variance gamma(x) b^2 (gamma = 1
                   unless STANLEY): the squared distances over gamma, plus
                   the log-determinants' difference */
                for (jj = 0; jj < D; jj++) {
                    float dx = GX[jj] - inv_q * X[jj], dp = GP[jj] - inv_q * P[jj]; /* the drifts, as the proposal computed them */
                    double df, db;
                    if (c->aniso_th > 0) {
                        double gx = ebm__stanley_gamma(dx, c->aniso_th), gp = ebm__stanley_gamma(dp, c->aniso_th);
                        ldet += log(gx) - log(gp);
                        df = P[jj] - X[jj] - gx * a * dx; /* x' - mu(x) */
                        db = X[jj] - P[jj] - gp * a * dp; /* x - mu(x') */
                        lq_fwd += df * df / gx; lq_bwd += db * db / gp;
                    } else { /* isotropic: no logarithms or divisions per coordinate */
                        df = P[jj] - X[jj] - (double)a * dx;
                        db = X[jj] - P[jj] - (double)a * dp;
                        lq_fwd += df * df; lq_bwd += db * db;
                    }
                    nx += (double)X[jj] * X[jj]; np_ += (double)P[jj] * P[jj];
                    if (c->box != EBM_BOX_NONE && (P[jj] < c->lo || P[jj] > c->hi)) inside = 0;
                }
                log_alpha = ((fp[ii] - 0.5 * inv_q * np_) - (fc[ii] - 0.5 * inv_q * nx)) / T
                          + (lq_fwd - lq_bwd) / (2.0 * (double)b * b) + 0.5 * ldet;
                ebm_rng_uniform(&ur, first_sample + (uint64_t)ii, step, 0.0f, 1.0f, &u, 1);
                if (inside && log((double)u + 1e-300) < log_alpha) {
                    memcpy(x + (size_t)ii * D, P, D * sizeof(float));
                    memcpy(gc + (size_t)ii * D, GP, D * sizeof(float));
                    fc[ii] = fp[ii];
                    part_a[q] += 1;
                }
            }
        }
        for (q = 0; q < EBM__SAMPLE_CHUNKS; q++) accepted += part_a[q];
    }
    if (accept_rate) *accept_rate = c->n_steps ? accepted / ((double)c->n_steps * n) : 0.0;
    if (grad_norm) *grad_norm = c->n_steps ? gsum / ((double)c->n_steps * n) : 0.0;
    return EBM_OK;
}

EBMDEF int ebm_mala_adapt(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                          float *x, int n, int n_burn, double target_rate, ebm_langevin *adapted)
{
    ebm_langevin c;
    int done = 0, rc;
    if (!g) return EBM_EINVAL;
    if (!cfg || !adapted || n_burn < 0 || !(target_rate > 0 && target_rate < 1))
        return ebm__gfail(g, EBM_EINVAL, "mala_adapt: NULL settings or output, n_burn < 0 or target rate outside (0, 1)"), EBM_EINVAL;
    c = *cfg;
    while (done < n_burn) {
        double rate = 0, f;
        c.n_steps = n_burn - done < 10 ? n_burn - done : 10;
        c.first_step = cfg->first_step + (uint32_t)done; /* fresh noise every round */
        if ((rc = ebm_mala_run(m, g, &c, rng, first_sample, x, n, &rate, NULL)) != EBM_OK) return rc;
        done += c.n_steps;
        f = exp(2.0 * (rate - target_rate)); /* more acceptance than wanted: longer steps */
        if (c.form == EBM_LANGEVIN_EPS) c.eps = (float)(c.eps * sqrt(f));
        else { c.step = (float)(c.step * f); c.noise = (float)(c.noise * sqrt(f)); }
    }
    c.n_steps = cfg->n_steps;
    c.first_step = cfg->first_step + (uint32_t)n_burn;
    *adapted = c;
    return EBM_OK;
}

/* ---------------------------------------------------------------- 6c. 2-D data and exact NLL */

EBMDEF const char *ebm_toy_name(int set)
{
    static const char *const names[] = { "8gaussians", "rings", "checkerboard", "moons" };
    return set >= 0 && set < EBM_TOY_COUNT ? names[set] : NULL;
}

EBMDEF void ebm_toy_box(int set, float *lo, float *hi)
{
    float h = set == EBM_TOY_CHECKERBOARD ? 4.0f : 4.5f;
    if (lo) *lo = -h;
    if (hi) *hi = h;
}

#define EBM__PI 3.14159265358979323846
#define EBM__TOY_G_STD 0.35355339059327376 /* 0.5 / sqrt 2 */
#define EBM__TOY_R_STD 0.1
#define EBM__TOY_M_STD 0.2
#define EBM__TOY_M_POINTS 1024

EBMDEF int ebm_toy_sample(int set, const ebm_rng *rng, uint64_t first, float *xy, int n)
{
    int i;
    if (set < 0 || set >= EBM_TOY_COUNT || !rng || !xy || n < 0) return EBM_EINVAL;
    for (i = 0; i < n; i++) {
        float u[4], z[4];
        double x, y;
        /* per point: 4 uniforms (step 0) and 4 normals (step 1) at its index */
        ebm_rng_uniform(rng, first + (uint64_t)i, 0, 0.0f, 1.0f, u, 4);
        ebm_rng_normal(rng, first + (uint64_t)i, 1, z, 4);
        if (set == EBM_TOY_8GAUSSIANS) {
            int k = (int)(u[0] * 8) & 7;
            x = 2 * 1.4142135623730951 * cos(k * EBM__PI / 4) + EBM__TOY_G_STD * z[0];
            y = 2 * 1.4142135623730951 * sin(k * EBM__PI / 4) + EBM__TOY_G_STD * z[1];
        } else if (set == EBM_TOY_RINGS) { /* radius k+1 with probability (k+1)/10 */
            double t = u[0] * 10, r, a = 2 * EBM__PI * u[1];
            int k = t < 1 ? 0 : t < 3 ? 1 : t < 6 ? 2 : 3;
            r = (k + 1) + EBM__TOY_R_STD * z[0];
            x = r * cos(a);
            y = r * sin(a);
        } else if (set == EBM_TOY_MOONS) { /* upper arc or lower arc, t uniform */
            double t = EBM__PI * u[1], s = u[0] < 0.5f ? 1.0 : -1.0;
            x = s * (2 * cos(t) - 1) + EBM__TOY_M_STD * z[0];
            y = s * (2 * sin(t) - 0.5) + EBM__TOY_M_STD * z[1];
        } else { /* one of the 8 squares (i + j even), uniform inside */
            int c = (int)(u[0] * 8) & 7, row = c / 2, col = 2 * (c % 2) + (row % 2);
            x = -4 + 2 * col + 2 * u[1];
            y = -4 + 2 * row + 2 * u[2];
        }
        xy[2 * i] = (float)x;
        xy[2 * i + 1] = (float)y;
    }
    return EBM_OK;
}

/* Two moons with noise std sd: the mean over both arcs of N(x; arc(t), sd^2),
   t on the midpoints of EBM__TOY_M_POINTS equal steps of [0, pi]. */
static double ebm__moons_logpdf(double x, double y, double sd)
{
    const double h = EBM__PI / EBM__TOY_M_POINTS, ch = cos(h), sh = sin(h);
    double p = 0, v = sd * sd, c = cos(0.5 * h), sn = sin(0.5 * h);
    int k;
    for (k = 0; k < EBM__TOY_M_POINTS; k++) { /* (c, sn) = (cos t, sin t), advanced by rotation */
        double dx = x - (2 * c - 1), dy = y - (2 * sn - 0.5), ex = x + (2 * c - 1), ey = y + (2 * sn - 0.5), c2;
        p += exp(-(dx * dx + dy * dy) / (2 * v)) + exp(-(ex * ex + ey * ey) / (2 * v));
        c2 = c * ch - sn * sh; sn = sn * ch + c * sh; c = c2;
    }
    return log(p / (2.0 * EBM__TOY_M_POINTS * 2 * EBM__PI * v));
}

/* 8 Gaussians of std sd: the log of the mixture, by log-sum-exp. */
static double ebm__8g_logpdf(double x, double y, double sd)
{
    double l[8], mx = -1e300, s = 0, v = sd * sd;
    int k;
    for (k = 0; k < 8; k++) {
        double dx = x - 2 * 1.4142135623730951 * cos(k * EBM__PI / 4), dy = y - 2 * 1.4142135623730951 * sin(k * EBM__PI / 4);
        l[k] = -(dx * dx + dy * dy) / (2 * v) - log(2 * EBM__PI * v) - log(8.0);
        if (l[k] > mx) mx = l[k];
    }
    for (k = 0; k < 8; k++) s += exp(l[k] - mx);
    return mx + log(s);
}

EBMDEF double ebm_toy_logpdf_smoothed(int set, double sigma, double x, double y)
{
    if (!(sigma > 0)) return ebm_toy_logpdf(set, x, y);
    if (set == EBM_TOY_8GAUSSIANS) return ebm__8g_logpdf(x, y, sqrt(EBM__TOY_G_STD * EBM__TOY_G_STD + sigma * sigma));
    if (set == EBM_TOY_MOONS) return ebm__moons_logpdf(x, y, sqrt(EBM__TOY_M_STD * EBM__TOY_M_STD + sigma * sigma));
    if (set == EBM_TOY_CHECKERBOARD) { /* per square: a product of normal CDF differences */
        double p = 0, r2 = sigma * 1.4142135623730951;
        int i, j;
        for (i = 0; i < 4; i++)
            for (j = 0; j < 4; j++)
                if ((i + j) % 2 == 0) {
                    double a = -4 + 2 * i, b = -4 + 2 * j;
                    p += 0.25 * (erf((x - a) / r2) - erf((x - a - 2) / r2)) * (erf((y - b) / r2) - erf((y - b - 2) / r2)) / 32.0;
                }
        return p > 0 ? log(p) : -1e300;
    }
    if (set == EBM_TOY_RINGS) { /* E over z ~ N(0, I) of p(x + sigma z), trapezoid on [-6, 6]^2 */
        double p = 0;
        int i, j;
        for (i = -18; i <= 18; i++)
            for (j = -18; j <= 18; j++) {
                double zx = i / 3.0, zy = j / 3.0, lp = ebm_toy_logpdf(set, x + sigma * zx, y + sigma * zy);
                p += exp(lp - 0.5 * (zx * zx + zy * zy));
            }
        return log(p / 9.0 / (2 * EBM__PI));
    }
    return -1e300;
}

EBMDEF double ebm_toy_logpdf(int set, double x, double y)
{
    if (set == EBM_TOY_MOONS) return ebm__moons_logpdf(x, y, EBM__TOY_M_STD);
    if (set == EBM_TOY_8GAUSSIANS) return ebm__8g_logpdf(x, y, EBM__TOY_G_STD);
    if (set == EBM_TOY_RINGS) { /* p(x) = sum_k w_k N(|x|; r_k, s^2) / (2 pi |x|) */
        double rho = sqrt(x * x + y * y), p = 0;
        int k;
        if (rho < 1e-12) return -1e300;
        for (k = 1; k <= 4; k++) {
            double d = (rho - k) / EBM__TOY_R_STD;
            p += (k / 10.0) * exp(-0.5 * d * d) / (EBM__TOY_R_STD * 2.5066282746310002);
        }
        return log(p / (2 * EBM__PI * rho));
    }
    if (set == EBM_TOY_CHECKERBOARD) {
        int i, j;
        if (x < -4 || x >= 4 || y < -4 || y >= 4) return -1e300;
        i = (int)floor((x + 4) / 2); j = (int)floor((y + 4) / 2);
        return (i + j) % 2 == 0 ? -log(32.0) : -1e300;
    }
    return -1e300;
}

EBMDEF int ebm_model_nll2d(ebm_model *m, ebm_graph *g, float lo, float hi, int res, const float *xy, int n,
                           double *nll, double *log_z)
{
    const int chunk = 256;
    float pts[2 * 256];
    double mx = -1e300, sum = 0, cell, total = 0;
    int oh, ow, oc, i, pass;
    if (!g) return EBM_EINVAL;
    ebm_graph_reset(g);
    if (!m || !m->params || !nll || res < 2 || n < 0 || (n > 0 && !xy) || !(lo < hi))
        return ebm__gfail(g, EBM_EINVAL, "nll2d: bad arguments"), EBM_EINVAL;
    ebm_model_out_shape(m, &oh, &ow, &oc);
    if (m->in_c != 2 || m->in_h != 1 || m->in_w != 1 || oh * ow * oc != 1)
        return ebm__gfail(g, EBM_EINVAL, "nll2d: the model must map (2,1,1) to one energy"), EBM_EINVAL;
    cell = (double)(hi - lo) / res;
    /* log Z = log sum over cells of exp(f(centre)) * cell area: two passes
       (maximum, then the shifted sum) keep it finite for any scale of f */
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < res * res; i += chunk) {
            int c, nb = res * res - i < chunk ? res * res - i : chunk, s4[4];
            ebm_var *y;
            for (c = 0; c < nb; c++) {
                pts[2 * c] = lo + (float)(((i + c) % res + 0.5) * cell);
                pts[2 * c + 1] = lo + (float)(((i + c) / res + 0.5) * cell);
            }
            ebm_graph_reset(g);
            s4[0] = nb; s4[1] = 1; s4[2] = 1; s4[3] = 2;
            y = ebm_model_forward(m, g, ebm_leaf(g, pts, 4, s4));
            if (!y) return g->err.status;
            for (c = 0; c < nb; c++) {
                if (pass == 0) { if (y->data[c] > mx) mx = y->data[c]; }
                else sum += exp(y->data[c] - mx);
            }
        }
    if (log_z) *log_z = mx + log(sum) + 2 * log(cell);
    for (i = 0; i < n; i += chunk) {
        int c, nb = n - i < chunk ? n - i : chunk, s4[4];
        ebm_var *y;
        ebm_graph_reset(g);
        s4[0] = nb; s4[1] = 1; s4[2] = 1; s4[3] = 2;
        y = ebm_model_forward(m, g, ebm_leaf(g, (float *)(uintptr_t)(xy + 2 * i), 4, s4));
        if (!y) return g->err.status;
        for (c = 0; c < nb; c++) {
            float px = xy[2 * (i + c)], py = xy[2 * (i + c) + 1];
            total += (px < lo || px > hi || py < lo || py > hi) ? 1e300 : -(double)y->data[c];
        }
    }
    *nll = n ? total / n + mx + log(sum) + 2 * log(cell) : 0;
    return EBM_OK;
}

/* ---------------------------------------------------------------- 6d. maximum-likelihood trainer */

EBMDEF void ebm_train_config_default(ebm_train_config *c)
{
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->batch = 64;
    c->start = EBM_START_UNIFORM;
    c->buffer_size = 10000;
    c->reinit = 0.05f;
    c->start_noise = 0.0f;
    ebm_langevin_default(&c->chain);
    c->data_noise = 0.03f;
    c->optimizer = EBM_OPT_ADAM;
    c->lr = 1e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->momentum = 0.0f;
    c->schedule = EBM_LR_CONSTANT;
    c->lr_min = 0.0f;
    c->max_abs_dt = 1e3f;
    c->seed = 1;
    c->objective = EBM_OBJ_ML;
    c->sigma = 0.1f;
    c->n_sigmas = 1;
    c->sigma_max = 1.0f;
    /* Rademacher: v_i^2 = 1 exactly, so v.H v and (v.s)^2 vary only through
       their cross terms v_i v_j; a Gaussian v adds the squares' own noise.
       On toy2d's rings (60 s, seeds 1-3) plain SSM's gap: 0.15-0.20 nats
       with Gaussian v, 0.03-0.08 with Rademacher. */
    c->proj = EBM_PROJ_RADEMACHER;
    c->fd_eps = 0.1f;
    c->shards = 1;
}

static const char *const ebm__start_names[] = { "uniform", "gaussian", "data", "persistent" };
EBMDEF const char *ebm_start_name(int start) { return start >= 0 && start < 4 ? ebm__start_names[start] : NULL; }
static const char *const ebm__objective_names[] = { "ml", "dsm", "ssm", "ssm-vr", "fd-ssm", "nce" };
EBMDEF const char *ebm_objective_name(int o) { return o >= 0 && o < EBM_OBJ_COUNT ? ebm__objective_names[o] : NULL; }

/* The random streams of a trainer (seed = cfg.seed): one per use, so that
   changing one setting does not shift the numbers of another. */
enum { EBM__S_DATA_NOISE = 16, EBM__S_START, EBM__S_COIN, EBM__S_CHAIN, EBM__S_BUFFER, EBM__S_FRESH_START, EBM__S_FRESH_CHAIN,
       EBM__S_OBJECTIVE /* DSM's xi, SSM's v, NCE's noise */ };
static ebm_rng ebm__stream(uint64_t seed, uint32_t s) { ebm_rng r; r.seed = seed; r.stream = s; return r; }

/* A shard's parts of an iteration's diagnostics (each already divided by
   the batch, so the shards' add up), and its status. */
enum { EBM__D_STATUS, EBM__D_FNEG, EBM__D_FPOS, EBM__D_RT, EBM__D_ACC, EBM__D_LOSS, EBM__D_NCE, EBM__NDIAG };

EBMDEF int ebm_chain_start(int kind, const ebm_rng *r, uint64_t first, uint32_t step, float lo, float hi, float *x, int n, size_t D)
{
    int i;
    if (!r || !x || n < 0 || (kind != EBM_START_UNIFORM && kind != EBM_START_GAUSSIAN)) return EBM_EINVAL;
    if (kind == EBM_START_UNIFORM && !(ebm__finite(lo) && ebm__finite(hi) && lo < hi)) return EBM_EINVAL; /* (an empty, reversed or NaN box) */
    for (i = 0; i < n; i++) {
        if (kind == EBM_START_UNIFORM) ebm_rng_uniform(r, first + (uint64_t)i, step, lo, hi, x + (size_t)i * D, D);
        else ebm_rng_normal(r, first + (uint64_t)i, step, x + (size_t)i * D, D);
    }
    return EBM_OK;
}

/* Memory of one iteration: the chain (Langevin, or MALA's state on top) on
   a shard's samples, or the parameter gradient on twice as many (samples and
   data); for the MCMC-free objectives, their own graph. */
static int ebm__trainer_bytes(ebm_model *m, const ebm_train_config *c, size_t *bytes, ebm_error *err)
{
    size_t a = 0, b = 0, D = (size_t)m->in_h * m->in_w * m->in_c;
    const int B = c->batch / c->shards; /* the graph holds one shard at a time */
    int rc;
    if (c->objective == EBM_OBJ_DSM || c->objective == EBM_OBJ_SSM || c->objective == EBM_OBJ_SSM_VR) {
        if ((rc = ebm_model_step_bytes(m, B, EBM__STEP_DSM + c->objective - EBM_OBJ_DSM, &a, err)) != EBM_OK) return rc;
        if ((rc = ebm_model_step_bytes(m, B, EBM_STEP_INPUT_GRAD, &b, err)) != EBM_OK) return rc; /* sampling */
        *bytes = (a > b ? a : b) + 4096;
        return EBM_OK;
    }
    if (c->objective == EBM_OBJ_FD_SSM) { /* x + eps v, x - eps v and x in one batch */
        if ((rc = ebm_model_step_bytes(m, 3 * B, EBM_STEP_PARAM_GRAD, &a, err)) != EBM_OK) return rc;
        if ((rc = ebm_model_step_bytes(m, B, EBM_STEP_INPUT_GRAD, &b, err)) != EBM_OK) return rc;
        *bytes = (a > b ? a : b) + 4096;
        return EBM_OK;
    }
    if ((rc = ebm_model_step_bytes(m, B, EBM_STEP_INPUT_GRAD, &a, err)) != EBM_OK) return rc;
    if ((rc = ebm_model_step_bytes(m, 2 * B, EBM_STEP_PARAM_GRAD, &b, err)) != EBM_OK) return rc;
    a += (3 * (size_t)B * D + 2 * (size_t)B) * sizeof(float) + 4 * EBM__ALIGN; /* MALA's state */
    *bytes = (a > b ? a : b) + 4096;
    return EBM_OK;
}

static int ebm__tfail(ebm_trainer *t, int status, const char *fmt, ...)
{
    va_list ap;
    t->err.status = status;
    va_start(ap, fmt);
    vsnprintf(t->err.msg, sizeof t->err.msg, fmt, ap);
    va_end(ap);
    return status;
}

/* Whether the recipe's chains start (or restart) from U(chain.lo, chain.hi):
   the box is then used even where the chain itself has none. */
static int ebm__uniform_starts(const ebm_train_config *c)
{
    return c->start == EBM_START_UNIFORM || (c->start == EBM_START_PERSISTENT && c->restart == EBM_START_UNIFORM);
}

static int ebm__config_check(const ebm_train_config *c, ebm_error *err)
{
    if (c->batch < 1 || c->batch > (1 << 20)) return ebm__fail(err, EBM_EINVAL, "trainer: batch %d", c->batch);
    if (c->shards < 1 || c->batch % c->shards) return ebm__fail(err, EBM_EINVAL, "trainer: %d shards do not divide the batch of %d", c->shards, c->batch);
    if (c->start < EBM_START_UNIFORM || c->start > EBM_START_PERSISTENT) return ebm__fail(err, EBM_EINVAL, "trainer: unknown chain start %d", c->start);
    if (c->restart != EBM_START_UNIFORM && c->restart != EBM_START_GAUSSIAN) return ebm__fail(err, EBM_EINVAL, "trainer: restarts must be uniform or Gaussian noise (got %d)", c->restart);
    if (c->start == EBM_START_PERSISTENT && (c->buffer_size < 1 || c->buffer_size > (1 << 24)))
        return ebm__fail(err, EBM_EINVAL, "trainer: replay buffer of %d", c->buffer_size);
    if (!(c->reinit >= 0 && c->reinit <= 1)) return ebm__fail(err, EBM_EINVAL, "trainer: re-initialisation probability %g", (double)c->reinit);
    if (!(c->data_noise >= 0 && c->data_noise < 1e3f) || !(c->start_noise >= 0 && c->start_noise < 1e3f))
        return ebm__fail(err, EBM_EINVAL, "trainer: data noise %g / start noise %g", (double)c->data_noise, (double)c->start_noise);
    if (!(c->energy_reg >= 0 && c->energy_reg < 1e6f)) return ebm__fail(err, EBM_EINVAL, "trainer: energy_reg %g", (double)c->energy_reg);
    if (c->optimizer != EBM_OPT_ADAM && c->optimizer != EBM_OPT_SGD) return ebm__fail(err, EBM_EINVAL, "trainer: unknown optimiser %d", c->optimizer);
    if (!ebm__finite_pos(c->lr) || !(c->lr_min >= 0 && c->lr_min <= c->lr)) return ebm__fail(err, EBM_EINVAL, "trainer: learning rate %g (min %g)", (double)c->lr, (double)c->lr_min);
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1 && c->momentum >= 0 && c->momentum < 1))
        return ebm__fail(err, EBM_EINVAL, "trainer: beta1 %g, beta2 %g, momentum %g must be in [0, 1)", (double)c->beta1, (double)c->beta2, (double)c->momentum);
    if (c->schedule < EBM_LR_CONSTANT || c->schedule > EBM_LR_LINEAR || c->warmup < 0 || (c->schedule != EBM_LR_CONSTANT && c->total_iters < 1))
        return ebm__fail(err, EBM_EINVAL, "trainer: schedule %d needs total_iters >= 1 (got %ld) and warmup >= 0", c->schedule, c->total_iters);
    if (!ebm__finite_pos(c->max_abs_dt)) return ebm__fail(err, EBM_EINVAL, "trainer: max_abs_dt %g", (double)c->max_abs_dt);
    if (c->objective < EBM_OBJ_ML || c->objective >= EBM_OBJ_COUNT) return ebm__fail(err, EBM_EINVAL, "trainer: unknown objective %d", c->objective);
    if (c->objective == EBM_OBJ_DSM && (!ebm__finite_pos(c->sigma) || c->n_sigmas < 1 || c->n_sigmas > 10000 ||
                                        (c->n_sigmas > 1 && !(ebm__finite_pos(c->sigma_max) && c->sigma_max > c->sigma))))
        return ebm__fail(err, EBM_EINVAL, "trainer: DSM needs sigma > 0, 1 <= n_sigmas <= 10000 and, for several levels, sigma_max > sigma (got %g, %d, %g)",
                         (double)c->sigma, c->n_sigmas, (double)c->sigma_max);
    if ((c->objective == EBM_OBJ_SSM || c->objective == EBM_OBJ_SSM_VR || c->objective == EBM_OBJ_FD_SSM) &&
        c->proj != EBM_PROJ_GAUSSIAN && c->proj != EBM_PROJ_RADEMACHER)
        return ebm__fail(err, EBM_EINVAL, "trainer: unknown projection %d", c->proj);
    if (c->objective == EBM_OBJ_FD_SSM && !ebm__finite_pos(c->fd_eps)) return ebm__fail(err, EBM_EINVAL, "trainer: FD-SSM step %g", (double)c->fd_eps);
    if (c->objective == EBM_OBJ_ML) { /* its chains run every step: say what is wrong with them now, not at the first step */
        float a, b;
        if (ebm__uniform_starts(c) && !(ebm__finite(c->chain.lo) && ebm__finite(c->chain.hi) && c->chain.lo < c->chain.hi))
            return ebm__fail(err, EBM_EINVAL, "trainer: uniform starts need a box lo < hi (got [%g, %g])", (double)c->chain.lo, (double)c->chain.hi);
        return ebm__langevin_check(err, &c->chain, &a, &b);
    }
    return EBM_OK;
}

/* The trainer's own blocks: three shard batches, a weight per sample and
   NCE's noise (t->x); with persistent ML chains, the replay buffer and the
   batch's chains (t->neg); with several shards, each one's gradient. */
static size_t ebm__trainer_buffers(const ebm_model *m, const ebm_train_config *c)
{
    const size_t D = (size_t)m->in_h * m->in_w * m->in_c, Bs = (size_t)(c->batch / c->shards);
    const int persistent = c->start == EBM_START_PERSISTENT && c->objective == EBM_OBJ_ML;
    return (3 * Bs * D + 3 * Bs + 2 * D) * sizeof(float) + (size_t)c->shards * EBM__NDIAG * sizeof(double) +
           (persistent ? ((size_t)c->buffer_size + (size_t)c->batch) * D * sizeof(float) : 0) +
           (c->shards > 1 ? (size_t)c->shards * m->n_params * sizeof(float) : 0);
}

EBMDEF int ebm_trainer_memory(ebm_model *m, const ebm_train_config *c, size_t *bytes, ebm_error *err)
{
    size_t arena;
    int rc;
    if (!m || !m->params || !c || !bytes) return ebm__fail(err, EBM_EINVAL, "trainer_memory: NULL or unallocated model, settings or output");
    if ((rc = ebm__config_check(c, err)) != EBM_OK) return rc;
    if ((rc = ebm__trainer_bytes(m, c, &arena, err)) != EBM_OK) return rc;
    *bytes = ebm_model_bytes(m) + arena + ebm__trainer_buffers(m, c);
    return EBM_OK;
}

EBMDEF int ebm_trainer_init(ebm_trainer *t, ebm_model *m, const ebm_train_config *c, ebm_error *err)
{
    size_t D, Bs, bytes;
    int rc, oh, ow, oc;
    ebm_rng rb;
    if (!t) return ebm__fail(err, EBM_EINVAL, "trainer_init: NULL trainer");
    memset(t, 0, sizeof *t);
    if (!m || !m->params || !c) return ebm__fail(err, EBM_EINVAL, "trainer_init: NULL or unallocated model, or NULL settings");
    if ((rc = ebm__config_check(c, err)) != EBM_OK) return rc;
    ebm_model_out_shape(m, &oh, &ow, &oc);
    if (oh * ow * oc != 1) return ebm__fail(err, EBM_EINVAL, "trainer_init: the model gives %d values per sample, not one energy", oh * ow * oc);
    t->cfg = *c;
    t->model = m;
    t->lr_scale = 1.0f;
    D = (size_t)m->in_h * m->in_w * m->in_c;
    if ((rc = ebm__trainer_bytes(m, c, &bytes, err)) != EBM_OK) return rc;
    if ((rc = ebm_graph_create(&t->graph, bytes, err)) != EBM_OK) return rc;
    /* three shard batches: [x-; x+] for ML and NCE, three for FD-SSM and
       score matching's inputs; then a weight per sample; then NCE's noise */
    Bs = (size_t)(c->batch / c->shards);
    t->x = (float *)EBM_MALLOC((3 * Bs * D + 3 * Bs + 2 * D) * sizeof(float));
    t->diag = (double *)EBM_MALLOC((size_t)c->shards * EBM__NDIAG * sizeof(double));
    if (c->start == EBM_START_PERSISTENT && c->objective == EBM_OBJ_ML) {
        t->buffer = (float *)EBM_MALLOC((size_t)c->buffer_size * D * sizeof(float));
        t->neg = (float *)EBM_MALLOC((size_t)c->batch * D * sizeof(float));
    }
    if (c->shards > 1) t->partial = (float *)EBM_MALLOC((size_t)c->shards * m->n_params * sizeof(float));
    if (!t->x || !t->diag || (c->start == EBM_START_PERSISTENT && c->objective == EBM_OBJ_ML && (!t->buffer || !t->neg)) ||
        (c->shards > 1 && !t->partial)) {
        ebm_trainer_free(t);
        return ebm__fail(err, EBM_ENOMEM, "trainer_init: no memory for the batch, the shards' gradients or the replay buffer");
    }
    t->w = t->x + 3 * Bs * D;
    t->noise_mu = t->w + 3 * Bs;
    t->noise_sd = t->noise_mu + D;
    t->comm.rank = 0; t->comm.size = 1;
    /* the replay buffer starts as noise of the kind fresh chains start from */
    rb = ebm__stream(c->seed, EBM__S_BUFFER);
    if (t->buffer) ebm_chain_start(c->restart, &rb, 0, 0, c->chain.lo, c->chain.hi, t->buffer, c->buffer_size, D);
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF void ebm_trainer_free(ebm_trainer *t)
{
    if (!t) return;
    ebm_graph_destroy(t->graph);
    EBM_FREE(t->x);
    EBM_FREE(t->buffer);
    EBM_FREE(t->neg);
    EBM_FREE(t->partial);
    EBM_FREE(t->diag);
    memset(t, 0, sizeof *t);
}

EBMDEF int ebm_trainer_set_comm(ebm_trainer *t, const ebm_comm *comm)
{
    if (!t || !t->model) return EBM_EINVAL;
    if (!comm || comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size || (comm->size > 1 && !comm->allgather))
        return ebm__tfail(t, EBM_EINVAL, "trainer_set_comm: need 0 <= rank < size and, for several workers, an allgather");
    if (t->cfg.shards % comm->size)
        return ebm__tfail(t, EBM_EINVAL, "trainer_set_comm: %d workers do not divide the %d shards", comm->size, t->cfg.shards);
    t->comm = *comm;
    return EBM_OK;
}

EBMDEF float ebm_trainer_lr(const ebm_trainer *t)
{
    const ebm_train_config *c = &t->cfg;
    double lr = c->lr, p;
    if (c->warmup > 0 && t->iter < c->warmup) lr *= (double)(t->iter + 1) / (double)c->warmup;
    else if (c->schedule != EBM_LR_CONSTANT) {
        p = (double)(t->iter - c->warmup) / (double)(c->total_iters - c->warmup > 0 ? c->total_iters - c->warmup : 1);
        if (p > 1) p = 1;
        if (c->schedule == EBM_LR_COSINE) lr = c->lr_min + 0.5 * (c->lr - c->lr_min) * (1 + cos(EBM__PI * p));
        else lr = c->lr + (c->lr_min - c->lr) * p;
    }
    return (float)(lr * t->lr_scale);
}

/* x[i] += sigma N(0, I) for samples first+i (step 0 of stream r). */
static void ebm__add_noise(const ebm_rng *r, uint64_t first, float sigma, float *x, int n, size_t D)
{
    int i;
    size_t j, k;
    if (sigma <= 0) return;
    for (i = 0; i < n; i++) {
        float xi[256];
        for (j = 0; j < D; j += 256) {
            size_t len = D - j < 256 ? D - j : 256;
            ebm__rng_normal_at(r, first + (uint64_t)i, 0, j, xi, len);
            for (k = 0; k < len; k++) x[(size_t)i * D + j + k] += sigma * xi[k];
        }
    }
}

/* Fresh chains or chains from the buffer for samples first .. first+n-1. */
static void ebm__chain_starts(ebm_trainer *t, uint64_t first, const float *x_data, float *x, int n)
{
    const ebm_train_config *c = &t->cfg;
    size_t D = (size_t)t->model->in_h * t->model->in_w * t->model->in_c;
    ebm_rng rs = ebm__stream(c->seed, EBM__S_START), rc = ebm__stream(c->seed, EBM__S_COIN);
    int i;
    if (c->start == EBM_START_UNIFORM || c->start == EBM_START_GAUSSIAN) {
        ebm_chain_start(c->start, &rs, first, 0, c->chain.lo, c->chain.hi, x, n, D);
        return;
    }
    if (c->start == EBM_START_DATA) { /* contrastive divergence: the data batch, plus noise */
        memcpy(x, x_data, (size_t)n * D * sizeof(float));
        ebm__add_noise(&rs, first, c->start_noise, x, n, D);
        return;
    }
    /* persistent: sample i continues the chain in slot (first + i) mod size,
       or, with probability reinit, restarts it from noise */
    for (i = 0; i < n; i++) {
        float u;
        size_t slot = (size_t)((first + (uint64_t)i) % (uint64_t)c->buffer_size);
        ebm_rng_uniform(&rc, first + (uint64_t)i, 0, 0.0f, 1.0f, &u, 1);
        if (u < c->reinit) ebm_chain_start(c->restart, &rs, first + (uint64_t)i, 0, c->chain.lo, c->chain.hi, x + (size_t)i * D, 1, D);
        else memcpy(x + (size_t)i * D, t->buffer + slot * D, D * sizeof(float));
    }
}

/* Annealed Langevin (Song & Ermon 2019) for a model trained by DSM on
   several levels: n_steps spread over the levels from sigma_max down to
   sigma, each a chain at temperature 1 on that level's energy
   f_l = f sigma / sigma_l, with noise b_l = b sigma_l / sigma (b: the
   chain's eps, or its noise in the step-and-noise form) and drift
   b_l^2 / 2 grad f_l. */
static int ebm__annealed_run(ebm_trainer *t, const ebm_rng *r, uint64_t first, float *x, int n, int n_steps, double *rt)
{
    const ebm_train_config *c = &t->cfg;
    const int L = c->n_sigmas;
    const float b = c->chain.form == EBM_LANGEVIN_EPS ? c->chain.eps : c->chain.noise;
    int l, done = 0, rc;
    double part;
    *rt = 0;
    for (l = 0; l < L; l++) {
        ebm_langevin ch = c->chain;
        double sl = c->sigma_max * pow(c->sigma / c->sigma_max, (double)l / (L - 1)), bl = b * sl / c->sigma;
        ch.form = EBM_LANGEVIN_STEP_NOISE;
        ch.noise = (float)bl;
        ch.step = (float)(0.5 * bl * bl * c->sigma / sl);
        ch.n_steps = n_steps * (l + 1) / L - done;
        ch.first_step = (uint32_t)done;
        if ((rc = ebm_langevin_run(t->model, t->graph, &ch, r, first, x, n, &part)) != EBM_OK) return rc;
        *rt += part * ch.n_steps / (n_steps ? n_steps : 1);
        done += ch.n_steps;
    }
    return EBM_OK;
}

static int ebm__chain_run(ebm_trainer *t, const ebm_rng *r, uint64_t first, float *x, int n, int n_steps, double *rt, double *acc)
{
    ebm_langevin ch = t->cfg.chain;
    ch.n_steps = n_steps;
    ch.first_step = 0;
    *acc = 1.0;
    if (t->cfg.objective == EBM_OBJ_DSM && t->cfg.n_sigmas > 1) return ebm__annealed_run(t, r, first, x, n, n_steps, rt);
    if (t->cfg.mala) return ebm_mala_run(t->model, t->graph, &ch, r, first, x, n, acc, rt);
    return ebm_langevin_run(t->model, t->graph, &ch, r, first, x, n, rt);
}

static int ebm__all_finite(const float *p, size_t n)
{
    size_t i;
    float s = 0;
    for (i = 0; i < n; i++) s += p[i] * 0.0f; /* NaN or inf anywhere makes s NaN */
    return s == 0;
}

/* Sigmoid and log-sigmoid without overflow. */
static double ebm__sigmoid_d(double z) { return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z)); }
static double ebm__log_sigmoid(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }

EBMDEF int ebm_trainer_fit_noise(ebm_trainer *t, const float *x, int n)
{
    size_t D, j;
    int i;
    if (!t || !t->model) return EBM_EINVAL;
    if (!x || n < 2) return ebm__tfail(t, EBM_EINVAL, "fit_noise: NULL data or fewer than 2 points");
    D = (size_t)t->model->in_h * t->model->in_w * t->model->in_c;
    for (j = 0; j < D; j++) {
        double mean = 0, var = 0, floor_sd = 1e-2 * (t->cfg.chain.hi > t->cfg.chain.lo ? t->cfg.chain.hi - t->cfg.chain.lo : 1.0);
        for (i = 0; i < n; i++) mean += x[(size_t)i * D + j];
        mean /= n;
        for (i = 0; i < n; i++) var += (x[(size_t)i * D + j] - mean) * (x[(size_t)i * D + j] - mean);
        var /= n - 1;
        t->noise_mu[j] = (float)mean;
        /* a floor: a coordinate the data never moves (an image's border)
           would give the noise a density of thousands of nats */
        t->noise_sd[j] = (float)(sqrt(var) > floor_sd ? sqrt(var) : floor_sd);
    }
    t->noise_fitted = 1;
    return EBM_OK;
}

/* One shard's gradient of the objective in model->grads (zeroed first):
   B samples from global index `first`, data x_data, the loss normalised by
   the whole batch N (so the shards' gradients add up to the batch's). Its
   parts of the diagnostics go to dg[EBM__D_*]; ML's chains stay in t->x. */
static int ebm__shard(ebm_trainer *t, const float *x_data, uint64_t first, int B, double N, long iter, double *dg)
{
    const ebm_train_config *c = &t->cfg;
    ebm_graph *g = t->graph;
    ebm_model *m = t->model;
    const size_t D = (size_t)m->in_h * m->in_w * m->in_c;
    const size_t BD = (size_t)B * D;
    int i, shape[4], ws[4];
    size_t j;
    float *x0 = t->x, *x1 = t->x + BD, *x2 = t->x + 2 * BD;
    double fp = 0, fn = 0, rt = 0, acc = 1;
    ebm_rng rn = ebm__stream(c->seed, EBM__S_DATA_NOISE), ro = ebm__stream(c->seed, EBM__S_OBJECTIVE);
    ebm_var *y = NULL, *gx = NULL, *loss;
    shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    ws[1] = ws[2] = ws[3] = 1;
    ebm_model_zero_grad(m);
    if (c->objective == EBM_OBJ_ML) {
        ebm_rng rch = ebm__stream(c->seed, EBM__S_CHAIN);
        /* 1. x- : chains from their starts, K steps */
        ebm__chain_starts(t, first, x_data, x0, B);
        if (ebm__chain_run(t, &rch, first, x0, B, c->chain.n_steps, &rt, &acc) != EBM_OK)
            return ebm__tfail(t, ebm_graph_status(g), "trainer_step: %s", ebm_graph_error(g)->msg);
        if (!ebm__all_finite(x0, BD))
            return ebm__tfail(t, EBM_EDIVERGED, "diverged at iteration %ld: the chains' samples are not finite", iter);
    }
    /* x+ : the data, plus N(0, data_noise^2); after x- for ML and NCE, first otherwise */
    {
        float *xp = c->objective == EBM_OBJ_ML || c->objective == EBM_OBJ_NCE ? x1 : x2;
        memcpy(xp, x_data, BD * sizeof(float));
        ebm__add_noise(&rn, first, c->data_noise, xp, B, D);
    }
    ebm_graph_reset(g);
    switch (c->objective) {
    case EBM_OBJ_ML: case EBM_OBJ_NCE: {
        /* grad_theta of sum_i w_i f(x_i) over [x-; x+], the weights set
           from the forward pass before the backward pass reads them.
           ML: L = mean f(x-) - mean f(x+) [+ alpha (mean f(x+)^2 + mean
           f(x-)^2)]: w_i = +-1/N [+ 2 alpha f(x_i) / N]. NCE: x- is noise
           from q_n; with u = f - |x|^2/(2 sigma_q^2) - c - log q_n,
           dL/df = sigmoid(u)/N on noise, -sigmoid(-u)/N on data. */
        double dc = 0, lsum = 0;
        float inv_q = c->chain.sigma_q > 0 ? 1.0f / (c->chain.sigma_q * c->chain.sigma_q) : 0.0f;
        if (c->objective == EBM_OBJ_NCE) {
            for (i = 0; i < B; i++) {
                float xi[256];
                for (j = 0; j < D; j += 256) {
                    size_t k, len = D - j < 256 ? D - j : 256;
                    ebm__rng_normal_at(&ro, first + (uint64_t)i, 0, j, xi, len);
                    for (k = 0; k < len; k++) x0[(size_t)i * D + j + k] = t->noise_mu[j + k] + t->noise_sd[j + k] * xi[k];
                }
            }
        }
        shape[0] = 2 * B; ws[0] = 2 * B;
        y = ebm_model_forward(m, g, ebm_leaf(g, t->x, 4, shape));
        if (ebm_graph_status(g) != EBM_OK) return ebm__tfail(t, ebm_graph_status(g), "trainer_step: %s", ebm_graph_error(g)->msg);
        for (i = 0; i < 2 * B; i++) {
            if (c->objective == EBM_OBJ_ML) {
                t->w[i] = (i < B ? 1.0f : -1.0f) / (float)N + 2.0f * c->energy_reg * y->data[i] / (float)N;
                continue;
            } else {
                const float *xs = t->x + (size_t)i * D;
                double lq = 0, sq = 0, u;
                int inside = 1;
                for (j = 0; j < D; j++) {
                    double z = (xs[j] - t->noise_mu[j]) / t->noise_sd[j];
                    lq -= 0.5 * z * z + log(t->noise_sd[j]) + 0.9189385332046727; /* log sqrt(2 pi) */
                    sq += (double)xs[j] * xs[j];
                    if (c->chain.box != EBM_BOX_NONE && (xs[j] < c->chain.lo || xs[j] > c->chain.hi)) inside = 0;
                }
                u = y->data[i] - 0.5 * inv_q * sq - t->nce_c - lq;
                if (i < B) { /* noise: -log sigmoid(-u), zero where the model is (outside its box) */
                    t->w[i] = inside ? (float)(ebm__sigmoid_d(u) / N) : 0.0f;
                    if (inside) lsum -= ebm__log_sigmoid(-u);
                } else {
                    t->w[i] = (float)(-ebm__sigmoid_d(-u) / N);
                    lsum -= ebm__log_sigmoid(u);
                }
                dc -= t->w[i]; /* u falls by what c rises */
            }
        }
        ebm_model_backward(m, g, ebm_dot(g, y, ebm_leaf(g, t->w, 4, ws)));
        if (ebm_graph_status(g) != EBM_OK) return ebm__tfail(t, ebm_graph_status(g), "trainer_step: %s", ebm_graph_error(g)->msg);
        for (i = 0; i < B; i++) { fn += y->data[i]; fp += y->data[B + i]; }
        dg[EBM__D_FNEG] = fn / N; dg[EBM__D_FPOS] = fp / N;
        dg[EBM__D_RT] = rt * (B / N); dg[EBM__D_ACC] = acc * (B / N);
        dg[EBM__D_LOSS] = lsum / N; dg[EBM__D_NCE] = dc;
        break;
    }
    case EBM_OBJ_DSM: case EBM_OBJ_SSM: case EBM_OBJ_SSM_VR: {
        /* x0 = the input (x~ for DSM), x1 = xi or v, x2 = the data; SSM's u after */
        const float smin = c->objective == EBM_OBJ_DSM ? c->sigma : 1.0f;
        double value = 0, gn = 0;
        float *u = c->objective == EBM_OBJ_SSM ? x2 : NULL; /* the data is copied to x0 first */
        for (i = 0; i < B; i++) {
            float *r = x1 + (size_t)i * D;
            double lev = 0;
            ebm__rng_normal_at(&ro, first + (uint64_t)i, 0, 0, r, D); /* xi, or v */
            if (c->proj == EBM_PROJ_RADEMACHER && c->objective != EBM_OBJ_DSM)
                for (j = 0; j < D; j++) r[j] = r[j] < 0 ? -1.0f : 1.0f;
            if (c->objective == EBM_OBJ_DSM) /* level (first + i) mod L, geometric from sigma_max to sigma */
                lev = c->n_sigmas > 1 ? (double)((first + (uint64_t)i) % (uint64_t)c->n_sigmas) / (c->n_sigmas - 1) : 1.0;
            for (j = 0; j < D; j++) {
                float xv = x2[(size_t)i * D + j];
                if (c->objective == EBM_OBJ_DSM)
                    xv += (float)(c->n_sigmas > 1 ? c->sigma_max * pow(c->sigma / c->sigma_max, lev) : c->sigma) * r[j];
                x0[(size_t)i * D + j] = xv;
            }
        }
        loss = ebm__sm_loss(m, g, c->objective, B, (float)N, smin, x0, x1, u, 0, &y, &gx, &value);
        if (loss) ebm_model_backward(m, g, loss);
        if (ebm_graph_status(g) != EBM_OK) return ebm__tfail(t, ebm_graph_status(g), "trainer_step: %s", ebm_graph_error(g)->msg);
        for (i = 0; i < B; i++) {
            double nrm = 0;
            fp += y->data[i];
            for (j = 0; gx && j < D; j++) nrm += (double)gx->data[(size_t)i * D + j] * gx->data[(size_t)i * D + j];
            gn += sqrt(nrm);
        }
        dg[EBM__D_FPOS] = fp / N;
        dg[EBM__D_RT] = gn / N; /* |grad_x f| at the (noisy) data, where the loss computes it (not plain SSM's Taylor mode: 0) */
        dg[EBM__D_LOSS] = value;
        break;
    }
    case EBM_OBJ_FD_SSM: {
        /* [x + eps v; x - eps v; x], one forward; with d = f+ - f-:
           L = mean [(f+ + f- - 2 f) / eps^2 + d^2 / (8 eps^2)],
           dL/df+- = (1/eps^2 +- d / (4 eps^2)) / N, dL/df = -2 / (eps^2 N) */
        const double e2 = (double)c->fd_eps * c->fd_eps;
        double lsum = 0;
        float v[256];
        for (i = 0; i < B; i++)
            for (j = 0; j < D; j += 256) {
                size_t k, len = D - j < 256 ? D - j : 256, o = (size_t)i * D + j;
                ebm__rng_normal_at(&ro, first + (uint64_t)i, 0, j, v, len);
                for (k = 0; k < len; k++) {
                    float vk = c->proj == EBM_PROJ_RADEMACHER ? (v[k] < 0 ? -1.0f : 1.0f) : v[k];
                    x0[o + k] = x2[o + k] + c->fd_eps * vk;
                    x1[o + k] = x2[o + k] - c->fd_eps * vk;
                }
            }
        shape[0] = 3 * B; ws[0] = 3 * B;
        y = ebm_model_forward(m, g, ebm_leaf(g, t->x, 4, shape));
        if (ebm_graph_status(g) != EBM_OK) return ebm__tfail(t, ebm_graph_status(g), "trainer_step: %s", ebm_graph_error(g)->msg);
        for (i = 0; i < B; i++) {
            double fpl = y->data[i], fmi = y->data[B + i], f0 = y->data[2 * B + i], d = fpl - fmi;
            lsum += (fpl + fmi - 2 * f0) / e2 + d * d / (8 * e2);
            t->w[i] = (float)((1 + d / 4) / (e2 * N));
            t->w[B + i] = (float)((1 - d / 4) / (e2 * N));
            t->w[2 * B + i] = (float)(-2 / (e2 * N));
            fp += f0;
        }
        ebm_model_backward(m, g, ebm_dot(g, y, ebm_leaf(g, t->w, 4, ws)));
        if (ebm_graph_status(g) != EBM_OK) return ebm__tfail(t, ebm_graph_status(g), "trainer_step: %s", ebm_graph_error(g)->msg);
        dg[EBM__D_FPOS] = fp / N;
        dg[EBM__D_LOSS] = lsum / N;
        break;
    }
    }
    return EBM_OK;
}

/* Sum the shards' gradients b[s*n ..] by a fixed pairwise tree into b[0 ..]:
   the same additions in the same order whoever computed each shard. */
static void ebm__tree_sum(float *b, int shards, size_t n)
{
    int h, s;
    for (h = 1; h < shards; h *= 2)
        for (s = 0; s + h < shards; s += 2 * h) {
            float *dst = b + (size_t)s * n;
            const float *src = b + (size_t)(s + h) * n;
            const long nc = (long)ebm__ceil_div(n, EBM__CHUNK);
            long q;
            EBM__PARALLEL_FOR(nc, nc > 1)
            for (q = 0; q < nc; q++) {
                size_t i, o = (size_t)q * EBM__CHUNK, e = n - o < EBM__CHUNK ? n : o + EBM__CHUNK;
                for (i = o; i < e; i++) dst[i] += src[i];
            }
        }
}

/* Fill the other workers' blocks of buf (this one's is in place); nothing for one worker. */
static int ebm__allgather(ebm_trainer *t, void *buf, size_t bytes)
{
    if (t->comm.size <= 1) return EBM_OK;
    if (t->comm.allgather(t->comm.user, buf, bytes) != 0) return ebm__tfail(t, EBM_EIO, "trainer_step: the workers' allgather failed");
    return EBM_OK;
}

/* The model's gradient of the objective for iteration `iter` in
   model->grads, with the loss and the diagnostics in t: this worker's
   shards one after another, every worker's gathered, then added in shard
   order. The ML objective writes its chains back into the replay buffer
   when keep is set (all of the batch's, on every worker). */
static int ebm__objective(ebm_trainer *t, const float *x_data, long iter, int keep)
{
    const ebm_train_config *c = &t->cfg;
    ebm_model *m = t->model;
    const size_t D = (size_t)m->in_h * m->in_w * m->in_c, P = m->n_params;
    const int S = c->shards, per = S / t->comm.size, s0 = t->comm.rank * per, Bs = c->batch / S;
    const uint64_t first = (uint64_t)iter * (uint64_t)c->batch; /* global index of the iteration's first sample */
    double *dg, nce = 0;
    int s, rc = EBM_OK, failed = -1;
    if (c->objective == EBM_OBJ_NCE && !t->noise_fitted) { /* q_n from the first batch, unless fitted before */
        if (t->comm.size > 1) return ebm__tfail(t, EBM_EINVAL, "trainer_step: with several workers, NCE's noise must be fitted first (ebm_trainer_fit_noise, the same data on each)");
        if (ebm_trainer_fit_noise(t, x_data, c->batch) != EBM_OK) return t->err.status;
    }
    memset(t->diag, 0, (size_t)S * EBM__NDIAG * sizeof(double));
    for (s = s0; s < s0 + per; s++) {
        dg = t->diag + (size_t)s * EBM__NDIAG;
        rc = ebm__shard(t, x_data + (size_t)(s - s0) * Bs * D, first + (uint64_t)s * Bs, Bs, (double)c->batch, iter, dg);
        if (rc != EBM_OK) { dg[EBM__D_STATUS] = rc; break; } /* the other workers still gather, then stop too */
        if (S > 1) memcpy(t->partial + (size_t)s * P, m->grads, P * sizeof(float));
        if (t->neg) memcpy(t->neg + (size_t)s * Bs * D, t->x, (size_t)Bs * D * sizeof(float));
    }
    if (ebm__allgather(t, t->diag, (size_t)per * EBM__NDIAG * sizeof(double)) != EBM_OK) return t->err.status;
    for (s = 0; s < S && failed < 0; s++) if (t->diag[(size_t)s * EBM__NDIAG + EBM__D_STATUS] != 0) failed = s;
    if (failed >= 0) {
        if (rc != EBM_OK) return rc; /* ours: t->err says why */
        return ebm__tfail(t, (int)t->diag[(size_t)failed * EBM__NDIAG + EBM__D_STATUS], "trainer_step: shard %d failed on worker %d at iteration %ld",
                          failed, failed / per, iter);
    }
    if (S > 1) {
        if (ebm__allgather(t, t->partial, (size_t)per * P * sizeof(float)) != EBM_OK) return t->err.status;
        ebm__tree_sum(t->partial, S, P);
        memcpy(m->grads, t->partial, P * sizeof(float));
    }
    if (t->neg) {
        if (ebm__allgather(t, t->neg, (size_t)per * Bs * D * sizeof(float)) != EBM_OK) return t->err.status;
        if (keep) /* sample i's chain back into slot (first + i) mod size */
            for (s = 0; s < c->batch; s++)
                memcpy(t->buffer + (size_t)((first + (uint64_t)s) % (uint64_t)c->buffer_size) * D, t->neg + (size_t)s * D, D * sizeof(float));
    }
    /* the diagnostics, added in shard order */
    t->f_pos = t->f_neg = t->r_t = t->accept = t->loss = 0;
    for (s = 0; s < S; s++) {
        dg = t->diag + (size_t)s * EBM__NDIAG;
        t->f_neg += dg[EBM__D_FNEG]; t->f_pos += dg[EBM__D_FPOS]; t->r_t += dg[EBM__D_RT];
        t->accept += dg[EBM__D_ACC]; t->loss += dg[EBM__D_LOSS]; nce += dg[EBM__D_NCE];
    }
    t->nce_grad = (float)nce;
    if (c->objective == EBM_OBJ_ML || c->objective == EBM_OBJ_NCE) t->d_t = t->f_pos - t->f_neg;
    else { t->d_t = 0; t->accept = 1; }
    if (c->objective == EBM_OBJ_ML) t->loss = -t->d_t;
    return EBM_OK;
}

EBMDEF int ebm_trainer_loss(ebm_trainer *t, const float *x_data, long iter, double *loss)
{
    int rc;
    if (!t || !t->model) return EBM_EINVAL;
    if (!x_data || !loss || iter < 0) return ebm__tfail(t, EBM_EINVAL, "trainer_loss: NULL data or result, or iter < 0");
    if ((rc = ebm__objective(t, x_data, iter, 0)) != EBM_OK) return rc;
    *loss = t->loss;
    return EBM_OK;
}

EBMDEF int ebm_trainer_step(ebm_trainer *t, const float *x_data)
{
    const ebm_train_config *c;
    float lr;
    int rc;
    if (!t || !t->model) return EBM_EINVAL;
    if (!x_data) return ebm__tfail(t, EBM_EINVAL, "trainer_step: NULL data batch");
    c = &t->cfg;
    if ((rc = ebm__objective(t, x_data, t->iter, 1)) != EBM_OK) return rc;
    /* divergence: never take a step from non-finite or runaway values */
    if (!(t->d_t == t->d_t) || !(t->loss == t->loss) || !ebm__all_finite(t->model->grads, t->model->n_params) || !(t->nce_grad == t->nce_grad))
        return ebm__tfail(t, EBM_EDIVERGED, "diverged at iteration %ld: non-finite energies, loss or gradients", t->iter);
    if (fabs(t->d_t) > c->max_abs_dt)
        return ebm__tfail(t, EBM_EDIVERGED, "diverged at iteration %ld: |d_t| = %.3g exceeds %.3g", t->iter, fabs(t->d_t), (double)c->max_abs_dt);
    lr = ebm_trainer_lr(t);
    t->lr = lr;
    if ((c->optimizer == EBM_OPT_ADAM ? ebm_adam_step(t->model, lr, c->beta1, c->beta2, 1e-8f, t->iter + 1)
                                      : ebm_sgd_step(t->model, lr, c->momentum)) != EBM_OK)
        return ebm__tfail(t, t->model->err.status, "trainer_step: %s", t->model->err.msg);
    if (c->objective == EBM_OBJ_NCE) { /* the log-normaliser: the same rule as the parameters */
        float gc = t->nce_grad;
        if (c->optimizer == EBM_OPT_ADAM) {
            double bc1 = 1 - pow(c->beta1, (double)(t->iter + 1)), bc2 = 1 - pow(c->beta2, (double)(t->iter + 1));
            t->nce_m1 = c->beta1 * t->nce_m1 + (1 - c->beta1) * gc;
            t->nce_m2 = c->beta2 * t->nce_m2 + (1 - c->beta2) * gc * gc;
            t->nce_c -= (float)(lr * (t->nce_m1 / bc1) / (sqrt(t->nce_m2 / bc2) + 1e-8));
        } else {
            t->nce_m1 = c->momentum * t->nce_m1 + gc;
            t->nce_c -= lr * t->nce_m1;
        }
    }
    t->iter++;
    t->err.status = EBM_OK;
    return EBM_OK;
}

EBMDEF int ebm_trainer_sample(ebm_trainer *t, uint64_t first, const float *x_data, float *x, int n, int n_steps)
{
    const ebm_train_config *c;
    ebm_rng rs, rch;
    size_t D;
    double rt, acc;
    int i, rc;
    if (!t || !t->model || !x || n < 1) return EBM_EINVAL;
    c = &t->cfg;
    if (c->start == EBM_START_DATA && !x_data) return ebm__tfail(t, EBM_EINVAL, "trainer_sample: data-started chains need a data batch");
    D = (size_t)t->model->in_h * t->model->in_w * t->model->in_c;
    rs = ebm__stream(c->seed, EBM__S_FRESH_START);
    rch = ebm__stream(c->seed, EBM__S_FRESH_CHAIN);
    if (c->start == EBM_START_DATA && x_data) memcpy(x, x_data, (size_t)n * D * sizeof(float));
    else if (ebm_chain_start(c->start == EBM_START_GAUSSIAN ? EBM_START_GAUSSIAN : c->start == EBM_START_PERSISTENT ? c->restart : EBM_START_UNIFORM,
                             &rs, first, 0, c->chain.lo, c->chain.hi, x, n, D) != EBM_OK) /* (ML's box is checked at init; others' here) */
        return ebm__tfail(t, EBM_EINVAL, "trainer_sample: uniform starts need a box lo < hi (got [%g, %g])", (double)c->chain.lo, (double)c->chain.hi);
    /* in chunks of the shard the graph was sized for */
    for (i = 0; i < n; i += c->batch / c->shards) {
        int m = n - i < c->batch / c->shards ? n - i : c->batch / c->shards;
        if ((rc = ebm__chain_run(t, &rch, first + (uint64_t)i, x + (size_t)i * D, m, n_steps, &rt, &acc)) != EBM_OK)
            return ebm__tfail(t, rc, "trainer_sample: %s", ebm_graph_error(t->graph)->msg);
    }
    return EBM_OK;
}

/* ---------------------------------------------------------------- 6e. the chain as a generator */

/* 1 if every layer is linear or piecewise linear (LeakyReLU, pooling): the
   net's Hessian in x is then zero almost everywhere. */
static int ebm__piecewise_linear(const ebm_model *m)
{
    int l;
    for (l = 0; l < m->n_layers; l++)
        if (m->layer[l].type == EBM_LAYER_ACT && m->layer[l].act != EBM_ACT_LEAKY_RELU) return 0;
    return 1;
}

/* 1 if ebm_chain_backward takes its products in Taylor mode: a curved net
   without max-pooling, and no reflecting wall. Without a reflecting wall the
   box's derivative can be read off the recorded states (a clamped coordinate
   sits on the wall), so grad f is not needed, and H v = grad_x (v . grad f)
   is the gradient of the first Taylor coefficient of f along v
   (ebm__model_jet): forward over reverse, a first-order pass on the fused
   kernels instead of differentiating a recorded backward pass. */
static int ebm__chain_jet(const ebm_model *m, const ebm_langevin *cfg)
{
    int l, jet = !ebm__piecewise_linear(m) && cfg->box != EBM_BOX_REFLECT && cfg->aniso_th <= 0;
    for (l = 0; l < m->n_layers; l++) jet &= m->layer[l].type != EBM_LAYER_MAXPOOL;
    return jet;
}

EBMDEF size_t ebm_chain_kept_floats(const ebm_model *m, const ebm_langevin *cfg, int n)
{
    int l;
    if (!m || !m->params || !cfg || n < 1 || cfg->n_steps < 1 || !ebm__chain_jet(m, cfg)) return 0;
    for (l = 0; l < m->n_layers; l++) if (ebm__fuses_act(m, l)) return 0; /* its pre-activation is never stored */
    return (size_t)cfg->n_steps * ebm__kept_per_step(m, n); /* may be 0: no conv worth keeping */
}

EBMDEF int ebm_chain_record(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                            const float *z, int n, float *states, float *kept)
{
    ebm_langevin one;
    size_t D, nD;
    int k, rc;
    if (!g) return EBM_EINVAL;
    if (!m || !cfg || !z || !states || n < 1 || cfg->n_steps < 0)
        return ebm__gfail(g, EBM_EINVAL, "chain_record: NULL argument, n < 1 or K < 0"), EBM_EINVAL;
    D = (size_t)m->in_h * m->in_w * m->in_c;
    nD = (size_t)n * D;
    if (!ebm_chain_kept_floats(m, cfg, n)) kept = NULL;
    memcpy(states, z, nD * sizeof(float));
    one = *cfg;
    one.n_steps = 1;
    for (k = 0; k < cfg->n_steps; k++) { /* step by step, the same bits as one K-step run */
        memcpy(states + (size_t)(k + 1) * nD, states + (size_t)k * nD, nD * sizeof(float));
        one.first_step = cfg->first_step + (uint32_t)k;
        if ((rc = ebm__langevin_run(m, g, &one, rng, first_sample, states + (size_t)(k + 1) * nD, n, NULL,
                                    kept ? kept + (size_t)k * ebm__kept_per_step(m, n) : NULL)) != EBM_OK) return rc;
    }
    return EBM_OK;
}

EBMDEF int ebm_chain_backward(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                              const float *states, const float *kept, int n, const float *gK, float *gz)
{
    int k, i, shape[4], flat, jet;
    size_t D, nD, j;
    float a, b, inv_q;
    if (!g) return EBM_EINVAL;
    if (!gK || !gz || !states) return ebm__gfail(g, EBM_EINVAL, "chain_backward: NULL states or gradients"), EBM_EINVAL;
    if (ebm__sampler_begin(m, g, cfg, rng, states, n, &a, &b) != EBM_OK) return g->err.status;
    inv_q = cfg->sigma_q > 0 ? 1.0f / (cfg->sigma_q * cfg->sigma_q) : 0.0f;
    D = (size_t)m->in_h * m->in_w * m->in_c;
    nD = (size_t)n * D;
    shape[0] = n; shape[1] = m->in_h; shape[2] = m->in_w; shape[3] = m->in_c;
    if (gz != gK) memcpy(gz, gK, nD * sizeof(float)); /* gz may be gK */
    if (cfg->aniso_th > 0) return ebm__gfail(g, EBM_EUNSUPPORTED, "chain_backward: STANLEY chains are not differentiated (their step depends on |drift|)"), EBM_EUNSUPPORTED;
    flat = ebm__piecewise_linear(m); /* H = 0: no Hessian-vector products */
    jet = ebm__chain_jet(m, cfg);
    if (!ebm_chain_kept_floats(m, cfg, n)) kept = NULL;
    for (k = cfg->n_steps - 1; jet && k >= 0; k--) {
        const float *xk = states + (size_t)k * nD, *x1 = xk + nD;
        ebm_var *xv, *v, *f0 = NULL, *f1 = NULL, *hv = NULL;
        ebm_graph_reset(g);
        v = ebm_tensor(g, 4, shape);
        xv = ebm_leaf(g, (float *)(uintptr_t)xk, 4, shape);
        if (!v) return g->err.status;
        for (j = 0; j < nD; j++) /* v = B_k dL/dx_{k+1}: 0 where the wall clamped the step */
            v->data[j] = cfg->box == EBM_BOX_NONE || (x1[j] > cfg->lo && x1[j] < cfg->hi) ? gz[j] : 0.0f;
        ebm__model_jet(m, g, xv, v, &f0, &f1, NULL, /* no max-pooling here: it builds */
                       kept ? kept + (size_t)k * ebm__kept_per_step(m, n) : NULL);
        if (ebm_grad(g, ebm_sum(g, f1), NULL, 1, &xv, &hv, 0) != EBM_OK) return g->err.status;
        for (j = 0; j < nD; j++) gz[j] = (1.0f - a * inv_q) * v->data[j] + a * hv->data[j];
    }
    for (k = cfg->n_steps - 1; !jet && k >= 0; k--) {
        const float *xk = states + (size_t)k * nD;
        ebm_var *xv, *y, *gx = NULL, *hv = NULL, *v;
        ebm_graph_reset(g);
        v = ebm_tensor(g, 4, shape);
        xv = ebm_leaf(g, (float *)(uintptr_t)xk, 4, shape);
        y = ebm_model_forward(m, g, xv);
        if (ebm_grad(g, y, NULL, 1, &xv, &gx, !flat) != EBM_OK || !v) return g->err.status;
        /* v = B_k dL/dx_{k+1}: the box's derivative at this step's pre-box value */
        for (i = 0; i < n; i++) {
            float xi[256];
            for (j = 0; j < D; j += 256) {
                size_t t, len = D - j < 256 ? D - j : 256, o = (size_t)i * D + j;
                ebm__rng_normal_at(rng, first_sample + (uint64_t)i, cfg->first_step + (uint32_t)k, j, xi, len);
                for (t = 0; t < len; t++) {
                    float pre = xk[o + t] + a * (gx->data[o + t] - inv_q * xk[o + t]) + b * xi[t], d = 1.0f;
                    if (cfg->box == EBM_BOX_REFLECT) { /* as ebm__box: mirror at hi, then at lo, then clamp */
                        if (pre > cfg->hi) { pre = 2 * cfg->hi - pre; d = -d; }
                        if (pre < cfg->lo) { pre = 2 * cfg->lo - pre; d = -d; }
                    }
                    if (cfg->box != EBM_BOX_NONE && (pre < cfg->lo || pre > cfg->hi)) d = 0.0f;
                    v->data[o + t] = d * gz[o + t];
                }
            }
        }
        /* dL/dx_k = (1 - a / sigma_q^2) v + a H v, H v = grad_x (v . grad_x f) */
        if (flat) {
            for (j = 0; j < nD; j++) gz[j] = (1.0f - a * inv_q) * v->data[j];
            continue;
        }
        if (ebm_grad(g, ebm_dot(g, gx, v), NULL, 1, &xv, &hv, 0) != EBM_OK) return g->err.status;
        for (j = 0; j < nD; j++) gz[j] = (1.0f - a * inv_q) * v->data[j] + a * hv->data[j];
    }
    return EBM_OK;
}

/* The reconstruction loss on what is known of x (n images) and its gradient:
   mean squared error on the masked pixels, or on the 2x2 means. */
static double ebm__known_loss(const ebm_model *m, const float *x, int n, int kind, const float *target, const float *mask, float *grad)
{
    const int H = m->in_h, W = m->in_w, C = m->in_c;
    size_t j, nD = (size_t)n * H * W * C, cnt = 0;
    double err = 0;
    int i, y, xx, c;
    if (kind == EBM_KNOWN_PIXELS) {
        for (j = 0; j < nD; j++) cnt += !mask || mask[j] != 0;
        for (j = 0; j < nD; j++) {
            float w = mask ? mask[j] : 1.0f, e = x[j] - target[j];
            err += (double)w * e * e;
            grad[j] = (float)(2.0 * w * e / (cnt ? cnt : 1));
        }
        return err / (cnt ? cnt : 1);
    }
    cnt = nD / 4;
    for (i = 0; i < n; i++)
        for (y = 0; y + 1 < H; y += 2)
            for (xx = 0; xx + 1 < W; xx += 2)
                for (c = 0; c < C; c++) {
                    size_t o = (((size_t)i * H + y) * W + xx) * C + c, row = (size_t)W * C;
                    float e = 0.25f * (x[o] + x[o + C] + x[o + row] + x[o + row + C]) -
                              target[(((size_t)i * (H / 2) + y / 2) * (W / 2) + xx / 2) * C + c];
                    float d = (float)(0.5 * e / cnt); /* d/dx of e^2 / cnt, each pixel counting 1/4 */
                    err += (double)e * e;
                    grad[o] = grad[o + C] = grad[o + row] = grad[o + row + C] = d;
                }
    return err / cnt;
}

EBMDEF int ebm_chain_reconstruct(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng, uint64_t first_sample,
                                 int kind, const float *target, const float *mask, int n, float *z, int n_iters, int optimizer,
                                 float lr, float *x_out, double *mse)
{
    size_t D, nD, j, n_kept;
    float *st, *m1, *m2, *gk, *kept;
    double err = 0;
    int it, rc = EBM_OK;
    if (!g) return EBM_EINVAL;
    if (!m || !cfg || !target || !z || n < 1 || n_iters < 0 || !(lr >= 0) || (kind != EBM_KNOWN_PIXELS && kind != EBM_KNOWN_DOWNSAMPLE) ||
        (kind == EBM_KNOWN_DOWNSAMPLE && (m->in_h % 2 || m->in_w % 2)) || (optimizer != EBM_OPT_ADAM && optimizer != EBM_OPT_SGD))
        return ebm__gfail(g, EBM_EINVAL, "chain_reconstruct: NULL argument, n < 1, n_iters < 0, lr < 0, unknown kind or optimiser, or odd image size"),
               EBM_EINVAL;
    D = (size_t)m->in_h * m->in_w * m->in_c;
    nD = (size_t)n * D;
    st = (float *)EBM_MALLOC(((size_t)cfg->n_steps + 4) * nD * sizeof(float));
    if (!st) return ebm__gfail(g, EBM_ENOMEM, "chain_reconstruct: no memory for %d states", cfg->n_steps + 1), EBM_ENOMEM;
    m1 = st + ((size_t)cfg->n_steps + 1) * nD; m2 = m1 + nD; gk = m2 + nD;
    memset(m1, 0, 2 * nD * sizeof(float));
    n_kept = ebm_chain_kept_floats(m, cfg, n); /* without them (no memory) the backward pass recomputes them */
    kept = n_kept ? (float *)EBM_MALLOC(n_kept * sizeof(float)) : NULL;
    for (it = 0; it <= n_iters; it++) {
        if ((rc = ebm_chain_record(m, g, cfg, rng, first_sample, z, n, st, it < n_iters ? kept : NULL)) != EBM_OK) break;
        err = ebm__known_loss(m, st + (size_t)cfg->n_steps * nD, n, kind, target, mask, gk);
        if (it == n_iters) break; /* the error of the final z */
        if ((rc = ebm_chain_backward(m, g, cfg, rng, first_sample, st, kept, n, gk, gk)) != EBM_OK) break;
        if (optimizer == EBM_OPT_SGD) {
            for (j = 0; j < nD; j++) z[j] -= lr * gk[j];
        } else { /* Adam on z, PyTorch's rule */
            const float b1 = 0.9f, b2 = 0.999f;
            float c1 = 1.0f - (float)pow(b1, it + 1), c2 = 1.0f - (float)pow(b2, it + 1);
            for (j = 0; j < nD; j++) {
                m1[j] = b1 * m1[j] + (1 - b1) * gk[j];
                m2[j] = b2 * m2[j] + (1 - b2) * gk[j] * gk[j];
                z[j] -= lr / c1 * m1[j] / (sqrtf(m2[j] / c2) + 1e-8f);
            }
        }
    }
    if (rc == EBM_OK && x_out) memcpy(x_out, st + (size_t)cfg->n_steps * nD, nD * sizeof(float));
    if (mse) *mse = err;
    EBM_FREE(kept);
    EBM_FREE(st);
    return rc;
}

EBMDEF void ebm_noise_interpolate(const float *z1, const float *z2, size_t D, float rho, int spherical, float *out)
{
    size_t j;
    float a = 1.0f - rho, b = rho;
    if (spherical) { a = (float)cos(rho * EBM__PI / 2); b = (float)sin(rho * EBM__PI / 2); }
    for (j = 0; j < D; j++) out[j] = a * z1[j] + b * z2[j];
}

/* Put x (n images H x W x C) back on the images consistent with `known`. */
static void ebm__project_known(const ebm_model *m, float *x, int n, int kind, const float *known, const float *mask)
{
    const int H = m->in_h, W = m->in_w, C = m->in_c;
    size_t j, nD = (size_t)n * H * W * C;
    int i, y, xx, c;
    if (kind == EBM_KNOWN_PIXELS) {
        for (j = 0; j < nD; j++) if (mask[j] != 0) x[j] = known[j];
        return;
    }
    for (i = 0; i < n; i++)
        for (y = 0; y + 1 < H; y += 2)
            for (xx = 0; xx + 1 < W; xx += 2)
                for (c = 0; c < C; c++) {
                    float *p00 = x + (((size_t)i * H + y) * W + xx) * C + c, *p01 = p00 + C, *p10 = p00 + (size_t)W * C, *p11 = p10 + C;
                    float shift = known[(((size_t)i * (H / 2) + y / 2) * (W / 2) + xx / 2) * C + c] - 0.25f * (*p00 + *p01 + *p10 + *p11);
                    *p00 += shift; *p01 += shift; *p10 += shift; *p11 += shift;
                }
}

EBMDEF int ebm_langevin_conditional(ebm_model *m, ebm_graph *g, const ebm_langevin *cfg, const ebm_rng *rng,
                                    uint64_t first_sample, float *x, int n, int kind, const float *known, const float *mask)
{
    ebm_langevin one;
    int k, rc = EBM_OK, annealed = (kind & EBM_KNOWN_ANNEALED) != 0;
    float *z = NULL, *known_k = NULL;
    size_t j, nk = 0;
    kind &= ~EBM_KNOWN_ANNEALED;
    if (!g) return EBM_EINVAL;
    if (!m || !cfg || !x || !known || n < 1 || (kind != EBM_KNOWN_PIXELS && kind != EBM_KNOWN_DOWNSAMPLE) ||
        (kind == EBM_KNOWN_PIXELS && !mask) || (kind == EBM_KNOWN_DOWNSAMPLE && (m->in_h % 2 || m->in_w % 2)))
        return ebm__gfail(g, EBM_EINVAL, "langevin_conditional: NULL argument, unknown kind, or odd image size for downsampling"), EBM_EINVAL;
    if (annealed) { /* z: what x holds of the known part at the start */
        nk = (size_t)n * m->in_h * m->in_w * m->in_c / (kind == EBM_KNOWN_DOWNSAMPLE ? 4 : 1);
        z = (float *)EBM_MALLOC(2 * nk * sizeof(float));
        if (!z) return ebm__gfail(g, EBM_ENOMEM, "langevin_conditional: no memory for the annealed targets"), EBM_ENOMEM;
        known_k = z + nk;
        if (kind == EBM_KNOWN_DOWNSAMPLE) ebm_downsample2(x, n, m->in_h, m->in_w, m->in_c, z);
        else memcpy(z, x, nk * sizeof(float));
    } else
        ebm__project_known(m, x, n, kind, known, mask);
    one = *cfg;
    one.n_steps = 1;
    for (k = 0; k < cfg->n_steps && rc == EBM_OK; k++) {
        const float *target = known;
        one.first_step = cfg->first_step + (uint32_t)k;
        if (annealed) {
            float w = (float)(k + 1) / (float)cfg->n_steps;
            for (j = 0; j < nk; j++) known_k[j] = (1 - w) * z[j] + w * known[j];
            target = known_k;
        }
        if ((rc = ebm_langevin_run(m, g, &one, rng, first_sample, x, n, NULL)) == EBM_OK) ebm__project_known(m, x, n, kind, target, mask);
    }
    if (z) EBM_FREE(z);
    return rc;
}

EBMDEF int ebm_downsample2(const float *x, int n, int h, int w, int c, float *out)
{
    int i, y, xx, k;
    if (!x || !out || n < 0 || c < 1 || h < 2 || w < 2 || h % 2 || w % 2) return EBM_EINVAL;
    for (i = 0; i < n; i++)
        for (y = 0; y < h; y += 2)
            for (xx = 0; xx < w; xx += 2)
                for (k = 0; k < c; k++) {
                    const float *p = x + (((size_t)i * h + y) * w + xx) * c + k;
                    out[(((size_t)i * (h / 2) + y / 2) * (w / 2) + xx / 2) * c + k] = 0.25f * (p[0] + p[c] + p[(size_t)w * c] + p[(size_t)w * c + c]);
                }
    return EBM_OK;
}

EBMDEF int ebm_inpaint_mask(int kind, const ebm_rng *r, uint64_t first, int n, int h, int w, int c, float *mask)
{
    int i, y, x, k;
    float u[256];
    if (!mask || n < 0 || h < 1 || w < 1 || c < 1 || (kind == EBM_MASK_RANDOM && (!r || h * w > 256 * 1024)) ||
        kind < EBM_MASK_CENTER || kind > EBM_MASK_RANDOM)
        return EBM_EINVAL;
    for (i = 0; i < n; i++)
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++) {
                float known;
                if (kind == EBM_MASK_CENTER) known = !(y >= h / 4 && y < h / 4 + h / 2 && x >= w / 4 && x < w / 4 + w / 2);
                else if (kind == EBM_MASK_LOWER) known = y < h / 2;
                else {
                    int p = y * w + x;
                    if (p % 256 == 0) ebm_rng_uniform(r, first + (uint64_t)i, (uint32_t)(p / 256), 0.0f, 1.0f, u, 256);
                    known = u[p % 256] < 0.5f;
                }
                for (k = 0; k < c; k++) mask[(((size_t)i * h + y) * w + x) * c + k] = known;
            }
    return EBM_OK;
}

typedef struct { float s; int anomalous; } ebm__scored;
static int ebm__scored_cmp(const void *a, const void *b)
{
    float x = ((const ebm__scored *)a)->s, y = ((const ebm__scored *)b)->s;
    return (x > y) - (x < y);
}

EBMDEF double ebm_auroc(const float *normal, int n_normal, const float *anomalous, int n_anomalous)
{
    ebm__scored *v;
    int i, j, n = n_normal + n_anomalous;
    double rank_sum = 0;
    if (!normal || !anomalous || n_normal < 1 || n_anomalous < 1) return -1;
    if (!(v = (ebm__scored *)EBM_MALLOC((size_t)n * sizeof *v))) return -1;
    for (i = 0; i < n_normal; i++) { v[i].s = normal[i]; v[i].anomalous = 0; }
    for (i = 0; i < n_anomalous; i++) { v[n_normal + i].s = anomalous[i]; v[n_normal + i].anomalous = 1; }
    qsort(v, (size_t)n, sizeof *v, ebm__scored_cmp);
    /* Mann-Whitney: the anomalous scores' rank sum, ties sharing their mean rank */
    for (i = 0; i < n; i = j) {
        int a = 0;
        for (j = i; j < n && v[j].s == v[i].s; j++) a += v[j].anomalous;
        rank_sum += a * (0.5 * (i + 1 + j));
    }
    EBM_FREE(v);
    return (rank_sum - 0.5 * n_anomalous * (n_anomalous + 1.0)) / ((double)n_normal * n_anomalous);
}

/* ---------------------------------------------------------------- 6f. latent-space EBM prior */

EBMDEF void ebm_latent_config_default(ebm_latent_config *c)
{
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->batch = 64;
    c->prior_steps = 60; c->prior_step = 0.4f;
    c->post_steps = 20; c->post_step = 0.1f;
    c->sigma = 0.3f;
    c->lr_prior = 2e-5f; c->lr_gen = 1e-4f;
    c->beta1 = 0.5f; c->beta2 = 0.999f;
    c->seed = 1;
}

/* The latent model's random streams (seed = cfg.seed). */
enum { EBM__LS_PRIOR_START = 48, EBM__LS_PRIOR_CHAIN, EBM__LS_POST_START, EBM__LS_POST_CHAIN, EBM__LS_SAMPLE_START, EBM__LS_SAMPLE_CHAIN,
       EBM__LS_RECON_START, EBM__LS_RECON_CHAIN };

static int ebm__lfail(ebm_latent *L, int status, const char *fmt, ...)
{
    va_list ap;
    L->err.status = status;
    va_start(ap, fmt);
    vsnprintf(L->err.msg, sizeof L->err.msg, fmt, ap);
    va_end(ap);
    return status;
}

static int ebm__latent_check(const ebm_model *prior, const ebm_model *gen, const ebm_latent_config *c, ebm_error *err)
{
    int oh, ow, oc;
    if (!prior || !prior->params || !gen || !gen->params || !c) return ebm__fail(err, EBM_EINVAL, "latent: NULL or unallocated prior or generator, or NULL settings");
    ebm_model_out_shape(prior, &oh, &ow, &oc);
    if (oh * ow * oc != 1 || prior->in_h != 1 || prior->in_w != 1) return ebm__fail(err, EBM_EINVAL, "latent: the prior must map (nz,1,1) to one value");
    if (gen->in_h != 1 || gen->in_w != 1 || gen->in_c != prior->in_c)
        return ebm__fail(err, EBM_EINVAL, "latent: the generator's input (%d,%d,%d) is not the prior's (%d,1,1)", gen->in_c, gen->in_h, gen->in_w, prior->in_c);
    if (c->batch < 1 || c->batch > (1 << 20) || c->prior_steps < 0 || c->post_steps < 0) return ebm__fail(err, EBM_EINVAL, "latent: batch %d, K %d / %d", c->batch, c->prior_steps, c->post_steps);
    if (!ebm__finite_pos(c->prior_step) || !ebm__finite_pos(c->post_step) || !ebm__finite_pos(c->sigma) || !ebm__finite_pos(c->lr_prior) ||
        !ebm__finite_pos(c->lr_gen) || !(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1))
        return ebm__fail(err, EBM_EINVAL, "latent: steps, sigma and learning rates must be > 0, betas in [0, 1)");
    return EBM_OK;
}

static int ebm__latent_nll(ebm_latent *L, const float *x, const float *z, int n, double scale, double *nll, float *dz);
EBMDEF int ebm_latent_init(ebm_latent *L, ebm_model *prior, ebm_model *gen, const ebm_latent_config *c, ebm_error *err)
{
    size_t a = 0, b = 0, nz, bytes;
    int rc, oh, ow, oc, pass;
    if (!L) return ebm__fail(err, EBM_EINVAL, "latent_init: NULL");
    memset(L, 0, sizeof *L);
    if ((rc = ebm__latent_check(prior, gen, c, err)) != EBM_OK) return rc;
    nz = (size_t)prior->in_c;
    ebm_model_out_shape(gen, &oh, &ow, &oc);
    /* the arena: the largest of the prior's parameter gradient on two
       batches, and the likelihood's gradient in z and in beta, measured by
       running their shapes through a counting graph */
    if ((rc = ebm_model_step_bytes(prior, 2 * c->batch, EBM_STEP_PARAM_GRAD, &b, err)) != EBM_OK) return rc;
    if ((rc = ebm_graph_create(&L->graph, (size_t)16 << 20, err)) != EBM_OK) return rc;
    L->cfg = *c; L->prior = prior; L->gen = gen;
    for (pass = 0; pass < 2; pass++) {
        double nll;
        float dz1;
        ebm_graph_reset(L->graph);
        L->graph->measuring = 1;
        rc = ebm__latent_nll(L, &dz1, &dz1, c->batch, 1.0, &nll, pass ? &dz1 : NULL);
        bytes = L->graph->peak - (size_t)(ebm__aligned_base(L->graph) - L->graph->a.base) + EBM__ALIGN;
        if (bytes > a) a = bytes;
        if (rc != EBM_OK) { ebm__fail(err, rc, "latent_init: %s", L->err.msg); ebm_latent_free(L); return rc; }
    }
    ebm_graph_destroy(L->graph);
    L->graph = NULL;
    if ((rc = ebm_graph_create(&L->graph, (a > b ? a : b) + 4096, err)) != EBM_OK) return rc;
    L->z = (float *)EBM_MALLOC((4 * (size_t)c->batch * nz + 4 * (size_t)c->batch) * sizeof(float));
    if (!L->z) { ebm_latent_free(L); return ebm__fail(err, EBM_ENOMEM, "latent_init: no memory for the latents"); }
    L->dz = L->z + 2 * (size_t)c->batch * nz;
    L->f = L->dz + 2 * (size_t)c->batch * nz;
    L->w = L->f + 2 * (size_t)c->batch;
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF void ebm_latent_free(ebm_latent *L)
{
    if (!L) return;
    ebm_graph_destroy(L->graph);
    EBM_FREE(L->z);
    memset(L, 0, sizeof *L);
}

/* sum_i scale |x_i - g(z_i)|^2 / (2 sigma^2) for n <= batch latents, its
   gradient in beta added to gen->grads and, if dz, written there in z. */
static int ebm__latent_nll(ebm_latent *L, const float *x, const float *z, int n, double scale, double *nll, float *dz)
{
    ebm_graph *g = L->graph;
    const ebm_model *gen = L->gen;
    int zs[4], xs[4], oh, ow, oc;
    ebm_var *zv, *y, *loss, *gz = NULL;
    ebm_model_out_shape(gen, &oh, &ow, &oc);
    zs[0] = n; zs[1] = 1; zs[2] = 1; zs[3] = gen->in_c;
    xs[0] = n; xs[1] = oh; xs[2] = ow; xs[3] = oc;
    ebm_graph_reset(g);
    zv = ebm_leaf(g, (float *)(uintptr_t)z, 4, zs);
    y = ebm_model_forward(L->gen, g, zv);
    loss = ebm_scale(g, ebm_sqnorm(g, ebm_sub(g, y, ebm_leaf(g, (float *)(uintptr_t)x, 4, xs))),
                     (float)(scale / (2.0 * L->cfg.sigma * L->cfg.sigma)));
    if (dz) {
        if (ebm_grad(g, loss, NULL, 1, &zv, &gz, 0) != EBM_OK) return ebm__lfail(L, g->err.status, "latent: %s", g->err.msg);
        if (!g->measuring) memcpy(dz, gz->data, (size_t)n * gen->in_c * sizeof(float));
    } else if (ebm_model_backward(L->gen, g, loss) != EBM_OK)
        return ebm__lfail(L, g->err.status, "latent: %s", ebm_graph_error(g)->msg);
    if (ebm_graph_status(g) != EBM_OK) return ebm__lfail(L, g->err.status, "latent: %s", ebm_graph_error(g)->msg);
    *nll = g->measuring ? 0 : loss->data[0];
    return EBM_OK;
}

EBMDEF int ebm_latent_nll(ebm_latent *L, const float *x, const float *z, int n, double *nll, float *dz)
{
    int rc, i, nb;
    double part;
    if (!L || !L->gen) return EBM_EINVAL;
    if (!x || !z || !nll || n < 1) return ebm__lfail(L, EBM_EINVAL, "latent_nll: NULL argument or n < 1");
    ebm_model_zero_grad(L->gen);
    *nll = 0;
    for (i = 0; i < n; i += nb) { /* in batches; the parameter gradient first, then z's */
        size_t D, nz = (size_t)L->gen->in_c;
        int oh, ow, oc;
        ebm_model_out_shape(L->gen, &oh, &ow, &oc);
        D = (size_t)oh * ow * oc;
        nb = n - i < L->cfg.batch ? n - i : L->cfg.batch;
        if ((rc = ebm__latent_nll(L, x + (size_t)i * D, z + (size_t)i * nz, nb, 1.0, &part, NULL)) != EBM_OK) return rc;
        *nll += part;
        if (dz && (rc = ebm__latent_nll(L, x + (size_t)i * D, z + (size_t)i * nz, nb, 1.0, &part, dz + (size_t)i * nz)) != EBM_OK) return rc;
    }
    return EBM_OK;
}

EBMDEF int ebm_latent_prior_chain(ebm_latent *L, uint32_t stream, uint64_t first, float *z, int n, int n_steps)
{
    ebm_langevin ch;
    ebm_rng r;
    int i, rc;
    if (!L || !L->prior) return EBM_EINVAL;
    if (!z || n < 1) return ebm__lfail(L, EBM_EINVAL, "latent_prior_chain: NULL z or n < 1");
    memset(&ch, 0, sizeof ch);
    /* the eps form with a N(0, I) reference: z += (s^2/2)(grad f - z) + s xi */
    ch.form = EBM_LANGEVIN_EPS; ch.eps = L->cfg.prior_step; ch.sigma_q = 1.0f; ch.box = EBM_BOX_NONE;
    ch.n_steps = n_steps < 0 ? L->cfg.prior_steps : n_steps;
    r.seed = L->cfg.seed; r.stream = stream;
    for (i = 0; i < n; i += L->cfg.batch) { /* chunks the graph was sized for */
        int nb = n - i < L->cfg.batch ? n - i : L->cfg.batch;
        if ((rc = ebm_langevin_run(L->prior, L->graph, &ch, &r, first + (uint64_t)i, z + (size_t)i * L->prior->in_c, nb, NULL)) != EBM_OK)
            return ebm__lfail(L, rc, "latent_prior_chain: %s", ebm_graph_error(L->graph)->msg);
    }
    return EBM_OK;
}

EBMDEF int ebm_latent_posterior_chain(ebm_latent *L, uint32_t stream, uint64_t first, const float *x, float *z, int n, int n_steps)
{
    const size_t nz = L && L->prior ? (size_t)L->prior->in_c : 0;
    const float s = L ? L->cfg.post_step : 0, a = 0.5f * s * s;
    ebm_rng r;
    int i, k, K, rc, oh, ow, oc;
    size_t D, j;
    if (!L || !L->prior) return EBM_EINVAL;
    if (!x || !z || n < 1) return ebm__lfail(L, EBM_EINVAL, "latent_posterior_chain: NULL x or z, or n < 1");
    ebm_model_out_shape(L->gen, &oh, &ow, &oc);
    D = (size_t)oh * ow * oc;
    K = n_steps < 0 ? L->cfg.post_steps : n_steps;
    r.seed = L->cfg.seed; r.stream = stream;
    for (i = 0; i < n; i += L->cfg.batch) {
        const int nb = n - i < L->cfg.batch ? n - i : L->cfg.batch;
        float *zi = z + (size_t)i * nz, *gp = L->dz, *gl = L->dz + (size_t)nb * nz;
        for (k = 0; k < K; k++) {
            double nll;
            /* drift = grad f - z - grad_z |x - g(z)|^2 / (2 sigma^2) */
            if ((rc = ebm_model_score(L->prior, L->graph, zi, nb, L->f, gp)) != EBM_OK)
                return ebm__lfail(L, rc, "latent_posterior_chain: %s", ebm_graph_error(L->graph)->msg);
            if ((rc = ebm__latent_nll(L, x + (size_t)i * D, zi, nb, 1.0, &nll, gl)) != EBM_OK) return rc;
            for (j = 0; j < (size_t)nb; j++) {
                float xi[256];
                size_t c0;
                for (c0 = 0; c0 < nz; c0 += 256) {
                    size_t q, len = nz - c0 < 256 ? nz - c0 : 256, o = j * nz + c0;
                    ebm__rng_normal_at(&r, first + (uint64_t)i + j, (uint32_t)k, c0, xi, len);
                    for (q = 0; q < len; q++) zi[o + q] += a * (gp[o + q] - zi[o + q] - gl[o + q]) + s * xi[q];
                }
            }
        }
    }
    return EBM_OK;
}

EBMDEF int ebm_latent_generate(ebm_latent *L, const float *z, int n, float *x)
{
    int i, zs[4];
    size_t D;
    if (!L || !L->gen) return EBM_EINVAL;
    if (!z || !x || n < 1) return ebm__lfail(L, EBM_EINVAL, "latent_generate: NULL z or x, or n < 1");
    {
        int oh, ow, oc;
        ebm_model_out_shape(L->gen, &oh, &ow, &oc);
        D = (size_t)oh * ow * oc;
    }
    for (i = 0; i < n; i += L->cfg.batch) {
        int nb = n - i < L->cfg.batch ? n - i : L->cfg.batch;
        ebm_var *y;
        ebm_graph_reset(L->graph);
        zs[0] = nb; zs[1] = 1; zs[2] = 1; zs[3] = L->gen->in_c;
        y = ebm_model_forward(L->gen, L->graph, ebm_leaf(L->graph, (float *)(uintptr_t)(z + (size_t)i * L->gen->in_c), 4, zs));
        if (!y || !y->data) return ebm__lfail(L, ebm_graph_status(L->graph), "latent_generate: %s", ebm_graph_error(L->graph)->msg);
        memcpy(x + (size_t)i * D, y->data, (size_t)nb * D * sizeof(float));
    }
    return EBM_OK;
}

/* z_i ~ N(0, I) for samples first.. of `stream`. */
static void ebm__latent_noise(const ebm_latent *L, uint32_t stream, uint64_t first, float *z, int n)
{
    ebm_rng r;
    r.seed = L->cfg.seed; r.stream = stream;
    ebm_chain_start(EBM_START_GAUSSIAN, &r, first, 0, 0, 0, z, n, (size_t)L->prior->in_c);
}

EBMDEF int ebm_latent_sample(ebm_latent *L, uint64_t first, float *x, int n, float *z)
{
    float *zz;
    int rc;
    if (!L || !L->prior) return EBM_EINVAL;
    if (!x || n < 1) return ebm__lfail(L, EBM_EINVAL, "latent_sample: NULL x or n < 1");
    zz = z ? z : (float *)EBM_MALLOC((size_t)n * L->prior->in_c * sizeof(float));
    if (!zz) return ebm__lfail(L, EBM_ENOMEM, "latent_sample: no memory for %d latents", n);
    ebm__latent_noise(L, EBM__LS_SAMPLE_START, first, zz, n);
    rc = ebm_latent_prior_chain(L, EBM__LS_SAMPLE_CHAIN, first, zz, n, -1);
    if (rc == EBM_OK) rc = ebm_latent_generate(L, zz, n, x);
    if (!z) EBM_FREE(zz);
    return rc;
}

EBMDEF int ebm_latent_reconstruct(ebm_latent *L, uint64_t first, const float *x, float *xr, int n)
{
    float *z;
    int rc;
    if (!L || !L->prior) return EBM_EINVAL;
    if (!x || !xr || n < 1) return ebm__lfail(L, EBM_EINVAL, "latent_reconstruct: NULL x or xr, or n < 1");
    z = (float *)EBM_MALLOC((size_t)n * L->prior->in_c * sizeof(float));
    if (!z) return ebm__lfail(L, EBM_ENOMEM, "latent_reconstruct: no memory for %d latents", n);
    ebm__latent_noise(L, EBM__LS_RECON_START, first, z, n);
    rc = ebm_latent_posterior_chain(L, EBM__LS_RECON_CHAIN, first, x, z, n, -1);
    if (rc == EBM_OK) rc = ebm_latent_generate(L, z, n, xr);
    EBM_FREE(z);
    return rc;
}

EBMDEF int ebm_latent_step(ebm_latent *L, const float *x)
{
    const ebm_latent_config *c;
    ebm_graph *g;
    size_t nz, Bz;
    int B, i, shape[4], ws[4], rc;
    double nll, fp = 0, fn = 0;
    float *zneg, *zpos;
    ebm_var *y;
    if (!L || !L->prior) return EBM_EINVAL;
    if (!x) return ebm__lfail(L, EBM_EINVAL, "latent_step: NULL data batch");
    c = &L->cfg; g = L->graph; B = c->batch;
    nz = (size_t)L->prior->in_c; Bz = (size_t)B * nz;
    zneg = L->z; zpos = L->z + Bz;
    {   /* 1. z- from the prior, z+ from the posterior of x: short-run chains from N(0, I) */
        const uint64_t first = (uint64_t)L->iter * (uint64_t)B;
        ebm__latent_noise(L, EBM__LS_PRIOR_START, first, zneg, B);
        ebm__latent_noise(L, EBM__LS_POST_START, first, zpos, B);
        if ((rc = ebm_latent_prior_chain(L, EBM__LS_PRIOR_CHAIN, first, zneg, B, -1)) != EBM_OK) return rc;
        if ((rc = ebm_latent_posterior_chain(L, EBM__LS_POST_CHAIN, first, x, zpos, B, -1)) != EBM_OK) return rc;
        if (!ebm__all_finite(L->z, 2 * Bz)) return ebm__lfail(L, EBM_EDIVERGED, "latent: diverged at iteration %ld: non-finite latents", L->iter);
    }
    /* 2. alpha: grad of mean f(z-) - mean f(z+), one pass on [z-; z+] */
    ebm_model_zero_grad(L->prior);
    ebm_graph_reset(g);
    shape[0] = 2 * B; shape[1] = 1; shape[2] = 1; shape[3] = (int)nz;
    ws[0] = 2 * B; ws[1] = ws[2] = ws[3] = 1;
    y = ebm_model_forward(L->prior, g, ebm_leaf(g, L->z, 4, shape));
    if (!y || !y->data) return ebm__lfail(L, ebm_graph_status(g), "latent_step: %s", ebm_graph_error(g)->msg);
    for (i = 0; i < 2 * B; i++) L->w[i] = (i < B ? 1.0f : -1.0f) / (float)B;
    if (ebm_model_backward(L->prior, g, ebm_dot(g, y, ebm_leaf(g, L->w, 4, ws))) != EBM_OK)
        return ebm__lfail(L, ebm_graph_status(g), "latent_step: %s", ebm_graph_error(g)->msg);
    for (i = 0; i < B; i++) { fn += y->data[i]; fp += y->data[B + i]; }
    /* 3. beta: grad of mean |x - g(z+)|^2 / (2 sigma^2) */
    ebm_model_zero_grad(L->gen);
    if ((rc = ebm__latent_nll(L, x, zpos, B, 1.0 / B, &nll, NULL)) != EBM_OK) return rc;
    if (!(fp == fp) || !(fn == fn) || !(nll == nll) || !ebm__all_finite(L->prior->grads, L->prior->n_params) ||
        !ebm__all_finite(L->gen->grads, L->gen->n_params))
        return ebm__lfail(L, EBM_EDIVERGED, "latent: diverged at iteration %ld: non-finite energies, loss or gradients", L->iter);
    if (ebm_adam_step(L->prior, c->lr_prior, c->beta1, c->beta2, 1e-8f, L->iter + 1) != EBM_OK ||
        ebm_adam_step(L->gen, c->lr_gen, c->beta1, c->beta2, 1e-8f, L->iter + 1) != EBM_OK)
        return ebm__lfail(L, EBM_EINVAL, "latent_step: Adam failed");
    L->f_pos = fp / B; L->f_neg = fn / B; L->d_t = L->f_pos - L->f_neg;
    {
        int oh, ow, oc;
        ebm_model_out_shape(L->gen, &oh, &ow, &oc);
        L->mse = nll * 2.0 * c->sigma * c->sigma / ((double)oh * ow * oc);
    }
    L->iter++;
    L->err.status = EBM_OK;
    return EBM_OK;
}

/* ---------------------------------------------------------------- 7. file formats */

/* n bytes to a sink, unless an earlier write failed (*bad). */
static void ebm__put(ebm_write_fn fn, void *user, const void *p, size_t n, int *bad)
{
    if (!*bad && n && fn(user, p, n) != 0) *bad = 1;
}

/* NPY v1.0: magic, a little-endian header length, a Python dict padded with
   spaces to a multiple of 64 bytes, then the raw little-endian data. */
EBMDEF int ebm_npy_write(ebm_write_fn fn, void *user, const float *data, int ndim, const int *shape, ebm_error *err)
{
    char hdr[10 + 256 + 64], dims[128];
    size_t len = 0, n = 1, i, pad;
    int d, bad = 0;
    uint16_t one = 1;
    if (!fn || !data || !shape || ndim < 1 || ndim > 4) return ebm__fail(err, EBM_EINVAL, "npy_write: bad arguments");
    dims[0] = 0;
    for (d = 0; d < ndim; d++) {
        if (shape[d] < 0) return ebm__fail(err, EBM_EINVAL, "npy_write: negative dimension");
        /* Python's tuple syntax: "(6,)" for one dimension, "(1, 2, 3)" for more */
        len += (size_t)snprintf(dims + len, sizeof dims - len, "%d%s", shape[d], d + 1 < ndim ? ", " : ndim == 1 ? "," : "");
        n *= (size_t)shape[d];
    }
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    len = (size_t)snprintf(hdr + 10, 256, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", dims);
    pad = 64 - (10 + len + 1) % 64;
    hdr[8] = (char)((len + pad + 1) & 0xff);
    hdr[9] = (char)((len + pad + 1) >> 8);
    for (i = 0; i < pad; i++) hdr[10 + len + i] = ' ';
    hdr[10 + len + pad] = '\n';
    ebm__put(fn, user, hdr, 10 + len + pad + 1, &bad);
    if (*(unsigned char *)&one == 1) ebm__put(fn, user, data, n * sizeof(float), &bad);
    else
        for (i = 0; i < n; i++) { /* big-endian host: write bytes reversed */
            unsigned char b[4], r[4];
            memcpy(b, data + i, 4);
            r[0] = b[3]; r[1] = b[2]; r[2] = b[1]; r[3] = b[0];
            ebm__put(fn, user, r, 4, &bad);
        }
    if (bad) return ebm__fail(err, EBM_EIO, "npy_write: the write function failed");
    ebm__ok(err);
    return EBM_OK;
}

#ifndef EBM_NO_STDIO
/* The sink of the file writers: fwrite. */
static int ebm__file_put(void *f, const void *p, size_t n) { return fwrite(p, 1, n, (FILE *)f) == n ? 0 : -1; }

EBMDEF int ebm_npy_save(const char *path, const float *data, int ndim, const int *shape, ebm_error *err)
{
    FILE *f;
    int rc;
    if (!path || !data || !shape || ndim < 1 || ndim > 4) return ebm__fail(err, EBM_EINVAL, "npy_save: bad arguments");
    f = fopen(path, "wb");
    if (!f) return ebm__fail(err, EBM_EIO, "npy_save: cannot open %s for writing", path);
    rc = ebm_npy_write(ebm__file_put, f, data, ndim, shape, err);
    if ((ferror(f) | fclose(f)) || rc != EBM_OK) return ebm__fail(err, EBM_EIO, "npy_save: write to %s failed", path);
    return EBM_OK;
}
#endif

/* --- checksums: CRC-32 (gzip, PNG, checkpoints) and Adler-32 (zlib) --- */

static uint32_t ebm__crc32(uint32_t crc, const unsigned char *p, size_t n)
{
    /* four bits at a time from a constant table: no global state to build */
    static const uint32_t t[16] = { 0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
                                    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
                                    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu };
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        crc = t[crc & 15] ^ (crc >> 4);
        crc = t[crc & 15] ^ (crc >> 4);
    }
    return ~crc;
}

static uint32_t ebm__adler32(uint32_t a, const unsigned char *p, size_t n)
{
    uint32_t s1 = a & 0xffff, s2 = a >> 16;
    while (n) {
        size_t blk = n < 5552 ? n : 5552, i; /* 5552: the most bytes before s2 can overflow */
        for (i = 0; i < blk; i++) { s1 += p[i]; s2 += s1; }
        s1 %= 65521; s2 %= 65521;
        p += blk; n -= blk;
    }
    return (s2 << 16) | s1;
}

static uint32_t ebm__be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint32_t ebm__le32(const unsigned char *p) { return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]; }

#ifndef EBM_NO_STDIO
/* Read a whole file into memory, refusing one larger than cap bytes. */
static int ebm__read_file(const char *path, size_t cap, unsigned char **out, size_t *len, ebm_error *err)
{
    FILE *f;
    long sz;
    unsigned char *buf;
    *out = NULL; *len = 0;
    if (!path) return ebm__fail(err, EBM_EINVAL, "NULL path");
    f = fopen(path, "rb");
    if (!f) return ebm__fail(err, EBM_EIO, "cannot open %s", path);
    if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return ebm__fail(err, EBM_EIO, "cannot size %s", path);
    }
    if ((unsigned long)sz > cap) {
        fclose(f);
        return ebm__fail(err, EBM_EFORMAT, "%s: %ld bytes is more than the %lu this reader accepts", path, sz, (unsigned long)cap);
    }
    buf = (unsigned char *)EBM_MALLOC(sz ? (size_t)sz : 1);
    if (!buf) { fclose(f); return ebm__fail(err, EBM_ENOMEM, "%s: no memory for %ld bytes", path, sz); }
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f); EBM_FREE(buf);
        return ebm__fail(err, EBM_EIO, "%s: read failed", path);
    }
    fclose(f);
    *out = buf; *len = (size_t)sz;
    return EBM_OK;
}
#endif

/* --- inflate (RFC 1951) and gzip (RFC 1952) ---
   A small decoder written for bounded memory: it writes into a buffer of a
   capacity the caller fixed from a header, and a stream that would write
   past it is an error (or, with stop_when_full, a clean early stop, used to
   read just a header). Huffman codes are decoded 9 bits at a time through a
   table, longer codes bit by bit in canonical order. */

#define EBM__FAST_BITS 9
typedef struct {
    uint16_t fast[1 << EBM__FAST_BITS]; /* (length << 9 | symbol), 0 = not in the table */
    uint16_t count[16];                 /* codes of each length */
    uint16_t symbol[288];               /* symbols ordered by (length, value) */
} ebm__huff;

typedef struct {
    const unsigned char *src;
    size_t len, pos;
    uint32_t bitbuf;
    int bitcnt;
    unsigned char *dst;
    size_t cap, out;
    int bad; /* the input ended early or held an invalid code */
} ebm__inflater;

static uint32_t ebm__bits(ebm__inflater *s, int n)
{
    uint32_t v;
    while (s->bitcnt < n) {
        if (s->pos >= s->len) { s->bad = 1; return 0; }
        s->bitbuf |= (uint32_t)s->src[s->pos++] << s->bitcnt;
        s->bitcnt += 8;
    }
    v = s->bitbuf & ((1u << n) - 1u);
    s->bitbuf >>= n;
    s->bitcnt -= n;
    return v;
}

/* Build a canonical code from lengths; an over-subscribed set is an error. */
static int ebm__huff_build(ebm__huff *h, const unsigned char *lens, int n)
{
    uint16_t offs[16], next[16];
    int i, len, left = 1;
    uint32_t code = 0;
    memset(h->count, 0, sizeof h->count);
    memset(h->fast, 0, sizeof h->fast);
    for (i = 0; i < n; i++) h->count[lens[i]]++;
    h->count[0] = 0;
    for (len = 1; len < 16; len++) {
        left = (left << 1) - h->count[len];
        if (left < 0) return -1;
    }
    offs[1] = 0;
    for (len = 1; len < 15; len++) offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    /* next[len]: the first code of each length, by the canonical rule */
    code = 0;
    for (len = 1; len < 16; len++) { next[len] = (uint16_t)code; code = (code + h->count[len]) << 1; }
    for (i = 0; i < n; i++) {
        int l = lens[i];
        if (!l) continue;
        h->symbol[offs[l]++] = (uint16_t)i;
        if (l <= EBM__FAST_BITS) {
            uint32_t c = next[l], rev = 0;
            int b;
            for (b = 0; b < l; b++) rev |= ((c >> b) & 1u) << (l - 1 - b); /* codes are sent MSB first */
            for (; rev < (1u << EBM__FAST_BITS); rev += 1u << l) h->fast[rev] = (uint16_t)(l << 9 | i);
        }
        next[l]++;
    }
    return 0;
}

static int ebm__huff_decode(ebm__inflater *s, const ebm__huff *h)
{
    uint32_t code = 0, first = 0, index = 0;
    int len;
    while (s->bitcnt < 16 && s->pos < s->len) { s->bitbuf |= (uint32_t)s->src[s->pos++] << s->bitcnt; s->bitcnt += 8; }
    {
        uint16_t e = h->fast[s->bitbuf & ((1u << EBM__FAST_BITS) - 1u)];
        if (e && (e >> 9) <= s->bitcnt) {
            s->bitbuf >>= e >> 9;
            s->bitcnt -= e >> 9;
            return e & 511;
        }
    }
    for (len = 1; len < 16; len++) { /* canonical decode: codes of each length are consecutive */
        code |= ebm__bits(s, 1);
        if (s->bad) return -1;
        if (code < first + h->count[len]) return h->symbol[index + (code - first)];
        index += h->count[len];
        first = (first + h->count[len]) << 1;
        code <<= 1;
    }
    s->bad = 1;
    return -1;
}

static const uint16_t ebm__len_base[29] = { 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258 };
static const unsigned char ebm__len_extra[29] = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 };
static const uint16_t ebm__dist_base[30] = { 1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                                             2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577 };
static const unsigned char ebm__dist_extra[30] = { 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13 };

/* Returns 0 on success, 1 when stop_when_full stopped at a full buffer, -1
   on a malformed stream, -2 when the stream holds more than cap bytes. */
static int ebm__inflate(ebm__inflater *s, int stop_when_full)
{
    int last;
    do {
        int type;
        last = (int)ebm__bits(s, 1);
        type = (int)ebm__bits(s, 2);
        if (s->bad) return -1;
        if (type == 0) { /* stored: byte-aligned LEN, ~LEN, then LEN raw bytes */
            uint32_t n, nn;
            s->bitbuf >>= s->bitcnt & 7; s->bitcnt -= s->bitcnt & 7;
            n = ebm__bits(s, 16); nn = ebm__bits(s, 16);
            if (s->bad || n != (~nn & 0xffffu)) return -1;
            while (n && s->bitcnt) { /* bytes already in the bit buffer */
                if (s->out >= s->cap) return stop_when_full ? 1 : -2;
                s->dst[s->out++] = (unsigned char)ebm__bits(s, 8);
                n--;
            }
            if (n > s->len - s->pos) return -1;
            if (n > s->cap - s->out) {
                if (!stop_when_full) return -2;
                memcpy(s->dst + s->out, s->src + s->pos, s->cap - s->out);
                s->out = s->cap;
                return 1;
            }
            memcpy(s->dst + s->out, s->src + s->pos, n);
            s->out += n; s->pos += n;
        } else if (type == 1 || type == 2) {
            ebm__huff lit, dist;
            unsigned char lens[320];
            int i, nlit = 288, ndist = 30;
            if (type == 1) { /* the fixed code of RFC 1951 3.2.6 */
                for (i = 0; i < 144; i++) lens[i] = 8;
                for (; i < 256; i++) lens[i] = 9;
                for (; i < 280; i++) lens[i] = 7;
                for (; i < 288; i++) lens[i] = 8;
                for (i = 0; i < 30; i++) lens[288 + i] = 5;
            } else { /* dynamic: the code lengths are themselves Huffman-coded */
                static const unsigned char order[19] = { 16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15 };
                unsigned char cl[19];
                ebm__huff clh;
                int ncl;
                nlit = (int)ebm__bits(s, 5) + 257; ndist = (int)ebm__bits(s, 5) + 1; ncl = (int)ebm__bits(s, 4) + 4;
                if (s->bad || nlit > 286 || ndist > 30) return -1;
                memset(cl, 0, sizeof cl);
                for (i = 0; i < ncl; i++) cl[order[i]] = (unsigned char)ebm__bits(s, 3);
                if (s->bad || ebm__huff_build(&clh, cl, 19) != 0) return -1;
                for (i = 0; i < nlit + ndist;) {
                    int sym = ebm__huff_decode(s, &clh), rep, val = 0;
                    if (sym < 0) return -1;
                    if (sym < 16) { lens[i++] = (unsigned char)sym; continue; }
                    if (sym == 16) { if (i == 0) return -1; val = lens[i - 1]; rep = 3 + (int)ebm__bits(s, 2); }
                    else if (sym == 17) rep = 3 + (int)ebm__bits(s, 3);
                    else rep = 11 + (int)ebm__bits(s, 7);
                    if (s->bad || i + rep > nlit + ndist) return -1;
                    while (rep--) lens[i++] = (unsigned char)val;
                }
                if (lens[256] == 0) return -1; /* no end-of-block code */
                memmove(lens + 288, lens + nlit, (size_t)ndist);
                for (i = nlit; i < 288; i++) lens[i] = 0;
                for (i = 288 + ndist; i < 318; i++) lens[i] = 0;
            }
            if (ebm__huff_build(&lit, lens, 288) != 0 || ebm__huff_build(&dist, lens + 288, 30) != 0) return -1;
            for (;;) {
                int sym = ebm__huff_decode(s, &lit);
                if (sym < 0) return -1;
                if (sym < 256) {
                    if (s->out >= s->cap) return stop_when_full ? 1 : -2;
                    s->dst[s->out++] = (unsigned char)sym;
                } else if (sym == 256) {
                    break;
                } else {
                    size_t n, d, k;
                    int ds;
                    sym -= 257;
                    if (sym >= 29) return -1;
                    n = ebm__len_base[sym] + ebm__bits(s, ebm__len_extra[sym]);
                    ds = ebm__huff_decode(s, &dist);
                    if (ds < 0 || ds >= 30) return -1;
                    d = ebm__dist_base[ds] + ebm__bits(s, ebm__dist_extra[ds]);
                    if (s->bad || d > s->out) return -1;
                    if (n > s->cap - s->out) {
                        if (!stop_when_full) return -2;
                        n = s->cap - s->out;
                        for (k = 0; k < n; k++, s->out++) s->dst[s->out] = s->dst[s->out - d];
                        return 1;
                    }
                    for (k = 0; k < n; k++, s->out++) s->dst[s->out] = s->dst[s->out - d]; /* may overlap: byte by byte */
                }
            }
        } else return -1;
        if (s->bad) return -1;
    } while (!last);
    return 0;
}

/* Decode a file's bytes into dst[cap]: gzip (magic 1f 8b) or raw. *out_len
   receives the length written. With stop_when_full, a stream longer than cap
   is cut at cap without error (to read a header); without it, the whole
   stream must fit, and gzip's CRC-32 and length are checked. */
static int ebm__decode(const char *what, const unsigned char *src, size_t len, unsigned char *dst, size_t cap,
                       int stop_when_full, size_t *out_len, ebm_error *err)
{
    ebm__inflater s;
    size_t p = 10;
    int flags, rc;
    *out_len = 0;
    if (len < 2 || src[0] != 0x1f || src[1] != 0x8b) { /* raw */
        size_t n = len < cap ? len : cap;
        if (len > cap && !stop_when_full) return ebm__fail(err, EBM_EFORMAT, "%s: %lu bytes, more than the %lu its header declares", what, (unsigned long)len, (unsigned long)cap);
        memcpy(dst, src, n);
        *out_len = n;
        return EBM_OK;
    }
    if (len < 18 || src[2] != 8) return ebm__fail(err, EBM_EFORMAT, "%s: not a deflate gzip stream", what);
    flags = src[3];
    if (flags & 0xe0) return ebm__fail(err, EBM_EFORMAT, "%s: reserved gzip flags set", what);
    if (flags & 4) { /* FEXTRA */
        size_t xl;
        if (p + 2 > len) return ebm__fail(err, EBM_EFORMAT, "%s: truncated gzip header", what);
        xl = (size_t)src[p] | (size_t)src[p + 1] << 8;
        p += 2 + xl;
    }
    if (flags & 8) { while (p < len && src[p]) p++; p++; }  /* FNAME */
    if (flags & 16) { while (p < len && src[p]) p++; p++; } /* FCOMMENT */
    if (flags & 2) p += 2;                                  /* FHCRC */
    if (p + 8 > len) return ebm__fail(err, EBM_EFORMAT, "%s: truncated gzip header", what);
    memset(&s, 0, sizeof s);
    s.src = src + p; s.len = len - 8 - p; /* the 8-byte trailer is not deflate data */
    s.dst = dst; s.cap = cap;
    rc = ebm__inflate(&s, stop_when_full);
    *out_len = s.out;
    if (rc == 1) return EBM_OK;
    if (rc == -2) return ebm__fail(err, EBM_EFORMAT, "%s: decompresses to more than the %lu bytes its header declares", what, (unsigned long)cap);
    if (rc < 0) return ebm__fail(err, EBM_EFORMAT, "%s: corrupt or truncated deflate data", what);
    {
        const unsigned char *t = src + p + s.pos;
        /* trailing bytes after the deflate stream: the trailer must follow the used part */
        if ((size_t)(t - src) + 8 > len) return ebm__fail(err, EBM_EFORMAT, "%s: truncated gzip trailer", what);
        if (ebm__le32(t) != ebm__crc32(0, dst, s.out)) return ebm__fail(err, EBM_EFORMAT, "%s: gzip CRC-32 mismatch", what);
        if (ebm__le32(t + 4) != (uint32_t)s.out) return ebm__fail(err, EBM_EFORMAT, "%s: gzip length mismatch", what);
    }
    return EBM_OK;
}

/* --- data sets: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary --- */

EBMDEF void ebm_dataset_free(ebm_dataset *ds)
{
    if (!ds) return;
    EBM_FREE(ds->pixels);
    EBM_FREE(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* One IDX file of unsigned bytes in memory, raw or gzip: magic 00 00 08
   ndim, ndim big-endian dimensions, then the data. The dimensions fix the
   size, checked against EBM_DATA_MAX_BYTES before anything is allocated;
   the data, without the header, in *data. */
static int ebm__idx_parse(const char *path, const unsigned char *file, size_t flen, int want_ndim, int dims[3], unsigned char **data,
                          size_t *n_bytes, ebm_error *err)
{
    unsigned char hdr[16], *buf;
    size_t got = 0, total = 1;
    int i, rc;
    *data = NULL;
    if (!file) return ebm__fail(err, EBM_EINVAL, "%s: NULL buffer", path);
    if (flen > EBM_DATA_MAX_BYTES) return ebm__fail(err, EBM_EFORMAT, "%s: %lu bytes is more than this reader accepts", path, (unsigned long)flen);
    if ((rc = ebm__decode(path, file, flen, hdr, (size_t)(4 + 4 * want_ndim), 1, &got, err)) != EBM_OK) return rc;
    if (got < 4 || hdr[0] || hdr[1] || hdr[2] != 8 || hdr[3] != want_ndim)
        return ebm__fail(err, EBM_EFORMAT, "%s: not an IDX file of unsigned bytes with %d dimensions", path, want_ndim);
    if (got < (size_t)(4 + 4 * want_ndim)) return ebm__fail(err, EBM_EFORMAT, "%s: truncated IDX header", path);
    for (i = 0; i < want_ndim; i++) {
        uint32_t d = ebm__be32(hdr + 4 + 4 * i);
        if (d < 1 || d > (1u << 24) || total * d > EBM_DATA_MAX_BYTES)
            return ebm__fail(err, EBM_EFORMAT, "%s: dimension %d is %lu (too large or zero)", path, i, (unsigned long)d);
        dims[i] = (int)d;
        total *= d;
    }
    total += (size_t)(4 + 4 * want_ndim);
    buf = (unsigned char *)EBM_MALLOC(total);
    if (!buf) return ebm__fail(err, EBM_ENOMEM, "%s: no memory for %lu bytes", path, (unsigned long)total);
    rc = ebm__decode(path, file, flen, buf, total, 0, &got, err);
    if (rc == EBM_OK && got != total) rc = ebm__fail(err, EBM_EFORMAT, "%s: truncated: %lu of %lu bytes", path, (unsigned long)got, (unsigned long)total);
    if (rc != EBM_OK) { EBM_FREE(buf); return rc; }
    memmove(buf, buf + 4 + 4 * want_ndim, total - (size_t)(4 + 4 * want_ndim));
    *data = buf;
    *n_bytes = total - (size_t)(4 + 4 * want_ndim);
    return EBM_OK;
}

/* The data set from parsed images and labels (lab may be NULL), which it
   takes over: on an error both are freed. */
static int ebm__idx_assemble(ebm_dataset *ds, unsigned char *pixels, const int dims[3], unsigned char *lab, const int ldims[3],
                             const char *labels_name, ebm_error *err)
{
    size_t i;
    ds->pixels = pixels;
    ds->n = dims[0]; ds->h = dims[1]; ds->w = dims[2]; ds->c = 1;
    if (lab) {
        if (ldims[0] != ds->n) {
            EBM_FREE(lab); ebm_dataset_free(ds);
            return ebm__fail(err, EBM_EFORMAT, "%s: %d labels for %d images", labels_name, ldims[0], dims[0]);
        }
        ds->labels = (int *)EBM_MALLOC((size_t)ds->n * sizeof(int));
        if (!ds->labels) { EBM_FREE(lab); ebm_dataset_free(ds); return ebm__fail(err, EBM_ENOMEM, "idx: no memory for labels"); }
        for (i = 0; i < (size_t)ds->n; i++) {
            if (lab[i] > 9) {
                int bad = lab[i];
                EBM_FREE(lab); ebm_dataset_free(ds);
                return ebm__fail(err, EBM_EFORMAT, "%s: label %d of image %lu is not a class 0..9", labels_name, bad, (unsigned long)i);
            }
            ds->labels[i] = lab[i];
        }
        ds->n_classes = 10;
        EBM_FREE(lab);
    }
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF int ebm_idx_read(ebm_dataset *ds, const void *images, size_t images_len, const void *labels, size_t labels_len, ebm_error *err)
{
    int dims[3] = { 0, 0, 0 }, ldims[3] = { 0, 0, 0 }, rc;
    size_t nb;
    unsigned char *pix = NULL, *lab = NULL;
    if (!ds) return ebm__fail(err, EBM_EINVAL, "idx_read: NULL data set");
    memset(ds, 0, sizeof *ds);
    if ((rc = ebm__idx_parse("images", (const unsigned char *)images, images_len, 3, dims, &pix, &nb, err)) != EBM_OK) return rc;
    if (labels && (rc = ebm__idx_parse("labels", (const unsigned char *)labels, labels_len, 1, ldims, &lab, &nb, err)) != EBM_OK) {
        EBM_FREE(pix);
        return rc;
    }
    return ebm__idx_assemble(ds, pix, dims, lab, ldims, "labels", err);
}

#ifndef EBM_NO_STDIO
static int ebm__idx_file(const char *path, int want_ndim, int dims[3], unsigned char **data, size_t *n_bytes, ebm_error *err)
{
    unsigned char *file = NULL;
    size_t flen = 0;
    int rc;
    *data = NULL;
    if ((rc = ebm__read_file(path, EBM_DATA_MAX_BYTES, &file, &flen, err)) != EBM_OK) return rc;
    rc = ebm__idx_parse(path, file, flen, want_ndim, dims, data, n_bytes, err);
    EBM_FREE(file);
    return rc;
}

EBMDEF int ebm_idx_load(ebm_dataset *ds, const char *images_path, const char *labels_path, ebm_error *err)
{
    int dims[3] = { 0, 0, 0 }, ldims[3] = { 0, 0, 0 }, rc;
    size_t nb;
    unsigned char *pix = NULL, *lab = NULL;
    if (!ds) return ebm__fail(err, EBM_EINVAL, "idx_load: NULL data set");
    memset(ds, 0, sizeof *ds);
    if ((rc = ebm__idx_file(images_path, 3, dims, &pix, &nb, err)) != EBM_OK) return rc;
    if (labels_path && (rc = ebm__idx_file(labels_path, 1, ldims, &lab, &nb, err)) != EBM_OK) { EBM_FREE(pix); return rc; }
    return ebm__idx_assemble(ds, pix, dims, lab, ldims, labels_path, err);
}

EBMDEF int ebm_mnist_load(ebm_dataset *ds, const char *dir, int test, ebm_error *err)
{
    static const char *const names[2][2] = { { "train-images-idx3-ubyte", "train-labels-idx1-ubyte" },
                                             { "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" } };
    char img[1024], lab[1024];
    FILE *f;
    if (!dir) dir = EBM_FASHION_MNIST_DIR;
    /* the .gz name if it exists, else the raw one */
    snprintf(img, sizeof img, "%s/%s.gz", dir, names[test != 0][0]);
    snprintf(lab, sizeof lab, "%s/%s.gz", dir, names[test != 0][1]);
    if ((f = fopen(img, "rb")) != NULL) fclose(f);
    else { snprintf(img, sizeof img, "%s/%s", dir, names[test != 0][0]); snprintf(lab, sizeof lab, "%s/%s", dir, names[test != 0][1]); }
    if ((f = fopen(lab, "rb")) != NULL) fclose(f);
    else if (lab[strlen(lab) - 1] == 'z' && lab[strlen(lab) - 2] == 'g') lab[strlen(lab) - 3] = 0;
    return ebm_idx_load(ds, img, lab, err);
}

#endif /* EBM_NO_STDIO */

/* CIFAR-10 binary: records of one label byte and 3072 pixel bytes (the red,
   green and blue 32x32 planes), stored here channels-last. The sizes of all
   files come first, so memory is allocated once and bounded. */
#define EBM__CIFAR_REC (1 + 3072)
static int ebm__cifar_size(const char *name, size_t bytes, size_t *total, ebm_error *err)
{
    if (bytes == 0 || bytes % EBM__CIFAR_REC != 0)
        return ebm__fail(err, EBM_EFORMAT, "%s: %lu bytes is not a whole number of 3073-byte CIFAR-10 records", name, (unsigned long)bytes);
    *total += bytes / EBM__CIFAR_REC;
    if (*total * 3072 > EBM_DATA_MAX_BYTES) return ebm__fail(err, EBM_EFORMAT, "cifar10: more than %lu bytes of images", (unsigned long)EBM_DATA_MAX_BYTES);
    return EBM_OK;
}

static int ebm__cifar_alloc(ebm_dataset *ds, size_t total, ebm_error *err)
{
    ds->pixels = (unsigned char *)EBM_MALLOC(total * 3072);
    ds->labels = (int *)EBM_MALLOC(total * sizeof(int));
    if (!ds->pixels || !ds->labels) { ebm_dataset_free(ds); return ebm__fail(err, EBM_ENOMEM, "cifar10: no memory for %lu images", (unsigned long)total); }
    ds->h = ds->w = 32; ds->c = 3; ds->n_classes = 10;
    return EBM_OK;
}

/* Append one file's records (the data set is freed on an error). */
static int ebm__cifar_records(ebm_dataset *ds, const char *name, const unsigned char *file, size_t len, size_t total, ebm_error *err)
{
    size_t r, j;
    if (!file || len == 0 || len % EBM__CIFAR_REC != 0 || (size_t)ds->n + len / EBM__CIFAR_REC > total) {
        ebm_dataset_free(ds);
        return ebm__fail(err, EBM_EFORMAT, "%s: changed size while being read", name);
    }
    for (r = 0; r < len / EBM__CIFAR_REC; r++) {
        const unsigned char *s = file + r * EBM__CIFAR_REC;
        unsigned char *d = ds->pixels + (size_t)ds->n * 3072;
        if (s[0] > 9) {
            int bad = s[0];
            ebm_dataset_free(ds);
            return ebm__fail(err, EBM_EFORMAT, "%s: record %lu has label %d, not a class 0..9", name, (unsigned long)r, bad);
        }
        ds->labels[ds->n] = s[0];
        for (j = 0; j < 1024; j++) { d[3 * j] = s[1 + j]; d[3 * j + 1] = s[1 + 1024 + j]; d[3 * j + 2] = s[1 + 2048 + j]; }
        ds->n++;
    }
    return EBM_OK;
}

EBMDEF int ebm_cifar10_read(ebm_dataset *ds, const void *const *bufs, const size_t *lens, int n_bufs, ebm_error *err)
{
    size_t total = 0;
    int p, rc;
    if (!ds || !bufs || !lens || n_bufs < 1) return ebm__fail(err, EBM_EINVAL, "cifar10_read: NULL data set or no buffers");
    memset(ds, 0, sizeof *ds);
    for (p = 0; p < n_bufs; p++) if ((rc = ebm__cifar_size("cifar10 buffer", lens[p], &total, err)) != EBM_OK) return rc;
    if ((rc = ebm__cifar_alloc(ds, total, err)) != EBM_OK) return rc;
    for (p = 0; p < n_bufs; p++)
        if ((rc = ebm__cifar_records(ds, "cifar10 buffer", (const unsigned char *)bufs[p], lens[p], total, err)) != EBM_OK) return rc;
    ebm__ok(err);
    return EBM_OK;
}

#ifndef EBM_NO_STDIO
EBMDEF int ebm_cifar10_load(ebm_dataset *ds, const char *const *paths, int n_paths, ebm_error *err)
{
    size_t total = 0, len;
    unsigned char *file;
    int p, rc;
    if (!ds || !paths || n_paths < 1) return ebm__fail(err, EBM_EINVAL, "cifar10_load: NULL data set or no files");
    memset(ds, 0, sizeof *ds);
    for (p = 0; p < n_paths; p++) {
        FILE *f = paths[p] ? fopen(paths[p], "rb") : NULL;
        long sz;
        if (!f) return ebm__fail(err, EBM_EIO, "cannot open %s", paths[p] ? paths[p] : "(null)");
        if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0) { fclose(f); return ebm__fail(err, EBM_EIO, "cannot size %s", paths[p]); }
        fclose(f);
        if ((rc = ebm__cifar_size(paths[p], (size_t)sz, &total, err)) != EBM_OK) return rc;
    }
    if ((rc = ebm__cifar_alloc(ds, total, err)) != EBM_OK) return rc;
    for (p = 0; p < n_paths; p++) {
        if ((rc = ebm__read_file(paths[p], EBM_DATA_MAX_BYTES, &file, &len, err)) != EBM_OK) { ebm_dataset_free(ds); return rc; }
        rc = ebm__cifar_records(ds, paths[p], file, len, total, err);
        EBM_FREE(file);
        if (rc != EBM_OK) return rc;
    }
    ebm__ok(err);
    return EBM_OK;
}
#endif

EBMDEF int ebm_dataset_batch(const ebm_dataset *ds, const ebm_rng *r, uint64_t first, int n, float *x, int *labels)
{
    size_t D;
    int i;
    if (!ds || !ds->pixels || !r || !x || n < 0 || ds->n < 1) return EBM_EINVAL;
    D = (size_t)ds->h * ds->w * ds->c;
    for (i = 0; i < n; i++) {
        uint32_t ctr[4], key[2], u[4];
        size_t idx, j;
        const unsigned char *p;
        ctr[0] = 0xDA7Au; ctr[1] = 0; ctr[2] = (uint32_t)(first + (uint64_t)i); ctr[3] = r->stream;
        key[0] = (uint32_t)r->seed; key[1] = (uint32_t)(r->seed >> 32);
        ebm_philox4x32(ctr, key, u);
        idx = (size_t)((((uint64_t)u[0] << 32 | u[1]) % (uint64_t)ds->n)); /* bias below 2^-32: none that matters */
        p = ds->pixels + idx * D;
        for (j = 0; j < D; j++) x[(size_t)i * D + j] = (float)p[j] * (2.0f / 255.0f) - 1.0f;
        if (labels) labels[i] = ds->labels ? ds->labels[idx] : -1;
    }
    return EBM_OK;
}

EBMDEF void ebm_dataset_get(const ebm_dataset *ds, int first, int n, float *x)
{
    size_t D = (size_t)ds->h * ds->w * ds->c, j, total = (size_t)n * D;
    const unsigned char *p = ds->pixels + (size_t)first * D;
    for (j = 0; j < total; j++) x[j] = (float)p[j] * (2.0f / 255.0f) - 1.0f;
}

/* --- PNG: 8-bit grey or RGB, zlib "stored" blocks (no compression: the
   writer stays a page long, and sample grids are small) --- */

static void ebm__put32(unsigned char *p, uint32_t v) { p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v; }

static void ebm__png_chunk(ebm_write_fn fn, void *user, int *bad, const char *type, const unsigned char *data, size_t n)
{
    unsigned char b[4];
    uint32_t crc = ebm__crc32(0, (const unsigned char *)type, 4);
    crc = ebm__crc32(crc, data, n);
    ebm__put32(b, (uint32_t)n);
    ebm__put(fn, user, b, 4, bad);
    ebm__put(fn, user, type, 4, bad);
    ebm__put(fn, user, data, n, bad);
    ebm__put32(b, crc);
    ebm__put(fn, user, b, 4, bad);
}

/* The image's arguments, checked before anything is written (or a file opened). */
static int ebm__png_args(const char *who, const unsigned char *pixels, int w, int h, int channels, ebm_error *err)
{
    if (!pixels || w < 1 || h < 1 || w > 1 << 15 || h > 1 << 15 || (channels != 1 && channels != 3))
        return ebm__fail(err, EBM_EINVAL, "%s: bad arguments (%dx%d, %d channels)", who, w, h, channels);
    return EBM_OK;
}

EBMDEF int ebm_png_write(ebm_write_fn fn, void *user, const unsigned char *pixels, int w, int h, int channels, const char *description,
                         ebm_error *err)
{
    size_t row = (size_t)w * (size_t)channels + 1, raw_n, z_n, i, o, nblk;
    unsigned char ihdr[13], *z;
    uint32_t adler = 1;
    int y, bad = 0, rc;
    if (!fn) return ebm__fail(err, EBM_EINVAL, "png_write: NULL write function");
    if ((rc = ebm__png_args("png_write", pixels, w, h, channels, err)) != EBM_OK) return rc;
    raw_n = row * (size_t)h;
    nblk = (raw_n + 65534) / 65535;
    z_n = 2 + raw_n + 5 * nblk + 4;
    z = (unsigned char *)EBM_MALLOC(z_n);
    if (!z) return ebm__fail(err, EBM_ENOMEM, "png_write: no memory");
    /* zlib stream: header, stored blocks of <= 65535 bytes of filter-0 rows, Adler-32 */
    z[0] = 0x78; z[1] = 0x01;
    o = 2;
    for (i = 0; i < raw_n;) {
        size_t n = raw_n - i < 65535 ? raw_n - i : 65535, k;
        z[o++] = (unsigned char)(i + n == raw_n); /* BFINAL, BTYPE 00 */
        z[o++] = (unsigned char)(n & 0xff); z[o++] = (unsigned char)(n >> 8);
        z[o++] = (unsigned char)(~n & 0xff); z[o++] = (unsigned char)((~n >> 8) & 0xff);
        for (k = 0; k < n; k++, i++) {
            size_t r = i / row, c = i % row;
            z[o++] = c == 0 ? 0 : pixels[r * (row - 1) + c - 1];
        }
    }
    for (y = 0; y < h; y++) { /* Adler-32 of the filtered rows */
        unsigned char zero = 0;
        adler = ebm__adler32(adler, &zero, 1);
        adler = ebm__adler32(adler, pixels + (size_t)y * (row - 1), row - 1);
    }
    ebm__put32(z + o, adler);
    o += 4;
    ebm__put(fn, user, "\x89PNG\r\n\x1a\n", 8, &bad);
    ebm__put32(ihdr, (uint32_t)w); ebm__put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; ihdr[9] = channels == 1 ? 0 : 2; ihdr[10] = ihdr[11] = ihdr[12] = 0;
    ebm__png_chunk(fn, user, &bad, "IHDR", ihdr, 13);
    if (description) { /* a tEXt chunk: keyword, NUL, Latin-1 text */
        size_t dl = strlen(description);
        unsigned char *t = (unsigned char *)EBM_MALLOC(12 + dl);
        if (t) {
            memcpy(t, "Description", 12);
            memcpy(t + 12, description, dl);
            ebm__png_chunk(fn, user, &bad, "tEXt", t, 12 + dl);
            EBM_FREE(t);
        }
    }
    ebm__png_chunk(fn, user, &bad, "IDAT", z, o);
    ebm__png_chunk(fn, user, &bad, "IEND", NULL, 0);
    EBM_FREE(z);
    if (bad) return ebm__fail(err, EBM_EIO, "png_write: the write function failed");
    ebm__ok(err);
    return EBM_OK;
}

#ifndef EBM_NO_STDIO
EBMDEF int ebm_png_save(const char *path, const unsigned char *pixels, int w, int h, int channels, const char *description,
                        ebm_error *err)
{
    FILE *f;
    int rc;
    if (!path) return ebm__fail(err, EBM_EINVAL, "png_save: NULL path");
    if ((rc = ebm__png_args("png_save", pixels, w, h, channels, err)) != EBM_OK) return rc; /* an existing file is left alone */
    f = fopen(path, "wb");
    if (!f) return ebm__fail(err, EBM_EIO, "png_save: cannot open %s for writing", path);
    rc = ebm_png_write(ebm__file_put, f, pixels, w, h, channels, description, err);
    if ((ferror(f) | fclose(f)) && rc == EBM_OK) rc = ebm__fail(err, EBM_EIO, "png_save: write to %s failed", path);
    if (rc != EBM_OK) remove(path);
    return rc;
}
#endif

#ifndef EBM_NO_STDIO /* the grids and plots, and their font, write files */
/* A 3x5 pixel font for the labels of grids and plots: digits, signs and the
   letters the library writes. Rows top to bottom, 3 bits each, MSB left. */
static int ebm__glyph(char ch)
{
    static const char *const chars = "0123456789-.+_=:/,()%abcdefghijklmnopqrstuvwxyz";
    static const uint16_t bits[] = {
        075557, 026227, 071747, 071717, 055711, 074717, 074757, 071111, 075757, 075717, /* 0-9 */
        000700, 000002, 002720, 000007, 007070, 002020, 011244, 000024, 012221, 042224, 051245,
        025755, 065656, 034443, 065556, 074647, 074644, 034553, 055755, 072227, 011152, 055655, 044447, 057755, /* a-m */
        065555, 025552, 065644, 025563, 065655, 034216, 072222, 055557, 055552, 055775, 055255, 055222, 071247 /* n-z */ };
    const char *p;
    if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
    p = ch ? strchr(chars, ch) : NULL;
    return p ? bits[p - chars] : 0;
}

/* Draw text at (x0, y0), each font pixel s x s, into an RGB image. */
static void ebm__text(unsigned char *img, int w, int h, int x0, int y0, int s, const char *txt, const unsigned char rgb[3])
{
    int gx, r, c, a, b;
    for (gx = 0; txt[gx]; gx++) {
        int g = ebm__glyph(txt[gx]);
        for (r = 0; r < 5; r++)
            for (c = 0; c < 3; c++)
                if (g >> (14 - 3 * r - c) & 1)
                    for (a = 0; a < s; a++)
                        for (b = 0; b < s; b++) {
                            int X = x0 + (4 * gx + c) * s + b, Y = y0 + r * s + a;
                            if (X >= 0 && X < w && Y >= 0 && Y < h) memcpy(img + 3 * ((size_t)Y * w + X), rgb, 3);
                        }
    }
}

EBMDEF int ebm_png_save_grid(const char *path, const float *x, int n, int h, int w, int c, int cols, const char *label,
                             ebm_error *err)
{
    const int pad = 2, top = label ? 14 : 0;
    int rows, W, H, i, yy, xx, k, rc;
    unsigned char *img;
    if (!x || n < 1 || h < 1 || w < 1 || (c != 1 && c != 3) || cols < 1) return ebm__fail(err, EBM_EINVAL, "png_save_grid: bad arguments");
    if (cols > n) cols = n;
    rows = (n + cols - 1) / cols;
    W = cols * (w + pad) + pad; H = rows * (h + pad) + pad + top;
    if ((long)W * H > (1L << 28)) return ebm__fail(err, EBM_EINVAL, "png_save_grid: %dx%d is too large", W, H);
    img = (unsigned char *)EBM_MALLOC((size_t)W * H * 3);
    if (!img) return ebm__fail(err, EBM_ENOMEM, "png_save_grid: no memory");
    memset(img, 96, (size_t)W * H * 3);
    for (i = 0; i < n; i++) { /* [-1, 1] -> 0..255, clipped */
        int X = pad + (i % cols) * (w + pad), Y = top + pad + (i / cols) * (h + pad);
        for (yy = 0; yy < h; yy++)
            for (xx = 0; xx < w; xx++)
                for (k = 0; k < 3; k++) {
                    float v = x[(((size_t)i * h + yy) * w + xx) * c + (c == 3 ? k : 0)];
                    v = (v + 1.0f) * 127.5f + 0.5f;
                    img[3 * ((size_t)(Y + yy) * W + X + xx) + k] = (unsigned char)(v != v ? 0 : v < 0 ? 0 : v > 255 ? 255 : (int)v);
                }
    }
    if (label) {
        static const unsigned char white[3] = { 255, 255, 255 };
        int scale = (int)strlen(label) * 8 <= W - pad ? 2 : 1; /* a long label in the small size */
        ebm__text(img, W, H, pad, scale == 2 ? 2 : 4, scale, label, white);
    }
    rc = ebm_png_save(path, img, W, H, 3, label, err);
    EBM_FREE(img);
    return rc;
}

EBMDEF int ebm_png_save_plot(const char *path, const float *y, int n_series, int n, const char *const *names, ebm_error *err)
{
    const int PW = 640, PH = 180, M = 40; /* panel size, left margin for the labels */
    static const unsigned char ink[3] = { 20, 60, 160 }, band[3] = { 170, 190, 230 }, axis[3] = { 150, 150, 150 }, txt[3] = { 0, 0, 0 };
    int W = PW + M + 8, H, s, col, rc;
    unsigned char *img;
    if (!path || !y || n_series < 1 || n_series > 16 || n < 1) return ebm__fail(err, EBM_EINVAL, "png_save_plot: bad arguments");
    H = n_series * (PH + 24) + 4;
    img = (unsigned char *)EBM_MALLOC((size_t)W * H * 3);
    if (!img) return ebm__fail(err, EBM_ENOMEM, "png_save_plot: no memory");
    memset(img, 255, (size_t)W * H * 3);
    for (s = 0; s < n_series; s++) {
        const float *v = y + (size_t)s * n;
        int y0 = s * (PH + 24) + 18, i, have = 0, prev = -1;
        float lo = 0, hi = 0;
        char buf[64];
        for (i = 0; i < n; i++) /* range of the finite values */
            if (v[i] == v[i] && v[i] < 1e30f && v[i] > -1e30f) { if (!have || v[i] < lo) lo = v[i]; if (!have || v[i] > hi) hi = v[i]; have = 1; }
        if (hi - lo < 1e-12f) { hi += 0.5f; lo -= 0.5f; }
        snprintf(buf, sizeof buf, "%s  n=%d", names && names[s] ? names[s] : "", n);
        ebm__text(img, W, H, M, y0 - 14, 2, buf, txt);
        snprintf(buf, sizeof buf, "%.3g", (double)hi); ebm__text(img, W, H, 2, y0, 1, buf, txt);
        snprintf(buf, sizeof buf, "%.3g", (double)lo); ebm__text(img, W, H, 2, y0 + PH - 5, 1, buf, txt);
        for (col = 0; col < PW; col++) memcpy(img + 3 * ((size_t)(y0 + PH) * W + M + col), axis, 3);
        if (lo < 0 && hi > 0) { /* the zero line */
            int zr = y0 + (int)((hi - 0) / (hi - lo) * (PH - 1));
            for (col = 0; col < PW; col += 2) memcpy(img + 3 * ((size_t)zr * W + M + col), axis, 3);
        }
        for (col = 0; col < PW; col++) { /* each column: the band of its points and their mean */
            int i0 = (int)((long)n * col / PW), i1 = (int)((long)n * (col + 1) / PW), r, rlo, rhi, rm;
            double mn = 0;
            float a = 0, b = 0;
            int cnt = 0;
            if (i1 <= i0) i1 = i0 + 1;
            if (i0 >= n) break;
            for (i = i0; i < i1 && i < n; i++)
                if (v[i] == v[i] && v[i] < 1e30f && v[i] > -1e30f) { if (!cnt || v[i] < a) a = v[i]; if (!cnt || v[i] > b) b = v[i]; mn += v[i]; cnt++; }
            if (!cnt) continue;
            mn /= cnt;
            rhi = y0 + (int)((hi - b) / (hi - lo) * (PH - 1));
            rlo = y0 + (int)((hi - a) / (hi - lo) * (PH - 1));
            rm = y0 + (int)((hi - mn) / (hi - lo) * (PH - 1));
            for (r = rhi; r <= rlo; r++) memcpy(img + 3 * ((size_t)r * W + M + col), band, 3);
            if (prev < 0) prev = rm;
            for (r = prev < rm ? prev : rm; r <= (prev < rm ? rm : prev); r++) /* the mean, joined to the last column's */
                memcpy(img + 3 * ((size_t)r * W + M + col), ink, 3);
            prev = rm;
        }
    }
    rc = ebm_png_save(path, img, W, H, 3, names && names[0] ? names[0] : NULL, err);
    EBM_FREE(img);
    return rc;
}
#endif


static int ebm__npy_from(const char *path, const unsigned char *file, size_t len, float **data, int *ndim, int shape[4], ebm_error *err)
{
    size_t hl, off, n = 1, i;
    char hdr[512];
    const char *p;
    int d = 0;
    if (!data || !ndim || !shape) return ebm__fail(err, EBM_EINVAL, "npy_read: NULL output");
    *data = NULL; *ndim = 0;
    if (!file) return ebm__fail(err, EBM_EINVAL, "%s: NULL buffer", path);
    if (len > EBM_DATA_MAX_BYTES + 4096) return ebm__fail(err, EBM_EFORMAT, "%s: %lu bytes is more than this reader accepts", path, (unsigned long)len);
    if (len < 10 || memcmp(file, "\x93NUMPY", 6) != 0 || (file[6] != 1 && file[6] != 2)) { return ebm__fail(err, EBM_EFORMAT, "%s: not an NPY file", path); }
    if (file[6] == 1) { hl = (size_t)file[8] | (size_t)file[9] << 8; off = 10; }
    else { if (len < 12) { return ebm__fail(err, EBM_EFORMAT, "%s: truncated", path); } hl = ebm__le32(file + 8); off = 12; }
    if (hl >= sizeof hdr || off + hl > len) { return ebm__fail(err, EBM_EFORMAT, "%s: bad header length", path); }
    memcpy(hdr, file + off, hl);
    hdr[hl] = 0;
    off += hl;
    if (!strstr(hdr, "'descr': '<f4'") || !strstr(hdr, "'fortran_order': False") || !(p = strstr(hdr, "'shape': ("))) {
        return ebm__fail(err, EBM_EFORMAT, "%s: only little-endian float32 C-order arrays are read", path);
    }
    for (p += 10; *p && *p != ')';) {
        long v;
        char *end;
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > (1L << 30) || d == 4) { return ebm__fail(err, EBM_EFORMAT, "%s: bad or more than 4 dimensions", path); }
        shape[d++] = (int)v;
        n *= (size_t)v;
        if (n > EBM_DATA_MAX_BYTES / 4) { return ebm__fail(err, EBM_EFORMAT, "%s: too large", path); }
        p = end;
    }
    if (d < 1 || len - off != n * 4) { return ebm__fail(err, EBM_EFORMAT, "%s: %lu data bytes for %lu floats", path, (unsigned long)(len - off), (unsigned long)n); }
    *data = (float *)EBM_MALLOC(n ? n * 4 : 4);
    if (!*data) { return ebm__fail(err, EBM_ENOMEM, "%s: no memory", path); }
    for (i = 0; i < n; i++) { uint32_t u = ebm__le32(file + off + 4 * i); memcpy(*data + i, &u, 4); }
    *ndim = d;
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF int ebm_npy_read(const void *buf, size_t len, float **data, int *ndim, int shape[4], ebm_error *err)
{
    return ebm__npy_from("npy buffer", (const unsigned char *)buf, len, data, ndim, shape, err);
}

#ifndef EBM_NO_STDIO
EBMDEF int ebm_npy_load(const char *path, float **data, int *ndim, int shape[4], ebm_error *err)
{
    unsigned char *file;
    size_t len;
    int rc;
    if (!data || !ndim || !shape) return ebm__fail(err, EBM_EINVAL, "npy_load: NULL output");
    *data = NULL; *ndim = 0;
    if ((rc = ebm__read_file(path, EBM_DATA_MAX_BYTES + 4096, &file, &len, err)) != EBM_OK) return rc;
    rc = ebm__npy_from(path, file, len, data, ndim, shape, err);
    EBM_FREE(file);
    return rc;
}
#endif

/* --- checkpoints ---
   Little-endian: "EBMCKPT\0", u32 version, then sections, then the CRC-32 of
   every byte before it. Model: input (C, H, W), the layer table, the
   parameters and both optimiser moments. Trainer (optional): every setting,
   the iteration, the learning-rate scale, the replay buffer, NCE's noise
   and log-normaliser. Written to
   "<path>.tmp", flushed, synced to disk (POSIX), closed, then renamed over <path>, so a crash leaves
   either the old file or the new one. */

#define EBM__CKPT_VERSION 3u /* 2: objectives, STANLEY and NCE's state; 3: shards; versions 1 and 2 are still read */
#ifdef EBM_TEST_HOOKS
/* Tests only: called while a checkpoint is written, with the bytes written
   so far (stage 0, after every write) and once between closing the
   temporary file and renaming it (stage 1), so that a test can kill the
   process at a chosen moment. */
static void (*ebm_test_ckpt_hook)(size_t bytes, int stage);
#define EBM__CKPT_HOOK(bytes, stage) do { if (ebm_test_ckpt_hook) ebm_test_ckpt_hook(bytes, stage); } while (0)
#else
#define EBM__CKPT_HOOK(bytes, stage) ((void)0)
#endif

typedef struct { ebm_write_fn fn; void *user; uint32_t crc; int bad; size_t bytes; } ebm__writer;

static void ebm__wbytes(ebm__writer *w, const void *p, size_t n)
{
    if (w->bad || !n) return;
    w->crc = ebm__crc32(w->crc, (const unsigned char *)p, n);
    if (w->fn(w->user, p, n) != 0) { w->bad = 1; return; }
    w->bytes += n; /* the bytes taken */
    EBM__CKPT_HOOK(w->bytes, 0);
}
static void ebm__wu32(ebm__writer *w, uint32_t v)
{
    unsigned char b[4];
    b[0] = (unsigned char)v; b[1] = (unsigned char)(v >> 8); b[2] = (unsigned char)(v >> 16); b[3] = (unsigned char)(v >> 24);
    ebm__wbytes(w, b, 4);
}
static void ebm__wu64(ebm__writer *w, uint64_t v) { ebm__wu32(w, (uint32_t)v); ebm__wu32(w, (uint32_t)(v >> 32)); }
static void ebm__wf32(ebm__writer *w, float v) { uint32_t u; memcpy(&u, &v, 4); ebm__wu32(w, u); }
static void ebm__wf64(ebm__writer *w, double v) { uint64_t u; memcpy(&u, &v, 8); ebm__wu64(w, u); }
static void ebm__wfloats(ebm__writer *w, const float *p, size_t n)
{
    size_t i;
    uint16_t one = 1;
    if (*(unsigned char *)&one == 1) { ebm__wbytes(w, p, n * sizeof(float)); return; }
    for (i = 0; i < n; i++) ebm__wf32(w, p[i]);
}

typedef struct { const unsigned char *p; size_t len, pos; int bad; } ebm__reader;
static const unsigned char *ebm__rbytes(ebm__reader *r, size_t n)
{
    const unsigned char *q;
    if (r->bad || n > r->len - r->pos) { r->bad = 1; return NULL; }
    q = r->p + r->pos;
    r->pos += n;
    return q;
}
static uint32_t ebm__ru32(ebm__reader *r) { const unsigned char *q = ebm__rbytes(r, 4); return q ? ebm__le32(q) : 0; }
static uint64_t ebm__ru64(ebm__reader *r) { uint64_t lo = ebm__ru32(r); return lo | (uint64_t)ebm__ru32(r) << 32; }
static float ebm__rf32(ebm__reader *r) { uint32_t u = ebm__ru32(r); float v; memcpy(&v, &u, 4); return v; }
static double ebm__rf64(ebm__reader *r) { uint64_t u = ebm__ru64(r); double v; memcpy(&v, &u, 8); return v; }
static int ebm__rfloats(ebm__reader *r, float *dst, size_t n)
{
    size_t i;
    const unsigned char *q;
    if (n > (r->len - r->pos) / 4) { r->bad = 1; return -1; }
    q = ebm__rbytes(r, n * 4);
    for (i = 0; i < n; i++) { uint32_t u = ebm__le32(q + 4 * i); memcpy(dst + i, &u, 4); }
    return 0;
}

static void ebm__write_model(ebm__writer *w, const ebm_model *m)
{
    int i;
    ebm__wu32(w, (uint32_t)m->in_c); ebm__wu32(w, (uint32_t)m->in_h); ebm__wu32(w, (uint32_t)m->in_w);
    ebm__wu32(w, (uint32_t)m->n_layers);
    for (i = 0; i < m->n_layers; i++) {
        const ebm_layer *L = &m->layer[i];
        ebm__wu32(w, (uint32_t)L->type); ebm__wu32(w, (uint32_t)L->out_c); ebm__wu32(w, (uint32_t)L->k);
        ebm__wu32(w, (uint32_t)L->stride); ebm__wu32(w, (uint32_t)L->pad); ebm__wu32(w, (uint32_t)L->out_pad);
        ebm__wu32(w, (uint32_t)L->bias); ebm__wu32(w, (uint32_t)L->act); ebm__wf32(w, L->act_param);
    }
    ebm__wu64(w, (uint64_t)m->n_params);
    ebm__wfloats(w, m->params, m->n_params);
    ebm__wfloats(w, m->m1, m->n_params);
    ebm__wfloats(w, m->m2, m->n_params);
}

static void ebm__write_config(ebm__writer *w, const ebm_train_config *c)
{
    const ebm_langevin *l = &c->chain;
    ebm__wu32(w, (uint32_t)c->batch); ebm__wu32(w, (uint32_t)c->start); ebm__wu32(w, (uint32_t)c->restart);
    ebm__wu32(w, (uint32_t)c->buffer_size); ebm__wf32(w, c->reinit); ebm__wf32(w, c->start_noise);
    ebm__wu32(w, (uint32_t)l->form); ebm__wf32(w, l->eps); ebm__wf32(w, l->step); ebm__wf32(w, l->noise); ebm__wf32(w, l->sigma_q);
    ebm__wu32(w, (uint32_t)l->box); ebm__wf32(w, l->lo); ebm__wf32(w, l->hi); ebm__wu32(w, (uint32_t)l->n_steps);
    ebm__wu32(w, (uint32_t)c->mala); ebm__wf32(w, c->data_noise); ebm__wf32(w, c->energy_reg);
    ebm__wu32(w, (uint32_t)c->optimizer); ebm__wf32(w, c->lr); ebm__wf32(w, c->beta1); ebm__wf32(w, c->beta2); ebm__wf32(w, c->momentum);
    ebm__wu32(w, (uint32_t)c->schedule); ebm__wu64(w, (uint64_t)c->warmup); ebm__wu64(w, (uint64_t)c->total_iters); ebm__wf32(w, c->lr_min);
    ebm__wf32(w, c->max_abs_dt); ebm__wu64(w, c->seed);
    /* version 2 */
    ebm__wf32(w, l->aniso_th); ebm__wu32(w, (uint32_t)c->objective); ebm__wf32(w, c->sigma); ebm__wu32(w, (uint32_t)c->n_sigmas);
    ebm__wf32(w, c->sigma_max); ebm__wu32(w, (uint32_t)c->proj); ebm__wf32(w, c->fd_eps);
    /* version 3 */
    ebm__wu32(w, (uint32_t)c->shards);
}

static void ebm__read_config(ebm__reader *r, ebm_train_config *c, uint32_t version)
{
    ebm_langevin *l = &c->chain;
    ebm_train_config_default(c); /* what version 1 files did not hold */
    memset(l, 0, sizeof *l);
    c->batch = (int)ebm__ru32(r); c->start = (int)ebm__ru32(r); c->restart = (int)ebm__ru32(r);
    c->buffer_size = (int)ebm__ru32(r); c->reinit = ebm__rf32(r); c->start_noise = ebm__rf32(r);
    l->form = (int)ebm__ru32(r); l->eps = ebm__rf32(r); l->step = ebm__rf32(r); l->noise = ebm__rf32(r); l->sigma_q = ebm__rf32(r);
    l->box = (int)ebm__ru32(r); l->lo = ebm__rf32(r); l->hi = ebm__rf32(r); l->n_steps = (int)ebm__ru32(r);
    c->mala = (int)ebm__ru32(r); c->data_noise = ebm__rf32(r); c->energy_reg = ebm__rf32(r);
    c->optimizer = (int)ebm__ru32(r); c->lr = ebm__rf32(r); c->beta1 = ebm__rf32(r); c->beta2 = ebm__rf32(r); c->momentum = ebm__rf32(r);
    c->schedule = (int)ebm__ru32(r); c->warmup = (long)ebm__ru64(r); c->total_iters = (long)ebm__ru64(r); c->lr_min = ebm__rf32(r);
    c->max_abs_dt = ebm__rf32(r); c->seed = ebm__ru64(r);
    if (version < 2) return;
    l->aniso_th = ebm__rf32(r); c->objective = (int)ebm__ru32(r); c->sigma = ebm__rf32(r); c->n_sigmas = (int)ebm__ru32(r);
    c->sigma_max = ebm__rf32(r); c->proj = (int)ebm__ru32(r); c->fd_eps = ebm__rf32(r);
    if (version < 3) return;
    c->shards = (int)ebm__ru32(r);
}

#ifndef EBM_NO_STDIO
/* The file's data on the disk before the rename, so that a power cut
   cannot leave the new name on a file whose blocks were never written.
   POSIX only (on Linux declared here: glibc's strict C99 headers hide fsync
   and fileno); elsewhere, or with EBM_NO_FSYNC, fflush alone. */
#if defined(__linux__) && !defined(EBM_NO_FSYNC)
#ifdef __cplusplus
extern "C" {
#endif
extern int fsync(int fd);
#ifndef fileno /* a macro on some C libraries */
extern int fileno(FILE *f);
#endif
#ifdef __cplusplus
}
#endif
static int ebm__fsync(FILE *f) { return fsync(fileno(f)); }
#elif (defined(__unix__) || defined(__APPLE__)) && !defined(EBM_NO_FSYNC)
#include <unistd.h> /* the BSDs and macOS declare fsync and fileno by default */
static int ebm__fsync(FILE *f) { return fsync(fileno(f)); }
#else
static int ebm__fsync(FILE *f) { (void)f; return 0; }
#endif
#endif /* EBM_NO_STDIO */

/* The latent model's settings (section kind 2). */
static void ebm__write_latent(ebm__writer *w, const ebm_latent *L)
{
    const ebm_latent_config *c = &L->cfg;
    ebm__wu32(w, (uint32_t)c->batch); ebm__wu32(w, (uint32_t)c->prior_steps); ebm__wf32(w, c->prior_step);
    ebm__wu32(w, (uint32_t)c->post_steps); ebm__wf32(w, c->post_step); ebm__wf32(w, c->sigma);
    ebm__wf32(w, c->lr_prior); ebm__wf32(w, c->lr_gen); ebm__wf32(w, c->beta1); ebm__wf32(w, c->beta2); ebm__wu64(w, c->seed);
    ebm__wu64(w, (uint64_t)L->iter);
    ebm__write_model(w, L->prior);
}

/* A model alone (kind 0), a trainer's checkpoint (1: model, then the
   trainer's state) or a latent model's (2: generator, then settings,
   iteration and the prior), refused when anything is not finite (a diverged
   model never replaces a good checkpoint). */
static int ebm__ckpt_check(const ebm_model *m, const ebm_trainer *t, const ebm_latent *L, const char *name, ebm_error *err)
{
    if (!m || !m->params) return ebm__fail(err, EBM_EINVAL, "checkpoint: unallocated model");
    if (!ebm__all_finite(m->params, m->n_params) || (t && t->buffer && !ebm__all_finite(t->buffer, (size_t)t->cfg.buffer_size * m->in_h * m->in_w * m->in_c)) ||
        (L && !ebm__all_finite(L->prior->params, L->prior->n_params)))
        return ebm__fail(err, EBM_EDIVERGED, "checkpoint: not written to %s: the model or its replay buffer holds a NaN or an infinity", name);
    return EBM_OK;
}

/* The checkpoint's bytes, then their CRC-32, into w; w->bad on a failed write. */
static void ebm__ckpt_emit(ebm__writer *w, const ebm_model *m, const ebm_trainer *t, const ebm_latent *L)
{
    unsigned char crc[4];
    ebm__wbytes(w, "EBMCKPT", 8);
    ebm__wu32(w, EBM__CKPT_VERSION);
    ebm__wu32(w, t ? 1u : L ? 2u : 0u);
    ebm__write_model(w, m);
    if (L) ebm__write_latent(w, L);
    if (t) {
        size_t D = (size_t)m->in_h * m->in_w * m->in_c;
        ebm__write_config(w, &t->cfg);
        ebm__wu64(w, (uint64_t)t->iter);
        ebm__wf32(w, t->lr_scale);
        ebm__wf64(w, t->d_t); ebm__wf64(w, t->r_t);
        ebm__wu32(w, t->buffer ? 1u : 0u);
        if (t->buffer) ebm__wfloats(w, t->buffer, (size_t)t->cfg.buffer_size * D);
        ebm__wu32(w, (uint32_t)t->noise_fitted);
        ebm__wf32(w, t->nce_c); ebm__wf32(w, t->nce_m1); ebm__wf32(w, t->nce_m2);
        if (t->noise_fitted) { ebm__wfloats(w, t->noise_mu, D); ebm__wfloats(w, t->noise_sd, D); }
    }
    crc[0] = (unsigned char)w->crc; crc[1] = (unsigned char)(w->crc >> 8); crc[2] = (unsigned char)(w->crc >> 16); crc[3] = (unsigned char)(w->crc >> 24);
    if (!w->bad && w->fn(w->user, crc, 4) != 0) w->bad = 1;
}

/* To a sink (ebm_model_write and its siblings). */
static int ebm__ckpt_to(ebm_write_fn fn, void *user, const ebm_model *m, const ebm_trainer *t, const ebm_latent *L, ebm_error *err)
{
    ebm__writer w;
    int rc;
    if (!fn) return ebm__fail(err, EBM_EINVAL, "checkpoint: NULL write function");
    if ((rc = ebm__ckpt_check(m, t, L, "the sink", err)) != EBM_OK) return rc;
    w.fn = fn; w.user = user; w.crc = 0; w.bad = 0; w.bytes = 0;
    ebm__ckpt_emit(&w, m, t, L);
    if (w.bad) return ebm__fail(err, EBM_EIO, "checkpoint: the write function failed after %lu bytes", (unsigned long)w.bytes);
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF int ebm_model_write(const ebm_model *m, ebm_write_fn fn, void *user, ebm_error *err) { return ebm__ckpt_to(fn, user, m, NULL, NULL, err); }
EBMDEF int ebm_trainer_write(const ebm_trainer *t, ebm_write_fn fn, void *user, ebm_error *err)
{
    if (!t || !t->model) return ebm__fail(err, EBM_EINVAL, "trainer_write: NULL trainer");
    return ebm__ckpt_to(fn, user, t->model, t, NULL, err);
}
EBMDEF int ebm_latent_write(const ebm_latent *L, ebm_write_fn fn, void *user, ebm_error *err)
{
    if (!L || !L->gen || !L->prior) return ebm__fail(err, EBM_EINVAL, "latent_write: NULL or uninitialised latent model");
    return ebm__ckpt_to(fn, user, L->gen, NULL, L, err);
}

#ifndef EBM_NO_STDIO
/* To a file: through "<path>.tmp", flushed, synced, closed and renamed. */
static int ebm__ckpt_write(const char *path, const ebm_model *m, const ebm_trainer *t, const ebm_latent *L, ebm_error *err)
{
    char tmp[1024];
    ebm__writer w;
    FILE *f;
    int rc;
    if (!path) return ebm__fail(err, EBM_EINVAL, "checkpoint: NULL path");
    if (strlen(path) + 5 > sizeof tmp) return ebm__fail(err, EBM_EINVAL, "checkpoint: path too long");
    if ((rc = ebm__ckpt_check(m, t, L, path, err)) != EBM_OK) return rc;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) return ebm__fail(err, EBM_EIO, "checkpoint: cannot open %s for writing", tmp);
    w.fn = ebm__file_put; w.user = f; w.crc = 0; w.bad = 0; w.bytes = 0;
    ebm__ckpt_emit(&w, m, t, L);
    if (fflush(f) != 0 || ebm__fsync(f) != 0) w.bad = 1;
    if (ferror(f) | fclose(f) | w.bad) { remove(tmp); return ebm__fail(err, EBM_EIO, "checkpoint: write to %s failed", tmp); }
    EBM__CKPT_HOOK(w.bytes, 1);
    if (rename(tmp, path) != 0) { remove(tmp); return ebm__fail(err, EBM_EIO, "checkpoint: cannot rename %s to %s", tmp, path); }
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF int ebm_model_save(const ebm_model *m, const char *path, ebm_error *err) { return ebm__ckpt_write(path, m, NULL, NULL, err); }
EBMDEF int ebm_trainer_save(const ebm_trainer *t, const char *path, ebm_error *err)
{
    if (!t || !t->model) return ebm__fail(err, EBM_EINVAL, "trainer_save: NULL trainer");
    return ebm__ckpt_write(path, t->model, t, NULL, err);
}
EBMDEF int ebm_latent_save(const ebm_latent *L, const char *path, ebm_error *err)
{
    if (!L || !L->gen || !L->prior) return ebm__fail(err, EBM_EINVAL, "latent_save: NULL or uninitialised latent model");
    return ebm__ckpt_write(path, L->gen, NULL, L, err);
}
#endif

/* Read and check a checkpoint, building m from its layer table; *r is left
   after the model section, *has_trainer says whether a trainer section follows. */
static int ebm__read_model(ebm__reader *r, ebm_model *m, const char *path, ebm_error *err);
static int ebm__ckpt_parse(const unsigned char *buf, size_t len, const char *path, ebm_model *m, ebm__reader *r, int *has_trainer,
                           uint32_t *version, ebm_error *err)
{
    memset(m, 0, sizeof *m);
    r->p = buf; r->len = len; r->pos = 0; r->bad = 0;
    if (!buf) return ebm__fail(err, EBM_EINVAL, "%s: NULL buffer", path);
    if (len > EBM_CKPT_MAX_BYTES) return ebm__fail(err, EBM_EFORMAT, "%s: %lu bytes is more than a checkpoint may hold", path, (unsigned long)len);
    if (len < 24 || memcmp(buf, "EBMCKPT", 8) != 0) return ebm__fail(err, EBM_EFORMAT, "%s: not an ebm.h checkpoint", path);
    if (ebm__le32(buf + len - 4) != ebm__crc32(0, buf, len - 4)) return ebm__fail(err, EBM_EFORMAT, "%s: checksum mismatch (truncated or corrupted)", path);
    r->len = len - 4;
    ebm__rbytes(r, 8);
    *version = ebm__ru32(r);
    if (*version < 1 || *version > EBM__CKPT_VERSION)
        return ebm__fail(err, EBM_EFORMAT, "%s: checkpoint version %u, this build reads 1 to %u", path, *version, EBM__CKPT_VERSION);
    *has_trainer = (int)ebm__ru32(r);
    return ebm__read_model(r, m, path, err);
}

/* A model section (as ebm__write_model writes it) into m, built from its
   layer table; memory only after the file has shown it holds the numbers. */
static int ebm__read_model(ebm__reader *r, ebm_model *m, const char *path, ebm_error *err)
{
    int i, nl;
    uint64_t np;
    {
        int c = (int)ebm__ru32(r), h = (int)ebm__ru32(r), w = (int)ebm__ru32(r);
        if (ebm_model_init(m, c, h, w) != EBM_OK) return ebm__fail(err, EBM_EFORMAT, "%s: %s", path, m->err.msg);
    }
    nl = (int)ebm__ru32(r);
    if (r->bad || nl < 1 || nl > EBM_MAX_LAYERS) return ebm__fail(err, EBM_EFORMAT, "%s: %d layers", path, nl);
    for (i = 0; i < nl && !r->bad; i++) {
        int type = (int)ebm__ru32(r), oc = (int)ebm__ru32(r), k = (int)ebm__ru32(r), s = (int)ebm__ru32(r), p = (int)ebm__ru32(r);
        int op = (int)ebm__ru32(r), b = (int)ebm__ru32(r), act = (int)ebm__ru32(r);
        float ap = ebm__rf32(r);
        if (type == EBM_LAYER_CONV2D) ebm_model_add_conv2d(m, oc, k, s, p, b);
        else if (type == EBM_LAYER_CONVT2D) ebm_model_add_conv_transpose2d(m, oc, k, s, p, op, b);
        else if (type == EBM_LAYER_LINEAR) ebm_model_add_linear(m, oc, b);
        else if (type == EBM_LAYER_ACT) ebm_model_add_act(m, act, ap);
        else if (type == EBM_LAYER_AVGPOOL) ebm_model_add_avgpool(m, k, s);
        else if (type == EBM_LAYER_MAXPOOL) ebm_model_add_maxpool(m, k, s);
        else return ebm__fail(err, EBM_EFORMAT, "%s: unknown layer type %d", path, type);
        if (m->status != EBM_OK) return ebm__fail(err, EBM_EFORMAT, "%s: layer %d: %s", path, i, m->err.msg);
    }
    np = ebm__ru64(r);
    if (r->bad) return ebm__fail(err, EBM_EFORMAT, "%s: truncated model section", path);
    if (np != (uint64_t)m->n_params) return ebm__fail(err, EBM_EFORMAT, "%s: %lu parameters for a model of %lu", path, (unsigned long)np, (unsigned long)m->n_params);
    /* memory follows what the file holds: the parameters and both moments must be there before any is allocated */
    if (np > (uint64_t)(r->len - r->pos) / (3 * sizeof(float))) return ebm__fail(err, EBM_EFORMAT, "%s: %lu parameters declared, the file is shorter", path, (unsigned long)np);
    if (ebm_model_alloc(m, 0) != EBM_OK) return ebm__fail(err, m->status, "%s: %s", path, m->err.msg);
    if (ebm__rfloats(r, m->params, m->n_params) || ebm__rfloats(r, m->m1, m->n_params) || ebm__rfloats(r, m->m2, m->n_params)) {
        ebm_model_free(m);
        return ebm__fail(err, EBM_EFORMAT, "%s: truncated parameters", path);
    }
    return EBM_OK;
}

/* The readers of a checkpoint in memory; path names it in messages. */
static int ebm__model_from(ebm_model *m, const void *buf, size_t len, const char *path, ebm_error *err)
{
    ebm__reader r;
    int has_t = 0, rc;
    uint32_t version;
    if (!m) return ebm__fail(err, EBM_EINVAL, "model checkpoint: NULL model");
    rc = ebm__ckpt_parse((const unsigned char *)buf, len, path, m, &r, &has_t, &version, err);
    /* a trainer's checkpoint holds a model too: its trainer section is skipped */
    if (rc == EBM_OK && !has_t && r.pos != r.len) {
        ebm_model_free(m);
        return ebm__fail(err, EBM_EFORMAT, "%s: bytes after the model", path);
    }
    if (rc == EBM_OK) ebm__ok(err);
    return rc;
}

static int ebm__trainer_from(ebm_trainer *t, ebm_model *m, const void *buf, size_t len, const char *path, ebm_error *err)
{
    ebm__reader r;
    ebm_train_config c;
    int has_t = 0, rc;
    uint32_t version;
    size_t D;
    if (!t || !m) return ebm__fail(err, EBM_EINVAL, "trainer checkpoint: NULL trainer or model");
    memset(t, 0, sizeof *t);
    if ((rc = ebm__ckpt_parse((const unsigned char *)buf, len, path, m, &r, &has_t, &version, err)) != EBM_OK) return rc;
    if (has_t != 1) { ebm_model_free(m); return ebm__fail(err, EBM_EFORMAT, "%s: holds no trainer state", path); }
    ebm__read_config(&r, &c, version);
    if (r.bad) { ebm_model_free(m); return ebm__fail(err, EBM_EFORMAT, "%s: truncated settings", path); }
    {
        ebm_error e2;
        if (ebm_trainer_init(t, m, &c, &e2) != EBM_OK) {
            ebm_model_free(m);
            return ebm__fail(err, e2.status == EBM_ENOMEM ? EBM_ENOMEM : EBM_EFORMAT, "%s: %s", path, e2.msg);
        }
    }
    D = (size_t)m->in_h * m->in_w * m->in_c;
    t->iter = (long)ebm__ru64(&r);
    t->lr_scale = ebm__rf32(&r);
    t->d_t = ebm__rf64(&r); t->r_t = ebm__rf64(&r);
    if ((ebm__ru32(&r) != 0) != (t->buffer != NULL) || (t->buffer && ebm__rfloats(&r, t->buffer, (size_t)c.buffer_size * D))) r.bad = 1;
    if (version >= 2 && !r.bad) {
        t->noise_fitted = ebm__ru32(&r) != 0;
        t->nce_c = ebm__rf32(&r); t->nce_m1 = ebm__rf32(&r); t->nce_m2 = ebm__rf32(&r);
        if (t->noise_fitted && (ebm__rfloats(&r, t->noise_mu, D) || ebm__rfloats(&r, t->noise_sd, D))) r.bad = 1;
    }
    if (r.bad || r.pos != r.len || t->iter < 0 || !ebm__finite_pos(t->lr_scale)) {
        ebm_trainer_free(t); ebm_model_free(m);
        return ebm__fail(err, EBM_EFORMAT, "%s: truncated or inconsistent trainer state", path);
    }
    ebm__ok(err);
    return EBM_OK;
}

static int ebm__latent_from(ebm_latent *L, ebm_model *prior, ebm_model *gen, const void *buf, size_t len, const char *path, ebm_error *err)
{
    ebm__reader r;
    ebm_latent_config c;
    int kind = 0, rc;
    uint32_t version;
    long iter;
    if (!L || !prior || !gen) return ebm__fail(err, EBM_EINVAL, "latent checkpoint: NULL latent model or models");
    memset(L, 0, sizeof *L);
    memset(prior, 0, sizeof *prior);
    if ((rc = ebm__ckpt_parse((const unsigned char *)buf, len, path, gen, &r, &kind, &version, err)) != EBM_OK) return rc;
    if (kind != 2) { ebm_model_free(gen); return ebm__fail(err, EBM_EFORMAT, "%s: not a latent model's checkpoint", path); }
    c.batch = (int)ebm__ru32(&r); c.prior_steps = (int)ebm__ru32(&r); c.prior_step = ebm__rf32(&r);
    c.post_steps = (int)ebm__ru32(&r); c.post_step = ebm__rf32(&r); c.sigma = ebm__rf32(&r);
    c.lr_prior = ebm__rf32(&r); c.lr_gen = ebm__rf32(&r); c.beta1 = ebm__rf32(&r); c.beta2 = ebm__rf32(&r); c.seed = ebm__ru64(&r);
    iter = (long)ebm__ru64(&r);
    if (r.bad || iter < 0) { ebm_model_free(gen); return ebm__fail(err, EBM_EFORMAT, "%s: truncated settings", path); }
    if ((rc = ebm__read_model(&r, prior, path, err)) != EBM_OK || r.pos != r.len) {
        ebm_model_free(gen); ebm_model_free(prior);
        return rc != EBM_OK ? rc : ebm__fail(err, EBM_EFORMAT, "%s: bytes after the prior", path);
    }
    {
        ebm_error e2;
        if (ebm_latent_init(L, prior, gen, &c, &e2) != EBM_OK) {
            ebm_model_free(gen); ebm_model_free(prior);
            return ebm__fail(err, e2.status == EBM_ENOMEM ? EBM_ENOMEM : EBM_EFORMAT, "%s: %s", path, e2.msg);
        }
    }
    L->iter = iter;
    ebm__ok(err);
    return EBM_OK;
}

EBMDEF int ebm_model_read(ebm_model *m, const void *buf, size_t len, ebm_error *err) { return ebm__model_from(m, buf, len, "checkpoint", err); }
EBMDEF int ebm_trainer_read(ebm_trainer *t, ebm_model *m, const void *buf, size_t len, ebm_error *err)
{
    return ebm__trainer_from(t, m, buf, len, "checkpoint", err);
}
EBMDEF int ebm_latent_read(ebm_latent *L, ebm_model *prior, ebm_model *gen, const void *buf, size_t len, ebm_error *err)
{
    return ebm__latent_from(L, prior, gen, buf, len, "checkpoint", err);
}

#ifndef EBM_NO_STDIO
/* The file readers: the whole file into memory (at most EBM_CKPT_MAX_BYTES),
   then the readers above. */
EBMDEF int ebm_model_load(ebm_model *m, const char *path, ebm_error *err)
{
    unsigned char *file;
    size_t len;
    int rc;
    if (!m) return ebm__fail(err, EBM_EINVAL, "model_load: NULL model");
    memset(m, 0, sizeof *m);
    if ((rc = ebm__read_file(path, EBM_CKPT_MAX_BYTES, &file, &len, err)) != EBM_OK) return rc;
    rc = ebm__model_from(m, file, len, path, err);
    EBM_FREE(file);
    return rc;
}
EBMDEF int ebm_trainer_load(ebm_trainer *t, ebm_model *m, const char *path, ebm_error *err)
{
    unsigned char *file;
    size_t len;
    int rc;
    if (!t || !m) return ebm__fail(err, EBM_EINVAL, "trainer_load: NULL trainer or model");
    memset(t, 0, sizeof *t); memset(m, 0, sizeof *m);
    if ((rc = ebm__read_file(path, EBM_CKPT_MAX_BYTES, &file, &len, err)) != EBM_OK) return rc;
    rc = ebm__trainer_from(t, m, file, len, path, err);
    EBM_FREE(file);
    return rc;
}
EBMDEF int ebm_latent_load(ebm_latent *L, ebm_model *prior, ebm_model *gen, const char *path, ebm_error *err)
{
    unsigned char *file;
    size_t len;
    int rc;
    if (!L || !prior || !gen) return ebm__fail(err, EBM_EINVAL, "latent_load: NULL latent model or models");
    memset(L, 0, sizeof *L); memset(prior, 0, sizeof *prior); memset(gen, 0, sizeof *gen);
    if ((rc = ebm__read_file(path, EBM_CKPT_MAX_BYTES, &file, &len, err)) != EBM_OK) return rc;
    rc = ebm__latent_from(L, prior, gen, file, len, path, err);
    EBM_FREE(file);
    return rc;
}
#endif

#ifdef EBM__FP_PUSHED
#pragma float_control(pop)
#undef EBM__FP_PUSHED
#endif
#endif /* EBM_IMPLEMENTATION_DONE */
#endif /* EBM_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the ebm.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We make this dedication in perpetuity for the benefit of the public at
large and to the detriment of all present and future heirs and successors. We
intend this dedication to be an overt act of relinquishment in perpetuity of
all present and future rights to this software under copyright law.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN
ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------
*/
