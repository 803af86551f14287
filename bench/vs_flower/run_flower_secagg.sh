#!/bin/bash
# One Flower 1.6.0 SecAgg+ run: flower-server (Driver API + gRPC-rere Fleet
# API, insecure, in memory, as examples/secaggplus-mt runs it), PROCS client
# processes of N/PROCS client threads each, and flower_secagg_driver.py
# running the example's workflow for ROUNDS rounds, all on 127.0.0.1.
#
#   run_flower_secagg.sh N D ROUNDS OUTDIR [PROCS=10] [LIMIT_S=900]
#
# OUTDIR gets rounds.jsonl (the driver's per-round figures), server.time and
# driver.time (/usr/bin/time -v), server.log, driver.log, client-*.log,
# meta.txt (uptime before and after, ports, PIDs, exit codes). Bounded: the
# run is killed after LIMIT_S s, or when MemAvailable drops below
# MIN_AVAIL_MIB (default 3072). Only PIDs started here are signalled.
# FLOWER_HOME (default ~/flower-1.6) is where setup_flower.sh put Flower.
set -u
N=$1 D=$2 ROUNDS=$3 OUT=$4 PROCS=${5:-10} LIMIT_S=${6:-900}
MIN_AVAIL_MIB=${MIN_AVAIL_MIB:-3072}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FLOWER_HOME=${FLOWER_HOME:-$HOME/flower-1.6}
PY=/usr/bin/python3
export FLWR_TELEMETRY_ENABLED=0
export PYTHONPATH=$FLOWER_HOME/v160:$FLOWER_HOME/stubs
[[ -f $FLOWER_HOME/examples/secaggplus-mt/workflows.py ]] ||
    { echo "run_flower_secagg.sh: no Flower in $FLOWER_HOME; run setup_flower.sh" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT"
export CLIENT_PIDS_FILE=$OUT/client.pids
meta=$OUT/meta.txt
echo "system flower-secagg n $N d $D rounds $ROUNDS procs $PROCS flower $(cat "$FLOWER_HOME/VERSION" 2>/dev/null)" >"$meta"
echo "uptime_start $(uptime)" >>"$meta"

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
DPORT=$(free_port) FPORT=$(free_port)
while [[ $FPORT == "$DPORT" ]]; do FPORT=$(free_port); done
echo "ports driver_api $DPORT fleet_api $FPORT" >>"$meta"

server_pid= driver_pid= stime_pid= dtime_pid=
cpids=()
kids() { for p in "${cpids[@]}"; do pgrep -P "$p"; done; }
kill_all() {
    local k; k=$(kids)
    for p in $k $driver_pid $server_pid; do kill -TERM "$p" 2>/dev/null; done
    sleep 2
    for p in $k "${cpids[@]}" $driver_pid $server_pid; do kill -KILL "$p" 2>/dev/null; done
}

# flower-server, as the console script would start it (flwr.server:run_server)
/usr/bin/time -v -o "$OUT/server.time" $PY -c \
    'import sys; sys.argv[0] = "flower-server"; from flwr.server.app import run_server; run_server()' \
    --insecure --grpc-rere --driver-api-address "127.0.0.1:$DPORT" \
    --grpc-rere-fleet-api-address "127.0.0.1:$FPORT" >"$OUT/server.log" 2>&1 &
stime_pid=$!
for _ in $(seq 50); do server_pid=$(pgrep -P "$stime_pid" | head -1); [[ -n $server_pid ]] && break; sleep 0.1; done
echo "server_pid $server_pid" >>"$meta"
ok=0
for _ in $(seq 300); do
    if ss -ltn "( sport = :$DPORT )" | grep -q LISTEN && ss -ltn "( sport = :$FPORT )" | grep -q LISTEN; then ok=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if ((ok == 0)); then echo "flower-server did not listen" | tee -a "$meta" >&2; cat "$OUT/server.log" >&2; kill_all; exit 1; fi

per=$((N / PROCS)) extra=$((N % PROCS))
for ((i = 0; i < PROCS; i++)); do
    k=$per; ((i < extra)) && k=$((k + 1))
    ((k == 0)) && continue
    /usr/bin/time -f "client_time %e %U %S %M" -o "$OUT/client-$i.time" \
        $PY "$HERE/flower_secagg_client.py" --server "127.0.0.1:$FPORT" --threads "$k" \
        >"$OUT/client-$i.log" 2>&1 &
    cpids+=($!)
done
sleep 0.5
kids >"$CLIENT_PIDS_FILE.tmp"; mv "$CLIENT_PIDS_FILE.tmp" "$CLIENT_PIDS_FILE"

/usr/bin/time -v -o "$OUT/driver.time" $PY "$HERE/flower_secagg_driver.py" \
    --driver "127.0.0.1:$DPORT" --clients "$N" --dim "$D" --rounds "$ROUNDS" \
    --example-dir "$FLOWER_HOME/examples/secaggplus-mt" --server-pid "$server_pid" \
    --out "$OUT/rounds.jsonl" ${DRIVER_ARGS:-} >"$OUT/driver.log" 2>&1 &
dtime_pid=$!
for _ in $(seq 50); do driver_pid=$(pgrep -P "$dtime_pid" | head -1); [[ -n $driver_pid ]] && break; sleep 0.1; done
echo "driver_pid $driver_pid" >>"$meta"

t0=$SECONDS
status=ok
while kill -0 "$dtime_pid" 2>/dev/null; do
    avail=$(awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo)
    if ((avail < MIN_AVAIL_MIB)); then status="watchdog MemAvailable ${avail} MiB"; kill_all; break; fi
    if ((SECONDS - t0 > LIMIT_S)); then status="timeout ${LIMIT_S}s"; kill_all; break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then status="server died"; kill_all; break; fi
    sleep 0.5
done
wait "$dtime_pid"; echo "driver_exit $?" >>"$meta"
# The clients poll for work forever, and the server serves until signalled.
for p in $(kids); do kill -TERM "$p" 2>/dev/null; done
kill -TERM "$server_pid" 2>/dev/null
for _ in $(seq 100); do
    alive=0; for p in "${cpids[@]}" "$stime_pid"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive == 0)) && break; sleep 0.1
done
for p in $(kids) $server_pid; do kill -KILL "$p" 2>/dev/null; done
for p in "${cpids[@]}"; do wait "$p" 2>/dev/null; done
wait "$stime_pid" 2>/dev/null
echo "status $status" >>"$meta"
echo "uptime_end $(uptime)" >>"$meta"
for f in server driver; do
    awk -F': ' -v w="$f" '/Maximum resident/ {printf "%s_maxrss_mib %.1f\n", w, $2/1024}
        /User time/ {u=$2} /System time/ {s=$2}
        END {printf "%s_cpu_total_s %.2f\n", w, u+s}' "$OUT/$f.time" >>"$meta"
done
cat "$OUT"/client-*.time 2>/dev/null | awk '/^client_time/ {c += $3 + $4; r += $5}
    END {printf "clients_cpu_total_s %.2f\nclients_maxrss_sum_mib %.0f\n", c, r/1024}' >>"$meta"
cat "$meta"
