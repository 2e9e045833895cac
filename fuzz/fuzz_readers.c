/* libFuzzer targets for every file ebm.h reads (make fuzz; clang-14 with
   Debian's libclang-rt-14-dev). One source, one binary per reader, chosen by
   FUZZ_TARGET when built:
     1 idx     IDX images, raw or gzip (so the inflate too); a raw input
               of one dimension (byte 3 = 1) is read as the labels of a
               valid 5-image file;
     2 cifar   a CIFAR-10 binary batch;
     3 ckpt    a checkpoint, as a trainer's, a latent EBM's and as a model's (the evaluation
               classifier's weights are a model checkpoint), as given and
               with its CRC-32 made valid;
     4 npy     an NPY array.
   The input is written to a file (the readers take paths, and that is the
   path users' bytes take). The caps are lowered so that any allocation the
   sanitizers see is bounded by what a header may declare. */
#define EBM_DATA_MAX_BYTES ((size_t)1 << 24)
#define EBM_CKPT_MAX_BYTES ((size_t)1 << 24)
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The scratch files are named by the process, and removed when libFuzzer
   exits normally (a crash keeps them; libFuzzer saves the input anyway). */
static void scratch_name(char *path, size_t n, const char *what)
{
    snprintf(path, n, "/tmp/ebm_fuzz_%s_%ld", what, (long)getpid());
}

static void scratch_remove(void)
{
    char path[128];
    scratch_name(path, sizeof path, "in");
    remove(path);
    scratch_name(path, sizeof path, "images");
    remove(path);
}

static const char *scratch(const char *what)
{
    static char path[2][128];
    static int registered;
    const int slot = strcmp(what, "in") == 0 ? 0 : 1; /* one buffer per name: both paths are used at once */
    if (!registered) registered = atexit(scratch_remove) == 0;
    scratch_name(path[slot], sizeof path[slot], what);
    return path[slot];
}

static int put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    if (n) fwrite(p, 1, n, f);
    return fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = scratch("in");
    ebm_error err;
    if (put(path, data, size) != 0) return 0;
#if FUZZ_TARGET == 1
    {
        ebm_dataset ds;
        if (size >= 4 && data[3] == 1) { /* as the labels of 5 valid 2x2 images */
            static const uint8_t images[16 + 20] = { 0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2 };
            const char *ipath = scratch("images");
            if (put(ipath, images, sizeof images) == 0 && ebm_idx_load(&ds, ipath, path, &err) == EBM_OK) ebm_dataset_free(&ds);
        } else if (ebm_idx_load(&ds, path, NULL, &err) == EBM_OK)
            ebm_dataset_free(&ds);
    }
#elif FUZZ_TARGET == 2
    {
        ebm_dataset ds;
        if (ebm_cifar10_load(&ds, &path, 1, &err) == EBM_OK) ebm_dataset_free(&ds);
    }
#elif FUZZ_TARGET == 3
    {
        ebm_model m;
        ebm_trainer t;
        int pass;
        for (pass = 0; pass < 2; pass++) {
            if (pass == 1) { /* again with a valid CRC-32, so mutations reach the parser behind the checksum */
                uint8_t *fixed;
                uint32_t crc;
                if (size < 8 || !(fixed = (uint8_t *)malloc(size))) break;
                memcpy(fixed, data, size);
                crc = ebm__crc32(0, fixed, size - 4);
                fixed[size - 4] = (uint8_t)crc; fixed[size - 3] = (uint8_t)(crc >> 8);
                fixed[size - 2] = (uint8_t)(crc >> 16); fixed[size - 1] = (uint8_t)(crc >> 24);
                put(path, fixed, size);
                free(fixed);
            }
            if (ebm_trainer_load(&t, &m, path, &err) == EBM_OK) { ebm_trainer_free(&t); ebm_model_free(&m); }
            if (ebm_model_load(&m, path, &err) == EBM_OK) ebm_model_free(&m);
            {
                ebm_latent L;
                ebm_model lp, lg;
                if (ebm_latent_load(&L, &lp, &lg, path, &err) == EBM_OK) { ebm_latent_free(&L); ebm_model_free(&lp); ebm_model_free(&lg); }
            }
        }
    }
#elif FUZZ_TARGET == 4
    {
        float *x = NULL;
        int nd, shape[4];
        if (ebm_npy_load(path, &x, &nd, shape, &err) == EBM_OK) free(x);
    }
#else
#error "build with -DFUZZ_TARGET=1..4"
#endif
    return 0;
}
