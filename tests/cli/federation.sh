#!/usr/bin/env bash
# A short version of the main job: shoal-server over TLS on loopback with a
# self-signed certificate made on first run, shoal-fleet's devices training
# on dirichlet shards of Fashion-MNIST through it, then a restart that
# continues from the committed checkpoint. Also the command lines' errors.
# Usage: federation.sh SHOAL_SERVER SHOAL_FLEET
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
server_bin=$1
fleet_bin=$2
pass=0
fail=0
tmp=$(mktemp -d)
server=""
cleanup() {
  [[ -n "$server" ]] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

printf 'federation-test-secret-0123456789\n' > "$tmp/secret"
chmod 600 "$tmp/secret"
cat > "$tmp/shoal.json" <<'JSON'
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "state": {"path": "state.db"},
  "limits": {"max_connections": 256},
  "populations": [{
    "name": "fashion-mnist",
    "auth": {"mode": "shared", "secret_file": "secret"},
    "model": {"architecture": "mlp", "input_shape": [1, 28, 28], "classes": 10},
    "plan": {"optimizer": "sgd", "learning_rate": 0.05, "epochs": 1, "batch_size": 32},
    "round": {"goal_count": 5, "over_selection": 1.2, "selection_window_ms": 10000,
              "reporting_deadline_ms": 60000, "retry_min_ms": 100, "retry_max_ms": 1000}
  }]
}
JSON

start_server() {
  : > "$tmp/server.log"
  "$server_bin" --config "$tmp/${1:-shoal.json}" 2>> "$tmp/server.log" &
  server=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(grep -o 'wss://127.0.0.1:[0-9]*' "$tmp/server.log" | head -1 | cut -d: -f3)
    [[ -n "$port" ]] && return 0
    sleep 0.1
  done
  bad "shoal-server did not start:"; cat "$tmp/server.log"
  return 1
}

# The fleet's errors.
out=$("$fleet_bin" --port 1 2>&1); rc=$?
[[ $rc -eq 2 && "$out" == *"--ca, --population and --token are required"* ]] && ok || bad "fleet missing args: $rc $out"
out=$("$fleet_bin" --port 70000 2>&1); rc=$?
[[ $rc -eq 2 && "$out" == *"--port: '70000' is not an integer from 0 to 65535"* ]] && ok || bad "fleet bad port: $rc $out"

# --check-config describes the population; a broken config names file:line:col.
out=$("$server_bin" --check-config --config "$tmp/shoal.json" 2>&1); rc=$?
[[ $rc -eq 0 && "$out" == *"population fashion-mnist: mlp, sync, fedavg, goal 5"* ]] && ok || bad "check-config: $rc $out"
printf '{"populations": [}\n' > "$tmp/broken.json"
out=$("$server_bin" --config "$tmp/broken.json" 2>&1); rc=$?
[[ $rc -eq 1 && "$out" == *"broken.json:1:"* ]] && ok || bad "broken config: $rc $out"

# First run: the certificate is made, three rounds commit.
start_server || exit 1
[[ -f "$tmp/shoal-cert.pem" && -f "$tmp/shoal-key.pem" ]] && ok || bad "no self-signed certificate"
[[ $(stat -c %a "$tmp/shoal-key.pem") == 600 ]] && ok || bad "key file mode $(stat -c %a "$tmp/shoal-key.pem")"
out=$("$fleet_bin" --port "$port" --ca "$tmp/shoal-cert.pem" --population fashion-mnist \
  --token-file "$tmp/secret" --devices 8 --rounds 3 --threads 2 2>&1); rc=$?
acc=$(printf '%s\n' "$out" | sed -n 's/^final_test_accuracy=//p')
if [[ $rc -eq 0 && -n "$acc" ]] && awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }'; then ok; else
  bad "fleet run: exit $rc, accuracy '$acc'"; printf '%s\n' "$out" | tail -n 5; fi
[[ "$out" == *"round   3  test_accuracy"* ]] && ok || bad "no progress line for round 3"
kill -TERM "$server"; wait "$server"; rc=$?; server=""
[[ $rc -eq 0 ]] && ok || bad "shoal-server exit $rc after SIGTERM"
grep -q "round 3 committed as version 3" "$tmp/server.log" && ok || bad "no commit of round 3 in the log"
if grep -qi "secret\|federation-test-secret" "$tmp/server.log"; then bad "the log mentions the secret"; else ok; fi

# Restart: the checkpoint is loaded and training continues to version 5.
start_server || exit 1
grep -q "loaded checkpoint version [3-9]" "$tmp/server.log" && ok || { bad "restart did not load version 3:"; grep checkpoint "$tmp/server.log"; }
out=$("$fleet_bin" --port "$port" --ca "$tmp/shoal-cert.pem" --population fashion-mnist \
  --token-file "$tmp/secret" --devices 8 --rounds 5 --threads 2 2>&1); rc=$?
[[ $rc -eq 0 && "$out" == *"round   5  test_accuracy"* ]] && ok || bad "continued run: exit $rc"
# A wrong token is refused, and the fleet says why.
printf 'not-the-right-secret-000000\n' > "$tmp/wrong"
out=$(timeout 20 "$fleet_bin" --port "$port" --ca "$tmp/shoal-cert.pem" --population fashion-mnist \
  --token-file "$tmp/wrong" --devices 1 --rounds 6 --max-wait-ms 100 2>&1)
[[ "$out" == *"AUTH_FAILED"* ]] && ok || bad "wrong token not refused: $(printf '%s' "$out" | tail -n 2)"

kill -TERM "$server"; wait "$server"; server=""

# Secure aggregation: the fleet's devices offer it and, when their plan asks
# for it, mask their updates in their group (SecAgg+ over 6 devices)
# instead of uploading them.
cat > "$tmp/secagg.json" <<'JSON'
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "state": {"path": "secagg.db"},
  "populations": [{
    "name": "secure",
    "auth": {"mode": "shared", "secret_file": "secret"},
    "model": {"architecture": "logreg", "input_shape": [1, 10, 10], "classes": 10},
    "plan": {"learning_rate": 0.05},
    "round": {"goal_count": 6, "over_selection": 1.0, "min_report_fraction": 1.0,
              "selection_window_ms": 60000, "reporting_deadline_ms": 60000,
              "retry_min_ms": 1, "retry_max_ms": 100},
    "secure_aggregation": {"mode": "secagg_plus", "clip": 1.0, "max_weight": 10,
                           "dropout_rate": 0.1, "phase_timeout_ms": 10000}
  }]
}
JSON
out=$("$server_bin" --check-config --config "$tmp/secagg.json" 2>&1); rc=$?
[[ $rc -eq 0 && "$out" == *"secure_aggregation secagg_plus: groups of up to 100, degree "*" and threshold "*" for a full group, 32-bit ring"* ]] && ok || bad "check-config secagg: $rc $out"
start_server secagg.json || exit 1
out=$(timeout 120 "$fleet_bin" --synthetic --port "$port" --ca "$tmp/shoal-cert.pem" --population secure \
  --token-file "$tmp/secret" --devices 6 --rounds 2 2>&1); rc=$?
[[ $rc -eq 0 && "$out" == *", 0 failed sessions"* ]] && ok || { bad "secure fleet run: exit $rc"; printf '%s\n' "$out" | tail -n 5; }
kill -TERM "$server"; wait "$server"; server=""
[[ $(grep -c "group [0-9]* of round [12] unmasked: 6 of 6 devices" "$tmp/server.log") -eq 2 ]] && ok || { bad "rounds 1 and 2 not unmasked:"; grep secagg "$tmp/server.log"; }
grep -q "round 2 committed as version 2: 6 reports" "$tmp/server.log" && ok || bad "no commit of round 2 with 6 reports"
grep -Eq "unmasked: .*; masked inputs [0-9.]+ ms \(CPU [0-9.]+ ms\), unmasking [0-9.]+ ms \(CPU [0-9.]+ ms\)" "$tmp/server.log" && ok || bad "no secure-aggregation timings in the log"

echo "federation: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
