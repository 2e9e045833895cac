/* EBM_NO_STDIO (make nostdio-check): the library built without its file
   functions still trains, checkpoints and resumes - through memory - and
   reads a data set from bytes in memory. The checkpoint goes into a fixed
   buffer, as it might into flash or a network packet on a small machine. */
#define EBM_IMPLEMENTATION
#include "ebm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned char bytes[1 << 20]; size_t n; } fixed_buffer;
static int put(void *user, const void *data, size_t n)
{
    fixed_buffer *b = (fixed_buffer *)user;
    if (b->n + n > sizeof b->bytes) return -1; /* full */
    memcpy(b->bytes + b->n, data, n);
    b->n += n;
    return 0;
}

static int trainer(ebm_trainer *t, ebm_model *m)
{
    ebm_train_config c;
    ebm_error e;
    if (ebm_model_mlp_prior(m, 2, 16, EBM_ACT_SILU, 0.0f, 4) != EBM_OK) return 1;
    ebm_train_config_default(&c);
    c.batch = 16; c.start = EBM_START_PERSISTENT; c.buffer_size = 64;
    c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = 0.3f; c.chain.box = EBM_BOX_REFLECT; c.chain.lo = -4.5f; c.chain.hi = 4.5f; c.chain.n_steps = 5;
    c.lr = 1e-2f; c.seed = 4;
    if (ebm_trainer_init(t, m, &c, &e) != EBM_OK) { printf("FAIL trainer_init: %s\n", e.msg); return 1; }
    return 0;
}

static void batch(long it, float *x)
{
    ebm_rng r;
    r.seed = 1; r.stream = 9;
    ebm_toy_sample(EBM_TOY_8GAUSSIANS, &r, (uint64_t)it * 16, x, 16);
}

int main(void)
{
    static fixed_buffer ckpt;
    ebm_trainer a, b;
    ebm_model ma, mb;
    ebm_dataset ds;
    ebm_error e;
    float x[32];
    unsigned char idx[16 + 2 * 2 * 2];
    int i, fails = 0;
    if (trainer(&a, &ma)) return 1;
    for (i = 0; i < 10; i++) { batch(i, x); if (ebm_trainer_step(&a, x) != EBM_OK) { printf("FAIL step: %s\n", a.err.msg); return 1; } }
    if (ebm_trainer_write(&a, put, &ckpt, &e) != EBM_OK) { printf("FAIL trainer_write: %s\n", e.msg); return 1; }
    if (ebm_trainer_read(&b, &mb, ckpt.bytes, ckpt.n, &e) != EBM_OK) { printf("FAIL trainer_read: %s\n", e.msg); return 1; }
    for (i = 10; i < 15; i++) { batch(i, x); ebm_trainer_step(&a, x); ebm_trainer_step(&b, x); }
    if (memcmp(ma.params, mb.params, ma.n_params * sizeof(float)) || memcmp(a.buffer, b.buffer, 64 * 2 * sizeof(float))) {
        printf("FAIL a run resumed from a checkpoint in memory differs\n"); fails++;
    } else printf("ok   trained, checkpointed to memory (%lu bytes), resumed bit for bit\n", (unsigned long)ckpt.n);
    memset(idx, 0, sizeof idx);
    idx[2] = 8; idx[3] = 3; idx[7] = 2; idx[11] = 2; idx[15] = 2;
    for (i = 0; i < 8; i++) idx[16 + i] = (unsigned char)(30 * i);
    if (ebm_idx_read(&ds, idx, sizeof idx, NULL, 0, &e) != EBM_OK || ds.n != 2 || ds.pixels[7] != 210) { printf("FAIL idx_read: %s\n", e.msg); fails++; }
    else printf("ok   an IDX data set read from memory\n");
    ebm_dataset_free(&ds);
    ebm_trainer_free(&a); ebm_model_free(&ma); ebm_trainer_free(&b); ebm_model_free(&mb);
    return fails != 0;
}
