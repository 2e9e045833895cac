#!/bin/sh
# The 2-D comparison of issue 7: every method on every data set with the same
# wall-clock budget (SECONDS_EACH, default 60), 2 threads, then one table of
# exact test NLLs (summary.txt) and one picture (panel.png). Run by
# `make compare2d` (~45 minutes): nothing else should run meanwhile, as the
# budget is wall-clock time. METHODS and DATA choose a subset.
set -e
B=${B:-build}
OUT=$B/compare2d
S=${SECONDS_EACH:-60}
METHODS=${METHODS:-"shortrun convergent-iso stanley convergent dsm ssm ssm-vr fd-ssm nce"}
DATA=${DATA:-"8gaussians rings checkerboard moons"}
mkdir -p $OUT
for data in $DATA; do
  for method in $METHODS; do
    recipe=$method
    case $method in
      shortrun) extra="" ;;                                   # its own defaults: lr 1e-3, K 40, eps 0.3
      convergent-iso) recipe=convergent; extra="--lr 3e-3 --th 0 --eps 0.5 --reinit 0.05" ;; # isotropic MALA (the default before v0.5.1)
      stanley) extra="--lr 3e-3 --eps 0.3 --th 1 --reinit 0.05" ;; # unadjusted STANLEY steps in the persistent chains
      convergent) extra="" ;;                                 # its defaults: MH-corrected STANLEY, eps 0.7, 15 % restarts, lr 1e-2
      *) extra="--lr 3e-3" ;;                                 # the MCMC-free objectives (SSM's: Rademacher projections)
    esac
    echo "== $data $method ($recipe $extra)"
    rm -f $OUT/${data}_$method.png $OUT/${data}_$method.npy   # a run that diverges writes none: no stale picture
    OMP_NUM_THREADS=2 ./$B/toy2d --data $data --recipe $recipe --seconds $S --samples 2048 $extra \
      --out $OUT/${data}_$method.png --density-npy $OUT/${data}_$method.npy > $OUT/${data}_$method.log 2>&1 || true
    echo "method=$method $(tail -n 1 $OUT/${data}_$method.log)" | tee $OUT/${data}_$method.summary
  done
done
cat $OUT/*.summary > $OUT/summary.txt
./$B/panel2d $OUT $OUT/panel.png $METHODS
