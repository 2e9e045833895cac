# ebm.h — `make demo` runs the first example, `make test` the test suite in
# every configuration the library promises to work in.
CC      ?= cc
CXX     ?= c++
OPT     ?= -O3 -march=native
# No FMA contraction and no fast-math: the same bits in C and C++ builds, and isfinite() stays honest.
FPFLAGS  = -ffp-contract=off
WARN     = -Wall -Wextra -Werror
CSTD     = -std=c99 -pedantic
OMP      = -fopenmp
B        = build

.PHONY: all demo test test-build test-quick test-arm crosscheck clean examples bench bench-ab fuzz-build flag-check static-check opt-check resume-check generate-check output-check doc-check fuzz asan-examples valgrind-check soak compare2d mpi-test mpi-time nostdio-check

all: examples

$(B):
	mkdir -p $(B)

# --- examples
EXAMPLES = $(B)/hello_energy $(B)/toy2d $(B)/train_images $(B)/evaluate $(B)/generate $(B)/latent_ebm
examples: $(EXAMPLES)
# (_POSIX_C_SOURCE: a monotonic clock for the progress lines in strict C99)
$(B)/%: examples/%.c examples/flags.h examples/images.h ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -D_POSIX_C_SOURCE=200809L -I. $< -o $@ -lm

# The main job on built-in data: maximum-likelihood training of an energy on
# 8 Gaussians with persistent MALA chains, scored by its exact NLL, and its
# picture (data | learned density | samples) in build/ (~25 s).
demo: $(B)/toy2d
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(B)/toy2d --out $(B)/toy2d_8gaussians_convergent.png

# The 2-D comparison (issue 7): every recipe on the four data sets, 60 s of
# wall-clock time each, a table of exact NLLs and one picture in
# $(B)/compare2d/ (~40 minutes; nothing else should run meanwhile).
$(B)/panel2d: tools/panel2d.c ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) -I. $< -o $@ -lm
compare2d: $(B)/toy2d $(B)/panel2d
	B=$(B) sh tools/compare2d.sh

# Data-parallel training over MPI (issue 10): not among EXAMPLES, since
# mpicc (Debian: libopenmpi-dev, openmpi-bin) is not everywhere; mpi-test
# checks that 1, 2 and 4 ranks train the same model bit for bit.
MPICC ?= mpicc
$(B)/train_mpi: examples/train_mpi.c examples/flags.h examples/images.h ebm.h | $(B)
	$(MPICC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -D_POSIX_C_SOURCE=200809L -I. $< -o $@ -lm
# (test-build compiles it where mpicc is installed, with its ASan twin for asan-examples)
ifneq ($(shell command -v $(MPICC) 2>/dev/null),)
MPI_BINS = $(B)/train_mpi $(B)/train_mpi_asan
endif
mpi-test: $(B)/train_mpi
	B=$(B) sh tests/mpi_test.sh
# Time per iteration on 1, 2 and 4 ranks (the README's table; ~3 minutes)
mpi-time: $(B)/train_mpi
	B=$(B) sh tools/mpi_time.sh

# --- tests: one harness, seven builds (five without AVX2 and clang)
TEST_SRC = tests/test_main.c tests/test_train.c tests/harness.h ebm.h
$(B)/test_c99: $(TEST_SRC) | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -I. tests/test_main.c -o $@ -lm
# (C++ at -O2: the optimisation level most projects use, whose code the
# kernels do not leave to the compiler's -O3 unrolling and vectorising)
$(B)/test_cxx: $(TEST_SRC) | $(B)
	$(CXX) -x c++ -std=c++11 $(WARN) -O2 $(filter-out -O%,$(OPT)) $(FPFLAGS) $(OMP) -I. tests/test_main.c -o $@ -lm
$(B)/test_noomp: $(TEST_SRC) | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) -I. tests/test_main.c -o $@ -lm
$(B)/test_nosimd: $(TEST_SRC) | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -DEBM_NO_SIMD -I. tests/test_main.c -o $@ -lm
# (ASan + UBSan at -O2: the same checks, in 95 s instead of -O1's 213 s here,
# the longest step of make test; its single thread runs beside the examples
# under ASan, 90 s)
$(B)/test_asan: $(TEST_SRC) | $(B)
	$(CC) $(CSTD) $(WARN) -O2 -g -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  $(FPFLAGS) -I. tests/test_main.c -o $@ -lm

# AVX2 + FMA, without AVX-512: the vector width the x86 builds above do not
# take on a machine with AVX-512 (only where the CPU has both; elsewhere
# five builds).
$(B)/test_avx2: $(TEST_SRC) | $(B)
	$(CC) $(CSTD) $(WARN) -O3 -mavx2 -mfma $(FPFLAGS) $(OMP) -I. tests/test_main.c -o $@ -lm

# clang (where clang-14 is installed; CI installs it, with its OpenMP
# runtime): the compiler macOS and the BSDs build with, its warnings under
# $(WARN) and its code generation (it vectorises and unrolls other loops).
# Without $(FPFLAGS): clang contracts a*b+c into FMAs by default, and ebm.h
# turns that off for itself, which this build checks (the tests that expect
# exact bits fail without it).
CLANG ?= clang-14
$(B)/test_clang: $(TEST_SRC) | $(B)
	$(CLANG) $(CSTD) $(WARN) $(OPT) $(OMP) -I. tests/test_main.c -o $@ -lm

TEST_BINS = $(B)/test_c99 $(B)/test_cxx $(B)/test_nosimd $(B)/test_noomp $(B)/test_asan
ifeq ($(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo y),y)
TEST_BINS += $(B)/test_avx2
endif
ifneq ($(shell command -v $(CLANG) 2>/dev/null),)
TEST_BINS += $(B)/test_clang
endif

# Crash safety: a training run killed with SIGKILL six times (between
# iterations, inside checkpoint writes, before the rename) must end equal to
# an uninterrupted one. POSIX; no OpenMP (fork and a thread pool do not mix).
$(B)/kill_test: tests/kill_test.c ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) -I. tests/kill_test.c -o $@ -lm
# A training process's peak memory within 25 % of ebm_trainer_memory's prediction.
$(B)/memory_test: tests/memory_test.c ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -I. tests/memory_test.c -o $@ -lm

# EBM_NO_STDIO: the library without its file functions (nm finds none of
# the C library's file calls in it), and a program linked with that very
# object (its own copy left out: EBM_IMPLEMENTATION_DONE) that trains,
# checkpoints to memory and resumes, and reads a data set from memory.
NOSTDIO_CALLS = fopen|fwrite|fread|fclose|fseek|ftell|fflush|rename|remove|fsync|fileno|fprintf|fputc
$(B)/nostdio_lib.o: ebm.h | $(B)
	printf '#define EBM_IMPLEMENTATION\n#include "ebm.h"\n' > $(B)/nostdio_lib.c
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -DEBM_NO_STDIO -I. -c $(B)/nostdio_lib.c -o $@
$(B)/nostdio_test: tests/nostdio_test.c ebm.h $(B)/nostdio_lib.o | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -DEBM_NO_STDIO -DEBM_IMPLEMENTATION_DONE -I. $< $(B)/nostdio_lib.o -o $@ -lm
nostdio-check: $(B)/nostdio_lib.o $(B)/nostdio_test
	@if nm -u $(B)/nostdio_lib.o | grep -wE '$(NOSTDIO_CALLS)'; then echo "EBM_NO_STDIO: the library still calls the file functions above"; exit 1; fi
	./$(B)/nostdio_test

# The examples refuse a numeric flag that is not wholly a number of its
# type (exit status 2 and a message), where atoi/atof read "12x" as 12 and
# "nan" as NaN, or a number out of its flag's range (a negative learning
# rate had been taken for "the default"), or a flag they do not have; and
# still take a well-formed one.
flag-check: $(B)/toy2d $(B)/evaluate $(B)/hello_energy $(B)/train_images $(B)/generate $(B)/latent_ebm
	./$(B)/hello_energy --nf 8x 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --nf wants an integer > 0, got '8x'" $(B)/flag_check.err
	./$(B)/hello_energy --bogus 3 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: unknown flag --bogus" $(B)/flag_check.err
	./$(B)/toy2d --iters 12x --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --iters wants an integer > 0, got '12x'" $(B)/flag_check.err
	./$(B)/toy2d --lr nan --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --lr wants a finite number > 0, got 'nan'" $(B)/flag_check.err
	./$(B)/toy2d --lr -1 --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --lr wants a number > 0, got '-1'" $(B)/flag_check.err
	./$(B)/toy2d --threads -2 --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --threads wants an integer >= 0, got '-2'" $(B)/flag_check.err
	./$(B)/toy2d --mala 2 --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --mala wants an integer: 0 or 1, got '2'" $(B)/flag_check.err
	./$(B)/toy2d --reinit 1.5 --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --reinit wants a number from 0 to 1, got '1.5'" $(B)/flag_check.err
	./$(B)/train_images --samples -1 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --samples wants an integer >= 0, got '-1'" $(B)/flag_check.err
	./$(B)/generate --k 0 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --k wants an integer > 0, got '0'" $(B)/flag_check.err
	./$(B)/latent_ebm --beta1 2 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --beta1 wants a number from 0 to 1, got '2'" $(B)/flag_check.err
	./$(B)/toy2d --samples 99999999999 --out $(B)/flag_check.png 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --samples wants an integer" $(B)/flag_check.err
	./$(B)/evaluate --n 3.5 x.npy 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: --n wants an integer > 0, got '3.5'" $(B)/flag_check.err
	./$(B)/evaluate --bogus x.npy 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: unknown flag --bogus" $(B)/flag_check.err
	./$(B)/evaluate 2> $(B)/flag_check.err; test $$? -eq 2 && grep -q "^error: nothing to do" $(B)/flag_check.err
	OMP_NUM_THREADS=2 ./$(B)/toy2d --iters 2 --lr 1e-2 --samples 16 --out $(B)/flag_check.png | grep -q ' iters=2 .*status=ok'
	@echo "ok   flag-check (malformed and out-of-range numbers refused, well-formed ones taken)"

# The README's quick start compiles against ebm.h (tests/readme_snippets.sh).
doc-check: | $(B)
	B=$(B) CC="$(CC)" sh tests/readme_snippets.sh

# EBM_STATIC: every function static, for a program that includes the
# library in one file; it must build without a warning (nothing unused
# warned about) and run.
static-check: | $(B)
	printf '#define EBM_STATIC\n#define EBM_IMPLEMENTATION\n#include "ebm.h"\nint main(void) { ebm_model m; int ok = ebm_model_convnet(&m, 1, 28, 8, EBM_ACT_LEAKY_RELU, 0.2f, 1) == EBM_OK; ebm_model_free(&m); return !ok; }\n' > $(B)/static_check.c
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -I. $(B)/static_check.c -o $(B)/static_check -lm
	./$(B)/static_check

# -O2 and -O3 give the same bits (tests/opt_check.c says why): the same
# program built both ways writes the same bytes.
$(B)/opt_check_o2 $(B)/opt_check_o3: $(B)/opt_check_o%: tests/opt_check.c ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) -O$* $(filter-out -O%,$(OPT)) $(FPFLAGS) $(OMP) -I. $< -o $@ -lm
opt-check: $(B)/opt_check_o2 $(B)/opt_check_o3
	OMP_NUM_THREADS=2 ./$(B)/opt_check_o2 $(B)/opt_check_o2.bin
	OMP_NUM_THREADS=2 ./$(B)/opt_check_o3 $(B)/opt_check_o3.bin
	cmp $(B)/opt_check_o2.bin $(B)/opt_check_o3.bin
	@echo "ok   -O2 and -O3 wrote the same $$(wc -c < $(B)/opt_check_o3.bin) bytes (three nets' and the generator's gradients)"

# What `make test` builds before it runs anything; CI builds it first with
# -j2 (the builds are independent; the runs below stay one at a time).
test-build: $(TEST_BINS) $(EXAMPLES) $(B)/kill_test $(B)/memory_test $(B)/hello_vg $(B)/nostdio_lib.o $(B)/nostdio_test \
  $(B)/opt_check_o2 $(B)/opt_check_o3 $(B)/train_images_noomp $(MPI_BINS)

# Each build runs the whole suite; the last line sums them for CI. The
# builds without OpenMP and with ASan are single-threaded, and so are the
# examples under ASan, so the examples run beside those two suites on the
# other core (about as long as the two together: 85-90 s against 15 + 75-100
# s here); their result is reported in its place below. Every program the checks run is built by test-build, so
# that CI's make -j2 compiles them two at a time. Each stage's header says
# when it started, in seconds from the start of make test.
test: test-build
	@p=0; f=0; ae=; t0=$$(date +%s); stage() { echo "== $$1 (at $$(( $$(date +%s) - t0 )) s)"; }; \
	for t in $(TEST_BINS); do \
	  stage "$$t"; \
	  if [ $$t = $(B)/test_noomp ]; then $(MAKE) -s asan-examples > $(B)/asan_examples.log 2>&1 & ae=$$!; fi; \
	  out=$$(cd $(B) && OMP_NUM_THREADS=2 ./$$(basename $$t) 2>&1); rc=$$?; \
	  echo "$$out" | grep -v '^ok ' ; \
	  line=$$(echo "$$out" | tail -n 1); \
	  tp=$$(echo "$$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$$/\1/p'); \
	  tf=$$(echo "$$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$$/\2/p'); \
	  if [ -z "$$tp" ] || [ $$rc -ne 0 -a "$${tf:-0}" = 0 ]; then echo "$$t crashed (exit $$rc)"; tf=$$(( $${tf:-0} + 1 )); tp=$${tp:-0}; fi; \
	  p=$$((p + tp)); f=$$((f + tf)); \
	done; \
	stage "kill test"; if (cd $(B) && ./kill_test kill_test_dir > kill_test.log 2>&1); then p=$$((p+1)); grep '^ok' $(B)/kill_test.log; else echo "kill test failed"; cat $(B)/kill_test.log; f=$$((f+1)); fi; \
	stage "memory test"; if OMP_NUM_THREADS=2 ./$(B)/memory_test > $(B)/memory_test.log 2>&1; then p=$$((p+1)); head -1 $(B)/memory_test.log; else echo "memory test failed"; cat $(B)/memory_test.log; f=$$((f+1)); fi; \
	if command -v valgrind > /dev/null; then if $(MAKE) -s valgrind-check > $(B)/valgrind.log 2>&1; then p=$$((p+1)); tail -1 $(B)/valgrind.log; else echo "valgrind check failed"; cat $(B)/valgrind.log; f=$$((f+1)); fi; \
	else echo "skipped: valgrind check (apt-get install valgrind)"; fi; \
	stage "examples under ASan + UBSan"; \
	if [ -n "$$ae" ]; then wait $$ae; else $(MAKE) -s asan-examples > $(B)/asan_examples.log 2>&1; fi; \
	if [ $$? -eq 0 ]; then p=$$((p+1)); else echo "asan-examples failed"; tail -30 $(B)/asan_examples.log; f=$$((f+1)); fi; \
	stage "EBM_NO_STDIO"; if $(MAKE) -s nostdio-check > $(B)/nostdio.log 2>&1; then p=$$((p+1)); grep '^ok' $(B)/nostdio.log; else echo "nostdio check failed"; cat $(B)/nostdio.log; f=$$((f+1)); fi; \
	stage "example flags"; if $(MAKE) -s flag-check > $(B)/flag_check.log 2>&1; then p=$$((p+1)); grep '^ok' $(B)/flag_check.log; else echo "flag check failed"; cat $(B)/flag_check.log; f=$$((f+1)); fi; \
	stage "outputs that cannot be written"; if $(MAKE) -s output-check > $(B)/output_check_make.log 2>&1; then p=$$((p+1)); grep '^ok' $(B)/output_check_make.log; else echo "output check failed"; cat $(B)/output_check_make.log $(B)/output_check.log; f=$$((f+1)); fi; \
	stage "the README's quick start"; if $(MAKE) -s doc-check > $(B)/doc_check.log 2>&1; then p=$$((p+1)); grep '^ok' $(B)/doc_check.log; else echo "doc check failed"; cat $(B)/doc_check.log; f=$$((f+1)); fi; \
	stage "EBM_STATIC"; if $(MAKE) -s static-check > $(B)/static.log 2>&1; then p=$$((p+1)); echo "ok   static-check (built with $(WARN), ran)"; else echo "static check failed"; cat $(B)/static.log; f=$$((f+1)); fi; \
	stage "-O2 against -O3"; if $(MAKE) -s opt-check > $(B)/opt_check.log 2>&1; then p=$$((p+1)); grep '^ok' $(B)/opt_check.log; else echo "opt check failed"; cat $(B)/opt_check.log; f=$$((f+1)); fi; \
	stage "example smoke runs"; if ./$(B)/hello_energy > $(B)/hello.log 2>&1 && grep -q '^params=' $(B)/hello.log; then p=$$((p+1)); else echo "hello_energy failed"; cat $(B)/hello.log; f=$$((f+1)); fi; \
	if OMP_NUM_THREADS=2 ./$(B)/toy2d --iters 250 --out $(B)/toy2d_smoke.png > $(B)/toy2d.log 2>&1 && grep -q '^toy2d data=8gaussians recipe=convergent nll=' $(B)/toy2d.log; then p=$$((p+1)); else echo "toy2d failed"; cat $(B)/toy2d.log; f=$$((f+1)); fi; \
	if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if $(MAKE) -s resume-check > $(B)/resume.log 2>&1; then p=$$((p+1)); else echo "train_images resume check failed"; cat $(B)/resume.log; f=$$((f+1)); fi; \
	  if $(MAKE) -s generate-check > $(B)/generate.log 2>&1; then p=$$((p+1)); else echo "generate check failed"; cat $(B)/generate.log; f=$$((f+1)); fi; \
	else echo "skipped: train_images resume check and generate check (apt-get install dataset-fashion-mnist)"; fi; \
	stage "data parallelism over MPI"; \
	if command -v $(MPICC) > /dev/null && command -v mpirun > /dev/null && [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if $(MAKE) -s mpi-test > $(B)/mpi_test.log 2>&1; then p=$$((p+1)); grep '^ok' $(B)/mpi_test.log; else echo "mpi test failed"; cat $(B)/mpi_test.log; f=$$((f+1)); fi; \
	else echo "skipped: mpi test (apt-get install libopenmpi-dev openmpi-bin dataset-fashion-mnist)"; fi; \
	stage "end"; echo "$$p passed, $$f failed"; [ $$f -eq 0 ]

# The image trainer on Fashion-MNIST: 6 iterations straight, and 3 + resume
# to 6, must give byte-identical checkpoints and samples; a diverging run
# must stop with status 3, or roll back.
FMNIST = /usr/share/datasets/fashion-mnist
RUN_SMALL = OMP_NUM_THREADS=2 ./$(B)/train_images --nf 8 --k 5 --buffer 300 --start persistent --samples 8 --total-iters 6
$(B)/train_images_noomp: examples/train_images.c examples/flags.h examples/images.h ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) -D_POSIX_C_SOURCE=200809L -I. $< -o $@ -lm
resume-check: $(B)/train_images $(B)/train_images_noomp
	rm -rf $(B)/rc_a $(B)/rc_b
	$(RUN_SMALL) --iters 6 --out $(B)/rc_a > /dev/null
	$(RUN_SMALL) --iters 3 --out $(B)/rc_b > /dev/null
	OMP_NUM_THREADS=2 ./$(B)/train_images --resume --iters 6 --samples 8 --out $(B)/rc_b | grep -q 'status=ok'
	cmp $(B)/rc_a/ckpt.bin $(B)/rc_b/ckpt.bin
	cmp $(B)/rc_a/samples.npy $(B)/rc_b/samples.npy
	@echo "resume-check: byte-identical"
	@# an absurd learning rate: reported as divergence (exit 3), or rolled back to the last checkpoint
	rm -rf $(B)/rc_d; OMP_NUM_THREADS=2 ./$(B)/train_images --nf 8 --k 5 --lr 10 --iters 40 --samples 0 --on-diverge stop \
	  --out $(B)/rc_d > $(B)/rc_d.log 2>&1; test $$? -eq 3
	grep -q 'status=diverged' $(B)/rc_d.log
	rm -rf $(B)/rc_d; OMP_NUM_THREADS=2 ./$(B)/train_images --nf 8 --k 5 --lr 10 --iters 40 --samples 0 --save-minutes 0 \
	  --on-diverge rollback --out $(B)/rc_d > $(B)/rc_d.log 2>&1 || true
	grep -q 'rolled back to iteration' $(B)/rc_d.log
	@echo "resume-check: divergence stopped and rolled back"
	@# the same seed, 1 and 2 threads and a build without OpenMP: the same checkpoint, byte for byte
	rm -rf $(B)/rc_t1 $(B)/rc_t2 $(B)/rc_t0
	OMP_NUM_THREADS=1 ./$(B)/train_images --nf 8 --k 5 --buffer 300 --start persistent --samples 8 --iters 4 --out $(B)/rc_t1 > /dev/null
	OMP_NUM_THREADS=2 ./$(B)/train_images --nf 8 --k 5 --buffer 300 --start persistent --samples 8 --iters 4 --out $(B)/rc_t2 > /dev/null
	./$(B)/train_images_noomp --nf 8 --k 5 --buffer 300 --start persistent --samples 8 --iters 4 --out $(B)/rc_t0 > /dev/null
	cmp $(B)/rc_t1/ckpt.bin $(B)/rc_t2/ckpt.bin
	cmp $(B)/rc_t1/ckpt.bin $(B)/rc_t0/ckpt.bin
	@echo "resume-check: 1 thread, 2 threads and no OpenMP give the same checkpoint"
	@# a time budget whose schedule ends first stops there (at lr 0 the model would not change)
	rm -rf $(B)/rc_s; OMP_NUM_THREADS=2 ./$(B)/train_images --nf 4 --k 2 --minutes 1 --total-iters 3 --samples 4 --out $(B)/rc_s > $(B)/rc_s.log
	grep -q '^the schedule ended at iteration 3 ' $(B)/rc_s.log && grep -q 'iters=3 .*status=ok$$' $(B)/rc_s.log
	@# a schedule the probe planned too long (a sample grid every iteration, which it does not count) is
	@# planned again as the run goes, so it still ends at lr ~0 (v0.6.13's run ended at 9.99e-5 of 1e-4)
	rm -rf $(B)/rc_s; OMP_NUM_THREADS=2 ./$(B)/train_images --nf 4 --k 2 --minutes 0.1 --save-minutes 0 --sample-k 200 --samples 0 \
	  --out $(B)/rc_s > $(B)/rc_s.log
	grep -q 'status=ok$$' $(B)/rc_s.log && tail -n 1 $(B)/rc_s/log.csv | awk -F, '{ exit !($$1 >= 3 && $$3 < 1e-5) }'
	@echo "resume-check: a run stops where its schedule ends, and a time budget's schedule ends with it"

# A run whose outputs cannot be written fails: exit status 1 and
# status=error on its summary line (toy2d's picture; the image trainer's
# last checkpoint, where ckpt.bin is a directory). Both had warned and
# reported status=ok.
output-check: $(B)/toy2d $(B)/train_images
	OMP_NUM_THREADS=2 ./$(B)/toy2d --iters 2 --samples 16 --out $(B)/no_such_dir/toy2d.png > $(B)/output_check.log 2>&1; test $$? -eq 1
	grep -q 'status=error$$' $(B)/output_check.log && grep -q '^error: .*no_such_dir' $(B)/output_check.log
	if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  rm -rf $(B)/oc_run && mkdir -p $(B)/oc_run/ckpt.bin && \
	  { OMP_NUM_THREADS=2 ./$(B)/train_images --nf 4 --k 2 --iters 2 --samples 4 --out $(B)/oc_run > $(B)/output_check.log 2>&1; test $$? -eq 1; } && \
	  grep -q 'status=error$$' $(B)/output_check.log && grep -q '^error: .*ckpt.bin' $(B)/output_check.log; \
	fi
	@echo "ok   output-check (an output that cannot be written fails the run)"

# generate, every task at toy sizes on resume-check's checkpoint: it must
# finish and print each task's summary line.
generate-check: $(B)/generate resume-check
	OMP_NUM_THREADS=2 ./$(B)/generate --ckpt $(B)/rc_a/ckpt.bin --out $(B)/gen_check --n-eval 16 --n-recon 8 --recon-iters 2 \
	  --chains 2 --n-zopt 8 --long-steps 100 --long-chains 2 > $(B)/gen_check.log
	for k in '^sample n=64' '^interp pairs=8' '^anomaly ood=uniform n=16 score=energy auroc=' '^inpaint mask=center n=16 mse_unknown=' \
	  '^inpaint mask=random method=zopt' '^superres n=16 mse_unknown=' '^recon ood=flipped n=8 mse=' '^longrun chain=mala start=data steps=100' \
	  'status=ok$$'; do grep -q "$$k" $(B)/gen_check.log || { echo "missing: $$k"; exit 1; }; done
	test -s $(B)/gen_check/longrun_energy.png && test -s $(B)/gen_check/inpaint_lower.png && test -s $(B)/gen_check/superres.png
	@# the same seed draws the same picture again (z and u keyed by it), on 1 thread as on 2
	OMP_NUM_THREADS=1 ./$(B)/generate --ckpt $(B)/rc_a/ckpt.bin --out $(B)/gen_check2 --task sample > /dev/null
	cmp $(B)/gen_check/sample.png $(B)/gen_check2/sample.png
	@echo "generate-check: every task ran"

# Every example's short run under ASan + UBSan (leaks included): toy2d and
# hello_energy, and with Fashion-MNIST installed train_images, generate,
# latent_ebm and evaluate (on 500 images) at toy sizes, and train_mpi on 2
# ranks when Open MPI is there (tests/asan_mpi.sh: see there for its leaks).
ASAN_FLAGS = $(CSTD) $(WARN) -O1 -g -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all $(FPFLAGS) -D_POSIX_C_SOURCE=200809L -I.
# The examples under ASan, built as files so that test-build (make -j2 in
# CI) compiles them alongside the rest. ebm.h's implementation is compiled
# once, under the same flags, into ebm_asan.o, and each example is built
# without its own copy (EBM_IMPLEMENTATION_DONE, the implementation's
# include guard, set beforehand) and linked with it: compiling the library
# into each of seven programs took ~25 s of a core each, most of test-build's
# ASan share. (The examples that `make examples` builds stay single files.)
ASAN_EXAMPLES = $(B)/hello_energy_asan $(B)/toy2d_asan $(B)/train_images_asan $(B)/generate_asan $(B)/latent_ebm_asan $(B)/evaluate_asan
$(B)/ebm_asan.o: ebm.h | $(B)
	printf '#define EBM_IMPLEMENTATION\n#include "ebm.h"\n' > $(B)/ebm_asan.c
	$(CC) $(ASAN_FLAGS) -c $(B)/ebm_asan.c -o $@
$(B)/%_asan: examples/%.c examples/flags.h examples/images.h ebm.h $(B)/ebm_asan.o | $(B)
	$(CC) $(ASAN_FLAGS) -DEBM_IMPLEMENTATION_DONE $< $(B)/ebm_asan.o -o $@ -lm
$(B)/train_mpi_asan: examples/train_mpi.c examples/flags.h examples/images.h ebm.h $(B)/ebm_asan.o | $(B)
	$(MPICC) $(ASAN_FLAGS) -DEBM_IMPLEMENTATION_DONE $< $(B)/ebm_asan.o -o $@ -lm
test-build: $(ASAN_EXAMPLES)
asan-examples: $(ASAN_EXAMPLES) $(filter %_asan,$(MPI_BINS)) | $(B)
	./$(B)/hello_energy_asan > /dev/null
	./$(B)/toy2d_asan --iters 30 --samples 64 --out $(B)/toy2d_asan.png | grep -q "^toy2d data="
	if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  rm -rf $(B)/asan_run && \
	  ./$(B)/train_images_asan --nf 4 --k 3 --iters 3 --samples 4 --start persistent --buffer 100 --out $(B)/asan_run | grep -q 'status=ok' && \
	  ./$(B)/generate_asan --ckpt $(B)/asan_run/ckpt.bin --out $(B)/asan_gen --n-eval 8 --n-recon 8 --recon-iters 1 --chains 1 --n-zopt 8 \
	    --long-steps 20 --long-chains 1 --k 3 | grep -q 'status=ok' && \
	  rm -rf $(B)/asan_latent && \
	  ./$(B)/latent_ebm_asan --nz 8 --hidden 16 --ngf 4 --batch 8 --prior-k 3 --post-k 3 --iters 2 --samples 4 --test-images 40 --holdout 3 \
	    --out $(B)/asan_latent | grep -q 'status=ok' && \
	  ./$(B)/latent_ebm_asan --resume --iters 3 --samples 4 --test-images 0 --out $(B)/asan_latent | grep -q 'iters=3 .*status=ok' && \
	  ./$(B)/evaluate_asan --train --steps 3 --subset 500 --classifier $(B)/asan_clf.ckpt $(B)/asan_run/samples.npy > $(B)/asan_eval.out && \
	  grep -q '^classifier path=' $(B)/asan_eval.out && grep -q '^samples=.* n=4 fid=' $(B)/asan_eval.out && \
	  ./$(B)/evaluate_asan --self-test --n 20 --subset 500 --classifier $(B)/asan_clf.ckpt | grep -q '^ref=uniform_noise n=20 fid=' && \
	  if command -v $(MPICC) > /dev/null && command -v mpirun > /dev/null; then \
	    B=$(B) sh tests/asan_mpi.sh; \
	  fi; \
	fi
	@echo "asan-examples: clean"

# valgrind memcheck on hello_energy (AVX2 build: valgrind has no AVX-512;
# no OpenMP, whose thread pool valgrind reports as possibly lost).
$(B)/hello_vg: examples/hello_energy.c examples/flags.h ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) -O1 -g -mavx2 -mfma $(FPFLAGS) -I. $< -o $@ -lm
valgrind-check: $(B)/hello_vg
	valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible ./$(B)/hello_vg --nf 8 --batch 2 > /dev/null
	@echo "valgrind-check: no errors, no leaks"

# A long run (not in CI): SOAK_MINUTES of training in segments of
# SOAK_SEGMENT minutes, resumed each time (every other one killed half-way),
# reporting memory and speed per segment and whether either grew.
SOAK_MINUTES ?= 60
SOAK_SEGMENT ?= 10
soak: $(B)/train_images
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} tests/soak.sh $(B) $(SOAK_MINUTES) $(SOAK_SEGMENT)

test-quick: $(B)/test_c99
	cd $(B) && ./test_c99

# --- the NEON kernels, cross-compiled for aarch64 and run under qemu-user
# (Debian: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user). The
# tests that exercise the kernels and the ops built on them; the statistical
# ones are too slow under emulation and test nothing ISA-specific.
ARM_CC    ?= aarch64-linux-gnu-gcc
ARM_TESTS  = rng_philox rng_lanes fast_math conv_kernels activation_derivatives op_ network_ fused_matches threads_bit step_bytes
$(B)/test_arm: $(TEST_SRC) | $(B)
	$(ARM_CC) $(CSTD) $(WARN) -O2 -march=armv8-a $(FPFLAGS) -static -I. tests/test_main.c -o $@ -lm
test-arm: $(B)/test_arm
	cd $(B) && qemu-aarch64 ./test_arm $(ARM_TESTS) | tee test_arm.log | grep -v '^ok '; \
	  grep -q '^# kernels: isa=neon' test_arm.log && grep -q ' 0 failed$$' test_arm.log && \
	  grep -q '^ok   conv_kernels_match_reference' test_arm.log

# --- fuzzing every reader (clang-14 and Debian's libclang-rt-14-dev; not part
# of `make test`; CI runs it briefly). Each target runs FUZZ_SECONDS from the
# seed corpus in tests/fuzz_corpus/ with ASan + UBSan; a crash, a leak or an
# allocation above 1 GB stops it and fails the target.
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = idx cifar ckpt npy
FUZZ_BINS = $(foreach t,$(FUZZ_TARGETS),$(B)/fuzz_$(t))
$(B)/fuzz_idx: FUZZ_ID = 1
$(B)/fuzz_cifar: FUZZ_ID = 2
$(B)/fuzz_ckpt: FUZZ_ID = 3
$(B)/fuzz_npy: FUZZ_ID = 4
$(FUZZ_BINS): fuzz/fuzz_readers.c ebm.h | $(B)
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -DFUZZ_TARGET=$(FUZZ_ID) -I. $< -o $@ -lm
fuzz-build: $(FUZZ_BINS)
fuzz: $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(B)/fuzz_work/$$t; \
	  if ./$(B)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -malloc_limit_mb=1024 $(B)/fuzz_work/$$t tests/fuzz_corpus/$$t \
	       > $(B)/fuzz_$$t.log 2>&1; then st=ok; else st=failed; fi; \
	  runs=$$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' $(B)/fuzz_$$t.log); \
	  echo "fuzz $$t runs=$${runs:-0} seconds=$(FUZZ_SECONDS) corpus=$$(ls $(B)/fuzz_work/$$t | wc -l) status=$$st"; \
	  if [ $$st != ok ]; then grep -E 'ERROR|SUMMARY|Test unit written' $(B)/fuzz_$$t.log; exit 1; fi; \
	done

# --- a cross-check against PyTorch (needs Debian's python3-torch; not part of `make test`)
crosscheck: $(B)/crosscheck | $(B)
	cd $(B) && ./crosscheck crosscheck_data && /usr/bin/python3 ../tests/crosscheck.py crosscheck_data
$(B)/crosscheck: tests/crosscheck.c ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -I. $< -o $@ -lm

clean:
	rm -rf $(B)

# --- speed, as ratios against PyTorch within one run (not part of `make test`)
bench: $(B)/bench
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(B)/bench
$(B)/bench: bench/bench.c bench/layer_geom.h ebm.h | $(B)
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -D_POSIX_C_SOURCE=200809L -I. $< -o $@ -lm

# ebm.h against ebm.h at BASE (a git revision), alternately in one process:
# per-case medians of the ratios new/base (bench/ab.c). BASE must share the
# internal kernel names bench/ab_side.c calls (v0.6 on); headers before
# v0.6.2 warn of unused functions under EBM_STATIC, hence -Wno-unused-function.
# BASE_OPT builds the base side with other flags (BASE_OPT="-O2 -march=native":
# what the same header costs at -O2).
BASE ?= HEAD
BASE_OPT ?= $(OPT)
bench-ab: | $(B)
	mkdir -p $(B)/ab_base
	git show $(BASE):ebm.h > $(B)/ab_base/ebm.h
	$(CC) $(CSTD) $(WARN) -Wno-unused-function $(BASE_OPT) $(FPFLAGS) $(OMP) -D_POSIX_C_SOURCE=200809L -DAB_SIDE=base -I$(B)/ab_base -c bench/ab_side.c -o $(B)/ab_base.o
	$(CC) $(CSTD) $(WARN) $(OPT) $(FPFLAGS) $(OMP) -D_POSIX_C_SOURCE=200809L -DAB_SIDE=new -I. -c bench/ab_side.c -o $(B)/ab_new.o
	$(CC) $(CSTD) $(WARN) $(OPT) $(OMP) bench/ab.c $(B)/ab_base.o $(B)/ab_new.o -o $(B)/ab -lm
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} ./$(B)/ab $(AB_ARGS)
