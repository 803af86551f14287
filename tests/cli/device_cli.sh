#!/usr/bin/env bash
# shoal-device, the reference device program: its command-line errors, an
# import of a dirichlet shard of Fashion-MNIST into an example store, and a
# short real federation: shoal-server over TLS on loopback and four
# shoal-device processes, each with its own store, training an MLP until
# the server has committed version 3.
# Usage: device_cli.sh SHOAL_DEVICE SHOAL_SERVER PROJECT_VERSION
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
device_bin=$1
server_bin=$2
project_version=$3
data=/usr/share/datasets/fashion-mnist
pass=0
fail=0
tmp=$(mktemp -d)
server=""
devices=()
cleanup() {
  for d in "${devices[@]}"; do kill -TERM "$d" 2>/dev/null; wait "$d" 2>/dev/null; done
  [[ -n "$server" ]] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
# expect RC TEXT CMD...: the command exits RC and its output contains TEXT.
expect() {
  local want_rc=$1 want_text=$2 out rc
  shift 2
  out=$("$@" 2>&1); rc=$?
  [[ $rc -eq $want_rc && "$out" == *"$want_text"* ]] && ok || bad "$*: exit $rc: $out"
}

# Command-line errors name the flag or file and the problem.
expect 2 "a subcommand is required" "$device_bin"
expect 2 "unknown subcommand 'fly'" "$device_bin" fly
expect 0 "usage: shoal-device import" "$device_bin" --help
# --version says the project's version (meson.build), as shoal_version().
out=$("$device_bin" --version 2>&1); rc=$?
[[ $rc -eq 0 && "$out" == "shoal-device $project_version" ]] && ok ||
  bad "--version: exit $rc: '$out', want 'shoal-device $project_version'"
expect 2 "--store and --collection are required" "$device_bin" import --csv x.csv
expect 2 "give exactly one of --idx, --fashion-mnist, --csv" \
  "$device_bin" import --store "$tmp/s.db" --collection c
expect 2 "--shard: '4/4' must be I/N with 0 <= I < N" \
  "$device_bin" import --store "$tmp/s.db" --collection c --csv x.csv --shard 4/4
expect 2 "--shard: 'two' is not I/N" \
  "$device_bin" import --store "$tmp/s.db" --collection c --csv x.csv --shard two
expect 2 "--partition: unknown scheme 'zipf'" \
  "$device_bin" import --store "$tmp/s.db" --collection c --csv x.csv --partition zipf
expect 2 "--alpha: '-1' must be a positive number" \
  "$device_bin" import --store "$tmp/s.db" --collection c --csv x.csv --alpha -1
expect 1 "$tmp/missing.csv" \
  "$device_bin" import --store "$tmp/s.db" --collection c --csv "$tmp/missing.csv"
printf 'label,a,b\n1,0.5,0.25\n0,abc,1\n' > "$tmp/broken.csv"
expect 1 "broken.csv:3:" \
  "$device_bin" import --store "$tmp/s.db" --collection c --csv "$tmp/broken.csv"
expect 1 "$tmp/nope-images" \
  "$device_bin" import --store "$tmp/s.db" --collection c --idx "$tmp/nope-images" "$tmp/nope-labels"
expect 2 "run: --store, --port, --ca, --population and --token-file are required" \
  "$device_bin" run --port 1
expect 2 "--port: '70000' is not an integer from 0 to 65535" "$device_bin" run --port 70000
expect 2 "run: unknown option '--charging'" "$device_bin" run --charging yes
printf 'secret-for-the-device-test-0123\n' > "$tmp/secret"
chmod 600 "$tmp/secret"
expect 1 "--ca $tmp/no-ca.pem: No such file or directory" "$device_bin" run --store "$tmp/s.db" \
  --port 1 --ca "$tmp/no-ca.pem" --population p --token-file "$tmp/secret"
expect 1 "--ca $tmp/secret: no PEM certificate in it" "$device_bin" run --store "$tmp/s.db" \
  --port 1 --ca "$tmp/secret" --population p --token-file "$tmp/secret"
expect 2 "--arch: unknown architecture 'rnn'" "$device_bin" eval --model m.bin --arch rnn

# A small CSV import: normalised features, and info counts them.
printf 'label,a,b\n1,0.5,0.25\n0,1.5,1\n2,0,0\n' > "$tmp/small.csv"
expect 0 "imported 3 examples (2 features, 3 classes, normalised)" \
  "$device_bin" import --store "$tmp/csv.db" --collection rows --csv "$tmp/small.csv"
expect 0 "collection rows: 3 examples, 2 features" \
  "$device_bin" info --store "$tmp/csv.db" --collection rows
expect 1 "collection 'rows' already holds 3 examples: add --replace" \
  "$device_bin" import --store "$tmp/csv.db" --collection rows --csv "$tmp/small.csv"
expect 0 "imported 2 examples" "$device_bin" import --store "$tmp/csv.db" --collection rows \
  --csv "$tmp/small.csv" --shard 0/2 --partition iid --replace
expect 0 "collection rows: 2 examples" "$device_bin" info --store "$tmp/csv.db" --collection rows

if [[ ! -f "$data/train-images-idx3-ubyte.gz" ]]; then
  echo "device_cli: $data not installed: skipping the federation"
  echo "device_cli: $pass passed, $fail failed"
  [[ $fail -eq 0 ]] && exit 77
  exit 1
fi

# Shards of 4 from the IDX files: the dirichlet(0.5) shards with seed 1
# cover the training set exactly once.
total=0
for i in 0 1 2 3; do
  out=$("$device_bin" import --store "$tmp/dev$i.db" --collection fashion-mnist \
    --idx "$data/train-images-idx3-ubyte.gz" "$data/train-labels-idx1-ubyte.gz" \
    --shard "$i/4" --partition dirichlet --alpha 0.5 --seed 1 2>&1); rc=$?
  [[ $rc -eq 0 ]] && ok || bad "import shard $i: exit $rc: $out"
  n=$("$device_bin" info --store "$tmp/dev$i.db" --collection fashion-mnist |
    sed -n 's/^collection fashion-mnist: \([0-9]*\) examples, 784 features.*/\1/p')
  [[ -n "$n" && "$out" == *"imported $n examples (784 features, 10 classes"* ]] && ok ||
    bad "shard $i: info says '$n', import said: $out"
  total=$((total + ${n:-0}))
done
[[ $total -eq 60000 ]] && ok || bad "the 4 shards hold $total examples, not 60000"

# The federation: goal 3 of 4 devices, three rounds of an MLP. The server
# takes messages of at most 64 KiB, far below the SDK's 1 MiB default: the
# devices learn it from Accepted and send their 0.7 MB updates in chunks
# that fit (a larger message would close the connection with 1009).
cat > "$tmp/shoal.json" <<'JSON'
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "limits": {"max_message_bytes": 65536},
  "state": {"path": "state.db"},
  "populations": [{
    "name": "fashion-mnist",
    "auth": {"mode": "shared", "secret_file": "secret"},
    "model": {"architecture": "mlp", "input_shape": [1, 28, 28], "classes": 10},
    "plan": {"optimizer": "sgd", "learning_rate": 0.05, "epochs": 1, "batch_size": 32},
    "round": {"goal_count": 3, "over_selection": 1.0, "selection_window_ms": 10000,
              "reporting_deadline_ms": 60000, "retry_min_ms": 100, "retry_max_ms": 500}
  }, {
    "name": "budget",
    "auth": {"mode": "shared", "secret_file": "secret"},
    "model": {"architecture": "mlp", "input_shape": [1, 28, 28], "classes": 10},
    "plan": {"optimizer": "sgd", "learning_rate": 0.05, "epochs": 1, "batch_size": 32,
             "collection": "fashion-mnist"},
    "round": {"goal_count": 1, "over_selection": 1.0, "selection_window_ms": 10000,
              "reporting_deadline_ms": 60000, "retry_min_ms": 100, "retry_max_ms": 500}
  }]
}
JSON
"$server_bin" --config "$tmp/shoal.json" 2> "$tmp/server.log" &
server=$!
port=""
for _ in $(seq 1 100); do
  port=$(grep -o 'wss://127.0.0.1:[0-9]*' "$tmp/server.log" | head -1 | cut -d: -f3)
  [[ -n "$port" ]] && break
  sleep 0.1
done
if [[ -z "$port" ]]; then
  bad "shoal-server did not start:"; cat "$tmp/server.log"
  echo "device_cli: $pass passed, $fail failed"
  exit 1
fi

# A wrong token is a refusal waiting does not cure: the device gives up.
printf 'not-the-right-secret-000000\n' > "$tmp/wrong"
expect 1 "AUTH_FAILED" timeout 30 "$device_bin" run --store "$tmp/dev0.db" --port "$port" \
  --ca "$tmp/shoal-cert.pem" --population fashion-mnist --token-file "$tmp/wrong"

for i in 0 1 2 3; do
  "$device_bin" run --store "$tmp/dev$i.db" --port "$port" --ca "$tmp/shoal-cert.pem" \
    --population fashion-mnist --token-file "$tmp/secret" --until-version 3 \
    --max-wait-ms 1000 --assume-charging --assume-unmetered --assume-idle \
    --require-charging 2> "$tmp/dev$i.log" &
  devices+=($!)
done
# Wait for model version 3, whatever its round number: a selection that
# closes short of its minimum uses up a round number without a version.
for _ in $(seq 1 1200); do
  grep -q "committed as version 3:" "$tmp/server.log" && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
grep -q "committed as version 3:" "$tmp/server.log" && ok ||
  { bad "the server did not commit version 3:"; tail -n 5 "$tmp/server.log" "$tmp"/dev*.log; }
# A device stops by itself once it trained on version 3; the others (not
# selected for round 4) stop on SIGTERM, like a service being shut down.
sleep 3
for d in "${devices[@]}"; do kill -TERM "$d" 2>/dev/null; done
for i in 0 1 2 3; do
  wait "${devices[$i]}"; rc=$?
  [[ $rc -eq 0 ]] && ok || { bad "device $i exit $rc:"; tail -n 3 "$tmp/dev$i.log"; }
done
devices=()
trained=$(cat "$tmp"/dev*.log | grep -c ': TRAINED round [0-9]* examples [0-9]* loss [0-9.]* next check-in [0-9]* ms$')
[[ $trained -ge 9 ]] && ok || { bad "$trained TRAINED progress lines, want >= 9"; cat "$tmp"/dev*.log; }
# The memory budget and the device state (population "budget", a round of
# one device): a session whose local work needs more than --budget-memory
# trains nothing and says why; --state keeps the device state in that file.
out=$(timeout 120 "$device_bin" run --store "$tmp/dev0.db" --port "$port" --ca "$tmp/shoal-cert.pem" \
  --population budget --token-file "$tmp/secret" --sessions 1 \
  --assume-charging --assume-unmetered --assume-idle --budget-memory 4096 \
  --state "$tmp/state0.db" 2>&1); rc=$?
[[ $rc -eq 0 && "$out" == *": ERROR (this plan's local work needs about "*"budget_session_bytes is 4096"* ]] &&
  ok || bad "--budget-memory 4096: exit $rc: $out"
[[ "$out" != *": TRAINED"* ]] && ok || bad "a session over its memory budget trained: $out"
[[ -s "$tmp/state0.db" ]] && ok || bad "--state: no device state in $tmp/state0.db"
expect 2 "--max-examples: 'many' is not" "$device_bin" run --max-examples many

# One progress line per session and nothing secret in the logs.
if grep -q "secret-for-the-device" "$tmp"/dev*.log "$tmp/server.log"; then bad "a log has the token"; else ok; fi

echo "device_cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
