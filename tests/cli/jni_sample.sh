#!/usr/bin/env bash
# The Java binding of libshoal-device (device-sdk/android/) on the host
# JVM: compiles the Java API and tests/jni/JniSampleTest.java, starts
# shoal-server over TLS on loopback and runs the test program against it
# with libshoal_jni loaded.
# Usage: jni_sample.sh JAVAC JAVA LIBSHOAL_JNI_DIR SOURCE_ROOT SHOAL_SERVER
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
javac=$1 java=$2 libdir=$3 src=$4 server_bin=$5
tmp=$(mktemp -d)
server=""
cleanup() {
  [[ -n "$server" ]] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! "$javac" -Xlint:all -Werror -d "$tmp/classes" "$src"/device-sdk/android/java/org/shoal/device/*.java \
     "$src/tests/jni/JniSampleTest.java"; then
  echo "jni_sample: the Java sources do not compile"
  exit 1
fi

printf 'jni-sample-secret-0123456789abcdef\n' > "$tmp/secret"
chmod 600 "$tmp/secret"
cat > "$tmp/shoal.json" <<'JSON'
{
  "listen": {"address": "127.0.0.1", "port": 0},
  "state": {"path": "state.db"},
  "populations": [{
    "name": "p",
    "auth": {"mode": "shared", "secret_file": "secret"},
    "model": {"architecture": "logreg", "input_shape": [4], "classes": 2},
    "plan": {"optimizer": "sgd", "learning_rate": 0.1, "epochs": 2, "batch_size": 16},
    "round": {"goal_count": 1, "over_selection": 1.0, "pipelining": false,
              "selection_window_ms": 10000, "reporting_deadline_ms": 30000,
              "retry_min_ms": 60000, "retry_max_ms": 90000}
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
  echo "jni_sample: shoal-server did not start:"; cat "$tmp/server.log"
  exit 1
fi
mkdir -p "$tmp/device"
OPENBLAS_NUM_THREADS=1 "$java" -Xcheck:jni -Djava.library.path="$libdir" -cp "$tmp/classes" \
  JniSampleTest "$port" "$tmp/shoal-cert.pem" "$tmp/secret" "$tmp/device"
rc=$?
[[ $rc -eq 0 ]] || tail -n 20 "$tmp/server.log"
exit $rc
