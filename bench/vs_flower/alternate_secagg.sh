#!/bin/bash
# Alternates Flower SecAgg+ and Shoal secure-aggregation runs: REPS x
# (Flower, Shoal), so both see the same machine load.
#
#   alternate_secagg.sh RUNS_DIR REPS ROUNDS N D
#
# Run k goes to RUNS_DIR/F<k> and RUNS_DIR/S<k>; the order, the load
# average and MemAvailable at each start, and each end's status go to
# RUNS_DIR/order.log. Stops (and says so there) if MemAvailable is under
# 3 GiB before a run. PAUSE_S (default 45) is the pause before each run:
# both sides run 100 busy threads, which the load average counts for a
# minute after; the pause lets the load at a run's start show the machine's
# other work. SHOAL_BUILD, FLOWER_HOME, MODE, LIMIT_S (default 900) pass
# through to the run scripts.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$1 REPS=$2 ROUNDS=$3 N=$4 D=$5
LIMIT_S=${LIMIT_S:-900}
PAUSE_S=${PAUSE_S:-45}
mkdir -p "$ROOT"
echo "$(date -u +%FT%TZ) start: $REPS x (Flower, Shoal), $N x $D, $ROUNDS rounds, $(nproc) CPUs" >>"$ROOT/order.log"
for ((rep = 1; rep <= REPS; rep++)); do
    for sys in F S; do
        sleep "$PAUSE_S"
        avail=$(awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo)
        if ((avail < 3072)); then
            echo "$(date -u +%FT%TZ) STOP: MemAvailable $avail MiB before $sys$rep" >>"$ROOT/order.log"
            exit 1
        fi
        out=$ROOT/$sys$rep
        echo "$(date -u +%FT%TZ) $sys$rep start load $(cut -d' ' -f1-3 /proc/loadavg) avail ${avail}MiB" >>"$ROOT/order.log"
        if [[ $sys == F ]]; then
            "$HERE/run_flower_secagg.sh" "$N" "$D" "$ROUNDS" "$out" 10 "$LIMIT_S" >/dev/null 2>"$ROOT/$sys$rep.err"
        else
            "$HERE/run_shoal_secagg.sh" "$N" "$D" "$ROUNDS" "$out" "$LIMIT_S" >/dev/null 2>"$ROOT/$sys$rep.err"
        fi
        rc=$?
        echo "$(date -u +%FT%TZ) $sys$rep end rc $rc status $(grep '^status' "$out/meta.txt" | cut -d' ' -f2-) load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$ROOT/order.log"
    done
done
