/* Crash safety of training with checkpoints (POSIX: fork, SIGKILL).

   A small trainer (8 Gaussians, an MLP energy, persistent chains, so the
   replay buffer and Adam's moments are part of the state) checkpoints every
   EVERY iterations. One run is killed with SIGKILL at chosen moments and
   resumed from its checkpoint each time:
     - between iterations;
     - inside a checkpoint write, after chosen numbers of bytes (in the
       header, in the middle of the parameters, just before the CRC);
     - after the temporary file is closed, before it is renamed into place.
   After every kill the checkpoint on disk must load (the previous good one
   was kept), its iteration must not go backwards, and the run that was
   killed six times must end with a checkpoint identical, byte for byte, to
   that of a run never interrupted. Built without OpenMP (fork and a thread
   pool do not mix); thread counts are tested by the main suite. */
#define _POSIX_C_SOURCE 200809L
#define EBM_TEST_HOOKS
#define EBM_IMPLEMENTATION
#include "../ebm.h"
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
#include <sys/stat.h>

#define ITERS 60
#define EVERY 10
#define BATCH 64

static int passed, failed;
#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

/* where this process dies: at an iteration, or in its n-th checkpoint write
   (after at least `bytes` bytes at stage 0, or at stage 1) */
static long kill_iter = -1;
static int kill_write = -1, kill_stage = -1, writes;
static size_t kill_bytes;

static void hook(size_t bytes, int stage)
{
    if (writes == kill_write && stage == kill_stage && (stage == 1 || bytes >= kill_bytes)) raise(SIGKILL);
}

/* Train to ITERS from dir/ckpt.bin if it exists, else from scratch. */
static int train(const char *dir)
{
    char path[600];
    ebm_model m;
    ebm_trainer t;
    ebm_train_config c;
    ebm_error err;
    ebm_rng rd;
    float x[2 * BATCH];
    struct stat st;
    snprintf(path, sizeof path, "%s/ckpt.bin", dir);
    if (stat(path, &st) == 0) {
        if (ebm_trainer_load(&t, &m, path, &err) != EBM_OK) { printf("child: %s\n", err.msg); return 1; }
    } else {
        if (ebm_model_mlp_prior(&m, 2, 32, EBM_ACT_SILU, 0.0f, 5) != EBM_OK) return 1;
        ebm_train_config_default(&c);
        c.batch = BATCH; c.start = EBM_START_PERSISTENT; c.buffer_size = 500; c.reinit = 0.05f;
        c.chain.form = EBM_LANGEVIN_EPS; c.chain.eps = 0.3f; c.chain.n_steps = 5;
        ebm_toy_box(EBM_TOY_8GAUSSIANS, &c.chain.lo, &c.chain.hi);
        c.data_noise = 0; c.lr = 1e-3f; c.schedule = EBM_LR_COSINE; c.total_iters = ITERS; c.seed = 3;
        if (ebm_trainer_init(&t, &m, &c, &err) != EBM_OK) { printf("child: %s\n", err.msg); return 1; }
    }
    rd.seed = 11; rd.stream = EBM_STREAM_USER;
    while (t.iter < ITERS) {
        if (t.iter == kill_iter) raise(SIGKILL);
        ebm_toy_sample(EBM_TOY_8GAUSSIANS, &rd, (uint64_t)t.iter * BATCH, x, BATCH);
        if (ebm_trainer_step(&t, x) != EBM_OK) { printf("child: %s\n", t.err.msg); return 1; }
        if (t.iter % EVERY == 0) {
            writes++;
            if (ebm_trainer_save(&t, path, &err) != EBM_OK) { printf("child: %s\n", err.msg); return 1; }
        }
    }
    ebm_trainer_free(&t);
    ebm_model_free(&m);
    return 0;
}

/* Run train(dir) in a child with the given kill; 's' if it died of SIGKILL,
   'x' if it exited 0, '?' otherwise. */
static char run_child(const char *dir, long k_iter, int k_write, int k_stage, size_t k_bytes)
{
    int status;
    pid_t pid;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        kill_iter = k_iter; kill_write = k_write; kill_stage = k_stage; kill_bytes = k_bytes;
        ebm_test_ckpt_hook = hook;
        _exit(train(dir));
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return '?';
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return 's';
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 'x' : '?';
}

static unsigned char *slurp(const char *path, size_t *n)
{
    unsigned char *p = NULL;
    ebm_error e;
    return ebm__read_file(path, (size_t)1 << 30, &p, n, &e) == EBM_OK ? p : NULL;
}

/* The iteration stored in dir's checkpoint, or -1 if it does not load. */
static long ckpt_iter(const char *dir)
{
    char path[600];
    ebm_model m;
    ebm_trainer t;
    ebm_error err;
    long it;
    snprintf(path, sizeof path, "%s/ckpt.bin", dir);
    if (ebm_trainer_load(&t, &m, path, &err) != EBM_OK) { printf("  load: %s\n", err.msg); return -1; }
    it = t.iter;
    ebm_trainer_free(&t);
    ebm_model_free(&m);
    return it;
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 && strlen(argv[1]) < 200 ? argv[1] : "kill_test_dir";
    char ref[256], run[256], path_ref[600], path_run[600];
    size_t n_ref, n_run;
    unsigned char *a, *b;
    long last = 0;
    int i;
    /* the kills, in order: (iteration) or (write of that process, stage, bytes) */
    struct { long iter; int write, stage; size_t bytes; const char *what; } kills[6] = {
        { 15, -1, -1, 0, "between iterations 15 and 16" },
        { -1, 1, 0, 12, "12 bytes into a checkpoint write (the header)" },
        { -1, 1, 0, 0, "half-way through a checkpoint write" },
        { -1, 2, 0, 0, "4 bytes short of a whole checkpoint (no CRC yet)" },
        { -1, 1, 1, 0, "between closing the temporary file and renaming it" },
        { 47, -1, -1, 0, "between iterations 47 and 48" },
    };
    mkdir(root, 0777);
    snprintf(ref, sizeof ref, "%s/ref", root);
    snprintf(run, sizeof run, "%s/run", root);
    mkdir(ref, 0777); mkdir(run, 0777);
    snprintf(path_ref, sizeof path_ref, "%s/ckpt.bin", ref);
    snprintf(path_run, sizeof path_run, "%s/ckpt.bin", run);
    remove(path_ref); remove(path_run);
    CHECK(run_child(ref, -1, -1, -1, 0) == 'x', "the uninterrupted run failed");
    a = slurp(path_ref, &n_ref);
    CHECK(a != NULL, "no reference checkpoint");
    if (!a) { printf("%d passed, %d failed\n", passed, failed); return 1; }
    kills[2].bytes = n_ref / 2;
    kills[3].bytes = n_ref - 4;
    for (i = 0; i < 6; i++) {
        char how = run_child(run, kills[i].iter, kills[i].write, kills[i].stage, kills[i].bytes);
        long it;
        CHECK(how == 's', "kill %d (%s): the child was not killed (%c)", i + 1, kills[i].what, how);
        it = ckpt_iter(run);
        CHECK(it >= last && it % EVERY == 0 && it > 0, "after kill %d (%s): checkpoint at iteration %ld (last %ld)", i + 1, kills[i].what, it, last);
        if (how == 's' && it >= last && it % EVERY == 0 && it > 0) printf("ok   killed %s: the checkpoint on disk loads, iteration %ld\n", kills[i].what, it);
        if (it > last) last = it;
    }
    CHECK(run_child(run, -1, -1, -1, 0) == 'x', "the last resume failed");
    b = slurp(path_run, &n_run);
    CHECK(b && n_run == n_ref && !memcmp(a, b, n_ref), "the run killed six times ended with another checkpoint (%zu vs %zu bytes)", n_run, n_ref);
    if (b && n_run == n_ref && !memcmp(a, b, n_ref)) printf("ok   killed six times and resumed: the final checkpoint equals the uninterrupted run's, byte for byte\n");
    free(a); free(b);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
