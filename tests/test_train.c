/* Tests of the data readers, file formats, the trainer and checkpoints.
   Included by test_main.c (one harness, one binary per build). */

/* An IDX file (20 images of 8x8) gzip-compressed by Python's gzip at level 9:
   one dynamic-Huffman block. Its pixels sum to 161093. */
static const unsigned char idx_gz_dynamic[] = { 31,139,8,0,0,0,0,0,2,3,85,148,33,80,170,65,28,196,119,230,141,51,142,197,242,21,10,133,66,177,80,40,20,10,197,98,177,80,44,20,202,43,22,139,51,59,20,11,197,242,10,197,66,161,80,44,20,10,133,66,161,88,44,22,10,133,66,222,183,255,187,3,53,124,109,111,231,119,187,123,31,112,249,7,64,229,239,50,125,141,222,112,60,223,170,222,165,102,56,176,243,0,174,85,73,207,2,174,91,247,79,90,242,234,230,142,224,231,5,249,247,245,93,104,104,40,108,81,239,14,52,83,91,207,111,43,89,168,137,190,116,115,247,248,207,66,221,90,200,98,77,118,7,208,230,80,235,60,112,10,80,125,159,216,249,4,133,47,232,21,31,96,111,200,249,246,88,239,234,101,182,57,192,66,173,89,81,207,144,133,212,100,137,171,176,134,173,97,107,160,1,216,218,12,211,53,208,182,35,195,241,105,178,252,178,80,92,36,6,188,127,72,137,225,88,151,97,55,172,201,12,220,87,8,6,193,39,62,47,154,183,12,134,70,207,108,219,163,186,3,154,65,120,24,157,133,68,11,97,173,27,18,139,79,52,147,53,26,28,142,101,216,17,215,251,42,221,10,106,221,195,57,92,201,176,223,12,14,44,24,148,175,87,35,71,211,245,158,166,38,119,41,48,54,229,91,5,195,80,115,28,209,29,188,184,139,90,199,66,236,171,182,32,237,212,34,35,7,100,107,51,152,154,8,71,153,97,10,2,125,189,233,59,7,133,80,33,124,7,27,37,135,176,222,192,93,192,12,85,155,75,41,193,234,162,201,19,195,88,73,104,195,16,202,57,40,246,176,34,105,107,199,228,46,0,83,187,139,152,1,102,169,221,17,232,91,33,2,187,134,204,192,84,218,66,76,12,57,48,164,46,130,129,29,138,82,56,158,3,59,37,219,227,120,206,2,171,60,28,195,246,225,235,9,233,132,167,38,249,68,12,71,117,14,74,14,76,183,178,112,229,192,78,123,56,117,81,54,169,52,247,20,49,59,111,216,129,69,136,71,50,39,123,234,66,41,7,195,186,102,120,147,106,231,154,233,154,19,195,227,7,126,37,123,160,175,100,6,69,23,43,48,134,83,222,133,187,200,12,185,11,100,235,180,176,82,154,18,67,129,37,60,28,11,189,201,58,34,98,214,144,167,230,19,136,7,20,123,136,133,169,172,252,20,88,234,34,231,160,252,210,126,230,0,225,53,54,217,83,48,48,11,89,30,241,211,132,153,225,59,7,166,235,161,88,35,91,195,139,68,126,196,22,158,199,235,191,196,49,253,22,12,219,201,15,40,237,97,23,195,65,102,64,212,92,126,36,189,33,206,176,76,165,93,91,200,51,44,245,163,139,136,24,249,1,101,134,212,69,89,57,45,212,175,46,232,61,200,227,245,143,164,205,159,57,32,71,76,37,134,255,184,53,231,239,16,5,0,0 };
/* An IDX label file (5 labels 1..5), gzip level 9: one fixed-Huffman block. */
static const unsigned char idx_gz_fixed[] = { 31,139,8,0,0,0,0,0,2,3,99,96,224,96,100,96,96,96,101,100,98,102,97,5,0,163,51,145,139,13,0,0,0 };

static int write_bytes(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(p, 1, n, f);
    return fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    unsigned char *p = NULL;
    ebm_error e;
    if (ebm__read_file(path, (size_t)1 << 30, &p, n, &e) != EBM_OK) return NULL;
    return p;
}

static void test_idx_reader(void)
{
    ebm_dataset ds;
    ebm_error e;
    unsigned char raw[16 + 3 * 4 * 5], lab[8 + 3], *bad;
    long sum = 0;
    size_t i, n;
    int k;
    /* gzip, dynamic and fixed Huffman blocks, as written by another encoder */
    write_bytes("t_img.gz", idx_gz_dynamic, sizeof idx_gz_dynamic);
    CHECK(ebm_idx_load(&ds, "t_img.gz", NULL, &e) == EBM_OK, "dynamic-block gzip: %s", e.msg);
    CHECK(ds.n == 20 && ds.h == 8 && ds.w == 8 && ds.c == 1 && ds.labels == NULL, "shape %d %d %d %d", ds.n, ds.h, ds.w, ds.c);
    for (i = 0; ds.pixels && i < 20 * 64; i++) sum += ds.pixels[i];
    CHECK(sum == 161093, "pixel sum %ld, expected 161093", sum);
    ebm_dataset_free(&ds);
    write_bytes("t_lab5.gz", idx_gz_fixed, sizeof idx_gz_fixed);
    {
        unsigned char *p = read_bytes("t_lab5.gz", &n), out[16];
        size_t got = 0;
        CHECK(p && ebm__decode("t", p, n, out, 13, 0, &got, &e) == EBM_OK && got == 13 && out[8] == 1 && out[12] == 5, "fixed-block gzip: %s", e.msg);
        CHECK(p && ebm__decode("t", p, n, out, 12, 0, &got, &e) == EBM_EFORMAT, "a stream longer than its declared size was accepted");
        CHECK(p && ebm__decode("t", p, n, out, 8, 1, &got, &e) == EBM_OK && got == 8, "stop-when-full did not stop cleanly");
        free(p);
    }
    /* raw IDX with labels: 3 images of 4x5 */
    memset(raw, 0, sizeof raw);
    raw[2] = 8; raw[3] = 3; raw[7] = 3; raw[11] = 4; raw[15] = 5;
    for (k = 0; k < 60; k++) raw[16 + k] = (unsigned char)(k * 4);
    memset(lab, 0, sizeof lab);
    lab[2] = 8; lab[3] = 1; lab[7] = 3; lab[8] = 7; lab[9] = 0; lab[10] = 9;
    write_bytes("t_img.idx", raw, sizeof raw);
    write_bytes("t_lab.idx", lab, sizeof lab);
    CHECK(ebm_idx_load(&ds, "t_img.idx", "t_lab.idx", &e) == EBM_OK, "raw idx: %s", e.msg);
    CHECK(ds.n == 3 && ds.h == 4 && ds.w == 5 && ds.labels && ds.labels[0] == 7 && ds.labels[2] == 9 && ds.pixels[59] == 236, "raw idx contents");
    {
        float x[20];
        ebm_dataset_get(&ds, 2, 1, x);
        CHECK(x[0] == 160 * (2.0f / 255.0f) - 1.0f && x[19] == 236 * (2.0f / 255.0f) - 1.0f, "pixels to [-1, 1]: %g %g", x[0], x[19]);
    }
    ebm_dataset_free(&ds);
    /* hostile files: each refused with EFORMAT and a message, nothing leaked */
    write_bytes("t_bad", raw, sizeof raw - 1); /* truncated */
    CHECK(ebm_idx_load(&ds, "t_bad", NULL, &e) == EBM_EFORMAT && strstr(e.msg, "truncated"), "truncated: %s", e.msg);
    raw[3] = 2; write_bytes("t_bad", raw, sizeof raw); raw[3] = 3; /* wrong dimension count */
    CHECK(ebm_idx_load(&ds, "t_bad", NULL, &e) == EBM_EFORMAT, "wrong magic accepted");
    raw[4] = 0x7f; write_bytes("t_bad", raw, sizeof raw); raw[4] = 0; /* declares 2 GB */
    CHECK(ebm_idx_load(&ds, "t_bad", NULL, &e) == EBM_EFORMAT && strstr(e.msg, "too large"), "oversized header: %s", e.msg);
    lab[9] = 10; write_bytes("t_lab.idx", lab, sizeof lab);
    CHECK(ebm_idx_load(&ds, "t_img.idx", "t_lab.idx", &e) == EBM_EFORMAT, "label 10 accepted");
    lab[9] = 0; lab[7] = 2; write_bytes("t_lab.idx", lab, sizeof lab);
    CHECK(ebm_idx_load(&ds, "t_img.idx", "t_lab.idx", &e) == EBM_EFORMAT, "label count mismatch accepted");
    bad = (unsigned char *)malloc(sizeof idx_gz_dynamic);
    memcpy(bad, idx_gz_dynamic, sizeof idx_gz_dynamic);
    bad[200] ^= 0x10; write_bytes("t_bad", bad, sizeof idx_gz_dynamic); /* corrupted deflate data */
    CHECK(ebm_idx_load(&ds, "t_bad", NULL, &e) == EBM_EFORMAT, "corrupted gzip accepted");
    write_bytes("t_bad", idx_gz_dynamic, sizeof idx_gz_dynamic - 20); /* truncated gzip */
    CHECK(ebm_idx_load(&ds, "t_bad", NULL, &e) == EBM_EFORMAT, "truncated gzip accepted");
    {
        ebm_rng r;
        r.seed = 5; r.stream = 1;
        for (k = 0; k < 20; k++) { /* random bytes, with and without a gzip magic */
            float f[200];
            unsigned char b[800];
            ebm_rng_uniform(&r, (uint64_t)k, 0, 0.0f, 256.0f, f, 200);
            for (i = 0; i < 800; i++) b[i] = (unsigned char)f[i % 200] ^ (unsigned char)(i * 31);
            if (k & 1) { b[0] = 0x1f; b[1] = 0x8b; b[2] = 8; b[3] = 0; }
            write_bytes("t_bad", b, 100 + 35 * (size_t)k);
            CHECK(ebm_idx_load(&ds, "t_bad", NULL, &e) != EBM_OK && e.msg[0], "random file %d accepted", k);
        }
    }
    CHECK(ebm_idx_load(&ds, "t_does_not_exist", NULL, &e) == EBM_EIO, "missing file");
    free(bad);
    remove("t_img.gz"); remove("t_lab5.gz"); remove("t_img.idx"); remove("t_lab.idx"); remove("t_bad");
}

static void test_cifar10_reader(void)
{
    unsigned char rec[3 * 3073];
    const char *paths[2] = { "t_c1.bin", "t_c2.bin" };
    ebm_dataset ds;
    ebm_error e;
    int r, j;
    for (r = 0; r < 3; r++) {
        rec[r * 3073] = (unsigned char)(r + 2);
        for (j = 0; j < 3072; j++) rec[r * 3073 + 1 + j] = (unsigned char)((j / 1024) * 50 + r + (j % 1024) % 7); /* plane * 50 + ... */
    }
    write_bytes("t_c1.bin", rec, 2 * 3073);
    write_bytes("t_c2.bin", rec + 2 * 3073, 3073);
    CHECK(ebm_cifar10_load(&ds, paths, 2, &e) == EBM_OK, "cifar: %s", e.msg);
    CHECK(ds.n == 3 && ds.h == 32 && ds.w == 32 && ds.c == 3 && ds.labels[0] == 2 && ds.labels[2] == 4, "cifar shape/labels");
    /* channels last: pixel p of image r is (R, G, B) from the three planes */
    CHECK(ds.pixels && ds.pixels[3 * 5 + 0] == 0 + 0 + 5 && ds.pixels[3 * 5 + 1] == 50 + 5 && ds.pixels[3 * 5 + 2] == 100 + 5 &&
              ds.pixels[2 * 3072 + 3 * 8 + 2] == 100 + 2 + 1, "cifar layout");
    ebm_dataset_free(&ds);
    write_bytes("t_c2.bin", rec, 3072); /* not whole records */
    CHECK(ebm_cifar10_load(&ds, paths, 2, &e) == EBM_EFORMAT, "truncated cifar accepted");
    rec[0] = 10;
    write_bytes("t_c2.bin", rec, 3073);
    CHECK(ebm_cifar10_load(&ds, paths, 2, &e) == EBM_EFORMAT && strstr(e.msg, "label"), "bad label accepted: %s", e.msg);
    remove("t_c1.bin"); remove("t_c2.bin");
}

/* PNG: the file's chunks carry correct CRCs, and inflating its IDAT gives back
   the filtered rows of the image. */
static void test_png_writer(void)
{
    unsigned char img[3 * 7 * 5], *p, out[200];
    size_t n, off = 8, got = 0;
    int i, seen_idat = 0;
    ebm_error e;
    for (i = 0; i < 3 * 7 * 5; i++) img[i] = (unsigned char)(i * 13);
    CHECK(ebm_png_save("t.png", img, 7, 5, 3, "a test", &e) == EBM_OK, "png: %s", e.msg);
    p = read_bytes("t.png", &n);
    CHECK(p && n > 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0, "png signature");
    while (p && off + 12 <= n) {
        uint32_t len = ebm__be32(p + off);
        CHECK(off + 12 + len <= n, "chunk overruns the file");
        if (off + 12 + len > n) break;
        CHECK(ebm__crc32(0, p + off + 4, 4 + len) == ebm__be32(p + off + 8 + len), "chunk CRC");
        if (!memcmp(p + off + 4, "IDAT", 4)) {
            ebm__inflater s;
            memset(&s, 0, sizeof s);
            s.src = p + off + 10; s.len = len - 6; s.dst = out; s.cap = sizeof out;
            CHECK(ebm__inflate(&s, 0) == 0, "IDAT does not inflate");
            got = s.out;
            CHECK(ebm__be32(p + off + 8 + len - 4) == ebm__adler32(1, out, got), "zlib Adler-32");
            seen_idat = 1;
        }
        off += 12 + len;
    }
    CHECK(seen_idat && got == 5 * (1 + 21), "IDAT: %lu bytes", (unsigned long)got);
    for (i = 0; i < 5 && got == 110; i++) CHECK(out[i * 22] == 0 && !memcmp(out + i * 22 + 1, img + i * 21, 21), "row %d", i);
    CHECK(ebm_png_save("t.png", img, 0, 5, 3, NULL, &e) == EBM_EINVAL, "zero width accepted");
    free(p);
    p = read_bytes("t.png", &n); /* a refused call leaves the file that was there */
    CHECK(p && n > 8 && memcmp(p, "\x89PNG", 4) == 0, "png_save with bad arguments damaged or removed the existing file");
    free(p);
    remove("t.png");
}

static void test_npy_roundtrip(void)
{
    float a[2 * 3 * 4], *b = NULL;
    int shape[3] = { 2, 3, 4 }, s2[4], nd = 0, i, same = 1;
    ebm_error e;
    for (i = 0; i < 24; i++) a[i] = (float)i * 0.5f - 3;
    CHECK(ebm_npy_save("t.npy", a, 3, shape, &e) == EBM_OK, "save");
    CHECK(ebm_npy_load("t.npy", &b, &nd, s2, &e) == EBM_OK, "load: %s", e.msg);
    for (i = 0; b && i < 24; i++) same &= a[i] == b[i];
    CHECK(nd == 3 && s2[0] == 2 && s2[1] == 3 && s2[2] == 4 && same, "roundtrip");
    free(b);
    write_bytes("t.npy", (const unsigned char *)"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'", 26);
    CHECK(ebm_npy_load("t.npy", &b, &nd, s2, &e) == EBM_EFORMAT, "bad npy accepted");
    remove("t.npy");
}

/* A small trainer on 2-D data: MLP energy, persistent chains. */
static void toy_trainer(ebm_trainer *t, ebm_model *m, int start, float lr, uint64_t seed)
{
    ebm_train_config c;
    ebm_error e;
    ebm_model_mlp_prior(m, 2, 32, EBM_ACT_SILU, 0.0f, seed);
    ebm_train_config_default(&c);
    c.batch = 32; c.start = start; c.buffer_size = 100; c.reinit = 0.1f;
    c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = 0.3f; c.chain.box = EBM_BOX_REFLECT; c.chain.lo = -4.5f; c.chain.hi = 4.5f; c.chain.n_steps = 5;
    c.data_noise = 0.01f; c.lr = lr; c.energy_reg = 0.01f; c.schedule = EBM_LR_COSINE; c.total_iters = 40; c.seed = seed;
    CHECK(ebm_trainer_init(t, m, &c, &e) == EBM_OK, "trainer_init: %s", e.msg);
}

static void toy_batch(long iter, float *x)
{
    ebm_rng r;
    r.seed = 3; r.stream = 77;
    ebm_toy_sample(EBM_TOY_8GAUSSIANS, &r, (uint64_t)iter * 32, x, 32);
}

/* A run interrupted by a checkpoint and resumed equals, bit for bit, one that
   never stopped: model, optimiser moments, replay buffer, diagnostics. */
static void test_checkpoint_resume_bit_identical(void)
{
    ebm_trainer a, b;
    ebm_model ma, mb;
    ebm_error e;
    float x[64], saved[100 * 2];
    int i, s;
    for (s = EBM_START_UNIFORM; s <= EBM_START_PERSISTENT; s++) {
        toy_trainer(&a, &ma, s, 1e-2f, 9);
        for (i = 0; i < 20; i++) { toy_batch(i, x); CHECK(ebm_trainer_step(&a, x) == EBM_OK, "step: %s", a.err.msg); }
        CHECK(ebm_trainer_save(&a, "t.ckpt", &e) == EBM_OK, "save: %s", e.msg);
        if (a.buffer) memcpy(saved, a.buffer, sizeof saved);
        for (i = 20; i < 30; i++) { toy_batch(i, x); ebm_trainer_step(&a, x); }
        CHECK(ebm_trainer_load(&b, &mb, "t.ckpt", &e) == EBM_OK, "load: %s", e.msg);
        CHECK(b.iter == 20, "iteration %ld", b.iter);
        CHECK(!a.buffer || (b.buffer && !memcmp(saved, b.buffer, sizeof saved)), "the replay buffer did not round-trip");
        CHECK(!memcmp(&a.cfg, &b.cfg, sizeof a.cfg), "the settings did not round-trip");
        for (i = 20; i < 30 && b.model; i++) { toy_batch(i, x); ebm_trainer_step(&b, x); }
        CHECK(b.model && memcmp(ma.params, mb.params, ma.n_params * 4) == 0 && memcmp(ma.m1, mb.m1, ma.n_params * 4) == 0 &&
                  memcmp(ma.m2, mb.m2, ma.n_params * 4) == 0 && a.d_t == b.d_t && a.r_t == b.r_t,
              "start %s: resumed run differs", ebm_start_name(s));
        if (s == EBM_START_PERSISTENT) CHECK(b.buffer && memcmp(a.buffer, b.buffer, 100 * 2 * 4) == 0, "replay buffer differs");
        ebm_trainer_free(&a); ebm_model_free(&ma);
        ebm_trainer_free(&b); ebm_model_free(&mb);
    }
    remove("t.ckpt");
}

/* A corrupted or truncated checkpoint is refused with EFORMAT and a reason. */
static void test_checkpoint_refuses_damage(void)
{
    ebm_trainer a, b;
    ebm_model ma, mb;
    ebm_error e;
    unsigned char *p;
    size_t n;
    toy_trainer(&a, &ma, EBM_START_PERSISTENT, 1e-2f, 4);
    CHECK(ebm_trainer_save(&a, "t.ckpt", &e) == EBM_OK, "save");
    p = read_bytes("t.ckpt", &n);
    CHECK(p != NULL, "read back");
    if (p) {
        p[n / 2] ^= 1;
        write_bytes("t_bad.ckpt", p, n);
        CHECK(ebm_trainer_load(&b, &mb, "t_bad.ckpt", &e) == EBM_EFORMAT && strstr(e.msg, "checksum"), "corrupted: %s", e.msg);
        p[n / 2] ^= 1;
        write_bytes("t_bad.ckpt", p, n - 7);
        CHECK(ebm_trainer_load(&b, &mb, "t_bad.ckpt", &e) == EBM_EFORMAT, "truncated checkpoint accepted");
        write_bytes("t_bad.ckpt", p, 10);
        CHECK(ebm_trainer_load(&b, &mb, "t_bad.ckpt", &e) == EBM_EFORMAT, "stub checkpoint accepted");
        free(p);
    }
    CHECK(ebm_model_load(&mb, "t.ckpt", &e) == EBM_OK && mb.n_params == ma.n_params && !memcmp(mb.params, ma.params, ma.n_params * 4),
          "model from a trainer checkpoint: %s", e.msg);
    ebm_model_free(&mb);
    {   /* a NaN in the model or the buffer: refused, and the good file stays */
        float keep = ma.params[3];
        ma.params[3] = (float)NAN;
        CHECK(ebm_trainer_save(&a, "t.ckpt", &e) == EBM_EDIVERGED && strstr(e.msg, "NaN"), "a NaN model was saved: %s", e.msg);
        ma.params[3] = keep;
        a.buffer[17] = (float)INFINITY;
        CHECK(ebm_model_save(&ma, "t.ckpt", &e) == EBM_OK && ebm_trainer_save(&a, "t.ckpt", &e) == EBM_EDIVERGED, "an infinite buffer was saved");
        CHECK(ebm_model_load(&mb, "t.ckpt", &e) == EBM_OK && !memcmp(mb.params, ma.params, ma.n_params * 4), "the good file was not kept: %s", e.msg);
        ebm_model_free(&mb);
    }
    ebm_trainer_free(&a); ebm_model_free(&ma);
    remove("t.ckpt"); remove("t_bad.ckpt");
}

/* An absurd learning rate: the trainer reports divergence and leaves the
   model as it was before the failing iteration (never a non-finite step). */
static void test_trainer_detects_divergence(void)
{
    ebm_trainer a;
    ebm_model ma;
    float x[64], *before;
    int i, rc = EBM_OK, finite = 1;
    size_t j;
    toy_trainer(&a, &ma, EBM_START_UNIFORM, 1e6f, 2);
    a.cfg.schedule = EBM_LR_CONSTANT;
    a.cfg.energy_reg = 0;
    a.cfg.optimizer = EBM_OPT_SGD;
    before = (float *)malloc(ma.n_params * sizeof *before);
    for (i = 0; i < 50 && rc == EBM_OK; i++) {
        memcpy(before, ma.params, ma.n_params * sizeof *before);
        toy_batch(i, x);
        rc = ebm_trainer_step(&a, x);
    }
    CHECK(rc == EBM_EDIVERGED && strstr(a.err.msg, "diverged"), "lr 1e6 not reported as divergence (rc %d after %d iterations)", rc, i);
    for (j = 0; j < ma.n_params; j++) finite &= ma.params[j] == ma.params[j] && fabsf(ma.params[j]) < 1e30f;
    CHECK(finite && memcmp(before, ma.params, ma.n_params * 4) == 0, "the diverging iteration changed the model");
    free(before);
    ebm_trainer_free(&a); ebm_model_free(&ma);
}

/* The trainer's parameter gradient is that of its loss, mean f(x-) - mean
   f(x+) + alpha (mean f(x+)^2 + mean f(x-)^2): with K = 0 data-started chains
   and no noise the loss is a function of theta alone; one SGD step of lr 1
   reveals the gradient, compared with central differences in double. */
static void test_trainer_gradient_is_the_loss_gradient(void)
{
    ebm_trainer a;
    ebm_model m;
    ebm_train_config c;
    ebm_error e;
    float x[64], xn[64], *theta, *after;
    double worst = 0;
    size_t j;
    int i;
    ebm_model_mlp_prior(&m, 2, 8, EBM_ACT_SILU, 0.0f, 5);
    ebm_train_config_default(&c);
    c.batch = 32; c.start = EBM_START_DATA; c.start_noise = 0.5f; c.chain.n_steps = 0; c.data_noise = 0;
    c.optimizer = EBM_OPT_SGD; c.lr = 1.0f; c.energy_reg = 3.0f; c.schedule = EBM_LR_CONSTANT; c.max_abs_dt = 1e20f;
    CHECK(ebm_trainer_init(&a, &m, &c, &e) == EBM_OK, "init: %s", e.msg);
    toy_batch(0, x);
    theta = (float *)malloc(m.n_params * sizeof *theta);
    memcpy(theta, m.params, m.n_params * sizeof *theta);
    /* the chain starts x-: data + 0.5 noise, as the trainer draws them */
    {
        ebm_rng rs;
        size_t k;
        rs.seed = c.seed; rs.stream = EBM__S_START;
        for (i = 0; i < 32; i++) {
            float xi[2];
            ebm__rng_normal_at(&rs, (uint64_t)i, 0, 0, xi, 2);
            for (k = 0; k < 2; k++) xn[2 * i + k] = x[2 * i + k] + 0.5f * xi[k];
        }
    }
    CHECK(ebm_trainer_step(&a, x) == EBM_OK, "step: %s", a.err.msg);
    after = (float *)malloc(m.n_params * sizeof *after);
    memcpy(after, m.params, m.n_params * sizeof *after);
    for (j = 0; j < m.n_params; j += 37) {
        double lp[2], h = 1e-2, g_fd, g_tr = (double)theta[j] - after[j];
        int sgn;
        for (sgn = 0; sgn < 2; sgn++) {
            float fpz[32], fnz[32];
            double fp = 0, fn = 0, fp2 = 0, fn2 = 0;
            memcpy(m.params, theta, m.n_params * sizeof *theta);
            m.params[j] = (float)(theta[j] + (sgn ? -h : h));
            ebm_model_score(&m, a.graph, x, 32, fpz, NULL);
            ebm_model_score(&m, a.graph, xn, 32, fnz, NULL);
            for (i = 0; i < 32; i++) { fp += fpz[i] / 32.0; fn += fnz[i] / 32.0; fp2 += (double)fpz[i] * fpz[i] / 32.0; fn2 += (double)fnz[i] * fnz[i] / 32.0; }
            lp[sgn] = fn - fp + 3.0 * (fp2 + fn2);
        }
        g_fd = (lp[0] - lp[1]) / (2 * h);
        if (fabs(g_fd - g_tr) / (fabs(g_fd) + 1e-3) > worst) worst = fabs(g_fd - g_tr) / (fabs(g_fd) + 1e-3);
    }
    CHECK(worst < 2e-2, "trainer gradient vs finite differences: worst relative error %.3g", worst);
    free(theta); free(after);
    ebm_trainer_free(&a); ebm_model_free(&m);
}

static void test_trainer_bad_settings(void)
{
    ebm_trainer t;
    ebm_model m;
    ebm_train_config c;
    ebm_error e;
    ebm_model_mlp_prior(&m, 2, 8, EBM_ACT_SILU, 0.0f, 5);
    ebm_train_config_default(&c);
    c.batch = 0;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && e.msg[0], "batch 0 accepted");
    ebm_train_config_default(&c);
    c.reinit = 2;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "reinit 2 accepted");
    ebm_train_config_default(&c);
    c.schedule = EBM_LR_COSINE; c.total_iters = 0;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "cosine schedule without a length accepted");
    ebm_train_config_default(&c);
    c.restart = EBM_START_DATA;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "data restarts accepted");
    ebm_train_config_default(&c);
    c.lr = -1;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "negative lr accepted");
    ebm_train_config_default(&c);
    c.objective = EBM_OBJ_COUNT;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "objective"), "unknown objective accepted");
    /* ML's chains are checked at init, not at the first step */
    ebm_train_config_default(&c);
    c.chain.n_steps = -5;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "langevin: -5 steps"), "ML with -5 chain steps accepted (%s)", e.msg);
    ebm_train_config_default(&c);
    c.chain.form = EBM_LANGEVIN_STEP_NOISE; c.chain.noise = -1;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "noise -1"), "ML with chain noise -1 accepted (%s)", e.msg);
    ebm_train_config_default(&c);
    c.chain.box = EBM_BOX_CLAMP; c.chain.lo = 1; c.chain.hi = -1;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "box"), "ML with an empty box accepted (%s)", e.msg);
    c.objective = EBM_OBJ_DSM; /* no chains in its training step: the unused settings are not its business */
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_OK, "DSM refused for its unused chain settings: %s", e.msg);
    ebm_trainer_free(&t);
    /* uniform starts draw from the chain's box even where the chain has no wall */
    ebm_train_config_default(&c);
    c.chain.box = EBM_BOX_NONE; c.chain.lo = 0; c.chain.hi = 0;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "uniform starts"), "ML with uniform starts from an empty box accepted (%s)", e.msg);
    c.start = EBM_START_PERSISTENT; c.restart = EBM_START_UNIFORM;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "uniform starts"), "persistent ML with uniform restarts from an empty box accepted");
    c.start = EBM_START_GAUSSIAN;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_OK, "Gaussian starts refused for a box they do not use: %s", e.msg);
    ebm_trainer_free(&t);
    c.start = EBM_START_UNIFORM; c.objective = EBM_OBJ_DSM;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_OK, "DSM refused for its unused chain settings: %s", e.msg);
    {
        float xs[4 * 2];
        CHECK(ebm_trainer_sample(&t, 0, NULL, xs, 4, 1) == EBM_EINVAL && strstr(t.err.msg, "uniform starts"),
              "DSM sampled from uniform starts in an empty box (%s)", t.err.msg);
    }
    ebm_trainer_free(&t);
    ebm_train_config_default(&c);
    c.objective = EBM_OBJ_DSM; c.sigma = 0;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL && strstr(e.msg, "DSM"), "DSM with sigma 0 accepted");
    c.sigma = 0.5f; c.n_sigmas = 4; c.sigma_max = 0.2f;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "DSM levels with sigma_max < sigma accepted");
    ebm_train_config_default(&c);
    c.objective = EBM_OBJ_FD_SSM; c.fd_eps = 0;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "FD-SSM with step 0 accepted");
    c.fd_eps = 0.1f; c.proj = 7;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_EINVAL, "unknown projection accepted");
    ebm_train_config_default(&c);
    c.objective = EBM_OBJ_NCE;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_OK, "NCE: %s", e.msg);
    CHECK(ebm_trainer_fit_noise(&t, NULL, 5) == EBM_EINVAL && ebm_trainer_fit_noise(&t, t.x, 1) == EBM_EINVAL, "fit_noise on nothing accepted");
    ebm_trainer_free(&t);
    ebm_model_free(&m);
}

/* A 2-D Gaussian mixture written as an energy with reference q = N(0, s^2 I):
   f(x) = (softplus(u) + softplus(-u)) / 2 = log(2 cosh(u/2)), u = 2 mu.x / s^2
   + log(w1/w2), gives exp(f) q proportional to w1 N(mu, s^2) + w2 N(-mu, s^2). */
static void mixture_energy(ebm_model *m, const double mu[2], double s, double w1)
{
    ebm_model_init(m, 2, 1, 1);
    ebm_model_add_linear(m, 2, 1);
    ebm_model_add_act(m, EBM_ACT_SOFTPLUS, 0.0f);
    ebm_model_add_linear(m, 1, 0);
    ebm_model_alloc(m, 1);
    /* linear weights are (I, O): w[i * O + o]; then the biases */
    m->params[m->layer[0].w_off + 0] = (float)(2 * mu[0] / (s * s)); m->params[m->layer[0].w_off + 1] = (float)(-2 * mu[0] / (s * s));
    m->params[m->layer[0].w_off + 2] = (float)(2 * mu[1] / (s * s)); m->params[m->layer[0].w_off + 3] = (float)(-2 * mu[1] / (s * s));
    m->params[m->layer[0].b_off + 0] = (float)log(w1 / (1 - w1)); m->params[m->layer[0].b_off + 1] = (float)-log(w1 / (1 - w1));
    m->params[m->layer[2].w_off + 0] = 0.5f; m->params[m->layer[2].w_off + 1] = 0.5f;
}

/* Moments along mu's direction (a) and across it (b), the fraction on mu's
   side, each with its standard error from the samples themselves. */
typedef struct { double mean_a, var_a, var_b, frac, se_mean, se_var_a, se_var_b, se_frac; } mix_stats;
static mix_stats mixture_stats(const float *x, int n, const double mu[2])
{
    mix_stats st;
    double nm = sqrt(mu[0] * mu[0] + mu[1] * mu[1]), ua = mu[0] / nm, ub = mu[1] / nm, m4a = 0, m4b = 0, sb = 0;
    int i;
    memset(&st, 0, sizeof st);
    for (i = 0; i < n; i++) {
        double a = x[2 * i] * ua + x[2 * i + 1] * ub;
        st.mean_a += a / n; st.frac += (a > 0) / (double)n; sb += (-x[2 * i] * ub + x[2 * i + 1] * ua) / n;
    }
    for (i = 0; i < n; i++) {
        double a = x[2 * i] * ua + x[2 * i + 1] * ub - st.mean_a, b = -x[2 * i] * ub + x[2 * i + 1] * ua - sb;
        st.var_a += a * a / n; st.var_b += b * b / n; m4a += a * a * a * a / n; m4b += b * b * b * b / n;
    }
    st.se_mean = sqrt(st.var_a / n); st.se_frac = sqrt(st.frac * (1 - st.frac) / n);
    st.se_var_a = sqrt((m4a - st.var_a * st.var_a) / n); st.se_var_b = sqrt((m4b - st.var_b * st.var_b) / n);
    return st;
}

/* The mixture both sampler tests use: 0.7 N(mu, s^2) + 0.3 N(-mu, s^2). */
static const double mix_mu[2] = { 0.8, 0.6 }, mix_s = 0.6, mix_w1 = 0.7, mix_nm = 1.0;

/* n samples x against the mixture's exact law (see below): mean and both
   variances (the latter allowed bias_a, bias_b on top) and the weight of
   mu's side, each within 5 standard errors. */
static void check_mixture_law(const float *x, int n, const char *who, double bias_a, double bias_b)
{
    const double s = mix_s, w1 = mix_w1, nm = mix_nm;
    const double mean_true = (2 * w1 - 1) * nm, var_a_true = s * s + nm * nm * (1 - (2 * w1 - 1) * (2 * w1 - 1)), var_b_true = s * s;
    const double phi = 0.5 * (1 + erf(nm / s / sqrt(2.0))), frac_true = w1 * phi + (1 - w1) * (1 - phi);
    mix_stats st = mixture_stats(x, n, mix_mu);
    CHECK(fabs(st.mean_a - mean_true) < 5 * st.se_mean, "%s: mean along mu %.4f, exact %.4f (5 se %.4f)", who, st.mean_a, mean_true, 5 * st.se_mean);
    CHECK(fabs(st.var_a - var_a_true) < 5 * st.se_var_a + bias_a, "%s: variance along mu %.4f, exact %.4f (5 se %.4f + bias %.4f)", who, st.var_a, var_a_true,
          5 * st.se_var_a, bias_a);
    CHECK(fabs(st.var_b - var_b_true) < 5 * st.se_var_b + bias_b, "%s: variance across mu %.4f, exact %.4f (5 se %.4f + bias %.4f)", who, st.var_b, var_b_true,
          5 * st.se_var_b, bias_b);
    CHECK(fabs(st.frac - frac_true) < 5 * st.se_frac, "%s: weight of mu's side %.4f, exact %.4f (5 se %.4f)", who, st.frac, frac_true, 5 * st.se_frac);
}

/* MALA (step adapted in burn-in, then fixed) and unadjusted Langevin on the
   mixture 0.7 N(mu, s^2) + 0.3 N(-mu, s^2), mu = (0.8, 0.6), s = 0.6, with
   8,000 independent chains from N(0, 1.5^2): the mean, variance along and
   across mu and the weight of mu's side agree with the exact values
     mean 0.4 |mu|, var along s^2 + |mu|^2 (1 - 0.4^2), var across s^2,
     P(side of mu) = 0.7 Phi(|mu|/s) + 0.3 Phi(-|mu|/s)
   within 5 standard errors (MALA: exact; 100 adapting steps, then 300).
   Unadjusted Langevin (600 steps of eps = 0.2) has a step-size bias of order
   eps^2; for a Gaussian of variance v it is v eps^2 / (4 v - eps^2) on the
   variance (1% here), so its variances are allowed 2 v eps^2 / 4 on top of
   the sampling error. */
static void test_samplers_on_2d_mixture(void)
{
    const double s = mix_s, var_a_true = s * s + mix_nm * mix_nm * (1 - (2 * mix_w1 - 1) * (2 * mix_w1 - 1)), var_b_true = s * s;
    const int n = 8000;
    ebm_model m;
    ebm_graph *g = new_graph(64);
    ebm_langevin cfg, ad;
    ebm_rng r, r0;
    float *x = falloc(2 * (size_t)n);
    double acc = 0;
    int i, method;
    mixture_energy(&m, mix_mu, s, mix_w1);
    r0.seed = 21; r0.stream = EBM_STREAM_USER + 9;
    for (method = 0; method < 2; method++) {
        double bias_a = 0, bias_b = 0;
        ebm_chain_start(EBM_START_GAUSSIAN, &r0, 0, 0, 0, 0, x, n, 2);
        for (i = 0; i < 2 * n; i++) x[i] *= 1.5f;
        ebm_langevin_default(&cfg);
        cfg.form = EBM_LANGEVIN_EPS; cfg.sigma_q = (float)s; cfg.box = EBM_BOX_NONE;
        r.seed = 5; r.stream = EBM_STREAM_USER + 10 + (uint32_t)method;
        if (method == 0) {
            cfg.eps = 0.1f; cfg.n_steps = 300;
            CHECK(ebm_mala_adapt(&m, g, &cfg, &r, 0, x, n, 100, 0.57, &ad) == EBM_OK, "adapt: %s", gmsg(g));
            CHECK(ebm_mala_run(&m, g, &ad, &r, 0, x, n, &acc, NULL) == EBM_OK, "mala: %s", gmsg(g));
            CHECK(acc > 0.47 && acc < 0.67, "MALA acceptance %.3f after adapting eps 0.1 -> %.3f towards 0.57", acc, (double)ad.eps);
        } else {
            cfg.eps = 0.2f; cfg.n_steps = 600;
            CHECK(ebm_langevin_run(&m, g, &cfg, &r, 0, x, n, NULL) == EBM_OK, "langevin: %s", gmsg(g));
            bias_a = 2 * var_a_true * cfg.eps * cfg.eps / 4; bias_b = 2 * var_b_true * cfg.eps * cfg.eps / 4;
        }
        check_mixture_law(x, n, method ? "langevin" : "mala", bias_a, bias_b);
    }
    free(x);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* A curved energy on 6x6 images: conv 3x3 (4) - SiLU - conv 6x6 (1). */
static void tiny_silu_net(ebm_model *m, uint64_t seed)
{
    ebm_model_init(m, 1, 6, 6);
    ebm_model_add_conv2d(m, 4, 3, 1, 1, 1);
    ebm_model_add_act(m, EBM_ACT_SILU, 0.0f);
    ebm_model_add_conv2d(m, 1, 6, 1, 0, 1);
    ebm_model_alloc(m, seed);
}

/* The gradient through a whole short-run chain (ALGORITHMS.md 3): with a SiLU
   net the Hessian terms are not zero, so dL/dz differs from the identity
   map; L = c . x_K for a random c, the directional derivative dL/dz . d
   against central differences of L along d (K = 4 steps of s = 0.3,
   tau = 0.05, no box), and with the Hessian term dropped the test must fail. */
static void test_chain_gradient_through_every_step(void)
{
    const int n = 3, K = 4, D = 36;
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    ebm_langevin cfg;
    ebm_rng r, rz;
    size_t bytes;
    float z[3 * 36], zp[3 * 36], c[3 * 36], d[3 * 36], gz[3 * 36], *st = falloc((size_t)(K + 1) * n * D);
    double dir, lp[2], fd, plain, dir_none = 0;
    int i, sgn, box;
    tiny_silu_net(&m, 3);
    for (i = 0; i < (int)m.n_params; i++) m.params[i] *= 3.0f; /* a curved energy */
    ebm_model_step_bytes(&m, n, EBM_STEP_SECOND_ORDER, &bytes, &e);
    ebm_graph_create(&g, 2 * bytes + 65536, &e);
    ebm_langevin_default(&cfg);
    cfg.step = 0.3f; cfg.noise = 0.05f; cfg.n_steps = K;
    r.seed = 8; r.stream = 3; rz.seed = 9; rz.stream = 4;
    ebm_chain_start(EBM_START_UNIFORM, &rz, 0, 0, -1, 1, z, n, D);
    ebm_chain_start(EBM_START_GAUSSIAN, &rz, 0, 1, 0, 0, c, n, D);
    ebm_chain_start(EBM_START_GAUSSIAN, &rz, 0, 2, 0, 0, d, n, D);
    /* no box (Taylor-mode products), a clamping wall (the same, the wall's
       derivative read off the states) and a reflecting one (a recorded
       backward pass differentiated again) */
    for (box = EBM_BOX_NONE; box <= EBM_BOX_REFLECT; box++) {
    cfg.box = box; cfg.lo = -1.1f; cfg.hi = 1.1f;
    dir = plain = 0;
    CHECK(ebm_chain_record(&m, g, &cfg, &r, 0, z, n, st, NULL) == EBM_OK, "record: %s", gmsg(g));
    {   /* the recorded chain equals one K-step run */
        float x[3 * 36];
        memcpy(x, z, sizeof x);
        ebm_langevin_run(&m, g, &cfg, &r, 0, x, n, NULL);
        CHECK(!memcmp(x, st + (size_t)K * n * D, sizeof x), "the recorded chain differs from ebm_langevin_run");
    }
    CHECK(ebm_chain_backward(&m, g, &cfg, &r, 0, st, NULL, n, c, gz) == EBM_OK, "backward: %s", gmsg(g));
    for (i = 0; i < n * D; i++) { dir += (double)gz[i] * d[i]; plain += (double)c[i] * d[i]; }
    for (sgn = 0; sgn < 2; sgn++) {
        const double h = 1e-3; /* small: a step of 1e-2 can carry a coordinate across a wall's kink */
        for (i = 0; i < n * D; i++) zp[i] = z[i] + (float)(sgn ? -h : h) * d[i];
        ebm_chain_record(&m, g, &cfg, &r, 0, zp, n, st, NULL);
        lp[sgn] = 0;
        for (i = 0; i < n * D; i++) lp[sgn] += (double)c[i] * st[(size_t)K * n * D + i];
    }
    fd = (lp[0] - lp[1]) / (2 * 1e-3);
    CHECK(fabs(dir - fd) < 1e-2 * (fabs(fd) + 1e-3), "box %d: dL/dz . d = %.6f, differences %.6f", box, dir, fd);
    if (box == EBM_BOX_NONE) {
        CHECK(fabs(plain - fd) > 0.05 * fabs(fd), "the chain's Jacobian is too close to the identity for this test (%.5f vs %.5f)", plain, fd);
        dir_none = dir;
    } else /* the walls at +-1.1 must have mattered, or their derivatives went untested */
        CHECK(fabs(dir - dir_none) > 1e-2 * fabs(dir_none), "box %d: the same gradient as without walls (%.5f)", box, dir);
    }
    free(st);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* A LeakyReLU net is piecewise linear, so the backward pass skips the
   Hessian-vector products: the chain's Jacobian is (1 - a / sigma_q^2)^K I
   (no box). Checked against central differences with a Gaussian reference
   (sigma_q = 0.8), where it is not the identity. */
static void test_chain_gradient_piecewise_linear(void)
{
    const int n = 2, K = 4, D = 36;
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    ebm_langevin cfg;
    ebm_rng r;
    size_t bytes;
    float z[2 * 36], zp[2 * 36], c[2 * 36], d[2 * 36], gz[2 * 36], *st = falloc((size_t)(K + 1) * n * D);
    double dir = 0, lp[2], fd;
    int i, sgn;
    ebm_model_init(&m, 1, 6, 6);
    ebm_model_add_conv2d(&m, 4, 3, 1, 1, 1);
    ebm_model_add_act(&m, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv2d(&m, 1, 6, 1, 0, 1);
    ebm_model_alloc(&m, 11);
    ebm_model_step_bytes(&m, n, EBM_STEP_SECOND_ORDER, &bytes, &e);
    ebm_graph_create(&g, 2 * bytes + 65536, &e);
    ebm_langevin_default(&cfg);
    cfg.step = 0.3f; cfg.noise = 0.05f; cfg.box = EBM_BOX_NONE; cfg.n_steps = K; cfg.sigma_q = 0.8f;
    r.seed = 12; r.stream = 3;
    ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, -1, 1, z, n, D);
    ebm_chain_start(EBM_START_GAUSSIAN, &r, 0, 1, 0, 0, c, n, D);
    ebm_chain_start(EBM_START_GAUSSIAN, &r, 0, 2, 0, 0, d, n, D);
    ebm_chain_record(&m, g, &cfg, &r, 0, z, n, st, NULL);
    CHECK(ebm_chain_backward(&m, g, &cfg, &r, 0, st, NULL, n, c, gz) == EBM_OK, "backward: %s", gmsg(g));
    for (i = 0; i < n * D; i++) dir += (double)gz[i] * d[i];
    for (sgn = 0; sgn < 2; sgn++) {
        for (i = 0; i < n * D; i++) zp[i] = z[i] + (sgn ? -1e-2f : 1e-2f) * d[i];
        ebm_chain_record(&m, g, &cfg, &r, 0, zp, n, st, NULL);
        lp[sgn] = 0;
        for (i = 0; i < n * D; i++) lp[sgn] += (double)c[i] * st[(size_t)K * n * D + i];
    }
    fd = (lp[0] - lp[1]) / (2 * 1e-2);
    CHECK(fabs(dir - fd) < 1e-3 * (fabs(fd) + 1e-3), "dL/dz . d = %.6f, differences %.6f", dir, fd);
    free(st);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* Kept activations (ebm_chain_kept_floats): the record keeps the conv
   outputs worth keeping and the backward pass reads them instead of
   recomputing them, with the same bits. The net has a kept conv (4 channels
   of 3x3: 36 multiply-adds per output) that feeds a SiLU, so the kept values
   enter the products; a block read at the wrong step or offset changes the
   result. Nets where nothing is kept report 0. */
static void test_chain_kept_activations(void)
{
    enum { n = 2, K = 3, D = 36 };
    ebm_model m, flat, mixed;
    ebm_graph *g;
    ebm_error e;
    ebm_langevin cfg, other;
    ebm_rng r;
    size_t bytes, n_kept;
    float z[n * D], c[n * D], gz0[n * D], gz1[n * D], *st0 = falloc((size_t)(K + 1) * n * D), *st1 = falloc((size_t)(K + 1) * n * D), *kept;
    ebm_model_init(&m, 1, 6, 6);
    ebm_model_add_conv2d(&m, 4, 3, 1, 1, 1); /* 9 multiply-adds per output: recomputed */
    ebm_model_add_act(&m, EBM_ACT_SILU, 0.0f);
    ebm_model_add_conv2d(&m, 4, 3, 1, 1, 1); /* 36: kept */
    ebm_model_add_act(&m, EBM_ACT_SILU, 0.0f);
    ebm_model_add_conv2d(&m, 1, 6, 1, 0, 1); /* 144: kept */
    ebm_model_alloc(&m, 21);
    ebm_model_step_bytes(&m, n, EBM_STEP_SECOND_ORDER, &bytes, &e);
    ebm_graph_create(&g, 2 * bytes + 65536, &e);
    ebm_langevin_default(&cfg);
    cfg.step = 0.3f; cfg.noise = 0.05f; cfg.n_steps = K;
    r.seed = 22; r.stream = 3;
    ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, -1, 1, z, n, D);
    ebm_chain_start(EBM_START_GAUSSIAN, &r, 0, 1, 0, 0, c, n, D);
    n_kept = ebm_chain_kept_floats(&m, &cfg, n);
    CHECK(n_kept == (size_t)K * n * (36 * 4 + 1), "kept floats %lu, expected %d", (unsigned long)n_kept, K * n * (36 * 4 + 1));
    kept = falloc(n_kept);
    CHECK(ebm_chain_record(&m, g, &cfg, &r, 0, z, n, st0, NULL) == EBM_OK, "record: %s", gmsg(g));
    CHECK(ebm_chain_record(&m, g, &cfg, &r, 0, z, n, st1, kept) == EBM_OK, "record, keeping: %s", gmsg(g));
    CHECK(!memcmp(st0, st1, (size_t)(K + 1) * n * D * sizeof *st0), "keeping changed the recorded states");
    CHECK(ebm_chain_backward(&m, g, &cfg, &r, 0, st0, NULL, n, c, gz0) == EBM_OK, "backward: %s", gmsg(g));
    CHECK(ebm_chain_backward(&m, g, &cfg, &r, 0, st1, kept, n, c, gz1) == EBM_OK, "backward, kept: %s", gmsg(g));
    CHECK(!memcmp(gz0, gz1, sizeof gz0), "dL/dz from kept activations differs from recomputed ones");
    {   /* the kept values are read: other values give another gradient */
        size_t j;
        for (j = 0; j < n_kept; j++) kept[j] *= 1.5f;
        ebm_chain_backward(&m, g, &cfg, &r, 0, st1, kept, n, c, gz1);
        CHECK(memcmp(gz0, gz1, sizeof gz0) != 0, "the backward pass ignored the kept activations");
    }
    other = cfg; other.box = EBM_BOX_REFLECT;
    CHECK(ebm_chain_kept_floats(&m, &other, n) == 0, "a reflecting wall keeps activations (its path does not read them)");
    other = cfg; other.aniso_th = 0.1f;
    CHECK(ebm_chain_kept_floats(&m, &other, n) == 0, "a STANLEY chain keeps activations");
    ebm_model_init(&flat, 1, 6, 6);
    ebm_model_add_conv2d(&flat, 4, 3, 1, 1, 1);
    ebm_model_add_act(&flat, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv2d(&flat, 1, 6, 1, 0, 1);
    ebm_model_alloc(&flat, 1);
    CHECK(ebm_chain_kept_floats(&flat, &cfg, n) == 0, "a piecewise-linear net keeps activations");
    ebm_model_init(&mixed, 1, 6, 6);
    ebm_model_add_conv2d(&mixed, 4, 3, 1, 1, 1);
    ebm_model_add_act(&mixed, EBM_ACT_LEAKY_RELU, 0.2f);
    ebm_model_add_conv2d(&mixed, 4, 3, 1, 1, 1);
    ebm_model_add_act(&mixed, EBM_ACT_SILU, 0.0f);
    ebm_model_add_conv2d(&mixed, 1, 6, 1, 0, 1);
    ebm_model_alloc(&mixed, 1);
    CHECK(ebm_chain_kept_floats(&mixed, &cfg, n) == 0, "a net with a fused LeakyReLU keeps activations");
    free(st0); free(st1); free(kept);
    ebm_graph_destroy(g);
    ebm_model_free(&m); ebm_model_free(&flat); ebm_model_free(&mixed);
}

/* Reconstruction by Adam on z through the whole chain lowers the error on
   the known pixels, and leaves it where it was with lr 0; noise
   interpolation hits both ends and keeps a Gaussian's norm law. */
static void test_chain_reconstruct_and_interpolate(void)
{
    const int n = 2, D = 36;
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    ebm_langevin cfg;
    ebm_rng r, rz;
    size_t bytes;
    float z[2 * 36], z0[2 * 36], target[2 * 36], mask[2 * 36], x[2 * 36], out[36];
    double mse0 = 0, mse1 = 0, mse_still = 0;
    int i;
    tiny_silu_net(&m, 4);
    ebm_model_step_bytes(&m, n, EBM_STEP_SECOND_ORDER, &bytes, &e);
    ebm_graph_create(&g, 2 * bytes + 65536, &e);
    ebm_langevin_default(&cfg);
    cfg.step = 0.3f; cfg.noise = 0.05f; cfg.n_steps = 5;
    r.seed = 8; r.stream = 3; rz.seed = 9; rz.stream = 4;
    ebm_chain_start(EBM_START_UNIFORM, &rz, 0, 0, -1, 1, z0, n, D);
    ebm_chain_start(EBM_START_UNIFORM, &rz, 0, 1, -0.8f, 0.8f, target, n, D);
    for (i = 0; i < n * D; i++) mask[i] = (float)(i % 3 != 0); /* two thirds known */
    memcpy(z, z0, sizeof z);
    CHECK(ebm_chain_reconstruct(&m, g, &cfg, &r, 0, EBM_KNOWN_PIXELS, target, mask, n, z, 0, EBM_OPT_ADAM, 0.05f, x, &mse0) == EBM_OK, "reconstruct: %s", gmsg(g));
    CHECK(ebm_chain_reconstruct(&m, g, &cfg, &r, 0, EBM_KNOWN_PIXELS, target, mask, n, z, 20, EBM_OPT_ADAM, 0.05f, x, &mse1) == EBM_OK, "reconstruct: %s", gmsg(g));
    CHECK(mse1 < 0.5 * mse0, "20 Adam steps on z: masked MSE %.4f from %.4f", mse1, mse0);
    memcpy(z, z0, sizeof z);
    ebm_chain_reconstruct(&m, g, &cfg, &r, 0, EBM_KNOWN_PIXELS, target, mask, n, z, 5, EBM_OPT_ADAM, 0.0f, NULL, &mse_still);
    CHECK(mse_still == mse0 && !memcmp(z, z0, sizeof z), "lr 0 moved z");
    {   /* plain gradient descent: the error's gradient is 2 e / (known count = 48), so lr 10 moves ~0.4 e a step */
        double mse_sgd = 0;
        memcpy(z, z0, sizeof z);
        CHECK(ebm_chain_reconstruct(&m, g, &cfg, &r, 0, EBM_KNOWN_PIXELS, target, mask, n, z, 20, EBM_OPT_SGD, 10.0f, NULL, &mse_sgd) == EBM_OK, "sgd: %s", gmsg(g));
        CHECK(mse_sgd < 0.5 * mse0, "20 SGD steps on z: masked MSE %.4f from %.4f", mse_sgd, mse0);
    }
    ebm_noise_interpolate(z0, z0 + D, D, 0.0f, 1, out);
    CHECK(!memcmp(out, z0, sizeof out), "rho 0 is not z1");
    ebm_noise_interpolate(z0, z0 + D, D, 1.0f, 0, out);
    CHECK(!memcmp(out, z0 + D, sizeof out), "rho 1 (linear) is not z2");
    {   /* spherical: Var(c z1 + s z2) = c^2 + s^2 = 1 for independent N(0, 1) */
        float a[4096], b[4096], mid[4096];
        double v = 0;
        ebm_rng_normal(&rz, 7, 0, a, 4096);
        ebm_rng_normal(&rz, 8, 0, b, 4096);
        ebm_noise_interpolate(a, b, 4096, 0.5f, 1, mid);
        for (i = 0; i < 4096; i++) v += (double)mid[i] * mid[i] / 4096;
        CHECK(fabs(v - 1) < 5 * sqrt(2.0 / 4096), "spherical midpoint variance %.4f", v);
    }
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* The generator's helpers. ebm_auroc against counting all pairs (with
   ties); the built-in masks hide exactly the area they say (the random one
   half the pixels, within 5 binomial standard deviations); 2x2 pooling of a
   known image; and reconstruction from the 2x2 means lowers that error. */
static void test_generator_helpers(void)
{
    enum { N_NORMAL = 300, N_ANOMALOUS = 200 };
    float a[N_NORMAL], b[N_ANOMALOUS], mask[4 * 28 * 28], img[2 * 36], low[2 * 9], z[2 * 36];
    ebm_rng r;
    double pairs = 0, auc, mse0, mse1, unknown;
    int i, j;
    ebm_model m;
    ebm_graph *g;
    ebm_error e;
    ebm_langevin cfg;
    size_t bytes;
    r.seed = 5; r.stream = 6;
    ebm_rng_normal(&r, 0, 0, a, N_NORMAL);
    ebm_rng_normal(&r, 1, 0, b, N_ANOMALOUS);
    for (i = 0; i < N_NORMAL; i++) a[i] = roundf(a[i] * 4) / 4; /* ties within and across the sets */
    for (i = 0; i < N_ANOMALOUS; i++) b[i] = roundf((b[i] + 0.7f) * 4) / 4;
    for (i = 0; i < N_NORMAL; i++)
        for (j = 0; j < N_ANOMALOUS; j++) pairs += b[j] > a[i] ? 1.0 : b[j] == a[i] ? 0.5 : 0.0;
    auc = ebm_auroc(a, N_NORMAL, b, N_ANOMALOUS);
    CHECK(fabs(auc - pairs / (N_NORMAL * N_ANOMALOUS)) < 1e-12, "auroc %.6f, pair count %.6f", auc, pairs / (N_NORMAL * N_ANOMALOUS));
    CHECK(ebm_auroc(a, 0, b, N_ANOMALOUS) == -1, "an empty set has no AUROC");
    CHECK(ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, 1, -1, z, 2, 36) == EBM_EINVAL &&
          ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, 1, 1, z, 2, 36) == EBM_EINVAL &&
          ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, -1, NAN, z, 2, 36) == EBM_EINVAL &&
          ebm_chain_start(EBM_START_GAUSSIAN, &r, 0, 0, 0, 0, z, 2, 36) == EBM_OK &&
          ebm_chain_start(EBM_START_UNIFORM, &r, 0, 0, -1, 1, z, 2, 36) == EBM_OK, "uniform starts need a box lo < hi");
    ebm_inpaint_mask(EBM_MASK_CENTER, NULL, 0, 1, 28, 28, 1, mask);
    for (unknown = 0, i = 0; i < 784; i++) unknown += mask[i] == 0;
    CHECK(unknown == 196 && mask[0] == 1 && mask[14 * 28 + 14] == 0, "centre mask: %g unknown", unknown);
    ebm_inpaint_mask(EBM_MASK_LOWER, NULL, 0, 1, 28, 28, 1, mask);
    for (unknown = 0, i = 0; i < 784; i++) unknown += mask[i] == 0;
    CHECK(unknown == 392 && mask[0] == 1 && mask[783] == 0, "lower-half mask: %g unknown", unknown);
    CHECK(ebm_inpaint_mask(EBM_MASK_RANDOM, &r, 10, 4, 28, 28, 1, mask) == EBM_OK, "random mask");
    for (unknown = 0, i = 0; i < 4 * 784; i++) unknown += mask[i] == 0;
    CHECK(fabs(unknown - 4 * 392) < 5 * sqrt(4 * 784 * 0.25), "random mask: %g of %d unknown", unknown, 4 * 784);
    for (i = 0; i < 2 * 36; i++) img[i] = (float)i;
    CHECK(ebm_downsample2(img, 2, 6, 6, 1, low) == EBM_OK, "downsample2 of 6x6");
    CHECK(low[0] == 3.5f && low[4] == 17.5f && low[9] == 39.5f, "2x2 means %g %g %g", low[0], low[4], low[9]);
    low[0] = -7;
    CHECK(ebm_downsample2(img, 1, 5, 6, 1, low) == EBM_EINVAL && ebm_downsample2(img, 1, 6, 5, 1, low) == EBM_EINVAL &&
          ebm_downsample2(img, 1, 0, 6, 1, low) == EBM_EINVAL && ebm_downsample2(img, 1, 6, 6, 0, low) == EBM_EINVAL &&
          ebm_downsample2(NULL, 1, 6, 6, 1, low) == EBM_EINVAL && ebm_downsample2(img, -1, 6, 6, 1, low) == EBM_EINVAL &&
          low[0] == -7, "downsample2 refuses odd or empty sides and writes nothing");
    tiny_silu_net(&m, 6);
    ebm_model_step_bytes(&m, 2, EBM_STEP_SECOND_ORDER, &bytes, &e);
    ebm_graph_create(&g, 2 * bytes + 65536, &e);
    ebm_langevin_default(&cfg);
    cfg.step = 0.3f; cfg.noise = 0.05f; cfg.n_steps = 5;
    ebm_chain_start(EBM_START_UNIFORM, &r, 0, 1, -0.6f, 0.6f, img, 2, 36);
    ebm_downsample2(img, 2, 6, 6, 1, low);
    ebm_chain_start(EBM_START_UNIFORM, &r, 0, 2, -1, 1, z, 2, 36);
    CHECK(ebm_chain_reconstruct(&m, g, &cfg, &r, 0, EBM_KNOWN_DOWNSAMPLE, low, NULL, 2, z, 0, EBM_OPT_ADAM, 0.05f, NULL, &mse0) == EBM_OK, "%s", gmsg(g));
    CHECK(ebm_chain_reconstruct(&m, g, &cfg, &r, 0, EBM_KNOWN_DOWNSAMPLE, low, NULL, 2, z, 20, EBM_OPT_ADAM, 0.05f, NULL, &mse1) == EBM_OK, "%s", gmsg(g));
    CHECK(mse1 < 0.25 * mse0, "20 Adam steps on z against the 2x2 means: %.5f from %.5f", mse1, mse0);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* Conditional chains stay on what is known: clamped pixels keep their
   values, and a super-resolved chain's 2x2 means equal the low-resolution
   image (to rounding), while the unknown pixels move. */
static void test_langevin_conditional(void)
{
    const int n = 2, D = 36;
    ebm_model m;
    ebm_graph *g = new_graph(8);
    ebm_langevin cfg;
    ebm_rng r, rz;
    float x[2 * 36], x0[2 * 36], known[2 * 36], mask[2 * 36], low[2 * 9];
    int i, kept = 1, moved = 0, yy, xx;
    double worst = 0;
    tiny_silu_net(&m, 5);
    ebm_langevin_default(&cfg);
    cfg.n_steps = 10; cfg.noise = 0.05f;
    r.seed = 1; r.stream = 2; rz.seed = 3; rz.stream = 4;
    ebm_chain_start(EBM_START_UNIFORM, &rz, 0, 0, -1, 1, x0, n, D);
    ebm_chain_start(EBM_START_UNIFORM, &rz, 0, 1, -1, 1, known, n, D);
    for (i = 0; i < n * D; i++) mask[i] = (float)(i % 2);
    memcpy(x, x0, sizeof x);
    CHECK(ebm_langevin_conditional(&m, g, &cfg, &r, 0, x, n, EBM_KNOWN_PIXELS, known, mask) == EBM_OK, "inpaint: %s", gmsg(g));
    for (i = 0; i < n * D; i++) { if (mask[i] != 0) kept &= x[i] == known[i]; else moved += x[i] != x0[i]; }
    CHECK(kept && moved == n * D / 2, "known pixels kept: %d, unknown moved: %d of %d", kept, moved, n * D / 2);
    for (i = 0; i < n * 9; i++) low[i] = 0.1f * (float)(i % 7) - 0.3f;
    memcpy(x, x0, sizeof x);
    CHECK(ebm_langevin_conditional(&m, g, &cfg, &r, 0, x, n, EBM_KNOWN_DOWNSAMPLE, low, NULL) == EBM_OK, "super-resolve: %s", gmsg(g));
    for (i = 0; i < n; i++)
        for (yy = 0; yy < 3; yy++)
            for (xx = 0; xx < 3; xx++) {
                const float *p = x + (size_t)i * D + 2 * yy * 6 + 2 * xx;
                double mean = 0.25 * ((double)p[0] + p[1] + p[6] + p[7]);
                if (fabs(mean - low[i * 9 + yy * 3 + xx]) > worst) worst = fabs(mean - low[i * 9 + yy * 3 + xx]);
            }
    CHECK(worst < 1e-5, "2x2 means differ from the low-resolution image by %.2g", worst);
    {   /* annealed: the chain ends on what is known, by another path than the clamped chain */
        float xa[2 * 36], xh[2 * 36];
        int ends = 1, differs = 0, inside = 0;
        memcpy(xa, x0, sizeof xa); memcpy(xh, x0, sizeof xh);
        CHECK(ebm_langevin_conditional(&m, g, &cfg, &r, 0, xa, n, EBM_KNOWN_PIXELS | EBM_KNOWN_ANNEALED, known, mask) == EBM_OK, "annealed: %s", gmsg(g));
        ebm_langevin_conditional(&m, g, &cfg, &r, 0, xh, n, EBM_KNOWN_PIXELS, known, mask);
        for (i = 0; i < n * D; i++) {
            if (mask[i] != 0) { ends &= xa[i] == known[i]; continue; }
            if (fabsf(xa[i]) == 1 && xa[i] == xh[i]) continue; /* both held by the box's wall */
            inside++;
            differs += xa[i] != xh[i];
        }
        CHECK(ends && differs == inside && inside > n * D / 4, "annealed chain: known pixels reached %d, unknown ones off the clamped path %d of %d",
              ends, differs, inside);
        memcpy(xa, x0, sizeof xa);
        ebm_langevin_conditional(&m, g, &cfg, &r, 0, xa, n, EBM_KNOWN_DOWNSAMPLE | EBM_KNOWN_ANNEALED, low, NULL);
        ebm_downsample2(xa, n, 6, 6, 1, xh);
        for (worst = 0, i = 0; i < n * 9; i++) if (fabs(xh[i] - low[i]) > worst) worst = fabs(xh[i] - low[i]);
        CHECK(worst < 1e-5, "annealed super-resolution: 2x2 means off by %.2g", worst);
    }
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* ------------------------------------------------------------------ tests: the MCMC-free objectives and STANLEY */

/* A trainer of objective obj on the toy batch: SiLU MLP 2-8-8-1, batch 32. */
static void objective_trainer(ebm_trainer *t, ebm_model *m, int obj, int variant)
{
    ebm_train_config c;
    ebm_error e;
    ebm_model_mlp_prior(m, 2, 8, EBM_ACT_SILU, 0.0f, 7);
    ebm_train_config_default(&c);
    c.batch = 32; c.objective = obj; c.data_noise = 0.0f;
    c.chain.box = EBM_BOX_NONE; c.chain.lo = -4.5f; c.chain.hi = 4.5f;
    c.sigma = 0.3f; c.fd_eps = 0.1f; c.lr = 1e-2f; c.max_abs_dt = 1e20f;
    if (obj == EBM_OBJ_DSM && variant) { c.n_sigmas = 3; c.sigma = 0.1f; c.sigma_max = 1.0f; }
    c.proj = (obj == EBM_OBJ_SSM || obj == EBM_OBJ_FD_SSM) && variant ? EBM_PROJ_RADEMACHER : EBM_PROJ_GAUSSIAN;
    if (obj == EBM_OBJ_FD_SSM) c.fd_eps = 0.3f; /* its loss divides float32 energies by eps^2 */
    if (obj == EBM_OBJ_NCE && variant) { c.chain.box = EBM_BOX_CLAMP; c.chain.lo = -3.0f; c.chain.hi = 3.0f; } /* some noise outside */
    CHECK(ebm_trainer_init(t, m, &c, &e) == EBM_OK, "init %s: %s", ebm_objective_name(obj), e.msg);
}

/* Each objective's parameter gradient (ebm_trainer_loss, its random numbers
   fixed by the iteration) against central differences of its own value, for
   every kind: one and several DSM levels, Gaussian and Rademacher SSM, the
   variance-reduced form, FD-SSM, NCE with and without a box (and NCE's
   log-normaliser). Float32 losses: h = 1e-2, 2 % of |g| + 1e-3. */
static void test_objective_gradients(void)
{
    static const int cases[][2] = { { EBM_OBJ_DSM, 0 }, { EBM_OBJ_DSM, 1 }, { EBM_OBJ_SSM, 0 }, { EBM_OBJ_SSM, 1 }, { EBM_OBJ_SSM_VR, 0 },
                                    { EBM_OBJ_FD_SSM, 0 }, { EBM_OBJ_FD_SSM, 1 }, { EBM_OBJ_NCE, 0 }, { EBM_OBJ_NCE, 1 } };
    int k;
    for (k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
        ebm_trainer t;
        ebm_model m;
        float x[64], *g, *theta;
        double loss = 0, worst = 0, lp = 0, lm = 0, h = 1e-2;
        size_t j;
        objective_trainer(&t, &m, cases[k][0], cases[k][1]);
        toy_batch(2, x);
        CHECK(ebm_trainer_loss(&t, x, 2, &loss) == EBM_OK, "%s: %s", ebm_objective_name(cases[k][0]), t.err.msg);
        g = (float *)malloc(m.n_params * sizeof *g);
        theta = (float *)malloc(m.n_params * sizeof *theta);
        memcpy(g, m.grads, m.n_params * sizeof *g);
        memcpy(theta, m.params, m.n_params * sizeof *theta);
        for (j = 0; j < m.n_params; j += 5) {
            double gf;
            m.params[j] = (float)(theta[j] + h); ebm_trainer_loss(&t, x, 2, &lp);
            m.params[j] = (float)(theta[j] - h); ebm_trainer_loss(&t, x, 2, &lm);
            m.params[j] = theta[j];
            gf = (lp - lm) / (2 * h);
            if (fabs(gf - g[j]) / (fabs(gf) + 1e-3) > worst) worst = fabs(gf - g[j]) / (fabs(gf) + 1e-3);
        }
        CHECK(worst < 2e-2 && loss == loss, "%s (variant %d): gradient vs finite differences of the loss, worst relative error %.3g",
              ebm_objective_name(cases[k][0]), cases[k][1], worst);
        if (cases[k][0] == EBM_OBJ_NCE) { /* dL/dc */
            float c0 = t.nce_c, gc;
            ebm_trainer_loss(&t, x, 2, &loss);
            gc = t.nce_grad;
            t.nce_c = (float)(c0 + h); ebm_trainer_loss(&t, x, 2, &lp);
            t.nce_c = (float)(c0 - h); ebm_trainer_loss(&t, x, 2, &lm);
            t.nce_c = c0;
            CHECK(fabs((lp - lm) / (2 * h) - gc) < 2e-2 * fabs(gc) + 1e-3, "nce: dL/dc %.5f, finite differences %.5f", (double)gc, (lp - lm) / (2 * h));
        }
        free(g); free(theta);
        ebm_trainer_free(&t); ebm_model_free(&m);
    }
}

/* The objectives' values against independent computations from the model's
   score (ebm_model_score), with the trainer's own random numbers:
     DSM  1/(2B) sum |sigma s(x + sigma xi) + xi|^2
     SSM  1/B sum [v.H v + (v.s)^2 / 2], v.H v by central differences of s
          along v (h = 1e-2 in float32: 1e-3 relative)
     SSM_VR the same with |s|^2 / 2
     FD-SSM with eps = 0.02 and the same v: SSM's value to 1 % (its
          truncation error is O(eps^2)) */
static void test_objective_values(void)
{
    ebm_trainer t;
    ebm_model m;
    ebm_rng ro;
    float x[64], v[64], xa[64], xb[64], fa[32], fb[32], sa[64], sb[64], f0[32], s0[64];
    double loss = 0, want, ssm = 0, vr = 0, fd, h = 1e-2;
    int i, obj;
    const uint64_t first = 2 * 32;
    toy_batch(2, x);
    ro.seed = 1; ro.stream = EBM__S_OBJECTIVE; /* the default seed */
    for (i = 0; i < 32; i++) ebm__rng_normal_at(&ro, first + (uint64_t)i, 0, 0, v + 2 * i, 2);
    /* DSM */
    objective_trainer(&t, &m, EBM_OBJ_DSM, 0);
    CHECK(ebm_trainer_loss(&t, x, 2, &loss) == EBM_OK, "dsm: %s", t.err.msg);
    for (i = 0; i < 64; i++) xa[i] = x[i] + 0.3f * v[i];
    ebm_model_score(&m, t.graph, xa, 32, fa, sa);
    want = 0;
    for (i = 0; i < 64; i++) want += 0.5 * (0.3 * sa[i] + v[i]) * (0.3 * sa[i] + v[i]) / 32;
    CHECK(fabs(loss - want) < 1e-5 * (1 + fabs(want)), "dsm value %.7f, from the score %.7f", loss, want);
    ebm_trainer_free(&t); ebm_model_free(&m);
    /* SSM, SSM_VR, FD-SSM: the same net (seed 7), the same v */
    for (obj = EBM_OBJ_SSM; obj <= EBM_OBJ_FD_SSM; obj++) {
        objective_trainer(&t, &m, obj, 0);
        if (obj == EBM_OBJ_FD_SSM) t.cfg.fd_eps = 0.02f;
        CHECK(ebm_trainer_loss(&t, x, 2, &loss) == EBM_OK, "%s: %s", ebm_objective_name(obj), t.err.msg);
        if (obj == EBM_OBJ_SSM) {
            for (i = 0; i < 64; i++) { xa[i] = x[i] + (float)h * v[i]; xb[i] = x[i] - (float)h * v[i]; }
            ebm_model_score(&m, t.graph, xa, 32, fa, sa);
            ebm_model_score(&m, t.graph, xb, 32, fb, sb);
            ebm_model_score(&m, t.graph, x, 32, f0, s0);
            for (i = 0; i < 32; i++) {
                double vhv = (v[2 * i] * (sa[2 * i] - sb[2 * i]) + v[2 * i + 1] * (sa[2 * i + 1] - sb[2 * i + 1])) / (2 * h);
                double vs = v[2 * i] * s0[2 * i] + v[2 * i + 1] * s0[2 * i + 1], ss = s0[2 * i] * s0[2 * i] + s0[2 * i + 1] * s0[2 * i + 1];
                ssm += (vhv + 0.5 * vs * vs) / 32;
                vr += (vhv + 0.5 * ss) / 32;
            }
            CHECK(fabs(loss - ssm) < 1e-3 * (1 + fabs(ssm)), "ssm value %.6f, from the score %.6f", loss, ssm);
        } else if (obj == EBM_OBJ_SSM_VR) {
            CHECK(fabs(loss - vr) < 1e-3 * (1 + fabs(vr)), "ssm-vr value %.6f, from the score %.6f", loss, vr);
        } else {
            fd = loss;
            CHECK(fabs(fd - ssm) < 1e-2 * (1 + fabs(ssm)), "fd-ssm value %.6f (eps 0.02), ssm %.6f", fd, ssm);
        }
        ebm_trainer_free(&t); ebm_model_free(&m);
    }
}

/* Each MCMC-free objective, on 8 Gaussians (batch 256, SiLU MLP 2-32-32-1,
   Adam 3e-2 cosine over 800 iterations, seed 1), lowers the exact test NLL
   (2000 held-out points, 128^2 grid) from the fresh net's to below 3.30
   nats: the uniform density on the box scores 4.39 and the truth 2.84. */
static void test_objectives_lower_nll(void)
{
    static const int objs[] = { EBM_OBJ_DSM, EBM_OBJ_SSM, EBM_OBJ_SSM_VR, EBM_OBJ_FD_SSM, EBM_OBJ_NCE };
    float test[4000], xb[512];
    ebm_rng rt, rd;
    int k, i;
    rt.seed = 0x7e57; rt.stream = EBM_STREAM_USER;
    rd.seed = 1; rd.stream = EBM_STREAM_USER;
    ebm_toy_sample(EBM_TOY_8GAUSSIANS, &rt, 0, test, 2000);
    for (k = 0; k < (int)(sizeof objs / sizeof objs[0]); k++) {
        ebm_trainer t;
        ebm_model m;
        ebm_train_config c;
        ebm_error e;
        double nll0 = 0, nll = 0;
        ebm_model_mlp_prior(&m, 2, 32, EBM_ACT_SILU, 0.0f, 1);
        ebm_train_config_default(&c);
        c.batch = 256; c.objective = objs[k]; c.data_noise = 0; c.sigma = 0.2f;
        c.chain.box = EBM_BOX_CLAMP; c.chain.lo = -4.5f; c.chain.hi = 4.5f;
        c.lr = 3e-2f; c.schedule = EBM_LR_COSINE; c.total_iters = 800;
        CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_OK, "init: %s", e.msg);
        ebm_model_nll2d(&m, t.graph, -4.5f, 4.5f, 128, test, 2000, &nll0, NULL);
        for (i = 0; i < 800; i++) {
            ebm_toy_sample(EBM_TOY_8GAUSSIANS, &rd, (uint64_t)i * 256, xb, 256);
            if (ebm_trainer_step(&t, xb) != EBM_OK) break;
        }
        CHECK(i == 800, "%s: %s", ebm_objective_name(objs[k]), t.err.msg);
        ebm_model_nll2d(&m, t.graph, -4.5f, 4.5f, 128, test, 2000, &nll, NULL);
        CHECK(nll < 3.30 && nll < nll0, "%s: test NLL %.4f after 800 iterations (fresh net %.4f; bound 3.30, true 2.84)", ebm_objective_name(objs[k]), nll, nll0);
        ebm_trainer_free(&t); ebm_model_free(&m);
    }
}

/* STANLEY: with a threshold no drift reaches, every gamma is 1 and the
   chains are bit for bit the isotropic ones (unadjusted and MALA). With
   th = 1 on the mixture of test_samplers_on_2d_mixture, where most drifts
   exceed it (checked), the MH-corrected chains (8,000 independent ones, step
   adapted in 100 burn-in steps, then 300) recover the mean, both variances
   and the weight of mu's side within 5 standard errors. */
static void test_stanley_sampler(void)
{
    const double s = mix_s;
    const int n = 8000;
    ebm_model m;
    ebm_graph *g = new_graph(64);
    ebm_langevin cfg, iso, ad;
    ebm_rng r, r0;
    float *x = falloc(2 * (size_t)n), *y = falloc(2 * (size_t)n), *f = falloc((size_t)n), *gr = falloc(2 * (size_t)n);
    double acc = 0, acc2 = 0, steep = 0;
    int i;
    mixture_energy(&m, mix_mu, s, mix_w1);
    r0.seed = 22; r0.stream = EBM_STREAM_USER + 12;
    r.seed = 6; r.stream = EBM_STREAM_USER + 13;
    ebm_langevin_default(&cfg);
    cfg.form = EBM_LANGEVIN_EPS; cfg.eps = 0.3f; cfg.sigma_q = (float)s; cfg.box = EBM_BOX_NONE; cfg.n_steps = 20;
    iso = cfg;
    cfg.aniso_th = 1e20f;
    ebm_chain_start(EBM_START_GAUSSIAN, &r0, 0, 0, 0, 0, x, 500, 2);
    memcpy(y, x, 1000 * sizeof(float));
    ebm_langevin_run(&m, g, &cfg, &r, 0, x, 500, NULL);
    ebm_langevin_run(&m, g, &iso, &r, 0, y, 500, NULL);
    CHECK(!memcmp(x, y, 1000 * sizeof(float)), "STANLEY with an unreachable threshold differs from isotropic Langevin");
    ebm_mala_run(&m, g, &cfg, &r, 0, x, 500, &acc, NULL);
    ebm_mala_run(&m, g, &iso, &r, 0, y, 500, &acc2, NULL);
    CHECK(!memcmp(x, y, 1000 * sizeof(float)) && acc == acc2, "STANLEY-MALA with an unreachable threshold differs from MALA");
    cfg.aniso_th = -1;
    CHECK(ebm_langevin_run(&m, g, &cfg, &r, 0, x, 10, NULL) == EBM_EINVAL, "negative threshold accepted");
    /* the exactness check */
    cfg.aniso_th = 1.0f; cfg.eps = 0.2f; cfg.n_steps = 300;
    ebm_chain_start(EBM_START_GAUSSIAN, &r0, 0, 0, 0, 0, x, n, 2);
    for (i = 0; i < 2 * n; i++) x[i] *= 1.5f;
    CHECK(ebm_mala_adapt(&m, g, &cfg, &r, 0, x, n, 100, 0.57, &ad) == EBM_OK, "adapt: %s", gmsg(g));
    CHECK(ebm_mala_run(&m, g, &ad, &r, 0, x, n, &acc, NULL) == EBM_OK, "mala: %s", gmsg(g));
    CHECK(acc > 0.4 && acc < 0.75, "STANLEY-MALA acceptance %.3f (eps adapted to %.3f)", acc, (double)ad.eps);
    ebm_model_score(&m, g, x, n, f, gr);
    for (i = 0; i < 2 * n; i++) steep += fabs(gr[i] - x[i] / (s * s)) > 1.0 ? 1.0 / (2 * n) : 0.0;
    CHECK(steep > 0.3, "only %.2f of the coordinates have |drift| > th: the anisotropic step is barely exercised", steep);
    check_mixture_law(x, n, "stanley-mala", 0, 0);
    free(x); free(y); free(f); free(gr);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* A run of each MCMC-free objective resumed from a checkpoint equals one
   that never stopped (NCE: with its fitted noise and log-normaliser), and a
   version-1 checkpoint (the seed corpus's) still loads, as maximum
   likelihood with isotropic steps. */
static void test_checkpoint_objectives(void)
{
    int obj;
    for (obj = EBM_OBJ_DSM; obj < EBM_OBJ_COUNT; obj++) {
        ebm_trainer a, b;
        ebm_model ma, mb;
        ebm_error e;
        float x[64];
        int i;
        objective_trainer(&a, &ma, obj, 1);
        a.cfg.chain.aniso_th = 0.5f; /* a setting of version 2 */
        for (i = 0; i < 5; i++) { toy_batch(i, x); CHECK(ebm_trainer_step(&a, x) == EBM_OK, "step: %s", a.err.msg); }
        CHECK(ebm_trainer_save(&a, "t.ckpt", &e) == EBM_OK, "save: %s", e.msg);
        for (i = 5; i < 9; i++) { toy_batch(i, x); ebm_trainer_step(&a, x); }
        CHECK(ebm_trainer_load(&b, &mb, "t.ckpt", &e) == EBM_OK, "load: %s", e.msg);
        CHECK(!memcmp(&a.cfg, &b.cfg, sizeof a.cfg), "%s: the settings did not round-trip", ebm_objective_name(obj));
        for (i = 5; i < 9 && b.model; i++) { toy_batch(i, x); ebm_trainer_step(&b, x); }
        CHECK(b.model && !memcmp(ma.params, mb.params, ma.n_params * 4) && a.loss == b.loss && a.nce_c == b.nce_c && a.noise_fitted == b.noise_fitted &&
                  (!a.noise_fitted || !memcmp(a.noise_mu, b.noise_mu, 2 * 4)),
              "%s: resumed run differs", ebm_objective_name(obj));
        ebm_trainer_free(&a); ebm_model_free(&ma);
        ebm_trainer_free(&b); ebm_model_free(&mb);
    }
    {
        ebm_trainer b;
        ebm_model mb;
        ebm_error e;
        CHECK(ebm_trainer_load(&b, &mb, "../tests/fuzz_corpus/ckpt/trainer_v1.ckpt", &e) == EBM_OK && b.cfg.objective == EBM_OBJ_ML &&
                  b.cfg.chain.aniso_th == 0 && b.cfg.n_sigmas == 1,
              "version-1 checkpoint: %s", e.msg);
        ebm_trainer_free(&b); ebm_model_free(&mb);
        CHECK(ebm_trainer_load(&b, &mb, "../tests/fuzz_corpus/ckpt/trainer_nce_v2.ckpt", &e) == EBM_OK && b.cfg.objective == EBM_OBJ_NCE &&
                  b.cfg.shards == 1 && b.noise_fitted,
              "version-2 checkpoint: %s", e.msg);
        ebm_trainer_free(&b); ebm_model_free(&mb);
        CHECK(ebm_trainer_load(&b, &mb, "../tests/fuzz_corpus/ckpt/trainer.ckpt", &e) == EBM_OK && b.cfg.shards == 2,
              "version-3 checkpoint (2 shards): %s", e.msg);
        ebm_trainer_free(&b); ebm_model_free(&mb);
    }
    remove("t.ckpt");
}

/* The two ways of the sliced score-matching loss agree: Taylor mode (the
   trainer's: f's coefficients along v, one first-order backward) and the
   nested one (a Hessian-vector product, then its parameter gradient), in
   value and parameter gradient, plain and variance-reduced, on a SiLU
   ConvNet with a linear head (relative 1e-4: float32 sums in other orders). */
static void test_ssm_taylor_matches_nested(void)
{
    ebm_model m;
    ebm_graph *g = new_graph(64);
    const int B = 3;
    float x[3 * 36], v[3 * 36], u[3 * 36], *ga;
    int obj;
    ebm_model_init(&m, 1, 6, 6);
    ebm_model_add_conv2d(&m, 4, 3, 1, 1, 1);
    ebm_model_add_act(&m, EBM_ACT_SILU, 0.0f);
    ebm_model_add_avgpool(&m, 2, 2);
    ebm_model_add_conv2d(&m, 3, 3, 1, 0, 1);
    ebm_model_add_act(&m, EBM_ACT_SOFTPLUS, 0.0f);
    ebm_model_add_linear(&m, 1, 1);
    ebm_model_alloc(&m, 5);
    rnd(x, 3 * 36, -1, 1);
    rnd(v, 3 * 36, -1, 1);
    ga = falloc(m.n_params);
    for (obj = EBM_OBJ_SSM; obj <= EBM_OBJ_SSM_VR; obj++) {
        double va = 0, vb = 0, num = 0, den = 0;
        ebm_var *y, *gx, *loss;
        size_t j;
        int nested;
        for (nested = 0; nested < 2; nested++) {
            ebm_graph_reset(g);
            ebm_model_zero_grad(&m);
            loss = ebm__sm_loss(&m, g, obj, B, (float)B, 1.0f, x, v, u, nested, &y, &gx, nested ? &vb : &va);
            CHECK(loss && ebm_model_backward(&m, g, loss) == EBM_OK, "%s loss: %s", nested ? "nested" : "taylor", gmsg(g));
            if (!nested) memcpy(ga, m.grads, m.n_params * sizeof *ga);
        }
        for (j = 0; j < m.n_params; j++) { num += (ga[j] - m.grads[j]) * (ga[j] - m.grads[j]); den += m.grads[j] * m.grads[j]; }
        CHECK(fabs(va - vb) < 1e-4 * (fabs(vb) + 1e-3), "%s: Taylor value %.7g, nested %.7g", ebm_objective_name(obj), va, vb);
        CHECK(sqrt(num / (den + 1e-30)) < 1e-4 && den > 0, "%s: parameter gradients differ by %.3g (relative)", ebm_objective_name(obj), sqrt(num / (den + 1e-30)));
    }
    free(ga);
    ebm_graph_destroy(g);
    ebm_model_free(&m);
}

/* Annealed sampling of a DSM model on several levels: with the energy
   f = c sum x and the reference N(0, 1), level l's target is
   N(c, sigma_l / sigma) per coordinate, and the last level's chain (noise
   b = eps, drift b^2/2) is the AR(1) of the Gaussian test: N(c, 1/(1 - b^2/4))
   after 300 steps. 4000 chains x 64 coordinates, 5 standard errors. */
static void test_dsm_annealed_sampling(void)
{
    ebm_model m;
    ebm_trainer t;
    ebm_train_config c;
    ebm_error e;
    const int n = 4000;
    const size_t N = (size_t)n * 64;
    float *x = falloc(N), cc = 0.7f, b = 0.5f;
    double mean = 0, var = 0, want_var = 1.0 / (1.0 - b * b / 4.0);
    linear_energy(&m, cc);
    ebm_train_config_default(&c);
    c.batch = 500; c.objective = EBM_OBJ_DSM; c.n_sigmas = 3; c.sigma = 0.5f; c.sigma_max = 2.0f;
    c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = b; c.chain.sigma_q = 1.0f; c.chain.box = EBM_BOX_NONE;
    CHECK(ebm_trainer_init(&t, &m, &c, &e) == EBM_OK, "init: %s", e.msg);
    CHECK(ebm_trainer_sample(&t, 0, NULL, x, n, 900) == EBM_OK, "sample: %s", t.err.msg);
    sample_moments(x, N, &mean, &var);
    CHECK(fabs(mean - cc) < 5 * sqrt(want_var / (double)N), "annealed: mean %.5f, want %.5f", mean, (double)cc);
    CHECK(fabs(var - want_var) < 5 * want_var * sqrt(2.0 / (double)N), "annealed: variance %.5f, want %.5f +- %.5f (a level's temperature or step is off)",
          var, want_var, 5 * want_var * sqrt(2.0 / (double)N));
    free(x);
    ebm_trainer_free(&t);
    ebm_model_free(&m);
}

/* ------------------------------------------------------------------ tests: data parallelism */

/* Workers as threads, joined by a barrier-based allgather: the same contract
   an MPI program meets with MPI_Allgather (examples/train_mpi.c). */
typedef struct { pthread_barrier_t bar; unsigned char *stage; } t_fabric;
typedef struct {
    t_fabric *fab;
    ebm_trainer *t;
    int rank, size, set_nan; /* set_nan: this worker's data is NaN (failure test) */
    long it0, it1;
    int rc;
} t_worker;

static int t_allgather(void *user, void *buf, size_t bytes)
{
    t_worker *w = (t_worker *)user;
    memcpy(w->fab->stage + (size_t)w->rank * bytes, (unsigned char *)buf + (size_t)w->rank * bytes, bytes);
    pthread_barrier_wait(&w->fab->bar);
    memcpy(buf, w->fab->stage, (size_t)w->size * bytes);
    pthread_barrier_wait(&w->fab->bar); /* nobody overwrites the stage before all have read it */
    return 0;
}

/* 8 Gaussians by global index: worker r's part of iteration it's batch */
static void t_shard_batch(int batch, long it, int rank, int size, float *x)
{
    ebm_rng r;
    r.seed = 5; r.stream = 78;
    ebm_toy_sample(EBM_TOY_8GAUSSIANS, &r, (uint64_t)it * batch + (uint64_t)(rank * (batch / size)), x, batch / size);
}

static void *t_worker_run(void *arg)
{
    t_worker *w = (t_worker *)arg;
    float x[64 * 2];
    long it;
    w->rc = EBM_OK;
    for (it = w->it0; it < w->it1 && w->rc == EBM_OK; it++) {
        t_shard_batch(w->t->cfg.batch, it, w->rank, w->size, x);
        if (w->set_nan) x[0] = NAN;
        w->rc = ebm_trainer_step(w->t, x);
    }
    return NULL;
}

/* Run trainers t[0..size-1] as workers from iteration it0 to it1. */
static void t_run_workers(ebm_trainer *t, int size, long it0, long it1, int nan_rank, int *rc)
{
    t_fabric fab;
    t_worker w[4];
    pthread_t th[4];
    int r;
    fab.stage = (unsigned char *)malloc(1 << 20);
    pthread_barrier_init(&fab.bar, NULL, (unsigned)size);
    for (r = 0; r < size; r++) {
        ebm_comm comm;
        w[r].fab = &fab; w[r].t = &t[r]; w[r].rank = r; w[r].size = size; w[r].it0 = it0; w[r].it1 = it1; w[r].set_nan = r == nan_rank;
        comm.rank = r; comm.size = size; comm.allgather = t_allgather; comm.user = &w[r];
        CHECK(ebm_trainer_set_comm(&t[r], &comm) == EBM_OK, "set_comm: %s", t[r].err.msg);
    }
    for (r = 0; r < size; r++) pthread_create(&th[r], NULL, t_worker_run, &w[r]);
    for (r = 0; r < size; r++) { pthread_join(th[r], NULL); rc[r] = w[r].rc; }
    pthread_barrier_destroy(&fab.bar);
    free(fab.stage);
}

static void t_parallel_config(ebm_train_config *c, int kind)
{
    ebm_train_config_default(c);
    c->batch = 16; c->shards = 4; c->lr = 1e-2f; c->seed = 11; c->data_noise = 0.01f;
    c->chain.form = EBM_LANGEVIN_EPS; c->chain.eps = 0.3f; c->chain.box = EBM_BOX_REFLECT; c->chain.lo = -4.5f; c->chain.hi = 4.5f; c->chain.n_steps = 5;
    if (kind == 0) { c->start = EBM_START_PERSISTENT; c->buffer_size = 40; c->reinit = 0.2f; c->mala = 1; } /* slots reused; MALA adapts per shard */
    if (kind == 1) { c->start = EBM_START_UNIFORM; c->energy_reg = 0.01f; c->schedule = EBM_LR_COSINE; c->total_iters = 8; }
    if (kind == 2) { c->objective = EBM_OBJ_SSM_VR; c->chain.box = EBM_BOX_NONE; }
    if (kind == 3) { c->objective = EBM_OBJ_NCE; c->chain.box = EBM_BOX_NONE; }
}

static void t_parallel_trainer(ebm_trainer *t, ebm_model *m, const ebm_train_config *c)
{
    ebm_error e;
    float fit[64 * 2];
    ebm_model_mlp_prior(m, 2, 16, EBM_ACT_SILU, 0.0f, 4);
    CHECK(ebm_trainer_init(t, m, c, &e) == EBM_OK, "init: %s", e.msg);
    if (c->objective == EBM_OBJ_NCE) { /* every worker fits the same noise */
        ebm_rng r;
        r.seed = 6; r.stream = 79;
        ebm_toy_sample(EBM_TOY_8GAUSSIANS, &r, 0, fit, 64);
        ebm_trainer_fit_noise(t, fit, 64);
    }
}

static int t_same_trainer(const ebm_trainer *a, const ebm_trainer *b)
{
    const size_t P = a->model->n_params;
    return !memcmp(a->model->params, b->model->params, P * 4) && !memcmp(a->model->m1, b->model->m1, P * 4) &&
           !memcmp(a->model->m2, b->model->m2, P * 4) && a->d_t == b->d_t && a->r_t == b->r_t && a->loss == b->loss &&
           a->accept == b->accept && a->nce_c == b->nce_c && a->iter == b->iter &&
           (!a->buffer || !memcmp(a->buffer, b->buffer, (size_t)a->cfg.buffer_size * 2 * 4));
}

/* R workers with batch/R data points each give, bit for bit, what one
   trainer with the whole batch gives when both cut it into the same shards:
   model, Adam moments, replay buffer, diagnostics, for persistent MALA
   chains (buffer slots reused, step adapted per shard), noise-started chains
   with a schedule, SSM-VR and NCE; 2 and 4 workers, and a checkpoint of the
   one-process run resumed by 4 workers. The shards only change the order of
   the gradient's sums: 4 shards agree with 1 to float rounding (3e-5). A
   worker whose chains blow up stops every worker, none hangs. */
static void test_data_parallel_bit_identical(void)
{
    int kind, r, rc[4];
    for (kind = 0; kind < 4; kind++) {
        ebm_train_config c;
        ebm_trainer ref, w[4], res[4];
        ebm_model mref, mw[4], mres[4];
        ebm_error e;
        t_parallel_config(&c, kind);
        t_parallel_trainer(&ref, &mref, &c);
        t_run_workers(&ref, 1, 0, 4, -1, rc); /* one worker: the plain trainer */
        CHECK(rc[0] == EBM_OK, "kind %d: %s", kind, ref.err.msg);
        CHECK(ebm_trainer_save(&ref, "par.ckpt", &e) == EBM_OK, "save: %s", e.msg);
        t_run_workers(&ref, 1, 4, 8, -1, rc);
        for (r = 0; r < 2; r++) t_parallel_trainer(&w[r], &mw[r], &c);
        t_run_workers(w, 2, 0, 8, -1, rc);
        for (r = 0; r < 2; r++) CHECK(rc[r] == EBM_OK && t_same_trainer(&ref, &w[r]), "kind %d: worker %d of 2 differs from one process", kind, r);
        for (r = 0; r < 4; r++) CHECK(ebm_trainer_load(&res[r], &mres[r], "par.ckpt", &e) == EBM_OK, "load: %s", e.msg);
        t_run_workers(res, 4, 4, 8, -1, rc);
        for (r = 0; r < 4; r++) CHECK(rc[r] == EBM_OK && t_same_trainer(&ref, &res[r]), "kind %d: worker %d of 4 (resumed) differs", kind, r);
        for (r = 0; r < 2; r++) { ebm_trainer_free(&w[r]); ebm_model_free(&mw[r]); }
        for (r = 0; r < 4; r++) { ebm_trainer_free(&res[r]); ebm_model_free(&mres[r]); }
        if (kind == 1 || kind == 2) { /* 4 shards against 1: the same gradient up to the order of its sums */
            ebm_trainer one;
            ebm_model m1;
            float x[16 * 2], *g4 = (float *)malloc(mref.n_params * 4);
            double l4, l1, num = 0, den = 0;
            size_t j;
            t_parallel_trainer(&one, &m1, &c);
            t_shard_batch(16, 0, 0, 1, x);
            ebm_trainer_loss(&one, x, 0, &l4);
            memcpy(g4, m1.grads, m1.n_params * 4);
            ebm_trainer_free(&one);
            c.shards = 1;
            CHECK(ebm_trainer_init(&one, &m1, &c, &e) == EBM_OK, "init: %s", e.msg);
            ebm_trainer_loss(&one, x, 0, &l1);
            for (j = 0; j < m1.n_params; j++) { num += (g4[j] - m1.grads[j]) * (double)(g4[j] - m1.grads[j]); den += (double)m1.grads[j] * m1.grads[j]; }
            CHECK(sqrt(num / den) < 3e-5 && fabs(l4 - l1) <= 3e-5 * (fabs(l1) + 1e-3), "kind %d: 4 shards vs 1: gradient rel. diff %.3g, loss %.9g vs %.9g",
                  kind, sqrt(num / den), l4, l1);
            free(g4);
            ebm_trainer_free(&one); ebm_model_free(&m1);
        }
        ebm_trainer_free(&ref); ebm_model_free(&mref);
    }
    { /* data-started chains from NaN data on worker 1: both workers stop with EDIVERGED */
        ebm_train_config c;
        ebm_trainer w[2];
        ebm_model mw[2];
        t_parallel_config(&c, 1);
        c.start = EBM_START_DATA;
        for (r = 0; r < 2; r++) t_parallel_trainer(&w[r], &mw[r], &c);
        t_run_workers(w, 2, 0, 3, 1, rc);
        CHECK(rc[0] == EBM_EDIVERGED && rc[1] == EBM_EDIVERGED && w[0].iter == 0 && strstr(w[0].err.msg, "worker 1"),
              "a failing worker: status %d / %d, iter %ld, \"%s\"", rc[0], rc[1], w[0].iter, w[0].err.msg);
        for (r = 0; r < 2; r++) { ebm_trainer_free(&w[r]); ebm_model_free(&mw[r]); }
    }
    { /* bad worker settings */
        ebm_train_config c;
        ebm_trainer t;
        ebm_model m;
        ebm_comm comm;
        t_parallel_config(&c, 1);
        t_parallel_trainer(&t, &m, &c);
        comm.rank = 0; comm.size = 3; comm.allgather = t_allgather; comm.user = NULL;
        CHECK(ebm_trainer_set_comm(&t, &comm) == EBM_EINVAL, "3 workers for 4 shards accepted");
        comm.size = 2; comm.rank = 2;
        CHECK(ebm_trainer_set_comm(&t, &comm) == EBM_EINVAL, "rank 2 of 2 accepted");
        comm.rank = 1; comm.allgather = NULL;
        CHECK(ebm_trainer_set_comm(&t, &comm) == EBM_EINVAL, "no allgather accepted");
        ebm_trainer_free(&t); ebm_model_free(&m);
        c.shards = 3;
        CHECK(ebm_trainer_init(&t, &m, &c, NULL) == EBM_EINVAL, "3 shards of a batch of 16 accepted");
        ebm_model_free(&m);
    }
    remove("par.ckpt");
}

/* ------------------------------------------------------------------ tests: the latent-space EBM prior */

/* A random-number key (no compound literals: the harness is C++ too). */
static const ebm_rng *t_key(uint64_t seed, uint32_t stream)
{
    static ebm_rng r;
    r.seed = seed; r.stream = stream;
    return &r;
}

/* A prior f(z) = b.z + c (one linear layer, b given; b = 0 gives f = 0). */
static void t_linear_prior(ebm_model *m, int nz, const float *b)
{
    int j;
    ebm_model_init(m, nz, 1, 1);
    ebm_model_add_linear(m, 1, 1);
    ebm_model_alloc(m, 1);
    for (j = 0; j < nz; j++) m->params[m->layer[0].w_off + j] = b ? b[j] : 0.0f;
    m->params[m->layer[0].b_off] = 0.3f;
}

/* Latent chains on laws known in closed form, 8000 independent chains of
   200 steps from N(0, I) (the AR(1) coefficient 1 - s^2/2 <= 0.92 forgets
   the start to 1e-7). The unadjusted chain on a Gaussian target of
   precision lam has mean exactly the target's and variance
   1 / (lam (1 - s^2 lam / 4)) (its known discretisation bias):
   - prior chain, f = 0: N(0, I) at s = 0.4: variance 1/(1 - 0.04) = 1.0417;
   - prior chain, f(z) = b.z (target exp(f - |z|^2/2) = N(b, I)): mean b;
   - posterior chain, f = 0, linear generator g(z) = (w1 z1, w2 z2), sigma
     1, x = (0.5, -0.4): precisions lam_j = 1 + w_j^2, mean w_j x_j / lam_j.
   Tolerances 5 standard errors of 8000 (or 64000 pooled) samples: for a
   variance v, 5 v sqrt(2/n). The bias (0.042) is 7 of those standard errors
   for the pooled f = 0 check, so the test sees it. */
static void test_latent_chains_known_laws(void)
{
    const int n = 8000, nz = 8;
    ebm_model prior, gen;
    ebm_latent L;
    ebm_latent_config c;
    ebm_error e;
    float *z = (float *)calloc((size_t)n * nz, sizeof(float)), b[8] = { 0.5f, -1.0f, 0.25f, 0, 0, 0, 0, 2.0f };
    int i, j, pass;
    ebm_latent_config_default(&c);
    c.batch = 1000; c.prior_step = 0.4f;
    for (pass = 0; pass < 2; pass++) { /* f = 0, then f = b.z */
        double m1 = 0, m2 = 0, v = 1 / (1 - 0.04), tol_v, tol_m;
        t_linear_prior(&prior, nz, pass ? b : NULL);
        ebm_model_generator28(&gen, nz, 2, 1, 1);
        CHECK(ebm_latent_init(&L, &prior, &gen, &c, &e) == EBM_OK, "latent_init: %s", e.msg);
        for (i = 0; i < n * nz; i++) z[i] = 0;
        ebm_rng_normal(t_key(9, 5), 0, 0, z, (size_t)n * nz);
        CHECK(ebm_latent_prior_chain(&L, 7, 0, z, n, 200) == EBM_OK, "prior chain: %s", L.err.msg);
        if (pass == 0) { /* pooled over the 8 coordinates */
            for (i = 0; i < n * nz; i++) { m1 += z[i]; m2 += (double)z[i] * z[i]; }
            m1 /= n * nz; m2 = m2 / (n * nz) - m1 * m1;
            tol_v = 5 * v * sqrt(2.0 / (n * nz)); tol_m = 5 * sqrt(v / (n * nz));
            CHECK(fabs(m1) < tol_m && fabs(m2 - v) < tol_v, "f = 0: mean %.4f (tol %.4f), variance %.4f, expected %.4f +- %.4f", m1, tol_m, m2, v, tol_v);
        } else
            for (j = 0; j < nz; j++) {
                m1 = m2 = 0;
                for (i = 0; i < n; i++) { m1 += z[i * nz + j]; m2 += (double)z[i * nz + j] * z[i * nz + j]; }
                m1 /= n; m2 = m2 / n - m1 * m1;
                tol_v = 5 * v * sqrt(2.0 / n); tol_m = 5 * sqrt(v / n);
                CHECK(fabs(m1 - b[j]) < tol_m && fabs(m2 - v) < tol_v, "f = b.z, coordinate %d: mean %.4f vs %.4f (tol %.4f), variance %.4f vs %.4f (tol %.4f)",
                      j, m1, (double)b[j], tol_m, m2, v, tol_v);
            }
        ebm_latent_free(&L); ebm_model_free(&prior); ebm_model_free(&gen);
    }
    { /* the posterior chain of a linear generator */
        const float w[2] = { 1.0f, 2.0f }, xo[2] = { 0.5f, -0.4f }, s = 0.3f;
        float *x = (float *)malloc((size_t)n * 2 * sizeof(float));
        t_linear_prior(&prior, 2, NULL);
        ebm_model_init(&gen, 2, 1, 1);
        ebm_model_add_linear(&gen, 2, 1);
        ebm_model_alloc(&gen, 1);
        /* linear (In, Out) weights: diagonal W, no bias */
        gen.params[gen.layer[0].w_off + 0] = w[0]; gen.params[gen.layer[0].w_off + 1] = 0;
        gen.params[gen.layer[0].w_off + 2] = 0; gen.params[gen.layer[0].w_off + 3] = w[1];
        gen.params[gen.layer[0].b_off] = gen.params[gen.layer[0].b_off + 1] = 0;
        c.sigma = 1.0f; c.post_step = s;
        CHECK(ebm_latent_init(&L, &prior, &gen, &c, &e) == EBM_OK, "latent_init: %s", e.msg);
        for (i = 0; i < n; i++) { x[2 * i] = xo[0]; x[2 * i + 1] = xo[1]; }
        ebm_rng_normal(t_key(9, 6), 0, 0, z, (size_t)n * 2);
        CHECK(ebm_latent_posterior_chain(&L, 8, 0, x, z, n, 200) == EBM_OK, "posterior chain: %s", L.err.msg);
        for (j = 0; j < 2; j++) {
            double lam = 1 + w[j] * w[j], mu = w[j] * xo[j] / lam, v = 1 / (lam * (1 - s * s * lam / 4)), m1 = 0, m2 = 0;
            for (i = 0; i < n; i++) { m1 += z[2 * i + j]; m2 += (double)z[2 * i + j] * z[2 * i + j]; }
            m1 /= n; m2 = m2 / n - m1 * m1;
            CHECK(fabs(m1 - mu) < 5 * sqrt(v / n) && fabs(m2 - v) < 5 * v * sqrt(2.0 / n),
                  "posterior coordinate %d: mean %.4f vs %.4f, variance %.4f vs %.4f", j, m1, mu, m2, v);
        }
        free(x);
        ebm_latent_free(&L); ebm_model_free(&prior); ebm_model_free(&gen);
    }
    free(z);
}

/* The generator's negative log-likelihood sum |x - g(z)|^2 / (2 sigma^2):
   its gradients in z and in beta (ebm_latent_nll) against central
   differences (h = 1e-2; float32: 2 % of |g| + 1e-3), on the 28x28
   generator (transposed convolutions, LeakyReLU, tanh). */
static void test_latent_nll_gradient(void)
{
    const int n = 3, nz = 4;
    ebm_model prior, gen;
    ebm_latent L;
    ebm_latent_config c;
    ebm_error e;
    float z[3 * 4], dz[3 * 4], *x = (float *)malloc(3 * 784 * sizeof(float)), *gb;
    double l0, lp, lm;
    int i, k;
    ebm_latent_config_default(&c);
    c.batch = 2; /* n = 3 runs in two batches */
    ebm_model_mlp_prior(&prior, nz, 8, EBM_ACT_SILU, 0, 2);
    ebm_model_generator28(&gen, nz, 2, 1, 3);
    CHECK(ebm_latent_init(&L, &prior, &gen, &c, &e) == EBM_OK, "latent_init: %s", e.msg);
    ebm_rng_normal(t_key(4, 1), 0, 0, z, 12);
    ebm_rng_uniform(t_key(4, 2), 0, 0, -1.0f, 1.0f, x, 3 * 784);
    CHECK(ebm_latent_nll(&L, x, z, n, &l0, dz) == EBM_OK, "nll: %s", L.err.msg);
    gb = (float *)malloc(gen.n_params * sizeof(float));
    memcpy(gb, gen.grads, gen.n_params * sizeof(float));
    for (i = 0; i < n * nz; i++) {
        float keep = z[i];
        z[i] = keep + 1e-2f; ebm_latent_nll(&L, x, z, n, &lp, NULL);
        z[i] = keep - 1e-2f; ebm_latent_nll(&L, x, z, n, &lm, NULL);
        z[i] = keep;
        CHECK(fabs((lp - lm) / 2e-2 - dz[i]) < 0.02 * fabs(dz[i]) + 1e-3 * (1 + fabs(l0)), "d/dz[%d]: %.5g vs differences %.5g", i, dz[i], (lp - lm) / 2e-2);
    }
    for (k = 0; k < 40; k++) {
        size_t p = (size_t)((k * 2654435761u) % gen.n_params);
        float keep = gen.params[p];
        gen.params[p] = keep + 1e-2f; ebm_latent_nll(&L, x, z, n, &lp, NULL);
        gen.params[p] = keep - 1e-2f; ebm_latent_nll(&L, x, z, n, &lm, NULL);
        gen.params[p] = keep;
        CHECK(fabs((lp - lm) / 2e-2 - gb[p]) < 0.02 * fabs(gb[p]) + 1e-3 * (1 + fabs(l0)), "d/dbeta[%lu]: %.5g vs differences %.5g", (unsigned long)p, gb[p], (lp - lm) / 2e-2);
    }
    free(gb); free(x);
    ebm_latent_free(&L); ebm_model_free(&prior); ebm_model_free(&gen);
    { /* the 32x32 generator: its shapes and parameter count (4x4 kernels: 16 Cin Cout + Cout per layer) */
        int oh, ow, oc;
        CHECK(ebm_model_generator32(&gen, 4, 2, 3, 1) == EBM_OK, "generator32: %s", gen.err.msg);
        ebm_model_out_shape(&gen, &oh, &ow, &oc);
        CHECK(oh == 32 && ow == 32 && oc == 3 && gen.n_params == (size_t)(16 * 4 * 8 + 8 + 16 * 8 * 4 + 4 + 16 * 4 * 2 + 2 + 16 * 2 * 3 + 3),
              "generator32: %dx%dx%d, %lu parameters", oh, ow, oc, (unsigned long)gen.n_params);
        ebm_model_free(&gen);
    }
}

/* A latent model checkpointed after 3 iterations and loaded continues bit
   for bit like the one that never stopped (both models, their Adam
   moments, the iteration); ebm_model_load reads its generator; a trainer
   reading it, or it reading a trainer's, is refused; bad settings too. */
static void test_latent_checkpoint(void)
{
    const int nz = 4, B = 4;
    ebm_model prior, gen, p2, g2, gm;
    ebm_latent L, L2;
    ebm_latent_config c;
    ebm_trainer t;
    ebm_model tm;
    ebm_error e;
    float *x = (float *)malloc((size_t)B * 784 * sizeof(float));
    int i;
    ebm_latent_config_default(&c);
    c.batch = B; c.prior_steps = 5; c.post_steps = 3; c.lr_gen = 1e-3f; c.lr_prior = 1e-3f;
    ebm_model_mlp_prior(&prior, nz, 8, EBM_ACT_SILU, 0, 2);
    ebm_model_generator28(&gen, nz, 2, 1, 3);
    CHECK(ebm_latent_init(&L, &prior, &gen, &c, &e) == EBM_OK, "latent_init: %s", e.msg);
    for (i = 0; i < 3; i++) {
        ebm_rng_uniform(t_key(4, 3), (uint64_t)i, 0, -1.0f, 1.0f, x, (size_t)B * 784);
        CHECK(ebm_latent_step(&L, x) == EBM_OK, "step: %s", L.err.msg);
    }
    CHECK(ebm_latent_save(&L, "lat.ckpt", &e) == EBM_OK, "save: %s", e.msg);
    CHECK(ebm_latent_load(&L2, &p2, &g2, "lat.ckpt", &e) == EBM_OK && L2.iter == 3 && !memcmp(&L2.cfg, &L.cfg, sizeof c), "load: %s", e.msg);
    for (i = 3; i < 5 && L2.gen; i++) {
        ebm_rng_uniform(t_key(4, 3), (uint64_t)i, 0, -1.0f, 1.0f, x, (size_t)B * 784);
        ebm_latent_step(&L, x);
        ebm_latent_step(&L2, x);
    }
    CHECK(L2.gen && !memcmp(gen.params, g2.params, gen.n_params * 4) && !memcmp(gen.m1, g2.m1, gen.n_params * 4) &&
              !memcmp(gen.m2, g2.m2, gen.n_params * 4) && !memcmp(prior.params, p2.params, prior.n_params * 4) &&
              !memcmp(prior.m2, p2.m2, prior.n_params * 4) && L.mse == L2.mse && L.d_t == L2.d_t && L2.iter == 5,
          "the resumed latent model differs");
    CHECK(ebm_model_load(&gm, "lat.ckpt", &e) == EBM_OK && gm.n_params == gen.n_params, "model_load of a latent checkpoint: %s", e.msg);
    ebm_model_free(&gm);
    CHECK(ebm_trainer_load(&t, &tm, "lat.ckpt", &e) == EBM_EFORMAT, "a trainer read a latent checkpoint");
    ebm_latent_free(&L2); ebm_model_free(&p2); ebm_model_free(&g2);
    CHECK(ebm_latent_load(&L2, &p2, &g2, "../tests/fuzz_corpus/ckpt/trainer.ckpt", &e) == EBM_EFORMAT, "a trainer's checkpoint read as a latent model");
    c.sigma = 0;
    CHECK(ebm_latent_init(&L2, &prior, &gen, &c, &e) == EBM_EINVAL, "sigma 0 accepted");
    c.sigma = 0.3f;
    CHECK(ebm_latent_init(&L2, &gen, &prior, &c, &e) == EBM_EINVAL, "prior and generator swapped accepted");
    ebm_latent_free(&L); ebm_model_free(&prior); ebm_model_free(&gen);
    free(x);
    remove("lat.ckpt");
}

/* A growing memory sink for the ebm_*_write functions; it refuses bytes
   beyond fail_after (>= 0), as a full disk or a closed socket would. */
typedef struct { unsigned char *p; size_t n, cap; long fail_after; } t_sink;
static int t_sink_put(void *user, const void *data, size_t n)
{
    t_sink *s = (t_sink *)user;
    if (s->fail_after >= 0 && s->n + n > (size_t)s->fail_after) return -1;
    if (s->n + n > s->cap) {
        size_t c = (s->n + n) * 2;
        unsigned char *q = (unsigned char *)realloc(s->p, c);
        if (!q) return -1;
        s->p = q; s->cap = c;
    }
    memcpy(s->p + s->n, data, n);
    s->n += n;
    return 0;
}

/* The memory forms of the writers and readers (what EBM_NO_STDIO leaves):
   each writes the bytes its file form writes, and each reader gives what
   its file form gives. */
static void test_memory_io(void)
{
    ebm_trainer a, b;
    ebm_model ma, mb, mc;
    ebm_dataset d1, d2;
    ebm_error e;
    t_sink s;
    unsigned char *f, raw[16 + 2 * 3 * 4], lab[8 + 2], rec[2 * 3073];
    float x[64], arr[6] = { 1, -2, 3.5f, 4, 5, -6 }, *back = NULL;
    int i, shape[2] = { 2, 3 }, s2[4], nd = 0;
    size_t n;
    memset(&s, 0, sizeof s);
    s.fail_after = -1;
    /* a trainer's checkpoint */
    toy_trainer(&a, &ma, EBM_START_PERSISTENT, 1e-2f, 9);
    for (i = 0; i < 5; i++) { toy_batch(i, x); ebm_trainer_step(&a, x); }
    CHECK(ebm_trainer_write(&a, t_sink_put, &s, &e) == EBM_OK, "trainer_write: %s", e.msg);
    CHECK(ebm_trainer_save(&a, "t_mem.ckpt", &e) == EBM_OK, "trainer_save: %s", e.msg);
    f = read_bytes("t_mem.ckpt", &n);
    CHECK(f && n == s.n && !memcmp(f, s.p, n), "the checkpoint in memory (%lu bytes) is not the file's (%lu)", (unsigned long)s.n, (unsigned long)n);
    free(f);
    CHECK(ebm_trainer_read(&b, &mb, s.p, s.n, &e) == EBM_OK, "trainer_read: %s", e.msg);
    CHECK(b.iter == 5 && b.buffer && !memcmp(a.buffer, b.buffer, 100 * 2 * sizeof(float)), "trainer_read: iteration %ld or buffer differ", b.iter);
    for (i = 5; i < 8 && b.model; i++) { toy_batch(i, x); ebm_trainer_step(&a, x); ebm_trainer_step(&b, x); }
    CHECK(b.model && !memcmp(ma.params, mb.params, ma.n_params * sizeof(float)) && !memcmp(ma.m2, mb.m2, ma.n_params * sizeof(float)),
          "a trainer read from memory does not continue the run bit for bit");
    CHECK(ebm_model_read(&mc, s.p, s.n, &e) == EBM_OK && mc.n_params == ma.n_params, "model_read: %s", e.msg);
    ebm_model_free(&mc);
    s.p[s.n / 2] ^= 4;
    CHECK(ebm_model_read(&mc, s.p, s.n, &e) == EBM_EFORMAT && strstr(e.msg, "checksum"), "a damaged checkpoint in memory was read: %s", e.msg);
    CHECK(ebm_model_read(&mc, s.p, 20, &e) == EBM_EFORMAT, "20 bytes read as a checkpoint");
    CHECK(ebm_model_read(&mc, NULL, 100, &e) == EBM_EINVAL, "a NULL buffer was read");
    s.n = 0; s.fail_after = 100;
    CHECK(ebm_trainer_write(&a, t_sink_put, &s, &e) == EBM_EIO && strstr(e.msg, "after 100 bytes"), "a failing sink was not reported: %s", e.msg);
    CHECK(ebm_model_write(&ma, NULL, &s, &e) == EBM_EINVAL, "a NULL write function was accepted");
    s.fail_after = -1;
    ebm_trainer_free(&a); ebm_model_free(&ma); ebm_trainer_free(&b); ebm_model_free(&mb);
    remove("t_mem.ckpt");
    /* NPY */
    s.n = 0;
    CHECK(ebm_npy_write(t_sink_put, &s, arr, 2, shape, &e) == EBM_OK && ebm_npy_save("t_mem.npy", arr, 2, shape, &e) == EBM_OK, "npy: %s", e.msg);
    f = read_bytes("t_mem.npy", &n);
    CHECK(f && n == s.n && !memcmp(f, s.p, n) && n % 64 == 24, "the NPY in memory is not the file's");
    free(f);
    CHECK(ebm_npy_read(s.p, s.n, &back, &nd, s2, &e) == EBM_OK && nd == 2 && s2[0] == 2 && s2[1] == 3 && back && !memcmp(back, arr, sizeof arr),
          "npy_read: %s", e.msg);
    free(back);
    CHECK(ebm_npy_read(s.p, s.n - 1, &back, &nd, s2, &e) == EBM_EFORMAT, "a short NPY buffer was read");
    remove("t_mem.npy");
    /* PNG */
    for (i = 0; i < (int)sizeof rec; i++) rec[i] = (unsigned char)(i * 7);
    s.n = 0;
    CHECK(ebm_png_write(t_sink_put, &s, rec, 9, 4, 3, "mem", &e) == EBM_OK && ebm_png_save("t_mem.png", rec, 9, 4, 3, "mem", &e) == EBM_OK, "png: %s", e.msg);
    f = read_bytes("t_mem.png", &n);
    CHECK(f && n == s.n && !memcmp(f, s.p, n), "the PNG in memory is not the file's");
    free(f);
    remove("t_mem.png");
    /* IDX: raw with labels, and gzip */
    memset(raw, 0, sizeof raw);
    raw[2] = 8; raw[3] = 3; raw[7] = 2; raw[11] = 3; raw[15] = 4;
    for (i = 0; i < 24; i++) raw[16 + i] = (unsigned char)(i * 9);
    memset(lab, 0, sizeof lab);
    lab[2] = 8; lab[3] = 1; lab[7] = 2; lab[8] = 6; lab[9] = 1;
    CHECK(ebm_idx_read(&d1, raw, sizeof raw, lab, sizeof lab, &e) == EBM_OK && d1.n == 2 && d1.h == 3 && d1.w == 4 && d1.labels &&
              d1.labels[0] == 6 && d1.labels[1] == 1 && d1.pixels[23] == 23 * 9, "idx_read: %s", e.msg);
    ebm_dataset_free(&d1);
    lab[9] = 10;
    CHECK(ebm_idx_read(&d1, raw, sizeof raw, lab, sizeof lab, &e) == EBM_EFORMAT && strstr(e.msg, "label"), "a label of 10 was read");
    CHECK(ebm_idx_read(&d1, raw, sizeof raw - 1, NULL, 0, &e) == EBM_EFORMAT, "a truncated IDX buffer was read");
    write_bytes("t_mem.gz", idx_gz_dynamic, sizeof idx_gz_dynamic);
    CHECK(ebm_idx_read(&d1, idx_gz_dynamic, sizeof idx_gz_dynamic, NULL, 0, &e) == EBM_OK && ebm_idx_load(&d2, "t_mem.gz", NULL, &e) == EBM_OK &&
              d1.n == d2.n && d1.n == 20 && !memcmp(d1.pixels, d2.pixels, 20 * 64), "gzip IDX from memory differs from the file's");
    ebm_dataset_free(&d1); ebm_dataset_free(&d2);
    remove("t_mem.gz");
    /* CIFAR-10: two batches */
    {
        const void *bufs[2];
        size_t lens[2] = { 3073, 3073 };
        for (i = 0; i < 2 * 3073; i++) rec[i] = (unsigned char)(i % 251);
        rec[0] = 3; rec[3073] = 8;
        bufs[0] = rec; bufs[1] = rec + 3073;
        CHECK(ebm_cifar10_read(&d1, bufs, lens, 2, &e) == EBM_OK && d1.n == 2 && d1.labels[0] == 3 && d1.labels[1] == 8 &&
                  d1.pixels[1] == rec[1 + 1024] && d1.pixels[3072 + 3] == rec[3073 + 2], "cifar10_read: %s", e.msg);
        ebm_dataset_free(&d1);
        lens[1] = 3072;
        CHECK(ebm_cifar10_read(&d1, bufs, lens, 2, &e) == EBM_EFORMAT, "a short CIFAR-10 record was read");
    }
    /* a latent model's checkpoint */
    {
        ebm_model prior, gen, p2, g2;
        ebm_latent L, L2;
        ebm_latent_config c;
        float *img = (float *)calloc(2 * 784, sizeof(float));
        ebm_latent_config_default(&c);
        c.batch = 2; c.prior_steps = 2; c.post_steps = 2;
        ebm_model_mlp_prior(&prior, 4, 8, EBM_ACT_SILU, 0, 2);
        ebm_model_generator28(&gen, 4, 2, 1, 3);
        CHECK(ebm_latent_init(&L, &prior, &gen, &c, &e) == EBM_OK && ebm_latent_step(&L, img) == EBM_OK, "latent: %s", e.msg);
        s.n = 0;
        CHECK(ebm_latent_write(&L, t_sink_put, &s, &e) == EBM_OK && ebm_latent_save(&L, "t_mem.ckpt", &e) == EBM_OK, "latent_write: %s", e.msg);
        f = read_bytes("t_mem.ckpt", &n);
        CHECK(f && n == s.n && !memcmp(f, s.p, n), "the latent checkpoint in memory is not the file's");
        free(f);
        CHECK(ebm_latent_read(&L2, &p2, &g2, s.p, s.n, &e) == EBM_OK && L2.iter == 1 && !memcmp(p2.params, prior.params, prior.n_params * sizeof(float)),
              "latent_read: %s", e.msg);
        ebm_latent_free(&L2); ebm_model_free(&p2); ebm_model_free(&g2);
        ebm_latent_free(&L); ebm_model_free(&prior); ebm_model_free(&gen);
        free(img);
        remove("t_mem.ckpt");
    }
    free(s.p);
}
