#!/bin/sh
# Time per iteration of examples/train_mpi on this machine (make mpi-time):
# the reference ConvNet (n_f 16, K 40) on Fashion-MNIST, global batch 64:
# 1 rank with 1 shard (the plain trainer, 2 OpenMP threads), and in 4
# shards on 1 rank (2 threads), 2 ranks (1 thread each) and 4 ranks (1
# thread each, 2 per core). Five rounds, each running every case once for
# 31 iterations (interleaved, so that a slow spell of the machine touches
# all cases alike); the median per case. Ranks are not bound to cores
# (Open MPI binds each rank to one core by default, which would put a
# rank's 2 threads on one core). Nothing else should run meanwhile.
set -u
B=${B:-build}
T=$B/mpi_time
mkdir -p "$T"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
CASES="plain_1rank:1:2:1 shards4_1rank:1:2:4 shards4_2ranks:2:1:4 shards4_4ranks:4:1:4"
for round in 1 2 3 4 5; do
    for c in $CASES; do
        IFS=: read name ranks threads shards <<E
$c
E
        OMP_NUM_THREADS=$threads mpirun --bind-to none --oversubscribe -np "$ranks" "$B/train_mpi" --nf 16 --k 40 \
            --batch $((64 / ranks)) --shards "$shards" --iters 31 --samples 0 --out "$T/$name" 2>/dev/null |
            sed -n "s/.*ms_per_iter=\([0-9.]*\).*/$name \1/p"
    done
done > "$T/runs.txt"
for c in $CASES; do
    IFS=: read name ranks threads shards <<E
$c
E
    ms=$(grep "^$name " "$T/runs.txt" | cut -d' ' -f2 | sort -n | sed -n 3p)
    all=$(grep "^$name " "$T/runs.txt" | cut -d' ' -f2 | tr '\n' ' ')
    echo "mpi_time case=$name ranks=$ranks threads_per_rank=$threads shards=$shards ms_per_iter=$ms runs=\"$all\""
done
