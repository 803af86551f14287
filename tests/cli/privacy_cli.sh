#!/usr/bin/env bash
# shoal-privacy: figures that match TensorFlow Privacy, the noise search,
# and an error naming the flag for each bad input.
# Usage: privacy_cli.sh SHOAL_PRIVACY
set -uo pipefail
# Numbers are read and compared with a decimal point, whatever the locale.
export LC_ALL=C
bin=$1
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

out=$("$bin" epsilon --sampling-rate 0.0025 --noise-multiplier 1.3 --steps 6000 --delta 1e-5)
[[ "$out" == "epsilon=0.7242234026 order=19 conversion=improved orders=default" ]] && ok || bad "epsilon: $out"
out=$("$bin" epsilon --sampling-rate 0.0025 --noise-multiplier 1.3 --steps 6000 --delta 1e-5 --conversion classic)
eps=$(sed -n 's/^epsilon=\([0-9.]*\) .*conversion=classic.*/\1/p' <<<"$out")
awk -v e="$eps" 'BEGIN { exit !(e > 0.7242234026) }' && ok || bad "classic is not above improved: $out"
out=$("$bin" noise --sampling-rate 0.0025 --steps 6000 --delta 1e-5 --epsilon 0.7242234026109595)
z=$(sed -n 's/^noise_multiplier=\([0-9.]*\) .*/\1/p' <<<"$out")
awk -v z="$z" 'BEGIN { exit !(z > 1.29999 && z < 1.30001) }' && ok || bad "noise: $out"

expect_err() { # expect_err TEXT ARGS...: exit 2 and TEXT in stderr
  local want=$1
  shift
  local err
  err=$("$bin" "$@" 2>&1 >/dev/null)
  local rc=$?
  [[ $rc -eq 2 && "$err" == *"$want"* ]] && ok || bad "$*: exit $rc, '$(head -n 1 <<<"$err")'"
}
expect_err "--sampling-rate: '1.5' is not a rate in [0, 1]" epsilon --sampling-rate 1.5 --noise-multiplier 1 --steps 1 --delta 1e-5
expect_err "--delta: '0' is not a delta in (0, 1)" epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 1 --delta 0
expect_err "--steps: '-3' is not a whole number" epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps -3 --delta 1e-5
expect_err "--noise-multiplier is required" epsilon --sampling-rate 0.1 --steps 1 --delta 1e-5
expect_err "unknown option --noise-multiplier" noise --sampling-rate 0.1 --noise-multiplier 1 --steps 1 --delta 1e-5 --epsilon 1
expect_err "--conversion: 'best' is not 'improved' or 'classic'" epsilon --sampling-rate 0.1 --noise-multiplier 1 --steps 1 --delta 1e-5 --conversion best
expect_err "name a command" estimate
"$bin" --help | grep -q "usage: shoal-privacy epsilon" && ok || bad "--help"
"$bin" --version | grep -Eq '^shoal-privacy [0-9]+\.[0-9]+\.[0-9]+$' && ok || bad "--version"

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
