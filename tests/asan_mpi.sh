#!/bin/sh
# train_mpi under ASan + UBSan on 2 ranks (make asan-examples, when mpicc is
# there). Open MPI itself leaks at exit - small blocks of its plug-ins, whose
# stacks no suppression file can name once they are unloaded - so LSan's
# report does not decide the exit status; instead any leak whose stack runs
# through ebm.h or the example fails the run, as does every ASan or UBSan
# error (those still abort the rank).
set -u
B=${B:-build}; EXE=${EXE:-$B/train_mpi_asan}; T=$B/asan_mpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export LSAN_OPTIONS=exitcode=0 OMPI_MCA_mca_base_component_disable_dlclose=1
rm -rf "$T" "$T.log"
mpirun --oversubscribe -np 2 "$EXE" --nf 4 --k 3 --shards 2 --batch 4 --iters 2 --samples 4 --start persistent --buffer 16 \
    --out "$T" > "$T.log" 2>&1 || { echo "train_mpi under ASan failed:"; tail -40 "$T.log"; exit 1; }
grep -q '^train_mpi .*status=ok' "$T.log" || { echo "train_mpi under ASan: no status=ok"; tail -20 "$T.log"; exit 1; }
if grep -q 'runtime error\|ERROR: AddressSanitizer' "$T.log"; then echo "train_mpi under ASan: an error"; grep -A20 'runtime error\|ERROR: AddressSanitizer' "$T.log" | head -40; exit 1; fi
# a leak report's blocks, one per paragraph: ours name ebm.h or the example
if awk 'BEGIN { RS = "" } /leak of/ && /ebm\.h|examples\// { print; bad = 1 } END { exit !bad }' "$T.log"; then
    echo "train_mpi under ASan: ebm.h or the example leaked"; exit 1
fi
echo "train_mpi under ASan: clean"
