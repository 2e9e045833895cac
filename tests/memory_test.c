/* The peak memory of a training process against what the library predicts
   (ebm_trainer_memory plus the data the program holds): the reference ConvNet
   (n_f = 32) with persistent chains (a replay buffer of 10,000 images),
   batch 64, K = 10, three iterations on noise data. The process's peak
   resident set (getrusage) must be within 25 % of the prediction: memory
   the library did not account for (a per-step allocation, a forgotten
   copy) would break it. POSIX (getrusage). */
#define _POSIX_C_SOURCE 200809L
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include <stdlib.h>
#include <sys/resource.h>

int main(void)
{
    ebm_model m;
    ebm_trainer t;
    ebm_train_config c;
    ebm_error err;
    ebm_rng r;
    size_t predicted, D = 28 * 28;
    float *data;
    struct rusage ru;
    double ratio;
    int i, ok;
    if (ebm_model_convnet(&m, 1, 28, 32, EBM_ACT_LEAKY_RELU, 0.2f, 1) != EBM_OK) return 1;
    ebm_train_config_default(&c);
    c.start = EBM_START_PERSISTENT; c.buffer_size = 10000; c.chain.n_steps = 10;
    if (ebm_trainer_memory(&m, &c, &predicted, &err) != EBM_OK || ebm_trainer_init(&t, &m, &c, &err) != EBM_OK) { printf("error: %s\n", err.msg); return 1; }
    predicted += (size_t)c.batch * D * sizeof(float); /* the program's data batch */
    data = (float *)malloc((size_t)c.batch * D * sizeof *data);
    r.seed = 1; r.stream = EBM_STREAM_USER;
    for (i = 0; i < 3; i++) {
        ebm_rng_uniform(&r, (uint64_t)i, 0, -1, 1, data, (size_t)c.batch * D);
        if (ebm_trainer_step(&t, data) != EBM_OK) { printf("error: %s\n", t.err.msg); return 1; }
    }
    getrusage(RUSAGE_SELF, &ru);
    ratio = ru.ru_maxrss * 1024.0 / (double)predicted;
    ok = ratio > 0.75 && ratio < 1.25;
    printf("%s peak_rss_mb=%.1f predicted_mb=%.1f ratio=%.3f (bound: within 25 %%)\n", ok ? "ok  " : "FAIL", ru.ru_maxrss / 1024.0, predicted / 1048576.0, ratio);
    free(data);
    ebm_trainer_free(&t);
    ebm_model_free(&m);
    printf("%d passed, %d failed\n", ok, !ok);
    return !ok;
}
