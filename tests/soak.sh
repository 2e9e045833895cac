#!/bin/sh
# make soak: a long training run in segments, each resumed from the last
# one's checkpoint (and killed with SIGKILL half-way through every other
# segment, to exercise crash recovery over hours), reporting per segment the
# process's peak memory and iterations per second. Anything that grows from
# the first segment to the last (memory by more than 10 %, time per
# iteration by more than 20 %) is reported as status=grew.
# Usage: tests/soak.sh BUILD_DIR TOTAL_MINUTES SEGMENT_MINUTES
set -eu
B=${1:-build}; TOTAL=${2:-60}; SEG=${3:-10}
OUT=$B/soak; rm -rf "$OUT"; mkdir -p "$OUT"
n=$(( TOTAL / SEG )); [ "$n" -ge 2 ] || n=2
i=1; first_rss=; first_ips=; resume=
while [ "$i" -le "$n" ]; do
  if [ $(( i % 2 )) -eq 0 ] && [ "$i" -lt "$n" ]; then
    # killed with SIGKILL half-way through; the next segment resumes from the last checkpoint
    ./$B/train_images $resume --minutes "$SEG" --save-minutes 1 --total-iters 1000000 --samples 0 --out "$OUT" > "$OUT/seg$i.log" 2>&1 &
    pid=$!; sleep $(( SEG * 30 )); kill -9 $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
    echo "soak segment=$i killed=1"
  else
    /usr/bin/time -f "%M" -o "$OUT/rss$i" ./$B/train_images $resume --minutes "$SEG" --save-minutes 1 --total-iters 1000000 --samples 0 \
      --out "$OUT" > "$OUT/seg$i.log" 2>&1
    rss=$(tail -1 "$OUT/rss$i"); line=$(grep '^train_images ' "$OUT/seg$i.log" | tail -1)
    it=$(echo "$line" | sed -n 's/.* iters=\([0-9]*\) seconds=\([0-9.]*\).*/\1 \2/p')
    start=$(sed -n 's/^resumed .* at iteration \([0-9]*\).*/\1/p' "$OUT/seg$i.log"); start=${start:-0}
    echo "soak segment=$i peak_rss_mb=$(( rss / 1024 )) from_iter=$start $line"
    echo "$start $it $rss" >> "$OUT/points"
  fi
  resume=--resume; i=$(( i + 1 ))
done
# iterations per second of a segment: (its last iteration - its first) / its seconds
awk 'NR == 1 { ips1 = ($2 - $1) / $3; r1 = $4; next } { ips = ($2 - $1) / $3; r = $4 }
     END { grew = (r > 1.1 * r1 || ips < 0.8 * ips1) ? "grew" : "ok";
           printf "soak segments=%d rss_first_mb=%.1f rss_last_mb=%.1f its_first=%.2f its_last=%.2f status=%s\n", NR, r1 / 1024, r / 1024, ips1, ips, grew }' "$OUT/points"
