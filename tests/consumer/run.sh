#!/usr/bin/env bash
# Builds an app outside the source tree against an installed libshoal-device
# with nothing but pkg-config (a C file and a C++ file, linked by g++), once
# against the shared library and once against the static one, and runs each
# for one real session with a shoal-server on loopback.
#
# Usage: tests/consumer/run.sh PREFIX_OR_SYSTEM SHOAL_SERVER
#   system        the library as installed on this machine (libshoal-device-dev)
#   DIR           a `meson install --destdir DIR` staging tree (files under
#                 DIR/PREFIX) or a `meson install` into the prefix DIR
# shellcheck disable=SC2015  # ok and bad always succeed
set -uo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
where=${1:?usage: run.sh PREFIX_OR_SYSTEM SHOAL_SERVER}
server_bin=${2:?usage: run.sh PREFIX_OR_SYSTEM SHOAL_SERVER}
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

# ---- where the library is -----------------------------------------------------
libdir_run=""
if [[ "$where" != system ]]; then
  root=$(cd "$where" && pwd) || exit 1
  pc=$(find "$root" -name shoal-device.pc -path '*/pkgconfig/*' | head -n 1)
  if [[ -z "$pc" ]]; then
    echo "consumer: no shoal-device.pc under $root" >&2
    exit 1
  fi
  PKG_CONFIG_PATH=$(dirname "$pc")
  export PKG_CONFIG_PATH
  prefix=$(pkg-config --variable=prefix shoal-device)
  # A staging tree holds the prefix below its root: pkg-config then puts
  # the root in front of every -I and -L.
  if [[ "$prefix" != "$root"* && -d "$root$prefix" ]]; then
    export PKG_CONFIG_SYSROOT_DIR=$root
  fi
  libdir_run=$(dirname "$(dirname "$pc")")
fi
cflags=$(pkg-config --cflags shoal-device) || { echo "consumer: pkg-config cannot find shoal-device" >&2; exit 1; }
libs=$(pkg-config --libs shoal-device)
static_libs=$(pkg-config --static --libs shoal-device)
echo "consumer: cflags: $cflags"
echo "consumer: libs: $libs"
echo "consumer: static libs: $static_libs"

# ---- build --------------------------------------------------------------------
# shellcheck disable=SC2086  # the flags are words
build() {
  local out=$1 link=$2
  gcc -std=c11 -Wall -Wextra -Werror $cflags -c "$here/consumer.c" -o "$tmp/consumer.o" &&
    g++ -std=c++17 -Wall -Wextra -Werror $cflags -c "$here/consumer_store.cpp" -o "$tmp/consumer_store.o" &&
    g++ -o "$out" "$tmp/consumer.o" "$tmp/consumer_store.o" $link
}
if out=$(build "$tmp/consumer-shared" "$libs" 2>&1); then ok; else bad "build against the shared library: $out"; fi
# --static: the archive, whatever else lies beside it, and the private
# dependencies pkg-config names.
static_link=${static_libs/-lshoal-device/-Wl,-Bstatic -lshoal-device -Wl,-Bdynamic}
if out=$(build "$tmp/consumer-static" "$static_link" 2>&1); then ok; else bad "build against the static library: $out"; fi

needed() { readelf -d "$1" 2>/dev/null | grep -c 'NEEDED.*libshoal-device\.so\.0'; }
[[ -x "$tmp/consumer-shared" && $(needed "$tmp/consumer-shared") -eq 1 ]] && ok ||
  bad "consumer-shared does not need libshoal-device.so.0"
[[ -x "$tmp/consumer-static" && $(needed "$tmp/consumer-static") -eq 0 ]] && ok ||
  bad "consumer-static needs libshoal-device.so.0"

# ---- a server on loopback -------------------------------------------------------
printf 'secret-for-the-consumer-test-0123\n' > "$tmp/secret"
chmod 600 "$tmp/secret"
cat > "$tmp/shoal.json" <<'JSON'
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "state": {"path": "state.db"},
  "populations": [{
    "name": "consumer",
    "auth": {"mode": "shared", "secret_file": "secret"},
    "model": {"architecture": "logreg", "input_shape": [4], "classes": 2},
    "plan": {"optimizer": "sgd", "learning_rate": 0.1, "epochs": 1, "batch_size": 16},
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
  echo "consumer: $pass passed, $fail failed"
  exit 1
fi

# ---- one session each -------------------------------------------------------------
for kind in shared static; do
  [[ -x "$tmp/consumer-$kind" ]] || continue
  out=$(LD_LIBRARY_PATH=${libdir_run}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    timeout 60 "$tmp/consumer-$kind" 127.0.0.1 "$port" "$tmp/shoal-cert.pem" consumer \
    "$tmp/secret" "$tmp/$kind.db" 2>&1); rc=$?
  [[ $rc -eq 0 && "$out" == *"session TRAINED"*"examples 256"* ]] && ok ||
    bad "consumer-$kind: exit $rc: $out"
done
# The ack of a report can leave before the round's commit is logged (the
# coordinator commits after the report is accepted): wait for the line.
committed=0
for _ in $(seq 1 100); do
  grep -q "round 2 committed as version 2" "$tmp/server.log" && { committed=1; break; }
  sleep 0.1
done
[[ $committed -eq 1 ]] && ok ||
  { bad "the server did not commit two rounds within 10 s:"; tail -n 5 "$tmp/server.log"; }

echo "consumer: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
