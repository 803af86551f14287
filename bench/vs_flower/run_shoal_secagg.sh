#!/bin/bash
# One Shoal secure-aggregation run: shoal-server (TLS with its self-signed
# certificate, shared token, 127.0.0.1, port 0) and shoal-fleet --synthetic
# with N devices, a logreg model of D+10 parameters (D = 1000000: input
# [1,250,400]; D = 100000: input [1,100,100]; D = 100: input [1,10,10];
# 10 classes), goal_count N, over_selection 1, min_report_fraction 1,
# FedAvg, pipelining on (default), and secure_aggregation on: one group of
# N devices a round, mode MODE (default secagg_plus, the default rates:
# dropout 0.3, corrupt 0.05), clip 1, 32-bit ring, max_weight 10 (the
# fleet's synthetic example count).
#
#   run_shoal_secagg.sh N D ROUNDS OUTDIR [LIMIT_S]
#
# shoal-fleet --rounds ROUNDS stops once a device has received version
# ROUNDS, which happens while round ROUNDS+1 runs; that round's devices
# leave their group when the fleet stops, so the log has ROUNDS commits.
# shoal_monitor.py samples the server's /proc at every commit and records
# each group's unmask line. OUTDIR gets: config.json, server.log,
# samples.jsonl, fleet.err, fleet.time, meta.txt (with --check-config's
# description: the degree and threshold). Bounded by LIMIT_S (default
# 600) and a MemAvailable watchdog (MIN_AVAIL_MIB, default 3072). Only
# PIDs started here are signalled.
#
# Environment: SHOAL_BUILD (default build), MODE, RETRY_MIN_MS /
# RETRY_MAX_MS (default 1 / 1: a device checks in again 1 ms after its
# report is acknowledged, the closest Shoal gets to Flower's persistent
# streams), FLEET_ARGS (extra shoal-fleet flags).
set -u
N=$1 D=$2 ROUNDS=$3 OUT=$4 LIMIT_S=${5:-600}
MIN_AVAIL_MIB=${MIN_AVAIL_MIB:-3072}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${SHOAL_BUILD:-build}
MODE=${MODE:-secagg_plus}
RMIN=${RETRY_MIN_MS:-1} RMAX=${RETRY_MAX_MS:-1}
SERVER=$(find "$BUILD" -type f -perm -u+x -name shoal-server | head -n1)
FLEET=$(find "$BUILD" -type f -perm -u+x -name shoal-fleet | head -n1)
case $D in
    1000000) shape="[1, 250, 400]" ;;
    100000) shape="[1, 100, 100]" ;;
    100) shape="[1, 10, 10]" ;;
    *) echo "run_shoal_secagg.sh: D must be 1000000, 100000 or 100" >&2; exit 2 ;;
esac
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
rm -rf "$OUT"; mkdir -p "$OUT"
meta=$OUT/meta.txt
echo "system shoal-secagg mode $MODE n $N d $D rounds $ROUNDS retry_ms $RMIN-$RMAX nofile $(ulimit -n) server_nice ${SERVER_NICE:-0}" >"$meta"
echo "uptime_start $(uptime)" >>"$meta"
(umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n' >"$OUT/pop.secret")
cat >"$OUT/config.json" <<EOF
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "server": {"log_level": "info"},
  "populations": [
    {"name": "bench", "auth": {"mode": "shared", "secret_file": "pop.secret"},
     "model": {"architecture": "logreg", "input_shape": $shape, "classes": 10},
     "plan": {"learning_rate": 0.05},
     "round": {"goal_count": $N, "over_selection": 1.0, "min_report_fraction": 1.0,
               "selection_window_ms": 600000, "reporting_deadline_ms": 1800000,
               "retry_min_ms": $RMIN, "retry_max_ms": $RMAX},
     "strategy": {"name": "fedavg"},
     "secure_aggregation": {"mode": "$MODE", "group_size": $N, "clip": 1.0, "bits": 32,
                            "max_weight": 10}}
  ]
}
EOF
"$SERVER" --check-config --config "$OUT/config.json" >>"$meta" 2>&1 || { cat "$meta"; exit 1; }

server_pid= fleet_pid= mon_pid=
kill_all() {
    for p in $fleet_pid $server_pid; do kill -TERM "$p" 2>/dev/null; done
    sleep 2
    for p in $fleet_pid $server_pid; do kill -KILL "$p" 2>/dev/null; done
}
${SERVER_NICE:+nice -n $SERVER_NICE} "$SERVER" --config "$OUT/config.json" 2>"$OUT/server.log" &
server_pid=$!
echo "server_pid $server_pid" >>"$meta"
PORT=
for _ in $(seq 300); do
    PORT=$(sed -n 's|^shoal-server: listening on wss://[^ ]*:\([0-9][0-9]*\)/v1/session.*|\1|p' "$OUT/server.log")
    [[ -n $PORT ]] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $PORT ]]; then echo "server did not start" | tee -a "$meta" >&2; cat "$OUT/server.log" >&2; kill_all; exit 1; fi
echo "port $PORT" >>"$meta"
count=$(curl -sk --max-time 10 -D - -o /dev/null "https://127.0.0.1:$PORT/v1/populations/bench/model" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-shoal-parameter-count" {print $2}')
echo "parameters $count" >>"$meta"

/usr/bin/python3 "$HERE/shoal_monitor.py" --pid "$server_pid" --log "$OUT/server.log" \
    --out "$OUT/samples.jsonl" --stop "$OUT/stop" --limit "$((LIMIT_S + 60))" \
    --client-pid-file "$OUT/fleet.pid" &
mon_pid=$!
for _ in $(seq 100); do [[ -s $OUT/samples.jsonl ]] && break; sleep 0.05; done

echo "fleet_t0 $(date +%s.%N)" >>"$meta"
/usr/bin/time -v -o "$OUT/fleet.time" "$FLEET" --synthetic --devices "$N" --rounds "$ROUNDS" \
    --port "$PORT" --ca "$OUT/shoal-cert.pem" --population bench --token-file "$OUT/pop.secret" \
    ${FLEET_ARGS:-} >"$OUT/fleet.out" 2>"$OUT/fleet.err" &
time_pid=$!
for _ in $(seq 50); do fleet_pid=$(pgrep -P "$time_pid" | head -1); [[ -n $fleet_pid ]] && break; sleep 0.1; done
echo "$fleet_pid" >"$OUT/fleet.pid.tmp"; mv "$OUT/fleet.pid.tmp" "$OUT/fleet.pid"

t0=$SECONDS
status=ok
while kill -0 "$time_pid" 2>/dev/null; do
    avail=$(awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo)
    if ((avail < MIN_AVAIL_MIB)); then status="watchdog MemAvailable ${avail} MiB"; kill_all; break; fi
    if ((SECONDS - t0 > LIMIT_S)); then status="timeout ${LIMIT_S}s"; kill_all; break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then status="server died"; kill_all; break; fi
    sleep 0.5
done
wait "$time_pid"; frc=$?
echo "fleet_t1 $(date +%s.%N)" >>"$meta"
echo "fleet_exit $frc" >>"$meta"
touch "$OUT/stop"
for _ in $(seq 100); do kill -0 "$mon_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$mon_pid" 2>/dev/null
# graceful stop, bounded
kill -TERM "$server_pid" 2>/dev/null
for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then echo "server_sigkill yes" >>"$meta"; kill -KILL "$server_pid"; fi
wait "$server_pid"; echo "server_exit $?" >>"$meta"
echo "status $status" >>"$meta"
echo "uptime_end $(uptime)" >>"$meta"
awk -F': ' '/Maximum resident/ {printf "fleet_maxrss_mib %.1f\n", $2/1024}
            /User time/ {u=$2} /System time/ {s=$2}
            END {printf "fleet_cpu_total_s %.2f\n", u+s}' "$OUT/fleet.time" >>"$meta"
tail -1 "$OUT/fleet.err" | sed 's/^/fleet_summary /' >>"$meta"
grep -cE ' (warn|error) ' "$OUT/server.log" | sed 's/^/server_warn_error_lines /' >>"$meta"
cat "$meta"
