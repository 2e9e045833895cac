/* Writes the seed corpus of the fuzz targets into tests/fuzz_corpus/<target>/:
   small valid files of each format, made by the library itself (the gzip
   IDX seed was made by Python's gzip and is committed as it is). */
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include <string.h>

static void put(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); return; }
    fwrite(p, 1, n, f);
    fclose(f);
}

int main(void)
{
    static unsigned char idx[16 + 3 * 16], lab[8 + 5], cif[2 * 3073];
    ebm_model m;
    ebm_trainer t;
    ebm_train_config c;
    ebm_error err;
    float a[6] = { 1, 2, 3, 4, 5, 6 };
    int shape[2] = { 2, 3 }, i;
    /* IDX: 3 images of 4x4; 5 labels */
    idx[2] = 8; idx[3] = 3; idx[7] = 3; idx[11] = 4; idx[15] = 4;
    for (i = 0; i < 48; i++) idx[16 + i] = (unsigned char)(i * 5);
    put("tests/fuzz_corpus/idx/images_raw", idx, sizeof idx);
    lab[2] = 8; lab[3] = 1; lab[7] = 5; lab[8] = 1; lab[9] = 7; lab[10] = 9; lab[11] = 0; lab[12] = 4;
    put("tests/fuzz_corpus/idx/labels_raw", lab, sizeof lab); /* 5 labels, read next to 5 images */
    /* CIFAR-10: two records, label byte then 3072 pixels */
    for (i = 0; i < (int)sizeof cif; i++) cif[i] = (unsigned char)(i * 7);
    cif[0] = 3; cif[3073] = 9;
    put("tests/fuzz_corpus/cifar/two_records.bin", cif, sizeof cif);
    /* checkpoints: a model alone, and a trainer with a replay buffer */
    ebm_model_mlp_prior(&m, 2, 4, EBM_ACT_SILU, 0.0f, 1);
    ebm_model_save(&m, "tests/fuzz_corpus/ckpt/model.ckpt", &err);
    ebm_train_config_default(&c);
    c.batch = 4; c.start = EBM_START_PERSISTENT; c.buffer_size = 8; c.chain.n_steps = 2; c.shards = 2; /* shards: version 3 */
    if (ebm_trainer_init(&t, &m, &c, &err) == EBM_OK) {
        ebm_trainer_save(&t, "tests/fuzz_corpus/ckpt/trainer.ckpt", &err);
        ebm_trainer_free(&t);
    }
    /* an NCE trainer with its fitted noise (the sections of version 2) */
    c.start = EBM_START_UNIFORM; c.shards = 1; c.objective = EBM_OBJ_NCE; c.chain.aniso_th = 0.5f;
    if (ebm_trainer_init(&t, &m, &c, &err) == EBM_OK) {
        float pts[8] = { 0.1f, -0.2f, 0.5f, 0.3f, -0.4f, 0.0f, 0.2f, 0.9f };
        ebm_trainer_fit_noise(&t, pts, 4);
        ebm_trainer_save(&t, "tests/fuzz_corpus/ckpt/trainer_nce.ckpt", &err);
        ebm_trainer_free(&t);
    }
    { /* a latent EBM: generator, settings, iteration, prior (checkpoint kind 2) */
        ebm_model prior, gen;
        ebm_latent L;
        ebm_latent_config lc;
        ebm_latent_config_default(&lc);
        lc.batch = 2;
        ebm_model_mlp_prior(&prior, 2, 3, EBM_ACT_SILU, 0.0f, 1);
        ebm_model_init(&gen, 2, 1, 1);
        ebm_model_add_linear(&gen, 4, 1);
        ebm_model_alloc(&gen, 1);
        if (ebm_latent_init(&L, &prior, &gen, &lc, &err) == EBM_OK) {
            ebm_latent_save(&L, "tests/fuzz_corpus/ckpt/latent.ckpt", &err);
            ebm_latent_free(&L);
        }
        ebm_model_free(&prior); ebm_model_free(&gen);
    }
    ebm_model_free(&m);
    ebm_npy_save("tests/fuzz_corpus/npy/a.npy", a, 2, shape, &err);
    return 0;
}
