#!/bin/sh
# The 2-D comparison of issue 7: every recipe on every data set with the same
# wall-clock budget (SECONDS_EACH, default 60), 2 threads, then one table of
# exact test NLLs and one picture. Run by `make compare2d` (~40 minutes):
# nothing else should run meanwhile, as the budget is wall-clock time.
set -e
B=${B:-build}
OUT=$B/compare2d
S=${SECONDS_EACH:-60}
RECIPES=${RECIPES:-"shortrun convergent stanley dsm ssm ssm-vr fd-ssm nce"}
mkdir -p $OUT
: > $OUT/summary.txt
for data in 8gaussians rings checkerboard moons; do
  for r in $RECIPES; do
    case $r in
      shortrun) extra="" ;;                               # its own defaults: lr 1e-3, K 40, eps 0.3
      convergent) extra="--lr 3e-3" ;;                    # 1e-2 runs away on rings
      stanley) extra="--lr 3e-3 --eps 0.5 --th 2" ;;
      *) extra="--lr 3e-3" ;;
    esac
    echo "== $data $r ($extra)"
    OMP_NUM_THREADS=2 ./$B/toy2d --data $data --recipe $r --seconds $S --samples 2048 $extra \
      --out $OUT/${data}_$r.png --density-npy $OUT/${data}_$r.npy > $OUT/${data}_$r.log 2>&1 || true
    tail -n 1 $OUT/${data}_$r.log | tee -a $OUT/summary.txt
  done
done
./$B/panel2d $OUT $OUT/panel.png $RECIPES
